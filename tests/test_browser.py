"""The course in a real browser: headless Chromium drives JupyterLab and RISE (Selenium).

Every notebook's slides fit a 1280x720 screen (only an exercise's solution may scroll: the student
copy holds a stub there),
the console stays clean (:data:`KNOWN_CONSOLE_NOISE` lists the third-party messages allowed, each
with its reason), a notebook opens in Lab unmodified, and notebook 07 runs in Lab with a working
slider. Skipped, with the reason, where Chromium, chromium-driver or selenium is missing
(``.ci/run`` installs them).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest

from bncourse.slides import (
    SCREEN,
    browser_available,
    chromium,
    lab_server,
    open_slides,
    slide_heights,
)

ROOT = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(ROOT.glob("[0-9][0-9]_*.ipynb"))
MISSING = browser_available()
pytestmark = pytest.mark.skipif(
    MISSING is not None,
    reason=f"browser test skipped: needs {MISSING} (apt install chromium chromium-driver)")

TALL_PX = 0.95 * SCREEN[1]
"""RISE scrolls a section taller than 95% of the window; such a slide counts as scrolling."""
KNOWN_CONSOLE_NOISE = {
    "Maximum call stack size exceeded":
        "jupyterlab-rise 0.43.1 logs it on every slideshow start, from its own bundle; the slides "
        "render and navigate normally",
    "@jupyter-notebook/lab-extension/":
        "Notebook 7's lab extension (installed with nbgrader) also loads into RISE's page, whose "
        "bundled JupyterLab 4.3 shares neither its notebook shell nor @jupyterlab/docregistry",
    "@jupyterlab/console doesn't exist in shared scope":
        "the widget manager cannot load in RISE's page (jupyterlab-rise bundles JupyterLab 4.3); "
        "the slides show static figures, and the sliders run in Lab (07's speaker notes say so)",
    ".css' because its MIME type":
        "RISE asks for an optional per-notebook stylesheet NN_name.css; the course's styles are "
        "in the shared rise.css",
}
"""Console errors that come from third-party code, not from the course, and why each is harmless."""


def course_errors(driver) -> list[str]:
    """The browser console's errors since the last call, less the known third-party noise."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE"
            and not any(known in entry["message"] for known in KNOWN_CONSOLE_NOISE)]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """``(url, driver)``: JupyterLab serving a copy of the notebooks, and headless Chromium."""
    root = tmp_path_factory.mktemp("lab")
    for path in [*NOTEBOOKS, ROOT / "rise.css"]:
        shutil.copy(path, root / path.name)
    with lab_server(root, expose_app=True) as url, chromium() as driver:
        yield url, driver


@pytest.fixture(scope="module")
def slides(browser):
    """``{notebook: (slide heights, console errors)}`` of every notebook in RISE."""
    url, driver = browser
    result = {}
    for path in NOTEBOOKS:
        open_slides(driver, url, path.name)
        errors = course_errors(driver)
        result[path.stem] = (slide_heights(driver), errors)
    return result


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_slides_fit_the_screen(slides, path):
    heights, _ = slides[path.stem]
    cells = nbformat.read(path, as_version=4).cells
    scrolling = [(i, h) for i, h in heights if h > TALL_PX]
    assert len(heights) > 5
    assert all("solution" in cells[i].metadata.get("tags", []) for i, _ in scrolling), scrolling


def test_the_slides_log_no_course_errors(slides):
    errors = {name: errors for name, (_, errors) in slides.items() if errors}
    assert not errors


def _wait_for(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def _open_in_lab(driver, url: str, name: str) -> None:
    driver.get(f"{url}/lab/tree/{name}")
    _wait_for(driver, "return !!(window.jupyterapp && document.querySelector("
                      "'.jp-NotebookPanel .jp-Cell'))",
              60, f"{name} in JupyterLab")
    _wait_for(driver, "const w = window.jupyterapp.shell.currentWidget;"
                      "return !!(w && w.sessionContext && w.sessionContext.session && "
                      "w.sessionContext.session.kernel && "
                      "w.sessionContext.session.kernel.status === 'idle')",
              60, "the kernel")


def _dirty(driver) -> bool:
    return driver.execute_script(
        "return window.jupyterapp.shell.currentWidget.context.model.dirty")


@pytest.fixture(scope="module")
def capstone_in_lab(browser):
    """Notebook 07 opened in JupyterLab: ``(dirty right after opening, driver)``; then run."""
    url, driver = browser
    name = next(p.name for p in NOTEBOOKS if p.name.startswith("07_"))
    _open_in_lab(driver, url, name)
    time.sleep(2)
    dirty_on_open = _dirty(driver)
    driver.get_log("browser")                                  # the errors of opening: above
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait_for(driver, "return document.querySelectorAll('.jp-OutputArea .widget-slider').length"
                      " >= 2", 120, "the sliders")
    _wait_for(driver, "return window.jupyterapp.shell.currentWidget.sessionContext.session"
                      ".kernel.status === 'idle'", 120, "the end of the run")
    return dirty_on_open, driver


def test_a_notebook_opens_in_lab_unmodified(capstone_in_lab):
    dirty_on_open, _ = capstone_in_lab
    assert not dirty_on_open


def test_the_capstone_runs_in_lab_without_errors(capstone_in_lab):
    _, driver = capstone_in_lab
    errors = driver.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="
        "\"application/vnd.jupyter.stderr\"], .jp-RenderedText[data-mime-type="
        "\"application/vnd.jupyter.error\"]')].map(e => e.textContent.slice(0, 300))")
    assert not [e for e in errors if "Error" in e], errors
    assert not course_errors(driver)


def test_moving_a_slider_redraws_its_figure(capstone_in_lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _, driver = capstone_in_lab
    widget = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-interact")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", widget)

    def figure():
        return driver.execute_script(
            "const img = arguments[0].querySelector('.widget-output img');"
            "return img ? img.src : null", widget)

    before, deadline = None, time.monotonic() + 30
    while before is None and time.monotonic() < deadline:
        before = figure()
        time.sleep(0.5)
    assert before, "the slider's figure never appeared"
    handle = widget.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_LEFT)
    deadline = time.monotonic() + 30
    while figure() == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert figure() not in (None, before)

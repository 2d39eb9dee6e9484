"""Slides that fit the screen: measure the notebooks as RISE shows them, and paginate them.

RISE turns a notebook into reveal.js slides in JupyterLab. A slide taller than the screen has an
unreachable bottom unless the slide scrolls, so the course lays its slides out for a
:data:`SCREEN` of 1280x720: :func:`paginate` starts a new sub-slide wherever the next cell would
not fit in :data:`BUDGET_PX`, and wherever a result follows a prediction prompt (the learner
answers before seeing it). A single cell taller than the budget gets a slide of its own, which
scrolls (:data:`RISE_SETTINGS`).

The heights come from the browser: :func:`measure` opens each notebook in RISE in headless
Chromium (``selenium``, Chromium and chromium-driver from the distribution, no download) and
reads every cell's rendered height. Maintainers run::

    python -m bncourse.slides notebooks/*.ipynb     # measure, paginate, write the notebooks

and the browser test (``tests/test_browser.py``) checks the result. Nothing here runs for a
learner: the notebooks carry the layout in their slide metadata.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat

from bncourse.teaching import slide_type

__all__ = ["SCREEN", "BUDGET_PX", "RISE_SETTINGS", "KERNELSPEC", "PREDICTION", "paginate",
           "split_tall_code_cells", "apply_rise_settings",
           "lab_server", "chromium", "open_slides", "cell_heights", "slide_heights", "measure",
           "browser_available"]

SCREEN = (1280, 720)
"""The projector the slides are laid out for, in CSS pixels."""
BUDGET_PX = 640
"""Content height of one slide: the screen less RISE's margins and controls."""
RISE_SETTINGS = {
    "theme": "white",        # a theme without web fonts: the slides work offline
    "scroll": True,          # a section taller than 95% of the window scrolls
    "transition": "none",
    "slideNumber": True,
    "start_slideshow_at": "beginning",
}
"""RISE settings stored in every notebook's metadata (they override the extension's defaults)."""
PREDICTION = "**Your prediction"
"""How a prediction prompt starts: its result goes to the next sub-slide."""

_CONTINUES = ("-", "fragment")


def _is_prompt(cell) -> bool:
    return cell.cell_type == "markdown" and cell.source.lstrip().startswith(PREDICTION)


def paginate(nb, heights: Mapping[int, float], budget: float = BUDGET_PX) -> int:
    """Sets every cell's ``slideshow.slide_type`` so that each slide fits ``budget`` pixels.

    A cell keeps the type its heading gives it (:func:`bncourse.teaching.slide_type`: slides,
    sub-slides, notes); a cell that would continue a slide starts a new sub-slide instead when
    the slide's cells would exceed ``budget``, or when it follows a prediction prompt. Cells
    without a measured height (not shown: notes, skipped) do not count.

    Args:
        nb: the notebook, changed in place.
        heights: rendered height in pixels of each shown cell, by cell index.
        budget: the content height of a slide.

    Returns:
        The number of cells whose slide type changed.
    """
    changed, used, after_prompt = 0, 0.0, False
    for index, cell in enumerate(nb.cells):
        kind = slide_type(cell)
        height = heights.get(index, 0.0)
        if kind in _CONTINUES and height > 0:
            if after_prompt or used + height > budget:
                kind = "subslide"
        if kind in ("slide", "subslide"):
            used = height
        elif height > 0:
            used += height
        if height > 0:
            after_prompt = _is_prompt(cell)
        slideshow = cell.metadata.setdefault("slideshow", {})
        if slideshow.get("slide_type") != kind:
            slideshow["slide_type"] = kind
            changed += 1
    return changed


def _split_point(source: str) -> int | None:
    """Line index where a cell's leading definitions (functions, classes, with the imports and
    constants before them) end and the code that uses them starts; ``None`` if there is no
    such pair of parts."""
    import ast

    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    defs = [i for i, node in enumerate(body)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    if not defs or defs[-1] == len(body) - 1:
        return None
    first_use = body[defs[-1] + 1]
    start = min([first_use.lineno] + [d.lineno for d in getattr(first_use, "decorator_list", [])])
    return start - 1


def split_tall_code_cells(nb, heights: Mapping[int, float], budget: float = BUDGET_PX) -> int:
    """Splits each code cell taller than ``budget`` whose code defines functions and then uses
    them into two cells, the definitions and the rest (which keeps the outputs), as a speaker
    would show them. Exercise cells (nbgrader) are left whole. Returns the number of splits;
    the notebook must be re-executed afterwards."""
    cells, splits = [], 0
    for index, cell in enumerate(nb.cells):
        cells.append(cell)
        if (cell.cell_type != "code" or heights.get(index, 0.0) <= budget
                or "nbgrader" in cell.metadata or "solution" in cell.metadata.get("tags", [])):
            continue
        lines = cell.source.splitlines()
        cut = _split_point(cell.source)
        if cut is None:
            continue
        ignore = [line for line in lines[:1] if line.startswith("# NBVAL_")]
        head = "\n".join(lines[:cut]).rstrip()
        tail = "\n".join(ignore + lines[cut:]).strip("\n")
        cell.source = head
        rest = nbformat.v4.new_code_cell(tail, outputs=cell.outputs)
        cell.outputs, cell.execution_count = [], None
        cells.append(rest)
        splits += 1
    nb.cells = cells
    return splits


KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
"""ipykernel's own kernelspec: with any other display name JupyterLab rewrites it on opening, and
every notebook opens modified."""


def apply_rise_settings(nb) -> bool:
    """Stores :data:`RISE_SETTINGS` and :data:`KERNELSPEC` in ``nb``'s metadata; returns whether
    anything changed."""
    if nb.metadata.get("rise") == RISE_SETTINGS and nb.metadata.get("kernelspec") == KERNELSPEC:
        return False
    nb.metadata["rise"] = dict(RISE_SETTINGS)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return True


# --------------------------------------------------------------------------------------------
# The browser side: JupyterLab in a subprocess, headless Chromium driven by Selenium
# --------------------------------------------------------------------------------------------

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


def _first(paths) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def browser_available() -> str | None:
    """``None`` if Chromium, chromium-driver and selenium are all here, else what is missing."""
    missing = [name for name, found in (("chromium", _first(CHROMIUM)),
                                        ("chromium-driver", _first(CHROMEDRIVER)))
               if found is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    return ", ".join(missing) or None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(root: Path, timeout: float = 60.0, expose_app: bool = False) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 serving ``root``, without a token; yields its URL.
    With ``expose_app``, Lab's application object is ``window.jupyterapp`` (for tests)."""
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    log = open(Path(root) / ".lab.log", "w")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--LabApp.expose_app_in_browser=True"] if expose_app else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start (see {root}/.lab.log)") from None
                time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.contextmanager
def chromium() -> Iterator:
    """Headless Chromium at :data:`SCREEN`, with the browser console recorded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = _first(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_first(CHROMEDRIVER)), options=options)
    try:
        width, height = SCREEN
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()


def open_slides(driver, url: str, notebook: str, timeout: float = 60.0) -> None:
    """Opens ``notebook`` (a path under the server's root) in RISE and waits for its first
    slide and for MathJax."""
    driver.get(f"{url}/rise/{notebook}")
    deadline = time.monotonic() + timeout
    while not driver.execute_script(
            "return document.querySelectorAll('.reveal .slides section.present').length"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"RISE did not show {notebook} within {timeout} s")
        time.sleep(0.25)
    time.sleep(1.0)   # typesetting and images


# All sections laid out one under the other at the slide width, so every cell has its height.
_LAY_OUT_ALL = """
const style = document.createElement('style');
style.textContent = `
  .reveal .slides section { display: block !important; position: relative !important;
    top: 0 !important; left: 0 !important; transform: none !important; height: auto !important;
    opacity: 1 !important; visibility: visible !important; }
  .reveal .slides { overflow: visible !important; height: auto !important;
    position: relative !important; transform: none !important; }
  .reveal { overflow: visible !important; height: auto !important; }`;
document.head.appendChild(style);
"""

_CELL_HEIGHTS = _LAY_OUT_ALL + """
const heights = {};
for (const cell of document.querySelectorAll('.reveal .jp-Cell')) {
  if (cell.offsetParent === null || cell.closest('aside')) continue;   // not shown
  const style = getComputedStyle(cell);
  heights[cell.dataset.windowedListIndex] = cell.getBoundingClientRect().height
    + parseFloat(style.marginTop) + parseFloat(style.marginBottom);
}
return heights;
"""

_SLIDE_HEIGHTS = _LAY_OUT_ALL + """
return [...document.querySelectorAll('.reveal .slides section')]
  .filter(s => !s.querySelector('section'))
  .map(s => {
    const cell = s.querySelector('.jp-Cell');
    return [cell ? +cell.dataset.windowedListIndex : -1, s.scrollHeight];
  });
"""


def cell_heights(driver) -> dict[int, float]:
    """Rendered height of every shown cell of the open slides, by cell index (the page is
    laid out flat afterwards: reload it to present)."""
    return {int(k): float(v) for k, v in driver.execute_script(_CELL_HEIGHTS).items()}


def slide_heights(driver) -> list[tuple[int, float]]:
    """``(index of its first cell, height)`` of every slide and sub-slide of the open slides
    (the page is laid out flat afterwards)."""
    return [(int(i), float(h)) for i, h in driver.execute_script(_SLIDE_HEIGHTS)]


def measure(notebooks: list[Path]) -> dict[Path, dict[int, float]]:
    """Cell heights of each notebook as RISE renders it at :data:`SCREEN` (copies are served
    from a temporary folder, so the notebooks are not touched)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for path in notebooks:
            shutil.copy(path, root / path.name)
            if (path.parent / "rise.css").exists():
                shutil.copy(path.parent / "rise.css", root / "rise.css")
        result = {}
        with lab_server(root) as url, chromium() as driver:
            for path in notebooks:
                open_slides(driver, url, path.name)
                result[path] = cell_heights(driver)
        return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bncourse.slides", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", type=Path, nargs="+")
    args = parser.parse_args(argv)
    missing = browser_available()
    if missing:
        raise SystemExit(f"slides: needs {missing} (apt install chromium chromium-driver; "
                         f"pip install selenium)")
    splits = {}
    for path, heights in measure(args.notebooks).items():
        nb = nbformat.read(path, as_version=4)
        splits[path] = split_tall_code_cells(nb, heights)
        if splits[path]:
            nbformat.write(nb, path)
    for path, heights in measure(args.notebooks).items():
        nb = nbformat.read(path, as_version=4)
        changed = paginate(nb, heights) + apply_rise_settings(nb)
        tall = sum(h > BUDGET_PX for h in heights.values())
        if changed:
            nbformat.write(nb, path)
        print(f"{path}: {splits[path]} code cells split, {changed} slide types changed; {tall} "
              f"cells taller than a slide" + ("; re-execute it" if splits[path] else ""))


if __name__ == "__main__":
    main(sys.argv[1:])

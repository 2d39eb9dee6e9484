"""The course's website (`./course site`): built from the stored notebooks, offline, then checked
page by page, statically and in headless Chromium."""

from __future__ import annotations

import functools
import html
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from bncourse import site
from bncourse.experiments.claims import claims
from bncourse.slides import browser_available, chromium
from bncourse.teaching import BEGIN_SOLUTION, END_SOLUTION, SOLUTION_TAG

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
# Sphinx's extensions warn about Sphinx 11 inside the build; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::PendingDeprecationWarning")

NOTEBOOKS = sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
#: a solution region this long is worth checking ("return out" alone also occurs elsewhere)
SOLUTION_CHARS = 30
MATHJAX_TIMEOUT_S = 20
RAW_MATH = re.compile(r"\$[^$\s][^$\n]{0,80}\$")


@pytest.fixture(scope="module")
def html_root(tmp_path_factory) -> Path:
    return site.build_site(tmp_path_factory.mktemp("site")).parent


def _pages(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.html")
                  if not p.relative_to(root).parts[0].startswith("_"))


def _notebook_page(root: Path, nb: Path) -> Path:
    return root / "notebooks" / f"{nb.stem}.html"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs, self.srcs, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.srcs.append(a["src"])
        if tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {
                "stylesheet", "icon", "preload", "modulepreload"}:
            self.srcs.append(a["href"])             # fetched (a canonical link is not)


@functools.cache
def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _text(page: Path) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _solution_blocks(nb_path: Path) -> list[str]:
    """Each solution region (the code between nbgrader's markers), whitespace squashed: code a
    learner could copy. Hints may quote a line of it; they never quote a whole region."""
    blocks = []
    for cell in nbformat.read(nb_path, as_version=4).cells:
        if SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        region = None
        for line in cell.source.splitlines():
            if line.strip() == BEGIN_SOLUTION:
                region = []
            elif line.strip() == END_SOLUTION:
                if len(_squash("\n".join(region))) >= SOLUTION_CHARS:
                    blocks.append(_squash("\n".join(region)))
                region = None
            elif region is not None:
                region.append(line)
    return blocks


# --- the pieces, without building ------------------------------------------------------------


def test_course_map_reads_the_title_objectives_and_time_of_every_notebook():
    rows = site.course_map(NOTEBOOKS)
    assert [r["path"] for r in rows] == NOTEBOOKS
    for r in rows:
        assert r["title"].startswith(r["path"].stem[:2] + " ·")
        assert len(r["objectives"]) >= 3, r["path"]
        assert re.search(r"\d+.*minutes", r["time"]), r["path"]


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reading_edition_has_no_solution_code_nor_speaker_notes_and_keeps_every_output(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    edition = site.reading_edition(nb)
    text = _squash("\n".join(c.source for c in edition.cells))
    assert BEGIN_SOLUTION not in text and "**Speaker notes" not in text
    blocks = _solution_blocks(nb_path)
    assert len(blocks) >= 3                          # every notebook has three exercises or more
    assert [b for b in blocks if b in text] == []
    outputs = sum(len(c.get("outputs", [])) for c in nb.cells)
    assert sum(len(c.get("outputs", [])) for c in edition.cells) == outputs


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_stored_figure_has_an_alt_text_that_reaches_myst_nb(nb_path):
    edition = site.reading_edition(nbformat.read(nb_path, as_version=4))
    for cell in edition.cells:
        figures = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        if figures:
            alt = cell.metadata["mystnb"]["image"]["alt"]
            assert alt.startswith("Figure") and len(alt) > len("Figure."), cell.source[:60]


def test_jupyter_section_links_are_rewritten_to_the_sites_anchors():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "see [there](02_bn_in_networks.ipynb#2.1-·-Speed:-does-BN-speed-up-training?)")])
    heading = "2.1 · Speed: does BN speed up training?"
    site._relink(nb, {("02_bn_in_networks", heading.replace(" ", "-")): "my-slug"})
    assert nb.cells[0].source == "see [there](02_bn_in_networks.ipynb#my-slug)"


def test_docstring_shapes_and_absolute_values_are_escaped_outside_literals_only():
    lines = ["Input (N, C, *spatial) or (*, C); |gamma| and ``x[..., *idx] | y``", "an *emphasis*"]
    site.escape_docstring_maths(None, "function", "f", None, {}, lines)
    assert lines == [r"Input (N, C, \*spatial) or (\*, C); \|gamma\| and ``x[..., *idx] | y``",
                     "an *emphasis*"]


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_installs_the_published_package_only_when_missing(nb_path):
    first = next(c for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code")
    assert 'find_spec("bncourse") is None' in first.source
    assert f"git+https://github.com/{site.REPOSITORY}" in first.source
    assert first.outputs == []                     # a no-op where the course is installed


# --- the built site, read as files -----------------------------------------------------------


def test_site_has_the_landing_page_every_notebook_the_claims_and_the_api(html_root):
    expected = {"index.html", "claims.html", "api.html",
                *(f"notebooks/{p.stem}.html" for p in NOTEBOOKS)}
    assert expected <= {str(p.relative_to(html_root)) for p in _pages(html_root)}
    index = _text(html_root / "index.html")
    for row in site.course_map(NOTEBOOKS):
        assert row["title"] in index


def test_the_instructor_guide_stays_out(html_root):
    assert not any("instructor" in p.name.lower() or p.stem == "README" for p in _pages(html_root))
    assert all("Handing out and grading" not in _text(p) for p in _pages(html_root))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pages_hold_no_solution_code_and_no_speaker_notes(html_root, nb_path):
    text = _text(_notebook_page(html_root, nb_path))
    assert [b for b in _solution_blocks(nb_path) if b in _squash(text)] == []
    assert "Speaker notes" not in text
    assert "NotImplementedError" in text            # the stubs are there instead


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pages_show_every_stored_figure_with_its_alt_text(html_root, nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    page = _notebook_page(html_root, nb_path).read_text(encoding="utf-8")
    images = re.findall(r'<img alt="([^"]*)" src="\.\./_images/[^"]+\.png"', page)
    assert len(images) == figures
    assert all(alt.startswith("Figure") for alt in images)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pages_have_binder_and_colab_launch_links(html_root, nb_path):
    hrefs = _parse(_notebook_page(html_root, nb_path)).hrefs
    path = f"notebooks/{nb_path.name}"
    assert any(h.startswith(f"https://mybinder.org/v2/gh/{site.REPOSITORY}/main") and path in h
               for h in hrefs)
    assert any(h.startswith(f"https://colab.research.google.com/github/{site.REPOSITORY}/blob/"
                            f"main/{path}") for h in hrefs)


def test_claims_page_shows_every_computed_verdict(html_root):
    text = _text(html_root / "claims.html")
    for claim in claims().values():
        row = text[text.index(claim.text):]
        assert row[:len(claim.text) + 40].split()[len(claim.text.split())] == \
            claim.verdict().outcome


def test_every_internal_link_script_and_image_resolves(html_root):
    broken = []
    for page in _pages(html_root):
        links = _parse(page)
        for ref in links.hrefs + links.srcs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.is_file():
                broken.append((page.name, ref))
            elif parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in _parse(target).ids:
                broken.append((page.name, ref))
    assert broken == []


def test_nothing_is_fetched_from_a_network_at_run_time(html_root):
    remote = {(p.name, s) for p in _pages(html_root) for s in _parse(p).srcs
              if urlsplit(s).scheme in ("http", "https")}
    assert remote == set()


# --- the built site, in a browser ------------------------------------------------------------

needs_browser = pytest.mark.skipif(browser_available() is not None,
                                   reason=f"needs {browser_available()}")


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def _wait_for_math(driver) -> None:
    deadline = time.monotonic() + MATHJAX_TIMEOUT_S
    while time.monotonic() < deadline:
        pending = driver.execute_script(
            "return document.querySelectorAll('.math').length === 0 ? 0 :"
            " Array.from(document.querySelectorAll('.math'))"
            ".filter(e => !e.querySelector('mjx-container')).length;")
        if pending == 0:
            return
        time.sleep(0.2)


@needs_browser
def test_every_page_loads_from_disk_without_console_errors_and_renders_its_math(html_root,
                                                                               browser):
    problems = {}
    for page in _pages(html_root):
        browser.get_log("browser")                  # drop what earlier pages left
        browser.get(page.as_uri())
        _wait_for_math(browser)
        severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        unrendered = browser.execute_script(
            "return Array.from(document.querySelectorAll('.math'))"
            ".filter(e => !e.querySelector('mjx-container')).length;")
        text = browser.execute_script(
            "const b = document.querySelector('main') || document.body;"
            "const c = b.cloneNode(true);"
            "c.querySelectorAll('pre, code, script, style, mjx-container')"
            ".forEach(e => e.remove());"
            "return c.innerText;")
        raw = RAW_MATH.findall(text)
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src);")
        if severe or unrendered or raw or broken:
            problems[page.name] = {"console": severe, "unrendered math": unrendered,
                                   "raw $...$": raw[:3], "broken images": broken}
    assert problems == {}


@needs_browser
def test_search_works_from_disk(html_root, browser):
    browser.get((html_root / "search.html").as_uri() + "?q=ghost")
    deadline = time.monotonic() + MATHJAX_TIMEOUT_S
    hits = []
    while time.monotonic() < deadline and not hits:
        time.sleep(0.3)
        hits = browser.execute_script(
            "return Array.from(document.querySelectorAll('#search-results li a'))"
            ".map(a => a.getAttribute('href'));")
    assert any("04_regularization_effect" in h for h in hits), hits


def test_the_pages_workflow_builds_the_site_and_publishes_its_html():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(Path(".github/workflows/site.yml").read_text())
    on = workflow.get("on", workflow.get(True))           # YAML 1.1 reads a bare `on` as True
    assert on["push"]["branches"] == ["main"]
    steps = workflow["jobs"]["build"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "torch==2.13.0" in runs and "--index-url https://download.pytorch.org/whl/cpu" in runs
    assert "python -m bncourse.site --out build/site" in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "build/site/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages")
               for s in workflow["jobs"]["deploy"]["steps"])

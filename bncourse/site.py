"""The course as a website: a static book built from the stored notebooks, without re-running them.

    python -m bncourse.site [--out build/site]      # or: ./course site

Writes Sphinx sources to ``<out>/src`` and the site to ``<out>/html`` (open ``index.html`` from
disk; it works offline). The pages:

* ``index``: what the course is, the course map (each notebook's title, objectives and time, read
  from its first cell), how to run it;
* ``notebooks/NN_name``: every notebook as a reading edition (:func:`reading_edition`): stored
  outputs kept, solutions replaced by nbgrader's stubs, speaker notes dropped; launch buttons for
  Binder and Colab;
* ``claims``: the claim table with the verdicts computed from the stored results, each linked to
  the notebooks that decide it;
* ``api``: the package's reference, generated from the docstrings.

The instructor guide (``notebooks/README.md``) stays out. Math is typeset by the MathJax 3 that
``sphinx-mathjax-offline`` ships (SVG output: no web fonts), copied into the site; the theme's
fonts and scripts are its own static files; search is Sphinx's, which works from disk.
Requires the ``site`` extra (``pip install bncourse[site]``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import nbformat

from bncourse.teaching import student_version

__all__ = ["REPOSITORY", "SITE_URL", "reading_edition", "course_map", "landing_page",
           "claims_page", "api_page", "write_sources", "build_site", "API_MODULES"]

#: Where the course lives on GitHub and where the Pages workflow publishes the site.
REPOSITORY = "bncourse/bncourse"
SITE_URL = "https://bncourse.github.io/bncourse/"
#: Public modules of the API reference, in reading order.
API_MODULES = ("functional", "gradcheck", "nn", "models", "train", "data", "adapt", "probes",
               "memory", "at_init", "transformer", "resmlp", "distributed", "verdict",
               "experiments", "report", "plots", "checks")
_TIME = re.compile(r"\*\*Estimated time\.\*\*\s*([^(\n]+)")
_OBJECTIVES = re.compile(r"\*\*Learning objectives\.\*\*.*?\n\n(.*?)\n\n", re.S)


_LINK = re.compile(r"\]\((\d\d_\w+)\.ipynb#([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?)\s*$", re.M)


def _anchors(notebooks: list[Path]) -> dict[tuple[str, str], str]:
    """(notebook stem, Jupyter's anchor of a heading) -> MyST's anchor of it. Jupyter links a
    heading by its text with spaces as hyphens; MyST (``myst_heading_anchors``) slugifies it."""
    from myst_parser.mdit_to_docutils.base import default_slugify

    out = {}
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                for heading in _HEADING.findall(cell.source):
                    out[path.stem, heading.replace(" ", "-")] = default_slugify(heading)
    return out


def _relink(nb, anchors: dict[tuple[str, str], str]) -> None:
    def fix(m: re.Match) -> str:
        return f"]({m[1]}.ipynb#{anchors.get((m[1], m[2]), m[2])})"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _LINK.sub(fix, cell.source)


def reading_edition(nb):
    """The notebook as the site shows it: :func:`bncourse.teaching.student_version` (stubs for
    the solutions, no speaker notes, stored outputs kept), without nbgrader's metadata, and
    each figure's alt text (stored by :mod:`bncourse.plots` in the output's metadata) handed to
    myst-nb as the image's ``alt``."""
    nb = student_version(nb)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
        alts = [o.get("metadata", {}).get("image/png", {}).get("alt")
                for o in cell.get("outputs", [])]
        if any(alts):        # myst-nb takes one alt per cell: several figures share it
            alt = " / ".join(a for a in alts if a)
            cell.metadata.setdefault("mystnb", {}).setdefault("image", {})["alt"] = alt
    return nb


def _title(nb) -> str:
    return nb.cells[0].source.splitlines()[0].lstrip("# ").strip()


def course_map(notebooks: list[Path]) -> list[dict]:
    """Per notebook: ``path``, ``title``, ``objectives`` (the list items) and ``time``, from
    its first cell."""
    rows = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        intro = nb.cells[0].source
        objectives = _OBJECTIVES.search(intro)
        items = re.split(r"\n\d+\. ", "\n" + objectives.group(1)) if objectives else []
        time = _TIME.search(intro)
        rows.append({"path": path, "title": _title(nb),
                     "objectives": [" ".join(i.split()) for i in items if i.strip()],
                     "time": time.group(1).strip() if time else ""})
    return rows


def landing_page(notebooks: list[Path]) -> str:
    """The index page (MyST markdown): the course, its map, how to run it, the table of
    contents."""
    rows = course_map(notebooks)
    lines = [
        "# Batch normalization, tested",
        "",
        "A course that builds batch normalization (BN) from scratch, in numpy and then "
        "PyTorch, and then puts the popular claims about it to the test. Every verdict comes "
        "from stored experiments (each arm's learning rate tuned on a validation split, trained "
        "to convergence, five evaluation seeds) and one verdict rule; every notebook runs in "
        "seconds on a laptop CPU, offline. This site shows the notebooks with their stored "
        "outputs; the exercises are left for you to write.",
        "",
        "## The course",
        "",
        "| notebook | after it you can | time |",
        "|---|---|---|",
    ]
    for r in rows:
        goals = "; ".join(o.rstrip(";.") for o in r["objectives"])
        lines.append(f"| [{r['title']}](notebooks/{r['path'].stem}.ipynb) | {goals} | "
                     f"{r['time']} |")
    lines += [
        "",
        "The verdicts of every claim are in [the claim table](claims.md); the package's "
        "reference in [the API](api.md).",
        "",
        "## Run it",
        "",
        "Every notebook page has launch buttons (the rocket at the top): Binder builds the "
        "course's environment, Colab installs the package in the notebook's first cell. On your "
        "own machine:",
        "",
        "```bash",
        f"git clone https://github.com/{REPOSITORY}.git && cd {REPOSITORY.split('/')[1]}",
        "./course lab      # installs everything into .venv, opens the first notebook",
        "./course test     # the package's tests and every notebook under strict nbval",
        "```",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        ":caption: Notebooks",
        "",
        *[f"notebooks/{r['path'].stem}" for r in rows],
        "```",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        ":caption: Reference",
        "",
        "claims",
        "api",
        "```",
        "",
    ]
    return "\n".join(lines)


def claims_page() -> str:
    """The claim table (MyST markdown), verdicts computed from the stored results, each claim
    linked to the notebooks that decide it."""
    from bncourse.experiments.claims import claims

    names = {p.stem[:2]: p.stem for p in _notebooks(Path("notebooks"))}
    lines = ["# The claims and their verdicts", "",
             "Each claim paraphrases a popular statement about BN. The verdict is computed by "
             "`bncourse.verdict.decide` from the stored full-budget results: the effect per "
             "setting with its 95% interval (paired over five evaluation seeds), classified "
             "against the claim's margin. Nothing here is typed by hand.", "",
             "| claim | verdict | effect: mean [95% interval] per setting | decided in |",
             "|---|---|---|---|"]
    for claim in claims().values():
        verdict = claim.verdict()
        effects = "; ".join(f"{name} {e.format()}" for name, e in verdict.effects.items())
        where = ", ".join(f"[{n:02d}](notebooks/{names[f'{n:02d}']}.ipynb)"
                          for n in claim.notebooks if f"{n:02d}" in names)
        lines.append(f"| {claim.text} | **{verdict.outcome}** | {effects} | {where} |")
    return "\n".join(lines) + "\n"


def api_page() -> str:
    """The API reference (MyST markdown with autodoc directives)."""
    lines = ["# The `bncourse` package", "",
             "Generated from the docstrings: shapes, formulas, and where PyTorch, CS231n, Keras "
             "and fastai differ.", ""]
    for name in API_MODULES:
        lines += [f"## `bncourse.{name}`", "", "```{eval-rst}",
                  f".. automodule:: bncourse.{name}", "   :members:", "```", ""]
    return "\n".join(lines)


_CONF = '''\
# Generated by bncourse.site: edit bncourse/site.py, not this file.
from bncourse.site import escape_docstring_maths

project = "Batch normalization, tested"
author = "the bncourse authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
exclude_patterns = ["_build"]
nb_execution_mode = "off"            # the stored outputs, as committed
nb_merge_streams = True
nb_render_markdown_format = "myst"   # markdown outputs (bncourse.report.say) have $maths$
smartquotes = False                  # "BN's" and code-like claims stay as written
myst_enable_extensions = ["dollarmath", "amsmath"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
autodoc_member_order = "bysource"
html_theme = "sphinx_book_theme"
html_title = "Batch normalization, tested"
html_static_path = ["_static"]
html_context = {{"default_mode": "light"}}   # a page opened from disk has no stored preference
html_baseurl = {site_url!r}
# MathJax 3 from sphinx-mathjax-offline, copied into _static: SVG output draws its glyphs from
# the script itself, so no web font is loaded (a browser blocks fonts from pages on disk).
mathjax_path = "mathjax/tex-svg.js"
mathjax3_config = {{"svg": {{"fontCache": "global"}}}}
napoleon_use_ivar = True             # a NamedTuple's fields are documented once, by autodoc
myst_heading_anchors = 6             # notebooks link to each other's sections


def setup(app):
    app.connect("autodoc-process-docstring", escape_docstring_maths)


html_theme_options = {{
    "repository_url": "https://github.com/{repository}",
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {{"binderhub_url": "https://mybinder.org",
                       "colab_url": "https://colab.research.google.com",
                       "notebook_interface": "jupyterlab"}},
}}
'''


_SHAPE_STAR = re.compile(r"(?:(?<=\()|(?<=, ))\*(?=[\w),])")


def escape_docstring_maths(app, what, name, obj, options, lines: list[str]) -> None:
    """Sphinx hook: the docstrings write shapes and absolute values as plain text, so outside
    inline literals a ``*`` that opens a shape entry ("(N, C, *spatial)") is not reST emphasis
    and ``|d|`` is not a substitution."""
    for i, line in enumerate(lines):
        parts = line.split("``")
        parts[::2] = [_SHAPE_STAR.sub(r"\*", p).replace("|", r"\|") for p in parts[::2]]
        lines[i] = "``".join(parts)


def _notebooks(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def _mathjax_dir() -> Path:
    from importlib.metadata import files

    script = next(f for f in files("sphinx-mathjax-offline") if f.name == "tex-svg.js")
    return Path(script.locate()).parent


def write_sources(src: Path, notebooks: list[Path]) -> None:
    """Writes the Sphinx project: ``conf.py``, the pages, the reading editions, MathJax."""
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "conf.py").write_text(_CONF.format(site_url=SITE_URL, repository=REPOSITORY))
    (src / "index.md").write_text(landing_page(notebooks))
    (src / "claims.md").write_text(claims_page())
    (src / "api.md").write_text(api_page())
    anchors = _anchors(notebooks)
    for path in notebooks:
        nb = reading_edition(nbformat.read(path, as_version=4))
        _relink(nb, anchors)
        nbformat.write(nb, src / "notebooks" / path.name)
    shutil.copytree(_mathjax_dir(), src / "_static" / "mathjax")


def build_site(out: Path, notebooks: list[Path] | None = None, quiet: bool = True) -> Path:
    """Builds the site into ``out / "html"``; returns the path of its ``index.html``. Fails on
    any Sphinx warning (a broken link or reference, an unknown output)."""
    from sphinx.cmd.build import build_main

    notebooks = notebooks or _notebooks(Path("notebooks"))
    src, html = out / "src", out / "html"
    write_sources(src, notebooks)
    if html.exists():
        shutil.rmtree(html)
    args = ["-b", "html", "-W", "--keep-going", str(src), str(html)]
    if build_main((["-q"] if quiet else []) + args) != 0:
        raise RuntimeError(f"sphinx-build failed for {src} (warnings are errors)")
    return html / "index.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bncourse.site", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/site"))
    parser.add_argument("notebooks", type=Path, nargs="*")
    args = parser.parse_args(argv)
    print(build_site(args.out, args.notebooks or None, quiet=False))


if __name__ == "__main__":
    main(sys.argv[1:])

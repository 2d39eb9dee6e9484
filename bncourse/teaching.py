"""Teaching artefacts from the course notebooks, built with nbconvert: student copies and HTML.

    python -m bncourse.teaching build [--out build] [notebooks/*.ipynb]
    python -m bncourse.teaching slides notebooks/*.ipynb

``build`` writes, under ``build/`` (never into ``notebooks/``):

* ``student/NN_name.ipynb``: every cell tagged ``solution`` replaced by a stub that keeps the
  imports, signatures and docstrings and raises ``NotImplementedError``; outputs cleared, so the
  checker after each stub reports "not implemented yet" until the learner writes the code;
* ``html/NN_name.html``: the full notebook with its stored outputs, for reading without Jupyter.

``slides`` first splits markdown cells so that every heading starts a cell (RISE cannot split a
cell), then gives every cell RISE slide metadata (``slideshow.slide_type``) where it has none: a
level-1 or level-2 heading starts a slide, a level-3 heading a sub-slide, a markdown cell that
starts with "**Speaker notes" becomes notes, anything else continues the current slide.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter, NotebookExporter
from nbconvert.preprocessors import ClearOutputPreprocessor, Preprocessor

__all__ = ["SOLUTION_TAG", "stub_source", "StubSolutions", "slide_type", "split_at_headings",
           "add_slide_metadata", "build"]

SOLUTION_TAG = "solution"
STUB_MESSAGE = "exercise: write this, then run the checker below"
SPEAKER_NOTES = "**Speaker notes"


def _stub_function(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> list[str]:
    """Signature (decorators included) and docstring of ``node``, then a ``raise``."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body = node.body
    has_doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
               and isinstance(body[0].value.value, str))
    keep_until = body[0].end_lineno if has_doc else body[0].lineno - 1
    indent = " " * body[0].col_offset
    return lines[first - 1:keep_until] + [
        f"{indent}# YOUR CODE HERE",
        f"{indent}raise NotImplementedError({STUB_MESSAGE!r})",
    ]


def _stub_class(node: ast.ClassDef, lines: list[str]) -> list[str]:
    """The class line, its docstring and class attributes, and every method as a stub."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    out = lines[first - 1:node.body[0].lineno - 1]
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += _stub_function(child, lines)
        else:
            out += lines[child.lineno - 1:child.end_lineno]
        out.append("")
    return out[:-1]


def stub_source(source: str) -> str:
    """The student version of a solution cell.

    Top-level functions and classes keep their signatures and docstrings and raise
    ``NotImplementedError``; imports stay; any other top-level statement is dropped (it would be
    part of the solution).
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out += lines[node.lineno - 1:node.end_lineno]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += ([""] if out else []) + _stub_function(node, lines)
        elif isinstance(node, ast.ClassDef):
            out += ([""] if out else []) + _stub_class(node, lines)
    return "\n".join(out) + "\n"


class StubSolutions(Preprocessor):
    """nbconvert preprocessor: replaces the source of every ``solution``-tagged cell by a stub."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = stub_source(cell.source)
        return cell, resources


def slide_type(cell) -> str:
    """The RISE slide type the course gives a cell (see the module docstring)."""
    if cell.cell_type == "markdown":
        text = cell.source.lstrip()
        if text.startswith(SPEAKER_NOTES):
            return "notes"
        if text.startswith(("# ", "## ")):
            return "slide"
        if text.startswith("### "):
            return "subslide"
    return "-"


_HEADING = re.compile(r"^#{1,3} ")


def split_at_headings(nb) -> bool:
    """Splits markdown cells before every heading line that is not their first line (outside
    fenced code). Returns whether anything changed."""
    cells, changed = [], False
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            cells.append(cell)
            continue
        parts, current, fenced = [], [], False
        for line in cell.source.splitlines():
            fenced ^= line.lstrip().startswith("```")
            if _HEADING.match(line) and not fenced and "".join(current).strip():
                parts.append(current)
                current = []
            current.append(line)
        parts.append(current)
        if len(parts) == 1:
            cells.append(cell)
            continue
        changed = True
        for part in parts:
            text = "\n".join(part).strip("\n")
            cells.append(nbformat.v4.new_markdown_cell(text))
    nb.cells = cells
    return changed


def add_slide_metadata(nb) -> bool:
    """Sets ``slideshow.slide_type`` on every cell that has none. Returns whether it changed."""
    changed = False
    for cell in nb.cells:
        if "slide_type" not in cell.metadata.get("slideshow", {}):
            cell.metadata.setdefault("slideshow", {})["slide_type"] = slide_type(cell)
            changed = True
    return changed


def build(notebooks: list[Path], out: Path) -> list[Path]:
    """Writes the student copy and the HTML rendering of each notebook under ``out``.

    Idempotent: the same notebooks give byte-identical files. Refuses an ``out`` whose
    ``student/`` folder is where a source notebook lives.
    """
    if (out / "student").resolve() in {p.resolve().parent for p in notebooks}:
        raise ValueError(f"expected an output folder that cannot overwrite the notebooks "
                         f"(got {out})")
    student = NotebookExporter()
    student.register_preprocessor(StubSolutions(), enabled=True)
    student.register_preprocessor(ClearOutputPreprocessor(), enabled=True)
    html = HTMLExporter()
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for folder, exporter, suffix in ((out / "student", student, ".ipynb"),
                                         (out / "html", html, ".html")):
            body, _ = exporter.from_notebook_node(copy.deepcopy(nb))
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / (path.stem + suffix)
            target.write_text(body, encoding="utf-8")
            written.append(target)
    return written


def execute(path: Path, timeout: int = 300) -> float:
    """Runs ``path`` top to bottom in a fresh kernel (in its own folder) and stores the outputs
    in place, without widget state; returns the wall seconds.

    The widget state is dropped after the run: nbclient 0.11 fails on an ``interact`` output
    when it is told not to record widget state, and the state only makes the notebook heavier.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bncourse.teaching", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="student copies and HTML into an output folder")
    p_build.add_argument("--out", type=Path, default=Path("build"))
    p_build.add_argument("notebooks", type=Path, nargs="*")
    p_slides = sub.add_parser("slides", help="add RISE slide metadata where missing")
    p_slides.add_argument("notebooks", type=Path, nargs="+")
    p_exec = sub.add_parser("execute", help="run in a fresh kernel, store outputs in place")
    p_exec.add_argument("notebooks", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "execute":
        for path in args.notebooks:
            print(f"{path}: {execute(path):.1f} s")
    elif args.command == "build":
        notebooks = args.notebooks or sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
        for path in build(notebooks, args.out):
            print(path)
    else:
        for path in args.notebooks:
            nb = nbformat.read(path, as_version=4)
            if split_at_headings(nb) | add_slide_metadata(nb):
                nbformat.write(nb, path)
                print(f"{path}: slide metadata added")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Teaching artefacts from the course notebooks: student copies, HTML, an instructor edition,
nbgrader markup and RISE slide metadata.

    python -m bncourse.teaching build [--out build] [notebooks/*.ipynb]
    python -m bncourse.teaching nbgrader notebooks/*.ipynb
    python -m bncourse.teaching slides notebooks/*.ipynb
    python -m bncourse.teaching execute notebooks/*.ipynb

``build`` writes, under ``build/`` (never into ``notebooks/``):

* ``student/NN_name.ipynb``: the solution regions replaced by nbgrader's stub (``raise
  NotImplementedError()``, signatures and docstrings kept), speaker notes removed, outputs
  cleared, so the checker after each stub reports "not implemented yet" until the learner writes
  the code;
* ``student/NN_name.html``: the same without solutions and notes, with the stored outputs, for
  reading without Jupyter;
* ``instructor/NN_name.ipynb`` and ``.html``: the full notebook, solutions and speaker notes.

``nbgrader`` marks the exercises for nbgrader (idempotent): in every cell tagged ``solution``,
``### BEGIN SOLUTION`` / ``### END SOLUTION`` around each function or method body (after its
docstring) and around any other top-level code, and nbgrader's solution metadata; the checker
cell after it becomes an autograded test cell worth :data:`POINTS` points. ``nbgrader
generate_assignment`` then makes the student version and ``nbgrader autograde`` grades with the
course's checkers.

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
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ClearOutputPreprocessor, Preprocessor

__all__ = ["SOLUTION_TAG", "POINTS", "mark_solution_regions", "mark_exercises",
           "RemoveSpeakerNotes", "student_version", "slide_type", "split_at_headings",
           "add_slide_metadata", "build", "execute"]

SOLUTION_TAG = "solution"
SPEAKER_NOTES = "**Speaker notes"


POINTS = 1
"""Points of each exercise's checker cell when graded with nbgrader."""
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
_CHECKER_CALL = re.compile(r"^(checks\.)?check_\w+\(")


def _body_region(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int, int] | None:
    """``(first line, last line, indent)`` of a function's body after its docstring, 1-based;
    ``None`` for a body that is only a docstring."""
    body = node.body
    has_doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
               and isinstance(body[0].value.value, str))
    code = body[1:] if has_doc else body
    if not code:
        return None
    return code[0].lineno, node.end_lineno, code[0].col_offset


def mark_solution_regions(source: str) -> str:
    """``source`` with nbgrader's solution markers around what a learner writes: the body of
    every top-level function and of every method (after the docstring), and every other
    top-level statement except imports. Unchanged if it already has markers."""
    if BEGIN_SOLUTION in source:
        return source
    lines = source.splitlines()
    regions = []                                   # (first line, last line, indent), 1-based
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            regions.append(_body_region(node))
        elif isinstance(node, ast.ClassDef):
            regions += [_body_region(child) for child in node.body
                        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            regions.append((node.lineno, node.end_lineno, 0))
    for first, last, indent in sorted((r for r in regions if r), reverse=True):
        pad = " " * indent
        lines[first - 1:last] = [pad + BEGIN_SOLUTION, *lines[first - 1:last], pad + END_SOLUTION]
    return "\n".join(lines)


def mark_exercises(nb, prefix: str) -> bool:
    """nbgrader markup for every exercise of ``nb`` (see the module docstring); grade ids start
    with ``prefix``. Returns whether anything changed."""
    before = nbformat.writes(nb)
    cells, number = nb.cells, 0
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        number += 1
        cell.source = mark_solution_regions(cell.source)
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                     "task": False, "schema_version": 3,
                                     "grade_id": f"{prefix}-exercise-{number}"}
        checker = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
        if checker is not None and _CHECKER_CALL.match(checker.source):
            checker.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                            "task": False, "schema_version": 3,
                                            "points": POINTS,
                                            "grade_id": f"{prefix}-exercise-{number}-check"}
    return nbformat.writes(nb) != before


class RemoveSpeakerNotes(Preprocessor):
    """nbconvert preprocessor: drops every markdown cell that starts with "**Speaker notes"."""

    def preprocess(self, nb, resources):
        nb.cells = [c for c in nb.cells if not (
            c.cell_type == "markdown" and c.source.lstrip().startswith(SPEAKER_NOTES))]
        return nb, resources


def student_version(nb):
    """A copy of ``nb`` for learners: solution regions replaced by nbgrader's stub, speaker
    notes removed (outputs kept: :func:`build` clears them for the notebook, not the HTML)."""
    from nbgrader.preprocessors import ClearSolutions

    nb = copy.deepcopy(nb)
    nb, _ = ClearSolutions().preprocess(nb, {})
    nb, _ = RemoveSpeakerNotes().preprocess(nb, {})
    return nb


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
    """Writes the student copy, the student HTML and the instructor edition of each notebook
    under ``out`` (see the module docstring).

    Idempotent: the same notebooks give byte-identical files. Refuses an ``out`` whose
    ``student/`` or ``instructor/`` folder is where a source notebook lives.
    """
    sources = {p.resolve().parent for p in notebooks}
    if {(out / "student").resolve(), (out / "instructor").resolve()} & sources:
        raise ValueError(f"expected an output folder that cannot overwrite the notebooks "
                         f"(got {out})")
    html = HTMLExporter()
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        student = student_version(nb)
        blank, _ = ClearOutputPreprocessor().preprocess(copy.deepcopy(student), {})
        for target, text in (
                (out / "student" / f"{path.stem}.ipynb", nbformat.writes(blank)),
                (out / "student" / f"{path.stem}.html", html.from_notebook_node(student)[0]),
                (out / "instructor" / f"{path.stem}.ipynb", nbformat.writes(nb)),
                (out / "instructor" / f"{path.stem}.html", html.from_notebook_node(nb)[0])):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
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
    p_build = sub.add_parser("build", help="student copies, HTML and the instructor edition")
    p_build.add_argument("--out", type=Path, default=Path("build"))
    p_build.add_argument("notebooks", type=Path, nargs="*")
    p_slides = sub.add_parser("slides", help="add RISE slide metadata where missing")
    p_slides.add_argument("notebooks", type=Path, nargs="+")
    p_grade = sub.add_parser("nbgrader", help="mark the exercises for nbgrader, in place")
    p_grade.add_argument("notebooks", type=Path, nargs="+")
    p_exec = sub.add_parser("execute", help="run in a fresh kernel, store outputs in place")
    p_exec.add_argument("notebooks", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "execute":
        for path in args.notebooks:
            print(f"{path}: {execute(path):.1f} s")
    elif args.command == "nbgrader":
        for path in args.notebooks:
            nb = nbformat.read(path, as_version=4)
            if mark_exercises(nb, path.stem[:2]):
                nbformat.write(nb, path)
                print(f"{path}: exercises marked for nbgrader")
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

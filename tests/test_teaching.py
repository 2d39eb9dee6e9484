"""Teaching artefacts: solution markers and nbgrader metadata, student copies and HTML without
solutions or speaker notes, an instructor edition, the build is idempotent, student copies run,
every course notebook carries slide metadata, and nbgrader grades with the course's checkers."""

import ast
import hashlib
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from bncourse.teaching import (
    BEGIN_SOLUTION,
    END_SOLUTION,
    SOLUTION_TAG,
    add_slide_metadata,
    build,
    mark_exercises,
    mark_solution_regions,
    slide_type,
    split_at_headings,
    student_version,
)

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTION = '''import numpy as np


def forward(x, eps=1e-5):
    """Normalizes x.

    Shape: (N, C).
    """
    mu = x.mean(axis=0)
    return (x - mu) / np.sqrt(x.var(axis=0) + eps)


class Running:
    """Running statistics."""

    momentum = 0.1

    def update(self, batch_mean):
        self.mean = (1 - self.momentum) * self.mean + self.momentum * batch_mean


SECRET_CONSTANT = 42
'''


def toy_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy\n\nIntro."),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("### Exercise"),
        nbformat.v4.new_code_cell(SOLUTION, metadata={"tags": [SOLUTION_TAG]}),
        nbformat.v4.new_markdown_cell(
            "<details><summary>Hint 1</summary>\n\nA hint.\n\n</details>"),
        nbformat.v4.new_code_cell("check_forward(forward)"),
        nbformat.v4.new_markdown_cell("**Speaker notes:** the answer is 42."),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    mark_exercises(nb, "01")
    return nb


def test_solution_markers_wrap_bodies_after_docstrings_and_other_code():
    marked = mark_solution_regions(SOLUTION)
    ast.parse(marked)
    lines = marked.splitlines()
    assert lines[lines.index('    """') + 1] == f"    {BEGIN_SOLUTION}"            # forward's body
    assert f"        {BEGIN_SOLUTION}" in lines                                  # update's body
    assert lines[lines.index("SECRET_CONSTANT = 42") - 1] == BEGIN_SOLUTION
    assert marked.count(BEGIN_SOLUTION) == marked.count(END_SOLUTION) == 3
    assert lines[0] == "import numpy as np"                                      # imports stay
    assert mark_solution_regions(marked) == marked                               # idempotent


def test_exercises_get_nbgrader_solution_and_autograded_test_metadata():
    nb = toy_notebook()
    solution, checker = nb.cells[3].metadata["nbgrader"], nb.cells[5].metadata["nbgrader"]
    assert solution["solution"] and not solution["grade"]
    assert solution["grade_id"] == "01-exercise-1"
    assert checker["grade"] and checker["locked"] and checker["points"] == 1
    assert checker["grade_id"] == "01-exercise-1-check"
    assert not mark_exercises(nb, "01")                                          # idempotent


def test_student_version_keeps_signatures_and_docstrings_and_drops_notes():
    student = student_version(toy_notebook())
    stub = student.cells[3].source
    assert "def forward(x, eps=1e-5):" in stub and "Shape: (N, C)." in stub
    assert "class Running:" in stub and "def update(self, batch_mean):" in stub
    for secret in ("x.mean(axis=0)", "np.sqrt", "self.momentum * batch_mean", "SECRET_CONSTANT"):
        assert secret not in stub
    assert stub.count("raise NotImplementedError") == 3
    assert not any("Speaker notes" in c.source for c in student.cells)
    forward = ast.parse(stub).body[1]
    assert [type(node) for node in forward.body] == [ast.Expr, ast.Raise]  # docstring, raise


def test_build_writes_student_copy_student_html_and_instructor_edition(tmp_path):
    source = tmp_path / "notebooks" / "01_toy.ipynb"
    source.parent.mkdir()
    nbformat.write(toy_notebook(), source)
    written = build([source], tmp_path / "build")
    assert sorted(p.relative_to(tmp_path / "build").as_posix() for p in written) == [
        "instructor/01_toy.html", "instructor/01_toy.ipynb",
        "student/01_toy.html", "student/01_toy.ipynb"]
    student = nbformat.read(tmp_path / "build" / "student" / "01_toy.ipynb", as_version=4)
    nbformat.validate(student)
    assert "x.mean(axis=0)" not in student.cells[3].source
    assert "x.mean(axis=0)" in nbformat.read(source, as_version=4).cells[3].source  # untouched
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    student_html = (tmp_path / "build" / "student" / "01_toy.html").read_text()
    assert "SECRET_CONSTANT" not in student_html and "the answer is 42" not in student_html
    instructor_html = (tmp_path / "build" / "instructor" / "01_toy.html").read_text()
    assert "SECRET_CONSTANT" in instructor_html and "the answer is 42" in instructor_html


def test_build_is_idempotent(tmp_path):
    source = tmp_path / "01_toy.ipynb"
    nbformat.write(toy_notebook(), source)

    def digests():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in build([source], tmp_path / "build")}

    assert digests() == digests()


def test_build_refuses_to_overwrite_the_notebooks(tmp_path):
    source = tmp_path / "student" / "01_toy.ipynb"
    source.parent.mkdir()
    nbformat.write(toy_notebook(), source)
    with pytest.raises(ValueError, match="cannot overwrite the notebooks"):
        build([source], tmp_path)
    instructor = tmp_path / "x" / "instructor" / "01_toy.ipynb"
    instructor.parent.mkdir(parents=True)
    nbformat.write(toy_notebook(), instructor)
    with pytest.raises(ValueError, match="cannot overwrite the notebooks"):
        build([instructor], tmp_path / "x")


def test_slide_types_follow_headings_and_speaker_notes():
    nb = toy_notebook()
    assert [slide_type(c) for c in nb.cells] == ["slide", "-", "subslide", "-", "-", "-", "notes"]
    assert add_slide_metadata(nb) and not add_slide_metadata(nb)


def test_headings_inside_a_markdown_cell_start_their_own_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(
        "**What it shows.** Text.\n\n### 2.2 · Next\n\nIntro.\n\n```\n# not a heading\n```")]
    assert split_at_headings(nb) and not split_at_headings(nb)
    assert [c.source.splitlines()[0] for c in nb.cells] == ["**What it shows.** Text.",
                                                           "### 2.2 · Next"]
    assert [slide_type(c) for c in nb.cells] == ["-", "subslide"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_course_notebook_has_slide_metadata_on_every_cell(path):
    nb = nbformat.read(path, as_version=4)
    missing = [i for i, c in enumerate(nb.cells) if "slide_type" not in c.metadata.get(
        "slideshow", {})]
    assert not missing, f"cells without slide metadata: {missing}"
    assert not split_at_headings(nb), "a heading inside a markdown cell: run the slides command"


def _only_stubs(source: str) -> bool:
    """Every function body is an optional docstring plus ``raise``; nothing else runs."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if [type(b) for b in body] != [ast.Raise]:
                return False
    top_level = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return all(isinstance(n, top_level) for n in ast.parse(source).body)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Student copies and HTML of every course notebook, built once per test session."""
    out = tmp_path_factory.mktemp("build")
    build(NOTEBOOKS, out)
    return out


def _student_copy(built, path):
    return built / "student" / path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_copy_contains_no_solution_code(path, built):
    student = nbformat.read(_student_copy(built, path), as_version=4)
    nbformat.validate(student)
    stubs = [c.source for c in student.cells if SOLUTION_TAG in c.metadata.get("tags", [])]
    assert stubs and all(_only_stubs(s) for s in stubs)
    assert not any(c.source.lstrip().startswith("**Speaker notes") for c in student.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_html_holds_no_solution_and_no_speaker_notes(path, built):
    html = (built / "student" / f"{path.stem}.html").read_text(encoding="utf-8")
    solutions = [c.source for c in nbformat.read(path, as_version=4).cells
                 if SOLUTION_TAG in c.metadata.get("tags", [])]
    assert "Speaker notes" not in html
    assert "BEGIN SOLUTION" not in html and "YOUR CODE HERE" in html
    instructor = (built / "instructor" / f"{path.stem}.html").read_text(encoding="utf-8")
    assert "Speaker notes" in instructor and "BEGIN SOLUTION" in instructor
    assert solutions


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_copy_runs_up_to_its_first_exercise_stub(path, built):
    student = nbformat.read(_student_copy(built, path), as_version=4)
    stubs = [i for i, c in enumerate(student.cells) if SOLUTION_TAG in c.metadata.get("tags", [])]
    assert stubs, "no exercise in this notebook"
    checker = next(i for i in range(stubs[0] + 1, len(student.cells))
                   if student.cells[i].cell_type == "code")
    student.cells = student.cells[: checker + 1]  # up to the first checker is enough
    client = NotebookClient(student, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as error:
        client.execute()
    ran = [c.get("execution_count") for c in student.cells if c.cell_type == "code"]
    assert student.cells[checker].get("execution_count") == max(n for n in ran if n), (
        "the first error must come from the first exercise's checker")
    assert "not implemented" in str(error.value).lower()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_copy_with_the_solutions_filled_in_runs_to_the_end(path, built):
    solutions = {c.id: c.source for c in nbformat.read(path, as_version=4).cells
                 if SOLUTION_TAG in c.metadata.get("tags", [])}
    student = nbformat.read(_student_copy(built, path), as_version=4)
    filled = 0
    for cell in student.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = solutions[cell.id]
            filled += 1
    assert filled == len(solutions) > 0
    client = NotebookClient(student, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()        # raises CellExecutionError at the first failing cell
    assert all(c.get("execution_count") for c in student.cells if c.cell_type == "code")


def test_execute_stores_outputs_in_place_without_widget_state(tmp_path):
    from bncourse.teaching import execute

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print(6 * 7)"),
        nbformat.v4.new_code_cell("x = 1"),
    ])
    # the state a widget run leaves in the metadata (no live widget here: a kernel's comms can
    # outlive a test run and hang the client)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "widgets.ipynb"
    nbformat.write(nb, path)
    seconds = execute(path)
    done = nbformat.read(path, as_version=4)
    assert seconds > 0 and "widgets" not in done.metadata
    assert done.cells[0].outputs[0]["text"] == "42\n"
    assert [c.execution_count for c in done.cells] == [1, 2]


def test_command_line_build_slides_and_execute(tmp_path, capsys):
    from bncourse.teaching import main

    source = tmp_path / "notebooks" / "01_toy.ipynb"
    source.parent.mkdir()
    nb = toy_notebook()
    for cell in nb.cells:
        cell.metadata.pop("slideshow", None)
    nbformat.write(nb, source)
    main(["slides", str(source)])
    assert "slide metadata added" in capsys.readouterr().out
    main(["build", "--out", str(tmp_path / "out"), str(source)])
    assert (tmp_path / "out" / "student" / "01_toy.ipynb").exists()
    assert (tmp_path / "out" / "student" / "01_toy.html").exists()
    assert (tmp_path / "out" / "instructor" / "01_toy.ipynb").exists()
    marked = tmp_path / "notebooks" / "02_toy.ipynb"
    nb = toy_notebook()
    del nb.cells[3].metadata["nbgrader"]
    nbformat.write(nb, marked)
    main(["nbgrader", str(marked)])
    assert "marked for nbgrader" in capsys.readouterr().out
    assert "nbgrader" in nbformat.read(marked, as_version=4).cells[3].metadata

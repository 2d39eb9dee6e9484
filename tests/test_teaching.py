"""Teaching artefacts: stubs hide solutions, student copies run up to their first exercise,
the build is idempotent, and every course notebook carries slide metadata."""

import ast
import hashlib
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from bncourse.teaching import (
    SOLUTION_TAG,
    add_slide_metadata,
    build,
    slide_type,
    split_at_headings,
    stub_source,
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
        nbformat.v4.new_code_cell("forward(np.ones((2, 3)))"),
        nbformat.v4.new_markdown_cell("**Speaker notes:** ask first."),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def test_stub_keeps_imports_signatures_and_docstrings_only():
    stub = stub_source(SOLUTION)
    assert "import numpy as np" in stub
    assert "def forward(x, eps=1e-5):" in stub and "Shape: (N, C)." in stub
    assert "class Running:" in stub and "def update(self, batch_mean):" in stub
    for secret in ("x.mean(axis=0)", "np.sqrt", "self.momentum * batch_mean", "SECRET_CONSTANT"):
        assert secret not in stub
    assert stub.count("raise NotImplementedError") == 2
    ast.parse(stub)


def test_stubbed_function_raises_not_implemented():
    namespace = {}
    exec(stub_source(SOLUTION), namespace)  # noqa: S102 -- our own stub
    with pytest.raises(NotImplementedError, match="exercise"):
        namespace["forward"](None)


def test_build_writes_valid_student_copy_without_solutions_and_html(tmp_path):
    source = tmp_path / "notebooks" / "01_toy.ipynb"
    source.parent.mkdir()
    nbformat.write(toy_notebook(), source)
    written = build([source], tmp_path / "build")
    assert sorted(p.relative_to(tmp_path / "build").as_posix() for p in written) == [
        "html/01_toy.html", "student/01_toy.ipynb"]
    student = nbformat.read(tmp_path / "build" / "student" / "01_toy.ipynb", as_version=4)
    nbformat.validate(student)
    assert "x.mean(axis=0)" not in student.cells[3].source
    assert "x.mean(axis=0)" in nbformat.read(source, as_version=4).cells[3].source  # untouched
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert "SECRET_CONSTANT" in (tmp_path / "build" / "html" / "01_toy.html").read_text()


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


def test_slide_types_follow_headings_and_speaker_notes():
    nb = toy_notebook()
    assert [slide_type(c) for c in nb.cells] == ["slide", "-", "subslide", "-", "-", "notes"]
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
    assert (tmp_path / "out" / "html" / "01_toy.html").exists()

"""nbgrader round trip on notebook 01: generate the assignment, autograde three submissions with
the course's checkers as the graded tests, and write feedback that names the mistake."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bncourse.teaching import POINTS, mark_exercises

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOTEBOOK = NOTEBOOKS[0]                     # 01: four exercises, runs in seconds
ASSIGNMENT = "ps1"
MISTAKE = ("var = sq.mean(axis=axes, keepdims=True)",           # exercise 1, unbiased variance
           "var = sq.sum(axis=axes, keepdims=True) / (m - 1)")
SKIP_LINE = "# bn_forward = checks.skip(checks.check_forward)"

pytest.importorskip("nbgrader")


def nbgrader(root: Path, *args: str) -> None:
    env = dict(os.environ)
    # nbgrader runs alembic (its database migrations) as a command from the environment's bin
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force",
                    f"--CourseDirectory.root={root}"], cwd=root, env=env, check=True,
                   capture_output=True, timeout=600)


def submission(released, solutions, *, mistake=False, skip=False):
    """The released notebook with the reference solutions written in; optionally exercise 1
    with a known mistake, or left as the stub and skipped with its skip line."""
    nb = copy.deepcopy(released)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            source = solutions[grade_id]
            if grade_id.endswith("exercise-1"):
                if skip:
                    continue
                if mistake:
                    assert MISTAKE[0] in source
                    source = source.replace(*MISTAKE)
            cell.source = source
        elif skip and cell.source.endswith(SKIP_LINE):
            cell.source = cell.source.replace(SKIP_LINE, SKIP_LINE[2:])
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """``(scores, feedback_html)``: per student, the points of each exercise's checker."""
    from nbgrader.api import Gradebook

    root = tmp_path_factory.mktemp("course")
    source = root / "source" / ASSIGNMENT / NOTEBOOK.name
    source.parent.mkdir(parents=True)
    source.write_bytes(NOTEBOOK.read_bytes())
    nbgrader(root, "generate_assignment", ASSIGNMENT)
    released = nbformat.read(root / "release" / ASSIGNMENT / NOTEBOOK.name, as_version=4)
    solutions = {c.metadata["nbgrader"]["grade_id"]: c.source
                 for c in nbformat.read(NOTEBOOK, as_version=4).cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    for student, kwargs in (("right", {}), ("mistake", {"mistake": True}),
                            ("skipped", {"skip": True})):
        target = root / "submitted" / student / ASSIGNMENT / NOTEBOOK.name
        target.parent.mkdir(parents=True)
        nbformat.write(submission(released, solutions, **kwargs), target)
    nbgrader(root, "autograde", ASSIGNMENT)
    nbgrader(root, "generate_feedback", ASSIGNMENT)
    scores = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in ("right", "mistake", "skipped"):
            notebook = gradebook.find_submission_notebook(NOTEBOOK.stem, ASSIGNMENT, student)
            scores[student] = {g.name: g.score for g in notebook.grades}
    feedback = (root / "feedback" / "mistake" / ASSIGNMENT / f"{NOTEBOOK.stem}.html").read_text()
    return scores, feedback


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_course_notebook_is_marked_for_nbgrader(path):
    nb = nbformat.read(path, as_version=4)
    assert not mark_exercises(nb, path.stem[:2]), "run: python -m bncourse.teaching nbgrader"


def test_reference_solutions_get_full_marks(graded):
    scores, _ = graded
    assert len(scores["right"]) >= 4
    assert all(score == POINTS for score in scores["right"].values())


def test_a_known_mistake_loses_exactly_that_exercises_points(graded):
    scores, _ = graded
    lost = {name for name, score in scores["mistake"].items() if score < POINTS}
    assert lost == {"01-exercise-1-check"}
    assert scores["mistake"]["01-exercise-1-check"] == 0


def test_feedback_names_the_mistake(graded):
    _, feedback = graded
    assert "unbiased variance (divided by m - 1)" in feedback


def test_a_skipped_exercise_scores_zero_and_the_rest_still_count(graded):
    scores, _ = graded
    assert scores["skipped"]["01-exercise-1-check"] == 0
    assert all(score == POINTS for name, score in scores["skipped"].items()
               if name != "01-exercise-1-check")

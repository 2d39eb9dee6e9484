"""Static checks of the course notebooks: no measured figure typed into prose, no result or
verdict hidden from nbval, and every claim of the claim table decided in its notebooks."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from bncourse.experiments.claims import claims

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]

#: A decimal, a percentage, or a ratio such as "3x" / "1.5×": what a measured figure looks like.
FIGURE = re.compile(r"(?<![\w.^{_-])(\d+(?:\.\d+)?\s?(?:%|x\b|\u00d7)|\d+\.\d+)")
#: Constants that prose may state: PyTorch's defaults, the course's settings, paper versions.
ALLOWED = {
    "0.1", "0.9", "0.99", "0.999", "0.01", "0.001",   # momentum conventions, learning rates
    "0.5", "1.0", "1.25", "0.05", "0.3", "0.03", "0.2", "0.8",  # noise ranges, dropout, fractions
    "2.0", "2.4", "1e-5", "80%", "20%", "95%", "90%", "50%", "100%", "10%",  # versions, splits
}
#: Inside math, code, link targets and HTML comments, numbers are formulas, code or addresses;
#: section numbers (headings, "§2.1") and arXiv identifiers are names, not measurements.
STRIP = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\]\([^)]*\)|<!--.*?-->"
                   r"|arXiv:\s?\d{4}\.\d{4,5}|§\s?\d+(?:\.\d+)*|^#+\s+\d+(?:\.\d+)*", re.S | re.M)
RESULT_MARKERS = re.compile(r"verdict|load_result|show_protocol|claims\(|record\(", re.I)


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def typed_figures(markdown: str) -> list[str]:
    """The figures in a markdown cell outside math, code and links that are not allowed
    constants."""
    return [f for f in FIGURE.findall(STRIP.sub("", markdown)) if f.replace(" ", "") not in ALLOWED]


def test_typed_figures_finds_decimals_percentages_and_ratios_but_not_math_or_code():
    text = ("### 2.1 · BN wins by 0.042 (4.2%), 3x faster; $\\epsilon = 10^{-5}$, `lr=0.37`, "
            "momentum 0.1, see §2.3 and arXiv:1502.03167")
    assert typed_figures(text) == ["0.042", "4.2%", "3x"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_measured_figure_is_typed_in_markdown(path):
    found = {i: typed_figures(c.source) for i, c in enumerate(_cells(path))
             if c.cell_type == "markdown"}
    found = {i: f for i, f in found.items() if f}
    assert not found, f"figures typed in markdown cells (format them from outputs): {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_result_or_verdict_cell_is_ignored_by_nbval(path):
    ignored = [i for i, c in enumerate(_cells(path)) if c.cell_type == "code"
               and "NBVAL_IGNORE_OUTPUT" in c.source and RESULT_MARKERS.search(c.source)]
    assert not ignored, f"cells {ignored} show results or verdicts but nbval ignores them"


@pytest.mark.parametrize("claim_id", list(claims()))
def test_every_claim_is_decided_in_one_of_its_notebooks(claim_id):
    claim = claims()[claim_id]
    sources = "".join(c.source for p in NOTEBOOKS if int(p.name[:2]) in claim.notebooks
                      for c in _cells(p) if c.cell_type == "code")
    assert f'"{claim_id}"' in sources, f"no notebook among {claim.notebooks} decides {claim_id}"


def test_the_capstone_shows_every_claim():
    capstone = next(p for p in NOTEBOOKS if p.name.startswith("07"))
    source = "".join(c.source for c in _cells(capstone) if c.cell_type == "code")
    assert "verdict_markdown()" in source or all(f'"{c}"' in source for c in claims())


# --- exercises: enough of them, each with hints, a checker and a way to skip -----------------

MIN_EXERCISES = {"01": 4}
MIN_EXERCISES_DEFAULT = 3


def exercises(path):
    """``(index of the solution cell, the cells after it)`` for each exercise."""
    cells = _cells(path)
    return [(i, cells[i + 1:i + 4]) for i, c in enumerate(cells)
            if "solution" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_notebook_has_enough_checked_exercises(path):
    wanted = MIN_EXERCISES.get(path.stem[:2], MIN_EXERCISES_DEFAULT)
    assert len(exercises(path)) >= wanted


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_each_exercise_is_followed_by_hints_its_checker_and_a_skip_line(path):
    for index, (hint, checker, skip) in exercises(path):
        where = f"exercise at cell {index}"
        assert hint.cell_type == "markdown", where
        assert "<details><summary>Hint 1</summary>" in hint.source, where
        assert checker.cell_type == "code", where
        assert re.match(r"(checks\.)?check_\w+\(", checker.source), where
        assert skip.cell_type == "code", where
        assert re.search(r"^# \w+ = (checks\.)?skip\((checks\.)?check_\w+\)$", skip.source,
                         re.M), where


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_exercise_headings_match_the_solution_cells(path):
    headings = [c for c in _cells(path)
                if c.cell_type == "markdown" and re.match(r"#+ Exercise \d+", c.source)]
    assert len(headings) == len(exercises(path))

"""Slide layout: pagination by measured heights, splitting tall code cells, RISE settings."""

from pathlib import Path

import nbformat
import pytest

from bncourse.slides import (
    BUDGET_PX,
    KERNELSPEC,
    PREDICTION,
    RISE_SETTINGS,
    apply_rise_settings,
    paginate,
    split_tall_code_cells,
)

md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


def kinds(nb):
    return [c.metadata["slideshow"]["slide_type"] for c in nb.cells]


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def test_cells_that_fit_continue_the_slide_of_their_heading():
    nb = notebook(md("## A"), code("x = 1"), md("text"))
    assert paginate(nb, {0: 100, 1: 200, 2: 200}) == 3
    assert kinds(nb) == ["slide", "-", "-"]


def test_a_cell_that_would_overflow_starts_a_subslide():
    nb = notebook(md("## A"), code("x = 1"), code("y = 2"), code("z = 3"))
    paginate(nb, {0: 100, 1: 400, 2: 300, 3: 100})
    assert kinds(nb) == ["slide", "-", "subslide", "-"]


def test_a_result_after_a_prediction_prompt_goes_to_the_next_subslide():
    nb = notebook(md("## A"), md(f"{PREDICTION}.** What happens?"), code("run()"))
    paginate(nb, {0: 50, 1: 50, 2: 50})
    assert kinds(nb) == ["slide", "-", "subslide"]


def test_notes_and_unmeasured_cells_neither_count_nor_split():
    nb = notebook(md("## A"), md("**Speaker notes:** long"), code("x = 1"))
    paginate(nb, {0: 100, 2: BUDGET_PX - 100})
    assert kinds(nb) == ["slide", "notes", "-"]


def test_pagination_is_idempotent():
    nb = notebook(md("## A"), code("x = 1"), code("y = 2"))
    heights = {0: 300, 1: 300, 2: 300}
    paginate(nb, heights)
    assert paginate(nb, heights) == 0


def test_a_tall_cell_that_defines_then_uses_is_split_and_the_outputs_follow_the_use():
    source = "# NBVAL_IGNORE_OUTPUT\nimport math\n\n\ndef f(x):\n    return x\n\n\nprint(f(1))"
    cell = code(source, outputs=[nbformat.v4.new_output("stream", text="1\n")])
    nb = notebook(md("## A"), cell)
    assert split_tall_code_cells(nb, {1: BUDGET_PX + 1}) == 1
    first, second = nb.cells[1], nb.cells[2]
    assert first.source.endswith("return x") and not first.outputs
    assert second.source == "# NBVAL_IGNORE_OUTPUT\nprint(f(1))"
    assert second.outputs[0]["text"] == "1\n"


@pytest.mark.parametrize(("source", "metadata"), [
    ("def f(x):\n    return x\n\nprint(f(1))", {"tags": ["solution"]}),   # an exercise
    ("def f(x):\n    return x", {}),                                      # nothing uses it
    ("x = 1\nprint(x)", {}),                                              # nothing to split
])
def test_exercises_and_cells_without_a_definition_then_use_stay_whole(source, metadata):
    nb = notebook(code(source, metadata=metadata))
    assert split_tall_code_cells(nb, {0: 2 * BUDGET_PX}) == 0 and len(nb.cells) == 1


def test_short_cells_are_never_split():
    nb = notebook(code("def f(x):\n    return x\n\nprint(f(1))"))
    assert split_tall_code_cells(nb, {0: BUDGET_PX}) == 0


def test_rise_settings_use_an_offline_theme_and_scrolling():
    nb = notebook()
    assert apply_rise_settings(nb) and not apply_rise_settings(nb)
    assert nb.metadata["rise"] == RISE_SETTINGS
    assert RISE_SETTINGS["scroll"] is True and RISE_SETTINGS["theme"] in ("white", "black", "serif")


NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_course_notebook_carries_rise_settings_and_ipykernels_kernelspec(path):
    metadata = nbformat.read(path, as_version=4).metadata
    assert metadata["rise"] == RISE_SETTINGS
    assert metadata["kernelspec"] == KERNELSPEC       # else Lab marks it modified on opening


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_course_notebook_stores_no_widget_state(path):
    assert "widgets" not in nbformat.read(path, as_version=4).metadata


def test_rise_stylesheet_hides_the_add_a_cell_bar():
    css = (Path(__file__).parents[1] / "notebooks" / "rise.css").read_text()
    assert ".jp-Notebook-footer" in css and "display: none" in css

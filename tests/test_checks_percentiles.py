"""check_percentile_hook (notebook 03): the reference passes, each known mistake is named."""

import numpy as np
import pytest
import torch

from bncourse.checks.engine import ExerciseError
from bncourse.checks.percentiles import _PERCENTILE_MISTAKES, check_percentile_hook


def _per_channel(a):
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)          # (C, m)


def _learner(compute=lambda x, y, q: np.percentile(_per_channel(x), q, axis=1)):
    """A learner's hook factory whose hook appends ``compute(input, output, q)``."""
    def percentile_hook(record, q=(15, 50, 85)):
        def hook(module, inputs, output):
            record.append(compute(inputs[0].detach().numpy(), output.detach().numpy(), q))
        return hook
    return percentile_hook


def _nearest_rank(x, q):
    values = np.sort(_per_channel(x), axis=1)
    return values[:, [round(p / 100 * (values.shape[1] - 1)) for p in q]].T


_BUGS = [
    (_learner(lambda x, y, q: np.percentile(_per_channel(y), q, axis=1)), "records_output",
     "records the layer's output"),
    (_learner(lambda x, y, q: np.quantile(_per_channel(x), np.divide(q, 100) / 100, axis=1)),
     "fractions", "np.percentile takes percents"),
    (_learner(lambda x, y, q: np.percentile(x, q, axis=0)), "axis0_only", "over axis 0 only"),
    (_learner(lambda x, y, q: np.percentile(x.reshape(len(x), -1), q, axis=1)), "per_example",
     "per example"),
    (_learner(lambda x, y, q: np.percentile(x.reshape(-1, x.shape[1]), q, axis=0)),
     "reshape_channels", "does not gather each channel's values"),
    (_learner(lambda x, y, q: np.percentile(_per_channel(x), q, axis=1).T), "transposed",
     "one row per percentile"),
    (_learner(lambda x, y, q: _nearest_rank(x, q)), "nearest_rank", "interpolate linearly"),
]


def test_reference_solution_passes_with_one_line(capsys):
    check_percentile_hook(check_percentile_hook.solution)
    assert capsys.readouterr().out == "check_percentile_hook: all 3 cases match the reference.\n"


def test_learner_style_numpy_solution_passes(capsys):
    check_percentile_hook(_learner())
    assert "all 3 cases match" in capsys.readouterr().out


def test_detached_torch_quantile_solution_passes(capsys):
    def percentile_hook(record, q=(15, 50, 85)):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            values = x.transpose(0, 1).reshape(x.shape[1], -1)
            record.append(torch.quantile(values, torch.tensor(q, dtype=x.dtype) / 100, dim=1))
        return hook

    check_percentile_hook(percentile_hook)
    assert "all 3 cases match" in capsys.readouterr().out


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {key for _, key, _ in _BUGS} == {m.key for m in _PERCENTILE_MISTAKES}


@pytest.mark.parametrize("fn, key, phrase", _BUGS, ids=[k for _, k, _ in _BUGS])
def test_mistake_is_named(fn, key, phrase):
    with pytest.raises(ExerciseError) as info:
        check_percentile_hook(fn)
    assert key in info.value.mistakes
    assert phrase in str(info.value)


def test_stub_says_not_implemented_yet():
    def percentile_hook(record, q=(15, 50, 85)):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_percentile_hook(percentile_hook)


def test_storing_a_tensor_attached_to_the_graph_asks_to_detach():
    def percentile_hook(record, q=(15, 50, 85)):
        def hook(module, inputs, output):
            x = inputs[0]                                             # not detached
            values = x.transpose(0, 1).reshape(x.shape[1], -1)
            record.append(torch.quantile(values, torch.tensor(q, dtype=x.dtype) / 100, dim=1))
        return hook

    with pytest.raises(ExerciseError, match=r"still part of the autograd graph.*detach"):
        check_percentile_hook(percentile_hook)


def test_hook_that_records_nothing_is_told_one_entry_per_call():
    def percentile_hook(record, q=(15, 50, 85)):
        return lambda module, inputs, output: None

    with pytest.raises(ExerciseError, match="holds 0 entries; the hook must append one entry"):
        check_percentile_hook(percentile_hook)


def test_factory_returning_none_is_told_to_return_the_hook():
    def percentile_hook(record, q=(15, 50, 85)):
        pass

    with pytest.raises(ExerciseError, match="must return the hook function"):
        check_percentile_hook(percentile_hook)


def test_factory_with_the_wrong_arity_is_told_its_arguments():
    def percentile_hook(record):
        return _learner()(record)

    with pytest.raises(ExerciseError, match=r"calling `percentile_hook\(record, q\)` failed"):
        check_percentile_hook(percentile_hook)


def test_hook_without_q_parameter_in_the_record_gets_a_wrong_shape_message():
    # one value per channel (the median only): the record's shape is reported
    with pytest.raises(ExerciseError, match=r"`record` has shape \(3, 5\)"):
        check_percentile_hook(_learner(lambda x, y, q: np.median(_per_channel(x), axis=1)))

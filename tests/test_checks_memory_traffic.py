"""check_bn_bytes (notebook 06): the reference passes, each known mistake is named.

The buggy solutions are written the way a learner would write them (tensor by tensor, as the
notebook's table lists them), independently of the catalogue's variants.
"""

import math

import pytest

from bncourse.checks import ExerciseError
from bncourse.checks.memory_traffic import _BYTES_MISTAKES, _bytes_reference, check_bn_bytes


def _learner(shape, itemsize=4, bug=None):
    """A learner's count, tensor by tensor; ``bug`` names the one mistake to make."""
    values = math.prod(shape)
    channels = shape[-1] if bug == "channels_last" else shape[1]
    vector = values if bug == "vectors_full_size" else channels
    if bug == "forgot_vectors":
        vector = 0
    x_reads_forward = 1 if bug == "forgot_statistics_pass" else 2
    forward = (x_reads_forward + 1) * values + 2 * vector + 2 * vector  # gamma, beta; mean, istd
    if bug != "forgot_running_update":
        forward += 4 * vector                                  # running mean, var: read + write
    reads = 2 if bug == "backward_one_pass" else 4             # dy and x, once or twice
    backward = (reads + 1) * values + 3 * vector + 2 * vector  # + dx; gamma, mean, istd; dg, db
    eval_passes = 3 if bug == "eval_computes_statistics" else 2
    evaluation = eval_passes * values + 4 * vector
    size = 1 if bug == "elements_not_bytes" else itemsize
    return forward * size, backward * size, evaluation * size


def _buggy(bug):
    def bn_bytes_moved(shape, itemsize=4):
        return _learner(shape, itemsize, bug=bug)
    return bn_bytes_moved


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "elements_not_bytes": "numbers of values, not bytes",
    "vectors_full_size": "as large as the activation tensor",
    "forgot_vectors": "left out the per-channel vectors",
    "channels_last": "from the last axis",
    "forgot_statistics_pass": "reads x once",
    "forgot_running_update": "update of the running mean and variance",
    "backward_one_pass": "reads dy and x only once",
    "eval_computes_statistics": "eval forward has a statistics pass",
}


def test_the_reference_passes_with_one_line(capsys):
    check_bn_bytes(check_bn_bytes.solution)
    assert capsys.readouterr().out == "check_bn_bytes: all 4 cases match the reference.\n"


def test_a_correct_learner_solution_passes(capsys):
    check_bn_bytes(_buggy(None))
    assert "all 4 cases match" in capsys.readouterr().out


def test_the_reference_counts_the_benchmark_activation_by_hand():
    mb = 32 * 64 * 32 * 32 * 4      # the notebook's float32 (32, 64, 32, 32) tensor
    vec = 64 * 4
    assert _bytes_reference((32, 64, 32, 32), 4) == (3 * mb + 8 * vec, 5 * mb + 5 * vec,
                                                     2 * mb + 4 * vec)


def test_a_stub_is_reported_as_not_implemented_yet():
    def bn_bytes_moved(shape, itemsize=4):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_bn_bytes(bn_bytes_moved)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _BYTES_MISTAKES} == set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_bn_bytes(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _BYTES_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_bn_bytes(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_two_mistakes_in_two_stages_are_both_named():
    def two_bugs(shape, itemsize=4):
        forward = _learner(shape, itemsize, bug="forgot_statistics_pass")[0]
        _, backward, evaluation = _learner(shape, itemsize, bug="eval_computes_statistics")
        return forward, backward, evaluation

    with pytest.raises(ExerciseError) as info:
        check_bn_bytes(two_bugs)
    assert set(info.value.mistakes) == {"forgot_statistics_pass", "eval_computes_statistics"}


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_bn_bytes(lambda shape, itemsize=4: None)


def test_two_values_instead_of_three_are_reported():
    with pytest.raises(ExerciseError, match="returned 2 values"):
        check_bn_bytes(lambda shape, itemsize=4: _learner(shape, itemsize)[:2])


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_bn_bytes(lambda shape: _learner(shape))


def test_an_unknown_bug_gets_the_advice():
    def off_by_one(shape, itemsize=4):
        forward, backward, evaluation = _learner(shape, itemsize)
        return forward + 1, backward, evaluation

    with pytest.raises(ExerciseError, match="go through the table line by line") as info:
        check_bn_bytes(off_by_one)
    assert info.value.mistakes == ()

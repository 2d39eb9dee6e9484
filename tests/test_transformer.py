"""The tiny transformer: padding is invisible to per-token norms and to attention, while BN's
statistics mix in padding and batch mates; the padded-sequence data."""

import pytest
import torch

from bncourse.transformer import TinyTransformer, pad_to_lengths, variable_lengths

FLOAT64_ATOL = 1e-10


def batch(lengths, seed=0, seq_len=40):
    g = torch.Generator().manual_seed(seed)
    return pad_to_lengths(torch.randn(len(lengths), seq_len, generator=g, dtype=torch.float64),
                          torch.tensor(lengths))


def model(norm, seed=0):
    torch.manual_seed(seed)
    return TinyTransformer(norm=norm).double().eval()


def test_padding_marks_real_positions_and_zeroes_the_rest():
    x = batch([3, 40])
    assert x.shape == (2, 2, 40)
    assert x[0, 1].tolist() == [1.0] * 3 + [0.0] * 37
    assert (x[0, 0, 3:] == 0).all() and (x[1, 1] == 1).all()


@pytest.mark.parametrize("norm", ["layer", "rms", "dyt", "none"])
def test_per_token_norms_ignore_the_padded_values_and_the_batch_mates(norm):
    net = model(norm).train()
    x = batch([20, 35, 12])
    alone = net(x[:1])
    changed = x.clone()
    changed[0, 0, 20:] = 5.0                        # junk in the padded positions ...
    with torch.no_grad():
        torch.testing.assert_close(net(changed)[:1], alone, atol=FLOAT64_ATOL, rtol=0)
        torch.testing.assert_close(net(x)[:1], alone, atol=FLOAT64_ATOL, rtol=0)  # ... mates


def test_batchnorm_output_depends_on_how_much_padding_the_batch_mates_bring():
    net = model("batch").train()
    x = batch([20, 35, 12])
    with torch.no_grad():
        long_mate = net(torch.cat([x[:1], batch([40], seed=1)]))[:1]
        short_mate = net(torch.cat([x[:1], batch([5], seed=1)]))[:1]
    assert (long_mate - short_mate).abs().max() > 1e-3


def test_batchnorm_differs_between_training_and_eval_mode_and_layer_norm_does_not():
    x = batch([20, 35, 12, 40])
    for norm, differs in (("batch", True), ("layer", False)):
        net = model(norm)
        with torch.no_grad():
            gap = (net.train()(x) - net.eval()(x)).abs().max()
        assert (gap > 1e-3) == differs, norm


def test_variable_lengths_are_reproducible_and_in_range():
    a, b = variable_lengths(100, seed=3), variable_lengths(100, seed=3)
    assert torch.equal(a, b) and a.min() >= 16 and a.max() <= 40
    assert len(set(a.tolist())) > 10


@pytest.mark.parametrize(("call", "phrase"), [
    (lambda: TinyTransformer(norm="group"), "expected norm to be one of"),
    (lambda: TinyTransformer()(torch.zeros(2, 40)), r"expected input of shape \(N, 2, 40\)"),
    (lambda: pad_to_lengths(torch.zeros(2, 40), torch.tensor([3])), "expected x of shape"),
    (lambda: variable_lengths(3, 0, low=5, high=4), "expected 1 <= low <= high"),
])
def test_bad_arguments_raise_clear_errors(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()

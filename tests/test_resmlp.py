"""The residual MLP's variants: SkipInit starts as the identity, the unnormalized stream grows
with depth, WS + GroupNorm does not depend on batch mates, BN does."""

import pytest
import torch

from bncourse.resmlp import RESIDUAL_VARIANTS, ResidualBlock, residual_mlp


def test_skipinit_blocks_are_the_identity_at_initialization():
    block = ResidualBlock(16, "skipinit")
    x = torch.randn(4, 16)
    torch.testing.assert_close(block(x), x)
    assert [n for n, _ in block.named_parameters()].count("alpha") == 1


def test_the_stream_grows_with_depth_unless_skipinit_starts_every_block_at_zero():
    torch.manual_seed(0)
    x = torch.randn(64, 40)

    def stream_std(variant, depth):
        torch.manual_seed(1)                            # the same stem for every depth
        net = residual_mlp(depth, 64, variant=variant)
        with torch.no_grad():
            return net[: depth + 1](x).std().item()    # stem and blocks

    # measured: none 0.6 -> 1.5, BN 1.5 -> 5.5 (each block adds a unit-variance branch, De &
    # Smith's point), SkipInit unchanged
    assert stream_std("none", 32) > 2 * stream_std("none", 2)
    assert stream_std("batch", 32) > 3 * stream_std("batch", 2)
    assert stream_std("skipinit", 32) == pytest.approx(stream_std("skipinit", 2), rel=1e-6)


@pytest.mark.parametrize(("variant", "depends"), [("ws_group", False), ("batch", True),
                                                   ("none", False)])
def test_only_batch_norm_makes_an_example_depend_on_its_batch_mates(variant, depends):
    torch.manual_seed(0)
    net = residual_mlp(4, 32, variant=variant).train()
    x = torch.randn(8, 40)
    with torch.no_grad():
        gap = (net(x)[:2] - net(x[:2])).abs().max().item()
    assert (gap > 1e-4) == depends


def test_every_variant_trains_a_step_and_outputs_logits():
    for variant in RESIDUAL_VARIANTS:
        net = residual_mlp(3, 16, variant=variant)
        out = net(torch.randn(4, 40))
        out.sum().backward()
        assert out.shape == (4, 10)


@pytest.mark.parametrize(("call", "phrase"), [
    (lambda: ResidualBlock(8, "layer"), "expected variant to be one of"),
    (lambda: residual_mlp(0), "expected depth >= 1"),
])
def test_bad_arguments_raise_clear_errors(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()

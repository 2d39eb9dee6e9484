"""fold_batchnorm: an equivalent eval-mode model without BN layers, or a clear refusal."""

import re

import pytest
import torch
from torch import nn

from bncourse.models import cnn1d, mlp
from bncourse.nn import BatchNorm, fold_batchnorm, is_batchnorm
from bncourse.train import train

FOLD_ATOL = 1e-5  # float32: the folded weights are rounded once more than the original path


def randomize_bn(model):
    """Running statistics and affine parameters far from their defaults."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if is_batchnorm(m):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(c, generator=g))
                    m.bias.copy_(torch.randn(c, generator=g))
    return model.eval()


def max_abs_difference(a, b, x):
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@pytest.mark.parametrize(
    "make",
    [
        lambda: mlp((64, 32), norm="batch"),
        lambda: mlp((64, 32), norm="scratch", bias=False),
        lambda: cnn1d((8, 16), norm="batch"),
        lambda: cnn1d((8, 16), norm=lambda c: BatchNorm(c, affine=False)),
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten()),
    ],
    ids=["mlp", "mlp-scratch-nobias", "cnn", "cnn-no-affine", "conv2d"],
)
def test_folded_model_equals_original_on_random_inputs(make):
    torch.manual_seed(0)
    model = randomize_bn(make())
    folded = fold_batchnorm(model)
    shape = (16, 3, 10, 10) if isinstance(model[0], nn.Conv2d) else (16, 40)
    x = torch.randn(shape)
    assert max_abs_difference(model, folded, x) <= FOLD_ATOL
    assert not any(is_batchnorm(m) for m in folded.modules())
    assert not folded.training


def test_folded_trained_cnn_equals_original_on_mnist1d(mnist1d):
    torch.manual_seed(0)
    model = cnn1d(norm="batch")
    train(model, mnist1d, epochs=1, lr=0.05, max_steps=20)
    model.eval()
    folded = fold_batchnorm(model)
    assert max_abs_difference(model, folded, mnist1d.x_test) <= FOLD_ATOL


def test_original_model_is_not_modified():
    model = randomize_bn(mlp((16,), norm="batch"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert any(is_batchnorm(m) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="expected a model in eval mode"):
        fold_batchnorm(mlp((16,), norm="batch"))


def test_refuses_bn_after_the_activation():
    model = mlp((16,), norm="batch", norm_position="after").eval()
    phrase = "expected it to follow a Linear or Conv1d/2d/3d"
    with pytest.raises(ValueError, match=re.escape(phrase)):
        fold_batchnorm(model)


def test_refuses_bn_without_running_statistics():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="no running statistics"):
        fold_batchnorm(model)


def test_refuses_bn_outside_a_sequential():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.bn(self.fc(x))

    with pytest.raises(ValueError, match="expected it inside an nn.Sequential"):
        fold_batchnorm(Block().eval())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("requires_grad", [True, False])
def test_fold_keeps_requires_grad_like_torch_fuse_conv_bn_eval(bias, requires_grad):
    conv = nn.Conv1d(2, 4, 3, bias=bias)
    bn = nn.BatchNorm1d(4)
    for p in conv.parameters():
        p.requires_grad_(requires_grad)
    seq = nn.Sequential(conv, bn).eval()
    ours = fold_batchnorm(seq)[0]
    ref = torch.nn.utils.fuse_conv_bn_eval(conv, bn)
    assert ours.weight.requires_grad == ref.weight.requires_grad
    assert ours.bias.requires_grad == ref.bias.requires_grad


def test_fold_handles_bn_without_bias():
    seq = nn.Sequential(nn.Linear(3, 4), BatchNorm(4, bias=False)).double()
    seq(torch.randn(8, 3, dtype=torch.float64))
    seq.eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(fold_batchnorm(seq)(x), seq(x))

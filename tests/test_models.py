"""Tests for bncourse.models: the MLP and 1-D CNN builders."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bncourse.models import ACTIVATIONS, INITS, NORM_POSITIONS, NORMS, cnn1d, mlp
from bncourse.nn import BatchNorm

#: relative error allowed between a sample std over >= 40k weights and its target (~0.4% typical)
INIT_STD_RTOL = 0.05

NORM_TYPES = {
    "batch": nn.BatchNorm1d,
    "scratch": BatchNorm,
    "group": nn.GroupNorm,
}

norms = st.sampled_from([*NORMS, nn.Identity])
activations = st.sampled_from([*ACTIVATIONS, nn.GELU])
inits = st.sampled_from(INITS)
positions = st.sampled_from(NORM_POSITIONS)


def names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


# --- shapes over every combination -----------------------------------------------------------


@given(norm=norms, activation=activations, init=inits, norm_position=positions,
       bias=st.booleans(), hidden=st.lists(st.integers(1, 12), max_size=3),
       dropout=st.sampled_from([0.0, 0.5]), n=st.integers(2, 5), training=st.booleans())
def test_mlp_output_shape(norm, activation, init, norm_position, bias, hidden, dropout, n,
                          training):
    model = mlp(hidden, in_features=7, num_classes=3, norm=norm, activation=activation,
                init=init, bias=bias, norm_position=norm_position, dropout=dropout)
    model.train(training)
    out = model(torch.randn(n, 7))
    assert out.shape == (n, 3)
    assert torch.isfinite(out).all()


@given(norm=norms, activation=activations, init=inits, norm_position=positions,
       bias=st.booleans(), channels=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       kernel_size=st.sampled_from([1, 3, 4, 5]), n=st.integers(2, 4), training=st.booleans())
def test_cnn1d_output_shape(norm, activation, init, norm_position, bias, channels, kernel_size,
                            n, training):
    model = cnn1d(channels, kernel_size=kernel_size, num_classes=4, norm=norm,
                  activation=activation, init=init, bias=bias, norm_position=norm_position)
    model.train(training)
    out = model(torch.randn(n, 40))
    assert out.shape == (n, 4)
    assert torch.isfinite(out).all()


def test_cnn1d_without_convs_is_linear_on_the_signal():
    model = cnn1d(())
    assert model.head.in_features == 40
    assert model(torch.randn(3, 40)).shape == (3, 10)


def test_cnn1d_halves_length_per_conv():
    model = cnn1d()  # 40 -> 20 -> 10 -> 5
    assert model.head.in_features == 32 * 5
    lengths = []
    x = torch.randn(2, 40)
    for name, layer in model.named_children():
        x = layer(x)
        if name.startswith("conv"):
            lengths.append(x.shape[-1])
    assert lengths == [20, 10, 5]


# --- layer names and order -------------------------------------------------------------------


def test_mlp_layer_names_with_norm_before():
    model = mlp((8, 8), norm="batch")
    assert names(model) == ["linear0", "norm0", "act0", "linear1", "norm1", "act1", "head"]


def test_mlp_layer_names_with_norm_after_and_dropout():
    model = mlp((8, 8), norm="batch", norm_position="after", dropout=0.1)
    assert names(model) == [
        "linear0", "act0", "norm0", "drop0", "linear1", "act1", "norm1", "drop1", "head"
    ]
    assert isinstance(model.drop0, nn.Dropout) and model.drop0.p == 0.1


def test_mlp_without_norm_has_no_norm_layers():
    assert names(mlp((8,))) == ["linear0", "act0", "head"]


def test_mlp_without_hidden_layers_is_linear():
    assert names(mlp(())) == ["head"]


def test_cnn1d_layer_names():
    model = cnn1d((4, 4), norm="scratch")
    assert names(model) == [
        "unflatten", "conv0", "norm0", "act0", "conv1", "norm1", "act1", "flatten", "head"
    ]
    assert names(cnn1d((4,), norm_position="after", norm="batch"))[2:4] == ["act0", "norm0"]


# --- norm, activation, bias choices ----------------------------------------------------------


@pytest.mark.parametrize("norm", sorted(NORM_TYPES))
def test_norm_layer_types(norm):
    for model in (mlp((8, 8), norm=norm), cnn1d((8, 8), norm=norm)):
        assert type(model.norm0) is NORM_TYPES[norm]
        assert type(model.norm1) is NORM_TYPES[norm]


def test_norm_num_features_match_widths():
    model = mlp((6, 10), norm="batch")
    assert (model.norm0.num_features, model.norm1.num_features) == (6, 10)
    model = cnn1d((12, 5), norm="scratch")
    assert (model.norm0.num_features, model.norm1.num_features) == (12, 5)


@pytest.mark.parametrize(("channels", "groups"), [(32, 8), (12, 4), (6, 2), (5, 1), (1, 1)])
def test_group_norm_uses_largest_of_8_4_2_1_dividing_c(channels, groups):
    assert cnn1d((channels,), norm="group").norm0.num_groups == groups
    assert mlp((channels,), norm="group").norm0.num_groups == groups


def test_layer_norm_is_layernorm_for_mlp_and_one_group_for_cnn():
    norm = mlp((8,), norm="layer").norm0
    assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (8,)
    norm = cnn1d((8,), norm="layer").norm0
    assert isinstance(norm, nn.GroupNorm) and (norm.num_groups, norm.num_channels) == (1, 8)


def test_norm_factory_callable_gets_num_features():
    widths = []

    def factory(c):
        widths.append(c)
        return nn.Identity()

    mlp((3, 4), norm=factory)
    cnn1d((5, 6), norm=factory)
    assert widths == [3, 4, 5, 6]


@pytest.mark.parametrize(("model", "num_hidden"),
                         [(mlp((8, 8), norm="batch"), 2), (cnn1d((4, 4, 4), norm="batch"), 3)])
def test_one_norm_per_hidden_layer_none_after_head(model, num_hidden):
    assert names(model)[-1] == "head"
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == num_hidden


@pytest.mark.parametrize(("activation", "cls"),
                         [("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh),
                          (nn.GELU, nn.GELU)])
def test_activation_choices(activation, cls):
    assert type(mlp((4,), activation=activation).act0) is cls
    assert type(cnn1d((4,), activation=activation).act0) is cls


def test_activation_modules_are_distinct_instances():
    model = mlp((4, 4), activation=nn.PReLU)  # a stateful activation must not be shared
    assert model.act0 is not model.act1


def test_bias_flag_applies_to_hidden_layers_only():
    model = mlp((4, 4), bias=False)
    assert model.linear0.bias is None and model.linear1.bias is None
    assert model.head.bias is not None
    model = cnn1d((4, 4), bias=False)
    assert model.conv0.bias is None and model.conv1.bias is None
    assert model.head.bias is not None


# --- initialization --------------------------------------------------------------------------


def test_he_init_std():
    model = mlp((400, 400), in_features=200, init="he")
    for layer, fan_in in ((model.linear0, 200), (model.linear1, 400)):
        std = layer.weight.std().item()
        assert math.isclose(std, math.sqrt(2 / fan_in), rel_tol=INIT_STD_RTOL)


def test_he_init_std_conv_uses_channels_times_kernel():
    model = cnn1d((64, 128), kernel_size=5, init="he")
    fan_in = 64 * 5
    assert math.isclose(model.conv1.weight.std().item(), math.sqrt(2 / fan_in),
                        rel_tol=INIT_STD_RTOL)


def test_xavier_init_std():
    layer = mlp((300,), in_features=200, init="xavier").linear0
    assert math.isclose(layer.weight.std().item(), math.sqrt(2 / (200 + 300)),
                        rel_tol=INIT_STD_RTOL)


@pytest.mark.parametrize("init_std", [0.01, 1.0])
def test_normal_init_std(init_std):
    model = mlp((300,), in_features=200, init="normal", init_std=init_std)
    assert math.isclose(model.linear0.weight.std().item(), init_std, rel_tol=INIT_STD_RTOL)
    assert math.isclose(model.head.weight.std().item(), init_std, rel_tol=0.15)  # 3000 weights


@pytest.mark.parametrize("init", ["he", "xavier", "normal"])
def test_non_default_init_zeroes_every_bias_including_head(init):
    for model in (mlp((8,), init=init), cnn1d((8,), init=init)):
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                assert torch.count_nonzero(m.bias) == 0


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    model = mlp((8,))
    torch.manual_seed(0)
    ref = nn.Linear(40, 8)
    assert torch.equal(model.linear0.weight, ref.weight)
    assert torch.count_nonzero(model.linear0.bias) > 0


def test_init_is_seeded():
    torch.manual_seed(3)
    a = mlp(init="he")
    torch.manual_seed(3)
    b = mlp(init="he")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("build", [mlp, cnn1d])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "batchnorm"}, r"norm to be one of \('none', 'batch'"),
        ({"activation": "gelu"}, r"activation to be one of \('relu', 'sigmoid', 'tanh'\)"),
        ({"activation": 3}, "activation"),
        ({"init": "kaiming"}, r"init to be one of \('default', 'he', 'xavier', 'normal'\)"),
        ({"norm_position": "middle"}, r"norm_position to be one of \('before', 'after'\)"),
        ({"init": "normal", "init_std": 0.0}, "init_std > 0"),
    ],
)
def test_bad_choices_raise_naming_allowed_values(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


@pytest.mark.parametrize("kwargs", [{"hidden": (0,)}, {"dropout": 1.0}, {"dropout": -0.1}])
def test_mlp_bad_sizes_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="expected"):
        mlp(**kwargs)


def test_mlp_a_width_that_is_not_an_int_raises_type_error():
    with pytest.raises(TypeError, match=r"expected hidden\[1\] to be an int"):
        mlp(hidden=(4, 4.5))


@pytest.mark.parametrize("kwargs", [{"channels": (0,)}, {"kernel_size": 0}, {"in_length": 0}])
def test_cnn1d_bad_sizes_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="expected"):
        cnn1d(**kwargs)


def test_cnn1d_a_kernel_size_that_is_not_an_int_raises_type_error():
    with pytest.raises(TypeError, match="expected kernel_size to be an int"):
        cnn1d(kernel_size=2.0)


def test_mlp_dropout_only_after_the_last_block_feeds_no_norm_layer():
    model = mlp((8, 8, 8), norm="batch", dropout=0.5, dropout_position="last")
    names = [name for name, _ in model.named_children()]
    assert [n for n in names if n.startswith("drop")] == ["drop2"]
    assert names[names.index("drop2") + 1] == "head"


def test_mlp_rejects_an_unknown_dropout_position():
    with pytest.raises(ValueError, match="dropout_position"):
        mlp((8,), dropout=0.5, dropout_position="first")

"""PyTorch's own BatchNorm test inputs (``module_db`` of ``torch.testing._internal``), run through
``bncourse.nn.BatchNorm`` with torch's module as the oracle: every constructor variant and input
shape torch tests (the empty batch and ``bias=False`` included), in training and in eval mode,
and torch's error inputs."""

import pytest
import torch

common_modules = pytest.importorskip("torch.testing._internal.common_modules",
                                     reason="torch's test inputs need the expecttest package")

from bncourse.nn import BatchNorm  # noqa: E402

FLOAT64_ATOL = 1e-10   # same maths in float64; torch's kernel sums in another order
ENTRIES = [m for m in common_modules.module_db if m.name in
           ("nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d")]
CASES = [(entry, training, i) for entry in ENTRIES for training in (True, False)
         for i in range(len(entry.module_inputs_func(entry, device="cpu", dtype=torch.float64,
                                                     requires_grad=True, training=training)))]


def _inputs(entry, training):
    return entry.module_inputs_func(entry, device="cpu", dtype=torch.float64,
                                    requires_grad=True, training=training)


def _pair(module_input, entry):
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    torch.manual_seed(0)
    ref = entry.module_cls(*args, **kwargs).double()
    if ref.weight is not None:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2.0)
    if ref.bias is not None:
        with torch.no_grad():
            ref.bias.normal_()
    ours = BatchNorm(*args, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize(("entry", "training", "index"), CASES,
                         ids=[f"{e.name}-{'train' if t else 'eval'}-{i}" for e, t, i in CASES])
def test_torchs_module_inputs_give_torchs_outputs_gradients_and_buffers(entry, training, index):
    module_input = _inputs(entry, training)[index]
    ref, ours = _pair(module_input, entry)
    if not training and ref.track_running_stats:
        # eval mode on statistics that have moved away from (0, 1)
        warm = torch.randn((8, ref.num_features) + (3,) * (len(
            module_input.forward_input.args[0].shape) - 2), dtype=torch.float64) * 2 + 1
        ref(warm), ours(warm)
    ref.train(training), ours.train(training)
    x = module_input.forward_input.args[0]
    x_ref, x_ours = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    out_ref, out_ours = ref(x_ref), ours(x_ours)
    torch.testing.assert_close(out_ours, out_ref, atol=FLOAT64_ATOL, rtol=0)
    g = torch.randn(out_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out_ref.backward(g)
    out_ours.backward(g)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=FLOAT64_ATOL, rtol=0)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(getattr(ours, name).grad, p.grad, atol=FLOAT64_ATOL, rtol=0)
    for name, b in ref.named_buffers():
        torch.testing.assert_close(getattr(ours, name), b, atol=FLOAT64_ATOL, rtol=0)


ERROR_CASES = [(entry, e) for entry in ENTRIES for e in entry.module_error_inputs_func(
    entry, device="cpu", dtype=torch.float64, requires_grad=False, training=True)]


@pytest.mark.parametrize(("entry", "error_input"), ERROR_CASES,
                         ids=[f"{e.name}-{i}" for i, (e, _) in enumerate(ERROR_CASES)])
def test_torchs_error_inputs_raise_the_same_exception_type(entry, error_input):
    module_input = error_input.module_error_input
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    ours = BatchNorm(*args, **kwargs).double()              # accepted at construction, as torch
    assert error_input.error_on == common_modules.ModuleErrorEnum.FORWARD_ERROR
    with pytest.raises(error_input.error_type, match="eps"):  # our wording is expected/got
        ours(*module_input.forward_input.args)

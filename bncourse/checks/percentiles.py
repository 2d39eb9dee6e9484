"""check_percentile_hook (notebook 03): a forward hook that records a layer's input percentiles.

The learner writes a hook *factory*, ``percentile_hook(record, q)``; the checker registers the
hook it returns on a sigmoid (the layer Ioffe & Szegedy's Figure 1 watches), runs a few forward
calls ("steps") on inputs that require grad, as in training, and compares what the hook put in
``record`` with what the package's probe, :func:`bncourse.probes.record_percentiles`, records on
the same calls. The catalogue's variants are hook factories with one bug each, run the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution

__all__ = ["check_percentile_hook"]


def _percentile_hook_solution(record, q=(15, 50, 85)):
    from bncourse.probes import percentiles

    def hook(module, inputs, output):
        record.append(percentiles(inputs[0], q).numpy())        # (len(q), C), detached
    return hook


def _as_inputs(batches):
    import torch

    # float64 tensors in the autograd graph, as a layer's input is during training
    return [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in batches]


def _recorded_reference(batches, q):
    """What the package's probe records on the checker's forward calls: (steps, len(q), C)."""
    import torch

    from bncourse.probes import record_percentiles

    layer = torch.nn.Sigmoid()
    with record_percentiles(layer, q=q, unit=None) as rec:
        for x in _as_inputs(batches):
            layer(x)
    return rec.as_array()


def _recorded_by(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Runs ``factory``'s hook on a sigmoid over the case's batches; returns the stacked record.

    The returned function has the reference's signature, ``(batches, q)``, and carries the
    factory's name, so that messages name the learner's function.
    """
    name = getattr(factory, "__name__", "your function")

    def run(batches, q):
        import torch

        record: list = []
        try:
            hook = factory(record, q)
        except TypeError as exc:
            raise RuntimeError(f"calling `{name}(record, q)` failed ({exc}); it must take the "
                               f"list to append to and the percentiles.") from exc
        if not callable(hook):
            raise RuntimeError(f"`{name}(record, q)` returned a {type(hook).__name__}; it must "
                               f"return the hook function, `hook(module, inputs, output)`.")
        layer = torch.nn.Sigmoid()
        handle = layer.register_forward_hook(hook)
        try:
            steps = 0
            for x in _as_inputs(batches):
                layer(x)
                steps += 1
        finally:
            handle.remove()
        if len(record) != steps:
            raise RuntimeError(f"after {steps} forward calls `record` holds {len(record)} "
                               f"entries; the hook must append one entry per call.")
        rows = []
        for entry in record:
            if isinstance(entry, torch.Tensor) and entry.requires_grad:
                raise RuntimeError(
                    "the hook stored a tensor that is still part of the autograd graph "
                    "(requires_grad=True): every step would keep its whole graph alive. "
                    "Detach the input first (`inputs[0].detach()`), then convert to numpy.")
            rows.append(np.asarray(entry.detach() if isinstance(entry, torch.Tensor) else entry,
                                   dtype=np.float64))
        if len({r.shape for r in rows}) > 1:
            raise RuntimeError(f"the entries of `record` have different shapes: "
                               f"{sorted({r.shape for r in rows})}.")
        return np.stack(rows)
    run.__name__ = name
    return run


def _numpy_hook(compute):
    """A hook factory whose hook appends ``compute(x, output, q)`` (x: the detached input)."""
    def factory(record, q=(15, 50, 85)):
        def hook(module, inputs, output):
            x, y = inputs[0].detach().numpy(), output.detach().numpy()
            record.append(compute(x, y, np.asarray(q, dtype=np.float64)))
        return hook
    return factory


def _channels_first(a):
    """(N, C, *) -> (C, N * prod(*)): each row one channel's values."""
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)


_AXES = ("every axis but the channel axis 1, e.g. on `np.moveaxis(x, 1, 0).reshape(C, -1)` "
         "with axis=1")

_PERCENTILE_MISTAKES = (
    Mistake("records_output",
            "The hook records the layer's output, not its input: Figure 1 plots what goes "
            "*into* the sigmoid. A forward hook gets both; the input is `inputs[0]`.",
            "Compute the percentiles of `inputs[0]`.",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(_channels_first(y), q,
                                                                   axis=1)))),
    Mistake("fractions",
            "The percentiles are computed at q / 100: np.percentile takes percents (15 for the "
            "15th percentile); fractions are for np.quantile and torch.quantile.",
            "np.percentile(values, q, ...) with q as given, or np.quantile(values, q / 100).",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(_channels_first(x), q / 100,
                                                                   axis=1)))),
    Mistake("axis0_only",
            "The percentiles are taken over axis 0 only: for (N, C, L) input that gives one "
            "value per channel and position. A unit's distribution is all its values in the "
            "batch, at every position.",
            "Take them over " + _AXES + ".",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(x, q, axis=0)))),
    Mistake("per_example",
            "The percentiles are taken per example (over the channel axis): each unit needs "
            "its own distribution over the batch.",
            "Take them over " + _AXES + ".",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(
                x.reshape(x.shape[0], -1), q, axis=1)))),
    Mistake("reshape_channels",
            "`x.reshape(-1, C)` does not gather each channel's values: reshape keeps memory "
            "order, so for (N, C, L) each column mixes channels and positions.",
            "Move the channel axis first: `np.moveaxis(x, 1, 0).reshape(C, -1)`, then axis=1.",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(
                x.reshape(-1, x.shape[1]), q, axis=0)))),
    Mistake("transposed",
            "Each entry is (C, len(q)); the contract is one row per percentile, (len(q), C).",
            "Transpose the entry, or take the percentiles along axis 1 of a (C, m) array "
            "(np.percentile puts the q axis first).",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(_channels_first(x), q,
                                                                   axis=1).T))),
    Mistake("nearest_rank",
            "Each percentile is one of the recorded values (the nearest rank): between two "
            "values, percentiles interpolate linearly, as np.percentile does by default.",
            "Use np.percentile (or torch.quantile) with its default linear interpolation.",
            _recorded_by(_numpy_hook(lambda x, y, q: np.percentile(_channels_first(x), q,
                                                                   axis=1, method="nearest")))),
)


def _percentile_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 13)
    cases = []
    # (steps, shape, q): a few small batches with skewed, per-channel shifted values, so that
    # input and output (sigmoid) percentiles, nearest ranks and wrong axes all differ
    for steps, shape, q in [(3, (24, 5), (15, 50, 85)), (2, (5, 4, 7), (15, 50, 85)),
                            (2, (9, 3, 4), (10, 25, 90))]:
        batches = [rng.exponential(1.0, shape) * rng.uniform(0.5, 3.0, shape[1]).reshape(
            (1, -1) + (1,) * (len(shape) - 2)) + np.arange(shape[1]).reshape(
            (1, -1) + (1,) * (len(shape) - 2)) - 2.0 for _ in range(steps)]
        dims = "(N, C)" if len(shape) == 2 else "(N, C, L)"
        cases.append(Case(f"\"{steps} forward calls on {dims} = {shape}, q={q}\"",
                          (batches, q)))
    return cases


@with_solution(_percentile_hook_solution)
def check_percentile_hook(fn: Callable[..., Any]) -> None:
    """Check ``fn(record, q=(15, 50, 85)) -> hook``, a factory of forward hooks that record a
    layer's input percentiles per channel (the probe of Ioffe & Szegedy's Figure 1).

    The returned ``hook(module, inputs, output)`` must append to the list ``record``, at every
    forward call, a numpy array of shape (len(q), C): row i holds the ``q[i]``-th percentile
    (``q`` in percents) of each channel's values in ``inputs[0]``, over the batch and any
    positions, with linear interpolation (numpy's default). The input requires grad; what is
    stored must not.

    The checker registers the hook on an ``nn.Sigmoid`` and compares the record after a few
    calls on (N, C) and (N, C, L) float64 inputs with
    :func:`bncourse.probes.record_percentiles`'s. On success prints one deterministic line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        _recorded_by(fn), _recorded_reference, _percentile_cases(), _PERCENTILE_MISTAKES,
        name="check_percentile_hook", outputs=("record",),
        advice="in the hook, take x = inputs[0].detach().numpy(), gather each channel's values "
               "(np.moveaxis(x, 1, 0).reshape(C, -1)) and append np.percentile(those, q, "
               "axis=1), shape (len(q), C).",
    )

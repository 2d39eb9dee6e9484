"""Exercise checkers: run a learner's function against the reference and say what is wrong.

Each checker calls the learner's function on a few fixed float64 inputs built so that mistakes
show: non-zero means, unequal channel scales, one channel with a tiny variance (~1e-4, where a
missing ``eps`` changes the output by percents), ``gamma`` and ``beta`` far from 1 and 0, random
upstream gradients. When the outputs differ from the reference, they are compared with a
catalogue of known mistakes -- each one a copy of the reference with that one bug -- so the
message can name the bug and its fix instead of just "mismatch".

On success a checker prints one deterministic line; on failure it raises :class:`ExerciseError`
(an ``AssertionError``, so an nbval run of a broken solution fails loudly) with the diagnosis.

The checkers of notebook 01:

* :func:`check_forward` -- the training-mode forward pass;
* :func:`check_backward` and :func:`check_backward_compact` -- the staged and closed-form
  backward passes;
* :func:`check_running_update` -- PyTorch's running-statistics update.

And of the later notebooks: :func:`check_batchnorm_module` (02, a BN ``nn.Module``),
:func:`check_ics_measure` (03), :func:`check_bn_output_std` (04), :func:`check_renorm_rd` (05),
:func:`check_fold_linear_bn` (06), :func:`check_paired_interval` (07).

A checker for another exercise is a reference, a few :class:`Case` s and, optionally, a few
:class:`Mistake` s and :class:`Hint` s handed to :func:`check_function`::

    def check_relu(fn):
        x = np.random.default_rng(0).normal(size=(4, 3))
        check_function(
            fn, lambda x: np.maximum(x, 0), [Case("x of shape (4, 3)", (x,))],
            [Mistake("abs", "You return |x|.", "Use np.maximum(x, 0).", np.abs)],
            name="check_relu",
        )
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bncourse.functional import batchnorm_backward, batchnorm_forward

__all__ = [
    "ATOL",
    "RTOL",
    "SEED",
    "Case",
    "ExerciseError",
    "Hint",
    "Mistake",
    "check_backward",
    "check_backward_compact",
    "check_batchnorm_module",
    "check_forward",
    "check_function",
    "check_running_update",
]

ATOL = 1e-8
"""Absolute tolerance of every comparison (float64: a correct solution is off by ~1e-13)."""
RTOL = 1e-6
"""Relative tolerance of every comparison."""
SEED = 2015
"""Seed of the checkers' inputs: the same inputs, hence the same messages, on every run."""


class ExerciseError(AssertionError):
    """A learner's function disagrees with the reference; the message says how.

    Attributes:
        mistakes: keys of the catalogued :class:`Mistake` s the function was found to make
            (empty when the bug is not a known one).
    """

    def __init__(self, message: str, mistakes: Sequence[str] = ()):
        super().__init__(message)
        self.mistakes = tuple(mistakes)


@dataclass(frozen=True)
class Case:
    """One input on which the learner's function is compared with the reference.

    Args:
        label: how messages name the case, e.g. ``"x of shape (16, 5), eps=1e-05"``.
        args: positional arguments; every call gets deep copies.
        kwargs: keyword arguments.
        reference_args: what the reference and the mistakes get instead of ``args`` where the
            two differ (e.g. a cache made by the learner's own forward). Default: ``args``.
        tags: labels that :class:`Hint` s select cases by.
        channel_notes: ``{channel: words}`` for channels built to reveal a mistake; an error
            confined to them is described with these words.
    """

    label: str
    args: tuple
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    reference_args: tuple | None = None
    tags: frozenset[str] = frozenset()
    channel_notes: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A known mistake, written as the reference with that mistake in it.

    Args:
        key: short identifier, listed in :attr:`ExerciseError.mistakes`.
        diagnosis: what is wrong, in plain words.
        fix: how to put it right.
        fn: the buggy variant; same signature and outputs as the reference.
    """

    key: str
    diagnosis: str
    fix: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class Hint:
    """Words shown when every case tagged ``tag`` matches the reference and another does not."""

    tag: str
    text: str


class _Stop(Exception):
    """A problem that ends the check before any comparison (raised, returned None, ...)."""


# --------------------------------------------------------------------------------------------
# The generic machinery
# --------------------------------------------------------------------------------------------


def check_function(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    hints: Sequence[Hint] = (),
    *,
    name: str,
    outputs: Sequence[str] = ("out",),
    unpack: Callable[[Any], Any] | None = None,
    mutable: Sequence[str] = (),
    advice: str = "",
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    """Compare ``fn`` with ``reference`` on ``cases``; print one line, or raise a diagnosis.

    Every checker of the course is this function plus its inputs. For each case ``fn`` is called
    on deep copies of ``case.args`` (so it cannot spoil the next case) and the reference on
    ``case.reference_args``. Then:

    1. ``fn`` raising, returning ``None`` or the wrong number of outputs stops the check with
       a message that says so (``NotImplementedError`` reads "not implemented yet").
    2. If all outputs of all cases are within ``atol + rtol * |expected|`` of the reference and
       ``fn`` changed none of its inputs in place (apart from those named in ``mutable``), one
       line ``"{name}: all {n} cases match the reference."`` is printed.
    3. Otherwise each wrong output is matched against the ``mistakes``: a mistake explains an
       output when its variant's output is within tolerance of ``fn``'s on *every* case. The
       fewest mistakes explaining the most outputs are reported, with their fixes. An output
       no mistake explains is described by its wrong shape, its NaN/inf, or its largest error
       (where, in which channel, yours against expected) and ``advice``. The text of every
       :class:`Hint` whose condition holds is added; then :class:`ExerciseError` is raised.

    Args:
        fn: the learner's function.
        reference: the correct function, with the signature ``fn`` must have (its parameter
            names are used in messages).
        cases: the inputs.
        mistakes: the catalogue of known mistakes.
        hints: patterns of passing and failing cases worth a sentence.
        name: the checker's name, first word of every message.
        outputs: names of the outputs; with more than one, ``fn`` must return a tuple of them.
        unpack: applied to ``fn``'s return value first (e.g. to accept ``(out, cache)``).
        mutable: parameters ``fn`` may change in place.
        advice: the hint for a bug that is not in the catalogue.
        rtol, atol: tolerances, as in :func:`numpy.allclose`.

    Raises:
        ExerciseError: when ``fn`` is wrong.
    """
    params = _param_names(reference)
    fn_name = _fn_name(fn)
    got, side_effects = [], []
    try:
        for case in cases:
            raw, changed = _call(fn, case, params, name, fn_name)
            if raw is None and changed & set(mutable):
                raise _Stop(_returned_none(name, fn_name, outputs, sorted(changed & set(mutable))))
            got.append(_as_outputs(raw if unpack is None else unpack(raw), outputs, case))
            side_effects += [(p, case) for p in sorted(changed - set(mutable))]
    except _Stop as stop:
        raise ExerciseError(f"{name}: {stop}") from stop.__cause__

    expected = [_as_outputs(_call_quietly(reference, case), outputs, case) for case in cases]
    ok = [[_close(g, e, rtol, atol) for g, e in zip(gs, es, strict=True)]
          for gs, es in zip(got, expected, strict=True)]
    n_bad = sum(not all(row) for row in ok)
    if n_bad == 0 and not side_effects:
        print(f"{name}: all {len(cases)} cases match the reference.")
        return

    wrong = [j for j in range(len(outputs)) if not all(row[j] for row in ok)]
    variants = {mk.key: [_run_variant(mk.fn, case, outputs) for case in cases] for mk in mistakes}
    explains = {
        mk.key: {j for j in wrong
                 if all(v is not None and _close(g[j], v[j], rtol, atol)
                        for g, v in zip(got, variants[mk.key], strict=True))}
        for mk in mistakes
    }
    by_key = {mk.key: mk for mk in mistakes}

    lines = [f"{name}: `{fn_name}` does not match the reference in {n_bad} of {len(cases)} cases."
             if n_bad else f"{name}: `{fn_name}` returns the right values, but:"]
    found: list[str] = []
    for covered, keys in _cover(wrong, [mk.key for mk in mistakes], explains):
        found += keys
        who = " and ".join(f"`{outputs[j]}`" for j in sorted(covered))
        texts = list(dict.fromkeys(f"{by_key[k].diagnosis} Fix: {by_key[k].fix}" for k in keys))
        if len(texts) == 1:
            lines.append(f"- {who}: {texts[0]}")
        else:
            lines.append(f"- {who} match several known mistakes; one of these:")
            lines += [f"  * {t}" for t in texts]
    unexplained = [j for j in wrong if not any(j in explains[k] for k in explains)]
    for j in unexplained:
        lines += _describe_unknown(outputs[j], j, got, expected, cases, rtol, atol)
    for param, case in side_effects[:1]:
        lines.append(
            f"- `{fn_name}` changed its input `{param}` in place (case {case.label}), so the "
            f"caller's `{param}` is spoiled. Fix: compute new arrays (`x = x - mu`, not "
            f"`x -= mu`), or work on a copy (`{param}.copy()`)."
        )
    passed = [all(row) for row in ok]
    for hint in hints:
        tagged = [p for p, c in zip(passed, cases, strict=True) if hint.tag in c.tags]
        others = [p for p, c in zip(passed, cases, strict=True) if hint.tag not in c.tags]
        if tagged and all(tagged) and not all(others):
            lines.append(f"Note: {hint.text}")
    if unexplained and advice:
        lines.append(f"Hint: {advice}")
    raise ExerciseError("\n".join(lines), found)


def _param_names(reference: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(reference).parameters)
    except (TypeError, ValueError):  # some builtins have no signature
        return []


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _call(fn, case: Case, params: list[str], name: str, fn_name: str) -> tuple[Any, set[str]]:
    """Call ``fn`` on copies of the case's arguments; return its result and the changed ones."""
    args, kwargs = copy.deepcopy(case.args), copy.deepcopy(dict(case.kwargs))
    try:
        with np.errstate(all="ignore"):  # NaN and inf are reported, not warned about
            raw = fn(*args, **kwargs)
    except NotImplementedError:
        raise _Stop(f"`{fn_name}` is not implemented yet: replace `raise NotImplementedError` "
                    f"with your code, run that cell, then run this check again.") from None
    except Exception as exc:
        raise _Stop(_explain_exception(exc, case, params, fn_name)) from exc
    names = [*params[:len(args)], *kwargs]
    before = [*case.args, *case.kwargs.values()]
    changed = {p for p, old, new in zip(names, before, [*args, *kwargs.values()], strict=False)
               if not _same(old, new)}
    return raw, changed


def _call_quietly(fn, case: Case) -> Any:
    args = case.args if case.reference_args is None else case.reference_args
    with np.errstate(all="ignore"):
        return fn(*copy.deepcopy(args), **copy.deepcopy(dict(case.kwargs)))


def _run_variant(fn, case: Case, outputs: Sequence[str]) -> tuple[np.ndarray, ...] | None:
    """A mistake's outputs on a case, or None where that variant cannot run on it."""
    try:
        return _as_outputs(_call_quietly(fn, case), outputs, case)
    except Exception:  # a variant that breaks on some input just matches nothing there
        return None


def _explain_exception(exc: Exception, case: Case, params: list[str], fn_name: str) -> str:
    msg = f"`{fn_name}` raised {type(exc).__name__}: {exc} (case {case.label})."
    if isinstance(exc, TypeError):
        call = ", ".join([*params[:len(case.args)], *(f"{k}=..." for k in case.kwargs)])
        msg += f" The checker calls `{fn_name}({call})`: does your function take these arguments?"
    elif isinstance(exc, KeyError):
        for p, a in zip(params, case.args, strict=False):
            if isinstance(a, dict):
                msg += f" The keys of `{p}` are: {', '.join(map(str, a))}."
    elif isinstance(exc, ValueError) and "broadcast" in str(exc):
        msg += (" Per-channel arrays of shape (C,) must be reshaped to broadcast against the "
                "input: (1, C) for (N, C), (1, C, 1) for (N, C, L), e.g. "
                "`gamma.reshape(1, -1, *[1] * (x.ndim - 2))`; or reduce with keepdims=True.")
    return msg


def _returned_none(name: str, fn_name: str, outputs: Sequence[str], changed: list[str]) -> str:
    return (f"`{fn_name}` returned None; it changed {', '.join(f'`{c}`' for c in changed)} in "
            f"place instead. Updating in place is what PyTorch does to its buffers, but this "
            f"exercise asks for the new values: end with `return {', '.join(outputs)}`.")


def _as_outputs(raw: Any, outputs: Sequence[str], case: Case) -> tuple[np.ndarray, ...]:
    """``raw`` as a tuple of arrays, one per output name, or a _Stop saying what is wrong."""
    want = ", ".join(outputs)
    if raw is None:
        raise _Stop(f"your function returned None (case {case.label}). Did you forget "
                    f"`return {want}`?")
    if len(outputs) == 1:
        raw = (raw,)
    elif not isinstance(raw, (tuple, list)) or len(raw) != len(outputs):
        what = (f"{len(raw)} values" if isinstance(raw, (tuple, list))
                else f"a {type(raw).__name__}")
        raise _Stop(f"your function returned {what} (case {case.label}); expected the "
                    f"{len(outputs)} values `{want}`, as a tuple.")
    result = []
    for name, value in zip(outputs, raw, strict=True):
        try:
            arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        except (TypeError, ValueError):  # e.g. a ragged list
            arr = np.empty(0, dtype=object)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise _Stop(f"`{name}` is a {type(value).__name__} (case {case.label}); expected "
                        f"a numpy array.")
        result.append(arr)
    return tuple(result)


def _same(old: Any, new: Any) -> bool:
    """Whether an argument is unchanged by the call (arrays and dicts of arrays compared)."""
    if isinstance(old, np.ndarray):
        return (isinstance(new, np.ndarray) and old.shape == new.shape
                and np.array_equal(old, new, equal_nan=np.issubdtype(old.dtype, np.inexact)))
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _same(v, new[k]) for k, v in old.items())
    return True  # numbers, tuples, None: nothing to change in place


def _close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> bool:
    return got.shape == want.shape and bool(
        np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True))


def _cover(wrong: list[int], keys: list[str], explains: dict[str, set[int]]):
    """Few mistakes explaining many outputs: greedily the one covering most (catalogue order
    breaks ties), grouped with the mistakes that cover exactly the same outputs."""
    remaining = {j for j in wrong if any(j in e for e in explains.values())}
    while remaining:
        best = max(len(explains[k] & remaining) for k in keys)
        first = next(k for k in keys if len(explains[k] & remaining) == best)
        covered = explains[first] & remaining
        yield covered, [k for k in keys if explains[k] & remaining == covered]
        remaining -= covered


def _channel(arr: np.ndarray, index: tuple[int, ...]) -> int | None:
    """Channel of an entry: axis 1 of an (N, C, ...) output, axis 0 of a (C,) one."""
    return index[1] if arr.ndim >= 2 else index[0] if arr.ndim == 1 else None


def _describe_unknown(out: str, j: int, got, expected, cases, rtol, atol) -> list[str]:
    """What can be said about a wrong output no known mistake explains."""
    for gs, es, case in zip(got, expected, cases, strict=True):
        if gs[j].shape != es[j].shape:
            return [f"- `{out}` has shape {gs[j].shape} in case {case.label}; expected "
                    f"{es[j].shape}."]
    for gs, case in zip(got, cases, strict=True):
        bad = ~np.isfinite(gs[j])
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            kind = "NaN" if np.isnan(gs[j][idx]) else "inf"
            ch = _channel(gs[j], idx)
            where = f"`{out}{list(idx)}`" + (f" (channel {ch})" if ch is not None else "")
            return [f"- `{out}` contains {kind}, e.g. at {where} in case {case.label}. NaN and "
                    f"inf come from a division by zero or the square root of a negative "
                    f"number: check what you divide by, and that eps is added before the "
                    f"square root."]
    n_bad, worst, channels_ok = 0, None, True
    for gs, es, case in zip(got, expected, cases, strict=True):
        g, e = gs[j].astype(np.float64), es[j].astype(np.float64)
        mismatch = ~np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        if not mismatch.any():
            continue
        n_bad += 1
        err = np.where(mismatch, np.abs(g - e), 0.0)
        idx = np.unravel_index(int(np.argmax(err)), err.shape)
        idx = tuple(int(i) for i in idx)
        if worst is None or err[idx] > worst[0]:
            worst = (float(err[idx]), idx, case, float(g[idx]), float(e[idx]), g)
        bad_channels = {_channel(g, tuple(int(i) for i in k)) for k in np.argwhere(mismatch)}
        channels_ok &= bool(case.channel_notes) and bad_channels <= set(case.channel_notes)
    err, idx, case, yours, want, arr = worst
    ch = _channel(arr, idx)
    lines = [f"- `{out}` is wrong in {n_bad} of {len(cases)} cases, and not by a mistake this "
             f"checker knows. Largest error {err:.2e} at `{out}{list(idx)}`"
             + (f" (channel {ch})" if ch is not None else "")
             + f" in case {case.label}: yours {yours:.6g}, expected {want:.6g}."]
    if channels_ok:
        notes = sorted({n for c in cases for n in c.channel_notes.values()})
        lines.append(f"  Only the {' / '.join(notes)} is wrong.")
    dtypes = {gs[j].dtype for gs in got if np.issubdtype(gs[j].dtype, np.floating)}
    if any(d.itemsize < 8 for d in dtypes):
        lines.append(f"  `{out}` is {min(dtypes, key=lambda d: d.itemsize)}: compute in "
                     f"float64, as the inputs are, or rounding alone exceeds the tolerance.")
    return lines


# --------------------------------------------------------------------------------------------
# Inputs shared by the batch-norm checkers
# --------------------------------------------------------------------------------------------

_TINY = "channel with a tiny variance (~1e-4, where eps matters most)"


def _reduce_axes(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


def _ch(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (1, C, 1, ...)."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def _bn_inputs(rng: np.random.Generator, shape: tuple[int, ...]):
    """x with a per-channel mean and scale, one channel (C // 2) with variance ~1e-4;
    gamma in [1.5, 3], beta of either sign with |beta| in [0.5, 2]."""
    c = shape[1]
    scale = rng.uniform(0.5, 4.0, c)
    scale[c // 2] = 1e-2
    x = _ch(rng.uniform(-3, 3, c), len(shape)) + _ch(scale, len(shape)) * rng.standard_normal(shape)
    gamma = rng.uniform(1.5, 3.0, c)
    beta = rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.0, c)
    return x, gamma, beta


def _label(shape: tuple[int, ...], **extra) -> str:
    dims = "(N, C)" if len(shape) == 2 else "(N, C, L)"
    more = "".join(f", {k}={v:g}" for k, v in extra.items())
    return f"\"x of shape {dims} = {shape}{more}\""


# --------------------------------------------------------------------------------------------
# check_forward
# --------------------------------------------------------------------------------------------


def _forward_reference(x, gamma, beta, eps=1e-5):
    return batchnorm_forward(x, gamma, beta, training=True, eps=eps)[0]


def _norm(x, eps, *, axes=None, ddof=0, mode="sqrt_var_eps", center=True):
    """(x - mean) / denominator with the statistics over ``axes`` (default: the right ones)."""
    axes = _reduce_axes(x.ndim) if axes is None else axes
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    denom = {"sqrt_var_eps": np.sqrt(var + eps), "sqrt_var": np.sqrt(var),
             "sqrt_var_plus_eps": np.sqrt(var) + eps, "var_eps": var + eps}[mode]
    return ((x - mu) if center else x) / denom


def _affine(x_hat, gamma, beta):
    return _ch(gamma, x_hat.ndim) * x_hat + _ch(beta, x_hat.ndim)


_FORWARD_MISTAKES = (
    Mistake("per_example",
            "The statistics are taken per example (over axis 1), not per channel.",
            "BN averages each channel over the batch: `x.mean(axis=0)` for (N, C) inputs, "
            "over axes (0, 2) for (N, C, L) ones, with keepdims=True.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, axes=(1,)), gamma, beta)),
    Mistake("per_example_all_axes",
            "The statistics are taken per example (over every axis but 0), not per channel.",
            "BN averages each channel over the batch: over every axis except 1, "
            "with keepdims=True.",
            lambda x, gamma, beta, eps=1e-5: _affine(
                _norm(x, eps, axes=tuple(range(1, x.ndim))), gamma, beta)),
    Mistake("global_stats",
            "One mean and variance for the whole array, instead of one per channel.",
            "Reduce over every axis except the channel axis 1: "
            "`x.mean(axis=(0, *range(2, x.ndim)), keepdims=True)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(
                _norm(x, eps, axes=tuple(range(x.ndim))), gamma, beta)),
    Mistake("axis0_only",
            "For (N, C, L) inputs the statistics are taken over axis 0 only, so each position "
            "along L gets its own mean and variance; (N, C) inputs are right.",
            "Each channel has one mean and variance over all its N * L values: reduce over "
            "axes (0, 2), i.e. `axis=(0, *range(2, x.ndim))`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, axes=(0,)), gamma, beta)),
    Mistake("forgot_eps",
            "eps is missing: you divide by sqrt(var). It shows in the channel whose variance is "
            "tiny (~1e-4), and it would divide by zero for a constant channel.",
            "Divide by `np.sqrt(var + eps)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, mode="sqrt_var"), gamma, beta)),
    Mistake("eps_outside_sqrt",
            "eps is added outside the square root: you divide by sqrt(var) + eps.",
            "Add eps to the variance, then take the root: `np.sqrt(var + eps)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(
                _norm(x, eps, mode="sqrt_var_plus_eps"), gamma, beta)),
    Mistake("hardcoded_eps",
            "The `eps` argument is ignored: your function uses eps = 1e-5 whatever it is given "
            "(the cases with eps=0.001 are wrong).",
            "Use the `eps` parameter, not a constant.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, 1e-5), gamma, beta)),
    Mistake("divided_by_variance",
            "You divide by the variance, not by the standard deviation.",
            "Divide by the square root: `np.sqrt(var + eps)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, mode="var_eps"), gamma, beta)),
    Mistake("unbiased_variance",
            "The normalization uses the unbiased variance (divided by m - 1). BN normalizes "
            "with the biased one (divided by m); only the running variance is unbiased.",
            "Use `x.var(axis=..., keepdims=True)` (ddof=0, numpy's default), or "
            "`((x - mu) ** 2).mean(...)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, ddof=1), gamma, beta)),
    Mistake("not_centered",
            "The mean is not subtracted: you divide x itself by the standard deviation.",
            "x_hat = (x - mu) / np.sqrt(var + eps).",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, center=False), gamma, beta)),
    Mistake("gamma_beta_swapped",
            "gamma and beta are swapped: you compute beta * x_hat + gamma.",
            "out = gamma * x_hat + beta: gamma scales, beta shifts.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps), beta, gamma)),
    Mistake("no_affine",
            "gamma and beta are not applied: you return x_hat.",
            "Finish with out = gamma * x_hat + beta.",
            lambda x, gamma, beta, eps=1e-5: _norm(x, eps)),
    Mistake("no_gamma",
            "gamma is not applied: you return x_hat + beta.",
            "out = gamma * x_hat + beta.",
            lambda x, gamma, beta, eps=1e-5: _norm(x, eps) + _ch(beta, x.ndim)),
    Mistake("no_beta",
            "beta is not applied: you return gamma * x_hat.",
            "out = gamma * x_hat + beta.",
            lambda x, gamma, beta, eps=1e-5: _ch(gamma, x.ndim) * _norm(x, eps)),
)

_FORWARD_HINTS = (
    Hint("2d", "your function is right for (N, C) inputs but not for (N, C, L) ones. For "
               "(N, C, L) inputs take each channel's statistics over axes 0 and 2 (every axis "
               "but 1), and reshape gamma and beta to (1, C, 1)."),
)


def _forward_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases = []
    for shape, eps in [((16, 5), 1e-5), ((7, 3), 1e-3), ((40, 4), 1e-5),
                       ((6, 4, 9), 1e-5), ((3, 5, 7), 1e-3), ((10, 3, 4), 1e-5)]:
        x, gamma, beta = _bn_inputs(rng, shape)
        cases.append(Case(_label(shape, eps=eps), (x, gamma, beta), {"eps": eps},
                          tags=frozenset({"2d"}) if len(shape) == 2 else frozenset(),
                          channel_notes={shape[1] // 2: _TINY}))
    return cases


def _first_if_tuple(raw: Any) -> Any:
    return raw[0] if isinstance(raw, tuple) and raw else raw


def check_forward(fn: Callable[..., Any]) -> None:
    """Check a training-mode batch-norm forward pass against the reference.

    ``fn(x, gamma, beta, eps=1e-5)`` must return ``out`` (or ``(out, cache)``: a tuple's first
    element is taken as ``out``) for ``x`` of shape (N, C) or (N, C, L): per-channel batch
    statistics over axis 0 and every spatial axis, biased variance, ``eps`` inside the square
    root, then ``gamma * x_hat + beta``. Six cases, float64, eps of 1e-5 and 1e-3.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _forward_reference, _forward_cases(), _FORWARD_MISTAKES, _FORWARD_HINTS,
        name="check_forward", outputs=("out",), unpack=_first_if_tuple,
        advice="go through the steps one at a time: mu and var per channel over axis 0 (and "
               "2 for (N, C, L)), biased var, x_hat = (x - mu) / sqrt(var + eps), "
               "out = gamma * x_hat + beta. Print x_hat.mean and x_hat.var per channel: "
               "they should be ~0 and ~1.",
    )


# --------------------------------------------------------------------------------------------
# check_backward, check_backward_compact
# --------------------------------------------------------------------------------------------


def _backward_reference(dout, cache):
    return batchnorm_backward(dout, cache)


def _dx(dout, cache, *, mean_term=1.0, var_term=1.0, m=None, axes=None, gamma=True, eps=True):
    """Closed-form dx with each ingredient adjustable, to build the mistakes from."""
    axes = cache["axes"] if axes is None else axes
    m = cache["m"] if m is None else m
    mean_term = m if mean_term == "m" else mean_term
    var_term = m if var_term == "m" else var_term
    if eps:
        inv_std, x_hat = cache["inv_std"], cache["x_hat"]
    else:
        inv_std = 1.0 / np.sqrt(cache["var"])
        x_hat = cache["xmu"] * inv_std
    sum_dout = dout.sum(axis=axes, keepdims=True)
    sum_dout_xhat = (dout * x_hat).sum(axis=axes, keepdims=True)
    scale = cache["gamma"] * inv_std if gamma else inv_std
    return scale * (dout - mean_term * sum_dout / m - var_term * x_hat * sum_dout_xhat / m)


def _params(dout, cache, axes=None, keepdims=False, x_hat=None):
    axes = cache["axes"] if axes is None else axes
    x_hat = cache["x_hat"] if x_hat is None else x_hat
    return (dout * x_hat).sum(axis=axes, keepdims=keepdims), dout.sum(axis=axes, keepdims=keepdims)


def _with_dx(**kw):
    return lambda dout, cache: (_dx(dout, cache, **kw), *_params(dout, cache))


def _with_ref_dx(f):
    return lambda dout, cache: (f(batchnorm_backward(dout, cache)[0], cache),
                                *_params(dout, cache))


def _with_params(f):
    return lambda dout, cache: (batchnorm_backward(dout, cache)[0], *f(dout, cache))


_CLOSED_FORM = ("dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat)), means "
                "per channel over the reduced axes")

_BACKWARD_MISTAKES = (
    Mistake("dx_times_m",
            "`dx` is m times too large (m = the values per channel: N for (N, C) inputs, "
            "N * L for (N, C, L) ones): a 1/m is missing overall.",
            f"{_CLOSED_FORM}; or, with sums, gamma / (m * std) * (m * dout - sum(dout) - "
            "x_hat * sum(dout * x_hat)).",
            _with_ref_dx(lambda dx, cache: dx * cache["m"])),
    Mistake("dx_over_m",
            "`dx` is m times too small (m = the values per channel): an extra 1/m, often a "
            "mean where the formula has the upstream gradient itself.",
            _CLOSED_FORM + ".",
            _with_ref_dx(lambda dx, cache: dx / cache["m"])),
    Mistake("dx_sign",
            "`dx` has the wrong sign everywhere.",
            "Check the signs: d(x - mu)/dx = +1, d(x - mu)/dmu = -1, d(1/s)/ds = -1/s**2.",
            _with_ref_dx(lambda dx, cache: -dx)),
    Mistake("dx_no_mean_term",
            "`dx` is missing the path through the mean: mu = mean(x) depends on x, so every "
            "x[i] also moves mu.",
            "Add the mean term: dmu = -sum(dxmu) per channel, then dx = dxmu + dmu / m "
            "(closed form: subtract mean(dout)).",
            _with_dx(mean_term=0.0)),
    Mistake("dx_no_var_term",
            "`dx` is missing the path through the variance: var = mean((x - mu)**2) depends "
            "on x, so every x[i] also moves std.",
            "Back-propagate through inv_std, std and var to dsq = dvar / m, and add "
            "2 * xmu * dsq to dxmu (closed form: subtract x_hat * mean(dout * x_hat)).",
            _with_dx(var_term=0.0)),
    Mistake("mean_term_not_over_m",
            "In `dx` the mean term misses its 1/m: the derivative of mu = mean(x) with "
            "respect to each x[i] is 1/m.",
            "dx = dxmu + dmu / m (closed form: subtract mean(dout), not sum(dout)).",
            _with_dx(mean_term="m")),
    Mistake("mean_term_sign",
            "In `dx` the mean term has the wrong sign: xmu = x - mu, so dmu = -sum(dxmu).",
            "dmu = -dxmu.sum(axis=axes, keepdims=True).",
            _with_dx(mean_term=-1.0)),
    Mistake("var_term_not_over_m",
            "In `dx` the variance term misses its 1/m: var = mean(sq), so dsq = dvar / m.",
            "dsq = dvar / m, broadcast to the input's shape (closed form: x_hat * "
            "mean(dout * x_hat), a mean, not a sum).",
            _with_dx(var_term="m")),
    Mistake("var_term_sign",
            "In `dx` the variance term has the wrong sign: d(1/std)/dstd = -1/std**2.",
            "dstd = -dinv_std / std**2.",
            _with_dx(var_term=-1.0)),
    Mistake("var_term_twice",
            "In `dx` the variance term is twice too large: the 1/2 of d sqrt(v)/dv = "
            "1 / (2 sqrt(v)) is missing.",
            "dvar = 0.5 * dstd / std.",
            _with_dx(var_term=2.0)),
    Mistake("var_term_half",
            "In `dx` the variance term is half what it should be: the 2 of d(xmu**2)/dxmu = "
            "2 * xmu is missing.",
            "dxmu += 2 * xmu * dsq.",
            _with_dx(var_term=0.5)),
    Mistake("dx_no_gamma",
            "`dx` is missing the factor gamma: out = gamma * x_hat + beta, so "
            "dx_hat = gamma * dout.",
            "Start from dx_hat = dout * gamma (the cache holds gamma with shape (1, C, ...)).",
            _with_dx(gamma=False)),
    Mistake("dx_no_eps",
            "`dx` uses std = sqrt(var) without eps; it shows in the channel whose variance is "
            "tiny (~1e-4).",
            "Use the forward's std = sqrt(var + eps), e.g. `cache['std']` or "
            "`cache['inv_std']`, instead of recomputing it.",
            _with_dx(eps=False)),
    Mistake("m_is_n",
            "For (N, C, L) inputs `dx` divides by N instead of m = N * L, the number of "
            "values per channel; (N, C) inputs are right.",
            "Use m = x.size // C (or `cache['m']`), and sum over axes (0, 2).",
            lambda dout, cache: (_dx(dout, cache, m=dout.shape[0]), *_params(dout, cache))),
    Mistake("axis0_only",
            "For (N, C, L) inputs the sums run over axis 0 only (forgetting the spatial axis "
            "2), giving one value per (channel, position); (N, C) inputs are right.",
            "Sum over every axis except 1: `axis=(0, *range(2, dout.ndim))` (or "
            "`cache['axes']`), and use m = N * L.",
            lambda dout, cache: (_dx(dout, cache, axes=(0,), m=dout.shape[0]),
                                 *_params(dout, cache, axes=(0,)))),
    Mistake("dgamma_dbeta_swapped",
            "`dgamma` and `dbeta` are swapped.",
            "dbeta = sum(dout), dgamma = sum(dout * x_hat), per channel.",
            _with_params(lambda dout, cache: _params(dout, cache)[::-1])),
    Mistake("params_not_summed",
            "The parameter gradient is not summed over the batch: it has the input's shape. "
            "gamma and beta are shared by every example, so their gradients add up.",
            "Sum per channel over every axis except 1: `.sum(axis=(0, *range(2, dout.ndim)))`, "
            "shape (C,).",
            _with_params(lambda dout, cache: (dout * cache["x_hat"], dout))),
    Mistake("params_wrong_axis",
            "The parameter gradient is summed over the channel axis 1 instead of over the "
            "batch, giving one value per example.",
            "Sum over every axis except 1: `.sum(axis=(0, *range(2, dout.ndim)))`, shape (C,).",
            _with_params(lambda dout, cache: _params(dout, cache, axes=1))),
    Mistake("params_keepdims",
            "The parameter gradient keeps the reduced axes: shape (1, C) or (1, C, 1) "
            "instead of (C,).",
            "Reshape to (C,): `.reshape(-1)`, or sum with keepdims=False.",
            _with_params(lambda dout, cache: _params(dout, cache, keepdims=True))),
    Mistake("dgamma_uses_xmu",
            "`dgamma` uses x - mu instead of x_hat: out = gamma * x_hat + beta, so "
            "dgamma = sum(dout * x_hat).",
            "dgamma = (dout * x_hat).sum(axis=axes).",
            _with_params(lambda dout, cache: _params(dout, cache, x_hat=cache["xmu"]))),
)

_BACKWARD_HINTS = (
    Hint("ones", "your function is right when dout is all ones, but not for a random dout. "
                 "All-ones hides bugs: then the loss is sum(out) = gamma * sum(x_hat) + "
                 "m * beta per channel, and x_hat sums to zero whatever x is, so the loss does "
                 "not depend on x and the true dx is exactly 0 (in general dx sums to zero "
                 "per channel). Terms that vanish for dout = 1 -- dout - mean(dout), "
                 "sum(dout * x_hat) -- hide any factor or sign error in them. Always test "
                 "with a random dout."),
    Hint("2d", "your function is right for (N, C) inputs but not for (N, C, L) ones: sum "
               "over axes 0 and 2 (every axis but 1), and m = N * L values per channel."),
)


def _backward_cases(forward, name: str) -> list[Case]:
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for shape, eps, ones in [((16, 5), 1e-5, False), ((7, 3), 1e-3, False),
                             ((6, 4, 9), 1e-5, False), ((3, 5, 7), 1e-5, False),
                             ((8, 3), 1e-5, True), ((4, 3, 5), 1e-5, True)]:
        x, gamma, beta = _bn_inputs(rng, shape)
        if ones:
            dout = np.ones(shape)
        else:  # per-channel offsets: a dout with non-zero mean, as a real loss gives
            dout = _ch(rng.uniform(-1, 1, shape[1]), len(shape)) + 1.5 * rng.standard_normal(shape)
        _, ref_cache = batchnorm_forward(x, gamma, beta, training=True, eps=eps)
        label = _label(shape, eps=eps)[:-1] + (", dout = all ones\"" if ones else "\"")
        cache = ref_cache
        if forward is not None:
            cache = _learner_cache(forward, Case(label, (x, gamma, beta), {"eps": eps}), name)
        tags = {"2d"} if len(shape) == 2 else set()
        cases.append(Case(label, (dout, cache), reference_args=(dout, ref_cache),
                          tags=frozenset(tags | ({"ones"} if ones else set())),
                          channel_notes={shape[1] // 2: _TINY}))
    return cases


def _learner_cache(forward, case: Case, name: str) -> Any:
    fname = _fn_name(forward)
    try:
        raw, _ = _call(forward, case, ["x", "gamma", "beta"], name, fname)
    except _Stop as stop:
        raise ExerciseError(f"{name}: your forward {stop}") from stop.__cause__
    if not (isinstance(raw, tuple) and len(raw) == 2):
        raise ExerciseError(f"{name}: your forward `{fname}` must return (out, cache) for the "
                            f"backward pass to use.")
    return raw[1]


def _check_backward(fn, forward, name: str) -> None:
    check_function(
        fn, _backward_reference, _backward_cases(forward, name), _BACKWARD_MISTAKES,
        _BACKWARD_HINTS, name=name, outputs=("dx", "dgamma", "dbeta"),
        advice="check each node's local derivative against a numerical gradient "
               "(bncourse.gradcheck.numerical_gradient) with a random dout; dx of a correct "
               "backward sums to ~0 per channel. " + _CLOSED_FORM + ".",
    )


def check_backward(fn: Callable[..., Any], forward: Callable[..., Any] | None = None) -> None:
    """Check a training-mode batch-norm backward pass (the staged exercise) against the reference.

    ``fn(dout, cache)`` must return ``(dx, dgamma, dbeta)`` with the shapes of ``x``, (C,) and
    (C,). Six cases, (N, C) and (N, C, L), four random upstream gradients and two all-ones ones.

    Args:
        fn: the learner's backward.
        forward: makes the cache, called as ``forward(x, gamma, beta, eps=eps)`` and returning
            ``(out, cache)`` (e.g. the learner's own forward). Default: the reference
            :func:`bncourse.functional.batchnorm_forward` with ``training=True``, whose cache
            keys it documents.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    _check_backward(fn, forward, "check_backward")


def check_backward_compact(fn: Callable[..., Any],
                           forward: Callable[..., Any] | None = None) -> None:
    """Check the closed-form backward pass: the same contract and cases as :func:`check_backward`.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    _check_backward(fn, forward, "check_backward_compact")


# --------------------------------------------------------------------------------------------
# check_running_update
# --------------------------------------------------------------------------------------------


def _running_reference(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * batch_var_biased * m / (m - 1)
    return new_mean, new_var


def _blend(old_weight, correction):
    """A running update weighting the old value by ``old_weight(momentum)``."""
    def update(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
        w = old_weight(momentum)
        return (w * running_mean + (1 - w) * batch_mean,
                w * running_var + (1 - w) * batch_var_biased * correction(m))
    return update


_UNBIASED = "the unbiased batch variance batch_var_biased * m / (m - 1)"
_PYTORCH_RULE = ("new = (1 - momentum) * old + momentum * batch, with " + _UNBIASED
                 + " for the variance")

_RUNNING_MISTAKES = (
    Mistake("not_updated",
            "The running statistics are not updated: you return the old values.",
            _PYTORCH_RULE + ".",
            lambda rm, rv, bm, bv, m, momentum: (rm, rv)),
    Mistake("momentum_reversed",
            "The momentum convention is reversed: you weight the old value by momentum, as "
            "CS231n and Keras do. In PyTorch momentum is the weight of the new batch.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: mom, lambda m: m / (m - 1))),
    Mistake("cs231n_convention",
            "This is the CS231n convention: momentum weights the old value, and the biased "
            "batch variance is stored. PyTorch does neither.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: mom, lambda m: 1.0)),
    Mistake("biased_variance",
            "The biased batch variance is stored. PyTorch stores the unbiased one in "
            "running_var (it estimates the population variance).",
            "Blend in " + _UNBIASED + ".",
            _blend(lambda mom: 1 - mom, lambda m: 1.0)),
    Mistake("correction_inverted",
            "The variance correction is upside down: (m - 1) / m instead of m / (m - 1).",
            "Blend in " + _UNBIASED + ".",
            _blend(lambda mom: 1 - mom, lambda m: (m - 1) / m)),
    Mistake("assigned_batch",
            "The batch statistics are assigned instead of blended in: the running averages "
            "forget every earlier batch.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: 0.0, lambda m: m / (m - 1))),
    Mistake("assigned_batch_biased",
            "The batch statistics are assigned instead of blended in, and the variance is the "
            "biased one.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: 0.0, lambda m: 1.0)),
    Mistake("outputs_swapped",
            "The two results are returned in the wrong order.",
            "return new_mean, new_var.",
            lambda rm, rv, bm, bv, m, momentum: _running_reference(rm, rv, bm, bv, m,
                                                                   momentum)[::-1]),
)


def _running_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 2)
    cases = []
    for c, m, momentum in [(5, 16, 0.1), (3, 2, 0.3), (4, 50, 0.05), (6, 7, 0.9)]:
        args = (rng.uniform(-1, 1, c), rng.uniform(0.5, 2.0, c), rng.uniform(-3, 3, c),
                rng.uniform(0.1, 5.0, c), m, momentum)
        cases.append(Case(f"\"C={c}, m={m}, momentum={momentum}\"", args))
    return cases


def check_running_update(fn: Callable[..., Any]) -> None:
    """Check a running-statistics update against PyTorch's rule.

    ``fn(running_mean, running_var, batch_mean, batch_var_biased, m, momentum)`` must return
    ``(new_mean, new_var)``, each (C,)::

        new_mean = (1 - momentum) * running_mean + momentum * batch_mean
        new_var  = (1 - momentum) * running_var  + momentum * batch_var_biased * m / (m - 1)

    Updating ``running_mean`` and ``running_var`` in place as well is allowed (PyTorch does so
    with its buffers), but the pair must be returned: a function returning ``None`` fails with
    "return new_mean, new_var". Four cases with m from 2 to 50 and momentum from 0.05 to 0.9.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _running_reference, _running_cases(), _RUNNING_MISTAKES,
        name="check_running_update", outputs=("new_mean", "new_var"),
        mutable=("running_mean", "running_var"),
        advice=_PYTORCH_RULE + ".",
    )


# --------------------------------------------------------------------------------------------
# check_batchnorm_module (notebook 02)
# --------------------------------------------------------------------------------------------

_MODULE_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_MODULE_OUTPUTS = ("train_out", "grad_x", "running_mean", "running_var", "num_batches_tracked",
                   "eval_out")
_MODULE_STEPS = 3
_MODULE_SIGNATURE = "MyBatchNorm(num_features, eps=1e-5, momentum=0.1)"


def _variant_module(bug: str | None):
    """A from-scratch batch-norm module with PyTorch's structure and, optionally, one bug.

    ``bug=None`` is a correct implementation; each other value is a mistake of the catalogue.
    """
    import torch
    from torch import nn

    class _Variant(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            self.num_features, self.eps, self.momentum = num_features, eps, momentum
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
            self._count = 0  # the "nbt_not_incremented" variant counts here instead

        def _stats(self, x):
            if bug == "reshape_channels" and x.dim() > 2:
                flat = x.reshape(-1, self.num_features)       # mixes channels and positions
            else:
                flat = x.transpose(0, 1).reshape(self.num_features, -1).t()   # (m, C)
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            if bug == "detached":
                mean, var = mean.detach(), var.detach()
            return mean, var, flat.shape[0]

        def _factor(self):
            self._count += 1
            if bug != "nbt_not_incremented":
                self.num_batches_tracked += 1
            n = self._count
            if self.momentum is None:
                return {"none_as_default": 0.1, "none_assigns_batch": 1.0,
                        "none_off_by_one": 1.0 / (n + 1)}.get(bug, 1.0 / n)
            return 1.0 - self.momentum if bug == "momentum_reversed" else self.momentum

        def forward(self, x):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            use_batch = self.training or bug == "eval_batch_stats"
            update = self.training or bug == "updates_in_eval"
            if use_batch or update:
                mean, var, m = self._stats(x)
            if update:
                factor = self._factor()
                if bug != "not_updated":
                    with torch.no_grad():
                        stored = var if bug == "biased_var" else var * m / (m - 1)
                        self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                        self.running_var.mul_(1 - factor).add_(factor * stored.detach())
            if use_batch:
                if bug == "unbiased_norm":
                    var = var * m / (m - 1)
                x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
            else:
                x_hat = ((x - self.running_mean.reshape(shape))
                         / torch.sqrt(self.running_var.reshape(shape) + self.eps))
            return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)

    _Variant.__name__ = "BatchNorm" if bug is None else f"BatchNorm_{bug}"
    return _Variant


def _module_protocol(make, xs, x_eval, eps, momentum, gamma, beta, r):
    """Build ``make(C, eps=eps, momentum=momentum)`` in float64, set gamma and beta, take the
    training steps ``xs`` (backward through the first), then one eval forward on ``x_eval``.

    Returns the six outputs of :data:`_MODULE_OUTPUTS`; the running statistics have one row
    per step plus one after the eval forward.
    """
    import torch

    bn = make(gamma.shape[0], eps=eps, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    bn.train()
    outs, means, variances, counts, grad = [], [], [], [], None
    for i, x in enumerate(xs):
        x = x.clone().requires_grad_(i == 0)
        out = bn(x)
        if i == 0:
            (out * r).sum().backward()
            grad = x.grad
        outs.append(out.detach())
        means.append(bn.running_mean.detach().clone())
        variances.append(bn.running_var.detach().clone())
        counts.append(float(bn.num_batches_tracked))
    bn.eval()
    with torch.no_grad():
        out_eval = bn(x_eval)
    means.append(bn.running_mean.detach().clone())
    variances.append(bn.running_var.detach().clone())
    counts.append(float(bn.num_batches_tracked))
    return (torch.stack(outs), grad, torch.stack(means), torch.stack(variances),
            torch.tensor(counts, dtype=torch.float64), out_eval.detach())


def _module_reference(xs, x_eval, eps, momentum, gamma, beta, r):
    from torch import nn

    return _module_protocol(nn.BatchNorm1d, xs, x_eval, eps, momentum, gamma, beta, r)


def _module_mistake(key: str, diagnosis: str, fix: str) -> Mistake:
    cls = _variant_module(key)
    return Mistake(key, diagnosis, fix,
                   lambda *args: _module_protocol(cls, *args))


_NONE_RULE = ("momentum=None means a cumulative average: count the batch first "
              "(num_batches_tracked += 1), then blend with factor = 1 / num_batches_tracked, "
              "so after n batches the running mean is the plain average of the n batch means.")

_MODULE_MISTAKES = (
    _module_mistake(
        "not_updated",
        "The running statistics never change in training mode, so eval mode normalizes with "
        "their initial values (mean 0, variance 1).",
        "In training mode, update the buffers in place under torch.no_grad(): "
        "`self.running_mean.mul_(1 - f).add_(f * mean)` (same for running_var); assigning to "
        "a local variable, or `self.running_mean = ...` inside a function that returns "
        "before it, changes nothing."),
    _module_mistake(
        "momentum_reversed",
        "The momentum convention is reversed: you weight the old value by momentum (CS231n's "
        "and Keras's convention). In PyTorch momentum is the weight of the new batch.",
        "running = (1 - momentum) * running + momentum * batch_statistic."),
    _module_mistake(
        "biased_var",
        "running_var stores the biased batch variance (divided by m). PyTorch stores the "
        "unbiased one (divided by m - 1), m = values per channel.",
        "Blend in `var * m / (m - 1)`, where var is the biased variance you normalize with."),
    _module_mistake(
        "nbt_not_incremented",
        "num_batches_tracked is not incremented: it should count the training batches seen.",
        "`self.num_batches_tracked += 1` on every training forward (before the momentum=None "
        "factor is computed)."),
    _module_mistake(
        "none_as_default",
        "momentum=None is treated as momentum=0.1: it should be a cumulative average.",
        _NONE_RULE),
    _module_mistake(
        "none_assigns_batch",
        "momentum=None overwrites the running statistics with each batch's: it should be a "
        "cumulative average of all batches.",
        _NONE_RULE),
    _module_mistake(
        "none_off_by_one",
        "momentum=None is a cumulative average off by one: the factor is 1 / (n + 1) instead "
        "of 1 / n after counting the batch.",
        _NONE_RULE),
    _module_mistake(
        "reshape_channels",
        "For (N, C, L) inputs the statistics mix channels: `x.reshape(-1, C)` does not gather "
        "each channel's values (the memory order is N, C, L), so each 'channel' of the "
        "reshaped array holds values of several channels.",
        "Reduce over dims (0, 2): `x.mean(dim=(0, 2))`, or move the channel axis first: "
        "`x.transpose(0, 1).reshape(C, -1)`."),
    _module_mistake(
        "eval_batch_stats",
        "Eval mode still normalizes with the batch's own statistics: then a prediction depends "
        "on the other examples in the batch, and the running statistics are never used.",
        "Branch on self.training: in eval mode use running_mean and running_var."),
    _module_mistake(
        "updates_in_eval",
        "The running statistics are also updated in eval mode: evaluating on test data "
        "changes the model.",
        "Update the buffers only when self.training is True."),
    _module_mistake(
        "unbiased_norm",
        "Training mode normalizes with the unbiased variance (divided by m - 1). BN normalizes "
        "with the biased one; only running_var stores the unbiased variance.",
        "Use `x.var(dim=dims, unbiased=False)` in the normalization."),
    _module_mistake(
        "detached",
        "The forward values are right but the gradient is not: the batch mean and variance are "
        "detached from the graph (`.detach()`, `.item()`, `.data` or torch.no_grad()), so the "
        "gradient ignores that every example moves the statistics.",
        "Compute the statistics used for the normalization with autograd on; detach only the "
        "copies that go into the running buffers."),
)

_MODULE_HINTS = (
    Hint("2d", "your module is right for (N, C) inputs but not for (N, C, L) ones: take each "
               "channel's statistics over dims 0 and 2, and reshape the (C,) vectors to "
               "(1, C, 1) to broadcast."),
    Hint("momentum_float", "your module is right with momentum=0.1 but not with momentum=None. "
                           + _NONE_RULE),
)


def _module_cases() -> list[Case]:
    import torch

    rng = np.random.default_rng(SEED + 3)
    cases = []
    for shape, eps, momentum in [((16, 5), 1e-5, 0.1), ((8, 4, 6), 1e-3, 0.1),
                                 ((16, 5), 1e-3, None), ((8, 4, 6), 1e-5, None)]:
        xs = []
        for _ in range(_MODULE_STEPS + 1):  # the training steps, then the eval batch
            x, gamma, beta = _bn_inputs(rng, shape)
            xs.append(torch.from_numpy(x))
        r = torch.from_numpy(rng.standard_normal(shape))
        dims = "(N, C)" if len(shape) == 2 else "(N, C, L)"
        tags = {"2d"} if len(shape) == 2 else set()
        tags |= {"momentum_float"} if momentum is not None else set()
        cases.append(Case(
            f"\"x of shape {dims} = {shape}, eps={eps:g}, momentum={momentum}\"",
            (xs[:-1], xs[-1], eps, momentum, torch.from_numpy(gamma), torch.from_numpy(beta),
             r),
            tags=frozenset(tags), channel_notes={shape[1] // 2: _TINY}))
    return cases


def _structure_problems(cls) -> tuple[list[str], list[str]]:
    """Construction, parameters, buffers, initial values and state_dict keys of ``cls``;
    returns (messages, mistake keys)."""
    import torch
    from torch import nn

    name = _fn_name(cls)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return ([f"`{name}` must be a class deriving from torch.nn.Module (pass the class, not "
                 f"an instance)."], ["not_a_module_class"])
    if issubclass(cls, nn.modules.batchnorm._NormBase):
        return ([f"`{name}` derives from PyTorch's batch norm, which does all the work; derive "
                 f"from nn.Module and write it yourself."], ["derives_from_torch_bn"])
    try:
        bn = cls(5, eps=1e-5, momentum=0.1)
        cls(5, eps=1e-3, momentum=None)
    except NotImplementedError:
        return ([f"`{name}` is not implemented yet: replace `raise NotImplementedError` with "
                 f"your code, run that cell, then run this check again."], ["not_implemented"])
    except Exception as exc:
        return ([f"`{name}(5, eps=1e-5, momentum=0.1)` raised {type(exc).__name__}: {exc}. "
                 f"The checker builds the module as `{_MODULE_SIGNATURE}`; momentum may also be "
                 f"None."], ["constructor"])
    params, buffers = dict(bn.named_parameters()), dict(bn.named_buffers())
    lines, keys = [], []
    as_params = [k for k in ("running_mean", "running_var", "num_batches_tracked") if k in params]
    if as_params:
        keys.append("stats_as_parameters")
        lines.append(
            f"{', '.join(f'`{k}`' for k in as_params)} registered as nn.Parameter: the optimizer "
            f"would treat running statistics as trainable weights (weight decay would shrink "
            f"them, and model.parameters() counts them). They are state, not weights. Fix: "
            f"`self.register_buffer('running_mean', torch.zeros(num_features))` (likewise "
            f"running_var with ones, num_batches_tracked with torch.tensor(0, dtype=torch.long)).")
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        if k in params or k in buffers:
            continue
        value = getattr(bn, k, None)
        keys.append(f"{k}_not_buffer")
        if value is None:
            lines.append(f"`{k}` is missing. Fix: `self.register_buffer('{k}', ...)` in "
                         f"__init__.")
        else:
            lines.append(f"`{k}` is a plain attribute ({type(value).__name__}), not a buffer: it "
                         f"is not saved in state_dict and `.to()`/`.double()` do not move it. "
                         f"Fix: `self.register_buffer('{k}', ...)` in __init__.")
    for k in ("weight", "bias"):
        if k not in params:
            keys.append(f"{k}_not_parameter")
            lines.append(f"`{k}` is not an nn.Parameter of the module (PyTorch names gamma "
                         f"`weight` and beta `bias`). Fix: `self.{k} = nn.Parameter(...)`.")
    state = bn.state_dict()
    extra = sorted(set(state) - set(_MODULE_KEYS))
    if extra:
        keys.append("state_dict_keys")
        lines.append(f"state_dict has keys nn.BatchNorm1d does not have: {', '.join(extra)}; its "
                     f"keys are exactly {', '.join(_MODULE_KEYS)}, so checkpoints would not load "
                     f"either way. Fix: use these names; keep other state as plain attributes.")
    if lines:
        return lines, keys
    want = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0,
            "num_batches_tracked": 0.0}
    for k in _MODULE_KEYS:
        v = state[k]
        shape = () if k == "num_batches_tracked" else (5,)
        if tuple(v.shape) != shape:
            keys.append(f"{k}_shape")
            lines.append(f"`{k}` has shape {tuple(v.shape)} for num_features=5; expected "
                         f"{shape}.")
        elif not torch.all(v.double() == want[k]):
            keys.append(f"{k}_init")
            lines.append(f"`{k}` starts at {v.tolist()}; PyTorch starts it at {want[k]:g} "
                         f"everywhere.")
    if "num_batches_tracked" in state and not keys and state["num_batches_tracked"].dtype != \
            torch.long:
        keys.append("num_batches_tracked_dtype")
        lines.append(f"`num_batches_tracked` is {state['num_batches_tracked'].dtype}; PyTorch "
                     f"uses torch.long (an integer count). Fix: torch.tensor(0, "
                     f"dtype=torch.long).")
    return lines, keys


def _state_dict_round_trip(cls) -> list[str]:
    """Load a trained nn.BatchNorm1d's state_dict into ``cls`` and back; what went wrong."""
    import torch
    from torch import nn

    rng = np.random.default_rng(SEED + 4)
    xs = [torch.from_numpy(_bn_inputs(rng, (8, 4, 6))[0]) for _ in range(4)]
    problems = []
    for src_cls, dst_cls, words in [(nn.BatchNorm1d, cls, "nn.BatchNorm1d -> yours"),
                                    (cls, nn.BatchNorm1d, "yours -> nn.BatchNorm1d")]:
        src = src_cls(4, momentum=0.3).double()
        with torch.no_grad():
            src.weight.copy_(torch.linspace(0.5, 2.0, 4, dtype=torch.float64))
            src.bias.copy_(torch.linspace(-1.0, 1.0, 4, dtype=torch.float64))
        src.train()
        with torch.no_grad():
            for x in xs[:3]:
                src(x)
        dst = dst_cls(4, momentum=0.3).double()
        try:
            dst.load_state_dict(src.state_dict())
        except Exception as exc:
            problems.append(f"- state_dict interchange ({words}): load_state_dict raised "
                            f"{type(exc).__name__}: {exc}")
            continue
        src.eval()
        dst.eval()
        with torch.no_grad():
            same = torch.allclose(src(xs[3]), dst(xs[3]), rtol=RTOL, atol=ATOL)
        if not same:
            problems.append(f"- state_dict interchange ({words}): the state_dict loads, but the "
                            f"two modules then disagree in eval mode. Are the buffers you read "
                            f"in forward the ones you registered?")
    return problems


def check_batchnorm_module(cls) -> None:
    """Check a from-scratch batch-norm ``nn.Module`` class against ``torch.nn.BatchNorm1d``.

    ``cls(num_features, eps=1e-5, momentum=0.1)`` must build a module with the parameters
    ``weight`` and ``bias`` and the buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` (PyTorch's names, initial values and ``state_dict`` keys). In float64,
    for (N, C) and (N, C, L) inputs and for momentum 0.1 and ``None`` (four cases), the checker
    compares with ``nn.BatchNorm1d``: three training steps (outputs, the input gradient of the
    first, the running statistics and ``num_batches_tracked`` after each), then one eval-mode
    forward (its output, and the running statistics after it). Finally a trained
    ``nn.BatchNorm1d``'s ``state_dict`` must load into ``cls`` and give the same eval outputs, and
    the other way round.

    On success prints two deterministic lines.

    Raises:
        ExerciseError: with a diagnosis in plain words when ``cls`` is wrong.
    """
    name = "check_batchnorm_module"
    lines, keys = _structure_problems(cls)
    if lines:
        head = f"{name}: the structure of `{_fn_name(cls)}` differs from nn.BatchNorm1d's:"
        raise ExerciseError("\n".join([head, *(f"- {line}" for line in lines)]), keys)

    def run(xs, x_eval, eps, momentum, gamma, beta, r):
        try:
            return _module_protocol(cls, xs, x_eval, eps, momentum, gamma, beta, r)
        except RuntimeError as exc:
            if xs[0].dim() > 2:
                raise RuntimeError(f"{exc}. For (N, C, L) inputs, reduce over dims (0, 2) and "
                                   f"reshape (C,) vectors to (1, C, 1)") from exc
            raise

    run.__name__ = _fn_name(cls)
    check_function(
        run, _module_reference, _module_cases(), _MODULE_MISTAKES, _MODULE_HINTS,
        name=name, outputs=_MODULE_OUTPUTS,
        advice="compare with nn.BatchNorm1d step by step in float64: one training forward, "
               "then the buffers, then eval mode.",
    )
    problems = _state_dict_round_trip(cls)
    if problems:
        raise ExerciseError("\n".join([f"{name}: the values match, but:", *problems]),
                            ["state_dict_interchange"])
    print(f"{name}: state_dict loads into nn.BatchNorm1d and back, with equal eval outputs.")


# --------------------------------------------------------------------------------------------
# check_ics_measure (notebook 03)
# --------------------------------------------------------------------------------------------


def _flat(grads):
    return np.concatenate([np.ravel(g) for g in grads])


def _ics_reference(grads_before, grads_after):
    a, b = _flat(grads_before), _flat(grads_after)
    return np.linalg.norm(a - b), a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def _per_tensor(fn):
    """A measure built per tensor: fn maps the list of per-tensor (a, b) pairs to (l2, cos)."""
    def measure(grads_before, grads_after):
        return fn([(np.ravel(a), np.ravel(b))
                   for a, b in zip(grads_before, grads_after, strict=True)])
    return measure


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


_ICS_MISTAKES = (
    Mistake("squared_l2",
            "`l2` is the squared distance: the square root is missing.",
            "l2 = np.sqrt(np.sum((a - b) ** 2)), or np.linalg.norm(a - b).",
            lambda gb, ga: (np.sum((_flat(gb) - _flat(ga)) ** 2), _ics_reference(gb, ga)[1])),
    Mistake("norm_difference",
            "`l2` is the difference of the two norms, | ||a|| - ||b|| |: two gradients of equal "
            "length pointing different ways would count as unchanged.",
            "Take the norm of the difference, np.linalg.norm(a - b).",
            lambda gb, ga: (abs(np.linalg.norm(_flat(gb)) - np.linalg.norm(_flat(ga))),
                            _ics_reference(gb, ga)[1])),
    Mistake("per_tensor_l2",
            "`l2` adds up the distances of each tensor (weight, bias) separately; the distance "
            "of the whole gradient is the root of the summed squares.",
            "Flatten and concatenate all tensors into one vector first.",
            _per_tensor(lambda pairs: (sum(np.linalg.norm(a - b) for a, b in pairs),
                                       _cos(np.concatenate([a for a, _ in pairs]),
                                            np.concatenate([b for _, b in pairs]))))),
    Mistake("per_tensor_cosine",
            "`cosine` averages the cosines of each tensor (weight, bias) separately; the "
            "cosine of the whole gradient is taken over one concatenated vector.",
            "Flatten and concatenate all tensors into one vector first.",
            _per_tensor(lambda pairs: (np.linalg.norm(np.concatenate([a - b for a, b in pairs])),
                                       np.mean([_cos(a, b) for a, b in pairs])))),
    Mistake("unnormalized_cosine",
            "`cosine` is the plain dot product a . b, not divided by the norms.",
            "cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b)).",
            lambda gb, ga: (_ics_reference(gb, ga)[0], _flat(gb) @ _flat(ga))),
    Mistake("cosine_distance",
            "`cosine` is the cosine distance 1 - cos; the exercise asks for the similarity.",
            "Return a @ b / (||a|| ||b||) itself.",
            lambda gb, ga: (_ics_reference(gb, ga)[0], 1 - _ics_reference(gb, ga)[1])),
    Mistake("first_tensor_only",
            "Only the first tensor (the weight) is used; the bias gradient is left out.",
            "Flatten and concatenate every tensor of the list.",
            lambda gb, ga: _ics_reference(gb[:1], ga[:1])),
    Mistake("outputs_swapped",
            "The two results are returned in the wrong order.",
            "return l2, cosine.",
            lambda gb, ga: _ics_reference(gb, ga)[::-1]),
)


def _ics_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 3)
    cases = []
    for out_f, in_f, noise in [(4, 3, 0.3), (6, 5, 1.0), (3, 2, 2.0)]:
        before = [rng.normal(size=(out_f, in_f)), rng.normal(size=out_f) * 3]
        after = [g + noise * rng.normal(size=g.shape) for g in before]
        after[1] = -0.5 * after[1]  # the bias turns around: per-tensor and global cosines differ
        cases.append(Case(f"\"weight {out_f}x{in_f} and bias, noise {noise}\"", (before, after)))
    return cases


def check_ics_measure(fn: Callable[..., Any]) -> None:
    """Check the gradient-change measure of internal covariate shift (Santurkar et al. 2018).

    ``fn(grads_before, grads_after)`` takes two lists of numpy arrays (a layer's gradient, one
    array per parameter, before and after the earlier layers' update) and must return
    ``(l2, cosine)`` of the two gradients flattened and concatenated into vectors a and b::

        l2     = ||a - b||_2
        cosine = a . b / (||a||_2 ||b||_2)

    Three cases, each a weight and a bias whose gradient turns around, so that per-tensor
    shortcuts give different numbers.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _ics_reference, _ics_cases(), _ICS_MISTAKES,
        name="check_ics_measure", outputs=("l2", "cosine"),
        advice="Flatten each list into one vector (np.concatenate of np.ravel), then "
               "l2 = np.linalg.norm(a - b) and cosine = a @ b / (norm(a) * norm(b)).",
    )


__all__ += ["check_ics_measure"]


# --------------------------------------------------------------------------------------------
# Notebook 04: the batch noise of one example's normalized output
# --------------------------------------------------------------------------------------------


def _bn_output_std_reference(z, batch_size, kurtosis=3.0):
    """sqrt((B - 1) / B^2 * (1 + z^2 (kurtosis - 1) / 4)): the delta-method standard deviation
    of ``(x - mu_B) / sigma_B`` for an example at z population standard deviations, whose
    B - 1 batch mates are drawn at random."""
    z, b = np.asarray(z, dtype=np.float64), np.asarray(batch_size, dtype=np.float64)
    return np.sqrt((b - 1) / b**2 * (1 + z**2 * (kurtosis - 1) / 4))


def _noise_variant(*, mates=lambda b: b - 1, var_term=lambda z, k: z**2 * (k - 1) / 4,
                   root=True):
    def fn(z, batch_size, kurtosis=3.0):
        z, b = np.asarray(z, dtype=np.float64), np.asarray(batch_size, dtype=np.float64)
        v = np.broadcast_to(mates(b) / b**2 * (1 + var_term(z, kurtosis)), np.broadcast(z, b).shape)
        return np.sqrt(v) if root else v
    return fn


_NOISE_MISTAKES = (
    Mistake("no_sqrt", "You return the variance of the normalized output, not its standard "
                       "deviation.",
            "Take the square root of the whole expression at the end.",
            _noise_variant(root=False)),
    Mistake("n_not_n_minus_1",
            "You use 1/B for the variance of the batch mean, as if all B values were random. "
            "The example itself is fixed; only its B - 1 batch mates are random, so the "
            "fluctuating part of the mean is (sum of B - 1 values) / B, with variance "
            "(B - 1) / B^2 (the two differ most for small batches: at B = 2, 1/4 vs 1/2).",
            "Use (B - 1) / B**2 in place of 1 / B.",
            _noise_variant(mates=lambda b: b)),
    Mistake("std_of_a_mean",
            "You return 1 / sqrt(B), the textbook standard deviation of a mean of B random "
            "values: it counts the example as random and leaves out the noise of the batch "
            "variance.",
            "Use (B - 1) / B**2 for the mean and add the variance term z**2 (kurtosis - 1) / 4.",
            _noise_variant(mates=lambda b: b, var_term=lambda z, k: 0)),
    Mistake("mean_noise_only",
            "You keep only the noise of the batch mean. The batch variance is noisy too, and "
            "its noise moves an example in proportion to how far it is from the mean (z).",
            "Multiply by (1 + z**2 * (kurtosis - 1) / 4).",
            _noise_variant(var_term=lambda z, k: 0)),
    Mistake("half_not_quarter",
            "The variance term has (kurtosis - 1) / 2: you took the derivative of 1/sqrt(v), "
            "-1/2, but did not square it. A variance picks up the square of the derivative, "
            "1/4.",
            "Use z**2 * (kurtosis - 1) / 4.",
            _noise_variant(var_term=lambda z, k: z**2 * (k - 1) / 2)),
    Mistake("kurtosis_not_minus_1",
            "You use the kurtosis itself for the variance of the squared deviations. "
            "Var[(x - mu)^2] = E[(x - mu)^4] - sigma^4 = (kurtosis - 1) sigma^4.",
            "Use (kurtosis - 1), which is 2 for a Gaussian.",
            _noise_variant(var_term=lambda z, k: z**2 * k / 4)),
    Mistake("z_not_squared",
            "The variance term uses z, not z**2, so an example below the mean (z < 0) gets "
            "less noise than the mean itself. The noise of the scale moves x_hat by -z/2 times "
            "the relative change of the variance; its variance has z**2.",
            "Use z**2.",
            _noise_variant(var_term=lambda z, k: z * (k - 1) / 4)),
    Mistake("gaussian_only",
            "You hard-code a Gaussian (kurtosis - 1 = 2) and ignore the `kurtosis` argument: "
            "real features are often heavier- or lighter-tailed.",
            "Use the `kurtosis` argument: z**2 * (kurtosis - 1) / 4.",
            _noise_variant(var_term=lambda z, k: z**2 / 2)),
)

_NOISE_HINTS = (
    Hint("gaussian", "your function is right for kurtosis 3 (a Gaussian) but not for other "
                     "kurtoses: is the `kurtosis` argument used?"),
)


def _noise_cases() -> list[Case]:
    return [
        Case("z = [0, 0.5, -1.5, 2.5], batch_size = 16, kurtosis = 3",
             (np.array([0.0, 0.5, -1.5, 2.5]), 16, 3.0), tags=frozenset({"gaussian"})),
        Case("z = 1.5, batch_size = [2, 4, 8, 64, 256], kurtosis = 3",
             (1.5, np.array([2, 4, 8, 64, 256]), 3.0), tags=frozenset({"gaussian"})),
        Case("z = [-1, 0.3, 2], batch_size = 32, kurtosis = 6",
             (np.array([-1.0, 0.3, 2.0]), 32, 6.0)),
        Case("z = [1.2, -0.7], batch_size = 10, kurtosis = 1.8",
             (np.array([1.2, -0.7]), 10, 1.8)),
    ]


def check_bn_output_std(fn: Callable[..., Any]) -> None:
    """Check ``fn(z, batch_size, kurtosis=3.0)``: the standard deviation, over random batch
    mates, of the normalized output of one example that lies ``z`` population standard
    deviations from the mean, for a feature with the given kurtosis (delta method,
    ``sqrt((B - 1) / B**2 * (1 + z**2 * (kurtosis - 1) / 4))``). ``z`` and ``batch_size`` may be
    arrays that broadcast.

    On success prints one deterministic line.

    Raises:
        ExerciseError: naming the mistake (variance instead of standard deviation, 1/B instead
            of (B - 1)/B^2, a missing variance term, 1/2 instead of 1/4, ...).
    """
    def per_input(z, batch_size, kurtosis=3.0):
        # a formula that leaves z out returns one value for all z: spread it over the inputs
        out = fn(z, batch_size, kurtosis)
        try:
            shape = np.broadcast(np.asarray(z), np.asarray(batch_size)).shape
            return np.broadcast_to(np.asarray(out, dtype=np.float64), shape)
        except (TypeError, ValueError):
            return out

    per_input.__name__ = _fn_name(fn)
    check_function(
        per_input, _bn_output_std_reference, _noise_cases(), _NOISE_MISTAKES, _NOISE_HINTS,
        name="check_bn_output_std", outputs=("std",),
        advice="write it as sqrt(var_mean + var_scale): the batch mean's noise (B - 1) / B**2 "
               "plus z**2 / 4 times the noise of the batch variance, (B - 1) / B**2 * "
               "(kurtosis - 1).",
    )


__all__ += ["check_bn_output_std"]


# --------------------------------------------------------------------------------------------
# Notebook 05: batch renormalization's r and d
# --------------------------------------------------------------------------------------------


def _renorm_reference(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5):
    batch_std, running_std = np.sqrt(batch_var + eps), np.sqrt(running_var + eps)
    r = np.clip(batch_std / running_std, 1.0 / r_max, r_max)
    d = np.clip((batch_mean - running_mean) / running_std, -d_max, d_max)
    return r, d


def _renorm_variant(r_fn, d_fn):
    """The reference with r and/or d computed by the given (buggy) formulas."""
    def variant(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5):
        r, d = _renorm_reference(batch_mean, batch_var, running_mean, running_var, r_max, d_max,
                                 eps)
        args = (batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps)
        return (r if r_fn is None else r_fn(*args)), (d if d_fn is None else d_fn(*args))
    return variant


def _sd(var, eps):
    return np.sqrt(var + eps)


_RENORM_MISTAKES = (
    Mistake("no_clip",
            "r and d are not clipped: without the limits, renormalization in training uses the "
            "running statistics outright, and a single odd batch (or the first steps, when the "
            "running statistics are still 0 and 1) can scale activations by any factor.",
            "Clip r to [1/r_max, r_max] and d to [-d_max, d_max] (np.clip).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e: _sd(v, e) / _sd(rv, e),
                            lambda m, v, rm, rv, rx, dx, e: (m - rm) / _sd(rv, e))),
    Mistake("r_inverted",
            "r is upside down: you divide the running standard deviation by the batch's. r "
            "must turn the batch-normalized value into the running-normalized one, "
            "(x - mu_B)/sigma_B * r = (x - mu_B)/sigma, so r = sigma_B / sigma.",
            "r = np.sqrt(batch_var + eps) / np.sqrt(running_var + eps), then clip.",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.clip(_sd(rv, e) / _sd(v, e), 1 / rx, rx), None)),
    Mistake("r_from_variances",
            "r is a ratio of variances, not of standard deviations (a square root is missing).",
            "Take the square roots: r = sqrt(batch_var + eps) / sqrt(running_var + eps).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.clip((v + e) / (rv + e), 1 / rx, rx), None)),
    Mistake("r_lower_limit",
            "r is only clipped from above: its lower limit is 1/r_max, not 0 (or none), so a "
            "batch with a much smaller spread than the running one slips through.",
            "Clip on both sides: np.clip(r, 1 / r_max, r_max).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.minimum(_sd(v, e) / _sd(rv, e), rx), None)),
    Mistake("d_batch_std",
            "d is divided by the batch standard deviation; it is measured in units of the "
            "running one: d = (mu_B - mu) / sigma.",
            "Divide by np.sqrt(running_var + eps).",
            _renorm_variant(None, lambda m, v, rm, rv, rx, dx, e:
                            np.clip((m - rm) / _sd(v, e), -dx, dx))),
    Mistake("d_sign",
            "d has the wrong sign: it is (batch mean - running mean) / sigma, so that "
            "x_hat * r + d equals (x - running_mean) / sigma.",
            "d = (batch_mean - running_mean) / np.sqrt(running_var + eps).",
            _renorm_variant(None, lambda m, v, rm, rv, rx, dx, e:
                            np.clip((rm - m) / _sd(rv, e), -dx, dx))),
    Mistake("d_one_sided",
            "d is only clipped from above: negative shifts must be limited too, to -d_max.",
            "Clip on both sides: np.clip(d, -d_max, d_max).",
            _renorm_variant(None, lambda m, v, rm, rv, rx, dx, e:
                            np.minimum((m - rm) / _sd(rv, e), dx))),
    Mistake("no_eps",
            "eps is missing from the standard deviations: BN divides by sqrt(var + eps), and so "
            "must r and d, or a channel with a tiny variance gets a different r and d.",
            "Use np.sqrt(batch_var + eps) and np.sqrt(running_var + eps).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.clip(np.sqrt(v) / np.sqrt(rv), 1 / rx, rx),
                            lambda m, v, rm, rv, rx, dx, e:
                            np.clip((m - rm) / np.sqrt(rv), -dx, dx))),
)

_RENORM_TINY = "the channel with a tiny variance (~1e-4), where eps matters"


def _renorm_cases() -> list[Case]:
    # channels: r below 1/r_max, r inside, r above r_max, d below -d_max, d inside, tiny variance
    running_mean = np.array([0.5, -1.0, 2.0, 1.0, 0.0, 0.3])
    running_var = np.array([4.0, 1.0, 0.25, 1.0, 2.0, 2e-4])
    batch_mean = np.array([0.6, -0.2, 2.5, -9.0, 9.0, 0.301])
    batch_var = np.array([0.01, 1.7, 9.0, 1.2, 0.5, 1e-4])
    cases = []
    for r_max, d_max, eps in [(3.0, 5.0, 1e-5), (1.5, 0.5, 1e-3), (1.0, 0.0, 1e-5)]:
        cases.append(Case(
            f"r_max={r_max:g}, d_max={d_max:g}, eps={eps:g}",
            (batch_mean, batch_var, running_mean, running_var, r_max, d_max),
            kwargs={"eps": eps}, channel_notes={5: _RENORM_TINY}))
    return cases


def check_renorm_rd(fn: Callable[..., Any]) -> None:
    """Check ``fn(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5)
    -> (r, d)``, batch renormalization's correction (Ioffe 2017), on (C,) float64 arrays.

    ``batch_var`` is the biased batch variance, ``running_var`` the running one;
    ``r = clip(sqrt(batch_var + eps) / sqrt(running_var + eps), 1/r_max, r_max)`` and
    ``d = clip((batch_mean - running_mean) / sqrt(running_var + eps), -d_max, d_max)``.
    Three cases: the paper's limits (3, 5), tight ones (1.5, 0.5), and (1, 0), where r = 1 and
    d = 0 (plain BN). On success prints one deterministic line.

    Raises:
        ExerciseError: with a diagnosis in plain words when ``fn`` is wrong.
    """
    check_function(
        fn, _renorm_reference, _renorm_cases(), _RENORM_MISTAKES,
        name="check_renorm_rd", outputs=("r", "d"),
        advice="compute sigma_B = sqrt(batch_var + eps) and sigma = sqrt(running_var + eps) "
               "first; r = sigma_B / sigma, d = (batch_mean - running_mean) / sigma; then clip "
               "both, on both sides.",
    )


# --------------------------------------------------------------------------------------------
# Notebook 06: folding an eval-mode BN into the Linear layer before it
# --------------------------------------------------------------------------------------------


def _fold_reference(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """W' = s W (row c scaled by s_c), b' = s (b - running_mean) + beta,
    s = gamma / sqrt(running_var + eps)."""
    s = gamma / np.sqrt(running_var + eps)
    return weight * s[:, None], s * (bias - running_mean) + beta


def _fold_variant(*, scale=None, rows=True, bias_fn=None):
    """The reference with one bug: ``scale(gamma, var, eps) -> s``, ``rows=False`` scales the
    columns (input features), ``bias_fn(s, b, beta, mean) -> b'``."""
    def fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        s = (gamma / np.sqrt(running_var + eps) if scale is None
             else scale(gamma, running_var, eps))
        w = weight * s[:, None] if rows else weight * s[None, :]
        b = s * (bias - running_mean) + beta if bias_fn is None else bias_fn(s, bias, beta,
                                                                            running_mean)
        return w, b
    return fn


_FOLD_MISTAKES = (
    Mistake("forgot_eps",
            "The scale is gamma / sqrt(running_var): eps is missing. Eval-mode BN divides by "
            "sqrt(running_var + eps), and for a channel with a small running variance the "
            "difference is large.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: g / np.sqrt(v))),
    Mistake("std_not_inverse",
            "The scale multiplies by the standard deviation, gamma * sqrt(running_var + eps); "
            "BN divides by it.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: g * np.sqrt(v + e))),
    Mistake("variance_not_std",
            "The scale divides by the variance, gamma / (running_var + eps): the square root is "
            "missing.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: g / (v + e))),
    Mistake("forgot_gamma",
            "The scale is 1 / sqrt(running_var + eps): gamma is missing.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: 1.0 / np.sqrt(v + e))),
    Mistake("scaled_input_features",
            "The weight's columns (input features) are scaled: W * s[None, :]. BN acts on the "
            "layer's outputs, so row c of W (output feature c) gets s_c. (Every case has a square "
            "W, so both broadcast; with a non-square W this bug raises a shape error instead.)",
            "W_folded = weight * s[:, None] (for a Conv weight: s.reshape(-1, 1, 1)).",
            _fold_variant(rows=False)),
    Mistake("forgot_running_mean",
            "The bias leaves out the running mean: s * b + beta. BN subtracts running_mean "
            "before scaling.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: s * b + beta)),
    Mistake("ignored_layer_bias",
            "The bias ignores the Linear layer's own bias: beta - s * running_mean. In eval "
            "mode the bias is not cancelled (the running mean is fixed), so it must be folded "
            "in too.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: beta - s * m)),
    Mistake("unscaled_layer_bias",
            "The layer's own bias is added unscaled: b + beta - s * running_mean. It passes "
            "through BN's scale like the rest of the layer's output.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: b + beta - s * m)),
    Mistake("mean_sign",
            "The running mean is added, s * (bias + running_mean) + beta; BN subtracts it.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: s * (b + m) + beta)),
    Mistake("forgot_beta",
            "The bias leaves out beta: s * (bias - running_mean).",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: s * (b - m))),
)


def _fold_cases() -> list[Case]:
    """Square weights (so a row/column mix-up broadcasts and can be named); running means far
    from 0, gamma and beta far from 1 and 0, non-zero layer biases; channel C // 2 has a tiny
    running variance (~1e-4), where eps changes the scale by ~5%."""
    rng = np.random.default_rng(SEED + 6)
    cases = []
    for c, eps in [(4, 1e-5), (6, 1e-3), (5, 1e-5)]:
        var = rng.uniform(0.5, 4.0, c)
        var[c // 2] = 1e-4
        args = (rng.normal(size=(c, c)), rng.uniform(-2, 2, c), rng.uniform(1.5, 3.0, c),
                rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.0, c), rng.uniform(-3, 3, c), var)
        cases.append(Case(f"\"Linear({c}, {c}) + BatchNorm1d({c}), eps={eps:g}\"", args,
                          {"eps": eps}, channel_notes={c // 2: _TINY}))
    return cases


def check_fold_linear_bn(fn: Callable[..., Any]) -> None:
    """Check ``fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5)``: the weight
    (C_out, C_in) and bias (C_out,) of one Linear layer with an eval-mode BN folded into it::

        s = gamma / sqrt(running_var + eps)
        W_folded = s[:, None] * weight          # row c (output feature c) scaled by s_c
        b_folded = s * (bias - running_mean) + beta

    ``fn`` must return ``(W_folded, b_folded)`` as numpy arrays and leave its inputs unchanged.
    Three float64 cases with square weights and a channel of tiny running variance.

    Raises:
        ExerciseError: naming the mistake (eps forgotten, std instead of 1/std, the running
            mean or the layer's bias left out of the bias, columns scaled instead of rows, ...).
    """
    check_function(
        fn, _fold_reference, _fold_cases(), _FOLD_MISTAKES,
        name="check_fold_linear_bn", outputs=("W_folded", "b_folded"),
        advice="write eval-mode BN of z = W x + b as s * (z - running_mean) + beta with "
               "s = gamma / sqrt(running_var + eps), then expand: the x-term is the new weight, "
               "the rest the new bias.",
    )


__all__ += ["check_fold_linear_bn"]



# --------------------------------------------------------------------------------------------
# Notebook 07: the interval behind every verdict
# --------------------------------------------------------------------------------------------


def _paired_interval_reference(a, b, confidence=0.95):
    """The mean of the paired differences d = a - b and its two-sided t interval:
    mean(d) -+ t_{(1 + confidence) / 2, n - 1} * std(d, ddof=1) / sqrt(n)."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = d.size
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return d.mean(), d.mean() - half, d.mean() + half


def _interval_variant(*, diff=None, sd=None, quantile=None, scale=None):
    from scipy import stats

    def fn(a, b, confidence=0.95):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        d = a - b if diff is None else diff(a, b)
        n = d.size
        q = stats.t.ppf(0.5 + confidence / 2, n - 1) if quantile is None else quantile(
            confidence, n)
        spread = d.std(ddof=1) if sd is None else sd(a, b, d)
        half = q * spread / (np.sqrt(n) if scale is None else scale(n))
        return d.mean(), d.mean() - half, d.mean() + half
    return fn


def _unpaired_sd(a, b, d):
    # the standard error of a difference of two independent means, times sqrt(n)
    return np.sqrt(np.var(a, ddof=1) + np.var(b, ddof=1))


def _interval_mistakes() -> tuple[Mistake, ...]:
    from scipy import stats

    return (
        Mistake("normal_quantile",
                "Your interval uses the normal quantile (1.96 for 95%) instead of Student's t "
                "with n - 1 degrees of freedom. With 5 seeds the t quantile is 2.78: your "
                "interval is a third too narrow and calls noise an effect.",
                "q = scipy.stats.t.ppf((1 + confidence) / 2, df=n - 1).",
                _interval_variant(quantile=lambda c, n: stats.norm.ppf(0.5 + c / 2))),
        Mistake("df_n",
                "Your t quantile uses n degrees of freedom; the mean of n differences estimated "
                "with its own standard deviation has n - 1.",
                "q = scipy.stats.t.ppf((1 + confidence) / 2, df=n - 1).",
                _interval_variant(quantile=lambda c, n: stats.t.ppf(0.5 + c / 2, n))),
        Mistake("one_sided",
                "Your quantile is t.ppf(confidence): that bounds one side at 95% and leaves "
                "5% on each side in all, a 90% two-sided interval.",
                "q = scipy.stats.t.ppf((1 + confidence) / 2, df=n - 1).",
                _interval_variant(quantile=lambda c, n: stats.t.ppf(c, n - 1))),
        Mistake("population_sd",
                "Your standard deviation divides by n (np.std's default, ddof=0): with 5 seeds "
                "it is too small by a factor sqrt(4/5).",
                "sd = np.std(d, ddof=1).",
                _interval_variant(sd=lambda a, b, d: d.std(ddof=0))),
        Mistake("sd_not_se",
                "Your half-width is q * sd: the spread of one seed's difference, not the "
                "standard error of their mean, sd / sqrt(n).",
                "half = q * np.std(d, ddof=1) / np.sqrt(n).",
                _interval_variant(scale=lambda n: 1.0)),
        Mistake("unpaired",
                "You treat a and b as independent samples (standard error sqrt(var(a)/n + "
                "var(b)/n)). Both arms ran on the same seeds, so the seed's luck cancels in "
                "d = a - b: use the paired differences.",
                "d = a - b; se = np.std(d, ddof=1) / np.sqrt(n).",
                _interval_variant(sd=_unpaired_sd)),
        Mistake("reversed",
                "Your differences are b - a: the interval has the wrong sign.",
                "d = np.asarray(a) - np.asarray(b) (a first).",
                _interval_variant(diff=lambda a, b: b - a)),
    )


def _interval_cases() -> list[Case]:
    """Per-seed accuracies of two arms on the same seeds: strongly paired (the seed's luck is
    shared, so pairing narrows the interval), 3 and 5 seeds, and a 90% interval."""
    arr = np.array
    return [
        Case("a = [0.52, 0.61, 0.47, 0.58, 0.55], b = [0.50, 0.57, 0.46, 0.55, 0.51]",
             (arr([0.52, 0.61, 0.47, 0.58, 0.55]), arr([0.50, 0.57, 0.46, 0.55, 0.51]))),
        Case("a = [0.30, 0.36, 0.41], b = [0.33, 0.37, 0.45]",
             (arr([0.30, 0.36, 0.41]), arr([0.33, 0.37, 0.45]))),
        Case("a = [0.70, 0.64, 0.69, 0.73, 0.66], b = [0.69, 0.66, 0.66, 0.70, 0.66], "
             "confidence = 0.9",
             (arr([0.70, 0.64, 0.69, 0.73, 0.66]), arr([0.69, 0.66, 0.66, 0.70, 0.66])),
             {"confidence": 0.9}),
    ]


def check_paired_interval(fn: Callable[..., Any]) -> None:
    """Check ``fn(a, b, confidence=0.95)``: the mean of the paired differences ``d = a - b``
    (per-seed results of two arms on the same seeds) and its two-sided t interval::

        mean +- t_{(1 + confidence) / 2, n - 1} * std(d, ddof=1) / sqrt(n)

    the interval :func:`bncourse.verdict.estimate` puts on every effect. ``fn`` returns
    ``(mean, low, high)``.

    Raises:
        ExerciseError: naming the mistake (a normal quantile, n degrees of freedom, a one-sided
            quantile, ddof=0, the standard deviation instead of the standard error, unpaired
            samples, reversed differences).
    """
    check_function(
        fn, _paired_interval_reference, _interval_cases(), _interval_mistakes(),
        name="check_paired_interval", outputs=("mean", "low", "high"),
        advice="take d = a - b, its mean, its sample standard deviation (ddof=1) over sqrt(n), "
               "and Student's t quantile at (1 + confidence) / 2 with n - 1 degrees of freedom.",
    )


__all__ += ["check_paired_interval"]

"""The checkers' engine: :func:`check_function` and the message it builds from cases and mistakes.

Every checker of :mod:`bncourse.checks` is :func:`check_function` plus its inputs: a reference,
a few :class:`Case` s, and optionally a catalogue of :class:`Mistake` s and a few :class:`Hint` s.
The private helpers below call the learner's function safely, compare its outputs with the
reference's, match wrong outputs against the catalogue and word the diagnosis.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ATOL", "RTOL", "SEED", "Case", "ExerciseError", "Hint", "Mistake", "check_function",
           "skip", "with_solution"]

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

    def _render_traceback_(self) -> list[str]:
        """How IPython shows it: the diagnosis alone, no traceback into the package (the
        exception still fails the cell, so nbval and nbgrader see it)."""
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


def with_solution(solution: Callable[..., Any]):
    """Decorator: attaches the exercise's reference solution to its checker, for :func:`skip`.

    ``solution`` has the signature and return values the exercise asks the learner for."""
    def attach(checker):
        checker.solution = solution
        return checker
    return attach


def skip(checker: Callable[..., Any]) -> Any:
    """The reference solution of ``checker``'s exercise, for a learner who is stuck.

    The notebooks offer one visible line per exercise, ``bn_forward = skip(check_forward)``, so
    that the rest of the notebook runs. The checker above it has failed, so a skipped exercise
    scores no points when graded.

    Raises:
        ValueError: ``checker`` has no solution attached (see :func:`with_solution`).
    """
    solution = getattr(checker, "solution", None)
    if solution is None:
        raise ValueError(f"expected a checker with a reference solution "
                         f"(got {getattr(checker, '__name__', checker)!r})")
    name = getattr(checker, "__name__", "this exercise")
    print(f"{name}: skipped; the notebook continues with the course's solution "
          f"(no points for this exercise when graded).")
    return solution


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
        matched = "the case matches" if len(cases) == 1 else f"all {len(cases)} cases match"
        print(f"{name}: {matched} the reference.")
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

"""Stored results as notebooks show them: rounded, deterministic text (so strict nbval checks it)
and Markdown built from the numbers (so prose never types a measured figure).

Examples::

    >>> fmt_ci({"mean": 0.6871, "ci95": [0.6632, 0.7109]})
    '0.687 [0.663, 0.711]'
"""

from __future__ import annotations

from bncourse.experiments.claims import Claim, claims
from bncourse.experiments.results import Result
from bncourse.verdict import Verdict

__all__ = ["fmt_ci", "protocol", "show_protocol", "show_verdict", "power_note", "verdict_rows",
           "verdict_markdown", "say"]

_PREDICTS = {"greater": "a positive effect", "less": "a negative effect",
             "equivalent": "no effect beyond the margin"}


def fmt_ci(summary: dict, digits: int = 3) -> str:
    """``'mean [low, high]'`` of a summary entry ``{"mean", "ci95"}``."""
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def protocol(result: Result, arms: list[str] | None = None, digits: int = 3) -> list[str]:
    """One line per trained arm: tuned learning rate, test accuracy with its 95% interval over
    the evaluation seeds, and whether the run converged."""
    lines = []
    for arm in arms or result.arms:
        s = result.summary(arm)
        if "test_acc" not in s:
            continue
        conv = s["convergence"]
        lines.append(
            f"{arm:<16} lr {result.chosen_lr(arm):<6g} test acc {fmt_ci(s['test_acc'], digits)}"
            f"  train acc {s['train_acc']['mean']:.{digits}f}"
            f"  converged {'yes' if conv['converged'] else 'NO'}"
            f" (trend over the last {conv['window_epochs']} epochs {conv['drift']:+.3f})")
    return lines


def show_protocol(result: Result, arms: list[str] | None = None) -> None:
    """Prints what the stored result is: seeds, budget, and :func:`protocol`'s lines."""
    cfg = result.data["config"]
    print(f"{result.name}: {result.data['title']}; {len(cfg['seeds'])} seeds "
          f"{cfg['seeds']}, learning rates tuned on seeds {cfg['tuning_seeds']}")
    for line in protocol(result, arms):
        print("  " + line)


def show_verdict(claim_id: str, digits: int = 3) -> Verdict:
    """Prints the claim, what its effect measures, each setting's estimate with its 95%
    interval and class, and the outcome; returns the :class:`~bncourse.verdict.Verdict`."""
    claim: Claim = claims()[claim_id]
    verdict = claim.verdict()
    print(f"Claim: {claim.text}.")
    print(f"Effect: {claim.effect}; margin {claim.margin:.3g}; the claim predicts "
          f"{_PREDICTS[claim.expect]}.")
    for name, e in verdict.effects.items():
        label = verdict.settings[name]
        if label == "equivalent" and e.direction != 0:
            label += " (non-zero, but inside the margin)"
        print(f"  {name:<40} {e.format(digits)}  n={e.n}  {label}")
    line = f"Verdict: {verdict.outcome}"
    if verdict.outcome == "inconclusive":
        line += f" (the design could detect effects of {verdict.mde:.{digits}f} or more)"
    print(line)
    return verdict


def power_note(verdict: Verdict, digits: int = 3) -> str:
    """A sentence for each setting that decided nothing (``null``): the smallest effect its
    design could have detected, and how large an effect its interval still allows. Empty when
    every setting is decided."""
    notes = []
    for name, e in verdict.effects.items():
        if verdict.settings[name] == "null":
            reach = max(abs(e.ci_low), abs(e.ci_high))
            notes.append(f"{name}: no decision; the design detects effects of "
                         f"{e.mde:.{digits}f} or more (80% power), and the interval still allows "
                         f"{reach:.{digits}f}.")
    return " ".join(notes)


def verdict_rows(ids: list[str] | None = None, digits: int = 3) -> list[tuple[str, str, str, str]]:
    """``(claim, verdict, effects, notebooks)`` rows for the claims ``ids`` (default: all)."""
    table = claims()
    rows = []
    for cid in ids or list(table):
        c = table[cid]
        v = c.verdict()
        effects = "; ".join(f"{n} {e.format(digits)}" for n, e in v.effects.items())
        rows.append((c.text, v.outcome, effects, ", ".join(f"{n:02d}" for n in c.notebooks)))
    return rows


def verdict_markdown(ids: list[str] | None = None, digits: int = 3):
    """The verdict table as ``IPython.display.Markdown`` (every number computed from the stored
    results)."""
    from IPython.display import Markdown

    out = ["| claim | verdict | effect, mean [95% interval] per setting | notebook |",
           "|---|---|---|---|"]
    for claim, outcome, effects, nbs in verdict_rows(ids, digits):
        cells = [x.replace("|", "\\|") for x in (claim, f"**{outcome}**", effects, nbs)]
        out.append("| " + " | ".join(cells) + " |")
    return Markdown("\n".join(out))


def say(text: str) -> None:
    """Displays ``text`` as Markdown: prose whose figures are formatted from results."""
    from IPython.display import Markdown, display

    display(Markdown(text))

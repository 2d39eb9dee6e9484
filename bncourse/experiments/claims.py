"""The claim table: each popular claim about BN, the effect that tests it, and its verdict.

Every claim names the stored results it reads, turns them into per-seed effect samples for one
or more settings (paired by seed: both arms ran on seeds 0-4), and says what it predicts
(``expect``) and the margin below which an effect counts as none. :func:`bncourse.verdict.decide`
does the rest; nothing here is typed by hand but the claims' wording and the margins, which were
fixed before the full runs.

Margins: 2 points of accuracy (a difference a practitioner would act on; seed-to-seed standard
deviations here are about 1 point); 10% for ratios of steps or time (log2 units: 0.14); half a
grid step (0.25 decades) for learning-rate ranges; 1% of a running standard deviation for a
running mean that should not move.

Examples::

    >>> c = claims()["final_accuracy"]
    >>> c.expect, c.margin
    ('greater', 0.02)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bncourse.experiments.results import Result, load_bench, load_result
from bncourse.verdict import Verdict, decide

__all__ = ["Claim", "claims", "steps_to_target", "usable_lrs", "ACC_MARGIN", "RATIO_MARGIN",
           "TARGET_FRACTION", "USABLE_FRACTION"]

ACC_MARGIN = 0.02                   # accuracy (fraction): two points
RATIO_MARGIN = math.log2(1.1)       # a ratio of steps or seconds within 10% is no effect
DECADE_MARGIN = 0.25                # half a step of the learning-rate grid, in decades
DRIFT_MARGIN = 0.01                 # a running mean that moves by 1% of its std has not moved
#: Memory-bound: within 1.5x of the time the bytes need (issue 19's goal for a fused kernel).
MEMORY_MARGIN = math.log2(1.5)
#: Speed target: this fraction of the weaker arm's seed-mean final validation accuracy.
TARGET_FRACTION = 0.9
#: A learning rate is usable for a seed if its final validation accuracy reaches this fraction of
#: the arm's best seed-mean accuracy over the grid.
USABLE_FRACTION = 0.9

Loader = Callable[[str], Result]


def steps_to_target(result: Result, arm: str, target: float) -> np.ndarray:
    """Per seed, the optimizer steps until the validation accuracy first reaches ``target``
    (checked after every epoch). A run that never reaches it counts at its full budget, which
    can only flatter the slower arm."""
    out = []
    for run in result.runs(arm):
        curve = np.asarray(run["val_acc_curve"])
        hit = np.flatnonzero(curve >= target)
        epochs = hit[0] + 1 if hit.size else len(curve)
        out.append(epochs * run["steps_per_epoch"])
    return np.asarray(out, dtype=np.float64)


def _speedup(result: Result, slow: str = "none", fast: str = "batch") -> np.ndarray:
    """log2(steps of ``slow`` / steps of ``fast``) to a target both arms reach."""
    final = min(result.values(a, "val_acc").mean() for a in (slow, fast))
    target = TARGET_FRACTION * final
    return np.log2(steps_to_target(result, slow, target) / steps_to_target(result, fast, target))


def usable_lrs(result: Result, arm: str) -> tuple[np.ndarray, list[list[float]]]:
    """For a learning-rate sweep: the grid, and per seed the rates whose final validation
    accuracy reaches ``USABLE_FRACTION`` of the arm's best seed-mean accuracy."""
    grid = np.asarray(result.arm(arm)["lr_grid"])
    acc = np.array([result.values(arm, "val_acc", lr=lr) for lr in grid])      # (lrs, seeds)
    threshold = USABLE_FRACTION * acc.mean(1).max()
    return grid, [list(grid[acc[:, s] >= threshold]) for s in range(acc.shape[1])]


def _diff(result: Result, a: str, b: str, key: str = "test_acc") -> np.ndarray:
    return result.values(a, key) - result.values(b, key)


def _gap(result: Result, arm: str) -> np.ndarray:
    return result.values(arm, "train_acc") - result.values(arm, "test_acc")


def _log_nsr(result: Result, arm: str) -> np.ndarray:
    """Per seed, the mean over checkpoints of log10(gradient noise-to-signal ratio)."""
    return np.array([np.mean(np.log10(r["grad_noise"]["nsr"])) for r in result.runs(arm)])


# ----------------------------------------------------------------------------- effects


def _normalizes(load: Loader) -> dict:
    out = {}
    for exp, label in (("mlp_bn", "MLP"), ("cnn_bn", "CNN")):
        r = load(exp)
        out[f"{label}, training mode"] = r.values("batch", "bn_output.train_deviation")
        out[f"{label}, eval mode"] = r.values("batch", "bn_output.eval_deviation")
    return out


def _ics_cause(load: Loader) -> dict:
    r = load("ics")
    return {"sigmoid MLP: noisy BN - no BN": _diff(r, "noisy", "none")}


def _speeds_up(load: Loader) -> dict:
    return {"MLP": _speedup(load("mlp_bn")), "CNN": _speedup(load("cnn_bn")),
            "sigmoid MLP": _speedup(load("ics"))}


def _usable_edge(load: Loader, edge: str) -> dict:
    r = load("lr_sweep")
    out = {}
    for model in ("mlp", "cnn"):
        per_arm = {}
        for norm in ("none", "batch"):
            _, usable = usable_lrs(r, f"{model}_{norm}")
            if edge == "largest":
                per_arm[norm] = np.array([math.log10(max(u)) for u in usable])
            else:   # width of the usable range in decades
                per_arm[norm] = np.array([math.log10(max(u) / min(u)) for u in usable])
        out[model.upper()] = per_arm["batch"] - per_arm["none"]
    return out


def _init_insensitive(load: Loader) -> dict:
    r = load("init_scale")
    stds = ("std1e-3", "std1e-2", "std1e-1", "std1")
    spread = {n: np.ptp([r.values(f"{n}_{s}", "test_acc") for s in stds], axis=0)
              for n in ("none", "batch")}
    return {"MLP, init std 1e-3 to 1": spread["none"] - spread["batch"]}


def _gradient_flow(load: Loader) -> dict:
    r = load("deep_mlp")
    dist = {a: np.abs(r.values(f"{a}_at_init", "log10_first_over_last")) for a in ("none", "batch")}
    return {"16-layer MLP at initialization": dist["none"] - dist["batch"]}


def _grad_variance(load: Loader) -> dict:
    return {"ReLU MLP": _log_nsr(load("mlp_bn"), "batch") - _log_nsr(load("mlp_bn"), "none"),
            "sigmoid MLP": _log_nsr(load("ics"), "batch") - _log_nsr(load("ics"), "none"),
            "CNN": _log_nsr(load("cnn_bn"), "batch") - _log_nsr(load("cnn_bn"), "none")}


def _regularizer(load: Loader) -> dict:
    r = load("regularization")
    return {"500 examples: BN - no BN": _diff(r, "batch", "none")}


def _noise_regularizes(load: Loader) -> dict:
    r = load("regularization")
    return {"BN - BN with less noise (population)": _diff(r, "batch", "population"),
            "more noise (ghost 10) - BN": _diff(r, "ghost10", "batch"),
            "more noise (ghost 5) - BN": _diff(r, "ghost5", "batch")}


def _causes_overfitting(load: Loader) -> dict:
    out = {}
    for exp, label in (("regularization", "500 examples"), ("mlp_bn", "MLP"), ("cnn_bn", "CNN")):
        r = load(exp)
        out[label] = _gap(r, "batch") - _gap(r, "none")
    return out


def _gamma_strength(load: Loader) -> dict:
    r = load("regularization")
    return {"gap, gamma init 0.2 - init 5": _gap(r, "gamma0.2") - _gap(r, "gamma5"),
            "test accuracy, gamma init 5 - init 0.2": _diff(r, "gamma5", "gamma0.2")}


def _combine(load: Loader) -> dict:
    r = load("regularization")
    return {"test accuracy": _diff(r, "batch_dropout_wd", "batch"),
            "gap reduction": _gap(r, "batch") - _gap(r, "batch_dropout_wd")}


def _placement(load: Loader) -> dict:
    r = load("placement")
    return {"MLP": _diff(r, "mlp_before", "mlp_after"), "CNN": _diff(r, "cnn_before", "cnn_after")}


def _xavier_he(load: Loader) -> dict:
    r = load("init_scale")
    return {"He - N(0, 0.01^2)": _diff(r, "batch_he", "batch_std1e-2"),
            "Xavier - N(0, 0.01^2)": _diff(r, "batch_xavier", "batch_std1e-2"),
            "He - PyTorch default": _diff(r, "batch_he", "batch_default")}


def _small_batch_noisy(load: Loader) -> dict:
    r = load("batch_stats")
    sizes = r.runs("mlp")[0]["batch_sizes"]
    i2, i32 = sizes.index(2), sizes.index(32)
    return {f"{k.split('_')[0]} error, batch 2 / batch 32 (log2)":
            np.log2(np.array([run[k][i2] / run[k][i32] for run in r.runs("mlp")]))
            for k in ("mean_error", "std_error")}


def _small_batch_hurts(load: Loader) -> dict:
    r, c = load("batch_size"), load("cnn_batch_size")
    return {"MLP: BN at batch 32 - batch 2": _diff(r, "batch_b32", "batch_b2"),
            "MLP: no norm - BN, both at batch 2": _diff(r, "none_b2", "batch_b2"),
            "CNN: BN at batch 32 - batch 2": _diff(c, "batch_b32", "batch_b2")}


def _large_batch_slower(load: Loader) -> dict:
    r = load("batch_size")
    return {f"{n}: batch 32 - batch 128": _diff(r, f"{n}_b32", f"{n}_b128")
            for n in ("none", "batch", "group", "layer")}


def _final_accuracy(load: Loader) -> dict:
    return {"MLP": _diff(load("mlp_bn"), "batch", "none"),
            "CNN": _diff(load("cnn_bn"), "batch", "none"),
            "sigmoid MLP": _diff(load("ics"), "batch", "none")}


def _local_minima(load: Loader) -> dict:
    out = {}
    for exp, label in (("mlp_bn", "MLP"), ("cnn_bn", "CNN"), ("ics", "sigmoid MLP")):
        r = load(exp)
        out[label] = np.log2(r.values("none", "train_loss") / r.values("batch", "train_loss"))
    return out


def _step_time_ratio(bench: dict, arch: str) -> np.ndarray:
    """Per interleaved round, log2(time of a BN training step / time without BN)."""
    s = bench["seconds"]["step"]
    return np.log2(np.asarray(s[f"{arch}_batch"]) / np.asarray(s[f"{arch}_none"]))


def _expensive(load: Loader) -> dict:
    bench = load_bench("training_cost")
    out = {}
    for arch, exp in (("mlp", "mlp_bn"), ("cnn", "cnn_bn")):
        per_step = _step_time_ratio(bench, arch)
        out[f"{arch.upper()}: time per step"] = per_step
        # time to the validation target = steps (per seed) x time per step (median round)
        out[f"{arch.upper()}: time to a validation target"] = (
            -_speedup(load(exp)) + float(np.median(per_step)))
    return out


def _expensive_large_data(load: Loader) -> dict:
    epoch = load_bench("training_cost")["seconds"]["epoch"]
    sizes = sorted(epoch["none"], key=int)
    ratio = {n: np.log2(np.asarray(epoch["batch"][n]) / np.asarray(epoch["none"][n]))
             for n in sizes}
    key = f"BN's time share, {sizes[-1]} vs {sizes[0]} examples"
    return {key: ratio[sizes[-1]] - ratio[sizes[0]]}


def _reduces_computation(load: Loader) -> dict:
    r = load("flops")
    out = {}
    for m in ("mlp", "cnn"):
        base = r.values(f"{m}_none", "total_flops")
        out[f"{m.upper()}, eval mode"] = r.values(f"{m}_batch", "total_flops") / base - 1
        out[f"{m.upper()}, folded"] = r.values(f"{m}_batch", "folded_total_flops") / base - 1
    return out


def _ln_for_sequences(load: Loader) -> dict:
    r = load("seq_norms")
    return {"test sequences of 16-40 values, as in training": _diff(r, "layer", "batch"),
            "test sequences cut to 6-15 values": _diff(r, "layer", "batch", "test_short_acc")}


def _no_norm_deep(load: Loader) -> dict:
    return {"16 residual blocks, batch 64": _diff(load("no_norm"), "batch", "none")}


def _skipinit(load: Loader) -> dict:
    return {"16 residual blocks, batch 64": _diff(load("no_norm"), "skipinit", "batch")}


def _ws_gn_small_batch(load: Loader) -> dict:
    return {"16 residual blocks, batch 2": _diff(load("no_norm_batch2"), "ws_group_b2",
                                                  "batch_b2")}


_PASS_NAMES = {"eval": "eval mode", "train_forward": "training forward"}


def _roofline(passes: tuple[tuple[str, str], ...]) -> Callable[[Loader], dict]:
    """Per interleaved round of ``bench/bench_roofline.py``, log2(time of a pass / the time its
    bytes need at that round's copy bandwidth), for each (variant, pass) and input shape."""
    def effects(load: Loader) -> dict:
        bench = load_bench("roofline")
        out = {}
        for key, r in bench["results"].items():
            values = math.prod(r["shape"])
            bandwidth = np.asarray(r["bandwidth_bytes_per_s"]["copy"])
            for variant, what in passes:
                limit = bench["values_moved"][what] * values * 4 / bandwidth   # float32
                seconds = np.asarray(r["seconds"][f"{variant}/{what}"])
                out[f"{_PASS_NAMES[what]}, {variant}, {key}"] = np.log2(seconds / limit)
        return out
    return effects


SHIFT_MODELS = {"mlp": "MLP", "cnn": "CNN"}


def _strongest(result: Result, arm: str, shift: str, key: str, strength: int = -1) -> np.ndarray:
    """Per seed, ``key`` of the ``shift`` measurement at its strongest strength (or another)."""
    return np.array([run["shift"][shift][strength][key] for run in result.runs(arm)])


def _per_shift(load: Loader, effect: Callable[[Result, str, str], np.ndarray]) -> dict:
    r = load("shift")
    shifts = r.runs("mlp_batch")[0]["shift"]
    return {f"{label}, {shift}": effect(r, model, shift)
            for model, label in SHIFT_MODELS.items() for shift in shifts}


def _drop(r: Result, arm: str, shift: str) -> np.ndarray:
    return _strongest(r, arm, shift, "source", 0) - _strongest(r, arm, shift, "source")


def _bn_fragile_shift(load: Loader) -> dict:
    return _per_shift(load, lambda r, m, s: _drop(r, f"{m}_batch", s) - _drop(r, f"{m}_none", s))


def _fix_effect(better: str, worse: str) -> Callable[[Loader], dict]:
    return lambda load: _per_shift(load, lambda r, m, s: _strongest(r, f"{m}_batch", s, better)
                                   - _strongest(r, f"{m}_batch", s, worse))


def _accumulation(load: Loader) -> dict:
    r = load("accumulation")
    return {"BN, 16 micro-batches of 4 - one batch of 64": _diff(r, "batch_accum16x4", "batch_b64")}


def _freeze_finetune(load: Loader) -> dict:
    return {"fine-tuning at batch 10": _diff(load("finetune"), "frozen", "train")}


def _requires_grad_freezes(load: Loader) -> dict:
    return {"running means after fine-tuning with requires_grad_(False)":
            load("finetune").values("no_grad", "running_mean_drift")}


def _bn_params_expressive(load: Loader) -> dict:
    return {"fine-tuning at batch 10": _diff(load("finetune"), "bn_only", "head_only")}


def _dropout_variance_shift(load: Loader) -> dict:
    r = load("dropout_bn")
    return {"statistics re-estimated without dropout - as trained":
            r.values("dropout_every", "variance_shift.test_acc_reestimated")
            - r.values("dropout_every", "test_acc"),
            "dropout only after the last BN - after every layer":
            _diff(r, "dropout_last", "dropout_every")}


@dataclass(frozen=True)
class Claim:
    """A claim, the effect that tests it, and how to read the effect.

    Attributes:
        id: a short key.
        text: the claim, paraphrased from the popular articles.
        notebooks: where it is tested.
        experiments: the stored results it reads.
        expect: what the claim predicts of the effect (``"greater"``, ``"less"``,
            ``"equivalent"``).
        margin: equivalence margin, in the effect's unit.
        effect: what one effect sample is, with its unit.
    """

    id: str
    text: str
    notebooks: tuple[int, ...]
    experiments: tuple[str, ...]
    expect: str
    margin: float
    effect: str
    _effects: Callable[[Loader], dict] = field(repr=False, compare=False)

    def effects(self, load: Loader = load_result) -> dict[str, np.ndarray]:
        """Setting -> per-seed effect samples, from the stored results."""
        return self._effects(load)

    def verdict(self, load: Loader = load_result) -> Verdict:
        """The verdict of :func:`bncourse.verdict.decide` on the stored results."""
        return decide(self.effects(load), expect=self.expect, margin=self.margin)


_CLAIMS = (
    Claim("normalizes", "BN normalizes each layer's inputs to zero mean and unit variance, then "
          "scales and shifts them", (1, 2), ("mlp_bn", "cnn_bn"), "equivalent", 1e-3,
          "largest deviation of a trained BN layer's output from mean beta, std |gamma| "
          "(units of |gamma|)", _normalizes),
    Claim("ics_cause", "BN works because it reduces internal covariate shift", (3,), ("ics",),
          "equivalent", ACC_MARGIN, "test accuracy, noisy BN (BN with more covariate shift "
          "than no BN) - no BN; if BN worked through less shift, noisy BN would lose its "
          "benefit", _ics_cause),
    Claim("speeds_up", "BN speeds up training", (2, 3), ("mlp_bn", "cnn_bn", "ics"), "greater",
          RATIO_MARGIN, "log2(steps without BN / steps with BN) to a validation target",
          _speeds_up),
    Claim("higher_lr", "BN allows higher learning rates", (2,), ("lr_sweep",), "greater",
          DECADE_MARGIN, "largest usable learning rate, BN - no BN (decades)",
          lambda load: _usable_edge(load, "largest")),
    Claim("lr_insensitive", "BN makes training less sensitive to the learning rate", (2,),
          ("lr_sweep",), "greater", DECADE_MARGIN,
          "width of the usable learning-rate range, BN - no BN (decades)",
          lambda load: _usable_edge(load, "width")),
    Claim("init_insensitive", "BN makes training less sensitive to the weight initialization",
          (2,), ("init_scale",), "greater", ACC_MARGIN,
          "spread of test accuracy over init scales, no BN - BN", _init_insensitive),
    Claim("gradient_flow", "BN helps gradient flow (no vanishing or exploding gradients)", (2, 3),
          ("deep_mlp",), "greater", 0.5,
          "|log10(first / last layer gradient norm)|, no BN - BN (decades)", _gradient_flow),
    Claim("grad_variance", "BN reduces the variance of the gradients", (3,),
          ("mlp_bn", "ics", "cnn_bn"), "less", 0.1,
          "log10 noise-to-signal ratio of the minibatch gradient, BN - no BN", _grad_variance),
    Claim("regularizer", "BN is a regularizer: it improves test accuracy when the training set "
          "is small", (4,), ("regularization",), "greater", ACC_MARGIN,
          "test accuracy, BN - no BN (500 training examples)", _regularizer),
    Claim("noise_regularizes", "BN regularizes through the noise of its batch statistics", (4,),
          ("regularization",), "greater", ACC_MARGIN,
          "test accuracy: BN against BN with about ten times less batch noise (population "
          "statistics), and more noise (ghost batches) against BN", _noise_regularizes),
    Claim("causes_overfitting", "BN can itself cause overfitting", (4,),
          ("regularization", "mlp_bn", "cnn_bn"), "greater", ACC_MARGIN,
          "train-test accuracy gap, BN - no BN", _causes_overfitting),
    Claim("gamma_strength", "A larger scale parameter gamma regularizes more strongly", (4,),
          ("regularization",), "greater", ACC_MARGIN,
          "a smaller train-test gap, and a better test accuracy, with gamma starting at 5 "
          "rather than 0.2", _gamma_strength),
    Claim("combine_regularizers", "Combine BN with dropout and weight decay for more "
          "regularization", (4,), ("regularization",), "greater", ACC_MARGIN,
          "BN + dropout + weight decay against BN alone", _combine),
    Claim("placement", "Place BN after the linear layer and before the activation", (2,),
          ("placement",), "greater", ACC_MARGIN, "test accuracy, before - after", _placement),
    Claim("xavier_he", "Use Xavier or He initialization with BN", (2,), ("init_scale",),
          "greater", ACC_MARGIN, "test accuracy of BN networks, between initializations",
          _xavier_he),
    Claim("small_batch_noisy", "Small batches give noisy estimates of the mean and variance",
          (5,), ("batch_stats",), "greater", 0.1,
          "log2(error at batch 2 / error at batch 32); 1/sqrt(B) predicts 2", _small_batch_noisy),
    Claim("small_batch_hurts", "BN suffers at small batch sizes", (5,),
          ("batch_size", "cnn_batch_size"), "greater", ACC_MARGIN,
          "test accuracy differences at equal epochs", _small_batch_hurts),
    Claim("large_batch_slower", "Large batches converge slower", (5,), ("batch_size",),
          "greater", ACC_MARGIN, "test accuracy after equal epochs, batch 32 - batch 128",
          _large_batch_slower),
    Claim("expensive", "BN is computationally expensive and slows training", (6,),
          ("mlp_bn", "cnn_bn"), "greater", RATIO_MARGIN,
          "log2(time with BN / without): per step (benchmark rounds), and to a validation "
          "target (steps per seed x median time per step)", _expensive),
    Claim("expensive_large_data", "BN is especially expensive on large datasets", (6,), (),
          "greater", RATIO_MARGIN, "change of log2(epoch time with BN / without) from the "
          "smallest to the largest data set (benchmark rounds)", _expensive_large_data),
    Claim("reduces_computation", "BN reduces the amount of computation", (6,), ("flops",),
          "less", 1e-3, "relative change of FLOPs per signal at inference, BN vs no BN",
          _reduces_computation),
    Claim("local_minima", "BN helps the optimizer avoid poor local minima (measured: a lower "
          "training loss at convergence)", (2, 3), ("mlp_bn", "cnn_bn", "ics"), "greater",
          RATIO_MARGIN, "log2(final training loss without BN / with BN)", _local_minima),
    Claim("final_accuracy", "BN reaches a better final accuracy, not only a faster one", (2,),
          ("mlp_bn", "cnn_bn", "ics"), "greater", ACC_MARGIN,
          "test accuracy at convergence, BN - no BN", _final_accuracy),
    Claim("ln_for_sequences", "Transformers use LayerNorm because BN fails on sequences", (8,),
          ("seq_norms",), "greater", ACC_MARGIN,
          "test accuracy of a tiny transformer on padded sequences, LayerNorm - BN",
          _ln_for_sequences),
    Claim("no_norm_deep", "A deep residual network trains worse without normalization", (8,),
          ("no_norm",), "greater", ACC_MARGIN,
          "test accuracy, BN - no normalization (PyTorch's default initialization)",
          _no_norm_deep),
    Claim("skipinit", "Residual branches that start at zero (SkipInit) train a deep residual "
          "network as well as BN, without normalization", (8,), ("no_norm",), "equivalent",
          ACC_MARGIN, "test accuracy, SkipInit - BN", _skipinit),
    Claim("ws_gn_small_batch", "Weight standardization with GroupNorm beats BN at batch 2",
          (8,), ("no_norm_batch2",), "greater", ACC_MARGIN,
          "test accuracy at an equal budget, WS + GroupNorm - BN", _ws_gn_small_batch),
    Claim("memory_bound_eval", "BN at inference is memory-bound", (6,), (), "equivalent",
          MEMORY_MARGIN, "log2(time of eval-mode BN / the time its bytes need at the measured "
          "copy bandwidth), per benchmark round; PyTorch's native kernel",
          _roofline((("native", "eval"),))),
    Claim("memory_bound_training", "BN in training is memory-bound", (6,), (), "equivalent",
          MEMORY_MARGIN, "log2(time of the training forward / the time its bytes need at the "
          "measured copy bandwidth), per benchmark round; PyTorch's native kernel and the "
          "course's hand-fused FusedBatchNorm",
          _roofline((("native", "train_forward"), ("fused", "train_forward")))),
    Claim("bn_fragile_shift", "BN makes a network more fragile under distribution shift", (9,),
          ("shift",), "greater", ACC_MARGIN,
          "accuracy lost to the strongest shift of each kind as trained, BN - no BN",
          _bn_fragile_shift),
    Claim("adabn", "Re-estimating BN's statistics on the shifted data (AdaBN) recovers accuracy "
          "lost to a distribution shift", (9,), ("shift",), "greater", ACC_MARGIN,
          "test accuracy at the strongest shift of each kind, AdaBN - as trained",
          _fix_effect("adabn", "source")),
    Claim("tent", "Test-time entropy minimization of BN's scale and shift (TENT) improves on "
          "re-estimating the statistics", (9,), ("shift",), "greater", ACC_MARGIN,
          "test accuracy at the strongest shift of each kind, TENT - AdaBN",
          _fix_effect("tent", "adabn")),
    Claim("mixed_batches", "A batch that mixes two sources normalizes each example with the "
          "other source's statistics, and costs accuracy", (9,), ("shift",), "greater",
          ACC_MARGIN, "test accuracy on the shifted examples with test-batch statistics, one "
          "source per batch - half clean, half shifted", _fix_effect("separate", "mixed")),
    Claim("accumulation", "Gradient accumulation over small micro-batches trains a BN network "
          "as one large batch would", (9,), ("accumulation",), "equivalent", ACC_MARGIN,
          "test accuracy, accumulated micro-batches - the large batch", _accumulation),
    Claim("freeze_finetune", "Freeze BN (eval mode) when fine-tuning with small batches", (9,),
          ("finetune",), "greater", ACC_MARGIN,
          "test accuracy on the new classes, BN frozen - BN in training mode", _freeze_finetune),
    Claim("requires_grad_freezes", "requires_grad_(False) on BN's parameters freezes the layer",
          (9,), ("finetune",), "equivalent", DRIFT_MARGIN,
          "largest mean |change| of a BN running mean over fine-tuning (units of the running "
          "std)", _requires_grad_freezes),
    Claim("bn_params_expressive", "Training only BN's scale and shift adapts a network far "
          "beyond its frozen features", (9,), ("finetune",), "greater", ACC_MARGIN,
          "test accuracy on the new classes, BN's weight and bias and the head trained - the "
          "head alone", _bn_params_expressive),
    Claim("dropout_variance_shift", "Dropout before BN costs accuracy at inference through the "
          "variance shift", (9,), ("dropout_bn",), "greater", ACC_MARGIN,
          "test accuracy of each fix - dropout after every hidden layer (before the next BN)",
          _dropout_variance_shift),
)


def claims() -> dict[str, Claim]:
    """Claim id -> :class:`Claim`, in the course's order."""
    return {c.id: c for c in _CLAIMS}

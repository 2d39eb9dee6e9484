"""The pure function behind every experiment: ``run_job(arm, seed, lr) -> metrics``.

A job builds its data split and model from the :class:`~bncourse.experiments.config.Arm`, seeds
everything with ``seed``, trains at ``lr`` (or measures, for a measurement task) on one CPU
thread, and returns JSON-ready metrics. Same arguments, same library versions, same machine:
the same numbers, in any process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from bncourse.data import MNIST1D, load_mnist1d
from bncourse.experiments.config import Arm
from bncourse.experiments.practice import finetune_job, shift_metrics, variance_shift_metrics
from bncourse.models import cnn1d, mlp
from bncourse.nn import (
    BatchNorm,
    GhostBatchNorm,
    NoisyBatchNorm,
    PopulationStatistics,
    fold_batchnorm,
    is_batchnorm,
)
from bncourse.probes import gradient_variance
from bncourse.resmlp import residual_mlp
from bncourse.train import evaluate, set_seed, train
from bncourse.transformer import TinyTransformer, pad_to_lengths, variable_lengths

__all__ = ["run_job", "splits", "build_model", "CHANCE", "VAL_SIZE", "GRAD_NOISE_EPOCHS"]

CHANCE = 0.1            # ten classes: the accuracy a diverged run is counted at
VAL_SIZE = 800          # validation examples carved from the end of MNIST-1D's training split
SMALL_TRAIN = 500       # training examples of the "small500" data set
#: Epochs after which the gradient noise is measured (those within the budget).
GRAD_NOISE_EPOCHS = (1, 2, 5, 10, 20, 40)
PROBE_SIZE = 256        # examples of the fixed probe batch ("jitter", "bn_output")
JITTER_EPOCHS = 5       # jitter is recorded over the first epochs, where distributions move most
NOISE_BATCHES, NOISE_BATCH_SIZE = 8, 64
BATCH_STAT_SIZES = (2, 4, 8, 16, 32, 64, 128)
BATCH_STAT_DRAWS = 200
SEQ_SEEDS = (11, 12, 13)   # lengths of the "seqvar" training, test and short-test sequences


def splits(name: str) -> dict[str, Tensor]:
    """The data set of an arm: ``x_train, y_train`` (fit), ``x_val, y_val`` (tune, curves),
    ``x_test, y_test`` (final numbers only).

    ``"full"``: the first 3200 of MNIST-1D's 4000 training examples, validation the last 800;
    ``"small500"``: the first 500 of those 3200, the same validation split; ``"seqvar"``: the
    ``"full"`` split with every signal cut to a random length of 16-40 and zero-padded
    (:func:`bncourse.transformer.pad_to_lengths`), plus ``x_test_short``: the test signals
    cut to 6-15, shorter than any seen in training (a shift in the padding's share).
    """
    d = load_mnist1d()
    n_fit = d.x_train.shape[0] - VAL_SIZE
    n_train = {"full": n_fit, "small500": SMALL_TRAIN, "seqvar": n_fit}[name]
    x_train, x_test = d.x_train, d.x_test
    extra = {}
    if name == "seqvar":
        x_train = pad_to_lengths(d.x_train, variable_lengths(d.x_train.shape[0], SEQ_SEEDS[0]))
        x_test = pad_to_lengths(d.x_test, variable_lengths(d.x_test.shape[0], SEQ_SEEDS[1]))
        short = variable_lengths(d.x_test.shape[0], SEQ_SEEDS[2], low=6, high=15)
        extra = {"x_test_short": pad_to_lengths(d.x_test, short), "y_test_short": d.y_test}
    return {
        "x_train": x_train[:n_train], "y_train": d.y_train[:n_train],
        "x_val": x_train[n_fit:], "y_val": d.y_train[n_fit:],
        "x_test": x_test, "y_test": d.y_test, **extra,
    }


def _norm_factory(arm: Arm) -> str | Callable[[int], nn.Module]:
    norm = arm.norm
    if norm in ("none", "group", "layer"):
        return norm
    if norm in ("batch", "population"):
        return nn.BatchNorm1d      # equal to bncourse.nn.BatchNorm (notebook 02), and faster
    if norm == "scratch":
        return BatchNorm
    if norm == "noisy":
        return NoisyBatchNorm
    if norm.startswith("ghost:"):
        size = int(norm.split(":", 1)[1])
        return lambda c: GhostBatchNorm(c, size)
    raise ValueError(
        "expected norm to be one of none, batch, scratch, noisy, ghost:G, population, group, "
        f"layer (got {norm!r})"
    )


def build_model(arm: Arm, reference: Tensor | None = None) -> nn.Module:
    """The untrained model of ``arm`` (initialized from the current RNG state).

    ``reference`` is the training input that ``norm="population"`` normalizes along with every
    batch (:class:`bncourse.nn.PopulationStatistics`).
    """
    if arm.model == "transformer":
        if arm.data != "seqvar" or len(set(arm.hidden)) != 1:
            raise ValueError(f"expected data='seqvar' and one token width for the transformer "
                             f"(got data={arm.data!r}, hidden={arm.hidden})")
        return TinyTransformer(arm.hidden[0], len(arm.hidden), norm=arm.norm)
    if arm.model == "resmlp":
        if len(set(arm.hidden)) != 1:
            raise ValueError(f"expected one width for the residual MLP (got {arm.hidden})")
        return residual_mlp(len(arm.hidden), arm.hidden[0], variant=arm.norm)
    common = dict(norm=_norm_factory(arm), activation=arm.activation, init=arm.init,
                  init_std=arm.init_std, bias=arm.bias, norm_position=arm.norm_position)
    if arm.model == "mlp":
        model = mlp(arm.hidden, dropout=arm.dropout, dropout_position=arm.dropout_position,
                    **common)
    elif arm.model == "cnn":
        if arm.dropout:
            raise ValueError(f"expected dropout=0 for the CNN (got {arm.dropout})")
        model = cnn1d(arm.hidden, **common)
    else:
        raise ValueError(f"expected model to be 'mlp' or 'cnn' (got {arm.model!r})")
    for m in model.modules():
        if is_batchnorm(m):
            with torch.no_grad():
                m.weight.fill_(arm.gamma_init)
            m.weight.requires_grad_(arm.gamma_trainable)
    if arm.norm == "population":
        if reference is None:
            raise ValueError("expected the training inputs as reference for norm='population'")
        model = PopulationStatistics(model, reference)
    return model


def _network(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, PopulationStatistics) else model


# ----------------------------------------------------------------------------- measurements


class _GradNoise:
    """Noise-to-signal ratio of the minibatch gradient, Var[g_b] / ||mean g_b||^2, over fixed
    batches, at the end of chosen epochs. Scale-free, so nets whose gradients differ in size
    compare fairly (raw variance does not)."""

    def __init__(self, data: dict[str, Tensor], steps_per_epoch: int, epochs: int) -> None:
        k = min(NOISE_BATCHES, data["x_train"].shape[0] // NOISE_BATCH_SIZE)
        n = k * NOISE_BATCH_SIZE
        self.xs = data["x_train"][:n].reshape(k, NOISE_BATCH_SIZE, -1)          # (k, 64, 40)
        self.ys = data["y_train"][:n].reshape(k, NOISE_BATCH_SIZE)
        self.at = {e * steps_per_epoch - 1: e for e in GRAD_NOISE_EPOCHS if e <= epochs}
        self.out = {"epochs": [], "nsr": [], "variance": []}

    def __call__(self, step: int, model: nn.Module, loss: float) -> None:
        if step in self.at:
            g = gradient_variance(model, self.xs, self.ys, F.cross_entropy)   # model restored
            self.out["epochs"].append(self.at[step])
            self.out["nsr"].append(g.relative)
            self.out["variance"].append(g.variance)


class _Jitter:
    """Per training step of the first ``JITTER_EPOCHS`` epochs, the per-unit mean of the last
    hidden layer's output (the head's input) on a fixed probe batch, in training mode (noise
    included), buffers left untouched. Jitter is the mean |change| of those means from one step
    to the next."""

    def __init__(self, model: nn.Module, probe: Tensor, steps: int) -> None:
        self.probe, self.means, self.steps = probe, [], steps
        head = _network(model).head
        self._inputs: list[Tensor] = []
        head.register_forward_pre_hook(lambda m, args: self._inputs.append(args[0].detach()))

    def __call__(self, step: int, model: nn.Module, loss: float) -> None:
        if step >= self.steps:
            return
        saved = [b.clone() for b in model.buffers()]
        self._inputs.clear()
        with torch.no_grad():
            _network(model)(self.probe)
        for b, s in zip(model.buffers(), saved, strict=True):
            b.copy_(s)
        self.means.append(self._inputs[-1].mean(0))                           # (units,)

    def result(self, steps_per_epoch: int) -> dict:
        m = torch.stack(self.means)                                           # (steps, units)
        steps = (m[1:] - m[:-1]).abs().mean(1)                                # (steps - 1,)
        return {"first_epoch": steps[: steps_per_epoch - 1].mean().item(),
                "first_epochs": steps.mean().item()}


@torch.no_grad()
def _bn_output(model: nn.Module, x: Tensor) -> dict:
    """How exactly each trained BN layer standardizes a probe batch.

    Train mode: the largest deviation of a channel's output mean from beta and of its standard
    deviation from |gamma|, in units of |gamma|. Eval mode: the same for the running statistics.
    Also the largest |gamma - 1| and |beta| (do the affine parameters leave (1, 0)?).
    """
    net = _network(model)
    layers = [m for m in net.modules() if is_batchnorm(m)]
    outputs: dict[int, Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
             for k, m in enumerate(layers)]
    result = {}
    saved = [b.clone() for b in net.buffers()]
    try:
        for mode in ("train", "eval"):
            net.train(mode == "train")
            net(x)
            dev = 0.0
            for k, m in enumerate(layers):
                o = outputs[k].transpose(0, 1).reshape(m.num_features, -1)      # (C, values)
                g, b = m.weight.abs(), m.bias
                dev = max(dev, ((o.mean(1) - b).abs() / g).max().item(),
                          ((o.std(1, correction=0) - g).abs() / g).max().item())
            result[f"{mode}_deviation"] = dev
    finally:
        for h in hooks:
            h.remove()
        for b, s in zip(net.buffers(), saved, strict=True):
            b.copy_(s)
        net.train()
    result["gamma_shift"] = max((m.weight - 1).abs().max().item() for m in layers)
    result["beta_shift"] = max(m.bias.abs().max().item() for m in layers)
    return result


def _final(model: nn.Module, data: dict[str, Tensor], diverged: bool) -> dict:
    out = {}
    for split in ("train", "val", "test", "test_short"):
        if f"x_{split}" not in data:
            continue
        if diverged:
            out[f"{split}_acc"], out[f"{split}_loss"] = CHANCE, None
        else:
            m = evaluate(model, data[f"x_{split}"], data[f"y_{split}"])
            out[f"{split}_acc"], out[f"{split}_loss"] = m.accuracy, m.loss
    return out


def _train_job(arm: Arm, seed: int, lr: float) -> dict:
    data = splits(arm.data)
    if arm.finetune:
        return finetune_job(arm, seed, lr, data, build_model)
    set_seed(seed)
    model = build_model(arm, reference=data["x_train"])
    steps_per_epoch = data["x_train"].shape[0] // arm.batch_size
    hooks = []
    noise = jitter = None
    if "grad_noise" in arm.measure:
        noise = _GradNoise(data, steps_per_epoch, arm.epochs)
        hooks.append(noise)
    if "jitter" in arm.measure:
        jitter = _Jitter(model, data["x_train"][:PROBE_SIZE], JITTER_EPOCHS * steps_per_epoch)
        hooks.append(jitter)

    def on_step(step, m, loss):
        for h in hooks:
            h(step, m, loss)

    fit = MNIST1D(data["x_train"], data["y_train"], data["x_val"], data["y_val"])
    hist = train(model, fit, epochs=arm.epochs, lr=lr, batch_size=arm.batch_size,
                 momentum=arm.momentum, weight_decay=arm.weight_decay, seed=seed,
                 schedule=arm.schedule, on_step=on_step if hooks else None, progress=False,
                 accumulate=arm.accumulate)
    metrics = {
        "lr": lr, "seed": seed, "diverged": hist.diverged, "steps": hist.steps,
        "steps_per_epoch": steps_per_epoch,
        "val_acc_curve": hist.test_acc,            # after each epoch (train() calls it "test")
        "train_acc_curve": hist.train_acc,
        "train_loss_curve": hist.epoch_loss,
        **_final(model, data, hist.diverged),
    }
    if noise is not None:
        metrics["grad_noise"] = noise.out
    if jitter is not None:
        metrics["jitter"] = jitter.result(steps_per_epoch)
    has_bn = any(is_batchnorm(m) for m in model.modules())
    if "bn_output" in arm.measure and has_bn and not hist.diverged:
        metrics["bn_output"] = _bn_output(model, data["x_test"][:PROBE_SIZE])
    if "shift" in arm.measure and not hist.diverged:
        metrics["shift"] = shift_metrics(model)
    if "variance_shift" in arm.measure and has_bn and not hist.diverged:
        metrics["variance_shift"] = variance_shift_metrics(
            model, data["x_train"], data["x_test"], data["y_test"], arm.batch_size)
    return metrics


def _grad_flow_job(arm: Arm, seed: int) -> dict:
    """Per-layer gradient norms of the weight layers at initialization, one batch of 512."""
    data = splits(arm.data)
    set_seed(seed)
    model = build_model(arm)
    F.cross_entropy(model(data["x_train"][:512]), data["y_train"][:512]).backward()
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d))][:-1]  # no head
    norms = [m.weight.grad.norm().item() for m in layers]
    return {"seed": seed, "grad_norms": norms,
            "log10_first_over_last": math.log10(norms[0] / norms[-1])}


@torch.no_grad()
def _batch_stats_job(arm: Arm, seed: int) -> dict:
    """Error of a batch's mean and standard deviation of the first layer's pre-activations
    against the whole training set's, per batch size, in units of the population std (mean
    over units and over random batches)."""
    data = splits(arm.data)
    set_seed(seed)
    model = build_model(arm)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    z = first(data["x_train"])                                              # (N, units)
    mu, sd = z.mean(0), z.std(0, correction=0)
    g = torch.Generator().manual_seed(seed)
    mean_err, std_err = [], []
    for b in BATCH_STAT_SIZES:
        idx = torch.stack([torch.randperm(z.shape[0], generator=g)[:b]
                           for _ in range(BATCH_STAT_DRAWS)])          # (draws, b)
        zb = z[idx]                                                          # (draws, b, units)
        mean_err.append(((zb.mean(1) - mu).abs() / sd).mean().item())
        std_err.append(((zb.std(1, correction=0) - sd).abs() / sd).mean().item())
    return {"seed": seed, "batch_sizes": list(BATCH_STAT_SIZES), "mean_error": mean_err,
            "std_error": std_err}


@torch.no_grad()
def _flops_job(arm: Arm, seed: int) -> dict:
    """FLOPs per signal at inference (eval mode): matmuls/convolutions counted by PyTorch's
    ``FlopCounterMode``, each BN as 2 FLOPs per element (a multiply and an add); then again
    after folding BN into the layer before it."""
    data = splits(arm.data)
    set_seed(seed)
    model = build_model(arm).eval()
    x = data["x_test"]
    bn_elements = []
    hooks = [m.register_forward_hook(lambda m, i, o: bn_elements.append(o.numel()))
             for m in model.modules() if is_batchnorm(m)]
    with FlopCounterMode(display=False) as counter:
        model(x)
    for h in hooks:
        h.remove()
    n = x.shape[0]
    out = {"seed": seed, "matmul_flops": counter.get_total_flops() // n,
           "norm_flops": 2 * sum(bn_elements) // n}
    out["total_flops"] = out["matmul_flops"] + out["norm_flops"]
    folded = fold_batchnorm(model) if bn_elements else model
    with FlopCounterMode(display=False) as counter_f:
        folded(x)
    out["folded_total_flops"] = counter_f.get_total_flops() // n
    return out


def run_job(arm: Arm, seed: int, lr: float | None) -> dict:
    """Runs one job and returns its metrics (JSON-ready: floats, ints, bools, lists, None).

    Args:
        arm: the configuration.
        seed: seeds the initialization, the batch order and any noise.
        lr: the learning rate of a training arm; ``None`` for a measurement task.

    Runs on one CPU thread (results do not depend on the machine's core count); the caller's
    thread setting is restored afterwards.
    """
    if arm.task == "train" and lr is None:
        raise ValueError("expected a learning rate for a training arm (got lr=None)")
    if arm.task != "train" and lr is not None:
        raise ValueError(f"expected lr=None for the measurement task {arm.task!r} (got {lr})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if arm.task == "train":
            return _train_job(arm, seed, lr)
        if arm.task == "grad_flow":
            return _grad_flow_job(arm, seed)
        if arm.task == "batch_stats":
            return _batch_stats_job(arm, seed)
        return _flops_job(arm, seed)
    finally:
        torch.set_num_threads(threads)


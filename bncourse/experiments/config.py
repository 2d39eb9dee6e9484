"""Frozen configurations: an :class:`Arm` is what one job trains or measures, an
:class:`Experiment` the arms compared, the seeds, and the tuning protocol.

A job is ``(arm, seed, lr)``; its metrics depend only on these and the library versions
(:func:`bncourse.experiments.jobs.run_job`). Hashes are computed from a canonical JSON form, so
they are equal in every process and on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

__all__ = [
    "Arm", "Experiment", "TASKS", "DATASETS", "SCHEDULES", "JOB_VERSION", "canonical", "digest",
    "arm_dict",
]

#: Bump when the meaning of a job's metrics changes (new measurement, changed definition), so
#: that cached jobs and stored results stop matching.
JOB_VERSION = 1

TASKS = ("train", "grad_flow", "batch_stats", "flops")
DATASETS = ("full", "small500", "seqvar")
SCHEDULES = ("constant", "cosine")
MODELS = ("mlp", "cnn", "transformer", "resmlp")
NORMS = ("none", "batch", "scratch", "noisy", "population", "group", "layer",  # and "ghost:G"
         "rms", "dyt", "skipinit", "ws_group")
MEASURES = ("grad_noise", "bn_output", "jitter", "shift", "variance_shift")
FINETUNES = ("", "train", "no_grad", "frozen", "bn_only", "head_only")
DROPOUT_POSITIONS = ("every", "last")
#: Fields added after the first stored results, with their defaults: an arm at a default is
#: hashed without the field, so existing configurations (and cached jobs) keep their hashes.
LATER_FIELDS = {"accumulate": 1, "finetune": "", "dropout_position": "every"}


@dataclass(frozen=True)
class Arm:
    """One configuration of the comparison: data, model, normalization, optimizer, budget.

    Attributes:
        task: ``"train"`` (train, then evaluate) or a measurement without training:
            ``"grad_flow"`` (per-layer gradient norms at initialization), ``"batch_stats"``
            (error of batch statistics against batch size), ``"flops"`` (exact FLOP counts).
        data: ``"full"`` (3200 training / 800 validation examples carved from MNIST-1D's 4000
            training examples), ``"small500"`` (the first 500 of those 3200 for training, the
            same validation split) or ``"seqvar"`` (the ``"full"`` split as variable-length
            padded sequences, :mod:`bncourse.transformer`). The 1000 test examples are used
            only for the final numbers.
        model: ``"mlp"``, ``"cnn"`` (:func:`bncourse.models.mlp`,
            :func:`~bncourse.models.cnn1d`), ``"transformer"``
            (:class:`bncourse.transformer.TinyTransformer`, ``data="seqvar"``) or ``"resmlp"``
            (:func:`bncourse.resmlp.residual_mlp`).
        hidden: widths of the hidden layers (MLP), channels of the convolutions (CNN), the
            token width once per block (transformer), the width once per residual block
            (resmlp).
        norm: ``"none"``, ``"batch"`` (:class:`bncourse.nn.BatchNorm`), ``"noisy"``
            (:class:`~bncourse.nn.NoisyBatchNorm`), ``"ghost:G"`` (ghost batches of G),
            ``"population"`` (BN whose training statistics also cover the whole training set:
            about ten times less batch noise), ``"group"``, ``"layer"``; for the transformer
            ``"batch"``, ``"layer"``, ``"rms"``, ``"dyt"`` or ``"none"``; for the residual MLP
            ``"batch"``, ``"none"``, ``"skipinit"`` or ``"ws_group"``.
        activation, init, init_std, norm_position, dropout, dropout_position, bias: as in
            :func:`bncourse.models.mlp`.
        gamma_init: BN's initial scale. gamma_trainable: whether the optimizer updates it.
        batch_size, epochs, momentum, weight_decay, schedule, accumulate: as in
            :func:`bncourse.train.train` (``accumulate`` micro-batches per step).
        finetune: ``""`` (train from scratch) or a way to fine-tune a network pre-trained on
            classes 0-4 on a few examples of classes 5-9 (notebook 09): ``"train"``
            (everything trains, BN in training mode), ``"no_grad"`` (BN's weight and bias
            ``requires_grad_(False)``, nothing else), ``"frozen"``
            (:func:`bncourse.adapt.freeze_bn`), ``"bn_only"`` (only BN's weight and bias and
            the head train) or ``"head_only"`` (only the head; BN frozen).
        lr_grid: learning rates to tune over (``()`` for a measurement task).
        measure: extra measurements of a training job: ``"grad_noise"`` (noise-to-signal ratio
            of the minibatch gradient at checkpoints), ``"bn_output"`` (how exactly the trained
            BN layers standardize in train and eval mode), ``"jitter"`` (step-to-step movement of
            the last hidden layer's output distribution on a fixed probe batch), ``"shift"``
            (accuracy on shifted test sets as trained, with test-batch statistics, AdaBN,
            TENT, and in batches mixing clean and shifted examples), ``"variance_shift"``
            (each BN's running variance over the variance of its input at inference, and the
            accuracy after re-estimating the statistics with dropout off).
    """

    task: str = "train"
    data: str = "full"
    model: str = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    norm: str = "none"
    activation: str = "relu"
    init: str = "default"
    init_std: float = 0.01
    norm_position: str = "before"
    dropout: float = 0.0
    bias: bool = True
    gamma_init: float = 1.0
    gamma_trainable: bool = True
    batch_size: int = 64
    epochs: int = 40
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lr_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    measure: tuple[str, ...] = ()
    accumulate: int = 1
    finetune: str = ""
    dropout_position: str = "every"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"expected task to be one of {TASKS} (got {self.task!r})")
        if self.data not in DATASETS:
            raise ValueError(f"expected data to be one of {DATASETS} (got {self.data!r})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"expected schedule to be one of {SCHEDULES} (got {self.schedule!r})")
        if self.model not in MODELS:
            raise ValueError(f"expected model to be one of {MODELS} (got {self.model!r})")
        size = self.norm[len("ghost:"):] if self.norm.startswith("ghost:") else ""
        ghost = size.isdigit() and int(size) > 0
        if self.norm not in NORMS and not ghost:
            raise ValueError(f"expected norm to be one of {NORMS} or 'ghost:G' (got {self.norm!r})")
        unknown = set(self.measure) - set(MEASURES)
        if unknown or (self.measure and self.task != "train"):
            raise ValueError(
                f"expected measure to name training measurements among {MEASURES} "
                f"(got {self.measure!r} for task {self.task!r})")
        if self.finetune not in FINETUNES or (self.finetune and self.norm != "batch"):
            raise ValueError(f"expected finetune to be one of {FINETUNES}, with norm='batch' "
                             f"(got {self.finetune!r} with norm={self.norm!r})")
        if self.dropout_position not in DROPOUT_POSITIONS:
            raise ValueError(f"expected dropout_position to be one of {DROPOUT_POSITIONS} "
                             f"(got {self.dropout_position!r})")
        if not (isinstance(self.accumulate, int) and self.accumulate >= 1
                and self.batch_size % self.accumulate == 0):
            raise ValueError(f"expected accumulate >= 1 dividing batch_size={self.batch_size} "
                             f"(got {self.accumulate!r})")
        if self.task == "train" and len(self.lr_grid) == 0:
            raise ValueError("expected a non-empty lr_grid for a training arm (got ())")
        if any(not lr > 0 for lr in self.lr_grid):
            raise ValueError(f"expected positive learning rates (got lr_grid={self.lr_grid})")

    def replace(self, **changes) -> Arm:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @property
    def lrs(self) -> tuple[float | None, ...]:
        """The learning rates a job runs at: the grid, or ``(None,)`` for a measurement."""
        return self.lr_grid if self.task == "train" else (None,)


@dataclass(frozen=True)
class Experiment:
    """A named comparison of arms under one protocol.

    Protocol (``sweep=False``): for every arm, each learning rate of its grid is trained on the
    ``tuning_seeds``; the learning rate with the best mean final validation accuracy is chosen
    (a diverged run counts as chance); then the arm is trained on ``seeds``, which are disjoint
    from the tuning seeds, at that rate. With ``sweep=True`` every learning rate of the grid is
    trained on ``seeds`` (an experiment *about* the learning rate); there is no tuning.

    Attributes:
        name: the registry key and the results file name.
        title: one line for tables.
        arms: ``(name, Arm)`` pairs, in display order.
        seeds: evaluation seeds.
        tuning_seeds: learning-rate tuning seeds (never used for the reported numbers).
        sweep: see above.
        converge: whether every arm is expected to converge within its budget (checked by the
            tests); ``False`` for comparisons at an equal, deliberately short budget.
        edge_ok: arms allowed to choose the smallest or largest rate of their grid (a grid that
            already spans every rate that trains, say).
        notes: what the experiment decides and why it is designed this way.
    """

    name: str
    title: str
    arms: tuple[tuple[str, Arm], ...]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tuning_seeds: tuple[int, ...] = (100, 101)
    sweep: bool = False
    converge: bool = True
    edge_ok: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        names = [n for n, _ in self.arms]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"expected unique, non-empty arm names (got {names})")
        if len(self.seeds) < 2:
            raise ValueError(f"expected at least 2 evaluation seeds (got {self.seeds})")
        if set(self.seeds) & set(self.tuning_seeds):
            raise ValueError(
                "expected evaluation seeds disjoint from the tuning seeds "
                f"(got seeds={self.seeds}, tuning_seeds={self.tuning_seeds})"
            )
        tuned = not self.sweep and any(a.task == "train" for _, a in self.arms)
        if tuned and not self.tuning_seeds:
            raise ValueError("expected tuning seeds for an experiment that tunes learning rates")

    def arm(self, name: str) -> Arm:
        for n, a in self.arms:
            if n == name:
                return a
        raise KeyError(f"expected an arm of {self.name!r}, one of {[n for n, _ in self.arms]} "
                       f"(got {name!r})")

    def to_dict(self) -> dict:
        """The configuration as JSON-ready data (what :attr:`config_hash` hashes)."""
        return {
            "name": self.name,
            "arms": {n: arm_dict(a) for n, a in self.arms},
            "seeds": list(self.seeds),
            "tuning_seeds": list(self.tuning_seeds),
            "sweep": self.sweep,
            "job_version": JOB_VERSION,
        }

    @property
    def config_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical configuration: equal across processes
        and machines, different whenever an arm, seed, grid or the job version changes."""
        return digest(self.to_dict())


def arm_dict(arm: Arm) -> dict:
    """The arm's fields as a dict, without the :data:`LATER_FIELDS` that hold their default."""
    fields = dataclasses.asdict(arm)
    for name, default in LATER_FIELDS.items():
        if fields[name] == default:
            del fields[name]
    return fields


def canonical(obj) -> str:
    """Canonical JSON: sorted keys, no spaces, tuples as lists, floats by ``repr``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(obj) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:16]

"""The course's experiments: every claim in the claim table is decided by one of these.

Shared protocol (see :class:`~bncourse.experiments.config.Experiment`): each arm gets its own
learning rate, chosen on the validation split from a log grid (about 3x apart) with the tuning
seeds 100 and 101; the reported numbers come from 5 other seeds (0-4) at that rate, on the test
split. SGD with momentum 0.9 and a cosine learning-rate decay to 0 over the budget, so every run
ends converged (checked: the seed-mean validation accuracy moves by less than a point over the
last 20% of epochs). Budgets are full: the MLPs train 40 epochs (2000 steps of 64), where
notebooks used to stop after 1-12.
"""

from __future__ import annotations

from bncourse.experiments.config import Arm, Experiment

__all__ = ["registry", "MLP", "CNN", "TRANSFORMER", "RESMLP"]

#: The base MLP (40-100-100-10, ReLU) and 1-D CNN (three stride-2 convolutions of 32 channels);
#: both measure the gradient noise and BN's standardization on the way (cheap, and it lets
#: experiments share jobs: equal arms are the same cached job).
MLP = Arm(model="mlp", hidden=(100, 100), measure=("grad_noise", "bn_output"))
CNN = Arm(model="cnn", hidden=(32, 32, 32), epochs=30, measure=("grad_noise", "bn_output"))
_WIDE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
#: Notebook 08: a tiny pre-norm transformer (2 blocks of width 32) on padded variable-length
#: sequences, and a residual MLP of 16 blocks of width 64.
TRANSFORMER = Arm(model="transformer", data="seqvar", hidden=(32, 32), epochs=16,
                  lr_grid=(0.01, 0.03, 0.1, 0.3))
RESMLP = Arm(model="resmlp", hidden=(64,) * 16, epochs=40,
             lr_grid=(0.003, 0.01, 0.03, 0.1, 0.3))
#: Dropout 0.5 before the head alone chose the smallest rate of the default grid: one step lower.
_DROPOUT_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Badly scaled initializations can need small rates: the grid reaches down to 0.001.
_INIT_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _bn(arm: Arm, **changes) -> Arm:
    return arm.replace(norm="batch", **changes)


def _scaled_grid(batch_size: int) -> tuple[float, ...]:
    """Six rates about 3x apart (0.003 to 1 at batch 32), scaled by sqrt(B / 32)."""
    scale = (batch_size / 32) ** 0.5
    return tuple(float(f"{g * scale:.3g}") for g in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0))


def _experiments() -> list[Experiment]:
    small = dict(data="small500", batch_size=50, epochs=100, lr_grid=_WIDE_GRID, measure=())
    reg = MLP.replace(**small)
    sigmoid = MLP.replace(hidden=(100, 100, 100), activation="sigmoid", epochs=120,
                          lr_grid=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
                          measure=("grad_noise", "jitter"))
    deep = MLP.replace(hidden=(64,) * 16, epochs=60, lr_grid=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
                       measure=())
    sizes = (2, 8, 32, 128)
    return [
        Experiment(
            "mlp_bn", "MLP: BN vs no BN",
            (("none", MLP), ("batch", _bn(MLP))),
            notes="Speed (steps to a validation target), final accuracy and training loss at "
                  "convergence, gradient noise, and how exactly trained BN layers standardize.",
        ),
        Experiment(
            "cnn_bn", "1-D CNN: BN vs no BN",
            (("none", CNN), ("batch", _bn(CNN))),
            notes="As mlp_bn, for the CNN (30 epochs: it converges sooner).",
        ),
        Experiment(
            "lr_sweep", "accuracy against the learning rate",
            (("mlp_none", MLP.replace(lr_grid=_WIDE_GRID)),
             ("mlp_batch", _bn(MLP, lr_grid=_WIDE_GRID)),
             ("cnn_none", CNN.replace(lr_grid=_WIDE_GRID)),
             ("cnn_batch", _bn(CNN, lr_grid=_WIDE_GRID))),
            sweep=True, converge=False,
            notes="Every learning rate of a wide grid on the 5 evaluation seeds: which rates "
                  "train, and how much accuracy each arm loses away from its best rate. Rates "
                  "at which training is unstable need not converge; the tuned arms of the "
                  "other experiments must.",
        ),
        Experiment(
            "init_scale", "MLP: weight initialization with and without BN",
            tuple(
                (f"{norm}_{label}", MLP.replace(norm=norm, lr_grid=_INIT_GRID, **kw))
                for norm in ("none", "batch")
                for label, kw in (("std1e-3", dict(init="normal", init_std=1e-3)),
                                  ("std1e-2", dict(init="normal", init_std=1e-2)),
                                  ("std1e-1", dict(init="normal", init_std=1e-1)),
                                  ("std1", dict(init="normal", init_std=1.0)),
                                  ("default", {}),
                                  ("xavier", dict(init="xavier")),
                                  ("he", dict(init="he")))
            ),
            notes="Every weight (head included) drawn from N(0, std^2), or PyTorch's default, "
                  "Xavier or He initialization; each arm tuned.",
        ),
        Experiment(
            "deep_mlp", "16-layer MLP: gradient flow at initialization and trainability",
            (("none", deep), ("batch", _bn(deep)), ("none_he", deep.replace(init="he")),
             ("none_at_init", deep.replace(task="grad_flow", lr_grid=())),
             ("batch_at_init", _bn(deep, task="grad_flow", lr_grid=())),
             ("none_he_at_init", deep.replace(task="grad_flow", init="he", lr_grid=()))),
            edge_ok=("none",),
            notes="Per-layer gradient norms at initialization (first over last hidden layer), "
                  "and final accuracy after 60 epochs. Without BN and with PyTorch's default "
                  "initialization no rate of the grid trains (all tie at chance; the smallest "
                  "is kept).",
        ),
        Experiment(
            "placement", "BN before or after the activation",
            (("mlp_before", _bn(MLP)), ("mlp_after", _bn(MLP, norm_position="after")),
             ("cnn_before", _bn(CNN)), ("cnn_after", _bn(CNN, norm_position="after"))),
        ),
        Experiment(
            "ics", "internal covariate shift: sigmoid MLP with BN, noisy BN, no BN",
            (("none", sigmoid), ("batch", _bn(sigmoid)), ("noisy", sigmoid.replace(norm="noisy"))),
            notes="Noisy BN (Santurkar et al. 2018) injects a random shift and scale after every "
                  "BN layer at every step; jitter measures how much the last hidden layer's "
                  "output distribution moves per step. 120 epochs: sigmoid nets converge slowly.",
        ),
        Experiment(
            "regularization", "500 training examples: BN, its noise, gamma, dropout, weight decay",
            (("none", reg), ("batch", _bn(reg)),
             ("ghost10", reg.replace(norm="ghost:10")), ("ghost5", reg.replace(norm="ghost:5")),
             ("ghost2", reg.replace(norm="ghost:2")),
             ("population", reg.replace(norm="population")),
             ("gamma0.2", _bn(reg, gamma_init=0.2)), ("gamma5", _bn(reg, gamma_init=5.0)),
             ("gamma_fixed", _bn(reg, gamma_trainable=False)),
             ("dropout", reg.replace(dropout=0.3)), ("wd", reg.replace(weight_decay=5e-3)),
             ("dropout_wd", reg.replace(dropout=0.3, weight_decay=5e-3)),
             ("batch_dropout_wd", _bn(reg, dropout=0.3, weight_decay=5e-3))),
            tuning_seeds=(100, 101, 102, 103, 104),
            notes="Batch 50, 100 epochs (1000 steps). Ghost batches add batch noise, "
                  "population statistics remove most of it; gamma starts at 0.2 or 5 or is "
                  "frozen at 1. Five tuning seeds: on 500 examples single runs are noisy, the "
                  "validation accuracy is flat over a decade of rates, and with two or three "
                  "seeds a lucky run decided the rate (ghost 10 or BN at 1.0). The wide grid: "
                  "BN nets here prefer rates at which they no longer fit the training set.",
        ),
        Experiment(
            "batch_size", "MLP: batch size against normalization, equal epochs",
            tuple(
                (f"{norm}_b{b}", MLP.replace(norm=norm, batch_size=b, epochs=20,
                                             lr_grid=_scaled_grid(b), measure=()))
                for norm in ("none", "batch", "group", "layer") for b in sizes
            ),
            tuning_seeds=(100,), edge_ok=("layer_b2",),
            notes="20 epochs at every batch size (equal samples, so batch 2 takes 64 times the "
                  "steps of batch 128); learning-rate grids scaled by sqrt(B / 32). One tuning "
                  "seed per rate: batch-2 runs are the most expensive of the course. LayerNorm "
                  "at batch 2 ties at its smallest and its third rate (validation accuracy flat "
                  "over the three smallest); ties keep the smaller rate.",
        ),
        Experiment(
            "cnn_batch_size", "CNN: batch 2 against batch 32, equal epochs",
            tuple(
                (f"{norm}_b{b}", CNN.replace(norm=norm, batch_size=b, epochs=10,
                                             lr_grid=_scaled_grid(b), measure=()))
                for norm in ("none", "batch") for b in (2, 32)
            ),
            tuning_seeds=(100,),
            notes="10 epochs at both batch sizes (equal samples); one tuning seed per rate.",
        ),
        Experiment(
            "seq_norms", "tiny transformer on padded sequences: BN, LN, RMSNorm, DyT",
            tuple((n, TRANSFORMER.replace(norm=n)) for n in ("batch", "layer", "rms", "dyt")),
            notes="Notebook 08. MNIST-1D signals cut to 16-40 values and zero-padded to 40; "
                  "test_short_acc re-cuts the test signals to 6-15 values, more padding than "
                  "any training batch had. BN is nn.BatchNorm1d over the token features, as "
                  "dropped into a transformer: its statistics include the padded positions.",
        ),
        Experiment(
            "no_norm", "deep residual MLP without normalization: BN, none, SkipInit",
            tuple((n, RESMLP.replace(norm=n)) for n in ("batch", "none", "skipinit")),
            notes="Notebook 08. 16 residual blocks; no norm with PyTorch's default "
                  "initialization, and SkipInit (a learned branch scale starting at 0).",
        ),
        Experiment(
            "no_norm_batch2", "residual MLP at batch 2: BN against weight standardization + GN",
            tuple((n, RESMLP.replace(norm=v, batch_size=2, epochs=4,
                                     lr_grid=(0.0003, 0.001, 0.003, 0.01, 0.03)))
                  for n, v in (("batch_b2", "batch"), ("ws_group_b2", "ws_group"))),
            tuning_seeds=(100,), converge=False,
            notes="Notebook 08. An equal, short budget (4 epochs = 6400 steps of 2); one "
                  "tuning seed per rate, as the other batch-2 sweeps.",
        ),
        Experiment(
            "shift", "distribution shift: as trained, test-batch statistics, AdaBN, TENT",
            tuple((f"{m}_{n}", base.replace(norm=n, measure=("shift",)))
                  for m, base in (("mlp", MLP), ("cnn", CNN)) for n in ("none", "batch")),
            notes="Notebook 09. Each trained model is tested on fresh MNIST-1D draws with more "
                  "noise, larger translations, or a gain and offset (three strengths each); BN "
                  "models also with each test-time fix, in test batches of 100. TENT's rate "
                  "(Adam, one online pass) is chosen per shifted set on 800 other shifted "
                  "examples.",
        ),
        Experiment(
            "accumulation", "gradient accumulation against a true large batch and ghost BN",
            (("batch_b64", _bn(MLP, measure=())),
             ("batch_accum16x4", _bn(MLP, measure=(), accumulate=16)),
             ("ghost4_b64", MLP.replace(norm="ghost:4", measure=())),
             ("batch_b4", _bn(MLP, measure=(), batch_size=4,
                              lr_grid=(0.000354, *_scaled_grid(4)))),
             ("none_b64", MLP.replace(measure=())),
             ("none_accum16x4", MLP.replace(measure=(), accumulate=16))),
            notes="Notebook 09. Batch 64 as 16 accumulated micro-batches of 4: the gradient of "
                  "the batch of 64 without BN, but BN's statistics of 4 (as ghost BN of 4). "
                  "Batch 4 without accumulation trains the same 40 epochs in 16 times the steps; "
                  "its grid (scaled by sqrt(4 / 32)) reaches one step lower, where it chose the "
                  "smallest rate of the scaled grid.",
        ),
        Experiment(
            "finetune", "fine-tuning a pre-trained BN MLP on new classes with batch 10",
            tuple((v, _bn(MLP, measure=(), finetune=v, batch_size=10, epochs=30,
                          lr_grid=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3)))
                  for v in ("train", "no_grad", "frozen", "bn_only", "head_only")),
            notes="Notebook 09. Pre-trained on classes 0-4 (40 epochs, batch 64, rate 0.1), "
                  "then a fresh head and 30 epochs on 20 examples of each of classes 5-9 in "
                  "batches of 10; tested on classes 5-9. BN in training mode, its weight and "
                  "bias requires_grad_(False) only, frozen (eval mode, no gradient), only BN's "
                  "weight and bias and the head trained, only the head trained.",
        ),
        Experiment(
            "dropout_bn", "dropout before BN: the variance shift",
            tuple((n, _bn(MLP, measure=("variance_shift",), lr_grid=_DROPOUT_GRID, **kw))
                  for n, kw in (("batch", {}), ("dropout_every", dict(dropout=0.5)),
                                ("dropout_last", dict(dropout=0.5, dropout_position="last")))),
            notes="Notebook 09. Dropout 0.5 after every hidden block (so before the next BN), "
                  "or only after the last one (no BN follows it). The variance shift is each "
                  "BN's running variance over its input's variance at inference; the fix "
                  "re-estimates the statistics with dropout off (precise BN).",
        ),
        Experiment(
            "batch_stats", "error of the batch statistics against batch size",
            (("mlp", MLP.replace(task="batch_stats", lr_grid=(), measure=())),),
            notes="First-layer pre-activations of an untrained MLP on the training split; "
                  "200 random batches per size.",
        ),
        Experiment(
            "flops", "FLOPs per signal at inference",
            tuple((f"{m}_{n}", base.replace(task="flops", norm=n, lr_grid=(), measure=()))
                  for m, base in (("mlp", MLP), ("cnn", CNN)) for n in ("none", "batch")),
        ),
    ]


def registry() -> dict[str, Experiment]:
    """Name -> :class:`~bncourse.experiments.config.Experiment`, in the course's order."""
    return {e.name: e for e in _experiments()}

"""MNIST-1D, generated locally and cached safely, and the batch orders the course trains with.

MNIST-1D (Greydanus 2020) is a 1-D, 40-sample analogue of MNIST: ten classes, 4000 training and
1000 test examples, small enough that a CPU trains an MLP on it in seconds, hard enough that
architectures (and normalization) differ. :func:`load_mnist1d` builds it with the ``mnist1d``
package's generator -- never its downloader -- so the course runs offline.

Caching, from fastest to slowest:

1. an in-process memo: a second call in the same kernel is instant;
2. a ``.npz`` file (arrays only, read with ``allow_pickle=False``) in the cache directory;
3. generation (about 2 s), after which the file is written atomically.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from bncourse._validation import check_int

__all__ = [
    "MNIST1D", "load_mnist1d", "batches", "check_batch_args", "default_cache_dir", "BATCH_ORDERS",
    "SHIFTS", "shifted_test_set",
]

#: Bump when the cached arrays change meaning (names, dtypes, preprocessing).
_FORMAT_VERSION = 1
_ENV_CACHE_DIR = "BNCOURSE_CACHE_DIR"
#: mnist1d's default seed, pinned here so a cache hit need not import mnist1d (and scipy).
_GENERATOR_SEED = 42
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_SHAPES = {"x_train": (4000, 40), "y_train": (4000,), "x_test": (1000, 40), "y_test": (1000,)}
_DTYPES = {"x_train": np.float32, "y_train": np.int64, "x_test": np.float32, "y_test": np.int64}

BATCH_ORDERS = ("iid", "class_sorted")


class MNIST1D(NamedTuple):
    """The MNIST-1D train/test split as CPU tensors.

    Attributes:
        x_train: (4000, 40) float32, centred and scaled to unit standard deviation overall.
        y_train: (4000,) int64 labels in 0..9.
        x_test: (1000, 40) float32.
        y_test: (1000,) int64.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


# seed -> arrays; the memo holds numpy arrays and every call gets fresh tensors, so a caller
# that modifies its tensors in place cannot corrupt what the next call returns.
_MEMO: dict[int, dict[str, np.ndarray]] = {}


def default_cache_dir() -> Path:
    """``$BNCOURSE_CACHE_DIR`` if set, else the platform's user cache dir for ``bncourse``."""
    env = os.environ.get(_ENV_CACHE_DIR)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("bncourse"))


def _cache_file(cache_dir: Path, seed: int) -> Path:
    return cache_dir / f"mnist1d_v{_FORMAT_VERSION}_seed{seed}.npz"


def _make_dataset(**overrides) -> dict:
    """The mnist1d generator with its default arguments but ``overrides``, run without
    disturbing the caller's global RNG streams."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # 5000 samples, train_split 0.8
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise ValueError(f"expected an argument of the mnist1d generator (got {key!r})")
        setattr(args, key, value)
    # make_dataset reseeds the global `random` and `np.random` states (mnist1d.utils.set_seed);
    # restore both so loading data never changes a learner's random numbers
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        return make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002


def _generate(seed: int) -> dict[str, np.ndarray]:
    """The course's data set: the generator's defaults but ``seed``."""
    raw = _make_dataset(seed=seed)
    return {
        "x_train": np.ascontiguousarray(raw["x"], dtype=np.float32),
        "y_train": np.ascontiguousarray(raw["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(raw["x_test"], dtype=np.float32),
        "y_test": np.ascontiguousarray(raw["y_test"], dtype=np.int64),
    }


SHIFTS = ("noise", "translation", "gain")
SHIFT_SEED = 7   # a generator seed other than the course's: fresh examples, never trained on


def shifted_test_set(shift: str, strength: float, n: int = 1000) -> tuple[Tensor, Tensor]:
    """``n`` fresh MNIST-1D examples ``(x (n, 40), y (n,))`` from a shifted distribution, for
    notebook 09. ``strength`` 0 is the training distribution (new draws); larger is further:

    * ``"noise"``: i.i.d. Gaussian noise of standard deviation ``strength`` added to the
      standardized signals (a noisier sensor);
    * ``"translation"``: its largest random shift of the pattern, ``1 + strength`` times;
    * ``"gain"``: the standardized signals scaled by ``1 + strength`` and offset by
      ``strength`` (a sensor's gain and bias drift).

    Deterministic (its own generator seed); the global RNG states are left as they were.
    """
    if shift not in SHIFTS:
        raise ValueError(f"expected shift to be one of {SHIFTS} (got {shift!r})")
    if not strength >= 0:
        raise ValueError(f"expected strength >= 0 (got {strength})")
    from mnist1d.data import get_dataset_args

    base = get_dataset_args()
    overrides = {"num_samples": n, "train_split": 1.0, "seed": SHIFT_SEED}
    if shift == "translation":
        overrides.update(max_translation=int(round(base.max_translation * (1 + strength))))
    raw = _make_dataset(**overrides)
    x = torch.tensor(np.asarray(raw["x"], dtype=np.float32))
    if shift == "gain":
        x = x * (1 + strength) + strength
    elif shift == "noise":
        g = torch.Generator().manual_seed(SHIFT_SEED)
        x = x + strength * torch.randn(x.shape, generator=g)
    return x, torch.tensor(np.asarray(raw["y"], dtype=np.int64))


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` if the file is missing, unreadable or malformed."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _KEYS}
    except Exception:  # truncated zip, bad header, missing key, ...: regenerate instead
        return None
    for k, a in arrays.items():
        if a.shape != _SHAPES[k] or a.dtype != _DTYPES[k]:
            return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes atomically: a temp file in the same directory, then ``os.replace``.

    Two processes may both generate and write; each rename is atomic, so a reader sees either
    no file or a complete one. A cache that cannot be written only costs a warning.
    """
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=path.stem + ".", suffix=".tmp", delete=False
        ) as f:
            tmp_name = f.name
            np.savez(f, **arrays)  # to a file object, so numpy does not append ".npz"
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        warnings.warn(f"could not write the MNIST-1D cache {path} ({e})", stacklevel=3)
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def load_mnist1d(cache_dir: str | os.PathLike | None = None) -> MNIST1D:
    """Loads MNIST-1D with the generator's default arguments (5000 samples, 80/20 split, seed 42).

    Deterministic: every call, in every process, returns the same arrays. The global ``random``
    and ``np.random`` states are left as they were. Once a process has loaded the data, the
    in-process memo answers later calls, whatever their ``cache_dir``.

    Args:
        cache_dir: directory of the ``.npz`` cache. Default: ``$BNCOURSE_CACHE_DIR`` if set,
            else ``platformdirs.user_cache_dir("bncourse")``.

    Returns:
        An :class:`MNIST1D` of fresh CPU tensors (modifying them does not affect later calls).
    """
    seed = _GENERATOR_SEED
    arrays = _MEMO.get(seed)
    if arrays is None:
        path = _cache_file(Path(cache_dir) if cache_dir is not None else default_cache_dir(), seed)
        arrays = _read_cache(path)
        if arrays is None:
            arrays = _generate(seed)
            _write_cache(path, arrays)
        _MEMO[seed] = arrays
    return MNIST1D(*(torch.tensor(arrays[k]) for k in _KEYS))  # torch.tensor copies


def check_batch_args(x: Tensor, y: Tensor, batch_size: int, order: str) -> None:
    """Checks ``(x, y, batch_size, order)`` as :func:`batches` and :func:`bncourse.train.train`
    take them; raises ``ValueError`` in PyTorch's expected/got style."""
    if x.dim() < 1 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            "expected x of shape (N, *) and y of shape (N,) "
            f"(got x {tuple(x.shape)}, y {tuple(y.shape)})"
        )
    check_int("batch_size", batch_size)
    if not 1 <= batch_size <= x.shape[0]:
        raise ValueError(
            f"expected 1 <= batch_size <= {x.shape[0]} (the number of examples) "
            f"(got batch_size={batch_size})"
        )
    if order not in BATCH_ORDERS:
        raise ValueError(f"expected order to be one of {BATCH_ORDERS} (got {order!r})")


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    order: str = "iid",
    seed: int = 0,
    drop_last: bool = True,
) -> tuple[Tensor, Tensor]:
    """One epoch of pre-batched examples (no DataLoader: a single gather, then a view).

    Args:
        x: (N, *) inputs.
        y: (N,) integer labels.
        batch_size: B, examples per batch, ``1 <= B <= N``.
        order: ``"iid"``: a random permutation. ``"class_sorted"``: the classic non-i.i.d.
            failure case -- examples shuffled within each class, then sorted by label, and the
            batches kept in label order, so each batch holds one class (two at a class border).
        seed: seeds the ``torch.Generator`` of the permutation; same seed, same batches.
        drop_last: only ``True`` is supported (the last ``N % B`` examples of the order are
            dropped); ``False`` is accepted when ``B`` divides ``N``, where the two agree.

    Returns:
        ``(xb, yb)`` of shapes (N // B, B, *) and (N // B, B), on ``x``'s and ``y``'s devices.

    Examples::

        >>> xb, yb = batches(torch.randn(10, 3), torch.arange(10), 4, seed=1)
        >>> xb.shape, yb.shape
        (torch.Size([2, 4, 3]), torch.Size([2, 4]))
    """
    check_batch_args(x, y, batch_size, order)
    n = x.shape[0]
    if not drop_last and n % batch_size:
        raise ValueError(
            "expected drop_last=True, or a batch_size that divides the number of examples "
            f"(got drop_last=False, batch_size={batch_size}, N={n})"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)                             # (N,) on the CPU
    if order == "class_sorted":
        labels = y.detach().cpu()[perm]
        perm = perm[torch.argsort(labels, stable=True)]  # stable: keeps the within-class shuffle
    num_batches = n // batch_size
    idx = perm[: num_batches * batch_size].to(x.device)
    xb = x[idx].reshape(num_batches, batch_size, *x.shape[1:])       # (nb, B, *)
    yb = y[idx.to(y.device)].reshape(num_batches, batch_size)         # (nb, B)
    return xb, yb

"""The hand-fused C kernels behind :class:`bncourse.nn.FusedBatchNorm`, built on first use.

``bn_kernel.c`` ships with the package. The first call for a dtype compiles it with the machine's
C compiler (``$CC``, ``cc``, ``gcc`` or ``clang``; ``-O3 -march=native``, OpenMP where the
compiler has it, one thread otherwise) into a shared library in the cache directory
(``$BNCOURSE_CACHE_DIR``, else the platform's user cache dir), named by a hash of the source, the
flags, the compiler and the CPU, so a changed source or another machine builds afresh. The file
is written atomically (a temporary file, then ``os.replace``) and loaded with :mod:`ctypes`.
A build takes about a second; every later process loads the cached file.

Inputs: contiguous float32 or float64 CPU tensors viewed as (N, C, L), L = 1 for (N, C). The
statistics come back in float64.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["KernelUnavailable", "affine", "backward", "library", "supports", "train"]

SOURCE = Path(__file__).with_name("bn_kernel.c")
_C_TYPES = {torch.float32: "float", torch.float64: "double"}
#: flag sets tried in turn: the first that builds is used
FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-march=native", "-fopenmp-simd"),       # no OpenMP runtime: one thread
    ("-O3",),
)
BUILD_TIMEOUT_S = 300


class KernelUnavailable(RuntimeError):
    """No C compiler, or none that builds ``bn_kernel.c`` here."""


def supports(x: Tensor) -> bool:
    """Whether the kernels take ``x``: a float32 or float64 CPU tensor with a batch and a
    channel dim (any memory layout: it is made contiguous)."""
    return x.device.type == "cpu" and x.dtype in _C_TYPES and x.dim() >= 2


def _compiler() -> str:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise KernelUnavailable("no C compiler found (tried $CC, cc, gcc, clang)")


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _cache_dir() -> Path:
    from bncourse.data import default_cache_dir

    return default_cache_dir() / "kernels"


def _build(dtype: torch.dtype) -> Path:
    """The shared library for ``dtype``, compiled unless the cache holds it."""
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    source = SOURCE.read_bytes()
    errors = []
    for flags in FLAG_SETS:
        args = [*flags, "-std=gnu11", "-shared", "-fPIC", f"-Dscalar_t={_C_TYPES[dtype]}"]
        key = hashlib.sha256(b"\0".join(
            [source, " ".join(args).encode(), cc.encode(), version.encode(), _cpu_id().encode()]
        )).hexdigest()[:16]
        path = _cache_dir() / f"bn_kernel_{_C_TYPES[dtype]}_{key}.so"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        os.close(fd)
        try:
            run = subprocess.run([cc, *args, str(SOURCE), "-o", tmp, "-lm"], capture_output=True,
                                 text=True, timeout=BUILD_TIMEOUT_S)
            if run.returncode == 0:
                os.replace(tmp, path)
                return path
            errors.append(f"{' '.join(flags)}: {run.stderr.strip()[-300:]}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise KernelUnavailable(f"{cc} could not build {SOURCE.name}: " + " | ".join(errors))


_I64, _PTR, _INT, _DOUBLE = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_SIGNATURES = {
    "bn_train": [_PTR, _PTR, _PTR, _I64, _I64, _I64, _DOUBLE, _INT, _PTR, _PTR, _PTR, _PTR,
                 _PTR, _PTR, _DOUBLE],
    "bn_backward": [_PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _INT, _PTR, _PTR, _PTR],
    "bn_affine": [_PTR, _PTR, _PTR, _I64, _I64, _I64, _INT, _PTR],
}
_LIBRARIES: dict[torch.dtype, ctypes.CDLL] = {}
_LOCK = threading.Lock()


def library(dtype: torch.dtype) -> ctypes.CDLL:
    """The loaded kernels for ``dtype`` (float32 or float64), built on first use.

    Raises:
        KernelUnavailable: no C compiler, or the build or the load failed (the reason says which).
    """
    with _LOCK:
        if dtype not in _LIBRARIES:
            path = _build(dtype)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise KernelUnavailable(f"could not load {path}: {exc}") from exc
            for name, argtypes in _SIGNATURES.items():
                getattr(lib, name).argtypes = argtypes
                getattr(lib, name).restype = _INT if name != "bn_affine" else None
            _LIBRARIES[dtype] = lib
        return _LIBRARIES[dtype]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _dims(x: Tensor) -> tuple[int, int, int]:
    n, c = x.shape[:2]
    return n, c, x.numel() // (n * c)


def _vector(v: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``v`` as a contiguous vector of ``dtype`` (itself when it is one: only its pointer is
    read, so a parameter needs no detached copy)."""
    if v is None or (v.dtype == dtype and v.is_contiguous()):
        return v
    return v.detach().to(dtype).contiguous()


def _rows(t: Tensor) -> list[int]:
    """Pointers to the rows of a contiguous 2-D tensor (no views made: each costs a call)."""
    step = t.stride(0) * t.element_size()
    return [t.data_ptr() + i * step for i in range(t.shape[0])]


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("bn_kernel: out of memory for its per-thread sums")


def train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
          running_mean: Tensor | None = None, running_var: Tensor | None = None,
          factor: float = 0.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training forward. ``x`` (N, C, *) -> (y like x, mean (C,), biased var (C,),
    1 / sqrt(var + eps) (C,)); the three vectors in float64.

    With ``running_mean`` and ``running_var`` (contiguous (C,) tensors of ``x``'s dtype), also
    blends the batch's mean and unbiased variance into them in place, in the same call:
    ``running += factor * (batch - running)``."""
    x = x.contiguous()
    n, c, length = _dims(x)
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and not (r.dtype == x.dtype and r.is_contiguous() and r.shape == (c,)):
            raise ValueError(f"expected {name} to be a contiguous ({c},) tensor of dtype "
                             f"{x.dtype} (got shape {tuple(r.shape)}, dtype {r.dtype}, "
                             f"contiguous={r.is_contiguous()})")
    y = torch.empty_like(x)
    stats = torch.empty(3, c, dtype=torch.float64)
    w, b = _vector(weight, x.dtype), _vector(bias, x.dtype)
    both = running_mean is not None and running_var is not None
    _check(library(x.dtype).bn_train(
        _ptr(x), _ptr(w), _ptr(b), n, c, length, eps, torch.get_num_threads(), _ptr(y),
        *_rows(stats), _ptr(running_mean) if both else None,
        _ptr(running_var) if both else None, factor))
    return y, stats[0], stats[1], stats[2]


def backward(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None,
             need_dx: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    """Backward of :func:`train`: ``(dx or None, sum dy, sum dy (x - mean))``, the sums (C,)
    float64 (the bias's and, times ``invstd``, the weight's gradient)."""
    dy, x = dy.contiguous(), x.contiguous()
    n, c, length = _dims(x)
    dx = torch.empty_like(x) if need_dx else None
    sums = torch.empty(2, c, dtype=torch.float64)
    w = _vector(weight, x.dtype)        # named: a temporary would be freed before the call
    _check(library(x.dtype).bn_backward(
        _ptr(dy), _ptr(x), _ptr(mean), _ptr(invstd), _ptr(w), n, c, length,
        torch.get_num_threads(), _ptr(dx), *_rows(sums)))
    return dx, sums[0], sums[1]


def affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Eval forward: ``y = x * scale + shift`` per channel; ``scale``, ``shift`` (C,)."""
    x = x.contiguous()
    n, c, length = _dims(x)
    y = torch.empty_like(x)
    a, b = _vector(scale, x.dtype), _vector(shift, x.dtype)
    library(x.dtype).bn_affine(_ptr(x), _ptr(a), _ptr(b), n, c, length,
                               torch.get_num_threads(), _ptr(y))
    return y

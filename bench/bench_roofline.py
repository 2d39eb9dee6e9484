"""BN against the memory roofline: how far each implementation is from the time its bytes need.

    python bench/bench_roofline.py [--rounds 9] [--min-run-time 0.2]

The machine's achievable memory bandwidth is measured with a copy and a multiplication (each
reads and writes every value once). Each BN variant must move at least (float32, N values, the
(C,) vectors neglected):

* training forward: 3 N values (read ``x`` for the statistics, read it again to normalize,
  write ``y``);
* backward: 5 N values (read ``dy`` and ``x`` for the two sums, read them again and write
  ``dx``);
* eval forward: 2 N values (read ``x``, write ``y``).

Time / (bytes / bandwidth) is each variant's multiple of its memory-bound limit. Variants:
PyTorch's native kernel (``nn.BatchNorm1d/2d``), the course's eager :class:`bncourse.nn.BatchNorm`,
and the hand-fused :class:`bncourse.nn.FusedBatchNorm` (its first call builds the C kernels into
a fresh cache directory: that build time is reported separately). The forward + backward
computes every gradient a layer inside a network needs: the input's and the parameters'.

Allocator: every variant allocates its output (and ``dx``) afresh on each call. With two such
buffers alive at once glibc's malloc returns them to the OS when they are freed, and the next call
page-faults them back in, or not, depending on the order of allocations rather than on the
kernel (one probe saw a few hundred faults per call for one variant and a few dozen for another).
The bench therefore keeps freed memory in the process (``mallopt``: trim threshold 1 GiB, mmap
threshold 32 MiB), as a training step with many live activations does, for all variants alike;
the settings and each candidate's page faults per call are stored with the results.

Medians of interleaved rounds after a warm-up, with the spread (min-max); every round is stored
with provenance in ``bncourse/results/bench/roofline.json``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import statistics
import tempfile
import time

# a fresh cache, so the first fused call's time is the build time (not a cache hit)
os.environ["BNCOURSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bncourse-bench-")

import torch  # noqa: E402
from _timing import Row, compare_rounds, store  # noqa: E402

from bncourse.nn import BatchNorm, FusedBatchNorm  # noqa: E402

SHAPES = ((32, 64, 32, 32), (4096, 1024))
#: glibc mallopt parameters (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD) and the values the bench sets
MALLOPT = {"M_TRIM_THRESHOLD": (-1, 1 << 30), "M_MMAP_THRESHOLD": (-3, 32 << 20)}
FAULT_CALLS = 20
#: values moved per element of x, at the least
VALUES_MOVED = {"train_forward": 3, "backward": 5, "forward_backward": 8, "eval": 2}
#: the issue's goals (bench, 2026-12-03)
GOAL_SPEEDUP_4D, GOAL_LIMIT_MULTIPLE = 1.3, 1.5


def _native(shape) -> torch.nn.Module:
    return (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[1])


VARIANTS = {"native": _native, "eager": lambda s: BatchNorm(s[1]),
            "fused": lambda s: FusedBatchNorm(s[1])}


def _bandwidth(x: torch.Tensor, rounds: int, min_run_time: float) -> dict[str, list[float]]:
    y = torch.empty_like(x)
    t = compare_rounds({"copy": lambda: y.copy_(x), "mul": lambda: torch.mul(x, 2.0, out=y)},
                       rounds, min_run_time)
    nbytes = 2 * x.numel() * x.element_size()
    return {k: [nbytes / s for s in v] for k, v in t.items()}


def _keep_freed_memory() -> dict[str, int]:
    """Sets :data:`MALLOPT` where the C library is glibc; returns the settings that took."""
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    if libc is None or not hasattr(libc, "mallopt"):
        return {}
    return {name: value for name, (param, value) in MALLOPT.items() if libc.mallopt(param, value)}


def _faults_per_call(fn) -> float:
    """Minor page faults per call of ``fn`` in steady state (after three calls that may grow the
    heap once)."""
    for _ in range(3):
        fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(FAULT_CALLS):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / FAULT_CALLS


def _candidates(shape, modules):
    x = torch.randn(shape)
    x_grad = x.clone().requires_grad_()       # a layer's input inside a network needs dx
    dy = torch.randn(shape)
    out = {}
    for name, bn in modules.items():
        def fwd(bn=bn):
            return bn.train()(x)

        def fwd_bwd(bn=bn):
            return torch.autograd.grad(bn.train()(x_grad), (x_grad, *bn.parameters()), dy)

        def ev(bn=bn):
            with torch.no_grad():
                return bn.eval()(x)

        out[f"{name}/train_forward"] = fwd
        out[f"{name}/forward_backward"] = fwd_bwd
        out[f"{name}/eval"] = ev
    return x, out


def measure(rounds: int, min_run_time: float) -> dict:
    results = {}
    for shape in SHAPES:
        key = "x".join(map(str, shape))
        modules = {n: make(shape) for n, make in VARIANTS.items()}
        x, candidates = _candidates(shape, modules)
        compile_s = {}
        for name, fn in candidates.items():       # warm-up; the first fused call builds
            start = time.perf_counter()
            fn()
            if name.startswith("fused"):
                compile_s[name.split("/")[1]] = time.perf_counter() - start
        faults = {name: _faults_per_call(fn) for name, fn in candidates.items()}
        bandwidth = _bandwidth(x, rounds, min_run_time)
        seconds = compare_rounds(candidates, rounds, min_run_time)
        results[key] = {"shape": list(shape), "bandwidth_bytes_per_s": bandwidth,
                        "seconds": seconds, "first_call_seconds": compile_s,
                        "page_faults_per_call": faults}
    return results


def _limit(result: dict, what: str) -> float:
    """Seconds the bytes of ``what`` need at the median copy bandwidth."""
    n = 1
    for d in result["shape"]:
        n *= d
    bandwidth = statistics.median(result["bandwidth_bytes_per_s"]["copy"])
    return VALUES_MOVED[what] * n * 4 / bandwidth


def report(results: dict) -> list[Row]:
    rows = []
    for key, r in results.items():
        med = {k: statistics.median(v) for k, v in r["seconds"].items()}
        bw = statistics.median(r["bandwidth_bytes_per_s"]["copy"]) / 1e9
        print(f"\n{key}: copy bandwidth {bw:.1f} GB/s; first fused calls (build) "
              + ", ".join(f"{k} {v:.1f} s" for k, v in r["first_call_seconds"].items()))
        print(f"{'variant / pass':<28}{'median ms':>10}{'spread ms':>16}{'x limit':>9}"
              f"{'faults':>8}")
        for name, times in r["seconds"].items():
            what = name.split("/")[1]
            print(f"{name:<28}{med[name] * 1e3:>10.3f}{min(times) * 1e3:>8.3f}-"
                  f"{max(times) * 1e3:<7.3f}{med[name] / _limit(r, what):>9.2f}"
                  f"{r['page_faults_per_call'][name]:>8.0f}")
        goal = f">= {GOAL_SPEEDUP_4D}x" if len(r["shape"]) == 4 else ">= 1.0x"
        rows.append(Row(f"native / fused fwd+bwd, {key}", med["native/forward_backward"],
                        med["fused/forward_backward"], goal))
        rows.append(Row(f"fused train forward / its memory limit, {key}",
                        med["fused/train_forward"], _limit(r, "train_forward"),
                        f"<= {GOAL_LIMIT_MULTIPLE}x" if len(r["shape"]) == 4 else "-"))
        rows.append(Row(f"native eval / its memory limit, {key}", med["native/eval"],
                        _limit(r, "eval")))
    return rows


def rows(rounds: int = 9, min_run_time: float = 0.2) -> list[Row]:
    start = time.perf_counter()
    mallopt = _keep_freed_memory()
    print(f"mallopt: {mallopt or 'not glibc, allocator left as it is'}")
    results = measure(rounds, min_run_time)
    path = store("roofline", {"rounds": rounds, "threads": torch.get_num_threads(),
                              "values_moved": VALUES_MOVED, "mallopt": mallopt,
                              "forward_backward_grads": "x, weight, bias",
                              "results": results},
                 time.perf_counter() - start)
    print(f"stored {path}")
    return report(results)


def main() -> None:
    from _timing import run_cli

    run_cli("BN against the memory roofline", [rows])


if __name__ == "__main__":
    main()

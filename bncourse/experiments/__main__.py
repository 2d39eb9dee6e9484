"""Command line: ``python -m bncourse.experiments {reproduce,list,check} ...``.

    reproduce [NAME ...] [--jobs N] [--scheduler ADDRESS] [--out DIR] [--no-cache]
        run the named experiments (default: all) and write OUT/NAME.json for each
    list
        every registered experiment: name, arms, jobs, and whether its stored result is fresh
    check
        exit 1 if a stored result is missing or its config hash differs from the registry's

``./course reproduce ...`` calls the first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bncourse.experiments.registry import registry
from bncourse.experiments.results import load_result, results_dir
from bncourse.experiments.runner import run_many, save


def _status(name: str) -> str:
    try:
        stored = load_result(name).config_hash
    except FileNotFoundError:
        return "missing"
    return "fresh" if stored == registry()[name].config_hash else "stale"


def _jobs(exp) -> int:
    n = 0
    for _, arm in exp.arms:
        lrs = len(arm.lr_grid) if arm.task == "train" else 1
        n += len(exp.seeds) * (lrs if exp.sweep else 1)
        n += 0 if exp.sweep or arm.task != "train" else lrs * len(exp.tuning_seeds)
    return n


def _reproduce(args) -> int:
    reg = registry()
    names = args.names or list(reg)
    unknown = [n for n in names if n not in reg]
    if unknown:
        print(f"unknown experiment(s) {unknown}; registered: {list(reg)}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(str(results_dir()))
    executor, client = None, None
    if args.scheduler:
        from dask.distributed import Client  # optional dependency: pip install bncourse[dask]

        client = Client(args.scheduler)
        executor = client.get_executor()
    start = time.perf_counter()
    try:
        results = run_many([reg[n] for n in names], executor=executor, jobs=args.jobs,
                           progress=not args.quiet, use_cache=not args.no_cache)
    finally:
        if client is not None:
            client.close()
    for r in results:
        path = save(r, out)
        print(f"wrote {path} ({r.provenance['job_seconds']:.0f} s of compute)")
    print(f"reproduced {len(results)} experiment(s) in {time.perf_counter() - start:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bncourse.experiments",
                                     description="the course's experiment registry")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run experiments and store their results")
    rep.add_argument("names", nargs="*", metavar="NAME")
    rep.add_argument("--jobs", type=int, default=None,
                     help="local worker processes (default: the CPU count)")
    rep.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the jobs on a Dask cluster (e.g. tcp://host:8786)")
    rep.add_argument("--out", metavar="DIR", help="where to write NAME.json (default: the "
                     "package's results folder)")
    rep.add_argument("--no-cache", action="store_true", help="neither read nor write the job cache")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("list", help="registered experiments and the state of their results")
    sub.add_parser("check", help="fail if a stored result is missing or stale")
    args = parser.parse_args(argv)

    if args.command == "reproduce":
        return _reproduce(args)
    reg = registry()
    if args.command == "list":
        for name, exp in reg.items():
            print(f"{name:<16} {len(exp.arms):>2} arms {_jobs(exp):>4} jobs  {_status(name):<8} "
                  f"{exp.title}")
        return 0
    bad = {n: s for n in reg if (s := _status(n)) != "fresh"}
    for n, s in bad.items():
        print(f"{n}: {s} (run ./course reproduce {n})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

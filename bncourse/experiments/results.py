"""Stored results: where they live, how they are written, and a small reader for notebooks.

Results are package data, ``bncourse/results/NAME.json``, read with :mod:`importlib.resources`:
every copy of a notebook finds them wherever ``bncourse`` is importable (the repository, a
student copy under ``build/``, an nbgrader folder, a wheel install). ``$BNCOURSE_RESULTS_DIR``
overrides the location (tests, or a sweep written elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from bncourse.experiments.jobs import CHANCE

__all__ = ["Result", "load_result", "load_bench", "results_dir", "write_json", "result_names"]

_ENV = "BNCOURSE_RESULTS_DIR"


def results_dir():
    """The results folder: ``$BNCOURSE_RESULTS_DIR`` if set, else the package's ``results``."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env)
    return resources.files("bncourse") / "results"


def result_names() -> list[str]:
    """Names of the stored results, sorted."""
    folder = results_dir()
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def write_json(path: str | os.PathLike, data) -> None:
    """Writes ``data`` as JSON atomically: a temporary file in the same folder, then
    ``os.replace``; a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Result:
    """A stored experiment result, with accessors that return numpy arrays over seeds.

    Attributes:
        data: the parsed JSON (see ``bncourse.experiments.runner`` for the layout).
    """

    def __init__(self, data: dict) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def arms(self) -> list[str]:
        return list(self.data["arms"])

    @property
    def config_hash(self) -> str:
        return self.data["config_hash"]

    @property
    def provenance(self) -> dict:
        return self.data["provenance"]

    def arm(self, name: str) -> dict:
        try:
            return self.data["arms"][name]
        except KeyError:
            raise KeyError(
                f"expected an arm of {self.name!r}, one of {self.arms} (got {name!r})") from None

    def runs(self, arm: str, lr: float | None = None) -> list[dict]:
        """The evaluation runs of ``arm`` (at the chosen learning rate, or at ``lr`` in a sweep),
        in seed order."""
        a = self.arm(arm)
        if lr is None:
            return a["runs"]
        runs = [r for r in a["sweep"] if r["lr"] == lr]
        if not runs:
            raise KeyError(f"expected lr to be one of {a['lr_grid']} (got {lr})")
        return runs

    def values(self, arm: str, key: str, lr: float | None = None) -> np.ndarray:
        """Per-seed values of metric ``key`` (dotted for nested, e.g. ``"jitter.all"``)."""
        out = []
        for run in self.runs(arm, lr):
            v = run
            for part in key.split("."):
                v = v[part]
            out.append(np.nan if v is None else v)
        return np.asarray(out, dtype=np.float64)

    def curves(self, arm: str, key: str = "val_acc_curve", lr: float | None = None) -> np.ndarray:
        """(seeds, epochs) per-epoch curve; a diverged run is at chance after it stops (accuracy
        curves) or NaN (others)."""
        runs = self.runs(arm, lr)
        length = max(len(r[key]) for r in runs)
        fill = CHANCE if key.endswith("acc_curve") else np.nan
        table = np.full((len(runs), length), fill)
        for i, r in enumerate(runs):
            table[i, : len(r[key])] = r[key]
        return table

    def chosen_lr(self, arm: str) -> float | None:
        return self.arm(arm).get("chosen_lr")

    def summary(self, arm: str) -> dict:
        return self.arm(arm)["summary"]

    def tuning_table(self, arm: str) -> list[dict]:
        """Rows ``{"lr", "val_acc": [per tuning seed], "mean"}`` of the learning-rate tuning."""
        return self.arm(arm)["tuning"]["table"]


def load_result(name: str) -> Result:
    """Loads ``NAME.json`` from :func:`results_dir`.

    Raises:
        FileNotFoundError: with the command that regenerates it.
    """
    path = results_dir() / f"{name}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no stored result {name!r} in {results_dir()}: run `./course reproduce {name}`"
        ) from None
    return Result(json.loads(text))


def load_bench(name: str) -> dict:
    """Loads a benchmark's stored rounds, ``bench/NAME.json`` under :func:`results_dir` (written
    by ``bench/bench_NAME.py``; timings are not registry experiments)."""
    path = results_dir() / "bench" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no stored benchmark {name!r} in {results_dir()}: run `./course bench`") from None

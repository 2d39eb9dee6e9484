"""The experiment registry: every verdict of the course comes from a named, frozen experiment.

An :class:`Experiment` is a frozen configuration (arms, seeds, learning-rate grids, budgets);
a job is the pure function :func:`run_job` ``(arm, seed, lr) -> metrics``. :func:`run` runs an
experiment's jobs on any ``concurrent.futures.Executor`` (local processes by default, a Dask
cluster's ``Client.get_executor()`` when a sweep outgrows one machine), caches finished jobs,
tunes each arm's learning rate on the validation split and returns a :class:`Result`;
``./course reproduce`` stores it as ``bncourse/results/NAME.json`` with its provenance.

Examples::

    >>> from bncourse.experiments import registry
    >>> exp = registry()["mlp_bn"]
    >>> [name for name, _ in exp.arms]
    ['none', 'batch']
    >>> len(exp.config_hash)
    16
"""

from bncourse.experiments.config import Arm, Experiment
from bncourse.experiments.jobs import run_job
from bncourse.experiments.registry import registry
from bncourse.experiments.results import Result, load_result, result_names, results_dir
from bncourse.experiments.runner import run, run_many, save

__all__ = [
    "Arm", "Experiment", "Result", "load_result", "registry", "result_names", "results_dir",
    "run", "run_job", "run_many", "save",
]

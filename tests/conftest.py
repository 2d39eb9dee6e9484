"""Shared test settings: a hypothesis profile fit for a 2-core CPU, and a cached MNIST-1D."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Tests build and run small torch models, whose first call can be slow: no deadline, and few
# enough examples that each property test takes about a second.
settings.register_profile(
    "bncourse",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("bncourse-ci", parent=settings.get_profile("bncourse"), derandomize=True)
settings.load_profile(os.environ.get("BNCOURSE_HYPOTHESIS_PROFILE", "bncourse"))


@pytest.fixture(scope="session")
def mnist1d_cache_dir(tmp_path_factory):
    """A private cache dir, generated into once per session, so tests never touch the user's."""
    return tmp_path_factory.mktemp("bncourse-cache")


@pytest.fixture(scope="session")
def mnist1d(mnist1d_cache_dir):
    """MNIST-1D, freshly generated (memo cleared) into :func:`mnist1d_cache_dir`."""
    from bncourse import data

    data._MEMO.clear()
    return data.load_mnist1d(mnist1d_cache_dir)

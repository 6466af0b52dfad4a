"""Shared test configuration: the backend fixtures, their per-backend markers, hypothesis profiles.

Backends (tests/backends.py discovers them): every test that takes ``backend`` runs once per
backend (NumPy, array-api-strict and its two simulated devices, torch, JAX behind the ``jax``
marker, torch:cuda and CuPy where a GPU is usable); ``torch_backend`` runs on the torch ones.
Leave a backend out declaratively, as SciPy's ``skip_xp_backends`` does::

    @pytest.mark.skip_backend("array_api_strict:no_float64", reason="float64 inputs")
    @pytest.mark.skip_backend("array_api_strict:no_float64", dtype="float64", reason="...")  # only then
    @pytest.mark.xfail_backend("jax", reason="...")  # strict: an unexpected pass fails

A marker with an unknown backend name, no reason, or on a test without a backend fixture is a
usage error at collection, never a silent no-op.

Hypothesis: HYPOTHESIS_PROFILE=ci (default: derandomised, fixed example counts), dev (fewer
examples) or thorough (many examples, for a nightly or a GPU machine).
"""

from __future__ import annotations

import os
import sys

import pytest
from backends import BACKEND_PARAMS, MARKERS, TORCH_PARAMS, Backend, backend_marks, resolve
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _share_cores_between_workers() -> None:
    """Under pytest-xdist (``-n auto`` in pyproject.toml), give each worker its share of the cores.

    Two workers with two threads each on two cores run slower than one worker alone (the threads
    spin against each other): each worker, and every process it starts, gets cores // workers
    threads. An explicit OMP_NUM_THREADS wins.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(workers))))
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    if "torch" in sys.modules:  # already imported: its pool was sized from the old environment
        sys.modules["torch"].set_num_threads(int(threads))


_share_cores_between_workers()


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every discovered backend (GPU ones skipped, or failed under HYPERZZW_REQUIRE_GPU=1)."""
    return resolve(request.param)


@pytest.fixture(params=TORCH_PARAMS)
def torch_backend(request: pytest.FixtureRequest) -> Backend:
    """The torch backends (CPU; CUDA where usable)."""
    return resolve(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Turn ``skip_backend``/``xfail_backend`` markers into skip/xfail marks on the matching items."""
    for item in items:
        markers = [m for name in MARKERS for m in item.iter_markers(name)]
        if not markers:
            continue
        callspec = getattr(item, "callspec", None)
        for mark in backend_marks(item.nodeid, markers, callspec.params if callspec else {}):
            item.add_marker(mark)

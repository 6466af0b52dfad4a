"""Timers: repetitions with medians, interleaved comparisons, peak memory of a fresh process."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Timing:
    """Wall-clock seconds of ``reps`` repetitions (after ``warmup`` untimed ones)."""

    median: float
    min: float
    max: float
    reps: int
    times: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timing(times: list[float]) -> Timing:
    return Timing(statistics.median(times), min(times), max(times), len(times), times)


def measure(
    fn: Callable[[], Any], *, reps: int = 5, warmup: int = 1, min_reps: int = 3, budget: float = 10.0
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``reps`` timed ones, stopping early
    (after ``min_reps``) once ``budget`` seconds have been spent."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < reps:
        gc.collect()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        times.append(dt)
        spent += dt
        if len(times) >= min_reps and spent > budget:
            break
    return _timing(times)


def best_and_median(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """(best, median) seconds of ``fn`` over ``reps`` timed calls after one warm-up, with no garbage
    collection between them (unlike :func:`measure`): for short calls repeated many times, such as
    the machine's limits and the kernel replays of ``benchmarks.floor``, where a collection before
    each would cost more than the calls."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def measure_interleaved(fns: dict[str, Callable[[], Any]], *, reps: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Time several alternatives in round-robin (A, B, A, B, …), so that a change of the machine's
    load during the measurement affects all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: _timing(v) for k, v in times.items()}


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        return (float("nan"),) * 3


def run_worker(args: list[str], timeout: float = 600.0) -> dict[str, Any]:
    """Run ``python -m benchmarks._worker ARGS`` in a fresh interpreter; return its JSON result.

    A fresh process (whose peak-RSS mark the worker resets after building its inputs) makes the peak
    resident memory a per-measurement number.
    """
    package = __package__ or "benchmarks"  # "benchmarks" from a checkout, "hyperzzw_core.benchmarks" installed
    # the top-level package is importable from the checkout's root only
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) if package == "benchmarks" else None
    proc = subprocess.run(
        [sys.executable, "-m", f"{package}._worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

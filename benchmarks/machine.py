"""The machine: its description and its own limits (large-matmul FLOP/s, large-copy bytes/s)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

from .timing import best_and_median, load_average


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return [x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if x in flags]
    except OSError:
        pass
    return []


def mem_total_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def describe() -> dict[str, Any]:
    """CPU model, cores, memory, library versions and thread counts."""
    import scipy
    import torch

    affinity: int | None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "mem_gib": round(mem_total_gib(), 1),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "cuda": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": load_average(),
    }
    try:
        import threadpoolctl

        info["numpy_blas"] = [
            f"{p['internal_api']} ({p['num_threads']} threads)"
            for p in threadpoolctl.threadpool_info()
            if p.get("user_api") == "blas"
        ]
    except ImportError:
        info["numpy_blas"] = []
    try:
        import cupy  # noqa: F401

        info["cupy"] = True
    except ImportError:
        info["cupy"] = False
    return info


def peaks(quick: bool = False) -> dict[str, Any]:
    """The machine's limits, measured now: large-matmul FLOP/s (torch and NumPy, float32 and
    float64) and large-copy bandwidth (bytes read + written per second, torch and NumPy).

    The best of the repetitions is the limit (the least disturbed run); the median is reported too.
    """
    import torch

    n = 1024 if quick else 2048
    reps = 3 if quick else 5
    out: dict[str, Any] = {"matmul_n": n}
    a: Any
    b: Any
    for lib in ("torch", "numpy"):
        for dt in ("float32", "float64"):
            if lib == "torch":
                a = torch.randn(n, n, dtype=getattr(torch, dt))
                b = torch.randn(n, n, dtype=getattr(torch, dt))
                fn = lambda a=a, b=b: torch.mm(a, b)  # noqa: E731
            else:
                a = np.random.default_rng(0).standard_normal((n, n)).astype(dt)
                b = np.random.default_rng(1).standard_normal((n, n)).astype(dt)
                fn = lambda a=a, b=b: a @ b  # noqa: E731
            best, med = best_and_median(fn, reps)
            out[f"{lib}_matmul_{dt}"] = 2.0 * n**3 / best
            out[f"{lib}_matmul_{dt}_median"] = 2.0 * n**3 / med
    nbytes = (64 if quick else 256) * 2**20
    src = torch.empty(nbytes // 4, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    best, med = best_and_median(lambda: dst.copy_(src), reps)
    out["copy_bytes"] = nbytes
    out["torch_copy"] = 2.0 * nbytes / best
    out["torch_copy_median"] = 2.0 * nbytes / med
    nsrc = np.random.default_rng(0).standard_normal(nbytes // 8)
    ndst = np.empty_like(nsrc)
    best, med = best_and_median(lambda: np.copyto(ndst, nsrc), reps)
    out["numpy_copy"] = 2.0 * nbytes / best
    out["numpy_copy_median"] = 2.0 * nbytes / med
    return out


def peak_for(peaks_: dict[str, Any], backend: str, dtype: str) -> tuple[float, float]:
    """(peak FLOP/s, peak bytes/s) that a measurement on ``backend`` in ``dtype`` is judged against."""
    lib = "torch" if backend.startswith("torch") else "numpy"
    return peaks_[f"{lib}_matmul_{dtype}"], peaks_[f"{lib}_copy"]

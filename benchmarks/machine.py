"""The machine: its description and its own limits (large-product FLOP/s, large-copy bytes/s).

torch reaches a CPU's float32 product rate by two libraries: its BLAS (``torch.mm``: MKL in the
x86 wheels) and oneDNN (its convolutions). They need not agree: on AMD processors MKL runs
its 256-bit kernels, while oneDNN uses AVX-512 where the processor has it. On the AMD EPYC
(Zen 5) of the thirteenth session ``torch.mm`` reached 205 GFLOP/s and oneDNN's 1×1
convolution 404 to 433 (docs/speed.md). The float32 product peak a measurement is judged against is
therefore the better of the two (:func:`product_peak`), not the BLAS alone.
"""

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

    from hyperzzw_core.backends import compiled_kernels, cpu_kernels_status

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
        "compiled_kernels": compiled_kernels(),
        "compiled_kernels_status": cpu_kernels_status(),
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
    float64), torch's oneDNN 1×1 convolution of the same FLOPs in float32 where torch has oneDNN
    (``torch_conv1x1_float32``, :func:`conv1x1_operands`), and large-copy bandwidth (bytes read + written
    per second, torch and NumPy).

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
    if torch.backends.mkldnn.is_available():
        x, w = conv1x1_operands(torch, n)
        best, med = best_and_median(lambda: torch.nn.functional.conv2d(x, w), reps)
        out["torch_conv1x1_float32"] = 2.0 * n**3 / best
        out["torch_conv1x1_float32_median"] = 2.0 * n**3 / med
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


def conv1x1_operands(torch: Any, n: int) -> tuple[Any, Any]:
    """The input and weight of a float32 1×1 convolution with the FLOPs of an n² matmul: n input and
    n output channels over n positions (an image of 32 × n/32; n a multiple of 32), the input
    channels-last (each position's channels contiguous: the layout in which the convolution is one
    product of the positions by the weight)."""
    x = torch.randn(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)
    return x, torch.randn(n, n, 1, 1)


def product_peak(peaks_: dict[str, Any], lib: str = "torch", dtype: str = "float32") -> float:
    """The FLOP/s of ``lib``'s fastest large product in ``dtype``: for torch float32 the better of
    ``torch.mm`` and oneDNN's 1×1 convolution (module docstring; a measurement made before the
    convolution was measured has the matmul only), else the matmul."""
    best = peaks_[f"{lib}_matmul_{dtype}"]
    return max(best, peaks_.get(f"{lib}_conv1x1_{dtype}", 0.0))


def peak_for(peaks_: dict[str, Any], backend: str, dtype: str) -> tuple[float, float]:
    """(peak FLOP/s, peak bytes/s) that a measurement on ``backend`` in ``dtype`` is judged against:
    :func:`product_peak` and the copy bandwidth."""
    lib = "torch" if backend.startswith("torch") else "numpy"
    return product_peak(peaks_, lib, dtype), peaks_[f"{lib}_copy"]

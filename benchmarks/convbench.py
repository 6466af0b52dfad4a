"""The measurement that sets the depth-wise convolution's direct/FFT threshold.

For torch on CPU (forward + backward, autograd) and NumPy (forward) in float32 and float64, the
direct path and the FFT path of ``hyperzzw_core._backend`` are timed interleaved over a grid of
input sizes H = W and kernel sizes k. The derived rule, per backend and dtype, is the smallest
kernel size from which the FFT wins at every measured H ≥ ``FFT_MIN_SPATIAL`` and every larger k;
it is compared with the constants in ``_backend.FFT_MIN_KERNEL``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hyperzzw_core import _backend as B

from .timing import measure_interleaved


def _pair(backend: str, dtype: str, b: int, c: int, h: int, k: int) -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng([b, c, h, k])
    y = rng.standard_normal((b, c, h, h)).astype(dtype)
    w = (rng.standard_normal((c, 1, k, k)) / k).astype(dtype)
    if backend == "numpy":
        import array_api_compat.numpy as xp

        be = B.backend(xp)
        return {"direct": lambda: be.depthwise_direct(xp, y, w), "fft": lambda: B.depthwise_conv_fft(xp, y, w)}
    import array_api_compat.torch as xpt
    import torch

    yt = torch.from_numpy(y).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    g = torch.from_numpy(rng.standard_normal((b, c, h, h)).astype(dtype))

    def direct() -> None:
        yt.grad = wt.grad = None
        B._torch_depthwise_direct(torch, yt, wt).backward(g)

    def fft() -> None:
        yt.grad = wt.grad = None
        B.depthwise_conv_fft(xpt, yt, wt).backward(g)

    return {"direct": direct, "fft": fft}


def sweep(quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time direct and FFT over (H, k) for every backend and dtype; derive the thresholds."""
    b, c = (2, 8) if quick else (8, 32)
    hs = [16] if quick else [8, 16, 32, 64]
    ks = [3, 13] if quick else [3, 5, 7, 9, 13, 17]
    reps = 2 if quick else 5
    rows: list[dict[str, Any]] = []
    for backend in ("torch-cpu", "numpy"):
        for dtype in ("float32", "float64"):
            for h in hs:
                for k in ks:
                    if k > 2 * h + 1:
                        continue
                    t = measure_interleaved(_pair(backend, dtype, b, c, h, k), reps=reps)
                    rows.append(
                        {
                            "backend": backend,
                            "dtype": dtype,
                            "B": b,
                            "C": c,
                            "H": h,
                            "k": k,
                            "mode": "fwd+bwd" if backend == "torch-cpu" else "fwd",
                            "direct": t["direct"].median,
                            "fft": t["fft"].median,
                        }
                    )
                    log(
                        f"  conv {backend:9s} {dtype:7s} H={h:<3d} k={k:<3d} direct {t['direct'].median * 1e3:8.2f} ms"
                        f"  fft {t['fft'].median * 1e3:8.2f} ms"
                    )
    derived = {}
    for backend in ("torch-cpu", "numpy"):
        for dtype in ("float32", "float64"):
            sel = [r for r in rows if r["backend"] == backend and r["dtype"] == dtype and r["H"] >= B.FFT_MIN_SPATIAL]
            kmin = None
            for k in sorted({r["k"] for r in sel}):
                if all(r["fft"] < r["direct"] for r in sel if r["k"] >= k):
                    kmin = k
                    break
            key = "torch-cpu" if backend == "torch-cpu" else "numpy"
            derived[f"{backend}/{dtype}"] = {"measured_min_k": kmin, "in_code": B.FFT_MIN_KERNEL[(key, dtype)]}
    return {"rows": rows, "derived": derived, "min_spatial": B.FFT_MIN_SPATIAL}

"""The CuPy backend: the fused CUDA kernels of :mod:`._cupy_kernels` on the hot paths.

Each fused kernel is numerically the generic formula to rounding (tests/test_cupy_adapter.py
compares the two on a GPU). Setting the environment variable ``HYPERZZW_CUPY_FUSED=0`` runs CuPy
through the generic array-API path instead (to bisect a GPU problem; the two must agree).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ._base import ArrayAPIBackend, as_matrices, from_matrices


def fused_kernels() -> Any:
    """The fused kernels module, or None when ``HYPERZZW_CUPY_FUSED=0`` (CuPy is imported already
    whenever a CuPy array was passed in, so this imports nothing new)."""
    if os.environ.get("HYPERZZW_CUPY_FUSED", "1") == "0":
        return None
    from . import _cupy_kernels

    return _cupy_kernels


#: The largest kernel size the fused direct convolution is tuned for (the local sizes 3-9).
FUSED_CONV_MAX_K = 9


class CuPyBackend(ArrayAPIBackend):
    """CuPy through ``array_api_compat.cupy``."""

    name: ClassVar[str] = "cupy"
    namespace_names: ClassVar[tuple[str, ...]] = ("cupy", "array_api_compat.cupy")
    module_names: ClassVar[tuple[str, ...]] = ("cupy", "array_api_compat.cupy")

    def standard_namespace(self, module: Any) -> Any:
        import array_api_compat.cupy as xp

        return xp

    def erf(self, xp: Any, x: Any) -> Any:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    def instance_standardize_fast(self, xp: Any, x: Any, eps: float) -> Any | None:
        kern = fused_kernels()
        return None if kern is None else kern.standardize(x, "instance", eps)

    def batch_standardize_fast(self, xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any | None:
        kern = fused_kernels()
        if kern is None or tuple(axes) != (0,) + tuple(range(2, x.ndim)):
            return None
        return kern.standardize(x, "batch", eps)

    def g_ibs_fast(self, xp: Any, x: Any, groups: int, eps: float) -> Any | None:
        kern = fused_kernels()
        return None if kern is None else kern.g_ibs(x, groups, eps)

    def gate_fast(self, xp: Any, x: Any, k_ss: Any, s_s: Any, k_cc: Any, s_c: Any) -> Any | None:
        kern = fused_kernels()
        return None if kern is None else kern.gate(x, k_ss, s_s, k_cc, s_c)

    def global_product(self, xp: Any, z: Any, k_g: Any, y: Any, grid: tuple[int, int] | None, zhat: Any = None) -> Any:
        """Z ⊙ K_g fused into the tiles of a batched matmul (``zhat`` is not needed)."""
        kern = fused_kernels()
        if kern is None:
            return super().global_product(xp, z, k_g, y, grid, zhat)
        k_full = as_matrices(xp, xp.broadcast_to(k_g, tuple(z.shape))[0:1, ...], grid)[0, ...]  # zero-padded in 1D
        return from_matrices(
            xp, kern.global_product(as_matrices(xp, z, grid), k_full, as_matrices(xp, y, grid)), tuple(z.shape)
        )

    def depthwise_conv(self, xp: Any, y: Any, k_l: Any) -> Any:
        """The fused direct kernel for k ≤ 9 (cupyx's ndimage/signal correlate lack a batched
        per-channel, groups=C, form); else the generic choice."""
        kern = fused_kernels()
        if kern is not None and max(k_l.shape[2:]) <= FUSED_CONV_MAX_K:
            return kern.depthwise_conv(y, k_l)
        return super().depthwise_conv(xp, y, k_l)

"""The NumPy backend: SciPy's special functions, per-sample GEMMs, a sliding-window convolution."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from ._base import FFT_MIN_KERNEL, FFT_MIN_SPATIAL, ArrayAPIBackend, dtype_name

_SUBSCRIPTS = "uvw"  # kernel axes of the windowed view (at most three spatial axes)


def sliding_window_correlate(y: Any, k_l: Any) -> Any:
    """Depth-wise 'same' cross-correlation as one contraction of all kernel axes at once.

    out[b,c,p] = Σ_o k_l[c,0,o]·y_pad[b,c,p+o] (spec §2.3): ``y_pad`` is zero-padded by
    (k−1)/2 per side, viewed (no copy) as windows (B, C, *S, *k) by
    ``numpy.lib.stride_tricks.sliding_window_view`` over every spatial axis, and contracted with the
    kernel (C, *k) by one ``einsum``. Written independently of the reference's ``_correlate``
    (which slides over the last axis only, one contraction per offset of the leading axes), so the
    differential test on NumPy compares two computations.
    """
    np = sys.modules["numpy"]
    ksize = tuple(int(k) for k in k_l.shape[2:])
    d = len(ksize)
    pads = [(0, 0), (0, 0)] + [((k - 1) // 2, (k - 1) // 2) for k in ksize]
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(y, pads), ksize, axis=tuple(range(2, 2 + d)))
    sp, kk = "xyz"[:d], _SUBSCRIPTS[:d]
    return np.einsum(f"bc{sp}{kk},c{kk}->bc{sp}", windows, k_l[:, 0])


class NumPyBackend(ArrayAPIBackend):
    """NumPy through ``array_api_compat.numpy``."""

    name: ClassVar[str] = "numpy"
    namespace_names: ClassVar[tuple[str, ...]] = ("numpy", "array_api_compat.numpy")
    module_names: ClassVar[tuple[str, ...]] = ("numpy", "array_api_compat.numpy")

    def standard_namespace(self, module: Any) -> Any:
        import array_api_compat.numpy as xp

        return xp

    def device(self, x: Any) -> Any:
        return "cpu"

    def owns_host_arrays(self, device: Any) -> bool:
        return device in (None, "cpu")

    def cache_key(self, key: tuple, dtype: Any, dev: Any) -> tuple | None:
        return ("numpy", key, dtype_name(dtype))

    def freeze(self, x: Any) -> Any:
        x.setflags(write=False)
        return x

    def sigmoid(self, xp: Any, x: Any) -> Any:
        from scipy import special  # a dependency of the package

        return special.expit(x)

    def erf(self, xp: Any, x: Any) -> Any:
        from scipy import special

        return special.erf(x)

    def pointwise_linear(self, xp: Any, w: Any, b: Any, x: Any) -> Any:
        """One GEMM per sample written in place, as the reference (``tensordot`` copies x and y
        once each; the broadcast matmul is slower still)."""
        np = sys.modules["numpy"]
        y = np.empty((x.shape[0], w.shape[0], x.shape[2]), dtype=np.result_type(w, x))
        for s in range(x.shape[0]):
            np.matmul(w, x[s], out=y[s])
        y += b[:, None]
        return y

    def pointwise_linear_sum(self, xp: Any, ws: list[Any], b: Any, xs: list[Any]) -> Any:
        """Σ_i W_i·x_i[b] + β: per sample, the first GEMM written in place, the others added."""
        np = sys.modules["numpy"]
        dt = np.result_type(*ws, *xs)
        y = np.empty((xs[0].shape[0], ws[0].shape[0], xs[0].shape[2]), dtype=dt)
        tmp = np.empty(y.shape[1:], dtype=dt)
        for s in range(y.shape[0]):
            np.matmul(ws[0], xs[0][s], out=y[s])
            for w, x in zip(ws[1:], xs[1:], strict=True):
                np.matmul(w, x[s], out=tmp)
                y[s] += tmp
        y += b[:, None]
        return y

    def depthwise_method(self, xp: Any, y: Any, k_l: Any) -> str:
        """The measured threshold of ``FFT_MIN_KERNEL`` on inputs of at least ``FFT_MIN_SPATIAL``."""
        k = max(int(v) for v in k_l.shape[2:])
        small = min(int(v) for v in y.shape[2:]) < FFT_MIN_SPATIAL
        return "fft" if not small and k >= FFT_MIN_KERNEL[("numpy", dtype_name(y.dtype))] else "direct"

    def depthwise_direct(self, xp: Any, y: Any, k_l: Any) -> Any:
        return sliding_window_correlate(y, k_l)

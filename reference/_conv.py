"""Depth-wise 'same' cross-correlation and adaptive average pooling (spec §2.3, §2.1).

Convolution here is cross-correlation (no kernel flip) with zero padding (k − 1)/2 on each side,
one filter per channel (groups = C), exactly as ``F.conv{1,2}d(y, k, padding=(k-1)//2, groups=C)``.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._checks import as_float_array, check_shape, odd_kernel_size
from ._checks import check_finite as _check_finite


def _lead_offsets(ksize: tuple[int, ...]):
    """Offsets along every kernel axis but the last (that one is a sliding window)."""
    return itertools.product(*(range(k) for k in ksize[:-1]))


def _windows(yp: np.ndarray, off: tuple[int, ...], spatial: tuple[int, ...], k_last: int) -> np.ndarray:
    """View (B, C, *S, k_last): y_pad[b, c, p + (off, j)] for every output position p and last offset j."""
    lead = tuple(slice(o, o + n) for o, n in zip(off, spatial[:-1], strict=True))
    return sliding_window_view(yp[(slice(None), slice(None)) + lead], k_last, axis=-1)


def _validate_conv(y: object, k_l: object, check_finite: bool) -> tuple[np.ndarray, np.ndarray]:
    y = as_float_array("y", y, ndim=(3, 4))
    k_l = as_float_array("k_l", k_l, ndim=y.ndim, dtype=y.dtype)
    d = y.ndim - 2
    check_shape("k_l", k_l, (y.shape[1], 1) + (None,) * d)
    for ax, k in enumerate(k_l.shape[2:]):
        odd_kernel_size(f"k_l (spatial axis {ax})", k)
    if check_finite:
        _check_finite("y", y)
        _check_finite("k_l", k_l)
    return y, k_l


def _pad(y: np.ndarray, ksize: tuple[int, ...]) -> np.ndarray:
    return np.pad(y, [(0, 0), (0, 0)] + [((k - 1) // 2, (k - 1) // 2) for k in ksize])


def depthwise_conv(y: np.ndarray, k_l: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Depth-wise 'same' cross-correlation: out[b,c,p] = Σ_o k_l[c,0,o] · y_pad[b,c,p+o].

    Shapes: 1D y (B, C, L), k_l (C, 1, k); 2D y (B, C, H, W), k_l (C, 1, k, k) (odd k) → y.shape.
    Direct summation (no FFT): one sliding-window contraction per offset of the leading kernel axes.
    Spec §2.3.
    """
    y, k_l = _validate_conv(y, k_l, check_finite)
    return _correlate(y, k_l[:, 0])


def _correlate(y: np.ndarray, kern: np.ndarray) -> np.ndarray:
    ksize, spatial = kern.shape[1:], y.shape[2:]
    yp = _pad(y, ksize)
    out = np.zeros_like(y)
    for off in _lead_offsets(ksize):
        out += np.einsum(
            "bc...j,cj->bc...", _windows(yp, off, spatial, ksize[-1]), kern[(slice(None),) + off]
        )  # no optimize: it would copy the strided view
    return out


def depthwise_conv_vjp(y: np.ndarray, k_l: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VJP of :func:`depthwise_conv`: returns ``(grad_y, grad_k_l)``.

    grad_k_l[c,0,o] = Σ_{b,p} g[b,c,p]·y_pad[b,c,p+o]. With symmetric padding (k−1)/2 the input
    gradient is the same 'same' correlation of g with the flipped kernel.
    """
    kern = k_l[:, 0]
    ksize, spatial = kern.shape[1:], y.shape[2:]
    yp = _pad(y, ksize)
    gk = np.zeros_like(kern)
    sp = "xyz"[: len(spatial)]  # explicit spatial subscripts: NumPy's C einsum cannot sum an elided '...'
    for off in _lead_offsets(ksize):
        gk[(slice(None),) + off] = np.einsum(f"bc{sp},bc{sp}j->cj", g, _windows(yp, off, spatial, ksize[-1]))
    flipped = kern[(slice(None),) + (slice(None, None, -1),) * len(ksize)]
    return _correlate(g, flipped), gk[:, None]


@lru_cache(maxsize=256)
def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) averaging matrix of PyTorch's adaptive average pooling along one axis.

    Output cell i averages inputs [⌊i·n_in/n_out⌋, ⌈(i+1)·n_in/n_out⌉) (bins may overlap).
    """
    p = np.zeros((n_out, n_in))
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        p[i, start:end] = 1.0 / (end - start)
    p.setflags(write=False)
    return p


def _apply_per_axis(x: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    for a, m in enumerate(mats):
        ax = 2 + a
        x = np.moveaxis(np.tensordot(m.astype(x.dtype, copy=False), x, axes=([1], [ax])), 0, ax)
    return x


def adaptive_avg_pool(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Adaptive average pooling of the spatial axes to ``size`` (PyTorch's bins).

    Shapes: x (B, C, *S) → (B, C, *size). Used by MAGNet_L's context path (spec §2.1).
    """
    x = as_float_array("x", x, ndim=(3, 4))
    if len(size) != x.ndim - 2 or any(int(k) < 1 for k in size):
        raise ValueError(f"size: expected {x.ndim - 2} positive output sizes for input shape {x.shape}, got {size}")
    return _apply_per_axis(x, [adaptive_pool_matrix(n, k) for n, k in zip(x.shape[2:], size, strict=True)])


def adaptive_avg_pool_vjp(x: np.ndarray, size: tuple[int, ...], g: np.ndarray) -> np.ndarray:
    """VJP of :func:`adaptive_avg_pool`: returns ``grad_x`` (only x's shape is used)."""
    mats = [adaptive_pool_matrix(n, k).T for n, k in zip(x.shape[2:], size, strict=True)]
    return _apply_per_axis(g, mats)

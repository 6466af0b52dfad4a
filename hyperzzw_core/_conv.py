"""Depth-wise 'same' cross-correlation and adaptive average pooling (spec §2.3, §2.1).

Convolution is cross-correlation (no kernel flip) with zero padding (k − 1)/2 on each side, one
filter per channel (groups = C), as ``F.conv{1,2}d(y, k, padding=(k-1)//2, groups=C)``. The
backend picks the implementation at run time (:func:`hyperzzw_core._backend.depthwise_conv`).
"""

from __future__ import annotations

from typing import Any

from . import _backend as B
from ._checks import as_float_array, check_shape, ns, odd_kernel_size
from ._checks import check_finite as _check_finite


def _validate_conv(xp: Any, y: Any, k_l: Any, check_finite: bool) -> tuple[Any, Any]:
    y = as_float_array(xp, "y", y, ndim=(3, 4))
    k_l = as_float_array(xp, "k_l", k_l, ndim=y.ndim, dtype=y.dtype)
    d = y.ndim - 2
    check_shape("k_l", k_l, (y.shape[1], 1) + (None,) * d)
    for ax, k in enumerate(k_l.shape[2:]):
        odd_kernel_size(f"k_l (spatial axis {ax})", int(k))
    if check_finite:
        _check_finite(xp, "y", y)
        _check_finite(xp, "k_l", k_l)
    return y, k_l


def depthwise_conv(y: Any, k_l: Any, *, check_finite: bool = True) -> Any:
    """Depth-wise 'same' cross-correlation: out[b,c,p] = Σ_o k_l[c,0,o] · y_pad[b,c,p+o].

    Shapes: 1D y (B, C, L), k_l (C, 1, k); 2D y (B, C, H, W), k_l (C, 1, k, k) (odd k) → y.shape.
    Spec §2.3.
    """
    xp = ns(("y", y), ("k_l", k_l))
    y, k_l = _validate_conv(xp, y, k_l, check_finite)
    return B.depthwise_conv(xp, y, k_l)


def depthwise_conv_fft(y: Any, k_l: Any, *, check_finite: bool = True) -> Any:
    """:func:`depthwise_conv` through the standard's ``fft`` extension (for large kernels).

    Same shapes and result (to rounding); needs ``xp.fft``. Spec §2.3.
    """
    xp = ns(("y", y), ("k_l", k_l))
    y, k_l = _validate_conv(xp, y, k_l, check_finite)
    if not hasattr(xp, "fft"):
        raise TypeError(f"depthwise_conv_fft: the namespace {xp.__name__} has no fft extension")
    return B.depthwise_conv_fft(xp, y, k_l)


def _pool_matrix(n_in: int, n_out: int, transpose: bool) -> list[list[float]]:
    """PyTorch's adaptive-average-pooling matrix (n_out, n_in) (or its transpose) as Python floats.

    Output cell i averages inputs [⌊i·n_in/n_out⌋, ⌈(i+1)·n_in/n_out⌉) (bins may overlap); the
    values equal ``reference._conv.adaptive_pool_matrix``. Plain Python (no cache), so that it
    traces under ``torch.compile``.
    """
    rows = []
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        w = 1.0 / (end - start)
        rows.append([w if start <= j < end else 0.0 for j in range(n_in)])
    if transpose:
        rows = [list(col) for col in zip(*rows, strict=True)]
    return rows


def _pool_constant(xp: Any, n_in: int, n_out: int, transpose: bool, dtype: Any, dev: Any) -> Any:
    """The pooling matrix on ``dev`` in ``dtype``, built once per sizes, dtype and device."""
    return B.cached(
        xp,
        ("pool", n_in, n_out, transpose),
        lambda: B.constant(xp, _pool_matrix(n_in, n_out, transpose), dtype=dtype, device=dev),
        dtype=dtype,
        device=dev,
    )


def _adaptive_avg_pool(xp: Any, x: Any, size: tuple[int, ...]) -> Any:
    dev = B.device(x)
    spatial = tuple(x.shape[2:])
    if len(spatial) == 1:
        return x @ _pool_constant(xp, spatial[0], size[0], True, x.dtype, dev)
    ph = _pool_constant(xp, spatial[0], size[0], False, x.dtype, dev)
    pwt = _pool_constant(xp, spatial[1], size[1], True, x.dtype, dev)
    return (ph @ x) @ pwt


def adaptive_avg_pool(x: Any, size: tuple[int, ...]) -> Any:
    """Adaptive average pooling of the spatial axes to ``size`` (PyTorch's bins).

    Shapes: x (B, C, *S) → (B, C, *size): P_h·x·P_wᵀ with the (k, n) averaging matrices of
    the reference's ``adaptive_pool_matrix``. Used by MAGNet_L's context path (spec §2.1).
    """
    xp = ns(("x", x))
    x = as_float_array(xp, "x", x, ndim=(3, 4))
    if len(size) != x.ndim - 2 or any(int(k) < 1 for k in size):
        raise ValueError(
            f"size: expected {x.ndim - 2} positive output sizes for input shape {tuple(x.shape)}, got {size}"
        )
    return _adaptive_avg_pool(xp, x, tuple(int(s) for s in size))

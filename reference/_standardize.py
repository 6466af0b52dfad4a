"""Standardisations: instance (IS), batch (BS) and G-IBS (spec §2.9).

All use the biased variance, eps = 1e-5, no affine parameters and no running statistics. BS uses
the batch statistics in eval mode too (spec §5 Q5): results depend on the batch.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_float_array
from ._checks import check_finite as _check_finite


def _standardize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mu = x.mean(axis=axes, keepdims=True)
    d = x - mu
    var = (d * d).mean(axis=axes, keepdims=True)
    return d / np.sqrt(var + eps)


def _standardize_vjp(x: np.ndarray, g: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    # y = (x − μ)·r, r = 1/√(σ² + eps): gx = r·(g − mean(g) − y·mean(g·y)) over the reduced axes.
    mu = x.mean(axis=axes, keepdims=True)
    r = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    y = (x - mu) * r
    return r * (g - g.mean(axis=axes, keepdims=True) - y * (g * y).mean(axis=axes, keepdims=True))


def _input(x: object, check_finite: bool) -> np.ndarray:
    x = as_float_array("x", x)
    if x.ndim < 3:
        raise ValueError(f"x: expected (B, C, *spatial) with at least one spatial axis, got shape {x.shape}")
    if check_finite:
        _check_finite("x", x)
    return x


def _instance_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def _batch_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def instance_standardize(x: np.ndarray, eps: float = 1e-5, *, check_finite: bool = True) -> np.ndarray:
    """IS: y[b,c] = (x[b,c] − μ_{b,c}) / √(σ²_{b,c} + eps), statistics over the spatial axes.

    Shapes: x (B, C, *S) → (B, C, *S). Spec §2.9.
    """
    x = _input(x, check_finite)
    return _standardize(x, _instance_axes(x), eps)


def instance_standardize_vjp(x: np.ndarray, g: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """VJP of :func:`instance_standardize`: returns ``grad_x``."""
    return _standardize_vjp(x, g, _instance_axes(x), eps)


def batch_standardize(x: np.ndarray, eps: float = 1e-5, *, check_finite: bool = True) -> np.ndarray:
    """BS: y[:,c] = (x[:,c] − μ_c) / √(σ²_c + eps), statistics over the batch and spatial axes.

    Shapes: x (B, C, *S) → (B, C, *S). Spec §2.9; batch statistics in eval too (§5 Q5).
    """
    x = _input(x, check_finite)
    return _standardize(x, _batch_axes(x), eps)


def batch_standardize_vjp(x: np.ndarray, g: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """VJP of :func:`batch_standardize`: returns ``grad_x`` (couples every sample of the batch)."""
    return _standardize_vjp(x, g, _batch_axes(x), eps)


def _groups(x: np.ndarray, groups: int) -> int:
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups: expected a positive integer, got {groups!r}")
    c = x.shape[1]
    if c % groups:
        raise ValueError(
            f"x: G-IBS needs the channel count to be divisible by groups={groups}, got {c} channels (shape {x.shape})"
        )
    return c // groups


def g_ibs(x: np.ndarray, groups: int = 12, eps: float = 1e-5, *, check_finite: bool = True) -> np.ndarray:
    """G-IBS: split the channels into ``groups`` contiguous groups; even groups get BS, odd get IS.

    Shapes: x (B, C, *S) with C divisible by ``groups`` → (B, C, *S). Spec §2.9.
    """
    x = _input(x, check_finite)
    size = _groups(x, groups)
    out = np.empty_like(x)
    for j in range(groups):
        sl = slice(j * size, (j + 1) * size)
        axes = _batch_axes(x) if j % 2 == 0 else _instance_axes(x)
        out[:, sl] = _standardize(x[:, sl], axes, eps)
    return out


def g_ibs_vjp(x: np.ndarray, g: np.ndarray, groups: int = 12, eps: float = 1e-5) -> np.ndarray:
    """VJP of :func:`g_ibs`: returns ``grad_x``."""
    size = _groups(x, groups)
    gx = np.empty_like(x)
    for j in range(groups):
        sl = slice(j * size, (j + 1) * size)
        axes = _batch_axes(x) if j % 2 == 0 else _instance_axes(x)
        gx[:, sl] = _standardize_vjp(x[:, sl], g[:, sl], axes, eps)
    return gx

"""Standardisations: instance (IS), batch (BS) and G-IBS (spec §2.9).

All use the biased variance, eps = 1e-5, no affine parameters and no running statistics. BS uses
the batch statistics in eval mode too (spec §5 Q5): results depend on the batch.
"""

from __future__ import annotations

import numbers
from typing import Any

from . import _backend as B
from ._checks import as_float_array, ns, shape_of
from ._checks import check_finite as _check_finite


def _standardize(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any:
    """(x − μ)/√(σ² + eps) over ``axes``, biased variance; every mean through ``xp.mean``."""
    mu = xp.mean(x, axis=axes, keepdims=True)
    d = x - mu
    var = xp.mean(d * d, axis=axes, keepdims=True)
    return d / xp.sqrt(var + eps)


def _instance_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(2, ndim))


def _batch_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def _instance_standardize(xp: Any, x: Any, eps: float) -> Any:
    out = B.backend(xp).instance_standardize_fast(xp, x, eps)  # a native or fused kernel, if any
    return _standardize(xp, x, _instance_axes(x.ndim), eps) if out is None else out


def _batch_standardize_over(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any:
    """BS over ``axes`` (the batch axis among them): torch's autograd Function, else the formula."""
    out = B.backend(xp).batch_standardize_fast(xp, x, axes, eps)
    return _standardize(xp, x, axes, eps) if out is None else out


def _batch_standardize(xp: Any, x: Any, eps: float) -> Any:
    return _batch_standardize_over(xp, x, _batch_axes(x.ndim), eps)


def _g_ibs(xp: Any, x: Any, groups: int, eps: float) -> Any:
    """G-IBS as one reshaped computation: (B, G·s, *S) viewed as (B, G/2, 2, s, *S); the even
    groups (pair index 0) batch-standardised over (B, *S) per channel, the odd ones instance-
    standardised (as (B, G/2·s, *S), so torch runs its native kernel), then interleaved by one
    stack. The halves are taken by one ``unstack``, whose gradient is one stack of the halves'
    gradients (two slices would each zero-fill a gradient of the whole x, then add them). An
    odd G leaves a last (even, BS) group, done on its own. The backend's fused kernel where it
    has one (CuPy)."""
    fast = B.backend(xp).g_ibs_fast(xp, x, groups, eps)
    if fast is not None:
        return fast
    b, c = x.shape[0], x.shape[1]
    size = c // groups
    pairs = groups // 2
    sp = tuple(x.shape[2:])
    parts = []
    if pairs:
        head = x[:, : 2 * pairs * size, ...] if groups % 2 else x
        even_x, odd_x = xp.unstack(xp.reshape(head, (b, pairs, 2, size) + sp), axis=2)
        even = _batch_standardize_over(xp, even_x, (0,) + tuple(range(3, 3 + len(sp))), eps)
        odd = _instance_standardize(xp, xp.reshape(odd_x, (b, pairs * size) + sp), eps)
        parts.append(
            xp.reshape(xp.stack([even, xp.reshape(odd, (b, pairs, size) + sp)], axis=2), (b, 2 * pairs * size) + sp)
        )
    if groups % 2:
        parts.append(_batch_standardize_over(xp, x[:, 2 * pairs * size :, ...], _batch_axes(x.ndim), eps))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def _input(x: Any, check_finite: bool) -> tuple[Any, Any]:
    xp = ns(("x", x))
    x = as_float_array(xp, "x", x)
    if x.ndim < 3:
        raise ValueError(f"x: expected (B, C, *spatial) with at least one spatial axis, got shape {shape_of(x)}")
    if check_finite:
        _check_finite(xp, "x", x)
    return xp, x


def instance_standardize(x: Any, eps: float = 1e-5, *, check_finite: bool = True) -> Any:
    """IS: y[b,c] = (x[b,c] − μ_{b,c}) / √(σ²_{b,c} + eps), statistics over the spatial axes.

    Shapes: x (B, C, *S) → (B, C, *S). Spec §2.9.
    """
    xp, x = _input(x, check_finite)
    return _instance_standardize(xp, x, eps)


def batch_standardize(x: Any, eps: float = 1e-5, *, check_finite: bool = True) -> Any:
    """BS: y[:,c] = (x[:,c] − μ_c) / √(σ²_c + eps), statistics over the batch and spatial axes.

    Shapes: x (B, C, *S) → (B, C, *S). Spec §2.9; batch statistics in eval too (§5 Q5).
    """
    xp, x = _input(x, check_finite)
    return _batch_standardize(xp, x, eps)


def check_groups(x_shape: tuple[int, ...], groups: Any) -> int:
    """Validate the G-IBS group count for an input of ``x_shape``; returns the group size."""
    if not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups: expected a positive integer, got {groups!r}")
    c = x_shape[1]
    if c % int(groups):
        raise ValueError(
            f"x: G-IBS needs the channel count to be divisible by groups={int(groups)}, "
            f"got {c} channels (shape {tuple(x_shape)})"
        )
    return c // int(groups)


def g_ibs(x: Any, groups: int = 12, eps: float = 1e-5, *, check_finite: bool = True) -> Any:
    """G-IBS: split the channels into ``groups`` contiguous groups; even groups get BS, odd get IS.

    Shapes: x (B, C, *S) with C divisible by ``groups`` → (B, C, *S). Spec §2.9.
    Written out of place: the standardised groups are concatenated.
    """
    xp, x = _input(x, check_finite)
    check_groups(shape_of(x), groups)
    return _g_ibs(xp, x, int(groups), eps)

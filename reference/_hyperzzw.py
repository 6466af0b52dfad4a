"""HyperZ·Z·W: the global product, the two-elementwise form and the local branch (spec §2.2-2.4)."""

from __future__ import annotations

import math

import numpy as np

from ._activations import gelu, gelu_vjp
from ._checks import as_float_array
from ._checks import check_finite as _check_finite
from ._conv import depthwise_conv, depthwise_conv_vjp
from ._linear import pointwise_linear, pointwise_linear_vjp
from ._standardize import batch_standardize, batch_standardize_vjp


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` down to ``shape`` (the VJP of NumPy broadcasting)."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, (s, n) in enumerate(zip(shape, g.shape, strict=True)) if s == 1 and n != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _as_matrices(x: np.ndarray, grid: tuple[int, int] | None) -> np.ndarray:
    """(B, C, H, W) as is; (B, C, L) laid row-major on its (h, w) grid, zero-padded at the end.

    Position p of the sequence sits at (p // w, p % w); the h·w − L positions after the last one
    hold zeros (spec §5 Q1, docs/spec-1d.md).
    """
    if x.ndim == 4:
        return x
    if grid is None:
        raise ValueError(f"grid: a sequence of shape {tuple(x.shape)} needs its (h, w) grid, got None")
    h, w = (int(v) for v in grid)
    pad = h * w - x.shape[-1]
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), dtype=x.dtype)], axis=-1)
    return x.reshape(x.shape[:-1] + (h, w))


def _from_matrices(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_as_matrices`: back to ``shape``, dropping the padded positions (1D)."""
    if len(shape) == 4:
        return m
    return m.reshape(m.shape[:-2] + (-1,))[..., : shape[-1]]


def square_grid(length: int) -> tuple[int, int]:
    """The smallest square grid (s, s) that holds a sequence of ``length`` steps: s = ⌈√L⌉.

    L = 40 → (7, 7) (9 padded positions), L = 64 → (8, 8) (none). docs/spec-1d.md.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length: expected a positive integer, got {length!r}")
    s = math.isqrt(int(length) - 1) + 1
    return (s, s)


def check_global_grid(name: str, shape: tuple[int, ...], grid: tuple[int, int] | None) -> None:
    """Validate the square layout the global product needs (spec §2.2, §5 Q1, Q8).

    A sequence of length L needs a square grid (h, h) with h·h ≥ L; the positions after the L-th
    are zero padding that exists only inside the product (docs/spec-1d.md).
    """
    if len(shape) == 4:
        if grid is not None:
            raise ValueError(f"grid: only for 1-D inputs (B, C, L); {name} has shape {shape}")
        if shape[2] != shape[3]:
            raise ValueError(
                f"{name}: the global product Ẑ @ Y needs H == W, got shape {shape} (H={shape[2]}, W={shape[3]})"
            )
    elif len(shape) == 3:
        if grid is None:
            raise ValueError(
                f"grid: a 1-D input {name} of shape {shape} needs grid=(h, w) with "
                f"h·w ≥ L and h == w, e.g. square_grid({shape[2]}) = {square_grid(shape[2])} "
                "(spec §5 Q1)"
            )
        if len(tuple(grid)) != 2:
            raise ValueError(f"grid: expected (h, w) with h·w ≥ L = {shape[2]} and h == w, got {tuple(grid)}")
        h, w = (int(v) for v in grid)
        if h * w < shape[2] or h != w:
            raise ValueError(f"grid: expected (h, w) with h·w ≥ L = {shape[2]} and h == w, got {tuple(grid)}")
    else:
        raise ValueError(f"{name}: expected (B, C, H, W) or (B, C, L), got shape {shape}")


def hyperzzw_global(
    z: np.ndarray, k_g: np.ndarray, y: np.ndarray, *, grid: tuple[int, int] | None = None, check_finite: bool = True
) -> np.ndarray:
    """Global HyperZ·Z·W: G = (Z ⊙ K_g) @ Y, a matrix product over the last two axes per (b, c).

    G[b,c,i,j] = Σ_m Z[b,c,i,m]·K_g[·,c,i,m]·Y[b,c,m,j]. Costs O(B·C·H·W²) (spec §2.2, §5 Q13).
    Shapes: 2D z, y (B, C, H, W) with H == W; k_g broadcastable to z, e.g. (1, C, H, W).
    1D z, y (B, C, L) with ``grid=(h, w)``, h == w, h·w ≥ L: the product runs on the sequence
    laid row-major on its h×w image, zero-padded after position L, and is flattened back with the
    padded positions dropped (our design, spec §5 Q1, docs/spec-1d.md).
    """
    z = as_float_array("z", z, ndim=(3, 4))
    k_g = as_float_array("k_g", k_g, dtype=z.dtype)
    y = as_float_array("y", y, ndim=z.ndim, dtype=z.dtype)
    check_global_grid("z", z.shape, grid)
    if y.shape != z.shape:
        raise ValueError(f"y: expected the shape of z {z.shape}, got {y.shape}")
    try:
        np.broadcast_shapes(k_g.shape, z.shape)
    except ValueError:
        raise ValueError(f"k_g: shape {k_g.shape} does not broadcast to z's shape {z.shape}") from None
    if check_finite:
        for n, a in (("z", z), ("k_g", k_g), ("y", y)):
            _check_finite(n, a)
    zhat = _as_matrices(z * k_g, grid)
    return _from_matrices(zhat @ _as_matrices(y, grid), z.shape)


def hyperzzw_global_vjp(
    z: np.ndarray, k_g: np.ndarray, y: np.ndarray, g: np.ndarray, *, grid: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VJP of :func:`hyperzzw_global`: returns ``(grad_z, grad_k_g, grad_y)``.

    gẐ = g @ Yᵀ, gY = Ẑᵀ @ g, gZ = gẐ ⊙ K_g, gK_g = Σ_broadcast gẐ ⊙ Z. In 1D the products run on
    the zero-padded grids and the padded positions are dropped (they are constants, not inputs).
    """
    zhat = _as_matrices(z * k_g, grid)
    gm = _as_matrices(g, grid)
    gzhat = _from_matrices(gm @ np.swapaxes(_as_matrices(y, grid), -1, -2), z.shape)
    gy = _from_matrices(np.swapaxes(zhat, -1, -2) @ gm, z.shape)
    return gzhat * k_g, unbroadcast(gzhat * z, k_g.shape), gy


def hyperzzw_2e(k: np.ndarray, z: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """HyperZZW_2E: (Z ⊙ K) ⊙ Z = K ⊙ Z², with broadcasting (spec §2.4)."""
    k = as_float_array("k", k)
    z = as_float_array("z", z, dtype=k.dtype)
    try:
        np.broadcast_shapes(k.shape, z.shape)
    except ValueError:
        raise ValueError(f"k: shape {k.shape} does not broadcast with z's shape {z.shape}") from None
    if check_finite:
        _check_finite("k", k)
        _check_finite("z", z)
    return k * z * z


def hyperzzw_2e_vjp(k: np.ndarray, z: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VJP of :func:`hyperzzw_2e`: returns ``(grad_k, grad_z)`` = (Σ g·Z², Σ 2·g·K·Z)."""
    return unbroadcast(g * z * z, k.shape), unbroadcast(2.0 * g * k * z, z.shape)


def local_conv(
    params: dict, y: np.ndarray, k_l: np.ndarray, *, eps: float = 1e-5, check_finite: bool = True
) -> np.ndarray:
    """Local branch LocalConv(K_l, Y) = GELU(BS(Mixer(depthwise_conv(Y, K_l)))) (spec §2.3).

    ``params`` is the mixer {"weight": (C, C), "bias": (C,)}. The SFNE block adds a scalar bias
    after this. Shapes: y (B, C, *S), k_l (C, 1, k, …) → (B, C, *S).
    """
    d = depthwise_conv(y, k_l, check_finite=check_finite)
    return gelu(
        batch_standardize(pointwise_linear(params, d, check_finite=False), eps, check_finite=False), check_finite=False
    )


def local_conv_vjp(
    params: dict, y: np.ndarray, k_l: np.ndarray, g: np.ndarray, *, eps: float = 1e-5
) -> tuple[dict, np.ndarray, np.ndarray]:
    """VJP of :func:`local_conv`: returns ``(grad_params, grad_y, grad_k_l)``."""
    d = depthwise_conv(y, k_l, check_finite=False)
    m = pointwise_linear(params, d, check_finite=False)
    n = batch_standardize(m, eps, check_finite=False)
    gm = batch_standardize_vjp(m, gelu_vjp(n, g), eps)
    gp, gd = pointwise_linear_vjp(params, d, gm)
    gy, gk = depthwise_conv_vjp(y, k_l, gd)
    return gp, gy, gk

"""HyperZ·Z·W: the global product, the two-elementwise form and the local branch (spec §2.2-2.4)."""

from __future__ import annotations

from typing import Any

from . import _backend as B
from ._activations import _gelu
from ._checks import as_float_array, ns, shape_of
from ._checks import check_finite as _check_finite
from ._conv import _validate_conv
from ._linear import _pointwise_linear, check_linear_params
from ._standardize import _batch_standardize
from .reference import check_global_grid  # pure shape logic, reused


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's broadcasting of two shapes, in plain Python; raises ``ValueError`` if incompatible."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def _hyperzzw_global(xp: Any, z: Any, k_g: Any, y: Any, grid: tuple[int, int] | None) -> Any:
    """(Z ⊙ K_g) @ Y per (b, c) by the backend (CuPy fuses Z ⊙ K_g into the matmul's tiles)."""
    return B.backend(xp).global_product(xp, z, k_g, y, grid)


def hyperzzw_global(z: Any, k_g: Any, y: Any, *, grid: tuple[int, int] | None = None, check_finite: bool = True) -> Any:
    """Global HyperZ·Z·W: G = (Z ⊙ K_g) @ Y, a matrix product over the last two axes per (b, c).

    G[b,c,i,j] = Σ_m Z[b,c,i,m]·K_g[·,c,i,m]·Y[b,c,m,j]. Costs O(B·C·H·W²) (spec §2.2, §5 Q13).
    Shapes: 2D z, y (B, C, H, W) with H == W; k_g broadcastable to z, e.g. (1, C, H, W).
    1D z, y (B, C, L) with ``grid=(h, w)``, h == w, h·w ≥ L: the product runs on the sequence
    laid row-major on its h×w image, zero-padded after position L, and is flattened back with the
    padded positions dropped (our design, spec §5 Q1, docs/spec-1d.md).
    """
    xp = ns(("z", z), ("k_g", k_g), ("y", y))
    z = as_float_array(xp, "z", z, ndim=(3, 4))
    k_g = as_float_array(xp, "k_g", k_g, dtype=z.dtype)
    y = as_float_array(xp, "y", y, ndim=z.ndim, dtype=z.dtype)
    check_global_grid("z", shape_of(z), grid)
    if shape_of(y) != shape_of(z):
        raise ValueError(f"y: expected the shape of z {shape_of(z)}, got {shape_of(y)}")
    try:
        broadcast_shapes(shape_of(k_g), shape_of(z))
    except ValueError:
        raise ValueError(f"k_g: shape {shape_of(k_g)} does not broadcast to z's shape {shape_of(z)}") from None
    if check_finite:
        for n, a in (("z", z), ("k_g", k_g), ("y", y)):
            _check_finite(xp, n, a)
    return _hyperzzw_global(xp, z, k_g, y, grid)


def _hyperzzw_2e(k: Any, z: Any) -> Any:
    return k * z * z


def hyperzzw_2e(k: Any, z: Any, *, check_finite: bool = True) -> Any:
    """HyperZZW_2E: (Z ⊙ K) ⊙ Z = K ⊙ Z², with broadcasting (spec §2.4)."""
    xp = ns(("k", k), ("z", z))
    k = as_float_array(xp, "k", k)
    z = as_float_array(xp, "z", z, dtype=k.dtype)
    try:
        broadcast_shapes(shape_of(k), shape_of(z))
    except ValueError:
        raise ValueError(f"k: shape {shape_of(k)} does not broadcast with z's shape {shape_of(z)}") from None
    if check_finite:
        _check_finite(xp, "k", k)
        _check_finite(xp, "z", z)
    return _hyperzzw_2e(k, z)


def _local_conv_pre_activation(xp: Any, params: dict, y: Any, k_l: Any, eps: float) -> Any:
    """BS(Mixer(depthwise_conv(Y, K_l))): LocalConv before its GELU (spec §2.3). Shapes as
    :func:`local_conv`."""
    m = B.depthwise_mixer(xp, y, k_l, params["weight"], params["bias"])
    if m is None:
        m = _pointwise_linear(xp, params, B.depthwise_conv(xp, y, k_l))
    else:
        m = xp.reshape(m, (m.shape[0], m.shape[1]) + tuple(y.shape[2:]))
    return _batch_standardize(xp, m, eps)


def _local_conv(xp: Any, params: dict, y: Any, k_l: Any, eps: float) -> Any:
    return _gelu(xp, _local_conv_pre_activation(xp, params, y, k_l, eps))


def local_conv(params: dict, y: Any, k_l: Any, *, eps: float = 1e-5, check_finite: bool = True) -> Any:
    """Local branch LocalConv(K_l, Y) = GELU(BS(Mixer(depthwise_conv(Y, K_l)))) (spec §2.3).

    ``params`` is the mixer {"weight": (C, C), "bias": (C,)}. The SFNE block adds a scalar bias
    after this. Shapes: y (B, C, *S), k_l (C, 1, k, …) → (B, C, *S).
    """
    xp = ns(("y", y), ("k_l", k_l), trees=(("params", params),))
    y, k_l = _validate_conv(xp, y, k_l, check_finite)
    check_linear_params(xp, params, y.shape[1], y.dtype, "params")
    return _local_conv(xp, params, y, k_l, eps)

"""Point-wise linear layers: Linear{d}d, the channel mixer and the bottleneck (spec §2, §2.10).

A "Linear{d}d" is a 1×1 convolution: y[b,o,…] = Σ_i W[o,i]·x[b,i,…] + β[o]. Parameters are
``{"weight": (O, I), "bias": (O,)}``.
"""

from __future__ import annotations

from typing import Any

from . import _backend as B
from ._activations import _gelu
from ._checks import as_float_array, check_finite, check_params, check_shape, ns, shape_of
from ._standardize import _instance_standardize

Params = dict


def check_linear(xp: Any, params: Params, x: Any, name: str, check_finite_: bool = False) -> Any:
    """Validate ``x`` (B, I, *S) and ``params`` {"weight": (O, I), "bias": (O,)} (reference messages)."""
    x = as_float_array(xp, "x", x)
    if x.ndim < 2:
        raise ValueError(f"x: expected (B, C, *spatial), got shape {shape_of(x)}")
    check_linear_params(xp, params, x.shape[1], x.dtype, name)
    if check_finite_:
        check_finite(xp, "x", x)
    return x


def check_linear_params(xp: Any, params: Params, in_ch: int, dtype: Any, name: str) -> int:
    """Validate a Linear's parameters for ``in_ch`` inputs; returns the output width O."""
    check_params(name, params, ("weight", "bias"))
    w = as_float_array(xp, f"{name}['weight']", params["weight"], ndim=2, dtype=dtype)
    check_shape(f"{name}['weight']", w, (None, in_ch))
    b = as_float_array(xp, f"{name}['bias']", params["bias"], ndim=1, dtype=dtype)
    check_shape(f"{name}['bias']", b, (w.shape[0],))
    return int(w.shape[0])


def _dense(xp: Any, p: Params, h: Any) -> Any:
    """(O, I) @ (…, I, N) + (O, 1)."""
    return p["weight"] @ h + xp.reshape(p["bias"], (-1, 1))


def _pointwise_linear(xp: Any, params: Params, x: Any) -> Any:
    b, i = x.shape[:2]
    y = B.pointwise_linear(xp, params["weight"], params["bias"], xp.reshape(x, (b, i, -1)))
    return xp.reshape(y, (b, -1) + tuple(x.shape[2:]))


def _summed_products(
    xp: Any,
    ws: list[Any],
    bias: Any,
    xs: list[Any],
    gelu: list[bool] | None = None,
    maps: list[Any] | None = None,
) -> Any:
    """Σ_i W_i·a_i + β in one accumulation, a_i = GELU(x_i) where ``gelu[i]`` (else x_i), plus the
    spatial map ``maps[i]`` (*S) where given: an activation taken inside the product, so that a
    backend may keep x_i for backward instead of a_i (``pointwise_linear_sum_gelu``).
    Shapes: x_i (B, I_i, *S), W_i (O, I_i) → (B, O, *S)."""
    b = xs[0].shape[0]
    flat = [xp.reshape(x, (b, x.shape[1], -1)) for x in xs]
    gelu = gelu or [False] * len(xs)
    flat_maps = [None if m is None else xp.reshape(m, (-1,)) for m in (maps or [None] * len(xs))]
    fused = any(gelu) or any(m is not None for m in flat_maps)
    y = B.pointwise_linear_sum_gelu(xp, ws, bias, flat, gelu, flat_maps) if fused else None
    if y is None:
        acts = [_gelu(xp, x) if on else x for x, on in zip(flat, gelu, strict=True)]
        flat = [a if m is None else a + m for a, m in zip(acts, flat_maps, strict=True)]
        y = B.pointwise_linear_sum(xp, ws, bias, flat)
    return xp.reshape(y, (b, -1) + tuple(xs[0].shape[2:]))


def _pointwise_linear_sum(
    xp: Any, layers: list[Params], xs: list[Any], gelu: list[bool] | None = None, maps: list[Any] | None = None
) -> Any:
    """Σ_i (W_i·a_i + β_i) in one accumulation, a_i as :func:`_summed_products`. Shapes:
    x_i (B, I_i, *S) → (B, O, *S)."""
    bias = layers[0]["bias"]
    for p in layers[1:]:
        bias = bias + p["bias"]
    return _summed_products(xp, [p["weight"] for p in layers], bias, xs, gelu, maps)


def _stacked(xp: Any, layers: list[Params]) -> Params:
    """{"weight": [W_1; …; W_n], "bias": [β_1; …; β_n]}: n point-wise linears of one input as one
    (input-independent). Shapes: W_i (O_i, I) → (Σ O_i, I)."""
    return {
        "weight": xp.concat([p["weight"] for p in layers], axis=0),
        "bias": xp.concat([p["bias"] for p in layers], axis=0),
    }


def _stacked_linears(xp: Any, layers: list[Params], x: Any, stacked: Params | None = None) -> tuple[list[Any], Params]:
    """Several point-wise linears of one input as one product: [W_1; …; W_n]·x + [β_1; …; β_n],
    returned as the n outputs (channel slices of one array) and the stacked parameters
    (:func:`_stacked`, or ``stacked`` if already formed) whose product they are (from which a
    backend may recompute them). Shapes: x (B, I, *S) → (B, O_i, *S)."""
    if len(layers) == 1:
        return [_pointwise_linear(xp, layers[0], x)], layers[0]
    stacked = _stacked(xp, layers) if stacked is None else stacked
    y = _pointwise_linear(xp, stacked, x)
    return B.split_channels(xp, y, [int(p["weight"].shape[0]) for p in layers]), stacked


def _bottleneck_weights(xp: Any, params: Params, layout: list[tuple[int, int, Any]]) -> tuple[list[Any], Any]:
    """The folded weight blocks W_i' and the bias β + Σ_i c_i·W_i'·1 of :func:`_bottleneck_branches`
    for branches of C_i channels tiled s_i times and shifted by c_i: ``layout`` [(C_i, s_i, c_i)],
    c_i None for 0. Input-independent. Shapes: W (O, Σ s_i·C_i) → W_i' (O, C_i), bias (O,)."""
    w = params["weight"]
    ws, start, bias = [], 0, params["bias"]
    for c, reps, shift in layout:
        block = w[:, start : start + reps * c]
        if reps > 1:
            block = xp.sum(xp.reshape(block, (w.shape[0], reps, c)), axis=1)
        if shift is not None:
            bias = bias + shift * xp.sum(block, axis=1)
        ws.append(block)
        start += reps * c
    if start != w.shape[1]:
        raise ValueError(f"params['weight']: {w.shape[1]} input channels, the branches make {start}")
    return ws, bias


def _bottleneck_branches(
    xp: Any, params: Params, branches: list[tuple[Any, int, Any, bool]], weights: tuple[list[Any], Any] | None = None
) -> Any:
    """The bottleneck of the concatenated, tiled, shifted branches without forming the concatenation.

    Branch i (x_i, s_i, c_i, g_i) is a_i + c_i (c_i a scalar, or None for 0) tiled s_i times along
    the channels, a_i = GELU(x_i) where g_i (the local branches, whose GELU the product takes:
    :func:`_summed_products`), else x_i; below, x_i stands for a_i.
    P = W·concat(tile(x_1 + c_1, s_1), …) + β = Σ_i W_i'·x_i + (β + Σ_i c_i·W_i'·1), where W_i is
    the block of W's columns that meets branch i and W_i' (O, C_i) = Σ_j W_i[:, j·C_i:(j+1)·C_i]
    folds its s_i tiles (tile(t, s) repeats the whole channel stack, :func:`tile_channels`).
    ``weights``: :func:`_bottleneck_weights` of these branches, if already formed.
    Shapes: x_i (B, C_i, *S), W (O, Σ s_i·C_i) → P (B, O, *S) (spec §2.10, step 14 of §1.3).
    """
    if weights is None:
        weights = _bottleneck_weights(xp, params, [(int(x.shape[1]), reps, shift) for x, reps, shift, _ in branches])
    ws, bias = weights
    return _summed_products(xp, ws, bias, [br[0] for br in branches], [br[3] for br in branches])


def pointwise_linear(params: Params, x: Any, *, check_finite: bool = True) -> Any:
    """Linear{d}d: y = W·x + β over the channel axis.

    Shapes: x (B, I, *S), weight (O, I), bias (O,) → y (B, O, *S). Spec §2 "Conventions".
    """
    xp = ns(("x", x), trees=(("params", params),))
    x = check_linear(xp, params, x, "params", check_finite)
    return _pointwise_linear(xp, params, x)


def _check_standardizable(x: Any) -> None:
    if x.ndim < 3:
        raise ValueError(f"x: expected (B, C, *spatial) with at least one spatial axis, got shape {shape_of(x)}")


def channel_mixer(params: Params, z: Any, *, eps: float = 1e-5, check_finite: bool = True) -> Any:
    """Channel mixer M = IS(Linear2d_{C→C}(Z)) (spec §2.10, step 4 of §1.3).

    Shapes: z (B, C, *S) → (B, C, *S).
    """
    xp = ns(("z", z), trees=(("params", params),))
    z = check_linear(xp, params, z, "params", check_finite)
    _check_standardizable(z)
    return _instance_standardize(xp, _pointwise_linear(xp, params, z), eps)


def bottleneck(params: Params, x: Any, *, check_finite: bool = True) -> Any:
    """Bottleneck P = Linear2d_{(10+n_pre)·C → bf·C}(concat) (spec §2.10, step 14 of §1.3).

    Shapes: x (B, (10+n_pre)·C, *S) → (B, bf·C, *S).
    """
    return pointwise_linear(params, x, check_finite=check_finite)

"""Point-wise linear layers: Linear{d}d, the channel mixer and the bottleneck (spec §2, §2.10).

A "Linear{d}d" is a 1×1 convolution: y[b,o,…] = Σ_i W[o,i]·x[b,i,…] + β[o]. Parameters are
``{"weight": (O, I), "bias": (O,)}``.
"""

from __future__ import annotations

from typing import Any

from . import _backend as B
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

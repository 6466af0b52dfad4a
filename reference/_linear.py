"""Point-wise linear layers: Linear{d}d, the channel mixer and the bottleneck (spec §2, §2.10).

A "Linear{d}d" is a 1×1 convolution: y[b,o,…] = Σ_i W[o,i]·x[b,i,…] + β[o]. Parameters are
``{"weight": (O, I), "bias": (O,)}``.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_finite, check_params, check_shape
from ._standardize import instance_standardize, instance_standardize_vjp

Params = dict[str, np.ndarray]


def _validate(params: Params, x: np.ndarray, name: str, check_finite_: bool) -> np.ndarray:
    x = as_float_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x: expected (B, C, *spatial), got shape {x.shape}")
    check_params(name, params, ("weight", "bias"))
    w = as_float_array(f"{name}['weight']", params["weight"], ndim=2, dtype=x.dtype)
    check_shape(f"{name}['weight']", w, (None, x.shape[1]))
    b = as_float_array(f"{name}['bias']", params["bias"], ndim=1, dtype=x.dtype)
    check_shape(f"{name}['bias']", b, (w.shape[0],))
    if check_finite_:
        check_finite("x", x)
    return x


def pointwise_linear(params: Params, x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Linear{d}d: y = W·x + β over the channel axis.

    Shapes: x (B, I, *S), weight (O, I), bias (O,) → y (B, O, *S). Spec §2 "Conventions".
    """
    x = _validate(params, x, "params", check_finite)
    b, i = x.shape[:2]
    w = params["weight"]
    xr = x.reshape(b, i, -1)
    # one GEMM (O, I)·(I, N) per sample, written in place: no transposed copies (tensordot's
    # (I, B·N) GEMM copies x and y once each; NumPy's broadcast (O, I) @ (B, I, N) is slower still)
    y = np.empty((b, w.shape[0], xr.shape[2]), dtype=np.result_type(w, x))
    for s in range(b):
        np.matmul(w, xr[s], out=y[s])
    y += params["bias"][:, None]
    return y.reshape((b, -1) + x.shape[2:])


def pointwise_linear_vjp(params: Params, x: np.ndarray, g: np.ndarray) -> tuple[Params, np.ndarray]:
    """VJP of :func:`pointwise_linear`: returns ``(grad_params, grad_x)``.

    gW = Σ_{b,n} g[b,:,n] x[b,:,n]ᵀ, gβ = Σ_{b,n} g, gx = Wᵀ g.
    """
    b, i = x.shape[:2]
    xr = x.reshape(b, i, -1)
    gr = g.reshape(b, g.shape[1], -1)
    gw = np.tensordot(gr, xr, axes=([0, 2], [0, 2]))
    gb = gr.sum(axis=(0, 2))
    gx = np.moveaxis(np.tensordot(params["weight"], gr, axes=([0], [1])), 0, 1).reshape(x.shape)
    return {"weight": gw, "bias": gb}, gx


def channel_mixer(params: Params, z: np.ndarray, *, eps: float = 1e-5, check_finite: bool = True) -> np.ndarray:
    """Channel mixer M = IS(Linear2d_{C→C}(Z)) (spec §2.10, step 4 of §1.3).

    Shapes: z (B, C, *S) → (B, C, *S).
    """
    return instance_standardize(pointwise_linear(params, z, check_finite=check_finite), eps=eps, check_finite=False)


def channel_mixer_vjp(params: Params, z: np.ndarray, g: np.ndarray, *, eps: float = 1e-5) -> tuple[Params, np.ndarray]:
    """VJP of :func:`channel_mixer`: returns ``(grad_params, grad_z)``."""
    m = pointwise_linear(params, z, check_finite=False)
    return pointwise_linear_vjp(params, z, instance_standardize_vjp(m, g, eps=eps))


def bottleneck(params: Params, x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Bottleneck P = Linear2d_{(10+n_pre)·C → bf·C}(concat) (spec §2.10, step 14 of §1.3).

    Shapes: x (B, (10+n_pre)·C, *S) → (B, bf·C, *S).
    """
    return pointwise_linear(params, x, check_finite=check_finite)


def bottleneck_vjp(params: Params, x: np.ndarray, g: np.ndarray) -> tuple[Params, np.ndarray]:
    """VJP of :func:`bottleneck`: returns ``(grad_params, grad_x)``."""
    return pointwise_linear_vjp(params, x, g)

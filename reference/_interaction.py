"""RGU, hyper-channel interaction and hyper interaction (spec §2.5, §2.7, §2.8)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit as sigmoid

from ._activations import gelu, gelu_vjp
from ._checks import as_float_array, check_params
from ._checks import check_finite as _check_finite
from ._hyperzzw import hyperzzw_2e, hyperzzw_2e_vjp
from ._linear import pointwise_linear, pointwise_linear_vjp
from ._slow_net import magnet_g, magnet_g_vjp, magnet_gc
from ._standardize import instance_standardize, instance_standardize_vjp

RGU_KEYS = ("w_k", "w_v", "w_q", "w_y", "bias_p")


def _input(name: str, z: object, check_finite: bool, dtype=None) -> np.ndarray:
    z = as_float_array(name, z, ndim=(3, 4), dtype=dtype)
    if check_finite:
        _check_finite(name, z)
    return z


def _spatial_axes(z: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, z.ndim))


def _rgu_forward(params: dict, z: np.ndarray, eps: float):
    kz = pointwise_linear(params["w_k"], z, check_finite=False)
    v = pointwise_linear(params["w_v"], z, check_finite=False)
    q = pointwise_linear(params["w_q"], v, check_finite=False)
    n = instance_standardize(kz * q, eps, check_finite=False)
    a = gelu(n, check_finite=False) + params["bias_p"]
    return pointwise_linear(params["w_y"], a, check_finite=False), (kz, v, q, n, a)


def rgu(params: dict, z: np.ndarray, *, eps: float = 1e-5, check_finite: bool = True) -> np.ndarray:
    """Recursive gated unit: Y = W_Y(GELU(IS(W_K Z ⊙ W_Q(W_V Z))) + B) (spec §2.5).

    W_V acts on Z (not on W_K Z). B = ``bias_p`` is one spatial map shared by all samples and
    channels. Params: "w_k", "w_v", "w_q", "w_y" (each {"weight": (C, C), "bias": (C,)}) and
    "bias_p" (*S). Shapes: z (B, C, *S) → (B, C, *S).
    """
    z = _input("z", z, check_finite)
    check_params("params", params, RGU_KEYS)
    if np.shape(params["bias_p"]) != z.shape[2:]:
        raise ValueError(
            f"params['bias_p']: expected the spatial shape of z {z.shape[2:]}, "
            f"got {np.shape(params['bias_p'])} (derived from the input size, §5 Q8)"
        )
    return _rgu_forward(params, z, eps)[0]


def rgu_vjp(params: dict, z: np.ndarray, g: np.ndarray, *, eps: float = 1e-5) -> tuple[dict, np.ndarray]:
    """VJP of :func:`rgu`: returns ``(grad_params, grad_z)``."""
    _, (kz, v, q, n, a) = _rgu_forward(params, z, eps)
    grads: dict = {}
    grads["w_y"], ga = pointwise_linear_vjp(params["w_y"], a, g)
    grads["bias_p"] = ga.sum(axis=(0, 1))
    gp = instance_standardize_vjp(kz * q, gelu_vjp(n, ga), eps)
    grads["w_q"], gv = pointwise_linear_vjp(params["w_q"], v, gp * kz)
    grads["w_v"], gz_v = pointwise_linear_vjp(params["w_v"], z, gv)
    grads["w_k"], gz_k = pointwise_linear_vjp(params["w_k"], z, gp * q)
    return {k: grads[k] for k in RGU_KEYS}, gz_k + gz_v


def _channel_kernel(params: dict, c: int) -> np.ndarray:
    k = magnet_gc(params)[0, 0]
    if k.shape != (c,):
        raise ValueError(f"params['channel']: MAGNet_GC grid has {k.shape[0]} positions, the input has {c} channels")
    return k


def hyper_channel_interaction(params: dict, z: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Hyper-channel interaction: Z ⊙ σ(K_c ⊙ GAP(Z)²) per channel (spec §2.7).

    K_c = MAGNet_GC(params["channel"]) on C points. The SFNE block instance-standardises the
    result (Hc). Shapes: z (B, C, *S) → (B, C, *S).
    """
    z = _input("z", z, check_finite)
    check_params("params", params, ("channel",))
    k_c = _channel_kernel(params["channel"], z.shape[1])
    s = z.mean(axis=_spatial_axes(z))
    score = sigmoid(hyperzzw_2e(k_c, s, check_finite=False))
    return z * score.reshape(score.shape + (1,) * (z.ndim - 2))


def hyper_channel_interaction_vjp(params: dict, z: np.ndarray, g: np.ndarray) -> tuple[dict, np.ndarray]:
    """VJP of :func:`hyper_channel_interaction`: returns ``(grad_params, grad_z)``."""
    axes = _spatial_axes(z)
    expand = (slice(None), slice(None)) + (None,) * (z.ndim - 2)
    k_c = magnet_gc(params["channel"])[0, 0]
    s = z.mean(axis=axes)
    score = sigmoid(hyperzzw_2e(k_c, s, check_finite=False))
    ge = (g * z).sum(axis=axes) * score * (1.0 - score)
    gk, gs = hyperzzw_2e_vjp(k_c, s, ge)
    n = math.prod(z.shape[2:])
    gz = g * score[expand] + (gs / n)[expand]
    return {"channel": magnet_g_vjp(params["channel"], gk.reshape(1, 1, -1))}, gz


def _hi_scores(params: dict, y: np.ndarray):
    axes = _spatial_axes(y)
    k_cc = _channel_kernel(params["channel"], y.shape[1])
    k_ss = magnet_g(params["spatial"])[0, 0]
    if k_ss.shape != y.shape[2:]:
        raise ValueError(
            f"params['spatial']: MAGNet_G grid {k_ss.shape} must equal the spatial shape of y {y.shape[2:]}"
        )
    s_c = y.mean(axis=axes)
    s_s = y.mean(axis=1)
    score_c = hyperzzw_2e(k_cc, s_c, check_finite=False)
    score_s = hyperzzw_2e(k_ss, s_s, check_finite=False)
    expand = (slice(None), slice(None)) + (None,) * (y.ndim - 2)
    e = score_s[:, None] * score_c[expand]
    return sigmoid(e), (k_cc, k_ss, s_c, s_s, score_c, score_s)


def hyper_interaction(params: dict, y: np.ndarray, x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Hyper interaction: X ⊙ σ((K_ss ⊙ mean_c(Y)²) ⊙ (K_cc ⊙ GAP(Y)²)) (spec §2.8).

    K_cc = MAGNet_GC(params["channel"]) on C points, K_ss = MAGNet_G(params["spatial"]) on the
    spatial grid. In the SFNE block y = G1 and x = Z; no standardisation afterwards.
    Shapes: y, x (B, C, *S) → (B, C, *S).
    """
    y = _input("y", y, check_finite)
    x = _input("x", x, check_finite, dtype=y.dtype)
    if x.shape != y.shape:
        raise ValueError(f"x: expected the shape of y {y.shape}, got {x.shape}")
    check_params("params", params, ("channel", "spatial"))
    return x * _hi_scores(params, y)[0]


def hyper_interaction_vjp(
    params: dict, y: np.ndarray, x: np.ndarray, g: np.ndarray
) -> tuple[dict, np.ndarray, np.ndarray]:
    """VJP of :func:`hyper_interaction`: returns ``(grad_params, grad_y, grad_x)``."""
    score, (k_cc, k_ss, s_c, s_s, score_c, score_s) = _hi_scores(params, y)
    axes = _spatial_axes(y)
    expand = (slice(None), slice(None)) + (None,) * (y.ndim - 2)
    ge = g * x * score * (1.0 - score)
    g_score_s = (ge * score_c[expand]).sum(axis=1)
    g_score_c = (ge * score_s[:, None]).sum(axis=axes)
    gk_cc, gs_c = hyperzzw_2e_vjp(k_cc, s_c, g_score_c)
    gk_ss, gs_s = hyperzzw_2e_vjp(k_ss, s_s, g_score_s)
    n = math.prod(y.shape[2:])
    gy = (gs_c / n)[expand] + gs_s[:, None] / y.shape[1]
    grads = {
        "channel": magnet_g_vjp(params["channel"], gk_cc.reshape(1, 1, -1)),
        "spatial": magnet_g_vjp(params["spatial"], gk_ss.reshape((1, 1) + k_ss.shape)),
    }
    return grads, np.broadcast_to(gy, y.shape).copy(), g * score

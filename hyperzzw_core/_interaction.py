"""RGU, hyper-channel interaction and hyper interaction (spec §2.5, §2.7, §2.8)."""

from __future__ import annotations

from typing import Any

from . import _backend as B
from ._activations import _gelu
from ._checks import as_float_array, check_params, ns, shape_of
from ._checks import check_finite as _check_finite
from ._hyperzzw import _hyperzzw_2e
from ._linear import _pointwise_linear, check_linear_params
from ._slow_net import _G_KEYS, _magnet_g, check_magnet
from ._standardize import _instance_standardize
from .reference import RGU_KEYS


def _input(xp: Any, name: str, z: Any, check_finite: bool, dtype: Any = None) -> Any:
    z = as_float_array(xp, name, z, ndim=(3, 4), dtype=dtype)
    if check_finite:
        _check_finite(xp, name, z)
    return z


def _spatial_axes(z: Any) -> tuple[int, ...]:
    return tuple(range(2, z.ndim))


def _expand(xp: Any, a: Any, ndim: int) -> Any:
    """(B, C) → (B, C, 1, …) with ``ndim`` axes in all."""
    return xp.reshape(a, tuple(a.shape) + (1,) * (ndim - a.ndim))


# ----------------------------------------------------------------------------------- RGU


def check_rgu(xp: Any, params: dict, z_shape: tuple[int, ...], dtype: Any, name: str = "params") -> None:
    """Validate RGU parameters for an input of ``z_shape`` (reference messages)."""
    check_params(name, params, RGU_KEYS)
    bias_p = params["bias_p"]
    if not hasattr(bias_p, "shape") or shape_of(bias_p) != tuple(z_shape[2:]):
        got = shape_of(bias_p) if hasattr(bias_p, "shape") else ()
        raise ValueError(
            f"{name}['bias_p']: expected the spatial shape of z {tuple(z_shape[2:])}, "
            f"got {got} (derived from the input size, §5 Q8)"
        )
    as_float_array(xp, f"{name}['bias_p']", bias_p, dtype=dtype)
    c = z_shape[1]
    for key in ("w_k", "w_v", "w_q", "w_y"):
        check_linear_params(xp, params[key], c, dtype, f"{name}['{key}']")


def _rgu_pre_activation(
    xp: Any, params: dict, kz: Any, v: Any, eps: float, source: tuple[dict, Any] | None = None
) -> Any:
    """IS(K·Z ⊙ W_q·V) from K·Z and V = W_v·Z: the RGU's hidden state before its GELU and bias_p
    (spec §2.5). ``source``: None, or (stacked, X) with K·Z and V the channels [0, C) and [C, 2C)
    of Linear_stacked(X) (the SFNE block's stacked products, §1.3), from which a backend may
    recompute them for backward instead of keeping them."""
    w_q = params["w_q"]
    b, c = v.shape[:2]
    src = None
    if source is not None:
        stacked, x = source
        src = (stacked["weight"], stacked["bias"], xp.reshape(x, (b, x.shape[1], -1)))
    gated = B.gated_pointwise_linear(
        xp, xp.reshape(kz, (b, c, -1)), w_q["weight"], w_q["bias"], xp.reshape(v, (b, c, -1)), src
    )
    if gated is None:
        gated = kz * _pointwise_linear(xp, w_q, v)
    else:
        gated = xp.reshape(gated, tuple(v.shape))
    return _instance_standardize(xp, gated, eps)


def _rgu_hidden(xp: Any, params: dict, kz: Any, v: Any, eps: float) -> Any:
    """The RGU's gated hidden state A = GELU(IS(K·Z ⊙ W_q·V)) + bias_p from K·Z and V = W_v·Z
    (spec §2.5); RGU(Z) = W_y·A."""
    return _gelu(xp, _rgu_pre_activation(xp, params, kz, v, eps)) + params["bias_p"]


def _rgu(xp: Any, params: dict, z: Any, eps: float) -> Any:
    kz = _pointwise_linear(xp, params["w_k"], z)
    v = _pointwise_linear(xp, params["w_v"], z)
    return _pointwise_linear(xp, params["w_y"], _rgu_hidden(xp, params, kz, v, eps))


def rgu(params: dict, z: Any, *, eps: float = 1e-5, check_finite: bool = True) -> Any:
    """Recursive gated unit: Y = W_Y(GELU(IS(W_K Z ⊙ W_Q(W_V Z))) + B) (spec §2.5).

    W_V acts on Z (not on W_K Z). B = ``bias_p`` is one spatial map shared by all samples and
    channels. Params: "w_k", "w_v", "w_q", "w_y" (each {"weight": (C, C), "bias": (C,)}) and
    "bias_p" (*S). Shapes: z (B, C, *S) → (B, C, *S).
    """
    xp = ns(("z", z), trees=(("params", params),))
    z = _input(xp, "z", z, check_finite)
    check_rgu(xp, params, shape_of(z), z.dtype)
    return _rgu(xp, params, z, eps)


# ----------------------------------------------------------------- hyper-channel interaction


def check_channel_kernel(xp: Any, params: dict, c: int, name: str) -> None:
    """Validate a MAGNet_GC on C channel positions (reference messages)."""
    if not isinstance(params, dict):
        check_params(name, params, _G_KEYS)
    bias_p: Any = params.get("bias_p")
    if getattr(bias_p, "ndim", 0) != 1:
        raise ValueError(
            f"{name}['bias_p']: MAGNet_GC runs on a 1-D grid, expected shape (C,), "
            f"got {shape_of(bias_p) if hasattr(bias_p, 'shape') else ()}"
        )
    check_magnet(xp, params, _G_KEYS, name)
    if bias_p.shape[0] != c:
        raise ValueError(f"{name}: MAGNet_GC grid has {bias_p.shape[0]} positions, the input has {c} channels")


def _channel_kernel(xp: Any, params: dict) -> Any:
    return _magnet_g(xp, params)[0, 0, ...]


def _hyper_channel_interaction(xp: Any, params: dict, z: Any, k_c: Any = None) -> Any:
    """``k_c`` (C,): the channel kernel if already computed (input-independent, may be cached)."""
    if k_c is None:
        k_c = _channel_kernel(xp, params["channel"])
    s = xp.mean(z, axis=_spatial_axes(z))
    score = B.sigmoid(xp, _hyperzzw_2e(k_c, s))
    return z * _expand(xp, score, z.ndim)


def check_hci(xp: Any, params: dict, z_shape: tuple[int, ...], name: str = "params") -> None:
    check_params(name, params, ("channel",))
    check_channel_kernel(xp, params["channel"], z_shape[1], f"{name}['channel']")


def hyper_channel_interaction(params: dict, z: Any, *, check_finite: bool = True) -> Any:
    """Hyper-channel interaction: Z ⊙ σ(K_c ⊙ GAP(Z)²) per channel (spec §2.7).

    K_c = MAGNet_GC(params["channel"]) on C points. The SFNE block instance-standardises the
    result (Hc). Shapes: z (B, C, *S) → (B, C, *S).
    """
    xp = ns(("z", z), trees=(("params", params),))
    z = _input(xp, "z", z, check_finite)
    check_hci(xp, params, shape_of(z))
    return _hyper_channel_interaction(xp, params, z)


# ------------------------------------------------------------------------ hyper interaction


def check_hi(xp: Any, params: dict, y_shape: tuple[int, ...], name: str = "params") -> None:
    check_params(name, params, ("channel", "spatial"))
    check_channel_kernel(xp, params["channel"], y_shape[1], f"{name}['channel']")
    check_magnet(xp, params["spatial"], _G_KEYS, f"{name}['spatial']")
    sizes = shape_of(params["spatial"]["bias_p"])
    if sizes != tuple(y_shape[2:]):
        raise ValueError(
            f"{name}['spatial']: MAGNet_G grid {sizes} must equal the spatial shape of y {tuple(y_shape[2:])}"
        )
    if params["spatial"]["output"]["weight"].shape[0] != 1:
        raise ValueError(
            f"{name}['spatial']: expected one output map, got {params['spatial']['output']['weight'].shape[0]}"
        )


def _hi_kernels(xp: Any, params: dict) -> tuple[Any, Any]:
    """(K_cc (C,), K_ss (*S)) of the hyper interaction: input-independent."""
    return _channel_kernel(xp, params["channel"]), _magnet_g(xp, params["spatial"])[0, 0, ...]


def _hyper_interaction(xp: Any, params: dict, y: Any, x: Any, kernels: tuple[Any, Any] | None = None) -> Any:
    """``kernels``: (K_cc, K_ss) if already computed (see ``_hi_kernels``)."""
    k_cc, k_ss = _hi_kernels(xp, params) if kernels is None else kernels
    s_c = xp.mean(y, axis=_spatial_axes(y))
    s_s = xp.mean(y, axis=1)
    fast = B.backend(xp).gate_fast(xp, x, k_ss, s_s, k_cc, s_c)  # CuPy: scores and gate in one pass
    if fast is not None:
        return fast
    score_c = _hyperzzw_2e(k_cc, s_c)
    score_s = _hyperzzw_2e(k_ss, s_s)
    e = xp.expand_dims(score_s, axis=1) * _expand(xp, score_c, y.ndim)
    return x * B.sigmoid(xp, e)


def hyper_interaction(params: dict, y: Any, x: Any, *, check_finite: bool = True) -> Any:
    """Hyper interaction: X ⊙ σ((K_ss ⊙ mean_c(Y)²) ⊙ (K_cc ⊙ GAP(Y)²)) (spec §2.8).

    K_cc = MAGNet_GC(params["channel"]) on C points, K_ss = MAGNet_G(params["spatial"]) on the
    spatial grid. In the SFNE block y = G1 and x = Z; no standardisation afterwards.
    Shapes: y, x (B, C, *S) → (B, C, *S).
    """
    xp = ns(("y", y), ("x", x), trees=(("params", params),))
    y = _input(xp, "y", y, check_finite)
    x = _input(xp, "x", x, check_finite, dtype=y.dtype)
    if shape_of(x) != shape_of(y):
        raise ValueError(f"x: expected the shape of y {shape_of(y)}, got {shape_of(x)}")
    check_hi(xp, params, shape_of(y))
    return _hyper_interaction(xp, params, y, x)

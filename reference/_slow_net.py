"""The slow network: coordinate-based multiplicative filter networks (spec §2.1).

MAGNet_G (global kernels and the hyper-interaction spatial kernel, d = data dimension),
MAGNet_GC (channel kernels: the same network with d = 1 over C channel positions) and MAGNet_L
(local, context-dependent kernels). All evaluate on a fixed grid of normalised coordinates; only
MAGNet_L reads an input (its context path).

Parameters (nested dicts/lists of arrays; H hidden, L layers, d grid dims, N grid points)::

    MAGNet_G / MAGNet_GC
      "filters":  L+1 × {"weight": (H, d), "bias": (H,)}    g_l(c) = sin(W c + b)
      "linears":  L   × {"weight": (H, H), "bias": (H,)}    A_1 … A_L
      "output":   {"weight": (C_out, H), "bias": (C_out,)}  A_o
      "bias_p":   (*sizes,)                                 one learned map added after each layer
    MAGNet_L adds
      "reduce":    {"weight": (H, C_out), "bias": (H,)}     fast_reduce
      "fc1":       {"weight": (H, H), "bias": (H,)}         fast_fc1
      "linears_x": L × {"weight": (H, H), "bias": (H,)}     X_1 … X_L

The grid is ``coordinate_grid(bias_p.shape)``: the parameters fully determine the kernel size.
The Chang et al. scaling √(1/N) of the output weight is applied at initialisation (spec
§5 Q7), not lazily at the first call as in the author's code.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from . import _random
from ._activations import gelu, gelu_vjp
from ._checks import as_float_array, check_params
from ._checks import check_finite as _check_finite
from ._conv import adaptive_avg_pool, adaptive_avg_pool_vjp
from ._linear import pointwise_linear, pointwise_linear_vjp

Params = dict
RENORM_EPS = 1e-12  # F.normalize's eps
RENORM_ALPHA = 1.0  # weight of the stop-gradient term (constant, unregistered in the author's code)
RENORM_BETA = 0.1  # weight of the normalised term


@lru_cache(maxsize=64)
def _grid_cached(sizes: tuple[int, ...]) -> np.ndarray:
    axes = [np.linspace(-1.0, 1.0, k) for k in sizes]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0)
    grid.setflags(write=False)
    return grid


def coordinate_grid(sizes: tuple[int, ...] | list[int]) -> np.ndarray:
    """Normalised coordinates: ``linspace(-1, 1, k)`` per axis, meshgrid 'ij', stacked first.

    Shapes: sizes (k_1, …, k_d) → (d, k_1, …, k_d); channel a varies along spatial axis a.
    Spec §2.1 ("Coordinate grid"). Returns a read-only float64 array.
    """
    sizes = tuple(int(s) for s in sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"sizes: expected one or more positive sizes, got {sizes}")
    return _grid_cached(sizes)


def _points(sizes: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return coordinate_grid(sizes).reshape(len(sizes), -1).astype(dtype, copy=False)


# ------------------------------------------------------------------------------------- init


def _init_filters(rng, d, hidden, num_layers, omega_0, alpha, beta):
    filters = []
    for layer in range(num_layers + 1):
        w = _random.uniform(rng, (hidden, d), 1.0 / np.sqrt(d))
        gamma = _random.gamma(rng, (hidden, d), alpha / (layer + 1), beta)
        filters.append({"weight": w * (2.0 * np.pi * omega_0 * gamma), "bias": np.zeros(hidden)})
    return filters


def init_magnet_g(
    rng: np.random.Generator,
    sizes: tuple[int, ...],
    hidden: int,
    out_channels: int,
    num_layers: int,
    *,
    omega_0: float = 2000.0,
    alpha: float = 6.0,
    beta: float = 1.0,
) -> Params:
    """Initialise MAGNet_G on a grid of ``sizes`` (spec §2.1).

    Filters: W ~ U(±1/√d)·2π·ω₀·γ, γ ~ Gamma(α/(l+1), β), b = 0; linears: kaiming_uniform(linear),
    bias 1; output: kaiming_uniform(linear)·√(1/N), bias 0; bias_p = 0.
    """
    sizes = tuple(int(s) for s in sizes)
    d, n = len(sizes), int(np.prod(sizes))
    filters = _init_filters(rng, d, hidden, num_layers, omega_0, alpha, beta)
    linears = [_random.kaiming_uniform_linear(rng, hidden, hidden, bias=1.0) for _ in range(num_layers)]
    output = _random.kaiming_uniform_linear(rng, out_channels, hidden, bias=0.0)
    output["weight"] = output["weight"] * np.sqrt(1.0 / n)
    return {"filters": filters, "linears": linears, "output": output, "bias_p": np.zeros(sizes)}


def init_magnet_gc(
    rng: np.random.Generator,
    channels: int,
    hidden: int,
    num_layers: int,
    *,
    omega_0: float = 2000.0,
    alpha: float = 6.0,
    beta: float = 1.0,
) -> Params:
    """Initialise MAGNet_GC: MAGNet_G with d = 1 over ``channels`` positions, one output channel."""
    return init_magnet_g(rng, (channels,), hidden, 1, num_layers, omega_0=omega_0, alpha=alpha, beta=beta)


def init_magnet_l(
    rng: np.random.Generator,
    kernel_size: int,
    data_dim: int,
    hidden: int,
    out_channels: int,
    num_layers: int,
    *,
    omega_0: float = 2000.0,
    alpha: float = 6.0,
    beta: float = 1.0,
) -> Params:
    """Initialise MAGNet_L for a (C_out, 1, k, …, k) local kernel (spec §2.1).

    As MAGNet_G, plus the context path: ``reduce`` and ``fc1`` with PyTorch's default conv init,
    ``linears_x`` with kaiming_uniform(linear) and bias 1.
    """
    p = init_magnet_g(
        rng, (kernel_size,) * data_dim, hidden, out_channels, num_layers, omega_0=omega_0, alpha=alpha, beta=beta
    )
    p["reduce"] = _random.conv_default(rng, hidden, out_channels)
    p["fc1"] = _random.conv_default(rng, hidden, hidden)
    p["linears_x"] = [_random.kaiming_uniform_linear(rng, hidden, hidden, bias=1.0) for _ in range(num_layers)]
    return p


# ----------------------------------------------------------------------------- validation

_G_KEYS = ("filters", "linears", "output", "bias_p")
_L_KEYS = _G_KEYS + ("reduce", "fc1", "linears_x")


def _dtype_of(params: Params) -> np.dtype:
    return np.asarray(params["bias_p"]).dtype


def _validate(params: Params, keys: tuple[str, ...], name: str) -> None:
    check_params(name, params, keys)
    bias_p = as_float_array(f"{name}['bias_p']", params["bias_p"])
    dt, d = bias_p.dtype, bias_p.ndim
    n_layers = len(params["linears"])
    if len(params["filters"]) != n_layers + 1:
        raise ValueError(
            f"{name}: expected len(filters) == len(linears) + 1, got {len(params['filters'])} and {n_layers}"
        )
    for i, f in enumerate(params["filters"]):
        w = as_float_array(f"{name}['filters'][{i}]['weight']", f["weight"], ndim=2, dtype=dt)
        if w.shape[1] != d:
            raise ValueError(f"{name}['filters'][{i}]['weight']: expected (H, {d}) for a {d}-D grid, got {w.shape}")
    for key in ("linears", "linears_x"):
        for i, lin in enumerate(params.get(key, [])):
            as_float_array(f"{name}['{key}'][{i}]['weight']", lin["weight"], ndim=2, dtype=dt)
    as_float_array(f"{name}['output']['weight']", params["output"]["weight"], ndim=2, dtype=dt)


# ---------------------------------------------------------------------------------- forward


def _dense(p: Params, h: np.ndarray) -> np.ndarray:
    """(O, I) @ (I, N) + (O, 1)."""
    return p["weight"] @ h + p["bias"][:, None]


def _dense_vjp(p: Params, h: np.ndarray, g: np.ndarray) -> tuple[Params, np.ndarray]:
    return {"weight": g @ h.T, "bias": g.sum(axis=1)}, p["weight"].T @ g


def _filter(p: Params, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = _dense(p, c)
    return np.sin(a), a


def _filter_vjp(p: Params, c: np.ndarray, a: np.ndarray, g: np.ndarray) -> Params:
    ga = g * np.cos(a)
    return {"weight": ga @ c.T, "bias": ga.sum(axis=1)}


def _mfn_forward(params: Params, c: np.ndarray, ctx: np.ndarray | None, frozen: list | None = None):
    """Shared MFN recursion; with ``ctx`` (MAGNet_L) each layer is s-renormalised and gated.

    ``frozen`` replaces the stop-gradient term's value per layer (see ``magnet_l``).
    """
    bias_p = params["bias_p"].reshape(1, -1)
    f0, a0 = _filter(params["filters"][0], c)
    h = f0
    cache = {"a": [a0], "h": [h], "l": [], "f": [], "u": [], "norm": [], "u2": [], "xg": []}
    for i, lin in enumerate(params["linears"]):
        f, a = _filter(params["filters"][i + 1], c)
        lval = _dense(lin, h)
        u = f * lval + bias_p
        cache["a"].append(a)
        cache["f"].append(f)
        cache["l"].append(lval)
        if ctx is not None:
            norm = np.sqrt((u * u).sum(axis=1, keepdims=True))
            sg = u if frozen is None else frozen[i]
            u2 = RENORM_ALPHA * sg + RENORM_BETA * u / np.maximum(norm, RENORM_EPS)
            xg = _dense(params["linears_x"][i], ctx)
            h = u2 * xg
            cache["u"].append(u)
            cache["norm"].append(norm)
            cache["u2"].append(u2)
            cache["xg"].append(xg)
        else:
            h = u
        cache["h"].append(h)
    out = _dense(params["output"], h)
    return out, cache


def _normalize_vjp(u: np.ndarray, norm: np.ndarray, g: np.ndarray) -> np.ndarray:
    """VJP of u / max(‖u‖, eps) along axis 1 (F.normalize)."""
    big = norm > RENORM_EPS
    safe = np.where(big, norm, RENORM_EPS)
    y = u / safe
    proj = (y * g).sum(axis=1, keepdims=True)
    return np.where(big, (g - y * proj) / safe, g / RENORM_EPS)


def _mfn_backward(params: Params, c: np.ndarray, ctx: np.ndarray | None, cache, g_out: np.ndarray):
    grads: Params = {"filters": [None] * len(params["filters"]), "linears": [None] * len(params["linears"])}
    grads["output"], gh = _dense_vjp(params["output"], cache["h"][-1], g_out)
    g_bias_p = np.zeros(params["bias_p"].size, dtype=g_out.dtype)
    g_ctx = None
    if ctx is not None:
        grads["linears_x"] = [None] * len(params["linears"])
        g_ctx = np.zeros_like(ctx)
    for i in reversed(range(len(params["linears"]))):
        if ctx is not None:
            gxg = gh * cache["u2"][i]
            gu2 = gh * cache["xg"][i]
            grads["linears_x"][i], gc = _dense_vjp(params["linears_x"][i], ctx, gxg)
            g_ctx += gc
            # u' = stopgrad(u) + 0.1·u/‖u‖: only the normalised term carries gradient (§2.1).
            gu = RENORM_BETA * _normalize_vjp(cache["u"][i], cache["norm"][i], gu2)
        else:
            gu = gh
        g_bias_p += gu.sum(axis=0)
        gf = gu * cache["l"][i]
        gl = gu * cache["f"][i]
        grads["linears"][i], gh = _dense_vjp(params["linears"][i], cache["h"][i], gl)
        grads["filters"][i + 1] = _filter_vjp(params["filters"][i + 1], c, cache["a"][i + 1], gf)
    grads["filters"][0] = _filter_vjp(params["filters"][0], c, cache["a"][0], gh)
    grads["bias_p"] = g_bias_p.reshape(params["bias_p"].shape)
    return grads, g_ctx


def magnet_g(params: Params) -> np.ndarray:
    """MAGNet_G: K = A_o(h_{L+1}), h_1 = g_0(c), h_{i+1} = g_i(c) ⊙ A_i(h_i) + bias_p.

    Shapes: → (1, C_out, *sizes), sizes = bias_p.shape. Input-independent. Spec §2.1.
    """
    _validate(params, _G_KEYS, "params")
    sizes = params["bias_p"].shape
    out, _ = _mfn_forward(params, _points(sizes, _dtype_of(params)), None)
    return out.reshape((1, -1) + sizes)


def magnet_g_vjp(params: Params, g: np.ndarray) -> Params:
    """VJP of :func:`magnet_g`: returns ``grad_params`` (same structure as ``params``)."""
    sizes = params["bias_p"].shape
    c = _points(sizes, _dtype_of(params))
    _, cache = _mfn_forward(params, c, None)
    grads, _ = _mfn_backward(params, c, None, cache, g.reshape(g.shape[1], -1))
    return {key: grads[key] for key in params}


def magnet_gc(params: Params) -> np.ndarray:
    """MAGNet_GC: MAGNet_G on a 1-D grid of C channel positions, one output: shape (1, 1, C).

    Spec §2.1, used by the hyper-channel and hyper interactions (§2.7, §2.8).
    """
    bias_p: Any = params.get("bias_p")
    if np.ndim(bias_p) != 1:
        raise ValueError(f"params['bias_p']: MAGNet_GC runs on a 1-D grid, expected shape (C,), got {np.shape(bias_p)}")
    return magnet_g(params)


magnet_gc_vjp = magnet_g_vjp


def _context(params: Params, x: np.ndarray, k: tuple[int, ...]):
    pooled = adaptive_avg_pool(x, k)
    r = pointwise_linear(params["reduce"], pooled, check_finite=False)
    m = r.mean(axis=0).reshape(r.shape[1], -1)
    q = _dense(params["fc1"], m)
    return gelu(q, check_finite=False), (pooled, r, m, q)


def _validate_l(params: Params, x: object, check_finite: bool) -> np.ndarray:
    _validate(params, _L_KEYS, "params")
    d = params["bias_p"].ndim
    x = as_float_array("x", x, ndim=d + 2, dtype=_dtype_of(params))
    c_out = params["output"]["weight"].shape[0]
    if x.shape[1] != c_out:
        raise ValueError(f"x: MAGNet_L context must have C_out={c_out} channels, got shape {x.shape}")
    if check_finite:
        _check_finite("x", x)
    return x


def magnet_l(
    params: Params, x: np.ndarray, *, stop_gradient_values: list | None = None, check_finite: bool = True
) -> np.ndarray:
    """MAGNet_L: a context-dependent local kernel (spec §2.1).

    g = GELU(fc1(mean_b(reduce(adaptive_avg_pool(x, k))))); h_1 = g_0(c);
    u = g_i(c) ⊙ A_i(h_i) + bias_p; u' = stopgrad(u) + 0.1·u/max(‖u‖, 1e-12) per hidden channel;
    h_{i+1} = u' ⊙ X_i(g); K = A_o(h_{L+1}). One kernel per batch (the batch mean removes B).

    Shapes: x (B, C_out, *S) → (C_out, 1, k, …, k), k = bias_p.shape.

    ``stop_gradient_values`` (one (H, N) array per layer, from :func:`magnet_l_stop_gradient_values`)
    holds the stop-gradient term fixed. At the point where they were taken the value is unchanged,
    and the derivative of that function is exactly what :func:`magnet_l_vjp` returns: this is how
    finite differences check the VJP.
    """
    x = _validate_l(params, x, check_finite)
    return _magnet_l_forward(params, x, stop_gradient_values)[0]


def _magnet_l_forward(params: Params, x: np.ndarray, frozen: list | None = None):
    k = params["bias_p"].shape
    ctx, _ = _context(params, x, k)
    out, cache = _mfn_forward(params, _points(k, x.dtype), ctx, frozen)
    return out.reshape((out.shape[0], 1) + k), cache["u"]


def magnet_l_stop_gradient_values(params: Params, x: np.ndarray) -> list[np.ndarray]:
    """The values u of MAGNet_L's stop-gradient terms, one (H, N) array per layer."""
    x = _validate_l(params, x, False)
    return _magnet_l_forward(params, x)[1]


def magnet_l_vjp(params: Params, x: np.ndarray, g: np.ndarray) -> tuple[Params, np.ndarray]:
    """VJP of :func:`magnet_l`: returns ``(grad_params, grad_x)``.

    The stop-gradient of the s-renormalisation is honoured: its first term passes no gradient.
    """
    k = params["bias_p"].shape
    c = _points(k, x.dtype)
    ctx, (pooled, r, m, q) = _context(params, x, k)
    _, cache = _mfn_forward(params, c, ctx)
    grads, g_ctx = _mfn_backward(params, c, ctx, cache, g.reshape(g.shape[0], -1))
    gq = gelu_vjp(q, g_ctx)
    grads["fc1"], gm = _dense_vjp(params["fc1"], m, gq)
    b = x.shape[0]
    gr = np.broadcast_to((gm / b).reshape((1,) + r.shape[1:]), r.shape)
    grads["reduce"], gpooled = pointwise_linear_vjp(params["reduce"], pooled, gr)
    return {key: grads[key] for key in params}, adaptive_avg_pool_vjp(x, k, gpooled)

"""The slow network: coordinate-based multiplicative filter networks (spec §2.1).

MAGNet_G, MAGNet_GC and MAGNet_L with the parameter layout of ``reference._slow_net`` (see its
module docstring). The grid values are those of the reference (``np.linspace`` in float64, then
cast to the parameters' dtype) and are created on the parameters' device.
"""

from __future__ import annotations

from typing import Any

from . import _backend as B
from . import reference as _ref
from ._activations import _gelu
from ._checks import as_float_array, check_params, ns, shape_of
from ._checks import check_finite as _check_finite
from ._conv import _adaptive_avg_pool
from ._linear import _dense, _pointwise_linear, check_linear_params

Params = dict
RENORM_EPS = _ref.RENORM_EPS  # F.normalize's eps, 1e-12
RENORM_ALPHA = _ref.RENORM_ALPHA  # 1.0, weight of the stop-gradient term
RENORM_BETA = _ref.RENORM_BETA  # 0.1, weight of the normalised term

_G_KEYS = ("filters", "linears", "output", "bias_p")
_L_KEYS = _G_KEYS + ("reduce", "fc1", "linears_x")


def _axis_values(k: int) -> list[float]:
    """``np.linspace(-1, 1, k)`` as Python floats (the same IEEE operations: i·step + start)."""
    if k == 1:
        return [-1.0]
    step = 2.0 / (k - 1)
    return [i * step + (-1.0) for i in range(k - 1)] + [1.0]


def _axis(xp: Any, k: int, dev: Any, dtype: Any) -> Any:
    """``np.linspace(-1, 1, k)`` bit for bit, cast to ``dtype``.

    On a device with float64 it is computed there (arange·step + start, last point exactly 1),
    which traces under ``torch.compile``; otherwise the float64 values are made on the host and
    rounded once to ``dtype`` (a float32-only device such as torch MPS or array-api-strict's
    ``no_float64``).
    """
    work = B.work_dtype(xp, dtype, dev)
    if work != xp.float64:
        return B.constant(xp, _axis_values(k), dtype=dtype, device=dev)
    i = xp.arange(k, dtype=work, device=dev)
    if k == 1:
        return xp.astype(i - 1.0, dtype)
    vals = i * (2.0 / (k - 1)) + (-1.0)
    return xp.astype(xp.where(i == float(k - 1), xp.ones_like(vals), vals), dtype)


def _grid(xp: Any, sizes: tuple[int, ...], dtype: Any, dev: Any) -> Any:
    """The (d, k_1, …, k_d) grid of the reference, in ``dtype`` on ``dev`` (no cache, no host data
    where the device has float64)."""
    axes = [_axis(xp, k, dev, dtype) for k in sizes]
    if len(axes) == 1:
        return xp.reshape(axes[0], (1, sizes[0]))
    return xp.stack(xp.meshgrid(*axes, indexing="ij"), axis=0)


def coordinate_grid(
    sizes: tuple[int, ...] | list[int], *, xp: Any = None, device: Any = None, dtype: Any = None
) -> Any:
    """Normalised coordinates: ``linspace(-1, 1, k)`` per axis, meshgrid 'ij', stacked first.

    Shapes: sizes (k_1, …, k_d) → (d, k_1, …, k_d); channel a varies along spatial axis a.
    ``xp`` (a namespace or module such as ``torch``; default NumPy), ``device`` and ``dtype``
    (default ``xp.float64``) say where the array is created. Values equal the reference's float64
    grid (``np.linspace``) cast to ``dtype``. Spec §2.1 ("Coordinate grid").
    """
    sizes = tuple(int(s) for s in sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"sizes: expected one or more positive sizes, got {sizes}")
    xp = B.as_namespace(xp)
    return _grid(xp, sizes, xp.float64 if dtype is None else dtype, device)


def _points(xp: Any, sizes: tuple[int, ...], like: Any) -> Any:
    """The grid flattened to (d, N) in ``like``'s dtype and device, built once per size, dtype and
    device (``_backend.cached``; rebuilt inside torch.compile traces, where the graph owns it)."""
    dt, dev = like.dtype, B.device(like)
    return B.cached(
        xp, ("grid", sizes), lambda: xp.reshape(_grid(xp, sizes, dt, dev), (len(sizes), -1)), dtype=dt, device=dev
    )


# ----------------------------------------------------------------------------- validation


def check_magnet(xp: Any, params: Params, keys: tuple[str, ...], name: str) -> None:
    """Validate MAGNet parameters (``_G_KEYS`` or ``_L_KEYS``) with the reference's messages."""
    check_params(name, params, keys)
    bias_p = as_float_array(xp, f"{name}['bias_p']", params["bias_p"])
    dt, d = bias_p.dtype, bias_p.ndim
    n_layers = len(params["linears"])
    if len(params["filters"]) != n_layers + 1:
        raise ValueError(
            f"{name}: expected len(filters) == len(linears) + 1, got {len(params['filters'])} and {n_layers}"
        )
    for i, f in enumerate(params["filters"]):
        w = as_float_array(xp, f"{name}['filters'][{i}]['weight']", f["weight"], ndim=2, dtype=dt)
        if w.shape[1] != d:
            raise ValueError(f"{name}['filters'][{i}]['weight']: expected (H, {d}) for a {d}-D grid, got {shape_of(w)}")
    for key in ("linears", "linears_x"):
        for i, lin in enumerate(params.get(key, [])):
            as_float_array(xp, f"{name}['{key}'][{i}]['weight']", lin["weight"], ndim=2, dtype=dt)
    as_float_array(xp, f"{name}['output']['weight']", params["output"]["weight"], ndim=2, dtype=dt)


# ---------------------------------------------------------------------------------- forward


def _renorm(xp: Any, u: Any, sg: Any) -> Any:
    """s-renormalisation u' = α·sg + β·u/max(‖u‖, eps), norms per hidden channel (rows of the
    last two axes: (H, N), or (n, H, N) for n networks at once)."""
    norm = xp.sqrt(xp.sum(u * u, axis=-1, keepdims=True))
    return RENORM_ALPHA * sg + RENORM_BETA * u / xp.clip(norm, min=RENORM_EPS)


def _magnet_l_static(xp: Any, params: Params) -> dict[str, Any]:
    """The input-independent part of MAGNet_L: the filter responses g_l(c) of every layer and the
    first layer's s-renormalised u'_1 = renorm(g_1(c) ⊙ A_1(g_0(c)) + bias_p) (its stop-gradient
    term is u_1 itself). Only the context gates X_i(g) and what follows them read the input."""
    c = _points(xp, shape_of(params["bias_p"]), params["bias_p"])
    filters = [xp.sin(_dense(xp, f, c)) for f in params["filters"]]
    out: dict[str, Any] = {"filters": filters}
    if params["linears"]:
        u = filters[1] * _dense(xp, params["linears"][0], filters[0]) + xp.reshape(params["bias_p"], (1, -1))
        out["u2_0"] = _renorm(xp, u, B.stop_gradient(xp, u))
    return out


def _mfn_forward(
    xp: Any, params: Params, c: Any, ctx: Any | None, frozen: list | None = None, static: dict | None = None
) -> Any:
    """The MFN recursion; with ``ctx`` (MAGNet_L) each layer is s-renormalised and gated.

    ``frozen`` replaces the stop-gradient term's value per layer (see ``magnet_l``). ``static``
    (MAGNet_L only): ``_magnet_l_static`` of these parameters, if already computed.
    """
    bias_p = xp.reshape(params["bias_p"], (1, -1))
    filters = None if static is None else static["filters"]
    h = xp.sin(_dense(xp, params["filters"][0], c)) if filters is None else filters[0]
    for i, lin in enumerate(params["linears"]):
        if ctx is not None and i == 0 and static is not None and frozen is None:
            h = static["u2_0"] * _dense(xp, params["linears_x"][0], ctx)
            continue
        f = xp.sin(_dense(xp, params["filters"][i + 1], c)) if filters is None else filters[i + 1]
        u = f * _dense(xp, lin, h) + bias_p
        if ctx is not None:
            sg = B.stop_gradient(xp, u) if frozen is None else frozen[i]
            h = _renorm(xp, u, sg) * _dense(xp, params["linears_x"][i], ctx)
        else:
            h = u
    return _dense(xp, params["output"], h)


def _structure(params: Params) -> tuple:
    """What must agree for networks to run as one batch: the grid and every hidden layer's shape
    (the output layer may differ)."""
    return (
        shape_of(params["bias_p"]),
        tuple(shape_of(f["weight"]) for f in params["filters"]),
        tuple(shape_of(lin["weight"]) for lin in params["linears"]),
    )


def _dense_many(xp: Any, layers: list[Params], h: Any) -> Any:
    """n layers of one shape at once: stack(W) (n, O, I) @ h + stack(β) (n, O, 1), for h (I, N)
    shared by all or (n, I, N)."""
    w = xp.stack([p["weight"] for p in layers], axis=0)
    b = xp.stack([p["bias"] for p in layers], axis=0)
    return w @ h + xp.expand_dims(b, axis=-1)


def _mfn_hidden_many(xp: Any, params_list: list[Params], static_only: bool) -> tuple[list[Any], Any]:
    """The coordinate part of n MFNs of one ``_structure`` as batched products: the filter responses
    g_l(c) (n, H, N) of every layer and the hidden state after the last layer (MAGNet_G), or after
    the first (``static_only``: its u_1 = g_1(c) ⊙ A_1(g_0(c)) + bias_p, before renormalisation)."""
    p0 = params_list[0]
    c = _points(xp, shape_of(p0["bias_p"]), p0["bias_p"])
    n = len(params_list)
    filters = [xp.sin(_dense_many(xp, [p["filters"][i] for p in params_list], c)) for i in range(len(p0["filters"]))]
    bias_p = xp.reshape(xp.stack([p["bias_p"] for p in params_list], axis=0), (n, 1, -1))
    h = filters[0]
    for i in range(1 if static_only else len(p0["linears"])):
        h = filters[i + 1] * _dense_many(xp, [p["linears"][i] for p in params_list], h) + bias_p
    return filters, h


def _magnet_g_many(xp: Any, params_list: list[Params]) -> list[Any]:
    """:func:`_magnet_g` of n networks of one ``_structure`` (the blocks' MAGNet_G share the grid
    and widths): the hidden layers as batched products, each network's output layer on its own
    (the output widths may differ). Same values as n calls, to rounding."""
    _, h = _mfn_hidden_many(xp, params_list, static_only=False)
    sizes = shape_of(params_list[0]["bias_p"])
    return [xp.reshape(_dense(xp, p["output"], h[j, ...]), (1, -1) + sizes) for j, p in enumerate(params_list)]


def _magnet_l_static_many(xp: Any, params_list: list[Params]) -> list[dict[str, Any]]:
    """:func:`_magnet_l_static` of n MAGNet_L of one ``_structure`` (one local role across the
    blocks), as batched products."""
    filters, u = _mfn_hidden_many(xp, params_list, static_only=True)
    outs: list[dict[str, Any]] = [{"filters": [f[j, ...] for f in filters]} for j in range(len(params_list))]
    if params_list[0]["linears"]:
        u2 = _renorm(xp, u, B.stop_gradient(xp, u))
        for j, out in enumerate(outs):
            out["u2_0"] = u2[j, ...]
    return outs


def _batched(xp: Any, many: Any, one: Any, params_list: list[Params]) -> list[Any]:
    """``one(xp, p)`` for every p, the networks of equal ``_structure`` run together by ``many``."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params_list):
        groups.setdefault(_structure(p), []).append(i)
    out: list[Any] = [None] * len(params_list)
    for idx in groups.values():
        results = many(xp, [params_list[i] for i in idx]) if len(idx) > 1 else [one(xp, params_list[idx[0]])]
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out


def _magnet_g(xp: Any, params: Params) -> Any:
    sizes = shape_of(params["bias_p"])
    out = _mfn_forward(xp, params, _points(xp, sizes, params["bias_p"]), None)
    return xp.reshape(out, (1, -1) + sizes)


def magnet_g(params: Params) -> Any:
    """MAGNet_G: K = A_o(h_{L+1}), h_1 = g_0(c), h_{i+1} = g_i(c) ⊙ A_i(h_i) + bias_p.

    Shapes: → (1, C_out, *sizes), sizes = bias_p.shape, on the parameters' library, device and
    dtype. Input-independent. Spec §2.1.
    """
    if not isinstance(params, dict):
        check_params("params", params, _G_KEYS)
    xp = ns(trees=(("params", params),))
    check_magnet(xp, params, _G_KEYS, "params")
    return _magnet_g(xp, params)


def magnet_gc(params: Params) -> Any:
    """MAGNet_GC: MAGNet_G on a 1-D grid of C channel positions, one output: shape (1, 1, C).

    Spec §2.1, used by the hyper-channel and hyper interactions (§2.7, §2.8).
    """
    bias_p = params.get("bias_p")
    if getattr(bias_p, "ndim", 0) != 1:
        raise ValueError(
            f"params['bias_p']: MAGNet_GC runs on a 1-D grid, expected shape (C,), "
            f"got {shape_of(bias_p) if hasattr(bias_p, 'shape') else ()}"
        )
    return magnet_g(params)


def _context(xp: Any, params: Params, x: Any, k: tuple[int, ...]) -> Any:
    pooled = _adaptive_avg_pool(xp, x, k)
    r = _pointwise_linear(xp, params["reduce"], pooled)
    m = xp.reshape(xp.mean(r, axis=0), (r.shape[1], -1))
    return _gelu(xp, _dense(xp, params["fc1"], m))


def check_magnet_l(xp: Any, params: Params, x: Any, check_finite: bool, name: str = "params") -> Any:
    """Validate MAGNet_L parameters and its context input x (B, C_out, *S)."""
    check_magnet(xp, params, _L_KEYS, name)
    d = params["bias_p"].ndim
    x = as_float_array(xp, "x", x, ndim=d + 2, dtype=params["bias_p"].dtype)
    c_out = params["output"]["weight"].shape[0]
    if x.shape[1] != c_out:
        raise ValueError(f"x: MAGNet_L context must have C_out={c_out} channels, got shape {shape_of(x)}")
    hidden = check_linear_params(xp, params["reduce"], c_out, x.dtype, f"{name}['reduce']")
    check_linear_params(xp, params["fc1"], hidden, x.dtype, f"{name}['fc1']")
    if check_finite:
        _check_finite(xp, "x", x)
    return x


def _magnet_l(xp: Any, params: Params, x: Any, frozen: list | None = None, static: dict | None = None) -> Any:
    """``static``: ``_magnet_l_static(xp, params)`` if already computed (input-independent)."""
    k = shape_of(params["bias_p"])
    ctx = _context(xp, params, x, k)
    out = _mfn_forward(xp, params, _points(xp, k, x), ctx, frozen, static)
    return xp.reshape(out, (out.shape[0], 1) + k)


def magnet_l(params: Params, x: Any, *, stop_gradient_values: list | None = None, check_finite: bool = True) -> Any:
    """MAGNet_L: a context-dependent local kernel (spec §2.1).

    g = GELU(fc1(mean_b(reduce(adaptive_avg_pool(x, k))))); h_1 = g_0(c);
    u = g_i(c) ⊙ A_i(h_i) + bias_p; u' = stopgrad(u) + 0.1·u/max(‖u‖, 1e-12) per hidden channel;
    h_{i+1} = u' ⊙ X_i(g); K = A_o(h_{L+1}). One kernel per batch (the batch mean removes B).
    The stop-gradient is the backend's (torch ``.detach()``; identity for libraries without
    autodiff). ``stop_gradient_values`` (one (H, N) array per layer, same library) replaces it by
    fixed values, as in the reference.

    Shapes: x (B, C_out, *S) → (C_out, 1, k, …, k), k = bias_p.shape.
    """
    if not isinstance(params, dict):
        check_params("params", params, _L_KEYS)
    frozen = list(stop_gradient_values) if stop_gradient_values is not None else []
    xp = ns(("x", x), *((f"stop_gradient_values[{i}]", v) for i, v in enumerate(frozen)), trees=(("params", params),))
    x = check_magnet_l(xp, params, x, check_finite)
    return _magnet_l(xp, params, x, stop_gradient_values)


__all__ = ["coordinate_grid", "magnet_g", "magnet_gc", "magnet_l"]

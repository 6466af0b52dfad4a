"""The SFNE (slow-fast neural encoding) block (spec §1.3, §2.11).

Parameter layout, branch roles and concatenation order are those of ``reference._block`` (see its
module docstring); this module computes the same thing with any array-API library.
"""

from __future__ import annotations

from typing import Any

from . import _backend as B
from ._activations import _gelu, _si_glu
from ._checks import as_float_array, check_params, ns, shape_of
from ._checks import check_finite as _check_finite
from ._hyperzzw import _local_conv_pre_activation
from ._interaction import (
    _channel_kernel,
    _hyper_channel_interaction,
    _hyper_interaction,
    _rgu_pre_activation,
    check_hci,
    check_hi,
    check_rgu,
)
from ._linear import (
    _bottleneck_branches,
    _bottleneck_weights,
    _pointwise_linear_sum,
    _stacked,
    _stacked_linears,
    check_linear_params,
)
from ._slow_net import (
    _G_KEYS,
    _L_KEYS,
    _batched,
    _magnet_g,
    _magnet_g_many,
    _magnet_l,
    _magnet_l_static,
    _magnet_l_static_many,
    check_magnet,
)
from ._standardize import _g_ibs, _instance_standardize, check_groups
from .reference import BLOCK_KEYS, LOCAL_ROLES, check_global_grid, concat_order, local_roles


def tile_channels(x: Any, reps: int) -> Any:
    """tile(t, s): repeat the whole channel stack s times, [t, t, …] (torch ``repeat(1, s, 1, 1)``),
    as the block tiles x_pre and x_pre_pre before the bottleneck (spec §1.3).

    Shapes: x (B, C, *S) → (B, s·C, *S).
    """
    xp = ns(("x", x))
    x = as_float_array(xp, "x", x)
    if x.ndim < 2:
        raise ValueError(f"x: expected (B, C, *spatial), got shape {shape_of(x)}")
    return xp.tile(x, (1, int(reps)) + (1,) * (x.ndim - 2))


def _tile_to(name: str, channels: int, c: int) -> int:
    if c % channels:
        raise ValueError(f"{name}: its {channels} channels must divide the block's {c} input channels")
    return c // channels


Layout = list[tuple[str, int, int, Any]]


def _channels(x: Any | None) -> int | None:
    return None if x is None else int(x.shape[1])


def _branch_layout(params: dict, c: int, pre: tuple[int | None, int | None]) -> Layout:
    """The bottleneck's branches in concatenation order (§1.3) as (name, C_i, s_i, c_i): x_pre and
    x_pre_pre of ``pre`` = (C_pre, C_pre_pre) channels (None where absent) tiled s_i = c / C_i times
    to the block's c input channels, every other branch c channels once; c_i the local branches'
    shift b_i, None for the others."""
    n_local = len(params["local"])
    shifts = {role: p["bias"] for role, p in zip(local_roles(n_local), params["local"], strict=True)}
    channels = {"x_pre": pre[0], "x_pre_pre": pre[1]}
    layout = []
    for name in concat_order(n_local, pre[0] is not None, pre[1] is not None):
        n = channels.get(name)
        layout.append((name, c, 1, shifts.get(name)) if n is None else (name, n, _tile_to(name, n, c), None))
    return layout


def _layout_key(layout: Layout) -> tuple:
    """What of a layout the folded bottleneck weights depend on besides the parameters."""
    return tuple((name, n, reps) for name, n, reps, _ in layout)


def _prepared_linears(xp: Any, params: dict, pre: tuple[int | None, int | None] | None) -> dict[str, Any]:
    """The input-independent parts of a block's point-wise linears: each RGU's stacked linears
    (the fast one's with the channel mixer, :func:`_stacked`) and, where ``pre`` (the x_pre and
    x_pre_pre channels, as :func:`_branch_layout` takes them) is given, the bottleneck's folded
    weights with their layout (:func:`_bottleneck_weights`)."""
    rs, rf = params["rgu_slow"], params["rgu_fast"]
    out: dict[str, Any] = {
        "rgu_slow": _stacked(xp, [rs["w_k"], rs["w_v"]]),
        "rgu_fast": _stacked(xp, [rf["w_k"], rf["w_v"], params["mixer"]]),
    }
    if pre is not None:
        layout = _branch_layout(params, int(params["mixer"]["weight"].shape[0]), pre)
        weights = _bottleneck_weights(xp, params["bottleneck"], [entry[1:] for entry in layout])
        out["bottleneck"] = (_layout_key(layout), weights)
    return out


def _slow_kernels_many(
    xp: Any, blocks: list[dict], pre: list[tuple[int | None, int | None]] | None = None
) -> list[dict[str, Any]]:
    """The input-independent slow-network outputs of each block: K_g (1, C, *S) of MAGNet_G, the
    channel kernels K_c (C,) and K_cc (C,) of the two interactions, the hyper interaction's
    spatial kernel K_ss (*S), per local branch MAGNet_L's input-independent prefix
    (``_magnet_l_static``), and the input-independent parts of the block's linears
    (:func:`_prepared_linears`; the bottleneck's where ``pre``, block i's x_pre and x_pre_pre
    channels, is given). They depend on the parameters only: compute them once per parameter
    update (and cache them between updates, as the torch adapter does in eval mode).

    Networks of one structure across ``blocks`` run as one batch (spec §2.1): the blocks'
    MAGNet_G, the spatial MAGNet_G when the blocks share the input size, and the MAGNet_L of
    equal kernel size. The channel kernels have one grid point per channel, so they differ in
    size from block to block and run one by one."""
    k_g = _batched(xp, _magnet_g_many, _magnet_g, [bp["slow_g"] for bp in blocks])
    k_ss = _batched(xp, _magnet_g_many, _magnet_g, [bp["hi"]["spatial"] for bp in blocks])
    statics = iter(
        _batched(xp, _magnet_l_static_many, _magnet_l_static, [p["slow_l"] for bp in blocks for p in bp["local"]])
    )
    return [
        {
            "k_g": k_g[i],
            "k_c": _channel_kernel(xp, bp["hci"]["channel"]),
            "k_cc": _channel_kernel(xp, bp["hi"]["channel"]),
            "k_ss": k_ss[i][0, 0, ...],
            "local": [next(statics) for _ in bp["local"]],
            "linears": _prepared_linears(xp, bp, None if pre is None else pre[i]),
        }
        for i, bp in enumerate(blocks)
    ]


def _slow_kernels(xp: Any, params: dict) -> dict[str, Any]:
    """One block's :func:`_slow_kernels_many`."""
    return _slow_kernels_many(xp, [params])[0]


def _forward(
    xp: Any,
    params: dict,
    z: Any,
    x_pre: Any,
    x_pre_pre: Any,
    groups: int,
    eps: float,
    grid: Any,
    dropout_mask: Any,
    frozen: dict | None = None,
    kernels: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The block on validated inputs (no checks beyond static shapes).

    ``kernels``: the block's ``_slow_kernels`` if already computed (else computed here).
    """
    c = z.shape[1]
    if kernels is None:
        kernels = _slow_kernels(xp, params)
    k_g = kernels["k_g"]
    if shape_of(k_g)[1:] != shape_of(z)[1:]:
        raise ValueError(
            f"params['slow_g']: K_g has shape {shape_of(k_g)}; expected (1,) + z.shape[1:] = "
            f"{(1,) + shape_of(z)[1:]} (kernel size follows the input size, §5 Q8)"
        )
    zhat = z * k_g
    # the linears that share an input run as one product each; both RGUs end in one sum (§1.3 steps 2-4)
    rs, rf = params["rgu_slow"], params["rgu_fast"]
    linears = kernels["linears"]
    (k_s, v_s), slow = _stacked_linears(xp, [rs["w_k"], rs["w_v"]], zhat, linears["rgu_slow"])
    (k_f, v_f, mixed), fast = _stacked_linears(xp, [rf["w_k"], rf["w_v"], params["mixer"]], z, linears["rgu_fast"])
    # each RGU's gate gets its stacked product's operands, from which a backend may recompute K and V
    # for backward instead of keeping them (the input is kept anyway); W_y·A, A = GELU(n) + bias_p,
    # takes the GELU and bias_p inside the product (as the bottleneck takes the local branches'
    # GELU), so that training keeps of each RGU only n, which IS keeps anyway
    n_s = _rgu_pre_activation(xp, rs, k_s, v_s, eps, (slow, zhat))
    n_f = _rgu_pre_activation(xp, rf, k_f, v_f, eps, (fast, z))
    r_sum = _pointwise_linear_sum(xp, [rs["w_y"], rf["w_y"]], [n_s, n_f], [True, True], [rs["bias_p"], rf["bias_p"]])
    t = {"Z": z}
    t["fast"] = _instance_standardize(xp, r_sum, eps)
    t["M"] = _instance_standardize(xp, mixed, eps)
    t["Hc"] = _instance_standardize(xp, _hyper_channel_interaction(xp, params["hci"], z, kernels["k_c"]), eps)
    be = B.backend(xp)  # Ẑ = Z ⊙ K_g formed once above, or fused into the product's tiles (CuPy)
    t["G1"], t["G2"], t["G3"] = be.global_products(xp, z, k_g, [t["fast"], t["M"], t["Hc"]], grid, zhat=zhat)
    t["S"] = _si_glu(xp, t["G1"])
    t["HI"] = _hyper_interaction(xp, params["hi"], t["G1"], z, (kernels["k_cc"], kernels["k_ss"]))
    for j, (role, p) in enumerate(zip(local_roles(len(params["local"])), params["local"], strict=True)):
        ctx, inp = LOCAL_ROLES[role]
        kernel = _magnet_l(xp, p["slow_l"], t[ctx], None if frozen is None else frozen[role], kernels["local"][j])
        # L_i = LocalConv(…) + b_i = GELU(BS(…)) + b_i: the GELU is taken inside the bottleneck's
        # product (so that training keeps BS(…) only, not L_i too) and b_i folded into its bias
        t[role] = _local_conv_pre_activation(xp, p["mixer"], t[inp], kernel, eps)
    t["x_pre"], t["x_pre_pre"] = x_pre, x_pre_pre
    layout = _branch_layout(params, c, (_channels(x_pre), _channels(x_pre_pre)))
    prepared = linears.get("bottleneck")
    weights = prepared[1] if prepared is not None and prepared[0] == _layout_key(layout) else None
    branches = [(t[name], reps, shift, name in LOCAL_ROLES) for name, _, reps, shift in layout]
    p_out = _bottleneck_branches(xp, params["bottleneck"], branches, weights)
    t.clear()  # what backward does not keep is freed before the block's last, largest arrays
    branches.clear()
    y = _g_ibs(xp, p_out, groups, eps)
    del p_out
    out = _gelu(xp, y) + params["bias"]
    if dropout_mask is not None:
        out = out * xp.reshape(dropout_mask, tuple(dropout_mask.shape) + (1,) * (z.ndim - 2))
    return out, k_g


def check_block_params(xp: Any, params: dict, z: Any, n_pre: int, groups: int) -> None:
    """Validate every parameter of a block for the input ``z`` (reference messages and names)."""
    check_params("params", params, BLOCK_KEYS)
    c, dt, zs = z.shape[1], z.dtype, shape_of(z)
    check_magnet(xp, params["slow_g"], _G_KEYS, "params['slow_g']")
    k_shape = (1, params["slow_g"]["output"]["weight"].shape[0]) + shape_of(params["slow_g"]["bias_p"])
    if k_shape[1:] != zs[1:]:
        raise ValueError(
            f"params['slow_g']: K_g has shape {k_shape}; expected (1,) + z.shape[1:] = "
            f"{(1,) + zs[1:]} (kernel size follows the input size, §5 Q8)"
        )
    check_rgu(xp, params["rgu_slow"], zs, dt, "params['rgu_slow']")
    check_rgu(xp, params["rgu_fast"], zs, dt, "params['rgu_fast']")
    check_linear_params(xp, params["mixer"], c, dt, "params['mixer']")
    check_hci(xp, params["hci"], zs, "params['hci']")
    check_hi(xp, params["hi"], zs, "params['hi']")
    local = params["local"]
    if not isinstance(local, (list, tuple)):
        raise TypeError(f"params['local']: expected a list of local branches, got {type(local).__name__}")
    local_roles(len(local))
    for i, p in enumerate(local):
        name = f"params['local'][{i}]"
        check_params(name, p, ("slow_l", "mixer", "bias"))
        check_magnet(xp, p["slow_l"], _L_KEYS, f"{name}['slow_l']")
        if p["slow_l"]["bias_p"].ndim != z.ndim - 2:
            raise ValueError(
                f"{name}['slow_l']['bias_p']: expected a {z.ndim - 2}-D kernel grid, got shape "
                f"{shape_of(p['slow_l']['bias_p'])}"
            )
        if p["slow_l"]["output"]["weight"].shape[0] != c:
            raise ValueError(
                f"{name}['slow_l']['output']['weight']: expected {c} outputs (one kernel per "
                f"channel), got shape {shape_of(p['slow_l']['output']['weight'])}"
            )
        hidden = check_linear_params(xp, p["slow_l"]["reduce"], c, dt, f"{name}['slow_l']['reduce']")
        check_linear_params(xp, p["slow_l"]["fc1"], hidden, dt, f"{name}['slow_l']['fc1']")
        check_linear_params(xp, p["mixer"], c, dt, f"{name}['mixer']")
        as_float_array(xp, f"{name}['bias']", p["bias"], ndim=0, dtype=dt)
    n_branches = 6 + len(local) + n_pre
    w_shape = shape_of(params["bottleneck"]["weight"]) if hasattr(params["bottleneck"]["weight"], "shape") else ()
    if len(w_shape) == 2 and w_shape[1] != n_branches * c:
        raise ValueError(
            f"params['bottleneck']['weight']: shape {w_shape} takes {w_shape[1]} input channels, but z "
            f"({c} channels) with {n_pre} previous-block input(s) makes {n_branches} branches = "
            f"{n_branches * c} channels; is an x_pre / x_pre_pre input missing or extra?"
        )
    out_ch = check_linear_params(xp, params["bottleneck"], n_branches * c, dt, "params['bottleneck']")
    as_float_array(xp, "params['bias']", params["bias"], ndim=0, dtype=dt)
    check_groups((zs[0], out_ch) + zs[2:], groups)


def _validate(
    xp: Any, params: dict, z: Any, x_pre: Any, x_pre_pre: Any, grid: Any, dropout_mask: Any, check_finite: bool
) -> tuple[Any, Any, Any, Any]:
    z = as_float_array(xp, "z", z, ndim=(3, 4))
    check_params("params", params, BLOCK_KEYS)
    check_global_grid("z", shape_of(z), grid)
    arrays = {"z": z}
    if x_pre_pre is not None and x_pre is None:
        raise ValueError("x_pre_pre: given without x_pre (blocks concatenate x_pre first)")
    for name, x in (("x_pre", x_pre), ("x_pre_pre", x_pre_pre)):
        if x is not None:
            x = as_float_array(xp, name, x, ndim=z.ndim, dtype=z.dtype)
            if x.shape[0] != z.shape[0] or shape_of(x)[2:] != shape_of(z)[2:]:
                raise ValueError(
                    f"{name}: expected (B, C_pre, *S) = ({z.shape[0]}, *, "
                    f"{', '.join(map(str, shape_of(z)[2:]))}), got {shape_of(x)}"
                )
            arrays[name] = x
    if dropout_mask is not None:
        dropout_mask = as_float_array(xp, "dropout_mask", dropout_mask, ndim=2, dtype=z.dtype)
    if check_finite:
        for name, x in arrays.items():
            _check_finite(xp, name, x)
    return z, arrays.get("x_pre"), arrays.get("x_pre_pre"), dropout_mask


def sfne_block(
    params: dict,
    z: Any,
    x_pre: Any = None,
    x_pre_pre: Any = None,
    *,
    groups: int = 12,
    eps: float = 1e-5,
    grid: tuple[int, int] | None = None,
    dropout_mask: Any = None,
    stop_gradient_values: dict | None = None,
    check_finite: bool = True,
) -> tuple[Any, Any]:
    """One SFNE block: returns ``(out, K_g)`` (spec §1.3, §2.11).

    K_g = MAGNet_G(); Ẑ = Z ⊙ K_g; fast = IS(RGU_slow(Ẑ) + RGU_fast(Z)); M = IS(mixer(Z));
    Hc = IS(HCI(Z)); G1, G2, G3 = Ẑ @ fast, Ẑ @ M, Ẑ @ Hc; S = SiLU(G1); HI = HI(G1, Z);
    L_i = LocalConv(MAGNet_L_i(ctx_i), in_i) + b_i; P = bottleneck(concat);
    out = GELU(G-IBS(P)) + b, times ``dropout_mask`` (B, bf·C) of 0 or 1/(1−p) if given.

    Shapes: z (B, C, *S) → out (B, bf·C, *S), K_g (1, C, *S). x_pre, x_pre_pre (B, C_pre, *S)
    with C_pre dividing C are tiled to C channels. 1D inputs need ``grid`` (see hyperzzw_global).
    ``stop_gradient_values`` ({role: per-layer arrays}) freezes MAGNet_L's stop-gradient terms.
    """
    xp, z, x_pre, x_pre_pre, dropout_mask = checked_inputs(
        params, z, x_pre, x_pre_pre, groups, grid, dropout_mask, check_finite
    )
    return _forward(xp, params, z, x_pre, x_pre_pre, groups, eps, grid, dropout_mask, stop_gradient_values)


def checked_inputs(
    params: dict, z: Any, x_pre: Any, x_pre_pre: Any, groups: int, grid: Any, dropout_mask: Any, check_finite: bool
) -> tuple[Any, Any, Any, Any, Any]:
    """The block's namespace and validated inputs ``(xp, z, x_pre, x_pre_pre, dropout_mask)``, after
    checking every input and parameter (shared by :func:`sfne_block` and the torch adapter)."""
    xp = ns(
        ("z", z),
        ("x_pre", x_pre),
        ("x_pre_pre", x_pre_pre),
        ("dropout_mask", dropout_mask),
        trees=(("params", params),),
    )
    z, x_pre, x_pre_pre, dropout_mask = _validate(xp, params, z, x_pre, x_pre_pre, grid, dropout_mask, check_finite)
    check_block_params(xp, params, z, (x_pre is not None) + (x_pre_pre is not None), groups)
    return xp, z, x_pre, x_pre_pre, dropout_mask

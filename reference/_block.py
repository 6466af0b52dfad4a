"""The SFNE (slow-fast neural encoding) block (spec §1.3, §2.11).

Parameters of one block (C input channels, bf the bottleneck factor)::

    "slow_g":     MAGNet_G → K_g (1, C, *S)
    "rgu_fast":   RGU on Z          "rgu_slow": RGU on Ẑ = Z ⊙ K_g
    "mixer":      Linear C→C (the channel mixer M = IS(mixer(Z)))
    "hci":        {"channel": MAGNet_GC}                  hyper-channel interaction
    "hi":         {"channel": MAGNet_GC, "spatial": MAGNet_G}   hyper interaction
    "local":      4 (or 3) × {"slow_l": MAGNet_L, "mixer": Linear C→C, "bias": ()}
    "bottleneck": Linear (n_branches·C) → bf·C
    "bias":       () scalar added after GELU(G-IBS(P))

Local branches (spec §2.3), kernel sizes from their ``slow_l['bias_p']``:

    L1: K from Z,  applied to Hc      L2: K from Hc, applied to Z
    L3: K from M,  applied to Z       L4: K from Z,  applied to M

With three local entries they are L2, L3, L4: the paper's 9-branch variant (§5 Q11).
"""

from __future__ import annotations

import numpy as np

from ._activations import gelu, gelu_vjp, si_glu, si_glu_vjp
from ._checks import as_float_array, check_params
from ._checks import check_finite as _check_finite
from ._hyperzzw import check_global_grid, hyperzzw_global, hyperzzw_global_vjp, local_conv, local_conv_vjp, unbroadcast
from ._interaction import (
    hyper_channel_interaction,
    hyper_channel_interaction_vjp,
    hyper_interaction,
    hyper_interaction_vjp,
    rgu,
    rgu_vjp,
)
from ._linear import pointwise_linear, pointwise_linear_vjp
from ._slow_net import _magnet_l_forward, magnet_g, magnet_g_vjp, magnet_l_vjp
from ._standardize import g_ibs, g_ibs_vjp, instance_standardize, instance_standardize_vjp

BLOCK_KEYS = ("slow_g", "rgu_fast", "rgu_slow", "mixer", "hci", "hi", "local", "bottleneck", "bias")
#: role → (source of the kernel's context, tensor the kernel is applied to)
LOCAL_ROLES = {"L1": ("Z", "Hc"), "L2": ("Hc", "Z"), "L3": ("M", "Z"), "L4": ("Z", "M")}


def local_roles(n_local: int) -> tuple[str, ...]:
    """The local branch names for 4 (author's code) or 3 (paper's 9-branch variant) branches."""
    if n_local == 4:
        return ("L1", "L2", "L3", "L4")
    if n_local == 3:
        return ("L2", "L3", "L4")
    raise ValueError(f"params['local']: expected 4 local branches (or 3 for the 9-branch variant), got {n_local}")


def concat_order(n_local: int, has_pre: bool, has_pre_pre: bool) -> list[str]:
    """Channel concatenation order of the branches (spec §1.3)."""
    order = ["G1", "L2"] + (["x_pre"] if has_pre else []) + ["fast", "G2"]
    order += ["L1"] if n_local == 4 else []
    order += ["S", "L3", "G3", "L4"] + (["x_pre_pre"] if has_pre_pre else []) + ["HI"]
    return order


def tile_channels(x: np.ndarray, reps: int) -> np.ndarray:
    """tile(t, s): repeat the whole channel stack s times, [t, t, …] (torch ``repeat(1, s, 1, 1)``),
    as the block tiles x_pre and x_pre_pre before the bottleneck (spec §1.3)."""
    return np.tile(x, (1, reps) + (1,) * (x.ndim - 2))


def tile_channels_vjp(x: np.ndarray, reps: int, g: np.ndarray) -> np.ndarray:
    """VJP of :func:`tile_channels`: sum over the repeats."""
    return g.reshape((g.shape[0], reps) + tuple(x.shape[1:])).sum(axis=1)


def _tile_to(name: str, x: np.ndarray, c: int) -> int:
    if c % x.shape[1]:
        raise ValueError(f"{name}: its {x.shape[1]} channels must divide the block's {c} input channels")
    return c // x.shape[1]


def _forward(
    params: dict,
    z: np.ndarray,
    x_pre,
    x_pre_pre,
    groups: int,
    eps: float,
    grid,
    dropout_mask,
    frozen: dict | None = None,
):
    c = z.shape[1]
    k_g = magnet_g(params["slow_g"])
    if k_g.shape[1:] != z.shape[1:]:
        raise ValueError(
            f"params['slow_g']: K_g has shape {k_g.shape}; expected (1,) + z.shape[1:] = "
            f"{(1,) + z.shape[1:]} (kernel size follows the input size, §5 Q8)"
        )
    zhat = z * k_g
    r_sum = rgu(params["rgu_slow"], zhat, eps=eps, check_finite=False) + rgu(
        params["rgu_fast"], z, eps=eps, check_finite=False
    )
    t = {"Z": z}
    t["fast"] = instance_standardize(r_sum, eps, check_finite=False)
    m_lin = pointwise_linear(params["mixer"], z, check_finite=False)
    t["M"] = instance_standardize(m_lin, eps, check_finite=False)
    hci_raw = hyper_channel_interaction(params["hci"], z, check_finite=False)
    t["Hc"] = instance_standardize(hci_raw, eps, check_finite=False)
    for name, y in (("G1", "fast"), ("G2", "M"), ("G3", "Hc")):
        t[name] = hyperzzw_global(z, k_g, t[y], grid=grid, check_finite=False)
    t["S"] = si_glu(t["G1"], check_finite=False)
    t["HI"] = hyper_interaction(params["hi"], t["G1"], z, check_finite=False)
    kernels, stop_values = {}, {}
    for role, p in zip(local_roles(len(params["local"])), params["local"], strict=True):
        ctx, inp = LOCAL_ROLES[role]
        kernels[role], stop_values[role] = _magnet_l_forward(
            p["slow_l"], t[ctx], None if frozen is None else frozen[role]
        )
        t[role] = local_conv(p["mixer"], t[inp], kernels[role], eps=eps, check_finite=False) + p["bias"]
    if x_pre is not None:
        t["x_pre"] = tile_channels(x_pre, _tile_to("x_pre", x_pre, c))
    if x_pre_pre is not None:
        t["x_pre_pre"] = tile_channels(x_pre_pre, _tile_to("x_pre_pre", x_pre_pre, c))
    order = concat_order(len(params["local"]), x_pre is not None, x_pre_pre is not None)
    cat = np.concatenate([t[n] for n in order], axis=1)
    p_out = pointwise_linear(params["bottleneck"], cat, check_finite=False)
    q = g_ibs(p_out, groups, eps, check_finite=False)
    out = gelu(q, check_finite=False) + params["bias"]
    if dropout_mask is not None:
        out = out * dropout_mask.reshape(dropout_mask.shape + (1,) * (z.ndim - 2))
    cache = dict(
        t=t,
        k_g=k_g,
        zhat=zhat,
        r_sum=r_sum,
        m_lin=m_lin,
        hci_raw=hci_raw,
        kernels=kernels,
        order=order,
        cat=cat,
        stop_values=stop_values,
        p_out=p_out,
        q=q,
        x_pre=x_pre,
        x_pre_pre=x_pre_pre,
        grid=grid,
        groups=groups,
        eps=eps,
        dropout_mask=dropout_mask,
    )
    return out, k_g, cache


def _backward(params: dict, cache: dict, g_out: np.ndarray, g_kg: np.ndarray | None):
    t, k_g, eps, grid = cache["t"], cache["k_g"], cache["eps"], cache["grid"]
    z = t["Z"]
    grads: dict = {}
    if cache["dropout_mask"] is not None:
        m = cache["dropout_mask"]
        g_out = g_out * m.reshape(m.shape + (1,) * (z.ndim - 2))
    grads["bias"] = np.asarray(g_out.sum(), dtype=z.dtype)
    gp = g_ibs_vjp(cache["p_out"], gelu_vjp(cache["q"], g_out), cache["groups"], eps)
    grads["bottleneck"], gcat = pointwise_linear_vjp(params["bottleneck"], cache["cat"], gp)
    g = {}
    offset = 0
    for name in cache["order"]:
        width = t[name].shape[1]
        g[name] = gcat[:, offset : offset + width]
        offset += width
    for name in ("Z", "M", "Hc"):  # inputs of branches, not concatenated themselves
        g[name] = np.zeros_like(z)
    gk_g = np.zeros_like(k_g) if g_kg is None else np.array(g_kg, dtype=z.dtype)

    grads["local"] = []
    for role, p in zip(local_roles(len(params["local"])), params["local"], strict=True):
        ctx, inp = LOCAL_ROLES[role]
        gl = g[role]
        gmix, g_inp, gk_l = local_conv_vjp(p["mixer"], t[inp], cache["kernels"][role], gl, eps=eps)
        gslow, g_ctx = magnet_l_vjp(p["slow_l"], t[ctx], gk_l)
        g[inp] = g[inp] + g_inp
        g[ctx] = g[ctx] + g_ctx
        grads["local"].append({"slow_l": gslow, "mixer": gmix, "bias": np.asarray(gl.sum(), dtype=z.dtype)})
    grads["hi"], g_g1, g_z = hyper_interaction_vjp(params["hi"], t["G1"], z, g["HI"])
    g["G1"] = g["G1"] + g_g1 + si_glu_vjp(t["G1"], g["S"])
    g["Z"] = g["Z"] + g_z
    for name, y in (("G1", "fast"), ("G2", "M"), ("G3", "Hc")):
        gz_, gk_, gy_ = hyperzzw_global_vjp(z, k_g, t[y], g[name], grid=grid)
        g["Z"] = g["Z"] + gz_
        gk_g = gk_g + gk_
        g[y] = g[y] + gy_
    grads["hci"], g_z = hyper_channel_interaction_vjp(
        params["hci"], z, instance_standardize_vjp(cache["hci_raw"], g["Hc"], eps)
    )
    g["Z"] = g["Z"] + g_z
    grads["mixer"], g_z = pointwise_linear_vjp(
        params["mixer"], z, instance_standardize_vjp(cache["m_lin"], g["M"], eps)
    )
    g["Z"] = g["Z"] + g_z
    g_r = instance_standardize_vjp(cache["r_sum"], g["fast"], eps)
    grads["rgu_slow"], g_zhat = rgu_vjp(params["rgu_slow"], cache["zhat"], g_r, eps=eps)
    grads["rgu_fast"], g_z = rgu_vjp(params["rgu_fast"], z, g_r, eps=eps)
    g["Z"] = g["Z"] + g_z + g_zhat * k_g
    gk_g = gk_g + unbroadcast(g_zhat * z, k_g.shape)
    grads["slow_g"] = magnet_g_vjp(params["slow_g"], gk_g)
    g_pre = g_pp = None
    if cache["x_pre"] is not None:
        g_pre = tile_channels_vjp(cache["x_pre"], z.shape[1] // cache["x_pre"].shape[1], g["x_pre"])
    if cache["x_pre_pre"] is not None:
        g_pp = tile_channels_vjp(cache["x_pre_pre"], z.shape[1] // cache["x_pre_pre"].shape[1], g["x_pre_pre"])
    return {k: grads[k] for k in BLOCK_KEYS}, g["Z"], g_pre, g_pp


def _validate(params, z, x_pre, x_pre_pre, grid, dropout_mask, check_finite):
    z = as_float_array("z", z, ndim=(3, 4))
    check_params("params", params, BLOCK_KEYS)
    check_global_grid("z", z.shape, grid)
    arrays = {"z": z}
    if x_pre_pre is not None and x_pre is None:
        raise ValueError("x_pre_pre: given without x_pre (blocks concatenate x_pre first)")
    for name, x in (("x_pre", x_pre), ("x_pre_pre", x_pre_pre)):
        if x is not None:
            x = as_float_array(name, x, ndim=z.ndim, dtype=z.dtype)
            if x.shape[0] != z.shape[0] or x.shape[2:] != z.shape[2:]:
                raise ValueError(
                    f"{name}: expected (B, C_pre, *S) = ({z.shape[0]}, *, "
                    f"{', '.join(map(str, z.shape[2:]))}), got {x.shape}"
                )
            arrays[name] = x
    if dropout_mask is not None:
        dropout_mask = as_float_array("dropout_mask", dropout_mask, ndim=2, dtype=z.dtype)
    w_shape = np.shape(params["bottleneck"]["weight"])
    n_in = w_shape[1]
    n_branches = 6 + len(params["local"]) + (x_pre is not None) + (x_pre_pre is not None)
    if n_in != n_branches * z.shape[1]:
        raise ValueError(
            f"params['bottleneck']['weight']: shape {w_shape} takes {n_in} input channels, "
            f"but z ({z.shape[1]} "
            f"channels) with {'x_pre' if x_pre is not None else 'no x_pre'} and "
            f"{'x_pre_pre' if x_pre_pre is not None else 'no x_pre_pre'} makes {n_branches} branches "
            f"= {n_branches * z.shape[1]} channels; is an x_pre / x_pre_pre input missing or extra?"
        )
    if check_finite:
        for name, x in arrays.items():
            _check_finite(name, x)
    return z, arrays.get("x_pre"), arrays.get("x_pre_pre"), dropout_mask


def sfne_block(
    params: dict,
    z: np.ndarray,
    x_pre: np.ndarray | None = None,
    x_pre_pre: np.ndarray | None = None,
    *,
    groups: int = 12,
    eps: float = 1e-5,
    grid: tuple[int, int] | None = None,
    dropout_mask: np.ndarray | None = None,
    stop_gradient_values: dict | None = None,
    check_finite: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One SFNE block: returns ``(out, K_g)`` (spec §1.3, §2.11).

    K_g = MAGNet_G(); Ẑ = Z ⊙ K_g; fast = IS(RGU_slow(Ẑ) + RGU_fast(Z)); M = IS(mixer(Z));
    Hc = IS(HCI(Z)); G1, G2, G3 = Ẑ @ fast, Ẑ @ M, Ẑ @ Hc; S = SiLU(G1); HI = HI(G1, Z);
    L_i = LocalConv(MAGNet_L_i(ctx_i), in_i) + b_i; P = bottleneck(concat);
    out = GELU(G-IBS(P)) + b, times ``dropout_mask`` (B, bf·C) of 0 or 1/(1−p) if given.

    Shapes: z (B, C, *S) → out (B, bf·C, *S), K_g (1, C, *S). x_pre, x_pre_pre (B, C_pre, *S)
    with C_pre dividing C are tiled to C channels. 1D inputs need ``grid`` (see hyperzzw_global).
    ``stop_gradient_values`` ({role: per-layer arrays}, from :func:`sfne_block_stop_gradient_values`)
    freezes MAGNet_L's stop-gradient terms for finite-difference checks (see ``magnet_l``).
    """
    z, x_pre, x_pre_pre, dropout_mask = _validate(params, z, x_pre, x_pre_pre, grid, dropout_mask, check_finite)
    out, k_g, _ = _forward(params, z, x_pre, x_pre_pre, groups, eps, grid, dropout_mask, stop_gradient_values)
    return out, k_g


def sfne_block_stop_gradient_values(
    params: dict,
    z: np.ndarray,
    x_pre: np.ndarray | None = None,
    x_pre_pre: np.ndarray | None = None,
    *,
    groups: int = 12,
    eps: float = 1e-5,
    grid: tuple[int, int] | None = None,
    dropout_mask: np.ndarray | None = None,
) -> dict:
    """The values of every MAGNet_L stop-gradient term of the block, {role: [(H, N) per layer]}."""
    z, x_pre, x_pre_pre, dropout_mask = _validate(params, z, x_pre, x_pre_pre, grid, dropout_mask, False)
    return _forward(params, z, x_pre, x_pre_pre, groups, eps, grid, dropout_mask)[2]["stop_values"]


def sfne_block_vjp(
    params: dict,
    z: np.ndarray,
    x_pre: np.ndarray | None,
    x_pre_pre: np.ndarray | None,
    g: tuple[np.ndarray, np.ndarray | None],
    *,
    groups: int = 12,
    eps: float = 1e-5,
    grid: tuple[int, int] | None = None,
    dropout_mask: np.ndarray | None = None,
):
    """VJP of :func:`sfne_block` for the cotangent ``g = (g_out, g_kg)`` of its output ``(out, K_g)``.

    ``g_kg`` may be None (no gradient into K_g from outside the block). Returns
    ``(grad_params, grad_z, grad_x_pre, grad_x_pre_pre)`` (None for absent inputs).
    """
    if not isinstance(g, (tuple, list)) or len(g) != 2:
        raise TypeError("g: expected the cotangent of (out, K_g) as a pair (g_out, g_kg); g_kg may be None")
    g_out, g_kg = g
    z, x_pre, x_pre_pre, dropout_mask = _validate(params, z, x_pre, x_pre_pre, grid, dropout_mask, False)
    _, _, cache = _forward(params, z, x_pre, x_pre_pre, groups, eps, grid, dropout_mask)
    return _backward(params, cache, g_out, g_kg)

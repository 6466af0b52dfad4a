"""Every reference VJP against 4th-order central finite differences in float64.

Each test draws shapes and a seed with hypothesis, builds random float64 inputs (and parameter
trees at a generic point: zero-initialised biases are moved off zero), and runs
``check_vjp(fn, args, vjp, wrt=i)``: the derivative of ⟨u, fn(args)⟩ for a random cotangent u,
finite differences against ``vjp(*args, u)``. Relative error below 1e-6.

MAGNet_L's s-renormalisation u' = stopgrad(u) + 0.1·u/‖u‖ (spec §2.1) is not the derivative
of the plain forward; its VJP is checked against the forward with the stop-gradient values frozen
at the test point (``magnet_l(..., stop_gradient_values=...)``, same for ``sfne_block``).

Parameter trees are checked on at most ``max_elements`` sampled elements per leaf (the sample is
seeded from the drawn seed); arrays on a sample too, to keep every test fast.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperzzw_core import reference as R
from hyperzzw_core.reference._gradcheck import compare

RTOL = 1e-6
FD_NOISE = 1e-9
SEEDS = st.integers(0, 2**32 - 1)
KERNEL_SIZES = st.sampled_from([1, 3, 5, 7, 9])
OMEGAS = st.sampled_from([2000.0, 30.0, 1.0])  # 2000: the author's ω₀ (filter weights ~1e4)


def examples(n: int) -> settings:
    """``n`` examples under the CI profile (20 by default), scaled with the loaded profile."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 20))


def _inner_abs(out, cot) -> float:
    if isinstance(out, (tuple, list)):
        return sum(_inner_abs(o, c) for o, c in zip(out, cot, strict=True) if c is not None)
    return float(np.sum(np.abs(np.asarray(out) * cot)))


def _random_like(out, rng):
    if isinstance(out, (tuple, list)):
        return type(out)(_random_like(o, rng) for o in out)
    return rng.standard_normal(np.shape(out))


def fd_floor(fn, args, kwargs, cotangent) -> float:
    """What finite differences can resolve: the scalar checked is f = ⟨u, fn(args)⟩, whose
    round-off is a few tens of ε·Σ|u∘fn(args)|; the stencil divides it by the step (1e-5 for
    |x| <= 1): FD_NOISE·Σ|u∘fn(args)| with FD_NOISE = 1e-9 (~30 ε / 1e-5)."""
    return FD_NOISE * _inner_abs(fn(*args, **(kwargs or {})), cotangent)


def assert_vjp(fn, args, vjp, wrt, *, kwargs=None, max_elements=None, seed=0, cotangent=None):
    """check_vjp at rtol 1e-6; elements pass when |a − n| <= rtol·|n| + atol with the checker's
    atol = rtol·max|n|, or the FD resolution floor when the whole gradient is below it (a
    degenerate draw where every derivative is ~0, e.g. a zero-padding-only kernel tap)."""
    # The cotangent and the sampled elements come from their own stream: check_vjp's default,
    # default_rng(seed), would repeat the draws that built the inputs (u == x makes ⟨u, IS(x)⟩
    # nearly flat, for instance).
    seed = int(np.random.default_rng([seed, 1]).integers(2**32))
    if cotangent is None:
        cotangent = _random_like(fn(*args, **(kwargs or {})), np.random.default_rng([seed, 2]))
    res = R.check_vjp(
        fn, args, vjp, wrt=wrt, kwargs=kwargs, max_elements=max_elements, rtol=RTOL, seed=seed, cotangent=cotangent
    )
    floor = fd_floor(fn, args, kwargs, cotangent)
    if not res.passed and res.atol < floor:
        res = R.check_vjp(
            fn,
            args,
            vjp,
            wrt=wrt,
            kwargs=kwargs,
            max_elements=max_elements,
            rtol=RTOL,
            seed=seed,
            cotangent=cotangent,
            atol=floor,
        )
    assert res.passed, str(res)
    assert res.checked > 0
    return res


# ------------------------------------------------------------------------------ strategies


def draw_rng(data) -> tuple[np.random.Generator, int]:
    seed = data.draw(SEEDS, label="seed")
    return np.random.default_rng(seed), seed


def draw_spatial(data, *, dims=None, lo=1, hi=8, min_points=1, label="spatial") -> tuple[int, ...]:
    """1D or 2D spatial sizes in [lo, hi] with at least ``min_points`` positions in all."""
    d = data.draw(st.sampled_from([1, 2]), label=f"{label} dims") if dims is None else dims
    sizes = data.draw(st.lists(st.integers(lo, hi), min_size=d, max_size=d), label=label)
    rest = int(np.prod(sizes[1:]))
    sizes[0] = max(sizes[0], -(-min_points // rest))
    return tuple(sizes)


def draw_bcs(data, *, dims=None, c_hi=6, lo=1, hi=8, min_points=1) -> tuple[int, ...]:
    """(B, C, *S): batch 1-4, channels 1-c_hi, 1D or 2D spatial."""
    b = data.draw(st.integers(1, 4), label="batch")
    c = data.draw(st.integers(1, c_hi), label="channels")
    return (b, c) + draw_spatial(data, dims=dims, lo=lo, hi=hi, min_points=min_points)


def generic(tree, rng: np.random.Generator, scale: float = 0.1):
    """Add N(0, scale²) noise to every leaf (zero-initialised biases and bias maps move off zero),
    except leaves above 10 in magnitude (the slow nets' ~1e4 filter weights, already random)."""

    def move(a):
        a = np.asarray(a, dtype=np.float64)
        if a.size and np.abs(a).max() > 10:
            return a
        return np.asarray(a + scale * rng.standard_normal(a.shape))

    return R.tree_map(move, tree)


def linear_params(rng, o: int, i: int) -> dict:
    return {"weight": rng.standard_normal((o, i)) / np.sqrt(i), "bias": 0.3 * rng.standard_normal(o)}


def magnet_g_params(data, rng, sizes, out_channels, label="magnet") -> dict:
    hidden = data.draw(st.integers(1, 6), label=f"{label} hidden")
    layers = data.draw(st.integers(1, 3), label=f"{label} layers")
    omega = data.draw(OMEGAS, label=f"{label} omega_0")
    p = R.init_magnet_g(rng, tuple(sizes), hidden, out_channels, layers, omega_0=omega)
    p = generic(p, rng)
    for f in p["filters"]:  # phases over a whole period, not only near 0
        f["bias"] = rng.uniform(-np.pi, np.pi, f["bias"].shape)
    return p


def magnet_l_params(data, rng, k, d, out_channels) -> dict:
    hidden = data.draw(st.integers(1, 6), label="magnet_l hidden")
    layers = data.draw(st.integers(1, 3), label="magnet_l layers")
    omega = data.draw(OMEGAS, label="magnet_l omega_0")
    p = generic(R.init_magnet_l(rng, k, d, hidden, out_channels, layers, omega_0=omega), rng)
    for f in p["filters"]:
        f["bias"] = rng.uniform(-np.pi, np.pi, f["bias"].shape)
    return p


def rgu_params(rng, c, spatial) -> dict:
    p = {n: linear_params(rng, c, c) for n in ("w_k", "w_v", "w_q", "w_y")}
    p["bias_p"] = 0.3 * rng.standard_normal(spatial)
    return p


# ------------------------------------------------------------------------------ slow nets


@given(data=st.data())
def test_magnet_g(data):
    rng, seed = draw_rng(data)
    sizes = draw_spatial(data, hi=8, label="grid")
    c_out = data.draw(st.integers(1, 6), label="C_out")
    params = magnet_g_params(data, rng, sizes, c_out)
    assert_vjp(R.magnet_g, (params,), R.magnet_g_vjp, 0, max_elements=6, seed=seed)


@given(data=st.data())
def test_magnet_gc(data):
    rng, seed = draw_rng(data)
    c = data.draw(st.integers(1, 6), label="channels")
    params = magnet_g_params(data, rng, (c,), 1)
    assert_vjp(R.magnet_gc, (params,), R.magnet_gc_vjp, 0, max_elements=6, seed=seed)


def _magnet_l_case(data):
    rng, seed = draw_rng(data)
    d = data.draw(st.sampled_from([1, 2]), label="dims")
    k = data.draw(KERNEL_SIZES, label="kernel size")
    c_out = data.draw(st.integers(1, 6), label="C_out")
    params = magnet_l_params(data, rng, k, d, c_out)
    x = rng.standard_normal((data.draw(st.integers(1, 4), label="batch"), c_out) + draw_spatial(data, dims=d))
    frozen = R.magnet_l_stop_gradient_values(params, x)

    def fn(p, x_):
        return R.magnet_l(p, x_, stop_gradient_values=frozen)

    return fn, (params, x), seed


@given(data=st.data())
def test_magnet_l_wrt_params(data):
    fn, args, seed = _magnet_l_case(data)
    assert_vjp(fn, args, R.magnet_l_vjp, 0, max_elements=4, seed=seed)


@given(data=st.data())
def test_magnet_l_wrt_context(data):
    fn, args, seed = _magnet_l_case(data)
    assert_vjp(fn, args, R.magnet_l_vjp, 1, max_elements=24, seed=seed)


# ------------------------------------------------------------------------------ HyperZ·Z·W


def _broadcast_shape(data, full: tuple[int, ...], label: str) -> tuple[int, ...]:
    """A shape that broadcasts to ``full``: some axes set to 1, maybe leading axes dropped."""
    ones = data.draw(st.lists(st.booleans(), min_size=len(full), max_size=len(full)), label=f"{label} size-1 axes")
    shape = tuple(1 if o else n for o, n in zip(ones, full, strict=True))
    drop = data.draw(st.integers(0, len(full) - 1), label=f"{label} dropped leading axes")
    return shape[drop:]


def _global_case(data):
    rng, seed = draw_rng(data)
    one_d = data.draw(st.booleans(), label="1D with grid")
    b = data.draw(st.integers(1, 4), label="batch")
    c = data.draw(st.integers(1, 6), label="channels")
    if one_d:
        h = data.draw(st.integers(1, 4), label="grid side")
        shape, kwargs = (b, c, h * h), {"grid": (h, h)}
    else:
        h = data.draw(st.integers(1, 8), label="side")
        shape, kwargs = (b, c, h, h), {}
    k_shape = _broadcast_shape(data, shape, "k_g")  # e.g. (1, C, H, W) as in the block
    args = (rng.standard_normal(shape), rng.standard_normal(k_shape), rng.standard_normal(shape))
    return args, kwargs, seed


@given(data=st.data(), wrt=st.sampled_from([0, 1, 2]))
def test_hyperzzw_global(data, wrt):
    args, kwargs, seed = _global_case(data)
    assert_vjp(R.hyperzzw_global, args, R.hyperzzw_global_vjp, wrt, kwargs=kwargs, max_elements=40, seed=seed)


@given(data=st.data(), wrt=st.sampled_from([0, 1]))
def test_hyperzzw_2e_with_broadcasting(data, wrt):
    rng, seed = draw_rng(data)
    nd = data.draw(st.integers(1, 4), label="ndim")
    full = tuple(data.draw(st.lists(st.integers(1, 5), min_size=nd, max_size=nd), label="full shape"))
    k = rng.standard_normal(_broadcast_shape(data, full, "k"))
    z = rng.standard_normal(_broadcast_shape(data, full, "z"))
    assert_vjp(R.hyperzzw_2e, (k, z), R.hyperzzw_2e_vjp, wrt, max_elements=40, seed=seed)


# ------------------------------------------------------------------------------ convolutions


def _conv_case(data, min_points=1):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data, min_points=min_points)
    k = data.draw(KERNEL_SIZES, label="kernel size")
    k_l = rng.standard_normal((shape[1], 1) + (k,) * (len(shape) - 2))
    return rng, seed, rng.standard_normal(shape), k_l


@given(data=st.data(), wrt=st.sampled_from([0, 1]))
def test_depthwise_conv(data, wrt):
    _, seed, y, k_l = _conv_case(data)
    assert_vjp(R.depthwise_conv, (y, k_l), R.depthwise_conv_vjp, wrt, max_elements=40 if wrt == 0 else None, seed=seed)


@given(data=st.data(), wrt=st.sampled_from([0, 1, 2]))
def test_local_conv(data, wrt):
    rng, seed, y, k_l = _conv_case(data, min_points=3)  # standardising 1 or 2 values is degenerate
    params = linear_params(rng, y.shape[1], y.shape[1])
    assert_vjp(R.local_conv, (params, y, k_l), R.local_conv_vjp, wrt, max_elements=30, seed=seed)


@given(data=st.data())
def test_adaptive_avg_pool(data):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data)
    size = tuple(
        data.draw(st.lists(st.integers(1, 9), min_size=len(shape) - 2, max_size=len(shape) - 2), label="output size")
    )
    assert_vjp(
        R.adaptive_avg_pool, (rng.standard_normal(shape), size), R.adaptive_avg_pool_vjp, 0, max_elements=40, seed=seed
    )


@given(data=st.data())
def test_tile_channels(data):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data, c_hi=3)
    reps = data.draw(st.integers(1, 4), label="reps")
    assert_vjp(R.tile_channels, (rng.standard_normal(shape), reps), R.tile_channels_vjp, 0, max_elements=40, seed=seed)


# ------------------------------------------------------------------------------ interactions


@given(data=st.data(), wrt=st.sampled_from([0, 1]))
def test_rgu(data, wrt):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data, min_points=3)  # IS of 1 or 2 values is ±1 whatever the input
    params = rgu_params(rng, shape[1], shape[2:])
    assert_vjp(R.rgu, (params, rng.standard_normal(shape)), R.rgu_vjp, wrt, max_elements=6, seed=seed)


@given(data=st.data(), wrt=st.sampled_from([0, 1]))
def test_hyper_channel_interaction(data, wrt):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data)
    params = {"channel": magnet_g_params(data, rng, (shape[1],), 1, "channel")}
    params["channel"]["output"]["weight"] *= 10.0  # kernels of O(1): a non-trivial gate
    z = 1.0 + rng.standard_normal(shape)  # non-zero channel means: GAP(Z)² matters
    assert_vjp(
        R.hyper_channel_interaction,
        (params, z),
        R.hyper_channel_interaction_vjp,
        wrt,
        max_elements=6 if wrt == 0 else 40,
        seed=seed,
    )


@given(data=st.data(), wrt=st.sampled_from([0, 1, 2]))
def test_hyper_interaction(data, wrt):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data)
    params = {
        "channel": magnet_g_params(data, rng, (shape[1],), 1, "channel"),
        "spatial": magnet_g_params(data, rng, shape[2:], 1, "spatial"),
    }
    for p in params.values():
        p["output"]["weight"] *= 10.0
    y = 1.0 + rng.standard_normal(shape)
    x = rng.standard_normal(shape)
    assert_vjp(
        R.hyper_interaction, (params, y, x), R.hyper_interaction_vjp, wrt, max_elements=5 if wrt == 0 else 40, seed=seed
    )


# ------------------------------------------------------------------------------ element-wise


@given(data=st.data(), op=st.sampled_from(["gelu", "si_glu"]))
def test_elementwise_activations(data, op):
    rng, seed = draw_rng(data)
    nd = data.draw(st.integers(1, 4), label="ndim")
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=nd, max_size=nd), label="shape"))
    scale = data.draw(st.sampled_from([0.1, 1.0, 4.0]), label="scale")
    fn, vjp = (R.gelu, R.gelu_vjp) if op == "gelu" else (R.si_glu, R.si_glu_vjp)
    assert_vjp(fn, (scale * rng.standard_normal(shape),), vjp, 0, max_elements=40, seed=seed)


# ------------------------------------------------------------------------------ standardisations


@given(data=st.data(), op=st.sampled_from(["instance", "batch"]))
def test_standardize(data, op):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data, min_points=3)
    eps = data.draw(st.sampled_from([1e-5, 1e-2]), label="eps")
    x = rng.standard_normal(shape) * data.draw(st.sampled_from([0.01, 1.0, 10.0]), label="scale")
    fn, vjp = {
        "instance": (R.instance_standardize, R.instance_standardize_vjp),
        "batch": (R.batch_standardize, R.batch_standardize_vjp),
    }[op]
    assert_vjp(fn, (x,), vjp, 0, kwargs={"eps": eps}, max_elements=40, seed=seed)


@given(data=st.data())
def test_g_ibs(data):
    rng, seed = draw_rng(data)
    groups = data.draw(st.integers(1, 4), label="groups")
    per_group = data.draw(st.integers(1, 2), label="channels per group")
    b = data.draw(st.integers(1, 4), label="batch")
    shape = (b, groups * per_group) + draw_spatial(data, min_points=3)
    assert_vjp(
        R.g_ibs, (rng.standard_normal(shape),), R.g_ibs_vjp, 0, kwargs={"groups": groups}, max_elements=40, seed=seed
    )


# ------------------------------------------------------------------------------ linear layers


@given(
    data=st.data(), op=st.sampled_from(["pointwise_linear", "bottleneck", "channel_mixer"]), wrt=st.sampled_from([0, 1])
)
def test_linear_layers(data, op, wrt):
    rng, seed = draw_rng(data)
    shape = draw_bcs(data, min_points=3 if op == "channel_mixer" else 1)
    out = shape[1] if op == "channel_mixer" else data.draw(st.integers(1, 6), label="out channels")
    params = linear_params(rng, out, shape[1])
    fn, vjp = {
        "pointwise_linear": (R.pointwise_linear, R.pointwise_linear_vjp),
        "bottleneck": (R.bottleneck, R.bottleneck_vjp),
        "channel_mixer": (R.channel_mixer, R.channel_mixer_vjp),
    }[op]
    assert_vjp(fn, (params, rng.standard_normal(shape)), vjp, wrt, max_elements=40, seed=seed)


# ------------------------------------------------------------------------------ losses


@given(data=st.data(), kind=st.sampled_from(["tiled", "channel_sum"]))
def test_slow_loss(data, kind):
    rng, seed = draw_rng(data)
    n = data.draw(st.integers(2, 4), label="number of kernels")
    spatial = draw_spatial(data, hi=5)
    factors = data.draw(st.lists(st.integers(1, 3), min_size=n - 1, max_size=n - 1), label="factors")
    if kind == "tiled":
        chans = [data.draw(st.integers(1, 2), label="C_0")]
        for f in factors:
            chans.append(chans[-1] * f)
    else:
        chans = data.draw(st.lists(st.integers(1, 6), min_size=n, max_size=n), label="channels")
    kernels = [0.1 * rng.standard_normal((1, c) + spatial) for c in chans]
    assert_vjp(R.slow_loss, (kernels, factors), R.slow_loss_vjp, 0, kwargs={"kind": kind}, max_elements=20, seed=seed)


@given(data=st.data())
def test_label_smoothing_cross_entropy(data):
    rng, seed = draw_rng(data)
    b = data.draw(st.integers(1, 4), label="batch")
    k = data.draw(st.integers(2, 6), label="classes")
    eps = data.draw(st.sampled_from([0.0, 0.09, 0.1, 0.5, 1.0]), label="eps")
    logits = 3.0 * rng.standard_normal((b, k))
    labels = rng.integers(0, k, size=b)
    assert_vjp(
        R.label_smoothing_cross_entropy,
        (logits, labels),
        R.label_smoothing_cross_entropy_vjp,
        0,
        kwargs={"eps": eps},
        seed=seed,
    )


# ------------------------------------------------------------------------------ SFNE block


def _block_config(d: int, n_local: int, k_sizes):
    """A small block family: tiny() (C = 1, 2, 4, 8 over the blocks) on a 4×4 grid / 16 steps."""
    cfg = R.tiny() if d == 2 else R.tiny_1d()
    changes = {"local_kernel_sizes": tuple(k_sizes[:n_local])}
    changes.update({"input_shape": (1, 4, 4)} if d == 2 else {"input_shape": (1, 16), "grid": (4, 4)})
    return cfg.replace(**changes)


def _block_case(data):
    rng, seed = draw_rng(data)
    d = data.draw(st.sampled_from([1, 2]), label="dims")
    n_local = data.draw(st.sampled_from([4, 3]), label="local branches")
    k_sizes = data.draw(st.lists(KERNEL_SIZES, min_size=4, max_size=4), label="local kernel sizes")
    cfg = _block_config(d, n_local, k_sizes)
    i = data.draw(st.integers(0, cfg.num_blocks - 1), label="block index")
    b = data.draw(st.integers(1, 3), label="batch")
    params = generic(R.init_block(rng, cfg, i), rng, 0.05)
    c = cfg.block_channels[i]
    z = rng.standard_normal((b, c) + cfg.spatial_shape)
    n_pre = cfg.num_concat_pre[i]
    x_pre = rng.standard_normal((b, cfg.out_channels[i - 2]) + cfg.spatial_shape) if n_pre >= 1 else None
    x_pp = rng.standard_normal((b, cfg.out_channels[i - 3]) + cfg.spatial_shape) if n_pre >= 2 else None
    kwargs = {"groups": cfg.ibs_groups, "grid": cfg.grid}
    if data.draw(st.booleans(), label="dropout mask"):
        kwargs["dropout_mask"] = (rng.random((b, cfg.out_channels[i])) > 0.3) / 0.7
    frozen = R.sfne_block_stop_gradient_values(params, z, x_pre, x_pp, **kwargs)

    def fn(p, z_, xp, xpp, **kw):
        return R.sfne_block(p, z_, xp, xpp, stop_gradient_values=frozen, **kw)

    # cotangent for both outputs (out, K_g), or None for K_g (the block-internal path only)
    out, k_g = R.sfne_block(params, z, x_pre, x_pp, **kwargs)
    g_kg = rng.standard_normal(k_g.shape) if data.draw(st.booleans(), label="K_g cotangent") else None
    cot = (rng.standard_normal(out.shape), g_kg)
    return fn, (params, z, x_pre, x_pp), kwargs, cot, seed, rng


@examples(8)
@given(data=st.data())
def test_sfne_block_wrt_inputs(data):
    fn, args, kwargs, cot, seed, _ = _block_case(data)
    for wrt in (1, 2, 3):
        if args[wrt] is not None:
            assert_vjp(fn, args, R.sfne_block_vjp, wrt, kwargs=kwargs, cotangent=cot, max_elements=6, seed=seed)


@examples(8)
@given(data=st.data())
def test_sfne_block_wrt_params(data):
    """A drawn sample of 16 parameter leaves (one element each) per example; the network test
    checks every tensor of whole networks."""
    fn, args, kwargs, cot, seed, rng = _block_case(data)
    params = args[0]
    grads = R.sfne_block_vjp(*args, cot, **kwargs)[0]
    flat_p, flat_g = R.flatten(params), R.flatten(grads)
    assert set(flat_g) == set(flat_p)
    keys = [str(k) for k in sorted(rng.choice(sorted(flat_p), size=16, replace=False))]

    def f_of_leaf(key, value):
        moved = R.unflatten({**flat_p, key: value})
        out, k_g = fn(moved, *args[1:], **kwargs)
        return float(np.sum(out * cot[0]) + (0.0 if cot[1] is None else np.sum(k_g * cot[1])))

    res = compare(
        {k: flat_g[k] for k in keys}, f_of_leaf, {k: flat_p[k] for k in keys}, max_elements=1, rtol=RTOL, seed=seed + 1
    )
    floor = fd_floor(fn, args, kwargs, cot)
    if not res.passed and res.atol < floor:  # see assert_vjp
        res = compare(
            {k: flat_g[k] for k in keys},
            f_of_leaf,
            {k: flat_p[k] for k in keys},
            max_elements=1,
            rtol=RTOL,
            seed=seed + 1,
            atol=floor,
        )
    assert res.passed, str(res)

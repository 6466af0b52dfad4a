"""Structural properties of the gradients (spec §2.1, §2.9, §2.12).

(a) The slow loss feeds gradient only into the slow networks' global kernels K_g = MAGNet_G(): the
    difference between the gradients with and without it is zero outside ``blocks.*.slow_g.*`` and
    equals the finite-difference gradient of the slow loss alone (§2.12).
(b) MAGNet_L's s-renormalisation u' = stopgrad(u) + 0.1·u/‖u‖ passes gradient only through the
    normalised term (§2.1): the VJP is the derivative of the frozen forward, not of the plain one,
    and it obeys Euler's identity for the scale-invariant u/‖u‖ (which fails if the first term
    passes gradient).
(c) Batch standardisation couples the samples of a batch; instance standardisation does not (§2.9).
(d) float32 in, float32 out: every VJP keeps float32.
(e) A bias that a standardisation removes gets exactly zero gradient (closed form), and the forward
    value does not depend on it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperzzw_core import reference as R
from hyperzzw_core.reference._gradcheck import compare

SEEDS = st.integers(0, 2**32 - 1)


def _generic_params(config, seed):
    rng = np.random.default_rng(seed)
    flat = R.flatten(R.init_params(config, seed=seed))
    for k, v in flat.items():
        if np.abs(v).max() < 10:
            flat[k] = np.asarray(v + 0.05 * rng.standard_normal(v.shape))
    return R.unflatten(flat), rng


def _inputs(config, rng, batch=2):
    return rng.standard_normal((batch,) + config.input_shape), rng.integers(0, config.num_classes, size=batch)


# ------------------------------------------------------------------------ (a) slow loss → slow_g only


def _is_slow_g(key: str) -> bool:
    parts = key.split(".")
    return parts[0] == "blocks" and parts[2] == "slow_g"


@pytest.mark.parametrize("kind", ["tiled", "channel_sum"])
@pytest.mark.parametrize("make", [R.tiny, R.tiny_1d], ids=["tiny_2d", "tiny_1d"])
def test_slow_loss_gradient_flows_only_into_slow_g(make, kind):
    config = make().replace(slow_loss=kind)
    params, rng = _generic_params(config, 7)
    x, labels = _inputs(config, rng)
    loss_with, g_with = R.terminator_loss_and_grad(params, x, labels, config)
    loss_without, g_without = R.terminator_loss_and_grad(params, x, labels, config.replace(slow_loss="none"))
    fw, fwo, fp = R.flatten(g_with), R.flatten(g_without), R.flatten(params)
    diff = {k: fw[k] - fwo[k] for k in fw}
    outside = [k for k in diff if not _is_slow_g(k) and not np.array_equal(fw[k], fwo[k])]
    assert not outside, f"the slow loss changed the gradient of {outside[:10]}"
    for i in range(config.num_blocks):
        assert any(np.abs(v).max() > 1e-6 for k, v in diff.items() if k.startswith(f"blocks.{i}.slow_g.")), i

    # K_g does not depend on the input (only on slow_g): the slow loss is a function of slow_g alone
    x2, _ = _inputs(config, rng)
    k1 = R.terminator_forward(params, x, config)[1]
    k2 = R.terminator_forward(params, x2, config)[1]
    assert all(np.array_equal(a, b) for a, b in zip(k1, k2, strict=True))

    def slow_of(slow_params):
        return float(R.slow_loss([R.magnet_g(p) for p in slow_params], config.bottleneck_factors, kind=kind))

    slow_params = [bp["slow_g"] for bp in params["blocks"]]
    assert abs((loss_with - loss_without) - slow_of(slow_params)) <= 1e-12 * abs(loss_with)

    # the difference is the gradient of the slow loss alone: finite differences (independent) ...
    leaves = {k: v for k, v in fp.items() if _is_slow_g(k)}

    def f_of_leaf(key, value):
        i = int(key.split(".")[1])
        moved = [
            R.unflatten({**R.flatten(p), key.split(".", 3)[3]: value}) if j == i else p
            for j, p in enumerate(slow_params)
        ]
        return slow_of(moved)

    res = compare({k: diff[k] for k in leaves}, f_of_leaf, leaves, max_elements=3, rtol=1e-6, seed=1)
    assert res.passed, str(res)
    # ... and the slow loss's VJP pushed through magnet_g_vjp (the composition the network must do)
    kernels = [R.magnet_g(p) for p in slow_params]
    g_k = R.slow_loss_vjp(kernels, config.bottleneck_factors, 1.0, kind=kind)
    scale = max(float(np.abs(v).max()) for v in fw.values())
    for i, p in enumerate(slow_params):
        expected = R.flatten(R.magnet_g_vjp(p, g_k[i]))
        for k, v in expected.items():
            np.testing.assert_allclose(
                diff[f"blocks.{i}.slow_g.{k}"], v, rtol=1e-8, atol=1e-12 * scale, err_msg=f"blocks.{i}.slow_g.{k}"
            )


def test_slow_loss_weight_scales_only_the_slow_g_gradient_linearly():
    config = R.tiny()
    params, rng = _generic_params(config, 8)
    x, labels = _inputs(config, rng)
    grads = {
        w: R.flatten(R.terminator_loss_and_grad(params, x, labels, config.replace(slow_loss_weight=w))[1])
        for w in (0.0, 1.0, 2.5)
    }
    for k in grads[0.0]:
        d1 = grads[1.0][k] - grads[0.0][k]
        d25 = grads[2.5][k] - grads[0.0][k]
        np.testing.assert_allclose(d25, 2.5 * d1, rtol=1e-7, atol=1e-14, err_msg=k)
        if not _is_slow_g(k):
            assert np.array_equal(grads[2.5][k], grads[0.0][k]), k


def test_eval_mode_has_no_slow_loss_gradient():
    """The slow loss is only added in train mode (§2.12): eval-mode gradients ignore slow_loss."""
    config = R.tiny()
    params, rng = _generic_params(config, 9)
    x, labels = _inputs(config, rng)
    ga = R.flatten(R.terminator_loss_and_grad(params, x, labels, config, train=False)[1])
    gb = R.flatten(R.terminator_loss_and_grad(params, x, labels, config.replace(slow_loss="none"), train=False)[1])
    assert all(np.array_equal(ga[k], gb[k]) for k in ga)


# ------------------------------------------------------------------------ (b) the stop-gradient


def _magnet_l_case(seed, k=5, d=2, hidden=4, c_out=3, layers=2, batch=2):
    rng = np.random.default_rng(seed)
    params = R.init_magnet_l(rng, k, d, hidden, c_out, layers)  # bias_p = 0 at init
    x = rng.standard_normal((batch, c_out) + (6,) * d)
    cot = rng.standard_normal((c_out, 1) + (k,) * d)
    return params, x, cot


@given(seed=SEEDS, d=st.sampled_from([1, 2]), k=st.sampled_from([3, 5, 7]))
def test_magnet_l_vjp_is_the_derivative_of_the_frozen_forward_not_the_plain_one(seed, d, k):
    params, x, cot = _magnet_l_case(seed, k=k, d=d)
    frozen = R.magnet_l_stop_gradient_values(params, x)
    np.testing.assert_array_equal(R.magnet_l(params, x, stop_gradient_values=frozen), R.magnet_l(params, x))
    for wrt in (0, 1):
        ok = R.check_vjp(
            lambda p, x_: R.magnet_l(p, x_, stop_gradient_values=frozen),
            (params, x),
            R.magnet_l_vjp,
            wrt=wrt,
            cotangent=cot,
            max_elements=3,
            rtol=1e-6,
        )
        assert ok.passed, str(ok)
        plain = R.check_vjp(R.magnet_l, (params, x), R.magnet_l_vjp, wrt=wrt, cotangent=cot, max_elements=3, rtol=1e-6)
        assert not plain.passed
        assert plain.max_rel_error > 1e-2, str(plain)  # a measurable difference, not round-off


def _euler_sums(params, grads, layer):
    """Per hidden row j of A_layer: Σ_k W[j,k]·∂W[j,k] + b[j]·∂b[j], and the scale Σ|…|."""
    lin, glin = params["linears"][layer], grads["linears"][layer]
    terms = np.concatenate([lin["weight"] * glin["weight"], (lin["bias"] * glin["bias"])[:, None]], axis=1)
    return terms.sum(axis=1), np.abs(terms).sum(axis=1)


@given(seed=SEEDS, d=st.sampled_from([1, 2]), k=st.sampled_from([3, 5, 9]), layers=st.integers(1, 3))
def test_first_term_passes_no_gradient_euler_identity(seed, d, k, layers):
    """With bias_p = 0, scaling row j of A_i (weight and bias) by s scales u_i[j, :] by s. The
    normalised term u/‖u‖ is invariant to that, so if only it carries gradient (the first term
    being stopped), Euler's theorem gives Σ_k W[j,k]·∂W[j,k] + b[j]·∂b[j] = 0 for every row.
    The plain forward's derivative along that direction is not zero (the first term scales): the
    identity is a real test of the stop-gradient."""
    params, x, cot = _magnet_l_case(seed, k=k, d=d, layers=layers)
    assert not np.any(params["bias_p"])
    grads, _ = R.magnet_l_vjp(params, x, cot)
    for i in range(layers):
        total, scale = _euler_sums(params, grads, i)
        assert np.all(np.abs(total) <= 1e-10 * scale.max()), (i, total, scale)

    # the same direction, by finite differences: flat for the frozen forward, not for the plain one
    i, j = layers - 1, 0
    frozen = R.magnet_l_stop_gradient_values(params, x)

    def along(t, forward):
        p = R.tree_map(lambda a: a, params)
        p["linears"][i] = {"weight": params["linears"][i]["weight"].copy(), "bias": params["linears"][i]["bias"].copy()}
        p["linears"][i]["weight"][j] *= 1.0 + t[0]
        p["linears"][i]["bias"][j] *= 1.0 + t[0]
        return float(np.sum(forward(p) * cot))

    fd_frozen = R.numerical_gradient(
        lambda t: along(t, lambda p: R.magnet_l(p, x, stop_gradient_values=frozen)), np.zeros(1)
    )[0]
    fd_plain = R.numerical_gradient(lambda t: along(t, lambda p: R.magnet_l(p, x)), np.zeros(1))[0]
    row_scale = _euler_sums(params, grads, i)[1][j]
    assert abs(fd_frozen) <= 1e-6 * row_scale + 1e-9
    assert abs(fd_plain) > max(0.01 * row_scale, 1e-6), (fd_plain, row_scale)  # measured: 2x-100x row_scale


def test_euler_identity_holds_for_every_magnet_l_in_the_network():
    """The same identity for the whole-network gradient (at init, where every bias_p is 0)."""
    for config in (R.tiny(), R.tiny_1d()):
        params = R.init_params(config, seed=4)
        rng = np.random.default_rng(4)
        x, labels = _inputs(config, rng)
        _, grads = R.terminator_loss_and_grad(params, x, labels, config)
        checked = 0
        for bp, bg in zip(params["blocks"], grads["blocks"], strict=True):
            for lp, lg in zip(bp["local"], bg["local"], strict=True):
                assert not np.any(lp["slow_l"]["bias_p"])
                for i in range(len(lp["slow_l"]["linears"])):
                    total, scale = _euler_sums(lp["slow_l"], lg["slow_l"], i)
                    assert scale.max() > 0
                    assert np.all(np.abs(total) <= 1e-9 * scale.max()), (total, scale)
                    checked += 1
        assert checked == config.num_blocks * len(config.local_kernel_sizes) * config.local_layers


# ------------------------------------------------------------------------ (c) batch coupling


@given(seed=SEEDS, batch=st.integers(2, 4), c=st.integers(1, 4), d=st.sampled_from([1, 2]))
def test_batch_standardize_couples_samples_instance_does_not(seed, batch, c, d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c) + (4,) * d)
    g = np.zeros_like(x)
    g[1] = rng.standard_normal(x.shape[1:])  # a loss that reads only sample 1's output

    def fd_on_sample_0(op):
        def f(x0):
            xx = x.copy()
            xx[0] = x0
            return float(np.sum(op(xx) * g))

        return R.numerical_gradient(f, x[0])

    g_bs = R.batch_standardize_vjp(x, g)
    fd_bs = fd_on_sample_0(R.batch_standardize)
    assert np.abs(fd_bs).max() > 1e-3
    np.testing.assert_allclose(g_bs[0], fd_bs, rtol=1e-6, atol=1e-9)
    g_is = R.instance_standardize_vjp(x, g)
    assert np.all(g_is[0] == 0.0)  # exactly: IS statistics are per sample
    assert np.abs(fd_on_sample_0(R.instance_standardize)).max() < 1e-9


def test_g_ibs_couples_samples_only_in_its_bs_groups():
    rng = np.random.default_rng(0)
    groups, per = 4, 2
    x = rng.standard_normal((3, groups * per, 5, 5))
    g = np.zeros_like(x)
    g[2] = rng.standard_normal(x.shape[1:])
    gx = R.g_ibs_vjp(x, g, groups=groups)
    for j in range(groups):
        block = gx[0, j * per : (j + 1) * per]
        if j % 2 == 0:  # even groups: BS
            assert np.abs(block).max() > 1e-3, j
        else:  # odd groups: IS
            assert np.all(block == 0.0), j


def test_local_conv_couples_samples_through_its_bs():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((2, 3, 6, 6))
    k_l = rng.standard_normal((3, 1, 3, 3))
    params = {"weight": rng.standard_normal((3, 3)), "bias": rng.standard_normal(3)}
    g = np.zeros_like(y)
    g[1] = rng.standard_normal(y.shape[1:])
    _, gy, _ = R.local_conv_vjp(params, y, k_l, g)

    def f(y0):
        yy = y.copy()
        yy[0] = y0
        return float(np.sum(R.local_conv(params, yy, k_l) * g))

    fd = R.numerical_gradient(f, y[0])
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(gy[0], fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


# ------------------------------------------------------------------------ (d) float32 stays float32


def _f32(tree):
    return R.tree_map(lambda a: np.asarray(a, dtype=np.float32), tree)


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for t in tree for leaf in _leaves(t)]
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return [tree]


def _cases():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 5, 5))
    seq = rng.standard_normal((2, 4, 9))
    lin = {"weight": rng.standard_normal((4, 4)), "bias": rng.standard_normal(4)}
    rgu_p = {
        n: {"weight": rng.standard_normal((4, 4)), "bias": rng.standard_normal(4)} for n in ("w_k", "w_v", "w_q", "w_y")
    }
    rgu_p["bias_p"] = rng.standard_normal((5, 5))
    mg = R.init_magnet_g(rng, (5, 5), 4, 4, 2)
    mgc = R.init_magnet_gc(rng, 4, 4, 1)
    ml = R.init_magnet_l(rng, 3, 2, 4, 4, 2)
    hi = {"channel": R.init_magnet_gc(rng, 4, 4, 1), "spatial": R.init_magnet_g(rng, (5, 5), 4, 1, 1)}
    k_l = rng.standard_normal((4, 1, 3, 3))
    logits, labels = rng.standard_normal((3, 5)), np.array([0, 4, 2])
    kernels = [rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((1, 4, 4, 4))]
    cfg = R.tiny().replace(input_shape=(1, 4, 4))
    block = R.init_block(rng, cfg, 1)
    zb = rng.standard_normal((2, 2, 4, 4))
    return {
        "magnet_g": (R.magnet_g, R.magnet_g_vjp, (mg,), {}),
        "magnet_gc": (R.magnet_gc, R.magnet_gc_vjp, (mgc,), {}),
        "magnet_l": (R.magnet_l, R.magnet_l_vjp, (ml, z), {}),
        "hyperzzw_global": (R.hyperzzw_global, R.hyperzzw_global_vjp, (z, z[:1], z), {}),
        "hyperzzw_global_1d": (R.hyperzzw_global, R.hyperzzw_global_vjp, (seq, seq[:1], seq), {"grid": (3, 3)}),
        "hyperzzw_2e": (R.hyperzzw_2e, R.hyperzzw_2e_vjp, (z[0, :, :1], z), {}),
        "depthwise_conv": (R.depthwise_conv, R.depthwise_conv_vjp, (z, k_l), {}),
        "local_conv": (R.local_conv, R.local_conv_vjp, (lin, z, k_l), {}),
        "rgu": (R.rgu, R.rgu_vjp, (rgu_p, z), {}),
        "si_glu": (R.si_glu, R.si_glu_vjp, (z,), {}),
        "gelu": (R.gelu, R.gelu_vjp, (z,), {}),
        "hyper_channel_interaction": (
            R.hyper_channel_interaction,
            R.hyper_channel_interaction_vjp,
            ({"channel": mgc}, z),
            {},
        ),
        "hyper_interaction": (R.hyper_interaction, R.hyper_interaction_vjp, (hi, z, z), {}),
        "instance_standardize": (R.instance_standardize, R.instance_standardize_vjp, (z,), {}),
        "batch_standardize": (R.batch_standardize, R.batch_standardize_vjp, (z,), {}),
        "g_ibs": (R.g_ibs, R.g_ibs_vjp, (z,), {"groups": 2}),
        "pointwise_linear": (R.pointwise_linear, R.pointwise_linear_vjp, (lin, z), {}),
        "channel_mixer": (R.channel_mixer, R.channel_mixer_vjp, (lin, z), {}),
        "bottleneck": (R.bottleneck, R.bottleneck_vjp, (lin, z), {}),
        "slow_loss": (R.slow_loss, R.slow_loss_vjp, (kernels, (2,)), {}),
        "label_smoothing_cross_entropy": (
            R.label_smoothing_cross_entropy,
            R.label_smoothing_cross_entropy_vjp,
            (logits, labels),
            {},
        ),
        "tile_channels": (R.tile_channels, R.tile_channels_vjp, (z, 3), {}),
        "adaptive_avg_pool": (R.adaptive_avg_pool, R.adaptive_avg_pool_vjp, (z, (3, 2)), {}),
        "sfne_block": (R.sfne_block, R.sfne_block_vjp, (block, zb, None, None), {"groups": cfg.ibs_groups}),
    }


CASES = _cases()


def _cast_arg(a):
    if isinstance(a, np.ndarray) and a.dtype == np.float64:
        return a.astype(np.float32)
    if isinstance(a, dict):
        return _f32(a)
    if isinstance(a, list):
        return [_cast_arg(v) for v in a]
    return a


@pytest.mark.parametrize("name", list(CASES))
def test_float32_vjps_return_float32(name):
    fn, vjp, args, kwargs = CASES[name]
    args32 = tuple(_cast_arg(a) for a in args)
    out = fn(*args32, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    assert all(np.asarray(o).dtype == np.float32 for o in outs), [np.asarray(o).dtype for o in outs]
    rng = np.random.default_rng(0)
    cot = tuple(rng.standard_normal(np.shape(o)).astype(np.float32) for o in outs)
    grads = vjp(*args32, cot if isinstance(out, tuple) else cot[0], **kwargs)
    leaves = [leaf for leaf in _leaves(grads) if leaf is not None]
    assert leaves
    bad = [(i, np.asarray(leaf).dtype) for i, leaf in enumerate(leaves) if np.asarray(leaf).dtype != np.float32]
    assert not bad, f"{name}: {len(bad)} of {len(leaves)} cotangent leaves are not float32: {bad[:5]}"
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)


# ------------------------------------------------------------------------ (e) removed biases


@pytest.mark.parametrize("op", ["channel_mixer", "local_conv", "bottleneck_g_ibs"])
def test_bias_removed_by_a_standardisation_has_zero_gradient(op):
    """IS / BS / G-IBS subtract the per-channel mean, so a per-channel bias right before them
    cancels: the forward does not depend on it and its gradient is 0 (up to round-off)."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 4, 5, 5))
    params = {"weight": rng.standard_normal((4, 4)), "bias": rng.standard_normal(4)}
    moved = {"weight": params["weight"], "bias": params["bias"] + rng.standard_normal(4)}
    g = rng.standard_normal(z.shape)
    if op == "channel_mixer":
        fwd = lambda p: R.channel_mixer(p, z)  # noqa: E731
        grads = R.channel_mixer_vjp(params, z, g)[0]
    elif op == "local_conv":
        k_l = rng.standard_normal((4, 1, 3, 3))
        fwd = lambda p: R.local_conv(p, z, k_l)  # noqa: E731
        grads = R.local_conv_vjp(params, z, k_l, g)[0]
    else:

        def fwd(p):
            return R.g_ibs(R.bottleneck(p, z), groups=2)

        gp = R.g_ibs_vjp(R.bottleneck(params, z), g, groups=2)
        grads = R.bottleneck_vjp(params, z, gp)[0]
    np.testing.assert_allclose(fwd(moved), fwd(params), rtol=0, atol=1e-12)
    assert np.abs(grads["bias"]).max() <= 1e-12 * np.abs(grads["weight"]).max()
    assert np.abs(grads["weight"]).max() > 1e-3

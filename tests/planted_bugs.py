"""Deliberately wrong implementations: each exposes every reference operator correctly except one.

``hyperzzw verify`` must flag each on exactly the operator its bug lives in (tests/test_conformance.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import numpy as np

from hyperzzw_core import reference as R
from hyperzzw_core.reference import _block, _conv, _network
from hyperzzw_core.testing.registry import REGISTRY


def correct() -> dict:
    """Every registered operator with its VJP, from the reference (the protocol's ``<op>_vjp`` form)."""
    ops = {name: getattr(R, name) for name in REGISTRY}
    for name in REGISTRY:
        vjp = getattr(R, f"{name}_vjp", None)
        if vjp is not None:
            ops[f"{name}_vjp"] = vjp
    return ops


def _impl(**overrides) -> SimpleNamespace:
    return SimpleNamespace(**{**correct(), **overrides})


# 1. a sign flipped in one VJP
def _2e_vjp_sign(k, z, g):
    gk, gz = R.hyperzzw_2e_vjp(k, z, g)
    return gk, -gz


# 2. a transposed matmul in the global product: (Z ⊙ K)ᵀ @ Y per channel
def _global_transposed(z, k_g, y, *, grid=None, check_finite=True):
    square = z.shape[:2] + (tuple(grid) if grid is not None else z.shape[2:])
    zhat = (z * k_g).reshape(square)
    return (np.swapaxes(zhat, -1, -2) @ y.reshape(square)).reshape(z.shape)


# 3. a missing eps in instance standardisation
def _is_no_eps(x, eps=1e-5, *, check_finite=True):
    return R.instance_standardize(x, 0.0, check_finite=check_finite)


# 4. a wrong concatenation order in the SFNE block (L1 and L2 swapped)
def _sfne_swapped(*args, **kwargs):
    original = _block.concat_order

    def swapped(n_local, has_pre, has_pre_pre):
        order = original(n_local, has_pre, has_pre_pre)
        i, j = order.index("L1"), order.index("L2")
        order[i], order[j] = order[j], order[i]
        return order

    with mock.patch.object(_block, "concat_order", swapped):
        return R.sfne_block(*args, **kwargs)


# 5. population (running) statistics instead of batch statistics: PyTorch's eval-mode defaults
def _bs_population(x, eps=1e-5, *, check_finite=True):
    return x / np.sqrt(1.0 + eps)


# 6. off-by-one padding in the depth-wise convolution (one more zero before, one fewer after)
def _conv_off_by_one(y, k_l, *, check_finite=True):
    out = R.depthwise_conv(y, k_l, check_finite=check_finite)
    shifted = np.zeros_like(out)
    shifted[:, :, 1:] = out[:, :, :-1]
    return shifted


# 7. float32 accumulation where float64 is needed (the slow loss summed in float32)
def _slow_loss_f32(kernels, factors, *, kind="tiled", check_finite=True):
    low = [np.asarray(k, dtype=np.float32) for k in kernels]
    return np.asarray(
        R.slow_loss(low, factors, kind=kind, check_finite=check_finite), dtype=np.asarray(kernels[0]).dtype
    )


# 8. bias_p doubled in MAGNet_G (passes on init trees, where bias_p = 0)
def _magnet_g_bias_p_doubled(params):
    return R.magnet_g({**params, "bias_p": 2.0 * params["bias_p"]})


# 9. bias_p ignored in MAGNet_G
def _magnet_g_bias_p_ignored(params):
    return R.magnet_g({**params, "bias_p": np.zeros_like(params["bias_p"])})


# 10. MAGNet_GC's linear biases hard-coded to their init value 1 (passes on init trees)
def _magnet_gc_bias_one(params):
    lin = [{**p, "bias": np.ones_like(p["bias"])} for p in params["linears"]]
    return R.magnet_gc({**params, "linears": lin})


# 11. one-pass variance E[x²] − E[x]² in instance standardisation (fine on benign inputs; off on 1e3 ± 1)
@np.errstate(all="ignore")
def _is_one_pass(x, eps=1e-5, *, check_finite=True):
    axes = tuple(range(2, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = (x * x).mean(axis=axes, keepdims=True) - m * m
    return (x - m) / np.sqrt(v + np.asarray(eps, dtype=x.dtype))


# 12. an unstable softmax (no max subtraction) in the cross-entropy: overflows on large logits
@np.errstate(all="ignore")  # caught by its values (NaN), not by a warning under pytest's -W error
def _ce_unstable(logits, labels, eps=0.09, *, check_finite=True):
    e = np.exp(logits)
    logp = np.log(e / e.sum(axis=1, keepdims=True))
    k = logits.shape[1]
    loss = -logp.sum(axis=1).mean() * (eps / k) - (1.0 - eps) * logp[np.arange(len(labels)), labels].mean()
    return np.asarray(loss, dtype=logits.dtype)


# 13. a naive sigmoid exp(x)/(1 + exp(x)) in Si-GLU: NaN for large inputs
@np.errstate(all="ignore")
def _si_glu_naive(g1, *, check_finite=True):
    e = np.exp(g1)
    return e / (1 + e) * g1


# 14. RGU ignores its bias_p
def _rgu_no_bias_p(params, z, *, check_finite=True):
    return R.rgu({**params, "bias_p": np.zeros_like(params["bias_p"])}, z, check_finite=check_finite)


# 15. a gradient-only bug: MAGNet_G's VJP drops the bias_p gradient
def _magnet_g_vjp_no_bias_p(params, g):
    grads = R.magnet_g_vjp(params, g)
    return {**grads, "bias_p": np.zeros_like(grads["bias_p"])}


# 16. MAGNet_L's gating linears' biases hard-coded to their init value 1 (passes on init trees)
def _magnet_l_bias_one(params, x, **kw):
    lin = [{**p, "bias": np.ones_like(p["bias"])} for p in params["linears_x"]]
    return R.magnet_l({**params, "linears_x": lin}, x, **kw)


# 17. K ⊙ Z·|Z| instead of K ⊙ Z²
def _2e_abs(k, z, **kw):
    return k * z * np.abs(z)


# 18. a flipped kernel (convolution instead of correlation) in the depth-wise convolution
def _conv_flipped(y, k_l, *, check_finite=True):
    return R.depthwise_conv(y, np.flip(k_l, axis=tuple(range(2, k_l.ndim))).copy(), check_finite=check_finite)


# 19. the local branch's mixer applied before the depth-wise convolution instead of after it
def _local_conv_mix_first(params, y, k_l, *, eps=1e-5, check_finite=True):
    d = R.depthwise_conv(R.pointwise_linear(params, y), k_l)
    return R.gelu(R.batch_standardize(d, eps))


# 20. a gradient-only bug: RGU's input cotangent doubled
def _rgu_vjp_doubled(params, z, g):
    gp, gz = R.rgu_vjp(params, z, g)
    return gp, 2.0 * gz


# 21. a gradient-only bug: Si-GLU's VJP without the x·σ(1−σ) term
def _si_glu_vjp_partial(g1, g):
    return g * (1.0 / (1.0 + np.exp(-g1)))


# 22. a 1e-6 relative scale error in the hyper-channel interaction (passes any float32 check)
def _hci_scaled(params, z, **kw):
    out = R.hyper_channel_interaction(params, z, **kw)
    return out * np.asarray(1.0 + 1e-6, dtype=out.dtype)


# 23. y and x swapped in the hyper interaction
def _hi_swapped(params, y, x, **kw):
    return R.hyper_interaction(params, x, y, **kw)


# 24. unbiased (ddof=1) variance in batch standardisation
def _bs_unbiased(x, eps=1e-5, *, check_finite=True):
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = x.var(axis=axes, keepdims=True, ddof=1)
    return (x - m) / np.sqrt(v + np.asarray(eps, dtype=x.dtype))


# 25. G-IBS with the alternation swapped (even groups IS, odd groups BS)
def _g_ibs_swapped(x, groups=12, eps=1e-5, *, check_finite=True):
    size = x.shape[1] // groups
    out = np.empty_like(x)
    for j in range(groups):
        sl = slice(j * size, (j + 1) * size)
        fn = R.instance_standardize if j % 2 == 0 else R.batch_standardize
        out[:, sl] = fn(x[:, sl], eps)
    return out


# 26. the tanh approximation of GELU
def _gelu_tanh(x, **kw):
    c = np.asarray(np.sqrt(2.0 / np.pi), dtype=x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))


# 27. the point-wise linear's bias ignored
def _pointwise_no_bias(params, x, **kw):
    return R.pointwise_linear({**params, "bias": np.zeros_like(params["bias"])}, x, **kw)


# 28. the channel mixer's weight transposed (square, so the shapes agree)
def _mixer_transposed(params, z, **kw):
    return R.channel_mixer({**params, "weight": params["weight"].T.copy()}, z, **kw)


# 29. dtype promotion: the bottleneck computes and returns float64 for float32 inputs
def _bottleneck_promotes(params, x, **kw):
    up = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return R.bottleneck({k: up(v) for k, v in params.items()}, up(x), **kw)


# 30. adaptive pooling bins that end at floor((i+1)·n/k) (right only when k divides n)
def _pool_floor_bins(x, size):
    def wrong(n, k):
        m = np.zeros((k, n))
        for i in range(k):
            a, b = (i * n) // k, max((i + 1) * n // k, (i * n) // k + 1)
            m[i, a:b] = 1.0 / (b - a)
        return m

    with mock.patch.object(_conv, "adaptive_pool_matrix", wrong):
        return R.adaptive_avg_pool(x, size)


# 31. repeat instead of tile: [t1, t1, t2, t2] instead of [t1, t2, t1, t2]
def _tile_repeat(x, reps):
    return np.repeat(x, reps, axis=1)


# 32. the slow loss ignores its ``kind``
def _slow_loss_kind_ignored(kernels, factors, *, kind="tiled", check_finite=True):
    return R.slow_loss(kernels, factors, kind="tiled", check_finite=check_finite)


# 33. label smoothing spread over the K−1 wrong classes instead of all K
def _ce_smoothing_km1(logits, labels, eps=0.09, *, check_finite=True):
    from scipy.special import log_softmax

    logp = log_softmax(logits, axis=1)
    b, k = logits.shape
    target = np.full_like(logp, eps / (k - 1))
    target[np.arange(b), labels] = 1.0 - eps
    return np.asarray(-(target * logp).sum(axis=1).mean(), dtype=logits.dtype)


def _swapped_order(n_local, has_pre, has_pre_pre, original=_block.concat_order):
    order = original(n_local, has_pre, has_pre_pre)
    i, j = order.index("L1"), order.index("L2")
    order[i], order[j] = order[j], order[i]
    return order


# 34. a composite bug in the whole network only: the blocks concatenate L1 and L2 swapped
def _forward_swapped(*args, **kwargs):
    with mock.patch.object(_block, "concat_order", _swapped_order):
        return R.terminator_forward(*args, **kwargs)


# 35. the training loss without label smoothing (eps = 0 inside the loss)
def _loss_no_smoothing(*args, **kwargs):
    original = _network.label_smoothing_cross_entropy
    with mock.patch.object(
        _network,
        "label_smoothing_cross_entropy",
        lambda logits, labels, eps=0.09, **kw: original(logits, labels, 0.0, **kw),
    ):
        return R.terminator_loss(*args, **kwargs)


# 36. a gradient-only bug: MAGNet_GC's VJP drops the filters' bias gradients
def _magnet_gc_vjp_no_filter_bias(params, g):
    grads = R.magnet_gc_vjp(params, g)
    return {**grads, "filters": [{**f, "bias": np.zeros_like(f["bias"])} for f in grads["filters"]]}


# 37. the global product's grid ignored for 1D inputs (reshaped to (L, 1) instead of the grid)
def _global_no_grid(z, k_g, y, *, grid=None, check_finite=True):
    if grid is None:
        return R.hyperzzw_global(z, k_g, y, check_finite=check_finite)
    zhat = z * k_g
    return zhat * y.sum(axis=-1, keepdims=True)


# 38. a non-square sequence padded at the front of its grid instead of after position L
def _global_front_padding(z, k_g, y, *, grid=None, check_finite=True):
    if grid is None or z.shape[-1] == grid[0] * grid[1]:
        return R.hyperzzw_global(z, k_g, y, grid=grid, check_finite=check_finite)
    h, w = grid
    pad = h * w - z.shape[-1]

    def lay(a):
        a = np.concatenate([np.zeros(a.shape[:-1] + (pad,), a.dtype), a], axis=-1)
        return a.reshape(a.shape[:-1] + (h, w))

    out = lay(z * k_g) @ lay(y)
    return out.reshape(out.shape[:-2] + (h * w,))[..., pad:]


PLANTED = {
    "sign flipped in hyperzzw_2e_vjp": ("hyperzzw_2e", _impl(hyperzzw_2e_vjp=_2e_vjp_sign)),
    "transposed matmul in hyperzzw_global": ("hyperzzw_global", _impl(hyperzzw_global=_global_transposed)),
    "missing eps in instance_standardize": ("instance_standardize", _impl(instance_standardize=_is_no_eps)),
    "wrong concatenation order in sfne_block": ("sfne_block", _impl(sfne_block=_sfne_swapped)),
    "population instead of batch statistics": ("batch_standardize", _impl(batch_standardize=_bs_population)),
    "off-by-one padding in depthwise_conv": ("depthwise_conv", _impl(depthwise_conv=_conv_off_by_one)),
    "float32 accumulation in slow_loss": ("slow_loss", _impl(slow_loss=_slow_loss_f32)),
    "bias_p doubled in magnet_g": ("magnet_g", _impl(magnet_g=_magnet_g_bias_p_doubled)),
    "bias_p ignored in magnet_g": ("magnet_g", _impl(magnet_g=_magnet_g_bias_p_ignored)),
    "linear biases hard-coded to 1 in magnet_gc": ("magnet_gc", _impl(magnet_gc=_magnet_gc_bias_one)),
    "one-pass variance in instance_standardize": ("instance_standardize", _impl(instance_standardize=_is_one_pass)),
    "unstable softmax in label_smoothing_cross_entropy": (
        "label_smoothing_cross_entropy",
        _impl(label_smoothing_cross_entropy=_ce_unstable),
    ),
    "naive sigmoid in si_glu": ("si_glu", _impl(si_glu=_si_glu_naive)),
    "bias_p ignored in rgu": ("rgu", _impl(rgu=_rgu_no_bias_p)),
    "bias_p gradient dropped in magnet_g_vjp": ("magnet_g", _impl(magnet_g_vjp=_magnet_g_vjp_no_bias_p)),
    "gating biases hard-coded to 1 in magnet_l": ("magnet_l", _impl(magnet_l=_magnet_l_bias_one)),
    "K*Z*|Z| in hyperzzw_2e": ("hyperzzw_2e", _impl(hyperzzw_2e=_2e_abs)),
    "flipped kernel in depthwise_conv": ("depthwise_conv", _impl(depthwise_conv=_conv_flipped)),
    "mixer before the convolution in local_conv": ("local_conv", _impl(local_conv=_local_conv_mix_first)),
    "input cotangent doubled in rgu_vjp": ("rgu", _impl(rgu_vjp=_rgu_vjp_doubled)),
    "missing term in si_glu_vjp": ("si_glu", _impl(si_glu_vjp=_si_glu_vjp_partial)),
    "1e-6 scale error in hyper_channel_interaction": (
        "hyper_channel_interaction",
        _impl(hyper_channel_interaction=_hci_scaled),
    ),
    "y and x swapped in hyper_interaction": ("hyper_interaction", _impl(hyper_interaction=_hi_swapped)),
    "unbiased variance in batch_standardize": ("batch_standardize", _impl(batch_standardize=_bs_unbiased)),
    "IS/BS alternation swapped in g_ibs": ("g_ibs", _impl(g_ibs=_g_ibs_swapped)),
    "tanh approximation in gelu": ("gelu", _impl(gelu=_gelu_tanh)),
    "bias ignored in pointwise_linear": ("pointwise_linear", _impl(pointwise_linear=_pointwise_no_bias)),
    "weight transposed in channel_mixer": ("channel_mixer", _impl(channel_mixer=_mixer_transposed)),
    "float64 promotion in bottleneck": ("bottleneck", _impl(bottleneck=_bottleneck_promotes)),
    "floor bin ends in adaptive_avg_pool": ("adaptive_avg_pool", _impl(adaptive_avg_pool=_pool_floor_bins)),
    "repeat instead of tile in tile_channels": ("tile_channels", _impl(tile_channels=_tile_repeat)),
    "kind ignored in slow_loss": ("slow_loss", _impl(slow_loss=_slow_loss_kind_ignored)),
    "smoothing over K-1 classes in label_smoothing_cross_entropy": (
        "label_smoothing_cross_entropy",
        _impl(label_smoothing_cross_entropy=_ce_smoothing_km1),
    ),
    "concat order swapped inside terminator_forward": (
        "terminator_forward",
        _impl(terminator_forward=_forward_swapped),
    ),
    "no label smoothing inside terminator_loss": ("terminator_loss", _impl(terminator_loss=_loss_no_smoothing)),
    "filter bias gradients dropped in magnet_gc_vjp": ("magnet_gc", _impl(magnet_gc_vjp=_magnet_gc_vjp_no_filter_bias)),
    "grid ignored in 1d hyperzzw_global": ("hyperzzw_global", _impl(hyperzzw_global=_global_no_grid)),
    "front padding of a non-square sequence in hyperzzw_global": (
        "hyperzzw_global",
        _impl(hyperzzw_global=_global_front_padding),
    ),
}
"""description → (the operator the bug lives in, the implementation)."""

HARD_INPUT_ONLY = {
    "bias_p doubled in magnet_g",
    "bias_p ignored in magnet_g",
    "linear biases hard-coded to 1 in magnet_gc",
    "gating biases hard-coded to 1 in magnet_l",
    "one-pass variance in instance_standardize",
    "unstable softmax in label_smoothing_cross_entropy",
    "naive sigmoid in si_glu",
    "front padding of a non-square sequence in hyperzzw_global",
}
"""Bugs that the registry's init-valued, benign-input cases alone do not catch (the goldens before the
hard families): the families are what catch them."""

RUN_DTYPE = {"one-pass variance in instance_standardize": "float32", "float64 promotion in bottleneck": "float32"}
"""The dtype a bug is checked in (float64 unless named here)."""

CORRECT = _impl()

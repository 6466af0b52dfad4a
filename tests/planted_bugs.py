"""Deliberately wrong implementations: each exposes every reference operator correctly except one.

``hyperzzw verify`` must flag each on exactly the operator its bug lives in (tests/test_conformance.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import numpy as np

from hyperzzw_core import reference as R
from hyperzzw_core.reference import _block
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
    return np.asarray(R.slow_loss(low, factors, kind=kind, check_finite=check_finite),
                      dtype=np.asarray(kernels[0]).dtype)


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
def _is_one_pass(x, eps=1e-5, *, check_finite=True):
    axes = tuple(range(2, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = (x * x).mean(axis=axes, keepdims=True) - m * m
    return (x - m) / np.sqrt(v + np.asarray(eps, dtype=x.dtype))


# 12. an unstable softmax (no max subtraction) in the cross-entropy: overflows on large logits
def _ce_unstable(logits, labels, eps=0.09, *, check_finite=True):
    e = np.exp(logits)
    logp = np.log(e / e.sum(axis=1, keepdims=True))
    k = logits.shape[1]
    loss = -logp.sum(axis=1).mean() * (eps / k) - (1.0 - eps) * logp[np.arange(len(labels)), labels].mean()
    return np.asarray(loss, dtype=logits.dtype)


# 13. a naive sigmoid exp(x)/(1 + exp(x)) in Si-GLU: NaN for large inputs
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
    "one-pass variance in instance_standardize": ("instance_standardize",
                                                  _impl(instance_standardize=_is_one_pass)),
    "unstable softmax in label_smoothing_cross_entropy": ("label_smoothing_cross_entropy",
                                                          _impl(label_smoothing_cross_entropy=_ce_unstable)),
    "naive sigmoid in si_glu": ("si_glu", _impl(si_glu=_si_glu_naive)),
    "bias_p ignored in rgu": ("rgu", _impl(rgu=_rgu_no_bias_p)),
    "bias_p gradient dropped in magnet_g_vjp": ("magnet_g", _impl(magnet_g_vjp=_magnet_g_vjp_no_bias_p)),
}
"""description → (the operator the bug lives in, the implementation)."""

HARD_INPUT_ONLY = {
    "bias_p doubled in magnet_g": "float64",
    "bias_p ignored in magnet_g": "float64",
    "linear biases hard-coded to 1 in magnet_gc": "float64",
    "one-pass variance in instance_standardize": "float32",
    "unstable softmax in label_smoothing_cross_entropy": "float64",
    "naive sigmoid in si_glu": "float64",
}
"""Bugs that the registry's init-valued, benign-input cases alone do not catch (the goldens before the
hard families), with the dtype in which the hard families catch them."""

CORRECT = _impl()

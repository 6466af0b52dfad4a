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


PLANTED = {
    "sign flipped in hyperzzw_2e_vjp": ("hyperzzw_2e", _impl(hyperzzw_2e_vjp=_2e_vjp_sign)),
    "transposed matmul in hyperzzw_global": ("hyperzzw_global", _impl(hyperzzw_global=_global_transposed)),
    "missing eps in instance_standardize": ("instance_standardize", _impl(instance_standardize=_is_no_eps)),
    "wrong concatenation order in sfne_block": ("sfne_block", _impl(sfne_block=_sfne_swapped)),
    "population instead of batch statistics": ("batch_standardize", _impl(batch_standardize=_bs_population)),
    "off-by-one padding in depthwise_conv": ("depthwise_conv", _impl(depthwise_conv=_conv_off_by_one)),
    "float32 accumulation in slow_loss": ("slow_loss", _impl(slow_loss=_slow_loss_f32)),
}
"""description → (the operator the bug lives in, the implementation)."""

CORRECT = _impl()

"""Every fast path of the core is seen by the differential comparison with the reference.

A backend's fast path (a library's own sigmoid/erf/GELU, torch's native standardisations, the
depth-wise convolution's direct kernels, the batched global product, …) replaces portable code for
one library. The differential tests can only vouch for it if their samples actually run through it
and are compared with an independent computation (the NumPy reference). Here a bug is planted in
each fast path in turn (its output scaled by 1 + 1e-6, far above the float64 policy's 1e-10 and far
below anything a shape or NaN check would see), and the operators that use it, run on the registry's
samples, must then disagree with the reference; without the bug they must agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backends import Backend, _numpy, _torch
from vjp_check import autograd_against_vjp, cast_floats, leaves

import hyperzzw_core
from hyperzzw_core import backends
from hyperzzw_core import reference as R
from hyperzzw_core.reference import flatten, tree_map
from hyperzzw_core.testing import REGISTRY, assert_close, to_numpy
from hyperzzw_core.testing.registry import Sample

torch = pytest.importorskip("torch")

#: (backend class, method, operators of the registry whose samples go through it, library)
FAST_PATHS = [
    (backends.NumPyBackend, "sigmoid", ["hyper_channel_interaction", "hyper_interaction"], "numpy"),
    (backends.NumPyBackend, "erf", ["gelu"], "numpy"),
    (backends.NumPyBackend, "pointwise_linear", ["pointwise_linear", "channel_mixer"], "numpy"),
    (backends.NumPyBackend, "pointwise_linear_sum", ["sfne_block"], "numpy"),
    (backends.NumPyBackend, "depthwise_direct", ["depthwise_conv", "local_conv"], "numpy"),
    (backends.ArrayAPIBackend, "global_product", ["hyperzzw_global", "sfne_block"], "numpy"),
    (backends.TorchBackend, "sigmoid", ["hyper_channel_interaction", "hyper_interaction"], "torch"),
    (backends.TorchBackend, "gelu", ["gelu"], "torch"),
    (backends.TorchBackend, "silu", ["si_glu"], "torch"),
    (backends.TorchBackend, "pointwise_linear", ["pointwise_linear", "bottleneck"], "torch"),
    (backends.TorchBackend, "sum_of_norms", ["l2_regularizer"], "torch"),
    (backends.TorchBackend, "pointwise_linear_sum", ["sfne_block"], "torch"),
    (backends.TorchBackend, "split_channels", ["sfne_block"], "torch"),
    (backends.TorchBackend, "instance_standardize_fast", ["instance_standardize", "g_ibs"], "torch"),
    (backends.TorchBackend, "batch_standardize_fast", ["batch_standardize", "g_ibs"], "torch"),
    (backends.TorchBackend, "depthwise_direct", ["depthwise_conv", "local_conv"], "torch"),
    (backends.ArrayAPIBackend, "global_product", ["hyperzzw_global", "sfne_block"], "torch"),
    (backends.TorchBackend, "global_product", ["hyperzzw_global"], "torch"),
    (backends.TorchBackend, "global_products", ["sfne_block"], "torch"),
]


def _l2_mismatch(library: str) -> bool:
    """Whether the §2.13 regulariser of the tiny network (not a kit operator: no registry samples)
    disagrees with its direct NumPy computation, ‖p‖ = √Σp² per parameter, float64."""
    from hyperzzw_core.regularizer import l2_partition, l2_regularizer

    p = R.init_params(R.tiny(), 0)
    flat, part = flatten(p), l2_partition(p)
    direct = sum(np.sqrt(np.sum(flat[k] ** 2)) for k in part.fast)
    direct += 1e-6 * sum(np.sqrt(np.sum(flat[k] ** 2)) for k in part.slow)
    b: Backend = _numpy() if library == "numpy" else _torch("cpu")
    got = float(to_numpy(l2_regularizer(b.convert(p), 1.0)))
    return abs(got - direct) > 1e-12 * direct


def _mismatches(names: list[str], library: str) -> list[str]:
    """The (operator, sample) pairs whose float64 core output disagrees with the reference."""
    bad = []
    for name in names:
        if name == "l2_regularizer":
            bad += ["l2_regularizer"] if _l2_mismatch(library) else []
            continue
        spec = REGISTRY[name]
        for sample in spec.samples("float64"):
            b: Backend = _numpy() if library == "numpy" else _torch("cpu")  # converts copies of the arrays
            got = leaves(getattr(hyperzzw_core, name)(*b.convert(sample.args), **b.convert(sample.kwargs)))
            want = leaves(spec.reference(*sample.args, **sample.kwargs))
            scale = max([float(np.max(np.abs(v))) for v in want.values() if np.size(v)] + [0.0])
            try:
                for key, value in want.items():
                    assert_close(to_numpy(got[key]), value, dtype="float64", scale=scale, name=f"{name}[{key}]")
            except AssertionError:
                bad.append(f"{name}/{sample.label}")
    return bad


def _planted(method: Any) -> Any:
    def wrong(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = method(self, *args, **kwargs)
        return None if out is None else out * (1 + 1e-6)

    def wrong_last_term(self: Any, xp: Any, ws: list[Any], b: Any, xs: list[Any]) -> Any:
        # the block standardises the bottleneck's output (G-IBS), which a uniform scale cannot
        # survive: the bug weighs one branch (the last) wrongly instead
        return method(self, xp, [*ws[:-1], ws[-1] * (1 + 1e-6)], b, xs)

    def wrong_piece(self: Any, *args: Any, **kwargs: Any) -> Any:
        first, *rest = method(self, *args, **kwargs)
        return [first * (1 + 1e-6), *rest]

    special = {"pointwise_linear_sum": wrong_last_term, "split_channels": wrong_piece, "global_products": wrong_piece}
    return special.get(method.__name__, wrong)


@pytest.mark.parametrize(
    "cls, method, names, library", FAST_PATHS, ids=[f"{lib}-{cls.__name__}.{m}" for cls, m, _, lib in FAST_PATHS]
)
def test_a_bug_planted_in_a_fast_path_fails_the_differential_comparison(monkeypatch, cls, method, names, library):
    assert method in vars(cls), f"{cls.__name__} no longer defines {method}: update FAST_PATHS"
    assert _mismatches(names, library) == [], "the core must agree with the reference before the bug is planted"
    monkeypatch.setattr(cls, method, _planted(vars(cls)[method]))
    caught = _mismatches(names, library)
    assert caught, f"a bug planted in {cls.__name__}.{method} went unseen by {names} on {library}"


#: fast paths that only training takes (a graph to record), planted below instead of through
#: FAST_PATHS' forward samples
PLANTED_IN_TRAINING = {
    (backends.TorchBackend, "depthwise_mixer_fast"),
    (backends.TorchBackend, "pointwise_linear_sum_gelu"),
    (backends.TorchBackend, "gated_pointwise_linear"),
}


def _local_conv_samples() -> list[Sample]:
    """float32 ``local_conv`` samples on 9×9 and 81 positions: above the dense path's 64, where
    float32 training takes oneDNN's path, which ``depthwise_mixer_fast`` fuses."""
    rng = np.random.default_rng(3)
    out = []
    for shape, k in (((2, 6, 9, 9), 3), ((2, 6, 81), 7)):
        c, d = shape[1], len(shape) - 2
        params = {"weight": rng.standard_normal((c, c)) / 3, "bias": rng.standard_normal(c)}
        args = (params, rng.standard_normal(shape), rng.standard_normal((c, 1) + (k,) * d) / k)
        out.append(Sample(tree_map(lambda a: a.astype(np.float32), args), {}, f"{d}d-k{k}"))
    return out


def _training_mismatches(name: str, samples: list[Sample], dtype: str) -> list[str]:
    """What of operator ``name``'s value and gradients (the core on torch under autograd, in
    ``dtype``) on ``samples`` disagrees with the reference's value and VJP (the policy against the
    float64 reference, with the reference in float32 as the float32 bound; one scale per part, the
    value's and the gradients')."""
    spec = REGISTRY[name]
    rng = np.random.default_rng(4)
    bad = []
    for sample in samples:
        pair = autograd_against_vjp(_torch("cpu"), name, sample, dtype, rng)
        value = spec.reference(*cast_floats(sample.args, np.float64), **sample.kwargs)
        parts = {
            "value": (leaves(pair.out), leaves(value), leaves(pair.ref_out) if dtype == "float32" else {}),
            "grad": (pair.grads, pair.want, pair.low),
        }
        for part, (got, want, low) in parts.items():
            scale = max(float(np.max(np.abs(v))) for v in want.values())
            for key, ref in want.items():
                try:  # one scale per part, as the differential tests: a bias gradient that is 0 up to rounding
                    assert_close(to_numpy(got[key]), ref, dtype=dtype, scale=scale, ref_low=low.get(key), name=key)
                except AssertionError:
                    bad.append(f"{name}/{sample.label}/{part}/{key}")
    return bad


def test_a_bug_planted_in_the_training_fusions_fails_the_comparison(monkeypatch) -> None:
    """The fast paths that run only with gradients, each checked by the differential comparison of
    an operator that uses it (value and VJP against the reference), which must agree as they are
    and disagree once a bug is planted in the forward or in the backward alone (scales of 1 + 1e-3
    in float32, 1 + 1e-6 in float64: far above each policy):

    * ``depthwise_mixer_fast`` (float32, oneDNN's sizes), through ``local_conv``: its output's first
      sample scaled (BS follows, which a uniform scale cannot survive), then the kernel's gradient;
    * ``pointwise_linear_sum_gelu`` (float64, the registry's SFNE block samples), through
      ``sfne_block``: its last term's weight scaled, then the gradient of its GELU inputs;
    * ``gated_pointwise_linear`` (float64, the registry's RGU samples), through ``rgu``: its output
      scaled by a ramp along the positions (IS follows), then the gradient of V; and through
      ``sfne_block`` (whose RGUs recompute K and V from their stacked product in backward), the
      recomputed V.
    """
    from hyperzzw_core.backends import _torch_functions as TF

    cases = {
        "local_conv": (_local_conv_samples(), "float32"),
        "sfne_block": (REGISTRY["sfne_block"].samples("float64"), "float64"),
        "rgu": (REGISTRY["rgu"].samples("float64"), "float64"),
    }
    for name, (samples, dtype) in cases.items():
        assert _training_mismatches(name, samples, dtype) == [], f"{name} must agree before a bug is planted"
    fused = vars(backends.TorchBackend)["depthwise_mixer_fast"]
    products = vars(backends.TorchBackend)["pointwise_linear_sum_gelu"]

    def wrong_first_sample(self: Any, *args: Any) -> Any:
        out = fused(self, *args)
        return None if out is None else torch.cat([out[:1] * (1 + 1e-3), out[1:]])

    def wrong_last_weight(self: Any, xp: Any, ws: list[Any], b: Any, xs: list[Any], *acts: Any) -> Any:
        return products(self, xp, [*ws[:-1], ws[-1] * (1 + 1e-6)], b, xs, *acts)

    def scaled_backward(fn: Any, pick: Any, by: float) -> Any:
        """``fn`` with the gradients at the positions ``pick(ctx)`` scaled by 1 + ``by``."""

        def wrong(ctx: Any, g: Any) -> Any:
            grads = list(fn(ctx, g))
            for i in pick(ctx):
                grads[i] = None if grads[i] is None else grads[i] * (1 + by)
            return tuple(grads)

        return staticmethod(wrong)

    gated = vars(backends.TorchBackend)["gated_pointwise_linear"]

    def wrong_ramp(self: Any, *args: Any) -> Any:  # (IS follows: a scale that varies along the positions)
        out = gated(self, *args)
        return None if out is None else out * (1 + 1e-6 * torch.linspace(0, 1, out.shape[-1], dtype=out.dtype))

    saved = TF.GatedProduct._saved

    def wrong_recomputed_v(ctx: Any) -> Any:
        k, w, b, v = saved(ctx)
        return (k, w, b, v * (1 + 1e-6)) if ctx.recomputes else (k, w, b, v)

    def gelu_inputs(ctx: Any) -> list[int]:  # GeluProductSum's gradients: (spec, β, W_i…, x_i…, m_j…)
        return [2 + len(ctx.spec) + i for i, (on, _) in enumerate(ctx.spec) if on]

    plants = [
        ("local_conv", backends.TorchBackend, "depthwise_mixer_fast", wrong_first_sample),
        (
            "local_conv",
            TF.DepthwiseConvMixer,
            "backward",
            scaled_backward(TF.DepthwiseConvMixer.backward, lambda ctx: [1], 1e-3),
        ),
        ("sfne_block", backends.TorchBackend, "pointwise_linear_sum_gelu", wrong_last_weight),
        ("sfne_block", TF.GeluProductSum, "backward", scaled_backward(TF.GeluProductSum.backward, gelu_inputs, 1e-6)),
        ("rgu", backends.TorchBackend, "gated_pointwise_linear", wrong_ramp),
        ("rgu", TF.GatedProduct, "backward", scaled_backward(TF.GatedProduct.backward, lambda ctx: [3], 1e-6)),
        ("sfne_block", TF.GatedProduct, "_saved", staticmethod(wrong_recomputed_v)),
    ]
    for name, owner, method, wrong in plants:
        with monkeypatch.context() as m:
            m.setattr(owner, method, wrong)
            samples, dtype = cases[name]
            assert _training_mismatches(name, samples, dtype), f"a bug planted in {owner.__name__}.{method} went unseen"


#: backend methods that choose or move things but compute no operator values
PLUMBING = {
    "standard_namespace",
    "device",
    "same_device",
    "is_lazy",
    "all_finite",
    "owns_host_arrays",
    "work_dtype",
    "cache_key",
    "freeze",
    "stop_gradient",
    "depthwise_method",
    "__init__",
    "__repr__",
}


@pytest.mark.parametrize("cls", [backends.NumPyBackend, backends.TorchBackend])
def test_every_fast_path_of_numpy_and_torch_has_a_planted_bug(cls):
    """A new fast path must join FAST_PATHS (the CuPy kernels need a GPU: tests/test_cupy_adapter.py)."""
    computing = {name for name, v in vars(cls).items() if callable(v) and not name.startswith("__")} - PLUMBING
    planted = {m for c, m, _, _ in FAST_PATHS if c is cls} | {m for c, m in PLANTED_IN_TRAINING if c is cls}
    assert computing - planted == set(), f"{cls.__name__}: fast paths without a planted bug"

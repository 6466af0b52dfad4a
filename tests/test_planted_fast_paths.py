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

import hyperzzw_core
from hyperzzw_core import backends
from hyperzzw_core import reference as R
from hyperzzw_core.reference import flatten
from hyperzzw_core.testing import REGISTRY, assert_close, to_numpy

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
]


def _leaves(out: Any) -> dict[str, Any]:
    return flatten(list(out)) if isinstance(out, tuple) else flatten(out)


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
            got = _leaves(getattr(hyperzzw_core, name)(*b.convert(sample.args), **b.convert(sample.kwargs)))
            want = _leaves(spec.reference(*sample.args, **sample.kwargs))
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

    special = {"pointwise_linear_sum": wrong_last_term, "split_channels": wrong_piece}
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


#: fast paths that only float32 training takes, planted below instead of through FAST_PATHS' float64 samples
PLANTED_IN_FLOAT32_TRAINING = {(backends.TorchBackend, "depthwise_mixer_fast")}


def _local_conv_float32_training_mismatches() -> list[str]:
    """What of the core's ``local_conv`` on torch, float32 with gradients, on 9×9 and 81 positions
    (above the dense path's 64: oneDNN's path, which ``depthwise_mixer_fast`` fuses), disagrees
    with the reference's value and VJP (float32 policy against the float64 reference)."""
    rng = np.random.default_rng(3)
    bad = []
    for shape, k in (((2, 6, 9, 9), 3), ((2, 6, 81), 7)):
        c, d = shape[1], len(shape) - 2
        args = (
            {"weight": rng.standard_normal((c, c)) / 3, "bias": rng.standard_normal(c)},
            rng.standard_normal(shape),
            rng.standard_normal((c, 1) + (k,) * d) / k,
        )
        g = rng.standard_normal(shape)
        low = tuple(_cast_tree(a, np.float32) for a in args)
        t_args = tuple(_cast_tree(a, torch.from_numpy) for a in low)
        for leaf in flatten(t_args[0]).values():
            leaf.requires_grad_()
        t_args[1].requires_grad_()
        t_args[2].requires_grad_()
        out = hyperzzw_core.local_conv(*t_args)
        out.backward(torch.from_numpy(g.astype(np.float32)))
        got = {"value": out.detach(), "y": t_args[1].grad, "k_l": t_args[2].grad}
        got.update({f"params/{n}": v.grad for n, v in flatten(t_args[0]).items()})
        wants, lows = [], []
        for a, gg in ((args, g), (low, g.astype(np.float32))):
            gp, gy, gk = R.local_conv_vjp(*a, gg)
            vals = {"value": R.local_conv(*a), "y": gy, "k_l": gk}
            vals.update({f"params/{n}": v for n, v in flatten(gp).items()})
            (wants if a is args else lows).append(vals)
        for key, want in wants[0].items():
            try:
                scale = float(np.max(np.abs(want)))
                assert_close(to_numpy(got[key]), want, dtype="float32", scale=scale, ref_low=lows[0][key], name=key)
            except AssertionError:
                bad.append(f"local_conv/{d}d/{key}")
    return bad


def _cast_tree(tree: Any, fn: Any) -> Any:
    """``fn`` (a dtype or a converter) applied to every array of a dict of arrays or an array."""
    conv = (lambda a: a.astype(fn)) if isinstance(fn, type) else fn
    return {k: conv(v) for k, v in tree.items()} if isinstance(tree, dict) else conv(tree)


@pytest.mark.parametrize("plant", ["output", "gradient of K_l"])
def test_a_bug_planted_in_the_float32_training_fusion_fails_the_comparison(monkeypatch, plant: str) -> None:
    """``TorchBackend.depthwise_mixer_fast`` runs only with gradients in float32: the core's
    ``local_conv`` then agrees with the reference's value and VJP, and disagrees once its output,
    (its first sample: BS follows, which a uniform scale cannot survive) or the Function's gradient of
    the kernel alone, is scaled by 1 + 1e-3 (far above the float32 policy)."""
    from hyperzzw_core.backends import _torch_functions as TF

    assert _local_conv_float32_training_mismatches() == [], "the core must agree before the bug is planted"
    if plant == "output":  # (BS follows, which a scale of a whole channel cannot survive: the first sample's)
        fused = vars(backends.TorchBackend)["depthwise_mixer_fast"]

        def wrong_first_sample(self: Any, *args: Any) -> Any:
            out = fused(self, *args)
            return None if out is None else torch.cat([out[:1] * (1 + 1e-3), out[1:]])

        monkeypatch.setattr(backends.TorchBackend, "depthwise_mixer_fast", wrong_first_sample)
    else:
        backward = TF.DepthwiseConvMixer.backward

        def wrong(ctx: Any, g: Any) -> Any:
            gy, gk, *rest = backward(ctx, g)
            return (gy, None if gk is None else gk * (1 + 1e-3), *rest)

        monkeypatch.setattr(TF.DepthwiseConvMixer, "backward", staticmethod(wrong))
    caught = _local_conv_float32_training_mismatches()
    assert caught and all(("k_l" in c) for c in caught) == (plant != "output"), caught


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
    planted = {m for c, m, _, _ in FAST_PATHS if c is cls} | {m for c, m in PLANTED_IN_FLOAT32_TRAINING if c is cls}
    assert computing - planted == set(), f"{cls.__name__}: fast paths without a planted bug"

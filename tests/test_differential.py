"""Differential tests: every registered operator of the array-API core against the NumPy reference.

One generic test per property, over ``hyperzzw_core.testing.REGISTRY`` × backends (tests/conftest.py)
× dtypes (spec §B):

* forward values match the reference under the tolerance policy (float64: 1e-10 relative; float32:
  judged against the reference's own float32 error); outputs are arrays of the input's namespace, on
  its device, in its dtype (``xp_assert_close``, tests/xp_assert.py); the inputs are not modified;
* torch only: autograd gradients for a random cotangent match the reference's hand-written VJPs;
* every error input raises on the core too (same exception type, message matching the regex).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from backends import Backend
from vjp_check import autograd_against_vjp, cast_floats, leaves
from xp_assert import xp_assert_close

import hyperzzw_core
from hyperzzw_core.reference import flatten
from hyperzzw_core.testing import REGISTRY, to_numpy

NAMES = sorted(REGISTRY)
GRAD_NAMES = sorted(n for n, s in REGISTRY.items() if s.vjp is not None and s.differentiable)
ERROR_NAMES = sorted(n for n, s in REGISTRY.items() if s.error_inputs())


def _core(name: str) -> Any:
    fn = getattr(hyperzzw_core, name, None)
    assert fn is not None, f"hyperzzw_core has no operator {name!r} (the registry names it)"
    return fn


def _samples(spec: Any, dtype: str) -> list[Any]:
    """The registry's samples with every float array in ``dtype`` (a sample built as
    ``float32_array / np.sqrt(n)`` is float64 under NumPy 2's promotion rules)."""
    return [
        dataclasses.replace(s, args=cast_floats(s.args, dtype), kwargs=cast_floats(s.kwargs, dtype))
        for s in spec.samples(dtype)
    ]


def _scale(arrays: dict[str, Any]) -> float:
    return max([float(np.max(np.abs(to_numpy(v)))) for v in arrays.values() if np.size(to_numpy(v))] + [0.0])


def _check_outputs(name: str, b: Backend, dtype: str, out: Any, expected: Any, ref_low: Any) -> None:
    got, want = leaves(out), leaves(expected)
    assert list(got) == list(want), f"{name}: output structure {list(got)} != reference {list(want)}"
    low = leaves(ref_low) if ref_low is not None else {}
    scale = _scale(want)
    for key, a in got.items():
        where = f"{name}[{key}]" if key else name
        xp_assert_close(a, want[key], backend=b, dtype=dtype, ref_low=low.get(key), scale=scale, name=where)


def _reference_pair(spec: Any, args: tuple, kwargs: dict, dtype: str) -> tuple[Any, Any]:
    """(float64 reference on the dtype-rounded inputs, reference in ``dtype`` or None)."""
    expected = spec.reference(*cast_floats(args, np.float64), **kwargs)
    ref_low = spec.reference(*args, **kwargs) if dtype == "float32" else None
    return expected, ref_low


@pytest.mark.skip_backend("array_api_strict:no_float64", dtype="float64", reason="a float32-only device")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_reference(backend: Backend, name: str, dtype: str) -> None:
    spec = REGISTRY[name]
    for sample in _samples(spec, dtype):
        args, kwargs = backend.convert(sample.args), backend.convert(sample.kwargs)
        before = [to_numpy(v) for v in flatten(list(args)).values() if hasattr(v, "shape")]
        out = _core(name)(*args, **kwargs)
        after = [to_numpy(v) for v in flatten(list(args)).values() if hasattr(v, "shape")]
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(before, after, strict=True)), (
            f"{name}/{sample.label} on {backend}: an input was modified in place"
        )
        expected, ref_low = _reference_pair(spec, sample.args, sample.kwargs, dtype)
        _check_outputs(f"{name}/{sample.label}", backend, dtype, out, expected, ref_low)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", GRAD_NAMES)
def test_autograd_matches_reference_vjp(torch_backend: Backend, name: str, dtype: str) -> None:
    rng = np.random.default_rng(1234)
    for sample in _samples(REGISTRY[name], dtype):
        pair = autograd_against_vjp(torch_backend, name, sample, dtype, rng)
        structure = f"{name}: gradient structure {list(pair.grads)} != {list(pair.want)}"
        assert list(pair.grads) == list(pair.want), structure
        scale = _scale(pair.want)
        for k, g in pair.grads.items():
            xp_assert_close(
                g,
                pair.want[k],
                backend=torch_backend,
                dtype=dtype,
                ref_low=pair.low.get(k),
                scale=scale,
                name=f"grad {name}/{sample.label} {k}",
            )


@pytest.mark.skip_backend("array_api_strict:no_float64", reason="a float32-only device; the error inputs are float64")
@pytest.mark.parametrize("name", ERROR_NAMES)
def test_error_inputs_raise(backend: Backend, name: str) -> None:
    for err in REGISTRY[name].error_inputs():
        args, kwargs = backend.convert(err.args), backend.convert(err.kwargs)
        with pytest.raises(err.exc_type, match=err.match):
            _core(name)(*args, **kwargs)


def test_registry_covers_the_core() -> None:
    """Every operator of the task's list is registered and exported by the core."""
    required = {
        "magnet_g",
        "magnet_gc",
        "magnet_l",
        "hyperzzw_global",
        "hyperzzw_2e",
        "depthwise_conv",
        "local_conv",
        "rgu",
        "si_glu",
        "hyper_channel_interaction",
        "hyper_interaction",
        "instance_standardize",
        "batch_standardize",
        "g_ibs",
        "gelu",
        "pointwise_linear",
        "channel_mixer",
        "bottleneck",
        "sfne_block",
        "slow_loss",
        "label_smoothing_cross_entropy",
        "adaptive_avg_pool",
        "tile_channels",
        "terminator_forward",
        "terminator_loss",
    }
    assert required <= set(REGISTRY), f"not registered: {sorted(required - set(REGISTRY))}"
    assert all(callable(getattr(hyperzzw_core, n, None)) for n in required)


def test_numpy_differential_test_catches_a_bug_planted_in_the_reference_correlate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The core's NumPy convolution is its own (a sliding-window view over every spatial axis, one
    contraction), not the reference's ``_correlate``: with a convolution (flipped kernel) planted
    in the reference, the NumPy forward test above must fail, and the core must not move."""
    from backends import _numpy

    from hyperzzw_core.reference import _conv as ref_conv

    numpy_backend = _numpy()
    rng = np.random.default_rng(0)
    y, k_l = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((3, 1, 3, 3))
    before = hyperzzw_core.depthwise_conv(y, k_l)
    test_forward_matches_reference(numpy_backend, "depthwise_conv", "float64")  # passes unplanted

    original = ref_conv._correlate

    def flipped(y: np.ndarray, kern: np.ndarray) -> np.ndarray:
        return original(y, kern[(slice(None),) + (slice(None, None, -1),) * (kern.ndim - 1)])

    monkeypatch.setattr(ref_conv, "_correlate", flipped)
    assert not np.allclose(hyperzzw_core.reference.depthwise_conv(y, k_l), before)  # the plant is live
    np.testing.assert_array_equal(hyperzzw_core.depthwise_conv(y, k_l), before)  # the core does not use it
    for name in ("depthwise_conv", "local_conv"):
        with pytest.raises(AssertionError):
            test_forward_matches_reference(numpy_backend, name, "float64")

"""Property tests: the array-API core on hypothesis-drawn inputs, on every backend, against the reference.

The registry's differential tests (tests/test_differential.py) use fixed seeded samples; here
``hypothesis.extra.array_api`` draws the shapes and the values (zeros, ±4, ±2⁻³⁰, repeated values,
all-negative arrays) for B = 1, C = 1, k = 1 on 1D
(B, C, L) and 2D (B, C, H, W) inputs. Each operator's forward is compared with the float64
reference by ``xp_assert_close`` (namespace, device, dtype, shape, then values by the tolerance
policy of spec §B; float32 judged against the reference's own float32 error).

Examples are drawn with NumPy's array-API namespace (one float64 reference for all) and converted
to the backend. The example count is capped per case (``MAX_EXAMPLES`` below) to keep the default
run's added time to about a second per backend; HYPOTHESIS_PROFILE=thorough raises the cap.

Found by these tests: the float32 GELU of torch (its native ``gelu``), of JAX (its erf) and of the
generic backend (``erf_portable``) is outside the float32 policy on the negative tail (x ≈ −2.6 to
−3: 1 + erf(x/√2) cancels, and their erf is less accurate there than the reference's float32
evaluation by 10 to 100 times). Pinned by the strict xfail ``test_gelu_float32_negative_tail``; the property test leaves
those cases out (declaratively, by ``skip_backend``) until the core is fixed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from backends import Backend
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.array_api import make_strategies_namespace
from xp_assert import xp_assert_close

import hyperzzw_core as h
from hyperzzw_core import reference as R

xps = make_strategies_namespace(np)

MAX_EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 12
BOUND = 4.0
"""Magnitudes at most BOUND: the operators' inputs are standardised activations and kernels."""
TINY = 2.0**-30
"""Nonzero magnitudes at least TINY, so that a product of three inputs (HyperZ·Z·W) stays in the
normal range: XLA on CPU (JAX) flushes subnormal inputs and results to zero (1.0 · 2.2e-313 gives
0, the reference 2.2e-313), which no relative tolerance can judge, and which no activation of the
network comes near."""


def _elements(dtype: str) -> st.SearchStrategy[float]:
    """0, or a magnitude in [TINY, BOUND] of either sign (the extremes and simple values included)."""
    dt = getattr(np, dtype)
    return st.one_of(
        st.just(0.0),
        xps.from_dtype(dt, min_value=TINY, max_value=BOUND),
        xps.from_dtype(dt, min_value=-BOUND, max_value=-TINY),
    )


def _array(data: st.DataObject, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return data.draw(xps.arrays(getattr(np, dtype), shape, elements=_elements(dtype)))


def _spatial(data: st.DataObject, ndim: int) -> tuple[int, ...]:
    """Spatial sizes (1 to 8 per axis) of a 1D or 2D input, drawn by the array-API strategies."""
    return data.draw(xps.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=8))


def _well_conditioned(x: np.ndarray) -> None:
    """Standardisation computes x − mean(x): on nearly constant inputs the result is round-off
    whose exact value is 0, so no relative tolerance can judge it. Keep inputs whose spread is at
    least 1e-3 of their magnitude (then the round-off is below 1e-12 of the output's scale)."""
    x64 = x.astype(np.float64)
    assume(np.ptp(x64) >= 1e-3 * np.max(np.abs(x64)))


Case = tuple[tuple[np.ndarray, ...], dict[str, Any]]


def _unary(data: st.DataObject, ndim: int, dtype: str) -> Case:
    return (_array(data, (1, 1, *_spatial(data, ndim)), dtype),), {}


def _standardize(data: st.DataObject, ndim: int, dtype: str) -> Case:
    (x,), kw = _unary(data, ndim, dtype)
    _well_conditioned(x)
    return (x,), kw


def _two_e(data: st.DataObject, ndim: int, dtype: str) -> Case:
    shape = (1, 1, *_spatial(data, ndim))
    return (_array(data, shape, dtype), _array(data, shape, dtype)), {}


def _conv_k1(data: st.DataObject, ndim: int, dtype: str) -> Case:
    return (_array(data, (1, 1, *_spatial(data, ndim)), dtype), _array(data, (1, 1) + (1,) * ndim, dtype)), {}


def _global(data: st.DataObject, ndim: int, dtype: str) -> Case:
    """2D: square (1, 1, n, n); 1D: (1, 1, n²) viewed as its n×n grid (spec §5 Q1)."""
    n = data.draw(st.integers(1, 6), label="n")
    shape, kwargs = ((1, 1, n, n), {}) if ndim == 2 else ((1, 1, n * n), {"grid": (n, n)})
    return tuple(_array(data, shape, dtype) for _ in range(3)), kwargs


OPS: dict[str, Callable[[st.DataObject, int, str], Case]] = {
    "gelu": _unary,
    "si_glu": _unary,
    "sigmoid": _unary,
    "instance_standardize": _standardize,
    "batch_standardize": _standardize,
    "hyperzzw_2e": _two_e,
    "depthwise_conv": _conv_k1,
    "hyperzzw_global": _global,
}


STRICT = ("array_api_strict", "array_api_strict:device1", "array_api_strict:no_float64")
TAIL = "float32 GELU's negative tail is outside the policy (test_gelu_float32_negative_tail, a strict xfail)"


@pytest.mark.skip_backend("array_api_strict:no_float64", dtype="float64", reason="a float32-only device")
@pytest.mark.skip_backend("torch", "jax", *STRICT, name="gelu", dtype="float32", reason=TAIL)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", sorted(OPS))
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # the backend fixture is an immutable description, the same for every example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_core_matches_reference_on_drawn_inputs(
    backend: Backend, name: str, ndim: int, dtype: str, data: st.DataObject
) -> None:
    args, kwargs = OPS[name](data, ndim, dtype)
    out = getattr(h, name)(*backend.convert(args), **kwargs)
    ref = getattr(R, name)
    expected = ref(*(a.astype(np.float64) for a in args), **kwargs)
    ref_low = ref(*args, **kwargs) if dtype == "float32" else None
    xp_assert_close(out, expected, backend=backend, dtype=dtype, ref_low=ref_low, name=f"{name} {ndim}D")


@pytest.mark.xfail_backend("torch", reason="torch's native float32 gelu: 1e-5 to 1e-4 relative error (ref32: 1e-6)")
@pytest.mark.xfail_backend(
    *STRICT, x=-2.75, reason="erf_portable in float32: 3e-5 relative error at x = -2.75 (ref32: 3e-6)"
)
@pytest.mark.xfail_backend(
    "jax", x=-2.625, reason="JAX's float32 erf: 1.3e-5 relative error at x = -2.625 (ref32: 1e-6)"
)
@pytest.mark.parametrize("x", [-2.625, -2.75, -3.0])
def test_gelu_float32_negative_tail(backend: Backend, x: float) -> None:
    """The inputs the property test above found, fixed: a constant float32 input on GELU's negative
    tail, where max|e| is the tail value itself and the policy's floor does not hide the error."""
    v = np.full((1, 1, 4), x, dtype=np.float32)
    xp_assert_close(
        h.gelu(backend.from_numpy(v)),
        R.gelu(v.astype(np.float64)),
        backend=backend,
        dtype="float32",
        ref_low=R.gelu(v),
        name=f"gelu({x})",
    )

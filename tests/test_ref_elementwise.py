"""Forward values of the reference element-wise and point-wise operators.

GELU (exact erf form), Si-GLU, σ, HyperZZW_2E, the global HyperZ·Z·W product (2D and 1D on a
grid), and the 1×1 layers (Linear{d}d, channel mixer, bottleneck). Spec §2 "Conventions",
§2.2, §2.4, §2.6, §2.10, §5 Q1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hyperzzw_core.reference import (
    bottleneck,
    channel_mixer,
    gelu,
    hyperzzw_2e,
    hyperzzw_global,
    pointwise_linear,
    si_glu,
    sigmoid,
)

DTYPES = (np.float64, np.float32)


def _tol(dtype) -> dict:
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-5}


def _elementwise_arrays(data, lo: float = -12.0, hi: float = 12.0) -> np.ndarray:
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), label="shape")
    return data.draw(hnp.arrays(dtype, shape, elements=st.floats(lo, hi, width=32)), label="x")


def _randn(seed: int, shape, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------- activations


@given(data=st.data())
def test_gelu_matches_math_erf_loop_and_torch(data):
    x = _elementwise_arrays(data)
    out = gelu(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    want = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(float).ravel()])
    np.testing.assert_allclose(out.ravel(), want, **_tol(x.dtype))
    torch_out = F.gelu(torch.from_numpy(x.astype(np.float64)), approximate="none").numpy()
    np.testing.assert_allclose(out, torch_out, **_tol(x.dtype))


def test_gelu_is_the_exact_erf_form_not_tanh():
    # At x = 1 the exact GELU is Φ(1) = 0.841344746068543; the tanh approximation gives 0.841191990.
    np.testing.assert_allclose(
        gelu(np.array([1.0, -1.0, 0.0])), [0.8413447460685429, -0.15865525393145707, 0.0], rtol=1e-15, atol=0
    )


@given(data=st.data())
def test_si_glu_matches_torch_silu(data):
    x = _elementwise_arrays(data, -40.0, 40.0)
    out = si_glu(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_allclose(out, F.silu(torch.from_numpy(x.astype(np.float64))).numpy(), **_tol(x.dtype))
    want = np.array([v / (1.0 + math.exp(-v)) for v in x.astype(float).ravel()])
    np.testing.assert_allclose(out.ravel(), want, **_tol(x.dtype))


def _stable_sigmoid(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@given(data=st.data())
def test_sigmoid_matches_loop(data):
    x = _elementwise_arrays(data, -100.0, 100.0)
    out = sigmoid(x)
    assert out.dtype == x.dtype
    want = np.array([_stable_sigmoid(v) for v in x.astype(float).ravel()])
    np.testing.assert_allclose(out.ravel(), want, **_tol(x.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_no_overflow_at_large_magnitude(dtype):
    x = np.array([-1000.0, -745.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype)
    with np.errstate(all="raise"):
        out = sigmoid(x)
    assert out.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(out))
    assert out[-1] == 1.0 and out[0] == 0.0 and out[3] == 0.5
    np.testing.assert_allclose(out, [_stable_sigmoid(float(v)) for v in x], rtol=1e-6, atol=1e-30)
    # Si-GLU at the same magnitudes: x·σ(x) → 0 and x.
    np.testing.assert_allclose(si_glu(x)[[0, -1]], [0.0, 1000.0], rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------- HyperZZW_2E


@pytest.mark.parametrize(
    "k_shape, z_shape",
    [
        ((2, 3, 4, 4), (2, 3, 4, 4)),
        ((1, 3, 4, 4), (2, 3, 4, 4)),
        ((1, 1, 5), (4, 1, 5)),  # the channel kernel (1,1,C) against GAP scores (B,1,C)
        ((5,), (3, 5)),
        ((1, 1, 4, 4), (2, 1, 4, 4)),  # the spatial kernel against channel means
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hyperzzw_2e_is_k_times_z_squared(k_shape, z_shape, dtype):
    k = _randn(1, k_shape, dtype)
    z = _randn(2, z_shape, dtype)
    out = hyperzzw_2e(k, z)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == np.broadcast_shapes(k_shape, z_shape)
    kb = np.broadcast_to(k.astype(np.float64), out.shape)
    zb = np.broadcast_to(z.astype(np.float64), out.shape)
    want = np.array([a * b * b for a, b in zip(kb.ravel(), zb.ravel(), strict=True)]).reshape(out.shape)
    np.testing.assert_allclose(out, want, **_tol(dtype))


def test_hyperzzw_2e_sign_follows_kernel():
    k = np.array([-1.0, 2.0, -3.0])
    z = np.array([2.0, -3.0, -0.5])
    np.testing.assert_array_equal(hyperzzw_2e(k, z), [-4.0, 18.0, -0.75])


# ------------------------------------------------------------------------------ global product


def _einsum_global(z, k_g, y):
    zb = z.astype(np.float64)
    kb = np.broadcast_to(k_g.astype(np.float64), z.shape)
    return np.einsum("bcim,bcim,bcmj->bcij", zb, kb, y.astype(np.float64))


@given(data=st.data())
def test_hyperzzw_global_2d_matches_einsum(data):
    b = data.draw(st.integers(1, 3), label="batch")
    c = data.draw(st.integers(1, 4), label="channels")
    n = data.draw(st.integers(1, 8), label="H = W")
    kshape = data.draw(st.sampled_from(["1CHW", "CHW", "BCHW"]), label="k_g layout")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((b, c, n, n)).astype(dtype)
    y = rng.standard_normal((b, c, n, n)).astype(dtype)
    k_g = rng.standard_normal({"1CHW": (1, c, n, n), "CHW": (c, n, n), "BCHW": (b, c, n, n)}[kshape]).astype(dtype)
    out = hyperzzw_global(z, k_g, y)
    assert out.dtype == np.dtype(dtype) and out.shape == z.shape
    np.testing.assert_allclose(out, _einsum_global(z, k_g, y), **_tol(dtype))


@given(data=st.data())
def test_hyperzzw_global_1d_on_grid_matches_einsum(data):
    b = data.draw(st.integers(1, 3), label="batch")
    c = data.draw(st.integers(1, 4), label="channels")
    h = data.draw(st.integers(1, 6), label="grid side")
    kshape = data.draw(st.sampled_from(["1CL", "CL"]), label="k_g layout")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    length = h * h
    z = rng.standard_normal((b, c, length)).astype(dtype)
    y = rng.standard_normal((b, c, length)).astype(dtype)
    k_g = rng.standard_normal((1, c, length) if kshape == "1CL" else (c, length)).astype(dtype)
    out = hyperzzw_global(z, k_g, y, grid=(h, h))
    assert out.dtype == np.dtype(dtype) and out.shape == z.shape
    # View the sequence as its (h, w) image (row-major), multiply, flatten back.
    kb = np.broadcast_to(k_g, z.shape)

    def img(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float64).reshape(b, c, h, h)

    want = np.einsum("bcim,bcim,bcmj->bcij", img(z), img(kb), img(y)).reshape(b, c, length)
    np.testing.assert_allclose(out, want, **_tol(dtype))
    # Element by element: G[b,c,i·h+j] = Σ_m Z[b,c,i·h+m]·K[c,i·h+m]·Y[b,c,m·h+j].
    i, j = h - 1, 0
    direct = sum(float(z[0, 0, i * h + m]) * float(kb[0, 0, i * h + m]) * float(y[0, 0, m * h + j]) for m in range(h))
    np.testing.assert_allclose(out[0, 0, i * h + j], direct, **_tol(dtype))


def test_hyperzzw_global_hand_computed():
    z = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    k = np.array([[[[1.0, 0.0], [2.0, 1.0]]]])
    y = np.array([[[[1.0, 1.0], [0.0, 2.0]]]])
    # Ẑ = [[1, 0], [6, 4]]; Ẑ @ Y = [[1, 1], [6, 14]] (no channel mixing, rows × columns).
    np.testing.assert_array_equal(hyperzzw_global(z, k, y), [[[[1.0, 1.0], [6.0, 14.0]]]])
    np.testing.assert_array_equal(
        hyperzzw_global(z.reshape(1, 1, 4), k.reshape(1, 1, 4), y.reshape(1, 1, 4), grid=(2, 2)),
        [[[1.0, 1.0, 6.0, 14.0]]],
    )


def test_hyperzzw_global_does_not_mix_channels():
    rng = np.random.default_rng(4)
    z, y = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    k = rng.standard_normal((1, 3, 4, 4))
    base = hyperzzw_global(z, k, y)
    z2 = z.copy()
    z2[:, 1] += 1.0
    changed = hyperzzw_global(z2, k, y)
    np.testing.assert_array_equal(changed[:, [0, 2]], base[:, [0, 2]])
    assert not np.allclose(changed[:, 1], base[:, 1])


# ----------------------------------------------------------------------------- 1×1 layers


def _draw_linear(data, out_ch: int | None = None):
    ndim = data.draw(st.sampled_from([1, 2]), label="spatial dims")
    b = data.draw(st.integers(1, 3), label="batch")
    i = data.draw(st.integers(1, 8), label="in channels")
    o = out_ch if out_ch is not None else data.draw(st.integers(1, 8), label="out channels")
    spatial = tuple(data.draw(st.integers(1, 6), label=f"spatial size {a}") for a in range(ndim))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, i) + spatial).astype(dtype)
    o = i if o == -1 else o
    params = {"weight": rng.standard_normal((o, i)).astype(dtype), "bias": rng.standard_normal(o).astype(dtype)}
    return params, x


def _torch_conv1x1(params, x):
    xt = torch.from_numpy(x.astype(np.float64))
    w = torch.from_numpy(params["weight"].astype(np.float64))
    bias = torch.from_numpy(params["bias"].astype(np.float64))
    if x.ndim == 3:
        return F.conv1d(xt, w[:, :, None], bias)
    return F.conv2d(xt, w[:, :, None, None], bias)


@given(data=st.data())
def test_pointwise_linear_matches_torch_1x1_conv(data):
    params, x = _draw_linear(data)
    out = pointwise_linear(params, x)
    assert out.dtype == x.dtype and out.shape == (x.shape[0], params["weight"].shape[0]) + x.shape[2:]
    np.testing.assert_allclose(out, _torch_conv1x1(params, x).numpy(), **_tol(x.dtype))


@given(data=st.data())
def test_bottleneck_matches_torch_1x1_conv(data):
    params, x = _draw_linear(data)
    out = bottleneck(params, x)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, _torch_conv1x1(params, x).numpy(), **_tol(x.dtype))


@given(data=st.data())
def test_channel_mixer_matches_torch_conv_then_instance_norm(data):
    params, x = _draw_linear(data, out_ch=-1)
    out = channel_mixer(params, x)
    assert out.dtype == x.dtype and out.shape == x.shape
    lin = _torch_conv1x1(params, x)
    if int(np.prod(x.shape[2:])) > 1:
        want = F.instance_norm(lin, eps=1e-5).numpy()
    else:
        want = np.zeros(x.shape)  # a single value per instance standardises to 0
    tol = _tol(x.dtype) if x.dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-4}
    np.testing.assert_allclose(out, want, **tol)


def test_pointwise_linear_hand_computed():
    params = {"weight": np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]]), "bias": np.array([0.5, 0.0, -1.0])}
    x = np.array([[[1.0, 4.0], [2.0, -2.0]]])  # (B=1, I=2, L=2)
    np.testing.assert_array_equal(pointwise_linear(params, x), [[[5.5, 0.5], [-2.0, 2.0], [3.0, 10.0]]])

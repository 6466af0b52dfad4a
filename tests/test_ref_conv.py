"""Forward values of the reference depth-wise 'same' convolution and adaptive average pooling.

``depthwise_conv`` (spec §2.3) is checked against a direct loop over output positions and
kernel taps, and against ``scipy.signal.correlate(..., mode='same')`` per (b, c); ``adaptive_avg_pool``
(spec §2.1, MAGNet_L's context path) against PyTorch's ``adaptive_avg_pool{1,2}d``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from hyperzzw_core.reference import adaptive_avg_pool, depthwise_conv

KERNEL_SIZES = (1, 3, 5, 7, 9)
DTYPES = (np.float64, np.float32)


def _tol(dtype) -> dict:
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-5}


def _draw_conv_inputs(data, ndim: int):
    b = data.draw(st.integers(1, 3), label="batch")
    c = data.draw(st.integers(1, 4), label="channels")
    spatial = tuple(data.draw(st.integers(1, 12), label=f"spatial size {a}") for a in range(ndim))
    k = data.draw(st.sampled_from(KERNEL_SIZES), label="kernel size")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((b, c) + spatial).astype(dtype)
    k_l = rng.standard_normal((c, 1) + (k,) * ndim).astype(dtype)
    return y, k_l


def _direct_conv(y: np.ndarray, k_l: np.ndarray) -> np.ndarray:
    """out[b,c,p] = Σ_o k[c,0,o]·y[b,c,p+o−r] over in-bounds taps (zero padding), in float64."""
    y = y.astype(np.float64)
    k_l = k_l.astype(np.float64)
    spatial = y.shape[2:]
    ksize = k_l.shape[2:]
    r = [(k - 1) // 2 for k in ksize]
    out = np.zeros(y.shape)
    for p in np.ndindex(*spatial):
        for o in np.ndindex(*ksize):
            src = tuple(pi + oi - ri for pi, oi, ri in zip(p, o, r, strict=True))
            if all(0 <= s < n for s, n in zip(src, spatial, strict=True)):
                out[(slice(None), slice(None)) + p] += k_l[(slice(None), 0) + o] * y[(slice(None), slice(None)) + src]
    return out


def _scipy_conv(y: np.ndarray, k_l: np.ndarray) -> np.ndarray:
    out = np.empty(y.shape)
    for b in range(y.shape[0]):
        for c in range(y.shape[1]):
            out[b, c] = scipy.signal.correlate(
                y[b, c].astype(np.float64), k_l[c, 0].astype(np.float64), mode="same", method="direct"
            )
    return out


@pytest.mark.parametrize("ndim", [1, 2])
@given(data=st.data())
def test_depthwise_conv_matches_direct_loop(ndim, data):
    y, k_l = _draw_conv_inputs(data, ndim)
    out = depthwise_conv(y, k_l)
    assert out.dtype == y.dtype
    assert out.shape == y.shape
    np.testing.assert_allclose(out, _direct_conv(y, k_l), **_tol(y.dtype))


@pytest.mark.parametrize("ndim", [1, 2])
@given(data=st.data())
def test_depthwise_conv_matches_scipy_correlate_same(ndim, data):
    y, k_l = _draw_conv_inputs(data, ndim)
    out = depthwise_conv(y, k_l)
    assert out.dtype == y.dtype
    np.testing.assert_allclose(out, _scipy_conv(y, k_l), **_tol(y.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "ndim, spatial, k", [(1, (2,), 9), (1, (1,), 7), (2, (3, 2), 9), (2, (1, 1), 5), (2, (4, 4), 7)]
)
def test_depthwise_conv_kernel_bigger_than_input(dtype, ndim, spatial, k):
    rng = np.random.default_rng(7)
    y = rng.standard_normal((2, 3) + spatial).astype(dtype)
    k_l = rng.standard_normal((3, 1) + (k,) * ndim).astype(dtype)
    out = depthwise_conv(y, k_l)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, _scipy_conv(y, k_l), **_tol(dtype))
    np.testing.assert_allclose(out, _direct_conv(y, k_l), **_tol(dtype))


def test_depthwise_conv_hand_computed_1d():
    # y = [1, 2, 3], k = [1, 10, 100] (no flip): out[p] = y[p-1] + 10 y[p] + 100 y[p+1], zero padded.
    y = np.array([[[1.0, 2.0, 3.0]]])
    k_l = np.array([[[1.0, 10.0, 100.0]]])
    np.testing.assert_array_equal(depthwise_conv(y, k_l), [[[210.0, 321.0, 32.0]]])


def test_depthwise_conv_matches_torch_grouped_conv2d():
    rng = np.random.default_rng(3)
    y = rng.standard_normal((2, 4, 6, 6))
    k_l = rng.standard_normal((4, 1, 5, 5))
    want = F.conv2d(torch.from_numpy(y), torch.from_numpy(k_l), padding=2, groups=4).numpy()
    np.testing.assert_allclose(depthwise_conv(y, k_l), want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ adaptive pool


def _torch_pool(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    t = torch.from_numpy(x)
    if x.ndim == 3:
        return F.adaptive_avg_pool1d(t, size[0]).numpy()
    return F.adaptive_avg_pool2d(t, size).numpy()


@pytest.mark.parametrize("ndim", [1, 2])
@given(data=st.data())
def test_adaptive_avg_pool_matches_torch(ndim, data):
    b = data.draw(st.integers(1, 3), label="batch")
    c = data.draw(st.integers(1, 4), label="channels")
    spatial = tuple(data.draw(st.integers(1, 12), label=f"input size {a}") for a in range(ndim))
    size = tuple(data.draw(st.integers(1, 16), label=f"output size {a}") for a in range(ndim))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    x = np.random.default_rng(seed).standard_normal((b, c) + spatial).astype(dtype)
    out = adaptive_avg_pool(x, size)
    assert out.dtype == x.dtype
    assert out.shape == (b, c) + size
    np.testing.assert_allclose(out, _torch_pool(x, size), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "in_size, out_size",
    [
        ((5,), (3,)),  # non-divisible, overlapping bins
        ((3,), (7,)),  # output bigger than input
        ((7,), (7,)),  # identity
        ((10,), (1,)),  # global average
        ((7, 5), (3, 9)),  # mixed: shrink one axis, grow the other
        ((12, 12), (9, 9)),  # the MAGNet_L k=9 pooling of a 12x12 map
        ((2, 3), (5, 4)),  # output bigger than input on both axes
        ((8, 8), (3, 3)),
    ],
)
def test_adaptive_avg_pool_edge_sizes(dtype, in_size, out_size):
    x = np.random.default_rng(11).standard_normal((2, 3) + in_size).astype(dtype)
    out = adaptive_avg_pool(x, out_size)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, _torch_pool(x, out_size), **_tol(dtype))


def test_adaptive_avg_pool_hand_computed():
    # n_in = 5 → n_out = 3: bins [0, 2), [1, 4), [3, 5) (PyTorch: floor(i·n/k) to ceil((i+1)·n/k)).
    x = np.array([[[1.0, 2.0, 4.0, 8.0, 16.0]]])
    np.testing.assert_allclose(adaptive_avg_pool(x, (3,)), [[[1.5, 14.0 / 3.0, 12.0]]], rtol=1e-15)
    # n_in = 2 → n_out = 3: bins [0, 1), [0, 2), [1, 2).
    x = np.array([[[2.0, 6.0]]])
    np.testing.assert_allclose(adaptive_avg_pool(x, (3,)), [[[2.0, 4.0, 6.0]]], rtol=1e-15)

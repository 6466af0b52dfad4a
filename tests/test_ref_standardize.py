"""Forward values of the reference standardisations IS, BS and G-IBS (spec §2.9).

Each is checked against its defining statistics (per-(b, c) or per-c mean and biased variance,
computed here with explicit loops) and against ``torch.nn.functional.instance_norm`` /
``batch_norm(training=True)`` without affine parameters or running statistics, in 1D and 2D.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from hyperzzw_core.reference import batch_standardize, g_ibs, instance_standardize

DTYPES = (np.float64, np.float32)


def _tol(dtype) -> dict:
    return {"rtol": 1e-10, "atol": 1e-10} if dtype == np.float64 else {"rtol": 1e-4, "atol": 1e-4}


def _draw_x(data, channels: int | None = None) -> np.ndarray:
    ndim = data.draw(st.sampled_from([1, 2]), label="spatial dims")
    b = data.draw(st.integers(1, 4), label="batch")
    c = channels if channels is not None else data.draw(st.integers(1, 6), label="channels")
    spatial = tuple(data.draw(st.integers(1, 8), label=f"spatial size {a}") for a in range(ndim))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    scale = data.draw(st.sampled_from([1e-3, 0.1, 1.0, 30.0]), label="scale")
    offset = data.draw(st.floats(-5.0, 5.0), label="offset")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.standard_normal((b, c) + spatial)).astype(dtype)


def _standardize_slice(v: np.ndarray, eps: float) -> np.ndarray:
    """(v − mean) / sqrt(biased var + eps) over all elements of ``v``, in float64."""
    v = v.astype(np.float64)
    n = v.size
    mu = sum(float(t) for t in v.ravel()) / n
    var = sum((float(t) - mu) ** 2 for t in v.ravel()) / n
    return (v - mu) / np.sqrt(var + eps)


def _instance_loop(x: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty(x.shape)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[b, c] = _standardize_slice(x[b, c], eps)
    return out


def _batch_loop(x: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty(x.shape)
    for c in range(x.shape[1]):
        out[:, c] = _standardize_slice(x[:, c], eps)
    return out


def _torch_is(x: np.ndarray, eps: float) -> np.ndarray:
    return F.instance_norm(torch.from_numpy(x), eps=eps).numpy()


def _torch_bs(x: np.ndarray, eps: float) -> np.ndarray:
    return F.batch_norm(torch.from_numpy(x), None, None, training=True, eps=eps).numpy()


@given(data=st.data())
def test_instance_standardize_matches_statistics_and_torch(data):
    x = _draw_x(data)
    eps = data.draw(st.sampled_from([1e-5, 1e-2, 0.5]), label="eps")
    out = instance_standardize(x, eps=eps)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_allclose(out, _instance_loop(x, eps), **_tol(x.dtype))
    if int(np.prod(x.shape[2:])) > 1:  # torch refuses a single value per instance
        np.testing.assert_allclose(out, _torch_is(x, eps), **_tol(x.dtype))


@given(data=st.data())
def test_batch_standardize_matches_statistics_and_torch(data):
    x = _draw_x(data)
    eps = data.draw(st.sampled_from([1e-5, 1e-2, 0.5]), label="eps")
    out = batch_standardize(x, eps=eps)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_allclose(out, _batch_loop(x, eps), **_tol(x.dtype))
    if x.shape[0] * int(np.prod(x.shape[2:])) > 1:  # torch refuses a single value per channel
        np.testing.assert_allclose(out, _torch_bs(x, eps), **_tol(x.dtype))


@given(data=st.data())
def test_g_ibs_even_groups_batch_odd_groups_instance(data):
    groups = data.draw(st.integers(1, 4), label="groups")
    size = data.draw(st.integers(1, 2), label="channels per group")
    x = _draw_x(data, channels=groups * size)
    eps = data.draw(st.sampled_from([1e-5, 0.1]), label="eps")
    out = g_ibs(x, groups=groups, eps=eps)
    assert out.dtype == x.dtype and out.shape == x.shape
    bs, is_ = _batch_loop(x, eps), _instance_loop(x, eps)
    for c in range(x.shape[1]):
        group = c // size
        want = bs[:, c] if group % 2 == 0 else is_[:, c]
        np.testing.assert_allclose(out[:, c], want, **_tol(x.dtype), err_msg=f"channel {c}, group {group}")
    # The same through torch, group by group.
    t = torch.from_numpy(x)
    parts = []
    for j, part in enumerate(torch.split(t, size, dim=1)):
        if j % 2 == 0:
            if part.shape[0] * int(np.prod(part.shape[2:])) == 1:
                parts.append(torch.zeros_like(part))  # one value per channel: (x − μ) = 0
            else:
                parts.append(F.batch_norm(part, None, None, training=True, eps=eps))
        elif int(np.prod(part.shape[2:])) == 1:
            parts.append(torch.zeros_like(part))
        else:
            parts.append(F.instance_norm(part, eps=eps))
    np.testing.assert_allclose(out, torch.cat(parts, dim=1).numpy(), **_tol(x.dtype))


@pytest.mark.parametrize("shape", [(3, 24, 4, 4), (2, 12, 5), (4, 36, 3, 3)])
def test_g_ibs_default_twelve_groups(shape):
    x = np.random.default_rng(5).standard_normal(shape) * 3.0 + 1.0
    out = g_ibs(x)
    size = shape[1] // 12
    bs, is_ = _batch_loop(x, 1e-5), _instance_loop(x, 1e-5)
    for c in range(shape[1]):
        want = bs[:, c] if (c // size) % 2 == 0 else is_[:, c]
        np.testing.assert_allclose(out[:, c], want, rtol=1e-10, atol=1e-10)


def test_standardize_hand_computed():
    # One channel, values [0, 2] and [4, 6]: IS gives ±1/sqrt(1 + eps) per sample; BS uses μ = 3,
    # σ² = 5 over the batch.
    eps = 1e-5
    x = np.array([[[0.0, 2.0]], [[4.0, 6.0]]])
    r = 1.0 / np.sqrt(1.0 + eps)
    np.testing.assert_allclose(instance_standardize(x), [[[-r, r]], [[-r, r]]], rtol=1e-15)
    s = 1.0 / np.sqrt(5.0 + eps)
    np.testing.assert_allclose(batch_standardize(x), [[[-3 * s, -s]], [[s, 3 * s]]], rtol=1e-15)


def test_batch_standardize_couples_the_batch_and_instance_does_not():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 4, 4))
    b = a.copy()
    b[1] += 5.0 * rng.standard_normal((3, 4, 4))
    np.testing.assert_allclose(instance_standardize(a)[0], instance_standardize(b)[0], rtol=1e-14)
    assert np.abs(batch_standardize(a)[0] - batch_standardize(b)[0]).max() > 1e-2

"""Forward values of the slow neural loss and the label-smoothing cross-entropy (spec §2.12-2.13).

``slow_loss`` against a direct double loop over the (i, j < i) pairs written from §2.12 (10 pairs
for 5 kernels) and hand-computed numbers; ``label_smoothing_cross_entropy`` against
``torch.nn.functional.cross_entropy(label_smoothing=eps)`` (the same formula) and a loop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from hyperzzw_core.reference import label_smoothing_cross_entropy, slow_loss


def _loop_slow_loss(kernels, factors, kind):
    """Σ_{i=n−1..1} Σ_{j<i} mean((tile_c(K_j, Π bf_t) − K_i)²) or the channel-sum variant."""
    total, pairs = 0.0, 0
    n = len(kernels)
    for i in range(n - 1, 0, -1):
        for j in range(i):
            kj, ki = kernels[j][0].astype(np.float64), kernels[i][0].astype(np.float64)
            if kind == "tiled":
                reps = 1
                for t in range(j, i):
                    reps *= factors[t]
                assert kj.shape[0] * reps == ki.shape[0]
                # tile_c repeats the whole stack: channel c of the tiled kernel is K_j[c mod C_j].
                acc, count = 0.0, 0
                for c in range(ki.shape[0]):
                    diff = kj[c % kj.shape[0]] - ki[c]
                    acc += float((diff * diff).sum())
                    count += diff.size
                total += acc / count
            else:
                diff = kj.sum(axis=0) - ki.sum(axis=0)
                total += float((diff * diff).sum()) / diff.size
            pairs += 1
    return total, pairs


@pytest.mark.parametrize("kind", ["tiled", "channel_sum"])
@given(data=st.data())
def test_slow_loss_matches_double_loop(kind, data):
    n = data.draw(st.integers(2, 5), label="number of kernels")
    factors = [data.draw(st.integers(1, 3), label=f"bf_{t}") for t in range(n - 1)]
    c0 = data.draw(st.integers(1, 2), label="C_0")
    ndim = data.draw(st.sampled_from([1, 2]), label="spatial dims")
    spatial = tuple(data.draw(st.integers(1, 5), label=f"spatial size {a}") for a in range(ndim))
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    chans = [c0]
    for f in factors:
        chans.append(chans[-1] * f)
    if kind == "channel_sum":  # the channel-sum variant does not need the widths to follow bf
        chans = [data.draw(st.integers(1, 6), label=f"C_{i}") for i in range(n)]
    kernels = [rng.standard_normal((1, c) + spatial).astype(dtype) for c in chans]
    out = slow_loss(kernels, factors, kind=kind)
    want, pairs = _loop_slow_loss(kernels, factors, kind)
    assert pairs == n * (n - 1) // 2
    assert out.shape == () and out.dtype == np.dtype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_slow_loss_cifar_widths_ten_pairs():
    # The CIFAR kernels: C = [3, 12, 36, 72, 144] with bf = [4, 3, 2, 2, 2]; 10 pairs.
    rng = np.random.default_rng(0)
    kernels = [0.03 * rng.standard_normal((1, c, 6, 6)) for c in (3, 12, 36, 72, 144)]
    want, pairs = _loop_slow_loss(kernels, [4, 3, 2, 2, 2], "tiled")
    assert pairs == 10
    np.testing.assert_allclose(slow_loss(kernels, [4, 3, 2, 2, 2]), want, rtol=1e-12)
    want, _ = _loop_slow_loss(kernels, [4, 3, 2, 2, 2], "channel_sum")
    np.testing.assert_allclose(slow_loss(kernels, [4, 3, 2, 2, 2], kind="channel_sum"), want, rtol=1e-12)


def test_slow_loss_hand_computed_constant_kernels():
    # Constant kernels K_i = a_i with a = [0, 1, 2, 4, 8]: each tiled pair contributes (a_j − a_i)²,
    # 1 + 4 + 1 + 16 + 9 + 4 + 64 + 49 + 36 + 16 = 200.
    a = [0.0, 1.0, 2.0, 4.0, 8.0]
    chans = [1, 2, 4, 8, 16]
    kernels = [np.full((1, c, 3, 3), v) for c, v in zip(chans, a, strict=True)]
    np.testing.assert_allclose(slow_loss(kernels, [2, 2, 2, 2]), 200.0, rtol=1e-15)
    # Channel sums: S_i = C_i·a_i = [0, 2, 8, 32, 128]; Σ_{j<i} (S_j − S_i)² = 4 + 64 + 36 + 1024 + 900
    # + 576 + 16384 + 15876 + 14400 + 9216 = 58480.
    np.testing.assert_allclose(slow_loss(kernels, [2, 2, 2, 2], kind="channel_sum"), 58480.0, rtol=1e-15)


def test_slow_loss_tiles_whole_stack_not_interleaved():
    # K_0 = [p, q] tiled ×2 is [p, q, p, q] (torch.tile), not [p, p, q, q] (repeat_interleave).
    p, q = np.zeros((2, 2)), np.ones((2, 2))
    k0 = np.stack([p, q])[None]
    k1 = np.stack([p, q, p, q])[None]
    assert slow_loss([k0, k1], [2]) == 0.0
    k1_interleaved = np.stack([p, p, q, q])[None]
    np.testing.assert_allclose(slow_loss([k0, k1_interleaved], [2]), 0.5, rtol=1e-15)


# ---------------------------------------------------------------------- label-smoothing CE


def _loop_ce(logits: np.ndarray, labels: np.ndarray, eps: float) -> float:
    b, k = logits.shape
    total = 0.0
    for i in range(b):
        row = [float(v) for v in logits[i]]
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        logp = [v - lse for v in row]
        total += -(eps / k) * sum(logp) - (1.0 - eps) * logp[int(labels[i])]
    return total / b


@given(data=st.data())
def test_label_smoothing_ce_matches_torch_and_loop(data):
    b = data.draw(st.integers(1, 4), label="batch")
    k = data.draw(st.integers(2, 8), label="classes")
    eps = data.draw(st.sampled_from([0.0, 0.09, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.0), label="eps")
    scale = data.draw(st.sampled_from([0.1, 1.0, 20.0]), label="logit scale")
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((b, k))).astype(dtype)
    labels = rng.integers(0, k, size=b)
    out = label_smoothing_cross_entropy(logits, labels, eps)
    assert out.shape == () and out.dtype == np.dtype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    want_torch = F.cross_entropy(
        torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(labels), label_smoothing=eps
    ).item()
    np.testing.assert_allclose(out, want_torch, rtol=tol, atol=tol)
    np.testing.assert_allclose(out, _loop_ce(logits, labels, eps), rtol=tol, atol=tol)


def test_label_smoothing_ce_default_eps_is_0_09_and_hand_value():
    # Uniform logits over K = 4: −log p = log 4 for every class, whatever ε.
    logits = np.zeros((3, 4))
    labels = np.array([0, 3, 1])
    np.testing.assert_allclose(label_smoothing_cross_entropy(logits, labels), math.log(4.0), rtol=1e-15)
    # logits [0, log 3] (p = [1/4, 3/4]), label 0: 0.045·(log 4 + log 4/3) + 0.91·log 4.
    logits = np.array([[0.0, math.log(3.0)]])
    want = (0.09 / 2) * (math.log(4.0) + math.log(4.0 / 3.0)) + 0.91 * math.log(4.0)
    np.testing.assert_allclose(label_smoothing_cross_entropy(logits, np.array([0])), want, rtol=1e-14)

"""The slow neural loss and the label-smoothing cross-entropy (spec §2.12, §2.13)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special

from ._checks import as_float_array
from ._checks import check_finite as _check_finite

SLOW_LOSS_KINDS = ("tiled", "channel_sum")


def _validate_kernels(kernels: Sequence[np.ndarray], factors: Sequence[int], kind: str, check_finite: bool):
    if kind not in SLOW_LOSS_KINDS:
        raise ValueError(f"kind: expected one of {SLOW_LOSS_KINDS}, got {kind!r}")
    ks = [as_float_array(f"kernels[{i}]", k) for i, k in enumerate(kernels)]
    if len(factors) < len(ks) - 1:
        raise ValueError(
            f"factors: need at least {len(ks) - 1} bottleneck factors for {len(ks)} kernels, got {len(factors)}"
        )
    for i, k in enumerate(ks):
        if k.ndim < 3 or k.shape[0] != 1:
            raise ValueError(f"kernels[{i}]: expected a global kernel (1, C, *S), got shape {k.shape}")
        if k.dtype != ks[0].dtype or k.shape[2:] != ks[0].shape[2:]:
            raise ValueError(
                f"kernels[{i}]: expected dtype {ks[0].dtype} and spatial shape {ks[0].shape[2:]}, "
                f"got {k.dtype} and {k.shape[2:]}"
            )
        if check_finite:
            _check_finite(f"kernels[{i}]", k)
    if kind == "tiled":
        for i in range(1, len(ks)):
            if ks[i].shape[1] != ks[i - 1].shape[1] * int(factors[i - 1]):
                raise ValueError(
                    f"kernels[{i}]: {ks[i].shape[1]} channels, expected C_{i - 1}·bf_{i - 1} = "
                    f"{ks[i - 1].shape[1]}·{factors[i - 1]} for the tiled slow loss"
                )
    return ks


def _pairs(n: int):
    """(i, j) pairs in the author's summation order: i = n−1 … 1, j = 0 … i−1."""
    return [(i, j) for i in range(n - 1, 0, -1) for j in range(i)]


def slow_loss(
    kernels: Sequence[np.ndarray], factors: Sequence[int], *, kind: str = "tiled", check_finite: bool = True
) -> np.ndarray:
    """Slow neural loss over the blocks' global kernels K_0 … K_{n−1} (spec §2.12, §5 Q2).

    ``kind="tiled"`` (default, the author's final code):
        L = Σ_{i=n−1..1} Σ_{j<i} mean((tile_c(K_j, Π_{t=j}^{i−1} bf_t) − K_i)²)
    ``kind="channel_sum"`` (the earlier variant):
        L = Σ_{i,j<i} mean((Σ_c K_j − Σ_c K_i)²)

    Shapes: kernels[i] (1, C_i, *S), factors (≥ n−1 ints) → 0-D array. The paper's Eq. 11-12 were
    not available; this follows the code.
    """
    ks = _validate_kernels(kernels, factors, kind, check_finite)
    total = np.zeros((), dtype=ks[0].dtype) if ks else np.zeros(())
    for i, j in _pairs(len(ks)):
        if kind == "tiled":
            reps = int(np.prod(factors[j:i]))
            diff = np.tile(ks[j], (1, reps) + (1,) * (ks[j].ndim - 2)) - ks[i]
        else:
            diff = ks[j].sum(axis=1) - ks[i].sum(axis=1)
        total = total + (diff * diff).mean()
    return total


def slow_loss_vjp(
    kernels: Sequence[np.ndarray], factors: Sequence[int], g: float | np.ndarray = 1.0, *, kind: str = "tiled"
) -> list[np.ndarray]:
    """VJP of :func:`slow_loss`: returns one gradient per kernel (same shapes)."""
    ks = _validate_kernels(kernels, factors, kind, False)
    grads = [np.zeros_like(k) for k in ks]
    g = np.asarray(g, dtype=ks[0].dtype) if ks else g
    for i, j in _pairs(len(ks)):
        if kind == "tiled":
            reps = int(np.prod(factors[j:i]))
            diff = np.tile(ks[j], (1, reps) + (1,) * (ks[j].ndim - 2)) - ks[i]
            gd = (2.0 * g / diff.size) * diff
            grads[i] -= gd
            grads[j] += gd.reshape((1, reps) + ks[j].shape[1:]).sum(axis=1)
        else:
            diff = ks[j].sum(axis=1, keepdims=True) - ks[i].sum(axis=1, keepdims=True)
            gd = (2.0 * g / diff.size) * diff
            grads[i] -= gd
            grads[j] += gd
    return grads


def _validate_ce(logits: object, labels: object, eps: float, check_finite: bool):
    logits = as_float_array("logits", logits, ndim=2)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: expected integer class indices of shape ({logits.shape[0]},), got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels: expected values in [0, {logits.shape[1]}), got range [{labels.min()}, {labels.max()}]"
        )
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps: label smoothing must lie in [0, 1], got {eps}")
    if check_finite:
        _check_finite("logits", logits)
    return logits, labels


def label_smoothing_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, eps: float = 0.09, *, check_finite: bool = True
) -> np.ndarray:
    """Label-smoothing cross-entropy, mean over the batch (spec §2.13, §5 Q9).

    L = (ε/K)·mean_b Σ_k(−log p_{b,k}) + (1−ε)·mean_b(−log p_{b,y_b}), p = softmax(logits).
    Shapes: logits (B, K), labels (B,) integers → 0-D array. ε = 0.09 (the author's final code).
    """
    logits, labels = _validate_ce(logits, labels, eps, check_finite)
    logp = special.log_softmax(logits, axis=1)
    k = logits.shape[1]
    smooth = -logp.sum(axis=1).mean() * (eps / k)
    nll = -logp[np.arange(logits.shape[0]), labels].mean()
    return np.asarray(smooth + (1.0 - eps) * nll, dtype=logits.dtype)


def label_smoothing_cross_entropy_vjp(
    logits: np.ndarray, labels: np.ndarray, g: float | np.ndarray = 1.0, eps: float = 0.09
) -> np.ndarray:
    """VJP of :func:`label_smoothing_cross_entropy`: g·(p − ε/K − (1−ε)·onehot(y)) / B."""
    logits, labels = _validate_ce(logits, labels, eps, False)
    b, k = logits.shape
    p = special.softmax(logits, axis=1)
    target = np.full_like(p, eps / k)
    target[np.arange(b), labels] += 1.0 - eps
    return (np.asarray(g, dtype=logits.dtype) / b) * (p - target)

"""The slow neural loss and the label-smoothing cross-entropy (spec §2.12, §2.13)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _backend as B
from ._checks import as_float_array, ns, shape_of
from ._checks import check_finite as _check_finite
from .reference import SLOW_LOSS_KINDS
from .reference import slow_loss_pairs as _pairs


def _validate_kernels(
    xp: Any, kernels: Sequence[Any], factors: Sequence[int], kind: str, check_finite: bool
) -> list[Any]:
    if kind not in SLOW_LOSS_KINDS:
        raise ValueError(f"kind: expected one of {SLOW_LOSS_KINDS}, got {kind!r}")
    ks = [as_float_array(xp, f"kernels[{i}]", k) for i, k in enumerate(kernels)]
    if len(factors) < len(ks) - 1:
        raise ValueError(
            f"factors: need at least {len(ks) - 1} bottleneck factors for {len(ks)} kernels, got {len(factors)}"
        )
    for i, k in enumerate(ks):
        if k.ndim < 3 or k.shape[0] != 1:
            raise ValueError(f"kernels[{i}]: expected a global kernel (1, C, *S), got shape {shape_of(k)}")
        if k.dtype != ks[0].dtype or shape_of(k)[2:] != shape_of(ks[0])[2:]:
            raise ValueError(
                f"kernels[{i}]: expected dtype {B.dtype_name(ks[0].dtype)} and spatial shape "
                f"{shape_of(ks[0])[2:]}, got {B.dtype_name(k.dtype)} and {shape_of(k)[2:]}"
            )
        if check_finite:
            _check_finite(xp, f"kernels[{i}]", k)
    if kind == "tiled":
        for i in range(1, len(ks)):
            if ks[i].shape[1] != ks[i - 1].shape[1] * int(factors[i - 1]):
                raise ValueError(
                    f"kernels[{i}]: {ks[i].shape[1]} channels, expected C_{i - 1}·bf_{i - 1} = "
                    f"{ks[i - 1].shape[1]}·{factors[i - 1]} for the tiled slow loss"
                )
    return ks


def slow_loss(kernels: Sequence[Any], factors: Sequence[int], *, kind: str = "tiled", check_finite: bool = True) -> Any:
    """Slow neural loss over the blocks' global kernels K_0 … K_{n−1} (spec §2.12, §5 Q2).

    ``kind="tiled"`` (default, the author's final code):
        L = Σ_{i=n−1..1} Σ_{j<i} mean((tile_c(K_j, Π_{t=j}^{i−1} bf_t) − K_i)²)
    ``kind="channel_sum"`` (the earlier variant):
        L = Σ_{i,j<i} mean((Σ_c K_j − Σ_c K_i)²)

    Shapes: kernels[i] (1, C_i, *S), factors (≥ n−1 ints) → 0-D array of the kernels' library.
    An empty list gives a NumPy float64 zero, as in the reference.
    """
    kernels = list(kernels)
    if not kernels:
        if kind not in SLOW_LOSS_KINDS:
            raise ValueError(f"kind: expected one of {SLOW_LOSS_KINDS}, got {kind!r}")
        import numpy as np

        return np.zeros(())
    xp = ns(*((f"kernels[{i}]", k) for i, k in enumerate(kernels)))
    ks = _validate_kernels(xp, kernels, factors, kind, check_finite)
    return _slow_loss(xp, ks, factors, kind)


def _slow_loss(xp: Any, ks: Sequence[Any], factors: Sequence[int], kind: str) -> Any:
    total = xp.zeros((), dtype=ks[0].dtype, device=B.device(ks[0]))
    for i, j in _pairs(len(ks)):
        if kind == "tiled":
            reps = 1
            for f in factors[j:i]:  # a plain loop: torch.compile cannot trace math.prod(generator)
                reps *= int(f)
            diff = xp.tile(ks[j], (1, reps) + (1,) * (ks[j].ndim - 2)) - ks[i]
        else:
            diff = xp.sum(ks[j], axis=1) - xp.sum(ks[i], axis=1)
        total = total + xp.mean(diff * diff)
    return total


def check_label_range(xp: Any, labels: Any, num_classes: int) -> None:
    """Raise ``ValueError`` unless every label lies in [0, num_classes) (spec §2.13).

    One min and one max per batch (two integers read back from the device). A label outside the
    range would not raise in the loss itself: a negative or too-large index matches no one-hot
    column and the sample silently adds only the smoothing term. Lazy (traced) arrays and torch's
    "meta" tensors (shapes without values) cannot be read and are not checked.
    """
    if B.is_lazy(labels) or getattr(B.device(labels), "type", None) == "meta" or not labels.shape[0]:
        return
    lo, hi = int(xp.min(labels)), int(xp.max(labels))
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels: expected class indices in [0, {num_classes}), got values in [{lo}, {hi}]")


def _validate_ce(
    xp: Any, logits: Any, labels: Any, eps: float, check_finite: bool, check_labels: bool = True
) -> tuple[Any, Any]:
    logits = as_float_array(xp, "logits", logits, ndim=2)
    if not hasattr(labels, "dtype"):
        labels = xp.asarray(labels, device=B.device(logits))
    if shape_of(labels) != (logits.shape[0],) or not xp.isdtype(labels.dtype, "integral"):
        raise ValueError(
            f"labels: expected integer class indices of shape ({logits.shape[0]},), "
            f"got {B.dtype_name(labels.dtype)} {shape_of(labels)}"
        )
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps: label smoothing must lie in [0, 1], got {eps}")
    if check_labels:
        check_label_range(xp, labels, logits.shape[1])
    if check_finite:
        _check_finite(xp, "logits", logits)
    return logits, labels


def _log_softmax(xp: Any, x: Any) -> Any:
    shifted = x - xp.max(x, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


def label_smoothing_cross_entropy(
    logits: Any, labels: Any, eps: float = 0.09, *, check_finite: bool = True, check_labels: bool = True
) -> Any:
    """Label-smoothing cross-entropy, mean over the batch (spec §2.13, §5 Q9).

    L = (ε/K)·mean_b Σ_k(−log p_{b,k}) + (1−ε)·mean_b(−log p_{b,y_b}), p = softmax(logits).
    Shapes: logits (B, K), labels (B,) integers (same library; a Python sequence is uploaded to
    the logits' device) → 0-D array. ε = 0.09 (the author's final code).

    ``check_finite`` checks the logits for NaN/Inf. ``check_labels`` (on by default, independent of
    ``check_finite``) refuses labels outside [0, K): it reads two integers back from the device per
    call; turn it off only in a hot loop whose labels were validated once beforehand.
    """
    xp = ns(("logits", logits), ("labels", labels if hasattr(labels, "dtype") else None))
    logits, labels = _validate_ce(xp, logits, labels, eps, check_finite, check_labels)
    return _label_smoothing_cross_entropy(xp, logits, labels, eps)


def _label_smoothing_cross_entropy(xp: Any, logits: Any, labels: Any, eps: float) -> Any:
    logp = _log_softmax(xp, logits)
    k = logits.shape[1]
    classes = xp.arange(k, dtype=labels.dtype, device=B.device(labels))
    onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(classes, (1, -1)), logits.dtype)
    smooth = -xp.mean(xp.sum(logp, axis=1)) * (eps / k)
    nll = -xp.mean(xp.sum(logp * onehot, axis=1))
    return smooth + (1.0 - eps) * nll

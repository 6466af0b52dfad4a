"""Data for ``hyperzzw train``: scikit-learn's digits (embedded, no download) or a user's ``.npz``.

Images are (N, C, H, W) float32 standardised per channel with training statistics. In 1D mode
each image becomes a pixel sequence (N, C, H·W), row-major, optionally under a fixed permutation
(the "permuted" pixel-sequence setting). A validation split is taken from the training data
(never from the test set: spec §5 Q14).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Dataset:
    """Arrays of one experiment; x in (N, C, H, W) or (N, C, L), labels int64 in [0, num_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    grid: tuple[int, int] | None = None
    """1D only: the (h, w) image grid of the sequence."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"--data {path}: missing arrays {missing}; expected {list(NPZ_KEYS)}")
        arrays = [z[k] for k in NPZ_KEYS]
    x_tr, y_tr, x_te, y_te = arrays
    for name, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.ndim not in (3, 4):
            raise ValueError(f"--data {path}: {name} must be (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"--data {path}: x_train {x_tr.shape[1:]} and x_test {x_te.shape[1:]} differ per sample")
    for name, y, x in (("y_train", y_tr, x_tr), ("y_test", y_te, x_te)):
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"--data {path}: {name} must hold {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    return x_tr.astype(np.float32), y_tr.astype(np.int64), x_te.astype(np.float32), y_te.astype(np.int64)


def load(dataset: str = "digits", data: str | Path | None = None, mode: str = "2d", permute: int | None = None,
         val_fraction: float = 0.1, split_seed: int = 0) -> Dataset:
    """Load, split, standardise and shape a dataset for a ``mode`` of "2d" or "1d"."""
    if mode not in ("2d", "1d"):
        raise ValueError(f"mode: expected '2d' or '1d', got {mode!r}")
    if permute is not None and mode != "1d":
        raise ValueError("permute: the permuted setting is for 1d pixel sequences (--mode 1d)")
    if data is not None:
        name = Path(data).stem
        x_tr, y_tr, x_te, y_te = _npz(Path(data))
    elif dataset == "digits":
        name = "digits"
        x_tr, y_tr, x_te, y_te = _digits()
    else:
        raise ValueError(f"dataset: unknown {dataset!r}; use 'digits' or --data FILE.npz")
    if x_tr.shape[2] != x_tr.shape[3]:
        raise ValueError(f"images must be square (the global product needs H == W), got {x_tr.shape[2:]}")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(x_tr))
    n_val = int(round(val_fraction * len(x_tr)))
    val, train = order[:n_val], order[n_val:]
    x_val, y_val, x_tr, y_tr = x_tr[val], y_tr[val], x_tr[train], y_tr[train]
    axes = (0, 2, 3)
    mean, std = x_tr.mean(axis=axes, keepdims=True), x_tr.std(axis=axes, keepdims=True) + 1e-6
    x_tr, x_val, x_te = ((x - mean) / std for x in (x_tr, x_val, x_te))
    grid = None
    if mode == "1d":
        h, w = x_tr.shape[2:]
        grid = (h, w)
        x_tr, x_val, x_te = (x.reshape(x.shape[0], x.shape[1], h * w) for x in (x_tr, x_val, x_te))
        if permute is not None:
            perm = np.random.default_rng(permute).permutation(h * w)
            x_tr, x_val, x_te = (x[:, :, perm] for x in (x_tr, x_val, x_te))
            name += f"-permuted{permute}"
    return Dataset(f"{name}-{mode}", x_tr.astype(np.float32), y_tr, x_val.astype(np.float32), y_val,
                   x_te.astype(np.float32), y_te, num_classes, grid)

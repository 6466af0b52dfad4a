"""Data for ``hyperzzw train``: scikit-learn's digits (embedded, no download), MNIST-1D (generated
offline by the ``mnist1d`` package) or a user's ``.npz``.

Images are (N, C, H, W) float32 standardised per channel with training statistics. In 1D mode
each image becomes a pixel sequence (N, C, H·W), row-major; sequences (N, L) or (N, C, L) are
used as they are, on the grid ``square_grid(L)`` (docs/spec-1d.md). Either can be put under a
fixed permutation of the positions (the "permuted" setting). A validation split is taken from the
training data (never from the test set: spec §5 Q14).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..reference._hyperzzw import square_grid

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
DATASETS = ("digits", "mnist1d")
LAYOUTS = ("auto", "images", "sequences")


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
    """1D only: the square grid of the global product, ``square_grid(L)`` (docs/spec-1d.md)."""

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


def mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus & Kobak) with the package's default arguments, generated offline from its
    templates: ``make_dataset(get_dataset_args())``: 4000 train / 1000 test sequences of 40 steps,
    10 classes. Returns (x_train (4000, 1, 40), y_train, x_test (1000, 1, 40), y_test)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError("--dataset mnist1d: needs the mnist1d package (pip install -e '.[train]')") from None
    # make_dataset seeds the global `random` and `np.random` generators: leave the caller's as they were
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (np.asarray(d["x"], np.float32)[:, None], np.asarray(d["y"], np.int64),
            np.asarray(d["x_test"], np.float32)[:, None], np.asarray(d["y_test"], np.int64))


def as_channels_first(x: np.ndarray, layout: str = "auto", name: str = "x_train") -> tuple[np.ndarray, str]:
    """``x`` as (N, C, H, W) images or (N, C, L) sequences, and which of the two it is.

    (N, L) are sequences and (N, C, H, W) images. A 3-D array (N, A, B) is ambiguous: with
    ``layout="auto"`` it is read as images (N, H, W) when A == B (as before sequences were
    accepted) and as sequences (N, C, L) otherwise; ``layout`` "images" or "sequences" decides.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"--layout: expected one of {LAYOUTS}, got {layout!r}")
    if x.ndim == 2:
        if layout == "images":
            raise ValueError(f"--layout images: {name} of shape {x.shape} is (N, L), not images (N, [C,] H, W)")
        return x[:, None], "sequences"
    if x.ndim == 4:
        if layout == "sequences":
            raise ValueError(f"--layout sequences: {name} of shape {x.shape} is (N, C, H, W), not (N, [C,] L)")
        return x, "images"
    if x.ndim == 3:
        if layout == "images" or layout == "auto" and x.shape[1] == x.shape[2]:
            return x[:, None], "images"
        return x, "sequences"
    raise ValueError(f"{name}: expected sequences (N, L) or (N, C, L), or images (N, H, W) or (N, C, H, W), "
                     f"got shape {x.shape}")


def _npz(path: Path, layout: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"--data {path}: missing arrays {missing}; expected {list(NPZ_KEYS)}")
        arrays = [z[k] for k in NPZ_KEYS]
    x_tr, y_tr, x_te, y_te = arrays
    try:
        (x_tr, kind_tr), (x_te, kind_te) = (as_channels_first(x, layout, n) for n, x in
                                            (("x_train", x_tr), ("x_test", x_te)))
    except ValueError as exc:
        raise ValueError(f"--data {path}: {exc}") from None
    if kind_tr != kind_te:
        raise ValueError(f"--data {path}: x_train holds {kind_tr} and x_test {kind_te}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"--data {path}: x_train {x_tr.shape[1:]} and x_test {x_te.shape[1:]} differ per sample")
    for name, y, x in (("y_train", y_tr, x_tr), ("y_test", y_te, x_te)):
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"--data {path}: {name} must hold {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    return x_tr.astype(np.float32), y_tr.astype(np.int64), x_te.astype(np.float32), y_te.astype(np.int64)


def load(dataset: str = "digits", data: str | Path | None = None, mode: str = "2d", permute: int | None = None,
         val_fraction: float = 0.1, split_seed: int = 0, layout: str = "auto") -> Dataset:
    """Load, split, standardise and shape a dataset for a ``mode`` of "2d" or "1d".

    Sequences ((N, L) or (N, C, L) arrays, or ``dataset="mnist1d"``) need mode "1d"; images become
    pixel sequences in mode "1d". ``layout`` reads 3-D arrays (see :func:`as_channels_first`).
    """
    if mode not in ("2d", "1d"):
        raise ValueError(f"mode: expected '2d' or '1d', got {mode!r}")
    if permute is not None and mode != "1d":
        raise ValueError("permute: the permuted setting is for 1d pixel sequences (--mode 1d)")
    if data is not None:
        name = Path(data).stem
        x_tr, y_tr, x_te, y_te = _npz(Path(data), layout)
    elif dataset == "digits":
        name = "digits"
        x_tr, y_tr, x_te, y_te = _digits()
    elif dataset == "mnist1d":
        name = "mnist1d"
        x_tr, y_tr, x_te, y_te = mnist1d_arrays()
    else:
        raise ValueError(f"dataset: unknown {dataset!r}; use one of {list(DATASETS)} or --data FILE.npz")
    sequences = x_tr.ndim == 3
    if sequences and mode != "1d":
        raise ValueError(f"--mode: {name} holds sequences (N, C, L) = {x_tr.shape}, not square images; "
                         "train them with --mode 1d")
    if not sequences and x_tr.shape[2] != x_tr.shape[3]:
        raise ValueError(f"images must be square (the global product needs H == W), got {x_tr.shape[2:]}")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(x_tr))
    n_val = int(round(val_fraction * len(x_tr)))
    val, train = order[:n_val], order[n_val:]
    x_val, y_val, x_tr, y_tr = x_tr[val], y_tr[val], x_tr[train], y_tr[train]
    axes = (0,) + tuple(range(2, x_tr.ndim))
    mean, std = x_tr.mean(axis=axes, keepdims=True), x_tr.std(axis=axes, keepdims=True) + 1e-6
    x_tr, x_val, x_te = ((x - mean) / std for x in (x_tr, x_val, x_te))
    grid = None
    if mode == "1d":
        x_tr, x_val, x_te = (x.reshape(x.shape[0], x.shape[1], -1) for x in (x_tr, x_val, x_te))
        length = x_tr.shape[2]
        grid = square_grid(length)
        if permute is not None:
            perm = np.random.default_rng(permute).permutation(length)
            x_tr, x_val, x_te = (x[:, :, perm] for x in (x_tr, x_val, x_te))
            name += f"-permuted{permute}"
    return Dataset(f"{name}-{mode}", x_tr.astype(np.float32), y_tr, x_val.astype(np.float32), y_val,
                   x_te.astype(np.float32), y_te, num_classes, grid)

"""Data for ``hyperzzw train``: scikit-learn's digits (embedded, no download), MNIST-1D (generated
offline by the ``mnist1d`` package) or a user's ``.npz``.

Images are (N, C, H, W) float32 standardised per channel with training statistics. In 1D mode
each image becomes a pixel sequence (N, C, H·W), row-major; sequences (N, L) or (N, C, L) are
used as they are, on the grid ``square_grid(L)`` (docs/spec-1d.md). Either can be put under a
fixed permutation of the positions (the "permuted" setting). A validation split is taken from the
training data (never from the test set: spec §5 Q14).

Every loader hands its raw arrays to :func:`validate_dataset` before anything else happens: NaN/Inf
pixels, labels that are not integers in [0, K), classes missing from the training data and empty
splits are refused with a :class:`DataError` naming the array, the count and the first bad index.
Standardisation statistics are computed in float64 (float32 overflows for data around 1e30).
"""

from __future__ import annotations

import hashlib
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..reference import square_grid

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
DATASETS = ("digits", "mnist1d")
LAYOUTS = ("auto", "images", "sequences")


class DataError(ValueError):
    """Input data refused before training (the CLI exits 2 with this one-line message)."""


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
    fingerprint: str = ""
    """SHA-256 of the raw arrays as loaded (before splitting); ``--resume`` refuses other data."""

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


def _read_npz(path: Path) -> list[np.ndarray]:
    """The four arrays of an ``.npz``; any unreadable file is a :class:`DataError` (never unpickled)."""
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        raise DataError(
            f"--data {path}: not an .npz archive (an .npz is a zip file starting with b'PK\\x03\\x04', "
            f"this one starts with {head!r}); save your arrays with numpy.savez"
        )
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed on every error
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"--data {path}: missing arrays {missing}; expected {list(NPZ_KEYS)}")
            return [z[k] for k in NPZ_KEYS]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = (
            "it holds object arrays, which are never unpickled"
            if "pickle" in str(exc)
            else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
        )
        raise DataError(f"--data {path}: truncated or corrupted .npz archive ({reason})") from None


def mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus & Kobak) with the package's default arguments, generated offline from its
    templates: ``make_dataset(get_dataset_args())``: 4000 train / 1000 test sequences of 40 steps,
    10 classes. Returns (x_train (4000, 1, 40), y_train, x_test (1000, 1, 40), y_test)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError("--dataset mnist1d: needs the mnist1d package (pip install -e '.[train]')") from None
    # make_dataset seeds the global `random` and `np.random` generators: leave the caller's as they were
    # (NPY002 asks for a Generator; the legacy global state is exactly what must be saved here)
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002 - restores the legacy global state, see above
    return (
        np.asarray(d["x"], np.float32)[:, None],
        np.asarray(d["y"], np.int64),
        np.asarray(d["x_test"], np.float32)[:, None],
        np.asarray(d["y_test"], np.int64),
    )


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
        if layout == "images" or (layout == "auto" and x.shape[1] == x.shape[2]):
            return x[:, None], "images"
        return x, "sequences"
    raise ValueError(
        f"{name}: expected sequences (N, L) or (N, C, L), or images (N, H, W) or (N, C, H, W), got shape {x.shape}"
    )


def _npz(path: Path, layout: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_tr, y_tr, x_te, y_te = _read_npz(path)
    try:
        (x_tr, kind_tr), (x_te, kind_te) = (
            as_channels_first(x, layout, n) for n, x in (("x_train", x_tr), ("x_test", x_te))
        )
    except ValueError as exc:
        raise DataError(f"--data {path}: {exc}") from None
    if kind_tr != kind_te:
        raise DataError(f"--data {path}: x_train holds {kind_tr} and x_test {kind_te}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"--data {path}: x_train {x_tr.shape[1:]} and x_test {x_te.shape[1:]} differ per sample")
    return x_tr, y_tr, x_te, y_te


# ---------------------------------------------------------------------------- validation


def check_finite_array(name: str, x: np.ndarray, source: str = "data") -> None:
    """Refuse NaN/Inf anywhere in ``x``, naming the array, the count and the first bad index."""
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise DataError(f"{source}: {name} must hold real numbers, got dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape))
        raise DataError(
            f"{source}: {name} holds {count} non-finite value{'s' * (count > 1)} (NaN/Inf); "
            f"first at index {first} = {x[first]}"
        )


def check_labels(name: str, y: np.ndarray, n: int, num_classes: int | None = None, source: str = "data") -> None:
    """Labels: shape (n,), an integer dtype, values in [0, num_classes) (or ≥ 0 when it is None)."""
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: {name} must hold {n} integer labels (shape ({n},)), got {y.dtype} {y.shape}")
    if not n:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        count, first = int((y < 0).sum()), int(np.argmax(y < 0))
        raise DataError(
            f"{source}: {name} holds {count} negative label{'s' * (count > 1)}; "
            f"first at index {first} = {int(y[first])}; expected class indices in [0, K)"
        )
    if num_classes is not None and hi >= num_classes:
        count, first = int((y >= num_classes).sum()), int(np.argmax(y >= num_classes))
        raise DataError(
            f"{source}: {name} holds {count} label{'s' * (count > 1)} >= --num-classes {num_classes}; "
            f"first at index {first} = {int(y[first])}"
        )


def missing_classes(y: np.ndarray, num_classes: int, limit: int = 10) -> tuple[int, list[int]]:
    """(how many of 0..K−1 never occur in ``y``, the first ``limit`` of them); cheap for huge K."""
    present = np.unique(y[(y >= 0) & (y < num_classes)])
    count = num_classes - len(present)
    first: list[int] = []
    if count:
        seen = set(present.tolist())
        k = 0
        while len(first) < min(limit, count):
            if k not in seen:
                first.append(k)
            k += 1
    return count, first


def check_classes_present(y: np.ndarray, num_classes: int, where: str, source: str = "data") -> None:
    """Refuse a training split in which some of the K classes never occur, naming them."""
    count, first = missing_classes(y, num_classes)
    if count:
        more = f" and {count - len(first)} more" if count > len(first) else ""
        raise DataError(
            f"{source}: {count} of {num_classes} classes never occur in {where}: "
            f"{first}{more}; every class 0..K-1 must occur in the training data "
            f"(K is --num-classes, else the largest label + 1)"
        )


def validate_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int | None = None,
    source: str = "data",
) -> int:
    """Check the raw arrays of any loader; return the class count K.

    Refused (:class:`DataError`): empty splits; non-real or non-finite x; labels that are not
    integers, are negative or (with ``num_classes``) ≥ K; classes of 0..K−1 missing from
    ``y_train``. K is ``num_classes`` when given, else max label + 1.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise DataError(f"--num-classes: expected an integer >= 2, got {num_classes!r}")
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) == 0:
            raise DataError(f"{source}: the {name} split is empty (x_{name} has shape {x.shape})")
        check_finite_array(f"x_{name}", x, source)
        check_labels(f"y_{name}", y, len(x), num_classes, source)
    k = num_classes if num_classes is not None else int(max(y_train.max(), y_test.max())) + 1
    if num_classes is None and k > len(y_train):
        name, y = ("y_train", y_train) if y_train.max() >= y_test.max() else ("y_test", y_test)
        first = int(np.argmax(y == y.max()))
        raise DataError(
            f"{source}: {name}[{first}] = {int(y[first])} implies K = {k} classes, more than the "
            f"{len(y_train)} training samples can cover; labels must be class indices 0..K-1"
        )
    check_classes_present(y_train, k, "y_train", source)
    return k


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def split_validation(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): a random ``val_fraction`` of the training data; both non-empty."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction: expected a number in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = round(val_fraction * len(x))
    if n_val == 0 or n_val == len(x):
        raise DataError(
            f"--val-fraction {val_fraction}: of {len(x)} training samples it leaves "
            f"{n_val} for validation and {len(x) - n_val} for training; both must be non-empty"
        )
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Per-channel (axis 1) standardisation with training statistics, computed in float64.

    x' = (x − mean) / (std + 1e-6) over the sample and spatial axes; float32 results. In float32
    the sums overflow for data around 1e30 and everything collapses to zeros; in float64 they do not.
    """
    axes = (0,) + tuple(range(2, x_train.ndim))
    x64 = x_train.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    std = x64.std(axis=axes, keepdims=True) + 1e-6
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DataError("data: the per-channel mean or standard deviation of x_train overflows float64")
    out = [((x.astype(np.float64) - mean) / std).astype(np.float32) for x in (x_train, *others)]
    # strict=False: the callers pass one to two `others`, named in this order
    for name, x in zip(("x_train", "x_val", "x_test"), out, strict=False):
        check_finite_array(f"standardised {name}", x)
    return out


def load(
    dataset: str = "digits",
    data: str | Path | None = None,
    mode: str = "2d",
    permute: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    num_classes: int | None = None,
    layout: str = "auto",
) -> Dataset:
    """Load, validate (:func:`validate_dataset`), split, standardise and shape a dataset for ``mode`` "2d"/"1d".

    ``num_classes``: K (default: max label + 1); labels ≥ K are refused. Sequences ((N, L) or
    (N, C, L) arrays, or ``dataset="mnist1d"``) need mode "1d"; images become pixel sequences in
    mode "1d". ``layout`` reads 3-D arrays (see :func:`as_channels_first`).
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
    source = f"--data {data}" if data is not None else dataset
    num_classes = validate_dataset(x_tr, y_tr, x_te, y_te, num_classes, source)
    digest = fingerprint(x_tr, y_tr, x_te, y_te)
    sequences = x_tr.ndim == 3
    if sequences and mode != "1d":
        raise ValueError(
            f"--mode: {name} holds sequences (N, C, L) = {x_tr.shape}, not square images; train them with --mode 1d"
        )
    if not sequences and x_tr.shape[2] != x_tr.shape[3]:
        raise ValueError(f"images must be square (the global product needs H == W), got {x_tr.shape[2:]}")
    y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    x_tr, y_tr, x_val, y_val = split_validation(x_tr, y_tr, val_fraction, split_seed)
    check_classes_present(
        y_tr, num_classes, f"the training split left after taking {len(y_val)} samples for validation", source
    )
    x_tr, x_val, x_te = standardise(x_tr, x_val, x_te)
    grid = None
    if mode == "1d":
        x_tr, x_val, x_te = (x.reshape(x.shape[0], x.shape[1], -1) for x in (x_tr, x_val, x_te))
        length = x_tr.shape[2]
        grid = square_grid(length)
        if permute is not None:
            perm = np.random.default_rng(permute).permutation(length)
            x_tr, x_val, x_te = (x[:, :, perm] for x in (x_tr, x_val, x_te))
            name += f"-permuted{permute}"
    return Dataset(
        f"{name}-{mode}",
        x_tr.astype(np.float32),
        y_tr,
        x_val.astype(np.float32),
        y_val,
        x_te.astype(np.float32),
        y_te,
        num_classes,
        grid,
        digest,
    )

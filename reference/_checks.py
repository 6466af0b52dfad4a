"""Input validation shared by every reference operator.

Every public operator validates at its boundary and raises an exception that names the argument,
the expected and the actual shape or dtype. Composite operators (the SFNE block, the network) check
once at their own boundary and call their parts with ``check_finite=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(
    name: str, x: object, *, ndim: int | Sequence[int] | None = None, dtype: np.dtype | None = None
) -> np.ndarray:
    """Return ``x`` as a floating ndarray, raising a clear error for a wrong rank or dtype.

    Only float32 and float64 are accepted; nothing is cast silently.
    """
    if isinstance(x, np.generic):  # NumPy scalars (np.float64(…)) are NumPy values, not foreign arrays
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__array_namespace__") or type(x).__module__.split(".")[0] in ("torch", "cupy"):
            raise TypeError(
                f"{name}: the reference takes NumPy arrays, got {type(x).__module__}."
                f"{type(x).__name__}; use hyperzzw_core (the array-API core) for other "
                "libraries, or convert explicitly"
            )
        x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of the other inputs), got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name}: expected a {want}-D array, got shape {x.shape} ({x.ndim}-D)")
    return x


def check_finite(name: str, x: np.ndarray) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (pass ``check_finite=False`` to skip)."""
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(
            f"{name}: contains NaN or Inf (first at index {tuple(int(i) for i in bad)}, "
            f"value {x[tuple(bad)]}); pass check_finite=False to skip this check"
        )


def check_shape(name: str, x: np.ndarray, expected: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected`` (``None`` matches any size)."""
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape, strict=True))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")


def check_params(name: str, params: object, keys: Sequence[str]) -> None:
    """Raise a clear error if a parameter mapping lacks keys or has unknown ones."""
    if not isinstance(params, dict):
        raise TypeError(f"{name}: expected a dict of parameters, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    unknown = [k for k in params if k not in keys]
    if missing or unknown:
        raise KeyError(f"{name}: expected keys {sorted(keys)}; missing {missing}, unknown {unknown}")


def odd_kernel_size(name: str, k: int) -> int:
    """Return ``k`` if it is a positive odd integer ('same' padding needs an odd size)."""
    if not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"{name}: kernel size must be a positive odd integer ('same' padding), got {k!r}")
    return int(k)

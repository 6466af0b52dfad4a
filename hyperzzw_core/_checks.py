"""Input validation of the array-API core: the reference's rules and messages, for any library.

Shape, rank and dtype checks read metadata only. The NaN/Inf check (``check_finite=True``, the
default, as in the reference) reads one boolean back from the device per checked array; pass
``check_finite=False`` to avoid that synchronisation (the torch adapter does). It is skipped for
lazy arrays (JAX tracing, Dask, torch.compile), whose values cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._backend import backend, dtype_name, namespace
from .reference import check_params, flatten, odd_kernel_size  # pure Python: reused as is

__all__ = ["as_float_array", "check_finite", "check_params", "check_shape", "ns", "odd_kernel_size", "shape_of"]


def shape_of(x: Any) -> tuple[int, ...]:
    """``x.shape`` as a plain tuple (torch's ``Size`` prints differently)."""
    return tuple(int(s) for s in x.shape)


def ns(*named: tuple[str, Any], trees: Sequence[tuple[str, Any]] = ()) -> Any:
    """Namespace of named arrays and of every leaf of named parameter trees (see ``namespace``)."""
    items = list(named)
    for tname, tree in trees:
        if isinstance(tree, (dict, list, tuple)):
            items.extend((f"{tname}.{k}" if k else tname, v) for k, v in flatten(tree).items())
    return namespace(items)


def as_float_array(xp: Any, name: str, x: Any, *, ndim: int | Sequence[int] | None = None, dtype: Any = None) -> Any:
    """Return ``x`` unchanged if it is a float32/float64 array of an allowed rank and dtype.

    Raises the reference's ``TypeError``/``ValueError`` messages; nothing is cast silently.
    """
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if x.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {dtype_name(x.dtype)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype_name(dtype)} (the dtype of the other inputs), got {dtype_name(x.dtype)}"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name}: expected a {want}-D array, got shape {shape_of(x)} ({x.ndim}-D)")
    return x


def check_finite(xp: Any, name: str, x: Any) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (one boolean read back; skipped where the
    values cannot be read: lazy arrays, and any array inside a JAX trace)."""
    if backend(xp).all_finite(xp, x) is False:
        raise ValueError(f"{name}: contains NaN or Inf; pass check_finite=False to skip this check")


def check_shape(name: str, x: Any, expected: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected`` (``None`` matches any size)."""
    shape = shape_of(x)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape, strict=True))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {shape}")

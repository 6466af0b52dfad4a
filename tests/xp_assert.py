"""Comparison helpers for the differential tests, in the style of SciPy's ``xp_assert_close``.

``hyperzzw_core.testing.assert_close`` converts both sides to float64 NumPy and compares values
and shape: a result in the wrong library (a NumPy array from a torch input), on the wrong device
or in the wrong dtype passes it as long as the numbers agree. These helpers check, in order and
each with its own message:

1. **namespace**: ``array_namespace(actual)`` is the backend's namespace;
2. **device**: ``device(actual)`` is the device of the backend's arrays;
3. **dtype**: ``actual.dtype`` is the backend namespace's ``dtype`` (``"float64"``, ``"float32"``);
4. **shape**: equal to the expected array's;
5. **values**: :func:`xp_assert_close` by the tolerance policy (spec §B; float32 judged against
   the reference's own float32 error ``ref_low``), :func:`xp_assert_equal` exactly.

``expected`` is always a NumPy array (the reference); ``backend`` a ``tests/backends.Backend``.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
from backends import Backend

from hyperzzw_core.testing import CloseResult, assert_close, to_numpy


def _describe(x: Any) -> str:
    return f"{type(x).__module__}.{type(x).__qualname__}"


def check_array(actual: Any, expected: np.ndarray, *, backend: Backend, dtype: str, name: str = "value") -> None:
    """Raise ``AssertionError`` naming ``name`` unless ``actual`` is an array of ``backend``'s
    namespace, on its device, of ``dtype`` and of ``expected``'s shape (values not compared)."""
    where = f"{name} on {backend}"
    try:
        ns = array_api_compat.array_namespace(actual)
    except TypeError as e:
        raise AssertionError(f"{where}: namespace: {_describe(actual)} is not an array ({e})") from None
    if ns is not backend.xp:
        raise AssertionError(
            f"{where}: namespace: expected {backend.xp.__name__}, got {ns.__name__} ({_describe(actual)})"
        )
    dev = array_api_compat.device(actual)
    if dev != backend.array_device:
        raise AssertionError(f"{where}: device: expected {backend.array_device!r}, got {dev!r}")
    want_dtype = getattr(backend.xp, dtype)
    if actual.dtype != want_dtype:
        raise AssertionError(f"{where}: dtype: expected {dtype}, got {actual.dtype}")
    if tuple(actual.shape) != np.shape(expected):
        raise AssertionError(f"{where}: shape: expected {np.shape(expected)}, got {tuple(actual.shape)}")


def xp_assert_close(
    actual: Any,
    expected: np.ndarray,
    *,
    backend: Backend,
    dtype: str,
    ref_low: np.ndarray | None = None,
    scale: float | None = None,
    name: str = "value",
) -> CloseResult:
    """:func:`check_array`, then the values by the tolerance policy (``hyperzzw_core.testing``)."""
    check_array(actual, expected, backend=backend, dtype=dtype, name=name)
    return assert_close(actual, expected, dtype=dtype, ref_low=ref_low, scale=scale, name=f"{name} on {backend}")


def xp_assert_equal(actual: Any, expected: np.ndarray, *, backend: Backend, dtype: str, name: str = "value") -> None:
    """:func:`check_array`, then every element equal (NaN equal to NaN)."""
    check_array(actual, expected, backend=backend, dtype=dtype, name=name)
    got, want = to_numpy(actual), np.asarray(expected, dtype=np.float64)
    if not np.array_equal(got, want, equal_nan=True):
        bad = np.argwhere(~((got == want) | (np.isnan(got) & np.isnan(want))))
        i = tuple(int(v) for v in bad[0])
        raise AssertionError(
            f"{name} on {backend}: values: {len(bad)} of {want.size} differ; first at {list(i)}: "
            f"actual {got[i]!r}, expected {want[i]!r}"
        )

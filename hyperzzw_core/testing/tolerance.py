"""The tolerance policy: how close an implementation must be to the reference, per dtype.

Written down once, used by the differential tests, ``hyperzzw verify`` and the pytest plugin.

* **float64**: every element within 1e-10 relative, with a floor of 1e-10 times the largest
  expected magnitude: |a − e| ≤ 1e-10·(|e| + max|e|).
* **float32**: judged against the error of the reference itself evaluated in float32 (``ref_low``),
  as S4's kernel tests do, because a fixed float32 tolerance would be wrong: MAGNet's ω₀ = 2000
  sine features put phases of ~10⁴ radians into float32 and lose about three digits
  (spec §2.1). The implementation passes when
  max|a − e| ≤ 4·max|ref_low − e| + 16·eps₃₂·max|e|.
  ``e`` is always the float64 reference.

``max|e|`` is taken over the whole result: all leaves of a tuple output or of a gradient tree
(pass ``scale``). A leaf that is zero in exact arithmetic (e.g. the gradient of a bias that a
later standardisation removes) is then judged on the scale of its siblings, not on its own
round-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT64_RTOL = 1e-10
FLOAT32_FACTOR = 4.0
FLOAT32_FLOOR_EPS = 16.0


@dataclass
class CloseResult:
    """Outcome of one comparison; ``str()`` says where it is worst."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    """max|a − e| / max|e|: the error relative to the array's largest expected magnitude."""
    allowed_abs: float
    worst_index: tuple[int, ...]
    actual: float
    expected: float
    rule: str

    def __str__(self) -> str:
        status = "within" if self.passed else "OUTSIDE"
        return (
            f"{status} tolerance ({self.rule}): max abs error {self.max_abs_error:.3e}, max rel error "
            f"{self.max_rel_error:.3e}; worst at {list(self.worst_index)}: actual {self.actual:.10g}, "
            f"expected {self.expected:.10g}"
        )


def _host(x: Any) -> np.ndarray:
    """Explicit conversion to a float64 NumPy array (never an implicit device→host copy)."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return x.detach().cpu().double().numpy()
    if mod == "cupy":
        return x.get().astype(np.float64)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x).astype(np.float64)
        except (TypeError, RuntimeError, BufferError):
            pass
    return np.asarray(x, dtype=np.float64)


def to_numpy(x: object) -> np.ndarray:
    """Any supported array (NumPy, torch, CuPy, DLPack-capable) as a float64 NumPy array."""
    return _host(x)


def check_close(
    actual: object,
    expected: object,
    *,
    dtype: str | np.dtype,
    ref_low: object | None = None,
    scale: float | None = None,
) -> CloseResult:
    """Compare ``actual`` with the float64 reference ``expected`` under the policy for ``dtype``.

    For float32 pass ``ref_low``: the reference evaluated on the float32-rounded inputs.
    ``scale`` is max|e| over the whole result this array belongs to (default: this array's).
    Raises ``ValueError`` on a shape mismatch (reported, not compared).
    """
    a, e = _host(actual), _host(expected)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: actual {a.shape}, expected {e.shape}")
    dt = np.dtype(dtype)
    own = float(np.abs(e).max()) if e.size else 0.0
    scale = own if scale is None else max(float(scale), own)
    err = np.abs(a - e)
    if not np.all(np.isfinite(a)):
        err = np.where(np.isfinite(a), err, np.inf)
    if dt == np.float64:
        allowed = FLOAT64_RTOL * (np.abs(e) + scale)
        rule = f"float64: |a-e| <= {FLOAT64_RTOL:g}*(|e| + max|e|)"
    elif dt == np.float32:
        if ref_low is None:
            raise ValueError("float32 comparisons need ref_low, the reference evaluated in float32")
        base = float(np.abs(_host(ref_low) - e).max()) if e.size else 0.0
        bound = FLOAT32_FACTOR * base + FLOAT32_FLOOR_EPS * float(np.finfo(np.float32).eps) * scale
        allowed = np.full(e.shape, bound)
        rule = (
            f"float32: max|a-e| <= {FLOAT32_FACTOR:g}*max|ref32-e| + {FLOAT32_FLOOR_EPS:g}*eps32*max|e| = {bound:.3e}"
        )
    else:
        raise ValueError(f"dtype: the policy covers float32 and float64, got {dt}")
    excess = err - allowed
    worst = np.unravel_index(int(np.argmax(excess)), e.shape) if e.size else ()
    max_abs = float(err.max()) if e.size else 0.0
    return CloseResult(
        passed=bool(np.all(err <= allowed)),
        max_abs_error=max_abs,
        max_rel_error=max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf),
        allowed_abs=float(allowed.max()) if e.size else 0.0,
        worst_index=tuple(int(i) for i in worst),
        actual=float(a[worst]) if e.size else 0.0,
        expected=float(e[worst]) if e.size else 0.0,
        rule=rule,
    )


def assert_close(
    actual: object,
    expected: object,
    *,
    dtype: str | np.dtype,
    ref_low: object | None = None,
    scale: float | None = None,
    name: str = "value",
) -> CloseResult:
    """Raise ``AssertionError`` naming ``name`` unless :func:`check_close` passes."""
    res = check_close(actual, expected, dtype=dtype, ref_low=ref_low, scale=scale)
    if not res.passed:
        raise AssertionError(f"{name}: {res}")
    return res

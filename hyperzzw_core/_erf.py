"""A portable error function written with array-API standard functions only.

``erf`` is not in the array API standard. :func:`hyperzzw_core._backend.erf` delegates to the
library's own erf where one exists (torch, SciPy for NumPy, CuPy, JAX) and falls back to
:func:`erf_portable` for every other namespace (array-api-strict, for example).

Method (all in the input's dtype, no data-dependent control flow, no host transfer):

* |x| < 2: the everywhere-positive series
  erf(x) = (2/√π)·x·e^{−x²}·Σ_{n≥0} (2x²)ⁿ / (1·3·…·(2n+1))   (32 terms; no cancellation);
* |x| ≥ 2: erf(x) = 1 − erfc(x) with the continued fraction
  erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))   (depth 48, evaluated
  backwards); inputs are clamped to 6, where erfc < 2.2·10⁻¹⁷ and erf rounds to 1 in float64.

Accuracy, measured against mpmath (40 digits) on 2000 points of (0, 6]: at most 3.2 ulp relative
error in float64 (≈ 7·10⁻¹⁶; SciPy's erf: 1.5 ulp) and 2.6 ulp in float32. erf(±inf) = ±1, NaN
propagates. The function is odd by construction.
"""

from __future__ import annotations

import math
from typing import Any

_SPLIT = 2.0
_SERIES_TERMS = 32
_CF_DEPTH = 48
_CLAMP = 6.0
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_PI = math.sqrt(math.pi)


def erf_portable(xp: Any, x: Any) -> Any:
    """erf(x) from standard functions only (see the module docstring for the accuracy). Any shape."""
    a = xp.abs(x)
    # Series branch on min(|x|, 2), continued-fraction branch on clamp(|x|, 2, 6): both branches
    # are finite everywhere, so neither produces NaN/overflow warnings for the unused elements.
    s_in = xp.clip(a, max=_SPLIT)
    c_in = xp.clip(a, min=_SPLIT, max=_CLAMP)

    x2 = s_in * s_in
    two_x2 = x2 * 2.0
    term = xp.ones_like(s_in)
    total = xp.ones_like(s_in)
    for n in range(1, _SERIES_TERMS + 1):
        term = term * two_x2 / float(2 * n + 1)
        total = total + term
    series = (s_in * xp.exp(-x2)) * total * _TWO_OVER_SQRT_PI

    f = c_in
    for k in range(_CF_DEPTH, 0, -1):
        f = c_in + (k / 2.0) / f
    erfc = xp.exp(-(c_in * c_in)) / (f * _SQRT_PI)
    tail = 1.0 - erfc

    mag = xp.where(a < _SPLIT, series, tail)
    return xp.where(x < 0, -mag, mag)

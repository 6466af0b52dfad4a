"""Element-wise activations: exact GELU, the logistic sigmoid σ and Si-GLU (spec §2, §2.6).

Each operator ``op`` has an unchecked kernel ``_op(xp, …)`` (used by the composite operators and
the framework adapters) and a public, validating ``op(…)`` with the reference's signature.
"""

from __future__ import annotations

import math
from typing import Any

from . import _backend as B
from ._checks import as_float_array, ns
from ._checks import check_finite as _check_finite

_SQRT_HALF = math.sqrt(0.5)


def _gelu(xp: Any, x: Any) -> Any:
    return B.gelu(xp, x, _SQRT_HALF)


def _si_glu(xp: Any, g1: Any) -> Any:
    return B.silu(xp, g1)


def gelu(x: Any, *, check_finite: bool = True) -> Any:
    """Exact GELU: y = x·Φ(x), Φ the standard normal CDF (erf form). Any shape, dtype kept.

    erf comes from the library where it has one, else from the portable ``erf_portable``
    (≤ 3.2 ulp in float64). Spec §2 "Conventions".
    """
    xp = ns(("x", x))
    x = as_float_array(xp, "x", x)
    if check_finite:
        _check_finite(xp, "x", x)
    return _gelu(xp, x)


def sigmoid(x: Any, *, check_finite: bool = True) -> Any:
    """Logistic sigmoid σ(x) = 1/(1 + e^{−x}), computed without overflow. Any shape."""
    xp = ns(("x", x))
    x = as_float_array(xp, "x", x)
    if check_finite:
        _check_finite(xp, "x", x)
    return B.sigmoid(xp, x)


def si_glu(g1: Any, *, check_finite: bool = True) -> Any:
    """Si-GLU: S = σ(G1) ⊙ G1 (= SiLU; no gate projection). Spec §2.6. Any shape."""
    xp = ns(("g1", g1))
    g1 = as_float_array(xp, "g1", g1)
    if check_finite:
        _check_finite(xp, "g1", g1)
    return _si_glu(xp, g1)

"""Element-wise activations: exact GELU, the logistic sigmoid σ and Si-GLU (spec §2, §2.6)."""

from __future__ import annotations

import numpy as np
from scipy import special

from ._checks import as_float_array
from ._checks import check_finite as _check_finite

# Python floats, not NumPy scalars: NumPy 2 scalars would promote float32 arrays (NEP 50).
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
_SQRT_HALF = float(np.sqrt(0.5))


def _phi_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + special.erf(x * _SQRT_HALF).astype(x.dtype, copy=False))


def gelu(x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Exact GELU: y = x·Φ(x), Φ the standard normal CDF (erf form; spec §2 "Conventions"). Any shape."""
    x = as_float_array("x", x)
    if check_finite:
        _check_finite("x", x)
    return x * _phi_cdf(x)


def gelu_vjp(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """VJP of :func:`gelu`: gx = g·(Φ(x) + x·φ(x))."""
    return g * (_phi_cdf(x) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x))


def sigmoid(x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Logistic sigmoid σ(x) = 1/(1 + e^{−x}), computed without overflow. Any shape."""
    x = as_float_array("x", x)
    if check_finite:
        _check_finite("x", x)
    return special.expit(x)


def si_glu(g1: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Si-GLU: S = σ(G1) ⊙ G1 (= SiLU; no gate projection). Spec §2.6. Any shape."""
    g1 = as_float_array("g1", g1)
    if check_finite:
        _check_finite("g1", g1)
    return special.expit(g1) * g1


def si_glu_vjp(g1: np.ndarray, g: np.ndarray) -> np.ndarray:
    """VJP of :func:`si_glu`: g·(σ + G1·σ·(1 − σ))."""
    s = special.expit(g1)
    return g * (s + g1 * s * (1.0 - s))

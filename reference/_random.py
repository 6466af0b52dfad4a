"""Deterministic parameter initialisers (spec §2 "Conventions").

Every random draw is ``rng.random(shape)`` (uniform doubles from NumPy's PCG64 bit generator,
whose stream is stable across NumPy versions and platforms) pushed through an inverse CDF:
``scipy.special.ndtri`` for normals and ``scipy.special.gammaincinv`` for Gamma. NumPy's own
``Generator.normal``/``gamma`` methods make no cross-version stream promise, so they are not used.
One seed therefore gives bit-identical float64 weights on every machine, and the core converts
those same arrays to every backend.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """U(-bound, bound) of the given shape (float64)."""
    return (2.0 * rng.random(shape) - 1.0) * bound


def normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """N(0, std²) by inverse CDF of uniforms (float64)."""
    u = rng.random(shape)
    u = np.clip(u, np.finfo(np.float64).tiny, None)  # ndtri(0) = -inf
    return special.ndtri(u) * std


def gamma(rng: np.random.Generator, shape: tuple[int, ...], concentration: float, rate: float = 1.0) -> np.ndarray:
    """Gamma(concentration, rate) by inverse CDF of uniforms (float64)."""
    u = rng.random(shape)
    return special.gammaincinv(concentration, u) / rate


def conv_default(rng: np.random.Generator, out_ch: int, in_ch: int) -> dict[str, np.ndarray]:
    """PyTorch's default 1×1-conv init: weight and bias ~ U(±1/√fan_in), fan_in = in_ch."""
    bound = 1.0 / np.sqrt(in_ch)
    return {"weight": uniform(rng, (out_ch, in_ch), bound), "bias": uniform(rng, (out_ch,), bound)}


def kaiming_uniform_linear(
    rng: np.random.Generator, out_ch: int, in_ch: int, bias: float = 0.0
) -> dict[str, np.ndarray]:
    """``kaiming_uniform_(nonlinearity='linear')``: U(±√(3/fan_in)); bias filled with ``bias``."""
    return {"weight": uniform(rng, (out_ch, in_ch), np.sqrt(3.0 / in_ch)), "bias": np.full((out_ch,), float(bias))}


def kaiming_normal(rng: np.random.Generator, out_ch: int, in_ch: int) -> dict[str, np.ndarray]:
    """``kaiming_normal_()`` (fan_in, gain √2): N(0, 2/fan_in); bias 0."""
    return {"weight": normal(rng, (out_ch, in_ch), np.sqrt(2.0 / in_ch)), "bias": np.zeros((out_ch,))}

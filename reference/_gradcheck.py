"""A reusable finite-difference gradient checker for any reference function (or any NumPy function).

Central differences in float64 with the 4th-order stencil
    f'(x) ≈ (−f(x+2h) + 8f(x+h) − 8f(x−h) + f(x−2h)) / (12h),
and a step chosen per element from its magnitude: h = rel_step·max(|x|, 1), capped at
``max_step``. The cap matters for the slow networks: their filter weights are ~10⁴ at init
(ω₀ = 2000), but the function's curvature in those weights is set by the coordinates (|c| ≤ 1),
so a purely relative step would be far too coarse.

Example::

    res = check_vjp(rgu, (params, z), rgu_vjp, wrt=0)
    assert res.passed, res          # the message names the worst element and its index
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ._tree import flatten, unflatten

DEFAULT_REL_STEP = 1e-5
DEFAULT_MAX_STEP = 1e-4


@dataclass
class GradCheckResult:
    """Outcome of a gradient check; ``str()`` reports the worst element."""

    passed: bool
    max_rel_error: float
    worst_key: str
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    checked: int
    rtol: float
    atol: float
    per_key: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        where = f"{self.worst_key}{list(self.worst_index)}" if self.worst_key else str(list(self.worst_index))
        return (
            f"gradient check {status}: {self.checked} elements, worst relative error "
            f"{self.max_rel_error:.3e} at {where}: analytic {self.analytic:.12g}, numeric "
            f"{self.numeric:.12g} (rtol {self.rtol:g}, atol {self.atol:g})"
        )


def _step(x: float, rel_step: float, max_step: float) -> float:
    return min(rel_step * max(abs(x), 1.0), max_step)


def _central(
    f: Callable[[np.ndarray], float], x: np.ndarray, idx: list[tuple[int, ...]], rel_step: float, max_step: float
) -> tuple[np.ndarray, np.ndarray]:
    """4th-order stencil values and their round-off estimates, 18·eps·max|f| / (12h), per element."""
    x = np.array(x, dtype=np.float64)
    out, noise = np.empty(len(idx)), np.empty(len(idx))
    eps = np.finfo(np.float64).eps
    for n, i in enumerate(idx):
        x0 = x[i]
        h = _step(float(x0), rel_step, max_step)
        vals = []
        for k in (2, 1, -1, -2):
            x[i] = x0 + k * h
            vals.append(float(f(x)))
        x[i] = x0
        out[n] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
        noise[n] = 18 * eps * max(abs(v) for v in vals) / (12 * h)
    return out, noise


def numerical_gradient(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    *,
    indices: Sequence[tuple[int, ...]] | None = None,
    rel_step: float = DEFAULT_REL_STEP,
    max_step: float = DEFAULT_MAX_STEP,
) -> np.ndarray:
    """∂f/∂x at ``indices`` (all elements if None) by the 4th-order central stencil.

    ``f`` maps an array shaped like ``x`` to a scalar. ``x`` is not modified. Returns an array of
    len(indices) values (or x.shape when ``indices`` is None).
    """
    shape = np.shape(x)
    idx = list(np.ndindex(shape)) if indices is None else [tuple(i) for i in indices]
    out, _ = _central(f, x, idx, rel_step, max_step)
    return out.reshape(shape) if indices is None else out


def _sample(shape: tuple[int, ...], max_elements: int | None, rng: np.random.Generator) -> list[tuple[int, ...]]:
    idx = list(np.ndindex(shape))
    if max_elements is not None and len(idx) > max_elements:
        pick = rng.choice(len(idx), size=max_elements, replace=False)
        idx = [idx[p] for p in sorted(pick)]
    return idx


def compare(
    analytic: dict[str, np.ndarray],
    f_of_leaf: Callable[[str, np.ndarray], float],
    leaves: dict[str, np.ndarray],
    *,
    max_elements: int | None = None,
    rtol: float = 1e-6,
    atol: float | None = None,
    seed: int = 0,
    rel_step: float = DEFAULT_REL_STEP,
    max_step: float = DEFAULT_MAX_STEP,
) -> GradCheckResult:
    """Compare analytic gradients of named leaves with finite differences.

    An element passes when |a − n| ≤ rtol·|n| + atol; the default atol is rtol times the largest
    numeric gradient magnitude seen (so elements whose gradient is ~0 are judged on the scale of
    the whole gradient), and never below 10× the stencil's estimated round-off. The relative
    error reported is |a − n| / max(|n|, atol/rtol).
    """
    rng = np.random.default_rng([seed, 2])  # its own stream: never the stream of the inputs
    numeric: dict[str, np.ndarray] = {}
    picks: dict[str, list] = {}
    roundoff = 0.0
    for key, leaf in leaves.items():
        picks[key] = _sample(np.shape(leaf), max_elements, rng)
        numeric[key], noise = _central(partial(f_of_leaf, key), leaf, picks[key], rel_step, max_step)
        roundoff = max([roundoff] + list(noise))
    scale = max([float(np.abs(v).max()) for v in numeric.values() if v.size] + [0.0])
    atol_eff = max(rtol * scale, 10.0 * roundoff) if atol is None else atol
    floor = max(atol_eff / rtol if rtol else 0.0, np.finfo(np.float64).tiny)
    worst: tuple[float, str, tuple[int, ...], float, float] = (0.0, "", (), 0.0, 0.0)
    passed, checked, per_key = True, 0, {}
    for key in leaves:
        a_all = np.asarray(analytic[key], dtype=np.float64)
        if a_all.shape != np.shape(leaves[key]):
            raise ValueError(
                f"analytic gradient for {key or 'x'} has shape {a_all.shape}, expected {np.shape(leaves[key])}"
            )
        a = np.array([a_all[i] for i in picks[key]])
        n = numeric[key]
        err = np.abs(a - n)
        passed &= bool(np.all(err <= rtol * np.abs(n) + atol_eff))
        rel = err / np.maximum(np.abs(n), floor)
        checked += rel.size
        per_key[key] = float(rel.max()) if rel.size else 0.0
        if rel.size and rel.max() >= worst[0]:
            j = int(rel.argmax())
            worst = (float(rel[j]), key, picks[key][j], float(a[j]), float(n[j]))
    return GradCheckResult(
        passed,
        worst[0],
        worst[1],
        tuple(int(i) for i in worst[2]),
        worst[3],
        worst[4],
        checked,
        rtol,
        atol_eff,
        per_key,
    )


def _inner(out: Any, cot: Any) -> float:
    if isinstance(out, (tuple, list)):
        return float(sum(_inner(o, c) for o, c in zip(out, cot, strict=True) if c is not None))
    return float(np.sum(np.asarray(out, dtype=np.float64) * cot))


def _random_like(out: Any, rng: np.random.Generator) -> Any:
    if isinstance(out, (tuple, list)):
        return type(out)(_random_like(o, rng) for o in out)
    return rng.standard_normal(np.shape(out))


def check_vjp(
    fn: Callable[..., Any],
    args: Sequence[Any],
    vjp: Callable[..., Any],
    *,
    wrt: int = 0,
    kwargs: dict | None = None,
    cotangent: Any = None,
    max_elements: int | None = None,
    rtol: float = 1e-6,
    atol: float | None = None,
    seed: int = 0,
    rel_step: float = DEFAULT_REL_STEP,
    max_step: float = DEFAULT_MAX_STEP,
) -> GradCheckResult:
    """Check ``vjp`` of ``fn`` with respect to positional argument ``wrt`` by finite differences.

    ``fn(*args, **kwargs)`` returns an array (or a tuple of arrays); ``vjp(*args, g, **kwargs)``
    follows the reference convention and returns the cotangent of each differentiable positional
    argument (a tuple, or a single value when there is one). ``args[wrt]`` may be an array or a
    parameter tree: every leaf is checked (at most ``max_elements`` sampled elements per leaf).
    The scalar differentiated is ⟨u, fn(args)⟩ for a random cotangent u (seeded).
    """
    kwargs = dict(kwargs or {})
    rng = np.random.default_rng([seed, 1])  # its own stream: a cotangent equal to an input hides errors
    if cotangent is None:
        cotangent = _random_like(fn(*args, **kwargs), rng)
    g = vjp(*args, cotangent, **kwargs)
    grad = g[wrt] if isinstance(g, tuple) else g
    target = args[wrt]
    is_tree = isinstance(target, (dict, list))
    leaves = flatten(target) if is_tree else {"": target}
    analytic = flatten(grad) if is_tree else {"": grad}

    def f_of_leaf(key: str, value: np.ndarray) -> float:
        if is_tree:
            new_leaves = dict(leaves)
            new_leaves[key] = value.astype(np.asarray(leaves[key]).dtype)
            new_target = unflatten(new_leaves)
        else:
            new_target = value.astype(np.asarray(target).dtype)
        new_args = list(args)
        new_args[wrt] = new_target
        return _inner(fn(*new_args, **kwargs), cotangent)

    return compare(
        analytic,
        f_of_leaf,
        leaves,
        max_elements=max_elements,
        rtol=rtol,
        atol=atol,
        seed=seed,
        rel_step=rel_step,
        max_step=max_step,
    )

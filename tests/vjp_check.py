"""The core's autograd on torch against the reference's hand-written VJP, for one registry sample.

One loop, used by the differential test of every operator's gradients
(``test_autograd_matches_reference_vjp`` in tests/test_differential.py, which asserts on each
gradient) and by the planted-bug test of the training-only fast paths
(``_training_mismatches`` in tests/test_planted_fast_paths.py, which lists what disagrees).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from backends import Backend

import hyperzzw_core
from hyperzzw_core.reference import TerminatorConfig, flatten, tree_map
from hyperzzw_core.testing import REGISTRY
from hyperzzw_core.testing.registry import Sample


def cast_floats(obj: Any, dtype: Any) -> Any:
    """Cast every floating NumPy array in a nested structure to ``dtype``."""
    if isinstance(obj, np.ndarray):
        return obj.astype(dtype) if obj.dtype.kind == "f" else obj
    if isinstance(obj, dict):
        return {k: cast_floats(v, dtype) for k, v in obj.items()}
    if isinstance(obj, list):
        return [cast_floats(v, dtype) for v in obj]
    if isinstance(obj, tuple) and not isinstance(obj, TerminatorConfig):
        return tuple(cast_floats(v, dtype) for v in obj)
    return obj


def leaves(out: Any) -> dict[str, Any]:
    """The arrays of an output (a tuple of outputs, or one tree), keyed by their place."""
    return flatten(list(out)) if isinstance(out, tuple) else flatten(out)


def random_like(out: Any, rng: np.random.Generator, dtype: str) -> Any:
    """A standard-normal tree of ``out``'s structure and shapes, in ``dtype``."""
    if isinstance(out, tuple):
        return tuple(random_like(o, rng, dtype) for o in out)
    return tree_map(lambda a: rng.standard_normal(np.shape(a)).astype(dtype), out)


@dataclass
class VjpPair:
    """One sample's autograd gradients beside the reference VJP, each keyed ``"i:place"`` (``i`` the
    argument's position, ``place`` the array's place in it).

    ``out``: the core's output (torch, with its graph); ``ref_out``: the reference's output on the
    sample's own (dtype-rounded) inputs; ``grads``: autograd's gradients (zeros where none reached
    an array); ``want``: the float64 reference VJP; ``low``: the reference VJP in float32 (empty
    for float64), the float32 bound of the tolerance policy."""

    out: Any
    ref_out: Any
    grads: dict[str, Any]
    want: dict[str, Any]
    low: dict[str, Any]


def autograd_against_vjp(
    torch_backend: Backend, name: str, sample: Sample, dtype: str, rng: np.random.Generator
) -> VjpPair:
    """Run operator ``name`` of the core on ``sample`` (converted by ``torch_backend``) with every
    differentiable argument requiring gradients, pull back a random cotangent (drawn from ``rng``)
    by autograd and by the reference's VJP (float64, and in ``dtype`` for float32)."""
    import torch

    spec = REGISTRY[name]
    args = list(torch_backend.convert(sample.args))
    for i in spec.differentiable:
        if args[i] is not None:
            args[i] = tree_map(lambda t: t.requires_grad_() if t.is_floating_point() else t, args[i])
    out = getattr(hyperzzw_core, name)(*args, **torch_backend.convert(sample.kwargs))
    ref_out = spec.reference(*sample.args, **sample.kwargs)
    cot = random_like(ref_out, rng, dtype)
    got_leaves, cot_leaves = leaves(out), leaves(torch_backend.convert(cot))
    sum((got_leaves[k] * cot_leaves[k]).sum() for k in got_leaves).backward()

    expected = spec.vjp(cast_floats(sample.args, np.float64), sample.kwargs, cast_floats(cot, np.float64))
    ref_low = spec.vjp(sample.args, sample.kwargs, cot) if dtype == "float32" else None
    grads: dict[str, Any] = {}
    want: dict[str, Any] = {}
    low: dict[str, Any] = {}
    for j, i in enumerate(spec.differentiable):
        if args[i] is None:
            continue
        g = tree_map(lambda t: torch.zeros_like(t) if t.grad is None else t.grad, args[i])
        grads.update({f"{i}:{k}": v for k, v in flatten({"arg": g}).items()})
        want.update({f"{i}:{k}": v for k, v in flatten({"arg": expected[j]}).items()})
        if ref_low is not None:
            low.update({f"{i}:{k}": v for k, v in flatten({"arg": ref_low[j]}).items()})
    return VjpPair(out, ref_out, grads, want, low)

"""``torch.func`` through the core: ``grad`` and ``vjp`` of the torch fast paths equal the reference VJPs.

The core's torch backend standardises the batch with an autograd Function
(``hyperzzw_core.backends._torch_functions.BatchStandardize``); ``torch.func`` transforms accept a
Function only in its ``setup_context`` form. For batch standardisation, G-IBS (whose even groups go
through the Function) and the whole SFNE block (BS inside the local branches and G-IBS), in float64:

* ``torch.func.grad`` of the scalar loss Σ⟨out, c⟩ for a random cotangent c, with respect to every
  differentiable input (the parameter tree included), equals the reference's hand-derived VJP;
* ``torch.func.vjp`` with the same cotangent gives the same cotangents;
* both equal ``torch.autograd.grad`` of the same loss, which runs the Function's backward directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import hyperzzw_core
from hyperzzw_core.reference import flatten, tree_map
from hyperzzw_core.testing import REGISTRY, assert_close

NAMES = ("batch_standardize", "g_ibs", "sfne_block")


def _torch(tree: Any) -> Any:
    return tree_map(lambda a: torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) else a, tree)


def _random_like(out: Any, rng: np.random.Generator) -> Any:
    if isinstance(out, tuple):
        return tuple(_random_like(o, rng) for o in out)
    return rng.standard_normal(np.shape(out))


def _inner(out: Any, cot: Any) -> torch.Tensor:
    """Σ⟨out, cot⟩ over every output (a tuple for the SFNE block)."""
    if isinstance(out, tuple):
        return sum((_inner(o, c) for o, c in zip(out, cot, strict=True)), torch.zeros((), dtype=torch.float64))
    return (out * cot).sum()


def _cases() -> list[Any]:
    return [
        pytest.param(name, i, id=f"{name}-{s.label}")
        for name in NAMES
        for i, s in enumerate(REGISTRY[name].samples("float64"))
    ]


def _check(got: Any, want: Any, what: str) -> None:
    got_flat, want_flat = flatten({"g": got}), flatten({"g": want})
    assert list(got_flat) == list(want_flat), f"{what}: structure {list(got_flat)} != {list(want_flat)}"
    scale = max(float(np.abs(np.asarray(w)).max()) for w in want_flat.values())
    for key, g in got_flat.items():
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float64, f"{what} {key}: {type(g)} {g.dtype}"
        assert_close(g, want_flat[key], dtype="float64", scale=scale, name=f"{what} {key}")


@pytest.mark.parametrize(("name", "index"), _cases())
def test_torch_func_grad_and_vjp_equal_the_reference_vjp(name: str, index: int) -> None:
    spec = REGISTRY[name]
    sample = spec.samples("float64")[index]
    rng = np.random.default_rng(7)
    cot = _random_like(spec.reference(*sample.args, **sample.kwargs), rng)
    want_all = spec.vjp(sample.args, sample.kwargs, cot)
    wrt = [i for i in spec.differentiable if sample.args[i] is not None]
    want = [want_all[spec.differentiable.index(i)] for i in wrt]

    args = list(_torch(sample.args))
    kwargs = _torch(sample.kwargs)
    cot_t = tuple(_torch(list(cot))) if isinstance(cot, tuple) else _torch(cot)
    op = getattr(hyperzzw_core, name)

    def forward(*diff: Any) -> Any:
        full = list(args)
        for i, d in zip(wrt, diff, strict=True):
            full[i] = d
        return op(*full, **kwargs)

    def loss(*diff: Any) -> torch.Tensor:
        return _inner(forward(*diff), cot_t)

    diff = [args[i] for i in wrt]
    grads = torch.func.grad(loss, argnums=tuple(range(len(wrt))))(*diff)
    _check(list(grads), want, f"torch.func.grad {name}")

    _, pullback = torch.func.vjp(forward, *diff)
    _check(list(pullback(cot_t)), want, f"torch.func.vjp {name}")

    leaves = [t.requires_grad_() for t in flatten({"d": diff}).values()]
    eager = torch.autograd.grad(loss(*diff), leaves)
    for (key, g), e in zip(flatten({"g": list(grads)}).items(), eager, strict=True):
        assert torch.allclose(g, e, rtol=1e-12, atol=1e-14), f"{name} {key}: torch.func != torch.autograd"


def test_the_batch_standardize_function_runs_under_torch_func() -> None:
    """The core's torch path goes through the autograd Function (so the test above exercises it), the
    Function's output equals the formula's, and its ``torch.func.grad`` is the reference VJP."""
    from hyperzzw_core.backends._torch_functions import BatchStandardize

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5))
    g = rng.standard_normal(x.shape)
    xt = torch.from_numpy(x)
    axes, eps = (0, 2), 1e-5

    def mean(a: torch.Tensor, *, axis: tuple[int, ...], keepdims: bool) -> torch.Tensor:
        return torch.mean(a, dim=axis, keepdim=keepdims)

    node = hyperzzw_core.batch_standardize(xt.clone().requires_grad_(), eps).grad_fn
    assert "BatchStandardize" in type(node).__name__, f"the core's torch path does not use the Function: {node}"

    y = BatchStandardize.standardize(xt, axes, eps, mean)
    mu = x.mean(axis=axes, keepdims=True)
    formula = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    assert_close(y, formula, dtype="float64", name="BatchStandardize forward")

    got = torch.func.grad(lambda a: (BatchStandardize.standardize(a, axes, eps, mean) * torch.from_numpy(g)).sum())(xt)
    assert_close(
        got,
        hyperzzw_core.reference.batch_standardize_vjp(x, g, eps=eps),
        dtype="float64",
        name="torch.func.grad BatchStandardize",
    )

"""The author's sign optimizers Kar3 and Kar2 (spec §2.14)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def _sign_step(params: list[Any], grads: list[Any], emas: list[list[Any]], lr: float, betas: list[float]) -> None:
    """p ← p − lr·sign(g) − Σ_j lr·sign(m_j) with the PREVIOUS EMAs, then m_j ← β_j·m_j + (1 − β_j)·g,
    for all parameters at once with torch's multi-tensor (foreach) kernels: the per-element
    operations and their order are those of a loop over the parameters, in a few dozen kernel
    calls instead of five to eight per parameter (the digits network has 686 parameters)."""
    torch._foreach_add_(params, torch._foreach_sign(grads), alpha=-lr)
    for ms in emas:
        torch._foreach_add_(params, torch._foreach_sign(ms), alpha=-lr)
    for ms, b in zip(emas, betas, strict=True):
        torch._foreach_mul_(ms, b)
        torch._foreach_add_(ms, grads, alpha=1.0 - b)


def _with_grads(opt: torch.optim.Optimizer, group: dict, keys: tuple[str, ...]) -> tuple[list, list, list[list]]:
    """The group's parameters that have a gradient, their gradients and their EMAs (state ``keys``,
    created as zeros on first use)."""
    params: list[Any] = []
    grads: list[Any] = []
    emas: list[list[Any]] = [[] for _ in keys]
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{type(opt).__name__} does not support sparse gradients")
        state = opt.state[p]
        if not state:
            for k in keys:
                state[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
        params.append(p)
        grads.append(p.grad)
        for ms, k in zip(emas, keys, strict=True):
            ms.append(state[k])
    return params, grads, emas


class Kar3(torch.optim.Optimizer):
    """The author's Kar3 (spec §2.14): three sign steps per gradient.

    For each parameter with gradient g, with EMAs m₁ = m₂ = 0 at the start::

        p ← p − lr·sign(g) − lr·sign(m₁) − lr·sign(m₂)        (signs of the PREVIOUS EMAs)
        m₁ ← β₁·m₁ + (1 − β₁)·g ;  m₂ ← β₂·m₂ + (1 − β₂)·g

    sign(0) = 0 (the first step uses sign(g) only); no bias correction, no weight decay. State
    keys: ``m1``, ``m2`` (the author calls both ``exp_avg_sq``; they are EMAs of g, not g²).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.95)) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr: expected a non-negative learning rate, got {lr}")
        b1, b2 = (float(b) for b in betas)
        for i, b in enumerate((b1, b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}]: expected a value in [0, 1), got {b}")
        super().__init__(params, {"lr": lr, "betas": (b1, b2)})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, emas = _with_grads(self, group, ("m1", "m2"))
            if params:
                _sign_step(params, grads, emas, group["lr"], list(group["betas"]))
        return loss


class Kar2(torch.optim.Optimizer):
    """The author's Kar2 (spec §2.14): p ← p − lr·sign(g) − lr·sign(m); m ← β·m + (1 − β)·g.

    ``betas`` is one float (the author's code passes ``(0.95)``, i.e. 0.95); a 1-tuple is accepted.
    sign(0) = 0, no bias correction, no weight decay. State key: ``m``.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-4, betas: float | tuple[float] | list[float] = 0.95
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr: expected a non-negative learning rate, got {lr}")
        if isinstance(betas, (tuple, list)):
            if len(betas) != 1:
                raise ValueError(f"betas: Kar2 takes one β (a float), got {betas!r}")
            betas = betas[0]
        b = float(betas)
        if not 0.0 <= b < 1.0:
            raise ValueError(f"betas: expected a value in [0, 1), got {b}")
        super().__init__(params, {"lr": lr, "betas": b})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, emas = _with_grads(self, group, ("m",))
            if params:
                _sign_step(params, grads, emas, group["lr"], [group["betas"]])
        return loss

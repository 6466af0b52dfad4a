"""The author's sign optimizers Kar3 and Kar2 (spec §2.14)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


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
            lr, (b1, b2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("Kar3 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["m1"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["m2"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m1, m2 = state["m1"], state["m2"]
                p.add_(torch.sign(g), alpha=-lr)
                p.add_(torch.sign(m1), alpha=-lr)
                p.add_(torch.sign(m2), alpha=-lr)
                m1.mul_(b1).add_(g, alpha=1.0 - b1)
                m2.mul_(b2).add_(g, alpha=1.0 - b2)
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
            lr, b = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("Kar2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["m"]
                p.add_(torch.sign(g), alpha=-lr)
                p.add_(torch.sign(m), alpha=-lr)
                m.mul_(b).add_(g, alpha=1.0 - b)
        return loss

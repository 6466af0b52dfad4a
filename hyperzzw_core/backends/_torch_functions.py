"""torch autograd Functions of the core's torch fast paths (imported only once torch is in use).

Kept out of ``_backend`` so that importing the core never imports torch; defined at module level
(not lazily) so that torch.compile can trace through them. Each Function has the ``setup_context``
form (``forward`` without ``ctx``), which ``torch.func`` transforms (``grad``, ``vjp``) require.
"""

from __future__ import annotations

from typing import Any

import torch


class BatchStandardize(torch.autograd.Function):
    """y = (x − μ)·(σ² + eps)^(−1/2) over ``axes``, every mean taken by ``mean`` (the caller's ``xp.mean``).

    Backward: gx = r·(g − mean(g) − y·mean(g·y)) with r = (σ² + eps)^(−1/2), its two means by
    ``mean`` too, so that a namespace whose batch means span several processes gets the global
    gradient. First derivatives only (a second backward raises). Call :meth:`standardize` (or
    ``apply(...)[0]``): ``forward`` also returns r, a non-differentiable output that the
    ``setup_context`` form needs in order to save it for the backward pass.
    """

    @staticmethod
    def forward(x: torch.Tensor, axes: tuple[int, ...], eps: float, mean: Any) -> tuple[torch.Tensor, torch.Tensor]:
        mu = mean(x, axis=axes, keepdims=True)
        d = x - mu
        r = torch.rsqrt(mean(d * d, axis=axes, keepdims=True) + eps)
        return d.mul_(r), r

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        _, axes, _, mean = inputs
        y, r = output
        ctx.mark_non_differentiable(r)
        ctx.save_for_backward(y, r)
        ctx.axes, ctx.mean = axes, mean

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor, _g_r: Any) -> tuple[torch.Tensor, None, None, None]:
        y, r = ctx.saved_tensors
        gm = ctx.mean(g, axis=ctx.axes, keepdims=True)
        gy = ctx.mean(g * y, axis=ctx.axes, keepdims=True)
        return (g - torch.addcmul(gm, y, gy)).mul_(r), None, None, None

    @staticmethod
    def standardize(x: torch.Tensor, axes: tuple[int, ...], eps: float, mean: Any) -> torch.Tensor:
        """The standardised ``x`` (the Function's first output)."""
        return BatchStandardize.apply(x, axes, eps, mean)[0]

"""Global-batch statistics for multi-process training (the SyncBatchNorm idea, for every batch statistic).

The core computes every statistic over the batch axis as ``xp.mean(x, axis=(0, …))``: batch
standardisation (alone, in G-IBS and in the local branch) and MAGNet_L's batch-mean context.
:class:`GlobalBatchNamespace` wraps the torch array namespace so that exactly those means are taken
over the global batch of all processes: local sums and counts are combined with a differentiable
all-reduce (``torch.distributed.nn.functional.all_reduce``, whose backward all-reduces the
gradient). Per-sample reductions (IS, GAP, the losses' batch means) are left local; DDP's gradient
averaging makes those global. With equal shares of each global batch, N processes then compute the
same loss and gradients as one process on the whole batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.nn import functional as dist_fn


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


class GlobalBatchNamespace:
    """``array_api_compat.torch`` with means over the batch axis (axis 0) reduced across processes."""

    def __init__(self, xp: Any, group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "GlobalBatchNamespace: torch.distributed is not initialised "
                "(run under torchrun, or call init_process_group first)"
            )
        self._xp = xp
        self._group = group

    def __getattr__(self, name: str) -> Any:
        return getattr(self._xp, name)

    def mean(self, x: torch.Tensor, /, *, axis: Any = None, keepdims: bool = False) -> torch.Tensor:
        axes = _axes(axis, x.ndim)
        if axis is None or 0 not in axes or x.ndim < 2:
            return self._xp.mean(x, axis=axis, keepdims=keepdims)
        local = torch.sum(x, dim=axes, keepdim=True)
        count = torch.tensor(float(math.prod(x.shape[a] for a in axes)), dtype=x.dtype, device=x.device)
        dist.all_reduce(count, group=self._group)
        out = dist_fn.all_reduce(local, group=self._group) / count
        return out if keepdims else out.squeeze(axes)


def global_batch_namespace(group: Any = None) -> GlobalBatchNamespace:
    """The torch namespace whose batch-axis means span every process of ``group`` (default: world)."""
    import array_api_compat.torch as xp

    return GlobalBatchNamespace(xp, group)

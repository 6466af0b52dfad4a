"""The author's L2 regulariser (spec §2.13, §5 Q10) for a module, a state_dict or a parameter tree."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ... import regularizer as _regularizer


def _flat_named(params: Any) -> Any:
    if isinstance(params, nn.Module):
        return dict(params.named_parameters())
    return params


def l2_partition(params: Any) -> _regularizer.L2Partition:
    """The (fast, slow) key sets of the author's L2 regulariser for a module, state_dict or tree.

    See :mod:`hyperzzw_core.regularizer` for the documented rule (spec §5 Q10).
    """
    return _regularizer.l2_partition(_flat_named(params))


def l2_regularizer(params: Any, weight: float = 5e-5, *, slow_weight: float = _regularizer.SLOW_WEIGHT) -> torch.Tensor:
    """λ·(Σ_fast ‖p‖ + 1e-6·Σ_slow ‖p‖) with plain Frobenius norms, for a module or a tree."""
    return _regularizer.l2_regularizer(_flat_named(params), weight, slow_weight=slow_weight)

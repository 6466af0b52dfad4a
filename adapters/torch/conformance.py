"""The functional interface: the conformance-kit protocol (``hyperzzw verify``) on torch tensors.

Every operator as a function on torch tensors, under the reference's names and signatures (they
are the array-API core's; gradients come from autograd). With the three hooks below
(``hyperzzw_autograd``, :func:`from_numpy`, :func:`to_numpy`) re-exported by the package,
``hyperzzw verify --impl hyperzzw_core.adapters.torch`` checks forward values and gradients
(see :mod:`hyperzzw_core.conformance.protocol`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hyperzzw_core import (
    adaptive_avg_pool,
    batch_standardize,
    bottleneck,
    channel_mixer,
    depthwise_conv,
    g_ibs,
    gelu,
    hyper_channel_interaction,
    hyper_interaction,
    hyperzzw_2e,
    hyperzzw_global,
    instance_standardize,
    label_smoothing_cross_entropy,
    local_conv,
    magnet_g,
    magnet_gc,
    magnet_l,
    pointwise_linear,
    rgu,
    sfne_block,
    si_glu,
    slow_loss,
    terminator_forward,
    terminator_loss,
    tile_channels,
)

hyperzzw_autograd = "torch"
"""The kit differentiates these functions with ``torch.autograd.grad``."""


def from_numpy(array: np.ndarray, *, device: Any = None) -> torch.Tensor:
    """A NumPy array as a tensor on ``device`` (float dtypes and int64 labels kept)."""
    return torch.as_tensor(array, device=device)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """An explicit device → host copy."""
    return x.detach().cpu().numpy()


__all__ = [
    "adaptive_avg_pool",
    "batch_standardize",
    "bottleneck",
    "channel_mixer",
    "depthwise_conv",
    "from_numpy",
    "g_ibs",
    "gelu",
    "hyper_channel_interaction",
    "hyper_interaction",
    "hyperzzw_2e",
    "hyperzzw_autograd",
    "hyperzzw_global",
    "instance_standardize",
    "label_smoothing_cross_entropy",
    "local_conv",
    "magnet_g",
    "magnet_gc",
    "magnet_l",
    "pointwise_linear",
    "rgu",
    "sfne_block",
    "si_glu",
    "slow_loss",
    "terminator_forward",
    "terminator_loss",
    "tile_channels",
    "to_numpy",
]

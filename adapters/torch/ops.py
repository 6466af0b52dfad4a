"""Parameter-free operators as ``nn.Module``s (spec §2.2-2.13): the core's functions with their options."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

import hyperzzw_core as _core


class _Op(nn.Module):
    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")


class HyperZZWGlobal(_Op):
    """G = (Z ⊙ K_g) @ Y (spec §2.2). forward(z, k_g, y); ``grid`` for 1-D inputs."""

    def __init__(self, grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, z: torch.Tensor, k_g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _core.hyperzzw_global(z, k_g, y, grid=self.grid, check_finite=False)


class HyperZZW2E(_Op):
    """K ⊙ Z² (spec §2.4). forward(k, z)."""

    def forward(self, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return _core.hyperzzw_2e(k, z, check_finite=False)


class DepthwiseConv(_Op):
    """Depth-wise 'same' cross-correlation (spec §2.3). forward(y, k_l)."""

    def forward(self, y: torch.Tensor, k_l: torch.Tensor) -> torch.Tensor:
        return _core.depthwise_conv(y, k_l, check_finite=False)


class GELU(_Op):
    """Exact (erf) GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.gelu(x, check_finite=False)


class SiGLU(_Op):
    """S = σ(G1) ⊙ G1 (spec §2.6)."""

    def forward(self, g1: torch.Tensor) -> torch.Tensor:
        return _core.si_glu(g1, check_finite=False)


class InstanceStandardize(_Op):
    """IS over the spatial axes (spec §2.9)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.instance_standardize(x, self.eps, check_finite=False)


class BatchStandardize(_Op):
    """BS over batch and spatial axes, batch statistics in eval too (spec §2.9, §5 Q5)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.batch_standardize(x, self.eps, check_finite=False)


class GIBS(_Op):
    """G-IBS: even channel groups BS, odd groups IS (spec §2.9)."""

    def __init__(self, groups: int = 12, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.g_ibs(x, self.groups, self.eps, check_finite=False)


class AdaptiveAvgPool(_Op):
    """Adaptive average pooling of the spatial axes to ``size`` (PyTorch's bins)."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.adaptive_avg_pool(x, self.size)


class TileChannels(_Op):
    """Repeat the channel stack ``reps`` times (torch ``repeat(1, reps, 1, 1)``)."""

    def __init__(self, reps: int) -> None:
        super().__init__()
        self.reps = int(reps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.tile_channels(x, self.reps)


class SlowLoss(_Op):
    """Slow neural loss over the global kernels (spec §2.12). forward(list of K_i)."""

    def __init__(self, factors: Sequence[int], kind: str = "tiled") -> None:
        super().__init__()
        self.factors, self.kind = tuple(int(f) for f in factors), kind

    def forward(self, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
        return _core.slow_loss(list(kernels), self.factors, kind=self.kind, check_finite=False)


class LabelSmoothingCrossEntropy(_Op):
    """Label-smoothing CE, ε = 0.09 (spec §2.13). forward(logits (B, K), labels (B,))."""

    def __init__(self, eps: float = 0.09) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return _core.label_smoothing_cross_entropy(logits, labels, self.eps, check_finite=False)

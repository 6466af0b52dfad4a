"""Linear layers: the pointwise linear map, the channel mixer, the bottleneck and LocalConv (spec §2.3, §2.10)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import hyperzzw_core as _core

from ... import reference as _ref
from ._base import ParamModule, _init


class PointwiseLinear(ParamModule):
    """Linear{d}d (a 1×1 convolution): (B, I, *S) → (B, O, *S); params {"weight": (O, I), "bias": (O,)}.

    ``init``: "kaiming_normal" (mixers, bottleneck, head), "kaiming_uniform" (slow nets, RGU; bias
    ``bias``) or "default" (PyTorch's conv default: U(±1/√I) for both). Spec §2.
    """

    weight: nn.Parameter  # (O, I), registered by _build
    bias: nn.Parameter  # (O,)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        init: str = "kaiming_normal",
        bias: float = 0.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        if init == "kaiming_normal":
            tree = _ref.kaiming_normal(rng, out_channels, in_channels)
        elif init == "kaiming_uniform":
            tree = _ref.kaiming_uniform_linear(rng, out_channels, in_channels, bias=bias)
        elif init == "default":
            tree = _ref.conv_default(rng, out_channels, in_channels)
        else:
            raise ValueError(f"init: expected 'kaiming_normal', 'kaiming_uniform' or 'default', got {init!r}")
        _init(self, tree, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.pointwise_linear(self.param_tree(), x, check_finite=False)


class ChannelMixer(PointwiseLinear):
    """Channel mixer M = IS(Linear_{C→C}(Z)) (spec §2.10): (B, C, *S) → (B, C, *S)."""

    def __init__(
        self, channels: int, *, eps: float = 1e-5, seed: int = 0, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(channels, channels, seed=seed, device=device, dtype=dtype)
        self.eps = eps

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _core.channel_mixer(self.param_tree(), z, eps=self.eps, check_finite=False)


class Bottleneck(PointwiseLinear):
    """Bottleneck Linear_{n_branches·C → bf·C} (spec §2.10)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, seed: int = 0, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(in_channels, out_channels, seed=seed, device=device, dtype=dtype)


class LocalConv(ParamModule):
    """LocalConv(K_l, Y) = GELU(BS(Mixer(depthwise_conv(Y, K_l)))) (spec §2.3).

    Params: the mixer {"weight": (C, C), "bias": (C,)}. forward(y (B, C, *S), k_l (C, 1, *k)).
    """

    def __init__(
        self, channels: int, *, eps: float = 1e-5, seed: int = 0, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        self.eps = eps
        _init(self, _ref.kaiming_normal(np.random.default_rng(seed), channels, channels), device, dtype)

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def forward(self, y: torch.Tensor, k_l: torch.Tensor) -> torch.Tensor:
        return _core.local_conv(self.param_tree(), y, k_l, eps=self.eps, check_finite=False)

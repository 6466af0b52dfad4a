"""The interactions of an SFNE block: RGU, the hyper channel and hyper interactions, the local branch
(spec §2.3, §2.5, §2.7, §2.8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

import hyperzzw_core as _core

from ... import reference as _ref
from ...reference import init_magnet_g, init_magnet_gc, init_magnet_l
from ...reference import init_rgu as _rgu_init
from ._base import ParamModule, _init
from .layers import LocalConv, PointwiseLinear
from .slow_nets import MAGNetG, MAGNetGC, MAGNetL


class RGU(ParamModule):
    """Recursive gated unit Y = W_Y(GELU(IS(W_K Z ⊙ W_Q(W_V Z))) + B) (spec §2.5)."""

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {
        "w_k": PointwiseLinear,
        "w_v": PointwiseLinear,
        "w_q": PointwiseLinear,
        "w_y": PointwiseLinear,
    }

    def __init__(
        self,
        channels: int,
        spatial: Sequence[int],
        *,
        eps: float = 1e-5,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        _init(self, _rgu_init(np.random.default_rng(seed), channels, tuple(spatial)), device, dtype)

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _core.rgu(self.param_tree(), z, eps=self.eps, check_finite=False)


class HyperChannelInteraction(ParamModule):
    """Z ⊙ σ(K_c ⊙ GAP(Z)²) with K_c = MAGNet_GC (spec §2.7)."""

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {"channel": MAGNetGC}

    def __init__(
        self,
        channels: int,
        hidden: int = 32,
        num_layers: int = 2,
        *,
        omega_0: float = 2000.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        tree = {"channel": init_magnet_gc(rng, channels, hidden, num_layers, omega_0=omega_0, alpha=alpha, beta=beta)}
        _init(self, tree, device, dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _core.hyper_channel_interaction(self.param_tree(), z, check_finite=False)


class HyperInteraction(ParamModule):
    """X ⊙ σ((K_ss ⊙ mean_c(Y)²) ⊙ (K_cc ⊙ GAP(Y)²)) (spec §2.8). forward(y, x)."""

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {"channel": MAGNetGC, "spatial": MAGNetG}

    def __init__(
        self,
        channels: int,
        spatial: Sequence[int],
        channel_hidden: int = 16,
        spatial_hidden: int = 64,
        num_layers: int = 2,
        *,
        omega_0: float = 2000.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        mag = {"omega_0": omega_0, "alpha": alpha, "beta": beta}
        tree = {
            "channel": init_magnet_gc(rng, channels, channel_hidden, num_layers, **mag),
            "spatial": init_magnet_g(rng, tuple(spatial), spatial_hidden, 1, num_layers, **mag),
        }
        _init(self, tree, device, dtype)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _core.hyper_interaction(self.param_tree(), y, x, check_finite=False)


class LocalBranch(ParamModule):
    """One local branch of an SFNE block: {"slow_l": MAGNetL, "mixer": LocalConv, "bias": ()}.

    forward(ctx, y) = LocalConv(MAGNet_L(ctx), y) + bias (spec §2.3, §1.3 step 12).
    """

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {"slow_l": MAGNetL, "mixer": LocalConv}
    # registered by _build from the parameter tree
    slow_l: MAGNetL
    mixer: LocalConv
    bias: nn.Parameter  # ()

    def __init__(
        self,
        kernel_size: int,
        data_dim: int,
        channels: int,
        hidden: int = 32,
        num_layers: int = 2,
        *,
        eps: float = 1e-5,
        omega_0: float = 2000.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        rng = np.random.default_rng(seed)
        tree = {
            "slow_l": init_magnet_l(
                rng, kernel_size, data_dim, hidden, channels, num_layers, omega_0=omega_0, alpha=alpha, beta=beta
            ),
            "mixer": _ref.kaiming_normal(rng, channels, channels),
            "bias": np.zeros(()),
        }
        _init(self, tree, device, dtype)

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def _child_options(self, key: str) -> dict[str, Any]:
        return {"eps": self.eps} if key == "mixer" else {}

    def forward(self, ctx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mixer(y, self.slow_l(ctx)) + self.bias

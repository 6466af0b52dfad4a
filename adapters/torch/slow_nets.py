"""The slow networks MAGNet_G, MAGNet_GC and MAGNet_L that generate the kernels (spec §2.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

import hyperzzw_core as _core

from ...reference import init_magnet_g, init_magnet_gc, init_magnet_l
from ._base import ParamModule, _init
from .layers import PointwiseLinear


class _MAGNetBase(ParamModule):
    _child_types: ClassVar[dict[str, type[ParamModule]]] = {
        "filters": PointwiseLinear,
        "linears": PointwiseLinear,
        "output": PointwiseLinear,
        "reduce": PointwiseLinear,
        "fc1": PointwiseLinear,
        "linears_x": PointwiseLinear,
    }


class MAGNetG(_MAGNetBase):
    """MAGNet_G: the global kernel K (1, C_out, *sizes) from the coordinate grid (spec §2.1).

    forward() takes no input (K is input-independent).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden: int,
        out_channels: int,
        num_layers: int,
        *,
        omega_0: float = 2000.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        tree = init_magnet_g(
            np.random.default_rng(seed),
            tuple(sizes),
            hidden,
            out_channels,
            num_layers,
            omega_0=omega_0,
            alpha=alpha,
            beta=beta,
        )
        _init(self, tree, device, dtype)

    def forward(self) -> torch.Tensor:
        return _core.magnet_g(self.param_tree())


class MAGNetGC(_MAGNetBase):
    """MAGNet_GC: a channel kernel (1, 1, C) on a 1-D grid of C positions (spec §2.1)."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        num_layers: int,
        *,
        omega_0: float = 2000.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        tree = init_magnet_gc(
            np.random.default_rng(seed), channels, hidden, num_layers, omega_0=omega_0, alpha=alpha, beta=beta
        )
        _init(self, tree, device, dtype)

    def forward(self) -> torch.Tensor:
        return _core.magnet_gc(self.param_tree())


class MAGNetL(_MAGNetBase):
    """MAGNet_L: a context-dependent local kernel (C_out, 1, k, …) (spec §2.1).

    forward(x (B, C_out, *S)); the s-renormalisation's first term is ``.detach()``-ed.
    """

    def __init__(
        self,
        kernel_size: int,
        data_dim: int,
        hidden: int,
        out_channels: int,
        num_layers: int,
        *,
        omega_0: float = 2000.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        seed: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        tree = init_magnet_l(
            np.random.default_rng(seed),
            kernel_size,
            data_dim,
            hidden,
            out_channels,
            num_layers,
            omega_0=omega_0,
            alpha=alpha,
            beta=beta,
        )
        _init(self, tree, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.magnet_l(self.param_tree(), x, check_finite=False)

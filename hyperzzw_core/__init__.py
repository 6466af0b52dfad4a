"""hyperzzw: the HyperZ·Z·W operator and the Terminator network (Zhang, arXiv 2401.17948).

* ``hyperzzw_core`` (this namespace): every operator written against the array API standard. The
  functions take and return arrays of the caller's library (NumPy, torch, CuPy, JAX,
  array-api-strict, …) on the caller's device, dtype preserved; names and signatures are those of
  the reference. Forward only: gradients come from the library's autodiff (see the torch adapter).
* ``hyperzzw_core.params``: one parameter format for every backend (init, conversion, npz and
  torch state_dict round trips).
* ``hyperzzw_core.reference``: the NumPy/SciPy ground truth, forward and VJPs.
* ``hyperzzw_core.adapters``: framework front-ends (PyTorch ``adapters.torch``, CuPy), tested
  against the reference.

The names of this namespace are loaded lazily (PEP 562): ``import hyperzzw_core.reference`` loads
NumPy, SciPy and the reference only, and the first use of an operator loads the core (NumPy, SciPy
and array-api-compat; never torch, CuPy or JAX).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module (relative to this package) that defines it
_LAZY: dict[str, str] = {
    **dict.fromkeys(("gelu", "si_glu", "sigmoid"), "._activations"),
    **dict.fromkeys(("sfne_block", "tile_channels"), "._block"),
    **dict.fromkeys(("adaptive_avg_pool", "depthwise_conv", "depthwise_conv_fft"), "._conv"),
    "erf_portable": "._erf",
    **dict.fromkeys(("hyperzzw_2e", "hyperzzw_global", "local_conv"), "._hyperzzw"),
    **dict.fromkeys(("hyper_channel_interaction", "hyper_interaction", "rgu"), "._interaction"),
    **dict.fromkeys(("bottleneck", "channel_mixer", "pointwise_linear"), "._linear"),
    **dict.fromkeys(("label_smoothing_cross_entropy", "slow_loss"), "._losses"),
    **dict.fromkeys(("check_params_match", "terminator_forward", "terminator_loss"), "._network"),
    **dict.fromkeys(("coordinate_grid", "magnet_g", "magnet_gc", "magnet_l"), "._slow_net"),
    **dict.fromkeys(("batch_standardize", "g_ibs", "instance_standardize"), "._standardize"),
    **dict.fromkeys(
        (
            "PRESETS",
            "TerminatorConfig",
            "cifar10",
            "cifar100",
            "preset",
            "sequence",
            "tiny",
            "tiny_1d",
            "flatten",
            "tree_map",
            "unflatten",
        ),
        ".reference",
    ),
    **dict.fromkeys(("convert", "init_params", "load_params", "save_params", "to_numpy"), ".params"),
    **dict.fromkeys(("l2_partition", "l2_regularizer"), ".regularizer"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562) and keep it in the module's namespace."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'hyperzzw_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from ._activations import gelu as gelu
    from ._activations import si_glu as si_glu
    from ._activations import sigmoid as sigmoid
    from ._block import sfne_block as sfne_block
    from ._block import tile_channels as tile_channels
    from ._conv import adaptive_avg_pool as adaptive_avg_pool
    from ._conv import depthwise_conv as depthwise_conv
    from ._conv import depthwise_conv_fft as depthwise_conv_fft
    from ._erf import erf_portable as erf_portable
    from ._hyperzzw import hyperzzw_2e as hyperzzw_2e
    from ._hyperzzw import hyperzzw_global as hyperzzw_global
    from ._hyperzzw import local_conv as local_conv
    from ._interaction import hyper_channel_interaction as hyper_channel_interaction
    from ._interaction import hyper_interaction as hyper_interaction
    from ._interaction import rgu as rgu
    from ._linear import bottleneck as bottleneck
    from ._linear import channel_mixer as channel_mixer
    from ._linear import pointwise_linear as pointwise_linear
    from ._losses import label_smoothing_cross_entropy as label_smoothing_cross_entropy
    from ._losses import slow_loss as slow_loss
    from ._network import check_params_match as check_params_match
    from ._network import terminator_forward as terminator_forward
    from ._network import terminator_loss as terminator_loss
    from ._slow_net import coordinate_grid as coordinate_grid
    from ._slow_net import magnet_g as magnet_g
    from ._slow_net import magnet_gc as magnet_gc
    from ._slow_net import magnet_l as magnet_l
    from ._standardize import batch_standardize as batch_standardize
    from ._standardize import g_ibs as g_ibs
    from ._standardize import instance_standardize as instance_standardize
    from .params import convert as convert
    from .params import init_params as init_params
    from .params import load_params as load_params
    from .params import save_params as save_params
    from .params import to_numpy as to_numpy
    from .reference import PRESETS as PRESETS
    from .reference import TerminatorConfig as TerminatorConfig
    from .reference import cifar10 as cifar10
    from .reference import cifar100 as cifar100
    from .reference import flatten as flatten
    from .reference import preset as preset
    from .reference import sequence as sequence
    from .reference import tiny as tiny
    from .reference import tiny_1d as tiny_1d
    from .reference import tree_map as tree_map
    from .reference import unflatten as unflatten
    from .regularizer import l2_partition as l2_partition
    from .regularizer import l2_regularizer as l2_regularizer

"""hyperzzw: the HyperZ·Z·W operator and the Terminator network (Zhang, arXiv 2401.17948).

* ``hyperzzw_core`` (this namespace): every operator written against the array API standard. The
  functions take and return arrays of the caller's library (NumPy, torch, CuPy,
  array-api-strict, …) on the caller's device, dtype preserved; names and signatures are those of
  the reference. Forward only: gradients come from the library's autodiff (see the torch adapter).
* ``hyperzzw_core.params``: one parameter format for every backend (init, conversion, npz and
  torch state_dict round trips).
* ``hyperzzw_core.reference``: the NumPy/SciPy ground truth, forward and VJPs.
* ``hyperzzw_core.adapters``: framework front-ends (PyTorch ``adapters.torch``, CuPy), tested
  against the reference.

Importing this package imports NumPy, SciPy and array-api-compat only (never torch or CuPy).
"""

__version__ = "0.1.0"

from ._activations import gelu as gelu, si_glu as si_glu, sigmoid as sigmoid
from ._block import sfne_block as sfne_block, tile_channels as tile_channels
from ._conv import (adaptive_avg_pool as adaptive_avg_pool, depthwise_conv as depthwise_conv,
                    depthwise_conv_fft as depthwise_conv_fft)
from ._erf import erf_portable as erf_portable
from ._hyperzzw import (hyperzzw_2e as hyperzzw_2e, hyperzzw_global as hyperzzw_global,
                        local_conv as local_conv)
from ._interaction import (hyper_channel_interaction as hyper_channel_interaction,
                           hyper_interaction as hyper_interaction, rgu as rgu)
from ._linear import (bottleneck as bottleneck, channel_mixer as channel_mixer,
                      pointwise_linear as pointwise_linear)
from ._losses import (label_smoothing_cross_entropy as label_smoothing_cross_entropy,
                      slow_loss as slow_loss)
from ._network import (check_params_match as check_params_match,
                       terminator_forward as terminator_forward, terminator_loss as terminator_loss)
from ._slow_net import (coordinate_grid as coordinate_grid, magnet_g as magnet_g, magnet_gc as magnet_gc,
                        magnet_l as magnet_l)
from ._standardize import (batch_standardize as batch_standardize, g_ibs as g_ibs,
                           instance_standardize as instance_standardize)
from .reference._config import (PRESETS as PRESETS, TerminatorConfig as TerminatorConfig,
                                cifar10 as cifar10, cifar100 as cifar100, preset as preset,
                                sequence as sequence, tiny as tiny, tiny_1d as tiny_1d)
from .reference._tree import flatten as flatten, tree_map as tree_map, unflatten as unflatten
from .params import (convert as convert, init_params as init_params, load_params as load_params,
                     save_params as save_params, to_numpy as to_numpy)
from .regularizer import l2_partition as l2_partition, l2_regularizer as l2_regularizer

"""PyTorch front-end: ``nn.Module``s over the array-API core, Kar2/Kar3 and the L2 regulariser.

Every module with parameters stores them as a module tree that mirrors the shared parameter
format (:mod:`hyperzzw_core.params`): ``state_dict()`` keys are the flattened parameter keys, and
``Module.from_params(tree)`` / ``module.to_params()`` convert both ways. The forward passes call
the array-API core (:mod:`hyperzzw_core`) on torch tensors; gradients come from autograd. The code
is device-agnostic (parameters live where ``device=`` or ``.to()`` put them), accepts float32 and
float64, and traces under ``torch.compile`` (no data-dependent Python control flow, no host
synchronisation, no ``lru_cache`` on the forward path).

Example::

    from hyperzzw_core.adapters.torch import Kar3, Terminator
    from hyperzzw_core.reference import tiny

    model = Terminator(tiny(), seed=0)                 # = reference.init_params(tiny(), 0)
    opt = Kar3(model.parameters(), lr=1e-3)
    loss = model.loss(x, labels) + model.l2_regularizer(5e-5)
    loss.backward(); opt.step(); opt.zero_grad()

One module per concern; import the names from this package:

* ``_base``: :class:`ParamModule`, the parameter plumbing every module with parameters shares;
* ``layers``: :class:`PointwiseLinear`, :class:`ChannelMixer`, :class:`Bottleneck`, :class:`LocalConv`;
* ``slow_nets``: :class:`MAGNetG`, :class:`MAGNetGC`, :class:`MAGNetL`;
* ``interactions``: :class:`RGU`, :class:`HyperChannelInteraction`, :class:`HyperInteraction`,
  :class:`LocalBranch`;
* ``block``: :class:`SFNEBlock` and :class:`SlowKernelCache`;
* ``network``: :class:`Terminator` and :func:`global_batch_namespace` (``_distributed`` holds the
  namespace for multi-process training);
* ``ops``: the parameter-free operators as modules;
* ``regularizer``: :func:`l2_partition`, :func:`l2_regularizer`;
* ``optim``: :class:`Kar3`, :class:`Kar2`;
* ``conformance``: the conformance-kit protocol (``hyperzzw_autograd``, :func:`from_numpy`,
  :func:`to_numpy` and the core's operator functions), so that ``hyperzzw verify --impl
  hyperzzw_core.adapters.torch`` checks this package.
"""

from ._base import ParamModule
from ._base import Tree as Tree  # the parameter-tree alias of the signatures, not in __all__
from .block import SFNEBlock, SlowKernelCache
from .conformance import (
    adaptive_avg_pool,
    batch_standardize,
    bottleneck,
    channel_mixer,
    depthwise_conv,
    from_numpy,
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
    to_numpy,
)
from .conformance import hyperzzw_autograd as hyperzzw_autograd  # the kit's protocol, not in __all__
from .interactions import RGU, HyperChannelInteraction, HyperInteraction, LocalBranch
from .layers import Bottleneck, ChannelMixer, LocalConv, PointwiseLinear
from .network import Terminator, global_batch_namespace
from .ops import (
    GELU,
    GIBS,
    AdaptiveAvgPool,
    BatchStandardize,
    DepthwiseConv,
    HyperZZW2E,
    HyperZZWGlobal,
    InstanceStandardize,
    LabelSmoothingCrossEntropy,
    SiGLU,
    SlowLoss,
    TileChannels,
)
from .optim import Kar2, Kar3
from .regularizer import l2_partition, l2_regularizer
from .slow_nets import MAGNetG, MAGNetGC, MAGNetL

__all__ = [
    "GELU",
    "GIBS",
    "RGU",
    "AdaptiveAvgPool",
    "BatchStandardize",
    "Bottleneck",
    "ChannelMixer",
    "DepthwiseConv",
    "HyperChannelInteraction",
    "HyperInteraction",
    "HyperZZW2E",
    "HyperZZWGlobal",
    "InstanceStandardize",
    "Kar2",
    "Kar3",
    "LabelSmoothingCrossEntropy",
    "LocalBranch",
    "LocalConv",
    "MAGNetG",
    "MAGNetGC",
    "MAGNetL",
    "ParamModule",
    "PointwiseLinear",
    "SFNEBlock",
    "SiGLU",
    "SlowKernelCache",
    "SlowLoss",
    "Terminator",
    "TileChannels",
    "adaptive_avg_pool",
    "batch_standardize",
    "bottleneck",
    "channel_mixer",
    "depthwise_conv",
    "from_numpy",
    "g_ibs",
    "gelu",
    "global_batch_namespace",
    "hyper_channel_interaction",
    "hyper_interaction",
    "hyperzzw_2e",
    "hyperzzw_global",
    "instance_standardize",
    "l2_partition",
    "l2_regularizer",
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

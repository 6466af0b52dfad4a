"""hyperzzw_core.reference: the NumPy/SciPy ground truth of every HyperZ·Z·W / Terminator operator.

Float64 by default (float32 accepted and preserved), pure functions over arrays, parameters as
nested dicts of arrays. Each operator ``op`` has a hand-derived vector-Jacobian product ``op_vjp``
beside it, with the convention

    op_vjp(*op_positional_args, g, **op_keywords) -> cotangents of op's differentiable inputs

(a single array when there is one such input, a tuple otherwise; parameter cotangents have the
structure of the parameters). Section numbers ("§2.5") refer to ``docs/spec.md``.

Besides the operators, this namespace is the public API that the array-API core and the adapters
build on (they import nothing else from the reference): parameter keys (``BLOCK_KEYS``,
``RGU_KEYS``), the concatenation order (``concat_order``, ``local_roles``, ``LOCAL_ROLES``), the
slow-loss pairs (``slow_loss_pairs``, ``SLOW_LOSS_KINDS``), the MAGNet renormalisation constants,
the initialisers (``init_*``, ``kaiming_normal``, ``kaiming_uniform_linear``, ``conv_default``),
the tree helpers, the shared checks (``check_params``, ``check_global_grid``, ``match_param_keys``,
``odd_kernel_size``) and the configurations.

The reference imports nothing of the rest of ``hyperzzw_core`` (NumPy and SciPy only). It is
importable only as ``hyperzzw_core.reference``: a second copy (``import reference`` from the
checkout's root) would have its own ``TerminatorConfig`` class, which the core rejects.
"""

if __name__ != "hyperzzw_core.reference":
    raise ImportError(
        f"the reference is importable only as 'hyperzzw_core.reference', not as {__name__!r} "
        "(a second copy's TerminatorConfig is not the core's); install the package "
        "(pip install -e .) and use: from hyperzzw_core import reference"
    )

from ._activations import gelu, gelu_vjp, si_glu, si_glu_vjp, sigmoid
from ._block import (
    BLOCK_KEYS,
    LOCAL_ROLES,
    concat_order,
    local_roles,
    sfne_block,
    sfne_block_stop_gradient_values,
    sfne_block_vjp,
    tile_channels,
    tile_channels_vjp,
)
from ._checks import check_params, odd_kernel_size
from ._config import (
    PRESETS,
    TerminatorConfig,
    check_seed,
    cifar10,
    cifar100,
    digits,
    digits_1d,
    preset,
    scifar10,
    sequence,
    smnist,
    tiny,
    tiny_1d,
)
from ._conv import adaptive_avg_pool, adaptive_avg_pool_vjp, depthwise_conv, depthwise_conv_vjp
from ._gradcheck import GradCheckResult, check_vjp, numerical_gradient
from ._hyperzzw import (
    check_global_grid,
    hyperzzw_2e,
    hyperzzw_2e_vjp,
    hyperzzw_global,
    hyperzzw_global_vjp,
    local_conv,
    local_conv_vjp,
    square_grid,
    unbroadcast,
)
from ._interaction import (
    RGU_KEYS,
    hyper_channel_interaction,
    hyper_channel_interaction_vjp,
    hyper_interaction,
    hyper_interaction_vjp,
    rgu,
    rgu_vjp,
)
from ._linear import (
    bottleneck,
    bottleneck_vjp,
    channel_mixer,
    channel_mixer_vjp,
    pointwise_linear,
    pointwise_linear_vjp,
)
from ._losses import (
    SLOW_LOSS_KINDS,
    label_smoothing_cross_entropy,
    label_smoothing_cross_entropy_vjp,
    slow_loss,
    slow_loss_vjp,
)
from ._losses import _pairs as slow_loss_pairs
from ._network import _rgu_init as init_rgu
from ._network import (
    check_params_match,
    count_params,
    dropout_masks_for,
    init_block,
    init_params,
    match_param_keys,
    param_shapes,
    terminator_forward,
    terminator_loss,
    terminator_loss_and_grad,
    terminator_stop_gradient_values,
)
from ._random import conv_default, kaiming_normal, kaiming_uniform_linear
from ._slow_net import (
    RENORM_ALPHA,
    RENORM_BETA,
    RENORM_EPS,
    coordinate_grid,
    init_magnet_g,
    init_magnet_gc,
    init_magnet_l,
    magnet_g,
    magnet_g_vjp,
    magnet_gc,
    magnet_gc_vjp,
    magnet_l,
    magnet_l_stop_gradient_values,
    magnet_l_vjp,
)
from ._standardize import (
    batch_standardize,
    batch_standardize_vjp,
    g_ibs,
    g_ibs_vjp,
    instance_standardize,
    instance_standardize_vjp,
)
from ._tree import flatten, tree_map, unflatten

# Explicit, so that linters and type checkers see the re-exports: ruff's F401 flags an import
# missing here and F822 a name here that is not defined.
__all__ = [
    "BLOCK_KEYS",
    "LOCAL_ROLES",
    "PRESETS",
    "RENORM_ALPHA",
    "RENORM_BETA",
    "RENORM_EPS",
    "RGU_KEYS",
    "SLOW_LOSS_KINDS",
    "GradCheckResult",
    "TerminatorConfig",
    "adaptive_avg_pool",
    "adaptive_avg_pool_vjp",
    "batch_standardize",
    "batch_standardize_vjp",
    "bottleneck",
    "bottleneck_vjp",
    "channel_mixer",
    "channel_mixer_vjp",
    "check_global_grid",
    "check_params",
    "check_params_match",
    "check_seed",
    "check_vjp",
    "cifar10",
    "cifar100",
    "concat_order",
    "conv_default",
    "coordinate_grid",
    "count_params",
    "depthwise_conv",
    "depthwise_conv_vjp",
    "digits",
    "digits_1d",
    "dropout_masks_for",
    "flatten",
    "g_ibs",
    "g_ibs_vjp",
    "gelu",
    "gelu_vjp",
    "hyper_channel_interaction",
    "hyper_channel_interaction_vjp",
    "hyper_interaction",
    "hyper_interaction_vjp",
    "hyperzzw_2e",
    "hyperzzw_2e_vjp",
    "hyperzzw_global",
    "hyperzzw_global_vjp",
    "init_block",
    "init_magnet_g",
    "init_magnet_gc",
    "init_magnet_l",
    "init_params",
    "init_rgu",
    "instance_standardize",
    "instance_standardize_vjp",
    "kaiming_normal",
    "kaiming_uniform_linear",
    "label_smoothing_cross_entropy",
    "label_smoothing_cross_entropy_vjp",
    "local_conv",
    "local_conv_vjp",
    "local_roles",
    "magnet_g",
    "magnet_g_vjp",
    "magnet_gc",
    "magnet_gc_vjp",
    "magnet_l",
    "magnet_l_stop_gradient_values",
    "magnet_l_vjp",
    "match_param_keys",
    "numerical_gradient",
    "odd_kernel_size",
    "param_shapes",
    "pointwise_linear",
    "pointwise_linear_vjp",
    "preset",
    "rgu",
    "rgu_vjp",
    "scifar10",
    "sequence",
    "sfne_block",
    "sfne_block_stop_gradient_values",
    "sfne_block_vjp",
    "si_glu",
    "si_glu_vjp",
    "sigmoid",
    "slow_loss",
    "slow_loss_pairs",
    "slow_loss_vjp",
    "smnist",
    "square_grid",
    "terminator_forward",
    "terminator_loss",
    "terminator_loss_and_grad",
    "terminator_stop_gradient_values",
    "tile_channels",
    "tile_channels_vjp",
    "tiny",
    "tiny_1d",
    "tree_map",
    "unbroadcast",
    "unflatten",
]

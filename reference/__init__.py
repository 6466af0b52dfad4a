"""hyperzzw_core.reference: the NumPy/SciPy ground truth of every HyperZ·Z·W / Terminator operator.

Float64 by default (float32 accepted and preserved), pure functions over arrays, parameters as
nested dicts of arrays. Each operator ``op`` has a hand-derived vector-Jacobian product ``op_vjp``
beside it, with the convention

    op_vjp(*op_positional_args, g, **op_keywords) -> cotangents of op's differentiable inputs

(a single array when there is one such input, a tuple otherwise; parameter cotangents have the
structure of the parameters). Section numbers ("§2.5") refer to ``shared/spec/paper-notes.md``.
"""

from ._activations import gelu, gelu_vjp, si_glu, si_glu_vjp, sigmoid
from ._block import (LOCAL_ROLES, concat_order, sfne_block, sfne_block_stop_gradient_values,
                     sfne_block_vjp, tile_channels, tile_channels_vjp)
from ._config import (PRESETS, TerminatorConfig, cifar10, cifar100, digits, digits_1d, preset, scifar10,
                      sequence, smnist, tiny, tiny_1d)
from ._conv import adaptive_avg_pool, adaptive_avg_pool_vjp, depthwise_conv, depthwise_conv_vjp
from ._gradcheck import GradCheckResult, check_vjp, numerical_gradient
from ._hyperzzw import (hyperzzw_2e, hyperzzw_2e_vjp, hyperzzw_global, hyperzzw_global_vjp,
                        local_conv, local_conv_vjp, square_grid)
from ._interaction import (hyper_channel_interaction, hyper_channel_interaction_vjp,
                           hyper_interaction, hyper_interaction_vjp, rgu, rgu_vjp)
from ._linear import (bottleneck, bottleneck_vjp, channel_mixer, channel_mixer_vjp,
                      pointwise_linear, pointwise_linear_vjp)
from ._losses import (label_smoothing_cross_entropy, label_smoothing_cross_entropy_vjp, slow_loss,
                      slow_loss_vjp)
from ._network import (check_params_match, count_params, dropout_masks_for, init_block,
                       init_params, param_shapes, terminator_forward, terminator_loss,
                       terminator_loss_and_grad, terminator_stop_gradient_values)
from ._slow_net import (coordinate_grid, init_magnet_g, init_magnet_gc, init_magnet_l, magnet_g,
                        magnet_g_vjp, magnet_gc, magnet_gc_vjp, magnet_l,
                        magnet_l_stop_gradient_values, magnet_l_vjp)
from ._standardize import (batch_standardize, batch_standardize_vjp, g_ibs, g_ibs_vjp,
                           instance_standardize, instance_standardize_vjp)
from ._tree import flatten, tree_map, unflatten

__all__ = [name for name in dir() if not name.startswith("_")]

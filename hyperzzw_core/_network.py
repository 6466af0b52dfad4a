"""The whole Terminator network, 2D images and 1D pixel sequences (spec §1.2, §5 Q1).

Parameters: ``{"blocks": [block_0, …], "head": {"weight": (K, C_final), "bias": (K,)}}`` as in
``reference._network``; :class:`~hyperzzw_core.reference.TerminatorConfig` describes the network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend as B
from ._block import _forward as _block_forward
from ._block import _slow_kernels_many as _block_slow_kernels_many
from ._checks import as_float_array, ns, shape_of
from ._checks import check_finite as _check_finite
from ._losses import _slow_loss, label_smoothing_cross_entropy
from .reference import TerminatorConfig, dropout_masks_for, match_param_keys


def check_params_match(params: dict, config: TerminatorConfig) -> Any:
    """Raise a clear error if ``params`` does not have the structure and shapes of ``config``.

    Returns the common dtype of the parameters (of their library).
    """
    if not isinstance(config, TerminatorConfig):
        raise TypeError(f"config: expected a TerminatorConfig, got {type(config).__name__}")
    flat, want = match_param_keys(params, config)
    xp = ns(*((f"params['{k}']", v) for k, v in flat.items()))
    dtypes = []
    for k, shape in want.items():
        a = as_float_array(xp, f"params['{k}']", flat[k])
        if shape_of(a) != tuple(shape):
            raise ValueError(f"params['{k}']: expected shape {tuple(shape)}, got {shape_of(a)}")
        if a.dtype not in dtypes:
            dtypes.append(a.dtype)
    if len(dtypes) != 1:
        raise TypeError(f"params: all parameters must share one dtype, got {sorted(map(B.dtype_name, dtypes))}")
    return dtypes[0]


def _validate_input(params: dict, x: Any, config: TerminatorConfig, check_finite: bool) -> tuple[Any, Any]:
    dtype = check_params_match(params, config)
    xp = ns(("x", x), ("params['head']['weight']", params["head"]["weight"]))
    x = as_float_array(xp, "x", x, ndim=config.data_dim + 2, dtype=dtype)
    if shape_of(x)[1:] != tuple(config.input_shape):
        raise ValueError(
            f"x: expected (B, {', '.join(map(str, config.input_shape))}) for this config, got {shape_of(x)}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"x: expected a non-empty batch, got shape {shape_of(x)}")
    if check_finite:
        _check_finite(xp, "x", x)
    return xp, x


def _masks(
    xp: Any, config: TerminatorConfig, x: Any, train: bool, rng: np.random.Generator | None, dropout_masks: list | None
) -> list:
    if not train:
        return [None] * config.num_blocks
    if dropout_masks is not None:
        if len(dropout_masks) != config.num_blocks:
            raise ValueError(
                f"dropout_masks: expected {config.num_blocks} entries (None where p = 0), got {len(dropout_masks)}"
            )
        ns(("x", x), *((f"dropout_masks[{i}]", m) for i, m in enumerate(dropout_masks)))
        return [
            None if m is None else as_float_array(xp, f"dropout_masks[{i}]", m, ndim=2, dtype=x.dtype)
            for i, m in enumerate(dropout_masks)
        ]
    # Same draws as the reference (NumPy's generator, on the host), uploaded explicitly.
    host = dropout_masks_for(config, x.shape[0], rng, np.float64)
    return [None if m is None else xp.asarray(m, dtype=x.dtype, device=B.device(x)) for m in host]


def _earlier_outputs(config: TerminatorConfig) -> list[tuple[int | None, int | None]]:
    """Which earlier blocks' outputs each block takes as x_pre and x_pre_pre: (i − 2, i − 3) as
    ``num_concat_pre`` says, None where it takes none (spec §1.2)."""
    return [(i - 2 if n >= 1 else None, i - 3 if n >= 2 else None) for i, n in enumerate(config.num_concat_pre)]


def _slow_kernels(xp: Any, params: dict, config: TerminatorConfig) -> list[dict[str, Any]]:
    """Every block's input-independent slow-network outputs, structurally equal networks of
    different blocks batched (``_block._slow_kernels_many``), and its linears' input-independent
    parts for the x_pre and x_pre_pre the network gives it."""
    w = config.out_channels
    pre = [(None if a is None else w[a], None if b is None else w[b]) for a, b in _earlier_outputs(config)]
    return _block_slow_kernels_many(xp, params["blocks"], pre)


def _forward(
    xp: Any,
    params: dict,
    x: Any,
    config: TerminatorConfig,
    train: bool,
    masks: list,
    frozen: list | None = None,
    slow_kernels: list | None = None,
) -> tuple[Any, list[Any]]:
    """The network on validated inputs; ``slow_kernels`` as ``_slow_kernels`` returns them, if
    already computed (else each block computes its own)."""
    outs: list[Any] = []
    kernels: list[Any] = []
    if slow_kernels is None:  # every block's, the structurally equal slow networks batched
        slow_kernels = _slow_kernels(xp, params, config)
    h = x
    for i, (bp, (pre, pre_pre)) in enumerate(zip(params["blocks"], _earlier_outputs(config), strict=True)):
        x_pre = None if pre is None else outs[pre]
        x_pp = None if pre_pre is None else outs[pre_pre]
        h, k_g = _block_forward(
            xp,
            bp,
            h,
            x_pre,
            x_pp,
            config.ibs_groups,
            config.eps,
            config.grid,
            masks[i] if train else None,
            None if frozen is None else frozen[i],
            None if slow_kernels is None else slow_kernels[i],
        )
        outs.append(h)
        kernels.append(k_g)
    feats = xp.mean(h, axis=tuple(range(2, h.ndim)))
    head = params["head"]
    logits = feats @ xp.matrix_transpose(head["weight"]) + head["bias"]
    return logits, kernels


def terminator_forward(
    params: dict,
    x: Any,
    config: TerminatorConfig,
    train: bool = False,
    *,
    rng: np.random.Generator | None = None,
    dropout_masks: list | None = None,
    stop_gradient_values: list | None = None,
    check_finite: bool = True,
) -> tuple[Any, list[Any]]:
    """Run the network: returns ``(logits, global_kernels)`` (spec §1.2).

    out_i, K_i = SFNE_i(out_{i−1}, x_pre = out_{i−2}, x_pre_pre = out_{i−3}) as ``num_concat_pre``
    says; logits = head(GAP(out_last)). ``train`` turns on Dropout2d: masks (B, C_out) given as
    ``dropout_masks`` (arrays of x's library, None where p = 0), or drawn from the NumPy ``rng``
    exactly as the reference draws them and uploaded to x's device. Batch standardisation uses
    batch statistics in both modes (§5 Q5).

    Shapes: x (B, *config.input_shape) → logits (B, num_classes), global_kernels[i] (1, C_i, *S).
    """
    xp, x = _validate_input(params, x, config, check_finite)
    masks = _masks(xp, config, x, train, rng, dropout_masks)
    return _forward(xp, params, x, config, train, masks, stop_gradient_values)


def _slow(xp: Any, config: TerminatorConfig, kernels: list[Any]) -> Any:
    if config.slow_loss == "none":
        return xp.zeros((), dtype=kernels[0].dtype, device=B.device(kernels[0]))
    return config.slow_loss_weight * _slow_loss(xp, kernels, config.bottleneck_factors, config.slow_loss)


def terminator_loss(
    params: dict,
    x: Any,
    labels: Any,
    config: TerminatorConfig,
    train: bool = True,
    *,
    rng: np.random.Generator | None = None,
    dropout_masks: list | None = None,
    stop_gradient_values: list | None = None,
    check_finite: bool = True,
) -> Any:
    """Training loss: CE_ls(logits, labels) + w·slow_loss(K_0…K_{n−1}) (spec §2.12-2.13).

    The slow loss is only added in train mode, as in the author's code. Returns a 0-D array.
    ``labels`` (B,) integers of x's library. Other arguments as :func:`terminator_forward`.
    """
    xp, x = _validate_input(params, x, config, check_finite)
    masks = _masks(xp, config, x, train, rng, dropout_masks)
    logits, kernels = _forward(xp, params, x, config, train, masks, stop_gradient_values)
    loss = label_smoothing_cross_entropy(logits, labels, config.label_smoothing, check_finite=check_finite)
    return loss + _slow(xp, config, kernels) if train else loss

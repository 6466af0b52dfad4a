"""The whole Terminator network, 2D images and 1D pixel sequences (spec §1.2, §5 Q1).

Parameters: ``{"blocks": [block_0, …], "head": {"weight": (K, C_final), "bias": (K,)}}`` with the
block layout of :mod:`._block`. The author's unregistered ``fast_bias`` list is always zero and is
omitted (§5 Q6); B = 1 is handled (the author's ``squeeze`` dropped the batch axis, §1.2).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _random
from ._block import _backward as _block_backward
from ._block import _forward as _block_forward
from ._checks import as_float_array
from ._checks import check_finite as _check_finite
from ._config import TerminatorConfig, check_seed
from ._losses import label_smoothing_cross_entropy, label_smoothing_cross_entropy_vjp, slow_loss, slow_loss_vjp
from ._slow_net import init_magnet_g, init_magnet_gc, init_magnet_l
from ._tree import flatten, tree_map


def _rgu_init(rng: np.random.Generator, c: int, spatial: tuple[int, ...]) -> dict:
    p: dict[str, Any] = {n: _random.kaiming_uniform_linear(rng, c, c) for n in ("w_k", "w_v", "w_q", "w_y")}
    p["bias_p"] = np.zeros(spatial)
    return p


def init_block(rng: np.random.Generator, config: TerminatorConfig, i: int) -> dict:
    """Initialise block ``i`` of ``config`` (spec §2 initialisations, §3.1 sizes)."""
    cfg = config
    c, spatial, d = cfg.block_channels[i], cfg.spatial_shape, cfg.data_dim
    mag = {"omega_0": cfg.omega_0, "alpha": cfg.alpha, "beta": cfg.beta}
    p: dict = {}
    p["slow_g"] = init_magnet_g(rng, spatial, cfg.global_hidden, c, cfg.global_layers[i], **mag)
    p["rgu_fast"] = _rgu_init(rng, c, spatial)
    p["rgu_slow"] = _rgu_init(rng, c, spatial)
    p["mixer"] = _random.kaiming_normal(rng, c, c)
    p["hci"] = {"channel": init_magnet_gc(rng, c, cfg.channel_hidden, cfg.channel_layers, **mag)}
    p["hi"] = {
        "channel": init_magnet_gc(rng, c, cfg.hi_channel_hidden, cfg.hi_layers, **mag),
        "spatial": init_magnet_g(rng, spatial, cfg.hi_spatial_hidden, 1, cfg.hi_layers, **mag),
    }
    p["local"] = [
        {
            "slow_l": init_magnet_l(rng, k, d, cfg.local_hidden, c, cfg.local_layers, **mag),
            "mixer": _random.kaiming_normal(rng, c, c),
            "bias": np.zeros(()),
        }
        for k in cfg.local_kernel_sizes
    ]
    p["bottleneck"] = _random.kaiming_normal(rng, cfg.out_channels[i], cfg.num_branches[i] * c)
    p["bias"] = np.zeros(())
    return p


def init_params(config: TerminatorConfig, seed: int = 0, dtype: type | np.dtype = np.float64) -> dict:
    """Deterministic parameters: the same seed gives the same values on any machine.

    Draws come from ``np.random.default_rng(seed)`` in a fixed order (blocks, then the head) through
    inverse CDFs (see :mod:`._random`). Returns a nested dict of ``dtype`` arrays.
    """
    if not isinstance(config, TerminatorConfig):
        raise TypeError(f"config: expected a TerminatorConfig, got {type(config).__name__}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    rng = np.random.default_rng(check_seed("seed", seed))
    params = {
        "blocks": [init_block(rng, config, i) for i in range(config.num_blocks)],
        "head": _random.kaiming_normal(rng, config.num_classes, config.out_channels[-1]),
    }
    return tree_map(lambda a: np.asarray(a, dtype=dtype), params)


@lru_cache(maxsize=32)
def param_shapes(config: TerminatorConfig) -> dict[str, tuple[int, ...]]:
    """Flat ``{dotted.key: shape}`` of the parameters ``config`` expects."""
    return {k: v.shape for k, v in flatten(init_params(config, 0)).items()}


def count_params(params: dict) -> int:
    """Total number of scalar parameters in a parameter tree."""
    return int(sum(np.size(v) for v in flatten(params).values()))


def match_param_keys(params: dict, config: TerminatorConfig) -> tuple[dict, dict]:
    """The flat parameters of ``params`` and the flat shapes ``config`` wants, after checking that
    their keys are the same (a clear error naming the first missing and unknown keys otherwise).

    Pure Python over any array library: the core's ``check_params_match`` uses it too.
    """
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of parameters, got {type(params).__name__}")
    flat = flatten(params)
    want = param_shapes(config)
    missing = sorted(set(want) - set(flat))
    unknown = sorted(set(flat) - set(want))
    if missing or unknown:
        raise KeyError(
            f"params: do not match the config; missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unknown {unknown[:5]}{'…' if len(unknown) > 5 else ''}"
        )
    return flat, want


def check_params_match(params: dict, config: TerminatorConfig) -> np.dtype:
    """Raise a clear error if ``params`` does not have the structure and shapes of ``config``.

    Returns the common dtype of the parameters.
    """
    flat, want = match_param_keys(params, config)
    dtypes = set()
    for k, shape in want.items():
        a = as_float_array(f"params['{k}']", flat[k])
        if a.shape != shape:
            raise ValueError(f"params['{k}']: expected shape {shape}, got {a.shape}")
        dtypes.add(a.dtype)
    if len(dtypes) != 1:
        raise TypeError(f"params: all parameters must share one dtype, got {sorted(map(str, dtypes))}")
    return dtypes.pop()


def _validate_input(params: dict, x: object, config: TerminatorConfig, check_finite: bool) -> np.ndarray:
    dtype = check_params_match(params, config)
    x = as_float_array("x", x, ndim=config.data_dim + 2, dtype=dtype)
    if x.shape[1:] != config.input_shape:
        raise ValueError(f"x: expected (B, {', '.join(map(str, config.input_shape))}) for this config, got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"x: expected a non-empty batch, got shape {x.shape}")
    if check_finite:
        _check_finite("x", x)
    return x


def dropout_masks_for(
    config: TerminatorConfig, batch: int, rng: np.random.Generator | None, dtype: npt.DTypeLike
) -> list[np.ndarray | None]:
    """Dropout2d masks (B, C_out) per block: 0 with probability p, else 1/(1−p); None where p = 0."""
    masks: list[np.ndarray | None] = []
    for p, c in zip(config.dropout, config.out_channels, strict=True):
        if p == 0.0:
            masks.append(None)
            continue
        if rng is None:
            raise ValueError(
                "rng: this config has dropout in train mode; pass rng=np.random.default_rng(seed), "
                "explicit dropout_masks, or train=False"
            )
        masks.append(((rng.random((batch, c)) >= p) / (1.0 - p)).astype(dtype))
    return masks


def _forward(params, x, config: TerminatorConfig, train: bool, masks, frozen=None):
    outs: list[Any] = []
    kernels: list[Any] = []
    caches: list[Any] = []
    h = x
    for i, bp in enumerate(params["blocks"]):
        n_pre = config.num_concat_pre[i]
        x_pre = outs[i - 2] if n_pre >= 1 else None
        x_pp = outs[i - 3] if n_pre >= 2 else None
        h, k_g, cache = _block_forward(
            bp,
            h,
            x_pre,
            x_pp,
            config.ibs_groups,
            config.eps,
            config.grid,
            masks[i] if train else None,
            None if frozen is None else frozen[i],
        )
        outs.append(h)
        kernels.append(k_g)
        caches.append(cache)
    feats = h.mean(axis=tuple(range(2, h.ndim)))
    head = params["head"]
    logits = feats @ head["weight"].T + head["bias"]
    return logits, kernels, (outs, caches, feats)


def terminator_forward(
    params: dict,
    x: np.ndarray,
    config: TerminatorConfig,
    train: bool = False,
    *,
    rng: np.random.Generator | None = None,
    dropout_masks: list | None = None,
    stop_gradient_values: list | None = None,
    check_finite: bool = True,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run the network: returns ``(logits, global_kernels)`` (spec §1.2).

    out_i, K_i = SFNE_i(out_{i−1}, x_pre = out_{i−2}, x_pre_pre = out_{i−3}) as ``num_concat_pre``
    says; logits = head(GAP(out_last)). ``train`` turns on Dropout2d (masks drawn from ``rng`` or
    given as ``dropout_masks``); batch standardisation uses batch statistics in both modes (§5 Q5).

    Shapes: x (B, *config.input_shape) → logits (B, num_classes), global_kernels[i] (1, C_i, *S).
    ``stop_gradient_values`` (from :func:`terminator_stop_gradient_values`) freezes every MAGNet_L
    stop-gradient term, for finite-difference checks of :func:`terminator_loss_and_grad`.
    """
    x = _validate_input(params, x, config, check_finite)
    masks = _masks(config, x, train, rng, dropout_masks)
    logits, kernels, _ = _forward(params, x, config, train, masks, stop_gradient_values)
    return logits, kernels


def terminator_stop_gradient_values(
    params: dict,
    x: np.ndarray,
    config: TerminatorConfig,
    train: bool = True,
    *,
    rng: np.random.Generator | None = None,
    dropout_masks: list | None = None,
) -> list[dict]:
    """Every MAGNet_L stop-gradient value of the network at (params, x): one {role: [...]} per block.

    Passing them back as ``stop_gradient_values`` gives a function with the same value at this
    point whose exact gradient is what :func:`terminator_loss_and_grad` returns (spec §2.1).
    """
    x = _validate_input(params, x, config, False)
    masks = _masks(config, x, train, rng, dropout_masks)
    return [c["stop_values"] for c in _forward(params, x, config, train, masks)[2][1]]


def _masks(config, x, train, rng, dropout_masks):
    if not train:
        return [None] * config.num_blocks
    if dropout_masks is not None:
        if len(dropout_masks) != config.num_blocks:
            raise ValueError(
                f"dropout_masks: expected {config.num_blocks} entries (None where p = 0), got {len(dropout_masks)}"
            )
        return [
            None if m is None else as_float_array(f"dropout_masks[{i}]", m, ndim=2, dtype=x.dtype)
            for i, m in enumerate(dropout_masks)
        ]
    return dropout_masks_for(config, x.shape[0], rng, x.dtype)


def _slow(config: TerminatorConfig, kernels: list[np.ndarray]) -> np.ndarray:
    if config.slow_loss == "none":
        return np.zeros((), dtype=kernels[0].dtype)
    return config.slow_loss_weight * slow_loss(
        kernels, config.bottleneck_factors, kind=config.slow_loss, check_finite=False
    )


def terminator_loss(
    params: dict,
    x: np.ndarray,
    labels: np.ndarray,
    config: TerminatorConfig,
    train: bool = True,
    *,
    rng: np.random.Generator | None = None,
    dropout_masks: list | None = None,
    stop_gradient_values: list | None = None,
    check_finite: bool = True,
) -> np.ndarray:
    """Training loss: CE_ls(logits, labels) + w·slow_loss(K_0…K_{n−1}) (spec §2.12-2.13).

    The slow loss is only added in train mode, as in the author's code. Returns a 0-D array.
    """
    x = _validate_input(params, x, config, check_finite)
    masks = _masks(config, x, train, rng, dropout_masks)
    logits, kernels, _ = _forward(params, x, config, train, masks, stop_gradient_values)
    loss = label_smoothing_cross_entropy(logits, labels, config.label_smoothing, check_finite=False)
    return loss + _slow(config, kernels) if train else loss


def terminator_loss_and_grad(
    params: dict,
    x: np.ndarray,
    labels: np.ndarray,
    config: TerminatorConfig,
    train: bool = True,
    *,
    rng: np.random.Generator | None = None,
    dropout_masks: list | None = None,
    check_finite: bool = True,
) -> tuple[np.ndarray, dict]:
    """``terminator_loss`` and its gradient with respect to every parameter, by hand-written backprop.

    Returns ``(loss, grads)`` where ``grads`` has exactly the structure of ``params``. No automatic
    differentiation is involved: each step is one of the reference VJPs.
    """
    x = _validate_input(params, x, config, check_finite)
    masks = _masks(config, x, train, rng, dropout_masks)
    logits, kernels, (outs, caches, feats) = _forward(params, x, config, train, masks)
    eps_ls = config.label_smoothing
    loss = label_smoothing_cross_entropy(logits, labels, eps_ls, check_finite=False)
    g_logits = label_smoothing_cross_entropy_vjp(logits, labels, 1.0, eps_ls)
    g_kernels: list[np.ndarray | None]
    if train and config.slow_loss != "none":
        loss = loss + _slow(config, kernels)
        g_kernels = [
            config.slow_loss_weight * g
            for g in slow_loss_vjp(kernels, config.bottleneck_factors, 1.0, kind=config.slow_loss)
        ]
    else:
        g_kernels = [None] * len(kernels)
    head = params["head"]
    grads: dict = {"head": {"weight": g_logits.T @ feats, "bias": g_logits.sum(axis=0)}}
    last = outs[-1]
    n_sp = int(np.prod(last.shape[2:]))
    g_feats = g_logits @ head["weight"]
    g_outs = [np.zeros_like(o) for o in outs]
    g_outs[-1] += np.broadcast_to((g_feats / n_sp).reshape(g_feats.shape + (1,) * (last.ndim - 2)), last.shape)
    block_grads = [None] * len(outs)
    for i in reversed(range(len(outs))):
        gp, g_in, g_pre, g_pp = _block_backward(params["blocks"][i], caches[i], g_outs[i], g_kernels[i])
        block_grads[i] = gp
        if i > 0:
            g_outs[i - 1] += g_in
        if g_pre is not None:
            g_outs[i - 2] += g_pre
        if g_pp is not None:
            g_outs[i - 3] += g_pp
    grads = {"blocks": block_grads, "head": grads["head"]}
    return np.asarray(loss, dtype=x.dtype), grads

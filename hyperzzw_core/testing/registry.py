"""The operator registry: one ``OpSpec`` per operator, in the style of PyTorch's OpInfo.

Each spec names the operator (the same name in the reference, the core and the adapters), its
reference forward and VJP, seeded sample inputs (NumPy, float64 or float32), inputs that must be
rejected, and which positional arguments carry gradients. The differential tests, the golden
vectors and ``hyperzzw verify`` all iterate over ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import reference as R
from ..reference import tree_map


@dataclass(frozen=True)
class Sample:
    """One valid call: ``op(*args, **kwargs)``."""

    args: tuple
    kwargs: dict
    label: str


@dataclass(frozen=True)
class ErrorSample:
    """One invalid call that must raise ``exc_type`` with a message matching ``match`` (regex)."""

    args: tuple
    kwargs: dict
    exc_type: type[BaseException] | tuple[type[BaseException], ...]
    match: str
    label: str


@dataclass(frozen=True)
class OpSpec:
    """Everything the generic tests need to know about one operator."""

    name: str
    reference: Callable[..., Any]
    vjp: Callable[[tuple, dict, Any], tuple] | None
    """vjp(args, kwargs, cotangent) → cotangents of ``args[i]`` for i in ``differentiable``."""
    sample_inputs: Callable[[np.random.Generator, np.dtype], list[Sample]]
    error_inputs: Callable[[], list[ErrorSample]] = field(default=lambda: [])
    differentiable: tuple[int, ...] = (0,)
    section: str = ""
    """The docs/spec.md section that specifies the operator."""

    def samples(self, dtype: str | np.dtype = "float64", seed: int = 0) -> list[Sample]:
        """The sample inputs in ``dtype`` (each op's own seed stream, stable across runs)."""
        rng = np.random.default_rng([seed, sum(map(ord, self.name))])
        return self.sample_inputs(rng, np.dtype(dtype))


# -------------------------------------------------------------------------------- helpers


def _cast(tree: Any, dtype: np.dtype) -> Any:
    return tree_map(lambda a: np.asarray(a, dtype=dtype), tree)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _lin(rng: np.random.Generator, o: int, i: int, dtype: np.dtype) -> dict:
    # scale in float64, then cast: a NumPy float64 scalar would promote float32 arrays (NEP 50)
    return {
        "weight": (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype),
        "bias": (0.1 * rng.standard_normal((o,))).astype(dtype),
    }


def _as_tuple(g: Any) -> tuple:
    return g if isinstance(g, tuple) else (g,)


def _vjp_of(fn: Callable[..., Any], n_args: int | None = None) -> Callable[[tuple, dict, Any], tuple]:
    """Wrap a reference VJP ``fn(*args, g, **kwargs)``; ``n_args`` trims trailing None arguments."""

    def vjp(args: tuple, kwargs: dict, cot: Any) -> tuple:
        return _as_tuple(fn(*(args if n_args is None else args[:n_args]), cot, **kwargs))

    return vjp


_NAN_2D = np.full((1, 2, 3, 3), np.nan)


def _magnet_params(rng, sizes, hidden, c_out, layers, dtype):
    return _cast(R.init_magnet_g(rng, sizes, hidden, c_out, layers), dtype)


# -------------------------------------------------------------------------------- samples


def _s_magnet_g(rng, dt):
    return [
        Sample((_magnet_params(rng, (5, 5), 6, 3, 2, dt),), {}, "2d-5x5-L2"),
        Sample((_magnet_params(rng, (7,), 4, 2, 1, dt),), {}, "1d-7-L1"),
    ]


def _s_magnet_gc(rng, dt):
    return [Sample((_cast(R.init_magnet_gc(rng, 6, 5, 2), dt),), {}, "c6-L2")]


def _s_magnet_l(rng, dt):
    out = []
    for k, d, shape in ((3, 2, (2, 3, 6, 6)), (5, 1, (3, 2, 9)), (1, 2, (1, 2, 4, 4))):
        p = _cast(R.init_magnet_l(rng, k, d, 4, shape[1], 2), dt)
        out.append(Sample((p, _normal(rng, shape, dt)), {}, f"{d}d-k{k}"))
    return out


def _s_global(rng, dt):
    return [
        Sample(
            (_normal(rng, (2, 3, 5, 5), dt), 0.3 * _normal(rng, (1, 3, 5, 5), dt), _normal(rng, (2, 3, 5, 5), dt)),
            {},
            "2d",
        ),
        Sample(
            (_normal(rng, (2, 2, 16), dt), 0.3 * _normal(rng, (1, 2, 16), dt), _normal(rng, (2, 2, 16), dt)),
            {"grid": (4, 4)},
            "1d-grid4x4",
        ),
    ]


def _s_2e(rng, dt):
    return [
        Sample((_normal(rng, (3,), dt), _normal(rng, (2, 3), dt)), {}, "channel-broadcast"),
        Sample((_normal(rng, (1, 1, 4, 4), dt), _normal(rng, (2, 3, 4, 4), dt)), {}, "spatial-broadcast"),
    ]


def _s_dwconv(rng, dt):
    out = []
    for shape, k in (((2, 3, 7, 6), 3), ((1, 2, 5, 5), 9), ((2, 3, 11), 5), ((2, 2, 4, 4), 1)):
        c, d = shape[1], len(shape) - 2
        out.append(Sample((_normal(rng, shape, dt), _normal(rng, (c, 1) + (k,) * d, dt)), {}, f"{d}d-k{k}"))
    return out


def _s_local_conv(rng, dt):
    out = []
    for shape, k in (((3, 3, 6, 6), 5), ((2, 2, 10), 3)):
        c, d = shape[1], len(shape) - 2
        out.append(
            Sample(
                (_lin(rng, c, c, dt), _normal(rng, shape, dt), _normal(rng, (c, 1) + (k,) * d, dt)), {}, f"{d}d-k{k}"
            )
        )
    return out


def _rgu_params(rng, c, spatial, dt):
    p = {n: _lin(rng, c, c, dt) for n in ("w_k", "w_v", "w_q", "w_y")}
    p["bias_p"] = 0.1 * _normal(rng, spatial, dt)
    return p


def _s_rgu(rng, dt):
    return [
        Sample((_rgu_params(rng, 3, (5, 5), dt), _normal(rng, (2, 3, 5, 5), dt)), {}, "2d"),
        Sample((_rgu_params(rng, 2, (9,), dt), _normal(rng, (3, 2, 9), dt)), {}, "1d"),
    ]


def _s_unary(shapes):
    def make(rng, dt):
        return [Sample((_normal(rng, s, dt),), {}, "x".join(map(str, s))) for s in shapes]

    return make


def _s_hci(rng, dt):
    return [
        Sample(({"channel": _cast(R.init_magnet_gc(rng, 4, 5, 2), dt)}, _normal(rng, (2, 4, 5, 5), dt)), {}, "2d"),
        Sample(({"channel": _cast(R.init_magnet_gc(rng, 3, 5, 1), dt)}, _normal(rng, (2, 3, 8), dt)), {}, "1d"),
    ]


def _s_hi(rng, dt):
    out = []
    for shape in ((2, 3, 5, 5), (2, 4, 9)):
        p = {
            "channel": _cast(R.init_magnet_gc(rng, shape[1], 4, 2), dt),
            "spatial": _magnet_params(rng, shape[2:], 6, 1, 2, dt),
        }
        out.append(Sample((p, _normal(rng, shape, dt), _normal(rng, shape, dt)), {}, f"{len(shape) - 2}d"))
    return out


def _s_g_ibs(rng, dt):
    return [
        Sample((_normal(rng, (3, 6, 4, 4), dt),), {"groups": 3}, "2d-g3"),
        Sample((_normal(rng, (2, 12, 7), dt),), {"groups": 12}, "1d-g12"),
    ]


def _s_linear(c_in, c_out):
    def make(rng, dt):
        return [
            Sample((_lin(rng, c_out, c_in, dt), _normal(rng, (2, c_in, 4, 5), dt)), {}, "2d"),
            Sample((_lin(rng, c_out, c_in, dt), _normal(rng, (3, c_in, 7), dt)), {}, "1d"),
        ]

    return make


def _s_pool(rng, dt):
    return [
        Sample((_normal(rng, (2, 3, 10, 7), dt), (3, 4)), {}, "2d-down"),
        Sample((_normal(rng, (2, 2, 4), dt), (9,)), {}, "1d-up"),
    ]


def _s_tile(rng, dt):
    return [
        Sample((_normal(rng, (2, 3, 4, 4), dt), 4), {}, "2d-x4"),
        Sample((_normal(rng, (2, 2, 6), dt), 3), {}, "1d-x3"),
    ]


def block_sample(rng: np.random.Generator, dt: np.dtype, config: R.TerminatorConfig, i: int, label: str) -> Sample:
    """A sample of SFNE block ``i`` of ``config``: its init parameters and inputs (z, x_pre, x_pre_pre)."""
    p = _cast(R.init_block(rng, config, i), dt)
    spatial = config.spatial_shape
    z = _normal(rng, (2, config.block_channels[i]) + spatial, dt)
    n_pre = config.num_concat_pre[i]
    x_pre = _normal(rng, (2, config.out_channels[i - 2]) + spatial, dt) if n_pre >= 1 else None
    x_pp = _normal(rng, (2, config.out_channels[i - 3]) + spatial, dt) if n_pre >= 2 else None
    return Sample((p, z, x_pre, x_pp), {"groups": config.ibs_groups, "grid": config.grid}, label)


def _s_sfne(rng, dt):
    return [
        block_sample(rng, dt, R.tiny(), 3, "tiny-2d-block3-pre-prepre"),
        block_sample(rng, dt, R.tiny_1d(), 2, "tiny-1d-block2-pre"),
    ]


def _sfne_vjp(args, kwargs, cot):
    return R.sfne_block_vjp(*args, tuple(cot), **kwargs)


def _s_slow_loss(rng, dt):
    ks = [0.1 * _normal(rng, (1, c, 4, 4), dt) for c in (2, 4, 8, 16)]
    return [
        Sample((ks, (2, 2, 2, 2)), {"kind": "tiled"}, "tiled-4"),
        Sample((ks, (2, 2, 2, 2)), {"kind": "channel_sum"}, "channel-sum-4"),
    ]


def _slow_loss_vjp(args, kwargs, cot):
    return (R.slow_loss_vjp(args[0], args[1], cot, **kwargs),)


def _s_ce(rng, dt):
    return [
        Sample((_normal(rng, (5, 7), dt), rng.integers(0, 7, size=5)), {"eps": 0.09}, "b5-k7"),
        Sample((3.0 * _normal(rng, (1, 10), dt), np.array([9])), {"eps": 0.0}, "b1-no-smoothing"),
    ]


def _ce_vjp(args, kwargs, cot):
    return (R.label_smoothing_cross_entropy_vjp(args[0], args[1], cot, **kwargs),)


def _net_samples(rng, dt, with_labels: bool):
    out = []
    for cfg, label in ((R.tiny(), "tiny-2d"), (R.tiny_1d(), "tiny-1d")):
        p = _cast(R.init_params(cfg, int(rng.integers(0, 1000))), dt)
        x = _normal(rng, (3,) + cfg.input_shape, dt)
        if with_labels:
            out.append(Sample((p, x, rng.integers(0, cfg.num_classes, size=3), cfg), {}, label))
        else:
            out.append(Sample((p, x, cfg, True), {}, label + "-train"))
    return out


def _loss_vjp(args, kwargs, cot):
    _, grads = R.terminator_loss_and_grad(*args, **kwargs)
    return (tree_map(lambda a: a * cot, grads),)


# --------------------------------------------------------------------------------- errors


def _e_global():
    z = np.zeros((2, 3, 4, 5))
    return [
        ErrorSample((z, np.ones((1, 3, 4, 5)), z), {}, ValueError, "H == W", "non-square"),
        ErrorSample((np.zeros((2, 3, 16)),) * 3, {}, ValueError, "grid", "1d-without-grid"),
        ErrorSample((np.zeros((3, 4)),) * 3, {}, ValueError, "3-D or 4-D|shape", "rank-2"),
    ]


def _e_dwconv():
    y = np.zeros((1, 2, 5, 5))
    return [
        ErrorSample((y, np.ones((2, 1, 4, 4))), {}, ValueError, "odd", "even-kernel"),
        ErrorSample((y, np.ones((3, 1, 3, 3))), {}, ValueError, "k_l", "channel-mismatch"),
        ErrorSample((_NAN_2D, np.ones((2, 1, 3, 3))), {}, ValueError, "NaN|Inf", "nan-input"),
    ]


def _e_g_ibs():
    return [
        ErrorSample((np.zeros((2, 5, 3, 3)),), {"groups": 2}, ValueError, "divisible", "groups"),
        ErrorSample((_NAN_2D,), {"groups": 2}, ValueError, "NaN|Inf", "nan-input"),
    ]


def _e_standardize():
    return [
        ErrorSample((np.zeros((2, 3)),), {}, ValueError, "spatial|shape", "no-spatial-axis"),
        ErrorSample((np.zeros((2, 3, 4), dtype=np.int64),), {}, TypeError, "dtype|float", "int-input"),
        ErrorSample((_NAN_2D,), {}, ValueError, "NaN|Inf", "nan-input"),
    ]


def _e_ce():
    return [
        ErrorSample((np.zeros((3, 4)), np.array([0, 1, 4])), {}, ValueError, "labels", "label-out-of-range"),
        ErrorSample((np.zeros((3, 4)), np.array([0, 1])), {}, ValueError, "labels", "label-shape"),
    ]


# ------------------------------------------------------------------------------- registry

_SPECS = [
    OpSpec("magnet_g", R.magnet_g, _vjp_of(R.magnet_g_vjp), _s_magnet_g, section="§2.1"),
    OpSpec("magnet_gc", R.magnet_gc, _vjp_of(R.magnet_gc_vjp), _s_magnet_gc, section="§2.1"),
    OpSpec("magnet_l", R.magnet_l, _vjp_of(R.magnet_l_vjp), _s_magnet_l, differentiable=(0, 1), section="§2.1"),
    OpSpec(
        "hyperzzw_global",
        R.hyperzzw_global,
        _vjp_of(R.hyperzzw_global_vjp),
        _s_global,
        _e_global,
        differentiable=(0, 1, 2),
        section="§2.2",
    ),
    OpSpec("hyperzzw_2e", R.hyperzzw_2e, _vjp_of(R.hyperzzw_2e_vjp), _s_2e, differentiable=(0, 1), section="§2.4"),
    OpSpec(
        "depthwise_conv",
        R.depthwise_conv,
        _vjp_of(R.depthwise_conv_vjp),
        _s_dwconv,
        _e_dwconv,
        differentiable=(0, 1),
        section="§2.3",
    ),
    OpSpec(
        "local_conv", R.local_conv, _vjp_of(R.local_conv_vjp), _s_local_conv, differentiable=(0, 1, 2), section="§2.3"
    ),
    OpSpec("rgu", R.rgu, _vjp_of(R.rgu_vjp), _s_rgu, differentiable=(0, 1), section="§2.5"),
    OpSpec("si_glu", R.si_glu, _vjp_of(R.si_glu_vjp), _s_unary([(2, 3, 4, 4), (3, 2, 5)]), section="§2.6"),
    OpSpec(
        "hyper_channel_interaction",
        R.hyper_channel_interaction,
        _vjp_of(R.hyper_channel_interaction_vjp),
        _s_hci,
        differentiable=(0, 1),
        section="§2.7",
    ),
    OpSpec(
        "hyper_interaction",
        R.hyper_interaction,
        _vjp_of(R.hyper_interaction_vjp),
        _s_hi,
        differentiable=(0, 1, 2),
        section="§2.8",
    ),
    OpSpec(
        "instance_standardize",
        R.instance_standardize,
        _vjp_of(R.instance_standardize_vjp),
        _s_unary([(2, 3, 4, 5), (3, 2, 7)]),
        _e_standardize,
        section="§2.9",
    ),
    OpSpec(
        "batch_standardize",
        R.batch_standardize,
        _vjp_of(R.batch_standardize_vjp),
        _s_unary([(3, 2, 4, 4), (4, 3, 6)]),
        _e_standardize,
        section="§2.9",
    ),
    OpSpec("g_ibs", R.g_ibs, _vjp_of(R.g_ibs_vjp), _s_g_ibs, _e_g_ibs, section="§2.9"),
    OpSpec("gelu", R.gelu, _vjp_of(R.gelu_vjp), _s_unary([(2, 3, 4, 4), (5, 7)]), section="§2"),
    OpSpec(
        "pointwise_linear",
        R.pointwise_linear,
        _vjp_of(R.pointwise_linear_vjp),
        _s_linear(3, 4),
        differentiable=(0, 1),
        section="§2",
    ),
    OpSpec(
        "channel_mixer",
        R.channel_mixer,
        _vjp_of(R.channel_mixer_vjp),
        _s_linear(3, 3),
        differentiable=(0, 1),
        section="§2.10",
    ),
    OpSpec(
        "bottleneck", R.bottleneck, _vjp_of(R.bottleneck_vjp), _s_linear(6, 2), differentiable=(0, 1), section="§2.10"
    ),
    OpSpec("adaptive_avg_pool", R.adaptive_avg_pool, _vjp_of(R.adaptive_avg_pool_vjp), _s_pool, section="§2.1"),
    OpSpec("tile_channels", R.tile_channels, _vjp_of(R.tile_channels_vjp), _s_tile, section="§1.3"),
    OpSpec("sfne_block", R.sfne_block, _sfne_vjp, _s_sfne, differentiable=(0, 1, 2, 3), section="§1.3, §2.11"),
    OpSpec("slow_loss", R.slow_loss, _slow_loss_vjp, _s_slow_loss, section="§2.12"),
    OpSpec("label_smoothing_cross_entropy", R.label_smoothing_cross_entropy, _ce_vjp, _s_ce, _e_ce, section="§2.13"),
    OpSpec(
        "terminator_forward",
        R.terminator_forward,
        None,
        lambda rng, dt: _net_samples(rng, dt, False),
        differentiable=(),
        section="§1.2",
    ),
    OpSpec(
        "terminator_loss",
        R.terminator_loss,
        _loss_vjp,
        lambda rng, dt: _net_samples(rng, dt, True),
        section="§1.2, §2.12-2.13",
    ),
]

REGISTRY: dict[str, OpSpec] = {s.name: s for s in _SPECS}
"""Every registered operator, by name."""

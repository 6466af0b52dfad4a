"""The input families of the golden vectors: every parameter leaf exercised, every numerical regime.

The registry's samples (:mod:`hyperzzw_core.testing.registry`) are initialisations on benign inputs:
MAGNet's ``bias_p`` and other zero-initialised biases are exactly 0, MAGNet's linear biases exactly
1, activations roughly zero-mean and unit-scale. A port that ignores ``bias_p`` or computes a
one-pass variance passes on those. The goldens therefore add, per operator:

``trained``
    every parameter tree of a sample redrawn around its initialisation: each element moved by
    0.5–1.5 times the leaf's RMS (0.2 for an all-zero leaf), with a random sign, so that every leaf is
    nonzero and away from its init constant (a trained model's magnitudes).
``offset``
    activations at 1e3 ± 1 (large mean, small spread: one-pass variance and unshifted sums fail).
``large`` / ``tiny``
    activations scaled by 1e3 / 1e-3 (overflow of naive exp, eps placement in the standardisations).
``edge``
    B=1, C=1, k=1, non-divisible pooling, 1D and 2D shapes not in the registry.

Each family is a pure transformation of a registry sample or a fresh sample from its own seed
stream (``[seed, op, 1]``), so the goldens are reproducible from this module and the registry alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .. import reference as R
from ..reference import tree_map
from ..testing.registry import OpSpec, Sample, block_sample

OFFSET = 1e3
LARGE = 1e3
TINY = 1e-3


def _is_tree(a: Any) -> bool:
    return isinstance(a, dict)


def perturb_tree(tree: Any, rng: np.random.Generator) -> Any:
    """Move every element of every leaf by ±(0.5–1.5)·RMS(leaf) (0.2 for an all-zero leaf).

    The result has no element equal to its initial value and (almost surely) no zero element.
    """

    def leaf(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0
        step = 0.5 * rms if rms > 0 else 0.2
        delta = rng.choice([-1.0, 1.0], size=a.shape) * rng.uniform(0.5, 1.5, size=a.shape) * step
        return np.asarray(a + delta, dtype=a.dtype)

    return tree_map(leaf, tree)


def _map_args(sample: Sample, positions: tuple[int, ...], fn: Callable[[np.ndarray], np.ndarray], label: str) -> Sample:
    args = list(sample.args)
    for i in positions:
        if args[i] is not None:
            args[i] = fn(np.asarray(args[i]))
    return replace(sample, args=tuple(args), label=f"{sample.label}-{label}")


def trained(sample: Sample, rng: np.random.Generator) -> Sample:
    """Every parameter tree (dict argument) of ``sample`` perturbed by :func:`perturb_tree`."""
    args = tuple(perturb_tree(a, rng) if _is_tree(a) else a for a in sample.args)
    return replace(sample, args=args, label=f"{sample.label}-trained")


def offset(sample: Sample, positions: tuple[int, ...]) -> Sample:
    """Activations at ``OFFSET`` ± their unit spread."""
    return _map_args(sample, positions, lambda x: (x + OFFSET).astype(x.dtype), "offset1e3")


def scaled(sample: Sample, positions: tuple[int, ...], factor: float, label: str) -> Sample:
    return _map_args(sample, positions, lambda x: (x * factor).astype(x.dtype), label)


def _n(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape)


# ------------------------------------------------------------------------------ per operator
# Each returns the extra samples of one operator from its registry samples ``base`` and an rng.


def _params_only(base, rng):
    return [trained(s, rng) for s in base]


def _params_and(positions: tuple[int, ...], first_only: bool = False):
    def make(base, rng):
        chosen = base[:1] if first_only else base
        return [trained(s, rng) for s in chosen] + [offset(trained(base[0], rng), positions)]

    return make


def _activations(positions: tuple[int, ...], *, magnitudes: bool = True, edge=None):
    def make(base, rng):
        out = [offset(base[0], positions)]
        if magnitudes:
            out += [scaled(base[0], positions, LARGE, "large1e3"), scaled(base[-1], positions, TINY, "tiny1e-3")]
        return out + (edge(rng) if edge else [])

    return make


def _edge_unary(shapes, kwargs=None):
    def make(rng):
        return [Sample((_n(rng, s),), dict(kwargs or {}), "edge-" + "x".join(map(str, s))) for s in shapes]

    return make


def _edge_global(rng):
    # sequences whose length is not a square: zero padding inside the product only (docs/spec-1d.md),
    # on the smallest grid and on a larger one
    return [
        Sample((_n(rng, (1, 1, 3, 3)), 0.3 * _n(rng, (1, 1, 3, 3)), _n(rng, (1, 1, 3, 3))), {}, "edge-b1-c1"),
        Sample(
            (_n(rng, (2, 2, 23)), 0.3 * _n(rng, (1, 2, 23)), _n(rng, (2, 2, 23))),
            {"grid": (5, 5)},
            "edge-1d-L23-grid5x5",
        ),
        Sample(
            (_n(rng, (1, 3, 7)), 0.3 * _n(rng, (1, 3, 7)), _n(rng, (1, 3, 7))), {"grid": (4, 4)}, "edge-1d-L7-grid4x4"
        ),
    ]


#: a sequence length that is not a square (5×5 grid, two padded positions): the 1D design's hard case
SEQUENCE_L23 = R.tiny_1d(length=23)


def _block_l23(rng):
    sample = block_sample(rng, np.dtype(np.float64), SEQUENCE_L23, 3, "edge-tiny-1d-L23-block3")
    return replace(sample, args=(perturb_tree(sample.args[0], rng), *sample.args[1:]))


def _edge_2e(rng):
    return [Sample((_n(rng, (1,)), _n(rng, (1, 1, 3))), {}, "edge-b1-c1-1d")]


def _edge_dwconv(rng):
    return [
        Sample((_n(rng, (1, 1, 9)), _n(rng, (1, 1, 1))), {}, "edge-b1-c1-1d-k1"),
        Sample((_n(rng, (1, 2, 3, 3)), _n(rng, (2, 1, 5, 5))), {}, "edge-kernel-larger-than-input"),
    ]


def _edge_pool(rng):
    return [
        Sample((_n(rng, (1, 1, 11)), (3,)), {}, "edge-1d-b1-c1-11to3"),
        Sample((_n(rng, (2, 2, 5, 9)), (2, 4)), {}, "edge-2d-5x9to2x4"),
        Sample((_n(rng, (1, 3, 3, 4)), (5, 7)), {}, "edge-2d-up-3x4to5x7"),
        Sample((_n(rng, (2, 2, 6, 6)), (1, 1)), {}, "edge-2d-to-1x1"),
    ]


def _edge_tile(rng):
    return [Sample((_n(rng, (1, 1, 3, 3)), 5), {}, "edge-c1-x5"), Sample((_n(rng, (2, 3, 4)), 1), {}, "edge-x1")]


def _edge_g_ibs(rng):
    return [
        Sample((_n(rng, (1, 4, 3, 3)),), {"groups": 1}, "edge-b1-g1"),
        Sample((_n(rng, (2, 1, 9)),), {"groups": 1}, "edge-c1-1d"),
    ]


def _edge_linear(c_in, c_out):
    def make(rng):
        p = {"weight": _n(rng, (c_out, c_in)) / np.sqrt(c_in), "bias": 0.1 * _n(rng, (c_out,))}
        return [Sample((p, _n(rng, (1, c_in, 1, 1))), {}, "edge-b1-1x1")]

    return make


def _ce(base, rng):
    logits = OFFSET + 50.0 * _n(rng, (4, 6))
    return [
        Sample((logits, rng.integers(0, 6, size=4)), {"eps": 0.1}, "large-logits-1e3"),
        Sample((200.0 * _n(rng, (3, 5)), np.array([0, 4, 2])), {"eps": 0.0}, "large-logits-spread200"),
        Sample((_n(rng, (1, 2)), np.array([1])), {"eps": 0.2}, "edge-b1-k2"),
    ]


def _slow_loss(base, rng):
    kernels, factors = base[0].args
    return [Sample(([LARGE * k for k in kernels], factors), dict(base[0].kwargs), f"{base[0].label}-large1e3")]


def _network_forward(base, rng):
    # trained parameters on the 2d net and offset inputs on the 1d net (the network is the costliest),
    # and the 1d net on a non-square length
    cfg = SEQUENCE_L23
    l23 = Sample(
        (perturb_tree(R.init_params(cfg, 0), rng), _n(rng, (3,) + cfg.input_shape), cfg, True),
        {},
        "edge-tiny-1d-L23-train",
    )
    return [trained(base[0], rng), offset(trained(base[1], rng), (1,)), l23]


def _network_loss(base, rng):
    # the loss and its gradient repeat the forward: trained parameters on the 2d net and the L = 23 net
    cfg = SEQUENCE_L23
    l23 = Sample(
        (
            perturb_tree(R.init_params(cfg, 0), rng),
            _n(rng, (3,) + cfg.input_shape),
            rng.integers(0, cfg.num_classes, size=3),
            cfg,
        ),
        {},
        "edge-tiny-1d-L23",
    )
    return [trained(base[0], rng), l23]


_FAMILIES: dict[str, Callable[[list[Sample], np.random.Generator], list[Sample]]] = {
    "magnet_g": _params_only,
    "magnet_gc": _params_only,
    "magnet_l": _params_and((1,)),
    "hyperzzw_global": _activations((0, 2), edge=_edge_global),
    "hyperzzw_2e": _activations((0, 1), magnitudes=True, edge=_edge_2e),
    "depthwise_conv": _activations((0,), magnitudes=False, edge=_edge_dwconv),
    "local_conv": _params_and((1,), first_only=True),
    "rgu": _params_and((1,)),
    "si_glu": _activations((0,), edge=_edge_unary([(1, 1, 2)])),
    "hyper_channel_interaction": _params_and((1,), first_only=True),
    "hyper_interaction": _params_and((1, 2), first_only=True),
    "instance_standardize": _activations((0,), edge=_edge_unary([(1, 1, 2, 3), (2, 1, 5)])),
    "batch_standardize": _activations((0,), edge=_edge_unary([(1, 2, 3, 3), (2, 1, 4)])),
    "g_ibs": _activations((0,), edge=_edge_g_ibs),
    "gelu": _activations((0,), edge=_edge_unary([(1, 1, 1)])),
    "pointwise_linear": lambda b, r: _params_and((1,), True)(b, r) + _edge_linear(3, 4)(r),
    "channel_mixer": _params_and((1,), first_only=True),
    "bottleneck": _params_and((1,), first_only=True),
    "adaptive_avg_pool": _activations((0,), magnitudes=False, edge=_edge_pool),
    "tile_channels": lambda b, r: _edge_tile(r),
    "sfne_block": lambda b, r: [trained(b[0], r), offset(trained(b[1], r), (1, 2)), _block_l23(r)],
    "slow_loss": _slow_loss,
    "label_smoothing_cross_entropy": _ce,
    "terminator_forward": _network_forward,
    "terminator_loss": _network_loss,
}


def golden_samples(spec: OpSpec, seed: int = 0) -> list[Sample]:
    """The registry's samples of ``spec`` (float64) followed by its hard families."""
    base = spec.samples("float64", seed=seed)
    rng = np.random.default_rng([seed, sum(map(ord, spec.name)), 1])
    extra = _FAMILIES.get(spec.name, lambda b, r: [])(base, rng)
    labels = [s.label for s in base + extra]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{spec.name}: duplicate sample labels {labels}")
    return base + extra

"""Input validation of the reference: clear exceptions that name the argument, the expected and the
actual shape or dtype (``reference/_checks.py``: "every public operator validates at its boundary").

Wrong ranks, H != W and grids for the global product (spec §5 Q1, Q8), G-IBS groups, even
kernel sizes, NaN/Inf (``check_finite``), dtype mismatches, integer inputs, torch tensors, unknown and
invalid ``TerminatorConfig`` fields, and parameters that do not match the config.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hyperzzw_core import reference as R
from hyperzzw_core.reference import TerminatorConfig


def _raises(exc, fn, *fragments):
    """Call ``fn``; it must raise ``exc`` whose message contains every fragment."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def _lin(o, i, dtype=np.float64):
    rng = np.random.default_rng(o * 10 + i)
    return {"weight": rng.standard_normal((o, i)).astype(dtype), "bias": rng.standard_normal(o).astype(dtype)}


@pytest.fixture(scope="module")
def block3():
    return R.init_params(R.tiny(), 0)["blocks"][3]


@pytest.fixture(scope="module")
def tiny_params():
    return R.init_params(R.tiny(), 0)


# ------------------------------------------------------------------------------------ rank


@pytest.mark.parametrize(
    "case",
    [
        (
            "depthwise_conv y 2-D",
            lambda: R.depthwise_conv(np.zeros((2, 5)), np.zeros((2, 1, 3))),
            ValueError,
            ["y", "3 or 4-D", "(2, 5)"],
        ),
        (
            "depthwise_conv y 5-D",
            lambda: R.depthwise_conv(np.zeros((1, 2, 3, 3, 3)), np.zeros((2, 1, 3, 3, 3))),
            ValueError,
            ["y", "3 or 4-D", "(1, 2, 3, 3, 3)"],
        ),
        (
            "depthwise_conv k_l rank",
            lambda: R.depthwise_conv(np.zeros((1, 2, 5, 5)), np.zeros((2, 1, 3))),
            ValueError,
            ["k_l", "4-D", "(2, 1, 3)"],
        ),
        (
            "depthwise_conv k_l channels",
            lambda: R.depthwise_conv(np.zeros((1, 2, 5)), np.zeros((3, 1, 3))),
            ValueError,
            ["k_l", "(2, 1, *)", "(3, 1, 3)"],
        ),
        ("instance_standardize 2-D", lambda: R.instance_standardize(np.zeros((2, 6))), ValueError, ["x", "(2, 6)"]),
        ("batch_standardize 1-D", lambda: R.batch_standardize(np.zeros(6)), ValueError, ["x", "(6,)"]),
        ("g_ibs 2-D", lambda: R.g_ibs(np.zeros((2, 12))), ValueError, ["x", "(2, 12)"]),
        (
            "hyperzzw_global 5-D",
            lambda: R.hyperzzw_global(np.zeros((1, 2, 2, 4, 4)), np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4))),
            ValueError,
            ["z", "3 or 4-D", "(1, 2, 2, 4, 4)"],
        ),
        (
            "hyperzzw_global y shape",
            lambda: R.hyperzzw_global(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 3, 3))),
            ValueError,
            ["y", "(1, 2, 4, 4)", "(1, 2, 3, 3)"],
        ),
        (
            "hyperzzw_global k_g broadcast",
            lambda: R.hyperzzw_global(np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 4, 4)), np.zeros((1, 2, 4, 4))),
            ValueError,
            ["k_g", "(1, 3, 4, 4)", "(1, 2, 4, 4)"],
        ),
        ("hyperzzw_2e broadcast", lambda: R.hyperzzw_2e(np.zeros(3), np.zeros(4)), ValueError, ["k", "(3,)", "(4,)"]),
        (
            "pointwise_linear weight rank",
            lambda: R.pointwise_linear({"weight": np.zeros((3, 2, 1)), "bias": np.zeros(3)}, np.zeros((1, 2, 5))),
            ValueError,
            ["params['weight']", "2-D", "(3, 2, 1)"],
        ),
        (
            "pointwise_linear in channels",
            lambda: R.pointwise_linear(_lin(3, 2), np.zeros((1, 4, 5))),
            ValueError,
            ["params['weight']", "(*, 4)", "(3, 2)"],
        ),
        (
            "pointwise_linear bias",
            lambda: R.pointwise_linear({"weight": np.zeros((3, 2)), "bias": np.zeros(2)}, np.zeros((1, 2, 5))),
            ValueError,
            ["params['bias']", "(3)", "(2,)"],
        ),
        ("rgu z 2-D", lambda: R.rgu({}, np.zeros((2, 3))), ValueError, ["z", "3 or 4-D", "(2, 3)"]),
        (
            "adaptive_avg_pool sizes",
            lambda: R.adaptive_avg_pool(np.zeros((1, 2, 5)), (2, 2)),
            ValueError,
            ["size", "(1, 2, 5)", "(2, 2)"],
        ),
        (
            "label_smoothing logits 1-D",
            lambda: R.label_smoothing_cross_entropy(np.zeros(3), np.array([0])),
            ValueError,
            ["logits", "2-D", "(3,)"],
        ),
        (
            "labels shape",
            lambda: R.label_smoothing_cross_entropy(np.zeros((2, 3)), np.array([0])),
            ValueError,
            ["labels", "(2,)", "(1,)"],
        ),
        (
            "labels range",
            lambda: R.label_smoothing_cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
            ValueError,
            ["labels", "[0, 3)"],
        ),
        (
            "slow_loss kernel batch",
            lambda: R.slow_loss([np.zeros((2, 2, 3, 3)), np.zeros((1, 4, 3, 3))], [2]),
            ValueError,
            ["kernels[0]", "(1, C, *S)", "(2, 2, 3, 3)"],
        ),
        (
            "slow_loss widths",
            lambda: R.slow_loss([np.zeros((1, 2, 3, 3)), np.zeros((1, 3, 3, 3))], [2]),
            ValueError,
            ["kernels[1]", "3 channels", "2·2"],
        ),
    ],
    ids=lambda c: c[0],
)
def test_wrong_shapes_name_argument_expected_and_actual(case):
    _, fn, exc, fragments = case
    _raises(exc, fn, *fragments)


# ------------------------------------------------------------- global product: H == W and grid


def test_hyperzzw_global_needs_square_images():
    z = np.zeros((1, 2, 4, 5))
    _raises(ValueError, lambda: R.hyperzzw_global(z, z, z), "z", "H == W", "(1, 2, 4, 5)", "H=4", "W=5")


def test_hyperzzw_global_1d_needs_grid():
    z = np.zeros((1, 2, 16))
    _raises(ValueError, lambda: R.hyperzzw_global(z, z, z), "grid", "(1, 2, 16)", "h·w ≥ L", "square_grid(16) = (4, 4)")


@pytest.mark.parametrize("grid", [(2, 8), (3, 3), (4, 5), (16, 1)])
def test_hyperzzw_global_bad_grid(grid):
    z = np.zeros((1, 2, 16))
    _raises(ValueError, lambda: R.hyperzzw_global(z, z, z, grid=grid), "grid", "L = 16", str(tuple(grid)))


def test_hyperzzw_global_grid_with_2d_input():
    z = np.zeros((1, 2, 4, 4))
    _raises(ValueError, lambda: R.hyperzzw_global(z, z, z, grid=(2, 2)), "grid", "1-D", "(1, 2, 4, 4)")


def test_sfne_block_1d_needs_grid():
    params = R.init_params(R.tiny_1d(), 0)["blocks"][0]
    _raises(ValueError, lambda: R.sfne_block(params, np.zeros((2, 1, 64)), groups=2), "grid", "(2, 1, 64)")


# ------------------------------------------------------------------------------ G-IBS groups


@pytest.mark.parametrize("channels, groups", [(5, 2), (12, 5), (6, 4)])
def test_g_ibs_channels_not_divisible(channels, groups):
    x = np.zeros((2, channels, 3, 3))
    _raises(ValueError, lambda: R.g_ibs(x, groups), "x", f"groups={groups}", f"{channels} channels", str(x.shape))


@pytest.mark.parametrize("groups", [0, -2, 2.0])
def test_g_ibs_bad_groups(groups):
    _raises(ValueError, lambda: R.g_ibs(np.zeros((2, 4, 3, 3)), groups), "groups", repr(groups))


def test_sfne_block_groups_must_divide_output_channels(block3):
    z = np.zeros((2, 8, 8, 8))
    _raises(
        ValueError,
        lambda: R.sfne_block(block3, z, np.ones((2, 4, 8, 8)), np.ones((2, 2, 8, 8)), groups=3),
        "groups=3",
        "16 channels",
    )


# ----------------------------------------------------------------------------- kernel sizes


@pytest.mark.parametrize("shape", [(2, 1, 4), (2, 1, 2, 2), (2, 1, 3, 4), (2, 1, 0)])
def test_even_kernel_sizes_rejected(shape):
    y = np.zeros((1, 2) + (6,) * (len(shape) - 2))
    k = np.zeros(shape)
    even = next(s for s in shape[2:] if s % 2 == 0)
    _raises(ValueError, lambda: R.depthwise_conv(y, k), "k_l", "odd", str(even))


def test_local_conv_even_kernel():
    _raises(
        ValueError, lambda: R.local_conv(_lin(2, 2), np.zeros((1, 2, 5, 5)), np.zeros((2, 1, 4, 4))), "k_l", "odd", "4"
    )


# ------------------------------------------------------------------------------- NaN and Inf


def _finite_cases(tiny_params, block3):
    rng = np.random.default_rng(0)
    x4 = rng.standard_normal((2, 3, 4, 4))
    k3 = rng.standard_normal((3, 1, 3, 3))
    mlp = {"weight": np.eye(3), "bias": np.zeros(3)}
    rgu_p = {n: _lin(3, 3) for n in ("w_k", "w_v", "w_q", "w_y")}
    rgu_p["bias_p"] = np.zeros((4, 4))
    hci_p = {"channel": R.init_magnet_gc(rng, 3, 4, 1)}
    hi_p = {"channel": R.init_magnet_gc(rng, 3, 4, 1), "spatial": R.init_magnet_g(rng, (4, 4), 4, 1, 1)}
    ml = R.init_magnet_l(rng, 3, 2, 4, 3, 1)
    kernels = [rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 2, 4, 4))]
    logits = rng.standard_normal((2, 5))
    t8 = rng.standard_normal((2, 1, 8, 8))
    z8 = rng.standard_normal((2, 8, 8, 8))
    # (name, argument name, function of (position, array) → call, inputs)
    return [
        ("gelu", "x", lambda a, **kw: R.gelu(a, **kw), [x4]),
        ("si_glu", "g1", lambda a, **kw: R.si_glu(a, **kw), [x4]),
        ("depthwise_conv y", "y", lambda a, b, **kw: R.depthwise_conv(a, b, **kw), [x4, k3]),
        ("depthwise_conv k_l", "k_l", lambda b, a, **kw: R.depthwise_conv(a, b, **kw), [k3, x4]),
        ("instance_standardize", "x", lambda a, **kw: R.instance_standardize(a, **kw), [x4]),
        ("batch_standardize", "x", lambda a, **kw: R.batch_standardize(a, **kw), [x4]),
        ("g_ibs", "x", lambda a, **kw: R.g_ibs(a, 3, **kw), [x4]),
        ("hyperzzw_2e k", "k", lambda a, b, **kw: R.hyperzzw_2e(a, b, **kw), [x4, x4]),
        ("hyperzzw_2e z", "z", lambda b, a, **kw: R.hyperzzw_2e(a, b, **kw), [x4, x4]),
        ("hyperzzw_global z", "z", lambda a, b, **kw: R.hyperzzw_global(a, b, b, **kw), [x4, x4]),
        ("hyperzzw_global k_g", "k_g", lambda b, a, **kw: R.hyperzzw_global(a, b, a, **kw), [x4, x4]),
        ("hyperzzw_global y", "y", lambda c, a, **kw: R.hyperzzw_global(a, a, c, **kw), [x4, x4]),
        ("local_conv", "y", lambda a, **kw: R.local_conv(mlp, a, k3, **kw), [x4]),
        ("pointwise_linear", "x", lambda a, **kw: R.pointwise_linear(mlp, a, **kw), [x4]),
        ("channel_mixer", "x", lambda a, **kw: R.channel_mixer(mlp, a, **kw), [x4]),
        ("bottleneck", "x", lambda a, **kw: R.bottleneck(mlp, a, **kw), [x4]),
        ("rgu", "z", lambda a, **kw: R.rgu(rgu_p, a, **kw), [x4]),
        ("hyper_channel_interaction", "z", lambda a, **kw: R.hyper_channel_interaction(hci_p, a, **kw), [x4]),
        ("hyper_interaction y", "y", lambda a, b, **kw: R.hyper_interaction(hi_p, a, b, **kw), [x4, x4]),
        ("hyper_interaction x", "x", lambda b, a, **kw: R.hyper_interaction(hi_p, a, b, **kw), [x4, x4]),
        ("magnet_l", "x", lambda a, **kw: R.magnet_l(ml, a, **kw), [x4]),
        ("slow_loss", "kernels[1]", lambda a, b, **kw: R.slow_loss([b, a], [2], **kw), [kernels[1], kernels[0]]),
        (
            "label_smoothing_cross_entropy",
            "logits",
            lambda a, **kw: R.label_smoothing_cross_entropy(a, np.array([0, 4]), **kw),
            [logits],
        ),
        (
            "sfne_block",
            "z",
            lambda a, **kw: R.sfne_block(block3, a, np.ones((2, 4, 8, 8)), np.ones((2, 2, 8, 8)), groups=2, **kw),
            [z8],
        ),
        (
            "sfne_block x_pre",
            "x_pre",
            lambda a, **kw: R.sfne_block(block3, z8, a, np.ones((2, 2, 8, 8)), groups=2, **kw),
            [rng.standard_normal((2, 4, 8, 8))],
        ),
        ("terminator_forward", "x", lambda a, **kw: R.terminator_forward(tiny_params, a, R.tiny(), **kw), [t8]),
    ]


_FINITE_NAMES = [
    "gelu",
    "si_glu",
    "depthwise_conv y",
    "depthwise_conv k_l",
    "instance_standardize",
    "batch_standardize",
    "g_ibs",
    "hyperzzw_2e k",
    "hyperzzw_2e z",
    "hyperzzw_global z",
    "hyperzzw_global k_g",
    "hyperzzw_global y",
    "local_conv",
    "pointwise_linear",
    "channel_mixer",
    "bottleneck",
    "rgu",
    "hyper_channel_interaction",
    "hyper_interaction y",
    "hyper_interaction x",
    "magnet_l",
    "slow_loss",
    "label_smoothing_cross_entropy",
    "sfne_block",
    "sfne_block x_pre",
    "terminator_forward",
]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", _FINITE_NAMES)
def test_non_finite_inputs_raise_and_check_finite_false_passes(name, bad, tiny_params, block3):
    cases = {c[0]: c for c in _finite_cases(tiny_params, block3)}
    _, arg, fn, inputs = cases[name]
    first = inputs[0].copy()
    first.flat[first.size // 2] = bad
    args = [first] + list(inputs[1:])
    msg = _raises(ValueError, lambda: fn(*args), arg)
    assert "NaN" in msg or "Inf" in msg
    idx = tuple(int(i) for i in np.unravel_index(first.size // 2, first.shape))
    assert str(idx) in msg
    with np.errstate(all="ignore"):
        out = fn(*args, check_finite=False)
    out = out[0] if isinstance(out, tuple) else out
    assert not np.all(np.isfinite(out))  # the bad value propagates instead of being checked


# ------------------------------------------------------------------------------ dtype checks


@pytest.mark.parametrize(
    "case",
    [
        ("depthwise_conv", "k_l", lambda a, b: R.depthwise_conv(a, b), [(1, 2, 5), (2, 1, 3)]),
        ("hyperzzw_global k_g", "k_g", lambda a, b: R.hyperzzw_global(a, b, a), [(1, 2, 4, 4), (1, 2, 4, 4)]),
        ("hyperzzw_global y", "y", lambda a, b: R.hyperzzw_global(a, a, b), [(1, 2, 4, 4), (1, 2, 4, 4)]),
        ("hyperzzw_2e", "z", lambda a, b: R.hyperzzw_2e(a, b), [(3,), (3,)]),
        (
            "pointwise_linear",
            "params['weight']",
            lambda a, b: R.pointwise_linear({"weight": b, "bias": np.zeros(3, a.dtype)}, a),
            [(1, 2, 5), (3, 2)],
        ),
        (
            "pointwise_linear bias",
            "params['bias']",
            lambda a, b: R.pointwise_linear({"weight": np.zeros((3, 2), a.dtype), "bias": b}, a),
            [(1, 2, 5), (3,)],
        ),
        ("hyper_interaction", "x", lambda a, b: R.hyper_interaction({}, a, b), [(1, 2, 4, 4), (1, 2, 4, 4)]),
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("dtypes", [(np.float64, np.float32), (np.float32, np.float64)], ids=["64-32", "32-64"])
def test_dtype_mismatch_between_arrays(case, dtypes):
    _, arg, fn, shapes = case
    a = np.zeros(shapes[0], dtypes[0])
    b = np.zeros(shapes[1], dtypes[1])
    _raises(TypeError, lambda: fn(a, b), arg, str(np.dtype(dtypes[0])), str(np.dtype(dtypes[1])))


def test_magnet_l_context_dtype_must_match_params(block3):
    slow_l = block3["local"][0]["slow_l"]
    _raises(TypeError, lambda: R.magnet_l(slow_l, np.zeros((2, 8, 8, 8), np.float32)), "x", "float64", "float32")


def test_terminator_forward_input_dtype_must_match_params(tiny_params):
    _raises(
        TypeError,
        lambda: R.terminator_forward(tiny_params, np.zeros((2, 1, 8, 8), np.float32), R.tiny()),
        "x",
        "float64",
        "float32",
    )


INT_CASES = [
    ("gelu", "x", lambda a: R.gelu(a), (3, 4)),
    ("si_glu", "g1", lambda a: R.si_glu(a), (3, 4)),
    ("sigmoid", "x", lambda a: R.sigmoid(a), (3, 4)),
    ("depthwise_conv", "y", lambda a: R.depthwise_conv(a, np.zeros((2, 1, 3))), (1, 2, 5)),
    ("adaptive_avg_pool", "x", lambda a: R.adaptive_avg_pool(a, (2,)), (1, 2, 5)),
    ("instance_standardize", "x", lambda a: R.instance_standardize(a), (1, 2, 5)),
    ("batch_standardize", "x", lambda a: R.batch_standardize(a), (1, 2, 5)),
    ("g_ibs", "x", lambda a: R.g_ibs(a, 2), (1, 2, 5)),
    ("hyperzzw_global", "z", lambda a: R.hyperzzw_global(a, a, a), (1, 2, 4, 4)),
    ("hyperzzw_2e", "k", lambda a: R.hyperzzw_2e(a, a), (3,)),
    ("pointwise_linear", "x", lambda a: R.pointwise_linear(_lin(2, 2), a), (1, 2, 5)),
    ("label_smoothing_cross_entropy", "logits", lambda a: R.label_smoothing_cross_entropy(a, np.array([0])), (1, 3)),
    ("slow_loss", "kernels[0]", lambda a: R.slow_loss([a], []), (1, 2, 3, 3)),
]


@pytest.mark.parametrize("case", INT_CASES, ids=lambda c: c[0])
def test_integer_inputs_rejected(case):
    _, arg, fn, shape = case
    _raises(TypeError, lambda: fn(np.ones(shape, dtype=np.int64)), arg, "int64", "float32 or float64")


def test_int_dtype_for_init_params():
    _raises(TypeError, lambda: R.init_params(R.tiny(), 0, dtype=np.int64), "dtype", "int64")


# ----------------------------------------------------------------------------- torch tensors


@pytest.mark.parametrize(
    "case",
    INT_CASES
    + [
        ("local_conv", "y", lambda a: R.local_conv(_lin(2, 2), a, np.zeros((2, 1, 3))), (1, 2, 5)),
        ("channel_mixer", "x", lambda a: R.channel_mixer(_lin(2, 2), a), (1, 2, 5)),
        ("rgu", "z", lambda a: R.rgu({}, a), (1, 2, 5)),
        ("hyper_channel_interaction", "z", lambda a: R.hyper_channel_interaction({}, a), (1, 2, 5)),
        ("hyper_interaction", "y", lambda a: R.hyper_interaction({}, a, a), (1, 2, 5)),
        ("magnet_l", "x", lambda a: R.magnet_l(R.init_magnet_l(np.random.default_rng(0), 3, 1, 2, 2, 1), a), (1, 2, 5)),
        (
            "terminator_forward",
            "x",
            lambda a: R.terminator_forward(R.init_params(R.tiny(), 0), a, R.tiny()),
            (2, 1, 8, 8),
        ),
        (
            "pointwise_linear weight",
            "params['weight']",
            lambda a: R.pointwise_linear({"weight": a, "bias": np.zeros(1)}, np.zeros((1, 2, 5))),
            (1, 2),
        ),
    ],
    ids=lambda c: c[0],
)
def test_torch_tensors_rejected(case):
    _, arg, fn, shape = case
    t = torch.ones(shape, dtype=torch.float64)
    _raises(TypeError, lambda: fn(t), arg, "torch.Tensor", "NumPy")


# -------------------------------------------------------------------------- TerminatorConfig


def test_config_from_dict_unknown_keys():
    data = {**R.cifar10().to_dict(), "omega0": 30.0, "hidden": 3}
    msg = _raises(ValueError, lambda: TerminatorConfig.from_dict(data), "unknown keys", "'hidden'", "'omega0'")
    assert "omega_0" in msg  # the known keys are listed


def test_config_replace_unknown_key():
    _raises(ValueError, lambda: R.cifar10().replace(num_class=100), "unknown keys", "'num_class'")


def test_config_round_trip_and_replace_validate():
    cfg = R.cifar10()
    assert TerminatorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(num_classes=100) == R.cifar100()
    _raises(ValueError, lambda: cfg.replace(num_classes=1), "TerminatorConfig.num_classes")


BAD_VALUES = [
    ("input_shape", (3, 32, 16)),
    ("input_shape", (3, 0, 0)),
    ("input_shape", (3,)),
    ("input_shape", "abc"),
    ("grid", (4, 4)),  # an image config takes no grid
    ("num_classes", 1),
    ("num_classes", 10.5),
    ("bottleneck_factors", ()),
    ("bottleneck_factors", (4, 0, 2, 2, 2)),
    ("num_concat_pre", (0, 0, 1, 1)),
    ("num_concat_pre", (0, 0, 3, 1, 2)),
    ("num_concat_pre", (1, 0, 1, 1, 2)),
    ("num_concat_pre", (0, 0, 2, 1, 2)),
    ("dropout", (0.0, 0.05)),
    ("dropout", (0.0, 0.05, 0.05, 0.05, 1.0)),
    ("dropout", (0.0, -0.1, 0.0, 0.0, 0.0)),
    ("global_hidden", 0),
    ("global_layers", (3, 2, 2, 2)),
    ("global_layers", (3, 0, 2, 2, 2)),
    ("local_kernel_sizes", (3, 9, 5, 8)),
    ("local_kernel_sizes", (3, 5)),
    ("local_kernel_sizes", (3, 9, 5, 7, 11)),
    ("local_hidden", -1),
    ("local_layers", 0),
    ("channel_hidden", 0),
    ("channel_layers", 0),
    ("hi_channel_hidden", 0),
    ("hi_spatial_hidden", 0),
    ("hi_layers", 0),
    ("global_hidden", 2.5),
    ("omega_0", 0.0),
    ("alpha", -1.0),
    ("beta", 0.0),
    ("eps", 0.0),
    ("ibs_groups", 0),
    ("ibs_groups", 5),
    ("ibs_groups", 24),
    ("label_smoothing", 1.5),
    ("label_smoothing", -0.1),
    ("slow_loss", "mse"),
    ("slow_loss_weight", -1.0),
]


@pytest.mark.parametrize("field, value", BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_config_bad_value_names_the_field(field, value):
    msg = _raises(ValueError, lambda: R.cifar10().replace(**{field: value}))
    assert re.search(rf"\b{field}\b", msg), msg


@pytest.mark.parametrize("grid", [None, (4, 16), (8, 9), (8,)])
def test_config_1d_grid(grid):
    _raises(ValueError, lambda: TerminatorConfig(input_shape=(1, 64), grid=grid), "TerminatorConfig.grid")


WRONG_TYPES = [
    ("omega_0", "fast"),
    ("alpha", None),
    ("beta", "1"),
    ("eps", "small"),
    ("label_smoothing", "0.1"),
    ("slow_loss_weight", None),
    ("dropout", ("a",) * 5),
    ("num_classes", "10"),
    ("global_hidden", None),
]


@pytest.mark.parametrize("field, value", WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
def test_config_wrong_type_names_the_field(field, value):
    # "A bad value raises ValueError naming the field and the rule" (TerminatorConfig docstring);
    # a value that is not a number must not pass validation (it would fail later, in init_params).
    msg = _raises(ValueError, lambda: R.cifar10().replace(**{field: value}))
    assert re.search(rf"\b{field}\b", msg), msg


# ---------------------------------------------------------------- params vs config mismatches


def test_params_of_another_config(tiny_params):
    x = np.zeros((2, 1, 8, 8))
    _raises(
        KeyError,
        lambda: R.terminator_forward(tiny_params, x, R.tiny().replace(channel_layers=2)),
        "do not match the config",
        "missing",
        "blocks.0.hci.channel.linears.1",
    )
    msg = _raises(
        ValueError,
        lambda: R.terminator_forward(tiny_params, x, R.tiny().replace(global_hidden=16)),
        "params['blocks.0.slow_g.filters.0.weight']",
        "(16, 2)",
        "(8, 2)",
    )
    assert re.search(r"expected shape \(16, 2\), got \(8, 2\)", msg)


def test_params_missing_unknown_and_mixed_dtype(tiny_params):
    x = np.zeros((2, 1, 8, 8))
    missing = R.tree_map(lambda a: a, tiny_params)
    del missing["head"]["bias"]
    _raises(KeyError, lambda: R.terminator_forward(missing, x, R.tiny()), "missing ['head.bias']")
    extra = R.tree_map(lambda a: a, tiny_params)
    extra["head"]["scale"] = np.ones(1)
    _raises(KeyError, lambda: R.terminator_forward(extra, x, R.tiny()), "unknown ['head.scale']")
    mixed = R.tree_map(lambda a: a, tiny_params)
    mixed["head"]["bias"] = mixed["head"]["bias"].astype(np.float32)
    _raises(TypeError, lambda: R.terminator_forward(mixed, x, R.tiny()), "one dtype", "float32", "float64")
    _raises(TypeError, lambda: R.terminator_forward("params", x, R.tiny()), "params", "str")
    _raises(TypeError, lambda: R.terminator_forward(tiny_params, x, "tiny"), "config", "str")


def test_input_does_not_match_config(tiny_params):
    _raises(
        ValueError,
        lambda: R.terminator_forward(tiny_params, np.zeros((2, 1, 4, 4)), R.tiny()),
        "x",
        "(B, 1, 8, 8)",
        "(2, 1, 4, 4)",
    )
    _raises(
        ValueError, lambda: R.terminator_forward(tiny_params, np.zeros((2, 1, 8)), R.tiny()), "x", "4-D", "(2, 1, 8)"
    )
    _raises(
        ValueError,
        lambda: R.terminator_forward(tiny_params, np.zeros((0, 1, 8, 8)), R.tiny()),
        "x",
        "non-empty",
        "(0, 1, 8, 8)",
    )


def test_block_parts_that_do_not_match_the_input(block3):
    _raises(
        ValueError, lambda: R.rgu(block3["rgu_fast"], np.zeros((2, 8, 4, 4))), "params['bias_p']", "(4, 4)", "(8, 8)"
    )
    _raises(
        ValueError,
        lambda: R.hyper_channel_interaction(block3["hci"], np.zeros((2, 4, 8, 8))),
        "params['channel']",
        "8 positions",
        "4 channels",
    )
    _raises(
        ValueError,
        lambda: R.hyper_interaction(block3["hi"], np.zeros((2, 8, 4, 4)), np.zeros((2, 8, 4, 4))),
        "params['spatial']",
        "(8, 8)",
        "(4, 4)",
    )
    _raises(
        ValueError,
        lambda: R.magnet_l(block3["local"][0]["slow_l"], np.zeros((2, 4, 8, 8))),
        "x",
        "C_out=8",
        "(2, 4, 8, 8)",
    )
    _raises(KeyError, lambda: R.magnet_g({"filters": []}), "params", "missing", "linears")
    _raises(
        ValueError,
        lambda: R.sfne_block(block3, np.zeros((2, 8, 4, 4)), np.zeros((2, 4, 4, 4)), np.zeros((2, 2, 4, 4)), groups=2),
        "params['slow_g']",
        "(1, 8, 8, 8)",
        "(1, 8, 4, 4)",
    )
    _raises(
        ValueError,
        lambda: R.sfne_block(block3, np.zeros((2, 8, 8, 8)), np.zeros((2, 3, 8, 8)), np.zeros((2, 2, 8, 8)), groups=2),
        "x_pre",
        "3 channels",
        "8 input channels",
    )
    _raises(
        ValueError,
        lambda: R.sfne_block(block3, np.zeros((2, 8, 8, 8)), None, np.zeros((2, 2, 8, 8)), groups=2),
        "x_pre_pre",
        "without x_pre",
    )


def test_sfne_block_without_its_x_pre_names_the_bottleneck(block3):
    # Block 3's bottleneck expects 12 branches (x_pre and x_pre_pre). Called without them, the error
    # must point at the block's bottleneck (or the missing inputs), not at a generic params['weight'].
    msg = _raises(ValueError, lambda: R.sfne_block(block3, np.zeros((2, 8, 8, 8)), groups=2), "(16, 96)")
    assert "bottleneck" in msg or "x_pre" in msg, msg

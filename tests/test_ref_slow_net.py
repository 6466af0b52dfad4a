"""Forward values and initialisation of the reference slow network (spec §2.1).

``coordinate_grid`` is checked against ``torch.linspace`` + ``torch.meshgrid(indexing='ij')``;
``magnet_g`` / ``magnet_gc`` / ``magnet_l`` against a small PyTorch transcription of the author's
MAGNet modules as the notes describe them (Linear{d}d = 1×1 conv, sin filters, ``bias_p`` repeated
over the hidden channels, MAGNet_L's pooled context path and s-renormalisation), fed the same
parameter dicts. Init statistics, determinism and golden values pin ``init_params``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from hyperzzw_core.reference import (
    coordinate_grid,
    flatten,
    init_magnet_g,
    init_magnet_gc,
    init_magnet_l,
    init_params,
    magnet_g,
    magnet_gc,
    magnet_l,
    tiny,
    tree_map,
)

# ------------------------------------------------------------------- PyTorch transcription


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))


def _torch_grid(sizes) -> torch.Tensor:
    """linspace_grid: (1, d, *sizes), channel a varying along spatial axis a."""
    axes = [torch.linspace(-1.0, 1.0, k, dtype=torch.float64) for k in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def _linear(x: torch.Tensor, lin: dict) -> torch.Tensor:
    """Linear{d}d: nn.Conv{d}d(in, out, kernel_size=1) with the dict's weight and bias."""
    d = x.ndim - 2
    w = _t(lin["weight"]).reshape(tuple(np.shape(lin["weight"])) + (1,) * d)
    return (F.conv1d if d == 1 else F.conv2d)(x, w, _t(lin["bias"]))


def _mfn(params: dict, g_ctx: torch.Tensor | None = None) -> torch.Tensor:
    """MAGNet_G (g_ctx None) or MAGNet_L's MFN part: returns (1, C_out, *sizes)."""
    sizes = tuple(np.shape(params["bias_p"]))
    d = len(sizes)
    coords = _torch_grid(sizes)
    hidden = np.shape(params["filters"][0]["weight"])[0]
    bias_p = _t(params["bias_p"]).reshape((1, 1) + sizes).repeat((1, hidden) + (1,) * d)
    out = torch.sin(_linear(coords, params["filters"][0]))
    for i, lin in enumerate(params["linears"]):
        out = torch.sin(_linear(coords, params["filters"][i + 1])) * _linear(out, lin) + bias_p
        if g_ctx is not None:
            # s_renorm: 1.0·stopgrad(u) + 0.1·F.normalize over each hidden channel's flattened map.
            ut = out.transpose(0, 1)  # (H, 1, *sizes)
            normed = F.normalize(ut.reshape(hidden, -1), dim=1, eps=1e-12).reshape(ut.shape).transpose(0, 1)
            out = 1.0 * out.detach() + 0.1 * normed
            out = out * _linear(g_ctx, params["linears_x"][i])
    return _linear(out, params["output"])


def torch_magnet_g(params: dict) -> np.ndarray:
    return _mfn(params).numpy()


def torch_magnet_l(params: dict, x: np.ndarray) -> np.ndarray:
    sizes = tuple(np.shape(params["bias_p"]))
    xt = _t(x)
    pooled = F.adaptive_avg_pool1d(xt, sizes[0]) if len(sizes) == 1 else F.adaptive_avg_pool2d(xt, sizes)
    g = F.gelu(_linear(_linear(pooled, params["reduce"]).mean(dim=0, keepdim=True), params["fc1"]))
    k = _mfn(params, g)
    return k.reshape((k.shape[1], 1) + sizes).numpy()


def _randomize(params: dict, rng: np.random.Generator, freq: float = 3.0) -> dict:
    """Replace every leaf by random values (so zero/one biases and bias_p are exercised)."""
    out = tree_map(lambda a: rng.standard_normal(np.shape(a)), params)
    for f in out["filters"]:
        f["weight"] = f["weight"] * freq
    return out


# ---------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("sizes", [(1,), (2,), (5,), (32,), (3, 3), (4, 7), (1, 5), (32, 32), (2, 3, 4)])
def test_coordinate_grid_matches_torch_linspace_meshgrid(sizes):
    grid = coordinate_grid(sizes)
    assert grid.dtype == np.float64
    assert grid.shape == (len(sizes),) + tuple(sizes)
    np.testing.assert_allclose(grid, _torch_grid(sizes)[0].numpy(), rtol=0, atol=1e-15)


def test_coordinate_grid_channel_order_and_endpoints():
    grid = coordinate_grid((3, 5))
    # Channel 0 varies along the rows (first spatial axis), channel 1 along the columns.
    np.testing.assert_array_equal(grid[0][:, 0], [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(grid[0][:, 4], [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(grid[1][0], [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(grid[1][2], [-1.0, -0.5, 0.0, 0.5, 1.0])
    # k = 32: spacing 2/31 ("adjacent grid points are 2/31 apart").
    np.testing.assert_allclose(np.diff(coordinate_grid((32,))[0]), 2.0 / 31.0, rtol=1e-13)


# ------------------------------------------------------------------------------- forwards


@given(data=st.data())
def test_magnet_g_matches_torch_transcription(data):
    d = data.draw(st.sampled_from([1, 2]), label="grid dims")
    sizes = tuple(data.draw(st.integers(1, 8), label=f"size {a}") for a in range(d))
    hidden = data.draw(st.integers(1, 6), label="hidden")
    c_out = data.draw(st.integers(1, 4), label="out channels")
    layers = data.draw(st.integers(1, 3), label="layers")
    randomize = data.draw(st.booleans(), label="randomize all parameters")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    params = init_magnet_g(rng, sizes, hidden, c_out, layers)
    if randomize:
        params = _randomize(params, rng)
    out = magnet_g(params)
    assert out.shape == (1, c_out) + sizes and out.dtype == np.float64
    np.testing.assert_allclose(out, torch_magnet_g(params), rtol=1e-9, atol=1e-9)


@given(data=st.data())
def test_magnet_gc_matches_torch_conv1d_transcription(data):
    channels = data.draw(st.integers(1, 8), label="channels (grid points)")
    hidden = data.draw(st.integers(1, 6), label="hidden")
    layers = data.draw(st.integers(1, 3), label="layers")
    randomize = data.draw(st.booleans(), label="randomize all parameters")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    params = init_magnet_gc(rng, channels, hidden, layers)
    if randomize:
        params = _randomize(params, rng)
    out = magnet_gc(params)
    assert out.shape == (1, 1, channels)
    np.testing.assert_allclose(out, torch_magnet_g(params), rtol=1e-9, atol=1e-9)


@given(data=st.data())
def test_magnet_l_matches_torch_transcription(data):
    d = data.draw(st.sampled_from([1, 2]), label="data dim")
    k = data.draw(st.sampled_from([1, 3, 5, 7, 9]), label="kernel size")
    hidden = data.draw(st.integers(1, 6), label="hidden")
    c_out = data.draw(st.integers(1, 4), label="out channels")
    layers = data.draw(st.integers(1, 3), label="layers")
    b = data.draw(st.integers(1, 4), label="batch")
    spatial = tuple(data.draw(st.integers(1, 10), label=f"context size {a}") for a in range(d))
    randomize = data.draw(st.booleans(), label="randomize all parameters")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    params = init_magnet_l(rng, k, d, hidden, c_out, layers)
    if randomize:
        params = _randomize(params, rng)
    x = rng.standard_normal((b, c_out) + spatial)
    out = magnet_l(params, x)
    assert out.shape == (c_out, 1) + (k,) * d and out.dtype == np.float64
    np.testing.assert_allclose(out, torch_magnet_l(params, x), rtol=1e-9, atol=1e-9)


def test_magnet_l_one_kernel_per_batch():
    # The batch mean in the context path makes the kernel invariant to the order of the samples.
    rng = np.random.default_rng(0)
    params = _randomize(init_magnet_l(rng, 3, 2, 4, 3, 2), rng)
    x = rng.standard_normal((4, 3, 6, 6))
    np.testing.assert_allclose(magnet_l(params, x), magnet_l(params, x[::-1].copy()), rtol=1e-12, atol=1e-14)
    assert np.abs(magnet_l(params, x) - magnet_l(params, x[:2])).max() > 1e-6


def test_magnet_g_float32_matches_float64():
    rng = np.random.default_rng(1)
    params = _randomize(init_magnet_g(rng, (6, 6), 5, 3, 2), rng, freq=1.0)
    p32 = tree_map(lambda a: np.asarray(a, np.float32), params)
    out = magnet_g(p32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, torch_magnet_g(params), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ init

HIDDEN, C_OUT, LAYERS, SIZES = 64, 12, 3, (32, 32)


@pytest.fixture(scope="module")
def global_params():
    return init_magnet_g(np.random.default_rng(0), SIZES, HIDDEN, C_OUT, LAYERS)


@pytest.fixture(scope="module")
def local_params():
    return init_magnet_l(np.random.default_rng(0), 9, 2, 32, 36, 2)


def _assert_uniform_bound(w: np.ndarray, bound: float) -> None:
    """All |w| ≤ bound, the largest close to it, mean |w| ≈ bound/2 (uniform, not normal).

    2|w|/bound is U(0, 1)·2 with standard deviation 0.577: the mean is allowed 4 standard errors.
    """
    a = np.abs(np.asarray(w)).ravel()
    assert a.max() <= bound
    if a.size >= 30:
        assert a.max() >= 0.8 * bound
        assert abs(a.mean() / (bound / 2.0) - 1.0) < 4 * 0.577 / math.sqrt(a.size)


def test_init_magnet_g_biases_and_bounds(global_params):
    p = global_params
    assert len(p["filters"]) == LAYERS + 1 and len(p["linears"]) == LAYERS
    for f in p["filters"]:
        assert f["weight"].shape == (HIDDEN, 2)
        np.testing.assert_array_equal(f["bias"], 0.0)  # b_g = 0
        assert np.all(np.isfinite(f["weight"])) and np.all(f["weight"] != 0.0)
    for lin in p["linears"]:
        np.testing.assert_array_equal(lin["bias"], 1.0)  # linears' bias filled with 1.0
        _assert_uniform_bound(lin["weight"], math.sqrt(3.0 / HIDDEN))  # kaiming_uniform(linear)
    np.testing.assert_array_equal(p["output"]["bias"], 0.0)
    # kaiming_uniform(linear) then Chang scaling √(1/N), N = 32·32 grid points.
    _assert_uniform_bound(p["output"]["weight"], math.sqrt(3.0 / HIDDEN) * math.sqrt(1.0 / 1024))
    assert p["bias_p"].shape == SIZES
    np.testing.assert_array_equal(p["bias_p"], 0.0)


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_init_magnet_l_chang_scaling_per_kernel_size(k):
    p = init_magnet_l(np.random.default_rng(k), k, 2, 32, 72, 2)
    # N = k² grid points: 9, 25, 49, 81.
    _assert_uniform_bound(p["output"]["weight"], math.sqrt(3.0 / 32) * math.sqrt(1.0 / (k * k)))
    np.testing.assert_array_equal(p["bias_p"], np.zeros((k, k)))


def test_init_magnet_l_context_path(local_params):
    p = local_params
    hidden, c_out = 32, 36
    # fast_reduce: Conv2d(C_out → H) default init, weight and bias U(±1/√C_out).
    _assert_uniform_bound(p["reduce"]["weight"], 1.0 / math.sqrt(c_out))
    _assert_uniform_bound(p["reduce"]["bias"], 1.0 / math.sqrt(c_out))
    assert p["reduce"]["weight"].shape == (hidden, c_out)
    # fast_fc1: Conv2d(H → H) default init, U(±1/√H).
    _assert_uniform_bound(p["fc1"]["weight"], 1.0 / math.sqrt(hidden))
    _assert_uniform_bound(p["fc1"]["bias"], 1.0 / math.sqrt(hidden))
    assert not np.all(p["fc1"]["bias"] == 0.0)
    # fast_linears_x: kaiming_uniform(linear), bias 1.0.
    assert len(p["linears_x"]) == 2
    for lin in p["linears_x"]:
        np.testing.assert_array_equal(lin["bias"], 1.0)
        _assert_uniform_bound(lin["weight"], math.sqrt(3.0 / hidden))
    np.testing.assert_array_equal(p["output"]["bias"], 0.0)
    _assert_uniform_bound(p["output"]["weight"], math.sqrt(3.0 / hidden) / 9.0)


def test_init_magnet_gc_chang_scaling():
    p = init_magnet_gc(np.random.default_rng(3), 144, 32, 2)
    assert p["output"]["weight"].shape == (1, 32) and p["bias_p"].shape == (144,)
    _assert_uniform_bound(p["output"]["weight"], math.sqrt(3.0 / 32) * math.sqrt(1.0 / 144))
    for f in p["filters"]:
        assert f["weight"].shape == (32, 1)


def test_init_filter_weights_scale_linearly_with_omega_0():
    # W = U(±1/√d)·2π·ω₀·γ: with the same seed, only ω₀'s factor changes.
    a = init_magnet_g(np.random.default_rng(5), (8, 8), 16, 2, 2, omega_0=1.0)
    b = init_magnet_g(np.random.default_rng(5), (8, 8), 16, 2, 2, omega_0=2000.0)
    for fa, fb in zip(a["filters"], b["filters"], strict=True):
        np.testing.assert_allclose(fb["weight"], 2000.0 * fa["weight"], rtol=1e-12)
    fa_, fb_ = flatten(a), flatten(b)
    for key in fa_:
        if not key.startswith("filters.") or key.endswith("bias"):
            np.testing.assert_array_equal(fa_[key], fb_[key], err_msg=key)


def test_init_filter_weights_gamma_statistics():
    # E|W_l| = 2π·ω₀·E|U|·E[γ_l] = 2π·ω₀·(1/(2√d))·α/(l+1) (γ ~ Gamma(α/(l+1), rate 1), α = 6).
    omega_0, d, hidden = 2000.0, 2, 1024
    p = init_magnet_g(np.random.default_rng(0), (4, 4), hidden, 1, 3, omega_0=omega_0)
    for layer, f in enumerate(p["filters"]):
        expected = 2 * math.pi * omega_0 * (1.0 / (2 * math.sqrt(d))) * 6.0 / (layer + 1)
        ratio = np.abs(f["weight"]).mean() / expected
        assert abs(ratio - 1.0) < 0.15, (layer, ratio)
    # "max|W_g| ≈ 9×10⁴ at init" for the 64-hidden global kernel of the CIFAR network.
    q = init_magnet_g(np.random.default_rng(0), (32, 32), 64, 3, 3, omega_0=omega_0)
    assert 2e4 < max(np.abs(f["weight"]).max() for f in q["filters"]) < 3e5


# ----------------------------------------------------------------------------- determinism


def test_init_params_deterministic_per_seed():
    a, b, c = init_params(tiny(), 0), init_params(tiny(), 0), init_params(tiny(), 1)
    fa, fb, fc = flatten(a), flatten(b), flatten(c)
    assert list(fa) == list(fb) == list(fc)
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)
    random_leaves = [k for k in fa if np.unique(fa[k]).size > 1]
    assert len(random_leaves) > 100
    for key in random_leaves:
        assert not np.array_equal(fa[key], fc[key]), key


GOLDEN = {
    # init_params(tiny(), 0): (flat key, [first, middle, last] of the raveled leaf).
    "blocks.0.slow_g.filters.0.weight": [21117.827579334, 4957.27044678178, -28980.8624171092],
    "blocks.0.slow_g.filters.2.weight": [-9786.57906722356, -613.164780131843, -3501.85461984799],
    "blocks.1.rgu_fast.w_k.weight": [0.802851910191056, -0.156968041102902, 0.249345111821018],
    "blocks.2.local.1.slow_l.reduce.bias": [-0.256998191560678, 0.406432206273089, 0.117920834834739],
    "blocks.3.bottleneck.weight": [-0.160387910610054, -0.028008835577907, 0.0138122628874849],
    "blocks.3.hi.spatial.output.weight": [0.048760815810967, -0.0505491766418705, -0.0174902157437676],
    "blocks.1.hci.channel.filters.1.weight": [4331.62870144744, -3038.40015863082, -16705.2388953716],
    "blocks.3.local.3.slow_l.linears_x.0.weight": [-0.638751779929772, 0.0246448914215911, -0.402885050693032],
    "head.weight": [0.200788590351894, -0.263701763763051, -0.110457390964852],
    "blocks.2.mixer.weight": [-1.24267001017974, 0.997399056237546, -0.698146227925002],
}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_init_params_golden_values(key):
    leaf = flatten(init_params(tiny(), 0))[key].ravel()
    got = [leaf[0], leaf[leaf.size // 2], leaf[-1]]
    np.testing.assert_allclose(got, GOLDEN[key], rtol=1e-14, atol=0)


def test_init_params_float32_is_the_rounded_float64():
    a, b = flatten(init_params(tiny(), 0)), flatten(init_params(tiny(), 0, dtype=np.float32))
    for key in a:
        assert b[key].dtype == np.float32
        np.testing.assert_array_equal(b[key], a[key].astype(np.float32), err_msg=key)

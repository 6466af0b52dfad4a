"""The whole Terminator network and the SFNE block (spec §1.2, §1.3, §3.3, §5 Q5).

* Parameter counts of the CIFAR networks (§3.3), counted leaf by leaf here.
* Shapes at every block of the CIFAR10 network and the block wiring of §1.2 (x_pre = out_{i−2},
  x_pre_pre = out_{i−3}, logits = head(GAP(out_last))), rebuilt here from ``sfne_block`` calls.
* One SFNE block transcribed here from §1.3 in PyTorch (the reference's slow nets and interaction
  operators give the parts; the global products, local convolutions, standardisations, the
  concatenation in the order [G1, L2, tile(x_pre), fast, G2, L1, S, L3, G3, L4, tile(x_pre_pre), HI],
  the bottleneck, G-IBS, GELU, bias and dropout are written here) and compared with ``sfne_block``.
* Batch dependence in eval (§5 Q5), Dropout2d masks, float32, B = 1, the 1D ``sequence()`` preset.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyperzzw_core.reference import (
    cifar10,
    cifar100,
    concat_order,
    dropout_masks_for,
    flatten,
    hyper_channel_interaction,
    hyper_interaction,
    init_params,
    magnet_g,
    magnet_l,
    rgu,
    sequence,
    sfne_block,
    terminator_forward,
    tiny,
    tiny_1d,
    tree_map,
)


def _n_params(tree) -> int:
    return sum(int(np.size(v)) for v in flatten(tree).values())


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))


def _randomize(tree, seed: int, scale: float = 0.5):
    rng = np.random.default_rng(seed)
    return tree_map(lambda a: np.asarray(np.asarray(a) + scale * rng.standard_normal(np.shape(a))), tree)


# ------------------------------------------------------------------------- parameter counts


def test_cifar10_parameter_count():
    params = init_params(cifar10(), 0)
    assert _n_params(params) == 1_336_855
    assert [_n_params(b) for b in params["blocks"]] == [53_377, 57_824, 105_188, 253_580, 863_996]
    assert _n_params(params["head"]) == 288 * 10 + 10


def test_cifar100_parameter_count():
    params = init_params(cifar100(), 0)
    assert _n_params(params) == 1_362_865
    assert _n_params(params["head"]) == 288 * 100 + 100
    assert [_n_params(b) for b in params["blocks"]] == [53_377, 57_824, 105_188, 253_580, 863_996]


def test_cifar10_bottlenecks_are_the_largest_item():
    # §3.3: bottlenecks total 645,456 (block 4 alone 288×1728 + 288).
    params = init_params(cifar10(), 0)
    assert sum(_n_params(b["bottleneck"]) for b in params["blocks"]) == 645_456
    assert [b["bottleneck"]["weight"].shape for b in params["blocks"]] == [
        (12, 30),
        (36, 120),
        (72, 396),
        (144, 792),
        (288, 1728),
    ]


# -------------------------------------------------------- the network rebuilt from its blocks


def _chain(params, x, config, masks=None):
    """§1.2: out_i = SFNE_i(out_{i−1}, x_pre, x_pre_pre); logits = Linear(GAP(out_last)) (reshape)."""
    outs, kernels = [], []
    h = x
    for i, bp in enumerate(params["blocks"]):
        n_pre = config.num_concat_pre[i]
        x_pre = outs[i - 2] if n_pre >= 1 else None
        x_pp = outs[i - 3] if n_pre >= 2 else None
        h, k = sfne_block(bp, h, x_pre, x_pp, groups=config.ibs_groups, grid=config.grid)
        if masks is not None and masks[i] is not None:
            h = h * masks[i].reshape(masks[i].shape + (1,) * (h.ndim - 2))  # Dropout2d: whole channels
        outs.append(h)
        kernels.append(k)
    feats = h.reshape(h.shape[0], h.shape[1], -1).mean(axis=2)  # (B, C): no squeeze, B = 1 safe
    logits = feats @ params["head"]["weight"].T + params["head"]["bias"]
    return logits, kernels, outs


@pytest.fixture(scope="module")
def cifar10_run():
    config = cifar10()
    params = init_params(config, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    logits, kernels = terminator_forward(params, x, config)
    return config, params, x, logits, kernels


def test_cifar10_shapes_at_every_block(cifar10_run):
    config, params, x, logits, kernels = cifar10_run
    assert logits.shape == (2, 10) and logits.dtype == np.float64
    assert np.all(np.isfinite(logits))
    assert [k.shape for k in kernels] == [(1, c, 32, 32) for c in (3, 12, 36, 72, 144)]
    my_logits, my_kernels, outs = _chain(params, x, config)
    assert [o.shape for o in outs] == [(2, c, 32, 32) for c in (12, 36, 72, 144, 288)]
    np.testing.assert_allclose(logits, my_logits, rtol=1e-10, atol=1e-12)
    for k, mk in zip(kernels, my_kernels, strict=True):
        np.testing.assert_allclose(k, mk, rtol=1e-12, atol=1e-15)
    # K_g is input independent (§2.1) and equals the block's MAGNet_G.
    for k, bp in zip(kernels, params["blocks"], strict=True):
        np.testing.assert_allclose(k, magnet_g(bp["slow_g"]), rtol=1e-12, atol=1e-15)
    # Init statistics of K_g (§2.1, measured on the author's network): std ≈ 0.03, mean ≈ 0.
    for k in kernels:
        assert 0.01 < k.std() < 0.06 and abs(k.mean()) < 0.02 and np.abs(k).max() < 0.5


@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_network_matches_block_chain(batch):
    config = tiny()
    params = _randomize(init_params(config, 1), 2, scale=0.2)
    x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8))
    logits, kernels = terminator_forward(params, x, config)
    assert logits.shape == (batch, 10) and np.all(np.isfinite(logits))
    my_logits, my_kernels, _ = _chain(params, x, config)
    np.testing.assert_allclose(logits, my_logits, rtol=1e-10, atol=1e-12)
    for k, mk in zip(kernels, my_kernels, strict=True):
        np.testing.assert_allclose(k, mk, rtol=1e-12, atol=1e-15)


def test_tiny_1d_network_matches_block_chain():
    config = tiny_1d()
    params = _randomize(init_params(config, 3), 4, scale=0.2)
    x = np.random.default_rng(5).standard_normal((2, 1, 64))
    logits, kernels = terminator_forward(params, x, config)
    assert logits.shape == (2, 10) and [k.shape for k in kernels] == [(1, c, 64) for c in (1, 2, 4, 8)]
    np.testing.assert_allclose(logits, _chain(params, x, config)[0], rtol=1e-10, atol=1e-12)


def test_sequence_preset_forward():
    config = sequence()
    params = init_params(config, 0)
    x = np.random.default_rng(1).standard_normal((2, 1, 1024))
    logits, kernels = terminator_forward(params, x, config)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    assert [k.shape for k in kernels] == [(1, c, 1024) for c in (1, 12, 36, 72, 144)]
    # Samples differ, so the logits do.
    assert np.abs(logits[0] - logits[1]).max() > 1e-6


def test_batch_of_one_works_for_cifar_head_shape():
    # The author's squeeze() dropped the batch axis for B = 1 (§1.2); logits must stay (1, K).
    config = tiny()
    params = init_params(config, 0)
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8))
    logits, _ = terminator_forward(params, x, config)
    assert logits.shape == (1, 10)
    np.testing.assert_allclose(logits, _chain(params, x, config)[0], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------- SFNE transcription


def _conv1x1(x: torch.Tensor, lin: dict) -> torch.Tensor:
    d = x.ndim - 2
    w = _t(lin["weight"])
    return (F.conv1d if d == 1 else F.conv2d)(x, w.reshape(w.shape + (1,) * d), _t(lin["bias"]))


def _is(x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, eps=1e-5)


def _bs(x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, training=True, eps=1e-5)


def _square(x: torch.Tensor, grid) -> torch.Tensor:
    """1D: the sequence row-major on its grid, zero-padded after position L (F.pad)."""
    if grid is None:
        return x
    return F.pad(x, (0, grid[0] * grid[1] - x.shape[-1])).reshape(x.shape[:2] + tuple(grid))


def _unsquare(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m if m.shape == like.shape else m.reshape(like.shape[:2] + (-1,))[..., : like.shape[-1]]


def _local_conv(p: dict, k_l: np.ndarray, y: torch.Tensor) -> torch.Tensor:
    """LocalConv: depth-wise conv (padding (k−1)/2, groups C) → Linear C→C → BS → GELU, + b."""
    c, k = y.shape[1], k_l.shape[-1]
    conv = F.conv1d if y.ndim == 3 else F.conv2d
    d = conv(y, _t(k_l), padding=(k - 1) // 2, groups=c)
    return F.gelu(_bs(_conv1x1(d, p["mixer"]))) + float(p["bias"])


def _transcribed_block(bp, z, x_pre, x_pre_pre, groups, grid=None, mask=None):
    zt = _t(z)
    c = z.shape[1]
    k_g = magnet_g(bp["slow_g"])  # step 1
    zhat = zt * _t(k_g)  # step 2
    fast = _is(_t(rgu(bp["rgu_slow"], zhat.numpy())) + _t(rgu(bp["rgu_fast"], z)))  # step 3
    m = _is(_conv1x1(zt, bp["mixer"]))  # step 4
    hc = _is(_t(hyper_channel_interaction(bp["hci"], z)))  # step 5

    def glob(y):  # steps 6-8: Ẑ @ Y
        return _unsquare(torch.matmul(_square(zhat, grid), _square(y, grid)), zt)

    g1, g2, g3 = glob(fast), glob(m), glob(hc)
    s = torch.sigmoid(g1) * g1  # step 9
    hi = _t(hyper_interaction(bp["hi"], g1.numpy(), z))  # step 10
    # steps 11-12: L1 = LC(K(Z), Hc), L2 = LC(K(Hc), Z), L3 = LC(K(M), Z), L4 = LC(K(Z), M).
    lp = bp["local"]
    l1 = _local_conv(lp[0], magnet_l(lp[0]["slow_l"], z), hc)
    l2 = _local_conv(lp[1], magnet_l(lp[1]["slow_l"], hc.numpy()), zt)
    l3 = _local_conv(lp[2], magnet_l(lp[2]["slow_l"], m.numpy()), zt)
    l4 = _local_conv(lp[3], magnet_l(lp[3]["slow_l"], z), m)
    parts = [g1, l2]
    if x_pre is not None:
        parts.append(_t(x_pre).repeat((1, c // x_pre.shape[1]) + (1,) * (z.ndim - 2)))
    parts += [fast, g2, l1, s, l3, g3, l4]
    if x_pre_pre is not None:
        parts.append(_t(x_pre_pre).repeat((1, c // x_pre_pre.shape[1]) + (1,) * (z.ndim - 2)))
    parts.append(hi)
    p_out = _conv1x1(torch.cat(parts, dim=1), bp["bottleneck"])  # steps 13-14
    size = p_out.shape[1] // groups  # step 15: G-IBS → GELU → + b
    q = torch.cat([_bs(g) if j % 2 == 0 else _is(g) for j, g in enumerate(torch.split(p_out, size, dim=1))], dim=1)
    out = F.gelu(q) + float(bp["bias"])
    if mask is not None:
        out = out * _t(mask).reshape(mask.shape + (1,) * (z.ndim - 2))
    return out.numpy(), k_g


def test_concat_order_matches_section_1_3():
    assert concat_order(4, False, False) == ["G1", "L2", "fast", "G2", "L1", "S", "L3", "G3", "L4", "HI"]
    assert concat_order(4, True, False) == ["G1", "L2", "x_pre", "fast", "G2", "L1", "S", "L3", "G3", "L4", "HI"]
    assert concat_order(4, True, True) == [
        "G1",
        "L2",
        "x_pre",
        "fast",
        "G2",
        "L1",
        "S",
        "L3",
        "G3",
        "L4",
        "x_pre_pre",
        "HI",
    ]


@pytest.mark.parametrize("config_fn", [tiny, tiny_1d, lambda: tiny_1d(length=23)], ids=["2d", "1d", "1d-L23"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["eval", "dropout"])
def test_sfne_block_matches_transcription_with_x_pre_and_x_pre_pre(config_fn, use_mask):
    config = config_fn()
    i = 3  # tiny block 3: C = 8, x_pre = out_1 (4 ch, tiled ×2), x_pre_pre = out_0 (2 ch, tiled ×4)
    assert config.num_concat_pre[i] == 2
    bp = _randomize(init_params(config, 0)["blocks"][i], 7, scale=0.3)
    rng = np.random.default_rng(8)
    spatial = config.spatial_shape
    z = rng.standard_normal((3, 8) + spatial)
    x_pre = rng.standard_normal((3, 4) + spatial)
    x_pre_pre = 2.0 + rng.standard_normal((3, 2) + spatial)
    mask = ((rng.random((3, 16)) >= 0.5) / 0.5) if use_mask else None
    out, k_g = sfne_block(bp, z, x_pre, x_pre_pre, groups=config.ibs_groups, grid=config.grid, dropout_mask=mask)
    want, want_k = _transcribed_block(bp, z, x_pre, x_pre_pre, config.ibs_groups, config.grid, mask)
    assert out.shape == (3, 16) + spatial and k_g.shape == (1, 8) + spatial
    np.testing.assert_allclose(k_g, want_k, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out, want, rtol=1e-8, atol=1e-9)


def test_sfne_block_order_is_observable():
    # Moving the tiled x_pre from slot 2 to the end of the concatenation changes the block output,
    # so the transcription above really pins the order.
    config = tiny()
    bp = _randomize(init_params(config, 0)["blocks"][2], 9, scale=0.3)
    rng = np.random.default_rng(10)
    z, x_pre = rng.standard_normal((2, 4, 8, 8)), rng.standard_normal((2, 2, 8, 8))
    out, _ = sfne_block(bp, z, x_pre, groups=2)
    w = bp["bottleneck"]["weight"]  # (8, 11·4): slot 2 holds tile(x_pre)
    moved = dict(
        bp,
        bottleneck={
            "weight": np.concatenate([w[:, :8], w[:, 12:], w[:, 8:12]], axis=1),
            "bias": bp["bottleneck"]["bias"],
        },
    )
    assert np.abs(sfne_block(moved, z, x_pre, groups=2)[0] - out).max() > 1e-3


# ------------------------------------------------------------------- batch dependence, modes


def test_eval_logits_depend_on_the_batch():
    # BS uses batch statistics in eval too (§5 Q5): a sample's logits change with its batch mates.
    config = tiny()
    params = init_params(config, 0)
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((1, 1, 8, 8)) for _ in range(3))
    l_ab, _ = terminator_forward(params, np.concatenate([a, b]), config, train=False)
    l_ac, _ = terminator_forward(params, np.concatenate([a, c]), config, train=False)
    l_a, _ = terminator_forward(params, a, config, train=False)
    assert np.abs(l_ab[0] - l_ac[0]).max() > 1e-6
    assert np.abs(l_ab[0] - l_a[0]).max() > 1e-6
    # Without dropout, train and eval are the same function (no running statistics).
    l_ab_train, _ = terminator_forward(params, np.concatenate([a, b]), config, train=True)
    np.testing.assert_allclose(l_ab_train, l_ab, rtol=1e-13, atol=1e-15)


def test_cifar10_dropout_masks():
    config = cifar10()
    masks = dropout_masks_for(config, 64, np.random.default_rng(0), np.dtype(np.float64))
    assert masks[0] is None  # p = 0 in block 0
    for m, c in zip(masks[1:], (36, 72, 144, 288), strict=True):
        assert m.shape == (64, c) and m.dtype == np.float64
        values = np.unique(m)
        np.testing.assert_allclose(values, [0.0, 1.0 / 0.95], rtol=1e-15)
    zeros = np.mean(np.concatenate([(m == 0).ravel() for m in masks[1:]]))
    assert 0.04 < zeros < 0.06


def test_cifar10_train_mode_needs_rng(cifar10_run):
    config, params, x, _, _ = cifar10_run
    with pytest.raises(ValueError, match="rng"):
        terminator_forward(params, x, config, train=True)


def test_train_mode_dropout_applies_masks_to_whole_channels():
    config = tiny().replace(dropout=[0.0, 0.5, 0.0, 0.25])
    params = _randomize(init_params(config, 0), 11, scale=0.2)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 1, 8, 8))
    masks = [None, (rng.random((3, 4)) >= 0.5) / 0.5, None, (rng.random((3, 16)) >= 0.25) / 0.75]
    logits, _ = terminator_forward(params, x, config, train=True, dropout_masks=masks)
    want, _, _ = _chain(params, x, config, masks)
    np.testing.assert_allclose(logits, want, rtol=1e-10, atol=1e-12)
    # Masked block-1 output also feeds block 3 as x_pre; without masks the logits differ.
    assert np.abs(logits - terminator_forward(params, x, config)[0]).max() > 1e-6
    # Drawn from rng: every mask entry is 0 or 1/(1 − p).
    drawn = dropout_masks_for(config, 3, np.random.default_rng(0), np.dtype(np.float64))
    assert drawn[0] is None and drawn[2] is None
    assert set(np.unique(drawn[1])) <= {0.0, 2.0} and set(np.unique(drawn[3])) <= {0.0, 1.0 / 0.75}


def test_parameters_updated_with_numpy_arithmetic_are_accepted():
    # NumPy arithmetic on a 0-D array returns a NumPy scalar (np.zeros(()) + 0.1 is an np.float64),
    # so one plain update step turns the scalar biases ("blocks.i.bias", "blocks.i.local.j.bias")
    # into np.float64 scalars. They are NumPy values of the right dtype and must be accepted.
    config = tiny()
    params = init_params(config, 0)
    stepped = tree_map(lambda a: a + 0.25, params)
    assert isinstance(stepped["blocks"][0]["bias"], np.float64)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    as_arrays = tree_map(lambda a: np.asarray(a), stepped)
    want, _ = terminator_forward(as_arrays, x, config)
    got, _ = terminator_forward(stepped, x, config)
    np.testing.assert_array_equal(got, want)


def test_float32_params_and_inputs_give_float32_outputs():
    config = tiny()
    p64 = init_params(config, 0)
    p32 = init_params(config, 0, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    l64, k64 = terminator_forward(p64, x, config)
    l32, k32 = terminator_forward(p32, x.astype(np.float32), config)
    assert l32.dtype == np.float32 and all(k.dtype == np.float32 for k in k32)
    np.testing.assert_allclose(l32, l64, rtol=0, atol=5e-3)
    for a, b in zip(k32, k64, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-3)

"""Sequences of any length (issue 15, docs/spec-1d.md).

A sequence of length L runs on the square grid ``square_grid(L)`` = (s, s), s = ⌈√L⌉; the
global product lays it row-major on that grid with zeros after position L and drops the padded
positions of the result, so the padding exists only inside the product. Checked here against
independent computations:

* the global product against a Python loop over the grid that skips padded positions, and its
  VJP against finite differences, for non-square lengths and for grids larger than the smallest;
* the SFNE block and the whole network on a non-square length: the core on NumPy and
  array-api-strict against the reference (forward), torch autograd through the core against the
  reference's hand-written VJPs (the torch adapter's network is checked in test_torch_adapter.py,
  the reference's VJP against finite differences in test_grad_network.py, both with
  ``tiny_1d(length=23)``), and a planted bug (padding at the front) that must be caught;
* the loader on (N, L) and (N, C, L) arrays, and MNIST-1D against the ``mnist1d`` package.
"""

from __future__ import annotations

import math

import array_api_strict as xs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperzzw_core as hz
from hyperzzw_core import reference as R
from hyperzzw_core.testing import assert_close
from hyperzzw_core.train import data, plots

# ----------------------------------------------------------------------------- the grid


def test_square_grid_is_the_smallest_square_holding_the_sequence() -> None:
    for length in list(range(1, 300)) + [783, 784, 785, 1024, 10**6, 10**6 + 1]:
        s = next(k for k in range(1, length + 2) if k * k >= length)  # brute force
        assert R.square_grid(length) == (s, s), length
    assert R.square_grid(40) == (7, 7) and R.square_grid(64) == (8, 8)
    for bad in (0, -3, 2.5, True, "40"):
        with pytest.raises(ValueError, match="length"):
            R.square_grid(bad)


def test_config_accepts_square_grids_that_hold_the_sequence() -> None:
    assert R.tiny_1d(length=23).grid == (5, 5) and R.tiny_1d(length=23).input_shape == (1, 23)
    assert R.digits_1d(length=40).grid == (7, 7)
    assert R.sequence(40).grid == (7, 7) and R.sequence(784).grid == (28, 28)
    assert R.tiny().replace(input_shape=(1, 23), grid=(6, 6)).grid == (6, 6)  # a user's larger grid
    for grid in [(4, 4), (5, 6), (3, 9), None]:  # too small / not square
        with pytest.raises(ValueError, match=r"TerminatorConfig\.grid.*square_grid\(23\) = \(5, 5\)"):
            R.tiny().replace(input_shape=(1, 23), grid=grid)
    with pytest.raises(ValueError, match=r"grid: expected \(h, w\) with h·w ≥ L = 23"):
        R.hyperzzw_global(*(np.zeros((1, 1, 23)),) * 3, grid=(4, 4))


# ------------------------------------------------------------------- the global product


def _global_loop(z: np.ndarray, k: np.ndarray, y: np.ndarray, s: int) -> np.ndarray:
    """G[p] for p = i·s + j < L: Σ_m Z[i·s+m]·K[i·s+m]·Y[m·s+j] over the m with both indices < L."""
    length = z.shape[-1]
    k = np.broadcast_to(k, z.shape)
    out = np.zeros_like(z)
    for p in range(length):
        i, j = divmod(p, s)
        for m in range(s):
            a, b = i * s + m, m * s + j
            if a < length and b < length:
                out[..., p] += z[..., a] * k[..., a] * y[..., b]
    return out


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 30), extra=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_global_product_on_a_padded_grid_matches_a_loop(length: int, extra: int, seed: int) -> None:
    s = R.square_grid(length)[0] + extra
    rng = np.random.default_rng(seed)
    z, y = rng.standard_normal((2, 3, length)), rng.standard_normal((2, 3, length))
    k = rng.standard_normal((1, 3, length))
    want = _global_loop(z, k, y, s)
    np.testing.assert_allclose(R.hyperzzw_global(z, k, y, grid=(s, s)), want, rtol=1e-12, atol=1e-12)
    got = hz.hyperzzw_global(*(torch.from_numpy(a) for a in (z, k, y)), grid=(s, s))
    assert_close(got, want, dtype="float64", name="core on torch")
    got = hz.hyperzzw_global(*(xs.asarray(a) for a in (z, k, y)), grid=(s, s))
    assert_close(np.from_dlpack(got), want, dtype="float64", name="core on array-api-strict")


@pytest.mark.parametrize(("length", "grid"), [(23, (5, 5)), (40, (7, 7)), (7, (4, 4)), (2, (2, 2))])
@pytest.mark.parametrize("wrt", [0, 1, 2])
def test_global_product_vjp_against_finite_differences(length: int, grid: tuple, wrt: int) -> None:
    rng = np.random.default_rng(length)
    args = (
        rng.standard_normal((2, 2, length)),
        rng.standard_normal((1, 2, length)),
        rng.standard_normal((2, 2, length)),
    )
    res = R.check_vjp(
        lambda *a: R.hyperzzw_global(*a, grid=grid),
        args,
        lambda *a: R.hyperzzw_global_vjp(*a[:3], a[3], grid=grid),
        wrt=wrt,
    )
    assert res.passed, str(res)


def test_torch_autograd_through_the_core_matches_the_reference_vjp() -> None:
    rng = np.random.default_rng(4)
    z, k, y, g = (rng.standard_normal(s) for s in ((3, 2, 40), (1, 2, 40), (3, 2, 40), (3, 2, 40)))
    tz, tk, ty = (torch.from_numpy(a).requires_grad_() for a in (z, k, y))
    hz.hyperzzw_global(tz, tk, ty, grid=(7, 7)).backward(torch.from_numpy(g))
    for name, got, want in zip(
        "zky", (tz.grad, tk.grad, ty.grad), R.hyperzzw_global_vjp(z, k, y, g, grid=(7, 7)), strict=True
    ):
        assert_close(got, want, dtype="float64", name=f"grad {name}")


# ------------------------------------------------------------------ block and network, L = 23


CFG = R.tiny_1d(length=23)


def _inputs(config: R.TerminatorConfig, seed: int = 1, batch: int = 3) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = R.init_params(config, seed)
    return params, rng.standard_normal((batch,) + config.input_shape), rng.integers(0, 10, batch)


@pytest.mark.parametrize("lib", ["numpy", "array_api_strict"])
def test_core_network_forward_matches_reference_non_square(lib: str) -> None:
    params, x, labels = _inputs(CFG)
    want, want_k = R.terminator_forward(params, x, CFG)
    conv = (lambda a: a) if lib == "numpy" else xs.asarray
    got, got_k = hz.terminator_forward(R.tree_map(conv, params), conv(x), CFG)
    assert_close(np.asarray(got) if lib == "numpy" else np.from_dlpack(got), want, dtype="float64", name="logits")
    assert [tuple(k.shape) for k in got_k] == [(1, c, 23) for c in (1, 2, 4, 8)]
    for got_kernel, want_kernel in zip(got_k, want_k, strict=True):
        conv_back = np.asarray(got_kernel) if lib == "numpy" else np.from_dlpack(got_kernel)
        assert_close(conv_back, want_kernel, dtype="float64", name="K_g")
    loss = hz.terminator_loss(R.tree_map(conv, params), conv(x), conv(labels), CFG, train=False)
    assert_close(float(loss), R.terminator_loss(params, x, labels, CFG, train=False), dtype="float64", name="loss")


def test_core_block_autograd_matches_reference_vjp_non_square() -> None:
    """Block 3 of tiny_1d(length=23) (x_pre and x_pre_pre), all cotangents."""
    rng = np.random.default_rng(9)
    bp = R.init_params(CFG, 2)["blocks"][3]
    z, x_pre, x_pp = (rng.standard_normal((3, c, 23)) for c in (8, 4, 2))
    g_out, g_k = rng.standard_normal((3, 16, 23)), rng.standard_normal((1, 8, 23))
    kw = {"groups": CFG.ibs_groups, "grid": CFG.grid}
    gp, gz, gpre, gpp = R.sfne_block_vjp(bp, z, x_pre, x_pp, (g_out, g_k), **kw)
    tp = R.tree_map(lambda a: torch.from_numpy(a).requires_grad_(), bp)
    tz, tpre, tpp = (torch.from_numpy(a).requires_grad_() for a in (z, x_pre, x_pp))
    out, k = hz.sfne_block(tp, tz, tpre, tpp, **kw)
    assert_close(out, R.sfne_block(bp, z, x_pre, x_pp, **kw)[0], dtype="float64", name="block output")
    ((out * torch.from_numpy(g_out)).sum() + (k * torch.from_numpy(g_k)).sum()).backward()
    for name, got, want in (("z", tz.grad, gz), ("x_pre", tpre.grad, gpre), ("x_pre_pre", tpp.grad, gpp)):
        assert_close(got, want, dtype="float64", name=name)
    flat_t, flat_r = R.flatten(tp), R.flatten(gp)
    scale = max(float(np.abs(v).max()) for v in flat_r.values())
    for key, want in flat_r.items():
        got = flat_t[key].grad
        assert_close(
            torch.zeros_like(flat_t[key]) if got is None else got, want, dtype="float64", scale=scale, name=key
        )


def _front_padded_global(z, k_g, y, *, grid=None, check_finite=True):
    """A planted bug: the padding before the sequence instead of after it."""
    if grid is None or z.ndim == 4:
        return R.hyperzzw_global(z, k_g, y, grid=grid, check_finite=check_finite)
    pad = grid[0] * grid[1] - z.shape[-1]
    flip = lambda a: np.flip(a, -1)  # noqa: E731 - flipping in, flipping out moves the zeros to the front
    return (
        flip(R.hyperzzw_global(flip(z), flip(np.broadcast_to(k_g, z.shape)), flip(y), grid=grid))
        if pad
        else R.hyperzzw_global(z, k_g, y, grid=grid)
    )


def test_a_front_padded_port_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout is observable: a port that pads before the sequence gets different logits."""
    import hyperzzw_core.reference._block as block

    params, x, _ = _inputs(CFG)
    want = R.terminator_forward(params, x, CFG)[0]
    monkeypatch.setattr(block, "hyperzzw_global", _front_padded_global)
    got = R.terminator_forward(params, x, CFG)[0]
    assert np.abs(got - want).max() > 1e-3 * np.abs(want).max()


# --------------------------------------------------------------------------------- plots


def test_kernel_images_leave_the_padding_blank() -> None:
    k = np.arange(2 * 23, dtype=float).reshape(1, 2, 23)
    (img,) = plots.kernel_images([k], (5, 5))
    assert img.shape == (2, 5, 5)
    np.testing.assert_array_equal(img.reshape(2, 25)[:, :23], k[0])
    assert np.isnan(img.reshape(2, 25)[:, 23:]).all()
    with pytest.raises(ValueError, match="grid"):
        plots.kernel_images([k], (4, 4))


# ---------------------------------------------------------------------------------- data


def _npz(path, x_tr, x_te, rng, classes=3):
    np.savez(
        path,
        x_train=x_tr,
        y_train=rng.integers(0, classes, len(x_tr)),
        x_test=x_te,
        y_test=rng.integers(0, classes, len(x_te)),
    )
    return path


def test_loader_on_n_l_and_n_c_l_arrays(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x2 = rng.standard_normal((40, 23)) * 3 + 1
    d = data.load(data=_npz(tmp_path / "nl.npz", x2, x2[:10], rng), mode="1d", val_fraction=0.25)
    assert d.x_train.shape == (30, 1, 23) and d.x_val.shape == (10, 1, 23) and d.grid == (5, 5)
    # standardised with the training split's statistics: (x - m) / s, an affine map of the input
    order = np.random.default_rng(0).permutation(40)
    raw_tr = x2[order[10:]]
    m, s = raw_tr.mean(), raw_tr.std() + 1e-6
    np.testing.assert_allclose(d.x_test[:, 0], (x2[:10] - m) / s, rtol=1e-5, atol=1e-5)
    assert abs(d.x_train.mean()) < 1e-5

    x3 = rng.standard_normal((40, 3, 10)) * np.array([1.0, 5.0, 0.1])[:, None]
    d3 = data.load(data=_npz(tmp_path / "ncl.npz", x3, x3[:10], rng), mode="1d", val_fraction=0.25)
    assert d3.x_train.shape == (30, 3, 10) and d3.grid == (4, 4)
    np.testing.assert_allclose(d3.x_train.std(axis=(0, 2)), 1.0, rtol=1e-4)  # per channel
    p = data.load(data=tmp_path / "ncl.npz", mode="1d", val_fraction=0.25, permute=5)
    np.testing.assert_array_equal(p.x_test, d3.x_test[:, :, np.random.default_rng(5).permutation(10)])

    # (N, C, L) with C == L reads as images unless told; sequences refuse 2d mode
    sq = _npz(tmp_path / "sq.npz", rng.standard_normal((8, 4, 4)), rng.standard_normal((4, 4, 4)), rng)
    assert data.load(data=sq, mode="1d").x_train.shape[1:] == (1, 16)
    assert data.load(data=sq, mode="1d", layout="sequences").x_train.shape[1:] == (4, 4)
    with pytest.raises(ValueError, match=r"--mode.*\(N, C, L\).*--mode 1d"):
        data.load(data=tmp_path / "ncl.npz", mode="2d")
    with pytest.raises(ValueError, match=r"--layout images.*\(N, L\)"):
        data.load(data=tmp_path / "nl.npz", mode="1d", layout="images")
    mixed = _npz(tmp_path / "mixed.npz", x3, rng.standard_normal((5, 3, 10, 10)), rng)
    with pytest.raises(ValueError, match="x_train holds sequences and x_test images"):
        data.load(data=mixed, mode="1d")


def test_mnist1d_is_the_packages_default_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import random
    import socket

    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d generation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # the mnist1d package itself reseeds NumPy's legacy global generator: that is what is checked here
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    x_tr, y_tr, x_te, y_te = data.mnist1d_arrays()
    assert np.random.random() == np.random.RandomState(123).random()  # noqa: NPY002 - the global generator untouched
    assert random.random() == random.Random(123).random()
    assert x_tr.shape == (4000, 1, 40) and x_te.shape == (1000, 1, 40)
    np.testing.assert_array_equal(y_tr, ref["y"])
    np.testing.assert_array_equal(y_te, ref["y_test"])
    np.testing.assert_allclose(x_tr[:, 0], ref["x"], rtol=1e-6)
    np.testing.assert_allclose(x_te[[0, 17, 999], 0], ref["x_test"][[0, 17, 999]], rtol=1e-6)
    assert set(np.unique(y_tr)) == set(range(10))

    d = data.load("mnist1d", mode="1d")
    assert d.name == "mnist1d-1d" and d.grid == (7, 7) and d.num_classes == 10
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (3600, 400, 1000)
    np.testing.assert_array_equal(d.y_test, ref["y_test"])
    # the test set is only standardised (training statistics): an increasing affine map of the package's
    slope, icpt = np.polyfit(ref["x_test"].ravel(), d.x_test.ravel(), 1)
    np.testing.assert_allclose(d.x_test[:, 0], slope * ref["x_test"] + icpt, rtol=1e-4, atol=1e-4)
    assert slope > 0
    p = data.load("mnist1d", mode="1d", permute=0)
    assert p.name == "mnist1d-permuted0-1d"
    np.testing.assert_array_equal(p.x_test, d.x_test[:, :, np.random.default_rng(0).permutation(40)])
    with pytest.raises(ValueError, match="--mode 1d"):
        data.load("mnist1d", mode="2d")


def test_mnist1d_epochs_default() -> None:
    from hyperzzw_core.train.loop import TrainSettings

    assert TrainSettings(dataset="mnist1d").resolved_epochs() == 10
    assert TrainSettings().resolved_epochs() == 30
    assert TrainSettings(dataset="mnist1d", permute=0).resolved_epochs() == 20
    assert TrainSettings(dataset="mnist1d", epochs=3).resolved_epochs() == 3
    assert TrainSettings(dataset="mnist1d", data="x.npz").resolved_epochs() == 30


def test_train_on_sequences_end_to_end(tmp_path) -> None:
    """hyperzzw train on (N, C, L) data: the model takes (C, L) on square_grid(L), its kernels plot
    on that grid."""
    import json

    from hyperzzw_core.cli import main

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 48)
    x = rng.standard_normal((48, 2, 11)) + 1.5 * y[:, None, None] * np.sin(np.arange(11))
    path = tmp_path / "sig.npz"
    np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            str(path),
            "--mode",
            "1d",
            "--config",
            "tiny_1d",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["input_shape"] == [2, 11] and m["config"]["grid"] == [4, 4]
    assert m["dataset"] == "sig-1d" and len(m["epochs"]) == 1
    assert (out / "curves.png").stat().st_size > 0 and (out / "kernels.png").stat().st_size > 0
    assert math.isfinite(m["epochs"][0]["train_loss"])

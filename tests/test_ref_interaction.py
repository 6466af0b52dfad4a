"""Forward values of RGU, hyper-channel interaction and hyper interaction (spec §2.5, §2.7, §2.8).

Each is compared with an independent implementation written here from the notes: RGU in PyTorch
(1×1 convs, ``instance_norm``, exact GELU); the two interactions with explicit loops over (b, c)
and their MAGNet kernels from a NumPy transcription of the MFN recursion of §2.1. 1D and 2D.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from hyperzzw_core.reference import (
    hyper_channel_interaction,
    hyper_interaction,
    init_magnet_g,
    init_magnet_gc,
    rgu,
    tree_map,
)

DTYPES = (np.float64, np.float32)


def _tol(dtype) -> dict:
    return {"rtol": 1e-9, "atol": 1e-9} if dtype == np.float64 else {"rtol": 2e-3, "atol": 2e-3}


def _random_tree(tree, rng, scale=1.0):
    return tree_map(lambda a: scale * rng.standard_normal(np.shape(a)), tree)


def _cast(tree, dtype):
    return tree_map(lambda a: np.asarray(a, dtype=dtype), tree)


def _mfn_kernel(p: dict) -> np.ndarray:
    """MAGNet_G / MAGNet_GC on the grid of bias_p's shape → (C_out, *sizes), float64.

    h_1 = sin(W_0 c + b_0); h_{i+1} = sin(W_i c + b_i) ⊙ (A_i h_i + a_i) + bias_p; K = A_o h + a_o.
    """
    p = _cast(p, np.float64)
    sizes = p["bias_p"].shape
    axes = [np.linspace(-1.0, 1.0, k) for k in sizes]
    c = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(len(sizes), -1)  # (d, N)
    h = np.sin(np.einsum("hd,dn->hn", p["filters"][0]["weight"], c) + p["filters"][0]["bias"][:, None])
    for f, lin in zip(p["filters"][1:], p["linears"], strict=True):
        filt = np.sin(np.einsum("hd,dn->hn", f["weight"], c) + f["bias"][:, None])
        h = filt * (np.einsum("oh,hn->on", lin["weight"], h) + lin["bias"][:, None]) + p["bias_p"].reshape(1, -1)
    out = np.einsum("oh,hn->on", p["output"]["weight"], h) + p["output"]["bias"][:, None]
    return out.reshape((-1,) + sizes)


def _sigma(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _draw_common(data):
    ndim = data.draw(st.sampled_from([1, 2]), label="spatial dims")
    b = data.draw(st.integers(1, 3), label="batch")
    c = data.draw(st.integers(1, 6), label="channels")
    spatial = tuple(data.draw(st.integers(1, 6), label=f"spatial size {a}") for a in range(ndim))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return b, c, spatial, dtype, np.random.default_rng(seed)


# --------------------------------------------------------------------------------------- RGU


def _torch_rgu(params: dict, z: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Y = W_Y(GELU(IS(W_K Z ⊙ W_Q(W_V Z))) + B), B one spatial map for all samples and channels."""
    zt = torch.from_numpy(z.astype(np.float64))
    d = z.ndim - 2
    conv = F.conv1d if d == 1 else F.conv2d

    def lin(name, x):
        w = torch.from_numpy(np.asarray(params[name]["weight"], np.float64))
        return conv(x, w.reshape(w.shape + (1,) * d), torch.from_numpy(np.asarray(params[name]["bias"], np.float64)))

    prod = lin("w_k", zt) * lin("w_q", lin("w_v", zt))
    if int(np.prod(z.shape[2:])) > 1:
        n = F.instance_norm(prod, eps=eps)
    else:
        n = torch.zeros_like(prod)
    bias = torch.from_numpy(np.asarray(params["bias_p"], np.float64)).reshape((1, 1) + z.shape[2:])
    a = F.gelu(n) + bias.repeat((z.shape[0], z.shape[1]) + (1,) * d)
    return lin("w_y", a).numpy()


@given(data=st.data())
def test_rgu_matches_torch(data):
    b, c, spatial, dtype, rng = _draw_common(data)
    params = {
        n: {"weight": rng.standard_normal((c, c)), "bias": rng.standard_normal(c)} for n in ("w_k", "w_v", "w_q", "w_y")
    }
    params["bias_p"] = rng.standard_normal(spatial)
    params = _cast(params, dtype)
    z = rng.standard_normal((b, c) + spatial).astype(dtype)
    out = rgu(params, z)
    assert out.dtype == np.dtype(dtype) and out.shape == z.shape
    np.testing.assert_allclose(out, _torch_rgu(params, z), **_tol(dtype))


def test_rgu_value_path_acts_on_z_not_on_w_k_z():
    # W_Q(W_V Z), not W_Q(W_V(W_K Z)): with W_K a scaling by 2, the wrong reading would differ.
    rng = np.random.default_rng(0)
    c, spatial = 3, (4, 4)
    params = {n: {"weight": rng.standard_normal((c, c)), "bias": rng.standard_normal(c)} for n in ("w_v", "w_q", "w_y")}
    params["w_k"] = {"weight": 2.0 * np.eye(c), "bias": np.zeros(c)}
    params["bias_p"] = rng.standard_normal(spatial)
    z = rng.standard_normal((2, c) + spatial)
    np.testing.assert_allclose(rgu(params, z), _torch_rgu(params, z), rtol=1e-10, atol=1e-10)
    wrong = dict(
        params, w_v={"weight": params["w_v"]["weight"] @ params["w_k"]["weight"], "bias": params["w_v"]["bias"]}
    )
    assert np.abs(_torch_rgu(wrong, z) - rgu(params, z)).max() > 1e-3


# ---------------------------------------------------------------------- hyper-channel interaction


@given(data=st.data())
def test_hyper_channel_interaction_matches_loop(data):
    b, c, spatial, dtype, rng = _draw_common(data)
    hidden = data.draw(st.integers(1, 5), label="hidden")
    layers = data.draw(st.integers(1, 2), label="layers")
    randomize = data.draw(st.booleans(), label="randomize kernel parameters")
    kp = init_magnet_gc(rng, c, hidden, layers)
    if randomize:
        kp = _random_tree(kp, rng)
    params = _cast({"channel": kp}, dtype)
    z = (rng.standard_normal((b, c) + spatial) + rng.standard_normal((b, c) + (1,) * len(spatial))).astype(dtype)
    out = hyper_channel_interaction(params, z)
    assert out.dtype == np.dtype(dtype) and out.shape == z.shape
    k_c = _mfn_kernel(params["channel"])[0]  # (C,)
    want = np.empty(z.shape)
    for bi in range(b):
        for ci in range(c):
            s = float(np.mean(z[bi, ci].astype(np.float64)))
            want[bi, ci] = z[bi, ci] * _sigma(k_c[ci] * s * s)
    np.testing.assert_allclose(out, want, **_tol(dtype))


# ------------------------------------------------------------------------------ hyper interaction


@given(data=st.data())
def test_hyper_interaction_matches_loop(data):
    b, c, spatial, dtype, rng = _draw_common(data)
    hidden = data.draw(st.integers(1, 5), label="hidden")
    randomize = data.draw(st.booleans(), label="randomize kernel parameters")
    params = {"channel": init_magnet_gc(rng, c, hidden, 2), "spatial": init_magnet_g(rng, spatial, hidden + 1, 1, 2)}
    if randomize:
        params = _random_tree(params, rng)
    params = _cast(params, dtype)
    y = (rng.standard_normal((b, c) + spatial) + 0.5).astype(dtype)
    x = rng.standard_normal((b, c) + spatial).astype(dtype)
    out = hyper_interaction(params, y, x)
    assert out.dtype == np.dtype(dtype) and out.shape == x.shape
    k_cc = _mfn_kernel(params["channel"])[0]  # (C,)
    k_ss = _mfn_kernel(params["spatial"])[0]  # (*S)
    y64, x64 = y.astype(np.float64), x.astype(np.float64)
    want = np.empty(x.shape)
    for bi in range(b):
        s_s = y64[bi].mean(axis=0)  # mean over channels, (*S)
        score_s = k_ss * s_s**2
        for ci in range(c):
            s_c = float(y64[bi, ci].mean())  # GAP
            score_c = k_cc[ci] * s_c**2
            e = score_s * score_c
            want[bi, ci] = x64[bi, ci] * np.vectorize(_sigma)(e)
    np.testing.assert_allclose(out, want, **_tol(dtype))


def test_hyper_interaction_gates_x_by_scores_of_y_only():
    rng = np.random.default_rng(3)
    params = _random_tree(
        {"channel": init_magnet_gc(rng, 3, 4, 2), "spatial": init_magnet_g(rng, (4, 4), 4, 1, 2)}, rng
    )
    y = rng.standard_normal((2, 3, 4, 4)) + 1.0
    x1 = rng.standard_normal((2, 3, 4, 4))
    # The gate σ(·) ∈ [0, 1] depends on y alone: out / x is the same for any x.
    g1 = hyper_interaction(params, y, x1) / x1
    g2 = hyper_interaction(params, y, np.ones_like(x1))
    np.testing.assert_allclose(g1, g2, rtol=1e-10)
    assert np.all((g2 >= 0) & (g2 <= 1))

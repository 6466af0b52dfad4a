"""The shared parameter format: init equality across backends, DLPack conversion, npz and state_dict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from backends import Backend

import hyperzzw_core as h
from hyperzzw_core import params as P
from hyperzzw_core import reference as R
from hyperzzw_core.reference import flatten
from hyperzzw_core.testing import to_numpy


@pytest.mark.skip_backend("array_api_strict:no_float64", dtype="float64", reason="a float32-only device")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("preset", ["tiny", "tiny_1d"])
def test_init_params_same_values_on_every_backend(backend: Backend, preset: str, dtype: str) -> None:
    cfg = R.preset(preset)
    xp = backend.library_module
    got = P.init_params(cfg, 5, like=xp, device=backend.device, dtype=dtype)
    want = R.init_params(cfg, 5, dtype=np.dtype(dtype))
    g, w = flatten(got), flatten(want)
    assert list(g) == list(w)
    for k, v in w.items():
        assert backend.owns(g[k]), f"{k}: {type(g[k])} on {getattr(g[k], 'device', '?')}"
        assert str(g[k].dtype).rsplit(".", 1)[-1] == dtype, k
        assert np.array_equal(to_numpy(g[k]), v), k  # bit for bit


def test_init_params_like_an_array_and_defaults() -> None:
    cfg = R.tiny()
    p = P.init_params(cfg, 0)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in flatten(p).values())
    import array_api_strict as xs

    q = P.init_params(cfg, 0, like=xs.asarray(np.zeros(1, np.float32)), dtype=np.float32)
    assert all(v.dtype == xs.float32 for v in flatten(q).values())
    with pytest.raises(TypeError, match="config"):
        P.init_params("tiny", 0)
    with pytest.raises(TypeError, match="dtype"):
        P.init_params(cfg, 0, dtype="int32")


def test_dlpack_conversion_shares_memory_numpy_torch() -> None:
    torch = pytest.importorskip("torch")
    p = P.init_params(R.tiny(), 0)
    t = P.convert(p, torch)
    w_np, w_t = p["head"]["weight"], t["head"]["weight"]
    assert isinstance(w_t, torch.Tensor) and np.shares_memory(w_t.numpy(), w_np)  # no copy
    back = P.convert(t, np)
    assert np.shares_memory(flatten(back)["head.weight"], w_np)
    copied = P.convert(p, torch, copy=True)
    assert not np.shares_memory(copied["head"]["weight"].numpy(), w_np)
    cast = P.convert(p, torch, dtype="float32")
    assert cast["head"]["weight"].dtype == torch.float32
    assert np.array_equal(cast["head"]["weight"].numpy(), w_np.astype(np.float32))
    # a tensor that requires grad is exported detached, still without a copy
    g = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    out = P.convert({"a": g}, np)["a"]
    assert isinstance(out, np.ndarray) and np.shares_memory(out, g.detach().numpy())


@pytest.mark.skip_backend("array_api_strict:no_float64", reason="a float32-only device; float64 inputs")
def test_conversion_between_all_cpu_backends(backend: Backend) -> None:
    p = P.init_params(R.tiny_1d(), 1)
    moved = P.convert(p, backend.library_module, device=backend.device)
    assert all(backend.owns(v) for v in flatten(moved).values())
    again = P.to_numpy(moved)
    for k, v in flatten(p).items():
        assert np.array_equal(flatten(again)[k], v), k


def test_npz_round_trip(tmp_path) -> None:
    cfg = R.tiny()
    p = P.init_params(cfg, 2, dtype="float32")
    path = tmp_path / "p.npz"
    P.save_params(path, p)
    with np.load(path, allow_pickle=False) as data:
        assert list(data.files) == list(flatten(p))  # flat dotted keys
    q = P.load_params(path)
    assert list(flatten(q)) == list(flatten(p))
    for k, v in flatten(p).items():
        assert flatten(q)[k].dtype == np.float32 and np.array_equal(flatten(q)[k], v), k
    import array_api_strict as xs

    s = P.load_params(path, like=xs, dtype="float64")
    assert flatten(s)["head.weight"].dtype == xs.float64


def test_npz_loading_refuses_pickles(tmp_path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, **{"head.weight": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        P.load_params(path)


def test_state_dict_round_trip() -> None:
    torch = pytest.importorskip("torch")
    p = P.init_params(R.tiny_1d(), 0)
    sd = P.to_state_dict(p)
    assert list(sd) == list(flatten(p))
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    q = P.from_state_dict(sd, like=np)
    for k, v in flatten(p).items():
        assert np.array_equal(flatten(q)[k], v), k
    assert isinstance(P.from_state_dict(sd)["blocks"], list)


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, hyperzzw_core, hyperzzw_core.params, hyperzzw_core.regularizer; "
        "bad = [m for m in ('torch', 'cupy', 'jax') if m in sys.modules]; "
        "assert not bad, bad; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_version_has_one_source() -> None:
    # pyproject.toml reads the version from hyperzzw_core/__init__.py; the installed metadata agrees.
    import importlib.metadata

    assert importlib.metadata.version("hyperzzw") == h.__version__

"""The test infrastructure itself: the comparison helper refuses what the value-only check accepts,
and the per-backend markers apply where they say and refuse to be misused.

Each planted result below carries the right numbers in the wrong form (another dtype, another
library, another device): ``hyperzzw_core.testing.assert_close`` (values and shape only) accepts
it, which is the gap; ``xp_assert_close`` must refuse it, naming what is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys

import array_api_strict as xs
import numpy as np
import pytest
import torch
from backends import KNOWN, Backend, _numpy, _strict, _torch, backend_marks
from xp_assert import check_array, xp_assert_close, xp_assert_equal

import hyperzzw_core as h
from hyperzzw_core import reference as R
from hyperzzw_core.testing import assert_close


def _conv_case(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((2, 3, 6, 5)).astype(dtype), rng.standard_normal((3, 1, 3, 3)).astype(dtype)


def test_planted_wrong_dtype_is_refused() -> None:
    """A float32 call whose result comes back as float64 (a silent upcast)."""
    b = _torch("cpu")
    y, k = _conv_case("float32")
    want, low = R.depthwise_conv(y.astype(np.float64), k.astype(np.float64)), R.depthwise_conv(y, k)
    out = h.depthwise_conv(b.from_numpy(y), b.from_numpy(k))
    xp_assert_close(out, want, backend=b, dtype="float32", ref_low=low)  # the right result passes
    planted = out.double()
    assert_close(planted, want, dtype="float32", ref_low=low)  # the old check does not see it
    with pytest.raises(AssertionError, match=r"dtype: expected float32, got torch\.float64"):
        xp_assert_close(planted, want, backend=b, dtype="float32", ref_low=low)


def test_planted_wrong_namespace_is_refused() -> None:
    """A torch call whose result comes back as a NumPy array (a silent host copy)."""
    b = _torch("cpu")
    y, k = _conv_case("float64")
    want = R.depthwise_conv(y, k)
    out = h.depthwise_conv(b.from_numpy(y), b.from_numpy(k))
    xp_assert_close(out, want, backend=b, dtype="float64")
    planted = out.numpy()
    assert_close(planted, want, dtype="float64")
    with pytest.raises(AssertionError, match=r"namespace: expected \S*torch, got \S*numpy"):
        xp_assert_close(planted, want, backend=b, dtype="float64")
    with pytest.raises(AssertionError, match=r"namespace: .*builtins\.list is not an array"):
        check_array(planted.tolist(), want, backend=b, dtype="float64")


def test_planted_wrong_device_is_refused() -> None:
    """An array-api-strict call on the simulated ``device1`` whose result lands on the default device."""
    b = _strict("device1")
    y, k = _conv_case("float64")
    want = R.depthwise_conv(y, k)
    out = h.depthwise_conv(b.from_numpy(y), b.from_numpy(k))
    xp_assert_close(out, want, backend=b, dtype="float64")
    planted = out.to_device(xs.Device("CPU_DEVICE"))
    assert_close(planted, want, dtype="float64")
    with pytest.raises(AssertionError, match=r"device: expected .*device1.*, got .*CPU_DEVICE"):
        xp_assert_close(planted, want, backend=b, dtype="float64")


def test_planted_wrong_shape_and_values_are_refused() -> None:
    b = _numpy()
    want = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    with pytest.raises(AssertionError, match=r"shape: expected \(3, 4\), got \(4, 3\)"):
        xp_assert_close(want.reshape(4, 3).copy(), want, backend=b, dtype="float64")
    off = want.copy()
    off[1, 2] += 1e-8  # allowed here: 1e-10·(|e| + max|e|) ≈ 1.1e-10
    with pytest.raises(AssertionError, match="OUTSIDE tolerance"):
        xp_assert_close(off, want, backend=b, dtype="float64")
    xp_assert_equal(want.copy(), want, backend=b, dtype="float64")
    off[1, 2] = np.nextafter(want[1, 2], np.inf)  # one ulp: close, not equal
    xp_assert_close(off, want, backend=b, dtype="float64")
    with pytest.raises(AssertionError, match=r"values: 1 of 12 differ; first at \[1, 2\]"):
        xp_assert_equal(off, want, backend=b, dtype="float64")


def test_helper_knows_each_backend_namespace_and_device(backend: Backend) -> None:
    """The expected namespace and device are those of a freshly converted array, and a core result
    on a converted input matches them (so the refusals above are not refusals of everything)."""
    x = backend.from_numpy(np.linspace(-2.0, 2.0, 6, dtype=np.float32).reshape(1, 1, 6))
    got = h.gelu(x)
    xp_assert_close(
        got,
        R.gelu(np.linspace(-2.0, 2.0, 6).reshape(1, 1, 6)),
        backend=backend,
        dtype="float32",
        ref_low=R.gelu(np.linspace(-2.0, 2.0, 6, dtype=np.float32).reshape(1, 1, 6)),
    )
    assert backend.owns(got)


# ------------------------------------------------------------------------------ the markers


@pytest.mark.xfail_backend("numpy", reason="planted: this test fails on NumPy, and the marker must say so")
def test_xfail_marker_applies_on_its_backend(backend: Backend) -> None:
    """Fails on NumPy only: if the collection hook did not turn the marker into a (strict) xfail,
    the NumPy case would fail the run; if it marked the other backends, they would XPASS and fail."""
    assert backend.name != "numpy"


@pytest.mark.skip_backend("array_api_strict:device1", reason="planted: must never run on device1")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.skip_backend("torch", dtype="float32", reason="planted: must never run on torch in float32")
def test_skip_marker_applies_on_its_backend_and_condition(backend: Backend, dtype: str) -> None:
    assert backend.name != "array_api_strict:device1"
    assert (backend.name, dtype) != ("torch", "float32")


def _marks(*markers: pytest.MarkDecorator, **params: object) -> list[pytest.Mark]:
    return backend_marks("t", [m.mark for m in markers], params)


def test_backend_marks_apply_only_where_named() -> None:
    np_b, strict_b = _numpy(), _strict()
    skip = pytest.mark.skip_backend("numpy", reason="r")
    assert [m.name for m in _marks(skip, backend=np_b)] == ["skip"]
    assert _marks(skip, backend=strict_b) == []
    cond = pytest.mark.skip_backend("numpy", dtype="float64", reason="r")
    assert [m.name for m in _marks(cond, backend=np_b, dtype="float64")] == ["skip"]
    assert _marks(cond, backend=np_b, dtype="float32") == []
    (xf,) = _marks(pytest.mark.xfail_backend("numpy", reason="r"), backend=np_b)
    assert xf.name == "xfail" and xf.kwargs["strict"] is True


@pytest.mark.parametrize(
    "marker, params, match",
    [
        (pytest.mark.skip_backend("nunpy", reason="r"), {"backend": "numpy"}, r"unknown backends \['nunpy'\]"),
        (pytest.mark.skip_backend("numpy"), {"backend": "numpy"}, "reason= is required"),
        (pytest.mark.xfail_backend(reason="r"), {"backend": "numpy"}, "name at least one backend"),
        (pytest.mark.skip_backend("numpy", reason="r"), {"dtype": "float64"}, "uses no backend fixture"),
        (
            pytest.mark.skip_backend("numpy", dtpye="float64", reason="r"),
            {"backend": "numpy"},
            r"conditions on \['dtpye'\]",
        ),
    ],
)
def test_backend_marks_refuse_a_marker_that_could_never_apply(
    marker: pytest.MarkDecorator, params: dict, match: str
) -> None:
    params = {k: (_numpy() if v == "numpy" else v) for k, v in params.items()}
    with pytest.raises(pytest.UsageError, match=match):
        _marks(marker, **params)


def test_every_backend_name_is_known() -> None:
    assert {"numpy", "array_api_strict", "torch", "jax", "cupy", "torch:cuda"} <= set(KNOWN)
    assert torch.float64 is _torch("cpu").xp.float64


def test_workers_share_the_cores_instead_of_oversubscribing_them() -> None:
    """Under pytest-xdist each worker's torch pool, and what its subprocesses inherit, is its share of
    the cores (tests/conftest.py): workers × threads never exceeds the cores unless the user asked."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        pytest.skip("not under pytest-xdist (-n0): one process, torch's own default")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    expected = max(1, cores // int(workers))
    if "OMP_NUM_THREADS" in os.environ and os.environ["OMP_NUM_THREADS"] != str(expected):
        expected = int(os.environ["OMP_NUM_THREADS"])  # the user's explicit setting wins
    assert torch.get_num_threads() == expected
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(child.stdout) == expected


_MISSING_JAX = """
import sys
sys.modules["jax"] = None  # import jax now raises ImportError: JAX missing, as on a broken install
import backends, pytest
param = next(p for p in backends.BACKEND_PARAMS if p.id == "jax")
try:
    backends.resolve(param.values[0])
    print("resolved")
except pytest.fail.Exception as e:
    print("failed:", e)
except pytest.skip.Exception as e:
    print("skipped:", e)
try:
    backends.import_or_skip("jax", "jax")
    print("imported")
except pytest.skip.Exception:
    print("import skipped")
except ImportError:
    print("import failed")
"""


@pytest.mark.parametrize(
    "require, resolved, imported",
    [("", "skipped", "import skipped"), ("jax", "failed", "import failed"), ("numpy,jax", "failed", "import failed")],
)
def test_a_required_backend_that_is_missing_fails_instead_of_skipping(
    require: str, resolved: str, imported: str
) -> None:
    """HYPERZZW_REQUIRE_BACKENDS (CI sets jax): without it a missing JAX skips its tests, with it they fail."""
    env = {**os.environ, "HYPERZZW_REQUIRE_BACKENDS": require}
    env.pop("HYPERZZW_BACKENDS", None)
    here = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", _MISSING_JAX], cwd=here, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith(resolved + ":"), out.stdout
    assert "backend jax unavailable" in first, out.stdout
    assert second == imported, out.stdout


def test_an_unknown_required_backend_is_a_usage_error() -> None:
    """Refused at import, even where no selected backend is missing (only numpy is selected here)."""
    env = {**os.environ, "HYPERZZW_REQUIRE_BACKENDS": "jaxx", "HYPERZZW_BACKENDS": "numpy"}
    here = os.path.dirname(__file__)
    code = "import backends"
    out = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "HYPERZZW_REQUIRE_BACKENDS: unknown backends ['jaxx']" in out.stderr, out.stderr

"""The backend layer of the core: portable erf, convolution paths, namespaces, devices, grids."""

from __future__ import annotations

import numpy as np
import pytest
from backends import Backend
from scipy import special
from xp_assert import xp_assert_close

import hyperzzw_core as h
from hyperzzw_core import _backend as B
from hyperzzw_core import reference as R
from hyperzzw_core.testing import assert_close, to_numpy


def test_portable_erf_float64_accuracy() -> None:
    """erf_portable (standard functions only) within 4 ulp of SciPy's erf, special values exact."""
    import array_api_strict as xs

    x = np.concatenate([np.linspace(-7, 7, 4001), np.geomspace(1e-300, 1e-3, 50), [1.9999999, 2.0, 2.0000001]])
    got = to_numpy(h.erf_portable(xs, xs.asarray(x)))
    want = special.erf(x)
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
    assert rel.max() <= 4 * np.finfo(np.float64).eps, (rel.max(), x[rel.argmax()])
    special_x = xs.asarray(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 40.0]))
    s = to_numpy(h.erf_portable(xs, special_x))
    assert s[0] == 0.0 and s[2] == 1.0 and s[3] == -1.0 and np.isnan(s[4]) and s[5] == 1.0


def test_portable_erf_float32() -> None:
    import array_api_strict as xs

    x = np.linspace(-6, 6, 2001).astype(np.float32)
    got = h.erf_portable(xs, xs.asarray(x))
    assert got.dtype == xs.float32
    want = special.erf(x.astype(np.float64))
    assert np.abs(to_numpy(got) - want).max() <= 4 * np.finfo(np.float32).eps


def test_sigmoid_does_not_overflow(backend: Backend) -> None:
    dt = "float64" if backend.float64 else "float32"
    x = backend.from_numpy(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=dt))
    s = to_numpy(h.sigmoid(x))  # filterwarnings=error: an overflow warning would fail
    assert s[0] == 0.0 and s[2] == 0.5 and s[4] == 1.0


@pytest.mark.skip_backend("array_api_strict:no_float64", reason="a float32-only device; float64 inputs")
@pytest.mark.parametrize("shape, k", [((2, 3, 9, 8), 7), ((1, 2, 20, 20), 17), ((2, 3, 40), 21)])
def test_fft_depthwise_conv_matches_reference(backend: Backend, shape: tuple, k: int) -> None:
    """The FFT path (standard ``fft`` extension) equals the direct correlation."""
    rng = np.random.default_rng(0)
    y = rng.standard_normal(shape)
    kern = rng.standard_normal((shape[1], 1) + (k,) * (len(shape) - 2))
    out = h.depthwise_conv_fft(backend.from_numpy(y), backend.from_numpy(kern))
    xp_assert_close(out, R.depthwise_conv(y, kern), backend=backend, dtype="float64", name="fft conv")


def test_large_kernels_take_the_fft_path_on_generic_backends() -> None:
    import array_api_strict as xs

    rng = np.random.default_rng(1)
    y, kern = rng.standard_normal((1, 2, 24, 24)), rng.standard_normal((2, 1, 17, 17))
    assert 17 * 17 > B.FFT_MIN_TAPS
    out = h.depthwise_conv(xs.asarray(y), xs.asarray(kern))
    assert_close(out, R.depthwise_conv(y, kern), dtype="float64", name="auto conv")


def test_mixed_libraries_are_named_in_the_error() -> None:
    torch = pytest.importorskip("torch")
    z = np.zeros((1, 2, 3, 3))
    with pytest.raises(TypeError, match=r"z is numpy\.ndarray.*k_g is torch\.Tensor"):
        h.hyperzzw_global(z, torch.zeros(1, 2, 3, 3, dtype=torch.float64), z)


def test_mixed_devices_are_named_in_the_error() -> None:
    import array_api_strict as xs

    a = xs.asarray(np.zeros((1, 2, 3, 3)))
    b = xs.asarray(np.zeros((1, 2, 3, 3)), device=xs.Device("device1"))
    with pytest.raises(ValueError, match="different devices"):
        h.hyperzzw_2e(a, b)


def test_non_arrays_are_rejected_clearly() -> None:
    with pytest.raises(TypeError, match="x: expected an array"):
        h.gelu([1.0, 2.0])


def test_coordinate_grid_matches_reference(backend: Backend) -> None:
    xp = backend.library_module
    for sizes in [(5,), (4, 7), (1, 3), (32, 32)]:
        dt = "float64" if backend.float64 else "float32"
        g = h.coordinate_grid(sizes, xp=xp, device=backend.device, dtype=getattr(xp, dt))
        assert backend.owns(g) and tuple(g.shape) == (len(sizes),) + sizes
        assert np.array_equal(to_numpy(g), R.coordinate_grid(sizes).astype(dt)), sizes
    assert np.array_equal(h.coordinate_grid((3, 3)), R.coordinate_grid((3, 3)))


def test_dtype_is_preserved_and_not_mixed() -> None:
    import array_api_strict as xs

    z = xs.asarray(np.ones((1, 2, 3, 3), np.float32))
    with pytest.raises(TypeError, match="float32"):
        h.hyperzzw_global(z, xs.asarray(np.ones((1, 2, 3, 3))), z)
    assert h.gelu(z).dtype == xs.float32


@pytest.mark.skip_backend("array_api_strict:no_float64", reason="a float32-only device; float64 inputs")
def test_magnet_l_stop_gradient_values(backend: Backend) -> None:
    """Passing the stop-gradient values back leaves the kernel unchanged (same as the reference)."""
    rng = np.random.default_rng(2)
    p = R.init_magnet_l(rng, 3, 2, 4, 2, 2)
    x = rng.standard_normal((2, 2, 6, 6))
    frozen = R.magnet_l_stop_gradient_values(p, x)
    out = h.magnet_l(
        backend.convert(p), backend.from_numpy(x), stop_gradient_values=[backend.from_numpy(f) for f in frozen]
    )
    xp_assert_close(out, R.magnet_l(p, x), backend=backend, dtype="float64", name="magnet_l with frozen values")


@pytest.mark.skip_backend("array_api_strict:no_float64", reason="a float32-only device; float64 inputs")
def test_dropout_from_numpy_rng_matches_reference(backend: Backend) -> None:
    """terminator_forward(train=True, rng=...) draws the reference's masks and uploads them."""
    cfg = R.tiny().replace(dropout=(0.3, 0.3, 0.3, 0.3))
    p = R.init_params(cfg, 0)
    x = np.random.default_rng(0).standard_normal((2,) + cfg.input_shape)
    got = h.terminator_forward(
        backend.convert(p), backend.from_numpy(x), cfg, train=True, rng=np.random.default_rng(9)
    )[0]
    want = R.terminator_forward(p, x, cfg, train=True, rng=np.random.default_rng(9))[0]
    xp_assert_close(got, want, backend=backend, dtype="float64", name="logits with dropout")


@pytest.mark.skip_backend("array_api_strict:no_float64", reason="a float32-only device; float64 inputs")
def test_regularizer_is_portable(backend: Backend) -> None:
    from hyperzzw_core.regularizer import l2_partition, l2_regularizer

    p = R.init_params(R.tiny(), 0)
    flat = R.flatten(p)
    part = l2_partition(p)
    direct = 1e-3 * (
        sum(np.linalg.norm(flat[k]) for k in part.fast) + 1e-6 * sum(np.linalg.norm(flat[k]) for k in part.slow)
    )
    got = l2_regularizer(backend.convert(p), 1e-3)
    assert backend.owns(got)
    assert abs(float(to_numpy(got)) - direct) <= 1e-12 * direct


def test_each_namespace_gets_its_library_backend_once() -> None:
    """One backend object per library, looked up by namespace name (wrappers that forward
    ``__name__``, like the torch adapter's global-batch namespace, get their library's)."""
    import array_api_compat.numpy as xnp
    import array_api_compat.torch as xt
    import array_api_strict as xs

    from hyperzzw_core import backends

    class Wrapper:  # forwards everything, as adapters/_torch_distributed.GlobalBatchNamespace does
        def __getattr__(self, name: str):
            return getattr(xt, name)

    assert isinstance(backends.backend_for(xnp), backends.NumPyBackend)
    assert isinstance(backends.backend_for(xt), backends.TorchBackend)
    assert isinstance(backends.backend_for(Wrapper()), backends.TorchBackend)
    generic = backends.backend_for(xs)
    assert type(generic) is backends.ArrayAPIBackend and backends.backend_for(xs) is generic
    assert backends.backend_for(xnp) is backends.backend_for(xnp)


def test_no_library_branches_outside_the_backend_classes() -> None:
    """Operator modules ask their backend; only hyperzzw_core/backends/ names a library's fast path."""
    import re
    from pathlib import Path

    core = Path(h.__file__).parent
    pattern = re.compile(r"\bis_(torch|numpy|cupy|jax)\b|\bfused\(|_cupy_kernels\b|_torch_functions\b")
    offenders = [
        f"{path.relative_to(core)}:{i}: {line.strip()}"
        for path in sorted(core.rglob("*.py"))
        if "backends" not in path.relative_to(core).parts
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize(
    "shape, k", [((1, 1, 5), 1), ((2, 3, 11), 9), ((1, 1, 4, 4), 1), ((2, 3, 7, 6), 5), ((1, 2, 9, 9), 9)]
)
def test_numpy_sliding_window_conv_equals_the_portable_shifted_slices(shape: tuple, k: int) -> None:
    """The NumPy backend's direct convolution (one contraction over a windowed view) against the
    portable sum of shifted slices run on array-api-strict: two independent formulations."""
    import array_api_strict as xs

    from hyperzzw_core.backends import depthwise_conv_direct, sliding_window_correlate

    rng = np.random.default_rng(k)
    y = rng.standard_normal(shape)
    kern = rng.standard_normal((shape[1], 1) + (k,) * (len(shape) - 2))
    want = to_numpy(depthwise_conv_direct(xs, xs.asarray(y), xs.asarray(kern)))
    assert_close(sliding_window_correlate(y, kern), want, dtype="float64", name=f"sliding window k={k}")

"""The compiled CPU kernels (hyperzzw_core/backends/_cpu_kernels.c) against independent float64
computations: the depth-wise weight gradient as a NumPy sum over shifted slices, and the torch
Functions that use it against float64 autograd of torch's own convolution.

The kernels are optional at install (pyproject.toml): without them, or where the torch backend
does not take them (a CPU without AVX-512: tests/test_cpu_kernel_gate.py), these tests skip, unless
``HYPERZZW_REQUIRE_COMPILED=1`` (CI sets it), which turns the skip into a failure, so that a build
that silently lost its compiled kernels cannot pass.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hyperzzw_core import backends  # noqa: E402
from hyperzzw_core.backends import _torch_functions as TF  # noqa: E402

REQUIRED = os.environ.get("HYPERZZW_REQUIRE_COMPILED", "") not in ("", "0")

if TF.cpu_kernels is None:
    if REQUIRED:
        raise ImportError(
            "HYPERZZW_REQUIRE_COMPILED=1 but the torch backend does not take "
            f"hyperzzw_core.backends._cpu_kernels: {backends.cpu_kernels_status()}"
        )
    pytest.skip(f"the compiled CPU kernels: {backends.cpu_kernels_status()}", allow_module_level=True)

kernels = TF.cpu_kernels


def _weight_grad_f64(y: np.ndarray, g: np.ndarray, kh: int, kw: int, magnitude: bool = False) -> np.ndarray:
    """Σ_b Σ_{h,w} g[b,c,h,w]·y[b,c,h+i−kh//2,w+j−kw//2] in float64, one shifted slice per (i, j)
    (with ``magnitude``, of |g|·|y|: the scale of the rounding error)."""
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    if magnitude:
        y64, g64 = np.abs(y64), np.abs(g64)
    _, c, h, w = y.shape
    ph, pw = kh // 2, kw // 2
    yp = np.pad(y64, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((c, 1, kh, kw))
    for i in range(kh):
        for j in range(kw):
            out[:, 0, i, j] = np.einsum("bchw,bchw->c", g64, yp[:, :, i : i + h, j : j + w])
    return out


def _kernel(y: np.ndarray, g: np.ndarray, kh: int, kw: int, threads: int) -> np.ndarray:
    yc, gc = np.ascontiguousarray(y, np.float32), np.ascontiguousarray(g, np.float32)
    b, c, h, w = yc.shape
    out = np.full((c, 1, kh, kw), np.nan)
    kernels.depthwise_weight_grad(yc.ctypes.data, gc.ctypes.data, out.ctypes.data, b, c, h, w, kh, kw, threads)
    return out


def _bound(y: np.ndarray, g: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Each sample's float32 sum has at most H + 8 products per lane: |error| ≤ (H + 9)·2⁻²⁴ of the
    sum of |products| (the float64 additions add less than 2⁻⁵⁰ of it)."""
    return (y.shape[2] + 9) * 2.0**-24 * _weight_grad_f64(y, g, kh, kw, magnitude=True) + 1e-300


CASES = [
    # (B, C, H, W, kh, kw): every width, widths below, at and around the 16 lanes, kh != kw, H = 1
    (2, 3, 8, 8, 3, 3),
    (3, 5, 7, 20, 5, 3),
    (2, 4, 12, 16, 7, 7),
    (2, 2, 9, 17, 9, 9),
    (1, 3, 5, 33, 1, 5),
    (2, 3, 1, 50, 1, 9),
    (2, 3, 1, 1, 1, 1),
    (2, 2, 6, 5, 11, 3),
    (4, 3, 3, 3, 9, 9),
    (2, 6, 10, 31, 3, 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_depthwise_weight_grad_matches_shifted_slices_in_float64(case: tuple[int, ...]) -> None:
    b, c, h, w, kh, kw = case
    rng = np.random.default_rng(sum(case))
    y = rng.standard_normal((b, c, h, w)).astype(np.float32)
    g = rng.standard_normal((b, c, h, w)).astype(np.float32)
    got = _kernel(y, g, kh, kw, threads=2)
    want = _weight_grad_f64(y, g, kh, kw)
    assert np.all(np.abs(got - want) <= _bound(y, g, kh, kw)), np.abs(got - want).max()
    # a kernel flipped (correlation against convolution) or transposed is caught by this comparison
    if kh > 1 or kw > 1:
        flipped = want[:, :, ::-1, ::-1]
        assert not np.all(np.abs(got - flipped) <= _bound(y, g, kh, kw))


def test_depthwise_weight_grad_is_the_same_for_every_thread_count() -> None:
    """The channels are split over the threads and each channel is summed in one order: the result
    is bitwise the same for 1, 2, 3 threads and more threads than channels."""
    rng = np.random.default_rng(5)
    y = rng.standard_normal((3, 5, 11, 19)).astype(np.float32)
    g = rng.standard_normal((3, 5, 11, 19)).astype(np.float32)
    one = _kernel(y, g, 7, 5, threads=1)
    for threads in (2, 3, 8):
        assert np.array_equal(_kernel(y, g, 7, 5, threads), one), threads


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
def test_kernels_run_in_torchs_own_openmp_team() -> None:
    """The kernels' threads are torch's OpenMP team (_cpu_kernels.c): the OpenMP entry point that
    the extension resolves is the very function torch's library resolves (one runtime for both,
    whatever other runtimes the process holds, as scikit-learn's), and after torch's own parallel
    call the kernels start no thread (counted in a fresh interpreter, where no other test's
    threads start or end meanwhile). A build against another OpenMP would keep a team of its own,
    whose threads contend with torch's spinning worker for the cores."""
    import ctypes
    import subprocess
    import sys

    def entry(path: str) -> int | None:
        return ctypes.cast(ctypes.CDLL(path).GOMP_parallel, ctypes.c_void_p).value

    libtorch = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    assert entry(kernels.__file__) == entry(libtorch)
    if not os.path.exists("/proc/self/task"):
        pytest.skip("reads /proc (Linux)")
    script = """
import os
import numpy as np
import torch
from hyperzzw_core.backends import _torch_functions as TF
torch.set_num_threads(2)
torch.sigmoid(torch.randn(2**20))  # torch's parallel call: its team exists
y = torch.from_numpy(np.random.default_rng(6).standard_normal((2, 4, 9, 17)).astype(np.float32))
before = len(os.listdir("/proc/self/task"))
TF.compiled_depthwise_weight_grad(y, y, torch.zeros(4, 1, 3, 3))
TF.depthwise_conv(y, torch.ones(4, 1, 3, 3), False)
TF.standardize_channels(y.reshape(2, 4, -1), 1e-5)
TF.linear_rows(torch.ones(7, 4), None, [y.reshape(2, 4, -1)], False)
print(before, len(os.listdir("/proc/self/task")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 2 and out[0] == out[1], out


def test_the_core_loads_the_extension_only_after_torch() -> None:
    """Importing the core (and asking :func:`compiled_kernels`) before torch neither imports the
    extension nor maps an OpenMP runtime: a runtime loaded first would be the one torch gets
    (``_compiled.load_cpu_kernels``). Once the torch backend is imported, the extension is loaded.
    In a fresh interpreter."""
    import subprocess
    import sys

    script = """
import sys
import hyperzzw_core
from hyperzzw_core.backends import compiled_kernels
present = compiled_kernels()
gomp = [line for line in open("/proc/self/maps") if "libgomp" in line]
print(all(present.values()), "hyperzzw_core.backends._cpu_kernels" in sys.modules, "torch" in sys.modules, bool(gomp))
import torch
from hyperzzw_core.backends import _torch_functions
print("hyperzzw_core.backends._cpu_kernels" in sys.modules)
"""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("reads /proc (Linux)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False", "False", "True"], out


def test_depthwise_weight_grad_is_more_accurate_than_a_float32_sum() -> None:
    """At a network's size ((8, 16, 32, 32), k = 9), the float64 sums over lanes and samples keep
    the error below 1e-6 of the scale, where oneDNN's float32 kernel is measured at about 1e-5."""
    rng = np.random.default_rng(6)
    y = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    g = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    want = _weight_grad_f64(y, g, 9, 9)
    scale = np.abs(want).max()
    assert np.abs(_kernel(y, g, 9, 9, threads=2) - want).max() <= 1e-6 * scale
    cl = torch.channels_last
    onednn = torch.ops.aten.convolution_backward(
        torch.from_numpy(g).contiguous(memory_format=cl),
        torch.from_numpy(y).contiguous(memory_format=cl),
        torch.zeros(16, 1, 9, 9),
        None,
        (1, 1),
        (4, 4),
        (1, 1),
        False,
        (0, 0),
        16,
        (False, True, False),
    )[1]
    assert np.abs(onednn.double().numpy() - want).max() > np.abs(_kernel(y, g, 9, 9, threads=2) - want).max()


def test_the_exported_widths_are_the_widths_the_kernel_takes() -> None:
    """``depthwise_weight_grad_widths`` (what the torch backend routes by) names exactly the kernel
    widths the C function accepts, kw from 0 to 12."""
    y = np.zeros((1, 1, 3, 13), np.float32)
    taken = []
    for kw in range(13):
        try:
            _kernel(y, y, 1, kw, threads=1)
        except ValueError:
            continue
        taken.append(kw)
    assert tuple(taken) == kernels.depthwise_weight_grad_widths == (1, 3, 5, 7, 9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 3, 4, 4, 3, 11, 1), "kernel (kh, kw) must have an odd kh and kw in {1, 3, 5, 7, 9}, got (3, 11)"),
        ((2, 3, 4, 4, 4, 3, 1), "got (4, 3)"),
        ((2, 0, 4, 4, 3, 3, 1), "shape (B, C, H, W) must be positive, got (2, 0, 4, 4)"),
        ((2, 3, 4, 4, 3, 3, 0), "threads must be at least 1, got 0"),
    ],
)
def test_depthwise_weight_grad_refuses_bad_arguments_by_name(args: tuple[int, ...], message: str) -> None:
    buf = np.zeros(64)
    with pytest.raises(ValueError, match=r"depthwise_weight_grad: .*") as info:
        kernels.depthwise_weight_grad(buf.ctypes.data, buf.ctypes.data, buf.ctypes.data, *args)
    assert message in str(info.value)


def test_compiled_route_applies_only_where_the_kernel_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    y, k = torch.zeros(2, 3, 8, 8), torch.zeros(3, 1, 5, 3)
    assert TF.compiled_weight_grad_applies(y, k, (2, 1))
    assert not TF.compiled_weight_grad_applies(y, k, (1, 1))  # not 'same'
    assert not TF.compiled_weight_grad_applies(y.double(), k.double(), (2, 1))  # float64: oneDNN
    assert not TF.compiled_weight_grad_applies(y, torch.zeros(3, 1, 3, 11), (1, 5))  # kw = 11
    assert not TF.compiled_weight_grad_applies(y, torch.zeros(3, 1, 4, 3), (2, 1))  # even kh
    assert not TF.compiled_weight_grad_applies(y[:, :, 0], k[:, :, 0], (1,))  # (B, C, L): callers add the axis
    with pytest.raises(
        ValueError, match=r"g and y must have one shape \(B, C, H, W\), got \(2, 3, 8, 7\) and \(2, 3, 8, 8\)"
    ):
        TF.compiled_depthwise_weight_grad(torch.zeros(2, 3, 8, 7), y, k)
    # the operators refuse what their kernels would misread, naming the argument
    with pytest.raises(
        ValueError, match=r"depthwise_weight_grad: g must be float32 on the CPU, got torch.float64 on cpu"
    ):
        torch.ops.hyperzzw.depthwise_weight_grad(y.double(), y, 5, 3)
    with pytest.raises(ValueError, match=r"hyperzzw::standardize: x must be float32 on the CPU, got torch.float64"):
        torch.ops.hyperzzw.standardize(torch.zeros(2, 3, 4, dtype=torch.float64), 1e-5)
    with pytest.raises(ValueError, match=r"hyperzzw::standardize: x must be \(B, C, N\), got shape \(2, 3, 4, 1\)"):
        torch.ops.hyperzzw.standardize(torch.zeros(2, 3, 4, 1), 1e-5)
    assert backends.compiled_kernels() == {
        "depthwise_conv": True,
        "depthwise_weight_grad": True,
        "linear_rows": True,
        "standardize": True,
        "global_products": True,
    }
    monkeypatch.setattr(TF, "cpu_kernels", None)
    assert not TF.compiled_weight_grad_applies(y, k, (2, 1))


def _conv_mixer_f64(y: torch.Tensor, k: torch.Tensor, w: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> list:
    """Gradients of M = W·DWConv(Y, K) + β in float64 by torch's convolution under autograd."""
    ins = [t.detach().double().requires_grad_() for t in (y, k, w, b)]
    y4, k4 = (ins[0][:, :, None], ins[1][:, :, None]) if y.ndim == 3 else (ins[0], ins[1])
    pad = tuple(int(v) // 2 for v in k4.shape[2:])
    d = torch.nn.functional.conv2d(y4, k4, padding=pad, groups=int(y.shape[1])).reshape(y.shape[0], y.shape[1], -1)
    m = torch.einsum("oc,bcn->bon", ins[2], d) + ins[3][:, None]
    return list(torch.autograd.grad(m, ins, g.double()))


@pytest.mark.parametrize("shape", [(2, 6, 9, 11), (2, 6, 9, 19), (3, 4, 40)], ids=["2d", "2d-wide", "1d"])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "onednn"])
def test_depthwise_functions_have_float64_gradients_on_both_routes(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], compiled: bool
) -> None:
    """``DepthwiseConvMixer`` and ``DepthwiseConvOneDNN`` with and without the compiled kernels:
    every gradient within float32 rounding of float64 autograd, and each kernel called exactly
    where it applies (the correlation from 16 columns: forward, its recomputation for ∂W and ∂Y
    turned in the mixer, forward and ∂Y turned alone)."""
    calls: list[tuple[int, ...]] = []
    convs: list[bool] = []
    body, conv = TF.compiled_depthwise_weight_grad, TF.depthwise_conv

    def counted(g: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(k.shape))
        return body(g, y, k)

    def counted_conv(y: torch.Tensor, k: torch.Tensor, turned: bool) -> torch.Tensor:
        convs.append(turned)
        return conv(y, k, turned)

    monkeypatch.setattr(TF, "compiled_depthwise_weight_grad", counted)
    monkeypatch.setattr(TF, "depthwise_conv", counted_conv)
    if not compiled:
        monkeypatch.setattr(TF, "cpu_kernels", None)
    rng = np.random.default_rng(len(shape))
    c, kk = shape[1], 7
    kshape = (c, 1, kk) if len(shape) == 3 else (c, 1, kk, 5)
    y = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).requires_grad_()
    k = torch.from_numpy((rng.standard_normal(kshape) / kk).astype(np.float32)).requires_grad_()
    w = torch.from_numpy((rng.standard_normal((5, c)) / 3).astype(np.float32)).requires_grad_()
    b = torch.from_numpy(rng.standard_normal(5).astype(np.float32)).requires_grad_()
    n = int(np.prod(shape[2:]))
    g = torch.from_numpy(rng.standard_normal((shape[0], 5, n)).astype(np.float32))
    pad = tuple(int(v) // 2 for v in kshape[2:])
    m = TF.DepthwiseConvMixer.apply(y, k, w, b, pad)
    got = torch.autograd.grad(m, (y, k, w, b), g)
    for t, want, name in zip(got, _conv_mixer_f64(y, k, w, b, g), ("Y", "K", "W", "beta"), strict=True):
        err = float((t.double() - want).abs().max() / want.abs().max())
        assert err < 2e-6, (name, err)
    # the convolution alone (DepthwiseConvOneDNN): ∂K against float64
    y4 = y.detach()[:, :, None] if y.ndim == 3 else y.detach()
    k4 = k.detach()[:, :, None] if y.ndim == 3 else k.detach()
    y4.requires_grad_()
    k4.requires_grad_()
    d = TF.DepthwiseConvOneDNN.apply(y4, k4, (0, kk // 2) if y.ndim == 3 else pad)
    gd = torch.from_numpy(rng.standard_normal(tuple(d.shape)).astype(np.float32))
    gy, gk = torch.autograd.grad(d, (y4, k4), gd)
    y64, k64 = y4.detach().double().requires_grad_(), k4.detach().double().requires_grad_()
    d64 = torch.nn.functional.conv2d(y64, k64, padding=tuple(int(v) // 2 for v in k4.shape[2:]), groups=c)
    wy, wk = torch.autograd.grad(d64, (y64, k64), gd.double())
    for t, want in ((gy, wy), (gk, wk)):
        assert float((t.double() - want).abs().max() / want.abs().max()) < 2e-6
    k4shape = (c, 1, 1, kk) if y.ndim == 3 else kshape
    assert calls == ([k4shape, k4shape] if compiled else [])
    assert convs == ([False, False, True, False, True] if compiled and shape[-1] >= 16 else [])


def test_the_mixers_routed_input_gradient_takes_the_compiled_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """At a size the point-wise linear routes (O·C·N = 128·128·1024), ``DepthwiseConvMixer`` forms
    ∂D = Wᵀ·g by the compiled product (transposed), and every gradient stays within float32
    rounding of float64 autograd."""
    transposed: list[bool] = []
    body = TF.linear_rows

    def counted(w: torch.Tensor, b: Any, xs: Any, t: bool) -> torch.Tensor:
        transposed.append(t)
        return body(w, b, xs, t)

    monkeypatch.setattr(TF, "linear_rows", counted)
    rng = np.random.default_rng(12)
    y = torch.from_numpy(rng.standard_normal((1, 128, 32, 32)).astype(np.float32)).requires_grad_()
    k = torch.from_numpy((rng.standard_normal((128, 1, 3, 3)) / 3).astype(np.float32)).requires_grad_()
    w = torch.from_numpy((rng.standard_normal((128, 128)) / 11).astype(np.float32)).requires_grad_()
    b = torch.from_numpy(rng.standard_normal(128).astype(np.float32)).requires_grad_()
    g = torch.from_numpy(rng.standard_normal((1, 128, 1024)).astype(np.float32))
    got = torch.autograd.grad(TF.DepthwiseConvMixer.apply(y, k, w, b, (1, 1)), (y, k, w, b), g)
    assert transposed == [False, True]  # the forward's product, then ∂D
    for t, want, name in zip(got, _conv_mixer_f64(y, k, w, b, g), ("Y", "K", "W", "beta"), strict=True):
        err = float((t.double() - want).abs().max() / want.abs().max())
        assert err < 2e-6, (name, err)


def test_the_float64_gradient_check_catches_a_planted_correlation_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel module whose correlation ignores ``turned`` (∂Y computed with k as it lies, the
    bug of a port that forgets the turn): ∂Y of ``DepthwiseConvOneDNN`` is then far from float64
    autograd, while D itself is still right."""

    class Planted:
        def __getattr__(self, name: str) -> Any:
            return getattr(kernels, name)

        @staticmethod
        def depthwise_conv(*args: Any) -> None:
            kernels.depthwise_conv(*args[:9], False, args[10])

    monkeypatch.setattr(TF, "cpu_kernels", Planted())
    rng = np.random.default_rng(5)
    y = torch.from_numpy(rng.standard_normal((2, 3, 9, 20)).astype(np.float32)).requires_grad_()
    k = torch.from_numpy(rng.standard_normal((3, 1, 5, 3)).astype(np.float32))
    d = TF.DepthwiseConvOneDNN.apply(y, k, (2, 1))
    assert torch.equal(d, torch.nn.functional.conv2d(y.detach(), k, padding=(2, 1), groups=3))
    gd = torch.from_numpy(rng.standard_normal(tuple(d.shape)).astype(np.float32))
    (gy,) = torch.autograd.grad(d, (y,), gd)
    y64 = y.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(
        torch.nn.functional.conv2d(y64, k.double(), padding=(2, 1), groups=3), (y64,), gd.double()
    )
    assert float((gy.double() - want).abs().max() / want.abs().max()) > 0.1


# (B, C, H, W, kh, kw): the square kernels of every compiled size on images whose rows fill whole
# 16-lane vectors or not and whose heights are multiples of the 8-row blocks or not; the general
# kernel (non-square, 1 × k as 1-D inputs take it, 11 × 11)
DW_CASES = [
    (2, 3, 32, 32, 3, 3),
    (2, 3, 9, 17, 5, 5),
    (1, 2, 13, 40, 7, 7),
    (3, 2, 8, 8, 9, 9),
    (1, 2, 5, 21, 9, 9),
    (2, 4, 1, 40, 1, 9),
    (2, 3, 7, 37, 5, 3),
    (1, 2, 12, 18, 11, 11),
    (2, 2, 3, 5, 1, 1),
]


def _conv_f64(x: np.ndarray, k: np.ndarray, turned: bool) -> tuple[np.ndarray, np.ndarray]:
    """Σ_{i,j} K[c,i,j]·X[b,c,h+i−ph,w+j−pw] (or at h−i+ph, w−j+pw where ``turned``) in float64,
    one shifted slice per (i, j), and the same sum of |K|·|X| (the scale of the rounding error)."""
    _, _, h, w = x.shape
    kh, kw = k.shape[1:]
    ph, pw = kh // 2, kw // 2
    out, mag = np.zeros(x.shape), np.zeros(x.shape)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for i in range(kh):
        for j in range(kw):
            a, b = (kh - 1 - i, kw - 1 - j) if turned else (i, j)
            part = xp[:, :, a : a + h, b : b + w]
            out += k[None, :, i, j, None, None] * part
            mag += np.abs(k[None, :, i, j, None, None]) * np.abs(part)
    return out, mag


def _dw_kernel(x: np.ndarray, k: np.ndarray, turned: bool, threads: int) -> np.ndarray:
    xc, kc = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(k, np.float32)
    b, c, h, w = xc.shape
    out = np.full(xc.shape, np.nan, np.float32)
    kernels.depthwise_conv(xc.ctypes.data, kc.ctypes.data, out.ctypes.data, b, c, h, w, *kc.shape[1:], turned, threads)
    return out


@pytest.mark.parametrize("turned", [False, True], ids=["forward", "turned"])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c)))
def test_depthwise_conv_matches_float64_and_onednns_bits(case: tuple[int, ...], turned: bool) -> None:
    """The compiled correlation against two independent computations: a float64 sum over shifted
    slices, within the bound of a float32 sum of kh·kw terms, and oneDNN's NCHW forward (or input
    gradient, where turned), which sums in the same order: the same bits."""
    b, c, h, w, kh, kw = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((b, c, h, w)).astype(np.float32)
    k = rng.standard_normal((c, kh, kw)).astype(np.float32)
    got = _dw_kernel(x, k, turned, threads=2)
    want, mag = _conv_f64(x, k, turned)
    eps = float(np.finfo(np.float32).eps)
    assert np.all(np.abs(got - want) <= (kh * kw + 1) * eps * mag + 1e-30)
    xt, kt = torch.from_numpy(x), torch.from_numpy(k)[:, None]
    pad = (kh // 2, kw // 2)
    if turned:  # ∂Y of the correlation with k at ∂D = x
        ref = torch.ops.aten.convolution_backward(
            xt, xt, kt, None, (1, 1), pad, (1, 1), False, (0, 0), c, (True, False, False)
        )[0]
    else:
        ref = torch.nn.functional.conv2d(xt, kt, padding=pad, groups=c)
    assert torch.equal(torch.from_numpy(got), ref)


def test_depthwise_conv_is_the_same_for_every_thread_count() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 19, 33)).astype(np.float32)
    k = rng.standard_normal((5, 7, 7)).astype(np.float32)
    for turned in (False, True):
        first = _dw_kernel(x, k, turned, threads=1)
        for threads in (2, 3, 7, 64):
            assert np.array_equal(_dw_kernel(x, k, turned, threads), first)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 3, 4, 4, 4, 3, False, 1), "kernel (kh, kw) must be odd and positive, got (4, 3)"),
        ((2, 3, 4, 4, 3, 0, False, 1), "got (3, 0)"),
        ((2, 3, 0, 4, 3, 3, False, 1), "shape (B, C, H, W) must be positive, got (2, 3, 0, 4)"),
        ((2, 3, 4, 4, 3, 3, True, 0), "threads must be at least 1, got 0"),
    ],
)
def test_depthwise_conv_refuses_bad_arguments_by_name(args: tuple[Any, ...], message: str) -> None:
    buf = np.zeros(64)
    with pytest.raises(ValueError, match=r"depthwise_conv: .*") as info:
        kernels.depthwise_conv(buf.ctypes.data, buf.ctypes.data, buf.ctypes.data, *args)
    assert message in str(info.value)


def test_depthwise_conv_route_and_operator_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route takes 'same' odd kernels of float32 CPU images whose rows fill a vector; the
    operator refuses, naming the argument, what the kernel would misread."""
    y, k = torch.zeros(2, 3, 8, 16), torch.zeros(3, 1, 5, 3)
    assert kernels.depthwise_conv_min_width == 16
    assert TF.compiled_depthwise_conv_applies(y, k, (2, 1))
    assert not TF.compiled_depthwise_conv_applies(y[..., :15], k, (2, 1))  # narrower: oneDNN
    assert not TF.compiled_depthwise_conv_applies(y, k, (1, 1))  # not 'same'
    assert not TF.compiled_depthwise_conv_applies(y.double(), k.double(), (2, 1))
    assert not TF.compiled_depthwise_conv_applies(y, torch.zeros(3, 1, 4, 3), (2, 1))  # even kh
    assert not TF.compiled_depthwise_conv_applies(y[:, :, 0], k[:, :, 0], (1,))  # (B, C, L): callers add the axis
    with pytest.raises(ValueError, match=r"hyperzzw::depthwise_conv: k must be float32 on the CPU, got torch.float64"):
        TF.depthwise_conv(y, k.double(), False)
    with pytest.raises(
        ValueError,
        match=r"hyperzzw::depthwise_conv: y must be \(B, C, H, W\) and k \(C, 1, kh, kw\), got "
        r"\(2, 3, 8, 16\) and \(4, 1, 5, 3\)",
    ):
        TF.depthwise_conv(y, torch.zeros(4, 1, 5, 3), False)
    monkeypatch.setattr(TF, "cpu_kernels", None)
    assert not TF.compiled_depthwise_conv_applies(y, k, (2, 1))


# (B, O, (I_1, …), N): one term and several, depths in one K block (≤ 512), in blocks of 512
# (≤ 1024) and of 1024 beyond, rows that are not whole panels of 6, widths that are not whole
# strips of 64 (one strip, less than one, several with a part)
LR_CASES = [
    (2, 12, (16,), 64),
    (2, 13, (70,), 150),
    (3, 7, (5, 9), 33),
    (1, 13, (300, 400), 40),
    (2, 6, (1100,), 17),
    (1, 1, (1,), 1),
    (2, 9, (4, 4, 4), 100),
    (1, 7, (600, 500), 35),
]


def _lr_kernel(w: np.ndarray, b: np.ndarray | None, xs: list[np.ndarray], transposed: bool, threads: int) -> np.ndarray:
    wc = np.ascontiguousarray(w, np.float32)
    bc = None if b is None else np.ascontiguousarray(b, np.float32)
    xc = [np.ascontiguousarray(x, np.float32) for x in xs]
    o, depth = (wc.shape[1], wc.shape[0]) if transposed else wc.shape
    batch, _, n = xc[0].shape
    out = np.full((batch, o, n), np.nan, np.float32)
    sr, sc = (1, o) if transposed else (depth, 1)
    kernels.linear_rows(
        wc.ctypes.data,
        sr,
        sc,
        o,
        0 if bc is None else bc.ctypes.data,
        tuple(x.ctypes.data for x in xc),
        tuple(x.shape[1] for x in xc),
        out.ctypes.data,
        batch,
        n,
        threads,
    )
    return out


def _avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f " in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("transposed", [False, True], ids=["w", "w-transposed"])
@pytest.mark.parametrize("case", LR_CASES, ids=lambda c: "x".join(map(str, c[:2])) + "-" + "+".join(map(str, c[2])))
def test_linear_rows_matches_float64_and_onednns_bits(case: tuple[Any, ...], transposed: bool) -> None:
    """The compiled product against two independent computations: float64 einsum, within the bound
    of a float32 sum of I terms (β added last), and oneDNN's product per sample, whose order it
    takes (K blocks of 512, or 1024 beyond a depth of 1024, added in order, then β): the same
    bits where torch's oneDNN runs its AVX-512 kernels, the machines this order was measured on."""
    batch, o, rows, n = case
    depth = sum(rows)
    rng = np.random.default_rng(depth + o)
    w = rng.standard_normal((depth, o) if transposed else (o, depth)).astype(np.float32)
    b = None if transposed else rng.standard_normal(o).astype(np.float32)
    xs = [rng.standard_normal((batch, r, n)).astype(np.float32) for r in rows]
    got = _lr_kernel(w, b, xs, transposed, threads=2)
    x = np.concatenate(xs, axis=1).astype(np.float64)
    lw = (w.T if transposed else w).astype(np.float64)
    want = np.einsum("ok,bkn->bon", lw, x) + (0.0 if b is None else b.astype(np.float64)[:, None])
    mag = np.einsum("ok,bkn->bon", np.abs(lw), np.abs(x)) + (0.0 if b is None else np.abs(b)[:, None])
    eps = float(np.finfo(np.float32).eps)
    assert np.all(np.abs(got - want) <= (depth + 2) * eps * mag + 1e-30)
    if not _avx512():
        return
    tw, tx = torch.from_numpy(w), torch.from_numpy(np.concatenate(xs, axis=1))
    product = torch.ops.mkldnn._linear_pointwise
    if b is None:
        left = tw.t() if transposed else tw
        ref = torch.stack([product(left, tx[s].t(), None, "none", [None], "") for s in range(batch)])
    else:
        bias = torch.from_numpy(b).reshape(o, 1).expand(o, n).contiguous()
        ref = torch.stack([product.binary(tw, bias, tx[s].t(), None, "add") for s in range(batch)])
    assert torch.equal(torch.from_numpy(got), ref)


def test_linear_rows_is_the_same_for_every_thread_count_and_split() -> None:
    """The same bits for 1 to 64 threads, for the terms given whole or split in rows, and for each
    sample alone (the left factor then read as it lies, not packed), W and Wᵀ."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((11, 700)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    x = rng.standard_normal((3, 700, 70)).astype(np.float32)
    first = _lr_kernel(w, b, [x], False, threads=1)
    for threads in (2, 3, 7, 64):
        assert np.array_equal(_lr_kernel(w, b, [x], False, threads), first)
    assert np.array_equal(_lr_kernel(w, b, [x[:, :1], x[:, 1:513], x[:, 513:]], False, 2), first)
    g = rng.standard_normal((3, 11, 70)).astype(np.float32)
    back = _lr_kernel(w, None, [g], True, threads=2)
    for s in range(3):
        assert np.array_equal(_lr_kernel(w, b, [x[s : s + 1]], False, 2), first[s : s + 1])
        assert np.array_equal(_lr_kernel(w, None, [g[s : s + 1]], True, 2), back[s : s + 1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": (3, 0)}, "rows[1] must be positive, got 0"),
        ({"rows": (3,)}, "rows must hold one count per term (2), got 1"),
        ({"O": 0}, "O, B and N must be positive, got (0, 2, 4)"),
        ({"threads": 0}, "threads must be at least 1, got 0"),
        ({"xs": (0, 0)}, "xs[0] is a null data pointer"),
        ({"xs": tuple(range(1, 34)), "rows": (1,) * 33}, "xs must hold 1 to 32 pointers, got 33"),
    ],
)
def test_linear_rows_refuses_bad_arguments_by_name(change: dict[str, Any], message: str) -> None:
    buf = np.zeros(64, np.float32)
    p = buf.ctypes.data
    args = {"a": p, "sr": 3, "sc": 1, "O": 2, "bias": 0, "xs": (p, p), "rows": (3, 1), "out": p}
    args |= {"B": 2, "N": 4, "threads": 1} | change
    with pytest.raises(ValueError, match=r"linear_rows: .*") as info:
        kernels.linear_rows(*args.values())
    assert message in str(info.value)
    assert kernels.linear_rows_max_terms == 32


def test_linear_rows_into_with_a_packed_factor_gives_linear_rows_bits() -> None:
    """W (and Wᵀ) packed once and the samples multiplied one call each into their rows of one
    output: the bits of one call of all samples (which the float64 and oneDNN tests hold)."""
    rng = np.random.default_rng(9)
    w = torch.from_numpy(rng.standard_normal((13, 1030)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(13).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((3, 1030, 45)).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal((3, 13, 45)).astype(np.float32))
    for transposed, bias, inp in ((False, b, x), (True, None, g)):
        whole = TF.linear_rows(w, bias, [inp], transposed)
        packed = TF.linear_pack(w, transposed)
        o = int(whole.shape[1])
        rows = kernels.linear_pack_rows
        assert int(packed.numel()) == (o + rows - 1) // rows * rows * int(inp.shape[1])
        assert tuple(torch.ops.hyperzzw.linear_pack(w.to("meta"), transposed).shape) == tuple(packed.shape)
        out = torch.full(tuple(whole.shape), float("nan"))
        for s in range(3):
            TF.linear_rows_into(out[s : s + 1], packed, o, bias, [inp[s : s + 1]])
        assert torch.equal(out, whole)
    packed = TF.linear_pack(w, False)
    with pytest.raises(ValueError, match=r"hyperzzw::linear_rows_into: out must be \(1, 13, 45\) and packed hold"):
        TF.linear_rows_into(torch.empty(1, 12, 45), packed, 13, b, [x[:1]])
    with pytest.raises(ValueError, match=r"hyperzzw::linear_rows_into: out must be a contiguous \(B, O, N\)"):
        TF.linear_rows_into(torch.empty(1, 45, 13).transpose(1, 2), packed, 13, b, [x[:1]])
    with pytest.raises(ValueError, match=r"hyperzzw::linear_rows_into: b must have shape \(13,\), got \(12,\)"):
        TF.linear_rows_into(torch.empty(1, 13, 45), packed, 13, b[:12], [x[:1]])
    with pytest.raises(ValueError, match=r"hyperzzw::linear_pack: w must be float32 on the CPU, got torch.float64"):
        TF.linear_pack(w.double(), False)
    with pytest.raises(ValueError, match=r"hyperzzw::linear_pack: w must be 2-D, got \(13, 1030, 1\)"):
        TF.linear_pack(w[..., None], False)


def test_the_linear_rows_operator_refuses_by_name() -> None:
    w, x = torch.zeros(4, 6), torch.zeros(2, 6, 5)
    with pytest.raises(
        ValueError, match=r"hyperzzw::linear_rows: xs\[1\] must be float32 on the CPU, got torch.float64"
    ):
        TF.linear_rows(w, None, [x[:, :3], x[:, 3:].double()], False)
    with pytest.raises(
        ValueError, match=r"hyperzzw::linear_rows: xs must share B and N and have 6 rows in all \(the depth of w\)"
    ):
        TF.linear_rows(w, None, [x[:, :4]], False)
    with pytest.raises(ValueError, match=r"hyperzzw::linear_rows: b must have shape \(4,\), got \(6,\)"):
        TF.linear_rows(w, torch.zeros(6), [x], False)
    with pytest.raises(ValueError, match=r"hyperzzw::linear_rows: w must be 2-D, got \(4, 6, 1\)"):
        TF.linear_rows(w[..., None], None, [x], False)
    with pytest.raises(
        ValueError, match=r"hyperzzw::linear_rows: xs must be a list of \(B, I_i, N\), got \[\(2, 6\)\]"
    ):
        TF.linear_rows(w, None, [x[:, :, 0]], False)
    assert tuple(TF.linear_rows(w, None, [torch.zeros(2, 4, 5)], True).shape) == (2, 6, 5)


STD_CASES = [(1, 12, 64), (4, 6, 33), (3, 5, 1024), (2, 3, 1), (1, 7, 15), (8, 2, 17)]


def _standardize_f64(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=(0, 2), keepdims=True)
    r = 1.0 / np.sqrt(((x64 - mu) ** 2).mean(axis=(0, 2), keepdims=True) + eps)
    return (x64 - mu) * r, r


@pytest.mark.parametrize("shape", STD_CASES, ids=lambda s: "x".join(map(str, s)))
def test_standardize_matches_float64(shape: tuple[int, int, int]) -> None:
    """y = (x − μ_c)·r_c over (B, N) per channel against the float64 formula, within a few float32
    roundings of its terms' magnitudes; offset data (mean 5, spread 3) so that a mean or a variance
    taken carelessly shows."""
    b, c, n = shape
    rng = np.random.default_rng(b * 100 + c * 10 + n)
    x = (5 + 3 * rng.standard_normal(shape)).astype(np.float32)
    eps = 1e-5
    y = np.full(shape, np.nan, np.float32)
    r = np.full(c, np.nan, np.float32)
    kernels.standardize(x.ctypes.data, y.ctypes.data, r.ctypes.data, b, c, n, eps, 2)
    want_y, want_r = _standardize_f64(x, eps)
    u = 2.0**-24
    assert np.all(np.abs(y - want_y) <= 8 * u * (np.abs(want_y) + 5 * want_r + 1e-30)), np.abs(y - want_y).max()
    assert np.all(np.abs(r - want_r.ravel()) <= 4 * u * want_r.ravel())
    # the same for any thread count (each channel summed in one order)
    for threads in (1, 3, 64):
        y2, r2 = np.empty_like(y), np.empty_like(r)
        kernels.standardize(x.ctypes.data, y2.ctypes.data, r2.ctypes.data, b, c, n, eps, threads)
        assert np.array_equal(y2, y) and np.array_equal(r2, r), threads


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: kernels.standardize(p, p, p, 2, 3, 0, 1e-5, 1),
            "standardize: shape (B, C, N) must be positive, got (2, 3, 0)",
        ),
        (lambda p: kernels.standardize(p, p, p, 2, 3, 4, -1.0, 1), "standardize: eps must be at least 0, got -1"),
        (lambda p: kernels.standardize(p, p, p, 2, 3, 4, 1e-5, 0), "standardize: threads must be at least 1, got 0"),
    ],
)
def test_standardize_refuses_bad_arguments_by_name(call: Any, message: str) -> None:
    buf = np.zeros(64, np.float32)
    with pytest.raises(ValueError) as info:
        call(buf.ctypes.data)
    assert message in str(info.value)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "native"])
def test_standardize_functions_have_float64_gradients_on_both_routes(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """``InstanceStandardize`` and ``NativeBatchStandardize`` with and without the compiled forward
    against float64 autograd of the formula; the kernel called exactly where it applies (float32),
    and eval mode's IS (no graph) gives training's values to the bit."""
    from hyperzzw_core.backends._torch import TorchBackend

    ops: list[str] = []
    if not compiled:
        monkeypatch.setattr(TF, "cpu_kernels", None)
    rng = np.random.default_rng(11)
    x = torch.from_numpy((2 + 3 * rng.standard_normal((4, 6, 5, 7))).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal((4, 6, 5, 7)).astype(np.float32))
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    for name, axes, run in (
        ("IS", (2, 3), lambda t: TF.InstanceStandardize.apply(t, 1e-5)[0]),
        ("BS", (0, 2, 3), lambda t: TF.NativeBatchStandardize.apply(t, 1, 1e-5)[0]),
    ):
        ops.clear()
        xt = x.clone().requires_grad_()
        with _Ops():
            y = run(xt)
            (gx,) = torch.autograd.grad(y, xt, g)
        x64 = x.double().requires_grad_()
        mu = x64.mean(axis=axes, keepdim=True)
        y64 = (x64 - mu) / torch.sqrt(((x64 - mu) ** 2).mean(axis=axes, keepdim=True) + 1e-5)
        (gx64,) = torch.autograd.grad(y64, x64, g.double())
        assert float((y.double() - y64).abs().max().detach()) < 4e-6, name
        assert float((gx.double() - gx64).abs().max() / gx64.abs().max()) < 4e-6, name
        # the backward is the native kernel's either way (as fast as a compiled one)
        assert ops.count("native_batch_norm_backward") == 1, (name, ops)
        if compiled:
            assert ops.count("standardize") == 1 and "native_batch_norm" not in ops, (name, ops)
        else:
            assert "standardize" not in ops and ops.count("native_batch_norm") == 1, (name, ops)
    with torch.no_grad():  # eval mode: the same forward, no Function
        evals = TorchBackend().instance_standardize_fast(torch, x, 1e-5)
    assert torch.equal(evals, TF.InstanceStandardize.apply(x, 1e-5)[0])
    # float64 never takes the kernels
    assert not TF.compiled_standardize_applies(x.double())


# ------------------------------------------------------------------------------ global products

#: (B, C, n, J): the cifar10() width (two 16-lane vectors a row), the digits one (a row of 8, all
#: tail), odd sizes whose rows and columns leave remainders, one product and three
GP_CASES = [(2, 3, 32, 3), (3, 2, 8, 3), (2, 3, 7, 2), (1, 2, 37, 1), (2, 1, 5, 3)]


def _gp_bound(n_terms: int, magnitude: np.ndarray) -> np.ndarray:
    """The error bound of a float32 sum of ``n_terms`` products in order: (n + 1)·u·Σ|terms|."""
    return (n_terms + 1) * 2.0**-24 * magnitude + 1e-30


@pytest.mark.parametrize("case", GP_CASES, ids=lambda c: "x".join(map(str, c)))
def test_global_products_match_float64_matmul(case: tuple[int, int, int, int]) -> None:
    """G_j = Ẑ @ Y_j, ∂Y_j = Ẑᵀ @ ∂G_j and ∂Ẑ = Σ_j ∂G_j @ Y_jᵀ against float64 NumPy matmul per
    matrix, within the error bound of a float32 sum in order of each element's terms; the same
    bits for any thread count."""
    b, c, n, j = case
    rng = np.random.default_rng(b * 1000 + c * 100 + n * 10 + j)

    def draw() -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal((b, c, n, n)).astype(np.float32))

    a, ys, gs = draw(), [draw() for _ in range(j)], [draw() for _ in range(j)]
    a64, ys64, gs64 = a.double().numpy(), [y.double().numpy() for y in ys], [g.double().numpy() for g in gs]
    t = (0, 1, 3, 2)
    outs = TF.global_products(a, ys)
    for out, y in zip(outs, ys64, strict=True):
        bound = _gp_bound(n, np.abs(a64) @ np.abs(y))
        assert np.all(np.abs(out.double().numpy() - a64 @ y) <= bound)
    ga, gys = torch.ops.hyperzzw.global_products_backward(a, ys, gs)
    for gy, g in zip(gys, gs64, strict=True):
        bound = _gp_bound(n, np.abs(a64).transpose(t) @ np.abs(g))
        assert np.all(np.abs(gy.double().numpy() - a64.transpose(t) @ g) <= bound)
    want = sum(g @ y.transpose(t) for g, y in zip(gs64, ys64, strict=True))
    magnitude = sum(np.abs(g) @ np.abs(y).transpose(t) for g, y in zip(gs64, ys64, strict=True))
    assert np.all(np.abs(ga.double().numpy() - want) <= _gp_bound(j * n, magnitude))
    # the matrices are split over the threads, each computed by one in one order
    for threads in (1, 3, 8):
        again = [torch.empty_like(a) for _ in ys]
        kernels.global_products(
            a.data_ptr(), tuple(y.data_ptr() for y in ys), tuple(o.data_ptr() for o in again), b * c, n, threads
        )
        assert all(torch.equal(x, y) for x, y in zip(again, outs, strict=True)), threads
        ga2, gys2 = torch.empty_like(a), [torch.empty_like(a) for _ in ys]
        kernels.global_products_backward(
            a.data_ptr(),
            tuple(y.data_ptr() for y in ys),
            tuple(g.data_ptr() for g in gs),
            ga2.data_ptr(),
            tuple(o.data_ptr() for o in gys2),
            b * c,
            n,
            threads,
        )
        assert torch.equal(ga2, ga) and all(torch.equal(x, y) for x, y in zip(gys2, gys, strict=True)), threads


def _gp_call(**changes: Any) -> Any:
    """A call of the raw kernel on a valid (1, 2, 4, 4) case with ``changes`` to its arguments."""
    buf = np.zeros(64, np.float32)
    p = buf.ctypes.data
    args = {"a": p, "ys": (p, p), "outs": (p, p), "P": 2, "n": 4, "threads": 1} | changes
    return kernels.global_products(*args.values())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _gp_call(ys=(), outs=()), "global_products: ys must hold 1 to 8 pointers, got 0"),
        (lambda: _gp_call(outs=(1,)), "global_products: outs must hold 2 pointers, got 1"),
        (lambda: _gp_call(n=0), "global_products: P and n must be positive, got (2, 0)"),
        (lambda: _gp_call(threads=0), "global_products: threads must be at least 1, got 0"),
        (lambda: _gp_call(a=0), "global_products: a is a null data pointer"),
        (lambda: _gp_call(ys=(1, 0)), "global_products: ys[1] is a null data pointer"),
        (
            lambda: TF.global_products(torch.zeros(1, 2, 4, 4, dtype=torch.float64), [torch.zeros(1, 2, 4, 4)]),
            "hyperzzw::global_products: a must be float32 on the CPU, got torch.float64 on cpu",
        ),
        (
            lambda: TF.global_products(torch.zeros(1, 2, 4, 4), [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5)]),
            "hyperzzw::global_products: ys[1] must have a's shape (1, 2, 4, 4), got (1, 2, 4, 5)",
        ),
        (
            lambda: TF.global_products(torch.zeros(1, 2, 4, 5), [torch.zeros(1, 2, 4, 5)]),
            "hyperzzw::global_products: a must be (B, C, n, n), square matrices, got shape (1, 2, 4, 5)",
        ),
        (
            lambda: torch.ops.hyperzzw.global_products_backward(
                torch.zeros(1, 2, 4, 4), [torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)] * 2
            ),
            "hyperzzw::global_products_backward: gs must hold one array per ys (1), got 2",
        ),
    ],
)
def test_global_products_refuse_bad_arguments_by_name(call: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


def test_the_exported_global_products_limits_are_the_kernels() -> None:
    """The torch backend's limits are the extension's: as many products as the C function takes
    and one more refused; the row block is what a row's vectors cover, the smallest n whose
    rows have no remainder."""
    assert (TF.MAX_GLOBAL_PRODUCTS, TF.GLOBAL_PRODUCTS_ROW_BLOCK) == (8, 32)
    m = TF.MAX_GLOBAL_PRODUCTS
    a = np.zeros((1, 1, 4, 4), np.float32)
    _gp_call(a=a.ctypes.data, ys=(a.ctypes.data,) * m, outs=(a.ctypes.data,) * m, P=1)
    with pytest.raises(ValueError, match=f"ys must hold 1 to {m} pointers, got {m + 1}"):
        _gp_call(ys=(a.ctypes.data,) * (m + 1), outs=(a.ctypes.data,) * (m + 1))


def test_global_products_function_has_float64_gradients() -> None:
    """``GlobalProducts`` against float64 autograd of the matmuls, with an output left out of the
    loss (its ∂G_j is None: counted as 0) and an input that needs no gradient."""
    rng = np.random.default_rng(12)
    a, y1, y2, y3 = (torch.from_numpy(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)) for _ in range(4))
    r1, r3 = (torch.from_numpy(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)) for _ in range(2))
    leaves = [t.clone().requires_grad_() for t in (a, y1, y2)]
    g1, _g2, g3 = TF.GlobalProducts.apply(*leaves, y3)
    grads = torch.autograd.grad((g1 * r1).sum() + (g3 * r3).sum(), leaves)
    leaves64 = [t.double().requires_grad_() for t in (a, y1, y2)]
    a64 = leaves64[0]
    loss64 = ((a64 @ leaves64[1]) * r1.double()).sum() + ((a64 @ y3.double()) * r3.double()).sum()
    want = torch.autograd.grad(loss64, leaves64, allow_unused=True)
    for got, w, name in zip(grads, want, ("a", "y1", "y2"), strict=True):
        w = torch.zeros_like(got, dtype=torch.float64) if w is None else w
        assert float((got.double() - w).abs().max()) <= 1e-5 * max(float(w.abs().max()), 1.0), name


def test_the_block_runs_its_global_products_in_one_kernel_call_each_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float32 training step of the digits network on 32×32 inputs calls the compiled global
    products once per block forward and once backward, in place of the nine batched matmuls per
    block (three forward, six backward) that it makes without them; on its own 8×8 inputs, where
    the kernel is slower (``GLOBAL_PRODUCTS_ROW_BLOCK``), and in float64 it makes no kernel call."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from hyperzzw_core import reference as R
    from hyperzzw_core.adapters.torch import Terminator

    def step(cfg: Any, dtype: Any) -> list[tuple[str, tuple[int, ...]]]:
        calls: list[tuple[str, tuple[int, ...]]] = []

        class _Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                first = args[0] if args and isinstance(args[0], torch.Tensor) else None
                calls.append((func.overloadpacket.__name__, tuple(first.shape) if first is not None else ()))
                return func(*args, **(kwargs or {}))

        model = Terminator(cfg, 0, dtype=dtype)
        rng = np.random.default_rng(13)
        x = torch.from_numpy(rng.standard_normal((2, *cfg.input_shape))).to(dtype)
        labels = torch.from_numpy(rng.integers(0, cfg.num_classes, 2))
        with _Ops():
            model.loss(x, labels).backward()
        return calls

    def counts(calls: list[tuple[str, tuple[int, ...]]], n: int) -> tuple[int, int, int]:
        names = [name for name, _ in calls]
        matmuls = [s for name, s in calls if name == "bmm" and len(s) == 3 and s[1:] == (n, n)]
        return names.count("global_products"), names.count("global_products_backward"), len(matmuls)

    wide = R.digits().replace(input_shape=[1, 32, 32], grid=None)
    blocks = len(wide.bottleneck_factors)
    on = counts(step(wide, torch.float32), 32)
    assert on[:2] == (blocks, blocks)
    with monkeypatch.context() as m:
        m.setattr(TF, "compiled_global_products_apply", lambda a, ys: False)
        assert counts(step(wide, torch.float32), 32) == (0, 0, on[2] + 9 * blocks)
    assert counts(step(R.digits(), torch.float32), 8)[:2] == (0, 0)
    assert counts(step(wide, torch.float64), 32)[:2] == (0, 0)


def test_every_operator_refuses_by_name_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch operators are registered whether or not the extension was built; called without
    it, each refuses with one error that names it (never reads a missing module's pointers)."""
    monkeypatch.setattr(TF, "cpu_kernels", None)
    t3, t4 = torch.zeros(2, 3, 4), torch.zeros(1, 2, 4, 4)
    calls = {
        "depthwise_conv": lambda: torch.ops.hyperzzw.depthwise_conv(t4, torch.zeros(2, 1, 3, 3), False),
        "depthwise_weight_grad": lambda: torch.ops.hyperzzw.depthwise_weight_grad(t4, t4, 3, 3),
        "standardize": lambda: torch.ops.hyperzzw.standardize(t3, 1e-5),
        "linear_rows": lambda: torch.ops.hyperzzw.linear_rows(torch.zeros(2, 3), None, [t3], False),
        "linear_pack": lambda: torch.ops.hyperzzw.linear_pack(torch.zeros(2, 3), False),
        "linear_rows_into": lambda: torch.ops.hyperzzw.linear_rows_into(t3, torch.zeros(18), 2, None, [t3]),
        "global_products": lambda: torch.ops.hyperzzw.global_products(t4, [t4]),
        "global_products_backward": lambda: torch.ops.hyperzzw.global_products_backward(t4, [t4], [t4]),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=rf"^hyperzzw::{name}: the compiled CPU kernels are not built$"):
            call()


def test_compiled_operators_skip_the_dispatcher_only_where_nothing_else_sees_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled kernels' operators (``_torch_functions._Operator``) call their CPU kernel
    directly in a plain no-grad call, with the dispatcher's values, and go through the dispatcher
    wherever something else must see the call: grad mode on, a dispatch mode (the eager floor's
    record), a function mode, a ``torch.func`` transform (vmap over the operator, which reads
    wrapped tensors, equals the loop of calls), the profiler (which lists the operator)."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    operator = TF._standardize_op
    through: list[int] = []
    op = operator.op

    def counted(*args: Any) -> Any:
        through.append(1)
        return op(*args)

    monkeypatch.setattr(operator, "op", counted)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 4, 40)).astype(np.float32))

    def calls(run: Any) -> int:
        through.clear()
        run()
        return len(through)

    with torch.no_grad():
        direct = TF.standardize_channels(x, 1e-5)
        assert calls(lambda: TF.standardize_channels(x, 1e-5)) == 0
    dispatched = op(x, 1e-5)
    for got, want in zip(direct, dispatched, strict=True):
        assert torch.equal(got, want)

    class Seen(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            return func(*args, **(kwargs or {}))

    class SeenFunctions(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            return func(*args, **(kwargs or {}))

    def in_mode(mode: Any) -> None:
        with torch.no_grad(), mode:
            TF.standardize_channels(x, 1e-5)

    assert calls(lambda: TF.standardize_channels(x, 1e-5)) == 1  # grad mode on
    assert calls(lambda: in_mode(Seen())) == 1
    assert calls(lambda: in_mode(SeenFunctions())) == 1
    with torch.profiler.profile() as prof:
        assert calls(lambda: in_mode(contextlib.nullcontext())) == 1
    assert any(e.key == "hyperzzw::standardize" for e in prof.key_averages())

    def per_sample(t: torch.Tensor) -> torch.Tensor:
        return TF.standardize_channels(t.unsqueeze(0), 1e-5)[0][0]

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that hyperzzw::standardize has no batching rule
        mapped = torch.func.vmap(per_sample)(x)
        assert through, "vmap's wrapped tensors went to the kernel directly"
    for i in range(x.shape[0]):
        with torch.no_grad():
            assert torch.equal(mapped[i], per_sample(x[i]))

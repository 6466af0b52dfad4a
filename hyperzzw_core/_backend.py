"""Backend quirks in one small module (einops-style).

Everything the array API standard lacks, or that a library does better itself, is decided here and
nowhere else:

* :func:`namespace` — the array namespace of a set of named inputs, with a clear error naming the
  library and device of each input when they disagree; :func:`as_namespace` maps ``torch`` /
  ``numpy`` / ``cupy`` modules to their array-api-compat namespaces; :func:`device`;
* :func:`stop_gradient` — ``.detach()`` for torch, ``jax.lax.stop_gradient`` for JAX, the identity
  elsewhere (no other supported library differentiates);
* :func:`erf` — the library's own erf where it has one, else the portable
  :func:`~hyperzzw_core._erf.erf_portable`; :func:`sigmoid` likewise (torch, SciPy's ``expit``,
  else an overflow-free portable form);
* :func:`depthwise_conv` — ``torch.nn.functional.conv{1,2}d(groups=C)`` for torch, the portable
  sum of shifted slices elsewhere (NumPy, CuPy, array-api-strict, …), or an FFT path built from the
  standard's ``fft`` extension for large kernels;
* :func:`constant` — small host constants (pooling matrices) created on the caller's device
  with an explicit dtype; :func:`work_dtype` — float64 for exact constants unless the device
  lacks it (torch MPS, array-api-strict's ``no_float64``); :func:`cached` — constants built once
  per key, dtype and device (coordinate grids, pooling matrices);
* fast paths, each numerically the generic formula to rounding (the differential tests hold them
  to the reference): :func:`pointwise_linear` (one batched GEMM with the bias fused for torch,
  one GEMM per sample written in place for NumPy), :func:`instance_standardize` (torch's native
  ``instance_norm``, whose backward is one fused pass), :func:`batch_standardize` (one torch
  autograd Function whose means stay the namespace's), :func:`gelu` / :func:`silu` (torch's native
  kernels).

Everything here also traces under ``torch.compile``: namespaces are cached by array type in a
plain dict, and nothing on the forward path goes through ``functools.lru_cache`` (which Dynamo
warns about) or array-api-compat's cached type checks.

Import rule: a library is used only if its module is already in ``sys.modules`` (it must be, when
one of its arrays was passed in); this module never imports torch, CuPy or JAX itself.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
import types
from collections.abc import Iterable, Sequence
from typing import Any

import array_api_compat

from ._erf import erf_portable

_NS_BY_TYPE: dict[type, Any] = {}
_SCALARS = (bool, int, float, complex)

#: kernels with more taps than this use the FFT path on backends without a native convolution
FFT_MIN_TAPS = 256


# ------------------------------------------------------------------------------- namespaces


def _library(x: Any) -> str:
    t = type(x)
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def _torch_tensor_type() -> type | None:
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


def _namespace_of_one(name: str, x: Any) -> Any:
    t = type(x)
    ns = _NS_BY_TYPE.get(t)
    if ns is not None:
        return ns
    if _is_tensor(x):
        import array_api_compat.torch as ns  # torch is imported already: x is a tensor
    else:
        try:
            ns = array_api_compat.array_namespace(x)
        except TypeError:
            raise TypeError(f"{name}: expected an array (NumPy, torch, CuPy, array-api-strict, …), "
                            f"got {_library(x)}") from None
    _NS_BY_TYPE[t] = ns
    return ns


def namespace(named: Iterable[tuple[str, Any]]) -> Any:
    """The array-API namespace shared by the named arrays (``None`` and Python scalars are skipped).

    Raises ``TypeError`` naming the library of each input when they come from different libraries,
    and ``ValueError`` naming the devices when they sit on different devices.
    """
    first: tuple[str, Any, Any] | None = None
    seen: list[tuple[str, Any]] = []
    for name, x in named:
        if x is None or isinstance(x, _SCALARS):
            continue
        ns = _namespace_of_one(name, x)
        seen.append((name, x))
        if first is None:
            first = (name, x, ns)
        elif ns is not first[2]:
            libs = ", ".join(f"{n} is {_library(a)}" for n, a in seen)
            raise TypeError(f"arrays from different libraries: {libs}; convert explicitly "
                            "(hyperzzw_core.params.convert or xp.from_dlpack)")
        elif device(x) != device(first[1]):
            raise ValueError(f"arrays on different devices: {first[0]} on {device(first[1])}, "
                             f"{name} on {device(x)}")
    if first is None:
        raise TypeError("no array among the inputs: cannot tell which array library to use")
    return first[2]


def as_namespace(like: Any) -> Any:
    """The array-API namespace meant by ``like``: None (NumPy), an array, or a module/namespace.

    The ``numpy``, ``torch`` and ``cupy`` modules map to their array-api-compat namespaces; any
    other module or object with ``asarray`` is taken to be a standard namespace already.
    """
    if like is None:
        import array_api_compat.numpy as xp

        return xp
    if not isinstance(like, types.ModuleType):
        if hasattr(like, "shape") and hasattr(like, "dtype"):
            return namespace([("like", like)])
        if not hasattr(like, "asarray"):
            raise TypeError(f"like: expected None, an array or an array namespace, got {type(like).__name__}")
        return like
    if like.__name__ in ("numpy", "torch", "cupy"):
        return importlib.import_module(f"array_api_compat.{like.__name__}")
    return like


def _ns_name(xp: Any) -> str:
    return getattr(xp, "__name__", "")


def is_torch(xp: Any) -> bool:
    return _ns_name(xp) in ("torch", "array_api_compat.torch")


def is_numpy(xp: Any) -> bool:
    return _ns_name(xp) in ("numpy", "array_api_compat.numpy")


def is_cupy(xp: Any) -> bool:
    return _ns_name(xp) in ("cupy", "array_api_compat.cupy")


def is_jax(xp: Any) -> bool:
    return _ns_name(xp) in ("jax.numpy", "jax.experimental.array_api")


def _is_tensor(x: Any) -> bool:
    tensor = _torch_tensor_type()
    return tensor is not None and isinstance(x, tensor)


def device(x: Any) -> Any:
    """The device of ``x`` (``"cpu"`` for NumPy); torch's is read directly (traceable)."""
    if _is_tensor(x):
        return x.device
    return array_api_compat.device(x)


def dtype_name(dt: Any) -> str:
    """A library-independent dtype name: ``float32`` for NumPy, torch and array-api-strict alike."""
    if isinstance(dt, type):  # NumPy scalar types (np.float64), as in array_api_compat.numpy
        return dt.__name__
    return str(dt).rsplit(".", 1)[-1]


def is_lazy(x: Any) -> bool:
    """True where an array's values cannot be read without tracing (JAX jit, Dask, torch.compile)."""
    if _is_tensor(x):
        return sys.modules["torch"].compiler.is_compiling()
    return array_api_compat.is_lazy_array(x)


# ---------------------------------------------------------------------------------- constants


def work_dtype(xp: Any, dtype: Any, dev: Any) -> Any:
    """float64 when ``dev`` supports it (for host-exact constants), else ``dtype`` itself."""
    if dtype == xp.float64:
        return dtype
    if is_torch(xp):
        return dtype if getattr(dev, "type", "cpu") == "mps" else xp.float64
    try:
        supported = xp.__array_namespace_info__().dtypes(device=dev, kind="real floating")
    except (AttributeError, TypeError, ValueError):
        return xp.float64
    return xp.float64 if "float64" in supported else dtype


def constant(xp: Any, values: Sequence[Any], *, dtype: Any, device: Any) -> Any:
    """A small constant array from a (nested) Python sequence, with explicit dtype and device."""
    return xp.asarray(values, dtype=dtype, device=device)


_CONSTANTS: dict[tuple, Any] = {}
_CONSTANTS_MAX = 256


def clear_constants() -> None:
    """Forget every cached constant of :func:`cached` (they are rebuilt on next use)."""
    _CONSTANTS.clear()


def _cache_key(xp: Any, key: tuple, dtype: Any, dev: Any) -> tuple | None:
    """The cache key of a constant, or None where it must not be cached.

    torch: keyed on dtype, device and inference mode (an inference tensor cannot be saved for
    backward outside inference mode); never cached while torch.compile traces (the graph then
    owns the constant) or on the 'meta' device. NumPy: keyed on dtype. Other libraries: no cache
    (their arrays may be lazy or device-bound in ways a key cannot see).
    """
    if is_torch(xp):
        torch = sys.modules["torch"]
        if torch.compiler.is_compiling() or getattr(dev, "type", None) == "meta":
            return None
        return ("torch", key, str(dtype), str(dev), torch.is_inference_mode_enabled())
    if is_numpy(xp):
        return ("numpy", key, dtype_name(dtype))
    return None


def cached(xp: Any, key: tuple, builder: Any, *, dtype: Any, device: Any) -> Any:
    """``builder()`` (an array of ``dtype`` on ``device``), built once per key, dtype and device.

    For constants that depend on sizes only (coordinate grids, pooling matrices). The cached array
    is shared: callers must not modify it in place (NumPy copies are made read-only).
    """
    ck = _cache_key(xp, key, dtype, device)
    if ck is None:
        return builder()
    hit = _CONSTANTS.get(ck)
    if hit is None:
        hit = builder()
        if is_numpy(xp):
            hit.setflags(write=False)
        if len(_CONSTANTS) >= _CONSTANTS_MAX:
            _CONSTANTS.clear()
        _CONSTANTS[ck] = hit
    return hit


# ------------------------------------------------------------------------------ autodiff / erf


def stop_gradient(xp: Any, x: Any) -> Any:
    """Block gradients through ``x`` (torch ``.detach()``, JAX ``lax.stop_gradient``, else identity)."""
    if is_torch(xp):
        return x.detach()
    if is_jax(xp):
        return sys.modules["jax"].lax.stop_gradient(x)
    return x


def sigmoid(xp: Any, x: Any) -> Any:
    """Logistic sigmoid without overflow: native for torch and NumPy (SciPy's expit), else portable."""
    if is_torch(xp):
        return sys.modules["torch"].sigmoid(x)
    if is_numpy(xp):
        from scipy import special

        return special.expit(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def erf(xp: Any, x: Any) -> Any:
    """The error function in the input's dtype: native where the library has it, else portable."""
    if is_torch(xp):
        return sys.modules["torch"].special.erf(x)
    if is_numpy(xp):
        from scipy import special  # a dependency of the package

        return special.erf(x)
    if is_cupy(xp):
        import cupyx.scipy.special  # CuPy is imported already: x is a CuPy array

        return cupyx.scipy.special.erf(x)
    if is_jax(xp):
        import jax.scipy.special

        return jax.scipy.special.erf(x)
    return erf_portable(xp, x)


# ------------------------------------------------------------------------------ fused kernels


def fused(xp: Any) -> Any:
    """The fused CUDA kernels (``hyperzzw_core.adapters._cupy_kernels``) when ``xp`` is CuPy, else None.

    CuPy is in ``sys.modules`` whenever ``xp`` is CuPy, so this imports nothing new. Setting the
    environment variable ``HYPERZZW_CUPY_FUSED=0`` runs CuPy through the generic array-API path
    instead (to bisect a GPU problem; the two must agree).
    """
    if not is_cupy(xp) or os.environ.get("HYPERZZW_CUPY_FUSED", "1") == "0":
        return None
    from .adapters import _cupy_kernels

    return _cupy_kernels


# --------------------------------------------------------------------------------- fast paths


def _torch_of(xp: Any) -> Any:
    """The torch module for any torch namespace (``array_api_compat.torch`` or a wrapper of it,
    such as the adapter's ``global_batch_namespace``), else None."""
    return sys.modules["torch"] if is_torch(xp) else None


def pointwise_linear(xp: Any, w: Any, b: Any, x: Any) -> Any:
    """y[b] = W·x[b] + β for x (B, I, N), W (O, I), β (O,) → (B, O, N).

    torch: one ``baddbmm`` (batched GEMM, bias fused, no transposed copies; ``W @ x`` folds the
    batch through two copies). NumPy: one GEMM per sample written in place, as the reference
    (``tensordot`` copies x and y once each; the broadcast matmul is slower still). Else the
    generic broadcast matmul.
    """
    torch = _torch_of(xp)
    if torch is not None:
        n = x.shape[0]
        return torch.baddbmm(torch.reshape(b, (1, -1, 1)), w.expand(n, w.shape[0], w.shape[1]), x)
    if is_numpy(xp):
        np = sys.modules["numpy"]
        y = np.empty((x.shape[0], w.shape[0], x.shape[2]), dtype=np.result_type(w, x))
        for s in range(x.shape[0]):
            np.matmul(w, x[s], out=y[s])
        y += b[:, None]
        return y
    return w @ x + xp.reshape(b, (-1, 1))


def _spatial_size(x: Any) -> int:
    n = 1
    for s in x.shape[2:]:
        n *= int(s)
    return n


def instance_standardize(xp: Any, x: Any, eps: float) -> Any | None:
    """IS on torch with the native ``instance_norm`` kernel, or None (use the generic formula).

    Without affine parameters or running statistics it computes exactly (x − μ)/√(σ² + eps) with
    the biased variance, forward and backward each one fused kernel (3x faster than autograd
    through the five element-wise operations of the formula; docs/benchmarks.md). Per-sample
    statistics only, so any torch namespace (wrapped or not) may use it.
    """
    torch = _torch_of(xp)
    if torch is None or _spatial_size(x) < 2:  # batch_norm wants more than one value per statistic
        return None
    return torch.nn.functional.instance_norm(x, eps=eps)


def batch_standardize(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any | None:
    """BS over ``axes`` on torch as one autograd Function, or None (use the generic formula).

    torch's native ``batch_norm`` would bypass the namespace's batch means (the adapter's
    ``global_batch_namespace`` redefines them to span every process), so the statistics, and the
    two means of the backward, are taken with ``xp.mean``; what the Function saves is one fused
    forward (the centred input scaled in place) and a three-pass backward instead of autograd
    through the formula's five operations (2x faster forward + backward; docs/benchmarks.md).
    """
    if _torch_of(xp) is None:
        return None
    from ._torch_functions import BatchStandardize

    return BatchStandardize.apply(x, tuple(axes), float(eps), xp.mean)


def gelu(xp: Any, x: Any, sqrt_half: float) -> Any:
    """Exact (erf) GELU: torch's native kernel (one pass forward and backward), else x·Φ(x)."""
    torch = _torch_of(xp)
    if torch is not None:
        return torch.nn.functional.gelu(x)
    return x * (0.5 * (1.0 + erf(xp, x * sqrt_half)))


def silu(xp: Any, x: Any) -> Any:
    """σ(x)·x: torch's native SiLU kernel, else the generic product."""
    torch = _torch_of(xp)
    if torch is not None:
        return torch.nn.functional.silu(x)
    return sigmoid(xp, x) * x


# -------------------------------------------------------------------------------- convolution


def _zero_pad(xp: Any, y: Any, pads: Sequence[int]) -> Any:
    """Zero-pad the spatial axes (2, 3, …) of ``y`` symmetrically by ``pads`` with ``xp.concat``."""
    dev = device(y)
    for a, p in enumerate(pads):
        if p == 0:
            continue
        ax = 2 + a
        shape = list(y.shape)
        shape[ax] = p
        z = xp.zeros(tuple(shape), dtype=y.dtype, device=dev)
        y = xp.concat([z, y, z], axis=ax)
    return y


def depthwise_conv_direct(xp: Any, y: Any, k_l: Any) -> Any:
    """Portable 'same' depth-wise cross-correlation: a sum of shifted slices (standard only).

    out[b,c,p] = Σ_o k_l[c,0,o]·y_pad[b,c,p+o]; y (B, C, *S), k_l (C, 1, *k) → (B, C, *S).
    """
    ksize = tuple(k_l.shape[2:])
    spatial = tuple(y.shape[2:])
    yp = _zero_pad(xp, y, [(k - 1) // 2 for k in ksize])
    c = k_l.shape[0]
    wshape = (1, c) + (1,) * len(spatial)
    out = xp.zeros(tuple(y.shape), dtype=y.dtype, device=device(y))
    for off in itertools.product(*(range(k) for k in ksize)):
        w = xp.reshape(k_l[(slice(None), 0) + off], wshape)
        win = (slice(None), slice(None)) + tuple(slice(o, o + n) for o, n in zip(off, spatial))
        out = out + w * yp[win]
    return out


def depthwise_conv_fft(xp: Any, y: Any, k_l: Any) -> Any:
    """The same 'same' cross-correlation by FFT (the standard's ``fft`` extension; real inputs).

    Correlation = convolution with the flipped kernel; the full linear convolution of length
    n + k − 1 per axis is cropped to the centre [(k−1)/2, (k−1)/2 + n).
    """
    d = y.ndim - 2
    axes = tuple(range(2, 2 + d))
    ksize = tuple(k_l.shape[2:])
    spatial = tuple(y.shape[2:])
    full = tuple(n + k - 1 for n, k in zip(spatial, ksize))
    kern = xp.flip(xp.reshape(k_l, (1, k_l.shape[0]) + ksize), axis=axes)
    prod = xp.fft.rfftn(y, s=full, axes=axes) * xp.fft.rfftn(kern, s=full, axes=axes)
    out = xp.fft.irfftn(prod, s=full, axes=axes)
    crop = (slice(None), slice(None)) + tuple(slice((k - 1) // 2, (k - 1) // 2 + n)
                                              for k, n in zip(ksize, spatial))
    return xp.astype(out[crop], y.dtype)


def depthwise_conv(xp: Any, y: Any, k_l: Any) -> Any:
    """Depth-wise 'same' cross-correlation, the fastest path the backend offers (validated inputs).

    torch: ``F.conv{1,2}d(y, k_l, padding=(k-1)//2, groups=C)``; other libraries: the portable
    direct sum (the FFT path for kernels with more than ``FFT_MIN_TAPS`` taps where ``xp.fft``
    exists). CuPy: the fused direct kernel of ``adapters._cupy_kernels`` for k ≤ 9 (the local sizes);
    cupyx's ndimage/signal correlate lack a batched per-channel (groups=C) form.
    """
    kern = fused(xp)
    if kern is not None and max(k_l.shape[2:]) <= 9:
        return kern.depthwise_conv(y, k_l)
    method = depthwise_method(xp, y, k_l)
    if method == "fft":
        return depthwise_conv_fft(xp, y, k_l)
    if is_torch(xp):
        return _torch_depthwise_direct(sys.modules["torch"], y, k_l)
    if is_numpy(xp):
        from .reference._conv import _correlate  # the reference's sliding-window einsum

        return _correlate(y, k_l[:, 0])
    return depthwise_conv_direct(xp, y, k_l)


#: Smallest kernel size (largest axis) from which the FFT path is used, per backend and dtype,
#: on inputs whose smallest spatial extent is at least ``FFT_MIN_SPATIAL``. Set from the
#: measurement of ``python -m benchmarks conv-threshold`` (forward + backward for torch, forward
#: for NumPy; B = 8, C = 32, H = W in 8…64, k in 3…17), recorded in docs/benchmarks.md (run of
#: 2026-11-21): from these sizes on the FFT path wins at every measured H ≥ FFT_MIN_SPATIAL. On
#: 8×8 inputs oneDNN's direct float32 kernel won up to k = 13; the other paths' FFT won there too,
#: but by less than a millisecond, so small inputs stay direct everywhere.
FFT_MIN_SPATIAL = 16
FFT_MIN_KERNEL = {
    ("torch-cpu", "float32"): 17,  # direct = oneDNN depth-wise conv (k = 13 lost at H = 16 and 64)
    ("torch-cpu", "float64"): 5,   # direct = ATen's native (non-oneDNN) depth-wise conv
    ("numpy", "float32"): 5,       # direct = the sliding-window einsum (k = 3 lost at H = 32)
    ("numpy", "float64"): 5,
}


def depthwise_method(xp: Any, y: Any, k_l: Any) -> str:
    """``"direct"`` or ``"fft"`` for a depth-wise convolution of ``y`` with ``k_l``.

    torch on CPU and NumPy: the measured thresholds of ``FFT_MIN_KERNEL``; torch on other
    devices (cuDNN's depth-wise kernels) and inside torch.compile traces (Inductor generates no
    code for complex operators): direct; other libraries: FFT from ``FFT_MIN_TAPS`` taps where
    ``xp.fft`` exists.
    """
    k = max(int(v) for v in k_l.shape[2:])
    small = min(int(v) for v in y.shape[2:]) < FFT_MIN_SPATIAL
    if is_torch(xp):
        if device(y).type != "cpu" or sys.modules["torch"].compiler.is_compiling() or small:
            return "direct"
        return "fft" if k >= FFT_MIN_KERNEL[("torch-cpu", dtype_name(y.dtype))] else "direct"
    if is_numpy(xp):
        return "fft" if not small and k >= FFT_MIN_KERNEL[("numpy", dtype_name(y.dtype))] else "direct"
    taps = 1
    for v in k_l.shape[2:]:
        taps *= int(v)
    return "fft" if taps > FFT_MIN_TAPS and hasattr(xp, "fft") else "direct"


def _onednn_float32(torch: Any, y: Any) -> bool:
    """Whether ``y`` is a CPU float32 tensor that oneDNN convolves (read without graph breaks
    inside torch.compile traces, where ``torch.backends.mkldnn`` cannot be called)."""
    if y.dtype != torch.float32 or y.device.type != "cpu":
        return False
    if torch.compiler.is_compiling():
        return bool(torch._C._has_mkldnn)
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _torch_depthwise_direct(torch: Any, y: Any, k_l: Any) -> Any:
    """``F.conv{1,2}d(groups=C)``; float32 on CPU runs oneDNN in channels-last layout.

    oneDNN's NCHW depth-wise weight gradient is pathologically slow on CPU for k ≥ 5 (seconds
    for the CIFAR-10 block 4; docs/benchmarks.md), while its channels-last kernels are fast: the
    input is converted (one copy), 1-D inputs run as (B, C, 1, L) images, and the result comes
    back contiguous. Without gradients (inference) the NCHW forward is the faster one (B = 1, C =
    144, k = 9: 0.7 ms against 1.2 ms with the layout round trip), so it is used as is. float64 (no
    oneDNN) and other devices use the plain call.
    """
    fn = torch.nn.functional
    pad = tuple((int(k) - 1) // 2 for k in k_l.shape[2:])
    c = int(y.shape[1])
    needs_grad = torch.compiler.is_compiling() or (torch.is_grad_enabled() and (y.requires_grad or k_l.requires_grad))
    if needs_grad and _onednn_float32(torch, y):
        if y.ndim == 3:
            y4 = torch.unsqueeze(y, 2).contiguous(memory_format=torch.channels_last)
            out = fn.conv2d(y4, torch.unsqueeze(k_l, 2), padding=(0,) + pad, groups=c)
            return torch.squeeze(out, 2).contiguous()
        if y.ndim == 4:
            out = fn.conv2d(y.contiguous(memory_format=torch.channels_last), k_l, padding=pad, groups=c)
            return out.contiguous()
    conv = fn.conv1d if y.ndim == 3 else fn.conv2d
    return conv(y, k_l, padding=pad, groups=c)

"""The core's one door to the array libraries: namespaces, devices, constants, and the backend.

Operator modules ask this module, never a library, for what the array API standard lacks:

* :func:`namespace` — the array namespace of a set of named inputs, with a clear error naming the
  library and device of each input when they disagree; :func:`as_namespace` maps ``like=`` (None,
  an array, or a module such as ``numpy``/``torch``/``cupy``/``jax``) to a standard namespace the
  same way for every library; :func:`device`; :func:`is_lazy`;
* :func:`backend` — the backend object of a namespace (:mod:`hyperzzw_core.backends`: one small
  class per library, looked up once per call); the thin functions below (:func:`erf`,
  :func:`sigmoid`, :func:`gelu`, :func:`silu`, :func:`stop_gradient`, :func:`pointwise_linear`,
  :func:`depthwise_conv`, …) delegate to it;
* :func:`constant` — small host constants created on the caller's device with an explicit dtype;
  :func:`work_dtype`; :func:`cached` — constants built once per key, dtype and device.

Everything here also traces under ``torch.compile``: namespaces are cached by array type in a
plain dict, backends by namespace name, and nothing on the forward path goes through
``functools.lru_cache`` (which Dynamo warns about) or array-api-compat's cached type checks.

Import rule: this module never imports torch, CuPy or JAX itself (a library is used only once one
of its arrays was passed in, so its module is in ``sys.modules``).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Sequence
from typing import Any

import array_api_compat

from .backends import (
    DENSE_MAX_POSITIONS,
    FFT_MIN_KERNEL,
    FFT_MIN_SPATIAL,
    FFT_MIN_TAPS,
    ArrayAPIBackend,
    backend_for,
    backend_for_module,
    clear_constants,
    depthwise_conv_dense,
    depthwise_conv_direct,
    depthwise_conv_fft,
    dtype_name,
    torch_depthwise_direct,
)

__all__ = [
    "DENSE_MAX_POSITIONS",
    "FFT_MIN_KERNEL",
    "FFT_MIN_SPATIAL",
    "FFT_MIN_TAPS",
    "as_namespace",
    "backend",
    "batch_standardize",
    "cached",
    "clear_constants",
    "constant",
    "depthwise_conv",
    "depthwise_conv_dense",
    "depthwise_conv_direct",
    "depthwise_conv_fft",
    "depthwise_method",
    "device",
    "dtype_name",
    "erf",
    "gelu",
    "instance_standardize",
    "is_lazy",
    "namespace",
    "pointwise_linear",
    "pointwise_linear_sum",
    "sigmoid",
    "silu",
    "split_channels",
    "stop_gradient",
    "sum_of_norms",
    "work_dtype",
]

_NS_BY_TYPE: dict[type, Any] = {}
_SCALARS = (bool, int, float, complex)

backend = backend_for


def _torch_depthwise_direct(torch: Any, y: Any, k_l: Any) -> Any:
    """The torch backend's direct convolution (kept under this name for the benchmarks)."""
    return torch_depthwise_direct(torch, y, k_l)


# ------------------------------------------------------------------------------- namespaces


def _library(x: Any) -> str:
    t = type(x)
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


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
            raise TypeError(
                f"{name}: expected an array (NumPy, torch, CuPy, JAX, array-api-strict, …), got {_library(x)}"
            ) from None
    _NS_BY_TYPE[t] = ns
    return ns


def namespace(named: Iterable[tuple[str, Any]]) -> Any:
    """The array-API namespace shared by the named arrays (``None`` and Python scalars are skipped).

    Raises ``TypeError`` naming the library of each input when they come from different libraries,
    and ``ValueError`` naming the devices when they sit on different devices (a JAX tracer's device
    is not known and matches any).
    """
    first: tuple[str, Any, Any, Any] | None = None
    seen: list[tuple[str, Any]] = []
    be: ArrayAPIBackend | None = None
    for name, x in named:
        if x is None or isinstance(x, _SCALARS):
            continue
        ns = _namespace_of_one(name, x)
        seen.append((name, x))
        if first is None:
            be = backend_for(ns)
            first = (name, x, ns, be.device(x))
            continue
        if ns is not first[2]:
            libs = ", ".join(f"{n} is {_library(a)}" for n, a in seen)
            raise TypeError(
                f"arrays from different libraries: {libs}; convert explicitly "
                "(hyperzzw_core.params.convert or xp.from_dlpack)"
            )
        assert be is not None  # set together with first
        dev = be.device(x)
        if not be.same_device(dev, first[3]):
            raise ValueError(f"arrays on different devices: {first[0]} on {first[3]}, {name} on {dev}")
    if first is None:
        raise TypeError("no array among the inputs: cannot tell which array library to use")
    return first[2]


def as_namespace(like: Any) -> Any:
    """The array-API namespace meant by ``like``: None (NumPy), an array, or a module/namespace.

    The same rule for every library: an array gives its namespace; a library's module (``numpy``,
    ``torch``, ``cupy``, ``jax``, ``jax.numpy``, or their array-api-compat namespaces) gives the
    namespace its backend uses; any other object with ``asarray`` (array_api_strict, …) is taken to
    be a standard namespace already.
    """
    if like is None:
        import array_api_compat.numpy as xp

        return xp
    if hasattr(like, "shape") and hasattr(like, "dtype") and not isinstance(like, types.ModuleType):
        return namespace([("like", like)])
    be = backend_for_module(like)
    if be is not None:
        return be.standard_namespace(like)
    if not hasattr(like, "asarray"):
        raise TypeError(f"like: expected None, an array or an array namespace, got {type(like).__name__}")
    return like


def device(x: Any) -> Any:
    """The device of ``x`` (``"cpu"`` for NumPy; None for a JAX tracer); torch's read directly (traceable)."""
    if _is_tensor(x):
        return x.device
    return array_api_compat.device(x)


def is_lazy(x: Any) -> bool:
    """True where an array's values cannot be read without tracing (JAX jit, Dask, torch.compile)."""
    if _is_tensor(x):
        return bool(sys.modules["torch"].compiler.is_compiling())
    return backend_for(_namespace_of_one("x", x)).is_lazy(x)


# ---------------------------------------------------------------------------------- constants


def work_dtype(xp: Any, dtype: Any, dev: Any) -> Any:
    """float64 when ``dev`` supports it (for host-exact constants), else ``dtype`` itself."""
    return backend_for(xp).work_dtype(xp, dtype, dev)


def constant(xp: Any, values: Sequence[Any], *, dtype: Any, device: Any) -> Any:
    """A small constant array from a (nested) Python sequence, with explicit dtype and device."""
    return xp.asarray(values, dtype=dtype, device=device)


def cached(xp: Any, key: tuple, builder: Any, *, dtype: Any, device: Any) -> Any:
    """``builder()`` (an array of ``dtype`` on ``device``), built once per key, dtype and device,
    as the backend keys it (:meth:`~hyperzzw_core.backends.ArrayAPIBackend.cached`)."""
    return backend_for(xp).cached(xp, key, builder, dtype=dtype, device=device)


# ------------------------------------------------------------------- delegated to the backend


def stop_gradient(xp: Any, x: Any) -> Any:
    """Block gradients through ``x`` (torch ``.detach()``, JAX ``lax.stop_gradient``, else identity)."""
    return backend_for(xp).stop_gradient(xp, x)


def sigmoid(xp: Any, x: Any) -> Any:
    """Logistic sigmoid without overflow (the library's own where it has one)."""
    return backend_for(xp).sigmoid(xp, x)


def erf(xp: Any, x: Any) -> Any:
    """The error function in the input's dtype: native where the library has it, else portable."""
    return backend_for(xp).erf(xp, x)


def gelu(xp: Any, x: Any, sqrt_half: float) -> Any:
    """Exact (erf) GELU x·Φ(x)."""
    return backend_for(xp).gelu(xp, x, sqrt_half)


def silu(xp: Any, x: Any) -> Any:
    """σ(x)·x."""
    return backend_for(xp).silu(xp, x)


def sum_of_norms(xp: Any, arrays: Sequence[Any]) -> Any:
    """Σ_i ‖a_i‖₂, the Frobenius norms of the arrays summed (a 0-D array)."""
    return backend_for(xp).sum_of_norms(xp, arrays)


def pointwise_linear(xp: Any, w: Any, b: Any, x: Any) -> Any:
    """y[b] = W·x[b] + β for x (B, I, N), W (O, I), β (O,) → (B, O, N)."""
    return backend_for(xp).pointwise_linear(xp, w, b, x)


def pointwise_linear_sum(xp: Any, ws: list[Any], b: Any, xs: list[Any]) -> Any:
    """y[b] = Σ_i W_i·x_i[b] + β for x_i (B, I_i, N), W_i (O, I_i), β (O,) → (B, O, N)."""
    return backend_for(xp).pointwise_linear_sum(xp, ws, b, xs)


def pointwise_linear_sum_gelu(
    xp: Any, ws: list[Any], b: Any, xs: list[Any], gelu: list[bool], maps: list[Any]
) -> Any | None:
    """Σ_i W_i·a_i + β, a_i = GELU(x_i) where ``gelu[i]`` else x_i, plus ``maps[i]`` (N,) where
    given, by the backend's fused operator (B, O, N), or None (compose them)."""
    return backend_for(xp).pointwise_linear_sum_gelu(xp, ws, b, xs, gelu, maps)


def gated_pointwise_linear(
    xp: Any, k: Any, w: Any, b: Any, v: Any, source: tuple[Any, Any, Any] | None = None
) -> Any | None:
    """K ⊙ (W·V + β), K and V (B, C, N), by the backend's fused operator, or None (compose them).
    ``source``: None, or (W_s, β_s, X) whose ``pointwise_linear`` has K and V as its channels
    [0, C) and [C, 2C) (the operator may recompute them from it instead of keeping them)."""
    return backend_for(xp).gated_pointwise_linear(xp, k, w, b, v, source)


def split_channels(xp: Any, y: Any, sizes: list[int]) -> list[Any]:
    """``y`` (B, Σ sizes, *S) cut along the channel axis into consecutive pieces of ``sizes``."""
    return backend_for(xp).split_channels(xp, y, sizes)


def instance_standardize(xp: Any, x: Any, eps: float) -> Any | None:
    """IS by the backend's native kernel, or None (use the generic formula)."""
    return backend_for(xp).instance_standardize_fast(xp, x, eps)


def batch_standardize(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any | None:
    """BS over ``axes`` by the backend's native kernel, or None (use the generic formula)."""
    return backend_for(xp).batch_standardize_fast(xp, x, axes, eps)


def depthwise_conv(xp: Any, y: Any, k_l: Any) -> Any:
    """Depth-wise 'same' cross-correlation, the fastest path the backend offers (validated inputs)."""
    return backend_for(xp).depthwise_conv(xp, y, k_l)


def depthwise_mixer(xp: Any, y: Any, k_l: Any, w: Any, b: Any) -> Any | None:
    """W·DWConv(Y, K_l) + β as (B, O, N) by the backend's fused operator, or None (compose them)."""
    return backend_for(xp).depthwise_mixer_fast(xp, y, k_l, w, b)


def depthwise_method(xp: Any, y: Any, k_l: Any) -> str:
    """``"direct"`` or ``"fft"`` for a depth-wise convolution of ``y`` with ``k_l`` on this backend."""
    return backend_for(xp).depthwise_method(xp, y, k_l)

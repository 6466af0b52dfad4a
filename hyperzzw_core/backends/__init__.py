"""Backends as objects: one small class per array library (einops/SciPy style).

The core's operator modules never ask which library they run on. They call the backend of the
caller's namespace, looked up once per call by :func:`backend_for` (a dict keyed by the namespace's
``__name__``), and the backend does whatever its library does best:

* :class:`ArrayAPIBackend` — the array API standard and nothing else (array-api-strict, ndonnx,
  dask, any unknown namespace);
* :class:`NumPyBackend` — SciPy's special functions, per-sample GEMMs, a sliding-window convolution;
* :class:`TorchBackend` — torch's native kernels (conv, instance_norm, GELU, SiLU, baddbmm);
* :class:`CuPyBackend` — the fused CUDA kernels of :mod:`._cupy_kernels`;
* :class:`JaxBackend` — JAX's erf, sigmoid and stop-gradient; tracers (jit, grad) have no device.

The torch backend's CPU path also uses compiled kernels (``_cpu_kernels.c``: the depth-wise
correlation and its gradients, the point-wise linears' products, the standardisations' forward
and the global branch's products), built at install where a C compiler is;
:func:`compiled_kernels` says whether this installation takes them (only on CPUs with AVX-512),
:func:`cpu_kernels_status` why.

Semi-public: adapters may import this package (its names without a leading underscore); users
should not need to. Nothing here imports torch, CuPy or JAX: a library's module is read from
``sys.modules``, where it is whenever one of its arrays was passed in.
"""

from __future__ import annotations

from typing import Any

from ._base import (
    DENSE_MAX_POSITIONS,
    FFT_MIN_KERNEL,
    FFT_MIN_SPATIAL,
    FFT_MIN_TAPS,
    ArrayAPIBackend,
    as_matrices,
    clear_constants,
    dense_selection,
    depthwise_conv_dense,
    depthwise_conv_direct,
    depthwise_conv_fft,
    dtype_name,
    from_matrices,
)
from ._compiled import compiled_kernels, cpu_kernels_status
from ._cupy import CuPyBackend
from ._jax import JaxBackend
from ._numpy import NumPyBackend, sliding_window_correlate
from ._torch import TorchBackend, torch_depthwise_direct

__all__ = [
    "BACKENDS",
    "DENSE_MAX_POSITIONS",
    "FFT_MIN_KERNEL",
    "FFT_MIN_SPATIAL",
    "FFT_MIN_TAPS",
    "ArrayAPIBackend",
    "CuPyBackend",
    "JaxBackend",
    "NumPyBackend",
    "TorchBackend",
    "as_matrices",
    "backend_for",
    "backend_for_module",
    "clear_constants",
    "compiled_kernels",
    "cpu_kernels_status",
    "cupy_kernels",
    "dense_selection",
    "depthwise_conv_dense",
    "depthwise_conv_direct",
    "depthwise_conv_fft",
    "dtype_name",
    "from_matrices",
    "sliding_window_correlate",
    "torch_depthwise_direct",
]

#: The library backends, tried in order; a namespace none of them serves gets ``ArrayAPIBackend``.
BACKENDS: tuple[ArrayAPIBackend, ...] = (NumPyBackend(), TorchBackend(), CuPyBackend(), JaxBackend())
_GENERIC = ArrayAPIBackend()
_BY_NAME: dict[str, ArrayAPIBackend] = {}


def backend_for(xp: Any) -> ArrayAPIBackend:
    """The backend serving the array namespace ``xp`` (cached by ``xp.__name__``)."""
    name = getattr(xp, "__name__", "")
    hit = _BY_NAME.get(name)
    if hit is None:
        hit = next((b for b in BACKENDS if name in b.namespace_names), _GENERIC)
        _BY_NAME[name] = hit
    return hit


def backend_for_module(module: Any) -> ArrayAPIBackend | None:
    """The backend of a library module passed as ``like=`` (``numpy``, ``torch``, ``jax``, …), or None."""
    name = getattr(module, "__name__", "")
    return next((b for b in BACKENDS if name in b.module_names), None)


def cupy_kernels() -> Any:
    """The fused CuPy kernels module (imports CuPy: check that it is usable first)."""
    from . import _cupy_kernels

    return _cupy_kernels

"""``hyperzzw_core.adapters.cupy``: every operator and the whole Terminator forward on CuPy arrays.

The operators are the array-API core's (same names and signatures as the reference); on CuPy arrays
the core's CuPy backend routes its hot paths to the fused CUDA kernels of
:mod:`hyperzzw_core.backends._cupy_kernels` (the global product with Z ⊙ K_g fused in, the
standardisations, the hyper-interaction gate, the depth-wise convolution).
The fused operators have VJPs here (``<op>_vjp``, the reference's convention), so CuPy users get
gradients for them and ``hyperzzw verify --impl hyperzzw_core.adapters.cupy`` checks them.

Installation: the ``cupy-cuda12x`` or ``cupy-cuda13x`` extra. This module imports on any machine;
without a usable GPU every call raises one :class:`GPUUnavailableError` that says why (CuPy not
importable, no CUDA driver or device).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

import hyperzzw_core as _core
from hyperzzw_core import internals as _internals

from ..reference import flatten, unbroadcast  # unbroadcast: array methods only, works on CuPy arrays


class GPUUnavailableError(RuntimeError):
    """Raised on use of the CuPy adapter where CuPy or a CUDA device is not usable."""


@functools.lru_cache(maxsize=1)
def availability() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and sees a CUDA device, and if not, why."""
    try:
        import cupy
    except Exception as exc:  # any import failure means "not usable"
        return False, (
            f"cupy is not importable ({type(exc).__name__}: {exc}); install the cupy-cuda12x "
            "or cupy-cuda13x extra on a machine with an NVIDIA driver"
        )
    try:
        if not cupy.is_available():
            return False, "cupy.is_available() is False: no CUDA driver or no CUDA device is visible"
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # any failure to reach a device means "not usable"
        return False, f"no usable CUDA device ({type(exc).__name__}: {exc})"
    return True, "ok"


def _cupy() -> Any:
    ok, reason = availability()
    if not ok:
        raise GPUUnavailableError(f"hyperzzw_core.adapters.cupy: {reason}")
    import cupy

    return cupy


def _kernels() -> Any:
    _cupy()
    from ..internals import cupy_kernels

    return cupy_kernels()


def _check_cupy(args: tuple, kwargs: dict) -> None:
    cp = _cupy()
    for where, value in list(enumerate(args)) + list(kwargs.items()):
        leaves = flatten(value) if isinstance(value, (dict, list, tuple)) else {"": value}
        for key, leaf in leaves.items():
            foreign = hasattr(leaf, "__array_namespace__") and not isinstance(leaf, cp.ndarray)
            if isinstance(leaf, np.ndarray) or foreign:
                name = f"argument {where}" + (f" [{key}]" if key else "")
                raise TypeError(
                    f"{name}: the CuPy adapter takes CuPy arrays, got {type(leaf).__module__}."
                    f"{type(leaf).__name__}; convert with hyperzzw_core.adapters.cupy.from_numpy"
                )


def _delegate(name: str) -> Callable[..., Any]:
    core_fn = getattr(_core, name)

    @functools.wraps(core_fn)
    def op(*args: Any, **kwargs: Any) -> Any:
        _check_cupy(args, kwargs)
        return core_fn(*args, **kwargs)

    op.__doc__ = f"CuPy front-end of the core's ``{name}``.\n\n" + (core_fn.__doc__ or "")
    return op


OPERATORS = (
    "magnet_g",
    "magnet_gc",
    "magnet_l",
    "hyperzzw_global",
    "hyperzzw_2e",
    "depthwise_conv",
    "local_conv",
    "rgu",
    "si_glu",
    "hyper_channel_interaction",
    "hyper_interaction",
    "instance_standardize",
    "batch_standardize",
    "g_ibs",
    "gelu",
    "pointwise_linear",
    "channel_mixer",
    "bottleneck",
    "adaptive_avg_pool",
    "tile_channels",
    "sfne_block",
    "slow_loss",
    "label_smoothing_cross_entropy",
    "terminator_forward",
    "terminator_loss",
)

magnet_g = _delegate("magnet_g")
magnet_gc = _delegate("magnet_gc")
magnet_l = _delegate("magnet_l")
hyperzzw_global = _delegate("hyperzzw_global")
hyperzzw_2e = _delegate("hyperzzw_2e")
depthwise_conv = _delegate("depthwise_conv")
local_conv = _delegate("local_conv")
rgu = _delegate("rgu")
si_glu = _delegate("si_glu")
hyper_channel_interaction = _delegate("hyper_channel_interaction")
hyper_interaction = _delegate("hyper_interaction")
instance_standardize = _delegate("instance_standardize")
batch_standardize = _delegate("batch_standardize")
g_ibs = _delegate("g_ibs")
gelu = _delegate("gelu")
pointwise_linear = _delegate("pointwise_linear")
channel_mixer = _delegate("channel_mixer")
bottleneck = _delegate("bottleneck")
adaptive_avg_pool = _delegate("adaptive_avg_pool")
tile_channels = _delegate("tile_channels")
sfne_block = _delegate("sfne_block")
slow_loss = _delegate("slow_loss")
label_smoothing_cross_entropy = _delegate("label_smoothing_cross_entropy")
terminator_forward = _delegate("terminator_forward")
terminator_loss = _delegate("terminator_loss")


# ----------------------------------------------------------------- VJPs of the fused kernels


def hyperzzw_global_vjp(
    z: Any, k_g: Any, y: Any, g: Any, *, grid: tuple[int, int] | None = None
) -> tuple[Any, Any, Any]:
    """VJP of ``hyperzzw_global``: ``(grad_z, grad_k_g, grad_y)`` (reference convention)."""
    _check_cupy((z, k_g, y, g), {})
    cp, kern = _cupy(), _kernels()
    shape = tuple(z.shape)
    as_m, from_m = _internals.as_matrices, _internals.from_matrices  # the 1D grid layout (docs/spec-1d.md)
    k_full = as_m(cp, cp.broadcast_to(k_g, shape)[0:1], grid)[0]  # (C, h, w), zero-padded in 1D
    gz, gk, gy = kern.global_product_vjp(as_m(cp, z, grid), k_full, as_m(cp, y, grid), as_m(cp, g, grid))
    return (
        from_m(cp, gz, shape),
        unbroadcast(from_m(cp, gk[None], (1,) + shape[1:]), tuple(k_g.shape)),
        from_m(cp, gy, shape),
    )


def hyperzzw_2e_vjp(k: Any, z: Any, g: Any) -> tuple[Any, Any]:
    """VJP of ``hyperzzw_2e``: ``(grad_k, grad_z)``."""
    _check_cupy((k, z, g), {})
    return unbroadcast(g * z * z, tuple(k.shape)), unbroadcast(2 * g * k * z, tuple(z.shape))


def instance_standardize_vjp(x: Any, g: Any, eps: float = 1e-5) -> Any:
    """VJP of ``instance_standardize`` (fused float64 reductions)."""
    _check_cupy((x, g), {})
    return _kernels().standardize_vjp(x, g, "instance", eps)


def batch_standardize_vjp(x: Any, g: Any, eps: float = 1e-5) -> Any:
    """VJP of ``batch_standardize`` (fused float64 reductions; couples the whole batch)."""
    _check_cupy((x, g), {})
    return _kernels().standardize_vjp(x, g, "batch", eps)


def g_ibs_vjp(x: Any, g: Any, groups: int = 12, eps: float = 1e-5) -> Any:
    """VJP of ``g_ibs``."""
    _check_cupy((x, g), {})
    return _kernels().g_ibs_vjp(x, g, groups, eps)


def depthwise_conv_vjp(y: Any, k_l: Any, g: Any) -> tuple[Any, Any]:
    """VJP of ``depthwise_conv``: ``(grad_y, grad_k_l)``."""
    _check_cupy((y, k_l, g), {})
    return _kernels().depthwise_conv_vjp(y, k_l, g)


# ----------------------------------------------------------- the conformance-kit protocol


def from_numpy(array: np.ndarray, *, device: Any = None) -> Any:
    """A NumPy array on the GPU (``device`` an index or 'cuda:N'; default the current device)."""
    cp = _cupy()
    index = None
    if device is not None:
        index = int(str(device).split(":")[-1]) if str(device) not in ("cuda", "gpu") else None
    if index is None:
        return cp.asarray(array)
    with cp.cuda.Device(index):
        return cp.asarray(array)


def to_numpy(x: Any) -> np.ndarray:
    """An explicit device → host copy (CuPy forbids the implicit one)."""
    return x.get() if hasattr(x, "get") else np.asarray(x)

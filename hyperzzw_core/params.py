"""One parameter format for every backend: nested dicts/lists of arrays with flat dotted keys.

A parameter tree is what ``reference.init_params`` returns (``{"blocks": [...], "head": {...}}``);
its flat form ``flatten(tree)`` has keys like ``blocks.0.local.2.slow_l.filters.1.weight``, which
are also the ``state_dict()`` keys of the torch adapter's modules.

* :func:`init_params` — the reference's deterministic initialisation (float64, NumPy) converted to
  any library/device/dtype, so one seed gives the same values everywhere;
* :func:`convert` — move a tree between libraries through DLPack (no copy where the two libraries
  share the device: NumPy ↔ torch CPU, CuPy ↔ torch CUDA, …), with an explicit host round trip
  only when DLPack cannot cross the devices;
* :func:`to_numpy` — an explicit host copy (``.cpu()``, ``.get()``) of every leaf;
* :func:`save_params` / :func:`load_params` — ``.npz`` files with the flat keys, read with
  ``allow_pickle=False``;
* :func:`to_state_dict` / :func:`from_state_dict` — torch ``state_dict`` form (flat keys).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, cast

import array_api_compat
import numpy as np

from . import _backend as B
from .reference import TerminatorConfig, flatten, tree_map, unflatten
from .reference import init_params as _reference_init_params

__all__ = [
    "convert",
    "from_state_dict",
    "init_params",
    "load_params",
    "namespace_for",
    "save_params",
    "to_numpy",
    "to_state_dict",
]

_FLOAT_NAMES = ("float32", "float64")


# --------------------------------------------------------------------------------- namespaces


def namespace_for(like: Any) -> Any:
    """The array-API namespace meant by ``like``: None (NumPy), an array, or a module/namespace.

    ``torch``, ``numpy`` and ``cupy`` modules map to their array-api-compat namespaces; any other
    module is taken to be a standard namespace already (array_api_strict, …).
    """
    return B.as_namespace(like)


def _resolve_dtype(xp: Any, dtype: Any) -> Any:
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else B.dtype_name(dtype)
    if name not in _FLOAT_NAMES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")
    return getattr(xp, name)


# ------------------------------------------------------------------------------------ leaves


def _host(x: Any) -> np.ndarray:
    """An explicit host (NumPy) view or copy of one array."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (np.generic, bool, int, float)):
        return np.asarray(x)
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return x.detach().cpu().numpy()
    if mod == "cupy":
        return x.get()
    return np.from_dlpack(x)


def _from_other(xp: Any, x: Any) -> tuple[Any, bool]:
    """``x`` (another library) as an ``xp`` array, and whether that copied it.

    DLPack shares memory when the devices allow; otherwise the data goes explicitly through the
    host (e.g. CUDA → NumPy, NumPy → CuPy).
    """
    src = x.detach() if type(x).__module__.split(".")[0] == "torch" else x
    try:
        return xp.from_dlpack(src), False
    except (BufferError, RuntimeError, TypeError, ValueError):
        return xp.asarray(_host(src)), True


def _convert_leaf(x: Any, xp: Any, device: Any, dtype: Any, copy: bool) -> Any:
    if isinstance(x, (np.generic, bool, int, float)):
        x = np.asarray(x)
    copied = False
    if B.namespace([("leaf", x)]) is xp:
        y = x
    else:
        y, copied = _from_other(xp, x)
    if device is not None and B.device(y) != device:
        y = array_api_compat.to_device(y, device)
        copied = True
    if dtype is not None and y.dtype != dtype:
        y = xp.astype(y, dtype)
        copied = True
    if copy and not copied:
        y = xp.asarray(y, copy=True)
    return y


def convert(params: Any, like: Any = None, *, device: Any = None, dtype: Any = None, copy: bool = False) -> Any:
    """Convert every leaf of a parameter tree to the library of ``like`` (None: NumPy).

    ``device`` and ``dtype`` (``"float32"``/``"float64"``, a NumPy dtype or the target library's
    dtype) default to the source's. Same-device conversions go through ``xp.from_dlpack`` and share
    memory with the source unless ``copy=True``; a conversion DLPack cannot do (e.g. GPU → NumPy)
    goes explicitly through the host. The tree structure is kept.
    """
    xp = namespace_for(like)
    dt = _resolve_dtype(xp, dtype)
    return tree_map(lambda a: _convert_leaf(a, xp, device, dt, copy), params)


def to_numpy(params: Any) -> Any:
    """A tree of NumPy arrays: an explicit host transfer (``.cpu()``/``.get()``) of every leaf."""
    return tree_map(_host, params)


# -------------------------------------------------------------------------------------- init


def init_params(
    config: TerminatorConfig, seed: int = 0, *, like: Any = None, device: Any = None, dtype: Any = None
) -> dict:
    """Terminator parameters for ``config``: the same values on every backend.

    The values are ``reference.init_params(config, seed)`` (float64, platform-independent draws),
    cast on the host to ``dtype`` (default float64; float32 gives exactly
    ``reference.init_params(config, seed, dtype=np.float32)``) and converted to the library of
    ``like`` (None: NumPy; an array; or a namespace/module such as ``torch``) on ``device``.
    """
    if not isinstance(config, TerminatorConfig):
        raise TypeError(f"config: expected a TerminatorConfig, got {type(config).__name__}")
    xp = namespace_for(like)
    dt = _resolve_dtype(xp, dtype)
    host_dtype = np.float64 if dt is None else np.dtype(B.dtype_name(dt))
    host = _reference_init_params(config, seed, dtype=host_dtype)
    if B.backend(xp).owns_host_arrays(device):
        return host
    return tree_map(lambda a: _convert_leaf(a, xp, device, None, False), host)


# ------------------------------------------------------------------------------ npz / torch


def save_params(path: str | os.PathLike, params: Any) -> None:
    """Write a parameter tree to ``path`` (``.npz``): one array per flat dotted key, host copies."""
    flat = flatten(params)
    arrays = {k: _host(v) for k, v in flat.items()}
    for k, v in arrays.items():
        if v.dtype.name not in _FLOAT_NAMES:
            raise TypeError(f"params['{k}']: expected float32 or float64, got {v.dtype}")
    with open(path, "wb") as f:
        np.savez(f, **cast(dict[str, Any], arrays))  # numpy's stubs match **kwds against allow_pickle: bool


def load_params(path: str | os.PathLike, *, like: Any = None, device: Any = None, dtype: Any = None) -> Any:
    """Read a tree written by :func:`save_params` (``allow_pickle=False``), optionally converted."""
    with np.load(path, allow_pickle=False) as data:
        flat = {k: data[k] for k in data.files}
    tree = unflatten(flat)
    if like is None and device is None and dtype is None:
        return tree
    return convert(tree, like, device=device, dtype=dtype)


def _torch() -> Any:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            raise ImportError("to_state_dict/from_state_dict need torch: pip install 'hyperzzw[torch]'") from None
    return torch


def to_state_dict(params: Any, *, device: Any = None, dtype: Any = None) -> dict[str, Any]:
    """A torch ``state_dict`` (flat dotted keys → tensors) of a parameter tree (DLPack, no copy
    where possible). Load it with ``module.load_state_dict``."""
    torch = _torch()
    return dict(flatten(convert(params, torch, device=device, dtype=dtype)))


def from_state_dict(state_dict: Mapping[str, Any], *, like: Any = None, device: Any = None, dtype: Any = None) -> Any:
    """The parameter tree of a torch ``state_dict`` (tensors detached; converted if asked)."""
    tree = unflatten({k: (v.detach() if hasattr(v, "detach") else v) for k, v in state_dict.items()})
    if like is None and device is None and dtype is None:
        return tree
    return convert(tree, like, device=device, dtype=dtype)

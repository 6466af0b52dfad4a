"""Backend discovery for the differential tests (in the style of SciPy's ``xp`` fixture).

Backends, discovered at import (an import probe plus an allocation probe):

* ``numpy`` — always;
* ``array_api_strict`` — proves that the core uses the standard only; plus two simulated
  devices: ``array_api_strict:device1`` (catches arrays created on the wrong device) and
  ``array_api_strict:no_float64`` (a float32-only device, like torch MPS; float32 tests only);
* ``torch`` — CPU;
* ``jax`` — CPU, eager, with 64-bit types enabled (``jax_enable_x64``), where JAX is installed;
  marked ``jax`` (not in the default run: XLA compiles every primitive, minutes per network);
* ``torch:cuda`` and ``cupy`` — only where a usable GPU exists; otherwise the test is skipped with
  a reason naming what is missing (and marked ``gpu``, so ``-m "not gpu"`` deselects it).
  ``HYPERZZW_REQUIRE_GPU=1`` turns those skips into failures, so a GPU job cannot pass vacuously.

Select a subset with ``HYPERZZW_BACKENDS=numpy,torch`` (unknown names raise). Use the
``backend`` fixture (all backends) or ``torch_backend`` (the torch ones).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hyperzzw_core.reference import TerminatorConfig

REQUIRE_GPU = os.environ.get("HYPERZZW_REQUIRE_GPU", "") not in ("", "0")


@dataclasses.dataclass(frozen=True)
class Backend:
    """One array library on one device, with explicit conversions to and from NumPy."""

    name: str
    library: str
    """Top-level module name of the library's arrays ('numpy', 'torch', 'array_api_strict', …)."""
    from_numpy: Callable[[np.ndarray], Any]
    device: Any = None
    float64: bool = True
    autodiff: bool = False
    gpu: bool = False

    def convert(self, obj: Any) -> Any:
        """Convert every NumPy array in a nested structure (dicts, lists, tuples); keep the rest."""
        if isinstance(obj, np.ndarray):
            return self.from_numpy(obj)
        if isinstance(obj, dict):
            return {k: self.convert(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.convert(v) for v in obj]
        if isinstance(obj, tuple) and not isinstance(obj, TerminatorConfig):
            return tuple(self.convert(v) for v in obj)
        return obj

    def owns(self, x: Any) -> bool:
        """True if ``x`` is an array of this backend's library (and device)."""
        if type(x).__module__.split(".")[0] != self.library:
            return False
        if self.device is None:
            return True
        return str(x.device) == str(self.device)

    def __str__(self) -> str:
        return self.name


def _numpy() -> Backend:
    return Backend("numpy", "numpy", lambda a: np.array(a, copy=True))


def _strict(device_name: str | None = None) -> Backend:
    import array_api_strict as xs

    dev = None if device_name is None else xs.Device(device_name)
    xs.asarray(np.zeros(3, np.float32), device=dev)  # allocation probe
    name = "array_api_strict" if device_name is None else f"array_api_strict:{device_name}"
    return Backend(name, "array_api_strict", lambda a: xs.asarray(np.array(a, copy=True), device=dev), device=dev,
                   float64=device_name != "no_float64")


def _torch(device: str) -> Backend:
    import torch

    dev = torch.device(device)
    torch.empty(3, device=dev)  # allocation probe: set_default_device("cuda") alone proves nothing
    return Backend("torch" if device == "cpu" else f"torch:{device}", "torch",
                   lambda a: torch.from_numpy(np.array(a, copy=True)).to(dev), device=dev, autodiff=True,
                   gpu=device != "cpu")


def _cupy() -> Backend:
    import cupy

    cupy.empty(3)  # allocation probe
    return Backend("cupy", "cupy", lambda a: cupy.asarray(np.array(a, copy=True)), gpu=True)


def _jax() -> Backend:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 inputs stay float64 (JAX's default is 32-bit)
    import jax.numpy as jnp

    jnp.zeros(3)  # allocation probe
    return Backend("jax", "jaxlib", lambda a: jnp.asarray(np.array(a, copy=True)))


def _probe(name: str, make: Callable[[], Backend]) -> tuple[Backend | None, str]:
    try:
        return make(), ""
    except ImportError as e:
        return None, f"{name}: not importable ({e})"
    except Exception as e:  # noqa: BLE001 - any failed probe means "not usable here"
        return None, f"{name}: probe failed ({type(e).__name__}: {e})"


def _torch_cuda() -> Backend:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (torch.cuda.is_available() is False"
                           f"{'; torch is a CPU build' if torch.version.cuda is None else ''})")
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would break float32 comparisons
    torch.backends.cudnn.allow_tf32 = False
    return _torch("cuda")


_CANDIDATES: list[tuple[str, Callable[[], Backend], bool]] = [
    ("numpy", _numpy, False),
    ("array_api_strict", _strict, False),
    ("array_api_strict:device1", lambda: _strict("device1"), False),
    ("array_api_strict:no_float64", lambda: _strict("no_float64"), False),
    ("torch", lambda: _torch("cpu"), False),
    ("jax", _jax, False),
    ("torch:cuda", _torch_cuda, True),
    ("cupy", _cupy, True),
]


def _selected() -> set[str] | None:
    env = os.environ.get("HYPERZZW_BACKENDS", "").strip()
    if not env:
        return None
    names = {n.strip() for n in env.split(",") if n.strip()}
    unknown = names - {c[0] for c in _CANDIDATES}
    if unknown:
        raise ValueError(f"HYPERZZW_BACKENDS: unknown backends {sorted(unknown)}; "
                         f"known: {[c[0] for c in _CANDIDATES]}")
    return names


def _discover() -> list[Any]:
    chosen = _selected()
    params = []
    for name, make, gpu in _CANDIDATES:
        if chosen is not None and name not in chosen:
            continue
        backend, why = _probe(name, make)
        marks = [pytest.mark.gpu] if gpu else []
        if name == "jax":
            marks.append(pytest.mark.jax)  # minutes of XLA compilation: run with -m jax
        if backend is None:
            if gpu and REQUIRE_GPU:  # no skip mark: the fixture fails the test
                params.append(pytest.param(_Missing(name, why, fail=True), id=name, marks=marks))
            else:
                marks.append(pytest.mark.skip(reason=why))
                params.append(pytest.param(_Missing(name, why), id=name, marks=marks))
            continue
        params.append(pytest.param(backend, id=name, marks=marks))
    return params


@dataclasses.dataclass(frozen=True)
class _Missing:
    name: str
    why: str
    fail: bool = False


BACKEND_PARAMS = _discover()
TORCH_PARAMS = [p for p in BACKEND_PARAMS if p.id.startswith("torch")]


def _resolve(request: pytest.FixtureRequest) -> Backend:
    b = request.param
    if isinstance(b, _Missing):
        msg = f"backend {b.name} unavailable: {b.why}"
        if b.fail:
            pytest.fail(msg + " (HYPERZZW_REQUIRE_GPU=1 makes a missing GPU a failure)")
        pytest.skip(msg)
    return b


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every discovered backend (GPU ones skipped, or failed under HYPERZZW_REQUIRE_GPU=1)."""
    return _resolve(request)


@pytest.fixture(params=TORCH_PARAMS)
def torch_backend(request: pytest.FixtureRequest) -> Backend:
    """The torch backends (CPU; CUDA where usable)."""
    return _resolve(request)

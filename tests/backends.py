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

``HYPERZZW_REQUIRE_BACKENDS=jax`` (a comma list of the names above) does the same for the named
backends. CI sets it to ``jax`` (JAX is in the test extra): otherwise every test of ``-m jax`` would
skip, green, if JAX stopped installing or importing.

Select a subset with ``HYPERZZW_BACKENDS=numpy,torch`` (unknown names raise). The fixtures
``backend`` (all backends) and ``torch_backend`` (the torch ones) live in tests/conftest.py, with
the declarative per-backend markers (:func:`backend_marks`)::

    @pytest.mark.skip_backend("array_api_strict:no_float64", reason="float64 inputs")
    @pytest.mark.xfail_backend("cupy", reason="...")       # strict: an unexpected pass fails

A marker may add conditions on the test's other parameters (``dtype="float64"``: only then).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import array_api_compat
import numpy as np
import pytest

from hyperzzw_core.reference import TerminatorConfig

REQUIRE_GPU = os.environ.get("HYPERZZW_REQUIRE_GPU", "") not in ("", "0")


def _names(variable: str) -> set[str]:
    """The backend names listed in an environment variable (comma-separated); unknown names raise."""
    names = {n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()}
    unknown = names - {c[0] for c in _CANDIDATES}
    if unknown:
        raise ValueError(f"{variable}: unknown backends {sorted(unknown)}; known: {[c[0] for c in _CANDIDATES]}")
    return names


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
    module: str = ""
    """The module a user passes as ``xp=`` for this library, where it is not ``library`` itself
    (JAX's arrays live in ``jaxlib``, its namespace is ``jax.numpy``)."""

    @property
    def library_module(self) -> Any:
        """The library's own module as a user passes it (``numpy``, ``torch``, ``jax.numpy``, …)."""
        return importlib.import_module(self.module or self.library)

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

    @functools.cached_property
    def xp(self) -> Any:
        """The array namespace (array-api-compat's view) of this backend's arrays."""
        return array_api_compat.array_namespace(self.from_numpy(np.zeros(1, np.float32)))

    @functools.cached_property
    def array_device(self) -> Any:
        """The device (array-api-compat's ``device(x)``) of the arrays this backend makes."""
        return array_api_compat.device(self.from_numpy(np.zeros(1, np.float32)))

    def __str__(self) -> str:
        return self.name


def _numpy() -> Backend:
    return Backend("numpy", "numpy", lambda a: np.array(a, copy=True))


def _strict(device_name: str | None = None) -> Backend:
    import array_api_strict as xs

    dev = None if device_name is None else xs.Device(device_name)
    xs.asarray(np.zeros(3, np.float32), device=dev)  # allocation probe
    name = "array_api_strict" if device_name is None else f"array_api_strict:{device_name}"
    return Backend(
        name,
        "array_api_strict",
        lambda a: xs.asarray(np.array(a, copy=True), device=dev),
        device=dev,
        float64=device_name != "no_float64",
    )


def _torch(device: str) -> Backend:
    import torch

    dev = torch.device(device)
    torch.empty(3, device=dev)  # allocation probe: set_default_device("cuda") alone proves nothing
    return Backend(
        "torch" if device == "cpu" else f"torch:{device}",
        "torch",
        lambda a: torch.from_numpy(np.array(a, copy=True)).to(dev),
        device=dev,
        autodiff=True,
        gpu=device != "cpu",
    )


def _cupy() -> Backend:
    import cupy

    cupy.empty(3)  # allocation probe
    return Backend("cupy", "cupy", lambda a: cupy.asarray(np.array(a, copy=True)), gpu=True)


def _jax() -> Backend:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 inputs stay float64 (JAX's default is 32-bit)
    import jax.numpy as jnp

    jnp.zeros(3)  # allocation probe
    return Backend("jax", "jaxlib", lambda a: jnp.asarray(np.array(a, copy=True)), module="jax.numpy")


def _probe(name: str, make: Callable[[], Backend]) -> tuple[Backend | None, str]:
    try:
        return make(), ""
    except ImportError as e:
        return None, f"{name}: not importable ({e})"
    except Exception as e:  # any failed probe means "not usable here"
        return None, f"{name}: probe failed ({type(e).__name__}: {e})"


def _torch_cuda() -> Backend:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "no CUDA device (torch.cuda.is_available() is False"
            f"{'; torch is a CPU build' if torch.version.cuda is None else ''})"
        )
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


_GPU = {name: gpu for name, _, gpu in _CANDIDATES}
REQUIRED = _names("HYPERZZW_REQUIRE_BACKENDS")
"""Backends whose absence fails their tests; read at import, so that an unknown name is refused
even where every backend is present."""


def _selected() -> set[str] | None:
    return _names("HYPERZZW_BACKENDS") or None


def import_or_skip(module: str, backend: str) -> Any:
    """``pytest.importorskip(module)``, except that a :func:`required` backend's import error fails."""
    if required(backend):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")


def required(name: str) -> bool:
    """Whether a missing backend ``name`` fails its tests instead of skipping them."""
    return (_GPU[name] and REQUIRE_GPU) or name in REQUIRED


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
            if required(name):  # no skip mark: the fixture fails the test
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
KNOWN = tuple(c[0] for c in _CANDIDATES)
"""Every backend name a marker may use (available here or not)."""
BACKEND_FIXTURES = ("backend", "torch_backend")
MARKERS = ("skip_backend", "xfail_backend")


def resolve(param: Backend | _Missing) -> Backend:
    """The backend of one fixture parameter; skip (or fail, where :func:`required`) a missing one."""
    if isinstance(param, _Missing):
        msg = f"backend {param.name} unavailable: {param.why}"
        if param.fail:
            pytest.fail(msg + " (HYPERZZW_REQUIRE_GPU=1 or HYPERZZW_REQUIRE_BACKENDS makes it a failure)")
        pytest.skip(msg)
    return param


def backend_marks(test: str, markers: Iterable[Any], params: Mapping[str, Any]) -> list[Any]:
    """The skip/xfail marks that ``skip_backend``/``xfail_backend`` markers put on one test item.

    ``markers`` are the item's ``pytest.Mark`` objects named in :data:`MARKERS`; ``params`` its
    parameters (``item.callspec.params``). A marker applies when the item's backend is one of its
    names and every keyword other than ``reason`` equals the item's parameter of that name. xfail
    marks are strict: a test that starts to pass on that backend fails until the marker goes.
    Raises ``pytest.UsageError`` (naming the test) for a marker without a reason, with an unknown
    backend name, with a condition on a parameter the test does not have, or on a test without a
    backend fixture: a marker that could never apply would silently test nothing.
    """
    fixtures = [f for f in BACKEND_FIXTURES if f in params]
    out = []
    for mark in markers:
        where = f"{test}: @pytest.mark.{mark.name}{mark.args}"
        conditions = {k: v for k, v in mark.kwargs.items() if k != "reason"}
        reason = mark.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{where}: reason= is required (why this backend is left out)")
        if not mark.args:
            raise pytest.UsageError(f"{where}: name at least one backend; known: {list(KNOWN)}")
        unknown = sorted(set(mark.args) - set(KNOWN))
        if unknown:
            raise pytest.UsageError(f"{where}: unknown backends {unknown}; known: {list(KNOWN)}")
        if not fixtures:
            raise pytest.UsageError(f"{where}: the test uses no backend fixture {list(BACKEND_FIXTURES)}")
        missing = sorted(set(conditions) - set(params))
        if missing:
            raise pytest.UsageError(f"{where}: conditions on {missing}, which are not parameters of the test")
        name = params[fixtures[0]].name
        if name not in mark.args or any(params[k] != v for k, v in conditions.items()):
            continue
        if mark.name == "skip_backend":
            out.append(pytest.mark.skip(reason=f"{name}: {reason}"))
        else:
            out.append(pytest.mark.xfail(reason=f"{name}: {reason}", strict=True))
    return out

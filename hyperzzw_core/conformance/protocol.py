"""The implementation protocol: what a third-party implementation exposes for the conformance kit.

An implementation is a Python module (``my_pkg.my_module`` or ``path/to/file.py``) or an object
(``my_pkg.module:obj``) that exposes **any subset** of the reference's operator names
(``hyperzzw_global``, ``rgu``, ``sfne_block``, ``terminator_loss``, …) with the reference's
signatures, working on its own arrays. Everything else is optional:

``from_numpy(array, *, device=None)``
    Convert a NumPy array (float32/float64 inputs and int64 labels) to the implementation's array
    on ``device``. Default: NumPy arrays are passed as they are.
``to_numpy(x)``
    Convert an output back. Default: NumPy, torch, CuPy and any DLPack-capable array are handled.
Gradients, checked when one of these is present (in this order):
    * ``<op>_vjp(*args, cotangent, **kwargs)``: the reference convention, returning the cotangent
      of every differentiable positional argument (a tuple, or one value when there is one);
    * ``hyperzzw_vjp(op_name, args, kwargs, cotangent, wrt)``: one generic hook (e.g. built on
      ``jax.vjp``). ``wrt`` is the tuple of the differentiable positional-argument indices of
      ``op_name`` (:data:`DIFFERENTIABLE`); return one cotangent per index in ``wrt``,
      in that order (``None`` for an argument passed as ``None``). A hook written for the old
      four-argument form ``hyperzzw_vjp(op_name, args, kwargs, cotangent)`` is still called that way;
    * ``hyperzzw_autograd = "torch"``: the kit itself runs ``torch.autograd.grad`` through the
      forward (inputs made ``requires_grad``);
    * ``hyperzzw_autograd = "jax"``: the kit runs ``jax.vjp`` through the forward over the ``wrt``
      arguments (the port's ``from_numpy`` should return JAX arrays; float64 needs
      ``jax.config.update("jax_enable_x64", True)`` in the port).

The cotangent has the output's structure (an array, or a tuple for ``sfne_block``); a parameter
tree's cotangent is a tree of the same keys. Inputs are fresh copies per call; a port must not
modify them (``verify`` reports it). The differentiable arguments of every operator are
:data:`DIFFERENTIABLE`; :func:`differentiable_table` renders them as the table in the README's
"Verify your implementation" section.

Parameter dicts, lists of kernels and tuples of outputs are converted leaf by leaf; configs,
sizes, flags and keyword arguments are passed unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..reference import flatten, tree_map
from ..testing.registry import REGISTRY
from ..testing.tolerance import to_numpy as _default_to_numpy

DIFFERENTIABLE: dict[str, tuple[int, ...]] = {name: spec.differentiable for name, spec in REGISTRY.items()}
"""Operator → the indices of its positional arguments that carry gradients (the ``wrt`` of the hook)."""


def _arg_names(fn: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def differentiable_table() -> str:
    """A Markdown table: operator, its positional arguments, the differentiable ones (index: name)."""
    lines = ["| operator | positional arguments | differentiable (`wrt`) |", "|---|---|---|"]
    for name, spec in REGISTRY.items():
        names = _arg_names(spec.reference)
        wrt = ", ".join(f"{i}: `{names[i]}`" for i in spec.differentiable) or "none (forward only)"
        lines.append(f"| `{name}` | {', '.join(f'`{n}`' for n in names)} | {wrt} |")
    return "\n".join(lines)


def load_target(target: str | ModuleType | object) -> object:
    """Import ``module``, ``module:attr`` or ``path/to/file.py``; objects pass through."""
    if not isinstance(target, str):
        return target
    spec_attr = None
    if ":" in target and not Path(target).exists():
        target, spec_attr = target.rsplit(":", 1)
    if target.endswith(".py") or Path(target).is_file():
        path = Path(target).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--impl: no such file {path}")
        name = f"hyperzzw_impl_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"--impl: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, spec_attr) if spec_attr else module


class Implementation:
    """A loaded implementation under test, with the protocol's defaults filled in."""

    def __init__(self, target: str | ModuleType | object, device: str | None = None):
        self.target = load_target(target)
        self.name = target if isinstance(target, str) else getattr(target, "__name__", repr(target))
        self.file: str | None = getattr(self.target, "__file__", None)
        """The port's source file (its own frames are named in error lines)."""
        self.device = device
        self._from_numpy = getattr(self.target, "from_numpy", None)
        self._to_numpy = getattr(self.target, "to_numpy", None)
        self.autograd = getattr(self.target, "hyperzzw_autograd", None)
        if self.autograd not in (None, "torch", "jax"):
            raise ValueError(f"{self.name}: hyperzzw_autograd must be 'torch', 'jax' or absent, got {self.autograd!r}")

    def op(self, name: str) -> Callable[..., Any] | None:
        fn = getattr(self.target, name, None)
        return fn if callable(fn) else None

    def public_callables(self) -> list[str]:
        """The port's public callable names (functions, not modules or classes)."""
        names = []
        for n in dir(self.target):
            if n.startswith("_"):
                continue
            v = getattr(self.target, n, None)
            if callable(v) and not isinstance(v, type) and getattr(v, "__module__", None) != "typing":
                names.append(n)
        return names

    def covers(self, name: str) -> bool:
        return self.op(name) is not None

    def has_gradients(self, name: str) -> bool:
        return (
            self.op(f"{name}_vjp") is not None
            or callable(getattr(self.target, "hyperzzw_vjp", None))
            or self.autograd in ("torch", "jax")
        )

    # ------------------------------------------------------------------------- conversion
    def convert(self, value: Any) -> Any:
        """NumPy inputs (arrays, trees, tuples) → implementation arrays; other values unchanged."""
        if isinstance(value, tuple):
            return tuple(self.convert(v) for v in value)
        if isinstance(value, (dict, list)):
            return tree_map(self.convert, value)
        if isinstance(value, np.ndarray):
            if self._from_numpy is None:
                return value
            return self._from_numpy(value, device=self.device)
        return value

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(self._to_numpy(x)) if self._to_numpy is not None else _default_to_numpy(x)

    def output_leaves(self, out: Any) -> dict[str, Any]:
        """Flatten an output (array, tuple, list, dict) to named leaves (not yet converted)."""
        if isinstance(out, (tuple, list, dict)):
            return flatten(list(out) if isinstance(out, tuple) else out)
        return {"": out}

    # -------------------------------------------------------------------------- gradients
    def vjp(self, name: str, args: tuple, kwargs: dict, cot: Any, differentiable: tuple[int, ...]) -> tuple:
        """Cotangents of args[i], i in ``differentiable``, for cotangent ``cot`` (impl arrays)."""
        fn = self.op(f"{name}_vjp")
        if fn is not None:
            g = fn(*args, cot, **kwargs)
            return g if isinstance(g, tuple) else (g,)
        hook = getattr(self.target, "hyperzzw_vjp", None)
        if callable(hook):
            g = (
                hook(name, args, kwargs, cot, tuple(differentiable))
                if _takes_wrt(hook)
                else hook(name, args, kwargs, cot)
            )
            return g if isinstance(g, tuple) else (g,)
        if self.autograd in ("torch", "jax"):
            op = self.op(name)
            if op is None:
                raise NotImplementedError(f"{self.name} does not define {name}")
            autodiff = _torch_vjp if self.autograd == "torch" else _jax_vjp
            return autodiff(op, args, kwargs, cot, differentiable)
        raise NotImplementedError(f"{self.name} exposes no gradients for {name}")


def _takes_wrt(hook: Callable[..., Any]) -> bool:
    """Whether a ``hyperzzw_vjp`` hook accepts the fifth argument ``wrt`` (the current protocol)."""
    try:
        params = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 5


def _jax_vjp(fn: Callable[..., Any], args: tuple, kwargs: dict, cot: Any, differentiable: tuple[int, ...]) -> tuple:
    """``jax.vjp`` of ``fn`` over the present differentiable arguments (None stays None)."""
    import jax

    wrt = [i for i in differentiable if args[i] is not None]

    def f(*primals: Any) -> Any:
        full = list(args)
        for i, p in zip(wrt, primals, strict=True):
            full[i] = p
        return fn(*full, **kwargs)

    _, pullback = jax.vjp(f, *(args[i] for i in wrt))
    grads = dict(zip(wrt, pullback(cot), strict=True))
    return tuple(grads.get(i) for i in differentiable)


def _torch_vjp(fn: Callable[..., Any], args: tuple, kwargs: dict, cot: Any, differentiable: tuple[int, ...]) -> tuple:
    import torch

    def leaf(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.detach().clone().requires_grad_(True)
        return x

    full = list(args)
    for i in differentiable:
        if full[i] is not None:
            full[i] = tree_map(leaf, full[i]) if isinstance(full[i], (dict, list)) else leaf(full[i])
    out = fn(*full, **kwargs)
    outs = (
        list(flatten(list(out) if isinstance(out, tuple) else out).values())
        if isinstance(out, (tuple, list, dict))
        else [out]
    )
    cots = (
        list(flatten(list(cot) if isinstance(cot, tuple) else cot).values())
        if isinstance(cot, (tuple, list, dict))
        else [cot]
    )
    inputs, where = [], []
    for i in differentiable:
        if full[i] is None:
            continue
        leaves = flatten(full[i]) if isinstance(full[i], (dict, list)) else {"": full[i]}
        for k, v in leaves.items():
            inputs.append(v)
            where.append((i, k))
    grads = torch.autograd.grad(outs, inputs, grad_outputs=cots, allow_unused=True)
    result: dict[int, dict] = {i: {} for i in differentiable}
    for (i, k), g, v in zip(where, grads, inputs, strict=True):
        result[i][k] = torch.zeros_like(v) if g is None else g
    out_t: list[Any] = []
    for i in differentiable:
        if full[i] is None:
            out_t.append(None)
        elif isinstance(full[i], (dict, list)):
            from ..reference import unflatten

            out_t.append(unflatten(result[i]))
        else:
            out_t.append(result[i][""])
    return tuple(out_t)

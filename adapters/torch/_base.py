"""The base class of the torch modules: parameters that mirror the shared parameter tree.

:class:`ParamModule` stores a parameter tree (:mod:`hyperzzw_core.params`) as a module tree
(dict → module, list → ``ModuleList``, array → ``nn.Parameter``), so that ``state_dict()`` keys
are the flattened parameter keys; ``from_params`` / ``to_params`` / ``param_tree`` convert both
ways. The subclasses (layers, slow nets, blocks, the network) live in the sibling modules.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from itertools import repeat
from typing import Any, ClassVar, NamedTuple, Self, cast

import numpy as np
import torch
from torch import nn

from ... import params as _params
from ... import regularizer as _regularizer

Tree = Any
"""A parameter tree: nested dicts and lists of arrays of any library (:mod:`hyperzzw_core.params`)."""


_MISSING = object()
"""A registry entry that must not exist (a ``ModuleList`` index one past its end)."""

_NEVER = object()
"""The value recorded for a read outside the registries: no registry holds it, so a tree that
made such a read is never reused."""


class _TreeCache(NamedTuple):
    """The tree :meth:`ParamModule.forward_tree` built, and every registry entry it was built from:
    ``registries[i][keys[i]] is values[i]`` (``_MISSING``: no such key) for every i."""

    registries: tuple[dict[str, Any], ...]
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    tree: dict[str, Any]

    def holds(self) -> bool:
        """Whether every entry is still the same object (C-level loops: no Python frame per entry)."""
        found = map(dict.get, self.registries, self.keys, repeat(_MISSING))
        return all(map(operator.is_, found, self.values))


def _dtype(dtype: Any) -> torch.dtype:
    """``dtype`` (None: torch's default; a torch, NumPy or string dtype) as torch.float32 or torch.float64."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        out: object = dtype
    else:
        out = getattr(torch, np.dtype(dtype).name if not isinstance(dtype, str) else dtype, None)
    if not isinstance(out, torch.dtype) or out not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return out


class ParamModule(nn.Module):
    """A module whose parameters mirror a parameter tree (dict → module, list → ModuleList,
    array → ``nn.Parameter``; 0-D parameters for the scalar biases).

    Subclasses name the module type of their sub-trees in ``_child_types`` (key → class, or
    key → class of the list items) and pass options to them with ``_child_options``.
    """

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {}

    def _child_options(self, key: str) -> dict[str, Any]:
        return {}

    def _build(self, tree: Mapping[str, Any], device: Any, dtype: Any) -> None:
        if not isinstance(tree, Mapping):
            raise TypeError(f"{type(self).__name__}: expected a dict of parameters, got {type(tree).__name__}")
        keys = []
        for key, value in tree.items():
            cls = self._child_types.get(key, ParamModule)
            if isinstance(value, Mapping):
                child = cls._from_tree(value, device, dtype, **self._child_options(key))
                self.add_module(key, child)
            elif isinstance(value, (list, tuple)):
                self.add_module(
                    key, nn.ModuleList(cls._from_tree(v, device, dtype, **self._child_options(key)) for v in value)
                )
            else:
                t = _params.convert(value, torch, device=device, dtype=dtype, copy=True)
                self.register_parameter(key, nn.Parameter(t))
            keys.append(key)
        self._keys = tuple(keys)

    @classmethod
    def _from_tree(cls, tree: Mapping[str, Any], device: Any, dtype: Any, **options: Any) -> Self:
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._set_options(**options)
        self._build(tree, device, dtype)
        return self

    def _set_options(self, *args: Any, **options: Any) -> None:
        """Store the module's non-shape options (eps, config, …); this base class takes none.

        Subclasses override it with their own keywords (``_set_options(self, eps: float = 1e-5)``).
        The ``(*args: Any, **options: Any)`` signature is what lets mypy accept those overrides
        (it reads it as "any arguments", like ``Callable[..., None]``); it is only ever called
        with keywords (from :meth:`_from_tree`).
        """
        if args:
            raise TypeError(
                f"{type(self).__name__}._set_options: expected keyword options only, got {len(args)} "
                "positional argument(s)"
            )
        if options:
            raise TypeError(f"{type(self).__name__}: unexpected options {sorted(options)}")

    @classmethod
    def from_params(cls, params: Tree, *, device: Any = None, dtype: Any = None, **options: Any) -> Self:
        """Build the module from a parameter tree of any library (copied; ``dtype``/``device``
        default to the source's). ``options`` are the constructor's non-shape keywords (eps, …)."""
        return cls._from_tree(params, device, None if dtype is None else _dtype(dtype), **options)

    def param_tree(self) -> dict[str, Any]:
        """The live parameter tree (``nn.Parameter`` leaves) that the core functions consume."""
        return self._walk_tree([])

    def _walk_tree(self, entries: list[tuple[dict[str, Any], str, Any]]) -> dict[str, Any]:
        """:meth:`param_tree`, appending to ``entries`` every registry entry it read
        (``registry[key] is value``): each parameter and sub-module under its name, each
        ``ModuleList`` item under its index and no index past the list's end (``_MISSING``). A value
        read outside the registries (a parametrization's property) appends an entry that never
        holds (``_NEVER``)."""
        out: dict[str, Any] = {}
        params, modules = self._parameters, self._modules
        for key in self._keys:
            # the registries first (nn.Module.__getattr__ is slow: this runs on every forward)
            v: Any
            if key in params:
                v = params[key]
                entries.append((params, key, v))
            elif key in modules:
                v = modules[key]
                entries.append((modules, key, v))
            else:
                v = getattr(self, key)
                entries.append((params, key, _NEVER))
            if isinstance(v, nn.ModuleList):
                items = v._modules
                entries.extend((items, k, m) for k, m in items.items())
                entries.append((items, str(len(items)), _MISSING))
                # _build fills every ModuleList with ParamModules (``_child_types``)
                out[key] = [cast(ParamModule, m)._walk_tree(entries) for m in v]
            elif isinstance(v, ParamModule):
                out[key] = v._walk_tree(entries)
            else:
                out[key] = v
        return out

    def forward_tree(self) -> dict[str, Any]:
        """:meth:`param_tree` for the forward passes, which only read it: the tree built on an
        earlier call, as long as every registry entry it was built from (each parameter and
        sub-module under its name, each ``ModuleList`` item under its index, and no index past a
        list's end) is still the same object, else built again. Checked on every call (for the
        ``cifar10()`` Terminator's 1,551 entries about 50 µs, against 240 to 300 µs for building
        the tree; docs/speed.md). A parameter changed in place (an optimizer step, ``copy_``,
        ``p.data = …``) is the same object, so the tree stays right; a parameter or sub-module
        replaced (``setattr``, ``load_state_dict(assign=True)``, ``torch.func.functional_call``, a
        ``ModuleList`` grown or shrunk) fails the check. A module whose tree reads anything
        outside its registries (a parametrization's property) is built on every call.

        The same dict is returned again: callers must not change it (:meth:`param_tree` gives a
        new one on every call)."""
        cache: _TreeCache | None = self.__dict__.get("_tree_cache")
        if cache is not None and cache.holds():
            return cache.tree
        entries: list[tuple[dict[str, Any], str, Any]] = []
        tree = self._walk_tree(entries)
        registries, keys, values = zip(*entries, strict=True) if entries else ((), (), ())
        self.__dict__["_tree_cache"] = _TreeCache(registries, keys, values, tree)
        return tree

    def forward_tree_kept(self) -> dict[str, Any] | None:
        """The tree :meth:`forward_tree` last built and keeps (None if none), unchecked."""
        cache: _TreeCache | None = self.__dict__.get("_tree_cache")
        return None if cache is None else cache.tree

    def to_params(self, grads: bool = False, *, like: Any = None) -> Tree:
        """Export the parameters (or, with ``grads=True``, their ``.grad``; zeros where None) as a
        parameter tree of detached tensors sharing storage, or converted to ``like`` (e.g. numpy)."""

        def leaf(p: torch.Tensor) -> torch.Tensor:
            if not grads:
                return p.detach()
            return torch.zeros_like(p) if p.grad is None else p.grad.detach()

        tree = _tree_map(leaf, self.param_tree())
        return tree if like is None else _params.convert(tree, like)

    def l2_regularizer(self, weight: float = 5e-5, *, slow_weight: float = _regularizer.SLOW_WEIGHT) -> torch.Tensor:
        """λ·R of the author's ``LnLoss`` over this module's parameters (see :func:`l2_partition`)."""
        return _regularizer.l2_regularizer(dict(self.named_parameters()), weight, slow_weight=slow_weight)


def _tree_map(fn: Any, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_tree_map(fn, v) for v in tree]
    return fn(tree)


def _init(module: ParamModule, tree: Tree, device: Any, dtype: Any) -> None:
    module._build(tree, device, _dtype(dtype))

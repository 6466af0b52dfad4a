"""The SFNE block and the cache of its input-independent values: the slow networks' outputs and the
linears' input-independent parts (spec §1.3, §2.11)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import array_api_compat.torch as _xp
import numpy as np
import torch

from ... import internals as _internals
from ...reference import TerminatorConfig, init_block
from ._base import ParamModule, _init
from .interactions import RGU, HyperChannelInteraction, HyperInteraction, LocalBranch
from .layers import Bottleneck, ChannelMixer
from .slow_nets import MAGNetG

# ---------------------------------------------------------------------------- slow-kernel cache

_VERSION, _DTYPE, _DEVICE = operator.attrgetter("_version"), operator.attrgetter("dtype"), operator.attrgetter("device")


class SlowKernelCache:
    """The input-independent values of a module (its slow networks' outputs and its linears'
    stacked and folded weights), kept between parameter updates.

    ``lookup(params, compute)`` returns the value of ``compute()`` computed for the current state of
    ``params`` (every parameter those values read), recomputing whenever that state changed. The state
    of each parameter is the ``Parameter`` object itself (identity), its data pointer and its
    version counter, which every in-place change bumps: optimizer steps, ``load_state_dict``
    (``copy_``), ``with torch.no_grad(): p.mul_(…)``. A new tensor behind a parameter (``.to()``,
    ``p.data = …``, ``load_state_dict(assign=True)``) changes the pointer or the object; the
    previous storage is held by the cache, so its address cannot be reused by a new tensor while
    the entry lives. dtype, device and inference mode are part of the key too. The owning
    modules also clear the cache on ``.train()``/``.eval()``, ``.to()``/``.cuda()``/``.double()``
    (``Module._apply``) and ``load_state_dict``.

    Not visible to any key: writes through ``p.data`` (a tensor with its own version counter);
    call the module's ``clear_kernel_cache()`` after those. An inference tensor among ``params``
    (a parametrization's value formed in inference mode) has no version counter: then nothing is
    cached and ``compute()`` runs on every call.
    """

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.clear()

    def clear(self) -> None:
        """Forget the cached value (the hit/miss counters are kept)."""
        self._params: list[torch.Tensor] | None = None
        self._storage: list[torch.Tensor] = []
        self._state: tuple | None = None
        self._value: Any = None

    @staticmethod
    def _state_of(params: Sequence[torch.Tensor]) -> tuple:
        """Each parameter's version, data pointer, dtype and device (one C-level loop per attribute:
        for the ``cifar10()`` Terminator's 684 slow parameters about 130 µs, against 140 to 260 µs
        as one tuple per parameter), and whether inference mode is on."""
        return (
            tuple(map(_VERSION, params)),
            tuple(map(torch.Tensor.data_ptr, params)),
            tuple(map(_DTYPE, params)),
            tuple(map(_DEVICE, params)),
            torch.is_inference_mode_enabled(),
        )

    def lookup(self, params: Sequence[torch.Tensor], compute: Callable[[], Any]) -> Any:
        params = list(params)
        try:
            state = self._state_of(params)
        except RuntimeError:  # an inference tensor (a parametrization's value formed in inference
            if not any(p.is_inference() for p in params):  # mode) has no version: not cached
                raise
            self.clear()
            self.misses += 1
            return compute()
        cached = self._params
        if (
            self._value is not None
            and state == self._state
            and cached is not None
            and len(cached) == len(params)
            and all(a is b for a, b in zip(cached, params, strict=True))
        ):
            self.hits += 1
            return self._value
        self.clear()
        value = compute()
        self._params, self._storage, self._state, self._value = params, [p.detach() for p in params], state, value
        self.misses += 1
        return value


class _CachesSlowKernels(ParamModule):
    """Mixin: ``slow_kernels()`` with a :class:`SlowKernelCache` in eval mode when no gradient is needed."""

    @property
    def kernel_cache(self) -> SlowKernelCache:
        """This module's :class:`SlowKernelCache` (created on first use)."""
        cache = self.__dict__.get("_kernel_cache")
        if cache is None:
            cache = SlowKernelCache()
            self.__dict__["_kernel_cache"] = cache
        return cache

    def clear_kernel_cache(self) -> None:
        """Drop the cached input-independent values (needed only after writes through ``p.data``)."""
        cache = self.__dict__.get("_kernel_cache")
        if cache is not None:
            cache.clear()

    @staticmethod
    def _kernel_parameters(tree: dict[str, Any]) -> list[torch.Tensor]:
        """The leaves of ``tree`` (this module's live :meth:`param_tree`) that the cached values may
        read: all of them (the slow networks' and the linears' whose input-independent parts are
        formed with the kernels), so that no parameter can change behind the cache's key."""
        return _leaves(tree, [])

    def _compute_slow_kernels(self, tree: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _kernel_parameters_of(self, tree: dict[str, Any]) -> list[torch.Tensor]:
        """:meth:`_kernel_parameters` of ``tree``; for the tree :meth:`forward_tree` keeps (which no
        caller changes, and which is the same object while no parameter or sub-module was
        replaced) read once and kept with it."""
        if tree is not self.forward_tree_kept():
            return self._kernel_parameters(tree)
        kept = self.__dict__.get("_kernel_parameters_kept")
        if kept is not None and kept[0] is tree:
            return kept[1]
        params = self._kernel_parameters(tree)
        self.__dict__["_kernel_parameters_kept"] = (tree, params)
        return params

    def _kernels_need_grad(self, params: Sequence[torch.Tensor]) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in params)

    def slow_kernels(self, tree: dict[str, Any] | None = None) -> Any:
        """The input-independent values (``_internals.block_slow_kernels`` per block).

        Computed once per forward in train mode (they are part of the autograd graph of that
        step) and whenever gradients are needed; in eval mode without gradients (``torch.no_grad``
        / ``torch.inference_mode``, or no parameter requiring grad) computed once per parameter
        state and cached (:class:`SlowKernelCache`). ``tree``: this module's :meth:`param_tree`
        if the caller already has it (read again otherwise).
        """
        tree = self.param_tree() if tree is None else tree
        if self.training or torch.compiler.is_compiling():
            return self._compute_slow_kernels(tree)
        params = self._kernel_parameters_of(tree)
        if self._kernels_need_grad(params):
            return self._compute_slow_kernels(tree)
        return self.kernel_cache.lookup(params, lambda: self._compute_slow_kernels(tree))

    def train(self, mode: bool = True) -> Any:
        self.clear_kernel_cache()
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self.clear_kernel_cache()
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        self.clear_kernel_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _leaves(tree: Any, out: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(tree, dict):
        for v in tree.values():
            _leaves(v, out)
    elif isinstance(tree, list):
        for v in tree:
            _leaves(v, out)
    else:
        out.append(tree)
    return out


# ------------------------------------------------------------------------------------ block


class SFNEBlock(_CachesSlowKernels):
    """Block ``index`` of a Terminator ``config`` (spec §1.3, §2.11).

    forward(z, x_pre=None, x_pre_pre=None, dropout_mask=None) → (out (B, bf·C, *S), K_g (1, C, *S)).
    In eval mode without gradients the input-independent values are cached
    (:meth:`slow_kernels`, :class:`SlowKernelCache`).
    """

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {
        "slow_g": MAGNetG,
        "rgu_fast": RGU,
        "rgu_slow": RGU,
        "mixer": ChannelMixer,
        "hci": HyperChannelInteraction,
        "hi": HyperInteraction,
        "local": LocalBranch,
        "bottleneck": Bottleneck,
    }

    def __init__(
        self, config: TerminatorConfig, index: int, *, seed: int = 0, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        self._set_options(config=config)
        _init(self, init_block(np.random.default_rng(seed), config, index), device, dtype)

    def _set_options(
        self, config: TerminatorConfig | None = None, groups: int = 12, eps: float = 1e-5, grid: Any = None
    ) -> None:
        if config is not None:
            groups, eps, grid = config.ibs_groups, config.eps, config.grid
        self.groups, self.eps, self.grid = groups, eps, grid

    def _child_options(self, key: str) -> dict[str, Any]:
        return {"eps": self.eps} if key in ("rgu_fast", "rgu_slow", "mixer", "local") else {}

    def _compute_slow_kernels(self, tree: dict[str, Any]) -> dict[str, Any]:
        return _internals.block_slow_kernels(_xp, tree)

    def forward(
        self,
        z: torch.Tensor,
        x_pre: torch.Tensor | None = None,
        x_pre_pre: torch.Tensor | None = None,
        dropout_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.forward_tree()
        xp, z, x_pre, x_pre_pre, dropout_mask = _internals.block_checked_inputs(
            params, z, x_pre, x_pre_pre, self.groups, self.grid, dropout_mask, False
        )
        return _internals.block_forward(
            xp,
            params,
            z,
            x_pre,
            x_pre_pre,
            self.groups,
            self.eps,
            self.grid,
            dropout_mask,
            None,
            self.slow_kernels(params),
        )

"""PyTorch front-end: ``nn.Module``s over the array-API core, Kar2/Kar3 and the L2 regulariser.

Every module with parameters stores them as a module tree that mirrors the shared parameter
format (:mod:`hyperzzw_core.params`): ``state_dict()`` keys are the flattened parameter keys, and
``Module.from_params(tree)`` / ``module.to_params()`` convert both ways. The forward passes call
the array-API core (:mod:`hyperzzw_core`) on torch tensors; gradients come from autograd. The code
is device-agnostic (parameters live where ``device=`` or ``.to()`` put them), accepts float32 and
float64, and traces under ``torch.compile`` (no data-dependent Python control flow, no host
synchronisation, no ``lru_cache`` on the forward path).

Example::

    from hyperzzw_core.adapters.torch import Kar3, Terminator
    from hyperzzw_core.reference import tiny

    model = Terminator(tiny(), seed=0)                 # = reference.init_params(tiny(), 0)
    opt = Kar3(model.parameters(), lr=1e-3)
    loss = model.loss(x, labels) + model.l2_regularizer(5e-5)
    loss.backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import array_api_compat.torch as _xp
import numpy as np
import torch
from torch import nn

import hyperzzw_core as _core

from .. import internals as _internals
from .. import params as _params
from .. import reference as _ref
from .. import regularizer as _regularizer
from ..reference import TerminatorConfig, init_block, init_magnet_g, init_magnet_gc, init_magnet_l
from ..reference import init_rgu as _rgu_init

__all__ = [
    "AdaptiveAvgPool", "BatchStandardize", "Bottleneck", "ChannelMixer", "DepthwiseConv", "GELU", "GIBS",
    "HyperChannelInteraction", "HyperInteraction", "HyperZZW2E", "HyperZZWGlobal", "InstanceStandardize",
    "Kar2", "Kar3", "LabelSmoothingCrossEntropy", "LocalBranch", "LocalConv", "MAGNetG", "MAGNetGC",
    "MAGNetL", "ParamModule", "PointwiseLinear", "RGU", "SFNEBlock", "SiGLU", "SlowKernelCache", "SlowLoss",
    "Terminator",
    "TileChannels", "global_batch_namespace", "l2_partition", "l2_regularizer",
]

Tree = Any


def _dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = getattr(torch, np.dtype(dtype).name if not isinstance(dtype, str) else dtype, None)
    if out not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return out


# ------------------------------------------------------------------------------ base class


class ParamModule(nn.Module):
    """A module whose parameters mirror a parameter tree (dict → module, list → ModuleList,
    array → ``nn.Parameter``; 0-D parameters for the scalar biases).

    Subclasses name the module type of their sub-trees in ``_child_types`` (key → class, or
    key → class of the list items) and pass options to them with ``_child_options``.
    """

    _child_types: ClassVar[dict[str, type]] = {}

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
                self.add_module(key, nn.ModuleList(
                    cls._from_tree(v, device, dtype, **self._child_options(key)) for v in value))
            else:
                t = _params.convert(value, torch, device=device, dtype=dtype, copy=True)
                self.register_parameter(key, nn.Parameter(t))
            keys.append(key)
        self._keys = tuple(keys)

    @classmethod
    def _from_tree(cls, tree: Mapping[str, Any], device: Any, dtype: Any, **options: Any) -> ParamModule:
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._set_options(**options)
        self._build(tree, device, dtype)
        return self

    def _set_options(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__}: unexpected options {sorted(options)}")

    @classmethod
    def from_params(cls, params: Tree, *, device: Any = None, dtype: Any = None, **options: Any) -> ParamModule:
        """Build the module from a parameter tree of any library (copied; ``dtype``/``device``
        default to the source's). ``options`` are the constructor's non-shape keywords (eps, …)."""
        return cls._from_tree(params, device, None if dtype is None else _dtype(dtype), **options)

    def param_tree(self) -> dict[str, Any]:
        """The live parameter tree (``nn.Parameter`` leaves) that the core functions consume."""
        out: dict[str, Any] = {}
        params, modules = self._parameters, self._modules
        for key in self._keys:
            # the registries first (nn.Module.__getattr__ is slow: this runs on every forward)
            v = params[key] if key in params else modules[key] if key in modules else getattr(self, key)
            if isinstance(v, nn.ModuleList):
                out[key] = [m.param_tree() for m in v]
            elif isinstance(v, ParamModule):
                out[key] = v.param_tree()
            else:
                out[key] = v
        return out

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


# ------------------------------------------------------------------------ linear layers


class PointwiseLinear(ParamModule):
    """Linear{d}d (a 1×1 convolution): (B, I, *S) → (B, O, *S); params {"weight": (O, I), "bias": (O,)}.

    ``init``: "kaiming_normal" (mixers, bottleneck, head), "kaiming_uniform" (slow nets, RGU; bias
    ``bias``) or "default" (PyTorch's conv default: U(±1/√I) for both). Spec §2.
    """

    def __init__(self, in_channels: int, out_channels: int, *, init: str = "kaiming_normal",
                 bias: float = 0.0, seed: int = 0, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        if init == "kaiming_normal":
            tree = _ref.kaiming_normal(rng, out_channels, in_channels)
        elif init == "kaiming_uniform":
            tree = _ref.kaiming_uniform_linear(rng, out_channels, in_channels, bias=bias)
        elif init == "default":
            tree = _ref.conv_default(rng, out_channels, in_channels)
        else:
            raise ValueError(f"init: expected 'kaiming_normal', 'kaiming_uniform' or 'default', got {init!r}")
        _init(self, tree, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.pointwise_linear(self.param_tree(), x, check_finite=False)


class ChannelMixer(PointwiseLinear):
    """Channel mixer M = IS(Linear_{C→C}(Z)) (spec §2.10): (B, C, *S) → (B, C, *S)."""

    def __init__(self, channels: int, *, eps: float = 1e-5, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(channels, channels, seed=seed, device=device, dtype=dtype)
        self.eps = eps

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _core.channel_mixer(self.param_tree(), z, eps=self.eps, check_finite=False)


class Bottleneck(PointwiseLinear):
    """Bottleneck Linear_{n_branches·C → bf·C} (spec §2.10)."""

    def __init__(self, in_channels: int, out_channels: int, *, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, seed=seed, device=device, dtype=dtype)


class LocalConv(ParamModule):
    """LocalConv(K_l, Y) = GELU(BS(Mixer(depthwise_conv(Y, K_l)))) (spec §2.3).

    Params: the mixer {"weight": (C, C), "bias": (C,)}. forward(y (B, C, *S), k_l (C, 1, *k)).
    """

    def __init__(self, channels: int, *, eps: float = 1e-5, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.eps = eps
        _init(self, _ref.kaiming_normal(np.random.default_rng(seed), channels, channels), device, dtype)

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def forward(self, y: torch.Tensor, k_l: torch.Tensor) -> torch.Tensor:
        return _core.local_conv(self.param_tree(), y, k_l, eps=self.eps, check_finite=False)


# ------------------------------------------------------------------------------- slow nets


class _MAGNetBase(ParamModule):
    _child_types = {"filters": PointwiseLinear, "linears": PointwiseLinear, "output": PointwiseLinear,
                    "reduce": PointwiseLinear, "fc1": PointwiseLinear, "linears_x": PointwiseLinear}


class MAGNetG(_MAGNetBase):
    """MAGNet_G: the global kernel K (1, C_out, *sizes) from the coordinate grid (spec §2.1).

    forward() takes no input (K is input-independent).
    """

    def __init__(self, sizes: Sequence[int], hidden: int, out_channels: int, num_layers: int, *,
                 omega_0: float = 2000.0, alpha: float = 6.0, beta: float = 1.0, seed: int = 0,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        tree = init_magnet_g(np.random.default_rng(seed), tuple(sizes), hidden, out_channels, num_layers,
                             omega_0=omega_0, alpha=alpha, beta=beta)
        _init(self, tree, device, dtype)

    def forward(self) -> torch.Tensor:
        return _core.magnet_g(self.param_tree())


class MAGNetGC(_MAGNetBase):
    """MAGNet_GC: a channel kernel (1, 1, C) on a 1-D grid of C positions (spec §2.1)."""

    def __init__(self, channels: int, hidden: int, num_layers: int, *, omega_0: float = 2000.0,
                 alpha: float = 6.0, beta: float = 1.0, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        tree = init_magnet_gc(np.random.default_rng(seed), channels, hidden, num_layers,
                              omega_0=omega_0, alpha=alpha, beta=beta)
        _init(self, tree, device, dtype)

    def forward(self) -> torch.Tensor:
        return _core.magnet_gc(self.param_tree())


class MAGNetL(_MAGNetBase):
    """MAGNet_L: a context-dependent local kernel (C_out, 1, k, …) (spec §2.1).

    forward(x (B, C_out, *S)); the s-renormalisation's first term is ``.detach()``-ed.
    """

    def __init__(self, kernel_size: int, data_dim: int, hidden: int, out_channels: int, num_layers: int, *,
                 omega_0: float = 2000.0, alpha: float = 6.0, beta: float = 1.0, seed: int = 0,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        tree = init_magnet_l(np.random.default_rng(seed), kernel_size, data_dim, hidden, out_channels,
                             num_layers, omega_0=omega_0, alpha=alpha, beta=beta)
        _init(self, tree, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.magnet_l(self.param_tree(), x, check_finite=False)


# ----------------------------------------------------------------------------- interactions


class RGU(ParamModule):
    """Recursive gated unit Y = W_Y(GELU(IS(W_K Z ⊙ W_Q(W_V Z))) + B) (spec §2.5)."""

    _child_types = {"w_k": PointwiseLinear, "w_v": PointwiseLinear, "w_q": PointwiseLinear,
                    "w_y": PointwiseLinear}

    def __init__(self, channels: int, spatial: Sequence[int], *, eps: float = 1e-5, seed: int = 0,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.eps = eps
        _init(self, _rgu_init(np.random.default_rng(seed), channels, tuple(spatial)), device, dtype)

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _core.rgu(self.param_tree(), z, eps=self.eps, check_finite=False)


class HyperChannelInteraction(ParamModule):
    """Z ⊙ σ(K_c ⊙ GAP(Z)²) with K_c = MAGNet_GC (spec §2.7)."""

    _child_types = {"channel": MAGNetGC}

    def __init__(self, channels: int, hidden: int = 32, num_layers: int = 2, *, omega_0: float = 2000.0,
                 alpha: float = 6.0, beta: float = 1.0, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        tree = {"channel": init_magnet_gc(rng, channels, hidden, num_layers, omega_0=omega_0, alpha=alpha,
                                          beta=beta)}
        _init(self, tree, device, dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _core.hyper_channel_interaction(self.param_tree(), z, check_finite=False)


class HyperInteraction(ParamModule):
    """X ⊙ σ((K_ss ⊙ mean_c(Y)²) ⊙ (K_cc ⊙ GAP(Y)²)) (spec §2.8). forward(y, x)."""

    _child_types = {"channel": MAGNetGC, "spatial": MAGNetG}

    def __init__(self, channels: int, spatial: Sequence[int], channel_hidden: int = 16,
                 spatial_hidden: int = 64, num_layers: int = 2, *, omega_0: float = 2000.0,
                 alpha: float = 6.0, beta: float = 1.0, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        mag = {"omega_0": omega_0, "alpha": alpha, "beta": beta}
        tree = {"channel": init_magnet_gc(rng, channels, channel_hidden, num_layers, **mag),
                "spatial": init_magnet_g(rng, tuple(spatial), spatial_hidden, 1, num_layers, **mag)}
        _init(self, tree, device, dtype)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _core.hyper_interaction(self.param_tree(), y, x, check_finite=False)


class LocalBranch(ParamModule):
    """One local branch of an SFNE block: {"slow_l": MAGNetL, "mixer": LocalConv, "bias": ()}.

    forward(ctx, y) = LocalConv(MAGNet_L(ctx), y) + bias (spec §2.3, §1.3 step 12).
    """

    _child_types = {"slow_l": MAGNetL, "mixer": LocalConv}

    def __init__(self, kernel_size: int, data_dim: int, channels: int, hidden: int = 32, num_layers: int = 2,
                 *, eps: float = 1e-5, omega_0: float = 2000.0, alpha: float = 6.0, beta: float = 1.0,
                 seed: int = 0, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.eps = eps
        rng = np.random.default_rng(seed)
        tree = {"slow_l": init_magnet_l(rng, kernel_size, data_dim, hidden, channels, num_layers,
                                        omega_0=omega_0, alpha=alpha, beta=beta),
                "mixer": _ref.kaiming_normal(rng, channels, channels), "bias": np.zeros(())}
        _init(self, tree, device, dtype)

    def _set_options(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def _child_options(self, key: str) -> dict[str, Any]:
        return {"eps": self.eps} if key == "mixer" else {}

    def forward(self, ctx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mixer(y, self.slow_l(ctx)) + self.bias


# ----------------------------------------------------------------------- slow-kernel cache


class SlowKernelCache:
    """The input-independent slow-network outputs of a module, kept between parameter updates.

    ``lookup(params, compute)`` returns the value of ``compute()`` computed for the current state of
    ``params`` (the slow networks' parameters), recomputing whenever that state changed. The state
    of each parameter is the ``Parameter`` object itself (identity), its data pointer and its
    version counter, which every in-place change bumps: optimizer steps, ``load_state_dict``
    (``copy_``), ``with torch.no_grad(): p.mul_(…)``. A new tensor behind a parameter (``.to()``,
    ``p.data = …``, ``load_state_dict(assign=True)``) changes the pointer or the object; the
    previous storage is held by the cache, so its address cannot be reused by a new tensor while
    the entry lives. dtype, device and inference mode are part of the key too. The owning
    modules also clear the cache on ``.train()``/``.eval()``, ``.to()``/``.cuda()``/``.double()``
    (``Module._apply``) and ``load_state_dict``.

    Not visible to any key: writes through ``p.data`` (a tensor with its own version counter);
    call the module's ``clear_kernel_cache()`` after those.
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
        return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params) + (
            torch.is_inference_mode_enabled(),)

    def lookup(self, params: Sequence[torch.Tensor], compute: Callable[[], Any]) -> Any:
        params = list(params)
        state = self._state_of(params)
        cached = self._params
        if (self._value is not None and state == self._state and cached is not None and len(cached) == len(params)
                and all(a is b for a, b in zip(cached, params))):
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
        """Drop the cached slow-network outputs (needed only after writes through ``p.data``)."""
        cache = self.__dict__.get("_kernel_cache")
        if cache is not None:
            cache.clear()

    def _slow_parameters(self, tree: dict[str, Any]) -> list[torch.Tensor]:
        """The leaves of ``tree`` (this module's live :meth:`param_tree`) that the slow kernels read."""
        raise NotImplementedError

    def _compute_slow_kernels(self, tree: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _kernels_need_grad(self, params: Sequence[torch.Tensor]) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in params)

    def slow_kernels(self, tree: dict[str, Any] | None = None) -> Any:
        """The input-independent slow-network outputs (``_internals.block_slow_kernels`` per block).

        Computed once per forward in train mode (they are part of the autograd graph of that
        step) and whenever gradients are needed; in eval mode without gradients (``torch.no_grad``
        / ``torch.inference_mode``, or no parameter requiring grad) computed once per parameter
        state and cached (:class:`SlowKernelCache`). ``tree``: this module's :meth:`param_tree`
        if the caller already has it (read again otherwise).
        """
        tree = self.param_tree() if tree is None else tree
        if self.training or torch.compiler.is_compiling():
            return self._compute_slow_kernels(tree)
        params = self._slow_parameters(tree)
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


def _block_slow_parameters(tree: dict[str, Any], out: list[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters of a block's slow networks (slow_g, hci, hi, every local slow_l), from its tree."""
    for key in ("slow_g", "hci", "hi"):
        _leaves(tree[key], out)
    for branch in tree["local"]:
        _leaves(branch["slow_l"], out)
    return out


# ------------------------------------------------------------------------------------ block


class SFNEBlock(_CachesSlowKernels):
    """Block ``index`` of a Terminator ``config`` (spec §1.3, §2.11).

    forward(z, x_pre=None, x_pre_pre=None, dropout_mask=None) → (out (B, bf·C, *S), K_g (1, C, *S)).
    In eval mode without gradients the input-independent slow-network outputs are cached
    (:meth:`slow_kernels`, :class:`SlowKernelCache`).
    """

    _child_types = {"slow_g": MAGNetG, "rgu_fast": RGU, "rgu_slow": RGU, "mixer": ChannelMixer,
                    "hci": HyperChannelInteraction, "hi": HyperInteraction, "local": LocalBranch,
                    "bottleneck": Bottleneck}

    def __init__(self, config: TerminatorConfig, index: int, *, seed: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self._set_options(config=config)
        _init(self, init_block(np.random.default_rng(seed), config, index), device, dtype)

    def _set_options(self, config: TerminatorConfig | None = None, groups: int = 12, eps: float = 1e-5,
                     grid: Any = None) -> None:
        if config is not None:
            groups, eps, grid = config.ibs_groups, config.eps, config.grid
        self.groups, self.eps, self.grid = groups, eps, grid

    def _child_options(self, key: str) -> dict[str, Any]:
        return {"eps": self.eps} if key in ("rgu_fast", "rgu_slow", "mixer", "local") else {}

    def _slow_parameters(self, tree: dict[str, Any]) -> list[torch.Tensor]:
        return _block_slow_parameters(tree, [])

    def _compute_slow_kernels(self, tree: dict[str, Any]) -> dict[str, Any]:
        return _internals.block_slow_kernels(_xp, tree)

    def forward(self, z: torch.Tensor, x_pre: torch.Tensor | None = None, x_pre_pre: torch.Tensor | None = None,
                dropout_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.param_tree()
        xp, z, x_pre, x_pre_pre, dropout_mask = _internals.block_checked_inputs(params, z, x_pre, x_pre_pre, self.groups,
                                                                      self.grid, dropout_mask, False)
        return _internals.block_forward(xp, params, z, x_pre, x_pre_pre, self.groups, self.eps, self.grid, dropout_mask,
                               None, self.slow_kernels(params))


# ---------------------------------------------------------------------------------- network


class Terminator(_CachesSlowKernels):
    """The Terminator network of ``config`` (2D images or 1D sequences; spec §1.2, §5 Q1).

    ``Terminator(config, seed=0)`` holds exactly ``reference.init_params(config, seed)`` (cast to
    ``dtype``, default torch's default dtype). forward(x (B, *input_shape)) → logits (B, K);
    ``loss(x, labels)`` is ``reference.terminator_loss``: in train mode label-smoothing CE +
    slow loss with Dropout2d drawn from torch's RNG; in ``.eval()`` CE only, no dropout.
    ``state_dict()`` keys are the flat parameter keys (``blocks.0.slow_g.filters.0.weight``, …).

    Speed: in eval mode without gradients the input-independent slow-network outputs (every
    block's K_g, K_c, K_cc, K_ss and MAGNet_L's input-independent prefix) are computed once per
    parameter state and cached (:meth:`slow_kernels`, :class:`SlowKernelCache`);
    :meth:`compile` runs the tensor program under ``torch.compile``.
    """

    _child_types = {"blocks": SFNEBlock, "head": PointwiseLinear}

    batch_namespace: Any = None
    """The array namespace the forward runs on (None: ``array_api_compat.torch``). Set it to
    :func:`global_batch_namespace` for multi-process training with global batch statistics."""

    def __init__(self, config: TerminatorConfig, seed: int = 0, *, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self._set_options(config=config)
        host = _params.init_params(config, seed, dtype=str(_dtype(dtype)).rsplit(".", 1)[-1])
        _init(self, host, device, dtype)

    def _set_options(self, config: TerminatorConfig | None = None) -> None:
        if not isinstance(config, TerminatorConfig):
            raise TypeError(f"config: expected a TerminatorConfig, got {type(config).__name__}")
        self.config = config

    def _child_options(self, key: str) -> dict[str, Any]:
        return {"config": self.config} if key == "blocks" else {}

    @classmethod
    def from_params(cls, params: Tree, config: TerminatorConfig | None = None, *, device: Any = None,
                    dtype: Any = None) -> Terminator:
        """Build from a parameter tree of any library (copied), checked against ``config``."""
        if config is None:
            raise TypeError("Terminator.from_params: pass the TerminatorConfig the parameters belong to")
        _core.check_params_match(params, config)
        return super().from_params(params, device=device, dtype=dtype, config=config)  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- running
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        w = self.head.weight
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(cfg.input_shape) or x.ndim != cfg.data_dim + 2 or x.shape[0] < 1:
            raise ValueError(f"x: expected (B, {', '.join(map(str, cfg.input_shape))}) for this config, "
                             f"got {tuple(x.shape)}")
        if x.dtype != w.dtype or x.device != w.device:
            raise TypeError(f"x: expected {w.dtype} on {w.device} (the parameters'), got {x.dtype} on {x.device}")

    def dropout_masks(self, batch: int) -> list[torch.Tensor | None]:
        """Dropout2d masks (B, C_out) per block from torch's RNG: 0 w.p. p, else 1/(1−p); None
        where p = 0 or in eval mode."""
        if not self.training:
            return [None] * self.config.num_blocks
        w = self.head.weight
        masks: list[torch.Tensor | None] = []
        for p, c in zip(self.config.dropout, self.config.out_channels):
            if p == 0.0:
                masks.append(None)
                continue
            keep = torch.rand((batch, c), device=w.device, dtype=w.dtype) >= p
            masks.append(keep.to(w.dtype) * (1.0 / (1.0 - p)))
        return masks

    # ------------------------------------------------------------------------ fast paths
    def _slow_parameters(self, tree: dict[str, Any]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for block in tree["blocks"]:
            _block_slow_parameters(block, out)
        return out

    def _compute_slow_kernels(self, tree: dict[str, Any]) -> list[dict[str, Any]]:
        return _internals.network_slow_kernels(_xp, tree)

    def _run(self, x: torch.Tensor, masks: list, kernels: list | None,
             tree: dict[str, Any] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The tensor program of the forward pass (what :meth:`compile` compiles)."""
        xp = _xp if self.batch_namespace is None else self.batch_namespace
        tree = self.param_tree() if tree is None else tree
        return _internals.network_forward(xp, tree, x, self.config, self.training, masks, None, kernels)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Run the forward's tensor program under ``torch.compile(*args, **kwargs)`` (Inductor by default).

        Input checks, dropout masks and the eval-mode kernel cache stay eager: in train mode the
        slow networks are compiled with the rest (one graph per step, backward included); in eval
        mode the cached kernels are inputs of the compiled graph. The first call in each mode
        compiles (minutes on a CPU). If compiling or running the compiled program fails, a
        ``RuntimeWarning`` names the error and the module falls back to the eager path for good.
        ``Module.compile``'s in-place semantics are kept; :meth:`uncompile` undoes it.
        """
        self.__dict__["_compiled_run"] = torch.compile(self._run, *args, **kwargs)

    def uncompile(self) -> None:
        """Return to the eager path."""
        self.__dict__.pop("_compiled_run", None)

    @property
    def is_compiled(self) -> bool:
        """Whether :meth:`compile` is in effect (it is dropped after a failure)."""
        return self.__dict__.get("_compiled_run") is not None

    def forward_with_kernels(self, x: torch.Tensor, dropout_masks: list | None = None
                             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits (B, K), global kernels [(1, C_i, *S)]); masks default to :meth:`dropout_masks`."""
        self._check_input(x)
        masks = self.dropout_masks(x.shape[0]) if dropout_masks is None else list(dropout_masks)
        tree = self.param_tree()
        kernels = None if self.training else self.slow_kernels(tree)
        run = self.__dict__.get("_compiled_run")
        if run is not None and not torch.compiler.is_compiling():
            try:
                return run(x, masks, kernels)
            except Exception as err:  # noqa: BLE001 - any compiler failure: fall back to eager
                self.uncompile()
                warnings.warn(f"Terminator.compile: the compiled forward failed ({type(err).__name__}: {err}); "
                              "using the eager path from now on", RuntimeWarning, stacklevel=2)
        return self._run(x, masks, kernels, tree)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_kernels(x)[0]

    def loss(self, x: torch.Tensor, labels: torch.Tensor, dropout_masks: list | None = None, *,
             check_labels: bool = True) -> torch.Tensor:
        """``reference.terminator_loss`` with train = ``self.training`` (spec §2.12-2.13).

        Labels must be integers in [0, num_classes); ``check_labels=False`` skips the range check
        (one min/max read back per call) for hot loops whose labels were validated beforehand.
        """
        if (not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],) or labels.is_floating_point()
                or labels.is_complex() or labels.dtype == torch.bool):
            raise ValueError(f"labels: expected an integer tensor of shape ({x.shape[0]},), got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
        if check_labels:
            _internals.check_label_range(_xp, labels, self.config.num_classes)
        logits, kernels = self.forward_with_kernels(x, dropout_masks)
        cfg = self.config
        loss = _internals.label_smoothing_cross_entropy_unchecked(_xp, logits, labels, cfg.label_smoothing)
        return loss + _internals.network_slow_loss(_xp, cfg, kernels) if self.training else loss


# ------------------------------------------------------------------ parameter-free operators


class _Op(nn.Module):
    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")


class HyperZZWGlobal(_Op):
    """G = (Z ⊙ K_g) @ Y (spec §2.2). forward(z, k_g, y); ``grid`` for 1-D inputs."""

    def __init__(self, grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, z: torch.Tensor, k_g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _core.hyperzzw_global(z, k_g, y, grid=self.grid, check_finite=False)


class HyperZZW2E(_Op):
    """K ⊙ Z² (spec §2.4). forward(k, z)."""

    def forward(self, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return _core.hyperzzw_2e(k, z, check_finite=False)


class DepthwiseConv(_Op):
    """Depth-wise 'same' cross-correlation (spec §2.3). forward(y, k_l)."""

    def forward(self, y: torch.Tensor, k_l: torch.Tensor) -> torch.Tensor:
        return _core.depthwise_conv(y, k_l, check_finite=False)


class GELU(_Op):
    """Exact (erf) GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.gelu(x, check_finite=False)


class SiGLU(_Op):
    """S = σ(G1) ⊙ G1 (spec §2.6)."""

    def forward(self, g1: torch.Tensor) -> torch.Tensor:
        return _core.si_glu(g1, check_finite=False)


class InstanceStandardize(_Op):
    """IS over the spatial axes (spec §2.9)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.instance_standardize(x, self.eps, check_finite=False)


class BatchStandardize(_Op):
    """BS over batch and spatial axes, batch statistics in eval too (spec §2.9, §5 Q5)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.batch_standardize(x, self.eps, check_finite=False)


class GIBS(_Op):
    """G-IBS: even channel groups BS, odd groups IS (spec §2.9)."""

    def __init__(self, groups: int = 12, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.g_ibs(x, self.groups, self.eps, check_finite=False)


class AdaptiveAvgPool(_Op):
    """Adaptive average pooling of the spatial axes to ``size`` (PyTorch's bins)."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.adaptive_avg_pool(x, self.size)


class TileChannels(_Op):
    """Repeat the channel stack ``reps`` times (torch ``repeat(1, reps, 1, 1)``)."""

    def __init__(self, reps: int) -> None:
        super().__init__()
        self.reps = int(reps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _core.tile_channels(x, self.reps)


class SlowLoss(_Op):
    """Slow neural loss over the global kernels (spec §2.12). forward(list of K_i)."""

    def __init__(self, factors: Sequence[int], kind: str = "tiled") -> None:
        super().__init__()
        self.factors, self.kind = tuple(int(f) for f in factors), kind

    def forward(self, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
        return _core.slow_loss(list(kernels), self.factors, kind=self.kind, check_finite=False)


class LabelSmoothingCrossEntropy(_Op):
    """Label-smoothing CE, ε = 0.09 (spec §2.13). forward(logits (B, K), labels (B,))."""

    def __init__(self, eps: float = 0.09) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return _core.label_smoothing_cross_entropy(logits, labels, self.eps, check_finite=False)


def global_batch_namespace(group: Any = None) -> Any:
    """The torch namespace whose batch-axis means span every process of ``group`` (default: the
    world): assign it to ``Terminator.batch_namespace`` under ``torch.distributed`` so that batch
    standardisation and MAGNet_L's batch mean use the global batch (see ``_torch_distributed``)."""
    from ._torch_distributed import global_batch_namespace as make

    return make(group)


# ----------------------------------------------------------------------- regulariser (§2.13)


def _flat_named(params: Any) -> Any:
    if isinstance(params, nn.Module):
        return dict(params.named_parameters())
    return params


def l2_partition(params: Any) -> _regularizer.L2Partition:
    """The (fast, slow) key sets of the author's L2 regulariser for a module, state_dict or tree.

    See :mod:`hyperzzw_core.regularizer` for the documented rule (spec §5 Q10).
    """
    return _regularizer.l2_partition(_flat_named(params))


def l2_regularizer(params: Any, weight: float = 5e-5, *,
                   slow_weight: float = _regularizer.SLOW_WEIGHT) -> torch.Tensor:
    """λ·(Σ_fast ‖p‖ + 1e-6·Σ_slow ‖p‖) with plain Frobenius norms, for a module or a tree."""
    return _regularizer.l2_regularizer(_flat_named(params), weight, slow_weight=slow_weight)


# ------------------------------------------------------------------------ optimizers (§2.14)


class Kar3(torch.optim.Optimizer):
    """The author's Kar3 (spec §2.14): three sign steps per gradient.

    For each parameter with gradient g, with EMAs m₁ = m₂ = 0 at the start::

        p ← p − lr·sign(g) − lr·sign(m₁) − lr·sign(m₂)        (signs of the PREVIOUS EMAs)
        m₁ ← β₁·m₁ + (1 − β₁)·g ;  m₂ ← β₂·m₂ + (1 − β₂)·g

    sign(0) = 0 (the first step uses sign(g) only); no bias correction, no weight decay. State
    keys: ``m1``, ``m2`` (the author calls both ``exp_avg_sq``; they are EMAs of g, not g²).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.95)) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr: expected a non-negative learning rate, got {lr}")
        b1, b2 = (float(b) for b in betas)
        for i, b in enumerate((b1, b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}]: expected a value in [0, 1), got {b}")
        super().__init__(params, {"lr": lr, "betas": (b1, b2)})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("Kar3 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["m1"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["m2"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m1, m2 = state["m1"], state["m2"]
                p.add_(torch.sign(g), alpha=-lr)
                p.add_(torch.sign(m1), alpha=-lr)
                p.add_(torch.sign(m2), alpha=-lr)
                m1.mul_(b1).add_(g, alpha=1.0 - b1)
                m2.mul_(b2).add_(g, alpha=1.0 - b2)
        return loss


class Kar2(torch.optim.Optimizer):
    """The author's Kar2 (spec §2.14): p ← p − lr·sign(g) − lr·sign(m); m ← β·m + (1 − β)·g.

    ``betas`` is one float (the author's code passes ``(0.95)``, i.e. 0.95); a 1-tuple is accepted.
    sign(0) = 0, no bias correction, no weight decay. State key: ``m``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: float | Sequence[float] = 0.95) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr: expected a non-negative learning rate, got {lr}")
        if isinstance(betas, (tuple, list)):
            if len(betas) != 1:
                raise ValueError(f"betas: Kar2 takes one β (a float), got {betas!r}")
            betas = betas[0]
        b = float(betas)
        if not 0.0 <= b < 1.0:
            raise ValueError(f"betas: expected a value in [0, 1), got {b}")
        super().__init__(params, {"lr": lr, "betas": b})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, b = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("Kar2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["m"]
                p.add_(torch.sign(g), alpha=-lr)
                p.add_(torch.sign(m), alpha=-lr)
                m.mul_(b).add_(g, alpha=1.0 - b)
        return loss



# ------------------------------------------- functional interface (the conformance-kit protocol)
# Every operator as a function on torch tensors, under the reference's names and signatures (they
# are the array-API core's; gradients come from autograd). With these three hooks,
# ``hyperzzw verify --impl hyperzzw_core.adapters.torch`` checks forward values and gradients.

hyperzzw_autograd = "torch"


def from_numpy(array: np.ndarray, *, device: Any = None) -> torch.Tensor:
    """A NumPy array as a tensor on ``device`` (float dtypes and int64 labels kept)."""
    return torch.as_tensor(array, device=device)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """An explicit device → host copy."""
    return x.detach().cpu().numpy()


from .. import (adaptive_avg_pool, batch_standardize, bottleneck, channel_mixer, depthwise_conv,  # noqa: E402
                g_ibs, gelu, hyper_channel_interaction, hyper_interaction, hyperzzw_2e, hyperzzw_global,
                instance_standardize, label_smoothing_cross_entropy, local_conv, magnet_g, magnet_gc, magnet_l,
                pointwise_linear, rgu, sfne_block, si_glu, slow_loss, terminator_forward, terminator_loss,
                tile_channels)

__all__ += [
    "adaptive_avg_pool", "batch_standardize", "bottleneck", "channel_mixer", "depthwise_conv", "from_numpy",
    "g_ibs", "gelu", "hyper_channel_interaction", "hyper_interaction", "hyperzzw_2e", "hyperzzw_global",
    "instance_standardize", "label_smoothing_cross_entropy", "local_conv", "magnet_g", "magnet_gc", "magnet_l",
    "pointwise_linear", "rgu", "sfne_block", "si_glu", "slow_loss", "terminator_forward", "terminator_loss",
    "tile_channels", "to_numpy",
]

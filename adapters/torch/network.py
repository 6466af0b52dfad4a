"""The Terminator network (spec §1.2, §5 Q1) as an ``nn.Module``: forward, loss, dropout, ``compile``."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Self

import array_api_compat.torch as _xp
import torch
from torch import nn

import hyperzzw_core as _core

from ... import internals as _internals
from ... import params as _params
from ...reference import TerminatorConfig
from ._base import ParamModule, Tree, _dtype, _init
from .block import SFNEBlock, _CachesSlowKernels, _leaves
from .layers import PointwiseLinear


class Terminator(_CachesSlowKernels):
    """The Terminator network of ``config`` (2D images or 1D sequences; spec §1.2, §5 Q1).

    ``Terminator(config, seed=0)`` holds exactly ``reference.init_params(config, seed)`` (cast to
    ``dtype``, default torch's default dtype). forward(x (B, *input_shape)) → logits (B, K);
    ``loss(x, labels)`` is ``reference.terminator_loss``: in train mode label-smoothing CE +
    slow loss with Dropout2d drawn from torch's RNG; in ``.eval()`` CE only, no dropout.
    ``state_dict()`` keys are the flat parameter keys (``blocks.0.slow_g.filters.0.weight``, …).

    Speed: in eval mode without gradients the input-independent values (every block's K_g, K_c,
    K_cc, K_ss, MAGNet_L's input-independent prefix, the RGUs' stacked linears and the bottleneck's
    folded weights) are computed once per parameter state and cached (:meth:`slow_kernels`, :class:`SlowKernelCache`);
    :meth:`compile` runs the tensor program under ``torch.compile``.
    """

    _child_types: ClassVar[dict[str, type[ParamModule]]] = {"blocks": SFNEBlock, "head": PointwiseLinear}

    head: PointwiseLinear  # registered by _build from the "head" sub-tree (_child_types)
    blocks: nn.ModuleList  # of SFNEBlock

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
    def from_params(
        cls,
        params: Tree,
        config: TerminatorConfig | None = None,
        *,
        device: Any = None,
        dtype: Any = None,
        **options: Any,
    ) -> Self:
        """Build from a parameter tree of any library (copied), checked against ``config``.

        ``config`` is the only option (``**options`` is there for the base signature and refused)."""
        if options:
            raise TypeError(f"Terminator.from_params: unexpected options {sorted(options)}")
        if config is None:
            raise TypeError("Terminator.from_params: pass the TerminatorConfig the parameters belong to")
        _core.check_params_match(params, config)
        return super().from_params(params, device=device, dtype=dtype, config=config)

    # ----------------------------------------------------------------------------- running
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        w = self.head.weight
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(cfg.input_shape) or x.ndim != cfg.data_dim + 2 or x.shape[0] < 1:
            raise ValueError(
                f"x: expected (B, {', '.join(map(str, cfg.input_shape))}) for this config, got {tuple(x.shape)}"
            )
        if x.dtype != w.dtype or x.device != w.device:
            raise TypeError(f"x: expected {w.dtype} on {w.device} (the parameters'), got {x.dtype} on {x.device}")

    def dropout_masks(self, batch: int) -> list[torch.Tensor | None]:
        """Dropout2d masks (B, C_out) per block from torch's RNG: 0 w.p. p, else 1/(1−p); None
        where p = 0 or in eval mode."""
        if not self.training:
            return [None] * self.config.num_blocks
        w = self.head.weight
        masks: list[torch.Tensor | None] = []
        for p, c in zip(self.config.dropout, self.config.out_channels, strict=True):
            if p == 0.0:
                masks.append(None)
                continue
            keep = torch.rand((batch, c), device=w.device, dtype=w.dtype) >= p
            masks.append(keep.to(w.dtype) * (1.0 / (1.0 - p)))
        return masks

    # ------------------------------------------------------------------------ fast paths
    @staticmethod
    def _kernel_parameters(tree: dict[str, Any]) -> list[torch.Tensor]:
        """The blocks' parameters (the head's are not read before the blocks have run)."""
        return _leaves(tree["blocks"], [])

    def _compute_slow_kernels(self, tree: dict[str, Any]) -> list[dict[str, Any]]:
        return _internals.network_slow_kernels(_xp, tree, self.config)

    def _run(
        self, x: torch.Tensor, masks: list, kernels: list | None, tree: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
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

        With Inductor on the CPU, its layout optimisation is off unless ``options`` or ``mode``
        says otherwise: it gives the depth-wise convolutions channels-last activations and the
        batched products operands that aten copies row by row. At ``cifar10()``, B = 32, the
        training step took 2.14 to 2.18 s compiled with it and 1.58 s without, against 1.72 to
        1.87 s eager (docs/speed.md).
        """
        if _inductor_on_cpu(self, args, kwargs):
            kwargs["options"] = {"layout_optimization": False, **(kwargs.get("options") or {})}
        self.__dict__["_compiled_run"] = torch.compile(self._run, *args, **kwargs)

    def uncompile(self) -> None:
        """Return to the eager path."""
        self.__dict__.pop("_compiled_run", None)

    @property
    def is_compiled(self) -> bool:
        """Whether :meth:`compile` is in effect (it is dropped after a failure)."""
        return self.__dict__.get("_compiled_run") is not None

    def _runs_inference(self) -> bool:
        """Whether this call runs under ``torch.inference_mode`` (see :meth:`forward_with_kernels`):
        gradients off, inference mode not already on, the eager path, no trace (asked first:
        ``torch.is_inference_mode_enabled`` stops a ``torch.compile`` trace of the module)."""
        return not (
            torch.compiler.is_compiling()
            or torch.is_grad_enabled()
            or torch.is_inference_mode_enabled()
            or self.is_compiled
        )

    def _forward_with_kernels(
        self, x: torch.Tensor, dropout_masks: list | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        masks = self.dropout_masks(x.shape[0]) if dropout_masks is None else list(dropout_masks)
        tree = self.forward_tree()
        kernels = None if self.training else self.slow_kernels(tree)
        run = self.__dict__.get("_compiled_run")
        if run is not None and not torch.compiler.is_compiling():
            try:
                return run(x, masks, kernels)
            except Exception as err:  # any compiler failure: fall back to eager
                self.uncompile()
                warnings.warn(
                    f"Terminator.compile: the compiled forward failed ({type(err).__name__}: {err}); "
                    "using the eager path from now on",
                    RuntimeWarning,
                    stacklevel=4,  # the public method (forward, forward_with_kernels, loss)
                )
        return self._run(x, masks, kernels, tree)

    def forward_with_kernels(
        self, x: torch.Tensor, dropout_masks: list | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits (B, K), global kernels [(1, C_i, *S)]); masks default to :meth:`dropout_masks`.

        With gradients off (``torch.no_grad()``) the eager path runs under ``torch.inference_mode``,
        which skips autograd's bookkeeping of every view and in-place operation (the ``cifar10()``
        eval forward at B = 1 about 5% faster; docs/speed.md), and returns copies that are
        ordinary tensors, as without it: the values are the same kernels' and equal to the bit.
        """
        return self._outside_inference(x, dropout_masks, kernels=True)

    def _outside_inference(
        self, x: torch.Tensor, dropout_masks: list | None, *, kernels: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`_forward_with_kernels`, under inference mode where :meth:`_runs_inference`, its
        results then copied out as ordinary tensors: the logits, and the kernels if ``kernels``
        (else none are copied and ``[]`` is returned in their place)."""
        if not self._runs_inference():
            return self._forward_with_kernels(x, dropout_masks)
        with torch.inference_mode():
            logits, ks = self._forward_with_kernels(x, dropout_masks)
        return logits.clone(), [k.clone() for k in ks] if kernels else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._outside_inference(x, None, kernels=False)[0]

    def loss(
        self, x: torch.Tensor, labels: torch.Tensor, dropout_masks: list | None = None, *, check_labels: bool = True
    ) -> torch.Tensor:
        """``reference.terminator_loss`` with train = ``self.training`` (spec §2.12-2.13).

        Labels must be integers in [0, num_classes); ``check_labels=False`` skips the range check
        (one min/max read back per call) for hot loops whose labels were validated beforehand.
        """
        if (
            not isinstance(labels, torch.Tensor)
            or labels.shape != (x.shape[0],)
            or labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
        ):
            raise ValueError(
                f"labels: expected an integer tensor of shape ({x.shape[0]},), got "
                f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
            )
        if check_labels:
            _internals.check_label_range(_xp, labels, self.config.num_classes)
        if self.training:
            logits, kernels = self.forward_with_kernels(x, dropout_masks)
        else:  # the slow loss is a training term: the eval loss reads the logits only
            logits, kernels = self._outside_inference(x, dropout_masks, kernels=False)[0], []
        cfg = self.config
        loss = _internals.label_smoothing_cross_entropy_unchecked(_xp, logits, labels, cfg.label_smoothing)
        return loss + _internals.network_slow_loss(_xp, cfg, kernels) if self.training else loss


def _inductor_on_cpu(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether ``torch.compile(fn, *args, **kwargs)`` compiles ``module`` (parameters on the CPU)
    with Inductor and neither a ``mode`` nor a ``layout_optimization`` option of the caller's."""
    if args or "mode" in kwargs or kwargs.get("backend", "inductor") != "inductor":
        return False  # (fullgraph, dynamic, backend, mode, …) positionally: the caller's choice
    if "layout_optimization" in (kwargs.get("options") or {}):
        return False
    first = next(module.parameters(), None)
    return first is not None and first.device.type == "cpu"


def global_batch_namespace(group: Any = None) -> Any:
    """The torch namespace whose batch-axis means span every process of ``group`` (default: the
    world): assign it to ``Terminator.batch_namespace`` under ``torch.distributed`` so that batch
    standardisation and MAGNet_L's batch mean use the global batch (see ``_distributed``)."""
    from ._distributed import global_batch_namespace as make

    return make(group)

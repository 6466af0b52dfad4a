"""torch autograd Functions of the core's torch fast paths (imported only once torch is in use).

Kept out of ``_backend`` so that importing the core never imports torch; defined at module level
(not lazily) so that torch.compile can trace through them. Each Function has the ``setup_context``
form (``forward`` without ``ctx``), which ``torch.func`` transforms (``grad``, ``vjp``) require.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch

from ._compiled import load_cpu_kernels
from ._torch import (
    Term,
    concatenated_rows,
    concatenated_terms,
    concatenated_weight,
    onednn_concatenated,
    onednn_rows,
    torch_pointwise_linear,
    torch_pointwise_linear_sum,
)

cpu_kernels = load_cpu_kernels()  # after torch: the kernels share its OpenMP runtime (_compiled.py)


class _Operator:
    """A compiled kernel's torch operator hyperzzw::``name``, called the cheap way where that is
    the same call: its CPU kernel (the Python function registered for it) directly where nothing
    could see, transform or differentiate the call (no gradient recorded, no dispatch or function
    mode, no ``torch.func`` transform, the profiler off), else through torch's dispatcher, so
    that dispatch modes (the eager floor's record of the calls, fake tensors), the profiler and
    ``torch.func`` see one operator call as before. The dispatcher's round trip into a Python
    kernel costs about 5 µs a call: about 95 calls per eval forward of ``cifar10()`` at B = 1
    (docs/speed.md, "Twenty-third session")."""

    __slots__ = ("kernel", "op")

    def __init__(self, name: str, kernel: Callable[..., Any]) -> None:
        self.op = getattr(torch.ops.hyperzzw, name)
        self.kernel = kernel

    def __call__(self, *args: Any) -> Any:
        if _dispatch_needed():
            return self.op(*args)
        return self.kernel(*args)


def _dispatch_needed() -> bool:
    """Whether a call of a compiled kernel's operator must go through torch's dispatcher
    (:class:`_Operator`): grad mode on (an operator without an autograd kernel: the dispatcher
    marks its outputs), a dispatch or function mode active, a ``torch.func`` transform active
    (its tensors are wrappers whose data pointers the kernels must not read), or the profiler on."""
    c = torch._C
    return (
        torch.is_grad_enabled()
        or c._len_torch_dispatch_stack() > 0
        or c._is_torch_function_mode_enabled()
        or c._are_functorch_transforms_active()
        or c._autograd._profiler_enabled()
    )


class _KeepsOutput(torch.autograd.Function):
    """A standardisation whose forward returns (y, r) and keeps both, not its input, for backward."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        y, r = output
        ctx.mark_non_differentiable(r)
        ctx.save_for_backward(y, r)


class BatchStandardize(_KeepsOutput):
    """y = (x − μ)·(σ² + eps)^(−1/2) over ``axes``, every mean taken by ``mean`` (the caller's ``xp.mean``).

    Backward: gx = r·(g − mean(g) − y·mean(g·y)) with r = (σ² + eps)^(−1/2), its two means by
    ``mean`` too, so that a namespace whose batch means span several processes gets the global
    gradient. First derivatives only (a second backward raises). Call :meth:`standardize` (or
    ``apply(...)[0]``): ``forward`` also returns r, a non-differentiable output that the
    ``setup_context`` form needs in order to save it for the backward pass.
    """

    @staticmethod
    def forward(x: torch.Tensor, axes: tuple[int, ...], eps: float, mean: Any) -> tuple[torch.Tensor, torch.Tensor]:
        mu = mean(x, axis=axes, keepdims=True)
        d = x - mu
        r = torch.rsqrt(mean(d * d, axis=axes, keepdims=True) + eps)
        return d.mul_(r), r

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        _KeepsOutput.setup_context(ctx, inputs, output)
        _, ctx.axes, _, ctx.mean = inputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor, _g_r: Any) -> tuple[torch.Tensor, None, None, None]:
        y, r = ctx.saved_tensors
        gm = ctx.mean(g, axis=ctx.axes, keepdims=True)
        gy = ctx.mean(g * y, axis=ctx.axes, keepdims=True)
        return (g - torch.addcmul(gm, y, gy)).mul_(r), None, None, None

    @staticmethod
    def standardize(x: torch.Tensor, axes: tuple[int, ...], eps: float, mean: Any) -> torch.Tensor:
        """The standardised ``x`` (the Function's first output)."""
        return BatchStandardize.apply(x, axes, eps, mean)[0]


class DepthwiseConvOneDNN(torch.autograd.Function):
    """Depth-wise 'same' convolution of an NCHW ``y`` (B, C, H, W) with ``k`` (C, 1, kh, kw) by
    oneDNN, each pass in the layout where its kernel is fast on the CPU (docs/speed.md):

    * forward and input gradient in NCHW, as ``y`` and the gradient arrive (at (32, 144, 32, 32)
      the forward takes 2.6 ms, against 5.4 ms through channels-last and back); both by the
      compiled kernel where it applies (:func:`compiled_depthwise_conv_applies`), which sums in
      oneDNN's order and gives its bits in a third to a half of its time;
    * weight gradient by the compiled CPU kernel in NCHW where it applies
      (:func:`compiled_depthwise_weight_grad`: float32, 'same' padding, kw ∈ {1, 3, 5, 7, 9});
      else in channels-last: oneDNN's NCHW depth-wise weight gradient is pathologically slow for
      k ≥ 5 (seconds for the CIFAR-10 block 4; docs/benchmarks.md), its channels-last one is
      not. ``y`` and the gradient are then converted in backward (two copies); the channels-last
      copy of ``y`` is never kept (it would be one more activation per branch).

    The forward is the one the eval path runs (no gradients), so that train and eval mode compute
    the same values. First derivatives only.
    """

    @staticmethod
    def forward(y: torch.Tensor, k: torch.Tensor, pad: tuple[int, ...]) -> torch.Tensor:
        if compiled_depthwise_conv_applies(y, k, pad):
            return depthwise_conv(y, k, False)
        return torch.nn.functional.conv2d(y, k, padding=pad, groups=int(y.shape[1]))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        y, k, pad = inputs
        ctx.save_for_backward(y, k)
        ctx.pad = pad

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        y, k = ctx.saved_tensors
        want = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        if torch.compiler.is_compiling():
            gy, gk = depthwise_conv_backward(g, y, k, list(ctx.pad), list(want))
            return (gy if want[0] else None), (gk if want[1] else None), None
        gy_, gk_ = _depthwise_conv_backward(g, y, k, list(ctx.pad), list(want))
        return gy_, gk_, None


def _compiled_same_odd(y: torch.Tensor, k: torch.Tensor, pad: Sequence[int]) -> ModuleType | None:
    """The kernels' module where ``y`` (B, C, H, W), ``k`` (C, 1, kh, kw) and ``pad`` are what both
    compiled depth-wise kernels need, else None: the kernels installed
    (:func:`hyperzzw_core.backends.compiled_kernels`), float32 on the CPU, odd kh and kw with
    'same' padding, and no torch.compile trace (the kernels read data pointers)."""
    if cpu_kernels is None or y.ndim != 4 or k.ndim != 4 or torch.compiler.is_compiling():
        return None
    kh, kw = int(k.shape[2]), int(k.shape[3])
    fits = (
        y.device.type == "cpu"
        and y.dtype == torch.float32
        and k.dtype == torch.float32
        and kh % 2 == 1
        and kw % 2 == 1
        and tuple(int(p) for p in pad) == (kh // 2, kw // 2)
    )
    return cpu_kernels if fits else None


def compiled_weight_grad_applies(y: torch.Tensor, k: torch.Tensor, pad: Sequence[int]) -> bool:
    """Whether :func:`compiled_depthwise_weight_grad` computes ∂K of a depth-wise convolution of
    ``y`` (B, C, H, W) with ``k`` (C, 1, kh, kw) padded by ``pad``: :func:`_compiled_same_odd`,
    and a kw the kernel has (``depthwise_weight_grad_widths`` of the extension, the widths its C
    source lists once)."""
    kernels = _compiled_same_odd(y, k, pad)
    return kernels is not None and int(k.shape[3]) in kernels.depthwise_weight_grad_widths


def compiled_depthwise_conv_applies(y: torch.Tensor, k: torch.Tensor, pad: Sequence[int]) -> bool:
    """Whether the compiled depth-wise correlation (:func:`depthwise_conv`) computes the forward
    and the input gradient of a depth-wise convolution of ``y`` (B, C, H, W) with ``k``
    (C, 1, kh, kw) padded by ``pad``: :func:`_compiled_same_odd`, and rows at least
    ``depthwise_conv_min_width`` (16) wide. Narrower images stay with oneDNN, which vectorises
    over channels there: at 8 × 8 it is up to 2x faster than the kernel for 7 × 7 and 9 × 9
    kernels (docs/speed.md, "Eighteenth session")."""
    kernels = _compiled_same_odd(y, k, pad)
    return kernels is not None and int(y.shape[3]) >= kernels.depthwise_conv_min_width


def compiled_depthwise_weight_grad(g: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """∂K (C, 1, kh, kw) of D = DWConv(Y, K), the 'same' depth-wise correlation of spec §2.3, at
    ∂D = ``g`` (B, C, H, W)::

        ∂K[c, 0, i, j] = Σ_b Σ_{h,w} g[b, c, h, w] · Y[b, c, h + i − kh//2, w + j − kw//2]

    (Y zero outside the image), by the compiled CPU kernel (``_cpu_kernels.c``): NCHW as the
    arrays lie, each sample's sums in float32 and the samples added in float64, then rounded to
    float32 once. Where :func:`compiled_weight_grad_applies` holds; on the channels of ``y`` in
    ``torch.get_num_threads()`` threads. At (32, 144, 32, 32) with k = 9 on two cores, about a
    quarter of the time of oneDNN's channels-last kernel, and no copies to channels-last
    (docs/speed.md, "Sixteenth session")."""
    return depthwise_weight_grad(g, y, int(k.shape[2]), int(k.shape[3])).to(k.dtype)


def _built(op: str) -> ModuleType:
    """The compiled kernels' module for the operator ``op``; refuses, naming it, where the
    extension was not built (the operators are registered either way)."""
    if cpu_kernels is None:
        raise RuntimeError(f"{op}: the compiled CPU kernels are not built")
    return cpu_kernels


def _float32_cpu(op: str, **arrays: torch.Tensor) -> None:
    """Refuse, naming the argument, what a compiled kernel would misread: it reads float32 data
    pointers on the CPU."""
    for name, a in arrays.items():
        if a.dtype != torch.float32 or a.device.type != "cpu":
            raise ValueError(f"{op}: {name} must be float32 on the CPU, got {a.dtype} on {a.device}")


def _depthwise_weight_grad_cpu(g: torch.Tensor, y: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """The compiled kernel's call (float64 (C, 1, kh, kw)), the CPU kernel of the operator below."""
    op = "hyperzzw::depthwise_weight_grad"
    kernels = _built(op)
    _float32_cpu(op, g=g, y=y)
    if y.ndim != 4 or tuple(g.shape) != tuple(y.shape):
        raise ValueError(f"{op}: g and y must have one shape (B, C, H, W), got {tuple(g.shape)} and {tuple(y.shape)}")
    n, c, h, w = (int(v) for v in y.shape)
    y_, g_ = y.contiguous(), g.contiguous()
    out = torch.empty((c, 1, kh, kw), dtype=torch.float64, device=y.device)
    kernels.depthwise_weight_grad(
        y_.data_ptr(), g_.data_ptr(), out.data_ptr(), n, c, h, w, kh, kw, torch.get_num_threads()
    )
    return out


def _depthwise_weight_grad_meta(g: torch.Tensor, y: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    return y.new_empty((int(y.shape[1]), 1, kh, kw), dtype=torch.float64)


# The kernel as one torch operator, hyperzzw::depthwise_weight_grad, so that a dispatch mode sees it
# as one call (the eager floor of benchmarks/floor.py replays it with the convolutions). Registered
# through torch.library.Library rather than custom_op: the first call of a custom_op imports
# torch._dynamo (about 1.1 s), this one costs about 70 µs a call.
_LIBRARY = torch.library.Library("hyperzzw", "FRAGMENT")


def _register(schema: str, cpu: Callable[..., Any], meta: Callable[..., Any]) -> _Operator:
    """Define the operator hyperzzw::``schema`` with its CPU kernel ``cpu`` and its shape function
    ``meta``; returns the :class:`_Operator` that calls it."""
    name = schema.split("(", 1)[0]
    _LIBRARY.define(schema)
    _LIBRARY.impl(name, cpu, "CPU")
    _LIBRARY.impl(name, meta, "Meta")
    return _Operator(name, cpu)


_depthwise_weight_grad_op = _register(
    "depthwise_weight_grad(Tensor g, Tensor y, int kh, int kw) -> Tensor",
    _depthwise_weight_grad_cpu,
    _depthwise_weight_grad_meta,
)


def depthwise_weight_grad(g: torch.Tensor, y: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """∂K (C, 1, kh, kw) in float64 by the compiled kernel, through its torch operator."""
    return _depthwise_weight_grad_op(g, y, kh, kw)


def _depthwise_conv_cpu(y: torch.Tensor, k: torch.Tensor, turned: bool) -> torch.Tensor:
    """The compiled depth-wise correlation's call, the CPU kernel of the operator below."""
    op = "hyperzzw::depthwise_conv"
    kernels = _built(op)
    _float32_cpu(op, y=y, k=k)
    if y.ndim != 4 or k.ndim != 4 or int(k.shape[0]) != int(y.shape[1]) or int(k.shape[1]) != 1:
        raise ValueError(
            f"{op}: y must be (B, C, H, W) and k (C, 1, kh, kw), got {tuple(y.shape)} and {tuple(k.shape)}"
        )
    n, c, h, w = (int(v) for v in y.shape)
    kh, kw = int(k.shape[2]), int(k.shape[3])
    y_, k_ = y.contiguous(), k.contiguous()
    out = torch.empty((n, c, h, w), dtype=y.dtype, device=y.device)
    threads = torch.get_num_threads()
    kernels.depthwise_conv(y_.data_ptr(), k_.data_ptr(), out.data_ptr(), n, c, h, w, kh, kw, turned, threads)
    return out


def _depthwise_conv_meta(y: torch.Tensor, k: torch.Tensor, turned: bool) -> torch.Tensor:
    return torch.empty_like(y, memory_format=torch.contiguous_format)


_depthwise_conv_op = _register(
    "depthwise_conv(Tensor y, Tensor k, bool turned) -> Tensor", _depthwise_conv_cpu, _depthwise_conv_meta
)


def _linear_terms(
    op: str, kernels: ModuleType, b: torch.Tensor | None, xs: list[torch.Tensor], depth: int, o: int
) -> tuple[int, int, tuple[int, ...]]:
    """(B, N, (I_1, …)) of the terms x_i (B, I_i, N) of a compiled product whose left factor is
    (o, depth), after the checks both product operators make (float32 CPU checked by the caller):
    each term 3-D, one B and N, ``depth`` rows in all, at most ``linear_rows_max_terms`` terms, β
    of shape (o,)."""
    if not xs or any(x.ndim != 3 for x in xs):
        raise ValueError(f"{op}: xs must be a list of (B, I_i, N), got {[tuple(x.shape) for x in xs]}")
    batch, n = int(xs[0].shape[0]), int(xs[0].shape[2])
    rows = tuple(int(x.shape[1]) for x in xs)
    if any(int(x.shape[0]) != batch or int(x.shape[2]) != n for x in xs) or sum(rows) != depth:
        raise ValueError(
            f"{op}: xs must share B and N and have {depth} rows in all (the depth of w), "
            f"got {[tuple(x.shape) for x in xs]}"
        )
    if b is not None and tuple(b.shape) != (o,):
        raise ValueError(f"{op}: b must have shape ({o},), got {tuple(b.shape)}")
    if len(xs) > kernels.linear_rows_max_terms:
        raise ValueError(f"{op}: at most {kernels.linear_rows_max_terms} terms, got {len(xs)}")
    return batch, n, rows


def _left_factor(w: torch.Tensor, transposed: bool) -> tuple[int, int, int, int]:
    """(O, I, sr, sc) of the left factor L = W (or Wᵀ) of W (O_w, I_w) as it lies (contiguous):
    L (O, I), its element (o, k) at w[o·sr + k·sc]."""
    if transposed:
        return int(w.shape[1]), int(w.shape[0]), 1, int(w.shape[1])
    return int(w.shape[0]), int(w.shape[1]), int(w.shape[1]), 1


def _packed_size(kernels: ModuleType, o: int, depth: int) -> int:
    """The floats of an (o, depth) left factor packed in panels of ``linear_pack_rows`` rows."""
    rows = kernels.linear_pack_rows
    return (o + rows - 1) // rows * rows * depth


def _operand_pointers(
    b: torch.Tensor | None, xs: list[torch.Tensor]
) -> tuple[list[torch.Tensor], int, tuple[int, ...]]:
    """The data pointers that both product kernels read: β's (0 where there is none) and each
    term's, contiguous; with the arrays they point into, which the caller holds through the call."""
    held = [x.contiguous() for x in xs] + ([] if b is None else [b.contiguous()])
    bias = 0 if b is None else held[-1].data_ptr()
    return held, bias, tuple(x.data_ptr() for x in held[: len(xs)])


def _linear_rows_cpu(w: torch.Tensor, b: torch.Tensor | None, xs: list[torch.Tensor], transposed: bool) -> torch.Tensor:
    """The compiled point-wise linear's call, the CPU kernel of the operator below."""
    op = "hyperzzw::linear_rows"
    kernels = _built(op)
    _float32_cpu(op, w=w, **({} if b is None else {"b": b}), **{f"xs[{i}]": x for i, x in enumerate(xs)})
    if w.ndim != 2:
        raise ValueError(f"{op}: w must be 2-D, got {tuple(w.shape)}")
    o, depth, sr, sc = _left_factor(w, transposed)
    batch, n, rows = _linear_terms(op, kernels, b, xs, depth, o)
    w_ = w.contiguous()
    held, bias, pointers = _operand_pointers(b, xs)
    out = torch.empty((batch, o, n), dtype=w.dtype, device=w.device)
    kernels.linear_rows(
        w_.data_ptr(),
        sr,
        sc,
        o,
        bias,
        pointers,
        rows,
        out.data_ptr(),
        batch,
        n,
        torch.get_num_threads(),
    )
    del held  # the operands the pointers point into, held through the call
    return out


def _linear_rows_meta(
    w: torch.Tensor, b: torch.Tensor | None, xs: list[torch.Tensor], transposed: bool
) -> torch.Tensor:
    o = int(w.shape[1]) if transposed else int(w.shape[0])
    return xs[0].new_empty((int(xs[0].shape[0]), o, int(xs[0].shape[2])))


_linear_rows_op = _register(
    "linear_rows(Tensor w, Tensor? b, Tensor[] xs, bool transposed) -> Tensor", _linear_rows_cpu, _linear_rows_meta
)


def linear_rows(w: torch.Tensor, b: torch.Tensor | None, xs: Sequence[torch.Tensor], transposed: bool) -> torch.Tensor:
    """y_b = W·[x_1b; …; x_nb] + β (or Wᵀ·x_b where ``transposed``, W (O, I) then giving I rows) for
    every sample b of x_i (B, I_i, N), by the compiled kernel through its torch operator: the
    point-wise linear of spec §2.5 without forming the concatenation. Each element one float32
    sum in oneDNN's order (K in blocks of 512, or 1024 beyond a depth of 1024, the blocks added
    in order, then β): oneDNN's product's bits on this machine (tests/test_cpu_kernels.py), in
    0.5 to 0.85 of its time at the ``cifar10()`` shapes (docs/speed.md, "Eighteenth session")."""
    return _linear_rows_op(w, b, list(xs), transposed)


def _linear_pack_cpu(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The compiled packing of W (or Wᵀ) for :func:`linear_rows_into`, the CPU kernel of the
    operator below: a float32 vector of the left factor's 6-row panels."""
    op = "hyperzzw::linear_pack"
    kernels = _built(op)
    _float32_cpu(op, w=w)
    if w.ndim != 2:
        raise ValueError(f"{op}: w must be 2-D, got {tuple(w.shape)}")
    o, depth, sr, sc = _left_factor(w, transposed)
    w_ = w.contiguous()
    out = torch.empty((_packed_size(kernels, o, depth),), dtype=w.dtype, device=w.device)
    kernels.linear_pack(w_.data_ptr(), sr, sc, o, depth, out.data_ptr())
    return out


def _linear_pack_meta(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    o, depth, _, _ = _left_factor(w, transposed)
    return w.new_empty((_packed_size(_built("hyperzzw::linear_pack"), o, depth),))


def _linear_rows_into_cpu(
    out: torch.Tensor, packed: torch.Tensor, o: int, b: torch.Tensor | None, xs: list[torch.Tensor]
) -> None:
    """The compiled product with the left factor packed (:func:`linear_pack`), written into
    ``out`` (B, o, N), contiguous: the CPU kernel of the operator below."""
    op = "hyperzzw::linear_rows_into"
    kernels = _built(op)
    terms = {f"xs[{i}]": x for i, x in enumerate(xs)}
    _float32_cpu(op, out=out, packed=packed, **({} if b is None else {"b": b}), **terms)
    if out.ndim != 3 or not out.is_contiguous():
        raise ValueError(f"{op}: out must be a contiguous (B, O, N), got shape {tuple(out.shape)}")
    depth = sum(int(x.shape[1]) for x in xs if x.ndim == 3)
    batch, n, rows = _linear_terms(op, kernels, b, xs, depth, o)
    if tuple(out.shape) != (batch, o, n) or int(packed.numel()) != _packed_size(kernels, o, depth):
        raise ValueError(
            f"{op}: out must be ({batch}, {o}, {n}) and packed hold the panels of an ({o}, {depth}) factor, "
            f"got {tuple(out.shape)} and {int(packed.numel())} values"
        )
    held, bias, pointers = _operand_pointers(b, xs)
    kernels.linear_rows_packed(
        packed.data_ptr(),
        o,
        bias,
        pointers,
        rows,
        out.data_ptr(),
        batch,
        n,
        torch.get_num_threads(),
    )
    del held  # the operands the pointers point into, held through the call


def _linear_rows_into_meta(
    out: torch.Tensor, packed: torch.Tensor, o: int, b: torch.Tensor | None, xs: list[torch.Tensor]
) -> None:
    return None


_linear_pack_op = _register("linear_pack(Tensor w, bool transposed) -> Tensor", _linear_pack_cpu, _linear_pack_meta)
_linear_rows_into_op = _register(
    "linear_rows_into(Tensor(a!) out, Tensor packed, int o, Tensor? b, Tensor[] xs) -> ()",
    _linear_rows_into_cpu,
    _linear_rows_into_meta,
)


def linear_pack(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """W (or Wᵀ where ``transposed``) packed once for many calls of :func:`linear_rows_into`."""
    return _linear_pack_op(w, transposed)


def linear_rows_into(
    out: torch.Tensor, packed: torch.Tensor, o: int, b: torch.Tensor | None, xs: Sequence[torch.Tensor]
) -> None:
    """:func:`linear_rows` with the left factor packed by :func:`linear_pack` (o rows), written
    into ``out``: the products of a call made sample by sample (a buffer formed per sample, the
    weights packed once), with the same bits as one call of all samples."""
    _linear_rows_into_op(out, packed, o, b, list(xs))


def compiled_linear_rows_applies(xs: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`linear_rows` takes a product that oneDNN's route would take
    (:func:`onednn_concatenated`, which has checked float32 on the CPU outside traces): the
    kernels are installed and the terms are at most ``linear_rows_max_terms``."""
    return cpu_kernels is not None and len(xs) <= cpu_kernels.linear_rows_max_terms


def depthwise_conv(y: torch.Tensor, k: torch.Tensor, turned: bool) -> torch.Tensor:
    """The depth-wise 'same' correlation D = k ⊛ y of spec §2.3 (``y`` (B, C, H, W), ``k``
    (C, 1, kh, kw)) by the compiled kernel, through its torch operator; where ``turned``, the
    correlation with k turned by 180°, which is the input gradient ∂Y of D at ∂D = ``y``. Each
    element one float32 sum over k's elements in row-major order: oneDNN's NCHW forward and
    input gradient to the bit (tests/test_cpu_kernels.py)."""
    return _depthwise_conv_op(y, k, turned)


def _depthwise_conv_backward(
    g: torch.Tensor, y: torch.Tensor, k: torch.Tensor, pad: list[int], want: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(gy, gk) of :class:`DepthwiseConvOneDNN` (None where ``want`` says no): gy in NCHW by the
    compiled correlation with k turned where it applies (:func:`compiled_depthwise_conv_applies`),
    else by oneDNN, with the same bits; gk by the compiled kernel in NCHW where it applies, else by
    oneDNN in channels-last, the layout where oneDNN's weight gradient is fast."""
    groups = int(y.shape[1])

    def grads(g: torch.Tensor, y: torch.Tensor, mask: tuple[bool, bool, bool]) -> tuple:
        return torch.ops.aten.convolution_backward(g, y, k, None, (1, 1), pad, (1, 1), False, (0, 0), groups, mask)

    gy = None
    if want[0] and compiled_depthwise_conv_applies(y, k, pad):
        gy = depthwise_conv(g, k, True)
    elif want[0]:
        gy = grads(g.contiguous(), y, (True, False, False))[0]
    if not want[1]:
        return gy, None
    if compiled_weight_grad_applies(y, k, pad):
        return gy, compiled_depthwise_weight_grad(g, y, k)
    cl = torch.channels_last
    return gy, grads(g.contiguous(memory_format=cl), y.contiguous(memory_format=cl), (False, True, False))[1]


def _linear(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W·x + β for x (B, I, N) by the torch backend's own call (:func:`torch_pointwise_linear`), so
    that a Function below gives its bits."""
    return torch_pointwise_linear(torch, w, b, x)


def _linear_weight_grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∂W of :func:`_linear` at g (B, O, N), as autograd differentiates the expanded W: the batch
    of products g_b·x_bᵀ, then summed over the batch. Where the forward took oneDNN's route
    (:func:`onednn_rows`), each g_b·x_bᵀ is oneDNN's product (x_b, (I, N), is its weight as it
    lies), and the products are stacked and summed as autograd sums them."""
    if onednn_rows(torch, (w,), x)[0]:
        product = torch.ops.mkldnn._linear_pointwise
        return torch.stack([product(g[i], x[i], None, "none", [None], "") for i in range(int(g.shape[0]))]).sum(0)
    return g.bmm(x.transpose(1, 2)).sum_to_size(w.shape)


def _linear_bias_grad(g: torch.Tensor) -> torch.Tensor:
    """∂β of :func:`_linear` at g (B, O, N): g summed to the broadcast (1, O, 1), as autograd does."""
    o = int(g.shape[1])
    return g.sum_to_size(1, o, 1).reshape(o)


def _linear_input_grad(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∂x of :func:`_linear` at g (B, O, N): Wᵀ·g batch by batch, as autograd computes it; where
    the forward took oneDNN's route (:func:`onednn_rows`, the same O·I·N), oneDNN's product per
    sample (Wᵀ its left factor, g_bᵀ its strided weight), stacked."""
    if onednn_rows(torch, (w,), g)[0]:
        if compiled_linear_rows_applies((g,)):  # the same bits, in one call
            return linear_rows(w, None, (g,), True)
        product, wt = torch.ops.mkldnn._linear_pointwise, w.t()
        return torch.stack([product(wt, g[i].t(), None, "none", [None], "") for i in range(int(g.shape[0]))])
    return w.expand(int(g.shape[0]), *w.shape).transpose(1, 2).bmm(g)


def _concatenated_backward(
    g: torch.Tensor,
    ws: Sequence[torch.Tensor],
    xs: Sequence[torch.Tensor],
    term: Term | None,
    want_w: bool,
    each: Callable[[int, list[torch.Tensor]], None] | None,
) -> list[torch.Tensor] | None:
    """The products of the backward of :func:`concatenated_rows` at g (B, O, N), each one oneDNN
    product per sample of the terms concatenated, as in the forward:

    * where ``want_w``: ∂[W_1 … W_n] = Σ_b g_b·a_bᵀ, a_b = [a_1b; …; a_nb] formed again as the
      forward formed it (:func:`concatenated_terms`), the samples' products accumulated in order by the product's
      "add"; returned as ∂W_i, the column blocks of that (O, Σ I_i) sum;
    * where ``each`` is given: ∂a_b = [W_1 … W_n]ᵀ·g_b (Σ I_i, N), handed to ``each(b, [∂a_1b, …,
      ∂a_nb])`` sample by sample (so that no (B, Σ I_i, N) array is formed).

    One product of the whole depth instead of one per term: 1.3x faster for the ``cifar10()``
    block-4 bottleneck at B = 32, 1.8x for block 3's (docs/speed.md)."""
    product = torch.ops.mkldnn._linear_pointwise
    sizes = [int(w.shape[1]) for w in ws]
    g = g.contiguous()
    w_t = packed = grads = None
    if each is not None and compiled_linear_rows_applies((g,)):  # Wᵀ packed once, one buffer for ∂a_b
        packed = linear_pack(concatenated_weight(torch, ws), True)
        grads = torch.empty((1, sum(sizes), int(g.shape[2])), dtype=g.dtype, device=g.device)
    elif each is not None:
        w_t = concatenated_weight(torch, ws).t().contiguous()
    total: torch.Tensor | None = None
    sample = concatenated_terms(torch, xs, term) if want_w else None
    for s in range(int(g.shape[0])):
        if sample is not None:
            a = sample(s)
            if total is None:
                total = product(g[s], a, None, "none", [None], "")
            else:
                total = product.binary(g[s], total, a, None, "add")
        if each is not None and grads is not None and packed is not None:
            linear_rows_into(grads, packed, sum(sizes), None, (g[s : s + 1],))
            each(s, list(torch.split(grads[0], sizes)))
        elif each is not None:
            each(s, list(torch.split(product(w_t, g[s].t(), None, "none", [None], ""), sizes)))
    return None if total is None else list(torch.split(total, sizes, dim=1))


def _input_grads_into(grads: list[torch.Tensor | None]) -> Callable[[int, list[torch.Tensor]], None]:
    """An ``each`` for :func:`_concatenated_backward` that copies sample b's ∂a_ib into
    ``grads[i][b]`` (for the terms whose entry is an array)."""

    def each(s: int, parts: list[torch.Tensor]) -> None:
        for out, part in zip(grads, parts, strict=True):
            if out is not None:
                out[s].copy_(part)

    return each


class PointwiseLinear(torch.autograd.Function):
    """W·x + β for x (B, I, N) by :func:`torch_pointwise_linear` run without a graph (its oneDNN
    route), differentiated as autograd differentiates the ``baddbmm`` it stands for: ∂x = Wᵀ·g
    batch by batch, ∂W the batch of g_b·x_bᵀ summed, ∂β the sum of g, each product by oneDNN
    too (:func:`_linear_input_grad`, :func:`_linear_weight_grad`). Kept: W and x."""

    @staticmethod
    def forward(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch_pointwise_linear(torch, w, b, x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        w, _, x = inputs
        ctx.save_for_backward(w, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, Any, Any]:
        w, x = ctx.saved_tensors
        want_w, want_b, want_x = ctx.needs_input_grad
        return (
            _linear_weight_grad(g, x, w) if want_w else None,
            _linear_bias_grad(g) if want_b else None,
            _linear_input_grad(g, w) if want_x else None,
        )


class PointwiseLinearSum(torch.autograd.Function):
    """Σ_i W_i·x_i + β by :func:`torch_pointwise_linear_sum` run without a graph (its oneDNN
    route); ``apply(b, W_1, …, W_n, x_1, …, x_n)``. Where the forward took the concatenated
    products (:func:`onednn_concatenated`), differentiated by them too
    (:func:`_concatenated_backward`: ∂[W_1 … W_n] = Σ_b g_b·[x_1b; …; x_nb]ᵀ, ∂x_ib the rows of
    [W_1 … W_n]ᵀ·g_b), else term by term as :class:`PointwiseLinear`. Kept: every W_i and x_i."""

    @staticmethod
    def forward(b: torch.Tensor, *operands: torch.Tensor) -> torch.Tensor:
        n = len(operands) // 2
        return torch_pointwise_linear_sum(torch, operands[:n], b, operands[n:])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        operands = ctx.saved_tensors
        n = len(operands) // 2
        ws, xs = operands[:n], operands[n:]
        want = ctx.needs_input_grad
        gb = _linear_bias_grad(g) if want[0] else None
        if onednn_concatenated(torch, ws, xs):  # the forward's concatenated products
            gxs: list[torch.Tensor | None] = [
                torch.empty(x.shape, dtype=g.dtype, device=g.device) if want[1 + n + i] else None
                for i, x in enumerate(xs)
            ]
            each = _input_grads_into(gxs) if any(t is not None for t in gxs) else None
            blocks = _concatenated_backward(g, ws, xs, None, any(want[1 : 1 + n]), each)
            gws = [blocks[i] if blocks is not None and want[1 + i] else None for i in range(n)]
            return (gb, *gws, *gxs)
        gws = [_linear_weight_grad(g, xs[i], w) if want[1 + i] else None for i, w in enumerate(ws)]
        gxs = [_linear_input_grad(g, w) if want[1 + n + i] else None for i, w in enumerate(ws)]
        return (gb, *gws, *gxs)


class GatedProduct(torch.autograd.Function):
    """P = K ⊙ Q with Q = W·V + β: the RGU's gate (spec §2.5) as one Function that does not keep Q,
    and given a source, not K and V either. K, V (B, C, N), W (O, C), β (O,) → P (B, O, N).
    ``apply(K, W, β, V, source)``; ``source`` is None or (W_s, β_s, X) with K and V the channels
    [0, C) and [C, 2C) of the stacked product W_s·X + β_s that made them (the block's, §1.3).

    Forward: the calls of the unfused path (the torch backend's ``pointwise_linear``, one
    ``baddbmm`` or oneDNN's product per sample, then the product). Kept: W, β, and K and V, or
    with a source W_s, β_s and X instead (X, the block's Z or Ẑ, is kept by the stacked product's
    own backward anyway).
    Backward: Q recomputed by the same call (the same bits; one more C×C product per RGU in
    exchange for one activation fewer: 66 MiB of the ``cifar10()`` step at B = 32); with a source,
    K and V first, by the stacked product's call again (the same bits; one more product of
    the stack per RGU, in exchange for the stack's whole storage, which K and V are views of: 167
    MiB of that step, docs/speed.md). Then what autograd computes for the chain: ∂K = g·Q,
    ∂Q = g·K, ∂W = Σ_b ∂Q_b·V_bᵀ, ∂β = Σ ∂Q, ∂V = Wᵀ·∂Q. First derivatives only; the source
    gets no gradient (its product's backward gives X and W_s theirs, through K and V).
    """

    @staticmethod
    def forward(
        k: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        v: torch.Tensor,
        source: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if source is not None:
            GatedProduct._check_source(k, v, source)
        return k * _linear(w, b, v)

    @staticmethod
    def _check_source(k: torch.Tensor, v: torch.Tensor, source: tuple[torch.Tensor, ...]) -> None:
        """Raise ValueError unless W_s·X + β_s has the shape to give K and V as its channels [0, C)
        and [C, 2C) (their values are the caller's contract: recomputing them here would cost the
        product that the source saves)."""
        w_s, b_s, x_s = source
        n, c, m = (int(d) for d in k.shape)
        rows, cols = (int(d) for d in w_s.shape)
        if tuple(v.shape) != (n, c, m) or rows < 2 * c or tuple(b_s.shape) != (rows,):
            raise ValueError(
                f"source: W_s {tuple(w_s.shape)} and β_s {tuple(b_s.shape)} cannot give K {tuple(k.shape)} and "
                f"V {tuple(v.shape)} as channels [0, {c}) and [{c}, {2 * c}) of W_s·X + β_s"
            )
        if tuple(x_s.shape) != (n, cols, m):
            expected = f"({n}, {cols}, {m}) for W_s {rows}×{cols}"
            raise ValueError(f"source: X has shape {tuple(x_s.shape)}; expected {expected}")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        k, w, b, v, source = inputs
        ctx.recomputes = source is not None
        if source is None:
            ctx.save_for_backward(k, w, b, v)
        else:
            ctx.save_for_backward(w, b, *(t.detach() for t in source))

    @staticmethod
    def _saved(ctx: Any) -> tuple[torch.Tensor, ...]:
        """(K, W, β, V), K and V recomputed from the source if there is one."""
        if not ctx.recomputes:
            return ctx.saved_tensors
        w, b, w_s, b_s, x_s = ctx.saved_tensors
        c = int(w.shape[1])
        stacked = _linear(w_s, b_s, x_s)
        return stacked[:, :c], w, b, stacked[:, c : 2 * c]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        k, w, b, v = GatedProduct._saved(ctx)
        want_k, want_w, want_b, want_v = (bool(x) for x in ctx.needs_input_grad[:4])
        gk = g * _linear(w, b, v) if want_k else None
        gw = gb = gv = None
        if want_w or want_b or want_v:
            gq = g * k
            gw = _linear_weight_grad(gq, v, w) if want_w else None
            gb = _linear_bias_grad(gq) if want_b else None
            gv = _linear_input_grad(gq, w) if want_v else None
        return gk, gw, gb, gv, None


class GeluProductSum(torch.autograd.Function):
    """Y = Σ_i W_i·a_i + β, a_i = GELU(x_i) where the term says so (else x_i), plus a spatial map
    m_i (N,) where it has one: the SFNE block's bottleneck, whose local branches enter through
    their GELU (spec §2.3, §2.10), and the RGUs' W_y, whose hidden states are GELU(n) + bias_p
    (spec §2.5). x_i (B, I_i, N), W_i (O, I_i), β (O,) → Y (B, O, N).
    ``apply(spec, β, W_1, …, W_n, x_1, …, x_n, m_j, …)`` with ``spec[i]`` = (GELU?, has a map?)
    and the maps of the terms that have one, in order.

    Forward: the products of the torch backend's ``pointwise_linear_sum`` on the a_i. Where it
    takes oneDNN's concatenated product (:func:`onednn_concatenated`), each sample's a_ib are
    written into one (Σ I_i, N) buffer just before its product (:func:`concatenated_terms`), so
    no whole a_i is formed; else term by term (one ``baddbmm`` with β, then one ``baddbmm_`` per
    term, or oneDNN's products per sample), each a_i formed just before its product and dropped
    after it.
    Kept for backward: x_i, W_i and m_i, not a_i (one activation fewer per term: 134 MiB of the
    ``cifar10()`` step at B = 32 for the local branches, 66 MiB for the RGUs; docs/speed.md).
    Backward: what autograd computes for that chain through ``PointwiseLinearSum`` (∂W_i =
    Σ_b g_b·a_iᵀ, ∂a_i = W_iᵀ·g, ∂β = Σ g, ∂m_i = Σ_{b,c} ∂a_i; by the concatenated products
    where the forward took them), with a_i recomputed as the forward formed it (the same bits)
    and ∂x_i = GELU'(x_i)·∂a_i by the native GELU backward. First derivatives only.
    """

    @staticmethod
    def _activation(x: torch.Tensor, on: bool, m: torch.Tensor | None) -> torch.Tensor:
        a = torch.nn.functional.gelu(x) if on else x
        return a if m is None else a + m

    @staticmethod
    def _term(spec: tuple[tuple[bool, bool], ...], maps: list) -> Term:
        """The ``term`` of :func:`concatenated_terms`: a_i = GELU(x_i) (+ m_i) formed where the term
        has a GELU or a map, written by the native GELU's ``out=`` form and an in-place addition
        (the values of :meth:`_activation`). Into a contiguous ``out`` the GELU writes directly;
        into any other it is formed first and copied, because torch 2.13's ``gelu.out`` writes
        wrong values into a non-contiguous ``out`` on the CPU (garbage of order 1e34 into a column
        slice; its other ``out=`` kernels, ``gelu_backward``'s included, do not)."""

        def write(i: int, x: torch.Tensor, out: torch.Tensor) -> None:
            if spec[i][0] and out.is_contiguous():
                torch.ops.aten.gelu.out(x, out=out)
            elif spec[i][0]:
                out.copy_(torch.nn.functional.gelu(x))
            else:
                out.copy_(x)
            if maps[i] is not None:
                out.add_(maps[i])

        return Term(tuple(on or has for on, has in spec), write)

    @staticmethod
    def _split(spec: tuple[tuple[bool, bool], ...], tensors: tuple[torch.Tensor, ...]) -> tuple[list, list, list]:
        n = len(spec)
        ws, xs, rest = list(tensors[:n]), list(tensors[n : 2 * n]), iter(tensors[2 * n :])
        maps = [next(rest) if has else None for _, has in spec]
        return ws, xs, maps

    @staticmethod
    def forward(spec: tuple[tuple[bool, bool], ...], b: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        ws, xs, maps = GeluProductSum._split(spec, tensors)
        if onednn_concatenated(torch, ws, xs):  # each sample's a_i formed just before its product
            return concatenated_rows(torch, ws, b, xs, GeluProductSum._term(spec, maps))
        acts = (GeluProductSum._activation(x, on, m) for x, (on, _), m in zip(xs, spec, maps, strict=True))
        return torch_pointwise_linear_sum(torch, ws, b, acts)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.spec = inputs[0]
        ctx.save_for_backward(*inputs[2:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        spec = ctx.spec
        ws, xs, maps = GeluProductSum._split(spec, ctx.saved_tensors)
        want_w, want_x, want_m = GeluProductSum._split(spec, tuple(ctx.needs_input_grad[2:]))
        gb = _linear_bias_grad(g) if ctx.needs_input_grad[1] else None
        if onednn_concatenated(torch, ws, xs):
            return (None, gb, *GeluProductSum._concatenated_grads(spec, g, ws, xs, maps, want_w, want_x, want_m))
        gws: list[torch.Tensor | None] = []
        gxs: list[torch.Tensor | None] = []
        gms: list[torch.Tensor | None] = []
        for w, x, (on, has), m, ww, wx, wm in zip(ws, xs, spec, maps, want_w, want_x, want_m, strict=True):
            gws.append(_linear_weight_grad(g, GeluProductSum._activation(x, on, m), w) if ww else None)
            ga = _linear_input_grad(g, w) if (wx or wm) else None
            gxs.append((torch.ops.aten.gelu_backward(ga, x) if on else ga) if wx else None)
            if has:  # ∂m: ∂a summed over the batch and the channels, as autograd reduces the broadcast
                gms.append(ga.sum_to_size(1, 1, m.shape[-1]).reshape(m.shape) if (wm and ga is not None) else None)
        return (None, gb, *gws, *gxs, *gms)

    @staticmethod
    def _concatenated_grads(
        spec: tuple[tuple[bool, bool], ...],
        g: torch.Tensor,
        ws: list,
        xs: list,
        maps: list,
        want_w: list,
        want_x: list,
        want_m: list,
    ) -> list[torch.Tensor | None]:
        """∂W_i, ∂x_i, ∂m_i where the forward took oneDNN's concatenated products: those of
        :func:`_concatenated_backward`, each sample's a_i formed again as the forward formed it.
        ∂x_ib = GELU'(x_ib)·∂a_ib is written sample by sample by the native GELU backward; a term
        with a map takes ∂a_i whole, then ∂m_i and ∂x_i from it as autograd reduces and
        differentiates the composition (its bits)."""
        n = len(spec)
        # per term: ∂a_i whole (a map's gradient needs it), ∂x_i written sample by sample, or nothing
        whole = [has and (wx or wm) for (_, has), wx, wm in zip(spec, want_x, want_m, strict=True)]
        outs: list[torch.Tensor | None] = [
            torch.empty(x.shape, dtype=g.dtype, device=g.device) if (keep or wx) else None
            for x, keep, wx in zip(xs, whole, want_x, strict=True)
        ]

        def each(s: int, parts: list[torch.Tensor]) -> None:
            for i, (out, part) in enumerate(zip(outs, parts, strict=True)):
                if out is None:
                    continue
                if spec[i][0] and not whole[i]:  # ∂x_ib = GELU'(x_ib)·∂a_ib
                    torch.ops.aten.gelu_backward.grad_input(part, xs[i][s], grad_input=out[s])
                else:
                    out[s].copy_(part)

        wanted = any(t is not None for t in outs)
        term = GeluProductSum._term(spec, maps)
        blocks = _concatenated_backward(g, ws, xs, term, any(want_w), each if wanted else None)
        gws = [blocks[i] if blocks is not None and want_w[i] else None for i in range(n)]
        gxs: list[torch.Tensor | None] = []
        gms: list[torch.Tensor | None] = []
        for i, ((on, has), x, m, out) in enumerate(zip(spec, xs, maps, outs, strict=True)):
            if whole[i] and out is not None:  # out is ∂a_i
                gxs.append((torch.ops.aten.gelu_backward(out, x) if on else out) if want_x[i] else None)
                gms.append(out.sum_to_size(1, 1, m.shape[-1]).reshape(m.shape) if want_m[i] else None)
            else:
                gxs.append(out if want_x[i] else None)
                if has:
                    gms.append(None)
        return [*gws, *gxs, *gms]


class DepthwiseConvMixer(torch.autograd.Function):
    """M = W·D + β with D = DWConv(Y, K): a local branch's depth-wise convolution and its channel
    mixer (spec §2.3) as one Function that keeps Y, K and W for backward but not D, for the
    float32 oneDNN path with gradients. Y (B, C, H, W) or (B, C, L), K (C, 1, kh, kw) or (C, 1, k),
    W (O, C), β (O,) → M (B, O, H·W) (the caller restores the spatial axes).

    Forward: the calls of the unfused path (:class:`DepthwiseConvOneDNN`'s NCHW convolution, then
    the backend's ``pointwise_linear``), so that M is eval mode's M to the bit.
    Backward:

    * ∂W = Σ_b g_b·D_bᵀ from D recomputed by the forward's convolution (the same bits; one
      convolution more, in exchange for not keeping an activation of Y's size per branch: 134 MiB
      of the ``cifar10()`` step at B = 32, docs/speed.md);
    * where the compiled weight gradient applies (:func:`compiled_weight_grad_applies`): ∂D = Wᵀ·g
      formed in NCHW, ∂Y by oneDNN's NCHW input gradient and ∂K by the compiled kernel, with no
      layout copy (:func:`_depthwise_conv_backward`, the unfused path's own backward);
    * else ∂D = Wᵀ·g formed directly in channels-last, as the rows (B, H·W, C) = gᵀ·W, where
      oneDNN's depth-wise kernels are fast; ∂Y and ∂K then come from one channels-last
      ``convolution_backward`` (the unfused backward copies ∂D and Y to channels-last for ∂K and
      computes ∂Y in NCHW); ∂Y is returned in NCHW.

    First derivatives only.
    """

    @staticmethod
    def forward(
        y: torch.Tensor, k: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: tuple[int, ...]
    ) -> torch.Tensor:
        if y.ndim == 3:  # (B, C, L) as (B, C, 1, L), as DepthwiseConvOneDNN
            d = DepthwiseConvOneDNN.forward(torch.unsqueeze(y, 2), torch.unsqueeze(k, 2), (0,) + pad)
        else:
            d = DepthwiseConvOneDNN.forward(y, k, pad)
        return _linear(w, b, d.reshape(int(d.shape[0]), int(d.shape[1]), -1))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        y, k, w, _, pad = inputs
        ctx.save_for_backward(y, k, w)
        ctx.pad = pad

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, k, w = ctx.saved_tensors
        want_y, want_k, want_w, want_b = (bool(v) for v in ctx.needs_input_grad[:4])
        y4, k4 = (torch.unsqueeze(y, 2), torch.unsqueeze(k, 2)) if y.ndim == 3 else (y, k)
        pad = ((0,) + ctx.pad) if y.ndim == 3 else ctx.pad
        n, c, h, wd = (int(v) for v in y4.shape)
        o = int(w.shape[0])
        g = g.reshape(n, o, h * wd)
        gy = gk = gw = gb = None
        if want_w:  # D recomputed by the forward's convolution
            gw = _linear_weight_grad(g, DepthwiseConvOneDNN.forward(y4, k4, pad).reshape(n, c, -1), w)
        if want_b:
            gb = _linear_bias_grad(g)
        if (want_y or want_k) and compiled_weight_grad_applies(y4, k4, pad):
            # ∂D = Wᵀ·g in NCHW, as the compiled weight gradient and the NCHW input gradient read it: the
            # products of the point-wise linear's input gradient (the compiled product where it routes)
            gd = _linear_input_grad(g, w).view(n, c, h, wd)
            gy4_, gk4_ = _depthwise_conv_backward(gd, y4, k4, list(pad), [want_y, want_k])
            gy = gy4_.view(y.shape) if gy4_ is not None else None
            gk = gk4_.view(k.shape) if gk4_ is not None else None
        elif want_y or want_k:
            gd = torch.bmm(g.transpose(1, 2), w.expand(n, o, c)).view(n, h, wd, c).permute(0, 3, 1, 2)
            gy4, gk4, _ = torch.ops.aten.convolution_backward(
                gd,
                y4.contiguous(memory_format=torch.channels_last),
                k4,
                None,
                (1, 1),
                pad,
                (1, 1),
                False,
                (0, 0),
                c,
                (want_y, want_k, False),
            )
            gy = gy4.contiguous().view(y.shape) if want_y else None
            gk = gk4.view(k.shape) if want_k else None
        return gy, gk, gw, gb, None


@torch.library.custom_op("hyperzzw::depthwise_conv_backward", mutates_args=())  # torch >= 2.4
def depthwise_conv_backward(
    g: torch.Tensor, y: torch.Tensor, k: torch.Tensor, pad: list[int], want: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_depthwise_conv_backward` as one operator that torch.compile does not look into:
    Inductor otherwise chooses the layouts of its inputs itself, and oneDNN's depth-wise weight
    gradient is slow in any but channels-last (docs/speed.md)."""
    gy, gk = _depthwise_conv_backward(g, y, k, pad, want)  # (an operator returns tensors: zeros for None)
    return (torch.zeros_like(y) if gy is None else gy.contiguous()), (
        torch.zeros_like(k) if gk is None else gk.contiguous()
    )


@depthwise_conv_backward.register_fake
def _(g: torch.Tensor, y: torch.Tensor, k: torch.Tensor, pad: list[int], want: list[bool]) -> tuple:
    return torch.empty_like(y, memory_format=torch.contiguous_format), torch.empty_like(k)


def compiled_standardize_applies(x: torch.Tensor) -> bool:
    """Whether the compiled standardisation kernel (``standardize`` of ``_cpu_kernels.c``) takes
    the forward of a standardisation of ``x``: installed, float32 on the CPU, not inside a
    torch.compile trace (it reads data pointers)."""
    return (
        cpu_kernels is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.compiler.is_compiling()
    )


def _standardize_cpu(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    op = "hyperzzw::standardize"
    kernels = _built(op)
    _float32_cpu(op, x=x)
    if x.ndim != 3:
        raise ValueError(f"{op}: x must be (B, C, N), got shape {tuple(x.shape)}")
    b, c, n = (int(v) for v in x.shape)
    x_ = x.contiguous()
    y = torch.empty_like(x_)
    r = torch.empty((c,), dtype=x.dtype, device=x.device)
    # torch's OpenMP team: the kernel's own pthreads contended with its spinning worker (1.18x the
    # eval forward's time at B = 8 on two of them, 0.91x on one), its team does not
    kernels.standardize(x_.data_ptr(), y.data_ptr(), r.data_ptr(), b, c, n, float(eps), torch.get_num_threads())
    return y, r


def _standardize_meta(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((int(x.shape[1]),))


_standardize_op = _register("standardize(Tensor x, float eps) -> (Tensor, Tensor)", _standardize_cpu, _standardize_meta)


def standardize_channels(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y = (x − μ_c)·r_c with r_c = (σ²_c + eps)^(−1/2), μ_c and the biased σ²_c over (B, N), for
    each channel c of x (B, C, N) (spec §2.9; IS is x viewed as (1, B·C, N)) → (y, r (C,)).

    The compiled kernel where :func:`compiled_standardize_applies` (two passes for the statistics,
    each row's lanes added in float64, then the output: one pass over memory where a channel's
    rows fit in the cache), else torch's native batch-norm kernel. On one thread it takes about
    half the native kernel's time on two at (1, 4608, 1024) (docs/speed.md, "Sixteenth session")."""
    if compiled_standardize_applies(x):
        y, r = _standardize_op(x, float(eps))
        return y, r
    y, _, r = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
    return y, r


if cpu_kernels is not None:  # the extension's own values (_cpu_kernels.c)
    MAX_GLOBAL_PRODUCTS = int(cpu_kernels.global_products_max_terms)
    GLOBAL_PRODUCTS_ROW_BLOCK = int(cpu_kernels.global_products_row_block)
else:  # no kernels: compiled_global_products_apply never holds
    MAX_GLOBAL_PRODUCTS, GLOBAL_PRODUCTS_ROW_BLOCK = 0, 1
# MAX_GLOBAL_PRODUCTS: the most products with one left factor that the compiled
# ``global_products`` takes at once.
# GLOBAL_PRODUCTS_ROW_BLOCK: the compiled global products take n × n matrices with n a multiple
# of this (32 floats: two 16-lane vectors), because the rest of a row is computed element by
# element, which is slower than the batched matmul (measured with gradients, docs/speed.md:
# n = 32 0.43 to 0.83x the time of three batched products, n = 64 0.51 to 0.59x; n = 8 to 24,
# 40, 48, 63 1.4 to 6x).


def compiled_global_products_apply(a: torch.Tensor, ys: Sequence[torch.Tensor]) -> bool:
    """Whether the compiled kernels ``global_products`` and ``global_products_backward``
    (``_cpu_kernels.c``) compute Ẑ @ Y_j for ``a`` = Ẑ and ``ys`` (as matrices, (B, C, n, n)):
    installed, float32 on the CPU, square matrices of one shape whose n is a multiple of
    ``GLOBAL_PRODUCTS_ROW_BLOCK``, at most ``MAX_GLOBAL_PRODUCTS`` of them, and not inside a
    torch.compile trace (the kernels read data pointers)."""
    if cpu_kernels is None or torch.compiler.is_compiling() or not 1 <= len(ys) <= MAX_GLOBAL_PRODUCTS:
        return False
    if a.ndim != 4 or int(a.shape[2]) != int(a.shape[3]) or int(a.shape[3]) % GLOBAL_PRODUCTS_ROW_BLOCK:
        return False
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and tuple(t.shape) == tuple(a.shape) for t in (a, *ys)
    )


def _matrices(op: str, a: torch.Tensor, named: dict[str, Sequence[torch.Tensor]]) -> tuple[int, int]:
    """Refuse, naming the argument, what the global products' kernels would misread; → (P, n)
    for ``a`` (B, C, n, n)."""
    _float32_cpu(op, a=a, **{f"{name}[{j}]": t for name, ts in named.items() for j, t in enumerate(ts)})
    if a.ndim != 4 or int(a.shape[2]) != int(a.shape[3]):
        raise ValueError(f"{op}: a must be (B, C, n, n), square matrices, got shape {tuple(a.shape)}")
    for name, ts in named.items():
        if not 1 <= len(ts) <= MAX_GLOBAL_PRODUCTS:
            raise ValueError(f"{op}: {name} must hold 1 to {MAX_GLOBAL_PRODUCTS} arrays, got {len(ts)}")
        for j, t in enumerate(ts):
            if tuple(t.shape) != tuple(a.shape):
                raise ValueError(f"{op}: {name}[{j}] must have a's shape {tuple(a.shape)}, got {tuple(t.shape)}")
    return int(a.shape[0]) * int(a.shape[1]), int(a.shape[2])


def _pointers(ts: Sequence[torch.Tensor]) -> tuple[int, ...]:
    return tuple(t.data_ptr() for t in ts)


def _global_products_cpu(a: torch.Tensor, ys: list[torch.Tensor]) -> list[torch.Tensor]:
    op = "hyperzzw::global_products"
    kernels = _built(op)
    p, n = _matrices(op, a, {"ys": ys})
    a_, ys_ = a.contiguous(), [y.contiguous() for y in ys]
    outs = [torch.empty_like(a_) for _ in ys_]
    kernels.global_products(a_.data_ptr(), _pointers(ys_), _pointers(outs), p, n, torch.get_num_threads())
    return outs


def _global_products_backward_cpu(
    a: torch.Tensor, ys: list[torch.Tensor], gs: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    op = "hyperzzw::global_products_backward"
    kernels = _built(op)
    if len(gs) != len(ys):
        raise ValueError(f"{op}: gs must hold one array per ys ({len(ys)}), got {len(gs)}")
    p, n = _matrices(op, a, {"ys": ys, "gs": gs})
    a_, ys_, gs_ = a.contiguous(), [y.contiguous() for y in ys], [g.contiguous() for g in gs]
    ga = torch.empty_like(a_)
    outs = [torch.empty_like(a_) for _ in ys_]
    kernels.global_products_backward(
        a_.data_ptr(), _pointers(ys_), _pointers(gs_), ga.data_ptr(), _pointers(outs), p, n, torch.get_num_threads()
    )
    return ga, outs


def _global_products_meta(a: torch.Tensor, ys: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.empty_like(a, memory_format=torch.contiguous_format) for _ in ys]


def _global_products_backward_meta(
    a: torch.Tensor, ys: list[torch.Tensor], gs: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.empty_like(a, memory_format=torch.contiguous_format), _global_products_meta(a, ys)


_global_products_op = _register(
    "global_products(Tensor a, Tensor[] ys) -> Tensor[]", _global_products_cpu, _global_products_meta
)
_global_products_backward_op = _register(
    "global_products_backward(Tensor a, Tensor[] ys, Tensor[] gs) -> (Tensor, Tensor[])",
    _global_products_backward_cpu,
    _global_products_backward_meta,
)


def global_products(a: torch.Tensor, ys: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """[Ẑ @ Y_j for Y_j in ys] per matrix (B, C, n, n), spec §2.2, by the compiled kernel through
    its torch operator (each output element one float32 sum in order; Ẑ read once for all j)."""
    return list(_global_products_op(a, list(ys)))


class GlobalProducts(torch.autograd.Function):
    """G_j = Ẑ @ Y_j (j = 1 … J) per matrix of Ẑ, Y_j (B, C, n, n): the global products of one
    SFNE block, which share Ẑ = Z ⊙ K_g (spec §2.2), by the compiled kernels where
    :func:`compiled_global_products_apply` holds. ``apply(Ẑ, Y_1, …, Y_J)`` → (G_1, …, G_J).

    Keeps Ẑ and the Y_j, as autograd keeps them for J batched products. Backward:
    ∂Y_j = Ẑᵀ @ ∂G_j and ∂Ẑ = Σ_j ∂G_j @ Y_jᵀ, summed in place by the kernel (autograd forms the J
    terms of ∂Ẑ and adds them). An output without a gradient counts as ∂G_j = 0. First
    derivatives only."""

    @staticmethod
    def forward(a: torch.Tensor, *ys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(global_products(a, ys))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *gs: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        a, *ys = ctx.saved_tensors
        grads = [torch.zeros_like(a) if g is None else g for g in gs]
        ga, gys = _global_products_backward_op(a, ys, grads)
        want = ctx.needs_input_grad
        return (ga if want[0] else None, *(gy if w else None for gy, w in zip(gys, want[1:], strict=True)))


def _backward_from_output(g: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """gx = r·(g − mean(g) − y·mean(g·y)) per channel of (N, C, L) views g and y, r (C,): the native
    batch-norm backward of the "input" y with saved mean 0, inverse deviation 1 and weight r (so
    that x̂ = y), one fused kernel (as fast as a compiled one, docs/speed.md)."""
    c = int(r.shape[0])
    zero = torch.zeros((c,), dtype=r.dtype, device=r.device)
    one = torch.ones((c,), dtype=r.dtype, device=r.device)
    gx, _, _ = torch.ops.aten.native_batch_norm_backward(
        g, y, r, None, None, zero, one, True, 0.0, [True, False, False]
    )
    return gx


class InstanceStandardize(_KeepsOutput):
    """y = (x − μ)·(σ² + eps)^(−1/2) per sample and channel over the spatial axes (IS, spec §2.9).

    Forward: :func:`standardize_channels` (the compiled kernel, else torch's native batch-norm
    kernel) on x viewed as (1, B·C, N), which also returns the inverse deviations r. Saved for
    backward: y and r, not x (the native ``instance_norm`` keeps its input, one more activation per
    standardisation: y is kept by the block's next operators anyway). Backward from y:
    gx = r·(g − mean(g) − y·mean(g·y)), which is the native batch-norm backward of the "input" y
    with saved mean 0, inverse deviation 1 and weight r (then x̂ = y): one fused kernel
    (``_backward_from_output``). First derivatives only.
    """

    @staticmethod
    def forward(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = int(x.shape[0]), int(x.shape[1])
        y, r = standardize_channels(x.reshape(1, b * c, -1), eps)
        return y.view(x.shape), r.view((b, c) + (1,) * (x.ndim - 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor, _g_r: Any) -> tuple[torch.Tensor, None]:
        y, r = ctx.saved_tensors
        bc = int(y.shape[0]) * int(y.shape[1])
        return _backward_from_output(g.reshape(1, bc, -1), y.view(1, bc, -1), r.reshape(bc)).view(y.shape), None


class NativeBatchStandardize(_KeepsOutput):
    """Batch standardisation over ``axes`` = (0, *spatial) of x (B, *channel, *S) by
    :func:`standardize_channels` (the compiled kernel, else torch's native one) and the native
    batch-norm backward (forward and backward one fused kernel each), for the plain torch
    namespace, whose batch means are this process's own (a namespace that redefines ``mean``
    keeps :class:`BatchStandardize`). x is viewed as (B, C', N) with C' the product of its channel
    axes (one copy if x is a strided view, as G-IBS's even half). Saved: y and r, as
    :class:`BatchStandardize`; backward is the native batch-norm backward of y with mean 0,
    inverse deviation 1 and weight r. First derivatives only.
    """

    @staticmethod
    def forward(x: torch.Tensor, n_channel_axes: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        b = int(x.shape[0])
        c = 1
        for v in x.shape[1 : 1 + n_channel_axes]:
            c *= int(v)
        y, r = standardize_channels(x.reshape(b, c, -1), eps)
        return y.view(x.shape), r

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor, _g_r: Any) -> tuple[torch.Tensor, None, None]:
        y, r = ctx.saved_tensors
        b, c = int(y.shape[0]), int(r.shape[0])
        return _backward_from_output(g.reshape(b, c, -1), y.view(b, c, -1), r).view(y.shape), None, None

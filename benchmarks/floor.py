"""What an operator-by-operator execution of a measurement cannot go below (issue 16).

Two floors of one whole-network call (the training step or the eval forward), both measured in
the process that timed it:

* the **kernel floor**: every aten call of the call that computes values (forward and backward),
  recorded with its shapes, strides and arguments by a dispatch mode, then replayed alone on fresh
  tensors of the same layout, each the median of a few repetitions, times the number of calls.
  Left out, because an execution of the same arithmetic need not run them: views, the calls that
  only move or allocate (:data:`MOVES`: copies, concatenations, fills) and the calls with no
  tensor argument (constants such as coordinate grids). Grouped by :func:`category`: matrix
  products, convolutions, standardisations, and the other element-wise operators and reductions.
  Alone, an operator's inputs are warm in the cache, so the replay is a lower estimate of what the
  same kernel takes inside the network;
* the **call floor**: the same kind of call on a smaller input (a batch of one where that runs the
  same aten calls, else the same batch; a small spatial size) that makes the same count of every
  aten call (:func:`record_calls`), minus that call's own kernel floor. What remains is the cost of
  issuing the calls (Python, dispatch, allocation) and of the moves on smaller arrays, which the
  full-size call pays at least once.

Their sum, the **eager floor**, is a lower estimate of any execution that runs the same arithmetic
call by call with torch's kernels, whatever it does about copies and layouts. Such an execution
keeps every value of the call to the bit (which is what this project's eager path promises: the
training step's rounding, and the eval forward equal to the training-mode forward). Only fused or
other kernels (compilation, hand-written kernels, another library) go below it. It is set against
the time a target allows in ``bench ab``'s report.

One other kernel is within such an execution's reach: torch's BLAS (MKL) is not its fastest
product on every processor. A product with a weight shared by the batch is also oneDNN's 1×1
convolution once its operands are laid out channels-last, and that convolution can give the same
bits (:func:`channels_last_product`, checked call by call). So the eager floor takes each
product at the faster of the two where the bits agree (:func:`replay` with ``layouts``); the floor
with every product as called is kept beside it (``seconds_as_called``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from .timing import best_and_median, measure

#: aten operators that are matrix products or convolutions, by category
HEAVY: dict[str, str] = {
    "mm": "gemm",
    "bmm": "gemm",
    "baddbmm": "gemm",
    "baddbmm_": "gemm",
    "addmm": "gemm",
    "addmm_": "gemm",
    "addbmm": "gemm",
    "_linear_pointwise": "gemm",  # oneDNN's product (mkldnn::_linear_pointwise): the torch path's routed linears
    "convolution": "convolution",
    "convolution_backward": "convolution",
    "_fft_r2c": "convolution",
    "_fft_c2r": "convolution",
    "_fft_c2c": "convolution",
    "depthwise_conv": "convolution",  # the compiled CPU kernels (hyperzzw::depthwise_conv, …_weight_grad)
    "depthwise_weight_grad": "convolution",
    "depthwise_conv_backward": "convolution",  # hyperzzw::depthwise_conv_backward: the two above, one call
    "linear_rows": "gemm",  # the compiled CPU kernel of the point-wise linears (hyperzzw::linear_rows)
    "linear_rows_into": "gemm",  # the same with W packed, a sample at a time (hyperzzw::linear_rows_into)
    "global_products": "gemm",  # the compiled CPU kernels of the global branch's products (hyperzzw::…)
    "global_products_backward": "gemm",
}

#: the standardisation kernels (statistics and normalisation in one call, and their backward)
STANDARDIZATIONS = frozenset(
    [f"native_{kind}_norm{part}" for kind in ("batch", "group", "layer") for part in ("", "_backward")]
    + ["standardize"]  # the compiled CPU kernel (hyperzzw::standardize)
)

#: aten operators that only move, copy or allocate values: an execution of the same arithmetic need
#: not run them, so the kernel floor leaves them out (views are left out by the operator's is_view)
MOVES = frozenset(
    {
        "clone",
        "copy_",
        "linear_pack",  # hyperzzw::linear_pack: W copied into the compiled product's panels
        "_to_copy",
        "cat",
        "stack",
        "constant_pad_nd",
        "fill_",
        "zero_",
        "empty_like",
        "zeros_like",
        "ones_like",
        "full_like",
        "new_empty",
        "new_empty_strided",
        "new_zeros",
        "new_ones",
        "new_full",
        "_unsafe_view",
        "lift_fresh",
        "lift_fresh_copy",
        "slice_backward",
        "select_backward",
        "slice_scatter",
        "select_scatter",
        "as_strided_scatter",
        "_local_scalar_dense",
    }
)

#: the kernel floor's categories, in the report's order
CATEGORIES = ("gemm", "convolution", "standardization", "other")

#: sides tried, smallest first, for the call floor's small input (every spatial side set to it)
SMALL_SIDES = (4, 9, 16)


def _spec(torch: Any, a: Any) -> Any:
    """A hashable description of one argument: tensors by layout (not values), sequences recursively."""
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), tuple(a.stride()), a.dtype, a.device)
    if isinstance(a, list | tuple):
        return (type(a).__name__, tuple(_spec(torch, v) for v in a))
    return ("value", a)


def rebuild(torch: Any, spec: Any, gen: Any) -> Any:
    """An argument of the layout ``spec`` describes: floating tensors get standard normal values
    over a storage just large enough for their strides (so expanded and transposed views keep
    their strides); other tensors are zeros."""
    tag, body = spec[0], spec[1:]
    if tag == "tensor":
        shape, stride, dtype, device = body
        if not dtype.is_floating_point:
            return torch.zeros(shape, dtype=dtype, device=device)
        extent = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if all(shape) else 1
        base = torch.randn(extent, dtype=dtype, device=device, generator=gen)
        return base.as_strided(shape, stride)
    if tag in ("list", "tuple"):
        items = [rebuild(torch, s, gen) for s in body[0]]
        return items if tag == "list" else tuple(items)
    return body[0]


def category(name: str) -> str:
    """The kernel floor's category (:data:`CATEGORIES`) of the aten operator ``name``."""
    if name in HEAVY:
        return HEAVY[name]
    return "standardization" if name in STANDARDIZATIONS else "other"


def computes_values(torch: Any, func: Any, args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether the kernel floor replays a call of ``func`` (an aten ``OpOverload``): not a view (its
    ``is_view``: a result that aliases an input without writing it), not one of :data:`MOVES`, and
    with a tensor among its arguments (a call without one makes a constant)."""
    if func.overloadpacket.__name__ in MOVES:
        return False
    if func.is_view:
        return False
    return _has_tensor(torch, (tuple(args), tuple(kwargs.values())))


def _has_tensor(torch: Any, a: Any) -> bool:
    if isinstance(a, list | tuple):
        return any(_has_tensor(torch, v) for v in a)
    return isinstance(a, torch.Tensor)


def record_calls(torch: Any, fn: Callable[[], Any]) -> tuple[Counter, Counter]:
    """Run ``fn`` once under a dispatch mode; → (kernels, counts): a Counter of (operator, args
    spec, kwargs spec) for every call that computes values (:func:`computes_values`), the backward's
    included, and how many times each aten operator was called."""
    from torch.utils._python_dispatch import TorchDispatchMode

    kernels: Counter = Counter()
    counts: Counter = Counter()

    class _Record(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"):
                # under torch.inference_mode (autograd's keys off: the eval forward without
                # gradients) a composite such as matmul reaches the mode undecomposed: record the
                # kernels it runs (mm, bmm, …), as with autograd on, not the composite itself
                with self:
                    return func.decompose(*args, **kwargs)
            counts[func.overloadpacket.__name__] += 1
            if computes_values(torch, func, args, kwargs):
                kernels[(func, _spec(torch, tuple(args)), _spec(torch, tuple(sorted(kwargs.items()))))] += 1
            return func(*args, **kwargs)

    with _Record():
        fn()
    return kernels, counts


def replay(torch: Any, calls: Counter, reps: int = 5, seed: int = 0, layouts: bool = False) -> dict[str, Any]:
    """Replay the ``calls`` of :func:`record_calls`: per distinct call, the median of ``reps`` timed
    runs after one untimed, times its count. → ``{"by_category": seconds per category of
    :data:`CATEGORIES`, "left_out": {operator: calls}}``; a call that fails on fresh values (an
    operator that needs particular ones) is left out and named, which keeps the sum a lower
    estimate.

    With ``layouts``, also ``"products_channels_last"``: ``{"seconds", "calls", "converted",
    "unequal"}``, the products each at the faster of their replay and, where that gives the same
    bits, :func:`channels_last_product` (what the products take in an execution that keeps their
    operands channels-last, any layout of the rest); their count; how many ran faster as
    convolutions with the same bits; how many convolutions gave other bits (kept as called)."""
    gen = torch.Generator().manual_seed(seed)
    by = dict.fromkeys(CATEGORIES, 0.0)
    left_out: Counter = Counter()
    products = {"seconds": 0.0, "calls": 0, "converted": 0, "unequal": 0}
    for (func, args_spec, kwargs_spec), count in calls.items():
        name = func.overloadpacket.__name__
        args = rebuild(torch, args_spec, gen)
        kwargs = dict(rebuild(torch, kwargs_spec, gen))
        try:
            _best, median = best_and_median(functools.partial(func, *args, **kwargs), reps)
        except (RuntimeError, ValueError, IndexError):  # what torch raises for values it refuses
            left_out[name] += count
            continue
        by[category(name)] += median * count
        if layouts and category(name) == "gemm":
            _channels_last_figure(torch, products, func, args, kwargs, median, count, reps)
    out: dict[str, Any] = {"by_category": by, "left_out": dict(left_out)}
    if layouts:
        out["products_channels_last"] = products
    return out


def _channels_last_figure(
    torch: Any, products: dict[str, Any], func: Any, args: tuple, kwargs: dict, as_called: float, count: int, reps: int
) -> None:
    """Add one replayed product (its median ``as_called``, ``count`` calls) to :func:`replay`'s
    ``products_channels_last``."""
    seconds = as_called
    alt = channels_last_product(torch, func, args, kwargs)
    if alt is not None:
        run, same_bits = alt
        if same_bits:
            _best, as_conv = best_and_median(run, reps)
            if as_conv < as_called:
                seconds = as_conv
                products["converted"] += count
        else:
            products["unequal"] += count
    products["seconds"] += seconds * count
    products["calls"] += count


def channels_last_product(torch: Any, func: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """The product call ``func(*args, **kwargs)`` (``bmm``, ``baddbmm``, ``baddbmm_`` in float32 on
    the CPU) as oneDNN's 1×1 convolution on operands laid out channels-last, where one factor is a
    weight shared by the batch (batch stride 0, or a batch of one: W·x_b, or x_b·W).
    → ``(run, same_bits)``: ``run`` a call of the convolution (its operands converted beforehand,
    untimed), ``same_bits`` whether it gives the call's values to the bit on ``args``. None for
    any other call, or without oneDNN.

    With a weight of O × K, the batch's K × N factor becomes an image (B, K, N, 1) whose channels
    are contiguous per position, so the convolution is one product of the B·N positions by the
    weight, with the call's bias, or its accumulation (``baddbmm_``), fused. On the AMD EPYC of the
    twelfth and thirteenth sessions it ran the network's products about 2x faster than the calls
    (torch's BLAS), with the same bits where K ≤ 144 (docs/speed.md)."""
    name = func.overloadpacket.__name__
    if name not in ("bmm", "baddbmm", "baddbmm_") or kwargs or not torch.backends.mkldnn.is_available():
        return None
    if len(args) != (2 if name == "bmm" else 3):  # beta or alpha given
        return None
    y, a, x = (None, *args) if name == "bmm" else args
    if a.dtype != torch.float32 or a.device.type != "cpu" or a.ndim != 3 or x.ndim != 3:
        return None
    cl = torch.channels_last
    if a.stride(0) == 0 or a.shape[0] == 1:  # W·x_b: the image is x_b's K × N, the weight W (O, K)
        image, weight = x.unsqueeze(3).contiguous(memory_format=cl), a[0]
        back = lambda out: out.squeeze(3)  # noqa: E731
    elif (x.stride(0) == 0 or x.shape[0] == 1) and y is None:  # x_b·W: image x_bᵀ, weight Wᵀ, output transposed
        image, weight = a.transpose(1, 2).unsqueeze(3).contiguous(memory_format=cl), x[0].t()
        back = lambda out: out.squeeze(3).transpose(1, 2)  # noqa: E731
    else:
        return None
    w4 = weight.contiguous().reshape(int(weight.shape[0]), int(weight.shape[1]), 1, 1)
    o, b, n = int(w4.shape[0]), int(image.shape[0]), int(image.shape[2])
    fused: tuple[Any, ...] = ([0, 0], [1, 1], [1, 1], 1, "add", 1.0, None, [], None)  # geometry of a 1×1, then the sum
    if y is None:
        run = functools.partial(torch.nn.functional.conv2d, image, w4)
    elif y.numel() == o and y.shape[-2] == o:  # a bias (1, O, 1)
        run = functools.partial(torch.nn.functional.conv2d, image, w4, y.reshape(-1))
    else:  # a whole (B, O, N) added: in place for baddbmm_
        other = y.expand(b, o, n).unsqueeze(3).contiguous(memory_format=cl)
        if name == "baddbmm_":
            run = functools.partial(torch.ops.mkldnn._convolution_pointwise_.binary, other, image, w4, None, *fused)
        else:
            run = functools.partial(torch.ops.mkldnn._convolution_pointwise.binary, image, other, w4, None, *fused)
    if name == "baddbmm_":  # compared on copies: the timed runs accumulate into ``other``
        expected = func(y.clone(), a, x)
        got = torch.ops.mkldnn._convolution_pointwise_.binary(other.clone(), image, w4, None, *fused)
    else:
        expected, got = func(*args), run()
    return run, bool(torch.equal(expected, back(got)))


def kernel_floor(torch: Any, calls: Counter, reps: int = 5, layouts: bool = False) -> dict[str, Any]:
    """``{"seconds", "by_category", "n_calls", "left_out"}``: :func:`replay` of ``calls``. With
    ``layouts``, also its ``"products_channels_last"`` and ``"seconds_channels_last"``: the floor
    with the products at that figure (a lower estimate for an execution that lays the products'
    operands out channels-last and keeps every value's bits)."""
    got = replay(torch, calls, reps, layouts=layouts)
    by = got["by_category"]
    out = {"seconds": sum(by.values()), "by_category": by, "n_calls": sum(calls.values()), "left_out": got["left_out"]}
    if layouts:
        products = got["products_channels_last"]
        out["products_channels_last"] = products
        out["seconds_channels_last"] = out["seconds"] - by["gemm"] + products["seconds"]
    return out


@contextlib.contextmanager
def same_product_routes(ratio: float, spatial: tuple[int, ...] = ()) -> Iterator[None]:
    """Within the block, the torch path routes a point-wise linear to oneDNN's per-sample product
    at ``ratio`` times its threshold of multiply-adds per sample (``ONEDNN_MIN_PRODUCT`` of
    ``hyperzzw_core.backends._torch``, which decides by O·I·N): on an input with ``ratio`` times
    the positions, every product takes the route it takes at full size, so that the call floor's
    smaller input can make the same calls (:func:`call_floor` still checks their counts). Likewise
    the compiled global products (``GLOBAL_PRODUCTS_ROW_BLOCK`` of
    ``hyperzzw_core.backends._torch_functions``, which takes n × n matrices with n a multiple of
    it): on a smaller input they are taken where the full-size 2D input ``spatial`` takes them,
    and not taken where it does not. A checkout without either rule is left as it is."""
    from hyperzzw_core.backends import _torch as routes

    saved = getattr(routes, "ONEDNN_MIN_PRODUCT", None)
    functions: Any = sys.modules.get("hyperzzw_core.backends._torch_functions")  # None before the torch backend
    block = getattr(functions, "GLOBAL_PRODUCTS_ROW_BLOCK", None)
    try:
        if saved is not None:
            routes.ONEDNN_MIN_PRODUCT = saved * ratio
        if block is not None and len(spatial) == 2:
            taken = spatial[0] == spatial[1] and spatial[-1] % block == 0
            functions.GLOBAL_PRODUCTS_ROW_BLOCK = 1 if taken else sys.maxsize
        yield
    finally:
        if saved is not None:
            routes.ONEDNN_MIN_PRODUCT = saved
        if block is not None:
            functions.GLOBAL_PRODUCTS_ROW_BLOCK = block


def call_floor(
    torch: Any,
    reference_counts: Counter,
    make_fn: Callable[[int, tuple[int, ...]], Callable[[], Any]],
    batch: int,
    spatial: tuple[int, ...],
    reps: int = 11,
) -> dict[str, Any]:
    """The call floor (module docstring). ``make_fn(b, shape)`` makes the same kind of call on a
    batch of b at another spatial shape. Tried in order: a batch of one, then ``batch``, each at the
    sides of :data:`SMALL_SIDES` below the input's own; the first that makes the same count of
    every aten call as ``reference_counts`` is used (a smaller input of the same calls does no
    more work in any of them). → ``{"seconds", "batch", "shape", "call", "kernels"}``, or
    ``{"seconds": None, "why": …}`` when no smaller input runs the same calls."""
    tried = []
    for b in sorted({1, batch}):
        for side in SMALL_SIDES:
            shape = (side,) * len(spatial)
            if any(s <= side for s in spatial):
                break
            with same_product_routes(math.prod(shape) / math.prod(spatial), tuple(spatial)):
                fn = make_fn(b, shape)
                fn()  # the first call builds caches (grids, the eval-mode slow kernels)
                kernels_called, counts = record_calls(torch, fn)
                if counts != reference_counts:
                    diff = sorted(set(counts.items()) ^ set(reference_counts.items()))[:4]
                    tried.append(f"B={b} {'x'.join(map(str, shape))}: other calls {diff}")
                    continue
                whole = measure(fn, reps=reps, min_reps=reps, budget=math.inf).median
            kernels = kernel_floor(torch, kernels_called)["seconds"]
            return {"seconds": max(whole - kernels, 0.0), "batch": b, "shape": shape, "call": whole, "kernels": kernels}
    return {"seconds": None, "why": "; ".join(tried) or f"no side of {SMALL_SIDES} below the input's {spatial}"}


def eager_floor(
    torch: Any,
    fn: Callable[[], Any],
    make_small: Callable[[int, tuple[int, ...]], Callable[[], Any]],
    batch: int,
    spatial: tuple[int, ...],
) -> dict[str, Any]:
    """Both floors of ``fn``, a call on a batch of ``batch`` at the spatial shape ``spatial`` (module
    docstring); ``make_small`` as :func:`call_floor` takes it. ``seconds`` is their sum with the
    kernel floor's products at their channels-last figure (``kernel_floor(..., layouts=True)``),
    ``seconds_as_called`` the sum with the products as called; both None without a call floor."""
    called, counts = record_calls(torch, fn)
    kernels = kernel_floor(torch, called, layouts=True)
    calls = call_floor(torch, counts, make_small, batch, spatial)
    if calls["seconds"] is None:
        return {"seconds": None, "seconds_as_called": None, "kernels": kernels, "calls": calls}
    return {
        "seconds": kernels["seconds_channels_last"] + calls["seconds"],
        "seconds_as_called": kernels["seconds"] + calls["seconds"],
        "kernels": kernels,
        "calls": calls,
    }

"""The torch backend: torch's native kernels (conv, instance_norm, GELU, SiLU, baddbmm, oneDNN's products).

Everything here traces under ``torch.compile``: torch is read from ``sys.modules`` (it is there
whenever a tensor was passed in), devices are read from ``tensor.device``, and nothing on the
forward path goes through ``functools.lru_cache`` or array-api-compat's cached type checks.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

from ._base import (
    DENSE_MAX_POSITIONS,
    FFT_MIN_KERNEL,
    FFT_MIN_SPATIAL,
    ONEDNN_MIN_PRODUCT,
    ArrayAPIBackend,
    as_matrices,
    from_matrices,
    spatial_size,
)


def _torch() -> Any:
    return sys.modules["torch"]


def _saves_output(x: Any) -> bool:
    """Whether the standardisations may keep their output (not their input) for backward: below
    float64. The native forward writes y as x·r − μ·r, whose rounding grows with |μ|/σ; a backward
    from that y is less accurate than one that recomputes (x − μ)·r. In float64 this moved the
    conformance kit's offset-1e3 gradients of the channel mixer from 3.6e-11 to 1.1e-10 relative,
    past the 1e-10 policy, so float64 keeps the input-saving kernels; float32 passes its policy
    either way and gains the memory (docs/speed.md)."""
    return x.dtype != _torch().float64


def _records_graph(torch: Any, *arrays: Any) -> bool:
    """Whether autograd records a graph through ``arrays``: grad mode on and one of them needs a
    gradient (else a Function's forward may run without ``apply``)."""
    return torch.is_grad_enabled() and any(a.requires_grad for a in arrays)


def _onednn_float32(torch: Any, y: Any) -> bool:
    """Whether ``y`` is a CPU float32 tensor that oneDNN convolves (read without graph breaks
    inside torch.compile traces, where ``torch.backends.mkldnn`` cannot be called)."""
    if y.dtype != torch.float32 or y.device.type != "cpu":
        return False
    if torch.compiler.is_compiling():
        return bool(torch._C._has_mkldnn)
    # what torch.backends.mkldnn.is_available() and .enabled read, without their Python layers
    # (about 200 calls per eval forward of cifar10())
    return bool(torch._C._has_mkldnn and torch._C._get_mkldnn_enabled())


def onednn_rows(torch: Any, ws: Sequence[Any], x: Any) -> list[bool]:
    """For each product W_i·x_b (x (B, I, N), W_i (O, I_i)), whether it runs as oneDNN's matrix
    product, one call per sample b (:func:`onednn_concatenated` of that term alone): float32 CPU
    tensors with oneDNN, outside torch.compile traces, and at least ``ONEDNN_MIN_PRODUCT``
    multiply-adds per sample (O·I_i·N).

    oneDNN takes W as its left factor and x_b as its right one in x_b's own layout (a (N, I)
    weight given as x_bᵀ, read as strided: no copy), and writes W·x_b (O, N) row-major: the
    point-wise linear in the channel-first layout, without the layout change that a 1×1
    convolution wants. On processors where torch's BLAS (MKL) runs narrower vector kernels than
    oneDNN (the AMD EPYC of docs/speed.md: 200 against 400 GFLOP/s) it is about 1.5x faster at
    the network's shapes. The decision depends on dtypes, device and shapes only, so the forward
    of a Function and its recomputation in backward, and a forward with and without gradients,
    take the same route."""
    return [onednn_concatenated(torch, (w,), (x,)) for w in ws]


def onednn_concatenated(torch: Any, ws: Sequence[Any], xs: Sequence[Any]) -> bool:
    """Whether a sum Σ_i W_i·x_i with every term at hand (x_i (B, I_i, N), W_i (O, I_i)) runs as
    one oneDNN product per sample of the terms concatenated: [W_1 … W_n]·[x_1b; …; x_nb]. The rule
    of :func:`onednn_rows` applied to that product, O·(Σ_i I_i)·N multiply-adds per sample, so
    that a single term is routed exactly as :func:`onednn_rows` routes it, and a sum of terms that
    are each too small to route may be routed as a whole.

    One product of depth Σ_i I_i is faster than n products of depth I_i each adding into the sum
    so far: the sum is written once instead of read and written n times, and oneDNN runs deeper
    products nearer its peak (alone at B = 8: the ``cifar10()`` block-3 bottleneck 202 against 314
    GFLOP/s, block 4's 254 against 291; sums of terms below the threshold 1.2x to 1.6x faster than
    the batched BLAS calls; their backward 1.3x to 1.8x at B = 32; docs/speed.md)."""
    if torch.compiler.is_compiling() or not all(_onednn_float32(torch, x) for x in xs):
        return False
    if any(w.dtype != torch.float32 for w in ws):
        return False
    return int(ws[0].shape[0]) * sum(int(w.shape[1]) for w in ws) * int(xs[0].shape[2]) >= ONEDNN_MIN_PRODUCT


def concatenated_weight(torch: Any, ws: Sequence[Any]) -> Any:
    """[W_1 … W_n] (O, Σ I_i): the weights side by side, as :func:`concatenated_rows` multiplies
    them (a single W_1 as it lies)."""
    return ws[0] if len(ws) == 1 else torch.cat(list(ws), dim=1)


class Term(NamedTuple):
    """How the terms a_i of :func:`concatenated_rows` are formed from the x_i (an element-wise
    activation, so that no whole (B, I_i, N) activation is formed): where ``formed[i]``,
    ``write(i, x, out)`` writes a_i of x (…, I_i, N) into ``out`` of x's shape; the other terms
    are the x_i themselves."""

    formed: tuple[bool, ...]
    write: Callable[[int, Any, Any], None]


def concatenated_terms(torch: Any, xs: Sequence[Any], term: Term | None = None) -> Callable[[int], Any]:
    """The function s ↦ [a_1s; …; a_ns] (Σ I_i, N) of :func:`concatenated_rows`: each a_is is x_is
    copied, or formed from it by ``term`` (an element-wise activation, so that no whole (B, I_i, N)
    activation is formed), written into one buffer that every sample reuses (each sample's product
    reads it before the next sample is written); a single term without ``term`` is x_1s as it
    lies."""
    if len(xs) == 1 and term is None:
        return lambda s: xs[0][s]
    sizes = [int(x.shape[1]) for x in xs]
    buffer = torch.empty((sum(sizes), int(xs[0].shape[2])), dtype=xs[0].dtype, device=xs[0].device)
    parts = torch.split(buffer, sizes)

    def sample(s: int) -> Any:
        for i, (x, part) in enumerate(zip(xs, parts, strict=True)):
            if term is not None and term.formed[i]:
                term.write(i, x[s], part)
            else:
                part.copy_(x[s])
        return buffer

    return sample


def _formed_terms(torch: Any, xs: Sequence[Any], term: Term | None) -> list[Any]:
    """The terms a_i of :func:`concatenated_rows` as arrays of x_i's shape: the formed ones written
    into new contiguous arrays by ``term``, the others x_i as they lie."""
    out = []
    for i, x in enumerate(xs):
        if term is not None and term.formed[i]:
            a = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            term.write(i, x, a)
            x = a
        out.append(x)
    return out


def _bias_rows(torch: Any, b: Any, o: int, n: int) -> Any:
    """β (O,) as the (O, N) array that oneDNN's product adds ("add" post-op), formed once for all
    the samples of a call: given the broadcast view, the product forms it itself on every call
    (the same bits; 5 to 12% of the products' time at O, I = 144 to 432, N = 1024, B = 32;
    docs/speed.md, "Eighteenth session")."""
    return torch.reshape(b, (o, 1)).expand(o, n).contiguous()


def concatenated_rows(torch: Any, ws: Sequence[Any], b: Any, xs: Sequence[Any], term: Term | None = None) -> Any:
    """Σ_i W_i·x_i + β with every term at hand, as one oneDNN product per sample of the terms
    concatenated (:func:`onednn_concatenated`): y_b = [W_1 … W_n]·[a_1b; …; a_nb] + β (a_ib = x_ib,
    or formed by ``term``; :func:`concatenated_terms`), β fused by the product's "add". The
    weights are concatenated once per call. The samples are stacked into (B, O, N) at the end.
    Where the compiled kernels are built, the compiled product instead, with oneDNN's bits
    (``_torch_functions.linear_rows``): without ``term`` one call of all samples, the x_i read
    where they lie; with it, W packed once and each sample's buffer multiplied into its rows of
    the output as it is formed (a single sample: one call that reads W as it lies, unpacked, and
    the terms that are not formed where they lie)."""
    w = concatenated_weight(torch, ws)
    batch, o, n = int(xs[0].shape[0]), int(ws[0].shape[0]), int(xs[0].shape[2])
    from ._torch_functions import compiled_linear_rows_applies, linear_pack, linear_rows, linear_rows_into

    compiled = compiled_linear_rows_applies(xs)
    if compiled and (term is None or batch == 1):  # one call (one sample: W read as it lies, not packed)
        return linear_rows(w, b, _formed_terms(torch, xs, term), False)
    sample = concatenated_terms(torch, xs, term)
    if compiled:
        out = torch.empty((batch, o, n), dtype=xs[0].dtype, device=xs[0].device)
        packed = linear_pack(w, False)
        for s in range(batch):
            linear_rows_into(out[s : s + 1], packed, o, b, (torch.unsqueeze(sample(s), 0),))
        return out
    product = torch.ops.mkldnn._linear_pointwise.binary  # looked up only here: other builds need not have it
    bias = _bias_rows(torch, b, o, n)
    return torch.stack([product(w, bias, sample(s).t(), None, "add") for s in range(batch)])


def _summed_rows(torch: Any, ws: Sequence[Any], b: Any, xs: Sequence[Any] | Iterator[Any], routes: list[bool]) -> Any:
    """Σ_i W_i·x_i + β term by term (``xs`` may be a generator, each x_i formed just before its
    product): each term by oneDNN's product per sample where ``routes[i]`` (y_b = W_i·x_ib + y_b,
    the sum fused into the product, as ``baddbmm_`` adds the product to its output), else by
    ``baddbmm``/``baddbmm_`` on the whole batch; the first term adds β. The per-sample results
    are stacked into (B, O, N) once, where a batched term follows them, or at the end."""
    terms = iter(xs)
    x0 = next(terms)
    batch, o, n = int(x0.shape[0]), int(ws[0].shape[0]), int(x0.shape[2])
    if any(routes):  # looked up only where routed (other builds and devices need not have it)
        product = torch.ops.mkldnn._linear_pointwise.binary
        bias = _bias_rows(torch, b, o, n)
    rows: list[Any] = []
    whole: Any = None  # the sum as one (B, O, N) array, or None while it is kept per sample in ``rows``
    for w, x, route in zip(ws, itertools.chain((x0,), terms), routes, strict=True):
        if route:
            if rows:  # each y_b replaced as soon as its successor is formed
                for i in range(batch):
                    rows[i] = product(w, rows[i], x[i].t(), None, "add")
            else:  # the first term (β added), or the sum so far as one array read per sample
                rows = [product(w, bias if whole is None else whole[i], x[i].t(), None, "add") for i in range(batch)]
                whole = None
            continue
        if rows:
            whole, rows = torch.stack(rows), []
        whole = _batched_linear(torch, w, b, x) if whole is None else whole.baddbmm_(w.expand(batch, *w.shape), x)
    return torch.stack(rows) if rows else whole


def _batched_linear(torch: Any, w: Any, b: Any, x: Any) -> Any:
    """W·x + β for x (B, I, N) as one ``baddbmm`` (β fused, W expanded over the batch)."""
    return torch.baddbmm(torch.reshape(b, (1, -1, 1)), w.expand(x.shape[0], w.shape[0], w.shape[1]), x)


def torch_pointwise_linear(torch: Any, w: Any, b: Any, x: Any) -> Any:
    """W·x + β for x (B, I, N): oneDNN's product per sample where :func:`onednn_rows` says so,
    else one ``baddbmm`` (batched GEMM, bias fused, W expanded over the batch: no transposed
    copies, where ``W @ x`` folds the batch through two copies). With a graph to record, the
    oneDNN route runs inside ``PointwiseLinear`` (its backward the products autograd takes for
    ``baddbmm``, by oneDNN per sample too). Every torch point-wise linear is this call, so that an autograd
    Function that recomputes a product in backward (``_torch_functions``) gets the forward's
    bits."""
    if onednn_rows(torch, (w,), x)[0]:
        if _records_graph(torch, w, b, x):
            from ._torch_functions import PointwiseLinear

            return PointwiseLinear.apply(w, b, x)
        return concatenated_rows(torch, (w,), b, (x,))
    return _batched_linear(torch, w, b, x)


def torch_pointwise_linear_sum(torch: Any, ws: Sequence[Any], b: Any, xs: Sequence[Any] | Iterator[Any]) -> Any:
    """Σ_i W_i·x_i + β. With every term at hand (``xs`` a sequence) that :func:`onednn_concatenated`
    routes: one oneDNN product per sample of the terms concatenated (:func:`concatenated_rows`;
    with a graph to record, inside ``PointwiseLinearSum``). Else term by term
    (:func:`_summed_rows`): one ``baddbmm`` for the first term (β fused), then one in-place
    ``baddbmm_`` per further term into the same output, the terms that :func:`onednn_rows` routes
    by oneDNN's product per sample with the sum fused. ``xs`` may be a generator, so that each x_i
    is formed just before its product and dropped after it."""
    if isinstance(xs, Sequence):
        if onednn_concatenated(torch, ws, xs):
            if _records_graph(torch, b, *ws, *xs):
                from ._torch_functions import PointwiseLinearSum

                return PointwiseLinearSum.apply(b, *ws, *xs)
            return concatenated_rows(torch, ws, b, xs)
        return _summed_rows(torch, ws, b, xs, [False] * len(ws))  # through autograd where it records
    xs = iter(xs)  # a generator: each x_i formed just before its product
    x0 = next(xs)
    routes = onednn_rows(torch, ws, x0)
    terms: Iterator[Any] = itertools.chain((x0,), xs)
    if any(routes) and torch.is_grad_enabled():
        listed = list(terms)  # a graph may be recorded through any term: each is needed to tell
        if _records_graph(torch, b, *ws, *listed):
            from ._torch_functions import PointwiseLinearSum

            return PointwiseLinearSum.apply(b, *ws, *listed)
        terms = iter(listed)
    # unrouted terms by baddbmm/baddbmm_, through autograd where it records
    return _summed_rows(torch, ws, b, terms, routes)


def torch_depthwise_direct(torch: Any, y: Any, k_l: Any) -> Any:
    """``F.conv{1,2}d(groups=C)``; float32 on CPU with gradients: ``DepthwiseConvOneDNN``.

    oneDNN's NCHW depth-wise weight gradient is pathologically slow on CPU for k ≥ 5 (seconds
    for the CIFAR-10 block 4; docs/benchmarks.md), while its channels-last one is fast: with
    gradients, ``DepthwiseConvOneDNN`` runs the forward and the input gradient in NCHW and the
    weight gradient in channels-last (converted copies, not kept for backward); 1-D inputs run as
    (B, C, 1, L) images. Without gradients (inference) its forward alone: the compiled kernel
    where it applies, else the plain NCHW call (the same bits either way). float64 (no oneDNN)
    and other devices use the plain call.
    """
    fn = torch.nn.functional
    pad = tuple((int(k) - 1) // 2 for k in k_l.shape[2:])
    c = int(y.shape[1])
    if _onednn_float32(torch, y) and y.ndim in (3, 4):
        from ._torch_functions import DepthwiseConvOneDNN

        y4, k4, pad4 = (torch.unsqueeze(y, 2), torch.unsqueeze(k_l, 2), (0,) + pad) if y.ndim == 3 else (y, k_l, pad)
        if torch.compiler.is_compiling() or _records_graph(torch, y, k_l):
            out = DepthwiseConvOneDNN.apply(y4, k4, pad4)
        else:
            out = DepthwiseConvOneDNN.forward(y4, k4, pad4)
        return torch.squeeze(out, 2) if y.ndim == 3 else out
    conv = fn.conv1d if y.ndim == 3 else fn.conv2d
    return conv(y, k_l, padding=pad, groups=c)


class TorchBackend(ArrayAPIBackend):
    """torch through ``array_api_compat.torch`` (or a wrapper of it forwarding ``__name__``, such as
    the adapter's ``global_batch_namespace``)."""

    name: ClassVar[str] = "torch"
    namespace_names: ClassVar[tuple[str, ...]] = ("torch", "array_api_compat.torch")
    module_names: ClassVar[tuple[str, ...]] = ("torch", "array_api_compat.torch")

    def standard_namespace(self, module: Any) -> Any:
        import array_api_compat.torch as xp

        return xp

    def device(self, x: Any) -> Any:
        return x.device

    def is_lazy(self, x: Any) -> bool:
        return bool(_torch().compiler.is_compiling())

    def work_dtype(self, xp: Any, dtype: Any, dev: Any) -> Any:
        if dtype == xp.float64:
            return dtype
        return dtype if getattr(dev, "type", "cpu") == "mps" else xp.float64

    def cache_key(self, key: tuple, dtype: Any, dev: Any) -> tuple | None:
        """Keyed on dtype, device and inference mode (an inference tensor cannot be saved for
        backward outside inference mode); never cached while torch.compile traces (the graph then
        owns the constant) or on the 'meta' device."""
        torch = _torch()
        if torch.compiler.is_compiling() or getattr(dev, "type", None) == "meta":
            return None
        return ("torch", key, str(dtype), str(dev), torch.is_inference_mode_enabled())

    def stop_gradient(self, xp: Any, x: Any) -> Any:
        return x.detach()

    def sigmoid(self, xp: Any, x: Any) -> Any:
        return _torch().sigmoid(x)

    def gelu(self, xp: Any, x: Any, sqrt_half: float) -> Any:
        """torch's native exact GELU (one pass forward and backward)."""
        return _torch().nn.functional.gelu(x)

    def silu(self, xp: Any, x: Any) -> Any:
        return _torch().nn.functional.silu(x)

    def sum_of_norms(self, xp: Any, arrays: Sequence[Any]) -> Any:
        """torch's multi-tensor norm (``_foreach_norm``: one call forward and one backward for all
        arrays, where a loop makes two to three nodes per array; its gradient at a zero array is 0,
        as ``vector_norm``'s) and one sum. The digits network regularises 400 of its parameters."""
        torch = _torch()
        return torch.sum(torch.stack(torch._foreach_norm(list(arrays))))

    def pointwise_linear(self, xp: Any, w: Any, b: Any, x: Any) -> Any:
        """One ``baddbmm``, or oneDNN's product per sample (:func:`torch_pointwise_linear`)."""
        return torch_pointwise_linear(_torch(), w, b, x)

    def split_channels(self, xp: Any, y: Any, sizes: list[int]) -> list[Any]:
        """``torch.split``: its backward writes the pieces' gradients into one array (one ``cat``),
        where a slice's backward zero-fills a gradient of the whole ``y`` per piece."""
        return list(_torch().split(y, list(sizes), dim=1))

    def pointwise_linear_sum(self, xp: Any, ws: list[Any], b: Any, xs: list[Any]) -> Any:
        """One ``baddbmm`` for the first term (bias fused), then one in-place ``baddbmm_`` per
        further term into the same output, or oneDNN's products per sample with the sum fused: no
        concatenated copy of the branches is made or kept for backward (a ``baddbmm`` saves its
        two matrices, never its output; :func:`torch_pointwise_linear_sum`)."""
        return torch_pointwise_linear_sum(_torch(), ws, b, xs)

    def pointwise_linear_sum_gelu(
        self, xp: Any, ws: list[Any], b: Any, xs: list[Any], gelu: list[bool], maps: list[Any]
    ) -> Any | None:
        """With a graph to record (outside torch.compile traces): ``GeluProductSum``, the calls of
        :meth:`pointwise_linear_sum` on a_i = GELU(x_i) (+ map_i), keeping x_i instead of a_i for
        backward. Without one, where the sum takes oneDNN's concatenated product
        (:func:`onednn_concatenated`): that Function's forward called directly, which forms each
        sample's a_i just before its product instead of every a_i whole (the same values: the
        activation is element-wise). Else None (the same calls, composed)."""
        torch = _torch()
        present = [m for m in maps if m is not None]
        if torch.compiler.is_compiling():
            return None
        graph = _records_graph(torch, b, *ws, *xs, *present)
        if not graph and not onednn_concatenated(torch, ws, xs):
            return None
        from ._torch_functions import GeluProductSum

        spec = tuple((bool(on), m is not None) for on, m in zip(gelu, maps, strict=True))
        if not graph:
            return GeluProductSum.forward(spec, b, *ws, *xs, *present)
        return GeluProductSum.apply(spec, b, *ws, *xs, *present)

    def gated_pointwise_linear(
        self, xp: Any, k: Any, w: Any, b: Any, v: Any, source: tuple[Any, Any, Any] | None = None
    ) -> Any | None:
        """With a graph to record (outside torch.compile traces): ``GatedProduct``, which keeps
        K, V and W but not W·V + β, and given a source, recomputes K and V from it in backward
        instead of keeping them. Else None (the same calls, composed)."""
        torch = _torch()
        if torch.compiler.is_compiling() or not _records_graph(torch, k, w, b, v):
            return None
        from ._torch_functions import GatedProduct

        return GatedProduct.apply(k, w, b, v, source)

    def instance_standardize_fast(self, xp: Any, x: Any, eps: float) -> Any | None:
        """The native kernels (no affine, no running statistics: exactly (x − μ)/√(σ² + eps) with
        the biased variance; forward and backward each one fused kernel, 3x faster than autograd
        through the formula; docs/benchmarks.md): below float64 with gradients the
        ``InstanceStandardize`` Function, which saves the output instead of the input (see
        :func:`_saves_output`); without a graph its forward where the compiled kernel applies
        (float32 on the CPU, so that eval mode computes training's values), else ``instance_norm``.
        Per-sample statistics only, so any torch namespace (wrapped or not) may use it."""
        if spatial_size(x) < 2:  # batch_norm wants more than one value per statistic
            return None
        torch = _torch()
        from ._torch_functions import InstanceStandardize, compiled_standardize_applies

        if _records_graph(torch, x) and _saves_output(x):
            return InstanceStandardize.apply(x, float(eps))[0]
        if compiled_standardize_applies(x):  # no graph: the same forward (the compiled kernel), no Function
            return InstanceStandardize.forward(x, float(eps))[0]
        return torch.nn.functional.instance_norm(x, eps=eps)

    def batch_standardize_fast(self, xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any | None:
        """Below float64 in torch's own namespace (batch means over this process): the native
        batch-norm kernels (``NativeBatchStandardize``, one fused kernel each way; see
        :func:`_saves_output` for float64). Otherwise, and for a namespace that redefines
        ``xp.mean`` (the adapter's ``global_batch_namespace``: means over every process): one
        autograd Function whose three means are that ``xp.mean`` (``BatchStandardize``)."""
        from ._torch_functions import BatchStandardize, NativeBatchStandardize

        axes = tuple(axes)
        n_channel = x.ndim - len(axes)
        per_statistic = 1
        for a in axes:
            per_statistic *= int(x.shape[a])
        if (
            _saves_output(x)
            and xp.mean is self.standard_namespace(xp).mean  # batch means over this process only
            and axes == (0,) + tuple(range(1 + n_channel, x.ndim))
            and per_statistic > 1  # batch_norm wants more than one value per statistic
        ):
            torch = _torch()
            if torch.compiler.is_compiling() or _records_graph(torch, x):
                return NativeBatchStandardize.apply(x, n_channel, float(eps))[0]
            # no graph to record (inference): the same forward without ``apply``, which costs
            # about 50 µs a call (argument binding and the Function machinery), a third of the
            # kernel at (1, 144, 1024)
            return NativeBatchStandardize.forward(x, n_channel, float(eps))[0]
        return BatchStandardize.standardize(x, axes, float(eps), xp.mean)

    def global_product(self, xp: Any, z: Any, k_g: Any, y: Any, grid: tuple[int, int] | None, zhat: Any = None) -> Any:
        """G = (Z ⊙ K_g) @ Y per (b, c) (spec §2.2): :meth:`global_products` of one Y."""
        return self.global_products(xp, z, k_g, [y], grid, zhat)[0]

    def global_products(
        self, xp: Any, z: Any, k_g: Any, ys: Sequence[Any], grid: tuple[int, int] | None, zhat: Any = None
    ) -> list[Any]:
        """[(Z ⊙ K_g) @ Y_j for Y_j in ``ys``] (spec §2.2): float32 on the CPU with the compiled
        kernels (``compiled_global_products_apply``), all J products in one call that reads each
        matrix of Ẑ once (with gradients the ``GlobalProducts`` Function, whose backward sums ∂Ẑ in
        place); else one batched matmul each."""
        torch = _torch()
        from ._torch_functions import GlobalProducts, compiled_global_products_apply, global_products

        zhat = z * k_g if zhat is None else zhat
        a = as_matrices(xp, zhat, grid)
        ms = [as_matrices(xp, y, grid) for y in ys]
        if not compiled_global_products_apply(a, ms):
            one = super().global_product  # bound here: a comprehension has no zero-argument super()
            return [one(xp, z, k_g, y, grid, zhat=zhat) for y in ys]
        out = GlobalProducts.apply(a, *ms) if _records_graph(torch, a, *ms) else global_products(a, ms)
        return [from_matrices(xp, g, tuple(zhat.shape)) for g in out]

    def depthwise_method(self, xp: Any, y: Any, k_l: Any) -> str:
        """CPU: with gradients, on inputs of at most ``DENSE_MAX_POSITIONS`` positions, the dense
        product per channel (its backward is two matrix products, where oneDNN's weight gradient
        costs milliseconds even on 8×8 inputs); else the measured thresholds of ``FFT_MIN_KERNEL``.
        Other devices (cuDNN's depth-wise kernels): direct. torch.compile traces take the same
        dense path as eager (matrix products only), but never FFT (Inductor generates no code for
        complex operators)."""
        torch = _torch()
        if y.device.type != "cpu":
            return "direct"
        training = _records_graph(torch, y, k_l)
        if training and spatial_size(y) <= DENSE_MAX_POSITIONS:
            return "dense"
        k = max(int(v) for v in k_l.shape[2:])
        if torch.compiler.is_compiling() or min(int(v) for v in y.shape[2:]) < FFT_MIN_SPATIAL:
            return "direct"
        return "fft" if k >= FFT_MIN_KERNEL[("torch-cpu", str(y.dtype).rsplit(".", 1)[-1])] else "direct"

    def depthwise_direct(self, xp: Any, y: Any, k_l: Any) -> Any:
        return torch_depthwise_direct(_torch(), y, k_l)

    def depthwise_mixer_fast(self, xp: Any, y: Any, k_l: Any, w: Any, b: Any) -> Any | None:
        """Eager training on the float32 oneDNN path (the direct method with a graph to record):
        ``DepthwiseConvMixer``, which keeps no activation between the convolution and the mixer.
        Else None: inference, float64, the dense and FFT paths, and torch.compile traces (where
        Inductor's partitioner chooses what to keep)."""
        torch = _torch()
        if (
            torch.compiler.is_compiling()
            or y.ndim not in (3, 4)
            or not _records_graph(torch, y, k_l, w, b)
            or not _onednn_float32(torch, y)
            or self.depthwise_method(xp, y, k_l) != "direct"
        ):
            return None
        from ._torch_functions import DepthwiseConvMixer

        pad = tuple((int(k) - 1) // 2 for k in k_l.shape[2:])
        return DepthwiseConvMixer.apply(y, k_l, w, b, pad)

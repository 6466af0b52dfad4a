"""The torch backend: torch's native kernels (conv, instance_norm, GELU, SiLU, baddbmm).

Everything here traces under ``torch.compile``: torch is read from ``sys.modules`` (it is there
whenever a tensor was passed in), devices are read from ``tensor.device``, and nothing on the
forward path goes through ``functools.lru_cache`` or array-api-compat's cached type checks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from ._base import DENSE_MAX_POSITIONS, FFT_MIN_KERNEL, FFT_MIN_SPATIAL, ArrayAPIBackend, spatial_size


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
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def torch_pointwise_linear(torch: Any, w: Any, b: Any, x: Any) -> Any:
    """W·x + β for x (B, I, N) as one ``baddbmm`` (batched GEMM, bias fused, W expanded over the
    batch: no transposed copies, where ``W @ x`` folds the batch through two copies). Every torch
    point-wise linear is this call, so that an autograd Function that recomputes a product in
    backward (``_torch_functions``) gets the forward's bits."""
    return torch.baddbmm(torch.reshape(b, (1, -1, 1)), w.expand(x.shape[0], w.shape[0], w.shape[1]), x)


def torch_pointwise_linear_sum(torch: Any, ws: Sequence[Any], b: Any, xs: Iterable[Any]) -> Any:
    """Σ_i W_i·x_i + β: :func:`torch_pointwise_linear` for the first term, then one in-place
    ``baddbmm_`` per further term into the same output. ``xs`` may be a generator, so that each
    x_i is formed just before its product and dropped after it."""
    terms = iter(xs)
    y = torch_pointwise_linear(torch, ws[0], b, next(terms))
    n = y.shape[0]
    for w, x in zip(ws[1:], terms, strict=True):
        y = y.baddbmm_(w.expand(n, *w.shape), x)
    return y


def torch_depthwise_direct(torch: Any, y: Any, k_l: Any) -> Any:
    """``F.conv{1,2}d(groups=C)``; float32 on CPU with gradients: ``DepthwiseConvOneDNN``.

    oneDNN's NCHW depth-wise weight gradient is pathologically slow on CPU for k ≥ 5 (seconds
    for the CIFAR-10 block 4; docs/benchmarks.md), while its channels-last one is fast: with
    gradients, ``DepthwiseConvOneDNN`` runs the forward and the input gradient in NCHW and the
    weight gradient in channels-last (converted copies, not kept for backward); 1-D inputs run as
    (B, C, 1, L) images. Without gradients (inference) the plain NCHW call, the same forward.
    float64 (no oneDNN) and other devices use the plain call.
    """
    fn = torch.nn.functional
    pad = tuple((int(k) - 1) // 2 for k in k_l.shape[2:])
    c = int(y.shape[1])
    needs_grad = torch.compiler.is_compiling() or _records_graph(torch, y, k_l)
    if needs_grad and _onednn_float32(torch, y) and y.ndim in (3, 4):
        from ._torch_functions import DepthwiseConvOneDNN

        if y.ndim == 3:
            out = DepthwiseConvOneDNN.apply(torch.unsqueeze(y, 2), torch.unsqueeze(k_l, 2), (0,) + pad)
            return torch.squeeze(out, 2)
        return DepthwiseConvOneDNN.apply(y, k_l, pad)
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
        """One ``baddbmm`` (:func:`torch_pointwise_linear`)."""
        return torch_pointwise_linear(_torch(), w, b, x)

    def split_channels(self, xp: Any, y: Any, sizes: list[int]) -> list[Any]:
        """``torch.split``: its backward writes the pieces' gradients into one array (one ``cat``),
        where a slice's backward zero-fills a gradient of the whole ``y`` per piece."""
        return list(_torch().split(y, list(sizes), dim=1))

    def pointwise_linear_sum(self, xp: Any, ws: list[Any], b: Any, xs: list[Any]) -> Any:
        """One ``baddbmm`` for the first term (bias fused), then one in-place ``baddbmm_`` per
        further term into the same output: no concatenated copy of the branches is made or kept
        for backward (a ``baddbmm`` saves its two matrices, never its output;
        :func:`torch_pointwise_linear_sum`)."""
        return torch_pointwise_linear_sum(_torch(), ws, b, xs)

    def pointwise_linear_sum_gelu(
        self, xp: Any, ws: list[Any], b: Any, xs: list[Any], gelu: list[bool], maps: list[Any]
    ) -> Any | None:
        """With a graph to record (outside torch.compile traces): ``GeluProductSum``, the calls of
        :meth:`pointwise_linear_sum` on a_i = GELU(x_i) (+ map_i), keeping x_i instead of a_i for
        backward. Else None (the same calls, composed)."""
        torch = _torch()
        present = [m for m in maps if m is not None]
        if torch.compiler.is_compiling() or not _records_graph(torch, b, *ws, *xs, *present):
            return None
        from ._torch_functions import GeluProductSum

        spec = tuple((bool(on), m is not None) for on, m in zip(gelu, maps, strict=True))
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
        :func:`_saves_output`), else ``instance_norm``. Per-sample statistics only, so any torch
        namespace (wrapped or not) may use it."""
        if spatial_size(x) < 2:  # batch_norm wants more than one value per statistic
            return None
        torch = _torch()
        if _records_graph(torch, x) and _saves_output(x):
            from ._torch_functions import InstanceStandardize

            return InstanceStandardize.apply(x, float(eps))[0]
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

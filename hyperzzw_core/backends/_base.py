"""The generic array-API backend: what every library gets unless its own backend does better.

Each method is one library-dependent step of an operator, written here against the array API
standard only (``xp`` is the caller's namespace, possibly a wrapper such as the torch adapter's
``global_batch_namespace``, so it is always passed in rather than stored). Library backends
(:mod:`._numpy`, :mod:`._torch`, :mod:`._cupy`, :mod:`._jax`) subclass :class:`ArrayAPIBackend`
and override only what their library does natively; the result must equal the generic formula to
rounding (the differential tests hold every backend to the reference).

Hooks named ``*_fast`` return ``None`` where the backend has no fast path; the operator module then
runs its generic formula. Nothing here imports an array library: a library's module is read from
``sys.modules`` (it is there whenever one of its arrays was passed in).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import array_api_compat

from .._erf import erf_portable

#: kernels with more taps than this use the FFT path on backends without a native convolution
FFT_MIN_TAPS = 256

#: Smallest kernel size (largest axis) from which the FFT path is used, per backend and dtype,
#: on inputs whose smallest spatial extent is at least ``FFT_MIN_SPATIAL``. Set from the
#: measurement of ``python -m benchmarks conv-threshold`` (forward + backward for torch, forward
#: for NumPy; B = 8, C = 32, H = W in 8…64, k in 3…17), recorded in docs/benchmarks.md (run of
#: 2026-11-21): from these sizes on the FFT path wins at every measured H ≥ FFT_MIN_SPATIAL. On
#: 8×8 inputs oneDNN's direct float32 kernel won up to k = 13; the other paths' FFT won there too,
#: but by less than a millisecond, so small inputs stay direct everywhere.
FFT_MIN_SPATIAL = 16
#: Largest number of positions per (b, c) (H·W, or L) at which the torch CPU training path runs the
#: depth-wise convolution as one dense matrix product per channel (:func:`depthwise_conv_dense`). Set
#: from forward + backward timings (B = 64, C in 12…96, float32; docs/speed.md): on 8×8 and on 40- and
#: 64-step inputs the dense product won at every k in 3…9 (0.2 to 0.6 of oneDNN's time), on 12×12 it
#: lost for k = 3 and on 16×16 and 256 steps it lost or tied.
DENSE_MAX_POSITIONS = 64
#: Smallest product O·I·N (multiply-adds per sample: O outputs, I inputs, N positions) at which the
#: torch CPU path runs a float32 point-wise linear W·x_b + β as oneDNN's matrix product, one call
#: per sample (:func:`hyperzzw_core.backends._torch.onednn_rows`), instead of one batched BLAS call.
#: Set from timings of both (B = 1, 8, 32; N = 64, 256, 1024; O, I = 36 to 288; one and four summed
#: terms; two threads; docs/speed.md): from 2^23 up oneDNN was 1.05 to 2.2x faster at every shape
#: measured; below, at 96×96 over 256 positions or 144×144 over 64, it lost (0.5 to 0.8x).
ONEDNN_MIN_PRODUCT = 2**23
FFT_MIN_KERNEL = {
    ("torch-cpu", "float32"): 17,  # direct = oneDNN depth-wise conv (k = 13 lost at H = 16 and 64)
    ("torch-cpu", "float64"): 5,  # direct = ATen's native (non-oneDNN) depth-wise conv
    ("numpy", "float32"): 5,  # direct = the sliding-window einsum (k = 3 lost at H = 32)
    ("numpy", "float64"): 5,
}


def dtype_name(dt: Any) -> str:
    """A library-independent dtype name: ``float32`` for NumPy, torch and array-api-strict alike."""
    if isinstance(dt, type):  # NumPy scalar types (np.float64), as in array_api_compat.numpy
        return dt.__name__
    return str(dt).rsplit(".", 1)[-1]


def spatial_size(x: Any) -> int:
    """Π x.shape[2:] (the number of positions per (b, c))."""
    n = 1
    for s in x.shape[2:]:
        n *= int(s)
    return n


def as_matrices(xp: Any, x: Any, grid: tuple[int, int] | None) -> Any:
    """(B, C, H, W) as is; (…, L) laid row-major on its (h, w) grid, zero-padded after position L
    (h·w ≥ L; the reference's ``_as_matrices``, spec §5 Q1, docs/spec-1d.md)."""
    if x.ndim == 4:
        return x
    if grid is None:
        raise ValueError(f"grid: a sequence of shape {tuple(x.shape)} needs its (h, w) grid, got None")
    h, w = (int(g) for g in grid)
    lead, pad = tuple(x.shape[:-1]), h * w - int(x.shape[-1])
    if pad:
        x = xp.concat([x, xp.zeros(lead + (pad,), dtype=x.dtype, device=array_api_compat.device(x))], axis=-1)
    return xp.reshape(x, lead + (h, w))


def from_matrices(xp: Any, m: Any, shape: tuple[int, ...]) -> Any:
    """Inverse of :func:`as_matrices`: back to ``shape``, dropping the padded positions (1D)."""
    if len(shape) == 4:
        return m
    return xp.reshape(m, tuple(m.shape[:-2]) + (-1,))[..., : shape[-1]]


def zero_pad(xp: Any, y: Any, pads: Sequence[int]) -> Any:
    """Zero-pad the spatial axes (2, 3, …) of ``y`` symmetrically by ``pads`` with ``xp.concat``."""
    dev = array_api_compat.device(y)
    for a, p in enumerate(pads):
        if p == 0:
            continue
        ax = 2 + a
        shape = list(y.shape)
        shape[ax] = p
        z = xp.zeros(tuple(shape), dtype=y.dtype, device=dev)
        y = xp.concat([z, y, z], axis=ax)
    return y


def depthwise_conv_direct(xp: Any, y: Any, k_l: Any) -> Any:
    """Portable 'same' depth-wise cross-correlation: a sum of shifted slices (standard only).

    out[b,c,p] = Σ_o k_l[c,0,o]·y_pad[b,c,p+o]; y (B, C, *S), k_l (C, 1, *k) → (B, C, *S)
    (spec §2.3).
    """
    ksize = tuple(k_l.shape[2:])
    spatial = tuple(y.shape[2:])
    yp = zero_pad(xp, y, [(k - 1) // 2 for k in ksize])
    c = k_l.shape[0]
    wshape = (1, c) + (1,) * len(spatial)
    out = xp.zeros(tuple(y.shape), dtype=y.dtype, device=array_api_compat.device(y))
    for off in itertools.product(*(range(k) for k in ksize)):
        w = xp.reshape(k_l[(slice(None), 0) + off], wshape)
        win = (slice(None), slice(None)) + tuple(slice(o, o + n) for o, n in zip(off, spatial, strict=True))
        out = out + w * yp[win]
    return out


def depthwise_conv_fft(xp: Any, y: Any, k_l: Any) -> Any:
    """The same 'same' cross-correlation by FFT (the standard's ``fft`` extension; real inputs).

    Correlation = convolution with the flipped kernel; the full linear convolution of length
    n + k − 1 per axis is cropped to the centre [(k−1)/2, (k−1)/2 + n).
    """
    d = y.ndim - 2
    axes = tuple(range(2, 2 + d))
    ksize = tuple(k_l.shape[2:])
    spatial = tuple(y.shape[2:])
    full = tuple(n + k - 1 for n, k in zip(spatial, ksize, strict=True))
    kern = xp.flip(xp.reshape(k_l, (1, k_l.shape[0]) + ksize), axis=axes)
    prod = xp.fft.rfftn(y, s=full, axes=axes) * xp.fft.rfftn(kern, s=full, axes=axes)
    out = xp.fft.irfftn(prod, s=full, axes=axes)
    crop = (slice(None), slice(None)) + tuple(
        slice((k - 1) // 2, (k - 1) // 2 + n) for k, n in zip(ksize, spatial, strict=True)
    )
    return xp.astype(out[crop], y.dtype)


def dense_selection(xp: Any, spatial: Sequence[int], ksize: Sequence[int], *, dtype: Any, device: Any) -> Any:
    """The 0/1 matrix S (K, N·N) with S[o, q·N + p] = 1 exactly where input position q is seen by
    output position p through kernel tap o: q = p + o − (k − 1)/2 on every axis, inside the input
    (K = Π k, N = Π spatial; positions and taps flattened row-major). Built on ``device`` from
    index arithmetic only (standard functions, so that torch.compile traces it)."""
    spatial, ksize = tuple(int(v) for v in spatial), tuple(int(k) for k in ksize)
    n, taps = 1, 1
    for v in spatial:
        n *= v
    for k in ksize:
        taps *= k
    p = xp.reshape(xp.arange(n, device=device), (1, 1, n))  # output positions
    o = xp.reshape(xp.arange(taps, device=device), (taps, 1, 1))  # kernel taps
    q = xp.zeros((taps, 1, n), dtype=p.dtype, device=device)  # flat input position
    inside = xp.ones((taps, 1, n), dtype=xp.bool, device=device)
    p_stride, o_stride = n, taps
    for size, k in zip(spatial, ksize, strict=True):
        p_stride, o_stride = p_stride // size, o_stride // k
        q_a = (p // p_stride) % size + (o // o_stride) % k - (k - 1) // 2
        inside = xp.logical_and(inside, xp.logical_and(q_a >= 0, q_a < size))
        q = q + q_a * p_stride
    rows = xp.reshape(xp.arange(n, device=device), (1, n, 1))  # q, the middle axis of (K, N, N)
    hit = xp.logical_and(inside, q == rows)
    return xp.reshape(xp.astype(hit, dtype), (taps, n * n))


def depthwise_conv_dense(xp: Any, y: Any, k_l: Any, selection: Any) -> Any:
    """The same 'same' cross-correlation as one dense matrix product per channel (small inputs).

    out[b,c,p] = Σ_q y[b,c,q]·T[c,q,p] with T[c,q,p] = k_l[c,0,q − p + (k−1)/2] where that tap
    exists, else 0 (spec §2.3). T is built as k_l (C, K) @ ``selection`` (K, N·N), the constant of
    :func:`dense_selection` in y's dtype and device, so that forward and backward are matrix
    products only: O(B·C·N²) work against O(B·C·N·K) for the direct sum, and faster for N ≤
    ``DENSE_MAX_POSITIONS``. Shapes: y (B, C, *S), k_l (C, 1, *k) → (B, C, *S).
    """
    b, c, n = int(y.shape[0]), int(y.shape[1]), spatial_size(y)
    t = xp.reshape(xp.reshape(k_l, (c, -1)) @ selection, (c, n, n))  # T[c, q, p]
    per_channel = xp.permute_dims(xp.reshape(y, (b, c, n)), (1, 0, 2))  # (C, B, N)
    out = xp.permute_dims(per_channel @ t, (1, 0, 2))  # (B, C, N), channel-major in memory
    # merging C with N cannot be a view of that layout: the reshape writes y's own (B, C, *S) order
    return xp.reshape(xp.reshape(out, (b, c * n)), tuple(y.shape))


_CONSTANTS: dict[tuple, Any] = {}
_CONSTANTS_MAX = 256


def clear_constants() -> None:
    """Forget every cached constant of :meth:`ArrayAPIBackend.cached` (rebuilt on next use)."""
    _CONSTANTS.clear()


class ArrayAPIBackend:
    """Any array-API namespace (array-api-strict, ndonnx, dask, …): the standard and nothing else."""

    #: short name, for messages and cache keys
    name: ClassVar[str] = "array-api"
    #: ``__name__`` of the namespaces this backend serves (a wrapper forwarding ``__name__`` counts)
    namespace_names: ClassVar[tuple[str, ...]] = ()
    #: names of the modules that ``like=`` may pass for this library
    module_names: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -------------------------------------------------------------------- namespaces, devices

    def standard_namespace(self, module: Any) -> Any:
        """The array-API namespace for a module passed as ``like=`` (itself, by default)."""
        return module

    def device(self, x: Any) -> Any:
        """The device of ``x``."""
        return array_api_compat.device(x)

    def same_device(self, a: Any, b: Any) -> bool:
        """Whether two devices (as returned by :meth:`device`) are the same one."""
        return a == b

    def is_lazy(self, x: Any) -> bool:
        """True where the values of ``x`` cannot be read without tracing (JAX jit, Dask, …)."""
        return array_api_compat.is_lazy_array(x)

    def all_finite(self, xp: Any, x: Any) -> bool | None:
        """Whether ``x`` holds no NaN or Inf (one boolean read back), or None where the values cannot
        be read (lazy arrays)."""
        if self.is_lazy(x):
            return None
        return bool(xp.all(xp.isfinite(x)))

    def owns_host_arrays(self, device: Any) -> bool:
        """Whether host NumPy arrays already are this library's arrays on ``device`` (no copy)."""
        return False

    # ------------------------------------------------------------------------------ constants

    def work_dtype(self, xp: Any, dtype: Any, dev: Any) -> Any:
        """float64 when ``dev`` supports it (for host-exact constants), else ``dtype`` itself."""
        if dtype == xp.float64:
            return dtype
        try:
            supported = xp.__array_namespace_info__().dtypes(device=dev, kind="real floating")
        except (AttributeError, TypeError, ValueError):
            return xp.float64
        return xp.float64 if "float64" in supported else dtype

    def cache_key(self, key: tuple, dtype: Any, dev: Any) -> tuple | None:
        """The cache key of a size-only constant, or None where it must not be cached (here: never
        cached, since an array may be lazy or device-bound in ways a key cannot see)."""
        return None

    def freeze(self, x: Any) -> Any:
        """Make a cached constant read-only where the library can (NumPy); else ``x``."""
        return x

    def cached(self, xp: Any, key: tuple, builder: Any, *, dtype: Any, device: Any) -> Any:
        """``builder()`` (an array of ``dtype`` on ``device``), built once per key, dtype and device.

        For constants that depend on sizes only (coordinate grids, pooling matrices, the dense
        convolution's selection matrix); :meth:`cache_key` says how to key them, or that they must
        not be cached. The cached array is shared: callers must not modify it in place (NumPy
        copies are made read-only).
        """
        ck = self.cache_key(key, dtype, device)
        if ck is None:
            return builder()
        hit = _CONSTANTS.get(ck)
        if hit is None:
            hit = self.freeze(builder())
            if len(_CONSTANTS) >= _CONSTANTS_MAX:
                _CONSTANTS.clear()
            _CONSTANTS[ck] = hit
        return hit

    # ------------------------------------------------------------------- autodiff, elementwise

    def stop_gradient(self, xp: Any, x: Any) -> Any:
        """Block gradients through ``x`` (identity for libraries without autodiff)."""
        return x

    def sigmoid(self, xp: Any, x: Any) -> Any:
        """Logistic sigmoid without overflow: e^{−|x|} on both branches."""
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def erf(self, xp: Any, x: Any) -> Any:
        """The error function in the input's dtype (the portable form; not in the standard)."""
        return erf_portable(xp, x)

    def gelu(self, xp: Any, x: Any, sqrt_half: float) -> Any:
        """Exact (erf) GELU x·Φ(x) = x·(1 + erf(x/√2))/2 (spec §2 "Conventions")."""
        return x * (0.5 * (1.0 + self.erf(xp, x * sqrt_half)))

    def silu(self, xp: Any, x: Any) -> Any:
        """σ(x)·x."""
        return self.sigmoid(xp, x) * x

    # --------------------------------------------------------------------------- fast paths

    def sum_of_norms(self, xp: Any, arrays: Sequence[Any]) -> Any:
        """Σ_i ‖a_i‖₂ over a non-empty list, each the Frobenius norm of the flattened array, added in
        order: the §2.13 regulariser."""
        out = None
        for a in arrays:
            n = xp.linalg.vector_norm(xp.reshape(a, (-1,)))
            out = n if out is None else out + n
        return out

    def pointwise_linear(self, xp: Any, w: Any, b: Any, x: Any) -> Any:
        """y[b] = W·x[b] + β for x (B, I, N), W (O, I), β (O,) → (B, O, N) (spec §2 "Conventions")."""
        return w @ x + xp.reshape(b, (-1, 1))

    def split_channels(self, xp: Any, y: Any, sizes: list[int]) -> list[Any]:
        """``y`` (B, Σ sizes, *S) cut along the channel axis into consecutive pieces of ``sizes``."""
        outs, start = [], 0
        for n in sizes:
            outs.append(y[:, start : start + n, ...])
            start += n
        return outs

    def pointwise_linear_sum(self, xp: Any, ws: list[Any], b: Any, xs: list[Any]) -> Any:
        """y[b] = Σ_i W_i·x_i[b] + β for x_i (B, I_i, N), W_i (O, I_i), β (O,) → (B, O, N).

        W·concat(x_1, …, x_n) with W = [W_1 … W_n] split by columns, without the concatenation:
        the bottleneck over its branches (spec §2.10) and the two RGUs' summed W_Y (§1.3).
        """
        y = ws[0] @ xs[0] + xp.reshape(b, (-1, 1))
        for w, x in zip(ws[1:], xs[1:], strict=True):
            y = y + w @ x
        return y

    def instance_standardize_fast(self, xp: Any, x: Any, eps: float) -> Any | None:
        """IS by a native kernel, or None (the operator's generic formula)."""
        return None

    def batch_standardize_fast(self, xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any | None:
        """BS over ``axes`` by a native kernel, or None (the operator's generic formula)."""
        return None

    def pointwise_linear_sum_gelu(
        self, xp: Any, ws: list[Any], b: Any, xs: list[Any], gelu: list[bool], maps: list[Any]
    ) -> Any | None:
        """Σ_i W_i·a_i + β with a_i = GELU(x_i) where ``gelu[i]`` (else x_i), plus ``maps[i]`` (N,)
        where not None, as (B, O, N) by one fused operator, or None (the activations, then
        ``pointwise_linear_sum``)."""
        return None

    def gated_pointwise_linear(
        self, xp: Any, k: Any, w: Any, b: Any, v: Any, source: tuple[Any, Any, Any] | None = None
    ) -> Any | None:
        """K ⊙ (W·V + β) for K, V (B, C, N), W (O, C), β (O,) (the RGU's gate, spec §2.5) as
        (B, O, N) by one fused operator, or None (the product, then the gate). ``source``: None,
        or (W_s, β_s, X) with K and V the channels [0, C) and [C, 2C) of ``pointwise_linear(W_s,
        β_s, X)``, from which the operator may recompute them for backward instead of keeping
        them."""
        return None

    def depthwise_mixer_fast(self, xp: Any, y: Any, k_l: Any, w: Any, b: Any) -> Any | None:
        """W·DWConv(Y, K_l) + β (a local branch's mixer of its depth-wise convolution; spec §2.3) as
        (B, O, N) by one fused operator, or None (the composition of the two)."""
        return None

    def g_ibs_fast(self, xp: Any, x: Any, groups: int, eps: float) -> Any | None:
        """G-IBS by one fused kernel, or None (the operator's generic formula)."""
        return None

    def gate_fast(self, xp: Any, x: Any, k_ss: Any, s_s: Any, k_cc: Any, s_c: Any) -> Any | None:
        """The hyper-interaction gate X ⊙ σ(K_ss·s_s² · K_cc·s_c²) fused, or None (spec §2.8)."""
        return None

    def global_product(self, xp: Any, z: Any, k_g: Any, y: Any, grid: tuple[int, int] | None, zhat: Any = None) -> Any:
        """G = (Z ⊙ K_g) @ Y per (b, c) (spec §2.2); ``zhat`` = Z ⊙ K_g where the caller has it.

        z, y (B, C, H, W), or (B, C, L) with ``grid`` = (h, w); k_g broadcastable to z.
        """
        zhat = z * k_g if zhat is None else zhat
        return from_matrices(xp, as_matrices(xp, zhat, grid) @ as_matrices(xp, y, grid), tuple(zhat.shape))

    def global_products(
        self, xp: Any, z: Any, k_g: Any, ys: Sequence[Any], grid: tuple[int, int] | None, zhat: Any = None
    ) -> list[Any]:
        """[G_j = (Z ⊙ K_g) @ Y_j for Y_j in ``ys``] (spec §2.2): the global products of one block,
        which share Ẑ = Z ⊙ K_g (``zhat`` where the caller has it); here one
        :meth:`global_product` each."""
        zhat = z * k_g if zhat is None else zhat
        return [self.global_product(xp, z, k_g, y, grid, zhat=zhat) for y in ys]

    # --------------------------------------------------------------------------- convolution

    def depthwise_method(self, xp: Any, y: Any, k_l: Any) -> str:
        """``"direct"``, ``"fft"`` or ``"dense"``; here: FFT from ``FFT_MIN_TAPS`` taps where
        ``xp.fft`` exists, else direct."""
        taps = 1
        for v in k_l.shape[2:]:
            taps *= int(v)
        return "fft" if taps > FFT_MIN_TAPS and hasattr(xp, "fft") else "direct"

    def depthwise_direct(self, xp: Any, y: Any, k_l: Any) -> Any:
        """The direct 'same' depth-wise cross-correlation (the portable shifted-slices sum)."""
        return depthwise_conv_direct(xp, y, k_l)

    def depthwise_conv(self, xp: Any, y: Any, k_l: Any) -> Any:
        """Depth-wise 'same' cross-correlation by the fastest of the direct, FFT and dense paths
        (:meth:`depthwise_method`; validated inputs; spec §2.3)."""
        method = self.depthwise_method(xp, y, k_l)
        if method == "fft":
            return depthwise_conv_fft(xp, y, k_l)
        if method == "dense":
            return depthwise_conv_dense(xp, y, k_l, self.dense_selection(xp, y, k_l))
        return self.depthwise_direct(xp, y, k_l)

    def dense_selection(self, xp: Any, y: Any, k_l: Any) -> Any:
        """:func:`dense_selection` for y and k_l, in y's dtype on its device (cached)."""
        spatial, ksize, dt, dev = tuple(y.shape[2:]), tuple(k_l.shape[2:]), y.dtype, self.device(y)
        return self.cached(
            xp,
            ("dense-conv", spatial, ksize),
            lambda: dense_selection(xp, spatial, ksize, dtype=dt, device=dev),
            dtype=dt,
            device=dev,
        )

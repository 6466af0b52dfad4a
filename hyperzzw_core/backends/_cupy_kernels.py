"""Fused CUDA kernels for CuPy (issue 8): forward and backward of the hot HyperZ·Z·W operators.

* ``global_product`` — (Z ⊙ K_g) @ Y with the Hadamard product fused into the shared-memory tile
  loads of a batched tiled matmul (one grid slice per (b, c)).
* ``standardize`` / ``standardize_vjp`` — IS, BS and G-IBS: per-group mean and M2 by Welford's
  one-pass update, merged across threads with Chan's formula, always accumulated in float64
  (float32 inputs too), then one element-wise pass. The VJP reduces Σg and Σg·y in one pass.
* ``gate`` — HyperZZW_2E + sigmoid of the hyper interaction in one element-wise kernel:
  X ⊙ σ(K_ss·s_s² · K_cc·s_c²), without materialising the score tensor.
* ``depthwise_conv`` / ``depthwise_conv_vjp`` — direct 'same' cross-correlation for 1D/2D and odd
  kernels (tuned for the local sizes 3-9); the input gradient is the flipped-kernel correlation,
  the kernel gradient a float64-accumulated reduction per (channel, tap).

This module imports CuPy at import time: import it only after checking that CuPy is usable
(``hyperzzw_core.adapters.cupy`` does that and raises one clear error otherwise).
"""

from __future__ import annotations

import math
from functools import cache

import cupy as cp

TILE = 16
THREADS = 256

_GLOBAL_SRC = r"""
extern "C" __global__ void hzzw_global_T(const T* __restrict__ z, const T* __restrict__ k,
                                         const T* __restrict__ y, T* __restrict__ out,
                                         const int C, const int N) {
    // z, y, out: (B*C, N, N) contiguous; k: (C, N, N) contiguous (broadcast over the batch)
    __shared__ T As[TILE][TILE + 1];
    __shared__ T Bs[TILE][TILE + 1];
    const long long bc = blockIdx.x;
    const int c = (int)(bc % C);
    const int row = blockIdx.y * TILE + threadIdx.y;
    const int col = blockIdx.z * TILE + threadIdx.x;
    const long long NN = (long long)N * N;
    const T* zb = z + bc * NN;
    const T* kc = k + (long long)c * NN;
    const T* yb = y + bc * NN;
    T acc = (T)0;
    for (int t = 0; t < (N + TILE - 1) / TILE; ++t) {
        const int acol = t * TILE + threadIdx.x;
        const int brow = t * TILE + threadIdx.y;
        As[threadIdx.y][threadIdx.x] = (row < N && acol < N)
            ? zb[(long long)row * N + acol] * kc[(long long)row * N + acol] : (T)0;
        Bs[threadIdx.y][threadIdx.x] = (brow < N && col < N) ? yb[(long long)brow * N + col] : (T)0;
        __syncthreads();
        #pragma unroll
        for (int m = 0; m < TILE; ++m) acc += As[threadIdx.y][m] * Bs[m][threadIdx.x];
        __syncthreads();
    }
    if (row < N && col < N) out[bc * NN + (long long)row * N + col] = acc;
}
"""

_STATS_SRC = r"""
// Welford statistics of G groups. Group g holds `outer` runs of `inner` contiguous elements;
// run o of group g starts at x + (o * G + g) * inner  (IS: outer = 1, G = B*C; BS: outer = B, G = C).
extern "C" __global__ void hzzw_stats_T(const T* __restrict__ x, double* __restrict__ mean,
                                        double* __restrict__ m2, const int G, const int outer,
                                        const long long inner) {
    __shared__ double s_n[THREADS];
    __shared__ double s_mean[THREADS];
    __shared__ double s_m2[THREADS];
    const int g = blockIdx.x;
    const long long total = (long long)outer * inner;
    double n = 0.0, mu = 0.0, M2 = 0.0;
    for (long long i = threadIdx.x; i < total; i += blockDim.x) {
        const long long o = i / inner, j = i % inner;
        const double v = (double)x[(o * G + g) * inner + j];
        n += 1.0;
        const double d = v - mu;
        mu += d / n;
        M2 += d * (v - mu);
    }
    s_n[threadIdx.x] = n; s_mean[threadIdx.x] = mu; s_m2[threadIdx.x] = M2;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const double na = s_n[threadIdx.x], nb = s_n[threadIdx.x + s];
            const double nab = na + nb;
            if (nab > 0.0) {
                const double d = s_mean[threadIdx.x + s] - s_mean[threadIdx.x];
                s_mean[threadIdx.x] += d * nb / nab;
                s_m2[threadIdx.x] += s_m2[threadIdx.x + s] + d * d * na * nb / nab;
                s_n[threadIdx.x] = nab;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { mean[g] = s_mean[0]; m2[g] = s_m2[0]; }
}

// Σ g and Σ g·y per group (for the standardisation VJP), accumulated in double.
extern "C" __global__ void hzzw_grad_sums_T(const T* __restrict__ g, const T* __restrict__ y,
                                            double* __restrict__ sg, double* __restrict__ sgy,
                                            const int G, const int outer, const long long inner) {
    __shared__ double a[THREADS];
    __shared__ double b[THREADS];
    const int grp = blockIdx.x;
    const long long total = (long long)outer * inner;
    double s1 = 0.0, s2 = 0.0;
    for (long long i = threadIdx.x; i < total; i += blockDim.x) {
        const long long o = i / inner, j = i % inner;
        const long long idx = (o * G + grp) * inner + j;
        const double gv = (double)g[idx];
        s1 += gv;
        s2 += gv * (double)y[idx];
    }
    a[threadIdx.x] = s1; b[threadIdx.x] = s2;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) { a[threadIdx.x] += a[threadIdx.x + s]; b[threadIdx.x] += b[threadIdx.x + s]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) { sg[grp] = a[0]; sgy[grp] = b[0]; }
}
"""

_CONV_SRC = r"""
// 'same' depth-wise cross-correlation; x, out: (B, C, H, W) (1D: H = 1, kh = 1); w: (C, kh, kw).
extern "C" __global__ void hzzw_dwconv_T(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                                         const int C, const int H, const int W, const int kh, const int kw,
                                         const long long total) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int col = (int)(idx % W);
    const int row = (int)((idx / W) % H);
    const long long bc = idx / ((long long)H * W);
    const int c = (int)(bc % C);
    const int ph = (kh - 1) / 2, pw = (kw - 1) / 2;
    const T* xb = x + bc * H * W;
    const T* wc = w + (long long)c * kh * kw;
    T acc = (T)0;
    for (int i = 0; i < kh; ++i) {
        const int r = row + i - ph;
        if (r < 0 || r >= H) continue;
        for (int j = 0; j < kw; ++j) {
            const int q = col + j - pw;
            if (q < 0 || q >= W) continue;
            acc += wc[i * kw + j] * xb[(long long)r * W + q];
        }
    }
    out[idx] = acc;
}

// Kernel gradient: gw[c, i, j] = Σ_{b,row,col} g[b,c,row,col] · x_pad[b,c,row+i,col+j]; one block per (c, tap).
extern "C" __global__ void hzzw_dwconv_gw_T(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ gw,
                                            const int B, const int C, const int H, const int W,
                                            const int kh, const int kw) {
    __shared__ double acc_s[THREADS];
    const int c = blockIdx.x / (kh * kw);
    const int tap = blockIdx.x % (kh * kw);
    const int i = tap / kw, j = tap % kw;
    const int ph = (kh - 1) / 2, pw = (kw - 1) / 2;
    const long long per = (long long)B * H * W;
    double acc = 0.0;
    for (long long t = threadIdx.x; t < per; t += blockDim.x) {
        const int col = (int)(t % W);
        const int row = (int)((t / W) % H);
        const long long b = t / ((long long)H * W);
        const int r = row + i - ph, q = col + j - pw;
        if (r < 0 || r >= H || q < 0 || q >= W) continue;
        const long long base = (b * C + c) * H * W;
        acc += (double)g[base + (long long)row * W + col] * (double)x[base + (long long)r * W + q];
    }
    acc_s[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) acc_s[threadIdx.x] += acc_s[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) gw[(long long)c * kh * kw + tap] = (T)acc_s[0];
}
"""


def _ctype(dtype) -> str:
    dt = cp.dtype(dtype)
    if dt == cp.float32:
        return "float"
    if dt == cp.float64:
        return "double"
    raise TypeError(f"the CuPy kernels take float32 or float64, got {dt}")


@cache
def _kernel(src: str, name: str, ctype: str) -> cp.RawKernel:
    """Compile ``name`` from ``src`` for one element type (T); kernels are suffixed with it."""
    code = f"typedef {ctype} T;\n#define TILE {TILE}\n#define THREADS {THREADS}\n" + src.replace("_T(", f"_{ctype}(")
    return cp.RawKernel(code, f"{name}_{ctype}")


# ------------------------------------------------------------------------- global product


def global_product(z: cp.ndarray, k: cp.ndarray, y: cp.ndarray) -> cp.ndarray:
    """(Z ⊙ K) @ Y for z, y (B, C, N, N) and k (C, N, N), the Hadamard product fused into the tiles."""
    z, k, y = (cp.ascontiguousarray(a) for a in (z, k, y))
    b, c, n, _ = z.shape
    out = cp.empty_like(z)
    kern = _kernel(_GLOBAL_SRC, "hzzw_global", _ctype(z.dtype))
    grid = (b * c, math.ceil(n / TILE), math.ceil(n / TILE))
    kern(grid, (TILE, TILE), (z, k, y, out, cp.int32(c), cp.int32(n)))
    return out


def global_product_vjp(z: cp.ndarray, k: cp.ndarray, y: cp.ndarray, g: cp.ndarray):
    """(gz, gk, gy) of :func:`global_product` (batched cuBLAS products for the transposes)."""
    zhat = z * k
    gzhat = cp.matmul(g, cp.swapaxes(y, -1, -2))
    gy = cp.matmul(cp.swapaxes(zhat, -1, -2), g)
    return gzhat * k, (gzhat * z).sum(axis=0), gy


# -------------------------------------------------------------------------- standardisation


def _layout(x: cp.ndarray, mode: str) -> tuple[int, int, int]:
    """(groups, outer, inner) of x (B, C, *S) for mode 'instance' or 'batch'."""
    b, c = x.shape[:2]
    inner = math.prod(x.shape[2:])
    return (b * c, 1, inner) if mode == "instance" else (c, b, inner)


def _stats(x: cp.ndarray, mode: str) -> tuple[cp.ndarray, cp.ndarray]:
    groups, outer, inner = _layout(x, mode)
    mean = cp.empty(groups, dtype=cp.float64)
    m2 = cp.empty(groups, dtype=cp.float64)
    _kernel(_STATS_SRC, "hzzw_stats", _ctype(x.dtype))(
        (groups,), (THREADS,), (x, mean, m2, cp.int32(groups), cp.int32(outer), cp.int64(inner))
    )
    return mean, m2 / (outer * inner)


def _per_element(v: cp.ndarray, x: cp.ndarray, mode: str) -> cp.ndarray:
    b, c = x.shape[:2]
    shape = (b, c) if mode == "instance" else (1, c)
    return v.reshape(shape + (1,) * (x.ndim - 2))


_NORMALIZE = cp.ElementwiseKernel(
    "T x, float64 mean, float64 rstd", "T y", "y = (T)(((double)x - mean) * rstd)", "hzzw_normalize"
)


def standardize(x: cp.ndarray, mode: str, eps: float) -> cp.ndarray:
    """IS (mode 'instance') or BS (mode 'batch') with Welford float64 statistics."""
    x = cp.ascontiguousarray(x)
    mean, var = _stats(x, mode)
    rstd = 1.0 / cp.sqrt(var + eps)
    return _NORMALIZE(x, _per_element(mean, x, mode), _per_element(rstd, x, mode))


_STD_VJP = cp.ElementwiseKernel(
    "T g, T y, float64 rstd, float64 mg, float64 mgy",
    "T gx",
    "gx = (T)(rstd * ((double)g - mg - (double)y * mgy))",
    "hzzw_standardize_vjp",
)


def standardize_vjp(x: cp.ndarray, g: cp.ndarray, mode: str, eps: float) -> cp.ndarray:
    """gx = r·(g − mean(g) − y·mean(g·y)) per group, sums accumulated in float64."""
    x, g = cp.ascontiguousarray(x), cp.ascontiguousarray(g)
    mean, var = _stats(x, mode)
    rstd = 1.0 / cp.sqrt(var + eps)
    y = _NORMALIZE(x, _per_element(mean, x, mode), _per_element(rstd, x, mode))
    groups, outer, inner = _layout(x, mode)
    sg = cp.empty(groups, dtype=cp.float64)
    sgy = cp.empty(groups, dtype=cp.float64)
    _kernel(_STATS_SRC, "hzzw_grad_sums", _ctype(x.dtype))(
        (groups,), (THREADS,), (g, y, sg, sgy, cp.int32(groups), cp.int32(outer), cp.int64(inner))
    )
    n = outer * inner
    return _STD_VJP(g, y, _per_element(rstd, x, mode), _per_element(sg / n, x, mode), _per_element(sgy / n, x, mode))


def g_ibs(x: cp.ndarray, groups: int, eps: float) -> cp.ndarray:
    """G-IBS: even channel groups BS, odd groups IS (both statistics from the fused kernels)."""
    size = x.shape[1] // groups
    bs, inst = standardize(x, "batch", eps), standardize(x, "instance", eps)
    use_bs = ((cp.arange(x.shape[1]) // size) % 2 == 0).reshape((1, -1) + (1,) * (x.ndim - 2))
    return cp.where(use_bs, bs, inst)


def g_ibs_vjp(x: cp.ndarray, g: cp.ndarray, groups: int, eps: float) -> cp.ndarray:
    size = x.shape[1] // groups
    use_bs = ((cp.arange(x.shape[1]) // size) % 2 == 0).reshape((1, -1) + (1,) * (x.ndim - 2))
    return cp.where(use_bs, standardize_vjp(x, g, "batch", eps), standardize_vjp(x, g, "instance", eps))


# --------------------------------------------------------------------- 2E + sigmoid gate

_GATE = cp.ElementwiseKernel(
    "T x, T kss, T ss, T kcc, T sc",
    "T out",
    "const double e = (double)kss * (double)ss * (double)ss * (double)kcc * (double)sc * (double)sc;"
    "out = (T)((double)x / (1.0 + exp(-e)))",
    "hzzw_hi_gate",
)


def gate(x: cp.ndarray, k_ss: cp.ndarray, s_s: cp.ndarray, k_cc: cp.ndarray, s_c: cp.ndarray) -> cp.ndarray:
    """X ⊙ σ((K_ss ⊙ s_s²)[:, None] ⊙ (K_cc ⊙ s_c²)[..., None…]) in one pass (hyper interaction, §2.8).

    Shapes: x (B, C, *S), k_ss (*S), s_s (B, *S), k_cc (C,), s_c (B, C).
    """
    d = x.ndim - 2
    per_channel = (1, -1) + (1,) * d
    return _GATE(x, k_ss[None, None], s_s[:, None], k_cc.reshape(per_channel), s_c.reshape(s_c.shape + (1,) * d))


# ---------------------------------------------------------------------- depth-wise conv


def _as_2d(x: cp.ndarray) -> cp.ndarray:
    return x[:, :, None, :] if x.ndim == 3 else x


def depthwise_conv(y: cp.ndarray, k_l: cp.ndarray) -> cp.ndarray:
    """'same' depth-wise cross-correlation, y (B, C, L|H, W), k_l (C, 1, k[, k]), odd k."""
    one_d = y.ndim == 3
    x = cp.ascontiguousarray(_as_2d(y))
    w = cp.ascontiguousarray(k_l[:, 0] if not one_d else k_l[:, 0][:, None, :])
    _b, c, h, wd = x.shape
    kh, kw = w.shape[1:]
    out = cp.empty_like(x)
    total = x.size
    _kernel(_CONV_SRC, "hzzw_dwconv", _ctype(x.dtype))(
        (math.ceil(total / THREADS),),
        (THREADS,),
        (x, w, out, cp.int32(c), cp.int32(h), cp.int32(wd), cp.int32(kh), cp.int32(kw), cp.int64(total)),
    )
    return out[:, :, 0] if one_d else out


def depthwise_conv_vjp(y: cp.ndarray, k_l: cp.ndarray, g: cp.ndarray):
    """(grad_y, grad_k_l): the flipped-kernel correlation, and a float64 reduction per (channel, tap)."""
    one_d = y.ndim == 3
    flipped = k_l[(slice(None), slice(None)) + (slice(None, None, -1),) * (y.ndim - 2)]
    gy = depthwise_conv(g, cp.ascontiguousarray(flipped))
    x = cp.ascontiguousarray(_as_2d(y))
    gg = cp.ascontiguousarray(_as_2d(g))
    b, c, h, wd = x.shape
    kh, kw = (1, k_l.shape[2]) if one_d else k_l.shape[2:]
    gw = cp.empty((c, kh, kw), dtype=x.dtype)
    _kernel(_CONV_SRC, "hzzw_dwconv_gw", _ctype(x.dtype))(
        (c * kh * kw,),
        (THREADS,),
        (x, gg, gw, cp.int32(b), cp.int32(c), cp.int32(h), cp.int32(wd), cp.int32(kh), cp.int32(kw)),
    )
    return gy, (gw[:, 0] if one_d else gw)[:, None]

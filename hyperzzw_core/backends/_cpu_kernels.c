/*
 * hyperzzw_core.backends._cpu_kernels: compiled CPU kernels for the torch backend (docs/speed.md,
 * "Sixteenth session" and "Seventeenth session"). Optional: where it does not build, the torch
 * backend takes torch's own kernels (oneDNN's convolutions, the native batch norm, the batched
 * matrix product) for the same quantities.
 *
 * depthwise_conv, linear_rows (with linear_pack and linear_rows_packed), standardize,
 * global_products and global_products_backward: see below.
 *
 * depthwise_weight_grad: the weight gradient of a depth-wise 'same' correlation (spec §2.3,
 * the local branch's D = k_l ⊛ Y), float32 in, float64 out:
 *
 *     out[c, i, j] = Σ_b Σ_{h,w} G[b, c, h, w] · Y[b, c, h + i − ph, w + j − pw]
 *
 * with Y (B, C, H, W) and G (B, C, H, W) contiguous NCHW, zero outside the image, ph = kh // 2,
 * pw = kw // 2 (odd kh, kw; kw ∈ {1, 3, 5, 7, 9}). oneDNN's depth-wise weight gradient runs at
 * about 25 GFLOP/s on two cores and needs channels-last copies of both inputs; this kernel reads
 * NCHW as it lies.
 *
 * Per channel and sample, the image pair is copied into zero-padded buffers, then for every group
 * of IB kernel rows and every 16 columns, IB·kw accumulators of 16 lanes stay in registers while
 * the rows stream by: each loaded row of Y serves IB kernel rows, each loaded row of G serves kw
 * columns. A sample's sums (at most H products per lane) are float32; the 16 lanes and the samples
 * are added in float64, so the result is more accurate than a float32 sum over all B·H·W products
 * (tests/test_cpu_kernels.py measures both against float64).
 *
 * The channels are split evenly over `threads` OpenMP threads; the GIL is released during the
 * call. On x86-64 with GCC, the kernel is compiled for x86-64-v4
 * (AVX-512), v3 (AVX2) and the baseline, and the loader picks the one the CPU runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
#define VL 16

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TARGETS
#endif

#define INLINE static inline __attribute__((always_inline))

INLINE v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

INLINE double lanes_sum(v16 v) {
    double s = 0.0;
    for (int l = 0; l < VL; ++l) s += (double)v[l];
    return s;
}

/* One (channel, sample) image pair for kernel width KW, IB kernel rows at a time.
 * gp: G padded with IB - 1 zero rows above and below, rows of Wg floats (zero beyond W);
 * yp: Y padded with ph zero rows above and enough below, rows of Wy floats, Y at column pw;
 * o: the channel's kh·KW float64 sums, added to. */
#define DEFINE_IMAGE(KW, IB)                                                                       \
    INLINE void image_##KW(const float *gp, const float *yp, long H, long Wg, long Wy, long kh,      \
                           double *o) {                                                            \
        const long nib = (kh + IB - 1) / IB, nch = Wg / VL;                                        \
        for (long ib = 0; ib < nib; ++ib) {                                                        \
            const long i0 = ib * IB;                                                               \
            for (long ch = 0; ch < nch; ++ch) {                                                    \
                const long w = ch * VL;                                                            \
                v16 acc[IB][KW];                                                                   \
                for (int ii = 0; ii < IB; ++ii)                                                    \
                    for (int j = 0; j < KW; ++j) acc[ii][j] = (v16){0};                            \
                for (long r = 0; r < H + IB - 1; ++r) {                                            \
                    v16 gv[IB];                                                                    \
                    for (int ii = 0; ii < IB; ++ii) gv[ii] = load16(gp + (r - ii + IB - 1) * Wg + w); \
                    const float *yr = yp + (r + i0) * Wy + w;                                      \
                    for (int j = 0; j < KW; ++j) {                                                 \
                        const v16 yv = load16(yr + j);                                             \
                        for (int ii = 0; ii < IB; ++ii) acc[ii][j] += gv[ii] * yv;                 \
                    }                                                                              \
                }                                                                                  \
                for (int ii = 0; ii < IB; ++ii)                                                    \
                    if (i0 + ii < kh)                                                              \
                        for (int j = 0; j < KW; ++j) o[(i0 + ii) * KW + j] += lanes_sum(acc[ii][j]); \
            }                                                                                      \
        }                                                                                          \
    }

/* The widths kw with a kernel, each with its IB (X-macro: the one list that the kernels, the
 * buffers' sizes, the dispatch and the argument check are generated from). IB·KW accumulators,
 * IB rows of G and one of Y: at most 31 of AVX-512's 32 registers. */
#define WIDTHS(X) X(1, 9) X(3, 3) X(5, 5) X(7, 2) X(9, 3)

WIDTHS(DEFINE_IMAGE)

/* IB of width kw; 0 where kw has no kernel. */
static long rows_at_once(long kw) {
#define ROWS_CASE(KW, IB) \
    case KW: return IB;
    switch (kw) {
        WIDTHS(ROWS_CASE)
    default: return 0;
    }
#undef ROWS_CASE
}

typedef struct {
    const float *y, *g;
    double *out;
    long B, C, H, W, kh, kw, c0, c1;
    int failed;
} job_t;

TARGETS static void run_channels(job_t *J) {
    const long B = J->B, C = J->C, H = J->H, W = J->W, kh = J->kh, kw = J->kw;
    const long ph = kh / 2, pw = kw / 2, IB = rows_at_once(kw);
    const long Wg = (W + VL - 1) / VL * VL, Wy = Wg + 2 * pw + VL;
    const long Hg = H + 2 * (IB - 1), Hy = H + (kh + IB - 1) / IB * IB;
    float *gp = calloc((size_t)(Hg * Wg), sizeof(float));
    float *yp = calloc((size_t)(Hy * Wy), sizeof(float));
    if (gp == NULL || yp == NULL) {
        free(gp);
        free(yp);
        J->failed = 1;
        return;
    }
    for (long c = J->c0; c < J->c1; ++c) {
        double *o = J->out + c * kh * kw;
        for (long t = 0; t < kh * kw; ++t) o[t] = 0.0;
        for (long b = 0; b < B; ++b) {
            const float *yc = J->y + (b * C + c) * H * W, *gc = J->g + (b * C + c) * H * W;
            for (long h = 0; h < H; ++h) {
                memcpy(gp + (h + IB - 1) * Wg, gc + h * W, (size_t)W * sizeof(float));
                memcpy(yp + (h + ph) * Wy + pw, yc + h * W, (size_t)W * sizeof(float));
            }
#define IMAGE_CASE(KW, IB) \
    case KW: image_##KW(gp, yp, H, Wg, Wy, kh, o); break;
            switch (kw) { WIDTHS(IMAGE_CASE) }
#undef IMAGE_CASE
        }
    }
    free(gp);
    free(yp);
}

/*
 * Both kernels split their channels evenly over `threads` threads of an OpenMP team. torch's CPU
 * kernels run in OpenMP too, and the build links the same runtime (libgomp.so.1, which the loader
 * shares by its name), so the team is torch's own: its workers, which spin a while after each
 * of torch's parallel calls, take this kernel's work at once. Threads of the kernel's own would
 * contend with them for the cores (docs/speed.md, "Seventeenth session").
 */
#define MAX_THREADS 256

static long team_size(long threads, long C) {
    if (threads > C) threads = C;
    return threads > MAX_THREADS ? MAX_THREADS : threads;
}

/* 0 on success, -1 where memory could not be had. */
static int weight_grad(const float *y, const float *g, double *out, long B, long C, long H, long W,
                       long kh, long kw, long threads) {
    job_t jobs[MAX_THREADS];
    threads = team_size(threads, C);
    for (long t = 0; t < threads; ++t)
        jobs[t] = (job_t){y, g, out, B, C, H, W, kh, kw, C * t / threads, C * (t + 1) / threads, 0};
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (long t = 0; t < threads; ++t) run_channels(&jobs[t]);
    int failed = 0;
    for (long t = 0; t < threads; ++t) failed |= jobs[t].failed;
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * depthwise_conv: the depth-wise 'same' correlation of the local branch (spec §2.3), D = k_l ⊛ Y,
 * float32, for Y (B, C, H, W) contiguous NCHW and K (C, kh, kw):
 *
 *     D[b, c, h, w] = Σ_{i < kh} Σ_{j < kw} K[c, i, j] · Y[b, c, h + i − ph, w + j − pw]
 *
 * with ph = kh // 2, pw = kw // 2 (odd kh, kw) and Y zero outside the image; and, where `turned`,
 * the input gradient of that correlation at ∂D = Y (the correlation with the kernel turned by
 * 180°):
 *
 *     ∂Y[b, c, h, w] = Σ_{i < kh} Σ_{j < kw} K[c, i, j] · ∂D[b, c, h − i + ph, w − j + pw].
 *
 * Each output element is one float32 sum over (i, j) in row-major order of K, the order in which
 * oneDNN's NCHW kernels sum it: the results are oneDNN's to the bit (tests/test_cpu_kernels.py),
 * and do not depend on the number of threads. Each image is copied into a zero-padded buffer.
 *
 * Square kernels of DW_SQUARE (kh = kw, compiled for each size): DW_ROWS output rows of 16
 * columns are summed at once while the image's rows stream by, each loaded row serving up to
 * kh output rows (the loop over (row, column) of the image, in increasing order, or decreasing
 * where turned, meets each output's terms in K's row-major order). Other kernels: DW_ROWS
 * (row, 16-column) pieces at once, each term read where it lies.
 *
 * oneDNN's NCHW depth-wise convolution takes 2 to 5x as long at (32, 144, 32, 32) on this machine
 * (docs/speed.md, "Eighteenth session"): its forward reorders the image to a blocked layout and
 * back.
 */
#define DW_ROWS 8
#define DW_SQUARE(X) X(3) X(5) X(7) X(9)

/* DW_ROWS output rows of the 16 columns at x in the padded image (rows of Wp floats) into acc;
 * turned where T. Each kernel its own function, so that every term compiles to one fused
 * multiply-add into its row's sum (inlined together, GCC formed some products apart and added
 * them afterwards: other bits, and slower). */
#define DEFINE_DW_SQUARE_T(K, T, NAME)                                                            \
    TARGETS __attribute__((noinline)) static void NAME(const float *x, long Wp, const float *k, v16 *out) { \
        v16 acc[DW_ROWS];                                                                          \
        for (int r = 0; r < DW_ROWS; ++r) acc[r] = (v16){0};                                       \
        _Pragma("GCC unroll 32") for (int tt = 0; tt < DW_ROWS + K - 1; ++tt) {                   \
            const int t = T ? DW_ROWS + K - 2 - tt : tt;                                           \
            _Pragma("GCC unroll 16") for (int bb = 0; bb < K; ++bb) {                             \
                const int b = T ? K - 1 - bb : bb;                                                 \
                const v16 v = load16(x + t * Wp + b);                                              \
                _Pragma("GCC unroll 8") for (int r = 0; r < DW_ROWS; ++r) {                        \
                    const int a = t - r;                                                           \
                    if (a >= 0 && a < K) acc[r] += k[T ? (K - 1 - a) * K + K - 1 - b : a * K + b] * v; \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < DW_ROWS; ++r) out[r] = acc[r];                                         \
    }
#define DEFINE_DW_SQUARE(K) DEFINE_DW_SQUARE_T(K, 0, dw_square_##K) DEFINE_DW_SQUARE_T(K, 1, dw_square_turned_##K)

DW_SQUARE(DEFINE_DW_SQUARE)

/* Whether kh × kw has a kernel of DW_SQUARE. */
static int dw_square(long kh, long kw) {
#define SQUARE_CASE(K) \
    case K:
    if (kh != kw) return 0;
    switch (kh) {
        DW_SQUARE(SQUARE_CASE)
        return 1;
    default: return 0;
    }
#undef SQUARE_CASE
}

/* DW_ROWS pieces (or `count` < DW_ROWS, one at a time) for any kernel: piece r starts at base[r]
 * in the padded image (rows of Wp floats) and is written to out[r], `width[r]` columns (≤ 16).
 * K's (i, j) multiplies the image at offset (i, j) from the piece's start, or at
 * (kh − 1 − i, kw − 1 − j) where `turned`. */
INLINE void dw_pieces(const float *const *base, float *const *out, const long *width, int count, const float *k,
                      long kh, long kw, long Wp, int turned) {
    const long di = turned ? -Wp : Wp, dj = turned ? -1 : 1;
    const long start = turned ? (kh - 1) * Wp + kw - 1 : 0;
    if (count == DW_ROWS) {
        v16 acc[DW_ROWS];
        for (int r = 0; r < DW_ROWS; ++r) acc[r] = (v16){0};
        for (long i = 0; i < kh; ++i)
            for (long j = 0; j < kw; ++j) {
                const float kv = k[i * kw + j];
                const long at = start + i * di + j * dj;
                for (int r = 0; r < DW_ROWS; ++r) acc[r] += kv * load16(base[r] + at);
            }
        for (int r = 0; r < DW_ROWS; ++r) memcpy(out[r], &acc[r], (size_t)width[r] * sizeof(float));
        return;
    }
    for (int r = 0; r < count; ++r) {
        v16 acc = (v16){0};
        for (long i = 0; i < kh; ++i)
            for (long j = 0; j < kw; ++j) acc += k[i * kw + j] * load16(base[r] + start + i * di + j * dj);
        memcpy(out[r], &acc, (size_t)width[r] * sizeof(float));
    }
}

/* One image: xp is its padded copy (rows of Wp floats, the image at (ph, pw)), o its output. */
INLINE void dw_image(const float *xp, float *o, const float *k, long H, long W, long kh, long kw, long Wp,
                     int turned) {
    const long nch = (W + VL - 1) / VL;
    if (dw_square(kh, kw)) {
        for (long h0 = 0; h0 < H; h0 += DW_ROWS)
            for (long w = 0; w < W; w += VL) {
                const long rows = H - h0 < DW_ROWS ? H - h0 : DW_ROWS, width = W - w < VL ? W - w : VL;
                const float *x = xp + h0 * Wp + w;
                v16 acc[DW_ROWS];
#define SQUARE_CALL(K)                                         \
    case K:                                                    \
        if (turned)                                            \
            dw_square_turned_##K(x, Wp, k, acc);               \
        else                                                   \
            dw_square_##K(x, Wp, k, acc);                      \
        break;
                switch (kh) { DW_SQUARE(SQUARE_CALL) }
#undef SQUARE_CALL
                for (long r = 0; r < rows; ++r) memcpy(o + (h0 + r) * W + w, &acc[r], (size_t)width * sizeof(float));
            }
        return;
    }
    const long pieces = H * nch;
    for (long q0 = 0; q0 < pieces; q0 += DW_ROWS) {
        const float *base[DW_ROWS];
        float *dst[DW_ROWS];
        long width[DW_ROWS];
        const int count = (int)(pieces - q0 < DW_ROWS ? pieces - q0 : DW_ROWS);
        for (int r = 0; r < count; ++r) {
            const long h = (q0 + r) / nch, w = (q0 + r) % nch * VL;
            base[r] = xp + h * Wp + w;
            dst[r] = o + h * W + w;
            width[r] = W - w < VL ? W - w : VL;
        }
        dw_pieces(base, dst, width, count, k, kh, kw, Wp, turned);
    }
}

/* 0 on success, -1 where memory could not be had. The images are split over `threads` threads. */
TARGETS static int depthwise_conv(const float *x, const float *k, float *out, long B, long C, long H, long W, long kh,
                                  long kw, int turned, long threads) {
    const long ph = kh / 2, pw = kw / 2, nch = (W + VL - 1) / VL;
    /* the padded image: every vector a kernel reads lies in it (the square kernels read DW_ROWS
     * rows and 16 columns at a time, also past the image's last ones) */
    const long Wp = nch * VL + kw - 1, Hp = (H + DW_ROWS - 1) / DW_ROWS * DW_ROWS + kh - 1;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *xp = calloc((size_t)(Hp * Wp), sizeof(float)); /* zero where the copies never write */
        failed = xp == NULL;
#pragma omp for schedule(static)
        for (long p = 0; p < B * C; ++p) {
            if (xp == NULL) continue;
            const float *xs = x + p * H * W;
            for (long h = 0; h < H; ++h) memcpy(xp + (h + ph) * Wp + pw, xs + h * W, (size_t)W * sizeof(float));
            dw_image(xp, out + p * H * W, k + (p % C) * kh * kw, H, W, kh, kw, Wp, turned);
        }
        free(xp);
    }
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * standardize: the forward of the standardisations IS and BS (spec §2.9) of x viewed as
 * (B, C, N), contiguous, over (B, N) for each channel c (IS is the view (1, B·C, N)):
 *
 *     y = (x − μ_c)·r_c,  r_c = (σ²_c + eps)^(−1/2)          (σ² the biased variance)
 *
 * Two passes for the statistics (mean, then the squares about it), each row's 16 lanes added in
 * float64; a channel's rows are read again for the output, from the cache where B·N·4 bytes fit
 * in it (one row of the IS view: 4 KiB at N = 1024). ATen's native batch-norm forward takes
 * about 3x as long on (1, 4608, 1024), on two threads, as this kernel on one (docs/speed.md);
 * its backward is as fast as a compiled one, and the torch backend keeps it.
 */
typedef struct {
    const float *x;
    float *y, *r;
    long B, C, N, c0, c1;
    double eps;
} std_job_t;

INLINE double row_sum(const float *x, long N) {
    v16 a = (v16){0};
    long v = 0;
    for (; v + VL <= N; v += VL) a += load16(x + v);
    double s = lanes_sum(a);
    for (; v < N; ++v) s += (double)x[v];
    return s;
}

INLINE double row_sq_about(const float *x, long N, float mu) {
    v16 a = (v16){0};
    const v16 m = mu - (v16){0};
    long v = 0;
    for (; v + VL <= N; v += VL) {
        const v16 d = load16(x + v) - m;
        a += d * d;
    }
    double s = lanes_sum(a);
    for (; v < N; ++v) {
        const float d = x[v] - mu;
        s += (double)(d * d);
    }
    return s;
}

TARGETS static void standardize_channels(std_job_t *J) {
    const long B = J->B, C = J->C, N = J->N;
    const double count = (double)B * (double)N;
    for (long c = J->c0; c < J->c1; ++c) {
        double s = 0.0;
        for (long b = 0; b < B; ++b) s += row_sum(J->x + (b * C + c) * N, N);
        const float mu = (float)(s / count);
        double q = 0.0;
        for (long b = 0; b < B; ++b) q += row_sq_about(J->x + (b * C + c) * N, N, mu);
        const float r = (float)(1.0 / sqrt(q / count + J->eps));
        const v16 m = mu - (v16){0}, rv = r - (v16){0};
        for (long b = 0; b < B; ++b) {
            const float *x = J->x + (b * C + c) * N;
            float *y = J->y + (b * C + c) * N;
            long v = 0;
            for (; v + VL <= N; v += VL) store16(y + v, (load16(x + v) - m) * rv);
            for (; v < N; ++v) y[v] = (x[v] - mu) * r;
        }
        J->r[c] = r;
    }
}

/* The channels split over `threads` threads (see weight_grad). */
static void standardize(std_job_t *base, long threads) {
    std_job_t jobs[MAX_THREADS];
    const long C = base->C;
    threads = team_size(threads, C);
    for (long t = 0; t < threads; ++t) {
        jobs[t] = *base;
        jobs[t].c0 = C * t / threads;
        jobs[t].c1 = C * (t + 1) / threads;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (long t = 0; t < threads; ++t) standardize_channels(&jobs[t]);
}


/* ---------------------------------------------------------------------------------------------
 * global_products: the products of HyperZZW's global branch (spec §2.2) that share their left
 * factor Ẑ = Z ⊙ K_g, for each of the P = B·C matrices p (n × n, row-major, contiguous):
 *
 *     G_j[p] = Ẑ[p] · Y_j[p]                                   (j = 1 … J)
 *
 * and global_products_backward, at ∂G_j:
 *
 *     ∂Y_j[p] = Ẑ[p]ᵀ · ∂G_j[p],   ∂Ẑ[p] = Σ_j ∂G_j[p] · Y_j[p]ᵀ
 *
 * Each matrix (4 KiB at n = 32) is read once and stays in the cache for its J products; ∂Ẑ is
 * summed in place instead of as J arrays added afterwards. Every output element is one float32
 * sum over k in order, by 4 × 32 blocks of accumulators. torch's batched product (MKL) takes
 * about 3x as long forward and 3.5x backward at (32·144) × 32 × 32 on this machine (docs/speed.md).
 */
#define MAX_TERMS 8

/* C (n × n) = L·Bm, or C += L·Bm where acc, for Bm and C row-major and the left factor's element
 * (i, k) at A[i·sr + k·sc]: L = A row-major for (sr, sc) = (n, 1), L = Aᵀ for (1, n). Inlined
 * with constant strides, each call site compiles to its own kernel. */
INLINE void mm(const float *A, long sr, long sc, const float *Bm, float *C, long n, int acc) {
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        long j = 0;
        for (; j + 2 * VL <= n; j += 2 * VL) {
            v16 c[4][2];
            for (int r = 0; r < 4; ++r)
                for (int h = 0; h < 2; ++h) c[r][h] = acc ? load16(C + (i + r) * n + j + h * VL) : (v16){0};
            for (long k = 0; k < n; ++k) {
                const v16 b0 = load16(Bm + k * n + j), b1 = load16(Bm + k * n + j + VL);
                for (int r = 0; r < 4; ++r) {
                    const float a = A[(i + r) * sr + k * sc];
                    c[r][0] += a * b0;
                    c[r][1] += a * b1;
                }
            }
            for (int r = 0; r < 4; ++r)
                for (int h = 0; h < 2; ++h) store16(C + (i + r) * n + j + h * VL, c[r][h]);
        }
        for (; j < n; ++j)
            for (long r = i; r < i + 4; ++r) {
                float s = acc ? C[r * n + j] : 0.0f;
                for (long k = 0; k < n; ++k) s += A[r * sr + k * sc] * Bm[k * n + j];
                C[r * n + j] = s;
            }
    }
    for (; i < n; ++i)
        for (long j = 0; j < n; ++j) {
            float s = acc ? C[i * n + j] : 0.0f;
            for (long k = 0; k < n; ++k) s += A[i * sr + k * sc] * Bm[k * n + j];
            C[i * n + j] = s;
        }
}

typedef struct {
    const float *a, *y[MAX_TERMS], *g[MAX_TERMS];
    float *out[MAX_TERMS], *ga;
    long J, P, n;
} gp_job_t;

TARGETS static void global_products_forward(const gp_job_t *J, long threads) {
    const long nn = J->n * J->n;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < J->P; ++p)
        for (long j = 0; j < J->J; ++j) mm(J->a + p * nn, J->n, 1, J->y[j] + p * nn, J->out[j] + p * nn, J->n, 0);
}

/* 0 on success, -1 where memory could not be had. */
TARGETS static int global_products_backward(const gp_job_t *J, long threads) {
    const long n = J->n, nn = n * n;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *t = malloc((size_t)nn * sizeof(float)); /* Y_j[p]ᵀ */
        failed = t == NULL;
        /* every thread meets the loop (a worksharing loop that some threads skip is undefined) */
#pragma omp for schedule(static)
        for (long p = 0; p < J->P; ++p) {
            if (t == NULL) continue;
            const long o = p * nn;
            for (long j = 0; j < J->J; ++j) {
                mm(J->a + o, 1, n, J->g[j] + o, J->out[j] + o, n, 0); /* Ẑᵀ·∂G_j */
                const float *y = J->y[j] + o;
                for (long i = 0; i < n; ++i)
                    for (long k = 0; k < n; ++k) t[k * n + i] = y[i * n + k];
                mm(J->g[j] + o, n, 1, t, J->ga + o, n, j > 0); /* ∂Ẑ += ∂G_j·Y_jᵀ */
            }
        }
        free(t);
    }
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * linear_rows: the point-wise linear of the channel-first layout (spec §2.5) for every sample b,
 * with one left factor L (O × I) shared by the samples:
 *
 *     out[b] = L · [x_1[b]; …; x_n[b]] + β                       (β optional)
 *
 * x_i (B, I_i, N) contiguous, Σ_i I_i = I, their rows read where they lie (the concatenation is
 * never formed), out (B, O, N) contiguous; L's element (o, k) at a[o·sr + k·sc] (W as it lies,
 * or Wᵀ for the input gradient). Each output element is one float32 sum over k in increasing
 * order, k in blocks (512 up to I = 1024, else 1024), each block's sum formed from zero and the
 * blocks added in order, then β added: the order of torch 2.13's oneDNN product on this machine
 * (AVX-512), whose bits it gives (tests/test_cpu_kernels.py), and none that depends on the number
 * of threads.
 *
 * L is packed once into panels of LR_MR rows (k-major), or read as it lies for a single sample
 * (LR_PACK_MIN_B; the same sums in the same order); each (sample, 64-column strip) copies its
 * strip of the x_i into a contiguous I × 64 block (rows of N floats lie 4 KiB apart at N = 1024,
 * all in one set of the L1 cache), and every panel multiplies it with LR_MR × 64 sums in
 * registers. At O, I = 72 to 1548, N = 1024, B = 32 on this machine's two cores, 1.3 to 1.9x
 * oneDNN's product per sample (docs/speed.md, "Eighteenth session").
 */
#define LR_MR 6
/* vectors of VL floats per row of a tile, so strips of LR_NR = 64 columns: 24 accumulators of
 * AVX-512's 32 registers (6 × 32 had 12; 6 × 64 took 0.88x its time at B = 1, 8 and 32, where
 * 12 × 32, 14 × 32, 8 × 48, 7 × 64 and 4 × 96 were no faster; docs/speed.md, "Twentieth session") */
#define LR_NV 4
#define LR_NR (LR_NV * VL)
#define LR_MAX_TERMS 32
#define LR_KB 512 /* the K block: 512 up to K = 1024, 1024 beyond (oneDNN's, measured: see above) */
/* L is packed where at least this many samples read it; one sample reads it as it lies (the pack,
 * a pass over L, cost about 10% of a single sample's product at O, I = 72 to 432, N = 1024). */
#define LR_PACK_MIN_B 2
/* Each panel's tile first fetches, for writing, the output rows of the panel this many panels on:
 * their cache lines are then owned when the tile stores into them (in four in-process
 * alternations the training step 0.98x to 1.005x, the eval forward at B = 8 0.95x to 0.98x in
 * three, at B = 1 0.99x; docs/speed.md, "Twentieth session"). A fetch does not change a value. */
#define LR_AHEAD 2

typedef struct {
    const float *a, *packed, *bias, *x[LR_MAX_TERMS];
    long rows[LR_MAX_TERMS], terms, sr, sc, O, I, B, N;
    float *out;
} lr_job_t;

/* LR_MR × LR_NR sums of a panel of L (its row r's element k at ap[r·ar + k·ak]: packed, ar = 1 and
 * ak = LR_MR; as it lies, L's strides) and the strip xs (I × LR_NR), k in blocks of
 * kb (each block's sum formed from zero, the blocks added in order, as oneDNN's product adds its
 * K blocks); the first `rows` rows and `cols` columns stored at c (rows of ldc floats), β added
 * last where given. */
INLINE void lr_tile(const float *ap, long ar, long ak, const float *xs, long I, long kb, const float *bias, float *c,
                    long ldc, long rows, long cols) {
    const float *arow[LR_MR]; /* the panel's row r, its element k at arow[r][k·ak] (rows past `rows` repeat the last) */
    for (int r = 0; r < LR_MR; ++r) arow[r] = ap + (r < rows ? r : rows - 1) * ar;
    v16 tot[LR_MR][LR_NV];
    for (long k0 = 0; k0 < I; k0 += kb) {
        const long k1 = k0 + kb < I ? k0 + kb : I;
        v16 acc[LR_MR][LR_NV];
        for (int r = 0; r < LR_MR; ++r)
            for (int h = 0; h < LR_NV; ++h) acc[r][h] = (v16){0};
        for (long k = k0; k < k1; ++k) {
            v16 xv[LR_NV];
            for (int h = 0; h < LR_NV; ++h) xv[h] = load16(xs + k * LR_NR + h * VL);
            for (int r = 0; r < LR_MR; ++r) {
                const float a = arow[r][k * ak];
                for (int h = 0; h < LR_NV; ++h) acc[r][h] += a * xv[h];
            }
        }
        for (int r = 0; r < LR_MR; ++r)
            for (int h = 0; h < LR_NV; ++h) tot[r][h] = k0 == 0 ? acc[r][h] : tot[r][h] + acc[r][h];
    }
    for (long r = 0; r < rows; ++r) {
        if (bias != NULL)
            for (int h = 0; h < LR_NV; ++h) tot[r][h] += bias[r];
        if (cols == LR_NR) {
            for (int h = 0; h < LR_NV; ++h) store16(c + r * ldc + h * VL, tot[r][h]);
        } else {
            float row[LR_NR];
            for (int h = 0; h < LR_NV; ++h) store16(row + h * VL, tot[r][h]);
            memcpy(c + r * ldc, row, (size_t)cols * sizeof(float));
        }
    }
}

/* The rows of L's panel p (LR_MR, or fewer in the last panel). */
INLINE long panel_rows(long O, long p) { return O - p * LR_MR < LR_MR ? O - p * LR_MR : LR_MR; }

/* The panels of L (ceil(O / LR_MR) · LR_MR · I floats, zero past row O), L's (o, k) at a[o·sr + k·sc]. */
static void lr_pack(const float *a, long sr, long sc, long O, long I, float *ap) {
    const long panels = (O + LR_MR - 1) / LR_MR;
    for (long p = 0; p < panels; ++p)
        for (long k = 0; k < I; ++k)
            for (long r = 0; r < LR_MR; ++r) {
                const long o = p * LR_MR + r;
                ap[(p * I + k) * LR_MR + r] = o < O ? a[o * sr + k * sc] : 0.0f;
            }
}

/* 0 on success, -1 where memory could not be had. L packed here (from LR_PACK_MIN_B samples),
 * given packed (J->packed), or read as it lies. */
TARGETS static int linear_rows(const lr_job_t *J, long threads) {
    const long O = J->O, I = J->I, N = J->N, panels = (O + LR_MR - 1) / LR_MR, strips = (N + LR_NR - 1) / LR_NR;
    const long kb = I <= 2 * LR_KB ? LR_KB : 2 * LR_KB;
    float *own = NULL;
    if (J->packed == NULL && J->B >= LR_PACK_MIN_B) {
        own = malloc((size_t)(panels * LR_MR * I) * sizeof(float));
        if (own == NULL) return -1;
        lr_pack(J->a, J->sr, J->sc, O, I, own);
    }
    const float *ap = J->packed != NULL ? J->packed : own; /* NULL: L read as it lies */
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *xs = calloc((size_t)(I * LR_NR), sizeof(float)); /* the strip; zero past N */
        failed = xs == NULL;
#pragma omp for schedule(static)
        for (long q = 0; q < J->B * strips; ++q) {
            if (xs == NULL) continue;
            const long b = q / strips, j = q % strips * LR_NR, cols = N - j < LR_NR ? N - j : LR_NR;
            long k = 0;
            for (long t = 0; t < J->terms; ++t)
                for (long i = 0; i < J->rows[t]; ++i, ++k)
                    memcpy(xs + k * LR_NR, J->x[t] + (b * J->rows[t] + i) * N + j, (size_t)cols * sizeof(float));
            for (long p = 0; p < panels; ++p) {
                const long rows = panel_rows(O, p);
                const float *bias = J->bias == NULL ? NULL : J->bias + p * LR_MR;
                float *c = J->out + (b * O + p * LR_MR) * N + j;
                if (p + LR_AHEAD < panels) { /* the output rows of the panel LR_AHEAD on, fetched for writing */
                    for (long r = 0; r < panel_rows(O, p + LR_AHEAD); ++r) /* a cache line: VL floats */
                        for (long l = 0; l < cols; l += VL) __builtin_prefetch(c + (LR_AHEAD * LR_MR + r) * N + l, 1, 3);
                }
                /* two calls, so that the packed panel's strides are constants in its inlined copy */
                if (ap != NULL)
                    lr_tile(ap + p * I * LR_MR, 1, LR_MR, xs, I, kb, bias, c, N, rows, cols);
                else
                    lr_tile(J->a + p * LR_MR * J->sr, J->sr, J->sc, xs, I, kb, bias, c, N, rows, cols);
            }
        }
        free(xs);
    }
    free(own);
    return failed ? -1 : 0;
}

/* Data pointers from a tuple of J ints into `into`; 0, or -1 with a Python error set. */
static int pointers(const char *op, PyObject *tuple, const char *name, long J, const float **into) {
    if (PyTuple_GET_SIZE(tuple) != J) {
        PyErr_Format(PyExc_ValueError, "%s: %s must hold %ld pointers, got %zd", op, name, J, PyTuple_GET_SIZE(tuple));
        return -1;
    }
    for (long j = 0; j < J; ++j) {
        const unsigned long long v = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(tuple, j));
        if (PyErr_Occurred()) return -1;
        if (v == 0) {
            PyErr_Format(PyExc_ValueError, "%s: %s[%ld] is a null data pointer", op, name, j);
            return -1;
        }
        into[j] = (const float *)(uintptr_t)v;
    }
    return 0;
}

/* The shared checks of both calls: 0, or -1 with a Python error set. */
static int gp_check(PyObject *ys, Py_ssize_t P, Py_ssize_t n, Py_ssize_t threads, long *J) {
    *J = (long)PyTuple_GET_SIZE(ys);
    if (*J < 1 || *J > MAX_TERMS) {
        PyErr_Format(PyExc_ValueError, "global_products: ys must hold 1 to %d pointers, got %ld", MAX_TERMS, *J);
        return -1;
    }
    if (P < 1 || n < 1) {
        PyErr_Format(PyExc_ValueError, "global_products: P and n must be positive, got (%zd, %zd)", P, n);
        return -1;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "global_products: threads must be at least 1, got %zd", threads);
        return -1;
    }
    return 0;
}

static PyObject *py_global_products(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a;
    PyObject *ys, *outs;
    Py_ssize_t P, n, threads;
    gp_job_t job = {0};
    if (!PyArg_ParseTuple(args, "KO!O!nnn", &a, &PyTuple_Type, &ys, &PyTuple_Type, &outs, &P, &n, &threads)) return NULL;
    if (gp_check(ys, P, n, threads, &job.J) != 0) return NULL;
    if (a == 0) {
        PyErr_SetString(PyExc_ValueError, "global_products: a is a null data pointer");
        return NULL;
    }
    if (pointers("global_products", ys, "ys", job.J, job.y) != 0 ||
        pointers("global_products", outs, "outs", job.J, (const float **)job.out) != 0)
        return NULL;
    job.a = (const float *)(uintptr_t)a;
    job.P = (long)P;
    job.n = (long)n;
    Py_BEGIN_ALLOW_THREADS
    global_products_forward(&job, (long)threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_global_products_backward(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, ga;
    PyObject *ys, *gs, *outs;
    Py_ssize_t P, n, threads;
    gp_job_t job = {0};
    if (!PyArg_ParseTuple(args, "KO!O!KO!nnn", &a, &PyTuple_Type, &ys, &PyTuple_Type, &gs, &ga, &PyTuple_Type, &outs,
                          &P, &n, &threads))
        return NULL;
    if (gp_check(ys, P, n, threads, &job.J) != 0) return NULL;
    if (a == 0 || ga == 0) {
        PyErr_SetString(PyExc_ValueError, "global_products_backward: a null data pointer");
        return NULL;
    }
    if (pointers("global_products_backward", ys, "ys", job.J, job.y) != 0 ||
        pointers("global_products_backward", gs, "gs", job.J, job.g) != 0 ||
        pointers("global_products_backward", outs, "outs", job.J, (const float **)job.out) != 0)
        return NULL;
    job.a = (const float *)(uintptr_t)a;
    job.ga = (float *)(uintptr_t)ga;
    job.P = (long)P;
    job.n = (long)n;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = global_products_backward(&job, (long)threads);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* The terms, B, N and threads of a linear_rows call into `job`: 0, or -1 with a Python error set. */
static int lr_terms(const char *op, PyObject *xs, PyObject *rows, Py_ssize_t O, Py_ssize_t B, Py_ssize_t N,
                    Py_ssize_t threads, lr_job_t *job) {
    job->terms = (long)PyTuple_GET_SIZE(xs);
    if (job->terms < 1 || job->terms > LR_MAX_TERMS) {
        PyErr_Format(PyExc_ValueError, "%s: xs must hold 1 to %d pointers, got %ld", op, LR_MAX_TERMS, job->terms);
        return -1;
    }
    if (PyTuple_GET_SIZE(rows) != job->terms) {
        PyErr_Format(PyExc_ValueError, "%s: rows must hold one count per term (%ld), got %zd", op, job->terms,
                     PyTuple_GET_SIZE(rows));
        return -1;
    }
    job->I = 0;
    for (long t = 0; t < job->terms; ++t) {
        job->rows[t] = PyLong_AsLong(PyTuple_GET_ITEM(rows, t));
        if (PyErr_Occurred()) return -1;
        if (job->rows[t] < 1) {
            PyErr_Format(PyExc_ValueError, "%s: rows[%ld] must be positive, got %ld", op, t, job->rows[t]);
            return -1;
        }
        job->I += job->rows[t];
    }
    if (O < 1 || B < 1 || N < 1) {
        PyErr_Format(PyExc_ValueError, "%s: O, B and N must be positive, got (%zd, %zd, %zd)", op, O, B, N);
        return -1;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be at least 1, got %zd", op, threads);
        return -1;
    }
    if (pointers(op, xs, "xs", job->terms, job->x) != 0) return -1;
    job->O = (long)O;
    job->B = (long)B;
    job->N = (long)N;
    return 0;
}

static PyObject *lr_run(lr_job_t *job, long threads) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = linear_rows(job, threads);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_linear_rows(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, bias, out;
    PyObject *xs, *rows;
    Py_ssize_t sr, sc, O, B, N, threads;
    lr_job_t job = {0};
    if (!PyArg_ParseTuple(args, "KnnnKO!O!Knnn", &a, &sr, &sc, &O, &bias, &PyTuple_Type, &xs, &PyTuple_Type, &rows, &out,
                          &B, &N, &threads))
        return NULL;
    if (lr_terms("linear_rows", xs, rows, O, B, N, threads, &job) != 0) return NULL;
    if (a == 0 || out == 0) {
        PyErr_SetString(PyExc_ValueError, "linear_rows: a null data pointer");
        return NULL;
    }
    job.a = (const float *)(uintptr_t)a;
    job.bias = bias == 0 ? NULL : (const float *)(uintptr_t)bias;
    job.out = (float *)(uintptr_t)out;
    job.sr = (long)sr;
    job.sc = (long)sc;
    return lr_run(&job, (long)threads);
}

static PyObject *py_linear_pack(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, out;
    Py_ssize_t sr, sc, O, I;
    if (!PyArg_ParseTuple(args, "KnnnnK", &a, &sr, &sc, &O, &I, &out)) return NULL;
    if (O < 1 || I < 1) {
        PyErr_Format(PyExc_ValueError, "linear_pack: O and I must be positive, got (%zd, %zd)", O, I);
        return NULL;
    }
    if (a == 0 || out == 0) {
        PyErr_SetString(PyExc_ValueError, "linear_pack: a null data pointer");
        return NULL;
    }
    lr_pack((const float *)(uintptr_t)a, (long)sr, (long)sc, (long)O, (long)I, (float *)(uintptr_t)out);
    Py_RETURN_NONE;
}

static PyObject *py_linear_rows_packed(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long packed, bias, out;
    PyObject *xs, *rows;
    Py_ssize_t O, B, N, threads;
    lr_job_t job = {0};
    if (!PyArg_ParseTuple(args, "KnKO!O!Knnn", &packed, &O, &bias, &PyTuple_Type, &xs, &PyTuple_Type, &rows, &out, &B,
                          &N, &threads))
        return NULL;
    if (lr_terms("linear_rows_packed", xs, rows, O, B, N, threads, &job) != 0) return NULL;
    if (packed == 0 || out == 0) {
        PyErr_SetString(PyExc_ValueError, "linear_rows_packed: a null data pointer");
        return NULL;
    }
    job.packed = (const float *)(uintptr_t)packed;
    job.bias = bias == 0 ? NULL : (const float *)(uintptr_t)bias;
    job.out = (float *)(uintptr_t)out;
    return lr_run(&job, (long)threads);
}

static PyObject *py_standardize(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, y, r;
    Py_ssize_t B, C, N, threads;
    double eps;
    if (!PyArg_ParseTuple(args, "KKKnnndn", &x, &y, &r, &B, &C, &N, &eps, &threads)) return NULL;
    if (B < 1 || C < 1 || N < 1) {
        PyErr_Format(PyExc_ValueError, "standardize: shape (B, C, N) must be positive, got (%zd, %zd, %zd)", B, C, N);
        return NULL;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "standardize: threads must be at least 1, got %zd", threads);
        return NULL;
    }
    if (!(eps >= 0.0)) {
        char message[96]; /* PyErr_Format has no %g */
        snprintf(message, sizeof message, "standardize: eps must be at least 0, got %g", eps);
        PyErr_SetString(PyExc_ValueError, message);
        return NULL;
    }
    std_job_t base = {(const float *)(uintptr_t)x, (float *)(uintptr_t)y, (float *)(uintptr_t)r, (long)B, (long)C, (long)N,
                      0, 0, eps};
    Py_BEGIN_ALLOW_THREADS
    standardize(&base, (long)threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_depthwise_weight_grad(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long y, g, out;
    Py_ssize_t B, C, H, W, kh, kw, threads;
    if (!PyArg_ParseTuple(args, "KKKnnnnnnn", &y, &g, &out, &B, &C, &H, &W, &kh, &kw, &threads))
        return NULL;
    if (B < 1 || C < 1 || H < 1 || W < 1) {
        PyErr_Format(PyExc_ValueError,
                     "depthwise_weight_grad: shape (B, C, H, W) must be positive, got (%zd, %zd, %zd, %zd)",
                     B, C, H, W);
        return NULL;
    }
    if (kh < 1 || kh % 2 == 0 || rows_at_once((long)kw) == 0) {
        PyErr_Format(PyExc_ValueError,
                     "depthwise_weight_grad: kernel (kh, kw) must have an odd kh and kw in "
                     "{1, 3, 5, 7, 9}, got (%zd, %zd)",
                     kh, kw);
        return NULL;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "depthwise_weight_grad: threads must be at least 1, got %zd", threads);
        return NULL;
    }
    if (y == 0 || g == 0 || out == 0) {
        PyErr_SetString(PyExc_ValueError, "depthwise_weight_grad: a null data pointer");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = weight_grad((const float *)(uintptr_t)y, (const float *)(uintptr_t)g, (double *)(uintptr_t)out,
                     (long)B, (long)C, (long)H, (long)W, (long)kh, (long)kw, (long)threads);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_depthwise_conv(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, k, out;
    Py_ssize_t B, C, H, W, kh, kw, threads;
    int turned;
    if (!PyArg_ParseTuple(args, "KKKnnnnnnpn", &x, &k, &out, &B, &C, &H, &W, &kh, &kw, &turned, &threads)) return NULL;
    if (B < 1 || C < 1 || H < 1 || W < 1) {
        PyErr_Format(PyExc_ValueError,
                     "depthwise_conv: shape (B, C, H, W) must be positive, got (%zd, %zd, %zd, %zd)", B, C, H, W);
        return NULL;
    }
    if (kh < 1 || kw < 1 || kh % 2 == 0 || kw % 2 == 0) {
        PyErr_Format(PyExc_ValueError, "depthwise_conv: kernel (kh, kw) must be odd and positive, got (%zd, %zd)", kh,
                     kw);
        return NULL;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "depthwise_conv: threads must be at least 1, got %zd", threads);
        return NULL;
    }
    if (x == 0 || k == 0 || out == 0) {
        PyErr_SetString(PyExc_ValueError, "depthwise_conv: a null data pointer");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = depthwise_conv((const float *)(uintptr_t)x, (const float *)(uintptr_t)k, (float *)(uintptr_t)out, (long)B,
                        (long)C, (long)H, (long)W, (long)kh, (long)kw, turned, (long)threads);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"depthwise_weight_grad", py_depthwise_weight_grad, METH_VARARGS,
     "depthwise_weight_grad(y, g, out, B, C, H, W, kh, kw, threads): out[c, i, j] = "
     "sum_{b,h,w} g[b,c,h,w] * y[b,c,h+i-kh//2,w+j-kw//2] (zero outside the image) for the data "
     "pointers of float32 y and g (B, C, H, W), contiguous, and a float64 out (C, kh, kw)."},
    {"depthwise_conv", py_depthwise_conv, METH_VARARGS,
     "depthwise_conv(x, k, out, B, C, H, W, kh, kw, threads): out[b,c,h,w] = "
     "sum_{i,j} k[c,i,j] * x[b,c,h+i-kh//2,w+j-kw//2] (zero outside the image) for the data "
     "pointers of float32 x and out (B, C, H, W) and k (C, kh, kw), contiguous; kh and kw odd."},
    {"linear_rows", py_linear_rows, METH_VARARGS,
     "linear_rows(a, sr, sc, O, bias, xs, rows, out, B, N, threads): out[b] = L @ concat_i(xs[i][b]) "
     "(+ bias, a pointer or 0) for float32 L (O, sum(rows)) with L[o, k] at a[o*sr + k*sc], each "
     "xs[i] (B, rows[i], N) and out (B, O, N) contiguous; xs a tuple of data pointers."},
    {"linear_pack", py_linear_pack, METH_VARARGS,
     "linear_pack(a, sr, sc, O, I, out): L (O, I), L[o, k] at a[o*sr + k*sc], packed into out "
     "(linear_pack_size(O, I) floats) for linear_rows_packed."},
    {"linear_rows_packed", py_linear_rows_packed, METH_VARARGS,
     "linear_rows_packed(packed, O, bias, xs, rows, out, B, N, threads): linear_rows with L given "
     "packed by linear_pack (the same bits)."},
    {"standardize", py_standardize, METH_VARARGS,
     "standardize(x, y, r, B, C, N, eps, threads): y = (x - mean)/sqrt(var + eps) and r = "
     "1/sqrt(var + eps) per channel c over (B, N) of float32 x (B, C, N), contiguous; r (C,)."},
    {"global_products", py_global_products, METH_VARARGS,
     "global_products(a, ys, outs, P, n, threads): outs[j][p] = a[p] @ ys[j][p] for the P float32 "
     "(n, n) matrices p of a and of each ys[j], contiguous; ys and outs are tuples of data pointers."},
    {"global_products_backward", py_global_products_backward, METH_VARARGS,
     "global_products_backward(a, ys, gs, ga, outs, P, n, threads): outs[j][p] = a[p]^T @ gs[j][p] "
     "and ga[p] = sum_j gs[j][p] @ ys[j][p]^T, float32, contiguous, data pointers as in global_products."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cpu_kernels", "Compiled CPU kernels of the torch backend.", -1, methods, NULL, NULL, NULL, NULL,
};

/* The clone of the TARGETS functions that the loader runs on this CPU: GCC's target_clones
 * resolver takes the first of x86-64-v4, x86-64-v3 and the default that the CPU supports;
 * "native" where the kernels were compiled without clones (another compiler or architecture). */
static const char *vector_isa(void) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
    return "default";
#else
    return "native";
#endif
}

/* Whether the kernels' 16-float vectors (v16) are single registers where they run (AVX-512).
 * Narrower, GCC splits them and keeps the tiles' accumulators on the stack: the x86-64-v3 clone
 * of the eval forward's kernels took 449 ms at B = 1 where torch's own took 33 ms (docs/speed.md,
 * "Twentieth session"), so the torch backend takes the kernels only where this holds. */
static int full_width(const char *isa) {
#if defined(__AVX512F__)
    (void)isa;
    return 1;
#else
    return strcmp(isa, "x86-64-v4") == 0;
#endif
}

/* The module, with depthwise_weight_grad_widths (the kernel widths kw of WIDTHS, a tuple),
 * depthwise_conv_min_width (the narrowest image whose rows fill a vector: the torch backend routes
 * narrower ones to oneDNN, which is faster there for kernels from 7 × 7, docs/speed.md),
 * global_products_max_terms (MAX_TERMS), global_products_row_block (the columns a row block of
 * mm computes in vectors: a row's remainder is computed element by element), vector_isa and
 * full_width (above). */
PyMODINIT_FUNC PyInit__cpu_kernels(void) {
    const char *isa = vector_isa();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
#define WIDTH_ITEM(KW, IB) KW,
    static const long widths[] = {WIDTHS(WIDTH_ITEM)};
#undef WIDTH_ITEM
    const Py_ssize_t count = (Py_ssize_t)(sizeof widths / sizeof widths[0]);
    PyObject *tuple = PyTuple_New(count);
    if (tuple == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; ++i) {
        PyObject *v = PyLong_FromLong(widths[i]);
        if (v == NULL) {
            Py_DECREF(tuple);
            Py_DECREF(m);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, v);
    }
    if (PyModule_AddObject(m, "depthwise_weight_grad_widths", tuple) != 0) {
        Py_DECREF(tuple);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "depthwise_conv_min_width", VL) != 0 ||
        PyModule_AddIntConstant(m, "global_products_max_terms", MAX_TERMS) != 0 ||
        PyModule_AddIntConstant(m, "linear_rows_max_terms", LR_MAX_TERMS) != 0 ||
        PyModule_AddIntConstant(m, "linear_pack_rows", LR_MR) != 0 ||
        PyModule_AddIntConstant(m, "global_products_row_block", 2 * VL) != 0 ||
        PyModule_AddStringConstant(m, "vector_isa", isa) != 0 ||
        PyModule_AddIntConstant(m, "full_width", full_width(isa)) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* The acoustic decoder's layers for Linux CPUs, in C (engine/native_decoder.py drives it).
 *
 * MLX's CPU backend runs element-wise work one value at a time on one thread, through
 * kernels that follow strides value by value. The decoder's later stages are mostly that
 * work (RMS norms, a 7-tap depthwise conv, the GELU of a 4x wide FFN over up to 3,200
 * positions per frame), so there MLX spends most of a frame on what is ~1 GFLOP. These
 * functions do each layer in a few fused passes over channels-last (T, C) rows, with
 * vector loops the compiler widens to AVX-512 or AVX2 (target_clones), and hand the
 * matrix products to the BLAS MLX itself uses: the cblas_sgemm of engine/_blas_shim.c,
 * which forwards to scipy-openblas32, or the shim's vvreader_sgemm for larger products. The addresses
 * are handed over once (vv_set_sgemm), so this library has no undefined BLAS symbol and
 * works whichever BLAS MLX bound to. The first stage, which is bound by reading its
 * weights (8 blocks of 134 MB in float32 for one or two frames), can read a bfloat16 copy
 * instead: the checkpoint is bfloat16, so the numbers are the same.
 *
 * Same math as engine/acoustic.py (which mirrors the official TokenizerDecoder): only
 * the order of float32 sums differs. Every function takes the layer's weights in the
 * layouts documented below (engine/native_decoder.py makes them once from the MLX
 * model) and caller-owned buffers; nothing is allocated here.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "_bf16.h"
#include "_cpu_level.h"

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef void (*wgemm_fn)(int, int, int, const float *, int, const float *, int, float *, int);
typedef void (*bf16w_fn)(int, int, int, const float *, int, const unsigned short *, int,
                         float *, int);
typedef int (*tiles_fn)(int, int, int, const float *, int, const unsigned short *, float *,
                        int);
/* fn(arg, lo, hi, worker) for [lo, hi) of a range cut into chunks; worker is 0 or 1. */
typedef void (*chunk_fn)(const void *arg, int lo, int hi, int worker);
typedef void (*parallel_fn)(chunk_fn fn, const void *arg, int total, int chunk);
static sgemm_fn few_rows_sgemm;
static wgemm_fn plain_gemm;
static parallel_fn parallel;
static bf16w_fn bf16w_gemm;
static tiles_fn tiles_gemm;
static int few_rows_max;
static int level_in_use = 1;

/* Products of 1 to 4 rows use a layer's bfloat16 copy of its weights when it has one:
 * they are bound by reading the weights, and the copy is half the bytes (the first
 * frame's decode, one row, is on the way to first audio). Larger products are
 * compute-bound and read the float32 weights through OpenBLAS. */
#define BF16_MIN_ROWS 1
#define BF16_MAX_ROWS 4

/* Where the products go; set before any other call. Products of at most `max_rows` rows
 * go to `few` (the shim's cblas_sgemm: one pass over the weights, two threads), the others
 * to `plain` (the shim's vvreader_sgemm, C = A W^T through OpenBLAS's sgemm: the shim's
 * kernel is slower from about 16 rows on); `bf16w` (the shim's vvreader_sgemm_bf16w, may
 * be NULL) takes bfloat16 weights; `par` (the shim's vvreader_parallel, may be NULL: one
 * thread) runs chunks of a range on both threads. */
void vv_set_sgemm(sgemm_fn few, wgemm_fn plain, int max_rows, bf16w_fn bf16w, parallel_fn par) {
    parallel = par;
    few_rows_sgemm = few;
    plain_gemm = plain;
    few_rows_max = max_rows;
    bf16w_gemm = bf16w;
}

/* The shim's vvreader_sgemm_tiles, where the CPU has AMX (engine/_amx.h): products
 * against a layer's bfloat16 weights laid out for the tiles, at level 5 (vv_cpu_level). */
void vv_set_tiles(tiles_fn fn) { tiles_gemm = fn; }

/* C (M, N) = A (M, K) W^T, W (N, K) row-major in float32 (w) and/or bfloat16 (wh, may be
 * NULL; w may be NULL when wh is given), and/or laid out for AMX tiles (wt, may be NULL:
 * used at level 5 for products of at least TILES_MIN_ROWS rows). */
#define TILES_MIN_ROWS 4
static void product(int M, int N, int K, const float *A, int lda, const float *w,
                    const unsigned short *wh, const unsigned short *wt, float *C, int ldc) {
    /* (A product the shim has no memory for goes the other ways.) */
    if (wt && tiles_gemm && level_in_use == 5 && M >= TILES_MIN_ROWS &&
        tiles_gemm(M, N, K, A, lda, wt, C, ldc))
        return;
    /* At level 5 the shim's product against a bfloat16 W runs on AMX from 4 rows on. */
    if (wh && bf16w_gemm && ((M >= BF16_MIN_ROWS && M <= BF16_MAX_ROWS) || !w || level_in_use == 5)) {
        bf16w_gemm(M, N, K, A, lda, wh, K, C, ldc);
        return;
    }
    if (M <= few_rows_max)
        few_rows_sgemm(RowMajor, NoTrans, Trans, M, N, K, 1.0f, A, lda, w, K, 0.0f, C, ldc);
    else
        plain_gemm(M, N, K, A, lda, w, K, C, ldc);
}

/* Each layer is compiled once per x86-64 level (V4, V3 and the baseline: engine/_cpu_level.h),
 * and vv_cpu_level picks one for every layer at once. */

typedef float v16 __attribute__((vector_size(64)));

/* sum_i a[i] * b[i], in 16 interleaved partial sums (C keeps float sums in order, so the
 * compiler would not vectorize a plain loop). */
INLINE float dot(int n, const float *restrict a, const float *restrict b) {
    v16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 va, vb;
        memcpy(&va, a + i, sizeof va);
        memcpy(&vb, b + i, sizeof vb);
        acc += va * vb;
    }
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += acc[k];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w, as mx.fast.rms_norm. */
INLINE void rms_norm(int T, int C, float eps, const float *restrict x, const float *restrict w,
                     float *restrict y) {
    for (int t = 0; t < T; t++) {
        const float *restrict xr = x + (size_t)t * C;
        float *restrict yr = y + (size_t)t * C;
        const float ss = dot(C, xr, xr);
        const float r = 1.0f / sqrtf(ss / (float)C + eps);
        for (int c = 0; c < C; c++) yr[c] = xr[c] * r * w[c];
    }
}

/* Exact-erf GELU, x / 2 * (1 + erf(x / sqrt 2)): erf(v) ~= v * P(v^2) / Q(v^2) with v
 * clamped to [-4, 4] (beyond, erf is +-1 in float32), the rational approximation
 * engine/acoustic.py uses (max error 4.4e-7). Written for 16 values at once as well as
 * one (the same operations in the same order): the compiler does not vectorize the
 * clamps of a plain loop for AVX2 (a comparison and a branch per value, which only
 * AVX-512's masks if-convert), and the AVX2 decoder spent a fifth of its time there. */
#define GELU_P(v2)                                                                         \
    ((((((-2.72614225801306e-10f * (v2) + 2.77068142495902e-08f) * (v2) -                  \
         2.10102402082508e-06f) * (v2) - 5.69250639462346e-05f) * (v2) -                   \
       7.34990630326855e-04f) * (v2) - 2.95459980854025e-03f) * (v2) -                     \
     1.60960333262415e-02f)
#define GELU_Q(v2)                                                                         \
    ((((-1.45660718464996e-05f * (v2) - 2.13374055278905e-04f) * (v2) -                    \
       1.68282697438203e-03f) * (v2) - 7.37332916720468e-03f) * (v2) -                     \
     1.42647390514189e-02f)

INLINE float gelu_erf(float x) {
    float v = x * 0.7071067811865476f;
    v = v < -4.0f ? -4.0f : v;
    v = v > 4.0f ? 4.0f : v;
    const float v2 = v * v;
    return 0.5f * x * (1.0f + v * GELU_P(v2) / GELU_Q(v2));
}

typedef int v16i __attribute__((vector_size(64)));

/* gelu_erf of row[0 .. 16) + b[0 .. 16) (b may be NULL), in place. */
INLINE void gelu_erf16(float *restrict row, const float *restrict b) {
    v16 x;
    memcpy(&x, row, sizeof x);
    if (b) {
        v16 bias;
        memcpy(&bias, b, sizeof bias);
        x += bias;
    }
    v16 v = x * 0.7071067811865476f;
    const v16 lo = (v16){0} - 4.0f, hi = (v16){0} + 4.0f;
    const v16i below = v < lo; /* all ones where true; NaN stays NaN, as in gelu_erf */
    v = (v16)(((v16i)v & ~below) | ((v16i)lo & below));
    const v16i above = v > hi;
    v = (v16)(((v16i)v & ~above) | ((v16i)hi & above));
    const v16 v2 = v * v;
    x = 0.5f * x * (1.0f + v * GELU_P(v2) / GELU_Q(v2));
    memcpy(row, &x, sizeof x);
}

/* u[t, :] = gelu(u[t, :] + b) for the T rows of N values; b (per column) may be NULL. */
INLINE void bias_gelu(int T, int N, float *restrict u, const float *restrict b) {
    for (int t = 0; t < T; t++) {
        float *restrict row = u + (size_t)t * N;
        int n = 0;
        for (; n + 16 <= N; n += 16) gelu_erf16(row + n, b ? b + n : NULL);
        for (; n < N; n++) row[n] = gelu_erf(b ? row[n] + b[n] : row[n]);
    }
}

/* One Block1D on x (T, C), in place:
 *   x += gamma * (depthwise_conv([state; rms_norm(x) * norm_w]) + conv_b)
 *   x += ffn_gamma * (W2 gelu(W1 (rms_norm(x) * ffn_norm_w) + b1) + b2)
 * dw is the depthwise kernel as (K, C) (tap-major); w1 is (4C, C) and w2 (C, 4C), row-major
 * as nn.Linear stores them, w1h and w2h the same as bfloat16 or NULL (see product());
 * conv_b, b1 and b2 may be NULL. x holds the rows of nseg streams' segments, seg_rows[g]
 * each, T in all; states[g] is segment g's (K - 1, C) history: the last K - 1 normed rows
 * seen. xp holds ((K - 1) * nseg + T) * C floats, h T * C and u 2 * tile * 4C: the
 * FFN runs on tiles of at most `tile` rows, so that a tile's hidden activation stays in
 * cache while it is written, activated and read back.
 *
 * Rows are independent but for the conv's window, so with enough rows each phase (the
 * norm, the conv, the FFN) is shared out over both threads by rows (vv_set_sgemm's
 * `parallel`), every product and element-wise pass of a row range on one thread; with few
 * rows (the weight-bound first stages) the products are split instead, over W's rows. */
typedef struct {
    int T, C, K, tile;
    float eps;
    int nseg;
    const int *seg_rows;
    float *x;
    const float *norm_w, *dw, *conv_b, *gamma, *ffn_norm_w, *w1, *b1, *w2, *b2, *ffn_gamma;
    const unsigned short *w1h, *w2h, *w1t, *w2t;
    float *xp, *h, *u;
} Block;

/* Rows at and above which a block's phases are shared out by rows. */
#define ROWS_PARALLEL 64

/* Rows of several streams' segments are decoded as one x: segment g has seg_rows[g] rows
 * and its own conv history, and xp holds [history; normed rows] of each segment, one
 * after the other. Row t of x, in segment g, is row t + g * (K - 1) of xp's normed rows
 * (so it is read back as that segment's window). seg_of gives g and the segment's first
 * row for row t, searching from segment g0 on (rows are visited in order). */
INLINE int seg_of(const int *seg_rows, int nseg, int t, int *g, int *first) {
    while (*g < nseg - 1 && t >= *first + seg_rows[*g]) *first += seg_rows[(*g)++];
    return *first + seg_rows[*g]; /* the segment's end */
}

/* The mixer's norm, rows [t0, t1): each segment's xp = [state; normed x]. */
INLINE void block_norm(const Block *b, int t0, int t1) {
    const size_t hist = (size_t)(b->K - 1) * b->C;
    int g = 0, first = 0;
    while (t0 < t1) {
        const int end = seg_of(b->seg_rows, b->nseg, t0, &g, &first);
        const int t = end < t1 ? end : t1;
        rms_norm(t - t0, b->C, b->eps, b->x + (size_t)t0 * b->C, b->norm_w,
                 b->xp + hist * (g + 1) + (size_t)t0 * b->C);
        t0 = t;
    }
}

/* The mixer's conv, rows [t0, t1): output row t reads its segment's xp rows t .. t + K - 1,
 * out[t, c] = conv_b[c] + sum_j xp[t + j, c] * dw[j, c], and x += gamma * out. */
INLINE void block_mix(const Block *b, int t0, int t1) {
    const int C = b->C;
    const size_t hist = (size_t)(b->K - 1) * C;
    const float *restrict dw = b->dw, *restrict conv_b = b->conv_b, *restrict gamma = b->gamma;
    int g = 0, first = 0;
    for (int t = t0; t < t1; t++) {
        seg_of(b->seg_rows, b->nseg, t, &g, &first);
        float *restrict acc = b->h + (size_t)t * C;
        const float *restrict x0 = b->xp + hist * g + (size_t)t * C;
        if (conv_b)
            for (int c = 0; c < C; c++) acc[c] = conv_b[c] + x0[c] * dw[c];
        else
            for (int c = 0; c < C; c++) acc[c] = x0[c] * dw[c];
        for (int j = 1; j < b->K; j++) {
            const float *restrict xj = x0 + (size_t)j * C;
            const float *restrict wj = dw + (size_t)j * C;
            for (int c = 0; c < C; c++) acc[c] += xj[c] * wj[c];
        }
        float *restrict xr = b->x + (size_t)t * C;
        for (int c = 0; c < C; c++) xr[c] += gamma[c] * acc[c];
    }
}

/* The FFN on rows [t0, t1), a tile at a time, in worker's half of u. */
INLINE void block_ffn(const Block *b, int t0, int t1, int worker) {
    const int C = b->C, H = 4 * C;
    float *restrict u = b->u + (size_t)worker * b->tile * H;
    for (; t0 < t1; t0 += b->tile) {
        const int n = t1 - t0 < b->tile ? t1 - t0 : b->tile;
        float *restrict xt = b->x + (size_t)t0 * C;
        float *restrict ht = b->h + (size_t)t0 * C;
        rms_norm(n, C, b->eps, xt, b->ffn_norm_w, ht);
        product(n, H, C, ht, C, b->w1, b->w1h, b->w1t, u, H);
        bias_gelu(n, H, u, b->b1);
        product(n, C, H, u, H, b->w2, b->w2h, b->w2t, ht, C);
        const float *restrict fg = b->ffn_gamma, *restrict b2 = b->b2;
        for (int t = 0; t < n; t++) {
            float *restrict xr = xt + (size_t)t * C;
            const float *restrict hr = ht + (size_t)t * C;
            if (b2)
                for (int c = 0; c < C; c++) xr[c] += fg[c] * (hr[c] + b2[c]);
            else
                for (int c = 0; c < C; c++) xr[c] += fg[c] * hr[c];
        }
    }
}

INLINE void block_body(chunk_fn norm_chunk, chunk_fn mix_chunk, chunk_fn ffn_chunk, int nseg,
                       const int *restrict seg_rows, float *const *restrict states, int C,
                       int K, int tile, float eps, float *restrict x,
                       const float *restrict norm_w, const float *restrict dw,
                       const float *restrict conv_b, const float *restrict gamma,
                       const float *restrict ffn_norm_w, const float *restrict w1,
                       const float *restrict b1, const float *restrict w2,
                       const float *restrict b2, const float *restrict ffn_gamma,
                       const unsigned short *restrict w1h, const unsigned short *restrict w2h,
                       const unsigned short *restrict w1t, const unsigned short *restrict w2t,
                       float *restrict xp, float *restrict h, float *restrict u) {
    const size_t hist = (size_t)(K - 1) * C;
    int T = 0;
    for (int g = 0; g < nseg; g++) T += seg_rows[g];
    if (tile <= 0 || tile > T) tile = T;
    const int by_rows = parallel != NULL && T >= ROWS_PARALLEL;
    if (by_rows && tile > (T + 3) / 4) tile = (T + 3) / 4; /* at least 4 tiles to share */
    const Block b = {T, C, K, tile, eps, nseg, seg_rows, x, norm_w, dw, conv_b, gamma,
                     ffn_norm_w, w1, b1, w2, b2, ffn_gamma, w1h, w2h, w1t, w2t, xp, h, u};
    for (int g = 0, first = 0; g < nseg; first += seg_rows[g++])
        memcpy(xp + hist * g + (size_t)first * C, states[g], sizeof(float) * hist);
    /* Chunks of at least 16 rows and about 16 K values. */
    int rows = (16384 / C + 15) & ~15;
    rows = rows < 16 ? 16 : rows;
    if (by_rows)
        parallel(norm_chunk, &b, T, rows);
    else
        block_norm(&b, 0, T);
    /* Each segment's new history: its last K - 1 rows of xp (old history included when it
     * has fewer rows than that). */
    for (int g = 0, first = 0; g < nseg; first += seg_rows[g++])
        memcpy(states[g], xp + hist * g + (size_t)(first + seg_rows[g]) * C,
               sizeof(float) * hist);
    if (by_rows) {
        parallel(mix_chunk, &b, T, rows);
        parallel(ffn_chunk, &b, T, tile);
    } else {
        block_mix(&b, 0, T);
        block_ffn(&b, 0, T, 0);
    }
}

/* The causal transposed conv (kernel 2s, stride s, right-trimmed) from x (T, cin) to
 * y (T * s, cout). Input frame t writes output rows t*s .. t*s + s - 1 through kernel taps
 * 0 .. s-1 and the next frame's rows through taps s .. 2s-1, so
 *   y[t*s + i, :] = W[:, i, :] x[t] + W[:, s + i, :] x[t - 1] + bias.
 * w is the kernel reordered to (2, s, cout, cin) (tap-major: the MLX weight (cout, 2s, cin)
 * transposed to (2s, cout, cin)), so that taps = x @ w^T, (T, 2, s, cout), holds each
 * frame's own block and its spill as contiguous (s, cout) rows of y; w may be NULL when
 * wh, the same in bfloat16, is given (see product()). x holds nseg streams' segments of
 * seg_rows[g] rows each, T in all, decoded in one product; states[g] is segment g's spill
 * of the last frame seen, (s, cout); taps holds T * 2 * s * cout floats. */
INLINE void upsample_body(int nseg, const int *restrict seg_rows, float *const *restrict states,
                          int cin, int cout, int s, const float *restrict x,
                          const float *restrict w, const unsigned short *restrict wh,
                          const unsigned short *restrict wt, const float *restrict bias,
                          float *restrict taps, float *restrict y) {
    const int B = s * cout; /* one frame's block of output */
    const int N = 2 * B;
    int T = 0;
    for (int g = 0; g < nseg; g++) T += seg_rows[g];
    product(T, N, cin, x, cin, w, wh, wt, taps, N);
    for (int g = 0, first = 0; g < nseg; first += seg_rows[g++]) {
        if (seg_rows[g] <= 0) continue;
        for (int t = first; t < first + seg_rows[g]; t++) {
            const float *restrict own = taps + (size_t)t * N;
            const float *restrict carried = t > first ? taps + (size_t)(t - 1) * N + B : states[g];
            float *restrict yb = y + (size_t)t * B;
            if (bias) {
                for (int i = 0; i < s; i++) {
                    const size_t o = (size_t)i * cout;
                    for (int c = 0; c < cout; c++)
                        yb[o + c] = own[o + c] + carried[o + c] + bias[c];
                }
            } else {
                for (int k = 0; k < B; k++) yb[k] = own[k] + carried[k];
            }
        }
        memcpy(states[g], taps + (size_t)(first + seg_rows[g] - 1) * N + B, sizeof(float) * B);
    }
}

/* A dense causal conv (stride 1) from x (T, cin) to y (T, cout): with xp = [state; x]
 * ((K - 1 + T, cin)) and w (cout, K, cin) row-major, i.e. (cout, K * cin), row t of y is
 * w . xp[t : t + K] flattened, and those K rows are contiguous in xp. With few outputs
 * (the head: one audio channel) that is a dot product per row, read straight from xp;
 * otherwise cols receives the windows as rows of a (T, K * cin) matrix for one product
 * (BLAS operands may not overlap). state is (K - 1, cin); xp holds (K - 1 + T) * cin
 * floats and cols T * K * cin (unused with fewer than 16 outputs). */
INLINE void conv_one(int T, int cin, int cout, int K, const float *restrict x,
                    float *restrict state, const float *restrict w, const float *restrict bias,
                    float *restrict xp, float *restrict cols, float *restrict y) {
    const int D = K * cin;
    const size_t hist = (size_t)(K - 1) * cin;
    memcpy(xp, state, sizeof(float) * hist);
    memcpy(xp + hist, x, sizeof(float) * (size_t)T * cin);
    memcpy(state, xp + (size_t)T * cin, sizeof(float) * hist);
    if (cout < 16) {
        for (int t = 0; t < T; t++) {
            const float *restrict win = xp + (size_t)t * cin;
            for (int o = 0; o < cout; o++) {
                const float *restrict wo = w + (size_t)o * D;
                const float acc = dot(D, win, wo);
                y[(size_t)t * cout + o] = bias ? acc + bias[o] : acc;
            }
        }
        return;
    }
    for (int t = 0; t < T; t++)
        memcpy(cols + (size_t)t * D, xp + (size_t)t * cin, sizeof(float) * D);
    product(T, cout, D, cols, D, w, NULL, NULL, y, cout);
    if (bias)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < cout; c++) y[(size_t)t * cout + c] += bias[c];
}

/* conv_one on each of nseg streams' segments of x (seg_rows[g] rows each), with its
 * state states[g]; xp and cols are used in turn, sized for the longest segment. */
INLINE void conv_body(int nseg, const int *restrict seg_rows, float *const *restrict states,
                      int cin, int cout, int K, const float *restrict x,
                      const float *restrict w, const float *restrict bias, float *restrict xp,
                      float *restrict cols, float *restrict y) {
    for (int g = 0, first = 0; g < nseg; first += seg_rows[g++])
        if (seg_rows[g] > 0)
            conv_one(seg_rows[g], cin, cout, K, x + (size_t)first * cin, states[g], w, bias, xp,
                     cols, y + (size_t)first * cout);
}

/* ---- one function per level, and the choice among them ---- */

#define SEGMENTS int nseg, const int *restrict seg_rows, float *const *restrict states
#define BLOCK_PARAMS                                                                          \
    (SEGMENTS, int C, int K, int tile, float eps, float *restrict x,                         \
     const float *restrict norm_w, const float *restrict dw, const float *restrict conv_b,    \
     const float *restrict gamma, const float *restrict ffn_norm_w, const float *restrict w1, \
     const float *restrict b1, const float *restrict w2, const float *restrict b2,            \
     const float *restrict ffn_gamma, const unsigned short *restrict w1h,                     \
     const unsigned short *restrict w2h, const unsigned short *restrict w1t,                  \
     const unsigned short *restrict w2t, float *restrict xp, float *restrict h,               \
     float *restrict u)
#define BLOCK_ARGS                                                                           \
    (nseg, seg_rows, states, C, K, tile, eps, x, norm_w, dw, conv_b, gamma, ffn_norm_w, w1,  \
     b1, w2, b2, ffn_gamma, w1h, w2h, w1t, w2t, xp, h, u)
#define UPSAMPLE_PARAMS                                                                      \
    (SEGMENTS, int cin, int cout, int s, const float *restrict x, const float *restrict w,   \
     const unsigned short *restrict wh, const unsigned short *restrict wt,                   \
     const float *restrict bias, float *restrict taps, float *restrict y)
#define UPSAMPLE_ARGS (nseg, seg_rows, states, cin, cout, s, x, w, wh, wt, bias, taps, y)
#define CONV_PARAMS                                                                          \
    (SEGMENTS, int cin, int cout, int K, const float *restrict x, const float *restrict w,   \
     const float *restrict bias, float *restrict xp, float *restrict cols, float *restrict y)
#define CONV_ARGS (nseg, seg_rows, states, cin, cout, K, x, w, bias, xp, cols, y)

#define LEVEL(suffix, attr)                                                                  \
    attr static void norm_##suffix(const void *b, int lo, int hi, int worker) {              \
        (void)worker;                                                                        \
        block_norm(b, lo, hi);                                                               \
    }                                                                                        \
    attr static void mix_##suffix(const void *b, int lo, int hi, int worker) {               \
        (void)worker;                                                                        \
        block_mix(b, lo, hi);                                                                \
    }                                                                                        \
    attr static void ffn_##suffix(const void *b, int lo, int hi, int worker) {               \
        block_ffn(b, lo, hi, worker);                                                        \
    }                                                                                        \
    attr static void block_##suffix BLOCK_PARAMS {                                           \
        block_body(norm_##suffix, mix_##suffix, ffn_##suffix, nseg, seg_rows, states, C, K,  \
                   tile, eps, x, norm_w, dw, conv_b, gamma, ffn_norm_w, w1, b1, w2, b2,      \
                   ffn_gamma, w1h, w2h, w1t, w2t, xp, h, u);                                 \
    }                                                                                        \
    attr static void upsample_##suffix UPSAMPLE_PARAMS { upsample_body UPSAMPLE_ARGS; }      \
    attr static void conv_##suffix CONV_PARAMS { conv_body CONV_ARGS; }
LEVEL(base, )
#if defined(__x86_64__)
LEVEL(v3, V3)
LEVEL(v4, V4)
#endif

static void(*block_at) BLOCK_PARAMS = block_base;
static void(*upsample_at) UPSAMPLE_PARAMS = upsample_base;
static void(*conv_at) CONV_PARAMS = conv_base;

/* The highest level the CPU has, at most `most` (5: AVX-512 and AMX tiles, when
 * vv_set_tiles was given the shim's AMX product; 4: AVX-512; 3: AVX2 and FMA; 1:
 * baseline); every layer runs at it from now on (level 5: the layers of level 4, with the
 * products against weights laid out for the tiles on AMX). A `most` below 1 only asks.
 * Returns the level in use. */
int vv_cpu_level(int most) {
    if (most < 1) return level_in_use;
    int level = cpu_level_at_most(most < 4 ? most : 4);
    if (most >= 5 && level == 4 && tiles_gemm != NULL) level = 5;
#if defined(__x86_64__)
    block_at = level >= 4 ? block_v4 : level == 3 ? block_v3 : block_base;
    upsample_at = level >= 4 ? upsample_v4 : level == 3 ? upsample_v3 : upsample_base;
    conv_at = level >= 4 ? conv_v4 : level == 3 ? conv_v3 : conv_base;
#endif
    level_in_use = level;
    return level;
}

__attribute__((constructor)) static void choose_level(void) { vv_cpu_level(4); }

void vv_block BLOCK_PARAMS { block_at BLOCK_ARGS; }
void vv_upsample UPSAMPLE_PARAMS { upsample_at UPSAMPLE_ARGS; }
void vv_conv CONV_PARAMS { conv_at CONV_ARGS; }

/* bf16_from_f32 (engine/_bf16.h), exported. */
int vv_to_bf16(long n, const unsigned int *restrict src,
                 unsigned short *restrict dst) {
    return bf16_from_f32(n, src, dst);
}

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

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef void (*wgemm_fn)(int, int, int, const float *, int, const float *, int, float *, int);
typedef void (*bf16w_fn)(int, int, int, const float *, int, const unsigned short *, int,
                         float *, int);
static sgemm_fn few_rows_sgemm;
static wgemm_fn plain_gemm;
static bf16w_fn bf16w_gemm;
static int few_rows_max;

/* Products of 2 to 4 rows use a layer's bfloat16 copy of its weights when it has one
 * (half the bytes of a weight-bound product: the decoder took 123 against 142 ms for two
 * frames here, the same for four). One row stays with float32 and OpenBLAS's sgemv (75
 * against 86 ms; with the shim's prefetching one-row bfloat16 kernel, 73-78 against 74-80
 * ms for one frame: no gain), larger products are compute-bound. */
#define BF16_MIN_ROWS 2
#define BF16_MAX_ROWS 4

/* Where the products go; set before any other call. Products of at most `max_rows` rows
 * go to `few` (the shim's cblas_sgemm: one pass over the weights, two threads), the others
 * to `plain` (the shim's vvreader_sgemm, C = A W^T through OpenBLAS's sgemm: the shim's
 * kernel is slower from about 16 rows on); `bf16w` (the shim's vvreader_sgemm_bf16w, may
 * be NULL) takes bfloat16 weights. */
void vv_set_sgemm(sgemm_fn few, wgemm_fn plain, int max_rows, bf16w_fn bf16w) {
    few_rows_sgemm = few;
    plain_gemm = plain;
    few_rows_max = max_rows;
    bf16w_gemm = bf16w;
}

/* C (M, N) = A (M, K) W^T, W (N, K) row-major in float32 (w) and/or bfloat16 (wh, may be
 * NULL; w may be NULL when wh is given). */
static void product(int M, int N, int K, const float *A, int lda, const float *w,
                    const unsigned short *wh, float *C, int ldc) {
    if (wh && bf16w_gemm && ((M >= BF16_MIN_ROWS && M <= BF16_MAX_ROWS) || !w)) {
        bf16w_gemm(M, N, K, A, lda, wh, K, C, ldc);
        return;
    }
    if (M <= few_rows_max)
        few_rows_sgemm(RowMajor, NoTrans, Trans, M, N, K, 1.0f, A, lda, w, K, 0.0f, C, ldc);
    else
        plain_gemm(M, N, K, A, lda, w, K, C, ldc);
}

#if defined(__x86_64__)
/* Each layer is compiled once per x86-64 level (v4: AVX-512; v3: AVX2 and FMA; and the
 * baseline), and vv_cpu_level picks one for every layer at once: the best the CPU has,
 * unless a lower one is asked for (engine/switches.py: measuring and testing the AVX2
 * path on an AVX-512 machine). A target string with a comma ("avx2,fma") would be two
 * levels, one without FMA and one without AVX2, hence the level names. */
#define V4 __attribute__((target("arch=x86-64-v4")))
#define V3 __attribute__((target("arch=x86-64-v3")))
#endif
/* Helpers are inlined into each level's function, so they are compiled for its
 * instruction set. */
#define INLINE static inline __attribute__((always_inline))

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

/* Exact-erf GELU, x / 2 * (1 + erf(x / sqrt 2)), after adding the bias b (per column):
 * erf(v) ~= v * P(v^2) / Q(v^2) with v clamped to [-4, 4] (beyond, erf is +-1 in float32),
 * the rational approximation engine/acoustic.py uses (max error 4.4e-7). */
INLINE void bias_gelu(int T, int N, float *restrict u, const float *restrict b) {
    const float P0 = -2.72614225801306e-10f, P1 = 2.77068142495902e-08f,
                P2 = -2.10102402082508e-06f, P3 = -5.69250639462346e-05f,
                P4 = -7.34990630326855e-04f, P5 = -2.95459980854025e-03f,
                P6 = -1.60960333262415e-02f;
    const float Q0 = -1.45660718464996e-05f, Q1 = -2.13374055278905e-04f,
                Q2 = -1.68282697438203e-03f, Q3 = -7.37332916720468e-03f,
                Q4 = -1.42647390514189e-02f;
    for (int t = 0; t < T; t++) {
        float *restrict row = u + (size_t)t * N;
        for (int n = 0; n < N; n++) {
            const float x = b ? row[n] + b[n] : row[n];
            float v = x * 0.7071067811865476f;
            v = v < -4.0f ? -4.0f : v;
            v = v > 4.0f ? 4.0f : v;
            const float v2 = v * v;
            const float p = (((((P0 * v2 + P1) * v2 + P2) * v2 + P3) * v2 + P4) * v2 + P5) * v2 + P6;
            const float q = (((Q0 * v2 + Q1) * v2 + Q2) * v2 + Q3) * v2 + Q4;
            row[n] = 0.5f * x * (1.0f + v * p / q);
        }
    }
}

/* One Block1D on x (T, C), in place:
 *   x += gamma * (depthwise_conv([state; rms_norm(x) * norm_w]) + conv_b)
 *   x += ffn_gamma * (W2 gelu(W1 (rms_norm(x) * ffn_norm_w) + b1) + b2)
 * dw is the depthwise kernel as (K, C) (tap-major); w1 is (4C, C) and w2 (C, 4C), row-major
 * as nn.Linear stores them, w1h and w2h the same as bfloat16 or NULL (see product());
 * conv_b, b1 and b2 may be NULL. state is (K - 1, C): the last
 * K - 1 normed rows seen. xp holds (K - 1 + T) * C floats, h T * C and u tile * 4C: the
 * FFN runs on tiles of `tile` rows, so that u stays in cache while it is written,
 * activated and read back. */
INLINE void block_body(int T, int C, int K, int tile, float eps, float *restrict x,
                     float *restrict state, const float *restrict norm_w,
                     const float *restrict dw, const float *restrict conv_b,
                     const float *restrict gamma, const float *restrict ffn_norm_w,
                     const float *restrict w1, const float *restrict b1,
                     const float *restrict w2, const float *restrict b2,
                     const float *restrict ffn_gamma, const unsigned short *restrict w1h,
                     const unsigned short *restrict w2h, float *restrict xp, float *restrict h,
                     float *restrict u) {
    const int H = 4 * C;
    const size_t hist = (size_t)(K - 1) * C;
    /* The mixer. xp = [state; normed x], so output row t reads xp rows t .. t + K - 1:
     * out[t, c] = conv_b[c] + sum_j xp[t + j, c] * dw[j, c]. */
    memcpy(xp, state, sizeof(float) * hist);
    rms_norm(T, C, eps, x, norm_w, xp + hist);
    for (int t = 0; t < T; t++) {
        float *restrict acc = h + (size_t)t * C;
        const float *restrict x0 = xp + (size_t)t * C;
        if (conv_b)
            for (int c = 0; c < C; c++) acc[c] = conv_b[c] + x0[c] * dw[c];
        else
            for (int c = 0; c < C; c++) acc[c] = x0[c] * dw[c];
        for (int j = 1; j < K; j++) {
            const float *restrict xj = x0 + (size_t)j * C;
            const float *restrict wj = dw + (size_t)j * C;
            for (int c = 0; c < C; c++) acc[c] += xj[c] * wj[c];
        }
        float *restrict xr = x + (size_t)t * C;
        for (int c = 0; c < C; c++) xr[c] += gamma[c] * acc[c];
    }
    memcpy(state, xp + (size_t)T * C, sizeof(float) * hist);
    /* The FFN, tile by tile (rows are independent). */
    if (tile <= 0 || tile > T) tile = T;
    for (int t0 = 0; t0 < T; t0 += tile) {
        const int n = T - t0 < tile ? T - t0 : tile;
        float *restrict xt = x + (size_t)t0 * C;
        float *restrict ht = h + (size_t)t0 * C;
        rms_norm(n, C, eps, xt, ffn_norm_w, ht);
        product(n, H, C, ht, C, w1, w1h, u, H);
        bias_gelu(n, H, u, b1);
        product(n, C, H, u, H, w2, w2h, ht, C);
        for (int t = 0; t < n; t++) {
            float *restrict xr = xt + (size_t)t * C;
            const float *restrict hr = ht + (size_t)t * C;
            if (b2)
                for (int c = 0; c < C; c++) xr[c] += ffn_gamma[c] * (hr[c] + b2[c]);
            else
                for (int c = 0; c < C; c++) xr[c] += ffn_gamma[c] * hr[c];
        }
    }
}

/* The causal transposed conv (kernel 2s, stride s, right-trimmed) from x (T, cin) to
 * y (T * s, cout). Input frame t writes output rows t*s .. t*s + s - 1 through kernel taps
 * 0 .. s-1 and the next frame's rows through taps s .. 2s-1, so
 *   y[t*s + i, :] = W[:, i, :] x[t] + W[:, s + i, :] x[t - 1] + bias.
 * w is the kernel reordered to (2, s, cout, cin) (tap-major: the MLX weight (cout, 2s, cin)
 * transposed to (2s, cout, cin)), so that taps = x @ w^T, (T, 2, s, cout), holds each
 * frame's own block and its spill as contiguous (s, cout) rows of y; w may be NULL when
 * wh, the same in bfloat16, is given (see product()). state is the spill of the last frame
 * seen, (s, cout); taps holds T * 2 * s * cout floats. */
INLINE void upsample_body(int T, int cin, int cout, int s, const float *restrict x,
                        float *restrict state, const float *restrict w,
                        const unsigned short *restrict wh, const float *restrict bias,
                        float *restrict taps, float *restrict y) {
    const int B = s * cout; /* one frame's block of output */
    const int N = 2 * B;
    product(T, N, cin, x, cin, w, wh, taps, N);
    for (int t = 0; t < T; t++) {
        const float *restrict own = taps + (size_t)t * N;
        const float *restrict carried = t > 0 ? taps + (size_t)(t - 1) * N + B : state;
        float *restrict yb = y + (size_t)t * B;
        if (bias) {
            for (int i = 0; i < s; i++) {
                const size_t o = (size_t)i * cout;
                for (int c = 0; c < cout; c++) yb[o + c] = own[o + c] + carried[o + c] + bias[c];
            }
        } else {
            for (int k = 0; k < B; k++) yb[k] = own[k] + carried[k];
        }
    }
    memcpy(state, taps + (size_t)(T - 1) * N + B, sizeof(float) * B);
}

/* A dense causal conv (stride 1) from x (T, cin) to y (T, cout): with xp = [state; x]
 * ((K - 1 + T, cin)) and w (cout, K, cin) row-major, i.e. (cout, K * cin), row t of y is
 * w . xp[t : t + K] flattened, and those K rows are contiguous in xp. With few outputs
 * (the head: one audio channel) that is a dot product per row, read straight from xp;
 * otherwise cols receives the windows as rows of a (T, K * cin) matrix for one product
 * (BLAS operands may not overlap). state is (K - 1, cin); xp holds (K - 1 + T) * cin
 * floats and cols T * K * cin (unused with fewer than 16 outputs). */
INLINE void conv_body(int T, int cin, int cout, int K, const float *restrict x,
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
    product(T, cout, D, cols, D, w, NULL, y, cout);
    if (bias)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < cout; c++) y[(size_t)t * cout + c] += bias[c];
}

/* ---- one function per level, and the choice among them ---- */

#define BLOCK_PARAMS                                                                          \
    (int T, int C, int K, int tile, float eps, float *restrict x, float *restrict state,      \
     const float *restrict norm_w, const float *restrict dw, const float *restrict conv_b,    \
     const float *restrict gamma, const float *restrict ffn_norm_w, const float *restrict w1, \
     const float *restrict b1, const float *restrict w2, const float *restrict b2,            \
     const float *restrict ffn_gamma, const unsigned short *restrict w1h,                     \
     const unsigned short *restrict w2h, float *restrict xp, float *restrict h,               \
     float *restrict u)
#define BLOCK_ARGS                                                                           \
    (T, C, K, tile, eps, x, state, norm_w, dw, conv_b, gamma, ffn_norm_w, w1, b1, w2, b2,     \
     ffn_gamma, w1h, w2h, xp, h, u)
#define UPSAMPLE_PARAMS                                                                      \
    (int T, int cin, int cout, int s, const float *restrict x, float *restrict state,        \
     const float *restrict w, const unsigned short *restrict wh, const float *restrict bias, \
     float *restrict taps, float *restrict y)
#define UPSAMPLE_ARGS (T, cin, cout, s, x, state, w, wh, bias, taps, y)
#define CONV_PARAMS                                                                          \
    (int T, int cin, int cout, int K, const float *restrict x, float *restrict state,        \
     const float *restrict w, const float *restrict bias, float *restrict xp,               \
     float *restrict cols, float *restrict y)
#define CONV_ARGS (T, cin, cout, K, x, state, w, bias, xp, cols, y)

#define LEVEL(suffix, attr)                                                                  \
    attr static void block_##suffix BLOCK_PARAMS { block_body BLOCK_ARGS; }                  \
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
static int level_in_use = 1;

/* The highest x86-64 level (4, 3 or 1: baseline) the CPU has, at most `most`; every layer
 * runs at it from now on. A `most` below 1 only asks. Returns the level in use. */
int vv_cpu_level(int most) {
    if (most < 1) return level_in_use;
    int level = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (most >= 4 && __builtin_cpu_supports("x86-64-v4"))
        level = 4;
    else if (most >= 3 && __builtin_cpu_supports("x86-64-v3"))
        level = 3;
    block_at = level == 4 ? block_v4 : level == 3 ? block_v3 : block_base;
    upsample_at = level == 4 ? upsample_v4 : level == 3 ? upsample_v3 : upsample_base;
    conv_at = level == 4 ? conv_v4 : level == 3 ? conv_v3 : conv_base;
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

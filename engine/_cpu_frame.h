/* What engine/_cpu_lm.c (the LMs' steps) and engine/_cpu_head.c (the diffusion sampler),
 * one library (engine._cpu_frame), each have: the BLAS shim's product and threads, and the
 * vector helpers their element-wise loops are built from. */
#ifndef VVREADER_CPU_FRAME_H
#define VVREADER_CPU_FRAME_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "_cpu_level.h"

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
/* fn(arg, lo, hi, worker) for [lo, hi) of a range cut into chunks; worker is 0 or 1. */
typedef void (*chunk_fn)(const void *arg, int lo, int hi, int worker);
typedef void (*parallel_fn)(chunk_fn fn, const void *arg, int total, int chunk);
/* The shim's cblas_sgemm and vvreader_parallel (NULL: one thread): each source has its
 * own, set by its own setter (vl_set_blas, vh_set_blas) before any call. */
static sgemm_fn frame_sgemm;
static parallel_fn frame_parallel;

static inline void run_parallel(chunk_fn fn, const void *arg, int total, int chunk) {
    if (frame_parallel != NULL)
        frame_parallel(fn, arg, total, chunk);
    else
        fn(arg, 0, total, 0);
}

/* C (M, N) = A (M, K) W^T + beta * C, W (N, K) row-major, C's rows ldc apart: x @ W.T as
 * nn.Linear computes it. */
static inline void product(int M, int N, int K, const float *A, const float *W, float beta,
                           float *C, int ldc) {
    frame_sgemm(RowMajor, NoTrans, Trans, M, N, K, 1.0f, A, K, W, K, beta, C, ldc);
}

/* The sampler's loops at a level (engine/_cpu_head.c), chosen with the step's (vl_cpu_level). */
void head_use_level(int level);


typedef float v16 __attribute__((vector_size(64)));
typedef int i16 __attribute__((vector_size(64)));

INLINE v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

INLINE v16 splat(float x) { return (v16){0} + x; }

typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

/* The sum of v's lanes, halves added pairwise (a few vector adds; a plain loop is 16
 * dependent scalar adds, since C keeps float sums in order). */
INLINE float hsum(v16 v) {
    const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* a where mask (all bits set), else b: C has no vector ?: */
INLINE v16 select16(i16 mask, v16 a, v16 b) {
    i16 ai, bi;
    memcpy(&ai, &a, sizeof ai);
    memcpy(&bi, &b, sizeof bi);
    ai = (ai & mask) | (bi & ~mask);
    memcpy(&a, &ai, sizeof a);
    return a;
}

/* exp(x): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-6 Taylor polynomial
 * (relative error below 2e-7 there), times 2^n built in the exponent bits. x is clamped
 * to 88.7 above; below -87.3 (where exp is below the least normal float) the result is 0. */
INLINE v16 exp16(v16 x) {
    const v16 lo = splat(-87.33654f), hi = splat(88.72283f);
    const i16 under = x < lo;
    x = select16(x < hi, x, hi);
    x = select16(under, lo, x);
    /* n = round(x / ln 2), halves away from zero (the conversion truncates). */
    const v16 half = select16(x < 0, splat(-0.5f), splat(0.5f));
    const i16 n = __builtin_convertvector(x * 1.44269504f + half, i16);
    const v16 nf = __builtin_convertvector(n, v16);
    /* ln 2 = 0.693359375 - 2.12194440e-4, the first part exact in few bits, so that
     * n times it is exact. */
    const v16 r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
    v16 p = splat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const i16 bits = (n + 127) << 23;
    v16 scale;
    memcpy(&scale, &bits, sizeof scale);
    return select16(under, splat(0.0f), p * scale);
}

INLINE float exp1(float x) { return exp16(splat(x))[0]; }

/* 1 / sqrt(mean(x^2) + eps) over n values (n a multiple of 16): an RMS norm's factor. */
INLINE float rms_factor(int n, float eps, const float *restrict x) {
    v16 acc = {0};
    for (int i = 0; i < n; i += 16) {
        const v16 v = load16(x + i);
        acc += v * v;
    }
    return 1.0f / sqrtf(hsum(acc) / (float)n + eps);
}

/* y = x / sqrt(mean(x^2) + eps) * w over n values (n a multiple of 16), as mx.fast.rms_norm. */
INLINE void rms_norm(int n, float eps, const float *restrict x, const float *restrict w,
                     float *restrict y) {
    const float r = rms_factor(n, eps, x);
    for (int i = 0; i < n; i += 16) store16(y + i, load16(x + i) * r * load16(w + i));
}


#endif

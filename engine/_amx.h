/* Products against a bfloat16 W on Intel AMX (Advanced Matrix Extensions: Sapphire Rapids
 * and later Xeons), for engine/_blas_shim.c:
 *
 *   C[i, n] = alpha * A[i, :] . W[n, :] + beta * C[i, n]      (A float32, W bfloat16)
 *
 * An AMX tile multiply-add (TDPBF16PS) takes a 16 x 32 tile of bfloat16 values, a 16 x 16
 * tile of bfloat16 pairs and adds their product to a 16 x 16 float32 tile: 8,192
 * multiply-adds in one instruction, 16 times what AVX-512 does with float32 in the same
 * time. Its first operand is 16 rows of 32 values, which is exactly 16 rows of W (stored
 * (N, K), row-major) as they lie in memory: W is read in place, as the other kernels read
 * it. The second is A transposed and laid out in pairs ("VNNI" layout), packed once per
 * call; so each tile of results is C transposed, 16 rows of W by 16 rows of A.
 *
 * bfloat16 keeps 8 bits of a float32's 24-bit significand, and the parity cases allow
 * float32 rounding, not bfloat16's. W is exact (the checkpoint is bfloat16); A is split
 * into AMX_PARTS = 3 bfloat16 parts, a0 = A rounded, a1 = (A - a0) rounded, a2 = (A - a0
 * - a1) rounded, and each is multiplied (the products are exact, the sums float32): A is
 * then carried to about 2^-26 of itself, closer than float32's own rounding (2^-24), where
 * one bfloat16 would be 2^-9 off and two 2^-17. Three times the multiply-adds, still more
 * than 5 times AVX-512's rate.
 *
 * Tiles are a per-thread state the kernel must ask Linux for (arch_prctl), once per
 * process: amx_usable() does, and says whether the CPU and the kernel allow them. Each
 * call loads its tile configuration on its own thread and releases the tiles at the end.
 */
#ifndef VVREADER_AMX_H
#define VVREADER_AMX_H

/* The AMX intrinsics came with GCC 11 (amxtileintrin.h) and Clang 11 (amxintrin.h); an
 * older compiler builds the other kernels only. */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_include)
#if __has_include(<amxtileintrin.h>) || __has_include(<amxintrin.h>)
#define VV_AMX_COMPILER 1
#endif
#endif

#if defined(VV_AMX_COMPILER)
#define VV_HAVE_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16,amx-tile,amx-bf16")))

/* Whether this CPU has AMX tiles with bfloat16, and the AVX-512 (x86-64-v4) and
 * AVX512_BF16 instructions the kernels around them use, and Linux lets this process use
 * the tiles. */
static int amx_usable(void) {
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("x86-64-v4")) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
    if (!tile || !bf16) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return 0; /* AVX512_BF16 */
    /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: the tile data is a large state that a
     * process must ask for before its first tile instruction (else SIGILL). */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

/* Tile configuration, palette 1: 16 tiles' bytes per row and rows. */
typedef struct {
    unsigned char palette, start_row, reserved[14];
    unsigned short colsb[16];
    unsigned char rows[16];
} AmxConfig;

/* Tiles 0-3: results (n rows of W by 16 rows of A, float32); 4: 16 rows of W by 32 of
 * its values; 5: 32 columns of one part of A (16 pairs by 16 rows of A). */
enum { AMX_RESULTS = 4, AMX_PARTS = 3 };

#ifndef AMX_AHEAD
#define AMX_AHEAD 8
#endif

/* Tiles 0 .. tiles - 1 in use, each of 16 rows of 64 bytes but the first `first`, of
 * `rows` rows. */
AMX_TARGET static void amx_configure(int tiles, int first, int rows) {
    AmxConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < tiles; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = (unsigned char)(t < first ? rows : 16);
    }
    _tile_loadconfig(&cfg);
}

/* Bytes of one packed part of M rows of A with K columns (K a multiple of 32): blocks of
 * 16 rows of A, each K / 32 tiles of 1 KB. */
static inline size_t amx_packed_bytes(int M, int K) {
    return (size_t)((M + 15) / 16) * (size_t)(K / 32) * 1024;
}

/* A (M, K), rows lda apart, into its AMX_PARTS parts, `size` values apart in out (each
 * amx_packed_bytes): tile (block b, step s) of a part holds, at row p and column 2m + e,
 * that part of A[16b + m, 32s + 2p + e] (0 for rows past M). A row's 32 values of a step
 * are 16 pairs, one 32-bit word each, which go 16 words apart: one scatter per part. */
AMX_TARGET static void amx_pack(int M, int K, const float *A, int lda, unsigned short *out,
                                size_t size) {
    const int steps = K / 32, blocks = (M + 15) / 16;
    const size_t block_values = (size_t)steps * 512;
    if (M % 16 != 0)
        for (int p = 0; p < AMX_PARTS; p++)
            memset(out + p * size + (size_t)(blocks - 1) * block_values, 0,
                   sizeof(*out) * block_values);
    const __m512i pairs = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(16));
    for (int i = 0; i < M; i++) {
        const float *a = A + (size_t)i * lda;
        const __m512i at = _mm512_add_epi32(pairs, _mm512_set1_epi32(i % 16));
        unsigned short *block = out + (size_t)(i / 16) * block_values;
        for (int s = 0; s < steps; s++) {
            __m512 x0 = _mm512_loadu_ps(a + 32 * s), x1 = _mm512_loadu_ps(a + 32 * s + 16);
            for (int p = 0; p < AMX_PARTS; p++) {
                /* Values 0-15 from x0 in the low half, 16-31 from x1 in the high half. */
                const __m512i part = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
                _mm512_i32scatter_epi32(block + p * size + (size_t)s * 512, at, part, 4);
                const __m512 back0 = _mm512_castsi512_ps(_mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm512_castsi512_si256(part)), 16));
                const __m512 back1 = _mm512_castsi512_ps(_mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(part, 1)), 16));
                x0 = _mm512_sub_ps(x0, back0);
                x1 = _mm512_sub_ps(x1, back1);
            }
        }
    }
}

/* One result tile t (W rows n0.., A rows i0..) into C, transposed, scaled. */
AMX_TARGET static inline void amx_store(float *buf, int nr, int mr, int i0, int n0,
                                        float alpha, float beta, float *C, int ldc) {
    for (int m = 0; m < mr; m++) {
        float *c = C + (size_t)(i0 + m) * ldc + n0;
        if (beta == 0.0f)
            for (int r = 0; r < nr; r++) c[r] = alpha * buf[r * 16 + m];
        else
            for (int r = 0; r < nr; r++) c[r] = alpha * buf[r * 16 + m] + beta * c[r];
    }
}

/* Rows [n0, n1) of W (n0 a multiple of 16) against every row of A, packed by amx_pack
 * (its parts `size` values apart). W: rows of K bfloat16 values, ldw apart (K a multiple
 * of 32). */
AMX_TARGET static void amx_rows(int M, int K, const unsigned short *packed, size_t size,
                                const unsigned short *W, int ldw, float alpha, float beta,
                                float *C, int ldc, int n0, int n1) {
    const int steps = K / 32, blocks = (M + 15) / 16;
    const size_t block_stride = (size_t)steps * 512;
    const long wstride = (long)ldw * 2;
    float buf[AMX_RESULTS][256];
    int configured = -1;
    for (int n = n0; n < n1; n += 16) {
        const int nr = n1 - n < 16 ? n1 - n : 16;
        if (nr != configured) {
            amx_configure(6, 5, nr); /* results and W: nr rows */
            configured = nr;
        }
        const unsigned short *w = W + (size_t)n * ldw;
        for (int b0 = 0; b0 < blocks; b0 += AMX_RESULTS) {
            const int g = blocks - b0 < AMX_RESULTS ? blocks - b0 : AMX_RESULTS;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            const unsigned short *a = packed + (size_t)b0 * block_stride;
            for (int s = 0; s < steps; s++) {
                /* The lines of W this loop reads AMX_AHEAD steps later (in these 16 rows,
                 * else in the next 16), fetched while these are used: 16 rows read side by
                 * side are more streams than the hardware prefetcher follows well. Past
                 * the end of W a prefetch does nothing. */
                if (b0 == 0) {
                    const int ahead = s + AMX_AHEAD;
                    const unsigned short *p =
                        ahead < steps ? w + 32 * ahead : w + (size_t)16 * ldw + 32 * (ahead - steps);
                    for (int r = 0; r < 16; r++) __builtin_prefetch(p + (size_t)r * ldw);
                }
                _tile_loadd(4, w + 32 * s, wstride);
                const size_t t = (size_t)s * 512;
#define AMX_BLOCK(R)                                                                      \
    if (g > R)                                                                            \
        for (int p = 0; p < AMX_PARTS; p++) {                                             \
            _tile_loadd(5, a + p * size + (size_t)(R) * block_stride + t, 64);            \
            _tile_dpbf16ps(R, 4, 5);                                                      \
        }
                AMX_BLOCK(0)
                AMX_BLOCK(1)
                AMX_BLOCK(2)
                AMX_BLOCK(3)
#undef AMX_BLOCK
            }
            _tile_stored(0, buf[0], 64);
            if (g > 1) _tile_stored(1, buf[1], 64);
            if (g > 2) _tile_stored(2, buf[2], 64);
            if (g > 3) _tile_stored(3, buf[3], 64);
            for (int r = 0; r < g; r++) {
                const int i0 = 16 * (b0 + r);
                const int mr = M - i0 < 16 ? M - i0 : 16;
                amx_store(buf[r], nr, mr, i0, n, alpha, beta, C, ldc);
            }
        }
    }
    _tile_release();
}


/* ---- products with many rows of A: W laid out for the tiles once ----
 *
 * With many rows of A (the decoder's later stages: up to 3,200 rows a frame) the product
 * is bound by arithmetic, not by reading W, and packing A transposed would cost as much
 * as the product. There the roles are the natural ones: 16 rows of A (as two bfloat16
 * parts, in rows) are the first operand, and W, laid out once in pairs (amx_layout), the
 * second; each result tile is 16 rows by 16 columns of C, stored in place. */

/* W (N, K) bfloat16, rows ldw apart, into the second operand's layout: tile (block b of 16
 * rows of W, step s of 32 columns) holds, at row p and column 2n + e, W[16b + n, 32s + 2p
 * + e]. */
static void amx_layout(int N, int K, const unsigned short *W, int ldw, unsigned short *out) {
    const int steps = K / 32;
    for (int b = 0; b < N / 16; b++)
        for (int s = 0; s < steps; s++) {
            unsigned short *tile = out + ((size_t)b * steps + s) * 512;
            for (int n = 0; n < 16; n++) {
                const unsigned short *w = W + (size_t)(16 * b + n) * ldw + 32 * s;
                for (int q = 0; q < 32; q++) tile[(q / 2) * 32 + 2 * n + (q & 1)] = w[q];
            }
        }
}

/* Rows [0, M) of A (M, K) as its AMX_PARTS bfloat16 parts, each (rows, K), rows * K
 * values apart in out; rows M .. rows - 1 zero. */
AMX_TARGET static void amx_split(int M, int rows, int K, const float *A, int lda,
                                 unsigned short *out) {
    const size_t size = (size_t)rows * K;
    for (int i = 0; i < rows; i++) {
        unsigned short *o = out + (size_t)i * K;
        if (i >= M) {
            for (int p = 0; p < AMX_PARTS; p++) memset(o + p * size, 0, sizeof(*o) * K);
            continue;
        }
        const float *a = A + (size_t)i * lda;
        for (int k = 0; k < K; k += 16) {
            __m512 x = _mm512_loadu_ps(a + k);
            for (int p = 0; p < AMX_PARTS; p++) {
                const __m256bh part = _mm512_cvtneps_pbh(x);
                _mm256_storeu_si256((__m256i *)(o + p * size + k), (__m256i)part);
                const __m512 back = _mm512_castsi512_ps(
                    _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)part), 16));
                x = _mm512_sub_ps(x, back);
            }
        }
    }
}

/* C (M, N) = A (M, K) W^T for the M rows of A split by amx_split into `parts` (rows a
 * multiple of 32), W laid out by amx_layout (Wt). N and K are multiples of 32.
 *
 * Tiles: 0 and 1 hold results (16 rows of A by two blocks of 16 columns of W), 2 and 3
 * the two blocks of W, 4, 5 and 6 the three parts of A. Every tile is loaded once per
 * step and each load comes a few multiply-adds before its first use: a tile cannot be
 * loaded again while a multiply-add still reads it, so reloading the same two tiles for
 * each part (2 x 2 results) stalled, and took half as long again. */
AMX_TARGET static void amx_gemm_split(int M, int rows, int N, int K, const unsigned short *parts,
                                      const unsigned short *Wt, float *C, int ldc) {
    amx_configure(7, 0, 16);
    const int steps = K / 32;
    const long astride = (long)K * 2, cstride = (long)ldc * 4;
    const size_t part = (size_t)rows * K;
    float buf[256];
    for (int nb = 0; nb < N / 16; nb += 2) {
        const unsigned short *w0 = Wt + (size_t)nb * steps * 512, *w1 = w0 + (size_t)steps * 512;
        for (int m = 0; m < rows && m < M; m += 16) {
            _tile_zero(0);
            _tile_zero(1);
            const unsigned short *a = parts + (size_t)m * K;
            for (int s = 0; s < steps; s++) {
                _tile_loadd(4, a + 32 * s, astride);
                _tile_loadd(2, w0 + (size_t)s * 512, 64);
                _tile_loadd(5, a + part + 32 * s, astride);
                _tile_dpbf16ps(0, 4, 2);
                _tile_loadd(3, w1 + (size_t)s * 512, 64);
                _tile_dpbf16ps(0, 5, 2);
                _tile_loadd(6, a + 2 * part + 32 * s, astride);
                _tile_dpbf16ps(1, 4, 3);
                _tile_dpbf16ps(1, 5, 3);
                _tile_dpbf16ps(0, 6, 2);
                _tile_dpbf16ps(1, 6, 3);
            }
            /* 16 whole rows of C straight in; a last partial tile through buf. */
            float *c = C + (size_t)m * ldc + 16 * nb;
            if (M - m >= 16) {
                _tile_stored(0, c, cstride);
                _tile_stored(1, c + 16, cstride);
            } else {
                _tile_stored(0, buf, 64);
                for (int r = 0; r < M - m; r++) memcpy(c + (size_t)r * ldc, buf + 16 * r, 64);
                _tile_stored(1, buf, 64);
                for (int r = 0; r < M - m; r++) memcpy(c + (size_t)r * ldc + 16, buf + 16 * r, 64);
            }
        }
    }
    _tile_release();
}

#else
#define VV_HAVE_AMX 0
#endif

#endif

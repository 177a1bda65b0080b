/* The few-row product against a bfloat16 W, for one instruction set; engine/_blas_shim.c
 * includes this file once per set it builds (AVX-512, AVX2 + FMA, plain), each time with
 * ROWS_SUFFIX (name suffix), ROWS_TARGET (function attributes), ROWS_W (float32 lanes per
 * vector) and ROWS_MR (most rows of A per micro-kernel: 4 * ROWS_MR accumulators must fit
 * in the registers with a few to spare) defined.
 *
 *   C[i, n] = alpha * A[i, :] . W[n, :] + beta * C[i, n]     (rows n0 <= n < n1)
 *
 * Widening bfloat16 to float32 is a shift: the 16 bits are the top half of the float. One
 * vector of 2 * ROWS_W bfloat16 read as ROWS_W 32-bit words holds the even-indexed values
 * in its low halves and the odd-indexed ones in its high halves, so
 *     even = word << 16          odd = word & 0xFFFF0000
 * widen both without moving a value across lanes (a zero-extending widen is a shuffle,
 * and with so few rows shuffles, not the multiply-adds, would bound the product). A is
 * packed to match once per call (Job.Ae / Job.Ao: its even and its odd columns), so each
 * weight vector costs a load, a shift and an and, and serves every row with two fused
 * multiply-adds. The sums are the exact products added in another order than the float32
 * kernel's: results agree to float32 rounding.
 */

#define ROWS_CAT2(a, b) a##_##b
#define ROWS_CAT(a, b) ROWS_CAT2(a, b)
#define ROWS_NAME(name) ROWS_CAT(name, ROWS_SUFFIX)

typedef float ROWS_NAME(vf) __attribute__((vector_size(ROWS_W * 4)));
typedef unsigned int ROWS_NAME(vu) __attribute__((vector_size(ROWS_W * 4)));

/* MR rows of A (from i0) against 4 rows of W (from n0). */
ROWS_TARGET static inline __attribute__((always_inline)) void ROWS_NAME(micro)(
    const Job *j, int i0, int n0, const int MR) {
    typedef ROWS_NAME(vf) vf;
    typedef ROWS_NAME(vu) vu;
    enum { NC = 4, STEP = 2 * ROWS_W };
    const int K = j->K, KV = K / STEP * STEP, half = j->packed_half;
    const unsigned short *w[NC];
    for (int c = 0; c < NC; c++) w[c] = j->Wh + (size_t)(n0 + c) * j->ldw;
    vf acc[ROWS_MR][NC];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = (vf){0};
    const vu high = (vu){0} + 0xFFFF0000u;
    /* The next NC rows of W, fetched while these are used: a row of 896 bfloat16 values
     * is too short a stream for the hardware prefetcher to get going. One line of each
     * row per step of 2 * ROWS_W values (a line is 32 of them); prefetching past the end
     * of W is harmless (no fault, on x86 and arm64). */
    const size_t ahead = (size_t)NC * j->ldw;
    for (int k = 0; k < KV; k += STEP) {
        if ((k & 31) == 0)
            for (int c = 0; c < NC; c++) __builtin_prefetch(w[c] + k + ahead);
        vf even[NC], odd[NC];
        for (int c = 0; c < NC; c++) {
            vu u;
            memcpy(&u, w[c] + k, sizeof u);
            vu e = u << 16, o = u & high;
            memcpy(&even[c], &e, sizeof e);
            memcpy(&odd[c], &o, sizeof o);
        }
        for (int r = 0; r < MR; r++) {
            vf ae, ao;
            memcpy(&ae, j->Ae + (size_t)(i0 + r) * half + k / 2, sizeof ae);
            memcpy(&ao, j->Ao + (size_t)(i0 + r) * half + k / 2, sizeof ao);
            /* Two statements: two fused multiply-adds (one expression would add the
             * products first). */
            for (int c = 0; c < NC; c++) acc[r][c] += ae * even[c];
            for (int c = 0; c < NC; c++) acc[r][c] += ao * odd[c];
        }
    }
    for (int r = 0; r < MR; r++) {
        const float *a = j->A + (size_t)(i0 + r) * j->lda;
        for (int c = 0; c < NC; c++) {
            float s = 0.0f;
            for (int l = 0; l < ROWS_W; l++) s += acc[r][c][l];
            for (int k = KV; k < K; k++) s += a[k] * bf16(w[c][k]);
            store(j, i0 + r, n0 + c, s);
        }
    }
}

/* Rows [n0, n1) of W against every row of A: 4 rows of W at a time against up to ROWS_MR
 * rows of A (W's 4 rows are read from memory once, and again from cache for any further
 * group of rows of A). */
ROWS_TARGET static void ROWS_NAME(run_rows_h)(const Job *j, int n0, int n1) {
    int n = n0;
    for (; n + 4 <= n1; n += 4) {
        for (int i = 0; i < j->M;) {
            const int left = j->M - i;
            /* Groups of ROWS_MR, with the remainder split evenly (7 rows with 6 a group:
             * 4 + 3, not 6 + 1). */
            const int groups = (left + ROWS_MR - 1) / ROWS_MR;
            const int mr = (left + groups - 1) / groups;
            /* Constant row counts, so each call is a fully unrolled kernel. */
            switch (mr) {
#define ROWS_CASE(R)                                                                       \
    case R:                                                                                \
        if (R <= ROWS_MR) ROWS_NAME(micro)(j, i, n, R);                                    \
        break;
                ROWS_CASE(1)
                ROWS_CASE(2)
                ROWS_CASE(3)
                ROWS_CASE(4)
                ROWS_CASE(5)
                ROWS_CASE(6)
#undef ROWS_CASE
            }
            i += mr;
        }
    }
    for (; n < n1; n++)
        for (int i = 0; i < j->M; i++) single_h(j, i, n);
}

#undef ROWS_NAME
#undef ROWS_CAT
#undef ROWS_CAT2
#undef ROWS_SUFFIX
#undef ROWS_TARGET
#undef ROWS_W
#undef ROWS_MR

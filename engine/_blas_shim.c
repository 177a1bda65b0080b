/* CBLAS entry points for MLX on Linux CPUs, forwarding to scipy-openblas32.
 *
 * MLX's CPU backend calls cblas_sgemm for every float32 matmul, including the M=1
 * (vector x matrix) products that dominate token-by-token decoding; OpenBLAS's sgemm is
 * several times slower there than its sgemv. This library exports cblas_sgemm,
 * cblas_dgemm and cblas_cgemm: products with at most SMALL_M rows go to sgemv row by
 * row, everything else to OpenBLAS's gemm. engine/backend.py loads scipy-openblas32
 * and then this library with RTLD_GLOBAL before MLX is imported, so MLX's references
 * bind here. The scipy_cblas_* symbols are left undefined and resolve at load time.
 */
#include <stddef.h>

enum Order { RowMajor = 101, ColMajor = 102 };
enum Trans { NoTrans = 111, Trans = 112, ConjTrans = 113 };

extern void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float *, int,
                              const float *, int, float, float *, int);
extern void scipy_cblas_sgemv(int, int, int, int, float, const float *, int, const float *,
                              int, float, float *, int);
extern void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double *, int,
                              const double *, int, double, double *, int);
extern void scipy_cblas_cgemm(int, int, int, int, int, int, const void *, const void *, int,
                              const void *, int, const void *, void *, int);

#define SMALL_M 4

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (order == ColMajor) {
        /* C^T = op(B)^T op(A)^T: the same product in row-major with A and B swapped. */
        cblas_sgemm(RowMajor, tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
        return;
    }
    if (M <= SMALL_M && K > 0) {
        for (int i = 0; i < M; i++) {
            /* Row i of op(A): contiguous if A is not transposed, else a column of A. */
            const float *x = ta == NoTrans ? A + (size_t)i * lda : A + i;
            int incx = ta == NoTrans ? 1 : lda;
            /* c_i = op(B)^T x; op(B) is K x N. B stored K x N (NoTrans) -> Trans gemv. */
            if (tb == NoTrans)
                scipy_cblas_sgemv(RowMajor, Trans, K, N, alpha, B, ldb, x, incx, beta,
                                  C + (size_t)i * ldc, 1);
            else
                scipy_cblas_sgemv(RowMajor, NoTrans, N, K, alpha, B, ldb, x, incx, beta,
                                  C + (size_t)i * ldc, 1);
        }
        return;
    }
    scipy_cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cblas_dgemm(int order, int ta, int tb, int M, int N, int K, double alpha, const double *A,
                 int lda, const double *B, int ldb, double beta, double *C, int ldc) {
    scipy_cblas_dgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cblas_cgemm(int order, int ta, int tb, int M, int N, int K, const void *alpha,
                 const void *A, int lda, const void *B, int ldb, const void *beta, void *C,
                 int ldc) {
    scipy_cblas_cgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

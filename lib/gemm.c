// lib/gemm.c: sgemm through OpenBLAS or plain loops.
#include "gemm.h"

#ifdef LORAPIPE_BLAS
#include <cblas.h>

void sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha,
           const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}
const char *gemm_backend(void) { return "OpenBLAS"; }

#else

void sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha,
           const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        for (size_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        for (size_t k = 0; k < K; k++) {
            float a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
            if (tb) for (size_t j = 0; j < N; j++) c[j] += a * B[j * ldb + k];
            else {
                const float *b = B + k * ldb;
                for (size_t j = 0; j < N; j++) c[j] += a * b[j];
            }
        }
    }
}
const char *gemm_backend(void) { return "loops"; }

#endif

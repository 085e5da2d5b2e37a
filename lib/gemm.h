// lib/gemm.h: single-precision matrix products for the CPU reference path.
// Row-major, BLAS semantics: C = alpha * op(A) op(B) + beta * C, where op(A)
// is (M, K) and op(B) is (K, N). OpenBLAS when the build found it (BLAS=auto),
// plain OpenMP loops otherwise; both are deterministic for a fixed thread count.
#ifndef LORAPIPE_GEMM_H
#define LORAPIPE_GEMM_H
#include <stddef.h>

void sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
           const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

// Shorthands for the three shapes a linear layer needs (all row-major, contiguous):
// y (M, N) (+)= x (M, K) @ W(N, K)^T          forward of y = x W^T
static inline void gemm_nt(float *y, const float *x, const float *w, size_t M, size_t N, size_t K, float beta) {
    sgemm(0, 1, M, N, K, 1.0f, x, K, w, K, beta, y, N);
}
// dx (M, K) (+)= dy (M, N) @ W (N, K)          input gradient
static inline void gemm_nn(float *dx, const float *dy, const float *w, size_t M, size_t N, size_t K, float beta) {
    sgemm(0, 0, M, K, N, 1.0f, dy, N, w, K, beta, dx, K);
}
// dW (N, K) (+)= alpha * dy (M, N)^T @ x (M, K)  weight gradient
static inline void gemm_tn(float *dw, const float *dy, const float *x, size_t M, size_t N, size_t K, float alpha, float beta) {
    sgemm(1, 0, N, K, M, alpha, dy, N, x, K, beta, dw, K);
}
// Name of the implementation in use ("OpenBLAS" or "loops").
const char *gemm_backend(void);

#endif

// kernels/gemm.h: bf16 matrix products through cuBLASLt, fp32 accumulation.
// Row-major like the rest of the project: C (M, N) = alpha op(A) op(B) + beta C,
// op(A) (M, K), op(B) (K, N); C bf16 or fp32; optional bias (N) in the epilogue.
#ifndef LORAPIPE_GEMM_CUDA_H
#define LORAPIPE_GEMM_CUDA_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gemm_ctx gemm_ctx;
gemm_ctx *gemm_create(size_t workspace_bytes, cudaStream_t s);
void gemm_destroy(gemm_ctx *g);
size_t gemm_workspace_bytes(const gemm_ctx *g);
// c_f32: C is fp32 (else bf16). bias: bf16 (N) or NULL.
void gemm_bf16(gemm_ctx *g, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const uint16_t *A, size_t lda,
               const uint16_t *B, size_t ldb, float beta, void *C, int c_f32, size_t ldc, const uint16_t *bias);
// Shorthands for a linear layer with weight W (O, I), row-major, as in PyTorch:
// y (M, O) = x (M, I) W^T (+ bias) (+ beta y)
// y (M, O) = x W^T + res: the residual add rides in the product's C input
// (res and y share the row stride ldy; res may not alias y partially).
void gemm_linear_fwd_res(gemm_ctx *g, uint16_t *y, const uint16_t *res, size_t ldy, const uint16_t *x, size_t ldx,
                         const uint16_t *W, size_t ldw, size_t M, size_t O, size_t I);
void gemm_linear_fwd(gemm_ctx *g, uint16_t *y, size_t ldy, const uint16_t *x, size_t ldx, const uint16_t *W, size_t ldw,
                     size_t M, size_t O, size_t I, const uint16_t *bias, float alpha, float beta);
// dx (M, I) = dy (M, O) W (+ beta dx)
void gemm_linear_dx(gemm_ctx *g, uint16_t *dx, size_t lddx, const uint16_t *dy, size_t lddy, const uint16_t *W, size_t ldw,
                    size_t M, size_t O, size_t I, float alpha, float beta);
// dW (O, I) fp32 (+)= alpha dy^T (O, M) x (M, I)
void gemm_linear_dw(gemm_ctx *g, float *dW, const uint16_t *dy, size_t lddy, const uint16_t *x, size_t ldx,
                    size_t M, size_t O, size_t I, float alpha, float beta);

// Strided batched products (attention over padded sequences), row-major:
// C_b (M, N) = alpha op(A_b) op(B_b) + beta C_b for b < batch, X_b = X + b * strideX.
// A, B bf16; C bf16 or fp32 (c_f32).
void gemm_batched(gemm_ctx *g, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const uint16_t *A,
                  size_t lda, size_t sa, const uint16_t *B, size_t ldb, size_t sb, float beta, void *C, int c_f32,
                  size_t ldc, size_t sc, size_t batch);

#ifdef __cplusplus
}
#endif
#endif

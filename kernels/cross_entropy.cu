// kernels/cross_entropy.cu: the loss over a chunk of target rows, fused with
// its gradient so the logits never leave the chunk buffer. Logits are bf16
// (as the model produces them) and up-cast to fp32 for the loss.
#include "common.cuh"
#include "kernels.h"

// One block per row: online max/sum in one pass, then the gradient in place.
__global__ void xent_kernel(bf16 *logits, float *loss, const int32_t *target, size_t V, float inv_n, int want_grad) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    bf16 *z = logits + row * V;
    float m = -INFINITY, sum = 0.0f;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) {
        float v = bf(z[i]);
        if (v > m) { sum = sum * __expf(m - v) + 1.0f; m = v; }
        else sum += __expf(v - m);
    }
    // Combine (m, sum) pairs across the block.
    float bm = block_max(m, sh);
    sum = sum * (m == -INFINITY ? 0.0f : __expf(m - bm));
    float bs = block_sum(sum, sh);
    float lse = bm + logf(bs);
    int32_t y = target[row];
    if (threadIdx.x == 0) loss[row] = lse - bf(z[y]);
    if (!want_grad) return;
    __syncthreads();   // every thread has read z[y] before it is overwritten
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) {
        float p = __expf(bf(z[i]) - lse);
        z[i] = tobf((p - (i == (size_t)y ? 1.0f : 0.0f)) * inv_n);
    }
}

extern "C" void k_xent_fwd_bwd(bf16_t *logits, float *loss, const int32_t *target, size_t n, size_t V, float inv_n,
                               int want_grad, cudaStream_t s) {
    if (!n) return;
    xent_kernel<<<(unsigned)n, 1024, 0, s>>>((bf16 *)logits, loss, target, V, inv_n, want_grad);
    LAUNCH_CHECK();
}

// One block, fixed order: deterministic.
__global__ void sum_kernel(float *out, const float *x, size_t n) {
    __shared__ float sh[32];
    float acc = 0.0f;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) *out = acc;
}

extern "C" void k_sum(float *out, const float *x, size_t n, cudaStream_t s) {
    sum_kernel<<<1, 1024, 0, s>>>(out, x, n);
    LAUNCH_CHECK();
}

// kernels/rmsnorm.cu: Qwen2RMSNorm in bf16 with fp32 statistics, and its backward.
// Forward follows transformers: n = bf16(x * rsqrt(mean(x^2) + eps)), y = bf16(w * n).
#include "common.cuh"
#include "kernels.h"

// One block per row.
__global__ void rmsnorm_fwd_kernel(bf16 *y, float *rstd, const bf16 *x, const bf16 *w, size_t C, float eps) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const bf16 *xr = x + row * C;
    float ss = 0.0f;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) { float v = bf(xr[i]); ss += v * v; }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    bf16 *yr = y + row * C;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) yr[i] = tobf(bf(w[i]) * rbf(bf(xr[i]) * r));
}

extern "C" void k_rmsnorm_fwd(bf16_t *y, float *rstd, const bf16_t *x, const bf16_t *w, size_t N, size_t C,
                              float eps, cudaStream_t s) {
    if (!N) return;
    rmsnorm_fwd_kernel<<<(unsigned)N, 256, 0, s>>>((bf16 *)y, rstd, (const bf16 *)x, (const bf16 *)w, C, eps);
    LAUNCH_CHECK();
}

// dx = rstd * (dy*w - n * mean(dy*w*n)), n = x * rstd; added to dx when accumulate.
__global__ void rmsnorm_bwd_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, const float *rstd, const bf16 *w,
                                   size_t C, int accumulate) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const bf16 *xr = x + row * C, *dyr = dy + row * C;
    float r = rstd[row], dot = 0.0f;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) dot += bf(dyr[i]) * bf(w[i]) * bf(xr[i]) * r;
    dot = block_sum(dot, sh) / (float)C;
    bf16 *dxr = dx + row * C;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) {
        float n = bf(xr[i]) * r;
        float g = r * (bf(dyr[i]) * bf(w[i]) - n * dot);
        dxr[i] = tobf(accumulate ? bf(dxr[i]) + g : g);
    }
}

extern "C" void k_rmsnorm_bwd(bf16_t *dx, const bf16_t *dy, const bf16_t *x, const float *rstd, const bf16_t *w,
                              size_t N, size_t C, int accumulate, cudaStream_t s) {
    if (!N) return;
    rmsnorm_bwd_kernel<<<(unsigned)N, 256, 0, s>>>((bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, rstd,
                                                   (const bf16 *)w, C, accumulate);
    LAUNCH_CHECK();
}

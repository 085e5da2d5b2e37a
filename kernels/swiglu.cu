// kernels/swiglu.cu: act = bf16(silu(g)) * u (silu in fp32, rounded once, as
// transformers' act_fn on a bf16 tensor), and its backward.
#include "common.cuh"
#include "kernels.h"

__global__ void swiglu_fwd_kernel(bf16 *act, const bf16 *gu, size_t N, size_t F) {
    size_t n = N * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / F, c = i % F;
        float g = bf(gu[r * 2 * F + c]), u = bf(gu[r * 2 * F + F + c]);
        float sg = rbf(g / (1.0f + __expf(-g)));
        act[i] = tobf(sg * u);
    }
}

__global__ void swiglu_bwd_kernel(bf16 *dgu, const bf16 *dact, const bf16 *gu, size_t N, size_t F) {
    size_t n = N * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / F, c = i % F;
        float g = bf(gu[r * 2 * F + c]), u = bf(gu[r * 2 * F + F + c]), d = bf(dact[i]);
        float sig = 1.0f / (1.0f + __expf(-g));
        dgu[r * 2 * F + c] = tobf(d * u * sig * (1.0f + g * (1.0f - sig)));
        dgu[r * 2 * F + F + c] = tobf(d * rbf(g * sig));
    }
}

extern "C" void k_swiglu_fwd(bf16_t *act, const bf16_t *gu, size_t N, size_t F, cudaStream_t s) {
    if (!N) return;
    unsigned g = cdiv(N * F, 256);
    swiglu_fwd_kernel<<<g < 16384 ? g : 16384, 256, 0, s>>>((bf16 *)act, (const bf16 *)gu, N, F);
    LAUNCH_CHECK();
}

extern "C" void k_swiglu_bwd(bf16_t *dgu, const bf16_t *dact, const bf16_t *gu, size_t N, size_t F, cudaStream_t s) {
    if (!N) return;
    unsigned g = cdiv(N * F, 256);
    swiglu_bwd_kernel<<<g < 16384 ? g : 16384, 256, 0, s>>>((bf16 *)dgu, (const bf16 *)dact, (const bf16 *)gu, N, F);
    LAUNCH_CHECK();
}

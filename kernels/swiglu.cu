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

// The same arithmetic on column pairs (bf16x2) with 32-bit indexing: the
// flat kernels above spend more on 64-bit division than on the math. Used
// when F is even and N * F / 2 fits 32 bits (always, for real models).
__global__ void swiglu_fwd2_kernel(__nv_bfloat162 *act, const __nv_bfloat162 *gu, unsigned n2, unsigned F2) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += gridDim.x * blockDim.x) {
        unsigned r = i / F2, c = i - r * F2;
        float2 g = __bfloat1622float2(gu[(size_t)r * 2 * F2 + c]), u = __bfloat1622float2(gu[(size_t)r * 2 * F2 + F2 + c]);
        float s0 = rbf(g.x / (1.0f + __expf(-g.x))), s1 = rbf(g.y / (1.0f + __expf(-g.y)));
        act[i] = __floats2bfloat162_rn(s0 * u.x, s1 * u.y);
    }
}

__global__ void swiglu_bwd2_kernel(__nv_bfloat162 *dgu, const __nv_bfloat162 *dact, const __nv_bfloat162 *gu,
                                   unsigned n2, unsigned F2) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += gridDim.x * blockDim.x) {
        unsigned r = i / F2, c = i - r * F2;
        size_t gi = (size_t)r * 2 * F2 + c;
        float2 g = __bfloat1622float2(gu[gi]), u = __bfloat1622float2(gu[gi + F2]), d = __bfloat1622float2(dact[i]);
        float s0 = 1.0f / (1.0f + __expf(-g.x)), s1 = 1.0f / (1.0f + __expf(-g.y));
        dgu[gi] = __floats2bfloat162_rn(d.x * u.x * s0 * (1.0f + g.x * (1.0f - s0)), d.y * u.y * s1 * (1.0f + g.y * (1.0f - s1)));
        dgu[gi + F2] = __floats2bfloat162_rn(d.x * rbf(g.x * s0), d.y * rbf(g.y * s1));
    }
}

static int pairs_ok(size_t N, size_t F) { return F % 2 == 0 && N * F / 2 < (1ull << 31); }

extern "C" void k_swiglu_fwd(bf16_t *act, const bf16_t *gu, size_t N, size_t F, cudaStream_t s) {
    if (!N) return;
    if (pairs_ok(N, F)) {
        unsigned n2 = (unsigned)(N * F / 2), g2 = cdiv(n2, 256);
        swiglu_fwd2_kernel<<<g2 < 16384 ? g2 : 16384, 256, 0, s>>>((__nv_bfloat162 *)act, (const __nv_bfloat162 *)gu,
                                                                   n2, (unsigned)(F / 2));
        LAUNCH_CHECK();
        return;
    }
    unsigned g = cdiv(N * F, 256);
    swiglu_fwd_kernel<<<g < 16384 ? g : 16384, 256, 0, s>>>((bf16 *)act, (const bf16 *)gu, N, F);
    LAUNCH_CHECK();
}

extern "C" void k_swiglu_bwd(bf16_t *dgu, const bf16_t *dact, const bf16_t *gu, size_t N, size_t F, cudaStream_t s) {
    if (!N) return;
    if (pairs_ok(N, F)) {
        unsigned n2 = (unsigned)(N * F / 2), g2 = cdiv(n2, 256);
        swiglu_bwd2_kernel<<<g2 < 16384 ? g2 : 16384, 256, 0, s>>>((__nv_bfloat162 *)dgu, (const __nv_bfloat162 *)dact,
                                                                   (const __nv_bfloat162 *)gu, n2, (unsigned)(F / 2));
        LAUNCH_CHECK();
        return;
    }
    unsigned g = cdiv(N * F, 256);
    swiglu_bwd_kernel<<<g < 16384 ? g : 16384, 256, 0, s>>>((bf16 *)dgu, (const bf16 *)dact, (const bf16 *)gu, N, F);
    LAUNCH_CHECK();
}

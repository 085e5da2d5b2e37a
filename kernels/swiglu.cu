// kernels/swiglu.cu: act = bf16(silu(g)) * u (silu in fp32, rounded once, as
// transformers' act_fn on a bf16 tensor), and its backward.
#include "common.cuh"
#include "kernels.h"

// The arithmetic, one bf16 pair at a time, shared by the pair and 16-byte kernels.
__device__ __forceinline__ float silu_r(float g) { return rbf(g / (1.0f + __expf(-g))); }
__device__ __forceinline__ __nv_bfloat162 swiglu_pair(float2 g, float2 u) {
    return __floats2bfloat162_rn(silu_r(g.x) * u.x, silu_r(g.y) * u.y);
}
// dg, du from the upstream gradient d
__device__ __forceinline__ void swiglu_bwd_pair(float2 g, float2 u, float2 d, __nv_bfloat162 *dg, __nv_bfloat162 *du) {
    float s0 = 1.0f / (1.0f + __expf(-g.x)), s1 = 1.0f / (1.0f + __expf(-g.y));
    *dg = __floats2bfloat162_rn(d.x * u.x * s0 * (1.0f + g.x * (1.0f - s0)),
                                d.y * u.y * s1 * (1.0f + g.y * (1.0f - s1)));
    *du = __floats2bfloat162_rn(d.x * rbf(g.x * s0), d.y * rbf(g.y * s1));
}

// Column pairs (bf16x2) with 32-bit indexing: flat 64-bit indexing spent more
// on division than on the math. F is even and N * F / 2 fits 32 bits for every
// real model; the launchers refuse anything else.
__global__ void swiglu_fwd2_kernel(__nv_bfloat162 *act, const __nv_bfloat162 *gu, unsigned n2, unsigned F2) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += gridDim.x * blockDim.x) {
        unsigned r = i / F2, c = i - r * F2;
        float2 g = __bfloat1622float2(gu[(size_t)r * 2 * F2 + c]), u = __bfloat1622float2(gu[(size_t)r * 2 * F2 + F2 + c]);
        act[i] = swiglu_pair(g, u);
    }
}

__global__ void swiglu_bwd2_kernel(__nv_bfloat162 *dgu, const __nv_bfloat162 *dact, const __nv_bfloat162 *gu,
                                   unsigned n2, unsigned F2) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += gridDim.x * blockDim.x) {
        unsigned r = i / F2, c = i - r * F2;
        size_t gi = (size_t)r * 2 * F2 + c;
        swiglu_bwd_pair(__bfloat1622float2(gu[gi]), __bfloat1622float2(gu[gi + F2]), __bfloat1622float2(dact[i]),
                        &dgu[gi], &dgu[gi + F2]);
    }
}

// The same on 16-byte vectors (8 columns), where F % 8 == 0 and the rows are
// 16-byte aligned; element for element the arithmetic above.

__global__ void swiglu_fwd8_kernel(uint4 *act, const uint4 *gu, unsigned n8, unsigned F8) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
        unsigned r = i / F8, c = i - r * F8;
        bf16x8 g, u, o;
        g.u = gu[(size_t)r * 2 * F8 + c]; u.u = gu[(size_t)r * 2 * F8 + F8 + c];
        #pragma unroll
        for (int e = 0; e < 4; e++) o.h[e] = swiglu_pair(__bfloat1622float2(g.h[e]), __bfloat1622float2(u.h[e]));
        act[i] = o.u;
    }
}

__global__ void swiglu_bwd8_kernel(uint4 *dgu, const uint4 *dact, const uint4 *gu, unsigned n8, unsigned F8) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
        unsigned r = i / F8, c = i - r * F8;
        size_t gi = (size_t)r * 2 * F8 + c;
        bf16x8 g, u, d, og, ou;
        g.u = gu[gi]; u.u = gu[gi + F8]; d.u = dact[i];
        #pragma unroll
        for (int e = 0; e < 4; e++)
            swiglu_bwd_pair(__bfloat1622float2(g.h[e]), __bfloat1622float2(u.h[e]), __bfloat1622float2(d.h[e]),
                            &og.h[e], &ou.h[e]);
        dgu[gi] = og.u; dgu[gi + F8] = ou.u;
    }
}

static bool swiglu_v8_ok(const void *a, const void *b, const void *c, size_t F) {
    return F % 8 == 0 && aligned16(a) && aligned16(b) && (!c || aligned16(c));
}

static void check_pairs(size_t N, size_t F) {
    if (F % 2 || N * F / 2 >= (1ull << 31))
        die_at(__FILE__, __LINE__, "SwiGLU: %zu x %zu (the kernels need an even width and N F / 2 < 2^31)", N, F);
}

extern "C" void k_swiglu_fwd(bf16_t *act, const bf16_t *gu, size_t N, size_t F, cudaStream_t s) {
    if (!N) return;
    check_pairs(N, F);
    if (swiglu_v8_ok(act, gu, nullptr, F)) {
        unsigned n8 = (unsigned)(N * F / 8), g8 = cdiv(n8, 256);
        swiglu_fwd8_kernel<<<g8 < 16384 ? g8 : 16384, 256, 0, s>>>((uint4 *)act, (const uint4 *)gu, n8, (unsigned)(F / 8));
        LAUNCH_CHECK();
        return;
    }
    unsigned n2 = (unsigned)(N * F / 2), g2 = cdiv(n2, 256);
    swiglu_fwd2_kernel<<<g2 < 16384 ? g2 : 16384, 256, 0, s>>>((__nv_bfloat162 *)act, (const __nv_bfloat162 *)gu,
                                                               n2, (unsigned)(F / 2));
    LAUNCH_CHECK();
}

extern "C" void k_swiglu_bwd(bf16_t *dgu, const bf16_t *dact, const bf16_t *gu, size_t N, size_t F, cudaStream_t s) {
    if (!N) return;
    check_pairs(N, F);
    if (swiglu_v8_ok(dgu, dact, gu, F)) {
        unsigned n8 = (unsigned)(N * F / 8), g8 = cdiv(n8, 256);
        swiglu_bwd8_kernel<<<g8 < 16384 ? g8 : 16384, 256, 0, s>>>((uint4 *)dgu, (const uint4 *)dact, (const uint4 *)gu,
                                                                  n8, (unsigned)(F / 8));
        LAUNCH_CHECK();
        return;
    }
    unsigned n2 = (unsigned)(N * F / 2), g2 = cdiv(n2, 256);
    swiglu_bwd2_kernel<<<g2 < 16384 ? g2 : 16384, 256, 0, s>>>((__nv_bfloat162 *)dgu, (const __nv_bfloat162 *)dact,
                                                               (const __nv_bfloat162 *)gu, n2, (unsigned)(F / 2));
    LAUNCH_CHECK();
}

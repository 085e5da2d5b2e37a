// kernels/swiglu.cu: act = bf16(silu(g)) * u (silu in fp32, rounded once, as
// transformers' act_fn on a bf16 tensor), and its backward.
#include "common.cuh"
#include "kernels.h"

// Column pairs (bf16x2) with 32-bit indexing: flat 64-bit indexing spent more
// on division than on the math. F is even and N * F / 2 fits 32 bits for every
// real model; the launchers refuse anything else.
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

// The same on 16-byte vectors (8 columns), where F % 8 == 0 and the rows are
// 16-byte aligned; element for element the arithmetic above.
__device__ __forceinline__ float silu_r(float g) { return rbf(g / (1.0f + __expf(-g))); }

__global__ void swiglu_fwd8_kernel(uint4 *act, const uint4 *gu, unsigned n8, unsigned F8) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
        unsigned r = i / F8, c = i - r * F8;
        bf16x8 g, u, o;
        g.u = gu[(size_t)r * 2 * F8 + c]; u.u = gu[(size_t)r * 2 * F8 + F8 + c];
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 gf = __bfloat1622float2(g.h[e]), uf = __bfloat1622float2(u.h[e]);
            o.h[e] = __floats2bfloat162_rn(silu_r(gf.x) * uf.x, silu_r(gf.y) * uf.y);
        }
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
        for (int e = 0; e < 4; e++) {
            float2 gf = __bfloat1622float2(g.h[e]), uf = __bfloat1622float2(u.h[e]), df = __bfloat1622float2(d.h[e]);
            float s0 = 1.0f / (1.0f + __expf(-gf.x)), s1 = 1.0f / (1.0f + __expf(-gf.y));
            og.h[e] = __floats2bfloat162_rn(df.x * uf.x * s0 * (1.0f + gf.x * (1.0f - s0)),
                                            df.y * uf.y * s1 * (1.0f + gf.y * (1.0f - s1)));
            ou.h[e] = __floats2bfloat162_rn(df.x * rbf(gf.x * s0), df.y * rbf(gf.y * s1));
        }
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

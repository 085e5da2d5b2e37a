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

// The same with 16-byte vectors (8 bf16) where C % 8 == 0: the scalar version
// moved a row at half the memory bandwidth. Same arithmetic per element.

__global__ void rmsnorm_fwd_v8_kernel(bf16 *y, float *rstd, const bf16 *x, const bf16 *w, size_t C, float eps) {
    __shared__ float sh[32];
    size_t row = blockIdx.x, nv = C / 8;
    const uint4 *xr = (const uint4 *)(x + row * C), *wv = (const uint4 *)w;
    float ss = 0.0f;
    for (size_t j = threadIdx.x; j < nv; j += blockDim.x) {
        bf16x8 a; a.u = xr[j];
        #pragma unroll
        for (int e = 0; e < 4; e++) { float2 f = __bfloat1622float2(a.h[e]); ss += f.x * f.x + f.y * f.y; }
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    uint4 *yr = (uint4 *)(y + row * C);
    for (size_t j = threadIdx.x; j < nv; j += blockDim.x) {
        bf16x8 a, b, o; a.u = xr[j]; b.u = wv[j];
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 f = __bfloat1622float2(a.h[e]), g = __bfloat1622float2(b.h[e]);
            o.h[e] = __floats2bfloat162_rn(g.x * rbf(f.x * r), g.y * rbf(f.y * r));
        }
        yr[j] = o.u;
    }
}

extern "C" void k_rmsnorm_fwd(bf16_t *y, float *rstd, const bf16_t *x, const bf16_t *w, size_t N, size_t C,
                              float eps, cudaStream_t s) {
    if (!N) return;
    if (C % 8 == 0 && aligned16(x) && aligned16(y) && aligned16(w))
        rmsnorm_fwd_v8_kernel<<<(unsigned)N, 256, 0, s>>>((bf16 *)y, rstd, (const bf16 *)x, (const bf16 *)w, C, eps);
    else
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

__global__ void rmsnorm_bwd_v8_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, const float *rstd, const bf16 *w,
                                      size_t C, int accumulate) {
    __shared__ float sh[32];
    size_t row = blockIdx.x, nv = C / 8;
    const uint4 *xr = (const uint4 *)(x + row * C), *dyr = (const uint4 *)(dy + row * C), *wv = (const uint4 *)w;
    float r = rstd[row], dot = 0.0f;
    for (size_t j = threadIdx.x; j < nv; j += blockDim.x) {
        bf16x8 a, d, b; a.u = xr[j]; d.u = dyr[j]; b.u = wv[j];
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 fx = __bfloat1622float2(a.h[e]), fd = __bfloat1622float2(d.h[e]), fw = __bfloat1622float2(b.h[e]);
            dot += fd.x * fw.x * fx.x * r + fd.y * fw.y * fx.y * r;
        }
    }
    dot = block_sum(dot, sh) / (float)C;
    uint4 *dxr = (uint4 *)(dx + row * C);
    for (size_t j = threadIdx.x; j < nv; j += blockDim.x) {
        bf16x8 a, d, b, o, old; a.u = xr[j]; d.u = dyr[j]; b.u = wv[j];
        if (accumulate) old.u = dxr[j];
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 fx = __bfloat1622float2(a.h[e]), fd = __bfloat1622float2(d.h[e]), fw = __bfloat1622float2(b.h[e]);
            float g0 = r * (fd.x * fw.x - fx.x * r * dot), g1 = r * (fd.y * fw.y - fx.y * r * dot);
            if (accumulate) { float2 fo = __bfloat1622float2(old.h[e]); g0 += fo.x; g1 += fo.y; }
            o.h[e] = __floats2bfloat162_rn(g0, g1);
        }
        dxr[j] = o.u;
    }
}

extern "C" void k_rmsnorm_bwd(bf16_t *dx, const bf16_t *dy, const bf16_t *x, const float *rstd, const bf16_t *w,
                              size_t N, size_t C, int accumulate, cudaStream_t s) {
    if (!N) return;
    if (C % 8 == 0 && aligned16(dx) && aligned16(dy) && aligned16(x) && aligned16(w))
        rmsnorm_bwd_v8_kernel<<<(unsigned)N, 256, 0, s>>>((bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, rstd,
                                                          (const bf16 *)w, C, accumulate);
    else
        rmsnorm_bwd_kernel<<<(unsigned)N, 256, 0, s>>>((bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, rstd,
                                                       (const bf16 *)w, C, accumulate);
    LAUNCH_CHECK();
}

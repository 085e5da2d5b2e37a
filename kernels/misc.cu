// kernels/misc.cu: embedding lookup, row gather/scatter, casts, adds.
#include "common.cuh"
#include "kernels.h"

// One block per row, 16-byte copies (8 bf16) where the width allows.
__global__ void embed_kernel(bf16 *out, const bf16 *table, const int32_t *ids, size_t C) {
    size_t row = blockIdx.x;
    const bf16 *src = table + (size_t)ids[row] * C;
    bf16 *dst = out + row * C;
    if (C % 8 == 0) {
        const uint4 *s4 = (const uint4 *)src;
        uint4 *d4 = (uint4 *)dst;
        for (size_t i = threadIdx.x; i < C / 8; i += blockDim.x) d4[i] = s4[i];
    } else {
        for (size_t i = threadIdx.x; i < C; i += blockDim.x) dst[i] = src[i];
    }
}

extern "C" void k_embed(bf16_t *out, const bf16_t *table, const int32_t *ids, size_t N, size_t C, cudaStream_t s) {
    if (!N) return;
    embed_kernel<<<(unsigned)N, 128, 0, s>>>((bf16 *)out, (const bf16 *)table, ids, C);
    LAUNCH_CHECK();
}

__global__ void gather_kernel(bf16 *dst, const bf16 *src, const int32_t *idx, size_t C, int scatter) {
    size_t row = blockIdx.x;
    const bf16 *a = scatter ? src + row * C : src + (size_t)idx[row] * C;
    bf16 *b = scatter ? dst + (size_t)idx[row] * C : dst + row * C;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) b[i] = a[i];
}

extern "C" void k_gather_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, cudaStream_t s) {
    if (!n) return;
    gather_kernel<<<(unsigned)n, 256, 0, s>>>((bf16 *)dst, (const bf16 *)src, idx, C, 0);
    LAUNCH_CHECK();
}

extern "C" void k_scatter_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, cudaStream_t s) {
    if (!n) return;
    gather_kernel<<<(unsigned)n, 256, 0, s>>>((bf16 *)dst, (const bf16 *)src, idx, C, 1);
    LAUNCH_CHECK();
}

__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = tobf(src[i] * scale);
}

extern "C" void k_f32_to_bf16(bf16_t *dst, const float *src, size_t n, float scale, cudaStream_t s) {
    if (!n) return;
    unsigned g = cdiv(n, 256);
    f32_to_bf16_kernel<<<g < 4096 ? g : 4096, 256, 0, s>>>((bf16 *)dst, src, n, scale);
    LAUNCH_CHECK();
}

__global__ void add_kernel(bf16 *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = tobf(bf(y[i]) + bf(x[i]));
}

extern "C" void k_add_inplace(bf16_t *y, const bf16_t *x, size_t n, cudaStream_t s) {
    if (!n) return;
    unsigned g = cdiv(n, 256);
    add_kernel<<<g < 8192 ? g : 8192, 256, 0, s>>>((bf16 *)y, (const bf16 *)x, n);
    LAUNCH_CHECK();
}

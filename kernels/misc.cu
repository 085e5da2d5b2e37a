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

// Rows of T elements (bf16, or uint4 = 8 bf16 when rows are whole 16-byte pieces).
template <typename T>
__global__ void gather_kernel(T *dst, const T *src, const int32_t *idx, size_t C, int scatter) {
    size_t row = blockIdx.x;
    const T *a = scatter ? src + row * C : src + (size_t)idx[row] * C;
    T *b = scatter ? dst + (size_t)idx[row] * C : dst + row * C;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) b[i] = a[i];
}

static void gather_launch(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, int scatter,
                          cudaStream_t s) {
    if (!n) return;
    if (C % 8 == 0 && (uintptr_t)dst % 16 == 0 && (uintptr_t)src % 16 == 0)
        gather_kernel<uint4><<<(unsigned)n, 128, 0, s>>>((uint4 *)dst, (const uint4 *)src, idx, C / 8, scatter);
    else gather_kernel<bf16><<<(unsigned)n, 256, 0, s>>>((bf16 *)dst, (const bf16 *)src, idx, C, scatter);
    LAUNCH_CHECK();
}

extern "C" void k_gather_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, cudaStream_t s) {
    gather_launch(dst, src, idx, n, C, 0, s);
}

extern "C" void k_scatter_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, cudaStream_t s) {
    gather_launch(dst, src, idx, n, C, 1, s);
}

// Shared prefixes (train --share-prefix): row j < P of dst is the sum over the
// n_seq sequences of their row j in src (sequence k starts at seq[k]), in
// sequence order in fp32, rounded once; row j >= P is src's row idx[j].
__global__ void fold_rows_kernel(bf16 *dst, const bf16 *src, const int32_t *idx, const int32_t *seq, size_t n_seq,
                                 size_t P, size_t C) {
    size_t j = blockIdx.x;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) {
        if (j < P) {
            float acc = 0.0f;
            for (size_t k = 0; k < n_seq; k++) acc += bf(src[((size_t)seq[k] + j) * C + i]);
            dst[j * C + i] = tobf(acc);
        } else {
            dst[j * C + i] = src[(size_t)idx[j] * C + i];
        }
    }
}

extern "C" void k_fold_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, const int32_t *seq, size_t n_seq,
                            size_t P, size_t n, size_t C, cudaStream_t s) {
    if (!n) return;
    fold_rows_kernel<<<(unsigned)n, 256, 0, s>>>((bf16 *)dst, (const bf16 *)src, idx, seq, n_seq, P, C);
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

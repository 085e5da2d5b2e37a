// kernels/lora.cu: the LoRA input side with dropout fused in. PEFT applies
// dropout to the adapter's input only; materialising dropout(x) costs a full
// read and write of x per module and pass, so these kernels draw the mask on
// the fly from the same counter-based hash as the CPU reference
// (lib/cpu_model.c): element i of x (N, I), flat, is kept when
// u(fmix32(i * 0x9e3779b1 ^ k)) >= p, with k the 64-bit mix of
// key ^ mix64(layer << 8 | module) folded to 32 bits.
#include "common.cuh"
#include "kernels.h"
#include "../lib/mem_plan.h"

__device__ __forceinline__ float keep(uint64_t k, size_t i, float p, float scale) {
    uint32_t h = ((uint32_t)i * 0x9e3779b1u) ^ (uint32_t)k;
    h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
    float u = (float)(h >> 8) * (1.0f / 16777216.0f);
    return u < p ? 0.0f : scale;
}

extern "C" uint64_t lora_mask_key(uint64_t key, size_t layer, int module) {
    uint64_t z = ((uint64_t)layer << 8) | (uint64_t)module;
    auto mix = [](uint64_t v) {
        v += 0x9e3779b97f4a7c15ULL;
        v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ULL;
        v = (v ^ (v >> 27)) * 0x94d049bb133111ebULL;
        return v ^ (v >> 31);
    };
    uint64_t k = mix(key ^ mix(z));
    return (uint32_t)(k ^ (k >> 32));   // the per-element hash is 32-bit
}

#define LR_ROWS 4     // rows per block: A is read once for four rows
#define LR_MAXR 16    // rank bound of the fused kernels

// t (N, r) = (mask * x) A^T, A (r, I) bf16. A block of 256 threads owns
// LR_ROWS rows: threads stride over I (coalesced), each keeping LR_ROWS x R
// partial sums, then a block reduction. A is read once per block.
template <int R>
__global__ void __launch_bounds__(256) lora_in_kernel(bf16 *t, const bf16 *x, const bf16 *A, size_t N, size_t I,
                                                      uint64_t k, float p, float scale) {
    __shared__ float red[8][LR_ROWS * R];
    size_t n0 = blockIdx.x * (size_t)LR_ROWS;
    int nr = (int)min((size_t)LR_ROWS, N - n0);
    float acc[LR_ROWS][R];
    #pragma unroll
    for (int a = 0; a < LR_ROWS; a++)
        #pragma unroll
        for (int q = 0; q < R; q++) acc[a][q] = 0.0f;
    for (size_t i = threadIdx.x; i < I; i += blockDim.x) {
        float av[R];
        #pragma unroll
        for (int q = 0; q < R; q++) av[q] = bf(A[(size_t)q * I + i]);
        #pragma unroll
        for (int a = 0; a < LR_ROWS; a++) {
            if (a >= nr) break;
            size_t n = n0 + a;
            float xv = bf(x[n * I + i]);
            if (p > 0.0f) xv *= keep(k, n * I + i, p, scale);
            #pragma unroll
            for (int q = 0; q < R; q++) acc[a][q] += xv * av[q];
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    #pragma unroll
    for (int a = 0; a < LR_ROWS; a++)
        #pragma unroll
        for (int q = 0; q < R; q++) {
            float v = warp_sum(acc[a][q]);
            if (lane == 0) red[warp][a * R + q] = v;
        }
    __syncthreads();
    for (int j = threadIdx.x; j < nr * R; j += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) v += red[w][j];
        t[(n0 + j / R) * R + j % R] = tobf(v);
    }
}

// Partial dA over a chunk of rows: part[c] (r, I) = sum_{n in chunk c} dt[n] (mask * x[n]).
#define DA_CHUNK MEM_DA_CHUNK
template <int R>
__global__ void lora_da_kernel(float *part, const bf16 *dt, const bf16 *x, size_t N, size_t I, uint64_t k, float p,
                               float scale) {
    __shared__ float dts[DA_CHUNK][R];
    size_t c = blockIdx.y, n0 = c * DA_CHUNK, n1 = min(N, n0 + DA_CHUNK);
    for (size_t j = threadIdx.x; j < (n1 - n0) * R; j += blockDim.x) dts[j / R][j % R] = bf(dt[(n0 + j / R) * R + j % R]);
    __syncthreads();
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= I) return;
    float acc[R];
    #pragma unroll
    for (int q = 0; q < R; q++) acc[q] = 0.0f;
    for (size_t n = n0; n < n1; n++) {
        float xv = bf(x[n * I + i]);
        if (p > 0.0f) xv *= keep(k, n * I + i, p, scale);
        #pragma unroll
        for (int q = 0; q < R; q++) acc[q] += dts[n - n0][q] * xv;
    }
    #pragma unroll
    for (int q = 0; q < R; q++) part[(c * R + q) * I + i] = acc[q];
}

// dA (r, I) += sum over chunks, in chunk order (deterministic).
__global__ void lora_da_sum_kernel(float *dA, const float *part, size_t chunks, size_t RI) {
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < RI; j += (size_t)gridDim.x * blockDim.x) {
        float acc = dA[j];
        for (size_t c = 0; c < chunks; c++) acc += part[c * RI + j];
        dA[j] = acc;
    }
}

// dx (N, I) += mask * (dt A); dt (N, r) bf16, A (r, I) bf16.
template <int R>
__global__ void lora_dx_kernel(bf16 *dx, const bf16 *dt, const bf16 *A, size_t N, size_t I, uint64_t k, float p,
                               float scale) {
    size_t n = blockIdx.y;
    __shared__ float d[R];
    if (threadIdx.x < R) d[threadIdx.x] = bf(dt[n * R + threadIdx.x]);
    __syncthreads();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < I; i += (size_t)gridDim.x * blockDim.x) {
        float g = 0.0f;
        #pragma unroll
        for (int q = 0; q < R; q++) g += d[q] * bf(A[(size_t)q * I + i]);
        if (p > 0.0f) g *= keep(k, n * I + i, p, scale);
        dx[n * I + i] = tobf(bf(dx[n * I + i]) + g);
    }
}

#define RANK_SWITCH(r, CALL)                                                            \
    switch (r) {                                                                        \
    case 1: CALL(1); break; case 2: CALL(2); break; case 4: CALL(4); break;             \
    case 8: CALL(8); break; case 16: CALL(16); break;                                   \
    default: die_at(__FILE__, __LINE__, "fused LoRA kernels: rank %zu not compiled", r); \
    }

extern "C" int lora_fused_rank_ok(size_t r) { return r == 1 || r == 2 || r == 4 || r == 8 || r == 16; }

extern "C" size_t lora_da_ws_floats(size_t N, size_t r, size_t I) { return mem_lora_da_floats(N, r, I); }

extern "C" void k_lora_in(bf16_t *t, const bf16_t *x, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k,
                          float p, cudaStream_t s) {
    if (!N) return;
    float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    unsigned grid = cdiv(N, LR_ROWS);
#define L_IN(R) lora_in_kernel<R><<<grid, 256, 0, s>>>((bf16 *)t, (const bf16 *)x, (const bf16 *)A, N, I, k, p, scale)
    RANK_SWITCH(r, L_IN);
#undef L_IN
    LAUNCH_CHECK();
}

extern "C" void k_lora_da(float *dA, float *part, const bf16_t *dt, const bf16_t *x, size_t N, size_t I, size_t r,
                          uint64_t k, float p, cudaStream_t s) {
    if (!N) return;
    float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    size_t chunks = (N + DA_CHUNK - 1) / DA_CHUNK;
    dim3 grid(cdiv(I, 128), (unsigned)chunks);
#define L_DA(R) lora_da_kernel<R><<<grid, 128, 0, s>>>(part, (const bf16 *)dt, (const bf16 *)x, N, I, k, p, scale)
    RANK_SWITCH(r, L_DA);
#undef L_DA
    LAUNCH_CHECK();
    unsigned g = cdiv(r * I, 256);
    lora_da_sum_kernel<<<g < 1024 ? g : 1024, 256, 0, s>>>(dA, part, chunks, r * I);
    LAUNCH_CHECK();
}

extern "C" void k_lora_dx(bf16_t *dx, const bf16_t *dt, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k,
                          float p, cudaStream_t s) {
    if (!N) return;
    float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    dim3 grid(cdiv(I, 256) < 8 ? cdiv(I, 256) : 8, (unsigned)N);
#define L_DX(R) lora_dx_kernel<R><<<grid, 256, 0, s>>>((bf16 *)dx, (const bf16 *)dt, (const bf16 *)A, N, I, k, p, scale)
    RANK_SWITCH(r, L_DX);
#undef L_DX
    LAUNCH_CHECK();
}

__global__ void dropout_kernel(bf16 *dst, const bf16 *src, size_t n, uint64_t k, float p, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = tobf(bf(src[i]) * keep(k, i, p, scale));
}

extern "C" void k_dropout(bf16_t *dst, const bf16_t *src, size_t n, uint64_t k, float p, cudaStream_t s) {
    if (!n) return;
    unsigned g = cdiv(n, 256);
    dropout_kernel<<<g < 8192 ? g : 8192, 256, 0, s>>>((bf16 *)dst, (const bf16 *)src, n, k, p, 1.0f / (1.0f - p));
    LAUNCH_CHECK();
}

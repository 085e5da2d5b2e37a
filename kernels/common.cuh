// kernels/common.cuh: checked CUDA calls and the small device helpers every
// kernel file shares (bf16 conversions, warp and block reductions).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../lib/check.h"

#define CUDA_CHECK(call) do {                                                        \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) die_at(__FILE__, __LINE__, "CUDA error: %s (%s)",        \
                                  cudaGetErrorString(e_), #call);                    \
} while (0)
// After every launch: catches bad launch configurations at once.
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float bf(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 tobf(float x) { return __float2bfloat16_rn(x); }
// Round a float through bf16 (what a bf16 tensor op does to its result).
__device__ __forceinline__ float rbf(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// 16 bytes of bf16: one vector load or store, seen as four bf16 pairs.
union bf16x8 { uint4 u; __nv_bfloat162 h[4]; };
// Whether a pointer suits 16-byte vector access.
static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float *shared32) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared32[wid] = v;
    __syncthreads();
    v = lane < nw ? shared32[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *shared32) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared32[wid] = v;
    __syncthreads();
    v = lane < nw ? shared32[lane] : -INFINITY;
    return warp_max(v);
}

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

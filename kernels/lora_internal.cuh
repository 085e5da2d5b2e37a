// kernels/lora_internal.cuh: what the LoRA kernel files share (lora.cu: the
// CUDA-core kernels and the launchers; lora_tc.cu: the tensor-core ones):
// the dropout mask and the launch description.
#pragma once
#include "common.cuh"
#include "kernels.h"
#include "../lib/mem_plan.h"

#define DA_CHUNK MEM_DA_CHUNK   // rows per partial sum of the dA (and dB) products

// The CPU reference's dropout hash (lib/cpu_model.c) of element i of x (flat):
// the element survives dropout p when u = (h >> 8) / 2^24 >= p.
__device__ __forceinline__ uint32_t mask_hash(uint32_t k, size_t i) {
    uint32_t h = ((uint32_t)i * 0x9e3779b1u) ^ k;
    h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
    return h;
}
// The draw as a factor: 0 when dropped, scale = 1 / (1 - p) when kept.
__device__ __forceinline__ float keep(uint64_t k, size_t i, float p, float scale) {
    float u = (float)(mask_hash((uint32_t)k, i) >> 8) * (1.0f / 16777216.0f);
    return u < p ? 0.0f : scale;
}

// The same draw as an integer test: u < p with u = (h >> 8) / 2^24 exactly is
// (h >> 8) < ceil(p 2^24) = thr (keep_thr), so no float conversion is needed.
static inline uint32_t keep_thr(float p) { return p > 0.0f ? (uint32_t)ceilf(p * 16777216.0f) : 0u; }
__device__ __forceinline__ bool keep_bit(uint32_t k, size_t i, uint32_t thr) { return (mask_hash(k, i) >> 8) >= thr; }
// The mask of a bf16 pair at flat elements i, i + 1 (low half first): kept halves all ones.
__device__ __forceinline__ uint32_t keep_pair(uint32_t k, size_t i, uint32_t thr) {
    return (keep_bit(k, i, thr) ? 0x0000ffffu : 0u) | (keep_bit(k, i + 1, thr) ? 0xffff0000u : 0u);
}
// The masks of 8 bf16 at flat elements f .. f + 7, as one 16-byte vector.
__device__ __forceinline__ uint4 keep_mask8(uint32_t k, size_t f, uint32_t thr) {
    return make_uint4(keep_pair(k, f, thr), keep_pair(k, f + 2, thr), keep_pair(k, f + 4, thr),
                      keep_pair(k, f + 6, thr));
}

// Up to LORA_GMAX modules that read the same input (q, k and v read the first
// norm's output; gate and up the second's) are served by one kernel that reads
// the input once: one launch instead of three, and a third of the traffic.
// Module g of a group: its weight view W[g], its (N, R) side t[g] (written by
// the input kernel, read as dt by dA and dx) and its dropout key k[g].
// The B side (y += s t B^T, dt = s dy B, dB += s dy^T t) has no shared input,
// but its modules still go in one launch: blockIdx.z picks the module, with its
// own input x[z] of cols[z] columns. A shared-input launch has one z.
struct lgk {
    const bf16 *W[LORA_GMAX];
    bf16 *t[LORA_GMAX];
    float *dA[LORA_GMAX];
    uint64_t k[LORA_GMAX];
    const bf16 *x[LORA_GMAX];     // input of launch slice z (in, da), or output (dx)
    size_t cols[LORA_GMAX];       // its I (or O)
};

// The widest slice of a launch (its grid covers that many columns).
static inline size_t max_cols(const lgk *p, int nz) {
    size_t m = 0;
    for (int z = 0; z < nz; z++) m = p->cols[z] > m ? p->cols[z] : m;
    return m;
}

// BODY once per group size, with GG the size as a constant.
#define LORA_GROUP_CASES(G, BODY)                                                       \
    switch (G) {                                                                        \
    case 1: { const int GG = 1; BODY; } break;                                          \
    case 2: { const int GG = 2; BODY; } break;                                          \
    case 3: { const int GG = 3; BODY; } break;                                          \
    default: die_at(__FILE__, __LINE__, "LoRA kernels: a group of %d modules", G);      \
    }

// Tensor-core versions (lora_tc.cu) for ranks 8 and 16 on 16-byte aligned
// rows; the launchers in lora.cu pick them. thr: keep_thr(p), 0 without dropout.
bool lora_tc_ok(size_t r);
void lora_in_tc(const lgk &p, int G, int nz, size_t ldx, int bt, size_t N, size_t r, uint32_t thr, float out_scale,
                cudaStream_t s);
void lora_dx_tc(const lgk &p, int G, int nz, size_t ldd, int bt, size_t N, size_t r, uint32_t thr, float out_scale,
                cudaStream_t s);
// part[m][chunk] = dscale * dt^T (mask x) over the chunk's rows (lora_da_sum_kernel adds them up)
void lora_da_tc(const lgk &p, int G, int nz, float *part, size_t zstride, size_t ldx, size_t N, size_t r, uint32_t thr,
                float dscale, cudaStream_t s);

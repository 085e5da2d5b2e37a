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

// The weight of a product, element (q, i) of an (r, I) view: A (r, I) itself,
// or, with BT, B stored (I, r) as PEFT stores lora_B (out, r).
template <int R, bool BT>
__device__ __forceinline__ float2 wpair(const bf16 *W, size_t I, int q, size_t i) {
    if (BT) return make_float2(bf(W[i * R + q]), bf(W[(i + 1) * R + q]));
    return __bfloat1622float2(*(const __nv_bfloat162 *)(W + (size_t)q * I + i));
}

// t (N, r) = out_scale * (mask * x) W^T, x (N, I) with row stride ldx, W an
// (r, I) view (wpair). A block of 256 threads owns LR_ROWS rows: threads
// stride over column pairs of I (bf16x2, coalesced), each keeping
// LR_ROWS x R partial sums, then a block reduction. W is read once per block.
// Used for the adapter input t = dropout(x) A^T and for dt = s dy B.
template <int R, bool BT>
__global__ void __launch_bounds__(256) lora_in_kernel(bf16 *t, const bf16 *x, size_t ldx, const bf16 *W, size_t N,
                                                      size_t I, uint64_t k, float p, float scale, float out_scale) {
    __shared__ float red[8][LR_ROWS * R];
    size_t n0 = blockIdx.x * (size_t)LR_ROWS;
    int nr = (int)min((size_t)LR_ROWS, N - n0);
    float acc[LR_ROWS][R];
    #pragma unroll
    for (int a = 0; a < LR_ROWS; a++)
        #pragma unroll
        for (int q = 0; q < R; q++) acc[a][q] = 0.0f;
    for (size_t i = 2 * threadIdx.x; i < I; i += 2 * blockDim.x) {
        float2 av[R];
        #pragma unroll
        for (int q = 0; q < R; q++) av[q] = wpair<R, BT>(W, I, q, i);
        #pragma unroll
        for (int a = 0; a < LR_ROWS; a++) {
            if (a >= nr) break;
            size_t n = n0 + a;
            float2 xv = __bfloat1622float2(*(const __nv_bfloat162 *)(x + n * ldx + i));
            if (p > 0.0f) { xv.x *= keep(k, n * I + i, p, scale); xv.y *= keep(k, n * I + i + 1, p, scale); }
            #pragma unroll
            for (int q = 0; q < R; q++) acc[a][q] += xv.x * av[q].x + xv.y * av[q].y;
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
        t[(n0 + j / R) * R + j % R] = tobf(v * out_scale);
    }
}

// Partial dA over a chunk of rows: part[c] (r, I) = sum_{n in chunk c} dt[n] (mask * x[n]).
// A thread owns a column pair (bf16x2 loads of x).
#define DA_CHUNK MEM_DA_CHUNK
template <int R>
__global__ void lora_da_kernel(float *part, const bf16 *dt, const bf16 *x, size_t ldx, size_t N, size_t I, uint64_t k,
                               float p, float scale) {
    __shared__ float dts[DA_CHUNK][R];
    size_t c = blockIdx.y, n0 = c * DA_CHUNK, n1 = min(N, n0 + DA_CHUNK);
    for (size_t j = threadIdx.x; j < (n1 - n0) * R; j += blockDim.x) dts[j / R][j % R] = bf(dt[(n0 + j / R) * R + j % R]);
    __syncthreads();
    size_t i = 2 * (blockIdx.x * (size_t)blockDim.x + threadIdx.x);
    if (i >= I) return;
    float acc[R][2];
    #pragma unroll
    for (int q = 0; q < R; q++) acc[q][0] = acc[q][1] = 0.0f;
    // Unrolled so that several rows' loads are in flight at once: with one
    // block per (column range, chunk) there are few warps per SM to hide latency.
    #pragma unroll 8
    for (size_t n = n0; n < n1; n++) {
        float2 xv = __bfloat1622float2(*(const __nv_bfloat162 *)(x + n * ldx + i));
        if (p > 0.0f) { xv.x *= keep(k, n * I + i, p, scale); xv.y *= keep(k, n * I + i + 1, p, scale); }
        #pragma unroll
        for (int q = 0; q < R; q++) { acc[q][0] += dts[n - n0][q] * xv.x; acc[q][1] += dts[n - n0][q] * xv.y; }
    }
    #pragma unroll
    for (int q = 0; q < R; q++) *(float2 *)(part + (c * R + q) * I + i) = make_float2(acc[q][0], acc[q][1]);
}

// dA (r, I) += out_scale * sum over chunks, in chunk order (deterministic);
// with transpose the sum lands in an (I, r) matrix (lora_B's layout).
__global__ void lora_da_sum_kernel(float *dA, const float *part, size_t chunks, size_t R, size_t I, float out_scale,
                                   int transpose) {
    size_t RI = R * I;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < RI; j += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (size_t c = 0; c < chunks; c++) acc += part[c * RI + j];
        size_t o = transpose ? (j % I) * R + j / I : j;
        dA[o] += out_scale * acc;
    }
}

// dx (N, I) (row stride ldd) += mask * out_scale * (dt W), dt (N, r) bf16, W an
// (r, I) view (wpair). A block owns DX_ROWS rows and a thread a column pair,
// so that each W value read serves DX_ROWS rows. Used for the input gradient
// dx += dropout'(dt A) and for the adapter output y += s t B^T.
#define DX_ROWS 8
template <int R, bool BT>
__global__ void lora_dx_kernel(bf16 *dx, size_t ldd, const bf16 *dt, const bf16 *W, size_t N, size_t I, uint64_t k,
                               float p, float scale, float out_scale) {
    size_t n0 = blockIdx.y * (size_t)DX_ROWS;
    int nr = (int)min((size_t)DX_ROWS, N - n0);
    __shared__ float d[DX_ROWS][R];
    for (int j = threadIdx.x; j < nr * R; j += blockDim.x) d[j / R][j % R] = bf(dt[(n0 + j / R) * R + j % R]);
    __syncthreads();
    for (size_t i = 2 * (blockIdx.x * (size_t)blockDim.x + threadIdx.x); i < I; i += 2 * (size_t)gridDim.x * blockDim.x) {
        float2 a[R];
        #pragma unroll
        for (int q = 0; q < R; q++) a[q] = wpair<R, BT>(W, I, q, i);
        for (int rr = 0; rr < nr; rr++) {
            size_t n = n0 + rr;
            float g0 = 0.0f, g1 = 0.0f;
            #pragma unroll
            for (int q = 0; q < R; q++) { g0 += d[rr][q] * a[q].x; g1 += d[rr][q] * a[q].y; }
            g0 *= out_scale; g1 *= out_scale;
            if (p > 0.0f) { g0 *= keep(k, n * I + i, p, scale); g1 *= keep(k, n * I + i + 1, p, scale); }
            __nv_bfloat162 *o = (__nv_bfloat162 *)(dx + n * ldd + i);
            float2 v = __bfloat1622float2(*o);
            *o = __floats2bfloat162_rn(v.x + g0, v.y + g1);
        }
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

static void launch_in(bf16_t *t, const bf16_t *x, size_t ldx, const bf16_t *W, int bt, size_t N, size_t I, size_t r,
                      uint64_t k, float p, float out_scale, cudaStream_t s) {
    if (!N) return;
    float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    unsigned grid = cdiv(N, LR_ROWS);
#define L_IN(R) (bt ? lora_in_kernel<R, true><<<grid, 256, 0, s>>>((bf16 *)t, (const bf16 *)x, ldx, (const bf16 *)W, N, I, k, p, scale, out_scale) \
                    : lora_in_kernel<R, false><<<grid, 256, 0, s>>>((bf16 *)t, (const bf16 *)x, ldx, (const bf16 *)W, N, I, k, p, scale, out_scale))
    RANK_SWITCH(r, L_IN);
#undef L_IN
    LAUNCH_CHECK();
}

static void launch_dx(bf16_t *dx, size_t ldd, const bf16_t *dt, const bf16_t *W, int bt, size_t N, size_t I, size_t r,
                      uint64_t k, float p, float out_scale, cudaStream_t s) {
    if (!N) return;
    float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    unsigned gx = cdiv(I / 2, 256);
    dim3 grid(gx < 16 ? gx : 16, cdiv(N, DX_ROWS));
#define L_DX(R) (bt ? lora_dx_kernel<R, true><<<grid, 256, 0, s>>>((bf16 *)dx, ldd, (const bf16 *)dt, (const bf16 *)W, N, I, k, p, scale, out_scale) \
                    : lora_dx_kernel<R, false><<<grid, 256, 0, s>>>((bf16 *)dx, ldd, (const bf16 *)dt, (const bf16 *)W, N, I, k, p, scale, out_scale))
    RANK_SWITCH(r, L_DX);
#undef L_DX
    LAUNCH_CHECK();
}

static void launch_da(float *dA, float *part, const bf16_t *dt, const bf16_t *x, size_t ldx, size_t N, size_t I,
                      size_t r, uint64_t k, float p, float out_scale, int transpose, cudaStream_t s) {
    if (!N) return;
    float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    size_t chunks = (N + DA_CHUNK - 1) / DA_CHUNK;
    dim3 grid(cdiv(I / 2, 128), (unsigned)chunks);
#define L_DA(R) lora_da_kernel<R><<<grid, 128, 0, s>>>(part, (const bf16 *)dt, (const bf16 *)x, ldx, N, I, k, p, scale)
    RANK_SWITCH(r, L_DA);
#undef L_DA
    LAUNCH_CHECK();
    unsigned g = cdiv(r * I, 256);
    lora_da_sum_kernel<<<g < 1024 ? g : 1024, 256, 0, s>>>(dA, part, chunks, r, I, out_scale, transpose);
    LAUNCH_CHECK();
}

extern "C" void k_lora_in(bf16_t *t, const bf16_t *x, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k,
                          float p, cudaStream_t s) {
    launch_in(t, x, I, A, 0, N, I, r, k, p, 1.0f, s);
}

extern "C" void k_lora_da(float *dA, float *part, const bf16_t *dt, const bf16_t *x, size_t N, size_t I, size_t r,
                          uint64_t k, float p, cudaStream_t s) {
    launch_da(dA, part, dt, x, I, N, I, r, k, p, 1.0f, 0, s);
}

extern "C" void k_lora_dx(bf16_t *dx, const bf16_t *dt, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k,
                          float p, cudaStream_t s) {
    launch_dx(dx, I, dt, A, 0, N, I, r, k, p, 1.0f, s);
}

extern "C" void k_lora_out(bf16_t *y, size_t ldy, const bf16_t *t, const bf16_t *B, size_t N, size_t O, size_t r,
                           float sc, cudaStream_t s) {
    launch_dx(y, ldy, t, B, 1, N, O, r, 0, 0.0f, sc, s);
}

extern "C" void k_lora_dt(bf16_t *dt, const bf16_t *dy, size_t lddy, const bf16_t *B, size_t N, size_t O, size_t r,
                          float sc, cudaStream_t s) {
    launch_in(dt, dy, lddy, B, 1, N, O, r, 0, 0.0f, sc, s);
}

extern "C" void k_lora_db(float *dB, float *part, const bf16_t *t, const bf16_t *dy, size_t lddy, size_t N, size_t O,
                          size_t r, float sc, cudaStream_t s) {
    launch_da(dB, part, t, dy, lddy, N, O, r, 0, 0.0f, sc, 1, s);
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

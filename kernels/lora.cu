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
#include "lora_internal.cuh"

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

// The weight of a product, element (q, i) of an (r, I) view: A (r, I) itself,
// or, with BT, B stored (I, r) as PEFT stores lora_B (out, r).
template <int R, bool BT>
__device__ __forceinline__ float2 wpair(const bf16 *W, size_t I, int q, size_t i) {
    if (BT) return make_float2(bf(W[i * R + q]), bf(W[(i + 1) * R + q]));
    return __bfloat1622float2(*(const __nv_bfloat162 *)(W + (size_t)q * I + i));
}

// All R weights of column pair (i, i+1) at once: w[q] = wpair(W, I, q, i).
// With BT the two rows of B are 2R contiguous bf16, read as 16-byte vectors
// when R is a multiple of 8 (one load where R scalar loads were).
template <int R, bool BT>
__device__ __forceinline__ void wpairs(float2 *w, const bf16 *W, size_t I, size_t i) {
    if constexpr (BT && R % 8 == 0) {
        const uint4 *p0 = (const uint4 *)(W + i * R), *p1 = (const uint4 *)(W + (i + 1) * R);
        #pragma unroll
        for (int v = 0; v < R / 8; v++) {
            bf16x8 a, b;
            a.u = p0[v]; b.u = p1[v];
            #pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 fa = __bfloat1622float2(a.h[e]), fb = __bfloat1622float2(b.h[e]);
                w[v * 8 + 2 * e] = make_float2(fa.x, fb.x);
                w[v * 8 + 2 * e + 1] = make_float2(fa.y, fb.y);
            }
        }
    } else {
        #pragma unroll
        for (int q = 0; q < R; q++) w[q] = wpair<R, BT>(W, I, q, i);
    }
}

// Rows per block of the input kernel: as many as the registers allow (each
// thread keeps ROWS x G x R partial sums), so that W is read once per ROWS rows.
template <int R, int G> struct in_rows {
    static const int v = G * R <= 8 ? 8 : G * R <= 16 ? 4 : (G * R <= 32 ? 2 : 1);
};

// The end of an input-side kernel: each thread's partial sums acc (ROWS x G x R)
// summed over the block's WARPS warps (warp shuffles, then shared memory red, in
// warp order: deterministic) and stored as t[z + g] rows n0 .. n0 + nr.
template <int R, int G, int ROWS, int WARPS>
__device__ __forceinline__ void in_store(float (&acc)[ROWS][G][R], float (*red)[ROWS * G * R], const lgk &p, int z,
                                         size_t n0, int nr, float out_scale) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    #pragma unroll
    for (int a = 0; a < ROWS; a++)
        #pragma unroll
        for (int g = 0; g < G; g++)
            #pragma unroll
            for (int q = 0; q < R; q++) {
                float v = warp_sum(acc[a][g][q]);
                if (lane == 0) red[warp][(a * G + g) * R + q] = v;
            }
    __syncthreads();
    for (int j = threadIdx.x; j < nr * G * R; j += blockDim.x) {
        float v = 0.0f;
        #pragma unroll
        for (int w = 0; w < WARPS; w++) v += red[w][j];
        int a = j / (G * R), g = (j / R) % G, q = j % R;
        p.t[z + g][(n0 + a) * R + q] = tobf(v * out_scale);
    }
}

// t[g] (N, R) = out_scale * (mask_g * x) W[g]^T for every g, x (N, I) with row
// stride ldx, W[g] an (R, I) view (wpair). A block of 256 threads owns ROWS
// rows: threads stride over column pairs of I (bf16x2, coalesced), each keeping
// ROWS x G x R partial sums, then a block reduction.
// Used for the adapter input t = dropout(x) A^T (a group) and for dt = s dy B (G = 1).
template <int R, int G, bool BT>
__global__ void __launch_bounds__(256) lora_in_kernel(lgk p, size_t ldx, size_t N, float pd, float scale,
                                                      float out_scale) {
    const int ROWS = in_rows<R, G>::v;
    const int z = blockIdx.z;                // module base: W[z + g], t[z + g]
    const bf16 *x = p.x[z];
    size_t I = p.cols[z];
    __shared__ float red[8][ROWS * G * R];
    size_t n0 = blockIdx.x * (size_t)ROWS;
    int nr = (int)min((size_t)ROWS, N - n0);
    float acc[ROWS][G][R] = {};
    for (size_t i = 2 * threadIdx.x; i < I; i += 2 * blockDim.x) {
        float2 av[G][R];
        #pragma unroll
        for (int g = 0; g < G; g++) wpairs<R, BT>(av[g], p.W[z + g], I, i);
        #pragma unroll
        for (int a = 0; a < ROWS; a++) {
            if (a >= nr) break;
            size_t n = n0 + a;
            float2 xv = __bfloat1622float2(*(const __nv_bfloat162 *)(x + n * ldx + i));
            #pragma unroll
            for (int g = 0; g < G; g++) {
                float2 xg = xv;
                if (pd > 0.0f) {
                    xg.x *= keep(p.k[z + g], n * I + i, pd, scale); xg.y *= keep(p.k[z + g], n * I + i + 1, pd, scale);
                }
                #pragma unroll
                for (int q = 0; q < R; q++) acc[a][g][q] += xg.x * av[g][q].x + xg.y * av[g][q].y;
            }
        }
    }
    in_store<R, G, ROWS, 8>(acc, red, p, z, n0, nr, out_scale);
}

// The same product with 16-byte loads: a thread owns 8 consecutive columns of
// a 1024-column stripe (128 threads), so each load instruction moves four
// times what a bf16x2 load did and fewer iterations wait on memory. Needs
// I, ldx and every pointer 16-byte aligned (lora_v8_ok); A's rows, or B's
// 8 rows of a column block, come in as 16-byte vectors too.

template <int R, int G, bool BT>
__global__ void __launch_bounds__(128) lora_in_v8_kernel(lgk p, size_t ldx, size_t N, float pd, float scale,
                                                         float out_scale) {
    const int ROWS = in_rows<R, G>::v;
    __shared__ float red[4][ROWS * G * R];
    const int z = blockIdx.z;
    const bf16 *x = p.x[z];
    size_t I = p.cols[z];
    size_t n0 = blockIdx.x * (size_t)ROWS;
    int nr = (int)min((size_t)ROWS, N - n0);
    float acc[ROWS][G][R] = {};
    for (size_t i = 8 * threadIdx.x; i < I; i += 8 * blockDim.x) {
        float xv[ROWS][8];
        #pragma unroll
        for (int a = 0; a < ROWS; a++) {
            bf16x8 v;
            v.u = a < nr ? *(const uint4 *)(x + (n0 + a) * ldx + i) : make_uint4(0, 0, 0, 0);
            #pragma unroll
            for (int e = 0; e < 4; e++) { float2 f = __bfloat1622float2(v.h[e]); xv[a][2 * e] = f.x; xv[a][2 * e + 1] = f.y; }
        }
        #pragma unroll
        for (int g = 0; g < G; g++) {
            float wv[R][8];   // wv[q][e] = W_g(q, i + e)
            if constexpr (BT) {
                #pragma unroll
                for (int e = 0; e < 8; e++) {
                    #pragma unroll
                    for (int q0 = 0; q0 < R; q0 += 8) {
                        if constexpr (R >= 8) {
                            bf16x8 v; v.u = *(const uint4 *)(p.W[z + g] + (i + e) * R + q0);
                            #pragma unroll
                            for (int h = 0; h < 4; h++) {
                                float2 f = __bfloat1622float2(v.h[h]); wv[q0 + 2 * h][e] = f.x; wv[q0 + 2 * h + 1][e] = f.y;
                            }
                        }
                    }
                    if constexpr (R < 8) {
                        #pragma unroll
                        for (int q = 0; q < R; q++) wv[q][e] = bf(p.W[z + g][(i + e) * R + q]);
                    }
                }
            } else {
                #pragma unroll
                for (int q = 0; q < R; q++) {
                    bf16x8 v; v.u = *(const uint4 *)(p.W[z + g] + (size_t)q * I + i);
                    #pragma unroll
                    for (int h = 0; h < 4; h++) { float2 f = __bfloat1622float2(v.h[h]); wv[q][2 * h] = f.x; wv[q][2 * h + 1] = f.y; }
                }
            }
            #pragma unroll
            for (int a = 0; a < ROWS; a++) {
                float xm[8];
                #pragma unroll
                for (int e = 0; e < 8; e++)
                    xm[e] = pd > 0.0f ? xv[a][e] * keep(p.k[z + g], (n0 + a) * I + i + e, pd, scale) : xv[a][e];
                #pragma unroll
                for (int q = 0; q < R; q++) {
                    float s0 = 0.0f;
                    #pragma unroll
                    for (int e = 0; e < 8; e++) s0 += xm[e] * wv[q][e];
                    acc[a][g][q] += s0;
                }
            }
        }
    }
    in_store<R, G, ROWS, 4>(acc, red, p, z, n0, nr, out_scale);
}

// Whether every operand of a launch suits 16-byte access (lora_in_v8_kernel, the
// tensor-core kernels): rows, their stride and the first nmod weights.
static bool lora_v8_ok(const lgk &p, int nmod, int nz, size_t ldx) {
    if (ldx % 8) return false;
    for (int z = 0; z < nz; z++)
        if (p.cols[z] % 8 || !aligned16(p.x[z])) return false;
    for (int m = 0; m < nmod; m++)
        if (!aligned16(p.W[m])) return false;
    return true;
}

// Partial dA over a chunk of rows, for every module g of a group:
// part[g][c] (R, I) = sum_{n in chunk c} dt_g[n] (mask_g * x[n]).
// A thread owns a column pair (bf16x2 loads of x, read once for the group).
// A batched (B-side) launch writes slice z's partials at part + z * zstride.
template <int R, int G>
__global__ void lora_da_kernel(float *part, size_t zstride, lgk p, size_t ldx, size_t N, float pd, float scale) {
    __shared__ float dts[DA_CHUNK][G * R];
    const int z = blockIdx.z;
    const bf16 *x = p.x[z];
    size_t I = p.cols[z];
    part += z * zstride;
    size_t c = blockIdx.y, chunks = gridDim.y, n0 = c * DA_CHUNK, n1 = min(N, n0 + DA_CHUNK);
    for (size_t j = threadIdx.x; j < (n1 - n0) * G * R; j += blockDim.x) {
        size_t row = j / (G * R), g = (j / R) % G, q = j % R;
        dts[row][g * R + q] = bf(p.t[z + g][(n0 + row) * R + q]);
    }
    __syncthreads();
    size_t i = 2 * (blockIdx.x * (size_t)blockDim.x + threadIdx.x);
    if (i >= I) return;
    float acc[G][R][2];
    #pragma unroll
    for (int g = 0; g < G; g++)
        #pragma unroll
        for (int q = 0; q < R; q++) acc[g][q][0] = acc[g][q][1] = 0.0f;
    // Unrolled so that several rows' loads are in flight at once: with one
    // block per (column range, chunk) there are few warps per SM to hide latency.
    #pragma unroll 8
    for (size_t n = n0; n < n1; n++) {
        float2 xv = __bfloat1622float2(*(const __nv_bfloat162 *)(x + n * ldx + i));
        #pragma unroll
        for (int g = 0; g < G; g++) {
            float2 xg = xv;
            if (pd > 0.0f) {
                xg.x *= keep(p.k[z + g], n * I + i, pd, scale); xg.y *= keep(p.k[z + g], n * I + i + 1, pd, scale);
            }
            #pragma unroll
            for (int q = 0; q < R; q++) {
                acc[g][q][0] += dts[n - n0][g * R + q] * xg.x;
                acc[g][q][1] += dts[n - n0][g * R + q] * xg.y;
            }
        }
    }
    #pragma unroll
    for (int g = 0; g < G; g++)
        #pragma unroll
        for (int q = 0; q < R; q++)
            *(float2 *)(part + ((g * chunks + c) * R + q) * I + i) = make_float2(acc[g][q][0], acc[g][q][1]);
}

// dA_m (R, I_m) += out_scale * sum over chunks, in chunk order (deterministic);
// blockIdx.y = m, the module, its partials at part + m * mstride (a shared
// launch's modules all have I = cols[0]; a batched launch's their own cols[m]).
// With transpose the sum lands in an (I, R) matrix (lora_B's layout).
__global__ void lora_da_sum_kernel(lgk p, int batched, const float *part, size_t mstride, size_t chunks, size_t R,
                                   float out_scale, int transpose) {
    int m = blockIdx.y;
    size_t I = p.cols[batched ? m : 0], RI = R * I;
    const float *pm = part + m * mstride;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < RI; j += (size_t)gridDim.x * blockDim.x) {
        // Eight chunks' loads in flight at once (a plain loop waits for each in
        // turn); the additions stay in chunk order.
        float acc = 0.0f;
        size_t c = 0;
        for (; c + 8 <= chunks; c += 8) {
            float v[8];
            #pragma unroll
            for (int u = 0; u < 8; u++) v[u] = pm[(c + u) * RI + j];
            #pragma unroll
            for (int u = 0; u < 8; u++) acc += v[u];
        }
        for (; c < chunks; c++) acc += pm[c * RI + j];
        size_t o = transpose ? (j % I) * R + j / I : j;
        p.dA[m][o] += out_scale * acc;
    }
}

// dx (N, I) (row stride ldd) += sum_g mask_g * out_scale * (dt_g W[g]), dt_g
// (N, R) bf16, W[g] an (R, I) view (wpair). A block owns DX_ROWS rows and a
// thread a column pair, so that each W value read serves DX_ROWS rows; dx is
// read and written once for the whole group. Used for the input gradient
// dx += dropout'(dt A) and (G = 1, BT) for the adapter output y += s t B^T.
#define DX_ROWS 8
template <int R, int G, bool BT>
__global__ void lora_dx_kernel(size_t ldd, lgk p, size_t N, float pd, float scale, float out_scale) {
    const int z = blockIdx.z;
    bf16 *dx = (bf16 *)p.x[z];
    size_t I = p.cols[z];
    size_t n0 = blockIdx.y * (size_t)DX_ROWS;
    int nr = (int)min((size_t)DX_ROWS, N - n0);
    __shared__ float d[DX_ROWS][G * R];
    for (int j = threadIdx.x; j < nr * G * R; j += blockDim.x) {
        int row = j / (G * R), g = (j / R) % G, q = j % R;
        d[row][g * R + q] = bf(p.t[z + g][(n0 + row) * R + q]);
    }
    __syncthreads();
    for (size_t i = 2 * (blockIdx.x * (size_t)blockDim.x + threadIdx.x); i < I; i += 2 * (size_t)gridDim.x * blockDim.x) {
        float2 a[G][R];
        #pragma unroll
        for (int g = 0; g < G; g++) wpairs<R, BT>(a[g], p.W[z + g], I, i);
        for (int rr = 0; rr < nr; rr++) {
            size_t n = n0 + rr;
            float s0 = 0.0f, s1 = 0.0f;
            #pragma unroll
            for (int g = 0; g < G; g++) {
                float g0 = 0.0f, g1 = 0.0f;
                #pragma unroll
                for (int q = 0; q < R; q++) { g0 += d[rr][g * R + q] * a[g][q].x; g1 += d[rr][g * R + q] * a[g][q].y; }
                if (pd > 0.0f) { g0 *= keep(p.k[z + g], n * I + i, pd, scale); g1 *= keep(p.k[z + g], n * I + i + 1, pd, scale); }
                s0 += g0; s1 += g1;
            }
            __nv_bfloat162 *o = (__nv_bfloat162 *)(dx + n * ldd + i);
            float2 v = __bfloat1622float2(*o);
            *o = __floats2bfloat162_rn(v.x + s0 * out_scale, v.y + s1 * out_scale);
        }
    }
}

#define RANK_SWITCH(r, CALL)                                                            \
    switch (r) {                                                                        \
    case 1: CALL(1); break; case 2: CALL(2); break; case 4: CALL(4); break;             \
    case 8: CALL(8); break; case 16: CALL(16); break;                                   \
    default: die_at(__FILE__, __LINE__, "fused LoRA kernels: rank %zu not compiled", r); \
    }
#define GROUP_SWITCH(G, r, CALL) LORA_GROUP_CASES(G, RANK_SWITCH(r, CALL))

extern "C" int lora_fused_rank_ok(size_t r) { return r == 1 || r == 2 || r == 4 || r == 8 || r == 16; }

extern "C" size_t lora_da_ws_floats(size_t N, size_t r, size_t I) { return mem_lora_da_floats(N, r, I); }

static lgk to_lgk(const lora_group *gr) {
    lgk p;
    memset(&p, 0, sizeof p);
    for (int g = 0; g < gr->g; g++) {
        p.W[g] = (const bf16 *)gr->w[g]; p.t[g] = (bf16 *)gr->t[g]; p.dA[g] = gr->dw[g]; p.k[g] = gr->k[g];
    }
    return p;
}

// Whether rank r goes to the tensor-core kernels (lora_tc.cu) where the rows
// suit them. LORAPIPE_LORA_KERNELS=cuda keeps the CUDA-core kernels (A/B runs,
// and the GPU tests check both).
static bool use_tc(size_t r) {
    static int cuda_cores = -1;
    if (cuda_cores < 0) { const char *e = getenv("LORAPIPE_LORA_KERNELS"); cuda_cores = e && !strcmp(e, "cuda"); }
    return lora_tc_ok(r) && !cuda_cores;
}

// Shared input (bt = 0): one z, the group's G modules inside. Batched B side
// (bt = 1): G = 1 per slice, nz slices.
static void launch_in(const lgk &p, int G, int nz, size_t ldx, int bt, size_t N, size_t r, float pd, float out_scale,
                      cudaStream_t s) {
    if (!N) return;
    float scale = pd > 0.0f ? 1.0f / (1.0f - pd) : 1.0f;
    bool v8 = lora_v8_ok(p, bt ? nz : G, nz, ldx);
    if (v8 && use_tc(r)) {
        lora_in_tc(p, G, nz, ldx, bt, N, r, keep_thr(pd), out_scale * scale, s);
        return;
    }
#define L_IN(R) do { dim3 grid(cdiv(N, in_rows<R, GG>::v), 1, nz);                                             \
        if (v8 && bt) lora_in_v8_kernel<R, 1, true><<<grid, 128, 0, s>>>(p, ldx, N, pd, scale, out_scale);     \
        else if (v8) lora_in_v8_kernel<R, GG, false><<<grid, 128, 0, s>>>(p, ldx, N, pd, scale, out_scale);    \
        else if (bt) lora_in_kernel<R, 1, true><<<grid, 256, 0, s>>>(p, ldx, N, pd, scale, out_scale);         \
        else lora_in_kernel<R, GG, false><<<grid, 256, 0, s>>>(p, ldx, N, pd, scale, out_scale);              \
    } while (0)
    if (bt) G = 1;
    GROUP_SWITCH(G, r, L_IN);
#undef L_IN
    LAUNCH_CHECK();
}

static void launch_dx(const lgk &p, int G, int nz, size_t ldd, int bt, size_t N, size_t r, float pd, float out_scale,
                      cudaStream_t s) {
    if (!N) return;
    float scale = pd > 0.0f ? 1.0f / (1.0f - pd) : 1.0f;
    if (lora_v8_ok(p, bt ? 0 : G, nz, ldd) && use_tc(r)) {
        lora_dx_tc(p, G, nz, ldd, bt, N, r, keep_thr(pd), out_scale * scale, s);
        return;
    }
    unsigned gx = cdiv(max_cols(&p, nz) / 2, 256);
    dim3 grid(gx < 16 ? gx : 16, cdiv(N, DX_ROWS), nz);
#define L_DX(R) do {                                                                                     \
        if (bt) lora_dx_kernel<R, 1, true><<<grid, 256, 0, s>>>(ldd, p, N, pd, scale, out_scale);        \
        else lora_dx_kernel<R, GG, false><<<grid, 256, 0, s>>>(ldd, p, N, pd, scale, out_scale);         \
    } while (0)
    if (bt) G = 1;
    GROUP_SWITCH(G, r, L_DX);
#undef L_DX
    LAUNCH_CHECK();
}

// part holds G (or nz) modules' partial sums, each chunks x r x cols.
static void launch_da(const lgk &p, int G, int nz, float *part, size_t ldx, size_t N, size_t r, float pd,
                      float out_scale, int transpose, cudaStream_t s) {
    if (!N) return;
    float scale = pd > 0.0f ? 1.0f / (1.0f - pd) : 1.0f;
    size_t chunks = (N + DA_CHUNK - 1) / DA_CHUNK, cmax = max_cols(&p, nz), zstride = chunks * r * cmax;
    int mods = nz > 1 ? nz : G, GD = nz > 1 ? 1 : G;
    if (lora_v8_ok(p, 0, nz, ldx) && aligned16(part) && use_tc(r)) {
        lora_da_tc(p, GD, nz, part, zstride, ldx, N, r, keep_thr(pd), scale, s);
    } else {
        dim3 grid(cdiv(cmax / 2, 128), (unsigned)chunks, nz);
#define L_DA(R) lora_da_kernel<R, GG><<<grid, 128, 0, s>>>(part, zstride, p, ldx, N, pd, scale)
        GROUP_SWITCH(GD, r, L_DA);
#undef L_DA
        LAUNCH_CHECK();
    }
    unsigned g = cdiv(r * cmax, 256);
    dim3 sg(g < 512 ? g : 512, mods);
    lora_da_sum_kernel<<<sg, 256, 0, s>>>(p, nz > 1, part, nz > 1 ? zstride : chunks * r * p.cols[0], chunks, r,
                                          out_scale, transpose);
    LAUNCH_CHECK();
}

extern "C" void k_lora_in_group(const lora_group *gr, const bf16_t *x, size_t N, size_t I, size_t r, float p,
                                cudaStream_t s) {
    lgk k = to_lgk(gr);
    k.x[0] = (const bf16 *)x; k.cols[0] = I;
    launch_in(k, gr->g, 1, I, 0, N, r, p, 1.0f, s);
}

extern "C" void k_lora_da_group(const lora_group *gr, float *part, const bf16_t *x, size_t N, size_t I, size_t r,
                                float p, cudaStream_t s) {
    lgk k = to_lgk(gr);
    k.x[0] = (const bf16 *)x; k.cols[0] = I;
    launch_da(k, gr->g, 1, part, I, N, r, p, 1.0f, 0, s);
}

extern "C" void k_lora_dx_group(bf16_t *dx, const lora_group *gr, size_t N, size_t I, size_t r, float p,
                                cudaStream_t s) {
    lgk k = to_lgk(gr);
    k.x[0] = (const bf16 *)dx; k.cols[0] = I;
    launch_dx(k, gr->g, 1, I, 0, N, r, p, 1.0f, s);
}

// B side, batched: gr->w are the B (O_j, r), gr->io the y or dy column blocks
// (row stride gr->ld), gr->cols the O_j.
static lgk to_lgk_b(const lora_group *gr, size_t r) {
    // wpairs reads B's rows as 16-byte vectors when r is a multiple of 8; the
    // LoRA arena's offsets are multiples of r, so this holds for our buffers.
    for (int g = 0; g < gr->g; g++)
        if (r % 8 == 0 && gr->w[g] && ((uintptr_t)gr->w[g] & 15))
            die_at(__FILE__, __LINE__, "lora B-side kernels: B at %p is not 16-byte aligned", (const void *)gr->w[g]);
    lgk k = to_lgk(gr);
    for (int g = 0; g < gr->g; g++) { k.x[g] = (const bf16 *)gr->io[g]; k.cols[g] = gr->cols[g]; }
    return k;
}

extern "C" void k_lora_out_batch(const lora_group *gr, size_t N, size_t r, float sc, cudaStream_t s) {
    if (!gr->g) return;
    launch_dx(to_lgk_b(gr, r), 1, gr->g, gr->ld, 1, N, r, 0.0f, sc, s);
}

extern "C" void k_lora_dt_batch(const lora_group *gr, size_t N, size_t r, float sc, cudaStream_t s) {
    if (!gr->g) return;
    launch_in(to_lgk_b(gr, r), 1, gr->g, gr->ld, 1, N, r, 0.0f, sc, s);
}

extern "C" void k_lora_db_batch(const lora_group *gr, float *part, size_t N, size_t r, float sc, cudaStream_t s) {
    if (!gr->g) return;
    launch_da(to_lgk_b(gr, r), 1, gr->g, part, gr->ld, N, r, 0.0f, sc, 1, s);
}

static lora_group one(const bf16_t *w, bf16_t *t, float *dw, uint64_t k) {
    lora_group gr;
    memset(&gr, 0, sizeof gr);
    gr.g = 1; gr.w[0] = w; gr.t[0] = t; gr.dw[0] = dw; gr.k[0] = k;
    return gr;
}

extern "C" void k_lora_in(bf16_t *t, const bf16_t *x, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k,
                          float p, cudaStream_t s) {
    lora_group gr = one(A, t, NULL, k);
    k_lora_in_group(&gr, x, N, I, r, p, s);
}

extern "C" void k_lora_da(float *dA, float *part, const bf16_t *dt, const bf16_t *x, size_t N, size_t I, size_t r,
                          uint64_t k, float p, cudaStream_t s) {
    lora_group gr = one(NULL, (bf16_t *)dt, dA, k);
    k_lora_da_group(&gr, part, x, N, I, r, p, s);
}

extern "C" void k_lora_dx(bf16_t *dx, const bf16_t *dt, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k,
                          float p, cudaStream_t s) {
    lora_group gr = one(A, (bf16_t *)dt, NULL, k);
    k_lora_dx_group(dx, &gr, N, I, r, p, s);
}

static lora_group one_b(const bf16_t *B, bf16_t *t, float *dB, bf16_t *io, size_t ld, size_t O) {
    lora_group gr = one(B, t, dB, 0);
    gr.io[0] = io; gr.ld = ld; gr.cols[0] = O;
    return gr;
}

extern "C" void k_lora_out(bf16_t *y, size_t ldy, const bf16_t *t, const bf16_t *B, size_t N, size_t O, size_t r,
                           float sc, cudaStream_t s) {
    lora_group gr = one_b(B, (bf16_t *)t, NULL, y, ldy, O);
    k_lora_out_batch(&gr, N, r, sc, s);
}

extern "C" void k_lora_dt(bf16_t *dt, const bf16_t *dy, size_t lddy, const bf16_t *B, size_t N, size_t O, size_t r,
                          float sc, cudaStream_t s) {
    lora_group gr = one_b(B, dt, NULL, (bf16_t *)dy, lddy, O);
    k_lora_dt_batch(&gr, N, r, sc, s);
}

extern "C" void k_lora_db(float *dB, float *part, const bf16_t *t, const bf16_t *dy, size_t lddy, size_t N, size_t O,
                          size_t r, float sc, cudaStream_t s) {
    lora_group gr = one_b(NULL, (bf16_t *)t, dB, (bf16_t *)dy, lddy, O);
    k_lora_db_batch(&gr, part, N, r, sc, s);
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

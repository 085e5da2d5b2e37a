// kernels/attention_short.cu: causal attention for short sequences (the
// fine-tuning case: at most ATT_SHORT_MAX tokens), one thread block per
// (sequence, query head), everything in shared memory and tensor cores
// (WMMA bf16 -> fp32). Compared with the batched-GEMM path
// (attention_gemm.cu) nothing is copied into padded tiles in global memory
// and back, scores never leave the SM, and tiles above the diagonal are
// skipped. Numerics follow that path: fp32 scores and softmax, P rounded to
// bf16 before P V, dS = P (dP - delta) * scale rounded to bf16; the backward
// recomputes P from the saved log-sum-exp.
//
// Shared memory per block, Lm = the batch's longest sequence rounded up to 16,
// row stride ldd = D (+8 where it fits, against bank conflicts):
//   forward:  Q K V (Lm, ldd) bf16, S (Lm, Lm) fp32, P (Lm, Lm+8) bf16, staging AS_WARPS x (16, 16) fp32
//   backward: Q K V dO (Lm, ldd) bf16, S/dP (Lm, Lm) fp32 (also the staging), P/dS (Lm, Lm+8) bf16,
//             lse and delta (Lm) fp32
// With D = 128 and Lm = 128 the backward needs 225 KiB of the 227 KiB an
// H100/H200 block may have. The common case (D = 64 or 128, at most 128
// tokens) goes to the register-tile kernels of attention_short_mma.cu instead;
// these stay for the rest (longer sequences, other head sizes).
#include <mma.h>

#include "attention_short_mma.h"
#include "common.cuh"
#include "kernels.h"

using namespace nvcuda;

#define AS_WARPS 16
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a_row;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> frag_a_col;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_acc;

struct as_layout {
    int Lm, D, ldd, ldp;   // rows, head size, row stride of the (L, D) tiles, of P
    size_t off_k, off_v, off_o, off_s, off_p, off_x, bytes;
};

static size_t al128(size_t x) { return (x + 127) & ~(size_t)127; }

// The one place that lays out shared memory (both passes; bwd adds dO, drops the staging).
static as_layout as_plan(size_t Lm, size_t D, int bwd, int pad) {
    as_layout l;
    l.Lm = (int)Lm; l.D = (int)D; l.ldd = (int)D + (pad ? 8 : 0); l.ldp = (int)Lm + 8;
    size_t tile = al128(Lm * l.ldd * 2);
    l.off_k = tile; l.off_v = 2 * tile; l.off_o = 3 * tile;               // Q at 0; dO (bwd) at off_o
    l.off_s = (bwd ? 4 : 3) * tile;
    // S doubles as the backward's per-warp staging: at least AS_WARPS (16, 16) fp32 tiles
    size_t s_bytes = Lm * Lm * 4 > AS_WARPS * 256 * 4 ? Lm * Lm * 4 : AS_WARPS * 256 * 4;
    l.off_p = l.off_s + al128(s_bytes);
    l.off_x = l.off_p + al128(Lm * (size_t)l.ldp * 2);                    // fwd: staging; bwd: lse, delta
    l.bytes = l.off_x + (bwd ? al128(2 * Lm * 4) : AS_WARPS * 256 * 4);
    return l;
}

static int max_smem() {
    static int v = -1;
    if (v < 0) {
        int dev; CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    return v;
}

static int as_fits(size_t Lm, size_t D, int bwd, as_layout *out) {
    for (int pad = 1; pad >= 0; pad--) {
        as_layout l = as_plan(Lm, D, bwd, pad);
        if (l.bytes <= (size_t)max_smem()) { if (out) *out = l; return 1; }
    }
    return 0;
}

extern "C" int att_short_ok(const att_shape *a) {
    if (att_mma_ok(a, (size_t)max_smem())) return 1;
    size_t Lm = (a->max_len + 15) / 16 * 16;
    return a->max_len > 0 && a->max_len <= ATT_SHORT_MAX && a->D % 16 == 0 && a->D <= 256 && a->ld % 8 == 0 &&
           as_fits(Lm, a->D, 0, nullptr) && as_fits(Lm, a->D, 1, nullptr);
}

// With grouped query heads each block writes its head's dK, dV to fp32 scratch
// (N, 2, H, D) and a second kernel sums each group in head order: no atomics,
// so that runs stay bit-reproducible.
extern "C" size_t att_short_scratch_bytes(const att_shape *a) {
    return a->H == a->G ? 0 : a->N * 2 * a->H * a->D * sizeof(float);
}

// Rows [0, L) of a head from a (N, ld) matrix into a (Lm, ldd) tile, zeros below; 16-byte copies.
__device__ void load_rows(bf16 *dst, int ldd, const bf16 *src, size_t ld, int L, int Lm, int D) {
    int per = D / 8;   // uint4 per row
    for (int x = threadIdx.x; x < Lm * per; x += blockDim.x) {
        int i = x / per, c = x % per;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (i < L) v = *(const uint4 *)(src + (size_t)i * ld + c * 8);
        *(uint4 *)(dst + (size_t)i * ldd + c * 8) = v;
    }
}

// S (Lm, Lm) fp32 = A B^T over tiles on or below the diagonal; A, B (Lm, ldd) bf16.
__device__ void tri_abt(float *S, int Lm, const bf16 *A, const bf16 *B, int ldd, int D, int nt) {
    int warp = threadIdx.x >> 5;
    for (int t = warp; t < nt * nt; t += AS_WARPS) {
        int ti = t / nt, tj = t % nt;
        if (tj > ti) continue;
        frag_acc acc; wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < D; k += 16) {
            frag_a_row fa; frag_b_col fb;
            wmma::load_matrix_sync(fa, A + (size_t)ti * 16 * ldd + k, ldd);
            wmma::load_matrix_sync(fb, B + (size_t)tj * 16 * ldd + k, ldd);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(S + (size_t)ti * 16 * Lm + tj * 16, acc, Lm, wmma::mem_row_major);
    }
}

// Write a (16, 16) fp32 accumulator through per-warp staging to rows [r0, r0+16) of
// dst (row stride ld, columns c0..), rows >= L skipped; bf16, or fp32 into dst32.
__device__ void emit_tile(const frag_acc &acc, float *stage, bf16 *dst, float *dst32, size_t ld, int r0, int c0,
                          int L) {
    wmma::store_matrix_sync(stage, acc, 16, wmma::mem_row_major);
    __syncwarp();
    int lane = threadIdx.x & 31;
    for (int e = lane; e < 256; e += 32) {
        int i = r0 + e / 16, j = c0 + e % 16;
        if (i >= L) continue;
        if (dst32) dst32[(size_t)i * ld + j] = stage[e];
        else dst[(size_t)i * ld + j] = tobf(stage[e]);
    }
    __syncwarp();
}

// C (Lm, D) = P V with P (Lm, ldp) lower-triangular in tiles: C tile (ti, td) sums k-tiles 0..ti.
// trans = 1: C = P^T V, tile (ti, td) sums k-tiles ti..nt-1 of P^T (P read column-major).
__device__ void tri_pv(const bf16 *P, int ldp, const bf16 *V, int ldd, int D, int nt, int trans, float *stage,
                       bf16 *dst, float *dst32, size_t ld, int L) {
    int warp = threadIdx.x >> 5, nd = D / 16;
    for (int t = warp; t < nt * nd; t += AS_WARPS) {
        int ti = t / nd, td = t % nd;
        frag_acc acc; wmma::fill_fragment(acc, 0.0f);
        int k0 = trans ? ti : 0, k1 = trans ? nt : ti + 1;
        for (int k = k0; k < k1; k++) {
            frag_b_row fb;
            wmma::load_matrix_sync(fb, V + (size_t)k * 16 * ldd + td * 16, ldd);
            if (trans) {
                frag_a_col fa;
                wmma::load_matrix_sync(fa, P + (size_t)k * 16 * ldp + ti * 16, ldp);
                wmma::mma_sync(acc, fa, fb, acc);
            } else {
                frag_a_row fa;
                wmma::load_matrix_sync(fa, P + (size_t)ti * 16 * ldp + k * 16, ldp);
                wmma::mma_sync(acc, fa, fb, acc);
            }
        }
        emit_tile(acc, stage + warp * 256, dst, dst32, ld, ti * 16, td * 16, L);
    }
}

__global__ void __launch_bounds__(AS_WARPS * 32)
att_short_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, const int32_t *seq, size_t N, int H, int G, size_t ld,
                     float scale, as_layout ly) {
    extern __shared__ __align__(128) unsigned char sm[];
    int s = blockIdx.x / H, h = blockIdx.x % H, kh = h / (H / G), D = ly.D, Lm = ly.Lm;
    int t0 = seq[s], L = seq[s + 1] - t0, nt = (L + 15) / 16;
    if (L <= 0) return;
    bf16 *Q = (bf16 *)sm, *K = (bf16 *)(sm + ly.off_k), *V = (bf16 *)(sm + ly.off_v);
    float *S = (float *)(sm + ly.off_s), *stage = (float *)(sm + ly.off_x);
    bf16 *P = (bf16 *)(sm + ly.off_p);
    const bf16 *row0 = qkv + (size_t)t0 * ld;
    load_rows(Q, ly.ldd, row0 + (size_t)h * D, ld, L, nt * 16, D);
    load_rows(K, ly.ldd, row0 + (size_t)(H + kh) * D, ld, L, nt * 16, D);
    load_rows(V, ly.ldd, row0 + (size_t)(H + G + kh) * D, ld, L, nt * 16, D);
    __syncthreads();
    tri_abt(S, Lm, Q, K, ly.ldd, D, nt);
    __syncthreads();
    // Softmax of each row over keys 0..i, a warp per row; P is zero elsewhere (padding rows too).
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int i = warp; i < nt * 16; i += AS_WARPS) {
        const float *x = S + (size_t)i * Lm;
        bf16 *pr = P + (size_t)i * ly.ldp;
        int n = i < L ? i + 1 : 0;
        float m = -INFINITY, sum = 0.0f;
        for (int j = lane; j < n; j += 32) m = fmaxf(m, x[j] * scale);
        m = warp_max(m);
        for (int j = lane; j < n; j += 32) sum += __expf(x[j] * scale - m);
        sum = warp_sum(sum);
        float l = n ? m + logf(sum) : 0.0f;
        for (int j = lane; j < nt * 16; j += 32) pr[j] = tobf(j < n ? __expf(x[j] * scale - l) : 0.0f);
        if (lane == 0 && n) lse[(size_t)h * N + t0 + i] = l;
    }
    __syncthreads();
    tri_pv(P, ly.ldp, V, ly.ldd, D, nt, 0, stage, out + (size_t)t0 * H * D + (size_t)h * D, nullptr, (size_t)H * D, L);
}

__global__ void __launch_bounds__(AS_WARPS * 32)
att_short_bwd_kernel(bf16 *dqkv, float *dkv32, const bf16 *dout, const bf16 *out, const float *lse, const bf16 *qkv,
                     const int32_t *seq, size_t N, int H, int G, size_t ld, float scale, as_layout ly) {
    extern __shared__ __align__(128) unsigned char sm[];
    int s = blockIdx.x / H, h = blockIdx.x % H, kh = h / (H / G), D = ly.D, Lm = ly.Lm;
    int t0 = seq[s], L = seq[s + 1] - t0, nt = (L + 15) / 16;
    if (L <= 0) return;
    bf16 *Q = (bf16 *)sm, *K = (bf16 *)(sm + ly.off_k), *V = (bf16 *)(sm + ly.off_v), *dO = (bf16 *)(sm + ly.off_o);
    float *S = (float *)(sm + ly.off_s), *ls = (float *)(sm + ly.off_x), *dl = ls + Lm;
    bf16 *P = (bf16 *)(sm + ly.off_p);
    const bf16 *row0 = qkv + (size_t)t0 * ld;
    size_t HD = (size_t)H * D;
    load_rows(Q, ly.ldd, row0 + (size_t)h * D, ld, L, nt * 16, D);
    load_rows(K, ly.ldd, row0 + (size_t)(H + kh) * D, ld, L, nt * 16, D);
    load_rows(V, ly.ldd, row0 + (size_t)(H + G + kh) * D, ld, L, nt * 16, D);
    load_rows(dO, ly.ldd, dout + (size_t)t0 * HD + (size_t)h * D, HD, L, nt * 16, D);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // delta_i = dO_i . O_i (O as the forward stored it, bf16), and the saved lse
    for (int i = warp; i < L; i += AS_WARPS) {
        const bf16 *o = out + (size_t)(t0 + i) * HD + (size_t)h * D;
        const bf16 *g = dout + (size_t)(t0 + i) * HD + (size_t)h * D;
        float d = 0.0f;
        for (int e = lane; e < D; e += 32) d += bf(g[e]) * bf(o[e]);
        d = warp_sum(d);
        if (lane == 0) { dl[i] = d; ls[i] = lse[(size_t)h * N + t0 + i]; }
    }
    __syncthreads();
    tri_abt(S, Lm, Q, K, ly.ldd, D, nt);
    __syncthreads();
    // P exactly as the forward made it
    for (int x = threadIdx.x; x < nt * 16 * nt * 16; x += blockDim.x) {
        int i = x / (nt * 16), j = x % (nt * 16);
        P[(size_t)i * ly.ldp + j] = tobf(i < L && j <= i ? __expf(S[(size_t)i * Lm + j] * scale - ls[i]) : 0.0f);
    }
    __syncthreads();
    // dV = P^T dO (staging in S, free now)
    bf16 *dq = dqkv + (size_t)t0 * ld + (size_t)h * D;
    bf16 *dk = dqkv + (size_t)t0 * ld + (size_t)(H + kh) * D, *dv = dqkv + (size_t)t0 * ld + (size_t)(H + G + kh) * D;
    size_t ld32 = 2 * HD;   // scratch (N, 2, H, D): this head's dK, then its dV
    float *dk32 = dkv32 ? dkv32 + (size_t)t0 * ld32 + (size_t)h * D : nullptr;
    float *dv32 = dkv32 ? dk32 + HD : nullptr;
    tri_pv(P, ly.ldp, dO, ly.ldd, D, nt, 1, S, dv, dv32, dkv32 ? ld32 : ld, L);
    __syncthreads();
    // dP = dO V^T into S, then dS = P (dP - delta) * scale over P in place
    tri_abt(S, Lm, dO, V, ly.ldd, D, nt);
    __syncthreads();
    for (int x = threadIdx.x; x < nt * 16 * nt * 16; x += blockDim.x) {
        int i = x / (nt * 16), j = x % (nt * 16);
        bf16 *p = P + (size_t)i * ly.ldp + j;
        *p = tobf(i < L && j <= i ? bf(*p) * (S[(size_t)i * Lm + j] - dl[i]) * scale : 0.0f);
    }
    __syncthreads();
    // dQ = dS K ; dK = dS^T Q (staging in S again)
    tri_pv(P, ly.ldp, K, ly.ldd, D, nt, 0, S, dq, nullptr, ld, L);
    tri_pv(P, ly.ldp, Q, ly.ldd, D, nt, 1, S, dk, dk32, dkv32 ? ld32 : ld, L);
}

// dqkv's k and v columns (G heads each) from the per-query-head scratch (N, 2, H, D):
// each kv head sums its rep query heads in order.
__global__ void dkv_sum_kernel(bf16 *dqkv, const float *part, size_t N, size_t ld, size_t col0, int H, int G, int D) {
    size_t W = (size_t)2 * G * D, rep = (size_t)(H / G);
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < N * W; x += (size_t)gridDim.x * blockDim.x) {
        size_t n = x / W, c = x % W, which = c / ((size_t)G * D), g = (c / D) % G, e = c % D;
        const float *p = part + n * 2 * H * D + which * H * D + g * rep * D + e;
        float acc = 0.0f;
        for (size_t j = 0; j < rep; j++) acc += p[j * D];
        dqkv[n * ld + col0 + c] = tobf(acc);
    }
}

// The layout for this batch; the kernel's shared-memory opt-in is raised to the
// device's limit once (a per-launch attribute call would sit on the hot path).
static as_layout layout_for(const att_shape *a, int bwd, const void *kernel) {
    static int opted[2];
    size_t Lm = (a->max_len + 15) / 16 * 16;
    as_layout l;
    if (!as_fits(Lm, a->D, bwd, &l)) die_at(__FILE__, __LINE__, "short attention: %zu tokens do not fit", a->max_len);
    if (!opted[bwd]) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem()));
        opted[bwd] = 1;
    }
    return l;
}

extern "C" void att_short_fwd(bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, cudaStream_t s) {
    if (!a->n_seq) return;
    if (att_mma_ok(a, (size_t)max_smem())) { att_mma_fwd((bf16 *)out, lse, (const bf16 *)qkv, a, s); return; }
    as_layout l = layout_for(a, 0, (const void *)att_short_fwd_kernel);
    float scale = (float)(1.0 / sqrt((double)a->D));
    att_short_fwd_kernel<<<(unsigned)(a->n_seq * a->H), AS_WARPS * 32, l.bytes, s>>>(
        (bf16 *)out, lse, (const bf16 *)qkv, a->seq, a->N, (int)a->H, (int)a->G, a->ld, scale, l);
    LAUNCH_CHECK();
}

extern "C" void att_short_bwd(bf16_t *dqkv, const bf16_t *dout, const bf16_t *out, const float *lse,
                              const bf16_t *qkv, const att_shape *a, float *scratch, cudaStream_t s) {
    if (!a->n_seq) return;
    int gqa = a->H != a->G;
    if (att_mma_ok(a, (size_t)max_smem())) {
        att_mma_bwd((bf16 *)dqkv, gqa ? scratch : nullptr, (const bf16 *)dout, (const bf16 *)out, lse,
                    (const bf16 *)qkv, a, s);
    } else {
        as_layout l = layout_for(a, 1, (const void *)att_short_bwd_kernel);
        float scale = (float)(1.0 / sqrt((double)a->D));
        att_short_bwd_kernel<<<(unsigned)(a->n_seq * a->H), AS_WARPS * 32, l.bytes, s>>>(
            (bf16 *)dqkv, gqa ? scratch : nullptr, (const bf16 *)dout, (const bf16 *)out, lse, (const bf16 *)qkv,
            a->seq, a->N, (int)a->H, (int)a->G, a->ld, scale, l);
        LAUNCH_CHECK();
    }
    if (gqa) {
        size_t g = (a->N * 2 * a->G * a->D + 255) / 256;
        dkv_sum_kernel<<<(unsigned)(g < 4096 ? g : 4096), 256, 0, s>>>((bf16 *)dqkv, scratch, a->N, a->ld, a->H * a->D,
                                                                       (int)a->H, (int)a->G, (int)a->D);
        LAUNCH_CHECK();
    }
}

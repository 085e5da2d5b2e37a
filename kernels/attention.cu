// kernels/attention.cu: causal grouped-query attention over variable-length
// sequences laid end to end (padded batches and packed rows alike: positions
// restart and attention stops at every sequence boundary).
//
// Like PyTorch's fused sdpa kernels, scores and the softmax are fp32 inside
// the kernel and the output is rounded to bf16 once; the log-sum-exp of each
// row is kept so the backward pass recomputes probabilities instead of
// storing them. Query head h reads kv head h / (H / G).
//
// One warp works on one query (forward, dq) or one key (dk, dv) at a time;
// lane l holds dimensions l, l + 32, ... (NPER of them). Keys and values of
// the block's range are staged in shared memory as bf16. The backward pass is
// two kernels so that every output element has one writer: deterministic,
// no atomics.
#include "common.cuh"
#include "kernels.h"

#define ATT_WARPS 8
#define ATT_BK 64   // keys (or queries) staged per shared-memory tile

// Work item i of the list: (sequence, first query of the block).
struct qblock { int32_t seq, q0; };

template <int NPER>
__device__ __forceinline__ void load_row(float *r, const bf16 *src, int D, int lane, float scale) {
    #pragma unroll
    for (int t = 0; t < NPER; t++) { int e = lane + 32 * t; r[t] = e < D ? bf(src[e]) * scale : 0.0f; }
}

template <int NPER>
__device__ __forceinline__ float dot_row(const float *r, const bf16 *s, int D, int lane) {
    float acc = 0.0f;
    #pragma unroll
    for (int t = 0; t < NPER; t++) { int e = lane + 32 * t; if (e < D) acc += r[t] * bf(s[e]); }
    return warp_sum(acc);
}

// ---- forward ---------------------------------------------------------------
template <int NPER>
__global__ void att_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, const int32_t *seq, const qblock *items,
                               int N, int H, int G, int D, int ld, float scale) {
    extern __shared__ bf16 smem[];        // K tile (ATT_BK, D) then V tile (ATT_BK, D)
    bf16 *ks = smem, *vs = smem + ATT_BK * D;
    qblock it = items[blockIdx.x];
    int h = blockIdx.y, kh = h / (H / G);
    int t0 = seq[it.seq], L = seq[it.seq + 1] - t0;
    int qend = min(it.q0 + ATT_BQ, L);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kcol = H * D + kh * D, vcol = (H + G) * D + kh * D;

    // Each warp owns queries q0 + warp, q0 + warp + ATT_WARPS, ...; state in registers.
    const int QPW = ATT_BQ / ATT_WARPS;
    float q[QPW][NPER], o[QPW][NPER], m[QPW], l[QPW];
    #pragma unroll
    for (int a = 0; a < QPW; a++) {
        int i = it.q0 + warp + a * ATT_WARPS;
        m[a] = -INFINITY; l[a] = 0.0f;
        #pragma unroll
        for (int t = 0; t < NPER; t++) o[a][t] = 0.0f;
        if (i < qend) load_row<NPER>(q[a], qkv + (size_t)(t0 + i) * ld + h * D, D, lane, scale);
    }
    for (int k0 = 0; k0 < qend; k0 += ATT_BK) {
        int kn = min(ATT_BK, qend - k0);
        __syncthreads();
        for (int x = threadIdx.x; x < kn * D; x += blockDim.x) {
            int j = x / D, e = x % D;
            const bf16 *row = qkv + (size_t)(t0 + k0 + j) * ld;
            ks[j * D + e] = row[kcol + e];
            vs[j * D + e] = row[vcol + e];
        }
        __syncthreads();
        #pragma unroll
        for (int a = 0; a < QPW; a++) {
            int i = it.q0 + warp + a * ATT_WARPS;
            if (i >= qend) continue;
            int jn = min(kn, i - k0 + 1);
            for (int j = 0; j < jn; j++) {
                float s = dot_row<NPER>(q[a], ks + j * D, D, lane);
                float mn = fmaxf(m[a], s);
                float corr = __expf(m[a] - mn), p = __expf(s - mn);
                l[a] = l[a] * corr + p;
                #pragma unroll
                for (int t = 0; t < NPER; t++) {
                    int e = lane + 32 * t;
                    o[a][t] = o[a][t] * corr + (e < D ? p * bf(vs[j * D + e]) : 0.0f);
                }
                m[a] = mn;
            }
        }
    }
    #pragma unroll
    for (int a = 0; a < QPW; a++) {
        int i = it.q0 + warp + a * ATT_WARPS;
        if (i >= qend) continue;
        bf16 *orow = out + (size_t)(t0 + i) * H * D + h * D;
        float inv = 1.0f / l[a];
        #pragma unroll
        for (int t = 0; t < NPER; t++) { int e = lane + 32 * t; if (e < D) orow[e] = tobf(o[a][t] * inv); }
        if (lane == 0) lse[(size_t)h * N + t0 + i] = m[a] + logf(l[a]);
    }
}

// ---- backward: delta_i = dO_i . O_i -----------------------------------------
__global__ void att_delta_kernel(float *delta, const bf16 *dout, const bf16 *out, int N, int H, int D) {
    int tok = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int h = warp; h < H; h += blockDim.x >> 5) {
        const bf16 *a = dout + (size_t)tok * H * D + h * D, *b = out + (size_t)tok * H * D + h * D;
        float acc = 0.0f;
        for (int e = lane; e < D; e += 32) acc += bf(a[e]) * bf(b[e]);
        acc = warp_sum(acc);
        if (lane == 0) delta[(size_t)h * N + tok] = acc;
    }
}

// dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j, with p_ij = exp(s_ij - lse_i), dp_ij = dO_i . v_j.
template <int NPER>
__global__ void att_dq_kernel(bf16 *dqkv, const bf16 *dout, const float *lse, const float *delta, const bf16 *qkv,
                              const int32_t *seq, const qblock *items, int N, int H, int G, int D, int ld,
                              float scale) {
    extern __shared__ bf16 smem[];
    bf16 *ks = smem, *vs = smem + ATT_BK * D;
    qblock it = items[blockIdx.x];
    int h = blockIdx.y, kh = h / (H / G);
    int t0 = seq[it.seq], L = seq[it.seq + 1] - t0;
    int qend = min(it.q0 + ATT_BQ, L);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kcol = H * D + kh * D, vcol = (H + G) * D + kh * D;
    const int QPW = ATT_BQ / ATT_WARPS;
    float q[QPW][NPER], dov[QPW][NPER], dq[QPW][NPER], li[QPW], di[QPW];
    #pragma unroll
    for (int a = 0; a < QPW; a++) {
        int i = it.q0 + warp + a * ATT_WARPS;
        #pragma unroll
        for (int t = 0; t < NPER; t++) dq[a][t] = 0.0f;
        if (i < qend) {
            load_row<NPER>(q[a], qkv + (size_t)(t0 + i) * ld + h * D, D, lane, scale);
            load_row<NPER>(dov[a], dout + (size_t)(t0 + i) * H * D + h * D, D, lane, 1.0f);
            li[a] = lse[(size_t)h * N + t0 + i];
            di[a] = delta[(size_t)h * N + t0 + i];
        }
    }
    for (int k0 = 0; k0 < qend; k0 += ATT_BK) {
        int kn = min(ATT_BK, qend - k0);
        __syncthreads();
        for (int x = threadIdx.x; x < kn * D; x += blockDim.x) {
            int j = x / D, e = x % D;
            const bf16 *row = qkv + (size_t)(t0 + k0 + j) * ld;
            ks[j * D + e] = row[kcol + e];
            vs[j * D + e] = row[vcol + e];
        }
        __syncthreads();
        #pragma unroll
        for (int a = 0; a < QPW; a++) {
            int i = it.q0 + warp + a * ATT_WARPS;
            if (i >= qend) continue;
            int jn = min(kn, i - k0 + 1);
            for (int j = 0; j < jn; j++) {
                float s = dot_row<NPER>(q[a], ks + j * D, D, lane);
                float dp = dot_row<NPER>(dov[a], vs + j * D, D, lane);
                float ds = __expf(s - li[a]) * (dp - di[a]) * scale;
                #pragma unroll
                for (int t = 0; t < NPER; t++) { int e = lane + 32 * t; if (e < D) dq[a][t] += ds * bf(ks[j * D + e]); }
            }
        }
    }
    #pragma unroll
    for (int a = 0; a < QPW; a++) {
        int i = it.q0 + warp + a * ATT_WARPS;
        if (i >= qend) continue;
        bf16 *row = dqkv + (size_t)(t0 + i) * ld + h * D;
        #pragma unroll
        for (int t = 0; t < NPER; t++) { int e = lane + 32 * t; if (e < D) row[e] = tobf(dq[a][t]); }
    }
}

// dk_j = scale * sum_{h in group, i >= j} ds_ij q_i ; dv_j = sum p_ij dO_i.
// Blocks over key ranges (the same work list read as key blocks) and kv heads.
template <int NPER>
__global__ void att_dkv_kernel(bf16 *dqkv, const bf16 *dout, const float *lse, const float *delta, const bf16 *qkv,
                               const int32_t *seq, const qblock *items, int N, int H, int G, int D, int ld,
                               float scale) {
    extern __shared__ bf16 smem[];
    bf16 *qs = smem, *dos = smem + ATT_BK * D;       // staged queries and output gradients
    float *ls = (float *)(smem + 2 * ATT_BK * D), *dl = ls + ATT_BK;
    qblock it = items[blockIdx.x];
    int kh = blockIdx.y, grp = H / G;
    int t0 = seq[it.seq], L = seq[it.seq + 1] - t0;
    int j0 = it.q0, jend = min(j0 + ATT_BQ, L);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int KPW = ATT_BQ / ATT_WARPS;
    float k[KPW][NPER], v[KPW][NPER], dk[KPW][NPER], dv[KPW][NPER];
    #pragma unroll
    for (int a = 0; a < KPW; a++) {
        int j = j0 + warp + a * ATT_WARPS;
        #pragma unroll
        for (int t = 0; t < NPER; t++) { dk[a][t] = 0.0f; dv[a][t] = 0.0f; }
        if (j < jend) {
            load_row<NPER>(k[a], qkv + (size_t)(t0 + j) * ld + H * D + kh * D, D, lane, 1.0f);
            load_row<NPER>(v[a], qkv + (size_t)(t0 + j) * ld + (H + G) * D + kh * D, D, lane, 1.0f);
        }
    }
    for (int h = kh * grp; h < (kh + 1) * grp; h++) {
        for (int i0 = j0; i0 < L; i0 += ATT_BK) {
            int in = min(ATT_BK, L - i0);
            __syncthreads();
            for (int x = threadIdx.x; x < in * D; x += blockDim.x) {
                int i = x / D, e = x % D;
                qs[i * D + e] = qkv[(size_t)(t0 + i0 + i) * ld + h * D + e];
                dos[i * D + e] = dout[(size_t)(t0 + i0 + i) * H * D + h * D + e];
            }
            for (int i = threadIdx.x; i < in; i += blockDim.x) {
                ls[i] = lse[(size_t)h * N + t0 + i0 + i];
                dl[i] = delta[(size_t)h * N + t0 + i0 + i];
            }
            __syncthreads();
            #pragma unroll
            for (int a = 0; a < KPW; a++) {
                int j = j0 + warp + a * ATT_WARPS;
                if (j >= jend) continue;
                for (int i = max(0, j - i0); i < in; i++) {
                    float s = dot_row<NPER>(k[a], qs + i * D, D, lane) * scale;
                    float dp = dot_row<NPER>(v[a], dos + i * D, D, lane);
                    float p = __expf(s - ls[i]);
                    float ds = p * (dp - dl[i]) * scale;
                    #pragma unroll
                    for (int t = 0; t < NPER; t++) {
                        int e = lane + 32 * t;
                        if (e < D) { dk[a][t] += ds * bf(qs[i * D + e]); dv[a][t] += p * bf(dos[i * D + e]); }
                    }
                }
            }
        }
    }
    #pragma unroll
    for (int a = 0; a < KPW; a++) {
        int j = j0 + warp + a * ATT_WARPS;
        if (j >= jend) continue;
        bf16 *row = dqkv + (size_t)(t0 + j) * ld;
        #pragma unroll
        for (int t = 0; t < NPER; t++) {
            int e = lane + 32 * t;
            if (e < D) { row[H * D + kh * D + e] = tobf(dk[a][t]); row[(H + G) * D + kh * D + e] = tobf(dv[a][t]); }
        }
    }
}

static size_t kv_smem(size_t D) { return 2 * ATT_BK * D * sizeof(bf16); }

template <int NPER>
static void fwd_launch(bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, cudaStream_t s) {
    dim3 grid((unsigned)a->n_qblocks, (unsigned)a->H);
    size_t sm = kv_smem(a->D);
    CUDA_CHECK(cudaFuncSetAttribute(att_fwd_kernel<NPER>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    att_fwd_kernel<NPER><<<grid, 32 * ATT_WARPS, sm, s>>>((bf16 *)out, lse, (const bf16 *)qkv, a->seq,
        (const qblock *)a->qblocks, (int)a->N, (int)a->H, (int)a->G, (int)a->D, (int)a->ld,
        (float)(1.0 / sqrt((double)a->D)));
    LAUNCH_CHECK();
}

template <int NPER>
static void bwd_launch(bf16_t *dqkv, float *delta, const bf16_t *dout, const bf16_t *out, const float *lse,
                       const bf16_t *qkv, const att_shape *a, cudaStream_t s) {
    float scale = (float)(1.0 / sqrt((double)a->D));
    att_delta_kernel<<<(unsigned)a->N, 128, 0, s>>>(delta, (const bf16 *)dout, (const bf16 *)out, (int)a->N,
                                                    (int)a->H, (int)a->D);
    LAUNCH_CHECK();
    size_t sm = kv_smem(a->D);
    CUDA_CHECK(cudaFuncSetAttribute(att_dq_kernel<NPER>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    att_dq_kernel<NPER><<<dim3((unsigned)a->n_qblocks, (unsigned)a->H), 32 * ATT_WARPS, sm, s>>>(
        (bf16 *)dqkv, (const bf16 *)dout, lse, delta, (const bf16 *)qkv, a->seq, (const qblock *)a->qblocks,
        (int)a->N, (int)a->H, (int)a->G, (int)a->D, (int)a->ld, scale);
    LAUNCH_CHECK();
    size_t sm2 = sm + 2 * ATT_BK * sizeof(float);
    CUDA_CHECK(cudaFuncSetAttribute(att_dkv_kernel<NPER>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm2));
    att_dkv_kernel<NPER><<<dim3((unsigned)a->n_qblocks, (unsigned)a->G), 32 * ATT_WARPS, sm2, s>>>(
        (bf16 *)dqkv, (const bf16 *)dout, lse, delta, (const bf16 *)qkv, a->seq, (const qblock *)a->qblocks,
        (int)a->N, (int)a->H, (int)a->G, (int)a->D, (int)a->ld, scale);
    LAUNCH_CHECK();
}

extern "C" void k_attention_fwd(bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, cudaStream_t s) {
    if (!a->n_qblocks) return;
    switch ((a->D + 31) / 32) {
    case 1: fwd_launch<1>(out, lse, qkv, a, s); break;
    case 2: fwd_launch<2>(out, lse, qkv, a, s); break;
    case 3: fwd_launch<3>(out, lse, qkv, a, s); break;
    case 4: fwd_launch<4>(out, lse, qkv, a, s); break;
    case 8: fwd_launch<8>(out, lse, qkv, a, s); break;
    default: die_at(__FILE__, __LINE__, "attention: head dimension %zu is not supported", a->D);
    }
}

extern "C" void k_attention_bwd(bf16_t *dqkv, float *delta, const bf16_t *dout, const bf16_t *out, const float *lse,
                                const bf16_t *qkv, const att_shape *a, cudaStream_t s) {
    if (!a->n_qblocks) return;
    switch ((a->D + 31) / 32) {
    case 1: bwd_launch<1>(dqkv, delta, dout, out, lse, qkv, a, s); break;
    case 2: bwd_launch<2>(dqkv, delta, dout, out, lse, qkv, a, s); break;
    case 3: bwd_launch<3>(dqkv, delta, dout, out, lse, qkv, a, s); break;
    case 4: bwd_launch<4>(dqkv, delta, dout, out, lse, qkv, a, s); break;
    case 8: bwd_launch<8>(dqkv, delta, dout, out, lse, qkv, a, s); break;
    default: die_at(__FILE__, __LINE__, "attention: head dimension %zu is not supported", a->D);
    }
}

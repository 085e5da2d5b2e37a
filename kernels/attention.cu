// kernels/attention.cu: causal grouped-query attention over variable-length
// sequences laid end to end (padded batches and packed rows alike: positions
// restart and attention stops at every sequence boundary).
//
// Like PyTorch's fused sdpa kernels, scores and the softmax are fp32 inside
// the kernel and the output is rounded to bf16 once; the log-sum-exp of each
// row is kept so the backward pass recomputes probabilities instead of
// storing them. Query head h reads kv head h / (H / G).
//
// A block owns ATT_BQ queries (or keys) of one sequence and one head; its
// warps take one query (key) at a time. Scores are computed with the lanes
// over 32 keys (queries) at once, reading the other side from a transposed
// shared-memory tile (consecutive lanes, consecutive banks); the weighted
// sums then run with the lanes over the head dimension. The backward pass is
// two kernels so that every output element has one writer: deterministic,
// no atomics.
#include "common.cuh"
#include "kernels.h"

#define ATT_WARPS 4
#define ATT_BK 64            // keys (queries) staged per shared-memory tile

struct qblock { int32_t seq, q0; };

// Shared-memory tile of up to ATT_BK rows of D, as rows (r[j][e]) and/or
// transposed (t[e][j]), bf16.
__device__ __forceinline__ void stage(bf16 *rows, bf16 *trans, const bf16 *src, size_t ld, int n, int D) {
    for (int x = threadIdx.x; x < ATT_BK * D; x += blockDim.x) {
        int j = x / D, e = x % D;
        bf16 v = j < n ? src[(size_t)j * ld + e] : tobf(0.0f);
        if (rows) rows[j * D + e] = v;
        if (trans) trans[e * ATT_BK + j] = v;
    }
}

// ---- forward ---------------------------------------------------------------
template <int NPER>
__global__ void __launch_bounds__(32 * ATT_WARPS)
att_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, const int32_t *seq, const qblock *items, int N, int H, int G,
               int D, int ld, float scale) {
    extern __shared__ char smem_raw[];
    bf16 *kT = (bf16 *)smem_raw, *vs = kT + ATT_BK * D;            // (D, BK), (BK, D)
    float *qs = (float *)(vs + ATT_BK * D);                        // (WARPS, D)
    float *ps = qs + ATT_WARPS * D;                                // (WARPS, 32)
    qblock it = items[blockIdx.x];
    int h = blockIdx.y, kh = h / (H / G);
    int t0 = seq[it.seq], L = seq[it.seq + 1] - t0;
    int qend = min(it.q0 + ATT_BQ, L);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *qw = qs + warp * D, *pw = ps + warp * 32;
    const bf16 *kbase = qkv + (size_t)t0 * ld + H * D + kh * D, *vbase = qkv + (size_t)t0 * ld + (H + G) * D + kh * D;

    const int QPW = ATT_BQ / ATT_WARPS;
    float o[QPW][NPER], m[QPW], l[QPW];
    #pragma unroll
    for (int a = 0; a < QPW; a++) {
        m[a] = -INFINITY; l[a] = 0.0f;
        #pragma unroll
        for (int t = 0; t < NPER; t++) o[a][t] = 0.0f;
    }
    for (int k0 = 0; k0 < qend; k0 += ATT_BK) {
        int kn = min(ATT_BK, qend - k0);
        __syncthreads();
        stage(vs, nullptr, vbase + (size_t)k0 * ld, ld, kn, D);
        stage(nullptr, kT, kbase + (size_t)k0 * ld, ld, kn, D);
        __syncthreads();
        #pragma unroll
        for (int a = 0; a < QPW; a++) {
            int i = it.q0 + warp + a * ATT_WARPS;
            if (i >= qend || i < k0) continue;
            for (int e = lane; e < D; e += 32) qw[e] = bf(qkv[(size_t)(t0 + i) * ld + h * D + e]) * scale;
            __syncwarp();
            int jn = min(kn, i - k0 + 1);
            for (int j0 = 0; j0 < jn; j0 += 32) {
                int j = j0 + lane;
                float s = -INFINITY;
                if (j < jn) {
                    s = 0.0f;
                    for (int e = 0; e < D; e++) s += qw[e] * bf(kT[e * ATT_BK + j]);
                }
                float mn = fmaxf(m[a], warp_max(s));
                float p = j < jn ? __expf(s - mn) : 0.0f, corr = __expf(m[a] - mn);
                l[a] = l[a] * corr + warp_sum(p);
                m[a] = mn;
                pw[lane] = p;
                __syncwarp();
                int cnt = min(32, jn - j0);
                #pragma unroll
                for (int t = 0; t < NPER; t++) {
                    int e = lane + 32 * t;
                    float acc = o[a][t] * corr;
                    if (e < D)
                        for (int jj = 0; jj < cnt; jj++) acc += pw[jj] * bf(vs[(j0 + jj) * D + e]);
                    o[a][t] = acc;
                }
                __syncwarp();
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

// dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j, p_ij = exp(s_ij - lse_i), dp_ij = dO_i . v_j.
template <int NPER>
__global__ void __launch_bounds__(32 * ATT_WARPS)
att_dq_kernel(bf16 *dqkv, const bf16 *dout, const float *lse, const float *delta, const bf16 *qkv, const int32_t *seq,
              const qblock *items, int N, int H, int G, int D, int ld, float scale) {
    extern __shared__ char smem_raw[];
    bf16 *kT = (bf16 *)smem_raw, *ks = kT + ATT_BK * D, *vT = ks + ATT_BK * D;
    float *qs = (float *)(vT + ATT_BK * D), *dos = qs + ATT_WARPS * D, *ps = dos + ATT_WARPS * D;
    qblock it = items[blockIdx.x];
    int h = blockIdx.y, kh = h / (H / G);
    int t0 = seq[it.seq], L = seq[it.seq + 1] - t0;
    int qend = min(it.q0 + ATT_BQ, L);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *qw = qs + warp * D, *dw = dos + warp * D, *pw = ps + warp * 32;
    const bf16 *kbase = qkv + (size_t)t0 * ld + H * D + kh * D, *vbase = qkv + (size_t)t0 * ld + (H + G) * D + kh * D;
    const int QPW = ATT_BQ / ATT_WARPS;
    float dq[QPW][NPER];
    #pragma unroll
    for (int a = 0; a < QPW; a++)
        #pragma unroll
        for (int t = 0; t < NPER; t++) dq[a][t] = 0.0f;
    for (int k0 = 0; k0 < qend; k0 += ATT_BK) {
        int kn = min(ATT_BK, qend - k0);
        __syncthreads();
        stage(ks, kT, kbase + (size_t)k0 * ld, ld, kn, D);
        stage(nullptr, vT, vbase + (size_t)k0 * ld, ld, kn, D);
        __syncthreads();
        #pragma unroll
        for (int a = 0; a < QPW; a++) {
            int i = it.q0 + warp + a * ATT_WARPS;
            if (i >= qend || i < k0) continue;
            for (int e = lane; e < D; e += 32) {
                qw[e] = bf(qkv[(size_t)(t0 + i) * ld + h * D + e]) * scale;
                dw[e] = bf(dout[(size_t)(t0 + i) * H * D + h * D + e]);
            }
            __syncwarp();
            float li = lse[(size_t)h * N + t0 + i], di = delta[(size_t)h * N + t0 + i];
            int jn = min(kn, i - k0 + 1);
            for (int j0 = 0; j0 < jn; j0 += 32) {
                int j = j0 + lane;
                float ds = 0.0f;
                if (j < jn) {
                    float s = 0.0f, dp = 0.0f;
                    for (int e = 0; e < D; e++) {
                        s += qw[e] * bf(kT[e * ATT_BK + j]);
                        dp += dw[e] * bf(vT[e * ATT_BK + j]);
                    }
                    ds = __expf(s - li) * (dp - di) * scale;
                }
                pw[lane] = ds;
                __syncwarp();
                int cnt = min(32, jn - j0);
                #pragma unroll
                for (int t = 0; t < NPER; t++) {
                    int e = lane + 32 * t;
                    if (e < D) {
                        float acc = dq[a][t];
                        for (int jj = 0; jj < cnt; jj++) acc += pw[jj] * bf(ks[(j0 + jj) * D + e]);
                        dq[a][t] = acc;
                    }
                }
                __syncwarp();
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
// Blocks over key ranges (the work list read as key blocks) and kv heads.
template <int NPER>
__global__ void __launch_bounds__(32 * ATT_WARPS)
att_dkv_kernel(bf16 *dqkv, const bf16 *dout, const float *lse, const float *delta, const bf16 *qkv, const int32_t *seq,
               const qblock *items, int N, int H, int G, int D, int ld, float scale) {
    extern __shared__ char smem_raw[];
    bf16 *qT = (bf16 *)smem_raw, *qsr = qT + ATT_BK * D, *doT = qsr + ATT_BK * D, *dor = doT + ATT_BK * D;
    float *ls = (float *)(dor + ATT_BK * D), *dl = ls + ATT_BK;
    float *kw_all = dl + ATT_BK, *vw_all = kw_all + ATT_WARPS * D, *ps = vw_all + ATT_WARPS * D;
    qblock it = items[blockIdx.x];
    int kh = blockIdx.y, grp = H / G;
    int t0 = seq[it.seq], L = seq[it.seq + 1] - t0;
    int j0 = it.q0, jend = min(j0 + ATT_BQ, L);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *kw = kw_all + warp * D, *vw = vw_all + warp * D, *pw = ps + warp * 64;
    const int KPW = ATT_BQ / ATT_WARPS;
    float dk[KPW][NPER], dv[KPW][NPER];
    #pragma unroll
    for (int a = 0; a < KPW; a++)
        #pragma unroll
        for (int t = 0; t < NPER; t++) { dk[a][t] = 0.0f; dv[a][t] = 0.0f; }
    for (int h = kh * grp; h < (kh + 1) * grp; h++) {
        for (int i0 = j0; i0 < L; i0 += ATT_BK) {
            int in = min(ATT_BK, L - i0);
            __syncthreads();
            stage(qsr, qT, qkv + (size_t)(t0 + i0) * ld + h * D, ld, in, D);
            stage(dor, doT, dout + (size_t)(t0 + i0) * H * D + h * D, (size_t)H * D, in, D);
            for (int i = threadIdx.x; i < in; i += blockDim.x) {
                ls[i] = lse[(size_t)h * N + t0 + i0 + i];
                dl[i] = delta[(size_t)h * N + t0 + i0 + i];
            }
            __syncthreads();
            #pragma unroll
            for (int a = 0; a < KPW; a++) {
                int j = j0 + warp + a * ATT_WARPS;
                if (j >= jend) continue;
                for (int e = lane; e < D; e += 32) {
                    kw[e] = bf(qkv[(size_t)(t0 + j) * ld + H * D + kh * D + e]) * scale;
                    vw[e] = bf(qkv[(size_t)(t0 + j) * ld + (H + G) * D + kh * D + e]);
                }
                __syncwarp();
                int ib = max(0, j - i0);   // queries i >= j only
                for (int c0 = ib; c0 < in; c0 += 32) {
                    int i = c0 + lane;
                    float p = 0.0f, ds = 0.0f;
                    if (i < in) {
                        float s = 0.0f, dp = 0.0f;
                        for (int e = 0; e < D; e++) {
                            s += kw[e] * bf(qT[e * ATT_BK + i]);
                            dp += vw[e] * bf(doT[e * ATT_BK + i]);
                        }
                        p = __expf(s - ls[i]);
                        ds = p * (dp - dl[i]) * scale;
                    }
                    pw[lane] = ds;
                    pw[32 + lane] = p;
                    __syncwarp();
                    int cnt = min(32, in - c0);
                    #pragma unroll
                    for (int t = 0; t < NPER; t++) {
                        int e = lane + 32 * t;
                        if (e < D) {
                            float ak = dk[a][t], av = dv[a][t];
                            for (int ii = 0; ii < cnt; ii++) {
                                ak += pw[ii] * bf(qsr[(c0 + ii) * D + e]);
                                av += pw[32 + ii] * bf(dor[(c0 + ii) * D + e]);
                            }
                            dk[a][t] = ak; dv[a][t] = av;
                        }
                    }
                    __syncwarp();
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

extern "C" void k_attention_delta(float *delta, const bf16_t *dout, const bf16_t *out, size_t N, size_t H, size_t D,
                                  cudaStream_t s) {
    att_delta_kernel<<<(unsigned)N, 128, 0, s>>>(delta, (const bf16 *)dout, (const bf16 *)out, (int)N, (int)H, (int)D);
    LAUNCH_CHECK();
}

static size_t fwd_smem(size_t D) { return 2 * ATT_BK * D * sizeof(bf16) + ATT_WARPS * (D + 32) * sizeof(float); }
static size_t dq_smem(size_t D) { return 3 * ATT_BK * D * sizeof(bf16) + ATT_WARPS * (2 * D + 32) * sizeof(float); }
static size_t dkv_smem(size_t D) {
    return 4 * ATT_BK * D * sizeof(bf16) + 2 * ATT_BK * sizeof(float) + ATT_WARPS * (2 * D + 64) * sizeof(float);
}

template <int NPER>
static void fwd_launch(bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, cudaStream_t s) {
    dim3 grid((unsigned)a->n_qblocks, (unsigned)a->H);
    size_t sm = fwd_smem(a->D);
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
    k_attention_delta(delta, dout, out, a->N, a->H, a->D, s);
    size_t sm = dq_smem(a->D);
    CUDA_CHECK(cudaFuncSetAttribute(att_dq_kernel<NPER>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    att_dq_kernel<NPER><<<dim3((unsigned)a->n_qblocks, (unsigned)a->H), 32 * ATT_WARPS, sm, s>>>(
        (bf16 *)dqkv, (const bf16 *)dout, lse, delta, (const bf16 *)qkv, a->seq, (const qblock *)a->qblocks,
        (int)a->N, (int)a->H, (int)a->G, (int)a->D, (int)a->ld, scale);
    LAUNCH_CHECK();
    size_t sm2 = dkv_smem(a->D);
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

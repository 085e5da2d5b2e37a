// kernels/attention_gemm.cu: attention for short sequences through batched
// tensor-core GEMMs. Each sequence of the micro-batch is copied into a
// padded (Lp, D) tile per head (kv heads repeated for their query group), so
// that scores, probabilities and every gradient are strided batched products
// over n_seq x H tiles; small kernels do the masked softmax and its backward
// in fp32. Probabilities are recomputed in the backward pass from the saved
// log-sum-exp, as in the streaming kernels of attention.cu, which remain the
// path for long sequences (the score tiles grow as Lp^2).
#include "common.cuh"
#include "gemm.h"
#include "kernels.h"
#include "../lib/mem_plan.h"

struct att_ws {
    bf16 *q, *k, *v, *x, *dq, *dk, *dv;   // (S, H, Lp, D) each; x = output or its gradient
    float *sc;                             // (S, H, Lp, Lp) scores, then dP
    bf16 *p, *ds;                          // (S, H, Lp, Lp)
};

static att_ws carve(void *base, size_t S, size_t H, size_t Lp, size_t D) {
    size_t tile = S * H * Lp * D, sq = S * H * Lp * Lp;
    char *b = (char *)base;
    att_ws w;
    bf16 **t[7] = {&w.q, &w.k, &w.v, &w.x, &w.dq, &w.dk, &w.dv};
    for (int i = 0; i < 7; i++) { *t[i] = (bf16 *)b; b += (tile * 2 + 255) & ~(size_t)255; }
    w.sc = (float *)b; b += (sq * 4 + 255) & ~(size_t)255;
    w.p = (bf16 *)b; b += (sq * 2 + 255) & ~(size_t)255;
    w.ds = (bf16 *)b;
    return w;
}

// The layout carve() makes; lib/mem_plan.c holds the one formula.
extern "C" size_t att_gemm_ws_bytes(size_t S, size_t H, size_t Lp, size_t D) { return mem_attention_tiles(S, H, Lp, D); }

// Copy rows of (N, ld) heads into padded tiles: tile (s, h) row i = src[t0 + i, col0 + hh * D ...],
// hh = h / rep (rep > 1 repeats a kv head for its query group); zero past the sequence.
__global__ void pack_kernel(bf16 *dst, const bf16 *src, size_t ld, size_t col0, const int32_t *seq, int H, int rep,
                            int Lp, int D) {
    size_t r = blockIdx.x;   // (s * H + h) * Lp + i
    int i = (int)(r % Lp), h = (int)((r / Lp) % H), s = (int)(r / ((size_t)Lp * H));
    int t0 = seq[s], L = seq[s + 1] - t0;
    bf16 *d = dst + r * D;
    const bf16 *x = src + (size_t)(t0 + i) * ld + col0 + (size_t)(h / rep) * D;
    for (int e = threadIdx.x; e < D; e += blockDim.x) d[e] = i < L ? x[e] : tobf(0.0f);
}

static void pack(bf16 *dst, const bf16 *src, size_t ld, size_t col0, const att_shape *a, int rep, size_t Lp,
                 cudaStream_t s) {
    pack_kernel<<<(unsigned)(a->n_seq * a->H * Lp), 64, 0, s>>>(dst, src, ld, col0, a->seq, (int)a->H, rep, (int)Lp,
                                                                (int)a->D);
    LAUNCH_CHECK();
}

// Masked softmax of one score row in fp32: P (bf16) and, in the forward pass, the log-sum-exp.
// With use_lse the row's lse is given (backward: recompute P exactly as the forward made it).
__global__ void softmax_kernel(bf16 *p, float *lse, const float *sc, const int32_t *seq, int N, int H, int Lp,
                               float scale, int use_lse) {
    __shared__ float sh[32];
    size_t r = blockIdx.x;
    int i = (int)(r % Lp), h = (int)((r / Lp) % H), s = (int)(r / ((size_t)Lp * H));
    int t0 = seq[s], L = seq[s + 1] - t0;
    const float *x = sc + r * Lp;
    bf16 *pr = p + r * Lp;
    int n = i < L ? i + 1 : 0;   // keys 0..i of a real query row
    float l;
    if (use_lse) {
        l = n ? lse[(size_t)h * N + t0 + i] : 0.0f;
    } else {
        float m = -INFINITY;
        for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, x[j] * scale);
        m = block_max(m, sh);
        float sum = 0.0f;
        for (int j = threadIdx.x; j < n; j += blockDim.x) sum += __expf(x[j] * scale - m);
        sum = block_sum(sum, sh);
        l = m + logf(sum);
        if (threadIdx.x == 0 && n) lse[(size_t)h * N + t0 + i] = l;
    }
    for (int j = threadIdx.x; j < Lp; j += blockDim.x) pr[j] = tobf(j < n ? __expf(x[j] * scale - l) : 0.0f);
}

// dS = P (dP - delta_i) * scale, zero outside the mask.
__global__ void dsoftmax_kernel(bf16 *ds, const bf16 *p, const float *dp, const float *delta, const int32_t *seq, int N,
                                int H, int Lp, float scale) {
    size_t r = blockIdx.x;
    int i = (int)(r % Lp), h = (int)((r / Lp) % H), s = (int)(r / ((size_t)Lp * H));
    int t0 = seq[s], L = seq[s + 1] - t0;
    int n = i < L ? i + 1 : 0;
    float di = n ? delta[(size_t)h * N + t0 + i] : 0.0f;
    for (int j = threadIdx.x; j < Lp; j += blockDim.x)
        ds[r * Lp + j] = tobf(j < n ? bf(p[r * Lp + j]) * (dp[r * Lp + j] - di) * scale : 0.0f);
}

// out (N, H*D) rows from tiles (s, h); with ld_out the destination row stride
// and col0 its first column; rep > 1 sums the rep query heads of a kv group.
__global__ void unpack_kernel(bf16 *out, size_t ld_out, size_t col0, const bf16 *tiles, const int32_t *seq,
                              const int32_t *tok_seq, int Hout, int rep, int Lp, int D) {
    int tok = blockIdx.x;
    int s = tok_seq[tok], t0 = seq[s], i = tok - t0;
    int H = Hout * rep;
    for (int x = threadIdx.x; x < Hout * D; x += blockDim.x) {
        int hh = x / D, e = x % D;
        float acc = 0.0f;
        for (int g = 0; g < rep; g++) acc += bf(tiles[(((size_t)s * H + hh * rep + g) * Lp + i) * D + e]);
        out[(size_t)tok * ld_out + col0 + x] = tobf(acc);
    }
}

// The sequence of every token (the inverse of seq), for the unpack kernels.
__global__ void tok_seq_kernel(int32_t *tok_seq, const int32_t *seq, int n_seq) {
    int s = blockIdx.x;
    for (int t = seq[s] + threadIdx.x; t < seq[s + 1]; t += blockDim.x) tok_seq[t] = s;
}

extern "C" void att_gemm_fwd(gemm_ctx *g, bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, size_t Lp,
                             void *wsp, int32_t *tok_seq, cudaStream_t s) {
    size_t S = a->n_seq, H = a->H, G = a->G, D = a->D, B = S * H;
    if (!S) return;
    att_ws w = carve(wsp, S, H, Lp, D);
    int rep = (int)(H / G);
    tok_seq_kernel<<<(unsigned)S, 128, 0, s>>>(tok_seq, a->seq, (int)S);
    LAUNCH_CHECK();
    pack(w.q, (const bf16 *)qkv, a->ld, 0, a, 1, Lp, s);
    pack(w.k, (const bf16 *)qkv, a->ld, H * D, a, rep, Lp, s);
    pack(w.v, (const bf16 *)qkv, a->ld, (H + G) * D, a, rep, Lp, s);
    // scores (Lp, Lp) = Q K^T per tile, fp32
    gemm_batched(g, 0, 1, Lp, Lp, D, 1.0f, (uint16_t *)w.q, D, Lp * D, (uint16_t *)w.k, D, Lp * D, 0.0f, w.sc, 1, Lp,
                 Lp * Lp, B);
    float scale = (float)(1.0 / sqrt((double)D));
    softmax_kernel<<<(unsigned)(B * Lp), 128, 0, s>>>(w.p, lse, w.sc, a->seq, (int)a->N, (int)H, (int)Lp, scale, 0);
    LAUNCH_CHECK();
    // O (Lp, D) = P V
    gemm_batched(g, 0, 0, Lp, D, Lp, 1.0f, (uint16_t *)w.p, Lp, Lp * Lp, (uint16_t *)w.v, D, Lp * D, 0.0f, w.x, 0, D,
                 Lp * D, B);
    unpack_kernel<<<(unsigned)a->N, 256, 0, s>>>((bf16 *)out, H * D, 0, w.x, a->seq, tok_seq, (int)H, 1, (int)Lp,
                                                 (int)D);
    LAUNCH_CHECK();
}

extern "C" void att_gemm_bwd(gemm_ctx *g, bf16_t *dqkv, float *delta, const bf16_t *dout, const bf16_t *out,
                             const float *lse, const bf16_t *qkv, const att_shape *a, size_t Lp, void *wsp,
                             int32_t *tok_seq, cudaStream_t s) {
    size_t S = a->n_seq, H = a->H, G = a->G, D = a->D, B = S * H;
    if (!S) return;
    att_ws w = carve(wsp, S, H, Lp, D);
    int rep = (int)(H / G);
    float scale = (float)(1.0 / sqrt((double)D));
    tok_seq_kernel<<<(unsigned)S, 128, 0, s>>>(tok_seq, a->seq, (int)S);
    LAUNCH_CHECK();
    k_attention_delta(delta, dout, out, a->N, H, D, s);
    pack(w.q, (const bf16 *)qkv, a->ld, 0, a, 1, Lp, s);
    pack(w.k, (const bf16 *)qkv, a->ld, H * D, a, rep, Lp, s);
    pack(w.v, (const bf16 *)qkv, a->ld, (H + G) * D, a, rep, Lp, s);
    pack(w.x, (const bf16 *)dout, H * D, 0, a, 1, Lp, s);
    gemm_batched(g, 0, 1, Lp, Lp, D, 1.0f, (uint16_t *)w.q, D, Lp * D, (uint16_t *)w.k, D, Lp * D, 0.0f, w.sc, 1, Lp,
                 Lp * Lp, B);
    softmax_kernel<<<(unsigned)(B * Lp), 128, 0, s>>>(w.p, (float *)lse, w.sc, a->seq, (int)a->N, (int)H, (int)Lp,
                                                      scale, 1);
    LAUNCH_CHECK();
    // dV (Lp, D) = P^T dO
    gemm_batched(g, 1, 0, Lp, D, Lp, 1.0f, (uint16_t *)w.p, Lp, Lp * Lp, (uint16_t *)w.x, D, Lp * D, 0.0f, w.dv, 0, D,
                 Lp * D, B);
    // dP (Lp, Lp) = dO V^T, into the score buffer
    gemm_batched(g, 0, 1, Lp, Lp, D, 1.0f, (uint16_t *)w.x, D, Lp * D, (uint16_t *)w.v, D, Lp * D, 0.0f, w.sc, 1, Lp,
                 Lp * Lp, B);
    dsoftmax_kernel<<<(unsigned)(B * Lp), 128, 0, s>>>(w.ds, w.p, w.sc, delta, a->seq, (int)a->N, (int)H, (int)Lp, scale);
    LAUNCH_CHECK();
    // dQ = dS K ; dK = dS^T Q
    gemm_batched(g, 0, 0, Lp, D, Lp, 1.0f, (uint16_t *)w.ds, Lp, Lp * Lp, (uint16_t *)w.k, D, Lp * D, 0.0f, w.dq, 0, D,
                 Lp * D, B);
    gemm_batched(g, 1, 0, Lp, D, Lp, 1.0f, (uint16_t *)w.ds, Lp, Lp * Lp, (uint16_t *)w.q, D, Lp * D, 0.0f, w.dk, 0, D,
                 Lp * D, B);
    unpack_kernel<<<(unsigned)a->N, 256, 0, s>>>((bf16 *)dqkv, a->ld, 0, w.dq, a->seq, tok_seq, (int)H, 1, (int)Lp,
                                                 (int)D);
    LAUNCH_CHECK();
    unpack_kernel<<<(unsigned)a->N, 256, 0, s>>>((bf16 *)dqkv, a->ld, H * D, w.dk, a->seq, tok_seq, (int)G, rep,
                                                 (int)Lp, (int)D);
    LAUNCH_CHECK();
    unpack_kernel<<<(unsigned)a->N, 256, 0, s>>>((bf16 *)dqkv, a->ld, (H + G) * D, w.dv, a->seq, tok_seq, (int)G, rep,
                                                 (int)Lp, (int)D);
    LAUNCH_CHECK();
}

// lib/cpu_model.c: Qwen2 + LoRA forward and backward in fp32, plain
// loops and OpenMP (GEMMs through lib/gemm). The readable reference that the
// CUDA path must match; every formula follows transformers' eager Qwen2 and
// PEFT's LoRA layer (../shared/docs/qwen_lora_spec.md §1-3).
#include "cpu_model.h"
#include "arena.h"
#include "check.h"
#include "gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Threads pay only above this much work; below it the fork/join (and the
// OpenMP pool spinning against OpenBLAS's) costs more than the loop.
#define PAR(work) ((size_t)(work) >= ((size_t)1 << 15))

// Notation: N tokens in the micro-batch, C hidden, F intermediate, H query
// heads, G kv heads, D head dim, qd = H*D, kvd = G*D, r LoRA rank, V vocab.

// ---- activations kept for the backward pass ------------------------------
typedef struct {
    float *x_in;                 // (N, C) layer input (residual stream)
    float *ln1; float *rstd1;    // (N, C), (N)
    float *q, *k, *v;            // (N, qd) (N, kvd) (N, kvd); q, k after RoPE
    float *att;                  // probabilities: per sequence (H, L, L)
    float *att_out;              // (N, qd) input of o_proj
    float *x_mid;                // (N, C) residual after attention
    float *ln2; float *rstd2;    // (N, C), (N)
    float *g, *u, *act;          // (N, F) gate, up, silu(gate) * up
    float *t[LORA_NMOD];         // (N, r) LoRA intermediates dropout(x) A^T
} layer_acts;

static arena acts_arena;         // one arena for every activation and scratch buffer

static size_t att_floats(const micro_batch *mb, size_t heads) {
    size_t n = 0;
    for (size_t s = 0; s < mb->n_seq; s++) {
        size_t L = mb->seq_start[s + 1] - mb->seq_start[s];
        n += heads * L * L;
    }
    return n;
}

size_t cpu_activation_bytes(const model_dims *d, const lora_layout *l, size_t N, size_t max_len) {
    // Mirrors the allocations of run() below, one arena_round per carve-out.
    size_t C = d->hidden, F = d->inter, qd = d->heads * d->head_dim, kvd = d->kv_heads * d->head_dim;
    size_t att = d->heads * max_len * N;   // bound: sum of L^2 <= max_len * N
    size_t nC = arena_round(N * C * 4), nF = arena_round(N * F * 4), n1 = arena_round(N * 4);
    size_t nr = arena_round(N * l->r * 4), nmods = 0;
    for (int m = 0; m < LORA_NMOD; m++) nmods += l->on[m] != 0;
    size_t per_layer = 4 * nC + 2 * n1 + 2 * arena_round(N * qd * 4) + 2 * arena_round(N * kvd * 4) +
                       arena_round(att * 4) + 3 * nF + nmods * nr;
    size_t fixed = arena_round(N * (C > F ? C : F) * 4) + nC    // dropout scratch, embeddings
                 + nC + n1 + 2 * nC                               // final norm, dres, dln
                 + 2 * arena_round(N * qd * 4) + 2 * arena_round(N * kvd * 4) + 3 * nF + nr
                 + arena_round(N * sizeof(size_t)) + arena_round(64 * C * 4) + arena_round(64 * d->vocab * 4);
    return d->layers * per_layer + fixed;
}

void cpu_model_release(void) { arena_free(&acts_arena); }

void cpu_model_init_rope(cpu_model *m) {
    size_t half = m->d.head_dim / 2;
    m->inv_freq = xmalloc(half * sizeof(float));
    // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
    for (size_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)m->d.head_dim;
        m->inv_freq[i] = 1.0f / powf((float)m->d.rope_theta, e);
    }
}

size_t micro_batch_targets(const micro_batch *mb) {
    size_t n = 0;
    for (size_t s = 0; s < mb->n_seq; s++)
        for (size_t t = mb->seq_start[s]; t + 1 < mb->seq_start[s + 1]; t++)
            n += mb->labels[t + 1] != -100;
    return n;
}

// ---- small kernels ---------------------------------------------------------
// y = w * (x * rsqrt(mean(x^2) + eps)), rows of C.
static void rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, size_t N, size_t C, float eps) {
    #pragma omp parallel for schedule(static) if(PAR(N * C))
    for (size_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float ss = 0.0f;
        for (size_t j = 0; j < C; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[i] = r;
        for (size_t j = 0; j < C; j++) y[i * C + j] = w[j] * (xi[j] * r);
    }
}

// dx += d/dx of rmsnorm given dy; x is the norm's input.
static void rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *rstd, const float *w,
                        size_t N, size_t C) {
    #pragma omp parallel for schedule(static) if(PAR(N * C))
    for (size_t i = 0; i < N; i++) {
        const float *xi = x + i * C, *dyi = dy + i * C;
        float r = rstd[i], dot = 0.0f;
        for (size_t j = 0; j < C; j++) dot += dyi[j] * w[j] * xi[j] * r;
        dot /= (float)C;
        for (size_t j = 0; j < C; j++) {
            float n = xi[j] * r;
            dx[i * C + j] += r * (dyi[j] * w[j] - n * dot);
        }
    }
}

// Rotate each head of x (N, heads*D) in place, half-split pairs (i, i + D/2).
// inverse = 1 applies the transpose (the backward of the rotation).
static void rope_apply(float *x, const micro_batch *mb, size_t heads, size_t D, const float *inv_freq, int inverse) {
    size_t half = D / 2;
    #pragma omp parallel for schedule(static) if(PAR(mb->n_tok * heads * D))
    for (size_t s = 0; s < mb->n_seq; s++) {
        for (size_t t = mb->seq_start[s]; t < mb->seq_start[s + 1]; t++) {
            float pos = (float)(t - mb->seq_start[s]);
            for (size_t i = 0; i < half; i++) {
                float f = pos * inv_freq[i];
                float c = cosf(f), sn = inverse ? -sinf(f) : sinf(f);
                for (size_t h = 0; h < heads; h++) {
                    float *xh = x + t * heads * D + h * D;
                    float a = xh[i], b = xh[i + half];
                    xh[i] = a * c - b * sn;
                    xh[i + half] = b * c + a * sn;
                }
            }
        }
    }
}

// Counter-based dropout mask: the same (key, layer, module, index) always
// gives the same decision, so the backward pass and a resumed run need no
// stored masks, and the CUDA kernels draw identical masks. The key of a
// (layer, module) is mixed once in 64 bits; each element then costs one
// 32-bit finaliser (murmur3's), cheap on a GPU where 64-bit multiplies are not.
static inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline float mask_u(uint32_t k, uint32_t i) {
    uint32_t h = (i * 0x9e3779b1u) ^ k;
    h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}
static void dropout_apply(float *dst, const float *src, size_t n, dropout_cfg drop, size_t layer, int module) {
    uint64_t k64 = mix64(drop.key ^ mix64(((uint64_t)layer << 8) | (uint64_t)module));
    uint32_t k = (uint32_t)(k64 ^ (k64 >> 32));
    float scale = 1.0f / (1.0f - drop.p);
    #pragma omp parallel for schedule(static) if(PAR(n))
    for (size_t i = 0; i < n; i++) dst[i] = mask_u(k, (uint32_t)i) < drop.p ? 0.0f : src[i] * scale;
}

// The LoRA view of one adapted module of one layer (NULLs when not adapted).
typedef struct { const float *a, *b; float *ga, *gb; } lora_mod;

static lora_mod lora_get(const lora_layout *l, const float *params, float *grads, size_t layer, int m) {
    lora_mod r = {0};
    if (!l->on[m]) return r;
    size_t k = layer * LORA_NMOD + m;
    r.a = params + l->off_a[k];
    r.b = params + l->off_b[k];
    if (grads) { r.ga = grads + l->off_a[k]; r.gb = grads + l->off_b[k]; }
    return r;
}

// y (N, O) = x W^T + bias + s * (dropout(x) A^T) B^T; t (N, r) keeps dropout(x) A^T.
static void linear_fwd(float *y, float *t, const float *x, const float *w, const float *bias, size_t N, size_t O,
                       size_t I, lora_mod lm, const lora_layout *l, dropout_cfg drop, size_t layer, int module,
                       float *scratch) {
    gemm_nt(y, x, w, N, O, I, 0.0f);
    if (bias) {
        #pragma omp parallel for schedule(static) if(PAR(N * O))
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < O; j++) y[i * O + j] += bias[j];
    }
    if (!lm.a) return;
    const float *xd = x;
    if (drop.p > 0.0f) { dropout_apply(scratch, x, N * I, drop, layer, module); xd = scratch; }
    gemm_nt(t, xd, lm.a, N, l->r, I, 0.0f);
    sgemm(0, 1, N, O, l->r, l->scaling, t, l->r, lm.b, l->r, 1.0f, y, O);
}

// Backward of linear_fwd: dx (N, I) (+)= dy W [+ s dy B A]; LoRA grads accumulate.
static void linear_bwd(float *dx, float dx_beta, const float *dy, const float *x, const float *w, const float *t,
                       size_t N, size_t O, size_t I, lora_mod lm, const lora_layout *l, dropout_cfg drop,
                       size_t layer, int module, float *scratch, float *dt) {
    gemm_nn(dx, dy, w, N, O, I, dx_beta);
    if (!lm.a) return;
    size_t r = l->r;
    float s = l->scaling;
    gemm_tn(lm.gb, dy, t, N, O, r, s, 1.0f);            // dB += s dy^T t      (O, r)
    sgemm(0, 0, N, r, O, s, dy, O, lm.b, r, 0.0f, dt, r); // dt = s dy B          (N, r)
    const float *xd = x;
    if (drop.p > 0.0f) { dropout_apply(scratch, x, N * I, drop, layer, module); xd = scratch; }
    gemm_tn(lm.ga, dt, xd, N, r, I, 1.0f, 1.0f);        // dA += dt^T dropout(x) (r, I)
    if (drop.p > 0.0f) {
        // d dropout(x)/dx is the same mask and scale: push dt A through it.
        gemm_nn(scratch, dt, lm.a, N, r, I, 0.0f);
        dropout_apply(scratch, scratch, N * I, drop, layer, module);
        #pragma omp parallel for schedule(static) if(PAR(N * I))
        for (size_t i = 0; i < N * I; i++) dx[i] += scratch[i];
    } else {
        gemm_nn(dx, dt, lm.a, N, r, I, 1.0f);            // dx += dt A
    }
}

// Causal attention inside each sequence. q (N, H*D), k/v (N, G*D); query head
// h reads kv head h / (H/G). P kept per sequence as (H, L, L).
static void attention_fwd(float *out, float *P, const float *q, const float *k, const float *v,
                          const micro_batch *mb, size_t H, size_t G, size_t D) {
    size_t qd = H * D, kvd = G * D, grp = H / G;
    float scale = (float)(1.0 / sqrt((double)D));
    size_t *att_off = xmalloc((mb->n_seq + 1) * sizeof(size_t));
    att_off[0] = 0;
    for (size_t s = 0; s < mb->n_seq; s++) {
        size_t L = mb->seq_start[s + 1] - mb->seq_start[s];
        att_off[s + 1] = att_off[s] + H * L * L;
    }
    #pragma omp parallel for collapse(2) schedule(dynamic) if(PAR(mb->n_tok * H * D))
    for (size_t s = 0; s < mb->n_seq; s++) {
        for (size_t h = 0; h < H; h++) {
            size_t t0 = mb->seq_start[s], L = mb->seq_start[s + 1] - t0, kh = h / grp;
            float *Ph = P + att_off[s] + h * L * L;
            for (size_t i = 0; i < L; i++) {
                const float *qi = q + (t0 + i) * qd + h * D;
                float *row = Ph + i * L, mx = -INFINITY;
                for (size_t j = 0; j <= i; j++) {
                    const float *kj = k + (t0 + j) * kvd + kh * D;
                    float dot = 0.0f;
                    for (size_t e = 0; e < D; e++) dot += qi[e] * kj[e];
                    row[j] = dot * scale;
                    if (row[j] > mx) mx = row[j];
                }
                float sum = 0.0f;
                for (size_t j = 0; j <= i; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
                for (size_t j = 0; j <= i; j++) row[j] /= sum;
                for (size_t j = i + 1; j < L; j++) row[j] = 0.0f;
                float *oi = out + (t0 + i) * qd + h * D;
                for (size_t e = 0; e < D; e++) oi[e] = 0.0f;
                for (size_t j = 0; j <= i; j++) {
                    const float *vj = v + (t0 + j) * kvd + kh * D;
                    for (size_t e = 0; e < D; e++) oi[e] += row[j] * vj[e];
                }
            }
        }
    }
    free(att_off);
}

// Backward of attention_fwd given dout; writes dq, dk, dv (pre-zeroed by caller
// not needed: every element is written). Parallel over (sequence, kv head) so
// that the query heads of one group add into dk, dv without races.
static void attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *P, const float *q,
                          const float *k, const float *v, const micro_batch *mb, size_t H, size_t G, size_t D) {
    size_t qd = H * D, kvd = G * D, grp = H / G;
    float scale = (float)(1.0 / sqrt((double)D));
    size_t *att_off = xmalloc((mb->n_seq + 1) * sizeof(size_t));
    size_t maxL = 0;
    att_off[0] = 0;
    for (size_t s = 0; s < mb->n_seq; s++) {
        size_t L = mb->seq_start[s + 1] - mb->seq_start[s];
        att_off[s + 1] = att_off[s] + H * L * L;
        if (L > maxL) maxL = L;
    }
    #pragma omp parallel if(PAR(mb->n_tok * H * D))
    {
        float *dS = xmalloc((maxL ? maxL : 1) * sizeof(float));
        #pragma omp for collapse(2) schedule(dynamic)
        for (size_t s = 0; s < mb->n_seq; s++) {
            for (size_t g = 0; g < G; g++) {
                size_t t0 = mb->seq_start[s], L = mb->seq_start[s + 1] - t0;
                for (size_t j = 0; j < L; j++) {
                    memset(dk + (t0 + j) * kvd + g * D, 0, D * sizeof(float));
                    memset(dv + (t0 + j) * kvd + g * D, 0, D * sizeof(float));
                }
                for (size_t h = g * grp; h < (g + 1) * grp; h++) {
                    const float *Ph = P + att_off[s] + h * L * L;
                    for (size_t i = 0; i < L; i++) {
                        const float *row = Ph + i * L, *doi = dout + (t0 + i) * qd + h * D;
                        const float *qi = q + (t0 + i) * qd + h * D;
                        // dP_ij = do_i . v_j ; dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij)
                        float dot = 0.0f;
                        for (size_t j = 0; j <= i; j++) {
                            const float *vj = v + (t0 + j) * kvd + g * D;
                            float dp = 0.0f;
                            for (size_t e = 0; e < D; e++) dp += doi[e] * vj[e];
                            dS[j] = dp;
                            dot += row[j] * dp;
                        }
                        float *dqi = dq + (t0 + i) * qd + h * D;
                        for (size_t e = 0; e < D; e++) dqi[e] = 0.0f;
                        for (size_t j = 0; j <= i; j++) {
                            float ds = row[j] * (dS[j] - dot) * scale;
                            const float *kj = k + (t0 + j) * kvd + g * D;
                            float *dkj = dk + (t0 + j) * kvd + g * D, *dvj = dv + (t0 + j) * kvd + g * D;
                            for (size_t e = 0; e < D; e++) {
                                dqi[e] += ds * kj[e];
                                dkj[e] += ds * qi[e];
                                dvj[e] += row[j] * doi[e];
                            }
                        }
                    }
                }
            }
        }
        free(dS);
    }
    free(att_off);
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- the loss: only target positions get logits, in chunks ----------------
// h (N, C) final hidden states; returns the summed loss; when dh is not NULL
// writes dh (N, C) = inv_n * d loss / d h (zero at non-target rows).
static double loss_fwd_bwd(const cpu_model *m, const float *h, const micro_batch *mb, float inv_n, float *dh) {
    size_t C = m->d.hidden, V = m->d.vocab, N = mb->n_tok;
    size_t *rows = arena_alloc(&acts_arena, N * sizeof(size_t));
    size_t n = 0;
    for (size_t s = 0; s < mb->n_seq; s++)
        for (size_t t = mb->seq_start[s]; t + 1 < mb->seq_start[s + 1]; t++)
            if (mb->labels[t + 1] != -100) rows[n++] = t;
    if (dh) memset(dh, 0, N * C * sizeof(float));
    const size_t CH = 64;
    float *hc = arena_floats(&acts_arena, CH * C), *logits = arena_floats(&acts_arena, CH * V);
    double total = 0.0;
    for (size_t c0 = 0; c0 < n; c0 += CH) {
        size_t cn = n - c0 < CH ? n - c0 : CH;
        for (size_t i = 0; i < cn; i++) memcpy(hc + i * C, h + rows[c0 + i] * C, C * sizeof(float));
        gemm_nt(logits, hc, m->lm_head, cn, V, C, 0.0f);
        double part = 0.0;
        #pragma omp parallel for schedule(static) reduction(+ : part) if(PAR(cn * V))
        for (size_t i = 0; i < cn; i++) {
            float *z = logits + i * V;
            int32_t y = mb->labels[rows[c0 + i] + 1];
            float mx = -INFINITY;
            for (size_t v = 0; v < V; v++) if (z[v] > mx) mx = z[v];
            float sum = 0.0f;
            for (size_t v = 0; v < V; v++) sum += expf(z[v] - mx);
            float lse = mx + logf(sum);
            part += (double)(lse - z[y]);
            if (dh) {
                // d loss / d z = softmax - onehot, scaled by the window normaliser.
                for (size_t v = 0; v < V; v++) z[v] = expf(z[v] - lse) * inv_n;
                z[y] -= inv_n;
            }
        }
        total += part;
        if (dh) {
            gemm_nn(hc, logits, m->lm_head, cn, V, C, 0.0f);   // (cn, C)
            for (size_t i = 0; i < cn; i++) memcpy(dh + rows[c0 + i] * C, hc + i * C, C * sizeof(float));
        }
    }
    return total;
}

// ---- whole model -----------------------------------------------------------
// Layers [l0, l1) of the model (a pipeline stage; the whole model when st is
// NULL). The first stage starts from the embedding, a later one from st->x_in;
// the last stage ends in the loss, an earlier one writes st->x_out (forward
// only) or, with grads, takes its output's gradient from st->dx_out. With
// grads the gradient of the stage input goes to st->dx_in when it is not NULL.
static double run(const cpu_model *m, const lora_layout *l, const float *params, float *grads,
                  const micro_batch *mb, float inv_n, dropout_cfg drop, const cpu_stage *st) {
    const model_dims *d = &m->d;
    size_t N = mb->n_tok, C = d->hidden, F = d->inter, H = d->heads, G = d->kv_heads, D = d->head_dim;
    size_t qd = H * D, kvd = G * D, r = l->r, Lyr = d->layers;
    size_t l0 = st && st->layer1 ? st->layer0 : 0, l1 = st && st->layer1 ? st->layer1 : Lyr;
    int first = l0 == 0, last = l1 == Lyr;
    float eps = (float)d->rms_eps;
    if (N == 0) return 0.0;
    size_t maxL = 0;
    for (size_t s = 0; s < mb->n_seq; s++) {
        size_t L = mb->seq_start[s + 1] - mb->seq_start[s];
        if (L > maxL) maxL = L;
    }
    size_t att_n = att_floats(mb, H);
    arena_reserve(&acts_arena, cpu_activation_bytes(d, l, N, maxL));
    arena_reset(&acts_arena);
    acts_arena.name = "activations";

    layer_acts *A = xcalloc(Lyr, sizeof *A);
    float *scratch = arena_floats(&acts_arena, N * (C > F ? C : F));   // dropout(x)
    float *x = arena_floats(&acts_arena, N * C);
    if (first) {
        for (size_t i = 0; i < N; i++) {
            CHECK(mb->ids[i] < d->vocab, "token id %u >= vocabulary %zu", mb->ids[i], d->vocab);
            memcpy(x + i * C, m->embed + (size_t)mb->ids[i] * C, C * sizeof(float));
        }
    } else {
        memcpy(x, st->x_in, N * C * sizeof(float));
    }
    for (size_t li = l0; li < l1; li++) {
        const cpu_layer *w = &m->layer[li];
        layer_acts *a = &A[li];
        a->x_in = x;
        a->ln1 = arena_floats(&acts_arena, N * C);
        a->rstd1 = arena_floats(&acts_arena, N);
        rmsnorm_fwd(a->ln1, a->rstd1, x, w->ln1, N, C, eps);
        a->q = arena_floats(&acts_arena, N * qd);
        a->k = arena_floats(&acts_arena, N * kvd);
        a->v = arena_floats(&acts_arena, N * kvd);
        for (int mm = 0; mm < LORA_NMOD; mm++) a->t[mm] = l->on[mm] ? arena_floats(&acts_arena, N * r) : NULL;
        linear_fwd(a->q, a->t[LORA_Q], a->ln1, w->wq, w->bq, N, qd, C, lora_get(l, params, NULL, li, LORA_Q), l, drop, li, LORA_Q, scratch);
        linear_fwd(a->k, a->t[LORA_K], a->ln1, w->wk, w->bk, N, kvd, C, lora_get(l, params, NULL, li, LORA_K), l, drop, li, LORA_K, scratch);
        linear_fwd(a->v, a->t[LORA_V], a->ln1, w->wv, w->bv, N, kvd, C, lora_get(l, params, NULL, li, LORA_V), l, drop, li, LORA_V, scratch);
        rope_apply(a->q, mb, H, D, m->inv_freq, 0);
        rope_apply(a->k, mb, G, D, m->inv_freq, 0);
        a->att = arena_floats(&acts_arena, att_n);
        a->att_out = arena_floats(&acts_arena, N * qd);
        attention_fwd(a->att_out, a->att, a->q, a->k, a->v, mb, H, G, D);
        a->x_mid = arena_floats(&acts_arena, N * C);
        linear_fwd(a->x_mid, a->t[LORA_O], a->att_out, w->wo, NULL, N, C, qd, lora_get(l, params, NULL, li, LORA_O), l, drop, li, LORA_O, scratch);
        for (size_t i = 0; i < N * C; i++) a->x_mid[i] += x[i];
        a->ln2 = arena_floats(&acts_arena, N * C);
        a->rstd2 = arena_floats(&acts_arena, N);
        rmsnorm_fwd(a->ln2, a->rstd2, a->x_mid, w->ln2, N, C, eps);
        a->g = arena_floats(&acts_arena, N * F);
        a->u = arena_floats(&acts_arena, N * F);
        a->act = arena_floats(&acts_arena, N * F);
        linear_fwd(a->g, a->t[LORA_GATE], a->ln2, w->wg, NULL, N, F, C, lora_get(l, params, NULL, li, LORA_GATE), l, drop, li, LORA_GATE, scratch);
        linear_fwd(a->u, a->t[LORA_UP], a->ln2, w->wu, NULL, N, F, C, lora_get(l, params, NULL, li, LORA_UP), l, drop, li, LORA_UP, scratch);
        #pragma omp parallel for schedule(static) if(PAR(N * F))
        for (size_t i = 0; i < N * F; i++) a->act[i] = a->g[i] * sigmoidf(a->g[i]) * a->u[i];
        float *x_out = arena_floats(&acts_arena, N * C);
        linear_fwd(x_out, a->t[LORA_DOWN], a->act, w->wd, NULL, N, C, F, lora_get(l, params, NULL, li, LORA_DOWN), l, drop, li, LORA_DOWN, scratch);
        for (size_t i = 0; i < N * C; i++) x_out[i] += a->x_mid[i];
        x = x_out;
    }
    float *dres = grads ? arena_floats(&acts_arena, N * C) : NULL;
    float *dln = grads ? arena_floats(&acts_arena, N * C) : NULL;
    double loss = 0.0;
    if (last) {
        float *lnf = arena_floats(&acts_arena, N * C), *rstdf = arena_floats(&acts_arena, N);
        rmsnorm_fwd(lnf, rstdf, x, m->norm_f, N, C, eps);
        loss = loss_fwd_bwd(m, lnf, mb, inv_n, dln);
        if (grads) {
            memset(dres, 0, N * C * sizeof(float));
            rmsnorm_bwd(dres, dln, x, rstdf, m->norm_f, N, C);
        }
    } else if (!grads) {
        memcpy(st->x_out, x, N * C * sizeof(float));
    } else {
        memcpy(dres, st->dx_out, N * C * sizeof(float));
    }
    if (!grads) { free(A); arena_reset(&acts_arena); return loss; }

    // ---- backward --------------------------------------------------------------
    float *dq = arena_floats(&acts_arena, N * qd), *datt = arena_floats(&acts_arena, N * qd);
    float *dk = arena_floats(&acts_arena, N * kvd), *dv = arena_floats(&acts_arena, N * kvd);
    float *dg = arena_floats(&acts_arena, N * F), *du = arena_floats(&acts_arena, N * F);
    float *dact = arena_floats(&acts_arena, N * F), *dt = arena_floats(&acts_arena, N * r);
    for (size_t li = l1; li-- > l0;) {
        const cpu_layer *w = &m->layer[li];
        layer_acts *a = &A[li];
        // MLP: x_out = x_mid + down(silu(g) * u)
        linear_bwd(dact, 0.0f, dres, a->act, w->wd, a->t[LORA_DOWN], N, C, F, lora_get(l, params, grads, li, LORA_DOWN), l, drop, li, LORA_DOWN, scratch, dt);
        #pragma omp parallel for schedule(static) if(PAR(N * F))
        for (size_t i = 0; i < N * F; i++) {
            float g = a->g[i], sg = sigmoidf(g);
            du[i] = dact[i] * g * sg;
            dg[i] = dact[i] * a->u[i] * sg * (1.0f + g * (1.0f - sg));
        }
        linear_bwd(dln, 0.0f, dg, a->ln2, w->wg, a->t[LORA_GATE], N, F, C, lora_get(l, params, grads, li, LORA_GATE), l, drop, li, LORA_GATE, scratch, dt);
        linear_bwd(dln, 1.0f, du, a->ln2, w->wu, a->t[LORA_UP], N, F, C, lora_get(l, params, grads, li, LORA_UP), l, drop, li, LORA_UP, scratch, dt);
        rmsnorm_bwd(dres, dln, a->x_mid, a->rstd2, w->ln2, N, C);     // dres = d x_mid
        // Attention: x_mid = x_in + o_proj(attn(q, k, v))
        linear_bwd(datt, 0.0f, dres, a->att_out, w->wo, a->t[LORA_O], N, C, qd, lora_get(l, params, grads, li, LORA_O), l, drop, li, LORA_O, scratch, dt);
        attention_bwd(dq, dk, dv, datt, a->att, a->q, a->k, a->v, mb, H, G, D);
        rope_apply(dq, mb, H, D, m->inv_freq, 1);
        rope_apply(dk, mb, G, D, m->inv_freq, 1);
        linear_bwd(dln, 0.0f, dq, a->ln1, w->wq, a->t[LORA_Q], N, qd, C, lora_get(l, params, grads, li, LORA_Q), l, drop, li, LORA_Q, scratch, dt);
        linear_bwd(dln, 1.0f, dk, a->ln1, w->wk, a->t[LORA_K], N, kvd, C, lora_get(l, params, grads, li, LORA_K), l, drop, li, LORA_K, scratch, dt);
        linear_bwd(dln, 1.0f, dv, a->ln1, w->wv, a->t[LORA_V], N, kvd, C, lora_get(l, params, grads, li, LORA_V), l, drop, li, LORA_V, scratch, dt);
        rmsnorm_bwd(dres, dln, a->x_in, a->rstd1, w->ln1, N, C);      // dres = d x_in
    }
    if (st && st->dx_in) memcpy(st->dx_in, dres, N * C * sizeof(float));
    free(A);
    arena_reset(&acts_arena);
    return loss;
}

double cpu_forward_backward(const cpu_model *m, const lora_layout *l, const float *params, float *grads,
                            const micro_batch *mb, float inv_n, dropout_cfg drop) {
    return run(m, l, params, grads, mb, inv_n, drop, NULL);
}

double cpu_forward_loss(const cpu_model *m, const lora_layout *l, const float *params, const micro_batch *mb) {
    dropout_cfg none = {0};
    return run(m, l, params, NULL, mb, 0.0f, none, NULL);
}

double cpu_stage_run(const cpu_model *m, const lora_layout *l, const float *params, float *grads,
                     const micro_batch *mb, float inv_n, dropout_cfg drop, const cpu_stage *st) {
    return run(m, l, params, grads, mb, inv_n, drop, st);
}

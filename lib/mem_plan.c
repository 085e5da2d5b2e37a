// lib/mem_plan.c: arena sizes of the CUDA backend (see tools/train/cuda_backend.cu,
// which carves exactly these buffers in this order).
#include "mem_plan.h"
#include "arena.h"

#include <string.h>

#define BF 2u
#define F4 4u

static size_t rup256(size_t b) { return (b + 255) & ~(size_t)255; }

size_t mem_attention_tiles(size_t S, size_t H, size_t Lp, size_t D) {
    size_t tile = S * H * Lp * D, sq = S * H * Lp * Lp;
    return 7 * rup256(tile * BF) + rup256(sq * F4) + 2 * rup256(sq * BF);
}

size_t mem_lora_da_floats(size_t N, size_t r, size_t I) {
    return ((N + MEM_DA_CHUNK - 1) / MEM_DA_CHUNK) * r * I;
}

static size_t max2(size_t a, size_t b) { return a > b ? a : b; }
static size_t min2(size_t a, size_t b) { return a < b ? a : b; }

void mem_plan_compute(mem_plan *m, const mem_plan_in *in) {
    const model_dims *d = in->d;
    size_t C = d->hidden, F = d->inter, V = d->vocab, L = d->layers, H = d->heads, D = d->head_dim;
    size_t qd = H * D, kvd = d->kv_heads * D, dqkv = qd + 2 * kvd, N = in->max_tokens ? in->max_tokens : 1;
    size_t r = in->r, nmods = 0;
    for (int k = 0; k < LORA_NMOD; k++) nmods += in->on[k] != 0;
    memset(m, 0, sizeof *m);
    // A stage's layers; the first stage looks tokens up, the last one holds the loss head.
    size_t l0 = in->layer1 ? in->layer0 : 0, l1 = in->layer1 ? in->layer1 : L, SL = l1 - l0;
    int first = l0 == 0, last = l1 == L;

    // Frozen weights, bf16: embedding (unless kept on the host), lm_head (untied), final norm, layers,
    // and the fp32 RoPE frequencies.
    // A last stage of a tied model keeps its own copy of the table as lm_head.
    int embed_host = in->recompute && !d->tied;
    size_t w = 0;
    if (first) {
        if (!embed_host) w += arena_round(V * C * BF);
        else m->embed_host = V * C * BF;
    }
    if (last && (!d->tied || !first)) w += arena_round(V * C * BF);
    if (last) w += arena_round(C * BF);
    // Layers: all of them, or with host offload two slots that the layers stream through.
    m->layer_bytes = arena_round(dqkv * C * BF) + arena_round(dqkv * BF) + arena_round(C * qd * BF) +
                     arena_round(2 * F * C * BF) + arena_round(C * F * BF) + 2 * arena_round(C * BF);
    w += (in->offload ? min2(2, SL) : SL) * m->layer_bytes;
    m->host_layers = in->offload ? SL * m->layer_bytes : 0;
    w += arena_round(D / 2 * F4);
    m->weights = w;

    // LoRA: params, grads and the AdamW moments (fp32), a bf16 copy, per-tensor offsets and norms.
    int on[LORA_NMOD];
    memcpy(on, in->on, sizeof on);
    lora_layout l;
    lora_layout_init(&l, d, r, 1.0, 0, on);
    size_t P = l.n_params, nt = l.n_tensors;
    lora_layout_free(&l);
    m->lora_params = P;
    m->lora = 4 * arena_round(P * F4) + arena_round(P * BF) + arena_round((nt + 1) * sizeof(size_t)) +
              arena_round((nt ? nt : 1) * F4);

    // Activations: every layer's input, then what the backward pass reads (one shared set with recompute).
    size_t sets = in->recompute ? 1 : SL;
    m->activations = arena_round((SL + 1) * N * C * BF) +
                     sets * (arena_round(N * C * BF) + arena_round(N * dqkv * BF) + arena_round(N * qd * BF) +
                             2 * arena_round(N * C * BF) + arena_round(N * 2 * F * BF) + arena_round(N * F * BF) +
                             2 * arena_round(N * F4) +
                             arena_round(H * N * F4) + nmods * arena_round(N * r * BF));

    // Workspace: norms, gradients of the residual stream, q/k/v and MLP, the logits chunk, index arrays.
    // Only the last stage computes the loss: other stages carve no logits chunk.
    m->logit_rows = last ? min2(N, in->recompute ? 256 : 2048) : 0;
    size_t maxIF = max2(max2(C, F), qd);
    size_t drop_n = in->dropout && !in->lora_fused ? N * maxIF : 1;
    // The fused dA / dB scratch holds partial sums for a whole group (q, k, v) at once.
    size_t da_n = in->lora_fused ? mem_lora_da_floats(N, r, MEM_LORA_GROUP * maxIF) : 1;
    m->workspace = arena_round(N * C * BF) + arena_round(N * F4) + 2 * arena_round(N * C * BF) +
                   arena_round(N * dqkv * BF) + arena_round(N * qd * BF) + arena_round(N * F * BF) +
                   arena_round(N * 2 * F * BF) + arena_round(drop_n * BF) + arena_round(m->logit_rows * C * BF) +
                   arena_round(m->logit_rows * V * BF) + arena_round(MEM_LORA_GROUP * N * r * BF) + arena_round(H * N * F4) +
                   arena_round(N * F4) + arena_round(F4) + 2 * arena_round(N * 4) + arena_round((N + 1) * 4) +
                   arena_round(2 * (2 * N + 64) * 4) + 2 * arena_round(N * 4) + arena_round(da_n * F4);

    m->logits = arena_round(m->logit_rows * C * BF) + arena_round(m->logit_rows * V * BF);

    // Attention tiles for the batched-GEMM path, within a budget (longer sequences stream instead).
    if (!in->attention_kernel) {
        size_t lp = (in->max_len + 7) / 8 * 8, half = max2(1, in->max_len / 2);
        size_t seqs = min2(max2(1, N / half), N);
        size_t want = mem_attention_tiles(seqs, H, lp, D);
        m->attention = min2(want, in->recompute ? MEM_ATT_BUDGET_LEAN : MEM_ATT_BUDGET_FAST);
        if (m->attention) m->attention += arena_round(N * 4);   // token -> sequence map
    }
    m->cublas = MEM_CUBLAS_WS;
    m->total = m->weights + m->lora + m->activations + m->workspace + m->attention + m->cublas;
}

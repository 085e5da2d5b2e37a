// tools/train/cuda_backend.cu: the bf16 CUDA backend. Orchestration only;
// the arithmetic lives in kernels/ (one concern per file) and cuBLASLt.
//
// Numerics follow transformers' bf16 autocast run (spec §1.8 mode C): bf16
// weights and activations, fp32 accumulation in every product, fp32
// statistics (RMSNorm, softmax, loss), fp32 LoRA master weights and
// gradients. Memory is four device arenas, sized at start-up and printed:
// frozen weights, LoRA state, saved activations, workspace.
#include "../../kernels/common.cuh"
#include "../../kernels/gemm.h"
#include "../../kernels/kernels.h"

extern "C" {
#include "dist.h"
#include "host_comm.h"
#include "train.h"
#include "arena.h"
#include "check.h"
#include "dtype.h"
#include "hf_model.h"
#include "mem_plan.h"
}

#include <dlfcn.h>
#include <unistd.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <vector>
#ifdef LORAPIPE_NCCL
#include <nccl.h>
#endif

// A device arena: one cudaMalloc, bump-allocated, never freed piecewise.
struct dev_arena {
    const char *name;
    char *base = nullptr;
    size_t cap = 0, used = 0;
    void init(const char *n, size_t bytes) {
        name = n;
        cap = arena_round(bytes);
        if (cap) {
            cudaError_t e = cudaMalloc(&base, cap);
            if (e != cudaSuccess) {
                char b[32];
                die("out of GPU memory: the %s arena needs %s (%s)", name, fmt_bytes((double)cap, b, sizeof b),
                    cudaGetErrorString(e));
            }
        }
    }
    template <typename T> T *take(size_t n) {
        size_t bytes = arena_round(n * sizeof(T));
        if (used + bytes > cap) die_at(__FILE__, __LINE__, "the %s arena is too small", name);
        T *p = (T *)(base + used);
        used += bytes;
        return p;
    }
    void release() { if (base) cudaFree(base); base = nullptr; }
};

typedef uint16_t bfh;   // bf16 on the device, seen from host code

struct layer_w {
    bfh *w_qkv, *b_qkv, *w_o, *w_gu, *w_d, *ln1, *ln2;   // (Dqkv, C) (Dqkv) (C, qd) (2F, C) (C, F) (C) (C)
};

// Where LoRA modules sit in a layer: the modules that read one input, and the
// column range (col, width out) of the product each adds to.
struct lora_site {
    int n;
    int mods[LORA_GMAX];
    size_t col[LORA_GMAX], out[LORA_GMAX];
};
enum { SITE_QKV, SITE_O, SITE_GU, SITE_DOWN, SITE_COUNT };

struct layer_acts {   // what the backward pass reads; with recompute only x_in is kept per layer
    bfh *x_in, *ln1, *qkv, *att, *x_mid, *ln2, *gu, *act;
    float *rstd1, *lse, *rstd2;
    bfh *t[LORA_NMOD];                // (N, r) LoRA intermediates
};

// LORAPIPE_PROFILE=1: events at phase boundaries; each interval is charged
// to the phase that opened it; a table of totals is printed at the end.
#define PROF_EVENTS 8192
#define PROF_NAMES 64
struct profiler {
    int on = 0, n = 0, n_names = 0;
    cudaEvent_t ev[PROF_EVENTS];
    int who[PROF_EVENTS];
    const char *names[PROF_NAMES];
    double ms[PROF_NAMES];
    size_t steps = 0;
};

struct nccl_api;
struct cuda_ctx {
    profiler prof;
    int rank, world;
    nccl_api *nccl;                   // data-parallel communicator (world > 1)
    // Pipeline stages: this rank's layers [l0, l1); its collectives and the
    // stages' messages go through host memory (host_comm), which also lets two
    // stages share one GPU. The gradient all-reduce stages through grads_host.
    size_t l0, l1;
    host_comm *hcomm;
    float *grads_host;
    int own_only;                     // one replica of stages: train_opts' own_lo / own_hi
    size_t own_lo, own_hi;
    double *red_dev;                  // scratch for scalar all-reduces
    model_dims d;
    const lora_layout *l;
    const optim_cfg *oc;
    int recompute;
    // Host offload: every layer's frozen weights in pinned host memory (one
    // block per layer, laid out as a device slot), streamed on copy_stream
    // into slot i % 2 while the other slot's layer computes.
    int offload;
    uint8_t *host_layers; size_t layer_bytes;   // this rank's layers [l0, l1), layer i at (i - l0) x layer_bytes
    uint8_t *slot_base[2]; long slot_layer[2];
    cudaStream_t copy_stream;
    cudaEvent_t slot_ready[2], slot_free[2];
    size_t max_tok, max_len, dqkv, qd, kvd;
    cudaStream_t stream;
    gemm_ctx *gemm;
    dev_arena weights, lora, acts, work;
    // weights
    bfh *embed, *lm_head, *norm_f;
    const st_tensor *embed_host;      // lean mode, untied: rows gathered on the host instead
    uint16_t *embed_stage;            // pinned (max_tok, C)
    std::vector<layer_w> lw;
    float *inv_freq;
    // LoRA: fp32 params | grads | m | v, and a bf16 copy of params for the products
    float *params, *grads, *mom1, *mom2;
    bfh *params_bf;
    size_t *tensor_off_dev, *tensor_off_host;
    float *sumsq;
    // activations
    std::vector<layer_acts> la;       // saved per layer (with recompute: one set reused)
    bfh *x_layers;                    // (L + 1, max_tok, C): every layer's input, and the last output
    bfh *lnf; float *rstdf;
    // workspace
    bfh *dres, *dln, *dqkv_buf, *datt, *dact, *dgu, *drop, *hc, *logits;
    bfh *dt;                          // (N, r)
    bfh *dq;                          // this layer's q/k/v gradient: dqkv_buf, or dgu with a shared prefix
    int lora_fused;                   // fused dropout + LoRA input kernels (lora.cu)
    // Shared prefixes (--share-prefix): the P rows every sequence of this
    // micro-batch starts with are computed once. N then counts the rows computed;
    // attention alone sees the batch as the data has it (as, every sequence
    // whole), reached through expand_idx and compress_idx.
    int share_ok;
    size_t P;
    int32_t *expand_idx;              // (max_tok) batch row -> computed row
    int32_t *compress_idx;            // (max_tok) computed row -> a batch row (a shared row: sequence 0's)
    int32_t *h_share;                 // pinned staging for both
    const int32_t *h_ids;             // the computed rows' ids (host), for the host embedding
    size_t rows_batch, rows_computed; // over the run, for the report
    lora_site site[SITE_COUNT];       // where the LoRA modules sit (filled at start-up)
    float *da_part;                   // their dA scratch
    float *delta, *row_loss, *loss_sum;
    int32_t *ids, *pos, *seq, *qblocks, *trow, *ttok;
    size_t logit_rows;
    // host staging
    int32_t *h_stage; size_t h_stage_n;
    // current micro-batch
    size_t N, n_seq, n_qb, n_t;
    att_shape as;
    // attention through batched GEMMs when the padded tiles fit this workspace
    void *att_ws; size_t att_ws_bytes; int32_t *tok_seq;
    mem_plan plan;                    // arena sizes (lib/mem_plan.c, shared with shard-plan)
    size_t att_lp;                    // padded length for this batch; 0: streaming kernels
    int att_force_kernel;
    int att_short, att_force_gemm;    // this batch through attention_short.cu; LORAPIPE_ATTENTION=gemm forbids it
};

static void mark(cuda_ctx *c, const char *name) {
    profiler *p = &c->prof;
    if (!p->on || p->n == PROF_EVENTS) return;
    int k = 0;
    while (k < p->n_names && p->names[k] != name) k++;
    if (k == p->n_names) { if (k == PROF_NAMES) return; p->names[p->n_names++] = name; }
    p->who[p->n] = k;
    CUDA_CHECK(cudaEventRecord(p->ev[p->n++], c->stream));
}

// After a synchronisation: charge the intervals and start over.
static void prof_collect(cuda_ctx *c) {
    profiler *p = &c->prof;
    if (!p->on) return;
    for (int i = 0; i + 1 < p->n; i++) {
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]));
        p->ms[p->who[i]] += ms;
    }
    p->n = 0;
}

static void prof_print(cuda_ctx *c) {
    profiler *p = &c->prof;
    if (!p->on) return;
    double total = 0;
    for (int k = 0; k < p->n_names; k++) total += p->ms[k];
    fprintf(stderr, "train: profile over %zu micro-batches (GPU time between phase marks):\n", p->steps);
    for (int k = 0; k < p->n_names; k++)
        fprintf(stderr, "  %-22s %9.2f ms  %5.1f%%  %8.3f ms per micro-batch\n", p->names[k], p->ms[k],
                100 * p->ms[k] / (total > 0 ? total : 1), p->ms[k] / (p->steps ? p->steps : 1));
    fprintf(stderr, "  %-22s %9.2f ms\n", "total", total);
}

// ---- dropout, identical masks to the CPU reference ---------------------------
static void dropout(cuda_ctx *c, bfh *dst, const bfh *src, size_t n, dropout_cfg drop, size_t layer, int module) {
    k_dropout(dst, src, n, lora_mask_key(drop.key, layer, module), drop.p, c->stream);
}

// ---- LoRA pieces -------------------------------------------------------------
static const bfh *lora_a(cuda_ctx *c, size_t layer, int m) { return c->params_bf + c->l->off_a[layer * LORA_NMOD + m]; }
static const bfh *lora_b(cuda_ctx *c, size_t layer, int m) { return c->params_bf + c->l->off_b[layer * LORA_NMOD + m]; }
static float *grad_a(cuda_ctx *c, size_t layer, int m) { return c->grads + c->l->off_a[layer * LORA_NMOD + m]; }
static float *grad_b(cuda_ctx *c, size_t layer, int m) { return c->grads + c->l->off_b[layer * LORA_NMOD + m]; }

// The unfused path (LORAPIPE_LORA=gemm, or ranks the fused kernels lack), one module:
// y[:, cols] (ld ldy) += s * (dropout(x) A^T) B^T ; t (N, r) keeps dropout(x) A^T.
static void lora_fwd_gemm(cuda_ctx *c, bfh *y, size_t ldy, bfh *t, const bfh *x, size_t I, size_t O, size_t layer,
                          int m, dropout_cfg drop) {
    size_t N = c->N, r = c->l->r;
    const bfh *xin = x;
    if (drop.p > 0.0f) { dropout(c, c->drop, x, N * I, drop, layer, m); xin = c->drop; }
    gemm_linear_fwd(c->gemm, t, r, xin, I, lora_a(c, layer, m), I, N, r, I, nullptr, 1.0f, 0.0f);
    gemm_linear_fwd(c->gemm, y, ldy, t, r, lora_b(c, layer, m), r, N, O, r, nullptr, c->l->scaling, 1.0f);
}

// Given dy (ld lddy), accumulate dA, dB and add the LoRA path's input gradient into dx (ld I).
static void lora_bwd_gemm(cuda_ctx *c, bfh *dx, const bfh *dy, size_t lddy, const bfh *t, const bfh *x, size_t I,
                          size_t O, size_t layer, int m, dropout_cfg drop) {
    size_t N = c->N, r = c->l->r;
    float s = c->l->scaling;
    gemm_linear_dw(c->gemm, grad_b(c, layer, m), dy, lddy, t, r, N, O, r, s, 1.0f);            // dB += s dy^T t
    gemm_linear_dx(c->gemm, c->dt, r, dy, lddy, lora_b(c, layer, m), r, N, O, r, s, 0.0f);     // dt = s dy B
    const bfh *xin = x;
    if (drop.p > 0.0f) { dropout(c, c->drop, x, N * I, drop, layer, m); xin = c->drop; }
    gemm_linear_dw(c->gemm, grad_a(c, layer, m), c->dt, r, xin, I, N, r, I, 1.0f, 1.0f);        // dA += dt^T x
    if (!dx) return;   // no input gradient wanted (layer 0)
    if (drop.p > 0.0f) {   // the mask applies to the input gradient as well
        gemm_linear_dx(c->gemm, c->drop, I, c->dt, r, lora_a(c, layer, m), I, N, r, I, 1.0f, 0.0f);
        dropout(c, c->drop, c->drop, N * I, drop, layer, m);
        k_add_inplace(dx, c->drop, N * I, c->stream);
    } else {
        gemm_linear_dx(c->gemm, dx, I, c->dt, r, lora_a(c, layer, m), I, N, r, I, 1.0f, 1.0f);   // dx += dt A
    }
}

// The two sides of a site's modules that are on, as the fused kernels take them:
// ga the A side (t = dropout(x) A^T in, dA and dx out; its t are a->t, or with
// dt the group's dt slots), gb the B side (io + col[j] the module's columns of
// the product y or dy, row stride ld).
static void lora_site_groups(cuda_ctx *c, const lora_site *st, size_t layer, layer_acts *a, bfh *io, size_t ld,
                             bfh *dt, dropout_cfg drop, lora_group *ga, lora_group *gb) {
    memset(ga, 0, sizeof *ga);
    memset(gb, 0, sizeof *gb);
    gb->ld = ld;
    for (int j = 0; j < st->n; j++) {
        int m = st->mods[j];
        if (!c->l->on[m]) continue;
        int g = ga->g++;
        ga->w[g] = lora_a(c, layer, m); ga->t[g] = dt ? dt + (size_t)g * c->N * c->l->r : a->t[m];
        ga->dw[g] = grad_a(c, layer, m); ga->k[g] = lora_mask_key(drop.key, layer, m);
        gb->g++;
        gb->w[g] = lora_b(c, layer, m); gb->t[g] = a->t[m]; gb->dw[g] = grad_b(c, layer, m);
        gb->io[g] = io + st->col[j]; gb->cols[g] = st->out[j];
    }
}

// ---- the frozen weights' products ----------------------------------------------
// In one place for the layer passes and for the start-up warm-up (warm_gemms),
// which must meet the same shapes, strides and alignment. x is the layer's
// input (the residual of o_proj) and x_out its output (down_proj adds into it);
// the backward products read and write the workspace.
enum base_op { FWD_QKV, FWD_O, FWD_GU, FWD_DOWN, BWD_DOWN, BWD_GU, BWD_O, BWD_QKV, BASE_OPS };

static void base_gemm(cuda_ctx *c, int op, const layer_w *w, layer_acts *a, const bfh *x, bfh *x_out, size_t N) {
    size_t C = c->d.hidden, F = c->d.inter;
    switch (op) {
    case FWD_QKV:    // qkv = ln1 Wqkv^T + b
        gemm_linear_fwd(c->gemm, a->qkv, c->dqkv, a->ln1, C, w->w_qkv, C, N, c->dqkv, C, w->b_qkv, 1.0f, 0.0f); break;
    case FWD_O:      // x_mid = x + att Wo^T: the residual add rides in the product's C input
        gemm_linear_fwd_res(c->gemm, a->x_mid, x, C, a->att, c->qd, w->w_o, c->qd, N, C, c->qd); break;
    case FWD_GU:     // gu = ln2 [Wg; Wu]^T
        gemm_linear_fwd(c->gemm, a->gu, 2 * F, a->ln2, C, w->w_gu, C, N, 2 * F, C, nullptr, 1.0f, 0.0f); break;
    case FWD_DOWN:   // x_out = x_mid + act Wd^T
        gemm_linear_fwd_res(c->gemm, x_out, a->x_mid, C, a->act, F, w->w_d, F, N, C, F); break;
    case BWD_DOWN:   // dact = dres Wd
        gemm_linear_dx(c->gemm, c->dact, F, c->dres, C, w->w_d, F, N, C, F, 1.0f, 0.0f); break;
    case BWD_GU:     // dln = dgu [Wg; Wu]
        gemm_linear_dx(c->gemm, c->dln, C, c->dgu, 2 * F, w->w_gu, C, N, 2 * F, C, 1.0f, 0.0f); break;
    case BWD_O:      // datt = dres Wo
        gemm_linear_dx(c->gemm, c->datt, c->qd, c->dres, C, w->w_o, c->qd, N, C, c->qd, 1.0f, 0.0f); break;
    case BWD_QKV:    // dln = dqkv Wqkv (dqkv: the attention's gradient, attention_bwd)
        gemm_linear_dx(c->gemm, c->dln, C, c->dq, c->dqkv, w->w_qkv, C, N, c->dqkv, C, 1.0f, 0.0f); break;
    }
}

// ---- a site: a base product and the LoRA modules on it -------------------------
// A site's forward: the base product op (writing y, ld ldy), and the LoRA
// modules reading the site's shared input in (N, I): y[:, col_j] += s
// dropout(in) A_j^T B_j^T. Fused, in is read once for the whole site's
// t = dropout(in) A^T, and the B sides go in one launch.
static void site_fwd(cuda_ctx *c, int site, int op, const layer_w *w, layer_acts *a, const bfh *x, bfh *x_out, bfh *y,
                     size_t ldy, const bfh *in, size_t I, size_t layer, dropout_cfg drop) {
    const lora_site *st = &c->site[site];
    mark(c, "fwd gemm");
    base_gemm(c, op, w, a, x, x_out, c->N);
    mark(c, "fwd lora");
    if (!c->lora_fused) {
        for (int j = 0; j < st->n; j++)
            if (c->l->on[st->mods[j]])
                lora_fwd_gemm(c, y + st->col[j], ldy, a->t[st->mods[j]], in, I, st->out[j], layer, st->mods[j], drop);
        return;
    }
    lora_group ga, gb;
    lora_site_groups(c, st, layer, a, y, ldy, nullptr, drop, &ga, &gb);
    if (!ga.g) return;
    k_lora_in_group(&ga, in, c->N, I, c->l->r, drop.p, c->stream);
    k_lora_out_batch(&gb, c->N, c->l->r, c->l->scaling, c->stream);
}

// A site's backward: the base product op (-1: none) computing the input
// gradient dx (N, I) from dy (ld lddy), and the LoRA modules' dA and dB from
// dy and the input in; their input gradient is added into dx unless dx is null.
// Fused, dA takes one pass over in for the site and dx one read-modify-write.
static void site_bwd(cuda_ctx *c, int site, int op, const layer_w *w, layer_acts *a, bfh *dx, const bfh *dy,
                     size_t lddy, const bfh *in, size_t I, size_t layer, dropout_cfg drop) {
    const lora_site *st = &c->site[site];
    size_t N = c->N, r = c->l->r;
    float s = c->l->scaling;
    mark(c, "bwd gemm");
    if (op >= 0) base_gemm(c, op, w, a, nullptr, nullptr, N);
    mark(c, "bwd lora");
    if (!c->lora_fused) {
        for (int j = 0; j < st->n; j++)
            if (c->l->on[st->mods[j]])
                lora_bwd_gemm(c, dx, dy + st->col[j], lddy, a->t[st->mods[j]], in, I, st->out[j], layer, st->mods[j],
                              drop);
        return;
    }
    lora_group ga, gb;
    lora_site_groups(c, st, layer, a, (bfh *)dy, lddy, c->dt, drop, &ga, &gb);
    if (!ga.g) return;
    k_lora_db_batch(&gb, c->da_part, N, r, s, c->stream);   // dB_j += s dy_j^T t_j
    for (int j = 0; j < gb.g; j++) gb.t[j] = ga.t[j];        // the B side now writes the dt slots
    k_lora_dt_batch(&gb, N, r, s, c->stream);               // dt_j = s dy_j B_j
    k_lora_da_group(&ga, c->da_part, in, N, I, r, drop.p, c->stream);   // dA_j += dt_j^T dropout_j(in)
    if (dx) k_lora_dx_group(dx, &ga, N, I, r, drop.p, c->stream);   // dx += sum_j dropout_j'(dt_j A_j)
}

// Layer i's input (i = L: the final norm's), N tokens of row stride hidden.
// A pipeline stage keeps its own layers' inputs only: i runs over [l0, l1].
static bfh *x_at(cuda_ctx *c, size_t i) { return c->x_layers + (i - c->l0) * c->max_tok * c->d.hidden; }

// The loss head on cn target rows: logits = hc lm_head^T, and its input gradient hc = dlogits lm_head.
static void head_fwd(cuda_ctx *c, size_t cn) {
    size_t C = c->d.hidden, V = c->d.vocab;
    gemm_linear_fwd(c->gemm, c->logits, V, c->hc, C, c->lm_head, C, cn, V, C, nullptr, 1.0f, 0.0f);
}
static void head_dx(cuda_ctx *c, size_t cn) {
    size_t C = c->d.hidden, V = c->d.vocab;
    gemm_linear_dx(c->gemm, c->hc, C, c->logits, V, c->lm_head, C, cn, V, C, 1.0f, 0.0f);
}

// ---- attention ---------------------------------------------------------------
// The kernels see the batch as the data has it (c->as: every sequence whole).
// With a shared prefix (c->P > 0) the layer computes fewer rows: q, k, v are
// spread out to every sequence's rows before attention and its output taken
// back from one copy of each (the shared rows' outputs are the same in every
// sequence, being the same computation); in the backward the output gradient
// goes to that copy, and the q/k/v gradients of the copies are summed
// (k_fold_rows). Scratch: workspace buffers idle at that point of the pass.
static void attention_run_fwd(cuda_ctx *c, bfh *out, float *lse, const bfh *qkv) {
    if (c->att_short) att_short_fwd(out, lse, qkv, &c->as, c->stream);
    else if (c->att_lp) att_gemm_fwd(c->gemm, out, lse, qkv, &c->as, c->att_lp, c->att_ws, c->tok_seq, c->stream);
    else k_attention_fwd(out, lse, qkv, &c->as, c->stream);
}

static void attention_fwd(cuda_ctx *c, layer_acts *a) {
    if (!c->P) { attention_run_fwd(c, a->att, a->lse, a->qkv); return; }
    size_t Nb = c->as.N;
    k_gather_rows(c->dqkv_buf, a->qkv, c->expand_idx, Nb, c->dqkv, c->stream);   // (Nb, dqkv)
    attention_run_fwd(c, c->datt, a->lse, c->dqkv_buf);                         // (Nb, qd); lse (H, Nb)
    k_gather_rows(a->att, c->datt, c->compress_idx, c->N, c->qd, c->stream);
}

static void attention_run_bwd(cuda_ctx *c, bfh *dqkv, const bfh *dout, const bfh *out, const float *lse,
                              const bfh *qkv) {
    if (c->att_short) att_short_bwd(dqkv, dout, out, lse, qkv, &c->as, (float *)c->att_ws, c->stream);
    else if (c->att_lp)
        att_gemm_bwd(c->gemm, dqkv, c->delta, dout, out, lse, qkv, &c->as, c->att_lp, c->att_ws, c->tok_seq, c->stream);
    else k_attention_bwd(dqkv, c->delta, dout, out, lse, qkv, &c->as, c->stream);
}

// Leaves the q/k/v gradient (N, dqkv), before the RoPE backward, in c->dq.
static void attention_bwd(cuda_ctx *c, layer_acts *a) {
    if (!c->P) {
        c->dq = c->dqkv_buf;
        attention_run_bwd(c, c->dq, c->datt, a->att, a->lse, a->qkv);
        return;
    }
    size_t Nb = c->as.N;
    bfh *qkv = c->dgu, *out = c->dact, *dout = c->dln;   // the MLP's gradients are spent; dln is written after
    k_gather_rows(qkv, a->qkv, c->expand_idx, Nb, c->dqkv, c->stream);
    k_gather_rows(out, a->att, c->expand_idx, Nb, c->qd, c->stream);
    CUDA_CHECK(cudaMemsetAsync(dout, 0, Nb * c->qd * 2, c->stream));
    k_scatter_rows(dout, c->datt, c->compress_idx, c->N, c->qd, c->stream);
    attention_run_bwd(c, c->dqkv_buf, dout, out, a->lse, qkv);
    c->dq = c->dgu;
    k_fold_rows(c->dq, c->dqkv_buf, c->compress_idx, c->seq, c->n_seq, c->P, c->N, c->dqkv, c->stream);
}

// ---- one layer ---------------------------------------------------------------
static void layer_fwd(cuda_ctx *c, size_t li, layer_acts *a, const bfh *x, bfh *x_out, dropout_cfg drop) {
    const model_dims *d = &c->d;
    size_t N = c->N, C = d->hidden, F = d->inter, D = d->head_dim;
    float eps = (float)d->rms_eps;
    layer_w *w = &c->lw[li];
    mark(c, "fwd rmsnorm");
    k_rmsnorm_fwd(a->ln1, a->rstd1, x, w->ln1, N, C, eps, c->stream);
    site_fwd(c, SITE_QKV, FWD_QKV, w, a, x, x_out, a->qkv, c->dqkv, a->ln1, C, li, drop);
    mark(c, "fwd rope");
    // q's heads and then k's are contiguous columns of qkv: one launch rotates both.
    k_rope(a->qkv, c->dqkv, 0, d->heads + d->kv_heads, D, c->pos, c->inv_freq, N, 0, c->stream);
    mark(c, "fwd attention");
    attention_fwd(c, a);
    site_fwd(c, SITE_O, FWD_O, w, a, x, x_out, a->x_mid, C, a->att, c->qd, li, drop);
    mark(c, "fwd rmsnorm");
    k_rmsnorm_fwd(a->ln2, a->rstd2, a->x_mid, w->ln2, N, C, eps, c->stream);
    site_fwd(c, SITE_GU, FWD_GU, w, a, x, x_out, a->gu, 2 * F, a->ln2, C, li, drop);
    mark(c, "fwd swiglu");
    k_swiglu_fwd(a->act, a->gu, N, F, c->stream);
    site_fwd(c, SITE_DOWN, FWD_DOWN, w, a, x, x_out, x_out, C, a->act, F, li, drop);
}

// dres: gradient of the layer output on entry, of its input on return.
static void layer_bwd(cuda_ctx *c, size_t li, layer_acts *a, dropout_cfg drop) {
    const model_dims *d = &c->d;
    size_t N = c->N, C = d->hidden, F = d->inter, D = d->head_dim;
    layer_w *w = &c->lw[li];
    // MLP
    // The activation is kept with the layer's set (with recompute, the set the
    // layer's forward has just refilled): recomputing it cost 1.4% of a step.
    site_bwd(c, SITE_DOWN, BWD_DOWN, w, a, c->dact, c->dres, C, a->act, F, li, drop);
    mark(c, "bwd swiglu");
    k_swiglu_bwd(c->dgu, c->dact, a->gu, N, F, c->stream);
    site_bwd(c, SITE_GU, BWD_GU, w, a, c->dln, c->dgu, 2 * F, a->ln2, C, li, drop);
    mark(c, "bwd rmsnorm");
    k_rmsnorm_bwd(c->dres, c->dln, a->x_mid, a->rstd2, w->ln2, N, C, 1, c->stream);
    // attention
    site_bwd(c, SITE_O, BWD_O, w, a, c->datt, c->dres, C, a->att, c->qd, li, drop);
    mark(c, "bwd attention");
    attention_bwd(c, a);
    mark(c, "bwd rope");
    k_rope(c->dq, c->dqkv, 0, d->heads + d->kv_heads, D, c->pos, c->inv_freq, N, 1, c->stream);
    // Layer 0's input gradient would only reach the frozen embedding: its q/k/v
    // LoRA gradients are all that is left to compute.
    bool need_dx = li > 0;
    site_bwd(c, SITE_QKV, need_dx ? BWD_QKV : -1, w, a, need_dx ? c->dln : nullptr, c->dq, c->dqkv, a->ln1, C, li,
             drop);
    if (!need_dx) return;
    mark(c, "bwd rmsnorm");
    k_rmsnorm_bwd(c->dres, c->dln, a->x_in, a->rstd1, w->ln1, N, C, 1, c->stream);
}

// ---- GEMM warm-up ----------------------------------------------------------------
// Every base-weight and lm_head GEMM shape that a micro-batch of more than 256
// tokens can meet, run once at start-up on scratch buffers (results discarded).
// cuBLASLt's algorithm choice is cached per 64-row bucket of the token count
// (kernels/gemm.cu), and the first launch of each of its kernels loads that
// kernel's module: measured 3.5-4.5 ms of idle GPU each time, mid-step, for
// every bucket the data reaches for the first time. base_gemm and the head
// products are the layer passes' own calls (same buffers, strides, alignment),
// so the real calls find their plans cached.
static void warm_gemms(cuda_ctx *c) {
    size_t Nmax = c->max_tok;
    for (size_t nb = 320; nb < Nmax + 64; nb += 64) {
        size_t N = std::min(nb, Nmax);
        if (N <= 256) continue;
        for (int op = 0; op < BASE_OPS; op++) base_gemm(c, op, &c->lw[c->l0], &c->la[0], x_at(c, c->l0), x_at(c, c->l0 + 1), N);
        if (N <= c->logit_rows) { head_fwd(c, N); head_dx(c, N); }
    }
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

// ---- micro-batch upload ----------------------------------------------------------
// The rows every sequence of mb starts with (--share-prefix): the same ids as
// sequence 0's and no target among them (row t is a target when label t + 1
// is one), leaving each sequence at least one row of its own. Under 8 rows,
// the gathers would cost more than they save: 0.
static size_t share_len(const cuda_ctx *c, const micro_batch *mb) {
    if (!c->share_ok || mb->n_seq < 2) return 0;
    size_t min_len = SIZE_MAX;
    for (size_t s = 0; s < mb->n_seq; s++) min_len = std::min(min_len, (size_t)(mb->seq_start[s + 1] - mb->seq_start[s]));
    size_t P = 0;
    for (; P + 1 < min_len; P++) {
        size_t s = 0;
        for (; s < mb->n_seq; s++) {
            size_t t = mb->seq_start[s] + P;
            if (mb->ids[t] != mb->ids[mb->seq_start[0] + P] || mb->labels[t + 1] != -100) break;
        }
        if (s < mb->n_seq) break;
    }
    return P >= 8 ? P : 0;
}

static void upload_batch(cuda_ctx *c, const micro_batch *mb) {
    size_t N = mb->n_tok;
    c->n_seq = mb->n_seq;
    // Host staging (pinned): ids | pos | seq | qblocks | target rows | target ids
    std::vector<int32_t> qb;
    for (size_t s = 0; s < mb->n_seq; s++) {
        size_t L = mb->seq_start[s + 1] - mb->seq_start[s];
        for (size_t q0 = 0; q0 < L; q0 += ATT_BQ) { qb.push_back((int32_t)s); qb.push_back((int32_t)q0); }
    }
    c->n_qb = qb.size() / 2;
    size_t need = 2 * N + mb->n_seq + 1 + qb.size() + 2 * N;
    if (need > c->h_stage_n) die_at(__FILE__, __LINE__, "micro-batch larger than sized for");
    int32_t *h = c->h_stage, *hids = h, *hpos = h + N, *hseq = hpos + N, *hqb = hseq + mb->n_seq + 1;
    int32_t *hrow = hqb + qb.size(), *htok = hrow + N;
    size_t P = share_len(c, mb);
    c->P = P;
    c->N = N - (P ? (mb->n_seq - 1) * P : 0);   // the rows computed
    c->rows_batch += N;
    c->rows_computed += c->N;
    // Row t of the batch (position p in sequence s) is computed row e(t): a
    // shared row's is p itself, the others follow in batch order.
    // Without a shared prefix e(t) = t.
    int32_t *hexp = P ? c->h_share : nullptr, *hcmp = P ? c->h_share + c->max_tok : nullptr;
    size_t nt = 0, j = P;
    for (size_t p = 0; p < P; p++) {
        hids[p] = (int32_t)mb->ids[mb->seq_start[0] + p];
        hpos[p] = (int32_t)p;
        hcmp[p] = (int32_t)(mb->seq_start[0] + p);
    }
    for (size_t s = 0; s < mb->n_seq; s++) {
        size_t t0 = mb->seq_start[s], t1 = mb->seq_start[s + 1];
        hseq[s] = (int32_t)t0;
        for (size_t t = t0; t < t1; t++) {
            size_t e = t - t0 < P ? t - t0 : j++;
            if (e >= P) {
                hids[e] = (int32_t)mb->ids[t];
                hpos[e] = (int32_t)(t - t0);
                if (P) hcmp[e] = (int32_t)t;
            }
            if (P) hexp[t] = (int32_t)e;
            if (t + 1 < t1 && mb->labels[t + 1] != -100) { hrow[nt] = (int32_t)e; htok[nt] = mb->labels[t + 1]; nt++; }
        }
    }
    hseq[mb->n_seq] = (int32_t)N;
    memcpy(hqb, qb.data(), qb.size() * sizeof(int32_t));
    c->n_t = nt;
    c->h_ids = hids;
    cudaStream_t s = c->stream;
    CUDA_CHECK(cudaMemcpyAsync(c->ids, hids, c->N * 4, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(c->pos, hpos, c->N * 4, cudaMemcpyHostToDevice, s));
    if (P) {
        CUDA_CHECK(cudaMemcpyAsync(c->expand_idx, hexp, N * 4, cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaMemcpyAsync(c->compress_idx, hcmp, c->N * 4, cudaMemcpyHostToDevice, s));
    }
    CUDA_CHECK(cudaMemcpyAsync(c->seq, hseq, (mb->n_seq + 1) * 4, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(c->qblocks, hqb, qb.size() * 4, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(c->trow, hrow, nt * 4, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(c->ttok, htok, nt * 4, cudaMemcpyHostToDevice, s));
    size_t maxL = 0;
    for (size_t q = 0; q < mb->n_seq; q++) maxL = std::max(maxL, (size_t)(mb->seq_start[q + 1] - mb->seq_start[q]));
    c->as = att_shape{mb->n_seq, N, c->d.heads, c->d.kv_heads, c->d.head_dim, c->dqkv, c->seq, c->qblocks, c->n_qb, maxL};
    size_t lp = (maxL + 7) / 8 * 8;
    c->att_lp = !c->att_force_kernel && att_gemm_ws_bytes(mb->n_seq, c->d.heads, lp, c->d.head_dim) <= c->att_ws_bytes
                ? lp : 0;
    // Short sequences (the fine-tuning case) go through one fused kernel per (sequence, head).
    c->att_short = !c->att_force_kernel && !c->att_force_gemm && att_short_ok(&c->as) &&
                   att_short_scratch_bytes(&c->as) <= c->att_ws_bytes;
    // Staging is reused by the next batch: wait until these copies have left it.
    CUDA_CHECK(cudaStreamSynchronize(s));
}

static layer_acts *acts_of(cuda_ctx *c, size_t i);
// The backward pass through this rank's layers, dres holding the gradient of
// their output on entry and of their input on return.
static void stage_backward(cuda_ctx *c, dropout_cfg drop);

static layer_acts *acts_of(cuda_ctx *c, size_t i) {
    layer_acts *a = &c->la[c->recompute ? 0 : i - c->l0];
    a->x_in = x_at(c, i);
    return a;
}

// ---- host offload: layer i lives in slot i % 2 while it computes -------------
static void layer_load(cuda_ctx *c, long i) {   // issue layer i's copy unless its slot holds it
    if (i < (long)c->l0 || (size_t)i >= c->l1) return;   // not this stage's layer
    int s = (int)(i & 1);
    if (c->slot_layer[s] == i) return;
    CUDA_CHECK(cudaStreamWaitEvent(c->copy_stream, c->slot_free[s], 0));   // the slot's last user is done
    CUDA_CHECK(cudaMemcpyAsync(c->slot_base[s], c->host_layers + ((size_t)i - c->l0) * c->layer_bytes, c->layer_bytes,
                               cudaMemcpyHostToDevice, c->copy_stream));
    CUDA_CHECK(cudaEventRecord(c->slot_ready[s], c->copy_stream));
    c->slot_layer[s] = i;
}
// Before layer i computes: its weights are (being) copied, the next layer's copy
// starts behind it, and the compute stream waits for layer i's.
static void layer_acquire(cuda_ctx *c, size_t i, long next) {
    if (!c->offload) return;
    layer_load(c, (long)i);
    layer_load(c, next);
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->slot_ready[i & 1], 0));
}
static void layer_release(cuda_ctx *c, size_t i) {
    if (c->offload) CUDA_CHECK(cudaEventRecord(c->slot_free[i & 1], c->stream));
}

static void stage_backward(cuda_ctx *c, dropout_cfg drop) {
    for (size_t i = c->l1; i-- > c->l0;) {
        layer_acts *a = acts_of(c, i);
        layer_acquire(c, i, (long)i - 1);
        // Recompute rebuilds the layer from its saved input; the output it
        // rewrites into x_at(i + 1) is bit-identical to what is there.
        if (c->recompute) layer_fwd(c, i, a, x_at(c, i), x_at(c, i + 1), drop);
        layer_bwd(c, i, a, drop);
        layer_release(c, i);
    }
}

// Forward of this rank's layers [l0, l1) (the whole model on one stage);
// returns the summed loss over targets on the last stage; with grad, the
// backward pass adds inv_n-scaled LoRA gradients. A pipeline stage (see
// cpu_stage_run for the contract) starts from x_in unless it is the first and
// ends in x_out (forward) or starts its backward from dx_out unless it is the
// last; with grad it returns its input's gradient in dx_in. x_in, x_out,
// dx_out and dx_in are host arrays of N x C bf16.
static double run(cuda_ctx *c, const micro_batch *mb, float inv_n, dropout_cfg drop, int grad,
                  const void *x_in = nullptr, void *x_out = nullptr, const void *dx_out = nullptr,
                  void *dx_in = nullptr) {
    if (mb->n_tok == 0) return 0.0;
    upload_batch(c, mb);
    size_t N = c->N, C = c->d.hidden, L = c->d.layers, V = c->d.vocab, l0 = c->l0, l1 = c->l1;
    int last = l1 == L;
    cudaStream_t s = c->stream;
    mark(c, "embed");
    if (l0 > 0) {
        CUDA_CHECK(cudaMemcpyAsync(x_at(c, l0), x_in, N * C * 2, cudaMemcpyHostToDevice, s));
    } else if (c->embed_host) {
        // The table stays in the mapped file: copy the rows this batch needs.
        const st_tensor *t = c->embed_host;
        #pragma omp parallel for schedule(static) if(N > 256)
        for (size_t i = 0; i < N; i++) {
            size_t row = (size_t)c->h_ids[i];   // the computed rows' ids (a shared prefix once)
            uint16_t *dst = c->embed_stage + i * C;
            if (t->dtype == DT_BF16) memcpy(dst, (const uint16_t *)t->data + row * C, C * 2);
            else if (t->dtype == DT_F32) for (size_t j = 0; j < C; j++) dst[j] = f32_to_bf16(((const float *)t->data)[row * C + j]);
            else for (size_t j = 0; j < C; j++) dst[j] = f32_to_bf16(f16_to_f32(((const uint16_t *)t->data)[row * C + j]));
        }
        CUDA_CHECK(cudaMemcpyAsync(x_at(c, 0), c->embed_stage, N * C * 2, cudaMemcpyHostToDevice, s));
    } else {
        k_embed(x_at(c, 0), c->embed, c->ids, N, C, s);
    }
    for (size_t i = l0; i < l1; i++) {
        layer_acquire(c, i, (long)i + 1);
        layer_fwd(c, i, acts_of(c, i), x_at(c, i), x_at(c, i + 1), drop);
        layer_release(c, i);
    }
    if (!last) {   // a pipeline stage before the last: hand the output on, or take its gradient
        if (grad) {
            CUDA_CHECK(cudaMemcpyAsync(c->dres, dx_out, N * C * 2, cudaMemcpyHostToDevice, s));
            stage_backward(c, drop);
            if (dx_in) CUDA_CHECK(cudaMemcpyAsync(dx_in, c->dres, N * C * 2, cudaMemcpyDeviceToHost, s));
        } else {
            CUDA_CHECK(cudaMemcpyAsync(x_out, x_at(c, l1), N * C * 2, cudaMemcpyDeviceToHost, s));
        }
        mark(c, "end");
        CUDA_CHECK(cudaStreamSynchronize(s));
        prof_collect(c);
        return 0.0;
    }
    const bfh *xL = x_at(c, L);
    mark(c, "loss (head + xent)");
    k_rmsnorm_fwd(c->lnf, c->rstdf, xL, c->norm_f, N, C, (float)c->d.rms_eps, s);
    // The loss over target rows only, in chunks of logit_rows: the full logits never exist.
    if (grad) CUDA_CHECK(cudaMemsetAsync(c->dln, 0, N * C * 2, s));
    for (size_t r0 = 0; r0 < c->n_t; r0 += c->logit_rows) {
        size_t cn = std::min(c->logit_rows, c->n_t - r0);
        k_gather_rows(c->hc, c->lnf, c->trow + r0, cn, C, s);
        head_fwd(c, cn);
        k_xent_fwd_bwd(c->logits, c->row_loss + r0, c->ttok + r0, cn, V, inv_n, grad, s);
        if (grad) {
            head_dx(c, cn);
            k_scatter_rows(c->dln, c->hc, c->trow + r0, cn, C, s);
        }
    }
    float loss = 0.0f;
    if (c->n_t) {
        k_sum(c->loss_sum, c->row_loss, c->n_t, s);
        CUDA_CHECK(cudaMemcpyAsync(&loss, c->loss_sum, 4, cudaMemcpyDeviceToHost, s));
    }
    if (grad) {
        mark(c, "bwd rmsnorm");
        CUDA_CHECK(cudaMemsetAsync(c->dres, 0, N * C * 2, s));
        k_rmsnorm_bwd(c->dres, c->dln, xL, c->rstdf, c->norm_f, N, C, 1, s);
        stage_backward(c, drop);
        if (dx_in) CUDA_CHECK(cudaMemcpyAsync(dx_in, c->dres, N * C * 2, cudaMemcpyDeviceToHost, s));
    }
    mark(c, "end");
    CUDA_CHECK(cudaStreamSynchronize(s));
    prof_collect(c);
    c->prof.steps++;
    return (double)loss;
}

// ---- data parallelism through NCCL, loaded at run time -------------------------
// dlopen keeps single-GPU binaries free of a libnccl dependency; the library is
// looked up only when a plan asks for several ranks.
#ifdef LORAPIPE_NCCL
struct nccl_api {
    void *lib;
    ncclComm_t comm;
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*get_async_error)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*abort)(ncclComm_t);
    ncclResult_t (*destroy)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
};

#define NCCL_CHECK(c, call) do {                                                             \
    ncclResult_t r_ = (call);                                                                \
    if (r_ != ncclSuccess) die_at(__FILE__, __LINE__, "NCCL error: %s (%s)", (c)->nccl->error_string(r_), #call); \
} while (0)

static nccl_api *nccl_load(void) {
    const char *env = getenv("LORAPIPE_NCCL_LIB");
    const char *tries[] = {env, "libnccl.so.2", "libnccl.so", "/usr/local/cuda/lib/libnccl.so.2",
                           "/usr/local/cuda/lib64/libnccl.so.2", "/usr/lib/x86_64-linux-gnu/libnccl.so.2"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof tries / sizeof *tries && !lib; i++)
        if (tries[i]) lib = dlopen(tries[i], RTLD_NOW | RTLD_GLOBAL);
    if (!lib) die("several ranks need NCCL, and libnccl.so.2 was not found (set LORAPIPE_NCCL_LIB to its path)");
    nccl_api *n = (nccl_api *)xcalloc(1, sizeof *n);
    n->lib = lib;
#define SYM(field, name) if (!(*(void **)&n->field = dlsym(lib, name))) die("%s lacks %s", "libnccl", name)
    SYM(get_unique_id, "ncclGetUniqueId"); SYM(init_rank, "ncclCommInitRank"); SYM(all_reduce, "ncclAllReduce");
    SYM(get_async_error, "ncclCommGetAsyncError"); SYM(abort, "ncclCommAbort"); SYM(destroy, "ncclCommDestroy");
    SYM(error_string, "ncclGetErrorString");
#undef SYM
    return n;
}

// Wait for the stream while watching the communicator: a rank that died or
// hangs must not leave this one waiting forever.
static void nccl_wait(cuda_ctx *c) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *te = getenv("LORAPIPE_NCCL_TIMEOUT");
    double limit = te ? atof(te) : 600.0;
    for (;;) {
        cudaError_t e = cudaStreamQuery(c->stream);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) CUDA_CHECK(e);
        ncclResult_t ar;
        c->nccl->get_async_error(c->nccl->comm, &ar);
        clock_gettime(CLOCK_MONOTONIC, &t);
        double el = (t.tv_sec - t0.tv_sec) + 1e-9 * (t.tv_nsec - t0.tv_nsec);
        if (ar != ncclSuccess || el > limit) {
            c->nccl->abort(c->nccl->comm);
            die("rank %d: %s; stopping (the newest complete checkpoint is intact)", c->rank,
                ar != ncclSuccess ? c->nccl->error_string(ar) : "another rank stopped answering (timeout)");
        }
        usleep(50);
    }
}

static void nccl_init(cuda_ctx *c, const train_opts *o) {
    c->nccl = nccl_load();
    ncclUniqueId id;
    if (o->rank == 0) NCCL_CHECK(c, c->nccl->get_unique_id(&id));
    dist_info di;
    memset(&di, 0, sizeof di);
    di.rank = o->rank; di.world = o->world; di.local_rank = o->local_rank;
    snprintf(di.rdzv_file, sizeof di.rdzv_file, "%s", o->rdzv_file ? o->rdzv_file : "");
    snprintf(di.master_addr, sizeof di.master_addr, "%s", o->master_addr ? o->master_addr : "");
    di.master_port = o->master_port;
    dist_exchange(&di, (unsigned char *)&id, sizeof id);
    NCCL_CHECK(c, c->nccl->init_rank(&c->nccl->comm, o->world, id, o->rank));
    CUDA_CHECK(cudaMalloc(&c->red_dev, 8 * sizeof(double)));
}
#else
struct nccl_api { int unused; };
static void nccl_init(cuda_ctx *c, const train_opts *o) {
    (void)c; (void)o;
    die("several ranks need NCCL, and this build found no nccl.h");
}
#endif

// ---- the backend interface -----------------------------------------------------
static cuda_ctx *ctx_of(backend *b) { return (cuda_ctx *)b->ctx; }

static void refresh_bf16(cuda_ctx *c) {
    k_f32_to_bf16(c->params_bf, c->params, c->l->n_params, 1.0f, c->stream);
}

static void cu_set_state(backend *b, const float *p, const float *m, const float *v) {
    cuda_ctx *c = ctx_of(b);
    size_t n = c->l->n_params * sizeof(float);
    CUDA_CHECK(cudaMemcpy(c->params, p, n, cudaMemcpyHostToDevice));
    if (m) CUDA_CHECK(cudaMemcpy(c->mom1, m, n, cudaMemcpyHostToDevice)); else CUDA_CHECK(cudaMemset(c->mom1, 0, n));
    if (v) CUDA_CHECK(cudaMemcpy(c->mom2, v, n, cudaMemcpyHostToDevice)); else CUDA_CHECK(cudaMemset(c->mom2, 0, n));
    refresh_bf16(c);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

// dst (host) = src (device), with stage-local state every slice from its owner
// (a collective: every rank calls it).
static void gather(cuda_ctx *c, float *dst, const float *src, const char *what) {
    size_t n = c->l->n_params;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost));
    if (c->own_only) host_comm_gather_slices(c->hcomm, dst, n, c->own_lo, c->own_hi, what);
}

static void cu_get_state(backend *b, float *p, float *m, float *v) {
    cuda_ctx *c = ctx_of(b);
    if (p) gather(c, p, c->params, "gathering the stages' parameters");
    if (m) gather(c, m, c->mom1, "gathering the stages' optimizer state");
    if (v) gather(c, v, c->mom2, "gathering the stages' optimizer state");
}

static void cu_zero_grads(backend *b) {
    cuda_ctx *c = ctx_of(b);
    CUDA_CHECK(cudaMemsetAsync(c->grads, 0, c->l->n_params * sizeof(float), c->stream));
}

static void cu_get_grads(backend *b, float *g) {
    gather(ctx_of(b), g, ctx_of(b)->grads, "gathering the stages' gradients");
}

static double cu_micro_step(backend *b, const micro_batch *mb, float inv_n, dropout_cfg drop) {
    return run(ctx_of(b), mb, inv_n, drop, 1);
}

static double cu_eval_loss(backend *b, const micro_batch *mb) {
    dropout_cfg none = {0.0f, 0};
    return run(ctx_of(b), mb, 0.0f, none, 0);
}

static double cu_stage_step(backend *b, const micro_batch *mb, const void *x_in, void *x_out, const void *dx_out,
                            void *dx_in, float inv_n, dropout_cfg drop, int grad) {
    return run(ctx_of(b), mb, inv_n, drop, grad, x_in, x_out, dx_out, dx_in);
}

static host_comm *cu_comm(backend *b) { return ctx_of(b)->hcomm; }

static void *cu_host_alloc(backend *b, size_t bytes) {
    (void)b;
    void *p = nullptr;
    CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault));
    return p;
}

static void cu_host_free(backend *b, void *p) {
    (void)b;
    cudaFreeHost(p);
}

static void cu_begin_step(backend *b, size_t step) {
    cuda_ctx *c = ctx_of(b);
    if (c->hcomm) host_comm_set_step(c->hcomm, step);
}

static void cu_reduce_grads(backend *b) {
    cuda_ctx *c = ctx_of(b);
    if (c->own_only) return;   // each stage's gradients stay its own
    if (c->hcomm) {   // pipeline stages: through host memory
        size_t n = c->l->n_params;
        CUDA_CHECK(cudaMemcpyAsync(c->grads_host, c->grads, n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        host_comm_allreduce_f32(c->hcomm, c->grads_host, n, "the gradient all-reduce");
        CUDA_CHECK(cudaMemcpyAsync(c->grads, c->grads_host, n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        return;
    }
#ifdef LORAPIPE_NCCL
    if (c->world <= 1) return;
    NCCL_CHECK(c, c->nccl->all_reduce(c->grads, c->grads, c->l->n_params, ncclFloat, ncclSum, c->nccl->comm, c->stream));
    nccl_wait(c);
#else
    (void)c;
#endif
}

static void cu_allreduce(backend *b, double *v, size_t n) {
    cuda_ctx *c = ctx_of(b);
    if (c->hcomm) { host_comm_allreduce_f64(c->hcomm, v, n, "the loss all-reduce"); return; }
#ifdef LORAPIPE_NCCL
    if (c->world <= 1) return;
    if (n > 8) die_at(__FILE__, __LINE__, "all-reduce of %zu scalars", n);
    CUDA_CHECK(cudaMemcpyAsync(c->red_dev, v, n * sizeof(double), cudaMemcpyHostToDevice, c->stream));
    NCCL_CHECK(c, c->nccl->all_reduce(c->red_dev, c->red_dev, n, ncclDouble, ncclSum, c->nccl->comm, c->stream));
    CUDA_CHECK(cudaMemcpyAsync(v, c->red_dev, n * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    nccl_wait(c);
#else
    (void)c; (void)v; (void)n;
#endif
}

static double cu_grad_norm(backend *b) {
    cuda_ctx *c = ctx_of(b);
    size_t nt = c->l->n_tensors;
    k_sumsq_per_tensor(c->sumsq, c->grads, c->tensor_off_dev, nt, c->stream);
    std::vector<float> ss(nt);
    CUDA_CHECK(cudaMemcpyAsync(ss.data(), c->sumsq, nt * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    // Stage-local gradients: each tensor's sum lives on one stage, zeros elsewhere.
    if (c->own_only) host_comm_allreduce_f32(c->hcomm, ss.data(), nt, "the gradient norm");
    return grad_norm_from_sumsq(ss.data(), nt);
}

static void cu_adamw(backend *b, float clip, double lr, size_t step) {
    cuda_ctx *c = ctx_of(b);
    adamw_scalars a = adamw_scalars_for(c->oc, lr, step);
    size_t lo = c->own_only ? c->own_lo : 0, hi = c->own_only ? c->own_hi : c->l->n_params;
    k_adamw(c->params + lo, c->grads + lo, c->mom1 + lo, c->mom2 + lo, hi - lo, clip, a.decay, a.w1, a.b2, a.w2,
            a.step_size, a.bc2_sqrt, a.eps, c->stream);
    refresh_bf16(c);
}

static void cu_report(backend *b) {
    cuda_ctx *c = ctx_of(b);
    char w[32], l[32], a[32], k[32];
    cudaDeviceProp prop;
    int dev;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    size_t fr, tot;
    CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    char al[32], us[32], at[32];
    size_t arenas = c->weights.cap + c->lora.cap + c->acts.cap + c->work.cap + gemm_workspace_bytes(c->gemm) +
                    c->att_ws_bytes;
    char off[96] = "";
    if (c->offload) {
        char hb[32];
        snprintf(off, sizeof off, ", 2 layer slots; %zu layers in pinned host memory: %s", c->l1 - c->l0,
                 fmt_bytes((double)((c->l1 - c->l0) * c->layer_bytes), hb, sizeof hb));
    }
    char who[64] = "";
    if (c->l0 > 0 || c->l1 < c->d.layers) snprintf(who, sizeof who, "rank %d (layers %zu-%zu) ", c->rank, c->l0, c->l1 - 1);
    fprintf(stderr, "train: %sGPU %d %s; arenas: weights %s (bf16%s%s), LoRA state %s, activations %s%s, workspace %s; "
            "logit chunk %zu rows; attention tiles %s; allocated %s, in use on the device %s (with the CUDA context)\n", who, dev, prop.name,
            fmt_bytes((double)c->weights.cap, w, sizeof w), c->embed_host ? ", embedding in host memory" : "", off,
            fmt_bytes((double)c->lora.cap, l, sizeof l), fmt_bytes((double)c->acts.cap, a, sizeof a),
            c->recompute ? " (recompute)" : "", fmt_bytes((double)c->work.cap, k, sizeof k), c->logit_rows,
            fmt_bytes((double)c->att_ws_bytes, at, sizeof at), fmt_bytes((double)arenas, al, sizeof al), fmt_bytes((double)(tot - fr), us, sizeof us));
}

static void cu_destroy(backend *b) {
    cuda_ctx *c = ctx_of(b);
    prof_print(c);
    gemm_destroy(c->gemm);
#ifdef LORAPIPE_NCCL
    if (c->nccl) { c->nccl->destroy(c->nccl->comm); cudaFree(c->red_dev); }
#endif
    if (c->hcomm) { host_comm_close(c->hcomm); cudaFreeHost(c->grads_host); }
    c->weights.release(); c->lora.release(); c->acts.release(); c->work.release();
    cudaFreeHost(c->h_stage);
    if (c->att_ws) { cudaFree(c->att_ws); cudaFree(c->tok_seq); }
    if (c->share_ok) {
        if (c->rank == 0 && c->rows_batch)
            fprintf(stderr, "train: shared prefixes: %zu of the batches' %zu rows computed (%.1f%%)\n", c->rows_computed,
                    c->rows_batch, 100.0 * (double)c->rows_computed / (double)c->rows_batch);
        cudaFree(c->expand_idx);
        cudaFreeHost(c->h_share);
    }
    if (c->embed_stage) cudaFreeHost(c->embed_stage);
    if (c->offload) {
        cudaStreamSynchronize(c->copy_stream);
        cudaFreeHost(c->host_layers);
        for (int s2 = 0; s2 < 2; s2++) { cudaEventDestroy(c->slot_ready[s2]); cudaEventDestroy(c->slot_free[s2]); }
        cudaStreamDestroy(c->copy_stream);
    }
    cudaStreamDestroy(c->stream);
    free(c->tensor_off_host);
    delete c;
    free(b);
}

// ---- start-up: arenas and weights ------------------------------------------------------
// Copy one checkpoint tensor (any float dtype) into device bf16 at dst, through
// a pinned staging buffer; rows of a fused matrix land at their offset.
struct uploader {
    cudaStream_t s;
    uint16_t *pinned[2]; size_t cap; int which = 0;
    cudaEvent_t done[2];
    void init(cudaStream_t st, size_t bytes) {
        s = st; cap = bytes / 2;
        for (int i = 0; i < 2; i++) {
            CUDA_CHECK(cudaHostAlloc((void **)&pinned[i], cap * 2, cudaHostAllocDefault));
            CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
        }
    }
    // Elements [off, off + k) of a weight tensor as bf16 into dst (any buffer the CPU writes).
    static void convert(uint16_t *dst, const st_tensor *t, size_t off, size_t k) {
        if (t->dtype == DT_BF16) {
            const uint16_t *src = (const uint16_t *)t->data + off;
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < k; i += 1 << 16) memcpy(dst + i, src + i, std::min((size_t)1 << 16, k - i) * 2);
        } else if (t->dtype == DT_F32) {
            const float *src = (const float *)t->data + off;
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < k; i++) dst[i] = f32_to_bf16(src[i]);
        } else if (t->dtype == DT_F16) {
            const uint16_t *src = (const uint16_t *)t->data + off;
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < k; i++) dst[i] = f32_to_bf16(f16_to_f32(src[i]));
        } else {
            die("tensor %s: dtype %s cannot be trained from", t->name, dtype_name(t->dtype));
        }
    }
    // To the device through the two pinned staging buffers, in chunks.
    void put(bfh *dst, const st_tensor *t) {
        size_t n = t->numel;
        for (size_t off = 0; off < n; off += cap) {
            size_t k = std::min(cap, n - off);
            CUDA_CHECK(cudaEventSynchronize(done[which]));
            convert(pinned[which], t, off, k);
            CUDA_CHECK(cudaMemcpyAsync(dst + off, pinned[which], k * 2, cudaMemcpyHostToDevice, s));
            CUDA_CHECK(cudaEventRecord(done[which], s));
            which ^= 1;
        }
    }
    // Straight into (pinned) host memory: the offloaded layers.
    static void to_host(uint16_t *dst, const st_tensor *t) { convert(dst, t, 0, t->numel); }
    void finish() {
        CUDA_CHECK(cudaStreamSynchronize(s));
        for (int i = 0; i < 2; i++) { cudaFreeHost(pinned[i]); cudaEventDestroy(done[i]); }
    }
};

static const st_tensor *need(const hf_model *hm, const char *name) {
    const st_tensor *t = hf_model_tensor(hm, name);
    if (!t) die("%s: tensor %s is missing", hm->dir, name);
    return t;
}

extern "C" int cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

extern "C" backend *cuda_backend_create(const train_opts *o, const model_dims *d, const void *model,
                                        const lora_layout *l, const optim_cfg *oc, size_t max_tokens, size_t max_len) {
    if (!cuda_available()) die("--device cuda: no CUDA GPU is visible (%s)", "cudaGetDeviceCount found none");
    // The SwiGLU kernels work on column pairs (every released Qwen2 width is even).
    if (d->inter % 2) die("--device cuda: intermediate_size %zu is odd; the GPU kernels need it even (use --device cpu)",
                          d->inter);
    const hf_model *hm = (const hf_model *)model;
    cuda_ctx *c = new cuda_ctx();
    c->d = *d; c->l = l; c->oc = oc; c->recompute = o->recompute || o->offload; c->offload = o->offload;
    c->rank = o->rank; c->world = o->world ? o->world : 1;
    c->l0 = o->layer1 ? o->layer0 : 0;
    c->l1 = o->layer1 ? o->layer1 : d->layers;
    int first = c->l0 == 0, last = c->l1 == d->layers;
    int ndev = 0;
    CUDA_CHECK(cudaGetDeviceCount(&ndev));
    if (o->local_rank >= ndev)
        die("rank %d wants GPU %d but this host shows %d GPU(s)", o->rank, o->local_rank, ndev);
    CUDA_CHECK(cudaSetDevice(o->local_rank));
    c->max_tok = max_tokens ? max_tokens : 1;
    c->max_len = max_len;
    c->qd = d->heads * d->head_dim;
    c->kvd = d->kv_heads * d->head_dim;
    c->dqkv = c->qd + 2 * c->kvd;
    // q, k, v: columns of qkv reading the first norm; gate, up: of gu reading the
    // second; o and down alone.
    c->site[SITE_QKV] = {3, {LORA_Q, LORA_K, LORA_V}, {0, c->qd, c->qd + c->kvd}, {c->qd, c->kvd, c->kvd}};
    c->site[SITE_O] = {1, {LORA_O}, {0}, {d->hidden}};
    c->site[SITE_GU] = {2, {LORA_GATE, LORA_UP}, {0, d->inter}, {d->inter, d->inter}};
    c->site[SITE_DOWN] = {1, {LORA_DOWN}, {0}, {d->hidden}};
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    const char *pe = getenv("LORAPIPE_PROFILE");
    if (pe && *pe && strcmp(pe, "0")) {
        c->prof.on = 1;
        for (int i = 0; i < PROF_EVENTS; i++) CUDA_CHECK(cudaEventCreate(&c->prof.ev[i]));
    }
    size_t C = d->hidden, F = d->inter, V = d->vocab, L = d->layers, N = c->max_tok, r = l->r;

    // Weights.
    // Lean mode (recompute) keeps an untied embedding table in host memory:
    // a lookup needs only this batch's rows, and the table is 1 GiB at 7B.
    int embed_on_host = c->recompute && !d->tied;
    const char *lf = getenv("LORAPIPE_LORA"), *ak = getenv("LORAPIPE_ATTENTION");
    // The fused kernels read pairs of columns: every LoRA input width must be even.
    c->lora_fused = lora_fused_rank_ok(r) && d->hidden % 2 == 0 && d->head_dim % 2 == 0 &&
                    !(lf && !strcmp(lf, "gemm"));
    c->att_force_kernel = ak && !strcmp(ak, "kernel");
    c->att_force_gemm = ak && !strcmp(ak, "gemm");
    mem_plan_in mi = {d, r, l->on, N, c->max_len, c->recompute, o->lora_dropout > 0, c->lora_fused, c->att_force_kernel,
                      c->offload, c->l0, c->l1};
    mem_plan_compute(&c->plan, &mi);
    c->weights.init("weights", c->plan.weights);
    uploader up;
    up.init(c->stream, 256u << 20);
    // A pipeline stage holds the embedding only when first, the head only when last.
    if (first && embed_on_host) {
        c->embed_host = need(hm, "model.embed_tokens.weight");
        CUDA_CHECK(cudaHostAlloc((void **)&c->embed_stage, c->max_tok * C * 2, cudaHostAllocDefault));
    } else if (first) {
        c->embed = c->weights.take<bfh>(V * C);
        up.put(c->embed, need(hm, "model.embed_tokens.weight"));
    }
    if (last) {
        if (d->tied && first) c->lm_head = c->embed;
        else {
            c->lm_head = c->weights.take<bfh>(V * C);
            up.put(c->lm_head, need(hm, d->tied ? "model.embed_tokens.weight" : "lm_head.weight"));
        }
        c->norm_f = c->weights.take<bfh>(C);
        up.put(c->norm_f, need(hm, "model.norm.weight"));
    }
    c->lw.resize(L);
    char name[160];
    // Device layer blocks: one per layer, or with offload two slots whose
    // layout the host blocks copy (same offsets, layer_bytes apart).
    size_t SL = c->l1 - c->l0;
    size_t nblocks = c->offload ? std::min<size_t>(2, SL) : SL;
    for (size_t i = c->l0; i < c->l0 + nblocks; i++) {
        layer_w *w = &c->lw[i];
        w->w_qkv = c->weights.take<bfh>(c->dqkv * C);
        w->b_qkv = c->weights.take<bfh>(c->dqkv);
        w->w_o = c->weights.take<bfh>(C * c->qd);
        w->w_gu = c->weights.take<bfh>(2 * F * C);
        w->w_d = c->weights.take<bfh>(C * F);
        w->ln1 = c->weights.take<bfh>(C);
        w->ln2 = c->weights.take<bfh>(C);
    }
    if (c->offload) {
        c->layer_bytes = c->plan.layer_bytes;
        // Layer i computes in slot i % 2: the block made for l0 (or l0 + 1) of the same parity.
        for (int s2 = 0; s2 < 2; s2++) {
            c->slot_base[s2] = (uint8_t *)c->lw[c->l0 + (((size_t)s2 ^ c->l0) & 1) % nblocks].w_qkv;
            c->slot_layer[s2] = -1;
        }
        ptrdiff_t gap = c->slot_base[1] - c->slot_base[0];
        if (nblocks == 2 && gap != (ptrdiff_t)c->layer_bytes && gap != -(ptrdiff_t)c->layer_bytes)
            die_at(__FILE__, __LINE__, "layer slots are not %zu bytes apart", c->layer_bytes);
        for (size_t i = c->l0 + nblocks; i < c->l1; i++) c->lw[i] = c->lw[c->l0 + ((i - c->l0) & 1)];
        CUDA_CHECK(cudaHostAlloc((void **)&c->host_layers, SL * c->layer_bytes, cudaHostAllocDefault));
        CUDA_CHECK(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
        for (int s2 = 0; s2 < 2; s2++) {
            CUDA_CHECK(cudaEventCreateWithFlags(&c->slot_ready[s2], cudaEventDisableTiming));
            CUDA_CHECK(cudaEventCreateWithFlags(&c->slot_free[s2], cudaEventDisableTiming));
        }
    }
    for (size_t i = c->l0; i < c->l1; i++) {
        layer_w *w = &c->lw[i];
#define T(suffix) (snprintf(name, sizeof name, "model.layers.%zu.%s", i, suffix), need(hm, name))
        // put: straight to the device; with offload into layer i's host block at the slot's offsets
        auto put = [&](bfh *dst, const st_tensor *t) {
            if (!c->offload) { up.put(dst, t); return; }
            size_t off = (size_t)((uint8_t *)dst - c->slot_base[i & 1]);
            uploader::to_host((uint16_t *)(c->host_layers + (i - c->l0) * c->layer_bytes + off), t);
        };
        put(w->w_qkv, T("self_attn.q_proj.weight"));
        put(w->w_qkv + c->qd * C, T("self_attn.k_proj.weight"));
        put(w->w_qkv + (c->qd + c->kvd) * C, T("self_attn.v_proj.weight"));
        put(w->b_qkv, T("self_attn.q_proj.bias"));
        put(w->b_qkv + c->qd, T("self_attn.k_proj.bias"));
        put(w->b_qkv + c->qd + c->kvd, T("self_attn.v_proj.bias"));
        put(w->w_o, T("self_attn.o_proj.weight"));
        put(w->w_gu, T("mlp.gate_proj.weight"));
        put(w->w_gu + F * C, T("mlp.up_proj.weight"));
        put(w->w_d, T("mlp.down_proj.weight"));
        put(w->ln1, T("input_layernorm.weight"));
        put(w->ln2, T("post_attention_layernorm.weight"));
#undef T
    }
    up.finish();
    {   // RoPE frequencies in fp32, as transformers computes them
        std::vector<float> inv(d->head_dim / 2);
        for (size_t i = 0; i < inv.size(); i++)
            inv[i] = 1.0f / powf((float)d->rope_theta, (float)(2 * i) / (float)d->head_dim);
        c->inv_freq = c->weights.take<float>(inv.size());
        CUDA_CHECK(cudaMemcpy(c->inv_freq, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
    }

    // LoRA state.
    size_t P = l->n_params, nt = l->n_tensors;
    c->lora.init("lora", c->plan.lora);
    c->params = c->lora.take<float>(P); c->grads = c->lora.take<float>(P);
    c->mom1 = c->lora.take<float>(P); c->mom2 = c->lora.take<float>(P);
    c->params_bf = c->lora.take<bfh>(P);
    c->tensor_off_host = lora_tensor_offsets(l);
    c->tensor_off_dev = c->lora.take<size_t>(nt + 1);
    CUDA_CHECK(cudaMemcpy(c->tensor_off_dev, c->tensor_off_host, (nt + 1) * sizeof(size_t), cudaMemcpyHostToDevice));
    c->sumsq = c->lora.take<float>(nt ? nt : 1);

    // Activations: every layer's input, plus the rest per layer (or one shared set with recompute).
    size_t H = d->heads, nsets = c->recompute ? 1 : SL;
    c->acts.init("activations", c->plan.activations);
    c->x_layers = c->acts.take<bfh>((SL + 1) * N * C);
    c->la.resize(nsets);
    for (size_t i = 0; i < nsets; i++) {
        layer_acts *a = &c->la[i];
        a->ln1 = c->acts.take<bfh>(N * C); a->qkv = c->acts.take<bfh>(N * c->dqkv);
        a->att = c->acts.take<bfh>(N * c->qd); a->x_mid = c->acts.take<bfh>(N * C);
        a->ln2 = c->acts.take<bfh>(N * C); a->gu = c->acts.take<bfh>(N * 2 * F); a->act = c->acts.take<bfh>(N * F);
        a->rstd1 = c->acts.take<float>(N); a->lse = c->acts.take<float>(H * N); a->rstd2 = c->acts.take<float>(N);
        for (int m = 0; m < LORA_NMOD; m++) a->t[m] = l->on[m] ? c->acts.take<bfh>(N * r) : nullptr;
    }

    // Workspace; the logits chunk is the one large buffer, sized by memory mode.
    c->logit_rows = c->plan.logit_rows;
    size_t wsb = MEM_CUBLAS_WS, maxIF = std::max(std::max(C, F), c->qd);
    size_t drop_n = o->lora_dropout > 0 && !c->lora_fused ? N * maxIF : 1;
    static_assert(LORA_GMAX == MEM_LORA_GROUP, "the memory plan sizes the LoRA group scratch");
    size_t da_n = c->lora_fused ? mem_lora_da_floats(N, r, LORA_GMAX * maxIF) : 1;
    c->work.init("workspace", c->plan.workspace);
    c->lnf = c->work.take<bfh>(N * C); c->rstdf = c->work.take<float>(N);
    c->dres = c->work.take<bfh>(N * C); c->dln = c->work.take<bfh>(N * C);
    c->dqkv_buf = c->work.take<bfh>(N * c->dqkv); c->datt = c->work.take<bfh>(N * c->qd);
    c->dact = c->work.take<bfh>(N * F); c->dgu = c->work.take<bfh>(N * 2 * F);
    c->drop = c->work.take<bfh>(drop_n);
    c->hc = c->work.take<bfh>(c->logit_rows * C); c->logits = c->work.take<bfh>(c->logit_rows * V);
    c->dt = c->work.take<bfh>(LORA_GMAX * N * r); c->delta = c->work.take<float>(H * N); c->row_loss = c->work.take<float>(N);
    c->loss_sum = c->work.take<float>(1);
    c->ids = c->work.take<int32_t>(N); c->pos = c->work.take<int32_t>(N); c->seq = c->work.take<int32_t>(N + 1);
    c->qblocks = c->work.take<int32_t>(2 * (2 * N + 64)); c->trow = c->work.take<int32_t>(N);
    c->ttok = c->work.take<int32_t>(N);
    c->da_part = c->work.take<float>(da_n);
    c->dq = c->dqkv_buf;
    // A shared prefix borrows the MLP's gradient buffers for the attention's
    // spread-out operands (attention_bwd): they must be wide enough.
    if (o->share_prefix) {
        c->share_ok = c->l0 == 0 && c->l1 == L && 2 * F >= c->dqkv && F >= c->qd && C >= c->qd;
        if (!c->share_ok && o->rank == 0)
            fprintf(stderr, "train: --share-prefix is off: %s\n", c->l0 > 0 || c->l1 < L
                    ? "not with pipeline stages" : "this model's layer widths leave no room for its scratch");
    }
    if (c->share_ok) {
        CUDA_CHECK(cudaMalloc((void **)&c->expand_idx, 2 * N * sizeof(int32_t)));
        c->compress_idx = c->expand_idx + N;
        CUDA_CHECK(cudaHostAlloc((void **)&c->h_share, 2 * N * sizeof(int32_t), cudaHostAllocDefault));
    }
    c->gemm = gemm_create(wsb, c->stream);
    // Attention tiles: the largest this run's micro-batches could need, within a budget
    // (long sequences fall back to the streaming kernels, which need none).
    c->att_ws_bytes = c->plan.attention ? c->plan.attention - arena_round(N * sizeof(int32_t)) : 0;
    if (c->att_ws_bytes) {
        CUDA_CHECK(cudaMalloc(&c->att_ws, c->att_ws_bytes));
        CUDA_CHECK(cudaMalloc((void **)&c->tok_seq, N * sizeof(int32_t)));
    }
    if (c->world > 1 && o->stages > 1) {
        // Pipeline stages: host collectives, with direct links to the neighbouring stages.
        char settings[512];
        snprintf(settings, sizeof settings, "backend=cuda model=L%zu/H%zu/V%zu lora-r=%zu stages=%s", d->layers,
                 d->hidden, d->vocab, r, o->stage_bounds);
        host_comm_cfg hc = {};
        hc.rank = o->rank; hc.world = o->world; hc.rdzv_file = o->rdzv_file; hc.master_addr = o->master_addr;
        hc.master_port = o->master_port; hc.arena_floats = l->n_params; hc.settings = settings;
        hc.out_dir = o->out_dir; hc.p2p_peers = o->stage_peers; hc.n_p2p_peers = (size_t)o->n_stage_peers;
        c->hcomm = host_comm_open(&hc);
        CUDA_CHECK(cudaHostAlloc((void **)&c->grads_host, P * sizeof(float), cudaHostAllocDefault));
        c->own_only = o->own_only;
        c->own_lo = o->own_lo;
        c->own_hi = o->own_hi;
    } else if (c->world > 1) {
        nccl_init(c, o);
    }
    warm_gemms(c);
    c->h_stage_n = 2 * N + (N + 1) + 2 * (2 * N + 64) + 2 * N;
    CUDA_CHECK(cudaHostAlloc((void **)&c->h_stage, c->h_stage_n * 4, cudaHostAllocDefault));

    if (o->memory_cap) {   // the plan's cap: refuse to run past it rather than squeeze a neighbour
        size_t fr, tot;
        CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
        char u[32], k[32];
        if (tot - fr > o->memory_cap)
            die("GPU %d: %s in use exceeds the plan's memory cap of %s (run shard-plan with a larger --memory-cap, "
                "or --recompute on)", o->local_rank, fmt_bytes((double)(tot - fr), u, sizeof u),
                fmt_bytes((double)o->memory_cap, k, sizeof k));
    }
    backend *b = (backend *)xcalloc(1, sizeof *b);
    b->name = "cuda";
    b->ctx = c;
    b->set_state = cu_set_state; b->get_state = cu_get_state; b->zero_grads = cu_zero_grads; b->get_grads = cu_get_grads;
    b->micro_step = cu_micro_step; b->eval_loss = cu_eval_loss; b->reduce_grads = cu_reduce_grads;
    b->allreduce = cu_allreduce;
    b->grad_norm = cu_grad_norm; b->adamw = cu_adamw; b->report = cu_report; b->destroy = cu_destroy;
    b->stage_elt = 2; b->stage_step = cu_stage_step; b->comm = cu_comm; b->begin_step = cu_begin_step;
    b->host_alloc = cu_host_alloc; b->host_free = cu_host_free;
    return b;
}

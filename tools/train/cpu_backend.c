// tools/train/cpu_backend.c: the CPU reference backend. Frozen weights are
// converted once to fp32 (one arena); LoRA parameters, gradients and AdamW
// moments are four fp32 arenas of the lib/lora.h layout. Data-parallel CPU
// ranks sum their gradients through host_comm (TCP, rank 0 in the middle).
#include "train.h"
#include "host_comm.h"
#include "arena.h"
#include "check.h"
#include "gemm.h"
#include "hf_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    cpu_model m;
    const lora_layout *l;
    const optim_cfg *oc;
    arena weights, lora;       // frozen fp32 weights; params | grads | m | v
    float *params, *grads, *mom1, *mom2;
    size_t *tensor_off;        // (n_tensors + 1) arena offsets of each LoRA tensor
    size_t act_bytes;
    host_comm *comm;           // data-parallel ranks; NULL on one rank
    size_t step;               // the optimizer step under way (1-based; 0 before the first)
    size_t layer0, layer1;     // the layers this rank holds (a pipeline stage; all of them otherwise)
    int rank;
    int own_only;              // one replica of stages: train_opts' own_lo / own_hi below
    size_t own_lo, own_hi;
} cpu_ctx;

static const float *load(cpu_ctx *c, const hf_model *hm, const char *name) {
    const st_tensor *t = hf_model_tensor(hm, name);
    if (!t) die("%s: tensor %s is missing", hm->dir, name);
    float *dst = arena_floats(&c->weights, t->numel);
    hf_tensor_to_f32(t, dst);
    return dst;
}

static void set_state(backend *b, const float *p, const float *m, const float *v) {
    cpu_ctx *c = b->ctx;
    size_t n = c->l->n_params * sizeof(float);
    memcpy(c->params, p, n);
    if (m) memcpy(c->mom1, m, n); else memset(c->mom1, 0, n);
    if (v) memcpy(c->mom2, v, n); else memset(c->mom2, 0, n);
}

// dst = src, and with stage-local state every slice from its owner (a collective).
static void gather(cpu_ctx *c, float *dst, const float *src, const char *what) {
    memcpy(dst, src, c->l->n_params * sizeof(float));
    if (c->own_only) host_comm_gather_slices(c->comm, dst, c->l->n_params, c->own_lo, c->own_hi, what);
}

static void get_state(backend *b, float *p, float *m, float *v) {
    cpu_ctx *c = b->ctx;
    if (p) gather(c, p, c->params, "gathering the stages' parameters");
    if (m) gather(c, m, c->mom1, "gathering the stages' optimizer state");
    if (v) gather(c, v, c->mom2, "gathering the stages' optimizer state");
}

static void zero_grads(backend *b) {
    cpu_ctx *c = b->ctx;
    memset(c->grads, 0, c->l->n_params * sizeof(float));
}

static void get_grads(backend *b, float *g) {
    cpu_ctx *c = b->ctx;
    gather(c, g, c->grads, "gathering the stages' gradients");
}

static double micro_step(backend *b, const micro_batch *mb, float inv_n, dropout_cfg drop) {
    cpu_ctx *c = b->ctx;
    return cpu_forward_backward(&c->m, c->l, c->params, c->grads, mb, inv_n, drop);
}

static double stage_step(backend *b, const micro_batch *mb, const void *x_in, void *x_out, const void *dx_out,
                         void *dx_in, float inv_n, dropout_cfg drop, int grad) {
    cpu_ctx *c = b->ctx;
    cpu_stage st = {c->layer0, c->layer1, x_in, x_out, dx_out, dx_in};
    return cpu_stage_run(&c->m, c->l, c->params, grad ? c->grads : NULL, mb, inv_n, drop, &st);
}

static host_comm *comm_of(backend *b) { return ((cpu_ctx *)b->ctx)->comm; }

static double eval_loss(backend *b, const micro_batch *mb) {
    cpu_ctx *c = b->ctx;
    return cpu_forward_loss(&c->m, c->l, c->params, mb);
}

static void begin_step(backend *b, size_t step) {
    cpu_ctx *c = b->ctx;
    c->step = step;
    if (c->comm) host_comm_set_step(c->comm, step);
}

static void reduce_grads(backend *b) {
    cpu_ctx *c = b->ctx;
    if (c->comm && !c->own_only) host_comm_allreduce_f32(c->comm, c->grads, c->l->n_params, "the gradient all-reduce");
}

static void allreduce(backend *b, double *v, size_t n) {
    cpu_ctx *c = b->ctx;
    // Before the first step the loop only checks that the ranks agree on where to start.
    if (c->comm) host_comm_allreduce_f64(c->comm, v, n, c->step ? "the loss all-reduce" : "the start-up check of the resume step");
}

static double grad_norm(backend *b) {
    cpu_ctx *c = b->ctx;
    if (!c->own_only) return grad_global_norm(c->grads, c->tensor_off, c->l->n_tensors);
    // Each tensor's sum of squares lives on one stage (zeros elsewhere): summed
    // over the ranks they are the one-process values, bit for bit.
    size_t nt = c->l->n_tensors;
    float *ss = xmalloc((nt ? nt : 1) * sizeof(float));
    grad_sumsq(c->grads, c->tensor_off, nt, ss);
    host_comm_allreduce_f32(c->comm, ss, nt, "the gradient norm");
    double norm = grad_norm_from_sumsq(ss, nt);
    free(ss);
    return norm;
}

static void adamw(backend *b, float clip, double lr, size_t step) {
    cpu_ctx *c = b->ctx;
    // A stage updates its own slice only (the rest is other stages' business).
    size_t lo = c->own_only ? c->own_lo : 0, hi = c->own_only ? c->own_hi : c->l->n_params;
    adamw_step(c->params + lo, c->grads + lo, c->mom1 + lo, c->mom2 + lo, hi - lo, clip, lr, c->oc, step);
}

static void report(backend *b) {
    cpu_ctx *c = b->ctx;
    char w[32], l[32], a[32];
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    char who[64] = "";
    if (c->layer0 > 0 || c->layer1 < c->m.d.layers)
        snprintf(who, sizeof who, "rank %d (layers %zu-%zu) ", c->rank, c->layer0, c->layer1 - 1);
    fprintf(stderr, "train: %smemory: frozen weights %s (fp32), LoRA state %s, activations up to %s; "
            "%d thread(s), GEMM: %s\n", who, fmt_bytes((double)c->weights.used, w, sizeof w),
            fmt_bytes((double)c->lora.cap, l, sizeof l), fmt_bytes((double)c->act_bytes, a, sizeof a), threads,
            gemm_backend());
}

static void destroy(backend *b) {
    cpu_ctx *c = b->ctx;
    host_comm_close(c->comm);
    arena_free(&c->weights);
    arena_free(&c->lora);
    cpu_model_release();
    free(c->m.layer);
    free(c->m.inv_freq);
    free(c->tensor_off);
    free(c);
    free(b);
}

// What every rank must share for a sum of their gradients to mean anything: the
// model's shape, the LoRA layout and the optimiser (the step count stands for the
// data and accum; data paths may differ between hosts).
static void comm_settings(char *buf, size_t n, const train_opts *o, const model_dims *d, const lora_layout *l,
                          const optim_cfg *oc) {
    char tg[128] = "";
    for (int m = 0; m < LORA_NMOD; m++)
        if (l->on[m]) { strcat(tg, tg[0] ? "," : ""); strcat(tg, lora_module_name(m)); }
    snprintf(buf, n, "model=L%zu/H%zu/F%zu/V%zu/heads%zu:%zu/tied%d lora-r=%zu lora-alpha=%g rslora=%d target=%s "
             "lora-dropout=%g lr=%g schedule=%s warmup=%zu steps=%zu weight-decay=%g max-grad-norm=%g betas=%g,%g "
             "eps=%g seed=%u stages=%s", d->layers, d->hidden, d->inter, d->vocab, d->heads, d->kv_heads, d->tied,
             l->r, l->alpha, l->rslora, tg, o->lora_dropout, oc->lr, sched_name(oc->sched), oc->warmup_steps,
             oc->total_steps, oc->weight_decay, oc->max_grad_norm, oc->beta1, oc->beta2, oc->eps, o->seed,
             o->stages > 1 ? o->stage_bounds : "1");
}

backend *cpu_backend_create(const train_opts *o, const model_dims *d, const void *model, const lora_layout *l,
                            const optim_cfg *oc, size_t max_tokens, size_t max_len) {
    const hf_model *hm = model;
    if (o->share_prefix && o->rank == 0 && !o->quiet)
        fprintf(stderr, "train: --share-prefix is a CUDA option; the CPU reference computes every row\n");
    cpu_ctx *c = xcalloc(1, sizeof *c);
    c->l = l;
    c->oc = oc;
    c->m.d = *d;
    // A pipeline stage converts only what it computes with: its layers, the
    // embedding on the first stage, the final norm and lm_head on the last.
    c->rank = o->rank;
    c->layer0 = o->layer1 ? o->layer0 : 0;
    c->layer1 = o->layer1 ? o->layer1 : d->layers;
    int first = c->layer0 == 0, last = c->layer1 == d->layers;
    // Size the weight arena from the tensors it will hold (at most all of them).
    size_t total = 0;
    for (size_t i = 0; i < hm->n; i++) total += arena_round(hm->by_name[i]->numel * sizeof(float));
    if (d->tied && !first) total += arena_round(d->vocab * d->hidden * sizeof(float));   // a tied head's own copy
    arena_init(&c->weights, "weights", total);
    char name[128];
    if (first) c->m.embed = load(c, hm, "model.embed_tokens.weight");
    if (last) {
        c->m.lm_head = d->tied ? (first ? c->m.embed : load(c, hm, "model.embed_tokens.weight")) : load(c, hm, "lm_head.weight");
        c->m.norm_f = load(c, hm, "model.norm.weight");
    }
    c->m.layer = xcalloc(d->layers, sizeof(cpu_layer));
    for (size_t i = c->layer0; i < c->layer1; i++) {
        cpu_layer *w = &c->m.layer[i];
#define W(field, suffix) (snprintf(name, sizeof name, "model.layers.%zu.%s", i, suffix), w->field = load(c, hm, name))
        W(ln1, "input_layernorm.weight"); W(ln2, "post_attention_layernorm.weight");
        W(wq, "self_attn.q_proj.weight"); W(bq, "self_attn.q_proj.bias");
        W(wk, "self_attn.k_proj.weight"); W(bk, "self_attn.k_proj.bias");
        W(wv, "self_attn.v_proj.weight"); W(bv, "self_attn.v_proj.bias");
        W(wo, "self_attn.o_proj.weight");
        W(wg, "mlp.gate_proj.weight"); W(wu, "mlp.up_proj.weight"); W(wd, "mlp.down_proj.weight");
#undef W
    }
    cpu_model_init_rope(&c->m);
    arena_init(&c->lora, "lora", 4 * arena_round(l->n_params * sizeof(float)));
    c->params = arena_floats(&c->lora, l->n_params);
    c->grads = arena_floats(&c->lora, l->n_params);
    c->mom1 = arena_floats(&c->lora, l->n_params);
    c->mom2 = arena_floats(&c->lora, l->n_params);
    c->tensor_off = lora_tensor_offsets(l);
    c->act_bytes = cpu_activation_bytes(d, l, max_tokens, max_len);
    if (o->world > 1) {
        char settings[1024];
        comm_settings(settings, sizeof settings, o, d, l, oc);
        // A stage talks to its neighbours in the replica directly.
        host_comm_cfg hc = {.rank = o->rank, .world = o->world, .rdzv_file = o->rdzv_file,
                            .master_addr = o->master_addr, .master_port = o->master_port,
                            .arena_floats = l->n_params, .settings = settings, .out_dir = o->out_dir,
                            .p2p_peers = o->stage_peers, .n_p2p_peers = (size_t)o->n_stage_peers};
        c->comm = host_comm_open(&hc);
        c->own_only = o->own_only;
        c->own_lo = o->own_lo;
        c->own_hi = o->own_hi;
    }
    backend *b = xcalloc(1, sizeof *b);
    *b = (backend){.name = "cpu", .ctx = c, .set_state = set_state, .get_state = get_state, .zero_grads = zero_grads, .get_grads = get_grads,
                   .micro_step = micro_step, .eval_loss = eval_loss, .begin_step = begin_step, .reduce_grads = reduce_grads,
                   .allreduce = allreduce,
                   .grad_norm = grad_norm, .adamw = adamw, .report = report, .destroy = destroy,
                   .stage_elt = sizeof(float), .stage_step = stage_step, .comm = comm_of};
    return b;
}

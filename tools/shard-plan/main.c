// tools/shard-plan/main.c: where a training run goes: how many data-parallel
// replicas, which layers on which GPU, recompute or not, and how much memory
// each GPU will hold, predicted with the trainer's own arena formulas
// (lib/mem_plan.c). Writes the placement file train --plan reads
// (docs/FORMATS.md), explains its choice on stderr, and refuses what cannot
// fit with the smallest memory that would work.
#include "plan.h"
#include "atomic_out.h"
#include "check.h"
#include "hf_config.h"
#include "mem_plan.h"
#include "pack.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef LORAPIPE_CUDA
#include <cuda_runtime_api.h>
#endif

static void usage(FILE *f) {
    fprintf(f,
"usage: shard-plan --model DIR [--gpus SPEC] [--pack FILE] [-o plan.json] [options]\n"
"       shard-plan --check plan.json\n"
"\n"
"Plans a LoRA training run over the GPUs at hand: data-parallel replicas, the layers each\n"
"GPU holds (pipeline stages where one replica does not fit one GPU), recompute, and the\n"
"memory every GPU will need (frozen weights, LoRA and optimizer state, activations,\n"
"workspace, logits chunk), predicted with the trainer's own arena sizes. Picks the\n"
"fastest plan that fits and says why on stderr; refuses, naming the smallest memory that\n"
"would work, when nothing fits. Writes JSON (docs/FORMATS.md) for train --plan; stdout\n"
"unless -o.\n"
"\n"
"  --model DIR|config.json  the model (only its config.json is read)\n"
"  --gpus SPEC              auto (default: the CUDA GPUs visible), or a list such as\n"
"                           2x24GiB, 1x80GB,1x40GB (a size per GPU)\n"
"  --memory-cap SIZE        use at most SIZE on each GPU (enforced by train)\n"
"  --pack FILE              the training pack: its largest micro-batch and sequence\n"
"  --tokens N               micro-batch tokens when no pack is given (default 2048)\n"
"  --max-len N              longest sequence when no pack is given (default 2048)\n"
"  --accum N                micro-batches per optimizer step (default: the pack's)\n"
"  --lora-r N               LoRA rank (default 8)\n"
"  --target LIST            LoRA targets (default q_proj,k_proj,v_proj,o_proj)\n"
"  --lora-dropout P         (default 0.1)\n"
"  --recompute auto|on|off  recompute activations in the backward pass (default auto:\n"
"                           only when the fast setting does not fit; where recompute alone\n"
"                           does not fit either, the frozen layers stay in host memory and\n"
"                           stream through two device slots: host offload)\n"
"  --replicas N             force N data-parallel replicas\n"
"  --stages N               force N pipeline stages per replica (default: 1 where one\n"
"                           replica fits one GPU, otherwise the fastest count that fits,\n"
"                           or host offload where that is faster; stages that stream\n"
"                           their own layers from host memory where nothing else fits)\n"
"  --check FILE             load and check a placement file as train --plan does; print\n"
"                           a one-line JSON summary (replicas, stages, bounds, GPU per rank)\n"
"  -o, --output FILE        write the plan here (atomically)\n"
"  --help                   this text\n"
"\n"
"exit status: 0 planned, 1 nothing fits or bad input, 2 usage.\n");
}

typedef struct { char name[300]; unsigned long long bytes; } gpu;

static size_t parse_gpus(const char *spec, gpu **out) {
    size_t n = 0, cap = 0;
    gpu *g = NULL;
    char *s = xstrdup(spec), *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long count = 1;
        char *x = strchr(tok, 'x');
        const char *size = tok;
        if (x) {
            char *end;
            count = strtoul(tok, &end, 10);
            if (end != x || count == 0 || count > 4096) die_usage("--gpus: bad count in '%s' (expected NxSIZE)", tok);
            size = x + 1;
        }
        unsigned long long b;
        if (parse_size(size, &b) || b == 0) die_usage("--gpus: bad size '%s' (e.g. 24GiB, 80GB)", size);
        for (unsigned long i = 0; i < count; i++) {
            g = xgrow(g, &cap, n + 1, sizeof *g);
            snprintf(g[n].name, sizeof g[n].name, "GPU with %s", size);
            g[n++].bytes = b;
        }
    }
    free(s);
    if (!n) die_usage("--gpus: empty list");
    *out = g;
    return n;
}

static size_t detect_gpus(gpu **out) {
#ifdef LORAPIPE_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) return 0;
    gpu *g = xcalloc((size_t)n, sizeof *g);
    for (int i = 0; i < n; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) die("cannot query CUDA GPU %d", i);
        snprintf(g[i].name, sizeof g[i].name, "%s", p.name);
        g[i].bytes = p.totalGlobalMem;
    }
    *out = g;
    return (size_t)n;
#else
    (void)out;
    return 0;
#endif
}

static json_t *mem_json(const mem_plan *m, unsigned long long context) {
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                     "frozen_weights", (json_int_t)m->weights, "lora_optimizer", (json_int_t)m->lora,
                     "activations", (json_int_t)m->activations,
                     "workspace", (json_int_t)(m->workspace - m->logits), "logits_chunk", (json_int_t)m->logits,
                     "logits_chunk_rows", (json_int_t)m->logit_rows,
                     "attention_tiles", (json_int_t)m->attention, "cublas_workspace", (json_int_t)m->cublas,
                     "allocated", (json_int_t)m->total, "cuda_context_estimate", (json_int_t)context,
                     "total", (json_int_t)(m->total + context));
}

// Pipeline stages. Work per token in forward-units of one layer (a layer's
// forward pass; a backward pass counts two): a stage before the last runs each
// micro-batch forward to send it on, then again with activations saved and
// backward (4 units per layer, 5 with recompute); the last stage runs forward,
// loss and backward once (3, 4 with recompute, as one whole-model GPU does) and
// the head (vocab x hidden x 6 FLOP per token, in layer-equivalents). The units
// are turned into seconds so that a single stage gives the one-GPU prediction.
#define PIPE_LINK_BPS 10e9   // activations between stages go through host memory (bf16, each way)
// Stage counts tried without --stages: past this, fill and drain dwarf any gain (and the
// cut search, stages x layers^2, stays instant for every config hf_config accepts).
#define PIPE_MAX_AUTO_STAGES 64

typedef struct {
    size_t L;
    int lean, offload;                            // offload: each stage streams its layers from host memory
    double link_unit;                             // with offload: the host link's units per layer and micro-batch
    double unit_first, unit_last, head;           // forward-units per layer, the head's units
    double sec_per_unit_token;                    // seconds per forward-unit of one layer per token
    mem_plan *m[4];                               // [role][n layers]: role 0 middle, 1 first, 2 last, 3 both
} stage_model;

// kind: 0 fast, 1 lean (recompute), 2 lean with each stage's layers streamed from host memory.
static void stage_model_init(stage_model *sm, const model_dims *d, const mem_plan_in *base, int kind) {
    memset(sm, 0, sizeof *sm);
    size_t L = d->layers;
    int lean = kind > 0;
    sm->L = L;
    sm->lean = lean;
    sm->offload = kind == 2;
    sm->unit_first = lean ? 5 : 4;
    sm->unit_last = lean ? 4 : 3;
    double params = plan_parameter_count(d), C = (double)d->hidden, V = (double)d->vocab;
    double layer = (params - V * C * (d->tied ? 1 : 2) - C) / (double)L;
    sm->head = 3.0 * V * C / layer;
    double t_token = (lean ? 6.0 : 4.0) * params / (lean ? PLAN_RATE_LEAN : PLAN_RATE_FAST);
    sm->sec_per_unit_token = t_token / (sm->unit_last * (double)L + sm->head);
    mem_plan_in in = *base;
    in.recompute = lean;
    in.offload = sm->offload;
    for (int role = 0; role < 4; role++) {
        sm->m[role] = xcalloc(L + 1, sizeof(mem_plan));
        for (size_t n = 1; n <= L; n++) {
            int first = role & 1, last = role & 2;
            if ((first && last) != (n == L)) continue;       // a stage of every layer is both
            if (!first && !last && n + 2 > L) continue;      // a middle stage leaves a layer each side
            in.layer0 = first ? 0 : last ? L - n : 1;
            in.layer1 = in.layer0 + n;
            mem_plan_compute(&sm->m[role][n], &in);
        }
    }
    // Offload: every layer crosses the host link twice per micro-batch (forward,
    // then recompute + backward), each stage over its own GPU's link.
    if (sm->offload && sm->m[3][L].layer_bytes)
        sm->link_unit = 2.0 * (double)sm->m[3][L].layer_bytes / PLAN_HOST_LINK_BPS /
                        ((double)base->max_tokens * sm->sec_per_unit_token);
}

static void stage_model_free(stage_model *sm) {
    for (int role = 0; role < 4; role++) free(sm->m[role]);
}

static int stage_role(size_t s, size_t S) { return (s == 0) | (s + 1 == S ? 2 : 0); }

static double stage_units(const stage_model *sm, int role, size_t n) {
    double u = (role & 2) ? (double)n * sm->unit_last + sm->head : (double)n * sm->unit_first;
    double link = (double)n * sm->link_unit;   // 0 without offload
    return link > u ? link : u;
}

// Cut L layers into S stages: the least worst-stage work (by_memory: the least
// worst-stage memory) among cuts whose every stage fits avail bytes with the
// context. Writes bounds (S + 1 entries); INFINITY when no cut fits.
static double cut_stages(const stage_model *sm, size_t S, int by_memory, unsigned long long avail,
                         unsigned long long ctx, size_t *bounds) {
    size_t L = sm->L;
    if (S == 0 || S > L) return INFINITY;
    double *best = xmalloc((S + 1) * (L + 1) * sizeof *best);
    size_t *from = xcalloc((S + 1) * (L + 1), sizeof *from);
    for (size_t i = 0; i < (S + 1) * (L + 1); i++) best[i] = INFINITY;
    best[0] = 0;
    // best[s][l]: stages 0..s-1 over layers [0, l).
    for (size_t s = 1; s <= S; s++) {
        int role = stage_role(s - 1, S);
        size_t lo = s, hi = s == S ? L : L - (S - s);
        for (size_t l = lo; l <= hi; l++) {
            if (s == S && l != L) continue;
            for (size_t j = s - 1; j < l; j++) {
                double prev = best[(s - 1) * (L + 1) + j];
                if (prev == INFINITY) continue;
                const mem_plan *m = &sm->m[role][l - j];
                unsigned long long need = m->total + ctx;
                if (!m->total || need > avail) continue;
                double c = by_memory ? (double)need : stage_units(sm, role, l - j);
                double w = c > prev ? c : prev;
                if (w < best[s * (L + 1) + l]) {
                    best[s * (L + 1) + l] = w;
                    from[s * (L + 1) + l] = j;
                }
            }
        }
    }
    double r = best[S * (L + 1) + L];
    if (r != INFINITY) {
        bounds[S] = L;
        for (size_t s = S, l = L; s > 0; s--) l = bounds[s - 1] = from[s * (L + 1) + l];
    }
    free(best);
    free(from);
    return r;
}

typedef struct {
    size_t S, replicas;
    int lean;
    size_t *bounds;
    double units_max, tps;
    const stage_model *sm;
} pipe_plan;

// Replicas of an S-stage pipeline on ng GPUs: as many as fit, splitting the optimizer window evenly.
static size_t pipe_replicas(size_t ng, size_t S, size_t accum, size_t force) {
    if (force) return force * S <= ng && accum % force == 0 ? force : 0;
    size_t r = ng / S;
    while (r > 1 && accum % r) r--;
    return r;
}

// Tokens/s of a pipeline: each replica's window of accum / replicas micro-batches takes
// (micro-batches + S - 1) slots of the slowest stage (GPipe fill and drain), plus the
// activations crossing each stage boundary both ways through host memory.
static double pipe_tps(const stage_model *sm, size_t S, size_t replicas, size_t accum, size_t tokens,
                       const model_dims *d, double units_max) {
    double mb = (double)(accum / replicas);
    double slot = (double)tokens * units_max * sm->sec_per_unit_token;
    double transfer = mb * (double)(S - 1) * 2.0 * (double)tokens * (double)d->hidden * 2.0 / PIPE_LINK_BPS;
    double window = (mb + (double)S - 1) * slot + transfer;
    return (double)replicas * mb * (double)tokens / window * (replicas > 1 ? 0.95 : 1.0);
}

// The one-line summary shard-plan --check prints for a plan train would accept.
static int check_plan(const char *path) {
    plan p;
    char err[512];
    if (plan_load(&p, path, err, sizeof err)) die("%s", err);
    json_t *b = json_array(), *g = json_array();
    for (size_t s = 0; s <= p.stages; s++) json_array_append_new(b, json_integer((json_int_t)p.bounds[s]));
    for (size_t k = 0; k < p.replicas * p.stages; k++) json_array_append_new(g, json_integer(p.gpu[k]));
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:b, s:b, s:I}", "file", path, "fingerprint",
                          p.fingerprint, "replicas", (json_int_t)p.replicas, "stages", (json_int_t)p.stages,
                          "layers", (json_int_t)p.layers, "bounds", b, "gpus", g, "recompute", p.recompute,
                          "host_offload", p.offload, "accum", (json_int_t)p.accum);
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s\n", text);
    free(text);
    json_decref(o);
    plan_free(&p);
    return 0;
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    const char *model = NULL, *gpus_spec = "auto", *pack_path = NULL, *out = NULL, *targets = "q_proj,k_proj,v_proj,o_proj";
    const char *recompute = "auto";
    unsigned long long cap = 0;
    size_t tokens = 2048, max_len = 2048, accum = 0, r = 8, force_replicas = 0, force_stages = 0;
    const char *check = NULL;
    double dropout = 0.1;
    enum { O_MODEL = 256, O_GPUS, O_CAP, O_PACK, O_TOKENS, O_MAXLEN, O_ACCUM, O_R, O_TARGET, O_DROP, O_RECOMPUTE,
           O_REPLICAS, O_STAGES, O_CHECK, O_HELP };
    static const struct option opts[] = {
        {"model", 1, 0, O_MODEL}, {"gpus", 1, 0, O_GPUS}, {"memory-cap", 1, 0, O_CAP}, {"pack", 1, 0, O_PACK},
        {"tokens", 1, 0, O_TOKENS}, {"max-len", 1, 0, O_MAXLEN}, {"accum", 1, 0, O_ACCUM}, {"lora-r", 1, 0, O_R},
        {"target", 1, 0, O_TARGET}, {"lora-dropout", 1, 0, O_DROP}, {"recompute", 1, 0, O_RECOMPUTE},
        {"replicas", 1, 0, O_REPLICAS}, {"stages", 1, 0, O_STAGES}, {"check", 1, 0, O_CHECK}, {"output", 1, 0, 'o'}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_GPUS: gpus_spec = optarg; break;
        case O_CAP: if (parse_size(optarg, &cap) || !cap) die_usage("--memory-cap: bad size '%s'", optarg); break;
        case O_PACK: pack_path = optarg; break;
#define NUM(var, name) var = strtoul(optarg, &end, 10); if (*end || end == optarg || !var) die_usage(name ": expected a positive integer, got '%s'", optarg)
        case O_TOKENS: NUM(tokens, "--tokens"); break;
        case O_MAXLEN: NUM(max_len, "--max-len"); break;
        case O_ACCUM: NUM(accum, "--accum"); break;
        case O_R: NUM(r, "--lora-r"); break;
        case O_REPLICAS: NUM(force_replicas, "--replicas"); break;
        case O_STAGES: NUM(force_stages, "--stages"); break;
#undef NUM
        case O_TARGET: targets = optarg; break;
        case O_DROP: dropout = strtod(optarg, &end); if (*end || dropout < 0 || dropout >= 1) die_usage("--lora-dropout: expected [0, 1)"); break;
        case O_RECOMPUTE:
            if (strcmp(optarg, "auto") && strcmp(optarg, "on") && strcmp(optarg, "off"))
                die_usage("--recompute: expected auto, on or off");
            recompute = optarg;
            break;
        case O_CHECK: check = optarg; break;
        case 'o': out = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: die_usage("unknown option");
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (check) return check_plan(check);
    if (!model) die_usage("--model DIR is required");

    // The model's shape.
    char cfg_path[4096];
    struct stat st;
    if (stat(model, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model);
    else snprintf(cfg_path, sizeof cfg_path, "%s", model);
    hf_config cfg;
    hf_config_load_or_die(&cfg, cfg_path);
    model_dims d = plan_dims_from_config(&cfg);
    int on[LORA_NMOD];
    char err[256];
    if (lora_parse_targets(targets, on, err, sizeof err)) die_usage("--target: %s", err);

    // The data.
    if (pack_path) {
        pack_file p;
        if (pack_open_flags(&p, pack_path, PACK_OPEN_NO_ID_SCAN, err, sizeof err)) die("%s", err);
        tokens = 0;
        for (size_t b = 0; b < p.h->n_batches; b++)
            if (p.batches[b].n_tokens > tokens) tokens = p.batches[b].n_tokens;
        max_len = p.h->max_sample_len;
        if (!accum) accum = p.h->accum ? p.h->accum : 1;
        if (p.h->max_token_id >= d.vocab)
            die("%s: token id %u is outside the vocabulary of %s (%zu rows)", pack_path, p.h->max_token_id, cfg_path, d.vocab);
        pack_close(&p);
    }
    if (!accum) accum = 1;

    // The GPUs.
    gpu *g = NULL;
    size_t ng;
    if (!strcmp(gpus_spec, "auto")) {
        ng = detect_gpus(&g);
        if (!ng) die("no CUDA GPU found%s; say which GPUs to plan for with --gpus, e.g. --gpus 2x24GiB",
#ifdef LORAPIPE_CUDA
                     ""
#else
                     " (this build has no CUDA support)"
#endif
            );
    } else {
        ng = parse_gpus(gpus_spec, &g);
    }
    unsigned long long avail = ~0ULL;
    for (size_t i = 0; i < ng; i++) {
        unsigned long long b = cap && cap < g[i].bytes ? cap : g[i].bytes;
        if (b < avail) avail = b;
    }

    // Memory of one replica holding every layer, fast and lean; and, for GPUs
    // too small for that, lean with the layers streamed from host memory.
    mem_plan fast, lean, offl;
    mem_plan_in in = {&d, r, on, tokens, max_len, 0, dropout > 0, 1, 0, 0};
    mem_plan_compute(&fast, &in);
    in.recompute = 1;
    mem_plan_compute(&lean, &in);
    in.offload = 1;
    mem_plan_compute(&offl, &in);
    in.offload = 0;
    unsigned long long ctx = PLAN_CONTEXT_BYTES;
    int rec_off = !strcmp(recompute, "off"), rec_on = !strcmp(recompute, "on");
    if (force_stages > ng) die_usage("--stages %zu but only %zu GPU(s)", force_stages, ng);
    if (force_stages > d.layers) die_usage("--stages %zu but %s has only %zu layers", force_stages, cfg_path, d.layers);
    if (force_stages > 1 && force_replicas && force_replicas * force_stages > ng)
        die_usage("--replicas %zu x --stages %zu needs %zu GPUs; %zu given", force_replicas, force_stages,
                  force_replicas * force_stages, ng);
    int use_lean, use_offload = 0;
    if (rec_on) use_lean = 1;
    else if (rec_off) use_lean = 0;
    else use_lean = fast.total + ctx > avail;
    if (use_lean && lean.total + ctx > avail) use_offload = 1;
    const mem_plan *m = use_offload ? &offl : use_lean ? &lean : &fast;
    int whole_fits = m->total + ctx <= avail && !use_offload;
    double params = plan_parameter_count(&d);

    // Where one replica does not fit one GPU (or --stages asks), pipeline stages over
    // several GPUs: every stage count, fast and lean, the best cut of each.
    stage_model sms[3];   // fast, lean, lean with host offload
    int sm_ready[3] = {0, 0, 0};
    pipe_plan best = {0};
    size_t *cut = xcalloc(d.layers + 1, sizeof *cut);
    best.bounds = xcalloc(d.layers + 1, sizeof *best.bounds);
    int try_pipe = force_stages > 1 || (!force_stages && !whole_fits && ng >= 2);
    size_t s_lo = force_stages > 1 ? force_stages : 2, s_hi = force_stages > 1 ? force_stages : ng;
    if (s_hi > d.layers) s_hi = d.layers;
    if (force_stages <= 1 && s_hi > PIPE_MAX_AUTO_STAGES) s_hi = PIPE_MAX_AUTO_STAGES;
    // Stages that stream their own layers from host memory come last: only where no
    // plain cut fits and one GPU with host offload does not either (or --stages asks).
    for (int lm = 0; try_pipe && lm < 3; lm++) {
        if ((lm && rec_off) || (!lm && rec_on)) continue;
        if (lm == 2 && (best.S > 1 || (force_stages <= 1 && offl.total + ctx <= avail))) continue;
        stage_model_init(&sms[lm], &d, &in, lm);
        sm_ready[lm] = 1;
        for (size_t S = s_lo; S <= s_hi; S++) {
            size_t reps = pipe_replicas(ng, S, accum, force_replicas);
            if (!reps) continue;
            double units = cut_stages(&sms[lm], S, 0, avail, ctx, cut);
            if (units == INFINITY) continue;
            double t = pipe_tps(&sms[lm], S, reps, accum, tokens, &d, units);
            if (t > best.tps) {
                best = (pipe_plan){S, reps, lm, best.bounds, units, t, &sms[lm]};
                memcpy(best.bounds, cut, (S + 1) * sizeof *cut);
            }
        }
    }
    // Host offload, where it fits, against the fastest pipeline.
    double off_tps = 0;
    size_t off_reps = pipe_replicas(ng, 1, accum, 0);
    if (use_offload && offl.total + ctx <= avail) {
        double per_mb = 2.0 * (double)d.layers * (double)offl.layer_bytes / PLAN_HOST_LINK_BPS;
        double t_link = off_reps * (double)tokens / per_mb;
        off_tps = off_reps * PLAN_RATE_LEAN / (6.0 * params) * (off_reps > 1 ? 0.95 : 1.0);
        if (t_link < off_tps) off_tps = t_link;
    }
    int use_pipe = best.S > 1 && (force_stages > 1 || best.tps > off_tps);
    char b1[32], b2[32], b3[32];
    if (force_stages > 1 && !use_pipe) {
        // The least memory any cut into that many stages needs.
        stage_model *sm = &sms[rec_off ? 0 : sm_ready[2] ? 2 : 1];
        double need = cut_stages(sm, force_stages, 1, ~0ULL, ctx, cut);
        int reps_ok = pipe_replicas(ng, force_stages, accum, force_replicas) > 0;
        if (!reps_ok)
            die("--replicas %zu does not divide the %zu micro-batches of an optimizer step (pack --accum)",
                force_replicas, accum);
        die("%s does not fit in %zu pipeline stages: the worst stage needs %s per GPU (%s, %zu-token micro-batches) "
            "and the GPUs offer %s", cfg_path, force_stages, fmt_bytes(need, b1, sizeof b1),
            rec_off ? "without recompute" : sm->offload ? "with recompute and host offload" : "with recompute", tokens,
            fmt_bytes((double)avail, b2, sizeof b2));
    }
    if (!whole_fits && !use_pipe && !(use_offload && offl.total + ctx <= avail)) {
        // Nothing fits: the least memory that would work, stages included.
        unsigned long long need = (rec_off ? fast.total : offl.total) + ctx;
        const char *how = rec_off ? "" : " with host offload";
        size_t need_s = 0;
        int need_off = 0;
        if (ng >= 2 && !force_stages) {
            // without recompute: fast stages; otherwise lean stages, and lean stages with host offload
            for (int k = rec_off ? 0 : 1; k <= (rec_off ? 0 : 2); k++) {
                stage_model *sm = &sms[k];
                if (!sm_ready[k]) { stage_model_init(sm, &d, &in, k); sm_ready[k] = 1; }
                for (size_t S = 2; S <= ng && S <= d.layers && S <= PIPE_MAX_AUTO_STAGES; S++) {
                    if (!pipe_replicas(ng, S, accum, force_replicas)) continue;
                    double b = cut_stages(sm, S, 1, ~0ULL, ctx, cut);
                    if (b < (double)need) { need = (unsigned long long)b; need_s = S; need_off = k == 2; }
                }
            }
        }
        char howbuf[96];
        if (need_s) snprintf(howbuf, sizeof howbuf, " in %zu pipeline stages%s", need_s,
                             rec_off ? "" : need_off ? " with recompute and host offload" : " with recompute");
        die("%s does not fit: one replica needs %s per GPU (%s, %zu-token micro-batches) and the GPUs offer %s; "
            "the smallest memory that works is %s per GPU%s%s",
            cfg_path, fmt_bytes((double)(m->total + ctx), b1, sizeof b1),
            use_offload ? "recompute, layers streamed from host memory" : use_lean ? "with recompute" : "without recompute",
            tokens, fmt_bytes((double)avail, b2, sizeof b2), fmt_bytes((double)need, b3, sizeof b3),
            need_s ? howbuf : how, rec_off ? "" : "; smaller micro-batches need still less");
    }

    size_t replicas, stages = 1;
    double tps;
    // Per stage of a replica: its memory (the whole model's when one stage).
    size_t *bounds = xcalloc(d.layers + 1, sizeof *bounds);
    mem_plan *sm_mem = NULL;
    const mem_plan *worst = m;
    fprintf(stderr, "shard-plan: %s: %zu layers, %.2f B parameters; %zu GPU(s), %s usable each\n", cfg_path, d.layers,
            params / 1e9, ng, fmt_bytes((double)avail, b1, sizeof b1));
    if (use_pipe) {
        stages = best.S;
        replicas = best.replicas;
        use_lean = best.lean > 0;
        use_offload = best.sm->offload;
        tps = best.tps;
        memcpy(bounds, best.bounds, (stages + 1) * sizeof *bounds);
        sm_mem = xcalloc(stages, sizeof *sm_mem);
        worst = &sm_mem[0];
        for (size_t st = 0; st < stages; st++) {
            sm_mem[st] = best.sm->m[stage_role(st, stages)][bounds[st + 1] - bounds[st]];
            if (sm_mem[st].total > worst->total) worst = &sm_mem[st];
        }
        fprintf(stderr, "shard-plan: one replica needs %s without recompute, %s with, %s with the layers in host memory\n",
                fmt_bytes((double)(fast.total + ctx), b1, sizeof b1), fmt_bytes((double)(lean.total + ctx), b2, sizeof b2),
                fmt_bytes((double)(offl.total + ctx), b3, sizeof b3));
        char where[1024] = "";
        size_t wl = 0;
        for (size_t st = 0; st < stages && wl < sizeof where - 64; st++)
            wl += (size_t)snprintf(where + wl, sizeof where - wl, "%slayers %zu-%zu on GPU %zu", st ? ", " : "",
                                   bounds[st], bounds[st + 1] - 1, st);
        char why[160];
        if (force_stages > 1) snprintf(why, sizeof why, "--stages %zu", stages);
        else if (off_tps > 0) snprintf(why, sizeof why, "one replica does not fit one GPU; faster than host offload (%.0f tokens/s)", off_tps);
        else snprintf(why, sizeof why, "one replica does not fit one GPU%s",
                      rec_off ? "" : use_offload ? " even with host offload" : " even with recompute");
        const char *mode = "no recompute";
        if (use_offload) mode = "recompute, each stage's layers streamed from host memory (no cut fits without)";
        else if (use_lean && rec_on) mode = "recompute (--recompute on)";
        else if (use_lean && sm_ready[0] && cut_stages(&sms[0], stages, 0, avail, ctx, cut) < INFINITY)
            mode = "recompute (faster: without it the stages need more GPUs per replica)";
        else if (use_lean) mode = "recompute (without it the stages do not fit)";
        fprintf(stderr, "shard-plan: chose %zu pipeline stages (%s): %s; %s, the largest stage needs %s\n", stages,
                where, why, mode,
                fmt_bytes((double)(worst->total + ctx), b1, sizeof b1));
        fprintf(stderr, "shard-plan: %zu replica(s) x %zu stages on %zu of %zu GPU(s) (rank = replica x %zu + stage; "
                "GPU = rank); each replica's %zu micro-batches per step take %zu pipeline slots (%zu to fill and "
                "drain)\n", replicas, stages, replicas * stages, ng, stages, accum / replicas,
                accum / replicas + stages - 1, stages - 1);
    } else {
        if (use_offload && best.S > 1)
            fprintf(stderr, "shard-plan: %zu pipeline stages would fit but predict %.0f tokens/s against host "
                    "offload's %.0f\n", best.S, best.tps, off_tps);
        // Replicas: every GPU, as long as the optimizer window splits evenly over them.
        replicas = force_replicas ? force_replicas : ng;
        if (replicas > ng) die("--replicas %zu but only %zu GPU(s)", replicas, ng);
        if (!force_replicas)
            while (replicas > 1 && accum % replicas) replicas--;
        else if (accum % replicas)
            die("--replicas %zu does not divide the %zu micro-batches of an optimizer step (pack --accum)", replicas, accum);

        double flop_tok = (use_lean ? 6.0 : 4.0) * params;
        double rate = use_lean ? PLAN_RATE_LEAN : PLAN_RATE_FAST;
        tps = replicas * rate / flop_tok * (replicas > 1 ? 0.95 : 1.0);
        // Offload is bound by the host link: every layer crosses it twice per micro-batch (forward, then
        // recompute + backward).
        if (use_offload) {
            double per_mb = 2.0 * (double)d.layers * (double)offl.layer_bytes / PLAN_HOST_LINK_BPS;
            double t_off = replicas * (double)tokens / per_mb;
            if (t_off < tps) tps = t_off;
        }
        bounds[1] = d.layers;

        fprintf(stderr, "shard-plan: one replica needs %s without recompute, %s with, %s with the layers in host memory; "
                "chose %s\n", fmt_bytes((double)(fast.total + ctx), b1, sizeof b1),
                fmt_bytes((double)(lean.total + ctx), b2, sizeof b2), fmt_bytes((double)(offl.total + ctx), b3, sizeof b3),
                use_offload ? "host offload (recompute alone does not fit; the host link bounds the speed)"
                : use_lean ? "recompute (the fast setting does not fit)" : "no recompute (fastest that fits)");
        if (replicas < ng)
            fprintf(stderr, "shard-plan: %zu replica(s) on %zu GPU(s): an optimizer step's %zu micro-batches split evenly "
                    "over %zu (pack with --accum a multiple of the GPU count to use them all)\n", replicas, ng, accum,
                    replicas);
        else
            fprintf(stderr, "shard-plan: %zu data-parallel replica(s), every layer on every GPU (a 7B model in bf16 fits "
                    "one GPU here: splitting layers would only add waiting)\n", replicas);
    }
    fprintf(stderr, "shard-plan: predicted %.0f tokens/s (calibrated on an H200, docs/PERF.md)\n", tps);

    json_t *root = json_object();
    json_object_set_new(root, "format", json_string("lorapipe-plan"));
    json_object_set_new(root, "version", json_integer(PLAN_VERSION));
    json_t *mj = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:f}", "config", cfg_path,
                           "fingerprint", plan_fingerprint(&d), "layers", (json_int_t)d.layers, "hidden",
                           (json_int_t)d.hidden, "intermediate", (json_int_t)d.inter, "vocab", (json_int_t)d.vocab,
                           "heads", (json_int_t)d.heads, "kv_heads", (json_int_t)d.kv_heads, "head_dim",
                           (json_int_t)d.head_dim, "tied", d.tied, "parameters", params);
    json_object_set_new(root, "model", mj);
    json_t *tg = json_array();
    for (int k = 0; k < LORA_NMOD; k++) if (on[k]) json_array_append_new(tg, json_string(lora_module_name(k)));
    json_object_set_new(root, "lora", json_pack("{s:I, s:o, s:I}", "r", (json_int_t)r, "targets", tg,
                                                 "parameters", (json_int_t)m->lora_params));
    json_t *gj = json_array();
    for (size_t i = 0; i < ng; i++)
        json_array_append_new(gj, json_pack("{s:I, s:s, s:I, s:I}", "index", (json_int_t)i, "name", g[i].name,
                                            "memory_bytes", (json_int_t)g[i].bytes, "usable_bytes",
                                            (json_int_t)(cap && cap < g[i].bytes ? cap : g[i].bytes)));
    json_object_set_new(root, "gpus", gj);
    json_object_set_new(root, "memory_cap_bytes", json_integer((json_int_t)cap));
    json_object_set_new(root, "micro_batch_tokens", json_integer((json_int_t)tokens));
    json_object_set_new(root, "max_sequence", json_integer((json_int_t)max_len));
    json_object_set_new(root, "accum", json_integer((json_int_t)accum));
    json_object_set_new(root, "recompute", json_boolean(use_lean));
    json_object_set_new(root, "embedding_on_host", json_boolean((sm_mem ? &sm_mem[0] : m)->embed_host > 0));
    json_object_set_new(root, "host_offload", json_boolean(use_offload));
    json_object_set_new(root, "replicas", json_integer((json_int_t)replicas));
    json_object_set_new(root, "stages_per_replica", json_integer((json_int_t)stages));
    json_t *pl = json_array();
    for (size_t i = 0; i < replicas; i++)
        for (size_t st = 0; st < stages; st++)
            json_array_append_new(pl, json_pack("{s:I, s:I, s:I, s:[I,I], s:b, s:b, s:o}", "replica", (json_int_t)i,
                                                "stage", (json_int_t)st, "gpu", (json_int_t)(i * stages + st), "layers",
                                                (json_int_t)bounds[st], (json_int_t)bounds[st + 1], "embedding", st == 0,
                                                "head", st + 1 == stages, "memory",
                                                mem_json(sm_mem ? &sm_mem[st] : m, ctx)));
    json_object_set_new(root, "placement", pl);
    json_object_set_new(root, "memory_per_gpu", mem_json(worst, ctx));
    if (use_offload) {   // per GPU process: with stages, the largest stage's
        size_t hb = sm_mem ? 0 : m->host_layers + m->embed_host;
        for (size_t st = 0; sm_mem && st < stages; st++)
            if (sm_mem[st].host_layers + sm_mem[st].embed_host > hb) hb = sm_mem[st].host_layers + sm_mem[st].embed_host;
        json_object_set_new(root, "host_memory_bytes", json_integer((json_int_t)hb));
    }
    json_object_set_new(root, "predicted_tokens_per_s", json_real(round(tps)));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    aout o;
    aout_open(&o, out);
    aout_write(&o, text, strlen(text));
    aout_write(&o, "\n", 1);
    aout_commit(&o);
    free(text);
    json_decref(root);
    hf_config_free(&cfg);
    for (int lm = 0; lm < 3; lm++) if (sm_ready[lm]) stage_model_free(&sms[lm]);
    free(sm_mem);
    free(bounds);
    free(best.bounds);
    free(cut);
    free(g);
    return 0;
}

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
"\n"
"Plans a LoRA training run over the GPUs at hand: data-parallel replicas, the layers each\n"
"GPU holds, recompute, and the memory every GPU will need (frozen weights, LoRA and\n"
"optimizer state, activations, workspace, logits chunk), predicted with the trainer's own\n"
"arena sizes. Picks the fastest plan that fits and says why on stderr; refuses, naming\n"
"the smallest memory that would work, when nothing fits. Writes JSON (docs/FORMATS.md)\n"
"for train --plan; stdout unless -o.\n"
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

int main(int argc, char **argv) {
    check_init(argv[0]);
    const char *model = NULL, *gpus_spec = "auto", *pack_path = NULL, *out = NULL, *targets = "q_proj,k_proj,v_proj,o_proj";
    const char *recompute = "auto";
    unsigned long long cap = 0;
    size_t tokens = 2048, max_len = 2048, accum = 0, r = 8, force_replicas = 0;
    double dropout = 0.1;
    enum { O_MODEL = 256, O_GPUS, O_CAP, O_PACK, O_TOKENS, O_MAXLEN, O_ACCUM, O_R, O_TARGET, O_DROP, O_RECOMPUTE,
           O_REPLICAS, O_HELP };
    static const struct option opts[] = {
        {"model", 1, 0, O_MODEL}, {"gpus", 1, 0, O_GPUS}, {"memory-cap", 1, 0, O_CAP}, {"pack", 1, 0, O_PACK},
        {"tokens", 1, 0, O_TOKENS}, {"max-len", 1, 0, O_MAXLEN}, {"accum", 1, 0, O_ACCUM}, {"lora-r", 1, 0, O_R},
        {"target", 1, 0, O_TARGET}, {"lora-dropout", 1, 0, O_DROP}, {"recompute", 1, 0, O_RECOMPUTE},
        {"replicas", 1, 0, O_REPLICAS}, {"output", 1, 0, 'o'}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
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
#undef NUM
        case O_TARGET: targets = optarg; break;
        case O_DROP: dropout = strtod(optarg, &end); if (*end || dropout < 0 || dropout >= 1) die_usage("--lora-dropout: expected [0, 1)"); break;
        case O_RECOMPUTE:
            if (strcmp(optarg, "auto") && strcmp(optarg, "on") && strcmp(optarg, "off"))
                die_usage("--recompute: expected auto, on or off");
            recompute = optarg;
            break;
        case 'o': out = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: die_usage("unknown option");
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
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
    unsigned long long ctx = PLAN_CONTEXT_BYTES;
    int use_lean, use_offload = 0;
    if (!strcmp(recompute, "on")) use_lean = 1;
    else if (!strcmp(recompute, "off")) use_lean = 0;
    else use_lean = fast.total + ctx > avail;
    if (use_lean && lean.total + ctx > avail) use_offload = 1;
    const mem_plan *m = use_offload ? &offl : use_lean ? &lean : &fast;
    char b1[32], b2[32], b3[32];
    if (m->total + ctx > avail) {
        unsigned long long need = (!strcmp(recompute, "off") ? fast.total : offl.total) + ctx;
        die("%s does not fit: one replica needs %s per GPU (%s, %zu-token micro-batches) and the GPUs offer %s; "
            "the smallest memory that works is %s per GPU%s (layer stages over several GPUs are not implemented yet)",
            cfg_path, fmt_bytes((double)(m->total + ctx), b1, sizeof b1),
            use_offload ? "recompute, layers streamed from host memory" : use_lean ? "with recompute" : "without recompute",
            tokens, fmt_bytes((double)avail, b2, sizeof b2), fmt_bytes((double)need, b3, sizeof b3),
            !strcmp(recompute, "off") ? "" : " with host offload; smaller micro-batches need still less");
    }

    // Replicas: every GPU, as long as the optimizer window splits evenly over them.
    size_t replicas = force_replicas ? force_replicas : ng;
    if (replicas > ng) die("--replicas %zu but only %zu GPU(s)", replicas, ng);
    if (!force_replicas)
        while (replicas > 1 && accum % replicas) replicas--;
    else if (accum % replicas)
        die("--replicas %zu does not divide the %zu micro-batches of an optimizer step (pack --accum)", replicas, accum);

    double params = plan_parameter_count(&d);
    double flop_tok = (use_lean ? 6.0 : 4.0) * params;
    double rate = use_lean ? PLAN_RATE_LEAN : PLAN_RATE_FAST;
    double tps = replicas * rate / flop_tok * (replicas > 1 ? 0.95 : 1.0);
    // Offload is bound by the host link: every layer crosses it twice per micro-batch (forward, then
    // recompute + backward).
    if (use_offload) {
        double per_mb = 2.0 * (double)d.layers * (double)offl.layer_bytes / PLAN_HOST_LINK_BPS;
        double t_off = replicas * (double)tokens / per_mb;
        if (t_off < tps) tps = t_off;
    }

    fprintf(stderr, "shard-plan: %s: %zu layers, %.2f B parameters; %zu GPU(s), %s usable each\n", cfg_path, d.layers,
            params / 1e9, ng, fmt_bytes((double)avail, b1, sizeof b1));
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
    json_object_set_new(root, "embedding_on_host", json_boolean(m->embed_host > 0));
    json_object_set_new(root, "host_offload", json_boolean(use_offload));
    json_object_set_new(root, "replicas", json_integer((json_int_t)replicas));
    json_object_set_new(root, "stages_per_replica", json_integer(1));
    json_t *pl = json_array();
    for (size_t i = 0; i < replicas; i++)
        json_array_append_new(pl, json_pack("{s:I, s:I, s:I, s:[I,I], s:b, s:b}", "replica", (json_int_t)i, "stage", 0,
                                            "gpu", (json_int_t)i, "layers", 0, (json_int_t)d.layers, "embedding", 1,
                                            "head", 1));
    json_object_set_new(root, "placement", pl);
    json_object_set_new(root, "memory_per_gpu", mem_json(m, ctx));
    if (use_offload) json_object_set_new(root, "host_memory_bytes", json_integer((json_int_t)(m->host_layers + m->embed_host)));
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
    free(g);
    return 0;
}

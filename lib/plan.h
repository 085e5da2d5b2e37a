// lib/plan.h: the placement file (plan.json) shard-plan writes and train
// --plan reads (docs/FORMATS.md), and the model facts both derive the same way.
#ifndef LORAPIPE_PLAN_H
#define LORAPIPE_PLAN_H
#include <stddef.h>
#include "hf_config.h"
#include "lora.h"

#define PLAN_VERSION 1
// Device memory a CUDA context and cuBLAS take besides our allocations,
// measured on an H200 with CUDA 13 (0.58 GiB; docs/PERF.md).
#define PLAN_CONTEXT_BYTES (640ULL << 20)
// Sustained training rates measured on an H200 for the 7B shape (docs/PERF.md),
// in FLOP/s counted as 4N per token (6N with recompute).
#define PLAN_RATE_FAST 452e12
#define PLAN_RATE_LEAN 478e12
// Host-to-device bytes/s of pinned copies, for host offload's prediction (PCIe 5 x16 in practice).
#define PLAN_HOST_LINK_BPS 40e9

// Model dimensions from a config, with the checks the trainer needs.
model_dims plan_dims_from_config(const hf_config *c);
// "qwen2 L=32 H=4096 F=11008 V=151936 heads=32/32 d=128 tied=0" (static buffer).
const char *plan_fingerprint(const model_dims *d);
// Parameters of the whole model (embedding, layers, norm, head unless tied).
double plan_parameter_count(const model_dims *d);

typedef struct {
    char *path;
    char *fingerprint;
    size_t replicas, stages, accum, gpus;
    int recompute;
    int offload;               // "host_offload"
    unsigned long long memory_cap;
    size_t layers;             // "model"."layers"
    // Pipeline stages, from "placement" (every replica is cut alike): stage s
    // holds layers [bounds[s], bounds[s + 1]); bounds has stages + 1 entries,
    // bounds[0] = 0 and bounds[stages] = layers.
    size_t *bounds;
    // The GPU index of rank replica * stages + stage (replicas * stages entries).
    int *gpu;
} plan;

// Read and check a plan file: -1 with a one-line message naming the file and key.
int plan_load(plan *p, const char *path, char *err, size_t errlen);
void plan_free(plan *p);

#endif

// tools/train/train.h: options of one training run and the pieces of the
// trainer that the loop ties together.
#ifndef LORAPIPE_TRAIN_H
#define LORAPIPE_TRAIN_H
#include <stddef.h>
#include <stdint.h>
#include "adapter.h"
#include "backend.h"
#include "hf_model.h"
#include "lora.h"
#include "optim.h"

typedef enum { DEV_AUTO, DEV_CPU, DEV_CUDA } device_kind;

typedef struct {
    const char *model_dir, *data_path, *out_dir, *plan_path, *init_adapter, *eval_path;
    device_kind device;
    size_t lora_r; double lora_alpha, lora_dropout; int rslora; int targets[LORA_NMOD];
    double lr, warmup_ratio, weight_decay, max_grad_norm, adam_beta1, adam_beta2, adam_eps;
    long warmup_steps;         // -1: use the ratio
    sched_kind schedule;
    size_t epochs;             // 0: every epoch in the pack
    size_t accum;              // 0: the pack's
    long max_steps;            // -1: none
    uint32_t seed;
    int resume;
    size_t save_steps, save_total_limit, eval_steps;
    int threads;
    int recompute;             // CUDA: recompute each layer in the backward pass
    int quiet;
    const char *debug_grads;   // write step 1's pre-clip gradients here (safetensors, PEFT keys)
    long interrupt_after;      // act as if SIGINT arrived after this step (tests); -1: never
    const char *rendezvous;    // shared file for multi-host starts without MASTER_ADDR
    int recompute_set;         // --recompute given (a plan's choice applies otherwise)
    int offload;               // CUDA: frozen layers in pinned host memory, streamed through two slots
    int offload_set;           // --offload given
    int share_prefix;          // CUDA: a prefix shared by every sequence of a micro-batch computed once
    unsigned long long memory_cap;  // a plan's per-GPU cap (bytes, 0: none), enforced after allocation
    int rank, world, local_rank;   // position among the ranks (filled by main from dist.h)
    // Pipeline stages (a plan with stages_per_replica > 1): rank = replica * stages + stage;
    // this rank holds layers [layer0, layer1). One stage: 1, 0, 0, 0 (the whole model).
    int stages, stage;
    size_t layer0, layer1;
    char stage_bounds[256];        // "0,15,32": every rank must agree (the collectives' handshake)
    int stage_peers[2], n_stage_peers;  // the neighbouring stages' ranks (point-to-point links)
    // One replica cut into stages: each rank's gradients and optimizer work
    // matter only in its own layers' slice [own_lo, own_hi) of the LoRA arena.
    int own_only;
    size_t own_lo, own_hi;
    const char *rdzv_file, *master_addr;
    int master_port;
} train_opts;

// ---- data (data.c): micro-batches and windows from a pack -------------------
typedef struct train_data train_data;
train_data *train_data_open(const char *path);
void train_data_close(train_data *d);
const char *train_data_path(const train_data *d);
size_t train_data_epochs(const train_data *d);
size_t train_data_accum(const train_data *d);
uint32_t train_data_max_token(const train_data *d);
// Target tokens over all samples (one epoch), and the sample count.
uint64_t train_data_targets(const train_data *d);
uint64_t train_data_samples(const train_data *d);
// Largest micro-batch (tokens) and longest sequence, for sizing arenas.
void train_data_max_batch(const train_data *d, size_t *max_tokens, size_t *max_len);
// Optimizer steps over the first `epochs` epochs with windows of accum x world micro-batches.
size_t train_data_steps(const train_data *d, size_t epochs, size_t accum, size_t world);
// The micro-batches of step w for rank r (n_mb == accum; empty ones have n_tok 0),
// the window's global target count, and the epoch (fractional, at the window's end).
typedef struct {
    micro_batch *mb; size_t n_mb;
    size_t targets_global, tokens_global;
    double epoch;
} train_window;
void train_data_window(train_data *d, size_t step, size_t accum, size_t world, size_t rank, size_t epochs,
                       train_window *w);
// Every micro-batch of epoch 0 in order, for evaluation (index i < count).
size_t train_data_eval_count(const train_data *d);
const micro_batch *train_data_eval_batch(train_data *d, size_t i);

// ---- model and initial adapter (model_glue.c) --------------------------------
model_dims train_model_dims(const hf_model *m);
int train_model_is_half(const hf_model *m);   // bf16/fp16 weights: LoRA init rounds A through bf16
typedef struct {
    size_t r; double alpha; int rslora; int on[LORA_NMOD];
    adapter *a;
} adapter_init;
void adapter_init_read(adapter_init *ai, const char *dir, const hf_model *m);
void adapter_init_params(const adapter_init *ai, const lora_layout *l, float *params);
void adapter_init_free(adapter_init *ai);

// ---- checkpoints (checkpoint.c) ---------------------------------------------
typedef struct {
    size_t step;
    float *params, *m, *v;     // n_params each
} train_state;
void checkpoint_save(const train_opts *o, const lora_layout *l, const model_dims *dims, const train_state *s,
                     size_t total_steps, const char *fingerprint);
// Highest complete checkpoint in out_dir; returns 0 and fills s, -1 if none.
// Remove the temporary or replaced checkpoint folders a killed run left in
// out_dir (never valid checkpoints; a resumed run would not read them).
void checkpoint_remove_stale(const char *out_dir);
int checkpoint_load_latest(const train_opts *o, const lora_layout *l, train_state *s, const char *fingerprint);
// Write a LoRA-shaped arena (gradients, say) as safetensors with PEFT keys.
void lora_arena_save(const lora_layout *l, const float *arena, const char *path);
void adapter_write_final(const train_opts *o, const lora_layout *l, const float *params, const char *dir);

// ---- backends ---------------------------------------------------------------
backend *cpu_backend_create(const train_opts *o, const model_dims *dims, const void *model, const lora_layout *l,
                            const optim_cfg *oc, size_t max_tokens, size_t max_len);
int cuda_available(void);
backend *cuda_backend_create(const train_opts *o, const model_dims *dims, const void *model, const lora_layout *l,
                             const optim_cfg *oc, size_t max_tokens, size_t max_len);

// ---- pipeline stages (pipeline.c) -------------------------------------------
// One optimizer window of this replica's micro-batches through this stage:
// every forward in order, then every backward in the same order (the gradient
// sums meet the micro-batches in the order one process would), activations
// and their gradients passed to the neighbouring stages. drop[k] is the
// micro-batch's dropout key. Returns the summed loss (the last stage's; 0 elsewhere).
typedef struct pipeline pipeline;
pipeline *pipeline_create(backend *b, const train_opts *o, size_t hidden, size_t max_tokens, size_t accum);
double pipeline_window(pipeline *p, size_t step, const micro_batch *mb, size_t n_mb, float inv_n,
                       const dropout_cfg *drop);
// Forward only, for evaluation: the summed loss on the last stage, 0 elsewhere.
double pipeline_eval(pipeline *p, const micro_batch *mb);
void pipeline_destroy(pipeline *p);

// ---- the loop ---------------------------------------------------------------
int train_run(const train_opts *o);

#endif

// lib/cpu_model.h: the plain-C fp32 reference of Qwen2 + LoRA,
// forward and backward, for one padding-free micro-batch.
//
// A micro-batch is a list of independent sequences laid end to end (N tokens
// in all). Linear layers run over all N tokens at once; attention runs inside
// each sequence only, with positions restarting at 0, so a padded batch, a
// packed row and separate samples all give the same numbers.
#ifndef LORAPIPE_CPU_MODEL_H
#define LORAPIPE_CPU_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include "lora.h"

typedef struct {
    const float *ln1, *ln2;                        // (C)
    const float *wq, *bq, *wk, *bk, *wv, *bv, *wo;  // (qd, C) (qd) (kvd, C) (kvd) (kvd, C) (kvd) (C, qd)
    const float *wg, *wu, *wd;                     // (F, C) (F, C) (C, F)
} cpu_layer;

typedef struct {
    model_dims d;
    const float *embed;    // (V, C)
    const float *lm_head;  // (V, C); the embedding when tied
    const float *norm_f;   // (C)
    cpu_layer *layer;      // (L)
    float *inv_freq;       // (head_dim / 2), fp32 as transformers computes it
} cpu_model;

typedef struct {
    size_t n_tok, n_seq;
    const uint32_t *ids;       // (N)
    const int32_t *labels;     // (N) unshifted, -100 = not a target
    const size_t *seq_start;   // (n_seq + 1)
} micro_batch;

typedef struct {
    float p;          // LoRA dropout probability (0 = off)
    uint64_t key;     // per micro-batch key (seed, step, index), so masks repeat on resume
} dropout_cfg;

void cpu_model_init_rope(cpu_model *m);

// Targets of a micro-batch: positions t with labels[t + 1] != -100 inside a sequence.
size_t micro_batch_targets(const micro_batch *mb);

// Forward and backward. Adds inv_n * d(sum of target losses) / d(LoRA) into
// grads (same layout as lora_params). Returns the summed loss over targets.
double cpu_forward_backward(const cpu_model *m, const lora_layout *l, const float *lora_params,
                            float *grads, const micro_batch *mb, float inv_n, dropout_cfg drop);
// A pipeline stage's share of a micro-batch: layers [layer0, layer1) (layer1 ==
// 0: all). The first stage (layer0 == 0) starts from the embedding, a later one
// from x_in; the last (layer1 == layers) ends in the loss and returns it.
//   grads NULL, not last: forward only, the output to x_out;
//   grads NULL, last:     forward and loss (evaluation);
//   grads, last:          forward, loss, backward;
//   grads, not last:      the forward again, then the backward from dx_out.
// With grads, dx_in (when not NULL) receives the gradient of the stage input.
// Dropout masks are keyed by the model's layer index, so stages draw the masks
// the whole model draws.
typedef struct {
    size_t layer0, layer1;
    const float *x_in;     // (N, C)
    float *x_out;          // (N, C)
    const float *dx_out;   // (N, C)
    float *dx_in;          // (N, C)
} cpu_stage;
double cpu_stage_run(const cpu_model *m, const lora_layout *l, const float *params, float *grads,
                     const micro_batch *mb, float inv_n, dropout_cfg drop, const cpu_stage *st);
// Forward only (evaluation): the summed loss over targets.
double cpu_forward_loss(const cpu_model *m, const lora_layout *l, const float *lora_params,
                        const micro_batch *mb);
// Bytes of activation memory a micro-batch of n_tok tokens whose longest
// sequence has max_len tokens needs (for the start-up report).
size_t cpu_activation_bytes(const model_dims *d, const lora_layout *l, size_t n_tok, size_t max_len);
void cpu_model_release(void);   // frees the activation arena

#endif

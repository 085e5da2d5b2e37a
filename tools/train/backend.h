// tools/train/backend.h: what the training loop asks of a device.
//
// The loop (loop.c) owns the schedule, the loss normalisation, clipping
// decisions, logging and checkpoints; a backend owns the model, the LoRA
// arenas (parameters, gradients, AdamW moments: one fp32 block each, in the
// layout of lib/lora.h) and the arithmetic. The CPU backend is the readable
// reference; the CUDA backend must give the same numbers within bf16
// tolerance.
#ifndef LORAPIPE_BACKEND_H
#define LORAPIPE_BACKEND_H
#include <stddef.h>
#include "cpu_model.h"
#include "lora.h"
#include "optim.h"

typedef struct backend backend;
struct backend {
    const char *name;
    void *ctx;
    // Replace parameters and moments (host arrays of lora.n_params floats;
    // m, v may be NULL for zeros).
    void (*set_state)(backend *b, const float *params, const float *m, const float *v);
    // Copy parameters and moments to host arrays (any may be NULL).
    void (*get_state)(backend *b, float *params, float *m, float *v);
    void (*zero_grads)(backend *b);
    // The 1-based optimizer step about to run, for error messages (may be NULL).
    void (*begin_step)(backend *b, size_t step);
    // Copy the gradient arena to the host (debugging and tests).
    void (*get_grads)(backend *b, float *grads);
    // Forward + backward of one micro-batch; gradients scaled by inv_n are
    // added; returns the summed target loss.
    double (*micro_step)(backend *b, const micro_batch *mb, float inv_n, dropout_cfg drop);
    // Summed target loss, no gradients.
    double (*eval_loss)(backend *b, const micro_batch *mb);
    // Sum the gradients over data-parallel ranks (no-op on one device).
    void (*reduce_grads)(backend *b);
    // Sum n doubles over the ranks, in place (no-op on one device).
    void (*allreduce)(backend *b, double *vals, size_t n);
    // Pre-clip global gradient norm (torch clip_grad_norm_ semantics).
    double (*grad_norm)(backend *b);
    // Clip by clip, then AdamW with lr; step is the 1-based optimizer step.
    void (*adamw)(backend *b, float clip, double lr, size_t step);
    // Pipeline stages (a plan with stages_per_replica > 1; tools/train/pipeline.c):
    // this backend holds layers [train_opts.layer0, layer1) and runs its share
    // of a micro-batch with the semantics of cpu_stage_run (lib/cpu_model.h).
    // x_in, x_out, dx_out, dx_in are host buffers of n_tok x hidden values of
    // stage_elt bytes (fp32 on the CPU, bf16 on CUDA); grad selects the backward.
    size_t stage_elt;
    double (*stage_step)(backend *b, const micro_batch *mb, const void *x_in, void *x_out, const void *dx_out,
                         void *dx_in, float inv_n, dropout_cfg drop, int grad);
    // The ranks' host collectives, which also carry the stages' point-to-point
    // messages (NULL on one rank).
    struct host_comm *(*comm)(backend *b);
    // Host memory for stage_step's buffers: CUDA pins it, so that the copies to
    // and from the device run at the bus's speed (NULL: malloc and free).
    void *(*host_alloc)(backend *b, size_t bytes);
    void (*host_free)(backend *b, void *p);
    // Bytes of memory held, for the start-up report (by arena).
    void (*report)(backend *b);
    void (*destroy)(backend *b);
};

#endif

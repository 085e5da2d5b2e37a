// tools/train/pipeline.c: pipelined layer stages, one process per stage.
//
// Rank replica * stages + stage holds layers [layer0, layer1) of the model
// (the first stage also the embedding, the last the final norm, lm_head and
// the loss). Per optimizer window each stage runs every micro-batch forward,
// in order, handing its output on to the next stage as soon as it is done;
// then every backward, in the same order: the backward of a non-last stage
// runs its layers forward again from the saved stage input, with activations
// kept, and then backward from the gradient the next stage sent. So each
// stage keeps only one micro-batch's activations at a time and the inputs of
// the window's micro-batches (n_tok x hidden each, host memory), and stage
// s + 1 works on micro-batch k while stage s works on k + 1: the GPUs compute
// together, where device_map="auto" runs one GPU at a time.
//
// The order keeps the numbers of one process: every layer's LoRA gradients
// meet the micro-batches in window order, the dropout masks are keyed by the
// model's layer index and the micro-batch's place in the global window, and a
// stage input crosses the wire unchanged (the backend's own dtype). The loss
// lives on the last stage; the loop's all-reduce sums it over every rank. With
// one replica each stage keeps, clips and updates its own layers' slice of the
// LoRA state: the gradient norm sums per-tensor squares that live on one stage
// each, and only a checkpoint or the final adapter gathers the slices (the
// backends' get_state). Replicas of a pipeline all-reduce the whole gradient.
//
// Messages are host_comm's point-to-point sends: buffered, so a stage never
// waits for its neighbour to read; tagged with the step's low bits, the kind
// and the micro-batch, so a disagreement about the schedule is an error, not
// silently wrong numbers.
#include "train.h"
#include "host_comm.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MSG_ACT = 1, MSG_GRAD = 2, MSG_EVAL = 3 };

struct pipeline {
    backend *b;
    host_comm *comm;
    int stage, stages, prev, next;   // neighbour ranks, -1 at the ends
    size_t row_bytes;                // one token's hidden vector on the wire
    unsigned char *saved;            // (accum, max_tokens, hidden): the window's stage inputs
    unsigned char *out, *grad;       // (max_tokens, hidden) each
    size_t *saved_at;                // byte offset of micro-batch k's input in saved
    size_t accum, max_tokens;
};

static unsigned char *host_alloc(pipeline *p, size_t bytes) {
    return p->b->host_alloc ? p->b->host_alloc(p->b, bytes) : xmalloc(bytes);
}

static void host_free(pipeline *p, void *ptr) {
    if (!ptr) return;
    if (p->b->host_free) p->b->host_free(p->b, ptr);
    else free(ptr);
}

static uint32_t tag_of(size_t step, int kind, size_t k) {
    return (uint32_t)((step & 0xfffu) << 20) | (uint32_t)kind << 16 | (uint32_t)(k & 0xffffu);
}

pipeline *pipeline_create(backend *b, const train_opts *o, size_t hidden, size_t max_tokens, size_t accum) {
    if (!b->stage_step || !b->comm || !b->comm(b))
        die("the %s backend cannot run pipeline stages", b->name);
    pipeline *p = xcalloc(1, sizeof *p);
    p->b = b;
    p->comm = b->comm(b);
    p->stage = o->stage;
    p->stages = o->stages;
    p->prev = o->stage > 0 ? o->rank - 1 : -1;
    p->next = o->stage + 1 < o->stages ? o->rank + 1 : -1;
    p->row_bytes = hidden * b->stage_elt;
    p->accum = accum;
    p->max_tokens = max_tokens ? max_tokens : 1;
    size_t mb_bytes = p->max_tokens * p->row_bytes;
    // The first stage starts from the embedding: it saves no inputs.
    if (p->prev >= 0) p->saved = host_alloc(p, accum * mb_bytes);
    p->out = host_alloc(p, mb_bytes);
    p->grad = host_alloc(p, mb_bytes);
    p->saved_at = xcalloc(accum, sizeof *p->saved_at);
    {
        char a[32];
        fprintf(stderr, "train: rank %d: pipeline stage %d of %d, layers %zu-%zu; %s of host buffers for stage "
                "inputs and messages\n", o->rank, o->stage, o->stages, o->layer0, o->layer1 - 1,
                fmt_bytes((double)((p->saved ? accum : 0) + 2) * (double)mb_bytes, a, sizeof a));
    }
    return p;
}

double pipeline_window(pipeline *p, size_t step, const micro_batch *mb, size_t n_mb, float inv_n,
                       const dropout_cfg *drop) {
    backend *b = p->b;
    double loss = 0.0;
    if (n_mb > p->accum) die_at(__FILE__, __LINE__, "%zu micro-batches in a window of %zu", n_mb, p->accum);
    for (size_t k = 0; k < n_mb; k++)
        if (mb[k].n_tok > p->max_tokens)
            die_at(__FILE__, __LINE__, "micro-batch of %zu tokens, sized for %zu", mb[k].n_tok, p->max_tokens);
    if (p->next < 0) {
        // The last stage: each micro-batch forward, loss and backward at once,
        // its input gradient back to the previous stage.
        for (size_t k = 0; k < n_mb; k++) {
            size_t bytes = mb[k].n_tok * p->row_bytes;
            if (!bytes) continue;
            void *x_in = NULL;
            if (p->prev >= 0) {
                x_in = p->out;
                host_comm_recv(p->comm, p->prev, tag_of(step, MSG_ACT, k), x_in, bytes, "a stage input");
            }
            loss += b->stage_step(b, &mb[k], x_in, NULL, NULL, p->prev >= 0 ? p->grad : NULL, inv_n, drop[k], 1);
            if (p->prev >= 0) host_comm_send(p->comm, p->prev, tag_of(step, MSG_GRAD, k), p->grad, bytes, "a stage input's gradient");
        }
        return loss;
    }
    // Earlier stages: every forward first...
    size_t at = 0;
    for (size_t k = 0; k < n_mb; k++) {
        size_t bytes = mb[k].n_tok * p->row_bytes;
        if (!bytes) continue;
        void *x_in = NULL;
        if (p->prev >= 0) {
            p->saved_at[k] = at;
            x_in = p->saved + at;
            at += bytes;
            host_comm_recv(p->comm, p->prev, tag_of(step, MSG_ACT, k), x_in, bytes, "a stage input");
        }
        b->stage_step(b, &mb[k], x_in, p->out, NULL, NULL, inv_n, drop[k], 0);
        host_comm_send(p->comm, p->next, tag_of(step, MSG_ACT, k), p->out, bytes, "a stage output");
    }
    // ...then every backward, in the order the next stage returns the gradients.
    for (size_t k = 0; k < n_mb; k++) {
        size_t bytes = mb[k].n_tok * p->row_bytes;
        if (!bytes) continue;
        host_comm_recv(p->comm, p->next, tag_of(step, MSG_GRAD, k), p->out, bytes, "a stage output's gradient");
        const void *x_in = p->prev >= 0 ? p->saved + p->saved_at[k] : NULL;
        b->stage_step(b, &mb[k], x_in, NULL, p->out, p->prev >= 0 ? p->grad : NULL, inv_n, drop[k], 1);
        if (p->prev >= 0) host_comm_send(p->comm, p->prev, tag_of(step, MSG_GRAD, k), p->grad, bytes, "a stage input's gradient");
    }
    return 0.0;
}

double pipeline_eval(pipeline *p, const micro_batch *mb) {
    backend *b = p->b;
    size_t bytes = mb->n_tok * p->row_bytes;
    if (!bytes) return 0.0;
    if (mb->n_tok > p->max_tokens)
        die_at(__FILE__, __LINE__, "micro-batch of %zu tokens, sized for %zu", mb->n_tok, p->max_tokens);
    void *x_in = NULL;
    if (p->prev >= 0) {
        x_in = p->grad;
        host_comm_recv(p->comm, p->prev, tag_of(0, MSG_EVAL, 0), x_in, bytes, "an evaluation stage input");
    }
    dropout_cfg none = {0};
    double loss = b->stage_step(b, mb, x_in, p->next >= 0 ? p->out : NULL, NULL, NULL, 0.0f, none, 0);
    if (p->next >= 0) host_comm_send(p->comm, p->next, tag_of(0, MSG_EVAL, 0), p->out, bytes, "an evaluation stage output");
    return loss;
}

void pipeline_destroy(pipeline *p) {
    if (!p) return;
    host_free(p, p->saved);
    host_free(p, p->out);
    host_free(p, p->grad);
    free(p->saved_at);
    free(p);
}

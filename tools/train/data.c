// tools/train/data.c: micro-batches for the loop, from a pack (lib/pack.h).
// Every sample of a micro-batch is its own sequence: a padded row holds one,
// a packed row several, and either way positions restart and attention stops
// at each sample, so the trainer lays them end to end with no padding.
#include "train.h"
#include "check.h"
#include "pack.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t *ids; int32_t *labels; size_t *seq_start;
    size_t cap_tok, cap_seq;
} mb_store;

struct train_data {
    pack_file p;
    pack_schedule sched;
    size_t sched_accum, sched_world;
    mb_store *store; size_t n_store;
    micro_batch *mbs;
    micro_batch eval_mb;
    mb_store eval_store;
};

train_data *train_data_open(const char *path) {
    train_data *d = xcalloc(1, sizeof *d);
    pack_open_or_die(&d->p, path);
    return d;
}

void train_data_close(train_data *d) {
    if (d->sched_accum) pack_schedule_free(&d->sched);
    for (size_t i = 0; i < d->n_store; i++) {
        free(d->store[i].ids); free(d->store[i].labels); free(d->store[i].seq_start);
    }
    free(d->eval_store.ids); free(d->eval_store.labels); free(d->eval_store.seq_start);
    free(d->store);
    free(d->mbs);
    pack_close(&d->p);
    free(d);
}

const char *train_data_path(const train_data *d) { return d->p.path; }
size_t train_data_epochs(const train_data *d) { return d->p.h->n_epochs; }
size_t train_data_accum(const train_data *d) { return d->p.h->accum ? d->p.h->accum : 1; }
uint32_t train_data_max_token(const train_data *d) { return d->p.h->max_token_id; }
uint64_t train_data_targets(const train_data *d) { return d->p.h->n_targets; }
uint64_t train_data_samples(const train_data *d) { return d->p.h->n_samples; }

void train_data_max_batch(const train_data *d, size_t *max_tokens, size_t *max_len) {
    size_t mt = 0;
    for (size_t b = 0; b < d->p.h->n_batches; b++)
        if (d->p.batches[b].n_tokens > mt) mt = d->p.batches[b].n_tokens;
    *max_tokens = mt;
    *max_len = d->p.h->max_sample_len;
}

static void ensure_schedule(train_data *d, size_t accum, size_t world) {
    if (d->sched_accum == accum && d->sched_world == world) return;
    if (d->sched_accum) pack_schedule_free(&d->sched);
    char err[256];
    if (pack_schedule_init(&d->sched, &d->p, accum, world, err, sizeof err)) die("%s", err);
    d->sched_accum = accum;
    d->sched_world = world;
}

size_t train_data_steps(const train_data *d_, size_t epochs, size_t accum, size_t world) {
    train_data *d = (train_data *)d_;
    ensure_schedule(d, accum, world);
    return d->sched.epoch_step_first[epochs];
}

// Lay batch b's samples end to end into st and describe them in mb.
static void fill(train_data *d, int64_t b, mb_store *st, micro_batch *mb) {
    memset(mb, 0, sizeof *mb);
    if (b == PACK_EMPTY) return;
    const pack_batch *pb = pack_batch_at(&d->p, (size_t)b);
    size_t n_tok = pb->n_tokens, n_seq = 0;
    for (size_t i = 0; i < pb->n_rows; i++) {
        const uint32_t *ss;
        n_seq += pack_row_samples(&d->p, (size_t)b, i, &ss);
    }
    if (n_tok > st->cap_tok) {   // ids and labels grow together
        st->cap_tok = n_tok;
        st->ids = xrealloc(st->ids, n_tok * sizeof *st->ids);
        st->labels = xrealloc(st->labels, n_tok * sizeof *st->labels);
    }
    st->seq_start = xgrow(st->seq_start, &st->cap_seq, n_seq + 1, sizeof *st->seq_start);
    size_t t = 0, q = 0;
    for (size_t i = 0; i < pb->n_rows; i++) {
        const uint32_t *ss;
        size_t ns = pack_row_samples(&d->p, (size_t)b, i, &ss);
        for (size_t k = 0; k < ns; k++) {
            size_t s = ss[k], len = pack_sample_len(&d->p, s);
            st->seq_start[q++] = t;
            memcpy(st->ids + t, pack_sample_ids(&d->p, s), len * sizeof(uint32_t));
            pack_sample_labels(&d->p, s, st->labels + t);
            t += len;
        }
    }
    st->seq_start[q] = t;
    CHECK(t == n_tok, "%s: batch %lld holds %zu tokens, its index says %zu", d->p.path, (long long)b, t, n_tok);
    *mb = (micro_batch){n_tok, n_seq, st->ids, st->labels, st->seq_start};
}

void train_data_window(train_data *d, size_t step, size_t accum, size_t world, size_t rank, size_t epochs,
                       train_window *w) {
    ensure_schedule(d, accum, world);
    (void)epochs;
    if (d->n_store < accum) {
        d->store = xrealloc(d->store, accum * sizeof *d->store);
        memset(d->store + d->n_store, 0, (accum - d->n_store) * sizeof *d->store);
        d->mbs = xrealloc(d->mbs, accum * sizeof *d->mbs);
        d->n_store = accum;
    }
    w->mb = d->mbs;
    w->n_mb = accum;
    w->targets_global = pack_schedule_targets(&d->sched, step);
    w->tokens_global = 0;
    size_t e = pack_schedule_epoch(&d->sched, step);
    int64_t last = -1;
    for (size_t r = 0; r < world; r++)
        for (size_t k = 0; k < accum; k++) {
            int64_t b = pack_schedule_batch(&d->sched, step, r, k);
            if (b == PACK_EMPTY) continue;
            w->tokens_global += pack_batch_at(&d->p, (size_t)b)->n_tokens;
            if (b > last) last = b;
        }
    for (size_t k = 0; k < accum; k++) fill(d, pack_schedule_batch(&d->sched, step, rank, k), &d->store[k], &d->mbs[k]);
    // The Trainer's epoch: e + (micro-batches of the epoch done) / (micro-batches in the epoch).
    size_t first = pack_epoch_first(&d->p, e), nb = pack_epoch_batches(&d->p, e);
    w->epoch = (double)e + (last >= 0 ? (double)((size_t)last - first + 1) / (double)nb : 0.0);
}

size_t train_data_eval_count(const train_data *d) { return pack_epoch_batches(&d->p, 0); }

const micro_batch *train_data_eval_batch(train_data *d, size_t i) {
    fill(d, (int64_t)(pack_epoch_first(&d->p, 0) + i), &d->eval_store, &d->eval_mb);
    return &d->eval_mb;
}

// lib/pack.h: zero-copy reader of .pack files (format: lib/pack_format.h,
// docs/FORMATS.md) and the data-parallel schedule built on its batch index.
//
// pack_open maps the file read-only and validates everything once: the header
// against the file length, every section's size and alignment, every offset
// and count (samples contiguous, label runs inside their sample, batches and
// rows consistent, each sample exactly once per epoch), and (unless
// PACK_OPEN_NO_ID_SCAN) every token id and label against max_token_id.  The
// accessors below then trust the indices and do no checks of their own beyond
// asserting their arguments.
#ifndef LORAPIPE_PACK_H
#define LORAPIPE_PACK_H

#include "pack_format.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pack_file {
    char *path;
    const uint8_t *map;            // whole file, read-only
    size_t map_bytes;
    const pack_header *h;
    const uint32_t *tokens;        // (n_tokens)
    const pack_sample *samples;    // (n_samples)
    const pack_span *spans;        // (n_spans)
    const int32_t *labels;         // (n_label_words)
    const uint64_t *epoch_first;   // (n_epochs + 1)
    const pack_batch *batches;     // (n_batches)
    const uint64_t *row_first_seg; // (n_rows + 1)
    const uint32_t *segments;      // (n_segments)
} pack_file;

// Skip the O(n_tokens) scan of token ids and labels (header facts, --info).
#define PACK_OPEN_NO_ID_SCAN 1u

// 0 on success; -1 with a one-line message naming the file in err.
int pack_open(pack_file *p, const char *path, char *err, size_t errlen);
int pack_open_flags(pack_file *p, const char *path, unsigned flags, char *err, size_t errlen);
// Validate a pack image already in memory (map stays owned by the caller).
int pack_open_mem(pack_file *p, const void *data, size_t bytes, const char *name, unsigned flags,
                  char *err, size_t errlen);
// pack_open, or die() with the message.
void pack_open_or_die(pack_file *p, const char *path);
void pack_close(pack_file *p);

const char *pack_mode_name(uint32_t mode);        // "pad", "packed"
const char *pack_order_name(uint32_t order);      // "sequential", "random", "group_by_length"
const char *pack_packing_name(uint32_t packing);  // "none", "best_fit", "next_fit"

// ---- samples ----
static inline size_t pack_sample_len(const pack_file *p, size_t s) { return p->samples[s].len; }
static inline size_t pack_sample_targets(const pack_file *p, size_t s) { return p->samples[s].n_targets; }
// Token ids of sample s, (len), pointing into the map.
static inline const uint32_t *pack_sample_ids(const pack_file *p, size_t s) {
    return p->tokens + p->samples[s].tok_first;
}
// Labels of sample s expanded into out (len int32; -100 = not trained; before
// the causal shift, exactly as tokenize wrote them).
void pack_sample_labels(const pack_file *p, size_t s, int32_t *out);

// ---- micro-batches, rows, segments ----
static inline const pack_batch *pack_batch_at(const pack_file *p, size_t b) { return p->batches + b; }
// Row i (0 <= i < n_rows) of batch b: its samples in position order (positions
// restart at 0 at each one and attention never crosses them); returns the count.
static inline size_t pack_row_samples(const pack_file *p, size_t b, size_t i, const uint32_t **samples) {
    size_t r = p->batches[b].row_first + i;
    *samples = p->segments + p->row_first_seg[r];
    return (size_t)(p->row_first_seg[r + 1] - p->row_first_seg[r]);
}
// Real tokens in row i of batch b (sum of its samples' lengths).
size_t pack_row_len(const pack_file *p, size_t b, size_t i);
// Micro-batches of epoch e: [first, first + count).
static inline size_t pack_epoch_first(const pack_file *p, size_t e) { return p->epoch_first[e]; }
static inline size_t pack_epoch_batches(const pack_file *p, size_t e) {
    return (size_t)(p->epoch_first[e + 1] - p->epoch_first[e]);
}

// ---- data-parallel schedule ----
// An optimizer step (window) covers accum * world consecutive micro-batches of
// one epoch; windows never cross epochs and the last window of an epoch may be
// short.  Position j of window w goes to rank j % world as its slot j / world
// (round-robin, as accelerate shards a DataLoader); positions past the end of a
// short window are PACK_EMPTY: a micro-batch with no tokens that contributes
// nothing, so that every rank runs accum micro-batches per step and the
// window's global target count (the loss normaliser) is the one-GPU count.
#define PACK_EMPTY (-1)
typedef struct {
    const pack_file *p;
    size_t accum, world;
    size_t n_steps;
    uint64_t *epoch_step_first;    // (n_epochs + 1): first step of each epoch, then n_steps
} pack_schedule;

// 0, or -1 with a message (accum or world 0).
int pack_schedule_init(pack_schedule *s, const pack_file *p, size_t accum, size_t world, char *err, size_t errlen);
void pack_schedule_free(pack_schedule *s);
// Epoch of step w, and the first micro-batch of its window.
size_t pack_schedule_epoch(const pack_schedule *s, size_t step);
// Micro-batch for (step, rank, slot < accum), or PACK_EMPTY.
int64_t pack_schedule_batch(const pack_schedule *s, size_t step, size_t rank, size_t slot);
// Number of real micro-batches in window w (<= accum * world).
size_t pack_schedule_window_batches(const pack_schedule *s, size_t step);
// Target tokens of the whole window, all ranks together.
uint64_t pack_schedule_targets(const pack_schedule *s, size_t step);

#endif

// lib/arena.h: one allocation per class of buffer (weights, LoRA state,
// activations, workspace), carved by bumping a pointer; reset per use.
#ifndef LORAPIPE_ARENA_H
#define LORAPIPE_ARENA_H
#include <stddef.h>

typedef struct {
    const char *name;
    char *base;
    size_t cap, used, peak;
} arena;

void arena_init(arena *a, const char *name, size_t bytes);
// Make sure the arena holds at least bytes (reallocates only when empty: call between uses).
void arena_reserve(arena *a, size_t bytes);
// 64-byte aligned carve-out; dies naming the arena when it is too small.
void *arena_alloc(arena *a, size_t bytes);
float *arena_floats(arena *a, size_t n);
void arena_reset(arena *a);
void arena_free(arena *a);
// Bytes a sequence of allocations needs, with the same alignment.
static inline size_t arena_round(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

#endif

// lib/arena.c: bump allocator over one aligned block.
#include "arena.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

void arena_init(arena *a, const char *name, size_t bytes) {
    memset(a, 0, sizeof *a);
    a->name = name;
    arena_reserve(a, bytes);
}

void arena_reserve(arena *a, size_t bytes) {
    bytes = arena_round(bytes);
    if (bytes <= a->cap) return;
    CHECK(a->used == 0, "arena %s grown while in use", a->name);
    free(a->base);
    a->base = NULL;
    if (posix_memalign((void **)&a->base, 64, bytes ? bytes : 64) != 0)
        die("out of memory: the %s arena needs %zu bytes", a->name, bytes);
    a->cap = bytes;
}

void *arena_alloc(arena *a, size_t bytes) {
    bytes = arena_round(bytes);
    if (a->used + bytes > a->cap)
        die("internal: the %s arena (%zu bytes) is too small for %zu more bytes", a->name, a->cap, bytes);
    void *p = a->base + a->used;
    a->used += bytes;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

float *arena_floats(arena *a, size_t n) { return arena_alloc(a, n * sizeof(float)); }
void arena_reset(arena *a) { a->used = 0; }
void arena_free(arena *a) { free(a->base); memset(a, 0, sizeof *a); }

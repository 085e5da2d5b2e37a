// lib/hashmap.h: two small open-addressing hash maps used by the tokenizer.
//   strmap: byte string -> int32 (vocabularies; keys copied into an arena)
//   u64map: uint64 -> uint64 (BPE merges keyed by (left id, right id))
// Both grow by doubling at 50% load; lookups never allocate.
#ifndef LORAPIPE_HASHMAP_H
#define LORAPIPE_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash_bytes(const void *p, size_t n);
static inline uint64_t hash_u64(uint64_t x) {
    // splitmix64 finaliser: cheap and mixes every input bit into the low bits.
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

typedef struct {
    struct strmap_slot { uint64_t hash; uint32_t off, len; int32_t val; } *slots;
    size_t cap, n;            // cap is a power of two
    char *arena; size_t arena_len, arena_cap;
} strmap;

void strmap_init(strmap *m, size_t expect);
void strmap_free(strmap *m);
// Insert or overwrite; returns 1 when the key was new.
int strmap_put(strmap *m, const char *key, size_t len, int32_t val);
// Returns the value or -1.
int32_t strmap_get(const strmap *m, const char *key, size_t len);

typedef struct {
    struct u64map_slot { uint64_t key, val; } *slots;   // key UINT64_MAX = empty
    size_t cap, n;
} u64map;

void u64map_init(u64map *m, size_t expect);
void u64map_free(u64map *m);
// Insert or overwrite; returns 1 when the key was new.
int u64map_put(u64map *m, uint64_t key, uint64_t val);
// Returns 1 and sets *val when found.
static inline int u64map_get(const u64map *m, uint64_t key, uint64_t *val) {
    size_t mask = m->cap - 1, i = (size_t)hash_u64(key) & mask;
    for (;;) {
        const struct u64map_slot *s = &m->slots[i];
        if (s->key == key) { *val = s->val; return 1; }
        if (s->key == UINT64_MAX) return 0;
        i = (i + 1) & mask;
    }
}

#endif

// lib/hashmap.c: open-addressing maps with linear probing (see hashmap.h).
#include "hashmap.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

uint64_t hash_bytes(const void *p, size_t n) {
    // 8 bytes per step, multiply-xorshift mixing; quality is ample for
    // vocabulary strings and word caches, and it is several times faster than
    // a byte-at-a-time FNV on the long CJK pieces the tokenizer sees.
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0xff51afd7ed558ccdULL);
    while (n >= 8) {
        uint64_t w; memcpy(&w, s, 8);
        h = (h ^ hash_u64(w)) * 0x9fb21c651e98df25ULL;
        s += 8; n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ hash_u64(w ^ ((uint64_t)n << 56))) * 0x9fb21c651e98df25ULL;
    return hash_u64(h);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

void strmap_init(strmap *m, size_t expect) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2 + 1);
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    for (size_t i = 0; i < m->cap; i++) m->slots[i].val = -1;
}

void strmap_free(strmap *m) {
    free(m->slots); free(m->arena);
    memset(m, 0, sizeof *m);
}

static struct strmap_slot *strmap_find(const strmap *m, uint64_t h, const char *key, size_t len) {
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    for (;;) {
        struct strmap_slot *s = &m->slots[i];
        if (s->val < 0) return s;
        if (s->hash == h && s->len == len && !memcmp(m->arena + s->off, key, len)) return s;
        i = (i + 1) & mask;
    }
}

static void strmap_grow(strmap *m) {
    struct strmap_slot *old = m->slots;
    size_t oc = m->cap;
    m->cap *= 2;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    for (size_t i = 0; i < m->cap; i++) m->slots[i].val = -1;
    for (size_t i = 0; i < oc; i++) {
        if (old[i].val < 0) continue;
        size_t mask = m->cap - 1, j = (size_t)old[i].hash & mask;
        while (m->slots[j].val >= 0) j = (j + 1) & mask;
        m->slots[j] = old[i];
    }
    free(old);
}

int strmap_put(strmap *m, const char *key, size_t len, int32_t val) {
    CHECK(val >= 0, "strmap values must be non-negative");
    CHECK(len < UINT32_MAX, "key too long");
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    uint64_t h = hash_bytes(key, len);
    struct strmap_slot *s = strmap_find(m, h, key, len);
    if (s->val >= 0) { s->val = val; return 0; }
    m->arena = xgrow(m->arena, &m->arena_cap, m->arena_len + len + 1, 1);
    CHECK(m->arena_len + len < UINT32_MAX, "vocabulary arena over 4 GiB");
    memcpy(m->arena + m->arena_len, key, len);
    s->hash = h; s->off = (uint32_t)m->arena_len; s->len = (uint32_t)len; s->val = val;
    m->arena_len += len;
    m->n++;
    return 1;
}

int32_t strmap_get(const strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    return strmap_find(m, hash_bytes(key, len), key, len)->val;
}

void u64map_init(u64map *m, size_t expect) {
    m->cap = pow2_at_least(expect * 2 + 1);
    m->n = 0;
    m->slots = xmalloc(m->cap * sizeof *m->slots);
    memset(m->slots, 0xff, m->cap * sizeof *m->slots);
}

void u64map_free(u64map *m) { free(m->slots); memset(m, 0, sizeof *m); }

int u64map_put(u64map *m, uint64_t key, uint64_t val) {
    CHECK(key != UINT64_MAX, "reserved u64map key");
    if ((m->n + 1) * 2 > m->cap) {
        struct u64map_slot *old = m->slots;
        size_t oc = m->cap;
        m->cap *= 2;
        m->slots = xmalloc(m->cap * sizeof *m->slots);
        memset(m->slots, 0xff, m->cap * sizeof *m->slots);
        for (size_t i = 0; i < oc; i++) {
            if (old[i].key == UINT64_MAX) continue;
            size_t mask = m->cap - 1, j = (size_t)hash_u64(old[i].key) & mask;
            while (m->slots[j].key != UINT64_MAX) j = (j + 1) & mask;
            m->slots[j] = old[i];
        }
        free(old);
    }
    size_t mask = m->cap - 1, i = (size_t)hash_u64(key) & mask;
    while (m->slots[i].key != UINT64_MAX) {
        if (m->slots[i].key == key) { m->slots[i].val = val; return 0; }
        i = (i + 1) & mask;
    }
    m->slots[i].key = key; m->slots[i].val = val;
    m->n++;
    return 1;
}

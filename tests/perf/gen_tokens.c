// tests/perf/gen_tokens.c: synthetic token JSONL for pack's scale measurement
// (docs/PERF.md).  usage: gen_tokens N_SAMPLES MEAN_LEN [SEED] > out.jsonl
// Lengths uniform in [MEAN_LEN/5, 9*MEAN_LEN/5], ids uniform in [0, 151646),
// a random prompt prefix masked with -100 and the rest trained, as tokenize
// writes SFT records.  Deterministic for a given seed.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng_state;
static uint64_t next_u64(void) {   // splitmix64: fast, good enough for test data
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static char *put_u32(char *p, uint32_t v) {
    char tmp[12];
    int k = 0;
    do { tmp[k++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (k) *p++ = tmp[--k];
    return p;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: gen_tokens N_SAMPLES MEAN_LEN [SEED]\n"); return 2; }
    uint64_t n = strtoull(argv[1], NULL, 10), mean = strtoull(argv[2], NULL, 10);
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    if (!n || mean < 5) { fprintf(stderr, "gen_tokens: need N >= 1 and MEAN_LEN >= 5\n"); return 2; }
    uint64_t lo = mean / 5, span = 8 * mean / 5 + 1;
    uint32_t *ids = malloc((lo + span) * sizeof *ids);
    char *buf = malloc((lo + span) * 24 + 64);
    static char obuf[1 << 20];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    for (uint64_t s = 0; s < n; s++) {
        uint64_t len = lo + next_u64() % span, prompt = next_u64() % len;
        for (uint64_t i = 0; i < len; i++) ids[i] = (uint32_t)(next_u64() % 151646);
        char *p = buf;
        p += sprintf(p, "{\"input_ids\":[");
        for (uint64_t i = 0; i < len; i++) { if (i) *p++ = ','; p = put_u32(p, ids[i]); }
        p += sprintf(p, "],\"labels\":[");
        for (uint64_t i = 0; i < len; i++) {
            if (i) *p++ = ',';
            if (i < prompt) { *p++ = '-'; *p++ = '1'; *p++ = '0'; *p++ = '0'; }
            else p = put_u32(p, ids[i]);
        }
        p += sprintf(p, "]}\n");
        fwrite(buf, 1, (size_t)(p - buf), stdout);
    }
    free(ids); free(buf);
    return fflush(stdout) != 0;
}

// fuzz/fuzz_pack.c: the .pack reader (lib/pack.c).  Whatever pack_open_mem
// accepts is then walked as train walks it (every sample's labels, every row
// of every micro-batch, the data-parallel schedule), so that a check missing
// at open shows up as an out-of-bounds read here.
#include "fuzz_common.h"
#include "pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    if (setjmp(fz_jmp)) abort();       // pack_open_mem reports errors; it must never die
    // The file is used in place, as through mmap: give it a page-aligned copy.
    size_t cap = (n + 4095) / 4096 * 4096;
    uint8_t *img = aligned_alloc(4096, cap ? cap : 4096);
    if (!img) abort();
    memcpy(img, data, n);
    pack_file p;
    char err[512];
    if (pack_open_mem(&p, img, n, "fuzz.pack", 0, err, sizeof err) != 0) { free(img); return 0; }
    const pack_header *h = p.h;
    uint64_t tokens = 0, targets = 0;
    int32_t *lab = malloc(((size_t)h->max_sample_len + 1) * sizeof *lab);
    if (!lab) abort();
    for (size_t s = 0; s < h->n_samples; s++) {
        size_t len = pack_sample_len(&p, s);
        if (len > h->max_sample_len) abort();
        pack_sample_labels(&p, s, lab);
        const uint32_t *ids = pack_sample_ids(&p, s);
        size_t t = 0;
        for (size_t i = 0; i < len; i++) {
            if (ids[i] > h->max_token_id) abort();
            if (i && lab[i] != -100) t++;
        }
        if (t != pack_sample_targets(&p, s)) abort();
        tokens += len;
        targets += t;
    }
    free(lab);
    if (tokens != h->n_tokens || targets != h->n_targets) abort();
    for (size_t b = 0; b < h->n_batches; b++) {
        const pack_batch *pb = pack_batch_at(&p, b);
        size_t bt = 0;
        for (size_t i = 0; i < pb->n_rows; i++) {
            const uint32_t *ss;
            size_t k = pack_row_samples(&p, b, i, &ss);
            for (size_t j = 0; j < k; j++) if (ss[j] >= h->n_samples) abort();
            size_t rl = pack_row_len(&p, b, i);
            if (rl > pb->row_len) abort();
            bt += rl;
        }
        if (bt != pb->n_tokens) abort();
    }
    pack_schedule sc;
    size_t accum = 1 + (h->n_batches & 3), world = 1 + (h->n_samples & 1);
    if (pack_schedule_init(&sc, &p, accum, world, err, sizeof err) == 0) {
        for (size_t st = 0; st < sc.n_steps; st++) {
            (void)pack_schedule_targets(&sc, st);
            for (size_t r = 0; r < world; r++)
                for (size_t k = 0; k < accum; k++) {
                    int64_t b = pack_schedule_batch(&sc, st, r, k);
                    if (b != PACK_EMPTY && (b < 0 || (uint64_t)b >= h->n_batches)) abort();
                }
        }
        pack_schedule_free(&sc);
    }
    pack_close(&p);
    free(img);
    return 0;
}

// fuzz/fuzz_plan.c: the placement file (lib/plan.c plan_load), as train --plan
// reads it.
#include "fuzz_common.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    if (setjmp(fz_jmp)) abort();       // plan_load reports errors; it must never die
    plan p;
    char err[1024];
    if (plan_load(&p, fz_memfile(data, n), err, sizeof err) == 0) {
        if (!p.replicas || p.replicas > p.gpus || !p.stages || p.stages > p.layers || !p.fingerprint) abort();
        // What the trainer relies on: contiguous stages over every layer, real GPU indices.
        if (p.bounds[0] != 0 || p.bounds[p.stages] != p.layers) abort();
        for (size_t s = 0; s < p.stages; s++) if (p.bounds[s] >= p.bounds[s + 1]) abort();
        for (size_t k = 0; k < p.replicas * p.stages; k++) if (p.gpu[k] < 0 || (size_t)p.gpu[k] >= p.gpus) abort();
        plan_free(&p);
    }
    return 0;
}

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
        if (!p.replicas || p.replicas > p.gpus || p.stages != 1 || !p.fingerprint) abort();
        plan_free(&p);
    }
    return 0;
}

// fuzz/fuzz_hf_config.c: config.json (lib/hf_config.c), then everything that
// sizes things from it: the expected tensor list, the model dimensions and
// fingerprint a plan carries, the adaptable layers, the memory plan and the
// rewritten config export writes.  Absurd sizes must be refused at parse time,
// not overflow later.
#include "fuzz_common.h"
#include "adapter.h"
#include "hf_config.h"
#include "hf_model.h"
#include "mem_plan.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    // The trainer's own refusals (plan_dims_from_config: an odd head size) are
    // fine; anything else dying is not (xmalloc's "out of memory" included).
    static hf_config c;
    if (setjmp(fz_jmp)) { hf_config_free(&c); return 0; }
    char err[1024];
    if (hf_config_parse(&c, (const char *)data, n, "config.json", err, sizeof err) != 0) return 0;
    hf_tensor_spec *specs;
    size_t ns = hf_expected_tensors(&c, &specs);
    free(specs);
    if (ns != 3 + 12 * c.num_hidden_layers) abort();
    adapter_target *targets;
    size_t nt = adapter_linear_modules(&c, &targets);
    free(targets);
    (void)nt;
    char *dump = hf_config_dump_with_dtype(&c, DT_BF16);
    free(dump);
    model_dims d = plan_dims_from_config(&c);
    (void)plan_fingerprint(&d);
    (void)plan_parameter_count(&d);
    int on[LORA_NMOD];
    for (int i = 0; i < LORA_NMOD; i++) on[i] = 1;
    mem_plan_in in = {.d = &d, .r = 8, .on = on, .max_tokens = 4096, .max_len = 2048, .recompute = (int)(n & 1)};
    mem_plan m;
    mem_plan_compute(&m, &in);
    hf_config_free(&c);
    return 0;
}

// fuzz/fuzz_adapter_config.c: adapter_config.json (lib/adapter.c): parse, then
// match every linear layer of a tiny Qwen2 model against the fuzzed
// target_modules / exclude_modules / rank_pattern / alpha_pattern (PEFT's
// regex semantics through PCRE2), and write the config back out.
#include "fuzz_common.h"
#include "fuzz_tiny_config.h"
#include "adapter.h"
#include "hf_config.h"

static hf_config cfg;
static adapter_target *mods;
static size_t n_mods;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    if (!cfg.path) {
        char err[512];
        if (hf_config_parse(&cfg, FZ_TINY_CONFIG, sizeof FZ_TINY_CONFIG - 1, "config.json", err, sizeof err)) abort();
        n_mods = adapter_linear_modules(&cfg, &mods);
    }
    if (setjmp(fz_jmp)) abort();       // the parser reports errors; it must never die
    adapter_config c;
    char err[1024];
    if (adapter_config_parse(&c, (const char *)data, n, "adapter_config.json", err, sizeof err) != 0) return 0;
    for (size_t i = 0; i < n_mods; i++) {
        (void)adapter_targets(&c, mods[i].name);
        (void)adapter_rank(&c, mods[i].name);
        (void)adapter_scaling(&c, mods[i].name);
    }
    char *dump = adapter_config_dump(&c);
    free(dump);
    adapter_config_free(&c);
    return 0;
}

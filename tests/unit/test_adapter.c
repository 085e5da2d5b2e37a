// tests/unit/test_adapter.c: PEFT adapter folders: reading PEFT 0.21's files,
// scaling with rsLoRA and patterns, module matching, validation against a
// model config, and adapter_save giving PEFT's bytes.
#include "adapter.h"
#include "atomic_out.h"
#include "check.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/tiny-models/"
static char tmpdir[] = "/tmp/test_adapter.XXXXXX";

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    int same = na == nb && !memcmp(x, y, na);
    free(x); free(y);
    return same;
}

// Load, save again, compare with PEFT's files.
static void round_trip(const char *name) {
    char dir[256], out[400], a1[512], b1[512];
    snprintf(dir, sizeof dir, FIX "%s", name);
    adapter a;
    char err[1024] = "";
    T_OK(adapter_load(&a, dir, err, sizeof err) == 0, "%s loads: %s", name, err);
    if (err[0]) return;
    snprintf(out, sizeof out, "%s/%s", tmpdir, name);
    adapter_save(out, &a.cfg, a.mods, a.n, DT_F32);
    snprintf(a1, sizeof a1, "%s/adapter_model.safetensors", out);
    snprintf(b1, sizeof b1, "%s/adapter_model.safetensors", dir);
    T_OK(same_file(a1, b1), "%s: adapter_model.safetensors byte-identical to PEFT's", name);
    snprintf(a1, sizeof a1, "%s/adapter_config.json", out);
    snprintf(b1, sizeof b1, FIX "%s.config-sorted.json", name);
    T_OK(same_file(a1, b1), "%s: adapter_config.json byte-identical to PEFT's (target_modules sorted)", name);
    adapter_free(&a);
}

static hf_config tiny_config(const char *edit_from, const char *edit_to) {
    size_t n;
    char *t = read_file(FIX "qwen2-tiny-untied-bf16/config.json", &n);
    char buf[4096];
    const char *p = edit_from ? strstr(t, edit_from) : NULL;
    if (p) snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - t), t, edit_to, p + strlen(edit_from));
    else snprintf(buf, sizeof buf, "%s", t);
    free(t);
    hf_config c;
    char err[512];
    if (hf_config_parse(&c, buf, strlen(buf), "model/config.json", err, sizeof err)) die("%s", err);
    return c;
}

static void test_load_and_scaling(void) {
    adapter a;
    adapter_load_or_die(&a, FIX "lora-qkvo-r8");
    T_OK(a.n == 8 && a.cfg.r == 8 && a.cfg.lora_alpha == 32 && fabs(a.cfg.lora_dropout - 0.1) < 1e-12, "qkvo config");
    T_OK(a.file_dtype == DT_F32, "F32 tensors");
    const adapter_lora *k = adapter_find(&a, "model.layers.1.self_attn.k_proj");
    T_OK(k && k->r == 8 && k->in == 64 && k->out == 32, "k_proj A [8, 64], B [32, 8]");
    T_OK(adapter_scaling(&a.cfg, "model.layers.0.self_attn.q_proj") == 4.0, "alpha / r = 4");
    hf_config c = tiny_config(NULL, NULL);
    char err[1024] = "";
    T_OK(adapter_validate(&a, &c, err, sizeof err) == 0, "fits the tiny model: %s", err);
    hf_config_free(&c);
    adapter_free(&a);

    adapter_load_or_die(&a, FIX "lora-all-rslora");
    T_OK(a.n == 14 && a.cfg.use_rslora, "rsLoRA on 7 layers x 2");
    T_OK(adapter_scaling(&a.cfg, "model.layers.0.mlp.up_proj") == 16.0 / sqrt(8.0), "alpha / sqrt(r)");
    adapter_free(&a);

    adapter_load_or_die(&a, FIX "lora-pattern");
    T_OK(adapter_rank(&a.cfg, "model.layers.1.mlp.down_proj") == 4 && adapter_find(&a, "model.layers.1.mlp.down_proj")->r == 4,
         "rank_pattern down_proj: 4");
    T_OK(adapter_scaling(&a.cfg, "model.layers.0.self_attn.q_proj") == 10.0 / 8, "alpha_pattern q_proj: 10 / 8");
    T_OK(adapter_scaling(&a.cfg, "model.layers.0.self_attn.v_proj") == 2.0, "v_proj: 16 / 8");
    T_OK(adapter_scaling(&a.cfg, "model.layers.0.mlp.down_proj") == 4.0, "down_proj: 16 / 4");
    adapter_free(&a);
}

static void test_fresh_config(void) {
    // What a trainer builds: the same bytes as PEFT's file.
    adapter_config c;
    adapter_config_init(&c);
    c.lora_alpha = 32;
    c.lora_dropout = 0.1;
    const char *t[] = {"v_proj", "q_proj", "o_proj", "k_proj"};
    c.target_modules = malloc(4 * sizeof(char *));
    for (int i = 0; i < 4; i++) c.target_modules[c.n_target++] = xstrdup(t[i]);
    c.base_model_name_or_path = xstrdup("tests/fixtures/tiny-models/qwen2-tiny-untied-bf16");
    char *s = adapter_config_dump(&c);
    size_t n;
    char *want = read_file(FIX "lora-qkvo-r8.config-sorted.json", &n);
    T_OK(!strcmp(s, want), "fresh config = PEFT's file:\n%s", s);
    free(s); free(want);
    T_OK(adapter_targets(&c, "model.layers.3.self_attn.o_proj") && !adapter_targets(&c, "model.layers.3.mlp.up_proj") &&
         !adapter_targets(&c, "model.layers.3.self_attn.xo_proj"), "suffix matching after a dot");
    c.layers_to_transform = malloc(sizeof(long));
    c.layers_to_transform[c.n_layers++] = 1;
    T_OK(!adapter_targets(&c, "model.layers.0.self_attn.q_proj") && adapter_targets(&c, "model.layers.1.self_attn.q_proj"),
         "layers_to_transform [1]");
    c.layers_pattern = malloc(sizeof(char *));
    c.layers_pattern[c.n_layers_pattern++] = xstrdup("layers");
    T_OK(adapter_targets(&c, "model.layers.1.self_attn.q_proj") && !adapter_targets(&c, "model.blocks.1.self_attn.q_proj"),
         "layers_pattern \"layers\"");
    s = adapter_config_dump(&c);
    T_OK(strstr(s, "\"layers_to_transform\": [\n    1\n  ],") && strstr(s, "\"layers_pattern\": \"layers\","),
         "layer filters written:\n%s", s);
    free(s);
    // A file's spelling of the same filter is kept (an int stays an int).
    const char *txt = "{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"], \"layers_to_transform\": 1}";
    adapter_config d;
    char err[256];
    T_OK(adapter_config_parse(&d, txt, strlen(txt), "x", err, sizeof err) == 0 && d.n_layers == 1, "int layers_to_transform");
    s = adapter_config_dump(&d);
    T_OK(strstr(s, "\"layers_to_transform\": 1,") != NULL, "kept as an int");
    free(s);
    adapter_config_free(&d);
    c.exclude_modules = malloc(sizeof(char *));
    c.exclude_modules[c.n_exclude++] = xstrdup("model.layers.1.self_attn.k_proj");
    T_OK(!adapter_targets(&c, "model.layers.1.self_attn.k_proj") && adapter_targets(&c, "model.layers.1.self_attn.v_proj"),
         "exclude_modules");
    c.target_regex = xstrdup(".*\\.(q|v)_proj");
    T_OK(adapter_targets(&c, "model.layers.0.self_attn.q_proj") && !adapter_targets(&c, "model.layers.0.self_attn.o_proj"),
         "regex target (fullmatch)");
    adapter_config_free(&c);
}

static void expect_config_refused(const char *from, const char *to, const char *needle) {
    size_t n;
    char *t = read_file(FIX "lora-qkvo-r8/adapter_config.json", &n);
    char buf[8192];
    const char *p = strstr(t, from);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - t), t, to, p + strlen(from));
    adapter_config c;
    char err[512] = "";
    int r = adapter_config_parse(&c, buf, strlen(buf), "adapter_config.json", err, sizeof err);
    T_OK(r == -1 && strstr(err, needle), "refuse %s: %s", to, err);
    if (!r) adapter_config_free(&c);
    free(t);
}

static void expect_invalid(const char *from, const char *to, const char *needle) {
    adapter a;
    adapter_load_or_die(&a, FIX "lora-qkvo-r8");
    hf_config c = tiny_config(from, to);
    char err[1024] = "";
    int r = adapter_validate(&a, &c, err, sizeof err);
    T_OK(r == -1 && strstr(err, needle) && !strchr(err, '\n'), "model with %s: %s", to, err);
    hf_config_free(&c);
    adapter_free(&a);
}

static void test_refusals(void) {
    expect_config_refused("\"use_dora\": false", "\"use_dora\": true", "use_dora");
    expect_config_refused("\"init_lora_weights\": true", "\"init_lora_weights\": \"pissa\"", "pissa");
    expect_config_refused("\"bias\": \"none\"", "\"bias\": \"all\"", "bias");
    expect_config_refused("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", "IA3");
    expect_config_refused("\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]", "modules_to_save");
    expect_config_refused("\"r\": 8", "\"r\": 0", "\"r\"");
    // Regexes must compile and must not backtrack catastrophically on a module
    // name ("(.|.)*[!?]" took 87 s on a 2-layer model, then matched nothing).
    expect_config_refused("\"rank_pattern\": {}", "\"rank_pattern\": {\"(q\": 4}", "rank_pattern regex \"(q\" does not compile");
    expect_config_refused("\"layers_pattern\": null", "\"layers_pattern\": \"(.|.)*[!?]\"", "layers_pattern regex");
    expect_config_refused("\"rank_pattern\": {}", "\"rank_pattern\": {\"(.|.)*[!?]\": 4}",
                          "backtracks catastrophically (more than 100000 steps");
    expect_invalid("\"hidden_size\": 64", "\"hidden_size\": 128, \"head_dim\": 16", "adapter for another model");
    expect_invalid("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1", "layer 1 is out of range");
    // Loaded adapters whose files disagree with their own config.
    adapter a;
    adapter_load_or_die(&a, FIX "lora-qkvo-r8");
    char dir[512], err[1024] = "";
    snprintf(dir, sizeof dir, "%s/untargeted", tmpdir);
    free(a.mods[0].module);
    a.mods[0].module = xstrdup("model.layers.0.mlp.up_proj");   // not in target_modules
    adapter_save(dir, &a.cfg, a.mods, a.n, DT_F32);
    adapter b;
    T_OK(adapter_load(&b, dir, err, sizeof err) == -1 && strstr(err, "not targeted"), "untargeted module: %s", err);
    free(a.mods[0].module);
    a.mods[0].module = xstrdup("model.layers.0.self_attn.k_proj");
    a.cfg.r = 4;   // the file says 8
    snprintf(dir, sizeof dir, "%s/rank", tmpdir);
    adapter_save(dir, &a.cfg, a.mods, a.n, DT_F32);
    T_OK(adapter_load(&b, dir, err, sizeof err) == -1 && strstr(err, "adapter_config.json says 4"), "rank: %s", err);
    // target_modules naming nothing in a Qwen2 model.
    a.cfg.r = 8;
    free(a.cfg.target_modules[0]);
    a.cfg.target_modules[0] = xstrdup("c_attn");
    hf_config c = tiny_config(NULL, NULL);
    T_OK(adapter_validate(&a, &c, err, sizeof err) == -1 && strstr(err, "'c_attn' matches no linear layer"),
         "unknown target: %s", err);
    hf_config_free(&c);
    adapter_free(&a);
    T_OK(adapter_load(&b, "/nonexistent", err, sizeof err) == -1 && strstr(err, "no adapter_config.json"), "%s", err);
    snprintf(dir, sizeof dir, "%s/noweights", tmpdir);
    mkdir_p(dir);
    char p[600];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"]}", f);
    fclose(f);
    T_OK(adapter_load(&b, dir, err, sizeof err) == -1 && strstr(err, "no adapter_model.safetensors"), "%s", err);
}

static void test_bf16_save(void) {
    adapter a, b;
    adapter_load_or_die(&a, FIX "lora-qkvo-r8");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bf16", tmpdir);
    adapter_save(dir, &a.cfg, a.mods, a.n, DT_BF16);
    adapter_load_or_die(&b, dir);
    T_OK(b.file_dtype == DT_BF16 && b.n == a.n, "reloaded as BF16");
    size_t bad = 0;
    for (size_t i = 0; i < a.n; i++)
        for (size_t j = 0; j < a.mods[i].r * a.mods[i].in; j++)
            bad += b.mods[i].A[j] != bf16_to_f32(f32_to_bf16(a.mods[i].A[j]));
    T_OK(bad == 0, "values rounded once to bf16 (%zu differ)", bad);
    adapter_free(&a);
    adapter_free(&b);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    round_trip("lora-qkvo-r8");
    round_trip("lora-all-rslora");
    round_trip("lora-pattern");
    test_load_and_scaling();
    test_fresh_config();
    test_refusals();
    test_bf16_save();
    rm_rf(tmpdir);
    return T_DONE("test_adapter");
}

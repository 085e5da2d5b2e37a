// tests/unit/test_lora.c: LoRA arena layout, PEFT's seeded initialisation
// (bit for bit against tests/fixtures/train/lora_init, made by
// tests/golden/lora_init.py), the schedules and AdamW arithmetic.
#include "check.h"
#include "lora.h"
#include "optim.h"
#include "safetensors.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void check_init_file(const char *path, int round_bf16) {
    model_dims d = {.vocab = 96, .hidden = 64, .inter = 128, .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 16};
    int on[LORA_NMOD];
    for (int m = 0; m < LORA_NMOD; m++) on[m] = 1;
    lora_layout l;
    lora_layout_init(&l, &d, 4, 8, 0, on);
    float *p = calloc(l.n_params, sizeof(float));
    lora_init_peft(&l, p, 1234, round_bf16);
    st_file f;
    char err[512];
    if (st_open(&f, path, err, sizeof err)) { T_OK(0, "%s", err); free(p); return; }
    size_t mismatched = 0, checked = 0;
    for (size_t t = 0; t < l.n_tensors; t++) {
        size_t layer; int m, is_b;
        lora_tensor_at(&l, t, &layer, &m, &is_b);
        char key[160];
        lora_tensor_key(layer, m, is_b, key, sizeof key);
        const st_tensor *st = st_find(&f, key);
        T_OK(st != NULL, "%s present in %s", key, path);
        if (!st) continue;
        size_t off = is_b ? l.off_b[layer * LORA_NMOD + m] : l.off_a[layer * LORA_NMOD + m];
        T_OK(st->numel == lora_tensor_numel(&l, m, is_b), "%s numel", key);
        const float *ref = st->data;
        for (size_t i = 0; i < st->numel; i++, checked++) mismatched += memcmp(&ref[i], &p[off + i], 4) != 0;
    }
    T_OK(mismatched == 0, "%s: %zu of %zu values differ from PEFT's init", path, mismatched, checked);
    st_close(&f);
    free(p);
    lora_layout_free(&l);
}

int main(void) {
    // Layout: PEFT's named_parameters order, A then B.
    model_dims d = {.vocab = 10, .hidden = 8, .inter = 12, .layers = 2, .heads = 2, .kv_heads = 1, .head_dim = 4};
    int on[LORA_NMOD] = {1, 0, 1, 0, 0, 0, 1};
    lora_layout l;
    lora_layout_init(&l, &d, 2, 4, 0, on);
    T_OK(l.n_tensors == 12, "tensors %zu", l.n_tensors);
    // q: A 2x8, B 8x2; v: A 2x8, B 4x2; down: A 2x12, B 8x2 -> 32 + 24 + 40 = 96 per layer
    T_OK(l.n_params == 192, "params %zu", l.n_params);
    T_OK(l.off_a[LORA_NMOD + LORA_Q] == 96, "layer 1 starts at 96");
    T_NEAR(l.scaling, 2.0, 0, 0, "alpha/r");
    size_t li; int m, b;
    lora_tensor_at(&l, 5, &li, &m, &b);
    T_OK(li == 0 && m == LORA_DOWN && b == 1, "tensor 5 is layer 0 down B");
    char key[128];
    lora_tensor_key(1, LORA_V, 0, key, sizeof key);
    T_OK(!strcmp(key, "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"), "%s", key);
    lora_layout_free(&l);
    lora_layout_init(&l, &d, 4, 16, 1, on);
    T_NEAR(l.scaling, 8.0, 0, 0, "rsLoRA alpha/sqrt(r)");
    lora_layout_free(&l);
    int t[LORA_NMOD];
    char err[200];
    T_OK(lora_parse_targets("q_proj,v", t, err, sizeof err) == 0 && t[LORA_Q] && t[LORA_V] && !t[LORA_K], "targets");
    T_OK(lora_parse_targets("q_proj,lm_head", t, err, sizeof err) != 0 && strstr(err, "lm_head"), "bad target named");

    check_init_file("tests/fixtures/train/lora_init/fp32.safetensors", 0);
    check_init_file("tests/fixtures/train/lora_init/bf16.safetensors", 1);

    // Schedules (transformers' formulas), S = 10, warm-up 2.
    optim_cfg c = {.lr = 1, .sched = SCHED_COSINE, .warmup_steps = 2, .total_steps = 10};
    T_NEAR(sched_lambda(&c, 0), 0.0, 0, 0, "first step lr 0");
    T_NEAR(sched_lambda(&c, 1), 0.5, 0, 0, "warm-up");
    T_NEAR(sched_lambda(&c, 2), 1.0, 1e-15, 0, "peak");
    T_NEAR(sched_lambda(&c, 6), 0.5, 1e-15, 0, "cosine midpoint");
    c.sched = SCHED_LINEAR;
    T_NEAR(sched_lambda(&c, 6), 0.5, 1e-15, 0, "linear midpoint");
    c.sched = SCHED_CONSTANT; c.warmup_steps = 0;
    T_NEAR(sched_lambda(&c, 0), 1.0, 0, 0, "constant");
    T_OK(warmup_from_ratio(12, 0.1) == 2 && warmup_from_ratio(100, 0.03) == 3, "ceil(S * ratio)");

    // AdamW: one exact step (ggml-opt style): p = 1, g = 0.5, lr 0.1, wd 0.
    optim_cfg a = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 0, .weight_decay = 0};
    float p = 1, g = 0.5f, m1 = 0, v1 = 0;
    adamw_step(&p, &g, &m1, &v1, 1, 1.0f, 0.1, &a, 1);
    T_NEAR(p, 0.9, 1e-7, 0, "first Adam step moves by lr");
    // Decoupled decay applies before the update: p (1 - lr wd).
    a.weight_decay = 0.5; p = 1; g = 0; m1 = 0; v1 = 0; a.eps = 1e-8;
    adamw_step(&p, &g, &m1, &v1, 1, 1.0f, 0.1, &a, 1);
    T_NEAR(p, 0.95, 1e-7, 0, "decay only");
    // Clipping and the global norm.
    float gr[4] = {3, 4, 0, 12};
    size_t off[3] = {0, 2, 4};
    T_NEAR(grad_global_norm(gr, off, 2), 13.0, 1e-6, 0, "norm of norms");
    T_NEAR(clip_coef(1.0, 13.0), 1.0 / (13.0 + 1e-6), 1e-7, 0, "clip coefficient");
    T_NEAR(clip_coef(100.0, 13.0), 1.0, 0, 0, "no clip above the norm");
    return T_DONE("test_lora");
}

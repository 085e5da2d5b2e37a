// tests/unit/test_cpu_model.c: properties of the CPU reference that the
// goldens do not pin down: a packed micro-batch equals its sequences run
// apart (positions restart, attention stops at boundaries), and the backward
// pass agrees with finite differences, dropout included.
#include "check.h"
#include "cpu_model.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ULL;
static float frand(void) {   // uniform in [-1, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rnd(size_t n, float scale, float base) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = base + scale * frand();
    return p;
}

int main(void) {
    cpu_model m = {0};
    m.d = (model_dims){.vocab = 40, .hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                       .head_dim = 8, .rms_eps = 1e-6, .rope_theta = 10000.0, .tied = 0};
    size_t C = 32, F = 48, V = 40, qd = 32, kvd = 16;
    m.embed = rnd(V * C, 0.5f, 0); m.lm_head = rnd(V * C, 0.3f, 0); m.norm_f = rnd(C, 0.1f, 1);
    m.layer = calloc(2, sizeof(cpu_layer));
    for (int i = 0; i < 2; i++) {
        cpu_layer *w = &m.layer[i];
        w->ln1 = rnd(C, 0.1f, 1); w->ln2 = rnd(C, 0.1f, 1);
        w->wq = rnd(qd * C, 0.2f, 0); w->bq = rnd(qd, 0.1f, 0); w->wk = rnd(kvd * C, 0.2f, 0); w->bk = rnd(kvd, 0.1f, 0);
        w->wv = rnd(kvd * C, 0.2f, 0); w->bv = rnd(kvd, 0.1f, 0); w->wo = rnd(C * qd, 0.2f, 0);
        w->wg = rnd(F * C, 0.2f, 0); w->wu = rnd(F * C, 0.2f, 0); w->wd = rnd(C * F, 0.2f, 0);
    }
    cpu_model_init_rope(&m);
    int on[LORA_NMOD] = {1, 1, 1, 1, 1, 1, 1};
    lora_layout l;
    lora_layout_init(&l, &m.d, 4, 8, 0, on);
    float *p = rnd(l.n_params, 0.2f, 0);

    // Three sequences: lengths 7, 12, 5, with masked prompts.
    size_t lens[3] = {7, 12, 5}, N = 24;
    uint32_t ids[24]; int32_t lab[24];
    for (size_t i = 0; i < N; i++) { ids[i] = (uint32_t)(rng % V); frand(); lab[i] = (i % 5 == 0) ? -100 : (int32_t)ids[i]; }
    size_t starts[4] = {0, 7, 19, 24};
    micro_batch packed = {N, 3, ids, lab, starts};
    size_t targets = micro_batch_targets(&packed);
    float inv = 1.0f / (float)targets;
    dropout_cfg none = {0};

    float *g_packed = calloc(l.n_params, sizeof(float)), *g_apart = calloc(l.n_params, sizeof(float));
    double loss_packed = cpu_forward_backward(&m, &l, p, g_packed, &packed, inv, none);
    double loss_apart = 0;
    for (int s = 0; s < 3; s++) {
        size_t st[2] = {0, lens[s]};
        micro_batch one = {lens[s], 1, ids + starts[s], lab + starts[s], st};
        loss_apart += cpu_forward_backward(&m, &l, p, g_apart, &one, inv, none);
    }
    T_NEAR(loss_packed, loss_apart, 1e-5, 1e-6, "packed loss equals the sequences apart");
    double md = 0, mg = 0;
    for (size_t i = 0; i < l.n_params; i++) { md = fmax(md, fabs(g_packed[i] - g_apart[i])); mg = fmax(mg, fabs(g_apart[i])); }
    T_OK(md <= 1e-6 + 1e-5 * mg, "packed gradients equal the sequences apart (max diff %.3g, max %.3g)", md, mg);
    T_NEAR(cpu_forward_loss(&m, &l, p, &packed), loss_packed, 1e-6, 1e-7, "forward-only loss");

    // Pipeline stages: layer 0 then layer 1 (forward, last stage's forward +
    // backward, first stage's backward from the passed gradient) give the whole
    // model's loss and gradients bit for bit, with dropout too (keyed by layer).
    for (int with_drop = 0; with_drop < 2; with_drop++) {
        dropout_cfg drop = {with_drop ? 0.3f : 0.0f, 777};
        float *g_whole = calloc(l.n_params, sizeof(float)), *g_st = calloc(l.n_params, sizeof(float));
        double lw = cpu_forward_backward(&m, &l, p, g_whole, &packed, inv, drop);
        float *h = calloc(N * C, sizeof(float)), *dh = calloc(N * C, sizeof(float));
        cpu_stage s0 = {.layer0 = 0, .layer1 = 1, .x_out = h};
        T_NEAR(cpu_stage_run(&m, &l, p, NULL, &packed, inv, drop, &s0), 0.0, 0, 0, "a first stage has no loss");
        cpu_stage s1 = {.layer0 = 1, .layer1 = 2, .x_in = h, .dx_in = dh};
        double ls = cpu_stage_run(&m, &l, p, g_st, &packed, inv, drop, &s1);
        T_NEAR(cpu_stage_run(&m, &l, p, NULL, &packed, inv, drop, &s1), ls, 0, 0, "the last stage's forward-only loss");
        cpu_stage b0 = {.layer0 = 0, .layer1 = 1, .dx_out = dh};
        cpu_stage_run(&m, &l, p, g_st, &packed, inv, drop, &b0);
        T_OK(ls == lw, "stages' loss equals the whole model's (%.9g vs %.9g, dropout %d)", ls, lw, with_drop);
        size_t diff = 0;
        for (size_t i = 0; i < l.n_params; i++) diff += g_st[i] != g_whole[i];
        T_OK(diff == 0, "stages' gradients equal the whole model's bit for bit (%zu differ, dropout %d)", diff, with_drop);
        free(g_whole); free(g_st); free(h); free(dh);
    }

    // Finite differences on a sample of parameters, without and with dropout.
    for (int with_drop = 0; with_drop < 2; with_drop++) {
        dropout_cfg drop = {with_drop ? 0.3f : 0.0f, 12345};
        float *g = calloc(l.n_params, sizeof(float));
        cpu_forward_backward(&m, &l, p, g, &packed, 1.0f, drop);
        int bad = 0, n = 0;
        for (size_t k = 0; k < l.n_params; k += l.n_params / 37 + 1, n++) {
            float keep = p[k], h = 1e-2f;
            float *gs = calloc(l.n_params, sizeof(float));
            p[k] = keep + h; double lp = cpu_forward_backward(&m, &l, p, gs, &packed, 1.0f, drop);
            p[k] = keep - h; double lm = cpu_forward_backward(&m, &l, p, gs, &packed, 1.0f, drop);
            p[k] = keep;
            free(gs);
            double fd = (lp - lm) / (2 * h);
            if (fabs(fd - g[k]) > 2e-3 + 2e-2 * fabs(fd)) {
                bad++;
                printf("# param %zu: analytic %.6g, finite difference %.6g (dropout %d)\n", k, g[k], fd, with_drop);
            }
        }
        T_OK(bad == 0, "%d of %d gradients disagree with finite differences (dropout %d)", bad, n, with_drop);
        free(g);
    }
    return T_DONE("test_cpu_model");
}

// lib/optim.c: clipping, AdamW and schedules in the Trainer's arithmetic.
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double sched_lambda(const optim_cfg *c, size_t k) {
    double wu = (double)c->warmup_steps, S = (double)c->total_steps, kk = (double)k;
    if (c->sched != SCHED_CONSTANT || wu > 0) {
        if (kk < wu) return kk / (wu > 1 ? wu : 1);
    }
    switch (c->sched) {
    case SCHED_COSINE: {
        double progress = (kk - wu) / (S - wu > 1 ? S - wu : 1);
        double v = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        return v > 0 ? v : 0;
    }
    case SCHED_LINEAR: {
        double v = (S - kk) / (S - wu > 1 ? S - wu : 1);
        return v > 0 ? v : 0;
    }
    case SCHED_CONSTANT: return 1.0;
    }
    return 1.0;
}

const char *sched_name(sched_kind k) {
    return k == SCHED_COSINE ? "cosine" : k == SCHED_LINEAR ? "linear" : "constant";
}

int sched_parse(const char *s, sched_kind *k) {
    if (!strcmp(s, "cosine")) *k = SCHED_COSINE;
    else if (!strcmp(s, "linear")) *k = SCHED_LINEAR;
    else if (!strcmp(s, "constant")) *k = SCHED_CONSTANT;
    else return -1;
    return 0;
}

size_t warmup_from_ratio(size_t S, double ratio) { return (size_t)ceil((double)S * ratio); }

double grad_norm_from_sumsq(const float *ss, size_t n_tensors) {
    // Per-tensor norms in fp32 (as torch._foreach_norm), then the norm of those.
    double total = 0.0;
    for (size_t t = 0; t < n_tensors; t++) {
        float nt = sqrtf(ss[t]);
        total += (double)nt * nt;
    }
    return (float)sqrt(total);
}

void grad_sumsq(const float *g, const size_t *off, size_t n_tensors, float *ss) {
    #pragma omp parallel for schedule(dynamic) if(off[n_tensors] >= (1u << 16))
    for (size_t t = 0; t < n_tensors; t++) {
        double acc = 0.0;
        for (size_t i = off[t]; i < off[t + 1]; i++) acc += (double)g[i] * g[i];
        ss[t] = (float)acc;
    }
}

double grad_global_norm(const float *g, const size_t *off, size_t n_tensors) {
    float *ss = malloc(n_tensors * sizeof(float));
    grad_sumsq(g, off, n_tensors, ss);
    double n = grad_norm_from_sumsq(ss, n_tensors);
    free(ss);
    return n;
}

float clip_coef(double max_norm, double norm) {
    if (max_norm <= 0) return 1.0f;
    float c = (float)max_norm / ((float)norm + 1e-6f);
    return c < 1.0f ? c : 1.0f;
}

adamw_scalars adamw_scalars_for(const optim_cfg *c, double lr, size_t step) {
    // Python floats enter fp32 tensor ops rounded to fp32; bias corrections are doubles.
    double bc1 = 1.0 - pow(c->beta1, (double)step), bc2 = 1.0 - pow(c->beta2, (double)step);
    adamw_scalars a = {(float)(1.0 - lr * c->weight_decay), (float)(1.0 - c->beta1), (float)c->beta2,
                       (float)(1.0 - c->beta2), (float)(lr / bc1), (float)sqrt(bc2), (float)c->eps};
    return a;
}

void adamw_step(float *p, const float *g, float *m, float *v, size_t n, float clip, double lr,
                const optim_cfg *c, size_t step) {
    adamw_scalars a = adamw_scalars_for(c, lr, step);
    #pragma omp parallel for schedule(static) if(n >= (1u << 16))
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * clip;
        p[i] *= a.decay;
        // torch.lerp picks its formula by the weight, for accuracy near 1.
        m[i] = a.w1 < 0.5f ? m[i] + a.w1 * (gi - m[i]) : gi - (gi - m[i]) * (1.0f - a.w1);
        v[i] = v[i] * a.b2 + a.w2 * gi * gi;
        float denom = sqrtf(v[i]) / a.bc2_sqrt + a.eps;
        p[i] += -a.step_size * (m[i] / denom);
    }
}

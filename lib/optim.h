// lib/optim.h: the Trainer's optimizer step on one fp32 arena (CPU path):
// global-norm clipping, torch AdamW, and the learning-rate schedules.
// Semantics: ../shared/docs/qwen_lora_spec.md §4.
#ifndef LORAPIPE_OPTIM_H
#define LORAPIPE_OPTIM_H
#include <stddef.h>

typedef enum { SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT } sched_kind;

typedef struct {
    double lr, beta1, beta2, eps, weight_decay, max_grad_norm;
    sched_kind sched;
    size_t warmup_steps, total_steps;
} optim_cfg;

// Multiplier lambda(k) for the k-th optimizer step (0-based), as
// transformers' get_*_schedule_with_warmup computes it (in double).
double sched_lambda(const optim_cfg *c, size_t k);
const char *sched_name(sched_kind k);
int sched_parse(const char *s, sched_kind *k);
// Warm-up steps from a ratio: ceil(S * ratio), as the Trainer computes it.
size_t warmup_from_ratio(size_t total_steps, double ratio);

// torch.nn.utils.clip_grad_norm_: the norm of the per-tensor norms, each
// tensor being [off[i], off[i+1]) of g. Returns the pre-clip total norm.
double grad_global_norm(const float *g, const size_t *tensor_off, size_t n_tensors);
// The per-tensor sums of squares grad_global_norm starts from (ss: n_tensors floats).
void grad_sumsq(const float *g, const size_t *tensor_off, size_t n_tensors, float *ss);
// The same from per-tensor sums of squares (the CUDA path reduces on the device).
double grad_norm_from_sumsq(const float *sumsq, size_t n_tensors);
// Clip coefficient min(max_norm / (norm + 1e-6), 1), as a float.
float clip_coef(double max_norm, double norm);

// torch.optim.AdamW (single-tensor and foreach share these formulas):
//   p *= 1 - lr*wd;  m = lerp(m, g, 1-b1);  v = b2 v + (1-b2) g^2;
//   p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
// g is multiplied by clip first. step is 1-based (after increment).
// The fp32 scalars of one AdamW step, rounded where torch rounds them.
typedef struct { float decay, w1, b2, w2, step_size, bc2_sqrt, eps; } adamw_scalars;
adamw_scalars adamw_scalars_for(const optim_cfg *c, double lr, size_t step);
void adamw_step(float *p, const float *g, float *m, float *v, size_t n, float clip, double lr,
                const optim_cfg *c, size_t step);

#endif

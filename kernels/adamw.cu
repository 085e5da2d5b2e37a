// kernels/adamw.cu: gradient norms per tensor (deterministic: one block per
// tensor, fixed reduction order) and torch AdamW over the fp32 LoRA arena.
#include "common.cuh"
#include "kernels.h"

__global__ void sumsq_kernel(float *out, const float *g, const size_t *off) {
    __shared__ float sh[32];
    size_t t = blockIdx.x;
    float acc = 0.0f;
    for (size_t i = off[t] + threadIdx.x; i < off[t + 1]; i += blockDim.x) acc += g[i] * g[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) out[t] = acc;
}

extern "C" void k_sumsq_per_tensor(float *out, const float *g, const size_t *off_dev, size_t n_tensors, cudaStream_t s) {
    if (!n_tensors) return;
    sumsq_kernel<<<(unsigned)n_tensors, 256, 0, s>>>(out, g, off_dev);
    LAUNCH_CHECK();
}

// The scalars are computed on the host exactly as lib/optim.c does for the CPU path.
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float clip, float decay,
                             float w1, float b2, float w2, float step_size, float bc2_sqrt, float eps) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i] * clip, pi = p[i] * decay, mi = m[i], vi = v[i];
        mi = w1 < 0.5f ? mi + w1 * (gi - mi) : gi - (gi - mi) * (1.0f - w1);
        vi = vi * b2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = pi + -step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float clip, float decay, float w1,
                        float b2, float w2, float step_size, float bc2_sqrt, float eps, cudaStream_t s) {
    if (!n) return;
    unsigned grid = cdiv(n, 256);
    adamw_kernel<<<grid < 4096 ? grid : 4096, 256, 0, s>>>(p, g, m, v, n, clip, decay, w1, b2, w2, step_size,
                                                           bc2_sqrt, eps);
    LAUNCH_CHECK();
}

// kernels/rope.cu: rotary embedding, half-split pairs (i, i + D/2), angles in
// fp32 from fp32 inv_freq; cos/sin rounded to bf16 as transformers does for a
// bf16 model, then q' = bf16(bf16(q cos) + bf16(rot(q) sin)).
#include "common.cuh"
#include "kernels.h"

// One block per token; a thread owns one frequency i and walks the heads, so
// that each cos/sin is computed once per (token, i), not once per head.
__global__ void rope_kernel(bf16 *x, size_t ld, size_t col0, size_t heads, size_t D, const int32_t *pos,
                            const float *inv_freq, int inverse) {
    size_t tok = blockIdx.x, half = D / 2;
    size_t i = threadIdx.x % half, h0 = threadIdx.x / half, hs = blockDim.x / half;
    float p = (float)pos[tok];
    float f = p * inv_freq[i];
    float c = rbf(cosf(f)), sn = rbf(sinf(f));
    bf16 *row = x + tok * ld + col0;
    for (size_t h = h0; h < heads; h += hs) {
        bf16 *xh = row + h * D;
        float a = bf(xh[i]), b = bf(xh[i + half]);
        if (!inverse) {
            xh[i] = tobf(rbf(a * c) - rbf(b * sn));
            xh[i + half] = tobf(rbf(b * c) + rbf(a * sn));
        } else {   // transpose of the rotation, for gradients
            xh[i] = tobf(a * c + b * sn);
            xh[i + half] = tobf(b * c - a * sn);
        }
    }
}

extern "C" void k_rope(bf16_t *x, size_t ld, size_t col0, size_t heads, size_t D, const int32_t *pos,
                       const float *inv_freq, size_t N, int inverse, cudaStream_t s) {
    if (!N) return;
    size_t half = D / 2;
    if (half == 0 || half > 1024) die_at(__FILE__, __LINE__, "RoPE: head size %zu not supported", D);
    size_t per = half >= 256 ? 1 : 256 / half;   // heads handled side by side in one block
    if (per > heads) per = heads;
    rope_kernel<<<(unsigned)N, (unsigned)(half * per), 0, s>>>((bf16 *)x, ld, col0, heads, D, pos, inv_freq, inverse);
    LAUNCH_CHECK();
}

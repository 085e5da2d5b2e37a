// kernels/rope.cu: rotary embedding, half-split pairs (i, i + D/2), angles in
// fp32 from fp32 inv_freq; cos/sin rounded to bf16 as transformers does for a
// bf16 model, then q' = bf16(bf16(q cos) + bf16(rot(q) sin)).
#include "common.cuh"
#include "kernels.h"

__global__ void rope_kernel(bf16 *x, size_t ld, size_t col0, size_t heads, size_t D, const int32_t *pos,
                            const float *inv_freq, int inverse) {
    size_t tok = blockIdx.x, half = D / 2;
    float p = (float)pos[tok];
    bf16 *row = x + tok * ld + col0;
    for (size_t k = threadIdx.x; k < heads * half; k += blockDim.x) {
        size_t h = k / half, i = k % half;
        float f = p * inv_freq[i];
        float c = rbf(cosf(f)), sn = rbf(sinf(f));
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
    rope_kernel<<<(unsigned)N, 128, 0, s>>>((bf16 *)x, ld, col0, heads, D, pos, inv_freq, inverse);
    LAUNCH_CHECK();
}

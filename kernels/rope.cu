// kernels/rope.cu: rotary embedding, half-split pairs (i, i + D/2), angles in
// fp32 from fp32 inv_freq; cos/sin rounded to bf16 as transformers does for a
// bf16 model, then q' = bf16(bf16(q cos) + bf16(rot(q) sin)).
#include "common.cuh"
#include "kernels.h"

// Element i and its partner i + D/2 rotated by (c, sn), before the final
// rounding to bf16; inverse: the transpose of the rotation, for gradients.
__device__ __forceinline__ float2 rope_rot(float a, float b, float c, float sn, int inverse) {
    if (!inverse) return make_float2(rbf(a * c) - rbf(b * sn), rbf(b * c) + rbf(a * sn));
    return make_float2(a * c + b * sn, b * c - a * sn);
}

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
        float2 o = rope_rot(bf(xh[i]), bf(xh[i + half]), c, sn, inverse);
        xh[i] = tobf(o.x);
        xh[i + half] = tobf(o.y);
    }
}

// The same rotation on 16-byte vectors: a block per token first rounds its
// D/2 cos/sin pairs into shared memory, then its threads walk (head, 8-column
// piece) units, each reading 8 values of the first half and the 8 they pair
// with. Every element goes through rope_rot, so the bits are equal.
// Needs D % 16 == 0 and 16-byte aligned rows (rope_v8_ok).
__global__ void rope_v8_kernel(bf16 *x, size_t ld, size_t col0, unsigned heads, unsigned D, const int32_t *pos,
                               const float *inv_freq, int inverse) {
    extern __shared__ float cs[];   // cos (D/2), then sin (D/2)
    const unsigned tok = blockIdx.x, half = D / 2, per = half / 8;
    const float p = (float)pos[tok];
    for (unsigned i = threadIdx.x; i < half; i += blockDim.x) {
        float f = p * inv_freq[i];
        cs[i] = rbf(cosf(f)); cs[half + i] = rbf(sinf(f));
    }
    __syncthreads();
    bf16 *row = x + tok * ld + col0;
    for (unsigned u = threadIdx.x; u < heads * per; u += blockDim.x) {
        const unsigned h = u / per, i0 = (u - h * per) * 8;
        uint4 *pa = (uint4 *)(row + (size_t)h * D + i0), *pb = (uint4 *)(row + (size_t)h * D + half + i0);
        bf16x8 va, vb;
        va.u = *pa; vb.u = *pb;
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 a = __bfloat1622float2(va.h[e]), b = __bfloat1622float2(vb.h[e]);
            const float c0 = cs[i0 + 2 * e], c1 = cs[i0 + 2 * e + 1], s0 = cs[half + i0 + 2 * e], s1 = cs[half + i0 + 2 * e + 1];
            float2 o0 = rope_rot(a.x, b.x, c0, s0, inverse), o1 = rope_rot(a.y, b.y, c1, s1, inverse);
            va.h[e] = __floats2bfloat162_rn(o0.x, o1.x);
            vb.h[e] = __floats2bfloat162_rn(o0.y, o1.y);
        }
        *pa = va.u; *pb = vb.u;
    }
}

static bool rope_v8_ok(const void *x, size_t ld, size_t col0, size_t D) {
    return D % 16 == 0 && ld % 8 == 0 && col0 % 8 == 0 && aligned16(x);
}

extern "C" void k_rope(bf16_t *x, size_t ld, size_t col0, size_t heads, size_t D, const int32_t *pos,
                       const float *inv_freq, size_t N, int inverse, cudaStream_t s) {
    if (!N) return;
    size_t half = D / 2;
    if (half == 0 || half > 1024) die_at(__FILE__, __LINE__, "RoPE: head size %zu not supported", D);
    if (rope_v8_ok(x, ld, col0, D)) {
        rope_v8_kernel<<<(unsigned)N, 128, D * sizeof(float), s>>>((bf16 *)x, ld, col0, (unsigned)heads, (unsigned)D,
                                                                  pos, inv_freq, inverse);
        LAUNCH_CHECK();
        return;
    }
    size_t per = half >= 256 ? 1 : 256 / half;   // heads handled side by side in one block
    if (per > heads) per = heads;
    rope_kernel<<<(unsigned)N, (unsigned)(half * per), 0, s>>>((bf16 *)x, ld, col0, heads, D, pos, inv_freq, inverse);
    LAUNCH_CHECK();
}

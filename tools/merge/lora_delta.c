// tools/merge/lora_delta.c: the merge arithmetic.  The FMA chain is written
// with AVX2/FMA intrinsics where the CPU has them (chosen at run time) and
// with fmaf() elsewhere; both give identical, correctly rounded results.
#include "lora_delta.h"
#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// delta[j] = s * fma-chain over k of B[k] * A[k][j], for j in [j0, in).
static void delta_row_plain(float *delta, const float *brow, const float *A, size_t r, size_t in, size_t j0, float s) {
    for (size_t j = j0; j < in; j++) {
        float c = 0.0f;
        for (size_t k = 0; k < r; k++) c = fmaf(brow[k], A[k * in + j], c);
        delta[j] = c * s;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma")))
static void delta_row_avx2(float *delta, const float *brow, const float *A, size_t r, size_t in, float s) {
    size_t j = 0;
    __m256 vs = _mm256_set1_ps(s);
    for (; j + 8 <= in; j += 8) {
        __m256 c = _mm256_setzero_ps();
        for (size_t k = 0; k < r; k++)
            c = _mm256_fmadd_ps(_mm256_set1_ps(brow[k]), _mm256_loadu_ps(A + k * in + j), c);
        _mm256_storeu_ps(delta + j, _mm256_mul_ps(c, vs));
    }
    delta_row_plain(delta, brow, A, r, in, j, s);   // tail columns: the same chain, one at a time
}
#endif

void lora_delta_rows(void *outp, dtype ot, const void *w, dtype wt, size_t row0, size_t nrows, size_t in,
                     const float *A, const float *B, size_t r, float s) {
    static int use_avx2 = -1;
#if defined(__x86_64__)
    if (use_avx2 < 0) use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    use_avx2 = 0;
#endif
    size_t wsz = (size_t)dtype_bits(wt) / 8, osz = (size_t)dtype_bits(ot) / 8;
    #pragma omp parallel
    {
        float *delta = xmalloc(2 * in * sizeof(float)), *wrow = delta + in;
        #pragma omp for schedule(static)
        for (size_t i = 0; i < nrows; i++) {
            const float *brow = B + (row0 + i) * r;
#if defined(__x86_64__)
            if (use_avx2) delta_row_avx2(delta, brow, A, r, in, s);
            else
#endif
                delta_row_plain(delta, brow, A, r, in, 0, s);
            to_f32(wrow, (const uint8_t *)w + i * in * wsz, wt, in);
            for (size_t j = 0; j < in; j++) wrow[j] += delta[j];
            from_f32((uint8_t *)outp + i * in * osz, ot, wrow, in);
        }
        free(delta);
    }
}

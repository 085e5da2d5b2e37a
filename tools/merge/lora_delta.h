// tools/merge/lora_delta.h: rows of W' = W + s * (B @ A), rounded once.
#ifndef LORAPIPE_LORA_DELTA_H
#define LORAPIPE_LORA_DELTA_H
#include <stddef.h>
#include "dtype.h"

// For rows [row0, row0 + nrows) of W (in columns, dtype wt, at w; the first
// of these rows at w): out rows = round_to(ot, fp32(W) + s * (B @ A)).
// A is (r, in), B is (out, r), fp32.  The product is summed k = 0..r-1 as a
// chain of fused multiply-adds, which is what PyTorch's CPU GEMM (MKL) does
// for these shapes, then scaled, then added: PEFT's merge_and_unload bit for
// bit.  OpenMP-parallel over rows; delta is scratch of in floats per thread.
void lora_delta_rows(void *outp, dtype ot, const void *w, dtype wt, size_t row0, size_t nrows, size_t in,
                     const float *A, const float *B, size_t r, float s);

#endif

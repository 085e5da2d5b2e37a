// kernels/attention_short_mma.h: the register-tile short attention
// (attention_short_mma.cu), which attention_short.cu's entry points dispatch to
// where it covers the batch (D = 64 or 128, sequences of at most 128 tokens).
#pragma once
#include "common.cuh"
#include "kernels.h"

// Whether the batch qualifies, given the device's per-block shared-memory limit.
int att_mma_ok(const att_shape *a, size_t max_smem);
// att_short_fwd's contract.
void att_mma_fwd(bf16 *out, float *lse, const bf16 *qkv, const att_shape *a, cudaStream_t st);
// att_short_bwd's contract without the GQA sum: with dkv32 (grouped query
// heads) dK and dV go per query head to the fp32 scratch (N, 2, H, D) instead
// of dqkv, and the caller sums each group.
void att_mma_bwd(bf16 *dqkv, float *dkv32, const bf16 *dout, const bf16 *out, const float *lse, const bf16 *qkv,
                 const att_shape *a, cudaStream_t st);

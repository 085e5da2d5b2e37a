// bench/bench_util.cuh: what the kernel benchmarks (bench/*_bench.cu) share.
#pragma once
#include "../kernels/common.cuh"

// us = GPU microseconds per CALL: 5 warm-up calls, then iters back to back
// between two events (launch gaps included, as in training).
#define BENCH_US(us, iters, e0, e1, CALL) do {                                     \
        for (int w_ = 0; w_ < 5; w_++) { CALL; }                                    \
        CUDA_CHECK(cudaEventRecord(e0));                                            \
        for (size_t it_ = 0; it_ < (iters); it_++) { CALL; }                        \
        CUDA_CHECK(cudaEventRecord(e1)); CUDA_CHECK(cudaEventSynchronize(e1));      \
        float ms_; CUDA_CHECK(cudaEventElapsedTime(&ms_, e0, e1));                  \
        us = 1e3 * ms_ / (double)(iters);                                           \
    } while (0)

// bench/lora_bench.cu: GPU time per call of each fused LoRA kernel at the
// Qwen1.5-7B shape of one huanhuan micro-batch (N tokens, C = 4096, r = 8,
// dropout 0.1): q/k/v as a group of three sharing an input, o alone, and the
// B sides batched. Used to compare LoRA kernel variants in one device call.
//   make build/bench/lora_bench && build/bench/lora_bench [N] [iters]
#include "bench_util.cuh"
#include "../kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bf16_t *bnew(size_t n) {
    bf16_t *p;
    CUDA_CHECK(cudaMalloc(&p, n * 2));
    // small random-ish values: the bit pattern of a ramp, sign bit clear, exponent near 1
    uint16_t *h = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = (uint16_t)(0x3c00 + (i * 2654435761u >> 20) % 0x400);
    CUDA_CHECK(cudaMemcpy(p, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    return p;
}
static float *fnew(size_t n) {
    float *p;
    CUDA_CHECK(cudaMalloc(&p, n * 4));
    CUDA_CHECK(cudaMemset(p, 0, n * 4));
    return p;
}

int main(int argc, char **argv) {
    size_t N = argc > 1 ? strtoul(argv[1], NULL, 10) : 1050, iters = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
    const size_t C = 4096, r = 8;
    const float p = 0.1f, s = 4.0f;
    bf16_t *x = bnew(N * C), *dx = bnew(N * C), *qkv = bnew(N * 3 * C), *y = bnew(N * C);
    lora_group ga, gb, go_a, go_b;
    memset(&ga, 0, sizeof ga); memset(&gb, 0, sizeof gb); memset(&go_a, 0, sizeof go_a); memset(&go_b, 0, sizeof go_b);
    ga.g = gb.g = 3; gb.ld = 3 * C;
    for (int g = 0; g < 3; g++) {
        ga.w[g] = bnew(r * C); ga.t[g] = bnew(N * r); ga.dw[g] = fnew(r * C); ga.k[g] = lora_mask_key(7, 3, g);
        gb.w[g] = bnew(C * r); gb.t[g] = ga.t[g]; gb.dw[g] = fnew(C * r); gb.io[g] = qkv + g * C; gb.cols[g] = C;
    }
    go_a.g = go_b.g = 1; go_b.ld = C;
    go_a.w[0] = bnew(r * C); go_a.t[0] = bnew(N * r); go_a.dw[0] = fnew(r * C); go_a.k[0] = lora_mask_key(7, 3, 3);
    go_b.w[0] = bnew(C * r); go_b.t[0] = go_a.t[0]; go_b.dw[0] = fnew(C * r); go_b.io[0] = y; go_b.cols[0] = C;
    float *part = fnew(LORA_GMAX * lora_da_ws_floats(N, r, C));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0)); CUDA_CHECK(cudaEventCreate(&e1));
    double total = 0;
#define TIME(name, CALL) do {                                                              \
        double us; BENCH_US(us, iters, e0, e1, CALL); total += us;                          \
        printf("%-34s %8.2f us\n", name, us);                                               \
    } while (0)
    printf("N=%zu C=%zu r=%zu p=%.1f, %zu iterations each (back to back, launch gaps included)\n", N, C, r, p, iters);
    TIME("qkv in   t = drop(x) A^T (G=3)", k_lora_in_group(&ga, x, N, C, r, p, 0));
    TIME("qkv out  y += s t B^T (batch 3)", k_lora_out_batch(&gb, N, r, s, 0));
    TIME("o in     t = drop(x) A^T", k_lora_in_group(&go_a, x, N, C, r, p, 0));
    TIME("o out    y += s t B^T", k_lora_out_batch(&go_b, N, r, s, 0));
    TIME("o db     dB += s dy^T t", k_lora_db_batch(&go_b, part, N, r, s, 0));
    TIME("o dt     dt = s dy B", k_lora_dt_batch(&go_b, N, r, s, 0));
    TIME("o da     dA += dt^T drop(x)", k_lora_da_group(&go_a, part, x, N, C, r, p, 0));
    TIME("o dx     dx += drop'(dt A)", k_lora_dx_group(dx, &go_a, N, C, r, p, 0));
    TIME("qkv db   dB += s dy^T t (batch 3)", k_lora_db_batch(&gb, part, N, r, s, 0));
    TIME("qkv dt   dt = s dy B (batch 3)", k_lora_dt_batch(&gb, N, r, s, 0));
    TIME("qkv da   dA += dt^T drop(x) (G=3)", k_lora_da_group(&ga, part, x, N, C, r, p, 0));
    TIME("qkv dx   dx += drop'(dt A) (G=3)", k_lora_dx_group(dx, &ga, N, C, r, p, 0));
    printf("%-34s %8.2f us per layer, %.2f ms per 32 layers\n", "total (q/k/v/o)", total, total * 32e-3);
    return 0;
}

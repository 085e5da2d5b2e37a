// bench/attn_bench.cu: GPU time per call of the short-sequence attention
// kernels (attention_short.cu) at the fine-tuning shape: one micro-batch of 16
// packed sequences, lengths 40..128 summing to about 1,100 tokens, D = 128, for
// Qwen1.5-7B (H = G = 32) and Qwen2-7B (H = 28 query heads over G = 4 kv heads).
// Also says whether two backward runs give the same bits (no atomics anywhere).
//   make build/bench/attn_bench && build/bench/attn_bench [iters]
#include "bench_util.cuh"
#include "../kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bf16_t *bnew(size_t n, uint32_t salt) {
    bf16_t *p;
    CUDA_CHECK(cudaMalloc(&p, n * 2));
    // values in about [-2, 2): a hashed ramp, so that softmax rows are not flat
    uint16_t *h = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        uint32_t x = (uint32_t)(i + salt) * 2654435761u;
        float f = ((x >> 8) & 0xffff) / 16384.0f - 2.0f;
        uint32_t b; memcpy(&b, &f, 4);
        h[i] = (uint16_t)(b >> 16);
    }
    CUDA_CHECK(cudaMemcpy(p, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    return p;
}

// One shape: 16 sequences with lengths from a fixed LCG in [40, 128].
static void bench_shape(const char *label, size_t H, size_t G, size_t D, size_t iters) {
    const size_t ns = 16;
    int32_t seq[ns + 1];
    uint32_t r = 12345;
    size_t maxL = 0;
    seq[0] = 0;
    for (size_t s = 0; s < ns; s++) {
        r = r * 1103515245u + 12345u;
        // 40..128 skewed short (mean about 65), the last one at the --max-len 128 cap:
        // 1,093 tokens in all, like a packed micro-batch of the fine-tuning data
        size_t L = s == ns - 1 ? 128 : 40 + ((r >> 16) % 89) * ((r >> 4) % 89) / 88;
        seq[s + 1] = seq[s] + (int32_t)L;
        if (L > maxL) maxL = L;
    }
    size_t N = (size_t)seq[ns], ld = (H + 2 * G) * D;
    int32_t *dseq;
    CUDA_CHECK(cudaMalloc(&dseq, sizeof seq));
    CUDA_CHECK(cudaMemcpy(dseq, seq, sizeof seq, cudaMemcpyHostToDevice));
    att_shape a = {ns, N, H, G, D, ld, dseq, NULL, 0, maxL};
    if (!att_short_ok(&a)) { printf("%s: att_short_ok refuses the shape\n", label); return; }
    bf16_t *qkv = bnew(N * ld, 1), *out = bnew(N * H * D, 2), *dout = bnew(N * H * D, 3), *dqkv = bnew(N * ld, 4);
    float *lse, *scr = NULL;
    CUDA_CHECK(cudaMalloc(&lse, H * N * 4));
    size_t sb = att_short_scratch_bytes(&a);
    if (sb) CUDA_CHECK(cudaMalloc(&scr, sb));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0)); CUDA_CHECK(cudaEventCreate(&e1));
#define TIME(name, CALL) do {                                                              \
        double us; BENCH_US(us, iters, e0, e1, CALL);                                       \
        printf("%-12s %-9s %8.2f us\n", label, name, us);                                   \
    } while (0)
    printf("%s: H=%zu G=%zu D=%zu, %zu sequences, N=%zu tokens, longest %zu\n", label, H, G, D, ns, N, maxL);
    TIME("forward", att_short_fwd(out, lse, qkv, &a, 0));
    TIME("backward", att_short_bwd(dqkv, dout, out, lse, qkv, &a, scr, 0));
    // bit-reproducibility: two backward runs from the same inputs
    size_t nb = N * ld * 2;
    unsigned char *h1 = (unsigned char *)malloc(nb), *h2 = (unsigned char *)malloc(nb);
    CUDA_CHECK(cudaMemset(dqkv, 0, nb));
    att_short_bwd(dqkv, dout, out, lse, qkv, &a, scr, 0);
    CUDA_CHECK(cudaMemcpy(h1, dqkv, nb, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemset(dqkv, 0xff, nb));
    att_short_bwd(dqkv, dout, out, lse, qkv, &a, scr, 0);
    CUDA_CHECK(cudaMemcpy(h2, dqkv, nb, cudaMemcpyDeviceToHost));
    printf("%-12s backward bit-identical over two runs: %s\n", label, memcmp(h1, h2, nb) ? "NO" : "yes");
    free(h1); free(h2);
    cudaFree(qkv); cudaFree(out); cudaFree(dout); cudaFree(dqkv); cudaFree(lse); cudaFree(dseq);
    if (scr) cudaFree(scr);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
}

int main(int argc, char **argv) {
    size_t iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 200;
    printf("short attention, %zu iterations each (back to back, launch gaps included)\n", iters);
    bench_shape("qwen1.5-7b", 32, 32, 128, iters);
    bench_shape("qwen2-7b", 28, 4, 128, iters);
    return 0;
}

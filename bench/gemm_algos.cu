// bench/gemm_algos.cu: how far is cuBLASLt's first heuristic choice from the
// fastest of its candidates, for the trainer's base-weight GEMMs (7B shape)?
// Prints one JSON line per (shape, candidate). Build:
//   nvcc -O2 -gencode arch=compute_90a,code=sm_90a bench/gemm_algos.cu -lcublasLt -o build/gemm_algos
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)
#define CB(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s:%d cublas %d\n", __FILE__, __LINE__, (int)s_); exit(1); } } while (0)

__global__ void fill(__nv_bfloat16 *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15;
        p[i] = __float2bfloat16(((h & 0xffff) / 65536.0f - 0.5f) * 0.1f);
    }
}

int main(int argc, char **argv) {
    // gemm_algos [NTOP [M...]]: the candidates for token counts M (default 2048 1664 1024)
    int ntop = argc > 1 ? atoi(argv[1]) : 24;
    size_t C = 4096, F = 11008, QKV = 12288;
    size_t Ms[16] = {2048, 1664, 1024}, nM = 3;
    if (argc > 2) { nM = 0; for (int i = 2; i < argc && nM < 16; i++) Ms[nM++] = (size_t)atoll(argv[i]); }
    // name, transa (col-major op on W), out(m), in(k), beta, bias
    struct { const char *name; int ta; size_t m, k; float beta; int bias; } sh[] = {
        {"fwd_qkv", 1, QKV, C, 0, 1}, {"fwd_o", 1, C, C, 1, 0}, {"fwd_gu", 1, 2 * F, C, 0, 0}, {"fwd_d", 1, C, F, 1, 0},
        {"bwd_d", 0, F, C, 0, 0}, {"bwd_gu", 0, C, 2 * F, 0, 0}, {"bwd_o", 0, C, C, 0, 0}, {"bwd_qkv", 0, C, QKV, 0, 0},
        {"fwd_qkv_nobias", 1, QKV, C, 0, 0}, {"fwd_o_beta0", 1, C, C, 0, 0}, {"fwd_d_beta0", 1, C, F, 0, 0},
    };
    size_t maxn = 2048;
    for (size_t i = 0; i < nM; i++) if (Ms[i] > maxn) maxn = Ms[i];
    size_t maxw = 2 * F * C, maxx = maxn * 2 * F;
    __nv_bfloat16 *W, *X, *Y, *bias;
    CK(cudaMalloc(&W, maxw * 2)); CK(cudaMalloc(&X, maxx * 2)); CK(cudaMalloc(&Y, maxx * 2)); CK(cudaMalloc(&bias, QKV * 2));
    fill<<<1024, 256>>>(W, maxw, 1); fill<<<1024, 256>>>(X, maxx, 2); fill<<<1024, 256>>>(Y, maxx, 3); fill<<<64, 256>>>(bias, QKV, 4);
    size_t wsb = 64u << 20; void *ws; CK(cudaMalloc(&ws, wsb));
    cublasLtHandle_t lt; CB(cublasLtCreate(&lt));
    cudaStream_t st; CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    for (size_t mi = 0; mi < nM; mi++)
    for (size_t s = 0; s < sizeof sh / sizeof *sh; s++) {
        size_t m = sh[s].m, n = Ms[mi], k = sh[s].k;
        cublasLtMatmulDesc_t op; CB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasOperation_t oa = sh[s].ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = CUBLAS_OP_N;
        CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
        CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
        if (sh[s].bias) {
            cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS; cudaDataType_t bt = CUDA_R_16BF;
            CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
            CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
            CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        }
        cublasLtMatrixLayout_t la, lb, lc;
        // W row-major (out, in) == col-major (in, out): lda = in.
        if (sh[s].ta) CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, k));
        else CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, m, k, m));
        CB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k));
        CB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, m, n, m));
        cublasLtMatmulPreference_t pref; CB(cublasLtMatmulPreferenceCreate(&pref));
        CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
        cublasLtMatmulHeuristicResult_t res[64]; int found = 0;
        CB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, ntop, res, &found));
        float alpha = 1.0f, beta = sh[s].beta;
        double flop = 2.0 * m * n * k;
        for (int a = 0; a < found; a++) {
            if (res[a].state != CUBLAS_STATUS_SUCCESS) continue;
            float best = 1e30f;
            for (int rep = 0; rep < 3; rep++) {
                for (int w = 0; w < 2; w++)
                    CB(cublasLtMatmul(lt, op, &alpha, W, la, X, lb, &beta, Y, lc, Y, lc, &res[a].algo, ws, wsb, st));
                cudaEventRecord(e0, st);
                for (int w = 0; w < 10; w++)
                    CB(cublasLtMatmul(lt, op, &alpha, W, la, X, lb, &beta, Y, lc, Y, lc, &res[a].algo, ws, wsb, st));
                cudaEventRecord(e1, st); cudaEventSynchronize(e1);
                float ms; cudaEventElapsedTime(&ms, e0, e1); ms /= 10; if (ms < best) best = ms;
            }
            int tile = 0, stages = 0, splitk = 0, red = 0, swz = 0, cluster = 0, id = 0; size_t sz;
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &sz);
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &sz);
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &sz);
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &sz);
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &sz);
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, &sz);
            cublasLtMatmulAlgoConfigGetAttribute(&res[a].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &sz);
            printf("{\"shape\":\"%s\",\"M\":%zu,\"rank\":%d,\"ms\":%.4f,\"tflops\":%.1f,\"algo\":%d,\"tile\":%d,\"stages\":%d,"
                   "\"splitk\":%d,\"red\":%d,\"swz\":%d,\"cluster\":%d,\"ws\":%zu}\n",
                   sh[s].name, n, a, best, flop / best / 1e9, id, tile, stages, splitk, red, swz, cluster,
                   res[a].workspaceSize);
        }
        fflush(stdout);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(op);
    }
    return 0;
}

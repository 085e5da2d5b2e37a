// kernels/gemm.cu: the cuBLASLt wrapper. Row-major products are issued as
// their column-major transposes (C^T = op(B)^T op(A)^T), so no data moves.
// Heuristic algorithm choices are cached per shape, and the token dimension is
// bucketed for the query (see algo_for).
#include "common.cuh"
#include "gemm.h"
#include <cublasLt.h>
#include <cublas_v2.h>
#include <string.h>
#include <algorithm>

#define CUBLAS_CHECK(call) do {                                                       \
    cublasStatus_t s_ = (call);                                                       \
    if (s_ != CUBLAS_STATUS_SUCCESS) die_at(__FILE__, __LINE__, "cuBLAS error %d (%s)", \
                                            (int)s_, #call);                          \
} while (0)

typedef struct {
    int used;
    int ta, tb, c_f32, bias;
    unsigned align;          // min(256, alignment of A, B, C) in bytes: part of the key
    size_t m, n, k, lda, ldb, ldc;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} plan;

// Token counts change from batch to batch, so shapes keep coming: a
// direct-mapped cache of plans keyed by a hash of the shape, replacing on
// collision (the heuristic query costs tens of microseconds, a GEMM more).
#define PLAN_SLOTS 4096
#define ALGO_SLOTS 1024
typedef struct {
    int used;
    uint64_t key;
    cublasLtMatmulAlgo_t algo;
} algo_slot;

struct gemm_ctx {
    cublasLtHandle_t lt;
    cublasHandle_t blas;      // batched products
    void *ws; size_t ws_bytes;
    cudaStream_t stream;
    plan plans[PLAN_SLOTS];
    algo_slot algos[ALGO_SLOTS];
    int exact;                // LORAPIPE_GEMM_EXACT=1: query every token count (for comparisons)
};

extern "C" gemm_ctx *gemm_create(size_t ws_bytes, cudaStream_t s) {
    gemm_ctx *g = (gemm_ctx *)calloc(1, sizeof *g);
    CUBLAS_CHECK(cublasLtCreate(&g->lt));
    CUBLAS_CHECK(cublasCreate(&g->blas));
    CUBLAS_CHECK(cublasSetStream(g->blas, s));
    g->ws_bytes = ws_bytes;
    CUDA_CHECK(cudaMalloc(&g->ws, ws_bytes));
    g->stream = s;
    const char *ex = getenv("LORAPIPE_GEMM_EXACT");
    g->exact = ex && *ex && strcmp(ex, "0");
    return g;
}

extern "C" size_t gemm_workspace_bytes(const gemm_ctx *g) { return g->ws_bytes; }

static void plan_release(plan *p) {
    if (!p->used) return;
    cublasLtMatmulDescDestroy(p->op);
    cublasLtMatrixLayoutDestroy(p->la);
    cublasLtMatrixLayoutDestroy(p->lb);
    cublasLtMatrixLayoutDestroy(p->lc);
    p->used = 0;
}

extern "C" void gemm_destroy(gemm_ctx *g) {
    for (int i = 0; i < PLAN_SLOTS; i++) plan_release(&g->plans[i]);
    cudaFree(g->ws);
    cublasDestroy(g->blas);
    cublasLtDestroy(g->lt);
    free(g);
}

// Column-major problem: C (m, n) = op(A) (m, k) op(B) (k, n).
static unsigned ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    unsigned al = 256;
    while (al > 2 && (a & (al - 1))) al >>= 1;
    return al;
}

// FNV-1a over a problem's description: the key of both caches.
static uint64_t shape_hash(int ta, int tb, size_t m, size_t n, size_t k, size_t lda, size_t ldb, size_t ldc, int c_f32,
                           int bias, unsigned align) {
    size_t key[] = {(size_t)ta, (size_t)tb, m, n, k, lda, ldb, ldc, (size_t)c_f32, (size_t)bias, align};
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < sizeof key / sizeof *key; i++) { h ^= key[i]; h *= 1099511628211ULL; }
    return h;
}

// The heuristic's first choice for the problem p describes, with the column
// count n replaced by n_query (layouts built for that count).
static cublasLtMatmulAlgo_t algo_query(gemm_ctx *g, const plan *p, size_t n_query, int *found) {
    cublasLtMatrixLayout_t lb, lc;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, p->tb ? n_query : p->k, p->tb ? p->k : n_query, p->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, p->c_f32 ? CUDA_R_32F : CUDA_R_16BF, p->m, n_query, p->ldc));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_bytes,
                                                      sizeof g->ws_bytes));
    // Operands at column offsets inside wider rows are not 256-byte aligned:
    // tell the heuristic, or it may pick a kernel that refuses them at run time.
    uint32_t al = p->align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    *found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->la, lb, lc, lc, pref, 1, &res, found));
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    return res.algo;
}

// Token counts change from micro-batch to micro-batch, and a heuristic query
// costs the host tens to hundreds of microseconds, during which the GPU runs
// dry (measured: the largest share of its idle time). So the query is made
// for the token count rounded up to a multiple of 64 and its answer reused for
// every count in that bucket, once cuBLASLt confirms it supports the actual
// shape. Deterministic: the same shapes always get the same algorithm.
static cublasLtMatmulAlgo_t algo_for(gemm_ctx *g, const plan *p) {
    size_t nb = p->n > 256 && !g->exact ? (p->n + 63) / 64 * 64 : p->n;
    uint64_t h = shape_hash(p->ta, p->tb, p->m, nb, p->k, p->lda, p->ldb, p->ldc, p->c_f32, p->bias, p->align);
    algo_slot *a = &g->algos[h % ALGO_SLOTS];
    int found = 0;
    if (!a->used || a->key != h) {   // a new bucket (or another shape in the slot): ask for it
        a->algo = algo_query(g, p, nb, &found);
        a->used = found;
        a->key = h;
    }
    cublasLtMatmulHeuristicResult_t chk;
    if (a->used && cublasLtMatmulAlgoCheck(g->lt, p->op, p->la, p->lb, p->lc, p->lc, &a->algo, &chk) ==
                       CUBLAS_STATUS_SUCCESS && chk.workspaceSize <= g->ws_bytes)
        return a->algo;
    cublasLtMatmulAlgo_t al = algo_query(g, p, p->n, &found);   // the bucket's choice does not fit this shape
    if (!found) die_at(__FILE__, __LINE__, "cuBLASLt has no algorithm for a %zux%zux%zu product", p->m, p->n, p->k);
    return al;
}

static plan *get_plan(gemm_ctx *g, int ta, int tb, size_t m, size_t n, size_t k, size_t lda, size_t ldb, size_t ldc,
                      int c_f32, int bias, unsigned align) {
    uint64_t h = shape_hash(ta, tb, m, n, k, lda, ldb, ldc, c_f32, bias, align);
    plan *p = &g->plans[h % PLAN_SLOTS];
    if (p->used && p->ta == ta && p->tb == tb && p->m == m && p->n == n && p->k == k && p->lda == lda &&
        p->ldb == ldb && p->ldc == ldc && p->c_f32 == c_f32 && p->bias == bias && p->align == align)
        return p;
    plan_release(p);
    memset(p, 0, sizeof *p);
    p->ta = ta; p->tb = tb; p->m = m; p->n = n; p->k = k; p->lda = lda; p->ldb = ldb; p->ldc = ldc;
    p->c_f32 = c_f32; p->bias = bias; p->align = align;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_16BF;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, c_f32 ? CUDA_R_32F : CUDA_R_16BF, m, n, ldc));
    p->algo = algo_for(g, p);
    p->used = 1;
    return p;
}

// D = alpha op(A) op(B) + beta C; C may be D itself (in place) or another
// matrix of the same shape and row stride (a residual input, say).
static void gemm_bf16_cd(gemm_ctx *g, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const uint16_t *A,
                         size_t lda, const uint16_t *B, size_t ldb, float beta, const void *Cin, void *C, int c_f32,
                         size_t ldc, const uint16_t *bias) {
    if (M == 0 || N == 0) return;
    if (K == 0) die_at(__FILE__, __LINE__, "GEMM with K = 0");
    // Row-major C (M, N) = op(A) op(B)  <=>  column-major C^T (N, M) = op(B)^T op(A)^T.
    // Every row starts ld elements after the last: its alignment counts too.
    unsigned al = std::min(ptr_align(A), ptr_align((const void *)(uintptr_t)(lda * 2)));
    al = std::min(al, std::min(ptr_align(B), ptr_align((const void *)(uintptr_t)(ldb * 2))));
    al = std::min(al, std::min(ptr_align(C), ptr_align((const void *)(uintptr_t)(ldc * (c_f32 ? 4 : 2)))));
    al = std::min(al, ptr_align(Cin));
    plan *p = get_plan(g, tb, ta, N, M, K, ldb, lda, ldc, c_f32, bias != NULL, al);
    if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    CUBLAS_CHECK(cublasLtMatmul(g->lt, p->op, &alpha, B, p->la, A, p->lb, &beta, Cin, p->lc, C, p->lc, &p->algo,
                                g->ws, g->ws_bytes, g->stream));
}

extern "C" void gemm_bf16(gemm_ctx *g, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const uint16_t *A,
                          size_t lda, const uint16_t *B, size_t ldb, float beta, void *C, int c_f32, size_t ldc,
                          const uint16_t *bias) {
    gemm_bf16_cd(g, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, C, c_f32, ldc, bias);
}

extern "C" void gemm_linear_fwd_res(gemm_ctx *g, uint16_t *y, const uint16_t *res, size_t ldy, const uint16_t *x,
                                    size_t ldx, const uint16_t *W, size_t ldw, size_t M, size_t O, size_t I) {
    gemm_bf16_cd(g, 0, 1, M, O, I, 1.0f, x, ldx, W, ldw, 1.0f, res, y, 0, ldy, NULL);
}

extern "C" void gemm_linear_fwd(gemm_ctx *g, uint16_t *y, size_t ldy, const uint16_t *x, size_t ldx, const uint16_t *W,
                                size_t ldw, size_t M, size_t O, size_t I, const uint16_t *bias, float alpha, float beta) {
    gemm_bf16(g, 0, 1, M, O, I, alpha, x, ldx, W, ldw, beta, y, 0, ldy, bias);
}

extern "C" void gemm_linear_dx(gemm_ctx *g, uint16_t *dx, size_t lddx, const uint16_t *dy, size_t lddy, const uint16_t *W,
                               size_t ldw, size_t M, size_t O, size_t I, float alpha, float beta) {
    gemm_bf16(g, 0, 0, M, I, O, alpha, dy, lddy, W, ldw, beta, dx, 0, lddx, NULL);
}

extern "C" void gemm_linear_dw(gemm_ctx *g, float *dW, const uint16_t *dy, size_t lddy, const uint16_t *x, size_t ldx,
                               size_t M, size_t O, size_t I, float alpha, float beta) {
    gemm_bf16(g, 1, 0, O, I, M, alpha, dy, lddy, x, ldx, beta, dW, 1, I, NULL);
}

extern "C" void gemm_batched(gemm_ctx *g, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const uint16_t *A,
                             size_t lda, size_t sa, const uint16_t *B, size_t ldb, size_t sb, float beta, void *C,
                             int c_f32, size_t ldc, size_t sc, size_t batch) {
    if (!M || !N || !batch) return;
    // Row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T, as above.
    cublasOperation_t oa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, ob = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(g->blas, oa, ob, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_16BF, (int)ldb,
                                            (long long)sb, A, CUDA_R_16BF, (int)lda, (long long)sa, &beta, C,
                                            c_f32 ? CUDA_R_32F : CUDA_R_16BF, (int)ldc, (long long)sc, (int)batch,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

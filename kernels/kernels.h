// kernels/kernels.h: launchers of every CUDA kernel, callable from C and C++.
// Tensors are row-major; shapes in comments. N is the number of tokens of a
// padding-free micro-batch (sequences laid end to end); bf16 activations,
// fp32 statistics and LoRA state. Every launcher checks the launch.
#ifndef LORAPIPE_KERNELS_H
#define LORAPIPE_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bf16_t;   // bf16 bits on the host side

// ---- embedding, copies, casts (misc.cu) -----------------------------------
// out (N, C) = table[ids] ; table (V, C) bf16
void k_embed(bf16_t *out, const bf16_t *table, const int32_t *ids, size_t N, size_t C, cudaStream_t s);
// dst[i] = bf16(src[i] * scale)
void k_f32_to_bf16(bf16_t *dst, const float *src, size_t n, float scale, cudaStream_t s);
// rows: dst (n, C) = src[idx[i]] ; and the scatter back (dst rows idx[i] = src rows i)
void k_gather_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, cudaStream_t s);
void k_scatter_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, size_t n, size_t C, cudaStream_t s);
// dst (n, C): row j < P = sum over the n_seq sequences (starting at seq[k] in src) of their row j, in fp32;
// row j >= P = src row idx[j]. Folds an expanded batch back onto rows whose shared prefix appears once.
void k_fold_rows(bf16_t *dst, const bf16_t *src, const int32_t *idx, const int32_t *seq, size_t n_seq, size_t P,
                 size_t n, size_t C, cudaStream_t s);
// y += x (bf16, n elements), rounding once
void k_add_inplace(bf16_t *y, const bf16_t *x, size_t n, cudaStream_t s);

// ---- RMSNorm (rmsnorm.cu) ---------------------------------------------------
// y = w * bf16(x * rsqrt(mean(x^2) + eps)); rstd (N) fp32 kept for the backward.
void k_rmsnorm_fwd(bf16_t *y, float *rstd, const bf16_t *x, const bf16_t *w, size_t N, size_t C, float eps,
                   cudaStream_t s);
// dx (+)= rmsnorm backward of dy; accumulate = 1 adds into dx (the residual stream's gradient).
void k_rmsnorm_bwd(bf16_t *dx, const bf16_t *dy, const bf16_t *x, const float *rstd, const bf16_t *w,
                   size_t N, size_t C, int accumulate, cudaStream_t s);

// ---- RoPE (rope.cu) ---------------------------------------------------------
// In place on heads of D within rows of stride ld: x (N, ld), heads at columns [col0, col0 + heads*D).
// pos (N) positions within each sequence; inv_freq (D/2) fp32. inverse = 1 for the backward.
void k_rope(bf16_t *x, size_t ld, size_t col0, size_t heads, size_t D, const int32_t *pos, const float *inv_freq,
            size_t N, int inverse, cudaStream_t s);

// ---- attention (attention.cu) ----------------------------------------------
// Causal attention inside each sequence; seq (n_seq + 1) token offsets (int32).
// qkv (N, ld): q heads at column 0, k at H*D, v at (H+G)*D. out (N, H*D); lse (H, N) fp32.
typedef struct {
    size_t n_seq, N, H, G, D, ld;
    const int32_t *seq;          // device (n_seq + 1)
    const int32_t *qblocks;      // device work list: (seq index, first query) pairs
    size_t n_qblocks;            // items in qblocks (blocks of ATT_BQ queries)
    size_t max_len;
} att_shape;
#define ATT_BQ 64
void k_attention_fwd(bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, cudaStream_t s);
// dqkv (N, ld) gets dq, dk, dv (every element written); delta (H, N) fp32 scratch.
// delta (H, N) = rowwise dout . out per head (both (N, H*D)), for the backward passes.
void k_attention_delta(float *delta, const bf16_t *dout, const bf16_t *out, size_t N, size_t H, size_t D, cudaStream_t s);
void k_attention_bwd(bf16_t *dqkv, float *delta, const bf16_t *dout, const bf16_t *out, const float *lse,
                     const bf16_t *qkv, const att_shape *a, cudaStream_t s);

// ---- attention through batched GEMMs (attention_gemm.cu) -------------------
// The same functions for sequences short enough to pad into (Lp, D) tiles
// (Lp >= the longest sequence, a multiple of 8); ws holds att_gemm_ws_bytes;
// tok_seq is an (N) int32 scratch array.
typedef struct gemm_ctx gemm_ctx;
size_t att_gemm_ws_bytes(size_t n_seq, size_t H, size_t Lp, size_t D);
void att_gemm_fwd(gemm_ctx *g, bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, size_t Lp, void *ws,
                  int32_t *tok_seq, cudaStream_t s);
void att_gemm_bwd(gemm_ctx *g, bf16_t *dqkv, float *delta, const bf16_t *dout, const bf16_t *out, const float *lse,
                  const bf16_t *qkv, const att_shape *a, size_t Lp, void *ws, int32_t *tok_seq, cudaStream_t s);

// ---- attention for short sequences in shared memory (attention_short.cu) ---
// The same contract for batches whose longest sequence has at most
// ATT_SHORT_MAX tokens (and fits shared memory: att_short_ok). With grouped
// query heads the backward needs att_short_scratch_bytes of fp32 scratch.
#define ATT_SHORT_MAX 256
int att_short_ok(const att_shape *a);
size_t att_short_scratch_bytes(const att_shape *a);
void att_short_fwd(bf16_t *out, float *lse, const bf16_t *qkv, const att_shape *a, cudaStream_t s);
void att_short_bwd(bf16_t *dqkv, const bf16_t *dout, const bf16_t *out, const float *lse, const bf16_t *qkv,
                   const att_shape *a, float *scratch, cudaStream_t s);

// ---- LoRA input side with fused dropout (lora.cu) ----------------------------
// Mask key of (layer, module) for a micro-batch key, as the CPU reference derives it.
uint64_t lora_mask_key(uint64_t key, size_t layer, int module);
int lora_fused_rank_ok(size_t r);                       // ranks 1, 2, 4, 8, 16
size_t lora_da_ws_floats(size_t N, size_t r, size_t I); // scratch of k_lora_da
// One module at a time (groups of one; the trainer passes whole groups, below).
// t (N, r) = dropout(x) A^T ; x (N, I), A (r, I)
void k_lora_in(bf16_t *t, const bf16_t *x, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k, float p,
               cudaStream_t s);
// dA (r, I) fp32 += dt^T dropout(x); part: lora_da_ws_floats scratch
void k_lora_da(float *dA, float *part, const bf16_t *dt, const bf16_t *x, size_t N, size_t I, size_t r, uint64_t k,
               float p, cudaStream_t s);
// The adapter's B side without cuBLAS (r is far too thin a dimension for a
// GEMM library's tiles); B (O, r) bf16 as PEFT stores lora_B, rows strided by ld:
// y (N, O) += s t B^T ; dt (N, r) = s dy B ; dB (O, r) fp32 += s dy^T t (part: lora_da_ws_floats(N, r, O))
void k_lora_out(bf16_t *y, size_t ldy, const bf16_t *t, const bf16_t *B, size_t N, size_t O, size_t r, float s,
                cudaStream_t st);
void k_lora_dt(bf16_t *dt, const bf16_t *dy, size_t lddy, const bf16_t *B, size_t N, size_t O, size_t r, float s,
               cudaStream_t st);
void k_lora_db(float *dB, float *part, const bf16_t *t, const bf16_t *dy, size_t lddy, size_t N, size_t O, size_t r,
               float s, cudaStream_t st);
// dst = dropout(src), n elements (the unfused path)
void k_dropout(bf16_t *dst, const bf16_t *src, size_t n, uint64_t k, float p, cudaStream_t s);
// dx (N, I) += dropout'(dt A)
void k_lora_dx(bf16_t *dx, const bf16_t *dt, const bf16_t *A, size_t N, size_t I, size_t r, uint64_t k, float p,
               cudaStream_t s);
// Modules that read the same input x (N, I): q, k, v (or gate, up). One kernel
// per pass reads x (or writes dx) once for the whole group.
#define LORA_GMAX 3
typedef struct {
    int g;                         // modules in the group, 1..LORA_GMAX
    const bf16_t *w[LORA_GMAX];    // A (r, I) of each
    bf16_t *t[LORA_GMAX];          // (N, r) each: t = dropout(x) A^T (in), or dt (read by da, dx)
    float *dw[LORA_GMAX];          // dA (r, I) fp32 of each (da)
    uint64_t k[LORA_GMAX];         // dropout mask keys (lora_mask_key)
    // B side, batched (one launch for the modules, no shared input): w are the
    // B (cols[j], r), io the y or dy column blocks of row stride ld, cols the O_j.
    bf16_t *io[LORA_GMAX];
    size_t cols[LORA_GMAX], ld;
} lora_group;
// t[g] = dropout_g(x) A[g]^T for each g
void k_lora_in_group(const lora_group *gr, const bf16_t *x, size_t N, size_t I, size_t r, float p, cudaStream_t s);
// dA[g] += dt[g]^T dropout_g(x) for each g; part: LORA_GMAX x lora_da_ws_floats(N, r, I) scratch
void k_lora_da_group(const lora_group *gr, float *part, const bf16_t *x, size_t N, size_t I, size_t r, float p,
                     cudaStream_t s);
// dx += sum_g dropout_g'(dt[g] A[g])
void k_lora_dx_group(bf16_t *dx, const lora_group *gr, size_t N, size_t I, size_t r, float p, cudaStream_t s);
// The B side of a group in one launch each: io[j] += s t[j] B[j]^T ; t[j] = s io[j] B[j] (dt from dy) ;
// dw[j] (O_j, r) += s io[j]^T t[j] (part: LORA_GMAX x lora_da_ws_floats(N, r, max O_j))
void k_lora_out_batch(const lora_group *gr, size_t N, size_t r, float s, cudaStream_t st);
void k_lora_dt_batch(const lora_group *gr, size_t N, size_t r, float s, cudaStream_t st);
void k_lora_db_batch(const lora_group *gr, float *part, size_t N, size_t r, float s, cudaStream_t st);

// ---- SwiGLU (swiglu.cu) -----------------------------------------------------
// gu (N, 2F): gate in columns [0, F), up in [F, 2F). act (N, F) = bf16(silu(g)) * u.
void k_swiglu_fwd(bf16_t *act, const bf16_t *gu, size_t N, size_t F, cudaStream_t s);
// dgu (N, 2F) from dact (N, F).
void k_swiglu_bwd(bf16_t *dgu, const bf16_t *dact, const bf16_t *gu, size_t N, size_t F, cudaStream_t s);

// ---- loss (cross_entropy.cu) ------------------------------------------------
// logits (n, V) bf16 in place -> inv_n * (softmax - onehot(target)), bf16;
// loss (n) fp32 per-row losses (logsumexp - z_target, from the bf16 logits in fp32).
void k_xent_fwd_bwd(bf16_t *logits, float *loss, const int32_t *target, size_t n, size_t V, float inv_n,
                    int want_grad, cudaStream_t s);
// Deterministic sum of n floats into *out (one block).
void k_sum(float *out, const float *x, size_t n, cudaStream_t s);

// ---- optimizer (adamw.cu) ---------------------------------------------------
// Per-tensor sums of squares: tensor t spans [off[t], off[t+1]) of g; out (n_tensors) fp32.
void k_sumsq_per_tensor(float *out, const float *g, const size_t *off_dev, size_t n_tensors, cudaStream_t s);
void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float clip, float decay, float w1, float b2,
             float w2, float step_size, float bc2_sqrt, float eps, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif

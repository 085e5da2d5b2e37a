// lib/mem_plan.h: the GPU memory a training process needs, arena by arena.
//
// One source of truth for two users: the CUDA backend sizes its arenas with
// these numbers (a carve-out past them dies loudly), and shard-plan predicts
// per-GPU memory with them before any GPU is touched. Every buffer is rounded
// as lib/arena.h rounds it.
#ifndef LORAPIPE_MEM_PLAN_H
#define LORAPIPE_MEM_PLAN_H
#include <stddef.h>
#include "lora.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MEM_DA_CHUNK 64            // rows per partial sum of the fused LoRA dA kernel
#define MEM_LORA_GROUP 3           // modules that share an input (q, k, v) and one fused LoRA kernel
#define MEM_CUBLAS_WS (32u << 20)  // cuBLASLt workspace
#define MEM_ATT_BUDGET_FAST ((size_t)1024 << 20)
#define MEM_ATT_BUDGET_LEAN ((size_t)256 << 20)

typedef struct {
    const model_dims *d;
    size_t r;                  // LoRA rank
    const int *on;             // LORA_NMOD flags
    size_t max_tokens;         // largest micro-batch (tokens)
    size_t max_len;            // longest sequence
    int recompute;             // lean mode: one activation set, embedding in host memory
    int dropout;               // LoRA dropout > 0
    int lora_fused;            // fused LoRA input kernels (no dropout scratch)
    int attention_kernel;      // force the streaming attention kernels (no tiles)
    int offload;               // host offload: layer weights in pinned host memory, two device slots
    // A pipeline stage (a plan with stages_per_replica > 1) holds layers
    // [layer0, layer1) only; the first stage the embedding, the last the final
    // norm, lm_head and the logits chunk. layer1 == 0: the whole model.
    size_t layer0, layer1;
} mem_plan_in;

typedef struct {
    size_t weights, lora, activations, workspace, attention, cublas;
    size_t total;              // device bytes allocated by the process (not the CUDA context)
    size_t embed_host;         // bytes of the embedding kept in host memory instead (lean, untied)
    size_t layer_bytes;        // one layer's frozen weights on the device (the unit host offload streams)
    size_t host_layers;        // pinned host bytes of the offloaded layers (0 without offload)
    size_t logit_rows;         // rows of the logits chunk
    size_t logits;             // bytes of the logits chunk and its rows (part of workspace)
    size_t lora_params;        // floats in one LoRA arena
} mem_plan;

void mem_plan_compute(mem_plan *m, const mem_plan_in *in);

// Tiles of the batched-GEMM attention for S sequences padded to Lp (kernels/attention_gemm.cu).
size_t mem_attention_tiles(size_t S, size_t H, size_t Lp, size_t D);
// Scratch floats of the fused LoRA dA kernel (kernels/lora.cu).
size_t mem_lora_da_floats(size_t N, size_t r, size_t I);

#ifdef __cplusplus
}
#endif
#endif

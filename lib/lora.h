// lib/lora.h: where every LoRA tensor lives in the one contiguous fp32 arena.
//
// The arena holds, for every adapted module in PEFT's named_parameters order
// (layer 0: q, k, v, o, gate, up, down; then layer 1; ...), A (r, in) then
// B (out, r). Parameters, gradients and the two AdamW moments are four arenas
// of the same layout, so AdamW, the global norm and an all-reduce are each one
// pass over one block.
#ifndef LORAPIPE_LORA_H
#define LORAPIPE_LORA_H
#include <stddef.h>
#include <stdint.h>

enum { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NMOD };

// Model dimensions the layout (and every backend) needs.
typedef struct {
    size_t vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    double rms_eps, rope_theta;
    int tied;
} model_dims;

typedef struct {
    size_t r;                    // rank
    double alpha;
    int rslora;
    float scaling;               // alpha / r, or alpha / sqrt(r) with rsLoRA
    int on[LORA_NMOD];           // which modules are adapted
    size_t in[LORA_NMOD], out[LORA_NMOD];
    size_t layers;
    size_t *off_a, *off_b;       // (layers, LORA_NMOD) offsets in floats; SIZE_MAX when not adapted
    size_t n_tensors;            // 2 x adapted modules
    size_t n_params;             // floats in one arena
} lora_layout;

// Short names ("q_proj") and the submodule path ("self_attn.q_proj").
const char *lora_module_name(int m);
const char *lora_module_path(int m);
// Parse a comma list of targets ("q_proj,k_proj,...", or "all" / "all-linear").
// Returns 0 and sets on[], or -1 naming the bad entry in err.
int lora_parse_targets(const char *list, int on[LORA_NMOD], char *err, size_t errlen);

void lora_layout_init(lora_layout *l, const model_dims *d, size_t r, double alpha, int rslora,
                      const int on[LORA_NMOD]);
void lora_layout_free(lora_layout *l);
// Index-th tensor in arena order: fills layer, module and whether it is B.
void lora_tensor_at(const lora_layout *l, size_t index, size_t *layer, int *module, int *is_b);
// PEFT file key of a tensor: base_model.model.model.layers.{i}.{path}.lora_{A|B}.weight
void lora_tensor_key(size_t layer, int module, int is_b, char *buf, size_t n);
// Arena offsets of every tensor in order, plus the total: (n_tensors + 1), malloc'ed.
size_t *lora_tensor_offsets(const lora_layout *l);
// Arena offset where layer `layer`'s tensors begin (n_params for layer == layers):
// a layer's tensors are contiguous, so layers [a, b) are [begin(a), begin(b)).
size_t lora_layer_begin(const lora_layout *l, size_t layer);
static inline size_t lora_tensor_numel(const lora_layout *l, int module, int is_b) {
    return is_b ? l->out[module] * l->r : l->r * l->in[module];
}

// PEFT's default initialisation, bit for bit: with the generator seeded by
// torch.manual_seed(seed) just before get_peft_model, each adapted module
// draws (1) nn.Linear(in, r)'s kaiming-uniform init of A, (2) nn.Linear(r, out)'s
// of B, (3) the re-init of A (kept); B is zero. round_bf16 rounds A through
// bf16 as PEFT does for a bf16 base model.
void lora_init_peft(const lora_layout *l, float *params, uint32_t seed, int round_bf16);

#endif

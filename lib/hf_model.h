// lib/hf_model.h: a Hugging Face Qwen2 model folder, mapped read-only.
//
// hf_model_open reads config.json, then model.safetensors or (when that is
// absent) model.safetensors.index.json and every shard it names, maps each
// file (lib/safetensors.h validates every header), and checks that the
// tensors are exactly those of a Qwen2 model with this config: every
// expected name present with the implied shape and a float dtype, nothing
// unknown, nothing listed twice.  Errors are one line naming the file and
// the tensor.  Tensor data stays in the mappings (no copy); the fp32 helpers
// convert for code that computes.
#ifndef LORAPIPE_HF_MODEL_H
#define LORAPIPE_HF_MODEL_H
#include <stddef.h>
#include "hf_config.h"
#include "safetensors.h"

// One tensor a Qwen2 checkpoint holds.
typedef struct {
    char name[96];
    int ndim;
    size_t shape[2];
    int optional;       // lm_head.weight of a tied model (absent from files)
} hf_tensor_spec;

// Every tensor for this config in module (state-dict) order, the order
// save_pretrained shards in: embed_tokens; per layer q,k,v (weight, bias),
// o, gate, up, down, input_layernorm, post_attention_layernorm; norm;
// lm_head.  *out is malloc'ed.
size_t hf_expected_tensors(const hf_config *c, hf_tensor_spec **out);

// Check a list of tensors (from one or several headers) against the config;
// names[i] lives in file files[i] (for messages; files may be NULL, then
// what is used).  Returns -1 with a one-line message.
int hf_check_tensors(const hf_config *c, const st_tensor *const *t, size_t n, const char *const *files,
                     const char *what, char *err, size_t errlen);

typedef struct {
    char *dir;
    hf_config cfg;
    st_file *shards; size_t n_shards;
    const st_tensor **by_name; size_t n;      // every tensor, sorted by name
    size_t *shard_of;                         // by_name[i] lives in shards[shard_of[i]]
} hf_model;

int hf_model_open(hf_model *m, const char *dir, char *err, size_t errlen);
void hf_model_open_or_die(hf_model *m, const char *dir);
void hf_model_close(hf_model *m);

// Tensor by its checkpoint name; lm_head.weight of a tied model (absent from
// the files) resolves to model.embed_tokens.weight.  NULL when absent.
const st_tensor *hf_model_tensor(const hf_model *m, const char *name);
// The shard file a tensor of this model lives in.
const st_file *hf_model_file_of(const hf_model *m, const st_tensor *t);

// Convert a mapped F32/F16/BF16 tensor to fp32: dst holds t->numel floats.
void hf_tensor_to_f32(const st_tensor *t, float *dst);
// Same into a new buffer (free() it).
float *hf_tensor_f32(const st_tensor *t);

#endif

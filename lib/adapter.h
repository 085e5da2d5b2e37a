// lib/adapter.h: PEFT LoRA adapter folders (adapter_config.json +
// adapter_model.safetensors), read, validated against a model config, and
// written byte for byte as PEFT 0.21 writes them.
//
// An adapter is a list of adapter_lora, one per adapted linear layer, named
// by the module ("model.layers.3.self_attn.q_proj"; the file key is
// "base_model.model.<module>.lora_A.weight").  A is (r, in), B is (out, r),
// both row-major fp32; the layer computes y = x W^T + s * (x A^T) B^T and a
// merge adds s * (B @ A) to W, with s = alpha / r (alpha / sqrt(r) with
// rsLoRA), r and alpha taken from rank_pattern / alpha_pattern when a key
// matches the module as PEFT matches it.
#ifndef LORAPIPE_ADAPTER_H
#define LORAPIPE_ADAPTER_H
#include <stddef.h>
#include "dtype.h"
#include "hf_config.h"

typedef struct {
    char *module;      // "model.layers.3.self_attn.q_proj"
    size_t r, in, out;
    float *A;          // (r, in)
    float *B;          // (out, r)
} adapter_lora;

typedef struct { char *key; double value; } adapter_pattern;

typedef struct {
    size_t r;                       // default 8
    double lora_alpha;              // default 8
    double lora_dropout;            // default 0.0
    int use_rslora;
    char **target_modules; size_t n_target;   // list form (a set; written sorted)
    char *target_regex;             // string form: a regex that must match the whole module name
    char **exclude_modules; size_t n_exclude; // list form
    char *exclude_regex;
    long *layers_to_transform; size_t n_layers;   // empty: every layer
    char **layers_pattern; size_t n_layers_pattern;   // empty: any
    adapter_pattern *rank_pattern; size_t n_rank_pattern;     // in file order
    adapter_pattern *alpha_pattern; size_t n_alpha_pattern;
    char *base_model_name_or_path;  // NULL -> null
    char *task_type;                // "CAUSAL_LM"
    char *init_lora_weights;        // "true", "false" or "gaussian"
    void *json;                     // every key as read (json_t *), NULL for a fresh config
} adapter_config;

typedef struct {
    char *dir;
    adapter_config cfg;
    adapter_lora *mods; size_t n;   // sorted by module name
    dtype file_dtype;               // dtype of the stored tensors (F32 for PEFT's default)
} adapter;

// A config with PEFT 0.21's defaults (task_type CAUSAL_LM); the caller sets
// r, lora_alpha, target modules and so on (strings via xstrdup).
void adapter_config_init(adapter_config *c);
void adapter_config_free(adapter_config *c);
// Parse adapter_config.json text; refuses PEFT features that change what a
// merge means (DoRA, lora_bias, bias != "none", fan_in_fan_out,
// modules_to_save, layer_replication, PiSSA/OLoRA/LoftQ-style inits, ...).
int adapter_config_parse(adapter_config *c, const char *text, size_t len, const char *what, char *err, size_t errlen);
// The JSON text PEFT 0.21 writes (indent 2, sorted keys, no final newline);
// keys read from a file are kept, known fields overwrite them,
// inference_mode is true.
char *adapter_config_dump(const adapter_config *c);

// Does the config target this module (PEFT's check_target_module_exists)?
int adapter_targets(const adapter_config *c, const char *module);
// r and alpha for a module after rank_pattern / alpha_pattern, and scaling.
size_t adapter_rank(const adapter_config *c, const char *module);
double adapter_alpha(const adapter_config *c, const char *module);
double adapter_scaling(const adapter_config *c, const char *module);

// The linear layers of a Qwen2 model this config can adapt, with their
// (in, out) sizes: name, in, out.  Returns the count; *names malloc'ed.
typedef struct { char name[80]; size_t in, out; } adapter_target;
size_t adapter_linear_modules(const hf_config *mc, adapter_target **out);

// Read dir/adapter_config.json and dir/adapter_model.safetensors (tensors
// F32, F16 or BF16; converted to fp32).  Checks the file against its own
// config: every key a lora_A/lora_B weight of a targeted module, both
// present, ranks as the config says.  -1 with a one-line message.
int adapter_load(adapter *a, const char *dir, char *err, size_t errlen);
void adapter_load_or_die(adapter *a, const char *dir);
// Check against a model: every module exists in it (layer in range, known
// projection), shapes match the model's layer sizes, every target_modules
// entry names at least one layer, no layer targeted but absent from the file.
int adapter_validate(const adapter *a, const hf_config *mc, char *err, size_t errlen);
void adapter_free(adapter *a);
const adapter_lora *adapter_find(const adapter *a, const char *module);

// Write dir/adapter_model.safetensors (tensors in dt: F32 as PEFT does, or
// BF16/F16; metadata {"format": "pt"}) and dir/adapter_config.json, each
// through a temporary file renamed into place; dir is created if needed.
void adapter_save(const char *dir, const adapter_config *c, const adapter_lora *mods, size_t n, dtype dt);

#endif

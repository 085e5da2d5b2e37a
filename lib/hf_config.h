// lib/hf_config.h: a Qwen2 config.json (transformers 4 and 5 spellings).
//
// Reading fills the fields that matter for the model's shapes and numerics,
// applying transformers' defaults, and refuses what this project does not
// implement (another model_type, RoPE scaling, sliding-window attention, an
// activation other than SiLU) with one line naming the file and the key.
// Writing rewrites only the dtype key(s) and keeps every other key as read,
// in the layout transformers writes (indent 2, sorted keys, final newline).
#ifndef LORAPIPE_HF_CONFIG_H
#define LORAPIPE_HF_CONFIG_H
#include <stddef.h>
#include "dtype.h"

typedef struct {
    char *path;                   // for messages
    char *model_type;             // "qwen2"
    size_t vocab_size;            // V
    size_t hidden_size;           // H
    size_t intermediate_size;     // F
    size_t num_hidden_layers;     // L
    size_t num_attention_heads;   // n_h
    size_t num_key_value_heads;   // n_kv (default n_h)
    size_t head_dim;              // d (default H / n_h)
    double rms_norm_eps;          // default 1e-6
    double rope_theta;            // top level (v4) or rope_parameters (v5); default 10000
    int tie_word_embeddings;      // default false (Qwen2Config)
    dtype dtype;                  // torch_dtype / dtype; DT_INVALID when absent
    int has_torch_dtype, has_dtype;   // which spelling(s) the file used
    void *json;                   // the parsed file (json_t *), kept for rewriting
} hf_config;

// Parse config.json text; what names it in messages.  Returns -1 with a
// one-line message in err.
int hf_config_parse(hf_config *c, const char *text, size_t len, const char *what, char *err, size_t errlen);
int hf_config_load(hf_config *c, const char *path, char *err, size_t errlen);
void hf_config_load_or_die(hf_config *c, const char *path);
void hf_config_free(hf_config *c);

// config.json text with the dtype set to dt (the key spelled as the file
// spelled it; "dtype" for a transformers-5 file that had none, else
// "torch_dtype"), every other key kept; malloc'ed, ends with a newline.
char *hf_config_dump_with_dtype(const hf_config *c, dtype dt);
// Write that text to path atomically.
void hf_config_write_with_dtype(const hf_config *c, dtype dt, const char *path);

#endif

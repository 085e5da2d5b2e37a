// tests/unit/test_hf_config.c: config.json in transformers 4 and 5 spellings,
// defaults, refusals, and the dtype rewrite (byte-identical to transformers).
#include "check.h"
#include "hf_config.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

// Qwen1.5-0.5B's published config (transformers 4 era).
static const char *V4 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,\"bos_token_id\":151643,\"eos_token_id\":151643,"
    "\"hidden_act\":\"silu\",\"hidden_size\":1024,\"initializer_range\":0.02,\"intermediate_size\":2816,"
    "\"max_position_embeddings\":32768,\"max_window_layers\":21,\"model_type\":\"qwen2\",\"num_attention_heads\":16,"
    "\"num_hidden_layers\":24,\"num_key_value_heads\":16,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"sliding_window\":32768,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.37.0\","
    "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";

static int parse(hf_config *c, const char *text, char *err, size_t n) {
    return hf_config_parse(c, text, strlen(text), "config.json", err, n);
}

// Replace the first occurrence of from by to in V4 and expect a refusal.
static void refuse(const char *from, const char *to, const char *needle) {
    char buf[4096];
    const char *p = strstr(V4, from);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - V4), V4, to, p + strlen(from));
    hf_config c;
    char err[512] = "";
    int r = parse(&c, buf, err, sizeof err);
    T_OK(r == -1 && strstr(err, "config.json") && strstr(err, needle), "refuse %s: %s", to, err);
    if (!r) hf_config_free(&c);
}

int main(void) {
    hf_config c;
    char err[512] = "";
    T_OK(parse(&c, V4, err, sizeof err) == 0, "v4 config: %s", err);
    T_OK(c.hidden_size == 1024 && c.intermediate_size == 2816 && c.num_hidden_layers == 24 && c.vocab_size == 151936,
         "sizes");
    T_OK(c.num_key_value_heads == 16 && c.head_dim == 64, "n_kv, head_dim");
    T_OK(c.rope_theta == 1000000.0 && c.rms_norm_eps == 1e-6 && c.tie_word_embeddings, "rope_theta, eps, tied");
    T_OK(c.dtype == DT_BF16 && c.has_torch_dtype && !c.has_dtype, "torch_dtype");
    char *s = hf_config_dump_with_dtype(&c, DT_F32);
    T_OK(strstr(s, "  \"torch_dtype\": \"float32\",\n") && !strstr(s, "\"dtype\"") &&
         strstr(s, "\"rms_norm_eps\": 1e-06,") && strstr(s, "\"rope_theta\": 1000000.0,") && s[strlen(s) - 1] == '\n',
         "v4 rewrite keeps the spelling and Python's number format:\n%s", s);
    free(s);
    hf_config_free(&c);

    // A transformers-5 file written by save_pretrained: the rewrite with the
    // same dtype gives the same bytes, another dtype changes one line.
    const char *path = "tests/fixtures/tiny-models/qwen2-tiny-untied-bf16/config.json";
    size_t len;
    char *orig = read_file(path, &len);
    hf_config_load_or_die(&c, path);
    T_OK(c.has_dtype && !c.has_torch_dtype && c.dtype == DT_BF16, "v5 dtype");
    T_OK(c.rope_theta == 10000.0 && c.num_key_value_heads == 2 && c.head_dim == 16 && !c.tie_word_embeddings, "v5 fields");
    s = hf_config_dump_with_dtype(&c, DT_BF16);
    T_OK(!strcmp(s, orig), "same dtype: byte-identical to transformers' file");
    free(s);
    s = hf_config_dump_with_dtype(&c, DT_F16);
    char *want = strdup(orig), *p = strstr(want, "\"bfloat16\"");
    memcpy(p, "\"float16\"", 9);
    memmove(p + 9, p + 10, strlen(p + 10) + 1);
    T_OK(!strcmp(s, want), "float16: one value changes:\n%s", s);
    free(s); free(want); free(orig);
    hf_config_free(&c);

    // Defaults: no num_key_value_heads, no head_dim, no rope_theta.
    T_OK(parse(&c, "{\"model_type\":\"qwen2\",\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":4,"
                   "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":null}", err, sizeof err) == 0,
         "minimal: %s", err);
    T_OK(c.num_key_value_heads == 2 && c.head_dim == 4 && c.rope_theta == 10000.0 && c.rms_norm_eps == 1e-6 &&
         !c.tie_word_embeddings && c.dtype == DT_INVALID, "defaults");
    s = hf_config_dump_with_dtype(&c, DT_BF16);
    T_OK(strstr(s, "\"torch_dtype\": \"bfloat16\"") != NULL, "dtype added when absent");
    free(s);
    hf_config_free(&c);

    refuse("\"qwen2\"", "\"llama\"", "model_type \"llama\"");
    refuse("\"silu\"", "\"gelu\"", "hidden_act");
    refuse("\"use_sliding_window\":false", "\"use_sliding_window\":true", "use_sliding_window");
    refuse("\"rope_theta\":1000000.0", "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}", "rope_scaling");
    refuse("\"rope_theta\":1000000.0", "\"rope_parameters\":{\"rope_type\":\"linear\",\"rope_theta\":1.0}", "rope_parameters");
    refuse("\"max_window_layers\":21", "\"layer_types\":[\"full_attention\",\"sliding_attention\"]", "layer_types[1]");
    refuse("\"vocab_size\":151936", "\"vocab_sizes\":1", "missing \"vocab_size\"");
    refuse("\"hidden_size\":1024", "\"hidden_size\":-4", "positive integer");
    refuse("\"num_key_value_heads\":16", "\"num_key_value_heads\":5", "multiple of num_key_value_heads");
    refuse("\"bfloat16\"", "\"int8\"", "torch_dtype");
    // Sizes beyond any real model are refused before anything is sized from
    // them (fuzzing: a hidden size of 2^40 made later byte counts wrap).
    refuse("\"hidden_size\":1024", "\"hidden_size\":1099511627776", "\"hidden_size\" = 1099511627776 is beyond");
    refuse("\"vocab_size\":151936", "\"vocab_size\":16777217", "\"vocab_size\" = 16777217 is beyond");
    refuse("\"num_hidden_layers\":24", "\"num_hidden_layers\":100000", "\"num_hidden_layers\" = 100000 is beyond");
    refuse("\"intermediate_size\":2816", "\"intermediate_size\":9223372036854775807", "is beyond the largest supported");
    T_OK(parse(&c, "[1]", err, sizeof err) == -1 && strstr(err, "not a JSON object"), "array: %s", err);
    T_OK(parse(&c, "{\"model_type\": }", err, sizeof err) == -1 && strstr(err, "config.json: line 1"), "bad JSON: %s", err);
    // Scaled-RoPE "default" and null spellings are accepted.
    T_OK(parse(&c, "{\"model_type\":\"qwen2\",\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":4,"
                   "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"rope_scaling\":null,"
                   "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":5.0}}", err, sizeof err) == 0 &&
         c.rope_theta == 5.0, "rope_parameters.rope_theta: %s", err);
    hf_config_free(&c);
    return T_DONE("test_hf_config");
}

// fuzz/fuzz_tiny_config.h: config.json of tests/fixtures/tiny-models/qwen2-tiny-tied-fp32
// (2 layers, hidden 64, vocab 320), for targets that check input against a model.
#ifndef LORAPIPE_FUZZ_TINY_CONFIG_H
#define LORAPIPE_FUZZ_TINY_CONFIG_H
static const char FZ_TINY_CONFIG[] =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,\"bos_token_id\":1,\"dtype\":\"float32\",\"eos_token_id\":2,\"hidden_act\":\"silu\",\"hidden_size\":64,\"initializer_range\":0.02,\"intermediate_size\":128,\"layer_types\":[\"full_attention\",\"full_attention\"],\"max_position_embeddings\":256,\"max_window_layers\":28,\"model_type\":\"qwen2\",\"num_attention_heads\":4,\"num_hidden_layers\":2,\"num_key_value_heads\":2,\"pad_token_id\":null,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"sliding_window\":null,\"tie_word_embeddings\":true,\"transformers_version\":\"5.17.0\",\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":320}";
#endif

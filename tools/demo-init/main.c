// tools/demo-init: the embedded default for `make demo` and the tests: a tiny
// Qwen2-architecture model with seeded random weights, a byte-level BPE
// tokenizer trained on the data, and a small instruction dataset in the
// tutorial's alpaca layout, all generated here (no download), byte-identical
// for the same options.
//
//   OUT/model/config.json, generation_config.json, model.safetensors,
//             tokenizer.json, tokenizer_config.json
//   OUT/data.json   [{"instruction", "input", "output"}, ...]
#include "atomic_out.h"
#include "bpe_train.h"
#include "check.h"
#include "dtype.h"
#include "mt19937.h"
#include "safetensors.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void) {
    printf(
        "Usage: demo-init --out DIR [--seed N] [--records N] [--vocab N] [--layers N]\n"
        "                 [--hidden N] [--intermediate N] [--heads N] [--kv-heads N]\n"
        "                 [--dtype bf16|fp32] [--untied] [--force]\n"
        "\n"
        "Write the embedded default that `make demo` fine-tunes, generated here (offline):\n"
        "  DIR/model/     a tiny Qwen2-architecture model with seeded random weights:\n"
        "                 config.json, generation_config.json, model.safetensors, and a\n"
        "                 byte-level BPE tokenizer trained on the data (tokenizer.json in\n"
        "                 Qwen2's layout with <|endoftext|>, <|im_start|>, <|im_end|>;\n"
        "                 tokenizer_config.json with Qwen2's ChatML chat_template)\n"
        "  DIR/data.json  an instruction dataset in the alpaca layout of the tutorial's\n"
        "                 huanhuan.json ([{\"instruction\", \"input\", \"output\"}, ...]),\n"
        "                 made from templates so that a small model can learn it\n"
        "The same options give byte-identical files.\n"
        "\n"
        "Options:\n"
        "  -o, --out DIR          output folder (created whole, atomically)\n"
        "  -s, --seed N           seed of the data and the weights (default 42)\n"
        "      --records N        dataset records (default 320)\n"
        "      --vocab N          tokenizer size incl. 3 special tokens (default 512;\n"
        "                         smaller when the data has fewer pairs to merge)\n"
        "      --layers N         decoder layers (default 2)\n"
        "      --hidden N         hidden size (default 64)\n"
        "      --intermediate N   MLP size (default 128)\n"
        "      --heads N          attention heads (default 4)\n"
        "      --kv-heads N       key/value heads (default 2)\n"
        "      --dtype T          weight dtype: bf16 (default, as Qwen ships) or fp32\n"
        "      --untied           a separate lm_head (as Qwen 7B) instead of tied embeddings\n"
        "  -f, --force            replace DIR if it exists\n"
        "  -h, --help             show this help\n"
        "\n"
        "Exit status: 0 ok, 1 runtime error, 2 bad usage.\n");
}

// ---- the dataset ----------------------------------------------------------
// Facts and templates a 100k-parameter model can pick up in a few hundred
// steps: the answers repeat words of the question, so loss falls quickly.
static const char *const COLOR[][2] = {
    {"sky", "blue"}, {"grass", "green"}, {"snow", "white"}, {"coal", "black"}, {"banana", "yellow"},
    {"tomato", "red"}, {"carrot", "orange"}, {"plum", "purple"}, {"cloud", "grey"}, {"lemon", "yellow"},
    {"leaf", "green"}, {"milk", "white"}, {"night", "black"}, {"cherry", "red"}, {"ocean", "blue"},
};
static const char *const SOUND[][2] = {
    {"cat", "meow"}, {"dog", "woof"}, {"cow", "moo"}, {"duck", "quack"}, {"sheep", "baa"},
    {"owl", "hoot"}, {"lion", "roar"}, {"frog", "croak"}, {"horse", "neigh"}, {"bee", "buzz"},
};
static const char *const OPPOSITE[][2] = {
    {"hot", "cold"}, {"big", "small"}, {"fast", "slow"}, {"up", "down"}, {"day", "night"},
    {"open", "closed"}, {"light", "dark"}, {"happy", "sad"}, {"early", "late"}, {"full", "empty"},
    {"old", "new"}, {"hard", "soft"},
};
static const char *const CAPITAL[][2] = {
    {"France", "Paris"}, {"Japan", "Tokyo"}, {"Italy", "Rome"}, {"Spain", "Madrid"}, {"Egypt", "Cairo"},
    {"Peru", "Lima"}, {"Kenya", "Nairobi"}, {"Norway", "Oslo"}, {"Canada", "Ottawa"}, {"China", "Beijing"},
};
static const char *const WORD[] = {"apple", "river", "stone", "candle", "garden", "window", "tiger", "piano",
                                   "rocket", "forest", "silver", "pencil"};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static size_t pick(mt19937 *g, size_t n) { return mt_next_u32(g) % n; }

// One record: instruction, input, output (malloc'ed strings).
static void make_record(mt19937 *g, char **ins, char **in, char **out) {
    char a[256], b[256], c[256];
    a[0] = b[0] = c[0] = 0;
    switch (pick(g, 5)) {
    case 0: {
        const char *const *f = COLOR[pick(g, N_OF(COLOR))];
        static const char *const q[] = {"What color is the %s?", "Tell me the color of the %s.",
                                        "Which color does the %s have?"};
        snprintf(a, sizeof a, q[pick(g, N_OF(q))], f[0]);
        snprintf(c, sizeof c, "The %s is %s.", f[0], f[1]);
        break;
    }
    case 1: {
        const char *const *f = SOUND[pick(g, N_OF(SOUND))];
        static const char *const q[] = {"What sound does a %s make?", "What does a %s say?"};
        snprintf(a, sizeof a, q[pick(g, N_OF(q))], f[0]);
        snprintf(c, sizeof c, "A %s says %s.", f[0], f[1]);
        break;
    }
    case 2: {
        const char *const *f = OPPOSITE[pick(g, N_OF(OPPOSITE))];
        snprintf(a, sizeof a, "Give the opposite of the word.");
        snprintf(b, sizeof b, "%s", f[0]);
        snprintf(c, sizeof c, "The opposite of %s is %s.", f[0], f[1]);
        break;
    }
    case 3: {
        const char *const *f = CAPITAL[pick(g, N_OF(CAPITAL))];
        static const char *const q[] = {"What is the capital of %s?", "Name the capital city of %s."};
        snprintf(a, sizeof a, q[pick(g, N_OF(q))], f[0]);
        snprintf(c, sizeof c, "The capital of %s is %s.", f[0], f[1]);
        break;
    }
    default: {
        const char *w = WORD[pick(g, N_OF(WORD))];
        unsigned k = 2 + (unsigned)pick(g, 3);
        static const char *const num[] = {"", "", "two", "three", "four"};
        snprintf(a, sizeof a, "Repeat the word %s times.", num[k]);
        snprintf(b, sizeof b, "%s", w);
        size_t o = 0;
        for (unsigned i = 0; i < k; i++) o += (size_t)snprintf(c + o, sizeof c - o, "%s%s", i ? " " : "", w);
        break;
    }
    }
    *ins = xstrdup(a); *in = xstrdup(b); *out = xstrdup(c);
}

// ---- writing files --------------------------------------------------------
static void write_text(const char *dir, const char *name, const char *text) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    aout o;
    aout_open(&o, p);
    aout_write(&o, text, strlen(text));
    aout_commit(&o);
    free(p);
}

// JSON as transformers writes its files: indent 2, sorted keys, newline.
static void write_json(const char *dir, const char *name, json_t *j, int sort) {
    char *s = json_dumps(j, JSON_INDENT(2) | (sort ? JSON_SORT_KEYS : JSON_PRESERVE_ORDER) | JSON_REAL_PRECISION(15));
    CHECK(s, "json_dumps failed");
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n'; s[n + 1] = 0;
    write_text(dir, name, s);
    free(s);
    json_decref(j);
}

typedef struct {
    size_t vocab, hidden, inter, layers, heads, kv_heads;
    dtype dt;
    int untied;   // a separate lm_head (as Qwen's 7B and larger) instead of the tied embedding
} dims;

// Standard normal draws (Box-Muller on the torch-compatible generator).
static float randn(mt19937 *g) {
    double u1 = ((mt_next_u32(g) >> 8) + 0.5) / 16777216.0, u2 = (mt_next_u32(g) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

static void write_weights(const char *path, const dims *d, mt19937 *g) {
    size_t hd = d->hidden / d->heads;
    typedef struct { char name[96]; size_t shape[2]; int ndim; float std, fill; } spec;
    size_t cap = 4 + d->layers * 12;   // embedding, norm, lm_head + 12 per layer
    spec *s = xcalloc(cap, sizeof *s);
    size_t n = 0;
#define ADD(NDIM, R, C, STD, FILL, ...) do { snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__); \
        s[n].ndim = NDIM; s[n].shape[0] = R; s[n].shape[1] = C; s[n].std = STD; s[n].fill = FILL; n++; } while (0)
    // Embedding rows are large (std 1): tied, they are also the output layer,
    // and logits of 0.02-sized rows could not move far from uniform.
    ADD(2, d->vocab, d->hidden, 0.15f, 0, "model.embed_tokens.weight");
    ADD(1, d->hidden, 0, 0, 1, "model.norm.weight");
    if (d->untied) ADD(2, d->vocab, d->hidden, 0.15f, 0, "lm_head.weight");
    for (size_t l = 0; l < d->layers; l++) {
        float w = 0.02f;   // Qwen2's initializer_range
        ADD(1, d->hidden, 0, 0, 1, "model.layers.%zu.input_layernorm.weight", l);
        ADD(1, d->hidden, 0, 0, 1, "model.layers.%zu.post_attention_layernorm.weight", l);
        ADD(2, d->heads * hd, d->hidden, w, 0, "model.layers.%zu.self_attn.q_proj.weight", l);
        ADD(1, d->heads * hd, 0, w, 0, "model.layers.%zu.self_attn.q_proj.bias", l);
        ADD(2, d->kv_heads * hd, d->hidden, w, 0, "model.layers.%zu.self_attn.k_proj.weight", l);
        ADD(1, d->kv_heads * hd, 0, w, 0, "model.layers.%zu.self_attn.k_proj.bias", l);
        ADD(2, d->kv_heads * hd, d->hidden, w, 0, "model.layers.%zu.self_attn.v_proj.weight", l);
        ADD(1, d->kv_heads * hd, 0, w, 0, "model.layers.%zu.self_attn.v_proj.bias", l);
        ADD(2, d->hidden, d->heads * hd, w, 0, "model.layers.%zu.self_attn.o_proj.weight", l);
        ADD(2, d->inter, d->hidden, w, 0, "model.layers.%zu.mlp.gate_proj.weight", l);
        ADD(2, d->inter, d->hidden, w, 0, "model.layers.%zu.mlp.up_proj.weight", l);
        ADD(2, d->hidden, d->inter, w, 0, "model.layers.%zu.mlp.down_proj.weight", l);
    }
#undef ADD
    st_writer w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    void **data = xcalloc(n, sizeof *data);
    size_t esz = (size_t)dtype_bits(d->dt) / 8;
    for (size_t i = 0; i < n; i++) {
        st_writer_add(&w, s[i].name, d->dt, s[i].ndim, s[i].shape);
        size_t numel = s[i].shape[0] * (s[i].ndim == 2 ? s[i].shape[1] : 1);
        float *f = xmalloc(numel * sizeof *f);
        for (size_t k = 0; k < numel; k++) f[k] = s[i].std > 0 ? s[i].std * randn(g) : s[i].fill;
        data[i] = xmalloc(numel * esz);
        from_f32(data[i], d->dt, f, numel);
        free(f);
    }
    st_write_file(path, &w, (const void *const *)data);
    for (size_t i = 0; i < n; i++) free(data[i]);
    free(data); free(s);
    st_writer_free(&w);
}

static json_t *model_config(const dims *d, size_t eos, size_t bos) {
    json_t *types = json_array();
    for (size_t l = 0; l < d->layers; l++) json_array_append_new(types, json_string("full_attention"));
    return json_pack("{s:[s], s:f, s:I, s:s, s:I, s:s, s:I, s:f, s:I, s:o, s:I, s:I, s:s, s:I, s:I, s:I, s:f,"
                     " s:f, s:n, s:b, s:b, s:b, s:I}",
                     "architectures", "Qwen2ForCausalLM", "attention_dropout", 0.0, "bos_token_id", (json_int_t)bos,
                     "torch_dtype", dtype_torch_name(d->dt), "eos_token_id", (json_int_t)eos, "hidden_act", "silu",
                     "hidden_size", (json_int_t)d->hidden, "initializer_range", 0.02,
                     "intermediate_size", (json_int_t)d->inter, "layer_types", types,
                     "max_position_embeddings", (json_int_t)4096, "max_window_layers", (json_int_t)d->layers,
                     "model_type", "qwen2", "num_attention_heads", (json_int_t)d->heads,
                     "num_hidden_layers", (json_int_t)d->layers, "num_key_value_heads", (json_int_t)d->kv_heads,
                     "rms_norm_eps", 1e-6, "rope_theta", 1000000.0, "sliding_window", "tie_word_embeddings", !d->untied,
                     "use_cache", 1, "use_sliding_window", 0, "vocab_size", (json_int_t)d->vocab);
}

// Qwen2-Instruct's chat template (default system turn "You are a helpful assistant.").
static const char CHAT_TEMPLATE[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char *const SPECIALS[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};

static json_t *tokenizer_config(size_t first_special) {
    json_t *dec = json_object();
    for (size_t i = 0; i < N_OF(SPECIALS); i++) {
        char id[32];
        snprintf(id, sizeof id, "%zu", first_special + i);
        json_object_set_new(dec, id, json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", SPECIALS[i], "lstrip", 0,
                                               "normalized", 0, "rstrip", 0, "single_word", 0, "special", 1));
    }
    return json_pack("{s:b, s:o, s:[s, s], s:n, s:s, s:b, s:s, s:s, s:I, s:s, s:b, s:s, s:n}",
                     "add_prefix_space", 0, "added_tokens_decoder", dec, "additional_special_tokens", SPECIALS[1],
                     SPECIALS[2], "bos_token", "chat_template", CHAT_TEMPLATE, "clean_up_tokenization_spaces", 0,
                     "eos_token", SPECIALS[2], "errors", "replace", "model_max_length", (json_int_t)4096,
                     "pad_token", SPECIALS[0], "split_special_tokens", 0, "tokenizer_class", "Qwen2Tokenizer",
                     "unk_token");
}

static size_t parse_count(const char *opt, const char *v, size_t lo, size_t hi) {
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) die_usage("%s: expected an integer in [%zu, %zu], got '%s'", opt, lo, hi, v);
    return (size_t)x;
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    cleanup_install_signals();
    const char *out = NULL;
    uint64_t seed = 42;
    size_t records = 320, vocab = 512;
    dims d = {0, 64, 128, 2, 4, 2, DT_BF16};
    int force = 0;
    enum { O_RECORDS = 256, O_VOCAB, O_LAYERS, O_HIDDEN, O_INTER, O_HEADS, O_KV, O_DTYPE, O_UNTIED };
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},       {"seed", required_argument, 0, 's'},
        {"records", required_argument, 0, O_RECORDS}, {"vocab", required_argument, 0, O_VOCAB},
        {"layers", required_argument, 0, O_LAYERS}, {"hidden", required_argument, 0, O_HIDDEN},
        {"intermediate", required_argument, 0, O_INTER}, {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV},  {"dtype", required_argument, 0, O_DTYPE},
        {"untied", no_argument, 0, O_UNTIED},     {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "o:s:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 's': seed = parse_count("--seed", optarg, 0, UINT32_MAX); break;
        case O_RECORDS: records = parse_count("--records", optarg, 1, 1000000); break;
        case O_VOCAB: vocab = parse_count("--vocab", optarg, 259, 65536); break;
        case O_LAYERS: d.layers = parse_count("--layers", optarg, 1, 64); break;
        case O_HIDDEN: d.hidden = parse_count("--hidden", optarg, 8, 8192); break;
        case O_INTER: d.inter = parse_count("--intermediate", optarg, 8, 32768); break;
        case O_HEADS: d.heads = parse_count("--heads", optarg, 1, 256); break;
        case O_KV: d.kv_heads = parse_count("--kv-heads", optarg, 1, 256); break;
        case O_DTYPE:
            d.dt = dtype_from_user(optarg);
            if (d.dt != DT_BF16 && d.dt != DT_F32) die_usage("--dtype: expected bf16 or fp32, got '%s'", optarg);
            break;
        case O_UNTIED: d.untied = 1; break;
        case 'f': force = 1; break;
        case 'h': usage(); return 0;
        default: die_usage("try 'demo-init --help'");
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (!out) die_usage("--out DIR is required");
    char *out_clean = xstrdup(out);   // "dir/" names dir: its parent is made below, not dir itself
    for (size_t n = strlen(out_clean); n > 1 && out_clean[n - 1] == '/'; n--) out_clean[n - 1] = 0;
    out = out_clean;
    if (d.hidden % d.heads) die_usage("--hidden (%zu) must be a multiple of --heads (%zu)", d.hidden, d.heads);
    if (d.heads % d.kv_heads) die_usage("--heads (%zu) must be a multiple of --kv-heads (%zu)", d.heads, d.kv_heads);
    if ((d.hidden / d.heads) % 2) die_usage("the head size (--hidden / --heads) must be even (RoPE)");

    struct stat st;
    if (!force && stat(out, &st) == 0) die("%s already exists (remove it or add --force)", out);
    {   // the parent folder, so that the output can be built beside its place
        char *p = xstrdup(out), *slash = strrchr(p, '/');
        if (slash && slash != p) { *slash = 0; mkdir_p(p); }
        free(p);
    }

    // Data first: the tokenizer is trained on it.
    mt19937 g;
    mt_seed(&g, seed);
    json_t *data = json_array();
    bpe_trainer *bt = bpe_trainer_new();
    // The text of every record as the chat template lays it out, so that the
    // role names and the default system turn get merges too.
    static const char frame[] = "system\nYou are a helpful assistant.\nuser\nassistant\n";
    for (size_t i = 0; i < records; i++) {
        bpe_trainer_add(bt, frame, strlen(frame));
        char *ins, *in, *o;
        make_record(&g, &ins, &in, &o);
        json_array_append_new(data, json_pack("{s:s, s:s, s:s}", "instruction", ins, "input", in, "output", o));
        // tokenize joins instruction and input as the tutorial does (no separator)
        size_t n1 = strlen(ins), n2 = strlen(in);
        char *q = xmalloc(n1 + n2 + 1);
        memcpy(q, ins, n1); memcpy(q + n1, in, n2 + 1);
        bpe_trainer_add(bt, q, n1 + n2);
        bpe_trainer_add(bt, o, strlen(o));
        free(q); free(ins); free(in); free(o);
    }
    bpe_trainer_run(bt, vocab - 256 - N_OF(SPECIALS), 2);
    size_t n_model = bpe_trainer_n_tokens(bt);
    d.vocab = n_model + N_OF(SPECIALS);

    aout_dir od;
    aout_dir_open(&od, out);
    size_t mlen = strlen(od.tmp) + 8;
    char *mdir = xmalloc(mlen);
    snprintf(mdir, mlen, "%s/model", od.tmp);
    mkdir_p(mdir);

    char *tj = bpe_trainer_json(bt, SPECIALS, N_OF(SPECIALS));
    write_text(mdir, "tokenizer.json", tj);
    free(tj);
    write_json(mdir, "tokenizer_config.json", tokenizer_config(n_model), 1);
    // eos: <|im_end|>, as a chat model's config says; bos: <|endoftext|>
    size_t eos = n_model + 2, bos = n_model;
    write_json(mdir, "config.json", model_config(&d, eos, bos), 1);
    write_json(mdir, "generation_config.json",
               json_pack("{s:I, s:b, s:I, s:I, s:f, s:I, s:f}", "bos_token_id", (json_int_t)bos, "do_sample", 1,
                         "eos_token_id", (json_int_t)eos, "pad_token_id", (json_int_t)bos, "temperature", 0.7,
                         "top_k", (json_int_t)20, "top_p", 0.8),
               1);
    size_t wlen = mlen + 32;
    char *wpath = xmalloc(wlen);
    snprintf(wpath, wlen, "%s/model.safetensors", mdir);
    write_weights(wpath, &d, &g);
    write_json(od.tmp, "data.json", data, 0);
    aout_dir_commit(&od, force);
    fprintf(stderr, "demo-init: %s/model: Qwen2, %zu layers, hidden %zu, %zu/%zu heads, vocab %zu (%zu merges), %s\n",
            out, d.layers, d.hidden, d.heads, d.kv_heads, d.vocab, bpe_trainer_n_merges(bt), dtype_name(d.dt));
    fprintf(stderr, "demo-init: %s/data.json: %zu records (seed %llu)\n", out, records, (unsigned long long)seed);
    bpe_trainer_free(bt);
    free(wpath); free(mdir); free(out_clean);
    return 0;
}

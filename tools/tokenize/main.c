// tools/tokenize/main.c: dataset records -> ChatML token ids and labels (JSONL).
//
// Reads records (lib/records.c), turns each into a conversation
// (lib/conversation.c), renders and tokenises it (lib/chatml.c on
// lib/tokenizer.c), truncates to --max-len and writes one JSON line per
// input record, in input order.  Records are processed in batches: the main
// thread reads and parses a batch, worker threads (OpenMP) encode and format
// it, the main thread writes the lines in order.
#include "tokenize.h"
#include "atomic_out.h"
#include "chatml.h"
#include "check.h"
#include "conversation.h"
#include "records.h"
#include "tokenizer.h"

#include <getopt.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(void) {
    printf(
"Usage: tokenize --tokenizer PATH [OPTIONS] [FILE...]\n"
"       tokenize --tokenizer PATH --decode [--skip-special] [-o FILE] [FILE...]\n"
"\n"
"Turn dataset records into Qwen ChatML token ids and training labels, one JSON\n"
"line per record, in input order: {\"input_ids\":[...],\"labels\":[...]}.\n"
"Labels are -100 except on assistant replies and the <|im_end|> closing each\n"
"(before the causal shift, as transformers' process_func writes them).\n"
"\n"
"Input: FILEs or stdin (\"-\"); each a JSON array of records or JSON Lines, plain,\n"
"compressed (.gz, .zst, .xz, .bz2) or inside .tar, .tar.gz, .tar.zst or .zip archives\n"
"(members named *.json, *.jsonl, *.ndjson, in archive order).\n"
"\n"
"Options:\n"
"  -t, --tokenizer PATH     tokenizer.json or a model folder holding it (required);\n"
"                           byte-level BPE only (Qwen1.5/2/2.5/3), others are refused\n"
"  -f, --format FMT         auto (default; decided per record), alpaca, messages,\n"
"                           sharegpt or text:\n"
"                             alpaca   {instruction, input?, output, system?, history?}\n"
"                             messages {messages: [{role, content}, ...]}\n"
"                             sharegpt {conversations: [{from, value}, ...], system?}\n"
"                             text     {text}: plain encoding, no template, labels = ids\n"
"      --system TEXT        system turn for conversations without one (default: the\n"
"                           one the tokenizer's chat template inserts, if any; see\n"
"                           stderr). A record's own system message always wins.\n"
"      --no-system          no default system turn\n"
"      --input-sep STR      alpaca: put STR between instruction and a non-empty input\n"
"                           (default \"\": plain concatenation, as the tutorial)\n"
"      --train-on WHICH     all (default): every assistant reply is trained;\n"
"                           last: only the last one\n"
"      --max-len N          keep the first N tokens of each record (0 = no limit,\n"
"                           default). Records left with no trained token are still\n"
"                           written (pack drops them) and counted on stderr.\n"
"      --special-as-text    special tokens (<|im_start|>, <|endoftext|>, ...) inside\n"
"                           record text are encoded as plain text, for untrusted data\n"
"                           (HF's split_special_tokens=True for the content; the\n"
"                           template's own markers stay special). Default: recognised,\n"
"                           as Hugging Face does.\n"
"  -j, --threads N          worker threads (default: all CPUs); output order is kept\n"
"  -o, --output FILE        write here, atomically (default: stdout)\n"
"      --stats FILE         write run statistics as JSON (\"-\" = stderr)\n"
"      --decode             read JSONL with \"input_ids\" and write {\"text\": ...} lines\n"
"      --skip-special       --decode: leave out special tokens\n"
"  -q, --quiet              no summary on stderr\n"
"  -h, --help               this help\n"
"\n"
"Exit status: 0 ok, 1 bad input (one line naming the file and record), 2 usage.\n"
"Example:\n"
"  tokenize --tokenizer ../shared/qwen-tokenizer --system \"You are Huanhuan.\" \\\n"
"           --max-len 128 -o train.jsonl ../shared/data/huanhuan.json\n");
}

typedef struct {
    size_t records, tokens, targets, truncated, no_target, tokens_before_trunc;
    size_t by_format[FMT_COUNT];
} stats;

enum { BATCH_RECORDS = 1024, BATCH_BYTES = 8 << 20 };

typedef struct {
    json_t *json;
    conv cv;
    tok_ids ids, labels;
    char *line; size_t line_len, line_cap;
    size_t full_len, targets;
    char where[600];         // "data.jsonl: line 17", for messages
} slot;

typedef struct { slot *s; size_t n; } batch;

// The inputs, read one after the other.
typedef struct {
    char **inputs; size_t n_inputs, f;
    rec_reader *r;
    conv_format fmt;
    const char *input_sep;
    int done;
} reader;

// Fill b with up to BATCH_RECORDS records (or BATCH_BYTES of text); parse
// errors die here, naming the record.
static void batch_read(reader *rd, batch *b) {
    size_t bytes = 0;
    b->n = 0;
    while (!rd->done && b->n < BATCH_RECORDS && bytes < BATCH_BYTES) {
        if (!rd->r) rd->r = rec_open(rd->inputs[rd->f]);
        rec x;
        if (!rec_next(rd->r, &x)) {
            rec_close(rd->r);
            rd->r = NULL;
            if (++rd->f == rd->n_inputs) rd->done = 1;
            continue;
        }
        slot *s = &b->s[b->n++];
        rec_where(&x, s->where, sizeof s->where);
        s->json = x.json;
        conv_parse(&s->cv, x.json, rd->fmt, rd->input_sep, s->where);
        for (size_t i = 0; i < s->cv.n; i++) bytes += s->cv.m[i].len;
    }
}

// Render, tokenise, truncate and format one record.
static void slot_encode(slot *s, tok_ctx *cx, const chatml_opts *co, size_t max_len) {
    s->ids.n = s->labels.n = 0;
    int rc = chatml_encode(cx, &s->cv, co, &s->ids, &s->labels);
    if (rc == -2)
        die("%s: the tokenizer's Split regex gives up on this record's text (over the match limit: a pattern "
            "that backtracks catastrophically in tokenizer.json?)", s->where);
    if (rc) die("%s: invalid UTF-8", s->where);   // cannot happen: JSON text is valid UTF-8
    s->full_len = s->ids.n;
    size_t n = s->ids.n;
    if (max_len && n > max_len) n = max_len;
    s->ids.n = s->labels.n = n;
    size_t tg = 0;
    for (size_t k = 0; k < n; k++) tg += s->labels.v[k] != -100;
    s->targets = tg;
    s->line_len = 0;
    out_record(&s->line, &s->line_len, &s->line_cap, s->ids.v, s->labels.v, n);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) die_usage("%s needs an integer from %ld to %ld, not \"%s\"", opt, lo, hi, s);
    return v;
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    const char *tok_path = NULL, *out_path = NULL, *stats_path = NULL, *system_arg = NULL;
    const char *input_sep = "";
    int fmt = FMT_AUTO, no_system = 0, decode = 0, skip_special = 0, quiet = 0;
    long max_len = 0, threads = 0;
    chatml_opts co = {0};
    enum { O_SYSTEM = 256, O_NO_SYSTEM, O_SEP, O_TRAIN_ON, O_MAX_LEN, O_SPECIAL_TEXT, O_STATS, O_DECODE, O_SKIP };
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"format", required_argument, 0, 'f'},
        {"system", required_argument, 0, O_SYSTEM}, {"no-system", no_argument, 0, O_NO_SYSTEM},
        {"input-sep", required_argument, 0, O_SEP}, {"train-on", required_argument, 0, O_TRAIN_ON},
        {"max-len", required_argument, 0, O_MAX_LEN}, {"special-as-text", no_argument, 0, O_SPECIAL_TEXT},
        {"threads", required_argument, 0, 'j'}, {"output", required_argument, 0, 'o'},
        {"stats", required_argument, 0, O_STATS}, {"decode", no_argument, 0, O_DECODE},
        {"skip-special", no_argument, 0, O_SKIP}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "t:f:j:o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 't': tok_path = optarg; break;
        case 'f':
            fmt = conv_format_parse(optarg);
            if (fmt < 0) die_usage("unknown --format \"%s\" (auto, alpaca, messages, sharegpt or text)", optarg);
            break;
        case O_SYSTEM: system_arg = optarg; break;
        case O_NO_SYSTEM: no_system = 1; break;
        case O_SEP: input_sep = optarg; break;
        case O_TRAIN_ON:
            if (!strcmp(optarg, "all")) co.train_last_only = 0;
            else if (!strcmp(optarg, "last")) co.train_last_only = 1;
            else die_usage("--train-on takes all or last, not \"%s\"", optarg);
            break;
        case O_MAX_LEN: max_len = parse_long("--max-len", optarg, 0, 1L << 30); break;
        case O_SPECIAL_TEXT: co.tok_flags |= TOK_SPECIAL_AS_TEXT; break;
        case 'j': threads = parse_long("--threads", optarg, 1, 1024); break;
        case 'o': out_path = optarg; break;
        case O_STATS: stats_path = optarg; break;
        case O_DECODE: decode = 1; break;
        case O_SKIP: skip_special = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(); return 0;
        default: die_usage("unknown option");
        }
    }
    if (!tok_path) die_usage("--tokenizer PATH is required");
    if (system_arg && no_system) die_usage("--system and --no-system exclude each other");
    if (skip_special && !decode) die_usage("--skip-special goes with --decode");
    char **inputs = argv + optind;
    size_t n_inputs = (size_t)(argc - optind);

    double t0 = now_s();
    tok *t = tok_load(tok_path);
    double t_load = now_s() - t0;
    if (decode) {
        decode_run(t, inputs, n_inputs, out_path, skip_special);
        tok_free(t);
        return 0;
    }

    // The default system turn, and where it came from (always said on stderr:
    // it changes every record's ids).
    char why[600];
    char *sys_owned = NULL;
    if (no_system) snprintf(why, sizeof why, "none (--no-system)");
    else if (system_arg) { co.system = system_arg; snprintf(why, sizeof why, "--system"); }
    else { sys_owned = chatml_default_system(tok_path, why, sizeof why); co.system = sys_owned; }
    if (co.system) co.system_len = strlen(co.system);
    if (!quiet) {
        if (co.system) {
            json_t *js = json_stringn(co.system, co.system_len);
            char *q = json_dumps(js, JSON_ENCODE_ANY);
            warn("default system turn: %s, from %s", q, why);
            free(q); json_decref(js);
        } else {
            warn("default system turn: %s", why);
        }
    }

    int n_threads = threads ? (int)threads : omp_get_num_procs();
    tok_ctx **ctx = xcalloc((size_t)n_threads, sizeof *ctx);
    for (int i = 0; i < n_threads; i++) ctx[i] = tok_ctx_new(t);

    aout out;
    aout_open(&out, out_path);
    char *stdin_only[] = {"-"};
    if (!n_inputs) { inputs = stdin_only; n_inputs = 1; }
    // Two batches: while the workers encode one, one thread reads and parses
    // the next (the first thread to reach the "single" below), then joins in.
    batch b[2] = {{0}};
    for (int k = 0; k < 2; k++) b[k].s = xcalloc(BATCH_RECORDS, sizeof *b[k].s);
    reader rd = {inputs, n_inputs, 0, NULL, (conv_format)fmt, input_sep, 0};
    stats st = {0};
    int tty = isatty(2) && !quiet;
    double t_start = now_s(), t_progress = t_start;
    batch_read(&rd, &b[0]);
    int cur = 0;
    while (b[cur].n) {
        batch *a = &b[cur], *next = &b[1 - cur];
        #pragma omp parallel num_threads(n_threads)
        {
            #pragma omp single nowait
            batch_read(&rd, next);
            #pragma omp for schedule(dynamic, 4) nowait
            for (size_t i = 0; i < a->n; i++)
                slot_encode(&a->s[i], ctx[omp_get_thread_num()], &co, (size_t)max_len);
        }
        for (size_t i = 0; i < a->n; i++) {
            slot *s = &a->s[i];
            aout_write(&out, s->line, s->line_len);
            st.records++;
            st.tokens += s->ids.n;
            st.tokens_before_trunc += s->full_len;
            st.targets += s->targets;
            st.truncated += s->full_len > s->ids.n;
            st.no_target += s->targets == 0;
            st.by_format[s->cv.format]++;
            json_decref(s->json);
            s->json = NULL;
        }
        a->n = 0;
        if (tty && now_s() - t_progress > 0.5) {
            t_progress = now_s();
            fprintf(stderr, "\rtokenize: %zu records, %zu tokens", st.records, st.tokens);
        }
        cur = 1 - cur;
    }
    aout_commit(&out);
    double secs = now_s() - t_start;
    if (tty) fputc('\n', stderr);

    size_t hits = 0, misses = 0;
    for (int i = 0; i < n_threads; i++) {
        size_t h, m;
        tok_ctx_stats(ctx[i], &h, &m);
        hits += h; misses += m;
    }
    json_t *js = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I},s:f,s:f,s:i,s:f,s:s?,s:I}",
        "records", (json_int_t)st.records, "tokens", (json_int_t)st.tokens,
        "trained_tokens", (json_int_t)st.targets, "tokens_before_truncation", (json_int_t)st.tokens_before_trunc,
        "truncated_records", (json_int_t)st.truncated, "records_without_targets", (json_int_t)st.no_target,
        "formats", "alpaca", (json_int_t)st.by_format[FMT_ALPACA], "messages", (json_int_t)st.by_format[FMT_MESSAGES],
        "sharegpt", (json_int_t)st.by_format[FMT_SHAREGPT], "text", (json_int_t)st.by_format[FMT_TEXT],
        "seconds", secs, "load_seconds", t_load, "threads", n_threads,
        "cache_hit_rate", hits + misses ? (double)hits / (double)(hits + misses) : 0.0,
        "system", co.system, "max_len", (json_int_t)max_len);
    if (stats_path) {
        char *txt = json_dumps(js, JSON_INDENT(2));
        if (!strcmp(stats_path, "-")) fprintf(stderr, "%s\n", txt);
        else {
            aout so;
            aout_open(&so, stats_path);
            aout_write(&so, txt, strlen(txt));
            aout_write(&so, "\n", 1);
            aout_commit(&so);
        }
        free(txt);
    }
    if (!quiet) {
        warn("%zu records, %zu tokens, %zu trained; %zu truncated to --max-len, %zu with no trained token left; "
             "%.2f s (%.0f tokens/s, %d threads; tokenizer load %.2f s)",
             st.records, st.tokens, st.targets, st.truncated, st.no_target, secs,
             secs > 0 ? (double)st.tokens_before_trunc / secs : 0.0, n_threads, t_load);
    }
    json_decref(js);
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < BATCH_RECORDS; i++) {
            slot *x = &b[k].s[i];
            conv_free(&x->cv);
            tok_ids_free(&x->ids); tok_ids_free(&x->labels);
            free(x->line);
        }
        free(b[k].s);
    }
    for (int i = 0; i < n_threads; i++) tok_ctx_free(ctx[i]);
    free(ctx); free(sys_owned);
    tok_free(t);
    return 0;
}

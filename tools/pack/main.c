// tools/pack/main.c: options of `pack`; the work is in build.c and report.c.
#include "pack_tool.h"
#include "check.h"
#include "pack_format.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void) {
    printf(
"Usage: pack [OPTIONS] [-o FILE] [FILE...]     token JSONL (files or stdin) -> .pack\n"
"       pack --info FILE                        JSON statistics (for jq)\n"
"       pack --dump FILE                        the samples back as token JSONL, in stored order\n"
"       pack --batches FILE                     one JSON line per micro-batch\n"
"       pack --schedule FILE [--world R] [--accum A]   one JSON line per optimizer step\n"
"\n"
"Reads tokenize's JSONL ({\"input_ids\":[...],\"labels\":[...]} per line, other keys\n"
"ignored) and writes one binary .pack file: the tokens, the labels, and a batch index\n"
"of every epoch that train reads in place (format: docs/FORMATS.md).  Identical input\n"
"and options give a byte-identical file.\n"
"\n"
"Batching:\n"
"  --mode pad|packed      pad (default): one sample per row, rows padded to the longest\n"
"                         in the micro-batch; packed: samples bin-packed into rows of at\n"
"                         most --row-tokens tokens, every boundary recorded (no padding,\n"
"                         positions restart and attention is blocked at each boundary)\n"
"  --batch-size B         pad: B samples per micro-batch (default 8, the Trainer's\n"
"                         per_device_train_batch_size); packed: B rows per micro-batch\n"
"  --batch-tokens T       token budget per micro-batch instead: pad: consecutive samples\n"
"                         while rows x padded length <= T; packed: floor(T / row tokens)\n"
"                         rows (and the row capacity when --row-tokens is not given)\n"
"  --row-tokens T         packed: row capacity (default: --batch-tokens, else 4096)\n"
"  --pad-multiple M       pad: round row lengths up to a multiple of M (default 8,\n"
"                         DataCollatorForSeq2Seq's pad_to_multiple_of)\n"
"  --packing best-fit|next-fit\n"
"                         packed: best fit decreasing (default; rows then shuffled when\n"
"                         the order is random) or next fit in sample order\n"
"  --truncate             cut samples longer than a row (packed) or than the budget\n"
"                         (pad with --batch-tokens) instead of refusing them\n"
"\n"
"Order and epochs:\n"
"  --order group_by_length|random|sequential\n"
"                         group_by_length (pad default): the Trainer's LengthGroupedSampler,\n"
"                         megabatches of 50 x group x accum sorted by length, longest\n"
"                         batch first, from the global generator seeded once;\n"
"                         random (packed default): accelerate's sampler, randperm from\n"
"                         seed + epoch; sequential: input order\n"
"  --seed S               Trainer seed (default 42)\n"
"  --epochs E             epochs of batches to store (default 3, the Trainer's default)\n"
"  --accum A              gradient accumulation steps (default 1): group_by_length groups\n"
"                         per optimizer window of B x A samples\n"
"  --group-size G         group_by_length: per-device batch used for grouping (default B;\n"
"                         with --batch-tokens, T / mean padded length)\n"
"  --keep-empty           keep records with no target token (dropped and counted by\n"
"                         default); for parity with a Trainer fed every record\n"
"\n"
"Output and readers:\n"
"  -o, --output FILE      the .pack file, written atomically (\"-\" = stdout; default\n"
"                         stdout unless it is a terminal)\n"
"  --world R              --schedule: data-parallel ranks (default 1)\n"
"  -v, --verbose          a summary line on stderr\n"
"  -h, --help             this text\n"
"\n"
"Bad input (not JSON, a missing key, labels of another length, a negative id, no\n"
"record, a sample too long without --truncate) stops with one line naming the file\n"
"and line, exit status 1, and no output file.  Exit 2: bad options.\n"
"\n"
"Example:\n"
"  tokenize data.json | pack --batch-size 4 --accum 4 --epochs 3 -o data.pack\n"
"  pack --info data.pack | jq .padding_fraction\n");
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi) {
    char *end;
    if (!*s || *s == '-') die_usage("%s: expected a number, got '%s'", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v < lo || v > hi) die_usage("%s: expected an integer in [%llu, %llu], got '%s'", opt,
                                            (unsigned long long)lo, (unsigned long long)hi, s);
    return v;
}

static uint32_t parse_choice(const char *opt, const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return (uint32_t)i;
    die_usage("%s: unknown value '%s'", opt, s);
}

enum { O_MODE = 256, O_BATCH_SIZE, O_BATCH_TOKENS, O_ROW_TOKENS, O_PAD_MULTIPLE, O_PACKING, O_TRUNCATE,
       O_ORDER, O_SEED, O_EPOCHS, O_ACCUM, O_GROUP_SIZE, O_KEEP_EMPTY, O_INFO, O_DUMP, O_BATCHES,
       O_SCHEDULE, O_WORLD };

int main(int argc, char **argv) {
    check_init(argv[0]);
    static const struct option longopts[] = {
        {"mode", required_argument, 0, O_MODE},
        {"batch-size", required_argument, 0, O_BATCH_SIZE},
        {"batch-tokens", required_argument, 0, O_BATCH_TOKENS},
        {"row-tokens", required_argument, 0, O_ROW_TOKENS},
        {"pad-multiple", required_argument, 0, O_PAD_MULTIPLE},
        {"packing", required_argument, 0, O_PACKING},
        {"truncate", no_argument, 0, O_TRUNCATE},
        {"order", required_argument, 0, O_ORDER},
        {"seed", required_argument, 0, O_SEED},
        {"epochs", required_argument, 0, O_EPOCHS},
        {"accum", required_argument, 0, O_ACCUM},
        {"group-size", required_argument, 0, O_GROUP_SIZE},
        {"keep-empty", no_argument, 0, O_KEEP_EMPTY},
        {"output", required_argument, 0, 'o'},
        {"info", required_argument, 0, O_INFO},
        {"dump", required_argument, 0, O_DUMP},
        {"batches", required_argument, 0, O_BATCHES},
        {"schedule", required_argument, 0, O_SCHEDULE},
        {"world", required_argument, 0, O_WORLD},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    static const char *const modes[] = {"pad", "packed"};
    static const char *const orders[] = {"sequential", "random", "group_by_length"};
    static const char *const packings[] = {"none", "best-fit", "next-fit"};
    build_opts o = {.pad_multiple = 8, .accum = 1, .epochs = 3, .seed = 42};
    int have_mode = 0, have_order = 0, have_packing = 0, have_pad_multiple = 0, have_accum = 0;
    const char *reader = NULL, *reader_path = NULL;
    uint64_t world = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", longopts, NULL)) != -1) {
        switch (c) {
        case O_MODE: o.mode = parse_choice("--mode", optarg, modes, 2); have_mode = 1; break;
        case O_BATCH_SIZE: o.batch_size = (uint32_t)parse_u64("--batch-size", optarg, 1, UINT32_MAX); break;
        case O_BATCH_TOKENS: o.batch_tokens = parse_u64("--batch-tokens", optarg, 1, UINT32_MAX); break;
        case O_ROW_TOKENS: o.row_tokens = (uint32_t)parse_u64("--row-tokens", optarg, 1, 1u << 30); break;
        case O_PAD_MULTIPLE:
            o.pad_multiple = (uint32_t)parse_u64("--pad-multiple", optarg, 1, 1u << 20);
            have_pad_multiple = 1;
            break;
        case O_PACKING:
            o.packing = parse_choice("--packing", optarg, packings, 3);
            if (o.packing == PACK_PACKING_NONE) die_usage("--packing: unknown value 'none'");
            have_packing = 1;
            break;
        case O_TRUNCATE: o.truncate = 1; break;
        case O_ORDER: o.order = parse_choice("--order", optarg, orders, 3); have_order = 1; break;
        case O_SEED: o.seed = parse_u64("--seed", optarg, 0, UINT64_MAX); break;
        case O_EPOCHS: o.epochs = (uint32_t)parse_u64("--epochs", optarg, 1, 100000); break;
        case O_ACCUM: o.accum = (uint32_t)parse_u64("--accum", optarg, 1, 1u << 20); have_accum = 1; break;
        case O_GROUP_SIZE: o.group_size = (uint32_t)parse_u64("--group-size", optarg, 1, UINT32_MAX); break;
        case O_KEEP_EMPTY: o.keep_empty = 1; break;
        case 'o': o.out = optarg; break;
        case O_INFO: case O_DUMP: case O_BATCHES: case O_SCHEDULE:
            if (reader) die_usage("choose one of --info, --dump, --batches, --schedule");
            reader = c == O_INFO ? "info" : c == O_DUMP ? "dump" : c == O_BATCHES ? "batches" : "schedule";
            reader_path = optarg;
            break;
        case O_WORLD: world = parse_u64("--world", optarg, 1, 1u << 16); break;
        case 'v': o.verbose = 1; break;
        case 'h': usage(); return 0;
        default: die_usage("unknown option");
        }
    }
    if (reader) {
        if (optind < argc) die_usage("--%s takes one file; unexpected '%s'", reader, argv[optind]);
        if (!strcmp(reader, "info")) pack_report_info(reader_path);
        else if (!strcmp(reader, "dump")) pack_report_dump(reader_path);
        else if (!strcmp(reader, "batches")) pack_report_batches(reader_path);
        else pack_report_schedule(reader_path, have_accum ? o.accum : 0, (size_t)world);
        return 0;
    }
    (void)have_mode;
    if (o.batch_size && o.batch_tokens && o.mode == PACK_MODE_PAD)
        die_usage("pad mode takes --batch-size or --batch-tokens, not both");
    if (o.mode == PACK_MODE_PAD) {
        if (!o.batch_size && !o.batch_tokens) o.batch_size = 8;
        if (o.row_tokens) die_usage("--row-tokens is for --mode packed");
        if (have_packing) die_usage("--packing is for --mode packed");
        if (!have_order) o.order = PACK_ORDER_GROUP_BY_LENGTH;
        o.packing = PACK_PACKING_NONE;
        if (o.batch_tokens && o.batch_tokens < o.pad_multiple)
            die_usage("--batch-tokens %llu is smaller than --pad-multiple %u",
                      (unsigned long long)o.batch_tokens, o.pad_multiple);
    } else {
        if (have_pad_multiple && o.pad_multiple != 1) die_usage("--pad-multiple is for --mode pad (packed rows are not padded)");
        o.pad_multiple = 1;
        if (!have_order) o.order = PACK_ORDER_RANDOM;
        if (o.order == PACK_ORDER_GROUP_BY_LENGTH)
            die_usage("--order group_by_length is for --mode pad (packed rows are filled by length already)");
        if (!have_packing) o.packing = PACK_PACKING_BEST_FIT;
        if (o.group_size) die_usage("--group-size is for --order group_by_length");
        if (!o.row_tokens) o.row_tokens = o.batch_tokens && !o.batch_size ? (uint32_t)o.batch_tokens : 4096;
        if (o.batch_size && o.batch_tokens) die_usage("packed mode takes --batch-size (rows) or --batch-tokens, not both");
        if (o.batch_tokens && o.batch_tokens < o.row_tokens)
            die_usage("--batch-tokens %llu is smaller than one row of %u tokens", (unsigned long long)o.batch_tokens,
                      o.row_tokens);
        if (!o.batch_size && !o.batch_tokens) o.batch_size = 1;
    }
    if (o.group_size && o.order != PACK_ORDER_GROUP_BY_LENGTH) die_usage("--group-size is for --order group_by_length");
    if (!o.out) {
        if (isatty(STDOUT_FILENO)) die_usage("refusing to write a binary pack to a terminal; give -o FILE");
        o.out = "-";
    }
    o.inputs = argv + optind;
    o.n_inputs = (size_t)(argc - optind);
    pack_build(&o);
    return 0;
}

// fuzz/fuzz_records_jsonl.c: dataset inputs as JSON Lines, each record read as every format in turn.
#define RECORD_FORMATS FMT_AUTO, FMT_ALPACA, FMT_MESSAGES, FMT_SHAREGPT, FMT_TEXT
#include "fuzz_records.inc"

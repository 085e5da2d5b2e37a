// fuzz/fuzz_records_json.c: dataset inputs as JSON arrays of records.
#define RECORD_FORMATS FMT_AUTO
#include "fuzz_records.inc"

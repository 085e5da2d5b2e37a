// fuzz/fuzz_records_archive.c: dataset inputs as archives and compressed files (tar, zip, gzip, zstd, ...).
#define RECORD_FORMATS FMT_AUTO
#include "fuzz_records.inc"

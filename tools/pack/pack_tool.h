// tools/pack/pack_tool.h: what main.c hands to the build and report parts.
#ifndef LORAPIPE_PACK_TOOL_H
#define LORAPIPE_PACK_TOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t mode;           // enum pack_mode
    uint32_t order;          // enum pack_order
    uint32_t packing;        // enum pack_packing
    uint32_t batch_size;     // samples (pad) or rows (packed) per micro-batch; 0 = by budget
    uint64_t batch_tokens;   // micro-batch token budget; 0 = by count
    uint32_t row_tokens;     // packed: row capacity
    uint32_t pad_multiple;   // pad: row length multiple
    uint32_t group_size;     // group_by_length: per-device batch for grouping; 0 = derive
    uint32_t accum;
    uint32_t epochs;
    uint64_t seed;
    int keep_empty, truncate, verbose;
    const char *out;         // path, or "-" for stdout
    char **inputs;           // files; none = stdin
    size_t n_inputs;
} build_opts;

// Read the token JSONL and write the .pack file (dies on any bad input, leaving no output).
void pack_build(const build_opts *o);

// Readers of a finished pack (each validates it fully first).
void pack_report_info(const char *path);
void pack_report_dump(const char *path);
void pack_report_batches(const char *path);
void pack_report_schedule(const char *path, size_t accum, size_t world);

#endif

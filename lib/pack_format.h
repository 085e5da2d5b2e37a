// lib/pack_format.h: the on-disk layout of a .pack file (pack writes it, train
// mmaps it).  Documented for people in docs/FORMATS.md; this header is the
// single source of truth for both sides.
//
// All integers are little-endian and naturally aligned, so the sections are used
// in place (zero copy) on little-endian hosts; the build refuses others.
//
//   [0, 4096)        pack_header, zero padded (tokens start page aligned)
//   sections         each at a 64-byte aligned offset given in header.sec[],
//                    in the order of enum pack_section, zero padding between
//   file_bytes       = the file's length, checked by every reader
#ifndef LORAPIPE_PACK_FORMAT_H
#define LORAPIPE_PACK_FORMAT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .pack format is used in place: little-endian hosts only");

// 8 bytes; the CR LF and the 0x1A catch text-mode and truncating transfers
// (the PNG signature trick) as well as a plain wrong file.
#define PACK_MAGIC "LPACK\r\n\x1a"
#define PACK_MAGIC_LEN 8
// Major: readers refuse any other.  Minor: additions a reader may ignore
// (new header fields in the reserved area, new trailing sections).
#define PACK_VERSION_MAJOR 1u
#define PACK_VERSION_MINOR 0u
#define PACK_HEADER_BYTES 4096u
#define PACK_SECTION_ALIGN 64u

enum pack_mode { PACK_MODE_PAD = 0, PACK_MODE_PACKED = 1 };
enum pack_order { PACK_ORDER_SEQUENTIAL = 0, PACK_ORDER_RANDOM = 1, PACK_ORDER_GROUP_BY_LENGTH = 2 };
enum pack_packing { PACK_PACKING_NONE = 0, PACK_PACKING_BEST_FIT = 1, PACK_PACKING_NEXT_FIT = 2 };

// Header flags.
#define PACK_FLAG_KEEP_EMPTY 1u   // records without a target token were kept
#define PACK_FLAG_TRUNCATE 2u     // over-long samples were cut to fit

enum pack_section {
    PACK_SEC_TOKENS,    // uint32 [n_tokens]: every sample's input_ids, back to back
    PACK_SEC_SAMPLES,   // pack_sample [n_samples]
    PACK_SEC_SPANS,     // pack_span [n_spans]: label runs (see pack_sample)
    PACK_SEC_LABELS,    // int32 [n_label_words]: labels of samples stored explicitly
    PACK_SEC_EPOCHS,    // uint64 [n_epochs + 1]: first micro-batch of each epoch, then n_batches
    PACK_SEC_BATCHES,   // pack_batch [n_batches]
    PACK_SEC_ROWS,      // uint64 [n_rows + 1]: first segment of each row, then n_segments (CSR)
    PACK_SEC_SEGMENTS,  // uint32 [n_segments]: sample index of each segment, rows back to back
    PACK_N_SECTIONS
};

typedef struct {
    uint64_t offset;   // from the start of the file, multiple of PACK_SECTION_ALIGN
    uint64_t bytes;    // exactly count * element size
} pack_section_ref;

typedef struct {
    char magic[8];
    uint32_t version_major, version_minor;
    uint32_t header_bytes;      // PACK_HEADER_BYTES
    uint32_t mode;              // enum pack_mode
    uint32_t order;             // enum pack_order
    uint32_t packing;           // enum pack_packing (NONE in pad mode)
    uint64_t file_bytes;        // length of the whole file
    uint64_t n_records;         // records read from the input
    uint64_t n_samples;         // records kept
    uint64_t n_dropped;         // records dropped for having no target token
    uint64_t n_truncated;       // samples cut to fit (--truncate)
    uint64_t n_tokens;          // sum of sample lengths
    uint64_t n_targets;         // sum over samples of count(labels[1:] != -100)
    uint64_t n_spans;
    uint64_t n_label_words;
    uint64_t n_batches;         // micro-batches, all epochs
    uint64_t n_rows;
    uint64_t n_segments;        // = n_samples * n_epochs
    uint64_t seed;
    uint64_t batch_tokens;      // micro-batch token budget; 0 when batch_size is used
    uint32_t batch_size;        // samples (pad) or rows (packed) per micro-batch; 0 when by budget
    uint32_t row_tokens;        // packed: row capacity; pad: 0
    uint32_t pad_multiple;      // pad: row length rounded up to this; packed: 1
    uint32_t accum;             // gradient accumulation used for grouping (group_by_length)
    uint32_t group_size;        // group_by_length: per-device batch used for grouping (bs_eff = group_size * accum)
    uint32_t n_epochs;
    uint32_t max_token_id;      // largest id in input_ids and labels
    uint32_t max_sample_len;
    uint32_t flags;             // PACK_FLAG_*
    uint32_t reserved0;
    pack_section_ref sec[PACK_N_SECTIONS];
} pack_header;
static_assert(sizeof(pack_header) == 312, "pack_header layout");

// Labels of a sample are stored in one of two forms (flag PACK_SAMPLE_EXPLICIT):
//  - spans (usual): runs [start, end) where labels[i] == input_ids[i]; -100
//    everywhere else.  SFT data is "prompt masked, reply trained", i.e. one or a
//    few runs: 8 bytes per run instead of 4 bytes per token.
//  - explicit: len int32 words in PACK_SEC_LABELS, for samples whose labels are
//    neither -100 nor their own input id somewhere.
#define PACK_SAMPLE_EXPLICIT 1u
#define PACK_SAMPLE_TRUNCATED 2u
typedef struct {
    uint64_t tok_first;     // index of the first token in PACK_SEC_TOKENS (samples back to back)
    uint64_t label_first;   // first span (spans form) or first label word (explicit form)
    uint64_t record;        // 0-based record number in the input (all input files in turn)
    uint32_t len;           // tokens, >= 1
    uint32_t n_targets;     // count(labels[1:] != -100): position 0 is never a target
    uint32_t n_spans;       // spans form: number of runs; explicit form: 0
    uint32_t flags;         // PACK_SAMPLE_*
} pack_sample;
static_assert(sizeof(pack_sample) == 40, "pack_sample layout");

typedef struct {
    uint32_t start, end;    // 0 <= start < end <= len, runs sorted and disjoint
} pack_span;

// A pad-mode row's length: the micro-batch's longest sample rounded up to the
// pad multiple (DataCollatorForSeq2Seq's pad_to_multiple_of).
static inline uint32_t pack_padded_len(uint64_t longest, uint32_t multiple) {
    return (uint32_t)((longest + multiple - 1) / multiple * multiple);
}

typedef struct {
    uint64_t row_first;     // first row (index into the rows CSR)
    uint32_t n_rows;        // >= 1
    uint32_t row_len;       // pad: padded length of every row; packed: row capacity
    uint32_t epoch;
    uint32_t n_tokens;      // real tokens (sum of its samples' lengths)
    uint32_t n_targets;     // sum of its samples' n_targets
    uint32_t reserved;
} pack_batch;
static_assert(sizeof(pack_batch) == 32, "pack_batch layout");

#endif

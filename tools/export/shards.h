// tools/export/shards.h: splitting a weights stream into Hugging Face shards.
#ifndef LORAPIPE_EXPORT_SHARDS_H
#define LORAPIPE_EXPORT_SHARDS_H
#include <stdint.h>
#include "safetensors.h"

typedef struct {
    size_t n;                 // shards
    st_writer *w;             // one per shard, planned (offsets, header)
    char **file;              // "model.safetensors" or "model-0000k-of-0000n.safetensors"
    size_t *shard_of;         // per input tensor: its shard
    size_t *slot_of;          // per input tensor: its index in that shard's writer
    uint64_t total_size;      // sum of tensor bytes (the index's total_size)
    uint64_t total_params;    // sum of element counts (total_parameters)
} shard_plan;

// The split transformers 5.17's save_pretrained makes: names in natural
// dotted order (its dot_natural_key), then huggingface_hub's
// split_state_dict_into_shards_factory: a tensor larger than max_bytes
// becomes a shard of its own at once; otherwise a tensor that would
// overflow the open shard closes it.
void shard_plan_build(shard_plan *p, const st_file *in, uint64_t max_bytes);
void shard_plan_free(shard_plan *p);
// model.safetensors.index.json text (indent 2, sorted keys, final newline).
char *shard_plan_index_json(const shard_plan *p);
// Bytes of every shard file together (headers included).
uint64_t shard_plan_bytes(const shard_plan *p);

#endif

// lib/pack_order.h: the sample orders and bin packings that pack uses to build
// a .pack file's batch index, exactly as the Hugging Face Trainer orders samples.
// Spec: qwen_lora_spec.md §5.2 (orders), §9 (randperm); checked against the
// real Trainer by tests/golden/pack_order.py.
#ifndef LORAPIPE_PACK_ORDER_H
#define LORAPIPE_PACK_ORDER_H

#include "mt19937.h"

#include <stddef.h>
#include <stdint.h>

// out = 0, 1, ..., n-1 (SequentialSampler).
void pack_order_sequential(uint32_t *out, size_t n);
// Epoch e of accelerate's SeedableRandomSampler: seeds g with seed + e and
// draws randperm(n) from it (g can then go on, e.g. to shuffle packed rows).
void pack_order_random(mt19937 *g, uint64_t seed, size_t epoch, uint32_t *out, size_t n);
// One epoch of LengthGroupedSampler from the Trainer's global generator g
// (seeded once with the seed, then carried from epoch to epoch): 2 outputs for
// the DataLoader's base seed, randperm(n), then megabatches of
// mult * bs_eff (mult = min(n / (4 bs_eff), 50), at least 1), each sorted by
// length descending with a stable sort, and the first megabatch holding the
// global maximum gives its first element to position 0.  bs_eff = per-device
// batch x gradient accumulation.  lengths: (n); out: (n).
void pack_order_group_by_length(mt19937 *g, const uint32_t *lengths, size_t n, size_t bs_eff, uint32_t *out);

// Bin packing into rows of capacity cap tokens (every length <= cap, >= 1).
// Input: the samples in order (n).  Output in CSR form: row r holds
// samples[row_first[r] .. row_first[r+1]); row_first has room for n + 1 entries.
// Returns the number of rows.  Both are deterministic functions of their input.
//
// Best fit decreasing: samples taken longest first (ties in input order), each
// into the open row with the least room that still fits it, else a new row;
// within a row, samples in placement order.  Rows in order of creation.
size_t pack_bins_best_fit(const uint32_t *order, size_t n, const uint32_t *lengths, uint32_t cap,
                          uint64_t *row_first, uint32_t *samples);
// Next fit: samples in input order, a new row whenever the next one does not fit.
size_t pack_bins_next_fit(const uint32_t *order, size_t n, const uint32_t *lengths, uint32_t cap,
                          uint64_t *row_first, uint32_t *samples);

#endif

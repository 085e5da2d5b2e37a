// lib/mt19937.h: PyTorch's CPU random generator (32-bit Mersenne Twister) and the
// few draws lorapipe must reproduce bit for bit: randperm (sample order) and
// uniform_ on fp32 (LoRA A initialisation).  Spec: qwen_lora_spec.md §9.
//
// Seeding follows torch.manual_seed(s): state[0] = s mod 2^32, then the 1812433253
// recurrence; the first draw regenerates the whole state.  The generator is a
// plain value: copy it to fork a stream.
#ifndef LORAPIPE_MT19937_H
#define LORAPIPE_MT19937_H

#include <stddef.h>
#include <stdint.h>

#define MT_N 624

typedef struct {
    uint32_t state[MT_N];
    size_t next;   // index of the next state word to temper; MT_N = regenerate first
} mt19937;

void mt_seed(mt19937 *g, uint64_t seed);
// One tempered 32-bit output (torch: random()).
uint32_t mt_next_u32(mt19937 *g);
// (high << 32) | low, high drawn first (torch: random64(); also what one int64
// random_() draw consumes, e.g. a DataLoader's base seed).
uint64_t mt_next_u64(mt19937 *g);
// Discard k 32-bit outputs.
void mt_skip(mt19937 *g, size_t k);

// torch.randperm(n, generator=g) on the CPU, into out[0..n-1] (n up to 2^32-1):
// below 2^32/20 elements, Fisher-Yates from the front with random() % (n - i)
// (n - 1 draws); from there on, the inside-out variant with random64() % (i + 1)
// (n draws of 64 bits), as ATen does.
void mt_randperm(mt19937 *g, uint32_t *out, size_t n);

// Tensor.uniform_(a, b) on fp32, element by element: u = (random() & 0xFFFFFF) * 2^-24,
// value = fl32(u * fl32(b - a) + a), one rounding (fused), a and b first rounded to fp32.
float mt_uniform_f32(mt19937 *g, float a, float b);
void mt_fill_uniform_f32(mt19937 *g, float *out, size_t n, float a, float b);

#endif

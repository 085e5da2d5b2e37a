// tests/unit/test_mt19937.c: MT19937, randperm and uniform_ against values
// printed by torch 2.11 / numpy's legacy RandomState (same generator).
#include "mt19937.h"
#include "tap.h"
#include <stdlib.h>
#include <string.h>

static int perm_is(uint64_t seed, size_t n, const uint32_t *want) {
    mt19937 g;
    mt_seed(&g, seed);
    uint32_t *got = malloc(n * sizeof *got);
    mt_randperm(&g, got, n);
    int ok = !memcmp(got, want, n * sizeof *got);
    free(got);
    return ok;
}

int main(void) {
    mt19937 g;
    mt_seed(&g, 5489);
    T_OK(mt_next_u32(&g) == 3499211612u, "reference MT19937 first output (seed 5489)");
    mt_seed(&g, 42);
    static const uint32_t s42[5] = {1608637542u, 3421126067u, 4083286876u, 787846414u, 3143890026u};
    int ok = 1;
    for (int i = 0; i < 5; i++) ok &= mt_next_u32(&g) == s42[i];
    T_OK(ok, "seed 42: first five outputs");
    // Across the state regeneration at 624 outputs.
    mt_seed(&g, 7);
    mt_skip(&g, 623);
    T_OK(mt_next_u32(&g) == 3222554838u, "output 623");
    T_OK(mt_next_u32(&g) == 3732577367u, "output 624 (after regeneration)");
    mt_skip(&g, 4);
    T_OK(mt_next_u32(&g) == 3827667979u, "output 629");
    mt_seed(&g, 42);
    T_OK(mt_next_u64(&g) == ((uint64_t)1608637542u << 32 | 3421126067u), "random64: high word first");

    static const uint32_t p42[10] = {2, 6, 1, 8, 4, 5, 0, 9, 3, 7};
    T_OK(perm_is(42, 10, p42), "randperm(10), seed 42");
    static const uint32_t p0[1] = {0};
    T_OK(perm_is(0, 1, p0), "randperm(1)");
    static const uint32_t p3[2] = {0, 1};
    T_OK(perm_is(3, 2, p3), "randperm(2), seed 3");
    static const uint32_t p1234[17] = {6, 4, 8, 2, 16, 9, 15, 12, 0, 10, 7, 5, 1, 3, 14, 13, 11};
    T_OK(perm_is(1234, 17, p1234), "randperm(17), seed 1234");
    static const uint32_t p5[6] = {5, 0, 1, 3, 4, 2};
    T_OK(perm_is(5, 6, p5), "randperm(6), seed 5");
    T_OK(perm_is((1ull << 40) + 5, 6, p5), "a 64-bit seed keeps its low 32 bits, as torch does");

    static const float u11[6] = {-0x1.8031dcp-6f, -0x1.d70ccep-11f, 0x1.09d3ccp-5f, -0x1.6b006cp-6f,
                                 0x1.6f9278p-8f, 0x1.a7dde6p-7f};
    float got[6];
    mt_seed(&g, 11);
    mt_fill_uniform_f32(&g, got, 6, -0.0334076552f, 0.0334076552f);
    T_OK(!memcmp(got, u11, sizeof got), "uniform_(-b, b), seed 11: %a %a", got[0], got[5]);
    static const float u12[6] = {0x1.e767ap-1f, 0x1.40728p-1f, 0x1.de1c46p-1f, 0x1.1f3896p+0f, 0x1.be843ep-1f,
                                 0x1.e98474p-2f};
    mt_seed(&g, 12);
    mt_fill_uniform_f32(&g, got, 6, 0.3f, 1.7f);
    T_OK(!memcmp(got, u12, sizeof got), "uniform_(0.3, 1.7), seed 12: %a %a", got[0], got[5]);
    return T_DONE("test_mt19937");
}

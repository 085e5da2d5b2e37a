// tests/unit/test_dtype.c: dtype tables and fp32 <-> bf16/fp16 conversions,
// against PyTorch's answers (tests/fixtures/dtype/conv.txt, made by
// tests/golden/make_tiny_models.py) and exhaustively over all 16-bit inputs.
#include "dtype.h"
#include "tap.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_torch_table(void) {
    FILE *f = fopen("tests/fixtures/dtype/conv.txt", "r");
    T_OK(f != NULL, "open tests/fixtures/dtype/conv.txt");
    if (!f) return;
    char line[128];
    size_t n = 0, bad_bf = 0, bad_h = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        unsigned u, b, h;
        if (sscanf(line, "%x %x %x", &u, &b, &h) != 3) continue;
        float x = from_bits(u);
        uint16_t gb = f32_to_bf16(x), gh = f32_to_f16(x);
        if (gb != b && bad_bf++ < 5) printf("# bf16(%08x) = %04x, torch %04x\n", u, gb, b);
        if (gh != h && bad_h++ < 5) printf("# f16(%08x) = %04x, torch %04x\n", u, gh, h);
        // The bulk converters give the same bits.
        uint16_t vb, vh;
        from_f32(&vb, DT_BF16, &x, 1);
        from_f32(&vh, DT_F16, &x, 1);
        if (vb != gb || vh != gh) bad_bf++;
        n++;
    }
    fclose(f);
    T_OK(n > 3000, "table has %zu rows", n);
    T_OK(bad_bf == 0, "fp32 -> bf16 matches torch on %zu values (%zu differ)", n, bad_bf);
    T_OK(bad_h == 0, "fp32 -> fp16 matches torch on %zu values (%zu differ)", n, bad_h);
}

static void test_exhaustive_16bit(void) {
    size_t bad = 0, bad_rt = 0, bad_bf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double want;
        if (e == 0x1f) {
            if (m) {   // NaN: quiet, sign and payload kept (F16C)
                uint32_t w = ((h & 0x8000u) << 16) | 0x7fc00000u | (m << 13);
                if (bits(f) != w) bad++;
                if ((f32_to_f16(f) & 0x7fff) != (0x7e00 | m)) bad_rt++;
                continue;
            }
            want = INFINITY;
        } else if (e == 0) {
            want = ldexp((double)m, -24);
        } else {
            want = ldexp((double)(m | 0x400), (int)e - 25);
        }
        if (h & 0x8000) want = -want;
        if ((double)f != want || !!signbit(f) != !!(h & 0x8000)) bad++;
        if (f32_to_f16(f) != h) bad_rt++;
        // bf16: widening is a shift; narrowing a widened value is exact.
        float g = bf16_to_f32((uint16_t)h);
        if (bits(g) != h << 16) bad_bf++;
        if (!isnan(g) && f32_to_bf16(g) != h) bad_bf++;
    }
    T_OK(bad == 0, "fp16 -> fp32 exact for all 65536 inputs (%zu differ)", bad);
    T_OK(bad_rt == 0, "fp16 -> fp32 -> fp16 round trip (%zu differ)", bad_rt);
    T_OK(bad_bf == 0, "bf16 <-> fp32 (%zu differ)", bad_bf);
}

static void test_edges(void) {
    T_OK(f32_to_bf16(from_bits(0x3f808000)) == 0x3f80, "bf16 tie to even (down)");
    T_OK(f32_to_bf16(from_bits(0x3f818000)) == 0x3f82, "bf16 tie to even (up)");
    T_OK(f32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80, "bf16 overflow to inf");
    T_OK(f32_to_bf16(NAN) == 0xffff, "bf16 NaN as torch CPU");
    T_OK(f32_to_f16(65504.0f) == 0x7bff, "fp16 max");
    T_OK(f32_to_f16(65519.99f) == 0x7bff, "fp16 below the overflow threshold");
    T_OK(f32_to_f16(65520.0f) == 0x7c00, "fp16 overflow threshold -> inf");
    T_OK(f32_to_f16(ldexpf(1, -25)) == 0x0000, "fp16 half of smallest subnormal ties to 0");
    T_OK(f32_to_f16(ldexpf(1.5f, -25)) == 0x0001, "fp16 above half rounds up");
    T_OK(f32_to_f16(ldexpf(3, -25)) == 0x0002, "fp16 1.5 subnormal ulps ties to even 2");
    T_OK(f32_to_f16(-0.0f) == 0x8000, "fp16 -0");
    // Unaligned source buffers convert correctly.
    uint8_t raw[9] = {0};
    uint16_t one = 0x3f80;
    memcpy(raw + 1, &one, 2);
    memcpy(raw + 3, &one, 2);
    float out[2];
    to_f32(out, raw + 1, DT_BF16, 2);
    T_OK(out[0] == 1.0f && out[1] == 1.0f, "unaligned bf16 source");
}

static void test_names(void) {
    for (int t = 0; t < DT_COUNT; t++)
        T_OK(dtype_from_name(dtype_name((dtype)t)) == (dtype)t, "name round trip %s", dtype_name((dtype)t));
    T_OK(dtype_from_name("bf16") == DT_INVALID, "unknown name");
    T_OK(dtype_bits(DT_F4) == 4 && dtype_bits(DT_BF16) == 16 && dtype_bits(DT_C64) == 64, "bits");
    T_OK(dtype_st_rank(DT_U64) > dtype_st_rank(DT_F32) && dtype_st_rank(DT_F32) > dtype_st_rank(DT_BF16) &&
         dtype_st_rank(DT_BF16) > dtype_st_rank(DT_F16) && dtype_st_rank(DT_F4) < dtype_st_rank(DT_U8),
         "reference writer's dtype order");
    T_OK(dtype_from_torch_name("bfloat16") == DT_BF16 && dtype_from_torch_name("torch.float16") == DT_F16, "torch names");
    T_OK(!strcmp(dtype_torch_name(DT_F32), "float32"), "float32");
    T_OK(dtype_from_user("bf16") == DT_BF16 && dtype_from_user("fp32") == DT_F32 && dtype_from_user("x") == DT_INVALID,
         "user spellings");
}

int main(void) {
    test_torch_table();
    test_exhaustive_16bit();
    test_edges();
    test_names();
    return T_DONE("test_dtype");
}

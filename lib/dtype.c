// lib/dtype.c: dtype names and sizes, and fp32 <-> bf16/fp16 conversions that
// give the same bits as PyTorch's CPU kernels (round to nearest even; the NaN
// encodings of its vectorised paths, which are the ones a tensor.to() takes).
#include "dtype.h"

#include <string.h>

static const struct {
    const char *name;
    int bits;
    int st_rank;          // position in the reference writer's dtype order
    const char *torch;    // config.json spelling
} info[DT_COUNT] = {
    [DT_BOOL] = {"BOOL", 8, 0, "bool"},
    [DT_F4] = {"F4", 4, 1, NULL},
    [DT_F6_E2M3] = {"F6_E2M3", 6, 2, NULL},
    [DT_F6_E3M2] = {"F6_E3M2", 6, 3, NULL},
    [DT_U8] = {"U8", 8, 4, "uint8"},
    [DT_I8] = {"I8", 8, 5, "int8"},
    [DT_F8_E5M2] = {"F8_E5M2", 8, 6, "float8_e5m2"},
    [DT_F8_E4M3] = {"F8_E4M3", 8, 7, "float8_e4m3fn"},
    [DT_F8_E8M0] = {"F8_E8M0", 8, 8, "float8_e8m0fnu"},
    [DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, 9, "float8_e4m3fnuz"},
    [DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, 10, "float8_e5m2fnuz"},
    [DT_I16] = {"I16", 16, 11, "int16"},
    [DT_U16] = {"U16", 16, 12, "uint16"},
    [DT_F16] = {"F16", 16, 13, "float16"},
    [DT_BF16] = {"BF16", 16, 14, "bfloat16"},
    [DT_I32] = {"I32", 32, 15, "int32"},
    [DT_U32] = {"U32", 32, 16, "uint32"},
    [DT_F32] = {"F32", 32, 17, "float32"},
    [DT_C64] = {"C64", 64, 18, "complex64"},
    [DT_F64] = {"F64", 64, 19, "float64"},
    [DT_I64] = {"I64", 64, 20, "int64"},
    [DT_U64] = {"U64", 64, 21, "uint64"},
};

dtype dtype_from_name(const char *s) {
    for (int t = 0; t < DT_COUNT; t++)
        if (!strcmp(s, info[t].name)) return (dtype)t;
    return DT_INVALID;
}

const char *dtype_name(dtype t) { return t >= 0 && t < DT_COUNT ? info[t].name : "?"; }
int dtype_bits(dtype t) { return t >= 0 && t < DT_COUNT ? info[t].bits : 0; }
int dtype_st_rank(dtype t) { return t >= 0 && t < DT_COUNT ? info[t].st_rank : -1; }
const char *dtype_torch_name(dtype t) { return t >= 0 && t < DT_COUNT ? info[t].torch : NULL; }

dtype dtype_from_torch_name(const char *s) {
    if (!strncmp(s, "torch.", 6)) s += 6;   // some configs spell "torch.bfloat16"
    for (int t = 0; t < DT_COUNT; t++)
        if (info[t].torch && !strcmp(s, info[t].torch)) return (dtype)t;
    if (!strcmp(s, "half")) return DT_F16;
    if (!strcmp(s, "float")) return DT_F32;
    return DT_INVALID;
}

dtype dtype_from_user(const char *s) {
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16") || !strcmp(s, "BF16")) return DT_BF16;
    if (!strcmp(s, "fp16") || !strcmp(s, "f16") || !strcmp(s, "float16") || !strcmp(s, "F16")) return DT_F16;
    if (!strcmp(s, "fp32") || !strcmp(s, "f32") || !strcmp(s, "float32") || !strcmp(s, "F32")) return DT_F32;
    return DT_INVALID;
}

int dtype_is_float(dtype t) { return t == DT_F32 || t == DT_F16 || t == DT_BF16; }

// fp16 -> fp32 is exact.  NaNs keep sign and payload and become quiet, as
// F16C's vcvtph2ps (PyTorch's vectorised path) does.
float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0);
    } else if (exp == 0) {
        if (!man) u = sign;
        else {   // subnormal: normalise; value = man * 2^-24
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v = { u };
    return v.f;
}

// fp32 -> fp16, round to nearest even, overflow to infinity, gradual
// underflow; NaN -> quiet NaN with the top payload bits (vcvtps2ph).
uint16_t f32_to_f16(float f) {
    union { float f; uint32_t u; } v = { f };
    uint32_t u = v.u;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((abs >> 13) & 0x3ffu);
    if (abs >= 0x47800000u) return sign | 0x7c00u;              // >= 65536 (or inf): inf
    if (abs < 0x38800000u) {                                       // below fp16's smallest normal
        if (abs < 0x33000000u) return sign;                        // < 2^-25: rounds to zero
        // Subnormal result: man * 2^-24 with man = round(x * 2^24).
        uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                                  // 14..24
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    // Normal: re-bias the exponent, then round the 13 dropped bits; a carry
    // out of the mantissa correctly bumps the exponent (up to infinity).
    uint32_t r = abs - 0x38000000u;                                // exponent 127-15
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

void to_f32(float *dst, const void *src, dtype st, size_t n) {
    const uint8_t *s = src;
    if (st == DT_F32) { memcpy(dst, src, n * 4); return; }
    if (st == DT_BF16) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            uint16_t h; memcpy(&h, s + 2 * i, 2);   // the source may be unaligned
            dst[i] = bf16_to_f32(h);
        }
        return;
    }
    if (st == DT_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h; memcpy(&h, s + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        return;
    }
}

void from_f32(void *dst, dtype dt, const float *src, size_t n) {
    uint8_t *d = dst;
    if (dt == DT_F32) { memcpy(dst, src, n * 4); return; }
    if (dt == DT_BF16) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return;
    }
    if (dt == DT_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f32_to_f16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return;
    }
}

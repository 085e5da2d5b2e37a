// lib/dtype.h: element types of stored tensors and exact conversions.
// bf16/fp16 <-> fp32 conversions round to nearest even and give the bits
// PyTorch's CPU kernels give (tests/fixtures/dtype holds torch's answers):
// infinities stay infinite, NaN stays NaN; fp32 NaN -> bf16 is 0xFFFF as in
// torch's vectorised CPU path, NaN -> fp16 keeps sign and top payload bits.
#ifndef LORAPIPE_DTYPE_H
#define LORAPIPE_DTYPE_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    DT_BOOL, DT_U8, DT_I8, DT_I16, DT_U16, DT_F16, DT_BF16, DT_I32, DT_U32, DT_F32,
    DT_C64, DT_F64, DT_I64, DT_U64,
    DT_F8_E4M3, DT_F8_E5M2, DT_F8_E8M0, DT_F8_E4M3FNUZ, DT_F8_E5M2FNUZ, DT_F6_E2M3, DT_F6_E3M2, DT_F4,
    DT_COUNT, DT_INVALID = -1
} dtype;

// "BF16" etc. (safetensors spelling); DT_INVALID when unknown.
dtype dtype_from_name(const char *s);
const char *dtype_name(dtype t);
// Size in bits (F4 = 4, F6 = 6, BF16 = 16...).
int dtype_bits(dtype t);
// Position in the reference safetensors writer's dtype order (it writes
// higher ranks first): BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0
// F8_E4M3FNUZ F8_E5M2FNUZ I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64.
int dtype_st_rank(dtype t);
// "bf16"/"fp16"/"fp32" (command-line spellings, also "bfloat16" etc.).
dtype dtype_from_user(const char *s);
// F32, F16 or BF16: the types weights may have.
int dtype_is_float(dtype t);
// Name as config.json writes it ("bfloat16", "float16", "float32"); NULL for others.
const char *dtype_torch_name(dtype t);
dtype dtype_from_torch_name(const char *s);

static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}
static inline uint16_t f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return 0xffffu;  // NaN, as torch's CPU kernels
    uint32_t r = v.u + 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Convert n elements of src (type st: F32, F16 or BF16) to fp32.
void to_f32(float *dst, const void *src, dtype st, size_t n);
// Convert n fp32 values to dt (F32, F16 or BF16), rounding once.
void from_f32(void *dst, dtype dt, const float *src, size_t n);

#endif

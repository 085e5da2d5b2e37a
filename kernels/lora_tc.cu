// kernels/lora_tc.cu: the LoRA products that reduce over a long dimension, on
// tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate), for ranks 8
// and 16:
//   in:  t (N, R) = (mask x) (N, I) W^T      W = A (R, I), or B stored (I, R) (BT)
//   da:  part (R, I) = sum over a chunk of rows of dt^T (mask x)
//   dx:  dx (N, I) += mask (dt W)                 (and y += s t B^T with BT)
// The CUDA-core kernels (lora.cu) spent their time re-reading the weight for
// every row or two (registers hold only so many partial sums) and converting
// bf16 to fp32; an mma reads a 16 x 16 slab of x and a 16 x 8 slab of the
// weight as they are. Dropout stays fused: a dropped element's bits are
// cleared in the x fragment (0 or x, exact in bf16) and the 1 / (1 - p)
// scale is applied once to the fp32 sum.
//
// Each kernel is free to pick which column of x feeds which k (or n) slot of
// an mma (a sum over k does not care; output columns go back where they
// belong), so each thread loads 8 consecutive bf16 of a row as one 16-byte
// vector and the weight's matching 8 values the same way; see the fragment
// layout at mma16816.
#include "lora_internal.cuh"

// C (16, 8) += A (16, 16) B (16, 8); with g = lane / 4 and c = lane % 4 a thread
// holds a0 = A[g][2c, 2c+1], a1 = A[g+8][2c, 2c+1], a2 = A[g][2c+8, 2c+9],
// a3 = A[g+8][2c+8, 2c+9]; b0 = B[2c, 2c+1][g], b1 = B[2c+8, 2c+9][g];
// c0, c1 = C[g][2c, 2c+1], c2, c3 = C[g+8][2c, 2c+1] (pairs: low half first).
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack2(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }

// Clear the dropped elements of 8 bf16 at flat elements f .. f + 7.
__device__ __forceinline__ uint4 mask8(uint4 v, uint32_t k, size_t f, uint32_t thr) {
    uint4 m = keep_mask8(k, f, thr);
    return make_uint4(v.x & m.x, v.y & m.y, v.z & m.z, v.w & m.w);
}

// ---- in: t = out_scale * (mask_g x) W_g^T --------------------------------
// A block owns 8 rows of x (the mma's rows 0-7; rows 8-15 are zero: with 8
// rows per block a micro-batch of ~1,000 tokens fills every SM, and the
// tensor cores are nowhere near busy). Its warps stride over column blocks of
// 32: thread (g, c) loads x[n0 + g][c0 + 8c .. + 8] and, per rank block, the
// weight rows q = g (+ 8) over the same 8 columns, which are two mmas' k slots
// (2c, 2c+1, 2c+8, 2c+9 <- columns 8c + 0..3, then 8c + 4..7). The warps' sums
// meet in shared memory and are added in warp order (deterministic).
#define TC_IN_WARPS 16
template <int R, int G, bool BT>
__global__ void __launch_bounds__(TC_IN_WARPS * 32)
lora_in_tc_kernel(lgk p, size_t ldx, size_t N, uint32_t thr, float out_scale) {
    constexpr int NT = R / 8;   // rank blocks of 8 (the mma's n)
    __shared__ float red[TC_IN_WARPS][G * 8 * R];
    const int z = blockIdx.z;
    const bf16 *x = p.x[z];
    const size_t I = p.cols[z];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gi = lane >> 2, ci = lane & 3;
    const size_t n0 = (size_t)blockIdx.x * 8, n = n0 + gi;
    const bool row_ok = n < N;
    float acc[G][NT][4];
    #pragma unroll
    for (int g = 0; g < G; g++)
        #pragma unroll
        for (int t = 0; t < NT; t++) acc[g][t][0] = acc[g][t][1] = acc[g][t][2] = acc[g][t][3] = 0.0f;
    // Warp-uniform loop: every lane reaches every mma. Unrolled so that the
    // next column block's loads are in flight during this one's masks.
    #pragma unroll 2
    for (size_t cb = (size_t)warp * 32; cb < I; cb += TC_IN_WARPS * 32) {
        const size_t c = cb + 8 * ci;
        const bool col_ok = c < I;
        uint4 xv = make_uint4(0, 0, 0, 0);
        if (row_ok && col_ok) xv = *(const uint4 *)(x + n * ldx + c);
        #pragma unroll
        for (int g = 0; g < G; g++) {
            const bf16 *W = p.W[z + g];
            uint4 xm = thr ? mask8(xv, (uint32_t)p.k[z + g], n * I + c, thr) : xv;
            #pragma unroll
            for (int t = 0; t < NT; t++) {
                const int q = t * 8 + gi;
                uint4 wv = make_uint4(0, 0, 0, 0);
                if (col_ok) {
                    if constexpr (BT) {   // B (I, R): column q of rows c .. c + 7
                        const uint16_t *w = (const uint16_t *)W + c * R + q;
                        wv = make_uint4(pack2(w[0], w[R]), pack2(w[2 * R], w[3 * R]), pack2(w[4 * R], w[5 * R]),
                                        pack2(w[6 * R], w[7 * R]));
                    } else {
                        wv = *(const uint4 *)(W + (size_t)q * I + c);
                    }
                }
                mma16816(acc[g][t], xm.x, 0u, xm.y, 0u, wv.x, wv.y);
                mma16816(acc[g][t], xm.z, 0u, xm.w, 0u, wv.z, wv.w);
            }
        }
    }
    // acc[g][t][0, 1] = t_g[n0 + gi][t * 8 + 2 ci, + 1] over this warp's columns
    #pragma unroll
    for (int g = 0; g < G; g++)
        #pragma unroll
        for (int t = 0; t < NT; t++) {
            red[warp][(g * 8 + gi) * R + t * 8 + 2 * ci] = acc[g][t][0];
            red[warp][(g * 8 + gi) * R + t * 8 + 2 * ci + 1] = acc[g][t][1];
        }
    __syncthreads();
    const int nr = (int)min((size_t)8, N - n0);
    for (int j = threadIdx.x; j < G * 8 * R; j += blockDim.x) {
        const int g = j / (8 * R), row = (j / R) % 8, q = j % R;
        if (row >= nr) continue;
        float v = 0.0f;
        #pragma unroll
        for (int w = 0; w < TC_IN_WARPS; w++) v += red[w][j];
        p.t[z + g][(n0 + row) * R + q] = tobf(v * out_scale);
    }
}

// ---- da: part[g][chunk] (R, I) = dscale * sum_{n in chunk} dt_g[n] (mask_g x[n])
// As an mma, part^T (I, R) = (mask x)^T (I, chunk) dt (chunk, R): the mma's
// rows are columns of x, its k the chunk's rows. Thread (g, c) loads 8
// consecutive columns i0 + 8g .. + 7 of the four rows 2c, 2c+1, 2c+8, 2c+9
// of each 16-row step; mma tile j (of 4) takes columns i0 + 8g + 2j as its row
// g and i0 + 8g + 2j + 1 as its row g + 8, so a warp covers 64 columns and the
// pairs come out of the loaded words with one byte permute each.
// dt's chunk rows wait in shared memory. A block: TC_DA_WARPS x 64 columns of one chunk.
#define TC_DA_WARPS 4
template <int R, int G>
__global__ void __launch_bounds__(TC_DA_WARPS * 32)
lora_da_tc_kernel(float *part, size_t zstride, lgk p, size_t ldx, size_t N, uint32_t thr, float dscale) {
    constexpr int NT = R / 8;
    __shared__ __align__(16) uint16_t dts[G][DA_CHUNK][R];
    const int z = blockIdx.z;
    const bf16 *x = p.x[z];
    const size_t I = p.cols[z];
    part += z * zstride;
    const size_t c = blockIdx.y, chunks = gridDim.y, n0 = c * DA_CHUNK;
    const int nr = (int)min((size_t)DA_CHUNK, N - n0);
    for (int j = threadIdx.x; j < G * DA_CHUNK * R; j += blockDim.x) {
        const int g = j / (DA_CHUNK * R), row = (j / R) % DA_CHUNK, q = j % R;
        dts[g][row][q] = row < nr ? ((const uint16_t *)p.t[z + g])[(n0 + row) * R + q] : (uint16_t)0;
    }
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gi = lane >> 2, ci = lane & 3;
    const size_t i0 = ((size_t)blockIdx.x * TC_DA_WARPS + warp) * 64 + 8 * gi;   // this thread's 8 columns
    const bool col_ok = i0 < I;
    float acc[G][4][NT][4];
    #pragma unroll
    for (int g = 0; g < G; g++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int t = 0; t < NT; t++) acc[g][j][t][0] = acc[g][j][t][1] = acc[g][j][t][2] = acc[g][j][t][3] = 0.0f;
    for (int kb = 0; kb < nr; kb += 16) {   // block-uniform
        const int rows[4] = {kb + 2 * ci, kb + 2 * ci + 1, kb + 2 * ci + 8, kb + 2 * ci + 9};
        uint4 xv[4];
        #pragma unroll
        for (int a = 0; a < 4; a++) {
            xv[a] = make_uint4(0, 0, 0, 0);
            if (col_ok && rows[a] < nr) xv[a] = *(const uint4 *)(x + (n0 + rows[a]) * ldx + i0);
        }
        #pragma unroll
        for (int g = 0; g < G; g++) {
            uint32_t w[4][4];   // w[a][j]: columns i0 + 2j, + 1 of row rows[a], dropped ones cleared
            #pragma unroll
            for (int a = 0; a < 4; a++) {
                uint4 m = thr ? mask8(xv[a], (uint32_t)p.k[z + g], (n0 + rows[a]) * I + i0, thr) : xv[a];
                w[a][0] = m.x; w[a][1] = m.y; w[a][2] = m.z; w[a][3] = m.w;
            }
            uint32_t b0[NT], b1[NT];
            #pragma unroll
            for (int t = 0; t < NT; t++) {
                const int q = t * 8 + gi;
                b0[t] = pack2(dts[g][rows[0]][q], dts[g][rows[1]][q]);
                b1[t] = pack2(dts[g][rows[2]][q], dts[g][rows[3]][q]);
            }
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                const uint32_t a0 = __byte_perm(w[0][j], w[1][j], 0x5410), a1 = __byte_perm(w[0][j], w[1][j], 0x7632);
                const uint32_t a2 = __byte_perm(w[2][j], w[3][j], 0x5410), a3 = __byte_perm(w[2][j], w[3][j], 0x7632);
                #pragma unroll
                for (int t = 0; t < NT; t++) mma16816(acc[g][j][t], a0, a1, a2, a3, b0[t], b1[t]);
            }
        }
    }
    if (!col_ok) return;
    // acc[g][j][t]: [0] (q = t*8 + 2ci, i0 + 2j), [1] (q + 1, i0 + 2j), [2] (q, i0 + 2j + 1), [3] (q + 1, i0 + 2j + 1)
    #pragma unroll
    for (int g = 0; g < G; g++)
        #pragma unroll
        for (int t = 0; t < NT; t++)
            #pragma unroll
            for (int h = 0; h < 2; h++) {   // h: q = t*8 + 2ci + h
                float *dst = part + ((g * chunks + c) * R + t * 8 + 2 * ci + h) * I + i0;
                *(float4 *)dst = make_float4(dscale * acc[g][0][t][h], dscale * acc[g][0][t][h + 2],
                                             dscale * acc[g][1][t][h], dscale * acc[g][1][t][h + 2]);
                *(float4 *)(dst + 4) = make_float4(dscale * acc[g][2][t][h], dscale * acc[g][2][t][h + 2],
                                                   dscale * acc[g][3][t][h], dscale * acc[g][3][t][h + 2]);
            }
}

// ---- dx: dx += out_scale * sum_g mask_g (dt_g W_g) ------------------------
// Also the output side y += s t B^T (BT, one module, no mask). The mma's k is
// the rank (R = 8 fills half of its 16 slots), its rows 16 rows of dx, its n 8
// columns; tile j (of 4) takes column i0 + 8 (l / 2) + 2j + (l % 2) as its
// column l, so that thread (g, c) ends up with columns i0 + 8c .. + 7 of rows
// g and g + 8: one 16-byte read-modify-write each. Each warp owns 16 rows x 32
// columns; a block, TC_DX_WARPS of them side by side.
#define TC_DX_WARPS 4
template <int R, int G, bool BT>
__global__ void __launch_bounds__(TC_DX_WARPS * 32)
lora_dx_tc_kernel(lgk p, size_t ldd, size_t N, uint32_t thr, float out_scale) {
    const int z = blockIdx.z;
    bf16 *dx = (bf16 *)p.x[z];
    const size_t I = p.cols[z];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gi = lane >> 2, ci = lane & 3;
    const size_t n0 = (size_t)blockIdx.y * 16, i0 = ((size_t)blockIdx.x * TC_DX_WARPS + warp) * 32;
    if (i0 >= I) return;   // warp-uniform
    const size_t na = n0 + gi, nb = n0 + gi + 8;   // this thread's rows
    const size_t iw = i0 + 8 * (gi >> 1);          // the 8 columns whose weights this thread feeds in
    float acc[G][4][4];
    #pragma unroll
    for (int g = 0; g < G; g++) {
        const uint32_t *t32 = (const uint32_t *)p.t[z + g];   // dt (N, R) as bf16 pairs
        uint32_t a0 = na < N ? t32[(na * R + 2 * ci) / 2] : 0u, a1 = nb < N ? t32[(nb * R + 2 * ci) / 2] : 0u;
        uint32_t a2 = 0u, a3 = 0u;
        if constexpr (R == 16) {
            a2 = na < N ? t32[(na * R + 2 * ci + 8) / 2] : 0u;
            a3 = nb < N ? t32[(nb * R + 2 * ci + 8) / 2] : 0u;
        }
        const bf16 *W = p.W[z + g];
        #pragma unroll
        for (int j = 0; j < 4; j++) acc[g][j][0] = acc[g][j][1] = acc[g][j][2] = acc[g][j][3] = 0.0f;
        if constexpr (BT) {   // B (I, R): W(q, i) = B[i][q], a pair along q is one 4-byte load
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                const size_t i = iw + 2 * j + (gi & 1);
                const uint32_t *b = (const uint32_t *)(W + i * R + 2 * ci);
                uint32_t b0 = iw < I ? b[0] : 0u, b1 = R == 16 && iw < I ? b[4] : 0u;
                mma16816(acc[g][j], a0, a1, a2, a3, b0, b1);
            }
        } else {              // A (R, I): rows 2c, 2c + 1 (and + 8) over the 8 columns, one vector each
            uint4 r0 = make_uint4(0, 0, 0, 0), r1 = r0, r2 = r0, r3 = r0;
            if (iw < I) {   // columns past I (I a multiple of 8, not of 32) feed zeros
                r0 = *(const uint4 *)(W + (size_t)(2 * ci) * I + iw);
                r1 = *(const uint4 *)(W + (size_t)(2 * ci + 1) * I + iw);
            }
            if (R == 16 && iw < I) {
                r2 = *(const uint4 *)(W + (size_t)(2 * ci + 8) * I + iw);
                r3 = *(const uint4 *)(W + (size_t)(2 * ci + 9) * I + iw);
            }
            const uint32_t sel = (gi & 1) ? 0x7632 : 0x5410;   // element 2j + (g % 2) of each row
            const uint32_t w0[4] = {r0.x, r0.y, r0.z, r0.w}, w1[4] = {r1.x, r1.y, r1.z, r1.w};
            const uint32_t w2[4] = {r2.x, r2.y, r2.z, r2.w}, w3[4] = {r3.x, r3.y, r3.z, r3.w};
            #pragma unroll
            for (int j = 0; j < 4; j++)
                mma16816(acc[g][j], a0, a1, a2, a3, __byte_perm(w0[j], w1[j], sel), __byte_perm(w2[j], w3[j], sel));
        }
    }
    // acc[g][j]: [0, 1] row na, columns i0 + 8c + 2j, + 1; [2, 3] row nb
    const size_t ic = i0 + 8 * ci;
    #pragma unroll
    for (int h = 0; h < 2; h++) {
        const size_t n = h ? nb : na;
        if (n >= N || ic >= I) continue;
        float v[8] = {};
        #pragma unroll
        for (int g = 0; g < G; g++) {
            const uint4 m = thr ? keep_mask8((uint32_t)p.k[z + g], n * I + ic, thr) : make_uint4(~0u, ~0u, ~0u, ~0u);
            const uint32_t mw[4] = {m.x, m.y, m.z, m.w};
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                v[2 * j] += (mw[j] & 0xffffu) ? acc[g][j][2 * h] : 0.0f;
                v[2 * j + 1] += (mw[j] >> 16) ? acc[g][j][2 * h + 1] : 0.0f;
            }
        }
        bf16x8 o;
        uint4 *dst = (uint4 *)(dx + n * ldd + ic);
        o.u = *dst;
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 f = __bfloat1622float2(o.h[e]);
            o.h[e] = __floats2bfloat162_rn(f.x + v[2 * e] * out_scale, f.y + v[2 * e + 1] * out_scale);
        }
        *dst = o.u;
    }
}

bool lora_tc_ok(size_t r) { return r == 8 || r == 16; }

#define TC_RANK(r, CALL)                                                                  \
    do { if (r == 8) { const int R = 8; CALL; } else { const int R = 16; CALL; } } while (0)
#define TC_GROUP(G, CALL) LORA_GROUP_CASES(G, CALL)

void lora_in_tc(const lgk &p, int G, int nz, size_t ldx, int bt, size_t N, size_t r, uint32_t thr, float out_scale,
                cudaStream_t s) {
    dim3 grid(cdiv(N, 8), 1, nz);
    if (bt) TC_RANK(r, (lora_in_tc_kernel<R, 1, true><<<grid, TC_IN_WARPS * 32, 0, s>>>(p, ldx, N, thr, out_scale)));
    else TC_GROUP(G, TC_RANK(r, (lora_in_tc_kernel<R, GG, false><<<grid, TC_IN_WARPS * 32, 0, s>>>(p, ldx, N, thr,
                                                                                                      out_scale))));
    LAUNCH_CHECK();
}

void lora_dx_tc(const lgk &p, int G, int nz, size_t ldd, int bt, size_t N, size_t r, uint32_t thr, float out_scale,
                cudaStream_t s) {
    size_t cmax = max_cols(&p, nz);
    dim3 grid(cdiv(cmax, 32 * TC_DX_WARPS), cdiv(N, 16), nz);
    if (bt) TC_RANK(r, (lora_dx_tc_kernel<R, 1, true><<<grid, TC_DX_WARPS * 32, 0, s>>>(p, ldd, N, thr, out_scale)));
    else TC_GROUP(G, TC_RANK(r, (lora_dx_tc_kernel<R, GG, false><<<grid, TC_DX_WARPS * 32, 0, s>>>(p, ldd, N, thr,
                                                                                                     out_scale))));
    LAUNCH_CHECK();
}

void lora_da_tc(const lgk &p, int G, int nz, float *part, size_t zstride, size_t ldx, size_t N, size_t r, uint32_t thr,
                float dscale, cudaStream_t s) {
    size_t cmax = max_cols(&p, nz);
    dim3 grid(cdiv(cmax, 64 * TC_DA_WARPS), cdiv(N, DA_CHUNK), nz);
    TC_GROUP(G, TC_RANK(r, (lora_da_tc_kernel<R, GG><<<grid, TC_DA_WARPS * 32, 0, s>>>(part, zstride, p, ldx, N, thr,
                                                                                        dscale))));
    LAUNCH_CHECK();
}

// kernels/attention_short_mma.cu: the short-sequence attention of
// attention_short.cu for its common case (D = 64 or 128, sequences of at most
// 128 tokens) with tiles in registers: each warp owns 16 rows and multiplies
// with mma.sync m16n8k16 (bf16 in, fp32 out), operands read from shared memory
// with ldmatrix. Blocks take at most about 105 KiB of shared memory so that
// two fit on an SM and one block's loads overlap the other's math (the old
// kernel held a whole (sequence, head) in one 225 KiB block of 16 serial
// phases): the forward a block of 8 warps per (sequence, head), the backward
// blocks of 4 warps per 64 query rows (dQ) or 64 key rows (dK, dV).
//
// Numerics are attention_short.cu's: fp32 scores and softmax, P rounded to
// bf16 before P V, lse = max + log(sum) per (head, token), the backward
// recomputes P from lse, dS = P (dP - delta) * scale rounded to bf16, with
// delta_i = dO_i . O_i over the stored bf16 O. Every sum runs in a fixed
// order and nothing is atomic, so runs are bit-reproducible.
//
// Register fragments (PTX ISA, mma.m16n8k16, lane = 4 g + t):
//   A (16x16): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B (16x8):  b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
//   C (16x8):  c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)
// so two C tiles side by side, rounded to bf16 and paired, are an A fragment:
// scores become the left operand of the next product without leaving registers.
#include "attention_short_mma.h"
#include "common.cuh"

#define AM_WARPS 4                // backward: 4 warps, AM_ROWS rows per block
#define AM_ROWS (16 * AM_WARPS)   // query (or key) rows per block
#define AF_WARPS 8                // forward: a warp per query block of a whole sequence
#define AM_SPLIT 64               // backward: rows of the walk in the first copy group
#ifndef AM_GROUPED
#define AM_GROUPED 1              // backward: blocks of one (sequence, head) side by side in the grid
#endif
#define AM_MAXL 128               // longest sequence these kernels take

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// Four 8x8 bf16 matrices from shared memory; lane l gives the address of row
// l % 8 of matrix l / 8. The "memory" clobber keeps the compiler from moving
// the shared-memory stores of the output staging above these reads.
__device__ __forceinline__ void ldsm4(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)) : "memory");
}
__device__ __forceinline__ void ldsm4t(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)) : "memory");
}
// c (16x8 fp32) += a (16x16) b (16x8)
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

// Fragment addresses for a lane, tiles in shared memory with row stride ldd:
// A operand, rows r0..r0+15 and columns c0..c0+15 of a row-major tile.
__device__ __forceinline__ const bf16 *a_addr(const bf16 *X, int ldd, int r0, int c0) {
    int l = threadIdx.x & 31;
    return X + (size_t)(r0 + (l & 15)) * ldd + c0 + (l >> 4) * 8;
}
// B operands of two n-tiles (n0.., n0+8..) at k-step k0, from X stored (n, k)
// (keys by head dims for Q K^T): r0 r1 = b0 b1 of n-tile n0, r2 r3 of n0 + 8.
__device__ __forceinline__ const bf16 *bn_addr(const bf16 *X, int ldd, int n0, int k0) {
    int l = threadIdx.x & 31;
    return X + (size_t)(n0 + (l & 7) + (l >> 4) * 8) * ldd + k0 + ((l >> 3) & 1) * 8;
}
// The same from X stored (k, n) (keys by head dims for P V), read transposed.
__device__ __forceinline__ const bf16 *bk_addr(const bf16 *X, int ldd, int k0, int n0) {
    int l = threadIdx.x & 31;
    return X + (size_t)(k0 + (l & 7) + ((l >> 3) & 1) * 8) * ldd + n0 + (l >> 4) * 8;
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// rows [0, rows) of a (rows, D) tile with row stride LDD from src (row stride
// ld): the first `valid` rows copied asynchronously, the rest zeroed (a zero
// row times a zero probability must stay zero, never NaN from stale memory).
template <int D>
__device__ __forceinline__ void am_load(bf16 *dst, const bf16 *src, size_t ld, int rows, int valid) {
    constexpr int LDD = D + 8, PER = D / 8;   // uint4 per row
    for (int x = threadIdx.x; x < rows * PER; x += blockDim.x) {
        int i = x / PER, c = x % PER;
        if (i < valid) cp_async16(dst + (size_t)i * LDD + c * 8, src + (size_t)i * ld + c * 8);
        else *(uint4 *)(dst + (size_t)i * LDD + c * 8) = make_uint4(0, 0, 0, 0);
    }
}

// A warp's (16, D) fp32 accumulator to global rows row0.. (those < L), bf16,
// through the warp's own 16 staging rows so that the global stores are whole
// 16-byte row pieces.
template <int D>
__device__ __forceinline__ void am_store_rows(const float acc[D / 8][4], bf16 *stage, bf16 *dst, size_t ld, int row0, int L) {
    constexpr int LDD = D + 8, PER = D / 8;
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        *(uint32_t *)(stage + (size_t)g * LDD + j * 8 + 2 * t) = pack_bf2(acc[j][0], acc[j][1]);
        *(uint32_t *)(stage + (size_t)(g + 8) * LDD + j * 8 + 2 * t) = pack_bf2(acc[j][2], acc[j][3]);
    }
    __syncwarp();
    for (int x = lane; x < 16 * PER; x += 32) {
        int i = x / PER, c = x % PER;
        if (row0 + i < L) *(uint4 *)(dst + (size_t)(row0 + i) * ld + c * 8) = *(const uint4 *)(stage + (size_t)i * LDD + c * 8);
    }
}
// The same in fp32 without staging (GQA scratch; a lane quad writes 32 contiguous bytes).
template <int D>
__device__ __forceinline__ void am_store_rows32(const float acc[D / 8][4], float *dst, size_t ld, int row0, int L) {
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        if (row0 + g < L) *(float2 *)(dst + (size_t)(row0 + g) * ld + j * 8 + 2 * t) = make_float2(acc[j][0], acc[j][1]);
        if (row0 + g + 8 < L)
            *(float2 *)(dst + (size_t)(row0 + g + 8) * ld + j * 8 + 2 * t) = make_float2(acc[j][2], acc[j][3]);
    }
}

// Forward, query block QB of a sequence (rows 16 QB .. 16 QB + 15), one warp:
// S (16, 16(QB+1)) = Q K^T kept whole in registers (QB a template argument so
// that every loop unrolls without branches), softmax over keys 0..i, lse, and P
// as bf16 A fragments (key block kb in pa[kb]) for am_fwd_o.
template <int D, int QB>
__device__ __forceinline__ void am_fwd_p(uint32_t pa[AM_MAXL / 16][4], const bf16 *Qs, const bf16 *Ks, float *lse_s,
                                         int L, float scale) {
    constexpr int LDD = D + 8, NK = D / 16, NJ = 2 * (QB + 1);
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, i0 = QB * 16 + g, i1 = i0 + 8;
    float sc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
        uint32_t a[4];
        ldsm4(a, a_addr(Qs, LDD, QB * 16, kk * 16));
#pragma unroll
        for (int jp = 0; jp <= QB; jp++) {
            uint32_t b[4];
            ldsm4(b, bn_addr(Ks, LDD, jp * 16, kk * 16));
            mma16816(sc[2 * jp], a, b[0], b[1]);
            mma16816(sc[2 * jp + 1], a, b[2], b[3]);
        }
    }
    // a row's values sit in the 4 lanes of a quad
    float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int col = j * 8 + 2 * t + e;
            sc[j][e] = col <= i0 ? sc[j][e] * scale : -INFINITY;
            sc[j][2 + e] = col <= i1 ? sc[j][2 + e] * scale : -INFINITY;
            m0 = fmaxf(m0, sc[j][e]); m1 = fmaxf(m1, sc[j][2 + e]);
        }
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 1)); m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 2));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 1)); m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 2));
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) { s0 += __expf(sc[j][e] - m0); s1 += __expf(sc[j][2 + e] - m1); }
    s0 += __shfl_xor_sync(0xffffffffu, s0, 1); s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
    s1 += __shfl_xor_sync(0xffffffffu, s1, 1); s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
    float l0 = m0 + logf(s0), l1 = m1 + logf(s1);
    if (t == 0) {
        if (i0 < L) lse_s[i0] = l0;
        if (i1 < L) lse_s[i1] = l1;
    }
#pragma unroll
    for (int kb = 0; kb <= QB; kb++) {
        pa[kb][0] = pack_bf2(__expf(sc[2 * kb][0] - l0), __expf(sc[2 * kb][1] - l0));
        pa[kb][1] = pack_bf2(__expf(sc[2 * kb][2] - l1), __expf(sc[2 * kb][3] - l1));
        pa[kb][2] = pack_bf2(__expf(sc[2 * kb + 1][0] - l0), __expf(sc[2 * kb + 1][1] - l0));
        pa[kb][3] = pack_bf2(__expf(sc[2 * kb + 1][2] - l1), __expf(sc[2 * kb + 1][3] - l1));
    }
}

// O (16, D) = P V for query block QB, to rows 16 QB.. of dst (row stride ldo)
// through the warp's own Q rows (read by no other warp) as staging.
template <int D, int QB>
__device__ __forceinline__ void am_fwd_o(const uint32_t pa[AM_MAXL / 16][4], const bf16 *Vs, bf16 *Qs, bf16 *dst,
                                         size_t ldo, int L) {
    constexpr int LDD = D + 8;
    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
#pragma unroll
    for (int kb = 0; kb <= QB; kb++)
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t b[4];
            ldsm4t(b, bk_addr(Vs, LDD, kb * 16, dp * 16));
            mma16816(o[2 * dp], pa[kb], b[0], b[1]);
            mma16816(o[2 * dp + 1], pa[kb], b[2], b[3]);
        }
    am_store_rows<D>(o, Qs + (size_t)QB * 16 * LDD, dst, ldo, QB * 16, L);
}

// Forward. Block (sequence s, query head h), AF_WARPS warps; warp w owns query
// block w. Shared memory: Q, K, V (Lm, LDD). Q and K are one cp.async group and
// V another, so that V still streams in while the scores are computed.
#define AM_FWD_CASES(F) \
    switch (warp) { case 0: F(0); break; case 1: F(1); break; case 2: F(2); break; case 3: F(3); break; \
                    case 4: F(4); break; case 5: F(5); break; case 6: F(6); break; default: F(7); break; }
template <int D>
__global__ void __launch_bounds__(AF_WARPS * 32, 2)
am_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, const int32_t *seq, size_t N, int H, int G, size_t ld,
              float scale, int Lm) {
    constexpr int LDD = D + 8;
    extern __shared__ __align__(128) unsigned char sm[];
    int s = blockIdx.x / H, h = blockIdx.x % H, kh = h / (H / G);
    int t0 = seq[s], L = seq[s + 1] - t0;
    if (L <= 0) return;
    int rows = (L + 15) & ~15;
    bf16 *Qs = (bf16 *)sm, *Ks = Qs + (size_t)Lm * LDD, *Vs = Ks + (size_t)Lm * LDD;
    const bf16 *row0 = qkv + (size_t)t0 * ld;
    am_load<D>(Qs, row0 + (size_t)h * D, ld, rows, L);
    am_load<D>(Ks, row0 + (size_t)(H + kh) * D, ld, rows, L);
    cp_async_commit();
    am_load<D>(Vs, row0 + (size_t)(H + G + kh) * D, ld, rows, L);
    cp_async_commit();
    cp_async_wait_1();
    __syncthreads();
    int warp = threadIdx.x >> 5, act = warp * 16 < L;
    float *lse_s = lse + (size_t)h * N + t0;
    uint32_t pa[AM_MAXL / 16][4];
#define F(q) am_fwd_p<D, q>(pa, Qs, Ks, lse_s, L, scale)
    if (act) AM_FWD_CASES(F)
#undef F
    cp_async_wait_all();
    __syncthreads();
    size_t HD = (size_t)H * D;
    bf16 *dst = out + (size_t)t0 * HD + (size_t)h * D;
#define F(q) am_fwd_o<D, q>(pa, Vs, Qs, dst, HD, L)
    if (act) AM_FWD_CASES(F)
#undef F
}

// Backward: two kinds of block in one launch, so that both run at once.
// Role 0 (dQ), chunk c of query rows: warp w owns query block qb and walks key
// blocks 0..qb: S and dP (16, 16) chunks, dS, dQ += dS K in registers.
// Shared memory: Q, dO of this chunk (RA rows), K, V (Lm rows) from key 0.
// Role 1 (dK, dV), chunk c of key rows: warp w owns key block kb and walks
// query blocks kb..: S^T and dP^T chunks, P^T and dS^T, dV += P^T dO and
// dK += dS^T Q in registers. Shared memory: K, V of this chunk (RA rows), Q,
// dO (Lm rows) from query c*AM_ROWS. S and dP are recomputed by both roles
// (the price of running them side by side without exchanging dS).
// Both: lse and delta (Lm fp32 each) of the rows the block reads.
template <int D>
__global__ void __launch_bounds__(AM_WARPS * 32)
am_bwd_kernel(bf16 *dqkv, float *dkv32, const bf16 *dout, const bf16 *out, const float *lse, const bf16 *qkv,
              const int32_t *seq, size_t N, int H, int G, size_t ld, float scale, int Lm, int nch) {
    constexpr int LDD = D + 8, NK = D / 16;
    extern __shared__ __align__(128) unsigned char sm[];
    // The 2 nch blocks of a (sequence, head) are neighbours in the grid: they
    // run at about the same time and read the same rows, so that most of their
    // reads after the first hit L2. Within them the heaviest first (the key
    // chunk 0 and the last query chunk walk the most tiles).
#if AM_GROUPED
    int sh = (int)(blockIdx.x / (2 * nch)), p = (int)(blockIdx.x % (2 * nch));
#else   // the heaviest kind of block of every (sequence, head) first, then the next kind
    int sh = (int)(blockIdx.x % (gridDim.x / (2 * nch))), p = (int)(blockIdx.x / (gridDim.x / (2 * nch)));
#endif
    int s = sh / H, h = sh % H, role = p % 2 == 0, c = role ? p / 2 : nch - 1 - p / 2, kh = h / (H / G);
    int t0 = seq[s], L = seq[s + 1] - t0, r_0 = c * AM_ROWS;
    if (r_0 >= L) return;
    int nr = min(AM_ROWS, L - r_0), RA = min(AM_ROWS, Lm), nt = (L + 15) / 16;
    bf16 *A1 = (bf16 *)sm, *A2 = A1 + (size_t)RA * LDD, *B1 = A2 + (size_t)RA * LDD, *B2 = B1 + (size_t)Lm * LDD;
    float *ls = (float *)(B2 + (size_t)Lm * LDD), *dl = ls + Lm;
    size_t HD = (size_t)H * D;
    const bf16 *row0 = qkv + (size_t)t0 * ld, *q_src = row0 + (size_t)h * D, *k_src = row0 + (size_t)(H + kh) * D,
               *v_src = row0 + (size_t)(H + G + kh) * D, *o_src = dout + (size_t)t0 * HD + (size_t)h * D;
    // query rows [qr0, qr0 + nqr) are the ones whose lse, delta (and dO) this block reads.
    // Two copy groups: what the first AM_SPLIT rows of the walk need, then the
    // rest, so that the walk starts while the second group streams in.
    int qr0 = r_0, nqr;
    if (role == 0) {   // A1 = Q, A2 = dO (this chunk's queries); B1 = K, B2 = V (keys 0..r_0+nr)
        int kend = r_0 + nr, ka = min(kend, AM_SPLIT);
        nqr = nr;
        am_load<D>(A1, q_src + (size_t)r_0 * ld, ld, (nr + 15) & ~15, nr);
        am_load<D>(A2, o_src + (size_t)r_0 * HD, HD, (nr + 15) & ~15, nr);
        am_load<D>(B1, k_src, ld, (ka + 15) & ~15, ka);
        am_load<D>(B2, v_src, ld, (ka + 15) & ~15, ka);
        cp_async_commit();
        if (kend > AM_SPLIT) {
            int rows = ((kend + 15) & ~15) - AM_SPLIT;
            am_load<D>(B1 + (size_t)AM_SPLIT * LDD, k_src + (size_t)AM_SPLIT * ld, ld, rows, kend - AM_SPLIT);
            am_load<D>(B2 + (size_t)AM_SPLIT * LDD, v_src + (size_t)AM_SPLIT * ld, ld, rows, kend - AM_SPLIT);
        }
        cp_async_commit();
    } else {           // A1 = K, A2 = V (this chunk's keys); B1 = Q, B2 = dO (queries r_0..L)
        nqr = L - r_0;
        int qa_ = min(nqr, AM_SPLIT);
        am_load<D>(A1, k_src + (size_t)r_0 * ld, ld, (nr + 15) & ~15, nr);
        am_load<D>(A2, v_src + (size_t)r_0 * ld, ld, (nr + 15) & ~15, nr);
        am_load<D>(B1, q_src + (size_t)r_0 * ld, ld, (qa_ + 15) & ~15, qa_);
        am_load<D>(B2, o_src + (size_t)r_0 * HD, HD, (qa_ + 15) & ~15, qa_);
        cp_async_commit();
        if (nqr > AM_SPLIT) {
            int rows = ((nqr + 15) & ~15) - AM_SPLIT;
            am_load<D>(B1 + (size_t)AM_SPLIT * LDD, q_src + (size_t)(r_0 + AM_SPLIT) * ld, ld, rows, nqr - AM_SPLIT);
            am_load<D>(B2 + (size_t)AM_SPLIT * LDD, o_src + (size_t)(r_0 + AM_SPLIT) * HD, HD, rows, nqr - AM_SPLIT);
        }
        cp_async_commit();
    }
    // delta_i = dO_i . O_i over 16-byte pieces, PER threads a row, both read
    // from global memory (L2 for dO, which is being copied too) while the
    // copies are in flight.
    constexpr int PER = D / 8, IT = AM_MAXL * PER / (AM_WARPS * 32);
    int nq16 = (nqr + 15) & ~15;
    {
        uint4 ov[IT], gv[IT];
#pragma unroll
        for (int k = 0; k < IT; k++) {
            int x = threadIdx.x + k * AM_WARPS * 32, i = x / PER;
            ov[k] = gv[k] = make_uint4(0, 0, 0, 0);
            if (i < nqr) {
                size_t off = (size_t)(t0 + qr0 + i) * HD + (size_t)h * D + (x % PER) * 8;
                ov[k] = *(const uint4 *)(out + off);
                gv[k] = *(const uint4 *)(dout + off);
            }
        }
        for (int i = threadIdx.x; i < nq16; i += blockDim.x) ls[i] = i < nqr ? lse[(size_t)h * N + t0 + qr0 + i] : 0.0f;
#pragma unroll
        for (int k = 0; k < IT; k++) {
            int x = threadIdx.x + k * AM_WARPS * 32, i = x / PER;
            bf16x8 o, y;
            o.u = ov[k];
            y.u = gv[k];
            float d = 0.0f;
#pragma unroll
            for (int q = 0; q < 4; q++) d += bf(y.h[q].x) * bf(o.h[q].x) + bf(y.h[q].y) * bf(o.h[q].y);
#pragma unroll
            for (int w = PER / 2; w > 0; w >>= 1) d += __shfl_xor_sync(0xffffffffu, d, w);
            if (x % PER == 0 && i < nq16) dl[i] = d;
        }
    }
    cp_async_wait_1();
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int r0 = warp * 16, act = r0 < nr;   // idle warps stay for the barrier at the split
    if (role == 0) {
        int qb = act ? (r_0 + r0) / 16 : -1, i0 = r_0 + r0 + g, i1 = i0 + 8, nkb = (r_0 + nr + 15) / 16;
        // idle warps (r0 >= nr) stay for the barrier only: their rows may lie past
        // lse/delta (Lm < 64) and past A1
        float lse0 = 0.0f, lse1 = 0.0f, d0 = 0.0f, d1 = 0.0f;
        if (act) { lse0 = ls[r0 + g]; lse1 = ls[r0 + g + 8]; d0 = dl[r0 + g]; d1 = dl[r0 + g + 8]; }
        float dq[D / 8][4];
#pragma unroll
        for (int j = 0; j < D / 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;
        // this warp's Q and dO rows as A fragments, once: shared-memory bandwidth
        // (ldmatrix) rather than the tensor cores bounds these loops
        uint32_t qa[NK][4] = {}, oa[NK][4] = {};
        if (act)
#pragma unroll
            for (int kk = 0; kk < NK; kk++) {
                ldsm4(qa[kk], a_addr(A1, LDD, r0, kk * 16));
                ldsm4(oa[kk], a_addr(A2, LDD, r0, kk * 16));
            }
        for (int kb = 0; kb < nkb; kb++) {   // the same trip count in every warp: the barrier
            if (kb == AM_SPLIT / 16) {
                cp_async_wait_all();
                __syncthreads();
            }
            if (kb > qb) continue;
            float sc[2][4] = {}, dp[2][4] = {};
#pragma unroll
            for (int kk = 0; kk < NK; kk++) {
                uint32_t b[4];
                ldsm4(b, bn_addr(B1, LDD, kb * 16, kk * 16));
                mma16816(sc[0], qa[kk], b[0], b[1]);
                mma16816(sc[1], qa[kk], b[2], b[3]);
                ldsm4(b, bn_addr(B2, LDD, kb * 16, kk * 16));
                mma16816(dp[0], oa[kk], b[0], b[1]);
                mma16816(dp[1], oa[kk], b[2], b[3]);
            }
            // dS = P (dP - delta) * scale, P = exp(S scale - lse) as bf16; zero above the diagonal
            float v[2][4];
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int col = kb * 16 + j * 8 + 2 * t + e;
                    float p0 = col <= i0 && i0 < L ? rbf(__expf(sc[j][e] * scale - lse0)) : 0.0f;
                    float p1 = col <= i1 && i1 < L ? rbf(__expf(sc[j][2 + e] * scale - lse1)) : 0.0f;
                    v[j][e] = p0 * (dp[j][e] - d0) * scale;
                    v[j][2 + e] = p1 * (dp[j][2 + e] - d1) * scale;
                }
            uint32_t ds[4] = {pack_bf2(v[0][0], v[0][1]), pack_bf2(v[0][2], v[0][3]), pack_bf2(v[1][0], v[1][1]),
                              pack_bf2(v[1][2], v[1][3])};
#pragma unroll
            for (int dd = 0; dd < D / 16; dd++) {
                uint32_t b[4];
                ldsm4t(b, bk_addr(B1, LDD, kb * 16, dd * 16));
                mma16816(dq[2 * dd], ds, b[0], b[1]);
                mma16816(dq[2 * dd + 1], ds, b[2], b[3]);
            }
        }
        if (act) am_store_rows<D>(dq, A1 + (size_t)r0 * LDD, dqkv + (size_t)t0 * ld + (size_t)h * D, ld, r_0 + r0, L);
        return;
    }

    // role 1: this lane's key rows k0, k1 (C rows); query columns come from the walk
    int kb = (r_0 + r0) / 16, k0 = r_0 + r0 + g, k1 = k0 + 8;
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        dk[j][0] = dk[j][1] = dk[j][2] = dk[j][3] = 0.0f;
        dv[j][0] = dv[j][1] = dv[j][2] = dv[j][3] = 0.0f;
    }
    for (int qb = r_0 / 16; qb < nt; qb++) {   // the same trip count in every warp: the barrier
        if (qb == r_0 / 16 + AM_SPLIT / 16) {
            cp_async_wait_all();
            __syncthreads();
        }
        if (!act || qb < kb) continue;
        int qs = qb * 16 - r_0;   // the block's rows in B1, B2, ls, dl
        float st[2][4] = {}, dpt[2][4] = {};
#pragma unroll
        for (int kk = 0; kk < NK; kk++) {
            uint32_t a[4], b[4];
            ldsm4(a, a_addr(A1, LDD, r0, kk * 16));
            ldsm4(b, bn_addr(B1, LDD, qs, kk * 16));
            mma16816(st[0], a, b[0], b[1]);
            mma16816(st[1], a, b[2], b[3]);
            ldsm4(a, a_addr(A2, LDD, r0, kk * 16));
            ldsm4(b, bn_addr(B2, LDD, qs, kk * 16));
            mma16816(dpt[0], a, b[0], b[1]);
            mma16816(dpt[1], a, b[2], b[3]);
        }
        float pv[2][4], sv[2][4];
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int q = qb * 16 + j * 8 + 2 * t + e, qi = q - r_0;
                float lq = ls[qi], dq_ = dl[qi];
                float p0 = k0 <= q && q < L ? rbf(__expf(st[j][e] * scale - lq)) : 0.0f;
                float p1 = k1 <= q && q < L ? rbf(__expf(st[j][2 + e] * scale - lq)) : 0.0f;
                pv[j][e] = p0; pv[j][2 + e] = p1;
                sv[j][e] = p0 * (dpt[j][e] - dq_) * scale;
                sv[j][2 + e] = p1 * (dpt[j][2 + e] - dq_) * scale;
            }
        uint32_t pt[4] = {pack_bf2(pv[0][0], pv[0][1]), pack_bf2(pv[0][2], pv[0][3]), pack_bf2(pv[1][0], pv[1][1]),
                          pack_bf2(pv[1][2], pv[1][3])};
        uint32_t dst[4] = {pack_bf2(sv[0][0], sv[0][1]), pack_bf2(sv[0][2], sv[0][3]), pack_bf2(sv[1][0], sv[1][1]),
                           pack_bf2(sv[1][2], sv[1][3])};
#pragma unroll
        for (int dd = 0; dd < D / 16; dd++) {
            uint32_t b[4];
            ldsm4t(b, bk_addr(B2, LDD, qs, dd * 16));
            mma16816(dv[2 * dd], pt, b[0], b[1]);
            mma16816(dv[2 * dd + 1], pt, b[2], b[3]);
            ldsm4t(b, bk_addr(B1, LDD, qs, dd * 16));
            mma16816(dk[2 * dd], dst, b[0], b[1]);
            mma16816(dk[2 * dd + 1], dst, b[2], b[3]);
        }
    }
    if (!act) return;
    if (dkv32) {   // (N, 2, H, D) scratch: this query head's dK, then its dV
        float *dk32 = dkv32 + (size_t)t0 * 2 * HD + (size_t)h * D;
        am_store_rows32<D>(dk, dk32, 2 * HD, r_0 + r0, L);
        am_store_rows32<D>(dv, dk32 + HD, 2 * HD, r_0 + r0, L);
    } else {       // this warp's K and V rows are read by no other warp: they stage dK, dV
        am_store_rows<D>(dk, A1 + (size_t)r0 * LDD, dqkv + (size_t)t0 * ld + (size_t)(H + kh) * D, ld, r_0 + r0, L);
        am_store_rows<D>(dv, A2 + (size_t)r0 * LDD, dqkv + (size_t)t0 * ld + (size_t)(H + G + kh) * D, ld, r_0 + r0, L);
    }
}

static size_t am_lm(const att_shape *a) { return (a->max_len + 15) / 16 * 16; }
static size_t am_ra(size_t Lm) { return Lm < AM_ROWS ? Lm : AM_ROWS; }
static size_t am_fwd_smem(const att_shape *a) { return 3 * am_lm(a) * (a->D + 8) * 2; }
static size_t am_bwd_smem(const att_shape *a) {
    size_t Lm = am_lm(a);
    return (2 * am_ra(Lm) + 2 * Lm) * (a->D + 8) * 2 + 2 * Lm * 4;
}

int att_mma_ok(const att_shape *a, size_t max_smem) {
    return a->max_len > 0 && a->max_len <= AM_MAXL && (a->D == 64 || a->D == 128) && a->ld % 8 == 0 &&
           a->G > 0 && a->H % a->G == 0 && am_fwd_smem(a) <= max_smem && am_bwd_smem(a) <= max_smem;
}

// The shared-memory opt-in is raised once per kernel to what the largest shape needs.
template <typename K>
static void am_optin(K kernel, size_t bytes, size_t *done) {
    if (bytes > 48 * 1024 && *done < bytes) {
        CUDA_CHECK(cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        // all of L1 as shared memory: two blocks per SM need about 210 KiB
        CUDA_CHECK(cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                        cudaSharedmemCarveoutMaxShared));
        *done = bytes;
    }
}

void att_mma_fwd(bf16 *out, float *lse, const bf16 *qkv, const att_shape *a, cudaStream_t st) {
    static size_t opted[2];
    int Lm = (int)am_lm(a);
    size_t bytes = am_fwd_smem(a);
    unsigned grid = (unsigned)(a->n_seq * a->H);
    float scale = (float)(1.0 / sqrt((double)a->D));
    if (a->D == 128) {
        am_optin(am_fwd_kernel<128>, bytes, &opted[0]);
        am_fwd_kernel<128><<<grid, AF_WARPS * 32, bytes, st>>>(out, lse, qkv, a->seq, a->N, (int)a->H, (int)a->G, a->ld,
                                                               scale, Lm);
    } else {
        am_optin(am_fwd_kernel<64>, bytes, &opted[1]);
        am_fwd_kernel<64><<<grid, AF_WARPS * 32, bytes, st>>>(out, lse, qkv, a->seq, a->N, (int)a->H, (int)a->G, a->ld,
                                                              scale, Lm);
    }
    LAUNCH_CHECK();
}

void att_mma_bwd(bf16 *dqkv, float *dkv32, const bf16 *dout, const bf16 *out, const float *lse, const bf16 *qkv,
                 const att_shape *a, cudaStream_t st) {
    static size_t opted[2];
    int Lm = (int)am_lm(a), nch = (Lm + AM_ROWS - 1) / AM_ROWS;
    size_t bytes = am_bwd_smem(a);
    unsigned grid = (unsigned)(a->n_seq * a->H * 2 * nch);
    float scale = (float)(1.0 / sqrt((double)a->D));
    if (a->D == 128) {
        am_optin(am_bwd_kernel<128>, bytes, &opted[0]);
        am_bwd_kernel<128><<<grid, AM_WARPS * 32, bytes, st>>>(dqkv, dkv32, dout, out, lse, qkv, a->seq, a->N, (int)a->H,
                                                               (int)a->G, a->ld, scale, Lm, nch);
    } else {
        am_optin(am_bwd_kernel<64>, bytes, &opted[1]);
        am_bwd_kernel<64><<<grid, AM_WARPS * 32, bytes, st>>>(dqkv, dkv32, dout, out, lse, qkv, a->seq, a->N, (int)a->H,
                                                              (int)a->G, a->ld, scale, Lm, nch);
    }
    LAUNCH_CHECK();
}

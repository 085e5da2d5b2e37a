// tests/gpu/test_kernels.cu: every CUDA kernel against a plain CPU version
// in double precision, on fresh random inputs (bf16-representable), with the
// tolerance bf16 arithmetic allows: ||gpu - ref|| / ||ref|| <= tol.
// Prints one line per check and "N passed, N failed"; exit 1 on a failure.
#include "../../kernels/common.cuh"
#include "../../kernels/gemm.h"
#include "../../kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

static int passed, failed;
static uint64_t rs = 0x1234567ULL;
static float frand() {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static uint16_t h2b(float x) {   // host float -> bf16 bits, round to nearest even
    uint32_t u; memcpy(&u, &x, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float b2h(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }

struct bbuf {   // a bf16 device buffer with its host float mirror (the exact bf16 values)
    std::vector<float> h; uint16_t *d = nullptr; size_t n;
    explicit bbuf(size_t n_, float scale = 1.0f, float base = 0.0f) : h(n_), n(n_) {
        std::vector<uint16_t> t(n);
        for (size_t i = 0; i < n; i++) { t[i] = h2b(base + scale * frand()); h[i] = b2h(t[i]); }
        CUDA_CHECK(cudaMalloc(&d, n * 2));
        CUDA_CHECK(cudaMemcpy(d, t.data(), n * 2, cudaMemcpyHostToDevice));
    }
    std::vector<float> get() const {
        std::vector<uint16_t> t(n); std::vector<float> f(n);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(t.data(), d, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) f[i] = b2h(t[i]);
        return f;
    }
    void poison() { CUDA_CHECK(cudaMemset(d, 0xff, n * 2)); }   // NaN bits: unwritten elements show
};
struct fbuf {
    std::vector<float> h; float *d = nullptr; size_t n;
    explicit fbuf(size_t n_, float scale = 1.0f, float base = 0.0f) : h(n_), n(n_) {
        for (size_t i = 0; i < n; i++) h[i] = base + scale * frand();
        CUDA_CHECK(cudaMalloc(&d, n * 4));
        CUDA_CHECK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
    }
    std::vector<float> get() const {
        std::vector<float> f(n);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(f.data(), d, n * 4, cudaMemcpyDeviceToHost));
        return f;
    }
};

static void check(const char *what, const std::vector<float> &got, const std::vector<double> &ref, double tol) {
    double num = 0, den = 0;
    int nan = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!isfinite(got[i])) nan++;
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    int ok = !nan && rel <= tol;
    printf("%s %-44s rel err %.2e (tol %.0e)%s\n", ok ? "ok    " : "FAILED", what, rel, tol, nan ? " non-finite values" : "");
    ok ? passed++ : failed++;
}

// y (M, O) = x W^T (+ res), in double.
static std::vector<double> ref_linear(const std::vector<float> &x, const std::vector<float> &W,
                                      const std::vector<float> *res, size_t M, size_t O, size_t I) {
    std::vector<double> y(M * O);
    for (size_t m = 0; m < M; m++)
        for (size_t o = 0; o < O; o++) {
            double a = res ? (*res)[m * O + o] : 0.0;
            for (size_t i = 0; i < I; i++) a += (double)x[m * I + i] * W[o * I + i];
            y[m * O + o] = a;
        }
    return y;
}

static void test_gemm(gemm_ctx *g) {
    size_t M = 77, O = 96, I = 136;
    bbuf x(M * I), W(O * I, 0.2f), bias(O, 0.5f), y(M * O);
    y.poison();
    gemm_linear_fwd(g, y.d, O, x.d, I, W.d, I, M, O, I, bias.d, 1.0f, 0.0f);
    std::vector<double> ref(M * O);
    for (size_t i = 0; i < M; i++)
        for (size_t o = 0; o < O; o++) {
            double a = bias.h[o];
            for (size_t k = 0; k < I; k++) a += (double)x.h[i * I + k] * W.h[o * I + k];
            ref[i * O + o] = a;
        }
    check("gemm y = x W^T + b", y.get(), ref, 8e-3);
    // accumulate into a column slice: y[:, 10:42] += 0.5 * t B^T
    size_t r = 8;
    bbuf t(M * r), B(32 * r);
    std::vector<float> y0 = y.get();
    gemm_linear_fwd(g, y.d + 10, O, t.d, r, B.d, r, M, 32, r, nullptr, 0.5f, 1.0f);
    for (size_t i = 0; i < M; i++)
        for (size_t o = 0; o < O; o++) {
            double a = y0[i * O + o];
            if (o >= 10 && o < 42) for (size_t k = 0; k < r; k++) a += 0.5 * t.h[i * r + k] * B.h[(o - 10) * r + k];
            ref[i * O + o] = a;
        }
    check("gemm slice += s t B^T (ldc > n)", y.get(), ref, 8e-3);
    bbuf dy(M * O), dx(M * I);
    dx.poison();
    gemm_linear_dx(g, dx.d, I, dy.d, O, W.d, I, M, O, I, 1.0f, 0.0f);
    std::vector<double> rdx(M * I);
    for (size_t i = 0; i < M; i++)
        for (size_t k = 0; k < I; k++) {
            double a = 0;
            for (size_t o = 0; o < O; o++) a += (double)dy.h[i * O + o] * W.h[o * I + k];
            rdx[i * I + k] = a;
        }
    check("gemm dx = dy W", dx.get(), rdx, 8e-3);
    {   // y2 = x W^T + res (C input distinct from the output)
        bbuf res(M * O), y2(M * O);
        gemm_linear_fwd_res(g, y2.d, res.d, O, x.d, I, W.d, I, M, O, I);
        check("gemm y = x W^T + res (C input apart from D)", y2.get(), ref_linear(x.h, W.h, &res.h, M, O, I), 8e-3);
    }
    {   // token counts above 256 share the algorithm of their 64-row bucket: 300 runs 320's
        size_t M3 = 300, O3 = 256, I3 = 192;
        bbuf x3(M3 * I3), W3(O3 * I3, 0.2f), y3(M3 * O3);
        bbuf x4(320 * I3), y4(320 * O3);
        gemm_linear_fwd(g, y4.d, O3, x4.d, I3, W3.d, I3, 320, O3, I3, nullptr, 1.0f, 0.0f);   // the bucket's own
        y3.poison();
        gemm_linear_fwd(g, y3.d, O3, x3.d, I3, W3.d, I3, M3, O3, I3, nullptr, 1.0f, 0.0f);
        check("gemm y = x W^T, 300 rows on the 320-row bucket's algorithm", y3.get(),
              ref_linear(x3.h, W3.h, nullptr, M3, O3, I3), 8e-3);
    }
    fbuf dW(O * I, 1.0f);
    std::vector<float> w0 = dW.h;
    gemm_linear_dw(g, dW.d, dy.d, O, x.d, I, M, O, I, 0.25f, 1.0f);
    std::vector<double> rdw(O * I);
    for (size_t o = 0; o < O; o++)
        for (size_t k = 0; k < I; k++) {
            double a = 0;
            for (size_t i = 0; i < M; i++) a += (double)dy.h[i * O + o] * x.h[i * I + k];
            rdw[o * I + k] = w0[o * I + k] + 0.25 * a;
        }
    check("gemm dW += s dy^T x (fp32 out)", dW.get(), rdw, 1e-5);
}

static void test_rmsnorm(size_t C) {   // C % 8 == 0: the 16-byte vector kernels; else the scalar ones
    size_t N = 19;
    bbuf x(N * C), w(C, 0.2f, 1.0f), y(N * C), dy(N * C), dx(N * C);
    fbuf rstd(N);
    y.poison();
    k_rmsnorm_fwd(y.d, rstd.d, x.d, w.d, N, C, 1e-6f, 0);
    std::vector<double> ry(N * C), rdx(N * C);
    for (size_t i = 0; i < N; i++) {
        double ss = 0;
        for (size_t j = 0; j < C; j++) ss += (double)x.h[i * C + j] * x.h[i * C + j];
        double r = 1.0 / sqrt(ss / C + 1e-6), dot = 0;
        for (size_t j = 0; j < C; j++) { ry[i * C + j] = w.h[j] * x.h[i * C + j] * r; dot += dy.h[i * C + j] * w.h[j] * x.h[i * C + j] * r; }
        dot /= C;
        for (size_t j = 0; j < C; j++) rdx[i * C + j] = x.h[i * C + j] /* accumulated onto */ + r * (dy.h[i * C + j] * w.h[j] - x.h[i * C + j] * r * dot);
    }
    char name[64];
    snprintf(name, sizeof name, "rmsnorm forward, C=%zu", C);
    check(name, y.get(), ry, 8e-3);
    CUDA_CHECK(cudaMemcpy(dx.d, x.d, N * C * 2, cudaMemcpyDeviceToDevice));
    k_rmsnorm_bwd(dx.d, dy.d, x.d, rstd.d, w.d, N, C, 1, 0);
    snprintf(name, sizeof name, "rmsnorm backward (accumulating), C=%zu", C);
    check(name, dx.get(), rdx, 8e-3);
}

// ld = 70, col0 = 6: the scalar kernel; D = 128, ld and col0 multiples of 8: the 16-byte one.
static void test_rope(size_t N, size_t H, size_t D, size_t ld, size_t col0) {
    bbuf x(N * ld);
    std::vector<int32_t> pos(N);
    for (size_t i = 0; i < N; i++) pos[i] = (int32_t)(i % 9);
    int32_t *dpos; float *dinv;
    CUDA_CHECK(cudaMalloc(&dpos, N * 4)); CUDA_CHECK(cudaMemcpy(dpos, pos.data(), N * 4, cudaMemcpyHostToDevice));
    std::vector<float> inv(D / 2);
    for (size_t i = 0; i < D / 2; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)D);
    CUDA_CHECK(cudaMalloc(&dinv, D * 2)); CUDA_CHECK(cudaMemcpy(dinv, inv.data(), D * 2, cudaMemcpyHostToDevice));
    std::vector<double> ref(x.h.begin(), x.h.end());
    for (size_t t = 0; t < N; t++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < D / 2; i++) {
                double f = (double)pos[t] * inv[i], c = cos(f), s = sin(f);
                size_t a = t * ld + col0 + h * D + i, b = a + D / 2;
                ref[a] = x.h[a] * c - x.h[b] * s;
                ref[b] = x.h[b] * c + x.h[a] * s;
            }
    k_rope(x.d, ld, col0, H, D, dpos, dinv, N, 0, 0);
    char name[80];
    snprintf(name, sizeof name, "rope forward (strided heads, D=%zu, ld=%zu)", D, ld);
    check(name, x.get(), ref, 1e-2);
    std::vector<double> back(x.h.begin(), x.h.end());
    k_rope(x.d, ld, col0, H, D, dpos, dinv, N, 1, 0);
    snprintf(name, sizeof name, "rope inverse undoes forward (D=%zu, ld=%zu)", D, ld);
    check(name, x.get(), back, 1.5e-2);
    cudaFree(dpos); cudaFree(dinv);
}

static gemm_ctx *G_CTX;
// Packed sequences of the given lengths, H = 4 query heads over G kv heads.
static void test_attention_lens(size_t D, size_t G, const std::vector<size_t> &lens) {
    std::vector<int32_t> seq = {0};
    size_t maxL = 0;
    for (size_t L : lens) { seq.push_back(seq.back() + (int32_t)L); maxL = std::max(maxL, L); }
    size_t ns = lens.size(), N = (size_t)seq.back(), H = 4, ld = (H + 2 * G) * D + 8, last = maxL;
    std::vector<int32_t> qb;
    for (size_t s = 0; s < ns; s++)
        for (int q0 = 0; q0 < seq[s + 1] - seq[s]; q0 += ATT_BQ) { qb.push_back((int32_t)s); qb.push_back(q0); }
    int32_t *dseq, *dqb;
    CUDA_CHECK(cudaMalloc(&dseq, seq.size() * 4)); CUDA_CHECK(cudaMemcpy(dseq, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&dqb, qb.size() * 4)); CUDA_CHECK(cudaMemcpy(dqb, qb.data(), qb.size() * 4, cudaMemcpyHostToDevice));
    att_shape a = {ns, N, H, G, D, ld, dseq, dqb, qb.size() / 2, maxL};
    bbuf qkv(N * ld), out(N * H * D), dout(N * H * D), dqkv(N * ld);
    fbuf lse(H * N), delta(H * N);
    out.poison();
    k_attention_fwd(out.d, lse.d, qkv.d, &a, 0);
    double scale = 1.0 / sqrt((double)D);
    std::vector<double> ro(N * H * D, 0), rdq(N * ld, 0);
    for (size_t s = 0; s < ns; s++) {
        size_t t0 = seq[s], L = seq[s + 1] - t0;
        for (size_t h = 0; h < H; h++) {
            size_t kh = h / (H / G);
            std::vector<double> P(L * L, 0.0);
            for (size_t i = 0; i < L; i++) {
                double mx = -1e300;
                for (size_t j = 0; j <= i; j++) {
                    double d = 0;
                    for (size_t e = 0; e < D; e++) d += qkv.h[(t0 + i) * ld + h * D + e] * qkv.h[(t0 + j) * ld + H * D + kh * D + e];
                    P[i * L + j] = d * scale; mx = fmax(mx, d * scale);
                }
                double sum = 0;
                for (size_t j = 0; j <= i; j++) { P[i * L + j] = exp(P[i * L + j] - mx); sum += P[i * L + j]; }
                for (size_t j = 0; j <= i; j++) P[i * L + j] /= sum;
                for (size_t e = 0; e < D; e++) {
                    double o = 0;
                    for (size_t j = 0; j <= i; j++) o += P[i * L + j] * qkv.h[(t0 + j) * ld + (H + G) * D + kh * D + e];
                    ro[(t0 + i) * H * D + h * D + e] = o;
                }
            }
            // backward, with the bf16 output the kernel produced feeding delta as it does on the GPU
            for (size_t i = 0; i < L; i++) {
                double dl = 0;
                for (size_t e = 0; e < D; e++) dl += dout.h[(t0 + i) * H * D + h * D + e] * ro[(t0 + i) * H * D + h * D + e];
                for (size_t j = 0; j <= i; j++) {
                    double dp = 0;
                    for (size_t e = 0; e < D; e++) dp += dout.h[(t0 + i) * H * D + h * D + e] * qkv.h[(t0 + j) * ld + (H + G) * D + kh * D + e];
                    double ds = P[i * L + j] * (dp - dl) * scale;
                    for (size_t e = 0; e < D; e++) {
                        rdq[(t0 + i) * ld + h * D + e] += ds * qkv.h[(t0 + j) * ld + H * D + kh * D + e];
                        rdq[(t0 + j) * ld + H * D + kh * D + e] += ds * qkv.h[(t0 + i) * ld + h * D + e];
                        rdq[(t0 + j) * ld + (H + G) * D + kh * D + e] += P[i * L + j] * dout.h[(t0 + i) * H * D + h * D + e];
                    }
                }
            }
        }
    }
    char name[96];
    snprintf(name, sizeof name, "attention forward, varlen, H/G=%zu, L<=%zu, D=%zu", H / G, last, D);
    check(name, out.get(), ro, 8e-3);
    dqkv.poison();
    k_attention_bwd(dqkv.d, delta.d, dout.d, out.d, lse.d, qkv.d, &a, 0);
    std::vector<float> got = dqkv.get();
    // Compare only the q/k/v columns (the padding columns of ld are not outputs).
    std::vector<float> g2; std::vector<double> r2;
    for (size_t t = 0; t < N; t++) for (size_t c = 0; c < (H + 2 * G) * D; c++) { g2.push_back(got[t * ld + c]); r2.push_back(rdq[t * ld + c]); }
    snprintf(name, sizeof name, "attention backward dq dk dv, H/G=%zu, L<=%zu, D=%zu", H / G, last, D);
    check(name, g2, r2, 2e-2);
    // The batched-GEMM path on the same inputs.
    size_t Lp = 136;
    void *ws; int32_t *ts;
    CUDA_CHECK(cudaMalloc(&ws, att_gemm_ws_bytes(ns, H, Lp, D)));
    CUDA_CHECK(cudaMalloc(&ts, N * 4));
    out.poison();
    att_gemm_fwd(G_CTX, out.d, lse.d, qkv.d, &a, Lp, ws, ts, 0);
    snprintf(name, sizeof name, "attention forward (batched GEMM), D=%zu", D);
    check(name, out.get(), ro, 8e-3);
    dqkv.poison();
    att_gemm_bwd(G_CTX, dqkv.d, delta.d, dout.d, out.d, lse.d, qkv.d, &a, Lp, ws, ts, 0);
    got = dqkv.get();
    g2.clear();
    for (size_t t = 0; t < N; t++) for (size_t c = 0; c < (H + 2 * G) * D; c++) g2.push_back(got[t * ld + c]);
    snprintf(name, sizeof name, "attention backward (batched GEMM), H/G=%zu, L<=%zu, D=%zu", H / G, last, D);
    check(name, g2, r2, 2e-2);
    cudaFree(ws); cudaFree(ts);
    // The fused short-sequence kernels, where the batch qualifies.
    if (att_short_ok(&a)) {
        float *scr = nullptr;
        if (att_short_scratch_bytes(&a)) CUDA_CHECK(cudaMalloc(&scr, att_short_scratch_bytes(&a)));
        out.poison();
        att_short_fwd(out.d, lse.d, qkv.d, &a, 0);
        snprintf(name, sizeof name, "attention forward (short, shared memory), H/G=%zu, L<=%zu, D=%zu", H / G, last, D);
        check(name, out.get(), ro, 8e-3);
        dqkv.poison();
        att_short_bwd(dqkv.d, dout.d, out.d, lse.d, qkv.d, &a, scr, 0);
        got = dqkv.get();
        g2.clear();
        for (size_t t = 0; t < N; t++) for (size_t c = 0; c < (H + 2 * G) * D; c++) g2.push_back(got[t * ld + c]);
        snprintf(name, sizeof name, "attention backward (short, shared memory), H/G=%zu, L<=%zu, D=%zu", H / G, last, D);
        check(name, g2, r2, 2e-2);
        // no atomics: a second run gives the same bits
        dqkv.poison();
        att_short_bwd(dqkv.d, dout.d, out.d, lse.d, qkv.d, &a, scr, 0);
        std::vector<float> again = dqkv.get();
        snprintf(name, sizeof name, "attention backward (short) bit-reproducible, H/G=%zu, L<=%zu, D=%zu", H / G, last, D);
        check(name, {memcmp(again.data(), got.data(), got.size() * sizeof(float)) ? 1.0f : 0.0f}, {0.0}, 0.0);
        if (scr) cudaFree(scr);
    } else if (last <= 128) {
        snprintf(name, sizeof name, "short attention takes L<=%zu, D=%zu", last, D);
        check(name, {1.0f}, {0.0}, 0.0);   // must qualify: fail loudly
    }
    cudaFree(dseq); cudaFree(dqb);
}

// Three sequences of 5, 70 (17 when last < 70) and `last` tokens (130 crosses the
// 64-token blocks and exceeds the short kernels' 128).
static void test_attention(size_t D, size_t last, size_t G) {
    test_attention_lens(D, G, {5, last >= 70 ? (size_t)70 : (size_t)17, last});
}

// F = 150: the bf16-pair kernels; F = 152: the 16-byte ones.
static void test_swiglu(size_t N, size_t F) {
    bbuf gu(N * 2 * F, 3.0f), act(N * F), dact(N * F), dgu(N * 2 * F);
    act.poison();
    k_swiglu_fwd(act.d, gu.d, N, F, 0);
    std::vector<double> ra(N * F), rd(N * 2 * F);
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < F; j++) {
            double g = gu.h[i * 2 * F + j], u = gu.h[i * 2 * F + F + j], sg = 1 / (1 + exp(-g)), d = dact.h[i * F + j];
            ra[i * F + j] = g * sg * u;
            rd[i * 2 * F + j] = d * u * sg * (1 + g * (1 - sg));
            rd[i * 2 * F + F + j] = d * g * sg;
        }
    char name[64];
    snprintf(name, sizeof name, "swiglu forward (F=%zu)", F);
    check(name, act.get(), ra, 8e-3);
    dgu.poison();
    k_swiglu_bwd(dgu.d, dact.d, gu.d, N, F, 0);
    snprintf(name, sizeof name, "swiglu backward (F=%zu)", F);
    check(name, dgu.get(), rd, 8e-3);
}

static void test_xent() {
    size_t n = 9, V = 5000;
    bbuf z(n * V, 4.0f);
    std::vector<int32_t> tg(n);
    for (size_t i = 0; i < n; i++) tg[i] = (int32_t)((i * 977) % V);
    int32_t *dt; CUDA_CHECK(cudaMalloc(&dt, n * 4)); CUDA_CHECK(cudaMemcpy(dt, tg.data(), n * 4, cudaMemcpyHostToDevice));
    fbuf loss(n), sum(1);
    std::vector<double> rl(n), rg(n * V);
    float inv = 1.0f / 7;
    for (size_t i = 0; i < n; i++) {
        double mx = -1e300, s = 0;
        for (size_t v = 0; v < V; v++) mx = fmax(mx, z.h[i * V + v]);
        for (size_t v = 0; v < V; v++) s += exp(z.h[i * V + v] - mx);
        double lse = mx + log(s);
        rl[i] = lse - z.h[i * V + tg[i]];
        for (size_t v = 0; v < V; v++) rg[i * V + v] = (exp(z.h[i * V + v] - lse) - (v == (size_t)tg[i])) * inv;
    }
    k_xent_fwd_bwd(z.d, loss.d, dt, n, V, inv, 1, 0);
    check("cross-entropy loss per row", loss.get(), rl, 1e-5);
    check("cross-entropy gradient", z.get(), rg, 1e-2);
    k_sum(sum.d, loss.d, n, 0);
    double tot = 0; for (double x : rl) tot += x;
    check("deterministic sum", sum.get(), std::vector<double>{tot}, 1e-5);
    cudaFree(dt);
}

static void test_adamw() {
    size_t n = 3000;
    fbuf p(n), g(n), m(n, 0.01f), v(n, 0.001f, 0.002f);
    std::vector<double> rp(n);
    float clip = 0.7f, decay = 1 - 1e-4f * 0.01f, w1 = 0.1f, b2 = 0.999f, w2 = 0.001f, ss = 1e-3f, bc2 = 0.05f, eps = 1e-8f;
    for (size_t i = 0; i < n; i++) {
        double gi = g.h[i] * clip, pi = p.h[i] * decay, mi = m.h[i] + w1 * (gi - m.h[i]), vi = v.h[i] * b2 + w2 * gi * gi;
        rp[i] = pi - ss * mi / (sqrt(vi) / bc2 + eps);
    }
    k_adamw(p.d, g.d, m.d, v.d, n, clip, decay, w1, b2, w2, ss, bc2, eps, 0);
    check("adamw parameters", p.get(), rp, 1e-6);
    std::vector<size_t> off = {0, 1000, 1001, 3000};
    size_t *doff; CUDA_CHECK(cudaMalloc(&doff, off.size() * sizeof(size_t)));
    CUDA_CHECK(cudaMemcpy(doff, off.data(), off.size() * sizeof(size_t), cudaMemcpyHostToDevice));
    fbuf ssq(3);
    k_sumsq_per_tensor(ssq.d, g.d, doff, 3, 0);
    std::vector<double> r(3, 0);
    for (size_t t = 0; t < 3; t++) for (size_t i = off[t]; i < off[t + 1]; i++) r[t] += (double)g.h[i] * g.h[i];
    check("per-tensor sums of squares", ssq.get(), r, 1e-5);
    cudaFree(doff);
}

static uint64_t hmix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// The fused LoRA input kernels against plain loops with the CPU reference's mask.
// (I = 300 and rows of 300: the bf16x2 kernels, not the 16-byte ones.)
static void test_lora(float p) {
    size_t N = 37, I = 300, r = 8;
    uint64_t k = lora_mask_key(123, 2, 5);
    uint64_t k64 = hmix(123 ^ hmix((2u << 8) | 5u));
    if (k != (uint32_t)(k64 ^ (k64 >> 32))) { printf("FAILED lora_mask_key differs from the CPU derivation\n"); failed++; }
    float scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    std::vector<float> mask(N * I);
    for (size_t i = 0; i < N * I; i++) {
        uint32_t h = ((uint32_t)i * 0x9e3779b1u) ^ (uint32_t)k;
        h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
        float u = (float)(h >> 8) * (1.0f / 16777216.0f);
        mask[i] = u < p ? 0.0f : scale;
    }
    bbuf x(N * I), A(r * I, 0.1f), t(N * r), dt(N * r), dx(N * I);
    fbuf dA(r * I, 0.5f);
    std::vector<float> dA0 = dA.h;
    float *part; CUDA_CHECK(cudaMalloc(&part, lora_da_ws_floats(N, r, I) * 4));
    t.poison();
    k_lora_in(t.d, x.d, A.d, N, I, r, k, p, 0);
    std::vector<double> rt(N * r, 0), rda(r * I), rdx(N * I);
    for (size_t n = 0; n < N; n++)
        for (size_t q = 0; q < r; q++)
            for (size_t i = 0; i < I; i++) rt[n * r + q] += (double)mask[n * I + i] * x.h[n * I + i] * A.h[q * I + i];
    char name[80];
    snprintf(name, sizeof name, "lora: dropout(x) A^T, p=%.1f", p);
    check(name, t.get(), rt, 8e-3);
    k_lora_da(dA.d, part, dt.d, x.d, N, I, r, k, p, 0);
    for (size_t q = 0; q < r; q++)
        for (size_t i = 0; i < I; i++) {
            double a = dA0[q * I + i];
            for (size_t n = 0; n < N; n++) a += (double)dt.h[n * r + q] * mask[n * I + i] * x.h[n * I + i];
            rda[q * I + i] = a;
        }
    snprintf(name, sizeof name, "lora: dA += dt^T dropout(x), p=%.1f", p);
    check(name, dA.get(), rda, 1e-5);
    std::vector<float> dx0 = dx.h;
    k_lora_dx(dx.d, dt.d, A.d, N, I, r, k, p, 0);
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < I; i++) {
            double g = 0;
            for (size_t q = 0; q < r; q++) g += (double)dt.h[n * r + q] * A.h[q * I + i];
            rdx[n * I + i] = dx0[n * I + i] + mask[n * I + i] * g;
        }
    snprintf(name, sizeof name, "lora: dx += dropout'(dt A), p=%.1f", p);
    check(name, dx.get(), rdx, 8e-3);
    // The B side, on columns [c0, c0 + O) of rows of stride ld (q/k/v inside the qkv buffer).
    size_t O = 250, ld = 300, c0 = 40;
    float s = 0.7f;
    bbuf B(O * r, 0.2f), y(N * ld), dy(N * ld);
    fbuf dB(O * r, 0.3f);
    std::vector<float> y0 = y.h, dB0 = dB.h, tv = t.get();   // t as k_lora_in left it
    k_lora_out(y.d + c0, ld, t.d, B.d, N, O, r, s, 0);
    std::vector<double> ry(y0.begin(), y0.end()), rdt(N * r), rdb(O * r);
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < O; o++) {
            double a = 0;
            for (size_t q = 0; q < r; q++) a += (double)tv[n * r + q] * B.h[o * r + q];
            ry[n * ld + c0 + o] += s * a;
        }
    check("lora: y += s t B^T (strided rows)", y.get(), ry, 8e-3);
    dt.poison();
    k_lora_dt(dt.d, dy.d + c0, ld, B.d, N, O, r, s, 0);
    for (size_t n = 0; n < N; n++)
        for (size_t q = 0; q < r; q++) {
            double a = 0;
            for (size_t o = 0; o < O; o++) a += (double)dy.h[n * ld + c0 + o] * B.h[o * r + q];
            rdt[n * r + q] = s * a;
        }
    check("lora: dt = s dy B (strided rows)", dt.get(), rdt, 8e-3);
    k_lora_db(dB.d, part, t.d, dy.d + c0, ld, N, O, r, s, 0);
    for (size_t o = 0; o < O; o++)
        for (size_t q = 0; q < r; q++) {
            double a = 0;
            for (size_t n = 0; n < N; n++) a += (double)dy.h[n * ld + c0 + o] * tv[n * r + q];
            rdb[o * r + q] = dB0[o * r + q] + s * a;
        }
    check("lora: dB += s dy^T t (strided rows)", dB.get(), rdb, 1e-5);
    cudaFree(part);
}

// A group of modules sharing one input (q, k, v): one kernel per pass must
// equal each module on its own (its own mask key), and dx the sum of them.
static void test_lora_group(int G, size_t r, float p, size_t N = 41, size_t I = 296) {
    float scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    bbuf x(N * I), dx(N * I);
    std::vector<bbuf *> A, t, dt;
    std::vector<fbuf *> dA;
    std::vector<std::vector<float>> mask(G, std::vector<float>(N * I));
    lora_group gr;
    memset(&gr, 0, sizeof gr);
    gr.g = G;
    for (int g = 0; g < G; g++) {
        A.push_back(new bbuf(r * I, 0.1f)); t.push_back(new bbuf(N * r)); dt.push_back(new bbuf(N * r));
        dA.push_back(new fbuf(r * I, 0.5f));
        uint64_t k = lora_mask_key(77, 3, g);
        for (size_t i = 0; i < N * I; i++) {
            uint32_t h = ((uint32_t)i * 0x9e3779b1u) ^ (uint32_t)k;
            h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16;
            float u = (float)(h >> 8) * (1.0f / 16777216.0f);
            mask[g][i] = u < p ? 0.0f : scale;
        }
        t[g]->poison();
        gr.w[g] = A[g]->d; gr.t[g] = t[g]->d; gr.dw[g] = dA[g]->d; gr.k[g] = k;
    }
    char name[96];
    k_lora_in_group(&gr, x.d, N, I, r, p, 0);
    for (int g = 0; g < G; g++) {
        std::vector<double> rt(N * r, 0);
        for (size_t n = 0; n < N; n++)
            for (size_t q = 0; q < r; q++)
                for (size_t i = 0; i < I; i++)
                    rt[n * r + q] += (double)mask[g][n * I + i] * x.h[n * I + i] * A[g]->h[q * I + i];
        snprintf(name, sizeof name, "lora group of %d, r=%zu, p=%.1f, %zux%zu: module %d t = dropout(x) A^T", G, r, p, N, I, g);
        check(name, t[g]->get(), rt, 8e-3);
    }
    // da and dx read the group's t as dt
    for (int g = 0; g < G; g++) gr.t[g] = dt[g]->d;
    float *part; CUDA_CHECK(cudaMalloc(&part, G * lora_da_ws_floats(N, r, I) * 4));
    std::vector<std::vector<float>> dA0;
    for (int g = 0; g < G; g++) dA0.push_back(dA[g]->h);
    k_lora_da_group(&gr, part, x.d, N, I, r, p, 0);
    for (int g = 0; g < G; g++) {
        std::vector<double> rda(r * I);
        for (size_t q = 0; q < r; q++)
            for (size_t i = 0; i < I; i++) {
                double a = dA0[g][q * I + i];
                for (size_t n = 0; n < N; n++) a += (double)dt[g]->h[n * r + q] * mask[g][n * I + i] * x.h[n * I + i];
                rda[q * I + i] = a;
            }
        snprintf(name, sizeof name, "lora group of %d, r=%zu, p=%.1f, %zux%zu: module %d dA += dt^T dropout(x)", G, r, p, N, I, g);
        check(name, dA[g]->get(), rda, 1e-5);
    }
    std::vector<float> dx0 = dx.h;
    k_lora_dx_group(dx.d, &gr, N, I, r, p, 0);
    std::vector<double> rdx(N * I);
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < I; i++) {
            double v = dx0[n * I + i];
            for (int g = 0; g < G; g++) {
                double a = 0;
                for (size_t q = 0; q < r; q++) a += (double)dt[g]->h[n * r + q] * A[g]->h[q * I + i];
                v += mask[g][n * I + i] * a;
            }
            rdx[n * I + i] = v;
        }
    snprintf(name, sizeof name, "lora group of %d, r=%zu, p=%.1f, %zux%zu: dx += sum dropout'(dt A)", G, r, p, N, I);
    check(name, dx.get(), rdx, 8e-3);
    cudaFree(part);
    for (int g = 0; g < G; g++) { delete A[g]; delete t[g]; delete dt[g]; delete dA[g]; }
}

// The B side of a group in one launch per pass (q, k, v of different widths,
// as with grouped-query attention), against plain loops.
static void test_lora_batch(size_t r) {
    size_t N = 45, ld = 704, G = 3, O[3] = {320, 120, 120}, col[3] = {0, 320, 440};   // 16-byte rows: the v8 kernels
    float s = 0.6f;
    bbuf y(N * ld), dy(N * ld);
    std::vector<bbuf *> B, t, dt;
    std::vector<fbuf *> dB;
    lora_group gr;
    memset(&gr, 0, sizeof gr);
    gr.g = (int)G; gr.ld = ld;
    for (size_t g = 0; g < G; g++) {
        B.push_back(new bbuf(O[g] * r, 0.2f)); t.push_back(new bbuf(N * r)); dt.push_back(new bbuf(N * r));
        dB.push_back(new fbuf(O[g] * r, 0.3f));
        gr.w[g] = B[g]->d; gr.t[g] = t[g]->d; gr.dw[g] = dB[g]->d; gr.cols[g] = O[g];
    }
    char name[96];
    std::vector<float> y0 = y.h;
    for (size_t g = 0; g < G; g++) gr.io[g] = y.d + col[g];
    k_lora_out_batch(&gr, N, r, s, 0);
    std::vector<double> ry(y0.begin(), y0.end());
    for (size_t g = 0; g < G; g++)
        for (size_t n = 0; n < N; n++)
            for (size_t o = 0; o < O[g]; o++) {
                double a = 0;
                for (size_t q = 0; q < r; q++) a += (double)t[g]->h[n * r + q] * B[g]->h[o * r + q];
                ry[n * ld + col[g] + o] += s * a;
            }
    snprintf(name, sizeof name, "lora batch of 3, r=%zu: y_j += s t_j B_j^T", r);
    check(name, y.get(), ry, 8e-3);
    for (size_t g = 0; g < G; g++) gr.io[g] = dy.d + col[g];
    float *part; CUDA_CHECK(cudaMalloc(&part, G * lora_da_ws_floats(N, r, 320) * 4));
    std::vector<std::vector<float>> dB0;
    for (size_t g = 0; g < G; g++) dB0.push_back(dB[g]->h);
    k_lora_db_batch(&gr, part, N, r, s, 0);
    for (size_t g = 0; g < G; g++) {
        std::vector<double> rdb(O[g] * r);
        for (size_t o = 0; o < O[g]; o++)
            for (size_t q = 0; q < r; q++) {
                double a = 0;
                for (size_t n = 0; n < N; n++) a += (double)dy.h[n * ld + col[g] + o] * t[g]->h[n * r + q];
                rdb[o * r + q] = dB0[g][o * r + q] + s * a;
            }
        snprintf(name, sizeof name, "lora batch of 3, r=%zu: module %zu dB += s dy^T t", r, g);
        check(name, dB[g]->get(), rdb, 1e-5);
    }
    for (size_t g = 0; g < G; g++) { gr.t[g] = dt[g]->d; dt[g]->poison(); }
    k_lora_dt_batch(&gr, N, r, s, 0);
    for (size_t g = 0; g < G; g++) {
        std::vector<double> rdt(N * r);
        for (size_t n = 0; n < N; n++)
            for (size_t q = 0; q < r; q++) {
                double a = 0;
                for (size_t o = 0; o < O[g]; o++) a += (double)dy.h[n * ld + col[g] + o] * B[g]->h[o * r + q];
                rdt[n * r + q] = s * a;
            }
        snprintf(name, sizeof name, "lora batch of 3, r=%zu: module %zu dt = s dy B", r, g);
        check(name, dt[g]->get(), rdt, 8e-3);
    }
    cudaFree(part);
    for (size_t g = 0; g < G; g++) { delete B[g]; delete t[g]; delete dt[g]; delete dB[g]; }
}

// Row gathers (16-byte and scalar rows) and the shared-prefix fold: a batch of
// 3 sequences of 14, 11 and 20 rows whose first P = 9 rows are shared, laid
// out as the trainer computes it (shared rows once, then each sequence's own).
static void test_rows(size_t C) {
    const size_t P = 9, lens[] = {14, 11, 20}, S = 3;
    std::vector<int32_t> seq(S + 1, 0), expand, compress;
    for (size_t s = 0; s < S; s++) seq[s + 1] = seq[s] + (int32_t)lens[s];
    size_t Nb = (size_t)seq[S], Nc = Nb - (S - 1) * P;
    for (size_t p = 0; p < P; p++) compress.push_back((int32_t)p);
    for (size_t s = 0; s < S; s++)
        for (size_t p = 0; p < lens[s]; p++) {
            if (p >= P) compress.push_back(seq[s] + (int32_t)p);
            expand.push_back(p < P ? (int32_t)p : (int32_t)(compress.size() - 1));
        }
    int32_t *d_seq, *d_exp, *d_cmp;
    CUDA_CHECK(cudaMalloc(&d_seq, (S + 1) * 4)); CUDA_CHECK(cudaMalloc(&d_exp, Nb * 4)); CUDA_CHECK(cudaMalloc(&d_cmp, Nc * 4));
    CUDA_CHECK(cudaMemcpy(d_seq, seq.data(), (S + 1) * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_exp, expand.data(), Nb * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_cmp, compress.data(), Nc * 4, cudaMemcpyHostToDevice));
    bbuf comp(Nc * C), wide(Nb * C), back(Nc * C), folded(Nc * C);
    wide.poison();
    k_gather_rows(wide.d, comp.d, d_exp, Nb, C, 0);   // spread out: every sequence whole
    std::vector<double> rw(Nb * C), rb(Nc * C), rf(Nc * C);
    for (size_t t = 0; t < Nb; t++) for (size_t i = 0; i < C; i++) rw[t * C + i] = comp.h[expand[t] * C + i];
    char name[80];
    snprintf(name, sizeof name, "gather rows (C=%zu)", C);
    check(name, wide.get(), rw, 0.0);
    back.poison();
    k_gather_rows(back.d, wide.d, d_cmp, Nc, C, 0);   // and back: the computed rows again
    for (size_t j = 0; j < Nc; j++) for (size_t i = 0; i < C; i++) rb[j * C + i] = comp.h[j * C + i];
    snprintf(name, sizeof name, "gather rows back (C=%zu)", C);
    check(name, back.get(), rb, 0.0);
    bbuf spread(Nb * C);   // scatter into zeros: one copy of each computed row, zeros elsewhere
    CUDA_CHECK(cudaMemset(spread.d, 0, Nb * C * 2));
    k_scatter_rows(spread.d, comp.d, d_cmp, Nc, C, 0);
    std::vector<double> rsc(Nb * C, 0.0);
    for (size_t j = 0; j < Nc; j++) for (size_t i = 0; i < C; i++) rsc[compress[j] * C + i] = comp.h[j * C + i];
    snprintf(name, sizeof name, "scatter rows (C=%zu)", C);
    check(name, spread.get(), rsc, 0.0);
    bbuf grad(Nb * C);   // gradients of the spread-out rows: each copy its own
    folded.poison();
    k_fold_rows(folded.d, grad.d, d_cmp, d_seq, S, P, Nc, C, 0);
    for (size_t j = 0; j < Nc; j++)
        for (size_t i = 0; i < C; i++) {
            if (j < P) {
                float acc = 0.0f;   // the kernel's order and precision, rounded once
                for (size_t s = 0; s < S; s++) acc += grad.h[(seq[s] + j) * C + i];
                rf[j * C + i] = b2h(h2b(acc));
            } else {
                rf[j * C + i] = grad.h[compress[j] * C + i];
            }
        }
    snprintf(name, sizeof name, "fold shared rows (C=%zu)", C);
    check(name, folded.get(), rf, 0.0);
    cudaFree(d_seq); cudaFree(d_exp); cudaFree(d_cmp);
}

int main() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) { printf("no CUDA GPU: skipped\n0 passed, 0 failed\n"); return 0; }
    gemm_ctx *g = gemm_create(32u << 20, 0);
    G_CTX = g;
    test_gemm(g);
    test_rmsnorm(200);
    test_rmsnorm(202);
    test_rope(23, 3, 16, 70, 6);
    test_rope(19, 5, 128, 704, 8);
    test_attention(16, 130, 2);
    test_attention(64, 130, 2);
    test_attention(128, 130, 2);
    test_attention(64, 20, 2);     // short kernels, tiny tiles
    test_attention(128, 128, 2);   // short kernels at their limit, GQA
    test_attention(128, 128, 4);   // short kernels, one kv head per query head (Qwen1.5-7B)
    test_attention(128, 100, 4);
    // the register-tile short kernels: lengths 1, 16k+1, 64 | 65 (their 64-row
    // chunks), 128 in one batch; MHA, GQA 2 and 4; D = 64 too
    test_attention_lens(128, 4, {1, 17, 128, 64, 33, 65, 2, 100});
    test_attention_lens(128, 1, {128, 1, 80, 16});
    test_attention_lens(64, 2, {1, 17, 128, 64, 65});
    test_lora(0.0f);
    test_lora(0.3f);
    test_lora_group(3, 8, 0.0f);
    test_lora_group(3, 16, 0.1f);
    test_lora_group(2, 4, 0.3f);
    test_lora_group(3, 8, 0.1f, 133, 4096);   // the 7B width; rows not a multiple of 8, 16 or 64
    test_lora_group(1, 16, 0.1f, 70, 1000);   // columns not a multiple of 32 or 64
    test_lora_batch(8);
    test_lora_batch(16);
    test_swiglu(13, 150);
    test_swiglu(13, 152);
    test_xent();
    test_adamw();
    test_rows(136);   // 16-byte rows
    test_rows(70);    // scalar rows
    gemm_destroy(g);
    printf("test_kernels: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

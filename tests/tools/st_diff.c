// tests/tools/st_diff.c: compare the tensors of two safetensors files.
// usage: st_diff A B [--atol X] [--rtol X] [--norm-rtol X] [--subset]
// Every tensor of A must be in B with the same shape (and, without --subset,
// the same key set); values compare as fp32 with |a - b| <= atol + rtol |b|,
// or, with --norm-rtol, per tensor ||a - b|| <= X ||b|| (2-norms): the measure
// for results computed in bf16, whose error scales with the tensor, not with
// each element.
// Prints the worst tensor; exit 0 when all pass, 1 otherwise.
#include "check.h"
#include "hf_model.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    check_init(argv[0]);
    if (argc < 3) die_usage("usage: st_diff A B [--atol X] [--rtol X] [--norm-rtol X] [--subset]");
    double atol = 0, rtol = 0, nrtol = -1;
    int subset = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--atol") && i + 1 < argc) atol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rtol") && i + 1 < argc) rtol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--norm-rtol") && i + 1 < argc) nrtol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--subset")) subset = 1;
        else die_usage("unknown option %s", argv[i]);
    }
    st_file a, b;
    st_open_or_die(&a, argv[1]);
    st_open_or_die(&b, argv[2]);
    if (!subset && a.n != b.n) { printf("key sets differ: %zu vs %zu tensors\n", a.n, b.n); return 1; }
    double worst = 0, worst_abs = 0;
    const char *worst_name = "";
    int bad = 0;
    for (size_t i = 0; i < a.n; i++) {
        const st_tensor *ta = &a.t[i], *tb = st_find(&b, ta->name);
        if (!tb) { printf("%s: missing from %s\n", ta->name, argv[2]); bad = 1; continue; }
        if (ta->numel != tb->numel || ta->ndim != tb->ndim) { printf("%s: shapes differ\n", ta->name); bad = 1; continue; }
        float *x = hf_tensor_f32(ta), *y = hf_tensor_f32(tb);
        if (nrtol >= 0) {
            double dd = 0, bb = 0;
            int nan = 0;
            for (size_t k = 0; k < ta->numel; k++) {
                dd += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
                bb += (double)y[k] * y[k];
                nan |= isnan(x[k]) != isnan(y[k]);
            }
            double rel = sqrt(dd) / (sqrt(bb) > 0 ? sqrt(bb) : 1), ratio = nan ? INFINITY : rel / nrtol;
            if (ratio > worst) { worst = ratio; worst_abs = rel; worst_name = ta->name; }
            if (ratio > 1) bad = 1;
            free(x); free(y);
            continue;
        }
        for (size_t k = 0; k < ta->numel; k++) {
            double d = fabs((double)x[k] - y[k]), lim = atol + rtol * fabs((double)y[k]);
            double ratio = lim > 0 ? d / lim : (d > 0 ? INFINITY : 0);
            if (isnan(x[k]) != isnan(y[k])) ratio = INFINITY;
            if (ratio > worst) { worst = ratio; worst_abs = d; worst_name = ta->name; }
            if (ratio > 1) bad = 1;
        }
        free(x); free(y);
    }
    printf("%s: worst %s: %s %.3g (%.3g of the tolerance)\n", bad ? "FAIL" : "ok", worst_name,
           nrtol >= 0 ? "||diff||/||ref||" : "|diff|", worst_abs, worst);
    return bad;
}

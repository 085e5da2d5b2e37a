// tests/unit/tap.h: the smallest test harness that can fail.
// Each check prints "not ok" lines on failure; T_DONE prints the closing
// "N passed, N failed" line and returns non-zero when anything failed.
#ifndef LORAPIPE_TAP_H
#define LORAPIPE_TAP_H
#include <math.h>
#include <stdio.h>

static int t_pass, t_fail;

#define T_OK(cond, ...) do {                                              \
    if (cond) t_pass++;                                                   \
    else { t_fail++; printf("not ok %s:%d: ", __FILE__, __LINE__);        \
           printf(__VA_ARGS__); printf("\n"); }                           \
} while (0)

// |a - b| <= atol + rtol * |b|, and never NaN.
#define T_NEAR(a, b, atol, rtol, ...) do {                                \
    double t_a_ = (a), t_b_ = (b);                                        \
    int t_ok_ = !isnan(t_a_) && !isnan(t_b_) &&                           \
                fabs(t_a_ - t_b_) <= (atol) + (rtol) * fabs(t_b_);        \
    T_OK(t_ok_, "%s = %.9g, expected %.9g: " __VA_ARGS__, #a, t_a_, t_b_); \
} while (0)

#define T_DONE(name) (printf("%s: %d passed, %d failed\n", (name), t_pass, t_fail), t_fail ? 1 : 0)

#endif

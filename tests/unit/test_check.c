// tests/unit/test_check.c: size parsing and byte formatting helpers.
#include "check.h"
#include "tap.h"
#include <stdlib.h>
#include <string.h>

int main(void) {
    unsigned long long v;
    T_OK(parse_size("5GB", &v) == 0 && v == 5000000000ULL, "5GB");
    T_OK(parse_size("2GiB", &v) == 0 && v == 2147483648ULL, "2GiB");
    T_OK(parse_size("100", &v) == 0 && v == 100, "100");
    T_OK(parse_size("1.5MB", &v) == 0 && v == 1500000, "1.5MB");
    T_OK(parse_size("12XB", &v) != 0, "bad unit refused");
    T_OK(parse_size("", &v) != 0, "empty refused");
    char buf[32];
    T_OK(!strcmp(fmt_bytes(1536, buf, sizeof buf), "1.50 KiB"), "fmt_bytes %s", buf);
    size_t cap = 0; int *a = NULL;
    a = xgrow(a, &cap, 1000, sizeof *a);
    T_OK(cap >= 1000, "xgrow");
    free(a);
    return T_DONE("test_check");
}

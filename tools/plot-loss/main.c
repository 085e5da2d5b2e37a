// tools/plot-loss: train's metrics.jsonl -> a PNG of the loss against the
// optimizer step (the raw per-step loss, its moving average, and eval_loss
// points when the run evaluated), with axes, ticks and labels drawn here with
// a built-in 5x7 font; libpng writes the file.  A one-line summary (first and
// last loss) goes to standard error.
#include "atomic_out.h"
#include "check.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    printf(
        "Usage: plot-loss [-o loss.png] [--width W] [--height H] [--smooth N] [METRICS.jsonl]\n"
        "\n"
        "Draw train's metrics.jsonl (one JSON line per optimizer step; standard input\n"
        "when no file or \"-\" is given) as a PNG: loss against step, the per-step loss\n"
        "in light blue, its moving average over N steps in dark blue, eval_loss lines as\n"
        "red dots.  Prints \"first -> last\" loss on standard error.\n"
        "\n"
        "Options:\n"
        "  -o, --output FILE   the PNG (written atomically; default loss.png)\n"
        "      --width W       image width in pixels (default 800, 200..8000)\n"
        "      --height H      image height in pixels (default 480, 150..8000)\n"
        "      --smooth N      moving-average window in steps (default: steps / 20, at least 1)\n"
        "  -h, --help          show this help\n"
        "\n"
        "Exit status: 0 ok, 1 bad input (one line naming the file and line), 2 bad usage.\n");
}

// ---- a tiny raster --------------------------------------------------------
typedef struct { int w, h; uint8_t *px; } canvas;   // (h, w, 3) RGB

static void put(canvas *c, int x, int y, const uint8_t rgb[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + ((size_t)y * c->w + x) * 3, rgb, 3);
}

static void rect(canvas *c, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(c, x, y, rgb);
}

// A line of the given thickness (Bresenham, a square pen).
static void line(canvas *c, int x0, int y0, int x1, int y1, int thick, const uint8_t rgb[3]) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    int lo = -(thick - 1) / 2, hi = thick / 2;
    for (;;) {
        rect(c, x0 + lo, y0 + lo, x0 + hi, y0 + hi, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

// 5x7 glyphs, one byte per row (bit 4 = leftmost column).
static const struct { char ch; uint8_t row[7]; } FONT[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}},
    {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'g', {0x00, 0x00, 0x0F, 0x11, 0x0F, 0x01, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}}, {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
};
enum { GLYPH_W = 6, GLYPH_H = 7 };   // advance (5 + 1 space) and height, before scaling

static int text_width(const char *s, int scale) { return (int)strlen(s) * GLYPH_W * scale; }

static void text(canvas *c, int x, int y, const char *s, int scale, const uint8_t rgb[3]) {
    for (; *s; s++, x += GLYPH_W * scale) {
        for (size_t g = 0; g < sizeof FONT / sizeof FONT[0]; g++) {
            if (FONT[g].ch != *s) continue;
            for (int r = 0; r < 7; r++)
                for (int k = 0; k < 5; k++)
                    if (FONT[g].row[r] >> (4 - k) & 1) rect(c, x + k * scale, y + r * scale, x + k * scale + scale - 1,
                                                          y + r * scale + scale - 1, rgb);
        }
    }
}

// A tick spacing of 1, 2 or 5 x 10^k giving about n intervals over span.
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

static void fmt_tick(char *buf, size_t n, double v, double step) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, n, "%.*f", dec, v);
}

// ---- metrics --------------------------------------------------------------
typedef struct { double *x, *y; size_t n, cap; } series;
static void series_push(series *s, double x, double y) {
    size_t c = s->cap;
    s->x = xgrow(s->x, &c, s->n + 1, sizeof *s->x);
    s->y = xgrow(s->y, &s->cap, s->n + 1, sizeof *s->y);
    s->x[s->n] = x; s->y[s->n] = y; s->n++;
}

static void read_metrics(const char *path, series *loss, series *eval) {
    size_t len;
    char *text = read_file(path, &len);
    const char *name = strcmp(path, "-") ? path : "<stdin>";
    size_t lineno = 0;
    for (char *p = text, *e; p < text + len; p = e + 1) {
        e = memchr(p, '\n', (size_t)(text + len - p));
        if (!e) e = text + len;
        lineno++;
        if (e == p) continue;
        json_error_t je;
        json_t *j = json_loadb(p, (size_t)(e - p), 0, &je);
        if (!j || !json_is_object(j)) die("%s: line %zu: not a JSON object%s%s", name, lineno, j ? "" : ": ",
                                         j ? "" : je.text);
        json_t *st = json_object_get(j, "step"), *l = json_object_get(j, "loss"), *ev = json_object_get(j, "eval_loss");
        if (!json_is_number(st)) die("%s: line %zu: no numeric \"step\"", name, lineno);
        if (json_is_number(l)) series_push(loss, json_number_value(st), json_number_value(l));
        if (json_is_number(ev)) series_push(eval, json_number_value(st), json_number_value(ev));
        json_decref(j);
    }
    free(text);
    if (!loss->n) die("%s: no line with a \"loss\" (is this train's metrics.jsonl?)", name);
}

static void write_png(const canvas *c, const char *path) {
    aout o;
    aout_open(&o, path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    CHECK(png && info, "libpng: out of memory");
    if (setjmp(png_jmpbuf(png))) die("%s: libpng could not write the image", aout_name(&o));
    png_init_io(png, o.f);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < c->h; y++) png_write_row(png, c->px + (size_t)y * c->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    aout_commit(&o);
}

static long parse_int(const char *opt, const char *v, long lo, long hi) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) die_usage("%s: expected an integer in [%ld, %ld], got '%s'", opt, lo, hi, v);
    return x;
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    cleanup_install_signals();
    const char *out = "loss.png";
    int W = 800, H = 480;
    long smooth = 0;
    enum { O_W = 256, O_H, O_SMOOTH };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"width", required_argument, 0, O_W},
        {"height", required_argument, 0, O_H}, {"smooth", required_argument, 0, O_SMOOTH},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case O_W: W = (int)parse_int("--width", optarg, 200, 8000); break;
        case O_H: H = (int)parse_int("--height", optarg, 150, 8000); break;
        case O_SMOOTH: smooth = parse_int("--smooth", optarg, 1, 1000000); break;
        case 'h': usage(); return 0;
        default: die_usage("try 'plot-loss --help'");
        }
    }
    if (argc - optind > 1) die_usage("one metrics file at most (got %d)", argc - optind);
    const char *in = optind < argc ? argv[optind] : "-";

    series loss = {0}, eval = {0};
    read_metrics(in, &loss, &eval);
    if (!smooth) smooth = loss.n / 20 ? (long)(loss.n / 20) : 1;

    // Data ranges: x over the steps, y from 0 (or below, for negative values) to the top.
    double xmin = loss.x[0], xmax = loss.x[0], ymin = 0, ymax = 0;
    for (size_t i = 0; i < loss.n; i++) {
        xmin = fmin(xmin, loss.x[i]); xmax = fmax(xmax, loss.x[i]);
        if (isfinite(loss.y[i])) { ymin = fmin(ymin, loss.y[i]); ymax = fmax(ymax, loss.y[i]); }
    }
    for (size_t i = 0; i < eval.n; i++)
        if (isfinite(eval.y[i])) { ymin = fmin(ymin, eval.y[i]); ymax = fmax(ymax, eval.y[i]); }
    if (xmax == xmin) xmax = xmin + 1;
    if (ymax == ymin) ymax = ymin + 1;
    double ys = nice_step(ymax - ymin, 6), xs = nice_step(xmax - xmin, 8);
    ymax = ceil(ymax / ys) * ys; ymin = floor(ymin / ys) * ys;

    static const uint8_t BLACK[3] = {0, 0, 0}, GRID[3] = {225, 225, 225},
                         LIGHT[3] = {160, 190, 235}, DARK[3] = {20, 60, 170}, RED[3] = {210, 30, 30};
    canvas c = {W, H, xmalloc((size_t)W * H * 3)};
    memset(c.px, 255, (size_t)W * H * 3);
    int sc = H >= 400 ? 2 : 1;                         // font scale
    int left = 14 * sc + text_width("00.00", sc), right = W - 20, top = 20 + 9 * sc, bottom = H - 20 - 20 * sc;
#define PX(x) (left + (int)lround(((x) - xmin) / (xmax - xmin) * (right - left)))
#define PY(y) (bottom - (int)lround(((y) - ymin) / (ymax - ymin) * (bottom - top)))
    char buf[64];
    for (double v = ymin; v <= ymax + ys / 2; v += ys) {      // y grid, ticks, labels
        int y = PY(v);
        line(&c, left, y, right, y, 1, GRID);
        line(&c, left - 5, y, left, y, 1, BLACK);
        fmt_tick(buf, sizeof buf, v, ys);
        text(&c, left - 8 - text_width(buf, sc), y - GLYPH_H * sc / 2, buf, sc, BLACK);
    }
    for (double v = ceil(xmin / xs) * xs; v <= xmax + xs / 1e6; v += xs) {   // x ticks, labels
        int x = PX(v);
        line(&c, x, bottom, x, bottom + 5, 1, BLACK);
        fmt_tick(buf, sizeof buf, v, xs);
        text(&c, x - text_width(buf, sc) / 2, bottom + 9, buf, sc, BLACK);
    }
    line(&c, left, top, left, bottom, 1, BLACK);
    line(&c, left, bottom, right, bottom, 1, BLACK);
    text(&c, (left + right - text_width("step", sc)) / 2, H - 6 - GLYPH_H * sc, "step", sc, BLACK);
    text(&c, 6, 6, "loss", sc, BLACK);
    const char *key = eval.n ? "loss (light), moving average (dark), eval loss (red)" : "loss (light), moving average (dark)";
    if (text_width(key, sc) < right - left - text_width("loss", sc) - 20)
        text(&c, right - text_width(key, sc), 6, key, sc, DARK);

    for (size_t i = 1; i < loss.n; i++)
        if (isfinite(loss.y[i - 1]) && isfinite(loss.y[i]))
            line(&c, PX(loss.x[i - 1]), PY(loss.y[i - 1]), PX(loss.x[i]), PY(loss.y[i]), 1, LIGHT);
    // Trailing moving average: step i shows the mean of the last `smooth` finite losses.
    double sum = 0; size_t cnt = 0; int px = 0, py = 0, have = 0;
    for (size_t i = 0; i < loss.n; i++) {
        if (isfinite(loss.y[i])) { sum += loss.y[i]; cnt++; }
        if (i >= (size_t)smooth && isfinite(loss.y[i - smooth])) { sum -= loss.y[i - smooth]; cnt--; }
        if (!cnt) continue;
        int x = PX(loss.x[i]), y = PY(sum / cnt);
        if (have) line(&c, px, py, x, y, 2 * sc, DARK);
        px = x; py = y; have = 1;
    }
    for (size_t i = 0; i < eval.n; i++)
        if (isfinite(eval.y[i])) rect(&c, PX(eval.x[i]) - 2 * sc, PY(eval.y[i]) - 2 * sc, PX(eval.x[i]) + 2 * sc,
                                      PY(eval.y[i]) + 2 * sc, RED);
#undef PX
#undef PY
    write_png(&c, out);

    // Summary: first and last loss, and the mean of the last tenth (less noisy).
    size_t tail = loss.n / 10 ? loss.n / 10 : 1;
    double tsum = 0;
    for (size_t i = loss.n - tail; i < loss.n; i++) tsum += loss.y[i];
    fprintf(stderr, "plot-loss: %zu steps; loss %.4g at step %.0f -> %.4g at step %.0f (mean of the last %zu: %.4g); "
                    "wrote %s\n",
            loss.n, loss.y[0], loss.x[0], loss.y[loss.n - 1], loss.x[loss.n - 1], tail, tsum / tail, out);
    free(c.px); free(loss.x); free(loss.y); free(eval.x); free(eval.y);
    return 0;
}

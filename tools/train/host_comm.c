// tools/train/host_comm.c: CPU rank collectives through rank 0 over TCP.
//
// Plain POSIX sockets, no MPI or Gloo: the CPU backend must build everywhere
// with nothing new to install, and a star through rank 0 is enough for LoRA
// arenas (megabytes). Every read and write waits with poll() against a
// deadline, so a silent peer becomes an error after LORAPIPE_COMM_TIMEOUT
// seconds instead of a hang; EINTR (a SIGTERM asking the loop to stop) is
// retried, since the loop itself decides when to leave.
#include "host_comm.h"
#include "tcp.h"
#include "atomic_out.h"
#include "check.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HC_MAGIC "LPHC"
#define HC_VERSION 1u
#define HC_HELLO_BYTES 32
#define HC_FRAME_BYTES 24
#define HC_MAX_SETTINGS 4096
enum { HC_F32 = 1, HC_F64 = 2, HC_ABORT = 3 };
enum { HC_OK = 0, HC_REFUSED = 1 };

struct host_comm {
    int rank, world;
    int *fd;                 // rank 0: fd[r] for r >= 1; other ranks: fd[0], the link to rank 0
    double timeout;          // seconds one read or write may wait
    uint64_t seq;            // collectives done so far (ranks must agree)
    size_t step;             // for messages; 0 during start-up
    unsigned char *scratch;  // rank 0: one peer's vector while summing
    size_t scratch_bytes;
    char out_dir[4096];
};

// ---- small helpers ---------------------------------------------------------------
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static double comm_timeout(void) {
    const char *s = getenv("LORAPIPE_COMM_TIMEOUT");
    if (!s || !*s) return 600.0;
    char *end;
    double t = strtod(s, &end);
    if (end == s || *end || !(t > 0)) die("LORAPIPE_COMM_TIMEOUT=%s is not a positive number of seconds", s);
    return t;
}

// What happened to a link, for "lost rank N (...)".
typedef enum { IO_OK, IO_CLOSED, IO_RESET, IO_TIMEOUT, IO_ERROR } io_result;

static const char *io_why(io_result r, double timeout, char *buf, size_t n) {
    switch (r) {
    case IO_CLOSED: return "connection closed";
    case IO_RESET: return "connection reset";
    case IO_TIMEOUT: snprintf(buf, n, "no answer within %g s", timeout); return buf;
    default: snprintf(buf, n, "%s", strerror(errno)); return buf;
    }
}

// Move exactly n bytes (partial transfers and EINTR continue) before the deadline.
static io_result io_full(int fd, void *buf, size_t n, int writing, double deadline) {
    unsigned char *p = buf;
    while (n) {
        struct pollfd pf = {fd, writing ? POLLOUT : POLLIN, 0};
        double left = deadline - now_s();
        if (left <= 0) return IO_TIMEOUT;
        int ms = left > 3600 ? 3600000 : (int)(left * 1000) + 1;
        int pr = poll(&pf, 1, ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return IO_ERROR;
        if (pr == 0) continue;   // the deadline check above decides
        ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (k < 0) return errno == ECONNRESET ? IO_RESET : errno == EPIPE ? IO_CLOSED : IO_ERROR;
        if (k == 0) return IO_CLOSED;
        p += k;
        n -= (size_t)k;
    }
    return IO_OK;
}

static void frame_put(unsigned char *f, uint32_t kind, uint32_t arg, uint64_t seq, uint64_t count) {
    put_u32(f, kind);
    put_u32(f + 4, arg);
    put_u64(f + 8, seq);
    put_u64(f + 16, count);
}

// One line, then exit 1. Rank 0 first tells the other ranks which rank was
// lost (an abort frame), so that every surviving rank names the same culprit
// instead of "lost rank 0".
_Noreturn static void lost(host_comm *c, int peer, io_result r, int seen_by_rank0, const char *what) {
    char buf[256], during[128];
    // Before other calls change errno; rank 0's errno does not travel in an abort frame.
    const char *why = seen_by_rank0 && r == IO_ERROR ? "a socket error" : io_why(r, c->timeout, buf, sizeof buf);
    if (c->step) snprintf(during, sizeof during, "%s of step %zu", what, c->step);
    else snprintf(during, sizeof during, "%s", what);
    if (c->rank == 0) {
        unsigned char f[HC_FRAME_BYTES];
        frame_put(f, HC_ABORT, (uint32_t)r, c->seq, (uint64_t)peer);
        for (int p = 1; p < c->world; p++)
            if (p != peer && c->fd[p] >= 0) io_full(c->fd[p], f, sizeof f, 1, now_s() + 1.0);   // best effort
        // Read what they still send until they hang up: closing with unread
        // bytes would reset the link and could drop the abort frame.
        double until = now_s() + 2.0;
        for (int p = 1; p < c->world; p++) {
            if (p == peer || c->fd[p] < 0) continue;
            shutdown(c->fd[p], SHUT_WR);
            unsigned char sink[4096];
            while (io_full(c->fd[p], sink, 1, 0, until) == IO_OK) {
                ssize_t k = recv(c->fd[p], sink, sizeof sink, MSG_DONTWAIT);
                (void)k;
            }
        }
        die("rank 0: lost rank %d (%s) during %s; the newest complete checkpoint in %s is intact (continue with "
            "--resume, on any number of ranks)", peer, why, during, c->out_dir);
    }
    die("rank %d: lost rank %d (%s%s) during %s; rank 0's newest complete checkpoint is intact (continue with "
        "--resume, on any number of ranks)", c->rank, peer, why, seen_by_rank0 ? ", seen by rank 0" : "", during);
}

static void link_setup(int fd) {
    int one = 1;   // small frames (headers, the step's two doubles) must not wait for Nagle
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---- handshake ---------------------------------------------------------------
typedef struct {
    uint32_t version, world, rank, status;
    uint64_t arena_floats;
    char settings[HC_MAX_SETTINGS + 1];
} hello;

static io_result hello_send(int fd, const hello *h, double deadline) {
    size_t len = strlen(h->settings);
    unsigned char buf[HC_HELLO_BYTES + HC_MAX_SETTINGS];
    memcpy(buf, HC_MAGIC, 4);
    put_u32(buf + 4, h->version);
    put_u32(buf + 8, h->world);
    put_u32(buf + 12, h->rank);
    put_u32(buf + 16, h->status);
    put_u32(buf + 20, (uint32_t)len);
    put_u64(buf + 24, h->arena_floats);
    memcpy(buf + HC_HELLO_BYTES, h->settings, len);
    return io_full(fd, buf, HC_HELLO_BYTES + len, 1, deadline);
}

// Returns IO_OK with *bad set when the bytes are not a lorapipe hello (wrong
// magic, or an oversized settings field).
static io_result hello_recv(int fd, hello *h, int *bad, double deadline) {
    unsigned char buf[HC_HELLO_BYTES];
    *bad = 0;
    io_result r = io_full(fd, buf, sizeof buf, 0, deadline);
    if (r != IO_OK) return r;
    if (memcmp(buf, HC_MAGIC, 4)) { *bad = 1; return IO_OK; }
    h->version = get_u32(buf + 4);
    h->world = get_u32(buf + 8);
    h->rank = get_u32(buf + 12);
    h->status = get_u32(buf + 16);
    uint32_t len = get_u32(buf + 20);
    h->arena_floats = get_u64(buf + 24);
    if (len > HC_MAX_SETTINGS) { *bad = 1; return IO_OK; }
    r = io_full(fd, h->settings, len, 0, deadline);
    h->settings[r == IO_OK ? len : 0] = 0;
    return r;
}

// The first "key=value" word that differs between two settings strings, as
// "key=A on rank X, key=B on rank Y", so that the message says what to fix.
static void settings_diff(const char *a, int ra, const char *b, int rb, char *out, size_t n) {
    while (*a || *b) {
        size_t la = strcspn(a, " "), lb = strcspn(b, " ");
        if (la != lb || memcmp(a, b, la)) {
            snprintf(out, n, "%.*s on rank %d, %.*s on rank %d", (int)la, a, ra, (int)lb, b, rb);
            return;
        }
        a += la; b += lb;
        while (*a == ' ') a++;
        while (*b == ' ') b++;
    }
    snprintf(out, n, "the same settings");
}

// Why hello h (from rank h->rank) does not fit mine, or "" when it does.
static void hello_check(const hello *mine, const hello *h, const unsigned char *seen, char *why, size_t n) {
    char d[512];
    why[0] = 0;
    if (h->version != mine->version)
        snprintf(why, n, "protocol version %u there, %u here (run the same build of train on every rank)", h->version,
                 mine->version);
    else if (h->world != mine->world)
        snprintf(why, n, "world size %u there, %u here", h->world, mine->world);
    else if (h->rank == mine->rank || h->rank >= mine->world)
        snprintf(why, n, "it claims rank %u of %u", h->rank, h->world);
    else if (seen && seen[h->rank])
        snprintf(why, n, "another process already joined as rank %u", h->rank);
    else if (h->arena_floats != mine->arena_floats || strcmp(h->settings, mine->settings)) {
        // Lower rank first, so that both ends of the refusal print the same words.
        const hello *lo = h->rank < mine->rank ? h : mine, *hi = lo == h ? mine : h;
        settings_diff(lo->settings, (int)lo->rank, hi->settings, (int)hi->rank, d, sizeof d);
        snprintf(why, n, "the LoRA gradient arena has %llu floats on rank %u, %llu on rank %u; %s (every rank needs "
                 "the same model and training options)", (unsigned long long)lo->arena_floats, lo->rank,
                 (unsigned long long)hi->arena_floats, hi->rank, d);
    }
}

// ---- connecting ------------------------------------------------------------------
// "host port" as rank 0 wrote it; 0 when the file is not there (yet).
static int read_rdzv(const char *path, char *host, size_t n, int *port) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[512];
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) return 0;
    char fmt[32];
    snprintf(fmt, sizeof fmt, "%%%zus %%d", n - 1);
    return sscanf(line, fmt, host, port) == 2 && *port > 0 && *port < 65536;
}

static void publish_rdzv(const char *path, int port) {
    char host[256];
    const char *addr = getenv("LORAPIPE_COMM_ADDR");   // an address the other hosts reach, when the name is not one
    if (addr && *addr) snprintf(host, sizeof host, "%s", addr);
    else if (gethostname(host, sizeof host)) die("rank 0: gethostname: %s", strerror(errno));
    host[sizeof host - 1] = 0;
    char line[300];
    int len = snprintf(line, sizeof line, "%s %d\n", host, port);
    aout o;
    aout_open(&o, path);   // written whole, then renamed: a reader never sees half a line
    aout_write(&o, line, (size_t)len);
    aout_commit(&o);
}

static void open_rank0(host_comm *c, const host_comm_cfg *cfg, const hello *mine) {
    double deadline = now_s() + c->timeout;
    int use_file = cfg->rdzv_file && cfg->rdzv_file[0];
    int port = 0;
    int ls = tcp_listen(use_file ? 0 : cfg->master_port, c->world, &port);
    if (use_file) publish_rdzv(cfg->rdzv_file, port);
    unsigned char *seen = xcalloc((size_t)c->world, 1);
    hello *h = xmalloc(sizeof *h);
    char why[1024];
    for (int joined = 1; joined < c->world;) {
        struct pollfd pf = {ls, POLLIN, 0};
        double left = deadline - now_s();
        if (left <= 0) {
            char missing[256] = "";
            for (int r = 1; r < c->world && strlen(missing) < 200; r++)
                if (!seen[r]) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%d",
                                       missing[0] ? ", " : "", r);
            die("rank 0: rank(s) %s did not connect to port %d within %g s", missing, port, c->timeout);
        }
        int pr = poll(&pf, 1, (int)(left * 1000) + 1);
        if (pr <= 0) continue;   // EINTR or the deadline: checked above
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) continue;
        link_setup(fd);
        int bad;
        io_result r = hello_recv(fd, h, &bad, now_s() + c->timeout);
        if (r != IO_OK || bad) {   // a port probe or a stray client: not one of ours
            warn("rank 0: ignoring a connection on port %d that is not a lorapipe rank", port);
            close(fd);
            continue;
        }
        hello_check(mine, h, seen, why, sizeof why);
        hello reply = *mine;
        reply.status = why[0] ? HC_REFUSED : HC_OK;
        hello_send(fd, &reply, now_s() + c->timeout);
        if (why[0]) die("rank 0: refusing rank %u: %s", h->rank, why);
        seen[h->rank] = 1;
        c->fd[h->rank] = fd;
        joined++;
    }
    close(ls);
    // Every rank has read the file; removing it keeps a later job from reading a stale port.
    if (use_file) unlink(cfg->rdzv_file);
    free(seen);
    free(h);
}

static void open_peer(host_comm *c, const host_comm_cfg *cfg, const hello *mine) {
    double deadline = now_s() + c->timeout;
    int use_file = cfg->rdzv_file && cfg->rdzv_file[0];
    hello *h = xmalloc(sizeof *h);
    char why[1024], host[256];
    for (;;) {
        int port = cfg->master_port, fd = -1;
        snprintf(host, sizeof host, "%s", cfg->master_addr ? cfg->master_addr : "");
        // Rank 0 loads the model before it listens: keep trying until the deadline.
        if (!use_file || read_rdzv(cfg->rdzv_file, host, sizeof host, &port)) fd = tcp_connect_once(host, port, c->rank);
        if (fd >= 0) {
            link_setup(fd);
            int bad;
            io_result r = hello_send(fd, mine, deadline);
            if (r == IO_OK) r = hello_recv(fd, h, &bad, deadline);
            if (r == IO_OK && !bad) {
                if (h->status != HC_OK) {
                    hello_check(h, mine, NULL, why, sizeof why);
                    die("rank %d: rank 0 refused this rank: %s", c->rank, why[0] ? why : "see rank 0's message");
                }
                c->fd[0] = fd;
                break;
            }
            close(fd);   // a stale address (an old rendezvous file) or rank 0 going away: try again
        }
        if (now_s() > deadline) {
            if (use_file) die("rank %d: rank 0 did not answer through %s within %g s", c->rank, cfg->rdzv_file, c->timeout);
            die("rank %d: rank 0 at %s:%d did not answer within %g s", c->rank, host, port, c->timeout);
        }
        usleep(50000);
    }
    free(h);
}

host_comm *host_comm_open(const host_comm_cfg *cfg) {
    uint32_t probe = 1;
    unsigned char first;
    memcpy(&first, &probe, 1);
    // Vectors travel as raw IEEE-754 little-endian bytes (docs/FORMATS.md).
    if (first != 1) die("rank %d: CPU ranks need a little-endian host", cfg->rank);
    size_t slen = strlen(cfg->settings);
    if (slen > HC_MAX_SETTINGS) die("rank %d: the settings line is %zu bytes, over %d", cfg->rank, slen, HC_MAX_SETTINGS);
    host_comm *c = xcalloc(1, sizeof *c);
    c->rank = cfg->rank;
    c->world = cfg->world;
    c->timeout = comm_timeout();
    c->fd = xmalloc((size_t)c->world * sizeof *c->fd);
    for (int r = 0; r < c->world; r++) c->fd[r] = -1;
    snprintf(c->out_dir, sizeof c->out_dir, "%s", cfg->out_dir ? cfg->out_dir : "--out");
    hello *mine = xcalloc(1, sizeof *mine);
    *mine = (hello){.version = HC_VERSION, .world = (uint32_t)cfg->world, .rank = (uint32_t)cfg->rank,
                    .status = HC_OK, .arena_floats = cfg->arena_floats};
    memcpy(mine->settings, cfg->settings, slen + 1);
    if (c->rank == 0) open_rank0(c, cfg, mine);
    else open_peer(c, cfg, mine);
    free(mine);
    return c;
}

void host_comm_set_step(host_comm *c, size_t step) { c->step = step; }

// ---- the all-reduce -------------------------------------------------------------------
static void allreduce(host_comm *c, void *v, size_t n, uint32_t kind, const char *what) {
    size_t esz = kind == HC_F32 ? sizeof(float) : sizeof(double), bytes = n * esz;
    unsigned char frame[HC_FRAME_BYTES], got[HC_FRAME_BYTES];
    frame_put(frame, kind, 0, c->seq, n);
    double deadline = now_s() + c->timeout;
    io_result r;
    if (c->rank != 0) {
        if ((r = io_full(c->fd[0], frame, sizeof frame, 1, deadline)) != IO_OK ||
            (r = io_full(c->fd[0], v, bytes, 1, deadline)) != IO_OK ||
            (r = io_full(c->fd[0], got, sizeof got, 0, deadline)) != IO_OK)
            lost(c, 0, r, 0, what);
        if (get_u32(got) == HC_ABORT) {
            uint32_t why = get_u32(got + 4);
            lost(c, (int)get_u64(got + 16), why > IO_ERROR ? IO_ERROR : (io_result)why, 1, what);
        }
        if (memcmp(frame, got, sizeof frame)) die("rank %d: rank 0 answered another collective during %s", c->rank, what);
        if ((r = io_full(c->fd[0], v, bytes, 0, deadline)) != IO_OK) lost(c, 0, r, 0, what);
        c->seq++;
        return;
    }
    if (c->scratch_bytes < bytes) {
        c->scratch = xrealloc(c->scratch, bytes);
        c->scratch_bytes = bytes;
    }
    // Ascending rank order: ((v0 + v1) + v2) + ..., the same rounding on every run.
    for (int p = 1; p < c->world; p++) {
        if ((r = io_full(c->fd[p], got, sizeof got, 0, deadline)) != IO_OK) lost(c, p, r, 0, what);
        if (memcmp(frame, got, sizeof frame))
            die("rank 0: rank %d is out of step during %s (collective %llu of kind %u with %llu values; here: "
                "collective %llu of kind %u with %llu values)", p, what, (unsigned long long)get_u64(got + 8),
                get_u32(got), (unsigned long long)get_u64(got + 16), (unsigned long long)c->seq, kind,
                (unsigned long long)n);
        if ((r = io_full(c->fd[p], c->scratch, bytes, 0, deadline)) != IO_OK) lost(c, p, r, 0, what);
        if (kind == HC_F32) {
            float *a = v;
            const float *b = (const float *)c->scratch;
            for (size_t i = 0; i < n; i++) a[i] += b[i];
        } else {
            double *a = v;
            const double *b = (const double *)c->scratch;
            for (size_t i = 0; i < n; i++) a[i] += b[i];
        }
    }
    for (int p = 1; p < c->world; p++)
        if ((r = io_full(c->fd[p], frame, sizeof frame, 1, deadline)) != IO_OK ||
            (r = io_full(c->fd[p], v, bytes, 1, deadline)) != IO_OK)
            lost(c, p, r, 0, what);
    c->seq++;
}

void host_comm_allreduce_f32(host_comm *c, float *v, size_t n, const char *what) { allreduce(c, v, n, HC_F32, what); }
void host_comm_allreduce_f64(host_comm *c, double *v, size_t n, const char *what) { allreduce(c, v, n, HC_F64, what); }

void host_comm_close(host_comm *c) {
    if (!c) return;
    for (int r = 0; r < c->world; r++) if (c->fd[r] >= 0) close(c->fd[r]);
    free(c->fd);
    free(c->scratch);
    free(c);
}

// tools/train/host_comm.c: CPU rank collectives through rank 0 over TCP.
//
// Plain POSIX sockets, no MPI or Gloo: the CPU backend must build everywhere
// with nothing new to install, and a star through rank 0 is enough for LoRA
// arenas (megabytes). Every read and write waits with poll() against a
// deadline, so a silent peer becomes an error after LORAPIPE_COMM_TIMEOUT
// seconds instead of a hang; EINTR (a SIGTERM asking the loop to stop) is
// retried, since the loop itself decides when to leave.
//
// Point-to-point links (pipeline stages) are separate sockets between the two
// ranks, opened after the star's handshake has told every rank where the
// others listen. Each link has a sender thread with a queue of owned copies:
// a send returns at once, so two neighbours that both send a large message
// before receiving cannot wait on each other's full socket buffers.
#include "host_comm.h"
#include "tcp.h"
#include "atomic_out.h"
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HC_MAGIC "LPHC"
#define HC_VERSION 2u
#define HC_HELLO_BYTES 40
#define HC_TABLE_MAGIC "LPAT"  // rank 0's table of point-to-point addresses
#define HC_LINK_MAGIC "LPPL"   // the hello on a point-to-point link
#define HC_LINK_BYTES 20
#define HC_MSG_MAGIC "LPPM"    // a point-to-point message's header
#define HC_MSG_BYTES 16
#define HC_ADDR_MAX 255
#define HC_CHUNK (1u << 20)    // a sender waits at most the timeout for each MiB to leave
#define HC_FRAME_BYTES 24
#define HC_MAX_SETTINGS 4096
enum { HC_F32 = 1, HC_F64 = 2, HC_ABORT = 3 };
enum { HC_OK = 0, HC_REFUSED = 1 };

// One buffered point-to-point message: the header and the payload, as they go out.
typedef struct p2p_msg {
    struct p2p_msg *next;
    size_t step;             // host_comm_set_step's when it was sent, for the message when the link breaks
    char what[128];
    size_t wire_bytes;
    unsigned char wire[];
} p2p_msg;

typedef struct {
    struct host_comm *c;
    int peer, fd;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work, idle;   // work: a message queued or stop; idle: the queue ran empty
    p2p_msg *head, *tail;        // head stays queued while the thread writes it (flush waits for it)
    int stop;
} p2p_link;

// Where a rank listens for point-to-point links (port 0: it takes none).
typedef struct {
    char host[HC_ADDR_MAX + 1];
    int port;
} hc_addr;

struct host_comm {
    int rank, world;
    int *fd;                 // rank 0: fd[r] for r >= 1; other ranks: fd[0], the link to rank 0
    double timeout;          // seconds one read or write may wait
    uint64_t seq;            // collectives done so far (ranks must agree)
    size_t step;             // for messages; 0 during start-up
    unsigned char *scratch;  // rank 0: one peer's vector while summing
    size_t scratch_bytes;
    char out_dir[4096];
    p2p_link *links;         // one per p2p peer
    size_t n_links;
    int *link_of;            // world entries: index into links, or -1
    int p2p_listen, p2p_port;   // this rank's listening socket while links open (-1 / 0: none)
    hc_addr *table;          // during host_comm_open: where every rank listens
};

// Whichever thread ends the process first (the main thread or a sender) prints
// its line; a second one waits here until exit takes it.
static pthread_mutex_t hc_dying = PTHREAD_MUTEX_INITIALIZER;

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
        // MSG_DONTWAIT: a blocking socket would otherwise wait in send() for all n bytes, past the deadline.
        ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, p, n, MSG_DONTWAIT);
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

// The lost-rank line, then exit 1; the caller holds hc_dying.
_Noreturn static void lost_say(const host_comm *c, int peer, const char *why, int seen_by_rank0, const char *what,
                               size_t step) {
    char during[256];
    if (step) snprintf(during, sizeof during, "%s of step %zu", what, step);
    else snprintf(during, sizeof during, "%s", what);
    if (c->rank == 0)
        die("rank 0: lost rank %d (%s) during %s; the newest complete checkpoint in %s is intact (continue with "
            "--resume, on any number of ranks)", peer, why, during, c->out_dir);
    die("rank %d: lost rank %d (%s%s) during %s; rank 0's newest complete checkpoint is intact (continue with "
        "--resume, on any number of ranks)", c->rank, peer, why, seen_by_rank0 ? ", seen by rank 0" : "", during);
}

// One line, then exit 1. Rank 0 first tells the other ranks which rank was
// lost (an abort frame), so that every surviving rank names the same culprit
// instead of "lost rank 0".
_Noreturn static void lost(host_comm *c, int peer, io_result r, int seen_by_rank0, const char *what) {
    char buf[256];
    // Before other calls change errno; rank 0's errno does not travel in an abort frame.
    const char *why = seen_by_rank0 && r == IO_ERROR ? "a socket error" : io_why(r, c->timeout, buf, sizeof buf);
    pthread_mutex_lock(&hc_dying);
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
    }
    lost_say(c, peer, why, seen_by_rank0, what, c->step);
}

// A point-to-point link broke (from the main thread or a sender). The star is
// left alone: the main thread may be using it, and the other ranks learn of
// this rank's end on their own links.
_Noreturn static void lost_p2p(const host_comm *c, int peer, io_result r, const char *what, size_t step) {
    char buf[256];
    const char *why = io_why(r, c->timeout, buf, sizeof buf);
    pthread_mutex_lock(&hc_dying);
    lost_say(c, peer, why, 0, what, step);
}

static void link_setup(int fd) {
    int one = 1;   // small frames (headers, the step's two doubles) must not wait for Nagle
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---- handshake ---------------------------------------------------------------
typedef struct {
    uint32_t version, world, rank, status;
    uint64_t arena_floats;
    uint32_t p2p_port;       // where this rank listens for point-to-point links; 0: none
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
    put_u32(buf + 32, h->p2p_port);
    put_u32(buf + 36, 0);
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
    h->p2p_port = get_u32(buf + 32);
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
// A socket address as numeric text; an IPv4 peer seen through a dual-stack
// IPv6 socket (::ffff:a.b.c.d) as plain a.b.c.d, which every rank can reach
// whatever family its own listening socket got.
static void addr_text(const struct sockaddr_storage *ss, socklen_t sl, char *out, size_t n) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        if (inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, (socklen_t)n)) return;
    } else if (getnameinfo((const struct sockaddr *)ss, sl, out, (socklen_t)n, NULL, 0, NI_NUMERICHOST) == 0) {
        return;
    }
    snprintf(out, n, "?");
}

// Rank 0's address as rank p reaches it: LORAPIPE_COMM_ADDR when set (the
// launcher of --ranks sets 127.0.0.1), else the local end of p's link.
static void rank0_addr(const host_comm *c, int p, char *out, size_t n) {
    const char *addr = getenv("LORAPIPE_COMM_ADDR");
    if (addr && *addr) { snprintf(out, n, "%s", addr); return; }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(c->fd[p], (struct sockaddr *)&ss, &sl) == 0) addr_text(&ss, sl, out, n);
    else snprintf(out, n, "?");
}

// The table: "LPAT", world u32, then per rank: port u32, L u32, L bytes of address.
static io_result table_send(const host_comm *c, int p, double deadline) {
    size_t cap = 8 + (size_t)c->world * (8 + HC_ADDR_MAX), len = 8;
    unsigned char *buf = xmalloc(cap);
    memcpy(buf, HC_TABLE_MAGIC, 4);
    put_u32(buf + 4, (uint32_t)c->world);
    for (int r = 0; r < c->world; r++) {
        char own[HC_ADDR_MAX + 1];
        const char *host = c->table[r].host;
        if (r == 0) { rank0_addr(c, p, own, sizeof own); host = own; }
        size_t l = strlen(host);
        put_u32(buf + len, (uint32_t)c->table[r].port);
        put_u32(buf + len + 4, (uint32_t)l);
        memcpy(buf + len + 8, host, l);
        len += 8 + l;
    }
    io_result res = io_full(c->fd[p], buf, len, 1, deadline);
    free(buf);
    return res;
}

static void table_recv(host_comm *c, double deadline) {
    const char *what = "the start-up address exchange";
    unsigned char h[8];
    io_result r = io_full(c->fd[0], h, sizeof h, 0, deadline);
    if (r != IO_OK) lost(c, 0, r, 0, what);
    if (memcmp(h, HC_TABLE_MAGIC, 4) || get_u32(h + 4) != (uint32_t)c->world)
        die("rank %d: rank 0 sent no address table after the handshake (another build of train?)", c->rank);
    for (int k = 0; k < c->world; k++) {
        if ((r = io_full(c->fd[0], h, sizeof h, 0, deadline)) != IO_OK) lost(c, 0, r, 0, what);
        uint32_t port = get_u32(h), l = get_u32(h + 4);
        if (port > 65535 || l > HC_ADDR_MAX) die("rank %d: rank 0's address table is damaged (rank %d)", c->rank, k);
        if ((r = io_full(c->fd[0], c->table[k].host, l, 0, deadline)) != IO_OK) lost(c, 0, r, 0, what);
        c->table[k].host[l] = 0;
        c->table[k].port = (int)port;
    }
}


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
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept(ls, (struct sockaddr *)&ss, &sl);
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
        // Where rank 0 saw it come from is where its neighbours reach it.
        addr_text(&ss, sl, c->table[h->rank].host, sizeof c->table[h->rank].host);
        c->table[h->rank].port = (int)h->p2p_port;
        joined++;
    }
    close(ls);
    c->table[0].port = c->p2p_port;
    for (int p = 1; p < c->world; p++) {
        io_result r = table_send(c, p, now_s() + c->timeout);
        if (r != IO_OK) lost(c, p, r, 0, "the start-up address exchange");
    }
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
                table_recv(c, now_s() + c->timeout);   // rank 0 sends it once every rank has joined
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

// ---- point-to-point links ---------------------------------------------------------------
// The link hello: "LPPL", version u32, from u32, to u32, status u32.
static io_result link_hello_send(int fd, uint32_t from, uint32_t to, uint32_t status, double deadline) {
    unsigned char b[HC_LINK_BYTES];
    memcpy(b, HC_LINK_MAGIC, 4);
    put_u32(b + 4, HC_VERSION);
    put_u32(b + 8, from);
    put_u32(b + 12, to);
    put_u32(b + 16, status);
    return io_full(fd, b, sizeof b, 1, deadline);
}

// IO_OK with *bad set when the bytes are not a link hello.
static io_result link_hello_recv(int fd, uint32_t *version, uint32_t *from, uint32_t *to, uint32_t *status, int *bad,
                                 double deadline) {
    unsigned char b[HC_LINK_BYTES] = {0};
    io_result r = io_full(fd, b, sizeof b, 0, deadline);
    *bad = r == IO_OK && memcmp(b, HC_LINK_MAGIC, 4) != 0;
    *version = get_u32(b + 4);
    *from = get_u32(b + 8);
    *to = get_u32(b + 12);
    *status = get_u32(b + 16);
    return r;
}

// The lower rank of each pair connects to the higher one's port. Every rank
// first connects to its higher peers, then accepts its lower ones: the highest
// rank only accepts, so by induction downwards every connect finds its peer
// accepting, whatever the peer graph.
static void link_connect(host_comm *c, p2p_link *l) {
    const hc_addr *a = &c->table[l->peer];
    if (a->port == 0)
        die("rank %d: rank %d takes no point-to-point links, but rank %d names it among its p2p peers (both ranks "
            "must name each other)", c->rank, l->peer, c->rank);
    char whose[64];
    snprintf(whose, sizeof whose, "rank %d's point-to-point address", l->peer);
    double deadline = now_s() + c->timeout;
    for (;;) {
        int fd = tcp_connect_as(a->host, a->port, c->rank, whose);
        if (fd >= 0) {
            link_setup(fd);
            uint32_t version, from, to, status;
            int bad;
            io_result r = link_hello_send(fd, (uint32_t)c->rank, (uint32_t)l->peer, HC_OK, deadline);
            if (r == IO_OK) r = link_hello_recv(fd, &version, &from, &to, &status, &bad, deadline);
            if (r == IO_OK && !bad) {
                if (version != HC_VERSION)
                    die("rank %d: rank %d's point-to-point link speaks protocol version %u, %u here (run the same "
                        "build of train on every rank)", c->rank, l->peer, version, HC_VERSION);
                if (status != HC_OK || from != (uint32_t)l->peer || to != (uint32_t)c->rank)
                    die("rank %d: rank %d refused the point-to-point link (it does not name rank %d among its p2p "
                        "peers; both ranks must name each other)", c->rank, l->peer, c->rank);
                l->fd = fd;
                return;
            }
            close(fd);   // not our peer's answer (yet): try again until the deadline
        }
        if (now_s() > deadline)
            die("rank %d: rank %d's point-to-point port %s:%d did not answer within %g s", c->rank, l->peer, a->host,
                a->port, c->timeout);
        usleep(50000);
    }
}

// Accept this rank's lower peers on its port until each has a link.
static void link_accept_lower(host_comm *c) {
    size_t want = 0, have = 0;
    for (size_t i = 0; i < c->n_links; i++) want += c->links[i].peer < c->rank;
    double deadline = now_s() + c->timeout;
    while (have < want) {
        double left = deadline - now_s();
        if (left <= 0) {
            char missing[256] = "";
            for (size_t i = 0; i < c->n_links && strlen(missing) < 200; i++)
                if (c->links[i].peer < c->rank && c->links[i].fd < 0)
                    snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%d",
                             missing[0] ? ", " : "", c->links[i].peer);
            die("rank %d: rank(s) %s did not open their point-to-point link to port %d within %g s (does each name "
                "rank %d among its p2p peers?)", c->rank, missing, c->p2p_port, c->timeout, c->rank);
        }
        struct pollfd pf = {c->p2p_listen, POLLIN, 0};
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;   // EINTR or the deadline: checked above
        int fd = accept(c->p2p_listen, NULL, NULL);
        if (fd < 0) continue;
        link_setup(fd);
        uint32_t version, from, to, status;
        int bad;
        io_result r = link_hello_recv(fd, &version, &from, &to, &status, &bad, now_s() + c->timeout);
        if (r != IO_OK || bad) {   // a port probe or a stray client
            warn("rank %d: ignoring a connection on port %d that is not a lorapipe rank", c->rank, c->p2p_port);
            close(fd);
            continue;
        }
        char why[256] = "";
        int li = from < (uint32_t)c->world ? c->link_of[from] : -1;
        if (version != HC_VERSION)
            snprintf(why, sizeof why, "protocol version %u there, %u here (run the same build of train on every rank)",
                     version, HC_VERSION);
        else if (to != (uint32_t)c->rank)
            snprintf(why, sizeof why, "it was meant for rank %u", to);
        else if (li < 0 || from >= (uint32_t)c->rank)
            snprintf(why, sizeof why, "rank %d does not name rank %u among its p2p peers (both ranks must name each "
                     "other)", c->rank, from);
        else if (c->links[li].fd >= 0)
            snprintf(why, sizeof why, "rank %u already has a link", from);
        link_hello_send(fd, (uint32_t)c->rank, from, why[0] ? HC_REFUSED : HC_OK, now_s() + c->timeout);
        if (why[0]) die("rank %d: refusing a point-to-point link from rank %u: %s", c->rank, from, why);
        c->links[li].fd = fd;
        have++;
    }
}

static void *link_sender(void *arg);

static void links_open(host_comm *c) {
    for (size_t i = 0; i < c->n_links; i++)
        if (c->links[i].peer > c->rank) link_connect(c, &c->links[i]);
    link_accept_lower(c);
    close(c->p2p_listen);
    c->p2p_listen = -1;
    // Signals stay with the main thread: the training loop's handlers decide when to stop.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (size_t i = 0; i < c->n_links; i++) {
        p2p_link *l = &c->links[i];
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->work, NULL);
        pthread_cond_init(&l->idle, NULL);
        int e = pthread_create(&l->thread, NULL, link_sender, l);
        if (e) die("rank %d: cannot start the sender thread for rank %d: %s", c->rank, l->peer, strerror(e));
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void *link_sender(void *arg) {
    p2p_link *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->head && !l->stop) pthread_cond_wait(&l->work, &l->mu);
        if (!l->head) break;   // stopped with nothing left to write
        p2p_msg *m = l->head;
        pthread_mutex_unlock(&l->mu);
        // The timeout bounds each MiB, not the whole message: a 64 MB message
        // to a neighbour that is still computing may take a while to drain.
        io_result r = IO_OK;
        for (size_t off = 0; off < m->wire_bytes && r == IO_OK;) {
            size_t k = m->wire_bytes - off < HC_CHUNK ? m->wire_bytes - off : HC_CHUNK;
            r = io_full(l->fd, m->wire + off, k, 1, now_s() + l->c->timeout);
            off += k;
        }
        if (r != IO_OK) lost_p2p(l->c, l->peer, r, m->what, m->step);
        pthread_mutex_lock(&l->mu);
        l->head = m->next;
        if (!l->head) {
            l->tail = NULL;
            pthread_cond_broadcast(&l->idle);
        }
        free(m);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static p2p_link *link_to(host_comm *c, int peer, const char *what) {
    int li = peer >= 0 && peer < c->world ? c->link_of[peer] : -1;
    if (li < 0) die("rank %d: no point-to-point link to rank %d for %s (not among its p2p peers)", c->rank, peer, what);
    return &c->links[li];
}

void host_comm_send(host_comm *c, int peer, uint32_t tag, const void *buf, size_t bytes, const char *what) {
    p2p_link *l = link_to(c, peer, what);
    p2p_msg *m = xmalloc(sizeof *m + HC_MSG_BYTES + bytes);
    m->next = NULL;
    m->step = c->step;
    snprintf(m->what, sizeof m->what, "%s", what);
    m->wire_bytes = HC_MSG_BYTES + bytes;
    memcpy(m->wire, HC_MSG_MAGIC, 4);
    put_u32(m->wire + 4, tag);
    put_u64(m->wire + 8, (uint64_t)bytes);
    if (bytes) memcpy(m->wire + HC_MSG_BYTES, buf, bytes);
    pthread_mutex_lock(&l->mu);
    if (l->tail) l->tail->next = m;
    else l->head = m;
    l->tail = m;
    pthread_cond_signal(&l->work);
    pthread_mutex_unlock(&l->mu);
}

void host_comm_recv(host_comm *c, int peer, uint32_t tag, void *buf, size_t bytes, const char *what) {
    p2p_link *l = link_to(c, peer, what);
    unsigned char h[HC_MSG_BYTES];
    double deadline = now_s() + c->timeout;
    io_result r = io_full(l->fd, h, sizeof h, 0, deadline);
    if (r != IO_OK) lost_p2p(c, peer, r, what, c->step);
    char during[256];
    if (c->step) snprintf(during, sizeof during, "%s of step %zu", what, c->step);
    else snprintf(during, sizeof during, "%s", what);
    if (memcmp(h, HC_MSG_MAGIC, 4)) {
        pthread_mutex_lock(&hc_dying);
        die("rank %d: rank %d sent bytes that are not a point-to-point message during %s (the link is out of step)",
            c->rank, peer, during);
    }
    uint32_t got_tag = get_u32(h + 4);
    uint64_t got_bytes = get_u64(h + 8);
    if (got_tag != tag || got_bytes != (uint64_t)bytes) {
        pthread_mutex_lock(&hc_dying);
        die("rank %d: the message from rank %d during %s has tag %u and %llu bytes, rank %d expected tag %u and %zu "
            "bytes (the ranks disagree about the schedule)", c->rank, peer, during, got_tag,
            (unsigned long long)got_bytes, c->rank, tag, bytes);
    }
    if (bytes && (r = io_full(l->fd, buf, bytes, 0, deadline)) != IO_OK) lost_p2p(c, peer, r, what, c->step);
}

void host_comm_flush(host_comm *c) {
    for (size_t i = 0; i < c->n_links; i++) {
        p2p_link *l = &c->links[i];
        pthread_mutex_lock(&l->mu);
        while (l->head) pthread_cond_wait(&l->idle, &l->mu);
        pthread_mutex_unlock(&l->mu);
    }
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
    c->link_of = xmalloc((size_t)c->world * sizeof *c->link_of);
    for (int r = 0; r < c->world; r++) c->link_of[r] = -1;
    c->links = xcalloc(cfg->n_p2p_peers ? cfg->n_p2p_peers : 1, sizeof *c->links);
    for (size_t i = 0; i < cfg->n_p2p_peers; i++) {
        int p = cfg->p2p_peers[i];
        if (p < 0 || p >= c->world || p == c->rank)
            die("rank %d: p2p peer %d is not another rank of the %d", c->rank, p, c->world);
        if (c->link_of[p] >= 0) die("rank %d: p2p peer %d is named twice", c->rank, p);
        c->link_of[p] = (int)c->n_links;
        c->links[c->n_links++] = (p2p_link){.c = c, .peer = p, .fd = -1};
    }
    c->p2p_listen = -1;
    // Listen before the handshake: the port travels in the hello.
    if (c->n_links) c->p2p_listen = tcp_listen_as(c->rank, 0, (int)c->n_links + 4, &c->p2p_port);
    c->table = xcalloc((size_t)c->world, sizeof *c->table);
    hello *mine = xcalloc(1, sizeof *mine);
    *mine = (hello){.version = HC_VERSION, .world = (uint32_t)cfg->world, .rank = (uint32_t)cfg->rank,
                    .status = HC_OK, .arena_floats = cfg->arena_floats, .p2p_port = (uint32_t)c->p2p_port};
    memcpy(mine->settings, cfg->settings, slen + 1);
    if (c->rank == 0) open_rank0(c, cfg, mine);
    else open_peer(c, cfg, mine);
    free(mine);
    if (c->n_links) links_open(c);
    free(c->table);
    c->table = NULL;
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
    host_comm_flush(c);
    for (size_t i = 0; i < c->n_links; i++) {
        p2p_link *l = &c->links[i];
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->work);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->work);
        pthread_cond_destroy(&l->idle);
        close(l->fd);
    }
    free(c->links);
    free(c->link_of);
    for (int r = 0; r < c->world; r++) if (c->fd[r] >= 0) close(c->fd[r]);
    free(c->fd);
    free(c->scratch);
    free(c);
}

void host_comm_gather_slices(host_comm *c, float *v, size_t n, size_t lo, size_t hi, const char *what) {
    memset(v, 0, lo * sizeof(float));
    memset(v + hi, 0, (n - hi) * sizeof(float));
    host_comm_allreduce_f32(c, v, n, what);
}

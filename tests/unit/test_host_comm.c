// tests/unit/test_host_comm.c: point-to-point messages between CPU ranks
// (tools/train/host_comm.c). Each case forks its ranks as processes that meet
// through a rendezvous file on 127.0.0.1 and link as a chain 0 <-> 1 <-> 2,
// the way pipeline stages do; the parent checks every rank's exit status and
// what it printed. A watchdog kills ranks that hang (a deadlock is a failure,
// not a stuck test).
#include "check.h"
#include "host_comm.h"
#include "tap.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORLD 3
#define BIG (48u << 20)

static char tmp[64];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

// Peers other than the chain, for the cases where the ranks disagree: rank r
// names odd_peers[r][0 .. odd_n[r] - 1].
static int odd, odd_n[MAX_WORLD], odd_peers[MAX_WORLD][2];

// A rank's side of a case; its return value is the process's exit status.
typedef int (*rank_fn)(host_comm *c, int rank, int world);

typedef struct {
    int status[MAX_WORLD];      // exit status, or -1: killed by the watchdog or a signal
    char err[MAX_WORLD][4096];  // what the rank printed on stderr
    double secs[MAX_WORLD];     // from the start of the case to the rank's end
} outcome;

// Run `world` ranks of `fn` linked as a chain, with LORAPIPE_COMM_TIMEOUT=timeout.
static void run_case(const char *name, int world, const char *timeout, rank_fn fn, outcome *o) {
    char rdzv[128];
    snprintf(rdzv, sizeof rdzv, "%s/%s.rdzv", tmp, name);
    pid_t pid[MAX_WORLD];
    double t0 = now_s();
    fflush(stdout);
    for (int r = 0; r < world; r++) {
        pid[r] = fork();
        if (pid[r] < 0) die("fork: %s", strerror(errno));
        if (pid[r] == 0) {
            char path[160];
            snprintf(path, sizeof path, "%s/%s.err.%d", tmp, name, r);
            if (!freopen(path, "w", stderr)) _exit(99);
            setvbuf(stderr, NULL, _IONBF, 0);
            setenv("LORAPIPE_COMM_TIMEOUT", timeout, 1);
            setenv("LORAPIPE_COMM_ADDR", "127.0.0.1", 1);
            int peers[2], n = 0;
            if (r > 0) peers[n++] = r - 1;
            if (r + 1 < world) peers[n++] = r + 1;
            if (odd) {
                n = odd_n[r];
                memcpy(peers, odd_peers[r], sizeof peers);
            }
            host_comm_cfg cfg = {.rank = r, .world = world, .rdzv_file = rdzv, .arena_floats = 1000,
                                 .settings = "model=test lora-r=4", .out_dir = tmp, .p2p_peers = peers,
                                 .n_p2p_peers = (size_t)n};
            host_comm *c = host_comm_open(&cfg);
            int rc = fn(c, r, world);
            host_comm_close(c);
            _exit(rc);
        }
    }
    int left = world;
    for (int r = 0; r < world; r++) o->status[r] = -2;
    while (left) {
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        for (int r = 0; p > 0 && r < world; r++)
            if (pid[r] == p) {
                o->status[r] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                o->secs[r] = now_s() - t0;
                left--;
            }
        if (p > 0) continue;
        if (now_s() - t0 > 30) {   // hung: a deadlock or a missed timeout
            for (int r = 0; r < world; r++)
                if (o->status[r] == -2) { kill(pid[r], SIGKILL); waitpid(pid[r], NULL, 0); o->status[r] = -1; }
            break;
        }
        usleep(5000);
    }
    for (int r = 0; r < world; r++) {
        char path[160];
        snprintf(path, sizeof path, "%s/%s.err.%d", tmp, name, r);
        o->err[r][0] = 0;
        FILE *f = fopen(path, "r");
        if (f) {
            size_t k = fread(o->err[r], 1, sizeof o->err[r] - 1, f);
            o->err[r][k] = 0;
            fclose(f);
            unlink(path);
        }
    }
    unlink(rdzv);
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int bad(int rank, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rank %d: check failed: ", rank);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

// What rank `from` sends rank `to` in message `k`: differs per direction and message.
static void pattern(unsigned char *p, size_t n, int from, int to, int k) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i >> 3) * 131u + i * 7u + (unsigned)from * 17u +
                                                          (unsigned)to * 5u + (unsigned)k * 29u);
}

static int check_allreduce(host_comm *c, int rank, int world, float bias) {
    float v[1000];
    for (int i = 0; i < 1000; i++) v[i] = (float)(rank + 1) * bias + (float)i;
    host_comm_allreduce_f32(c, v, 1000, "the test all-reduce");
    float want_sum = bias * (float)(world * (world + 1) / 2);
    for (int i = 0; i < 1000; i++)
        if (v[i] != want_sum + (float)(world * i)) return bad(rank, "all-reduce: v[%d] = %g", i, v[i]);
    double d[2] = {rank + 0.5, 1.0};
    host_comm_allreduce_f64(c, d, 2, "the test f64 all-reduce");
    if (d[0] != world * world / 2.0 || d[1] != world) return bad(rank, "f64 all-reduce: %g %g", d[0], d[1]);
    return 0;
}

// (a) 1 byte, 4 KiB and 48 MiB each way at once: every rank sends to all its
// neighbours before it receives, which only works when sends do not wait for
// the peer to read. (b) Ten messages each way, 0 to 333 bytes, arrive in order.
// (c) The star all-reduce before, between and after.
static int case_chain(host_comm *c, int rank, int world) {
    int nb[2], n = 0;
    if (rank > 0) nb[n++] = rank - 1;
    if (rank + 1 < world) nb[n++] = rank + 1;
    int rc = check_allreduce(c, rank, world, 1.0f);
    if (rc) return rc;
    static const size_t sizes[] = {1, 4096, BIG};
    unsigned char *buf = xmalloc(BIG), *want = xmalloc(BIG);
    for (int s = 0; s < 3; s++) {
        host_comm_set_step(c, (size_t)s + 1);
        for (int j = 0; j < n; j++) {
            pattern(buf, sizes[s], rank, nb[j], s);
            host_comm_send(c, nb[j], 10u + (uint32_t)s, buf, sizes[s], "the test activations");
            memset(buf, 0xee, sizes[s]);   // the send kept its own copy
        }
        for (int j = 0; j < n; j++) {
            host_comm_recv(c, nb[j], 10u + (uint32_t)s, buf, sizes[s], "the test activations");
            pattern(want, sizes[s], nb[j], rank, s);
            if (memcmp(buf, want, sizes[s])) return bad(rank, "%zu bytes from rank %d differ", sizes[s], nb[j]);
        }
    }
    rc = check_allreduce(c, rank, world, 2.0f);
    if (rc) return rc;
    for (int k = 0; k < 10; k++)
        for (int j = 0; j < n; j++) {
            pattern(buf, (size_t)k * 37, rank, nb[j], 100 + k);
            host_comm_send(c, nb[j], 100u + (uint32_t)k, buf, (size_t)k * 37, "the test sequence");
        }
    for (int j = 0; j < n; j++)
        for (int k = 0; k < 10; k++) {
            // A message out of order has another tag and length: the receiver would exit 1.
            host_comm_recv(c, nb[j], 100u + (uint32_t)k, buf, (size_t)k * 37, "the test sequence");
            pattern(want, (size_t)k * 37, nb[j], rank, 100 + k);
            if (memcmp(buf, want, (size_t)k * 37)) return bad(rank, "message %d from rank %d differs", k, nb[j]);
        }
    host_comm_flush(c);
    rc = check_allreduce(c, rank, world, 3.0f);
    free(buf);
    free(want);
    return rc;
}

// (d) The ranks disagree about the schedule: rank 0 sends tag 7 with
// mismatch_bytes bytes, rank 1 expects tag 8 / 16 bytes (mismatch_tag) or tag 7
// and 16 bytes. Rank 0 then waits for an answer that never comes.
static uint32_t mismatch_tag;
static size_t mismatch_bytes;

static int case_mismatch(host_comm *c, int rank, int world) {
    unsigned char buf[64] = {0};
    host_comm_set_step(c, 3);
    if (rank == 0) {
        host_comm_send(c, 1, 7, buf, mismatch_bytes, "the test activations");
        host_comm_recv(c, 1, 9, buf, 16, "the test gradients");
        return bad(rank, "rank 1 answered");
    }
    host_comm_recv(c, 0, mismatch_tag, buf, 16, "the test activations");
    return bad(rank, "the mismatched message was accepted");
}

// (e) Rank 2 ends without a word; rank 1 waits for its message, rank 0 for rank 1's.
static int case_exit(host_comm *c, int rank, int world) {
    unsigned char buf[16];
    host_comm_set_step(c, 4);
    if (rank == 2) _exit(0);
    if (rank == 1) host_comm_recv(c, 2, 1, buf, sizeof buf, "the test gradients");
    else host_comm_recv(c, 1, 1, buf, sizeof buf, "the test gradients");
    return bad(rank, "a message arrived from a rank that sent none");
}

// Rank 1 ends while rank 0's sender thread still writes 48 MiB to it: the
// thread, not the waiting main thread, ends rank 0 with the lost-rank line.
static int case_send_lost(host_comm *c, int rank, int world) {
    if (rank == 1) _exit(0);
    unsigned char *buf = xcalloc(BIG, 1);
    host_comm_set_step(c, 6);
    host_comm_send(c, 1, 1, buf, BIG, "the test activations");
    host_comm_set_step(c, 7);   // the message names the step of the send
    host_comm_flush(c);
    return bad(rank, "48 MiB were written to a rank that had exited");
}

// (e) Rank 0 stays alive but silent past the timeout.
static int case_silent(host_comm *c, int rank, int world) {
    unsigned char buf[16];
    if (rank == 0) {
        usleep(3500000);
        _exit(0);
    }
    host_comm_recv(c, 0, 1, buf, sizeof buf, "the test activations");
    return bad(rank, "a message arrived from a rank that sent none");
}

static int case_idle(host_comm *c, int rank, int world) { return 0; }

int main(int argc, char **argv) {
    check_init(argv[0]);
    snprintf(tmp, sizeof tmp, "/tmp/lp_host_comm_XXXXXX");
    if (!mkdtemp(tmp)) die("mkdtemp: %s", strerror(errno));
    outcome *o = xcalloc(1, sizeof *o);

    double t0 = now_s();
    run_case("chain", 3, "10", case_chain, o);
    for (int r = 0; r < 3; r++)
        T_OK(o->status[r] == 0 && !o->err[r][0], "chain: rank %d exited %d: %s", r, o->status[r], o->err[r]);
    printf("# chain case: %.2f s\n", now_s() - t0);

    mismatch_tag = 8, mismatch_bytes = 16;
    run_case("tag", 2, "5", case_mismatch, o);
    T_OK(o->status[1] == 1 && lines(o->err[1]) == 1 &&
             strstr(o->err[1], "rank 1: the message from rank 0 during the test activations of step 3 has tag 7 and "
                               "16 bytes, rank 1 expected tag 8 and 16 bytes (the ranks disagree about the schedule)"),
         "tag mismatch: rank 1 exited %d: %s", o->status[1], o->err[1]);
    T_OK(o->status[0] == 1 && strstr(o->err[0], "rank 0: lost rank 1 (connection"),
         "tag mismatch: rank 0 exited %d: %s", o->status[0], o->err[0]);

    mismatch_tag = 7, mismatch_bytes = 32;
    run_case("length", 2, "5", case_mismatch, o);
    T_OK(o->status[1] == 1 && lines(o->err[1]) == 1 &&
             strstr(o->err[1], "rank 1: the message from rank 0 during the test activations of step 3 has tag 7 and "
                               "32 bytes, rank 1 expected tag 7 and 16 bytes"),
         "length mismatch: rank 1 exited %d: %s", o->status[1], o->err[1]);

    run_case("exit", 3, "5", case_exit, o);
    T_OK(o->status[2] == 0, "exit: rank 2 exited %d: %s", o->status[2], o->err[2]);
    T_OK(o->status[1] == 1 && lines(o->err[1]) == 1 &&
             strstr(o->err[1], "rank 1: lost rank 2 (connection closed) during the test gradients of step 4; rank "
                               "0's newest complete checkpoint is intact"),
         "exit: rank 1 exited %d: %s", o->status[1], o->err[1]);
    T_OK(o->secs[1] < 5, "exit: rank 1 took %.1f s, over the 5 s timeout", o->secs[1]);
    T_OK(o->status[0] == 1 && lines(o->err[0]) == 1 &&
             strstr(o->err[0], "rank 0: lost rank 1 (connection") && strstr(o->err[0], tmp),
         "exit: rank 0 exited %d: %s", o->status[0], o->err[0]);

    // Both sides must name each other: rank 0 names rank 1, which takes no links.
    odd = 1;
    odd_n[0] = 1, odd_peers[0][0] = 1, odd_n[1] = 0;
    run_case("unnamed", 2, "5", case_idle, o);
    T_OK(o->status[0] == 1 && lines(o->err[0]) == 1 &&
             strstr(o->err[0], "rank 0: rank 1 takes no point-to-point links, but rank 0 names it among its p2p peers"),
         "unnamed: rank 0 exited %d: %s", o->status[0], o->err[0]);
    // Rank 2 listens (it names rank 1, which never comes) and refuses rank 0, which it does not name.
    odd_n[0] = 1, odd_peers[0][0] = 2, odd_n[1] = 0, odd_n[2] = 1, odd_peers[2][0] = 1;
    run_case("refused", 3, "5", case_idle, o);
    T_OK(o->status[2] == 1 && lines(o->err[2]) == 1 &&
             strstr(o->err[2], "rank 2: refusing a point-to-point link from rank 0: rank 2 does not name rank 0 among "
                               "its p2p peers"),
         "refused: rank 2 exited %d: %s", o->status[2], o->err[2]);
    T_OK(o->status[0] == 1 && lines(o->err[0]) == 1 &&
             strstr(o->err[0], "rank 0: rank 2 refused the point-to-point link (it does not name rank 0"),
         "refused: rank 0 exited %d: %s", o->status[0], o->err[0]);
    odd = 0;

    run_case("send_lost", 2, "5", case_send_lost, o);
    T_OK(o->status[0] == 1 && lines(o->err[0]) == 1 && strstr(o->err[0], "rank 0: lost rank 1 (connection ") &&
             strstr(o->err[0], ") during the test activations of step 6; the newest complete checkpoint in ") &&
             strstr(o->err[0], tmp),
         "send_lost: rank 0 exited %d: %s", o->status[0], o->err[0]);

    double t1 = now_s();
    run_case("silent", 2, "2", case_silent, o);
    T_OK(o->status[1] == 1 && lines(o->err[1]) == 1 &&
             strstr(o->err[1], "rank 1: lost rank 0 (no answer within 2 s) during the test activations;"),
         "silent: rank 1 exited %d: %s", o->status[1], o->err[1]);
    T_OK(o->secs[1] >= 1.9 && o->secs[1] < 3.4, "silent: rank 1 gave up after %.2f s, not about 2", o->secs[1]);
    printf("# the other cases: %.2f s\n", now_s() - t1);

    free(o);
    rmdir(tmp);
    return T_DONE("test_host_comm");
}

// tools/train/dist.c: rank discovery, rendezvous and the one-host launcher.
#include "dist.h"
#include "tcp.h"
#include "atomic_out.h"
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RDZV_TIMEOUT_S 600

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 20) die("environment variable %s=%s is not a rank or count", name, v);
    return (int)x;
}

void dist_from_env(dist_info *d, const char *rendezvous) {
    memset(d, 0, sizeof *d);
    d->world = 1;
    const char *ma = getenv("MASTER_ADDR"), *mp = getenv("MASTER_PORT");
    if (getenv("LORAPIPE_RANK")) {              // started by our own launcher
        d->rank = env_int("LORAPIPE_RANK", 0);
        d->world = env_int("LORAPIPE_WORLD", 1);
        d->local_rank = env_int("LORAPIPE_LOCAL_RANK", d->rank);
        snprintf(d->rdzv_file, sizeof d->rdzv_file, "%s", getenv("LORAPIPE_RDZV") ? getenv("LORAPIPE_RDZV") : "");
        d->launched = 1;
    } else if (getenv("RANK") && getenv("WORLD_SIZE")) {   // torchrun and friends
        d->rank = env_int("RANK", 0);
        d->world = env_int("WORLD_SIZE", 1);
        d->local_rank = env_int("LOCAL_RANK", 0);
        d->launched = 1;
    } else if (getenv("SLURM_PROCID") && getenv("SLURM_NTASKS")) {
        d->rank = env_int("SLURM_PROCID", 0);
        d->world = env_int("SLURM_NTASKS", 1);
        d->local_rank = env_int("SLURM_LOCALID", 0);
        d->launched = 1;
    }
    if (d->launched && !d->rdzv_file[0]) {
        if (rendezvous) snprintf(d->rdzv_file, sizeof d->rdzv_file, "%s", rendezvous);
        else if (ma && mp) {
            snprintf(d->master_addr, sizeof d->master_addr, "%s", ma);
            d->master_port = env_int("MASTER_PORT", 0);
        } else if (d->world > 1) {
            die("rank %d of %d: no rendezvous: set MASTER_ADDR and MASTER_PORT, or give --rendezvous FILE "
                "(a path every rank can read)", d->rank, d->world);
        }
    }
    if (d->rank >= d->world) die("rank %d is not below the world size %d", d->rank, d->world);
}

// ---- rendezvous ----------------------------------------------------------------
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void exchange_file(const dist_info *d, unsigned char *buf, size_t bytes) {
    if (d->rank == 0) {
        aout o;
        aout_open(&o, d->rdzv_file);   // written whole, then renamed: readers never see half an id
        aout_write(&o, buf, bytes);
        aout_commit(&o);
        return;
    }
    double t0 = now();
    for (;;) {
        FILE *f = fopen(d->rdzv_file, "rb");
        if (f) {
            size_t got = fread(buf, 1, bytes, f);
            fclose(f);
            if (got == bytes) return;
        }
        if (now() - t0 > RDZV_TIMEOUT_S)
            die("rank %d: rank 0 did not publish %s within %d s", d->rank, d->rdzv_file, RDZV_TIMEOUT_S);
        usleep(20000);
    }
}

static void exchange_tcp(const dist_info *d, unsigned char *buf, size_t bytes) {
    if (d->rank == 0) {
        int port, s = tcp_listen(d->master_port, d->world, &port);
        for (int k = 1; k < d->world; k++) {
            int c = accept(s, NULL, NULL);
            if (c < 0) die("rank 0: accept on port %d: %s", port, strerror(errno));
            if (write(c, buf, bytes) != (ssize_t)bytes) die("rank 0: sending the NCCL id: %s", strerror(errno));
            close(c);
        }
        close(s);
        return;
    }
    double t0 = now();
    for (;;) {
        int s = tcp_connect_once(d->master_addr, d->master_port, d->rank);
        if (s >= 0) {
            size_t got = 0;
            while (got < bytes) {
                ssize_t n = read(s, buf + got, bytes - got);
                if (n <= 0) break;
                got += (size_t)n;
            }
            close(s);
            if (got == bytes) return;
        }
        if (now() - t0 > RDZV_TIMEOUT_S)
            die("rank %d: rank 0 at %s:%d did not answer within %d s", d->rank, d->master_addr, d->master_port,
                RDZV_TIMEOUT_S);
        usleep(100000);
    }
}

void dist_exchange(const dist_info *d, unsigned char *buf, size_t bytes) {
    if (d->world <= 1) return;
    if (d->rdzv_file[0]) exchange_file(d, buf, bytes);
    else exchange_tcp(d, buf, bytes);
}

// ---- the launcher -----------------------------------------------------------------
static volatile sig_atomic_t forwarded;
static void on_signal(int sig) { forwarded = sig; }

int dist_launch(int world, char **argv, const char *out_dir) {
    pid_t *pid = xcalloc((size_t)world, sizeof *pid);
    char rdzv[4096];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    // A name no other job uses: stale files of earlier runs are never read.
    snprintf(rdzv, sizeof rdzv, "%s/.rendezvous-%d-%ld%09ld", out_dir, (int)getpid(), (long)ts.tv_sec, ts.tv_nsec);
    int handle = cleanup_add(rdzv, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fflush(NULL);
    for (int r = 0; r < world; r++) {
        pid[r] = fork();
        if (pid[r] < 0) die("cannot start rank %d: %s", r, strerror(errno));
        if (pid[r] == 0) {
            char v[32];
            snprintf(v, sizeof v, "%d", r); setenv("LORAPIPE_RANK", v, 1); setenv("LORAPIPE_LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%d", world); setenv("LORAPIPE_WORLD", v, 1);
            setenv("LORAPIPE_RDZV", rdzv, 1);
            setenv("NCCL_NVLS_ENABLE", getenv("NCCL_NVLS_ENABLE") ? getenv("NCCL_NVLS_ENABLE") : "0", 1);
            signal(SIGINT, SIG_IGN);   // the launcher forwards signals; a terminal's ^C goes to it
            execv("/proc/self/exe", argv);
            fprintf(stderr, "train: cannot start rank %d: %s\n", r, strerror(errno));
            _exit(1);
        }
    }
    int alive = world, status_out = 0, failed_rank = -1, failed_status = 0, sent = 0;
    double t_fail = 0;
    while (alive) {
        if (forwarded && !sent) {   // every rank finishes its step and rank 0 writes the checkpoint
            for (int r = 0; r < world; r++) if (pid[r] > 0) kill(pid[r], SIGTERM);
            status_out = 128 + forwarded;
            sent = 1;
        }
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p <= 0) {
            if (failed_rank >= 0 && now() - t_fail > 30)   // peers stuck in a collective: stop them
                for (int r = 0; r < world; r++) if (pid[r] > 0) kill(pid[r], SIGKILL);
            usleep(20000);
            continue;
        }
        int r = 0;
        while (r < world && pid[r] != p) r++;
        if (r == world) continue;
        pid[r] = -1;
        alive--;
        // Ranks leave together after an interruption (a signal, or --interrupt-after):
        // exit 130/143 with a checkpoint written is not a failure.
        int interrupted = WIFEXITED(st) && (WEXITSTATUS(st) == 130 || WEXITSTATUS(st) == 143);
        int bad = !interrupted && (WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
        if (interrupted && !status_out) status_out = WEXITSTATUS(st);
        if (bad && failed_rank < 0) {
            failed_rank = r;
            failed_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            t_fail = now();
            for (int k = 0; k < world; k++) if (pid[k] > 0) kill(pid[k], SIGTERM);
        }
    }
    unlink(rdzv);
    cleanup_forget(handle);
    free(pid);
    if (failed_rank >= 0) {
        warn("rank %d of %d failed (%s %d); the other ranks were stopped; the newest complete checkpoint in %s "
             "is intact (continue with --resume, on any number of GPUs or ranks)", failed_rank, world,
             failed_status > 128 ? "signal" : "exit status", failed_status > 128 ? failed_status - 128 : failed_status,
             out_dir);
        return 1;
    }
    return status_out;
}

// tools/train/host_comm.h: collectives between CPU ranks over plain TCP.
//
// The CPU backend has no NCCL: its data-parallel ranks sum gradients through
// rank 0 (a star). Every other rank connects to rank 0 (MASTER_ADDR:MASTER_PORT,
// or the "host port" rank 0 publishes in a --rendezvous file), says who it is in
// a handshake that rank 0 checks (world size, rank, LoRA arena length, the
// settings every rank must share), and then each all-reduce is: the ranks send
// their vector to rank 0, rank 0 adds them in rank order (0 + 1 + 2 + ... : the
// same bits on every run) and sends the sum back, so every rank continues with
// identical numbers. A peer that vanishes or stays silent longer than
// LORAPIPE_COMM_TIMEOUT seconds (default 600) ends this rank with one line
// naming the lost rank and what was being done. The wire format is in
// docs/FORMATS.md ("CPU rank collectives").
#ifndef LORAPIPE_HOST_COMM_H
#define LORAPIPE_HOST_COMM_H
#include <stddef.h>

typedef struct host_comm host_comm;

typedef struct {
    int rank, world;
    const char *rdzv_file;     // shared-file rendezvous, or "" / NULL for TCP at master_addr:master_port
    const char *master_addr;
    int master_port;
    size_t arena_floats;       // length of the gradient arena every rank must share
    const char *settings;      // "key=value ..." that must be equal on every rank (model, LoRA, optimiser)
    const char *out_dir;       // named in the message when a peer is lost (rank 0 writes checkpoints there)
} host_comm_cfg;

// Connect the ranks (rank 0 listens, the others connect) and check the
// handshake; dies with one line on a mismatch or when a rank does not come.
host_comm *host_comm_open(const host_comm_cfg *cfg);
// The 1-based optimizer step under way, named when a peer is lost.
void host_comm_set_step(host_comm *c, size_t step);
// Sum v (n values) over the ranks in rank order; every rank gets the sum.
// what names the operation in error messages ("the gradient all-reduce").
void host_comm_allreduce_f32(host_comm *c, float *v, size_t n, const char *what);
void host_comm_allreduce_f64(host_comm *c, double *v, size_t n, const char *what);
void host_comm_close(host_comm *c);

#endif

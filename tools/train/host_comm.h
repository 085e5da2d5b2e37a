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
// naming the lost rank and what was being done. Pipeline stages also exchange
// point-to-point messages over direct links between neighbours (below), not
// through rank 0. The wire format is in docs/FORMATS.md ("CPU rank
// collectives").
#ifndef LORAPIPE_HOST_COMM_H
#define LORAPIPE_HOST_COMM_H
#include <stddef.h>
#include <stdint.h>

typedef struct host_comm host_comm;

typedef struct {
    int rank, world;
    const char *rdzv_file;     // shared-file rendezvous, or "" / NULL for TCP at master_addr:master_port
    const char *master_addr;
    int master_port;
    size_t arena_floats;       // length of the gradient arena every rank must share
    const char *settings;      // "key=value ..." that must be equal on every rank (model, LoRA, optimiser)
    const char *out_dir;       // named in the message when a peer is lost (rank 0 writes checkpoints there)
    const int *p2p_peers;      // ranks this rank exchanges point-to-point messages with (may be NULL)
    size_t n_p2p_peers;
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
// Every rank owns v[lo, hi) (disjoint slices covering what is wanted): v
// becomes the owners' values everywhere (the rest is zeroed and summed, and a
// sum with zeros is exact).
void host_comm_gather_slices(host_comm *c, float *v, size_t n, size_t lo, size_t hi, const char *what);

// Point-to-point messages between two ranks (pipeline stages). Links open in
// host_comm_open to the ranks named in p2p_peers (both sides must name each
// other). A send is buffered: it copies buf and returns at once, and a
// sender thread per link writes it, so two ranks sending to each other never
// deadlock whatever the message sizes. recv blocks until the whole message has
// arrived, bounded by LORAPIPE_COMM_TIMEOUT like every other wait. Messages
// between two ranks arrive in the order they were sent; each carries its
// length and a tag, and a mismatch (wrong length or tag: the ranks disagree
// about the schedule) ends the rank with one line naming both ranks, `what`
// and the two lengths/tags.
void host_comm_send(host_comm *c, int peer, uint32_t tag, const void *buf, size_t bytes, const char *what);
void host_comm_recv(host_comm *c, int peer, uint32_t tag, void *buf, size_t bytes, const char *what);
// Block until every buffered send has been written (before closing, or to bound memory).
void host_comm_flush(host_comm *c);
// Flushes the point-to-point links, stops their sender threads, closes every socket.
void host_comm_close(host_comm *c);

#endif

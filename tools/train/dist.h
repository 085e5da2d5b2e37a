// tools/train/dist.h: data-parallel processes: who this process is, how the
// ranks find each other, and the launcher that starts one process per GPU.
//
// Three ways to be started:
//   - by ourselves: train --plan with R replicas (or --ranks N, CPU ranks) and no
//     rank variables forks R copies of itself (LORAPIPE_RANK / _WORLD /
//     _LOCAL_RANK / _RDZV set), waits for them, forwards SIGINT/SIGTERM, and
//     stops them all when one fails;
//   - by a launcher, torchrun-style: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
//     MASTER_PORT; the NCCL id travels over TCP from rank 0;
//   - by Slurm: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, with MASTER_ADDR /
//     MASTER_PORT or --rendezvous FILE (a path every rank can read).
// The CUDA backend passes the NCCL id through dist_exchange; CPU ranks use the
// same addresses for their own TCP collectives (host_comm.h).
#ifndef LORAPIPE_DIST_H
#define LORAPIPE_DIST_H
#include <stddef.h>

typedef struct {
    int rank, world, local_rank;
    int launched;                 // 1 when this process is a rank (any of the three ways)
    char rdzv_file[4096];         // shared-file rendezvous, or ""
    char master_addr[256];        // TCP rendezvous, or ""
    int master_port;
} dist_info;

// Fill from the environment (and the --rendezvous option, which may be NULL).
void dist_from_env(dist_info *d, const char *rendezvous);

// Launcher: run `world` copies of argv as ranks on this host (rank i on GPU i)
// and return the exit status to use: 0 when all succeeded, the signal status
// when interrupted, 1 when a rank failed (the others are stopped).
int dist_launch(int world, char **argv, const char *out_dir);

// Rank 0 gives `bytes` bytes (the NCCL id), every other rank receives them.
void dist_exchange(const dist_info *d, unsigned char *buf, size_t bytes);

#endif

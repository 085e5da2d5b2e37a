// tools/train/main.c: command line of bin/train.
#include "train.h"
#include "check.h"
#include "atomic_out.h"
#include "dist.h"
#include "plan.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static void usage(FILE *f) {
    fprintf(f,
"usage: train --model DIR --data FILE.pack --out DIR [options]\n"
"\n"
"LoRA fine-tuning of a Qwen2-family model (Qwen1.5, Qwen2, Qwen2.5) that follows\n"
"transformers' Trainer + PEFT step for step. Writes OUT/adapter_model.safetensors and\n"
"OUT/adapter_config.json (PeftModel.from_pretrained loads them), OUT/metrics.jsonl and\n"
"OUT/checkpoint-N/ folders.\n"
"\n"
"inputs and outputs:\n"
"  --model DIR            Hugging Face model folder (config.json + safetensors)\n"
"  --data FILE.pack       training data made by `pack`\n"
"  --out DIR              output folder (created)\n"
"  --eval-data FILE.pack  held-out data: token-mean loss every --eval-steps and at the end\n"
"  --eval-steps N         evaluation interval in optimizer steps (default: only at the end)\n"
"  --init-adapter DIR     start from this PEFT adapter (its r, alpha and targets are used)\n"
"  --resume               continue from the newest OUT/checkpoint-N, bit for bit\n"
"  --save-steps N         write OUT/checkpoint-N every N steps (default 100; 0: never)\n"
"  --save-total-limit N   keep the newest N checkpoints (default 2; 0: all)\n"
"\n"
"device:\n"
"  --device cpu|cuda|auto CPU reference or CUDA (default auto: CUDA when a GPU is present)\n"
"  --plan FILE            placement from shard-plan: with R replicas of S layer stages, train\n"
"                         starts R x S processes on this host, each on the plan's GPU (or\n"
"                         joins a launcher's: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,\n"
"                         MASTER_PORT, or Slurm's); with --device cpu they are CPU ranks\n"
"  --ranks N              CPU data parallelism on this host: train starts N --device cpu\n"
"                         processes that sum their gradients over TCP through rank 0\n"
"                         (launchers start CPU ranks themselves: RANK/WORLD_SIZE/MASTER_ADDR/\n"
"                         MASTER_PORT or Slurm's variables, with --device cpu; the wait for\n"
"                         a silent rank is LORAPIPE_COMM_TIMEOUT seconds, default 600)\n"
"  --rendezvous FILE      multi-host start without MASTER_ADDR: a path all ranks can read\n"
"  --threads N            CPU threads (default: all cores)\n"
"  --recompute            CUDA: recompute each layer's activations in the backward pass\n"
"  --offload              CUDA: keep the frozen layer weights in pinned host memory and stream each\n"
"                         layer through two device slots (implies --recompute; for GPUs too small)\n"
"  --share-prefix         CUDA: where every sequence of a micro-batch starts with the same tokens\n"
"                         (a system prompt) and no target among them, compute those rows once and\n"
"                         let every sequence attend to them. Exact with --lora-dropout 0; with\n"
"                         dropout, the shared rows draw one mask instead of one per sequence\n"
"\n"
"LoRA (defaults: the tutorial's):\n"
"  --lora-r N             rank (default 8)\n"
"  --lora-alpha A         alpha; scaling = alpha/r (default 32)\n"
"  --lora-dropout P       dropout on the adapter input (default 0.1)\n"
"  --rslora               scaling = alpha/sqrt(r)\n"
"  --target LIST          modules: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all\n"
"                         (default q_proj,k_proj,v_proj,o_proj)\n"
"\n"
"optimisation (defaults: the tutorial's TrainingArguments):\n"
"  --lr X                 peak learning rate (default 1e-4)\n"
"  --epochs N             epochs to train, at most those stored in the pack (default: all of them)\n"
"  --accum N              micro-batches per optimizer step (default: the pack's --accum)\n"
"  --max-steps N          stop after N optimizer steps (the schedule spans N)\n"
"  --schedule S           cosine, linear or constant (default cosine)\n"
"  --warmup-ratio X       warm-up steps = ceil(X * steps) (default 0.03)\n"
"  --warmup-steps N       warm-up steps (overrides the ratio)\n"
"  --weight-decay X       decoupled weight decay on A and B (default 0.01)\n"
"  --max-grad-norm X      global-norm clipping; 0 disables (default 0.3)\n"
"  --adam-beta1 X, --adam-beta2 X, --adam-eps X   (defaults 0.9, 0.999, 1e-8)\n"
"  --seed N               LoRA init and dropout (default 42)\n"
"\n"
"  --quiet                no progress on stderr\n"
"  --debug-grads FILE     write the first step's gradients (before clipping) as safetensors\n"
"  --interrupt-after N    behave as if SIGINT arrived after step N (for tests)\n"
"  --help                 this text\n"
"\n"
"exit status: 0 done, 1 error (message names the file), 2 usage, 128+signal after an\n"
"interruption that wrote a checkpoint.\n");
}

static double parse_double(const char *opt, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end) die_usage("%s: not a number: '%s'", opt, s);
    return v;
}

static long parse_long(const char *opt, const char *s, long min) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < min) die_usage("%s: expected an integer >= %ld, got '%s'", opt, min, s);
    return v;
}

// N busy CPU processes on the cores of one host: share them unless told otherwise.
static void share_cores(int ranks, int threads) {
    if (threads || getenv("OMP_NUM_THREADS")) return;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char v[32];
    snprintf(v, sizeof v, "%ld", cores / ranks > 1 ? cores / ranks : 1);
    setenv("OMP_NUM_THREADS", v, 1);
    setenv("OPENBLAS_NUM_THREADS", v, 0);   // its own pool, sized to all cores otherwise
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    train_opts o = {0};
    o.device = DEV_AUTO;
    o.lora_r = 8; o.lora_alpha = 32; o.lora_dropout = 0.1;
    o.lr = 1e-4; o.warmup_ratio = 0.03; o.warmup_steps = -1; o.weight_decay = 0.01; o.max_grad_norm = 0.3;
    o.adam_beta1 = 0.9; o.adam_beta2 = 0.999; o.adam_eps = 1e-8;
    o.schedule = SCHED_COSINE; o.max_steps = -1; o.seed = 42;
    o.save_steps = 100; o.save_total_limit = 2; o.interrupt_after = -1;
    const char *targets = "q_proj,k_proj,v_proj,o_proj";
    int ranks = 0;   // --ranks: CPU ranks this process starts
    enum { O_MODEL = 256, O_DATA, O_OUT, O_DEVICE, O_PLAN, O_R, O_ALPHA, O_DROPOUT, O_TARGET, O_LR, O_EPOCHS,
           O_ACCUM, O_WR, O_WS, O_SCHED, O_WD, O_CLIP, O_SEED, O_RESUME, O_INIT, O_EVAL, O_EVAL_STEPS,
           O_SAVE, O_LIMIT, O_MAXSTEPS, O_THREADS, O_RSLORA, O_B1, O_B2, O_EPS, O_QUIET, O_RECOMPUTE, O_OFFLOAD, O_SHARE, O_DEBUG_GRADS, O_INTERRUPT, O_RDZV, O_RANKS, O_HELP };
    static const struct option opts[] = {
        {"model", 1, 0, O_MODEL}, {"data", 1, 0, O_DATA}, {"out", 1, 0, O_OUT}, {"device", 1, 0, O_DEVICE},
        {"plan", 1, 0, O_PLAN}, {"lora-r", 1, 0, O_R}, {"lora-alpha", 1, 0, O_ALPHA},
        {"lora-dropout", 1, 0, O_DROPOUT}, {"target", 1, 0, O_TARGET}, {"lr", 1, 0, O_LR},
        {"epochs", 1, 0, O_EPOCHS}, {"accum", 1, 0, O_ACCUM}, {"warmup-ratio", 1, 0, O_WR},
        {"warmup-steps", 1, 0, O_WS}, {"schedule", 1, 0, O_SCHED}, {"weight-decay", 1, 0, O_WD},
        {"max-grad-norm", 1, 0, O_CLIP}, {"seed", 1, 0, O_SEED}, {"resume", 0, 0, O_RESUME},
        {"init-adapter", 1, 0, O_INIT}, {"eval-data", 1, 0, O_EVAL}, {"eval-steps", 1, 0, O_EVAL_STEPS},
        {"save-steps", 1, 0, O_SAVE}, {"save-total-limit", 1, 0, O_LIMIT}, {"max-steps", 1, 0, O_MAXSTEPS},
        {"threads", 1, 0, O_THREADS}, {"rslora", 0, 0, O_RSLORA}, {"adam-beta1", 1, 0, O_B1},
        {"adam-beta2", 1, 0, O_B2}, {"adam-eps", 1, 0, O_EPS}, {"quiet", 0, 0, O_QUIET},
        {"recompute", 0, 0, O_RECOMPUTE}, {"offload", 0, 0, O_OFFLOAD}, {"share-prefix", 0, 0, O_SHARE}, {"debug-grads", 1, 0, O_DEBUG_GRADS},
        {"interrupt-after", 1, 0, O_INTERRUPT}, {"rendezvous", 1, 0, O_RDZV}, {"ranks", 1, 0, O_RANKS}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o.model_dir = optarg; break;
        case O_DATA: o.data_path = optarg; break;
        case O_OUT: o.out_dir = optarg; break;
        case O_DEVICE:
            if (!strcmp(optarg, "cpu")) o.device = DEV_CPU;
            else if (!strcmp(optarg, "cuda")) o.device = DEV_CUDA;
            else if (!strcmp(optarg, "auto")) o.device = DEV_AUTO;
            else die_usage("--device: expected cpu, cuda or auto, got '%s'", optarg);
            break;
        case O_PLAN: o.plan_path = optarg; break;
        case O_R: o.lora_r = (size_t)parse_long("--lora-r", optarg, 1); break;
        case O_ALPHA: o.lora_alpha = parse_double("--lora-alpha", optarg); break;
        case O_DROPOUT:
            o.lora_dropout = parse_double("--lora-dropout", optarg);
            if (o.lora_dropout < 0 || o.lora_dropout >= 1) die_usage("--lora-dropout must be in [0, 1)");
            break;
        case O_TARGET: targets = optarg; break;
        case O_LR: o.lr = parse_double("--lr", optarg); break;
        case O_EPOCHS: o.epochs = (size_t)parse_long("--epochs", optarg, 1); break;
        case O_ACCUM: o.accum = (size_t)parse_long("--accum", optarg, 1); break;
        case O_WR:
            o.warmup_ratio = parse_double("--warmup-ratio", optarg);
            if (o.warmup_ratio < 0 || o.warmup_ratio > 1) die_usage("--warmup-ratio must be in [0, 1]");
            break;
        case O_WS: o.warmup_steps = parse_long("--warmup-steps", optarg, 0); break;
        case O_SCHED:
            if (sched_parse(optarg, &o.schedule)) die_usage("--schedule: expected cosine, linear or constant");
            break;
        case O_WD: o.weight_decay = parse_double("--weight-decay", optarg); break;
        case O_CLIP: o.max_grad_norm = parse_double("--max-grad-norm", optarg); break;
        case O_SEED: o.seed = (uint32_t)parse_long("--seed", optarg, 0); break;
        case O_RESUME: o.resume = 1; break;
        case O_INIT: o.init_adapter = optarg; break;
        case O_EVAL: o.eval_path = optarg; break;
        case O_EVAL_STEPS: o.eval_steps = (size_t)parse_long("--eval-steps", optarg, 1); break;
        case O_SAVE: o.save_steps = (size_t)parse_long("--save-steps", optarg, 0); break;
        case O_LIMIT: o.save_total_limit = (size_t)parse_long("--save-total-limit", optarg, 0); break;
        case O_MAXSTEPS: o.max_steps = parse_long("--max-steps", optarg, 1); break;
        case O_THREADS: o.threads = (int)parse_long("--threads", optarg, 1); break;
        case O_RSLORA: o.rslora = 1; break;
        case O_B1: o.adam_beta1 = parse_double("--adam-beta1", optarg); break;
        case O_B2: o.adam_beta2 = parse_double("--adam-beta2", optarg); break;
        case O_EPS: o.adam_eps = parse_double("--adam-eps", optarg); break;
        case O_QUIET: o.quiet = 1; break;
        case O_RECOMPUTE: o.recompute = 1; o.recompute_set = 1; break;
        case O_OFFLOAD: o.offload = 1; o.offload_set = 1; break;
        case O_SHARE: o.share_prefix = 1; break;
        case O_DEBUG_GRADS: o.debug_grads = optarg; break;
        case O_INTERRUPT: o.interrupt_after = parse_long("--interrupt-after", optarg, 1); break;
        case O_RDZV: o.rendezvous = optarg; break;
        case O_RANKS: ranks = (int)parse_long("--ranks", optarg, 1); break;
        case O_HELP: usage(stdout); return 0;
        default: die_usage("unknown option");
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (!o.model_dir) die_usage("--model DIR is required");
    if (!o.data_path) die_usage("--data FILE.pack is required");
    if (!o.out_dir) die_usage("--out DIR is required");
    char err[256];
    if (lora_parse_targets(targets, o.targets, err, sizeof err)) die_usage("--target: %s", err);
    if (ranks) {
        if (o.device == DEV_CUDA) die_usage("--ranks starts CPU ranks; for GPUs use --plan (shard-plan)");
        if (o.plan_path) die_usage("--ranks and --plan both say how many ranks to start; give one");
        if (ranks > 1024) die_usage("--ranks: at most 1024 ranks, got %d", ranks);
        o.device = DEV_CPU;
    }
    if (o.eval_path && !o.eval_steps) o.eval_steps = (size_t)-1 / 2;   // only at the end
#ifdef _OPENMP
    if (o.threads) omp_set_num_threads(o.threads);
#endif
    mkdir_p(o.out_dir);
    dist_info di;
    dist_from_env(&di, o.rendezvous);
    if (o.plan_path && !di.launched) {
        plan pl;
        char perr[512];
        if (plan_load(&pl, o.plan_path, perr, sizeof perr)) die("%s", perr);
        size_t nranks = pl.replicas * pl.stages;
        plan_free(&pl);
        // Several replicas or stages: become the launcher of one process per place.
        if (nranks > 1) {
            if (o.device == DEV_CPU || (o.device == DEV_AUTO && !cuda_available())) share_cores((int)nranks, o.threads);
            setenv("LORAPIPE_COMM_ADDR", "127.0.0.1", 1);   // host collectives stay on this host
            return dist_launch((int)nranks, argv, o.out_dir);
        }
    }
    if (ranks && di.launched && di.world != ranks)
        die_usage("--ranks %d, but a launcher started this process as rank %d of %d (leave --ranks out under a "
                  "launcher)", ranks, di.rank, di.world);
    if (ranks > 1 && !di.launched) {
        share_cores(ranks, o.threads);
        // The ranks reach rank 0 on this host, whatever its name resolves to.
        setenv("LORAPIPE_COMM_ADDR", "127.0.0.1", 1);
        return dist_launch(ranks, argv, o.out_dir);
    }
    o.rank = di.rank;
    o.world = di.world;
    o.local_rank = di.local_rank;
    o.rdzv_file = di.rdzv_file;
    o.master_addr = di.master_addr;
    o.master_port = di.master_port;
    if (o.rank != 0) o.quiet = 1;
    return train_run(&o);
}

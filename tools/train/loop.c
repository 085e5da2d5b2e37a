// tools/train/loop.c: the Trainer's loop, step for step (spec §2, §4):
// windows of accum micro-batches that never cross an epoch, each micro-batch's
// summed loss divided by the window's target-token count, clipping on the
// global norm, AdamW, the schedule stepped after the optimizer, logging,
// evaluation and checkpoints; SIGINT/SIGTERM end the current step, write a
// checkpoint and exit.
#include "train.h"
#include "check.h"
#include "hf_model.h"
#include "metrics.h"
#include "adapter.h"
#include "plan.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) {
    if (stop_signal) { signal(sig, SIG_DFL); raise(sig); }   // a second one: leave now
    stop_signal = sig;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// What a checkpoint must agree with to be resumed bit-exactly.
static void make_fingerprint(char *buf, size_t n, const train_opts *o, const train_data *d,
                             const lora_layout *l, size_t accum, size_t epochs, size_t total) {
    char tg[128] = "";
    for (int m = 0; m < LORA_NMOD; m++)
        if (l->on[m]) { strcat(tg, lora_module_name(m)); strcat(tg, ","); }
    snprintf(n ? buf : NULL, n,
             "data=%s/%u accum=%zu epochs=%zu steps=%zu r=%zu alpha=%g rslora=%d dropout=%g targets=%s lr=%g "
             "schedule=%s warmup=%ld/%g wd=%g clip=%g betas=%g,%g eps=%g seed=%u",
             train_data_path(d), train_data_max_token(d), accum, epochs, total, l->r, l->alpha, l->rslora,
             o->lora_dropout, tg, o->lr, sched_name(o->schedule), o->warmup_steps, o->warmup_ratio,
             o->weight_decay, o->max_grad_norm, o->adam_beta1, o->adam_beta2, o->adam_eps, o->seed);
}

// The summed loss over the evaluation set, in one process or through the
// pipeline's stages (then the last stage's sum; 0 on the others).
static double evaluate(backend *b, pipeline *p, train_data *ev, size_t *targets_out) {
    double sum = 0.0;
    size_t targets = 0;
    for (size_t i = 0; i < train_data_eval_count(ev); i++) {
        const micro_batch *mb = train_data_eval_batch(ev, i);
        targets += micro_batch_targets(mb);
        sum += p ? pipeline_eval(p, mb) : b->eval_loss(b, mb);
    }
    *targets_out = targets;
    return sum;
}

int train_run(const train_opts *o) {
    double t_start = now_s();
    hf_model model;
    hf_model_open_or_die(&model, o->model_dir);
    model_dims dims = train_model_dims(&model);

    train_data *data = train_data_open(o->data_path);
    if (train_data_max_token(data) >= dims.vocab)
        die("%s: token id %u is outside the vocabulary of %s (%zu rows); was the pack made with this model's tokenizer?",
            o->data_path, train_data_max_token(data), o->model_dir, dims.vocab);
    // A pack made with --keep-empty can hold only prompt tokens: the Trainer
    // would divide by zero targets (a NaN loss); there is nothing to learn.
    if (train_data_targets(data) == 0)
        die("%s: none of the %llu samples has a target token (every label after the first is -100); nothing to "
            "train on", o->data_path, (unsigned long long)train_data_samples(data));
    train_data *eval = NULL;
    if (o->eval_path) {
        eval = train_data_open(o->eval_path);
        if (train_data_max_token(eval) >= dims.vocab)
            die("%s: token id %u is outside the vocabulary of %s (%zu rows)", o->eval_path,
                train_data_max_token(eval), o->model_dir, dims.vocab);
    }

    // A placement from shard-plan: it must be for this model; it decides recompute.
    train_opts ow = *o;
    o = &ow;
    if (o->plan_path) {
        plan pl;
        char perr[512];
        if (plan_load(&pl, o->plan_path, perr, sizeof perr)) die("%s", perr);
        if (strcmp(pl.fingerprint, plan_fingerprint(&dims)))
            die("%s: this plan is for another model (%s); %s is %s; run shard-plan for it", o->plan_path,
                pl.fingerprint, o->model_dir, plan_fingerprint(&dims));
        if (!o->recompute_set) ow.recompute = pl.recompute;
        if (!o->offload_set) ow.offload = pl.offload;
        ow.memory_cap = pl.memory_cap;
        if ((size_t)o->world != pl.replicas * pl.stages)
            die("%s places %zu rank(s) (%zu replica(s) x %zu stage(s)) but this run has %d (a launcher's WORLD_SIZE "
                "must match the plan)", o->plan_path, pl.replicas * pl.stages, pl.replicas, pl.stages, o->world);
        if (pl.stages > 1) {
            if (pl.layers != dims.layers || !pl.bounds)
                die("%s: stages for %zu layers; %s has %zu", o->plan_path, pl.layers, o->model_dir, dims.layers);
            ow.stages = (int)pl.stages;
            ow.stage = o->rank % ow.stages;
            ow.layer0 = pl.bounds[ow.stage];
            ow.layer1 = pl.bounds[ow.stage + 1];
            size_t used = 0;
            for (size_t s = 0; s <= pl.stages; s++)
                used += (size_t)snprintf(ow.stage_bounds + used, sizeof ow.stage_bounds - used, "%s%zu", s ? "," : "",
                                         pl.bounds[s]);
        }
        // Our own launcher starts rank i wherever the plan puts it (two stages may
        // share a GPU); under torchrun or Slurm LOCAL_RANK names the GPU.
        if (getenv("LORAPIPE_RANK") && pl.gpu) ow.local_rank = pl.gpu[o->rank];
        plan_free(&pl);
    }
    if (o->stages <= 1) { ow.stages = 1; ow.stage = 0; ow.layer0 = 0; ow.layer1 = dims.layers; }
    if (o->offload && o->device == DEV_CPU) {   // a plan's offload is for its GPUs; asked for by hand it is a mistake
        if (o->offload_set) die_usage("--offload is a GPU setting (use --device cuda)");
        ow.offload = 0;
    }
    if (o->offload) ow.recompute = 1;   // streaming the layers only makes sense with one activation set
    size_t epochs = o->epochs ? o->epochs : train_data_epochs(data);
    if (epochs > train_data_epochs(data))
        die("%s holds %zu epoch(s) but --epochs %zu was asked; re-run pack with --epochs %zu",
            o->data_path, train_data_epochs(data), epochs, epochs);
    // accum is the global number of micro-batches per optimizer step; each of
    // the world's ranks runs accum / world of them.
    // Pipeline stages of one replica share its micro-batches: the data is dealt
    // over the replicas (world and rank below), and every rank takes part in the
    // collectives.
    size_t accum = o->accum ? o->accum : train_data_accum(data);
    size_t stages = (size_t)o->stages, ranks = (size_t)o->world, rank = (size_t)o->rank;
    size_t world = ranks / stages, replica = rank / stages;
    if (accum % world)
        die("%zu micro-batches per optimizer step do not split evenly over %zu %s (pack with --accum a multiple "
            "of the %s count, or give --accum)", accum, world, stages > 1 ? "replicas" : "ranks",
            stages > 1 ? "replica" : "GPU");
    size_t accum_rank = accum / world;
    size_t total = train_data_steps(data, epochs, accum_rank, world);
    if (o->max_steps >= 0 && (size_t)o->max_steps < total) total = (size_t)o->max_steps;
    if (total == 0) die("%s: no optimizer step to run (no micro-batches)", o->data_path);

    // LoRA settings: an initial adapter brings its own r, alpha and targets.
    lora_layout l;
    adapter_init init = {0};
    if (o->init_adapter) adapter_init_read(&init, o->init_adapter, &model);
    lora_layout_init(&l, &dims, o->init_adapter ? init.r : o->lora_r, o->init_adapter ? init.alpha : o->lora_alpha,
                     o->init_adapter ? init.rslora : o->rslora, o->init_adapter ? init.on : o->targets);

    if (o->stages > 1) {
        if (o->stage > 0) ow.stage_peers[ow.n_stage_peers++] = o->rank - 1;
        if (o->stage + 1 < o->stages) ow.stage_peers[ow.n_stage_peers++] = o->rank + 1;
        // One replica: no gradient all-reduce; the state is gathered when read.
        ow.own_only = o->world == o->stages;
        ow.own_lo = lora_layer_begin(&l, o->layer0);
        ow.own_hi = lora_layer_begin(&l, o->layer1);
    }

    optim_cfg oc = {.lr = o->lr, .beta1 = o->adam_beta1, .beta2 = o->adam_beta2, .eps = o->adam_eps,
                    .weight_decay = o->weight_decay, .max_grad_norm = o->max_grad_norm, .sched = o->schedule,
                    .total_steps = total};
    oc.warmup_steps = o->warmup_steps >= 0 ? (size_t)o->warmup_steps : warmup_from_ratio(total, o->warmup_ratio);

    size_t max_tokens, max_len;
    train_data_max_batch(data, &max_tokens, &max_len);
    if (eval) {
        size_t et, el;
        train_data_max_batch(eval, &et, &el);
        if (et > max_tokens) max_tokens = et;
        if (el > max_len) max_len = el;
    }
    backend *b = NULL;
    // Data-parallel ranks too: without --device they run on CUDA where a GPU is
    // present, else as CPU ranks whose collectives go over TCP (host_comm.h).
    int want_cuda = o->device == DEV_CUDA || (o->device == DEV_AUTO && cuda_available());
    if (want_cuda) b = cuda_backend_create(o, &dims, &model, &l, &oc, max_tokens, max_len);
    else b = cpu_backend_create(o, &dims, &model, &l, &oc, max_tokens, max_len);

    char fp[1024];
    make_fingerprint(fp, sizeof fp, o, data, &l, accum, epochs, total);
    train_state st = {0};
    st.params = xcalloc(l.n_params, sizeof(float));
    st.m = xcalloc(l.n_params, sizeof(float));
    st.v = xcalloc(l.n_params, sizeof(float));
    size_t start = 0;
    if (rank == 0) checkpoint_remove_stale(o->out_dir);
    if (o->resume && checkpoint_load_latest(o, &l, &st, fp) == 0) {
        start = st.step;
        b->set_state(b, st.params, st.m, st.v);
        if (rank == 0) fprintf(stderr, "train: resuming from %s/checkpoint-%zu\n", o->out_dir, start);
    } else {
        if (o->resume) fprintf(stderr, "train: --resume: no checkpoint in %s, starting from step 0\n", o->out_dir);
        if (o->init_adapter) adapter_init_params(&init, &l, st.params);
        else lora_init_peft(&l, st.params, o->seed, train_model_is_half(&model));
        b->set_state(b, st.params, NULL, NULL);
    }
    adapter_init_free(&init);
    if (ranks > 1) {
        // Each rank reads --resume's checkpoint from its own --out: ranks that
        // found different ones (a host without the shared folder) would train
        // different steps together.
        double *at = xcalloc(ranks, sizeof *at);
        at[rank] = (double)start;
        b->allreduce(b, at, ranks);
        for (size_t r = 1; r < ranks; r++)
            if (at[r] != at[0])
                die("rank %zu: rank %zu starts at step %.0f and rank 0 at step %.0f: --resume reads the newest "
                    "checkpoint in each rank's own --out (give every rank the same folder, or copy rank 0's "
                    "newest checkpoint-N into the others')", rank, r, at[r], at[0]);
        free(at);
    }

    metrics mt;
    memset(&mt, 0, sizeof mt);
    if (rank == 0) metrics_open(&mt, o->out_dir, start, total, o->quiet);
    if (rank == 0) {
        fprintf(stderr, "train: %s backend; %zu layers, hidden %zu, vocab %zu; LoRA r=%zu alpha=%g%s on", b->name,
                dims.layers, dims.hidden, dims.vocab, l.r, l.alpha, l.rslora ? " (rsLoRA)" : "");
        for (int m = 0; m < LORA_NMOD; m++) if (l.on[m]) fprintf(stderr, " %s", lora_module_name(m));
        fprintf(stderr, ": %zu trainable parameters\n", l.n_params);
        fprintf(stderr, "train: %zu optimizer steps (%zu epoch(s), %zu micro-batches per step), warm-up %zu, %s schedule, lr %g\n",
                total, epochs, accum, oc.warmup_steps, sched_name(oc.sched), oc.lr);
    }
    // Stages hold different layers: each reports its own memory.
    if (rank == 0 || stages > 1) b->report(b);

    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    pipeline *pipe = stages > 1 ? pipeline_create(b, o, dims.hidden, max_tokens, accum_rank) : NULL;
    int all_read = stages > 1;   // stages keep their own layers' state: reading it is a collective
    dropout_cfg *drops = xcalloc(accum_rank, sizeof *drops);
    train_window w;
    size_t last_saved = start;
    mt.t0 = now_s();
    if (rank == 0) fprintf(stderr, "train: start-up took %.2f s\n", mt.t0 - t_start);
    for (size_t step = start; step < total; step++) {
        train_data_window(data, step, accum_rank, world, replica, epochs, &w);
        double inv = w.targets_global ? 1.0 / (double)w.targets_global : 0.0;
        if (b->begin_step) b->begin_step(b, step + 1);
        b->zero_grads(b);
        double sum = 0.0;
        for (size_t k = 0; k < w.n_mb; k++) {
            // The key names the micro-batch's place in the global window (slot k of
            // replica r is micro-batch k * world + r, as the pack schedule deals them),
            // so that N replicas draw the masks one draws: the same curve with dropout.
            uint64_t j = (uint64_t)k * world + replica;
            drops[k] = (dropout_cfg){(float)o->lora_dropout, ((uint64_t)o->seed << 40) ^ ((uint64_t)step << 8) ^ j};
        }
        if (pipe) sum = pipeline_window(pipe, step, w.mb, w.n_mb, (float)inv, drops);
        else
            for (size_t k = 0; k < w.n_mb; k++)
                if (w.mb[k].n_tok) sum += b->micro_step(b, &w.mb[k], (float)inv, drops[k]);
        b->reduce_grads(b);
        // The loss of the whole window, and whether any rank was asked to stop:
        // every rank must leave after the same step.
        if (o->interrupt_after >= 0 && step + 1 == (size_t)o->interrupt_after) stop_signal = SIGINT;
        double agree[2] = {sum, stop_signal ? (double)stop_signal : 0.0};
        b->allreduce(b, agree, 2);
        sum = agree[0];
        if (agree[1] > 0 && !stop_signal) stop_signal = (int)agree[1] >= SIGTERM ? SIGTERM : SIGINT;
        if (o->debug_grads && step == start && (rank == 0 || all_read)) {
            float *g = xmalloc(l.n_params * sizeof(float));
            b->get_grads(b, g);
            if (rank == 0) lora_arena_save(&l, g, o->debug_grads);
            free(g);
        }
        double loss = w.targets_global ? sum * inv : 0.0;
        double norm = b->grad_norm(b);
        if (!isfinite(loss) || !isfinite(norm)) {
            metrics_close(&mt);
            die("step %zu: %s is %s; stopping without applying it (last checkpoint: %s)", step + 1,
                isfinite(loss) ? "the gradient norm" : "the loss", isnan(isfinite(loss) ? norm : loss) ? "NaN" : "infinite",
                last_saved ? "kept in --out" : "none");
        }
        double lr = oc.lr * sched_lambda(&oc, step);
        b->adamw(b, clip_coef(oc.max_grad_norm, norm), lr, step + 1);
        if (rank == 0) metrics_step(&mt, step + 1, w.epoch, loss, lr, norm, w.tokens_global, w.targets_global, now_s());

        int last = step + 1 == total;
        if (eval && o->eval_steps && ((step + 1) % o->eval_steps == 0 || last)) {
            // One process evaluates; pipeline stages of replica 0 do it together.
            size_t et = 0;
            double sum_e = 0.0;
            if (!pipe && rank == 0) sum_e = evaluate(b, NULL, eval, &et);
            else if (pipe) {
                double v[2] = {0.0, 0.0};
                if (replica == 0) v[0] = evaluate(b, pipe, eval, &et);
                if (o->stage == o->stages - 1 && replica == 0) v[1] = (double)et;
                b->allreduce(b, v, 2);
                sum_e = v[0];
                et = (size_t)v[1];
            }
            if (rank == 0) metrics_eval(&mt, step + 1, et ? sum_e / (double)et : NAN, et);
        }
        int save = (o->save_steps && (step + 1) % o->save_steps == 0) || stop_signal;
        if (save && !last && (rank == 0 || all_read)) {
            st.step = step + 1;
            b->get_state(b, st.params, st.m, st.v);
            if (rank == 0) checkpoint_save(o, &l, &dims, &st, total, fp);
            last_saved = step + 1;
        }
        if (stop_signal && !last) {
            metrics_close(&mt);
            if (rank == 0)
                fprintf(stderr, "train: interrupted by %s after step %zu; checkpoint written to %s/checkpoint-%zu; "
                        "continue with --resume\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM", step + 1, o->out_dir,
                        step + 1);
            exit(128 + stop_signal);
        }
    }
    metrics_close(&mt);
    pipeline_destroy(pipe);
    free(drops);
    if (rank == 0 || all_read) b->get_state(b, st.params, NULL, NULL);
    if (rank == 0) {
        adapter_write_final(o, &l, st.params, o->out_dir);
        fprintf(stderr, "train: done; adapter written to %s (adapter_model.safetensors, adapter_config.json)\n",
                o->out_dir);
    }
    b->destroy(b);
    free(st.params); free(st.m); free(st.v);
    lora_layout_free(&l);
    train_data_close(data);
    if (eval) train_data_close(eval);
    hf_model_close(&model);
    return 0;
}

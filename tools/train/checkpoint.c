// tools/train/checkpoint.c: the final adapter and OUT/checkpoint-N folders.
//
// A checkpoint holds what a bit-exact resume needs: the adapter (PEFT files,
// loadable on their own), the AdamW moments (optimizer.safetensors, F32,
// keys exp_avg.<adapter key> / exp_avg_sq.<adapter key>) and
// trainer_state.json (step, total steps, the run's fingerprint). The LoRA
// dropout masks and the data order are functions of (seed, step), so no RNG
// state needs saving. Each folder is built under a temporary name and renamed
// into place: a checkpoint-N folder exists only when it is complete.
#include "train.h"
#include "adapter.h"
#include "atomic_out.h"
#include "check.h"
#include "safetensors.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT 1

// Adapter description of the run (the modules point into params, not copied).
static void build_adapter(const train_opts *o, const lora_layout *l, const float *params, adapter_config *cfg,
                          adapter_lora **mods, size_t *n) {
    adapter_config_init(cfg);
    cfg->r = l->r;
    cfg->lora_alpha = l->alpha;
    cfg->lora_dropout = o->lora_dropout;
    cfg->use_rslora = l->rslora;
    cfg->base_model_name_or_path = xstrdup(o->model_dir);
    size_t nt = 0;
    for (int m = 0; m < LORA_NMOD; m++) nt += l->on[m] != 0;
    cfg->target_modules = xcalloc(nt, sizeof(char *));
    for (int m = 0; m < LORA_NMOD; m++)
        if (l->on[m]) cfg->target_modules[cfg->n_target++] = xstrdup(lora_module_name(m));
    *mods = xcalloc(l->n_tensors / 2 + 1, sizeof(adapter_lora));
    *n = 0;
    for (size_t i = 0; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!l->on[m]) continue;
            adapter_lora *a = &(*mods)[(*n)++];
            char name[96];
            snprintf(name, sizeof name, "model.layers.%zu.%s", i, lora_module_path(m));
            a->module = xstrdup(name);
            a->r = l->r;
            a->in = l->in[m];
            a->out = l->out[m];
            a->A = (float *)params + l->off_a[i * LORA_NMOD + m];
            a->B = (float *)params + l->off_b[i * LORA_NMOD + m];
        }
}

static void free_adapter(adapter_config *cfg, adapter_lora *mods, size_t n) {
    for (size_t i = 0; i < n; i++) free(mods[i].module);
    free(mods);
    adapter_config_free(cfg);
}

void adapter_write_final(const train_opts *o, const lora_layout *l, const float *params, const char *dir) {
    adapter_config cfg;
    adapter_lora *mods;
    size_t n;
    build_adapter(o, l, params, &cfg, &mods, &n);
    adapter_save(dir, &cfg, mods, n, DT_F32);
    free_adapter(&cfg, mods, n);
}

void lora_arena_save(const lora_layout *l, const float *arena, const char *path) {
    st_writer w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    const void **data = xcalloc(l->n_tensors, sizeof(void *));
    for (size_t t = 0; t < l->n_tensors; t++) {
        size_t layer;
        int m, is_b;
        lora_tensor_at(l, t, &layer, &m, &is_b);
        char key[160];
        lora_tensor_key(layer, m, is_b, key, sizeof key);
        size_t shape[2] = {is_b ? l->out[m] : l->r, is_b ? l->r : l->in[m]};
        st_writer_add(&w, key, DT_F32, 2, shape);
        data[t] = arena + (is_b ? l->off_b[layer * LORA_NMOD + m] : l->off_a[layer * LORA_NMOD + m]);
    }
    st_write_file(path, &w, data);
    st_writer_free(&w);
    free(data);
}

static void write_text(const char *path, const char *text) {
    aout a;
    aout_open(&a, path);
    aout_write(&a, text, strlen(text));
    aout_commit(&a);
}

// Keep the newest `limit` checkpoint folders.
static void prune(const char *out_dir, size_t limit) {
    if (!limit) return;
    DIR *d = opendir(out_dir);
    if (!d) return;
    size_t *steps = NULL, n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long s;
        char tail;
        if (sscanf(e->d_name, "checkpoint-%lu%c", &s, &tail) == 1) {
            steps = xgrow(steps, &cap, n + 1, sizeof *steps);
            steps[n++] = s;
        }
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        size_t newer = 0;
        for (size_t j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer >= limit) {
            // Renamed out of the checkpoint-N namespace first (atomic), then
            // removed: a run killed while deleting leaves a stale
            // "checkpoint-N.old.PID" (removed by the next run), never a
            // half-deleted folder that looks like a checkpoint.
            char p[4096], old[4200];
            snprintf(p, sizeof p, "%s/checkpoint-%zu", out_dir, steps[i]);
            snprintf(old, sizeof old, "%s.old.%d", p, (int)getpid());
            if (rename(p, old) == 0) rm_rf(old);
        }
    }
    free(steps);
}

void checkpoint_save(const train_opts *o, const lora_layout *l, const model_dims *dims, const train_state *s,
                     size_t total_steps, const char *fingerprint) {
    (void)dims;
    char path[4096], file[4200];
    snprintf(path, sizeof path, "%s/checkpoint-%zu", o->out_dir, s->step);
    aout_dir dir;
    aout_dir_open(&dir, path);
    adapter_write_final(o, l, s->params, dir.tmp);

    st_writer w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    const void **data = xcalloc(2 * l->n_tensors, sizeof(void *));
    size_t k = 0;
    for (size_t t = 0; t < l->n_tensors; t++) {
        size_t layer, off;
        int m, is_b;
        lora_tensor_at(l, t, &layer, &m, &is_b);
        char key[160], name[200];
        lora_tensor_key(layer, m, is_b, key, sizeof key);
        size_t shape[2] = {is_b ? l->out[m] : l->r, is_b ? l->r : l->in[m]};
        off = is_b ? l->off_b[layer * LORA_NMOD + m] : l->off_a[layer * LORA_NMOD + m];
        snprintf(name, sizeof name, "exp_avg.%s", key);
        st_writer_add(&w, name, DT_F32, 2, shape);
        data[k++] = s->m + off;
        snprintf(name, sizeof name, "exp_avg_sq.%s", key);
        st_writer_add(&w, name, DT_F32, 2, shape);
        data[k++] = s->v + off;
    }
    snprintf(file, sizeof file, "%s/optimizer.safetensors", dir.tmp);
    st_write_file(file, &w, data);
    st_writer_free(&w);
    free(data);

    json_t *j = json_pack("{s:i, s:I, s:I, s:s}", "format_version", CKPT_FORMAT, "global_step", (json_int_t)s->step,
                          "max_steps", (json_int_t)total_steps, "fingerprint", fingerprint);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    snprintf(file, sizeof file, "%s/trainer_state.json", dir.tmp);
    write_text(file, text);
    free(text);
    json_decref(j);
    aout_dir_commit(&dir, 1);
    prune(o->out_dir, o->save_total_limit);
}

// Copy one (r, in) or (out, r) tensor from a loaded file into the arena.
static void take_tensor(const st_file *f, const char *name, float *dst, size_t numel, const char *path) {
    const st_tensor *t = st_find(f, name);
    if (!t) die("%s: tensor %s is missing", path, name);
    if (t->numel != numel || t->dtype != DT_F32)
        die("%s: tensor %s has the wrong shape or dtype for this run", path, name);
    memcpy(dst, t->data, numel * sizeof(float));
}

void checkpoint_remove_stale(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    while ((e = readdir(d))) {
        unsigned long step;
        int end = 0;
        char target[256];
        // Temporaries of lib/atomic_out.h for the files and folders train
        // writes here, and "checkpoint-N.old.PID" (a checkpoint being
        // removed), outlive only a run killed while writing them.
        static const char *outputs[] = {"adapter_model.safetensors", "adapter_config.json", "metrics.jsonl"};
        int stale = sscanf(e->d_name, "checkpoint-%lu.old.%*d%n", &step, &end) == 1 && !e->d_name[end];
        if (!stale && aout_tmp_target(e->d_name, target, sizeof target)) {
            stale = sscanf(target, "checkpoint-%lu%n", &step, &end) == 1 && !target[end];
            for (size_t k = 0; k < sizeof outputs / sizeof *outputs && !stale; k++) stale = !strcmp(target, outputs[k]);
        }
        if (stale) {
            names = xgrow(names, &cap, n + 1, sizeof *names);
            names[n++] = xstrdup(e->d_name);
        }
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", out_dir, names[i]);
        if (rm_rf(p) == 0) fprintf(stderr, "train: removed %s, left by a run that was killed while writing it\n", p);
        free(names[i]);
    }
    free(names);
}

int checkpoint_load_latest(const train_opts *o, const lora_layout *l, train_state *s, const char *fingerprint) {
    DIR *d = opendir(o->out_dir);
    if (!d) return -1;
    size_t best = 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long step;
        char tail;
        if (sscanf(e->d_name, "checkpoint-%lu%c", &step, &tail) == 1 && (!found || step > best)) {
            best = step;
            found = 1;
        }
    }
    closedir(d);
    if (!found) return -1;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/checkpoint-%zu", o->out_dir, best);

    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) die("%s: line %d: %s", path, je.line, je.text);
    json_int_t fmt = json_integer_value(json_object_get(j, "format_version"));
    if (fmt != CKPT_FORMAT) die("%s: checkpoint format %lld is not %d; it was written by another version", path,
                                (long long)fmt, CKPT_FORMAT);
    const char *fp = json_string_value(json_object_get(j, "fingerprint"));
    if (!fp || strcmp(fp, fingerprint)) {
        die("%s: this checkpoint belongs to a run with other settings; it has\n  %s\nand this run has\n  %s\n"
            "(resume with the same data and options, or use another --out)", path, fp ? fp : "(none)", fingerprint);
    }
    s->step = (size_t)json_integer_value(json_object_get(j, "global_step"));
    json_decref(j);

    adapter a;
    adapter_load_or_die(&a, dir);
    for (size_t i = 0; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!l->on[m]) continue;
            char name[96];
            snprintf(name, sizeof name, "model.layers.%zu.%s", i, lora_module_path(m));
            const adapter_lora *al = adapter_find(&a, name);
            if (!al || al->r != l->r) die("%s: adapter does not match this run (module %s)", dir, name);
            memcpy(s->params + l->off_a[i * LORA_NMOD + m], al->A, l->r * l->in[m] * sizeof(float));
            memcpy(s->params + l->off_b[i * LORA_NMOD + m], al->B, l->out[m] * l->r * sizeof(float));
        }
    adapter_free(&a);

    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st_file f;
    st_open_or_die(&f, path);
    for (size_t t = 0; t < l->n_tensors; t++) {
        size_t layer;
        int m, is_b;
        lora_tensor_at(l, t, &layer, &m, &is_b);
        char key[160], name[200];
        lora_tensor_key(layer, m, is_b, key, sizeof key);
        size_t off = is_b ? l->off_b[layer * LORA_NMOD + m] : l->off_a[layer * LORA_NMOD + m];
        size_t numel = lora_tensor_numel(l, m, is_b);
        snprintf(name, sizeof name, "exp_avg.%s", key);
        take_tensor(&f, name, s->m + off, numel, path);
        snprintf(name, sizeof name, "exp_avg_sq.%s", key);
        take_tensor(&f, name, s->v + off, numel, path);
    }
    st_close(&f);
    return 0;
}

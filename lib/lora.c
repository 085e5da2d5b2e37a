// lib/lora.c: LoRA arena layout, names and targets.
#include "lora.h"
#include "check.h"
#include "dtype.h"
#include "mt19937.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static const char *names[LORA_NMOD] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
static const char *paths[LORA_NMOD] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

const char *lora_module_name(int m) { return names[m]; }
const char *lora_module_path(int m) { return paths[m]; }

int lora_parse_targets(const char *list, int on[LORA_NMOD], char *err, size_t errlen) {
    memset(on, 0, sizeof(int) * LORA_NMOD);
    if (!strcmp(list, "all") || !strcmp(list, "all-linear")) {
        for (int m = 0; m < LORA_NMOD; m++) on[m] = 1;
        return 0;
    }
    char *s = xstrdup(list), *save = NULL;
    int any = 0;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        int found = -1;
        for (int m = 0; m < LORA_NMOD; m++) {
            // Accept "q_proj", "q", and the full path "self_attn.q_proj".
            size_t n = strlen(names[m]) - 5;
            if (!strcmp(tok, names[m]) || !strcmp(tok, paths[m]) || (strlen(tok) == n && !strncmp(tok, names[m], n)))
                found = m;
        }
        if (found < 0) {
            snprintf(err, errlen, "unknown LoRA target \"%s\" (Qwen2 modules: q_proj, k_proj, v_proj, o_proj, "
                     "gate_proj, up_proj, down_proj, or all)", tok);
            free(s);
            return -1;
        }
        on[found] = 1;
        any = 1;
    }
    free(s);
    if (!any) { snprintf(err, errlen, "no LoRA target given"); return -1; }
    return 0;
}

void lora_layout_init(lora_layout *l, const model_dims *d, size_t r, double alpha, int rslora,
                      const int on[LORA_NMOD]) {
    memset(l, 0, sizeof *l);
    l->r = r;
    l->alpha = alpha;
    l->rslora = rslora;
    l->scaling = (float)(rslora ? alpha / sqrt((double)r) : alpha / (double)r);
    l->layers = d->layers;
    size_t qd = d->heads * d->head_dim, kvd = d->kv_heads * d->head_dim;
    size_t in[LORA_NMOD] = {d->hidden, d->hidden, d->hidden, qd, d->hidden, d->hidden, d->inter};
    size_t out[LORA_NMOD] = {qd, kvd, kvd, d->hidden, d->inter, d->inter, d->hidden};
    memcpy(l->in, in, sizeof in);
    memcpy(l->out, out, sizeof out);
    memcpy(l->on, on, sizeof l->on);
    l->off_a = xmalloc(sizeof(size_t) * d->layers * LORA_NMOD);
    l->off_b = xmalloc(sizeof(size_t) * d->layers * LORA_NMOD);
    size_t off = 0;
    for (size_t i = 0; i < d->layers; i++) {
        for (int m = 0; m < LORA_NMOD; m++) {
            size_t k = i * LORA_NMOD + m;
            if (!on[m]) { l->off_a[k] = l->off_b[k] = SIZE_MAX; continue; }
            l->off_a[k] = off; off += r * in[m];
            l->off_b[k] = off; off += out[m] * r;
            l->n_tensors += 2;
        }
    }
    l->n_params = off;
}

void lora_layout_free(lora_layout *l) {
    free(l->off_a);
    free(l->off_b);
    memset(l, 0, sizeof *l);
}

void lora_tensor_at(const lora_layout *l, size_t index, size_t *layer, int *module, int *is_b) {
    size_t k = 0;
    for (size_t i = 0; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!l->on[m]) continue;
            if (k == index || k + 1 == index) { *layer = i; *module = m; *is_b = (int)(index - k); return; }
            k += 2;
        }
    die("LoRA tensor index %zu out of range", index);
}

void lora_tensor_key(size_t layer, int module, int is_b, char *buf, size_t n) {
    snprintf(buf, n, "base_model.model.model.layers.%zu.%s.lora_%c.weight", layer, paths[module], is_b ? 'B' : 'A');
}

size_t lora_layer_begin(const lora_layout *l, size_t layer) {
    for (size_t i = layer; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++)
            if (l->on[m]) return l->off_a[i * LORA_NMOD + m];
    return l->n_params;
}

size_t *lora_tensor_offsets(const lora_layout *l) {
    size_t *off = xmalloc((l->n_tensors + 1) * sizeof(size_t)), k = 0;
    for (size_t i = 0; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!l->on[m]) continue;
            off[k++] = l->off_a[i * LORA_NMOD + m];
            off[k++] = l->off_b[i * LORA_NMOD + m];
        }
    off[k] = l->n_params;
    return off;
}

// kaiming_uniform_(a=sqrt(5)) of a (rows, fan_in) weight, in torch's arithmetic.
static void kaiming_uniform(mt19937 *g, float *w, size_t rows, size_t fan_in) {
    double a = sqrt(5.0);
    double gain = sqrt(2.0 / (1.0 + a * a));
    double bound = sqrt(3.0) * (gain / sqrt((double)fan_in));
    mt_fill_uniform_f32(g, w, rows * fan_in, (float)-bound, (float)bound);
}

void lora_init_peft(const lora_layout *l, float *params, uint32_t seed, int round_bf16) {
    mt19937 g;
    mt_seed(&g, seed);
    float *scratch = NULL;
    size_t scap = 0;
    for (size_t i = 0; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!l->on[m]) continue;
            size_t k = i * LORA_NMOD + m;
            float *A = params + l->off_a[k], *B = params + l->off_b[k];
            kaiming_uniform(&g, A, l->r, l->in[m]);              // nn.Linear(in, r) builds lora_A
            scratch = xgrow(scratch, &scap, l->out[m] * l->r, sizeof *scratch);
            kaiming_uniform(&g, scratch, l->out[m], l->r);       // nn.Linear(r, out) builds lora_B
            kaiming_uniform(&g, A, l->r, l->in[m]);              // reset_lora_parameters: A again
            memset(B, 0, l->out[m] * l->r * sizeof(float));      // ... and B = 0
            if (round_bf16)
                for (size_t j = 0; j < l->r * l->in[m]; j++) A[j] = bf16_to_f32(f32_to_bf16(A[j]));
        }
    free(scratch);
}

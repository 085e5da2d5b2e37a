// tools/train/model_glue.c: what the trainer takes from a model folder and
// from an initial adapter (--init-adapter).
#include "train.h"
#include "adapter.h"
#include "check.h"
#include "hf_model.h"
#include "plan.h"

#include <stdlib.h>
#include <string.h>

model_dims train_model_dims(const hf_model *m) { return plan_dims_from_config(&m->cfg); }

int train_model_is_half(const hf_model *m) {
    const st_tensor *t = hf_model_tensor(m, "model.embed_tokens.weight");
    return t && (t->dtype == DT_BF16 || t->dtype == DT_F16);
}

void adapter_init_read(adapter_init *ai, const char *dir, const hf_model *m) {
    memset(ai, 0, sizeof *ai);
    adapter *a = xcalloc(1, sizeof *a);
    adapter_load_or_die(a, dir);
    char err[512];
    if (adapter_validate(a, &m->cfg, err, sizeof err)) die("%s", err);
    if (a->cfg.n_rank_pattern || a->cfg.n_alpha_pattern)
        die("%s: rank_pattern / alpha_pattern adapters cannot be trained from (one rank for every module is needed)",
            dir);
    ai->r = a->cfg.r;
    ai->alpha = a->cfg.lora_alpha;
    ai->rslora = a->cfg.use_rslora;
    // Which modules: those present in layer 0; every layer must then have the same set.
    for (size_t i = 0; i < a->n; i++) {
        for (int mo = 0; mo < LORA_NMOD; mo++) {
            const char *p = lora_module_path(mo);
            size_t lp = strlen(p), lm = strlen(a->mods[i].module);
            if (lm > lp && !strcmp(a->mods[i].module + lm - lp, p)) ai->on[mo] = 1;
        }
    }
    for (size_t li = 0; li < m->cfg.num_hidden_layers; li++)
        for (int mo = 0; mo < LORA_NMOD; mo++) {
            if (!ai->on[mo]) continue;
            char name[96];
            snprintf(name, sizeof name, "model.layers.%zu.%s", li, lora_module_path(mo));
            if (!adapter_find(a, name))
                die("%s: module %s has no adapter while other layers' %s do; a partial adapter cannot be trained "
                    "from", dir, name, lora_module_name(mo));
        }
    ai->a = a;
}

void adapter_init_params(const adapter_init *ai, const lora_layout *l, float *params) {
    const adapter *a = ai->a;
    for (size_t i = 0; i < l->layers; i++)
        for (int m = 0; m < LORA_NMOD; m++) {
            if (!l->on[m]) continue;
            char name[96];
            snprintf(name, sizeof name, "model.layers.%zu.%s", i, lora_module_path(m));
            const adapter_lora *al = adapter_find(a, name);
            memcpy(params + l->off_a[i * LORA_NMOD + m], al->A, l->r * l->in[m] * sizeof(float));
            memcpy(params + l->off_b[i * LORA_NMOD + m], al->B, l->out[m] * l->r * sizeof(float));
        }
}

void adapter_init_free(adapter_init *ai) {
    if (ai->a) { adapter_free(ai->a); free(ai->a); }
    memset(ai, 0, sizeof *ai);
}

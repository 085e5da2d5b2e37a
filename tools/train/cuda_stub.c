// tools/train/cuda_stub.c: stands in for the CUDA backend in builds without nvcc.
#ifndef LORAPIPE_CUDA
#include "train.h"
#include "check.h"

int cuda_available(void) { return 0; }

backend *cuda_backend_create(const train_opts *o, const model_dims *dims, const void *model, const lora_layout *l,
                             const optim_cfg *oc, size_t max_tokens, size_t max_len) {
    (void)o; (void)dims; (void)model; (void)l; (void)oc; (void)max_tokens; (void)max_len;
    die("--device cuda: this build has no CUDA support (nvcc was not found when it was built); use --device cpu");
}
#endif

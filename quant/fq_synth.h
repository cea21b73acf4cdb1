/* fq_synth.h — synthetic INT6 models of real LLaMA shapes, for speed measurements only.
 *
 * Real 7B–70B weights can't be brought to the GPU machine, but their shapes can: a synthetic model
 * has the exact tensor shapes of a preset (LLaMA-2-7B/13B, LLaMA-3-8B, or a tiny one for tests),
 * random INT6 codes whose per-group scales give weights of a realistic spread (about N(0, 0.02):
 * codes drawn from a clipped normal, fp16 scales jittered per group), random fp16-range embeddings
 * and unit norm weights, and the tokenizer of a real checkpoint (moved in by the caller). Its text
 * output is meaningless; its bytes, shapes and kernels are those of the real model.
 *
 * The vocabulary is max(preset vocabulary, tokenizer size), since every token id must have an
 * embedding row (LLaMA-2's 32000 becomes the default tokenizer's 49152: lm_head is then 1.5x the
 * real one's). Activation bits: ffn_down 8, every other linear 6 (what the sensitivity analysis
 * picks on the default model). Group size 128 (every preset's K is a multiple of it).
 *
 * Thread safety: pure functions; any thread.
 */
#ifndef FQ_SYNTH_H
#define FQ_SYNTH_H

#include "fq_ckpt.h"
#include "fq_weight.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fq_synth_params {
    const char *preset; /* "llama-2-7b", "llama-2-13b", "llama-3-8b" or "tiny"; default
                           "llama-2-7b" (borrowed) */
    int32_t n_layer;    /* 0 = the preset's; else this many decoder blocks (shorter test models) */
    uint64_t seed;      /* random stream; default 1 (the same seed gives the same file) */
    int32_t n_threads;  /* linears generated at once; 0 = one per online CPU (the bytes do not
                           depend on it: every linear has its own stream) */
} fq_synth_params;

fq_synth_params fq_synth_default_params(void);

/* The preset names, comma-separated, for help texts. */
const char *fq_synth_presets(void);

/* The model config of a preset (vocabulary as the real model's), FQ_EINVAL for an unknown name. */
int fq_synth_config(const char *preset, fq_config *cfg, char *err, size_t err_len);

/* Builds the synthetic model: *ck holds the config, the tokenizer (tok's arrays are moved in and
 * *tok is zeroed, also on failure, where they are freed), the embeddings, the norms and shape-only
 * entries for the linears (data NULL: their weights are only in *qm); *qm holds the packed codes
 * and scales. On success both are caller-owned (fq_ckpt_destroy, fq_qmodel_destroy) and pass
 * fq_modelfile_write's checks; on failure both are NULL. */
int fq_synth_build(const fq_synth_params *p, fq_tok_spec *tok, fq_ckpt **ck, fq_qmodel **qm,
                   char *err, size_t err_len);

#endif /* FQ_SYNTH_H */

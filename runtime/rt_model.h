/* rt_model.h — a loaded model: its config, its weights as the forward pass sees them, its
 * tokenizer.
 *
 * rt_model_load reads any checkpoint fq_ckpt_load accepts and keeps it; the weight pointers below
 * point into the checkpoint's fp32 tensors. Backends read the fields; nobody writes them after
 * load. Thread safety: immutable after load; any thread may read it.
 */
#ifndef RT_MODEL_H
#define RT_MODEL_H

#include "fq_ckpt.h"
#include "fq_weight.h"
#include "rt_tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The packed INT6 form of a linear's weights (layout: fq_pack.h). */
typedef struct rt_q6 {
    const uint8_t *packed;  /* [n_out, row_bytes]; NULL when the linear has no INT6 form */
    const uint16_t *scales; /* [n_out, n_in / group] fp16 bits */
    int32_t group;          /* input channels per scale */
    int64_t row_bytes;      /* fq_pack_row_bytes(n_in) */
} rt_q6;

/* A linear layer y = x W^T. */
typedef struct rt_linear {
    int32_t n_out;  /* rows of W (output features) */
    int32_t n_in;   /* columns of W (input features) */
    const float *w; /* [n_out, n_in] fp32, or NULL when only the INT6 form was loaded */
    rt_q6 q6;       /* INT6 form, when quantized */
    int32_t abits;  /* FlexQ activation bits (6 or 8) for the flex mode; 0 when not quantized */
} rt_linear;

typedef struct rt_layer {
    const float *attn_norm; /* [n_embd] */
    rt_linear q;            /* [n_head*head_dim, n_embd] */
    rt_linear k;            /* [n_head_kv*head_dim, n_embd] */
    rt_linear v;            /* [n_head_kv*head_dim, n_embd] */
    rt_linear o;            /* [n_embd, n_head*head_dim] */
    const float *ffn_norm;  /* [n_embd] */
    rt_linear gate;         /* [n_ff, n_embd] */
    rt_linear up;           /* [n_ff, n_embd] */
    rt_linear down;         /* [n_embd, n_ff] */
} rt_layer;

typedef struct rt_model {
    fq_config cfg;
    const float *tok_embd; /* [n_vocab, n_embd] */
    const float *out_norm; /* [n_embd] */
    rt_linear lm_head;     /* [n_vocab, n_embd]; token_embd when tied */
    rt_layer *layers;      /* [n_layer], owned */
    rt_tokenizer *tok;     /* owned */
    /* What the pointers above point into (each owned, any may be NULL): */
    fq_ckpt *ck;      /* a checkpoint's fp32 tensors */
    void *file;       /* an INT6 model file's mapping (an fq_st_file) */
    void *arena;      /* malloc'd: fp32 copies of fp16 tensors */
    void *qmodel;     /* an fq_qmodel: INT6 codes quantized in memory */
    char *quant_json; /* an INT6 model file's quantization metadata (JSON text), or NULL */
} rt_model;

/* Loads a checkpoint (GGUF file or HF directory) or an INT6 model file (*.fq6.safetensors, or any
 * safetensors file whose metadata says flexq) and builds the model. *out is caller-owned. */
int rt_model_load(const char *path, rt_model **out, char *err, size_t err_len);

/* Builds a model from a checkpoint, taking ownership of ck (also on failure). */
int rt_model_from_ckpt(fq_ckpt *ck, rt_model **out, char *err, size_t err_len);

/* Quantizes every decoder linear of a checkpoint-backed model to INT6 in memory (group_request: 0 =
 * auto, else 128/64/32), giving each linear its q6 form (abits stay 0: undecided); fp32 weights
 * stay. Progress as fq_qmodel_quantize. Not for models loaded from an INT6 file. */
int rt_model_quantize(rt_model *m, int32_t group_request, fq_progress_fn progress, void *ud,
                      char *err, size_t err_len);

/* The linear of type t in a layer (the second form for the loaders that fill it in). */
const rt_linear *rt_layer_linear(const rt_layer *ly, fq_lin_type t);
rt_linear *rt_layer_linear_mut(rt_layer *ly, fq_lin_type t);

/* True when every decoder linear has fp32 weights / an INT6 form. */
bool rt_model_has_fp(const rt_model *m);
bool rt_model_has_q6(const rt_model *m);

void rt_model_destroy(rt_model *m); /* NULL is a no-op */

#endif /* RT_MODEL_H */

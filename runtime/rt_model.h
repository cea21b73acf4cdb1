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
#include "rt_tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* A linear layer y = x W^T; weights fp32 row-major. */
typedef struct rt_linear {
    int32_t n_out;  /* rows of W (output features) */
    int32_t n_in;   /* columns of W (input features) */
    const float *w; /* [n_out, n_in] */
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
    fq_ckpt *ck;           /* owned: the tensors the pointers above point into */
} rt_model;

/* Loads a checkpoint (GGUF file or HF directory) and builds the model. *out is caller-owned. */
int rt_model_load(const char *path, rt_model **out, char *err, size_t err_len);

/* Builds a model from a checkpoint, taking ownership of ck (also on failure). */
int rt_model_from_ckpt(fq_ckpt *ck, rt_model **out, char *err, size_t err_len);

void rt_model_destroy(rt_model *m); /* NULL is a no-op */

#endif /* RT_MODEL_H */

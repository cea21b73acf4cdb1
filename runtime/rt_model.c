/* rt_model.c — turns a validated checkpoint into the layer table the forward pass walks. */
#include "rt_model.h"

#include "fq_base.h"

#include <stdio.h>
#include <stdlib.h>

static rt_linear linear_of(const fq_tensor *t)
{
    return (rt_linear){.n_out = (int32_t)t->shape[0], .n_in = (int32_t)t->shape[1], .w = t->data};
}

static const fq_tensor *layer_tensor(const fq_ckpt *ck, int32_t l, const char *suffix)
{
    char name[FQ_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    const fq_tensor *t = fq_ckpt_find(ck, name);
    FQ_ASSERT(t != NULL); /* fq_ckpt_validate checked every one */
    return t;
}

static void fill_layer(const fq_ckpt *ck, int32_t l, rt_layer *ly)
{
    ly->attn_norm = layer_tensor(ck, l, "attn_norm")->data;
    ly->q = linear_of(layer_tensor(ck, l, "attn_q"));
    ly->k = linear_of(layer_tensor(ck, l, "attn_k"));
    ly->v = linear_of(layer_tensor(ck, l, "attn_v"));
    ly->o = linear_of(layer_tensor(ck, l, "attn_output"));
    ly->ffn_norm = layer_tensor(ck, l, "ffn_norm")->data;
    ly->gate = linear_of(layer_tensor(ck, l, "ffn_gate"));
    ly->up = linear_of(layer_tensor(ck, l, "ffn_up"));
    ly->down = linear_of(layer_tensor(ck, l, "ffn_down"));
}

int rt_model_from_ckpt(fq_ckpt *ck, rt_model **out, char *err, size_t err_len)
{
    *out = NULL;
    int rc = fq_ckpt_validate(ck, err, err_len);
    if (rc) {
        fq_ckpt_destroy(ck);
        return rc;
    }
    rt_model *m = calloc(1, sizeof *m);
    if (!m) {
        fq_ckpt_destroy(ck);
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory building the model");
    }
    m->ck = ck;
    m->cfg = ck->cfg;
    m->layers = fq_calloc_array((size_t)ck->cfg.n_layer, sizeof *m->layers);
    if (!m->layers) {
        rt_model_destroy(m);
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory building the model");
    }
    const fq_tensor *embd = fq_ckpt_find(ck, "token_embd");
    m->tok_embd = embd->data;
    m->out_norm = fq_ckpt_find(ck, "output_norm")->data;
    m->lm_head = linear_of(ck->cfg.tied_embeddings ? embd : fq_ckpt_find(ck, "output"));
    for (int32_t l = 0; l < ck->cfg.n_layer; l++)
        fill_layer(ck, l, &m->layers[l]);
    rc = rt_tokenizer_create(&ck->tok, &m->tok, err, err_len);
    if (rc) {
        fq_err_prefix(err, err_len, "%s: tokenizer: ", ck->path);
        rt_model_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

int rt_model_load(const char *path, rt_model **out, char *err, size_t err_len)
{
    *out = NULL;
    fq_ckpt *ck = NULL;
    int rc = fq_ckpt_load(path, &ck, err, err_len);
    if (rc)
        return rc;
    return rt_model_from_ckpt(ck, out, err, err_len);
}

void rt_model_destroy(rt_model *m)
{
    if (!m)
        return;
    rt_tokenizer_destroy(m->tok);
    free(m->layers);
    fq_ckpt_destroy(m->ck);
    free(m);
}

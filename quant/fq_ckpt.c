/* fq_ckpt.c — checkpoint dispatch by path, lookup, validation against the config, and freeing. */
#include "fq_ckpt.h"

#include "fq_base.h"
#include "fq_gguf.h"
#include "fq_safetensors.h"
#include "fq_weight.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fq_ckpt_load(const char *path, fq_ckpt **out, char *err, size_t err_len)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return fq_err(err, err_len, FQ_EIO, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode))
        return fq_safetensors_load_dir(path, out, err, err_len);
    return fq_gguf_load(path, out, err, err_len);
}

int fq_ckpt_load_tokenizer(const char *path, fq_tok_spec *tok, char *err, size_t err_len)
{
    memset(tok, 0, sizeof *tok);
    struct stat st;
    if (stat(path, &st) != 0)
        return fq_err(err, err_len, FQ_EIO, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode))
        return fq_hf_load_tokenizer(path, tok, err, err_len);
    return fq_gguf_load_tokenizer(path, tok, err, err_len);
}

void fq_tok_spec_free(fq_tok_spec *tok)
{
    if (!tok)
        return;
    for (int32_t i = 0; tok->tokens && i < tok->n_tokens; i++)
        free(tok->tokens[i]);
    free(tok->tokens);
    free(tok->token_types);
    for (int32_t i = 0; tok->merges && i < tok->n_merges; i++)
        free(tok->merges[i]);
    free(tok->merges);
    free(tok->chat_template);
    memset(tok, 0, sizeof *tok);
}

void fq_ckpt_destroy(fq_ckpt *ck)
{
    if (!ck)
        return;
    for (int32_t i = 0; i < ck->n_tensors; i++)
        free(ck->tensors[i].data);
    free(ck->tensors);
    fq_tok_spec_free(&ck->tok);
    free(ck);
}

const fq_tensor *fq_ckpt_find(const fq_ckpt *ck, const char *name)
{
    for (int32_t i = 0; i < ck->n_tensors; i++)
        if (strcmp(ck->tensors[i].name, name) == 0)
            return &ck->tensors[i];
    return NULL;
}

int64_t fq_tensor_numel(const fq_tensor *t)
{
    int64_t n = 1;
    for (int32_t d = 0; d < t->n_dims; d++)
        n *= t->shape[d];
    return n;
}

static int expect_tensor(const fq_ckpt *ck, const char *name, int n_dims, int64_t d0, int64_t d1,
                         char *err, size_t err_len)
{
    const fq_tensor *t = fq_ckpt_find(ck, name);
    if (!t)
        return fq_err(err, err_len, FQ_ENOTFOUND, "%s: tensor %s is missing", ck->path, name);
    bool ok = t->n_dims == n_dims && t->shape[0] == d0 && (n_dims < 2 || t->shape[1] == d1);
    if (!ok) {
        char want[64];
        if (n_dims == 1)
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: tensor %s has shape [%lld%s] with %d dims, expected %s", ck->path, name,
                      (long long)t->shape[0], t->n_dims > 1 ? ", ..." : "", t->n_dims, want);
    }
    return 0;
}

static int validate_config(const fq_ckpt *ck, char *err, size_t err_len)
{
    const fq_config *c = &ck->cfg;
    if (strcmp(c->arch, "llama") != 0)
        return fq_err(err, err_len, FQ_EUNSUP,
                      "%s: architecture '%s' is not supported (llama only)", ck->path, c->arch);
    if (c->n_layer <= 0 || c->n_embd <= 0 || c->n_ff <= 0 || c->n_head <= 0 || c->n_head_kv <= 0 ||
        c->head_dim <= 0 || c->n_vocab <= 0)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: config has a non-positive dimension (layers %d, embd %d, ff %d, heads "
                      "%d, kv heads %d, head dim %d, vocab %d)",
                      ck->path, c->n_layer, c->n_embd, c->n_ff, c->n_head, c->n_head_kv,
                      c->head_dim, c->n_vocab);
    if (c->n_head % c->n_head_kv != 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: %d heads is not a multiple of %d kv heads",
                      ck->path, c->n_head, c->n_head_kv);
    if (c->head_dim % 2 != 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: head dim %d is odd (RoPE needs pairs)",
                      ck->path, c->head_dim);
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: rope theta %g or norm eps %g is not positive",
                      ck->path, (double)c->rope_theta, (double)c->norm_eps);
    return 0;
}

static int validate_layer(const fq_ckpt *ck, int32_t l, char *err, size_t err_len)
{
    char name[FQ_TENSOR_NAME_MAX];
    int64_t e = ck->cfg.n_embd;
    snprintf(name, sizeof name, "blk.%d.attn_norm", l);
    int rc = expect_tensor(ck, name, 1, e, 0, err, err_len);
    snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
    if (rc == 0)
        rc = expect_tensor(ck, name, 1, e, 0, err, err_len);
    for (int t = 0; t < FQ_LIN_COUNT && rc == 0; t++) {
        int64_t n_out, n_in;
        fq_lin_shape(&ck->cfg, (fq_lin_type)t, &n_out, &n_in);
        snprintf(name, sizeof name, "blk.%d.%s", l, fq_lin_name((fq_lin_type)t));
        rc = expect_tensor(ck, name, 2, n_out, n_in, err, err_len);
    }
    return rc;
}

int fq_ckpt_validate(const fq_ckpt *ck, char *err, size_t err_len)
{
    int rc = validate_config(ck, err, err_len);
    if (rc)
        return rc;
    const fq_config *c = &ck->cfg;
    if ((rc = expect_tensor(ck, "token_embd", 2, c->n_vocab, c->n_embd, err, err_len)) ||
        (rc = expect_tensor(ck, "output_norm", 1, c->n_embd, 0, err, err_len)))
        return rc;
    if (!c->tied_embeddings &&
        (rc = expect_tensor(ck, "output", 2, c->n_vocab, c->n_embd, err, err_len)))
        return rc;
    for (int32_t l = 0; l < c->n_layer && rc == 0; l++)
        rc = validate_layer(ck, l, err, err_len);
    if (rc)
        return rc;
    if (ck->tok.n_tokens > c->n_vocab)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tokenizer has %d tokens but the model only %d",
                      ck->path, ck->tok.n_tokens, c->n_vocab);
    return 0;
}

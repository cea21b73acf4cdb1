/* fq_modelfile.c — writes the INT6 model file (safetensors) and converts its metadata to and from
 * JSON.
 *
 * Design: the writer first plans every tensor (name, dtype, shape, source, size) and checks the
 * quantized model against the checkpoint, then orders the plan for alignment (fq_modelfile.h),
 * assigns contiguous offsets, builds the JSON header with jansson and streams the data, converting
 * fp32 to fp16 on the way, into a temporary file that is renamed over path only once complete. The
 * JSON readers validate every key, since the loader hands their output straight to the runtime.
 */
#include "fq_modelfile.h"

#include "fq_base.h"
#include "fq_pack.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the INT6 model file is little-endian; this host is not"
#endif

#define MF_DATA_ALIGN  64   /* the data area starts at a multiple of this */
#define MF_MAX_LAYERS  4096 /* sanity bounds for config values read from files */
#define MF_MAX_DIM     (1 << 20)
#define MF_MAX_HEADS   (1 << 16)
#define MF_MAX_VOCAB   (1 << 24)
#define MF_MAX_STRINGS (1 << 24) /* tokens or merges */
#define MF_JSON_DUMP   (JSON_COMPACT | JSON_PRESERVE_ORDER)
#define MF_CHUNK       4096 /* floats converted per write */

fq_modelfile_params fq_modelfile_default_params(void)
{
    return (fq_modelfile_params){
        .sensitivity_json = NULL, .source_sha256 = NULL, .calib_desc = NULL};
}

/* ---------------------------------------------------------------------------------------------- */
/* JSON field readers                                                                             */
/* ---------------------------------------------------------------------------------------------- */

/* Fails on a key of j that is not in the NULL-terminated list allowed. */
static int json_only_keys(const json_t *j, const char *const *allowed, char *err, size_t err_len)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (!ok)
            return fq_err(err, err_len, FQ_EFORMAT, "unknown key '%.64s'", key);
    }
    return 0;
}

static const json_t *json_need(const json_t *j, const char *key, char *err, size_t err_len)
{
    const json_t *v = json_object_get(j, key);
    if (!v)
        fq_err(err, err_len, FQ_EFORMAT, "key %s is missing", key);
    return v;
}

static int json_get_int(const json_t *j, const char *key, int64_t lo, int64_t hi, int64_t *out,
                        char *err, size_t err_len)
{
    const json_t *v = json_need(j, key, err, err_len);
    if (!v)
        return FQ_EFORMAT;
    if (!json_is_integer(v))
        return fq_err(err, err_len, FQ_EFORMAT, "key %s is not an integer", key);
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return fq_err(err, err_len, FQ_EFORMAT, "key %s = %lld is outside [%lld, %lld]", key,
                      (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static int json_get_i32(const json_t *j, const char *key, int64_t lo, int64_t hi, int32_t *out,
                        char *err, size_t err_len)
{
    int64_t x = 0;
    int rc = json_get_int(j, key, lo, hi, &x, err, err_len);
    if (!rc)
        *out = (int32_t)x;
    return rc;
}

/* A positive finite number that fits a float. */
static int json_get_pos_float(const json_t *j, const char *key, float *out, char *err,
                              size_t err_len)
{
    const json_t *v = json_need(j, key, err, err_len);
    if (!v)
        return FQ_EFORMAT;
    if (!json_is_number(v))
        return fq_err(err, err_len, FQ_EFORMAT, "key %s is not a number", key);
    double x = json_number_value(v);
    if (!(x > 0.0) || !(x <= FLT_MAX)) /* also keeps the float conversion defined */
        return fq_err(err, err_len, FQ_EFORMAT, "key %s = %g is not a positive finite float", key,
                      x);
    *out = (float)x;
    return 0;
}

static int json_get_bool(const json_t *j, const char *key, bool *out, char *err, size_t err_len)
{
    const json_t *v = json_need(j, key, err, err_len);
    if (!v)
        return FQ_EFORMAT;
    if (!json_is_boolean(v))
        return fq_err(err, err_len, FQ_EFORMAT, "key %s is not a boolean", key);
    *out = json_is_true(v);
    return 0;
}

/* A string of fewer than cap bytes copied into buf. */
static int json_get_str(const json_t *j, const char *key, char *buf, size_t cap, char *err,
                        size_t err_len)
{
    const json_t *v = json_need(j, key, err, err_len);
    if (!v)
        return FQ_EFORMAT;
    if (!json_is_string(v))
        return fq_err(err, err_len, FQ_EFORMAT, "key %s is not a string", key);
    if (json_string_length(v) >= cap)
        return fq_err(err, err_len, FQ_EFORMAT, "key %s is longer than %zu bytes", key, cap - 1);
    memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* config                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

json_t *fq_config_to_json(const fq_config *c)
{
    if (!isfinite(c->rope_theta) || !isfinite(c->norm_eps))
        return NULL; /* JSON has no inf / nan */
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s}", "arch",
                     c->arch, "n_layer", (int)c->n_layer, "n_embd", (int)c->n_embd, "n_ff",
                     (int)c->n_ff, "n_head", (int)c->n_head, "n_head_kv", (int)c->n_head_kv,
                     "head_dim", (int)c->head_dim, "n_vocab", (int)c->n_vocab, "n_ctx",
                     (int)c->n_ctx, "rope_theta", (double)c->rope_theta, "norm_eps",
                     (double)c->norm_eps, "tied_embeddings", (int)c->tied_embeddings, "rope_style",
                     c->rope_style == FQ_ROPE_INTERLEAVED ? "interleaved" : "half");
}

static int config_read_dims(const json_t *j, fq_config *c, char *err, size_t err_len)
{
    int rc;
    if ((rc = json_get_i32(j, "n_layer", 1, MF_MAX_LAYERS, &c->n_layer, err, err_len)) ||
        (rc = json_get_i32(j, "n_embd", 1, MF_MAX_DIM, &c->n_embd, err, err_len)) ||
        (rc = json_get_i32(j, "n_ff", 1, MF_MAX_DIM, &c->n_ff, err, err_len)) ||
        (rc = json_get_i32(j, "n_head", 1, MF_MAX_HEADS, &c->n_head, err, err_len)) ||
        (rc = json_get_i32(j, "n_head_kv", 1, MF_MAX_HEADS, &c->n_head_kv, err, err_len)) ||
        (rc = json_get_i32(j, "head_dim", 1, MF_MAX_DIM, &c->head_dim, err, err_len)) ||
        (rc = json_get_i32(j, "n_vocab", 1, MF_MAX_VOCAB, &c->n_vocab, err, err_len)) ||
        (rc = json_get_i32(j, "n_ctx", 0, INT32_MAX, &c->n_ctx, err, err_len)))
        return rc;
    if (c->n_head % c->n_head_kv != 0)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "key n_head = %d is not a multiple of key n_head_kv = %d", c->n_head,
                      c->n_head_kv);
    if (c->head_dim % 2 != 0)
        return fq_err(err, err_len, FQ_EFORMAT, "key head_dim = %d is odd (RoPE needs pairs)",
                      c->head_dim);
    if ((int64_t)c->n_head * c->head_dim > MF_MAX_DIM)
        return fq_err(err, err_len, FQ_EFORMAT, "key n_head * head_dim exceeds %d", MF_MAX_DIM);
    return 0;
}

static int config_read_rest(const json_t *j, fq_config *c, char *err, size_t err_len)
{
    char style[16];
    int rc;
    if ((rc = json_get_pos_float(j, "rope_theta", &c->rope_theta, err, err_len)) ||
        (rc = json_get_pos_float(j, "norm_eps", &c->norm_eps, err, err_len)) ||
        (rc = json_get_bool(j, "tied_embeddings", &c->tied_embeddings, err, err_len)) ||
        (rc = json_get_str(j, "rope_style", style, sizeof style, err, err_len)))
        return rc;
    if (strcmp(style, "half") == 0)
        c->rope_style = FQ_ROPE_HALF;
    else if (strcmp(style, "interleaved") == 0)
        c->rope_style = FQ_ROPE_INTERLEAVED;
    else
        return fq_err(err, err_len, FQ_EFORMAT,
                      "key rope_style = '%s' is neither 'half' nor 'interleaved'", style);
    return 0;
}

int fq_config_from_json(const json_t *j, fq_config *c, char *err, size_t err_len)
{
    static const char *const keys[] = {
        "arch",    "n_layer", "n_embd",     "n_ff",     "n_head",          "n_head_kv",  "head_dim",
        "n_vocab", "n_ctx",   "rope_theta", "norm_eps", "tied_embeddings", "rope_style", NULL};
    memset(c, 0, sizeof *c);
    int rc = 0;
    if (!json_is_object(j))
        rc = fq_err(err, err_len, FQ_EFORMAT, "not a JSON object");
    if (!rc)
        rc = json_only_keys(j, keys, err, err_len);
    if (!rc)
        rc = json_get_str(j, "arch", c->arch, sizeof c->arch, err, err_len);
    if (!rc && strcmp(c->arch, "llama") != 0)
        rc = fq_err(err, err_len, FQ_EUNSUP, "key arch = '%s' is not supported (llama only)",
                    c->arch);
    if (!rc)
        rc = config_read_dims(j, c, err, err_len);
    if (!rc)
        rc = config_read_rest(j, c, err, err_len);
    if (rc)
        memset(c, 0, sizeof *c);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* tokenizer                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

/* Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), as JSON needs. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80             ? 0
                : (c & 0xE0) == 0xC0 ? 1
                : (c & 0xF0) == 0xE0 ? 2
                : (c & 0xF8) == 0xF0 ? 3
                                     : -1;
        if (n < 0)
            return false;
        uint32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

static json_t *json_str_array(char *const *s, int32_t n)
{
    json_t *a = json_array();
    for (int32_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_string(s[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *json_int_array(const int32_t *v, int32_t n)
{
    json_t *a = json_array();
    for (int32_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_integer(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *fq_tok_spec_to_json(const fq_tok_spec *t)
{
    json_t *tokens = json_str_array(t->tokens, t->n_tokens);
    json_t *types = json_int_array(t->token_types, t->n_tokens);
    json_t *merges = json_str_array(t->merges, t->n_merges);
    json_t *tmpl = t->chat_template ? json_string(t->chat_template) : json_null();
    if (!tokens || !types || !merges || !tmpl) {
        json_decref(tokens);
        json_decref(types);
        json_decref(merges);
        json_decref(tmpl);
        return NULL;
    }
    /* "o" steals the references, also when json_pack fails */
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:b, s:i, s:i, s:i, s:b, s:b, s:o}", "model",
                     t->model, "pre", t->pre, "tokens", tokens, "token_types", types, "merges",
                     merges, "ignore_merges", (int)t->ignore_merges, "bos_id", (int)t->bos_id,
                     "eos_id", (int)t->eos_id, "pad_id", (int)t->pad_id, "add_bos", (int)t->add_bos,
                     "add_eos", (int)t->add_eos, "chat_template", tmpl);
}

/* A JSON array of strings under key into a malloc'd char *[*n]. */
static int tok_read_strings(const json_t *j, const char *key, char ***out, int32_t *n, char *err,
                            size_t err_len)
{
    const json_t *a = json_need(j, key, err, err_len);
    if (!a)
        return FQ_EFORMAT;
    if (!json_is_array(a))
        return fq_err(err, err_len, FQ_EFORMAT, "key %s is not an array", key);
    size_t len = json_array_size(a);
    if (len > MF_MAX_STRINGS)
        return fq_err(err, err_len, FQ_EFORMAT, "key %s has %zu entries, more than %d", key, len,
                      MF_MAX_STRINGS);
    *out = fq_calloc_array(len ? len : 1, sizeof **out);
    if (!*out)
        return fq_err(err, err_len, FQ_ENOMEM, "key %s: out of memory", key);
    *n = (int32_t)len; /* set first so fq_tok_spec_free frees a partial array */
    for (size_t i = 0; i < len; i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_string(v))
            return fq_err(err, err_len, FQ_EFORMAT, "key %s[%zu] is not a string", key, i);
        (*out)[i] = strdup(json_string_value(v));
        if (!(*out)[i])
            return fq_err(err, err_len, FQ_ENOMEM, "key %s: out of memory", key);
    }
    return 0;
}

static int tok_read_types(const json_t *j, fq_tok_spec *t, char *err, size_t err_len)
{
    const json_t *a = json_need(j, "token_types", err, err_len);
    if (!a)
        return FQ_EFORMAT;
    if (!json_is_array(a) || json_array_size(a) != (size_t)t->n_tokens)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "key token_types is not an array of %d integers (one per token)",
                      t->n_tokens);
    t->token_types = fq_calloc_array(t->n_tokens ? (size_t)t->n_tokens : 1, sizeof(int32_t));
    if (!t->token_types)
        return fq_err(err, err_len, FQ_ENOMEM, "key token_types: out of memory");
    for (int32_t i = 0; i < t->n_tokens; i++) {
        const json_t *v = json_array_get(a, (size_t)i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (x < FQ_TOK_NORMAL || x > FQ_TOK_BYTE)
            return fq_err(err, err_len, FQ_EFORMAT, "key token_types[%d] is not an integer 1..6",
                          i);
        t->token_types[i] = (int32_t)x;
    }
    return 0;
}

static int tok_read_flags(const json_t *j, fq_tok_spec *t, char *err, size_t err_len)
{
    int rc;
    int64_t hi = t->n_tokens - 1;
    if ((rc = json_get_bool(j, "ignore_merges", &t->ignore_merges, err, err_len)) ||
        (rc = json_get_i32(j, "bos_id", -1, hi, &t->bos_id, err, err_len)) ||
        (rc = json_get_i32(j, "eos_id", -1, hi, &t->eos_id, err, err_len)) ||
        (rc = json_get_i32(j, "pad_id", -1, hi, &t->pad_id, err, err_len)) ||
        (rc = json_get_bool(j, "add_bos", &t->add_bos, err, err_len)) ||
        (rc = json_get_bool(j, "add_eos", &t->add_eos, err, err_len)))
        return rc;
    const json_t *v = json_need(j, "chat_template", err, err_len);
    if (!v)
        return FQ_EFORMAT;
    if (json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fq_err(err, err_len, FQ_EFORMAT, "key chat_template is neither a string nor null");
    t->chat_template = strdup(json_string_value(v));
    if (!t->chat_template)
        return fq_err(err, err_len, FQ_ENOMEM, "key chat_template: out of memory");
    return 0;
}

int fq_tok_spec_from_json(const json_t *j, fq_tok_spec *t, char *err, size_t err_len)
{
    static const char *const keys[] = {"model",  "pre",           "tokens",  "token_types",
                                       "merges", "ignore_merges", "bos_id",  "eos_id",
                                       "pad_id", "add_bos",       "add_eos", "chat_template",
                                       NULL};
    memset(t, 0, sizeof *t);
    int rc = 0;
    if (!json_is_object(j))
        rc = fq_err(err, err_len, FQ_EFORMAT, "not a JSON object");
    if (!rc)
        rc = json_only_keys(j, keys, err, err_len);
    if (!rc)
        rc = json_get_str(j, "model", t->model, sizeof t->model, err, err_len);
    if (!rc)
        rc = json_get_str(j, "pre", t->pre, sizeof t->pre, err, err_len);
    if (!rc)
        rc = tok_read_strings(j, "tokens", &t->tokens, &t->n_tokens, err, err_len);
    if (!rc && t->n_tokens == 0)
        rc = fq_err(err, err_len, FQ_EFORMAT, "key tokens is empty");
    if (!rc)
        rc = tok_read_types(j, t, err, err_len);
    if (!rc)
        rc = tok_read_strings(j, "merges", &t->merges, &t->n_merges, err, err_len);
    if (!rc)
        rc = tok_read_flags(j, t, err, err_len);
    if (rc)
        fq_tok_spec_free(t);
    return rc;
}

/* The first token, merge or template text that is not valid UTF-8, described in err. */
static int tok_check_utf8(const fq_tok_spec *t, char *err, size_t err_len)
{
    for (int32_t i = 0; i < t->n_tokens; i++)
        if (!utf8_valid(t->tokens[i]))
            return fq_err(err, err_len, FQ_EUNSUP, "tokenizer token %d is not valid UTF-8", i);
    for (int32_t i = 0; i < t->n_merges; i++)
        if (!utf8_valid(t->merges[i]))
            return fq_err(err, err_len, FQ_EUNSUP, "tokenizer merge %d is not valid UTF-8", i);
    if (t->chat_template && !utf8_valid(t->chat_template))
        return fq_err(err, err_len, FQ_EUNSUP, "the chat template is not valid UTF-8");
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* writer: checking the quantized model against the checkpoint                                    */
/* ---------------------------------------------------------------------------------------------- */

static const fq_qlinear *qlin(const fq_qmodel *qm, int32_t l, int t)
{
    return &qm->lin[(int64_t)l * FQ_LIN_COUNT + t];
}

static int check_qlinear(const fq_ckpt *ck, const fq_qlinear *q, int32_t l, int t, char *err,
                         size_t err_len)
{
    char name[FQ_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, "blk.%d.%s", l, fq_lin_name((fq_lin_type)t));
    const fq_tensor *w = fq_ckpt_find(ck, name); /* present: fq_ckpt_validate checked */
    if (q->n_out != w->shape[0] || q->n_in != w->shape[1])
        return fq_err(err, err_len, FQ_EINVAL,
                      "%s: quantized shape [%lld, %lld] differs from the checkpoint's [%lld, %lld]",
                      name, (long long)q->n_out, (long long)q->n_in, (long long)w->shape[0],
                      (long long)w->shape[1]);
    if ((q->group != 32 && q->group != 64 && q->group != 128) || q->n_in % q->group != 0)
        return fq_err(err, err_len, FQ_EINVAL,
                      "%s: group size %d is not 32, 64 or 128 dividing %lld", name, q->group,
                      (long long)q->n_in);
    if (q->row_bytes != fq_pack_row_bytes(q->n_in) || !q->packed || !q->scales)
        return fq_err(err, err_len, FQ_EINVAL, "%s: packed data missing or row bytes %lld != %lld",
                      name, (long long)q->row_bytes, (long long)fq_pack_row_bytes(q->n_in));
    if (q->abits != 6 && q->abits != 8)
        return fq_err(err, err_len, FQ_EINVAL, "%s: activation bits %d are not 6 or 8", name,
                      q->abits);
    return 0;
}

/* Every linear of qm against ck, and one group size per linear type across layers. */
static int check_qmodel(const fq_ckpt *ck, const fq_qmodel *qm, char *err, size_t err_len)
{
    if (qm->n_layer != ck->cfg.n_layer || !qm->lin)
        return fq_err(err, err_len, FQ_EINVAL,
                      "the quantized model has %d layers, the checkpoint %d", qm->n_layer,
                      ck->cfg.n_layer);
    for (int32_t l = 0; l < qm->n_layer; l++) {
        for (int t = 0; t < FQ_LIN_COUNT; t++) {
            int rc = check_qlinear(ck, qlin(qm, l, t), l, t, err, err_len);
            if (rc)
                return rc;
            if (qlin(qm, l, t)->group != qlin(qm, 0, t)->group)
                return fq_err(err, err_len, FQ_EINVAL,
                              "blk.%d.%s: group size %d differs from layer 0's %d (the file "
                              "records one per linear type)",
                              l, fq_lin_name((fq_lin_type)t), qlin(qm, l, t)->group,
                              qlin(qm, 0, t)->group);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* writer: the tensor plan                                                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef struct mf_tensor {
    char name[FQ_TENSOR_NAME_MAX + 16];
    const char *dtype; /* "U8" or "F16" */
    int32_t n_dims;    /* 1 or 2 */
    int64_t shape[2];
    const void *src; /* the bytes to write, or fp32 values to convert (from_f32) */
    bool from_f32;
    uint64_t n_bytes;
    uint64_t begin; /* offset in the data area */
} mf_tensor;

typedef struct mf_plan {
    mf_tensor *t; /* [n] in data order */
    int32_t n;
} mf_plan;

static void plan_add(mf_plan *pl, const char *name, const char *dtype, int32_t n_dims, int64_t d0,
                     int64_t d1, const void *src, bool from_f32)
{
    mf_tensor *t = &pl->t[pl->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->shape[0] = d0;
    t->shape[1] = n_dims == 2 ? d1 : 0;
    t->src = src;
    t->from_f32 = from_f32;
    t->n_bytes = (uint64_t)d0 * (uint64_t)(n_dims == 2 ? d1 : 1) * (strcmp(dtype, "U8") ? 2u : 1u);
}

static void plan_add_f16(mf_plan *pl, const fq_ckpt *ck, const char *name)
{
    const fq_tensor *w = fq_ckpt_find(ck, name); /* present: fq_ckpt_validate checked */
    plan_add(pl, name, "F16", w->n_dims, w->shape[0], w->n_dims == 2 ? w->shape[1] : 0, w->data,
             true);
}

/* Keeps entries [from, n) in order but moves those whose size is a multiple of 16 first, so they
 * stay 16-byte aligned; then assigns contiguous offsets. */
static int plan_order(mf_plan *pl, int32_t from)
{
    mf_tensor *tmp = fq_malloc_array((size_t)(pl->n - from), sizeof *tmp);
    if (!tmp)
        return FQ_ENOMEM;
    int32_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = from; i < pl->n; i++)
            if ((pl->t[i].n_bytes % 16 == 0) == (pass == 0))
                tmp[k++] = pl->t[i];
    memcpy(pl->t + from, tmp, (size_t)k * sizeof *tmp);
    free(tmp);
    uint64_t off = 0;
    for (int32_t i = 0; i < pl->n; i++) {
        pl->t[i].begin = off;
        off += pl->t[i].n_bytes;
    }
    return 0;
}

/* qweights first (sizes multiples of 16), then scales and fp16 tensors ordered by plan_order. */
static int plan_build(const fq_ckpt *ck, const fq_qmodel *qm, mf_plan *pl, char *err,
                      size_t err_len)
{
    const fq_config *c = &ck->cfg;
    int64_t n = (int64_t)c->n_layer * (2 * FQ_LIN_COUNT + 2) + 2 + (c->tied_embeddings ? 0 : 1);
    pl->t = fq_calloc_array((size_t)n, sizeof *pl->t);
    if (!pl->t)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory planning %lld tensors", (long long)n);
    char name[FQ_TENSOR_NAME_MAX + 16];
    for (int32_t l = 0; l < c->n_layer; l++)
        for (int t = 0; t < FQ_LIN_COUNT; t++) {
            const fq_qlinear *q = qlin(qm, l, t);
            snprintf(name, sizeof name, "blk.%d.%s.qweight", l, fq_lin_name((fq_lin_type)t));
            plan_add(pl, name, "U8", 2, q->n_out, q->row_bytes, q->packed, false);
        }
    int32_t n_qweight = pl->n;
    for (int32_t l = 0; l < c->n_layer; l++)
        for (int t = 0; t < FQ_LIN_COUNT; t++) {
            const fq_qlinear *q = qlin(qm, l, t);
            snprintf(name, sizeof name, "blk.%d.%s.scales", l, fq_lin_name((fq_lin_type)t));
            plan_add(pl, name, "F16", 2, q->n_out, q->n_in / q->group, q->scales, false);
        }
    plan_add_f16(pl, ck, "token_embd");
    plan_add_f16(pl, ck, "output_norm");
    if (!c->tied_embeddings)
        plan_add_f16(pl, ck, "output");
    for (int32_t l = 0; l < c->n_layer; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm", l);
        plan_add_f16(pl, ck, name);
        snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
        plan_add_f16(pl, ck, name);
    }
    FQ_ASSERT(pl->n == n);
    if (plan_order(pl, n_qweight))
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory ordering tensors");
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* writer: metadata and header                                                                    */
/* ---------------------------------------------------------------------------------------------- */

/* "group_size": one integer when all linear types agree, else {type: G}. */
static json_t *quant_group_json(const fq_qmodel *qm)
{
    bool uniform = true;
    for (int t = 1; t < FQ_LIN_COUNT; t++)
        uniform = uniform && qlin(qm, 0, t)->group == qlin(qm, 0, 0)->group;
    if (uniform)
        return json_integer(qlin(qm, 0, 0)->group);
    json_t *o = json_object();
    for (int t = 0; o && t < FQ_LIN_COUNT; t++)
        if (json_object_set_new(o, fq_lin_name((fq_lin_type)t),
                                json_integer(qlin(qm, 0, t)->group))) {
            json_decref(o);
            return NULL;
        }
    return o;
}

static json_t *quant_abits_json(const fq_qmodel *qm)
{
    json_t *o = json_object();
    char name[FQ_TENSOR_NAME_MAX];
    for (int32_t l = 0; o && l < qm->n_layer; l++)
        for (int t = 0; t < FQ_LIN_COUNT; t++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, fq_lin_name((fq_lin_type)t));
            if (json_object_set_new(o, name, json_integer(qlin(qm, l, t)->abits))) {
                json_decref(o);
                return NULL;
            }
        }
    return o;
}

/* A JSON string of s, null for NULL; *bad is set when s is not valid UTF-8. */
static json_t *json_opt_string(const char *s, const char *what, int *bad, char *err, size_t err_len)
{
    if (!s)
        return json_null();
    if (!utf8_valid(s)) {
        *bad = fq_err(err, err_len, FQ_EINVAL, "%s is not valid UTF-8", what);
        return NULL;
    }
    return json_string(s);
}

static int quant_sensitivity_json(const char *text, json_t **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!text) {
        *out = json_null();
        return 0;
    }
    json_error_t je;
    *out = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!*out)
        return fq_err(err, err_len, FQ_EINVAL,
                      "the sensitivity table is not valid JSON: %s (line %d, column %d)", je.text,
                      je.line, je.column);
    return 0;
}

static int quant_json(const fq_ckpt *ck, const fq_qmodel *qm, const fq_modelfile_params *p,
                      json_t **out, char *err, size_t err_len)
{
    *out = NULL;
    json_t *sens = NULL;
    int rc = quant_sensitivity_json(p->sensitivity_json, &sens, err, err_len);
    if (rc)
        return rc;
    /* each json_opt_string is NULL only on failure; json_pack's "o" steals, also on failure */
    json_t *src_path = json_opt_string(ck->path, "the source path", &rc, err, err_len);
    json_t *sha = json_opt_string(p->source_sha256, "the source sha256", &rc, err, err_len);
    json_t *calib =
        json_opt_string(p->calib_desc, "the calibration description", &rc, err, err_len);
    json_t *source =
        json_pack("{s:o, s:s, s:o}", "path", src_path, "format", ck->format, "sha256", sha);
    *out = json_pack("{s:i, s:o, s:i, s:s, s:o, s:o, s:o, s:o}", "wbits", 6, "group_size",
                     quant_group_json(qm), "group_request", (int)qm->group_request, "layout",
                     FQ_MF_LAYOUT, "abits", quant_abits_json(qm), "sensitivity", sens, "source",
                     source, "calibration", calib);
    if (!rc && !*out)
        rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory building %s", FQ_MF_KEY_QUANT);
    if (rc) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* meta[key] = the compact JSON text of j; takes j (also when meta or j is NULL: then -1). */
static int meta_set_json(json_t *meta, const char *key, json_t *j)
{
    char *text = j ? json_dumps(j, MF_JSON_DUMP) : NULL;
    json_decref(j);
    int rc = meta && text ? json_object_set_new(meta, key, json_string(text)) : -1;
    free(text);
    return rc;
}

static int metadata_json(const fq_ckpt *ck, const fq_qmodel *qm, const fq_modelfile_params *p,
                         json_t **out, char *err, size_t err_len)
{
    *out = NULL;
    json_t *quant = NULL;
    int rc = quant_json(ck, qm, p, &quant, err, err_len);
    if (rc)
        return rc;
    json_t *meta = json_object();
    int bad = meta ? json_object_set_new(meta, FQ_MF_KEY_VERSION, json_string(FQ_MF_VERSION)) : -1;
    bad |= meta_set_json(meta, FQ_MF_KEY_CONFIG, fq_config_to_json(&ck->cfg));
    bad |= meta_set_json(meta, FQ_MF_KEY_TOKENIZER, fq_tok_spec_to_json(&ck->tok));
    bad |= meta_set_json(meta, FQ_MF_KEY_QUANT, quant);
    if (bad) {
        json_decref(meta);
        return fq_err(err, err_len, FQ_ENOMEM,
                      "out of memory encoding the metadata (or a non-finite config value)");
    }
    *out = meta;
    return 0;
}

static json_t *header_entry(const mf_tensor *t)
{
    json_t *shape = json_array();
    for (int32_t d = 0; shape && d < t->n_dims; d++)
        if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d]))) {
            json_decref(shape);
            shape = NULL;
        }
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", t->dtype, "shape", shape, "data_offsets",
                     (json_int_t)t->begin, (json_int_t)(t->begin + t->n_bytes));
}

/* The header text padded with spaces so that 8 + *len is a multiple of MF_DATA_ALIGN (malloc'd). */
static int header_text(json_t *meta, const mf_plan *pl, char **text, size_t *len, char *err,
                       size_t err_len)
{
    *text = NULL;
    json_t *hdr = json_object();
    int bad = hdr ? json_object_set_new(hdr, "__metadata__", meta) : (json_decref(meta), -1);
    for (int32_t i = 0; !bad && i < pl->n; i++)
        bad = json_object_set_new(hdr, pl->t[i].name, header_entry(&pl->t[i]));
    char *raw = bad ? NULL : json_dumps(hdr, MF_JSON_DUMP);
    json_decref(hdr);
    if (!raw)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory building the header");
    size_t n = strlen(raw);
    size_t padded = n + (MF_DATA_ALIGN - (8 + n) % MF_DATA_ALIGN) % MF_DATA_ALIGN;
    *text = realloc(raw, padded + 1);
    if (!*text) {
        free(raw);
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory building the header");
    }
    memset(*text + n, ' ', padded - n);
    (*text)[padded] = 0;
    *len = padded;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* writer: the file                                                                               */
/* ---------------------------------------------------------------------------------------------- */

static int write_f16_from_f32(FILE *fp, const mf_tensor *t, char *err, size_t err_len)
{
    const float *x = t->src;
    uint64_t n = t->n_bytes / 2;
    uint16_t buf[MF_CHUNK];
    for (uint64_t i = 0; i < n; i += MF_CHUNK) {
        size_t m = n - i < MF_CHUNK ? (size_t)(n - i) : MF_CHUNK;
        for (size_t j = 0; j < m; j++) {
            buf[j] = fq_f32_to_f16(x[i + j]);
            if ((buf[j] & 0x7c00u) == 0x7c00u)
                return fq_err(err, err_len, FQ_ERANGE,
                              "tensor %s: value %g at index %llu is not representable in fp16",
                              t->name, (double)x[i + j], (unsigned long long)(i + j));
        }
        if (fwrite(buf, sizeof buf[0], m, fp) != m)
            return FQ_EIO;
    }
    return 0;
}

static int write_contents(FILE *fp, const char *hdr, size_t hlen, const mf_plan *pl, char *err,
                          size_t err_len)
{
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    if (fwrite(len_le, 1, 8, fp) != 8 || fwrite(hdr, 1, hlen, fp) != hlen)
        return FQ_EIO;
    for (int32_t i = 0; i < pl->n; i++) {
        const mf_tensor *t = &pl->t[i];
        if (t->from_f32) {
            int rc = write_f16_from_f32(fp, t, err, err_len);
            if (rc)
                return rc;
        } else if (fwrite(t->src, 1, t->n_bytes, fp) != t->n_bytes) {
            return FQ_EIO;
        }
    }
    return fflush(fp) || fsync(fileno(fp)) ? FQ_EIO : 0;
}

/* Writes into a temporary file beside path, then renames it over path. */
static int write_file(const char *path, const char *hdr, size_t hlen, const mf_plan *pl, char *err,
                      size_t err_len)
{
    size_t cap = strlen(path) + 16;
    char *tmp = malloc(cap);
    if (!tmp)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    snprintf(tmp, cap, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc = fq_err(err, err_len, FQ_EIO, "cannot create a temporary file beside it: %s",
                        strerror(errno));
        free(tmp);
        return rc;
    }
    int rc = 0, eno = 0;
    FILE *fp = NULL;
    if (fchmod(fd, 0644) != 0 || !(fp = fdopen(fd, "wb"))) {
        rc = FQ_EIO;
        eno = errno;
    }
    if (!rc && (rc = write_contents(fp, hdr, hlen, pl, err, err_len)) == FQ_EIO)
        eno = errno;
    if (fp ? fclose(fp) != 0 : close(fd) != 0) {
        if (!rc) {
            rc = FQ_EIO;
            eno = errno;
        }
    }
    if (!rc && rename(tmp, path) != 0) {
        rc = FQ_EIO;
        eno = errno;
    }
    if (rc == FQ_EIO)
        fq_err(err, err_len, FQ_EIO, "cannot write %s: %s", tmp, strerror(eno));
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

int fq_modelfile_write(const char *path, const fq_ckpt *ck, const fq_qmodel *qm,
                       const fq_modelfile_params *p, char *err, size_t err_len)
{
    fq_modelfile_params defaults = fq_modelfile_default_params();
    if (!p)
        p = &defaults;
    int rc = fq_ckpt_validate(ck, err, err_len);
    if (rc)
        return rc;
    mf_plan pl = {0};
    json_t *meta = NULL;
    char *hdr = NULL;
    size_t hlen = 0;
    rc = check_qmodel(ck, qm, err, err_len);
    if (!rc)
        rc = tok_check_utf8(&ck->tok, err, err_len);
    if (!rc)
        rc = plan_build(ck, qm, &pl, err, err_len);
    if (!rc)
        rc = metadata_json(ck, qm, p, &meta, err, err_len);
    if (!rc)
        rc = header_text(meta, &pl, &hdr, &hlen, err, err_len); /* takes meta */
    if (!rc)
        rc = write_file(path, hdr, hlen, &pl, err, err_len);
    if (rc)
        fq_err_prefix(err, err_len, "%s: ", path);
    free(hdr);
    free(pl.t);
    return rc;
}

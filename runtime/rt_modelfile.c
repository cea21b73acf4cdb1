/* rt_modelfile.c — validates an INT6 model file against its own metadata and builds an rt_model.
 *
 * Design: the load runs as a sequence of checks over a small context (the mapping, the parsed
 * config, the group size per linear type, the abits per linear), each naming the file and the
 * tensor or metadata key in its message; only when all pass is the model built, which then cannot
 * fail except for memory. Nothing is copied but the fp16 tensors the forward pass wants as fp32.
 */
#include "rt_modelfile.h"

#include "fq_base.h"
#include "fq_modelfile.h"
#include "fq_pack.h"
#include "fq_safetensors.h"
#include "fq_weight.h"

#include <jansson.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mf_ctx {
    const char *path;
    fq_st_file *f; /* owned until handed to the model */
    fq_config cfg;
    json_t *quant;               /* parsed flexq.quant */
    int32_t group[FQ_LIN_COUNT]; /* G per linear type */
    int32_t *abits;              /* [n_layer * FQ_LIN_COUNT] */
    char *err;
    size_t err_len;
} mf_ctx;

/* ---------------------------------------------------------------------------------------------- */
/* metadata                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/* The metadata value under key, parsed as JSON (caller decrefs). */
static int meta_json(mf_ctx *c, const char *key, json_t **out)
{
    *out = NULL;
    const char *text = fq_st_metadata(c->f, key);
    if (!text)
        return fq_err(c->err, c->err_len, FQ_EFORMAT, "%s: metadata key %s is missing", c->path,
                      key);
    json_error_t je;
    *out = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!*out)
        return fq_err(c->err, c->err_len, FQ_EFORMAT,
                      "%s: metadata key %s is not valid JSON: %s (line %d, column %d)", c->path,
                      key, je.text, je.line, je.column);
    return 0;
}

static int check_version(mf_ctx *c)
{
    const char *v = fq_st_metadata(c->f, FQ_MF_KEY_VERSION);
    if (!v)
        return fq_err(c->err, c->err_len, FQ_EFORMAT,
                      "%s: metadata key %s is missing (not a FlexQ INT6 model file)", c->path,
                      FQ_MF_KEY_VERSION);
    if (strcmp(v, FQ_MF_VERSION) != 0)
        return fq_err(c->err, c->err_len, FQ_EUNSUP,
                      "%s: metadata key %s is '%.32s'; this build reads version %s", c->path,
                      FQ_MF_KEY_VERSION, v, FQ_MF_VERSION);
    return 0;
}

static int load_config(mf_ctx *c)
{
    json_t *j = NULL;
    int rc = meta_json(c, FQ_MF_KEY_CONFIG, &j);
    if (!rc && (rc = fq_config_from_json(j, &c->cfg, c->err, c->err_len)))
        fq_err_prefix(c->err, c->err_len, "%s: metadata key %s: ", c->path, FQ_MF_KEY_CONFIG);
    json_decref(j);
    return rc;
}

/* Errors inside flexq.quant: "<path>: metadata key flexq.quant: <message>". */
#define QUANT_ERR(c, code, ...)                                                                    \
    (fq_err((c)->err, (c)->err_len, (code), __VA_ARGS__),                                          \
     fq_err_prefix((c)->err, (c)->err_len, "%s: metadata key %s: ", (c)->path, FQ_MF_KEY_QUANT),   \
     (code))

/* group_size: one integer, or {linear type: G}; each G must be 32/64/128 and divide that K. */
static int quant_groups(mf_ctx *c)
{
    const json_t *g = json_object_get(c->quant, "group_size");
    for (int t = 0; t < FQ_LIN_COUNT; t++) {
        const char *name = fq_lin_name((fq_lin_type)t);
        const json_t *v = json_is_object(g) ? json_object_get(g, name) : g;
        if (!json_is_integer(v))
            return QUANT_ERR(c, FQ_EFORMAT,
                             "key group_size%s%s is missing or not an integer (one integer, or "
                             "an object with an integer per linear type)",
                             json_is_object(g) ? "." : "", json_is_object(g) ? name : "");
        json_int_t gs = json_integer_value(v);
        int64_t n, k;
        fq_lin_shape(&c->cfg, (fq_lin_type)t, &n, &k);
        if ((gs != 32 && gs != 64 && gs != 128) || k % gs != 0)
            return QUANT_ERR(c, FQ_EFORMAT,
                             "group size %lld for %s is not 32, 64 or 128 dividing its input "
                             "width %lld",
                             (long long)gs, name, (long long)k);
        c->group[t] = (int32_t)gs;
    }
    if (json_is_object(g) && json_object_size(g) != FQ_LIN_COUNT)
        return QUANT_ERR(c, FQ_EFORMAT, "key group_size has %zu entries, expected %d",
                         json_object_size(g), FQ_LIN_COUNT);
    return 0;
}

/* abits: {"blk.L.<type>": 6 | 8} for every linear and nothing else. */
static int quant_abits(mf_ctx *c)
{
    const json_t *a = json_object_get(c->quant, "abits");
    if (!json_is_object(a))
        return QUANT_ERR(c, FQ_EFORMAT, "key abits is missing or not an object");
    size_t n_lin = (size_t)c->cfg.n_layer * FQ_LIN_COUNT;
    c->abits = fq_calloc_array(n_lin, sizeof *c->abits);
    if (!c->abits)
        return QUANT_ERR(c, FQ_ENOMEM, "out of memory");
    char name[FQ_TENSOR_NAME_MAX];
    for (size_t i = 0; i < n_lin; i++) {
        snprintf(name, sizeof name, "blk.%zu.%s", i / FQ_LIN_COUNT,
                 fq_lin_name((fq_lin_type)(i % FQ_LIN_COUNT)));
        const json_t *v = json_object_get(a, name);
        if (!v)
            return QUANT_ERR(c, FQ_EFORMAT, "key abits.%s is missing", name);
        if (!json_is_integer(v) || (json_integer_value(v) != 6 && json_integer_value(v) != 8))
            return QUANT_ERR(c, FQ_EFORMAT, "key abits.%s is not 6 or 8", name);
        c->abits[i] = (int32_t)json_integer_value(v);
    }
    if (json_object_size(a) != n_lin)
        return QUANT_ERR(c, FQ_EFORMAT, "key abits has %zu entries, expected %zu (one per linear)",
                         json_object_size(a), n_lin);
    return 0;
}

static int load_quant(mf_ctx *c)
{
    int rc = meta_json(c, FQ_MF_KEY_QUANT, &c->quant);
    if (rc)
        return rc;
    if (!json_is_object(c->quant))
        return QUANT_ERR(c, FQ_EFORMAT, "not a JSON object");
    const json_t *wbits = json_object_get(c->quant, "wbits");
    if (!json_is_integer(wbits) || json_integer_value(wbits) != 6)
        return QUANT_ERR(c, FQ_EUNSUP, "key wbits is missing or not 6");
    const char *layout = json_string_value(json_object_get(c->quant, "layout"));
    if (!layout)
        return QUANT_ERR(c, FQ_EFORMAT, "key layout is missing or not a string");
    if (strcmp(layout, FQ_MF_LAYOUT) != 0)
        return QUANT_ERR(c, FQ_EUNSUP, "key layout '%.120s' is not the one this build reads ('%s')",
                         layout, FQ_MF_LAYOUT);
    rc = quant_groups(c);
    return rc ? rc : quant_abits(c);
}

static int load_tokenizer(mf_ctx *c, rt_tokenizer **tok)
{
    json_t *j = NULL;
    fq_tok_spec spec = {0};
    int rc = meta_json(c, FQ_MF_KEY_TOKENIZER, &j);
    if (!rc && (rc = fq_tok_spec_from_json(j, &spec, c->err, c->err_len)))
        fq_err_prefix(c->err, c->err_len, "%s: metadata key %s: ", c->path, FQ_MF_KEY_TOKENIZER);
    json_decref(j);
    if (!rc && spec.n_tokens > c->cfg.n_vocab)
        rc = fq_err(c->err, c->err_len, FQ_EFORMAT,
                    "%s: metadata key %s: %d tokens but the model's vocabulary is %d", c->path,
                    FQ_MF_KEY_TOKENIZER, spec.n_tokens, c->cfg.n_vocab);
    if (!rc && (rc = rt_tokenizer_create(&spec, tok, c->err, c->err_len)))
        fq_err_prefix(c->err, c->err_len, "%s: metadata key %s: ", c->path, FQ_MF_KEY_TOKENIZER);
    fq_tok_spec_free(&spec);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* tensors                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void shape_str(char *buf, size_t cap, int32_t n_dims, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int32_t d = 0; d < n_dims && used < cap; d++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* The tensor name with this dtype and shape ([d0] or [d0, d1]), or an error naming it. */
static int expect(mf_ctx *c, const char *name, const char *dtype, int32_t n_dims, int64_t d0,
                  int64_t d1, const fq_st_tensor **out)
{
    const fq_st_tensor *t = fq_st_find(c->f, name);
    if (!t)
        return fq_err(c->err, c->err_len, FQ_EFORMAT, "%s: tensor %s is missing", c->path, name);
    if (strcmp(t->dtype, dtype) != 0)
        return fq_err(c->err, c->err_len, FQ_EFORMAT, "%s: tensor %s: dtype %s, expected %s",
                      c->path, name, t->dtype, dtype);
    int64_t want[2] = {d0, d1};
    if (t->n_dims != n_dims || t->shape[0] != d0 || (n_dims == 2 && t->shape[1] != d1)) {
        char have_s[96], want_s[64];
        shape_str(have_s, sizeof have_s, t->n_dims, t->shape);
        shape_str(want_s, sizeof want_s, n_dims, want);
        return fq_err(c->err, c->err_len, FQ_EFORMAT, "%s: tensor %s: shape %s, expected %s",
                      c->path, name, have_s, want_s);
    }
    if (strcmp(dtype, "F16") == 0 && (uintptr_t)t->data % 2 != 0)
        return fq_err(c->err, c->err_len, FQ_EFORMAT,
                      "%s: tensor %s: F16 data starts at an odd offset", c->path, name);
    if (out)
        *out = t;
    return 0;
}

static int check_layer(mf_ctx *c, int32_t l)
{
    const fq_config *g = &c->cfg;
    char name[FQ_TENSOR_NAME_MAX + 16];
    int rc;
    snprintf(name, sizeof name, "blk.%d.attn_norm", l);
    if ((rc = expect(c, name, "F16", 1, g->n_embd, 0, NULL)))
        return rc;
    snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
    if ((rc = expect(c, name, "F16", 1, g->n_embd, 0, NULL)))
        return rc;
    for (int t = 0; t < FQ_LIN_COUNT; t++) {
        int64_t n, k;
        fq_lin_shape(g, (fq_lin_type)t, &n, &k);
        snprintf(name, sizeof name, "blk.%d.%s.qweight", l, fq_lin_name((fq_lin_type)t));
        if ((rc = expect(c, name, "U8", 2, n, fq_pack_row_bytes(k), NULL)))
            return rc;
        snprintf(name, sizeof name, "blk.%d.%s.scales", l, fq_lin_name((fq_lin_type)t));
        if ((rc = expect(c, name, "F16", 2, n, k / c->group[t], NULL)))
            return rc;
    }
    return 0;
}

/* True when name is one the config implies (the exact canonical spelling). */
static bool name_expected(const fq_config *g, const char *name)
{
    if (strcmp(name, "token_embd") == 0 || strcmp(name, "output_norm") == 0)
        return true;
    if (strcmp(name, "output") == 0)
        return !g->tied_embeddings;
    if (strncmp(name, "blk.", 4) != 0)
        return false;
    char *end = NULL;
    long l = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || l < 0 || l >= g->n_layer)
        return false;
    const char *suffix = end + 1;
    char canon[FQ_TENSOR_NAME_MAX + 16];
    snprintf(canon, sizeof canon, "blk.%ld.%s", l, suffix);
    if (strcmp(canon, name) != 0)
        return false; /* "blk.01.", "blk.+1.", ... */
    if (strcmp(suffix, "attn_norm") == 0 || strcmp(suffix, "ffn_norm") == 0)
        return true;
    for (int t = 0; t < FQ_LIN_COUNT; t++) {
        size_t n = strlen(fq_lin_name((fq_lin_type)t));
        if (strncmp(suffix, fq_lin_name((fq_lin_type)t), n) == 0 &&
            (strcmp(suffix + n, ".qweight") == 0 || strcmp(suffix + n, ".scales") == 0))
            return true;
    }
    return false;
}

static int check_tensors(mf_ctx *c)
{
    const fq_config *g = &c->cfg;
    int rc;
    if ((rc = expect(c, "token_embd", "F16", 2, g->n_vocab, g->n_embd, NULL)) ||
        (rc = expect(c, "output_norm", "F16", 1, g->n_embd, 0, NULL)))
        return rc;
    if (!g->tied_embeddings && (rc = expect(c, "output", "F16", 2, g->n_vocab, g->n_embd, NULL)))
        return rc;
    for (int32_t l = 0; l < g->n_layer; l++)
        if ((rc = check_layer(c, l)))
            return rc;
    /* every expected tensor is present and names are unique, so any other one is extra */
    for (int32_t i = 0; i < fq_st_count(c->f); i++) {
        const char *name = fq_st_at(c->f, i)->name;
        if (!name_expected(g, name))
            return fq_err(c->err, c->err_len, FQ_EFORMAT,
                          "%s: tensor %.96s is not part of a%s model of %d layers", c->path, name,
                          g->tied_embeddings ? " tied" : "n untied", g->n_layer);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* building the model                                                                             */
/* ---------------------------------------------------------------------------------------------- */

/* Converts the F16 tensor name into dst and returns the end of what it wrote. */
static float *f16_copy(const fq_st_file *f, const char *name, float *dst)
{
    const fq_st_tensor *t = fq_st_find(f, name); /* present: check_tensors */
    const uint8_t *p = t->data;
    size_t n = t->n_bytes / 2;
    for (size_t i = 0; i < n; i++)
        dst[i] = fq_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    return dst + n;
}

static void fill_linears(const mf_ctx *c, int32_t l, rt_layer *ly)
{
    char name[FQ_TENSOR_NAME_MAX + 16];
    for (int t = 0; t < FQ_LIN_COUNT; t++) {
        int64_t n, k;
        fq_lin_shape(&c->cfg, (fq_lin_type)t, &n, &k);
        snprintf(name, sizeof name, "blk.%d.%s.qweight", l, fq_lin_name((fq_lin_type)t));
        const fq_st_tensor *qw = fq_st_find(c->f, name);
        snprintf(name, sizeof name, "blk.%d.%s.scales", l, fq_lin_name((fq_lin_type)t));
        const fq_st_tensor *sc = fq_st_find(c->f, name);
        *rt_layer_linear_mut(ly, (fq_lin_type)t) = (rt_linear){
            .n_out = (int32_t)n,
            .n_in = (int32_t)k,
            .w = NULL,
            .q6 = {.packed = qw->data,
                   .scales = (const uint16_t *)sc->data, /* even offset: checked */
                   .group = c->group[t],
                   .row_bytes = fq_pack_row_bytes(k)},
            .abits = c->abits[(int64_t)l * FQ_LIN_COUNT + t],
        };
    }
}

/* fp32 copies of every F16 tensor in one arena, and the pointers into it. */
static int fill_fp32(const mf_ctx *c, rt_model *m)
{
    const fq_config *g = &c->cfg;
    int64_t ve = (int64_t)g->n_vocab * g->n_embd;
    int64_t n = ve * (g->tied_embeddings ? 1 : 2) + g->n_embd * (1 + 2 * (int64_t)g->n_layer);
    float *p = m->arena = fq_malloc_array((size_t)n, sizeof(float));
    if (!p)
        return fq_err(c->err, c->err_len, FQ_ENOMEM, "%s: out of memory for %lld fp32 values",
                      c->path, (long long)n);
    m->tok_embd = p;
    p = f16_copy(c->f, "token_embd", p);
    m->out_norm = p;
    p = f16_copy(c->f, "output_norm", p);
    m->lm_head = (rt_linear){.n_out = g->n_vocab, .n_in = g->n_embd, .w = m->tok_embd};
    if (!g->tied_embeddings) {
        m->lm_head.w = p;
        p = f16_copy(c->f, "output", p);
    }
    char name[FQ_TENSOR_NAME_MAX];
    for (int32_t l = 0; l < g->n_layer; l++) {
        m->layers[l].attn_norm = p;
        snprintf(name, sizeof name, "blk.%d.attn_norm", l);
        p = f16_copy(c->f, name, p);
        m->layers[l].ffn_norm = p;
        snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
        p = f16_copy(c->f, name, p);
    }
    FQ_ASSERT(p == (float *)m->arena + n);
    return 0;
}

/* Builds the model from a fully checked context; on success the model takes c->f. */
static int build(mf_ctx *c, rt_model **out)
{
    rt_model *m = calloc(1, sizeof *m);
    if (!m)
        return fq_err(c->err, c->err_len, FQ_ENOMEM, "%s: out of memory", c->path);
    m->cfg = c->cfg;
    m->quant_json = strdup(fq_st_metadata(c->f, FQ_MF_KEY_QUANT)); /* present: load_quant */
    m->layers = fq_calloc_array((size_t)c->cfg.n_layer, sizeof *m->layers);
    int rc = 0;
    if (!m->quant_json || !m->layers)
        rc = fq_err(c->err, c->err_len, FQ_ENOMEM, "%s: out of memory", c->path);
    if (!rc)
        rc = load_tokenizer(c, &m->tok);
    if (!rc)
        rc = fill_fp32(c, m);
    for (int32_t l = 0; !rc && l < c->cfg.n_layer; l++)
        fill_linears(c, l, &m->layers[l]);
    if (rc) {
        rt_model_destroy(m);
        return rc;
    }
    m->file = c->f;
    c->f = NULL;
    *out = m;
    return 0;
}

int rt_modelfile_load(const char *path, rt_model **out, char *err, size_t err_len)
{
    *out = NULL;
    mf_ctx c = {.path = path, .err = err, .err_len = err_len};
    int rc = fq_st_open(path, &c.f, err, err_len);
    if (!rc)
        rc = check_version(&c);
    if (!rc)
        rc = load_config(&c);
    if (!rc)
        rc = load_quant(&c);
    if (!rc)
        rc = check_tensors(&c);
    if (!rc)
        rc = build(&c, out);
    fq_st_close(c.f);
    json_decref(c.quant);
    free(c.abits);
    return rc;
}

bool rt_modelfile_is_int6(const char *path)
{
    fq_st_file *f = NULL;
    if (fq_st_open(path, &f, NULL, 0) != 0)
        return false;
    bool yes = fq_st_metadata(f, FQ_MF_KEY_VERSION) != NULL;
    fq_st_close(f);
    return yes;
}

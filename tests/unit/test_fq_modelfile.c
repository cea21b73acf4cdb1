/* test_fq_modelfile.c — the INT6 model file: written from the tiny model, loaded back bit for bit,
 * and refused with one clear message when truncated, inconsistent or corrupt.
 */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "fq_modelfile.h"
#include "fq_safetensors.h"
#include "fq_weight.h"
#include "rt_model.h"
#include "rt_modelfile.h"
#include "rt_tokenizer.h"
#include "tc_tiny_model.h"

#include <jansson.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct mf_state {
    char dir[512];  /* a fresh temporary directory per test */
    char gguf[600]; /* dir/tiny.gguf */
    char fq6[600];  /* dir/tiny.fq6.safetensors, written by setup */
    char bad[600];  /* dir/bad.fq6.safetensors, for damaged copies */
    fq_ckpt *ck;    /* the tiny checkpoint */
    fq_qmodel *qm;  /* its quantization (auto group sizes) */
    char err[2048]; /* the last error message */
} mf_state;

static const char *const sample_texts[] = {
    "Hello world, the answer is 42.",
    "<|im_start|>user\nand then the cat sat on the mat<|im_end|>",
    "  spaces\tand tabs, \xc3\xbcn\xc3\xaf"
    "c\xc3\xb6"
    "d\xc3\xa9 and \xe2\x82\xac 1234567",
};

/* Writes the tiny model into dir (s->dir or a directory below it) and its INT6 file beside it. */
static int write_model(mf_state *s, const char *dir, const tc_tiny_params *p, int32_t group_request)
{
    snprintf(s->gguf, sizeof s->gguf, "%s/tiny.gguf", dir);
    snprintf(s->fq6, sizeof s->fq6, "%s/tiny.fq6.safetensors", dir);
    if (tc_tiny_model_write(dir, p) != 0)
        return -1;
    if (fq_ckpt_load(s->gguf, &s->ck, s->err, sizeof s->err) != 0)
        return -1;
    if (fq_qmodel_quantize(s->ck, group_request, NULL, NULL, &s->qm, s->err, sizeof s->err) != 0)
        return -1;
    return fq_modelfile_write(s->fq6, s->ck, s->qm, NULL, s->err, sizeof s->err) == 0 ? 0 : -1;
}

static int setup_with(void **state, const tc_tiny_params *p)
{
    mf_state *s = calloc(1, sizeof *s);
    if (!s || tc_mkdtemp(s->dir, sizeof s->dir) != 0) {
        free(s);
        return -1;
    }
    snprintf(s->bad, sizeof s->bad, "%s/bad.fq6.safetensors", s->dir);
    *state = s;
    if (write_model(s, s->dir, p, 0) != 0) {
        fprintf(stderr, "setup: %s\n", s->err);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    tc_tiny_params p = tc_tiny_default_params();
    return setup_with(state, &p);
}

/* A smaller model (one layer, K = 32), for the exhaustive truncation and corruption tests. */
static int setup_small(void **state)
{
    tc_tiny_params p = tc_tiny_default_params();
    p.n_layer = 1;
    p.n_embd = 32;
    p.n_ff = 64;
    p.n_head = 2;
    p.n_head_kv = 1;
    return setup_with(state, &p);
}

static int teardown(void **state)
{
    mf_state *s = *state;
    fq_qmodel_destroy(s->qm);
    fq_ckpt_destroy(s->ck);
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long len = ftell(fp);
    assert_true(len >= 0);
    assert_int_equal(fseek(fp, 0, SEEK_SET), 0);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static uint64_t header_len(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* A model file split into its parsed header and its data area. */
typedef struct mf_parts {
    json_t *hdr;
    uint8_t *data;
    size_t n_data;
} mf_parts;

static mf_parts parts_read(const char *path)
{
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    uint64_t hlen = header_len(b);
    assert_true(8 + hlen <= n);
    mf_parts p = {0};
    json_error_t je;
    p.hdr = json_loadb((const char *)b + 8, (size_t)hlen, 0, &je);
    assert_non_null(p.hdr);
    p.n_data = n - 8 - (size_t)hlen;
    p.data = malloc(p.n_data + 1);
    assert_non_null(p.data);
    memcpy(p.data, b + 8 + hlen, p.n_data);
    free(b);
    return p;
}

/* Writes the parts to path (header padded to 8 bytes) and frees them. */
static void parts_write(mf_parts *p, const char *path)
{
    char *text = json_dumps(p->hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(text);
    size_t hlen = strlen(text), padded = (hlen + 7) / 8 * 8;
    uint8_t *b = malloc(8 + padded + p->n_data);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, text, hlen);
    memset(b + 8 + hlen, ' ', padded - hlen);
    memcpy(b + 8 + padded, p->data, p->n_data);
    write_bytes(path, b, 8 + padded + p->n_data);
    free(b);
    free(text);
    json_decref(p->hdr);
    free(p->data);
}

/* The metadata value key of the header, parsed (a new reference). */
static json_t *meta_get(const mf_parts *p, const char *key)
{
    const char *text =
        json_string_value(json_object_get(json_object_get(p->hdr, "__metadata__"), key));
    assert_non_null(text);
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    return j;
}

/* Sets metadata key to the text of j (taken), or removes it when j is NULL. */
static void meta_put(mf_parts *p, const char *key, json_t *j)
{
    json_t *meta = json_object_get(p->hdr, "__metadata__");
    if (!j) {
        assert_int_equal(json_object_del(meta, key), 0);
        return;
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    assert_non_null(text);
    assert_int_equal(json_object_set_new(meta, key, json_string(text)), 0);
    free(text);
    json_decref(j);
}

static void meta_put_text(mf_parts *p, const char *key, const char *text)
{
    json_t *meta = json_object_get(p->hdr, "__metadata__");
    assert_int_equal(json_object_set_new(meta, key, json_string(text)), 0);
}

/* Loads path expecting failure with code; the message must name the path and each needle. */
static void expect_load_error(mf_state *s, const char *path, int code, const char *needle1,
                              const char *needle2)
{
    rt_model *m = (rt_model *)1;
    s->err[0] = 0;
    int rc = rt_modelfile_load(path, &m, s->err, sizeof s->err);
    if (rc != code || !strstr(s->err, path) || (needle1 && !strstr(s->err, needle1)) ||
        (needle2 && !strstr(s->err, needle2)))
        fail_msg("rc %d (want %d), err '%s', want '%s' and '%s'", rc, code, s->err,
                 needle1 ? needle1 : "", needle2 ? needle2 : "");
    assert_null(m);
}

static rt_model *load_ok(mf_state *s, const char *path)
{
    rt_model *m = NULL;
    int rc = rt_modelfile_load(path, &m, s->err, sizeof s->err);
    if (rc)
        fail_msg("load %s: %s", path, s->err);
    assert_non_null(m);
    return m;
}

static const rt_linear *model_lin(const rt_model *m, int32_t l, int t)
{
    return rt_layer_linear(&m->layers[l], (fq_lin_type)t);
}

/* Every fp32 value equals the fp16 rounding of the checkpoint's. */
static void assert_f16_of(const float *got, const fq_tensor *want)
{
    int64_t n = fq_tensor_numel(want);
    for (int64_t i = 0; i < n; i++)
        if (got[i] != fq_f16_to_f32(fq_f32_to_f16(want->data[i])))
            fail_msg("%s[%lld]: %g, want fp16(%g)", want->name, (long long)i, (double)got[i],
                     (double)want->data[i]);
}

static void assert_config_equal(const fq_config *a, const fq_config *b)
{
    assert_string_equal(a->arch, b->arch);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_embd, b->n_embd);
    assert_int_equal(a->n_ff, b->n_ff);
    assert_int_equal(a->n_head, b->n_head);
    assert_int_equal(a->n_head_kv, b->n_head_kv);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->n_vocab, b->n_vocab);
    assert_int_equal(a->n_ctx, b->n_ctx);
    assert_true(a->rope_theta == b->rope_theta);
    assert_true(a->norm_eps == b->norm_eps);
    assert_int_equal(a->tied_embeddings, b->tied_embeddings);
    assert_int_equal(a->rope_style, b->rope_style);
}

/* The loaded tokenizer encodes and decodes every sample like the checkpoint's. */
static void assert_tokenizer_like(const rt_tokenizer *got, const fq_tok_spec *spec)
{
    rt_tokenizer *want = NULL;
    char err[256];
    assert_int_equal(rt_tokenizer_create(spec, &want, err, sizeof err), 0);
    assert_int_equal(rt_tokenizer_n_vocab(got), rt_tokenizer_n_vocab(want));
    assert_int_equal(rt_tokenizer_bos(got), rt_tokenizer_bos(want));
    assert_int_equal(rt_tokenizer_eos(got), rt_tokenizer_eos(want));
    rt_encode_params ep = rt_encode_default_params();
    for (size_t i = 0; i < sizeof sample_texts / sizeof sample_texts[0]; i++) {
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        const char *t = sample_texts[i];
        assert_int_equal(rt_tokenizer_encode(got, t, strlen(t), &ep, &a, &na, err, sizeof err), 0);
        assert_int_equal(rt_tokenizer_encode(want, t, strlen(t), &ep, &b, &nb, err, sizeof err), 0);
        assert_int_equal(na, nb);
        assert_true(na > 0);
        assert_memory_equal(a, b, na * sizeof *a);
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(rt_tokenizer_decode(got, a, na, false, &text, &len, err, sizeof err), 0);
        assert_string_equal(text, t);
        free(text);
        free(a);
        free(b);
    }
    rt_tokenizer_destroy(want);
}

/* The loaded model matches the checkpoint and its quantization exactly. */
static void assert_model_matches(const rt_model *m, const fq_ckpt *ck, const fq_qmodel *qm)
{
    assert_config_equal(&m->cfg, &ck->cfg);
    assert_null(m->ck);
    assert_non_null(m->file);
    assert_non_null(m->quant_json);
    assert_f16_of(m->tok_embd, fq_ckpt_find(ck, "token_embd"));
    assert_f16_of(m->out_norm, fq_ckpt_find(ck, "output_norm"));
    if (ck->cfg.tied_embeddings)
        assert_ptr_equal(m->lm_head.w, m->tok_embd);
    else
        assert_f16_of(m->lm_head.w, fq_ckpt_find(ck, "output"));
    assert_int_equal(m->lm_head.n_out, ck->cfg.n_vocab);
    assert_int_equal(m->lm_head.n_in, ck->cfg.n_embd);
    for (int32_t l = 0; l < ck->cfg.n_layer; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_norm", l);
        assert_f16_of(m->layers[l].attn_norm, fq_ckpt_find(ck, name));
        snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
        assert_f16_of(m->layers[l].ffn_norm, fq_ckpt_find(ck, name));
        for (int t = 0; t < FQ_LIN_COUNT; t++) {
            const rt_linear *got = model_lin(m, l, t);
            const fq_qlinear *want = &qm->lin[l * FQ_LIN_COUNT + t];
            assert_null(got->w);
            assert_int_equal(got->n_out, want->n_out);
            assert_int_equal(got->n_in, want->n_in);
            assert_int_equal(got->q6.group, want->group);
            assert_int_equal(got->q6.row_bytes, want->row_bytes);
            assert_int_equal(got->abits, want->abits);
            assert_memory_equal(got->q6.packed, want->packed,
                                (size_t)(want->n_out * want->row_bytes));
            assert_memory_equal(got->q6.scales, want->scales,
                                (size_t)(want->n_out * (want->n_in / want->group)) * 2);
        }
    }
    assert_tokenizer_like(m->tok, &ck->tok);
}

/* ---------------------------------------------------------------------------------------------- */
/* round trips                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void test_fq_modelfile_round_trip_is_exact(void **state)
{
    mf_state *s = *state;
    rt_model *m = load_ok(s, s->fq6);
    assert_model_matches(m, s->ck, s->qm);
    rt_model_destroy(m);
}

static void test_fq_modelfile_untied_round_trip_is_exact(void **state)
{
    mf_state *s = *state;
    tc_tiny_params p = tc_tiny_default_params();
    p.tied = false;
    p.seed = 7;
    fq_qmodel_destroy(s->qm);
    fq_ckpt_destroy(s->ck);
    s->qm = NULL;
    s->ck = NULL;
    char sub[600];
    snprintf(sub, sizeof sub, "%s/untied", s->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    if (write_model(s, sub, &p, 32) != 0)
        fail_msg("%s", s->err);
    assert_false(s->ck->cfg.tied_embeddings);
    rt_model *m = load_ok(s, s->fq6);
    assert_ptr_not_equal(m->lm_head.w, m->tok_embd);
    assert_model_matches(m, s->ck, s->qm);
    rt_model_destroy(m);
}

static void test_fq_modelfile_abits_and_sensitivity_round_trip(void **state)
{
    mf_state *s = *state;
    for (int32_t i = 0; i < s->qm->n_layer * FQ_LIN_COUNT; i++)
        s->qm->lin[i].abits = i % FQ_LIN_COUNT == FQ_LIN_DOWN || i == 2 ? 8 : 6;
    const char *sens = "{\"metric\":\"ppl\",\"base\":12.5,\"table\":{\"ffn_down\":13.9,"
                       "\"attn_q\":12.6},\"a8\":[\"ffn_down\"],\"threshold\":0.1}";
    fq_modelfile_params p = fq_modelfile_default_params();
    p.sensitivity_json = sens;
    p.source_sha256 = "abc123";
    p.calib_desc = "wikitext-2 train, 16 x 512 tokens";
    assert_int_equal(fq_modelfile_write(s->fq6, s->ck, s->qm, &p, s->err, sizeof s->err), 0);
    rt_model *m = load_ok(s, s->fq6);
    assert_model_matches(m, s->ck, s->qm); /* abits included */
    json_t *q = json_loads(m->quant_json, 0, NULL);
    assert_non_null(q);
    json_t *want = json_loads(sens, 0, NULL);
    assert_true(json_equal(json_object_get(q, "sensitivity"), want));
    json_decref(want);
    assert_int_equal(json_integer_value(json_object_get(q, "wbits")), 6);
    assert_string_equal(json_string_value(json_object_get(q, "layout")), FQ_MF_LAYOUT);
    assert_string_equal(json_string_value(json_object_get(q, "calibration")), p.calib_desc);
    json_t *src = json_object_get(q, "source");
    assert_string_equal(json_string_value(json_object_get(src, "sha256")), "abc123");
    assert_string_equal(json_string_value(json_object_get(src, "format")), "gguf");
    assert_string_equal(json_string_value(json_object_get(src, "path")), s->gguf);
    /* K = 64 gives G = 64, K = 96 (ffn_down) G = 32: one group size per linear type */
    json_t *g = json_object_get(q, "group_size");
    assert_true(json_is_object(g));
    assert_int_equal(json_integer_value(json_object_get(g, "attn_q")), 64);
    assert_int_equal(json_integer_value(json_object_get(g, "ffn_down")), 32);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(q, "abits"), "blk.1.ffn_down")), 8);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(q, "abits"), "blk.1.attn_q")), 6);
    json_decref(q);
    rt_model_destroy(m);
}

static void test_fq_modelfile_uniform_group_is_one_integer(void **state)
{
    mf_state *s = *state;
    fq_qmodel_destroy(s->qm);
    assert_int_equal(fq_qmodel_quantize(s->ck, 32, NULL, NULL, &s->qm, s->err, sizeof s->err), 0);
    assert_int_equal(fq_modelfile_write(s->fq6, s->ck, s->qm, NULL, s->err, sizeof s->err), 0);
    rt_model *m = load_ok(s, s->fq6);
    json_t *q = json_loads(m->quant_json, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(q, "group_size")), 32);
    assert_int_equal(json_integer_value(json_object_get(q, "group_request")), 32);
    assert_true(json_is_null(json_object_get(q, "sensitivity")));
    assert_true(json_is_null(json_object_get(q, "calibration")));
    json_decref(q);
    assert_model_matches(m, s->ck, s->qm);
    rt_model_destroy(m);
}

static void test_fq_modelfile_layout_is_aligned_and_contiguous(void **state)
{
    mf_state *s = *state;
    fq_st_file *f = NULL;
    assert_int_equal(fq_st_open(s->fq6, &f, s->err, sizeof s->err), 0);
    size_t n;
    uint8_t *b = read_bytes(s->fq6, &n);
    uint64_t data_start = 8 + header_len(b);
    assert_int_equal(data_start % 64, 0);
    /* contiguous, no gaps, nothing after the last tensor (what Python's safetensors demands) */
    uint64_t covered = 0;
    for (int32_t i = 0; i < fq_st_count(f); i++) {
        const fq_st_tensor *t = fq_st_at(f, i);
        covered += t->n_bytes;
        if (strstr(t->name, ".qweight"))
            assert_int_equal(((uintptr_t)t->data) % 16, 0);
        if (strcmp(t->dtype, "F16") == 0)
            assert_int_equal(((uintptr_t)t->data) % 2, 0);
    }
    assert_int_equal(covered, n - data_start);
    assert_string_equal(fq_st_metadata(f, FQ_MF_KEY_VERSION), "1");
    free(b);
    fq_st_close(f);
}

static void test_fq_modelfile_json_helpers_round_trip(void **state)
{
    mf_state *s = *state;
    json_t *j = fq_config_to_json(&s->ck->cfg);
    assert_non_null(j);
    fq_config c;
    assert_int_equal(fq_config_from_json(j, &c, s->err, sizeof s->err), 0);
    assert_config_equal(&c, &s->ck->cfg);
    json_decref(j);

    const fq_tok_spec *want = &s->ck->tok;
    j = fq_tok_spec_to_json(want);
    assert_non_null(j);
    fq_tok_spec t;
    assert_int_equal(fq_tok_spec_from_json(j, &t, s->err, sizeof s->err), 0);
    json_decref(j);
    assert_string_equal(t.model, want->model);
    assert_string_equal(t.pre, want->pre);
    assert_int_equal(t.n_tokens, want->n_tokens);
    assert_int_equal(t.n_merges, want->n_merges);
    for (int32_t i = 0; i < t.n_tokens; i++) {
        assert_string_equal(t.tokens[i], want->tokens[i]);
        assert_int_equal(t.token_types[i], want->token_types[i]);
    }
    for (int32_t i = 0; i < t.n_merges; i++)
        assert_string_equal(t.merges[i], want->merges[i]);
    assert_int_equal(t.ignore_merges, want->ignore_merges);
    assert_int_equal(t.bos_id, want->bos_id);
    assert_int_equal(t.eos_id, want->eos_id);
    assert_int_equal(t.pad_id, want->pad_id);
    assert_int_equal(t.add_bos, want->add_bos);
    assert_int_equal(t.add_eos, want->add_eos);
    if (want->chat_template)
        assert_string_equal(t.chat_template, want->chat_template);
    else
        assert_null(t.chat_template);
    fq_tok_spec_free(&t);
}

static void test_fq_modelfile_rt_model_load_dispatches(void **state)
{
    mf_state *s = *state;
    assert_true(rt_modelfile_is_int6(s->fq6));
    assert_false(rt_modelfile_is_int6(s->gguf));
    assert_false(rt_modelfile_is_int6(s->dir));
    char hf[700];
    snprintf(hf, sizeof hf, "%s/hf/model.safetensors", s->dir);
    assert_false(rt_modelfile_is_int6(hf));
    rt_model *m = NULL;
    assert_int_equal(rt_model_load(s->fq6, &m, s->err, sizeof s->err), 0);
    assert_non_null(m->file);
    assert_null(m->ck);
    rt_model_destroy(m);
    assert_int_equal(rt_model_load(s->gguf, &m, s->err, sizeof s->err), 0);
    assert_non_null(m->ck);
    rt_model_destroy(m);
    /* a broken *.safetensors file gets the INT6 loader's message, not the GGUF reader's */
    write_bytes(s->bad, "\x10\0\0\0\0\0\0\0{}", 10);
    assert_int_equal(rt_model_load(s->bad, &m, s->err, sizeof s->err), FQ_EFORMAT);
    assert_non_null(strstr(s->err, s->bad));
    assert_non_null(strstr(s->err, "header length"));
}

/* ---------------------------------------------------------------------------------------------- */
/* refusing bad files                                                                             */
/* ---------------------------------------------------------------------------------------------- */

static void test_fq_modelfile_every_truncation_fails_naming_the_path(void **state)
{
    mf_state *s = *state;
    size_t n;
    uint8_t *b = read_bytes(s->fq6, &n);
    write_bytes(s->bad, b, n);
    free(b);
    /* shrink the same file one byte at a time: every strict prefix must be refused */
    for (size_t len = n; len-- > 0;) {
        assert_int_equal(truncate(s->bad, (off_t)len), 0);
        rt_model *m = (rt_model *)1;
        int rc = rt_modelfile_load(s->bad, &m, s->err, sizeof s->err);
        if (rc != FQ_EFORMAT || !strstr(s->err, s->bad))
            fail_msg("length %zu of %zu: rc %d, err '%s'", len, n, rc, s->err);
        assert_null(m);
    }
}

static void test_fq_modelfile_wrong_dtype_rejected(void **state)
{
    mf_state *s = *state;
    mf_parts p = parts_read(s->fq6);
    json_object_set_new(json_object_get(p.hdr, "blk.0.attn_q.qweight"), "dtype", json_string("I8"));
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor blk.0.attn_q.qweight",
                      "dtype I8, expected U8");

    p = parts_read(s->fq6);
    json_object_set_new(json_object_get(p.hdr, "blk.1.ffn_norm"), "dtype", json_string("BF16"));
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor blk.1.ffn_norm", "expected F16");
}

static void test_fq_modelfile_wrong_shape_rejected(void **state)
{
    mf_state *s = *state;
    /* same byte count, transposed: passes the container check, fails the config check */
    mf_parts p = parts_read(s->fq6);
    json_t *e = json_object_get(p.hdr, "blk.1.attn_k.qweight");
    json_t *shape = json_object_get(e, "shape");
    json_int_t d0 = json_integer_value(json_array_get(shape, 0));
    json_int_t d1 = json_integer_value(json_array_get(shape, 1));
    json_object_set_new(e, "shape", json_pack("[I, I]", d1, d0));
    parts_write(&p, s->bad);
    char want[96];
    snprintf(want, sizeof want, "shape [%lld, %lld], expected [%lld, %lld]", (long long)d1,
             (long long)d0, (long long)d0, (long long)d1);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor blk.1.attn_k.qweight", want);

    p = parts_read(s->fq6);
    e = json_object_get(p.hdr, "output_norm");
    json_object_set_new(e, "shape", json_pack("[i, i]", 2, s->ck->cfg.n_embd / 2));
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor output_norm", "shape [2, 32]");
}

static void test_fq_modelfile_missing_or_extra_tensor_rejected(void **state)
{
    mf_state *s = *state;
    mf_parts p = parts_read(s->fq6);
    assert_int_equal(json_object_del(p.hdr, "blk.1.ffn_down.scales"), 0);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor blk.1.ffn_down.scales is missing", NULL);

    p = parts_read(s->fq6);
    assert_int_equal(json_object_del(p.hdr, "token_embd"), 0);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor token_embd is missing", NULL);

    const char *extras[] = {"blk.0.bogus", "blk.2.attn_norm", "blk.01.attn_norm", "output",
                            "blk.0.attn_q.qweight2"};
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
        p = parts_read(s->fq6);
        json_object_set_new(
            p.hdr, extras[i],
            json_pack("{s:s, s:[i], s:[i, i]}", "dtype", "U8", "shape", 0, "data_offsets", 0, 0));
        parts_write(&p, s->bad);
        char want[96];
        snprintf(want, sizeof want, "tensor %s is not part of", extras[i]);
        expect_load_error(s, s->bad, FQ_EFORMAT, want, NULL);
    }
}

static void test_fq_modelfile_bad_group_size_rejected(void **state)
{
    mf_state *s = *state;
    struct {
        const char *type;
        int g;
        const char *needle;
    } cases[] = {
        {"ffn_down", 64,
         "group size 64 for ffn_down is not 32, 64 or 128 dividing its input "
         "width 96"},
        {"attn_q", 48, "group size 48 for attn_q"},
        {"attn_v", 0, "group size 0 for attn_v"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mf_parts p = parts_read(s->fq6);
        json_t *q = meta_get(&p, FQ_MF_KEY_QUANT);
        json_object_set_new(json_object_get(q, "group_size"), cases[i].type,
                            json_integer(cases[i].g));
        meta_put(&p, FQ_MF_KEY_QUANT, q);
        parts_write(&p, s->bad);
        expect_load_error(s, s->bad, FQ_EFORMAT, "metadata key flexq.quant", cases[i].needle);
    }
    /* a valid group size that disagrees with the scales tensor */
    mf_parts p = parts_read(s->fq6);
    json_t *q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(json_object_get(q, "group_size"), "attn_q", json_integer(32));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "tensor blk.0.attn_q.scales",
                      "shape [64, 1], expected [64, 2]");
    /* missing, or the wrong type */
    p = parts_read(s->fq6);
    q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(q, "group_size", json_string("64"));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "key group_size", "not an integer");
}

static void test_fq_modelfile_bad_abits_rejected(void **state)
{
    mf_state *s = *state;
    mf_parts p = parts_read(s->fq6);
    json_t *q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(json_object_get(q, "abits"), "blk.1.ffn_up", json_integer(7));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "flexq.quant", "abits.blk.1.ffn_up is not 6 or 8");

    p = parts_read(s->fq6);
    q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_del(json_object_get(q, "abits"), "blk.0.attn_output");
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "flexq.quant", "abits.blk.0.attn_output is missing");

    p = parts_read(s->fq6);
    q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(json_object_get(q, "abits"), "blk.9.attn_q", json_integer(8));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "flexq.quant", "abits has 15 entries, expected 14");

    p = parts_read(s->fq6);
    q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(q, "abits", json_integer(8));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "flexq.quant",
                      "key abits is missing or not an object");
}

static void test_fq_modelfile_missing_metadata_rejected(void **state)
{
    mf_state *s = *state;
    const char *keys[] = {FQ_MF_KEY_CONFIG, FQ_MF_KEY_TOKENIZER, FQ_MF_KEY_QUANT};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        mf_parts p = parts_read(s->fq6);
        meta_put(&p, keys[i], NULL);
        parts_write(&p, s->bad);
        char want[96];
        snprintf(want, sizeof want, "metadata key %s is missing", keys[i]);
        expect_load_error(s, s->bad, FQ_EFORMAT, want, NULL);
    }
    mf_parts p = parts_read(s->fq6);
    assert_int_equal(json_object_del(p.hdr, "__metadata__"), 0);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "metadata key flexq.version is missing",
                      "not a FlexQ INT6 model file");
    assert_false(rt_modelfile_is_int6(s->bad));

    p = parts_read(s->fq6);
    meta_put_text(&p, FQ_MF_KEY_QUANT, "{\"wbits\": 6,");
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, "metadata key flexq.quant is not valid JSON", NULL);
}

static void test_fq_modelfile_wrong_version_or_layout_rejected(void **state)
{
    mf_state *s = *state;
    mf_parts p = parts_read(s->fq6);
    meta_put_text(&p, FQ_MF_KEY_VERSION, "2");
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EUNSUP, "metadata key flexq.version is '2'", "reads version 1");
    assert_true(rt_modelfile_is_int6(s->bad)); /* it is one, just not one this build reads */

    p = parts_read(s->fq6);
    json_t *q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(q, "layout", json_string("fq_pack v2"));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EUNSUP, "flexq.quant", "layout 'fq_pack v2'");

    p = parts_read(s->fq6);
    q = meta_get(&p, FQ_MF_KEY_QUANT);
    json_object_set_new(q, "wbits", json_integer(4));
    meta_put(&p, FQ_MF_KEY_QUANT, q);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EUNSUP, "flexq.quant", "wbits");
}

static void test_fq_modelfile_bad_config_rejected(void **state)
{
    mf_state *s = *state;
    struct {
        const char *key;
        json_t *value; /* NULL = delete */
        int code;
        const char *needle;
    } cases[] = {
        {"n_head_kv", json_integer(3), FQ_EFORMAT, "not a multiple of key n_head_kv"},
        {"n_embd", json_integer(-4), FQ_EFORMAT, "key n_embd = -4 is outside"},
        {"rope_style", json_string("sideways"), FQ_EFORMAT, "rope_style"},
        {"arch", json_string("gpt2"), FQ_EUNSUP, "key arch = 'gpt2'"},
        {"norm_eps", json_string("1e-5"), FQ_EFORMAT, "key norm_eps is not a number"},
        {"tied_embeddings", NULL, FQ_EFORMAT, "key tied_embeddings is missing"},
        {"rope_scaling", json_string("yarn"), FQ_EFORMAT, "unknown key 'rope_scaling'"},
        /* consistent in itself, but not with the tensors */
        {"n_ff", json_integer(64), FQ_EFORMAT, "tensor blk.0.ffn_gate.qweight: shape [96, 48]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mf_parts p = parts_read(s->fq6);
        json_t *c = meta_get(&p, FQ_MF_KEY_CONFIG);
        if (cases[i].value)
            json_object_set_new(c, cases[i].key, cases[i].value);
        else
            json_object_del(c, cases[i].key);
        meta_put(&p, FQ_MF_KEY_CONFIG, c);
        parts_write(&p, s->bad);
        expect_load_error(s, s->bad, cases[i].code, cases[i].needle, NULL);
    }
}

static void test_fq_modelfile_bad_tokenizer_rejected(void **state)
{
    mf_state *s = *state;
    struct {
        const char *key;
        json_t *value;
        const char *needle;
    } cases[] = {
        {"token_types", json_pack("[i, i]", 1, 1), "token_types is not an array of"},
        {"bos_id", json_integer(100000), "key bos_id = 100000 is outside"},
        {"tokens", json_pack("[s, i]", "a", 3), "key tokens[1] is not a string"},
        {"merges", json_pack("[s]", "zz qq"), "merge"}, /* tokens missing from the vocabulary */
        {"pre", json_string("klingon"), "klingon"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mf_parts p = parts_read(s->fq6);
        json_t *t = meta_get(&p, FQ_MF_KEY_TOKENIZER);
        json_object_set_new(t, cases[i].key, cases[i].value);
        meta_put(&p, FQ_MF_KEY_TOKENIZER, t);
        parts_write(&p, s->bad);
        rt_model *m = (rt_model *)1;
        int rc = rt_modelfile_load(s->bad, &m, s->err, sizeof s->err);
        if (rc >= 0 || !strstr(s->err, s->bad) || !strstr(s->err, "metadata key flexq.tokenizer") ||
            !strstr(s->err, cases[i].needle))
            fail_msg("case %zu: rc %d, err '%s'", i, rc, s->err);
        assert_null(m);
    }
}

static void test_fq_modelfile_odd_f16_offset_rejected(void **state)
{
    mf_state *s = *state;
    /* move the last tensor (an F16 one: the qweights come first) one byte later */
    mf_parts p = parts_read(s->fq6);
    const char *key, *last = NULL;
    json_t *v;
    json_int_t end_max = -1;
    json_object_foreach(p.hdr, key, v)
    {
        json_t *offs = json_object_get(v, "data_offsets");
        if (offs && json_integer_value(json_array_get(offs, 1)) > end_max) {
            end_max = json_integer_value(json_array_get(offs, 1));
            last = key;
        }
    }
    json_t *e = json_object_get(p.hdr, last);
    assert_string_equal(json_string_value(json_object_get(e, "dtype")), "F16");
    json_t *offs = json_object_get(e, "data_offsets");
    json_int_t b = json_integer_value(json_array_get(offs, 0));
    json_object_set_new(e, "data_offsets", json_pack("[I, I]", b + 1, end_max + 1));
    p.data = realloc(p.data, p.n_data + 1);
    assert_non_null(p.data);
    memmove(p.data + b + 1, p.data + b, (size_t)(end_max - b));
    p.n_data++;
    char want[128];
    snprintf(want, sizeof want, "tensor %s: F16 data starts at an odd offset", last);
    parts_write(&p, s->bad);
    expect_load_error(s, s->bad, FQ_EFORMAT, want, NULL);
}

static uint32_t xorshift32(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void test_fq_modelfile_random_corruption_never_crashes(void **state)
{
    mf_state *s = *state;
    size_t n;
    uint8_t *bytes = read_bytes(s->fq6, &n);
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    size_t header_end = 8 + (size_t)header_len(bytes);
    uint32_t rng = 0x2545f491u;
    int loaded = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(copy, bytes, n);
        int flips = 1 + (int)(xorshift32(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            uint32_t r = xorshift32(&rng);
            size_t pos = r % 8 == 0 ? r / 8 % n : 8 + r / 8 % (header_end - 8);
            uint8_t val = (uint8_t)xorshift32(&rng);
            /* half the time a plausible JSON character, to get past the parser more often */
            copy[pos] = r & 1 ? val : (uint8_t) "0123456789\"{}[],:. -8"[val % 21];
        }
        write_bytes(s->bad, copy, n);
        rt_model *m = NULL;
        int rc = rt_modelfile_load(s->bad, &m, s->err, sizeof s->err);
        if (rc == 0) {
            loaded++;
            rt_model_destroy(m);
        } else {
            assert_null(m);
            assert_non_null(strstr(s->err, s->bad));
        }
    }
    print_message("random corruption: %d of 1500 variants still loaded\n", loaded);
    free(copy);
    free(bytes);
}

/* ---------------------------------------------------------------------------------------------- */
/* writer errors                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

/* The directory holds exactly the files setup wrote plus the ones named (no temporary left). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void expect_write_error(mf_state *s, const fq_modelfile_params *p, int code,
                               const char *needle)
{
    int before = count_entries(s->dir);
    s->err[0] = 0;
    int rc = fq_modelfile_write(s->bad, s->ck, s->qm, p, s->err, sizeof s->err);
    if (rc != code || !strstr(s->err, needle))
        fail_msg("rc %d (want %d), err '%s', want '%s'", rc, code, s->err, needle);
    assert_int_equal(count_entries(s->dir), before); /* neither the file nor a temporary */
}

static void test_fq_modelfile_writer_refuses_bad_input(void **state)
{
    mf_state *s = *state;
    fq_qlinear *lin = &s->qm->lin[FQ_LIN_COUNT + FQ_LIN_UP];
    lin->abits = 7;
    expect_write_error(s, NULL, FQ_EINVAL, "blk.1.ffn_up: activation bits 7");
    lin->abits = 6;
    lin->group = 48;
    expect_write_error(s, NULL, FQ_EINVAL, "blk.1.ffn_up: group size 48");
    lin->group = 32; /* valid, but layer 0 uses 64 for ffn_up */
    expect_write_error(s, NULL, FQ_EINVAL, "differs from layer 0");
    lin->group = 64;

    fq_modelfile_params p = fq_modelfile_default_params();
    p.sensitivity_json = "{\"ffn_down\": ";
    expect_write_error(s, &p, FQ_EINVAL, "sensitivity table is not valid JSON");
    p = fq_modelfile_default_params();
    p.calib_desc = "bad \xff utf-8";
    expect_write_error(s, &p, FQ_EINVAL, "calibration description is not valid UTF-8");

    fq_tensor *embd = (fq_tensor *)fq_ckpt_find(s->ck, "token_embd");
    float saved = embd->data[5];
    embd->data[5] = 1e6f;
    expect_write_error(s, NULL, FQ_ERANGE, "token_embd: value 1e+06 at index 5");
    embd->data[5] = saved;

    char *tok = s->ck->tok.tokens[7];
    s->ck->tok.tokens[7] = "\xc0\x80"; /* overlong NUL */
    expect_write_error(s, NULL, FQ_EUNSUP, "tokenizer token 7 is not valid UTF-8");
    s->ck->tok.tokens[7] = tok;

    char nodir[700];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.fq6.safetensors", s->dir);
    assert_int_equal(fq_modelfile_write(nodir, s->ck, s->qm, NULL, s->err, sizeof s->err), FQ_EIO);
    assert_non_null(strstr(s->err, nodir));

    /* the good path still works after all that */
    assert_int_equal(fq_modelfile_write(s->bad, s->ck, s->qm, NULL, s->err, sizeof s->err), 0);
}

static void test_fq_modelfile_json_readers_validate(void **state)
{
    mf_state *s = *state;
    fq_config c;
    json_t *j = json_loads("[1]", JSON_DECODE_ANY, NULL);
    assert_int_equal(fq_config_from_json(j, &c, s->err, sizeof s->err), FQ_EFORMAT);
    json_decref(j);
    j = fq_config_to_json(&s->ck->cfg);
    json_object_set_new(j, "head_dim", json_integer(15));
    assert_int_equal(fq_config_from_json(j, &c, s->err, sizeof s->err), FQ_EFORMAT);
    assert_non_null(strstr(s->err, "head_dim = 15 is odd"));
    assert_int_equal(c.n_embd, 0); /* zeroed on failure */
    json_decref(j);

    fq_tok_spec t;
    j = fq_tok_spec_to_json(&s->ck->tok);
    json_object_set_new(j, "token_types", json_pack("[i]", 9));
    assert_int_equal(fq_tok_spec_from_json(j, &t, s->err, sizeof s->err), FQ_EFORMAT);
    assert_null(t.tokens);
    json_decref(j);
    j = fq_tok_spec_to_json(&s->ck->tok);
    json_array_set_new(json_object_get(j, "token_types"), 3, json_integer(9));
    assert_int_equal(fq_tok_spec_from_json(j, &t, s->err, sizeof s->err), FQ_EFORMAT);
    assert_non_null(strstr(s->err, "token_types[3]"));
    json_decref(j);
    j = fq_tok_spec_to_json(&s->ck->tok);
    json_object_set_new(j, "chat_template", json_integer(1));
    assert_int_equal(fq_tok_spec_from_json(j, &t, s->err, sizeof s->err), FQ_EFORMAT);
    assert_non_null(strstr(s->err, "chat_template"));
    json_decref(j);
    j = fq_tok_spec_to_json(&s->ck->tok);
    json_object_set_new(j, "chat_template", json_string("{{ messages }}"));
    json_object_set_new(j, "model", json_string("a-very-long-model-name"));
    assert_int_equal(fq_tok_spec_from_json(j, &t, s->err, sizeof s->err), FQ_EFORMAT);
    assert_non_null(strstr(s->err, "key model is longer"));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fq_modelfile_round_trip_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_untied_round_trip_is_exact, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_abits_and_sensitivity_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_uniform_group_is_one_integer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_layout_is_aligned_and_contiguous, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_json_helpers_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_rt_model_load_dispatches, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_every_truncation_fails_naming_the_path,
                                        setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_wrong_dtype_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_wrong_shape_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_missing_or_extra_tensor_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_bad_group_size_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_bad_abits_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_missing_metadata_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_wrong_version_or_layout_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_bad_config_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_bad_tokenizer_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_odd_f16_offset_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_random_corruption_never_crashes,
                                        setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_writer_refuses_bad_input, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_modelfile_json_readers_validate, setup, teardown),
    };
    return cmocka_run_group_tests_name("fq_modelfile", tests, NULL, NULL);
}

/* test_fq_safetensors.c — the safetensors reader on valid, truncated and corrupt files, and the HF
 * checkpoint-directory reader on generated tiny models (config, shards, tokenizer forms, errors).
 */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "fq_safetensors.h"
#include "tc_st_write.h"

#include <jansson.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct st_state {
    char dir[512];  /* a fresh mkdtemp directory per test */
    char err[1024]; /* the last error message */
} st_state;

static int setup(void **state)
{
    st_state *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/fq_st_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) {
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    st_state *s = *state;
    nftw(s->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(s);
    return 0;
}

static void path_in(const st_state *s, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", s->dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return buf;
}

/* A raw safetensors file: the given header text (unpadded) and data_bytes bytes of 0x5a. */
static void write_raw_st(const char *path, const char *header, size_t data_bytes)
{
    size_t hlen = strlen(header);
    uint8_t *buf = malloc(8 + hlen + data_bytes);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    memset(buf + 8 + hlen, 0x5a, data_bytes);
    write_bytes(path, buf, 8 + hlen + data_bytes);
    free(buf);
}

/* Opens path expecting failure with code; the message must name the path and each needle. */
static void expect_open_error(st_state *s, const char *path, int code, const char *needle1,
                              const char *needle2)
{
    fq_st_file *f = (fq_st_file *)1;
    int rc = fq_st_open(path, &f, s->err, sizeof s->err);
    if (rc != code || !strstr(s->err, path) || (needle1 && !strstr(s->err, needle1)) ||
        (needle2 && !strstr(s->err, needle2)))
        fail_msg("rc %d (want %d), err '%s', want '%s' and '%s'", rc, code, s->err,
                 needle1 ? needle1 : "", needle2 ? needle2 : "");
    assert_null(f);
}

static void expect_header_error(st_state *s, const char *header, size_t data_bytes, int code,
                                const char *needle1, const char *needle2)
{
    char path[600];
    path_in(s, "bad.safetensors", path, sizeof path);
    write_raw_st(path, header, data_bytes);
    expect_open_error(s, path, code, needle1, needle2);
}

/* A small valid file: metadata, F32 / F16 / U8 tensors, a scalar and an empty tensor. */
static void write_small_file(const char *path)
{
    tc_st *w = tc_st_new();
    assert_non_null(w);
    tc_st_meta(w, "format", "pt");
    tc_st_meta(w, "note", "hello");
    const float b[6] = {1.0f, -2.0f, 3.5f, 0.25f, -0.125f, 6.0f};
    const uint16_t a[3] = {0x3c00, 0xc000, 0x3800}; /* 1, -2, 0.5 in F16 */
    const uint8_t u = 7;
    tc_st_tensor(w, "b.weight", "F32", 2, (const int64_t[]){2, 3}, b, sizeof b);
    tc_st_tensor(w, "a.bias", "F16", 1, (const int64_t[]){3}, a, sizeof a);
    tc_st_tensor(w, "scalar", "U8", 0, NULL, &u, 1);
    tc_st_tensor(w, "empty", "F32", 2, (const int64_t[]){0, 4}, NULL, 0);
    assert_int_equal(tc_st_write(w, path), 0);
    tc_st_free(w);
}

/* ---------------------------------------------------------------------------------------------- */
/* safetensors files                                                                              */
/* ---------------------------------------------------------------------------------------------- */

static void test_fq_safetensors_written_file_reads_back(void **state)
{
    st_state *s = *state;
    char path[600];
    path_in(s, "small.safetensors", path, sizeof path);
    write_small_file(path);
    fq_st_file *f = NULL;
    assert_int_equal(fq_st_open(path, &f, s->err, sizeof s->err), 0);
    assert_int_equal(fq_st_count(f), 4);

    const fq_st_tensor *t = fq_st_at(f, 0); /* header order is call order */
    assert_string_equal(t->name, "b.weight");
    assert_string_equal(t->dtype, "F32");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->n_bytes, 24);
    float b[6];
    memcpy(b, t->data, sizeof b);
    assert_true(b[2] == 3.5f && b[5] == 6.0f);

    t = fq_st_find(f, "a.bias");
    assert_ptr_equal(t, fq_st_at(f, 1));
    assert_string_equal(t->dtype, "F16");
    uint16_t h;
    memcpy(&h, (const uint8_t *)t->data + 2, 2);
    assert_true(fq_f16_to_f32(h) == -2.0f);

    t = fq_st_find(f, "scalar");
    assert_int_equal(t->n_dims, 0);
    assert_int_equal(t->n_bytes, 1);
    assert_int_equal(*(const uint8_t *)t->data, 7);
    t = fq_st_find(f, "empty");
    assert_int_equal(t->n_bytes, 0);
    assert_int_equal(t->shape[0], 0);

    assert_null(fq_st_find(f, "missing"));
    assert_string_equal(fq_st_metadata(f, "format"), "pt");
    assert_string_equal(fq_st_metadata(f, "note"), "hello");
    assert_null(fq_st_metadata(f, "absent"));
    fq_st_close(f);
    fq_st_close(NULL);
}

static void test_fq_safetensors_without_metadata_reads_back(void **state)
{
    st_state *s = *state;
    char path[600];
    path_in(s, "plain.safetensors", path, sizeof path);
    write_raw_st(path, "{\"x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    fq_st_file *f = NULL;
    assert_int_equal(fq_st_open(path, &f, s->err, sizeof s->err), 0);
    assert_int_equal(fq_st_count(f), 1);
    assert_null(fq_st_metadata(f, "format"));
    assert_string_equal(fq_st_at(f, 0)->dtype, "BF16");
    fq_st_close(f);
}

static void test_fq_safetensors_every_truncation_fails_naming_the_path(void **state)
{
    st_state *s = *state;
    char full[600], cut[600];
    path_in(s, "full.safetensors", full, sizeof full);
    path_in(s, "cut.safetensors", cut, sizeof cut);
    write_small_file(full);
    size_t n;
    uint8_t *bytes = read_bytes(full, &n);
    for (size_t len = 0; len < n; len++) {
        write_bytes(cut, bytes, len);
        expect_open_error(s, cut, FQ_EFORMAT, NULL, NULL);
    }
    free(bytes);
}

static void test_fq_safetensors_overlapping_offsets_rejected(void **state)
{
    expect_header_error(*state,
                        "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                        12, FQ_EFORMAT, "tensor y", "overlap tensor x");
}

static void test_fq_safetensors_offsets_beyond_data_rejected(void **state)
{
    expect_header_error(*state,
                        "{\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"F32\",\"shape\":"
                        "[4],\"data_offsets\":[0,16]}}",
                        8, FQ_EFORMAT, "tensor model.layers.0.self_attn.q_proj.weight",
                        "data_offsets [0, 16) exceed the data size 8");
}

static void test_fq_safetensors_size_shape_mismatch_rejected(void **state)
{
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                        8, FQ_EFORMAT, "tensor w", "needs 12 bytes");
    expect_header_error(*state,
                        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                        "\"data_offsets\":[0,8]}}",
                        8, FQ_EFORMAT, "tensor w", "overflows");
}

static void test_fq_safetensors_unknown_dtype_rejected(void **state)
{
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                        8, FQ_EFORMAT, "tensor w", "unknown dtype 'F17'");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}",
                        8, FQ_EUNSUP, "tensor w", "dtype F4");
    expect_header_error(*state, "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FQ_EFORMAT,
                        "tensor w", "dtype is missing");
}

static void test_fq_safetensors_bad_shape_or_offsets_rejected(void **state)
{
    expect_header_error(*state, "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}",
                        8, FQ_EFORMAT, "tensor w", "shape[0]");
    expect_header_error(*state,
                        "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}",
                        8, FQ_EUNSUP, "tensor w", "5 dims");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 8,
                        FQ_EFORMAT, "tensor w", "shape");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,2]}}",
                        8, FQ_EFORMAT, "tensor w", "end before");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                        FQ_EFORMAT, "tensor w", "data_offsets");
    expect_header_error(*state, "{\"w\":7}", 8, FQ_EFORMAT, "tensor w", "not a JSON object");
}

static void test_fq_safetensors_header_length_beyond_file_rejected(void **state)
{
    st_state *s = *state;
    char path[600];
    path_in(s, "long.safetensors", path, sizeof path);
    uint8_t buf[18] = {0xe8, 0x03}; /* header length 1000, then 10 bytes */
    memcpy(buf + 8, "{}        ", 10);
    write_bytes(path, buf, sizeof buf);
    expect_open_error(s, path, FQ_EFORMAT, "header length 1000", "exceeds");
    uint8_t huge[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    write_bytes(path, huge, sizeof huge);
    expect_open_error(s, path, FQ_EFORMAT, "header length", "exceeds");
}

static void test_fq_safetensors_non_json_header_rejected(void **state)
{
    expect_header_error(*state, "{not json}", 0, FQ_EFORMAT, "not valid JSON", NULL);
    expect_header_error(*state, "[1, 2]", 0, FQ_EFORMAT, "not a JSON object", NULL);
    expect_header_error(*state, "", 0, FQ_EFORMAT, "not valid JSON", NULL);
    expect_header_error(*state,
                        "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                        2, FQ_EFORMAT, "duplicate", NULL);
}

static void test_fq_safetensors_non_string_metadata_rejected(void **state)
{
    expect_header_error(*state, "{\"__metadata__\":{\"format\":\"pt\",\"step\":7}}", 0, FQ_EFORMAT,
                        "__metadata__", "key step");
    expect_header_error(*state, "{\"__metadata__\":[\"pt\"]}", 0, FQ_EFORMAT, "__metadata__",
                        "not a JSON object");
}

static uint32_t xorshift32(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void test_fq_safetensors_random_corruption_never_crashes(void **state)
{
    st_state *s = *state;
    char full[600], bad[600];
    path_in(s, "full.safetensors", full, sizeof full);
    path_in(s, "bad.safetensors", bad, sizeof bad);
    write_small_file(full);
    size_t n;
    uint8_t *bytes = read_bytes(full, &n);
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    size_t header_end = 8 + (size_t)bytes[0] + ((size_t)bytes[1] << 8);
    uint32_t rng = 0x9e3779b9u;
    int opened = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, bytes, n);
        int flips = 1 + (int)(xorshift32(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            /* mostly the header, where the parser is; sometimes the length field or anywhere */
            uint32_t r = xorshift32(&rng);
            size_t pos = r % 4 == 0 ? r / 4 % 8 : r % 4 == 1 ? r / 4 % n : r / 4 % header_end;
            copy[pos] = (uint8_t)xorshift32(&rng);
        }
        write_bytes(bad, copy, n);
        fq_st_file *f = NULL;
        if (fq_st_open(bad, &f, s->err, sizeof s->err) != 0) {
            assert_null(f);
            assert_non_null(strstr(s->err, bad));
            continue;
        }
        opened++;
        unsigned sum = 0;
        for (int32_t i = 0; i < fq_st_count(f); i++) {
            const fq_st_tensor *t = fq_st_at(f, i);
            assert_ptr_equal(fq_st_find(f, t->name), t);
            for (size_t b = 0; b < t->n_bytes; b++)
                sum += ((const uint8_t *)t->data)[b];
        }
        (void)sum;
        fq_st_close(f);
    }
    assert_true(opened > 0); /* data-only flips keep the file valid */
    free(copy);
    free(bytes);
}

/* ---------------------------------------------------------------------------------------------- */
/* HF directories: a tiny LLaMA (2 layers, 8 wide, 2 heads, 1 kv head, ff 16, vocab 16)           */
/* ---------------------------------------------------------------------------------------------- */

enum { TINY_LAYERS = 2, TINY_EMBD = 8, TINY_FF = 16, TINY_VOCAB = 16, TINY_KV_DIM = 4 };

static const char llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct tiny_tensor {
    char hf[96];
    char canon[96];
    int n_dims;
    int64_t shape[2];
} tiny_tensor;

typedef struct model_opts {
    int n_shards;          /* 1: model.safetensors; more: shards + index */
    bool lm_head;          /* write lm_head.weight */
    bool extra_tensors;    /* rotary_emb.inv_freq and an unknown top-level tensor */
    const char *i8_tensor; /* HF name written as I8 instead of a float type */
    const char *short_q;   /* HF name written with 4 rows instead of its real shape */
    bool layer_beyond;     /* add model.layers.2.input_layernorm.weight */
    int skip_shard;        /* 1-based shard not written (missing file); 0 = none */
} model_opts;

static int tiny_tensors(tiny_tensor *out, bool lm_head)
{
    int n = 0;
    out[n++] = (tiny_tensor){"model.embed_tokens.weight", "token_embd", 2, {TINY_VOCAB, TINY_EMBD}};
    out[n++] = (tiny_tensor){"model.norm.weight", "output_norm", 1, {TINY_EMBD, 0}};
    if (lm_head)
        out[n++] = (tiny_tensor){"lm_head.weight", "output", 2, {TINY_VOCAB, TINY_EMBD}};
    static const struct {
        const char *hf, *canon;
        int n_dims;
        int64_t d0, d1;
    } per_layer[] = {
        {"input_layernorm.weight", "attn_norm", 1, TINY_EMBD, 0},
        {"self_attn.q_proj.weight", "attn_q", 2, TINY_EMBD, TINY_EMBD},
        {"self_attn.k_proj.weight", "attn_k", 2, TINY_KV_DIM, TINY_EMBD},
        {"self_attn.v_proj.weight", "attn_v", 2, TINY_KV_DIM, TINY_EMBD},
        {"self_attn.o_proj.weight", "attn_output", 2, TINY_EMBD, TINY_EMBD},
        {"post_attention_layernorm.weight", "ffn_norm", 1, TINY_EMBD, 0},
        {"mlp.gate_proj.weight", "ffn_gate", 2, TINY_FF, TINY_EMBD},
        {"mlp.up_proj.weight", "ffn_up", 2, TINY_FF, TINY_EMBD},
        {"mlp.down_proj.weight", "ffn_down", 2, TINY_EMBD, TINY_FF},
    };
    for (int l = 0; l < TINY_LAYERS; l++)
        for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++) {
            tiny_tensor *t = &out[n++];
            snprintf(t->hf, sizeof t->hf, "model.layers.%d.%s", l, per_layer[i].hf);
            snprintf(t->canon, sizeof t->canon, "blk.%d.%s", l, per_layer[i].canon);
            t->n_dims = per_layer[i].n_dims;
            t->shape[0] = per_layer[i].d0;
            t->shape[1] = per_layer[i].d1;
        }
    return n;
}

/* Multiples of 1/8 in [-3.75, 3.75]: exact in F16 and BF16. */
static float tiny_value(int t, int64_t k)
{
    return (float)((t * 7 + k * 3) % 61 - 30) * 0.125f;
}

static const char *tiny_dtype(int t)
{
    static const char *const dtypes[] = {"F32", "F16", "BF16"};
    return dtypes[t % 3];
}

static int64_t tiny_numel(const tiny_tensor *t)
{
    return t->n_dims == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

/* Encodes tensor t's values in its dtype (or I8 / fewer rows as opts ask) into w. */
static void tiny_add_tensor(tc_st *w, const tiny_tensor *tt, int t, const model_opts *o)
{
    int64_t shape[2] = {tt->shape[0], tt->shape[1]};
    if (o->short_q && strcmp(o->short_q, tt->hf) == 0)
        shape[0] = 4;
    int64_t n = tt->n_dims == 1 ? shape[0] : shape[0] * shape[1];
    const char *dtype = o->i8_tensor && strcmp(o->i8_tensor, tt->hf) == 0 ? "I8" : tiny_dtype(t);
    uint8_t *buf = calloc((size_t)n, 4);
    assert_non_null(buf);
    size_t nbytes = 0;
    for (int64_t k = 0; k < n; k++) {
        float v = tiny_value(t, k);
        uint32_t bits;
        memcpy(&bits, &v, 4);
        if (strcmp(dtype, "F32") == 0) {
            memcpy(buf + 4 * k, &v, 4);
            nbytes = (size_t)n * 4;
        } else if (strcmp(dtype, "I8") == 0) {
            buf[k] = (uint8_t)(int8_t)(v * 8);
            nbytes = (size_t)n;
        } else {
            uint16_t h = strcmp(dtype, "F16") == 0 ? fq_f32_to_f16(v) : (uint16_t)(bits >> 16);
            memcpy(buf + 2 * k, &h, 2);
            nbytes = (size_t)n * 2;
        }
    }
    tc_st_tensor(w, tt->hf, dtype, tt->n_dims, shape, buf, nbytes);
    free(buf);
}

static void write_json(const st_state *s, const char *name, json_t *j)
{
    char path[600];
    path_in(s, name, path, sizeof path);
    assert_non_null(j);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(1)), 0);
    json_decref(j);
}

static void write_text(const st_state *s, const char *name, const char *text)
{
    char path[600];
    path_in(s, name, path, sizeof path);
    write_bytes(path, text, strlen(text));
}

/* The weights (and index when sharded) of the tiny model. */
static void write_tiny_weights(const st_state *s, const model_opts *o)
{
    tiny_tensor tt[40];
    int n = tiny_tensors(tt, o->lm_head);
    int shards = o->n_shards > 1 ? o->n_shards : 1;
    json_t *wm = json_object();
    for (int sh = 0; sh < shards; sh++) {
        char name[64], path[600];
        if (shards == 1)
            snprintf(name, sizeof name, "model.safetensors");
        else
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", sh + 1, shards);
        tc_st *w = tc_st_new();
        assert_non_null(w);
        tc_st_meta(w, "format", "pt");
        for (int t = sh; t < n; t += shards) {
            tiny_add_tensor(w, &tt[t], t, o);
            json_object_set_new(wm, tt[t].hf, json_string(name));
        }
        if (o->extra_tensors && sh == 0) {
            const float inv[2] = {1.0f, 0.01f};
            tc_st_tensor(w, "model.layers.0.self_attn.rotary_emb.inv_freq", "F32", 1,
                         (const int64_t[]){2}, inv, sizeof inv);
            tc_st_tensor(w, "model.layers.0.self_attn.q_proj.bias", "F64", 1, (const int64_t[]){1},
                         (const double[]){1.0}, sizeof(double));
        }
        if (o->layer_beyond && sh == 0)
            tiny_add_tensor(
                w, &(tiny_tensor){"model.layers.2.input_layernorm.weight", "", 1, {TINY_EMBD, 0}},
                0, o);
        path_in(s, name, path, sizeof path);
        if (sh + 1 != o->skip_shard)
            assert_int_equal(tc_st_write(w, path), 0);
        tc_st_free(w);
    }
    if (shards > 1)
        write_json(s, "model.safetensors.index.json",
                   json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 1234, "weight_map", wm));
    else
        json_decref(wm);
}

static json_t *tiny_config(void)
{
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:i, "
                     "s:[i,i], s:n}",
                     "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
                     TINY_EMBD, "intermediate_size", TINY_FF, "num_hidden_layers", TINY_LAYERS,
                     "num_attention_heads", 2, "num_key_value_heads", 1, "vocab_size", TINY_VOCAB,
                     "max_position_embeddings", 64, "rms_norm_eps", 1e-5, "rope_theta", 10000.0,
                     "tie_word_embeddings", 0, "hidden_act", "silu", "bos_token_id", 9,
                     "eos_token_id", 10, 11, "rope_scaling");
}

typedef enum { PRE_GPT2, PRE_SMOLLM, PRE_LLAMA3 } pre_form;

static json_t *byte_level(bool use_regex)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                     "trim_offsets", 1, "use_regex", use_regex);
}

/* A tokenizer.json with 9 vocab tokens, 3 merges and 3 added tokens (ids 9, 10, 13; 11 and 12 are
 * holes), in one of the three pre-tokenizer forms. */
static json_t *tiny_tokenizer(pre_form form)
{
    json_t *pre = NULL, *post = json_null(), *merges;
    if (form == PRE_GPT2) {
        pre = byte_level(true);
        post = byte_level(true);
        merges = json_pack("[s, s, s]", "a b", "ab c", "\xc4\xa0 a");
    } else {
        merges = json_pack("[[s,s], [s,s], [s,s]]", "a", "b", "ab", "c", "\xc4\xa0", "a");
    }
    if (form == PRE_SMOLLM)
        pre = json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                        "Digits", "individual_digits", 1, byte_level(true));
    if (form == PRE_LLAMA3) {
        pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                        "pretokenizers", "type", "Split", "pattern", "Regex", llama3_regex,
                        "behavior", "Isolated", "invert", 0, byte_level(false));
        json_t *tmpl =
            json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                      "type", "TemplateProcessing", "single", "SpecialToken", "id", "<|begin|>",
                      "type_id", 0, "Sequence", "id", "A", "type_id", 0, "special_tokens",
                      "<|begin|>", "id", "<|begin|>", "ids", 9, "tokens", "<|begin|>");
        post =
            json_pack("{s:s, s:[o, o]}", "type", "Sequence", "processors", byte_level(true), tmpl);
    }
    json_t *vocab = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "a", 0, "b", 1, "c",
                              2, "ab", 3, "abc", 4, "\xc4\xa0", 5,
                              "\xc4\xa0"
                              "a",
                              6, "1", 7, "2", 8);
    json_t *added = json_pack("[{s:i, s:s, s:b}, {s:i, s:s, s:b}, {s:i, s:s, s:b}]", "id", 9,
                              "content", "<|begin|>", "special", 1, "id", 10, "content", "<|end|>",
                              "special", 1, "id", 13, "content", "hello", "special", 0);
    return json_pack("{s:s, s:o, s:n, s:o, s:o, s:o, s:{s:s, s:n, s:b, s:b, s:o, s:o}}", "version",
                     "1.0", "added_tokens", added, "normalizer", "pre_tokenizer", pre,
                     "post_processor", post, "decoder", byte_level(true), "model", "type", "BPE",
                     "dropout", "byte_fallback", 0, "ignore_merges", form == PRE_LLAMA3, "vocab",
                     vocab, "merges", merges);
}

static void write_tiny_model(const st_state *s, const model_opts *o, pre_form form)
{
    write_json(s, "config.json", tiny_config());
    write_json(s, "tokenizer.json", tiny_tokenizer(form));
    write_tiny_weights(s, o);
}

static fq_ckpt *load_ok(st_state *s)
{
    fq_ckpt *ck = NULL;
    int rc = fq_safetensors_load_dir(s->dir, &ck, s->err, sizeof s->err);
    if (rc)
        fail_msg("load failed (%d): %s", rc, s->err);
    return ck;
}

static void load_fails(st_state *s, int code, const char *needle1, const char *needle2)
{
    fq_ckpt *ck = (fq_ckpt *)1;
    int rc = fq_safetensors_load_dir(s->dir, &ck, s->err, sizeof s->err);
    if (rc != code || (needle1 && !strstr(s->err, needle1)) ||
        (needle2 && !strstr(s->err, needle2)))
        fail_msg("rc %d (want %d), err '%s', want '%s' and '%s'", rc, code, s->err,
                 needle1 ? needle1 : "", needle2 ? needle2 : "");
    assert_null(ck);
}

/* Every tensor present with its shape and exactly the values written (F16/BF16 exact). */
static void check_tiny_tensors(const fq_ckpt *ck, bool lm_head)
{
    tiny_tensor tt[40];
    int n = tiny_tensors(tt, lm_head);
    assert_int_equal(ck->n_tensors, n);
    for (int t = 0; t < n; t++) {
        const fq_tensor *x = fq_ckpt_find(ck, tt[t].canon);
        if (!x)
            fail_msg("tensor %s missing", tt[t].canon);
        assert_int_equal(x->n_dims, tt[t].n_dims);
        for (int d = 0; d < tt[t].n_dims; d++)
            assert_int_equal(x->shape[d], tt[t].shape[d]);
        for (int64_t k = 0; k < tiny_numel(&tt[t]); k++)
            if (x->data[k] != tiny_value(t, k))
                fail_msg("%s[%lld] = %g, want %g (%s)", tt[t].canon, (long long)k,
                         (double)x->data[k], (double)tiny_value(t, k), tiny_dtype(t));
    }
}

static void check_tiny_config(const fq_config *c)
{
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->n_layer, TINY_LAYERS);
    assert_int_equal(c->n_embd, TINY_EMBD);
    assert_int_equal(c->n_ff, TINY_FF);
    assert_int_equal(c->n_head, 2);
    assert_int_equal(c->n_head_kv, 1);
    assert_int_equal(c->head_dim, 4);
    assert_int_equal(c->n_vocab, TINY_VOCAB);
    assert_int_equal(c->n_ctx, 64);
    assert_true(c->norm_eps == 1e-5f);
    assert_int_equal(c->rope_style, FQ_ROPE_HALF);
}

/* Token texts, types and merges shared by every tokenizer form. */
static void check_tiny_vocab(const fq_tok_spec *t)
{
    assert_string_equal(t->model, "gpt2");
    assert_int_equal(t->n_tokens, 14);
    assert_string_equal(t->tokens[3], "ab");
    assert_string_equal(t->tokens[6], "\xc4\xa0"
                                      "a");
    assert_int_equal(t->token_types[0], FQ_TOK_NORMAL);
    assert_string_equal(t->tokens[9], "<|begin|>");
    assert_int_equal(t->token_types[9], FQ_TOK_CONTROL);
    assert_int_equal(t->token_types[10], FQ_TOK_CONTROL);
    assert_string_equal(t->tokens[13], "hello");
    assert_int_equal(t->token_types[13], FQ_TOK_USER_DEFINED);
    assert_int_equal(t->token_types[11], FQ_TOK_UNUSED);
    assert_int_equal(t->token_types[12], FQ_TOK_UNUSED);
    assert_int_equal(t->n_merges, 3);
    assert_string_equal(t->merges[0], "a b");
    assert_string_equal(t->merges[1], "ab c");
    assert_string_equal(t->merges[2], "\xc4\xa0 a");
}

static void test_fq_safetensors_hf_sharded_dir_loads(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 2, .lm_head = true}, PRE_GPT2);
    write_json(s, "tokenizer_config.json",
               json_pack("{s:s, s:{s:s, s:b}, s:n, s:s}", "bos_token", "<|begin|>", "eos_token",
                         "content", "<|end|>", "lstrip", 0, "pad_token", "chat_template",
                         "{{ messages }}"));
    fq_ckpt *ck = NULL;
    assert_int_equal(fq_ckpt_load(s->dir, &ck, s->err, sizeof s->err), 0); /* dispatch by path */
    assert_string_equal(ck->format, "safetensors");
    assert_string_equal(ck->path, s->dir);
    check_tiny_config(&ck->cfg);
    assert_false(ck->cfg.tied_embeddings);
    assert_true(ck->cfg.rope_theta == 10000.0f);
    check_tiny_tensors(ck, true);
    const fq_tok_spec *t = &ck->tok;
    check_tiny_vocab(t);
    assert_string_equal(t->pre, "gpt2");
    assert_false(t->ignore_merges);
    assert_false(t->add_bos);
    assert_int_equal(t->bos_id, 9);
    assert_int_equal(t->eos_id, 10);
    assert_int_equal(t->pad_id, -1);
    assert_string_equal(t->chat_template, "{{ messages }}");
    fq_ckpt_destroy(ck);
}

static void test_fq_safetensors_hf_smollm_tokenizer_loads(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 3, .lm_head = true}, PRE_SMOLLM);
    write_json(s, "tokenizer_config.json",
               json_pack("{s:[{s:s, s:s}, {s:s, s:s}]}", "chat_template", "name", "tool_use",
                         "template", "T", "name", "default", "template", "D"));
    fq_ckpt *ck = load_ok(s);
    check_tiny_tensors(ck, true);
    const fq_tok_spec *t = &ck->tok;
    check_tiny_vocab(t); /* merges given as pairs */
    assert_string_equal(t->pre, "smollm");
    assert_false(t->add_bos);
    assert_int_equal(t->bos_id, 9);  /* config.json bos_token_id */
    assert_int_equal(t->eos_id, 10); /* first of config.json's eos_token_id list */
    assert_string_equal(t->chat_template, "D");
    fq_ckpt_destroy(ck);
}

static void test_fq_safetensors_hf_llama3_tokenizer_loads(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 2, .lm_head = true}, PRE_LLAMA3);
    write_text(s, "chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}");
    fq_tok_spec t;
    assert_int_equal(fq_hf_load_tokenizer(s->dir, &t, s->err, sizeof s->err), 0);
    check_tiny_vocab(&t);
    assert_string_equal(t.pre, "llama3");
    assert_true(t.ignore_merges);
    assert_true(t.add_bos);
    assert_false(t.add_eos);
    assert_int_equal(t.bos_id, 9);
    assert_int_equal(t.eos_id, 10);
    assert_string_equal(t.chat_template, "{% for m in messages %}{{ m.content }}{% endfor %}");
    fq_tok_spec_free(&t);
    fq_ckpt *ck = load_ok(s);
    assert_true(ck->tok.add_bos);
    fq_ckpt_destroy(ck);
}

static void test_fq_safetensors_hf_single_file_without_lm_head_ties(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .extra_tensors = true}, PRE_GPT2);
    /* transformers 5 spelling of the RoPE settings, and no head_dim */
    json_t *cfg = tiny_config();
    json_object_del(cfg, "rope_theta");
    json_object_del(cfg, "rope_scaling");
    json_object_set_new(cfg, "rope_parameters",
                        json_pack("{s:s, s:f}", "rope_type", "default", "rope_theta", 500000.0));
    write_json(s, "config.json", cfg);
    fq_ckpt *ck = load_ok(s);
    check_tiny_config(&ck->cfg);
    assert_true(ck->cfg.tied_embeddings);
    assert_true(ck->cfg.rope_theta == 500000.0f);
    check_tiny_tensors(ck, false); /* extra tensors ignored */
    assert_null(fq_ckpt_find(ck, "output"));
    fq_ckpt_destroy(ck);
}

static void test_fq_safetensors_hf_tied_drops_lm_head(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 2, .lm_head = true}, PRE_GPT2);
    json_t *cfg = tiny_config();
    json_object_set_new(cfg, "tie_word_embeddings", json_true());
    write_json(s, "config.json", cfg);
    fq_ckpt *ck = load_ok(s);
    assert_true(ck->cfg.tied_embeddings);
    assert_null(fq_ckpt_find(ck, "output"));
    assert_int_equal(ck->n_tensors, 2 + 9 * TINY_LAYERS);
    fq_ckpt_destroy(ck);
}

static void test_fq_safetensors_hf_missing_shard_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 2, .lm_head = true, .skip_shard = 2}, PRE_GPT2);
    load_fails(s, FQ_ENOTFOUND, "shard model-00002-of-00002.safetensors", "missing");
}

static void test_fq_safetensors_hf_no_weights_fails(void **state)
{
    st_state *s = *state;
    write_json(s, "config.json", tiny_config());
    write_json(s, "tokenizer.json", tiny_tokenizer(PRE_GPT2));
    load_fails(s, FQ_ENOTFOUND, "no model.safetensors", NULL);
}

static void test_fq_safetensors_hf_missing_config_key_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true}, PRE_GPT2);
    json_t *cfg = tiny_config();
    json_object_del(cfg, "hidden_size");
    write_json(s, "config.json", cfg);
    load_fails(s, FQ_ENOTFOUND, "config.json: missing key hidden_size", NULL);
    cfg = tiny_config();
    json_object_set_new(cfg, "num_hidden_layers", json_string("2"));
    write_json(s, "config.json", cfg);
    load_fails(s, FQ_EFORMAT, "num_hidden_layers is not an integer", NULL);
    char path[600];
    path_in(s, "config.json", path, sizeof path);
    remove(path);
    load_fails(s, FQ_ENOTFOUND, "config.json: file not found", NULL);
    write_text(s, "config.json", "{\"hidden_size\": 8,");
    load_fails(s, FQ_EFORMAT, "config.json: invalid JSON", NULL);
}

static void test_fq_safetensors_hf_unsupported_arch_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true}, PRE_GPT2);
    json_t *cfg = tiny_config();
    json_object_set_new(cfg, "architectures", json_pack("[s]", "MistralForCausalLM"));
    json_object_set_new(cfg, "model_type", json_string("mistral"));
    write_json(s, "config.json", cfg);
    load_fails(s, FQ_EUNSUP, "MistralForCausalLM", "not supported");
    cfg = tiny_config();
    json_object_set_new(cfg, "attention_bias", json_true());
    write_json(s, "config.json", cfg);
    load_fails(s, FQ_EUNSUP, "attention_bias", NULL);
}

static void test_fq_safetensors_hf_rope_scaling_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true}, PRE_GPT2);
    json_t *cfg = tiny_config();
    json_object_set_new(cfg, "rope_scaling",
                        json_pack("{s:s, s:f}", "rope_type", "llama3", "factor", 8.0));
    write_json(s, "config.json", cfg);
    load_fails(s, FQ_EUNSUP, "rope_scaling of type llama3", NULL);
    cfg = tiny_config();
    json_object_set_new(cfg, "rope_parameters",
                        json_pack("{s:s, s:f}", "rope_type", "yarn", "rope_theta", 1e6));
    write_json(s, "config.json", cfg);
    load_fails(s, FQ_EUNSUP, "rope_parameters of type yarn", NULL);
}

static void test_fq_safetensors_hf_unsupported_dtype_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s,
                     &(model_opts){.n_shards = 2,
                                   .lm_head = true,
                                   .i8_tensor = "model.layers.1.mlp.up_proj.weight"},
                     PRE_GPT2);
    load_fails(s, FQ_EUNSUP, "tensor model.layers.1.mlp.up_proj.weight", "dtype I8");
}

static void test_fq_safetensors_hf_bad_tensor_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s,
                     &(model_opts){.n_shards = 1,
                                   .lm_head = true,
                                   .short_q = "model.layers.0.self_attn.q_proj.weight"},
                     PRE_GPT2);
    load_fails(s, FQ_EFORMAT, "tensor blk.0.attn_q has shape [4, ...]", NULL);
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true, .layer_beyond = true},
                     PRE_GPT2);
    load_fails(s, FQ_EFORMAT, "model.layers.2.input_layernorm.weight", "layer 2 is beyond");
}

static void test_fq_safetensors_hf_unsupported_tokenizer_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true}, PRE_GPT2);
    json_t *tj = tiny_tokenizer(PRE_GPT2);
    json_object_set_new(tj, "pre_tokenizer",
                        json_pack("{s:s, s:s, s:s}", "type", "Metaspace", "replacement", "_",
                                  "prepend_scheme", "first"));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EUNSUP, "tokenizer.json: pre_tokenizer Metaspace is not supported", NULL);

    tj = tiny_tokenizer(PRE_LLAMA3);
    json_t *split =
        json_array_get(json_object_get(json_object_get(tj, "pre_tokenizer"), "pretokenizers"), 0);
    json_object_set_new(json_object_get(split, "pattern"), "Regex", json_string("\\p{N}"));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EUNSUP, "pre_tokenizer Sequence[Split, ByteLevel]", NULL);

    tj = tiny_tokenizer(PRE_GPT2);
    json_object_set_new(tj, "normalizer", json_pack("{s:s}", "type", "NFC"));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EUNSUP, "normalizer NFC", NULL);

    tj = tiny_tokenizer(PRE_GPT2);
    json_object_set_new(json_object_get(tj, "model"), "type", json_string("WordPiece"));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EUNSUP, "tokenizer model WordPiece", NULL);
}

static void test_fq_safetensors_hf_corrupt_tokenizer_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true}, PRE_GPT2);
    json_t *tj = tiny_tokenizer(PRE_GPT2);
    json_array_append_new(json_object_get(json_object_get(tj, "model"), "merges"),
                          json_string("a zz"));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EFORMAT, "merge 3", "'zz' is not in the vocabulary");

    tj = tiny_tokenizer(PRE_GPT2);
    json_object_set_new(json_object_get(json_object_get(tj, "model"), "vocab"), "zz",
                        json_integer(3));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EFORMAT, "both have id 3", NULL);

    tj = tiny_tokenizer(PRE_GPT2);
    json_object_set_new(json_object_get(json_object_get(tj, "model"), "vocab"), "zz",
                        json_integer(-4));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EFORMAT, "token 'zz' has no id", NULL);

    write_text(s, "tokenizer.json", "{\"model\": ");
    load_fails(s, FQ_EFORMAT, "tokenizer.json: invalid JSON", NULL);
    char path[600];
    path_in(s, "tokenizer.json", path, sizeof path);
    remove(path);
    load_fails(s, FQ_ENOTFOUND, "tokenizer.json: file not found", NULL);
}

static void test_fq_safetensors_hf_tokenizer_over_model_vocab_fails(void **state)
{
    st_state *s = *state;
    write_tiny_model(s, &(model_opts){.n_shards = 1, .lm_head = true}, PRE_GPT2);
    json_t *tj = tiny_tokenizer(PRE_GPT2);
    json_array_append_new(json_object_get(tj, "added_tokens"),
                          json_pack("{s:i, s:s, s:b}", "id", 40, "content", "<x>", "special", 1));
    write_json(s, "tokenizer.json", tj);
    load_fails(s, FQ_EFORMAT, "tokenizer has 41 tokens but the model only 16", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fq_safetensors_written_file_reads_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_without_metadata_reads_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_every_truncation_fails_naming_the_path,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_overlapping_offsets_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_offsets_beyond_data_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_size_shape_mismatch_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_unknown_dtype_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_bad_shape_or_offsets_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_header_length_beyond_file_rejected,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_non_json_header_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_non_string_metadata_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_random_corruption_never_crashes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_sharded_dir_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_smollm_tokenizer_loads, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_llama3_tokenizer_loads, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_single_file_without_lm_head_ties,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_tied_drops_lm_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_missing_shard_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_no_weights_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_missing_config_key_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_unsupported_arch_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_rope_scaling_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_unsupported_dtype_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_bad_tensor_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_unsupported_tokenizer_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_corrupt_tokenizer_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_safetensors_hf_tokenizer_over_model_vocab_fails,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("fq_safetensors", tests, NULL, NULL);
}

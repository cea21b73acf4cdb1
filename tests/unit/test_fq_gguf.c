/* test_fq_gguf.c — the GGUF reader on tiny generated models: a good file loads exactly; truncated,
 * corrupt and unsupported files fail with one message naming the file and the key or tensor. */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "fq_ggml.h"
#include "fq_gguf.h"
#include "tc_gguf_write.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The tiny model: 2 layers, 16 wide, 2 heads of 8, 1 kv head, ffn 32, 8 tokens. */
enum { N_LAYER = 2, N_EMBD = 16, N_HEAD = 2, N_HEAD_KV = 1, HEAD_DIM = 8, N_FF = 32, N_VOCAB = 8 };

static const char *const tiny_tokens[N_VOCAB] = {"<|endoftext|>",
                                                 "a",
                                                 "b",
                                                 "c",
                                                 "\xc4\xa0",
                                                 "ab",
                                                 "abc",
                                                 "\xc4\xa0"
                                                 "a"};
static const int32_t tiny_types[N_VOCAB] = {3, 1, 1, 1, 1, 1, 1, 1};
static const char *const tiny_merges[] = {"a b", "ab c", "\xc4\xa0 a"};

/* Variations of the tiny model, for the failure tests; zero means "as normal". */
typedef struct {
    const char *arch;     /* general.architecture; NULL = "llama" */
    const char *skip_key; /* a key left out */
    int attn_q_type;      /* ggml type written for blk.1.attn_q (0 = F16) */
    int ffn_down_dims;    /* n_dims written for blk.1.ffn_down (0 = 2) */
    bool untied;          /* also write output.weight */
} tiny_opts;

typedef struct {
    char dir[64];
    char path[128];
} gguf_state;

/* The value stored at index i of the t-th tensor: exact in fp16. */
static float tiny_value(int t, int64_t i)
{
    return (float)((i * 7 + t * 13) % 64 - 32) / 16.0f;
}

static void kv_u32(tc_gguf *g, const tiny_opts *o, const char *key, uint32_t v)
{
    if (!o->skip_key || strcmp(o->skip_key, key) != 0)
        tc_gguf_kv_u32(g, key, v);
}

static void write_metadata(tc_gguf *g, const tiny_opts *o)
{
    tc_gguf_kv_str(g, "general.architecture", o->arch ? o->arch : "llama");
    tc_gguf_kv_str(g, "general.name", "tiny");
    kv_u32(g, o, "llama.block_count", N_LAYER);
    kv_u32(g, o, "llama.context_length", 64);
    kv_u32(g, o, "llama.embedding_length", N_EMBD);
    kv_u32(g, o, "llama.feed_forward_length", N_FF);
    kv_u32(g, o, "llama.attention.head_count", N_HEAD);
    kv_u32(g, o, "llama.attention.head_count_kv", N_HEAD_KV);
    kv_u32(g, o, "llama.rope.dimension_count", HEAD_DIM);
    tc_gguf_kv_f32(g, "llama.rope.freq_base", 50000.0f);
    tc_gguf_kv_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tc_gguf_kv_str(g, "tokenizer.ggml.model", "gpt2");
    tc_gguf_kv_str(g, "tokenizer.ggml.pre", "smollm");
    tc_gguf_kv_arr_str(g, "tokenizer.ggml.tokens", tiny_tokens, N_VOCAB);
    tc_gguf_kv_arr_i32(g, "tokenizer.ggml.token_type", tiny_types, N_VOCAB);
    tc_gguf_kv_arr_str(g, "tokenizer.ggml.merges", tiny_merges, 3);
    kv_u32(g, o, "tokenizer.ggml.bos_token_id", 0);
    kv_u32(g, o, "tokenizer.ggml.eos_token_id", 0);
    tc_gguf_kv_bool(g, "tokenizer.ggml.add_bos_token", true);
    tc_gguf_kv_str(g, "tokenizer.chat_template", "{{ messages }}");
}

/* Writes tensor number t with GGUF dims ne0 (inner) x ne1 (0 = 1-D) as F32 or F16. */
static void add_tensor(tc_gguf *g, int t, const char *name, int type, int n_dims, int64_t ne0,
                       int64_t ne1)
{
    int64_t ne[5] = {ne0, ne1, 1, 1, 1};
    int64_t n = ne0 * (ne1 ? ne1 : 1);
    size_t esize = type == FQ_GGML_F32 ? 4 : 2;
    uint8_t *buf = malloc((size_t)n * esize);
    for (int64_t i = 0; i < n; i++) {
        float v = tiny_value(t, i);
        if (type == FQ_GGML_F32) {
            memcpy(buf + 4 * i, &v, 4);
        } else {
            uint16_t h = fq_f32_to_f16(v);
            memcpy(buf + 2 * i, &h, 2);
        }
    }
    tc_gguf_tensor(g, name, type, n_dims, ne, buf, (size_t)n * esize);
    free(buf);
}

static void write_tensors(tc_gguf *g, const tiny_opts *o)
{
    int t = 0;
    add_tensor(g, t++, "token_embd.weight", FQ_GGML_F32, 2, N_EMBD, N_VOCAB);
    add_tensor(g, t++, "output_norm.weight", FQ_GGML_F32, 1, N_EMBD, 0);
    if (o->untied)
        add_tensor(g, t, "output.weight", FQ_GGML_F16, 2, N_EMBD, N_VOCAB);
    t++;
    for (int l = 0; l < N_LAYER; l++) {
        char name[64];
        struct {
            const char *suffix;
            int type, n_dims;
            int64_t ne0, ne1;
        } w[] = {
            {"attn_norm", FQ_GGML_F32, 1, N_EMBD, 0},
            {"attn_q", FQ_GGML_F16, 2, N_EMBD, N_HEAD * HEAD_DIM},
            {"attn_k", FQ_GGML_F16, 2, N_EMBD, N_HEAD_KV * HEAD_DIM},
            {"attn_v", FQ_GGML_F16, 2, N_EMBD, N_HEAD_KV * HEAD_DIM},
            {"attn_output", FQ_GGML_F16, 2, N_HEAD * HEAD_DIM, N_EMBD},
            {"ffn_norm", FQ_GGML_F32, 1, N_EMBD, 0},
            {"ffn_gate", FQ_GGML_F16, 2, N_EMBD, N_FF},
            {"ffn_up", FQ_GGML_F16, 2, N_EMBD, N_FF},
            {"ffn_down", FQ_GGML_F16, 2, N_FF, N_EMBD},
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++, t++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, w[i].suffix);
            int type = w[i].type, n_dims = w[i].n_dims;
            if (l == 1 && !strcmp(w[i].suffix, "attn_q") && o->attn_q_type)
                type = o->attn_q_type;
            if (l == 1 && !strcmp(w[i].suffix, "ffn_down") && o->ffn_down_dims)
                n_dims = o->ffn_down_dims;
            add_tensor(g, t, name, type, n_dims, w[i].ne0, w[i].ne1);
        }
    }
}

static void write_tiny(const char *path, const tiny_opts *o)
{
    tc_gguf *g = tc_gguf_new();
    assert_non_null(g);
    write_metadata(g, o);
    write_tensors(g, o);
    assert_int_equal(tc_gguf_write(g, path), 0);
    tc_gguf_free(g);
}

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(*size ? *size : 1);
    assert_int_equal(fread(b, 1, *size, fp), *size);
    fclose(fp);
    return b;
}

static void write_all(const char *path, const uint8_t *b, size_t size)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, size, fp), size);
    assert_int_equal(fclose(fp), 0);
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Offset just past the first occurrence of s in the file bytes. */
static size_t find_after(const uint8_t *b, size_t size, const char *s)
{
    const uint8_t *p = memmem(b, size, s, strlen(s));
    assert_non_null(p);
    return (size_t)(p - b) + strlen(s);
}

/* Loads path expecting failure with code; the message must name the path and contain `names`. */
static void expect_fail(const char *path, int code, const char *names)
{
    static fq_ckpt sentinel; /* must be replaced by NULL */
    fq_ckpt *ck = &sentinel;
    char err[512] = "";
    int rc = fq_gguf_load(path, &ck, err, sizeof err);
    if (rc != code || !strstr(err, path) || (names && !strstr(err, names)))
        fprintf(stderr, "rc %d (want %d), message: %s\n", rc, code, err);
    assert_int_equal(rc, code);
    assert_null(ck);
    assert_non_null(strstr(err, path));
    if (names)
        assert_non_null(strstr(err, names));
    assert_null(strchr(err, '\n'));
}

static int setup(void **state)
{
    gguf_state *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/test_fq_gguf.XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->path, sizeof s->path, "%s/tiny.gguf", s->dir);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    gguf_state *s = *state;
    unlink(s->path);
    rmdir(s->dir);
    free(s);
    return 0;
}

static void check_tiny_tokenizer(const fq_tok_spec *tok)
{
    assert_string_equal(tok->model, "gpt2");
    assert_string_equal(tok->pre, "smollm");
    assert_false(tok->ignore_merges);
    assert_int_equal(tok->n_tokens, N_VOCAB);
    for (int i = 0; i < N_VOCAB; i++) {
        assert_string_equal(tok->tokens[i], tiny_tokens[i]);
        assert_int_equal(tok->token_types[i], tiny_types[i]);
    }
    assert_int_equal(tok->n_merges, 3);
    assert_string_equal(tok->merges[2], tiny_merges[2]);
    assert_int_equal(tok->bos_id, 0);
    assert_int_equal(tok->eos_id, 0);
    assert_int_equal(tok->pad_id, -1);
    assert_true(tok->add_bos);
    assert_false(tok->add_eos);
    assert_string_equal(tok->chat_template, "{{ messages }}");
}

static void check_tensor_values(const fq_tensor *t, int index)
{
    int64_t n = fq_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        if (t->data[i] != tiny_value(index, i))
            fail_msg("%s[%lld] = %g, want %g", t->name, (long long)i, (double)t->data[i],
                     (double)tiny_value(index, i));
}

static void test_fq_gguf_loads_tiny_model(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    fq_ckpt *ck = NULL;
    char err[512] = "";
    int rc = fq_gguf_load(s->path, &ck, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    const fq_config *c = &ck->cfg;
    assert_string_equal(ck->format, "gguf");
    assert_string_equal(ck->path, s->path);
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->n_layer, N_LAYER);
    assert_int_equal(c->n_embd, N_EMBD);
    assert_int_equal(c->n_ff, N_FF);
    assert_int_equal(c->n_head, N_HEAD);
    assert_int_equal(c->n_head_kv, N_HEAD_KV);
    assert_int_equal(c->head_dim, HEAD_DIM);
    assert_int_equal(c->n_vocab, N_VOCAB);
    assert_int_equal(c->n_ctx, 64);
    assert_true(c->rope_theta == 50000.0f);
    assert_true(c->norm_eps == 1e-5f);
    assert_true(c->tied_embeddings);
    assert_int_equal(c->rope_style, FQ_ROPE_INTERLEAVED);
    assert_int_equal(ck->n_tensors, 2 + 9 * N_LAYER);
    check_tiny_tokenizer(&ck->tok);

    const fq_tensor *te = fq_ckpt_find(ck, "token_embd");
    assert_non_null(te);
    assert_int_equal(te->n_dims, 2);
    assert_int_equal(te->shape[0], N_VOCAB);
    assert_int_equal(te->shape[1], N_EMBD);
    check_tensor_values(te, 0);
    const fq_tensor *down = fq_ckpt_find(ck, "blk.1.ffn_down");
    assert_non_null(down);
    assert_int_equal(down->shape[0], N_EMBD);
    assert_int_equal(down->shape[1], N_FF);
    check_tensor_values(down, 3 + 9 + 8);
    check_tensor_values(fq_ckpt_find(ck, "blk.0.attn_norm"), 3);
    check_tensor_values(fq_ckpt_find(ck, "blk.0.attn_q"), 4);
    assert_null(fq_ckpt_find(ck, "output"));
    fq_ckpt_destroy(ck);
}

static void test_fq_gguf_untied_output(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){.untied = true});
    fq_ckpt *ck = NULL;
    char err[512] = "";
    if (fq_gguf_load(s->path, &ck, err, sizeof err))
        fail_msg("%s", err);
    assert_false(ck->cfg.tied_embeddings);
    const fq_tensor *out = fq_ckpt_find(ck, "output");
    assert_non_null(out);
    assert_int_equal(out->shape[0], N_VOCAB);
    check_tensor_values(out, 2);
    fq_ckpt_destroy(ck);
}

/* Tokenizer-only loading reads the metadata alone: it works with the tensor data cut off. */
static void test_fq_gguf_tokenizer_reads_only_metadata(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    uint8_t *b = read_all(s->path, &size);
    size_t meta_end = find_after(b, size, "blk.1.ffn_down.weight") + 4 + 16 + 4 + 8;
    assert_int_equal(truncate(s->path, (off_t)meta_end), 0);
    free(b);
    fq_tok_spec tok;
    char err[512] = "";
    int rc = fq_gguf_load_tokenizer(s->path, &tok, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    check_tiny_tokenizer(&tok);
    fq_tok_spec_free(&tok);
    expect_fail(s->path, FQ_EFORMAT, "tensor ");
}

/* Every strict prefix of the file is refused cleanly (the writer does not pad after the last
 * tensor, so no prefix is a valid file). */
static void test_fq_gguf_every_truncation_fails(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    free(read_all(s->path, &size));
    for (size_t len = size; len-- > 0;) {
        assert_int_equal(truncate(s->path, (off_t)len), 0);
        fq_ckpt *ck = NULL;
        char err[512] = "";
        int rc = fq_gguf_load(s->path, &ck, err, sizeof err);
        if (rc >= 0 || !strstr(err, s->path))
            fail_msg("prefix of %zu bytes: rc %d, message '%s'", len, rc, err);
        assert_null(ck);
    }
}

static void test_fq_gguf_bad_magic(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    uint8_t *b = read_all(s->path, &size);
    memcpy(b, "GGML", 4);
    write_all(s->path, b, size);
    free(b);
    expect_fail(s->path, FQ_EFORMAT, "magic");
}

static void test_fq_gguf_version_1_unsupported(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    uint8_t *b = read_all(s->path, &size);
    put_le(b + 4, 1, 4);
    write_all(s->path, b, size);
    free(b);
    expect_fail(s->path, FQ_EUNSUP, "version 1");
}

static void test_fq_gguf_unknown_tensor_type(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){.attn_q_type = 99});
    expect_fail(s->path, FQ_EUNSUP, "tensor blk.1.attn_q.weight: type 99");
    write_tiny(s->path, &(tiny_opts){.attn_q_type = FQ_GGML_Q2_K});
    expect_fail(s->path, FQ_EUNSUP, "blk.1.attn_q.weight: type 10 (Q2_K)");
}

static void test_fq_gguf_offset_beyond_file(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    uint8_t *b = read_all(s->path, &size);
    size_t at = find_after(b, size, "blk.1.ffn_down.weight") + 4 + 2 * 8 + 4;
    put_le(b + at, (uint64_t)1 << 40, 8);
    write_all(s->path, b, size);
    expect_fail(s->path, FQ_EFORMAT, "tensor blk.1.ffn_down.weight: data");
    put_le(b + at, UINT64_MAX - 31, 8); /* aligned, and offset + size wraps around */
    write_all(s->path, b, size);
    expect_fail(s->path, FQ_EFORMAT, "tensor blk.1.ffn_down.weight: data");
    free(b);
}

static void test_fq_gguf_five_dims(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){.ffn_down_dims = 5});
    expect_fail(s->path, FQ_EFORMAT, "tensor blk.1.ffn_down.weight: has 5 dimensions");
}

static void test_fq_gguf_absurd_lengths(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    uint8_t *b = read_all(s->path, &size);
    uint8_t *orig = malloc(size);
    memcpy(orig, b, size);
    /* the string value of general.architecture: after the key come the type and the length */
    size_t at = find_after(b, size, "general.architecture") + 4;
    put_le(b + at, UINT64_MAX, 8);
    write_all(s->path, b, size);
    expect_fail(s->path, FQ_EFORMAT, "key general.architecture: string length");
    /* the count of the tokens array: after the key come the type, element type and count */
    memcpy(b, orig, size);
    at = find_after(b, size, "tokenizer.ggml.tokens") + 4 + 4;
    put_le(b + at, (uint64_t)1 << 60, 8);
    write_all(s->path, b, size);
    expect_fail(s->path, FQ_EFORMAT, "key tokenizer.ggml.tokens: array of");
    /* the metadata count in the header */
    memcpy(b, orig, size);
    put_le(b + 16, UINT64_MAX, 8);
    write_all(s->path, b, size);
    expect_fail(s->path, FQ_EFORMAT, "header: ");
    free(orig);
    free(b);
}

static void test_fq_gguf_missing_required_key(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){.skip_key = "llama.block_count"});
    expect_fail(s->path, FQ_ENOTFOUND, "key llama.block_count: required key is missing");
    write_tiny(s->path, &(tiny_opts){.skip_key = "llama.embedding_length"});
    expect_fail(s->path, FQ_ENOTFOUND, "key llama.embedding_length");
}

static void test_fq_gguf_non_llama_arch(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){.arch = "gpt2"});
    expect_fail(s->path, FQ_EUNSUP, "key general.architecture: architecture 'gpt2'");
}

/* Optional keys absent: head_count_kv defaults to head_count (here the file then disagrees with
 * its attn_k shape, which validation reports naming the tensor) and special ids to -1. */
static void test_fq_gguf_defaults_and_validation(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){.skip_key = "tokenizer.ggml.bos_token_id"});
    fq_tok_spec tok;
    char err[512] = "";
    assert_int_equal(fq_gguf_load_tokenizer(s->path, &tok, err, sizeof err), 0);
    assert_int_equal(tok.bos_id, -1);
    fq_tok_spec_free(&tok);
    write_tiny(s->path, &(tiny_opts){.skip_key = "llama.attention.head_count_kv"});
    expect_fail(s->path, FQ_EFORMAT, "blk.0.attn_k");
}

/* Appends a GGUF string to buf at *len. */
static void blob_str(uint8_t *buf, size_t *len, const char *str)
{
    put_le(buf + *len, strlen(str), 8);
    memcpy(buf + *len + 8, str, strlen(str));
    *len += 8 + strlen(str);
}

static void blob_kv(uint8_t *buf, size_t *len, const char *key, uint32_t type, uint64_t v,
                    size_t vbytes)
{
    blob_str(buf, len, key);
    put_le(buf + *len, type, 4);
    put_le(buf + *len + 4, v, vbytes);
    *len += 4 + vbytes;
}

/* Metadata of every value type (the tc_gguf writer only makes a few): the keys are spliced in
 * after the header, padded to a multiple of the alignment so that tensor offsets stay valid. */
static size_t every_type_blob(uint8_t *blob)
{
    size_t n = 0;
    double theta = 75000.0;
    uint64_t theta_bits;
    memcpy(&theta_bits, &theta, 8);
    blob_kv(blob, &n, "x.u8", 0, 200, 1);
    blob_kv(blob, &n, "x.i8", 1, 0xF0, 1);
    blob_kv(blob, &n, "x.u16", 2, 60000, 2);
    blob_kv(blob, &n, "x.i16", 3, 0x8000, 2);
    blob_kv(blob, &n, "x.i32", 5, 0xFFFFFFFF, 4);
    blob_kv(blob, &n, "x.i64", 11, UINT64_MAX, 8);
    blob_kv(blob, &n, "llama.rope.freq_base", 12, theta_bits, 8); /* float64 */
    blob_kv(blob, &n, "llama.context_length", 10, 64, 8);         /* uint64 */
    /* x.nested: array of 2 arrays: [u16 1, 2, 3] and [string "p", "q"] */
    blob_str(blob, &n, "x.nested");
    put_le(blob + n, 9, 4);
    put_le(blob + n + 4, 9, 4);
    put_le(blob + n + 8, 2, 8);
    n += 16;
    put_le(blob + n, 2, 4);
    put_le(blob + n + 4, 3, 8);
    put_le(blob + n + 12, 0x000300020001ull, 6);
    n += 18;
    put_le(blob + n, 8, 4);
    put_le(blob + n + 4, 2, 8);
    n += 12;
    blob_str(blob, &n, "p");
    blob_str(blob, &n, "q");
    /* x.pad: a string whose length rounds the blob up to a multiple of 32 */
    size_t head = 8 + 5 + 4 + 8;
    size_t pad = (32 - (n + head) % 32) % 32;
    char padstr[40] = {0};
    memset(padstr, 'z', pad);
    blob_kv(blob, &n, "x.pad", 8, pad, 8);
    memcpy(blob + n, padstr, pad);
    n += pad;
    return n;
}

static void test_fq_gguf_every_value_type(void **state)
{
    gguf_state *s = *state;
    /* leave out the keys the blob supplies with other types */
    tc_gguf *g = tc_gguf_new();
    tiny_opts o = {.skip_key = "llama.context_length"};
    write_metadata(g, &o);
    write_tensors(g, &o);
    assert_int_equal(tc_gguf_write(g, s->path), 0);
    tc_gguf_free(g);
    size_t size;
    uint8_t *b = read_all(s->path, &size);
    /* the writer put freq_base as float32: rename that key so the float64 one is the only one */
    size_t at = find_after(b, size, "llama.rope.freq_base") - 4;
    memcpy(b + at, "BASE", 4);
    uint8_t blob[512];
    size_t n = every_type_blob(blob);
    assert_int_equal(n % 32, 0);
    uint8_t *out = malloc(size + n);
    memcpy(out, b, 24);
    memcpy(out + 24, blob, n);
    memcpy(out + 24 + n, b + 24, size - 24);
    uint64_t n_kv = 0;
    for (int i = 0; i < 8; i++)
        n_kv |= (uint64_t)out[16 + i] << (8 * i);
    put_le(out + 16, n_kv + 10, 8);
    write_all(s->path, out, size + n);
    free(out);
    free(b);
    fq_ckpt *ck = NULL;
    char err[512] = "";
    if (fq_gguf_load(s->path, &ck, err, sizeof err))
        fail_msg("%s", err);
    assert_true(ck->cfg.rope_theta == 75000.0f);
    assert_int_equal(ck->cfg.n_ctx, 64);
    fq_ckpt_destroy(ck);
}

static void test_fq_gguf_duplicate_key(void **state)
{
    gguf_state *s = *state;
    tc_gguf *g = tc_gguf_new();
    tiny_opts o = {0};
    write_metadata(g, &o);
    tc_gguf_kv_u32(g, "llama.block_count", 3);
    write_tensors(g, &o);
    assert_int_equal(tc_gguf_write(g, s->path), 0);
    tc_gguf_free(g);
    expect_fail(s->path, FQ_EFORMAT, "key llama.block_count: appears more than once");
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Single-byte corruptions anywhere (mostly in the metadata and tensor infos, where they matter)
 * load or fail cleanly; run under ASan/UBSan this is the memory-safety check. */
static void test_fq_gguf_random_corruptions_never_crash(void **state)
{
    gguf_state *s = *state;
    write_tiny(s->path, &(tiny_opts){0});
    size_t size;
    uint8_t *orig = read_all(s->path, &size);
    size_t meta_end = find_after(orig, size, "blk.1.ffn_down.weight") + 32;
    uint8_t *b = malloc(size);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int n_ok = 0;
    for (int iter = 0; iter < 600; iter++) {
        memcpy(b, orig, size);
        size_t at = (size_t)(xorshift(&rng) % (iter % 4 ? meta_end : size));
        b[at] = (uint8_t)(xorshift(&rng) % 256);
        write_all(s->path, b, size);
        fq_ckpt *ck = NULL;
        char err[512] = "";
        int rc = fq_gguf_load(s->path, &ck, err, sizeof err);
        if (rc == 0) {
            n_ok++;
            fq_ckpt_destroy(ck);
        } else if (!strstr(err, s->path) || ck) {
            fail_msg("byte %zu: rc %d, message '%s'", at, rc, err);
        }
        fq_tok_spec tok;
        if (fq_gguf_load_tokenizer(s->path, &tok, err, sizeof err) == 0)
            fq_tok_spec_free(&tok);
    }
    free(b);
    free(orig);
    assert_true(n_ok > 0); /* corruptions in tensor data still load */
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fq_gguf_loads_tiny_model),
        T(test_fq_gguf_untied_output),
        T(test_fq_gguf_tokenizer_reads_only_metadata),
        T(test_fq_gguf_every_truncation_fails),
        T(test_fq_gguf_bad_magic),
        T(test_fq_gguf_version_1_unsupported),
        T(test_fq_gguf_unknown_tensor_type),
        T(test_fq_gguf_offset_beyond_file),
        T(test_fq_gguf_five_dims),
        T(test_fq_gguf_absurd_lengths),
        T(test_fq_gguf_missing_required_key),
        T(test_fq_gguf_non_llama_arch),
        T(test_fq_gguf_defaults_and_validation),
        T(test_fq_gguf_every_value_type),
        T(test_fq_gguf_duplicate_key),
        T(test_fq_gguf_random_corruptions_never_crash),
    };
#undef T
    return cmocka_run_group_tests_name("fq_gguf", tests, NULL, NULL);
}

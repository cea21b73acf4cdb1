/* tc_tiny_model.c — writes the tiny random test model (GGUF + HF directory) with a real BPE vocab.
 */
#include "tc_tiny_model.h"

#include "fq_base.h"
#include "tc_gguf_write.h"
#include "tc_st_write.h"

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define N_BYTES  256
#define GGML_F32 0

static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
#define N_SPECIAL 3
/* merges in rank order, in byte-level form ("Ġ" is the space) */
static const char *const merge_pairs[][2] = {
    {"Ġ", "t"}, {"h", "e"},  {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}, {"e", "r"},  {"o", "n"},
    {"r", "e"}, {"Ġ", "s"},  {"a", "n"},   {"Ġ", "w"}, {"o", "u"}, {"in", "g"}, {"Ġ", "o"},
    {"e", "d"}, {"Ġ", "c"},  {"Ġ", "f"},   {"i", "s"}, {"e", "n"}, {"Ġ", "b"},  {"a", "t"},
    {"o", "r"}, {"Ġ", "in"}, {"Ġ", "m"},   {"Ġ", "p"}, {"l", "l"}, {"Ġa", "n"}, {"Ġan", "d"},
};
#define N_MERGES ((int32_t)(sizeof merge_pairs / sizeof merge_pairs[0]))

tc_tiny_params tc_tiny_default_params(void)
{
    return (tc_tiny_params){.n_layer = 2,
                            .n_embd = 64,
                            .n_ff = 96,
                            .n_head = 4,
                            .n_head_kv = 2,
                            .rope_theta = 10000.0f,
                            .tied = true,
                            .seed = 1};
}

int32_t tc_tiny_n_vocab(void)
{
    return N_SPECIAL + N_BYTES + N_MERGES;
}

/* GPT-2's byte -> unicode code point map: printable Latin-1 bytes map to themselves, the rest to
 * 256, 257, ... in byte order. */
static uint32_t byte_cp(int b)
{
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (printable)
        return (uint32_t)b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255)))
            n++;
    return 256u + (uint32_t)n;
}

static void put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* Token texts: specials, then the 256 bytes, then one token per merge (left + right). */
static char **make_vocab(void)
{
    int32_t n = tc_tiny_n_vocab();
    char **v = calloc((size_t)n, sizeof *v);
    if (!v)
        return NULL;
    for (int32_t i = 0; i < N_SPECIAL; i++)
        v[i] = strdup(specials[i]);
    for (int b = 0; b < N_BYTES; b++) {
        v[N_SPECIAL + b] = malloc(4);
        if (v[N_SPECIAL + b])
            put_utf8(v[N_SPECIAL + b], byte_cp(b));
    }
    for (int32_t i = 0; i < N_MERGES; i++) {
        size_t len = strlen(merge_pairs[i][0]) + strlen(merge_pairs[i][1]) + 1;
        char *t = malloc(len);
        if (t)
            snprintf(t, len, "%s%s", merge_pairs[i][0], merge_pairs[i][1]);
        v[N_SPECIAL + N_BYTES + i] = t;
    }
    return v;
}

static void free_vocab(char **v)
{
    for (int32_t i = 0; v && i < tc_tiny_n_vocab(); i++)
        free(v[i]);
    free(v);
}

/* ---- weights ---- */

typedef struct tiny_w {
    char name[64]; /* canonical name */
    char hf[96];   /* HF name */
    int n_dims;
    int64_t shape[2]; /* row-major */
    float *data;
} tiny_w;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float rng_uniform(uint64_t *s, float scale)
{
    return scale * ((float)(rng_next(s) >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
}

static int add_w(tiny_w *w, int *n, const char *name, const char *hf, int64_t d0, int64_t d1,
                 float scale, float offset, uint64_t *rng)
{
    tiny_w *t = &w[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->hf, sizeof t->hf, "%s", hf);
    t->n_dims = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    int64_t numel = d0 * (d1 ? d1 : 1);
    t->data = malloc((size_t)numel * sizeof(float));
    if (!t->data)
        return -1;
    /* values exactly representable in fp16, so an INT6 model file (fp16 embeddings and norms)
     * holds the very same numbers as the checkpoint */
    for (int64_t i = 0; i < numel; i++)
        t->data[i] = fq_f16_to_f32(fq_f32_to_f16(offset + rng_uniform(rng, scale)));
    return 0;
}

static int make_weights(const tc_tiny_params *p, tiny_w *w, int *n)
{
    uint64_t rng = p->seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t e = p->n_embd, hd = p->n_embd / p->n_head, v = tc_tiny_n_vocab();
    int64_t qd = p->n_head * hd, kvd = p->n_head_kv * hd;
    int rc = add_w(w, n, "token_embd", "model.embed_tokens.weight", v, e, 1.0f, 0, &rng);
    rc |= add_w(w, n, "output_norm", "model.norm.weight", e, 0, 0.1f, 1.0f, &rng);
    if (!p->tied)
        rc |= add_w(w, n, "output", "lm_head.weight", v, e, 0.2f, 0, &rng);
    for (int l = 0; l < p->n_layer; l++) {
        char cn[64], hn[96];
        struct {
            const char *c, *h;
            int64_t d0, d1;
            float scale, offset;
        } L[] = {
            {"attn_norm", "input_layernorm.weight", e, 0, 0.1f, 1.0f},
            {"attn_q", "self_attn.q_proj.weight", qd, e, 0.25f, 0},
            {"attn_k", "self_attn.k_proj.weight", kvd, e, 0.25f, 0},
            {"attn_v", "self_attn.v_proj.weight", kvd, e, 0.25f, 0},
            {"attn_output", "self_attn.o_proj.weight", e, qd, 0.15f, 0},
            {"ffn_norm", "post_attention_layernorm.weight", e, 0, 0.1f, 1.0f},
            {"ffn_gate", "mlp.gate_proj.weight", p->n_ff, e, 0.2f, 0},
            {"ffn_up", "mlp.up_proj.weight", p->n_ff, e, 0.2f, 0},
            {"ffn_down", "mlp.down_proj.weight", e, p->n_ff, 0.15f, 0},
        };
        for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
            snprintf(cn, sizeof cn, "blk.%d.%s", l, L[i].c);
            snprintf(hn, sizeof hn, "model.layers.%d.%s", l, L[i].h);
            rc |= add_w(w, n, cn, hn, L[i].d0, L[i].d1, L[i].scale, L[i].offset, &rng);
        }
    }
    return rc;
}

/* HF rows (i, i + hd/2) of each head become GGUF rows (2i, 2i+1), as llama.cpp's converter does. */
static float *permute_for_gguf(const tiny_w *t, int32_t n_heads)
{
    int64_t rows = t->shape[0], cols = t->shape[1], hd = rows / n_heads, half = hd / 2;
    float *out = malloc((size_t)(rows * cols) * sizeof(float));
    if (!out)
        return NULL;
    for (int64_t h = 0; h < n_heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(out + (h * hd + 2 * i + j) * cols, t->data + (h * hd + j * half + i) * cols,
                       (size_t)cols * sizeof(float));
    return out;
}

static void gguf_config(tc_gguf *g, const tc_tiny_params *p)
{
    tc_gguf_kv_str(g, "general.architecture", "llama");
    tc_gguf_kv_u32(g, "llama.block_count", (uint32_t)p->n_layer);
    tc_gguf_kv_u32(g, "llama.context_length", 256);
    tc_gguf_kv_u32(g, "llama.embedding_length", (uint32_t)p->n_embd);
    tc_gguf_kv_u32(g, "llama.feed_forward_length", (uint32_t)p->n_ff);
    tc_gguf_kv_u32(g, "llama.attention.head_count", (uint32_t)p->n_head);
    tc_gguf_kv_u32(g, "llama.attention.head_count_kv", (uint32_t)p->n_head_kv);
    tc_gguf_kv_f32(g, "llama.rope.freq_base", p->rope_theta);
    tc_gguf_kv_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

static void gguf_tokenizer(tc_gguf *g, char **vocab)
{
    int32_t n = tc_tiny_n_vocab();
    int32_t *types = malloc((size_t)n * sizeof *types);
    char **merges = calloc((size_t)N_MERGES, sizeof *merges);
    if (types && merges) {
        for (int32_t i = 0; i < n; i++)
            types[i] = i < N_SPECIAL ? 3 : 1;
        for (int32_t i = 0; i < N_MERGES; i++) {
            size_t len = strlen(merge_pairs[i][0]) + strlen(merge_pairs[i][1]) + 2;
            merges[i] = malloc(len);
            if (merges[i])
                snprintf(merges[i], len, "%s %s", merge_pairs[i][0], merge_pairs[i][1]);
        }
        tc_gguf_kv_str(g, "tokenizer.ggml.model", "gpt2");
        tc_gguf_kv_str(g, "tokenizer.ggml.pre", "smollm");
        tc_gguf_kv_arr_str(g, "tokenizer.ggml.tokens", (const char *const *)vocab, (size_t)n);
        tc_gguf_kv_arr_i32(g, "tokenizer.ggml.token_type", types, (size_t)n);
        tc_gguf_kv_arr_str(g, "tokenizer.ggml.merges", (const char *const *)merges,
                           (size_t)N_MERGES);
        tc_gguf_kv_u32(g, "tokenizer.ggml.bos_token_id", 1);
        tc_gguf_kv_u32(g, "tokenizer.ggml.eos_token_id", 2);
        tc_gguf_kv_bool(g, "tokenizer.ggml.add_bos_token", false);
    }
    for (int32_t i = 0; merges && i < N_MERGES; i++)
        free(merges[i]);
    free(merges);
    free(types);
}

static int write_gguf(const char *path, const tc_tiny_params *p, tiny_w *w, int n, char **vocab)
{
    tc_gguf *g = tc_gguf_new();
    if (!g)
        return -1;
    gguf_config(g, p);
    gguf_tokenizer(g, vocab);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        float *data = w[i].data, *perm = NULL;
        bool is_q = strstr(w[i].name, "attn_q") != NULL, is_k = strstr(w[i].name, "attn_k");
        if (is_q || is_k) {
            perm = permute_for_gguf(&w[i], is_q ? p->n_head : p->n_head_kv);
            if (!perm)
                rc = -1;
            data = perm;
        }
        char name[80];
        snprintf(name, sizeof name, "%.63s.weight", w[i].name);
        int64_t ne[2] = {w[i].n_dims == 2 ? w[i].shape[1] : w[i].shape[0], w[i].shape[0]};
        int64_t numel = w[i].shape[0] * (w[i].n_dims == 2 ? w[i].shape[1] : 1);
        if (rc == 0)
            tc_gguf_tensor(g, name, GGML_F32, w[i].n_dims, ne, data, (size_t)numel * sizeof(float));
        free(perm);
    }
    if (rc == 0)
        rc = tc_gguf_write(g, path);
    tc_gguf_free(g);
    return rc;
}

/* ---- HF directory ---- */

static int dump_json(json_t *o, const char *dir, const char *name)
{
    char path[1100];
    snprintf(path, sizeof path, "%.1000s/%.64s", dir, name);
    int rc = o ? json_dump_file(o, path, JSON_INDENT(1)) : -1;
    json_decref(o);
    return rc;
}

static json_t *hf_config(const tc_tiny_params *p)
{
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:n}",
                     "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
                     p->n_embd, "intermediate_size", p->n_ff, "num_hidden_layers", p->n_layer,
                     "num_attention_heads", p->n_head, "num_key_value_heads", p->n_head_kv,
                     "vocab_size", tc_tiny_n_vocab(), "max_position_embeddings", 256, "rope_theta",
                     (double)p->rope_theta, "rms_norm_eps", 1e-5, "tie_word_embeddings", p->tied,
                     "rope_scaling");
}

static json_t *hf_tokenizer(char **vocab)
{
    json_t *v = json_object(), *merges = json_array(), *added = json_array();
    for (int32_t i = 0; i < tc_tiny_n_vocab(); i++)
        json_object_set_new(v, vocab[i], json_integer(i));
    for (int32_t i = 0; i < N_MERGES; i++)
        json_array_append_new(merges, json_pack("[s,s]", merge_pairs[i][0], merge_pairs[i][1]));
    for (int32_t i = 0; i < N_SPECIAL; i++)
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b}", "id", i, "content",
                                               specials[i], "special", 1, "normalized", 0));
    return json_pack(
        "{s:o, s:n, s:{s:s, s:[{s:s, s:b}, {s:s, s:b, s:b, s:b}]}, s:{s:s}, s:{s:s, s:o, s:o, "
        "s:b}}",
        "added_tokens", added, "normalizer", "pre_tokenizer", "type", "Sequence", "pretokenizers",
        "type", "Digits", "individual_digits", 1, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 1, "use_regex", 1, "decoder", "type", "ByteLevel", "model", "type", "BPE",
        "vocab", v, "merges", merges, "ignore_merges", 0);
}

static int write_hf(const char *dir, const tc_tiny_params *p, tiny_w *w, int n, char **vocab)
{
    if (mkdir(dir, 0755) != 0)
        return -1;
    tc_st *st = tc_st_new();
    if (!st)
        return -1;
    tc_st_meta(st, "format", "pt");
    for (int i = 0; i < n; i++) {
        int64_t numel = w[i].shape[0] * (w[i].n_dims == 2 ? w[i].shape[1] : 1);
        tc_st_tensor(st, w[i].hf, "F32", w[i].n_dims, w[i].shape, w[i].data,
                     (size_t)numel * sizeof(float));
    }
    char path[1100];
    snprintf(path, sizeof path, "%.1000s/model.safetensors", dir);
    int rc = tc_st_write(st, path);
    tc_st_free(st);
    rc |= dump_json(hf_config(p), dir, "config.json");
    rc |= dump_json(hf_tokenizer(vocab), dir, "tokenizer.json");
    rc |= dump_json(json_pack("{s:s, s:s, s:s}", "bos_token", "<|im_start|>", "eos_token",
                              "<|im_end|>", "chat_template", "{{ messages }}"),
                    dir, "tokenizer_config.json");
    return rc;
}

int tc_tiny_model_write(const char *dir, const tc_tiny_params *p)
{
    tiny_w w[4 + 9 * 16];
    int n = 0;
    if (p->n_layer > 16)
        return -1;
    char **vocab = make_vocab();
    int rc = vocab ? make_weights(p, w, &n) : -1;
    char path[1100];
    snprintf(path, sizeof path, "%.1000s/tiny.gguf", dir);
    if (rc == 0)
        rc = write_gguf(path, p, w, n, vocab);
    snprintf(path, sizeof path, "%.1000s/hf", dir);
    if (rc == 0)
        rc = write_hf(path, p, w, n, vocab);
    for (int i = 0; i < n; i++)
        free(w[i].data);
    free_vocab(vocab);
    return rc;
}

int tc_mkdtemp(char *buf, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/flexq-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(buf) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tc_rmtree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

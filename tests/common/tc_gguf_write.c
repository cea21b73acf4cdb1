/* tc_gguf_write.c — builds a GGUF v3 file in memory from metadata and tensors, then writes it. */
#include "tc_gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TC_GGUF_ALIGNMENT 32
#define TC_GGUF_MAX_DIMS  8

enum { GV_U32 = 4, GV_I32 = 5, GV_F32 = 6, GV_BOOL = 7, GV_STR = 8, GV_ARR = 9 };

typedef struct {
    uint8_t *p;
    size_t len, cap;
} tc_buf;

typedef struct {
    char *name;
    int type;
    int n_dims;
    int64_t ne[TC_GGUF_MAX_DIMS];
    uint8_t *data;
    size_t nbytes;
} tc_tensor;

struct tc_gguf {
    tc_buf kv; /* encoded key/value pairs */
    uint64_t n_kv;
    tc_tensor *tensors;
    size_t n_tensors, cap_tensors;
    bool failed; /* an allocation failed; tc_gguf_write refuses */
};

static void buf_put(tc_gguf *g, tc_buf *b, const void *src, size_t n)
{
    if (g->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            g->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* Little-endian integers of n bytes. */
static void buf_uint(tc_gguf *g, tc_buf *b, uint64_t v, size_t n)
{
    uint8_t bytes[8];
    for (size_t i = 0; i < n; i++)
        bytes[i] = (uint8_t)(v >> (8 * i));
    buf_put(g, b, bytes, n);
}

static void buf_str(tc_gguf *g, tc_buf *b, const char *s)
{
    size_t n = strlen(s);
    buf_uint(g, b, n, 8);
    buf_put(g, b, s, n);
}

static void kv_head(tc_gguf *g, const char *key, uint32_t type)
{
    buf_str(g, &g->kv, key);
    buf_uint(g, &g->kv, type, 4);
    g->n_kv++;
}

tc_gguf *tc_gguf_new(void)
{
    return calloc(1, sizeof(tc_gguf));
}

void tc_gguf_free(tc_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_tensors; i++) {
        free(g->tensors[i].name);
        free(g->tensors[i].data);
    }
    free(g->tensors);
    free(g->kv.p);
    free(g);
}

void tc_gguf_kv_u32(tc_gguf *g, const char *key, uint32_t v)
{
    kv_head(g, key, GV_U32);
    buf_uint(g, &g->kv, v, 4);
}

void tc_gguf_kv_f32(tc_gguf *g, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    kv_head(g, key, GV_F32);
    buf_uint(g, &g->kv, u, 4);
}

void tc_gguf_kv_bool(tc_gguf *g, const char *key, bool v)
{
    kv_head(g, key, GV_BOOL);
    buf_uint(g, &g->kv, v ? 1 : 0, 1);
}

void tc_gguf_kv_str(tc_gguf *g, const char *key, const char *v)
{
    kv_head(g, key, GV_STR);
    buf_str(g, &g->kv, v);
}

void tc_gguf_kv_arr_str(tc_gguf *g, const char *key, const char *const *v, size_t n)
{
    kv_head(g, key, GV_ARR);
    buf_uint(g, &g->kv, GV_STR, 4);
    buf_uint(g, &g->kv, n, 8);
    for (size_t i = 0; i < n; i++)
        buf_str(g, &g->kv, v[i]);
}

void tc_gguf_kv_arr_i32(tc_gguf *g, const char *key, const int32_t *v, size_t n)
{
    kv_head(g, key, GV_ARR);
    buf_uint(g, &g->kv, GV_I32, 4);
    buf_uint(g, &g->kv, n, 8);
    for (size_t i = 0; i < n; i++)
        buf_uint(g, &g->kv, (uint32_t)v[i], 4);
}

void tc_gguf_tensor(tc_gguf *g, const char *name, int ggml_type, int n_dims, const int64_t *ne,
                    const void *data, size_t nbytes)
{
    if (g->failed)
        return;
    if (g->n_tensors == g->cap_tensors) {
        size_t cap = g->cap_tensors ? 2 * g->cap_tensors : 16;
        tc_tensor *t = realloc(g->tensors, cap * sizeof *t);
        if (!t) {
            g->failed = true;
            return;
        }
        g->tensors = t;
        g->cap_tensors = cap;
    }
    tc_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        g->failed = true;
        return;
    }
    t->type = ggml_type;
    t->n_dims = n_dims < 0 ? 0 : n_dims > TC_GGUF_MAX_DIMS ? TC_GGUF_MAX_DIMS : n_dims;
    memcpy(t->ne, ne, (size_t)t->n_dims * sizeof *ne);
    if (nbytes)
        memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
    g->n_tensors++;
}

static size_t align_up(size_t n)
{
    return (n + TC_GGUF_ALIGNMENT - 1) / TC_GGUF_ALIGNMENT * TC_GGUF_ALIGNMENT;
}

static void pad_to_alignment(tc_gguf *g, tc_buf *b)
{
    static const uint8_t zeros[TC_GGUF_ALIGNMENT];
    buf_put(g, b, zeros, align_up(b->len) - b->len);
}

/* Header, metadata and tensor infos, padded to the alignment; offsets pad every tensor but the
 * last. */
static void encode_head(tc_gguf *g, tc_buf *out)
{
    buf_put(g, out, "GGUF", 4);
    buf_uint(g, out, 3, 4);
    buf_uint(g, out, g->n_tensors, 8);
    buf_uint(g, out, g->n_kv, 8);
    buf_put(g, out, g->kv.p, g->kv.len);
    size_t offset = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const tc_tensor *t = &g->tensors[i];
        buf_str(g, out, t->name);
        buf_uint(g, out, (uint64_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++)
            buf_uint(g, out, (uint64_t)t->ne[d], 8);
        buf_uint(g, out, (uint64_t)t->type, 4);
        buf_uint(g, out, offset, 8);
        offset = align_up(offset + t->nbytes);
    }
    pad_to_alignment(g, out);
}

int tc_gguf_write(const tc_gguf *g, const char *path)
{
    if (!g || g->failed)
        return -1;
    /* Encoding reports allocation failures through a scratch copy of the flag, so g stays const. */
    tc_gguf scratch = *g;
    tc_buf out = {0};
    encode_head(&scratch, &out);
    for (size_t i = 0; i < g->n_tensors; i++) {
        buf_put(&scratch, &out, g->tensors[i].data, g->tensors[i].nbytes);
        if (i + 1 < g->n_tensors)
            pad_to_alignment(&scratch, &out);
    }
    int rc = -1;
    FILE *fp = scratch.failed ? NULL : fopen(path, "wb");
    if (fp) {
        rc = fwrite(out.p, 1, out.len, fp) == out.len ? 0 : -1;
        if (fclose(fp) != 0)
            rc = -1;
    }
    free(out.p);
    return rc;
}

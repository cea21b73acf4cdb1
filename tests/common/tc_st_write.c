/* tc_st_write.c — builds a safetensors header with jansson and writes header and data to a file. */
#include "tc_st_write.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tc_st_entry {
    char *name;
    char *dtype;
    int n_dims;
    int64_t *shape; /* [n_dims] */
    void *data;     /* [nbytes] */
    size_t nbytes;
} tc_st_entry;

struct tc_st {
    json_t *meta;         /* key -> string */
    tc_st_entry *entries; /* [n] in call order */
    size_t n, cap;
    bool oom; /* a call ran out of memory: tc_st_write fails */
};

tc_st *tc_st_new(void)
{
    tc_st *w = calloc(1, sizeof *w);
    if (w && !(w->meta = json_object())) {
        free(w);
        return NULL;
    }
    return w;
}

static void tc_st_entry_free(tc_st_entry *e)
{
    free(e->name);
    free(e->dtype);
    free(e->shape);
    free(e->data);
}

void tc_st_free(tc_st *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        tc_st_entry_free(&w->entries[i]);
    free(w->entries);
    json_decref(w->meta);
    free(w);
}

void tc_st_meta(tc_st *w, const char *key, const char *value)
{
    if (json_object_set_new(w->meta, key, json_string(value)) != 0)
        w->oom = true;
}

void tc_st_tensor(tc_st *w, const char *name, const char *dtype, int n_dims, const int64_t *shape,
                  const void *data, size_t nbytes)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        tc_st_entry *grown = realloc(w->entries, cap * sizeof *grown);
        if (!grown) {
            w->oom = true;
            return;
        }
        w->entries = grown;
        w->cap = cap;
    }
    tc_st_entry e = {.n_dims = n_dims, .nbytes = nbytes};
    e.name = strdup(name);
    e.dtype = strdup(dtype);
    e.shape = malloc((size_t)(n_dims > 0 ? n_dims : 1) * sizeof *e.shape);
    e.data = malloc(nbytes ? nbytes : 1);
    if (!e.name || !e.dtype || !e.shape || !e.data) {
        tc_st_entry_free(&e);
        w->oom = true;
        return;
    }
    if (n_dims > 0)
        memcpy(e.shape, shape, (size_t)n_dims * sizeof *e.shape);
    if (nbytes)
        memcpy(e.data, data, nbytes);
    w->entries[w->n++] = e;
}

static json_t *tc_st_entry_json(const tc_st_entry *e, size_t begin)
{
    json_t *shape = json_array();
    for (int d = 0; shape && d < e->n_dims; d++)
        json_array_append_new(shape, json_integer(e->shape[d]));
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", e->dtype, "shape", shape, "data_offsets",
                     (json_int_t)begin, (json_int_t)(begin + e->nbytes));
}

/* The compact JSON header, or NULL when out of memory. */
static char *tc_st_header(const tc_st *w)
{
    json_t *h = json_object();
    bool ok = h != NULL;
    if (ok && json_object_size(w->meta) > 0)
        ok = json_object_set(h, "__metadata__", w->meta) == 0;
    size_t offset = 0;
    for (size_t i = 0; ok && i < w->n; i++) {
        ok = json_object_set_new(h, w->entries[i].name, tc_st_entry_json(&w->entries[i], offset)) ==
             0;
        offset += w->entries[i].nbytes;
    }
    char *text = ok ? json_dumps(h, JSON_COMPACT) : NULL;
    json_decref(h);
    return text;
}

int tc_st_write(const tc_st *w, const char *path)
{
    if (w->oom)
        return -1;
    char *header = tc_st_header(w);
    if (!header)
        return -1;
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    FILE *fp = fopen(path, "wb");
    bool ok = fp && fwrite(len_le, 1, 8, fp) == 8 && fwrite(header, 1, hlen, fp) == hlen;
    for (size_t i = hlen; ok && i < padded; i++)
        ok = fputc(' ', fp) != EOF;
    for (size_t i = 0; ok && i < w->n; i++)
        ok = fwrite(w->entries[i].data, 1, w->entries[i].nbytes, fp) == w->entries[i].nbytes;
    if (fp && fclose(fp) != 0)
        ok = false;
    free(header);
    return ok ? 0 : -1;
}

/* fq_safetensors.c — safetensors file reader and the HF checkpoint-directory reader built on it.
 *
 * Design: fq_st_open maps the file and validates the whole header (dtypes, shapes, sizes, offsets
 * inside the data area, no overlaps) before any view is handed out, so callers index tensor data
 * without further checks. The parsed JSON header lives as long as the mapping: tensor names and
 * metadata values are borrowed from it and never modified, so concurrent readers are safe.
 * The HF reader runs three independent steps — config.json, tokenizer.json (+
 * tokenizer_config.json), weight shards — each naming the file it read in its errors;
 * fq_ckpt_validate then checks the tensors against the config. HF JSON files are decoded with
 * integers as doubles, because transformers writes integers (model_max_length) that do not fit in
 * 64 bits; integer fields are read through hf_int(), which insists on integral values.
 */
#include "fq_safetensors.h"

#include "fq_base.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_HEADER_MAX_BYTES    (100ull * 1024 * 1024) /* a sane bound on the JSON header */
#define HF_PATH_MAX            4096
#define HF_MAX_TOKENS          (1 << 24)          /* bound on token ids from tokenizer.json */
#define HF_TEXT_FILE_MAX_BYTES (16 * 1024 * 1024) /* bound on chat_template.jinja */
#define HF_JSON_FLAGS          (JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL)

/* ---------------------------------------------------------------------------------------------- */
/* safetensors files                                                                              */
/* ---------------------------------------------------------------------------------------------- */

struct fq_st_file {
    const uint8_t *map;           /* the whole file, read-only */
    size_t map_bytes;             /* file size */
    json_t *header;               /* parsed header; owns tensor names and metadata strings */
    const json_t *metadata;       /* "__metadata__" object borrowed from header, or NULL */
    int32_t n_tensors;            /* entries other than __metadata__ */
    fq_st_tensor *tensors;        /* [n_tensors] in header order */
    const fq_st_tensor **by_name; /* [n_tensors] sorted by name, for fq_st_find */
};

typedef struct st_dtype {
    const char *name;
    size_t size; /* bytes per element */
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2},    {"I64", 8}, {"I32", 4},
    {"I16", 2},  {"I8", 1},      {"U64", 8},     {"U32", 4},     {"U16", 2}, {"U8", 1},
    {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}, {"C64", 8},
};

/* Sub-byte types that safetensors defines but whose packing this reader does not handle. */
static const char *const st_packed_dtypes[] = {"F4", "F6_E2M3", "F6_E3M2"};

/* Bytes per element of a dtype name; 0 when unknown. */
static size_t st_dtype_size(const char *name)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return st_dtypes[i].size;
    return 0;
}

static bool st_dtype_is_packed(const char *name)
{
    for (size_t i = 0; i < sizeof st_packed_dtypes / sizeof st_packed_dtypes[0]; i++)
        if (strcmp(st_packed_dtypes[i], name) == 0)
            return true;
    return false;
}

static uint64_t st_read_u64_le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Maps the file read-only into f->map / f->map_bytes. */
static int st_map(const char *path, fq_st_file *f, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fq_err(err, err_len, FQ_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = fq_err(err, err_len, FQ_EIO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = fq_err(err, err_len, FQ_EIO, "%s: not a regular file", path);
    else if (st.st_size < 8)
        rc = fq_err(err, err_len, FQ_EFORMAT,
                    "%s: file is %lld bytes, too short for the 8-byte header length", path,
                    (long long)st.st_size);
    if (!rc) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = fq_err(err, err_len, FQ_EIO, "%s: cannot map: %s", path, strerror(errno));
        } else {
            f->map = m;
            f->map_bytes = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

static int st_check_metadata(const char *path, const json_t *meta, char *err, size_t err_len)
{
    if (!json_is_object(meta))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: __metadata__ is not a JSON object", path);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value)
    {
        if (!json_is_string(value))
            return fq_err(err, err_len, FQ_EFORMAT,
                          "%s: __metadata__ value of key %s is not a string", path, key);
    }
    return 0;
}

static int st_parse_shape(const char *path, const char *name, const json_t *shape, fq_st_tensor *t,
                          char *err, size_t err_len)
{
    if (!json_is_array(shape))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s: shape is missing or not an array",
                      path, name);
    size_t n = json_array_size(shape);
    if (n > FQ_TENSOR_MAX_DIMS)
        return fq_err(err, err_len, FQ_EUNSUP, "%s: tensor %s: %zu dims, at most %d are supported",
                      path, name, n, FQ_TENSOR_MAX_DIMS);
    t->n_dims = (int32_t)n;
    for (size_t d = 0; d < n; d++) {
        const json_t *v = json_array_get(shape, d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return fq_err(err, err_len, FQ_EFORMAT,
                          "%s: tensor %s: shape[%zu] is not a non-negative integer", path, name, d);
        t->shape[d] = json_integer_value(v);
    }
    return 0;
}

/* Element count times element size, or false on overflow. */
static bool st_tensor_bytes(const fq_st_tensor *t, size_t elem_size, uint64_t *bytes)
{
    uint64_t n = elem_size;
    for (int32_t d = 0; d < t->n_dims; d++) {
        uint64_t dim = (uint64_t)t->shape[d];
        if (dim != 0 && n > UINT64_MAX / dim)
            return false;
        n *= dim;
    }
    *bytes = n;
    return true;
}

static int st_parse_offsets(const char *path, const char *name, const json_t *offs, uint64_t *begin,
                            uint64_t *end, char *err, size_t err_len)
{
    const json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(b) ||
        !json_is_integer(e) || json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: tensor %s: data_offsets is not a pair of non-negative integers", path,
                      name);
    *begin = (uint64_t)json_integer_value(b);
    *end = (uint64_t)json_integer_value(e);
    if (*end < *begin)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: tensor %s: data_offsets [%llu, %llu) end before they begin", path, name,
                      (unsigned long long)*begin, (unsigned long long)*end);
    return 0;
}

/* Parses and checks one header entry {dtype, shape, data_offsets} into t. */
static int st_parse_entry(const char *path, const char *name, const json_t *v, const uint8_t *data,
                          size_t data_bytes, fq_st_tensor *t, char *err, size_t err_len)
{
    t->name = name;
    if (!json_is_object(v))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s: entry is not a JSON object", path,
                      name);
    const char *dtype = json_string_value(json_object_get(v, "dtype"));
    if (!dtype)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s: dtype is missing", path, name);
    size_t elem = st_dtype_size(dtype);
    if (elem == 0 && st_dtype_is_packed(dtype))
        return fq_err(err, err_len, FQ_EUNSUP, "%s: tensor %s: dtype %s is not supported", path,
                      name, dtype);
    if (elem == 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s: unknown dtype '%.32s'", path, name,
                      dtype);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    int rc = st_parse_shape(path, name, json_object_get(v, "shape"), t, err, err_len);
    if (rc)
        return rc;
    uint64_t begin = 0, end = 0, want = 0;
    rc = st_parse_offsets(path, name, json_object_get(v, "data_offsets"), &begin, &end, err,
                          err_len);
    if (rc)
        return rc;
    if (!st_tensor_bytes(t, elem, &want))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s: shape overflows the byte count",
                      path, name);
    if (end > data_bytes)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: tensor %s: data_offsets [%llu, %llu) exceed the data size %zu", path,
                      name, (unsigned long long)begin, (unsigned long long)end, data_bytes);
    if (end - begin != want)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: tensor %s: %s of %d dims needs %llu bytes but data_offsets [%llu, %llu) "
                      "hold %llu",
                      path, name, dtype, t->n_dims, (unsigned long long)want,
                      (unsigned long long)begin, (unsigned long long)end,
                      (unsigned long long)(end - begin));
    t->data = data + begin;
    t->n_bytes = (size_t)want;
    return 0;
}

/* Parses the JSON header that follows the length field and fills f->tensors. */
static int st_parse_header(const char *path, fq_st_file *f, char *err, size_t err_len)
{
    uint64_t hlen = st_read_u64_le(f->map);
    size_t avail = f->map_bytes - 8;
    if (hlen > avail)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: header length %llu exceeds the %zu bytes after the length field "
                      "(truncated or not safetensors)",
                      path, (unsigned long long)hlen, avail);
    if (hlen > ST_HEADER_MAX_BYTES)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: header length %llu exceeds the %llu-byte limit", path,
                      (unsigned long long)hlen, ST_HEADER_MAX_BYTES);
    json_error_t je;
    f->header = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!f->header)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: header is not valid JSON: %s (line %d, column %d)", path, je.text,
                      je.line, je.column);
    if (!json_is_object(f->header))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: header is not a JSON object", path);
    f->metadata = json_object_get(f->header, "__metadata__");
    size_t n = json_object_size(f->header) - (f->metadata ? 1 : 0);
    if (n > INT32_MAX)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: header lists too many tensors", path);
    f->tensors = fq_calloc_array(n, sizeof *f->tensors);
    if (!f->tensors)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory for %zu tensors", path, n);
    const uint8_t *data = f->map + 8 + hlen;
    size_t data_bytes = avail - (size_t)hlen;
    const char *key;
    json_t *value;
    json_object_foreach(f->header, key, value)
    {
        int rc = value == f->metadata ? st_check_metadata(path, value, err, err_len)
                                      : st_parse_entry(path, key, value, data, data_bytes,
                                                       &f->tensors[f->n_tensors++], err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

typedef struct st_range {
    uint64_t begin, end;
    int32_t idx;
} st_range;

static int st_range_cmp(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Rejects tensors whose byte ranges intersect (empty tensors intersect nothing). */
static int st_check_overlaps(const char *path, const fq_st_file *f, char *err, size_t err_len)
{
    st_range *r = fq_malloc_array((size_t)f->n_tensors, sizeof *r);
    if (!r)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    int32_t n = 0;
    const uint8_t *data = f->map + 8 + st_read_u64_le(f->map);
    for (int32_t i = 0; i < f->n_tensors; i++) {
        const fq_st_tensor *t = &f->tensors[i];
        if (t->n_bytes == 0)
            continue;
        uint64_t begin = (uint64_t)((const uint8_t *)t->data - data);
        r[n++] = (st_range){begin, begin + t->n_bytes, i};
    }
    qsort(r, (size_t)n, sizeof *r, st_range_cmp);
    int rc = 0;
    for (int32_t i = 1; i < n && !rc; i++) {
        if (r[i].begin < r[i - 1].end)
            rc = fq_err(err, err_len, FQ_EFORMAT,
                        "%s: tensor %s: data_offsets [%llu, %llu) overlap tensor %s [%llu, %llu)",
                        path, f->tensors[r[i].idx].name, (unsigned long long)r[i].begin,
                        (unsigned long long)r[i].end, f->tensors[r[i - 1].idx].name,
                        (unsigned long long)r[i - 1].begin, (unsigned long long)r[i - 1].end);
    }
    free(r);
    return rc;
}

static int st_name_cmp(const void *a, const void *b)
{
    const fq_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int st_index_names(const char *path, fq_st_file *f, char *err, size_t err_len)
{
    f->by_name = fq_malloc_array((size_t)f->n_tensors, sizeof *f->by_name);
    if (!f->by_name)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    for (int32_t i = 0; i < f->n_tensors; i++)
        f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, st_name_cmp);
    return 0;
}

int fq_st_open(const char *path, fq_st_file **out, char *err, size_t err_len)
{
    *out = NULL;
    fq_st_file *f = calloc(1, sizeof *f);
    if (!f)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    int rc = st_map(path, f, err, err_len);
    if (!rc)
        rc = st_parse_header(path, f, err, err_len);
    if (!rc)
        rc = st_check_overlaps(path, f, err, err_len);
    if (!rc)
        rc = st_index_names(path, f, err, err_len);
    if (rc) {
        fq_st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

void fq_st_close(fq_st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, f->map_bytes);
    json_decref(f->header);
    free(f->tensors);
    free(f->by_name);
    free(f);
}

int32_t fq_st_count(const fq_st_file *f)
{
    return f->n_tensors;
}

const fq_st_tensor *fq_st_at(const fq_st_file *f, int32_t i)
{
    FQ_ASSERT(i >= 0 && i < f->n_tensors);
    return &f->tensors[i];
}

const fq_st_tensor *fq_st_find(const fq_st_file *f, const char *name)
{
    fq_st_tensor key = {.name = name};
    const fq_st_tensor *pkey = &key;
    const fq_st_tensor *const *hit =
        bsearch(&pkey, f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, st_name_cmp);
    return hit ? *hit : NULL;
}

const char *fq_st_metadata(const fq_st_file *f, const char *key)
{
    return f->metadata ? json_string_value(json_object_get(f->metadata, key)) : NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* HF directory: files and JSON helpers                                                           */
/* ---------------------------------------------------------------------------------------------- */

static int hf_join(char *buf, size_t cap, const char *dir, const char *name, char *err,
                   size_t err_len)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return fq_err(err, err_len, FQ_EINVAL, "%s: path too long", dir);
    return 0;
}

static bool hf_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reads a JSON file; a missing file is FQ_ENOTFOUND, or *out = NULL and 0 when optional. */
static int hf_read_json(const char *path, bool optional, json_t **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!hf_is_file(path)) {
        if (optional)
            return 0;
        return fq_err(err, err_len, FQ_ENOTFOUND, "%s: file not found", path);
    }
    json_error_t je;
    *out = json_load_file(path, HF_JSON_FLAGS, &je);
    if (!*out && je.line < 0)
        return fq_err(err, err_len, FQ_EIO, "%s: cannot read: %s", path, je.text);
    if (!*out)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: invalid JSON: %s (line %d, column %d)", path,
                      je.text, je.line, je.column);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return fq_err(err, err_len, FQ_EFORMAT, "%s: not a JSON object", path);
    }
    return 0;
}

/* Reads a whole small text file into a malloc'd NUL-terminated string. */
static int hf_read_text(const char *path, char **out, char *err, size_t err_len)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return fq_err(err, err_len, FQ_EIO, "%s: cannot stat: %s", path, strerror(errno));
    if (st.st_size > HF_TEXT_FILE_MAX_BYTES)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: larger than %d bytes", path,
                      HF_TEXT_FILE_MAX_BYTES);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fq_err(err, err_len, FQ_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    int rc = 0;
    if (!buf)
        rc = fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    else if (fread(buf, 1, size, fp) != size)
        rc = fq_err(err, err_len, FQ_EIO, "%s: short read", path);
    fclose(fp);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[size] = '\0';
    *out = buf;
    return 0;
}

/* An integral JSON number (integer, or a double with an integral value: see the file comment). */
static bool hf_int(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (!json_is_real(v))
        return false;
    double d = json_real_value(v);
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != floor(d))
        return false;
    *out = (long long)d;
    return true;
}

static bool hf_is_null(const json_t *v)
{
    return !v || json_is_null(v);
}

/* A positive int32 config value; absent or null gives dflt, or FQ_ENOTFOUND when required. */
static int hf_cfg_int(const char *path, const json_t *obj, const char *key, bool required,
                      int32_t dflt, int32_t *out, char *err, size_t err_len)
{
    const json_t *v = json_object_get(obj, key);
    if (hf_is_null(v)) {
        if (required)
            return fq_err(err, err_len, FQ_ENOTFOUND, "%s: missing key %s", path, key);
        *out = dflt;
        return 0;
    }
    long long x;
    if (!hf_int(v, &x))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: key %s is not an integer", path, key);
    if (x < 1 || x > INT32_MAX)
        return fq_err(err, err_len, FQ_ERANGE, "%s: key %s = %lld is out of range [1, %d]", path,
                      key, x, INT32_MAX);
    *out = (int32_t)x;
    return 0;
}

static int hf_cfg_num(const char *path, const json_t *obj, const char *key, float dflt, float *out,
                      char *err, size_t err_len)
{
    const json_t *v = json_object_get(obj, key);
    if (hf_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: key %s is not a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int hf_cfg_bool(const char *path, const json_t *obj, const char *key, bool dflt, bool *out,
                       char *err, size_t err_len)
{
    const json_t *v = json_object_get(obj, key);
    if (hf_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: key %s is not a boolean", path, key);
    *out = json_is_true(v);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* HF directory: config.json                                                                      */
/* ---------------------------------------------------------------------------------------------- */

static int hf_check_arch(const char *path, const json_t *j, char *err, size_t err_len)
{
    const json_t *archs = json_object_get(j, "architectures");
    const char *mt = json_string_value(json_object_get(j, "model_type"));
    size_t i;
    const json_t *a;
    json_array_foreach(archs, i, a)
    {
        const char *s = json_string_value(a);
        if (s && strcmp(s, "LlamaForCausalLM") == 0)
            return 0;
    }
    if (mt && strcmp(mt, "llama") == 0)
        return 0;
    const char *first = json_string_value(json_array_get(archs, 0));
    return fq_err(err, err_len, FQ_EUNSUP,
                  "%s: architecture %s (model_type %s) is not supported; only LlamaForCausalLM",
                  path, first ? first : "(none)", mt ? mt : "(none)");
}

/* Options that would change the forward pass and that the runtime does not implement. */
static int hf_check_features(const char *path, const json_t *j, char *err, size_t err_len)
{
    const char *act = json_string_value(json_object_get(j, "hidden_act"));
    if (act && strcmp(act, "silu") != 0)
        return fq_err(err, err_len, FQ_EUNSUP, "%s: hidden_act %s is not supported (silu only)",
                      path, act);
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < 2; i++)
        if (json_is_true(json_object_get(j, bias_keys[i])))
            return fq_err(err, err_len, FQ_EUNSUP, "%s: %s = true is not supported", path,
                          bias_keys[i]);
    return 0;
}

/* rope_scaling (transformers 4) or rope_parameters (transformers 5): only plain RoPE for now. */
static int hf_check_rope_type(const char *path, const char *key, const json_t *v, char *err,
                              size_t err_len)
{
    if (hf_is_null(v))
        return 0;
    if (!json_is_object(v))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: %s is not an object", path, key);
    const char *type = json_string_value(json_object_get(v, "rope_type"));
    if (!type)
        type = json_string_value(json_object_get(v, "type"));
    if (type && strcmp(type, "default") == 0)
        return 0;
    return fq_err(err, err_len, FQ_EUNSUP,
                  "%s: %s of type %s is not supported yet (plain RoPE only)", path, key,
                  type ? type : "(unnamed)");
}

static int hf_read_rope(const char *path, const json_t *j, float *theta, char *err, size_t err_len)
{
    const json_t *params = json_object_get(j, "rope_parameters");
    int rc =
        hf_check_rope_type(path, "rope_scaling", json_object_get(j, "rope_scaling"), err, err_len);
    if (!rc)
        rc = hf_check_rope_type(path, "rope_parameters", params, err, err_len);
    if (!rc)
        rc = hf_cfg_num(path, j, "rope_theta", 10000.0f, theta, err, err_len);
    if (!rc && json_is_object(params))
        rc = hf_cfg_num(path, params, "rope_theta", *theta, theta, err, err_len);
    return rc;
}

static int hf_config_from_json(const char *path, const json_t *j, fq_config *c, char *err,
                               size_t err_len)
{
    int rc = hf_check_arch(path, j, err, err_len);
    if (!rc)
        rc = hf_check_features(path, j, err, err_len);
    if (rc)
        return rc;
    snprintf(c->arch, sizeof c->arch, "llama");
    c->rope_style = FQ_ROPE_HALF;
    if ((rc = hf_cfg_int(path, j, "hidden_size", true, 0, &c->n_embd, err, err_len)) ||
        (rc = hf_cfg_int(path, j, "intermediate_size", true, 0, &c->n_ff, err, err_len)) ||
        (rc = hf_cfg_int(path, j, "num_hidden_layers", true, 0, &c->n_layer, err, err_len)) ||
        (rc = hf_cfg_int(path, j, "num_attention_heads", true, 0, &c->n_head, err, err_len)) ||
        (rc = hf_cfg_int(path, j, "num_key_value_heads", false, c->n_head, &c->n_head_kv, err,
                         err_len)) ||
        (rc = hf_cfg_int(path, j, "vocab_size", true, 0, &c->n_vocab, err, err_len)) ||
        (rc = hf_cfg_int(path, j, "max_position_embeddings", false, 2048, &c->n_ctx, err, err_len)))
        return rc;
    if (hf_is_null(json_object_get(j, "head_dim")) && c->n_embd % c->n_head != 0)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: hidden_size %d is not a multiple of num_attention_heads %d and head_dim "
                      "is not given",
                      path, c->n_embd, c->n_head);
    if ((rc = hf_cfg_int(path, j, "head_dim", false, c->n_embd / c->n_head, &c->head_dim, err,
                         err_len)) ||
        (rc = hf_cfg_num(path, j, "rms_norm_eps", 1e-6f, &c->norm_eps, err, err_len)) ||
        (rc =
             hf_cfg_bool(path, j, "tie_word_embeddings", false, &c->tied_embeddings, err, err_len)))
        return rc;
    return hf_read_rope(path, j, &c->rope_theta, err, err_len);
}

static int hf_read_config(const char *dir, fq_config *cfg, char *err, size_t err_len)
{
    char path[HF_PATH_MAX];
    json_t *j = NULL;
    int rc = hf_join(path, sizeof path, dir, "config.json", err, err_len);
    if (!rc)
        rc = hf_read_json(path, false, &j, err, err_len);
    if (!rc)
        rc = hf_config_from_json(path, j, cfg, err, err_len);
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* HF directory: tokenizer.json, tokenizer_config.json, chat template                             */
/* ---------------------------------------------------------------------------------------------- */

/* The Llama-3 pre-tokenizer regex exactly as tokenizer.json spells it (after JSON unescaping). */
static const char hf_llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *hf_type(const json_t *o)
{
    return json_string_value(json_object_get(o, "type"));
}

static bool hf_is_type(const json_t *o, const char *type)
{
    const char *t = hf_type(o);
    return t && strcmp(t, type) == 0;
}

static bool hf_flag(const json_t *o, const char *key, bool dflt)
{
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static bool hf_is_byte_level(const json_t *o, bool use_regex)
{
    return hf_is_type(o, "ByteLevel") && hf_flag(o, "use_regex", true) == use_regex &&
           !hf_flag(o, "add_prefix_space", false);
}

static bool hf_is_llama3_split(const json_t *o)
{
    const char *re = json_string_value(json_object_get(json_object_get(o, "pattern"), "Regex"));
    const char *behavior = json_string_value(json_object_get(o, "behavior"));
    return hf_is_type(o, "Split") && re && strcmp(re, hf_llama3_regex) == 0 && behavior &&
           strcmp(behavior, "Isolated") == 0 && !hf_flag(o, "invert", false);
}

/* "Sequence[Split, ByteLevel]", "Metaspace", "null": for error messages. */
static void hf_describe_pre(const json_t *pre, char *buf, size_t cap)
{
    if (hf_is_null(pre)) {
        snprintf(buf, cap, "null");
        return;
    }
    const char *type = hf_type(pre);
    snprintf(buf, cap, "%s", type ? type : "(untyped)");
    if (!hf_is_type(pre, "Sequence"))
        return;
    size_t i, len;
    const json_t *step;
    json_array_foreach(json_object_get(pre, "pretokenizers"), i, step)
    {
        len = strlen(buf);
        type = hf_type(step);
        snprintf(buf + len, cap - len, "%s%s", i ? ", " : "[", type ? type : "(untyped)");
    }
    len = strlen(buf);
    snprintf(buf + len, cap - len, "]");
}

/* Maps the pre_tokenizer structure to fq_tok_spec.pre ("gpt2", "smollm", "llama3"). */
static int hf_tok_pre(const char *path, const json_t *pre, char *out, size_t cap, char *err,
                      size_t err_len)
{
    const json_t *steps[2] = {pre, NULL};
    size_t n = hf_is_null(pre) ? 0 : 1;
    if (hf_is_type(pre, "Sequence")) {
        const json_t *arr = json_object_get(pre, "pretokenizers");
        n = json_array_size(arr);
        steps[0] = json_array_get(arr, 0);
        steps[1] = json_array_get(arr, 1);
    }
    const char *name = NULL;
    if (n == 1 && hf_is_byte_level(steps[0], true))
        name = "gpt2";
    else if (n == 2 && hf_is_type(steps[0], "Digits") &&
             hf_flag(steps[0], "individual_digits", false) && hf_is_byte_level(steps[1], true))
        name = "smollm";
    else if (n == 2 && hf_is_llama3_split(steps[0]) && hf_is_byte_level(steps[1], false))
        name = "llama3";
    if (name) {
        snprintf(out, cap, "%s", name);
        return 0;
    }
    char desc[256];
    hf_describe_pre(pre, desc, sizeof desc);
    return fq_err(err, err_len, FQ_EUNSUP,
                  "%s: pre_tokenizer %s is not supported (expected ByteLevel, Sequence[Digits, "
                  "ByteLevel] or Llama-3's Sequence[Split, ByteLevel] with their usual options)",
                  path, desc);
}

/* BPE options that change encoding and that the runtime tokenizer does not implement. */
static int hf_check_bpe(const char *path, const json_t *model, char *err, size_t err_len)
{
    const char *type = hf_type(model);
    if (!type || strcmp(type, "BPE") != 0)
        return fq_err(err, err_len, FQ_EUNSUP,
                      "%s: tokenizer model %s is not supported (byte-level BPE only)", path,
                      type ? type : "(untyped)");
    if (hf_flag(model, "byte_fallback", false))
        return fq_err(err, err_len, FQ_EUNSUP, "%s: BPE byte_fallback is not supported", path);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(model, affixes[i]));
        if (s && *s)
            return fq_err(err, err_len, FQ_EUNSUP, "%s: BPE %s '%s' is not supported", path,
                          affixes[i], s);
    }
    return 0;
}

static int hf_token_id(const char *path, const char *what, const char *text, const json_t *v,
                       int32_t *id, char *err, size_t err_len)
{
    long long x;
    if (!hf_int(v, &x) || x < 0 || x >= HF_MAX_TOKENS)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: %s '%.64s' has no id in [0, %d)", path, what,
                      text, HF_MAX_TOKENS);
    *id = (int32_t)x;
    return 0;
}

/* Largest id among vocab and added_tokens, with every entry type-checked. */
static int hf_max_token_id(const char *path, const json_t *vocab, const json_t *added,
                           int32_t *max_id, char *err, size_t err_len)
{
    *max_id = -1;
    const char *key;
    const json_t *v;
    int32_t id = 0;
    json_object_foreach((json_t *)vocab, key, v)
    {
        int rc = hf_token_id(path, "token", key, v, &id, err, err_len);
        if (rc)
            return rc;
        *max_id = id > *max_id ? id : *max_id;
    }
    size_t i;
    json_array_foreach(added, i, v)
    {
        const char *content = json_string_value(json_object_get(v, "content"));
        if (!content)
            return fq_err(err, err_len, FQ_EFORMAT, "%s: added_tokens[%zu] has no content", path,
                          i);
        int rc =
            hf_token_id(path, "added token", content, json_object_get(v, "id"), &id, err, err_len);
        if (rc)
            return rc;
        *max_id = id > *max_id ? id : *max_id;
    }
    return 0;
}

static int hf_set_token(const char *path, fq_tok_spec *tok, int32_t id, const char *text,
                        int32_t type, char *err, size_t err_len)
{
    if (tok->tokens[id] && strcmp(tok->tokens[id], text) != 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tokens '%.64s' and '%.64s' both have id %d",
                      path, tok->tokens[id], text, id);
    if (!tok->tokens[id] && !(tok->tokens[id] = strdup(text)))
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    tok->token_types[id] = type;
    return 0;
}

/* Fills tokens / token_types from model.vocab and added_tokens; holes become unused "[PADn]". */
static int hf_tok_vocab(const char *path, const json_t *vocab, const json_t *added,
                        fq_tok_spec *tok, char *err, size_t err_len)
{
    int32_t max_id;
    int rc = hf_max_token_id(path, vocab, added, &max_id, err, err_len);
    if (rc)
        return rc;
    if (max_id < 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: the vocabulary is empty", path);
    tok->tokens = fq_calloc_array((size_t)max_id + 1, sizeof *tok->tokens);
    tok->token_types = fq_calloc_array((size_t)max_id + 1, sizeof *tok->token_types);
    if (!tok->tokens || !tok->token_types)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory for %d tokens", path, max_id + 1);
    tok->n_tokens = max_id + 1;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v)
    {
        long long id = 0;
        hf_int(v, &id);
        if ((rc = hf_set_token(path, tok, (int32_t)id, key, FQ_TOK_NORMAL, err, err_len)))
            return rc;
    }
    size_t i;
    json_array_foreach(added, i, v)
    {
        long long id = 0;
        hf_int(json_object_get(v, "id"), &id);
        int32_t type = hf_flag(v, "special", false) ? FQ_TOK_CONTROL : FQ_TOK_USER_DEFINED;
        const char *content = json_string_value(json_object_get(v, "content"));
        if ((rc = hf_set_token(path, tok, (int32_t)id, content, type, err, err_len)))
            return rc;
    }
    int32_t holes = 0;
    for (int32_t id = 0; id < tok->n_tokens; id++) {
        if (tok->tokens[id])
            continue;
        char name[32];
        snprintf(name, sizeof name, "[PAD%d]", id);
        if ((rc = hf_set_token(path, tok, id, name, FQ_TOK_UNUSED, err, err_len)))
            return rc;
        holes++;
    }
    if (holes)
        fq_log(FQ_LOG_WARN, "%s: %d token ids have no token; marked unused", path, holes);
    return 0;
}

/* Splits a merge entry ("a b" or ["a", "b"]) into a malloc'd "a b" and the offset of the space. */
static int hf_merge_text(const char *path, size_t i, const json_t *m, char **out, size_t *space,
                         char *err, size_t err_len)
{
    const char *s = json_string_value(m);
    const char *a = json_string_value(json_array_get(m, 0));
    const char *b = json_string_value(json_array_get(m, 1));
    *out = NULL;
    if (s) {
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
            return fq_err(err, err_len, FQ_EFORMAT, "%s: merge %zu ('%.64s') is not 'left right'",
                          path, i, s);
        *space = (size_t)(sp - s);
        *out = strdup(s);
    } else if (json_array_size(m) == 2 && a && b) {
        if (!*a || !*b || strchr(a, ' ') || strchr(b, ' '))
            return fq_err(err, err_len, FQ_EUNSUP,
                          "%s: merge %zu ['%.32s', '%.32s'] has an empty part or a space", path, i,
                          a, b);
        *space = strlen(a);
        size_t len = *space + 1 + strlen(b) + 1;
        if ((*out = malloc(len)))
            snprintf(*out, len, "%s %s", a, b);
    } else {
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: merge %zu is neither a string nor a pair of strings", path, i);
    }
    return *out ? 0 : fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
}

/* Checks that both parts of merge "a b" and their concatenation are in the vocabulary. */
static int hf_check_merge(const char *path, size_t i, char *text, size_t space, const json_t *vocab,
                          char *err, size_t err_len)
{
    text[space] = '\0';
    const char *left = text, *right = text + space + 1;
    size_t len = strlen(left) + strlen(right) + 1;
    char *joined = malloc(len);
    int rc = 0;
    if (!joined) {
        rc = fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    } else {
        snprintf(joined, len, "%s%s", left, right);
        const char *missing = !json_object_get(vocab, left)     ? left
                              : !json_object_get(vocab, right)  ? right
                              : !json_object_get(vocab, joined) ? joined
                                                                : NULL;
        if (missing)
            rc = fq_err(err, err_len, FQ_EFORMAT,
                        "%s: merge %zu ('%.32s %.32s'): '%.64s' is not in the vocabulary", path, i,
                        left, right, missing);
        free(joined);
    }
    text[space] = ' ';
    return rc;
}

static int hf_tok_merges(const char *path, const json_t *model, fq_tok_spec *tok, char *err,
                         size_t err_len)
{
    const json_t *merges = json_object_get(model, "merges");
    if (hf_is_null(merges))
        return 0;
    if (!json_is_array(merges))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: model.merges is not an array", path);
    size_t n = json_array_size(merges);
    if (n > INT32_MAX)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: too many merges", path);
    tok->merges = fq_calloc_array(n, sizeof *tok->merges);
    if (!tok->merges)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory for %zu merges", path, n);
    tok->n_merges = (int32_t)n; /* unfilled slots stay NULL for fq_tok_spec_free */
    const json_t *vocab = json_object_get(model, "vocab");
    for (size_t i = 0; i < n; i++) {
        size_t space = 0;
        int rc = hf_merge_text(path, i, json_array_get(merges, i), &tok->merges[i], &space, err,
                               err_len);
        if (!rc)
            rc = hf_check_merge(path, i, tok->merges[i], space, vocab, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

/* The TemplateProcessing post-processor, alone or inside a Sequence; NULL when none. */
static const json_t *hf_find_template(const json_t *pp)
{
    if (hf_is_type(pp, "TemplateProcessing"))
        return pp;
    size_t i;
    const json_t *step;
    json_array_foreach(json_object_get(pp, "processors"), i,
                       step) if (hf_is_type(step, "TemplateProcessing")) return step;
    return NULL;
}

static int32_t hf_find_token(const fq_tok_spec *tok, const char *text)
{
    for (int32_t i = 0; text && i < tok->n_tokens; i++)
        if (strcmp(tok->tokens[i], text) == 0)
            return i;
    return -1;
}

/* The id of the special token named by a template piece ({"SpecialToken": {"id": NAME}}), or -1
 * when the piece is not a special token. */
static int hf_template_piece(const char *path, const json_t *tp, const json_t *piece,
                             const fq_tok_spec *tok, int32_t *id, char *err, size_t err_len)
{
    *id = -1;
    const char *name =
        json_string_value(json_object_get(json_object_get(piece, "SpecialToken"), "id"));
    if (!name)
        return 0;
    const json_t *ids =
        json_object_get(json_object_get(json_object_get(tp, "special_tokens"), name), "ids");
    long long x;
    if (json_is_array(ids) && json_array_size(ids) != 1)
        return fq_err(err, err_len, FQ_EUNSUP,
                      "%s: post_processor special token %.64s maps to %zu ids (only 1 supported)",
                      path, name, json_array_size(ids));
    if (json_is_array(ids) && hf_int(json_array_get(ids, 0), &x))
        *id = x >= 0 && x < tok->n_tokens ? (int32_t)x : -2;
    else
        *id = hf_find_token(tok, name);
    if (*id < 0)
        return fq_err(err, err_len, FQ_EFORMAT,
                      "%s: post_processor special token %.64s is not in the vocabulary", path,
                      name);
    return 0;
}

/* add_bos / add_eos and their tokens from a TemplateProcessing "single" template. */
static int hf_tok_template(const char *path, const json_t *pp, fq_tok_spec *tok, int32_t *bos,
                           int32_t *eos, char *err, size_t err_len)
{
    *bos = *eos = -1;
    const json_t *tp = hf_find_template(pp);
    const json_t *single = json_object_get(tp, "single");
    size_t n = json_array_size(single);
    if (n == 0)
        return 0;
    int rc = hf_template_piece(path, tp, json_array_get(single, 0), tok, bos, err, err_len);
    if (!rc && n > 1)
        rc = hf_template_piece(path, tp, json_array_get(single, n - 1), tok, eos, err, err_len);
    tok->add_bos = *bos >= 0;
    tok->add_eos = *eos >= 0;
    return rc;
}

/* A tokenizer_config.json special token: a string or {"content": ...}. */
static const char *hf_token_content(const json_t *v)
{
    return json_is_object(v) ? json_string_value(json_object_get(v, "content"))
                             : json_string_value(v);
}

/* config.json's <key>: an integer or a list whose first element is used; -1 when absent. */
static int32_t hf_config_token(const json_t *cfg, const char *key)
{
    const json_t *v = json_object_get(cfg, key);
    if (json_is_array(v))
        v = json_array_get(v, 0);
    long long x;
    return hf_int(v, &x) && x >= INT32_MIN && x <= INT32_MAX ? (int32_t)x : -1;
}

/* bos/eos/pad: tokenizer_config.json's token text looked up in the vocab, else config.json ids. */
static int32_t hf_special_id(const char *dir, const fq_tok_spec *tok, const json_t *tc,
                             const json_t *cfg, const char *which)
{
    char key[32];
    snprintf(key, sizeof key, "%s_token", which);
    const char *text = hf_token_content(json_object_get(tc, key));
    int32_t id = hf_find_token(tok, text);
    if (text && id < 0)
        fq_log(FQ_LOG_WARN, "%s: tokenizer_config.json %s '%s' is not in the vocabulary", dir, key,
               text);
    if (id < 0) {
        snprintf(key, sizeof key, "%s_token_id", which);
        id = hf_config_token(cfg, key);
    }
    return id;
}

static int hf_tok_specials(const char *dir, const json_t *tj, const json_t *tc, const json_t *cfg,
                           fq_tok_spec *tok, char *err, size_t err_len)
{
    int32_t tmpl_bos, tmpl_eos;
    int rc = hf_tok_template(dir, json_object_get(tj, "post_processor"), tok, &tmpl_bos, &tmpl_eos,
                             err, err_len);
    if (rc)
        return rc;
    tok->bos_id = hf_special_id(dir, tok, tc, cfg, "bos");
    tok->eos_id = hf_special_id(dir, tok, tc, cfg, "eos");
    tok->pad_id = hf_special_id(dir, tok, tc, cfg, "pad");
    if (tmpl_bos >= 0 && tok->bos_id >= 0 && tmpl_bos != tok->bos_id)
        fq_log(FQ_LOG_WARN, "%s: post_processor adds token %d but bos is %d; using %d", dir,
               tmpl_bos, tok->bos_id, tmpl_bos);
    if (tmpl_bos >= 0)
        tok->bos_id = tmpl_bos;
    if (tok->eos_id < 0)
        tok->eos_id = tmpl_eos;
    const struct {
        const char *name;
        int32_t id;
    } ids[] = {{"bos", tok->bos_id}, {"eos", tok->eos_id}, {"pad", tok->pad_id}};
    for (size_t i = 0; i < 3; i++)
        if (ids[i].id < -1 || ids[i].id >= tok->n_tokens)
            return fq_err(err, err_len, FQ_EFORMAT,
                          "%s: %s token id %d is outside the %d-token vocabulary", dir, ids[i].name,
                          ids[i].id, tok->n_tokens);
    return 0;
}

/* tokenizer_config.json's chat_template (a string, or a list of {name, template} from which
 * "default" is taken), else chat_template.jinja (what transformers 5 writes). */
static int hf_tok_chat_template(const char *dir, const json_t *tc, fq_tok_spec *tok, char *err,
                                size_t err_len)
{
    const json_t *v = json_object_get(tc, "chat_template");
    const char *text = json_string_value(v);
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item)
    {
        const char *name = json_string_value(json_object_get(item, "name"));
        if (name && strcmp(name, "default") == 0)
            text = json_string_value(json_object_get(item, "template"));
    }
    if (json_is_array(v) && !text)
        fq_log(FQ_LOG_WARN, "%s: tokenizer_config.json has no \"default\" chat template", dir);
    if (text) {
        tok->chat_template = strdup(text);
        return tok->chat_template ? 0 : fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", dir);
    }
    char path[HF_PATH_MAX];
    int rc = hf_join(path, sizeof path, dir, "chat_template.jinja", err, err_len);
    if (rc || !hf_is_file(path))
        return rc;
    return hf_read_text(path, &tok->chat_template, err, err_len);
}

/* Vocabulary, merges and pre-tokenizer from a parsed tokenizer.json. */
static int hf_tok_from_json(const char *path, const json_t *tj, fq_tok_spec *tok, char *err,
                            size_t err_len)
{
    const json_t *norm = json_object_get(tj, "normalizer");
    if (!hf_is_null(norm))
        return fq_err(err, err_len, FQ_EUNSUP, "%s: normalizer %s is not supported", path,
                      hf_type(norm) ? hf_type(norm) : "(untyped)");
    const json_t *model = json_object_get(tj, "model");
    if (!json_is_object(model))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: model is missing", path);
    int rc = hf_check_bpe(path, model, err, err_len);
    if (!rc)
        rc = hf_tok_pre(path, json_object_get(tj, "pre_tokenizer"), tok->pre, sizeof tok->pre, err,
                        err_len);
    if (rc)
        return rc;
    snprintf(tok->model, sizeof tok->model, "gpt2");
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *added = json_object_get(tj, "added_tokens");
    if (!json_is_object(vocab))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: model.vocab is missing or not an object",
                      path);
    if (!hf_is_null(added) && !json_is_array(added))
        return fq_err(err, err_len, FQ_EFORMAT, "%s: added_tokens is not an array", path);
    tok->ignore_merges = hf_flag(model, "ignore_merges", false);
    rc = hf_tok_vocab(path, vocab, added, tok, err, err_len);
    return rc ? rc : hf_tok_merges(path, model, tok, err, err_len);
}

/* Reads the three JSON files the tokenizer needs; the two beside tokenizer.json are optional. */
static int hf_tok_files(const char *dir, json_t **tj, json_t **tc, json_t **cfg, char *tj_path,
                        char *err, size_t err_len)
{
    char path[HF_PATH_MAX];
    int rc = hf_join(tj_path, HF_PATH_MAX, dir, "tokenizer.json", err, err_len);
    if (!rc)
        rc = hf_read_json(tj_path, false, tj, err, err_len);
    if (!rc && !(rc = hf_join(path, sizeof path, dir, "tokenizer_config.json", err, err_len)))
        rc = hf_read_json(path, true, tc, err, err_len);
    if (!rc && !(rc = hf_join(path, sizeof path, dir, "config.json", err, err_len)))
        rc = hf_read_json(path, true, cfg, err, err_len);
    return rc;
}

int fq_hf_load_tokenizer(const char *dir, fq_tok_spec *tok, char *err, size_t err_len)
{
    memset(tok, 0, sizeof *tok);
    tok->bos_id = tok->eos_id = tok->pad_id = -1;
    json_t *tj = NULL, *tc = NULL, *cfg = NULL;
    char path[HF_PATH_MAX];
    int rc = hf_tok_files(dir, &tj, &tc, &cfg, path, err, err_len);
    if (!rc)
        rc = hf_tok_from_json(path, tj, tok, err, err_len);
    if (!rc)
        rc = hf_tok_specials(dir, tj, tc, cfg, tok, err, err_len);
    if (!rc)
        rc = hf_tok_chat_template(dir, tc, tok, err, err_len);
    json_decref(tj);
    json_decref(tc);
    json_decref(cfg);
    if (rc)
        fq_tok_spec_free(tok);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* HF directory: weights                                                                          */
/* ---------------------------------------------------------------------------------------------- */

typedef struct hf_shards {
    int32_t n;
    char **names;       /* [n] file names inside the directory */
    fq_st_file **files; /* [n] open files */
    json_t *index;      /* model.safetensors.index.json, or NULL for a single model.safetensors */
} hf_shards;

static void hf_shards_close(hf_shards *s)
{
    for (int32_t i = 0; i < s->n; i++) {
        free(s->names[i]);
        fq_st_close(s->files[i]);
    }
    free(s->names);
    free(s->files);
    json_decref(s->index);
    memset(s, 0, sizeof *s);
}

static int hf_shard_add(hf_shards *s, const char *name, int32_t cap, char *err, size_t err_len)
{
    for (int32_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return 0;
    FQ_ASSERT(s->n < cap);
    if (!(s->names[s->n] = strdup(name)))
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", name);
    s->n++;
    return 0;
}

/* Collects the distinct shard names of the index's weight_map, in order of first appearance. */
static int hf_shards_from_index(const char *path, hf_shards *s, char *err, size_t err_len)
{
    const json_t *wm = json_object_get(s->index, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: weight_map is missing or empty", path);
    size_t cap = json_object_size(wm);
    if (cap > INT32_MAX)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: weight_map is too large", path);
    s->names = fq_calloc_array(cap, sizeof *s->names);
    s->files = fq_calloc_array(cap, sizeof *s->files);
    if (!s->names || !s->files)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)wm, key, v)
    {
        const char *file = json_string_value(v);
        if (!file || !*file || strchr(file, '/') || strcmp(file, "..") == 0 ||
            strcmp(file, ".") == 0)
            return fq_err(err, err_len, FQ_EFORMAT,
                          "%s: tensor %s: weight_map entry is not a file name in the directory",
                          path, key);
        int rc = hf_shard_add(s, file, (int32_t)cap, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

/* Opens model.safetensors, or every shard model.safetensors.index.json lists. */
static int hf_shards_open(const char *dir, hf_shards *s, char *err, size_t err_len)
{
    char index_path[HF_PATH_MAX], path[HF_PATH_MAX];
    int rc =
        hf_join(index_path, sizeof index_path, dir, "model.safetensors.index.json", err, err_len);
    if (!rc)
        rc = hf_read_json(index_path, true, &s->index, err, err_len);
    if (!rc && s->index) {
        rc = hf_shards_from_index(index_path, s, err, err_len);
    } else if (!rc) {
        s->names = calloc(1, sizeof *s->names);
        s->files = calloc(1, sizeof *s->files);
        if (!s->names || !s->files)
            return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", dir);
        rc = hf_shard_add(s, "model.safetensors", 1, err, err_len);
    }
    for (int32_t i = 0; !rc && i < s->n; i++) {
        rc = hf_join(path, sizeof path, dir, s->names[i], err, err_len);
        if (!rc && !hf_is_file(path))
            rc = s->index ? fq_err(err, err_len, FQ_ENOTFOUND,
                                   "%s: shard %s listed in model.safetensors.index.json is missing",
                                   dir, s->names[i])
                          : fq_err(err, err_len, FQ_ENOTFOUND,
                                   "%s: no model.safetensors or model.safetensors.index.json", dir);
        if (!rc)
            rc = fq_st_open(path, &s->files[i], err, err_len);
    }
    return rc;
}

typedef struct hf_name {
    const char *hf, *canon;
} hf_name;

static const hf_name hf_global_names[] = {
    {"model.embed_tokens.weight", "token_embd"},
    {"model.norm.weight", "output_norm"},
    {"lm_head.weight", "output"},
};

static const hf_name hf_layer_names[] = {
    {"input_layernorm.weight", "attn_norm"},    {"self_attn.q_proj.weight", "attn_q"},
    {"self_attn.k_proj.weight", "attn_k"},      {"self_attn.v_proj.weight", "attn_v"},
    {"self_attn.o_proj.weight", "attn_output"}, {"post_attention_layernorm.weight", "ffn_norm"},
    {"mlp.gate_proj.weight", "ffn_gate"},       {"mlp.up_proj.weight", "ffn_up"},
    {"mlp.down_proj.weight", "ffn_down"},
};

/* Maps an HF tensor name to its canonical name: 1 when mapped, 0 when not a tensor we use, or an
 * error (a layer index beyond the config). */
static int hf_canonical_name(const char *path, const char *hf, int32_t n_layer, char *out,
                             size_t cap, char *err, size_t err_len)
{
    for (size_t i = 0; i < sizeof hf_global_names / sizeof hf_global_names[0]; i++)
        if (strcmp(hf, hf_global_names[i].hf) == 0) {
            snprintf(out, cap, "%s", hf_global_names[i].canon);
            return 1;
        }
    static const char prefix[] = "model.layers.";
    if (strncmp(hf, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *p = hf + sizeof prefix - 1, *q = p;
    long long layer = 0;
    while (*q >= '0' && *q <= '9' && q - p < 12)
        layer = layer * 10 + (*q++ - '0');
    if (q == p || *q != '.')
        return 0;
    for (size_t i = 0; i < sizeof hf_layer_names / sizeof hf_layer_names[0]; i++) {
        if (strcmp(q + 1, hf_layer_names[i].hf) != 0)
            continue;
        if (layer >= n_layer)
            return fq_err(err, err_len, FQ_EFORMAT,
                          "%s: tensor %s: layer %lld is beyond num_hidden_layers %d", path, hf,
                          layer, n_layer);
        snprintf(out, cap, "blk.%lld.%s", layer, hf_layer_names[i].canon);
        return 1;
    }
    return 0;
}

static uint16_t hf_u16_le(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static float hf_f32_le(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Converts an F32/F16/BF16 tensor to a new fp32 fq_tensor (name left to the caller). */
static int hf_convert(const char *path, const fq_st_tensor *t, fq_tensor *dst, char *err,
                      size_t err_len)
{
    bool f32 = strcmp(t->dtype, "F32") == 0, f16 = strcmp(t->dtype, "F16") == 0;
    bool bf16 = strcmp(t->dtype, "BF16") == 0;
    if (!f32 && !f16 && !bf16)
        return fq_err(err, err_len, FQ_EUNSUP,
                      "%s: tensor %s: dtype %s is not supported (F32, F16 or BF16 only)", path,
                      t->name, t->dtype);
    if (t->n_dims < 1)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s is a scalar; expected 1 or 2 dims",
                      path, t->name);
    size_t n = t->n_bytes / (f32 ? 4 : 2);
    float *d = fq_malloc_array(n, sizeof *d);
    if (!d)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: tensor %s: out of memory for %zu values", path,
                      t->name, n);
    const uint8_t *b = t->data; /* any alignment: read byte by byte */
    if (f32)
        for (size_t i = 0; i < n; i++)
            d[i] = hf_f32_le(b + 4 * i);
    else if (f16)
        for (size_t i = 0; i < n; i++)
            d[i] = fq_f16_to_f32(hf_u16_le(b + 2 * i));
    else
        for (size_t i = 0; i < n; i++)
            d[i] = fq_bf16_to_f32(hf_u16_le(b + 2 * i));
    dst->n_dims = t->n_dims;
    memcpy(dst->shape, t->shape, sizeof dst->shape);
    dst->data = d;
    return 0;
}

static int32_t hf_tensor_index(const fq_ckpt *ck, const char *name)
{
    for (int32_t i = 0; i < ck->n_tensors; i++)
        if (strcmp(ck->tensors[i].name, name) == 0)
            return i;
    return -1;
}

/* Converts one shard tensor into ck->tensors when it maps to a canonical name; src[] records which
 * shard each checkpoint tensor came from. */
static int hf_take_tensor(const hf_shards *s, int32_t shard, const fq_st_tensor *t, fq_ckpt *ck,
                          int32_t *src, char *err, size_t err_len)
{
    char canon[FQ_TENSOR_NAME_MAX];
    char path[HF_PATH_MAX];
    int rc = hf_join(path, sizeof path, ck->path, s->names[shard], err, err_len);
    if (!rc)
        rc = hf_canonical_name(path, t->name, ck->cfg.n_layer, canon, sizeof canon, err, err_len);
    if (rc == 0)
        fq_log(FQ_LOG_DEBUG, "%s: ignoring tensor %s", path, t->name);
    if (rc <= 0)
        return rc;
    int32_t prev = hf_tensor_index(ck, canon);
    if (prev >= 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: tensor %s also appears in %s", path, t->name,
                      s->names[src[prev]]);
    fq_tensor *dst = &ck->tensors[ck->n_tensors];
    if ((rc = hf_convert(path, t, dst, err, err_len)))
        return rc;
    snprintf(dst->name, sizeof dst->name, "%s", canon);
    src[ck->n_tensors++] = shard;
    return 0;
}

/* Every weight_map entry we use must have come from the shard the index names. */
static int hf_check_index(const hf_shards *s, const fq_ckpt *ck, const int32_t *src, char *err,
                          size_t err_len)
{
    const char *key;
    const json_t *v;
    json_object_foreach(json_object_get(s->index, "weight_map"), key, v)
    {
        char canon[FQ_TENSOR_NAME_MAX];
        int rc =
            hf_canonical_name(ck->path, key, ck->cfg.n_layer, canon, sizeof canon, err, err_len);
        if (rc < 0)
            return rc;
        int32_t k = rc ? hf_tensor_index(ck, canon) : 0;
        if (rc && (k < 0 || strcmp(s->names[src[k]], json_string_value(v)) != 0))
            return fq_err(err, err_len, FQ_EFORMAT,
                          "%s: tensor %s is listed in shard %s but that shard does not hold it",
                          ck->path, key, json_string_value(v));
    }
    return 0;
}

/* Tied embeddings: drop a redundant lm_head, or tie when lm_head is absent. */
static void hf_resolve_tied(fq_ckpt *ck)
{
    int32_t out = hf_tensor_index(ck, "output");
    if (ck->cfg.tied_embeddings && out >= 0) {
        fq_log(FQ_LOG_DEBUG, "%s: tie_word_embeddings is true; ignoring lm_head.weight", ck->path);
        free(ck->tensors[out].data);
        memmove(&ck->tensors[out], &ck->tensors[out + 1],
                (size_t)(ck->n_tensors - out - 1) * sizeof *ck->tensors);
        ck->n_tensors--;
    } else if (!ck->cfg.tied_embeddings && out < 0) {
        fq_log(FQ_LOG_INFO,
               "%s: lm_head.weight is absent although tie_word_embeddings is false; using tied "
               "embeddings",
               ck->path);
        ck->cfg.tied_embeddings = true;
    }
}

static int hf_load_weights(fq_ckpt *ck, char *err, size_t err_len)
{
    hf_shards s = {0};
    int32_t *src = NULL;
    int rc = hf_shards_open(ck->path, &s, err, err_len);
    size_t cap = 0;
    for (int32_t i = 0; !rc && i < s.n; i++)
        cap += (size_t)fq_st_count(s.files[i]);
    if (!rc) {
        ck->tensors = fq_calloc_array(cap, sizeof *ck->tensors);
        src = fq_calloc_array(cap, sizeof *src);
        if (!ck->tensors || !src)
            rc =
                fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory for %zu tensors", ck->path, cap);
    }
    for (int32_t i = 0; !rc && i < s.n; i++)
        for (int32_t j = 0; !rc && j < fq_st_count(s.files[i]); j++)
            rc = hf_take_tensor(&s, i, fq_st_at(s.files[i], j), ck, src, err, err_len);
    if (!rc && s.index)
        rc = hf_check_index(&s, ck, src, err, err_len);
    if (!rc)
        hf_resolve_tied(ck);
    free(src);
    hf_shards_close(&s);
    return rc;
}

int fq_safetensors_load_dir(const char *dir, fq_ckpt **out, char *err, size_t err_len)
{
    *out = NULL;
    fq_ckpt *ck = calloc(1, sizeof *ck);
    if (!ck)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", dir);
    int rc = 0;
    if (strlen(dir) >= sizeof ck->path)
        rc = fq_err(err, err_len, FQ_EINVAL, "%s: path too long", dir);
    snprintf(ck->format, sizeof ck->format, "safetensors");
    snprintf(ck->path, sizeof ck->path, "%s", dir);
    if (!rc)
        rc = hf_read_config(dir, &ck->cfg, err, err_len);
    if (!rc)
        rc = fq_hf_load_tokenizer(dir, &ck->tok, err, err_len);
    if (!rc)
        rc = hf_load_weights(ck, err, err_len);
    if (!rc)
        rc = fq_ckpt_validate(ck, err, err_len);
    if (rc) {
        fq_ckpt_destroy(ck);
        return rc;
    }
    *out = ck;
    return 0;
}

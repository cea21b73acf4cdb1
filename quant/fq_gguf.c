/* fq_gguf.c — reads a LLaMA GGUF (v2/v3) file into an fq_ckpt: metadata, tensor infos, dequantized
 * tensors, config and tokenizer.
 *
 * Design: the file is mapped read-only and parsed in one forward pass through a bounds-checked
 * cursor (gguf_rd); every length and count is compared with the bytes left before anything is read
 * or allocated, so a corrupt or truncated file can only produce an error. The pass records where
 * each metadata value sits (gguf_kv, sorted by key for lookup) and each tensor's geometry
 * (gguf_tinfo); typed getters then read config and tokenizer keys from those positions. Tensor data
 * is decoded by a few threads pulling fixed-size chunks from a shared counter. Every message is one
 * line:
 * "<path>: key <key>: <problem>", "<path>: tensor <name>: <problem>" or "<path>: header:
 * <problem>".
 */
#include "fq_gguf.h"

#include "fq_base.h"
#include "fq_ggml.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT     32
#define GGUF_MAX_ALIGNMENT         (1u << 30)
#define GGUF_MAX_ARRAY_DEPTH       8  /* nested arrays deeper than this are called corrupt */
#define GGUF_MIN_TENSOR_INFO_BYTES 32 /* name length 8 + n_dims 4 + ne 8 + type 4 + offset 8 */
#define GGUF_MIN_KV_BYTES          13 /* key length 8 + type 4 + a 1-byte value */
#define DEQUANT_CHUNK_VALUES       (1 << 18) /* values per dequantization job */
#define DEQUANT_MAX_THREADS        16
#define CTX_MAX                    128 /* "key <name>" / "tensor <name>" context for messages */

/* Metadata value types, numbered as in GGUF. */
enum {
    GV_U8 = 0,
    GV_I8 = 1,
    GV_U16 = 2,
    GV_I16 = 3,
    GV_U32 = 4,
    GV_I32 = 5,
    GV_F32 = 6,
    GV_BOOL = 7,
    GV_STR = 8,
    GV_ARR = 9,
    GV_U64 = 10,
    GV_I64 = 11,
    GV_F64 = 12,
    GV_END
};

static const char *const vtype_names[GV_END] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

/* Bytes of one value of a fixed-size type; 0 for string and array. */
static const size_t vtype_sizes[GV_END] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static const char *vtype_name(uint32_t t)
{
    return t < GV_END ? vtype_names[t] : "unknown";
}

/* A string inside the mapping: not NUL-terminated. */
typedef struct {
    const char *p;
    size_t len;
} gguf_str;

typedef struct {
    gguf_str key;
    uint32_t type;
    size_t pos; /* file offset of the value (for an array: of its element type) */
} gguf_kv;

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[FQ_TENSOR_MAX_DIMS]; /* GGUF order: ne[0] innermost */
    uint32_t type;                  /* fq_ggml_type */
    uint64_t offset;                /* from the start of the data section */
    int64_t numel;
    size_t nbytes;
} gguf_tinfo;

/* One parse of one file; errors go to err. */
typedef struct {
    const char *path;
    char *err;
    size_t err_len;
    int fd;
    const uint8_t *map; /* [size] or NULL when size is 0 */
    size_t size;
    size_t n_kv;
    gguf_kv *kv; /* [n_kv] sorted by key */
    size_t n_tensors;
    gguf_tinfo *ti; /* [n_tensors] in file order */
    size_t alignment;
    size_t data_pos; /* start of the data section */
} gguf_file;

/* A bounds-checked read position; ctx names what is being read, for messages. */
typedef struct {
    gguf_file *f;
    size_t pos;
    char ctx[CTX_MAX];
} gguf_rd;

/* ---- messages ---- */

/* Copies s into dst (cap bytes) for a message: non-printable bytes become '?', long names are cut
 * with "...". */
static void printable(char *dst, size_t cap, const char *s, size_t len)
{
    size_t n = 0, max = cap - 1;
    bool cut = len > max;
    if (cut)
        max = cap > 4 ? cap - 4 : 0;
    for (; n < len && n < max; n++) {
        unsigned char ch = (unsigned char)s[n];
        dst[n] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (cut && cap > 4) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
}

static void rd_set_ctx(gguf_rd *r, const char *kind, gguf_str name)
{
    char buf[CTX_MAX - 8];
    printable(buf, sizeof buf, name.p, name.len);
    snprintf(r->ctx, sizeof r->ctx, "%s %s", kind, buf);
}

/* "<path>: <ctx>: <problem>" */
static int ctx_errv(gguf_file *f, const char *ctx, int code, const char *fmt, va_list ap)
{
    char problem[384];
    vsnprintf(problem, sizeof problem, fmt, ap);
    return fq_err(f->err, f->err_len, code, "%s: %s: %s", f->path, ctx, problem);
}

__attribute__((format(printf, 3, 4))) static int rd_fail(gguf_rd *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ctx_errv(r->f, r->ctx, code, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 4, 5))) static int key_fail(gguf_file *f, const char *key, int code,
                                                          const char *fmt, ...)
{
    char ctx[CTX_MAX];
    snprintf(ctx, sizeof ctx, "key %s", key);
    va_list ap;
    va_start(ap, fmt);
    int rc = ctx_errv(f, ctx, code, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 4, 5))) static int tensor_fail(gguf_file *f, gguf_str name, int code,
                                                             const char *fmt, ...)
{
    gguf_rd r = {.f = f};
    rd_set_ctx(&r, "tensor", name);
    va_list ap;
    va_start(ap, fmt);
    int rc = ctx_errv(f, r.ctx, code, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- the cursor ---- */

static int rd_need(gguf_rd *r, size_t n, const char *what)
{
    if (n > r->f->size - r->pos)
        return rd_fail(r, FQ_EFORMAT,
                       "truncated: %s needs %zu bytes at offset %zu but the file ends at %zu", what,
                       n, r->pos, r->f->size);
    return 0;
}

static uint64_t le_bytes(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Reads an n-byte (1, 2, 4 or 8) little-endian unsigned value. */
static int rd_uint(gguf_rd *r, size_t n, uint64_t *v, const char *what)
{
    int rc = rd_need(r, n, what);
    if (rc)
        return rc;
    *v = le_bytes(r->f->map + r->pos, n);
    r->pos += n;
    return 0;
}

static int rd_u32(gguf_rd *r, uint32_t *v, const char *what)
{
    uint64_t x;
    int rc = rd_uint(r, 4, &x, what);
    *v = (uint32_t)x;
    return rc;
}

static int rd_u64(gguf_rd *r, uint64_t *v, const char *what)
{
    return rd_uint(r, 8, v, what);
}

/* A GGUF string: uint64 length, then the bytes. */
static int rd_str(gguf_rd *r, gguf_str *s, const char *what)
{
    uint64_t len;
    int rc = rd_u64(r, &len, what);
    if (rc)
        return rc;
    if (len > r->f->size - r->pos)
        return rd_fail(r, FQ_EFORMAT,
                       "%s length %llu exceeds the %zu bytes left in the file (offset %zu)", what,
                       (unsigned long long)len, r->f->size - r->pos, r->pos);
    s->p = (const char *)r->f->map + r->pos;
    s->len = (size_t)len;
    r->pos += (size_t)len;
    return 0;
}

static bool str_eq(gguf_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.p, c, s.len) == 0;
}

/* ---- metadata ---- */

static int skip_value(gguf_rd *r, uint32_t type, int depth);

/* Skips an array value: element type, count, elements. */
static int skip_array(gguf_rd *r, int depth)
{
    uint32_t et;
    uint64_t count;
    int rc;
    if ((rc = rd_u32(r, &et, "array element type")) || (rc = rd_u64(r, &count, "array count")))
        return rc;
    if (et >= GV_END)
        return rd_fail(r, FQ_EFORMAT, "array element type %u is not a GGUF value type", et);
    if (et == GV_ARR && depth + 1 >= GGUF_MAX_ARRAY_DEPTH)
        return rd_fail(r, FQ_EFORMAT, "arrays nested deeper than %d levels", GGUF_MAX_ARRAY_DEPTH);
    /* The smallest encoding of one element bounds the count before any loop runs. */
    size_t min_bytes = et == GV_STR ? 8 : et == GV_ARR ? 12 : vtype_sizes[et];
    size_t left = r->f->size - r->pos;
    if (count > left / min_bytes)
        return rd_fail(r, FQ_EFORMAT,
                       "array of %llu %s values cannot fit in the %zu bytes left in the file",
                       (unsigned long long)count, vtype_name(et), left);
    if (vtype_sizes[et]) {
        r->pos += (size_t)count * vtype_sizes[et];
        return 0;
    }
    for (uint64_t i = 0; i < count; i++)
        if ((rc = skip_value(r, et, depth + 1)))
            return rc;
    return 0;
}

static int skip_value(gguf_rd *r, uint32_t type, int depth)
{
    if (type == GV_STR) {
        gguf_str s;
        return rd_str(r, &s, "string");
    }
    if (type == GV_ARR)
        return skip_array(r, depth);
    int rc = rd_need(r, vtype_sizes[type], vtype_names[type]);
    if (!rc)
        r->pos += vtype_sizes[type];
    return rc;
}

static int str_cmp(gguf_str a, gguf_str b)
{
    int c = memcmp(a.p, b.p, a.len < b.len ? a.len : b.len);
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int kv_cmp(const void *a, const void *b)
{
    return str_cmp(((const gguf_kv *)a)->key, ((const gguf_kv *)b)->key);
}

static int parse_kvs(gguf_file *f, gguf_rd *r)
{
    for (size_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        snprintf(r->ctx, sizeof r->ctx, "key #%zu", i);
        int rc = rd_str(r, &kv->key, "key name");
        if (rc)
            return rc;
        rd_set_ctx(r, "key", kv->key);
        if ((rc = rd_u32(r, &kv->type, "value type")))
            return rc;
        if (kv->type >= GV_END)
            return rd_fail(r, FQ_EFORMAT, "value type %u is not a GGUF value type", kv->type);
        kv->pos = r->pos;
        if ((rc = skip_value(r, kv->type, 0)))
            return rc;
    }
    qsort(f->kv, f->n_kv, sizeof *f->kv, kv_cmp);
    for (size_t i = 1; i < f->n_kv; i++) {
        if (str_cmp(f->kv[i - 1].key, f->kv[i].key) == 0) {
            rd_set_ctx(r, "key", f->kv[i].key);
            return rd_fail(r, FQ_EFORMAT, "appears more than once");
        }
    }
    return 0;
}

static const gguf_kv *kv_find(const gguf_file *f, const char *key)
{
    gguf_kv probe = {.key = {key, strlen(key)}};
    return f->n_kv ? bsearch(&probe, f->kv, f->n_kv, sizeof *f->kv, kv_cmp) : NULL;
}

/* A cursor at the value of kv, with the key as context. */
static gguf_rd kv_reader(gguf_file *f, const gguf_kv *kv)
{
    gguf_rd r = {.f = f, .pos = kv->pos};
    rd_set_ctx(&r, "key", kv->key);
    return r;
}

static bool vtype_is_int(uint32_t t)
{
    return t <= GV_I32 || t == GV_U64 || t == GV_I64;
}

/* Reads an integer value of any integer type as int64 (uint64 above INT64_MAX clamps). */
static int rd_int_value(gguf_rd *r, uint32_t type, int64_t *out)
{
    uint64_t u;
    int rc = rd_uint(r, vtype_sizes[type], &u, vtype_names[type]);
    if (rc)
        return rc;
    switch (type) {
    case GV_I8:
        *out = (int8_t)u;
        break;
    case GV_I16:
        *out = (int16_t)u;
        break;
    case GV_I32:
        *out = (int32_t)u;
        break;
    case GV_I64:
        *out = (int64_t)u;
        break;
    default:
        *out = u > INT64_MAX ? INT64_MAX : (int64_t)u;
    }
    return 0;
}

/* The key's entry, or NULL; FQ_ENOTFOUND when required and absent, FQ_EFORMAT when its type is not
 * `type` (or any integer type, when type is GV_U32 — writers differ in the integer width). */
static int kv_lookup(gguf_file *f, const char *key, bool required, uint32_t type,
                     const gguf_kv **out)
{
    const gguf_kv *kv = kv_find(f, key);
    *out = kv;
    if (!kv)
        return required ? key_fail(f, key, FQ_ENOTFOUND, "required key is missing") : 0;
    bool ok = type == GV_U32   ? vtype_is_int(kv->type)
              : type == GV_F32 ? kv->type == GV_F32 || kv->type == GV_F64
                               : kv->type == type;
    if (!ok)
        return key_fail(f, key, FQ_EFORMAT, "has type %s, expected %s", vtype_name(kv->type),
                        type == GV_U32 ? "an integer" : vtype_name(type));
    return 0;
}

/* An integer key in [lo, hi]; *out is left as is when the key is absent and not required. */
static int get_int(gguf_file *f, const char *key, bool required, int64_t lo, int64_t hi,
                   int64_t *out)
{
    const gguf_kv *kv;
    int rc = kv_lookup(f, key, required, GV_U32, &kv);
    if (rc || !kv)
        return rc;
    gguf_rd r = kv_reader(f, kv);
    int64_t v;
    if ((rc = rd_int_value(&r, kv->type, &v)))
        return rc;
    if (v < lo || v > hi)
        return key_fail(f, key, FQ_EFORMAT, "value %lld is outside [%lld, %lld]", (long long)v,
                        (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

static int get_i32(gguf_file *f, const char *key, bool required, int32_t lo, int32_t *out)
{
    int64_t v = *out;
    int rc = get_int(f, key, required, lo, INT32_MAX, &v);
    *out = (int32_t)v;
    return rc;
}

/* A float32/float64 key; *out is left as is when absent and not required. */
static int get_float(gguf_file *f, const char *key, bool required, float *out)
{
    const gguf_kv *kv;
    int rc = kv_lookup(f, key, required, GV_F32, &kv);
    if (rc || !kv)
        return rc;
    gguf_rd r = kv_reader(f, kv);
    uint64_t u;
    if ((rc = rd_uint(&r, vtype_sizes[kv->type], &u, vtype_names[kv->type])))
        return rc;
    if (kv->type == GV_F32) {
        uint32_t u32 = (uint32_t)u;
        memcpy(out, &u32, sizeof *out);
    } else {
        double d;
        memcpy(&d, &u, sizeof d);
        *out = (float)d;
    }
    return 0;
}

static int get_bool(gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv;
    int rc = kv_lookup(f, key, false, GV_BOOL, &kv);
    if (rc || !kv)
        return rc;
    gguf_rd r = kv_reader(f, kv);
    uint64_t u;
    if ((rc = rd_uint(&r, 1, &u, "bool")))
        return rc;
    *out = u != 0;
    return 0;
}

/* A string key; found is false when absent and not required. */
static int get_str(gguf_file *f, const char *key, bool required, gguf_str *out, bool *found)
{
    const gguf_kv *kv;
    *found = false;
    int rc = kv_lookup(f, key, required, GV_STR, &kv);
    if (rc || !kv)
        return rc;
    gguf_rd r = kv_reader(f, kv);
    if ((rc = rd_str(&r, out, "string")))
        return rc;
    *found = true;
    return 0;
}

/* An array key whose elements have type et: a cursor at the first element and the count. found is
 * false when absent and not required. */
static int get_array(gguf_file *f, const char *key, bool required, uint32_t et, gguf_rd *r,
                     uint64_t *count, bool *found)
{
    const gguf_kv *kv;
    *found = false;
    int rc = kv_lookup(f, key, required, GV_ARR, &kv);
    if (rc || !kv)
        return rc;
    *r = kv_reader(f, kv);
    uint32_t got;
    if ((rc = rd_u32(r, &got, "array element type")) || (rc = rd_u64(r, count, "array count")))
        return rc;
    if (got != et)
        return key_fail(f, key, FQ_EFORMAT, "is an array of %s, expected %s", vtype_name(got),
                        vtype_name(et));
    *found = true;
    return 0;
}

/* ---- file and tensor infos ---- */

static int parse_header(gguf_file *f, gguf_rd *r, uint64_t *n_tensors, uint64_t *n_kv)
{
    snprintf(r->ctx, sizeof r->ctx, "header");
    int rc = rd_need(r, 4, "magic");
    if (rc)
        return rc;
    if (memcmp(f->map, "GGUF", 4) != 0)
        return rd_fail(r, FQ_EFORMAT, "not a GGUF file (magic is not \"GGUF\")");
    r->pos = 4;
    uint32_t version;
    if ((rc = rd_u32(r, &version, "version")))
        return rc;
    if (version == 0x02000000u || version == 0x03000000u)
        return rd_fail(r, FQ_EUNSUP, "big-endian GGUF files are not supported");
    if (version != 2 && version != 3)
        return rd_fail(r, version == 0 ? FQ_EFORMAT : FQ_EUNSUP,
                       "GGUF version %u is not supported (versions 2 and 3 are)", version);
    if ((rc = rd_u64(r, n_tensors, "tensor count")) || (rc = rd_u64(r, n_kv, "metadata count")))
        return rc;
    size_t left = f->size - r->pos;
    if (*n_kv > left / GGUF_MIN_KV_BYTES)
        return rd_fail(r, FQ_EFORMAT,
                       "%llu metadata keys cannot fit in the %zu bytes left (truncated or corrupt)",
                       (unsigned long long)*n_kv, left);
    if (*n_tensors > left / GGUF_MIN_TENSOR_INFO_BYTES)
        return rd_fail(r, FQ_EFORMAT,
                       "%llu tensor infos cannot fit in the %zu bytes left (truncated or corrupt)",
                       (unsigned long long)*n_tensors, left);
    return 0;
}

static int parse_alignment(gguf_file *f)
{
    int64_t a = GGUF_DEFAULT_ALIGNMENT;
    int rc = get_int(f, "general.alignment", false, 1, GGUF_MAX_ALIGNMENT, &a);
    if (rc)
        return rc;
    if ((a & (a - 1)) != 0)
        return key_fail(f, "general.alignment", FQ_EFORMAT, "%lld is not a power of two",
                        (long long)a);
    f->alignment = (size_t)a;
    return 0;
}

/* Reads n_dims and ne[], checking 1..4 dims, positive sizes and an element count whose fp32 copy
 * fits in memory arithmetic. */
static int parse_dims(gguf_rd *r, gguf_tinfo *t)
{
    int rc = rd_u32(r, &t->n_dims, "n_dims");
    if (rc)
        return rc;
    if (t->n_dims < 1 || t->n_dims > FQ_TENSOR_MAX_DIMS)
        return rd_fail(r, FQ_EFORMAT, "has %u dimensions (1 to %d allowed)", t->n_dims,
                       FQ_TENSOR_MAX_DIMS);
    const int64_t max_numel =
        (int64_t)(SIZE_MAX / sizeof(float) < INT64_MAX / 2 ? SIZE_MAX / sizeof(float)
                                                           : INT64_MAX / 2);
    t->numel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if ((rc = rd_u64(r, &ne, "dimension")))
            return rc;
        if (ne == 0 || ne > (uint64_t)max_numel)
            return rd_fail(r, FQ_EFORMAT, "dimension %u has size %llu", d, (unsigned long long)ne);
        if ((int64_t)ne > max_numel / t->numel)
            return rd_fail(r, FQ_EFORMAT, "element count overflows (dimension %u is %llu)", d,
                           (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        t->numel *= (int64_t)ne;
    }
    return 0;
}

/* Reads the type and offset and derives the byte size. */
static int parse_type_offset(gguf_file *f, gguf_rd *r, gguf_tinfo *t)
{
    int rc = rd_u32(r, &t->type, "type");
    if (rc)
        return rc;
    if (!fq_ggml_can_dequant((int)t->type))
        return rd_fail(r, FQ_EUNSUP,
                       "type %u (%s) is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, "
                       "Q5_1, Q4_K, Q5_K and Q6_K are)",
                       t->type, fq_ggml_type_name((int)t->type));
    int64_t bs = fq_ggml_block_size((int)t->type);
    if (t->ne[0] % bs != 0)
        return rd_fail(r, FQ_EFORMAT, "row of %lld values is not a multiple of the %s block (%lld)",
                       (long long)t->ne[0], fq_ggml_type_name((int)t->type), (long long)bs);
    if (fq_ggml_nbytes((int)t->type, t->numel, &t->nbytes) != 0)
        return rd_fail(r, FQ_EFORMAT, "byte size overflows");
    if ((rc = rd_u64(r, &t->offset, "data offset")))
        return rc;
    if (t->offset % f->alignment != 0)
        return rd_fail(r, FQ_EFORMAT, "data offset %llu is not a multiple of the alignment %zu",
                       (unsigned long long)t->offset, f->alignment);
    return 0;
}

static int parse_tensor_info(gguf_file *f, gguf_rd *r, size_t i, gguf_tinfo *t)
{
    snprintf(r->ctx, sizeof r->ctx, "tensor #%zu", i);
    int rc = rd_str(r, &t->name, "tensor name");
    if (rc)
        return rc;
    rd_set_ctx(r, "tensor", t->name);
    if (t->name.len == 0 || t->name.len >= FQ_TENSOR_NAME_MAX)
        return rd_fail(r, FQ_EFORMAT, "name length %zu is outside 1..%d", t->name.len,
                       FQ_TENSOR_NAME_MAX - 1);
    if (memchr(t->name.p, '\0', t->name.len))
        return rd_fail(r, FQ_EFORMAT, "name contains a NUL byte");
    if ((rc = parse_dims(r, t)))
        return rc;
    return parse_type_offset(f, r, t);
}

/* Checks that every tensor's bytes lie inside the file. */
static int check_tensor_ranges(gguf_file *f)
{
    for (size_t i = 0; i < f->n_tensors; i++) {
        const gguf_tinfo *t = &f->ti[i];
        size_t size = f->size;
        bool inside = f->data_pos <= size && t->offset <= size - f->data_pos &&
                      t->nbytes <= size - f->data_pos - (size_t)t->offset;
        if (!inside)
            return tensor_fail(f, t->name, FQ_EFORMAT,
                               "data (%zu bytes at offset %llu of the data section, which starts "
                               "at %zu) lies beyond the end of the file (%zu bytes)",
                               t->nbytes, (unsigned long long)t->offset, f->data_pos, size);
    }
    return 0;
}

static int parse_tensor_infos(gguf_file *f, gguf_rd *r)
{
    for (size_t i = 0; i < f->n_tensors; i++) {
        int rc = parse_tensor_info(f, r, i, &f->ti[i]);
        if (rc)
            return rc;
    }
    size_t pad = (f->alignment - r->pos % f->alignment) % f->alignment;
    f->data_pos = r->pos + pad;
    return check_tensor_ranges(f);
}

static int map_file(gguf_file *f)
{
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return fq_err(f->err, f->err_len, FQ_EIO, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode))
        return fq_err(f->err, f->err_len, FQ_EIO, "%s: not a regular file", f->path);
    if ((uint64_t)st.st_size > SIZE_MAX)
        return fq_err(f->err, f->err_len, FQ_EUNSUP, "%s: file too large", f->path);
    f->size = (size_t)st.st_size;
    if (f->size == 0)
        return 0;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (m == MAP_FAILED)
        return fq_err(f->err, f->err_len, FQ_EIO, "%s: cannot map: %s", f->path, strerror(errno));
    f->map = m;
    return 0;
}

static void gguf_close(gguf_file *f)
{
    if (f->map)
        munmap((void *)f->map, f->size);
    if (f->fd >= 0)
        close(f->fd);
    free(f->kv);
    free(f->ti);
}

/* Maps and parses the header, all metadata and (when want_tensors) the tensor infos. On failure the
 * caller still calls gguf_close. */
static int gguf_open(gguf_file *f, const char *path, bool want_tensors, char *err, size_t err_len)
{
    *f = (gguf_file){.path = path, .err = err, .err_len = err_len, .fd = -1};
    int rc = map_file(f);
    if (rc)
        return rc;
    gguf_rd r = {.f = f};
    uint64_t n_tensors, n_kv;
    if ((rc = parse_header(f, &r, &n_tensors, &n_kv)))
        return rc;
    f->n_kv = (size_t)n_kv;
    f->kv = fq_calloc_array(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    if (!f->kv)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory for metadata", path);
    if ((rc = parse_kvs(f, &r)) || (rc = parse_alignment(f)) || !want_tensors)
        return rc;
    f->n_tensors = (size_t)n_tensors;
    f->ti = fq_calloc_array(f->n_tensors ? f->n_tensors : 1, sizeof *f->ti);
    if (!f->ti)
        return fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory for tensor infos", path);
    return parse_tensor_infos(f, &r);
}

/* ---- config ---- */

static const gguf_tinfo *tinfo_find(const gguf_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (str_eq(f->ti[i].name, name))
            return &f->ti[i];
    return NULL;
}

static int parse_arch(gguf_file *f, fq_config *c)
{
    gguf_str arch;
    bool found;
    int rc = get_str(f, "general.architecture", true, &arch, &found);
    if (rc)
        return rc;
    if (!str_eq(arch, "llama")) {
        char buf[40];
        printable(buf, sizeof buf, arch.p, arch.len);
        return key_fail(f, "general.architecture", FQ_EUNSUP,
                        "architecture '%s' is not supported (llama only)", buf);
    }
    snprintf(c->arch, sizeof c->arch, "llama");
    return 0;
}

/* Head geometry: head_dim from key_length or n_embd / n_head; value_length and the rotary
 * dimension must match it, since the runtime supports neither. */
static int parse_head_dim(gguf_file *f, fq_config *c)
{
    int32_t head_dim = 0, v_dim = 0, n_rot = 0;
    int rc;
    if ((rc = get_i32(f, "llama.attention.key_length", false, 1, &head_dim)))
        return rc;
    if (head_dim == 0) {
        if (c->n_embd % c->n_head != 0)
            return key_fail(f, "llama.attention.head_count", FQ_EFORMAT,
                            "embedding length %d is not a multiple of %d heads", c->n_embd,
                            c->n_head);
        head_dim = c->n_embd / c->n_head;
    }
    c->head_dim = head_dim;
    if ((rc = get_i32(f, "llama.attention.value_length", false, 1, &v_dim)))
        return rc;
    if (v_dim && v_dim != head_dim)
        return key_fail(f, "llama.attention.value_length", FQ_EUNSUP,
                        "value head size %d differs from key head size %d", v_dim, head_dim);
    if ((rc = get_i32(f, "llama.rope.dimension_count", false, 1, &n_rot)))
        return rc;
    if (n_rot && n_rot != head_dim)
        return key_fail(f, "llama.rope.dimension_count", FQ_EUNSUP,
                        "partial rotary embedding (%d of %d dims) is not supported", n_rot,
                        head_dim);
    return 0;
}

static int parse_rope_scaling(gguf_file *f)
{
    gguf_str s;
    bool found;
    int rc = get_str(f, "llama.rope.scaling.type", false, &s, &found);
    if (rc || !found || str_eq(s, "none"))
        return rc;
    char buf[40];
    printable(buf, sizeof buf, s.p, s.len);
    return key_fail(f, "llama.rope.scaling.type", FQ_EUNSUP, "RoPE scaling '%s' is not supported",
                    buf);
}

/* n_vocab from the rows of token_embd, cross-checked with llama.vocab_size when both exist. */
static int parse_vocab(gguf_file *f, fq_config *c)
{
    int32_t n_vocab = 0;
    int rc = get_i32(f, "llama.vocab_size", false, 1, &n_vocab);
    if (rc)
        return rc;
    const gguf_tinfo *te = tinfo_find(f, "token_embd.weight");
    if (te && te->n_dims == 2) {
        if (te->ne[1] > INT32_MAX || (n_vocab && n_vocab != te->ne[1]))
            return key_fail(f, "llama.vocab_size", FQ_EFORMAT,
                            "vocab size %d differs from the %lld rows of token_embd.weight",
                            n_vocab, (long long)te->ne[1]);
        n_vocab = (int32_t)te->ne[1];
    }
    c->n_vocab = n_vocab;
    return 0;
}

static int parse_config(gguf_file *f, fq_config *c)
{
    memset(c, 0, sizeof *c);
    c->rope_theta = 10000.0f;
    c->rope_style = FQ_ROPE_INTERLEAVED;
    int rc;
    if ((rc = parse_arch(f, c)) || (rc = get_i32(f, "llama.block_count", true, 1, &c->n_layer)) ||
        (rc = get_i32(f, "llama.embedding_length", true, 1, &c->n_embd)) ||
        (rc = get_i32(f, "llama.feed_forward_length", true, 1, &c->n_ff)) ||
        (rc = get_i32(f, "llama.attention.head_count", true, 1, &c->n_head)) ||
        (rc = get_i32(f, "llama.context_length", true, 1, &c->n_ctx)))
        return rc;
    c->n_head_kv = c->n_head;
    if ((rc = get_i32(f, "llama.attention.head_count_kv", false, 1, &c->n_head_kv)) ||
        (rc = get_float(f, "llama.rope.freq_base", false, &c->rope_theta)) ||
        (rc = get_float(f, "llama.attention.layer_norm_rms_epsilon", true, &c->norm_eps)) ||
        (rc = parse_head_dim(f, c)) || (rc = parse_rope_scaling(f)) || (rc = parse_vocab(f, c)))
        return rc;
    c->tied_embeddings = tinfo_find(f, "output.weight") == NULL;
    return 0;
}

/* ---- tokenizer ---- */

/* A malloc'd NUL-terminated copy of s; NUL bytes inside are refused. */
static int dup_str(gguf_rd *r, gguf_str s, const char *what, char **out)
{
    if (memchr(s.p, '\0', s.len))
        return rd_fail(r, FQ_EFORMAT, "%s contains a NUL byte", what);
    char *p = malloc(s.len + 1);
    if (!p)
        return rd_fail(r, FQ_ENOMEM, "out of memory for %s", what);
    memcpy(p, s.p, s.len);
    p[s.len] = '\0';
    *out = p;
    return 0;
}

/* Reads a string array into (*out)[count], setting *n as entries are allocated so that
 * fq_tok_spec_free can free a partial result. */
static int read_str_array(gguf_rd *r, uint64_t count, char ***out, int32_t *n)
{
    if (count > INT32_MAX)
        return rd_fail(r, FQ_EFORMAT, "%llu entries is too many", (unsigned long long)count);
    *out = fq_calloc_array(count ? (size_t)count : 1, sizeof **out);
    if (!*out)
        return rd_fail(r, FQ_ENOMEM, "out of memory for %llu strings", (unsigned long long)count);
    *n = (int32_t)count;
    for (int32_t i = 0; i < *n; i++) {
        gguf_str s;
        char what[32];
        snprintf(what, sizeof what, "entry %d", i);
        int rc = rd_str(r, &s, what);
        if (rc || (rc = dup_str(r, s, what, &(*out)[i])))
            return rc;
    }
    return 0;
}

static int parse_tok_tokens(gguf_file *f, fq_tok_spec *tok)
{
    gguf_rd r;
    uint64_t count;
    bool found;
    int rc = get_array(f, "tokenizer.ggml.tokens", true, GV_STR, &r, &count, &found);
    if (rc)
        return rc;
    if (count == 0)
        return rd_fail(&r, FQ_EFORMAT, "the vocabulary is empty");
    return read_str_array(&r, count, &tok->tokens, &tok->n_tokens);
}

/* token_type: one int32 per token (default FQ_TOK_NORMAL; GGUF's 0 "undefined" also reads as
 * normal). */
static int parse_tok_types(gguf_file *f, fq_tok_spec *tok)
{
    tok->token_types = fq_calloc_array((size_t)tok->n_tokens, sizeof *tok->token_types);
    if (!tok->token_types)
        return key_fail(f, "tokenizer.ggml.token_type", FQ_ENOMEM, "out of memory");
    gguf_rd r;
    uint64_t count;
    bool found;
    int rc = get_array(f, "tokenizer.ggml.token_type", false, GV_I32, &r, &count, &found);
    if (rc)
        return rc;
    if (found && count != (uint64_t)tok->n_tokens)
        return rd_fail(&r, FQ_EFORMAT, "has %llu entries for %d tokens", (unsigned long long)count,
                       tok->n_tokens);
    for (int32_t i = 0; i < tok->n_tokens; i++) {
        int64_t v = FQ_TOK_NORMAL;
        if (found && (rc = rd_int_value(&r, GV_I32, &v)))
            return rc;
        if (v < 0 || v > FQ_TOK_BYTE)
            return rd_fail(&r, FQ_EFORMAT, "token %d has type %lld", i, (long long)v);
        tok->token_types[i] = v == 0 ? FQ_TOK_NORMAL : (int32_t)v;
    }
    return 0;
}

static int parse_tok_merges(gguf_file *f, fq_tok_spec *tok)
{
    gguf_rd r;
    uint64_t count;
    bool found;
    int rc = get_array(f, "tokenizer.ggml.merges", true, GV_STR, &r, &count, &found);
    if (rc)
        return rc;
    return read_str_array(&r, count, &tok->merges, &tok->n_merges);
}

/* A special token id key: -1 when absent, else inside the vocabulary. */
static int parse_tok_id(gguf_file *f, const char *key, int32_t n_tokens, int32_t *id)
{
    int64_t v = -1;
    int rc = get_int(f, key, false, 0, (int64_t)n_tokens - 1, &v);
    *id = (int32_t)v;
    return rc;
}

static int parse_tok_strings(gguf_file *f, fq_tok_spec *tok)
{
    gguf_str s;
    bool found;
    int rc = get_str(f, "tokenizer.ggml.model", true, &s, &found);
    if (rc)
        return rc;
    if (!str_eq(s, "gpt2")) {
        char buf[40];
        printable(buf, sizeof buf, s.p, s.len);
        return key_fail(f, "tokenizer.ggml.model", FQ_EUNSUP,
                        "tokenizer '%s' is not supported (gpt2 byte-level BPE only)", buf);
    }
    snprintf(tok->model, sizeof tok->model, "gpt2");
    snprintf(tok->pre, sizeof tok->pre, "gpt2");
    if ((rc = get_str(f, "tokenizer.ggml.pre", false, &s, &found)))
        return rc;
    if (found) {
        if (s.len >= sizeof tok->pre || memchr(s.p, '\0', s.len))
            return key_fail(f, "tokenizer.ggml.pre", FQ_EUNSUP,
                            "pre-tokenizer name of %zu bytes is not supported", s.len);
        memcpy(tok->pre, s.p, s.len);
        tok->pre[s.len] = '\0';
    }
    tok->ignore_merges = !strcmp(tok->pre, "llama3") || !strcmp(tok->pre, "llama-bpe");
    if ((rc = get_str(f, "tokenizer.chat_template", false, &s, &found)) || !found)
        return rc;
    gguf_rd r = kv_reader(f, kv_find(f, "tokenizer.chat_template"));
    return dup_str(&r, s, "chat template", &tok->chat_template);
}

static int parse_tokenizer(gguf_file *f, fq_tok_spec *tok)
{
    memset(tok, 0, sizeof *tok);
    int rc;
    if ((rc = parse_tok_strings(f, tok)) || (rc = parse_tok_tokens(f, tok)) ||
        (rc = parse_tok_types(f, tok)) || (rc = parse_tok_merges(f, tok)) ||
        (rc = parse_tok_id(f, "tokenizer.ggml.bos_token_id", tok->n_tokens, &tok->bos_id)) ||
        (rc = parse_tok_id(f, "tokenizer.ggml.eos_token_id", tok->n_tokens, &tok->eos_id)) ||
        (rc = parse_tok_id(f, "tokenizer.ggml.padding_token_id", tok->n_tokens, &tok->pad_id)) ||
        (rc = get_bool(f, "tokenizer.ggml.add_bos_token", &tok->add_bos)) ||
        (rc = get_bool(f, "tokenizer.ggml.add_eos_token", &tok->add_eos)))
        return rc;
    return 0;
}

/* ---- tensors ---- */

static int tensor_ptr_cmp(const void *a, const void *b)
{
    return strcmp((*(const fq_tensor *const *)a)->name, (*(const fq_tensor *const *)b)->name);
}

/* Canonical name: the GGUF name without its ".weight" suffix. */
static void canonical_name(char *dst, gguf_str name)
{
    size_t len = name.len;
    const char *sfx = ".weight";
    size_t sl = strlen(sfx);
    if (len > sl && memcmp(name.p + len - sl, sfx, sl) == 0)
        len -= sl;
    memcpy(dst, name.p, len);
    dst[len] = '\0';
}

/* Fills names and shapes (reversed to row-major) and allocates every fp32 buffer. */
static int setup_tensors(gguf_file *f, fq_ckpt *ck)
{
    ck->tensors = fq_calloc_array(f->n_tensors ? f->n_tensors : 1, sizeof *ck->tensors);
    if (!ck->tensors)
        return fq_err(f->err, f->err_len, FQ_ENOMEM, "%s: out of memory for tensors", f->path);
    ck->n_tensors = (int32_t)f->n_tensors;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const gguf_tinfo *t = &f->ti[i];
        fq_tensor *dst = &ck->tensors[i];
        canonical_name(dst->name, t->name);
        dst->n_dims = (int32_t)t->n_dims;
        for (uint32_t d = 0; d < t->n_dims; d++)
            dst->shape[d] = t->ne[t->n_dims - 1 - d];
        dst->data = fq_malloc_array((size_t)t->numel, sizeof(float));
        if (!dst->data)
            return tensor_fail(f, t->name, FQ_ENOMEM, "out of memory for %lld values",
                               (long long)t->numel);
    }
    return 0;
}

/* Refuses two tensors with the same canonical name ("x" and "x.weight" collide too). */
static int check_unique_names(gguf_file *f, const fq_ckpt *ck)
{
    const fq_tensor **byname = fq_calloc_array(f->n_tensors ? f->n_tensors : 1, sizeof *byname);
    if (!byname)
        return fq_err(f->err, f->err_len, FQ_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_tensors; i++)
        byname[i] = &ck->tensors[i];
    qsort(byname, f->n_tensors, sizeof *byname, tensor_ptr_cmp);
    int rc = 0;
    for (size_t i = 1; i < f->n_tensors && !rc; i++)
        if (strcmp(byname[i - 1]->name, byname[i]->name) == 0)
            rc = fq_err(f->err, f->err_len, FQ_EFORMAT, "%s: tensor %s: appears more than once",
                        f->path, byname[i]->name);
    free(byname);
    return rc;
}

/* One dequantization job: blocks [first, first + n) of tensor ti. */
typedef struct {
    size_t ti;
    int64_t first_value, n_values;
} dq_job;

typedef struct {
    const gguf_file *f;
    fq_ckpt *ck;
    const dq_job *jobs;
    size_t n_jobs;
    atomic_size_t next;
} dq_work;

static void *dq_worker(void *arg)
{
    dq_work *w = arg;
    for (;;) {
        size_t j = atomic_fetch_add(&w->next, 1);
        if (j >= w->n_jobs)
            return NULL;
        const dq_job *job = &w->jobs[j];
        const gguf_tinfo *t = &w->f->ti[job->ti];
        size_t off = 0;
        int rc = fq_ggml_nbytes((int)t->type, job->first_value, &off);
        FQ_ASSERT(rc == 0);
        const uint8_t *src = w->f->map + w->f->data_pos + t->offset + off;
        rc = fq_ggml_dequant((int)t->type, src, w->ck->tensors[job->ti].data + job->first_value,
                             job->n_values);
        FQ_ASSERT(rc == 0);
    }
}

/* Splits every tensor into jobs of about DEQUANT_CHUNK_VALUES values (whole blocks). */
static dq_job *plan_jobs(const gguf_file *f, size_t *n_jobs)
{
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        dq_job *jobs = NULL;
        if (pass == 1 && !(jobs = fq_malloc_array(n ? n : 1, sizeof *jobs)))
            return NULL;
        n = 0;
        for (size_t i = 0; i < f->n_tensors; i++) {
            const gguf_tinfo *t = &f->ti[i];
            int64_t bs = fq_ggml_block_size((int)t->type);
            int64_t chunk = DEQUANT_CHUNK_VALUES / bs * bs;
            if (chunk < bs)
                chunk = bs;
            for (int64_t v = 0; v < t->numel; v += chunk, n++) {
                if (jobs)
                    jobs[n] = (dq_job){i, v, t->numel - v < chunk ? t->numel - v : chunk};
            }
        }
        if (jobs) {
            *n_jobs = n;
            return jobs;
        }
    }
    return NULL;
}

/* Decodes all tensors with up to one thread per online CPU; the calling thread works too, so a
 * failed pthread_create only slows things down. */
static int dequant_all(gguf_file *f, fq_ckpt *ck)
{
    size_t n_jobs = 0;
    dq_job *jobs = plan_jobs(f, &n_jobs);
    if (!jobs)
        return fq_err(f->err, f->err_len, FQ_ENOMEM, "%s: out of memory", f->path);
    dq_work w = {.f = f, .ck = ck, .jobs = jobs, .n_jobs = n_jobs};
    atomic_init(&w.next, 0);
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n_threads = n_cpu < 1                     ? 1
                       : n_cpu > DEQUANT_MAX_THREADS ? DEQUANT_MAX_THREADS
                                                     : (size_t)n_cpu;
    if (n_threads > n_jobs)
        n_threads = n_jobs ? n_jobs : 1;
    pthread_t tids[DEQUANT_MAX_THREADS];
    size_t started = 0;
    for (size_t i = 1; i < n_threads; i++)
        if (pthread_create(&tids[started], NULL, dq_worker, &w) == 0)
            started++;
    dq_worker(&w);
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    free(jobs);
    return 0;
}

static int load_tensors(gguf_file *f, fq_ckpt *ck)
{
    if (f->n_tensors > INT32_MAX)
        return fq_err(f->err, f->err_len, FQ_EFORMAT, "%s: header: too many tensors", f->path);
    int rc;
    if ((rc = setup_tensors(f, ck)) || (rc = check_unique_names(f, ck)))
        return rc;
    return dequant_all(f, ck);
}

/* ---- entry points ---- */

int fq_gguf_load(const char *path, fq_ckpt **out, char *err, size_t err_len)
{
    *out = NULL;
    double t0 = fq_now_s();
    gguf_file f;
    fq_ckpt *ck = NULL;
    int rc = gguf_open(&f, path, true, err, err_len);
    if (!rc && !(ck = calloc(1, sizeof *ck)))
        rc = fq_err(err, err_len, FQ_ENOMEM, "%s: out of memory", path);
    if (!rc) {
        snprintf(ck->format, sizeof ck->format, "gguf");
        snprintf(ck->path, sizeof ck->path, "%s", path);
        if (!(rc = parse_config(&f, &ck->cfg)) && !(rc = parse_tokenizer(&f, &ck->tok)) &&
            !(rc = load_tensors(&f, ck)))
            rc = fq_ckpt_validate(ck, err, err_len);
    }
    gguf_close(&f);
    if (rc) {
        fq_ckpt_destroy(ck);
        return rc;
    }
    fq_log(FQ_LOG_DEBUG, "%s: %d tensors read and dequantized in %.3f s", path, ck->n_tensors,
           fq_now_s() - t0);
    *out = ck;
    return 0;
}

int fq_gguf_load_tokenizer(const char *path, fq_tok_spec *tok, char *err, size_t err_len)
{
    memset(tok, 0, sizeof *tok);
    gguf_file f;
    int rc = gguf_open(&f, path, false, err, err_len);
    if (!rc)
        rc = parse_tokenizer(&f, tok);
    gguf_close(&f);
    if (rc)
        fq_tok_spec_free(tok);
    return rc;
}

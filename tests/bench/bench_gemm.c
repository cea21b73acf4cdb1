/* bench_gemm.c — the GEMM benchmark: our INT6 kernels (W6A8 and W6A6 through the dispatcher
 * k_gemm_w6; beside it the separate prefill kernels at m >= 64 and the first, shared-memory decode
 * kernel k_gemm_w6_mma_decode and the register-streaming k_gemm_w6_gemv at m <= 64, each named
 * explicitly; the BTC comparison path) against
 * cuBLAS int8 (raw int32 out, and with a per-token / per-channel dequant epilogue) and cuBLAS fp16,
 * over the DESIGN §3 shapes and token counts; prints a table and writes the numbers as JSON.
 *
 * Usage: bench_gemm --out FILE.json [--commit SHA] [--driver STR] [--quick] [--shapes NxK,...]
 *                   [--ms M,...]
 *
 * Method. Every (shape, m, kernel) is first run once on poisoned outputs and checked (ours against
 * the CPU reference rt_cpu_matmul_q6 on three rows, within 1e-3 relative; cuBLAS against host dot
 * products on a few entries), then timed: 10 warm-up launches, then a one-thread spin kernel that
 * keeps the GPU busy while the host queues the timed launches (so launch overhead stays out of the
 * numbers), then BG_REPS launches each between two cudaEvents (fewer, at least BG_MIN_REPS, when
 * one launch takes long), reported as the median. Launch i reads weight copy i % C and activation
 * copy i % C_x, where C * (weight bytes of that format) >= 200 MB, so the 50 MB L2 never holds the
 * inputs of the next launch. gbps = that format's weight bytes (scales included) / median time.
 * Any failed check or refused launch prints a FAIL line and makes the exit status 1; a CUDA error
 * that leaves the device unusable (a kernel fault) aborts the run (the JSON is still written, its
 * "status" saying why; it is rewritten after every shape with "status": "running", "complete" at
 * the end). Exit 77 without a GPU, 2 on usage.
 */
#include "fq_pack.h"
#include "k.h"
#include "k_btc.h"
#include "k_gemm.h"
#include "rt_cpu_int6.h"
#include "rt_pool.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* bench_epilogue.cu: asynchronous on stream; 0 or -1. */
int k_bench_dequant_f16(const int32_t *acc, const float *sx, const float *sw, int m, int n,
                        uint16_t *y, cudaStream_t stream); /* y = half(acc * sx[row] * sw[col]) */
int k_bench_fill_bytes(void *p, size_t bytes, unsigned long long seed, cudaStream_t stream);
int k_bench_fill_f16(uint16_t *p, size_t count, unsigned long long seed, cudaStream_t stream);
int k_bench_spin(unsigned long long ns, cudaStream_t stream);

#define BG_G            128   /* group size of every benchmarked shape */
#define BG_WARMUP       10    /* untimed launches first */
#define BG_REPS         50    /* timed launches */
#define BG_MIN_REPS     20    /* ... at least, when one launch is slow */
#define BG_BUDGET_US    1.5e6 /* timed launches of one measurement stop growing past this */
#define BG_ROTATE_BYTES 200e6 /* copies of the inputs so that one pass over them defeats L2 */
#define BG_MAXC         64    /* at most this many copies (tiny custom shapes) */
#define BG_MAX_SHAPES   64
#define BG_MAX_MS       32
#define BG_MAX_REF      (3 * BG_MAX_MS)
#define BG_COPY_BYTES   (1ul << 30) /* device-to-device copy of 1 GiB for the bandwidth line */
#define BG_NCHK         4           /* output columns checked for the cuBLAS kernels */

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

enum {
    KI_INT6_A8,
    KI_INT6_A6,
    KI_MMA_PREFILL,
    KI_WGMMA,
    KI_MMA_DECODE,
    KI_GEMV,
    KI_BTC_A8,
    KI_BTC_A6,
    KI_CUBLAS_I8,
    KI_CUBLAS_I8S,
    KI_CUBLAS_F16,
    KI_COUNT
};

static const char *const kernel_names[KI_COUNT] = {
    "int6_w6a8",
    "int6_w6a6",
    "int6_w6a8_mma_prefill",
    "int6_w6a8_wgmma",
    "int6_w6a8_mma_decode",
    "int6_w6a8_gemv",
    "btc_w6a8",
    "btc_w6a6",
    "cublas_w8a8",
    "cublas_w8a8_scaled",
    "cublas_fp16",
};
static const char *const kernel_cols[KI_COUNT] = {
    "w6a8",   "w6a6",   "mma_pf", "wgmma",  "mma_dec", "gemv",
    "btc_a8", "btc_a6", "cb_i8",  "cb_i8s", "cb_f16",
};

typedef struct bg_shape {
    int n, k;
} bg_shape;

/* DESIGN §3: LLaMA-2-7B, -13B, -70B (GQA), LLaMA-3-8B linears (4096x4096 listed once). */
static const bg_shape default_shapes[] = {
    {12288, 4096}, {4096, 4096},  {11008, 4096}, {22016, 4096}, {4096, 11008}, {15360, 5120},
    {5120, 5120},  {13824, 5120}, {5120, 13824}, {10240, 8192}, {8192, 8192},  {28672, 8192},
    {8192, 28672}, {6144, 4096},  {14336, 4096}, {4096, 14336},
};
static const bg_shape quick_shapes[] = {{4096, 4096}, {11008, 4096}, {5120, 13824}};
static const int default_ms[] = {1, 2, 4, 8, 16, 32, 64, 512, 2048};

typedef struct bg_opts {
    const char *out, *commit, *driver;
    int n_shapes, n_ms;
    bg_shape shapes[BG_MAX_SHAPES];
    int ms[BG_MAX_MS];
} bg_opts;

/* One timed result (kid < 0: the copy-bandwidth line). */
typedef struct bg_record {
    int n, k, m, kid;
    double us, gbps, tops, weight_bytes;
    int reps, copies, m_padded;
    bool ok, host_bound;
} bg_record;

/* A check that failed or a launch that was refused (or skipped, for the optional kernels). */
typedef struct bg_note {
    int n, k, m, kid;
    bool skipped;
    char what[160];
} bg_note;

typedef struct bg_bench {
    cudaStream_t st;
    cudaEvent_t ev[2 * BG_REPS];
    int n_ev;
    cublasHandle_t cublas;
    rt_pool *pool;
    bg_record *rec;
    size_t n_rec, cap_rec;
    bg_note *notes;
    size_t n_notes, cap_notes;
    int failures;
    uint64_t rng;
    char gpu[256], date[16], driver[128], cuda_driver[16], runtime[16];
    int sms, l2_mb, cublas_version;
    const bg_opts *opts;
} bg_bench;

/* Everything one shape needs, host and device; zeroed first, freed by shape_free. */
typedef struct bg_shape_state {
    int n, k, ng, mrows, mmax;
    long rb;
    size_t w6_bytes, btc_bytes;
    int c6, c8, c16, cb, cx;
    bool btc_ok;
    int i8_mpad; /* rows cuBLAS int8 ran with for the current m; 0 when it failed */
    /* host */
    uint8_t *h_packed;    /* [n, rb] */
    uint16_t *h_sw;       /* [n, ng] fp16 bits */
    int8_t *h_qx8;        /* [mrows, k] 8-bit codes */
    int8_t *h_qx6;        /* [mrows, k] 6-bit codes */
    float *h_sx8, *h_sx6; /* [mrows, ng] */
    float *h_sxt;         /* [mrows] per-token scales of the scaled int8 path */
    float *h_sw32;        /* [n] per-channel scales of the scaled int8 path */
    int8_t *h_w8chk;      /* [BG_NCHK, k] int8 weight rows cols[] of copy 0 */
    uint16_t *h_w16chk;   /* [BG_NCHK, k] fp16 weight rows cols[] of copy 0 */
    uint16_t *h_x16row;   /* [k] scratch */
    void *h_out;          /* [n] 4-byte scratch: one output row */
    int n_ref, ref_rows[BG_MAX_REF];
    float *ref8, *ref6; /* [n_ref, n] CPU reference rows ref_rows[] for A8 / A6 */
    int cols[BG_NCHK];
    /* device */
    uint8_t *d_packed[BG_MAXC];
    uint16_t *d_sw[BG_MAXC];
    k_w6 w6[BG_MAXC];
    int8_t *d_w8[BG_MAXC];
    float *d_sw32[BG_MAXC];
    uint16_t *d_w16[BG_MAXC];
    void *d_btc[BG_MAXC];
    k_btc_w bw[BG_MAXC];
    int8_t *d_qx8[BG_MAXC], *d_qx6[BG_MAXC];
    float *d_sx8[BG_MAXC], *d_sx6[BG_MAXC], *d_sxt[BG_MAXC];
    uint16_t *d_x16[BG_MAXC];
    float *d_y;      /* [mrows, n] fp32 */
    int32_t *d_y32;  /* [mrows, n] */
    uint16_t *d_y16; /* [mrows, n] fp16 */
    void *d_ws, *d_bws;
    size_t ws_bytes, bws_bytes;
} bg_shape_state;

/* One kernel at one m. */
typedef struct bg_run {
    int kid, m, mpad;
} bg_run;

typedef struct bg_timing {
    double us;
    int reps;
    bool host_bound;
} bg_timing;

/* ---- small helpers ---- */

static uint64_t rng_next(uint64_t *s) /* xorshift64* */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static float rng_unit(uint64_t *s) /* [0, 1) */
{
    return (float)(rng_next(s) >> 40) * (1.0f / 16777216.0f);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static float half_to_float(uint16_t h)
{
    const int e = (h >> 10) & 31, f = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)f, -24);
    else if (e == 31)
        v = f ? NAN : INFINITY;
    else
        v = ldexpf((float)(f | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float median(float *v, int n) /* sorts v */
{
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

static int copies_for(double bytes)
{
    const double c = ceil(BG_ROTATE_BYTES / (bytes > 1.0 ? bytes : 1.0));
    return c < 2.0 ? 2 : c > BG_MAXC ? BG_MAXC : (int)c;
}

static void *host_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        fprintf(stderr, "out of host memory (%zu bytes)\n", bytes);
    return p;
}

static int dev_alloc(void **p, size_t bytes)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu): %s\n", bytes, cudaGetErrorString(e));
        *p = NULL;
        return -1;
    }
    return 0;
}

static int add_record(bg_bench *b, const bg_record *r)
{
    if (b->n_rec == b->cap_rec) {
        const size_t cap = b->cap_rec ? 2 * b->cap_rec : 256;
        bg_record *v = realloc(b->rec, cap * sizeof *v);
        if (!v)
            return -1;
        b->rec = v;
        b->cap_rec = cap;
    }
    b->rec[b->n_rec++] = *r;
    return 0;
}

/* Records a failure (counted) or a skip (not counted) and prints it. */
static void add_note(bg_bench *b, const bg_shape_state *s, int kid, int m, bool skipped,
                     const char *what)
{
    printf("%s %s n=%d k=%d m=%d: %s\n", skipped ? "SKIP" : "FAIL", kernel_names[kid], s->n, s->k,
           m, what);
    if (!skipped)
        b->failures++;
    if (b->n_notes == b->cap_notes) {
        const size_t cap = b->cap_notes ? 2 * b->cap_notes : 32;
        bg_note *v = realloc(b->notes, cap * sizeof *v);
        if (!v)
            return; /* printed and counted; the JSON just lacks it */
        b->notes = v;
        b->cap_notes = cap;
    }
    bg_note *nt = &b->notes[b->n_notes++];
    nt->n = s->n;
    nt->k = s->k;
    nt->m = m;
    nt->kid = kid;
    nt->skipped = skipped;
    snprintf(nt->what, sizeof nt->what, "%s", what);
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7F)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, const char *fmt, double v)
{
    if (isfinite(v))
        fprintf(f, fmt, v);
    else
        fputs("null", f);
}

static void json_record(FILE *f, const bg_record *r)
{
    if (r->kid < 0) {
        fputs("  {\"kernel\": \"copy_bw\", \"bytes\": ", f);
        json_num(f, "%.0f", r->weight_bytes);
        fputs(", \"us\": ", f);
        json_num(f, "%.3f", r->us);
        fputs(", \"gbps\": ", f);
        json_num(f, "%.1f", r->gbps);
        fprintf(f, ", \"reps\": %d}", r->reps);
        return;
    }
    fprintf(f, "  {\"n\": %d, \"k\": %d, \"m\": %d, \"kernel\": \"%s\", \"us\": ", r->n, r->k, r->m,
            kernel_names[r->kid]);
    json_num(f, "%.3f", r->us);
    fputs(", \"gbps\": ", f);
    json_num(f, "%.1f", r->gbps);
    fputs(", \"tops\": ", f);
    json_num(f, "%.4f", r->tops);
    fprintf(f, ", \"weight_bytes\": %.0f, \"reps\": %d, \"copies\": %d, \"ok\": %s",
            r->weight_bytes, r->reps, r->copies, r->ok ? "true" : "false");
    if (r->m_padded)
        fprintf(f, ", \"m_padded\": %d", r->m_padded);
    if (r->host_bound)
        fputs(", \"host_bound\": true", f);
    fputc('}', f);
}

/* status: "running" (rewritten after every shape), "complete", or why the run stopped. */
static int write_json(const bg_bench *b, const char *status)
{
    FILE *f = fopen(b->opts->out, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", b->opts->out);
        return -1;
    }
    fputs("{\n \"date\": ", f);
    json_str(f, b->date);
    fputs(",\n \"gpu\": ", f);
    json_str(f, b->gpu);
    fputs(",\n \"driver\": ", f);
    json_str(f, b->driver);
    fputs(",\n \"commit\": ", f);
    json_str(f, b->opts->commit ? b->opts->commit : "unknown");
    fputs(",\n \"cuda_driver\": ", f);
    json_str(f, b->cuda_driver);
    fputs(",\n \"cuda_runtime\": ", f);
    json_str(f, b->runtime);
    fprintf(f, ",\n \"cublas_version\": %d,\n \"sms\": %d,\n \"l2_mb\": %d,\n", b->cublas_version,
            b->sms, b->l2_mb);
    fprintf(f,
            " \"method\": \"median of %d cudaEvent-timed launches (at least %d when slow) after %d "
            "warm-ups, queued behind a spin kernel; inputs rotated over C copies with C * weight "
            "bytes >= 200 MB; gbps = weight bytes of the kernel's format including its scales "
            "(int6: packed rows + fp16 group scales; btc: k_btc_weight_bytes + fp16 group scales; "
            "int8: n*k, + n*4 fp32 scales when scaled; fp16: 2*n*k) / us / 1000; tops = 2*m*n*k "
            "/ us / 1e6; group 128; ok = output check before timing\",\n",
            BG_REPS, BG_MIN_REPS, BG_WARMUP);
    fputs(" \"status\": ", f);
    json_str(f, status);
    fprintf(f, ",\n \"failures\": %d,\n", b->failures);
    fputs(" \"notes\": [", f);
    for (size_t i = 0; i < b->n_notes; i++) {
        const bg_note *nt = &b->notes[i];
        fprintf(
            f, "%s\n  {\"n\": %d, \"k\": %d, \"m\": %d, \"kernel\": \"%s\", \"%s\": ", i ? "," : "",
            nt->n, nt->k, nt->m, kernel_names[nt->kid], nt->skipped ? "skipped" : "failed");
        json_str(f, nt->what);
        fputc('}', f);
    }
    fputs(b->n_notes ? "\n ],\n" : "],\n", f);
    fputs(" \"records\": [", f);
    for (size_t i = 0; i < b->n_rec; i++) {
        fputs(i ? ",\n" : "\n", f);
        json_record(f, &b->rec[i]);
    }
    fputs(b->n_rec ? "\n ]\n}\n" : "]\n}\n", f);
    const int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "error writing %s\n", b->opts->out);
        return -1;
    }
    return 0;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_gemm --out FILE.json [--commit SHA] [--driver STR] [--quick]\n"
               "                  [--shapes NxK,NxK,...] [--ms M,M,...]\n"
               "  --quick   3 shapes only (smoke test)\n"
               "  --shapes  shapes to run (n a multiple of 16, k a multiple of 128)\n"
               "  --ms      token counts to run (default 1,2,4,8,16,32,64,512,2048)\n");
}

static int parse_int(const char **p, long lo, long hi, int *out)
{
    char *end;
    const long v = strtol(*p, &end, 10);
    if (end == *p || v < lo || v > hi)
        return -1;
    *out = (int)v;
    *p = end;
    return 0;
}

static int parse_shapes(const char *s, bg_opts *o)
{
    o->n_shapes = 0;
    for (const char *p = s; *p;) {
        bg_shape sh;
        if (o->n_shapes == BG_MAX_SHAPES || parse_int(&p, 16, 1 << 18, &sh.n) != 0 ||
            (*p != 'x' && *p != 'X'))
            return -1;
        p++;
        if (parse_int(&p, BG_G, 1 << 18, &sh.k) != 0 || sh.n % 16 != 0 || sh.k % BG_G != 0)
            return -1;
        o->shapes[o->n_shapes++] = sh;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return o->n_shapes > 0 ? 0 : -1;
}

static int parse_ms(const char *s, bg_opts *o)
{
    o->n_ms = 0;
    for (const char *p = s; *p;) {
        if (o->n_ms == BG_MAX_MS || parse_int(&p, 1, 16384, &o->ms[o->n_ms]) != 0)
            return -1;
        o->n_ms++;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return o->n_ms > 0 ? 0 : -1;
}

static int parse_args(int argc, char **argv, bg_opts *o)
{
    bool quick = false, have_shapes = false;
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has_val = i + 1 < argc;
        if (strcmp(a, "--quick") == 0) {
            quick = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return 1;
        } else if (!has_val) {
            fprintf(stderr, "bench_gemm: unknown option or missing value: %s\n", a);
            return -1;
        } else if (strcmp(a, "--out") == 0) {
            o->out = argv[++i];
        } else if (strcmp(a, "--commit") == 0) {
            o->commit = argv[++i];
        } else if (strcmp(a, "--driver") == 0) {
            o->driver = argv[++i];
        } else if (strcmp(a, "--shapes") == 0) {
            if (parse_shapes(argv[++i], o) != 0) {
                fprintf(stderr, "bench_gemm: bad --shapes %s\n", argv[i]);
                return -1;
            }
            have_shapes = true;
        } else if (strcmp(a, "--ms") == 0) {
            if (parse_ms(argv[++i], o) != 0) {
                fprintf(stderr, "bench_gemm: bad --ms %s\n", argv[i]);
                return -1;
            }
        } else {
            fprintf(stderr, "bench_gemm: unknown option %s\n", a);
            return -1;
        }
    }
    if (!o->out) {
        fprintf(stderr, "bench_gemm: --out is required\n");
        return -1;
    }
    if (!have_shapes) {
        const bg_shape *src = quick ? quick_shapes : default_shapes;
        const size_t cnt = quick ? sizeof quick_shapes / sizeof quick_shapes[0]
                                 : sizeof default_shapes / sizeof default_shapes[0];
        for (size_t i = 0; i < cnt; i++)
            o->shapes[i] = src[i];
        o->n_shapes = (int)cnt;
    }
    if (o->n_ms == 0) {
        for (size_t i = 0; i < sizeof default_ms / sizeof default_ms[0]; i++)
            o->ms[i] = default_ms[i];
        o->n_ms = (int)(sizeof default_ms / sizeof default_ms[0]);
    }
    return 0;
}

/* ---- launching ---- */

static cublasStatus_t cublas_i8(const bg_bench *b, const bg_shape_state *s, int i, int rows)
{
    /* Row-major Y[rows, n] = X[rows, k] W[n, k]^T is column-major Y^T[n, rows] = W^T' X^T: A = the
     * weights as a column-major [k, n] matrix, transposed ("TN", what int8 tensor cores take). */
    const int32_t one = 1, zero = 0;
    return cublasGemmEx(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, s->n, rows, s->k, &one,
                        s->d_w8[i % s->c8], CUDA_R_8I, s->k, s->d_qx8[i % s->cx], CUDA_R_8I, s->k,
                        &zero, s->d_y32, CUDA_R_32I, s->n, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
}

static cublasStatus_t cublas_f16(const bg_bench *b, const bg_shape_state *s, int i, int rows)
{
    const float one = 1.0f, zero = 0.0f;
    return cublasGemmEx(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, s->n, rows, s->k, &one,
                        s->d_w16[i % s->c16], CUDA_R_16F, s->k, s->d_x16[i % s->cx], CUDA_R_16F,
                        s->k, &zero, s->d_y16, CUDA_R_16F, s->n, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
}

/* Launch number i of run r (i picks the copies); 0, or -1 when the call refused. */
static int bg_launch(const bg_bench *b, const bg_shape_state *s, const bg_run *r, int i)
{
    const int xi = i % s->cx, m = r->m;
    const k_w6 *w = &s->w6[i % s->c6];
    switch (r->kid) {
    case KI_INT6_A8:
        return k_gemm_w6(s->d_qx8[xi], s->d_sx8[xi], m, w, s->d_y, s->n, s->d_ws, s->ws_bytes,
                         b->st);
    case KI_INT6_A6:
        return k_gemm_w6(s->d_qx6[xi], s->d_sx6[xi], m, w, s->d_y, s->n, s->d_ws, s->ws_bytes,
                         b->st);
    case KI_MMA_PREFILL:
        return k_gemm_w6_mma_prefill(s->d_qx8[xi], s->d_sx8[xi], m, w, s->d_y, s->n, b->st);
    case KI_WGMMA:
        return k_gemm_w6_wgmma(s->d_qx8[xi], s->d_sx8[xi], m, w, s->d_y, s->n, b->st);
    case KI_MMA_DECODE:
        return k_gemm_w6_mma_decode(s->d_qx8[xi], s->d_sx8[xi], m, w, s->d_y, s->n, s->d_ws,
                                    s->ws_bytes, b->st);
    case KI_GEMV:
        return k_gemm_w6_gemv(s->d_qx8[xi], s->d_sx8[xi], m, w, s->d_y, s->n, s->d_ws, s->ws_bytes,
                              b->st);
    case KI_BTC_A8:
        return k_btc_gemm(s->d_qx8[xi], s->d_sx8[xi], m, 8, &s->bw[i % s->cb], s->d_y, s->n,
                          s->d_bws, s->bws_bytes, b->st);
    case KI_BTC_A6:
        return k_btc_gemm(s->d_qx6[xi], s->d_sx6[xi], m, 6, &s->bw[i % s->cb], s->d_y, s->n,
                          s->d_bws, s->bws_bytes, b->st);
    case KI_CUBLAS_I8:
        return cublas_i8(b, s, i, r->mpad) == CUBLAS_STATUS_SUCCESS ? 0 : -1;
    case KI_CUBLAS_I8S:
        if (cublas_i8(b, s, i, r->mpad) != CUBLAS_STATUS_SUCCESS)
            return -1;
        return k_bench_dequant_f16(s->d_y32, s->d_sxt[xi], s->d_sw32[i % s->c8], m, s->n, s->d_y16,
                                   b->st);
    case KI_CUBLAS_F16:
        return cublas_f16(b, s, i, m) == CUBLAS_STATUS_SUCCESS ? 0 : -1;
    default:
        return -1;
    }
}

/* ---- timing ---- */

static int elapsed_all(const bg_bench *b, int pairs, float *el_ms)
{
    for (int p = 0; p < pairs; p++)
        CK(cudaEventElapsedTime(&el_ms[p], b->ev[2 * p], b->ev[2 * p + 1]));
    return 0;
}

/* Times run r: 0 and *t filled, 1 when a launch refused, -1 on a CUDA error. */
static int bg_time(const bg_bench *b, const bg_shape_state *s, const bg_run *r, bg_timing *t)
{
    const int half = BG_WARMUP / 2, probe = BG_WARMUP - half;
    float el[BG_REPS];
    double h0 = 0.0;
    for (int i = 0; i < BG_WARMUP; i++) {
        const int p = i - half;
        if (p == 0)
            h0 = now_us();
        if (p >= 0)
            CK(cudaEventRecord(b->ev[2 * p], b->st));
        if (bg_launch(b, s, r, i) != 0)
            return 1;
        if (p >= 0)
            CK(cudaEventRecord(b->ev[2 * p + 1], b->st));
    }
    const double host_per_launch = (now_us() - h0) / probe;
    CK(cudaStreamSynchronize(b->st));
    if (elapsed_all(b, probe, el) != 0)
        return -1;
    const double est_us = 1000.0 * median(el, probe);
    int reps = BG_REPS;
    if (est_us * reps > BG_BUDGET_US) {
        reps = (int)(BG_BUDGET_US / est_us);
        reps = reps < BG_MIN_REPS ? BG_MIN_REPS : reps;
    }
    /* Long enough for the host to queue every timed launch before the GPU gets to the first. */
    double spin_us = 1.5 * host_per_launch * reps + 20.0;
    spin_us = spin_us > 50000.0 ? 50000.0 : spin_us;
    if (k_bench_spin((unsigned long long)(spin_us * 1000.0), b->st) != 0) {
        fprintf(stderr, "spin kernel launch failed\n");
        return -1;
    }
    const double t0 = now_us();
    for (int p = 0; p < reps; p++) {
        CK(cudaEventRecord(b->ev[2 * p], b->st));
        if (bg_launch(b, s, r, BG_WARMUP + p) != 0)
            return 1;
        CK(cudaEventRecord(b->ev[2 * p + 1], b->st));
    }
    const double enqueue_us = now_us() - t0;
    CK(cudaStreamSynchronize(b->st));
    if (elapsed_all(b, reps, el) != 0)
        return -1;
    double gpu_us = spin_us;
    for (int p = 0; p < reps; p++)
        gpu_us += 1000.0 * el[p];
    t->us = 1000.0 * median(el, reps);
    t->reps = reps;
    t->host_bound = enqueue_us > gpu_us; /* the GPU may have waited for the host */
    return 0;
}

/* ---- checks ---- */

static int find_ref(const bg_shape_state *s, int row)
{
    for (int i = 0; i < s->n_ref; i++)
        if (s->ref_rows[i] == row)
            return i;
    return -1;
}

/* The rows checked at m: 0, m / 2, m - 1 (distinct). */
static int check_rows(int m, int rows[3])
{
    int c = 0;
    const int cand[3] = {0, m / 2, m - 1};
    for (int i = 0; i < 3; i++) {
        bool dup = false;
        for (int j = 0; j < c; j++)
            dup = dup || rows[j] == cand[i];
        if (!dup)
            rows[c++] = cand[i];
    }
    return c;
}

static int fetch_row(const bg_bench *b, void *dst, const void *src, size_t bytes)
{
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->st));
    CK(cudaStreamSynchronize(b->st));
    return 0;
}

/* Ours: every column of the checked rows against the CPU reference, |d| <= 1e-3 * max(|ref|, rms of
 * the reference row). *bad = mismatches; details printed for the first few. */
static int verify_q6(const bg_bench *b, const bg_shape_state *s, const bg_run *r, int *bad)
{
    const bool a6 = r->kid == KI_INT6_A6 || r->kid == KI_BTC_A6;
    const float *refs = a6 ? s->ref6 : s->ref8;
    float *got = s->h_out;
    int rows[3];
    const int nr = check_rows(r->m, rows);
    *bad = 0;
    for (int i = 0; i < nr; i++) {
        const int ri = find_ref(s, rows[i]);
        if (ri < 0) {
            fprintf(stderr, "internal: row %d has no reference\n", rows[i]);
            return -1;
        }
        if (fetch_row(b, got, s->d_y + (size_t)rows[i] * s->n, (size_t)s->n * sizeof *got) != 0)
            return -1;
        const float *ref = refs + (size_t)ri * s->n;
        double ss = 0.0;
        for (int c = 0; c < s->n; c++)
            ss += (double)ref[c] * ref[c];
        const double rms = sqrt(ss / s->n);
        for (int c = 0; c < s->n; c++) {
            const double d = fabs((double)got[c] - (double)ref[c]);
            const double tol = 1e-3 * fmax(fabs((double)ref[c]), rms);
            if (!(d <= tol)) {
                if (*bad < 5)
                    printf("  mismatch %s n=%d k=%d m=%d: y[%d, %d] = %.7g, reference %.7g\n",
                           kernel_names[r->kid], s->n, s->k, r->m, rows[i], c, got[c], ref[c]);
                ++*bad;
            }
        }
    }
    return 0;
}

/* cuBLAS: columns s->cols of the checked rows against host dot products. */
static int verify_cublas(const bg_bench *b, const bg_shape_state *s, const bg_run *r, int *bad)
{
    int rows[3];
    const int nr = check_rows(r->m, rows), k = s->k;
    *bad = 0;
    for (int i = 0; i < nr; i++) {
        const int row = rows[i];
        double want[BG_NCHK], tol[BG_NCHK], got[BG_NCHK];
        if (r->kid == KI_CUBLAS_I8) {
            const int32_t *g32 = s->h_out;
            if (fetch_row(b, s->h_out, s->d_y32 + (size_t)row * s->n, (size_t)s->n * 4) != 0)
                return -1;
            for (int j = 0; j < BG_NCHK; j++) {
                int64_t acc = 0;
                for (int kk = 0; kk < k; kk++)
                    acc += (int64_t)s->h_w8chk[(size_t)j * k + kk] * s->h_qx8[(size_t)row * k + kk];
                want[j] = (double)acc;
                tol[j] = 0.0;
                got[j] = (double)g32[s->cols[j]];
            }
        } else if (r->kid == KI_CUBLAS_I8S) {
            const uint16_t *g16 = s->h_out;
            if (fetch_row(b, s->h_out, s->d_y16 + (size_t)row * s->n, (size_t)s->n * 2) != 0)
                return -1;
            for (int j = 0; j < BG_NCHK; j++) {
                int64_t acc = 0;
                for (int kk = 0; kk < k; kk++)
                    acc += (int64_t)s->h_w8chk[(size_t)j * k + kk] * s->h_qx8[(size_t)row * k + kk];
                const float v = (float)(int32_t)acc * s->h_sxt[row] * s->h_sw32[s->cols[j]];
                want[j] = v;
                tol[j] = 1e-3 * fabs((double)v) + 1e-5;
                got[j] = half_to_float(g16[s->cols[j]]);
            }
        } else {
            const uint16_t *g16 = s->h_out;
            if (fetch_row(b, s->h_out, s->d_y16 + (size_t)row * s->n, (size_t)s->n * 2) != 0 ||
                fetch_row(b, s->h_x16row, s->d_x16[0] + (size_t)row * k, (size_t)k * 2) != 0)
                return -1;
            for (int j = 0; j < BG_NCHK; j++) {
                double acc = 0.0, sabs = 0.0;
                for (int kk = 0; kk < k; kk++) {
                    const double p = (double)half_to_float(s->h_w16chk[(size_t)j * k + kk]) *
                                     (double)half_to_float(s->h_x16row[kk]);
                    acc += p;
                    sabs += fabs(p);
                }
                want[j] = acc;
                tol[j] = 4e-3 * fabs(acc) + 1e-4 * sabs + 1e-6;
                got[j] = half_to_float(g16[s->cols[j]]);
            }
        }
        for (int j = 0; j < BG_NCHK; j++) {
            if (!(fabs(got[j] - want[j]) <= tol[j])) {
                if (*bad < 5)
                    printf("  mismatch %s n=%d k=%d m=%d: y[%d, %d] = %.7g, expected %.7g\n",
                           kernel_names[r->kid], s->n, s->k, r->m, row, s->cols[j], got[j],
                           want[j]);
                ++*bad;
            }
        }
    }
    return 0;
}

/* Poisons the run's output, launches once, checks. 0 with *status: 0 checked ok, 1 mismatches,
 * 2 refused; -1 on a CUDA error. */
static int bg_check(const bg_bench *b, const bg_shape_state *s, const bg_run *r, int *status)
{
    const size_t mn = (size_t)r->m * s->n;
    if (r->kid == KI_CUBLAS_I8)
        CK(cudaMemsetAsync(s->d_y32, 0x80, (size_t)r->mpad * s->n * 4, b->st));
    else if (r->kid == KI_CUBLAS_I8S || r->kid == KI_CUBLAS_F16)
        CK(cudaMemsetAsync(s->d_y16, 0xFF, mn * 2, b->st)); /* fp16 NaN */
    else
        CK(cudaMemsetAsync(s->d_y, 0xFF, mn * 4, b->st)); /* fp32 NaN */
    if (bg_launch(b, s, r, 0) != 0) {
        *status = 2;
        return 0;
    }
    CK(cudaStreamSynchronize(b->st));
    CK(cudaGetLastError());
    int bad = 0;
    const bool cublas = r->kid >= KI_CUBLAS_I8;
    if ((cublas ? verify_cublas(b, s, r, &bad) : verify_q6(b, s, r, &bad)) != 0)
        return -1;
    *status = bad ? 1 : 0;
    return 0;
}

/* ---- one kernel at one m ---- */

static double weight_bytes_of(const bg_shape_state *s, int kid)
{
    const double nk = (double)s->n * s->k, scales = (double)s->n * s->ng * 2;
    switch (kid) {
    case KI_BTC_A8:
    case KI_BTC_A6:
        return (double)s->btc_bytes + scales;
    case KI_CUBLAS_I8:
        return nk;
    case KI_CUBLAS_I8S:
        return nk + 4.0 * s->n;
    case KI_CUBLAS_F16:
        return 2.0 * nk;
    default:
        return (double)s->w6_bytes;
    }
}

static int copies_of(const bg_shape_state *s, int kid)
{
    switch (kid) {
    case KI_BTC_A8:
    case KI_BTC_A6:
        return s->cb;
    case KI_CUBLAS_I8:
    case KI_CUBLAS_I8S:
        return s->c8;
    case KI_CUBLAS_F16:
        return s->c16;
    default:
        return s->c6;
    }
}

/* Table cell states. */
enum { CELL_NONE, CELL_US, CELL_BAD, CELL_FAIL, CELL_SKIP };

/* Checks and times kernel kid at m; fills the cell. -1 only on a CUDA error (fatal). */
static int run_kernel(bg_bench *b, bg_shape_state *s, int kid, int m, double *us, int *cell)
{
    bg_run r = {kid, m, m};
    int status = 0;
    *cell = CELL_FAIL;
    if ((kid == KI_BTC_A8 || kid == KI_BTC_A6) && !s->btc_ok)
        return 0; /* reported once per shape */
    if (kid == KI_CUBLAS_I8S) {
        if (s->i8_mpad == 0) {
            add_note(b, s, kid, m, false, "the int8 GEMM did not run at this m");
            return 0;
        }
        r.mpad = s->i8_mpad;
    }
    if (bg_check(b, s, &r, &status) != 0)
        return -1;
    if (kid == KI_CUBLAS_I8) {
        s->i8_mpad = 0;
        if (status == 2 && m < 4) { /* int8 GEMMs may want 4 columns: pad */
            r.mpad = 4;
            if (bg_check(b, s, &r, &status) != 0)
                return -1;
        }
        if (status != 2)
            s->i8_mpad = r.mpad;
    }
    if (status == 2) {
        const bool optional = kid == KI_MMA_PREFILL || kid == KI_WGMMA;
        add_note(b, s, kid, m, optional, "the call returned an error (refused)");
        *cell = optional ? CELL_SKIP : CELL_FAIL;
        return 0;
    }
    if (status == 1)
        add_note(b, s, kid, m, false, "output differs from the reference (see mismatch lines)");
    bg_timing t;
    const int rc = bg_time(b, s, &r, &t);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        add_note(b, s, kid, m, false, "a timed launch returned an error");
        return 0;
    }
    bg_record rec = {0};
    rec.n = s->n;
    rec.k = s->k;
    rec.m = m;
    rec.kid = kid;
    rec.us = t.us;
    rec.weight_bytes = weight_bytes_of(s, kid);
    rec.gbps = rec.weight_bytes / t.us / 1000.0;
    rec.tops = 2.0 * m * (double)s->n * s->k / t.us / 1e6;
    rec.reps = t.reps;
    rec.copies = copies_of(s, kid);
    rec.m_padded = r.mpad != m ? r.mpad : 0;
    rec.ok = status == 0;
    rec.host_bound = t.host_bound;
    if (add_record(b, &rec) != 0) {
        fprintf(stderr, "out of host memory\n");
        return -1;
    }
    *us = t.us;
    *cell = status == 0 ? CELL_US : CELL_BAD;
    return 0;
}

/* ---- one shape: setup ---- */

static void shape_free(bg_shape_state *s)
{
    for (int j = 0; j < BG_MAXC; j++) {
        cudaFree(s->d_packed[j]);
        cudaFree(s->d_sw[j]);
        cudaFree(s->d_w8[j]);
        cudaFree(s->d_sw32[j]);
        cudaFree(s->d_w16[j]);
        cudaFree(s->d_btc[j]);
        cudaFree(s->d_qx8[j]);
        cudaFree(s->d_qx6[j]);
        cudaFree(s->d_sx8[j]);
        cudaFree(s->d_sx6[j]);
        cudaFree(s->d_sxt[j]);
        cudaFree(s->d_x16[j]);
    }
    cudaFree(s->d_y);
    cudaFree(s->d_y32);
    cudaFree(s->d_y16);
    cudaFree(s->d_ws);
    cudaFree(s->d_bws);
    free(s->h_packed);
    free(s->h_sw);
    free(s->h_qx8);
    free(s->h_qx6);
    free(s->h_sx8);
    free(s->h_sx6);
    free(s->h_sxt);
    free(s->h_sw32);
    free(s->h_w8chk);
    free(s->h_w16chk);
    free(s->h_x16row);
    free(s->h_out);
    free(s->ref8);
    free(s->ref6);
    memset(s, 0, sizeof *s);
}

/* Random host inputs: packed INT6 rows (any byte is valid), fp16 group scales in [2^-7, 2^-5),
 * activation codes (full int8 range for A8, [-32, 31] for A6), fp32 scales in [0.01, 0.02). */
static int host_inputs(bg_bench *b, bg_shape_state *s)
{
    const size_t n = (size_t)s->n, k = (size_t)s->k, ng = (size_t)s->ng, mr = (size_t)s->mrows;
    s->h_packed = host_alloc(n * (size_t)s->rb);
    s->h_sw = host_alloc(n * ng * 2);
    s->h_qx8 = host_alloc(mr * k);
    s->h_qx6 = host_alloc(mr * k);
    s->h_sx8 = host_alloc(mr * ng * 4);
    s->h_sx6 = host_alloc(mr * ng * 4);
    s->h_sxt = host_alloc(mr * 4);
    s->h_sw32 = host_alloc(n * 4);
    s->h_w8chk = host_alloc(BG_NCHK * k);
    s->h_w16chk = host_alloc(BG_NCHK * k * 2);
    s->h_x16row = host_alloc(k * 2);
    s->h_out = host_alloc(n * 4);
    if (!s->h_packed || !s->h_sw || !s->h_qx8 || !s->h_qx6 || !s->h_sx8 || !s->h_sx6 || !s->h_sxt ||
        !s->h_sw32 || !s->h_w8chk || !s->h_w16chk || !s->h_x16row || !s->h_out)
        return -1;
    const size_t pbytes = n * (size_t)s->rb;
    for (size_t i = 0; i < pbytes; i += 8) {
        const uint64_t v = rng_next(&b->rng);
        memcpy(s->h_packed + i, &v, pbytes - i < 8 ? pbytes - i : 8);
    }
    for (size_t i = 0; i < n * ng; i++) {
        const uint64_t v = rng_next(&b->rng) >> 32;
        s->h_sw[i] = (uint16_t)(((8u + (v & 1u)) << 10) | ((v >> 1) & 0x3FFu));
    }
    for (size_t i = 0; i < mr * k; i += 8) {
        const uint64_t v = rng_next(&b->rng);
        for (int j = 0; j < 8; j++) {
            const unsigned byte = (unsigned)(v >> (8 * j)) & 0xFFu;
            s->h_qx8[i + j] = (int8_t)(byte >= 128 ? (int)byte - 256 : (int)byte);
            s->h_qx6[i + j] = (int8_t)((int)(byte & 63u) - 32);
        }
    }
    for (size_t i = 0; i < mr * ng; i++) {
        s->h_sx8[i] = 0.01f + 0.01f * rng_unit(&b->rng);
        s->h_sx6[i] = 0.01f + 0.01f * rng_unit(&b->rng);
    }
    for (size_t i = 0; i < mr; i++)
        s->h_sxt[i] = 0.01f + 0.01f * rng_unit(&b->rng);
    for (size_t i = 0; i < n; i++)
        s->h_sw32[i] = 0.01f + 0.01f * rng_unit(&b->rng);
    return 0;
}

/* The int6 weights: copy 0 from the host, the others device-to-device. */
static int upload_int6(bg_bench *b, bg_shape_state *s)
{
    const size_t pb = (size_t)s->n * (size_t)s->rb, sb = (size_t)s->n * s->ng * 2;
    for (int j = 0; j < s->c6; j++) {
        if (dev_alloc((void **)&s->d_packed[j], pb) != 0 ||
            dev_alloc((void **)&s->d_sw[j], sb) != 0)
            return -1;
        if (j == 0) {
            CK(cudaMemcpyAsync(s->d_packed[0], s->h_packed, pb, cudaMemcpyHostToDevice, b->st));
            CK(cudaMemcpyAsync(s->d_sw[0], s->h_sw, sb, cudaMemcpyHostToDevice, b->st));
        } else {
            CK(cudaMemcpyAsync(s->d_packed[j], s->d_packed[0], pb, cudaMemcpyDeviceToDevice,
                               b->st));
            CK(cudaMemcpyAsync(s->d_sw[j], s->d_sw[0], sb, cudaMemcpyDeviceToDevice, b->st));
        }
        s->w6[j] = (k_w6){.packed = s->d_packed[j],
                          .sw = s->d_sw[j],
                          .row_bytes = s->rb,
                          .n = s->n,
                          .k = s->k,
                          .g = BG_G};
    }
    return 0;
}

/* cuBLAS operands: int8 and fp16 weights filled on the device (a seed per copy), fp32 channel
 * scales; the rows checked later are copied back from copy 0. */
static int upload_cublas(bg_bench *b, bg_shape_state *s)
{
    const size_t nk = (size_t)s->n * s->k, k = (size_t)s->k;
    for (int j = 0; j < s->c8; j++) {
        if (dev_alloc((void **)&s->d_w8[j], nk) != 0 ||
            dev_alloc((void **)&s->d_sw32[j], (size_t)s->n * 4) != 0)
            return -1;
        if (k_bench_fill_bytes(s->d_w8[j], nk, 0x1000u + (unsigned)j + rng_next(&b->rng), b->st) !=
            0)
            return -1;
        CK(cudaMemcpyAsync(s->d_sw32[j], s->h_sw32, (size_t)s->n * 4, cudaMemcpyHostToDevice,
                           b->st));
    }
    for (int j = 0; j < s->c16; j++) {
        if (dev_alloc((void **)&s->d_w16[j], nk * 2) != 0)
            return -1;
        if (k_bench_fill_f16(s->d_w16[j], nk, 0x2000u + (unsigned)j + rng_next(&b->rng), b->st) !=
            0)
            return -1;
    }
    for (int j = 0; j < BG_NCHK; j++) {
        CK(cudaMemcpyAsync(s->h_w8chk + (size_t)j * k, s->d_w8[0] + (size_t)s->cols[j] * k, k,
                           cudaMemcpyDeviceToHost, b->st));
        CK(cudaMemcpyAsync(s->h_w16chk + (size_t)j * k, s->d_w16[0] + (size_t)s->cols[j] * k, k * 2,
                           cudaMemcpyDeviceToHost, b->st));
    }
    CK(cudaStreamSynchronize(b->st));
    return 0;
}

/* BTC: one repacked buffer per copy, from int6 copy j % c6. Leaves btc_ok false (and a FAIL) when
 * the repacking is refused; -1 only on CUDA errors. */
static int upload_btc(bg_bench *b, bg_shape_state *s)
{
    s->btc_bytes = k_btc_weight_bytes(&s->w6[0]);
    s->bws_bytes = 0;
    for (int i = 0; i < b->opts->n_ms; i++)
        for (int bits = 6; bits <= 8; bits += 2) {
            const size_t w = k_btc_ws_bytes(b->opts->ms[i], s->k, BG_G, bits);
            s->bws_bytes = w > s->bws_bytes ? w : s->bws_bytes;
        }
    if (s->btc_bytes == 0) {
        add_note(b, s, KI_BTC_A8, 0, false, "k_btc_weight_bytes returned 0");
        return 0;
    }
    s->cb = copies_for((double)s->btc_bytes + (double)s->n * s->ng * 2);
    for (int j = 0; j < s->cb; j++) {
        if (dev_alloc(&s->d_btc[j], s->btc_bytes) != 0)
            return -1;
        if (k_btc_pack_weights(&s->w6[j % s->c6], s->d_btc[j], s->btc_bytes, &s->bw[j], b->st) !=
            0) {
            add_note(b, s, KI_BTC_A8, 0, false, "k_btc_pack_weights refused");
            return 0;
        }
    }
    if (s->bws_bytes && dev_alloc(&s->d_bws, s->bws_bytes) != 0)
        return -1;
    CK(cudaStreamSynchronize(b->st));
    CK(cudaGetLastError());
    s->btc_ok = true;
    return 0;
}

/* Activations (cx copies of each set), outputs and workspaces. */
static int upload_acts(bg_bench *b, bg_shape_state *s)
{
    const size_t xk = (size_t)s->mrows * s->k, xs = (size_t)s->mrows * s->ng * 4;
    const size_t ts = (size_t)s->mrows * 4;
    for (int j = 0; j < s->cx; j++) {
        if (dev_alloc((void **)&s->d_qx8[j], xk) != 0 ||
            dev_alloc((void **)&s->d_qx6[j], xk) != 0 ||
            dev_alloc((void **)&s->d_sx8[j], xs) != 0 ||
            dev_alloc((void **)&s->d_sx6[j], xs) != 0 ||
            dev_alloc((void **)&s->d_sxt[j], ts) != 0 ||
            dev_alloc((void **)&s->d_x16[j], xk * 2) != 0)
            return -1;
        if (j == 0) {
            CK(cudaMemcpyAsync(s->d_qx8[0], s->h_qx8, xk, cudaMemcpyHostToDevice, b->st));
            CK(cudaMemcpyAsync(s->d_qx6[0], s->h_qx6, xk, cudaMemcpyHostToDevice, b->st));
            CK(cudaMemcpyAsync(s->d_sx8[0], s->h_sx8, xs, cudaMemcpyHostToDevice, b->st));
            CK(cudaMemcpyAsync(s->d_sx6[0], s->h_sx6, xs, cudaMemcpyHostToDevice, b->st));
            CK(cudaMemcpyAsync(s->d_sxt[0], s->h_sxt, ts, cudaMemcpyHostToDevice, b->st));
            if (k_bench_fill_f16(s->d_x16[0], xk, 0x3000u + rng_next(&b->rng), b->st) != 0)
                return -1;
        } else {
            const enum cudaMemcpyKind dd = cudaMemcpyDeviceToDevice;
            CK(cudaMemcpyAsync(s->d_qx8[j], s->d_qx8[0], xk, dd, b->st));
            CK(cudaMemcpyAsync(s->d_qx6[j], s->d_qx6[0], xk, dd, b->st));
            CK(cudaMemcpyAsync(s->d_sx8[j], s->d_sx8[0], xs, dd, b->st));
            CK(cudaMemcpyAsync(s->d_sx6[j], s->d_sx6[0], xs, dd, b->st));
            CK(cudaMemcpyAsync(s->d_sxt[j], s->d_sxt[0], ts, dd, b->st));
            CK(cudaMemcpyAsync(s->d_x16[j], s->d_x16[0], xk * 2, dd, b->st));
        }
    }
    const size_t yn = (size_t)s->mrows * s->n;
    if (dev_alloc((void **)&s->d_y, yn * 4) != 0 || dev_alloc((void **)&s->d_y32, yn * 4) != 0 ||
        dev_alloc((void **)&s->d_y16, yn * 2) != 0)
        return -1;
    s->ws_bytes = k_gemm_w6_ws_bytes(&s->w6[0], s->mmax);
    for (int m = 1; m <= s->mmax && m <= K_GEMM_DECODE_MAX_M; m++) {
        const size_t gw = k_gemm_w6_decode_ws_bytes(&s->w6[0], m); /* the mma decode kernel's */
        s->ws_bytes = gw > s->ws_bytes ? gw : s->ws_bytes;
    }
    if (s->ws_bytes && dev_alloc(&s->d_ws, s->ws_bytes) != 0)
        return -1;
    CK(cudaStreamSynchronize(b->st));
    return 0;
}

/* CPU reference rows: the union over m of 0, m / 2, m - 1, for A8 and A6 codes. */
static int cpu_refs(bg_bench *b, bg_shape_state *s)
{
    s->n_ref = 0;
    for (int i = 0; i < b->opts->n_ms; i++) {
        int rows[3];
        const int nr = check_rows(b->opts->ms[i], rows);
        for (int j = 0; j < nr; j++)
            if (find_ref(s, rows[j]) < 0)
                s->ref_rows[s->n_ref++] = rows[j];
    }
    const size_t k = (size_t)s->k, ng = (size_t)s->ng, nr = (size_t)s->n_ref;
    int8_t *qx = host_alloc(nr * k);
    float *sx = host_alloc(nr * ng * 4);
    s->ref8 = host_alloc(nr * (size_t)s->n * 4);
    s->ref6 = host_alloc(nr * (size_t)s->n * 4);
    if (!qx || !sx || !s->ref8 || !s->ref6) {
        free(qx);
        free(sx);
        return -1;
    }
    for (int pass = 0; pass < 2; pass++) {
        const int8_t *hq = pass ? s->h_qx6 : s->h_qx8;
        const float *hs = pass ? s->h_sx6 : s->h_sx8;
        for (size_t i = 0; i < nr; i++) {
            const size_t row = (size_t)s->ref_rows[i];
            memcpy(qx + i * k, hq + row * k, k);
            memcpy(sx + i * ng, hs + row * ng, ng * 4);
        }
        rt_cpu_matmul_q6(b->pool, qx, sx, (int64_t)nr, s->k, BG_G, s->h_packed, s->h_sw, s->rb,
                         s->n, pass ? s->ref6 : s->ref8);
    }
    free(qx);
    free(sx);
    return 0;
}

static int shape_setup(bg_bench *b, bg_shape_state *s, int n, int k)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->k = k;
    s->ng = k / BG_G;
    s->rb = (long)fq_pack_row_bytes(k);
    s->mmax = 1;
    for (int i = 0; i < b->opts->n_ms; i++)
        s->mmax = b->opts->ms[i] > s->mmax ? b->opts->ms[i] : s->mmax;
    s->mrows = s->mmax < 4 ? 4 : s->mmax; /* room for cuBLAS int8's padding to 4 */
    s->w6_bytes = (size_t)n * (size_t)s->rb + (size_t)n * s->ng * 2;
    s->c6 = copies_for((double)s->w6_bytes);
    s->c8 = copies_for((double)n * k + 4.0 * n);
    s->c16 = copies_for(2.0 * n * k);
    s->cb = 1;
    s->cols[0] = 0;
    s->cols[1] = 1;
    s->cols[2] = n / 2;
    s->cols[3] = n - 1;
    if (host_inputs(b, s) != 0 || upload_int6(b, s) != 0 || upload_cublas(b, s) != 0 ||
        upload_btc(b, s) != 0)
        return -1;
    s->cx = s->c6;
    s->cx = s->c8 > s->cx ? s->c8 : s->cx;
    s->cx = s->c16 > s->cx ? s->c16 : s->cx;
    s->cx = s->cb > s->cx ? s->cb : s->cx;
    if (upload_acts(b, s) != 0 || cpu_refs(b, s) != 0)
        return -1;
    return 0;
}

/* ---- the table ---- */

static void print_header(const bg_shape_state *s)
{
    printf("\n== n=%d k=%d g=%d: weights int6 %.1f MB, btc %.1f MB, int8 %.1f MB, fp16 %.1f MB; "
           "copies int6 %d, btc %d, int8 %d, fp16 %d, activations %d ==\n",
           s->n, s->k, BG_G, s->w6_bytes / 1e6, s->btc_bytes / 1e6, (double)s->n * s->k / 1e6,
           2.0 * s->n * s->k / 1e6, s->c6, s->btc_ok ? s->cb : 0, s->c8, s->c16, s->cx);
    printf("%5s |", "m");
    for (int i = 0; i < KI_COUNT; i++)
        printf(" %8s", kernel_cols[i]);
    printf(" | %6s %6s %6s   (us; speedup of w6a8 vs cb_i8, cb_i8s, cb_f16)\n", "x_i8", "x_i8s",
           "x_f16");
}

static void print_row(int m, const double *us, const int *cell)
{
    printf("%5d |", m);
    for (int i = 0; i < KI_COUNT; i++) {
        if (cell[i] == CELL_US)
            printf(" %8.2f", us[i]);
        else if (cell[i] == CELL_BAD)
            printf(" %7.2f!", us[i]);
        else
            printf(" %8s", cell[i] == CELL_FAIL ? "FAIL" : cell[i] == CELL_SKIP ? "skip" : "-");
    }
    printf(" |");
    const int ref[3] = {KI_CUBLAS_I8, KI_CUBLAS_I8S, KI_CUBLAS_F16};
    for (int j = 0; j < 3; j++) {
        const bool have = (cell[KI_INT6_A8] == CELL_US || cell[KI_INT6_A8] == CELL_BAD) &&
                          (cell[ref[j]] == CELL_US || cell[ref[j]] == CELL_BAD);
        if (have)
            printf(" %6.2f", us[ref[j]] / us[KI_INT6_A8]);
        else
            printf(" %6s", "-");
    }
    printf("\n");
    fflush(stdout);
}

/* All kernels at every m for one shape. A failure that leaves the device usable (an allocation, a
 * refused copy) is noted and the run goes on with the next shape; -1 when the device is not usable
 * any more (a kernel fault: fatal). */
static int bench_shape(bg_bench *b, int n, int k)
{
    bg_shape_state *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    const double t0 = now_us();
    int rc = shape_setup(b, s, n, k);
    if (rc == 0) {
        print_header(s);
        printf("(setup %.1f s)\n", (now_us() - t0) * 1e-6);
    }
    for (int mi = 0; rc == 0 && mi < b->opts->n_ms; mi++) {
        const int m = b->opts->ms[mi];
        double us[KI_COUNT];
        int cell[KI_COUNT];
        for (int kid = 0; rc == 0 && kid < KI_COUNT; kid++) {
            us[kid] = NAN;
            cell[kid] = CELL_NONE;
            if ((kid == KI_MMA_PREFILL || kid == KI_WGMMA) && m < K_GEMM_DECODE_MAX_M)
                continue;
            if ((kid == KI_MMA_DECODE || kid == KI_GEMV) && m > K_GEMM_DECODE_MAX_M)
                continue; /* a decode kernel: m <= 64 */
            rc = run_kernel(b, s, kid, m, &us[kid], &cell[kid]);
        }
        if (rc == 0)
            print_row(m, us, cell);
    }
    shape_free(s);
    if (rc != 0) {
        const cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) {
            fprintf(stderr, "device unusable after n=%d k=%d: %s\n", n, k, cudaGetErrorString(e));
        } else {
            cudaGetLastError(); /* a non-sticky error: clear it and go on */
            s->n = n;
            s->k = k;
            add_note(b, s, KI_INT6_A8, 0, false,
                     "this shape stopped early (allocation or copy failed; see stderr)");
            rc = 0;
        }
    }
    free(s);
    return rc;
}

/* ---- device, copy bandwidth, main ---- */

static int copy_bandwidth(bg_bench *b)
{
    void *src = NULL, *dst = NULL;
    int rc = -1;
    float el[BG_REPS];
    const int reps = 10;
    bg_record r = {0};
    if (dev_alloc(&src, BG_COPY_BYTES) != 0 || dev_alloc(&dst, BG_COPY_BYTES) != 0 ||
        k_bench_fill_bytes(src, BG_COPY_BYTES, 7, b->st) != 0)
        goto out;
    for (int i = 0; i < 2; i++)
        if (cudaMemcpyAsync(dst, src, BG_COPY_BYTES, cudaMemcpyDeviceToDevice, b->st) !=
            cudaSuccess)
            goto out;
    for (int p = 0; p < reps; p++) {
        if (cudaEventRecord(b->ev[2 * p], b->st) != cudaSuccess ||
            cudaMemcpyAsync(dst, src, BG_COPY_BYTES, cudaMemcpyDeviceToDevice, b->st) !=
                cudaSuccess ||
            cudaEventRecord(b->ev[2 * p + 1], b->st) != cudaSuccess)
            goto out;
    }
    if (cudaStreamSynchronize(b->st) != cudaSuccess || elapsed_all(b, reps, el) != 0)
        goto out;
    r.kid = -1;
    r.us = 1000.0 * median(el, reps);
    r.weight_bytes = 2.0 * BG_COPY_BYTES; /* read + write */
    r.gbps = r.weight_bytes / r.us / 1000.0;
    r.reps = reps;
    r.ok = true;
    printf("copy bandwidth (cudaMemcpy D2D 1 GiB, read + write): %.0f GB/s (%.1f us)\n", r.gbps,
           r.us);
    rc = add_record(b, &r);
out:
    if (rc != 0)
        fprintf(stderr, "copy bandwidth measurement failed: %s\n",
                cudaGetErrorString(cudaGetLastError()));
    cudaFree(src);
    cudaFree(dst);
    return rc;
}

static int bench_init(bg_bench *b, const bg_opts *o)
{
    memset(b, 0, sizeof *b);
    b->opts = o;
    b->rng = 0x9E3779B97F4A7C15ull;
    CK(cudaSetDevice(0));
    struct cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    snprintf(b->gpu, sizeof b->gpu, "%s", p.name);
    b->sms = p.multiProcessorCount;
    b->l2_mb = p.l2CacheSize >> 20;
    int dv = 0, rv = 0;
    CK(cudaDriverGetVersion(&dv));
    CK(cudaRuntimeGetVersion(&rv));
    snprintf(b->cuda_driver, sizeof b->cuda_driver, "%d.%d", dv / 1000, dv % 1000 / 10);
    snprintf(b->runtime, sizeof b->runtime, "%d.%d", rv / 1000, rv % 1000 / 10);
    if (o->driver && o->driver[0])
        snprintf(b->driver, sizeof b->driver, "%s (CUDA %s)", o->driver, b->cuda_driver);
    else
        snprintf(b->driver, sizeof b->driver, "%s", b->cuda_driver);
    const time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) || strftime(b->date, sizeof b->date, "%Y-%m-%d", &tm) == 0)
        snprintf(b->date, sizeof b->date, "unknown");
    CK(cudaStreamCreate(&b->st));
    for (; b->n_ev < 2 * BG_REPS; b->n_ev++)
        CK(cudaEventCreate(&b->ev[b->n_ev]));
    if (cublasCreate(&b->cublas) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasCreate failed\n");
        b->cublas = NULL;
        return -1;
    }
    if (cublasSetStream(b->cublas, b->st) != CUBLAS_STATUS_SUCCESS ||
        cublasGetVersion(b->cublas, &b->cublas_version) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasSetStream / cublasGetVersion failed\n");
        return -1;
    }
    if (rt_pool_create(0, &b->pool) != 0) {
        fprintf(stderr, "rt_pool_create failed\n");
        return -1;
    }
    printf("device: %s, %d SMs, L2 %d MB; driver %s; runtime %s; cuBLAS %d; CPU reference on %d "
           "threads\n",
           b->gpu, b->sms, b->l2_mb, b->driver, b->runtime, b->cublas_version,
           rt_pool_size(b->pool));
    return 0;
}

static void bench_close(bg_bench *b)
{
    rt_pool_destroy(b->pool);
    if (b->cublas)
        cublasDestroy(b->cublas);
    for (int i = 0; i < b->n_ev; i++)
        cudaEventDestroy(b->ev[i]);
    if (b->st)
        cudaStreamDestroy(b->st);
    free(b->rec);
    free(b->notes);
}

int main(int argc, char **argv)
{
    bg_opts opts;
    const int pa = parse_args(argc, argv, &opts);
    if (pa != 0) {
        usage(pa > 0 ? stdout : stderr);
        return pa > 0 ? 0 : 2;
    }
    if (k_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    bg_bench *b = malloc(sizeof *b);
    if (!b) {
        fprintf(stderr, "out of host memory\n");
        return 1;
    }
    const char *aborted = NULL;
    const double t0 = now_us();
    if (bench_init(b, &opts) != 0) {
        bench_close(b);
        free(b);
        return 1;
    }
    if (write_json(b, "running") != 0) { /* fail fast on an unwritable --out */
        bench_close(b);
        free(b);
        return 1;
    }
    if (copy_bandwidth(b) != 0)
        aborted = "the copy-bandwidth measurement failed";
    for (int i = 0; !aborted && i < opts.n_shapes; i++) {
        if (bench_shape(b, opts.shapes[i].n, opts.shapes[i].k) != 0)
            aborted = "a CUDA error or an allocation failure stopped the run (see stderr)";
        if (write_json(b, aborted ? aborted : "running") != 0 && !aborted)
            aborted = "the JSON file could not be written";
    }
    const int wj = write_json(b, aborted ? aborted : "complete");
    printf("\n%zu records, %d failure(s)%s, %.0f s; JSON: %s\n", b->n_rec, b->failures,
           aborted ? ", ABORTED" : "", (now_us() - t0) * 1e-6, opts.out);
    if (aborted)
        fprintf(stderr, "bench_gemm: %s\n", aborted);
    const int status = (aborted || wj != 0 || b->failures) ? 1 : 0;
    bench_close(b);
    free(b);
    return status;
}

/* test_btc.c — the binary tensor-core GEMM (k_btc.h) against the CPU reference rt_cpu_matmul_q6.
 *
 * For the benchmark shapes (LLaMA-2 7B/13B/70B, LLaMA-3 8B; g = 128) plus a 300 x 256 shape (a
 * tail in n), m in {1, 3, 8, 16, 64, 512}, A6 (codes in [-32, 31]) and A8 (any int8):
 *   - unit scales: the result equals the exact integer sum over groups (taken from rt_cpu_matmul_q6
 *     run per group), after checking that the sum of |group sums| stays under 2^24 so that every
 *     fp32 order is exact;
 *   - random scales: |y - ref| <= 1e-3 * max |ref row| against rt_cpu_matmul_q6;
 *   - the same call twice gives the same bits (deterministic);
 *   - nothing is written past column n of a row (ldy > n) nor to the rows after m.
 * The reference covers rows 0..63 and 8 sampled rows of 64..511 (all 512 rows for the small shape).
 * Also checks that groups which are not multiples of 128 are refused. Big shapes are timed at
 * m = 1, 8, 512 (informational). Skips (77) without a GPU.
 */
#include "fq_base.h"
#include "fq_pack.h"
#include "k.h"
#include "k_btc.h"
#include "rt_cpu_int6.h"
#include "rt_pool.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_M     512        /* activation rows generated per (shape, bits) */
#define MAX_K     32768      /* the weight generator's row buffer */
#define LDY_PAD   4          /* columns past n in each output row, checked untouched */
#define N_SAMPLED 8          /* reference rows sampled from 64..511 */
#define FULL_ROWS 64         /* reference rows 0..63: every m <= 64 is checked completely */
#define EXACT_LIM 16777216.0 /* 2^24 */
#define SHOW_BAD  5          /* mismatches printed per check */
#define TIME_REPS 10

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* ---- random numbers (xorshift64*), state owned by the caller ---- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

static rng rng_seeded(uint64_t seed)
{
    rng r = {seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull};
    for (int i = 0; i < 4; i++)
        rng_next(&r);
    return r;
}

static float rng_unit(rng *r) /* [0, 1) */
{
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* ---- test data ---- */

typedef struct shape {
    int n, k, g;
} shape;

/* One linear: host packed codes and scales, the device copies, the BTC form (with the random
 * scales, and again with unit scales). */
typedef struct wdata {
    int n, k, g, ng;
    long rb;
    uint8_t *packed; /* [n, rb] */
    uint16_t *sw;    /* [n, ng] random fp16 */
    uint8_t *d_packed;
    uint16_t *d_sw, *d_sw_one;
    void *d_buf;
    k_btc_w bw, bw_one;
} wdata;

/* Activations of one bit width and their references on the sampled rows. */
typedef struct adata {
    int bits;
    int8_t *qx; /* [MAX_M, k] */
    float *sx;  /* [MAX_M, ng] random */
    int8_t *d_qx;
    float *d_sx, *d_sx_one;
    int n_rows;
    int rows[MAX_M]; /* reference rows, ascending */
    float *yref;     /* [n_rows, n] rt_cpu_matmul_q6, random scales */
    int64_t *dsum;   /* [n_rows, n] sum over groups of the exact group sums */
    int64_t *dabs;   /* [n_rows, n] sum over groups of their absolute values */
} adata;

typedef struct wgen_task {
    const wdata *w;
    uint64_t seed;
} wgen_task;

/* Rows of weights: codes uniform in [-32, 31], scales in [0.002, 0.03). */
static void wgen_row(void *ctx, int64_t row)
{
    const wgen_task *t = ctx;
    const wdata *w = t->w;
    int8_t q[MAX_K];
    rng r = rng_seeded(t->seed ^ (uint64_t)row * 0xD1B54A32D192ED03ull);
    for (int i = 0; i < w->k; i++)
        q[i] = (int8_t)((int)(rng_next(&r) >> 58) - 32);
    fq_pack_row(q, w->k, w->packed + row * w->rb);
    for (int gi = 0; gi < w->ng; gi++)
        w->sw[row * w->ng + gi] = fq_f32_to_f16(0.002f + 0.028f * rng_unit(&r));
}

static void wdata_free(wdata *w)
{
    free(w->packed);
    free(w->sw);
    cudaFree(w->d_packed);
    cudaFree(w->d_sw);
    cudaFree(w->d_sw_one);
    cudaFree(w->d_buf);
    memset(w, 0, sizeof *w);
}

static int wdata_make(rt_pool *pool, const shape *s, uint64_t seed, wdata *w)
{
    memset(w, 0, sizeof *w);
    w->n = s->n;
    w->k = s->k;
    w->g = s->g;
    w->ng = s->k / s->g;
    w->rb = (long)fq_pack_row_bytes(s->k);
    const size_t pbytes = (size_t)w->n * (size_t)w->rb, sbytes = (size_t)w->n * w->ng * 2;
    w->packed = malloc(pbytes);
    w->sw = malloc(sbytes);
    uint16_t *ones = malloc(sbytes);
    if (!w->packed || !w->sw || !ones || w->k > MAX_K) {
        fprintf(stderr, "out of host memory (or k > %d)\n", MAX_K);
        free(ones);
        return -1;
    }
    wgen_task t = {w, seed};
    rt_pool_run(pool, w->n, wgen_row, &t);
    for (size_t i = 0; i < (size_t)w->n * w->ng; i++)
        ones[i] = 0x3C00; /* 1.0 */

    cudaError_t e = cudaMalloc((void **)&w->d_packed, pbytes);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&w->d_sw, sbytes);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&w->d_sw_one, sbytes);
    const k_w6 dw = {w->d_packed, w->d_sw, w->rb, w->n, w->k, w->g};
    const size_t bbytes = k_btc_weight_bytes(&dw);
    if (e == cudaSuccess)
        e = cudaMalloc(&w->d_buf, bbytes ? bbytes : 1);
    if (e == cudaSuccess)
        e = cudaMemcpy(w->d_packed, w->packed, pbytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(w->d_sw, w->sw, sbytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(w->d_sw_one, ones, sbytes, cudaMemcpyHostToDevice);
    free(ones);
    if (e != cudaSuccess) {
        fprintf(stderr, "weights to the device: %s\n", cudaGetErrorString(e));
        return -1;
    }
    if (bbytes == 0 || k_btc_pack_weights(&dw, w->d_buf, bbytes, &w->bw, 0) != 0) {
        fprintf(stderr, "k_btc_pack_weights refused n=%d k=%d g=%d\n", w->n, w->k, w->g);
        return -1;
    }
    CK(cudaDeviceSynchronize());
    w->bw_one = w->bw;
    w->bw_one.sw = w->d_sw_one;
    return 0;
}

static void adata_free(adata *a)
{
    free(a->qx);
    free(a->sx);
    free(a->yref);
    free(a->dsum);
    free(a->dabs);
    cudaFree(a->d_qx);
    cudaFree(a->d_sx);
    cudaFree(a->d_sx_one);
    memset(a, 0, sizeof *a);
}

/* Codes: rows 1 and 2 all at the smallest and the largest code, row 5 alternating between them,
 * the rest uniform over the bit width's range. Scales in [2^-8, 2^-6). */
static void acts_fill(adata *a, int k, int ng, uint64_t seed)
{
    rng r = rng_seeded(seed);
    const int lo = a->bits == 8 ? -128 : -32, hi = a->bits == 8 ? 127 : 31;
    for (int i = 0; i < MAX_M; i++)
        for (int j = 0; j < k; j++) {
            int v = lo + (int)(rng_next(&r) % (uint64_t)(hi - lo + 1));
            if (i == 1 || (i == 5 && j % 2 == 0))
                v = lo;
            else if (i == 2 || (i == 5 && j % 2 == 1))
                v = hi;
            a->qx[(size_t)i * k + j] = (int8_t)v;
        }
    for (size_t i = 0; i < (size_t)MAX_M * ng; i++)
        a->sx[i] = (1.0f + 3.0f * rng_unit(&r)) / 256.0f;
}

/* Reference rows: 0..63 and N_SAMPLED spread over 64..511 (every row when n * k is small). */
static void acts_rows(adata *a, const wdata *w)
{
    static const int sampled[N_SAMPLED] = {65, 127, 200, 255, 256, 333, 448, 511};
    a->n_rows = 0;
    if ((long)w->n * w->k <= 1L << 20) {
        for (int i = 0; i < MAX_M; i++)
            a->rows[a->n_rows++] = i;
        return;
    }
    for (int i = 0; i < FULL_ROWS; i++)
        a->rows[a->n_rows++] = i;
    for (int i = 0; i < N_SAMPLED; i++)
        a->rows[a->n_rows++] = sampled[i];
}

/* The references on the sampled rows: rt_cpu_matmul_q6 with the random scales over all of k, and
 * with unit scales group by group (exact group sums), summed and summed in absolute value. */
static int acts_reference(rt_pool *pool, const wdata *w, adata *a)
{
    const int R = a->n_rows, n = w->n, k = w->k, g = w->g, ng = w->ng;
    int8_t *qs = malloc((size_t)R * k), *qg = malloc((size_t)R * g);
    float *ss = malloc((size_t)R * ng * sizeof *ss), *xone = malloc((size_t)R * sizeof *xone);
    float *yg = malloc((size_t)R * n * sizeof *yg);
    uint16_t *wone = malloc((size_t)n * sizeof *wone);
    a->yref = malloc((size_t)R * n * sizeof *a->yref);
    a->dsum = calloc((size_t)R * n, sizeof *a->dsum);
    a->dabs = calloc((size_t)R * n, sizeof *a->dabs);
    int rc = -1;
    if (!qs || !qg || !ss || !xone || !yg || !wone || !a->yref || !a->dsum || !a->dabs) {
        fprintf(stderr, "out of host memory\n");
        goto out;
    }
    for (int i = 0; i < R; i++) {
        memcpy(qs + (size_t)i * k, a->qx + (size_t)a->rows[i] * k, (size_t)k);
        memcpy(ss + (size_t)i * ng, a->sx + (size_t)a->rows[i] * ng, (size_t)ng * sizeof *ss);
        xone[i] = 1.0f;
    }
    for (int j = 0; j < n; j++)
        wone[j] = 0x3C00;
    rt_cpu_matmul_q6(pool, qs, ss, R, k, g, w->packed, w->sw, w->rb, n, a->yref);
    for (int gi = 0; gi < ng; gi++) {
        for (int i = 0; i < R; i++)
            memcpy(qg + (size_t)i * g, qs + (size_t)i * k + (size_t)gi * g, (size_t)g);
        /* group gi of every packed row starts at chunk gi * g / 64 (g is a multiple of 64) */
        const uint8_t *pg = w->packed + (size_t)gi * (g / FQ_PACK_CHUNK) * FQ_PACK_CHUNK_BYTES;
        rt_cpu_matmul_q6(pool, qg, xone, R, g, g, pg, wone, w->rb, n, yg);
        for (size_t i = 0; i < (size_t)R * n; i++) {
            const int64_t d = (int64_t)yg[i]; /* exact: |d| <= 128 * 32 * g < 2^24 */
            a->dsum[i] += d;
            a->dabs[i] += d < 0 ? -d : d;
        }
    }
    rc = 0;
out:
    free(qs);
    free(qg);
    free(ss);
    free(xone);
    free(yg);
    free(wone);
    return rc;
}

static int adata_make(rt_pool *pool, const wdata *w, int bits, uint64_t seed, adata *a)
{
    memset(a, 0, sizeof *a);
    a->bits = bits;
    const size_t qbytes = (size_t)MAX_M * w->k, sbytes = (size_t)MAX_M * w->ng * sizeof(float);
    a->qx = malloc(qbytes);
    a->sx = malloc(sbytes);
    float *ones = malloc(sbytes);
    if (!a->qx || !a->sx || !ones) {
        fprintf(stderr, "out of host memory\n");
        free(ones);
        return -1;
    }
    acts_fill(a, w->k, w->ng, seed);
    for (size_t i = 0; i < (size_t)MAX_M * w->ng; i++)
        ones[i] = 1.0f;
    cudaError_t e = cudaMalloc((void **)&a->d_qx, qbytes);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&a->d_sx, sbytes);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&a->d_sx_one, sbytes);
    if (e == cudaSuccess)
        e = cudaMemcpy(a->d_qx, a->qx, qbytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(a->d_sx, a->sx, sbytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(a->d_sx_one, ones, sbytes, cudaMemcpyHostToDevice);
    free(ones);
    if (e != cudaSuccess) {
        fprintf(stderr, "activations to the device: %s\n", cudaGetErrorString(e));
        return -1;
    }
    acts_rows(a, w);
    return acts_reference(pool, w, a);
}

/* ---- one case ---- */

/* Device buffers of one shape's cases, sized for MAX_M rows. */
typedef struct outbuf {
    float *d_y; /* [MAX_M, ldy] */
    void *d_ws;
    size_t ws_bytes;
    long ldy;
    float *y0, *y1; /* host copies of rows [0, m + 8) of two runs */
} outbuf;

static bool same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Runs the GEMM on rows [0, m) into a poisoned d_y and copies rows [0, min(m + 8, MAX_M)) to y. */
static int run_gemm(const adata *a, const k_btc_w *bw, const float *d_sx, int m, outbuf *o,
                    float *y)
{
    const int rows = m + 8 < MAX_M ? m + 8 : MAX_M;
    CK(cudaMemset(o->d_y, 0xFF, (size_t)rows * o->ldy * sizeof(float)));
    if (k_btc_gemm(a->d_qx, d_sx, m, a->bits, bw, o->d_y, o->ldy, o->d_ws, o->ws_bytes, 0) != 0) {
        fprintf(stderr, "k_btc_gemm refused m=%d bits=%d n=%d k=%d\n", m, a->bits, bw->n, bw->k);
        return -1;
    }
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y, o->d_y, (size_t)rows * o->ldy * sizeof(float), cudaMemcpyDeviceToHost));
    return 0;
}

/* Columns [n, ldy) of rows [0, m) and all of rows [m, min(m + 8, MAX_M)) must still be poison. */
static long count_stray(const float *y, int m, int n, long ldy)
{
    const int rows = m + 8 < MAX_M ? m + 8 : MAX_M;
    long bad = 0;
    for (int i = 0; i < rows; i++)
        for (long j = i < m ? n : 0; j < ldy; j++) {
            uint32_t u;
            memcpy(&u, &y[(size_t)i * ldy + j], sizeof u);
            if (u != 0xFFFFFFFFu && bad++ < SHOW_BAD)
                fprintf(stderr, "    stray write at row %d col %ld\n", i, j);
        }
    return bad;
}

/* Unit scales: exact equality with the integer sums (after checking they are exact in fp32). */
static long check_unit(const wdata *w, const adata *a, int m, const float *y, long ldy)
{
    long bad = 0;
    for (int r = 0; r < a->n_rows && a->rows[r] < m; r++) {
        const int i = a->rows[r];
        for (int j = 0; j < w->n; j++) {
            const size_t ri = (size_t)r * w->n + j;
            if ((double)a->dabs[ri] >= EXACT_LIM) {
                if (bad++ < SHOW_BAD)
                    fprintf(stderr, "    row %d col %d: sum of |group sums| %lld >= 2^24\n", i, j,
                            (long long)a->dabs[ri]);
                continue;
            }
            const float want = (float)a->dsum[ri], got = y[(size_t)i * ldy + j];
            if (!same_bits(got, want) && bad++ < SHOW_BAD)
                fprintf(stderr, "    unit: row %d col %d: got %.9g want %.9g\n", i, j, got, want);
        }
    }
    return bad;
}

/* Random scales: within 1e-3 of the largest |reference| of the row. Returns the mismatch count
 * and the largest error relative to that row maximum in *rel. */
static long check_rand(const wdata *w, const adata *a, int m, const float *y, long ldy, double *rel)
{
    long bad = 0;
    *rel = 0.0;
    for (int r = 0; r < a->n_rows && a->rows[r] < m; r++) {
        const int i = a->rows[r];
        const float *ref = a->yref + (size_t)r * w->n;
        double rmax = 0.0;
        for (int j = 0; j < w->n; j++)
            rmax = fmax(rmax, fabs((double)ref[j]));
        for (int j = 0; j < w->n; j++) {
            const double got = y[(size_t)i * ldy + j], diff = fabs(got - (double)ref[j]);
            if (rmax > 0.0 && diff / rmax > *rel)
                *rel = diff / rmax;
            if (!(diff <= 1e-3 * rmax) && bad++ < SHOW_BAD)
                fprintf(stderr, "    rand: row %d col %d: got %.9g want %.9g (row max %.6g)\n", i,
                        j, got, (double)ref[j], rmax);
        }
    }
    return bad;
}

static long check_same(const float *y0, const float *y1, int m, int n, long ldy)
{
    long bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            if (!same_bits(y0[(size_t)i * ldy + j], y1[(size_t)i * ldy + j]) && bad++ < SHOW_BAD)
                fprintf(stderr, "    not deterministic: row %d col %d: %.9g then %.9g\n", i, j,
                        y0[(size_t)i * ldy + j], y1[(size_t)i * ldy + j]);
    return bad;
}

/* Mean time of one k_btc_gemm call (activation planes included) in microseconds. */
static int time_gemm(const adata *a, const wdata *w, int m, outbuf *o, cudaEvent_t ev0,
                     cudaEvent_t ev1, double *us)
{
    for (int r = 0; r < 2 + TIME_REPS; r++) {
        if (r == 2)
            CK(cudaEventRecord(ev0, 0));
        if (k_btc_gemm(a->d_qx, a->d_sx, m, a->bits, &w->bw, o->d_y, o->ldy, o->d_ws, o->ws_bytes,
                       0) != 0)
            return -1;
    }
    CK(cudaEventRecord(ev1, 0));
    CK(cudaEventSynchronize(ev1));
    float ms = 0.0f;
    CK(cudaEventElapsedTime(&ms, ev0, ev1));
    *us = 1000.0 * ms / TIME_REPS;
    return 0;
}

/* One (shape, bits, m): returns the number of failed checks, or -1 on a CUDA error. */
static int run_case(const wdata *w, const adata *a, int m, bool timed, outbuf *o, cudaEvent_t ev0,
                    cudaEvent_t ev1)
{
    if (run_gemm(a, &w->bw_one, a->d_sx_one, m, o, o->y0) != 0)
        return -1;
    const long bad_unit = check_unit(w, a, m, o->y0, o->ldy);
    const long stray_unit = count_stray(o->y0, m, w->n, o->ldy);
    if (run_gemm(a, &w->bw, a->d_sx, m, o, o->y0) != 0 ||
        run_gemm(a, &w->bw, a->d_sx, m, o, o->y1) != 0)
        return -1;
    double rel = 0.0;
    const long bad_rand = check_rand(w, a, m, o->y0, o->ldy, &rel);
    const long stray_rand = count_stray(o->y0, m, w->n, o->ldy);
    const long bad_same = check_same(o->y0, o->y1, m, w->n, o->ldy);
    const int fails =
        (bad_unit != 0) + (stray_unit + stray_rand != 0) + (bad_rand != 0) + (bad_same != 0);

    char tbuf[96] = "";
    if (timed) {
        double us = 0.0;
        if (time_gemm(a, w, m, o, ev0, ev1, &us) != 0)
            return -1;
        const double wbytes = (double)w->n * w->k * 0.75;
        snprintf(tbuf, sizeof tbuf, "  %9.1f us  %7.1f GB/s (weights)  %7.1f TOPS", us,
                 wbytes / (us * 1e-6) / 1e9, 2.0 * m * w->n * w->k / (us * 1e-6) / 1e12);
    }
    int checked = 0;
    for (int r = 0; r < a->n_rows && a->rows[r] < m; r++)
        checked++;
    printf("%-4s n=%5d k=%5d g=%d m=%3d a%d: unit %s, rand %s (max rel %.1e), %s, %s (%d rows)%s\n",
           fails ? "FAIL" : "ok", w->n, w->k, w->g, m, a->bits, bad_unit ? "DIFF" : "exact",
           bad_rand ? "DIFF" : "ok", rel, bad_same ? "NONDETERMINISTIC" : "deterministic",
           stray_unit + stray_rand ? "STRAY WRITES" : "no stray writes", checked, tbuf);
    if (fails)
        fprintf(stderr, "  counts: unit %ld, rand %ld, stray %ld, nondeterministic %ld\n", bad_unit,
                bad_rand, stray_unit + stray_rand, bad_same);
    fflush(stdout);
    return fails;
}

static void outbuf_free(outbuf *o)
{
    cudaFree(o->d_y);
    cudaFree(o->d_ws);
    free(o->y0);
    free(o->y1);
    memset(o, 0, sizeof *o);
}

static int outbuf_make(const wdata *w, outbuf *o)
{
    memset(o, 0, sizeof *o);
    o->ldy = w->n + LDY_PAD;
    o->ws_bytes = k_btc_ws_bytes(MAX_M, w->k, w->g, 8);
    const size_t ybytes = (size_t)MAX_M * o->ldy * sizeof(float);
    o->y0 = malloc(ybytes);
    o->y1 = malloc(ybytes);
    if (!o->y0 || !o->y1 || o->ws_bytes == 0) {
        fprintf(stderr, "out of host memory (or k_btc_ws_bytes refused k=%d g=%d)\n", w->k, w->g);
        return -1;
    }
    CK(cudaMalloc((void **)&o->d_y, ybytes));
    CK(cudaMalloc(&o->d_ws, o->ws_bytes));
    return 0;
}

/* The workspace must cover m and the bit width: ws_bytes grows with both. */
static int check_ws_monotone(const wdata *w)
{
    const size_t a = k_btc_ws_bytes(1, w->k, w->g, 6), b = k_btc_ws_bytes(MAX_M, w->k, w->g, 6),
                 c = k_btc_ws_bytes(MAX_M, w->k, w->g, 8);
    return a > 0 && a <= b && b <= c ? 0 : 1;
}

static int run_shape(rt_pool *pool, const shape *s, int si, cudaEvent_t ev0, cudaEvent_t ev1)
{
    static const int ms[] = {1, 3, 8, 16, 64, 512};
    static const int abits[] = {6, 8};
    const bool big = (long)s->n * s->k > 1L << 20;
    wdata w;
    outbuf o;
    int fails = 0;
    memset(&o, 0, sizeof o);
    if (wdata_make(pool, s, 1000u + (uint64_t)si, &w) != 0 || outbuf_make(&w, &o) != 0) {
        wdata_free(&w);
        outbuf_free(&o);
        return -1;
    }
    fails += check_ws_monotone(&w);
    for (size_t bi = 0; bi < sizeof abits / sizeof abits[0] && fails >= 0; bi++) {
        adata a;
        if (adata_make(pool, &w, abits[bi], 2000u + 10u * (uint64_t)si + bi, &a) != 0) {
            adata_free(&a);
            fails = -1;
            break;
        }
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            const int m = ms[mi];
            const bool timed = big && (m == 1 || m == 8 || m == 512);
            const int f = run_case(&w, &a, m, timed, &o, ev0, ev1);
            if (f < 0) {
                fails = -1;
                break;
            }
            fails += f;
        }
        adata_free(&a);
    }
    outbuf_free(&o);
    wdata_free(&w);
    return fails;
}

/* Groups that are not multiples of 128, bad bit widths and short workspaces are refused. */
static int check_refusals(void)
{
    int fails = 0;
    _Alignas(256) uint8_t dummy[256] = {0};
    const k_w6 w64 = {dummy, (const uint16_t *)dummy, 192, 16, 256, 64};
    k_btc_w out;
    if (k_btc_weight_bytes(&w64) != 0 || k_btc_pack_weights(&w64, dummy, 1 << 20, &out, 0) != -1)
        fails++;
    if (k_btc_ws_bytes(8, 256, 64, 6) != 0 || k_btc_ws_bytes(8, 256, 128, 7) != 0 ||
        k_btc_ws_bytes(0, 256, 128, 6) != 0)
        fails++;
    const k_btc_w b64 = {dummy, (const uint16_t *)dummy, 16, 256, 64};
    if (k_btc_gemm((const int8_t *)dummy, (const float *)dummy, 1, 6, &b64, (float *)dummy, 16,
                   dummy, 1 << 20, 0) != -1)
        fails++;
    const k_btc_w b128 = {dummy, (const uint16_t *)dummy, 16, 256, 128};
    if (k_btc_gemm((const int8_t *)dummy, (const float *)dummy, 1, 7, &b128, (float *)dummy, 16,
                   dummy, 1 << 20, 0) != -1 ||
        k_btc_gemm((const int8_t *)dummy, (const float *)dummy, 1, 6, &b128, (float *)dummy, 16,
                   dummy, k_btc_ws_bytes(1, 256, 128, 6) - 1, 0) != -1)
        fails++;
    printf("%-4s refusals (g %% 128 != 0, bits 7, m 0, short workspace)\n", fails ? "FAIL" : "ok");
    return fails;
}

int main(void)
{
    if (k_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    char desc[256] = "";
    if (k_device_describe(0, desc, sizeof desc) == 0)
        printf("device 0: %s\n", desc);
    rt_pool *pool = NULL;
    if (rt_pool_create(0, &pool) != 0) {
        fprintf(stderr, "rt_pool_create failed\n");
        return 1;
    }
    cudaEvent_t ev0, ev1;
    if (cudaEventCreate(&ev0) != cudaSuccess || cudaEventCreate(&ev1) != cudaSuccess) {
        fprintf(stderr, "cudaEventCreate failed\n");
        rt_pool_destroy(pool);
        return 1;
    }
    static const shape shapes[] = {
        {300, 256, 128},    {12288, 4096, 128}, {4096, 4096, 128},  {11008, 4096, 128},
        {4096, 11008, 128}, {15360, 5120, 128}, {5120, 5120, 128},  {13824, 5120, 128},
        {5120, 13824, 128}, {10240, 8192, 128}, {8192, 8192, 128},  {28672, 8192, 128},
        {8192, 28672, 128}, {6144, 4096, 128},  {14336, 4096, 128}, {4096, 14336, 128},
    };
    const double t0 = fq_now_s();
    int failures = check_refusals();
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int f = run_shape(pool, &shapes[si], (int)si, ev0, ev1);
        if (f < 0) {
            fprintf(stderr, "aborted at shape %dx%d\n", shapes[si].n, shapes[si].k);
            failures++;
            break;
        }
        failures += f;
    }
    cudaEventDestroy(ev0);
    cudaEventDestroy(ev1);
    rt_pool_destroy(pool);
    printf("%.1f s\n", fq_now_s() - t0);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}

/* test_gemm_w6_prefill.c — the prefill GEMM (k_gemm_w6_mma_prefill) against the CPU reference
 * rt_cpu_matmul_q6 on the benchmark and model-like shapes, m in {1, 17, 64, 77, 128, 512, 2048},
 * A8 and A6 codes: with unit scales bit for bit (after checking that every output's sum of
 * |group sums| is < 2^24, so the fp32 order cannot matter), with random positive scales within
 * 1e-3 of the row's largest |y|; one case with ldy > n and a column offset (nothing outside the
 * written block touched); bad arguments refused. Rows are checked on a sample (first, last, tail
 * and random rows) whose reference is computed once per shape for m = 2048 and reused for smaller m
 * (rows are independent). Then times the big shapes at m = 512 and 2048 (informational). Skips
 * (77) without a GPU. */
#include "fq_base.h"
#include "fq_pack.h"
#include "k.h"
#include "k_gemm.h"
#include "rt_cpu_int6.h"
#include "rt_pool.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_M      2048
#define N_MS       7
#define MAX_ROWS   128 /* sampled rows */
#define N_TIMED    25
#define N_WARMUP   3
#define SHOW_FIRST 5 /* mismatches printed per check */

static const int ms[N_MS] = {1, 17, 64, 77, 128, 512, 2048};

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static float rng_unit(rng *r) /* uniform in [0, 1) */
{
    return (float)((double)(rng_next(r) >> 40) * (1.0 / 16777216.0));
}

static void rng_bytes(rng *r, uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = rng_next(r);
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)(rng_next(r) >> 56);
}

/* Activation codes: any int8 (A8) or [-32, 31] (A6). */
static void rng_codes(rng *r, int bits, int8_t *q, size_t n)
{
    rng_bytes(r, (uint8_t *)q, n);
    if (bits == 6)
        for (size_t i = 0; i < n; i++)
            q[i] = (int8_t)(((uint8_t)q[i] & 63) - 32);
}

typedef struct {
    int n, k, g;
    int big; /* a benchmark shape: timed */
} shape;

/* Everything the checks share. */
typedef struct {
    rt_pool *pool;
    rng r;
    int rows[MAX_ROWS]; /* sampled rows, ascending */
    int n_rows;
    cudaEvent_t ev[N_TIMED + 1];
    int failures;
} ctx;

/* One linear: host and device copies of its weights, unit and random scales. */
typedef struct {
    int n, k, g, ng;
    int64_t rb;
    uint8_t *packed;
    uint16_t *sw_unit, *sw_rand;
    uint8_t *d_packed;
    uint16_t *d_sw_unit, *d_sw_rand;
} wts;

/* Activations of one shape and bit width (MAX_M rows), their sampled rows and references. */
typedef struct {
    int8_t *qx;                 /* [MAX_M, k] */
    float *sx_unit, *sx_rand;   /* [MAX_M, ng] */
    int8_t *qs;                 /* sampled rows [R, k] */
    float *ss_unit, *ss_rand;   /* [R, ng] */
    float *ref_unit, *ref_rand; /* [R, n] */
    float *got;                 /* [n] */
    int8_t *d_qx;
    float *d_sx_unit, *d_sx_rand, *d_y; /* d_y [MAX_M, n] */
} acts;

static void wts_free(wts *w)
{
    free(w->packed);
    free(w->sw_unit);
    free(w->sw_rand);
    cudaFree(w->d_packed);
    cudaFree(w->d_sw_unit);
    cudaFree(w->d_sw_rand);
    memset(w, 0, sizeof *w);
}

/* Random packed codes (any byte pattern is a valid set of 6-bit codes; the padding codes of a
 * row whose k is not a multiple of 64 are reset to q = 0 by an unpack/pack round trip). */
static int wts_make(ctx *c, const shape *s, wts *w)
{
    memset(w, 0, sizeof *w);
    w->n = s->n;
    w->k = s->k;
    w->g = s->g;
    w->ng = s->k / s->g;
    w->rb = fq_pack_row_bytes(s->k);
    const size_t nb = (size_t)w->n * (size_t)w->rb, ns = (size_t)w->n * (size_t)w->ng;
    w->packed = malloc(nb);
    w->sw_unit = malloc(ns * sizeof(uint16_t));
    w->sw_rand = malloc(ns * sizeof(uint16_t));
    if (!w->packed || !w->sw_unit || !w->sw_rand) {
        fprintf(stderr, "out of host memory\n");
        return -1;
    }
    rng_bytes(&c->r, w->packed, nb);
    if (w->k % 64 != 0) {
        int8_t *q = malloc((size_t)w->k);
        if (!q)
            return -1;
        for (int i = 0; i < w->n; i++) {
            fq_unpack_row(w->packed + (size_t)i * w->rb, w->k, q);
            fq_pack_row(q, w->k, w->packed + (size_t)i * w->rb);
        }
        free(q);
    }
    for (size_t i = 0; i < ns; i++) {
        w->sw_unit[i] = 0x3C00; /* 1.0 */
        w->sw_rand[i] = fq_f32_to_f16(0.001f + 0.05f * rng_unit(&c->r));
    }
    CK(cudaMalloc((void **)&w->d_packed, nb));
    CK(cudaMalloc((void **)&w->d_sw_unit, ns * sizeof(uint16_t)));
    CK(cudaMalloc((void **)&w->d_sw_rand, ns * sizeof(uint16_t)));
    CK(cudaMemcpy(w->d_packed, w->packed, nb, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(w->d_sw_unit, w->sw_unit, ns * sizeof(uint16_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(w->d_sw_rand, w->sw_rand, ns * sizeof(uint16_t), cudaMemcpyHostToDevice));
    return 0;
}

static k_w6 wts_view(const wts *w, int unit)
{
    k_w6 v = {.packed = w->d_packed,
              .sw = unit ? w->d_sw_unit : w->d_sw_rand,
              .row_bytes = (long)w->rb,
              .n = w->n,
              .k = w->k,
              .g = w->g};
    return v;
}

static void acts_free(acts *a)
{
    free(a->qx);
    free(a->sx_unit);
    free(a->sx_rand);
    free(a->qs);
    free(a->ss_unit);
    free(a->ss_rand);
    free(a->ref_unit);
    free(a->ref_rand);
    free(a->got);
    cudaFree(a->d_qx);
    cudaFree(a->d_sx_unit);
    cudaFree(a->d_sx_rand);
    cudaFree(a->d_y);
    memset(a, 0, sizeof *a);
}

/* MAX_M rows of codes and scales, on the device too; the sampled rows and their references. */
static int acts_make(ctx *c, const wts *w, int bits, acts *a)
{
    memset(a, 0, sizeof *a);
    const int k = w->k, ng = w->ng, n = w->n, R = c->n_rows;
    const size_t nq = (size_t)MAX_M * k, ns = (size_t)MAX_M * ng;
    a->qx = malloc(nq);
    a->sx_unit = malloc(ns * sizeof(float));
    a->sx_rand = malloc(ns * sizeof(float));
    a->qs = malloc((size_t)R * k);
    a->ss_unit = malloc((size_t)R * ng * sizeof(float));
    a->ss_rand = malloc((size_t)R * ng * sizeof(float));
    a->ref_unit = malloc((size_t)R * n * sizeof(float));
    a->ref_rand = malloc((size_t)R * n * sizeof(float));
    a->got = malloc((size_t)n * sizeof(float));
    if (!a->qx || !a->sx_unit || !a->sx_rand || !a->qs || !a->ss_unit || !a->ss_rand ||
        !a->ref_unit || !a->ref_rand || !a->got) {
        fprintf(stderr, "out of host memory\n");
        return -1;
    }
    rng_codes(&c->r, bits, a->qx, nq);
    for (size_t i = 0; i < ns; i++) {
        a->sx_unit[i] = 1.0f;
        a->sx_rand[i] = 0.002f + 0.1f * rng_unit(&c->r);
    }
    for (int i = 0; i < R; i++) {
        const int row = c->rows[i];
        memcpy(a->qs + (size_t)i * k, a->qx + (size_t)row * k, (size_t)k);
        memcpy(a->ss_unit + (size_t)i * ng, a->sx_unit + (size_t)row * ng, ng * sizeof(float));
        memcpy(a->ss_rand + (size_t)i * ng, a->sx_rand + (size_t)row * ng, ng * sizeof(float));
    }
    rt_cpu_matmul_q6(c->pool, a->qs, a->ss_unit, R, k, w->g, w->packed, w->sw_unit, w->rb, n,
                     a->ref_unit);
    rt_cpu_matmul_q6(c->pool, a->qs, a->ss_rand, R, k, w->g, w->packed, w->sw_rand, w->rb, n,
                     a->ref_rand);
    CK(cudaMalloc((void **)&a->d_qx, nq));
    CK(cudaMalloc((void **)&a->d_sx_unit, ns * sizeof(float)));
    CK(cudaMalloc((void **)&a->d_sx_rand, ns * sizeof(float)));
    CK(cudaMalloc((void **)&a->d_y, (size_t)MAX_M * n * sizeof(float)));
    CK(cudaMemcpy(a->d_qx, a->qx, nq, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(a->d_sx_unit, a->sx_unit, ns * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(a->d_sx_rand, a->sx_rand, ns * sizeof(float), cudaMemcpyHostToDevice));
    return 0;
}

/* ---- the bound that makes the unit-scale check order-independent ---- */

typedef struct {
    const float *y; /* [R, n] group sums of one group */
    double *acc;    /* [R, n] running sums of |group sum| */
    int n;
} absum_task;

static void absum_row(void *ctx_, int64_t r)
{
    const absum_task *t = ctx_;
    const float *y = t->y + (size_t)r * t->n;
    double *acc = t->acc + (size_t)r * t->n;
    for (int j = 0; j < t->n; j++)
        acc[j] += fabs((double)y[j]);
}

/* Largest, over the sampled rows and all n, of the sum over groups of |d| (d = the exact group
 * sum): 4096 k when that is already small enough, else computed group by group with the CPU
 * reference (unit scales, k = g: y = d exactly). Returns -1 on allocation failure. */
static double unit_abs_bound(ctx *c, const wts *w, const acts *a)
{
    if ((int64_t)4096 * w->k < (1 << 24))
        return 4096.0 * w->k;
    if (w->g % FQ_PACK_CHUNK != 0) {
        fprintf(stderr, "cannot bound g=%d with k=%d\n", w->g, w->k);
        return INFINITY;
    }
    const int R = c->n_rows, n = w->n, g = w->g;
    int8_t *qg = malloc((size_t)R * g);
    float *ones = malloc((size_t)R * sizeof(float));
    uint16_t *sw1 = malloc((size_t)n * sizeof(uint16_t));
    float *y = malloc((size_t)R * n * sizeof(float));
    double *acc = calloc((size_t)R * n, sizeof(double));
    double worst = -1.0;
    if (qg && ones && sw1 && y && acc) {
        for (int i = 0; i < R; i++)
            ones[i] = 1.0f;
        for (int j = 0; j < n; j++)
            sw1[j] = 0x3C00;
        absum_task t = {.y = y, .acc = acc, .n = n};
        for (int gi = 0; gi < w->ng; gi++) {
            for (int i = 0; i < R; i++)
                memcpy(qg + (size_t)i * g, a->qs + (size_t)i * w->k + (size_t)gi * g, (size_t)g);
            const uint8_t *pk = w->packed + (size_t)gi * (g / FQ_PACK_CHUNK) * FQ_PACK_CHUNK_BYTES;
            rt_cpu_matmul_q6(c->pool, qg, ones, R, g, g, pk, sw1, w->rb, n, y);
            rt_pool_run(c->pool, R, absum_row, &t);
        }
        worst = 0.0;
        for (size_t i = 0; i < (size_t)R * n; i++)
            if (acc[i] > worst)
                worst = acc[i];
    } else {
        fprintf(stderr, "out of host memory\n");
    }
    free(qg);
    free(ones);
    free(sw1);
    free(y);
    free(acc);
    return worst;
}

/* ---- running and checking ---- */

static int launch(const wts *w, const acts *a, int m, int unit)
{
    const k_w6 v = wts_view(w, unit);
    return k_gemm_w6_mma_prefill(a->d_qx, unit ? a->d_sx_unit : a->d_sx_rand, m, &v, a->d_y,
                                 (long)w->n, 0);
}

/* Runs m rows and compares the sampled rows < m with the reference: unit scales bit for bit,
 * random scales within 1e-3 of the row's largest |reference|. Returns the number of mismatches
 * (the first SHOW_FIRST printed) or -1 when the run itself failed; *worst = largest |err| /
 * row max. */
static long run_check(ctx *c, const wts *w, acts *a, int m, int unit, int bits, double *worst)
{
    const int n = w->n;
    *worst = 0.0;
    CK(cudaMemset(a->d_y, 0xFF, (size_t)m * n * sizeof(float))); /* NaN poison */
    if (launch(w, a, m, unit) != 0) {
        fprintf(stderr, "k_gemm_w6_mma_prefill refused or failed (n=%d k=%d g=%d m=%d)\n", n, w->k,
                w->g, m);
        return -1;
    }
    CK(cudaDeviceSynchronize());
    long bad = 0;
    for (int i = 0; i < c->n_rows && c->rows[i] < m; i++) {
        const int row = c->rows[i];
        CK(cudaMemcpy(a->got, a->d_y + (size_t)row * n, (size_t)n * sizeof(float),
                      cudaMemcpyDeviceToHost));
        const float *ref = (unit ? a->ref_unit : a->ref_rand) + (size_t)i * n;
        double rowmax = 0.0;
        for (int j = 0; j < n; j++)
            rowmax = fmax(rowmax, fabs((double)ref[j]));
        for (int j = 0; j < n; j++) {
            const double d = fabs((double)a->got[j] - (double)ref[j]);
            int ok;
            if (unit) {
                ok = memcmp(&a->got[j], &ref[j], sizeof(float)) == 0;
            } else {
                ok = d <= 1e-3 * rowmax;
                if (rowmax > 0.0 && !(d / rowmax <= *worst))
                    *worst = d / rowmax;
            }
            if (!ok) {
                if (bad < SHOW_FIRST) {
                    uint32_t gb, rb;
                    memcpy(&gb, &a->got[j], 4);
                    memcpy(&rb, &ref[j], 4);
                    fprintf(stderr,
                            "  n=%d k=%d g=%d a%d m=%d %s scales: y[%d, %d] = %.9g (0x%08x), "
                            "reference %.9g (0x%08x), row max %g\n",
                            n, w->k, w->g, bits, m, unit ? "unit" : "random", row, j,
                            (double)a->got[j], gb, (double)ref[j], rb, rowmax);
                }
                bad++;
            }
        }
    }
    return bad;
}

static int cmp_float(const void *x, const void *y)
{
    const float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* Median of N_TIMED launches after N_WARMUP, in microseconds (random scales). */
static int time_case(ctx *c, const wts *w, acts *a, int m, double *us)
{
    for (int i = 0; i < N_WARMUP; i++)
        if (launch(w, a, m, 0) != 0)
            return -1;
    for (int i = 0; i < N_TIMED; i++) {
        CK(cudaEventRecord(c->ev[i], 0));
        if (launch(w, a, m, 0) != 0)
            return -1;
    }
    CK(cudaEventRecord(c->ev[N_TIMED], 0));
    CK(cudaEventSynchronize(c->ev[N_TIMED]));
    float t[N_TIMED];
    for (int i = 0; i < N_TIMED; i++)
        CK(cudaEventElapsedTime(&t[i], c->ev[i], c->ev[i + 1]));
    qsort(t, N_TIMED, sizeof t[0], cmp_float);
    *us = 1000.0 * t[N_TIMED / 2];
    return 0;
}

/* All checks of one shape and activation width; times the big shapes (A8 only). */
static int run_shape_bits(ctx *c, const shape *s, const wts *w, int bits)
{
    acts a;
    if (acts_make(c, w, bits, &a) != 0) {
        acts_free(&a);
        return -1;
    }
    const double bound = unit_abs_bound(c, w, &a);
    const int bound_ok = bound >= 0.0 && bound < 16777216.0;
    if (!bound_ok) {
        fprintf(stderr,
                "n=%d k=%d g=%d a%d: sum of |group sums| reaches %g >= 2^24: the "
                "unit-scale check would depend on the fp32 order\n",
                s->n, s->k, s->g, bits, bound);
        c->failures++;
    }
    for (int mi = 0; mi < N_MS; mi++) {
        const int m = ms[mi];
        double w_unit, w_rand;
        const long bad_unit = bound_ok ? run_check(c, w, &a, m, 1, bits, &w_unit) : 0;
        const long bad_rand = run_check(c, w, &a, m, 0, bits, &w_rand);
        int rows = 0;
        while (rows < c->n_rows && c->rows[rows] < m)
            rows++;
        const int ok = bound_ok && bad_unit == 0 && bad_rand == 0;
        if (!ok)
            c->failures++;
        printf("%-4s n=%5d k=%5d g=%3d a%d m=%4d: %2d rows; unit scales %s; random scales %ld "
               "bad, max|err|/rowmax %.2e\n",
               ok ? "ok" : "FAIL", s->n, s->k, s->g, bits, m, rows,
               !bound_ok       ? "not checked"
               : bad_unit == 0 ? "bit-exact"
               : bad_unit < 0  ? "run failed"
                               : "MISMATCH",
               bad_rand, w_rand);
        if (bad_unit > 0)
            printf("     unit-scale mismatches: %ld\n", bad_unit);
    }
    if (s->big && bits == 8) {
        for (int i = 0; i < 2; i++) {
            const int m = i == 0 ? 512 : 2048;
            double us = 0.0;
            if (time_case(c, w, &a, m, &us) != 0) {
                fprintf(stderr, "timing failed (n=%d k=%d m=%d)\n", s->n, s->k, m);
                c->failures++;
                continue;
            }
            const double tops = 2.0 * m * (double)s->n * s->k / (us * 1e-6) / 1e12;
            printf("time n=%5d k=%5d g=%3d m=%4d: %9.1f us  %6.1f TOPS\n", s->n, s->k, s->g, m, us,
                   tops);
        }
    }
    acts_free(&a);
    return 0;
}

/* ldy > n with a column offset: every written element equals the reference bit for bit (unit
 * scales), nothing else in the buffer is touched. */
static int ldy_case(ctx *c)
{
    const shape s = {100, 96, 32, 0};
    const int m = 77, ldy = s.n + 37, off = 3;
    const size_t total = off + (size_t)m * ldy + 8;
    wts w;
    int rc = wts_make(c, &s, &w);
    int8_t *qx = malloc((size_t)m * s.k);
    float *sx = malloc((size_t)m * w.ng * sizeof(float));
    float *ref = malloc((size_t)m * s.n * sizeof(float));
    uint32_t *buf = malloc(total * sizeof(uint32_t));
    int8_t *d_qx = NULL;
    float *d_sx = NULL, *d_buf = NULL;
    long bad = 0, touched = 0;
    if (rc != 0 || !qx || !sx || !ref || !buf) {
        rc = -1;
        goto done;
    }
    rng_codes(&c->r, 8, qx, (size_t)m * s.k);
    for (int i = 0; i < m * w.ng; i++)
        sx[i] = 1.0f;
    rt_cpu_matmul_q6(c->pool, qx, sx, m, s.k, s.g, w.packed, w.sw_unit, w.rb, s.n, ref);
    rc = -1;
    if (cudaMalloc((void **)&d_qx, (size_t)m * s.k) != cudaSuccess ||
        cudaMalloc((void **)&d_sx, (size_t)m * w.ng * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&d_buf, total * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(d_qx, qx, (size_t)m * s.k, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_sx, sx, (size_t)m * w.ng * sizeof(float), cudaMemcpyHostToDevice) !=
            cudaSuccess ||
        cudaMemset(d_buf, 0xFF, total * sizeof(float)) != cudaSuccess)
        goto done;
    const k_w6 v = wts_view(&w, 1);
    if (k_gemm_w6_mma_prefill(d_qx, d_sx, m, &v, d_buf + off, (long)ldy, 0) != 0 ||
        cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(buf, d_buf, total * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
        goto done;
    rc = 0;
    for (size_t i = 0; i < total; i++) {
        const long rel = (long)i - off;
        const long r = rel >= 0 ? rel / ldy : -1, col = rel >= 0 ? rel % ldy : -1;
        if (r >= 0 && r < m && col < s.n) {
            uint32_t want;
            memcpy(&want, &ref[r * s.n + col], 4);
            if (buf[i] != want) {
                if (bad < SHOW_FIRST)
                    fprintf(stderr, "  ldy case: y[%ld, %ld] = 0x%08x, reference 0x%08x\n", r, col,
                            buf[i], want);
                bad++;
            }
        } else if (buf[i] != 0xFFFFFFFFu) {
            if (touched < SHOW_FIRST)
                fprintf(stderr,
                        "  ldy case: element %zu (row %ld, col %ld) outside the block "
                        "was written: 0x%08x\n",
                        i, r, col, buf[i]);
            touched++;
        }
    }
done:
    if (rc != 0)
        fprintf(stderr, "ldy case: setup or run failed\n");
    const int ok = rc == 0 && bad == 0 && touched == 0;
    printf("%-4s ldy case n=%d k=%d g=%d m=%d ldy=%d offset=%d: %ld mismatches, %ld outside "
           "elements written\n",
           ok ? "ok" : "FAIL", s.n, s.k, s.g, m, ldy, off, bad, touched);
    if (!ok)
        c->failures++;
    cudaFree(d_qx);
    cudaFree(d_sx);
    cudaFree(d_buf);
    free(qx);
    free(sx);
    free(ref);
    free(buf);
    wts_free(&w);
    return rc;
}

/* Bad arguments are refused before any launch. */
static void arg_checks(ctx *c)
{
    const shape s = {100, 96, 32, 0};
    wts w;
    int8_t *d_qx = NULL;
    float *d_sx = NULL, *d_y = NULL;
    int refused = 0, total = 0;
    if (wts_make(c, &s, &w) == 0 && cudaMalloc((void **)&d_qx, 4096) == cudaSuccess &&
        cudaMalloc((void **)&d_sx, 4096) == cudaSuccess &&
        cudaMalloc((void **)&d_y, 65536) == cudaSuccess) {
        k_w6 v = wts_view(&w, 1);
        k_w6 bad_g = v, bad_k = v, bad_rb = v;
        bad_g.g = 48;
        bad_k.k = 100;
        bad_rb.row_bytes = 80;
        const int r[] = {
            k_gemm_w6_mma_prefill(d_qx, d_sx, 0, &v, d_y, 100, 0),      /* m = 0 */
            k_gemm_w6_mma_prefill(d_qx, d_sx, 4, &v, d_y, 99, 0),       /* ldy < n */
            k_gemm_w6_mma_prefill(d_qx, d_sx, 4, &bad_g, d_y, 100, 0),  /* g = 48 */
            k_gemm_w6_mma_prefill(d_qx, d_sx, 4, &bad_k, d_y, 100, 0),  /* k % 32 */
            k_gemm_w6_mma_prefill(d_qx, d_sx, 4, &bad_rb, d_y, 100, 0), /* row_bytes */
            k_gemm_w6_mma_prefill(d_qx + 1, d_sx, 4, &v, d_y, 100, 0),  /* qx alignment */
            k_gemm_w6_mma_prefill(d_qx, d_sx, 4, NULL, d_y, 100, 0),    /* no weights */
            k_gemm_w6_mma_prefill(NULL, d_sx, 4, &v, d_y, 100, 0),      /* no qx */
        };
        total = (int)(sizeof r / sizeof r[0]);
        for (int i = 0; i < total; i++)
            refused += r[i] == -1;
    }
    const int ok = total > 0 && refused == total;
    printf("%-4s bad arguments: %d of %d refused\n", ok ? "ok" : "FAIL", refused, total);
    if (!ok)
        c->failures++;
    cudaFree(d_qx);
    cudaFree(d_sx);
    cudaFree(d_y);
    wts_free(&w);
}

/* Rows 0..15, the last 8 rows and the middle row of every m, and 8 random rows, ascending. */
static void sample_rows(ctx *c)
{
    static const int extra = 8;
    unsigned char mark[MAX_M] = {0};
    for (int i = 0; i < 16; i++)
        mark[i] = 1;
    for (int mi = 0; mi < N_MS; mi++) {
        for (int r = ms[mi] - 8; r < ms[mi]; r++)
            if (r >= 0)
                mark[r] = 1;
        mark[ms[mi] / 2] = 1;
    }
    for (int i = 0; i < extra; i++)
        mark[rng_next(&c->r) % MAX_M] = 1;
    c->n_rows = 0;
    for (int r = 0; r < MAX_M && c->n_rows < MAX_ROWS; r++)
        if (mark[r])
            c->rows[c->n_rows++] = r;
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
    static const shape shapes[] = {
        {12288, 4096, 128, 1}, {4096, 4096, 128, 1},  {11008, 4096, 128, 1}, {4096, 11008, 128, 1},
        {15360, 5120, 128, 1}, {5120, 5120, 128, 1},  {13824, 5120, 128, 1}, {5120, 13824, 128, 1},
        {10240, 8192, 128, 1}, {8192, 8192, 128, 1},  {28672, 8192, 128, 1}, {8192, 28672, 128, 1},
        {6144, 4096, 128, 1},  {14336, 4096, 128, 1}, {4096, 14336, 128, 1}, {576, 576, 64, 0},
        {192, 576, 64, 0},     {1536, 576, 64, 0},    {576, 1536, 128, 0},   {100, 96, 32, 0},
        {33, 160, 32, 0},
    };
    ctx c;
    memset(&c, 0, sizeof c);
    c.r.s = 0x9E3779B97F4A7C15ull;
    if (rt_pool_create(0, &c.pool) != 0) {
        fprintf(stderr, "rt_pool_create failed\n");
        return 1;
    }
    for (int i = 0; i <= N_TIMED; i++)
        if (cudaEventCreate(&c.ev[i]) != cudaSuccess) {
            fprintf(stderr, "cudaEventCreate failed\n");
            return 1;
        }
    sample_rows(&c);
    const double t0 = fq_now_s();

    arg_checks(&c);
    ldy_case(&c);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        wts w;
        if (wts_make(&c, &shapes[si], &w) != 0) {
            fprintf(stderr, "FAIL n=%d k=%d: setup failed\n", shapes[si].n, shapes[si].k);
            c.failures++;
            wts_free(&w);
            continue;
        }
        for (int bits = 8; bits >= 6; bits -= 2)
            if (run_shape_bits(&c, &shapes[si], &w, bits) != 0) {
                fprintf(stderr, "FAIL n=%d k=%d a%d: setup failed\n", shapes[si].n, shapes[si].k,
                        bits);
                c.failures++;
            }
        wts_free(&w);
    }

    for (int i = 0; i <= N_TIMED; i++)
        cudaEventDestroy(c.ev[i]);
    rt_pool_destroy(c.pool);
    printf("%.1f s\n", fq_now_s() - t0);
    if (c.failures) {
        fprintf(stderr, "%d check(s) failed\n", c.failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}

/* test_gemm_w6_mma.c — both tensor-core decode GEMMs, the register-streaming k_gemm_w6_gemv and
 * the shared-memory k_gemm_w6_mma_decode, each against the CPU reference rt_cpu_matmul_q6 (split-K:
 * the fp32 sum over groups runs in another order): with unit scales the results must be identical
 * (after checking that every output's sum of |group sums| stays under 2^24, so any fp32 order is
 * exact), with random positive scales within 1e-3 of the largest |reference| of the row. Model
 * shapes (LLaMA-2 7B/13B/70B, LLaMA-3 8B with g = 128; SmolLM-like shapes with g = 64, 128, 32 and
 * odd n), m in {1, 2, 3, 4, 8, 16, 24, 32, 40, 48, 56, 64} (every token-tile count), 8- and
 * 6-bit activation codes, output strides ldy > n
 * (the columns past n must stay untouched). Large shapes are checked on three blocks of columns
 * (first, middle, last); the CPU reference runs once at m = 64 and its first rows serve the smaller
 * m. Then times the large shapes at m in {1, 8, 16, 64} (median of 60 launches, rotating over
 * enough weight copies that the 50 MB L2 cannot hold them), both kernels side by side, and prints
 * us and effective GB/s (informational). Skips (77) without a GPU. */
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

#define MAX_M       64
#define N_TIMED     60        /* timed launches per (shape, m) */
#define N_WARM      5         /* untimed launches first */
#define ROTATE_B    150e6     /* bytes of weight copies the timing rotates over (L2 is 50 MB) */
#define MAX_COPIES  16        /* most weight copies */
#define SAMPLE_CODE 20000000L /* shapes with more codes (n * k) are checked on sampled columns */
#define SAMPLE_COLS 256       /* columns per sampled block */
#define MAX_REPORT  5         /* mismatches printed per case */
#define LDY_PAD     37        /* extra columns of the ldy > n cases */

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

typedef struct shape {
    int n, k, g;
    int timed; /* a large shape: timed at every m */
} shape;

/* xorshift64*: uniform 64-bit numbers from a seed (any nonzero state). */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Uniform integer in [lo, hi]. */
static int rng_int(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* Uniform float in [lo, hi). */
static float rng_float(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((rng_next(s) >> 40) * (1.0 / 16777216.0));
}

/* ---- weights: random codes per row, packed, generated on the pool ---- */

typedef struct gen_ctx {
    int k;
    int64_t rb;
    uint64_t seed;
    uint8_t *packed;
    int fail; /* set (racily, to 1 only) when a row's buffer could not be allocated */
} gen_ctx;

static void gen_row(void *ctx, int64_t r)
{
    gen_ctx *c = ctx;
    int8_t *q = malloc((size_t)c->k);
    if (!q) {
        c->fail = 1;
        return;
    }
    uint64_t s = c->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(r + 1));
    for (int i = 0; i < c->k; i++)
        q[i] = (int8_t)rng_int(&s, FQ_QMIN, FQ_QMAX);
    fq_pack_row(q, c->k, c->packed + r * c->rb);
    free(q);
}

/* ---- the columns a case checks: all, or three blocks ---- */

typedef struct colset {
    int n_blocks;
    int c0[3], len[3]; /* block b: columns c0[b] .. c0[b] + len[b] - 1 */
    int total;         /* sum of len */
} colset;

static void colset_make(const shape *sh, colset *cs)
{
    if ((long)sh->n * sh->k <= SAMPLE_CODE || sh->n <= 3 * SAMPLE_COLS) {
        cs->n_blocks = 1;
        cs->c0[0] = 0;
        cs->len[0] = sh->n;
    } else {
        cs->n_blocks = 3;
        cs->c0[0] = 0;
        cs->c0[1] = sh->n / 2 - SAMPLE_COLS / 2;
        cs->c0[2] = sh->n - SAMPLE_COLS;
        for (int b = 0; b < 3; b++)
            cs->len[b] = SAMPLE_COLS;
    }
    cs->total = 0;
    for (int b = 0; b < cs->n_blocks; b++)
        cs->total += cs->len[b];
}

/* ---- one shape's host data ---- */

typedef struct host_w {
    int64_t rb;
    int ng;
    uint8_t *packed;   /* [n, rb] */
    uint16_t *sw_rand; /* [n, ng] */
    uint16_t *sw_unit; /* [n, ng] all fp16 1.0 */
} host_w;

typedef struct host_x {
    int8_t *qx;      /* [MAX_M, k] */
    float *sx_rand;  /* [MAX_M, ng] */
    float *sx_unit;  /* [MAX_M, ng] all 1 */
    float *ref_unit; /* [MAX_M, cs.total]: reference with unit scales on the checked columns */
    float *ref_rand; /* [MAX_M, cs.total]: with random scales */
} host_x;

/* Reference rows [0, MAX_M) on the checked columns: out[mi * cs.total + j] for column j of cs. */
static int reference(rt_pool *pool, const shape *sh, const host_w *hw, const colset *cs,
                     const int8_t *qx, const float *sx, const uint16_t *sw, float *out)
{
    float *tmp = malloc((size_t)MAX_M * cs->total * sizeof *tmp);
    if (!tmp)
        return -1;
    int off = 0;
    for (int b = 0; b < cs->n_blocks; b++) {
        rt_cpu_matmul_q6(pool, qx, sx, MAX_M, sh->k, sh->g, hw->packed + cs->c0[b] * hw->rb,
                         sw + (int64_t)cs->c0[b] * hw->ng, hw->rb, cs->len[b], tmp);
        for (int mi = 0; mi < MAX_M; mi++)
            memcpy(out + (size_t)mi * cs->total + off, tmp + (size_t)mi * cs->len[b],
                   (size_t)cs->len[b] * sizeof *tmp);
        off += cs->len[b];
    }
    free(tmp);
    return 0;
}

/* The largest sum over groups of |d| among the checked outputs (d = a group's integer dot product),
 * computed group by group with rt_cpu_matmul_q6 at unit scales; or the worst case 128 * 32 * k when
 * that is already below 2^24. Returns it in *bound; -1 on allocation failure. */
static int abs_group_bound(rt_pool *pool, const shape *sh, const host_w *hw, const colset *cs,
                           const int8_t *qx, double *bound)
{
    const double worst = 128.0 * 32.0 * sh->k;
    if (worst < 16777216.0 || sh->g < 64) {
        *bound = worst; /* (g = 32 shapes have small k here) */
        return 0;
    }
    int rc = -1;
    int maxlen = 0;
    for (int b = 0; b < cs->n_blocks; b++)
        maxlen = cs->len[b] > maxlen ? cs->len[b] : maxlen;
    int8_t *qs = malloc((size_t)MAX_M * sh->g);
    float *ones_x = malloc(MAX_M * sizeof *ones_x);
    uint16_t *ones_w = malloc((size_t)maxlen * sizeof *ones_w);
    float *d = malloc((size_t)MAX_M * maxlen * sizeof *d);
    double *acc = calloc((size_t)MAX_M * cs->total, sizeof *acc);
    if (!qs || !ones_x || !ones_w || !d || !acc)
        goto out;
    for (int i = 0; i < MAX_M; i++)
        ones_x[i] = 1.0f;
    for (int i = 0; i < maxlen; i++)
        ones_w[i] = 0x3C00;
    for (int gi = 0; gi < hw->ng; gi++) {
        for (int mi = 0; mi < MAX_M; mi++)
            memcpy(qs + (size_t)mi * sh->g, qx + (size_t)mi * sh->k + (size_t)gi * sh->g,
                   (size_t)sh->g);
        int off = 0;
        for (int b = 0; b < cs->n_blocks; b++) {
            const uint8_t *p = hw->packed + cs->c0[b] * hw->rb + (int64_t)gi * (sh->g / 64) * 48;
            rt_cpu_matmul_q6(pool, qs, ones_x, MAX_M, sh->g, sh->g, p, ones_w, hw->rb, cs->len[b],
                             d);
            for (int mi = 0; mi < MAX_M; mi++)
                for (int j = 0; j < cs->len[b]; j++)
                    acc[(size_t)mi * cs->total + off + j] += fabs(d[(size_t)mi * cs->len[b] + j]);
            off += cs->len[b];
        }
    }
    *bound = 0.0;
    for (size_t i = 0; i < (size_t)MAX_M * cs->total; i++)
        *bound = acc[i] > *bound ? acc[i] : *bound;
    rc = 0;
out:
    free(qs);
    free(ones_x);
    free(ones_w);
    free(d);
    free(acc);
    return rc;
}

/* ---- device buffers of one shape ---- */

typedef struct dev_w {
    int n_copies;
    uint8_t *packed[MAX_COPIES];
    uint16_t *sw_rand[MAX_COPIES];
    uint16_t *sw_unit;
} dev_w;

typedef struct dev_x {
    int8_t *qx;
    float *sx_rand, *sx_unit;
    float *y;        /* [MAX_M, n + LDY_PAD] */
    void *ws;        /* k_gemm_w6_gemv's workspace (NULL when it needs none) */
    size_t ws_bytes; /* its size: the most any m up to MAX_M needs */
} dev_x;

/* The kernels under test (checked alike, timed side by side). */
typedef enum kern { KERN_GEMV, KERN_MMA, KERN_COUNT } kern;

static const char *kern_name(kern kk)
{
    return kk == KERN_GEMV ? "k_gemm_w6_gemv" : "k_gemm_w6_mma_decode";
}

/* One call of kernel kk. */
static int call(kern kk, const dev_x *dx, const float *sx, int m, const k_w6 *w, float *y, long ldy)
{
    if (kk == KERN_GEMV)
        return k_gemm_w6_gemv(dx->qx, sx, m, w, y, ldy, dx->ws, dx->ws_bytes, 0);
    return k_gemm_w6_mma_decode(dx->qx, sx, m, w, y, ldy, NULL, 0, 0);
}

/* ---- one case: one m, one kind of scales ---- */

/* Compares y (m rows, stride ldy) with the reference on the checked columns; unit: exactly, else
 * within 1e-3 of the row's largest |reference|. Columns past n must still hold the poison bits.
 * Returns the number of bad values; *max_err gets the largest |difference| / tolerance. */
static long compare(const float *y, const float *ref, const colset *cs, int n, int m, long ldy,
                    int unit, const char *what, double *max_err)
{
    long bad = 0;
    *max_err = 0.0;
    for (int mi = 0; mi < m; mi++) {
        const float *r = ref + (size_t)mi * cs->total;
        double rmax = 0.0;
        for (int j = 0; j < cs->total; j++)
            rmax = fabs(r[j]) > rmax ? fabs(r[j]) : rmax;
        const double tol = 1e-3 * rmax;
        int off = 0;
        for (int b = 0; b < cs->n_blocks; b++) {
            for (int j = 0; j < cs->len[b]; j++) {
                const int col = cs->c0[b] + j;
                const float got = y[(size_t)mi * ldy + col], want = r[off + j];
                int ok;
                if (unit) {
                    ok = got == want;
                } else {
                    const double e = fabs((double)got - (double)want);
                    ok = isfinite(got) && e <= tol;
                    if (tol > 0.0 && e / tol > *max_err)
                        *max_err = e / tol;
                }
                if (!ok && bad++ < MAX_REPORT)
                    fprintf(stderr, "  %s: y[m=%d][n=%d] = %.9g, reference %.9g (row max %.6g)\n",
                            what, mi, col, (double)got, (double)want, rmax);
            }
            off += cs->len[b];
        }
        for (long col = n; col < ldy; col++) {
            uint32_t bits;
            memcpy(&bits, &y[(size_t)mi * ldy + col], sizeof bits);
            if (bits != 0xFFFFFFFFu && bad++ < MAX_REPORT)
                fprintf(stderr, "  %s: y[m=%d][%ld] past n = %d was written (0x%08x)\n", what, mi,
                        col, n, bits);
        }
    }
    return bad;
}

/* Runs one call into the poisoned y and copies y back; returns -1 on a failed call. */
static int run_call(kern kk, const dev_x *dx, const float *sx, int m, const k_w6 *w, long ldy,
                    float *y)
{
    const size_t bytes = (size_t)m * ldy * sizeof(float);
    CK(cudaMemset(dx->y, 0xFF, bytes));
    if (kk == KERN_GEMV && k_gemm_w6_gemv_ws_bytes(w, m) > dx->ws_bytes) {
        fprintf(stderr, "k_gemm_w6_gemv_ws_bytes(m=%d) = %zu exceeds the %zu allocated\n", m,
                k_gemm_w6_gemv_ws_bytes(w, m), dx->ws_bytes);
        return -1;
    }
    if (call(kk, dx, sx, m, w, dx->y, ldy) != 0) {
        fprintf(stderr, "%s failed (n=%d k=%d g=%d m=%d)\n", kern_name(kk), w->n, w->k, w->g, m);
        return -1;
    }
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y, dx->y, bytes, cudaMemcpyDeviceToHost));
    return 0;
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median time of N_TIMED launches of kernel kk at m tokens, rotating over the weight copies. */
static int time_m(kern kk, const shape *sh, const dev_w *dw, const dev_x *dx, int m,
                  cudaEvent_t *ev, double *us)
{
    const int64_t rb = fq_pack_row_bytes(sh->k);
    k_w6 w[MAX_COPIES];
    for (int c = 0; c < dw->n_copies; c++)
        w[c] = (k_w6){dw->packed[c], dw->sw_rand[c], (long)rb, sh->n, sh->k, sh->g};
    for (int i = 0; i < N_WARM; i++)
        if (call(kk, dx, dx->sx_rand, m, &w[i % dw->n_copies], dx->y, sh->n) != 0)
            return -1;
    CK(cudaEventRecord(ev[0], 0));
    for (int i = 0; i < N_TIMED; i++) {
        if (call(kk, dx, dx->sx_rand, m, &w[(i + N_WARM) % dw->n_copies], dx->y, sh->n) != 0)
            return -1;
        CK(cudaEventRecord(ev[i + 1], 0));
    }
    CK(cudaEventSynchronize(ev[N_TIMED]));
    float t[N_TIMED];
    for (int i = 0; i < N_TIMED; i++)
        CK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
    qsort(t, N_TIMED, sizeof t[0], cmp_float);
    *us = 1000.0 * 0.5 * (t[N_TIMED / 2 - 1] + t[N_TIMED / 2]);
    return 0;
}

/* ---- a shape: data, references, all cases, timings ---- */

static const int MS[] = {1, 2, 3, 4, 8, 16, 24, 32, 40, 48, 56, 64};
#define N_MS ((int)(sizeof MS / sizeof MS[0]))
static const int MS_TIMED[] = {1, 8, 16, 64};
#define N_MS_TIMED ((int)(sizeof MS_TIMED / sizeof MS_TIMED[0]))

typedef struct shape_run {
    rt_pool *pool;
    const shape *sh;
    colset cs;
    host_w hw;
    host_x hx;
    dev_w dw;
    dev_x dx;
    float *y; /* host copy of a result: [MAX_M, n + LDY_PAD] */
    int failures;
} shape_run;

static int make_weights(shape_run *r, uint64_t seed)
{
    const shape *sh = r->sh;
    host_w *hw = &r->hw;
    hw->rb = fq_pack_row_bytes(sh->k);
    hw->ng = sh->k / sh->g;
    const size_t nw = (size_t)sh->n * hw->ng;
    hw->packed = malloc((size_t)sh->n * hw->rb);
    hw->sw_rand = malloc(nw * sizeof *hw->sw_rand);
    hw->sw_unit = malloc(nw * sizeof *hw->sw_unit);
    if (!hw->packed || !hw->sw_rand || !hw->sw_unit)
        return -1;
    gen_ctx gc = {sh->k, hw->rb, seed, hw->packed, 0};
    rt_pool_run(r->pool, sh->n, gen_row, &gc);
    if (gc.fail)
        return -1;
    uint64_t s = seed ^ 0x5DEECE66Dull;
    for (size_t i = 0; i < nw; i++) {
        hw->sw_rand[i] = fq_f32_to_f16(rng_float(&s, 0.002f, 0.05f));
        hw->sw_unit[i] = 0x3C00;
    }
    /* device: enough copies that the timing loop streams from DRAM */
    dev_w *dw = &r->dw;
    const double bytes = (double)sh->n * hw->rb + (double)nw * 2;
    dw->n_copies = 1;
    if (sh->timed) {
        dw->n_copies = (int)ceil(ROTATE_B / bytes);
        dw->n_copies = dw->n_copies < 1 ? 1 : dw->n_copies > MAX_COPIES ? MAX_COPIES : dw->n_copies;
    }
    for (int c = 0; c < dw->n_copies; c++) {
        CK(cudaMalloc((void **)&dw->packed[c], (size_t)sh->n * hw->rb));
        CK(cudaMalloc((void **)&dw->sw_rand[c], nw * sizeof(uint16_t)));
        CK(cudaMemcpy(dw->packed[c], hw->packed, (size_t)sh->n * hw->rb, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dw->sw_rand[c], hw->sw_rand, nw * sizeof(uint16_t), cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc((void **)&dw->sw_unit, nw * sizeof(uint16_t)));
    CK(cudaMemcpy(dw->sw_unit, hw->sw_unit, nw * sizeof(uint16_t), cudaMemcpyHostToDevice));
    return 0;
}

/* Activation codes of `bits` bits and scales for MAX_M tokens, their references, on host and
 * device. */
static int make_acts(shape_run *r, int bits, uint64_t seed)
{
    const shape *sh = r->sh;
    host_x *hx = &r->hx;
    const int ng = r->hw.ng;
    uint64_t s = seed;
    const int lo = bits == 8 ? -128 : FQ_QMIN, hi = bits == 8 ? 127 : FQ_QMAX;
    for (size_t i = 0; i < (size_t)MAX_M * sh->k; i++)
        hx->qx[i] = (int8_t)rng_int(&s, lo, hi);
    for (size_t i = 0; i < (size_t)MAX_M * ng; i++) {
        hx->sx_rand[i] = rng_float(&s, 0.001f, 0.1f);
        hx->sx_unit[i] = 1.0f;
    }
    if (reference(r->pool, sh, &r->hw, &r->cs, hx->qx, hx->sx_unit, r->hw.sw_unit, hx->ref_unit) !=
            0 ||
        reference(r->pool, sh, &r->hw, &r->cs, hx->qx, hx->sx_rand, r->hw.sw_rand, hx->ref_rand) !=
            0)
        return -1;
    CK(cudaMemcpy(r->dx.qx, hx->qx, (size_t)MAX_M * sh->k, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(r->dx.sx_rand, hx->sx_rand, (size_t)MAX_M * ng * sizeof(float),
                  cudaMemcpyHostToDevice));
    CK(cudaMemcpy(r->dx.sx_unit, hx->sx_unit, (size_t)MAX_M * ng * sizeof(float),
                  cudaMemcpyHostToDevice));
    return 0;
}

/* Both checks of one (kernel, m, bits) case; counts failures in r. */
static int check_case(shape_run *r, kern kk, int m, int bits, long ldy)
{
    const shape *sh = r->sh;
    const int64_t rb = r->hw.rb;
    k_w6 wu = {r->dw.packed[0], r->dw.sw_unit, (long)rb, sh->n, sh->k, sh->g};
    k_w6 wr = {r->dw.packed[0], r->dw.sw_rand[0], (long)rb, sh->n, sh->k, sh->g};
    double e_unit = 0.0, e_rand = 0.0;
    if (run_call(kk, &r->dx, r->dx.sx_unit, m, &wu, ldy, r->y) != 0)
        return -1;
    const long bad_u = compare(r->y, r->hx.ref_unit, &r->cs, sh->n, m, ldy, 1, "unit", &e_unit);
    if (run_call(kk, &r->dx, r->dx.sx_rand, m, &wr, ldy, r->y) != 0)
        return -1;
    const long bad_r = compare(r->y, r->hx.ref_rand, &r->cs, sh->n, m, ldy, 0, "rand", &e_rand);
    const int ok = bad_u == 0 && bad_r == 0;
    printf("%-4s %s n=%5d k=%5d g=%3d m=%2d a%d ldy=%ld cols=%d: unit %s, rand max err %.3g of "
           "tol%s\n",
           ok ? "ok" : "FAIL", kern_name(kk), sh->n, sh->k, sh->g, m, bits, ldy, r->cs.total,
           bad_u ? "DIFFERS" : "exact", e_rand, bad_r ? " (OVER)" : "");
    if (!ok) {
        fprintf(stderr,
                "FAIL %s n=%d k=%d g=%d m=%d a%d: %ld unit and %ld random-scale mismatches\n",
                kern_name(kk), sh->n, sh->k, sh->g, m, bits, bad_u, bad_r);
        r->failures++;
    }
    return 0;
}

static void shape_free(shape_run *r)
{
    free(r->hw.packed);
    free(r->hw.sw_rand);
    free(r->hw.sw_unit);
    free(r->hx.qx);
    free(r->hx.sx_rand);
    free(r->hx.sx_unit);
    free(r->hx.ref_unit);
    free(r->hx.ref_rand);
    free(r->y);
    for (int c = 0; c < r->dw.n_copies; c++) {
        cudaFree(r->dw.packed[c]);
        cudaFree(r->dw.sw_rand[c]);
    }
    cudaFree(r->dw.sw_unit);
    cudaFree(r->dx.qx);
    cudaFree(r->dx.sx_rand);
    cudaFree(r->dx.sx_unit);
    cudaFree(r->dx.y);
    cudaFree(r->dx.ws);
}

static int shape_alloc(shape_run *r)
{
    const shape *sh = r->sh;
    const int ng = sh->k / sh->g;
    host_x *hx = &r->hx;
    hx->qx = malloc((size_t)MAX_M * sh->k);
    hx->sx_rand = malloc((size_t)MAX_M * ng * sizeof(float));
    hx->sx_unit = malloc((size_t)MAX_M * ng * sizeof(float));
    hx->ref_unit = malloc((size_t)MAX_M * r->cs.total * sizeof(float));
    hx->ref_rand = malloc((size_t)MAX_M * r->cs.total * sizeof(float));
    r->y = malloc((size_t)MAX_M * (sh->n + LDY_PAD) * sizeof(float));
    if (!hx->qx || !hx->sx_rand || !hx->sx_unit || !hx->ref_unit || !hx->ref_rand || !r->y)
        return -1;
    CK(cudaMalloc((void **)&r->dx.qx, (size_t)MAX_M * sh->k));
    CK(cudaMalloc((void **)&r->dx.sx_rand, (size_t)MAX_M * ng * sizeof(float)));
    CK(cudaMalloc((void **)&r->dx.sx_unit, (size_t)MAX_M * ng * sizeof(float)));
    CK(cudaMalloc((void **)&r->dx.y, (size_t)MAX_M * (sh->n + LDY_PAD) * sizeof(float)));
    const k_w6 wd = {NULL, NULL, (long)fq_pack_row_bytes(sh->k), sh->n, sh->k, sh->g};
    for (int m = 1; m <= MAX_M; m++) {
        const size_t b = k_gemm_w6_gemv_ws_bytes(&wd, m);
        r->dx.ws_bytes = b > r->dx.ws_bytes ? b : r->dx.ws_bytes;
    }
    if (r->dx.ws_bytes > 0)
        CK(cudaMalloc(&r->dx.ws, r->dx.ws_bytes));
    return 0;
}

/* All checks (and timings) of one shape; returns -1 on an infrastructure error, else adds its
 * failed cases to *failures. */
static int run_shape(rt_pool *pool, const shape *sh, uint64_t seed, cudaEvent_t *ev, int *failures)
{
    shape_run r;
    memset(&r, 0, sizeof r);
    r.pool = pool;
    r.sh = sh;
    colset_make(sh, &r.cs);
    int rc = -1;
    if (shape_alloc(&r) != 0 || make_weights(&r, seed) != 0) {
        fprintf(stderr, "n=%d k=%d: out of memory or CUDA error\n", sh->n, sh->k);
        goto out;
    }
    static const int bits_list[] = {8, 6};
    for (int bi = 0; bi < 2; bi++) {
        const int bits = bits_list[bi];
        if (make_acts(&r, bits, seed * 31 + (uint64_t)bits) != 0)
            goto out;
        double bound = 0.0;
        if (abs_group_bound(pool, sh, &r.hw, &r.cs, r.hx.qx, &bound) != 0)
            goto out;
        if (!(bound < 16777216.0)) {
            fprintf(stderr,
                    "FAIL n=%d k=%d a%d: sum of |group sums| reaches %.0f >= 2^24: the "
                    "unit-scale check would not be exact\n",
                    sh->n, sh->k, bits, bound);
            r.failures++;
            continue;
        }
        printf("     n=%5d k=%5d g=%3d a%d: sum of |group sums| <= %.0f < 2^24 (%s)\n", sh->n,
               sh->k, sh->g, bits, bound,
               128.0 * 32.0 * sh->k < 16777216.0 ? "worst case" : "measured");
        for (int mi = 0; mi < N_MS; mi++) {
            const int m = MS[mi];
            /* ldy > n: every small shape, and one large one */
            const int pad = !sh->timed || (sh->n == 4096 && sh->k == 4096 && m == 3);
            for (int kk = 0; kk < KERN_COUNT; kk++)
                if (check_case(&r, (kern)kk, m, bits, sh->n + (pad ? LDY_PAD : 0)) != 0)
                    goto out;
        }
    }
    if (sh->timed) {
        const double wbytes = (double)sh->n * r.hw.rb + (double)sh->n * r.hw.ng * 2;
        for (int mi = 0; mi < N_MS_TIMED; mi++) {
            const int m = MS_TIMED[mi];
            double us = 0.0, us_mma = 0.0;
            if (time_m(KERN_GEMV, sh, &r.dw, &r.dx, m, ev, &us) != 0 ||
                time_m(KERN_MMA, sh, &r.dw, &r.dx, m, ev, &us_mma) != 0) {
                fprintf(stderr, "timing failed (n=%d k=%d m=%d)\n", sh->n, sh->k, m);
                goto out;
            }
            printf("time n=%5d k=%5d m=%2d: gemv %8.2f us %7.1f GB/s | mma_decode %8.2f us %7.1f "
                   "GB/s | speedup %.2fx (weights, %d copies)\n",
                   sh->n, sh->k, m, us, wbytes / (us * 1e-6) / 1e9, us_mma,
                   wbytes / (us_mma * 1e-6) / 1e9, us_mma / us, r.dw.n_copies);
        }
    }
    rc = 0;
out:
    *failures += r.failures;
    shape_free(&r);
    return rc;
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
    static const shape shapes[] = {
        {12288, 4096, 128, 1}, {4096, 4096, 128, 1},  {11008, 4096, 128, 1}, {4096, 11008, 128, 1},
        {15360, 5120, 128, 1}, {5120, 5120, 128, 1},  {13824, 5120, 128, 1}, {5120, 13824, 128, 1},
        {10240, 8192, 128, 1}, {8192, 8192, 128, 1},  {28672, 8192, 128, 1}, {8192, 28672, 128, 1},
        {6144, 4096, 128, 1},  {14336, 4096, 128, 1}, {4096, 14336, 128, 1}, {576, 576, 64, 0},
        {192, 576, 64, 0},     {1536, 576, 64, 0},    {576, 1536, 128, 0},   {100, 96, 32, 0},
        {33, 160, 32, 0},
    };
    cudaEvent_t ev[N_TIMED + 1];
    for (int i = 0; i <= N_TIMED; i++) {
        if (cudaEventCreate(&ev[i]) != cudaSuccess) {
            fprintf(stderr, "cudaEventCreate failed\n");
            return 1;
        }
    }
    const double t0 = fq_now_s();
    int failures = 0, errors = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        if (run_shape(pool, &shapes[si], 1000 + si, ev, &failures) != 0)
            errors++;
        fflush(stdout);
    }
    for (int i = 0; i <= N_TIMED; i++)
        cudaEventDestroy(ev[i]);
    rt_pool_destroy(pool);
    printf("%.1f s\n", fq_now_s() - t0);
    if (failures || errors) {
        fprintf(stderr, "%d case(s) failed, %d shape(s) could not run\n", failures, errors);
        return 1;
    }
    printf("all cases passed\n");
    return 0;
}

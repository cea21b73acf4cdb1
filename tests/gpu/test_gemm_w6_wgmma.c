/* test_gemm_w6_wgmma.c — the Hopper wgmma prefill GEMM (k_gemm_w6_wgmma) against the CPU reference
 * rt_cpu_matmul_q6 on a sample of rows: exact with unit scales, within 1e-3 of the row's largest
 * |y| with random positive scales; LLaMA and model-like shapes, m in {1, 17, 64, 77, 128, 512,
 * 2048}, 8- and 6-bit activation codes, one case with ldy > n, plus shapes with g = 256 / 512 and
 * with g = 64 / 32 on 256-token tiles; argument checks; then timings of the LLaMA shapes at m = 512
 * and 2048 (informational). Skips (77) without an sm_90 GPU or an sm_90a build. Stops after
 * MAX_FAILURES failed cases; a failure prints the first mismatches and where they cluster.
 *
 * Activations, weights and scales are made once per shape for the largest m; a smaller m uses the
 * first rows (rows are independent), so the CPU reference runs once per shape and activation width
 * over the union of the sampled rows. */
#include "fq_base.h"
#include "fq_pack.h"
#include "fq_weight.h"
#include "k.h"
#include "k_gemm.h"
#include "rt_cpu_int6.h"
#include "rt_pool.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define M_MAX        2048
#define SAMPLE_MAX   48 /* rows checked per m */
#define TIME_REPS    25 /* timed launches (median reported) */
#define MAX_FAILURES 4  /* stop testing after this many failed cases */
#define LDY_PAD      7  /* the ldy > n case: odd, so 8-byte stores are off too */

static const int k_ms[] = {1, 17, 64, 77, 128, 512, 2048};
#define N_MS ((int)(sizeof k_ms / sizeof k_ms[0]))

typedef struct {
    int n, k, g;
    bool timed; /* a LLaMA shape: also timed at m = 512 and 2048 */
} shape;

static const shape k_shapes[] = {
    {12288, 4096, 128, true},
    {4096, 4096, 128, true},
    {11008, 4096, 128, true},
    {4096, 11008, 128, true},
    {15360, 5120, 128, true},
    {5120, 5120, 128, true},
    {13824, 5120, 128, true},
    {5120, 13824, 128, true},
    {10240, 8192, 128, true},
    {8192, 8192, 128, true},
    {28672, 8192, 128, true},
    {8192, 28672, 128, true},
    {6144, 4096, 128, true},
    {14336, 4096, 128, true},
    {4096, 14336, 128, true},
    {576, 576, 64, false},
    {192, 576, 64, false},
    {1536, 576, 64, false},
    {576, 1536, 128, false},
    {100, 96, 32, false},
    {33, 160, 32, false},
    /* beyond the brief's list: groups spanning k-tiles (g = 256, 512), and g = 64 / 32 where
     * m = 2048 picks the 256-token tiles */
    {256, 1536, 256, false},
    {384, 2048, 512, false},
    {4096, 1024, 64, false},
    {4096, 512, 32, false},
};
#define N_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

/* cuBLAS int8 (int32 out) times at m = 512 from DESIGN.md, for context in the timing lines. */
static double cublas_us_m512(int n, int k)
{
    if (n == 4096 && k == 4096)
        return 26.0;
    if (n == 11008 && k == 4096)
        return 63.0;
    if (n == 8192 && k == 8192)
        return 72.0;
    if (n == 28672 && k == 8192)
        return 213.0;
    return 0.0;
}

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static uint64_t rng_next(uint64_t *s) /* xorshift64 */
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float rng_unit(uint64_t *s) /* uniform in [0, 1) */
{
    return (float)((rng_next(s) >> 40) * (1.0 / 16777216.0));
}

/* Rows of y checked for a given m (sorted, distinct): all when m <= SAMPLE_MAX, else the first 16,
 * the last 16 (the partial last tile) and 16 spread between. Returns the count. */
static int sample_rows(int m, int *rows)
{
    if (m <= SAMPLE_MAX) {
        for (int i = 0; i < m; i++)
            rows[i] = i;
        return m;
    }
    bool mark[M_MAX];
    memset(mark, 0, sizeof mark);
    for (int i = 0; i < 16; i++) {
        mark[i] = true;
        mark[m - 1 - i] = true;
        mark[16 + (int)((long)i * (m - 32) / 16)] = true;
    }
    int c = 0;
    for (int r = 0; r < m; r++)
        if (mark[r])
            rows[c++] = r;
    return c;
}

/* The CPU side of one (shape, activation width): codes and scales of the union of sampled rows and
 * the references for them. */
typedef struct {
    int n, k, g, ng, bits;
    int n_rows;         /* union of sampled rows over all m */
    int rows[M_MAX];    /* row indices */
    int index[M_MAX];   /* row -> position in rows[], or -1 */
    float *y_unit;      /* [n_rows, n] unit-scale reference (exact integers) */
    float *y_rand;      /* [n_rows, n] random-scale reference */
    double max_abs_sum; /* largest sum over groups of |group sum| */
} reference;

/* Exact per-group sums: y_unit and the sum of |d| per output. Groups of 64 codes or more are whole
 * chunks, so each goes through rt_cpu_matmul_q6 with unit scales (exact: |d| < 2^24); 32-code
 * groups (small shapes only) use plain loops. */
static void ref_unit(rt_pool *pool, reference *ref, const int8_t *qx_rows, const uint8_t *packed,
                     int64_t rb)
{
    const int n = ref->n, k = ref->k, g = ref->g, nr = ref->n_rows;
    int64_t *sum = xmalloc((size_t)nr * n * sizeof *sum);
    int64_t *abs_sum = xmalloc((size_t)nr * n * sizeof *abs_sum);
    memset(sum, 0, (size_t)nr * n * sizeof *sum);
    memset(abs_sum, 0, (size_t)nr * n * sizeof *abs_sum);
    if (g % FQ_PACK_CHUNK == 0) {
        int8_t *xg = xmalloc((size_t)nr * g);
        float *ones_x = xmalloc((size_t)nr * sizeof *ones_x);
        uint16_t *ones_w = xmalloc((size_t)n * sizeof *ones_w);
        float *d = xmalloc((size_t)nr * n * sizeof *d);
        for (int i = 0; i < nr; i++)
            ones_x[i] = 1.0f;
        for (int i = 0; i < n; i++)
            ones_w[i] = 0x3C00; /* 1.0 */
        for (int gi = 0; gi < k / g; gi++) {
            for (int i = 0; i < nr; i++)
                memcpy(xg + (size_t)i * g, qx_rows + (size_t)i * k + (size_t)gi * g, (size_t)g);
            const uint8_t *pg = packed + (int64_t)gi * g / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES;
            rt_cpu_matmul_q6(pool, xg, ones_x, nr, g, g, pg, ones_w, rb, n, d);
            for (size_t i = 0; i < (size_t)nr * n; i++) {
                const int64_t v = (int64_t)d[i];
                sum[i] += v;
                abs_sum[i] += v < 0 ? -v : v;
            }
        }
        free(xg);
        free(ones_x);
        free(ones_w);
        free(d);
    } else {
        int8_t *wq = xmalloc((size_t)n * k);
        for (int j = 0; j < n; j++)
            fq_unpack_row(packed + (int64_t)j * rb, k, wq + (size_t)j * k);
        for (int i = 0; i < nr; i++)
            for (int j = 0; j < n; j++)
                for (int gi = 0; gi < k / g; gi++) {
                    int64_t v = 0;
                    for (int kk = gi * g; kk < (gi + 1) * g; kk++)
                        v += (int64_t)qx_rows[(size_t)i * k + kk] * wq[(size_t)j * k + kk];
                    sum[(size_t)i * n + j] += v;
                    abs_sum[(size_t)i * n + j] += v < 0 ? -v : v;
                }
        free(wq);
    }
    ref->max_abs_sum = 0.0;
    for (size_t i = 0; i < (size_t)nr * n; i++) {
        ref->y_unit[i] = (float)sum[i];
        if ((double)abs_sum[i] > ref->max_abs_sum)
            ref->max_abs_sum = (double)abs_sum[i];
    }
    free(sum);
    free(abs_sum);
}

/* What one comparison found. */
typedef struct {
    long checked, bad, nan;
    int first_row, first_col;
} cmp_stats;

/* Prints up to 8 mismatches and where they cluster (rows, columns, their residues modulo the
 * tile sizes), enough to debug from one log. */
static void report_mismatch(const char *what, const reference *ref, int m, const int *rows,
                            int n_rows, const float *got, long ldy_check, const float *want_tab,
                            bool exact, const cmp_stats *st)
{
    const int n = ref->n;
    fprintf(stderr,
            "MISMATCH %s n=%d k=%d g=%d m=%d a%d: %ld of %ld checked outputs wrong (%ld NaN; NaN "
            "everywhere means a barrier timed out in the kernel)\n",
            what, n, ref->k, ref->g, m, ref->bits, st->bad, st->checked, st->nan);
    int shown = 0, bad_rows = 0, full_rows = 0;
    long *col_bad = xmalloc((size_t)n * sizeof *col_bad);
    long row_mod[64] = {0}, col_mod[128] = {0};
    memset(col_bad, 0, (size_t)n * sizeof *col_bad);
    for (int i = 0; i < n_rows; i++) {
        const int r = rows[i];
        const float *w = want_tab + (size_t)ref->index[r] * n;
        const float *gr = got + (size_t)i * ldy_check;
        float rmax = 0.0f;
        for (int j = 0; j < n; j++)
            if (fabsf(w[j]) > rmax)
                rmax = fabsf(w[j]);
        int row_bad = 0;
        for (int j = 0; j < n; j++) {
            const bool ok = exact ? gr[j] == w[j] : fabsf(gr[j] - w[j]) <= 1e-3f * rmax;
            if (ok)
                continue;
            row_bad++;
            col_bad[j]++;
            row_mod[r % 64]++;
            col_mod[j % 128]++;
            if (shown < 8) {
                fprintf(stderr, "  y[%d, %d]: want %.9g got %.9g (row max |want| %g)\n", r, j,
                        (double)w[j], (double)gr[j], (double)rmax);
                shown++;
            }
        }
        if (row_bad)
            bad_rows++;
        if (row_bad == n)
            full_rows++;
    }
    int bad_cols = 0;
    for (int j = 0; j < n; j++)
        if (col_bad[j])
            bad_cols++;
    free(col_bad);
    fprintf(stderr,
            "  rows with errors: %d of %d checked (%d entirely wrong); columns with errors: "
            "%d of %d\n",
            bad_rows, n_rows, full_rows, bad_cols, n);
    fprintf(stderr, "  wrong by row %% 64:");
    for (int i = 0; i < 64; i++)
        if (row_mod[i])
            fprintf(stderr, " %d:%ld", i, row_mod[i]);
    fprintf(stderr, "\n  wrong by column %% 128:");
    for (int i = 0; i < 128; i++)
        if (col_mod[i])
            fprintf(stderr, " %d:%ld", i, col_mod[i]);
    fprintf(stderr, "\n");
}

/* Compares the fetched rows (got [n_rows, ldy]) with the reference; also checks that columns
 * n .. ldy - 1 kept the poison pattern. */
static cmp_stats compare(const reference *ref, const int *rows, int n_rows, const float *got,
                         long ldy, const float *want_tab, bool exact)
{
    cmp_stats st = {0, 0, 0, -1, -1};
    const int n = ref->n;
    for (int i = 0; i < n_rows; i++) {
        const float *w = want_tab + (size_t)ref->index[rows[i]] * n;
        const float *gr = got + (size_t)i * ldy;
        float rmax = 0.0f;
        for (int j = 0; j < n; j++)
            if (fabsf(w[j]) > rmax)
                rmax = fabsf(w[j]);
        for (int j = 0; j < n; j++) {
            st.checked++;
            const bool ok = exact ? gr[j] == w[j] : fabsf(gr[j] - w[j]) <= 1e-3f * rmax;
            if (isnan(gr[j]))
                st.nan++;
            if (!ok) {
                if (st.bad == 0) {
                    st.first_row = rows[i];
                    st.first_col = j;
                }
                st.bad++;
            }
        }
        for (long j = n; j < ldy; j++) {
            uint32_t bits;
            memcpy(&bits, &gr[j], sizeof bits);
            st.checked++;
            if (bits != 0xFFFFFFFFu) {
                if (st.bad == 0) {
                    st.first_row = rows[i];
                    st.first_col = (int)j;
                }
                if (st.bad++ < 8)
                    fprintf(stderr, "  y[%d, %ld] (past n, inside ldy) was written: 0x%08x\n",
                            rows[i], j, bits);
            }
        }
    }
    return st;
}

/* Device buffers of one (shape, activation width). */
typedef struct {
    int8_t *qx;
    float *sx_unit, *sx_rand, *y;
    uint8_t *packed;
    uint16_t *sw_unit, *sw_rand;
    long ldy_max;
} dev_bufs;

static int launch(const dev_bufs *db, const k_w6 *w, int m, bool unit, long ldy)
{
    k_w6 wc = *w;
    wc.sw = unit ? db->sw_unit : db->sw_rand;
    return k_gemm_w6_wgmma(db->qx, unit ? db->sx_unit : db->sx_rand, m, &wc, db->y, ldy, 0);
}

/* Runs one m with one kind of scales and checks it. Returns 0 if it matched. */
static int check_case(const dev_bufs *db, const k_w6 *w, const reference *ref, int m, bool unit,
                      long ldy)
{
    CK(cudaMemset(db->y, 0xFF, (size_t)m * ldy * sizeof(float))); /* NaN poison */
    if (launch(db, w, m, unit, ldy) != 0) {
        fprintf(stderr, "k_gemm_w6_wgmma returned -1 (n=%d k=%d g=%d m=%d ldy=%ld)\n", w->n, w->k,
                w->g, m, ldy);
        return 1;
    }
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        fprintf(stderr, "kernel failed (n=%d k=%d g=%d m=%d): %s\n", w->n, w->k, w->g, m,
                cudaGetErrorString(e));
        exit(1); /* the context is gone */
    }
    int rows[SAMPLE_MAX];
    const int nr = sample_rows(m, rows);
    float *got = xmalloc((size_t)nr * ldy * sizeof *got);
    for (int i = 0; i < nr; i++)
        CK(cudaMemcpy(got + (size_t)i * ldy, db->y + (size_t)rows[i] * ldy,
                      (size_t)ldy * sizeof *got, cudaMemcpyDeviceToHost));
    const float *want = unit ? ref->y_unit : ref->y_rand;
    const cmp_stats st = compare(ref, rows, nr, got, ldy, want, unit);
    if (st.bad)
        report_mismatch(unit ? "unit-scales(exact)" : "random-scales(1e-3)", ref, m, rows, nr, got,
                        ldy, want, unit, &st);
    free(got);
    return st.bad != 0;
}

static double wall_us(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

/* Median device time of TIME_REPS launches after a warm-up, in microseconds; *host_us gets the
 * host time of one call (tensor maps, attribute queries, launch). A queue of memsets of `filler`
 * runs first, so the launches are queued before the GPU reaches them and host time between
 * launches does not show in the device times. */
static double time_case(const dev_bufs *db, const k_w6 *w, int m, void *filler, size_t filler_bytes,
                        double *host_us)
{
    cudaEvent_t ev[2 * TIME_REPS];
    for (int i = 0; i < 2 * TIME_REPS; i++)
        CK(cudaEventCreate(&ev[i]));
    for (int i = 0; i < 3; i++)
        if (launch(db, w, m, false, w->n) != 0)
            return -1.0;
    CK(cudaDeviceSynchronize());
    for (int i = 0; i < 8; i++) /* ~1.5 ms of device work */
        CK(cudaMemsetAsync(filler, i, filler_bytes, 0));
    const double t0 = wall_us();
    for (int i = 0; i < TIME_REPS; i++) {
        CK(cudaEventRecord(ev[2 * i], 0));
        launch(db, w, m, false, w->n);
        CK(cudaEventRecord(ev[2 * i + 1], 0));
    }
    *host_us = (wall_us() - t0) / TIME_REPS;
    CK(cudaDeviceSynchronize());
    double t[TIME_REPS];
    for (int i = 0; i < TIME_REPS; i++) {
        float ms = 0.0f;
        CK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
        t[i] = 1000.0 * ms;
    }
    for (int i = 0; i < 2 * TIME_REPS; i++)
        CK(cudaEventDestroy(ev[i]));
    for (int i = 1; i < TIME_REPS; i++) /* insertion sort */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            const double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    return t[TIME_REPS / 2];
}

/* Random packed weights: uniform codes (any byte pattern is a valid packing when k is a multiple
 * of 64; otherwise codes are packed so the padding codes are 32) and fp16 scales. */
static void make_weights(uint64_t *rs, int n, int k, int g, int64_t rb, uint8_t *packed,
                         uint16_t *sw_rand)
{
    if (k % FQ_PACK_CHUNK == 0) {
        const size_t bytes = (size_t)n * rb;
        for (size_t i = 0; i < bytes; i += 8) {
            const uint64_t v = rng_next(rs);
            memcpy(packed + i, &v, bytes - i < 8 ? bytes - i : 8);
        }
    } else {
        int8_t *q = xmalloc((size_t)k);
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < k; i++)
                q[i] = (int8_t)((int)(rng_next(rs) % 64) - 32);
            fq_pack_row(q, k, packed + (int64_t)j * rb);
        }
        free(q);
    }
    for (size_t i = 0; i < (size_t)n * (k / g); i++)
        sw_rand[i] = fq_weight_scale(0.05f + 2.0f * rng_unit(rs)); /* positive, about 2e-3..7e-2 */
}

/* Tests one shape at every m and both activation widths; times it when asked. Returns the number
 * of failed cases. */
static int run_shape(rt_pool *pool, const shape *sh, uint64_t *rs, void *filler,
                     size_t filler_bytes, int *failures)
{
    const int n = sh->n, k = sh->k, g = sh->g, ng = k / g;
    const int64_t rb = fq_pack_row_bytes(k);
    const long ldy_max = n + LDY_PAD;
    k_w6 w = {NULL, NULL, (long)rb, n, k, g};
    uint8_t *packed = xmalloc((size_t)n * rb);
    uint16_t *sw_rand = xmalloc((size_t)n * ng * sizeof *sw_rand);
    uint16_t *sw_unit = xmalloc((size_t)n * ng * sizeof *sw_unit);
    make_weights(rs, n, k, g, rb, packed, sw_rand);
    for (size_t i = 0; i < (size_t)n * ng; i++)
        sw_unit[i] = 0x3C00;
    int8_t *qx = xmalloc((size_t)M_MAX * k);
    float *sx_rand = xmalloc((size_t)M_MAX * ng * sizeof *sx_rand);
    float *sx_unit = xmalloc((size_t)M_MAX * ng * sizeof *sx_unit);
    for (size_t i = 0; i < (size_t)M_MAX * ng; i++) {
        sx_rand[i] = 0.002f + 0.05f * rng_unit(rs);
        sx_unit[i] = 1.0f;
    }

    dev_bufs db;
    db.ldy_max = ldy_max;
    CK(cudaMalloc((void **)&db.qx, (size_t)M_MAX * k));
    CK(cudaMalloc((void **)&db.sx_unit, (size_t)M_MAX * ng * sizeof(float)));
    CK(cudaMalloc((void **)&db.sx_rand, (size_t)M_MAX * ng * sizeof(float)));
    CK(cudaMalloc((void **)&db.y, (size_t)M_MAX * ldy_max * sizeof(float)));
    CK(cudaMalloc((void **)&db.packed, (size_t)n * rb));
    CK(cudaMalloc((void **)&db.sw_unit, (size_t)n * ng * sizeof(uint16_t)));
    CK(cudaMalloc((void **)&db.sw_rand, (size_t)n * ng * sizeof(uint16_t)));
    CK(cudaMemcpy(db.packed, packed, (size_t)n * rb, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db.sw_unit, sw_unit, (size_t)n * ng * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db.sw_rand, sw_rand, (size_t)n * ng * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db.sx_unit, sx_unit, (size_t)M_MAX * ng * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db.sx_rand, sx_rand, (size_t)M_MAX * ng * 4, cudaMemcpyHostToDevice));
    w.packed = db.packed;

    reference *ref = xmalloc(sizeof *ref);
    ref->n = n;
    ref->k = k;
    ref->g = g;
    ref->ng = ng;
    bool sampled[M_MAX];
    memset(sampled, 0, sizeof sampled);
    for (int mi = 0; mi < N_MS; mi++) {
        int rows[SAMPLE_MAX];
        const int c = sample_rows(k_ms[mi], rows);
        for (int i = 0; i < c; i++)
            sampled[rows[i]] = true;
    }
    ref->n_rows = 0;
    for (int r = 0; r < M_MAX; r++) {
        ref->index[r] = -1;
        if (sampled[r]) {
            ref->index[r] = ref->n_rows;
            ref->rows[ref->n_rows++] = r;
        }
    }
    const int nr = ref->n_rows;
    ref->y_unit = xmalloc((size_t)nr * n * sizeof(float));
    ref->y_rand = xmalloc((size_t)nr * n * sizeof(float));
    int8_t *qx_rows = xmalloc((size_t)nr * k);
    float *sx_rows = xmalloc((size_t)nr * ng * sizeof *sx_rows);

    int failed = 0;
    for (int bi = 0; bi < 2 && *failures < MAX_FAILURES; bi++) {
        const int bits = bi == 0 ? 8 : 6;
        ref->bits = bits;
        for (size_t i = 0; i < (size_t)M_MAX * k; i++) {
            const uint64_t v = rng_next(rs) >> 32;
            qx[i] = bits == 8 ? (int8_t)(uint8_t)v : (int8_t)((int)(v % 64) - 32);
        }
        CK(cudaMemcpy(db.qx, qx, (size_t)M_MAX * k, cudaMemcpyHostToDevice));
        for (int i = 0; i < nr; i++) {
            memcpy(qx_rows + (size_t)i * k, qx + (size_t)ref->rows[i] * k, (size_t)k);
            memcpy(sx_rows + (size_t)i * ng, sx_rand + (size_t)ref->rows[i] * ng,
                   (size_t)ng * sizeof *sx_rows);
        }
        ref_unit(pool, ref, qx_rows, packed, rb);
        if (!(ref->max_abs_sum < 16777216.0)) {
            fprintf(stderr,
                    "test setup: n=%d k=%d a%d: a sum of |group sums| reaches %.0f >= 2^24, the "
                    "unit-scale results would not be exact\n",
                    n, k, bits, ref->max_abs_sum);
            failed++;
            (*failures)++;
            continue;
        }
        rt_cpu_matmul_q6(pool, qx_rows, sx_rows, nr, k, g, packed, sw_rand, rb, n, ref->y_rand);

        for (int mi = 0; mi < N_MS && *failures < MAX_FAILURES; mi++) {
            const int m = k_ms[mi];
            for (int unit = 1; unit >= 0; unit--) {
                /* one case writes into a wider y: ldy = n + LDY_PAD */
                const long ldy = (n == 576 && k == 576 && m == 77) ? ldy_max : n;
                const int bad = check_case(&db, &w, ref, m, unit != 0, ldy);
                printf(
                    "%-4s n=%5d k=%5d g=%3d m=%4d a%d %-13s ldy=%ld (max sum |group sums| %.0f)\n",
                    bad ? "FAIL" : "ok", n, k, g, m, bits, unit ? "unit-scales" : "rand-scales",
                    ldy, ref->max_abs_sum);
                if (bad) {
                    failed++;
                    (*failures)++;
                }
            }
        }
    }
    if (sh->timed && *failures == 0) {
        for (int m = 512; m <= 2048; m *= 4) {
            double host_us = 0.0;
            const double us = time_case(&db, &w, m, filler, filler_bytes, &host_us);
            const double tops = 2.0 * m * (double)n * k / (us * 1e-6) / 1e12;
            const double cb = m == 512 ? cublas_us_m512(n, k) : 0.0;
            printf("time n=%5d k=%5d m=%4d: %9.1f us %7.1f TOPS (host %.1f us per call)", n, k, m,
                   us, tops, host_us);
            if (cb > 0.0)
                printf(" cuBLAS int8 reference %.0f us", cb);
            printf("\n");
        }
    }

    CK(cudaFree(db.qx));
    CK(cudaFree(db.sx_unit));
    CK(cudaFree(db.sx_rand));
    CK(cudaFree(db.y));
    CK(cudaFree(db.packed));
    CK(cudaFree(db.sw_unit));
    CK(cudaFree(db.sw_rand));
    free(ref->y_unit);
    free(ref->y_rand);
    free(ref);
    free(qx_rows);
    free(sx_rows);
    free(qx);
    free(sx_rand);
    free(sx_unit);
    free(packed);
    free(sw_rand);
    free(sw_unit);
    return failed;
}

/* 1 when the wgmma kernel can run here: an sm_90 device and a build with sm_90a code. */
static int wgmma_available(void)
{
    int dev = 0;
    struct cudaDeviceProp p;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&p, dev));
    if (p.major != 9 || p.minor != 0) {
        printf("device is sm_%d%d, not sm_90: skipping (k_gemm_w6_wgmma needs Hopper sm_90a)\n",
               p.major, p.minor);
        return 0;
    }
    /* a tiny valid call: -1 here means the build has no sm_90a code */
    const int n = 128, k = 128, g = 128, m = 1;
    int8_t *qx;
    float *sx, *y;
    uint8_t *packed;
    uint16_t *sw;
    CK(cudaMalloc((void **)&qx, (size_t)m * k));
    CK(cudaMalloc((void **)&sx, sizeof(float)));
    CK(cudaMalloc((void **)&y, (size_t)m * n * sizeof(float)));
    CK(cudaMalloc((void **)&packed, (size_t)n * 96));
    CK(cudaMalloc((void **)&sw, (size_t)n * sizeof(uint16_t)));
    CK(cudaMemset(qx, 0, (size_t)m * k));
    CK(cudaMemset(sx, 0, sizeof(float)));
    CK(cudaMemset(packed, 0, (size_t)n * 96));
    CK(cudaMemset(sw, 0, (size_t)n * sizeof(uint16_t)));
    const k_w6 w = {packed, sw, 96, n, k, g};
    const int rc = k_gemm_w6_wgmma(qx, sx, m, &w, y, n, 0);
    CK(cudaDeviceSynchronize());
    CK(cudaFree(qx));
    CK(cudaFree(sx));
    CK(cudaFree(y));
    CK(cudaFree(packed));
    CK(cudaFree(sw));
    if (rc != 0) {
        printf("k_gemm_w6_wgmma returned -1 on an sm_90 device for a valid call: the build has no "
               "sm_90a code (gpu_arch must be 90a): skipping\n");
        return 0;
    }
    return 1;
}

/* Argument checks the launcher must refuse (no launch happens). */
static int check_bad_args(void)
{
    int8_t *qx;
    float *sx, *y;
    uint8_t *packed;
    uint16_t *sw;
    CK(cudaMalloc((void **)&qx, 4096));
    CK(cudaMalloc((void **)&sx, 4096));
    CK(cudaMalloc((void **)&y, 4096));
    CK(cudaMalloc((void **)&packed, 8192));
    CK(cudaMalloc((void **)&sw, 4096));
    const k_w6 ok = {packed, sw, 96, 32, 128, 128};
    k_w6 w;
    int bad = 0;
#define EXPECT_FAIL(call, why)                                                                     \
    do {                                                                                           \
        if ((call) != -1) {                                                                        \
            fprintf(stderr, "bad argument accepted: %s\n", why);                                   \
            bad++;                                                                                 \
        }                                                                                          \
    } while (0)
    EXPECT_FAIL(k_gemm_w6_wgmma(qx, sx, 0, &ok, y, 32, 0), "m = 0");
    EXPECT_FAIL(k_gemm_w6_wgmma(qx, sx, 1, &ok, y, 31, 0), "ldy < n");
    EXPECT_FAIL(k_gemm_w6_wgmma(qx + 1, sx, 1, &ok, y, 32, 0), "qx not 16-byte aligned");
    EXPECT_FAIL(k_gemm_w6_wgmma(NULL, sx, 1, &ok, y, 32, 0), "qx NULL");
    w = ok;
    w.g = 96;
    EXPECT_FAIL(k_gemm_w6_wgmma(qx, sx, 1, &w, y, 32, 0), "g = 96");
    w = ok;
    w.k = 96;
    EXPECT_FAIL(k_gemm_w6_wgmma(qx, sx, 1, &w, y, 32, 0), "g does not divide k");
    w = ok;
    w.row_bytes = 80;
    EXPECT_FAIL(k_gemm_w6_wgmma(qx, sx, 1, &w, y, 32, 0), "row_bytes too small");
    w = ok;
    w.packed = packed + 8;
    EXPECT_FAIL(k_gemm_w6_wgmma(qx, sx, 1, &w, y, 32, 0), "packed not 16-byte aligned");
#undef EXPECT_FAIL
    CK(cudaFree(qx));
    CK(cudaFree(sx));
    CK(cudaFree(y));
    CK(cudaFree(packed));
    CK(cudaFree(sw));
    printf("%-4s argument checks\n", bad ? "FAIL" : "ok");
    return bad;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep case lines and stderr diagnostics in order */
    if (k_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    char desc[256] = "";
    if (k_device_describe(0, desc, sizeof desc) == 0)
        printf("device 0: %s\n", desc);
    if (!wgmma_available())
        return 77;
    rt_pool *pool = NULL;
    if (rt_pool_create(0, &pool) != 0) {
        fprintf(stderr, "rt_pool_create failed\n");
        return 1;
    }
    int failures = check_bad_args();
    const size_t filler_bytes = (size_t)512 << 20; /* device scratch that keeps the GPU busy */
    void *filler = NULL;
    CK(cudaMalloc(&filler, filler_bytes));
    uint64_t rs = 0x9E3779B97F4A7C15ull;
    for (int si = 0; si < N_SHAPES && failures < MAX_FAILURES; si++)
        run_shape(pool, &k_shapes[si], &rs, filler, filler_bytes, &failures);
    CK(cudaFree(filler));
    rt_pool_destroy(pool);
    if (failures) {
        fprintf(stderr, "%d case(s) failed%s\n", failures,
                failures >= MAX_FAILURES ? " (stopped early)" : "");
        return 1;
    }
    printf("all cases passed\n");
    return 0;
}

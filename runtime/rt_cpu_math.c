/* rt_cpu_math.c — fp32 kernels of the CPU reference backend; the matmul uses 8-wide vector
 * registers (GCC vector extensions, with an AVX2/FMA clone picked at load time on x86-64). */
#include "rt_cpu_math.h"

#include <math.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RT_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define RT_MULTIVERSION
#endif

#define N_TILE                                                                                     \
    16 /* rows of w per task: their K columns stay in L1/L2 while all of x streams by              \
        */

#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8f))

static float hsum8(const v8f *v)
{
    float t[8];
    memcpy(t, v, sizeof t);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* Dot products of up to 4 rows of x with 2 rows of w: out[r][c] = x_r . w_c. */
RT_MULTIVERSION
static void dot_rows(const float *x, int64_t k, int mr, const float *w0, const float *w1,
                     float out[4][2])
{
    const float *xr[4];
    for (int r = 0; r < 4; r++)
        xr[r] = x + (r < mr ? r : 0) * k;
    v8f a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
    int64_t kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        v8f b0, b1, x0, x1, x2, x3;
        LOAD8(b0, w0 + kk);
        LOAD8(b1, w1 + kk);
        LOAD8(x0, xr[0] + kk);
        LOAD8(x1, xr[1] + kk);
        LOAD8(x2, xr[2] + kk);
        LOAD8(x3, xr[3] + kk);
        a00 += x0 * b0;
        a01 += x0 * b1;
        a10 += x1 * b0;
        a11 += x1 * b1;
        a20 += x2 * b0;
        a21 += x2 * b1;
        a30 += x3 * b0;
        a31 += x3 * b1;
    }
    float s[4][2] = {{hsum8(&a00), hsum8(&a01)},
                     {hsum8(&a10), hsum8(&a11)},
                     {hsum8(&a20), hsum8(&a21)},
                     {hsum8(&a30), hsum8(&a31)}};
    for (; kk < k; kk++)
        for (int r = 0; r < 4; r++) {
            s[r][0] += xr[r][kk] * w0[kk];
            s[r][1] += xr[r][kk] * w1[kk];
        }
    memcpy(out, s, sizeof s);
}

/* Dot products of one row of x with 4 rows of w (the M < 4 tail, and decode). */
RT_MULTIVERSION
static void dot_row4(const float *x, int64_t k, const float *const w[4], float out[4])
{
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        v8f xv, b0, b1, b2, b3;
        LOAD8(xv, x + kk);
        LOAD8(b0, w[0] + kk);
        LOAD8(b1, w[1] + kk);
        LOAD8(b2, w[2] + kk);
        LOAD8(b3, w[3] + kk);
        a0 += xv * b0;
        a1 += xv * b1;
        a2 += xv * b2;
        a3 += xv * b3;
    }
    float s[4] = {hsum8(&a0), hsum8(&a1), hsum8(&a2), hsum8(&a3)};
    for (; kk < k; kk++)
        for (int c = 0; c < 4; c++)
            s[c] += x[kk] * w[c][kk];
    memcpy(out, s, sizeof s);
}

typedef struct matmul_task {
    const float *x, *w;
    float *y;
    int64_t m, k, n;
} matmul_task;

/* Rows m0.. of y (fewer than 4) over columns [n0, n1), one row at a time. */
static void matmul_tail_rows(const matmul_task *t, int64_t m0, int64_t n0, int64_t n1)
{
    for (int64_t r = m0; r < t->m; r++)
        for (int64_t c = n0; c < n1; c += 4) {
            const float *w[4];
            for (int j = 0; j < 4; j++)
                w[j] = t->w + (c + j < n1 ? c + j : c) * t->k;
            float out[4];
            dot_row4(t->x + r * t->k, t->k, w, out);
            for (int j = 0; j < 4 && c + j < n1; j++)
                t->y[r * t->n + c + j] = out[j];
        }
}

static void matmul_tile(void *ctx, int64_t tile)
{
    const matmul_task *t = ctx;
    int64_t n0 = tile * N_TILE;
    int64_t n1 = n0 + N_TILE < t->n ? n0 + N_TILE : t->n;
    int64_t m_full = t->m / 4 * 4;
    matmul_tail_rows(t, m_full, n0, n1);
    for (int64_t m0 = 0; m0 < m_full; m0 += 4) {
        int mr = 4;
        for (int64_t c = n0; c < n1; c += 2) {
            const float *w0 = t->w + c * t->k;
            const float *w1 = c + 1 < n1 ? w0 + t->k : w0;
            float out[4][2];
            dot_rows(t->x + m0 * t->k, t->k, mr, w0, w1, out);
            for (int r = 0; r < mr; r++) {
                t->y[(m0 + r) * t->n + c] = out[r][0];
                if (c + 1 < n1)
                    t->y[(m0 + r) * t->n + c + 1] = out[r][1];
            }
        }
    }
}

void rt_cpu_matmul(rt_pool *pool, const float *x, int64_t m, int64_t k, const float *w, int64_t n,
                   float *y)
{
    matmul_task t = {.x = x, .w = w, .y = y, .m = m, .k = k, .n = n};
    rt_pool_run(pool, (n + N_TILE - 1) / N_TILE, matmul_tile, &t);
}

void rt_cpu_rmsnorm(const float *x, const float *weight, int64_t m, int64_t e, float eps, float *y)
{
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + r * e;
        double ss = 0.0;
        for (int64_t i = 0; i < e; i++)
            ss += (double)xr[i] * xr[i];
        float inv = 1.0f / sqrtf((float)(ss / (double)e) + eps);
        float *yr = y + r * e;
        for (int64_t i = 0; i < e; i++)
            yr[i] = weight[i] * (xr[i] * inv);
    }
}

void rt_cpu_rope(float *vec, int32_t n_heads, int32_t head_dim, int32_t pos, float theta,
                 fq_rope_style style)
{
    int32_t half = head_dim / 2;
    for (int32_t i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        float angle = (float)pos * inv_freq;
        float c = cosf(angle), s = sinf(angle);
        int32_t a = style == FQ_ROPE_HALF ? i : 2 * i;
        int32_t b = style == FQ_ROPE_HALF ? i + half : 2 * i + 1;
        for (int32_t h = 0; h < n_heads; h++) {
            float *v = vec + (int64_t)h * head_dim;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x1 * c + x0 * s;
        }
    }
}

void rt_cpu_attn_begin(rt_attn_acc *a, int32_t head_dim)
{
    a->mx = -INFINITY;
    a->sum = 0.0f;
    memset(a->acc, 0, (size_t)head_dim * sizeof(float));
}

RT_MULTIVERSION
static float dot(const float *a, const float *b, int32_t n)
{
    v8f acc = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f x, y;
        LOAD8(x, a + i);
        LOAD8(y, b + i);
        acc += x * y;
    }
    float s = hsum8(&acc);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* y = y * scale + p * x over n floats */
RT_MULTIVERSION
static void scale_axpy(float *y, float scale, float p, const float *x, int32_t n)
{
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f yv, xv;
        LOAD8(yv, y + i);
        LOAD8(xv, x + i);
        yv = yv * scale + xv * p;
        memcpy(y + i, &yv, sizeof yv);
    }
    for (; i < n; i++)
        y[i] = y[i] * scale + x[i] * p;
}

#define ATTN_CHUNK 32

void rt_cpu_attn_update(rt_attn_acc *a, const float *q, const float *k, const float *v,
                        int64_t stride, int32_t n, int32_t head_dim, float scale)
{
    for (int32_t j0 = 0; j0 < n; j0 += ATTN_CHUNK) {
        int32_t nc = n - j0 < ATTN_CHUNK ? n - j0 : ATTN_CHUNK;
        float sc[ATTN_CHUNK], cmax = -INFINITY;
        for (int32_t j = 0; j < nc; j++) {
            sc[j] = dot(q, k + (j0 + j) * stride, head_dim) * scale;
            cmax = sc[j] > cmax ? sc[j] : cmax;
        }
        float rescale = 1.0f;
        if (cmax > a->mx) {
            rescale = expf(a->mx - cmax);
            a->sum *= rescale;
            a->mx = cmax;
        }
        for (int32_t j = 0; j < nc; j++) {
            float p = expf(sc[j] - a->mx);
            a->sum += p;
            scale_axpy(a->acc, rescale, p, v + (j0 + j) * stride, head_dim);
            rescale = 1.0f;
        }
    }
}

void rt_cpu_attn_end(const rt_attn_acc *a, int32_t head_dim, float *out)
{
    for (int32_t d = 0; d < head_dim; d++)
        out[d] = a->acc[d] / a->sum;
}

void rt_cpu_silu_mul(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

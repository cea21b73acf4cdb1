/* test_rt_cpu_int6.c — the CPU INT6 GEMM: bit-exact against a naive loop in the documented order,
 * extreme codes, and close to the fp32 product of the dequantized operands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_act.h"
#include "fq_base.h"
#include "fq_pack.h"
#include "fq_weight.h"
#include "rt_cpu_int6.h"
#include "rt_cpu_math.h"
#include "rt_pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* Both operands of one GEMM, quantized. */
typedef struct q6_case {
    int64_t m, k, n;
    int32_t g;
    int8_t *qx;      /* [m, k] */
    float *sx;       /* [m, k / g] */
    uint8_t *packed; /* [n, row_bytes] */
    uint16_t *sw;    /* [n, k / g] */
    int64_t row_bytes;
    float *y; /* [m, n] */
} q6_case;

static void case_alloc(q6_case *c, int64_t m, int64_t k, int64_t n, int32_t g)
{
    *c = (q6_case){.m = m, .k = k, .n = n, .g = g, .row_bytes = fq_pack_row_bytes(k)};
    c->qx = malloc((size_t)(m * k));
    c->sx = malloc((size_t)(m * (k / g)) * sizeof *c->sx);
    c->packed = malloc((size_t)(n * c->row_bytes));
    c->sw = malloc((size_t)(n * (k / g)) * sizeof *c->sw);
    c->y = malloc((size_t)(m * n) * sizeof *c->y);
    assert_true(c->qx && c->sx && c->packed && c->sw && c->y);
}

/* Random fp32 operands quantized the way the model does it. */
static void case_random(q6_case *c, int64_t m, int64_t k, int64_t n, int32_t g, int bits,
                        uint64_t seed)
{
    case_alloc(c, m, k, n, g);
    float *x = malloc((size_t)(m * k) * sizeof *x), *w = malloc((size_t)(n * k) * sizeof *w);
    assert_true(x && w);
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand(&seed) * (1.0f + (float)(i % 5));
    for (int64_t i = 0; i < n * k; i++)
        w[i] = frand(&seed) * 0.05f;
    fq_act_quantize(x, m, k, g, bits, c->qx, c->sx);
    fq_weight_quantize(w, n, k, g, c->packed, c->sw);
    free(x);
    free(w);
}

static void case_free(q6_case *c)
{
    free(c->qx);
    free(c->sx);
    free(c->packed);
    free(c->sw);
    free(c->y);
}

/* The naive loop in the order rt_cpu_int6.h documents; int64 group sums. */
static float ref_dot(const q6_case *c, int64_t r, const int8_t *qw, int64_t col)
{
    int64_t ng = c->k / c->g;
    float acc = 0.0f;
    for (int64_t gi = 0; gi < ng; gi++) {
        int64_t d = 0;
        for (int32_t j = 0; j < c->g; j++)
            d += (int64_t)c->qx[r * c->k + gi * c->g + j] * qw[gi * c->g + j];
        float scale = c->sx[r * ng + gi] * fq_f16_to_f32(c->sw[col * ng + gi]);
        float term = scale * (float)d;
        acc = acc + term;
    }
    return acc;
}

static void check_exact(rt_pool *pool, q6_case *c)
{
    for (int64_t i = 0; i < c->m * c->n; i++)
        c->y[i] = NAN; /* y is written, never read */
    rt_cpu_matmul_q6(pool, c->qx, c->sx, c->m, c->k, c->g, c->packed, c->sw, c->row_bytes, c->n,
                     c->y);
    int8_t *qw = malloc((size_t)c->k);
    assert_non_null(qw);
    for (int64_t col = 0; col < c->n; col++) {
        fq_unpack_row(c->packed + col * c->row_bytes, c->k, qw);
        for (int64_t r = 0; r < c->m; r++) {
            float want = ref_dot(c, r, qw, col), got = c->y[r * c->n + col];
            if (memcmp(&want, &got, sizeof want) != 0)
                fail_msg("m=%lld k=%lld n=%lld g=%d: y[%lld,%lld] = %.9g, reference %.9g",
                         (long long)c->m, (long long)c->k, (long long)c->n, (int)c->g, (long long)r,
                         (long long)col, got, want);
        }
    }
    free(qw);
}

static void test_rt_cpu_matmul_q6_equals_the_reference_loop(void **state)
{
    (void)state;
    const int64_t ks[] = {64, 96, 576};
    const int32_t gs[] = {32, 64, 128};
    const int64_t ns[] = {1, 2, 7, 16, 17, 33};
    for (int threads = 1; threads <= 3; threads += 2) {
        rt_pool *pool = NULL;
        assert_int_equal(rt_pool_create(threads, &pool), 0);
        for (int64_t m = 1; m <= 9; m++)
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 3; b++)
                    for (size_t d = 0; d < 6; d++) {
                        if (ks[a] % gs[b])
                            continue;
                        q6_case c;
                        case_random(&c, m, ks[a], ns[d], gs[b], m % 2 ? 8 : 6,
                                    (uint64_t)(m * 131 + ks[a] * 7 + ns[d] + gs[b]));
                        check_exact(pool, &c);
                        case_free(&c);
                    }
        rt_pool_destroy(pool);
    }
}

/* Several K blocks, many row blocks, the other group sizes the kernel accepts. */
static void test_rt_cpu_matmul_q6_large_and_unusual_shapes(void **state)
{
    (void)state;
    struct {
        int64_t m, k, n;
        int32_t g;
    } shapes[] = {{33, 1536, 50, 128}, {12, 640, 40, 128}, {5, 1088, 19, 64}, {3, 64, 9, 32},
                  {6, 512, 24, 256},   {2, 1024, 8, 512},  {17, 576, 31, 32}};
    rt_pool *pool = NULL;
    assert_int_equal(rt_pool_create(2, &pool), 0);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        q6_case c;
        case_random(&c, shapes[i].m, shapes[i].k, shapes[i].n, shapes[i].g, 8, 1000 + i);
        check_exact(pool, &c);
        case_free(&c);
    }
    rt_pool_destroy(pool);
}

/* The largest products (-128 x -32 everywhere) and mixed signs: no lane overflows. */
static void test_rt_cpu_matmul_q6_extreme_codes_are_exact(void **state)
{
    (void)state;
    rt_pool *pool = NULL;
    assert_int_equal(rt_pool_create(2, &pool), 0);
    const int32_t gs[] = {32, 64, 128, 512};
    for (size_t a = 0; a < 4; a++) {
        int64_t m = 6, k = 1024, n = 10;
        q6_case c;
        case_alloc(&c, m, k, n, gs[a]);
        int8_t *qw = malloc((size_t)k);
        assert_non_null(qw);
        for (int64_t col = 0; col < n; col++) {
            for (int64_t i = 0; i < k; i++)
                qw[i] = (int8_t)(col % 2 ? FQ_QMIN : (i % 3 ? FQ_QMIN : FQ_QMAX));
            fq_pack_row(qw, k, c.packed + col * c.row_bytes);
        }
        for (int64_t i = 0; i < m * k; i++)
            c.qx[i] = (int8_t)(i / k % 2 ? -128 : (i % 5 ? 127 : -128));
        for (int64_t i = 0; i < m * (k / gs[a]); i++)
            c.sx[i] = 1.0f / (float)(1 + i % 7);
        for (int64_t i = 0; i < n * (k / gs[a]); i++)
            c.sw[i] = fq_f32_to_f16(0.001f * (float)(1 + i % 3));
        check_exact(pool, &c);
        /* all -128 x -32: each group sum is 4096 * g */
        for (int64_t col = 1; col < n; col += 2)
            for (int64_t r = 1; r < m; r += 2) {
                float want = 0.0f;
                for (int64_t gi = 0; gi < k / gs[a]; gi++)
                    want = want + (c.sx[r * (k / gs[a]) + gi] *
                                   fq_f16_to_f32(c.sw[col * (k / gs[a]) + gi])) *
                                      (float)(4096 * gs[a]);
                assert_true(c.y[r * n + col] == want);
            }
        free(qw);
        case_free(&c);
    }
    rt_pool_destroy(pool);
}

/* The same numbers as an fp32 matmul of the dequantized operands, up to fp32 rounding. */
static void test_rt_cpu_matmul_q6_matches_the_dequantized_fp32_product(void **state)
{
    (void)state;
    rt_pool *pool = NULL;
    assert_int_equal(rt_pool_create(2, &pool), 0);
    int64_t m = 7, k = 576, n = 45;
    int32_t g = 64;
    q6_case c;
    case_random(&c, m, k, n, g, 6, 4242);
    rt_cpu_matmul_q6(pool, c.qx, c.sx, m, k, g, c.packed, c.sw, c.row_bytes, n, c.y);
    float *xd = malloc((size_t)(m * k) * sizeof *xd), *wd = malloc((size_t)(n * k) * sizeof *wd);
    float *yf = malloc((size_t)(m * n) * sizeof *yf);
    assert_true(xd && wd && yf);
    for (int64_t i = 0; i < m * k; i++)
        xd[i] = c.sx[i / g] * (float)c.qx[i];
    fq_weight_dequantize(c.packed, c.sw, n, k, g, wd);
    rt_cpu_matmul(pool, xd, m, k, wd, n, yf);
    for (int64_t r = 0; r < m; r++)
        for (int64_t col = 0; col < n; col++) {
            double mag = 0.0;
            for (int64_t i = 0; i < k; i++)
                mag += fabs((double)xd[r * k + i] * wd[col * k + i]);
            double diff = fabs((double)c.y[r * n + col] - yf[r * n + col]);
            if (diff > 1e-5 * mag + 1e-30)
                fail_msg("y[%lld,%lld] = %.9g, dequantized fp32 product %.9g (magnitude %.3g)",
                         (long long)r, (long long)col, c.y[r * n + col], yf[r * n + col], mag);
        }
    free(xd);
    free(wd);
    free(yf);
    case_free(&c);
    rt_pool_destroy(pool);
}

/* W8A8: extreme codes give exact int32 sums, and the result rounds as (sx * sw) * (float)d. */
static void test_rt_cpu_matmul_w8a8_equals_the_reference_loop(void **state)
{
    (void)state;
    rt_pool *pool = NULL;
    assert_int_equal(rt_pool_create(2, &pool), 0);
    const int64_t m = 5, k = 4100, n = 37;
    int8_t *qx = malloc((size_t)(m * k)), *w8 = malloc((size_t)(n * k));
    float *sx = malloc(sizeof(float) * (size_t)m), *sw = malloc(sizeof(float) * (size_t)n);
    float *y = malloc(sizeof(float) * (size_t)(m * n));
    assert_true(qx && w8 && sx && sw && y);
    uint64_t seed = 11;
    for (int64_t i = 0; i < m * k; i++) /* row 0 all -128: the largest sums */
        qx[i] = i < k ? -128 : (int8_t)(frand(&seed) * 127.0f);
    for (int64_t i = 0; i < n * k; i++)
        w8[i] = i < k ? -128 : (int8_t)(frand(&seed) * 127.0f);
    for (int64_t i = 0; i < m; i++)
        sx[i] = 0.01f + fabsf(frand(&seed));
    for (int64_t i = 0; i < n; i++)
        sw[i] = 0.001f + fabsf(frand(&seed));
    rt_cpu_matmul_w8a8(pool, qx, sx, m, k, w8, sw, n, y);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t d = 0;
            for (int64_t c = 0; c < k; c++)
                d += (int64_t)qx[i * k + c] * w8[j * k + c];
            const float want = (sx[i] * sw[j]) * (float)d;
            assert_true(y[i * n + j] == want);
        }
    assert_true(y[0] == (sx[0] * sw[0]) * (float)(128 * 128 * k));
    free(qx);
    free(w8);
    free(sx);
    free(sw);
    free(y);
    rt_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_cpu_matmul_q6_equals_the_reference_loop),
        cmocka_unit_test(test_rt_cpu_matmul_q6_large_and_unusual_shapes),
        cmocka_unit_test(test_rt_cpu_matmul_q6_extreme_codes_are_exact),
        cmocka_unit_test(test_rt_cpu_matmul_q6_matches_the_dequantized_fp32_product),
        cmocka_unit_test(test_rt_cpu_matmul_w8a8_equals_the_reference_loop),
    };
    return cmocka_run_group_tests_name("rt_cpu_int6", tests, NULL, NULL);
}

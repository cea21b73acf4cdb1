/* test_rt_cpu_math.c — the CPU backend's kernels against plain double-precision loops, and the
 * thread pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_cpu_math.h"
#include "rt_pool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static void check_matmul(rt_pool *pool, int64_t m, int64_t k, int64_t n)
{
    uint64_t s = (uint64_t)(m * 1000 + k * 10 + n);
    float *x = malloc((size_t)(m * k) * sizeof *x), *w = malloc((size_t)(n * k) * sizeof *w);
    float *y = malloc((size_t)(m * n) * sizeof *y);
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand(&s);
    for (int64_t i = 0; i < n * k; i++)
        w[i] = frand(&s);
    rt_cpu_matmul(pool, x, m, k, w, n, y);
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < k; i++) {
                ref += (double)x[r * k + i] * w[c * k + i];
                mag += fabs((double)x[r * k + i] * w[c * k + i]);
            }
            if (fabs(y[r * n + c] - ref) > 1e-5 * (mag + 1))
                fail_msg("matmul %lldx%lldx%lld: y[%lld,%lld] = %g, expected %g", (long long)m,
                         (long long)k, (long long)n, (long long)r, (long long)c, y[r * n + c], ref);
        }
    free(x);
    free(w);
    free(y);
}

static void test_rt_cpu_matmul_matches_double_loops(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 3; threads++) {
        rt_pool *pool = NULL;
        assert_int_equal(rt_pool_create(threads, &pool), 0);
        int64_t ms[] = {1, 2, 3, 4, 5, 7, 9, 33};
        int64_t ks[] = {1, 7, 8, 9, 64, 100};
        int64_t ns[] = {1, 2, 3, 16, 17, 33};
        for (size_t a = 0; a < 8; a++)
            for (size_t b = 0; b < 6; b++)
                for (size_t c = 0; c < 6; c++)
                    check_matmul(pool, ms[a], ks[b], ns[c]);
        rt_pool_destroy(pool);
    }
}

static void test_rt_cpu_rmsnorm_normalizes_rows(void **state)
{
    (void)state;
    float x[2][5] = {{1, 2, 3, 4, 5}, {-1, 0, 0, 0, 1}}, w[5] = {1, 2, 1, 1, 0.5f}, y[2][5];
    rt_cpu_rmsnorm(&x[0][0], w, 2, 5, 1e-6f, &y[0][0]);
    for (int r = 0; r < 2; r++) {
        double ss = 0;
        for (int i = 0; i < 5; i++)
            ss += (double)x[r][i] * x[r][i];
        double inv = 1.0 / sqrt(ss / 5 + 1e-6);
        for (int i = 0; i < 5; i++)
            assert_float_equal(y[r][i], x[r][i] * inv * w[i], 1e-6);
    }
    rt_cpu_rmsnorm(&x[0][0], w, 2, 5, 1e-6f, &x[0][0]); /* in place gives the same */
    assert_memory_equal(x, y, sizeof y);
}

/* Rotating a vector in the interleaved layout equals rotating its half-layout permutation. */
static void test_rt_cpu_rope_conventions_agree_under_permutation(void **state)
{
    (void)state;
    enum { H = 3, D = 8 };
    uint64_t s = 7;
    float half[H * D], inter[H * D];
    for (int i = 0; i < H * D; i++)
        half[i] = frand(&s);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < D / 2; i++) {
            inter[h * D + 2 * i] = half[h * D + i];
            inter[h * D + 2 * i + 1] = half[h * D + i + D / 2];
        }
    for (int32_t pos = 0; pos < 50; pos += 7) {
        float a[H * D], b[H * D];
        memcpy(a, half, sizeof a);
        memcpy(b, inter, sizeof b);
        rt_cpu_rope(a, H, D, pos, 10000.0f, FQ_ROPE_HALF);
        rt_cpu_rope(b, H, D, pos, 10000.0f, FQ_ROPE_INTERLEAVED);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < D / 2; i++) {
                assert_float_equal(a[h * D + i], b[h * D + 2 * i], 1e-6);
                assert_float_equal(a[h * D + i + D / 2], b[h * D + 2 * i + 1], 1e-6);
            }
        /* rotation keeps each pair's norm; position 0 is the identity */
        if (pos == 0)
            assert_memory_equal(a, half, sizeof a);
        for (int i = 0; i < D / 2; i++) {
            double n0 = hypot(half[i], half[i + D / 2]), n1 = hypot(a[i], a[i + D / 2]);
            assert_float_equal(n0, n1, 1e-5);
        }
    }
}

static void test_rt_cpu_silu_mul_matches_formula(void **state)
{
    (void)state;
    float g[4] = {-3, -0.5f, 0, 2}, u[4] = {1, 2, 3, -1};
    float want[4];
    for (int i = 0; i < 4; i++)
        want[i] = (float)(g[i] / (1.0 + exp(-g[i])) * u[i]);
    rt_cpu_silu_mul(g, u, 4);
    for (int i = 0; i < 4; i++)
        assert_float_equal(g[i], want[i], 1e-6);
}

typedef struct visit_ctx {
    atomic_int counts[1000];
} visit_ctx;

static void visit(void *ctx, int64_t i)
{
    visit_ctx *v = ctx;
    atomic_fetch_add(&v->counts[i], 1);
}

static void test_rt_pool_runs_every_index_once(void **state)
{
    (void)state;
    rt_pool *pool = NULL;
    assert_int_equal(rt_pool_create(4, &pool), 0);
    assert_int_equal(rt_pool_size(pool), 4);
    visit_ctx *v = calloc(1, sizeof *v);
    for (int round = 0; round < 200; round++) {
        int64_t n = 1 + (round * 37) % 1000;
        for (int64_t i = 0; i < 1000; i++)
            atomic_store(&v->counts[i], 0);
        rt_pool_run(pool, n, visit, v);
        for (int64_t i = 0; i < 1000; i++)
            assert_int_equal(atomic_load(&v->counts[i]), i < n ? 1 : 0);
    }
    free(v);
    rt_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_cpu_matmul_matches_double_loops),
        cmocka_unit_test(test_rt_cpu_rmsnorm_normalizes_rows),
        cmocka_unit_test(test_rt_cpu_rope_conventions_agree_under_permutation),
        cmocka_unit_test(test_rt_cpu_silu_mul_matches_formula),
        cmocka_unit_test(test_rt_pool_runs_every_index_once),
    };
    return cmocka_run_group_tests_name("rt_cpu_math", tests, NULL, NULL);
}

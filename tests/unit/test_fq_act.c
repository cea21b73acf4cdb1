/* test_fq_act.c — dynamic activation quantization: code ranges, the max element, the error bound,
 * zero groups, round-half-even and the independence of rows and groups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_act.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* x[m, k] with a magnitude per row from 1e-3 to 1e3 and some exact zeros. */
static float *random_x(int64_t m, int64_t k, uint64_t seed)
{
    float *x = malloc((size_t)(m * k) * sizeof *x);
    assert_non_null(x);
    for (int64_t r = 0; r < m; r++) {
        float mag = powf(10.0f, (float)(r % 7) - 3.0f);
        for (int64_t i = 0; i < k; i++)
            x[r * k + i] = i % 11 == 3 ? 0.0f : frand(&seed) * mag;
    }
    return x;
}

/* Range, max element, error bound and the header's scale formula, group by group. */
static void check_groups(const float *x, int64_t m, int64_t k, int32_t g, int bits, const int8_t *q,
                         const float *s)
{
    int qmax = (1 << (bits - 1)) - 1;
    int64_t ng = k / g;
    for (int64_t r = 0; r < m; r++)
        for (int64_t gi = 0; gi < ng; gi++) {
            const float *xg = x + r * k + gi * g;
            const int8_t *qg = q + r * k + gi * g;
            float amax = 0.0f;
            int32_t arg = 0;
            for (int32_t j = 0; j < g; j++)
                if (fabsf(xg[j]) > amax) {
                    amax = fabsf(xg[j]);
                    arg = j;
                }
            float sc = s[r * ng + gi];
            assert_true(sc == amax / (float)qmax);
            for (int32_t j = 0; j < g; j++) {
                assert_in_range(qg[j] + qmax + 1, 0, 2 * qmax + 1);
                double e = fabs((double)xg[j] - (double)sc * qg[j]);
                /* s/2, plus x * inv's few fp32 roundings on a value up to qmax */
                if (e > sc * (0.5 + 1e-4))
                    fail_msg("bits %d: x = %.9g, code %d, scale %.9g: error %.3g > s/2", bits,
                             xg[j], qg[j], sc, e);
            }
            if (amax > 0.0f)
                assert_int_equal(qg[arg], xg[arg] > 0.0f ? qmax : -qmax);
        }
}

static void test_fq_act_codes_stay_in_range_with_bounded_error(void **state)
{
    (void)state;
    const int32_t gs[] = {32, 64, 128};
    for (int bits = 6; bits <= 8; bits += 2)
        for (size_t a = 0; a < 3; a++) {
            int64_t m = 9, k = 384;
            int32_t g = gs[a];
            float *x = random_x(m, k, (uint64_t)(bits * 100 + g));
            int8_t *q = malloc((size_t)(m * k));
            float *s = malloc((size_t)(m * (k / g)) * sizeof *s);
            assert_true(q && s);
            fq_act_quantize(x, m, k, g, bits, q, s);
            check_groups(x, m, k, g, bits, q, s);
            free(x);
            free(q);
            free(s);
        }
}

static void test_fq_act_zero_groups_get_zero_scale_and_codes(void **state)
{
    (void)state;
    float x[2 * 64] = {0};
    x[64 + 40] = -2.0f; /* row 1, group 1 only */
    int8_t q[2 * 64];
    float s[4];
    memset(q, 0x55, sizeof q);
    fq_act_quantize(x, 2, 64, 32, 6, q, s);
    assert_true(s[0] == 0.0f && s[1] == 0.0f && s[2] == 0.0f);
    assert_true(s[3] == 2.0f / 31.0f);
    for (int i = 0; i < 2 * 64; i++)
        assert_int_equal(q[i], i == 64 + 40 ? -31 : 0);
}

static void test_fq_act_rounds_half_to_even(void **state)
{
    (void)state;
    /* amax = qmax makes inv = 1 exactly, so x * inv = x */
    float x6[16] = {31.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 30.5f, -29.5f, 3.49f};
    int8_t want6[16] = {31, 0, 2, 2, 0, -2, -2, 30, -30, 3};
    int8_t q[16];
    float s;
    fq_act_quantize(x6, 1, 16, 16, 6, q, &s);
    assert_true(s == 1.0f);
    assert_memory_equal(q, want6, 16);
    float x8[16] = {-127.0f, 126.5f, 125.5f, -125.5f, 0.5f, 64.5f};
    int8_t want8[16] = {-127, 126, 126, -126, 0, 64};
    fq_act_quantize(x8, 1, 16, 16, 8, q, &s);
    assert_true(s == 1.0f);
    assert_memory_equal(q, want8, 16);
}

static void test_fq_act_rows_and_groups_are_independent(void **state)
{
    (void)state;
    int64_t m = 5, k = 256;
    int32_t g = 64;
    float *x = random_x(m, k, 99);
    int8_t *q = malloc((size_t)(m * k)), *q1 = malloc((size_t)g);
    float *s = malloc((size_t)(m * (k / g)) * sizeof *s), s1;
    assert_true(q && q1 && s);
    for (int bits = 6; bits <= 8; bits += 2) {
        fq_act_quantize(x, m, k, g, bits, q, s);
        /* each (row, group) alone gives the same codes and scale */
        for (int64_t r = 0; r < m; r++)
            for (int64_t gi = 0; gi < k / g; gi++) {
                fq_act_quantize(x + r * k + gi * g, 1, g, g, bits, q1, &s1);
                assert_memory_equal(q1, q + r * k + gi * g, (size_t)g);
                assert_true(s1 == s[r * (k / g) + gi]);
            }
        /* a large value in one group changes only that group */
        int8_t *before = malloc((size_t)(m * k));
        assert_non_null(before);
        memcpy(before, q, (size_t)(m * k));
        float saved = x[2 * k + 70];
        x[2 * k + 70] = 1e6f;
        fq_act_quantize(x, m, k, g, bits, q, s);
        for (int64_t i = 0; i < m * k; i++)
            if (i / k != 2 || i % k / g != 1)
                assert_int_equal(q[i], before[i]);
        assert_int_equal(q[2 * k + 70], (1 << (bits - 1)) - 1);
        x[2 * k + 70] = saved;
        free(before);
    }
    free(x);
    free(q);
    free(q1);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fq_act_codes_stay_in_range_with_bounded_error),
        cmocka_unit_test(test_fq_act_zero_groups_get_zero_scale_and_codes),
        cmocka_unit_test(test_fq_act_rounds_half_to_even),
        cmocka_unit_test(test_fq_act_rows_and_groups_are_independent),
    };
    return cmocka_run_group_tests_name("fq_act", tests, NULL, NULL);
}

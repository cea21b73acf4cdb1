/* test_rt_kv.c — the paged KV cache's block accounting: reserve, exhaust, release, slot mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_kv.h"

static rt_kv *make_kv(int32_t block_size, int32_t n_blocks)
{
    rt_kv_params p = rt_kv_default_params();
    p.block_size = block_size;
    p.n_blocks = n_blocks;
    rt_kv *kv = NULL;
    assert_int_equal(rt_kv_create(&p, &kv), 0);
    return kv;
}

static void test_rt_kv_reserve_takes_whole_blocks(void **state)
{
    (void)state;
    rt_kv *kv = make_kv(16, 8);
    rt_kv_seq s = {0};
    assert_int_equal(rt_kv_seq_reserve(kv, &s, 1), 0);
    assert_int_equal(s.n_blocks, 1);
    assert_int_equal(rt_kv_seq_reserve(kv, &s, 16), 0);
    assert_int_equal(s.n_blocks, 1);
    assert_int_equal(rt_kv_seq_reserve(kv, &s, 17), 0);
    assert_int_equal(s.n_blocks, 2);
    assert_int_equal(rt_kv_n_free(kv), 6);
    rt_kv_seq_release(kv, &s);
    assert_int_equal(rt_kv_n_free(kv), 8);
    assert_null(s.blocks);
    rt_kv_destroy(kv);
}

static void test_rt_kv_exhaustion_takes_nothing(void **state)
{
    (void)state;
    rt_kv *kv = make_kv(4, 5);
    rt_kv_seq a = {0}, b = {0};
    assert_int_equal(rt_kv_seq_reserve(kv, &a, 12), 0); /* 3 blocks */
    assert_int_equal(rt_kv_seq_reserve(kv, &b, 12), FQ_ERANGE);
    assert_int_equal(b.n_blocks, 0);
    assert_int_equal(rt_kv_n_free(kv), 2);
    assert_int_equal(rt_kv_seq_reserve(kv, &b, 8), 0);
    assert_int_equal(rt_kv_n_free(kv), 0);
    assert_int_equal(rt_kv_seq_reserve(kv, &a, 1000), FQ_ERANGE);
    rt_kv_seq_release(kv, &a);
    rt_kv_seq_release(kv, &b);
    assert_int_equal(rt_kv_n_free(kv), 5);
    rt_kv_destroy(kv);
}

static void test_rt_kv_blocks_are_distinct_and_slots_map(void **state)
{
    (void)state;
    rt_kv *kv = make_kv(8, 16);
    rt_kv_seq s[4] = {{0}};
    int used[16] = {0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rt_kv_seq_reserve(kv, &s[i], 8 * (i + 1)), 0);
        for (int32_t j = 0; j < s[i].n_blocks; j++) {
            assert_in_range(s[i].blocks[j], 0, 15);
            assert_int_equal(used[s[i].blocks[j]]++, 0);
        }
    }
    for (int64_t pos = 0; pos < 32; pos++) {
        int64_t slot = rt_kv_slot(kv, &s[3], pos);
        assert_int_equal(slot / 8, s[3].blocks[pos / 8]);
        assert_int_equal(slot % 8, pos % 8);
    }
    for (int i = 0; i < 4; i++)
        rt_kv_seq_release(kv, &s[i]);
    assert_int_equal(rt_kv_n_free(kv), 16);
    rt_kv_destroy(kv);
}

static void test_rt_kv_rejects_bad_geometry(void **state)
{
    (void)state;
    rt_kv_params p = rt_kv_default_params();
    p.block_size = 0;
    rt_kv *kv = (rt_kv *)1;
    assert_int_equal(rt_kv_create(&p, &kv), FQ_EINVAL);
    assert_null(kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_kv_reserve_takes_whole_blocks),
        cmocka_unit_test(test_rt_kv_exhaustion_takes_nothing),
        cmocka_unit_test(test_rt_kv_blocks_are_distinct_and_slots_map),
        cmocka_unit_test(test_rt_kv_rejects_bad_geometry),
    };
    return cmocka_run_group_tests_name("rt_kv", tests, NULL, NULL);
}

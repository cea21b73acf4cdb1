/* test_rt_unicode.c — UTF-8 decode/encode/repair (checked against Python's behaviour) and the
 * Unicode class tables of rt_unicode.h. */
#include "fq_base.h"
#include "rt_unicode.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Repairs in[0..in_len) and checks the result against Python's
 * in.decode('utf-8', 'replace').encode('utf-8'), written out by hand in want. */
static void expect_repair(const char *in, size_t in_len, const char *want, size_t want_len)
{
    char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(rt_utf8_repair(in, in_len, &out, &out_len), 0);
    assert_int_equal(out_len, want_len);
    assert_memory_equal(out, want, out_len);
    assert_int_equal(out[out_len], '\0');
    assert_true(rt_utf8_valid(out, out_len));
    free(out);
}

/* For string literals, which may hold NUL bytes. */
#define REPAIR(in, want) expect_repair(in, sizeof(in) - 1, want, sizeof(want) - 1)
#define FFFD             "\xEF\xBF\xBD"

static void test_rt_unicode_repair_like_python(void **state)
{
    (void)state;
    REPAIR("", "");
    REPAIR("plain ascii", "plain ascii");
    REPAIR("caf\xC3\xA9", "caf\xC3\xA9");
    REPAIR("\xFF", FFFD);
    REPAIR("\xFF\xFE", FFFD FFFD);
    /* a truncated 3-byte sequence is one maximal subpart */
    REPAIR("a\xE2\x82", "a" FFFD);
    REPAIR("a\xE2\x82z", "a" FFFD "z");
    /* E0 needs A0..BF next: E0 alone is the subpart, then two stray continuations */
    REPAIR("\xE0\x80\x80", FFFD FFFD FFFD);
    /* overlong C0 AF, surrogate ED A0 80, beyond U+10FFFF F4 90 80 80 */
    REPAIR("\xC0\xAF", FFFD FFFD);
    REPAIR("\xED\xA0\x80", FFFD FFFD FFFD);
    REPAIR("\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD);
    /* a truncated 4-byte emoji at the end is one U+FFFD */
    REPAIR("\xF0\x9F\x98", FFFD);
    REPAIR("\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80");
    REPAIR("x\xF0", "x" FFFD);
    REPAIR("\x80\x80\xBF", FFFD FFFD FFFD);
    REPAIR("NUL\0in", "NUL\0in");
    REPAIR("latin-1 caf\xE9!", "latin-1 caf" FFFD "!");
}

static void test_rt_unicode_decode_lengths(void **state)
{
    (void)state;
    uint32_t cp;
    assert_int_equal(rt_utf8_decode((const uint8_t *)"A", 1, &cp), 1);
    assert_int_equal(cp, 'A');
    assert_int_equal(rt_utf8_decode((const uint8_t *)"\xC3\xA9", 2, &cp), 2);
    assert_int_equal(cp, 0xE9);
    assert_int_equal(rt_utf8_decode((const uint8_t *)"\xE2\x82\xAC", 3, &cp), 3);
    assert_int_equal(cp, 0x20AC);
    assert_int_equal(rt_utf8_decode((const uint8_t *)"\xF4\x8F\xBF\xBF", 4, &cp), 4);
    assert_int_equal(cp, 0x10FFFF);
    assert_int_equal(rt_utf8_decode((const uint8_t *)"\xE2\x82", 2, &cp), -2);
    assert_int_equal(cp, RT_UNI_REPLACEMENT);
    assert_int_equal(rt_utf8_decode((const uint8_t *)"\xC1\xBF", 2, &cp), -1);
    assert_int_equal(rt_utf8_decode((const uint8_t *)"\xF0\x9F\x98"
                                                     "A",
                                    4, &cp),
                     -3);
}

static void test_rt_unicode_encode_round_trip(void **state)
{
    (void)state;
    char buf[4];
    for (uint32_t cp = 0; cp <= RT_UNI_MAX; cp++) {
        size_t n = rt_utf8_encode(cp, buf);
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            assert_int_equal(n, 0);
            continue;
        }
        uint32_t back;
        assert_int_equal(rt_utf8_decode((const uint8_t *)buf, n, &back), (int)n);
        assert_int_equal(back, cp);
    }
    assert_int_equal(rt_utf8_encode(RT_UNI_MAX + 1, buf), 0);
}

static void check_table(const rt_uni_range *r, size_t n)
{
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(r[i].lo <= r[i].hi);
        assert_true(r[i].hi <= RT_UNI_MAX);
        if (i > 0)
            assert_true(r[i - 1].hi + 1 < r[i].lo); /* sorted, disjoint, merged */
    }
}

static void test_rt_unicode_tables_sorted_and_disjoint(void **state)
{
    (void)state;
    check_table(rt_uni_letter, rt_uni_letter_len);
    check_table(rt_uni_number, rt_uni_number_len);
    check_table(rt_uni_number_rust_extra, rt_uni_number_rust_extra_len);
    check_table(rt_uni_space, rt_uni_space_len);
    assert_string_equal(rt_uni_version, "16.0.0");
    for (uint32_t cp = 0; cp <= RT_UNI_MAX; cp++) {
        int n = rt_uni_is_letter(cp) + rt_uni_is_number(cp) + rt_uni_is_space(cp);
        assert_true(n <= 1);
        rt_uni_class c = rt_uni_classify(cp);
        assert_int_equal(c == RT_UNI_LETTER, rt_uni_is_letter(cp));
        assert_int_equal(c == RT_UNI_NUMBER, rt_uni_is_number(cp));
        assert_int_equal(c == RT_UNI_SPACE, rt_uni_is_space(cp));
    }
}

static void test_rt_unicode_classes_of_samples(void **state)
{
    (void)state;
    assert_int_equal(rt_uni_classify('A'), RT_UNI_LETTER);
    assert_int_equal(rt_uni_classify('z'), RT_UNI_LETTER);
    assert_int_equal(rt_uni_classify('5'), RT_UNI_NUMBER);
    assert_int_equal(rt_uni_classify('\''), RT_UNI_OTHER);
    assert_int_equal(rt_uni_classify('_'), RT_UNI_OTHER);
    assert_int_equal(rt_uni_classify(' '), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify('\t'), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify('\n'), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify(0x0B), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify(0x1C), RT_UNI_OTHER); /* isspace() in Python, not \s */
    assert_int_equal(rt_uni_classify(0x85), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify(0xA0), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify(0x3000), RT_UNI_SPACE);
    assert_int_equal(rt_uni_classify(0x200B), RT_UNI_OTHER); /* zero width space */
    assert_int_equal(rt_uni_classify(0xE9), RT_UNI_LETTER);
    assert_int_equal(rt_uni_classify(0x17F), RT_UNI_LETTER);
    assert_int_equal(rt_uni_classify(0x301), RT_UNI_OTHER); /* combining acute (Mn) */
    assert_int_equal(rt_uni_classify(0x65E5), RT_UNI_LETTER);
    assert_int_equal(rt_uni_classify(0x661), RT_UNI_NUMBER);
    assert_int_equal(rt_uni_classify(0xBD), RT_UNI_NUMBER);   /* ½ is No */
    assert_int_equal(rt_uni_classify(0x216B), RT_UNI_NUMBER); /* Ⅻ is Nl */
    assert_int_equal(rt_uni_classify(0x1F600), RT_UNI_OTHER);
    assert_int_equal(rt_uni_classify(0x1C89), RT_UNI_LETTER); /* new in Unicode 16 */
    assert_int_equal(rt_uni_classify(RT_UNI_MAX + 1), RT_UNI_OTHER);
    assert_false(rt_uni_is_number(0x11DE0));      /* Unicode 17 digit: not \p{N} for Oniguruma */
    assert_true(rt_uni_is_numeric_rust(0x11DE0)); /* but Rust's is_numeric says yes */
    assert_true(rt_uni_is_numeric_rust('7'));
    assert_false(rt_uni_is_numeric_rust('x'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_unicode_repair_like_python),
        cmocka_unit_test(test_rt_unicode_decode_lengths),
        cmocka_unit_test(test_rt_unicode_encode_round_trip),
        cmocka_unit_test(test_rt_unicode_tables_sorted_and_disjoint),
        cmocka_unit_test(test_rt_unicode_classes_of_samples),
    };
    return cmocka_run_group_tests_name("rt_unicode", tests, NULL, NULL);
}

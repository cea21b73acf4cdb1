/* test_srv_stop.c — incremental detokenization: stop strings split over tokens, overlapping and
 * multiple candidates, UTF-8 characters split over tokens, invalid bytes, offsets, finish flush. */
#include "fq_base.h"
#include "rt_unicode.h"
#include "srv_stop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAX_TOKENS 16

/* The matcher under test and what it emitted; teardown frees it even after a failure. */
typedef struct stop_state {
    srv_stop *st;
    char text[512]; /* everything emitted, concatenated */
    size_t len;
    size_t deltas[MAX_TOKENS + 1]; /* bytes emitted by each feed, then by the flush */
    size_t offsets[MAX_TOKENS + 1];
    bool stopped;
} stop_state;

static int setup(void **state)
{
    *state = calloc(1, sizeof(stop_state));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    stop_state *s = *state;
    srv_stop_destroy(s->st);
    free(s);
    return 0;
}

static void make(stop_state *s, const char *const *stops, size_t n)
{
    size_t lens[8];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(stops[i]);
    srv_stop_destroy(s->st);
    s->st = NULL;
    assert_int_equal(srv_stop_create(stops, lens, n, &s->st), 0);
    s->len = 0;
    s->stopped = false;
}

static void take(stop_state *s, const srv_stop_out *o, size_t slot)
{
    assert_true(rt_utf8_valid(o->text, o->len));
    assert_true(s->len + o->len < sizeof s->text);
    memcpy(s->text + s->len, o->text, o->len);
    s->len += o->len;
    s->text[s->len] = '\0';
    s->deltas[slot] = o->len;
    s->offsets[slot] = o->text_offset;
    s->stopped = o->stopped;
}

/* Feeds the tokens (NUL-terminated byte strings) and flushes unless a stop matched. */
static void run(stop_state *s, const char *const *tokens, size_t n)
{
    assert_true(n <= MAX_TOKENS);
    srv_stop_out o;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(srv_stop_feed(s->st, tokens[i], strlen(tokens[i]), &o), 0);
        take(s, &o, i);
    }
    if (!s->stopped) {
        assert_int_equal(srv_stop_flush(s->st, &o), 0);
        take(s, &o, n);
    }
}

static void test_srv_stop_no_stop_emits_everything(void **state)
{
    stop_state *s = *state;
    make(s, NULL, 0);
    const char *toks[] = {"Hello", ",", " world", "!"};
    run(s, toks, 4);
    assert_string_equal(s->text, "Hello, world!");
    assert_false(s->stopped);
    assert_int_equal(srv_stop_matched(s->st), -1);
    /* Nothing held back without stop strings: each token comes out at once. */
    assert_int_equal(s->deltas[0], 5);
    assert_int_equal(s->deltas[3], 1);
    assert_int_equal(s->deltas[4], 0);
    assert_int_equal(s->offsets[0], 0);
    assert_int_equal(s->offsets[1], 5);
    assert_int_equal(s->offsets[2], 6);
    assert_int_equal(s->offsets[3], 12);
    assert_int_equal(s->offsets[4], 13); /* flush: the whole length */
}

static void test_srv_stop_split_over_two_tokens(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"END"};
    make(s, stops, 1);
    const char *toks[] = {"hello E", "ND world"};
    run(s, toks, 2);
    assert_string_equal(s->text, "hello ");
    assert_true(s->stopped);
    assert_int_equal(s->deltas[0], 6); /* "E" held back */
    assert_int_equal(s->deltas[1], 0);
    assert_int_equal(srv_stop_matched(s->st), 0);
}

static void test_srv_stop_split_over_three_tokens(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"<|end|>"};
    make(s, stops, 1);
    const char *toks[] = {"ab<", "|e", "nd|>tail"};
    run(s, toks, 3);
    assert_string_equal(s->text, "ab");
    assert_true(s->stopped);
    assert_int_equal(s->deltas[0], 2);
    assert_int_equal(s->deltas[1], 0);
    assert_int_equal(s->deltas[2], 0);
}

static void test_srv_stop_false_prefix_is_released(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"END"};
    make(s, stops, 1);
    const char *toks[] = {"a E", "N", "x"};
    run(s, toks, 3);
    assert_string_equal(s->text, "a ENx");
    assert_false(s->stopped);
    assert_int_equal(s->deltas[0], 2);
    assert_int_equal(s->deltas[1], 0);
    assert_int_equal(s->deltas[2], 3);
}

static void test_srv_stop_overlapping_candidates(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"abcd", "bce"};
    make(s, stops, 2);
    const char *toks[] = {"xab", "c", "e"};
    run(s, toks, 3);
    assert_string_equal(s->text, "xa");
    assert_true(s->stopped);
    assert_int_equal(srv_stop_matched(s->st), 1);

    /* A self-overlapping stop string: the longest held prefix must be kept ("aa", not "a"). */
    const char *stops2[] = {"aab"};
    make(s, stops2, 1);
    const char *toks2[] = {"aaa", "b"};
    run(s, toks2, 2);
    assert_string_equal(s->text, "a");
    assert_true(s->stopped);
}

static void test_srv_stop_multiple_earliest_wins(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"world", "lo"};
    make(s, stops, 2);
    const char *toks[] = {"hello world"};
    run(s, toks, 1);
    assert_string_equal(s->text, "hel");
    assert_int_equal(srv_stop_matched(s->st), 1);

    const char *stops2[] = {"zzz", "\n\n", "STOP"};
    make(s, stops2, 3);
    const char *toks2[] = {"one", " STO", "P two\n\n"};
    run(s, toks2, 3);
    assert_string_equal(s->text, "one ");
    assert_int_equal(srv_stop_matched(s->st), 2);
}

static void test_srv_stop_at_start(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"\n\n"};
    make(s, stops, 1);
    const char *toks[] = {"\n", "\nabc"};
    run(s, toks, 2);
    assert_string_equal(s->text, "");
    assert_true(s->stopped);

    make(s, stops, 1);
    const char *toks2[] = {"\n\nabc"};
    run(s, toks2, 1);
    assert_int_equal(s->len, 0);
    assert_true(s->stopped);
}

static void test_srv_stop_inside_one_token(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"STOP"};
    make(s, stops, 1);
    const char *toks[] = {"foo STOP bar"};
    run(s, toks, 1);
    assert_string_equal(s->text, "foo ");
}

static void test_srv_stop_feed_after_stop_emits_nothing(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"x"};
    make(s, stops, 1);
    srv_stop_out o;
    assert_int_equal(srv_stop_feed(s->st, "abx", 3, &o), 0);
    assert_true(o.stopped);
    assert_int_equal(o.len, 2);
    assert_int_equal(srv_stop_feed(s->st, "more", 4, &o), 0);
    assert_true(o.stopped);
    assert_int_equal(o.len, 0);
    assert_int_equal(srv_stop_flush(s->st, &o), 0);
    assert_int_equal(o.len, 0);
    assert_int_equal(o.text_offset, 2);
}

static void test_srv_stop_emoji_over_three_tokens(void **state)
{
    stop_state *s = *state;
    make(s, NULL, 0);
    /* U+1F600 = F0 9F 98 80 */
    const char *toks[] = {"a\xF0", "\x9F\x98", "\x80\x62" /* 80 'b' */, "c"};
    run(s, toks, 4);
    assert_string_equal(s->text, "a\xF0\x9F\x98\x80"
                                 "bc");
    assert_int_equal(s->deltas[0], 1); /* the partial character is held */
    assert_int_equal(s->deltas[1], 0);
    assert_int_equal(s->deltas[2], 5);
    /* Offsets in code points; tokens continuing the emoji get the emoji's offset. */
    assert_int_equal(s->offsets[0], 0);
    assert_int_equal(s->offsets[1], 1);
    assert_int_equal(s->offsets[2], 1);
    assert_int_equal(s->offsets[3], 3);
    assert_int_equal(s->offsets[4], 4);
}

static void test_srv_stop_multibyte_stop_split(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"\xC3\xA9!"}; /* "é!" */
    make(s, stops, 1);
    const char *toks[] = {"x\xC3", "\xA9", "!"};
    run(s, toks, 3);
    assert_string_equal(s->text, "x");
    assert_true(s->stopped);

    /* The same character not followed by "!" is released whole. */
    make(s, stops, 1);
    const char *toks2[] = {"x\xC3", "\xA9", "?"};
    run(s, toks2, 3);
    assert_string_equal(s->text, "x\xC3\xA9?");
    assert_int_equal(s->deltas[1], 0);
}

static void test_srv_stop_invalid_bytes_replaced(void **state)
{
    stop_state *s = *state;
    make(s, NULL, 0);
    /* Python: b'\xff'+b'\xc3A'+b'\xe0'+b'\x80x' decoded with 'replace' =
     * '\ufffd\ufffdA\ufffd\ufffdx' */
    const char *toks[] = {"\xFF", "\xC3", "A", "\xE0", "\x80x"};
    run(s, toks, 5);
    assert_string_equal(s->text, "\xEF\xBF\xBD\xEF\xBF\xBD"
                                 "A\xEF\xBF\xBD\xEF\xBF\xBDx");
    assert_int_equal(s->deltas[0], 3); /* clearly invalid: replaced at once */
    assert_int_equal(s->deltas[1], 0); /* C3 could still become a character */
    assert_int_equal(s->deltas[2], 4);
}

static void test_srv_stop_flush_incomplete_tail(void **state)
{
    stop_state *s = *state;
    make(s, NULL, 0);
    const char *toks[] = {"ok\xF0\x9F"};
    run(s, toks, 1);
    assert_string_equal(s->text, "ok\xEF\xBF\xBD"); /* Python: b'ok\xf0\x9f' -> 'ok\ufffd' */
    assert_int_equal(s->deltas[0], 2);
    assert_int_equal(s->offsets[1], 3);
}

static void test_srv_stop_flush_emits_held_prefix(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"###"};
    make(s, stops, 1);
    const char *toks[] = {"a#", "#"};
    run(s, toks, 2);
    assert_string_equal(s->text, "a##");
    assert_false(s->stopped);
    assert_int_equal(s->deltas[0], 1);
    assert_int_equal(s->deltas[1], 0);
    assert_int_equal(s->deltas[2], 2); /* the flush */
    srv_stop_out o;
    assert_int_equal(srv_stop_flush(s->st, &o), 0); /* a second flush: nothing */
    assert_int_equal(o.len, 0);
}

static void test_srv_stop_every_split_of_a_text(void **state)
{
    stop_state *s = *state;
    const char *stops[] = {"<END>", "\xF0\x9F\x9B\x91"}; /* "<END>", U+1F6D1 */
    const char text[] = "h\xC3\xA9llo \xF0\x9F\x98\x80 w\xC3\xB6rld<END>tail";
    const char want[] = "h\xC3\xA9llo \xF0\x9F\x98\x80 w\xC3\xB6rld";
    size_t n = strlen(text);
    /* Every split into three tokens (empty ones included). */
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            char t0[64], t1[64], t2[64];
            snprintf(t0, sizeof t0, "%.*s", (int)i, text);
            snprintf(t1, sizeof t1, "%.*s", (int)(j - i), text + i);
            snprintf(t2, sizeof t2, "%s", text + j);
            make(s, stops, 2);
            const char *toks[] = {t0, t1, t2};
            run(s, toks, 3);
            assert_string_equal(s->text, want);
            assert_true(s->stopped);
            assert_null(strchr(s->text, '<'));
        }
    }
}

/* A small deterministic generator (state passed in: no globals). */
static uint32_t rnd(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*x >> 33);
}

/* Random bytes: ASCII from a small alphabet (so stop strings occur), valid 2..4-byte characters,
 * and stray invalid bytes. */
static size_t random_bytes(uint64_t *x, char *buf, size_t cap)
{
    static const char *const pieces[] = {"a",
                                         "b",
                                         "c",
                                         "#",
                                         " ",
                                         "\xC3\xA9",
                                         "\xE2\x82\xAC",
                                         "\xF0\x9F\x98\x80",
                                         "\xFF",
                                         "\xC3",
                                         "\xE2\x82",
                                         "\xF0\x9F",
                                         "\x80",
                                         "\xED\xA0\x80"};
    size_t n = 0;
    size_t want = 1 + rnd(x) % 40;
    for (size_t i = 0; i < want; i++) {
        const char *p = pieces[rnd(x) % (sizeof pieces / sizeof pieces[0])];
        size_t l = strlen(p);
        if (n + l >= cap)
            break;
        memcpy(buf + n, p, l);
        n += l;
    }
    return n;
}

/* bytes[0..n) as Python's decode('utf-8', 'replace') gives it, without an incomplete trailing
 * character when `hold_tail` (what a stream can have emitted after those bytes). */
static size_t reference_text(const char *bytes, size_t n, bool hold_tail, char *out)
{
    if (hold_tail && n > 0) {
        size_t start = n > 3 ? n - 3 : 0;
        for (size_t i = start; i < n; i++) {
            uint8_t b = (uint8_t)bytes[i];
            if (b < 0xC2 || b > 0xF4)
                continue;
            uint32_t cp;
            int r = rt_utf8_decode((const uint8_t *)bytes + i, n - i, &cp);
            if (r < 0 && (size_t)-r == n - i) {
                n = i;
                break;
            }
        }
    }
    char *fixed = NULL;
    size_t len = 0;
    assert_int_equal(rt_utf8_repair(bytes, n, &fixed, &len), 0);
    memcpy(out, fixed, len);
    free(fixed);
    return len;
}

static void test_srv_stop_random_streams_match_reference(void **state)
{
    stop_state *s = *state;
    uint64_t x = 12345;
    const char *stops[] = {"ab#", "\xC3\xA9\x63" /* "éc" */, "##"};
    size_t lens[] = {3, 3, 2};
    int n_stopped = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char bytes[256];
        size_t n = random_bytes(&x, bytes, sizeof bytes);
        size_t n_stops = iter % 2 ? 3 : 0;
        srv_stop_destroy(s->st);
        s->st = NULL;
        assert_int_equal(srv_stop_create(stops, lens, n_stops, &s->st), 0);
        char got[1024], want[1024], ref[1024];
        size_t got_len = 0, want_len = 0;
        bool stopped = false, ref_stopped = false;
        size_t pos = 0;
        while (pos < n && !stopped) {
            size_t tl = 1 + rnd(&x) % 5;
            if (tl > n - pos)
                tl = n - pos;
            srv_stop_out o;
            assert_int_equal(srv_stop_feed(s->st, bytes + pos, tl, &o), 0);
            assert_true(rt_utf8_valid(o.text, o.len));
            memcpy(got + got_len, o.text, o.len);
            got_len += o.len;
            pos += tl;
            stopped = o.stopped;
            /* Reference: the text so far, cut at the earliest stop string it holds. */
            size_t rl = reference_text(bytes, pos, true, ref);
            size_t best = SIZE_MAX;
            for (size_t k = 0; k < n_stops; k++) {
                const char *m = memmem(ref, rl, stops[k], lens[k]);
                if (m && (size_t)(m - ref) < best)
                    best = (size_t)(m - ref);
            }
            if (best != SIZE_MAX) {
                memcpy(want, ref, best);
                want_len = best;
                ref_stopped = true;
            } else {
                /* No stop yet: what was emitted is a prefix of the text so far. */
                assert_true(got_len <= rl);
                assert_memory_equal(got, ref, got_len);
            }
            assert_int_equal(stopped, ref_stopped);
        }
        if (!stopped) {
            srv_stop_out o;
            assert_int_equal(srv_stop_flush(s->st, &o), 0);
            memcpy(got + got_len, o.text, o.len);
            got_len += o.len;
            assert_false(o.stopped); /* no stop string here holds U+FFFD */
            want_len = reference_text(bytes, n, false, want);
        }
        n_stopped += stopped;
        assert_int_equal(got_len, want_len);
        assert_memory_equal(got, want, got_len);
    }
    assert_true(n_stopped > 300); /* the stop path is exercised, not only the UTF-8 one */
}

static void test_srv_stop_rejects_empty_stop(void **state)
{
    (void)state;
    const char *stops[] = {"ok", ""};
    size_t lens[] = {2, 0};
    srv_stop *st = (srv_stop *)1;
    assert_int_equal(srv_stop_create(stops, lens, 2, &st), FQ_EINVAL);
    assert_null(st);
    srv_stop_destroy(NULL);
}

static void test_srv_stop_count_cp(void **state)
{
    (void)state;
    assert_int_equal(srv_utf8_count_cp("", 0), 0);
    assert_int_equal(srv_utf8_count_cp("abc", 3), 3);
    assert_int_equal(srv_utf8_count_cp("h\xC3\xA9\xF0\x9F\x98\x80", 7), 3);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_srv_stop_no_stop_emits_everything),
        T(test_srv_stop_split_over_two_tokens),
        T(test_srv_stop_split_over_three_tokens),
        T(test_srv_stop_false_prefix_is_released),
        T(test_srv_stop_overlapping_candidates),
        T(test_srv_stop_multiple_earliest_wins),
        T(test_srv_stop_at_start),
        T(test_srv_stop_inside_one_token),
        T(test_srv_stop_feed_after_stop_emits_nothing),
        T(test_srv_stop_emoji_over_three_tokens),
        T(test_srv_stop_multibyte_stop_split),
        T(test_srv_stop_invalid_bytes_replaced),
        T(test_srv_stop_flush_incomplete_tail),
        T(test_srv_stop_flush_emits_held_prefix),
        T(test_srv_stop_every_split_of_a_text),
        T(test_srv_stop_random_streams_match_reference),
        T(test_srv_stop_rejects_empty_stop),
        T(test_srv_stop_count_cp),
    };
#undef T
    return cmocka_run_group_tests_name("srv_stop", tests, NULL, NULL);
}

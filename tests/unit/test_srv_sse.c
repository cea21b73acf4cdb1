/* test_srv_sse.c — SSE framing: one compact JSON line per event, "\n\n" after it, [DONE] last. */
#include "fq_base.h"
#include "srv_errors.h"
#include "srv_sse.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_srv_sse_event_compact_framing(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:i, s:[i,i]}", "text", "a b", "n", 3, "l", 1, 2);
    assert_non_null(o);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(srv_sse_event(o, &out, &len), 0);
    assert_int_equal(len, strlen(out));
    assert_true(strncmp(out, "data: {", 7) == 0);
    assert_true(len >= 9 && strcmp(out + len - 3, "}\n\n") == 0);
    /* Compact: no space after ',' or ':' outside strings, and the same object back. */
    assert_null(strstr(out, ", "));
    assert_null(strstr(out, "\": "));
    json_error_t jerr;
    json_t *back = json_loadb(out + 6, len - 8, 0, &jerr);
    assert_non_null(back);
    assert_true(json_equal(o, back));
    json_decref(back);
    json_decref(o);
    free(out);
}

static void test_srv_sse_event_newlines_stay_escaped(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s}", "text", "line1\nline2\r\n\n");
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(srv_sse_event(o, &out, &len), 0);
    /* Exactly one line of data: the only newlines are the two that end the event. */
    size_t nl = 0;
    for (size_t i = 0; i < len; i++)
        nl += out[i] == '\n' || out[i] == '\r';
    assert_int_equal(nl, 2);
    assert_string_equal(out, "data: {\"text\":\"line1\\nline2\\r\\n\\n\"}\n\n");
    json_decref(o);
    free(out);
}

static void test_srv_sse_event_utf8_raw(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s}", "t", "h\xC3\xA9 \xF0\x9F\x98\x80");
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(srv_sse_event(o, &out, &len), 0);
    assert_string_equal(out, "data: {\"t\":\"h\xC3\xA9 \xF0\x9F\x98\x80\"}\n\n");
    json_decref(o);
    free(out);
}

static void test_srv_sse_event_error_object(void **state)
{
    (void)state;
    json_t *e = srv_error_json("boom", "server_error", NULL, NULL);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(srv_sse_event(e, &out, &len), 0);
    assert_string_equal(out, "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\","
                             "\"param\":null,\"code\":null}}\n\n");
    json_decref(e);
    free(out);
}

static void test_srv_sse_event_null_is_einval(void **state)
{
    (void)state;
    char *out = (char *)1;
    size_t len = 7;
    assert_int_equal(srv_sse_event(NULL, &out, &len), FQ_EINVAL);
    assert_null(out);
    assert_int_equal(len, 0);
}

static void test_srv_sse_done(void **state)
{
    (void)state;
    assert_string_equal(srv_sse_done(), "data: [DONE]\n\n");
    assert_int_equal(strlen(srv_sse_done()), SRV_SSE_DONE_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_srv_sse_event_compact_framing),
        cmocka_unit_test(test_srv_sse_event_newlines_stay_escaped),
        cmocka_unit_test(test_srv_sse_event_utf8_raw),
        cmocka_unit_test(test_srv_sse_event_error_object),
        cmocka_unit_test(test_srv_sse_event_null_is_einval),
        cmocka_unit_test(test_srv_sse_done),
    };
    return cmocka_run_group_tests_name("srv_sse", tests, NULL, NULL);
}

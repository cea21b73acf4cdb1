/* test_srv_openai.c — the OpenAI protocol layer: request parsing (defaults, prompt forms, every
 * parameter's type and range errors with the right param, unknown fields, bad JSON), the context
 * check, response and chunk shapes field by field, errors, ids, and the chat template rendered
 * byte for byte as transformers' apply_chat_template (tests/data/golden/chat_templates.json). */
#include "fq_base.h"
#include "srv_errors.h"
#include "srv_openai.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const srv_model_info model_info = {
    .id = "smollm2", .n_vocab = 1000, .max_model_len = 2048, .created = 1700000000};

/* Every test parses into this state; teardown frees whatever a failed assertion left behind. */
typedef struct oai_state {
    srv_completion_req cr;
    srv_chat_req chat;
    srv_tokenize_req tok;
    srv_detokenize_req detok;
    srv_error err;
    json_t *j; /* the response under test */
    char *text;
} oai_state;

static int setup(void **state)
{
    *state = calloc(1, sizeof(oai_state));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    oai_state *s = *state;
    srv_completion_req_close(&s->cr);
    srv_chat_req_close(&s->chat);
    srv_tokenize_req_close(&s->tok);
    srv_detokenize_req_close(&s->detok);
    json_decref(s->j);
    free(s->text);
    free(s);
    return 0;
}

static int parse_completion(oai_state *s, const char *body)
{
    srv_completion_req_close(&s->cr);
    srv_error_clear(&s->err);
    return srv_completion_req_parse(body, strlen(body), &model_info, &s->cr, &s->err);
}

static int parse_chat(oai_state *s, const char *body)
{
    srv_chat_req_close(&s->chat);
    srv_error_clear(&s->err);
    return srv_chat_req_parse(body, strlen(body), &model_info, &s->chat, &s->err);
}

static void set_json(oai_state *s, json_t *j)
{
    json_decref(s->j);
    s->j = j;
    assert_non_null(j);
}

/* The value at a path of object keys and array indexes: "choices.0.logprobs.tokens". */
static json_t *at(json_t *j, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
        if (json_is_array(j))
            j = json_array_get(j, (size_t)strtoul(k, NULL, 10));
        else
            j = json_object_get(j, k);
        if (!j)
            fail_msg("no %s in the JSON (at %s)", path, k);
    }
    return j;
}

static void expect_str(json_t *j, const char *path, const char *want)
{
    json_t *v = at(j, path);
    if (!json_is_string(v))
        fail_msg("%s is not a string", path);
    assert_string_equal(json_string_value(v), want);
}

static void expect_int(json_t *j, const char *path, json_int_t want)
{
    json_t *v = at(j, path);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", path);
    assert_int_equal(json_integer_value(v), want);
}

static void expect_real(json_t *j, const char *path, double want)
{
    json_t *v = at(j, path);
    if (!json_is_number(v))
        fail_msg("%s is not a number", path);
    assert_float_equal(json_number_value(v), want, 1e-6);
}

static void expect_null(json_t *j, const char *path)
{
    if (!json_is_null(at(j, path)))
        fail_msg("%s is not null", path);
}

static void expect_size(json_t *j, const char *path, size_t n)
{
    json_t *v = at(j, path);
    size_t got = json_is_array(v) ? json_array_size(v) : json_object_size(v);
    if (got != n)
        fail_msg("%s has %zu entries, want %zu", path, got, n);
}

/* ------------------------------------------------------------------------------------------ */
/* /v1/completions parsing                                                                     */

static void test_srv_openai_completion_defaults(void **state)
{
    oai_state *s = *state;
    assert_int_equal(parse_completion(s, "{\"prompt\": \"Hello\"}"), 0);
    const srv_completion_req *r = &s->cr;
    assert_null(r->model);
    assert_int_equal(r->n_prompts, 1);
    assert_false(r->prompts[0].is_tokens);
    assert_string_equal(r->prompts[0].text, "Hello");
    assert_int_equal(r->prompts[0].text_len, 5);
    assert_int_equal(r->max_tokens, 16);
    assert_int_equal(r->n, 1);
    assert_false(r->stream);
    assert_false(r->include_usage);
    assert_false(r->echo);
    assert_int_equal(r->logprobs, -1);
    assert_int_equal(r->n_stop, 0);
    assert_float_equal(r->sampling.temperature, 1.0, 0);
    assert_float_equal(r->sampling.top_p, 1.0, 0);
    assert_int_equal(r->sampling.top_k, 0);
    assert_float_equal(r->sampling.min_p, 0.0, 0);
    assert_float_equal(r->sampling.presence_penalty, 0.0, 0);
    assert_float_equal(r->sampling.frequency_penalty, 0.0, 0);
    assert_float_equal(r->sampling.repetition_penalty, 1.0, 0);
    assert_false(r->sampling.has_seed);
    assert_int_equal(r->sampling.n_logit_bias, 0);
    assert_null(r->sampling.logit_bias);
    assert_false(r->sampling.ignore_eos);
}

static void test_srv_openai_completion_nulls_are_defaults(void **state)
{
    oai_state *s = *state;
    assert_int_equal(parse_completion(s, "{\"prompt\":\"x\",\"model\":null,\"max_tokens\":null,"
                                         "\"n\":null,\"stream\":null,\"stream_options\":null,"
                                         "\"logprobs\":null,\"stop\":null,\"seed\":null,"
                                         "\"temperature\":null,\"top_k\":null,\"logit_bias\":null,"
                                         "\"echo\":null,\"ignore_eos\":null}"),
                     0);
    assert_null(s->cr.model);
    assert_int_equal(s->cr.max_tokens, 16);
    assert_int_equal(s->cr.n, 1);
    assert_int_equal(s->cr.logprobs, -1);
    assert_int_equal(s->cr.n_stop, 0);
    assert_false(s->cr.sampling.has_seed);
    assert_float_equal(s->cr.sampling.temperature, 1.0, 0);
}

static void test_srv_openai_completion_all_fields(void **state)
{
    oai_state *s = *state;
    assert_int_equal(
        parse_completion(
            s, "{\"model\":\"smollm2\",\"prompt\":\"p\",\"max_tokens\":7,\"n\":16,\"stream\":true,"
               "\"stream_options\":{\"include_usage\":true},\"echo\":true,\"logprobs\":20,"
               "\"stop\":[\"a\",\"\\n\\n\",\"x\\u0000y\",\"d\"],\"temperature\":0,\"top_p\":0.5,"
               "\"top_k\":40,\"min_p\":1,\"presence_penalty\":-2,\"frequency_penalty\":2,"
               "\"repetition_penalty\":2,\"seed\":-9000000000000000000,"
               "\"logit_bias\":{\"5\":-100,\"999\":100,\"0\":1.5},\"ignore_eos\":true,"
               "\"user\":{\"weird\":1},\"best_of\":3,\"suffix\":\"s\",\"unknown\":[1,{}]}"),
        0);
    const srv_completion_req *r = &s->cr;
    assert_string_equal(r->model, "smollm2");
    assert_int_equal(r->max_tokens, 7);
    assert_int_equal(r->n, 16);
    assert_true(r->stream);
    assert_true(r->include_usage);
    assert_true(r->echo);
    assert_int_equal(r->logprobs, 20);
    assert_int_equal(r->n_stop, 4);
    assert_string_equal(r->stop[1], "\n\n");
    assert_int_equal(r->stop_len[2], 3); /* an embedded NUL is kept */
    assert_memory_equal(r->stop[2], "x\0y", 3);
    assert_float_equal(r->sampling.temperature, 0.0, 0);
    assert_float_equal(r->sampling.top_p, 0.5, 0);
    assert_int_equal(r->sampling.top_k, 40);
    assert_float_equal(r->sampling.min_p, 1.0, 0);
    assert_float_equal(r->sampling.presence_penalty, -2.0, 0);
    assert_float_equal(r->sampling.frequency_penalty, 2.0, 0);
    assert_float_equal(r->sampling.repetition_penalty, 2.0, 0);
    assert_true(r->sampling.has_seed);
    assert_true(r->sampling.seed == -9000000000000000000LL);
    assert_true(r->sampling.ignore_eos);
    assert_int_equal(r->sampling.n_logit_bias, 3);
    float seen[1000] = {0};
    for (size_t i = 0; i < r->sampling.n_logit_bias; i++)
        seen[r->sampling.logit_bias[i].token] = r->sampling.logit_bias[i].bias;
    assert_float_equal(seen[5], -100.0, 0);
    assert_float_equal(seen[999], 100.0, 0);
    assert_float_equal(seen[0], 1.5, 0);

    /* The sampler's view of it. */
    rt_sampling_params p = srv_sampling_params(&r->sampling, r->logprobs);
    assert_float_equal(p.temperature, 0.0, 0);
    assert_int_equal(p.top_k, 40);
    assert_float_equal(p.top_p, 0.5, 0);
    assert_true(p.has_seed);
    assert_true(p.seed == (uint64_t)-9000000000000000000LL);
    assert_int_equal(p.n_bias, 3);
    assert_ptr_equal(p.bias, r->sampling.logit_bias);
    assert_int_equal(p.logprobs, 20);
    char msg[128];
    const char *bad = NULL;
    assert_int_equal(rt_sampling_validate(&p, model_info.n_vocab, msg, sizeof msg, &bad), 0);
}

static void test_srv_openai_completion_boundaries_accepted(void **state)
{
    oai_state *s = *state;
    static const char *const ok[] = {
        "\"temperature\":2",
        "\"temperature\":0.0",
        "\"top_p\":1",
        "\"top_p\":1e-9",
        "\"top_k\":-1",
        "\"top_k\":0",
        "\"top_k\":1",
        "\"min_p\":0",
        "\"repetition_penalty\":1e-6",
        "\"max_tokens\":0",
        "\"max_tokens\":16.0",
        "\"logprobs\":0",
        "\"n\":1",
        "\"stop\":\"one\"",
        "\"stop\":[]",
        "\"seed\":0",
        "\"logit_bias\":{}",
        "\"stream\":false",
        "\"stream\":true,\"stream_options\":{}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"prompt\":\"x\",%s}", ok[i]);
        if (parse_completion(s, body) != 0)
            fail_msg("%s refused: %s", ok[i], s->err.message);
    }
    assert_int_equal(parse_completion(s, "{\"prompt\":\"x\",\"top_k\":-1}"), 0);
    assert_int_equal(s->cr.sampling.top_k, 0);
    assert_int_equal(parse_completion(s, "{\"prompt\":\"x\",\"max_tokens\":16.0}"), 0);
    assert_int_equal(s->cr.max_tokens, 16);
    assert_int_equal(parse_completion(s, "{\"prompt\":\"x\",\"stop\":\"one\"}"), 0);
    assert_int_equal(s->cr.n_stop, 1);
    assert_string_equal(s->cr.stop[0], "one");
}

/* One bad field: the body after "prompt", the param the error must name, a piece of its
 * message. */
typedef struct bad_case {
    const char *fields;
    const char *param;
    const char *msg;
} bad_case;

static const bad_case completion_bad[] = {
    {"\"max_tokens\":\"x\"", "max_tokens", "'max_tokens' must be an integer, got string"},
    {"\"max_tokens\":-1", "max_tokens", "between 0 and"},
    {"\"max_tokens\":1.5", "max_tokens", "must be an integer"},
    {"\"max_tokens\":3000000000", "max_tokens", "between 0 and 2147483647"},
    {"\"n\":0", "n", "'n' must be between 1 and 16, got 0"},
    {"\"n\":17", "n", "between 1 and 16"},
    {"\"n\":\"2\"", "n", "must be an integer, got string"},
    {"\"temperature\":\"hot\"", "temperature", "'temperature' must be a number, got string"},
    {"\"temperature\":-0.1", "temperature", "at least 0 and at most 2, got -0.1"},
    {"\"temperature\":2.5", "temperature", "got 2.5"},
    {"\"temperature\":true", "temperature", "got boolean"},
    {"\"top_p\":0", "top_p", "'top_p' must be greater than 0 and at most 1, got 0"},
    {"\"top_p\":1.1", "top_p", "at most 1"},
    {"\"top_p\":\"x\"", "top_p", "must be a number"},
    {"\"top_k\":-2", "top_k", "-1 or 0 (off) or a positive integer, got -2"},
    {"\"top_k\":1.5", "top_k", "must be an integer"},
    {"\"top_k\":\"5\"", "top_k", "must be an integer, got string"},
    {"\"min_p\":-0.1", "min_p", "at least 0"},
    {"\"min_p\":1.5", "min_p", "at most 1"},
    {"\"presence_penalty\":2.1", "presence_penalty", "at least -2 and at most 2"},
    {"\"presence_penalty\":-3", "presence_penalty", "got -3"},
    {"\"frequency_penalty\":-2.5", "frequency_penalty", "at least -2"},
    {"\"frequency_penalty\":[]", "frequency_penalty", "must be a number, got array"},
    {"\"repetition_penalty\":0", "repetition_penalty", "greater than 0"},
    {"\"repetition_penalty\":2.5", "repetition_penalty", "at most 2"},
    {"\"seed\":\"1\"", "seed", "'seed' must be an integer, got string"},
    {"\"seed\":1.5", "seed", "must be an integer"},
    {"\"stream\":\"yes\"", "stream", "'stream' must be a boolean, got string"},
    {"\"stream\":1", "stream", "must be a boolean, got integer"},
    {"\"stream_options\":{\"include_usage\":true}", "stream_options",
     "only allowed when 'stream' is true"},
    {"\"stream\":true,\"stream_options\":5", "stream_options", "must be an object"},
    {"\"stream\":true,\"stream_options\":{\"include_usage\":\"y\"}", "stream_options.include_usage",
     "must be a boolean"},
    {"\"echo\":1", "echo", "'echo' must be a boolean"},
    {"\"logprobs\":21", "logprobs", "between 0 and 20, got 21"},
    {"\"logprobs\":-1", "logprobs", "between 0 and 20"},
    {"\"logprobs\":true", "logprobs", "must be an integer, got boolean"},
    {"\"stop\":5", "stop", "'stop' must be a string or an array of strings, got integer"},
    {"\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop", "at most 4 strings, got 5"},
    {"\"stop\":[\"a\",3]", "stop[1]", "'stop[1]' must be a string, got integer"},
    {"\"stop\":\"\"", "stop", "must not be empty"},
    {"\"stop\":[\"ok\",\"\"]", "stop[1]", "'stop[1]' must not be empty"},
    {"\"logit_bias\":[]", "logit_bias", "must be an object"},
    {"\"logit_bias\":{\"abc\":1}", "logit_bias", "keys must be token ids, got 'abc'"},
    {"\"logit_bias\":{\"-1\":1}", "logit_bias", "keys must be token ids"},
    {"\"logit_bias\":{\"1000\":1}", "logit_bias", "token id 1000 is out of range [0, 1000)"},
    {"\"logit_bias\":{\"5\":\"x\"}", "logit_bias", "'logit_bias[5]' must be a number"},
    {"\"logit_bias\":{\"5\":101}", "logit_bias", "between -100 and 100, got 101"},
    {"\"ignore_eos\":\"no\"", "ignore_eos", "must be a boolean"},
    {"\"model\":5", "model", "'model' must be a string, got integer"},
};

static void test_srv_openai_completion_bad_params(void **state)
{
    oai_state *s = *state;
    for (size_t i = 0; i < sizeof completion_bad / sizeof completion_bad[0]; i++) {
        const bad_case *c = &completion_bad[i];
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\":\"x\",%s}", c->fields);
        int rc = parse_completion(s, body);
        if (rc == 0)
            fail_msg("accepted: %s", c->fields);
        assert_int_equal(rc, FQ_EINVAL);
        assert_int_equal(s->err.status, 400);
        assert_string_equal(s->err.type, "invalid_request_error");
        if (strcmp(s->err.param, c->param) != 0)
            fail_msg("%s: param '%s', want '%s'", c->fields, s->err.param, c->param);
        if (!strstr(s->err.message, c->msg))
            fail_msg("%s: message '%s' lacks '%s'", c->fields, s->err.message, c->msg);
    }
}

static void test_srv_openai_completion_unknown_model_404(void **state)
{
    oai_state *s = *state;
    assert_int_equal(parse_completion(s, "{\"model\":\"gpt-4\",\"prompt\":\"x\"}"), FQ_ENOTFOUND);
    assert_int_equal(s->err.status, 404);
    assert_string_equal(s->err.type, "not_found_error");
    assert_string_equal(s->err.param, "model");
    assert_string_equal(s->err.code, "model_not_found");
    assert_non_null(strstr(s->err.message, "gpt-4"));
    /* Without a served name every model is accepted. */
    srv_model_info any = model_info;
    any.id = NULL;
    srv_completion_req_close(&s->cr);
    const char *body = "{\"model\":\"gpt-4\",\"prompt\":\"x\"}";
    assert_int_equal(srv_completion_req_parse(body, strlen(body), &any, &s->cr, &s->err), 0);
    assert_string_equal(s->cr.model, "gpt-4");
}

static void test_srv_openai_completion_prompt_forms(void **state)
{
    oai_state *s = *state;
    assert_int_equal(parse_completion(s, "{\"prompt\":[\"a\",\"bc\",\"\"]}"), 0);
    assert_int_equal(s->cr.n_prompts, 3);
    assert_string_equal(s->cr.prompts[1].text, "bc");
    assert_int_equal(s->cr.prompts[2].text_len, 0);

    assert_int_equal(parse_completion(s, "{\"prompt\":[1,2,999]}"), 0);
    assert_int_equal(s->cr.n_prompts, 1);
    assert_true(s->cr.prompts[0].is_tokens);
    assert_int_equal(s->cr.prompts[0].n_tokens, 3);
    assert_int_equal(s->cr.prompts[0].tokens[2], 999);
    assert_null(s->cr.prompts[0].text);

    assert_int_equal(parse_completion(s, "{\"prompt\":[[1],[2,3]]}"), 0);
    assert_int_equal(s->cr.n_prompts, 2);
    assert_true(s->cr.prompts[1].is_tokens);
    assert_int_equal(s->cr.prompts[1].n_tokens, 2);
    assert_int_equal(s->cr.prompts[1].tokens[1], 3);

    assert_int_equal(parse_completion(s, "{\"prompt\":\"a\\u0000b\"}"), 0);
    assert_int_equal(s->cr.prompts[0].text_len, 3);

    char big[4096];
    size_t n = (size_t)snprintf(big, sizeof big, "{\"prompt\":[");
    for (int i = 0; i < SRV_MAX_PROMPTS; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%s\"p\"", i ? "," : "");
    snprintf(big + n, sizeof big - n, "]}");
    assert_int_equal(parse_completion(s, big), 0);
    assert_int_equal(s->cr.n_prompts, SRV_MAX_PROMPTS);
}

static const bad_case prompt_bad[] = {
    {"{}", "prompt", "'prompt' is required"},
    {"{\"prompt\":null}", "prompt", "'prompt' is required"},
    {"{\"prompt\":5}", "prompt", "an array of token-id arrays, got integer"},
    {"{\"prompt\":{}}", "prompt", "got object"},
    {"{\"prompt\":[]}", "prompt", "'prompt' must not be empty"},
    {"{\"prompt\":[\"a\",1]}", "prompt[1]", "'prompt[1]' must be a string like the other prompts"},
    {"{\"prompt\":[1,\"a\"]}", "prompt[1]", "'prompt[1]' must be an integer, got string"},
    {"{\"prompt\":[1,1.5]}", "prompt[1]", "must be an integer, got 1.5"},
    {"{\"prompt\":[1,null]}", "prompt[1]", "must be an integer, got null"},
    {"{\"prompt\":[[1],\"a\"]}", "prompt[1]", "'prompt[1]' must be an array of token ids"},
    {"{\"prompt\":[[1],[]]}", "prompt[1]", "'prompt[1]' must not be empty"},
    {"{\"prompt\":[[1],[2,\"x\"]]}", "prompt[1][1]", "must be an integer"},
    {"{\"prompt\":[true]}", "prompt", "got an array of boolean"},
    {"{\"prompt\":[1000]}", "prompt[0]", "token id 1000 is out of range [0, 1000)"},
    {"{\"prompt\":[[5,-1]]}", "prompt[0][1]", "token id -1 is out of range"},
};

static void test_srv_openai_completion_bad_prompts(void **state)
{
    oai_state *s = *state;
    for (size_t i = 0; i < sizeof prompt_bad / sizeof prompt_bad[0]; i++) {
        const bad_case *c = &prompt_bad[i];
        if (parse_completion(s, c->fields) == 0)
            fail_msg("accepted: %s", c->fields);
        assert_int_equal(s->err.status, 400);
        if (strcmp(s->err.param, c->param) != 0)
            fail_msg("%s: param '%s', want '%s'", c->fields, s->err.param, c->param);
        if (!strstr(s->err.message, c->msg))
            fail_msg("%s: message '%s' lacks '%s'", c->fields, s->err.message, c->msg);
    }
    char big[4096];
    size_t n = (size_t)snprintf(big, sizeof big, "{\"prompt\":[");
    for (int i = 0; i <= SRV_MAX_PROMPTS; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%s\"p\"", i ? "," : "");
    snprintf(big + n, sizeof big - n, "]}");
    assert_int_equal(parse_completion(s, big), FQ_EINVAL);
    assert_string_equal(s->err.param, "prompt");
    assert_non_null(strstr(s->err.message, "at most 64 prompts, got 65"));
}

static void test_srv_openai_bad_json(void **state)
{
    oai_state *s = *state;
    assert_int_equal(parse_completion(s, "{\"prompt\": \"x\",\n \"n\": }"), FQ_EINVAL);
    assert_int_equal(s->err.status, 400);
    assert_string_equal(s->err.type, "invalid_request_error");
    assert_string_equal(s->err.param, "");
    assert_true(strncmp(s->err.message, "invalid JSON: ", 14) == 0);
    assert_non_null(strstr(s->err.message, " at line 2, column "));

    assert_int_equal(parse_completion(s, ""), FQ_EINVAL);
    assert_true(strncmp(s->err.message, "invalid JSON: ", 14) == 0);
    assert_int_equal(parse_completion(s, "{\"prompt\":\"x\"} trailing"), FQ_EINVAL);
    assert_true(strncmp(s->err.message, "invalid JSON: ", 14) == 0);
    assert_int_equal(parse_completion(s, "[1,2]"), FQ_EINVAL);
    assert_string_equal(s->err.message, "request body must be a JSON object, got array");
    assert_int_equal(parse_chat(s, "\"str\""), FQ_EINVAL);
    assert_string_equal(s->err.message, "request body must be a JSON object, got string");
    /* Invalid UTF-8 inside a JSON string is bad JSON too. */
    assert_int_equal(parse_completion(s, "{\"prompt\":\"\xC3\x28\"}"), FQ_EINVAL);
    assert_true(strncmp(s->err.message, "invalid JSON: ", 14) == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* /v1/chat/completions parsing                                                                */

static void test_srv_openai_chat_defaults(void **state)
{
    oai_state *s = *state;
    assert_int_equal(parse_chat(s, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"), 0);
    const srv_chat_req *r = &s->chat;
    assert_int_equal(r->n_messages, 1);
    assert_int_equal(r->messages[0].role, SRV_ROLE_USER);
    assert_string_equal(r->messages[0].content, "hi");
    assert_int_equal(r->max_tokens, -1);
    assert_int_equal(r->n, 1);
    assert_false(r->stream);
    assert_false(r->include_usage);
    assert_false(r->logprobs);
    assert_int_equal(r->top_logprobs, 0);
    assert_true(r->add_generation_prompt);
    assert_int_equal(r->n_stop, 0);
    assert_float_equal(r->sampling.temperature, 1.0, 0);
    assert_float_equal(r->sampling.repetition_penalty, 1.0, 0);
}

static void test_srv_openai_chat_fields(void **state)
{
    oai_state *s = *state;
    assert_int_equal(
        parse_chat(s, "{\"model\":\"smollm2\",\"messages\":["
                      "{\"role\":\"developer\",\"content\":\"sys\",\"name\":\"x\"},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                      "{\"type\":\"text\",\"text\":\"b\"}]},"
                      "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
                      "{\"role\":\"assistant\"},"
                      "{\"role\":\"user\",\"content\":[]}],"
                      "\"max_tokens\":5,\"max_completion_tokens\":9,\"n\":2,\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true},\"logprobs\":true,"
                      "\"top_logprobs\":20,\"stop\":\"END\",\"seed\":7,\"temperature\":0.5,"
                      "\"add_generation_prompt\":false,\"tools\":[],\"response_format\":{}}"),
        0);
    const srv_chat_req *r = &s->chat;
    assert_string_equal(r->model, "smollm2");
    assert_int_equal(r->n_messages, 5);
    assert_int_equal(r->messages[0].role, SRV_ROLE_SYSTEM);
    assert_string_equal(r->messages[1].content, "a\nb");
    assert_int_equal(r->messages[1].content_len, 3);
    assert_int_equal(r->messages[2].role, SRV_ROLE_ASSISTANT);
    assert_string_equal(r->messages[2].content, "");
    assert_string_equal(r->messages[3].content, "");
    assert_string_equal(r->messages[4].content, "");
    assert_int_equal(r->max_tokens, 9); /* max_completion_tokens wins */
    assert_int_equal(r->n, 2);
    assert_true(r->stream);
    assert_true(r->include_usage);
    assert_true(r->logprobs);
    assert_int_equal(r->top_logprobs, 20);
    assert_false(r->add_generation_prompt);
    assert_int_equal(r->n_stop, 1);
    assert_string_equal(r->stop[0], "END");
    assert_true(r->sampling.has_seed);
    assert_int_equal(r->sampling.seed, 7);

    assert_int_equal(parse_chat(s, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                   "\"max_tokens\":5}"),
                     0);
    assert_int_equal(s->chat.max_tokens, 5);
}

static const bad_case chat_bad[] = {
    {"{}", "messages", "'messages' is required"},
    {"{\"messages\":{}}", "messages", "'messages' must be an array, got object"},
    {"{\"messages\":[]}", "messages", "'messages' must not be empty"},
    {"{\"messages\":[\"hi\"]}", "messages[0]", "'messages[0]' must be an object, got string"},
    {"{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role", "'messages[0].role' is required"},
    {"{\"messages\":[{\"role\":1,\"content\":\"x\"}]}", "messages[0].role", "must be a string"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"content\":\"x\"}]}",
     "messages[1].role", "one of 'system', 'user', 'assistant', got 'tool'"},
    {"{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content",
     "'messages[0].content' is required"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content",
     "must be a string or an array of text parts, got integer"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[5]}]}", "messages[0].content[0]",
     "must be an object"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
     "messages[0].content[0]", "only text content parts are supported, got type 'image_url'"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}",
     "messages[0].content[0]", "'messages[0].content[0].type' must be a string"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
     "messages[0].content[0]", "'messages[0].content[0].text' must be a string"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens",
     "between 1 and"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":\"9\"}",
     "max_completion_tokens", "must be an integer"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", "top_logprobs",
     "'top_logprobs' requires 'logprobs' to be true"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}",
     "top_logprobs", "between 0 and 20"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":1}", "logprobs",
     "must be a boolean"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":17}", "n", "between 1 and 16"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "temperature",
     "at most 2"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", "stop[0]",
     "must be a string"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":0}",
     "add_generation_prompt", "must be a boolean"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{}}",
     "stream_options", "only allowed when 'stream' is true"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"7\":-101}}",
     "logit_bias", "between -100 and 100"},
};

static void test_srv_openai_chat_bad_params(void **state)
{
    oai_state *s = *state;
    for (size_t i = 0; i < sizeof chat_bad / sizeof chat_bad[0]; i++) {
        const bad_case *c = &chat_bad[i];
        if (parse_chat(s, c->fields) == 0)
            fail_msg("accepted: %s", c->fields);
        assert_int_equal(s->err.status, 400);
        assert_string_equal(s->err.type, "invalid_request_error");
        if (strcmp(s->err.param, c->param) != 0)
            fail_msg("%s: param '%s', want '%s'", c->fields, s->err.param, c->param);
        if (!strstr(s->err.message, c->msg))
            fail_msg("%s: message '%s' lacks '%s'", c->fields, s->err.message, c->msg);
    }
    assert_int_equal(parse_chat(s, "{\"model\":\"nope\",\"messages\":[]}"), FQ_ENOTFOUND);
    assert_int_equal(s->err.status, 404);
}

/* ------------------------------------------------------------------------------------------ */
/* Context check, /tokenize, /detokenize                                                       */

static void test_srv_openai_resolve_max_tokens(void **state)
{
    oai_state *s = *state;
    int32_t mt = 16;
    assert_int_equal(srv_resolve_max_tokens(10, &mt, 2048, "prompt", &s->err), 0);
    assert_int_equal(mt, 16);
    mt = 48;
    assert_int_equal(srv_resolve_max_tokens(2000, &mt, 2048, "prompt", &s->err), 0); /* exact */
    mt = 0;
    assert_int_equal(srv_resolve_max_tokens(2048, &mt, 2048, "prompt", &s->err), 0);
    mt = -1;
    assert_int_equal(srv_resolve_max_tokens(48, &mt, 2048, "messages", &s->err), 0);
    assert_int_equal(mt, 2000);

    mt = 100;
    srv_error_clear(&s->err);
    assert_int_equal(srv_resolve_max_tokens(2000, &mt, 2048, "prompt", &s->err), FQ_EINVAL);
    assert_int_equal(s->err.status, 400);
    assert_string_equal(s->err.param, "prompt");
    assert_string_equal(s->err.code, "context_length_exceeded");
    assert_non_null(strstr(s->err.message, "maximum context length is 2048 tokens"));
    assert_non_null(strstr(s->err.message, "requested 2100 tokens (2000 in the prompt, 100 for "
                                           "the completion)"));

    mt = -1;
    srv_error_clear(&s->err);
    assert_int_equal(srv_resolve_max_tokens(2048, &mt, 2048, "messages", &s->err), FQ_EINVAL);
    assert_string_equal(s->err.param, "messages");
    assert_string_equal(s->err.code, "context_length_exceeded");
    assert_non_null(strstr(s->err.message, "your prompt has 2048 tokens"));

    mt = 5;
    srv_error_clear(&s->err);
    assert_int_equal(srv_resolve_max_tokens(0, &mt, 2048, "prompt", &s->err), FQ_EINVAL);
    assert_non_null(strstr(s->err.message, "empty"));
}

static void test_srv_openai_tokenize_requests(void **state)
{
    oai_state *s = *state;
    const char *b1 = "{\"model\":\"smollm2\",\"prompt\":\"Hello\"}";
    assert_int_equal(srv_tokenize_req_parse(b1, strlen(b1), &model_info, &s->tok, &s->err), 0);
    assert_false(s->tok.is_chat);
    assert_string_equal(s->tok.prompt, "Hello");
    assert_true(s->tok.add_special_tokens);
    srv_tokenize_req_close(&s->tok);

    const char *b2 = "{\"prompt\":\"x\",\"add_special_tokens\":false}";
    assert_int_equal(srv_tokenize_req_parse(b2, strlen(b2), &model_info, &s->tok, &s->err), 0);
    assert_false(s->tok.add_special_tokens);
    srv_tokenize_req_close(&s->tok);

    const char *b3 = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_int_equal(srv_tokenize_req_parse(b3, strlen(b3), &model_info, &s->tok, &s->err), 0);
    assert_true(s->tok.is_chat);
    assert_int_equal(s->tok.n_messages, 1);
    assert_false(s->tok.add_special_tokens);
    assert_true(s->tok.add_generation_prompt);
    srv_tokenize_req_close(&s->tok);

    static const bad_case bad[] = {
        {"{}", "prompt", "'prompt' is required"},
        {"{\"prompt\":[1]}", "prompt", "'prompt' must be a string, got array"},
        {"{\"prompt\":\"x\",\"add_special_tokens\":1}", "add_special_tokens", "must be a boolean"},
        {"{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}", "messages[0].role", "got 'bot'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_error_clear(&s->err);
        int rc = srv_tokenize_req_parse(bad[i].fields, strlen(bad[i].fields), &model_info, &s->tok,
                                        &s->err);
        srv_tokenize_req_close(&s->tok);
        assert_int_equal(rc, FQ_EINVAL);
        assert_string_equal(s->err.param, bad[i].param);
        assert_non_null(strstr(s->err.message, bad[i].msg));
    }
}

static void test_srv_openai_detokenize_requests(void **state)
{
    oai_state *s = *state;
    const char *b1 = "{\"tokens\":[1,2,999]}";
    assert_int_equal(srv_detokenize_req_parse(b1, strlen(b1), &model_info, &s->detok, &s->err), 0);
    assert_int_equal(s->detok.n_tokens, 3);
    assert_int_equal(s->detok.tokens[2], 999);
    srv_detokenize_req_close(&s->detok);
    const char *b2 = "{\"tokens\":[]}";
    assert_int_equal(srv_detokenize_req_parse(b2, strlen(b2), &model_info, &s->detok, &s->err), 0);
    assert_int_equal(s->detok.n_tokens, 0);
    srv_detokenize_req_close(&s->detok);

    static const bad_case bad[] = {
        {"{}", "tokens", "'tokens' is required"},
        {"{\"tokens\":\"1 2\"}", "tokens", "must be an array of token ids, got string"},
        {"{\"tokens\":[1,\"2\"]}", "tokens[1]", "must be an integer"},
        {"{\"tokens\":[1000]}", "tokens[0]", "out of range [0, 1000)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_error_clear(&s->err);
        int rc = srv_detokenize_req_parse(bad[i].fields, strlen(bad[i].fields), &model_info,
                                          &s->detok, &s->err);
        srv_detokenize_req_close(&s->detok);
        assert_int_equal(rc, FQ_EINVAL);
        assert_string_equal(s->err.param, bad[i].param);
        assert_non_null(strstr(s->err.message, bad[i].msg));
    }
}

static void test_srv_openai_tokenize_responses(void **state)
{
    oai_state *s = *state;
    const int32_t ids[] = {1, 22, 333};
    set_json(s, srv_tokenize_response(ids, 3, 2048));
    expect_size(s->j, "tokens", 3);
    expect_int(s->j, "tokens.2", 333);
    expect_int(s->j, "count", 3);
    expect_int(s->j, "max_model_len", 2048);
    assert_int_equal(json_object_size(s->j), 3);
    set_json(s, srv_tokenize_response(NULL, 0, 8));
    expect_size(s->j, "tokens", 0);
    expect_int(s->j, "count", 0);

    set_json(s, srv_detokenize_response("Hi \xF0\x9F", 5));
    expect_str(s->j, "prompt", "Hi \xEF\xBF\xBD"); /* a cut character shows as U+FFFD */
    assert_int_equal(json_object_size(s->j), 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Responses                                                                                   */

static const srv_resp_meta meta = {.id = "cmpl-abc", .model = "smollm2", .created = 1234};

static void test_srv_openai_completion_response_shape(void **state)
{
    oai_state *s = *state;
    srv_choice ch[2] = {
        {.index = 0, .text = "Hello", .text_len = 5, .finish = SRV_FINISH_LENGTH},
        {.index = 1, .text = "a\xFF", .text_len = 2, .finish = SRV_FINISH_STOP},
    };
    srv_usage u = {.prompt_tokens = 7, .completion_tokens = 9};
    set_json(s, srv_completion_response(&meta, ch, 2, &u));
    assert_int_equal(json_object_size(s->j), 6);
    expect_str(s->j, "id", "cmpl-abc");
    expect_str(s->j, "object", "text_completion");
    expect_int(s->j, "created", 1234);
    expect_str(s->j, "model", "smollm2");
    expect_size(s->j, "choices", 2);
    assert_int_equal(json_object_size(at(s->j, "choices.0")), 4);
    expect_int(s->j, "choices.0.index", 0);
    expect_str(s->j, "choices.0.text", "Hello");
    expect_null(s->j, "choices.0.logprobs");
    expect_str(s->j, "choices.0.finish_reason", "length");
    expect_int(s->j, "choices.1.index", 1);
    expect_str(s->j, "choices.1.text", "a\xEF\xBF\xBD");
    expect_str(s->j, "choices.1.finish_reason", "stop");
    assert_int_equal(json_object_size(at(s->j, "usage")), 3);
    expect_int(s->j, "usage.prompt_tokens", 7);
    expect_int(s->j, "usage.completion_tokens", 9);
    expect_int(s->j, "usage.total_tokens", 16);
}

static void test_srv_openai_completion_logprobs_shape(void **state)
{
    oai_state *s = *state;
    const srv_top_logprob top1[] = {{"lo", 2, -0.25f}, {"LO", 2, -2.0f}};
    const srv_top_logprob top2[] = {
        {"\xE2\x82", 2, -0.5f}, {"\xE2\x80", 2, -1.0f}, {"x", 1, -INFINITY}};
    const srv_token_logprob lps[] = {
        {.token = "Hel", .token_len = 3, .logprob = NAN, .text_offset = 0},
        {.token = "lo",
         .token_len = 2,
         .logprob = -0.25f,
         .top = top1,
         .n_top = 2,
         .text_offset = 3},
        {.token = "\xE2\x82",
         .token_len = 2,
         .logprob = -INFINITY,
         .top = top2,
         .n_top = 3,
         .text_offset = 5},
    };
    srv_choice ch = {.index = 3,
                     .text = "Hello",
                     .text_len = 5,
                     .has_logprobs = true,
                     .logprobs = lps,
                     .n_logprobs = 3,
                     .finish = SRV_FINISH_NONE};
    srv_usage u = {1, 2};
    set_json(s, srv_completion_response(&meta, &ch, 1, &u));
    json_t *lp = at(s->j, "choices.0.logprobs");
    assert_int_equal(json_object_size(lp), 4);
    expect_null(s->j, "choices.0.finish_reason");
    expect_str(lp, "tokens.0", "Hel");
    expect_str(lp, "tokens.2", "\xEF\xBF\xBD");
    expect_null(lp, "token_logprobs.0");
    expect_real(lp, "token_logprobs.1", -0.25);
    expect_real(lp, "token_logprobs.2", SRV_LOGPROB_FLOOR);
    expect_null(lp, "top_logprobs.0");
    expect_size(lp, "top_logprobs.1", 2);
    expect_real(lp, "top_logprobs.1.lo", -0.25);
    expect_real(lp, "top_logprobs.1.LO", -2.0);
    /* Two partial characters share the text U+FFFD: the first (better) one is kept. */
    expect_size(lp, "top_logprobs.2", 2);
    expect_real(lp, "top_logprobs.2.\xEF\xBF\xBD", -0.5);
    expect_real(lp, "top_logprobs.2.x", SRV_LOGPROB_FLOOR);
    expect_int(lp, "text_offset.0", 0);
    expect_int(lp, "text_offset.1", 3);
    expect_int(lp, "text_offset.2", 5);
}

static void test_srv_openai_completion_chunk_shape(void **state)
{
    oai_state *s = *state;
    srv_choice ch = {.index = 2, .text = " wor", .text_len = 4};
    set_json(s, srv_completion_chunk(&meta, &ch, false));
    assert_int_equal(json_object_size(s->j), 5);
    expect_str(s->j, "object", "text_completion");
    expect_size(s->j, "choices", 1);
    expect_int(s->j, "choices.0.index", 2);
    expect_str(s->j, "choices.0.text", " wor");
    expect_null(s->j, "choices.0.logprobs");
    expect_null(s->j, "choices.0.finish_reason");
    assert_null(json_object_get(s->j, "usage"));

    ch.text = "";
    ch.text_len = 0;
    ch.finish = SRV_FINISH_STOP;
    set_json(s, srv_completion_chunk(&meta, &ch, true));
    expect_str(s->j, "choices.0.finish_reason", "stop");
    expect_null(s->j, "usage");

    srv_usage u = {.prompt_tokens = 3, .completion_tokens = 4};
    set_json(s, srv_usage_chunk(&meta, false, &u));
    expect_str(s->j, "object", "text_completion");
    expect_size(s->j, "choices", 0);
    expect_int(s->j, "usage.total_tokens", 7);
    set_json(s, srv_usage_chunk(&meta, true, &u));
    expect_str(s->j, "object", "chat.completion.chunk");
}

static void test_srv_openai_chat_response_shape(void **state)
{
    oai_state *s = *state;
    const srv_top_logprob top[] = {{"Hi", 2, -0.1f}, {"\xC3", 1, -3.0f}};
    const srv_token_logprob lps[] = {
        {.token = "Hi", .token_len = 2, .logprob = -0.1f, .top = top, .n_top = 2},
    };
    srv_choice ch[2] = {
        {.index = 0,
         .text = "Hi",
         .text_len = 2,
         .has_logprobs = true,
         .logprobs = lps,
         .n_logprobs = 1,
         .finish = SRV_FINISH_STOP},
        {.index = 1, .text = "", .text_len = 0, .finish = SRV_FINISH_LENGTH},
    };
    srv_usage u = {.prompt_tokens = 20, .completion_tokens = 1};
    srv_resp_meta m = {.id = "chatcmpl-1", .model = "smollm2", .created = 5};
    set_json(s, srv_chat_response(&m, ch, 2, &u));
    assert_int_equal(json_object_size(s->j), 6);
    expect_str(s->j, "id", "chatcmpl-1");
    expect_str(s->j, "object", "chat.completion");
    expect_int(s->j, "created", 5);
    assert_int_equal(json_object_size(at(s->j, "choices.0")), 4);
    expect_int(s->j, "choices.0.index", 0);
    assert_int_equal(json_object_size(at(s->j, "choices.0.message")), 2);
    expect_str(s->j, "choices.0.message.role", "assistant");
    expect_str(s->j, "choices.0.message.content", "Hi");
    expect_str(s->j, "choices.0.finish_reason", "stop");
    json_t *c = at(s->j, "choices.0.logprobs.content.0");
    assert_int_equal(json_object_size(c), 4);
    expect_str(c, "token", "Hi");
    expect_real(c, "logprob", -0.1);
    expect_size(c, "bytes", 2);
    expect_int(c, "bytes.0", 'H');
    expect_int(c, "bytes.1", 'i');
    expect_size(c, "top_logprobs", 2);
    assert_int_equal(json_object_size(at(c, "top_logprobs.1")), 3);
    expect_str(c, "top_logprobs.1.token", "\xEF\xBF\xBD");
    expect_real(c, "top_logprobs.1.logprob", -3.0);
    expect_int(c, "top_logprobs.1.bytes.0", 0xC3); /* the real bytes survive */
    expect_null(s->j, "choices.1.logprobs");
    expect_str(s->j, "choices.1.message.content", "");
    expect_str(s->j, "choices.1.finish_reason", "length");
    expect_int(s->j, "usage.prompt_tokens", 20);
    expect_int(s->j, "usage.total_tokens", 21);
}

static void test_srv_openai_chat_chunk_sequence(void **state)
{
    oai_state *s = *state;
    srv_choice first = {.index = 1, .text = "", .text_len = 0};
    set_json(s, srv_chat_chunk(&meta, &first, true, false));
    expect_str(s->j, "object", "chat.completion.chunk");
    assert_int_equal(json_object_size(s->j), 5);
    assert_int_equal(json_object_size(at(s->j, "choices.0")), 4);
    expect_int(s->j, "choices.0.index", 1);
    assert_int_equal(json_object_size(at(s->j, "choices.0.delta")), 2);
    expect_str(s->j, "choices.0.delta.role", "assistant");
    expect_str(s->j, "choices.0.delta.content", "");
    expect_null(s->j, "choices.0.logprobs");
    expect_null(s->j, "choices.0.finish_reason");

    srv_choice mid = {.index = 1, .text = "Hel", .text_len = 3};
    set_json(s, srv_chat_chunk(&meta, &mid, false, true));
    assert_int_equal(json_object_size(at(s->j, "choices.0.delta")), 1);
    expect_str(s->j, "choices.0.delta.content", "Hel");
    expect_null(s->j, "usage");

    srv_choice last = {.index = 1, .text = NULL, .finish = SRV_FINISH_LENGTH};
    set_json(s, srv_chat_chunk(&meta, &last, false, false));
    assert_int_equal(json_object_size(at(s->j, "choices.0.delta")), 0);
    expect_str(s->j, "choices.0.finish_reason", "length");
    assert_null(json_object_get(s->j, "usage"));
}

static void test_srv_openai_models_response(void **state)
{
    oai_state *s = *state;
    set_json(s, srv_models_response(&model_info, 1));
    assert_int_equal(json_object_size(s->j), 2);
    expect_str(s->j, "object", "list");
    expect_size(s->j, "data", 1);
    json_t *m = at(s->j, "data.0");
    assert_int_equal(json_object_size(m), 5);
    expect_str(m, "id", "smollm2");
    expect_str(m, "object", "model");
    expect_int(m, "created", 1700000000);
    expect_str(m, "owned_by", "flexq");
    expect_int(m, "max_model_len", 2048);
}

static void test_srv_openai_errors(void **state)
{
    oai_state *s = *state;
    set_json(s, srv_error_json("bad", "invalid_request_error", "n", NULL));
    assert_int_equal(json_object_size(s->j), 1);
    assert_int_equal(json_object_size(at(s->j, "error")), 4);
    expect_str(s->j, "error.message", "bad");
    expect_str(s->j, "error.type", "invalid_request_error");
    expect_str(s->j, "error.param", "n");
    expect_null(s->j, "error.code");
    set_json(s, srv_error_json("x", NULL, "", ""));
    expect_str(s->j, "error.type", "server_error");
    expect_null(s->j, "error.param");

    static const struct {
        int status;
        const char *type;
    } types[] = {{400, "invalid_request_error"}, {401, "authentication_error"},
                 {404, "not_found_error"},       {405, "invalid_request_error"},
                 {413, "invalid_request_error"}, {429, "rate_limit_error"},
                 {500, "server_error"},          {503, "service_unavailable_error"}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        assert_string_equal(srv_error_type_for_status(types[i].status), types[i].type);

    srv_error e;
    assert_int_equal(srv_error_set(&e, 429, NULL, NULL, "queue full (%d)", 64), FQ_EINVAL);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.type, "rate_limit_error");
    assert_string_equal(e.message, "queue full (64)");
    assert_int_equal(srv_error_set(&e, 503, NULL, NULL, "loading"), FQ_EIO);
    assert_int_equal(srv_error_set(&e, 413, NULL, NULL, "too big"), FQ_ERANGE);
    srv_error_set_code(&e, "too_large");
    set_json(s, srv_error_to_json(&e));
    expect_str(s->j, "error.code", "too_large");
    expect_null(s->j, "error.param");

    /* A message cut by the buffer never ends inside a character. */
    char longmsg[1200];
    for (size_t i = 0; i + 2 < sizeof longmsg; i += 2)
        memcpy(longmsg + i, "\xC3\xA9", 2);
    longmsg[sizeof longmsg - 1 - (sizeof longmsg - 1) % 2] = '\0';
    srv_error_set(&e, 400, NULL, NULL, "x%s", longmsg); /* "x" shifts the cut to mid-character */
    size_t ml = strlen(e.message);
    assert_true(ml < sizeof e.message);
    assert_true(ml % 2 == 1);
    set_json(s, srv_error_to_json(&e));
}

static void test_srv_openai_make_id(void **state)
{
    (void)state;
    char a[64], b[64];
    assert_int_equal(srv_make_id("cmpl-", a, sizeof a), 0);
    assert_int_equal(srv_make_id("cmpl-", b, sizeof b), 0);
    assert_int_equal(strlen(a), 5 + 32);
    assert_true(strncmp(a, "cmpl-", 5) == 0);
    for (size_t i = 5; i < strlen(a); i++)
        assert_non_null(strchr("0123456789abcdef", a[i]));
    assert_string_not_equal(a, b);
    char small[20];
    assert_int_equal(srv_make_id("chatcmpl-", small, sizeof small), FQ_EINVAL);
    assert_string_equal(srv_finish_str(SRV_FINISH_STOP), "stop");
    assert_string_equal(srv_finish_str(SRV_FINISH_LENGTH), "length");
    assert_null(srv_finish_str(SRV_FINISH_NONE));
}

/* ------------------------------------------------------------------------------------------ */
/* Chat template                                                                               */

static json_t *load_golden(void)
{
    const char *src = getenv("FLEXQ_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/golden/chat_templates.json", src ? src : "..");
    json_error_t jerr;
    json_t *g = json_load_file(path, 0, &jerr);
    if (!g)
        fail_msg("%s: %s", path, jerr.text);
    return g;
}

static void test_srv_openai_chat_render_matches_transformers(void **state)
{
    oai_state *s = *state;
    set_json(s, load_golden());
    json_t *templates = at(s->j, "templates");
    json_t *cases = at(s->j, "cases");
    assert_true(json_array_size(cases) >= 50);
    /* The default model's real template is among them. */
    assert_non_null(strstr(json_string_value(at(templates, "smollm2")), "named SmolLM"));
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *name = json_string_value(at(c, "template"));
        const char *tmpl = json_string_value(at(templates, name));
        json_t *bos = json_object_get(c, "bos_token");
        json_t *msgs = at(c, "messages");
        srv_chat_msg m[8];
        size_t n = json_array_size(msgs);
        assert_true(n <= 8);
        for (size_t k = 0; k < n; k++) {
            const char *role = json_string_value(at(json_array_get(msgs, k), "role"));
            json_t *content = at(json_array_get(msgs, k), "content");
            m[k].role = strcmp(role, "system") == 0 ? SRV_ROLE_SYSTEM
                        : strcmp(role, "user") == 0 ? SRV_ROLE_USER
                                                    : SRV_ROLE_ASSISTANT;
            m[k].content = (char *)json_string_value(content);
            m[k].content_len = json_string_length(content);
        }
        free(s->text);
        s->text = NULL;
        size_t len = 0;
        int rc =
            srv_chat_render(tmpl, json_is_string(bos) ? json_string_value(bos) : NULL, m, n,
                            json_is_true(at(c, "add_generation_prompt")), &s->text, &len, &s->err);
        if (rc)
            fail_msg("case %zu (%s): %s", i, name, s->err.message);
        json_t *want = at(c, "expected");
        if (len != json_string_length(want) || memcmp(s->text, json_string_value(want), len) != 0)
            fail_msg("case %zu (%s): got\n%s\nwant\n%s", i, name, s->text, json_string_value(want));
    }
    assert_int_equal(srv_chat_template_format(json_string_value(at(templates, "smollm2"))),
                     SRV_CHAT_CHATML);
    assert_int_equal(srv_chat_template_format(json_string_value(at(templates, "llama3"))),
                     SRV_CHAT_LLAMA3);
}

static void test_srv_openai_chat_render_other_cases(void **state)
{
    oai_state *s = *state;
    srv_chat_msg m[2] = {{SRV_ROLE_USER, (char *)"a\nb", 3},
                         {SRV_ROLE_ASSISTANT, (char *)"x\0y", 3}};
    size_t len;
    /* No template: plain ChatML, no default system message; NULs in content kept. */
    assert_int_equal(srv_chat_render(NULL, NULL, m, 2, true, &s->text, &len, &s->err), 0);
    const char want[] = "<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\nx\0y<|im_end|>\n"
                        "<|im_start|>assistant\n";
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(s->text, want, len);
    free(s->text);
    s->text = NULL;

    /* An unsupported template is a clear 500. */
    const char *gemma = "{{ bos_token }}{% for message in messages %}<start_of_turn>"
                        "{{ message['role'] }}\n{{ message['content'] }}<end_of_turn>\n"
                        "{% endfor %}";
    assert_int_equal(srv_chat_template_format(gemma), SRV_CHAT_UNSUPPORTED);
    srv_error_clear(&s->err);
    assert_int_equal(srv_chat_render(gemma, "<bos>", m, 2, true, &s->text, &len, &s->err), FQ_EIO);
    assert_null(s->text);
    assert_int_equal(s->err.status, 500);
    assert_string_equal(s->err.type, "server_error");
    assert_non_null(strstr(s->err.message, "chat template is not supported"));

    /* Llama-3 without a bos_token variable in the template writes no BOS. */
    const char *l3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                     "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
                     "{% endfor %}";
    assert_int_equal(srv_chat_render(l3, "<|begin_of_text|>", m, 1, false, &s->text, &len, &s->err),
                     0);
    assert_string_equal(s->text, "<|start_header_id|>user<|end_header_id|>\n\na\nb<|eot_id|>");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_srv_openai_completion_defaults),
        T(test_srv_openai_completion_nulls_are_defaults),
        T(test_srv_openai_completion_all_fields),
        T(test_srv_openai_completion_boundaries_accepted),
        T(test_srv_openai_completion_bad_params),
        T(test_srv_openai_completion_unknown_model_404),
        T(test_srv_openai_completion_prompt_forms),
        T(test_srv_openai_completion_bad_prompts),
        T(test_srv_openai_bad_json),
        T(test_srv_openai_chat_defaults),
        T(test_srv_openai_chat_fields),
        T(test_srv_openai_chat_bad_params),
        T(test_srv_openai_resolve_max_tokens),
        T(test_srv_openai_tokenize_requests),
        T(test_srv_openai_detokenize_requests),
        T(test_srv_openai_tokenize_responses),
        T(test_srv_openai_completion_response_shape),
        T(test_srv_openai_completion_logprobs_shape),
        T(test_srv_openai_completion_chunk_shape),
        T(test_srv_openai_chat_response_shape),
        T(test_srv_openai_chat_chunk_sequence),
        T(test_srv_openai_models_response),
        T(test_srv_openai_errors),
        T(test_srv_openai_make_id),
        T(test_srv_openai_chat_render_matches_transformers),
        T(test_srv_openai_chat_render_other_cases),
    };
#undef T
    return cmocka_run_group_tests_name("srv_openai", tests, NULL, NULL);
}

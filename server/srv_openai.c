/* srv_openai.c — OpenAI request parsing and validation, response builders, the chat template.
 *
 * Parsing reads the body with jansson and walks the known fields only (unknown ones are ignored);
 * every reader checks the JSON type, then the range, and names the field as a path in the error.
 * The numeric sampling fields shared by both endpoints are one table (name, offset, bounds), so
 * that their parsing and their error messages come from one place. Builders write jansson objects
 * and repair any non-UTF-8 bytes on the way in.
 */
#include "srv_openai.h"

#include "fq_base.h"
#include "rt_unicode.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ------------------------------------------------------------------------------------------ */
/* JSON helpers                                                                                */

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int oom(srv_error *err)
{
    srv_error_set(err, 500, NULL, NULL, "out of memory");
    return FQ_ENOMEM;
}

/* A logprob as JSON: NAN = null, -inf = SRV_LOGPROB_FLOOR. */
static json_t *logprob_json(float lp)
{
    if (isnan(lp))
        return json_null();
    if (isinf(lp))
        return json_real(lp < 0 ? SRV_LOGPROB_FLOOR : -SRV_LOGPROB_FLOOR);
    return json_real((double)lp);
}

/* Loads a request body that must be a JSON object. */
static int load_object(const char *body, size_t len, json_t **root, srv_error *err)
{
    json_error_t jerr;
    *root = json_loadb(body ? body : "", body ? len : 0, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!*root) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return oom(err);
        return srv_error_set(err, 400, NULL, NULL, "invalid JSON: %s at line %d, column %d",
                             jerr.text, jerr.line, jerr.column);
    }
    if (!json_is_object(*root)) {
        int rc = srv_error_set(err, 400, NULL, NULL, "request body must be a JSON object, got %s",
                               type_name(*root));
        json_decref(*root);
        *root = NULL;
        return rc;
    }
    return 0;
}

/* The field's value, or NULL when absent or null ("not given"). */
static json_t *field(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

/* Reads an integer (an integral real such as 16.0 counts too). */
static int as_int(const json_t *v, const char *param, int64_t *out, srv_error *err)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18) {
            *out = (int64_t)d;
            return 0;
        }
        return srv_error_set(err, 400, NULL, param, "'%s' must be an integer, got %g", param, d);
    }
    return srv_error_set(err, 400, NULL, param, "'%s' must be an integer, got %s", param,
                         type_name(v));
}

/* An optional integer field in [lo, hi]; *out keeps its default when absent. */
static int get_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   bool *present, srv_error *err)
{
    if (present)
        *present = false;
    json_t *v = field(obj, key);
    if (!v)
        return 0;
    int64_t x;
    int rc = as_int(v, key, &x, err);
    if (rc)
        return rc;
    if (x < lo || x > hi)
        return srv_error_set(err, 400, NULL, key,
                             "'%s' must be between %" PRId64 " and %" PRId64 ", got %" PRId64, key,
                             lo, hi, x);
    *out = x;
    if (present)
        *present = true;
    return 0;
}

static int get_int32(const json_t *obj, const char *key, int64_t lo, int64_t hi, int32_t *out,
                     bool *present, srv_error *err)
{
    int64_t x = *out;
    int rc = get_int(obj, key, lo, hi, &x, present, err);
    if (rc == 0)
        *out = (int32_t)x;
    return rc;
}

static int get_bool(const json_t *obj, const char *key, const char *param, bool *out,
                    srv_error *err)
{
    json_t *v = field(obj, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return srv_error_set(err, 400, NULL, param, "'%s' must be a boolean, got %s", param,
                             type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* A malloc'd NUL-terminated copy of a JSON string (which may hold NULs). */
static char *dup_string(const json_t *v, size_t *len)
{
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    memcpy(s, json_string_value(v), n);
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

/* "model": optional string; checked against the served model. */
static int parse_model(const json_t *root, const srv_model_info *model, char **out, srv_error *err)
{
    json_t *v = field(root, "model");
    if (!v)
        return 0;
    if (!json_is_string(v))
        return srv_error_set(err, 400, NULL, "model", "'model' must be a string, got %s",
                             type_name(v));
    *out = dup_string(v, NULL);
    if (!*out)
        return oom(err);
    if (model && model->id && strcmp(*out, model->id) != 0) {
        int rc = srv_error_set(err, 404, NULL, "model", "The model '%s' does not exist.", *out);
        srv_error_set_code(err, "model_not_found");
        return rc;
    }
    return 0;
}

static int check_token(int64_t id, const srv_model_info *model, const char *param, srv_error *err)
{
    int64_t n_vocab = model && model->n_vocab > 0 ? model->n_vocab : INT32_MAX;
    if (id < 0 || id >= n_vocab)
        return srv_error_set(err, 400, NULL, param,
                             "'%s': token id %" PRId64 " is out of range [0, %" PRId64 ")", param,
                             id, n_vocab);
    return 0;
}

/* An array of token ids (its path in param); *ids malloc'd. */
static int parse_token_array(const json_t *arr, const char *param, const srv_model_info *model,
                             int32_t **ids, size_t *n_ids, srv_error *err)
{
    size_t n = json_array_size(arr);
    *ids = fq_malloc_array(n ? n : 1, sizeof **ids);
    if (!*ids)
        return oom(err);
    *n_ids = n;
    for (size_t i = 0; i < n; i++) {
        char p[96];
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        json_t *e = json_array_get(arr, i);
        int64_t id = 0;
        int rc = as_int(e, p, &id, err); /* null included: "got null" */
        if (rc == 0)
            rc = check_token(id, model, p, err);
        if (rc)
            return rc;
        (*ids)[i] = (int32_t)id;
    }
    return 0;
}

/* "stop": string, or an array of at most SRV_MAX_STOP strings; none empty. */
static int parse_stop(const json_t *root, char ***stop, size_t **stop_len, size_t *n_stop,
                      srv_error *err)
{
    json_t *v = field(root, "stop");
    if (!v)
        return 0;
    size_t n;
    if (json_is_string(v))
        n = 1;
    else if (json_is_array(v))
        n = json_array_size(v);
    else
        return srv_error_set(err, 400, NULL, "stop",
                             "'stop' must be a string or an array of strings, got %s",
                             type_name(v));
    if (n > SRV_MAX_STOP)
        return srv_error_set(err, 400, NULL, "stop", "'stop' may hold at most %d strings, got %zu",
                             SRV_MAX_STOP, n);
    if (n == 0)
        return 0;
    *stop = fq_calloc_array(n, sizeof **stop);
    *stop_len = fq_calloc_array(n, sizeof **stop_len);
    if (!*stop || !*stop_len)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_string(v) ? v : json_array_get(v, i);
        char p[96];
        if (json_is_string(v))
            snprintf(p, sizeof p, "stop");
        else
            snprintf(p, sizeof p, "stop[%zu]", i);
        if (!json_is_string(s))
            return srv_error_set(err, 400, NULL, p, "'%s' must be a string, got %s", p,
                                 type_name(s));
        if (json_string_length(s) == 0)
            return srv_error_set(err, 400, NULL, p, "'%s' must not be empty", p);
        (*stop)[i] = dup_string(s, &(*stop_len)[i]);
        if (!(*stop)[i])
            return oom(err);
        *n_stop = i + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Sampling: one table for the numeric fields                                                  */

typedef struct srv_float_field {
    const char *name;
    size_t offset; /* of the float in srv_sampling */
    double lo, hi;
    bool lo_open; /* lo itself is out of range */
} srv_float_field;

static const srv_float_field sampling_fields[] = {
    {"temperature", offsetof(srv_sampling, temperature), 0.0, 2.0, false},
    {"top_p", offsetof(srv_sampling, top_p), 0.0, 1.0, true},
    {"min_p", offsetof(srv_sampling, min_p), 0.0, 1.0, false},
    {"presence_penalty", offsetof(srv_sampling, presence_penalty), -2.0, 2.0, false},
    {"frequency_penalty", offsetof(srv_sampling, frequency_penalty), -2.0, 2.0, false},
    {"repetition_penalty", offsetof(srv_sampling, repetition_penalty), 0.0, 2.0, true},
};

static void sampling_defaults(srv_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->top_k = 0;
    s->min_p = 0.0f;
    s->repetition_penalty = 1.0f;
}

rt_sampling_params srv_sampling_params(const srv_sampling *s, int32_t logprobs)
{
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = s->temperature;
    p.top_k = s->top_k;
    p.top_p = s->top_p;
    p.min_p = s->min_p;
    p.presence_penalty = s->presence_penalty;
    p.frequency_penalty = s->frequency_penalty;
    p.repetition_penalty = s->repetition_penalty;
    p.has_seed = s->has_seed;
    p.seed = (uint64_t)s->seed;
    p.bias = s->logit_bias;
    p.n_bias = (int32_t)s->n_logit_bias;
    p.logprobs = logprobs;
    return p;
}

static int parse_logit_bias(const json_t *root, const srv_model_info *model, srv_sampling *s,
                            srv_error *err)
{
    json_t *v = field(root, "logit_bias");
    if (!v)
        return 0;
    if (!json_is_object(v))
        return srv_error_set(err, 400, NULL, "logit_bias",
                             "'logit_bias' must be an object mapping token ids to numbers, got %s",
                             type_name(v));
    size_t n = json_object_size(v);
    if (n == 0)
        return 0;
    s->logit_bias = fq_calloc_array(n, sizeof *s->logit_bias);
    if (!s->logit_bias)
        return oom(err);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        const char *k = key;
        bool digits = *k != '\0' && strlen(k) <= 10;
        for (const char *c = k; *c; c++)
            digits = digits && *c >= '0' && *c <= '9';
        if (!digits)
            return srv_error_set(err, 400, NULL, "logit_bias",
                                 "'logit_bias' keys must be token ids, got '%.64s'", k);
        int rc = check_token(strtoll(k, NULL, 10), model, "logit_bias", err);
        if (rc)
            return rc;
        if (!json_is_number(val))
            return srv_error_set(err, 400, NULL, "logit_bias",
                                 "'logit_bias[%s]' must be a number, got %s", k, type_name(val));
        double b = json_number_value(val);
        if (b < -100.0 || b > 100.0)
            return srv_error_set(err, 400, NULL, "logit_bias",
                                 "'logit_bias[%s]' must be between -100 and 100, got %g", k, b);
        s->logit_bias[s->n_logit_bias].token = (int32_t)strtoll(k, NULL, 10);
        s->logit_bias[s->n_logit_bias].bias = (float)b;
        s->n_logit_bias++;
    }
    return 0;
}

static int parse_sampling(const json_t *root, const srv_model_info *model, srv_sampling *s,
                          srv_error *err)
{
    for (size_t i = 0; i < sizeof sampling_fields / sizeof sampling_fields[0]; i++) {
        const srv_float_field *f = &sampling_fields[i];
        json_t *v = field(root, f->name);
        if (!v)
            continue;
        if (!json_is_number(v))
            return srv_error_set(err, 400, NULL, f->name, "'%s' must be a number, got %s", f->name,
                                 type_name(v));
        double x = json_number_value(v);
        if (x > f->hi || x < f->lo || (f->lo_open && x == f->lo))
            return srv_error_set(err, 400, NULL, f->name,
                                 "'%s' must be %s %g and at most %g, got %g", f->name,
                                 f->lo_open ? "greater than" : "at least", f->lo, f->hi, x);
        float *dst = (float *)(void *)((char *)s + f->offset);
        *dst = (float)x;
    }
    int64_t top_k = 0;
    int rc = get_int(root, "top_k", INT32_MIN, INT32_MAX, &top_k, NULL, err);
    if (rc)
        return rc;
    if (top_k < -1)
        return srv_error_set(err, 400, NULL, "top_k",
                             "'top_k' must be -1 or 0 (off) or a positive integer, got %" PRId64,
                             top_k);
    s->top_k = top_k > 0 ? (int32_t)top_k : 0;
    rc = get_int(root, "seed", INT64_MIN, INT64_MAX, &s->seed, &s->has_seed, err);
    if (rc == 0)
        rc = get_bool(root, "ignore_eos", "ignore_eos", &s->ignore_eos, err);
    if (rc == 0)
        rc = parse_logit_bias(root, model, s, err);
    return rc;
}

/* "stream" and "stream_options": {"include_usage"}; stream_options needs stream. */
static int parse_stream(const json_t *root, bool *stream, bool *include_usage, srv_error *err)
{
    int rc = get_bool(root, "stream", "stream", stream, err);
    if (rc)
        return rc;
    json_t *opts = field(root, "stream_options");
    if (!opts)
        return 0;
    if (!json_is_object(opts))
        return srv_error_set(err, 400, NULL, "stream_options",
                             "'stream_options' must be an object, got %s", type_name(opts));
    if (!*stream)
        return srv_error_set(err, 400, NULL, "stream_options",
                             "'stream_options' is only allowed when 'stream' is true");
    return get_bool(opts, "include_usage", "stream_options.include_usage", include_usage, err);
}

/* ------------------------------------------------------------------------------------------ */
/* /v1/completions                                                                             */

static int parse_prompts(const json_t *root, const srv_model_info *model, srv_completion_req *req,
                         srv_error *err)
{
    static const char kinds[] = "'prompt' must be a string, an array of strings, an array of "
                                "token ids or an array of token-id arrays";
    json_t *v = field(root, "prompt");
    if (!v)
        return srv_error_set(err, 400, NULL, "prompt", "'prompt' is required");
    if (json_is_string(v)) {
        req->prompts = calloc(1, sizeof *req->prompts);
        if (!req->prompts)
            return oom(err);
        req->n_prompts = 1;
        req->prompts[0].text = dup_string(v, &req->prompts[0].text_len);
        return req->prompts[0].text ? 0 : oom(err);
    }
    if (!json_is_array(v))
        return srv_error_set(err, 400, NULL, "prompt", "%s, got %s", kinds, type_name(v));
    size_t n = json_array_size(v);
    if (n == 0)
        return srv_error_set(err, 400, NULL, "prompt", "'prompt' must not be empty");
    json_t *first = json_array_get(v, 0);
    if (json_is_number(first)) { /* one prompt of token ids */
        req->prompts = calloc(1, sizeof *req->prompts);
        if (!req->prompts)
            return oom(err);
        req->n_prompts = 1;
        req->prompts[0].is_tokens = true;
        return parse_token_array(v, "prompt", model, &req->prompts[0].tokens,
                                 &req->prompts[0].n_tokens, err);
    }
    if (!json_is_string(first) && !json_is_array(first))
        return srv_error_set(err, 400, NULL, "prompt", "%s, got an array of %s", kinds,
                             type_name(first));
    if (n > SRV_MAX_PROMPTS)
        return srv_error_set(err, 400, NULL, "prompt",
                             "'prompt' may hold at most %d prompts, got %zu", SRV_MAX_PROMPTS, n);
    req->prompts = fq_calloc_array(n, sizeof *req->prompts);
    if (!req->prompts)
        return oom(err);
    bool strings = json_is_string(first);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        srv_prompt *p = &req->prompts[i];
        req->n_prompts = i + 1;
        char path[96];
        snprintf(path, sizeof path, "prompt[%zu]", i);
        if (strings) {
            if (!json_is_string(e))
                return srv_error_set(err, 400, NULL, path,
                                     "'%s' must be a string like the other prompts, got %s", path,
                                     type_name(e));
            p->text = dup_string(e, &p->text_len);
            if (!p->text)
                return oom(err);
        } else {
            if (!json_is_array(e))
                return srv_error_set(err, 400, NULL, path,
                                     "'%s' must be an array of token ids like the other prompts, "
                                     "got %s",
                                     path, type_name(e));
            if (json_array_size(e) == 0)
                return srv_error_set(err, 400, NULL, path, "'%s' must not be empty", path);
            p->is_tokens = true;
            int rc = parse_token_array(e, path, model, &p->tokens, &p->n_tokens, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int srv_completion_req_parse(const char *body, size_t len, const srv_model_info *model,
                             srv_completion_req *req, srv_error *err)
{
    memset(req, 0, sizeof *req);
    req->max_tokens = 16;
    req->n = 1;
    req->logprobs = -1;
    sampling_defaults(&req->sampling);
    json_t *root;
    int rc = load_object(body, len, &root, err);
    if (rc)
        return rc;
    rc = parse_model(root, model, &req->model, err);
    if (rc == 0)
        rc = parse_prompts(root, model, req, err);
    if (rc == 0)
        rc = get_int32(root, "max_tokens", 0, INT32_MAX, &req->max_tokens, NULL, err);
    if (rc == 0)
        rc = get_int32(root, "n", 1, SRV_MAX_N, &req->n, NULL, err);
    if (rc == 0)
        rc = parse_stream(root, &req->stream, &req->include_usage, err);
    if (rc == 0)
        rc = get_bool(root, "echo", "echo", &req->echo, err);
    if (rc == 0)
        rc = get_int32(root, "logprobs", 0, SRV_MAX_LOGPROBS, &req->logprobs, NULL, err);
    if (rc == 0)
        rc = parse_stop(root, &req->stop, &req->stop_len, &req->n_stop, err);
    if (rc == 0)
        rc = parse_sampling(root, model, &req->sampling, err);
    json_decref(root);
    return rc;
}

static void free_stop(char **stop, size_t *stop_len, size_t n_stop)
{
    for (size_t i = 0; i < n_stop; i++)
        free(stop[i]);
    free(stop);
    free(stop_len);
}

void srv_completion_req_close(srv_completion_req *req)
{
    if (!req)
        return;
    free(req->model);
    for (size_t i = 0; i < req->n_prompts; i++) {
        free(req->prompts[i].text);
        free(req->prompts[i].tokens);
    }
    free(req->prompts);
    free_stop(req->stop, req->stop_len, req->n_stop);
    free(req->sampling.logit_bias);
    memset(req, 0, sizeof *req);
}

/* ------------------------------------------------------------------------------------------ */
/* /v1/chat/completions                                                                        */

/* A growable byte buffer for rendering and joining. */
typedef struct srv_buf {
    char *p;
    size_t len, cap;
    bool failed;
} srv_buf;

static void buf_put(srv_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(srv_buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/* One message's content: a string, or a list of text parts joined with "\n". */
static int parse_content(const json_t *msg, size_t idx, srv_role role, srv_chat_msg *out,
                         srv_error *err)
{
    char path[96];
    snprintf(path, sizeof path, "messages[%zu].content", idx);
    json_t *c = field(msg, "content");
    if (!c) {
        if (role != SRV_ROLE_ASSISTANT)
            return srv_error_set(err, 400, NULL, path, "'%s' is required", path);
        out->content = calloc(1, 1);
        return out->content ? 0 : oom(err);
    }
    if (json_is_string(c)) {
        out->content = dup_string(c, &out->content_len);
        return out->content ? 0 : oom(err);
    }
    if (!json_is_array(c))
        return srv_error_set(err, 400, NULL, path,
                             "'%s' must be a string or an array of text parts, got %s", path,
                             type_name(c));
    srv_buf b = {0};
    buf_put(&b, "", 0);
    for (size_t j = 0; j < json_array_size(c); j++) {
        json_t *part = json_array_get(c, j);
        char pp[128];
        snprintf(pp, sizeof pp, "%s[%zu]", path, j);
        int rc = 0;
        json_t *type = json_is_object(part) ? field(part, "type") : NULL;
        json_t *text = json_is_object(part) ? field(part, "text") : NULL;
        if (!json_is_object(part))
            rc = srv_error_set(err, 400, NULL, pp, "'%s' must be an object, got %s", pp,
                               type_name(part));
        else if (!json_is_string(type))
            rc = srv_error_set(err, 400, NULL, pp, "'%s.type' must be a string, got %s", pp,
                               type ? type_name(type) : "nothing");
        else if (strcmp(json_string_value(type), "text") != 0)
            rc = srv_error_set(err, 400, NULL, pp,
                               "'%s': only text content parts are supported, got type '%.40s'", pp,
                               json_string_value(type));
        else if (!json_is_string(text))
            rc = srv_error_set(err, 400, NULL, pp, "'%s.text' must be a string, got %s", pp,
                               text ? type_name(text) : "nothing");
        if (rc) {
            free(b.p);
            return rc;
        }
        if (j > 0)
            buf_put(&b, "\n", 1);
        buf_put(&b, json_string_value(text), json_string_length(text));
    }
    if (b.failed) {
        free(b.p);
        return oom(err);
    }
    out->content = b.p;
    out->content_len = b.len;
    return 0;
}

static int parse_messages(const json_t *root, srv_chat_msg **msgs, size_t *n_msgs, srv_error *err)
{
    json_t *v = field(root, "messages");
    if (!v)
        return srv_error_set(err, 400, NULL, "messages", "'messages' is required");
    if (!json_is_array(v))
        return srv_error_set(err, 400, NULL, "messages", "'messages' must be an array, got %s",
                             type_name(v));
    size_t n = json_array_size(v);
    if (n == 0)
        return srv_error_set(err, 400, NULL, "messages", "'messages' must not be empty");
    *msgs = fq_calloc_array(n, sizeof **msgs);
    if (!*msgs)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i);
        char path[96];
        snprintf(path, sizeof path, "messages[%zu]", i);
        if (!json_is_object(m))
            return srv_error_set(err, 400, NULL, path, "'%s' must be an object, got %s", path,
                                 type_name(m));
        snprintf(path, sizeof path, "messages[%zu].role", i);
        json_t *r = field(m, "role");
        if (!r)
            return srv_error_set(err, 400, NULL, path, "'%s' is required", path);
        if (!json_is_string(r))
            return srv_error_set(err, 400, NULL, path, "'%s' must be a string, got %s", path,
                                 type_name(r));
        const char *role = json_string_value(r);
        srv_role rl;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
            rl = SRV_ROLE_SYSTEM;
        else if (strcmp(role, "user") == 0)
            rl = SRV_ROLE_USER;
        else if (strcmp(role, "assistant") == 0)
            rl = SRV_ROLE_ASSISTANT;
        else
            return srv_error_set(err, 400, NULL, path,
                                 "'%s' must be one of 'system', 'user', 'assistant', got '%.40s'",
                                 path, role);
        (*msgs)[i].role = rl;
        *n_msgs = i + 1;
        int rc = parse_content(m, i, rl, &(*msgs)[i], err);
        if (rc)
            return rc;
    }
    return 0;
}

static void free_messages(srv_chat_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(msgs[i].content);
    free(msgs);
}

int srv_chat_req_parse(const char *body, size_t len, const srv_model_info *model, srv_chat_req *req,
                       srv_error *err)
{
    memset(req, 0, sizeof *req);
    req->max_tokens = -1;
    req->n = 1;
    req->add_generation_prompt = true;
    sampling_defaults(&req->sampling);
    json_t *root;
    int rc = load_object(body, len, &root, err);
    if (rc)
        return rc;
    rc = parse_model(root, model, &req->model, err);
    if (rc == 0)
        rc = parse_messages(root, &req->messages, &req->n_messages, err);
    bool has_mct = false;
    if (rc == 0)
        rc =
            get_int32(root, "max_completion_tokens", 1, INT32_MAX, &req->max_tokens, &has_mct, err);
    if (rc == 0 && !has_mct)
        rc = get_int32(root, "max_tokens", 1, INT32_MAX, &req->max_tokens, NULL, err);
    if (rc == 0)
        rc = get_int32(root, "n", 1, SRV_MAX_N, &req->n, NULL, err);
    if (rc == 0)
        rc = parse_stream(root, &req->stream, &req->include_usage, err);
    if (rc == 0)
        rc = get_bool(root, "logprobs", "logprobs", &req->logprobs, err);
    if (rc == 0)
        rc = get_int32(root, "top_logprobs", 0, SRV_MAX_LOGPROBS, &req->top_logprobs, NULL, err);
    if (rc == 0 && req->top_logprobs > 0 && !req->logprobs)
        rc = srv_error_set(err, 400, NULL, "top_logprobs",
                           "'top_logprobs' requires 'logprobs' to be true");
    if (rc == 0)
        rc = get_bool(root, "add_generation_prompt", "add_generation_prompt",
                      &req->add_generation_prompt, err);
    if (rc == 0)
        rc = parse_stop(root, &req->stop, &req->stop_len, &req->n_stop, err);
    if (rc == 0)
        rc = parse_sampling(root, model, &req->sampling, err);
    json_decref(root);
    return rc;
}

void srv_chat_req_close(srv_chat_req *req)
{
    if (!req)
        return;
    free(req->model);
    free_messages(req->messages, req->n_messages);
    free_stop(req->stop, req->stop_len, req->n_stop);
    free(req->sampling.logit_bias);
    memset(req, 0, sizeof *req);
}

/* ------------------------------------------------------------------------------------------ */
/* Context check                                                                               */

int srv_resolve_max_tokens(size_t n_prompt, int32_t *max_tokens, int32_t max_model_len,
                           const char *param, srv_error *err)
{
    int rc;
    if (n_prompt == 0)
        return srv_error_set(err, 400, NULL, param,
                             "the prompt is empty: the model needs at least one token to continue");
    if (*max_tokens < 0) {
        if (n_prompt >= (size_t)max_model_len) {
            rc = srv_error_set(err, 400, NULL, param,
                               "This model's maximum context length is %d tokens. However, your "
                               "prompt has %zu tokens, which leaves no room for the completion. "
                               "Please reduce the length of the prompt.",
                               max_model_len, n_prompt);
            srv_error_set_code(err, "context_length_exceeded");
            return rc;
        }
        *max_tokens = (int32_t)((size_t)max_model_len - n_prompt);
        return 0;
    }
    if (n_prompt + (size_t)*max_tokens > (size_t)max_model_len) {
        rc = srv_error_set(err, 400, NULL, param,
                           "This model's maximum context length is %d tokens. However, you "
                           "requested %zu tokens (%zu in the prompt, %d for the completion). "
                           "Please reduce the length of the prompt or the completion.",
                           max_model_len, n_prompt + (size_t)*max_tokens, n_prompt, *max_tokens);
        srv_error_set_code(err, "context_length_exceeded");
        return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Chat template                                                                               */

srv_chat_format srv_chat_template_format(const char *tmpl)
{
    if (!tmpl || strstr(tmpl, "<|im_start|>"))
        return SRV_CHAT_CHATML;
    if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|eot_id|>"))
        return SRV_CHAT_LLAMA3;
    return SRV_CHAT_UNSUPPORTED;
}

static const char *role_name(srv_role r)
{
    return r == SRV_ROLE_SYSTEM ? "system" : r == SRV_ROLE_USER ? "user" : "assistant";
}

/* Reads the Jinja string literal whose opening quote is at q (Python-style escapes) into b. */
static void read_literal(const char *q, srv_buf *b)
{
    char quote = *q++;
    for (; *q && *q != quote; q++) {
        if (*q != '\\' || !q[1]) {
            buf_put(b, q, 1);
            continue;
        }
        q++;
        switch (*q) {
        case 'n':
            buf_put(b, "\n", 1);
            break;
        case 't':
            buf_put(b, "\t", 1);
            break;
        case 'r':
            buf_put(b, "\r", 1);
            break;
        case '\\':
        case '\'':
        case '"':
            buf_put(b, q, 1);
            break;
        default: /* an escape we do not know stays as written */
            buf_put(b, q - 1, 2);
            break;
        }
    }
}

/* The default system message of a ChatML template: the text X of a string literal
 * '<|im_start|>system\nX<|im_end|>\n' (SmolLM2, Qwen), appended to b; false when there is none.
 * A literal that stops before <|im_end|> ('<|im_start|>system\n' + messages[0]...) is not one. */
static bool chatml_default_system(const char *tmpl, srv_buf *b)
{
    static const char head[] = "<|im_start|>system\n";
    static const char tail[] = "<|im_end|>";
    const size_t hl = sizeof head - 1, tl = sizeof tail - 1;
    for (const char *p = strstr(tmpl, "<|im_start|>system"); p;
         p = strstr(p + 1, "<|im_start|>system")) {
        if (p == tmpl || (p[-1] != '\'' && p[-1] != '"'))
            continue;
        srv_buf lit = {0};
        read_literal(p - 1, &lit);
        size_t end = lit.len; /* without the optional final newline */
        if (end > 0 && lit.p[end - 1] == '\n')
            end--;
        bool ok = !lit.failed && end > hl + tl && memcmp(lit.p, head, hl) == 0 &&
                  memcmp(lit.p + end - tl, tail, tl) == 0;
        if (ok)
            buf_put(b, lit.p + hl, end - tl - hl);
        b->failed |= lit.failed;
        free(lit.p);
        if (ok || b->failed)
            return ok;
    }
    return false;
}

/* Python's str.isspace, which Jinja's `trim` (str.strip) removes: the Unicode White_Space set plus
 * U+001C..U+001F. */
static bool py_space(uint32_t cp)
{
    return (cp >= 0x1C && cp <= 0x1F) || rt_uni_is_space(cp);
}

/* s[0..len) without leading and trailing Python white space: *start and *n. */
static void py_strip(const char *s, size_t len, size_t *start, size_t *n)
{
    size_t a = 0, z = len;
    while (a < z) {
        uint32_t cp;
        int r = rt_utf8_decode((const uint8_t *)s + a, z - a, &cp);
        if (r <= 0 || !py_space(cp))
            break;
        a += (size_t)r;
    }
    while (z > a) {
        size_t c = z - 1;
        while (c > a && ((uint8_t)s[c] & 0xC0) == 0x80 && z - c < 4)
            c--;
        uint32_t cp;
        int r = rt_utf8_decode((const uint8_t *)s + c, z - c, &cp);
        if (r <= 0 || (size_t)r != z - c || !py_space(cp))
            break;
        z = c;
    }
    *start = a;
    *n = z - a;
}

int srv_chat_render(const char *tmpl, const char *bos_token, const srv_chat_msg *msgs,
                    size_t n_msgs, bool add_generation_prompt, char **out, size_t *out_len,
                    srv_error *err)
{
    *out = NULL;
    *out_len = 0;
    srv_chat_format fmt = srv_chat_template_format(tmpl);
    srv_buf b = {0};
    buf_put(&b, "", 0);
    if (fmt == SRV_CHAT_CHATML) {
        if (n_msgs > 0 && msgs[0].role != SRV_ROLE_SYSTEM && tmpl) {
            srv_buf sys = {0};
            if (chatml_default_system(tmpl, &sys)) {
                buf_puts(&b, "<|im_start|>system\n");
                buf_put(&b, sys.p, sys.len);
                buf_puts(&b, "<|im_end|>\n");
            }
            b.failed |= sys.failed;
            free(sys.p);
        }
        for (size_t i = 0; i < n_msgs; i++) {
            buf_puts(&b, "<|im_start|>");
            buf_puts(&b, role_name(msgs[i].role));
            buf_puts(&b, "\n");
            buf_put(&b, msgs[i].content, msgs[i].content_len);
            buf_puts(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt)
            buf_puts(&b, "<|im_start|>assistant\n");
    } else if (fmt == SRV_CHAT_LLAMA3) {
        if (n_msgs > 0 && bos_token && strstr(tmpl, "bos_token"))
            buf_puts(&b, bos_token);
        for (size_t i = 0; i < n_msgs; i++) {
            size_t a, n;
            py_strip(msgs[i].content, msgs[i].content_len, &a, &n);
            buf_puts(&b, "<|start_header_id|>");
            buf_puts(&b, role_name(msgs[i].role));
            buf_puts(&b, "<|end_header_id|>\n\n");
            buf_put(&b, msgs[i].content + a, n);
            buf_puts(&b, "<|eot_id|>");
        }
        if (add_generation_prompt)
            buf_puts(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        free(b.p);
        return srv_error_set(err, 500, NULL, NULL,
                             "the model's chat template is not supported (only ChatML and "
                             "Llama-3 style templates are rendered); use /v1/completions with a "
                             "formatted prompt");
    }
    if (b.failed) {
        free(b.p);
        return oom(err);
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* /tokenize, /detokenize                                                                      */

int srv_tokenize_req_parse(const char *body, size_t len, const srv_model_info *model,
                           srv_tokenize_req *req, srv_error *err)
{
    memset(req, 0, sizeof *req);
    req->add_generation_prompt = true;
    json_t *root;
    int rc = load_object(body, len, &root, err);
    if (rc)
        return rc;
    rc = parse_model(root, model, &req->model, err);
    json_t *prompt = field(root, "prompt");
    if (rc == 0 && prompt) {
        req->add_special_tokens = true;
        if (!json_is_string(prompt))
            rc = srv_error_set(err, 400, NULL, "prompt", "'prompt' must be a string, got %s",
                               type_name(prompt));
        else if (!(req->prompt = dup_string(prompt, &req->prompt_len)))
            rc = oom(err);
    } else if (rc == 0 && field(root, "messages")) {
        req->is_chat = true;
        rc = parse_messages(root, &req->messages, &req->n_messages, err);
        if (rc == 0)
            rc = get_bool(root, "add_generation_prompt", "add_generation_prompt",
                          &req->add_generation_prompt, err);
    } else if (rc == 0) {
        rc = srv_error_set(err, 400, NULL, "prompt", "'prompt' is required");
    }
    if (rc == 0)
        rc = get_bool(root, "add_special_tokens", "add_special_tokens", &req->add_special_tokens,
                      err);
    json_decref(root);
    return rc;
}

void srv_tokenize_req_close(srv_tokenize_req *req)
{
    if (!req)
        return;
    free(req->model);
    free(req->prompt);
    free_messages(req->messages, req->n_messages);
    memset(req, 0, sizeof *req);
}

int srv_detokenize_req_parse(const char *body, size_t len, const srv_model_info *model,
                             srv_detokenize_req *req, srv_error *err)
{
    memset(req, 0, sizeof *req);
    json_t *root;
    int rc = load_object(body, len, &root, err);
    if (rc)
        return rc;
    rc = parse_model(root, model, &req->model, err);
    json_t *t = field(root, "tokens");
    if (rc == 0 && !t)
        rc = srv_error_set(err, 400, NULL, "tokens", "'tokens' is required");
    else if (rc == 0 && !json_is_array(t))
        rc = srv_error_set(err, 400, NULL, "tokens",
                           "'tokens' must be an array of token ids, "
                           "got %s",
                           type_name(t));
    else if (rc == 0)
        rc = parse_token_array(t, "tokens", model, &req->tokens, &req->n_tokens, err);
    json_decref(root);
    return rc;
}

void srv_detokenize_req_close(srv_detokenize_req *req)
{
    if (!req)
        return;
    free(req->model);
    free(req->tokens);
    memset(req, 0, sizeof *req);
}

json_t *srv_tokenize_response(const int32_t *tokens, size_t n_tokens, int32_t max_model_len)
{
    json_t *arr = json_array();
    json_t *o = json_object();
    bool bad = !arr || !o;
    for (size_t i = 0; !bad && i < n_tokens; i++)
        bad = json_array_append_new(arr, json_integer(tokens[i])) != 0;
    if (bad || json_object_set_new(o, "tokens", arr) ||
        json_object_set_new(o, "count", json_integer((json_int_t)n_tokens)) ||
        json_object_set_new(o, "max_model_len", json_integer(max_model_len))) {
        if (bad)
            json_decref(arr);
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *srv_detokenize_response(const char *text, size_t len)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "prompt", srv_json_string_lossy(text, len))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* Responses                                                                                   */

int srv_make_id(const char *prefix, char *out, size_t cap)
{
    size_t pl = strlen(prefix);
    if (cap < pl + 33)
        return FQ_EINVAL;
    uint8_t rnd[16];
    size_t got = 0;
    while (got < sizeof rnd) {
        ssize_t r = getrandom(rnd + got, sizeof rnd - got, 0);
        if (r <= 0)
            return FQ_EIO;
        got += (size_t)r;
    }
    memcpy(out, prefix, pl);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof rnd; i++) {
        out[pl + 2 * i] = hex[rnd[i] >> 4];
        out[pl + 2 * i + 1] = hex[rnd[i] & 15];
    }
    out[pl + 32] = '\0';
    return 0;
}

const char *srv_finish_str(srv_finish f)
{
    return f == SRV_FINISH_STOP ? "stop" : f == SRV_FINISH_LENGTH ? "length" : NULL;
}

static json_t *finish_json(srv_finish f)
{
    const char *s = srv_finish_str(f);
    return s ? json_string(s) : json_null();
}

/* Sets key to v (stolen) and records a failure (a NULL v or a failed set) in *bad. */
static void put(json_t *o, const char *key, json_t *v, bool *bad)
{
    if (!v || json_object_set_new(o, key, v) != 0)
        *bad = true;
}

static void append(json_t *a, json_t *v, bool *bad)
{
    if (!v || json_array_append_new(a, v) != 0)
        *bad = true;
}

/* The fields every response and chunk starts with. */
static json_t *resp_head(const srv_resp_meta *meta, const char *object, bool *bad)
{
    json_t *o = json_object();
    if (!o) {
        *bad = true;
        return NULL;
    }
    put(o, "id", srv_json_string_lossy(meta->id, meta->id ? strlen(meta->id) : 0), bad);
    put(o, "object", json_string(object), bad);
    put(o, "created", json_integer(meta->created), bad);
    put(o, "model", srv_json_string_lossy(meta->model, meta->model ? strlen(meta->model) : 0), bad);
    return o;
}

static json_t *usage_json(const srv_usage *u)
{
    json_t *o = json_object();
    bool bad = !o;
    if (o) {
        put(o, "prompt_tokens", json_integer(u->prompt_tokens), &bad);
        put(o, "completion_tokens", json_integer(u->completion_tokens), &bad);
        put(o, "total_tokens", json_integer(u->prompt_tokens + u->completion_tokens), &bad);
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The legacy completions logprobs object of a choice. */
static json_t *completion_logprobs(const srv_choice *c)
{
    if (!c->has_logprobs)
        return json_null();
    json_t *o = json_object();
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    bool bad = !o || !tokens || !lps || !tops || !offs;
    for (size_t i = 0; !bad && i < c->n_logprobs; i++) {
        const srv_token_logprob *t = &c->logprobs[i];
        append(tokens, srv_json_string_lossy(t->token, t->token_len), &bad);
        append(lps, logprob_json(t->logprob), &bad);
        append(offs, json_integer((json_int_t)t->text_offset), &bad);
        if (isnan(t->logprob)) {
            append(tops, json_null(), &bad);
            continue;
        }
        json_t *d = json_object();
        for (size_t k = 0; d && !bad && k < t->n_top; k++) {
            json_t *key = srv_json_string_lossy(t->top[k].token, t->top[k].token_len);
            if (!key) {
                bad = true;
                break;
            }
            /* Two alternatives with one text (a partial character each) share the key: the
             * better one, listed first, is kept. */
            if (!json_object_get(d, json_string_value(key)))
                put(d, json_string_value(key), logprob_json(t->top[k].logprob), &bad);
            json_decref(key);
        }
        append(tops, d, &bad);
    }
    if (!bad) {
        put(o, "tokens", tokens, &bad);
        put(o, "token_logprobs", lps, &bad);
        put(o, "top_logprobs", tops, &bad);
        put(o, "text_offset", offs, &bad);
        if (!bad)
            return o;
        json_decref(o);
        return NULL;
    }
    json_decref(tokens);
    json_decref(lps);
    json_decref(tops);
    json_decref(offs);
    json_decref(o);
    return NULL;
}

static json_t *bytes_json(const char *s, size_t len)
{
    json_t *a = json_array();
    bool bad = !a;
    for (size_t i = 0; !bad && i < len; i++)
        append(a, json_integer((uint8_t)s[i]), &bad);
    if (bad) {
        json_decref(a);
        return NULL;
    }
    return a;
}

/* One {"token", "logprob", "bytes"} entry. */
static json_t *chat_token_json(const char *tok, size_t len, float lp)
{
    json_t *o = json_object();
    bool bad = !o;
    if (o) {
        put(o, "token", srv_json_string_lossy(tok, len), &bad);
        put(o, "logprob", logprob_json(lp), &bad);
        put(o, "bytes", bytes_json(tok, len), &bad);
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The chat logprobs object of a choice: {"content": [...]}. */
static json_t *chat_logprobs(const srv_choice *c)
{
    if (!c->has_logprobs)
        return json_null();
    json_t *o = json_object();
    json_t *content = json_array();
    bool bad = !o || !content;
    for (size_t i = 0; !bad && i < c->n_logprobs; i++) {
        const srv_token_logprob *t = &c->logprobs[i];
        json_t *e = chat_token_json(t->token, t->token_len, t->logprob);
        json_t *tops = json_array();
        if (!e || !tops) {
            json_decref(e);
            json_decref(tops);
            bad = true;
            break;
        }
        for (size_t k = 0; !bad && k < t->n_top; k++)
            append(tops, chat_token_json(t->top[k].token, t->top[k].token_len, t->top[k].logprob),
                   &bad);
        put(e, "top_logprobs", tops, &bad);
        append(content, e, &bad);
    }
    if (!bad) {
        put(o, "content", content, &bad);
        if (!bad)
            return o;
        json_decref(o);
        return NULL;
    }
    json_decref(content);
    json_decref(o);
    return NULL;
}

static json_t *completion_choice(const srv_choice *c)
{
    json_t *o = json_object();
    bool bad = !o;
    if (o) {
        put(o, "index", json_integer(c->index), &bad);
        put(o, "text", srv_json_string_lossy(c->text, c->text_len), &bad);
        put(o, "logprobs", completion_logprobs(c), &bad);
        put(o, "finish_reason", finish_json(c->finish), &bad);
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Finishes a response object: returns o, or NULL (freeing it) when anything failed. */
static json_t *done(json_t *o, bool bad)
{
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *srv_completion_response(const srv_resp_meta *meta, const srv_choice *choices,
                                size_t n_choices, const srv_usage *usage)
{
    bool bad = false;
    json_t *o = resp_head(meta, "text_completion", &bad);
    json_t *arr = json_array();
    for (size_t i = 0; arr && !bad && i < n_choices; i++)
        append(arr, completion_choice(&choices[i]), &bad);
    if (o)
        put(o, "choices", arr, &bad);
    else
        json_decref(arr);
    if (o)
        put(o, "usage", usage_json(usage), &bad);
    return done(o, bad || !arr);
}

json_t *srv_completion_chunk(const srv_resp_meta *meta, const srv_choice *choice,
                             bool include_usage)
{
    bool bad = false;
    json_t *o = resp_head(meta, "text_completion", &bad);
    json_t *arr = json_array();
    if (arr)
        append(arr, completion_choice(choice), &bad);
    if (o) {
        put(o, "choices", arr, &bad);
        if (include_usage)
            put(o, "usage", json_null(), &bad);
    } else {
        json_decref(arr);
    }
    return done(o, bad || !arr);
}

json_t *srv_usage_chunk(const srv_resp_meta *meta, bool chat, const srv_usage *usage)
{
    bool bad = false;
    json_t *o = resp_head(meta, chat ? "chat.completion.chunk" : "text_completion", &bad);
    if (o) {
        put(o, "choices", json_array(), &bad);
        put(o, "usage", usage_json(usage), &bad);
    }
    return done(o, bad);
}

static json_t *chat_choice(const srv_choice *c)
{
    json_t *o = json_object();
    json_t *msg = json_object();
    bool bad = !o || !msg;
    if (!bad) {
        put(msg, "role", json_string("assistant"), &bad);
        put(msg, "content", srv_json_string_lossy(c->text, c->text_len), &bad);
        put(o, "index", json_integer(c->index), &bad);
        put(o, "message", msg, &bad);
        put(o, "logprobs", chat_logprobs(c), &bad);
        put(o, "finish_reason", finish_json(c->finish), &bad);
        return done(o, bad);
    }
    json_decref(msg);
    json_decref(o);
    return NULL;
}

json_t *srv_chat_response(const srv_resp_meta *meta, const srv_choice *choices, size_t n_choices,
                          const srv_usage *usage)
{
    bool bad = false;
    json_t *o = resp_head(meta, "chat.completion", &bad);
    json_t *arr = json_array();
    for (size_t i = 0; arr && !bad && i < n_choices; i++)
        append(arr, chat_choice(&choices[i]), &bad);
    if (o)
        put(o, "choices", arr, &bad);
    else
        json_decref(arr);
    if (o)
        put(o, "usage", usage_json(usage), &bad);
    return done(o, bad || !arr);
}

json_t *srv_chat_chunk(const srv_resp_meta *meta, const srv_choice *choice, bool role,
                       bool include_usage)
{
    bool bad = false;
    json_t *o = resp_head(meta, "chat.completion.chunk", &bad);
    json_t *arr = json_array();
    json_t *ch = json_object();
    json_t *delta = json_object();
    if (!o || !arr || !ch || !delta) {
        json_decref(o);
        json_decref(arr);
        json_decref(ch);
        json_decref(delta);
        return NULL;
    }
    if (role)
        put(delta, "role", json_string("assistant"), &bad);
    if (choice->text)
        put(delta, "content", srv_json_string_lossy(choice->text, choice->text_len), &bad);
    put(ch, "index", json_integer(choice->index), &bad);
    put(ch, "delta", delta, &bad);
    put(ch, "logprobs", chat_logprobs(choice), &bad);
    put(ch, "finish_reason", finish_json(choice->finish), &bad);
    append(arr, ch, &bad);
    put(o, "choices", arr, &bad);
    if (include_usage)
        put(o, "usage", json_null(), &bad);
    return done(o, bad);
}

json_t *srv_models_response(const srv_model_info *models, size_t n_models)
{
    json_t *o = json_object();
    json_t *data = json_array();
    bool bad = !o || !data;
    for (size_t i = 0; !bad && i < n_models; i++) {
        const srv_model_info *m = &models[i];
        json_t *e = json_object();
        bad = !e;
        if (e) {
            put(e, "id", srv_json_string_lossy(m->id, m->id ? strlen(m->id) : 0), &bad);
            put(e, "object", json_string("model"), &bad);
            put(e, "created", json_integer(m->created), &bad);
            put(e, "owned_by", json_string("flexq"), &bad);
            put(e, "max_model_len", json_integer(m->max_model_len), &bad);
        }
        append(data, e, &bad);
    }
    if (bad) {
        json_decref(data);
        json_decref(o);
        return NULL;
    }
    put(o, "object", json_string("list"), &bad);
    put(o, "data", data, &bad);
    return done(o, bad);
}

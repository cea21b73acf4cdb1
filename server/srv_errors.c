/* srv_errors.c — the OpenAI error object and the srv_error record with its HTTP status. */
#include "srv_errors.h"

#include "fq_base.h"
#include "rt_unicode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *srv_json_string_lossy(const char *s, size_t len)
{
    if (!s)
        return json_string("");
    if (rt_utf8_valid(s, len))
        return json_stringn(s, len);
    char *fixed = NULL;
    size_t fixed_len = 0;
    if (rt_utf8_repair(s, len, &fixed, &fixed_len) != 0)
        return NULL;
    json_t *j = json_stringn(fixed, fixed_len);
    free(fixed);
    return j;
}

static json_t *string_lossy(const char *s)
{
    return srv_json_string_lossy(s, strlen(s));
}

static json_t *string_or_null(const char *s)
{
    return s && s[0] ? string_lossy(s) : json_null();
}

json_t *srv_error_json(const char *message, const char *type, const char *param, const char *code)
{
    json_t *inner = json_object();
    json_t *outer = json_object();
    if (!inner || !outer ||
        json_object_set_new(inner, "message", string_lossy(message ? message : "")) ||
        json_object_set_new(inner, "type", string_lossy(type && type[0] ? type : "server_error")) ||
        json_object_set_new(inner, "param", string_or_null(param)) ||
        json_object_set_new(inner, "code", string_or_null(code))) {
        json_decref(inner);
        json_decref(outer);
        return NULL;
    }
    if (json_object_set_new(outer, "error", inner)) {
        json_decref(outer);
        return NULL;
    }
    return outer;
}

const char *srv_error_type_for_status(int status)
{
    switch (status) {
    case 400:
    case 405:
    case 413:
    case 422:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    case 503:
        return "service_unavailable_error";
    default:
        return "server_error";
    }
}

static int code_for_status(int status)
{
    if (status == 404)
        return FQ_ENOTFOUND;
    if (status == 413)
        return FQ_ERANGE;
    if (status == 501)
        return FQ_EUNSUP;
    if (status >= 500)
        return FQ_EIO;
    return FQ_EINVAL;
}

/* Cuts s back so that it does not end inside a UTF-8 character (after snprintf truncation). */
static void trim_partial_utf8(char *s)
{
    size_t len = strlen(s);
    size_t i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i > 0 && (unsigned char)s[i - 1] >= 0xC0) {
        unsigned char lead = (unsigned char)s[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (len - (i - 1) < need)
            s[i - 1] = '\0';
    }
}

static void copy_field(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
    trim_partial_utf8(dst);
}

int srv_error_set(srv_error *err, int status, const char *type, const char *param, const char *fmt,
                  ...)
{
    if (err) {
        err->status = status;
        copy_field(err->type, sizeof err->type, type ? type : srv_error_type_for_status(status));
        copy_field(err->param, sizeof err->param, param);
        err->code[0] = '\0';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        trim_partial_utf8(err->message);
    }
    return code_for_status(status);
}

void srv_error_set_code(srv_error *err, const char *code)
{
    if (err)
        copy_field(err->code, sizeof err->code, code);
}

void srv_error_clear(srv_error *err)
{
    memset(err, 0, sizeof *err);
}

json_t *srv_error_to_json(const srv_error *err)
{
    return srv_error_json(err->message, err->type, err->param, err->code);
}

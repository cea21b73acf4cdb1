/* srv_errors.h — the OpenAI error object and an error record that carries its HTTP status.
 *
 * Every failure the daemon reports to a client is one JSON body
 * {"error": {"message", "type", "param", "code"}} with an HTTP status (DESIGN §6). Parsers and
 * handlers fill an srv_error (caller-owned, fixed size, no allocation) and the HTTP layer turns it
 * into the status line and the body. Thread safety: every function may be called from any thread;
 * an srv_error belongs to one thread at a time.
 */
#ifndef SRV_ERRORS_H
#define SRV_ERRORS_H

#include <jansson.h>

/* An error to report: HTTP status + the four fields of the OpenAI error object. The strings are
 * NUL-terminated and truncated to fit; an empty param or code is JSON null. */
typedef struct srv_error {
    int status;        /* HTTP status (400, 401, 404, 405, 413, 429, 500, 503); 0 = no error */
    char message[512]; /* one line for a person */
    char type[48];     /* "invalid_request_error", "not_found_error", ... */
    char param[48];    /* the offending request field as a path ("messages[2].content"), or "" */
    char code[48];     /* machine-readable code ("context_length_exceeded"), or "" */
} srv_error;

/* {"error": {"message", "type", "param", "code"}}; param and code NULL (or "") become null, type
 * NULL becomes "server_error". Strings that are not valid UTF-8 are repaired (U+FFFD). New
 * reference (caller decrefs); NULL only when out of memory. */
json_t *srv_error_json(const char *message, const char *type, const char *param, const char *code);

/* The OpenAI error type for an HTTP status: 400/405/413/422 "invalid_request_error",
 * 401 "authentication_error", 403 "permission_error", 404 "not_found_error",
 * 429 "rate_limit_error", 503 "service_unavailable_error", anything else "server_error".
 * Static string. */
const char *srv_error_type_for_status(int status);

/* Fills err (if not NULL): status, type (NULL = srv_error_type_for_status(status)), param (NULL =
 * none), code "" and the printf-style message. Returns the FQ_E* code a parser propagates:
 * FQ_ENOTFOUND for 404, FQ_ERANGE for 413, FQ_EUNSUP for 501, FQ_EIO for other 5xx, FQ_EINVAL
 * otherwise. */
int srv_error_set(srv_error *err, int status, const char *type, const char *param, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));

/* Sets err->code (NULL or "" = none); err NULL is a no-op. */
void srv_error_set_code(srv_error *err, const char *code);

/* Clears err to "no error" (status 0, empty strings). */
void srv_error_clear(srv_error *err);

/* err as the JSON body (srv_error_json of its fields); new reference, NULL when out of memory. */
json_t *srv_error_to_json(const srv_error *err);

/* A JSON string of len bytes, invalid UTF-8 repaired first (jansson refuses it); NULL s gives "";
 * NULL when out of memory. Any thread. */
json_t *srv_json_string_lossy(const char *s, size_t len);

#endif /* SRV_ERRORS_H */

/* srv_http.h — the HTTP layer: routes, request bodies and limits, API key, request ids, JSON and
 * error responses, and a streaming writer for SSE.
 *
 * srv_http turns MHD's callbacks (plugged into an srv_loop through srv_http_hooks) into one call
 * per request of a route's handler, once the whole body has arrived. Before the handler runs it
 * answers by itself: 401 (API key configured, missing or wrong; /health, /ready and /metrics stay
 * open), 404 (no route for the path), 405 + Allow (the path exists with other methods), 413 (body
 * over max_body_bytes). Every response carries X-Request-Id: the client's (when it is 1..128
 * characters of [A-Za-z0-9._:-]) or a generated one. Error bodies are OpenAI error objects
 * (srv_errors.h).
 *
 * Responding. A handler (loop thread, never blocking) does exactly one of, now or later:
 *   - srv_req_respond / _json / _error: a whole response;
 *   - srv_req_stream: a chunked response whose data comes from srv_stream_write (loop thread) or
 *     srv_stream_post (any thread, through the loop's queue), closed by srv_stream_end /
 *     srv_stream_post_end.
 * If it returns without either, the request is deferred: the connection is suspended and the
 * srv_req stays valid until the producer responds (from a loop-thread message). Whoever started
 * a deferred request or a stream (the "producer") must finish it exactly once — respond, or end
 * the stream — even after the client left: that is what frees the request. When the connection
 * ends any other way than a completed response (client gone, timeout, shutdown), the request's
 * on_close callback runs so the engine can abort; later writes and responses are dropped.
 *
 * Memory: a srv_req and everything it holds (body, headers, buffered stream data) belongs to the
 * srv_http; it is freed once both MHD is done with the connection's request and the producer has
 * finished. srv_http_destroy frees whatever is left.
 */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "srv_errors.h"
#include "srv_loop.h"

typedef struct srv_http srv_http;
typedef struct srv_req srv_req;
typedef struct srv_stream srv_stream;

/* A route handler: runs on the loop thread once the request body is complete; must not block. */
typedef void (*srv_handler_fn)(srv_req *req, void *ctx);

/* Runs on the loop thread when the request's connection ends before its response completed
 * (client disconnect, timeout, daemon shutdown; while a deferred request is suspended MHD cannot
 * see a disconnect: with srv_http_attach_loop its socket is watched and a client that closed is
 * reported at once, else when the daemon stops). req is valid during the call and,
 * while a producer holds it (deferred, streaming), until the producer finishes. */
typedef void (*srv_close_fn)(srv_req *req, void *ctx);

typedef struct srv_http_params {
    size_t max_body_bytes;     /* larger request bodies get 413; 0 = SRV_HTTP_DEFAULT_MAX_BODY */
    const char *api_key;       /* required as "Authorization: Bearer KEY"; NULL or "" = no auth;
                                  copied by srv_http_create */
    size_t stream_block_bytes; /* most bytes handed to MHD per stream read; 0 = 16 KiB */
} srv_http_params;

#define SRV_HTTP_DEFAULT_MAX_BODY ((size_t)8 << 20) /* 8 MiB */

/* Defaults: max_body_bytes 8 MiB, no API key, stream_block_bytes 16 KiB. Any thread. */
srv_http_params srv_http_default_params(void);

/* Creates the HTTP layer (no routes yet). Returns NULL with a message in err on failure. Any
 * thread. */
srv_http *srv_http_create(const srv_http_params *p, char *err, size_t err_len);

/* Frees the route table and every request still alive (logged: a producer did not finish). Call
 * after srv_loop_destroy of the loop these hooks were given to (whose thread then owns h). NULL is
 * a no-op. */
void srv_http_destroy(srv_http *h);

/* Adds a route: exact method ("GET", "POST", ...) and exact path ("/v1/completions"; no query
 * string). method and path are copied; ctx is borrowed and passed to fn. Returns FQ_EINVAL for a
 * duplicate or malformed route. Before the loop runs; any thread. */
int srv_http_route(srv_http *h, const char *method, const char *path, srv_handler_fn fn, void *ctx,
                   char *err, size_t err_len);

/* The hooks to give srv_loop_create; h must outlive that loop. Any thread. */
srv_loop_hooks srv_http_hooks(srv_http *h);

/* Lets h watch the sockets of deferred requests on loop's uv loop, so that a client that leaves
 * while its request waits for the producer is reported (on_close) at once rather than at shutdown.
 * Call once, after srv_loop_create and before srv_loop_run; NULL turns it off. Loop thread (or
 * the creating thread before srv_loop_run). */
void srv_http_attach_loop(srv_http *h, srv_loop *loop);

/* Requests currently in flight (between the headers and the end of the response). Loop thread. */
unsigned srv_http_n_inflight(const srv_http *h);

/* ---- requests (all loop thread; valid until the request is freed, see above) ---- */

const char *srv_req_method(const srv_req *req); /* "GET", ...; borrowed */
const char *srv_req_path(const srv_req *req);   /* without the query string; borrowed */
/* The request id echoed as X-Request-Id (the client's or generated); borrowed. */
const char *srv_req_id(const srv_req *req);
/* The body (NUL-terminated, so JSON parsers may take it as a string; len excludes the NUL) —
 * "" when there was none. Borrowed. */
const char *srv_req_body(const srv_req *req, size_t *len);
/* A request header (case-insensitive name) or query argument; NULL when absent or once the
 * connection has ended. Borrowed: valid until the handler returns. */
const char *srv_req_header(const srv_req *req, const char *name);
const char *srv_req_query(const srv_req *req, const char *name);
/* True once the connection ended (on_close ran or the response completed). */
bool srv_req_closed(const srv_req *req);

/* Sets the callback for an early end of the connection (replaces any earlier one). ctx is
 * borrowed. */
void srv_req_on_close(srv_req *req, srv_close_fn fn, void *ctx);

/* Adds a response header (copied), e.g. Retry-After; before responding. FQ_ENOMEM or 0. */
int srv_req_add_header(srv_req *req, const char *name, const char *value);

/* Sends a whole response; body copied. After the connection ended: dropped, returns FQ_EIO (the
 * request is still finished). FQ_EINVAL when the request was already answered. */
int srv_req_respond(srv_req *req, unsigned status, const char *content_type, const void *body,
                    size_t len);
/* srv_req_respond with application/json and a NUL-terminated text. */
int srv_req_respond_json(srv_req *req, unsigned status, const char *json);
/* An OpenAI error object with err->status (500 when 0). */
int srv_req_respond_error(srv_req *req, const srv_error *err);
/* Builds the error with srv_error_set (type from the status, code may be NULL) and sends it. */
int srv_req_respond_errorf(srv_req *req, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Starts a chunked response (e.g. "text/event-stream": Cache-Control: no-cache is added). The
 * request becomes a stream owned by its producer until srv_stream_end / srv_stream_post_end.
 * NULL when out of memory or the request was already answered (then the request is not
 * changed). */
srv_stream *srv_req_stream(srv_req *req, unsigned status, const char *content_type);

/* ---- streams ---- */

/* The stream's request (for its id, on_close, ...). Loop thread. */
srv_req *srv_stream_req(srv_stream *st);

/* Appends data (copied) and wakes the connection. FQ_EIO once the connection ended (data
 * dropped; keep going to srv_stream_end), FQ_ENOMEM, FQ_EINVAL after the end. Loop thread. */
int srv_stream_write(srv_stream *st, const void *data, size_t len);

/* Bytes written and not yet handed to the socket (for back-pressure). Loop thread. */
size_t srv_stream_buffered_bytes(const srv_stream *st);

/* Ends the stream (the response completes once the buffer drained) and finishes the producer's
 * part: st must not be used afterwards. Loop thread. */
void srv_stream_end(srv_stream *st);

/* srv_stream_write from any thread: copies data into a message for the loop thread. FQ_ENOMEM
 * or 0 (delivery errors such as a closed connection are not reported back). Any thread. */
int srv_stream_post(srv_loop *loop, srv_stream *st, const void *data, size_t len);

/* srv_stream_end from any thread (never fails: its message is allocated with the stream). st must
 * not be used afterwards. Any thread. */
void srv_stream_post_end(srv_loop *loop, srv_stream *st);

#endif /* SRV_HTTP_H */

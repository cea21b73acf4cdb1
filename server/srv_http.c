/* srv_http.c — routes, bodies, limits, auth, request ids and the streaming writer over MHD.
 *
 * Each request is one srv_req, created at MHD's first access-handler call (headers parsed) and
 * kept in *req_cls. Checks that need only the headers (API key, route, Content-Length) run then;
 * their error is answered once the body has been read (discarded), so keep-alive survives and no
 * unread data turns the close into a reset — except an announced body over the limit, which is
 * refused at once (MHD then stops reading). Responses are queued only from the access handler:
 * a response made later (deferred request, stream start) resumes the suspended connection and
 * MHD calls the handler again. A stream is an MHD callback response whose reader hands out the
 * buffered bytes and suspends the connection when the buffer is empty; a write resumes it.
 *
 * A srv_req is freed when MHD has completed the request (completion callback) and no producer
 * holds it (deferred request answered, stream ended). Both events happen on the loop thread.
 */
#include "srv_http.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "fq_base.h"

#define HTTP_ID_MAX        128
#define HTTP_DEFAULT_BLOCK ((size_t)16 << 10)

typedef struct http_route {
    char *method;
    char *path;
    srv_handler_fn fn;
    void *ctx;
} http_route;

typedef struct http_header {
    struct http_header *next;
    char *name;
    char *value;
} http_header;

/* A message carrying stream data to the loop thread. */
typedef struct stream_data_msg {
    srv_msg base;
    srv_stream *st;
    size_t len;
    char data[];
} stream_data_msg;

typedef struct stream_end_msg {
    srv_msg base;
    srv_stream *st;
} stream_end_msg;

struct srv_stream {
    srv_req *req;
    char *buf; /* pending bytes are buf[head, head + len) */
    size_t head, len, cap;
    bool ended;             /* producer called end */
    stream_end_msg end_msg; /* preallocated so srv_stream_post_end cannot fail */
};

struct srv_req {
    srv_http *h;
    srv_req *prev, *next;        /* h->reqs: every live request */
    struct MHD_Connection *conn; /* NULL once MHD completed the request */
    char method[16];
    char *path;
    char id[HTTP_ID_MAX + 1];

    char *body; /* NUL-terminated, body_len bytes */
    size_t body_len, body_cap;
    size_t discarded; /* body bytes read and dropped (error pending) */

    const http_route *route; /* the matched route (routes do not move once serving) */
    srv_error pending;       /* status != 0: answer this once the body is in */
    char allow[128];         /* Allow header for a pending 405 */

    struct MHD_Response *response; /* made, not yet queued */
    unsigned status;
    http_header *headers; /* extra response headers */

    srv_close_fn on_close;
    void *on_close_ctx;

    uv_poll_t *watch; /* deferred and suspended: watches the socket for a disconnect */
    int watch_fd;

    bool mhd_alive;  /* MHD still holds the request (until the completion callback) */
    bool producer;   /* deferred or streaming: the producer has not finished */
    bool suspended;  /* connection suspended by us */
    bool dispatched; /* handler ran (or the pending error was answered) */
    bool answered;   /* a response or stream was made */
    bool closed;     /* the connection's request ended */
    bool is_stream;
    bool failed; /* no response could be made (out of memory): close the connection */
    srv_stream stream;
};

struct srv_http {
    http_route *routes;
    size_t n_routes, cap_routes;
    char *api_key; /* NULL = open */
    size_t max_body;
    size_t block;
    srv_req *reqs; /* every live request */
    unsigned n_inflight;
    bool stopping;
    uv_loop_t *uv;     /* srv_http_attach_loop: watches deferred requests' sockets; NULL = off */
    uint64_t id_state; /* request id generator (splitmix64), loop thread */
};

/* ---------------------------------------------------------------------------------------------
 * helpers */

static char *http_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static uint64_t http_next_u64(srv_http *h)
{
    uint64_t z = (h->id_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static bool http_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == ':';
        if (!ok || n >= HTTP_ID_MAX)
            return false;
    }
    return n > 0;
}

static bool http_path_is_open(const char *path)
{
    return strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0 ||
           strcmp(path, "/metrics") == 0;
}

/* Constant-time comparison of the presented key with the configured one. */
static bool http_key_ok(const srv_http *h, const char *auth)
{
    if (!auth)
        return false;
    if (strncasecmp(auth, "Bearer", 6) != 0 || (auth[6] != ' ' && auth[6] != '\t'))
        return false;
    const char *k = auth + 6;
    while (*k == ' ' || *k == '\t')
        k++;
    size_t n = strlen(k);
    while (n > 0 && (k[n - 1] == ' ' || k[n - 1] == '\t'))
        n--;
    size_t want = strlen(h->api_key);
    unsigned char diff = (unsigned char)(n != want);
    for (size_t i = 0; i < want; i++)
        diff |= (unsigned char)((i < n ? (unsigned char)k[i] : 0) ^ (unsigned char)h->api_key[i]);
    return diff == 0;
}

/* ---------------------------------------------------------------------------------------------
 * lifecycle of a request */

static void req_unwatch(srv_req *req);

static void req_free(srv_req *req)
{
    srv_http *h = req->h;
    req_unwatch(req);
    if (req->prev)
        req->prev->next = req->next;
    else
        h->reqs = req->next;
    if (req->next)
        req->next->prev = req->prev;
    if (req->response)
        MHD_destroy_response(req->response);
    for (http_header *hd = req->headers; hd;) {
        http_header *next = hd->next;
        free(hd->name);
        free(hd->value);
        free(hd);
        hd = next;
    }
    free(req->stream.buf);
    free(req->body);
    free(req->path);
    free(req);
}

static void req_watch_closed(uv_handle_t *hd)
{
    free(hd);
}

/* Stops watching the socket (the uv_poll_t is freed by its close callback). */
static void req_unwatch(srv_req *req)
{
    if (!req->watch)
        return;
    uv_poll_stop(req->watch);
    req->watch->data = NULL;
    uv_close((uv_handle_t *)req->watch, req_watch_closed);
    req->watch = NULL;
}

static void req_maybe_free(srv_req *req)
{
    if (!req->mhd_alive && !req->producer)
        req_free(req);
}

static void req_resume(srv_req *req)
{
    req_unwatch(req);
    if (req->suspended && req->conn) {
        req->suspended = false;
        MHD_resume_connection(req->conn);
    }
}

/* The socket of a suspended deferred request woke up: a peer that is gone (orderly close or a
 * socket error) ends the request now — on_close runs and the connection is resumed so that MHD
 * closes it; readable data (a pipelined request) only ends the watch, to avoid a busy loop. */
static void req_watch_cb(uv_poll_t *p, int status, int events)
{
    (void)events;
    srv_req *req = p->data;
    if (!req)
        return;
    char b;
    ssize_t n = recv(req->watch_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    bool gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    if (!gone) {
        if (n > 0 || status < 0)
            req_unwatch(req);
        return;
    }
    req_unwatch(req);
    fq_log(FQ_LOG_DEBUG, "http: %s %s [%s] client gone while deferred", req->method, req->path,
           req->id);
    req->closed = true;
    if (req->on_close) {
        /* The callback may answer (dropped): mhd_alive holds req through it. */
        srv_close_fn fn = req->on_close;
        req->on_close = NULL;
        fn(req, req->on_close_ctx);
    }
    req_resume(req); /* the access handler then closes the connection */
}

/* Starts watching a deferred request's socket (best effort: without it, a disconnect is seen
 * at shutdown). */
static void req_watch(srv_req *req)
{
    srv_http *h = req->h;
    if (!h->uv || req->watch || !req->conn)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || ci->connect_fd < 0)
        return;
    uv_poll_t *p = malloc(sizeof *p);
    if (!p)
        return;
    if (uv_poll_init(h->uv, p, ci->connect_fd) < 0) {
        free(p);
        return;
    }
    p->data = req;
    req->watch = p;
    req->watch_fd = ci->connect_fd;
    uv_unref((uv_handle_t *)p); /* never holds the loop up at shutdown */
    if (uv_poll_start(p, UV_READABLE | UV_DISCONNECT, req_watch_cb) < 0)
        req_unwatch(req);
}

static srv_req *req_create(srv_http *h, struct MHD_Connection *conn, const char *url,
                           const char *method)
{
    srv_req *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->path = http_strdup(url ? url : "/");
    req->body = malloc(1);
    if (!req->path || !req->body) {
        free(req->path);
        free(req->body);
        free(req);
        return NULL;
    }
    req->body[0] = '\0';
    req->body_cap = 1;
    req->h = h;
    req->conn = conn;
    req->mhd_alive = true;
    req->stream.req = req;
    snprintf(req->method, sizeof req->method, "%s", method ? method : "");
    const char *cid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (cid && http_id_valid(cid))
        snprintf(req->id, sizeof req->id, "%s", cid);
    else
        snprintf(req->id, sizeof req->id, "%016llx%016llx", (unsigned long long)http_next_u64(h),
                 (unsigned long long)http_next_u64(h));
    req->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = req;
    h->reqs = req;
    h->n_inflight++;
    return req;
}

/* The checks that need only the headers; fills req->pending. */
static const http_route *req_precheck(srv_req *req)
{
    srv_http *h = req->h;
    if (h->api_key && !http_path_is_open(req->path) &&
        !http_key_ok(h, MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization"))) {
        srv_error_set(&req->pending, 401, NULL, NULL,
                      "Incorrect or missing API key: send \"Authorization: Bearer <key>\"");
        srv_error_set_code(&req->pending, "invalid_api_key");
        return NULL;
    }
    const http_route *found = NULL;
    size_t allow_len = 0;
    req->allow[0] = '\0';
    for (size_t i = 0; i < h->n_routes; i++) {
        const http_route *r = &h->routes[i];
        if (strcmp(r->path, req->path) != 0)
            continue;
        if (strcmp(r->method, req->method) == 0)
            found = r;
        int w = snprintf(req->allow + allow_len, sizeof req->allow - allow_len, "%s%s",
                         allow_len ? ", " : "", r->method);
        if (w > 0 && (size_t)w < sizeof req->allow - allow_len)
            allow_len += (size_t)w;
    }
    if (!found) {
        if (allow_len) {
            srv_error_set(&req->pending, 405, NULL, NULL, "Method %s not allowed on %s",
                          req->method, req->path);
            srv_error_set_code(&req->pending, "method_not_allowed");
        } else {
            srv_error_set(&req->pending, 404, NULL, NULL, "No such endpoint: %s", req->path);
            srv_error_set_code(&req->pending, "not_found");
        }
        return NULL;
    }
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end = NULL;
        unsigned long long v = strtoull(cl, &end, 10);
        if (end != cl && v > h->max_body) {
            srv_error_set(&req->pending, 413, NULL, NULL,
                          "Request body of %llu bytes exceeds the limit of %zu bytes", v,
                          h->max_body);
            srv_error_set_code(&req->pending, "request_too_large");
            return NULL;
        }
    }
    return found;
}

/* ---------------------------------------------------------------------------------------------
 * responses */

static int req_add_headers(srv_req *req, struct MHD_Response *resp, const char *content_type)
{
    if (content_type &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES)
        return FQ_ENOMEM;
    if (MHD_add_response_header(resp, "X-Request-Id", req->id) != MHD_YES)
        return FQ_ENOMEM;
    for (const http_header *hd = req->headers; hd; hd = hd->next)
        if (MHD_add_response_header(resp, hd->name, hd->value) != MHD_YES)
            return FQ_ENOMEM;
    return 0;
}

/* Stores a finished response for the access handler to queue (resuming a suspended
 * connection). Takes resp. */
static int req_set_response(srv_req *req, unsigned status, struct MHD_Response *resp)
{
    req->response = resp;
    req->status = status;
    req->answered = true;
    req_resume(req);
    return 0;
}

/* The producer's answer: checks state, then finishes the producer's part. Returns 1 when the
 * response should really be made, 0 when dropped (FQ_EIO in *rc), or FQ_EINVAL. */
static int req_begin_answer(srv_req *req, int *rc)
{
    if (req->answered && !req->closed)
        return FQ_EINVAL;
    if (req->closed || req->answered) {
        *rc = FQ_EIO;
        return 0;
    }
    return 1;
}

static void req_end_producer(srv_req *req)
{
    if (req->producer && !req->is_stream) {
        req->producer = false;
        req_maybe_free(req);
    }
}

int srv_req_respond(srv_req *req, unsigned status, const char *content_type, const void *body,
                    size_t len)
{
    int rc = 0;
    int go = req_begin_answer(req, &rc);
    if (go < 0)
        return go;
    if (go == 0) {
        req_end_producer(req);
        return rc;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(len ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (!resp || req_add_headers(req, resp, content_type) < 0) {
        if (resp)
            MHD_destroy_response(resp);
        /* Out of memory: a bare 500 without extras is the last resort. */
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = 500;
        rc = FQ_ENOMEM;
    }
    if (resp) {
        req_set_response(req, status, resp);
    } else {
        req->failed = true; /* the access handler closes the connection */
        req->answered = true;
        req_resume(req);
    }
    req_end_producer(req);
    return rc;
}

int srv_req_respond_json(srv_req *req, unsigned status, const char *json)
{
    return srv_req_respond(req, status, "application/json", json, strlen(json));
}

int srv_req_respond_error(srv_req *req, const srv_error *err)
{
    unsigned status = err->status > 0 ? (unsigned)err->status : 500;
    json_t *j = srv_error_to_json(err);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    int rc = srv_req_respond_json(
        req, status,
        text ? text
             : "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
               "\"param\":null,\"code\":null}}");
    free(text);
    return rc;
}

int srv_req_respond_errorf(srv_req *req, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_error e;
    srv_error_set(&e, (int)status, NULL, NULL, "%s", msg);
    srv_error_set_code(&e, code);
    return srv_req_respond_error(req, &e);
}

int srv_req_add_header(srv_req *req, const char *name, const char *value)
{
    http_header *hd = calloc(1, sizeof *hd);
    if (!hd)
        return FQ_ENOMEM;
    hd->name = http_strdup(name);
    hd->value = http_strdup(value);
    if (!hd->name || !hd->value) {
        free(hd->name);
        free(hd->value);
        free(hd);
        return FQ_ENOMEM;
    }
    hd->next = req->headers;
    req->headers = hd;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * streams */

/* MHD's reader for a stream response: buffered bytes, else end, else suspend until a write. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    srv_req *req = cls;
    srv_stream *st = &req->stream;
    if (st->len > 0) {
        size_t n = st->len < max ? st->len : max;
        memcpy(buf, st->buf + st->head, n);
        st->head += n;
        st->len -= n;
        if (st->len == 0)
            st->head = 0;
        return (ssize_t)n;
    }
    if (st->ended)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (req->h->stopping || !req->conn)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    return 0;
}

srv_stream *srv_req_stream(srv_req *req, unsigned status, const char *content_type)
{
    if (req->answered || req->closed)
        return NULL;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, req->h->block,
                                                                  stream_reader, req, NULL);
    if (!resp)
        return NULL;
    if (req_add_headers(req, resp, content_type) < 0 ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") != MHD_YES) {
        MHD_destroy_response(resp);
        return NULL;
    }
    req->is_stream = true;
    req->producer = true;
    req_set_response(req, status, resp);
    return &req->stream;
}

srv_req *srv_stream_req(srv_stream *st)
{
    return st->req;
}

int srv_stream_write(srv_stream *st, const void *data, size_t len)
{
    srv_req *req = st->req;
    if (st->ended)
        return FQ_EINVAL;
    if (req->closed)
        return FQ_EIO;
    if (len == 0)
        return 0;
    if (st->head > 0 && st->head + st->len + len > st->cap) {
        memmove(st->buf, st->buf + st->head, st->len);
        st->head = 0;
    }
    if (st->len + len > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + len)
            cap *= 2;
        char *nb = realloc(st->buf, cap);
        if (!nb)
            return FQ_ENOMEM;
        st->buf = nb;
        st->cap = cap;
    }
    memcpy(st->buf + st->head + st->len, data, len);
    st->len += len;
    req_resume(req);
    return 0;
}

size_t srv_stream_buffered_bytes(const srv_stream *st)
{
    return st->len;
}

void srv_stream_end(srv_stream *st)
{
    srv_req *req = st->req;
    FQ_ASSERT(!st->ended);
    st->ended = true;
    req_resume(req);
    req->producer = false;
    req_maybe_free(req);
}

static void stream_data_run(srv_msg *msg, srv_loop *loop)
{
    (void)loop;
    stream_data_msg *m = (stream_data_msg *)msg;
    (void)srv_stream_write(m->st, m->data, m->len); /* a closed connection drops it */
    free(m);
}

int srv_stream_post(srv_loop *loop, srv_stream *st, const void *data, size_t len)
{
    stream_data_msg *m = malloc(sizeof *m + len);
    if (!m)
        return FQ_ENOMEM;
    m->base.fn = stream_data_run;
    m->st = st;
    m->len = len;
    if (len)
        memcpy(m->data, data, len);
    srv_loop_post(loop, &m->base);
    return 0;
}

static void stream_end_run(srv_msg *msg, srv_loop *loop)
{
    (void)loop;
    stream_end_msg *m = (stream_end_msg *)msg;
    srv_stream_end(m->st); /* may free the request, and this message with it */
}

void srv_stream_post_end(srv_loop *loop, srv_stream *st)
{
    st->end_msg.base.fn = stream_end_run;
    st->end_msg.st = st;
    srv_loop_post(loop, &st->end_msg.base);
}

/* ---------------------------------------------------------------------------------------------
 * MHD callbacks */

static enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_size, void **req_cls)
{
    (void)version;
    srv_http *h = cls;
    srv_req *req = *req_cls;
    if (!req) {
        req = req_create(h, conn, url, method);
        if (!req)
            return MHD_NO;
        *req_cls = req;
        req->route = req_precheck(req);
        if (req->pending.status == 413) {
            /* An announced body over the limit: refuse now, without reading it. */
            req->dispatched = true;
            srv_req_respond_error(req, &req->pending);
            goto queue;
        }
        return MHD_YES;
    }

    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->pending.status) {
            req->discarded += n;
            /* A client that keeps sending after an error: stop reading and close. */
            return req->discarded > 2 * h->max_body + ((size_t)1 << 20) ? MHD_NO : MHD_YES;
        }
        if (n > h->max_body - req->body_len) {
            srv_error_set(&req->pending, 413, NULL, NULL,
                          "Request body exceeds the limit of %zu bytes", h->max_body);
            srv_error_set_code(&req->pending, "request_too_large");
            req->discarded = req->body_len + n;
            free(req->body);
            req->body = NULL;
            req->body_len = req->body_cap = 0;
            return MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap < 256 ? 256 : req->body_cap;
            while (cap < req->body_len + n + 1)
                cap *= 2;
            char *nb = realloc(req->body, cap);
            if (!nb)
                return MHD_NO;
            req->body = nb;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload_data, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }

    if (!req->dispatched) {
        req->dispatched = true;
        if (req->pending.status) {
            if (req->pending.status == 405 &&
                srv_req_add_header(req, MHD_HTTP_HEADER_ALLOW, req->allow) < 0)
                return MHD_NO;
            srv_req_respond_error(req, &req->pending);
        } else if (h->stopping) {
            srv_req_respond_errorf(req, 503, "shutting_down", "The server is shutting down");
        } else {
            req->route->fn(req, req->route->ctx);
            if (!req->answered)
                req->producer = true; /* deferred: the producer answers later */
        }
    }

queue:
    if (req->failed)
        return MHD_NO;
    if (req->response) {
        struct MHD_Response *resp = req->response;
        req->response = NULL;
        enum MHD_Result r = MHD_queue_response(conn, req->status, resp);
        MHD_destroy_response(resp);
        return r;
    }
    if (h->stopping || req->closed)
        return MHD_NO;     /* a deferred request at shutdown or whose client left: close it */
    req->suspended = true; /* deferred: wait for the producer's answer */
    MHD_suspend_connection(conn);
    req_watch(req);
    return MHD_YES;
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    srv_http *h = cls;
    srv_req *req = *req_cls;
    if (!req)
        return;
    *req_cls = NULL;
    req_unwatch(req);
    req->conn = NULL;
    req->suspended = false;
    req->closed = true;
    req->mhd_alive = false;
    h->n_inflight--;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        fq_log(FQ_LOG_DEBUG, "http: %s %s [%s] ended early (code %d)", req->method, req->path,
               req->id, (int)toe);
        if (req->on_close) {
            /* The callback may end the stream; holding mhd_alive keeps req alive through it. */
            srv_close_fn fn = req->on_close;
            req->on_close = NULL;
            req->mhd_alive = true; /* hold across the callback */
            fn(req, req->on_close_ctx);
            req->mhd_alive = false;
        }
    }
    req_maybe_free(req);
}

static unsigned http_hook_inflight(void *cls)
{
    return srv_http_n_inflight(cls);
}

static void http_hook_stop(void *cls)
{
    srv_http *h = cls;
    h->stopping = true;
    bool unwatched = false;
    for (srv_req *r = h->reqs; r; r = r->next) {
        unwatched |= r->watch != NULL;
        req_resume(r);
    }
    /* uv_run has returned by now (the watches are unreferenced): run their close callbacks. */
    if (unwatched)
        uv_run(h->uv, UV_RUN_NOWAIT);
}

/* ---------------------------------------------------------------------------------------------
 * srv_http */

srv_http_params srv_http_default_params(void)
{
    return (srv_http_params){
        .max_body_bytes = SRV_HTTP_DEFAULT_MAX_BODY,
        .api_key = NULL,
        .stream_block_bytes = HTTP_DEFAULT_BLOCK,
    };
}

srv_http *srv_http_create(const srv_http_params *p, char *err, size_t err_len)
{
    srv_http_params d = srv_http_default_params();
    if (!p)
        p = &d;
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        fq_err(err, err_len, FQ_ENOMEM, "srv_http_create: out of memory");
        return NULL;
    }
    h->max_body = p->max_body_bytes ? p->max_body_bytes : SRV_HTTP_DEFAULT_MAX_BODY;
    h->block = p->stream_block_bytes ? p->stream_block_bytes : HTTP_DEFAULT_BLOCK;
    if (p->api_key && p->api_key[0]) {
        h->api_key = http_strdup(p->api_key);
        if (!h->api_key) {
            free(h);
            fq_err(err, err_len, FQ_ENOMEM, "srv_http_create: out of memory");
            return NULL;
        }
    }
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uintptr_t)h;
    }
    h->id_state = seed;
    return h;
}

void srv_http_destroy(srv_http *h)
{
    if (!h)
        return;
    size_t left = 0;
    while (h->reqs) {
        left++;
        req_free(h->reqs);
    }
    if (left)
        fq_log(FQ_LOG_WARN, "http: %zu request(s) freed at shutdown without their producer's end",
               left);
    for (size_t i = 0; i < h->n_routes; i++) {
        free(h->routes[i].method);
        free(h->routes[i].path);
    }
    free(h->routes);
    free(h->api_key);
    free(h);
}

int srv_http_route(srv_http *h, const char *method, const char *path, srv_handler_fn fn, void *ctx,
                   char *err, size_t err_len)
{
    if (!method || !method[0] || strlen(method) >= 16 || !path || path[0] != '/' || !fn)
        return fq_err(err, err_len, FQ_EINVAL, "srv_http_route: bad route %s %s",
                      method ? method : "(null)", path ? path : "(null)");
    for (size_t i = 0; i < h->n_routes; i++)
        if (strcmp(h->routes[i].method, method) == 0 && strcmp(h->routes[i].path, path) == 0)
            return fq_err(err, err_len, FQ_EINVAL, "srv_http_route: %s %s registered twice", method,
                          path);
    if (h->n_routes == h->cap_routes) {
        size_t cap = h->cap_routes ? 2 * h->cap_routes : 16;
        http_route *nr = realloc(h->routes, cap * sizeof *nr);
        if (!nr)
            return fq_err(err, err_len, FQ_ENOMEM, "srv_http_route: out of memory");
        h->routes = nr;
        h->cap_routes = cap;
    }
    http_route r = {http_strdup(method), http_strdup(path), fn, ctx};
    if (!r.method || !r.path) {
        free(r.method);
        free(r.path);
        return fq_err(err, err_len, FQ_ENOMEM, "srv_http_route: out of memory");
    }
    h->routes[h->n_routes++] = r;
    return 0;
}

srv_loop_hooks srv_http_hooks(srv_http *h)
{
    return (srv_loop_hooks){
        .access = http_access,
        .completed = http_completed,
        .n_inflight = http_hook_inflight,
        .on_stop = http_hook_stop,
        .cls = h,
    };
}

void srv_http_attach_loop(srv_http *h, srv_loop *loop)
{
    h->uv = loop ? srv_loop_uv(loop) : NULL;
}

unsigned srv_http_n_inflight(const srv_http *h)
{
    return h->n_inflight;
}

/* ---------------------------------------------------------------------------------------------
 * request accessors */

const char *srv_req_method(const srv_req *req)
{
    return req->method;
}

const char *srv_req_path(const srv_req *req)
{
    return req->path;
}

const char *srv_req_id(const srv_req *req)
{
    return req->id;
}

const char *srv_req_body(const srv_req *req, size_t *len)
{
    if (len)
        *len = req->body ? req->body_len : 0;
    return req->body ? req->body : "";
}

const char *srv_req_header(const srv_req *req, const char *name)
{
    return req->conn ? MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name) : NULL;
}

const char *srv_req_query(const srv_req *req, const char *name)
{
    return req->conn ? MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name) : NULL;
}

bool srv_req_closed(const srv_req *req)
{
    return req->closed;
}

void srv_req_on_close(srv_req *req, srv_close_fn fn, void *ctx)
{
    req->on_close = fn;
    req->on_close_ctx = ctx;
}

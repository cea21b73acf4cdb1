/* test_srv_http.c — the HTTP core on loopback: routes, limits, auth, request ids, streaming,
 * concurrency, client disconnects and a draining shutdown, driven by a tiny socket client.
 *
 * Each test starts a daemon (srv_http on srv_loop) on 127.0.0.1 with an ephemeral port in a
 * server thread. Helper threads stand in for the engine: they post stream chunks and deferred
 * answers through the loop's queue. Every socket has a receive/send timeout and every wait a
 * deadline, so a bug fails a test instead of hanging it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "fq_base.h"
#include "srv_http.h"
#include "srv_loop.h"

#define TEST_MAX_BODY 1024
#define TEST_KEY      "sekret-key"
#define IO_TIMEOUT_S  5

/* ---------------------------------------------------------------------------------------------
 * fixture: a daemon in a server thread plus the "engine" helper threads it spawns */

typedef struct fixture fixture;

/* A helper thread: a stream producer or a deferred answer. */
typedef struct helper {
    struct helper *next;
    fixture *fx;
    pthread_t thread;
    srv_stream *st; /* stream producers */
    srv_req *req;   /* deferred answers */
    int n_chunks;
    int interval_ms;   /* < 0: gated, wait for the client to have seen each event */
    atomic_bool abort; /* set by on_close */
} helper;

struct fixture {
    srv_http *http;
    srv_loop *loop;
    pthread_t server;
    bool server_joined; /* a test already stopped and joined it */
    pthread_t loop_thread;
    uint16_t port;
    int run_rc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    helper *helpers;   /* guarded by mu */
    int n_closed;      /* on_close calls; guarded by mu */
    int n_helpers;     /* helpers started; guarded by mu */
    int gate;          /* /stream_gated: events the client has seen; guarded by mu */
    bool gate_timeout; /* a gated producer waited in vain; guarded by mu */
    bool msg_on_loop_thread;
    int n_msgs;          /* guarded by mu */
    int n_held;          /* /hold requests whose handler ran; guarded by mu */
    int hold_respond_rc; /* what the late answer to a gone /hold client returned; guarded by mu */
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void helper_add(fixture *fx, helper *hp)
{
    pthread_mutex_lock(&fx->mu);
    hp->next = fx->helpers;
    fx->helpers = hp;
    fx->n_helpers++;
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
}

/* Waits (at most 10 s) until the handlers have started n helpers: the requests are in flight. */
static int wait_helpers(fixture *fx, int n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&fx->mu);
    while (fx->n_helpers < n)
        if (pthread_cond_timedwait(&fx->cv, &fx->mu, &dl) == ETIMEDOUT)
            break;
    int got = fx->n_helpers;
    pthread_mutex_unlock(&fx->mu);
    return got;
}

static void on_stream_close(srv_req *req, void *ctx)
{
    (void)req;
    helper *hp = ctx;
    atomic_store(&hp->abort, true);
    pthread_mutex_lock(&hp->fx->mu);
    hp->fx->n_closed++;
    pthread_cond_broadcast(&hp->fx->cv);
    pthread_mutex_unlock(&hp->fx->mu);
}

/* The engine stand-in: n_chunks SSE events interval_ms apart, then the end. */
static void *producer_main(void *arg)
{
    helper *hp = arg;
    for (int i = 0; i < hp->n_chunks && !atomic_load(&hp->abort); i++) {
        char ev[64];
        int n = snprintf(ev, sizeof ev, "data: {\"i\":%d}\n\n", i);
        if (srv_stream_post(hp->fx->loop, hp->st, ev, (size_t)n) != 0)
            break;
        if (hp->interval_ms >= 0) {
            sleep_ms(hp->interval_ms);
            continue;
        }
        fixture *fx = hp->fx;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += IO_TIMEOUT_S;
        pthread_mutex_lock(&fx->mu);
        while (fx->gate <= i && !atomic_load(&hp->abort))
            if (pthread_cond_timedwait(&fx->cv, &fx->mu, &dl) == ETIMEDOUT) {
                fx->gate_timeout = true;
                break;
            }
        pthread_mutex_unlock(&fx->mu);
    }
    srv_stream_post(hp->fx->loop, hp->st, "data: [DONE]\n\n", 14);
    srv_stream_post_end(hp->fx->loop, hp->st);
    return NULL;
}

static void start_stream(srv_req *req, fixture *fx, int n_chunks, int interval_ms)
{
    helper *hp = calloc(1, sizeof *hp);
    if (!hp) {
        srv_req_respond_errorf(req, 500, NULL, "out of memory");
        return;
    }
    hp->fx = fx;
    hp->n_chunks = n_chunks;
    hp->interval_ms = interval_ms;
    atomic_init(&hp->abort, false);
    hp->st = srv_req_stream(req, 200, "text/event-stream");
    if (!hp->st) {
        free(hp);
        srv_req_respond_errorf(req, 500, NULL, "no stream");
        return;
    }
    srv_req_on_close(req, on_stream_close, hp);
    helper_add(fx, hp);
    pthread_create(&hp->thread, NULL, producer_main, hp);
}

static void h_health(srv_req *req, void *ctx)
{
    (void)ctx;
    srv_req_respond_json(req, 200, "{\"status\":\"ok\"}");
}

static void h_echo(srv_req *req, void *ctx)
{
    (void)ctx;
    size_t len = 0;
    const char *body = srv_req_body(req, &len);
    srv_req_respond(req, 200, "application/json", body, len);
}

static void h_stream(srv_req *req, void *ctx)
{
    start_stream(req, ctx, 5, 10);
}

static void h_stream_gated(srv_req *req, void *ctx)
{
    start_stream(req, ctx, 5, -1);
}

static void h_stream_long(srv_req *req, void *ctx)
{
    start_stream(req, ctx, 1000, 10); /* 10 s at most; a disconnect aborts it */
}

/* A deferred answer: the handler returns without responding; a helper thread answers 150 ms
 * later through a message. */
typedef struct answer_msg {
    srv_msg base;
    srv_req *req;
} answer_msg;

static void answer_run(srv_msg *msg, srv_loop *loop)
{
    (void)loop;
    answer_msg *m = (answer_msg *)msg;
    srv_req_respond_json(m->req, 200, "{\"slow\":true}");
    free(m);
}

static void *slow_main(void *arg)
{
    helper *hp = arg;
    sleep_ms(150);
    answer_msg *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->base.fn = answer_run;
    m->req = hp->req;
    srv_loop_post(hp->fx->loop, &m->base);
    return NULL;
}

static void h_slow(srv_req *req, void *ctx)
{
    fixture *fx = ctx;
    helper *hp = calloc(1, sizeof *hp);
    if (!hp) {
        srv_req_respond_errorf(req, 500, NULL, "out of memory");
        return;
    }
    hp->fx = fx;
    hp->req = req;
    helper_add(fx, hp);
    pthread_create(&hp->thread, NULL, slow_main, hp);
}

/* A deferred request held until its client leaves: on_close answers it (the answer is dropped),
 * which finishes the producer's part. */
static void on_hold_close(srv_req *req, void *ctx)
{
    fixture *fx = ctx;
    int rc = srv_req_respond_json(req, 200, "{\"late\":true}");
    pthread_mutex_lock(&fx->mu);
    fx->hold_respond_rc = rc;
    fx->n_closed++;
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
}

static void h_hold(srv_req *req, void *ctx)
{
    fixture *fx = ctx;
    srv_req_on_close(req, on_hold_close, fx);
    pthread_mutex_lock(&fx->mu);
    fx->n_held++;
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
}

static void *server_main(void *arg)
{
    fixture *fx = arg;
    fx->loop_thread = pthread_self();
    char err[256];
    fx->run_rc = srv_loop_run(fx->loop, err, sizeof err);
    return NULL;
}

static int fixture_start(void **state, const char *api_key, unsigned drain_ms, bool signals)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    pthread_mutex_init(&fx->mu, NULL);
    pthread_cond_init(&fx->cv, NULL);
    char err[256] = "";
    srv_http_params hp = srv_http_default_params();
    hp.max_body_bytes = TEST_MAX_BODY;
    hp.api_key = api_key;
    fx->http = srv_http_create(&hp, err, sizeof err);
    if (!fx->http)
        return -1;
    if (srv_http_route(fx->http, "GET", "/health", h_health, fx, err, sizeof err) ||
        srv_http_route(fx->http, "POST", "/echo", h_echo, fx, err, sizeof err) ||
        srv_http_route(fx->http, "GET", "/stream", h_stream, fx, err, sizeof err) ||
        srv_http_route(fx->http, "GET", "/stream_long", h_stream_long, fx, err, sizeof err) ||
        srv_http_route(fx->http, "GET", "/slow", h_slow, fx, err, sizeof err) ||
        srv_http_route(fx->http, "GET", "/stream_gated", h_stream_gated, fx, err, sizeof err) ||
        srv_http_route(fx->http, "GET", "/hold", h_hold, fx, err, sizeof err) ||
        srv_http_route(fx->http, "DELETE", "/echo", h_echo, fx, err, sizeof err))
        return -1;
    srv_loop_params lp = srv_loop_default_params();
    lp.host = "127.0.0.1";
    lp.port = 0;
    lp.drain_timeout_ms = drain_ms;
    lp.handle_signals = signals;
    lp.connection_timeout_s = 10;
    srv_loop_hooks hooks = srv_http_hooks(fx->http);
    fx->loop = srv_loop_create(&lp, &hooks, err, sizeof err);
    if (!fx->loop) {
        fprintf(stderr, "srv_loop_create: %s\n", err);
        return -1;
    }
    srv_http_attach_loop(fx->http, fx->loop);
    fx->port = srv_loop_port(fx->loop);
    if (fx->port == 0 || pthread_create(&fx->server, NULL, server_main, fx) != 0)
        return -1;
    *state = fx;
    return 0;
}

static int setup_open(void **state)
{
    return fixture_start(state, NULL, 10000, false);
}

static int setup_key(void **state)
{
    return fixture_start(state, TEST_KEY, 10000, false);
}

static int setup_short_drain(void **state)
{
    return fixture_start(state, NULL, 200, false);
}

static int setup_signals(void **state)
{
    return fixture_start(state, NULL, 10000, true);
}

/* Stops the daemon (a no-op when a test already did), joins everything, frees. */
static int teardown(void **state)
{
    fixture *fx = *state;
    srv_loop_stop(fx->loop);
    if (!fx->server_joined)
        pthread_join(fx->server, NULL);
    /* Helpers finish by themselves (aborted by on_close or done); their late posts wait in the
     * queue, which srv_loop_destroy runs before srv_http_destroy frees the requests. */
    pthread_mutex_lock(&fx->mu);
    helper *hp = fx->helpers;
    fx->helpers = NULL;
    pthread_mutex_unlock(&fx->mu);
    for (helper *h = hp; h; h = h->next)
        pthread_join(h->thread, NULL);
    srv_loop_destroy(fx->loop);
    srv_http_destroy(fx->http);
    while (hp) {
        helper *next = hp->next;
        free(hp);
        hp = next;
    }
    pthread_cond_destroy(&fx->cv);
    pthread_mutex_destroy(&fx->mu);
    free(fx);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * a tiny HTTP/1.1 client */

typedef struct http_resp {
    int status;
    char head[4096]; /* status line + headers */
    char *body;      /* de-chunked, NUL-terminated; caller frees via resp_free */
    size_t body_len;
    double t_first_body_s; /* when the first body byte arrived (streaming check) */
    double t_end_s;        /* when the connection closed */
} http_resp;

static void resp_free(http_resp *r)
{
    free(r->body);
    r->body = NULL;
}

static int tc_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int tc_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Decodes a chunked body in place; returns the decoded length or -1. */
static long tc_dechunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end = NULL;
        if (in >= n)
            return -1;
        unsigned long sz = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (!crlf || end == b + in)
            return -1;
        in = (size_t)(crlf - b) + 2;
        if (sz == 0)
            return (long)out;
        if (in + sz + 2 > n)
            return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
}

/* Reads the whole response until the server closes; parses status, headers and body. */
static int tc_read_response(int fd, http_resp *r, double t0)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    size_t head_end = 0;
    r->t_first_body_s = -1;
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (!head_end) {
            char *e = strstr(buf, "\r\n\r\n");
            if (e)
                head_end = (size_t)(e - buf) + 4;
        }
        if (head_end && len > head_end && r->t_first_body_s < 0)
            r->t_first_body_s = fq_now_s() - t0;
    }
    r->t_end_s = fq_now_s() - t0;
    buf[len] = '\0';
    if (!head_end || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    snprintf(r->head, sizeof r->head, "%.*s", (int)head_end, buf);
    size_t blen = len - head_end;
    r->body = malloc(blen + 1);
    if (!r->body) {
        free(buf);
        return -1;
    }
    memcpy(r->body, buf + head_end, blen);
    r->body[blen] = '\0';
    free(buf);
    if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
        long d = tc_dechunk(r->body, blen);
        if (d < 0)
            return -1;
        blen = (size_t)d;
        r->body[blen] = '\0';
    }
    r->body_len = blen;
    return 0;
}

/* One request on a fresh connection ("Connection: close"). extra: more header lines, each ending
 * in \r\n, or NULL. body NULL = no body. Returns 0 or -1. */
static int http_do(uint16_t port, const char *method, const char *path, const char *extra,
                   const char *body, http_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = tc_connect(port);
    if (fd < 0)
        return -1;
    char head[2048];
    int n =
        snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s",
                 method, path, extra ? extra : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", strlen(body));
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    double t0 = fq_now_s();
    int rc = tc_send_all(fd, head, (size_t)n);
    if (rc == 0 && body)
        rc = tc_send_all(fd, body, strlen(body));
    if (rc == 0)
        rc = tc_read_response(fd, r, t0);
    close(fd);
    return rc;
}

/* The value of header name in r (first match), copied into out; NULL when absent. */
static const char *resp_header(const http_resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            snprintf(out, cap, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
            return out;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

/* Checks an OpenAI error body: {"error":{"message":str,"type":type,"param":null,"code":code}}. */
static void assert_error_body(const http_resp *r, const char *type, const char *code)
{
    json_error_t jerr;
    json_t *j = json_loads(r->body, 0, &jerr);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    assert_true(json_is_null(json_object_get(e, "param")));
    if (code)
        assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    json_decref(j);
}

/* ---------------------------------------------------------------------------------------------
 * tests */

static void test_srv_http_health_ok_with_generated_request_id(void **state)
{
    fixture *fx = *state;
    http_resp r;
    char v[256];
    assert_int_equal(http_do(fx->port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_non_null(resp_header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json");
    assert_non_null(resp_header(&r, "X-Request-Id", v, sizeof v));
    assert_int_equal(strlen(v), 32);
    resp_free(&r);
}

static void test_srv_http_request_id_echoed(void **state)
{
    fixture *fx = *state;
    http_resp r;
    char v[256];
    assert_int_equal(
        http_do(fx->port, "GET", "/health", "X-Request-Id: abc-123.x_y:z\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(resp_header(&r, "X-Request-Id", v, sizeof v));
    assert_string_equal(v, "abc-123.x_y:z");
    resp_free(&r);
    /* errors carry it too */
    assert_int_equal(http_do(fx->port, "GET", "/nope", "X-Request-Id: req-404\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(resp_header(&r, "X-Request-Id", v, sizeof v));
    assert_string_equal(v, "req-404");
    resp_free(&r);
    /* an id with characters outside the safe set is replaced by a generated one */
    assert_int_equal(http_do(fx->port, "GET", "/health", "X-Request-Id: bad<id>\r\n", NULL, &r), 0);
    assert_non_null(resp_header(&r, "X-Request-Id", v, sizeof v));
    assert_int_equal(strlen(v), 32);
    resp_free(&r);
}

static void test_srv_http_unknown_path_is_404(void **state)
{
    fixture *fx = *state;
    http_resp r;
    assert_int_equal(http_do(fx->port, "GET", "/v1/nothing", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_error_body(&r, "not_found_error", "not_found");
    resp_free(&r);
    /* a body sent to an unknown path is read and dropped; the answer is still 404 */
    assert_int_equal(http_do(fx->port, "POST", "/v1/nothing", NULL, "{\"a\":1}", &r), 0);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

static void test_srv_http_wrong_method_is_405_with_allow(void **state)
{
    fixture *fx = *state;
    http_resp r;
    char v[256];
    assert_int_equal(http_do(fx->port, "POST", "/health", NULL, "{}", &r), 0);
    assert_int_equal(r.status, 405);
    assert_non_null(resp_header(&r, "Allow", v, sizeof v));
    assert_string_equal(v, "GET");
    assert_error_body(&r, "invalid_request_error", "method_not_allowed");
    resp_free(&r);
    assert_int_equal(http_do(fx->port, "GET", "/echo", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_non_null(resp_header(&r, "Allow", v, sizeof v));
    assert_non_null(strstr(v, "POST"));
    assert_non_null(strstr(v, "DELETE"));
    resp_free(&r);
}

static void test_srv_http_echo_returns_body(void **state)
{
    fixture *fx = *state;
    http_resp r;
    const char *body = "{\"prompt\":\"hello\",\"n\":[1,2,3]}";
    assert_int_equal(http_do(fx->port, "POST", "/echo", NULL, body, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, body);
    resp_free(&r);
    /* empty body */
    assert_int_equal(http_do(fx->port, "POST", "/echo", NULL, "", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    resp_free(&r);
}

static void test_srv_http_body_over_limit_is_413(void **state)
{
    fixture *fx = *state;
    http_resp r;
    /* announced and sent */
    char *big = malloc(TEST_MAX_BODY + 2);
    assert_non_null(big);
    memset(big, 'x', TEST_MAX_BODY + 1);
    big[TEST_MAX_BODY + 1] = '\0';
    assert_int_equal(http_do(fx->port, "POST", "/echo", NULL, big, &r), 0);
    assert_int_equal(r.status, 413);
    assert_error_body(&r, "invalid_request_error", "request_too_large");
    resp_free(&r);
    /* exactly at the limit is fine */
    big[TEST_MAX_BODY] = '\0';
    assert_int_equal(http_do(fx->port, "POST", "/echo", NULL, big, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, TEST_MAX_BODY);
    resp_free(&r);
    free(big);

    /* announced only: refused before any body byte is sent */
    int fd = tc_connect(fx->port);
    assert_true(fd >= 0);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
    assert_int_equal(tc_send_all(fd, req, strlen(req)), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_read_response(fd, &r, fq_now_s()), 0);
    close(fd);
    assert_int_equal(r.status, 413);
    resp_free(&r);

    /* chunked, no length announced: found out while reading */
    fd = tc_connect(fx->port);
    assert_true(fd >= 0);
    const char *head =
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(tc_send_all(fd, head, strlen(head)), 0);
    char chunk[600];
    memset(chunk, 'y', sizeof chunk);
    for (int i = 0; i < 3; i++) {
        char sz[16];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", sizeof chunk);
        assert_int_equal(tc_send_all(fd, sz, (size_t)n), 0);
        assert_int_equal(tc_send_all(fd, chunk, sizeof chunk), 0);
        assert_int_equal(tc_send_all(fd, "\r\n", 2), 0);
    }
    assert_int_equal(tc_send_all(fd, "0\r\n\r\n", 5), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_read_response(fd, &r, fq_now_s()), 0);
    close(fd);
    assert_int_equal(r.status, 413);
    resp_free(&r);

    /* still serving */
    assert_int_equal(http_do(fx->port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_srv_http_api_key_required_except_open_paths(void **state)
{
    fixture *fx = *state;
    http_resp r;
    assert_int_equal(http_do(fx->port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(http_do(fx->port, "POST", "/echo", NULL, "{}", &r), 0);
    assert_int_equal(r.status, 401);
    assert_error_body(&r, "authentication_error", "invalid_api_key");
    resp_free(&r);
    assert_int_equal(
        http_do(fx->port, "POST", "/echo", "Authorization: Bearer wrong-key\r\n", "{}", &r), 0);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(
        http_do(fx->port, "POST", "/echo", "Authorization: Bearer " TEST_KEY "x\r\n", "{}", &r), 0);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(
        http_do(fx->port, "POST", "/echo", "Authorization: Basic " TEST_KEY "\r\n", "{}", &r), 0);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(
        http_do(fx->port, "POST", "/echo", "Authorization: Bearer " TEST_KEY "\r\n", "{}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{}");
    resp_free(&r);
}

static void test_srv_http_stream_arrives_in_order(void **state)
{
    fixture *fx = *state;
    http_resp r;
    char v[256];
    assert_int_equal(http_do(fx->port, "GET", "/stream", "X-Request-Id: s1\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(resp_header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "text/event-stream");
    assert_non_null(resp_header(&r, "X-Request-Id", v, sizeof v));
    assert_string_equal(v, "s1");
    assert_string_equal(r.body, "data: {\"i\":0}\n\ndata: {\"i\":1}\n\ndata: {\"i\":2}\n\n"
                                "data: {\"i\":3}\n\ndata: {\"i\":4}\n\ndata: [DONE]\n\n");
    resp_free(&r);
}

/* Streamed, not buffered: the producer sends event i+1 only after the client has read event i,
 * so the stream completes only if every event is flushed on its own. */
static void test_srv_http_stream_flushes_each_event(void **state)
{
    fixture *fx = *state;
    int fd = tc_connect(fx->port);
    assert_true(fd >= 0);
    const char *req = "GET /stream_gated HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(tc_send_all(fd, req, strlen(req)), 0);
    char buf[8192];
    size_t got = 0;
    buf[0] = '\0';
    for (int i = 0; i < 5; i++) {
        char want[32];
        snprintf(want, sizeof want, "data: {\"i\":%d}", i);
        while (!strstr(buf, want)) {
            ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            assert_true(n > 0); /* a 5 s receive timeout fails here */
            got += (size_t)n;
            buf[got] = '\0';
        }
        pthread_mutex_lock(&fx->mu);
        fx->gate = i + 1;
        pthread_cond_broadcast(&fx->cv);
        pthread_mutex_unlock(&fx->mu);
    }
    ssize_t n;
    while (got < sizeof buf - 1 && (n = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(fd);
    assert_non_null(strstr(buf, "data: [DONE]\n\n"));
    assert_non_null(strstr(buf, "\r\n0\r\n\r\n")); /* the terminating chunk */
    pthread_mutex_lock(&fx->mu);
    bool timed_out = fx->gate_timeout;
    pthread_mutex_unlock(&fx->mu);
    assert_false(timed_out);
}

/* 50 clients at once: odd ones stream, even ones echo. */
typedef struct client_job {
    uint16_t port;
    int idx;
    int ok; /* 1 = the expected answer */
} client_job;

static void *client_main(void *arg)
{
    client_job *job = arg;
    http_resp r;
    if (job->idx % 2) {
        if (http_do(job->port, "GET", "/stream", NULL, NULL, &r) == 0)
            job->ok = r.status == 200 && strstr(r.body, "data: {\"i\":4}\n\ndata: [DONE]\n\n");
    } else {
        char body[64];
        snprintf(body, sizeof body, "{\"client\":%d}", job->idx);
        if (http_do(job->port, "POST", "/echo", NULL, body, &r) == 0)
            job->ok = r.status == 200 && strcmp(r.body, body) == 0;
    }
    resp_free(&r);
    return NULL;
}

static void test_srv_http_fifty_concurrent_clients(void **state)
{
    fixture *fx = *state;
    enum { N = 50 };
    client_job jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (client_job){fx->port, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &jobs[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += jobs[i].ok;
    }
    assert_int_equal(ok, N);
}

static void test_srv_http_two_requests_on_one_connection(void **state)
{
    fixture *fx = *state;
    int fd = tc_connect(fx->port);
    assert_true(fd >= 0);
    const char *two = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                      "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Length: 7\r\n\r\n{\"k\":2}";
    assert_int_equal(tc_send_all(fd, two, strlen(two)), 0);
    http_resp r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_read_response(fd, &r, fq_now_s()), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    /* the second response follows the first on the same connection */
    assert_non_null(strstr(r.body, "{\"status\":\"ok\"}HTTP/1.1 200"));
    assert_non_null(strstr(r.body, "{\"k\":2}"));
    resp_free(&r);
}

static void test_srv_http_client_disconnect_calls_on_close(void **state)
{
    fixture *fx = *state;
    int fd = tc_connect(fx->port);
    assert_true(fd >= 0);
    const char *req = "GET /stream_long HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(tc_send_all(fd, req, strlen(req)), 0);
    char buf[4096];
    size_t got = 0;
    while (got < sizeof buf - 1) { /* wait for the first event */
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "data: {\"i\":0}"))
            break;
    }
    close(fd);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&fx->mu);
    while (fx->n_closed == 0)
        if (pthread_cond_timedwait(&fx->cv, &fx->mu, &dl) == ETIMEDOUT)
            break;
    int closed = fx->n_closed;
    pthread_mutex_unlock(&fx->mu);
    assert_int_equal(closed, 1);
    /* the daemon keeps serving */
    http_resp r;
    assert_int_equal(http_do(fx->port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

/* A deferred request's connection is suspended, so MHD does not watch it: srv_http does. */
static void test_srv_http_deferred_client_disconnect_calls_on_close(void **state)
{
    fixture *fx = *state;
    int fd = tc_connect(fx->port);
    assert_true(fd >= 0);
    const char *req = "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(tc_send_all(fd, req, strlen(req)), 0);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&fx->mu);
    while (fx->n_held == 0)
        if (pthread_cond_timedwait(&fx->cv, &fx->mu, &dl) == ETIMEDOUT)
            break;
    int held = fx->n_held;
    pthread_mutex_unlock(&fx->mu);
    assert_int_equal(held, 1); /* the handler ran and left the request pending */
    sleep_ms(50);              /* let the connection be suspended */
    double t0 = fq_now_s();
    close(fd);
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 1;
    pthread_mutex_lock(&fx->mu);
    while (fx->n_closed == 0)
        if (pthread_cond_timedwait(&fx->cv, &fx->mu, &dl) == ETIMEDOUT)
            break;
    int closed = fx->n_closed;
    int rc = fx->hold_respond_rc;
    pthread_mutex_unlock(&fx->mu);
    double took = fq_now_s() - t0;
    assert_int_equal(closed, 1); /* within ~1 s, not at shutdown */
    assert_true(took < 1.5);
    assert_int_equal(rc, FQ_EIO); /* the late answer is dropped */
    /* the daemon keeps serving */
    http_resp r;
    assert_int_equal(http_do(fx->port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void *slow_client_main(void *arg)
{
    client_job *job = arg;
    http_resp r;
    const char *path = job->idx == 0 ? "/slow" : "/stream";
    if (http_do(job->port, "GET", path, NULL, NULL, &r) == 0)
        job->ok = r.status == 200 && (job->idx == 0 ? strcmp(r.body, "{\"slow\":true}") == 0
                                                    : strstr(r.body, "data: [DONE]\n\n") != NULL);
    resp_free(&r);
    return NULL;
}

static void test_srv_http_stop_drains_inflight_requests(void **state)
{
    fixture *fx = *state;
    client_job jobs[2] = {{fx->port, 0, 0}, {fx->port, 1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, slow_client_main, &jobs[i]), 0);
    /* both requests in flight: /slow answers 150 ms after its handler, /stream ends ~50 ms after */
    assert_int_equal(wait_helpers(fx, 2), 2);
    double t0 = fq_now_s();
    srv_loop_stop(fx->loop);
    pthread_join(fx->server, NULL); /* srv_loop_run returned: drained and closed */
    fx->server_joined = true;
    double took = fq_now_s() - t0;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(fx->run_rc, 0);
    assert_int_equal(jobs[0].ok, 1);
    assert_int_equal(jobs[1].ok, 1);
    assert_true(took < 5.0); /* finished by draining, not by the 10 s drain timeout */
    assert_int_equal(tc_connect(fx->port), -1); /* no longer listening */
}

/* A client that reads whatever comes until the server closes; counts the bytes. */
static void *raw_client_main(void *arg)
{
    client_job *job = arg;
    int fd = tc_connect(job->port);
    if (fd < 0)
        return NULL;
    const char *req = "GET /stream_long HTTP/1.1\r\nHost: x\r\n\r\n";
    if (tc_send_all(fd, req, strlen(req)) == 0) {
        char buf[4096];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
            job->ok += (int)n;
    }
    close(fd);
    return NULL;
}

static void test_srv_loop_drain_timeout_closes_stragglers(void **state)
{
    fixture *fx = *state;
    client_job job = {fx->port, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, raw_client_main, &job), 0);
    assert_int_equal(wait_helpers(fx, 1), 1); /* the 10 s stream is running */
    double t0 = fq_now_s();
    srv_loop_stop(fx->loop);
    pthread_join(fx->server, NULL);
    fx->server_joined = true;
    double took = fq_now_s() - t0;
    pthread_join(th, NULL);
    assert_true(took >= 0.15 && took < 5.0); /* the 200 ms drain timeout, not the stream */
    assert_true(job.ok > 0);                 /* it had started streaming */
    pthread_mutex_lock(&fx->mu);
    int closed = fx->n_closed;
    pthread_mutex_unlock(&fx->mu);
    assert_int_equal(closed, 1); /* the engine heard about the cut */
}

static void test_srv_loop_sigterm_stops_gracefully(void **state)
{
    fixture *fx = *state;
    client_job job = {fx->port, 1, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_client_main, &job), 0); /* a /stream */
    assert_int_equal(wait_helpers(fx, 1), 1);
    assert_int_equal(kill(getpid(), SIGTERM), 0);
    pthread_join(fx->server, NULL);
    fx->server_joined = true;
    pthread_join(th, NULL);
    assert_int_equal(job.ok, 1); /* the in-flight stream completed */
    assert_int_equal(fx->run_rc, 0);
}

/* srv_loop on its own: messages run on the loop thread, in order. */
typedef struct order_msg {
    srv_msg base;
    fixture *fx;
    int seq;
} order_msg;

static void order_run(srv_msg *msg, srv_loop *loop)
{
    (void)loop;
    order_msg *m = (order_msg *)msg;
    fixture *fx = m->fx;
    pthread_mutex_lock(&fx->mu);
    if (m->seq == fx->n_msgs)
        fx->n_msgs++;
    fx->msg_on_loop_thread = pthread_equal(pthread_self(), fx->loop_thread);
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
    free(m);
}

static void test_srv_loop_post_runs_on_loop_thread_in_order(void **state)
{
    fixture *fx = *state;
    for (int i = 0; i < 100; i++) {
        order_msg *m = calloc(1, sizeof *m);
        assert_non_null(m);
        m->base.fn = order_run;
        m->fx = fx;
        m->seq = i;
        srv_loop_post(fx->loop, &m->base);
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&fx->mu);
    while (fx->n_msgs < 100)
        if (pthread_cond_timedwait(&fx->cv, &fx->mu, &dl) == ETIMEDOUT)
            break;
    int n = fx->n_msgs;
    bool on_loop = fx->msg_on_loop_thread;
    pthread_mutex_unlock(&fx->mu);
    assert_int_equal(n, 100);
    assert_true(on_loop);
}

static void test_srv_loop_create_rejects_bad_host_and_busy_port(void **state)
{
    fixture *fx = *state;
    char err[256] = "";
    srv_loop_params lp = srv_loop_default_params();
    srv_loop_hooks hooks = srv_http_hooks(fx->http);
    lp.host = "not-an-address";
    lp.port = 0;
    assert_null(srv_loop_create(&lp, &hooks, err, sizeof err));
    assert_non_null(strstr(err, "not-an-address"));
    lp.host = "127.0.0.1";
    lp.port = fx->port; /* taken by the fixture */
    err[0] = '\0';
    assert_null(srv_loop_create(&lp, &hooks, err, sizeof err));
    assert_true(err[0] != '\0');
    /* a loop that never runs is destroyed cleanly, queued messages included */
    lp.port = 0;
    srv_http *idle_http = srv_http_create(NULL, err, sizeof err);
    assert_non_null(idle_http);
    srv_loop_hooks idle_hooks = srv_http_hooks(idle_http);
    srv_loop *idle = srv_loop_create(&lp, &idle_hooks, err, sizeof err);
    assert_non_null(idle);
    assert_int_not_equal(srv_loop_port(idle), 0);
    order_msg *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->base.fn = order_run;
    m->fx = fx;
    m->seq = 0;
    srv_loop_post(idle, &m->base);
    srv_loop_destroy(idle);
    srv_http_destroy(idle_http);
    pthread_mutex_lock(&fx->mu);
    int n = fx->n_msgs;
    pthread_mutex_unlock(&fx->mu);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_srv_http_health_ok_with_generated_request_id,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_request_id_echoed, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_unknown_path_is_404, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_wrong_method_is_405_with_allow, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_echo_returns_body, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_body_over_limit_is_413, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_api_key_required_except_open_paths, setup_key,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_stream_arrives_in_order, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_stream_flushes_each_event, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_fifty_concurrent_clients, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_two_requests_on_one_connection, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_client_disconnect_calls_on_close, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_deferred_client_disconnect_calls_on_close,
                                        setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_srv_http_stop_drains_inflight_requests, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_loop_drain_timeout_closes_stragglers,
                                        setup_short_drain, teardown),
        cmocka_unit_test_setup_teardown(test_srv_loop_sigterm_stops_gracefully, setup_signals,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_loop_post_runs_on_loop_thread_in_order, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_loop_create_rejects_bad_host_and_busy_port,
                                        setup_open, teardown),
    };
    return cmocka_run_group_tests_name("srv_http", tests, NULL, NULL);
}

/* srv_loop.c — libmicrohttpd run from a libuv loop, woken from other threads through a queue.
 *
 * Design. MHD runs in "external epoll" mode: it owns one epoll fd holding the listen socket, its
 * inter-thread channel (ITC) and every connection. libuv watches that single fd with a uv_poll
 * (UV_READABLE); when it fires, MHD_run() does all pending accept/read/write work without
 * blocking. MHD's own deadlines (idle timeouts, data already buffered) come back from
 * MHD_get_timeout(), which re-arms one uv_timer after every MHD_run(). Other threads never touch
 * MHD or libuv: they push srv_msg records onto a mutex-guarded list and call uv_async_send();
 * the async callback takes the whole list, runs each message on the loop thread, and services
 * MHD once more so connections resumed by those messages make progress at once (a resume also
 * pokes MHD's ITC, which is in the epoll set, so nothing depends on that extra call).
 *
 * Stopping: RUNNING → DRAINING (still listening, so new requests are answered 503 by the
 * routes; in-flight requests continue) → CLOSING when hooks.n_inflight() reaches 0 or the
 * drain timer fires (every uv handle closed, uv_run returns) → the daemon is stopped after
 * hooks.on_stop() has resumed any suspended connection (completion callbacks fire here) → DONE.
 * Messages posted after the async handle closed wait in the queue for srv_loop_destroy.
 */
#include "srv_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fq_base.h"

enum loop_state {
    LOOP_IDLE = 0, /* created, srv_loop_run not called yet */
    LOOP_RUNNING,  /* serving */
    LOOP_DRAINING, /* quiesced, waiting for in-flight requests */
    LOOP_CLOSING,  /* uv handles closing, uv_run about to return */
    LOOP_DONE      /* daemon stopped, handles closed */
};

struct srv_loop {
    uv_loop_t uv;
    struct MHD_Daemon *mhd; /* NULL once stopped */
    srv_loop_hooks hooks;
    uint16_t port;
    unsigned drain_timeout_ms;
    bool handle_signals;

    /* uv handles, embedded; closed together by loop_close_handles */
    uv_poll_t poll;         /* MHD's epoll fd */
    uv_timer_t mhd_timer;   /* MHD_get_timeout deadline */
    uv_timer_t drain_timer; /* drain deadline */
    uv_async_t async;       /* wake-ups from other threads; open while async_open */
    uv_signal_t sigs[2];    /* SIGINT, SIGTERM when handle_signals */
    int n_sigs_open;
    bool handles_open; /* poll and both timers */

    enum loop_state state; /* loop thread */
    bool in_service;       /* re-entrancy guard around MHD_run */

    pthread_mutex_t mu;
    srv_msg *head, *tail; /* guarded by mu */
    bool async_open;      /* guarded by mu: uv_async_send still allowed */
    atomic_bool stop_requested;
};

srv_loop_params srv_loop_default_params(void)
{
    return (srv_loop_params){
        .host = "127.0.0.1",
        .port = 8000,
        .connection_limit = 0,
        .connection_timeout_s = 60,
        .drain_timeout_ms = 30000,
        .handle_signals = false,
    };
}

/* MHD's error log, routed through fq_log. */
static void loop_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    fq_log(FQ_LOG_WARN, "http: %s", line);
}

static void loop_service(srv_loop *loop);
static void loop_finish(srv_loop *loop);

/* Re-arms the MHD timer from MHD_get_timeout (stops it when MHD has no deadline). */
static void loop_arm_timer(srv_loop *loop);

static void on_mhd_timer(uv_timer_t *t)
{
    loop_service(t->data);
}

static void loop_arm_timer(srv_loop *loop)
{
    MHD_UNSIGNED_LONG_LONG timeout_ms = 0;
    if (MHD_get_timeout(loop->mhd, &timeout_ms) == MHD_YES)
        uv_timer_start(&loop->mhd_timer, on_mhd_timer, (uint64_t)timeout_ms, 0);
    else
        uv_timer_stop(&loop->mhd_timer);
}

static unsigned loop_n_inflight(srv_loop *loop)
{
    if (loop->hooks.n_inflight)
        return loop->hooks.n_inflight(loop->hooks.cls);
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(loop->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info ? info->num_connections : 0;
}

/* One round of MHD work, then the timer; while draining, finishes once nothing is in flight. */
static void loop_service(srv_loop *loop)
{
    if (loop->in_service || !loop->mhd ||
        (loop->state != LOOP_RUNNING && loop->state != LOOP_DRAINING))
        return;
    loop->in_service = true;
    MHD_run(loop->mhd);
    loop->in_service = false;
    loop_arm_timer(loop);
    if (loop->state == LOOP_DRAINING && loop_n_inflight(loop) == 0)
        loop_finish(loop);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)events;
    if (status < 0)
        fq_log(FQ_LOG_WARN, "http: epoll watch: %s", uv_strerror(status));
    loop_service(p->data);
}

static void on_drain_timer(uv_timer_t *t)
{
    srv_loop *loop = t->data;
    if (loop->state != LOOP_DRAINING)
        return;
    fq_log(FQ_LOG_WARN, "http: drain timeout (%u ms) with %u request(s) in flight; closing",
           loop->drain_timeout_ms, loop_n_inflight(loop));
    loop_finish(loop);
}

/* RUNNING → DRAINING: keep serving what is in flight. The listen socket stays open so that new
 * requests get a clear answer (the routes refuse new work with 503 + Retry-After and /ready says
 * 503 while srv_loop_is_draining) instead of a refused connection; the drain ends when nothing is
 * in flight, which those short answers do not hold up. */
static void loop_begin_drain(srv_loop *loop)
{
    if (loop->state != LOOP_RUNNING)
        return;
    loop->state = LOOP_DRAINING;
    fq_log(FQ_LOG_INFO, "http: draining (%u request(s) in flight)", loop_n_inflight(loop));
    uv_timer_start(&loop->drain_timer, on_drain_timer, loop->drain_timeout_ms, 0);
    loop_service(loop); /* finishes at once when idle */
}

/* Takes the whole queue and runs it; returns how many messages ran. */
static size_t loop_run_messages(srv_loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    srv_msg *m = loop->head;
    loop->head = loop->tail = NULL;
    pthread_mutex_unlock(&loop->mu);
    size_t n = 0;
    while (m) {
        srv_msg *next = m->next;
        m->next = NULL;
        m->fn(m, loop); /* fn owns m from here */
        m = next;
        n++;
    }
    return n;
}

static void on_async(uv_async_t *a)
{
    srv_loop *loop = a->data;
    loop_run_messages(loop);
    if (atomic_load(&loop->stop_requested) && loop->state == LOOP_RUNNING)
        loop_begin_drain(loop);
    loop_service(loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    srv_loop *loop = s->data;
    fq_log(FQ_LOG_INFO, "http: signal %d, stopping", signum);
    atomic_store(&loop->stop_requested, true);
    loop_begin_drain(loop);
}

/* Closes every uv handle (idempotent); uv_run returns once their close callbacks ran. */
static void loop_close_handles(srv_loop *loop)
{
    if (!loop->handles_open)
        return;
    loop->handles_open = false;
    uv_close((uv_handle_t *)&loop->poll, NULL);
    uv_close((uv_handle_t *)&loop->mhd_timer, NULL);
    uv_close((uv_handle_t *)&loop->drain_timer, NULL);
    for (int i = 0; i < loop->n_sigs_open; i++)
        uv_close((uv_handle_t *)&loop->sigs[i], NULL);
    loop->n_sigs_open = 0;
    pthread_mutex_lock(&loop->mu);
    if (loop->async_open) {
        loop->async_open = false; /* no uv_async_send may race the close */
        uv_close((uv_handle_t *)&loop->async, NULL);
    }
    pthread_mutex_unlock(&loop->mu);
}

/* DRAINING → CLOSING: closes the handles so uv_run returns. */
static void loop_finish(srv_loop *loop)
{
    if (loop->state == LOOP_CLOSING || loop->state == LOOP_DONE)
        return;
    loop->state = LOOP_CLOSING;
    loop_close_handles(loop);
}

/* Stops the daemon: resumes suspended connections through the hook, lets MHD process them once,
 * then closes every connection (completion callbacks fire). */
static void loop_stop_daemon(srv_loop *loop)
{
    if (!loop->mhd)
        return;
    if (loop->hooks.on_stop)
        loop->hooks.on_stop(loop->hooks.cls);
    MHD_run(loop->mhd);
    MHD_stop_daemon(loop->mhd);
    loop->mhd = NULL;
    loop->state = LOOP_DONE;
}

static int loop_parse_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                           unsigned *flags, char *err, size_t err_len)
{
    memset(ss, 0, sizeof *ss);
    if (!host || !*host)
        host = "0.0.0.0";
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return 0;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        *flags |= MHD_USE_IPv6;
        return 0;
    }
    return fq_err(err, err_len, FQ_EINVAL, "host '%s' is not a numeric IPv4 or IPv6 address", host);
}

srv_loop *srv_loop_create(const srv_loop_params *p, const srv_loop_hooks *hooks, char *err,
                          size_t err_len)
{
    if (!p || !hooks || !hooks->access) {
        fq_err(err, err_len, FQ_EINVAL, "srv_loop_create: params and an access hook are required");
        return NULL;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct sockaddr_storage ss;
    if (loop_parse_addr(p->host, p->port, &ss, &flags, err, err_len) < 0)
        return NULL;

    srv_loop *loop = calloc(1, sizeof *loop);
    if (!loop) {
        fq_err(err, err_len, FQ_ENOMEM, "srv_loop_create: out of memory");
        return NULL;
    }
    loop->hooks = *hooks;
    loop->drain_timeout_ms = p->drain_timeout_ms;
    loop->handle_signals = p->handle_signals;
    atomic_init(&loop->stop_requested, false);
    if (pthread_mutex_init(&loop->mu, NULL) != 0) {
        free(loop);
        fq_err(err, err_len, FQ_ENOMEM, "srv_loop_create: mutex init failed");
        return NULL;
    }
    int rc = uv_loop_init(&loop->uv);
    if (rc < 0) {
        pthread_mutex_destroy(&loop->mu);
        free(loop);
        fq_err(err, err_len, FQ_EIO, "uv_loop_init: %s", uv_strerror(rc));
        return NULL;
    }

    struct MHD_OptionItem extra[2];
    size_t n_extra = 0;
    if (p->connection_limit > 0)
        extra[n_extra++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                                   (intptr_t)p->connection_limit, NULL};
    extra[n_extra] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    /* The logger goes first so that MHD's own start-up messages use it too. */
    loop->mhd = MHD_start_daemon(
        flags, p->port, NULL, NULL, hooks->access, hooks->cls, MHD_OPTION_EXTERNAL_LOGGER,
        loop_mhd_log, (void *)loop, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, hooks->completed, hooks->cls, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)p->connection_timeout_s, MHD_OPTION_ARRAY, extra, MHD_OPTION_END);
    if (!loop->mhd) {
        fq_err(err, err_len, FQ_EIO, "cannot listen on %s:%u (address in use or not available)",
               (p->host && *p->host) ? p->host : "0.0.0.0", (unsigned)p->port);
        uv_loop_close(&loop->uv);
        pthread_mutex_destroy(&loop->mu);
        free(loop);
        return NULL;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(loop->mhd, MHD_DAEMON_INFO_BIND_PORT);
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(loop->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    loop->port = pi ? pi->port : p->port;
    int epoll_fd = ei ? ei->epoll_fd : -1;

    rc = epoll_fd < 0 ? UV_EINVAL : uv_poll_init(&loop->uv, &loop->poll, epoll_fd);
    if (rc < 0) {
        fq_err(err, err_len, FQ_EIO, "cannot watch the HTTP daemon: %s", uv_strerror(rc));
        MHD_stop_daemon(loop->mhd);
        uv_loop_close(&loop->uv);
        pthread_mutex_destroy(&loop->mu);
        free(loop);
        return NULL;
    }
    /* From here every failure goes through srv_loop_destroy, which closes what was opened. */
    loop->poll.data = loop;
    uv_timer_init(&loop->uv, &loop->mhd_timer);
    loop->mhd_timer.data = loop;
    uv_timer_init(&loop->uv, &loop->drain_timer);
    loop->drain_timer.data = loop;
    loop->handles_open = true;
    rc = uv_async_init(&loop->uv, &loop->async, on_async);
    if (rc == 0) {
        loop->async.data = loop;
        loop->async_open = true;
    }
    static const int signums[2] = {SIGINT, SIGTERM};
    for (int i = 0; rc == 0 && loop->handle_signals && i < 2; i++) {
        rc = uv_signal_init(&loop->uv, &loop->sigs[i]);
        if (rc == 0) {
            loop->n_sigs_open++;
            loop->sigs[i].data = loop;
            rc = uv_signal_start(&loop->sigs[i], on_signal, signums[i]);
        }
    }
    if (rc == 0)
        rc = uv_poll_start(&loop->poll, UV_READABLE, on_poll);
    if (rc < 0) {
        fq_err(err, err_len, FQ_EIO, "cannot start the HTTP loop: %s", uv_strerror(rc));
        srv_loop_destroy(loop);
        return NULL;
    }
    fq_log(FQ_LOG_DEBUG, "http: listening on %s:%u", (p->host && *p->host) ? p->host : "0.0.0.0",
           (unsigned)loop->port);
    return loop;
}

void srv_loop_destroy(srv_loop *loop)
{
    if (!loop)
        return;
    if (loop->handles_open) {
        loop->state = LOOP_CLOSING;
        loop_close_handles(loop);
        uv_run(&loop->uv, UV_RUN_DEFAULT); /* runs the close callbacks */
    }
    loop_stop_daemon(loop);
    /* Messages posted late still own memory: run them (their fns see a stopped loop). A message
     * may post another; stop after a generous number of rounds rather than spin forever. */
    for (int round = 0; round < 1000 && loop_run_messages(loop) > 0; round++)
        ;
    int rc = uv_loop_close(&loop->uv);
    if (rc < 0)
        fq_log(FQ_LOG_WARN, "http: uv_loop_close: %s", uv_strerror(rc));
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}

uint16_t srv_loop_port(const srv_loop *loop)
{
    return loop->port;
}

int srv_loop_run(srv_loop *loop, char *err, size_t err_len)
{
    if (loop->state != LOOP_IDLE)
        return fq_err(err, err_len, FQ_EINVAL, "srv_loop_run: the loop already ran");
    loop->state = LOOP_RUNNING;
    uv_async_send(&loop->async); /* messages or a stop posted before run */
    loop_arm_timer(loop);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    loop_stop_daemon(loop);
    fq_log(FQ_LOG_INFO, "http: stopped");
    return 0;
}

void srv_loop_stop(srv_loop *loop)
{
    atomic_store(&loop->stop_requested, true);
    srv_loop_wakeup(loop);
}

void srv_loop_post(srv_loop *loop, srv_msg *msg)
{
    FQ_ASSERT(msg && msg->fn);
    msg->next = NULL;
    pthread_mutex_lock(&loop->mu);
    if (loop->tail)
        loop->tail->next = msg;
    else
        loop->head = msg;
    loop->tail = msg;
    if (loop->async_open)
        uv_async_send(&loop->async);
    pthread_mutex_unlock(&loop->mu);
}

void srv_loop_wakeup(srv_loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    if (loop->async_open)
        uv_async_send(&loop->async);
    pthread_mutex_unlock(&loop->mu);
}

bool srv_loop_is_draining(const srv_loop *loop)
{
    return loop->state != LOOP_IDLE && loop->state != LOOP_RUNNING;
}

uv_loop_t *srv_loop_uv(srv_loop *loop)
{
    return &loop->uv;
}

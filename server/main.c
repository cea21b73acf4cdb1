/* main.c — flexq-serve: configuration, model loading, and the wiring of metrics, engine thread,
 * HTTP loop and routes; signals drain the server and it exits 0.
 *
 * Start-up order: --help → cfg_load → cfg_validate_for_serve → log level → HTTP layer and loop
 * (binds the port) → gate routes and signal handles → load thread → run the loop on the main
 * thread. The load thread loads the model, then creates metrics, engine thread (creates the
 * scheduler) and routes — none of which touches loop-thread state — and posts a message to the
 * loop. Until that message has run, every route is a gate in front of the real handler: /health
 * answers 200 {"status":"ok"}, everything else (/ready included) 503 + Retry-After with an error
 * object ("model is loading"); afterwards the gates forward to srv_routes' handlers (loop thread
 * only, so no locking). A load failure is logged, stops the loop and exits 1; SIGINT/SIGTERM while
 * loading stops the loop at once and exits 0 once the load thread has finished (it is joined, and
 * what it created is torn down as usual). Shutdown, in two phases: on SIGINT/SIGTERM (libuv signal
 * handles on the loop, here) the routes start draining — the port stays open, /ready
 * and new generation requests answer 503 + Retry-After, /health 200 — while in-flight requests
 * finish, for at most drain_timeout_s (then they are aborted and end with a 503 error, an error
 * event on a stream; a second signal does the same at once). When none is left, srv_loop_stop
 * closes the listening socket and lets the last responses flush (SRV_FLUSH_MS), the loop returns
 * and everything is torn down in the reverse order: engine (aborts what is left, posting its last
 * events), loop (runs those events, finishing their requests), HTTP layer, routes, metrics, model.
 * Exit codes: 0 after a clean stop, 1 for a start-up failure, 2 for bad flags or configuration.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "fq_base.h"
#include "rt_model.h"
#include "rt_ops.h"
#include "rt_runner.h"
#include "srv_engine.h"
#include "srv_http.h"
#include "srv_loop.h"
#include "srv_metrics.h"
#include "srv_routes.h"

/* srv_loop's own drain, after ours: time for the last responses to reach their sockets. */
#define SRV_FLUSH_MS 5000

#ifndef FLEXQ_VERSION
#define FLEXQ_VERSION "0.0.0"
#endif

/* Retry-After (seconds) of the 503 answers, while loading and from the routes. */
#define SRV_RETRY_AFTER_S 1

typedef struct srv_main srv_main;

/* The load thread's result, posted to the loop (srv_msg first, as srv_loop_post wants). */
typedef struct load_msg {
    srv_msg base;
    srv_main *s;
} load_msg;

/* Everything main owns, torn down by srv_main_close in reverse order. */
struct srv_main {
    cfg_config cfg;
    double t0;
    rt_model *model;
    rt_mode mode;
    srv_metrics *metrics;
    srv_http *http;
    srv_loop *loop;
    srv_engine *engine;
    srv_routes *routes;
    /* loading: the load thread writes model, mode, metrics, engine, routes, load_rc and load_err,
     * then posts load_msg; the loop thread reads them only from that message on, main only after
     * joining the thread */
    pthread_t load_thread;
    bool load_started;
    int load_rc;
    char load_err[1024];
    load_msg load_msg;
    bool loaded; /* loop thread: the gates forward to the routes */
    /* shutdown, loop thread */
    uv_signal_t sigs[2]; /* SIGINT, SIGTERM */
    uv_timer_t drain_timer;
    bool handles_open;
    bool draining;
};

static const char *log_level_name(fq_log_level l)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    return l >= FQ_LOG_DEBUG && l <= FQ_LOG_ERROR ? names[l] : "info";
}

/* Average stored bits per decoder-linear weight of the INT6 form (codes + fp16 scales); 0 when the
 * mode computes from fp32 weights. */
static double bits_per_weight(const rt_model *m, rt_mode mode)
{
    if (mode == RT_MODE_FP)
        return 0.0;
    double bits = 0.0, weights = 0.0;
    for (int32_t l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < FQ_LIN_COUNT; t++) {
            const rt_linear *lin = rt_layer_linear(&m->layers[l], (fq_lin_type)t);
            if (!lin->q6.packed || lin->q6.group <= 0)
                continue;
            bits += (double)lin->n_out * (double)lin->q6.row_bytes * 8.0 +
                    (double)lin->n_out * (double)(lin->n_in / lin->q6.group) * 16.0;
            weights += (double)lin->n_out * (double)lin->n_in;
        }
    return weights > 0 ? bits / weights : 0.0;
}

static int resolve_mode(const cfg_config *c, const rt_model *m, rt_mode *mode, char *err,
                        size_t err_len)
{
    if (c->mode == CFG_MODE_AUTO) {
        *mode = m->file ? RT_MODE_FLEX : RT_MODE_FP;
        return 0;
    }
    if (rt_mode_parse(cfg_mode_name(c->mode), mode) != 0)
        return fq_err(err, err_len, FQ_EINVAL, "mode '%s' is not known to the runtime",
                      cfg_mode_name(c->mode));
    return 0;
}

/* ---- shutdown (loop thread) ---- */

/* Phase two: close our handles (so uv_run can return) and let srv_loop stop accepting and flush. */
static void drain_finish(srv_main *s)
{
    if (!s->handles_open)
        return;
    s->handles_open = false;
    for (int i = 0; i < 2; i++)
        uv_close((uv_handle_t *)&s->sigs[i], NULL);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
    srv_loop_stop(s->loop);
}

/* The routes' on_idle: the last request in flight finished. */
static void on_drain_idle(void *ctx)
{
    drain_finish(ctx);
}

static void on_drain_timer(uv_timer_t *t)
{
    srv_main *s = t->data;
    fq_log(FQ_LOG_WARN, "drain timeout (%.0f s): aborting %u request(s) still in flight",
           s->cfg.drain_timeout_s, srv_routes_n_jobs(s->routes));
    srv_routes_abort_all(s->routes); /* their last events call on_drain_idle */
}

static void on_signal(uv_signal_t *h, int signum)
{
    srv_main *s = h->data;
    if (!s->loaded) { /* still loading (or the load failed): no routes to drain, just stop */
        if (!s->draining) {
            s->draining = true;
            fq_log(FQ_LOG_INFO, "signal %d while loading the model: stopping", signum);
            drain_finish(s);
        }
        return;
    }
    if (s->draining) {
        fq_log(FQ_LOG_INFO, "signal %d again: aborting %u request(s) in flight", signum,
               srv_routes_n_jobs(s->routes));
        srv_routes_abort_all(s->routes);
        return;
    }
    s->draining = true;
    fq_log(FQ_LOG_INFO, "signal %d: draining (up to %.0f s)", signum, s->cfg.drain_timeout_s);
    uint64_t ms = (uint64_t)(s->cfg.drain_timeout_s * 1000.0);
    if (ms == 0)
        srv_routes_abort_all(s->routes);
    else
        uv_timer_start(&s->drain_timer, on_drain_timer, ms, 0);
    srv_routes_drain(s->routes); /* calls on_drain_idle at once when nothing is in flight */
}

/* Watches SIGINT and SIGTERM on the loop; closed again by drain_finish. */
static int signals_start(srv_main *s, char *err, size_t err_len)
{
    uv_loop_t *uv = srv_loop_uv(s->loop);
    static const int signums[2] = {SIGINT, SIGTERM};
    uv_timer_init(uv, &s->drain_timer);
    s->drain_timer.data = s;
    int n = 0, rc = 0;
    for (; n < 2 && rc == 0; n++) {
        uv_signal_init(uv, &s->sigs[n]);
        s->sigs[n].data = s;
        rc = uv_signal_start(&s->sigs[n], on_signal, signums[n]);
    }
    s->handles_open = true;
    if (rc < 0) {
        for (int i = n; i < 2; i++) /* the ones never initialized: make them closable */
            uv_signal_init(uv, &s->sigs[i]);
        drain_finish(s);
        return fq_err(err, err_len, FQ_EIO, "cannot watch signals: %s", uv_strerror(rc));
    }
    return 0;
}

static void srv_main_close(srv_main *s)
{
    srv_engine_destroy(s->engine); /* before the loop: its last events run in srv_loop_destroy */
    srv_loop_destroy(s->loop);
    srv_http_destroy(s->http);
    srv_routes_destroy(s->routes);
    srv_metrics_destroy(s->metrics);
    rt_model_destroy(s->model);
}

/* ---- loading (load thread) ---- */

/* Model, metrics, engine and routes: nothing here touches the loop's thread-only state (the engine
 * only posts to the loop). Load thread. */
static int srv_main_load(srv_main *s, char *err, size_t err_len)
{
    const cfg_config *c = &s->cfg;
    fq_log(FQ_LOG_INFO, "loading %s", c->model);
    int rc = rt_model_load(c->model, &s->model, err, err_len);
    if (rc == 0)
        rc = resolve_mode(c, s->model, &s->mode, err, err_len);
    if (rc == 0)
        rc = rt_model_prepare_mode(s->model, s->mode, err, err_len);
    if (rc)
        return rc;
    const rt_ops *ops = rt_backend_find(cfg_backend_name(c->backend));
    if (!ops)
        return fq_err(err, err_len, FQ_EUNSUP, "backend '%s' is not available in this build",
                      cfg_backend_name(c->backend));
    int32_t max_model_len = c->max_model_len > 0 ? c->max_model_len : s->model->cfg.n_ctx;
    fq_log(FQ_LOG_INFO, "model loaded in %.1f s: %d layers, vocabulary %d, context %d, mode %s",
           fq_now_s() - s->t0, (int)s->model->cfg.n_layer, (int)s->model->cfg.n_vocab,
           (int)max_model_len, rt_mode_name(s->mode));

    if (c->metrics) {
        srv_metrics_info mi = {.model_name = c->served_model_name,
                               .version = FLEXQ_VERSION,
                               .backend = cfg_backend_name(c->backend),
                               .mode = rt_mode_name(s->mode),
                               .bits_per_weight = bits_per_weight(s->model, s->mode),
                               .max_model_len = max_model_len};
        s->metrics = srv_metrics_create(&mi);
        if (!s->metrics)
            return fq_err(err, err_len, FQ_ENOMEM, "out of memory for the metrics");
    }

    srv_engine_params ep = srv_engine_default_params();
    ep.model = s->model;
    ep.ops = ops;
    ep.sched.max_num_seqs = c->max_num_seqs;
    ep.sched.max_num_batched_tokens = c->max_num_batched_tokens;
    ep.sched.cuda_graphs = c->cuda_graphs;
    ep.sched.kv_cache_bytes = (int64_t)c->kv_cache_memory_bytes;
    ep.sched.block_size = c->kv_block_size;
    ep.sched.max_queue_requests = (int32_t)c->max_queue_requests;
    ep.sched.max_queue_prompt_tokens = (int64_t)c->max_queue_prompt_tokens;
    ep.sched.queue_timeout_s = c->queue_timeout_s;
    ep.sched.max_model_len = max_model_len;
    ep.sched.n_threads = c->threads;
    ep.sched.mode = s->mode;
    ep.request_timeout_s = c->request_timeout_s;
    ep.loop = s->loop;
    ep.on_event = srv_routes_engine_event;
    ep.metrics = s->metrics;
    rc = srv_engine_create(&ep, &s->engine, err, err_len);
    if (rc)
        return rc;

    srv_routes_params rp = {.model = s->model,
                            .model_name = c->served_model_name,
                            .max_model_len = max_model_len,
                            .engine = s->engine,
                            .loop = s->loop,
                            .metrics = s->metrics,
                            .retry_after_s = SRV_RETRY_AFTER_S,
                            .on_idle = on_drain_idle,
                            .on_idle_ctx = s};
    return srv_routes_create(&rp, &s->routes, err, err_len);
}

/* The load thread's result, on the loop thread (or in srv_loop_destroy when the loop had already
 * stopped: then drain_finish is a no-op). */
static void on_loaded(srv_msg *msg, srv_loop *loop)
{
    (void)loop;
    srv_main *s = ((load_msg *)msg)->s;
    if (s->load_rc) {
        fq_log(FQ_LOG_ERROR, "cannot start: %s", s->load_err);
        drain_finish(s);
        return;
    }
    if (s->draining) /* a signal came while loading: the loop is stopping */
        return;
    s->loaded = true;
    fq_log(FQ_LOG_INFO, "serving %s on http://%s:%u (ready in %.1f s)", s->cfg.served_model_name,
           s->cfg.host, (unsigned)srv_loop_port(s->loop), fq_now_s() - s->t0);
}

static void *load_thread_main(void *arg)
{
    srv_main *s = arg;
    s->load_rc = srv_main_load(s, s->load_err, sizeof s->load_err);
    s->load_msg.base.fn = on_loaded;
    s->load_msg.s = s;
    srv_loop_post(s->loop, &s->load_msg.base);
    return NULL;
}

/* ---- gates (loop thread) ---- */

/* Every route of srv_routes_register, registered up front in front of its handler (GET /metrics
 * only with metrics). */

/* Until the model is loaded: /health 200, everything else 503 + Retry-After; then the routes'
 * own handler. */
static void gate_handler(srv_req *req, void *ctx)
{
    srv_main *s = ctx;
    const char *path = srv_req_path(req);
    if (s->loaded) {
        srv_handler_fn fn = srv_routes_handler(s->routes, srv_req_method(req), path);
        if (fn)
            fn(req, s->routes);
        else
            srv_req_respond_errorf(req, 404, "not_found", "No such endpoint: %s", path);
        return;
    }
    if (strcmp(path, "/health") == 0) {
        srv_req_respond_json(req, 200, "{\"status\":\"ok\"}");
        return;
    }
    char retry[16];
    snprintf(retry, sizeof retry, "%d", SRV_RETRY_AFTER_S);
    srv_req_add_header(req, "Retry-After", retry);
    if (s->draining)
        srv_req_respond_errorf(req, 503, "shutting_down", "The server is shutting down");
    else
        srv_req_respond_errorf(req, 503, "model_loading", "model is loading");
}

static int gates_register(srv_main *s, char *err, size_t err_len)
{
    return srv_routes_register_gate(s->http, s->cfg.metrics, gate_handler, s, err, err_len);
}

/* HTTP layer, loop (binds the port), gates, signals, then the load thread. Main thread, before
 * srv_loop_run. */
static int srv_main_start(srv_main *s, char *err, size_t err_len)
{
    const cfg_config *c = &s->cfg;
    s->t0 = fq_now_s();
    srv_http_params hp = srv_http_default_params();
    hp.max_body_bytes = (size_t)c->max_body_bytes;
    hp.api_key = c->api_key[0] ? c->api_key : NULL;
    s->http = srv_http_create(&hp, err, err_len);
    if (!s->http)
        return FQ_ENOMEM;

    srv_loop_params lp = srv_loop_default_params();
    lp.host = c->host;
    lp.port = (uint16_t)c->port;
    lp.drain_timeout_ms = SRV_FLUSH_MS; /* our own drain comes first (on_signal) */
    lp.handle_signals = false;
    srv_loop_hooks hooks = srv_http_hooks(s->http);
    s->loop = srv_loop_create(&lp, &hooks, err, err_len);
    if (!s->loop)
        return FQ_EIO;
    srv_http_attach_loop(s->http, s->loop); /* watches waiting requests for client disconnects */

    int rc = gates_register(s, err, err_len);
    if (rc == 0)
        rc = signals_start(s, err, err_len);
    if (rc)
        return rc;
    fq_log(FQ_LOG_INFO, "listening on http://%s:%u (503 until the model is loaded)", c->host,
           (unsigned)srv_loop_port(s->loop));
    rc = pthread_create(&s->load_thread, NULL, load_thread_main, s);
    if (rc != 0) {
        drain_finish(s);
        return fq_err(err, err_len, FQ_EIO, "cannot start the load thread: %s", strerror(rc));
    }
    s->load_started = true;
    return 0;
}

int main(int argc, char **argv)
{
    if (cfg_help_requested(argc, argv)) {
        cfg_print_help(stdout);
        return 0;
    }
    srv_main s;
    memset(&s, 0, sizeof s);
    char err[1024] = "";
    int rc = cfg_load(argc, argv, NULL, &s.cfg, err, sizeof err);
    if (rc) {
        fprintf(stderr, "flexq-serve: %s\n", err);
        return rc == FQ_EINVAL || rc == FQ_ERANGE ? 2 : 1;
    }
    if (cfg_validate_for_serve(&s.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "flexq-serve: %s\n", err);
        return 2;
    }
    /* fq_log reads its threshold once, at the first log line: set it before anything logs. */
    setenv("FLEXQ_LOG_LEVEL", log_level_name(s.cfg.log_level), 1);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not a signal */

    char *dump = cfg_dump_json(&s.cfg);
    fq_log(FQ_LOG_INFO, "flexq-serve %s starting: %s", FLEXQ_VERSION, dump ? dump : "{}");
    free(dump);

    rc = srv_main_start(&s, err, sizeof err);
    if (rc == 0)
        rc = srv_loop_run(s.loop, err, sizeof err);
    if (rc)
        fprintf(stderr, "flexq-serve: %s\n", err);
    if (s.load_started) {
        pthread_join(s.load_thread, NULL); /* a signal may have stopped the loop mid-load */
        if (rc == 0 && s.load_rc)          /* logged by on_loaded */
            rc = s.load_rc;
    }
    srv_main_close(&s);
    if (rc == 0)
        fq_log(FQ_LOG_INFO, "flexq-serve stopped");
    return rc ? 1 : 0;
}

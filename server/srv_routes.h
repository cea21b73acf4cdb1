/* srv_routes.h — the daemon's endpoints: OpenAI completions and chat (plain and streamed), models,
 * health, readiness, metrics, tokenize and detokenize, wired to the engine.
 *
 * Every handler runs on the loop thread and never blocks: a generation request is parsed,
 * tokenized and checked here, handed to the engine as one job (one sequence per prompt and choice)
 * and deferred; the engine's events (srv_routes_engine_event, the engine's on_event) then build the
 * stream chunks or the final JSON. A streamed response starts at the job's first event, so a
 * refusal that comes before any token (queue full, queue timeout) is still a plain HTTP error. A
 * client that goes away aborts its job; the request is finished exactly once, when the job's last
 * event arrives. Every finished generation request logs one line.
 */
#ifndef SRV_ROUTES_H
#define SRV_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_model.h"
#include "srv_engine.h"
#include "srv_http.h"
#include "srv_loop.h"
#include "srv_metrics.h"

typedef struct srv_routes srv_routes;

typedef struct srv_routes_params {
    const rt_model *model;  /* tokenizer, vocabulary, chat template; borrowed */
    const char *model_name; /* the served model's id (copied); requests naming another: 404 */
    int32_t max_model_len;  /* context length checked per request (prompt + max_tokens) */
    srv_engine *engine;     /* borrowed; must outlive every job (destroy it before the loop) */
    srv_loop *loop;         /* for the draining state; borrowed */
    srv_metrics *metrics;   /* borrowed; NULL = no /metrics route and nothing recorded */
    unsigned retry_after_s; /* Retry-After of 429 and 503 answers; 0 = 1 */
    /* Called on the loop thread when, after srv_routes_drain, no generation job is left (at once
     * from srv_routes_drain when none is running). NULL = none. */
    void (*on_idle)(void *ctx);
    void *on_idle_ctx;
} srv_routes_params;

/* Creates the routes' state (finds the chat template; an unsupported one is logged and chat
 * requests then fail with 500). *out is caller-owned; destroy it after srv_http_destroy. Any
 * thread, before the loop runs. */
int srv_routes_create(const srv_routes_params *p, srv_routes **out, char *err, size_t err_len);
void srv_routes_destroy(srv_routes *r); /* NULL is a no-op */

/* Adds every route to h (before the loop runs). */
int srv_routes_register(srv_routes *r, srv_http *h, char *err, size_t err_len);

/* Adds every path srv_routes_register would add (GET /metrics only when metrics) to h, all with the
 * one handler gate and its ctx: the daemon's gate while the model loads, which then forwards to
 * srv_routes_handler. Loop thread, before srv_loop_run. */
int srv_routes_register_gate(srv_http *h, bool metrics, srv_handler_fn gate, void *ctx, char *err,
                             size_t err_len);

/* The handler srv_routes_register adds for method + path (exact), to be called with r as its ctx;
 * NULL when there is none (GET /metrics without metrics). r may be NULL (then no /metrics). For a
 * caller that registers its own routes and forwards to these (flexq-serve answers 503 while the
 * model loads). Any thread. */
srv_handler_fn srv_routes_handler(const srv_routes *r, const char *method, const char *path);

/* Begins draining: from now on /ready and new generation requests answer 503 + Retry-After
 * (while the listening socket stays open), jobs in flight go on; on_idle runs once the last one
 * finished. Idempotent. Loop thread. */
void srv_routes_drain(srv_routes *r);

/* Aborts every job in flight (drain timeout, second signal): each ends with a 503 error (an error
 * event on a stream) as its last engine event arrives. Loop thread. */
void srv_routes_abort_all(srv_routes *r);

/* Generation jobs in flight (submitted, last event not yet handled). Loop thread. */
unsigned srv_routes_n_jobs(const srv_routes *r);

/* The engine's event callback (srv_engine_params.on_event): ud is the routes' job. Loop thread. */
void srv_routes_engine_event(void *ud, const srv_engine_event *ev);

/* The model's chat template: a checkpoint's tokenizer spec, or an INT6 file's embedded tokenizer
 * JSON. *out is malloc'd (caller frees) or NULL when the model has none. Any thread. */
int srv_model_chat_template(const rt_model *m, char **out, char *err, size_t err_len);

#endif /* SRV_ROUTES_H */

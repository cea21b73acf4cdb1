/* srv_routes.c — the endpoints: request in, engine job out, engine events back to JSON or SSE.
 *
 * A generation request becomes an srv_job owned by the loop thread from the handler until the
 * engine's last event for it: the handler fills it (choices, echo text, usage counts) and submits
 * one engine job; TOKEN events append text and logprobs (or write a chunk), FINISH events settle a
 * choice, and the last event finishes the HTTP request (respond, or end the stream) and frees the
 * job. Strings that outlive one event (token texts of logprobs, echoed prompts) come from the
 * job's arena, freed with it. Submitted jobs are listed so that a drain can wait for them (on_idle
 * when the last one is gone) or abort them all.
 * Status mapping of a job that fails after submission: queue full 429, too long 400, queue
 * timeout 429 (code queue_timeout), request timeout 500 (code request_timeout), shutdown 503,
 * forward-step error 500; on a stream that already started, the error becomes an SSE error event
 * followed by [DONE].
 */
#include "srv_routes.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fq_base.h"
#include "fq_modelfile.h"
#include "fq_safetensors.h"
#include "rt_tokenizer.h"
#include "srv_errors.h"
#include "srv_openai.h"
#include "srv_sse.h"
#include "srv_stop.h"

struct srv_routes {
    srv_routes_params p;
    char *model_name;    /* owned copy */
    char *chat_template; /* owned; NULL = plain ChatML */
    char *bos_text;      /* owned; "" when the model has no BOS */
    bool chat_ok;        /* the template is one srv_chat_render knows */
    srv_model_info info;
    char retry_after[16];
    struct srv_job *jobs; /* submitted jobs (loop thread) */
    unsigned n_jobs;
    bool draining;  /* srv_routes_drain was called */
    bool idle_sent; /* on_idle ran */
};

/* ---- per-request arena ---- */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    max_align_t data[];
} arena_blk;

typedef struct arena {
    arena_blk *head;
} arena;

static void *arena_alloc(arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0)
        n = sizeof(max_align_t);
    arena_blk *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_dup(arena *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void arena_free(arena *a)
{
    for (arena_blk *b = a->head; b;) {
        arena_blk *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- jobs ---- */

typedef struct choice_st {
    char *text; /* non-stream: the whole text so far (echo included); malloc'd */
    size_t len, cap;
    srv_token_logprob *lp; /* non-stream logprobs; malloc'd array, strings in the arena */
    size_t n_lp, cap_lp;
    size_t offset_shift; /* code points of the echoed prompt before the generated text */
    srv_finish finish;
    bool finished;
    int32_t n_generated;
} choice_st;

typedef struct srv_job {
    srv_routes *r;
    struct srv_job *prev, *next; /* r->jobs while linked */
    bool linked;
    srv_req *req;       /* until the request is finished (job_complete) */
    char req_id[136];   /* its X-Request-Id, for the log line written after it is gone */
    srv_stream *st;     /* once the stream started */
    bool stream_failed; /* could not start the stream: answer with a plain response */
    uint64_t engine_id; /* 0 = not submitted */
    bool chat, stream, include_usage, echo;
    int32_t logprobs; /* -1 = none; else top alternatives per token */
    char id[64];
    int64_t created;
    size_t n_choices;
    choice_st *choices; /* [n_choices] */
    size_t n_per_prompt;
    const char **echo_text; /* [n_prompts] in the arena (echo only) */
    size_t *echo_len;
    int32_t **echo_tokens; /* [n_prompts] (echo + logprobs only) */
    size_t *echo_n;
    int64_t prompt_tokens; /* usage: over all prompts, each once */
    int64_t completion_tokens;
    bool client_gone, timed_out, aborted_other, abort_sent;
    bool shutdown; /* the connection was closed by the server's shutdown, not the client */
    srv_error err; /* status != 0: the job failed with this */
    double t_arrival, t_first;
    arena mem;
} srv_job;

static void job_link(srv_job *job)
{
    srv_routes *r = job->r;
    job->prev = NULL;
    job->next = r->jobs;
    if (r->jobs)
        r->jobs->prev = job;
    r->jobs = job;
    job->linked = true;
    r->n_jobs++;
}

static void job_unlink(srv_job *job)
{
    srv_routes *r = job->r;
    if (!job->linked)
        return;
    if (job->prev)
        job->prev->next = job->next;
    else
        r->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->linked = false;
    r->n_jobs--;
}

/* Tells main when a drain has nothing left to wait for. */
static void routes_check_idle(srv_routes *r)
{
    if (r->draining && r->n_jobs == 0 && !r->idle_sent) {
        r->idle_sent = true;
        if (r->p.on_idle)
            r->p.on_idle(r->p.on_idle_ctx);
    }
}

static void job_free(srv_job *job)
{
    if (!job)
        return;
    for (size_t i = 0; i < job->n_choices; i++) {
        free(job->choices[i].text);
        free(job->choices[i].lp);
    }
    free(job->choices);
    arena_free(&job->mem);
    free(job);
}

static srv_job *job_new(srv_routes *r, srv_req *req, bool chat, size_t n_prompts, size_t n)
{
    srv_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->r = r;
    job->req = req;
    snprintf(job->req_id, sizeof job->req_id, "%s", srv_req_id(req));
    job->chat = chat;
    job->n_per_prompt = n;
    job->n_choices = n_prompts * n;
    job->logprobs = -1;
    job->t_arrival = fq_now_s();
    job->t_first = -1.0;
    job->created = (int64_t)time(NULL);
    job->choices = fq_calloc_array(job->n_choices, sizeof *job->choices);
    job->echo_text = arena_alloc(&job->mem, n_prompts * sizeof *job->echo_text);
    job->echo_len = arena_alloc(&job->mem, n_prompts * sizeof *job->echo_len);
    job->echo_tokens = arena_alloc(&job->mem, n_prompts * sizeof *job->echo_tokens);
    job->echo_n = arena_alloc(&job->mem, n_prompts * sizeof *job->echo_n);
    if (!job->choices || !job->echo_text || !job->echo_len || !job->echo_tokens || !job->echo_n ||
        srv_make_id(chat ? "chatcmpl-" : "cmpl-", job->id, sizeof job->id) != 0) {
        job_free(job);
        return NULL;
    }
    memset(job->echo_tokens, 0, n_prompts * sizeof *job->echo_tokens);
    memset(job->echo_n, 0, n_prompts * sizeof *job->echo_n);
    return job;
}

static int text_append(choice_st *c, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *nt = realloc(c->text, cap);
        if (!nt)
            return FQ_ENOMEM;
        c->text = nt;
        c->cap = cap;
    }
    memcpy(c->text + c->len, s, n);
    c->len += n;
    c->text[c->len] = '\0';
    return 0;
}

/* The raw bytes of one token, copied into the job's arena. */
static int token_text(srv_job *job, int32_t id, const char **out, size_t *len)
{
    char small[256];
    int n = rt_tokenizer_token_bytes(job->r->p.model->tok, id, small, sizeof small);
    if (n < 0)
        n = 0;
    char *d = arena_alloc(&job->mem, (size_t)n + 1);
    if (!d)
        return FQ_ENOMEM;
    if ((size_t)n <= sizeof small)
        memcpy(d, small, (size_t)n);
    else
        rt_tokenizer_token_bytes(job->r->p.model->tok, id, d, (size_t)n);
    d[n] = '\0';
    *out = d;
    *len = (size_t)n;
    return 0;
}

/* One token's logprob entry (strings and alternatives in the arena). */
static int make_logprob(srv_job *job, int32_t token, const rt_sample_result *s, size_t offset,
                        srv_token_logprob *out)
{
    memset(out, 0, sizeof *out);
    int rc = token_text(job, token, &out->token, &out->token_len);
    out->logprob = s ? s->logprob : NAN;
    out->text_offset = offset;
    if (rc == 0 && s && s->n_top > 0) {
        srv_top_logprob *top = arena_alloc(&job->mem, (size_t)s->n_top * sizeof *top);
        if (!top)
            return FQ_ENOMEM;
        for (int32_t k = 0; rc == 0 && k < s->n_top; k++) {
            rc = token_text(job, s->top[k].token, &top[k].token, &top[k].token_len);
            top[k].logprob = s->top[k].logprob;
        }
        out->top = top;
        out->n_top = (size_t)s->n_top;
    }
    return rc;
}

static int lp_push(choice_st *c, const srv_token_logprob *lp)
{
    if (c->n_lp == c->cap_lp) {
        size_t cap = c->cap_lp ? c->cap_lp * 2 : 32;
        srv_token_logprob *n = realloc(c->lp, cap * sizeof *n);
        if (!n)
            return FQ_ENOMEM;
        c->lp = n;
        c->cap_lp = cap;
    }
    c->lp[c->n_lp++] = *lp;
    return 0;
}

static void job_fail(srv_job *job, int status, const char *code, const char *msg)
{
    if (job->err.status)
        return; /* the first failure is the one reported */
    srv_error_set(&job->err, status, NULL, NULL, "%s", msg);
    srv_error_set_code(&job->err, code);
}

/* ---- responses ---- */

static void log_request(const srv_job *job, unsigned status)
{
    double now = fq_now_s();
    fq_log(FQ_LOG_INFO,
           "request %s %s: status %u, prompt %" PRId64 " tokens, generated %" PRId64
           " tokens, ttft %.3f s, total %.3f s%s",
           job->req_id, job->chat ? "chat" : "completion", status, job->prompt_tokens,
           job->completion_tokens, job->t_first >= 0 ? job->t_first - job->t_arrival : -1.0,
           now - job->t_arrival,
           job->shutdown      ? " (closed at shutdown)"
           : job->client_gone ? " (client gone)"
                              : "");
}

static unsigned respond_error(srv_routes *r, srv_req *req, const srv_error *err)
{
    if (err->status == 429 || err->status == 503)
        srv_req_add_header(req, "Retry-After", r->retry_after);
    srv_req_respond_error(req, err);
    return err->status ? (unsigned)err->status : 500;
}

static unsigned respond_json_obj(srv_req *req, unsigned status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) {
        srv_req_respond_errorf(req, 500, NULL, "out of memory");
        return 500;
    }
    srv_req_respond_json(req, status, text);
    free(text);
    return status;
}

static srv_resp_meta job_meta(const srv_job *job)
{
    return (srv_resp_meta){.id = job->id, .model = job->r->model_name, .created = job->created};
}

static void stream_obj(srv_job *job, json_t *obj)
{
    char *ev = NULL;
    size_t len = 0;
    if (obj && srv_sse_event(obj, &ev, &len) == 0) {
        srv_stream_write(job->st, ev, len); /* dropped once the client is gone */
        free(ev);
    }
    json_decref(obj);
}

static srv_usage job_usage(const srv_job *job)
{
    return (srv_usage){.prompt_tokens = job->prompt_tokens,
                       .completion_tokens = job->completion_tokens};
}

/* Starts the SSE stream: the role chunk of each chat choice, the echoed prompt of each
 * completion choice. False when the stream could not start (closed or out of memory). */
static bool stream_begin(srv_job *job)
{
    if (job->st)
        return true;
    if (job->stream_failed)
        return false;
    job->st = srv_req_stream(job->req, 200, "text/event-stream");
    if (!job->st) {
        job->stream_failed = true;
        return false;
    }
    srv_resp_meta meta = job_meta(job);
    for (size_t i = 0; i < job->n_choices; i++) {
        srv_choice c = {.index = (uint32_t)i};
        if (job->chat) {
            c.text = "";
            stream_obj(job, srv_chat_chunk(&meta, &c, true, job->include_usage));
        } else if (job->echo) {
            size_t p = i / job->n_per_prompt;
            c.text = job->echo_text[p];
            c.text_len = job->echo_len[p];
            stream_obj(job, srv_completion_chunk(&meta, &c, job->include_usage));
        }
    }
    return true;
}

/* A content chunk (text delta, optional logprob entry) of one choice. */
static void stream_delta(srv_job *job, size_t idx, const char *text, size_t len,
                         const srv_token_logprob *lp, srv_finish finish)
{
    srv_resp_meta meta = job_meta(job);
    srv_choice c = {.index = (uint32_t)idx, .text = text, .text_len = len};
    if (lp) {
        c.has_logprobs = true;
        c.logprobs = lp;
        c.n_logprobs = 1;
    }
    if (job->chat) {
        c.finish = SRV_FINISH_NONE;
        if (text || lp)
            stream_obj(job, srv_chat_chunk(&meta, &c, false, job->include_usage));
        if (finish != SRV_FINISH_NONE) {
            srv_choice f = {.index = (uint32_t)idx, .finish = finish};
            stream_obj(job, srv_chat_chunk(&meta, &f, false, job->include_usage));
        }
    } else {
        c.finish = finish;
        if (!c.text)
            c.text = "";
        stream_obj(job, srv_completion_chunk(&meta, &c, job->include_usage));
    }
}

/* The echoed prompt's entries at the head of a choice's logprobs (non-stream). */
static int echo_logprobs(srv_job *job, size_t idx)
{
    size_t p = idx / job->n_per_prompt;
    choice_st *c = &job->choices[idx];
    size_t off = 0;
    for (size_t k = 0; k < job->echo_n[p]; k++) {
        srv_token_logprob lp;
        int rc = make_logprob(job, job->echo_tokens[p][k], NULL, off, &lp);
        if (rc == 0)
            rc = lp_push(c, &lp);
        if (rc)
            return rc;
        off += srv_utf8_count_cp(lp.token, lp.token_len);
    }
    return 0;
}

/* Finishes the HTTP request exactly once and frees the job. */
static void job_complete(srv_job *job)
{
    srv_routes *r = job->r;
    srv_req_on_close(job->req, NULL, NULL); /* the job is about to go */
    for (size_t i = 0; i < job->n_choices; i++)
        job->completion_tokens += job->choices[i].n_generated;
    unsigned status = 200;
    if (job->client_gone)
        srv_metrics_aborted(r->p.metrics, job->shutdown ? "shutdown" : "client_disconnect");
    else if (job->timed_out)
        srv_metrics_aborted(r->p.metrics, "timeout");
    else if (job->aborted_other)
        srv_metrics_aborted(r->p.metrics, "shutdown");

    if (job->stream && !job->err.status && !job->st)
        stream_begin(job); /* nothing came before the end (e.g. max_tokens 0) */
    if (job->st) {
        if (job->err.status) {
            json_t *e = srv_error_to_json(&job->err);
            stream_obj(job, e);
            status = (unsigned)job->err.status;
        } else if (job->include_usage) {
            srv_resp_meta meta = job_meta(job);
            srv_usage u = job_usage(job);
            stream_obj(job, srv_usage_chunk(&meta, job->chat, &u));
        }
        srv_stream_write(job->st, srv_sse_done(), SRV_SSE_DONE_LEN);
        srv_stream_end(job->st);
    } else if (job->client_gone) {
        status = 499; /* nobody to answer: finish the request without building the body */
        srv_req_respond_errorf(job->req, 500, NULL, "the client closed the connection");
    } else if (job->err.status || job->stream_failed) {
        if (!job->err.status)
            job_fail(job, 500, NULL, "could not start the response stream");
        status = respond_error(r, job->req, &job->err);
    } else {
        srv_choice *ch = fq_calloc_array(job->n_choices, sizeof *ch);
        json_t *obj = NULL;
        if (ch) {
            for (size_t i = 0; i < job->n_choices; i++) {
                choice_st *c = &job->choices[i];
                ch[i] = (srv_choice){.index = (uint32_t)i,
                                     .text = c->text ? c->text : "",
                                     .text_len = c->len,
                                     .has_logprobs = job->logprobs >= 0,
                                     .logprobs = c->lp,
                                     .n_logprobs = c->n_lp,
                                     .finish = c->finish};
            }
            srv_resp_meta meta = job_meta(job);
            srv_usage u = job_usage(job);
            obj = job->chat ? srv_chat_response(&meta, ch, job->n_choices, &u)
                            : srv_completion_response(&meta, ch, job->n_choices, &u);
            free(ch);
        }
        status = respond_json_obj(job->req, 200, obj);
    }
    log_request(job, job->client_gone && !job->st ? 499 : status);
    job_unlink(job);
    job_free(job);
    routes_check_idle(r);
}

/* ---- engine events (loop thread) ---- */

static void ev_reject(srv_job *job, const srv_engine_event *ev)
{
    srv_routes *r = job->r;
    const char *reason = "bad_request";
    switch (ev->code) {
    case RT_SCHED_EQUEUE_FULL:
        job_fail(job, 429, "queue_full", ev->message);
        reason = "queue_full";
        break;
    case RT_SCHED_ETOO_LONG:
    case RT_SCHED_ENO_FIT:
        job_fail(job, 400, "context_length_exceeded", ev->message);
        reason = "too_long";
        break;
    case FQ_EINVAL:
        job_fail(job, 400, NULL, ev->message);
        break;
    case FQ_EIO:
        job_fail(job, 503, "shutting_down", ev->message);
        reason = "draining";
        break;
    default:
        job_fail(job, 500, NULL, ev->message);
        reason = "error";
        break;
    }
    srv_metrics_rejected(r->p.metrics, reason);
}

static void ev_token(srv_job *job, const srv_engine_event *ev)
{
    if (ev->seq >= job->n_choices)
        return;
    choice_st *c = &job->choices[ev->seq];
    c->n_generated = ev->index + 1;
    if (job->t_first < 0)
        job->t_first = fq_now_s();
    if (job->err.status || job->client_gone)
        return; /* the job is being aborted: nothing more to show */
    srv_token_logprob lp;
    bool has_lp = false;
    if (job->logprobs >= 0 && ev->sample) {
        if (make_logprob(job, ev->token, ev->sample, c->offset_shift + ev->text_offset, &lp) != 0)
            job_fail(job, 500, NULL, "out of memory");
        else
            has_lp = true;
    }
    if (job->stream) {
        if (stream_begin(job) && (ev->text_len > 0 || has_lp))
            stream_delta(job, ev->seq, ev->text, ev->text_len, has_lp ? &lp : NULL,
                         SRV_FINISH_NONE);
        return;
    }
    if (text_append(c, ev->text, ev->text_len) != 0 || (has_lp && lp_push(c, &lp) != 0))
        job_fail(job, 500, NULL, "out of memory");
}

static void ev_finish(srv_job *job, const srv_engine_event *ev)
{
    srv_routes *r = job->r;
    if (ev->seq >= job->n_choices)
        return;
    choice_st *c = &job->choices[ev->seq];
    c->finished = true;
    c->n_generated = ev->n_generated;
    switch (ev->reason) {
    case RT_FINISH_STOP:
        c->finish = SRV_FINISH_STOP;
        break;
    case RT_FINISH_LENGTH:
        c->finish = SRV_FINISH_LENGTH;
        break;
    case RT_FINISH_ABORT:
        if (ev->timed_out) {
            job->timed_out = true;
            job_fail(job, 500, "request_timeout",
                     "the request did not finish within the server's request timeout");
        } else if (!job->client_gone && !job->err.status) { /* shutdown, not a failed choice */
            job->aborted_other = true;
            job_fail(job, 503, "shutting_down", "the server is shutting down");
        }
        break;
    case RT_FINISH_TIMEOUT:
        job->timed_out = true; /* counted as aborted{reason="timeout"} */
        job_fail(job, 429, "queue_timeout",
                 "the request waited too long in the queue for a free slot; retry later");
        break;
    case RT_FINISH_ERROR:
    default:
        job_fail(job, 500, NULL, ev->message && *ev->message ? ev->message : "generation failed");
        break;
    }
    if (job->err.status && !job->abort_sent && !ev->last) {
        job->abort_sent = true; /* one choice failed: the request fails, stop the others */
        srv_engine_abort(r->p.engine, job->engine_id);
    }
    if (job->err.status || job->client_gone)
        return;
    if (job->stream) {
        if (stream_begin(job))
            stream_delta(job, ev->seq, ev->text_len ? ev->text : (job->chat ? NULL : ""),
                         ev->text_len, NULL, c->finish);
        return;
    }
    if (text_append(c, ev->text, ev->text_len) != 0)
        job_fail(job, 500, NULL, "out of memory");
}

void srv_routes_engine_event(void *ud, const srv_engine_event *ev)
{
    srv_job *job = ud;
    switch (ev->type) {
    case SRV_ENGINE_EV_TOKEN:
        ev_token(job, ev);
        break;
    case SRV_ENGINE_EV_FINISH:
        ev_finish(job, ev);
        break;
    case SRV_ENGINE_EV_REJECT:
        ev_reject(job, ev);
        break;
    }
    if (ev->last)
        job_complete(job);
}

static void on_client_close(srv_req *req, void *ctx)
{
    (void)req;
    srv_job *job = ctx;
    if (job->client_gone)
        return;
    job->client_gone = true;
    job->shutdown = srv_loop_is_draining(job->r->p.loop); /* closed by the drain timeout */
    if (job->engine_id && !job->abort_sent) {
        job->abort_sent = true;
        srv_engine_abort(job->r->p.engine, job->engine_id);
    }
}

/* ---- handlers: shared pieces ---- */

/* 503 while draining; true when it answered. */
static bool refuse_draining(srv_routes *r, srv_req *req)
{
    if (!r->draining && !srv_loop_is_draining(r->p.loop))
        return false;
    srv_error e;
    srv_error_set(&e, 503, NULL, NULL, "The server is shutting down");
    srv_error_set_code(&e, "shutting_down");
    respond_error(r, req, &e);
    srv_metrics_rejected(r->p.metrics, "draining");
    return true;
}

static void refuse(srv_routes *r, srv_req *req, const srv_error *e)
{
    unsigned status = e->status ? (unsigned)e->status : 500;
    fq_log(FQ_LOG_INFO, "request %s %s: status %u: %s", srv_req_id(req), srv_req_path(req), status,
           e->message);
    if (status == 400)
        srv_metrics_rejected(r->p.metrics, "bad_request");
    respond_error(r, req, e);
}

/* The prompts of a job, tokenized; freed by the caller with free() per entry. */
typedef struct prompt_ids {
    int32_t *ids;
    size_t n;
} prompt_ids;

static void prompts_free(prompt_ids *p, size_t n)
{
    if (!p)
        return;
    for (size_t i = 0; i < n; i++)
        free(p[i].ids);
    free(p);
}

/* Checks the sampling parameters the way the scheduler will (400 naming the parameter). */
static int check_sampling(srv_routes *r, const rt_sampling_params *sp, srv_error *err)
{
    char msg[256];
    const char *bad = NULL;
    if (rt_sampling_validate(sp, r->info.n_vocab, msg, sizeof msg, &bad) != 0)
        return srv_error_set(err, 400, NULL, bad, "%s", msg);
    return 0;
}

/* Builds the engine job (one sequence per prompt and choice) and submits it; on success the
 * request is deferred and owned by the job. On failure err is set and the job stays the caller's.
 */
static int job_submit(srv_job *job, const prompt_ids *prompts, size_t n_prompts, int32_t max_tokens,
                      const srv_sampling *s, int32_t logprobs, char *const *stop,
                      const size_t *stop_len, size_t n_stop, srv_error *err)
{
    srv_routes *r = job->r;
    rt_sampling_params sp = srv_sampling_params(s, logprobs);
    int rc = check_sampling(r, &sp, err);
    if (rc)
        return rc;
    srv_engine_seq *seqs = fq_calloc_array(job->n_choices, sizeof *seqs);
    if (!seqs)
        return srv_error_set(err, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < job->n_choices; i++) {
        size_t p = i / job->n_per_prompt, j = i % job->n_per_prompt;
        seqs[i] = (srv_engine_seq){.prompt = prompts[p].ids,
                                   .n_prompt = (int32_t)prompts[p].n,
                                   .max_tokens = max_tokens,
                                   .seed_offset = j,
                                   .count_prompt = j == 0};
    }
    srv_engine_job ej = {.seqs = seqs,
                         .n_seqs = job->n_choices,
                         .sampling = sp,
                         .ignore_eos = s->ignore_eos,
                         .stop = (const char *const *)stop,
                         .stop_len = stop_len,
                         .n_stop = n_stop,
                         .skip_special = true,
                         .arrival_s = job->t_arrival,
                         .ud = job};
    rc = srv_engine_submit(r->p.engine, &ej, &job->engine_id);
    free(seqs);
    if (rc == FQ_EIO)
        return srv_error_set(err, 503, NULL, NULL, "The server is shutting down");
    if (rc)
        return srv_error_set(err, 500, NULL, NULL, "cannot queue the request: %s", fq_strerror(rc));
    srv_req_on_close(job->req, on_client_close, job);
    job_link(job);
    return 0;
}

/* max_tokens 0 (completions with echo): nothing to generate; every choice ends at once. */
static void job_finish_now(srv_job *job)
{
    for (size_t i = 0; i < job->n_choices; i++) {
        choice_st *c = &job->choices[i];
        c->finished = true;
        c->finish = SRV_FINISH_LENGTH;
        if (job->stream) {
            if (stream_begin(job))
                stream_delta(job, i, "", 0, NULL, SRV_FINISH_LENGTH);
        }
    }
    job_complete(job);
}

/* ---- POST /v1/completions ---- */

static void h_completions(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    if (refuse_draining(r, req))
        return;
    size_t body_len = 0;
    const char *body = srv_req_body(req, &body_len);
    srv_completion_req cr;
    srv_error err;
    srv_error_clear(&err);
    prompt_ids *prompts = NULL;
    srv_job *job = NULL;
    int rc = srv_completion_req_parse(body, body_len, &r->info, &cr, &err);
    if (rc == 0) {
        prompts = fq_calloc_array(cr.n_prompts, sizeof *prompts);
        job = prompts ? job_new(r, req, false, cr.n_prompts, (size_t)cr.n) : NULL;
        if (!job)
            rc = srv_error_set(&err, 500, NULL, NULL, "out of memory");
    }
    int32_t max_tokens = cr.max_tokens;
    for (size_t i = 0; rc == 0 && i < cr.n_prompts; i++) {
        srv_prompt *p = &cr.prompts[i];
        char param[32];
        snprintf(param, sizeof param, cr.n_prompts > 1 ? "prompt[%zu]" : "prompt", i);
        if (p->is_tokens) {
            prompts[i].ids = fq_malloc_array(p->n_tokens, sizeof(int32_t));
            if (!prompts[i].ids) {
                rc = srv_error_set(&err, 500, NULL, NULL, "out of memory");
                break;
            }
            memcpy(prompts[i].ids, p->tokens, p->n_tokens * sizeof(int32_t));
            prompts[i].n = p->n_tokens;
            for (size_t k = 0; rc == 0 && k < p->n_tokens; k++)
                if (p->tokens[k] < 0 || p->tokens[k] >= r->info.n_vocab)
                    rc =
                        srv_error_set(&err, 400, NULL, param, "token id %d is out of range [0, %d)",
                                      (int)p->tokens[k], (int)r->info.n_vocab);
        } else {
            rt_encode_params ep = rt_encode_default_params();
            ep.add_special = true;
            ep.parse_special = true;
            char msg[256];
            if (rt_tokenizer_encode(r->p.model->tok, p->text, p->text_len, &ep, &prompts[i].ids,
                                    &prompts[i].n, msg, sizeof msg) != 0)
                rc = srv_error_set(&err, 400, NULL, param, "cannot tokenize the prompt: %s", msg);
        }
        int32_t mt = cr.max_tokens;
        if (rc == 0)
            rc = srv_resolve_max_tokens(prompts[i].n, &mt, r->info.max_model_len, param, &err);
        if (rc == 0) {
            max_tokens = mt;
            job->prompt_tokens += (int64_t)prompts[i].n;
        }
        if (rc == 0 && cr.echo) {
            char *text = NULL;
            size_t len = 0;
            if (p->is_tokens) {
                char msg[256];
                if (rt_tokenizer_decode(r->p.model->tok, p->tokens, p->n_tokens, false, &text, &len,
                                        msg, sizeof msg) != 0)
                    rc = srv_error_set(&err, 400, NULL, param, "%s", msg);
            }
            job->echo_text[i] =
                arena_dup(&job->mem, text ? text : p->text, text ? len : p->text_len);
            job->echo_len[i] = text ? len : p->text_len;
            free(text);
            if (rc == 0 && !job->echo_text[i])
                rc = srv_error_set(&err, 500, NULL, NULL, "out of memory");
            if (rc == 0 && cr.logprobs >= 0) {
                job->echo_tokens[i] = arena_alloc(&job->mem, prompts[i].n * sizeof(int32_t));
                if (!job->echo_tokens[i])
                    rc = srv_error_set(&err, 500, NULL, NULL, "out of memory");
                else
                    memcpy(job->echo_tokens[i], prompts[i].ids, prompts[i].n * sizeof(int32_t));
                job->echo_n[i] = prompts[i].n;
            }
        }
    }
    if (rc == 0) {
        job->stream = cr.stream;
        job->include_usage = cr.include_usage;
        job->echo = cr.echo;
        job->logprobs = cr.logprobs;
        for (size_t i = 0; rc == 0 && cr.echo && i < job->n_choices; i++) {
            size_t p = i / job->n_per_prompt;
            choice_st *c = &job->choices[i];
            c->offset_shift = srv_utf8_count_cp(job->echo_text[p], job->echo_len[p]);
            if (!cr.stream && (text_append(c, job->echo_text[p], job->echo_len[p]) != 0 ||
                               (cr.logprobs >= 0 && echo_logprobs(job, i) != 0)))
                rc = srv_error_set(&err, 500, NULL, NULL, "out of memory");
        }
    }
    if (rc == 0 && max_tokens == 0) {
        prompts_free(prompts, cr.n_prompts);
        srv_completion_req_close(&cr);
        job_finish_now(job);
        return;
    }
    if (rc == 0)
        rc = job_submit(job, prompts, cr.n_prompts, max_tokens, &cr.sampling, cr.logprobs, cr.stop,
                        cr.stop_len, cr.n_stop, &err);
    prompts_free(prompts, cr.n_prompts);
    srv_completion_req_close(&cr);
    if (rc) {
        job_free(job);
        refuse(r, req, &err);
    }
}

/* ---- POST /v1/chat/completions ---- */

static int render_chat(srv_routes *r, const srv_chat_msg *msgs, size_t n, bool add_gen, char **text,
                       size_t *len, srv_error *err)
{
    if (!r->chat_ok)
        return srv_error_set(err, 500, NULL, NULL,
                             "this model's chat template is not supported by the server");
    return srv_chat_render(r->chat_template, r->bos_text, msgs, n, add_gen, text, len, err);
}

static void h_chat(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    if (refuse_draining(r, req))
        return;
    size_t body_len = 0;
    const char *body = srv_req_body(req, &body_len);
    srv_chat_req cr;
    srv_error err;
    srv_error_clear(&err);
    prompt_ids prompt = {0};
    srv_job *job = NULL;
    char *text = NULL;
    size_t text_len = 0;
    int rc = srv_chat_req_parse(body, body_len, &r->info, &cr, &err);
    if (rc == 0)
        rc = render_chat(r, cr.messages, cr.n_messages, cr.add_generation_prompt, &text, &text_len,
                         &err);
    if (rc == 0) {
        rt_encode_params ep = rt_encode_default_params();
        ep.add_special = false; /* the template holds BOS and the control tokens */
        ep.parse_special = true;
        char msg[256];
        if (rt_tokenizer_encode(r->p.model->tok, text, text_len, &ep, &prompt.ids, &prompt.n, msg,
                                sizeof msg) != 0)
            rc =
                srv_error_set(&err, 400, NULL, "messages", "cannot tokenize the messages: %s", msg);
    }
    free(text);
    int32_t max_tokens = cr.max_tokens;
    if (rc == 0)
        rc = srv_resolve_max_tokens(prompt.n, &max_tokens, r->info.max_model_len, "messages", &err);
    if (rc == 0) {
        job = job_new(r, req, true, 1, (size_t)cr.n);
        if (!job)
            rc = srv_error_set(&err, 500, NULL, NULL, "out of memory");
    }
    if (rc == 0) {
        job->stream = cr.stream;
        job->include_usage = cr.include_usage;
        job->logprobs = cr.logprobs ? cr.top_logprobs : -1;
        job->prompt_tokens = (int64_t)prompt.n;
        rc = job_submit(job, &prompt, 1, max_tokens, &cr.sampling, job->logprobs, cr.stop,
                        cr.stop_len, cr.n_stop, &err);
    }
    free(prompt.ids);
    srv_chat_req_close(&cr);
    if (rc) {
        job_free(job);
        refuse(r, req, &err);
    }
}

/* ---- the other endpoints ---- */

static void h_models(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    respond_json_obj(req, 200, srv_models_response(&r->info, 1));
}

static void h_health(srv_req *req, void *ctx)
{
    (void)ctx;
    srv_req_respond_json(req, 200, "{\"status\":\"ok\"}");
}

static void h_ready(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    if (r->draining || srv_loop_is_draining(r->p.loop)) {
        srv_req_add_header(req, "Retry-After", r->retry_after);
        srv_req_respond_json(req, 503, "{\"status\":\"draining\"}");
        return;
    }
    srv_req_respond_json(req, 200, "{\"status\":\"ready\"}");
}

static void h_metrics(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    size_t len = 0;
    char *text = srv_metrics_render(r->p.metrics, &len);
    if (!text) {
        srv_req_respond_errorf(req, 500, NULL, "out of memory");
        return;
    }
    srv_req_respond(req, 200, SRV_METRICS_CONTENT_TYPE, text, len);
    free(text);
}

static void h_tokenize(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    size_t body_len = 0;
    const char *body = srv_req_body(req, &body_len);
    srv_tokenize_req tr;
    srv_error err;
    srv_error_clear(&err);
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = srv_tokenize_req_parse(body, body_len, &r->info, &tr, &err);
    if (rc == 0 && tr.is_chat)
        rc =
            render_chat(r, tr.messages, tr.n_messages, tr.add_generation_prompt, &text, &len, &err);
    if (rc == 0) {
        rt_encode_params ep = rt_encode_default_params();
        ep.add_special = tr.add_special_tokens;
        ep.parse_special = true;
        char msg[256];
        if (rt_tokenizer_encode(r->p.model->tok, tr.is_chat ? text : tr.prompt,
                                tr.is_chat ? len : tr.prompt_len, &ep, &ids, &n, msg,
                                sizeof msg) != 0)
            rc = srv_error_set(&err, 400, NULL, tr.is_chat ? "messages" : "prompt", "%s", msg);
    }
    if (rc == 0)
        respond_json_obj(req, 200, srv_tokenize_response(ids, n, r->info.max_model_len));
    else
        refuse(r, req, &err);
    free(ids);
    free(text);
    srv_tokenize_req_close(&tr);
}

static void h_detokenize(srv_req *req, void *ctx)
{
    srv_routes *r = ctx;
    size_t body_len = 0;
    const char *body = srv_req_body(req, &body_len);
    srv_detokenize_req dr;
    srv_error err;
    srv_error_clear(&err);
    char *text = NULL;
    size_t len = 0;
    int rc = srv_detokenize_req_parse(body, body_len, &r->info, &dr, &err);
    if (rc == 0) {
        char msg[256];
        if (rt_tokenizer_decode(r->p.model->tok, dr.tokens, dr.n_tokens, false, &text, &len, msg,
                                sizeof msg) != 0)
            rc = srv_error_set(&err, 400, NULL, "tokens", "%s", msg);
    }
    if (rc == 0)
        respond_json_obj(req, 200, srv_detokenize_response(text, len));
    else
        refuse(r, req, &err);
    free(text);
    srv_detokenize_req_close(&dr);
}

/* ---- drain ---- */

void srv_routes_drain(srv_routes *r)
{
    if (r->draining)
        return;
    r->draining = true;
    fq_log(FQ_LOG_INFO, "draining: %u request(s) in flight; new requests get 503", r->n_jobs);
    routes_check_idle(r);
}

void srv_routes_abort_all(srv_routes *r)
{
    for (srv_job *j = r->jobs; j; j = j->next)
        if (j->engine_id && !j->abort_sent) {
            j->abort_sent = true;
            srv_engine_abort(r->p.engine, j->engine_id);
        }
}

unsigned srv_routes_n_jobs(const srv_routes *r)
{
    return r->n_jobs;
}

/* ---- lifecycle ---- */

int srv_model_chat_template(const rt_model *m, char **out, char *err, size_t err_len)
{
    *out = NULL;
    if (m->ck) {
        if (m->ck->tok.chat_template) {
            *out = strdup(m->ck->tok.chat_template);
            if (!*out)
                return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
        }
        return 0;
    }
    if (!m->file)
        return 0;
    const char *tj = fq_st_metadata((const fq_st_file *)m->file, FQ_MF_KEY_TOKENIZER);
    if (!tj)
        return 0;
    json_error_t je;
    json_t *root = json_loads(tj, 0, &je);
    if (!root)
        return fq_err(err, err_len, FQ_EFORMAT, "metadata %s is not JSON: %s", FQ_MF_KEY_TOKENIZER,
                      je.text);
    const char *t = json_string_value(json_object_get(root, "chat_template"));
    int rc = 0;
    if (t) {
        *out = strdup(t);
        if (!*out)
            rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    }
    json_decref(root);
    return rc;
}

int srv_routes_create(const srv_routes_params *p, srv_routes **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!p || !p->model || !p->engine || !p->loop)
        return fq_err(err, err_len, FQ_EINVAL,
                      "srv_routes_create: model, engine and loop are "
                      "required");
    srv_routes *r = calloc(1, sizeof *r);
    if (!r)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    r->p = *p;
    r->model_name = strdup(p->model_name ? p->model_name : "");
    int rc = r->model_name ? 0 : fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    if (rc == 0)
        rc = srv_model_chat_template(p->model, &r->chat_template, err, err_len);
    if (rc == 0) {
        const rt_tokenizer *tok = p->model->tok;
        int32_t bos = rt_tokenizer_bos(tok);
        char buf[256] = "";
        int n = bos >= 0 ? rt_tokenizer_token_bytes(tok, bos, buf, sizeof buf - 1) : 0;
        if (n < 0 || n >= (int)sizeof buf)
            n = 0;
        buf[n] = '\0';
        r->bos_text = strdup(buf);
        if (!r->bos_text)
            rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    }
    if (rc) {
        srv_routes_destroy(r);
        return rc;
    }
    r->chat_ok = srv_chat_template_format(r->chat_template) != SRV_CHAT_UNSUPPORTED;
    if (!r->chat_ok)
        fq_log(FQ_LOG_WARN, "the model's chat template is not one the server can render "
                            "(ChatML or Llama-3): /v1/chat/completions will answer 500");
    r->info = (srv_model_info){.id = r->model_name,
                               .n_vocab = rt_tokenizer_n_vocab(p->model->tok),
                               .max_model_len = p->max_model_len,
                               .created = (int64_t)time(NULL)};
    if (p->model->cfg.n_vocab > 0 && p->model->cfg.n_vocab < r->info.n_vocab)
        r->info.n_vocab = p->model->cfg.n_vocab;
    snprintf(r->retry_after, sizeof r->retry_after, "%u", p->retry_after_s ? p->retry_after_s : 1);
    *out = r;
    return 0;
}

void srv_routes_destroy(srv_routes *r)
{
    if (!r)
        return;
    free(r->model_name);
    free(r->chat_template);
    free(r->bos_text);
    free(r);
}

/* Every route srv_routes_register adds (GET /metrics only with metrics). */
static const struct {
    const char *method, *path;
    srv_handler_fn fn;
} routes_table[] = {
    {"POST", "/v1/completions", h_completions},
    {"POST", "/v1/chat/completions", h_chat},
    {"GET", "/v1/models", h_models},
    {"GET", "/health", h_health},
    {"GET", "/ready", h_ready},
    {"POST", "/tokenize", h_tokenize},
    {"POST", "/detokenize", h_detokenize},
    {"GET", "/metrics", h_metrics},
};

/* Adds every route of the table to h: each with its own handler and ctx, or all with gate. */
static int register_table(srv_http *h, bool metrics, srv_handler_fn gate, void *ctx, char *err,
                          size_t err_len)
{
    for (size_t i = 0; i < sizeof routes_table / sizeof routes_table[0]; i++) {
        if (routes_table[i].fn == h_metrics && !metrics)
            continue;
        int rc = srv_http_route(h, routes_table[i].method, routes_table[i].path,
                                gate ? gate : routes_table[i].fn, ctx, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

int srv_routes_register(srv_routes *r, srv_http *h, char *err, size_t err_len)
{
    return register_table(h, r->p.metrics != NULL, NULL, r, err, err_len);
}

int srv_routes_register_gate(srv_http *h, bool metrics, srv_handler_fn gate, void *ctx, char *err,
                             size_t err_len)
{
    return register_table(h, metrics, gate, ctx, err, err_len);
}

srv_handler_fn srv_routes_handler(const srv_routes *r, const char *method, const char *path)
{
    if (!method || !path)
        return NULL;
    for (size_t i = 0; i < sizeof routes_table / sizeof routes_table[0]; i++) {
        if (routes_table[i].fn == h_metrics && !(r && r->p.metrics))
            continue;
        if (strcmp(routes_table[i].method, method) == 0 && strcmp(routes_table[i].path, path) == 0)
            return routes_table[i].fn;
    }
    return NULL;
}

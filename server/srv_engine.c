/* srv_engine.c — the engine thread: commands in, scheduler steps, events out as loop messages.
 *
 * Design. The engine is one thread and one mutex-guarded command list. The loop thread appends
 * commands (SUBMIT carries a fully copied job, ABORT a job id) and signals the condition variable;
 * the engine thread takes the whole list at once and applies it outside the lock, so the loop never
 * waits for more than a list append. The thread then runs rt_sched_step while the scheduler has
 * work and sleeps on the condition variable when it has none (or, with requests queued that cannot
 * run yet, for a few milliseconds). Between steps it aborts jobs that outlived request_timeout_s.
 * All scheduler state, and every job's per-sequence srv_stop, live on the engine thread; the loop
 * only ever sees events, each a malloc'd message that srv_loop runs on the loop thread and frees.
 * A job's lifetime on the engine side: SUBMIT → each sequence submitted to rt_sched (a refusal of
 * any of them aborts the others silently and posts one REJECT) → TOKEN/FINISH callbacks → after
 * the last FINISH the job is freed and its final event carries `last`. Shutdown rejects queued
 * submissions, aborts everything active (their FINISH events are posted as usual) and destroys the
 * scheduler on its own thread.
 */
#include "srv_engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fq_base.h"
#include "srv_stop.h"

/* ---- engine-side job state (engine thread once submitted) ---- */

typedef struct eng_job eng_job;

typedef struct eng_seq {
    eng_job *job;
    uint32_t index;
    int32_t *prompt; /* [n_prompt] owned until submitted */
    int32_t n_prompt;
    int32_t max_tokens;
    uint64_t seed_offset;
    bool count_prompt;
    uint64_t sched_id; /* 0 = not submitted */
    bool open;         /* submitted and no FINISH yet */
    srv_stop *stop;    /* owned */
    double t_last;     /* fq_now_s of the previous token; < 0 before the first */
} eng_seq;

struct eng_job {
    srv_engine *e; /* the owner, for the scheduler callbacks */
    uint64_t id;
    void *ud;
    eng_seq *seqs; /* [n_seqs] owned */
    size_t n_seqs;
    size_t n_open;
    rt_sampling_params sampling;
    rt_logit_bias *bias; /* owned copy; sampling.bias points here */
    bool ignore_eos;
    bool skip_special;
    char **stop; /* [n_stop] owned copies */
    size_t *stop_len;
    size_t n_stop;
    double arrival_s;
    bool timed_out;
    bool rejecting; /* submission failed: FINISH events of the already submitted are swallowed */
    eng_job *prev, *next; /* the engine's active list */
    /* aggregates for the metrics */
    int64_t prompt_tokens, gen_tokens;
    double queue_s, ttft_s, e2e_s;
    const char *finish_reason;
};

typedef enum { CMD_SUBMIT = 0, CMD_ABORT } cmd_type;

typedef struct eng_cmd {
    struct eng_cmd *next;
    cmd_type type;
    eng_job *job;    /* SUBMIT: taken */
    uint64_t job_id; /* ABORT */
} eng_cmd;

struct srv_engine {
    srv_engine_params p;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_cmd *head, *tail; /* guarded by mu */
    bool stopping;        /* guarded by mu */
    uint64_t next_job_id; /* guarded by mu */
    unsigned n_jobs;      /* guarded by mu: submitted, not yet finished */

    /* start-up handshake, guarded by mu */
    bool started;
    int start_rc;
    char start_err[512];

    /* engine thread only */
    rt_sched *sched;
    eng_job *active; /* jobs submitted to the scheduler */
};

/* ---- messages to the loop ---- */

typedef struct eng_msg {
    srv_msg base;
    srv_engine_event_fn fn;
    void *ud;
    srv_engine_event ev;
    rt_sample_result sample;
    char *text;    /* owned, may be NULL */
    char *message; /* owned, may be NULL */
} eng_msg;

static void msg_run(srv_msg *msg, srv_loop *loop)
{
    (void)loop;
    eng_msg *m = (eng_msg *)msg;
    m->ev.text = m->text ? m->text : "";
    m->ev.message = m->message ? m->message : "";
    if (m->ev.sample)
        m->ev.sample = &m->sample;
    m->fn(m->ud, &m->ev);
    free(m->text);
    free(m->message);
    free(m);
}

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Posts ev for job (copying text, message and sample). Out of memory here cannot be reported to
 * the loop without a message, so the allocation is retried briefly and then treated as fatal. */
static void post_event(srv_engine *e, eng_job *job, const srv_engine_event *ev)
{
    eng_msg *m = NULL;
    for (int tries = 0; tries < 100; tries++) {
        m = calloc(1, sizeof *m);
        if (m) {
            m->text = ev->text_len ? dup_bytes(ev->text, ev->text_len) : NULL;
            const char *msg = ev->message ? ev->message : "";
            m->message = *msg ? dup_bytes(msg, strlen(msg)) : NULL;
            if ((!ev->text_len || m->text) && (!*msg || m->message))
                break;
            free(m->text);
            free(m->message);
            free(m);
            m = NULL;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    FQ_ASSERT(m != NULL); /* a lost event would leave its HTTP request hanging forever */
    m->base.fn = msg_run;
    m->fn = e->p.on_event;
    m->ud = job->ud;
    m->ev = *ev;
    if (ev->sample)
        m->sample = *ev->sample;
    srv_loop_post(e->p.loop, &m->base);
}

/* ---- jobs ---- */

static void job_free(eng_job *job)
{
    if (!job)
        return;
    for (size_t i = 0; i < job->n_seqs; i++) {
        free(job->seqs[i].prompt);
        srv_stop_destroy(job->seqs[i].stop);
    }
    for (size_t i = 0; i < job->n_stop; i++)
        free(job->stop[i]);
    free(job->stop);
    free(job->stop_len);
    free(job->seqs);
    free(job->bias);
    free(job);
}

static eng_job *job_copy(const srv_engine_job *src)
{
    eng_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->seqs = fq_calloc_array(src->n_seqs, sizeof *job->seqs);
    job->n_seqs = job->seqs ? src->n_seqs : 0;
    bool ok = job->seqs != NULL;
    for (size_t i = 0; ok && i < src->n_seqs; i++) {
        const srv_engine_seq *s = &src->seqs[i];
        eng_seq *q = &job->seqs[i];
        q->job = job;
        q->index = (uint32_t)i;
        q->n_prompt = s->n_prompt;
        q->max_tokens = s->max_tokens;
        q->seed_offset = s->seed_offset;
        q->count_prompt = s->count_prompt;
        q->t_last = -1.0;
        q->prompt = fq_malloc_array((size_t)s->n_prompt, sizeof *q->prompt);
        ok = q->prompt != NULL;
        if (ok)
            memcpy(q->prompt, s->prompt, (size_t)s->n_prompt * sizeof *q->prompt);
    }
    job->sampling = src->sampling;
    if (ok && src->sampling.n_bias > 0) {
        job->bias = fq_malloc_array((size_t)src->sampling.n_bias, sizeof *job->bias);
        ok = job->bias != NULL;
        if (ok)
            memcpy(job->bias, src->sampling.bias, (size_t)src->sampling.n_bias * sizeof *job->bias);
    }
    job->sampling.bias = job->bias;
    if (ok && src->n_stop > 0) {
        job->stop = fq_calloc_array(src->n_stop, sizeof *job->stop);
        job->stop_len = fq_calloc_array(src->n_stop, sizeof *job->stop_len);
        ok = job->stop && job->stop_len;
        for (size_t i = 0; ok && i < src->n_stop; i++) {
            job->stop[i] = dup_bytes(src->stop[i], src->stop_len[i]);
            job->stop_len[i] = src->stop_len[i];
            ok = job->stop[i] != NULL;
            job->n_stop = i + 1;
        }
    }
    for (size_t i = 0; ok && i < job->n_seqs; i++)
        ok = srv_stop_create((const char *const *)job->stop, job->stop_len, job->n_stop,
                             &job->seqs[i].stop) == 0;
    if (!ok) {
        job_free(job);
        return NULL;
    }
    job->ignore_eos = src->ignore_eos;
    job->skip_special = src->skip_special;
    job->arrival_s = src->arrival_s;
    job->ud = src->ud;
    job->queue_s = job->ttft_s = job->e2e_s = -1.0;
    return job;
}

static void active_link(srv_engine *e, eng_job *job)
{
    job->prev = NULL;
    job->next = e->active;
    if (e->active)
        e->active->prev = job;
    e->active = job;
}

static void active_unlink(srv_engine *e, eng_job *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        e->active = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
}

static void job_done(srv_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->n_jobs--;
    pthread_mutex_unlock(&e->mu);
}

/* The job's request-level numbers for the metrics, once its last sequence finished. */
static void job_metrics(srv_engine *e, const eng_job *job)
{
    if (!e->p.metrics)
        return;
    srv_request_stats st = {
        .prompt_tokens = job->prompt_tokens,
        .generation_tokens = job->gen_tokens,
        .queue_s = job->queue_s,
        .ttft_s = job->ttft_s,
        .e2e_s = job->e2e_s,
        .prefill_s = job->ttft_s >= 0 && job->queue_s >= 0 ? job->ttft_s - job->queue_s : -1.0,
        .decode_s = job->ttft_s >= 0 ? job->e2e_s - job->ttft_s : -1.0,
        .finish_reason = job->finish_reason,
        .max_tokens = job->n_seqs ? job->seqs[0].max_tokens : 0,
        .n = (int32_t)job->n_seqs,
    };
    srv_metrics_request_finished(e->p.metrics, &st);
}

/* ---- scheduler callbacks (engine thread) ---- */

static int on_token(srv_engine *e, eng_seq *q, const rt_sched_event *ev)
{
    eng_job *job = q->job;
    const rt_tokenizer *tok = e->p.model->tok;
    int32_t id = ev->u.token.token;
    char small[256];
    char *bytes = small;
    int n = 0;
    if (!(job->skip_special && rt_tokenizer_is_special(tok, id))) {
        n = rt_tokenizer_token_bytes(tok, id, small, sizeof small);
        if (n > (int)sizeof small) {
            bytes = malloc((size_t)n);
            n = bytes ? rt_tokenizer_token_bytes(tok, id, bytes, (size_t)n) : 0;
            if (!bytes)
                bytes = small;
        }
        if (n < 0)
            n = 0;
    }
    srv_stop_out out = {0};
    if (srv_stop_feed(q->stop, bytes, (size_t)n, &out) != 0)
        out = (srv_stop_out){0};
    double now = fq_now_s();
    if (q->t_last >= 0)
        srv_metrics_inter_token(e->p.metrics, now - q->t_last);
    q->t_last = now;
    if (!job->rejecting) {
        srv_engine_event sev = {
            .type = SRV_ENGINE_EV_TOKEN,
            .seq = q->index,
            .text = out.text,
            .text_len = out.len,
            .text_offset = out.text_offset,
            .token = id,
            .index = ev->u.token.index,
            .sample = job->sampling.logprobs >= 0 ? ev->u.token.sample : NULL,
        };
        post_event(e, job, &sev);
    }
    if (bytes != small)
        free(bytes);
    return out.stopped ? RT_SCHED_STOP : RT_SCHED_CONTINUE;
}

static void on_finish(srv_engine *e, eng_seq *q, const rt_sched_event *ev)
{
    eng_job *job = q->job;
    q->open = false;
    job->n_open--;
    if (job->rejecting)
        return; /* the submitter reports the refusal and frees the job */
    srv_engine_event sev = {
        .type = SRV_ENGINE_EV_FINISH,
        .seq = q->index,
        .reason = ev->u.finish.reason,
        .timed_out = job->timed_out && ev->u.finish.reason == RT_FINISH_ABORT,
        .stop_string = srv_stop_matched(q->stop) >= 0,
        .n_prompt = ev->u.finish.n_prompt,
        .n_generated = ev->u.finish.n_generated,
        .queued_s = ev->u.finish.queued_s,
        .first_token_s = ev->u.finish.first_token_s,
        .total_s = ev->u.finish.total_s,
        .message = ev->u.finish.message,
    };
    rt_finish_reason r = ev->u.finish.reason;
    srv_stop_out out = {0};
    if ((r == RT_FINISH_STOP || r == RT_FINISH_LENGTH) && !sev.stop_string &&
        srv_stop_flush(q->stop, &out) == 0) {
        sev.text = out.text;
        sev.text_len = out.len;
        sev.text_offset = out.text_offset;
    }
    /* request-level aggregates: prompt tokens once per prompt, earliest first token, latest end */
    if (q->count_prompt)
        job->prompt_tokens += ev->u.finish.n_prompt;
    job->gen_tokens += ev->u.finish.n_generated;
    if (job->queue_s < 0 || ev->u.finish.queued_s < job->queue_s)
        job->queue_s = ev->u.finish.queued_s;
    if (ev->u.finish.first_token_s >= 0 &&
        (job->ttft_s < 0 || ev->u.finish.first_token_s < job->ttft_s))
        job->ttft_s = ev->u.finish.first_token_s;
    if (ev->u.finish.total_s > job->e2e_s)
        job->e2e_s = ev->u.finish.total_s;
    if (!job->finish_reason || r == RT_FINISH_ERROR || r == RT_FINISH_ABORT)
        job->finish_reason = r == RT_FINISH_TIMEOUT ? "abort" : rt_finish_reason_name(r);
    sev.last = job->n_open == 0;
    post_event(e, job, &sev);
    if (sev.last) {
        job_metrics(e, job);
        active_unlink(e, job);
        job_free(job);
        job_done(e);
    }
}

/* The scheduler's callback; ud is the sequence. */
static int sched_cb(void *ud, const rt_sched_event *ev)
{
    eng_seq *q = ud;
    if (ev->type == RT_SCHED_EV_TOKEN)
        return on_token(q->job->e, q, ev);
    on_finish(q->job->e, q, ev);
    return RT_SCHED_CONTINUE;
}

/* ---- commands (engine thread) ---- */

static void reject(srv_engine *e, eng_job *job, int code, const char *message)
{
    srv_engine_event ev = {
        .type = SRV_ENGINE_EV_REJECT, .last = true, .code = code, .message = message};
    post_event(e, job, &ev);
    job_free(job);
    job_done(e);
}

static void do_submit(srv_engine *e, eng_job *job)
{
    job->e = e;
    char err[512] = "";
    job->n_open = 0;
    active_link(e, job);
    for (size_t i = 0; i < job->n_seqs; i++) {
        eng_seq *q = &job->seqs[i];
        rt_request req = rt_request_default();
        req.prompt = q->prompt;
        req.n_prompt = q->n_prompt;
        req.max_tokens = q->max_tokens;
        req.sampling = job->sampling;
        if (req.sampling.has_seed)
            req.sampling.seed += q->seed_offset;
        req.ignore_eos = job->ignore_eos;
        req.on_event = sched_cb;
        req.ud = q;
        int rc = rt_sched_submit(e->sched, &req, &q->sched_id, err, sizeof err);
        if (rc) {
            job->rejecting = true;
            for (size_t k = 0; k < i; k++)
                if (job->seqs[k].open)
                    rt_sched_abort(e->sched, job->seqs[k].sched_id, RT_FINISH_ABORT);
            active_unlink(e, job);
            reject(e, job, rc, err);
            return;
        }
        q->open = true;
        job->n_open++;
        free(q->prompt); /* the scheduler copied it */
        q->prompt = NULL;
    }
}

static void abort_job(srv_engine *e, eng_job *job)
{
    /* Each abort may free the job when it finishes its last sequence: count first. */
    size_t n = job->n_seqs;
    uint64_t ids[64];
    uint64_t *list = n <= 64 ? ids : fq_malloc_array(n, sizeof *list);
    if (!list)
        return; /* retried at the next timeout check; an explicit abort is lost (logged) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (job->seqs[i].open)
            list[k++] = job->seqs[i].sched_id;
    for (size_t i = 0; i < k; i++)
        rt_sched_abort(e->sched, list[i], RT_FINISH_ABORT);
    if (list != ids)
        free(list);
}

static eng_job *find_job(srv_engine *e, uint64_t id)
{
    for (eng_job *j = e->active; j; j = j->next)
        if (j->id == id)
            return j;
    return NULL;
}

static void check_timeouts(srv_engine *e, double now)
{
    if (e->p.request_timeout_s <= 0)
        return;
    eng_job *j = e->active;
    while (j) {
        eng_job *next = j->next;
        if (!j->timed_out && now - j->arrival_s > e->p.request_timeout_s) {
            j->timed_out = true;
            abort_job(e, j); /* may free j */
        }
        j = next;
    }
}

/* ---- the thread ---- */

static void publish_gauges(srv_engine *e)
{
    if (!e->p.metrics)
        return;
    rt_sched_stats st;
    rt_sched_stats_get(e->sched, &st);
    srv_sched_gauges g = {
        .running = st.n_running,
        .waiting = st.n_waiting,
        .kv_blocks_used = st.kv_blocks_used,
        .kv_blocks_total = st.kv_blocks_total,
        .batch_size = st.last_step_seqs,
        .preemptions_total = st.n_preemptions,
        .steps_total = st.n_steps,
        .graph_steps_total = st.n_steps_graph,
    };
    srv_metrics_set_sched(e->p.metrics, &g);
}

static void apply_commands(srv_engine *e, eng_cmd *c)
{
    while (c) {
        eng_cmd *next = c->next;
        if (c->type == CMD_SUBMIT) {
            do_submit(e, c->job);
        } else {
            eng_job *j = find_job(e, c->job_id);
            if (j)
                abort_job(e, j);
        }
        free(c);
        c = next;
    }
}

static void *engine_main(void *arg)
{
    srv_engine *e = arg;
    char err[512] = "";
    int rc = rt_sched_create(e->p.model, e->p.ops, &e->p.sched, &e->sched, err, sizeof err);
    pthread_mutex_lock(&e->mu);
    e->started = true;
    e->start_rc = rc;
    snprintf(e->start_err, sizeof e->start_err, "%s", err);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (rc)
        return NULL;
    publish_gauges(e);

    bool idle_wait = false; /* work exists but the last step ran nothing: back off briefly */
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && !e->head && !e->active)
            pthread_cond_wait(&e->cv, &e->mu);
        if (!e->stopping && !e->head && idle_wait) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
        eng_cmd *cmds = e->head;
        e->head = e->tail = NULL;
        bool stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);

        if (stopping) {
            /* queued submissions are refused, queued aborts are moot */
            while (cmds) {
                eng_cmd *next = cmds->next;
                if (cmds->type == CMD_SUBMIT)
                    reject(e, cmds->job, FQ_EIO, "the server is shutting down");
                free(cmds);
                cmds = next;
            }
            break;
        }
        apply_commands(e, cmds);
        check_timeouts(e, fq_now_s());
        idle_wait = false;
        if (e->active) {
            char serr[512] = "";
            int left = rt_sched_step(e->sched, serr, sizeof serr);
            if (left < 0)
                fq_log(FQ_LOG_ERROR, "engine: step failed: %s", serr);
            rt_sched_stats st;
            rt_sched_stats_get(e->sched, &st);
            idle_wait = st.last_step_seqs == 0;
            if (st.last_step_tokens > 0)
                srv_metrics_iteration(e->p.metrics, st.last_step_tokens);
        }
        publish_gauges(e); /* after a step, and after aborts that left nothing to step */
    }
    int32_t n = rt_sched_abort_all(e->sched, RT_FINISH_ABORT);
    if (n > 0)
        fq_log(FQ_LOG_INFO, "engine: aborted %d sequence(s) at shutdown", n);
    /* every job has finished (its last event posted and the job freed) */
    FQ_ASSERT(e->active == NULL);
    publish_gauges(e);
    rt_sched_destroy(e->sched);
    e->sched = NULL;
    return NULL;
}

/* ---- public ---- */

srv_engine_params srv_engine_default_params(void)
{
    return (srv_engine_params){.sched = rt_sched_default_params()};
}

int srv_engine_create(const srv_engine_params *p, srv_engine **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!p || !p->model || !p->ops || !p->loop || !p->on_event)
        return fq_err(err, err_len, FQ_EINVAL,
                      "srv_engine_create: model, ops, loop and on_event "
                      "are required");
    srv_engine *e = calloc(1, sizeof *e);
    if (!e)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    e->p = *p;
    e->next_job_id = 1;
    if (pthread_mutex_init(&e->mu, NULL) != 0) {
        free(e);
        return fq_err(err, err_len, FQ_ENOMEM, "mutex init failed");
    }
    if (pthread_cond_init(&e->cv, NULL) != 0) {
        pthread_mutex_destroy(&e->mu);
        free(e);
        return fq_err(err, err_len, FQ_ENOMEM, "condition variable init failed");
    }
    int prc = pthread_create(&e->thread, NULL, engine_main, e);
    if (prc != 0) {
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return fq_err(err, err_len, FQ_ENOMEM, "cannot start the engine thread: %s", strerror(prc));
    }
    e->thread_started = true;
    pthread_mutex_lock(&e->mu);
    while (!e->started)
        pthread_cond_wait(&e->cv, &e->mu);
    int rc = e->start_rc;
    pthread_mutex_unlock(&e->mu);
    if (rc) {
        fq_err(err, err_len, rc, "%s", e->start_err);
        pthread_join(e->thread, NULL);
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void srv_engine_destroy(srv_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started)
        pthread_join(e->thread, NULL);
    /* a command appended after the thread's last drain */
    for (eng_cmd *c = e->head; c;) {
        eng_cmd *next = c->next;
        if (c->type == CMD_SUBMIT)
            job_free(c->job);
        free(c);
        c = next;
    }
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static void push_cmd(srv_engine *e, eng_cmd *c)
{
    c->next = NULL;
    if (e->tail)
        e->tail->next = c;
    else
        e->head = c;
    e->tail = c;
    pthread_cond_signal(&e->cv);
}

int srv_engine_submit(srv_engine *e, const srv_engine_job *job, uint64_t *job_id)
{
    *job_id = 0;
    if (!job || !job->seqs || job->n_seqs == 0)
        return FQ_EINVAL;
    for (size_t i = 0; i < job->n_stop; i++)
        if (!job->stop || !job->stop_len || job->stop_len[i] == 0)
            return FQ_EINVAL;
    eng_job *j = job_copy(job);
    eng_cmd *c = calloc(1, sizeof *c);
    if (!j || !c) {
        job_free(j);
        free(c);
        return FQ_ENOMEM;
    }
    c->type = CMD_SUBMIT;
    c->job = j;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        job_free(j);
        free(c);
        return FQ_EIO;
    }
    j->id = e->next_job_id++;
    e->n_jobs++;
    *job_id = j->id;
    push_cmd(e, c);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void srv_engine_abort(srv_engine *e, uint64_t job_id)
{
    eng_cmd *c = calloc(1, sizeof *c);
    if (!c) {
        fq_log(FQ_LOG_ERROR, "engine: out of memory queueing the abort of job %llu",
               (unsigned long long)job_id);
        return;
    }
    c->type = CMD_ABORT;
    c->job_id = job_id;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        free(c);
        return;
    }
    push_cmd(e, c);
    pthread_mutex_unlock(&e->mu);
}

unsigned srv_engine_n_jobs(const srv_engine *e)
{
    srv_engine *m = (srv_engine *)e;
    pthread_mutex_lock(&m->mu);
    unsigned n = m->n_jobs;
    pthread_mutex_unlock(&m->mu);
    return n;
}

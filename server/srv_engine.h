/* srv_engine.h — the engine thread: owns the continuous-batching scheduler and runs forward steps,
 * fed by the loop thread through a command queue, answering through loop messages.
 *
 * The loop thread hands the engine a job (one HTTP request: one or more sequences sharing sampling
 * parameters and stop strings) with srv_engine_submit and may cancel it with srv_engine_abort;
 * neither call waits for a forward pass. Everything the engine has to say about a job comes back as
 * events, each one a message run on the loop thread (srv_loop_post) that calls the engine's
 * on_event callback with the job's ud: TOKEN per generated token (with the text that is safe to
 * send now: stop strings held back and cut, UTF-8 never split — srv_stop runs on the engine thread,
 * so a stop string ends its sequence at once), FINISH once per sequence, or one REJECT for a job
 * the scheduler refused. The last event of a job has `last` set; the engine never mentions that ud
 * again afterwards. The engine thread never touches sockets.
 */
#ifndef SRV_ENGINE_H
#define SRV_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_model.h"
#include "rt_ops.h"
#include "rt_sampler.h"
#include "rt_sched.h"
#include "srv_loop.h"
#include "srv_metrics.h"

typedef struct srv_engine srv_engine;

typedef enum {
    SRV_ENGINE_EV_TOKEN = 0, /* a generated token of one sequence */
    SRV_ENGINE_EV_FINISH,    /* a sequence ended (exactly once per sequence of a submitted job) */
    SRV_ENGINE_EV_REJECT     /* the job was refused as a whole; no other event comes */
} srv_engine_ev_type;

/* What the loop's callback receives; every pointer is borrowed for the call. */
typedef struct srv_engine_event {
    srv_engine_ev_type type;
    uint32_t seq; /* TOKEN, FINISH: index of the sequence in the job's seqs[] */
    bool last;    /* the job's final event: the engine has forgotten it */

    /* TOKEN and FINISH: text to emit now (valid UTF-8, never part of a stop string); FINISH
     * carries what was held back at a normal end. text_offset: where the token's text starts in
     * the sequence's output, in code points (srv_stop). */
    const char *text;
    size_t text_len;
    size_t text_offset;

    /* TOKEN */
    int32_t token;                  /* the token id */
    int32_t index;                  /* its index among the sequence's generated tokens */
    const rt_sample_result *sample; /* logprobs; NULL unless the job asked for them */

    /* FINISH */
    rt_finish_reason reason; /* RT_FINISH_ABORT also for a request timeout (timed_out set) */
    bool timed_out;          /* aborted because the job outlived request_timeout_s */
    bool stop_string;        /* ended by one of the job's stop strings */
    int32_t n_prompt;        /* prompt tokens of the sequence */
    int32_t n_generated;     /* tokens generated (TOKEN events) */
    double queued_s;         /* submission to first admission */
    double first_token_s;    /* submission to the first token; < 0 when none */
    double total_s;          /* submission to the end */

    /* REJECT: an RT_SCHED_E* or FQ_E* code (RT_SCHED_EQUEUE_FULL → 429, RT_SCHED_ETOO_LONG /
     * RT_SCHED_ENO_FIT / FQ_EINVAL → 400, FQ_EIO = shutting down → 503, else 500). FINISH with
     * RT_FINISH_ERROR: what failed. Else "". */
    int code;
    const char *message;
} srv_engine_event;

/* Runs on the loop thread for each event of a job; ud is the job's srv_engine_job.ud. */
typedef void (*srv_engine_event_fn)(void *ud, const srv_engine_event *ev);

typedef struct srv_engine_params {
    const rt_model *model;        /* borrowed; must outlive the engine */
    const rt_ops *ops;            /* the backend; borrowed */
    rt_sched_params sched;        /* the scheduler's settings (abits borrowed as rt_sched says) */
    double request_timeout_s;     /* a job still running this long after its arrival is aborted
                                     (timed_out); 0 = no limit */
    srv_loop *loop;               /* where events are posted; borrowed, must outlive the engine */
    srv_engine_event_fn on_event; /* required */
    srv_metrics *metrics;         /* scheduler gauges, iteration tokens, inter-token latency and
                                     finished requests are recorded here; NULL = none. Borrowed */
} srv_engine_params;

/* rt_sched_default_params, no timeout, everything else NULL. Any thread. */
srv_engine_params srv_engine_default_params(void);

/* Starts the engine thread, which creates the scheduler (and its backend) itself; returns once the
 * scheduler exists, or with the scheduler's error in err (no thread left behind). *out is
 * caller-owned (srv_engine_destroy). */
int srv_engine_create(const srv_engine_params *p, srv_engine **out, char *err, size_t err_len);

/* Stops the engine: queued jobs are rejected (FQ_EIO), running ones aborted (FINISH with
 * RT_FINISH_ABORT), their events posted; then the thread exits and everything is freed. Call
 * before srv_loop_destroy (its messages are run there). NULL is a no-op. The thread that created
 * it. */
void srv_engine_destroy(srv_engine *e);

/* One sequence of a job. */
typedef struct srv_engine_seq {
    const int32_t *prompt; /* [n_prompt] token ids, copied by submit */
    int32_t n_prompt;      /* >= 1 */
    int32_t max_tokens;    /* >= 1 */
    uint64_t seed_offset;  /* added to the job's seed when it has one (choice j of n gets j, so
                              seeded choices differ but each is reproducible) */
    bool count_prompt;     /* its prompt counts toward the request's prompt tokens in the
                              metrics (the first choice of each prompt) */
} srv_engine_seq;

typedef struct srv_engine_job {
    const srv_engine_seq *seqs; /* [n_seqs], n_seqs >= 1; copied */
    size_t n_seqs;
    rt_sampling_params sampling; /* copied, bias array included */
    bool ignore_eos;
    const char *const *stop; /* [n_stop] stop strings (stop_len[i] bytes each); copied */
    const size_t *stop_len;
    size_t n_stop;
    bool skip_special; /* special tokens (EOS, <|im_end|>, ...) add no text; default for OpenAI */
    double arrival_s;  /* fq_now_s() when the request arrived (request timeout base) */
    void *ud;          /* handed to on_event; must stay valid until the event with `last` */
} srv_engine_job;

/* Queues a job (everything copied) and sets *job_id (never 0). Never waits for the engine.
 * FQ_ENOMEM, FQ_EINVAL (no sequences, bad stop strings) or FQ_EIO (stopping) — then no event comes
 * for ud. Loop thread (any thread, in fact). */
int srv_engine_submit(srv_engine *e, const srv_engine_job *job, uint64_t *job_id);

/* Asks the engine to abort a job: its sequences finish with RT_FINISH_ABORT at the next command
 * drain (KV blocks freed before the next step). A job already finished is ignored. Never waits.
 * Any thread. */
void srv_engine_abort(srv_engine *e, uint64_t job_id);

/* Jobs submitted and not yet finished (queued commands included). Any thread. */
unsigned srv_engine_n_jobs(const srv_engine *e);

#endif /* SRV_ENGINE_H */

/* rt_sched.h — the continuous-batching scheduler: requests in, one forward step at a time, token
 * and finish events out.
 *
 * The scheduler owns one backend instance and the paged KV cache's block pool (rt_kv.h), sized from
 * a memory budget. Requests wait in a bounded FCFS queue; each rt_sched_step() admits what fits
 * (at most max_num_seqs running sequences, KV blocks for the next prompt chunk), runs one batch of
 * at most max_num_batched_tokens tokens (one decode token per running sequence first, then prefill
 * chunks, so a long prompt spreads over several steps), samples each sequence whose context is
 * complete and reports it through the request's callback. When the pool runs dry the most recently
 * admitted sequence is preempted: its blocks are freed and it goes back to the head of the queue,
 * to recompute its prompt and generated tokens when it is admitted again (its sampler state is
 * kept, so seeded sampling continues exactly). Greedy and seeded outputs do not depend on what else
 * is in the batch, nor on preemption (bit for bit on the CPU backend at a given block size).
 *
 * Thread safety: synchronous and single-threaded; every call, and every callback, runs on the
 * engine thread. Callbacks must not call back into the scheduler (such calls fail with FQ_EINVAL).
 */
#ifndef RT_SCHED_H
#define RT_SCHED_H

#include "rt_model.h"
#include "rt_ops.h"
#include "rt_sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Refusals of rt_sched_submit, besides FQ_EINVAL (bad request) and FQ_ENOMEM. Distinct from every
 * FQ_E* code; rt_sched_strerror names them. */
enum {
    RT_SCHED_EQUEUE_FULL = -100, /* the waiting queue is at its request or prompt-token limit:
                                    retry later (HTTP 429) */
    RT_SCHED_ETOO_LONG = -101,   /* prompt + max_tokens over max_model_len (HTTP 400) */
    RT_SCHED_ENO_FIT = -102      /* the prompt needs more KV blocks than the whole cache (400) */
};

/* Static text for an RT_SCHED_E* or FQ_E* code; never NULL. */
const char *rt_sched_strerror(int code);

typedef struct rt_sched_params {
    int32_t max_num_seqs;            /* running sequences at most; default 16 */
    int32_t max_num_batched_tokens;  /* tokens per step at most (the prefill chunk budget); 512 */
    bool cuda_graphs;                /* backend: decode steps as CUDA graphs; default true */
    int64_t kv_cache_bytes;          /* KV cache memory; blocks = bytes / (block_size x the model's
                                        per-token bytes: 2 x n_layer x n_head_kv x head_dim x 4 for
                                        the fp32 CPU cache); default 256 MiB */
    int32_t block_size;              /* tokens per KV block; default 16 */
    int32_t max_queue_requests;      /* waiting requests at most (preempted ones count); 256 */
    int64_t max_queue_prompt_tokens; /* prompt tokens of waiting requests at most; default 262144 */
    double queue_timeout_s; /* a request never admitted within this many seconds of submission
                               finishes with RT_FINISH_TIMEOUT; 0 = never; default 60 */
    int32_t max_model_len;  /* prompt + generated tokens at most; 0 = the model's n_ctx */
    int n_threads;          /* backend CPU threads; 0 = one per core */
    rt_mode mode;           /* backend compute mode; default RT_MODE_FP */
    const int32_t *abits;   /* flex mode: per-linear activation bits (rt_backend_params), borrowed
                               for the scheduler's life; NULL = each linear's own */
    uint64_t seed;          /* mixed with the request id into the fallback seed of requests whose
                               sampling params carry no seed; default 0 */
} rt_sched_params;

rt_sched_params rt_sched_default_params(void);

typedef enum {
    RT_FINISH_STOP = 0, /* EOS (unless ignore_eos), a stop token, or the callback said stop */
    RT_FINISH_LENGTH,   /* max_tokens, max_model_len, or the sequence outgrew the whole cache */
    RT_FINISH_ABORT,    /* rt_sched_abort (client gone, shutdown) */
    RT_FINISH_TIMEOUT,  /* waited in the queue past queue_timeout_s */
    RT_FINISH_ERROR     /* the forward step failed; see message */
} rt_finish_reason;

/* "stop", "length", "abort", "timeout", "error". */
const char *rt_finish_reason_name(rt_finish_reason r);

typedef enum { RT_SCHED_EV_TOKEN = 0, RT_SCHED_EV_FINISH } rt_sched_event_type;

typedef struct rt_sched_event {
    rt_sched_event_type type;
    uint64_t id; /* the request's id from rt_sched_submit */
    union {
        struct {
            int32_t token;                  /* the generated token id */
            int32_t index;                  /* its index among the request's generated tokens */
            const rt_sample_result *sample; /* logprob information, borrowed for the call */
        } token;
        struct {
            rt_finish_reason reason;
            int32_t stop_token;   /* RT_FINISH_STOP: the EOS or stop token that ended it, -1 when
                                     the callback stopped it; else -1 */
            int32_t n_prompt;     /* prompt tokens */
            int32_t n_generated;  /* tokens emitted as TOKEN events */
            double queued_s;      /* seconds from submission to first admission (or to the end,
                                     when never admitted) */
            double first_token_s; /* seconds from submission to the first token; < 0 when none */
            double total_s;       /* seconds from submission to this event */
            const char *message;  /* RT_FINISH_ERROR: what failed; else ""; borrowed for the call */
        } finish;
    } u;
} rt_sched_event;

/* What a TOKEN callback returns; FINISH callbacks' return values are ignored. */
enum {
    RT_SCHED_CONTINUE = 0, /* keep generating */
    RT_SCHED_STOP = 1      /* finish now with RT_FINISH_STOP (stop_token -1): e.g. a stop string */
};

/* Called on the engine thread for each event of a request: TOKEN per generated token, in order,
 * then exactly one FINISH, after which the request's id is dead and ud is no longer used. */
typedef int (*rt_sched_event_fn)(void *ud, const rt_sched_event *ev);

typedef struct rt_request {
    const int32_t *prompt;         /* [n_prompt] token ids, copied by submit */
    int32_t n_prompt;              /* >= 1 */
    int32_t max_tokens;            /* tokens to generate at most; 0 = up to max_model_len */
    rt_sampling_params sampling;   /* copied, with its bias array, by submit (into the request's
                                      sampler); validated as rt_sampling_validate, which the
                                      caller may run first to learn the bad param's name */
    bool ignore_eos;               /* keep going after the tokenizer's EOS */
    const int32_t *stop_token_ids; /* [n_stop_token_ids] tokens that finish it (emitted first);
                                      copied by submit; NULL when none */
    int32_t n_stop_token_ids;
    int32_t n;                  /* completions; only 1 (0 is read as 1): run n > 1 as n requests */
    rt_sched_event_fn on_event; /* required */
    void *ud;                   /* passed to on_event; borrowed until its FINISH */
} rt_request;

/* A request with no prompt, max_tokens 16, rt_sampling_default_params() (temperature 1, as
 * OpenAI), n = 1 and no callback. */
rt_request rt_request_default(void);

typedef struct rt_sched_stats {
    int32_t n_running;          /* admitted sequences */
    int32_t n_waiting;          /* queued requests, preempted ones included */
    int32_t kv_blocks_used;     /* blocks held by sequences */
    int32_t kv_blocks_total;    /* blocks in the pool */
    int32_t block_size;         /* tokens per block */
    int32_t last_step_tokens;   /* tokens in the last step's batch */
    int32_t last_step_seqs;     /* sequences in the last step's batch */
    int64_t n_steps;            /* forward steps run */
    int64_t n_steps_picked;     /* of which the backend picked every token (forward_sample) */
    int64_t n_steps_graph;      /* of which the backend replayed a CUDA graph */
    int64_t n_preemptions;      /* sequences preempted so far */
    int64_t n_prompt_tokens;    /* prompt tokens computed so far (recomputation included) */
    int64_t n_generated_tokens; /* tokens generated so far */
} rt_sched_stats;

typedef struct rt_sched rt_sched;

/* Creates a scheduler, its KV block pool and one backend instance of ops. m and ops are borrowed
 * and must outlive it. Fails with FQ_EINVAL on bad params (a cache too small for one block
 * included), or the backend's error. *out is caller-owned. */
int rt_sched_create(const rt_model *m, const rt_ops *ops, const rt_sched_params *p, rt_sched **out,
                    char *err, size_t err_len);

/* Frees the scheduler; requests still active are dropped without events (abort them first to have
 * their FINISH). NULL is a no-op. */
void rt_sched_destroy(rt_sched *s);

/* Queues a request (everything in *req is copied; nothing is borrowed past the call but ud) and
 * sets *id (ids start at 1 and are never reused). Refusals, with the numbers in err: FQ_EINVAL (no
 * callback, an empty prompt, token ids out of the vocabulary, n > 1, bad sampling params),
 * RT_SCHED_ETOO_LONG, RT_SCHED_ENO_FIT, RT_SCHED_EQUEUE_FULL. A refused request fires no event. */
int rt_sched_submit(rt_sched *s, const rt_request *req, uint64_t *id, char *err, size_t err_len);

/* Ends an active request now — waiting or running: its blocks are back in the pool when this
 * returns and no step sees it again — and emits its FINISH with reason (normally RT_FINISH_ABORT).
 * FQ_ENOTFOUND when id is not active (finished, refused or never issued). */
int rt_sched_abort(rt_sched *s, uint64_t id, rt_finish_reason reason);

/* Aborts every active request with reason (shutdown); returns how many (FQ_EINVAL from a
 * callback). */
int32_t rt_sched_abort_all(rt_sched *s, rt_finish_reason reason);

/* One iteration: time out waiting requests, plan the batch (decodes, prefill chunks, preemption,
 * admission), run the forward step, sample, emit events, finish and free. Returns the number of
 * active requests left (waiting + running; 0 = idle) or a negative error: when the forward step
 * fails, the sequences of that batch finish with RT_FINISH_ERROR, the others stay, the scheduler
 * stays usable, and err says what failed. */
int rt_sched_step(rt_sched *s, char *err, size_t err_len);

void rt_sched_stats_get(const rt_sched *s, rt_sched_stats *st);

#endif /* RT_SCHED_H */

/* rt_sched.c — continuous batching over one backend: admission, chunked prefill, preemption by
 * recompute, abort, timeouts, sampling and events.
 *
 * Design. A request is one rt_seq from submit to FINISH: its token array (prompt, then generated
 * tokens) is allocated once at its final length, its sampler is created at submit and lives until
 * the end, and n_computed counts the tokens whose keys and values are in its KV blocks. What a
 * sequence feeds next is always tokens[n_computed, n_total): a prefill chunk, one decode token, or
 * (after a preemption dropped its blocks and zeroed n_computed) a recomputation of prompt and
 * output, all the same code; it is sampled when a step brings n_computed up to n_total. Sequences
 * live either in the waiting queue (a doubly linked FCFS list; preempted ones go back to its head)
 * or in running[] (admission order, oldest first). A step plans in three passes under the token
 * budget: (1) decodes, oldest first, each sure of a block for its next position — when the pool is
 * empty the newest running sequence is preempted (itself, if it is the newest); (2) prefill chunks,
 * oldest first, as large as budget and free blocks allow — a chunk with no room preempts a newer
 * sequence, or waits for older ones when it is the newest; (3) admission from the queue head while
 * sequences, budget and blocks for the next chunk allow (not in a step that preempted, so a
 * preempted sequence does not bounce straight back). A sequence that alone holds every block and
 * still needs one more finishes with RT_FINISH_LENGTH. Results are batch-independent because each
 * sequence's arithmetic (rows of the matmuls, its own attention) does not depend on its neighbours
 * and each sequence has its own sampler.
 */
#include "rt_sched.h"

#include "fq_base.h"

#include <stdlib.h>
#include <string.h>

typedef enum { SEQ_WAITING = 0, SEQ_RUNNING } seq_state;

typedef struct rt_seq {
    uint64_t id;
    seq_state state;
    int32_t *tokens;     /* [n_prompt + max_tokens] the prompt, then generated tokens; owned */
    int32_t n_prompt;    /* prompt tokens */
    int32_t n_gen;       /* generated tokens */
    int32_t max_tokens;  /* generation limit (resolved) */
    int32_t n_computed;  /* tokens whose K/V are in kv */
    int32_t step_tokens; /* tokens planned for the current step; 0 = not in the batch */
    int32_t *stop_ids;   /* [n_stop] owned */
    int32_t n_stop;
    bool ignore_eos;
    bool admitted;   /* admitted at least once (no queue timeout after that) */
    rt_sampler *smp; /* owned */
    rt_kv_seq kv;    /* block table, blocks from the scheduler's pool */
    rt_sched_event_fn on_event;
    void *ud;
    double t_submit, t_admit, t_first; /* fq_now_s(); t_admit/t_first < 0 until they happen */
    struct rt_seq *prev, *next;        /* waiting-queue links */
} rt_seq;

struct rt_sched {
    const rt_model *m;
    const rt_ops *ops;
    rt_backend *be;
    rt_kv *kv;
    rt_sched_params p; /* max_model_len resolved */
    int32_t n_vocab;
    int32_t eos;         /* the tokenizer's EOS, -1 when none */
    float *logits;       /* [max_num_seqs, n_vocab] one row per sequence of the batch */
    int32_t *picked;     /* [max_num_seqs] tokens the backend chose (forward_sample steps) */
    rt_sample_row *rows; /* [max_num_seqs] each sequence's filters and draw for forward_sample */
    rt_seq_step *steps;  /* [max_num_seqs] */
    rt_seq **batch;      /* [max_num_seqs] the sequence of each step row */
    rt_seq **running;    /* [max_num_seqs] admission order, oldest first */
    int32_t n_running;
    rt_seq *wait_head, *wait_tail;
    int32_t n_waiting;
    int64_t waiting_prompt_tokens; /* n_prompt summed over the waiting queue */
    uint64_t next_id;
    bool in_callback;
    bool preempted_this_step;
    rt_sched_stats st; /* the counters; the gauges are filled in by rt_sched_stats_get */
};

const char *rt_sched_strerror(int code)
{
    switch (code) {
    case RT_SCHED_EQUEUE_FULL:
        return "queue full";
    case RT_SCHED_ETOO_LONG:
        return "request longer than the model's context";
    case RT_SCHED_ENO_FIT:
        return "prompt larger than the KV cache";
    default:
        return fq_strerror(code);
    }
}

const char *rt_finish_reason_name(rt_finish_reason r)
{
    static const char *const names[] = {"stop", "length", "abort", "timeout", "error"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "unknown";
}

rt_sched_params rt_sched_default_params(void)
{
    return (rt_sched_params){.max_num_seqs = 16,
                             .max_num_batched_tokens = 512,
                             .cuda_graphs = true,
                             .kv_cache_bytes = (int64_t)256 << 20,
                             .block_size = 16,
                             .max_queue_requests = 256,
                             .max_queue_prompt_tokens = 262144,
                             .queue_timeout_s = 60.0,
                             .max_model_len = 0,
                             .n_threads = 0,
                             .mode = RT_MODE_FP,
                             .abits = NULL,
                             .seed = 0};
}

rt_request rt_request_default(void)
{
    return (rt_request){.max_tokens = 16, .sampling = rt_sampling_default_params(), .n = 1};
}

/* ---- sequences and the two collections ---- */

static int32_t seq_total(const rt_seq *q)
{
    return q->n_prompt + q->n_gen;
}

static void seq_free(rt_sched *s, rt_seq *q)
{
    rt_kv_seq_release(s->kv, &q->kv);
    rt_sampler_destroy(q->smp);
    free(q->tokens);
    free(q->stop_ids);
    free(q);
}

static void wait_unlink(rt_sched *s, rt_seq *q)
{
    *(q->prev ? &q->prev->next : &s->wait_head) = q->next;
    *(q->next ? &q->next->prev : &s->wait_tail) = q->prev;
    q->prev = q->next = NULL;
    s->n_waiting--;
    s->waiting_prompt_tokens -= q->n_prompt;
}

static void wait_link(rt_sched *s, rt_seq *q, bool at_head)
{
    q->state = SEQ_WAITING;
    if (at_head) {
        q->prev = NULL;
        q->next = s->wait_head;
        *(s->wait_head ? &s->wait_head->prev : &s->wait_tail) = q;
        s->wait_head = q;
    } else {
        q->next = NULL;
        q->prev = s->wait_tail;
        *(s->wait_tail ? &s->wait_tail->next : &s->wait_head) = q;
        s->wait_tail = q;
    }
    s->n_waiting++;
    s->waiting_prompt_tokens += q->n_prompt;
}

static int32_t running_index(const rt_sched *s, const rt_seq *q)
{
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i] == q)
            return i;
    return -1;
}

static void running_remove(rt_sched *s, rt_seq *q)
{
    int32_t i = running_index(s, q);
    FQ_ASSERT(i >= 0);
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof(rt_seq *));
    s->n_running--;
}

static int emit(rt_sched *s, rt_seq *q, const rt_sched_event *ev)
{
    s->in_callback = true;
    int r = q->on_event(q->ud, ev);
    s->in_callback = false;
    return r;
}

/* Takes q out of the queue or the running set, frees its blocks, emits FINISH and frees it. */
static void seq_finish(rt_sched *s, rt_seq *q, rt_finish_reason reason, int32_t stop_token,
                       const char *message)
{
    if (q->state == SEQ_WAITING)
        wait_unlink(s, q);
    else
        running_remove(s, q);
    rt_kv_seq_release(s->kv, &q->kv);
    double now = fq_now_s();
    rt_sched_event ev = {.type = RT_SCHED_EV_FINISH, .id = q->id};
    ev.u.finish.reason = reason;
    ev.u.finish.stop_token = reason == RT_FINISH_STOP ? stop_token : -1;
    ev.u.finish.n_prompt = q->n_prompt;
    ev.u.finish.n_generated = q->n_gen;
    ev.u.finish.queued_s = (q->t_admit >= 0 ? q->t_admit : now) - q->t_submit;
    ev.u.finish.first_token_s = q->t_first >= 0 ? q->t_first - q->t_submit : -1.0;
    ev.u.finish.total_s = now - q->t_submit;
    ev.u.finish.message = message ? message : "";
    emit(s, q, &ev);
    seq_free(s, q);
}

/* Drops q's blocks and sends it back to the head of the queue to recompute later. */
static void seq_preempt(rt_sched *s, rt_seq *q)
{
    running_remove(s, q);
    rt_kv_seq_release(s->kv, &q->kv);
    q->n_computed = 0;
    q->step_tokens = 0;
    wait_link(s, q, true);
    s->st.n_preemptions++;
    s->preempted_this_step = true;
}

static rt_seq *find_seq(const rt_sched *s, uint64_t id)
{
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id)
            return s->running[i];
    for (rt_seq *q = s->wait_head; q; q = q->next)
        if (q->id == id)
            return q;
    return NULL;
}

/* ---- create / destroy ---- */

int rt_sched_create(const rt_model *m, const rt_ops *ops, const rt_sched_params *p, rt_sched **out,
                    char *err, size_t err_len)
{
    *out = NULL;
    const fq_config *c = &m->cfg;
    int64_t token_bytes =
        2 * (int64_t)c->n_layer * c->n_head_kv * c->head_dim * (int64_t)sizeof(float);
    if (p->max_num_seqs <= 0 || p->max_num_batched_tokens <= 0 || p->block_size <= 0 ||
        p->max_queue_requests < 0 || p->max_queue_prompt_tokens < 0 || p->queue_timeout_s < 0 ||
        p->max_model_len < 0 || token_bytes <= 0)
        return fq_err(
            err, err_len, FQ_EINVAL,
            "scheduler: max_num_seqs %d, max_num_batched_tokens %d and block_size %d must "
            "be > 0; queue limits, timeout and max_model_len >= 0",
            p->max_num_seqs, p->max_num_batched_tokens, p->block_size);
    int64_t n_blocks = p->kv_cache_bytes / (token_bytes * p->block_size);
    if (n_blocks < 1 || n_blocks > INT32_MAX)
        return fq_err(err, err_len, FQ_EINVAL,
                      "scheduler: a KV cache of %lld bytes holds %lld blocks of %d tokens at %lld "
                      "bytes per token",
                      (long long)p->kv_cache_bytes, (long long)n_blocks, p->block_size,
                      (long long)token_bytes);
    rt_sched *s = calloc(1, sizeof *s);
    if (!s)
        return fq_err(err, err_len, FQ_ENOMEM, "scheduler: out of memory");
    s->m = m;
    s->ops = ops;
    s->p = *p;
    int64_t slots = n_blocks * p->block_size;
    if (s->p.max_model_len == 0)
        s->p.max_model_len =
            c->n_ctx > 0 ? c->n_ctx : (int32_t)(slots < INT32_MAX ? slots : INT32_MAX);
    s->n_vocab = c->n_vocab;
    s->eos = m->tok ? rt_tokenizer_eos(m->tok) : -1;
    s->next_id = 1;
    rt_backend_params bp = rt_backend_default_params();
    bp.mode = p->mode;
    bp.abits = p->abits;
    bp.n_threads = p->n_threads;
    bp.kv.block_size = p->block_size;
    bp.kv.n_blocks = (int32_t)n_blocks;
    bp.max_batch_tokens = p->max_num_batched_tokens;
    bp.graphs = p->cuda_graphs;
    size_t n = (size_t)p->max_num_seqs;
    int rc = rt_kv_create(&bp.kv, &s->kv);
    s->logits = fq_malloc_array(n * (size_t)s->n_vocab, sizeof(float));
    s->steps = fq_calloc_array(n, sizeof *s->steps);
    s->batch = fq_calloc_array(n, sizeof *s->batch);
    s->running = fq_calloc_array(n, sizeof *s->running);
    s->picked = fq_calloc_array(n, sizeof *s->picked);
    s->rows = fq_calloc_array(n, sizeof *s->rows);
    if (rc || !s->logits || !s->steps || !s->batch || !s->running || !s->picked || !s->rows)
        rc = fq_err(err, err_len, FQ_ENOMEM, "scheduler: out of memory");
    else
        rc = ops->create(m, &bp, &s->be, err, err_len);
    if (rc) {
        rt_sched_destroy(s);
        return rc;
    }
    s->st.kv_blocks_total = (int32_t)n_blocks;
    s->st.block_size = p->block_size;
    *out = s;
    return 0;
}

void rt_sched_destroy(rt_sched *s)
{
    if (!s)
        return;
    while (s->n_running > 0) {
        rt_seq *q = s->running[s->n_running - 1];
        running_remove(s, q);
        seq_free(s, q);
    }
    while (s->wait_head) {
        rt_seq *q = s->wait_head;
        wait_unlink(s, q);
        seq_free(s, q);
    }
    if (s->be)
        s->ops->destroy(s->be);
    rt_kv_destroy(s->kv);
    free(s->logits);
    free(s->picked);
    free(s->rows);
    free(s->steps);
    free(s->batch);
    free(s->running);
    free(s);
}

/* ---- submit / abort ---- */

static int check_request(const rt_sched *s, const rt_request *req, int32_t *max_tokens, char *err,
                         size_t err_len)
{
    if (!req->on_event)
        return fq_err(err, err_len, FQ_EINVAL, "request has no event callback");
    if (req->n < 0 || req->n > 1)
        return fq_err(err, err_len, FQ_EINVAL, "n = %d: only one completion per request", req->n);
    if (req->n_prompt <= 0 || !req->prompt)
        return fq_err(err, err_len, FQ_EINVAL, "the prompt is empty");
    if (req->max_tokens < 0)
        return fq_err(err, err_len, FQ_EINVAL, "max_tokens %d is negative", req->max_tokens);
    if (req->n_stop_token_ids < 0 || (req->n_stop_token_ids > 0 && !req->stop_token_ids))
        return fq_err(err, err_len, FQ_EINVAL, "bad stop_token_ids");
    for (int32_t i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || req->prompt[i] >= s->n_vocab)
            return fq_err(err, err_len, FQ_EINVAL, "prompt token %d is %d, outside [0, %d)", i,
                          req->prompt[i], s->n_vocab);
    int32_t len = s->p.max_model_len;
    if (req->max_tokens == 0 && req->n_prompt >= len)
        return fq_err(err, err_len, RT_SCHED_ETOO_LONG,
                      "this model's maximum context length is %d tokens, and the prompt has %d "
                      "tokens, leaving none to generate",
                      len, req->n_prompt);
    if ((int64_t)req->n_prompt + req->max_tokens > len)
        return fq_err(err, err_len, RT_SCHED_ETOO_LONG,
                      "this model's maximum context length is %d tokens, but %lld were requested "
                      "(%d in the prompt, %d for max_tokens)",
                      len, (long long)req->n_prompt + req->max_tokens, req->n_prompt,
                      req->max_tokens);
    int32_t need = rt_kv_blocks_for(s->kv, req->n_prompt), have = rt_kv_n_blocks(s->kv);
    if (need > have)
        return fq_err(err, err_len, RT_SCHED_ENO_FIT,
                      "the prompt's %d tokens need %d KV cache blocks of %d tokens, and the whole "
                      "cache has %d",
                      req->n_prompt, need, rt_kv_block_size(s->kv), have);
    if (s->n_waiting >= s->p.max_queue_requests ||
        s->waiting_prompt_tokens + req->n_prompt > s->p.max_queue_prompt_tokens)
        return fq_err(err, err_len, RT_SCHED_EQUEUE_FULL,
                      "the queue is full: %d requests with %lld prompt tokens are waiting (limits "
                      "%d and %lld), this one has %d",
                      s->n_waiting, (long long)s->waiting_prompt_tokens, s->p.max_queue_requests,
                      (long long)s->p.max_queue_prompt_tokens, req->n_prompt);
    *max_tokens = req->max_tokens ? req->max_tokens : len - req->n_prompt;
    return 0;
}

/* splitmix64 of the scheduler seed and the request id. */
static uint64_t fallback_seed(uint64_t seed, uint64_t id)
{
    uint64_t z = seed + id * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int rt_sched_submit(rt_sched *s, const rt_request *req, uint64_t *id, char *err, size_t err_len)
{
    *id = 0;
    if (s->in_callback)
        return fq_err(err, err_len, FQ_EINVAL, "rt_sched_submit called from an event callback");
    int32_t max_tokens = 0;
    int rc = check_request(s, req, &max_tokens, err, err_len);
    if (rc)
        return rc;
    rt_seq *q = calloc(1, sizeof *q);
    if (!q)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    q->id = s->next_id;
    q->tokens = fq_malloc_array((size_t)req->n_prompt + (size_t)max_tokens, sizeof(int32_t));
    q->stop_ids = req->n_stop_token_ids > 0
                      ? fq_malloc_array((size_t)req->n_stop_token_ids, sizeof(int32_t))
                      : NULL;
    if (!q->tokens || (req->n_stop_token_ids > 0 && !q->stop_ids))
        rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory for a request of %d + %d tokens",
                    req->n_prompt, max_tokens);
    else
        rc = rt_sampler_create(&req->sampling, s->n_vocab, req->prompt, (size_t)req->n_prompt,
                               fallback_seed(s->p.seed, q->id), &q->smp, err, err_len);
    if (rc) {
        seq_free(s, q);
        return rc;
    }
    memcpy(q->tokens, req->prompt, (size_t)req->n_prompt * sizeof(int32_t));
    if (q->stop_ids)
        memcpy(q->stop_ids, req->stop_token_ids, (size_t)req->n_stop_token_ids * sizeof(int32_t));
    q->n_stop = req->n_stop_token_ids;
    q->n_prompt = req->n_prompt;
    q->max_tokens = max_tokens;
    q->ignore_eos = req->ignore_eos;
    q->on_event = req->on_event;
    q->ud = req->ud;
    q->t_submit = fq_now_s();
    q->t_admit = q->t_first = -1.0;
    wait_link(s, q, false);
    *id = s->next_id++;
    return 0;
}

int rt_sched_abort(rt_sched *s, uint64_t id, rt_finish_reason reason)
{
    if (s->in_callback)
        return FQ_EINVAL;
    rt_seq *q = find_seq(s, id);
    if (!q)
        return FQ_ENOTFOUND;
    seq_finish(s, q, reason, -1, NULL);
    return 0;
}

int32_t rt_sched_abort_all(rt_sched *s, rt_finish_reason reason)
{
    if (s->in_callback)
        return FQ_EINVAL;
    int32_t n = 0;
    while (s->n_running > 0 || s->wait_head) {
        rt_seq *q = s->n_running > 0 ? s->running[s->n_running - 1] : s->wait_head;
        seq_finish(s, q, reason, -1, NULL);
        n++;
    }
    return n;
}

/* ---- one step ---- */

static void expire_waiting(rt_sched *s, double now)
{
    if (s->p.queue_timeout_s <= 0)
        return;
    for (rt_seq *q = s->wait_head, *next; q; q = next) {
        next = q->next;
        if (!q->admitted && now - q->t_submit >= s->p.queue_timeout_s)
            seq_finish(s, q, RT_FINISH_TIMEOUT, -1, NULL);
    }
}

/* Tokens q can add past n_computed with the blocks it holds plus every free block. */
static int64_t room_for(const rt_sched *s, const rt_seq *q)
{
    int64_t bs = rt_kv_block_size(s->kv);
    return (int64_t)q->kv.n_blocks * bs - q->n_computed + (int64_t)rt_kv_n_free(s->kv) * bs;
}

/* Plans n tokens of q for this step, taking the blocks they need (room_for said they exist). */
static int plan(rt_sched *s, rt_seq *q, int32_t n, int32_t *budget)
{
    int rc = rt_kv_seq_reserve(s->kv, &q->kv, (int64_t)q->n_computed + n);
    if (rc)
        return rc; /* FQ_ENOMEM: the block table could not grow */
    q->step_tokens = n;
    *budget -= n;
    return 0;
}

/* Frees room for running[i]: preempts the newest running sequence when it is newer than i
 * (returning its planned tokens to the budget). Returns false when there is none. */
static bool preempt_newer(rt_sched *s, int32_t i, int32_t *budget)
{
    if (i >= s->n_running - 1)
        return false;
    rt_seq *victim = s->running[s->n_running - 1];
    *budget += victim->step_tokens;
    seq_preempt(s, victim);
    return true;
}

/* True (after finishing it) when q alone holds the whole pool and still needs more. */
static bool finish_if_outgrown(rt_sched *s, rt_seq *q)
{
    if (q->kv.n_blocks < rt_kv_n_blocks(s->kv))
        return false;
    seq_finish(s, q, RT_FINISH_LENGTH, -1, NULL);
    return true;
}

/* Pass 1: one token for every running sequence whose context is complete but for its last token. */
static void plan_decodes(rt_sched *s, int32_t *budget)
{
    for (int32_t i = 0; *budget > 0 && i < s->n_running; i++) {
        rt_seq *q = s->running[i];
        if (seq_total(q) - q->n_computed != 1)
            continue;
        while (room_for(s, q) < 1 && preempt_newer(s, i, budget)) {
        }
        if (room_for(s, q) < 1) {
            /* q is the newest: it outgrew the whole cache, or older sequences hold the blocks */
            if (!finish_if_outgrown(s, q))
                seq_preempt(s, q);
            i--; /* running[i] is now the next sequence */
            continue;
        }
        if (plan(s, q, 1, budget) != 0) {
            seq_finish(s, q, RT_FINISH_ERROR, -1, "out of memory for a KV block table");
            i--;
        }
    }
}

/* Pass 2: prefill (or recompute) chunks of running sequences, oldest first. */
static void plan_prefills(rt_sched *s, int32_t *budget)
{
    for (int32_t i = 0; *budget > 0 && i < s->n_running; i++) {
        rt_seq *q = s->running[i];
        int64_t need = seq_total(q) - q->n_computed;
        if (need <= 1)
            continue;
        while (room_for(s, q) < 1 && preempt_newer(s, i, budget)) {
        }
        int64_t room = room_for(s, q);
        if (room < 1) {
            if (finish_if_outgrown(s, q))
                i--;
            continue; /* the newest: wait for older sequences to free blocks */
        }
        int32_t n =
            rt_prefill_chunk(need, *budget < room ? *budget : room, s->p.max_num_batched_tokens);
        if (n == 0)
            continue; /* room for one token only: the prompt waits (rt_prefill_chunk) */
        if (plan(s, q, n, budget) != 0) {
            seq_finish(s, q, RT_FINISH_ERROR, -1, "out of memory for a KV block table");
            i--;
        }
    }
}

/* Pass 3: admission from the queue head, FCFS, while a sequence slot, budget and the blocks for
 * the head's next chunk are there. */
static void admit(rt_sched *s, int32_t *budget, double now)
{
    int64_t slots = (int64_t)rt_kv_n_blocks(s->kv) * rt_kv_block_size(s->kv);
    while (s->wait_head && *budget > 0 && s->n_running < s->p.max_num_seqs) {
        rt_seq *q = s->wait_head;
        /* never more than the cache: it can always start */
        int64_t n = rt_prefill_chunk(seq_total(q), *budget < slots ? *budget : slots,
                                     s->p.max_num_batched_tokens);
        if (n == 0 || rt_kv_blocks_for(s->kv, n) > rt_kv_n_free(s->kv))
            break;
        wait_unlink(s, q);
        q->state = SEQ_RUNNING;
        s->running[s->n_running++] = q;
        if (!q->admitted) {
            q->admitted = true;
            q->t_admit = now;
        }
        if (plan(s, q, (int32_t)n, budget) != 0)
            seq_finish(s, q, RT_FINISH_ERROR, -1, "out of memory for a KV block table");
    }
}

/* Samples q's next token from its logits row, emits it, and finishes q when it is done. */
/* q's next token: sampled from its logits row, or (row NULL) the one the backend picked with the
 * sampler's row (rt_sampler_row; rt_sched_step checks that the sampler had one). */
static void take_token(rt_sched *s, rt_seq *q, float *row, int32_t picked, double now)
{
    rt_sample_result res;
    int32_t tok;
    if (row) {
        tok = rt_sampler_sample(q->smp, row, &res); /* also records tok in the sampler */
    } else {
        tok = picked;
        rt_sampler_accept(q->smp, tok);
        memset(&res, 0, sizeof res);
        res.token = tok;
    }
    q->tokens[seq_total(q)] = tok;
    q->n_gen++;
    s->st.n_generated_tokens++;
    if (q->t_first < 0)
        q->t_first = now;
    rt_sched_event ev = {.type = RT_SCHED_EV_TOKEN, .id = q->id};
    ev.u.token.token = tok;
    ev.u.token.index = q->n_gen - 1;
    ev.u.token.sample = &res;
    bool cb_stop = emit(s, q, &ev) == RT_SCHED_STOP;
    bool stop_tok = tok == s->eos && !q->ignore_eos;
    for (int32_t i = 0; i < q->n_stop && !stop_tok; i++)
        stop_tok = q->stop_ids[i] == tok;
    if (stop_tok)
        seq_finish(s, q, RT_FINISH_STOP, tok, NULL);
    else if (cb_stop)
        seq_finish(s, q, RT_FINISH_STOP, -1, NULL);
    else if (q->n_gen >= q->max_tokens)
        seq_finish(s, q, RT_FINISH_LENGTH, -1, NULL);
}

/* Gathers the planned sequences into the step arrays, in running order. */
static int32_t build_batch(rt_sched *s)
{
    int32_t n = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        rt_seq *q = s->running[i];
        if (q->step_tokens == 0)
            continue;
        s->steps[n] = (rt_seq_step){.tokens = q->tokens + q->n_computed,
                                    .n_tokens = q->step_tokens,
                                    .pos0 = q->n_computed,
                                    .kv = &q->kv,
                                    .all_logits = false};
        s->batch[n++] = q;
    }
    return n;
}

int rt_sched_step(rt_sched *s, char *err, size_t err_len)
{
    if (s->in_callback)
        return fq_err(err, err_len, FQ_EINVAL, "rt_sched_step called from an event callback");
    double now = fq_now_s();
    expire_waiting(s, now);
    s->preempted_this_step = false;
    int32_t budget = s->p.max_num_batched_tokens;
    plan_decodes(s, &budget);
    plan_prefills(s, &budget);
    if (!s->preempted_this_step)
        admit(s, &budget, now);
    int32_t n = build_batch(s);
    s->st.last_step_seqs = n;
    s->st.last_step_tokens = s->p.max_num_batched_tokens - budget;
    if (n == 0)
        return s->n_running + s->n_waiting;
    char msg[256] = "";
    rt_batch b = {.seqs = s->steps, .n_seqs = n};
    /* when no sequence of the step needs more than its filters and draw (no bias, penalties or
     * logprobs), the backend picks the tokens where the logits are (cuda: on the device; 4 bytes
     * per sequence come back) */
    bool on_backend = s->ops->forward_sample != NULL;
    for (int32_t k = 0; k < n && on_backend; k++)
        on_backend = rt_sampler_row(s->batch[k]->smp, &s->rows[k]);
    int rc = on_backend ? s->ops->forward_sample(s->be, &b, s->rows, s->picked, msg, sizeof msg)
                        : s->ops->forward(s->be, &b, s->logits, msg, sizeof msg);
    s->st.n_steps_picked += on_backend;
    s->st.n_steps++;
    for (int32_t k = 0; k < n; k++) {
        rt_seq *q = s->batch[k];
        int32_t start = q->n_computed, end = start + q->step_tokens;
        q->step_tokens = 0;
        if (rc) {
            seq_finish(s, q, RT_FINISH_ERROR, -1, msg);
            continue;
        }
        q->n_computed = end;
        if (start < q->n_prompt)
            s->st.n_prompt_tokens += (end < q->n_prompt ? end : q->n_prompt) - start;
        if (end == seq_total(q))
            take_token(s, q, on_backend ? NULL : s->logits + (int64_t)k * s->n_vocab, s->picked[k],
                       fq_now_s());
    }
    if (rc)
        return fq_err(err, err_len, rc, "forward step of %d sequences: %s", n, msg);
    return s->n_running + s->n_waiting;
}

void rt_sched_stats_get(const rt_sched *s, rt_sched_stats *st)
{
    *st = s->st;
    st->n_running = s->n_running;
    st->n_waiting = s->n_waiting;
    st->kv_blocks_used = rt_kv_n_blocks(s->kv) - rt_kv_n_free(s->kv);
    rt_backend_stats bs = {0};
    if (s->ops->stats)
        s->ops->stats(s->be, &bs);
    st->n_steps_graph = bs.graph_steps;
}

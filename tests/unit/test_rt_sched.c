/* test_rt_sched.c — the continuous-batching scheduler on the generated tiny model: outputs equal
 * the offline runner's alone and in a batch of 16 joining at different steps, chunked prefill,
 * preemption by recompute, abort, queue limits and timeout, length checks, finish reasons, seeded
 * sampling, and every KV block back in the pool at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_model.h"
#include "rt_ops.h"
#include "rt_runner.h"
#include "rt_sched.h"
#include "tc_tiny_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_GEN = 128 };

typedef struct sched_state {
    char dir[512];
    rt_model *m;
} sched_state;

static int setup(void **state)
{
    sched_state *s = calloc(1, sizeof *s);
    char err[512] = "", path[600];
    tc_tiny_params p = tc_tiny_default_params();
    p.tied = false; /* the tied tiny model greedily repeats one token; this one does not */
    if (!s || tc_mkdtemp(s->dir, sizeof s->dir) != 0 || tc_tiny_model_write(s->dir, &p) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/tiny.gguf", s->dir);
    if (rt_model_load(path, &s->m, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    sched_state *s = *state;
    rt_model_destroy(s->m);
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

/* ---- helpers ---- */

/* What one request's callback saw. */
typedef struct collector {
    uint64_t id;
    int32_t tokens[MAX_GEN];
    float logprobs[MAX_GEN]; /* of each token (0 unless the request asked for logprobs) */
    int32_t n_tokens;
    int32_t stop_after; /* return RT_SCHED_STOP on this many tokens; 0 = never */
    int32_t n_finish;   /* FINISH events (must end at 1) */
    bool token_after_finish;
    rt_finish_reason reason;
    int32_t stop_token;
    int32_t n_prompt, n_generated;
    double queued_s, first_token_s, total_s;
    char message[256];
    rt_sched *reenter; /* when set, the callback checks that calls back in are refused */
    int reenter_rc;
} collector;

static int on_event(void *ud, const rt_sched_event *ev)
{
    collector *c = ud;
    if (c->reenter) {
        char err[128];
        uint64_t id;
        rt_request req = rt_request_default();
        c->reenter_rc = rt_sched_submit(c->reenter, &req, &id, err, sizeof err);
        if (c->reenter_rc == FQ_EINVAL)
            c->reenter_rc = rt_sched_abort(c->reenter, ev->id, RT_FINISH_ABORT);
        if (c->reenter_rc == FQ_EINVAL)
            c->reenter_rc = rt_sched_step(c->reenter, err, sizeof err);
    }
    if (ev->type == RT_SCHED_EV_TOKEN) {
        if (c->n_finish)
            c->token_after_finish = true;
        if (ev->u.token.index != c->n_tokens || c->n_tokens >= MAX_GEN)
            c->token_after_finish = true; /* out of order: flagged the same way */
        else {
            c->logprobs[c->n_tokens] = ev->u.token.sample->logprob;
            c->tokens[c->n_tokens++] = ev->u.token.token;
        }
        return c->stop_after && c->n_tokens == c->stop_after ? RT_SCHED_STOP : RT_SCHED_CONTINUE;
    }
    c->n_finish++;
    c->reason = ev->u.finish.reason;
    c->stop_token = ev->u.finish.stop_token;
    c->n_prompt = ev->u.finish.n_prompt;
    c->n_generated = ev->u.finish.n_generated;
    c->queued_s = ev->u.finish.queued_s;
    c->first_token_s = ev->u.finish.first_token_s;
    c->total_s = ev->u.finish.total_s;
    snprintf(c->message, sizeof c->message, "%s", ev->u.finish.message);
    return RT_SCHED_CONTINUE;
}

/* rt_request_default with temperature 0 (OpenAI's default is 1). */
static rt_request greedy_request(void)
{
    rt_request req = rt_request_default();
    req.sampling.temperature = 0.0f;
    return req;
}

static int64_t bytes_per_token(const rt_model *m)
{
    const fq_config *c = &m->cfg;
    return 2 * (int64_t)c->n_layer * c->n_head_kv * c->head_dim * (int64_t)sizeof(float);
}

/* Scheduler params for n_blocks blocks of block_size tokens. */
static rt_sched_params small_params(const rt_model *m, int32_t block_size, int32_t n_blocks)
{
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.block_size = block_size;
    p.kv_cache_bytes = bytes_per_token(m) * block_size * n_blocks;
    return p;
}

static rt_sched *make_sched(const rt_model *m, const rt_sched_params *p)
{
    rt_sched *s = NULL;
    char err[512] = "";
    if (rt_sched_create(m, &rt_backend_cpu_ops, p, &s, err, sizeof err) != 0)
        fail_msg("rt_sched_create: %s", err);
    return s;
}

static uint64_t submit(rt_sched *s, const int32_t *prompt, int32_t n_prompt, int32_t max_tokens,
                       collector *c)
{
    rt_request req = greedy_request();
    req.prompt = prompt;
    req.n_prompt = n_prompt;
    req.max_tokens = max_tokens;
    req.ignore_eos = true;
    req.on_event = on_event;
    req.ud = c;
    char err[512] = "";
    uint64_t id = 0;
    if (rt_sched_submit(s, &req, &id, err, sizeof err) != 0)
        fail_msg("rt_sched_submit: %s", err);
    c->id = id;
    return id;
}

static int step(rt_sched *s)
{
    char err[512] = "";
    int rc = rt_sched_step(s, err, sizeof err);
    if (rc < 0)
        fail_msg("rt_sched_step: %s", err);
    return rc;
}

static void run_until_idle(rt_sched *s)
{
    for (int i = 0; i < 100000; i++)
        if (step(s) == 0)
            return;
    fail_msg("the scheduler never went idle");
}

static void assert_all_blocks_free(const rt_sched *s)
{
    rt_sched_stats st;
    rt_sched_stats_get(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_waiting, 0);
}

static void test_tokens(int32_t *t, int32_t n, int32_t n_vocab, uint32_t seed)
{
    for (int32_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab);
    }
}

/* Greedy tokens of one prompt through the offline runner (no EOS stop). */
static void runner_greedy(const rt_model *m, const int32_t *prompt, int32_t n_prompt, int32_t n_new,
                          int32_t *out)
{
    rt_backend_params bp = rt_backend_default_params();
    bp.n_threads = 2;
    bp.max_batch_tokens = 64;
    bp.kv.block_size = 16;
    bp.kv.n_blocks = 32;
    rt_runner *r = NULL;
    char err[512] = "";
    if (rt_runner_create(m, "cpu", &bp, &r, err, sizeof err) != 0)
        fail_msg("runner: %s", err);
    rt_greedy_params gp = rt_greedy_default_params();
    gp.max_new_tokens = n_new;
    gp.stop_at_eos = false;
    int32_t n_out = 0;
    if (rt_runner_greedy(r, &prompt, &n_prompt, 1, &gp, out, &n_out, NULL, err, sizeof err))
        fail_msg("greedy: %s", err);
    assert_int_equal(n_out, n_new);
    rt_runner_destroy(r);
}

static bool memchr_i32(const int32_t *v, int32_t n, int32_t x)
{
    for (int32_t i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

static void assert_finished(const collector *c, rt_finish_reason reason, int32_t n_generated)
{
    assert_int_equal(c->n_finish, 1);
    assert_false(c->token_after_finish);
    if (c->reason != reason)
        fail_msg("request %llu finished with %s, expected %s (%s)", (unsigned long long)c->id,
                 rt_finish_reason_name(c->reason), rt_finish_reason_name(reason), c->message);
    assert_int_equal(c->n_generated, n_generated);
    assert_int_equal(c->n_tokens, n_generated);
}

/* ---- tests ---- */

static void test_rt_sched_lone_request_matches_runner_greedy(void **state)
{
    sched_state *st = *state;
    int32_t prompt[13], want[20];
    test_tokens(prompt, 13, st->m->cfg.n_vocab, 7);
    runner_greedy(st->m, prompt, 13, 20, want);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    rt_sched *s = make_sched(st->m, &p);
    collector c = {0};
    submit(s, prompt, 13, 20, &c);
    run_until_idle(s);
    assert_finished(&c, RT_FINISH_LENGTH, 20);
    assert_memory_equal(c.tokens, want, sizeof want);
    assert_int_equal(c.n_prompt, 13);
    assert_true(c.queued_s >= 0 && c.first_token_s >= c.queued_s && c.total_s >= c.first_token_s);
    assert_all_blocks_free(s);
    rt_sched_stats ss;
    rt_sched_stats_get(s, &ss);
    assert_int_equal(ss.n_generated_tokens, 20);
    assert_int_equal(ss.n_prompt_tokens, 13);
    assert_int_equal(ss.n_steps, 20); /* one prefill step, then 19 decodes */
    assert_int_equal(ss.n_preemptions, 0);
    rt_sched_destroy(s);
}

enum { N16 = 16 };

typedef struct batch_case {
    int32_t prompt[N16][80];
    int32_t n_prompt[N16];
    int32_t max_tokens[N16];
    int32_t want[N16][40];
    collector c[N16];
} batch_case;

static batch_case *make_batch_case(const rt_model *m)
{
    batch_case *bc = calloc(1, sizeof *bc);
    for (int i = 0; i < N16; i++) {
        bc->n_prompt[i] = 1 + (i * 37) % 70; /* 1 .. 70 tokens */
        bc->max_tokens[i] = 6 + (i * 7) % 25;
        test_tokens(bc->prompt[i], bc->n_prompt[i], m->cfg.n_vocab, 100u + (uint32_t)i);
        runner_greedy(m, bc->prompt[i], bc->n_prompt[i], bc->max_tokens[i], bc->want[i]);
    }
    return bc;
}

static void check_batch_case(const batch_case *bc)
{
    for (int i = 0; i < N16; i++) {
        assert_finished(&bc->c[i], RT_FINISH_LENGTH, bc->max_tokens[i]);
        if (memcmp(bc->c[i].tokens, bc->want[i], (size_t)bc->max_tokens[i] * sizeof(int32_t)))
            fail_msg("request %d (prompt %d tokens) differs from its lone greedy output", i,
                     bc->n_prompt[i]);
    }
}

static void test_rt_sched_batch_of_16_equals_alone(void **state)
{
    sched_state *st = *state;
    batch_case *bc = make_batch_case(st->m);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.max_num_batched_tokens = 48; /* prompts spread over steps, mixed with decodes */
    rt_sched *s = make_sched(st->m, &p);
    int32_t next = 0, max_running = 0, max_seqs_in_step = 0;
    for (int k = 0; k < 10000; k++) {
        /* four requests at step 0, then one more every other step: they join a running batch */
        while (next < N16 && (next < 4 ? 0 : 2 * (next - 3)) <= k) {
            submit(s, bc->prompt[next], bc->n_prompt[next], bc->max_tokens[next], &bc->c[next]);
            next++;
        }
        int rc = step(s);
        rt_sched_stats ss;
        rt_sched_stats_get(s, &ss);
        max_running = ss.n_running > max_running ? ss.n_running : max_running;
        max_seqs_in_step =
            ss.last_step_seqs > max_seqs_in_step ? ss.last_step_seqs : max_seqs_in_step;
        assert_true(ss.last_step_tokens <= 48);
        if (rc == 0 && next == N16)
            break;
    }
    assert_int_equal(next, N16);
    check_batch_case(bc);
    assert_true(max_running >= 8);
    assert_true(max_seqs_in_step >= 8);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
    free(bc);
}

static void test_rt_sched_chunked_prefill_under_a_small_budget(void **state)
{
    sched_state *st = *state;
    int32_t prompt[50], want[10], other[3], want_other[12];
    test_tokens(prompt, 50, st->m->cfg.n_vocab, 21);
    test_tokens(other, 3, st->m->cfg.n_vocab, 22);
    runner_greedy(st->m, prompt, 50, 10, want);
    runner_greedy(st->m, other, 3, 12, want_other);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.max_num_batched_tokens = 7;
    rt_sched *s = make_sched(st->m, &p);
    collector a = {0}, b = {0};
    submit(s, other, 3, 12, &b);
    step(s); /* b's prompt in one step; from now on b decodes one token a step */
    submit(s, prompt, 50, 10, &a);
    int steps_to_first = 0;
    while (a.n_tokens == 0) {
        step(s);
        steps_to_first++;
        rt_sched_stats ss;
        rt_sched_stats_get(s, &ss);
        assert_true(ss.last_step_tokens <= 7);
        if (a.n_tokens == 0)
            assert_int_equal(ss.last_step_tokens, 7); /* b's decode + a 6-token chunk */
    }
    assert_int_equal(steps_to_first, 9); /* 50 tokens in chunks of 6 (b decoding alongside) */
    assert_int_equal(b.n_tokens, 10);    /* b was not starved while a prefilled */
    run_until_idle(s);
    assert_finished(&a, RT_FINISH_LENGTH, 10);
    assert_finished(&b, RT_FINISH_LENGTH, 12);
    assert_memory_equal(a.tokens, want, sizeof want);
    assert_memory_equal(b.tokens, want_other, sizeof want_other);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

static void test_rt_sched_preemption_keeps_greedy_outputs(void **state)
{
    sched_state *st = *state;
    batch_case *bc = make_batch_case(st->m);
    /* 10 blocks of 16 = 160 tokens for 16 requests of up to 100: the pool runs dry repeatedly */
    rt_sched_params p = small_params(st->m, 16, 10);
    p.max_num_batched_tokens = 32;
    rt_sched *s = make_sched(st->m, &p);
    for (int i = 0; i < N16; i++)
        submit(s, bc->prompt[i], bc->n_prompt[i], bc->max_tokens[i], &bc->c[i]);
    for (int k = 0;; k++) {
        assert_true(k < 10000);
        if (step(s) == 0)
            break;
        rt_sched_stats ss;
        rt_sched_stats_get(s, &ss);
        assert_true(ss.kv_blocks_used <= ss.kv_blocks_total);
    }
    rt_sched_stats ss;
    rt_sched_stats_get(s, &ss);
    assert_true(ss.n_preemptions > 0);
    assert_int_equal(ss.kv_blocks_total, 10);
    check_batch_case(bc);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
    free(bc);
}

static void test_rt_sched_outgrowing_the_whole_cache_finishes_length(void **state)
{
    sched_state *st = *state;
    int32_t prompt[10], want[39];
    test_tokens(prompt, 10, st->m->cfg.n_vocab, 31);
    runner_greedy(st->m, prompt, 10, 39, want);
    rt_sched_params p = small_params(st->m, 4, 12); /* 48 cache slots */
    rt_sched *s = make_sched(st->m, &p);
    collector c = {0};
    submit(s, prompt, 10, 100, &c);
    run_until_idle(s);
    /* positions 0..47 are cached; the last of them chose token 39; the 40th has no slot */
    assert_finished(&c, RT_FINISH_LENGTH, 39);
    assert_memory_equal(c.tokens, want, sizeof want);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

static void test_rt_sched_abort_frees_blocks_at_once(void **state)
{
    sched_state *st = *state;
    int32_t pa[20], pb[9];
    test_tokens(pa, 20, st->m->cfg.n_vocab, 41);
    test_tokens(pb, 9, st->m->cfg.n_vocab, 42);
    rt_sched_params p = small_params(st->m, 4, 64);
    p.max_num_seqs = 1;
    rt_sched *s = make_sched(st->m, &p);
    collector a = {0}, b = {0};
    uint64_t ia = submit(s, pa, 20, 50, &a), ib = submit(s, pb, 9, 50, &b);
    step(s);
    step(s);
    rt_sched_stats ss;
    rt_sched_stats_get(s, &ss);
    assert_int_equal(ss.n_running, 1);
    assert_int_equal(ss.n_waiting, 1);
    assert_int_equal(ss.kv_blocks_used, 6); /* 21 positions of a in blocks of 4 */
    /* the waiting one */
    assert_int_equal(rt_sched_abort(s, ib, RT_FINISH_ABORT), 0);
    assert_finished(&b, RT_FINISH_ABORT, 0);
    assert_true(b.first_token_s < 0);
    rt_sched_stats_get(s, &ss);
    assert_int_equal(ss.n_waiting, 0);
    /* the running one: blocks back before the next step */
    assert_int_equal(rt_sched_abort(s, ia, RT_FINISH_ABORT), 0);
    assert_finished(&a, RT_FINISH_ABORT, 2);
    assert_all_blocks_free(s);
    assert_int_equal(rt_sched_abort(s, ia, RT_FINISH_ABORT), FQ_ENOTFOUND);
    assert_int_equal(rt_sched_abort(s, 999, RT_FINISH_ABORT), FQ_ENOTFOUND);
    assert_int_equal(step(s), 0);
    assert_int_equal(a.n_finish, 1);
    assert_int_equal(b.n_finish, 1);
    rt_sched_stats_get(s, &ss);
    assert_int_equal(ss.last_step_tokens, 0);
    /* abort_all (shutdown) ends both kinds */
    collector c = {0}, d = {0};
    submit(s, pa, 20, 50, &c);
    submit(s, pb, 9, 50, &d);
    step(s);
    assert_int_equal(rt_sched_abort_all(s, RT_FINISH_ABORT), 2);
    assert_finished(&c, RT_FINISH_ABORT, 1);
    assert_finished(&d, RT_FINISH_ABORT, 0);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

static void test_rt_sched_queue_limits_refuse(void **state)
{
    sched_state *st = *state;
    int32_t prompt[40];
    test_tokens(prompt, 40, st->m->cfg.n_vocab, 51);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.max_num_seqs = 1;
    p.max_queue_requests = 2;
    p.max_queue_prompt_tokens = 30;
    rt_sched *s = make_sched(st->m, &p);
    collector c[5] = {{0}};
    rt_request req = greedy_request();
    req.on_event = on_event;
    req.max_tokens = 4;
    char err[512] = "";
    uint64_t id = 7;
    submit(s, prompt, 20, 4, &c[0]);
    /* 20 + 11 prompt tokens waiting would pass 30 */
    req.prompt = prompt;
    req.n_prompt = 11;
    req.ud = &c[1];
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), RT_SCHED_EQUEUE_FULL);
    assert_int_equal(id, 0);
    assert_non_null(strstr(err, "30"));
    submit(s, prompt, 10, 4, &c[1]);
    /* a third waiting request passes max_queue_requests */
    req.n_prompt = 1;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), RT_SCHED_EQUEUE_FULL);
    assert_string_equal(rt_sched_strerror(RT_SCHED_EQUEUE_FULL), "queue full");
    assert_int_equal(c[1].n_finish + c[1].n_tokens, 0); /* refusals fire nothing */
    /* once the first is admitted the queue has room again */
    step(s);
    submit(s, prompt, 1, 4, &c[2]);
    run_until_idle(s);
    for (int i = 0; i < 3; i++)
        assert_finished(&c[i], RT_FINISH_LENGTH, 4);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

static void test_rt_sched_queue_timeout_fires(void **state)
{
    sched_state *st = *state;
    int32_t prompt[8];
    test_tokens(prompt, 8, st->m->cfg.n_vocab, 61);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.max_num_seqs = 1;
    p.queue_timeout_s = 0.05;
    rt_sched *s = make_sched(st->m, &p);
    collector a = {0}, b = {0};
    submit(s, prompt, 8, 30, &a);
    step(s); /* a admitted: it never times out */
    submit(s, prompt, 8, 30, &b);
    nanosleep(&(struct timespec){.tv_nsec = 120 * 1000 * 1000}, NULL);
    step(s);
    assert_finished(&b, RT_FINISH_TIMEOUT, 0);
    assert_true(b.queued_s >= 0.05);
    assert_true(b.first_token_s < 0);
    assert_int_equal(a.n_finish, 0);
    run_until_idle(s);
    assert_finished(&a, RT_FINISH_LENGTH, 30);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

static void test_rt_sched_length_checks_refuse_with_numbers(void **state)
{
    sched_state *st = *state;
    int32_t prompt[64];
    test_tokens(prompt, 64, st->m->cfg.n_vocab, 71);
    rt_sched_params p = small_params(st->m, 4, 64);
    p.max_model_len = 64;
    rt_sched *s = make_sched(st->m, &p);
    rt_request req = greedy_request();
    collector c = {0};
    req.on_event = on_event;
    req.ud = &c;
    req.prompt = prompt;
    req.n_prompt = 40;
    req.max_tokens = 30;
    char err[512] = "";
    uint64_t id;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), RT_SCHED_ETOO_LONG);
    assert_non_null(strstr(err, "64"));
    assert_non_null(strstr(err, "70"));
    assert_non_null(strstr(err, "40"));
    assert_non_null(strstr(err, "30"));
    req.n_prompt = 64;
    req.max_tokens = 0;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), RT_SCHED_ETOO_LONG);
    /* max_tokens 0 = up to max_model_len */
    req.n_prompt = 40;
    req.ignore_eos = true;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    run_until_idle(s);
    assert_finished(&c, RT_FINISH_LENGTH, 24);
    rt_sched_destroy(s);

    /* a prompt larger than the whole cache can never be admitted */
    p = small_params(st->m, 4, 4);
    s = make_sched(st->m, &p);
    req.n_prompt = 17;
    req.max_tokens = 1;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), RT_SCHED_ENO_FIT);
    assert_non_null(strstr(err, "17"));
    assert_non_null(strstr(err, "5 KV cache blocks"));
    req.n_prompt = 16;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    run_until_idle(s);
    assert_int_equal(c.n_finish, 2);
    assert_int_equal(c.n_generated, 1);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);

    /* max_model_len 0 = the model's n_ctx (256) */
    p = rt_sched_default_params();
    p.n_threads = 2;
    s = make_sched(st->m, &p);
    req.n_prompt = 10;
    req.max_tokens = 247;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), RT_SCHED_ETOO_LONG);
    assert_non_null(strstr(err, "256"));
    req.max_tokens = 246;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    assert_int_equal(rt_sched_abort(s, id, RT_FINISH_ABORT), 0);
    rt_sched_destroy(s);
}

static void test_rt_sched_finish_reasons(void **state)
{
    sched_state *st = *state;
    int32_t prompt[12], want[30];
    test_tokens(prompt, 12, st->m->cfg.n_vocab, 81);
    runner_greedy(st->m, prompt, 12, 30, want);
    /* a stop token: the first generated token (after the first) that did not occur before it */
    int32_t k = 1;
    while (k < 30 && memchr_i32(want, k, want[k]))
        k++;
    assert_true(k < 30);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    rt_sched *s = make_sched(st->m, &p);
    collector a = {0}, b = {0}, c = {0};
    rt_request req = greedy_request();
    req.prompt = prompt;
    req.n_prompt = 12;
    req.max_tokens = 30;
    req.on_event = on_event;
    int32_t stops[2] = {-5 /* never generated */, want[k]};
    req.stop_token_ids = stops;
    req.n_stop_token_ids = 2;
    req.ud = &a;
    char err[256];
    uint64_t id;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    /* the callback stops b after 3 tokens (a stop string, say) */
    b.stop_after = 3;
    submit(s, prompt, 12, 30, &b);
    /* c runs to max_tokens */
    submit(s, prompt, 12, 5, &c);
    run_until_idle(s);
    assert_finished(&a, RT_FINISH_STOP, k + 1);
    assert_int_equal(a.stop_token, want[k]);
    assert_memory_equal(a.tokens, want, (size_t)(k + 1) * sizeof(int32_t));
    assert_finished(&b, RT_FINISH_STOP, 3);
    assert_int_equal(b.stop_token, -1);
    assert_finished(&c, RT_FINISH_LENGTH, 5);
    assert_int_equal(c.stop_token, -1);
    assert_string_equal(rt_finish_reason_name(RT_FINISH_LENGTH), "length");
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

static void test_rt_sched_eos_finishes_unless_ignored(void **state)
{
    sched_state *st = *state;
    int32_t prompt[6], eos = rt_tokenizer_eos(st->m->tok);
    assert_true(eos >= 0);
    test_tokens(prompt, 6, st->m->cfg.n_vocab, 91);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    rt_sched *s = make_sched(st->m, &p);
    rt_logit_bias bias = {.token = eos, .bias = 100.0f}; /* the model says EOS at once */
    collector a = {0}, b = {0};
    rt_request req = greedy_request();
    req.prompt = prompt;
    req.n_prompt = 6;
    req.max_tokens = 8;
    req.sampling.bias = &bias;
    req.sampling.n_bias = 1;
    req.on_event = on_event;
    req.ud = &a;
    char err[256];
    uint64_t id;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    req.ignore_eos = true;
    req.ud = &b;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    bias.bias = -100.0f; /* submit copied the bias: this changes nothing */
    run_until_idle(s);
    assert_finished(&a, RT_FINISH_STOP, 1);
    assert_int_equal(a.stop_token, eos);
    assert_int_equal(a.tokens[0], eos);
    assert_finished(&b, RT_FINISH_LENGTH, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(b.tokens[i], eos);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

/* Sixteen seeded requests (temperature, top_p, a repetition penalty, logprobs) through s; the
 * first four at once, the others one per step. */
static void run_seeded(rt_sched *s, const batch_case *bc, collector *c, int only)
{
    int32_t next = only >= 0 ? only : 0, end = only >= 0 ? only + 1 : N16;
    for (int k = 0; k < 100000; k++) {
        while (next < end && (next < 4 || only >= 0 || k >= next - 3)) {
            rt_request req = rt_request_default();
            req.prompt = bc->prompt[next];
            req.n_prompt = bc->n_prompt[next];
            req.max_tokens = bc->max_tokens[next];
            req.ignore_eos = true;
            req.sampling.temperature = 0.9f;
            req.sampling.top_p = 0.95f;
            req.sampling.repetition_penalty = 1.1f;
            req.sampling.has_seed = true;
            req.sampling.seed = 1000u + (uint64_t)next;
            req.sampling.logprobs = 0;
            req.on_event = on_event;
            req.ud = &c[next];
            char err[256];
            if (rt_sched_submit(s, &req, &c[next].id, err, sizeof err))
                fail_msg("submit: %s", err);
            next++;
        }
        if (step(s) == 0 && next == end)
            return;
    }
    fail_msg("the scheduler never went idle");
}

static void test_rt_sched_seeded_sampling_is_reproducible(void **state)
{
    sched_state *st = *state;
    batch_case *bc = make_batch_case(st->m);
    collector *alone = calloc(N16, sizeof *alone), *again = calloc(N16, sizeof *again);
    collector *batched = calloc(N16, sizeof *batched);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.max_num_batched_tokens = 40;
    rt_sched *s = make_sched(st->m, &p);
    for (int i = 0; i < N16; i++)
        run_seeded(s, bc, alone, i);
    rt_sched_destroy(s);
    /* again in a fresh scheduler, all together */
    s = make_sched(st->m, &p);
    run_seeded(s, bc, again, -1);
    rt_sched_destroy(s);
    /* and together in a pool small enough to preempt (same block size: the attention's online
     * softmax goes block by block, so another block size rounds differently) */
    rt_sched_params small = small_params(st->m, 16, 10);
    small.max_num_batched_tokens = 24;
    s = make_sched(st->m, &small);
    run_seeded(s, bc, batched, -1);
    rt_sched_stats ss;
    rt_sched_stats_get(s, &ss);
    assert_true(ss.n_preemptions > 0);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
    int differs_from_greedy = 0;
    for (int i = 0; i < N16; i++) {
        int32_t n = bc->max_tokens[i];
        assert_finished(&alone[i], RT_FINISH_LENGTH, n);
        assert_finished(&again[i], RT_FINISH_LENGTH, n);
        assert_finished(&batched[i], RT_FINISH_LENGTH, n);
        assert_memory_equal(alone[i].tokens, again[i].tokens, (size_t)n * sizeof(int32_t));
        assert_memory_equal(alone[i].tokens, batched[i].tokens, (size_t)n * sizeof(int32_t));
        /* bit for bit: a sequence's arithmetic does not depend on its neighbours */
        assert_memory_equal(alone[i].logprobs, again[i].logprobs, (size_t)n * sizeof(float));
        assert_memory_equal(alone[i].logprobs, batched[i].logprobs, (size_t)n * sizeof(float));
        for (int32_t j = 0; j < n; j++)
            assert_true(alone[i].logprobs[j] < 0);
        differs_from_greedy += memcmp(alone[i].tokens, bc->want[i], (size_t)n * 4) != 0;
    }
    assert_true(differs_from_greedy > 8); /* it did sample */
    free(alone);
    free(again);
    free(batched);
    free(bc);
}

/* Steps whose sequences need no more than their filters and draw let the backend pick the tokens
 * (forward_sample); a step with a sampler that wants logprobs takes the logits. The tokens are the
 * runner's either way. */
static void test_rt_sched_greedy_steps_pick_on_the_backend(void **state)
{
    sched_state *st = *state;
    int32_t nv = st->m->cfg.n_vocab, pa[9], pb[6], want_a[12], want_b[4];
    test_tokens(pa, 9, nv, 31);
    test_tokens(pb, 6, nv, 32);
    runner_greedy(st->m, pa, 9, 12, want_a);
    runner_greedy(st->m, pb, 6, 4, want_b);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    rt_sched *s = make_sched(st->m, &p);
    collector a = {0};
    submit(s, pa, 9, 12, &a);
    run_until_idle(s);
    rt_sched_stats s1;
    rt_sched_stats_get(s, &s1);
    assert_int_equal(s1.n_steps, 12);
    assert_int_equal(s1.n_steps_picked, 12);
    assert_memory_equal(a.tokens, want_a, sizeof want_a);

    collector a2 = {0}, b = {0};
    submit(s, pa, 9, 12, &a2);
    rt_request req = greedy_request(); /* greedy, but it wants logprobs: needs the logits */
    req.prompt = pb;
    req.n_prompt = 6;
    req.max_tokens = 4;
    req.ignore_eos = true;
    req.sampling.logprobs = 0;
    req.on_event = on_event;
    req.ud = &b;
    char err[256] = "";
    assert_int_equal(rt_sched_submit(s, &req, &b.id, err, sizeof err), 0);
    run_until_idle(s);
    rt_sched_stats s2;
    rt_sched_stats_get(s, &s2);
    assert_int_equal(s2.n_steps - s1.n_steps, 12); /* both in every step from the first */
    assert_int_equal(s2.n_steps_picked - s1.n_steps_picked, 8); /* a2 alone after b's 4 */
    assert_memory_equal(a2.tokens, want_a, sizeof want_a);
    assert_memory_equal(b.tokens, want_b, sizeof want_b);
    for (int i = 0; i < 4; i++)
        assert_true(b.logprobs[i] <= 0.0f);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

/* The CPU backend, failing with FQ_EIO ("device lost") any step that reaches position 30. */
static int failing_forward(rt_backend *be, const rt_batch *b, float *logits, char *err,
                           size_t err_len)
{
    for (int32_t i = 0; i < b->n_seqs; i++)
        if (b->seqs[i].pos0 + b->seqs[i].n_tokens > 30)
            return fq_err(err, err_len, FQ_EIO, "device lost");
    return rt_backend_cpu_ops.forward(be, b, logits, err, err_len);
}

static void test_rt_sched_forward_error_fails_that_batch_only(void **state)
{
    sched_state *st = *state;
    const rt_ops failing = {.name = "failing",
                            .create = rt_backend_cpu_ops.create,
                            .destroy = rt_backend_cpu_ops.destroy,
                            .forward = failing_forward};
    int32_t pa[10], pb[5], want[10];
    test_tokens(pa, 10, st->m->cfg.n_vocab, 111);
    test_tokens(pb, 5, st->m->cfg.n_vocab, 112);
    runner_greedy(st->m, pb, 5, 10, want);
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    p.max_num_seqs = 1; /* b waits while a runs */
    rt_sched *s = NULL;
    char err[256] = "";
    assert_int_equal(rt_sched_create(st->m, &failing, &p, &s, err, sizeof err), 0);
    collector a = {0}, b = {0};
    submit(s, pa, 10, 40, &a);
    submit(s, pb, 5, 10, &b);
    int rc = 1;
    for (int k = 0; k < 100 && rc > 0; k++)
        rc = rt_sched_step(s, err, sizeof err);
    assert_int_equal(rc, FQ_EIO);
    assert_non_null(strstr(err, "device lost"));
    assert_finished(&a, RT_FINISH_ERROR, 21); /* positions 0..29 computed: 21 tokens */
    assert_non_null(strstr(a.message, "device lost"));
    assert_int_equal(b.n_finish, 0);
    run_until_idle(s); /* still usable */
    assert_finished(&b, RT_FINISH_LENGTH, 10);
    assert_memory_equal(b.tokens, want, sizeof want);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);
}

/* Runs four seeded sampling requests (temperature with top_k, top_p, min_p, or none) together on
 * ops, into c[4]. */
static void run_sampled(const rt_model *m, const rt_ops *ops, const int32_t *prompt, collector *c,
                        rt_sched_stats *stats)
{
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    rt_sched *s = NULL;
    char err[512] = "";
    if (rt_sched_create(m, ops, &p, &s, err, sizeof err) != 0)
        fail_msg("rt_sched_create: %s", err);
    for (int i = 0; i < 4; i++) {
        rt_request req = rt_request_default();
        req.sampling.temperature = 0.7f + 0.2f * (float)i;
        req.sampling.top_k = i == 0 ? 5 : 0;
        req.sampling.top_p = i == 1 ? 0.8f : 1.0f;
        req.sampling.min_p = i == 2 ? 0.05f : 0.0f;
        req.sampling.has_seed = true;
        req.sampling.seed = 100 + (uint64_t)i;
        req.prompt = prompt;
        req.n_prompt = 7;
        req.max_tokens = 10;
        req.ignore_eos = true;
        req.on_event = on_event;
        req.ud = &c[i];
        assert_int_equal(rt_sched_submit(s, &req, &c[i].id, err, sizeof err), 0);
    }
    run_until_idle(s);
    rt_sched_stats_get(s, stats);
    rt_sched_destroy(s);
}

/* Sampling with temperature, top_k, top_p and min_p on the backend (forward_sample with the
 * samplers' rows) gives the tokens the host samplers give from the logits, draw for draw. */
static void test_rt_sched_sampling_on_the_backend_matches_the_host(void **state)
{
    sched_state *st = *state;
    int32_t prompt[7];
    test_tokens(prompt, 7, st->m->cfg.n_vocab, 41);
    rt_ops host_ops = rt_backend_cpu_ops;
    host_ops.forward_sample = NULL; /* the scheduler then samples every token from the logits */
    collector on_be[4] = {0}, on_host[4] = {0};
    rt_sched_stats sb, sh;
    run_sampled(st->m, &rt_backend_cpu_ops, prompt, on_be, &sb);
    run_sampled(st->m, &host_ops, prompt, on_host, &sh);
    assert_int_equal(sb.n_steps_picked, sb.n_steps);
    assert_int_equal(sh.n_steps_picked, 0);
    int distinct = 0;
    for (int i = 0; i < 4; i++) {
        assert_finished(&on_be[i], RT_FINISH_LENGTH, 10);
        assert_finished(&on_host[i], RT_FINISH_LENGTH, 10);
        assert_memory_equal(on_be[i].tokens, on_host[i].tokens, 10 * sizeof(int32_t));
        for (int j = 1; j < 10; j++)
            distinct += on_be[i].tokens[j] != on_be[i].tokens[0];
    }
    assert_true(distinct > 0); /* it did sample */
}

static void test_rt_sched_rejects_bad_requests_and_reentry(void **state)
{
    sched_state *st = *state;
    int32_t prompt[4] = {1, 2, 3, 4};
    rt_sched_params p = rt_sched_default_params();
    p.n_threads = 2;
    rt_sched *s = make_sched(st->m, &p);
    collector c = {0};
    rt_request req = greedy_request();
    req.prompt = prompt;
    req.n_prompt = 4;
    req.ud = &c;
    char err[256];
    uint64_t id;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), FQ_EINVAL); /* no callback */
    req.on_event = on_event;
    req.n_prompt = 0;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), FQ_EINVAL);
    req.n_prompt = 4;
    prompt[2] = st->m->cfg.n_vocab;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), FQ_EINVAL);
    assert_non_null(strstr(err, "outside"));
    prompt[2] = 3;
    req.n = 2;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), FQ_EINVAL);
    req.n = 1;
    req.max_tokens = -1;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), FQ_EINVAL);
    req.max_tokens = 3;
    assert_int_equal(c.n_finish + c.n_tokens, 0);
    /* callbacks cannot call back in */
    c.reenter = s;
    c.reenter_rc = 1;
    assert_int_equal(rt_sched_submit(s, &req, &id, err, sizeof err), 0);
    assert_int_equal(id, 1); /* refused requests take no id */
    run_until_idle(s);
    assert_int_equal(c.reenter_rc, FQ_EINVAL);
    assert_finished(&c, RT_FINISH_LENGTH, 3);
    assert_all_blocks_free(s);
    rt_sched_destroy(s);

    /* a cache smaller than one block */
    p = small_params(st->m, 16, 1);
    p.kv_cache_bytes -= 1;
    s = NULL;
    assert_int_equal(rt_sched_create(st->m, &rt_backend_cpu_ops, &p, &s, err, sizeof err),
                     FQ_EINVAL);
    assert_null(s);
    rt_sched_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_sched_lone_request_matches_runner_greedy),
        cmocka_unit_test(test_rt_sched_batch_of_16_equals_alone),
        cmocka_unit_test(test_rt_sched_chunked_prefill_under_a_small_budget),
        cmocka_unit_test(test_rt_sched_preemption_keeps_greedy_outputs),
        cmocka_unit_test(test_rt_sched_outgrowing_the_whole_cache_finishes_length),
        cmocka_unit_test(test_rt_sched_abort_frees_blocks_at_once),
        cmocka_unit_test(test_rt_sched_queue_limits_refuse),
        cmocka_unit_test(test_rt_sched_queue_timeout_fires),
        cmocka_unit_test(test_rt_sched_length_checks_refuse_with_numbers),
        cmocka_unit_test(test_rt_sched_finish_reasons),
        cmocka_unit_test(test_rt_sched_eos_finishes_unless_ignored),
        cmocka_unit_test(test_rt_sched_seeded_sampling_is_reproducible),
        cmocka_unit_test(test_rt_sched_forward_error_fails_that_batch_only),
        cmocka_unit_test(test_rt_sched_greedy_steps_pick_on_the_backend),
        cmocka_unit_test(test_rt_sched_sampling_on_the_backend_matches_the_host),
        cmocka_unit_test(test_rt_sched_rejects_bad_requests_and_reentry),
    };
    return cmocka_run_group_tests_name("rt_sched", tests, setup, teardown);
}

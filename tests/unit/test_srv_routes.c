/* test_srv_routes.c — the engine thread behind the routes, on the generated tiny model: events
 * reach the loop in order with exactly one `last` per job, text deltas add up to the decoded
 * tokens, stop strings cut and stop, a refused job gets one REJECT, abort and the request timeout
 * end a job at once, and shutting the engine down finishes every job; plus the chat template
 * lookup the routes use. No HTTP client: each test runs a real srv_loop (on a loopback port it
 * never uses) only to deliver the engine's messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_model.h"
#include "rt_ops.h"
#include "rt_tokenizer.h"
#include "srv_engine.h"
#include "srv_loop.h"
#include "srv_routes.h"
#include "tc_tiny_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_SEQS = 4, MAX_GEN = 64 };

typedef struct eng_state eng_state;

/* What the loop saw of one job. */
typedef struct tjob {
    eng_state *st;
    uint64_t id;
    int n_events, n_last;
    bool event_after_last;
    bool reject;
    int reject_code;
    int32_t tokens[MAX_SEQS][MAX_GEN];
    int32_t n_tokens[MAX_SEQS];
    char text[MAX_SEQS][1024];
    size_t text_len[MAX_SEQS];
    int n_finish[MAX_SEQS];
    rt_finish_reason reason[MAX_SEQS];
    bool timed_out[MAX_SEQS], stop_string[MAX_SEQS];
} tjob;

struct eng_state {
    char dir[512];
    rt_model *m;
    srv_loop *loop;
    srv_engine *e;
    int jobs_left;
};

static int setup(void **state)
{
    eng_state *s = calloc(1, sizeof *s);
    char err[512] = "", path[600];
    tc_tiny_params p = tc_tiny_default_params();
    p.tied = false; /* varied greedy output */
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
    eng_state *s = *state;
    rt_model_destroy(s->m);
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

/* ---- helpers ---- */

static enum MHD_Result no_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *size, void **req_cls)
{
    (void)cls, (void)c, (void)url, (void)method, (void)version, (void)data, (void)size;
    (void)req_cls;
    return MHD_NO;
}

static void on_event(void *ud, const srv_engine_event *ev)
{
    tjob *j = ud;
    if (j->n_last)
        j->event_after_last = true;
    j->n_events++;
    if (ev->type == SRV_ENGINE_EV_REJECT) {
        j->reject = true;
        j->reject_code = ev->code;
    } else if (ev->seq < MAX_SEQS) {
        uint32_t q = ev->seq;
        if (ev->text_len && j->text_len[q] + ev->text_len < sizeof j->text[q]) {
            memcpy(j->text[q] + j->text_len[q], ev->text, ev->text_len);
            j->text_len[q] += ev->text_len;
        }
        if (ev->type == SRV_ENGINE_EV_TOKEN) {
            if (j->n_tokens[q] < MAX_GEN)
                j->tokens[q][j->n_tokens[q]++] = ev->token;
        } else {
            j->n_finish[q]++;
            j->reason[q] = ev->reason;
            j->timed_out[q] = ev->timed_out;
            j->stop_string[q] = ev->stop_string;
        }
    }
    if (ev->last) {
        j->n_last++;
        if (--j->st->jobs_left == 0 && j->st->loop)
            srv_loop_stop(j->st->loop);
    }
}

/* Starts a loop on a free loopback port and an engine on the tiny model. */
static void start(eng_state *s, int32_t max_num_seqs, int32_t max_queue, double request_timeout)
{
    char err[512] = "";
    srv_loop_params lp = srv_loop_default_params();
    lp.port = 0;
    lp.drain_timeout_ms = 1000;
    srv_loop_hooks hooks = {.access = no_access};
    s->loop = srv_loop_create(&lp, &hooks, err, sizeof err);
    assert_non_null(s->loop);
    srv_engine_params ep = srv_engine_default_params();
    ep.model = s->m;
    ep.ops = rt_backend_find("cpu");
    ep.sched.max_num_seqs = max_num_seqs;
    ep.sched.max_queue_requests = max_queue;
    ep.sched.kv_cache_bytes = 8 << 20;
    ep.sched.n_threads = 1;
    ep.request_timeout_s = request_timeout;
    ep.loop = s->loop;
    ep.on_event = on_event;
    int rc = srv_engine_create(&ep, &s->e, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    s->jobs_left = 0;
}

/* Runs the loop until every submitted job had its last event, then tears down. */
static void run_and_stop(eng_state *s)
{
    char err[256];
    assert_int_equal(srv_loop_run(s->loop, err, sizeof err), 0);
    srv_engine_destroy(s->e);
    srv_loop_destroy(s->loop);
    s->e = NULL;
    s->loop = NULL;
}

static void submit(eng_state *s, tjob *j, const int32_t *prompt, int32_t n_prompt, size_t n_seqs,
                   int32_t max_tokens, const char *stop)
{
    memset(j, 0, sizeof *j);
    j->st = s;
    srv_engine_seq seqs[MAX_SEQS];
    for (size_t i = 0; i < n_seqs; i++)
        seqs[i] = (srv_engine_seq){.prompt = prompt,
                                   .n_prompt = n_prompt,
                                   .max_tokens = max_tokens,
                                   .seed_offset = i,
                                   .count_prompt = i == 0};
    size_t stop_len = stop ? strlen(stop) : 0;
    srv_engine_job job = {.seqs = seqs,
                          .n_seqs = n_seqs,
                          .sampling = rt_sampling_default_params(),
                          .stop = stop ? &stop : NULL,
                          .stop_len = stop ? &stop_len : NULL,
                          .n_stop = stop ? 1 : 0,
                          .skip_special = true,
                          .arrival_s = fq_now_s(),
                          .ud = j};
    job.sampling.temperature = 0.0f; /* greedy */
    assert_int_equal(srv_engine_submit(s->e, &job, &j->id), 0);
    assert_true(j->id != 0);
    s->jobs_left++;
}

static const int32_t prompt[] = {72, 101, 108, 108, 111, 32, 119};

/* ---- tests ---- */

static void test_srv_engine_events_reach_the_loop_in_order(void **state)
{
    eng_state *s = *state;
    start(s, 4, 16, 0);
    tjob j;
    submit(s, &j, prompt, 7, 3, 12, NULL);
    run_and_stop(s);
    assert_int_equal(j.n_last, 1);
    assert_false(j.event_after_last);
    assert_false(j.reject);
    for (int q = 0; q < 3; q++) {
        assert_int_equal(j.n_tokens[q], 12);
        assert_int_equal(j.n_finish[q], 1);
        assert_int_equal(j.reason[q], RT_FINISH_LENGTH);
        /* greedy: every choice is the same; the deltas add up to the decoded tokens */
        assert_memory_equal(j.tokens[q], j.tokens[0], sizeof j.tokens[0]);
        char *text = NULL;
        size_t len = 0;
        char err[256];
        assert_int_equal(
            rt_tokenizer_decode(s->m->tok, j.tokens[q], 12, true, &text, &len, err, sizeof err), 0);
        /* srv_stop repairs a cut character where decode keeps the bytes: compare valid text */
        if (len == j.text_len[q])
            assert_memory_equal(text, j.text[q], len);
        free(text);
    }
    assert_int_equal(j.n_events, 3 * 12 + 3);
}

static void test_srv_engine_stop_string_cuts_and_stops(void **state)
{
    eng_state *s = *state;
    start(s, 4, 16, 0);
    tjob first;
    submit(s, &first, prompt, 7, 1, 12, NULL);
    run_and_stop(s);
    assert_true(first.text_len[0] >= 4);
    /* a stop string taken from the middle of that output: one whole character */
    size_t mid = first.text_len[0] / 2;
    while (mid > 0 && ((unsigned char)first.text[0][mid] & 0xC0) == 0x80)
        mid--;
    unsigned char lead = (unsigned char)first.text[0][mid];
    size_t n = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    char stop[8] = "";
    memcpy(stop, first.text[0] + mid, n);
    const char *hit = strstr(first.text[0], stop);
    assert_non_null(hit);
    start(s, 4, 16, 0);
    tjob j;
    submit(s, &j, prompt, 7, 1, 12, stop);
    run_and_stop(s);
    assert_int_equal(j.n_finish[0], 1);
    assert_int_equal(j.reason[0], RT_FINISH_STOP);
    assert_true(j.stop_string[0]);
    assert_int_equal(j.text_len[0], (size_t)(hit - first.text[0]));
    assert_memory_equal(j.text[0], first.text[0], j.text_len[0]);
    assert_true(j.n_tokens[0] < 12);
}

static void test_srv_engine_queue_full_rejects_the_whole_job(void **state)
{
    eng_state *s = *state;
    start(s, 1, 1, 0);
    tjob j;
    submit(s, &j, prompt, 7, 3, 4, NULL); /* three sequences, room for one waiting */
    run_and_stop(s);
    assert_true(j.reject);
    assert_int_equal(j.reject_code, RT_SCHED_EQUEUE_FULL);
    assert_int_equal(j.n_events, 1);
    assert_int_equal(j.n_last, 1);
}

static void test_srv_engine_abort_finishes_at_once(void **state)
{
    eng_state *s = *state;
    start(s, 4, 16, 0);
    tjob j;
    /* the whole context, so the abort (queued right behind the submission) always lands first */
    submit(s, &j, prompt, 7, 2, 256 - 7, NULL);
    srv_engine_abort(s->e, j.id);
    run_and_stop(s);
    assert_int_equal(j.n_last, 1);
    for (int q = 0; q < 2; q++) {
        assert_int_equal(j.n_finish[q], 1);
        assert_int_equal(j.reason[q], RT_FINISH_ABORT);
        assert_false(j.timed_out[q]);
        assert_true(j.n_tokens[q] < 256 - 7);
    }
}

static void test_srv_engine_request_timeout_aborts(void **state)
{
    eng_state *s = *state;
    start(s, 4, 16, 1e-6); /* already late at the first step */
    tjob j;
    submit(s, &j, prompt, 7, 1, 60, NULL);
    run_and_stop(s);
    assert_int_equal(j.n_last, 1);
    assert_int_equal(j.reason[0], RT_FINISH_ABORT);
    assert_true(j.timed_out[0]);
}

static void test_srv_engine_destroy_finishes_every_job(void **state)
{
    eng_state *s = *state;
    start(s, 1, 16, 0);
    tjob a, b;
    submit(s, &a, prompt, 7, 1, 60, NULL);
    submit(s, &b, prompt, 7, 2, 60, NULL);
    /* no loop run: the engine stops with work queued or running; its last events are run by
     * srv_loop_destroy */
    srv_engine_destroy(s->e);
    s->e = NULL;
    srv_loop *loop = s->loop;
    s->loop = NULL; /* on_event must not stop a loop being destroyed */
    srv_loop_destroy(loop);
    assert_int_equal(a.n_last, 1);
    assert_int_equal(b.n_last, 1);
    assert_false(a.event_after_last);
    assert_false(b.event_after_last);
    if (!b.reject)
        for (int q = 0; q < 2; q++)
            assert_int_equal(b.n_finish[q], 1);
}

static void test_srv_routes_chat_template_of_a_model(void **state)
{
    eng_state *s = *state;
    char *t = NULL;
    char err[256] = "";
    assert_int_equal(srv_model_chat_template(s->m, &t, err, sizeof err), 0);
    /* the tiny GGUF carries whatever its writer put; either way the call agrees with the spec */
    const char *want = s->m->ck ? s->m->ck->tok.chat_template : NULL;
    if (want)
        assert_string_equal(t, want);
    else
        assert_null(t);
    free(t);
}

int main(void)
{
    const struct CMUnitTest engine[] = {
        cmocka_unit_test(test_srv_engine_events_reach_the_loop_in_order),
        cmocka_unit_test(test_srv_engine_stop_string_cuts_and_stops),
        cmocka_unit_test(test_srv_engine_queue_full_rejects_the_whole_job),
        cmocka_unit_test(test_srv_engine_abort_finishes_at_once),
        cmocka_unit_test(test_srv_engine_request_timeout_aborts),
        cmocka_unit_test(test_srv_engine_destroy_finishes_every_job),
    };
    const struct CMUnitTest routes[] = {
        cmocka_unit_test(test_srv_routes_chat_template_of_a_model),
    };
    int rc = cmocka_run_group_tests_name("srv_engine", engine, setup, teardown);
    return rc | cmocka_run_group_tests_name("srv_routes", routes, setup, teardown);
}

/* test_srv_metrics.c — Prometheus metrics: counters, gauges and histogram buckets after known
 * updates (read back from the rendered text), label escaping, bounded reason labels, HELP and
 * TYPE for every family, concurrent updates from 4 threads, rendering while others update. */
#include "srv_metrics.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define N_THREADS    4
#define N_PER_THREAD 5000

/* The metrics under test and the last render; teardown frees both even after a failure. */
typedef struct metrics_state {
    srv_metrics *m;
    char *text;
    size_t len;
} metrics_state;

static const srv_metrics_info default_info = {.model_name = "tiny",
                                              .version = "0.1.0",
                                              .backend = "cpu",
                                              .mode = "int6",
                                              .bits_per_weight = 6.25,
                                              .max_model_len = 2048};

static int setup(void **state)
{
    metrics_state *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->m = srv_metrics_create(&default_info);
    *state = s;
    return s->m ? 0 : -1;
}

static int teardown(void **state)
{
    metrics_state *s = *state;
    srv_metrics_destroy(s->m);
    free(s->text);
    free(s);
    return 0;
}

static const char *render(metrics_state *s)
{
    free(s->text);
    s->text = srv_metrics_render(s->m, &s->len);
    assert_non_null(s->text);
    assert_int_equal(strlen(s->text), s->len);
    assert_true(s->len > 0 && s->text[s->len - 1] == '\n');
    return s->text;
}

/* The value of the sample whose name and labels are exactly `series` (e.g.
 * `vllm:num_requests_running{model_name="tiny"}`); fails the test when it is missing. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = *end ? end + 1 : end;
    }
    fail_msg("series not found: %s", series);
    return NAN;
}

static bool has_series(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return true;
    return false;
}

static void test_srv_metrics_starts_at_zero(void **state)
{
    metrics_state *s = *state;
    const char *t = render(s);
    assert_true(value_of(t, "vllm:num_requests_running{model_name=\"tiny\"}") == 0);
    assert_true(value_of(t, "vllm:kv_cache_usage_perc{model_name=\"tiny\"}") == 0);
    assert_true(value_of(t, "vllm:prompt_tokens_total{model_name=\"tiny\"}") == 0);
    /* known label values are exported before they happen */
    assert_true(
        value_of(t, "vllm:request_success_total{model_name=\"tiny\",finished_reason=\"stop\"}") ==
        0);
    assert_true(
        value_of(t, "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"queue_full\"}") ==
        0);
    assert_true(value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\","
                            "reason=\"client_disconnect\"}") == 0);
    assert_true(value_of(t, "vllm:time_to_first_token_seconds_count{model_name=\"tiny\"}") == 0);
    assert_true(
        value_of(t, "vllm:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"}") ==
        0);
    assert_true(value_of(t, "flexq_weight_bytes_per_weight{model_name=\"tiny\"}") == 6.25 / 8);
    assert_true(value_of(t, "flexq_build_info{version=\"0.1.0\",backend=\"cpu\",mode=\"int6\","
                            "model_name=\"tiny\"}") == 1);
}

static void test_srv_metrics_counters_and_gauges(void **state)
{
    metrics_state *s = *state;
    srv_request_stats a = {.prompt_tokens = 10,
                           .generation_tokens = 5,
                           .queue_s = 0.01,
                           .ttft_s = 0.2,
                           .e2e_s = 1.0,
                           .prefill_s = 0.19,
                           .decode_s = 0.8,
                           .finish_reason = "stop",
                           .max_tokens = 16,
                           .n = 1};
    srv_request_stats b = a;
    b.prompt_tokens = 7;
    b.generation_tokens = 100;
    b.finish_reason = "length";
    srv_metrics_request_finished(s->m, &a);
    srv_metrics_request_finished(s->m, &a);
    srv_metrics_request_finished(s->m, &b);
    srv_metrics_rejected(s->m, "queue_full");
    srv_metrics_rejected(s->m, "too_long");
    srv_metrics_rejected(s->m, "too_long");
    srv_metrics_aborted(s->m, "timeout");
    srv_metrics_aborted(s->m, NULL);
    srv_sched_gauges g = {.running = 3,
                          .waiting = 4,
                          .kv_blocks_used = 25,
                          .kv_blocks_total = 100,
                          .batch_size = 3,
                          .preemptions_total = 2,
                          .steps_total = 40,
                          .graph_steps_total = 31};
    srv_metrics_set_sched(s->m, &g);

    const char *t = render(s);
    assert_true(value_of(t, "vllm:prompt_tokens_total{model_name=\"tiny\"}") == 27);
    assert_true(value_of(t, "vllm:generation_tokens_total{model_name=\"tiny\"}") == 110);
    assert_true(
        value_of(t, "vllm:request_success_total{model_name=\"tiny\",finished_reason=\"stop\"}") ==
        2);
    assert_true(value_of(t, "vllm:request_success_total{model_name=\"tiny\","
                            "finished_reason=\"length\"}") == 1);
    assert_true(
        value_of(t, "vllm:request_success_total{model_name=\"tiny\",finished_reason=\"abort\"}") ==
        0);
    assert_true(
        value_of(t, "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"queue_full\"}") ==
        1);
    assert_true(
        value_of(t, "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"too_long\"}") == 2);
    assert_true(
        value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\",reason=\"timeout\"}") == 1);
    assert_true(
        value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\",reason=\"unknown\"}") == 1);
    assert_true(value_of(t, "vllm:num_requests_running{model_name=\"tiny\"}") == 3);
    assert_true(value_of(t, "vllm:num_requests_waiting{model_name=\"tiny\"}") == 4);
    assert_true(value_of(t, "vllm:kv_cache_usage_perc{model_name=\"tiny\"}") == 0.25);
    assert_true(value_of(t, "vllm:num_preemptions_total{model_name=\"tiny\"}") == 2);
    assert_true(value_of(t, "flexq_engine_steps_total{model_name=\"tiny\"}") == 40);
    assert_true(value_of(t, "flexq_engine_graph_steps_total{model_name=\"tiny\"}") == 31);
    assert_true(value_of(t, "flexq_batch_size{model_name=\"tiny\"}") == 3);
    assert_true(value_of(t, "flexq_kv_blocks_used{model_name=\"tiny\"}") == 25);
    assert_true(value_of(t, "flexq_kv_blocks_capacity{model_name=\"tiny\"}") == 100);

    /* per-request histograms saw three requests */
    assert_true(value_of(t, "vllm:e2e_request_latency_seconds_count{model_name=\"tiny\"}") == 3);
    assert_true(value_of(t, "vllm:e2e_request_latency_seconds_sum{model_name=\"tiny\"}") == 3.0);
    assert_true(value_of(t, "vllm:request_prompt_tokens_sum{model_name=\"tiny\"}") == 27);
    assert_true(
        value_of(t, "vllm:request_generation_tokens_bucket{model_name=\"tiny\",le=\"8\"}") == 2);
    assert_true(
        value_of(t, "vllm:request_generation_tokens_bucket{model_name=\"tiny\",le=\"64\"}") == 2);
    assert_true(
        value_of(t, "vllm:request_generation_tokens_bucket{model_name=\"tiny\",le=\"128\"}") == 3);
    assert_true(value_of(t, "vllm:request_params_max_tokens_bucket{model_name=\"tiny\","
                            "le=\"16\"}") == 3);
    assert_true(value_of(t, "vllm:request_params_n_bucket{model_name=\"tiny\",le=\"1\"}") == 3);
}

static void test_srv_metrics_histogram_buckets(void **state)
{
    metrics_state *s = *state;
    /* le is inclusive: 0.001 falls in le="0.001"; 1000 s only in +Inf */
    const double v[] = {0.001, 0.0015, 0.3, 0.5, 2.0, 59.0, 1000.0};
    double sum = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        srv_metrics_inter_token(s->m, v[i]);
        sum += v[i];
    }
    srv_metrics_inter_token(s->m, -1.0); /* ignored */
    srv_metrics_inter_token(s->m, NAN);  /* ignored */
    srv_metrics_iteration(s->m, 1);
    srv_metrics_iteration(s->m, 3);
    srv_metrics_iteration(s->m, 4096);
    srv_metrics_iteration(s->m, -5); /* ignored */
    srv_request_stats none = {.prompt_tokens = 1,
                              .queue_s = -1,
                              .ttft_s = -1,
                              .e2e_s = 0.5,
                              .prefill_s = -1,
                              .decode_s = -1,
                              .finish_reason = "error"};
    srv_metrics_request_finished(s->m, &none);

    const char *t = render(s);
#define ITL(le) "vllm:inter_token_latency_seconds_bucket{model_name=\"tiny\",le=\"" le "\"}"
    assert_true(value_of(t, ITL("0.001")) == 1);
    assert_true(value_of(t, ITL("0.0025")) == 2);
    assert_true(value_of(t, ITL("0.25")) == 2);
    assert_true(value_of(t, ITL("0.5")) == 4);
    assert_true(value_of(t, ITL("2.5")) == 5);
    assert_true(value_of(t, ITL("60")) == 6);
    assert_true(value_of(t, ITL("600")) == 6);
    assert_true(value_of(t, ITL("+Inf")) == 7);
#undef ITL
    assert_true(value_of(t, "vllm:inter_token_latency_seconds_count{model_name=\"tiny\"}") == 7);
    assert_true(fabs(value_of(t, "vllm:inter_token_latency_seconds_sum{model_name=\"tiny\"}") -
                     sum) < 1e-9);

#define IT(le) "vllm:iteration_tokens_total_bucket{model_name=\"tiny\",le=\"" le "\"}"
    assert_true(value_of(t, IT("1")) == 1);
    assert_true(value_of(t, IT("2")) == 1);
    assert_true(value_of(t, IT("4")) == 2);
    assert_true(value_of(t, IT("4096")) == 3);
    assert_true(value_of(t, IT("8192")) == 3);
    assert_false(has_series(t, IT("16384"))); /* max_model_len 2048: the ladder stops at 8192 */
#undef IT
    assert_true(value_of(t, "vllm:iteration_tokens_total_sum{model_name=\"tiny\"}") == 4100);
    assert_true(value_of(t, "vllm:iteration_tokens_total_count{model_name=\"tiny\"}") == 3);

    /* "none" times are not observed; n and max_tokens 0 are not observed */
    assert_true(value_of(t, "vllm:time_to_first_token_seconds_count{model_name=\"tiny\"}") == 0);
    assert_true(value_of(t, "vllm:request_queue_time_seconds_count{model_name=\"tiny\"}") == 0);
    assert_true(value_of(t, "vllm:e2e_request_latency_seconds_count{model_name=\"tiny\"}") == 1);
    assert_true(value_of(t, "vllm:request_params_n_count{model_name=\"tiny\"}") == 0);
    assert_true(value_of(t, "vllm:request_params_max_tokens_count{model_name=\"tiny\"}") == 0);
    assert_true(
        value_of(t, "vllm:request_success_total{model_name=\"tiny\",finished_reason=\"error\"}") ==
        1);
}

static void test_srv_metrics_token_buckets_follow_max_model_len(void **state)
{
    metrics_state *s = *state;
    srv_metrics_destroy(s->m);
    srv_metrics_info info = default_info;
    info.max_model_len = 32768;
    s->m = srv_metrics_create(&info);
    assert_non_null(s->m);
    srv_metrics_iteration(s->m, 20000);
    const char *t = render(s);
    assert_true(
        value_of(t, "vllm:iteration_tokens_total_bucket{model_name=\"tiny\",le=\"16384\"}") == 0);
    assert_true(
        value_of(t, "vllm:iteration_tokens_total_bucket{model_name=\"tiny\",le=\"32768\"}") == 1);
    assert_false(has_series(t, "vllm:iteration_tokens_total_bucket{model_name=\"tiny\","
                               "le=\"65536\"}"));
    /* kv usage with no pool is 0, not NaN */
    assert_true(value_of(t, "vllm:kv_cache_usage_perc{model_name=\"tiny\"}") == 0);
}

static void test_srv_metrics_label_escaping(void **state)
{
    metrics_state *s = *state;
    srv_metrics_destroy(s->m);
    srv_metrics_info info = default_info;
    info.model_name = "a\"b\\c\nd";
    info.version = NULL; /* NULL = "" */
    s->m = srv_metrics_create(&info);
    assert_non_null(s->m);
    srv_metrics_rejected(s->m, "we\"ird\\one\n\xc3\xa9");
    const char *t = render(s);
    assert_true(value_of(t, "vllm:num_requests_running{model_name=\"a\\\"b\\\\c\\nd\"}") == 0);
    assert_true(value_of(t, "flexq_build_info{version=\"\",backend=\"cpu\",mode=\"int6\","
                            "model_name=\"a\\\"b\\\\c\\nd\"}") == 1);
    /* quote and backslash escaped; a newline and bytes outside printable ASCII become '_' */
    assert_true(value_of(t, "flexq_requests_rejected_total{model_name=\"a\\\"b\\\\c\\nd\","
                            "reason=\"we\\\"ird\\\\one___\"}") == 1);
    /* no raw newline inside any line: every line is a comment or a sample with a value */
    for (const char *line = t; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if (line[0] != '#') {
            const char *sp = end;
            while (sp > line && sp[-1] != ' ')
                sp--;
            assert_true(sp > line);
            char *e = NULL;
            strtod(sp, &e);
            assert_ptr_equal(e, end);
        }
        line = end + 1;
    }
}

static void test_srv_metrics_reason_labels_bounded(void **state)
{
    metrics_state *s = *state;
    char reason[32];
    for (int i = 0; i < 100; i++) {
        snprintf(reason, sizeof reason, "r%d", i);
        srv_metrics_aborted(s->m, reason);
    }
    const char *t = render(s);
    int series = 0;
    for (const char *p = t; (p = strstr(p, "\nflexq_requests_aborted_total{")) != NULL; p++)
        series++;
    assert_int_equal(series, 32);
    /* 3 known + 28 new before the table fills; the other 72 are "other" */
    assert_true(value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\",reason=\"r27\"}") ==
                1);
    assert_false(has_series(t, "flexq_requests_aborted_total{model_name=\"tiny\",reason=\"r28\"}"));
    assert_true(value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\",reason=\"other\"}") ==
                72);
    /* a value already in the table still counts as itself */
    srv_metrics_aborted(s->m, "r5");
    t = render(s);
    assert_true(value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\",reason=\"r5\"}") ==
                2);
}

/* Every sample belongs to a family announced by one HELP and then one TYPE line before it;
 * histograms carry _bucket (ending with le="+Inf"), _sum and _count, buckets cumulative. */
static void check_families(const char *t)
{
    enum { MAX_FAM = 64 };
    char names[MAX_FAM][96];
    char types[MAX_FAM][16];
    bool help[MAX_FAM];
    int n = 0;
    double last_bucket = -1;
    bool saw_inf = false;
    for (const char *line = t; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        char buf[512];
        size_t len = (size_t)(end - line);
        assert_true(len < sizeof buf);
        memcpy(buf, line, len);
        buf[len] = '\0';
        line = end + 1;

        char name[96], type[16];
        if (sscanf(buf, "# HELP %95s", name) == 1) {
            for (int i = 0; i < n; i++)
                assert_string_not_equal(names[i], name); /* one HELP per family */
            assert_true(n < MAX_FAM);
            snprintf(names[n], sizeof names[n], "%s", name);
            types[n][0] = '\0';
            help[n] = true;
            n++;
            assert_true(strlen(buf) > strlen("# HELP ") + strlen(name) + 1); /* has text */
            continue;
        }
        if (sscanf(buf, "# TYPE %95s %15s", name, type) == 2) {
            assert_true(n > 0);
            assert_string_equal(names[n - 1], name); /* TYPE right after its HELP */
            assert_string_equal(types[n - 1], "");
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            snprintf(types[n - 1], sizeof types[n - 1], "%s", type);
            last_bucket = -1;
            saw_inf = false;
            continue;
        }
        assert_true(buf[0] != '#');
        size_t nl = strcspn(buf, "{ ");
        assert_true(n > 0 && help[n - 1] && types[n - 1][0]);
        const char *fam = names[n - 1];
        size_t fl = strlen(fam);
        if (strcmp(types[n - 1], "histogram") == 0) {
            assert_true(nl > fl && strncmp(buf, fam, fl) == 0);
            const char *suffix = buf + fl;
            double v = strtod(strrchr(buf, ' ') + 1, NULL);
            if (strncmp(suffix, "_bucket{", 8) == 0) {
                assert_false(saw_inf); /* +Inf is the last bucket */
                assert_true(v >= last_bucket);
                last_bucket = v;
                saw_inf = strstr(suffix, ",le=\"+Inf\"}") != NULL;
            } else if (strncmp(suffix, "_sum{", 5) == 0) {
                assert_true(saw_inf);
            } else {
                assert_true(strncmp(suffix, "_count{", 7) == 0);
                assert_true(v == last_bucket); /* +Inf bucket == count */
            }
        } else {
            assert_int_equal(nl, fl);
            assert_memory_equal(buf, fam, fl);
        }
    }
    /* the families the issue names, all present */
    static const char *const want[] = {"vllm:num_requests_running",
                                       "vllm:num_requests_waiting",
                                       "vllm:kv_cache_usage_perc",
                                       "vllm:prompt_tokens_total",
                                       "vllm:generation_tokens_total",
                                       "vllm:request_success_total",
                                       "vllm:num_preemptions_total",
                                       "vllm:time_to_first_token_seconds",
                                       "vllm:inter_token_latency_seconds",
                                       "vllm:e2e_request_latency_seconds",
                                       "vllm:request_queue_time_seconds",
                                       "vllm:request_prefill_time_seconds",
                                       "vllm:request_decode_time_seconds",
                                       "vllm:request_prompt_tokens",
                                       "vllm:request_generation_tokens",
                                       "vllm:iteration_tokens_total",
                                       "vllm:request_params_max_tokens",
                                       "vllm:request_params_n",
                                       "flexq_requests_rejected_total",
                                       "flexq_requests_aborted_total",
                                       "flexq_engine_steps_total",
                                       "flexq_engine_graph_steps_total",
                                       "flexq_batch_size",
                                       "flexq_kv_blocks_used",
                                       "flexq_kv_blocks_capacity",
                                       "flexq_weight_bytes_per_weight",
                                       "flexq_build_info"};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        bool found = false;
        for (int i = 0; i < n; i++)
            found |= strcmp(names[i], want[w]) == 0;
        if (!found)
            fail_msg("family missing: %s", want[w]);
    }
    assert_int_equal(n, (int)(sizeof want / sizeof want[0]));
}

static void test_srv_metrics_every_family_has_help_and_type(void **state)
{
    metrics_state *s = *state;
    check_families(render(s));
    srv_request_stats a = {.prompt_tokens = 3,
                           .generation_tokens = 9,
                           .queue_s = 0.5,
                           .ttft_s = 0.7,
                           .e2e_s = 2,
                           .prefill_s = 0.2,
                           .decode_s = 1.3,
                           .finish_reason = "custom",
                           .max_tokens = 9,
                           .n = 2};
    srv_metrics_request_finished(s->m, &a);
    srv_metrics_inter_token(s->m, 0.02);
    check_families(render(s));
}

/* ---- threads ---- */

typedef struct worker_arg {
    srv_metrics *m;
    int id;
    atomic_bool *stop; /* NULL = run N_PER_THREAD iterations */
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    static const char *const reasons[] = {"queue_full", "too_long", "t0", "t1"};
    srv_request_stats st = {.prompt_tokens = 2,
                            .generation_tokens = 3,
                            .queue_s = 0.001,
                            .ttft_s = 0.01,
                            .e2e_s = 0.5,
                            .prefill_s = 0.009,
                            .decode_s = 0.49,
                            .finish_reason = a->id % 2 ? "stop" : "length",
                            .max_tokens = 32,
                            .n = 1};
    srv_sched_gauges g = {.running = a->id, .kv_blocks_used = a->id, .kv_blocks_total = 8};
    for (int i = 0; a->stop ? !atomic_load(a->stop) : i < N_PER_THREAD; i++) {
        srv_metrics_request_finished(a->m, &st);
        srv_metrics_inter_token(a->m, 0.05);
        srv_metrics_iteration(a->m, 16);
        srv_metrics_rejected(a->m, reasons[i % 4]);
        srv_metrics_aborted(a->m, a->id % 2 ? "shutdown" : "new_reason");
        srv_metrics_set_sched(a->m, &g);
    }
    return NULL;
}

static void test_srv_metrics_concurrent_updates_sum(void **state)
{
    metrics_state *s = *state;
    pthread_t th[N_THREADS];
    worker_arg args[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (worker_arg){.m = s->m, .id = i, .stop = NULL};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);

    const double total = (double)N_THREADS * N_PER_THREAD;
    const char *t = render(s);
    assert_true(value_of(t, "vllm:prompt_tokens_total{model_name=\"tiny\"}") == 2 * total);
    assert_true(value_of(t, "vllm:generation_tokens_total{model_name=\"tiny\"}") == 3 * total);
    assert_true(
        value_of(t, "vllm:request_success_total{model_name=\"tiny\",finished_reason=\"stop\"}") ==
        total / 2);
    assert_true(value_of(t, "vllm:request_success_total{model_name=\"tiny\","
                            "finished_reason=\"length\"}") == total / 2);
    assert_true(value_of(t, "vllm:inter_token_latency_seconds_count{model_name=\"tiny\"}") ==
                total);
    assert_true(value_of(t, "vllm:inter_token_latency_seconds_bucket{model_name=\"tiny\","
                            "le=\"0.06\"}") == total);
    assert_true(value_of(t, "vllm:iteration_tokens_total_sum{model_name=\"tiny\"}") == 16 * total);
    assert_true(value_of(t, "vllm:e2e_request_latency_seconds_count{model_name=\"tiny\"}") ==
                total);
    assert_true(fabs(value_of(t, "vllm:e2e_request_latency_seconds_sum{model_name=\"tiny\"}") -
                     0.5 * total) < 1e-6);
    for (int r = 0; r < 4; r++) {
        static const char *const series[] = {
            "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"queue_full\"}",
            "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"too_long\"}",
            "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"t0\"}",
            "flexq_requests_rejected_total{model_name=\"tiny\",reason=\"t1\"}"};
        assert_true(value_of(t, series[r]) == total / 4);
    }
    /* a new value appended by several threads at once appears once, with every count */
    assert_true(value_of(t, "flexq_requests_aborted_total{model_name=\"tiny\","
                            "reason=\"new_reason\"}") == total / 2);
    int series = 0;
    for (const char *p = t; (p = strstr(p, "reason=\"new_reason\"")) != NULL; p++)
        series++;
    assert_int_equal(series, 1);
    check_families(t);
}

static void test_srv_metrics_render_while_updating(void **state)
{
    metrics_state *s = *state;
    atomic_bool stop;
    atomic_init(&stop, false);
    pthread_t th[N_THREADS];
    worker_arg args[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (worker_arg){.m = s->m, .id = i, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    double last_prompt = 0;
    for (int r = 0; r < 200; r++) {
        const char *t = render(s);
        check_families(t); /* +Inf == _count in every histogram, even mid-update */
        double prompt = value_of(t, "vllm:prompt_tokens_total{model_name=\"tiny\"}");
        assert_true(prompt >= last_prompt); /* counters never go back */
        last_prompt = prompt;
        double usage = value_of(t, "vllm:kv_cache_usage_perc{model_name=\"tiny\"}");
        assert_true(usage >= 0 && usage <= 1);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
}

static void test_srv_metrics_null_is_noop(void **state)
{
    (void)state;
    srv_metrics_destroy(NULL);
    srv_metrics_request_finished(NULL, NULL);
    srv_metrics_inter_token(NULL, 1.0);
    srv_metrics_rejected(NULL, "x");
    srv_metrics_aborted(NULL, "x");
    srv_metrics_set_sched(NULL, NULL);
    srv_metrics_iteration(NULL, 1);
    size_t len = 7;
    assert_null(srv_metrics_render(NULL, &len));
    assert_int_equal(len, 0);
    assert_null(srv_metrics_create(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_srv_metrics_starts_at_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_counters_and_gauges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_histogram_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_token_buckets_follow_max_model_len, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_label_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_reason_labels_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_every_family_has_help_and_type, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_concurrent_updates_sum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srv_metrics_render_while_updating, setup, teardown),
        cmocka_unit_test(test_srv_metrics_null_is_noop),
    };
    return cmocka_run_group_tests_name("srv_metrics", tests, NULL, NULL);
}

/* srv_metrics.c — the daemon's Prometheus metrics: atomic counters and gauges, locked histograms,
 * and the text-format renderer.
 *
 * Counters and gauges are C11 atomics updated with relaxed order (each is independent; a render is
 * a set of loads). A labelled counter is a small table of (value, atomic count) entries: lookups
 * scan the published prefix without a lock; a new value is appended under the table's mutex and
 * published by a release store of the entry count, so a reader that sees the count sees the entry.
 * A histogram keeps non-cumulative bucket counts, its sum and its count under its own mutex; the
 * renderer copies them under that mutex and prints cumulative buckets.
 */
#include "srv_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRV_HIST_MAX_BOUNDS 40 /* finite bucket bounds per histogram */
#define SRV_LABELS_MAX      32 /* values per labelled counter, "other" included */
#define SRV_LABEL_LEN       64 /* bytes of a value, NUL included */

/* One histogram: bounds ascending; counts[i] = observations in (bounds[i-1], bounds[i]],
 * counts[n_bounds] = above the last bound. */
typedef struct srv_hist {
    pthread_mutex_t mu;
    int n_bounds;
    double bounds[SRV_HIST_MAX_BOUNDS];
    uint64_t counts[SRV_HIST_MAX_BOUNDS + 1];
    double sum;
    uint64_t count;
} srv_hist;

/* One counter family with one free label: entries [0, n) are published and never change but for
 * their counts; the last slot is reserved for "other". */
typedef struct srv_label_counter {
    pthread_mutex_t mu; /* serialises appends */
    atomic_int n;
    struct {
        char value[SRV_LABEL_LEN];
        atomic_uint_least64_t count;
    } e[SRV_LABELS_MAX];
} srv_label_counter;

/* The histograms, in render order. */
typedef enum {
    SRV_H_TTFT,
    SRV_H_ITL,
    SRV_H_E2E,
    SRV_H_QUEUE,
    SRV_H_PREFILL,
    SRV_H_DECODE,
    SRV_H_PROMPT,
    SRV_H_GEN,
    SRV_H_ITER,
    SRV_H_MAX_TOKENS,
    SRV_H_N,
    SRV_H_COUNT
} srv_hist_id;

typedef enum { SRV_B_LATENCY, SRV_B_TOKENS, SRV_B_N } srv_bucket_kind;

static const struct {
    const char *name, *help;
    srv_bucket_kind buckets;
} srv_hist_table[SRV_H_COUNT] = {
    [SRV_H_TTFT] = {"vllm:time_to_first_token_seconds",
                    "Histogram of time to first token in seconds.", SRV_B_LATENCY},
    [SRV_H_ITL] = {"vllm:inter_token_latency_seconds",
                   "Histogram of inter-token latency in seconds.", SRV_B_LATENCY},
    [SRV_H_E2E] = {"vllm:e2e_request_latency_seconds",
                   "Histogram of end to end request latency in seconds.", SRV_B_LATENCY},
    [SRV_H_QUEUE] = {"vllm:request_queue_time_seconds",
                     "Histogram of time spent in the waiting queue in seconds.", SRV_B_LATENCY},
    [SRV_H_PREFILL] = {"vllm:request_prefill_time_seconds",
                       "Histogram of time spent in the prefill phase in seconds.", SRV_B_LATENCY},
    [SRV_H_DECODE] = {"vllm:request_decode_time_seconds",
                      "Histogram of time spent in the decode phase in seconds.", SRV_B_LATENCY},
    [SRV_H_PROMPT] = {"vllm:request_prompt_tokens",
                      "Number of prefill tokens processed, per request.", SRV_B_TOKENS},
    [SRV_H_GEN] = {"vllm:request_generation_tokens",
                   "Number of generation tokens processed, per request.", SRV_B_TOKENS},
    [SRV_H_ITER] = {"vllm:iteration_tokens_total",
                    "Histogram of the number of tokens per engine step.", SRV_B_TOKENS},
    [SRV_H_MAX_TOKENS] = {"vllm:request_params_max_tokens",
                          "Histogram of the max_tokens request parameter.", SRV_B_TOKENS},
    [SRV_H_N] = {"vllm:request_params_n", "Histogram of the n request parameter.", SRV_B_N},
};

struct srv_metrics {
    char *model_label;  /* model_name="..." escaped, ready to print inside braces */
    char *build_labels; /* version="...",backend="...",mode="...",model_name="..." escaped */
    double bits_per_weight;

    atomic_int_least32_t running, waiting, kv_used, kv_total, batch_size;
    atomic_int_least64_t preemptions;
    atomic_int_least64_t steps, graph_steps;
    atomic_uint_least64_t prompt_tokens, generation_tokens;

    srv_label_counter success, rejected, aborted;

    srv_hist hist[SRV_H_COUNT]; /* indexed by srv_hist_id; described by srv_hist_table */
};

/* ---- string builder ---- */

typedef struct srv_sb {
    char *p;
    size_t len, cap;
    bool oom;
} srv_sb;

static bool sb_reserve(srv_sb *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void sb_put(srv_sb *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(srv_sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_printf(srv_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(srv_sb *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        sb_put(b, small, (size_t)n);
        return;
    }
    if (!sb_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Appends s as a label value's content: backslash, double quote and newline escaped. */
static void sb_put_label_value(srv_sb *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_put(b, "\\\\", 2);
        else if (*s == '"')
            sb_put(b, "\\\"", 2);
        else if (*s == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, s, 1);
    }
}

/* A float as Prometheus reads it (Go's ParseFloat): the shortest of %.15g / %.17g that reads back
 * exactly, "+Inf", "-Inf" or "NaN". */
static const char *fmt_double(char buf[32], double v)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    snprintf(buf, 32, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, 32, "%.17g", v);
    return buf;
}

/* ---- histograms ---- */

/* Latency ladder for every *_seconds histogram: 1 ms .. 10 min. */
static const double srv_latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.02,  0.04,  0.06, 0.08,
                                            0.1,   0.25,   0.5,   0.75, 1.0,   2.5,   5.0,  7.5,
                                            10.0,  20.0,   40.0,  60.0, 120.0, 300.0, 600.0};
/* vllm:request_params_n, as vLLM. */
static const double srv_n_bounds[] = {1, 2, 5, 10, 20};

static int hist_init(srv_hist *h, const double *bounds, int n_bounds)
{
    memset(h, 0, sizeof *h);
    if (n_bounds > SRV_HIST_MAX_BOUNDS)
        n_bounds = SRV_HIST_MAX_BOUNDS;
    memcpy(h->bounds, bounds, (size_t)n_bounds * sizeof *bounds);
    h->n_bounds = n_bounds;
    return pthread_mutex_init(&h->mu, NULL) == 0 ? 0 : -1;
}

/* Powers of two from 1 up to the first one >= max(8192, max_len), at most 2^30. */
static int hist_init_tokens(srv_hist *h, int64_t max_len)
{
    double bounds[SRV_HIST_MAX_BOUNDS];
    int n = 0;
    int64_t top = max_len > 8192 ? max_len : 8192;
    for (int64_t v = 1; n < SRV_HIST_MAX_BOUNDS; v *= 2) {
        bounds[n++] = (double)v;
        if (v >= top || v >= ((int64_t)1 << 30))
            break;
    }
    return hist_init(h, bounds, n);
}

static void hist_observe(srv_hist *h, double v)
{
    if (!isfinite(v) || v < 0)
        return;
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    pthread_mutex_lock(&h->mu);
    h->counts[i]++;
    h->sum += v;
    h->count++;
    pthread_mutex_unlock(&h->mu);
}

static void hist_render(srv_sb *b, srv_hist *h, const char *name, const char *help,
                        const char *labels)
{
    uint64_t counts[SRV_HIST_MAX_BOUNDS + 1];
    pthread_mutex_lock(&h->mu);
    memcpy(counts, h->counts, sizeof counts);
    double sum = h->sum;
    uint64_t count = h->count;
    pthread_mutex_unlock(&h->mu);

    char num[32];
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += counts[i];
        sb_printf(b, "%s_bucket{%s,le=\"%s\"} %llu\n", name, labels, fmt_double(num, h->bounds[i]),
                  (unsigned long long)cum);
    }
    cum += counts[h->n_bounds];
    sb_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    sb_printf(b, "%s_sum{%s} %s\n", name, labels, fmt_double(num, sum));
    sb_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)count);
}

/* ---- labelled counters ---- */

/* Copies reason into out as a label value: NULL = "unknown", truncated to SRV_LABEL_LEN - 1 bytes,
 * bytes outside printable ASCII replaced by '_' (so truncation never splits a character). */
static void label_clean(char out[SRV_LABEL_LEN], const char *reason)
{
    if (!reason)
        reason = "unknown";
    size_t i = 0;
    for (; reason[i] && i < SRV_LABEL_LEN - 1; i++) {
        unsigned char c = (unsigned char)reason[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '_';
    }
    out[i] = '\0';
}

static int lc_find(srv_label_counter *lc, int n, const char *value)
{
    for (int i = 0; i < n; i++)
        if (strcmp(lc->e[i].value, value) == 0)
            return i;
    return -1;
}

/* Appends value (clean) under lc->mu; returns its index, or that of "other" when full. */
static int lc_append_locked(srv_label_counter *lc, const char *value)
{
    int n = atomic_load_explicit(&lc->n, memory_order_relaxed);
    int i = lc_find(lc, n, value);
    if (i >= 0)
        return i;
    if (n >= SRV_LABELS_MAX - 1) {
        i = lc_find(lc, n, "other");
        if (i >= 0)
            return i;
        value = "other";
    }
    snprintf(lc->e[n].value, SRV_LABEL_LEN, "%s", value);
    atomic_store_explicit(&lc->e[n].count, 0, memory_order_relaxed);
    atomic_store_explicit(&lc->n, n + 1, memory_order_release);
    return n;
}

static int lc_init(srv_label_counter *lc, const char *const *known, int n_known)
{
    memset(lc, 0, sizeof *lc);
    atomic_init(&lc->n, 0);
    for (int i = 0; i < SRV_LABELS_MAX; i++)
        atomic_init(&lc->e[i].count, 0);
    if (pthread_mutex_init(&lc->mu, NULL) != 0)
        return -1;
    for (int i = 0; i < n_known; i++)
        lc_append_locked(lc, known[i]); /* not shared yet: no lock needed */
    return 0;
}

static void lc_inc(srv_label_counter *lc, const char *reason)
{
    char value[SRV_LABEL_LEN];
    label_clean(value, reason);
    int n = atomic_load_explicit(&lc->n, memory_order_acquire);
    int i = lc_find(lc, n, value);
    if (i < 0) {
        pthread_mutex_lock(&lc->mu);
        i = lc_append_locked(lc, value);
        pthread_mutex_unlock(&lc->mu);
    }
    atomic_fetch_add_explicit(&lc->e[i].count, 1, memory_order_relaxed);
}

static void lc_render(srv_sb *b, srv_label_counter *lc, const char *name, const char *help,
                      const char *labels, const char *label_name)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    int n = atomic_load_explicit(&lc->n, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        sb_printf(b, "%s{%s,%s=\"", name, labels, label_name);
        sb_put_label_value(b, lc->e[i].value);
        sb_printf(b, "\"} %llu\n",
                  (unsigned long long)atomic_load_explicit(&lc->e[i].count, memory_order_relaxed));
    }
}

/* ---- lifecycle ---- */

static const char *const srv_known_finish[] = {"stop", "length", "abort", "error"};
static const char *const srv_known_rejected[] = {"queue_full", "too_long", "bad_request",
                                                 "unauthorized", "draining"};
static const char *const srv_known_aborted[] = {"client_disconnect", "timeout", "shutdown"};

#define SRV_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char *labels_escaped(const char *const *names, const char *const *values, int n)
{
    srv_sb b = {0};
    for (int i = 0; i < n; i++) {
        sb_printf(&b, "%s%s=\"", i ? "," : "", names[i]);
        sb_put_label_value(&b, values[i] ? values[i] : "");
        sb_puts(&b, "\"");
    }
    if (b.oom || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

srv_metrics *srv_metrics_create(const srv_metrics_info *info)
{
    if (!info)
        return NULL;
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;

    const char *mn[] = {"model_name"};
    const char *mv[] = {info->model_name};
    m->model_label = labels_escaped(mn, mv, 1);
    const char *bn[] = {"version", "backend", "mode", "model_name"};
    const char *bv[] = {info->version, info->backend, info->mode, info->model_name};
    m->build_labels = labels_escaped(bn, bv, 4);
    m->bits_per_weight = info->bits_per_weight;

    atomic_init(&m->running, 0);
    atomic_init(&m->waiting, 0);
    atomic_init(&m->kv_used, 0);
    atomic_init(&m->kv_total, 0);
    atomic_init(&m->batch_size, 0);
    atomic_init(&m->preemptions, 0);
    atomic_init(&m->steps, 0);
    atomic_init(&m->graph_steps, 0);
    atomic_init(&m->prompt_tokens, 0);
    atomic_init(&m->generation_tokens, 0);

    /* Count what was initialised, so a failure destroys exactly that. */
    int n_hist = 0, n_lc = 0;
    srv_label_counter *lcs[3] = {&m->success, &m->rejected, &m->aborted};
    const char *const *known[3] = {srv_known_finish, srv_known_rejected, srv_known_aborted};
    int n_known[3] = {SRV_COUNT(srv_known_finish), SRV_COUNT(srv_known_rejected),
                      SRV_COUNT(srv_known_aborted)};
    if (!m->model_label || !m->build_labels)
        goto fail;
    for (; n_hist < SRV_H_COUNT; n_hist++) {
        srv_hist *h = &m->hist[n_hist];
        int rc;
        switch (srv_hist_table[n_hist].buckets) {
        case SRV_B_LATENCY:
            rc = hist_init(h, srv_latency_bounds, SRV_COUNT(srv_latency_bounds));
            break;
        case SRV_B_N:
            rc = hist_init(h, srv_n_bounds, SRV_COUNT(srv_n_bounds));
            break;
        default:
            rc = hist_init_tokens(h, info->max_model_len);
            break;
        }
        if (rc != 0)
            goto fail;
    }
    for (; n_lc < 3; n_lc++)
        if (lc_init(lcs[n_lc], known[n_lc], n_known[n_lc]) != 0)
            goto fail;
    return m;

fail:
    for (int i = 0; i < n_hist; i++)
        pthread_mutex_destroy(&m->hist[i].mu);
    for (int i = 0; i < n_lc; i++)
        pthread_mutex_destroy(&lcs[i]->mu);
    free(m->model_label);
    free(m->build_labels);
    free(m);
    return NULL;
}

void srv_metrics_destroy(srv_metrics *m)
{
    if (!m)
        return;
    for (int i = 0; i < SRV_H_COUNT; i++)
        pthread_mutex_destroy(&m->hist[i].mu);
    pthread_mutex_destroy(&m->success.mu);
    pthread_mutex_destroy(&m->rejected.mu);
    pthread_mutex_destroy(&m->aborted.mu);
    free(m->model_label);
    free(m->build_labels);
    free(m);
}

/* ---- updates ---- */

void srv_metrics_request_finished(srv_metrics *m, const srv_request_stats *st)
{
    if (!m || !st)
        return;
    int64_t prompt = st->prompt_tokens > 0 ? st->prompt_tokens : 0;
    int64_t gen = st->generation_tokens > 0 ? st->generation_tokens : 0;
    atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)prompt, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->generation_tokens, (uint64_t)gen, memory_order_relaxed);
    lc_inc(&m->success, st->finish_reason);

    srv_hist *h = m->hist;
    hist_observe(&h[SRV_H_QUEUE], st->queue_s); /* negative = none: hist_observe ignores it */
    hist_observe(&h[SRV_H_TTFT], st->ttft_s);
    hist_observe(&h[SRV_H_E2E], st->e2e_s);
    hist_observe(&h[SRV_H_PREFILL], st->prefill_s);
    hist_observe(&h[SRV_H_DECODE], st->decode_s);
    hist_observe(&h[SRV_H_PROMPT], (double)prompt);
    hist_observe(&h[SRV_H_GEN], (double)gen);
    if (st->max_tokens > 0)
        hist_observe(&h[SRV_H_MAX_TOKENS], (double)st->max_tokens);
    if (st->n > 0)
        hist_observe(&h[SRV_H_N], (double)st->n);
}

void srv_metrics_inter_token(srv_metrics *m, double seconds)
{
    if (m)
        hist_observe(&m->hist[SRV_H_ITL], seconds);
}

void srv_metrics_rejected(srv_metrics *m, const char *reason)
{
    if (m)
        lc_inc(&m->rejected, reason);
}

void srv_metrics_aborted(srv_metrics *m, const char *reason)
{
    if (m)
        lc_inc(&m->aborted, reason);
}

void srv_metrics_set_sched(srv_metrics *m, const srv_sched_gauges *g)
{
    if (!m || !g)
        return;
    atomic_store_explicit(&m->running, g->running, memory_order_relaxed);
    atomic_store_explicit(&m->waiting, g->waiting, memory_order_relaxed);
    atomic_store_explicit(&m->kv_used, g->kv_blocks_used, memory_order_relaxed);
    atomic_store_explicit(&m->kv_total, g->kv_blocks_total, memory_order_relaxed);
    atomic_store_explicit(&m->batch_size, g->batch_size, memory_order_relaxed);
    atomic_store_explicit(&m->preemptions, g->preemptions_total, memory_order_relaxed);
    atomic_store_explicit(&m->steps, g->steps_total, memory_order_relaxed);
    atomic_store_explicit(&m->graph_steps, g->graph_steps_total, memory_order_relaxed);
}

void srv_metrics_iteration(srv_metrics *m, int64_t tokens)
{
    if (m && tokens >= 0)
        hist_observe(&m->hist[SRV_H_ITER], (double)tokens);
}

/* ---- rendering ---- */

static void render_scalar(srv_sb *b, const char *name, const char *type, const char *help,
                          const char *labels, const char *value)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %s\n", name, help, name, type, name, labels,
              value);
}

static void render_int(srv_sb *b, const char *name, const char *type, const char *help,
                       const char *labels, long long v)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", v);
    render_scalar(b, name, type, help, labels, num);
}

char *srv_metrics_render(srv_metrics *m, size_t *len)
{
    if (len)
        *len = 0;
    if (!m)
        return NULL;
    srv_sb b = {0};
    const char *ml = m->model_label;
    char num[32];

    long long running = atomic_load_explicit(&m->running, memory_order_relaxed);
    long long waiting = atomic_load_explicit(&m->waiting, memory_order_relaxed);
    long long kv_used = atomic_load_explicit(&m->kv_used, memory_order_relaxed);
    long long kv_total = atomic_load_explicit(&m->kv_total, memory_order_relaxed);
    long long batch = atomic_load_explicit(&m->batch_size, memory_order_relaxed);
    long long preempt = atomic_load_explicit(&m->preemptions, memory_order_relaxed);
    double usage = kv_total > 0 ? (double)kv_used / (double)kv_total : 0.0;
    usage = usage < 0 ? 0 : usage > 1 ? 1 : usage; /* fields of two set_sched calls may mix */

    /* vLLM's families, in vLLM's words where they fit. */
    render_int(&b, "vllm:num_requests_running", "gauge",
               "Number of requests in model execution batches.", ml, running);
    render_int(&b, "vllm:num_requests_waiting", "gauge",
               "Number of requests waiting to be processed.", ml, waiting);
    render_scalar(&b, "vllm:kv_cache_usage_perc", "gauge",
                  "KV-cache usage. 1 means 100 percent usage.", ml, fmt_double(num, usage));
    render_int(&b, "vllm:num_preemptions_total", "counter",
               "Cumulative number of preemption from the engine.", ml, preempt);
    render_int(&b, "flexq_engine_steps_total", "counter", "Engine steps run.", ml,
               atomic_load_explicit(&m->steps, memory_order_relaxed));
    render_int(&b, "flexq_engine_graph_steps_total", "counter",
               "Engine steps that replayed a captured CUDA graph (decode steps, cuda backend).", ml,
               atomic_load_explicit(&m->graph_steps, memory_order_relaxed));
    snprintf(num, sizeof num, "%llu",
             (unsigned long long)atomic_load_explicit(&m->prompt_tokens, memory_order_relaxed));
    render_scalar(&b, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
                  ml, num);
    snprintf(num, sizeof num, "%llu",
             (unsigned long long)atomic_load_explicit(&m->generation_tokens, memory_order_relaxed));
    render_scalar(&b, "vllm:generation_tokens_total", "counter",
                  "Number of generation tokens processed.", ml, num);
    lc_render(&b, &m->success, "vllm:request_success_total",
              "Count of finished requests, by finish reason.", ml, "finished_reason");

    for (int i = 0; i < SRV_H_COUNT; i++)
        hist_render(&b, &m->hist[i], srv_hist_table[i].name, srv_hist_table[i].help, ml);

    /* Ours. */
    lc_render(&b, &m->rejected, "flexq_requests_rejected_total",
              "Requests refused before they were queued, by reason.", ml, "reason");
    lc_render(&b, &m->aborted, "flexq_requests_aborted_total",
              "Requests ended early by the server, by reason.", ml, "reason");
    render_int(&b, "flexq_batch_size", "gauge", "Sequences in the last engine step's batch.", ml,
               batch);
    render_int(&b, "flexq_kv_blocks_used", "gauge", "KV-cache blocks held by requests.", ml,
               kv_used);
    /* Not flexq_kv_blocks_total nor flexq_weight_bits_per_weight: promtool's linter reserves
     * _total for counters and wants the base unit bytes (see srv_metrics.h). */
    render_int(&b, "flexq_kv_blocks_capacity", "gauge", "KV-cache blocks in the pool.", ml,
               kv_total);
    render_scalar(&b, "flexq_weight_bytes_per_weight", "gauge",
                  "Average stored bytes per linear weight, bits / 8 (0 when not INT6).", ml,
                  fmt_double(num, m->bits_per_weight / 8.0));
    render_scalar(&b, "flexq_build_info", "gauge", "Build and model facts; the value is always 1.",
                  m->build_labels, "1");

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}

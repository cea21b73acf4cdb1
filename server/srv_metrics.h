/* srv_metrics.h — the daemon's Prometheus metrics: counters, gauges and histograms, rendered as
 * text exposition format 0.0.4 for GET /metrics.
 *
 * Names follow vLLM's (DESIGN §6) so its dashboards work unchanged, each series labelled with
 * model_name: gauges vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc
 * (0..1); counters vllm:prompt_tokens_total, vllm:generation_tokens_total,
 * vllm:request_success_total{finished_reason}, vllm:num_preemptions_total; histograms
 * vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds,
 * vllm:e2e_request_latency_seconds, vllm:request_queue_time_seconds,
 * vllm:request_prefill_time_seconds, vllm:request_decode_time_seconds,
 * vllm:request_prompt_tokens, vllm:request_generation_tokens, vllm:iteration_tokens_total,
 * vllm:request_params_max_tokens, vllm:request_params_n. Ours: counters
 * flexq_requests_rejected_total{reason}, flexq_requests_aborted_total{reason},
 * flexq_engine_steps_total and flexq_engine_graph_steps_total; gauges
 * flexq_batch_size, flexq_kv_blocks_used, flexq_kv_blocks_capacity, flexq_weight_bytes_per_weight
 * (bits per weight / 8) and flexq_build_info{version,backend,mode,model_name} (always 1).
 *
 * `promtool check metrics` parses the output; its linter objects only to what vLLM compatibility
 * imposes (':' in the vllm:* names, the histogram vllm:iteration_tokens_total ending in _total).
 * Our own names avoid the rest: the pool size is _capacity, not _total (kept for counters), and
 * the weight width is in the base unit bytes, not bits.
 *
 * Buckets: latencies 0.001 s .. 600 s; token counts powers of two from 1 to 8192, or further up to
 * max_model_len when that is larger; request_params_n 1, 2, 5, 10, 20 (as vLLM).
 * Label values for reasons are free strings from the caller; the known ones (listed at each call)
 * are exported at 0 from the start, unknown ones are added as they come, up to 32 per family, then
 * counted under "other" (bounded cardinality).
 *
 * Thread safety: every function may be called from any thread, concurrently with each other and
 * with srv_metrics_render, except srv_metrics_destroy (no call may be running or follow it).
 * Counters and gauges are C11 atomics; each histogram has a mutex, so one rendered histogram is a
 * consistent snapshot (its +Inf bucket equals its _count).
 */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_metrics srv_metrics;

/* Facts fixed for the daemon's life; the strings are copied (NULL = ""). */
typedef struct srv_metrics_info {
    const char *model_name; /* the model_name label of every series (the served model's id) */
    const char *version;    /* flexq-serve version, e.g. "0.1.0" */
    const char *backend;    /* "cpu" or "cuda" */
    const char *mode;       /* the runtime mode, e.g. "int6" or "fp16" */
    double bits_per_weight; /* average stored bits per linear weight; 0 when not INT6 */
    int64_t max_model_len;  /* context length; widens the token histograms past 8192 if larger
                               (0 = 8192) */
} srv_metrics_info;

/* Creates the metrics, all at zero. Returns NULL on OOM (or info == NULL). Caller-owned. */
srv_metrics *srv_metrics_create(const srv_metrics_info *info);
void srv_metrics_destroy(srv_metrics *m); /* NULL is a no-op */

/* What one finished request contributes (one call per request, whatever its end). */
typedef struct srv_request_stats {
    int64_t prompt_tokens;     /* tokens of the prompt (negative = 0) */
    int64_t generation_tokens; /* tokens generated over all n choices (negative = 0) */
    double queue_s;            /* arrival to first scheduled (< 0 = none, not observed) */
    double ttft_s;             /* arrival to first token (< 0 = none, e.g. failed before it) */
    double e2e_s;              /* arrival to finish (< 0 = none) */
    double prefill_s;          /* first scheduled to first token (< 0 = none) */
    double decode_s;           /* first token to finish (< 0 = none) */
    const char *finish_reason; /* finished_reason label: "stop", "length", "abort", "error" are
                                  exported from the start; NULL = "unknown"; borrowed */
    int32_t max_tokens;        /* the request's max_tokens (<= 0 = not observed) */
    int32_t n;                 /* the request's n (<= 0 = not observed) */
} srv_request_stats;

/* Adds a finished request: token counters, request_success_total{finished_reason} and the
 * per-request histograms. m or st NULL is a no-op. */
void srv_metrics_request_finished(srv_metrics *m, const srv_request_stats *st);

/* Observes one inter-token latency sample, in seconds (negative or NaN is ignored). */
void srv_metrics_inter_token(srv_metrics *m, double seconds);

/* Counts one request refused before it was queued. Reasons are truncated to 63 bytes and bytes
 * outside printable ASCII become '_'. Known reasons: "queue_full", "too_long",
 * "bad_request", "unauthorized", "draining"; NULL = "unknown"; borrowed. */
void srv_metrics_rejected(srv_metrics *m, const char *reason);

/* Counts one request ended early by the server side. Known reasons: "client_disconnect",
 * "timeout", "shutdown"; NULL = "unknown"; borrowed. */
void srv_metrics_aborted(srv_metrics *m, const char *reason);

/* The scheduler's state after an engine step. */
typedef struct srv_sched_gauges {
    int32_t running, waiting;  /* requests in the running batch / in the queue */
    int32_t kv_blocks_used;    /* KV blocks held by requests */
    int32_t kv_blocks_total;   /* KV blocks in the pool; usage = used / total (0 if 0) */
    int32_t batch_size;        /* sequences in the last step's batch */
    int64_t preemptions_total; /* cumulative preemptions since start (the scheduler's
                                  counter; exported as vllm:num_preemptions_total) */
    int64_t steps_total;       /* engine steps since start (flexq_engine_steps_total) */
    int64_t graph_steps_total; /* of which replayed a CUDA graph
                                  (flexq_engine_graph_steps_total) */
} srv_sched_gauges;

/* Sets the scheduler gauges (each field is stored atomically; a render may see fields of two
 * consecutive calls). m or g NULL is a no-op. */
void srv_metrics_set_sched(srv_metrics *m, const srv_sched_gauges *g);

/* Observes the tokens processed in one engine step (prefill + decode) in
 * vllm:iteration_tokens_total (negative is ignored). */
void srv_metrics_iteration(srv_metrics *m, int64_t tokens);

/* The Content-Type of a rendered exposition. */
#define SRV_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Renders every family (HELP, TYPE, samples) as Prometheus text format 0.0.4
 * (SRV_METRICS_CONTENT_TYPE). Returns a malloc'd NUL-terminated string (caller
 * frees) and its length without the NUL in *len (len may be NULL), or NULL on OOM. */
char *srv_metrics_render(srv_metrics *m, size_t *len);

#endif /* SRV_METRICS_H */

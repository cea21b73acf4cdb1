/* cfg_table.c — the one table of flexq-serve's knobs (key, variable, flag, type, default, bounds,
 * help) and the defaults built from it.
 *
 * Naming rule, checked by the tests: JSON key = name, environment variable = "FLEXQ_" + upper-case
 * name, flag = "--" + name with '_' turned into '-'. The order of the rows is the order of --help
 * and of the JSON dump.
 */
#include "cfg.h"

#include <string.h>

_Static_assert(sizeof(cfg_backend) == sizeof(int), "enum knobs are stored as int");
_Static_assert(sizeof(cfg_mode) == sizeof(int), "enum knobs are stored as int");
_Static_assert(sizeof(fq_log_level) == sizeof(int), "enum knobs are stored as int");

static const char *const backend_names[] = {"cpu", "cuda", NULL};
static const char *const mode_names[] = {"auto", "fp",   "w6a16", "w6a8", "w6a6",
                                         "flex", "fp16", "w8a8",  NULL};
static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};

#define KIB 1024.0
#define MIB (1024.0 * KIB)
#define GIB (1024.0 * MIB)
#define TIB (1024.0 * GIB)

/* offset and size of a field of cfg_config */
#define FIELD(f) offsetof(cfg_config, f), sizeof(((cfg_config *)0)->f)

/* clang-format off */
static const cfg_knob knobs[] = {
    /* name, json_key, env, flag,
       type, default, min, max, choices, metavar, section,
       help,
       field, flags */
    {"config", NULL, "FLEXQ_CONFIG", "--config",
     CFG_T_STRING, "", 0, CFG_PATH_CAP - 1, NULL, "FILE", "General",
     "JSON config file whose keys are the knob names below; \"\" = none.",
     FIELD(config_path), CFG_K_NO_FILE},
    {"log_level", "log_level", "FLEXQ_LOG_LEVEL", "--log-level",
     CFG_T_ENUM, "info", 0, 0, log_level_names, "LEVEL", "General",
     "Least severe level written to the log (stderr).",
     FIELD(log_level), 0},

    {"model", "model", "FLEXQ_MODEL", "--model",
     CFG_T_STRING, "", 0, CFG_PATH_CAP - 1, NULL, "PATH", "Model",
     "Model to serve: a GGUF file, an HF checkpoint directory or an INT6 model file "
     "(*.fq6.safetensors). Required.",
     FIELD(model), 0},
    {"served_model_name", "served_model_name", "FLEXQ_SERVED_MODEL_NAME", "--served-model-name",
     CFG_T_STRING, "", 0, CFG_NAME_CAP - 1, NULL, "NAME", "Model",
     "Model id that /v1/models lists and requests name; \"\" = the model's file name without "
     ".gguf, .fq6.safetensors or .safetensors.",
     FIELD(served_model_name), 0},
    {"backend", "backend", "FLEXQ_BACKEND", "--backend",
     CFG_T_ENUM, "cpu", 0, 0, backend_names, "NAME", "Model",
     "Where the forward pass runs.",
     FIELD(backend), 0},
    {"mode", "mode", "FLEXQ_MODE", "--mode",
     CFG_T_ENUM, "auto", 0, 0, mode_names, "MODE", "Model",
     "How the linears compute: fp = the checkpoint's weights; w6aN = INT6 weights with N-bit "
     "activations; flex = each linear's own activation bits (FlexQ INT6); fp16 and w8a8 = the "
     "comparison baselines (fp16 weights and activations; int8 per-channel weights and "
     "per-token activations); auto = flex for an INT6 model file, fp otherwise.",
     FIELD(mode), 0},
    {"threads", "threads", "FLEXQ_THREADS", "--threads",
     CFG_T_INT, "0", 0, 1024, NULL, "N", "Model",
     "CPU threads of the backend; 0 = one per core.",
     FIELD(threads), 0},

    {"host", "host", "FLEXQ_HOST", "--host",
     CFG_T_STRING, "127.0.0.1", 1, CFG_NAME_CAP - 1, NULL, "ADDR", "HTTP server",
     "Address to listen on (0.0.0.0 = every IPv4 interface).",
     FIELD(host), 0},
    {"port", "port", "FLEXQ_PORT", "--port",
     CFG_T_UINT, "8000", 1, 65535, NULL, "N", "HTTP server",
     "TCP port to listen on.",
     FIELD(port), 0},
    {"api_key", "api_key", "FLEXQ_API_KEY", "--api-key",
     CFG_T_STRING, "", 0, CFG_NAME_CAP - 1, NULL, "KEY", "HTTP server",
     "Bearer token every /v1 request must send (Authorization: Bearer KEY); \"\" = no "
     "authentication. Never logged; prefer the variable or the file to the flag, which other "
     "users can see in the process list.",
     FIELD(api_key), CFG_K_SECRET},
    {"max_body_bytes", "max_body_bytes", "FLEXQ_MAX_BODY_BYTES", "--max-body-bytes",
     CFG_T_SIZE, "1MiB", KIB, GIB, NULL, "SIZE", "HTTP server",
     "Largest request body accepted; larger ones get 413.",
     FIELD(max_body_bytes), 0},
    {"metrics", "metrics", "FLEXQ_METRICS", "--metrics",
     CFG_T_BOOL, "true", 0, 0, NULL, "BOOL", "HTTP server",
     "Serve Prometheus metrics at GET /metrics.",
     FIELD(metrics), 0},

    {"max_num_seqs", "max_num_seqs", "FLEXQ_MAX_NUM_SEQS", "--max-num-seqs",
     CFG_T_INT, "16", 1, 4096, NULL, "N", "Scheduler and KV cache",
     "Most sequences running (in prefill or decode) at once.",
     FIELD(max_num_seqs), 0},
    {"max_num_batched_tokens", "max_num_batched_tokens", "FLEXQ_MAX_NUM_BATCHED_TOKENS",
     "--max-num-batched-tokens",
     CFG_T_INT, "512", 1, 1048576, NULL, "N", "Scheduler and KV cache",
     "Most tokens one engine step carries (prefill chunks plus one per decoding sequence); at "
     "least max_num_seqs.",
     FIELD(max_num_batched_tokens), 0},
    {"cuda_graphs", "cuda_graphs", "FLEXQ_CUDA_GRAPHS", "--cuda-graphs",
     CFG_T_BOOL, "true", 0, 0, NULL, "BOOL", "Scheduler and KV cache",
     "Replay decode steps as CUDA graphs, one per batch-size bucket (cuda backend).",
     FIELD(cuda_graphs), 0},
    {"max_model_len", "max_model_len", "FLEXQ_MAX_MODEL_LEN", "--max-model-len",
     CFG_T_INT, "0", 0, 1048576, NULL, "N", "Scheduler and KV cache",
     "Context length in tokens, prompt plus output; 0 = the model's own.",
     FIELD(max_model_len), 0},
    {"kv_cache_memory", "kv_cache_memory", "FLEXQ_KV_CACHE_MEMORY", "--kv-cache-memory",
     CFG_T_SIZE, "256MiB", MIB, TIB, NULL, "SIZE", "Scheduler and KV cache",
     "Memory for the paged KV cache, on the backend's device.",
     FIELD(kv_cache_memory_bytes), 0},
    {"kv_block_size", "kv_block_size", "FLEXQ_KV_BLOCK_SIZE", "--kv-block-size",
     CFG_T_INT, "16", 1, 1024, NULL, "N", "Scheduler and KV cache",
     "Tokens per KV cache block.",
     FIELD(kv_block_size), 0},

    {"max_queue_requests", "max_queue_requests", "FLEXQ_MAX_QUEUE_REQUESTS",
     "--max-queue-requests",
     CFG_T_UINT, "256", 1, 1048576, NULL, "N", "Queue and timeouts",
     "Most requests waiting for a slot; beyond it requests get 429 with Retry-After.",
     FIELD(max_queue_requests), 0},
    {"max_queue_prompt_tokens", "max_queue_prompt_tokens", "FLEXQ_MAX_QUEUE_PROMPT_TOKENS",
     "--max-queue-prompt-tokens",
     CFG_T_UINT, "262144", 1, 1073741824, NULL, "N", "Queue and timeouts",
     "Most prompt tokens waiting in total; beyond it requests get 429 with Retry-After.",
     FIELD(max_queue_prompt_tokens), 0},
    {"queue_timeout_s", "queue_timeout_s", "FLEXQ_QUEUE_TIMEOUT_S", "--queue-timeout-s",
     CFG_T_DOUBLE, "60", 0, 86400, NULL, "SECONDS", "Queue and timeouts",
     "Longest wait for a slot before the request gets 429; 0 = no limit.",
     FIELD(queue_timeout_s), 0},
    {"request_timeout_s", "request_timeout_s", "FLEXQ_REQUEST_TIMEOUT_S", "--request-timeout-s",
     CFG_T_DOUBLE, "600", 0, 604800, NULL, "SECONDS", "Queue and timeouts",
     "Longest time from a request's arrival to its last token; the request is then aborted. "
     "0 = no limit.",
     FIELD(request_timeout_s), 0},
    {"drain_timeout_s", "drain_timeout_s", "FLEXQ_DRAIN_TIMEOUT_S", "--drain-timeout-s",
     CFG_T_DOUBLE, "30", 0, 3600, NULL, "SECONDS", "Queue and timeouts",
     "On SIGTERM or SIGINT, how long requests in flight may finish before they are aborted; "
     "0 = abort at once.",
     FIELD(drain_timeout_s), 0},
};
/* clang-format on */

#define N_KNOBS (sizeof knobs / sizeof knobs[0])

const cfg_knob *cfg_knobs(size_t *n)
{
    if (n)
        *n = N_KNOBS;
    return knobs;
}

const cfg_knob *cfg_knob_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N_KNOBS; i++)
        if (strcmp(knobs[i].name, name) == 0)
            return &knobs[i];
    return NULL;
}

cfg_config cfg_default(void)
{
    cfg_config c;
    memset(&c, 0, sizeof c);
    for (size_t i = 0; i < N_KNOBS; i++) {
        char err[256];
        /* A default that does not parse or lies outside its bounds is a bug in the table. */
        int rc = cfg_knob_set(&c, &knobs[i], knobs[i].dflt, err, sizeof err);
        if (rc != 0)
            fq_log(FQ_LOG_ERROR, "config table: default of %s: %s", knobs[i].name, err);
        FQ_ASSERT(rc == 0);
    }
    return c;
}

const char *cfg_backend_name(cfg_backend b)
{
    return (unsigned)b < 2 ? backend_names[b] : "?";
}

const char *cfg_mode_name(cfg_mode m)
{
    return (unsigned)m < sizeof mode_names / sizeof mode_names[0] - 1 ? mode_names[m] : "?";
}

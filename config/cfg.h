/* cfg.h — the flexq-serve configuration: one struct with defaults, filled from a JSON file, the
 * environment and the command line.
 *
 * Every knob is one row of a const table (cfg_table.c): its name (also its JSON key), its FLEXQ_*
 * environment variable, its --flag, its type, default, bounds and help text. The file, environment
 * and flag parsers, --help and the JSON dump are all generated from that table, so adding a knob is
 * one field here plus one row there.
 *
 * Precedence: defaults < config file (--config FILE, else FLEXQ_CONFIG) < environment < flags.
 * Value syntax, the same from every source:
 *   int, uint  decimal integer ("16"); in the file a JSON integer
 *   double     decimal number ("0.5", "60"); in the file a JSON number
 *   size       bytes with an optional unit: "1048576", "512MiB", "2GiB", "1.5GiB"; units B,
 *              KiB/MiB/GiB/TiB (and K/M/G/T) = 1024^n, KB/MB/GB/TB = 1000^n, case-insensitive; in
 *              the file a JSON string or a JSON integer (bytes)
 *   bool       true|false|1|0|yes|no|on|off; flags also --metrics / --no-metrics; in the file a
 *              JSON boolean
 *   enum       one of the listed names; in the file a JSON string
 *   string     any text up to the field's capacity; in the file a JSON string
 * An empty FLEXQ_* variable counts as unset (so `FLEXQ_API_KEY=` from an unset compose variable
 * cannot switch authentication off). FLEXQ_* variables that name no knob are ignored (the tests and
 * tools use some); an unknown flag or config-file key is an error.
 *
 * Thread safety: nothing here has state; every function may be called from any thread, except that
 * cfg_load with envp == NULL reads `environ` and must not race with setenv().
 */
#ifndef CFG_H
#define CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fq_base.h"

/* Capacities of the string fields, terminating NUL included. */
#define CFG_PATH_CAP 4096
#define CFG_NAME_CAP 256

typedef enum { CFG_BACKEND_CPU = 0, CFG_BACKEND_CUDA = 1 } cfg_backend;

/* How the decoder linears compute; the same names as the runtime's rt_mode plus "auto". */
typedef enum {
    CFG_MODE_AUTO = 0, /* flex for an INT6 model file, fp for any other checkpoint */
    CFG_MODE_FP,       /* the checkpoint's weights, fp32 activations */
    CFG_MODE_W6A16,    /* INT6 weights, fp32 activations */
    CFG_MODE_W6A8,     /* INT6 weights, 8-bit activations */
    CFG_MODE_W6A6,     /* INT6 weights, 6-bit activations */
    CFG_MODE_FLEX,     /* INT6 weights, each linear's own activation bits */
    CFG_MODE_FP16,     /* comparison: fp16 weights and activations (cuBLAS fp16) */
    CFG_MODE_W8A8      /* comparison: int8 per-channel weights, per-token activations */
} cfg_mode;

/* The effective configuration. Plain data: copy it by value; nothing in it is owned. */
typedef struct cfg_config {
    /* Where the settings came from. */
    char config_path[CFG_PATH_CAP]; /* the JSON file read (--config / FLEXQ_CONFIG); "" = none.
                                       Not settable from the file itself. */

    /* Model and backend. */
    char model[CFG_PATH_CAP]; /* GGUF file, HF checkpoint directory or INT6 model file; "" is
                                 allowed while parsing, cfg_validate_for_serve requires it */
    char served_model_name[CFG_NAME_CAP]; /* the id /v1/models lists and requests must name; ""
                                             in the sources = basename of model without .gguf,
                                             .fq6.safetensors or .safetensors (cfg_load fills it) */
    cfg_backend backend;                  /* where the forward pass runs; default cpu */
    cfg_mode mode;                        /* how the linears compute; default auto */
    int32_t threads;                      /* CPU threads of the backend; 0 = one per core */

    /* HTTP server. */
    char host[CFG_NAME_CAP];    /* address to listen on; default 127.0.0.1 */
    uint32_t port;              /* TCP port, 1..65535; default 8000 */
    char api_key[CFG_NAME_CAP]; /* bearer token every /v1 request must carry; "" = no auth.
                                   Never logged (cfg_dump_json redacts it). */
    uint64_t max_body_bytes; /* largest request body accepted, bytes (413 beyond); default 1MiB */
    bool metrics;            /* serve GET /metrics; default true */
    fq_log_level log_level;  /* least severe level logged; default info */

    /* Scheduler and KV cache. */
    int32_t max_num_seqs;           /* most sequences running (prefill or decode) at once; 16 */
    int32_t max_num_batched_tokens; /* most tokens per engine step, >= max_num_seqs; 512 */
    bool cuda_graphs;               /* decode steps as CUDA graphs (cuda backend); true */
    int32_t max_model_len;          /* context length, prompt + output tokens; 0 = from model */
    uint64_t kv_cache_memory_bytes; /* memory for the paged KV cache, bytes; default 256MiB */
    int32_t kv_block_size;          /* tokens per KV block; default 16 */

    /* Admission queue and timeouts. */
    uint32_t max_queue_requests;      /* most requests waiting for a slot (429 beyond); 256 */
    uint32_t max_queue_prompt_tokens; /* most prompt tokens waiting in all (429 beyond); 262144 */
    double queue_timeout_s;   /* longest wait for a slot before 429, seconds; 0 = no limit; 60 */
    double request_timeout_s; /* longest request, arrival to last token, seconds; 0 = none; 600 */
    double drain_timeout_s;   /* on SIGTERM, how long in-flight requests may finish, seconds;
                                 0 = abort them at once; 30 */
} cfg_config;

/* The defaults, every field set (served_model_name "" until a model is known). */
cfg_config cfg_default(void);

/* Fills *out from defaults, the config file, the environment and argv[1..argc-1], in that order of
 * precedence. argv and envp are borrowed for the call only; envp is a NULL-terminated "NAME=value"
 * array, or NULL for the process environment.
 * Also checks the knobs that depend on each other (max_num_batched_tokens >= max_num_seqs) and
 * derives served_model_name. On failure returns FQ_EINVAL (bad flag, key or value), FQ_ERANGE (out
 * of bounds), FQ_EIO/FQ_EFORMAT (config file unreadable or not JSON) or FQ_ENOMEM, with one line in
 * err naming the knob, the source (flag, environment variable or file key) and what is allowed;
 * *out is then unchanged. -h/--help is accepted and ignored: check cfg_help_requested first. */
int cfg_load(int argc, char **argv, const char *const *envp, cfg_config *out, char *err,
             size_t err_len);

/* True when argv[1..] holds -h or --help as a flag (not as the value of another flag). */
bool cfg_help_requested(int argc, char **argv);

/* Writes the usage text, generated from the table: every flag, its environment variable, its
 * config-file key, its allowed values and its default. */
void cfg_print_help(FILE *f);

/* The configuration as one line of JSON (keys as in the config file, api_key shown as
 * "<redacted>" when set), for the start-up log. Caller frees with free(); NULL when out of
 * memory. */
char *cfg_dump_json(const cfg_config *c);

/* What flexq-serve needs beyond cfg_load: a model path, and every value within its bounds (for a
 * struct the caller built or changed). FQ_EINVAL with a message naming the knob and its three
 * sources otherwise. */
int cfg_validate_for_serve(const cfg_config *c, char *err, size_t err_len);

/* True when every knob of a and b holds the same value (string fields compared as strings). */
bool cfg_equal(const cfg_config *a, const cfg_config *b);

/* "cpu"/"cuda", "auto"/"fp"/"w6a16"/"w6a8"/"w6a6"/"flex"/"fp16"/"w8a8"; "?" for a value out of the
 * enum. */
const char *cfg_backend_name(cfg_backend b);
const char *cfg_mode_name(cfg_mode m);

/* ---- The table, read-only, for tools and tests. ---- */

typedef enum {
    CFG_T_STRING = 0, /* char[size]; bounds = length in bytes */
    CFG_T_INT,        /* int32_t */
    CFG_T_UINT,       /* uint32_t */
    CFG_T_DOUBLE,     /* double */
    CFG_T_BOOL,       /* bool */
    CFG_T_ENUM,       /* an enum stored as int; the value is the index into choices */
    CFG_T_SIZE        /* uint64_t bytes */
} cfg_type;

enum {
    CFG_K_SECRET = 1u << 0, /* never echoed in errors, help defaults or dumps */
    CFG_K_NO_FILE = 1u << 1 /* not a config-file key (json_key is NULL) */
};

typedef struct cfg_knob {
    const char *name;     /* "max_num_seqs" */
    const char *json_key; /* key in the config file ("max_num_seqs"); NULL = CFG_K_NO_FILE */
    const char *env;      /* "FLEXQ_MAX_NUM_SEQS" */
    const char *flag;     /* "--max-num-seqs" */
    cfg_type type;
    const char *dflt;           /* default as text, parsed like any other value */
    double min, max;            /* bounds, inclusive: numbers, sizes in bytes, string lengths */
    const char *const *choices; /* enum: NULL-terminated names, index = value; else NULL */
    const char *metavar;        /* placeholder of the value in --help: "N", "SIZE", "PATH" */
    const char *section;        /* --help heading the knob is listed under */
    const char *help;           /* one or two sentences; units and the meaning of 0 */
    size_t offset;              /* offsetof(cfg_config, field) */
    size_t size;                /* sizeof the field (the capacity of a string) */
    unsigned flags;             /* CFG_K_* */
} cfg_knob;

/* The table and its length (*n). Static storage; never NULL. */
const cfg_knob *cfg_knobs(size_t *n);

/* The knob with this name (== JSON key for file knobs), or NULL. */
const cfg_knob *cfg_knob_find(const char *name);

/* Parses text as knob k's type, checks its bounds and stores it in c. FQ_EINVAL (not of the type)
 * or FQ_ERANGE (out of bounds) with the reason and the allowed values in err; c unchanged then. */
int cfg_knob_set(cfg_config *c, const cfg_knob *k, const char *text, char *err, size_t err_len);

/* Writes knob k's value in c as text that cfg_knob_set accepts (sizes in the largest exact unit:
 * "256MiB"); secrets as they are. Returns the snprintf length (>= len means truncated). */
int cfg_knob_format(const cfg_config *c, const cfg_knob *k, char *buf, size_t len);

/* Parses a size ("512MiB", "2GiB", "1048576", "1.5 GiB") into bytes. FQ_EINVAL when it is not a
 * size or not a whole number of bytes, FQ_ERANGE when it overflows 64 bits. */
int cfg_parse_size(const char *text, uint64_t *bytes);

#endif /* CFG_H */

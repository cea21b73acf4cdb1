/* flexq_bench.c — flexq-bench: offline engine throughput of one model in one mode, the numbers the
 * end-to-end benchmark (tests/bench/e2e.sh) collects for every mode and model shape.
 *
 * Decode: for each batch size B, B random prompts of --prompt tokens are prefilled, then decoded
 * together for --output tokens each (greedy, EOS ignored); decode tokens/s counts the tokens made
 * after every sequence has its first one (from then on every step is pure decode; before, later
 * prompts are still being prefilled in chunks) over the time they took.
 * Prefill: --prefill-seqs prompts of --prefill tokens, prefilled in chunks of the step size with
 * one token generated; prefill tokens/s is their tokens over that time. A warm-up run of each shape
 * comes first. Memory: what the backend holds (weights in its format, KV cache, scratch).
 * Output: one JSON object per line on stdout, {"model", "mode", "backend", "batch", "prompt",
 * "output", "decode_tok_s", "prefill_tok_s", "weight_bytes", "linear_bytes", "kv_bytes",
 * "scratch_bytes", "graphs", "steps", "graph_steps"} (the last two: the timed decode run's steps
 * and how many of them replayed a CUDA graph); progress on stderr.
 */
#include "fq_base.h"
#include "rt_model.h"
#include "rt_runner.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL      "flexq-bench"
#define MAX_BATCH 16

typedef struct bench_args {
    const char *model, *backend, *label;
    rt_mode mode;
    int32_t batches[MAX_BATCH], n_batches;
    int32_t prompt, output, prefill, prefill_seqs, threads, block_size;
    bool graphs;
} bench_args;

static void usage(FILE *f)
{
    fprintf(f, "usage: flexq-bench --model FILE [--backend cpu|cuda] [--mode MODE]\n"
               "                   [--batches 1,8,32,64] [--prompt 128] [--output 256]\n"
               "                   [--prefill 2048] [--prefill-seqs 1] [--label NAME]\n"
               "                   [--threads N] [--block-size 16] [--no-graphs]\n"
               "  MODE: fp, w6a16, w6a8, w6a6, flex (default for an INT6 file), fp16, w8a8.\n"
               "  --prefill 0 skips the prefill measurement; --batches '' skips decode.\n"
               "  --no-graphs runs every step eagerly (cuda; decode steps replay CUDA graphs).\n");
}

static int parse_batches(const char *v, bench_args *a)
{
    a->n_batches = 0;
    const char *p = v;
    while (*p) {
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 1 || b > 4096 || a->n_batches == MAX_BATCH || (*end && *end != ',')) {
            fprintf(stderr, "%s: --batches must be up to %d sizes in 1..4096, got '%s'\n", TOOL,
                    MAX_BATCH, v);
            return -1;
        }
        a->batches[a->n_batches++] = (int32_t)b;
        p = *end ? end + 1 : end;
    }
    return 0;
}

static int parse_opt(int c, const char *v, bench_args *a)
{
    switch (c) {
    case 'm':
        a->model = v;
        return 0;
    case 'B':
        a->backend = v;
        return 0;
    case 'l':
        a->label = v;
        return 0;
    case 'M':
        if (rt_mode_parse(v, &a->mode) == 0)
            return 0;
        fprintf(stderr, "%s: unknown --mode '%s' (fp, w6a16, w6a8, w6a6, flex, fp16, w8a8)\n", TOOL,
                v);
        return -1;
    case 'b':
        return parse_batches(v, a);
    case 'p':
        return fq_cli_int(TOOL, "prompt", v, 1, 1 << 20, &a->prompt);
    case 'o':
        return fq_cli_int(TOOL, "output", v, 2, 1 << 20, &a->output);
    case 'P':
        return fq_cli_int(TOOL, "prefill", v, 0, 1 << 20, &a->prefill);
    case 'S':
        return fq_cli_int(TOOL, "prefill-seqs", v, 1, 4096, &a->prefill_seqs);
    case 'j':
        return fq_cli_int(TOOL, "threads", v, 0, 1024, &a->threads);
    case 'k':
        return fq_cli_int(TOOL, "block-size", v, 1, 4096, &a->block_size);
    case 'G':
        a->graphs = false;
        return 0;
    default:
        usage(stderr);
        return -1;
    }
}

/* 0: run; 1: help printed; -1: bad arguments (reported). */
static int parse_args(int argc, char **argv, bench_args *a, bool *mode_given)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"backend", required_argument, 0, 'B'},
                                         {"mode", required_argument, 0, 'M'},
                                         {"batches", required_argument, 0, 'b'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"output", required_argument, 0, 'o'},
                                         {"prefill", required_argument, 0, 'P'},
                                         {"prefill-seqs", required_argument, 0, 'S'},
                                         {"label", required_argument, 0, 'l'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"block-size", required_argument, 0, 'k'},
                                         {"no-graphs", no_argument, 0, 'G'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = (bench_args){.backend = "cpu",
                      .batches = {1, 8, 32, 64},
                      .n_batches = 4,
                      .prompt = 128,
                      .output = 256,
                      .prefill = 2048,
                      .prefill_seqs = 1,
                      .block_size = 16,
                      .graphs = true};
    *mode_given = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == 'M')
            *mode_given = true;
        if (c == '?' || parse_opt(c, optarg, a) != 0)
            return -1;
    }
    if (!a->model || optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* ---- timing ---- */

/* Token times of one run. Prompts are prefilled in chunks of the step size, so with several
 * sequences the first ones start decoding while later ones still prefill: the decode rate counts
 * only the tokens after every sequence has its first token (from then on every step is pure
 * decode). */
typedef struct tok_clock {
    double first, last; /* times of the first and the last generated token */
    double all_first;   /* when the last sequence got its first token */
    int64_t n, n_at_all_first;
    int32_t n_seqs, n_started;
    bool *started; /* [n_seqs] */
} tok_clock;

static int on_token(void *ud, int32_t seq, int32_t token)
{
    tok_clock *tc = ud;
    const double now = fq_now_s();
    if (tc->n++ == 0)
        tc->first = now;
    tc->last = now;
    if (seq >= 0 && seq < tc->n_seqs && !tc->started[seq]) {
        tc->started[seq] = true;
        if (++tc->n_started == tc->n_seqs) {
            tc->all_first = now;
            tc->n_at_all_first = tc->n;
        }
    }
    (void)token;
    return 0;
}

/* Tokens per second of the pure decode steps. */
static double decode_rate(const tok_clock *tc)
{
    const double dt = tc->last - tc->all_first;
    return dt > 0 ? (double)(tc->n - tc->n_at_all_first) / dt : 0.0;
}

/* n_seqs random prompts of len tokens (ids in [n_vocab / 8, n_vocab / 2), clear of the special
 * tokens at the ends of most vocabularies). */
static int32_t **random_prompts(int32_t n_seqs, int32_t len, int32_t n_vocab, uint64_t seed)
{
    int32_t **p = fq_calloc_array((size_t)n_seqs, sizeof *p);
    for (int32_t s = 0; p && s < n_seqs; s++) {
        if (!(p[s] = fq_malloc_array((size_t)len, sizeof **p))) {
            for (int32_t i = 0; i < s; i++)
                free(p[i]);
            free(p);
            return NULL;
        }
        for (int32_t i = 0; i < len; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            p[s][i] = n_vocab / 8 + (int32_t)((seed >> 33) % (uint64_t)(n_vocab / 2 - n_vocab / 8));
        }
    }
    return p;
}

static void free_prompts(int32_t **p, int32_t n)
{
    for (int32_t s = 0; p && s < n; s++)
        free(p[s]);
    free(p);
}

/* One greedy run of n_seqs prompts of len tokens for out tokens; the token clock filled. */
static int run_once(rt_runner *r, const rt_model *m, int32_t n_seqs, int32_t len, int32_t out,
                    tok_clock *tc, double *t_start, char *err, size_t err_len)
{
    int32_t **prompts = random_prompts(n_seqs, len, m->cfg.n_vocab, 0x5EEDull + (uint64_t)n_seqs);
    int32_t *lens = fq_malloc_array((size_t)n_seqs, sizeof *lens);
    int32_t *toks = fq_malloc_array((size_t)n_seqs * (size_t)out, sizeof *toks);
    int32_t *n_out = fq_malloc_array((size_t)n_seqs, sizeof *n_out);
    int rc =
        prompts && lens && toks && n_out ? 0 : fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    for (int32_t s = 0; rc == 0 && s < n_seqs; s++)
        lens[s] = len;
    rt_greedy_params gp = rt_greedy_default_params();
    gp.max_new_tokens = out;
    gp.stop_at_eos = false;
    gp.on_token = on_token;
    gp.ud = tc;
    memset(tc, 0, sizeof *tc);
    tc->n_seqs = n_seqs;
    tc->started = fq_calloc_array((size_t)n_seqs, sizeof *tc->started);
    if (!tc->started && rc == 0)
        rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    *t_start = fq_now_s();
    if (rc == 0)
        rc = rt_runner_greedy(r, (const int32_t *const *)prompts, lens, n_seqs, &gp, toks, n_out,
                              NULL, err, err_len);
    free_prompts(prompts, n_seqs);
    free(tc->started);
    tc->started = NULL;
    free(lens);
    free(toks);
    free(n_out);
    return rc;
}

/* steps / graph_steps: the timed decode run's steps and how many replayed a CUDA graph. */
static void print_record(const bench_args *a, const rt_backend_mem *mem, int32_t batch,
                         double decode, double prefill, const rt_backend_stats *st)
{
    printf("{\"model\": \"%s\", \"mode\": \"%s\", \"backend\": \"%s\", \"batch\": %d, "
           "\"prompt\": %d, \"output\": %d, \"decode_tok_s\": %.2f, \"prefill_tok_s\": %.2f, "
           "\"weight_bytes\": %lld, \"linear_bytes\": %lld, \"kv_bytes\": %lld, "
           "\"scratch_bytes\": %lld, \"graphs\": %s, \"steps\": %lld, \"graph_steps\": %lld}\n",
           a->label ? a->label : a->model, rt_mode_name(a->mode), a->backend, batch, a->prompt,
           a->output, decode, prefill, (long long)mem->weight_bytes, (long long)mem->linear_bytes,
           (long long)mem->kv_bytes, (long long)mem->scratch_bytes, a->graphs ? "true" : "false",
           (long long)st->steps, (long long)st->graph_steps);
    fflush(stdout);
}

static int bench(const bench_args *a, const rt_model *m, rt_runner *r, char *err, size_t err_len)
{
    rt_backend_mem mem;
    rt_runner_mem(r, &mem);
    double prefill = 0.0;
    tok_clock tc;
    double t0;
    int rc = 0;
    if (a->prefill > 0) { /* warm-up, then the timed run */
        for (int i = 0; rc == 0 && i < 2; i++)
            rc = run_once(r, m, a->prefill_seqs, a->prefill, 2, &tc, &t0, err, err_len);
        if (rc == 0)
            prefill = (double)a->prefill_seqs * a->prefill / (tc.first - t0);
        fq_log(FQ_LOG_INFO, "prefill %d x %d tokens: %.1f tokens/s", a->prefill_seqs, a->prefill,
               prefill);
    }
    for (int32_t i = 0; rc == 0 && i < a->n_batches; i++) {
        const int32_t b = a->batches[i];
        rt_backend_stats s0, s1;
        rc = run_once(r, m, b, a->prompt, 8, &tc, &t0, err, err_len); /* warm-up */
        rt_runner_stats(r, &s0);
        if (rc == 0)
            rc = run_once(r, m, b, a->prompt, a->output, &tc, &t0, err, err_len);
        if (rc)
            break;
        rt_runner_stats(r, &s1);
        s1.steps -= s0.steps;
        s1.graph_steps -= s0.graph_steps;
        const double decode = decode_rate(&tc);
        fq_log(FQ_LOG_INFO,
               "batch %d: decode %.1f tokens/s (%.2f ms per step, %lld of %lld steps "
               "as graphs)",
               b, decode, 1000.0 * b / decode, (long long)s1.graph_steps, (long long)s1.steps);
        print_record(a, &mem, b, decode, prefill, &s1);
    }
    if (rc == 0 && a->n_batches == 0)
        print_record(a, &mem, 0, 0.0, prefill, &(rt_backend_stats){0});
    return rc;
}

static int run(bench_args *a, bool mode_given, char *err, size_t err_len)
{
    rt_model *m = NULL;
    rt_runner *r = NULL;
    int rc = rt_model_load(a->model, &m, err, err_len);
    if (rc == 0 && !mode_given)
        a->mode = m->file ? RT_MODE_FLEX : RT_MODE_FP;
    if (rc == 0)
        rc = rt_model_prepare_mode(m, a->mode, err, err_len);
    /* KV blocks for the larger of the two workloads (they never run at once) */
    int32_t max_b = 1;
    for (int32_t i = 0; i < a->n_batches; i++)
        max_b = a->batches[i] > max_b ? a->batches[i] : max_b;
    const int64_t bs = a->block_size;
    const int64_t decode_blocks = max_b * (((int64_t)a->prompt + a->output + bs - 1) / bs + 1);
    const int64_t prefill_blocks = a->prefill_seqs * (((int64_t)a->prefill + 2 + bs - 1) / bs + 1);
    const int64_t blocks = decode_blocks > prefill_blocks ? decode_blocks : prefill_blocks;
    rt_backend_params bp = rt_backend_default_params();
    bp.mode = a->mode;
    bp.n_threads = a->threads;
    bp.kv.block_size = a->block_size;
    bp.kv.n_blocks = blocks < INT32_MAX ? (int32_t)blocks : INT32_MAX;
    bp.graphs = a->graphs;
    bp.max_batch_tokens = a->prefill > 512 ? (a->prefill < 2048 ? a->prefill : 2048) : 512;
    if (bp.max_batch_tokens < max_b)
        bp.max_batch_tokens = max_b;
    if (bp.max_batch_tokens < a->prefill_seqs)
        bp.max_batch_tokens = a->prefill_seqs;
    if (rc == 0)
        rc = rt_runner_create(m, a->backend, &bp, &r, err, err_len);
    if (rc == 0)
        rc = bench(a, m, r, err, err_len);
    rt_runner_destroy(r);
    rt_model_destroy(m);
    return rc;
}

int main(int argc, char **argv)
{
    bench_args a;
    bool mode_given;
    int parsed = parse_args(argc, argv, &a, &mode_given);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    char err[1024] = "";
    if (run(&a, mode_given, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", TOOL, err);
        return 1;
    }
    return 0;
}

/* flexq_ppl.c — flexq-ppl: perplexity of a model on a text file, printed as one JSON object.
 *
 * Text handling follows shared/data/README.md: carriage returns are stripped and the non-empty
 * lines are joined with "\n\n"; the whole text is tokenized without BOS, cut into non-overlapping
 * windows of --ctx tokens (an incomplete tail is dropped), and each window is scored on all but its
 * first token. ppl = exp(total negative log-likelihood / scored tokens).
 */
#include "fq_base.h"
#include "rt_model.h"
#include "rt_runner.h"
#include "rt_tokenizer.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ppl_args {
    const char *model, *text, *backend;
    rt_mode mode;
    int32_t ctx, max_windows, batch;
    int threads;
} ppl_args;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: flexq-ppl --model FILE --text FILE [--ctx 2048] [--max-windows W]\n"
        "                 [--mode fp|w6a16|w6a8|w6a6|flex|fp16|w8a8] [--batch 512] [--threads N]\n"
        "                 [--backend cpu|cuda]\n"
        "  FILE: a GGUF file, an HF checkpoint directory or an INT6 model file; the w6*\n"
        "  modes quantize a checkpoint in memory, flex needs an INT6 file (flexq-quant)\n");
}

/* 0: run; 1: help was printed; -1: bad arguments (already reported). */
static int parse_args(int argc, char **argv, ppl_args *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"text", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'},     {"max-windows", required_argument, 0, 'w'},
        {"batch", required_argument, 0, 'b'},   {"threads", required_argument, 0, 'j'},
        {"backend", required_argument, 0, 'B'}, {"mode", required_argument, 0, 'M'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    *a = (ppl_args){.ctx = 2048, .max_windows = 0, .batch = 512, .threads = 0, .backend = "cpu"};
    int c, rc = 0;
    int32_t threads = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 't':
            a->text = optarg;
            break;
        case 'B':
            a->backend = optarg;
            break;
        case 'M':
            if (rt_mode_parse(optarg, &a->mode) != 0) {
                fprintf(
                    stderr,
                    "flexq-ppl: unknown --mode '%s' (fp, w6a16, w6a8, w6a6, flex, fp16, w8a8)\n",
                    optarg);
                rc = -1;
            }
            break;
        case 'c':
            rc = fq_cli_int("flexq-ppl", "ctx", optarg, 2, 1 << 20, &a->ctx);
            break;
        case 'w':
            rc = fq_cli_int("flexq-ppl", "max-windows", optarg, 0, INT32_MAX, &a->max_windows);
            break;
        case 'b':
            rc = fq_cli_int("flexq-ppl", "batch", optarg, 1, 1 << 16, &a->batch);
            break;
        case 'j':
            rc = fq_cli_int("flexq-ppl", "threads", optarg, 0, 1024, &threads);
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    a->threads = threads;
    if (rc == 0 && (!a->model || !a->text || optind != argc)) {
        usage(stderr);
        return -1;
    }
    return rc;
}

/* Strips '\r' and joins the non-empty lines with "\n\n"; returns a malloc'd string. */
static char *join_rows(const char *raw, size_t len, size_t *out_len)
{
    char *out = malloc(2 * len + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t start = 0; start < len;) {
        const char *nl = memchr(raw + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - raw) : len;
        size_t line_start = n;
        for (size_t i = start; i < end; i++)
            if (raw[i] != '\r')
                out[n++] = raw[i];
        if (n > line_start && line_start > 0) { /* a non-empty line after another: separate */
            memmove(out + line_start + 2, out + line_start, n - line_start);
            out[line_start] = out[line_start + 1] = '\n';
            n += 2;
        }
        start = end + 1;
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

static int tokenize_text(const rt_model *m, const char *path, int32_t **ids, size_t *n_ids,
                         char *err, size_t err_len)
{
    char *raw = NULL, *text = NULL;
    size_t raw_len = 0, text_len = 0;
    int rc = fq_read_file(path, &raw, &raw_len, err, err_len);
    if (rc)
        return rc;
    text = join_rows(raw, raw_len, &text_len);
    free(raw);
    if (!text)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    rt_encode_params ep = rt_encode_default_params();
    ep.add_special = false;
    rc = rt_tokenizer_encode(m->tok, text, text_len, &ep, ids, n_ids, err, err_len);
    free(text);
    return rc;
}

static int print_result(const ppl_args *a, double nll, int64_t scored, int32_t windows,
                        size_t text_tokens, double seconds)
{
    json_t *o = json_pack("{s:f, s:I, s:i, s:i, s:s, s:s, s:I, s:f, s:f, s:f, s:s, s:s}", "ppl",
                          exp(nll / (double)scored), "tokens", (json_int_t)scored, "windows",
                          windows, "ctx", a->ctx, "mode", rt_mode_name(a->mode), "backend",
                          a->backend, "text_tokens", (json_int_t)text_tokens, "nll", nll, "seconds",
                          seconds, "tokens_per_s", (double)windows * a->ctx / seconds, "joining",
                          "CR stripped, non-empty lines joined with \"\\n\\n\"", "model", a->model);
    if (!o)
        return -1;
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!s)
        return -1;
    printf("%s\n", s);
    free(s);
    return 0;
}

static void log_window(void *ud, int32_t w, int32_t n, double nll)
{
    (void)ud;
    fq_log(FQ_LOG_INFO, "window %d/%d: nll %.4f", w + 1, n, nll);
}

static int run(const ppl_args *a, char *err, size_t err_len)
{
    rt_model *m = NULL;
    rt_runner *r = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = rt_model_load(a->model, &m, err, err_len);
    if (rc == 0)
        rc = rt_model_prepare_mode(m, a->mode, err, err_len);
    if (rc == 0)
        rc = tokenize_text(m, a->text, &ids, &n_ids, err, err_len);
    if (rc == 0) {
        rt_backend_params bp = rt_backend_default_params();
        bp.n_threads = a->threads;
        bp.mode = a->mode;
        bp.max_batch_tokens = a->batch;
        bp.kv.n_blocks = (a->ctx + bp.kv.block_size - 1) / bp.kv.block_size;
        rc = rt_runner_create(m, a->backend, &bp, &r, err, err_len);
    }
    double nll = 0.0, t0 = fq_now_s();
    int64_t scored = 0;
    int32_t windows = 0;
    if (rc == 0)
        rc = rt_runner_ppl(r, ids, n_ids, a->ctx, a->max_windows, log_window, NULL, &nll, &scored,
                           &windows, err, err_len);
    if (rc == 0 && print_result(a, nll, scored, windows, n_ids, fq_now_s() - t0) != 0)
        rc = fq_err(err, err_len, FQ_ENOMEM, "could not format the result");
    free(ids);
    rt_runner_destroy(r);
    rt_model_destroy(m);
    return rc;
}

int main(int argc, char **argv)
{
    ppl_args a;
    int parsed = parse_args(argc, argv, &a);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    char err[1024] = "";
    if (run(&a, err, sizeof err) != 0) {
        fprintf(stderr, "flexq-ppl: %s\n", err);
        return 1;
    }
    return 0;
}

/* flexq_generate.c — flexq-generate: greedy text generation from a model on the command line.
 *
 * One --prompt streams its continuation to stdout as it is generated; several --prompt options are
 * decoded together in one batch and printed one after another. Timing goes to stderr.
 */
#include "fq_base.h"
#include "rt_model.h"
#include "rt_runner.h"
#include "rt_tokenizer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROMPTS 64

typedef struct gen_args {
    const char *model, *backend;
    const char *prompts[MAX_PROMPTS];
    int32_t n_prompts, max_tokens;
    int32_t threads;
    bool ignore_eos;
    rt_mode mode;
} gen_args;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: flexq-generate --model FILE --prompt TEXT [--prompt TEXT ...]\n"
        "                      [--max-tokens 64] [--ignore-eos] [--threads N]\n"
        "                      [--mode fp|w6a16|w6a8|w6a6|flex|fp16|w8a8] [--backend cpu|cuda]\n");
}

/* 0: run; 1: help was printed; -1: bad arguments (already reported). */
static int parse_args(int argc, char **argv, gen_args *a)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"max-tokens", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"backend", required_argument, 0, 'B'},
                                         {"ignore-eos", no_argument, 0, 'e'},
                                         {"mode", required_argument, 0, 'M'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = (gen_args){.max_tokens = 64, .backend = "cpu"};
    int c, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 'B':
            a->backend = optarg;
            break;
        case 'M':
            if (rt_mode_parse(optarg, &a->mode) != 0) {
                fprintf(stderr,
                        "flexq-generate: unknown --mode '%s' (fp, w6a16, w6a8, w6a6, flex, fp16, "
                        "w8a8)\n",
                        optarg);
                rc = -1;
            }
            break;
        case 'e':
            a->ignore_eos = true;
            break;
        case 'n':
            rc = fq_cli_int("flexq-generate", "max-tokens", optarg, 1, 1 << 20, &a->max_tokens);
            break;
        case 'j':
            rc = fq_cli_int("flexq-generate", "threads", optarg, 0, 1024, &a->threads);
            break;
        case 'p':
            if (a->n_prompts == MAX_PROMPTS) {
                fprintf(stderr, "flexq-generate: at most %d prompts\n", MAX_PROMPTS);
                return -1;
            }
            a->prompts[a->n_prompts++] = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (rc == 0 && (!a->model || a->n_prompts == 0 || optind != argc)) {
        usage(stderr);
        return -1;
    }
    return rc;
}

/* Streams one sequence's tokens, holding back a UTF-8 character split across tokens. */
typedef struct stream_state {
    const rt_tokenizer *tok;
    char pending[16];
    size_t n_pending;
} stream_state;

static size_t utf8_complete_prefix(const char *s, size_t n)
{
    size_t i = n;
    /* find the start of the last character and check whether all its bytes are there */
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return n;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return n - (i - 1) >= need ? n : i - 1;
}

static int on_token(void *ud, int32_t seq, int32_t token)
{
    stream_state *st = ud;
    char buf[256];
    int len = rt_tokenizer_token_bytes(st->tok, token, buf, sizeof buf);
    if (len < 0 || (size_t)len > sizeof buf || rt_tokenizer_is_special(st->tok, token))
        return 0;
    char out[sizeof buf + sizeof st->pending];
    memcpy(out, st->pending, st->n_pending);
    memcpy(out + st->n_pending, buf, (size_t)len);
    size_t n = st->n_pending + (size_t)len;
    size_t ok = utf8_complete_prefix(out, n);
    if (n - ok >= sizeof st->pending)
        ok = n; /* not UTF-8 after all: let the bytes through */
    fwrite(out, 1, ok, stdout);
    fflush(stdout);
    st->n_pending = n - ok;
    memcpy(st->pending, out + ok, st->n_pending);
    (void)seq;
    return 0;
}

static int print_batch(const rt_model *m, const gen_args *a, const int32_t *out,
                       const int32_t *n_out, char *err, size_t err_len)
{
    for (int32_t s = 0; s < a->n_prompts; s++) {
        char *text = NULL;
        size_t len = 0;
        int rc = rt_tokenizer_decode(m->tok, out + (int64_t)s * a->max_tokens, (size_t)n_out[s],
                                     true, &text, &len, err, err_len);
        if (rc)
            return rc;
        printf("--- prompt %d ---\n%s%s\n", s + 1, a->prompts[s], text);
        free(text);
    }
    return 0;
}

static int generate(const rt_model *m, rt_runner *r, const gen_args *a, int32_t **ids,
                    int32_t *n_ids, char *err, size_t err_len)
{
    int32_t *out = fq_malloc_array((size_t)a->n_prompts * (size_t)a->max_tokens, sizeof *out);
    int32_t n_out[MAX_PROMPTS] = {0};
    if (!out)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    stream_state st = {.tok = m->tok};
    rt_greedy_params gp = rt_greedy_default_params();
    gp.max_new_tokens = a->max_tokens;
    gp.stop_at_eos = !a->ignore_eos;
    if (a->n_prompts == 1) {
        gp.on_token = on_token;
        gp.ud = &st;
        fputs(a->prompts[0], stdout);
    }
    double t0 = fq_now_s();
    int rc = rt_runner_greedy(r, (const int32_t *const *)ids, n_ids, a->n_prompts, &gp, out, n_out,
                              NULL, err, err_len);
    double dt = fq_now_s() - t0;
    if (rc == 0 && a->n_prompts == 1)
        printf("%.*s\n", (int)st.n_pending, st.pending);
    else if (rc == 0)
        rc = print_batch(m, a, out, n_out, err, err_len);
    fflush(stdout);
    int64_t total = 0;
    for (int32_t s = 0; s < a->n_prompts; s++)
        total += n_out[s];
    if (rc == 0)
        fq_log(FQ_LOG_INFO, "%d sequence(s), %lld tokens generated in %.2f s (%.1f tokens/s)",
               a->n_prompts, (long long)total, dt, (double)total / dt);
    free(out);
    return rc;
}

static int run(const gen_args *a, char *err, size_t err_len)
{
    rt_model *m = NULL;
    rt_runner *r = NULL;
    int32_t *ids[MAX_PROMPTS] = {0};
    int32_t n_ids[MAX_PROMPTS] = {0};
    int rc = rt_model_load(a->model, &m, err, err_len);
    if (rc == 0)
        rc = rt_model_prepare_mode(m, a->mode, err, err_len);
    int64_t total = 0;
    rt_encode_params ep = rt_encode_default_params();
    for (int32_t s = 0; rc == 0 && s < a->n_prompts; s++) {
        size_t n = 0;
        rc = rt_tokenizer_encode(m->tok, a->prompts[s], strlen(a->prompts[s]), &ep, &ids[s], &n,
                                 err, err_len);
        n_ids[s] = (int32_t)n;
        total += (int64_t)n + a->max_tokens;
        if (rc == 0 && n == 0)
            rc = fq_err(err, err_len, FQ_EINVAL, "prompt %d encodes to no tokens", s + 1);
    }
    if (rc == 0) {
        rt_backend_params bp = rt_backend_default_params();
        bp.n_threads = a->threads;
        bp.mode = a->mode;
        bp.kv.n_blocks = (int32_t)(total / bp.kv.block_size + a->n_prompts + 1);
        rc = rt_runner_create(m, a->backend, &bp, &r, err, err_len);
    }
    if (rc == 0)
        rc = generate(m, r, a, ids, n_ids, err, err_len);
    for (int32_t s = 0; s < a->n_prompts; s++)
        free(ids[s]);
    rt_runner_destroy(r);
    rt_model_destroy(m);
    return rc;
}

int main(int argc, char **argv)
{
    gen_args a;
    int parsed = parse_args(argc, argv, &a);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    char err[1024] = "";
    if (run(&a, err, sizeof err) != 0) {
        fprintf(stderr, "flexq-generate: %s\n", err);
        return 1;
    }
    return 0;
}

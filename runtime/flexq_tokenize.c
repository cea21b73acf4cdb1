/* flexq_tokenize.c — flexq-tokenize: encode stdin to token ids as JSON, or decode ids back to text.
 *
 *   flexq-tokenize --model FILE [--decode] [--lines] [--no-special] [--pre NAME]
 *
 * Encode (default): reads all of stdin and prints one JSON array of ids. --lines: one array per
 * input line (split on "\n", a trailing "\r" stripped, no line after a final "\n") — the form the
 * HF comparison test reads. --decode: reads a JSON array of ids (with --lines: one per line) and
 * prints the text (with --lines: each followed by "\n"). --no-special: encode special-token text as
 * plain text and add no BOS/EOS; decode drops control tokens. --pre NAME overrides the model's
 * pre-tokenizer (gpt2, smollm, llama3), for comparisons. Errors: one line on stderr, exit 1; bad
 * arguments: usage on stderr, exit 2.
 */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "rt_tokenizer.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cli_args {
    const char *model;
    const char *pre; /* NULL = the model's */
    bool decode;
    bool lines;
    bool no_special;
} cli_args;

static void usage(FILE *f)
{
    fputs("usage: flexq-tokenize --model FILE [--decode] [--lines] [--no-special] [--pre NAME]\n"
          "  reads stdin; encodes it to a JSON array of token ids, or with --decode reads a JSON\n"
          "  array of ids and prints the text\n"
          "  --lines       one JSON array per input line (\"\\n\" split, trailing \"\\r\" "
          "stripped)\n"
          "  --no-special  encode special-token text as plain text, add no BOS/EOS; decode drops\n"
          "                control tokens\n"
          "  --pre NAME    override the pre-tokenizer: gpt2, smollm, llama3\n",
          f);
}

/* Returns 0 to go on, 1 after printing the help (exit 0), or 2 after printing usage (exit 2). */
static int parse_args(int argc, char **argv, cli_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--model") == 0 && i + 1 < argc)
            a->model = argv[++i];
        else if (strcmp(s, "--pre") == 0 && i + 1 < argc)
            a->pre = argv[++i];
        else if (strcmp(s, "--decode") == 0)
            a->decode = true;
        else if (strcmp(s, "--lines") == 0)
            a->lines = true;
        else if (strcmp(s, "--no-special") == 0)
            a->no_special = true;
        else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "flexq-tokenize: unknown or incomplete argument '%s'\n", s);
            usage(stderr);
            return 2;
        }
    }
    if (!a->model) {
        fputs("flexq-tokenize: --model FILE is required\n", stderr);
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Reads all of stdin into a malloc'd buffer (NUL-terminated; *len excludes the NUL). */
static int read_stdin(char **out, size_t *len, char *err, size_t err_len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    for (;;) {
        if (cap - n < 2) {
            char *p = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                free(buf);
                return fq_err(err, err_len, FQ_ENOMEM, "out of memory reading stdin");
            }
            buf = p;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, stdin);
        n += k;
        if (k == 0)
            break;
    }
    if (ferror(stdin)) {
        free(buf);
        return fq_err(err, err_len, FQ_EIO, "cannot read stdin");
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static int load_tokenizer(const cli_args *a, rt_tokenizer **tok, char *err, size_t err_len)
{
    fq_tok_spec spec;
    int rc = fq_ckpt_load_tokenizer(a->model, &spec, err, err_len);
    if (rc != 0)
        return rc;
    if (a->pre)
        snprintf(spec.pre, sizeof spec.pre, "%s", a->pre);
    rc = rt_tokenizer_create(&spec, tok, err, err_len);
    fq_tok_spec_free(&spec);
    return rc;
}

static void print_ids(const int32_t *ids, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", (int)ids[i]);
    fputs("]\n", stdout);
}

static int encode_one(const rt_tokenizer *tok, const cli_args *a, const char *text, size_t len,
                      char *err, size_t err_len)
{
    rt_encode_params p = rt_encode_default_params();
    p.add_special = p.parse_special = !a->no_special;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = rt_tokenizer_encode(tok, text, len, &p, &ids, &n, err, err_len);
    if (rc != 0)
        return rc;
    print_ids(ids, n);
    free(ids);
    return 0;
}

/* Parses a JSON array of token ids into a malloc'd array. */
static int parse_ids(const char *text, size_t len, int32_t **ids, size_t *n, char *err,
                     size_t err_len)
{
    json_error_t jerr;
    json_t *arr = json_loadb(text, len, 0, &jerr);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        return fq_err(err, err_len, FQ_EINVAL, "input is not a JSON array of ids%s%s",
                      arr ? "" : ": ", arr ? "" : jerr.text);
    }
    size_t count = json_array_size(arr);
    int32_t *v = fq_malloc_array(count ? count : 1, sizeof(int32_t));
    if (!v) {
        json_decref(arr);
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < count; i++) {
        json_t *x = json_array_get(arr, i);
        json_int_t val = json_is_integer(x) ? json_integer_value(x) : -1;
        if (!json_is_integer(x) || val < INT32_MIN || val > INT32_MAX) {
            free(v);
            json_decref(arr);
            return fq_err(err, err_len, FQ_EINVAL, "element %zu is not a 32-bit integer", i);
        }
        v[i] = (int32_t)val;
    }
    json_decref(arr);
    *ids = v;
    *n = count;
    return 0;
}

static int decode_one(const rt_tokenizer *tok, const cli_args *a, const char *text, size_t len,
                      char *err, size_t err_len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = parse_ids(text, len, &ids, &n, err, err_len);
    if (rc != 0)
        return rc;
    char *out;
    size_t out_len;
    rc = rt_tokenizer_decode(tok, ids, n, a->no_special, &out, &out_len, err, err_len);
    free(ids);
    if (rc != 0)
        return rc;
    fwrite(out, 1, out_len, stdout);
    if (a->lines)
        putchar('\n');
    free(out);
    return 0;
}

/* Runs encode or decode on the whole input or on each line. */
static int run(const rt_tokenizer *tok, const cli_args *a, const char *in, size_t len, char *err,
               size_t err_len)
{
    int (*one)(const rt_tokenizer *, const cli_args *, const char *, size_t, char *, size_t) =
        a->decode ? decode_one : encode_one;
    if (!a->lines)
        return one(tok, a, in, len, err, err_len);
    size_t start = 0, line_no = 1;
    while (start < len) {
        const char *nl = memchr(in + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - in) : len;
        size_t stop = end > start && in[end - 1] == '\r' ? end - 1 : end;
        int rc = one(tok, a, in + start, stop - start, err, err_len);
        if (rc != 0) {
            fq_err_prefix(err, err_len, "line %zu: ", line_no);
            return rc;
        }
        start = end + 1;
        line_no++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cli_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    char err[512] = "";
    rt_tokenizer *tok = NULL;
    char *in = NULL;
    size_t len = 0;
    rc = load_tokenizer(&a, &tok, err, sizeof err);
    if (rc == 0)
        rc = read_stdin(&in, &len, err, sizeof err);
    if (rc == 0)
        rc = run(tok, &a, in, len, err, sizeof err);
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout)))
        rc = fq_err(err, sizeof err, FQ_EIO, "cannot write stdout");
    free(in);
    rt_tokenizer_destroy(tok);
    if (rc != 0) {
        fprintf(stderr, "flexq-tokenize: %s\n", err);
        return 1;
    }
    return 0;
}

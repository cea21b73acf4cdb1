/* flexq_quant.c — flexq-quant: a checkpoint to a FlexQ INT6 model file, with the sensitivity
 * analysis that picks each linear's activation bits, a progress display and a JSON report.
 *
 * Steps: load the checkpoint (GGUF or HF directory) → quantize the weights of every decoder linear
 * to INT6 (fq_weight.h) → choose activation bits (--abits 8 or 6 for all, or flex: the analysis of
 * rt_sensitivity.h on the calibration text) → write the model file (fq_modelfile.h) → summary on
 * stderr, report to --report. The default calibration text is Debian's fortunes "literature" file
 * (quotations from literature; not WikiText, which is the evaluation text).
 */
#include "fq_base.h"
#include "fq_hash.h"
#include "fq_modelfile.h"
#include "fq_synth.h"
#include "fq_weight.h"
#include "rt_model.h"
#include "rt_sensitivity.h"
#include "rt_tokenizer.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOOL               "flexq-quant"
#define DEFAULT_CALIB      "/usr/share/games/fortunes/literature"
#define DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf" /* scripts/fetch-model.sh */

typedef enum { ABITS_FLEX, ABITS_6, ABITS_8 } abits_mode;

typedef struct quant_args {
    const char *in, *out, *calib, *report;
    const char *synthetic; /* preset name: write a synthetic model instead of quantizing --in */
    const char *tokenizer; /* synthetic: the checkpoint whose tokenizer it gets */
    int32_t layers;        /* synthetic: 0 = the preset's */
    int32_t seed;          /* synthetic */
    int32_t group;         /* 0 = auto */
    abits_mode abits;
    rt_sens_params sens;
    int32_t threads;
} quant_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flexq-quant --in CHECKPOINT --out MODEL.fq6.safetensors\n"
            "                   [--group-size auto|128|64|32] [--abits flex|6|8]\n"
            "                   [--calib TEXTFILE] [--report REPORT.json] [--threads N]\n"
            "                   [--calib-ctx 512] [--calib-windows 4] [--per-linear]\n"
            "                   [--budget PCT]\n"
            "       flexq-quant --synthetic PRESET --out MODEL.fq6.safetensors [--dtype int6]\n"
            "                   [--tokenizer CHECKPOINT] [--layers N] [--seed S] [--threads N]\n"
            "  CHECKPOINT: a GGUF file or an HF safetensors directory.\n"
            "  --abits flex runs the sensitivity analysis on the calibration text (default\n"
            "  %s): the most sensitive linear type keeps 8-bit activations,\n"
            "  or, with --budget PCT, every type (every linear with --per-linear) whose\n"
            "  perplexity increase at A6 exceeds PCT %% of the all-A8 perplexity.\n"
            "  --synthetic writes random INT6 weights of a real model's shapes (%s),\n"
            "  for speed measurements only, with the tokenizer of --tokenizer (default: the\n"
            "  default model, %s). The fp16 and w8a8 engine modes derive\n"
            "  their weights from such a file at load, so --dtype is int6 only.\n",
            DEFAULT_CALIB, fq_synth_presets(), "$FLEXQ_CACHE/" DEFAULT_MODEL_FILE);
}

static int parse_choice(const char *name, const char *v, const char *const *choices, int n,
                        int *out)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v, choices[i]) == 0) {
            *out = i;
            return 0;
        }
    fprintf(stderr, "flexq-quant: --%s must be one of", name);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %s", choices[i]);
    fprintf(stderr, ", got '%s'\n", v);
    return -1;
}

static int parse_opt(int c, const char *v, quant_args *a)
{
    static const char *const groups[] = {"auto", "128", "64", "32"};
    static const char *const bits[] = {"flex", "6", "8"};
    static const int32_t group_of[] = {0, 128, 64, 32};
    int i = 0, rc = 0;
    switch (c) {
    case 'i':
        a->in = v;
        break;
    case 'o':
        a->out = v;
        break;
    case 'c':
        a->calib = v;
        break;
    case 'r':
        a->report = v;
        break;
    case 'p':
        a->sens.per_linear = true;
        break;
    case 'g':
        if ((rc = parse_choice("group-size", v, groups, 4, &i)) == 0)
            a->group = group_of[i];
        break;
    case 'a':
        if ((rc = parse_choice("abits", v, bits, 3, &i)) == 0)
            a->abits = (abits_mode)i;
        break;
    case 'j':
        rc = fq_cli_int(TOOL, "threads", v, 0, 1024, &a->threads);
        break;
    case 'x':
        rc = fq_cli_int(TOOL, "calib-ctx", v, 16, 1 << 20, &a->sens.ctx);
        break;
    case 'w':
        rc = fq_cli_int(TOOL, "calib-windows", v, 0, 1 << 20, &a->sens.max_windows);
        break;
    case 'b':
        rc = fq_cli_double(TOOL, "budget", v, 0, 1000, &a->sens.budget_pct);
        break;
    case 'S':
        a->synthetic = v;
        break;
    case 'T':
        a->tokenizer = v;
        break;
    case 'L':
        rc = fq_cli_int(TOOL, "layers", v, 1, 1024, &a->layers);
        break;
    case 's':
        rc = fq_cli_int(TOOL, "seed", v, 0, INT32_MAX, &a->seed);
        break;
    case 'd':
        if (strcmp(v, "int6") != 0) {
            fprintf(stderr,
                    "flexq-quant: --dtype %s: synthetic models are written as int6 only (the "
                    "fp16 and w8a8 engine modes derive their weights from it at load)\n",
                    v);
            rc = -1;
        }
        break;
    default:
        return -1;
    }
    return rc;
}

/* 0: run; 1: help printed; -1: bad arguments (reported). */
static int parse_args(int argc, char **argv, quant_args *a)
{
    static const struct option opts[] = {{"in", required_argument, 0, 'i'},
                                         {"out", required_argument, 0, 'o'},
                                         {"group-size", required_argument, 0, 'g'},
                                         {"abits", required_argument, 0, 'a'},
                                         {"calib", required_argument, 0, 'c'},
                                         {"report", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"calib-ctx", required_argument, 0, 'x'},
                                         {"calib-windows", required_argument, 0, 'w'},
                                         {"per-linear", no_argument, 0, 'p'},
                                         {"budget", required_argument, 0, 'b'},
                                         {"synthetic", required_argument, 0, 'S'},
                                         {"tokenizer", required_argument, 0, 'T'},
                                         {"layers", required_argument, 0, 'L'},
                                         {"seed", required_argument, 0, 's'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = (quant_args){.calib = DEFAULT_CALIB, .abits = ABITS_FLEX, .seed = 1};
    a->sens = rt_sens_default_params();
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == '?' || parse_opt(c, optarg, a) != 0) {
            if (c == '?')
                usage(stderr);
            return -1;
        }
    }
    if ((a->synthetic ? a->in != NULL : !a->in) || !a->out || optind != argc) {
        if (a->synthetic && a->in)
            fprintf(stderr, "flexq-quant: --synthetic and --in exclude each other\n");
        usage(stderr);
        return -1;
    }
    a->sens.n_threads = a->threads;
    return 0;
}

/* ---- progress: a bar on a terminal, plain lines otherwise ---- */

typedef struct progress {
    const char *what;
    double t0;
    bool tty;
    int64_t last_decile; /* plain lines: one per tenth of the work */
} progress;

static void progress_show(progress *pr, int64_t done, int64_t total, const char *name)
{
    double el = fq_now_s() - pr->t0;
    double eta = done > 0 ? el / (double)done * (double)(total - done) : 0;
    if (pr->tty) {
        int width = 30, fill = (int)(width * done / (total ? total : 1));
        fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %-20.20s ETA %4.0fs", pr->what, fill,
                "##############################", width - fill, "", (long long)done,
                (long long)total, name, eta);
        if (done == total)
            fputc('\n', stderr);
        return;
    }
    int64_t decile = total > 0 ? done * 10 / total : 10;
    if (decile == pr->last_decile && total > 10)
        return;
    pr->last_decile = decile;
    fprintf(stderr, "%s %lld/%lld %s (%.1fs elapsed, ETA %.0fs)\n", pr->what, (long long)done,
            (long long)total, name, el, eta);
}

static void on_quant(void *ud, int64_t done, int64_t total, const char *name)
{
    progress_show(ud, done, total, name);
}

static void on_sens(void *ud, int32_t done, int32_t total, const char *label)
{
    progress_show(ud, done, total, label);
}

/* ---- the steps ---- */

static int calib_tokens(const rt_model *m, const char *path, int32_t **ids, size_t *n, char *err,
                        size_t err_len)
{
    char *text = NULL;
    size_t len = 0;
    int rc = fq_read_file(path, &text, &len, err, err_len);
    if (rc) {
        if (strcmp(path, DEFAULT_CALIB) == 0)
            fq_err_prefix(err, err_len,
                          "default calibration text (Debian package fortunes; or "
                          "pass --calib FILE): ");
        return rc;
    }
    rt_encode_params ep = rt_encode_default_params();
    ep.add_special = false;
    ep.parse_special = false;
    rc = rt_tokenizer_encode(m->tok, text, len, &ep, ids, n, err, err_len);
    free(text);
    return rc;
}

static void set_all_abits(fq_qmodel *qm, const int32_t *abits, int32_t bits)
{
    for (int64_t i = 0; i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++)
        qm->lin[i].abits = abits ? abits[i] : bits;
}

static int choose_abits(rt_model *m, quant_args *a, char **sens_json, char *err, size_t err_len)
{
    fq_qmodel *qm = m->qmodel;
    if (a->abits != ABITS_FLEX) {
        set_all_abits(qm, NULL, a->abits == ABITS_6 ? 6 : 8);
        return 0;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = calib_tokens(m, a->calib, &ids, &n, err, err_len);
    rt_sens_result res;
    progress pr = {.what = "sensitivity", .t0 = fq_now_s(), .tty = isatty(2), .last_decile = -1};
    a->sens.tokens = ids;
    a->sens.n_tokens = n;
    a->sens.progress = on_sens;
    a->sens.ud = &pr;
    if (rc == 0)
        rc = rt_sensitivity_run(m, &a->sens, &res, err, err_len);
    if (rc == 0) {
        set_all_abits(qm, res.abits, 0);
        *sens_json = rt_sens_result_json(&res, &a->sens);
        for (int32_t u = 0; u < res.n_units && !a->sens.per_linear; u++)
            fprintf(stderr, "  %-12s A6 ppl %9.4f  (+%.4f, %+.3f%%)  -> %s\n", res.units[u].name,
                    res.units[u].ppl, res.units[u].delta, 100 * res.units[u].delta / res.ppl_a8,
                    res.units[u].keep_a8 ? "A8" : "A6");
        fprintf(stderr, "  calibration ppl: all A8 %.4f, all A6 %.4f, decision %.4f\n", res.ppl_a8,
                res.ppl_a6, res.ppl_flex);
        rt_sens_result_free(&res);
        if (!*sens_json)
            rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory formatting the analysis");
    }
    free(ids);
    return rc;
}

typedef struct quant_stats {
    int64_t weights, bytes, file_bytes;
    int32_t n_a8, n_a6;
    double t_quant, t_sens, t_total;
    char sha[65];
} quant_stats;

static void count(const fq_qmodel *qm, quant_stats *st)
{
    for (int64_t i = 0; i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++) {
        const fq_qlinear *q = &qm->lin[i];
        st->weights += q->n_out * q->n_in;
        st->bytes += q->n_out * (q->row_bytes + q->n_in / q->group * 2);
        *(q->abits == 8 ? &st->n_a8 : &st->n_a6) += 1;
    }
}

static int write_report(const quant_args *a, const rt_model *m, const quant_stats *st,
                        const char *sens_json, char *err, size_t err_len)
{
    json_t *abits = json_object();
    const fq_qmodel *qm = m->qmodel;
    for (int64_t i = 0; i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)(i / FQ_LIN_COUNT),
                 fq_lin_name((fq_lin_type)(i % FQ_LIN_COUNT)));
        json_object_set_new(abits, name, json_integer(qm->lin[i].abits));
    }
    json_t *sens = sens_json ? json_loads(sens_json, 0, NULL) : json_null();
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:f, s:I, s:I, s:I, s:i, s:i, s:f, s:f, s:f, s:s?, s:o, s:o}",
        "source", a->in, "source_sha256", st->sha, "out", a->out, "group_request",
        a->group ? (a->group == 128  ? "128"
                    : a->group == 64 ? "64"
                                     : "32")
                 : "auto",
        "group_size_first", (int)qm->lin[0].group, "bits_per_weight",
        8.0 * (double)st->bytes / (double)st->weights, "linear_weights", (json_int_t)st->weights,
        "linear_bytes", (json_int_t)st->bytes, "file_bytes", (json_int_t)st->file_bytes,
        "linears_a8", st->n_a8, "linears_a6", st->n_a6, "seconds_quantize", st->t_quant,
        "seconds_sensitivity", st->t_sens, "seconds_total", st->t_total, "calibration",
        a->abits == ABITS_FLEX ? a->calib : NULL, "sensitivity", sens ? sens : json_null(), "abits",
        abits);
    int rc = o && json_dump_file(o, a->report, JSON_INDENT(1) | JSON_REAL_PRECISION(8)) == 0
                 ? 0
                 : fq_err(err, err_len, FQ_EIO, "%s: cannot write the report", a->report);
    json_decref(o);
    return rc;
}

static int quantize(quant_args *a, rt_model *m, quant_stats *st, char **sens_json, char *err,
                    size_t err_len)
{
    double t0 = fq_now_s();
    progress pr = {.what = "quantize", .t0 = t0, .tty = isatty(2), .last_decile = -1};
    int rc = rt_model_quantize(m, a->group, on_quant, &pr, err, err_len);
    st->t_quant = fq_now_s() - t0;
    if (rc == 0)
        rc = choose_abits(m, a, sens_json, err, err_len);
    st->t_sens = fq_now_s() - t0 - st->t_quant;
    if (rc == 0)
        rc = fq_sha256_path(a->in, st->sha, err, err_len);
    fq_modelfile_params mp = fq_modelfile_default_params();
    mp.sensitivity_json = *sens_json;
    mp.source_sha256 = st->sha;
    mp.calib_desc = a->abits == ABITS_FLEX ? a->calib : NULL;
    if (rc == 0)
        rc = fq_modelfile_write(a->out, m->ck, m->qmodel, &mp, err, err_len);
    struct stat sb;
    st->file_bytes = rc == 0 && stat(a->out, &sb) == 0 ? (int64_t)sb.st_size : 0;
    return rc;
}

static int run(quant_args *a, char *err, size_t err_len)
{
    double t0 = fq_now_s();
    rt_model *m = NULL;
    char *sens_json = NULL;
    quant_stats st = {0};
    int rc = rt_model_load(a->in, &m, err, err_len);
    if (rc == 0 && !m->ck)
        rc = fq_err(err, err_len, FQ_EINVAL, "%s: already an INT6 model file", a->in);
    if (rc == 0)
        rc = quantize(a, m, &st, &sens_json, err, err_len);
    st.t_total = fq_now_s() - t0;
    if (rc == 0) {
        count(m->qmodel, &st);
        fprintf(stderr,
                "flexq-quant: %s: %d linears (A8 %d, A6 %d), %.3f bits per weight, %.2f MiB, "
                "%.1f s\n",
                a->out, st.n_a8 + st.n_a6, st.n_a8, st.n_a6,
                8.0 * (double)st.bytes / (double)st.weights, (double)st.file_bytes / 1048576.0,
                st.t_total);
    }
    if (rc == 0 && a->report)
        rc = write_report(a, m, &st, sens_json, err, err_len);
    free(sens_json);
    rt_model_destroy(m);
    return rc;
}

/* ---- synthetic models ---- */

/* The default tokenizer source: the default model where scripts/fetch-model.sh puts it. */
static const char *default_tokenizer(char *buf, size_t len)
{
    const char *cache = getenv("FLEXQ_CACHE");
    const char *home = getenv("HOME");
    if (cache && *cache)
        snprintf(buf, len, "%s/%s", cache, DEFAULT_MODEL_FILE);
    else
        snprintf(buf, len, "%s/.cache/flexq/%s", home ? home : "", DEFAULT_MODEL_FILE);
    return buf;
}

static int run_synthetic(const quant_args *a, char *err, size_t err_len)
{
    const double t0 = fq_now_s();
    char def[1024];
    const char *tok_path = a->tokenizer ? a->tokenizer : default_tokenizer(def, sizeof def);
    fq_tok_spec tok;
    memset(&tok, 0, sizeof tok);
    int rc = fq_ckpt_load_tokenizer(tok_path, &tok, err, err_len);
    if (rc) {
        if (!a->tokenizer)
            fq_err_prefix(err, err_len,
                          "default tokenizer (run scripts/fetch-model.sh, or pass "
                          "--tokenizer CHECKPOINT): ");
        return rc;
    }
    fq_synth_params sp = fq_synth_default_params();
    sp.preset = a->synthetic;
    sp.n_layer = a->layers;
    sp.seed = (uint64_t)a->seed;
    sp.n_threads = a->threads;
    fq_ckpt *ck = NULL;
    fq_qmodel *qm = NULL;
    rc = fq_synth_build(&sp, &tok, &ck, &qm, err, err_len);
    if (rc == 0)
        rc = fq_modelfile_write(a->out, ck, qm, NULL, err, err_len);
    if (rc == 0) {
        quant_stats st = {0};
        count(qm, &st);
        struct stat sb;
        fprintf(stderr,
                "flexq-quant: %s: synthetic %s, %d layers, %lld linear weights, %.2f GiB, "
                "%.1f s (random weights: for speed measurements only)\n",
                a->out, a->synthetic, ck->cfg.n_layer, (long long)st.weights,
                stat(a->out, &sb) == 0 ? (double)sb.st_size / 1073741824.0 : 0.0, fq_now_s() - t0);
    }
    fq_qmodel_destroy(qm);
    fq_ckpt_destroy(ck);
    return rc;
}

int main(int argc, char **argv)
{
    quant_args a;
    int parsed = parse_args(argc, argv, &a);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    char err[1024] = "";
    if ((a.synthetic ? run_synthetic(&a, err, sizeof err) : run(&a, err, sizeof err)) != 0) {
        fprintf(stderr, "flexq-quant: %s\n", err);
        return 1;
    }
    return 0;
}

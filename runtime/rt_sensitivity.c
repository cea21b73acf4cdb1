/* rt_sensitivity.c — perplexity per activation-bit assignment on calibration text, and the A8/A6
 * decision FlexQ writes into the model file. */
#include "rt_sensitivity.h"

#include "fq_base.h"
#include "rt_runner.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

rt_sens_params rt_sens_default_params(void)
{
    return (rt_sens_params){.ctx = 512, .max_windows = 4};
}

void rt_sens_result_free(rt_sens_result *r)
{
    if (!r)
        return;
    free(r->units);
    free(r->abits);
    memset(r, 0, sizeof *r);
}

/* Perplexity of the calibration windows with the given per-linear bits. */
static int measure(const rt_model *m, const rt_sens_params *p, const int32_t *abits, double *ppl,
                   int64_t *scored, char *err, size_t err_len)
{
    rt_backend_params bp = rt_backend_default_params();
    bp.mode = RT_MODE_FLEX;
    bp.abits = abits;
    bp.n_threads = p->n_threads;
    bp.kv.n_blocks = (p->ctx + bp.kv.block_size - 1) / bp.kv.block_size;
    rt_runner *r = NULL;
    int rc = rt_runner_create(m, "cpu", &bp, &r, err, err_len);
    double nll = 0.0;
    int32_t windows = 0;
    if (rc == 0)
        rc = rt_runner_ppl(r, p->tokens, p->n_tokens, p->ctx, p->max_windows, NULL, NULL, &nll,
                           scored, &windows, err, err_len);
    rt_runner_destroy(r);
    if (rc == 0)
        *ppl = exp(nll / (double)*scored);
    return rc;
}

static void fill(int32_t *abits, int64_t n, int32_t bits)
{
    for (int64_t i = 0; i < n; i++)
        abits[i] = bits;
}

/* Sets unit u of the analysis to bits: a type across all layers, or one linear. */
static void set_unit(int32_t *abits, const rt_model *m, bool per_linear, int32_t u, int32_t bits)
{
    if (per_linear) {
        abits[u] = bits;
        return;
    }
    for (int32_t l = 0; l < m->cfg.n_layer; l++)
        abits[l * FQ_LIN_COUNT + u] = bits;
}

static void unit_name(bool per_linear, int32_t u, char *buf, size_t len)
{
    if (per_linear)
        snprintf(buf, len, "blk.%d.%s", u / FQ_LIN_COUNT,
                 fq_lin_name((fq_lin_type)(u % FQ_LIN_COUNT)));
    else
        snprintf(buf, len, "%s", fq_lin_name((fq_lin_type)u));
}

/* The decision: A8 for the most sensitive unit, or for every unit over the budget. */
static void decide(rt_sens_result *r, const rt_model *m, const rt_sens_params *p, int64_t n_lin)
{
    fill(r->abits, n_lin, 6);
    int32_t worst = 0;
    for (int32_t u = 0; u < r->n_units; u++) {
        if (r->units[u].delta > r->units[worst].delta)
            worst = u;
        if (p->budget_pct > 0)
            r->units[u].keep_a8 = r->units[u].delta > p->budget_pct / 100.0 * r->ppl_a8;
    }
    if (p->budget_pct <= 0)
        r->units[worst].keep_a8 = true;
    for (int32_t u = 0; u < r->n_units; u++)
        if (r->units[u].keep_a8)
            set_unit(r->abits, m, p->per_linear, u, 8);
}

static void report(const rt_sens_params *p, int32_t done, int32_t total, const char *label)
{
    if (p->progress)
        p->progress(p->ud, done, total, label);
}

static int run_units(const rt_model *m, const rt_sens_params *p, rt_sens_result *r, int32_t *work,
                     int64_t n_lin, char *err, size_t err_len)
{
    int32_t total = r->n_units + 3;
    for (int32_t u = 0; u < r->n_units; u++) {
        rt_sens_unit *su = &r->units[u];
        unit_name(p->per_linear, u, su->name, sizeof su->name);
        fill(work, n_lin, 8);
        set_unit(work, m, p->per_linear, u, 6);
        int rc = measure(m, p, work, &su->ppl, &r->scored, err, err_len);
        if (rc)
            return rc;
        su->delta = su->ppl - r->ppl_a8;
        report(p, u + 2, total, su->name);
    }
    return 0;
}

int rt_sensitivity_run(const rt_model *m, const rt_sens_params *p, rt_sens_result *out, char *err,
                       size_t err_len)
{
    memset(out, 0, sizeof *out);
    if (!rt_model_has_q6(m))
        return fq_err(err, err_len, FQ_EINVAL, "sensitivity analysis needs INT6 weights");
    int64_t n_lin = (int64_t)m->cfg.n_layer * FQ_LIN_COUNT;
    out->n_units = p->per_linear ? (int32_t)n_lin : FQ_LIN_COUNT;
    out->units = fq_calloc_array((size_t)out->n_units, sizeof *out->units);
    out->abits = fq_calloc_array((size_t)n_lin, sizeof *out->abits);
    int32_t *work = fq_calloc_array((size_t)n_lin, sizeof *work);
    int rc =
        out->units && out->abits && work ? 0 : fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    double t0 = fq_now_s();
    int32_t total = out->n_units + 3;
    if (rc == 0) {
        fill(work, n_lin, 8);
        rc = measure(m, p, work, &out->ppl_a8, &out->scored, err, err_len);
        report(p, 1, total, "all A8");
    }
    if (rc == 0)
        rc = run_units(m, p, out, work, n_lin, err, err_len);
    if (rc == 0) {
        fill(work, n_lin, 6);
        rc = measure(m, p, work, &out->ppl_a6, &out->scored, err, err_len);
        report(p, total - 1, total, "all A6");
    }
    if (rc == 0) {
        decide(out, m, p, n_lin);
        rc = measure(m, p, out->abits, &out->ppl_flex, &out->scored, err, err_len);
        report(p, total, total, "decision");
    }
    out->seconds = fq_now_s() - t0;
    free(work);
    if (rc)
        rt_sens_result_free(out);
    return rc;
}

char *rt_sens_result_json(const rt_sens_result *r, const rt_sens_params *p)
{
    json_t *units = json_array();
    for (int32_t u = 0; units && u < r->n_units; u++)
        json_array_append_new(units,
                              json_pack("{s:s, s:f, s:f, s:f, s:s}", "unit", r->units[u].name,
                                        "ppl", r->units[u].ppl, "delta", r->units[u].delta,
                                        "delta_pct", 100.0 * r->units[u].delta / r->ppl_a8, "abits",
                                        r->units[u].keep_a8 ? "A8" : "A6"));
    json_t *o = json_pack("{s:s, s:s, s:f, s:i, s:i, s:I, s:f, s:f, s:f, s:o, s:f}", "method",
                          "perplexity with one unit at A6, the rest at A8", "granularity",
                          p->per_linear ? "linear" : "type", "budget_pct", p->budget_pct, "ctx",
                          p->ctx, "windows", (int)(r->scored / (p->ctx - 1)), "scored_tokens",
                          (json_int_t)r->scored, "ppl_all_a8", r->ppl_a8, "ppl_all_a6", r->ppl_a6,
                          "ppl_decision", r->ppl_flex, "units", units, "seconds", r->seconds);
    char *s = o ? json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(8)) : NULL;
    json_decref(o);
    return s;
}

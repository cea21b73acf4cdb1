/* rt_sensitivity.h — FlexQ's layer-wise sensitivity analysis: which linears keep 8-bit activations.
 *
 * On calibration tokens (never the evaluation text), with the model's INT6 weights: the perplexity
 * with every linear at A8 is the baseline; then, for each unit — a linear type (q, k, v, o, gate,
 * up, down across all layers) or, with per_linear, each individual linear — the perplexity with
 * only that unit at A6 and everything else at A8. The increase over the baseline is the unit's
 * sensitivity. Decision: by default the single most sensitive unit keeps A8 and all others go to
 * A6; with budget_pct > 0, every unit whose increase exceeds budget_pct % of the baseline keeps A8.
 * The all-A6 perplexity is measured too, for the report.
 * Thread safety: runs on the caller's thread (the backend uses its own worker threads).
 */
#ifndef RT_SENSITIVITY_H
#define RT_SENSITIVITY_H

#include "rt_model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_sens_params {
    const int32_t *tokens; /* [n_tokens] calibration tokens, borrowed */
    size_t n_tokens;
    int32_t ctx;         /* window length; default 512 */
    int32_t max_windows; /* windows used; default 4 (0 = all that fit) */
    bool per_linear;     /* one unit per individual linear instead of per type; default false */
    double budget_pct;   /* <= 0: keep A8 for the most sensitive unit only; default 0 */
    int n_threads;       /* CPU threads; 0 = one per core */
    /* called after each perplexity measurement: index, total, label ("baseline", a unit name) */
    void (*progress)(void *ud, int32_t done, int32_t total, const char *label);
    void *ud;
} rt_sens_params;

rt_sens_params rt_sens_default_params(void);

typedef struct rt_sens_unit {
    char name[48]; /* "ffn_down" (type) or "blk.3.ffn_down" (per linear) */
    double ppl;    /* perplexity with only this unit at A6 */
    double delta;  /* ppl - baseline */
    bool keep_a8;  /* the decision */
} rt_sens_unit;

typedef struct rt_sens_result {
    double ppl_a8;   /* every linear at A8 */
    double ppl_a6;   /* every linear at A6 */
    double ppl_flex; /* the decision applied */
    int64_t scored;  /* calibration tokens scored per measurement */
    int32_t n_units;
    rt_sens_unit *units; /* [n_units], owned */
    int32_t *abits;      /* [n_layer * FQ_LIN_COUNT] the decision, owned */
    double seconds;
} rt_sens_result;

/* Runs the analysis on a model that has INT6 weights (rt_model_has_q6). *out is filled and owned by
 * the caller (rt_sens_result_free). */
int rt_sensitivity_run(const rt_model *m, const rt_sens_params *p, rt_sens_result *out, char *err,
                       size_t err_len);

void rt_sens_result_free(rt_sens_result *r);

/* The table and the decision as JSON text (malloc'd, caller frees), or NULL when out of memory. */
char *rt_sens_result_json(const rt_sens_result *r, const rt_sens_params *p);

#endif /* RT_SENSITIVITY_H */

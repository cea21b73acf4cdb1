/* rt_runner.c — chunked prefill, batched greedy decode and perplexity scoring over one backend. */
#include "rt_runner.h"

#include "fq_base.h"
#include "rt_pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct rt_runner {
    const rt_model *m;
    const rt_ops *ops;
    rt_backend *be;
    rt_kv *kv;
    rt_backend_params p;
    float *logits; /* [max_batch_tokens, n_vocab] */
    double *nll;   /* [max_batch_tokens] per-row scores of one chunk */
    rt_pool *pool; /* scores the rows of a chunk in parallel */
};

void rt_runner_mem(const rt_runner *r, rt_backend_mem *out)
{
    memset(out, 0, sizeof *out);
    if (r->ops->mem)
        r->ops->mem(r->be, out);
}

void rt_runner_stats(const rt_runner *r, rt_backend_stats *out)
{
    memset(out, 0, sizeof *out);
    if (r->ops->stats)
        r->ops->stats(r->be, out);
}

rt_greedy_params rt_greedy_default_params(void)
{
    return (rt_greedy_params){.max_new_tokens = 32, .stop_at_eos = true};
}

int rt_model_prepare_mode(rt_model *m, rt_mode mode, char *err, size_t err_len)
{
    if (mode == RT_MODE_FP || rt_model_has_q6(m) || !m->ck)
        return 0; /* anything still missing is reported by the backend */
    return rt_model_quantize(m, 0, NULL, NULL, err, err_len);
}

int rt_runner_create(const rt_model *m, const char *backend, const rt_backend_params *p,
                     rt_runner **out, char *err, size_t err_len)
{
    *out = NULL;
    const rt_ops *ops = rt_backend_find(backend);
    if (!ops)
        return fq_err(err, err_len, FQ_EINVAL, "unknown backend '%s' (this build has: %s)", backend,
                      rt_backend_names());
    rt_runner *r = calloc(1, sizeof *r);
    if (!r)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    r->m = m;
    r->ops = ops;
    r->p = *p;
    int rc = rt_kv_create(&p->kv, &r->kv);
    if (rc == 0)
        rc = ops->create(m, p, &r->be, err, err_len);
    else
        fq_err(err, err_len, rc, "bad KV cache geometry");
    if (rc == 0) {
        r->logits =
            fq_malloc_array((size_t)p->max_batch_tokens * (size_t)m->cfg.n_vocab, sizeof(float));
        r->nll = fq_malloc_array((size_t)p->max_batch_tokens, sizeof(double));
        if (!r->logits || !r->nll || rt_pool_create(p->n_threads, &r->pool) != 0)
            rc = fq_err(err, err_len, FQ_ENOMEM, "out of memory for logits");
    }
    if (rc) {
        rt_runner_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

void rt_runner_destroy(rt_runner *r)
{
    if (!r)
        return;
    if (r->be)
        r->ops->destroy(r->be);
    rt_kv_destroy(r->kv);
    rt_pool_destroy(r->pool);
    free(r->logits);
    free(r->nll);
    free(r);
}

static int reserve(rt_runner *r, rt_kv_seq *seq, int64_t n_tokens, char *err, size_t err_len)
{
    int rc = rt_kv_seq_reserve(r->kv, seq, n_tokens);
    if (rc)
        return fq_err(err, err_len, rc,
                      "KV cache too small: %lld tokens need %d blocks of %d, %d are free",
                      (long long)n_tokens, rt_kv_blocks_for(r->kv, n_tokens),
                      rt_kv_block_size(r->kv), rt_kv_n_free(r->kv));
    return 0;
}

typedef struct gen_seq {
    rt_kv_seq kv;
    int32_t fed;   /* tokens already in the cache */
    int32_t n_gen; /* tokens generated */
    int32_t next;  /* last generated token, fed by the next decode step */
    bool done;
} gen_seq;

/* Adds what each unfinished sequence feeds this step (a prefill chunk or one decode token) to the
 * batch, within the token budget; row_of[s] = index of s in the batch or -1. */
static int32_t build_step(const rt_runner *r, gen_seq *gs, const int32_t *const *prompts,
                          const int32_t *n_prompt, int32_t n_seqs, rt_seq_step *steps,
                          int32_t *row_of)
{
    int32_t budget = r->p.max_batch_tokens, n = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        row_of[s] = -1;
        if (gs[s].done || budget == 0)
            continue;
        rt_seq_step *st = &steps[n];
        if (gs[s].fed < n_prompt[s]) {
            int32_t left = n_prompt[s] - gs[s].fed;
            st->tokens = prompts[s] + gs[s].fed;
            st->n_tokens = rt_prefill_chunk(left, budget, r->p.max_batch_tokens);
            if (st->n_tokens == 0)
                continue;
        } else {
            st->tokens = &gs[s].next;
            st->n_tokens = 1;
        }
        st->pos0 = gs[s].fed;
        st->kv = &gs[s].kv;
        st->all_logits = false;
        budget -= st->n_tokens;
        row_of[s] = n++;
    }
    return n;
}

/* Records sequence s's next token (row: its logits, or NULL when the backend chose it). */
static void take_token(const rt_runner *r, gen_seq *g, int32_t s, int32_t tok, const float *row,
                       const rt_greedy_params *gp, int32_t *out, float *last_logits)
{
    int32_t nv = r->m->cfg.n_vocab;
    out[(int64_t)s * gp->max_new_tokens + g->n_gen++] = tok;
    g->next = tok;
    if (last_logits && row)
        memcpy(last_logits + (int64_t)s * nv, row, (size_t)nv * sizeof(float));
    bool stop = gp->on_token && gp->on_token(gp->ud, s, tok) != 0;
    if (stop || g->n_gen == gp->max_new_tokens ||
        (gp->stop_at_eos && tok == rt_tokenizer_eos(r->m->tok)))
        g->done = true;
}

static int greedy_loop(rt_runner *r, gen_seq *gs, const int32_t *const *prompts,
                       const int32_t *n_prompt, int32_t n_seqs, const rt_greedy_params *gp,
                       int32_t *out, float *last_logits, char *err, size_t err_len)
{
    rt_seq_step *steps = fq_calloc_array((size_t)n_seqs, sizeof *steps);
    int32_t *row_of = fq_calloc_array((size_t)n_seqs, sizeof *row_of);
    int32_t *toks = fq_calloc_array((size_t)n_seqs, sizeof *toks);
    int rc = steps && row_of && toks ? 0 : fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    int32_t nv = r->m->cfg.n_vocab;
    /* the backend picks the tokens where it can, unless the caller wants the logits */
    const bool on_backend = r->ops->forward_argmax && !last_logits;
    for (;;) {
        if (rc)
            break;
        int32_t n = build_step(r, gs, prompts, n_prompt, n_seqs, steps, row_of);
        if (n == 0)
            break;
        rt_batch b = {.seqs = steps, .n_seqs = n};
        rc = on_backend ? r->ops->forward_argmax(r->be, &b, toks, err, err_len)
                        : r->ops->forward(r->be, &b, r->logits, err, err_len);
        for (int32_t s = 0; s < n_seqs && rc == 0; s++) {
            if (row_of[s] < 0)
                continue;
            gs[s].fed += steps[row_of[s]].n_tokens;
            if (gs[s].fed < n_prompt[s])
                continue;
            const float *row = on_backend ? NULL : r->logits + (int64_t)row_of[s] * nv;
            const int32_t tok = on_backend ? toks[row_of[s]] : rt_argmax(row, nv);
            take_token(r, &gs[s], s, tok, row, gp, out, last_logits);
        }
    }
    free(steps);
    free(row_of);
    free(toks);
    return rc;
}

int rt_runner_greedy(rt_runner *r, const int32_t *const *prompts, const int32_t *n_prompt,
                     int32_t n_seqs, const rt_greedy_params *gp, int32_t *out, int32_t *n_out,
                     float *last_logits, char *err, size_t err_len)
{
    if (n_seqs <= 0 || gp->max_new_tokens <= 0)
        return fq_err(err, err_len, FQ_EINVAL, "need at least one sequence and one new token");
    for (int32_t s = 0; s < n_seqs; s++)
        if (n_prompt[s] <= 0)
            return fq_err(err, err_len, FQ_EINVAL, "prompt %d is empty", s);
    gen_seq *gs = fq_calloc_array((size_t)n_seqs, sizeof *gs);
    if (!gs)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    int rc = 0;
    for (int32_t s = 0; s < n_seqs && rc == 0; s++)
        rc = reserve(r, &gs[s].kv, (int64_t)n_prompt[s] + gp->max_new_tokens, err, err_len);
    for (int64_t i = 0; i < (int64_t)n_seqs * gp->max_new_tokens; i++)
        out[i] = -1;
    if (rc == 0)
        rc = greedy_loop(r, gs, prompts, n_prompt, n_seqs, gp, out, last_logits, err, err_len);
    for (int32_t s = 0; s < n_seqs; s++) {
        n_out[s] = gs[s].n_gen;
        rt_kv_seq_release(r->kv, &gs[s].kv);
    }
    free(gs);
    return rc;
}

/* -log softmax(row)[target], in double. */
static double token_nll(const float *row, int32_t nv, int32_t target)
{
    float mx = row[rt_argmax(row, nv)];
    double sum = 0.0;
    for (int32_t i = 0; i < nv; i++)
        sum += exp((double)row[i] - (double)mx);
    return log(sum) + (double)mx - (double)row[target];
}

typedef struct nll_task {
    const float *logits;
    const int32_t *targets;
    int32_t nv;
    double *out;
} nll_task;

static void nll_row(void *ctx, int64_t i)
{
    const nll_task *t = ctx;
    t->out[i] = token_nll(t->logits + i * t->nv, t->nv, t->targets[i]);
}

/* Feeds tokens through the cache in chunks; all_logits selects per-token rows or only the last. */
static int feed_chunks(rt_runner *r, rt_kv_seq *kv, const int32_t *tokens, int32_t n,
                       bool all_logits, double *nll, float *last, char *err, size_t err_len)
{
    int32_t nv = r->m->cfg.n_vocab;
    for (int32_t pos = 0; pos < n;) {
        int32_t chunk = n - pos < r->p.max_batch_tokens ? n - pos : r->p.max_batch_tokens;
        rt_seq_step st = {.tokens = tokens + pos,
                          .n_tokens = chunk,
                          .pos0 = pos,
                          .kv = kv,
                          .all_logits = all_logits};
        rt_batch b = {.seqs = &st, .n_seqs = 1};
        int rc = r->ops->forward(r->be, &b, r->logits, err, err_len);
        if (rc)
            return rc;
        int32_t rows = all_logits ? (pos + chunk < n ? chunk : n - pos - 1) : 0;
        nll_task t = {.logits = r->logits, .targets = tokens + pos + 1, .nv = nv, .out = r->nll};
        if (rows > 0)
            rt_pool_run(r->pool, rows, nll_row, &t);
        for (int32_t i = 0; i < rows; i++) /* in order: the sum does not depend on threads */
            *nll += r->nll[i];
        pos += chunk;
        if (!all_logits && pos == n && last)
            memcpy(last, r->logits, (size_t)nv * sizeof(float));
    }
    return 0;
}

int rt_runner_score(rt_runner *r, const int32_t *tokens, int32_t n, double *nll, char *err,
                    size_t err_len)
{
    *nll = 0.0;
    if (n < 2)
        return fq_err(err, err_len, FQ_EINVAL, "scoring needs at least 2 tokens, got %d", n);
    rt_kv_seq kv = {0};
    int rc = reserve(r, &kv, n, err, err_len);
    if (rc == 0)
        rc = feed_chunks(r, &kv, tokens, n, true, nll, NULL, err, err_len);
    rt_kv_seq_release(r->kv, &kv);
    return rc;
}

int rt_runner_ppl(rt_runner *r, const int32_t *tokens, size_t n, int32_t ctx, int32_t max_windows,
                  rt_window_cb on_window, void *ud, double *nll, int64_t *scored, int32_t *windows,
                  char *err, size_t err_len)
{
    *nll = 0.0;
    *scored = 0;
    *windows = ctx >= 2 ? (int32_t)(n / (size_t)ctx) : 0;
    if (max_windows > 0 && *windows > max_windows)
        *windows = max_windows;
    if (*windows == 0)
        return fq_err(err, err_len, FQ_EINVAL, "%zu tokens is less than one window of %d", n, ctx);
    for (int32_t w = 0; w < *windows; w++) {
        double win = 0.0;
        int rc = rt_runner_score(r, tokens + (size_t)w * (size_t)ctx, ctx, &win, err, err_len);
        if (rc)
            return rc;
        *nll += win;
        *scored += ctx - 1;
        if (on_window)
            on_window(ud, w, *windows, win);
    }
    return 0;
}

int rt_runner_last_logits(rt_runner *r, const int32_t *tokens, int32_t n, float *logits, char *err,
                          size_t err_len)
{
    if (n < 1)
        return fq_err(err, err_len, FQ_EINVAL, "empty prompt");
    rt_kv_seq kv = {0};
    double unused = 0.0;
    int rc = reserve(r, &kv, n, err, err_len);
    if (rc == 0)
        rc = feed_chunks(r, &kv, tokens, n, false, &unused, logits, err, err_len);
    rt_kv_seq_release(r->kv, &kv);
    return rc;
}

/* test_rt_forward.c — the CPU forward pass on the generated tiny model: against a naive
 * double-precision reference, across both RoPE conventions, KV-cached decode vs recomputation,
 * batched vs single sequences, chunked vs one-shot prefill, and bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_model.h"
#include "rt_ops.h"
#include "rt_runner.h"
#include "tc_tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fwd_state {
    char dir[512];
    rt_model *gguf; /* interleaved RoPE rows */
    rt_model *hf;   /* rotate-half rows */
} fwd_state;

static int setup(void **state)
{
    fwd_state *s = calloc(1, sizeof *s);
    char err[512] = "", path[600];
    tc_tiny_params p = tc_tiny_default_params();
    if (!s || tc_mkdtemp(s->dir, sizeof s->dir) != 0 || tc_tiny_model_write(s->dir, &p) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/tiny.gguf", s->dir);
    if (rt_model_load(path, &s->gguf, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/hf", s->dir);
    if (rt_model_load(path, &s->hf, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    fwd_state *s = *state;
    rt_model_destroy(s->gguf);
    rt_model_destroy(s->hf);
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

static rt_runner *make_runner(const rt_model *m, int32_t max_batch, int32_t n_blocks)
{
    rt_backend_params bp = rt_backend_default_params();
    bp.n_threads = 2;
    bp.max_batch_tokens = max_batch;
    bp.kv.block_size = 4;
    bp.kv.n_blocks = n_blocks;
    rt_runner *r = NULL;
    char err[512] = "";
    if (rt_runner_create(m, "cpu", &bp, &r, err, sizeof err) != 0)
        fail_msg("runner: %s", err);
    return r;
}

static void test_tokens(int32_t *t, int32_t n, int32_t n_vocab, uint32_t seed)
{
    for (int32_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab);
    }
}

/* ---- naive reference: full recomputation in double, rotate-half RoPE ---- */

static void ref_linear(const rt_linear *l, const double *x, int32_t n, double *y)
{
    for (int32_t t = 0; t < n; t++)
        for (int32_t o = 0; o < l->n_out; o++) {
            double acc = 0;
            for (int32_t i = 0; i < l->n_in; i++)
                acc += x[(int64_t)t * l->n_in + i] * l->w[(int64_t)o * l->n_in + i];
            y[(int64_t)t * l->n_out + o] = acc;
        }
}

static void ref_norm(const double *x, const float *w, int32_t n, int32_t e, float eps, double *y)
{
    for (int32_t t = 0; t < n; t++) {
        double ss = 0;
        for (int32_t i = 0; i < e; i++)
            ss += x[t * e + i] * x[t * e + i];
        double inv = 1.0 / sqrt(ss / e + eps);
        for (int32_t i = 0; i < e; i++)
            y[t * e + i] = x[t * e + i] * inv * w[i];
    }
}

static void ref_rope(double *v, int32_t heads, int32_t hd, int32_t pos, double theta)
{
    for (int32_t h = 0; h < heads; h++)
        for (int32_t i = 0; i < hd / 2; i++) {
            double a = pos / pow(theta, 2.0 * i / hd), c = cos(a), s = sin(a);
            double *p = v + h * hd;
            double x0 = p[i], x1 = p[i + hd / 2];
            p[i] = x0 * c - x1 * s;
            p[i + hd / 2] = x1 * c + x0 * s;
        }
}

static void ref_attention(const fq_config *c, const double *q, const double *k, const double *v,
                          int32_t n, double *out)
{
    int32_t hd = c->head_dim, qd = c->n_head * hd, kvd = c->n_head_kv * hd;
    double *sc = malloc((size_t)n * sizeof *sc);
    for (int32_t t = 0; t < n; t++)
        for (int32_t h = 0; h < c->n_head; h++) {
            int32_t g = h / (c->n_head / c->n_head_kv);
            double mx = -INFINITY, sum = 0;
            for (int32_t j = 0; j <= t; j++) {
                double d = 0;
                for (int32_t i = 0; i < hd; i++)
                    d += q[t * qd + h * hd + i] * k[j * kvd + g * hd + i];
                sc[j] = d / sqrt(hd);
                mx = fmax(mx, sc[j]);
            }
            for (int32_t j = 0; j <= t; j++)
                sum += (sc[j] = exp(sc[j] - mx));
            for (int32_t i = 0; i < hd; i++) {
                double acc = 0;
                for (int32_t j = 0; j <= t; j++)
                    acc += sc[j] / sum * v[j * kvd + g * hd + i];
                out[t * qd + h * hd + i] = acc;
            }
        }
    free(sc);
}

/* logits: [n, n_vocab] for every position */
static void ref_forward(const rt_model *m, const int32_t *tok, int32_t n, double *logits)
{
    const fq_config *c = &m->cfg;
    int32_t e = c->n_embd, qd = c->n_head * c->head_dim, kvd = c->n_head_kv * c->head_dim;
    size_t big = (size_t)n * (size_t)(c->n_ff > qd ? (c->n_ff > e ? c->n_ff : e) : qd);
    double *x = calloc((size_t)n * e, sizeof *x), *xn = calloc((size_t)n * e, sizeof *x);
    double *q = calloc(big, sizeof *q), *k = calloc(big, sizeof *k), *v = calloc(big, sizeof *v);
    double *a = calloc(big, sizeof *a), *g = calloc(big, sizeof *g), *u = calloc(big, sizeof *u);
    for (int32_t t = 0; t < n; t++)
        for (int32_t i = 0; i < e; i++)
            x[t * e + i] = m->tok_embd[(int64_t)tok[t] * e + i];
    for (int32_t l = 0; l < c->n_layer; l++) {
        const rt_layer *ly = &m->layers[l];
        ref_norm(x, ly->attn_norm, n, e, c->norm_eps, xn);
        ref_linear(&ly->q, xn, n, q);
        ref_linear(&ly->k, xn, n, k);
        ref_linear(&ly->v, xn, n, v);
        for (int32_t t = 0; t < n; t++) {
            ref_rope(q + t * qd, c->n_head, c->head_dim, t, c->rope_theta);
            ref_rope(k + t * kvd, c->n_head_kv, c->head_dim, t, c->rope_theta);
        }
        ref_attention(c, q, k, v, n, a);
        ref_linear(&ly->o, a, n, g);
        for (int32_t i = 0; i < n * e; i++)
            x[i] += g[i];
        ref_norm(x, ly->ffn_norm, n, e, c->norm_eps, xn);
        ref_linear(&ly->gate, xn, n, g);
        ref_linear(&ly->up, xn, n, u);
        for (int64_t i = 0; i < (int64_t)n * c->n_ff; i++)
            g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        ref_linear(&ly->down, g, n, a);
        for (int32_t i = 0; i < n * e; i++)
            x[i] += a[i];
    }
    ref_norm(x, m->out_norm, n, e, c->norm_eps, xn);
    ref_linear(&m->lm_head, xn, n, logits);
    free(x), free(xn), free(q), free(k), free(v), free(a), free(g), free(u);
}

static double max_rel_diff(const float *a, const double *b, int64_t n)
{
    double md = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        md = fmax(md, fabs(a[i] - b[i]));
        mx = fmax(mx, fabs(b[i]));
    }
    return md / mx;
}

static void test_rt_forward_matches_naive_reference(void **state)
{
    fwd_state *s = *state;
    for (int which = 0; which < 2; which++) {
        const rt_model *m = which ? s->gguf : s->hf;
        enum { N = 23 };
        int32_t nv = m->cfg.n_vocab, tok[N];
        test_tokens(tok, N, nv, 99);
        rt_backend_params bp = rt_backend_default_params();
        bp.kv.block_size = 4;
        bp.kv.n_blocks = 8;
        rt_backend *be = NULL;
        char err[256];
        assert_int_equal(rt_backend_cpu_ops.create(m, &bp, &be, err, sizeof err), 0);
        rt_kv_seq kv = {.blocks = (int32_t[]){7, 2, 5, 0, 1, 3}, .n_blocks = 6, .cap = 6};
        rt_seq_step st = {.tokens = tok, .n_tokens = N, .pos0 = 0, .kv = &kv, .all_logits = true};
        rt_batch b = {.seqs = &st, .n_seqs = 1};
        float *got = malloc((size_t)N * nv * sizeof *got);
        double *want = malloc((size_t)N * nv * sizeof *want);
        assert_int_equal(rt_backend_cpu_ops.forward(be, &b, got, err, sizeof err), 0);
        ref_forward(s->hf, tok, N, want); /* the reference always uses the HF (half) rows */
        double d = max_rel_diff(got, want, (int64_t)N * nv);
        if (d > 1e-5)
            fail_msg("%s model: max |diff| / max |logit| = %g", which ? "gguf" : "hf", d);
        free(got);
        free(want);
        rt_backend_cpu_ops.destroy(be);
    }
}

static void greedy(const rt_model *m, rt_runner *r, const int32_t *const *prompts, const int32_t *n,
                   int32_t n_seqs, int32_t n_new, int32_t *out, float *last_logits)
{
    rt_greedy_params gp = rt_greedy_default_params();
    gp.max_new_tokens = n_new;
    gp.stop_at_eos = false;
    int32_t n_out[8];
    char err[256] = "";
    if (rt_runner_greedy(r, prompts, n, n_seqs, &gp, out, n_out, last_logits, err, sizeof err))
        fail_msg("greedy: %s", err);
    for (int32_t i = 0; i < n_seqs; i++)
        assert_int_equal(n_out[i], n_new);
    (void)m;
}

static void test_rt_forward_cached_decode_matches_recomputation(void **state)
{
    fwd_state *s = *state;
    const rt_model *m = s->gguf;
    int32_t nv = m->cfg.n_vocab, prompt[40];
    test_tokens(prompt, 9, nv, 5);
    rt_runner *r = make_runner(m, 64, 32);
    int32_t gen[12];
    float *last = malloc((size_t)nv * sizeof *last), *full = malloc((size_t)nv * sizeof *full);
    const int32_t *pp[1] = {prompt};
    int32_t n9 = 9;
    greedy(m, r, pp, &n9, 1, 12, gen, last);
    memcpy(prompt + 9, gen, 11 * sizeof *gen); /* context that chose the 12th token */
    char err[256];
    assert_int_equal(rt_runner_last_logits(r, prompt, 20, full, err, sizeof err), 0);
    double md = 0, mx = 0;
    for (int32_t i = 0; i < nv; i++) {
        md = fmax(md, fabs(last[i] - full[i]));
        mx = fmax(mx, fabs(full[i]));
    }
    assert_true(md / mx < 1e-6);
    free(last);
    free(full);
    rt_runner_destroy(r);
}

static void test_rt_forward_batched_equals_single(void **state)
{
    fwd_state *s = *state;
    const rt_model *m = s->hf;
    int32_t nv = m->cfg.n_vocab, p0[5], p1[13], p2[1];
    test_tokens(p0, 5, nv, 1);
    test_tokens(p1, 13, nv, 2);
    test_tokens(p2, 1, nv, 3);
    const int32_t *pp[3] = {p0, p1, p2};
    int32_t n[3] = {5, 13, 1};
    enum { G = 10 };
    int32_t batched[3 * G], single[G];
    float *lb = malloc((size_t)3 * nv * sizeof *lb), *ls = malloc((size_t)nv * sizeof *ls);
    rt_runner *r = make_runner(m, 8, 64); /* small budget: prefill chunks mix with decode steps */
    greedy(m, r, pp, n, 3, G, batched, lb);
    for (int i = 0; i < 3; i++) {
        greedy(m, r, &pp[i], &n[i], 1, G, single, ls);
        assert_memory_equal(single, batched + i * G, sizeof single);
        for (int32_t v = 0; v < nv; v++)
            assert_float_equal(ls[v], lb[(int64_t)i * nv + v], 1e-5);
    }
    free(lb);
    free(ls);
    rt_runner_destroy(r);
}

/* forward_argmax gives rt_argmax of every row forward gives; the runner's greedy tokens are the
 * same whether the backend picks them (no logits wanted) or the runner does (logits wanted). */
static void test_rt_forward_argmax_on_the_backend(void **state)
{
    fwd_state *s = *state;
    const rt_model *m = s->hf;
    enum { N = 11 };
    int32_t nv = m->cfg.n_vocab, tok[N], picked[N];
    test_tokens(tok, N, nv, 5);
    rt_backend_params bp = rt_backend_default_params();
    bp.kv.block_size = 4;
    bp.kv.n_blocks = 8;
    char err[256];
    rt_backend *b1 = NULL, *b2 = NULL;
    assert_int_equal(rt_backend_cpu_ops.create(m, &bp, &b1, err, sizeof err), 0);
    assert_int_equal(rt_backend_cpu_ops.create(m, &bp, &b2, err, sizeof err), 0);
    rt_kv_seq kv = {.blocks = (int32_t[]){1, 4, 6}, .n_blocks = 3, .cap = 3};
    rt_seq_step st = {.tokens = tok, .n_tokens = N, .pos0 = 0, .kv = &kv, .all_logits = true};
    rt_batch b = {.seqs = &st, .n_seqs = 1};
    float *logits = malloc((size_t)N * nv * sizeof *logits);
    assert_int_equal(rt_backend_cpu_ops.forward(b1, &b, logits, err, sizeof err), 0);
    assert_int_equal(rt_backend_cpu_ops.forward_argmax(b2, &b, picked, err, sizeof err), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(picked[i], rt_argmax(logits + (int64_t)i * nv, nv));
    st.tokens = (int32_t[]){nv}; /* bad input fails the same way */
    st.n_tokens = 1;
    assert_int_equal(rt_backend_cpu_ops.forward_argmax(b2, &b, picked, err, sizeof err), FQ_ERANGE);
    free(logits);
    rt_backend_cpu_ops.destroy(b1);
    rt_backend_cpu_ops.destroy(b2);

    int32_t p0[7], p1[3];
    test_tokens(p0, 7, nv, 8);
    test_tokens(p1, 3, nv, 9);
    const int32_t *pp[2] = {p0, p1};
    int32_t n[2] = {7, 3}, via_logits[2 * 6], via_backend[2 * 6];
    float *last = malloc((size_t)2 * nv * sizeof *last);
    rt_runner *r = make_runner(m, 8, 32);
    greedy(m, r, pp, n, 2, 6, via_logits, last);
    greedy(m, r, pp, n, 2, 6, via_backend, NULL);
    assert_memory_equal(via_logits, via_backend, sizeof via_logits);
    free(last);
    rt_runner_destroy(r);
}

static void test_rt_forward_argmax_rule(void **state)
{
    (void)state;
    const float nan = NAN;
    assert_int_equal(rt_argmax((const float[]){1, 3, 3, 2}, 4), 1);       /* first of a tie */
    assert_int_equal(rt_argmax((const float[]){nan, -1, nan, -2}, 4), 1); /* NaN never wins */
    assert_int_equal(rt_argmax((const float[]){nan, nan}, 2), 0);
    assert_int_equal(rt_argmax((const float[]){-INFINITY, -INFINITY, -5}, 3), 2);
}

static void test_rt_forward_chunked_prefill_matches_one_shot(void **state)
{
    fwd_state *s = *state;
    const rt_model *m = s->gguf;
    int32_t nv = m->cfg.n_vocab, tok[37];
    test_tokens(tok, 37, nv, 11);
    float *a = malloc((size_t)nv * sizeof *a), *b = malloc((size_t)nv * sizeof *b);
    rt_runner *one = make_runner(m, 64, 16), *chunked = make_runner(m, 5, 16);
    char err[256];
    assert_int_equal(rt_runner_last_logits(one, tok, 37, a, err, sizeof err), 0);
    assert_int_equal(rt_runner_last_logits(chunked, tok, 37, b, err, sizeof err), 0);
    for (int32_t v = 0; v < nv; v++)
        assert_float_equal(a[v], b[v], 1e-5 * (fabs(a[v]) + 1));
    double n1, n2;
    assert_int_equal(rt_runner_score(one, tok, 37, &n1, err, sizeof err), 0);
    assert_int_equal(rt_runner_score(chunked, tok, 37, &n2, err, sizeof err), 0);
    assert_float_equal(n1, n2, 1e-6 * n1);
    assert_true(n1 > 0);
    free(a);
    free(b);
    rt_runner_destroy(one);
    rt_runner_destroy(chunked);
}

static void test_rt_forward_rejects_bad_input_without_side_effects(void **state)
{
    fwd_state *s = *state;
    const rt_model *m = s->hf;
    int32_t nv = m->cfg.n_vocab, tok[6];
    test_tokens(tok, 6, nv, 4);
    rt_runner *r = make_runner(m, 64, 4); /* 16 cache slots */
    float *before = malloc((size_t)nv * sizeof *before), *after = malloc((size_t)nv * 4);
    char err[256] = "";
    assert_int_equal(rt_runner_last_logits(r, tok, 6, before, err, sizeof err), 0);
    int32_t bad[3] = {1, nv, 2};
    assert_int_equal(rt_runner_last_logits(r, bad, 3, after, err, sizeof err), FQ_ERANGE);
    assert_non_null(strstr(err, "token id"));
    int32_t neg[1] = {-1};
    assert_int_equal(rt_runner_last_logits(r, neg, 1, after, err, sizeof err), FQ_ERANGE);
    int32_t longer[17] = {0};
    assert_int_equal(rt_runner_last_logits(r, longer, 17, after, err, sizeof err), FQ_ERANGE);
    assert_non_null(strstr(err, "KV cache too small"));
    assert_int_equal(rt_runner_last_logits(r, tok, 6, after, err, sizeof err), 0);
    assert_memory_equal(before, after, (size_t)nv * sizeof *before);
    free(before);
    free(after);
    rt_runner_destroy(r);
}

/* Prompt chunks: as large as the room, but never one token of a longer prompt (neither a one-token
 * chunk nor a one-token remainder), unless a step can only ever carry one token. */
static void test_rt_forward_prefill_chunk_never_leaves_one_token(void **state)
{
    (void)state;
    assert_int_equal(rt_prefill_chunk(10, 512, 512), 10); /* all of it */
    assert_int_equal(rt_prefill_chunk(10, 4, 512), 4);
    assert_int_equal(rt_prefill_chunk(10, 9, 512), 8); /* not 9: one would be left */
    assert_int_equal(rt_prefill_chunk(10, 1, 512), 0); /* not one token of ten: wait */
    assert_int_equal(rt_prefill_chunk(3, 2, 512), 0);  /* 2 leaves 1, 1 alone is not allowed */
    assert_int_equal(rt_prefill_chunk(2, 2, 512), 2);
    assert_int_equal(rt_prefill_chunk(1, 1, 512), 1); /* a one-token prompt is one token */
    assert_int_equal(rt_prefill_chunk(10, 1, 1), 1);  /* steps of one token: no choice */
    assert_int_equal(rt_prefill_chunk(0, 8, 512), 0);
    assert_int_equal(rt_prefill_chunk(8, 0, 512), 0);
    for (int64_t left = 2; left < 40; left++) /* every split of any prompt: no single tokens */
        for (int64_t cap = 1; cap < 40; cap++) {
            int64_t rest = left, guard = 0;
            while (rest > 0 && guard++ < 100) {
                int32_t n = rt_prefill_chunk(rest, cap, 512);
                if (n == 0) { /* a later step with more room */
                    n = rt_prefill_chunk(rest, 512, 512);
                    assert_int_equal(n, rest);
                }
                assert_true(n >= 2);
                rest -= n;
            }
            assert_int_equal(rest, 0);
        }
}

static void test_rt_forward_unknown_backend_is_an_error(void **state)
{
    fwd_state *s = *state;
    rt_backend_params bp = rt_backend_default_params();
    rt_runner *r = NULL;
    char err[256] = "";
    assert_int_equal(rt_runner_create(s->hf, "tpu", &bp, &r, err, sizeof err), FQ_EINVAL);
    assert_null(r);
    assert_non_null(strstr(err, "tpu"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_forward_matches_naive_reference),
        cmocka_unit_test(test_rt_forward_cached_decode_matches_recomputation),
        cmocka_unit_test(test_rt_forward_batched_equals_single),
        cmocka_unit_test(test_rt_forward_chunked_prefill_matches_one_shot),
        cmocka_unit_test(test_rt_forward_argmax_on_the_backend),
        cmocka_unit_test(test_rt_forward_argmax_rule),
        cmocka_unit_test(test_rt_forward_rejects_bad_input_without_side_effects),
        cmocka_unit_test(test_rt_forward_prefill_chunk_never_leaves_one_token),
        cmocka_unit_test(test_rt_forward_unknown_backend_is_an_error),
    };
    return cmocka_run_group_tests_name("rt_forward", tests, setup, teardown);
}

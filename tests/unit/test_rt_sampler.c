/* test_rt_sampler.c — the sampler: greedy, temperature, seeds, the min_p/top_k/top_p filters,
 * penalties, logit bias, logprobs, validation, replay after reset, and its speed at n_vocab 49152.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------------------- */

static rt_sampler *make(const rt_sampling_params *p, int32_t n_vocab, const int32_t *prompt,
                        size_t n_prompt, uint64_t fallback_seed)
{
    rt_sampler *s = NULL;
    char err[256] = "";
    int rc = rt_sampler_create(p, n_vocab, prompt, n_prompt, fallback_seed, &s, err, sizeof err);
    if (rc)
        fprintf(stderr, "rt_sampler_create: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    return s;
}

/* Samples once from a copy of logits (the sampler modifies its input). */
static int32_t sample_copy(rt_sampler *s, const float *logits, int32_t n, float *scratch,
                           rt_sample_result *res)
{
    memcpy(scratch, logits, (size_t)n * sizeof *scratch);
    return rt_sampler_sample(s, scratch, res);
}

/* The test's own deterministic generator (independent of the sampler's). */
static uint64_t test_rng(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double test_uniform(uint64_t *state)
{
    return ((double)(test_rng(state) >> 11) + 0.5) * 0x1p-53;
}

static float test_gauss(uint64_t *state)
{
    double u1 = test_uniform(state), u2 = test_uniform(state);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Softmax of logits / t in double. */
static void softmax(const float *l, int32_t n, double t, double *p)
{
    double m = -INFINITY, z = 0.0;
    for (int32_t i = 0; i < n; i++)
        m = l[i] > m ? l[i] : m;
    for (int32_t i = 0; i < n; i++)
        z += (p[i] = exp(((double)l[i] - m) / t));
    for (int32_t i = 0; i < n; i++)
        p[i] /= z;
}

/* Draws n_draws tokens with params p and checks the histogram against probabilities q with a
 * chi-square test (deterministic seed; the bound is the 0.999 quantile for up to 15 degrees of
 * freedom) and a max abs deviation bound; tokens with q = 0 must never be drawn. */
static void check_distribution(const rt_sampling_params *p, const float *logits, int32_t n,
                               const double *q, int32_t n_draws)
{
    rt_sampler *s = make(p, n, NULL, 0, 7);
    float *buf = malloc((size_t)n * sizeof *buf);
    int32_t *hist = calloc((size_t)n, sizeof *hist);
    assert_non_null(buf);
    assert_non_null(hist);
    for (int32_t d = 0; d < n_draws; d++)
        hist[sample_copy(s, logits, n, buf, NULL)]++;
    double chi2 = 0.0, max_dev = 0.0;
    int32_t dof = -1;
    for (int32_t i = 0; i < n; i++) {
        if (q[i] == 0.0) {
            assert_int_equal(hist[i], 0);
            continue;
        }
        double e = q[i] * n_draws;
        chi2 += (hist[i] - e) * (hist[i] - e) / e;
        double dev = fabs(hist[i] / (double)n_draws - q[i]);
        max_dev = dev > max_dev ? dev : max_dev;
        dof++;
    }
    assert_true(dof <= 15);
    if (chi2 >= 37.7 || max_dev >= 0.015)
        fprintf(stderr, "chi2 %.2f (dof %d), max deviation %.4f\n", chi2, dof, max_dev);
    assert_true(chi2 < 37.7);
    assert_true(max_dev < 0.015);
    free(hist);
    free(buf);
    rt_sampler_destroy(s);
}

/* ---- greedy and temperature ------------------------------------------------------------------ */

static void test_rt_sampler_greedy_is_argmax(void **state)
{
    (void)state;
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.0f;
    float l[10] = {0.5f, -1.0f, 3.0f, 2.0f, 3.0f, -7.0f, 1.0f, 3.0f, 0.0f, 2.9f};
    float buf[10];
    rt_sampler *s = make(&p, 10, NULL, 0, 1);
    for (int r = 0; r < 5; r++)
        assert_int_equal(sample_copy(s, l, 10, buf, NULL), 2); /* ties at 3: the lowest id */
    assert_int_equal(rt_sampler_n_generated(s), 5);
    float single[1] = {-4.0f};
    rt_sampler_destroy(s);
    s = make(&p, 1, NULL, 0, 1);
    assert_int_equal(sample_copy(s, single, 1, buf, NULL), 0);
    rt_sampler_destroy(s);

    /* NaN logits are never the argmax */
    s = make(&p, 4, NULL, 0, 1);
    float withnan[4] = {NAN, 1.0f, NAN, 2.0f};
    assert_int_equal(sample_copy(s, withnan, 4, buf, NULL), 3);
    rt_sampler_destroy(s);
}

static void test_rt_sampler_never_draws_nan_or_minus_inf(void **state)
{
    (void)state;
    float l[8] = {NAN, 0.5f, -INFINITY, 0.0f, NAN, -INFINITY, 1.0f, -0.5f}, buf[8];
    rt_sampling_params variants[3];
    for (int v = 0; v < 3; v++)
        variants[v] = rt_sampling_default_params();
    variants[1].top_p = 0.99f;
    variants[2].top_k = 7;
    variants[2].min_p = 0.01f;
    for (int v = 0; v < 3; v++) {
        variants[v].logprobs = 3;
        rt_sampler *s = make(&variants[v], 8, NULL, 0, 17);
        for (int r = 0; r < 1000; r++) {
            rt_sample_result res;
            int32_t t = sample_copy(s, l, 8, buf, &res);
            assert_true(t == 1 || t == 3 || t == 6 || t == 7);
            assert_true(isfinite(res.logprob));
            assert_int_equal(res.top[0].token, 6);
        }
        rt_sampler_destroy(s);
    }

    /* a one-token vocabulary, every feature on */
    rt_sampling_params p = rt_sampling_default_params();
    p.top_k = 5; /* >= n_vocab: off */
    p.top_p = 0.5f;
    p.min_p = 0.5f;
    p.presence_penalty = 1.0f;
    p.repetition_penalty = 1.5f;
    p.logprobs = 20;
    const int32_t prompt[1] = {0};
    rt_sampler *s = make(&p, 1, prompt, 1, 3);
    float one[1] = {2.0f};
    for (int r = 0; r < 10; r++) {
        rt_sample_result res;
        assert_int_equal(sample_copy(s, one, 1, buf, &res), 0);
        assert_int_equal(res.n_top, 1);
        assert_true(res.logprob == 0.0f);
    }
    rt_sampler_destroy(s);
}

static void test_rt_sampler_temperature_to_zero_is_greedy(void **state)
{
    (void)state;
    float l[6] = {1.0f, 4.0f, 3.5f, -2.0f, 4.0f, 3.7f};
    float buf[6];
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 1e-6f; /* below the greedy threshold: argmax, lowest id among ties */
    rt_sampler *s = make(&p, 6, NULL, 0, 3);
    for (int r = 0; r < 200; r++)
        assert_int_equal(sample_copy(s, l, 6, buf, NULL), 1);
    rt_sampler_destroy(s);

    /* a tiny positive temperature samples, but only among the maxima (1 and 4, evenly) */
    p.temperature = 0.01f;
    s = make(&p, 6, NULL, 0, 3);
    int32_t n1 = 0, n4 = 0;
    for (int r = 0; r < 2000; r++) {
        int32_t t = sample_copy(s, l, 6, buf, NULL);
        assert_true(t == 1 || t == 4);
        n1 += t == 1;
        n4 += t == 4;
    }
    assert_true(n1 > 850 && n4 > 850);
    rt_sampler_destroy(s);

    /* and with a unique max it is the max every time */
    float u[6] = {1.0f, 4.0f, 3.5f, -2.0f, 3.7f, 3.6f};
    s = make(&p, 6, NULL, 0, 3);
    for (int r = 0; r < 2000; r++)
        assert_int_equal(sample_copy(s, u, 6, buf, NULL), 1);
    rt_sampler_destroy(s);
}

static void test_rt_sampler_seed_reproducible_and_seeds_differ(void **state)
{
    (void)state;
    enum { V = 1000, N = 64 };
    float *l = malloc(V * sizeof *l), *buf = malloc(V * sizeof *buf);
    assert_non_null(l);
    assert_non_null(buf);
    uint64_t st = 11;
    for (int32_t i = 0; i < V; i++)
        l[i] = test_gauss(&st);
    rt_sampling_params p = rt_sampling_default_params();
    p.has_seed = true;
    int32_t seq[3][N];
    uint64_t seeds[3] = {42, 42, 43};
    for (int k = 0; k < 3; k++) {
        p.seed = seeds[k];
        rt_sampler *s = make(&p, V, NULL, 0, (uint64_t)k * 1000 + 5); /* fallback unused */
        for (int i = 0; i < N; i++)
            seq[k][i] = sample_copy(s, l, V, buf, NULL);
        rt_sampler_destroy(s);
    }
    assert_memory_equal(seq[0], seq[1], sizeof seq[0]);
    int same = 0;
    for (int i = 0; i < N; i++)
        same += seq[0][i] == seq[2][i];
    assert_true(same < N / 4);

    /* without a seed, the fallback seed keys the stream */
    p.has_seed = false;
    int32_t a[N], b[N];
    rt_sampler *s1 = make(&p, V, NULL, 0, 99), *s2 = make(&p, V, NULL, 0, 99);
    for (int i = 0; i < N; i++) {
        a[i] = sample_copy(s1, l, V, buf, NULL);
        b[i] = sample_copy(s2, l, V, buf, NULL);
    }
    assert_memory_equal(a, b, sizeof a);
    rt_sampler_destroy(s1);
    rt_sampler_destroy(s2);

    /* same with the filters on (their selection is deterministic too) */
    p.has_seed = true;
    p.seed = 7;
    p.top_k = 50;
    p.top_p = 0.8f;
    s1 = make(&p, V, NULL, 0, 1);
    s2 = make(&p, V, NULL, 0, 2);
    for (int i = 0; i < N; i++)
        assert_int_equal(sample_copy(s1, l, V, buf, NULL), sample_copy(s2, l, V, buf, NULL));
    rt_sampler_destroy(s1);
    rt_sampler_destroy(s2);
    free(l);
    free(buf);
}

static void test_rt_sampler_distribution_matches_softmax(void **state)
{
    (void)state;
    float l[8] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -1.0f, 0.7f};
    double q[8];
    rt_sampling_params p = rt_sampling_default_params();
    softmax(l, 8, 1.0, q);
    check_distribution(&p, l, 8, q, 20000);
    p.temperature = 0.5f;
    softmax(l, 8, 0.5, q);
    check_distribution(&p, l, 8, q, 20000);
    p.temperature = 1.7f;
    softmax(l, 8, 1.7, q);
    check_distribution(&p, l, 8, q, 20000);
}

static void test_rt_sampler_distribution_across_blocks(void **state)
{
    (void)state;
    /* a vocabulary of several blocks with the mass on a few tokens far apart */
    enum { V = 3000 };
    float *l = malloc(V * sizeof *l);
    double *q = calloc(V, sizeof *q);
    assert_non_null(l);
    assert_non_null(q);
    for (int32_t i = 0; i < V; i++)
        l[i] = -200.0f; /* exp underflows to exactly 0 */
    const int32_t ids[6] = {0, 511, 512, 1500, 2047, 2999};
    const float vals[6] = {0.5f, 1.0f, 0.0f, 1.2f, -0.3f, 0.8f};
    for (int j = 0; j < 6; j++)
        l[ids[j]] = vals[j];
    double z = 0.0;
    for (int j = 0; j < 6; j++)
        z += exp(vals[j]);
    for (int j = 0; j < 6; j++)
        q[ids[j]] = exp(vals[j]) / z;
    rt_sampling_params p = rt_sampling_default_params();
    check_distribution(&p, l, V, q, 20000);
    free(l);
    free(q);
}

/* ---- filters --------------------------------------------------------------------------------- */

static void test_rt_sampler_top_k_one_is_greedy(void **state)
{
    (void)state;
    enum { V = 5000 };
    float *l = malloc(V * sizeof *l), *buf = malloc(V * sizeof *buf);
    assert_non_null(l);
    assert_non_null(buf);
    uint64_t st = 5;
    for (int32_t i = 0; i < V; i++)
        l[i] = test_gauss(&st);
    l[1234] = 9.0f;
    l[3456] = 9.0f; /* a tie: the lower id wins */
    rt_sampling_params p = rt_sampling_default_params();
    p.top_k = 1;
    p.temperature = 2.0f;
    rt_sampler *s = make(&p, V, NULL, 0, 8);
    for (int r = 0; r < 300; r++)
        assert_int_equal(sample_copy(s, l, V, buf, NULL), 1234);
    rt_sampler_destroy(s);
    free(l);
    free(buf);
}

/* probabilities 0.5, 0.3, 0.1, 0.05, 0.03, 0.02 on shuffled ids of a 6-token vocabulary */
static const int32_t k_ids[6] = {4, 1, 5, 0, 3, 2};
static const double k_probs[6] = {0.5, 0.3, 0.1, 0.05, 0.03, 0.02};

static void crafted(float *l)
{
    for (int j = 0; j < 6; j++)
        l[k_ids[j]] = (float)log(k_probs[j]) + 3.0f;
}

/* Expected distribution: the first n_keep of k_probs renormalised. */
static void kept(int n_keep, double *q)
{
    double z = 0.0;
    for (int j = 0; j < n_keep; j++)
        z += k_probs[j];
    memset(q, 0, 6 * sizeof *q);
    for (int j = 0; j < n_keep; j++)
        q[k_ids[j]] = k_probs[j] / z;
}

static void test_rt_sampler_filters_keep_the_right_set(void **state)
{
    (void)state;
    float l[6];
    double q[6];
    crafted(l);
    rt_sampling_params p;

    p = rt_sampling_default_params();
    p.top_k = 3;
    kept(3, q);
    check_distribution(&p, l, 6, q, 20000);

    p = rt_sampling_default_params();
    p.top_p = 0.75f; /* 0.5 + 0.3 reaches it */
    kept(2, q);
    check_distribution(&p, l, 6, q, 20000);

    p.top_p = 0.85f; /* needs the third */
    kept(3, q);
    check_distribution(&p, l, 6, q, 20000);

    p.top_p = 0.3f; /* the first alone */
    kept(1, q);
    check_distribution(&p, l, 6, q, 2000);

    p = rt_sampling_default_params();
    p.min_p = 0.15f; /* keeps p >= 0.075 */
    kept(3, q);
    check_distribution(&p, l, 6, q, 20000);

    p.min_p = 0.09f; /* keeps p >= 0.045 */
    kept(4, q);
    check_distribution(&p, l, 6, q, 20000);

    /* top_p applies to the top_k set renormalised: {0.5, 0.3, 0.1} / 0.9 -> 0.56 + 0.33 >= 0.85 */
    p = rt_sampling_default_params();
    p.top_k = 3;
    p.top_p = 0.85f;
    kept(2, q);
    check_distribution(&p, l, 6, q, 20000);

    /* min_p, top_k and top_p together: min_p keeps 4, top_k 3, top_p 0.95 of 0.9 keeps the 3 */
    p.min_p = 0.09f;
    p.top_p = 0.95f;
    kept(3, q);
    check_distribution(&p, l, 6, q, 20000);

    /* at temperature 0.5 the probabilities become p^2 / sum: 0.25, 0.09, 0.01, ... top_p 0.9 of
     * 0.3529 total needs 0.25 + 0.09 = 0.34 >= 0.3176: two tokens */
    p = rt_sampling_default_params();
    p.temperature = 0.5f;
    p.top_p = 0.9f;
    double z2 = 0.25 + 0.09;
    memset(q, 0, sizeof q);
    q[k_ids[0]] = 0.25 / z2;
    q[k_ids[1]] = 0.09 / z2;
    check_distribution(&p, l, 6, q, 20000);
}

typedef struct ranked {
    float logit;
    int32_t id;
} ranked;

/* qsort order for the test's reference: logit descending, id ascending. */
static int by_logit_desc(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* order [n] = the token ids of l [n] by that order (a full sort: the reference). */
static void rank_desc(const float *l, int32_t n, int32_t *order)
{
    ranked *r = malloc((size_t)n * sizeof *r);
    assert_non_null(r);
    for (int32_t i = 0; i < n; i++)
        r[i] = (ranked){.logit = l[i], .id = i};
    qsort(r, (size_t)n, sizeof *r, by_logit_desc);
    for (int32_t i = 0; i < n; i++)
        order[i] = r[i].id;
    free(r);
}

static void test_rt_sampler_filters_never_pick_excluded_large_vocab(void **state)
{
    (void)state;
    enum { V = 49152 };
    float *l = malloc(V * sizeof *l), *buf = malloc(V * sizeof *buf);
    int32_t *order = malloc(V * sizeof *order);
    uint8_t *in_k = calloc(V, 1), *in_p = calloc(V, 1);
    assert_true(l && buf && order && in_k && in_p);
    uint64_t st = 21;
    for (int32_t i = 0; i < V; i++)
        l[i] = 2.5f * test_gauss(&st);
    rank_desc(l, V, order);
    /* top_k 40 */
    for (int j = 0; j < 40; j++)
        in_k[order[j]] = 1;
    /* the nucleus of 0.9, widened by 1e-4 of mass against rounding at its edge */
    double m = l[order[0]], z = 0.0, cum = 0.0;
    for (int32_t i = 0; i < V; i++)
        z += exp(l[i] - m);
    int32_t n_nucleus = 0;
    for (int32_t j = 0; j < V && cum < (0.9 + 1e-4) * z; j++, n_nucleus++) {
        in_p[order[j]] = 1;
        cum += exp(l[order[j]] - m);
    }

    rt_sampling_params p = rt_sampling_default_params();
    p.top_k = 40;
    rt_sampler *s = make(&p, V, NULL, 0, 1);
    int32_t distinct = 0;
    uint8_t *hit = calloc(V, 1);
    assert_non_null(hit);
    for (int r = 0; r < 3000; r++) {
        int32_t t = sample_copy(s, l, V, buf, NULL);
        assert_true(in_k[t]);
        distinct += !hit[t];
        hit[t] = 1;
    }
    assert_true(distinct > 30); /* it does sample among them */
    rt_sampler_destroy(s);

    p = rt_sampling_default_params();
    p.top_p = 0.9f;
    s = make(&p, V, NULL, 0, 2);
    for (int r = 0; r < 3000; r++)
        assert_true(in_p[sample_copy(s, l, V, buf, NULL)]);
    rt_sampler_destroy(s);
    printf("# nucleus of top_p 0.9 over 49152 gaussian logits (sd 2.5): %d tokens\n", n_nucleus);

    /* top_k above the number of blocks (another way to the cut), and top_k with top_p: the
     * nucleus of 0.5 within the top 300 (renormalised), widened as above */
    p = rt_sampling_default_params();
    p.top_k = 300;
    s = make(&p, V, NULL, 0, 4);
    memset(in_k, 0, V);
    for (int j = 0; j < 300; j++)
        in_k[order[j]] = 1;
    for (int r = 0; r < 3000; r++)
        assert_true(in_k[sample_copy(s, l, V, buf, NULL)]);
    rt_sampler_destroy(s);
    double zk = 0.0;
    for (int j = 0; j < 300; j++)
        zk += exp(l[order[j]] - m);
    memset(in_p, 0, V);
    cum = 0.0;
    for (int j = 0; j < 300 && cum < (0.5 + 1e-4) * zk; j++) {
        in_p[order[j]] = 1;
        cum += exp(l[order[j]] - m);
    }
    p.top_p = 0.5f;
    s = make(&p, V, NULL, 0, 5);
    for (int r = 0; r < 3000; r++)
        assert_true(in_p[sample_copy(s, l, V, buf, NULL)]);
    rt_sampler_destroy(s);

    /* min_p: p_i >= 0.05 p_max means l_i >= max + log(0.05) */
    p = rt_sampling_default_params();
    p.min_p = 0.05f;
    s = make(&p, V, NULL, 0, 3);
    for (int r = 0; r < 3000; r++) {
        int32_t t = sample_copy(s, l, V, buf, NULL);
        assert_true(l[t] >= (float)m + logf(0.05f) - 1e-4f);
    }
    rt_sampler_destroy(s);
    free(hit);
    free(in_p);
    free(in_k);
    free(order);
    free(buf);
    free(l);
}

static void test_rt_sampler_filters_break_ties_by_id(void **state)
{
    (void)state;
    /* all logits equal: the key order is the id order, so the kept sets are id prefixes */
    enum { V = 3000 };
    float *l = calloc(V, sizeof *l), *buf = malloc(V * sizeof *buf);
    assert_non_null(l);
    assert_non_null(buf);
    struct {
        int32_t top_k;
        float top_p;
        int32_t bound;
    } cases[] = {{10, 1.0f, 10}, {200, 1.0f, 200}, {0, 0.5f, 1500}, {100, 0.5f, 50}, {1, 0.1f, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        rt_sampling_params p = rt_sampling_default_params();
        p.top_k = cases[c].top_k;
        p.top_p = cases[c].top_p;
        rt_sampler *s = make(&p, V, NULL, 0, 31);
        int32_t hi = 0;
        for (int r = 0; r < 2000; r++) {
            int32_t t = sample_copy(s, l, V, buf, NULL);
            assert_true(t >= 0 && t < cases[c].bound);
            hi = t > hi ? t : hi;
        }
        assert_true(hi >= cases[c].bound * 3 / 4); /* and it does reach the end of the prefix */
        rt_sampler_destroy(s);
    }
    free(l);
    free(buf);
}

static void test_rt_sampler_min_p_applies_after_temperature(void **state)
{
    (void)state;
    float l[2] = {0.0f, -1.0f}, buf[2];
    rt_sampling_params p = rt_sampling_default_params();
    p.min_p = 0.3f; /* at T = 1 token 1 has e^-1 = 0.37 of the max: kept */
    rt_sampler *s = make(&p, 2, NULL, 0, 5);
    int32_t ones = 0;
    for (int r = 0; r < 2000; r++)
        ones += sample_copy(s, l, 2, buf, NULL);
    assert_true(ones > 400);
    rt_sampler_destroy(s);
    p.temperature = 0.5f; /* at T = 0.5 it has e^-2 = 0.14 of the max: dropped */
    s = make(&p, 2, NULL, 0, 5);
    for (int r = 0; r < 2000; r++)
        assert_int_equal(sample_copy(s, l, 2, buf, NULL), 0);
    rt_sampler_destroy(s);
}

/* ---- penalties and bias ---------------------------------------------------------------------- */

static void test_rt_sampler_presence_penalty_exact(void **state)
{
    (void)state;
    float l[6] = {1.0f, 2.0f, 3.0f, -1.0f, 0.5f, 0.25f};
    float buf[6];
    const int32_t prompt[2] = {1, 4}; /* the prompt does not count for presence */
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.0f;
    p.presence_penalty = 0.5f;
    rt_sampler *s = make(&p, 6, prompt, 2, 1);
    rt_sampler_accept(s, 2);
    rt_sampler_accept(s, 2);
    rt_sampler_accept(s, 3);
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 2); /* 3 - 0.5 = 2.5 is still the max */
    const float want[6] = {1.0f, 2.0f, 2.5f, -1.5f, 0.5f, 0.25f};
    assert_memory_equal(buf, want, sizeof want);
    rt_sampler_destroy(s);
}

static void test_rt_sampler_frequency_penalty_exact(void **state)
{
    (void)state;
    float l[6] = {1.0f, 2.0f, 3.0f, -1.0f, 0.5f, 0.25f};
    float buf[6];
    const int32_t prompt[3] = {2, 2, 2};
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.0f;
    p.frequency_penalty = 0.75f;
    rt_sampler *s = make(&p, 6, prompt, 3, 1);
    rt_sampler_accept(s, 2);
    rt_sampler_accept(s, 2);
    rt_sampler_accept(s, 3);
    /* token 2: 3 - 2 * 0.75 = 1.5; token 3: -1 - 0.75 = -1.75; 1 is now the argmax */
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 1);
    const float want[6] = {1.0f, 2.0f, 1.5f, -1.75f, 0.5f, 0.25f};
    assert_memory_equal(buf, want, sizeof want);
    /* the chosen token (1) now counts once: 2 - 0.75 = 1.25 falls below token 2's 1.5 */
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 2);
    assert_true(buf[1] == 1.25f);
    rt_sampler_destroy(s);

    /* negative penalties encourage repetition */
    p.frequency_penalty = -1.0f;
    s = make(&p, 6, NULL, 0, 1);
    rt_sampler_accept(s, 5);
    rt_sampler_accept(s, 5);
    rt_sampler_accept(s, 5);
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 5); /* 0.25 + 3 */
    assert_true(buf[5] == 3.25f);
    rt_sampler_destroy(s);
}

static void test_rt_sampler_repetition_penalty_exact(void **state)
{
    (void)state;
    float l[6] = {1.0f, 2.0f, 3.0f, -1.0f, 0.5f, -0.25f};
    float buf[6];
    const int32_t prompt[3] = {1, 1, 3}; /* prompt tokens count, each once */
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;
    rt_sampler *s = make(&p, 6, prompt, 3, 1);
    rt_sampler_accept(s, 5);
    rt_sampler_accept(s, 5);
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 2);
    const float want[6] = {1.0f, 1.0f, 3.0f, -2.0f, 0.5f, -0.5f};
    assert_memory_equal(buf, want, sizeof want);
    /* 2 was generated: 3 / 2 = 1.5 next */
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 2);
    assert_true(buf[2] == 1.5f);
    /* a reset forgets generated tokens but keeps the prompt */
    rt_sampler_reset(s);
    assert_int_equal(rt_sampler_n_generated(s), 0);
    assert_int_equal(sample_copy(s, l, 6, buf, NULL), 2);
    const float want_reset[6] = {1.0f, 1.0f, 3.0f, -2.0f, 0.5f, -0.25f};
    assert_memory_equal(buf, want_reset, sizeof want_reset);
    rt_sampler_destroy(s);
}

static void test_rt_sampler_penalties_combine_in_vllm_order(void **state)
{
    (void)state;
    float l[4] = {4.0f, -2.0f, 1.0f, 0.0f};
    float buf[4];
    const int32_t prompt[1] = {0};
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.0f;
    p.repetition_penalty = 1.25f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    rt_logit_bias bias[1] = {{.token = 1, .bias = 3.0f}};
    p.bias = bias;
    p.n_bias = 1;
    rt_sampler *s = make(&p, 4, prompt, 1, 1);
    rt_sampler_accept(s, 1);
    rt_sampler_accept(s, 1);
    sample_copy(s, l, 4, buf, NULL);
    /* bias, then repetition (/ or *), then frequency, then presence */
    float want[4];
    want[0] = 4.0f / 1.25f;                                   /* prompt only */
    want[1] = ((-2.0f + 3.0f) / 1.25f - 0.5f * 2.0f) - 0.25f; /* bias, generated twice */
    want[2] = 1.0f;
    want[3] = 0.0f;
    assert_memory_equal(buf, want, sizeof want);
    rt_sampler_destroy(s);
}

static void test_rt_sampler_logit_bias_bans_and_forces(void **state)
{
    (void)state;
    enum { V = 100 };
    float l[V], buf[V];
    uint64_t st = 3;
    for (int32_t i = 0; i < V; i++)
        l[i] = (float)(5.0 * test_uniform(&st));
    l[17] = 5.5f; /* the most likely token */
    l[60] = 0.0f; /* the least likely */
    rt_logit_bias ban[1] = {{.token = 17, .bias = -100.0f}};
    rt_sampling_params p = rt_sampling_default_params();
    p.bias = ban;
    p.n_bias = 1;
    rt_sampler *s = make(&p, V, NULL, 0, 4);
    for (int r = 0; r < 3000; r++)
        assert_int_not_equal(sample_copy(s, l, V, buf, NULL), 17);
    rt_sampler_destroy(s);
    p.temperature = 0.0f;
    s = make(&p, V, NULL, 0, 4);
    assert_int_not_equal(sample_copy(s, l, V, buf, NULL), 17);
    rt_sampler_destroy(s);

    rt_logit_bias force[2] = {{.token = 60, .bias = 100.0f}, {.token = 99, .bias = 1.0f}};
    p = rt_sampling_default_params();
    p.temperature = 2.0f;
    p.bias = force;
    p.n_bias = 2;
    s = make(&p, V, NULL, 0, 4);
    for (int r = 0; r < 3000; r++)
        assert_int_equal(sample_copy(s, l, V, buf, NULL), 60);
    rt_sampler_destroy(s);

    /* the sampler copies the bias table */
    rt_logit_bias tmp[1] = {{.token = 60, .bias = 100.0f}};
    p.bias = tmp;
    p.n_bias = 1;
    s = make(&p, V, NULL, 0, 4);
    tmp[0].token = 0;
    tmp[0].bias = 0.0f;
    assert_int_equal(sample_copy(s, l, V, buf, NULL), 60);
    rt_sampler_destroy(s);
}

/* ---- logprobs -------------------------------------------------------------------------------- */

static void test_rt_sampler_logprobs_are_log_softmax(void **state)
{
    (void)state;
    enum { V = 300 };
    float l[V], buf[V];
    double q[V];
    uint64_t st = 9;
    for (int32_t i = 0; i < V; i++)
        l[i] = 3.0f * test_gauss(&st);
    l[10] = l[20] = 12.0f; /* a tie at the top: 10 is listed before 20 */
    softmax(l, V, 1.0, q);

    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.5f; /* logprobs are taken before temperature */
    p.top_k = 3;          /* ... and before the filters */
    p.logprobs = 5;
    rt_sampler *s = make(&p, V, NULL, 0, 12);
    for (int r = 0; r < 50; r++) {
        rt_sample_result res;
        int32_t t = sample_copy(s, l, V, buf, &res);
        assert_int_equal(res.token, t);
        assert_int_equal(res.n_top, 5);
        assert_true(fabs(res.logprob - log(q[t])) < 1e-4);
        assert_int_equal(res.top[0].token, 10);
        assert_int_equal(res.top[1].token, 20);
        for (int j = 0; j < res.n_top; j++) {
            assert_true(fabs(res.top[j].logprob - log(q[res.top[j].token])) < 1e-4);
            if (j > 0)
                assert_true(res.top[j].logprob <= res.top[j - 1].logprob);
        }
        /* the chosen token is among the top 3 here, so it is listed */
        bool listed = false;
        for (int j = 0; j < res.n_top; j++)
            if (res.top[j].token == t) {
                listed = true;
                assert_true(res.top[j].logprob == res.logprob);
            }
        assert_true(listed);
    }
    rt_sampler_destroy(s);

    /* the top list is exactly the 5 largest */
    int32_t order[V];
    rank_desc(l, V, order);
    p = rt_sampling_default_params();
    p.logprobs = 20;
    s = make(&p, V, NULL, 0, 12);
    rt_sample_result res;
    sample_copy(s, l, V, buf, &res);
    assert_int_equal(res.n_top, 20);
    for (int j = 0; j < 20; j++)
        assert_int_equal(res.top[j].token, order[j]);
    rt_sampler_destroy(s);

    /* logprobs 0: the chosen token's only; -1: nothing */
    p.logprobs = 0;
    s = make(&p, V, NULL, 0, 12);
    int32_t t = sample_copy(s, l, V, buf, &res);
    assert_int_equal(res.n_top, 0);
    assert_true(fabs(res.logprob - log(q[t])) < 1e-4);
    rt_sampler_destroy(s);
    p.logprobs = -1;
    s = make(&p, V, NULL, 0, 12);
    sample_copy(s, l, V, buf, &res);
    assert_int_equal(res.n_top, 0);
    assert_true(res.logprob == 0.0f);
    rt_sampler_destroy(s);

    /* more asked than the vocabulary holds */
    float small[3] = {0.0f, 1.0f, 2.0f};
    p.logprobs = 20;
    p.temperature = 0.0f;
    s = make(&p, 3, NULL, 0, 12);
    t = sample_copy(s, small, 3, buf, &res);
    assert_int_equal(t, 2);
    assert_int_equal(res.n_top, 3);
    double z = exp(-2.0) + exp(-1.0) + 1.0;
    assert_true(fabs(res.logprob - (-log(z))) < 1e-6);
    assert_true(fabs(res.top[2].logprob - (-2.0 - log(z))) < 1e-6);
    rt_sampler_destroy(s);

    /* logprobs see the bias and penalties */
    rt_logit_bias b[1] = {{.token = 0, .bias = 2.0f}};
    p.bias = b;
    p.n_bias = 1;
    s = make(&p, 3, NULL, 0, 12);
    t = sample_copy(s, small, 3, buf, &res);
    assert_int_equal(t, 0); /* 0 + 2 ties 2 and has the lower id */
    z = 2.0 * exp(0.0) + exp(-1.0);
    assert_true(fabs(res.logprob - (-log(z))) < 1e-6);
    assert_int_equal(res.top[0].token, 0);
    assert_int_equal(res.top[1].token, 2);
    rt_sampler_destroy(s);
}

/* ---- validation ------------------------------------------------------------------------------ */

static void expect_invalid(const rt_sampling_params *p, const char *param)
{
    char err[256] = "";
    const char *bad = "unset";
    assert_int_equal(rt_sampling_validate(p, 100, err, sizeof err, &bad), FQ_EINVAL);
    assert_non_null(bad);
    assert_string_equal(bad, param);
    assert_true(strncmp(err, param, strlen(param)) == 0);
    rt_sampler *s = NULL;
    err[0] = '\0';
    assert_int_equal(rt_sampler_create(p, 100, NULL, 0, 0, &s, err, sizeof err), FQ_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, param));
}

static void test_rt_sampler_validation_names_the_parameter(void **state)
{
    (void)state;
    rt_sampling_params d = rt_sampling_default_params(), p;
    const char *bad = "unset";
    assert_int_equal(rt_sampling_validate(&d, 100, NULL, 0, &bad), 0);
    assert_null(bad);

    p = d;
    p.temperature = 3.0f;
    expect_invalid(&p, "temperature");
    char err[256];
    rt_sampling_validate(&p, 100, err, sizeof err, NULL);
    assert_string_equal(err, "temperature must be in [0, 2], got 3");
    p.temperature = -0.1f;
    expect_invalid(&p, "temperature");
    p.temperature = NAN;
    expect_invalid(&p, "temperature");

    p = d;
    p.top_k = -2;
    expect_invalid(&p, "top_k");
    p = d;
    p.top_p = 0.0f;
    expect_invalid(&p, "top_p");
    p.top_p = 1.01f;
    expect_invalid(&p, "top_p");
    p = d;
    p.min_p = 1.5f;
    expect_invalid(&p, "min_p");
    p = d;
    p.presence_penalty = 2.5f;
    expect_invalid(&p, "presence_penalty");
    p = d;
    p.frequency_penalty = -3.0f;
    expect_invalid(&p, "frequency_penalty");
    p = d;
    p.repetition_penalty = 0.0f;
    expect_invalid(&p, "repetition_penalty");
    p.repetition_penalty = INFINITY;
    expect_invalid(&p, "repetition_penalty");
    p = d;
    p.logprobs = 21;
    expect_invalid(&p, "logprobs");
    p.logprobs = -2;
    expect_invalid(&p, "logprobs");

    p = d;
    rt_logit_bias b[2] = {{.token = 3, .bias = 1.0f}, {.token = 100, .bias = 1.0f}};
    p.bias = b;
    p.n_bias = 2;
    expect_invalid(&p, "logit_bias");
    rt_sampling_validate(&p, 100, err, sizeof err, NULL);
    assert_non_null(strstr(err, "100"));
    b[1].token = -1;
    expect_invalid(&p, "logit_bias");
    b[1].token = 4;
    b[1].bias = 101.0f;
    expect_invalid(&p, "logit_bias");
    b[1].bias = -100.0f;
    assert_int_equal(rt_sampling_validate(&p, 100, NULL, 0, NULL), 0);

    /* the edges that are allowed */
    p = d;
    p.temperature = 2.0f;
    p.top_k = -1;
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.repetition_penalty = 0.5f;
    p.logprobs = 20;
    assert_int_equal(rt_sampling_validate(&p, 100, NULL, 0, NULL), 0);

    /* prompt ids are checked at create */
    const int32_t prompt[2] = {1, 100};
    rt_sampler *s = NULL;
    assert_int_equal(rt_sampler_create(&d, 100, prompt, 2, 0, &s, err, sizeof err), FQ_EINVAL);
    assert_null(s);
}

/* ---- replay ---------------------------------------------------------------------------------- */

static void test_rt_sampler_replay_after_reset_or_recreate(void **state)
{
    (void)state;
    enum { V = 2000, N = 60, CUT = 25 };
    float *l = malloc(V * sizeof *l), *buf = malloc(V * sizeof *buf);
    assert_non_null(l);
    assert_non_null(buf);
    uint64_t st = 77;
    for (int32_t i = 0; i < V; i++)
        l[i] = 1.5f * test_gauss(&st);
    const int32_t prompt[4] = {1, 2, 3, 4};
    rt_sampling_params p = rt_sampling_default_params();
    p.presence_penalty = 0.3f;
    p.frequency_penalty = 0.2f;
    p.repetition_penalty = 1.1f;
    p.top_p = 0.95f;
    p.has_seed = true;
    p.seed = 1234;

    int32_t ref[N], got[N];
    rt_sampler *s = make(&p, V, prompt, 4, 0);
    for (int i = 0; i < N; i++)
        ref[i] = sample_copy(s, l, V, buf, NULL);
    rt_sampler_destroy(s);

    /* preempted after CUT tokens: reset, re-feed, go on */
    s = make(&p, V, prompt, 4, 0);
    for (int i = 0; i < CUT; i++)
        got[i] = sample_copy(s, l, V, buf, NULL);
    rt_sampler_reset(s);
    for (int i = 0; i < CUT; i++)
        rt_sampler_accept(s, got[i]);
    for (int i = CUT; i < N; i++)
        got[i] = sample_copy(s, l, V, buf, NULL);
    rt_sampler_destroy(s);
    assert_memory_equal(ref, got, sizeof ref);

    /* or rebuilt from scratch */
    s = make(&p, V, prompt, 4, 0);
    for (int i = 0; i < CUT; i++)
        rt_sampler_accept(s, ref[i]);
    assert_int_equal(rt_sampler_n_generated(s), CUT);
    for (int i = CUT; i < N; i++)
        assert_int_equal(sample_copy(s, l, V, buf, NULL), ref[i]);
    rt_sampler_destroy(s);
    rt_sampler_destroy(NULL);
    free(l);
    free(buf);
}

/* ---- speed ----------------------------------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
enum { SPEED_SAMPLES = 300 }; /* sanitizers slow everything tenfold: just run the paths */
#else
enum { SPEED_SAMPLES = 10000 };
#endif

static void time_case(const char *name, const rt_sampling_params *p, const float *l, float *buf)
{
    enum { V = 49152 };
    rt_sampler *s = make(p, V, NULL, 0, 1);
    rt_sample_result res;
    double t0 = fq_now_s();
    for (int r = 0; r < SPEED_SAMPLES; r++)
        sample_copy(s, l, V, buf, p->logprobs >= 0 ? &res : NULL);
    double dt = fq_now_s() - t0;
    printf("# %-36s %5d samples in %.3f s (%6.1f us each, the logits' copy included)\n", name,
           SPEED_SAMPLES, dt, dt / SPEED_SAMPLES * 1e6);
    rt_sampler_destroy(s);
}

/* A sampler's row (filters and the next draw) picks with rt_sample_row_pick the token the sampler
 * samples, draw for draw, across filters, temperatures and a vocabulary of several blocks; rows
 * are refused for samplers that need the logits (bias, penalties, logprobs). */
static void test_rt_sampler_row_pick_is_the_samplers_draw(void **state)
{
    (void)state;
    enum { NV = 3000 };
    float *logits = malloc(NV * sizeof *logits), *scratch = malloc(NV * sizeof *scratch);
    assert_non_null(logits);
    assert_non_null(scratch);
    uint64_t g = 77;
    char err[256];
    for (int c = 0; c < 48; c++) {
        for (int i = 0; i < NV; i++)
            logits[i] = 3.0f * test_gauss(&g);
        logits[c * 37 % NV] = logits[(c * 37 + 5) % NV]; /* a tie */
        rt_sampling_params p = rt_sampling_default_params();
        p.temperature = c % 8 == 7 ? 0.0f : 0.3f + 0.25f * (float)(c % 6);
        p.top_k = c % 4 == 0 ? 1 + c : (c % 4 == 1 ? 2000 : 0); /* above ceil(NV / 512) too */
        p.top_p = c % 3 == 0 ? 0.5f + 0.01f * (float)c : 1.0f;
        p.min_p = c % 5 == 0 ? 0.02f : 0.0f;
        p.has_seed = true;
        p.seed = (uint64_t)c;
        rt_sampler *s = make(&p, NV, NULL, 0, 0);
        for (int step = 0; step < 6; step++) {
            rt_sample_row row;
            assert_true(rt_sampler_row(s, &row));
            int32_t tok = -1;
            assert_int_equal(rt_sample_row_pick(&row, logits, NV, &tok, err, sizeof err), 0);
            assert_int_equal(tok, sample_copy(s, logits, NV, scratch, NULL));
        }
        rt_sampler_destroy(s);
    }
    rt_sampling_params p = rt_sampling_default_params();
    rt_sample_row row;
    p.logprobs = 0;
    rt_sampler *s = make(&p, NV, NULL, 0, 0);
    assert_false(rt_sampler_row(s, &row));
    rt_sampler_destroy(s);
    p = rt_sampling_default_params();
    p.presence_penalty = 0.5f;
    s = make(&p, NV, NULL, 0, 0);
    assert_false(rt_sampler_row(s, &row));
    rt_sampler_destroy(s);
    row = (rt_sample_row){.temperature = 1.0f, .top_p = 1.0f, .u = 1.5};
    int32_t tok;
    assert_int_equal(rt_sample_row_pick(&row, logits, NV, &tok, err, sizeof err), FQ_EINVAL);
    free(logits);
    free(scratch);
}

static void test_rt_sampler_speed_n_vocab_49152(void **state)
{
    (void)state;
    enum { V = 49152 };
    float *l = malloc(V * sizeof *l), *buf = malloc(V * sizeof *buf);
    assert_non_null(l);
    assert_non_null(buf);
    uint64_t st = 1;
    /* like a trained model's: a bulk of logits around 0 and 50 tokens about 14 above it, where
     * nearly all of the probability is */
    for (int32_t i = 0; i < V; i++)
        l[i] = 2.0f * test_gauss(&st);
    for (int j = 0; j < 50; j++)
        l[test_rng(&st) % V] = 14.0f + 2.0f * test_gauss(&st);
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = 0.0f;
    time_case("greedy", &p, l, buf);
    p = rt_sampling_default_params();
    time_case("temperature 1", &p, l, buf);
    p.top_p = 0.9f;
    time_case("top_p 0.9", &p, l, buf);
    p = rt_sampling_default_params();
    p.top_k = 50;
    time_case("top_k 50", &p, l, buf);
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.temperature = 0.7f;
    time_case("T 0.7, top_k 50, top_p 0.95, min_p", &p, l, buf);
    p = rt_sampling_default_params();
    p.top_p = 0.9f;
    p.logprobs = 5;
    p.presence_penalty = 0.5f;
    p.repetition_penalty = 1.1f;
    time_case("top_p 0.9, logprobs 5, penalties", &p, l, buf);
    /* flat distributions: gaussian logits, the nucleus of 0.9 ~300 and ~5000 tokens wide */
    for (int32_t i = 0; i < V; i++)
        l[i] = 4.0f * test_gauss(&st);
    p = rt_sampling_default_params();
    p.top_p = 0.9f;
    time_case("top_p 0.9, flat (sd 4)", &p, l, buf);
    for (int32_t i = 0; i < V; i++)
        l[i] = 2.5f * test_gauss(&st);
    time_case("top_p 0.9, flatter (sd 2.5)", &p, l, buf);
    free(l);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_sampler_greedy_is_argmax),
        cmocka_unit_test(test_rt_sampler_never_draws_nan_or_minus_inf),
        cmocka_unit_test(test_rt_sampler_temperature_to_zero_is_greedy),
        cmocka_unit_test(test_rt_sampler_seed_reproducible_and_seeds_differ),
        cmocka_unit_test(test_rt_sampler_distribution_matches_softmax),
        cmocka_unit_test(test_rt_sampler_distribution_across_blocks),
        cmocka_unit_test(test_rt_sampler_top_k_one_is_greedy),
        cmocka_unit_test(test_rt_sampler_filters_keep_the_right_set),
        cmocka_unit_test(test_rt_sampler_filters_never_pick_excluded_large_vocab),
        cmocka_unit_test(test_rt_sampler_filters_break_ties_by_id),
        cmocka_unit_test(test_rt_sampler_min_p_applies_after_temperature),
        cmocka_unit_test(test_rt_sampler_presence_penalty_exact),
        cmocka_unit_test(test_rt_sampler_frequency_penalty_exact),
        cmocka_unit_test(test_rt_sampler_repetition_penalty_exact),
        cmocka_unit_test(test_rt_sampler_penalties_combine_in_vllm_order),
        cmocka_unit_test(test_rt_sampler_logit_bias_bans_and_forces),
        cmocka_unit_test(test_rt_sampler_logprobs_are_log_softmax),
        cmocka_unit_test(test_rt_sampler_validation_names_the_parameter),
        cmocka_unit_test(test_rt_sampler_replay_after_reset_or_recreate),
        cmocka_unit_test(test_rt_sampler_row_pick_is_the_samplers_draw),
        cmocka_unit_test(test_rt_sampler_speed_n_vocab_49152),
    };
    return cmocka_run_group_tests_name("rt_sampler", tests, NULL, NULL);
}

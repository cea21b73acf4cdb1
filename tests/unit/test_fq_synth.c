/* test_fq_synth.c — synthetic models: the presets have the real models' shapes, the weights have
 * a trained model's spread, the seed alone decides the bytes, and the written file loads.
 */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "fq_modelfile.h"
#include "fq_synth.h"
#include "fq_weight.h"
#include "rt_model.h"
#include "rt_modelfile.h"
#include "tc_tiny_model.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sy_state {
    char dir[512];  /* a fresh temporary directory per test */
    char gguf[600]; /* dir/tiny.gguf: the tokenizer source */
    char err[1024];
} sy_state;

static int setup(void **state)
{
    sy_state *s = calloc(1, sizeof *s);
    if (!s || tc_mkdtemp(s->dir, sizeof s->dir) != 0)
        return -1;
    tc_tiny_params tp = tc_tiny_default_params();
    if (tc_tiny_model_write(s->dir, &tp) != 0)
        return -1;
    snprintf(s->gguf, sizeof s->gguf, "%s/tiny.gguf", s->dir);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    sy_state *s = *state;
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

/* Builds a synthetic model with the tiny checkpoint's tokenizer. */
static int build(sy_state *s, const fq_synth_params *p, fq_ckpt **ck, fq_qmodel **qm)
{
    fq_tok_spec tok;
    memset(&tok, 0, sizeof tok);
    int rc = fq_ckpt_load_tokenizer(s->gguf, &tok, s->err, sizeof s->err);
    if (rc)
        return rc;
    return fq_synth_build(p, &tok, ck, qm, s->err, sizeof s->err);
}

static void test_fq_synth_presets_have_real_shapes(void **state)
{
    sy_state *s = *state;
    fq_config c;
    assert_int_equal(fq_synth_config("llama-2-7b", &c, s->err, sizeof s->err), 0);
    assert_int_equal(c.n_layer, 32);
    assert_int_equal(c.n_embd, 4096);
    assert_int_equal(c.n_ff, 11008);
    assert_int_equal(c.n_head, 32);
    assert_int_equal(c.n_head_kv, 32);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.n_vocab, 32000);
    assert_false(c.tied_embeddings);
    assert_int_equal(fq_synth_config("llama-2-13b", &c, s->err, sizeof s->err), 0);
    assert_int_equal(c.n_layer, 40);
    assert_int_equal(c.n_embd, 5120);
    assert_int_equal(c.n_ff, 13824);
    assert_int_equal(c.n_head, 40);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(fq_synth_config("llama-3-8b", &c, s->err, sizeof s->err), 0);
    assert_int_equal(c.n_ff, 14336);
    assert_int_equal(c.n_head_kv, 8);
    assert_int_equal(c.n_vocab, 128256);
    int64_t n, k;
    fq_lin_shape(&c, FQ_LIN_K, &n, &k);
    assert_int_equal(n, 1024); /* GQA: 8 kv heads of 128 */
    assert_int_equal(k, 4096);
    assert_int_equal(fq_synth_config("llama-9", &c, s->err, sizeof s->err), FQ_EINVAL);
    assert_non_null(strstr(s->err, "llama-2-13b"));
}

static void test_fq_synth_weights_have_a_trained_spread(void **state)
{
    sy_state *s = *state;
    fq_synth_params p = fq_synth_default_params();
    p.preset = "tiny";
    fq_ckpt *ck = NULL;
    fq_qmodel *qm = NULL;
    assert_int_equal(build(s, &p, &ck, &qm), 0);
    for (int64_t i = 0; i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++) {
        const fq_qlinear *q = &qm->lin[i];
        assert_int_equal(q->group, 128);
        assert_int_equal(q->abits, i % FQ_LIN_COUNT == FQ_LIN_DOWN ? 8 : 6);
        float *w = malloc(sizeof *w * (size_t)(q->n_out * q->n_in));
        assert_non_null(w);
        fq_weight_dequantize(q->packed, q->scales, q->n_out, q->n_in, q->group, w);
        double sum = 0, sq = 0;
        const int64_t n = q->n_out * q->n_in;
        for (int64_t j = 0; j < n; j++) {
            sum += w[j];
            sq += (double)w[j] * w[j];
        }
        const double mean = sum / (double)n, sd = sqrt(sq / (double)n - mean * mean);
        assert_true(fabs(mean) < 1e-3);
        assert_true(sd > 0.017 && sd < 0.023);
        free(w);
    }
    const fq_tensor *e = fq_ckpt_find(ck, "token_embd");
    assert_non_null(e);
    assert_int_equal(e->shape[0], tc_tiny_n_vocab()); /* the preset's vocab is 0: the tokenizer's */
    double sq = 0;
    for (int64_t j = 0; j < fq_tensor_numel(e); j++)
        sq += (double)e->data[j] * e->data[j];
    const double sd = sqrt(sq / (double)fq_tensor_numel(e));
    assert_true(sd > 0.018 && sd < 0.022);
    fq_qmodel_destroy(qm);
    fq_ckpt_destroy(ck);
}

static int same_codes(const fq_qmodel *a, const fq_qmodel *b)
{
    for (int64_t i = 0; i < (int64_t)a->n_layer * FQ_LIN_COUNT; i++) {
        const fq_qlinear *x = &a->lin[i], *y = &b->lin[i];
        if (memcmp(x->packed, y->packed, (size_t)(x->n_out * x->row_bytes)) != 0 ||
            memcmp(x->scales, y->scales,
                   sizeof *x->scales * (size_t)(x->n_out * x->n_in / x->group)))
            return 0;
    }
    return 1;
}

static void test_fq_synth_seed_decides_the_bytes(void **state)
{
    sy_state *s = *state;
    fq_synth_params p = fq_synth_default_params();
    p.preset = "tiny";
    p.seed = 7;
    fq_ckpt *c1 = NULL, *c2 = NULL, *c3 = NULL;
    fq_qmodel *q1 = NULL, *q2 = NULL, *q3 = NULL;
    assert_int_equal(build(s, &p, &c1, &q1), 0);
    assert_int_equal(build(s, &p, &c2, &q2), 0);
    p.seed = 8;
    assert_int_equal(build(s, &p, &c3, &q3), 0);
    assert_true(same_codes(q1, q2));
    assert_false(same_codes(q1, q3));
    fq_ckpt *c4 = NULL, *c5 = NULL;
    fq_qmodel *q4 = NULL, *q5 = NULL;
    p.n_threads = 1; /* the thread count does not change a byte */
    assert_int_equal(build(s, &p, &c4, &q4), 0);
    p.n_threads = 5;
    assert_int_equal(build(s, &p, &c5, &q5), 0);
    assert_true(same_codes(q3, q4));
    assert_true(same_codes(q3, q5));
    fq_qmodel_destroy(q4);
    fq_qmodel_destroy(q5);
    fq_ckpt_destroy(c4);
    fq_ckpt_destroy(c5);
    fq_qmodel_destroy(q1);
    fq_qmodel_destroy(q2);
    fq_qmodel_destroy(q3);
    fq_ckpt_destroy(c1);
    fq_ckpt_destroy(c2);
    fq_ckpt_destroy(c3);
}

static void test_fq_synth_file_loads_with_the_shapes(void **state)
{
    sy_state *s = *state;
    fq_synth_params p = fq_synth_default_params();
    p.preset = "tiny";
    p.n_layer = 3;
    fq_ckpt *ck = NULL;
    fq_qmodel *qm = NULL;
    assert_int_equal(build(s, &p, &ck, &qm), 0);
    assert_int_equal(ck->cfg.n_layer, 3);
    char path[700];
    snprintf(path, sizeof path, "%s/synth.fq6.safetensors", s->dir);
    assert_int_equal(fq_modelfile_write(path, ck, qm, NULL, s->err, sizeof s->err), 0);
    rt_model *m = NULL;
    assert_int_equal(rt_model_load(path, &m, s->err, sizeof s->err), 0);
    assert_int_equal(m->cfg.n_layer, 3);
    assert_int_equal(m->cfg.n_embd, 256);
    assert_int_equal(m->cfg.n_ff, 512);
    assert_int_equal(m->cfg.n_head_kv, 2);
    assert_int_equal(m->cfg.n_vocab, tc_tiny_n_vocab());
    rt_model_destroy(m);
    fq_qmodel_destroy(qm);
    fq_ckpt_destroy(ck);
}

static void test_fq_synth_refuses_bad_requests(void **state)
{
    sy_state *s = *state;
    fq_synth_params p = fq_synth_default_params();
    fq_ckpt *ck = NULL;
    fq_qmodel *qm = NULL;
    p.preset = "gpt-5";
    assert_int_equal(build(s, &p, &ck, &qm), FQ_EINVAL);
    assert_null(ck);
    assert_null(qm);
    assert_non_null(strstr(s->err, "gpt-5"));
    p.preset = "tiny";
    p.n_layer = -1;
    assert_int_equal(build(s, &p, &ck, &qm), FQ_EINVAL);
    assert_null(ck);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fq_synth_presets_have_real_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_synth_weights_have_a_trained_spread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fq_synth_seed_decides_the_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_synth_file_loads_with_the_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fq_synth_refuses_bad_requests, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

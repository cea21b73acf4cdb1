/* test_rt_modes.c — the CPU backend's FlexQ modes on the tiny model: each mode's logits against
 * fp32, flex against the fixed-bit modes, the INT6 file against in-memory quantization, and the
 * errors for modes a model cannot run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "fq_modelfile.h"
#include "rt_model.h"
#include "rt_runner.h"
#include "tc_tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_TOK = 19 };

typedef struct modes_state {
    char dir[512];
    rt_model *q;    /* the tiny GGUF, quantized in memory */
    rt_model *file; /* the same written to an INT6 file and loaded back */
    int32_t tok[N_TOK];
} modes_state;

static int setup(void **state)
{
    modes_state *s = calloc(1, sizeof *s);
    char err[512] = "", path[700];
    tc_tiny_params p = tc_tiny_default_params();
    p.n_embd = 128; /* K = 128 and n_ff 192: groups of 128 and 64 */
    p.n_ff = 192;
    p.n_head = 4;
    if (!s || tc_mkdtemp(s->dir, sizeof s->dir) != 0 || tc_tiny_model_write(s->dir, &p) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/tiny.gguf", s->dir);
    if (rt_model_load(path, &s->q, err, sizeof err) != 0 ||
        rt_model_quantize(s->q, 0, NULL, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    fq_qmodel *qm = s->q->qmodel;
    for (int64_t i = 0; i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++)
        qm->lin[i].abits = i % FQ_LIN_COUNT == FQ_LIN_DOWN ? 8 : 6;
    snprintf(path, sizeof path, "%s/tiny.fq6.safetensors", s->dir);
    fq_modelfile_params mp = fq_modelfile_default_params();
    if (fq_modelfile_write(path, s->q->ck, qm, &mp, err, sizeof err) != 0 ||
        rt_model_load(path, &s->file, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    for (int i = 0; i < N_TOK; i++)
        s->tok[i] = 3 + (i * 37) % 250;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    modes_state *s = *state;
    rt_model_destroy(s->q);
    rt_model_destroy(s->file);
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

/* All-token logits of the test tokens in a mode ([N_TOK, n_vocab], caller frees), or NULL with the
 * error in err. */
static float *logits_in(const rt_model *m, rt_mode mode, const int32_t *abits, char *err,
                        size_t err_len)
{
    rt_backend_params bp = rt_backend_default_params();
    bp.mode = mode;
    bp.abits = abits;
    bp.kv.n_blocks = 8;
    rt_backend *be = NULL;
    if (rt_backend_cpu_ops.create(m, &bp, &be, err, err_len) != 0)
        return NULL;
    rt_kv_seq kv = {.blocks = (int32_t[]){0, 1, 2}, .n_blocks = 3, .cap = 3};
    int32_t tok[N_TOK];
    for (int i = 0; i < N_TOK; i++)
        tok[i] = 3 + (i * 37) % 250;
    rt_seq_step st = {.tokens = tok, .n_tokens = N_TOK, .kv = &kv, .all_logits = true};
    rt_batch b = {.seqs = &st, .n_seqs = 1};
    float *out = malloc((size_t)N_TOK * m->cfg.n_vocab * sizeof *out);
    if (rt_backend_cpu_ops.forward(be, &b, out, err, err_len) != 0) {
        free(out);
        out = NULL;
    }
    rt_backend_cpu_ops.destroy(be);
    return out;
}

/* RMS of the difference over the RMS of b: a whole-distribution measure. (The tiny random model
 * amplifies single activation-code flips, so worst-element measures are noisy for the integer
 * modes.) */
static double rms_rel(const float *a, const float *b, int64_t n)
{
    double d = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d / r);
}

static void test_rt_modes_error_grows_as_bits_shrink(void **state)
{
    modes_state *s = *state;
    char err[256] = "";
    int64_t n = (int64_t)N_TOK * s->q->cfg.n_vocab;
    float *fp = logits_in(s->q, RT_MODE_FP, NULL, err, sizeof err);
    float *w16 = logits_in(s->q, RT_MODE_W6A16, NULL, err, sizeof err);
    float *w8 = logits_in(s->q, RT_MODE_W6A8, NULL, err, sizeof err);
    float *w6 = logits_in(s->q, RT_MODE_W6A6, NULL, err, sizeof err);
    assert_non_null(fp);
    assert_non_null(w16);
    assert_non_null(w8);
    assert_non_null(w6);
    double d16 = rms_rel(w16, fp, n), d8 = rms_rel(w8, fp, n), d6 = rms_rel(w6, fp, n);
    double a8 = rms_rel(w8, w16, n), a6 = rms_rel(w6, w16, n);
    printf("RMS error vs fp: w6a16 %.4g, w6a8 %.4g, w6a6 %.4g; vs w6a16: a8 %.4g, a6 %.4g\n", d16,
           d8, d6, a8, a6);
    /* the random tiny model amplifies rounding (about 8 % RMS from 6-bit weights alone; the real
     * model's figures are in the model suite), so these bounds only catch a broken path */
    assert_true(d16 > 0 && d16 < 0.15);
    assert_true(a8 > 0 && a8 < a6 / 2); /* 8-bit activations cost far less than 6-bit ones */
    assert_true(d8 < 0.15 && d6 < 0.25);
    free(fp);
    free(w16);
    free(w8);
    free(w6);
}

static void test_rt_modes_flex_equals_fixed_bits(void **state)
{
    modes_state *s = *state;
    char err[256] = "";
    int64_t n = (int64_t)N_TOK * s->q->cfg.n_vocab, nl = (int64_t)s->q->cfg.n_layer * FQ_LIN_COUNT;
    int32_t *bits = malloc((size_t)nl * sizeof *bits);
    for (int b = 6; b <= 8; b += 2) {
        for (int64_t i = 0; i < nl; i++)
            bits[i] = b;
        float *flex = logits_in(s->q, RT_MODE_FLEX, bits, err, sizeof err);
        float *fixed = logits_in(s->q, b == 8 ? RT_MODE_W6A8 : RT_MODE_W6A6, NULL, err, sizeof err);
        assert_non_null(flex);
        assert_non_null(fixed);
        assert_memory_equal(flex, fixed, (size_t)n * sizeof *flex);
        free(flex);
        free(fixed);
    }
    free(bits);
}

static void test_rt_modes_int6_file_matches_in_memory_quantization(void **state)
{
    modes_state *s = *state;
    char err[256] = "";
    int64_t n = (int64_t)N_TOK * s->q->cfg.n_vocab, nl = (int64_t)s->q->cfg.n_layer * FQ_LIN_COUNT;
    int32_t *bits = malloc((size_t)nl * sizeof *bits);
    for (int64_t i = 0; i < nl; i++)
        bits[i] = i % FQ_LIN_COUNT == FQ_LIN_DOWN ? 8 : 6; /* what setup wrote into the file */
    /* the tiny model's weights are fp16-exact, so the file (fp16 embeddings and norms, the same
     * codes and scales) must compute exactly what the in-memory quantization computes */
    float *a = logits_in(s->q, RT_MODE_W6A16, NULL, err, sizeof err);
    float *b = logits_in(s->file, RT_MODE_W6A16, NULL, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    float *mem = logits_in(s->q, RT_MODE_FLEX, bits, err, sizeof err);
    float *file = logits_in(s->file, RT_MODE_FLEX, NULL, err, sizeof err);
    assert_non_null(mem);
    assert_non_null(file);
    assert_memory_equal(mem, file, (size_t)n * sizeof *mem);
    free(a);
    free(b);
    free(mem);
    free(file);
    free(bits);
}

/* The comparison modes: fp16 rounds weights and inputs to fp16 (close to fp32), w8a8 quantizes both
 * per row to int8 (an 8-bit-activation error like w6a8's); an INT6-only file runs both from its
 * dequantized codes. */
static void test_rt_modes_comparison_modes_run_their_math(void **state)
{
    modes_state *s = *state;
    char err[256] = "";
    int64_t n = (int64_t)N_TOK * s->q->cfg.n_vocab;
    float *fp = logits_in(s->q, RT_MODE_FP, NULL, err, sizeof err);
    float *f16 = logits_in(s->q, RT_MODE_FP16, NULL, err, sizeof err);
    float *w8 = logits_in(s->q, RT_MODE_W8A8, NULL, err, sizeof err);
    float *w6a16 = logits_in(s->file, RT_MODE_W6A16, NULL, err, sizeof err);
    float *f16_file = logits_in(s->file, RT_MODE_FP16, NULL, err, sizeof err);
    float *w8_file = logits_in(s->file, RT_MODE_W8A8, NULL, err, sizeof err);
    assert_non_null(fp);
    assert_non_null(f16);
    assert_non_null(w8);
    assert_non_null(w6a16);
    assert_non_null(f16_file);
    assert_non_null(w8_file);
    double d16 = rms_rel(f16, fp, n), d8 = rms_rel(w8, fp, n), e16 = rms_rel(f16_file, w6a16, n);
    double e8 = rms_rel(w8_file, w6a16, n);
    printf("RMS error: fp16 vs fp %.4g, w8a8 vs fp %.4g; from the INT6 file: fp16 vs w6a16 %.4g, "
           "w8a8 vs w6a16 %.4g\n",
           d16, d8, e16, e8);
    assert_true(d16 > 0 && d16 < 0.01); /* fp16 rounding: ~1e-3 of each value */
    assert_true(d8 > 2 * d16 && d8 < 0.15);
    assert_true(e16 > 0 && e16 < 0.01);
    assert_true(e8 > 2 * e16 && e8 < 0.15);
    free(fp);
    free(f16);
    free(w8);
    free(w6a16);
    free(f16_file);
    free(w8_file);
}

static void test_rt_modes_impossible_modes_are_errors(void **state)
{
    modes_state *s = *state;
    char err[256] = "";
    assert_null(logits_in(s->file, RT_MODE_FP, NULL, err, sizeof err));
    assert_non_null(strstr(err, "source weights"));
    assert_null(logits_in(s->q, RT_MODE_FLEX, NULL, err, sizeof err)); /* bits undecided */
    assert_non_null(strstr(err, "activation bits"));
    rt_mode m;
    assert_int_equal(rt_mode_parse("w6a8", &m), 0);
    assert_int_equal(m, RT_MODE_W6A8);
    assert_int_equal(rt_mode_parse("w4a4", &m), FQ_EINVAL);
    assert_string_equal(rt_mode_name(RT_MODE_FLEX), "flex");
    assert_int_equal(rt_mode_parse("fp16", &m), 0);
    assert_int_equal(m, RT_MODE_FP16);
    assert_int_equal(rt_mode_parse("w8a8", &m), 0);
    assert_int_equal(m, RT_MODE_W8A8);
    assert_string_equal(rt_mode_name((rt_mode)(RT_MODE_LAST + 1)), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rt_modes_error_grows_as_bits_shrink),
        cmocka_unit_test(test_rt_modes_flex_equals_fixed_bits),
        cmocka_unit_test(test_rt_modes_int6_file_matches_in_memory_quantization),
        cmocka_unit_test(test_rt_modes_comparison_modes_run_their_math),
        cmocka_unit_test(test_rt_modes_impossible_modes_are_errors),
    };
    return cmocka_run_group_tests_name("rt_modes", tests, setup, teardown);
}

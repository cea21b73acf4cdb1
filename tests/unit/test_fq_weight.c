/* test_fq_weight.c — INT6 weight quantization: scales, codes, round-half-even, clamping, the
 * dequantization error bound, and whole-checkpoint quantization of a generated tiny model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "fq_ckpt.h"
#include "fq_pack.h"
#include "fq_weight.h"
#include "tc_tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* A quantized matrix and its dequantized copy. */
typedef struct qmat {
    int64_t n, k;
    int32_t g;
    uint8_t *packed;  /* [n, row_bytes] */
    uint16_t *scales; /* [n, k / g] */
    int8_t *codes;    /* [n, k] */
    float *deq;       /* [n, k] */
} qmat;

static void qmat_make(qmat *q, const float *w, int64_t n, int64_t k, int32_t g)
{
    int64_t rb = fq_pack_row_bytes(k);
    *q = (qmat){.n = n, .k = k, .g = g};
    q->packed = malloc((size_t)(n * rb));
    q->scales = malloc((size_t)(n * (k / g)) * sizeof *q->scales);
    q->codes = malloc((size_t)(n * k));
    q->deq = malloc((size_t)(n * k) * sizeof *q->deq);
    assert_true(q->packed && q->scales && q->codes && q->deq);
    fq_weight_quantize(w, n, k, g, q->packed, q->scales);
    fq_weight_dequantize(q->packed, q->scales, n, k, g, q->deq);
    for (int64_t r = 0; r < n; r++)
        fq_unpack_row(q->packed + r * rb, k, q->codes + r * k);
}

static void qmat_free(qmat *q)
{
    free(q->packed);
    free(q->scales);
    free(q->codes);
    free(q->deq);
}

/* Every property the header promises, group by group. */
static void check_qmat(const qmat *q, const float *w)
{
    int64_t ng = q->k / q->g;
    for (int64_t r = 0; r < q->n; r++)
        for (int64_t gi = 0; gi < ng; gi++) {
            const float *wg = w + r * q->k + gi * q->g;
            float amax = 0.0f;
            for (int32_t j = 0; j < q->g; j++)
                amax = fmaxf(amax, fabsf(wg[j]));
            float want = fminf(fmaxf(amax / 31.0f, 1e-5f), 1e4f);
            uint16_t sb = q->scales[r * ng + gi];
            assert_int_equal(sb, fq_f32_to_f16(want));
            assert_int_equal(sb, fq_weight_scale(amax));
            double s = fq_f16_to_f32(sb);
            bool lo_clamp = amax / 31.0f < 1e-5f; /* codes stay below 31 */
            bool hi_clamp = amax / 31.0f > 1e4f;  /* codes clamp at -32 / 31 */
            int max_abs = 0;
            for (int32_t j = 0; j < q->g; j++) {
                int64_t i = r * q->k + gi * q->g + j;
                int c = q->codes[i];
                assert_in_range(c + 32, 0, 63);
                max_abs = abs(c) > max_abs ? abs(c) : max_abs;
                assert_true((double)q->deq[i] == s * c); /* s * q, exactly */
                if (!hi_clamp && fabs((double)w[i] - s * c) > s * 0.5 * (1.0 + 1e-6))
                    fail_msg("w[%lld] = %.9g: code %d of scale %.9g is off by more than s/2",
                             (long long)i, w[i], c, s);
            }
            if (!lo_clamp && !hi_clamp && amax > 0.0f && max_abs != 31 && max_abs != 32)
                fail_msg("row %lld group %lld: largest |code| %d", (long long)r, (long long)gi,
                         max_abs);
        }
}

static void test_fq_weight_random_rows_round_trip_within_half_a_step(void **state)
{
    (void)state;
    const int64_t ks[] = {64, 96, 576};
    const int32_t gs[] = {32, 64, 128};
    uint64_t seed = 7;
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 3; b++) {
            int64_t n = 13, k = ks[a];
            int32_t g = gs[b];
            if (k % g)
                continue;
            float *w = malloc((size_t)(n * k) * sizeof *w);
            assert_non_null(w);
            for (int64_t r = 0; r < n; r++) {
                float mag = powf(10.0f, (float)(r % 7) - 4.0f); /* 1e-4 .. 1e2 */
                for (int64_t i = 0; i < k; i++)
                    w[r * k + i] = frand(&seed) * mag;
            }
            qmat q;
            qmat_make(&q, w, n, k, g);
            check_qmat(&q, w);
            qmat_free(&q);
            free(w);
        }
}

static void test_fq_weight_rounds_half_to_even(void **state)
{
    (void)state;
    /* absmax 15.5 gives the exact scale 0.5: every w below is exactly (half-integer) * 0.5 */
    float w[32] = {15.5f, 0.25f, 0.75f, 1.25f, 1.75f, -0.25f, -0.75f, -1.25f, 3.75f, -15.25f};
    int8_t want[32] = {31, 0, 2, 2, 4, 0, -2, -2, 8, -30};
    uint8_t packed[48];
    uint16_t scale;
    fq_weight_quantize(w, 1, 32, 32, packed, &scale);
    assert_int_equal(scale, 0x3800); /* fp16 0.5 */
    int8_t q[32];
    fq_unpack_row(packed, 32, q);
    assert_memory_equal(q, want, 32);
}

static void test_fq_weight_zero_rows_get_the_minimum_scale(void **state)
{
    (void)state;
    float w[2 * 64] = {0};
    w[64 + 5] = 1e-7f; /* tiny: the scale clamps to 1e-5 as well, and the code is 0 */
    uint8_t packed[2 * 48];
    uint16_t scales[2 * 2];
    fq_weight_quantize(w, 2, 64, 32, packed, scales);
    for (int i = 0; i < 4; i++)
        assert_int_equal(scales[i], fq_f32_to_f16(1e-5f));
    assert_true(fq_f16_to_f32(scales[0]) >= 1e-5f);
    int8_t q[64];
    for (int r = 0; r < 2; r++) {
        fq_unpack_row(packed + r * 48, 64, q);
        for (int i = 0; i < 64; i++)
            assert_int_equal(q[i], 0);
    }
}

static void test_fq_weight_huge_values_clamp_scale_and_codes(void **state)
{
    (void)state;
    float w[32] = {1e6f, -1e6f, 5e4f, -5e4f, 3.2e5f, -3.3e5f, 0.0f, 1e4f};
    uint8_t packed[48];
    uint16_t scale;
    fq_weight_quantize(w, 1, 32, 32, packed, &scale);
    assert_int_equal(scale, fq_f32_to_f16(1e4f));
    assert_true(fq_f16_to_f32(scale) == 1e4f);
    int8_t q[32];
    fq_unpack_row(packed, 32, q);
    int8_t want[8] = {31, -32, 5, -5, 31, -32, 0, 1};
    assert_memory_equal(q, want, 8);
}

static void test_fq_weight_scale_is_fp16_of_absmax_over_31(void **state)
{
    (void)state;
    assert_int_equal(fq_weight_scale(31.0f), 0x3C00); /* 1.0 */
    assert_int_equal(fq_weight_scale(15.5f), 0x3800); /* 0.5 */
    assert_int_equal(fq_weight_scale(0.0f), fq_f32_to_f16(1e-5f));
    assert_int_equal(fq_weight_scale(1e9f), fq_f32_to_f16(1e4f));
    assert_int_equal(fq_weight_scale(NAN), fq_f32_to_f16(1e-5f));
    assert_int_equal(fq_weight_scale(1.0f), fq_f32_to_f16(1.0f / 31.0f));
}

/* ---- whole checkpoint ---- */

typedef struct ck_state {
    char dir[512];
    fq_ckpt *ck;
} ck_state;

static int ck_setup(void **state)
{
    ck_state *s = calloc(1, sizeof *s);
    if (!s || tc_mkdtemp(s->dir, sizeof s->dir) != 0) {
        free(s);
        return -1;
    }
    tc_tiny_params p = tc_tiny_default_params();
    char path[600], err[512] = "";
    snprintf(path, sizeof path, "%s/tiny.gguf", s->dir);
    if (tc_tiny_model_write(s->dir, &p) != 0 || fq_ckpt_load(path, &s->ck, err, sizeof err) != 0) {
        print_error("tiny model: %s\n", err);
        tc_rmtree(s->dir);
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int ck_teardown(void **state)
{
    ck_state *s = *state;
    fq_ckpt_destroy(s->ck);
    tc_rmtree(s->dir);
    free(s);
    return 0;
}

typedef struct progress_log {
    int64_t calls, last_done, total;
    char names[64][FQ_TENSOR_NAME_MAX];
} progress_log;

static void on_progress(void *ud, int64_t done, int64_t total, const char *name)
{
    progress_log *p = ud;
    assert_int_equal(done, p->last_done + 1);
    if (p->calls < 64)
        snprintf(p->names[p->calls], FQ_TENSOR_NAME_MAX, "%s", name);
    p->calls++;
    p->last_done = done;
    p->total = total;
}

static void test_fq_qmodel_quantizes_every_linear_of_a_checkpoint(void **state)
{
    ck_state *s = *state;
    const fq_ckpt *ck = s->ck;
    progress_log log = {0};
    fq_qmodel *qm = NULL;
    char err[256] = "";
    assert_int_equal(fq_qmodel_quantize(ck, 0, on_progress, &log, &qm, err, sizeof err), 0);
    assert_non_null(qm);
    assert_int_equal(qm->n_layer, ck->cfg.n_layer);
    assert_int_equal(qm->group_request, 0);
    int64_t total = (int64_t)ck->cfg.n_layer * FQ_LIN_COUNT;
    assert_int_equal(log.calls, total);
    assert_int_equal(log.total, total);
    for (int64_t i = 0; i < total; i++) {
        char name[FQ_TENSOR_NAME_MAX];
        snprintf(name, sizeof name, "blk.%d.%s", (int)(i / FQ_LIN_COUNT),
                 fq_lin_name((fq_lin_type)(i % FQ_LIN_COUNT)));
        assert_string_equal(log.names[i], name);
        const fq_tensor *t = fq_ckpt_find(ck, name);
        assert_non_null(t);
        const fq_qlinear *l = &qm->lin[i];
        assert_int_equal(l->n_out, t->shape[0]);
        assert_int_equal(l->n_in, t->shape[1]);
        assert_int_equal(l->group, fq_group_size(t->shape[1], 0));
        assert_int_equal(l->row_bytes, fq_pack_row_bytes(t->shape[1]));
        assert_int_equal(l->abits, 8);
        qmat q;
        qmat_make(&q, t->data, l->n_out, l->n_in, l->group);
        assert_memory_equal(l->packed, q.packed, (size_t)(l->n_out * l->row_bytes));
        assert_memory_equal(l->scales, q.scales,
                            (size_t)(l->n_out * (l->n_in / l->group)) * sizeof *l->scales);
        check_qmat(&q, t->data);
        qmat_free(&q);
    }
    /* the tiny model's K = n_embd = 64 and K = n_ff = 96 */
    assert_int_equal(qm->lin[FQ_LIN_Q].group, 64);
    assert_int_equal(qm->lin[FQ_LIN_DOWN].group, 32);
    fq_qmodel_destroy(qm);
    fq_qmodel_destroy(NULL);
}

static void test_fq_qmodel_refuses_a_group_size_that_does_not_divide_k(void **state)
{
    ck_state *s = *state;
    fq_qmodel *qm = (fq_qmodel *)1;
    char err[256] = "";
    assert_int_equal(fq_qmodel_quantize(s->ck, 128, NULL, NULL, &qm, err, sizeof err), FQ_EINVAL);
    assert_null(qm);
    assert_non_null(strstr(err, "blk.0.attn_q"));
    assert_non_null(strstr(err, "K = 64"));
    assert_int_equal(fq_qmodel_quantize(s->ck, 64, NULL, NULL, &qm, err, sizeof err), FQ_EINVAL);
    assert_non_null(strstr(err, "blk.0.ffn_down"));
    assert_non_null(strstr(err, "K = 96"));
    assert_int_equal(fq_qmodel_quantize(s->ck, 48, NULL, NULL, &qm, err, sizeof err), FQ_EINVAL);
    assert_non_null(strstr(err, "48"));
    assert_int_equal(fq_qmodel_quantize(s->ck, 32, NULL, NULL, &qm, err, sizeof err), 0);
    assert_int_equal(qm->group_request, 32);
    for (int64_t i = 0; i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++)
        assert_int_equal(qm->lin[i].group, 32);
    fq_qmodel_destroy(qm);
}

static void test_fq_qmodel_names_a_missing_linear(void **state)
{
    ck_state *s = *state;
    fq_tensor *t = (fq_tensor *)fq_ckpt_find(s->ck, "blk.1.ffn_up");
    assert_non_null(t);
    snprintf(t->name, sizeof t->name, "blk.1.ffn_up_renamed");
    fq_qmodel *qm = (fq_qmodel *)1;
    char err[256] = "";
    assert_int_equal(fq_qmodel_quantize(s->ck, 0, NULL, NULL, &qm, err, sizeof err), FQ_ENOTFOUND);
    assert_null(qm);
    assert_non_null(strstr(err, "blk.1.ffn_up"));
    snprintf(t->name, sizeof t->name, "blk.1.ffn_up");
}

/* Linears large enough to be split over threads give the same bytes as one call. */
static void test_fq_qmodel_threads_give_the_same_bytes(void **state)
{
    (void)state;
    char dir[512], path[600], err[512] = "";
    assert_int_equal(tc_mkdtemp(dir, sizeof dir), 0);
    tc_tiny_params p = tc_tiny_default_params();
    p.n_layer = 1;
    p.n_embd = 256;
    p.n_ff = 416; /* K = 416 of ffn_down: group 32 */
    assert_int_equal(tc_tiny_model_write(dir, &p), 0);
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    fq_ckpt *ck = NULL;
    assert_int_equal(fq_ckpt_load(path, &ck, err, sizeof err), 0);
    fq_qmodel *qm = NULL;
    assert_int_equal(fq_qmodel_quantize(ck, 0, NULL, NULL, &qm, err, sizeof err), 0);
    for (int i = 0; i < FQ_LIN_COUNT; i++) {
        const fq_qlinear *l = &qm->lin[i];
        char name[FQ_TENSOR_NAME_MAX];
        snprintf(name, sizeof name, "blk.0.%s", fq_lin_name((fq_lin_type)i));
        const fq_tensor *t = fq_ckpt_find(ck, name);
        assert_non_null(t);
        qmat q;
        qmat_make(&q, t->data, l->n_out, l->n_in, l->group);
        assert_memory_equal(l->packed, q.packed, (size_t)(l->n_out * l->row_bytes));
        assert_memory_equal(l->scales, q.scales,
                            (size_t)(l->n_out * (l->n_in / l->group)) * sizeof *l->scales);
        qmat_free(&q);
    }
    assert_int_equal(qm->lin[FQ_LIN_DOWN].group, 32);
    assert_int_equal(qm->lin[FQ_LIN_UP].group, 128);
    fq_qmodel_destroy(qm);
    fq_ckpt_destroy(ck);
    tc_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fq_weight_random_rows_round_trip_within_half_a_step),
        cmocka_unit_test(test_fq_weight_rounds_half_to_even),
        cmocka_unit_test(test_fq_weight_zero_rows_get_the_minimum_scale),
        cmocka_unit_test(test_fq_weight_huge_values_clamp_scale_and_codes),
        cmocka_unit_test(test_fq_weight_scale_is_fp16_of_absmax_over_31),
        cmocka_unit_test_setup_teardown(test_fq_qmodel_quantizes_every_linear_of_a_checkpoint,
                                        ck_setup, ck_teardown),
        cmocka_unit_test_setup_teardown(test_fq_qmodel_refuses_a_group_size_that_does_not_divide_k,
                                        ck_setup, ck_teardown),
        cmocka_unit_test_setup_teardown(test_fq_qmodel_names_a_missing_linear, ck_setup,
                                        ck_teardown),
        cmocka_unit_test(test_fq_qmodel_threads_give_the_same_bytes),
    };
    return cmocka_run_group_tests_name("fq_weight", tests, NULL, NULL);
}

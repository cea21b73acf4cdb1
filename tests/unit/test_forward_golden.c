/* test_forward_golden.c — the CPU forward pass on the real default model against HF transformers:
 * logits within 1e-3 of max |logit| and identical 32-token greedy continuations on the golden
 * prompts (tests/data/golden, written by tests/ref/hf_forward_ref.py). Skips (77) without the
 * model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_base.h"
#include "rt_model.h"
#include "rt_runner.h"
#include "rt_tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_GEN       32
#define MAX_PROMPTS 8

typedef struct golden {
    int32_t n;
    int32_t *ids[MAX_PROMPTS], n_ids[MAX_PROMPTS];
    int32_t greedy[MAX_PROMPTS][N_GEN];
    char *prompt[MAX_PROMPTS];
    float *logits_prompt[MAX_PROMPTS], *logits_gen31[MAX_PROMPTS];
} golden;

typedef struct gstate {
    rt_model *m;
    rt_runner *r;
    golden g;
} gstate;

static float *read_f32(const char *dir, const char *name, int32_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    float *v = malloc((size_t)n * sizeof *v);
    if (!f || !v || fread(v, sizeof *v, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        free(v);
        v = NULL;
    }
    if (f)
        fclose(f);
    return v;
}

static int32_t *ids_of(json_t *arr, int32_t *n)
{
    *n = (int32_t)json_array_size(arr);
    int32_t *v = malloc((size_t)*n * sizeof *v + 1);
    for (int32_t i = 0; v && i < *n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return v;
}

static int load_golden(golden *g, int32_t n_vocab)
{
    const char *src = getenv("FLEXQ_SRCDIR");
    char dir[900], path[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/golden", src ? src : ".");
    snprintf(path, sizeof path, "%s/forward.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    json_t *prompts = json_object_get(root, "prompts");
    if (!json_is_array(prompts) || json_array_size(prompts) > MAX_PROMPTS) {
        fprintf(stderr, "%s: %s\n", path, je.text);
        json_decref(root);
        return -1;
    }
    g->n = (int32_t)json_array_size(prompts);
    for (int32_t i = 0; i < g->n; i++) {
        json_t *p = json_array_get(prompts, (size_t)i);
        int32_t n_greedy = 0;
        int32_t *gr = ids_of(json_object_get(p, "greedy"), &n_greedy);
        if (!gr || n_greedy != N_GEN) {
            free(gr);
            json_decref(root);
            return -1;
        }
        memcpy(g->greedy[i], gr, sizeof g->greedy[i]);
        free(gr);
        g->ids[i] = ids_of(json_object_get(p, "ids"), &g->n_ids[i]);
        g->prompt[i] = strdup(json_string_value(json_object_get(p, "prompt")));
        g->logits_prompt[i] =
            read_f32(dir, json_string_value(json_object_get(p, "logits_prompt_last")), n_vocab);
        g->logits_gen31[i] =
            read_f32(dir, json_string_value(json_object_get(p, "logits_gen31")), n_vocab);
        if (!g->logits_prompt[i] || !g->logits_gen31[i]) {
            json_decref(root);
            return -1;
        }
    }
    json_decref(root);
    return 0;
}

static int setup(void **state)
{
    const char *path = getenv("FLEXQ_MODEL");
    if (!path || access(path, R_OK) != 0) {
        fprintf(stderr, "default model not found (FLEXQ_MODEL=%s): skipping\n", path ? path : "");
        exit(77);
    }
    gstate *s = calloc(1, sizeof *s);
    char err[1024] = "";
    if (rt_model_load(path, &s->m, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    rt_backend_params bp = rt_backend_default_params();
    bp.kv.n_blocks = 64;
    if (rt_runner_create(s->m, "cpu", &bp, &s->r, err, sizeof err) != 0 ||
        load_golden(&s->g, s->m->cfg.n_vocab) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    gstate *s = *state;
    for (int32_t i = 0; i < s->g.n; i++) {
        free(s->g.ids[i]);
        free(s->g.prompt[i]);
        free(s->g.logits_prompt[i]);
        free(s->g.logits_gen31[i]);
    }
    rt_runner_destroy(s->r);
    rt_model_destroy(s->m);
    free(s);
    return 0;
}

static double rel_diff(const float *got, const float *want, int32_t n)
{
    double md = 0, mx = 0;
    for (int32_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)got[i] - want[i]));
        mx = fmax(mx, fabs((double)want[i]));
    }
    return md / mx;
}

static void test_forward_golden_tokenizer_gives_golden_ids(void **state)
{
    gstate *s = *state;
    rt_encode_params ep = rt_encode_default_params();
    for (int32_t i = 0; i < s->g.n; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        char err[256];
        assert_int_equal(rt_tokenizer_encode(s->m->tok, s->g.prompt[i], strlen(s->g.prompt[i]), &ep,
                                             &ids, &n, err, sizeof err),
                         0);
        assert_int_equal(n, s->g.n_ids[i]);
        assert_memory_equal(ids, s->g.ids[i], n * sizeof *ids);
        free(ids);
    }
}

static void test_forward_golden_prompt_logits_match_hf(void **state)
{
    gstate *s = *state;
    int32_t nv = s->m->cfg.n_vocab;
    float *logits = malloc((size_t)nv * sizeof *logits);
    for (int32_t i = 0; i < s->g.n; i++) {
        char err[256];
        assert_int_equal(
            rt_runner_last_logits(s->r, s->g.ids[i], s->g.n_ids[i], logits, err, sizeof err), 0);
        double d = rel_diff(logits, s->g.logits_prompt[i], nv);
        printf("prompt %d: max |diff| / max |logit| = %.3g\n", i, d);
        if (d > 1e-3)
            fail_msg("prompt %d: logits differ from HF by %g of max |logit|", i, d);
    }
    free(logits);
}

static void test_forward_golden_batched_greedy_matches_hf(void **state)
{
    gstate *s = *state;
    int32_t nv = s->m->cfg.n_vocab, n = s->g.n;
    int32_t out[MAX_PROMPTS * N_GEN], n_out[MAX_PROMPTS];
    float *last = malloc((size_t)n * nv * sizeof *last);
    rt_greedy_params gp = rt_greedy_default_params();
    gp.max_new_tokens = N_GEN;
    gp.stop_at_eos = false;
    char err[256] = "";
    int rc = rt_runner_greedy(s->r, (const int32_t *const *)s->g.ids, s->g.n_ids, n, &gp, out,
                              n_out, last, err, sizeof err);
    if (rc)
        fail_msg("greedy: %s", err);
    for (int32_t i = 0; i < n; i++) {
        assert_int_equal(n_out[i], N_GEN);
        for (int32_t t = 0; t < N_GEN; t++)
            if (out[i * N_GEN + t] != s->g.greedy[i][t])
                fail_msg("prompt %d token %d: got %d, HF %d", i, t, out[i * N_GEN + t],
                         s->g.greedy[i][t]);
        double d = rel_diff(last + (int64_t)i * nv, s->g.logits_gen31[i], nv);
        printf("prompt %d after 31 generated tokens: max |diff| / max |logit| = %.3g\n", i, d);
        if (d > 1e-3)
            fail_msg("prompt %d: decode logits differ from HF by %g of max |logit|", i, d);
    }
    free(last);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_golden_tokenizer_gives_golden_ids),
        cmocka_unit_test(test_forward_golden_prompt_logits_match_hf),
        cmocka_unit_test(test_forward_golden_batched_greedy_matches_hf),
    };
    return cmocka_run_group_tests_name("forward_golden", tests, setup, teardown);
}

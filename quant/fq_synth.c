/* fq_synth.c — synthetic INT6 models of real LLaMA shapes (contract: fq_synth.h).
 *
 * Randomness: a splitmix64 counter stream per tensor (seeded by the model seed and the tensor's
 * index), so the file depends only on the seed — not on how many worker threads generate the
 * linears (each takes the next linear from a shared counter). A code is a clipped normal: the sum of four
 * random bytes (Irwin–Hall, near-normal) scaled so that the group absmax lands near 31, the way
 * absmax scaling puts real weights there; the group's fp16 scale is 0.02 * 2.6 / 31 jittered by up
 * to ±12.5 %, so weights come out about N(0, 0.02) like trained LLaMA linears.
 */
#include "fq_synth.h"

#include "fq_base.h"
#include "fq_pack.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SY_STD      0.02f /* spread of the synthetic weights and embeddings */
#define SY_GROUP    128
#define SY_SUM_MEAN 510.0f /* four bytes: mean 4 * 127.5 */
#define SY_SUM_STD  147.8f /* four bytes: sqrt(4 * (256^2 - 1) / 12) */

typedef struct sy_preset {
    const char *name;
    int32_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    float rope_theta, norm_eps;
    bool tied;
} sy_preset;

static const sy_preset sy_presets[] = {
    {"llama-2-7b", 32, 4096, 11008, 32, 32, 32000, 4096, 10000.0f, 1e-5f, false},
    {"llama-2-13b", 40, 5120, 13824, 40, 40, 32000, 4096, 10000.0f, 1e-5f, false},
    {"llama-3-8b", 32, 4096, 14336, 32, 8, 128256, 8192, 500000.0f, 1e-5f, false},
    {"tiny", 2, 256, 512, 4, 2, 0, 512, 10000.0f, 1e-5f, true},
};

fq_synth_params fq_synth_default_params(void)
{
    fq_synth_params p;
    memset(&p, 0, sizeof p);
    p.preset = "llama-2-7b";
    p.seed = 1;
    return p;
}

const char *fq_synth_presets(void)
{
    return "llama-2-7b, llama-2-13b, llama-3-8b, tiny";
}

int fq_synth_config(const char *preset, fq_config *cfg, char *err, size_t err_len)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; preset && i < sizeof sy_presets / sizeof sy_presets[0]; i++) {
        const sy_preset *s = &sy_presets[i];
        if (strcmp(s->name, preset) != 0)
            continue;
        snprintf(cfg->arch, sizeof cfg->arch, "llama");
        cfg->n_layer = s->n_layer;
        cfg->n_embd = s->n_embd;
        cfg->n_ff = s->n_ff;
        cfg->n_head = s->n_head;
        cfg->n_head_kv = s->n_head_kv;
        cfg->head_dim = s->n_embd / s->n_head;
        cfg->n_vocab = s->n_vocab;
        cfg->n_ctx = s->n_ctx;
        cfg->rope_theta = s->rope_theta;
        cfg->norm_eps = s->norm_eps;
        cfg->tied_embeddings = s->tied;
        cfg->rope_style = FQ_ROPE_HALF;
        return 0;
    }
    return fq_err(err, err_len, FQ_EINVAL, "unknown synthetic model '%s' (known: %s)",
                  preset ? preset : "(null)", fq_synth_presets());
}

/* ---- random numbers ---- */

static uint64_t sy_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* About N(0, 1) from four random bytes of w (Irwin–Hall). */
static float sy_normal4(uint32_t w)
{
    const float sum = (float)((w & 255u) + ((w >> 8) & 255u) + ((w >> 16) & 255u) + (w >> 24));
    return (sum - SY_SUM_MEAN) / SY_SUM_STD;
}

static void sy_fill_normal(float *x, int64_t n, float std, uint64_t *state)
{
    for (int64_t i = 0; i < n; i += 2) {
        const uint64_t r = sy_next(state);
        x[i] = std * sy_normal4((uint32_t)r);
        if (i + 1 < n)
            x[i + 1] = std * sy_normal4((uint32_t)(r >> 32));
    }
}

/* ---- the linears ---- */

/* One row of k codes, about N(0, 31 / 2.6) clipped to [-32, 31]. */
static void sy_codes(int8_t *q, int64_t k, uint64_t *state)
{
    const float c = 31.0f / 2.6f;
    for (int64_t i = 0; i < k; i += 2) {
        const uint64_t r = sy_next(state);
        for (int h = 0; h < 2 && i + h < k; h++) {
            float v = rintf(c * sy_normal4((uint32_t)(r >> (32 * h))));
            v = v < (float)FQ_QMIN ? (float)FQ_QMIN : v > (float)FQ_QMAX ? (float)FQ_QMAX : v;
            q[i + h] = (int8_t)v;
        }
    }
}

static int sy_linear(fq_qlinear *ql, int64_t n, int64_t k, int32_t abits, uint64_t seed)
{
    memset(ql, 0, sizeof *ql);
    ql->n_out = n;
    ql->n_in = k;
    ql->group = SY_GROUP;
    ql->row_bytes = fq_pack_row_bytes(k);
    ql->abits = abits;
    ql->packed = fq_malloc_array((size_t)n, (size_t)ql->row_bytes);
    ql->scales = fq_malloc_array((size_t)(n * (k / SY_GROUP)), sizeof *ql->scales);
    int8_t *q = fq_malloc_array((size_t)k, 1);
    if (!ql->packed || !ql->scales || !q) {
        free(q);
        return FQ_ENOMEM;
    }
    uint64_t state = seed;
    const float s0 = SY_STD * 2.6f / 31.0f;
    for (int64_t r = 0; r < n; r++) {
        sy_codes(q, k, &state);
        fq_pack_row(q, k, ql->packed + r * ql->row_bytes);
        for (int64_t g = 0; g < k / SY_GROUP; g++) {
            const float jitter =
                1.0f + 0.25f * ((float)(sy_next(&state) >> 40) / 16777216.0f - 0.5f);
            ql->scales[r * (k / SY_GROUP) + g] = fq_f32_to_f16(s0 * jitter);
        }
    }
    free(q);
    return 0;
}

/* The linears of a model, shared by the workers: each takes the next index until none is left. */
typedef struct sy_work {
    const fq_config *c;
    fq_qmodel *qm;
    uint64_t seed;
    atomic_long next;
    atomic_int rc; /* the first failure, 0 while none */
} sy_work;

static void *sy_worker(void *arg)
{
    sy_work *w = arg;
    const long n = (long)w->c->n_layer * FQ_LIN_COUNT;
    for (long i = atomic_fetch_add(&w->next, 1); i < n && atomic_load(&w->rc) == 0;
         i = atomic_fetch_add(&w->next, 1)) {
        int64_t rows, k;
        const int t = (int)(i % FQ_LIN_COUNT);
        fq_lin_shape(w->c, (fq_lin_type)t, &rows, &k);
        const int rc = sy_linear(&w->qm->lin[i], rows, k, t == FQ_LIN_DOWN ? 8 : 6,
                                 w->seed ^ (0x51ED0000ull + (uint64_t)i * 0x100000001ull));
        if (rc) {
            int none = 0;
            atomic_compare_exchange_strong(&w->rc, &none, rc);
        }
    }
    return NULL;
}

#define SY_MAX_THREADS 64

static int sy_qmodel(const fq_config *c, uint64_t seed, int32_t n_threads, fq_qmodel **out)
{
    fq_qmodel *qm = calloc(1, sizeof *qm);
    if (!qm)
        return FQ_ENOMEM;
    qm->n_layer = c->n_layer;
    qm->group_request = SY_GROUP;
    qm->lin = fq_calloc_array((size_t)c->n_layer * FQ_LIN_COUNT, sizeof *qm->lin);
    if (!qm->lin) {
        free(qm);
        return FQ_ENOMEM;
    }
    if (n_threads <= 0) {
        const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus > 0 ? (int32_t)cpus : 1;
    }
    n_threads = n_threads < SY_MAX_THREADS ? n_threads : SY_MAX_THREADS;
    sy_work w = {.c = c, .qm = qm, .seed = seed};
    atomic_init(&w.next, 0);
    atomic_init(&w.rc, 0);
    pthread_t tids[SY_MAX_THREADS];
    int started = 0;
    for (int i = 1; i < n_threads; i++) /* the caller's thread is worker 0 */
        if (pthread_create(&tids[started], NULL, sy_worker, &w) == 0)
            started++;
    sy_worker(&w);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    const int rc = atomic_load(&w.rc);
    if (rc) {
        fq_qmodel_destroy(qm);
        return rc;
    }
    *out = qm;
    return 0;
}

/* ---- the checkpoint description ---- */

static fq_tensor *sy_add(fq_ckpt *ck, const char *name, int32_t n_dims, int64_t d0, int64_t d1)
{
    fq_tensor *t = &ck->tensors[ck->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->shape[0] = d0;
    t->shape[1] = n_dims == 2 ? d1 : 0;
    return t;
}

/* A tensor with data: normal(std) or, with std 0, all ones. */
static int sy_add_data(fq_ckpt *ck, const char *name, int32_t n_dims, int64_t d0, int64_t d1,
                       float std, uint64_t seed)
{
    fq_tensor *t = sy_add(ck, name, n_dims, d0, d1);
    const int64_t n = d0 * (n_dims == 2 ? d1 : 1);
    t->data = fq_malloc_array((size_t)n, sizeof *t->data);
    if (!t->data)
        return FQ_ENOMEM;
    if (std > 0.0f) {
        uint64_t state = seed;
        sy_fill_normal(t->data, n, std, &state);
    } else {
        for (int64_t i = 0; i < n; i++)
            t->data[i] = 1.0f;
    }
    return 0;
}

static int sy_ckpt(const fq_config *c, uint64_t seed, fq_ckpt *ck)
{
    const int32_t n_max = 3 + c->n_layer * (2 + FQ_LIN_COUNT);
    ck->tensors = fq_calloc_array((size_t)n_max, sizeof *ck->tensors);
    if (!ck->tensors)
        return FQ_ENOMEM;
    int rc = sy_add_data(ck, "token_embd", 2, c->n_vocab, c->n_embd, SY_STD, seed ^ 0xE1ull);
    if (!rc)
        rc = sy_add_data(ck, "output_norm", 1, c->n_embd, 0, 0.0f, 0);
    if (!rc && !c->tied_embeddings)
        rc = sy_add_data(ck, "output", 2, c->n_vocab, c->n_embd, SY_STD, seed ^ 0xE2ull);
    char name[FQ_TENSOR_NAME_MAX];
    for (int32_t l = 0; !rc && l < c->n_layer; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm", l);
        rc = sy_add_data(ck, name, 1, c->n_embd, 0, 0.0f, 0);
        snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
        if (!rc)
            rc = sy_add_data(ck, name, 1, c->n_embd, 0, 0.0f, 0);
        for (int t = 0; !rc && t < FQ_LIN_COUNT; t++) {
            int64_t n, k;
            fq_lin_shape(c, (fq_lin_type)t, &n, &k);
            snprintf(name, sizeof name, "blk.%d.%s", l, fq_lin_name((fq_lin_type)t));
            sy_add(ck, name, 2, n, k); /* shape only: the weights live in the qmodel */
        }
    }
    return rc;
}

int fq_synth_build(const fq_synth_params *p, fq_tok_spec *tok, fq_ckpt **ck_out, fq_qmodel **qm_out,
                   char *err, size_t err_len)
{
    *ck_out = NULL;
    *qm_out = NULL;
    const fq_synth_params d = fq_synth_default_params();
    if (!p)
        p = &d;
    fq_ckpt *ck = calloc(1, sizeof *ck);
    if (!ck) {
        fq_tok_spec_free(tok);
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory");
    }
    ck->tok = *tok;
    memset(tok, 0, sizeof *tok);
    snprintf(ck->format, sizeof ck->format, "synthetic");
    snprintf(ck->path, sizeof ck->path, "synthetic:%s", p->preset ? p->preset : "(null)");
    int rc = fq_synth_config(p->preset, &ck->cfg, err, err_len);
    if (rc) {
        fq_ckpt_destroy(ck);
        return rc;
    }
    if (p->n_layer < 0 || p->n_layer > 1024) {
        fq_ckpt_destroy(ck);
        return fq_err(err, err_len, FQ_EINVAL, "layer count %d is not in 0..1024", p->n_layer);
    }
    if (p->n_layer > 0)
        ck->cfg.n_layer = p->n_layer;
    if (ck->cfg.n_vocab < ck->tok.n_tokens)
        ck->cfg.n_vocab = ck->tok.n_tokens;
    if (ck->cfg.n_vocab < 1) {
        fq_ckpt_destroy(ck);
        return fq_err(err, err_len, FQ_EINVAL, "the tokenizer has no tokens");
    }
    fq_qmodel *qm = NULL;
    rc = sy_ckpt(&ck->cfg, p->seed, ck);
    if (!rc)
        rc = sy_qmodel(&ck->cfg, p->seed, p->n_threads, &qm);
    if (!rc)
        rc = fq_ckpt_validate(ck, err, err_len);
    else
        fq_err(err, err_len, rc, "out of memory building synthetic model %s", p->preset);
    if (rc) {
        fq_qmodel_destroy(qm);
        fq_ckpt_destroy(ck);
        return rc;
    }
    *ck_out = ck;
    *qm_out = qm;
    return 0;
}

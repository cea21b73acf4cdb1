/* fq_weight.c — round-to-nearest INT6 weight quantization of every decoder linear of a checkpoint.
 *
 * fq_weight_quantize is a pure loop over rows: for each group, the fp16 scale of its absmax, then
 * the codes W / s rounded half to even (rintf under the default rounding mode) and clamped, packed
 * one 64-code chunk at a time. fq_qmodel_quantize first checks every linear (present, 2-D, a group
 * size dividing K) so that a bad checkpoint fails before any work, then quantizes the linears one
 * after another, each split by rows over the online CPUs (plain pthreads, joined per linear, so the
 * progress callback always runs on the caller's thread).
 */
#include "fq_weight.h"

#include "fq_base.h"
#include "fq_pack.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FQ_SCALE_MIN          1e-5f
#define FQ_SCALE_MAX          1e4f
#define FQ_QUANT_MAX_THREADS  16
#define FQ_QUANT_MIN_PARALLEL (1 << 16) /* weights below which threads cost more than they save */

void fq_lin_shape(const fq_config *c, fq_lin_type t, int64_t *n_out, int64_t *n_in)
{
    int64_t e = c->n_embd, qd = (int64_t)c->n_head * c->head_dim;
    int64_t kvd = (int64_t)c->n_head_kv * c->head_dim;
    switch (t) {
    case FQ_LIN_Q:
        *n_out = qd, *n_in = e;
        break;
    case FQ_LIN_K:
    case FQ_LIN_V:
        *n_out = kvd, *n_in = e;
        break;
    case FQ_LIN_O:
        *n_out = e, *n_in = qd;
        break;
    case FQ_LIN_GATE:
    case FQ_LIN_UP:
        *n_out = c->n_ff, *n_in = e;
        break;
    default:
        *n_out = e, *n_in = c->n_ff;
        break;
    }
}

const char *fq_lin_name(fq_lin_type t)
{
    static const char *const names[FQ_LIN_COUNT] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                    "ffn_gate", "ffn_up", "ffn_down"};
    return (int)t >= 0 && t < FQ_LIN_COUNT ? names[t] : "?";
}

uint16_t fq_weight_scale(float absmax)
{
    float s = absmax / (float)FQ_QMAX;
    if (!(s >= FQ_SCALE_MIN)) /* also catches nan */
        s = FQ_SCALE_MIN;
    if (s > FQ_SCALE_MAX)
        s = FQ_SCALE_MAX;
    return fq_f32_to_f16(s);
}

/* clamp(round_half_even(w / s), -32, 31); nan maps to 0. */
static int8_t quantize_one(float w, float s)
{
    float v = rintf(w / s);
    if (v != v)
        return 0;
    if (v < (float)FQ_QMIN)
        v = (float)FQ_QMIN;
    if (v > (float)FQ_QMAX)
        v = (float)FQ_QMAX;
    return (int8_t)v;
}

/* Scales of one row: scales[k / g]. */
static void row_scales(const float *w, int64_t k, int32_t g, uint16_t *scales)
{
    for (int64_t k0 = 0; k0 < k; k0 += g) {
        float absmax = 0.0f;
        for (int32_t j = 0; j < g; j++) {
            float a = fabsf(w[k0 + j]);
            absmax = a > absmax ? a : absmax;
        }
        scales[k0 / g] = fq_weight_scale(absmax);
    }
}

void fq_weight_quantize(const float *w, int64_t n, int64_t k, int32_t g, uint8_t *packed,
                        uint16_t *scales)
{
    FQ_ASSERT(g > 0 && k % g == 0);
    int64_t row_bytes = fq_pack_row_bytes(k), n_groups = k / g;
    for (int64_t r = 0; r < n; r++) {
        const float *wr = w + r * k;
        uint16_t *sr = scales + r * n_groups;
        row_scales(wr, k, g, sr);
        float s = 0.0f; /* scale of the current group */
        for (int64_t k0 = 0; k0 < k; k0 += FQ_PACK_CHUNK) {
            int8_t q[FQ_PACK_CHUNK];
            int64_t len = k - k0 < FQ_PACK_CHUNK ? k - k0 : FQ_PACK_CHUNK;
            for (int64_t j = 0; j < len; j++) {
                if (j == 0 || (k0 + j) % g == 0)
                    s = fq_f16_to_f32(sr[(k0 + j) / g]);
                q[j] = quantize_one(wr[k0 + j], s);
            }
            fq_pack_row(q, len, packed + r * row_bytes + k0 / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES);
        }
    }
}

void fq_weight_dequantize(const uint8_t *packed, const uint16_t *scales, int64_t n, int64_t k,
                          int32_t g, float *w)
{
    FQ_ASSERT(g > 0 && k % g == 0);
    int64_t row_bytes = fq_pack_row_bytes(k), n_groups = k / g;
    for (int64_t r = 0; r < n; r++) {
        for (int64_t k0 = 0; k0 < k; k0 += FQ_PACK_CHUNK) {
            int8_t q[FQ_PACK_CHUNK];
            int64_t len = k - k0 < FQ_PACK_CHUNK ? k - k0 : FQ_PACK_CHUNK;
            fq_unpack_row(packed + r * row_bytes + k0 / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES, len,
                          q);
            for (int64_t j = 0; j < len; j++)
                w[r * k + k0 + j] =
                    fq_f16_to_f32(scales[r * n_groups + (k0 + j) / g]) * (float)q[j];
        }
    }
}

/* ---- whole checkpoint ---- */

typedef struct quant_job {
    const float *w; /* [n_out, n_in] of the whole linear */
    fq_qlinear *lin;
    int64_t r0, r1; /* rows of this job */
} quant_job;

static void quant_job_run(const quant_job *j)
{
    const fq_qlinear *l = j->lin;
    int64_t n_groups = l->n_in / l->group;
    fq_weight_quantize(j->w + j->r0 * l->n_in, j->r1 - j->r0, l->n_in, l->group,
                       l->packed + j->r0 * l->row_bytes, l->scales + j->r0 * n_groups);
}

static void *quant_job_main(void *arg)
{
    quant_job_run(arg);
    return NULL;
}

static int quant_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > FQ_QUANT_MAX_THREADS ? FQ_QUANT_MAX_THREADS : (int)n;
}

/* Quantizes one linear, its rows split evenly over n_threads (the caller's thread included). A
 * thread that cannot be started leaves its rows to the caller, so this cannot fail. */
static void quantize_linear(const float *w, fq_qlinear *lin, int n_threads)
{
    if (lin->n_out * lin->n_in < FQ_QUANT_MIN_PARALLEL)
        n_threads = 1;
    if (n_threads > lin->n_out)
        n_threads = (int)lin->n_out;
    if (n_threads < 1)
        n_threads = 1;
    quant_job jobs[FQ_QUANT_MAX_THREADS];
    pthread_t tids[FQ_QUANT_MAX_THREADS];
    bool started[FQ_QUANT_MAX_THREADS] = {false};
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (quant_job){.w = w,
                              .lin = lin,
                              .r0 = lin->n_out * i / n_threads,
                              .r1 = lin->n_out * (i + 1) / n_threads};
        if (i > 0)
            started[i] = pthread_create(&tids[i], NULL, quant_job_main, &jobs[i]) == 0;
    }
    quant_job_run(&jobs[0]);
    for (int i = 1; i < n_threads; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            quant_job_run(&jobs[i]);
    }
}

/* The tensor of linear t in layer, checked to be 2-D with a group size dividing its K. */
static int find_linear(const fq_ckpt *ck, int32_t layer, fq_lin_type t, int32_t group_request,
                       const fq_tensor **out, int32_t *group, char *err, size_t err_len)
{
    char name[FQ_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, "blk.%d.%s", (int)layer, fq_lin_name(t));
    const fq_tensor *tn = fq_ckpt_find(ck, name);
    if (!tn)
        return fq_err(err, err_len, FQ_ENOTFOUND, "%s: tensor missing from the checkpoint", name);
    if (tn->n_dims != 2 || tn->shape[0] <= 0 || tn->shape[1] <= 0)
        return fq_err(err, err_len, FQ_EFORMAT, "%s: expected a 2-D [n_out, n_in] linear", name);
    int64_t k = tn->shape[1];
    int32_t g = fq_group_size(k, group_request);
    if (g == 0) {
        if (group_request == 0)
            return fq_err(err, err_len, FQ_EINVAL,
                          "%s: no group size of 128, 64 or 32 divides K = %lld", name,
                          (long long)k);
        return fq_err(err, err_len, FQ_EINVAL, "%s: group size %d does not divide K = %lld", name,
                      (int)group_request, (long long)k);
    }
    *out = tn;
    *group = g;
    return 0;
}

static int qlinear_alloc(fq_qlinear *l, int64_t n, int64_t k, int32_t g)
{
    l->n_out = n;
    l->n_in = k;
    l->group = g;
    l->row_bytes = fq_pack_row_bytes(k);
    l->abits = 8;
    l->packed = fq_malloc_array((size_t)n, (size_t)l->row_bytes);
    l->scales = fq_malloc_array((size_t)n, (size_t)(k / g) * sizeof *l->scales);
    return l->packed && l->scales ? 0 : FQ_ENOMEM;
}

int fq_qmodel_quantize(const fq_ckpt *ck, int32_t group_request, fq_progress_fn progress, void *ud,
                       fq_qmodel **out, char *err, size_t err_len)
{
    *out = NULL;
    if (group_request != 0 && group_request != 128 && group_request != 64 && group_request != 32)
        return fq_err(err, err_len, FQ_EINVAL, "group size %d: expected 0 (auto), 128, 64 or 32",
                      (int)group_request);
    int32_t n_layer = ck->cfg.n_layer;
    if (n_layer <= 0)
        return fq_err(err, err_len, FQ_EINVAL, "checkpoint has %d layers", (int)n_layer);
    int64_t total = (int64_t)n_layer * FQ_LIN_COUNT;
    const fq_tensor **src = fq_calloc_array((size_t)total, sizeof *src);
    int32_t *groups = fq_calloc_array((size_t)total, sizeof *groups);
    fq_qmodel *qm = calloc(1, sizeof *qm);
    int rc = src && groups && qm ? 0 : FQ_ENOMEM;
    if (rc == 0) {
        qm->n_layer = n_layer;
        qm->group_request = group_request;
        qm->lin = fq_calloc_array((size_t)total, sizeof *qm->lin);
        rc = qm->lin ? 0 : FQ_ENOMEM;
    }
    for (int64_t i = 0; rc == 0 && i < total; i++)
        rc = find_linear(ck, (int32_t)(i / FQ_LIN_COUNT), (fq_lin_type)(i % FQ_LIN_COUNT),
                         group_request, &src[i], &groups[i], err, err_len);
    for (int64_t i = 0; rc == 0 && i < total; i++)
        rc = qlinear_alloc(&qm->lin[i], src[i]->shape[0], src[i]->shape[1], groups[i]);
    if (rc == FQ_ENOMEM)
        fq_err(err, err_len, rc, "out of memory for the quantized model");
    int n_threads = quant_threads();
    for (int64_t i = 0; rc == 0 && i < total; i++) {
        quantize_linear(src[i]->data, &qm->lin[i], n_threads);
        if (progress)
            progress(ud, i + 1, total, src[i]->name);
    }
    free(src);
    free(groups);
    if (rc != 0) {
        fq_qmodel_destroy(qm);
        return rc;
    }
    *out = qm;
    return 0;
}

void fq_qmodel_destroy(fq_qmodel *qm)
{
    if (!qm)
        return;
    for (int64_t i = 0; qm->lin && i < (int64_t)qm->n_layer * FQ_LIN_COUNT; i++) {
        free(qm->lin[i].packed);
        free(qm->lin[i].scales);
    }
    free(qm->lin);
    free(qm);
}

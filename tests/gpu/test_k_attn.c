/* test_k_attn.c — the CUDA paged attention (k_attention) against the CPU reference
 * (rt_cpu_attn_* over fp32 copies of the fp16 cache) on decode, prefill and mixed batches with
 * shuffled block tables, for the head layouts 9/3 (hd 64), 32/32, 32/8, 64/8 (hd 128) and block
 * sizes 8, 16, 32; checks the fused quantized output bit for bit against fq_act_quantize of the
 * GPU's own fp32 output; prints decode and prefill timings (informational). Skips (77) without a
 * GPU.
 *
 * Tolerance: max |out - ref| <= 2e-3 * max |ref| over the case. The decode kernel is fp32 apart
 * from the summation order (~2e-7 relative). The prefill kernel multiplies on tensor cores with q
 * and the softmax weights P rounded to fp16 (relative error up to 2^-11 each, fp32 accumulation):
 * for rows with few keys the rounding of P does not average out and moves the output by up to
 * ~2^-11 * |v_i - v_j|; a CPU emulation of the kernel with these very inputs (q in [-3, 3], k and
 * v in [-1, 1]) gave at most 5e-4 of max |ref|, so 2e-3 leaves a margin of 4x while any indexing,
 * masking or softmax error moves outputs by O(max |ref|).
 *
 * Poisoning: cache slots that no sequence owns (and the tail of each sequence's last block) hold
 * fp16 NaN, unused block-table entries hold -1, the q buffer's k/v columns hold NaN, and the
 * outputs are NaN-filled before each call: reading outside the context or missing a write shows up
 * as a failure.
 */
#include "fq_act.h"
#include "k.h"
#include "k_attn.h"
#include "rt_cpu_math.h"
#include "rt_pool.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_REL  2e-3
#define MAX_SHOW 5
#define F16_NAN  0x7E00u
#define MAX_SEQS 64

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static float rng_unit(rng *r) /* uniform in [-1, 1) */
{
    return (float)((rng_next(r) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static int rng_int(rng *r, int n) /* uniform in [0, n) */
{
    return (int)((rng_next(r) >> 33) % (uint64_t)n);
}

/* fp16 bits of x, exact: x is 0 or a normal fp16 value (|x| >= 2^-14, at most 11 significant
 * bits), which the values k / 1024 with |k| <= 1024 used here all are. */
static uint16_t f16_exact(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t ax = u & 0x7FFFFFFFu;
    if (ax == 0)
        return sign;
    const uint32_t e = (ax >> 23) - 127 + 15;
    return (uint16_t)(sign | (e << 10) | ((ax & 0x7FFFFFu) >> 13));
}

typedef struct shape {
    int n_head, n_kv, hd;
} shape;

typedef struct seq_spec {
    int n_new, pos0;
} seq_spec;

/* A batch on the host: tables, q, and (when with_cache) the fp16 cache and its fp32 copy. */
typedef struct hbatch {
    shape sh;
    int bs, n_seqs, T, max_new, max_blocks, n_phys;
    long ldq, kv_dim, n_slots;
    int32_t *tok_seq, *tok_pos, *seq_tok0, *bt;
    float *q, *kf, *vf;
    uint16_t *kh, *vh;
} hbatch;

static void hbatch_free(hbatch *hb)
{
    free(hb->tok_seq);
    free(hb->tok_pos);
    free(hb->seq_tok0);
    free(hb->bt);
    free(hb->q);
    free(hb->kf);
    free(hb->vf);
    free(hb->kh);
    free(hb->vh);
    memset(hb, 0, sizeof *hb);
}

/* Fills one sequence's context 0 .. ctx-1 with random exactly-representable fp16 values. */
static void fill_seq_cache(hbatch *hb, int s, int ctx, rng *r)
{
    for (int p = 0; p < ctx; p++) {
        const long slot = (long)hb->bt[(long)s * hb->max_blocks + p / hb->bs] * hb->bs + p % hb->bs;
        for (long i = 0; i < hb->kv_dim; i++) {
            const float kx = (float)(rng_int(r, 2049) - 1024) / 1024.0f;
            const float vx = (float)(rng_int(r, 2049) - 1024) / 1024.0f;
            hb->kf[slot * hb->kv_dim + i] = kx;
            hb->vf[slot * hb->kv_dim + i] = vx;
            hb->kh[slot * hb->kv_dim + i] = f16_exact(kx);
            hb->vh[slot * hb->kv_dim + i] = f16_exact(vx);
        }
    }
}

static int hbatch_build(hbatch *hb, const shape *sh, int bs, const seq_spec *sp, int n_seqs,
                        int with_cache, rng *r)
{
    memset(hb, 0, sizeof *hb);
    hb->sh = *sh;
    hb->bs = bs;
    hb->n_seqs = n_seqs;
    int n_used = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int nb = (sp[s].pos0 + sp[s].n_new + bs - 1) / bs;
        n_used += nb;
        hb->max_blocks = nb > hb->max_blocks ? nb : hb->max_blocks;
        hb->T += sp[s].n_new;
        hb->max_new = sp[s].n_new > hb->max_new ? sp[s].n_new : hb->max_new;
    }
    hb->max_blocks += 2;     /* unused columns, set to -1 */
    hb->n_phys = n_used + 3; /* blocks no sequence owns, left NaN */
    hb->kv_dim = (long)sh->n_kv * sh->hd;
    hb->ldq = (long)(sh->n_head + 2 * sh->n_kv) * sh->hd; /* q inside a qkv row */
    hb->n_slots = (long)hb->n_phys * bs;
    hb->tok_seq = malloc((size_t)hb->T * sizeof(int32_t));
    hb->tok_pos = malloc((size_t)hb->T * sizeof(int32_t));
    hb->seq_tok0 = malloc((size_t)(n_seqs + 1) * sizeof(int32_t));
    hb->bt = malloc((size_t)n_seqs * hb->max_blocks * sizeof(int32_t));
    hb->q = malloc((size_t)hb->T * hb->ldq * sizeof(float));
    int32_t *perm = malloc((size_t)hb->n_phys * sizeof(int32_t));
    if (!hb->tok_seq || !hb->tok_pos || !hb->seq_tok0 || !hb->bt || !hb->q || !perm) {
        free(perm);
        hbatch_free(hb);
        return -1;
    }
    for (int i = 0; i < hb->n_phys; i++)
        perm[i] = i;
    for (int i = hb->n_phys - 1; i > 0; i--) { /* Fisher-Yates: blocks are not contiguous */
        const int j = rng_int(r, i + 1);
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int next = 0, t = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int nb = (sp[s].pos0 + sp[s].n_new + bs - 1) / bs;
        for (int i = 0; i < hb->max_blocks; i++)
            hb->bt[(long)s * hb->max_blocks + i] = i < nb ? perm[next++] : -1;
        hb->seq_tok0[s] = t;
        for (int i = 0; i < sp[s].n_new; i++, t++) {
            hb->tok_seq[t] = s;
            hb->tok_pos[t] = sp[s].pos0 + i;
        }
    }
    hb->seq_tok0[n_seqs] = t;
    free(perm);
    const long qd = (long)sh->n_head * sh->hd;
    for (long i = 0; i < (long)hb->T * hb->ldq; i++)
        hb->q[i] = i % hb->ldq < qd ? 3.0f * rng_unit(r) : NAN;
    if (!with_cache)
        return 0;
    const size_t n = (size_t)hb->n_slots * hb->kv_dim;
    hb->kf = malloc(n * sizeof(float));
    hb->vf = malloc(n * sizeof(float));
    hb->kh = malloc(n * sizeof(uint16_t));
    hb->vh = malloc(n * sizeof(uint16_t));
    if (!hb->kf || !hb->vf || !hb->kh || !hb->vh) {
        hbatch_free(hb);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        hb->kf[i] = hb->vf[i] = NAN;
        hb->kh[i] = hb->vh[i] = F16_NAN;
    }
    for (int s = 0; s < n_seqs; s++)
        fill_seq_cache(hb, s, sp[s].pos0 + sp[s].n_new, r);
    return 0;
}

/* The same batch in device memory; outputs sized for group g. */
typedef struct dbatch {
    float *q, *out, *s_out;
    uint16_t *kc, *vc;
    int8_t *q_out;
    int32_t *tok_seq, *tok_pos, *seq_tok0, *bt;
} dbatch;

static void dbatch_free(dbatch *db)
{
    cudaFree(db->q);
    cudaFree(db->out);
    cudaFree(db->s_out);
    cudaFree(db->kc);
    cudaFree(db->vc);
    cudaFree(db->q_out);
    cudaFree(db->tok_seq);
    cudaFree(db->tok_pos);
    cudaFree(db->seq_tok0);
    cudaFree(db->bt);
    memset(db, 0, sizeof *db);
}

static int upload(void **dst, const void *src, size_t n)
{
    CK(cudaMalloc(dst, n));
    CK(cudaMemcpy(*dst, src, n, cudaMemcpyHostToDevice));
    return 0;
}

/* Without a host cache the device cache is filled with the finite fp16 0x3C3C (~1.06). */
static int dbatch_upload(dbatch *db, const hbatch *hb, int g)
{
    memset(db, 0, sizeof *db);
    const size_t T = (size_t)hb->T, od = (size_t)hb->sh.n_head * hb->sh.hd;
    const size_t nc = (size_t)hb->n_slots * hb->kv_dim * sizeof(uint16_t);
    if (upload((void **)&db->q, hb->q, T * hb->ldq * sizeof(float)) ||
        upload((void **)&db->tok_seq, hb->tok_seq, T * sizeof(int32_t)) ||
        upload((void **)&db->tok_pos, hb->tok_pos, T * sizeof(int32_t)) ||
        upload((void **)&db->seq_tok0, hb->seq_tok0, (size_t)(hb->n_seqs + 1) * sizeof(int32_t)) ||
        upload((void **)&db->bt, hb->bt, (size_t)hb->n_seqs * hb->max_blocks * sizeof(int32_t)))
        return -1;
    if (hb->kh) {
        if (upload((void **)&db->kc, hb->kh, nc) || upload((void **)&db->vc, hb->vh, nc))
            return -1;
    } else {
        CK(cudaMalloc((void **)&db->kc, nc));
        CK(cudaMalloc((void **)&db->vc, nc));
        CK(cudaMemset(db->kc, 0x3C, nc));
        CK(cudaMemset(db->vc, 0x3C, nc));
    }
    CK(cudaMalloc((void **)&db->out, T * od * sizeof(float)));
    CK(cudaMalloc((void **)&db->q_out, T * od));
    CK(cudaMalloc((void **)&db->s_out, T * (od / (size_t)g) * sizeof(float)));
    return 0;
}

static k_attn_batch kbatch_of(const hbatch *hb, const dbatch *db)
{
    k_attn_batch b = {.n_tokens = hb->T,
                      .n_seqs = hb->n_seqs,
                      .tok_seq = db->tok_seq,
                      .tok_pos = db->tok_pos,
                      .seq_tok0 = db->seq_tok0,
                      .block_tables = db->bt,
                      .max_blocks = hb->max_blocks,
                      .max_new = hb->max_new,
                      .block_size = hb->bs};
    return b;
}

static k_attn_shape kshape_of(const shape *sh)
{
    k_attn_shape s = {
        .n_head = sh->n_head, .n_kv = sh->n_kv, .hd = sh->hd, .scale = 1.0f / sqrtf((float)sh->hd)};
    return s;
}

/* The CPU reference, one (token, head) per pool item, block by block as attend_one does. */
typedef struct ref_ctx {
    const hbatch *hb;
    float scale;
    float *out; /* [T, n_head * hd] */
} ref_ctx;

static void ref_one(void *vctx, int64_t idx)
{
    const ref_ctx *c = vctx;
    const hbatch *hb = c->hb;
    const int n_head = hb->sh.n_head, hd = hb->sh.hd, bs = hb->bs;
    const int64_t t = idx / n_head;
    const int h = (int)(idx % n_head);
    const int kvh = h / (n_head / hb->sh.n_kv);
    const int n_ctx = hb->tok_pos[t] + 1;
    const int32_t *bt = hb->bt + (long)hb->tok_seq[t] * hb->max_blocks;
    rt_attn_acc acc;
    rt_cpu_attn_begin(&acc, hd);
    for (int j0 = 0; j0 < n_ctx; j0 += bs) {
        const long row0 = (long)bt[j0 / bs] * bs * hb->kv_dim + (long)kvh * hd;
        const int n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
        rt_cpu_attn_update(&acc, hb->q + t * hb->ldq + (long)h * hd, hb->kf + row0, hb->vf + row0,
                           hb->kv_dim, n, hd, c->scale);
    }
    rt_cpu_attn_end(&acc, hd, c->out + t * n_head * hd + (long)h * hd);
}

/* Counts the outputs off by more than the tolerance (and non-finite ones), printing the first. */
static long compare_out(const hbatch *hb, const float *gpu, const float *ref, double *max_diff,
                        double *max_ref)
{
    const int hd = hb->sh.hd;
    const long od = (long)hb->sh.n_head * hd, n = (long)hb->T * od;
    double mr = 0.0, md = 0.0;
    for (long i = 0; i < n; i++)
        mr = fabs((double)ref[i]) > mr ? fabs((double)ref[i]) : mr;
    const double tol = TOL_REL * mr;
    long bad = 0;
    for (long i = 0; i < n; i++) {
        const double d = fabs((double)gpu[i] - (double)ref[i]);
        if (!(d <= md))
            md = d; /* NaN sticks */
        if (!(d <= tol)) {
            if (bad < MAX_SHOW) {
                const long t = i / od;
                fprintf(stderr,
                        "  out mismatch: token %ld (seq %d pos %d) head %ld dim %ld: gpu %.9g "
                        "ref %.9g |diff| %.3g > tol %.3g\n",
                        t, hb->tok_seq[t], hb->tok_pos[t], (i % od) / hd, i % hd, (double)gpu[i],
                        (double)ref[i], d, tol);
            }
            bad++;
        }
    }
    *max_diff = md;
    *max_ref = mr;
    return bad;
}

/* Codes and scales of the GPU against fq_act_quantize of the GPU's own fp32 output. */
static long compare_quant(const hbatch *hb, const float *gpu_out, const int8_t *qg, const float *sg,
                          int bits, int g)
{
    const long od = (long)hb->sh.n_head * hb->sh.hd, ng = od / g;
    int8_t *qr = malloc((size_t)hb->T * od);
    float *sr = malloc((size_t)hb->T * ng * sizeof(float));
    if (!qr || !sr) {
        free(qr);
        free(sr);
        fprintf(stderr, "  out of host memory\n");
        return 1;
    }
    fq_act_quantize(gpu_out, hb->T, od, g, bits, qr, sr);
    long bad = 0;
    for (long i = 0; i < (long)hb->T * od; i++) {
        if (qg[i] != qr[i]) {
            if (bad < MAX_SHOW)
                fprintf(stderr, "  code mismatch: token %ld col %ld: gpu %d ref %d (x %.9g)\n",
                        i / od, i % od, qg[i], qr[i], (double)gpu_out[i]);
            bad++;
        }
    }
    for (long i = 0; i < (long)hb->T * ng; i++) {
        if (memcmp(&sg[i], &sr[i], sizeof(float)) != 0) {
            if (bad < MAX_SHOW)
                fprintf(stderr, "  scale mismatch: token %ld group %ld: gpu %.9g ref %.9g\n",
                        i / ng, i % ng, (double)sg[i], (double)sr[i]);
            bad++;
        }
    }
    free(qr);
    free(sr);
    return bad;
}

/* Host copies of one case's results. */
typedef struct hres {
    float *out, *s_out, *ref, *s_out2;
    int8_t *q_out, *q_out2;
} hres;

static void hres_free(hres *r)
{
    free(r->out);
    free(r->s_out);
    free(r->ref);
    free(r->s_out2);
    free(r->q_out);
    free(r->q_out2);
}

static int nan_fill(const hbatch *hb, const dbatch *db, int g)
{
    const size_t od = (size_t)hb->sh.n_head * hb->sh.hd, T = (size_t)hb->T;
    CK(cudaMemset(db->out, 0xFF, T * od * sizeof(float)));
    CK(cudaMemset(db->q_out, 0x55, T * od));
    CK(cudaMemset(db->s_out, 0xFF, T * (od / (size_t)g) * sizeof(float)));
    return 0;
}

/* Runs k_attention twice (out + quantized, then quantized alone) and copies the results back. */
static int gpu_run(const hbatch *hb, const dbatch *db, int bits, int g, hres *r)
{
    const size_t od = (size_t)hb->sh.n_head * hb->sh.hd, T = (size_t)hb->T;
    const size_t ns = T * (od / (size_t)g);
    const k_attn_batch b = kbatch_of(hb, db);
    const k_attn_shape ks = kshape_of(&hb->sh);
    if (nan_fill(hb, db, g))
        return -1;
    if (k_attention(db->q, hb->ldq, db->kc, db->vc, &b, &ks, db->out, db->q_out, db->s_out, bits, g,
                    0) != 0) {
        fprintf(stderr, "  k_attention failed\n");
        return -1;
    }
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(r->out, db->out, T * od * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(r->q_out, db->q_out, T * od, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(r->s_out, db->s_out, ns * sizeof(float), cudaMemcpyDeviceToHost));
    if (nan_fill(hb, db, g))
        return -1;
    if (k_attention(db->q, hb->ldq, db->kc, db->vc, &b, &ks, NULL, db->q_out, db->s_out, bits, g,
                    0) != 0) {
        fprintf(stderr, "  k_attention (quantized output only) failed\n");
        return -1;
    }
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(r->q_out2, db->q_out, T * od, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(r->s_out2, db->s_out, ns * sizeof(float), cudaMemcpyDeviceToHost));
    return 0;
}

/* Compares one case's GPU results with the reference and prints its line; returns 0 or 1. */
static int check_case(const char *name, rt_pool *pool, const hbatch *hb, hres *r, int bits, int g)
{
    const size_t od = (size_t)hb->sh.n_head * hb->sh.hd, T = (size_t)hb->T;
    const size_t ns = T * (od / (size_t)g);
    ref_ctx rc = {.hb = hb, .scale = 1.0f / sqrtf((float)hb->sh.hd), .out = r->ref};
    rt_pool_run(pool, (int64_t)T * hb->sh.n_head, ref_one, &rc);

    double md = 0.0, mr = 0.0;
    const long bad_out = compare_out(hb, r->out, r->ref, &md, &mr);
    const long bad_q = compare_quant(hb, r->out, r->q_out, r->s_out, bits, g);
    long bad_q2 = 0;
    for (size_t i = 0; i < T * od; i++)
        if (r->q_out2[i] != r->q_out[i] && bad_q2++ < MAX_SHOW)
            fprintf(stderr, "  quantized-only run: code %zu differs: %d vs %d\n", i, r->q_out2[i],
                    r->q_out[i]);
    for (size_t i = 0; i < ns; i++)
        if (memcmp(&r->s_out2[i], &r->s_out[i], sizeof(float)) != 0 && bad_q2++ < MAX_SHOW)
            fprintf(stderr, "  quantized-only run: scale %zu differs: %.9g vs %.9g\n", i,
                    (double)r->s_out2[i], (double)r->s_out[i]);
    const int ok = bad_out == 0 && bad_q == 0 && bad_q2 == 0;
    printf("%-4s %-8s %2d/%2d hd %3d bs %2d T %4d max_new %3d a%d g%-3d: max|diff| %.3g "
           "(%.2e of max|ref| %.3g, tol %.0e); out bad %ld, quant bad %ld, quant-only bad %ld\n",
           ok ? "ok" : "FAIL", name, hb->sh.n_head, hb->sh.n_kv, hb->sh.hd, hb->bs, hb->T,
           hb->max_new, bits, g, md, mr > 0 ? md / mr : 0.0, mr, TOL_REL, bad_out, bad_q, bad_q2);
    return ok ? 0 : 1;
}

/* One checked case; returns 0 (passed), 1 (failed) or -1 (could not run). */
static int run_case(const char *name, rt_pool *pool, const shape *sh, int bs, const seq_spec *sp,
                    int n_seqs, int bits, int g, rng *rg)
{
    hbatch hb;
    if (hbatch_build(&hb, sh, bs, sp, n_seqs, 1, rg) != 0) {
        fprintf(stderr, "%s: out of host memory\n", name);
        return -1;
    }
    const size_t od = (size_t)sh->n_head * sh->hd, T = (size_t)hb.T;
    const size_t ns = T * (od / (size_t)g);
    hres r = {.out = malloc(T * od * sizeof(float)),
              .s_out = malloc(ns * sizeof(float)),
              .ref = malloc(T * od * sizeof(float)),
              .s_out2 = malloc(ns * sizeof(float)),
              .q_out = malloc(T * od),
              .q_out2 = malloc(T * od)};
    dbatch db;
    memset(&db, 0, sizeof db);
    int rc = -1;
    if (!r.out || !r.s_out || !r.ref || !r.s_out2 || !r.q_out || !r.q_out2)
        fprintf(stderr, "%s: out of host memory\n", name);
    else if (dbatch_upload(&db, &hb, g) != 0 || gpu_run(&hb, &db, bits, g, &r) != 0)
        fprintf(stderr, "%s: GPU run failed\n", name);
    else
        rc = check_case(name, pool, &hb, &r, bits, g);
    dbatch_free(&db);
    hres_free(&r);
    hbatch_free(&hb);
    return rc;
}

/* Average microseconds of k_attention over reps calls (after warm-up), or a negative value. */
static double time_calls(const hbatch *hb, const dbatch *db, int reps)
{
    const k_attn_batch b = kbatch_of(hb, db);
    const k_attn_shape ks = kshape_of(&hb->sh);
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess)
        return -1.0;
    if (cudaEventCreate(&e1) != cudaSuccess) {
        cudaEventDestroy(e0);
        return -1.0;
    }
    double us = -1.0;
    int fails = 0;
    for (int i = 0; i < 3; i++)
        fails += k_attention(db->q, hb->ldq, db->kc, db->vc, &b, &ks, db->out, db->q_out, db->s_out,
                             8, 128, 0) != 0;
    cudaEventRecord(e0, 0);
    for (int i = 0; i < reps; i++)
        fails += k_attention(db->q, hb->ldq, db->kc, db->vc, &b, &ks, db->out, db->q_out, db->s_out,
                             8, 128, 0) != 0;
    cudaEventRecord(e1, 0);
    float ms = 0.0f;
    if (!fails && cudaEventSynchronize(e1) == cudaSuccess &&
        cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess)
        us = 1000.0 * ms / reps;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return us;
}

/* Decode timing: n_seqs sequences of ctx positions each (one new token); prints K+V GB/s. */
static int time_decode(const shape *sh, int n_seqs, int ctx, rng *rg)
{
    seq_spec sp[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++)
        sp[s] = (seq_spec){.n_new = 1, .pos0 = ctx - 1};
    hbatch hb;
    dbatch db;
    if (hbatch_build(&hb, sh, 16, sp, n_seqs, 0, rg) != 0)
        return -1;
    int rc = -1;
    if (dbatch_upload(&db, &hb, 128) == 0) {
        const double us = time_calls(&hb, &db, 20);
        const double bytes = 2.0 * n_seqs * ctx * hb.kv_dim * 2.0;
        if (us > 0) {
            printf("time decode  %2d/%2d hd %3d: %2d seqs x %4d ctx: %8.2f us  %7.1f GB/s (K+V)\n",
                   sh->n_head, sh->n_kv, sh->hd, n_seqs, ctx, us, bytes / (us * 1e-6) / 1e9);
            rc = 0;
        }
    }
    dbatch_free(&db);
    hbatch_free(&hb);
    return rc;
}

/* Prefill timing: one sequence of n_tok new tokens from position 0; prints causal TFLOP/s. */
static int time_prefill(const shape *sh, int n_tok, rng *rg)
{
    const seq_spec sp = {.n_new = n_tok, .pos0 = 0};
    hbatch hb;
    dbatch db;
    if (hbatch_build(&hb, sh, 16, &sp, 1, 0, rg) != 0)
        return -1;
    int rc = -1;
    if (dbatch_upload(&db, &hb, 128) == 0) {
        const double us = time_calls(&hb, &db, 10);
        const double flop = 4.0 * sh->hd * sh->n_head * ((double)n_tok * (n_tok + 1) / 2.0);
        if (us > 0) {
            printf("time prefill %2d/%2d hd %3d: %4d tokens: %8.2f us  %6.1f TFLOP/s (causal)\n",
                   sh->n_head, sh->n_kv, sh->hd, n_tok, us, flop / (us * 1e-6) / 1e12);
            rc = 0;
        }
    }
    dbatch_free(&db);
    hbatch_free(&hb);
    return rc;
}

int main(void)
{
    if (k_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    char desc[256] = "";
    if (k_device_describe(0, desc, sizeof desc) == 0)
        printf("device 0: %s\n", desc);
    rt_pool *pool = NULL;
    if (rt_pool_create(0, &pool) != 0) {
        fprintf(stderr, "rt_pool_create failed\n");
        return 1;
    }
    rng rg = {0x9E3779B97F4A7C15ull};
    static const shape shapes[] = {{9, 3, 64}, {32, 32, 128}, {32, 8, 128}, {64, 8, 128}};
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);

    /* decode: 16 sequences, contexts 1 .. 2000 */
    seq_spec dec[16];
    dec[0] = (seq_spec){1, 0};
    dec[1] = (seq_spec){1, 1999};
    dec[2] = (seq_spec){1, 15};   /* a full block */
    dec[3] = (seq_spec){1, 16};   /* one past a block */
    dec[4] = (seq_spec){1, 1023}; /* 1024 */
    for (int s = 5; s < 16; s++)
        dec[s] = (seq_spec){1, rng_int(&rg, 2000)};
    /* prefill: 3 sequences, from position 0 and from later positions */
    static const seq_spec pre[] = {{700, 0}, {257, 1111}, {63, 5}};
    /* mixed: decode tokens beside prompt chunks */
    static const seq_spec mix[] = {{1, 1999}, {200, 0},  {1, 0},   {77, 300},
                                   {1, 64},   {130, 63}, {1, 1023}};

    int failures = 0, errors = 0;
    for (int i = 0; i < n_shapes; i++) {
        const shape *sh = &shapes[i];
        const int bits = i % 2 ? 6 : 8;
        const int g = sh->hd == 64 ? 32 : (i % 2 ? 128 : 64);
        int rc = run_case("decode", pool, sh, 16, dec, 16, bits, g, &rg);
        failures += rc == 1;
        errors += rc < 0;
        rc = run_case("prefill", pool, sh, 16, pre, 3, 14 - bits, g, &rg);
        failures += rc == 1;
        errors += rc < 0;
        rc = run_case("mixed", pool, sh, 16, mix, 7, bits, sh->hd == 64 ? 64 : 32, &rg);
        failures += rc == 1;
        errors += rc < 0;
    }
    /* few long decode sequences: 16 warps per CTA, the longest context (4096), and (block size
     * 8, 8300 positions) more blocks than the decode kernel stages at once */
    {
        static const seq_spec few[] = {{1, 4095}, {1, 0}, {1, 776}};
        static const seq_spec lng[] = {{1, 8299}, {1, 100}};
        int rc = run_case("decode", pool, &shapes[1], 16, few, 3, 8, 128, &rg);
        failures += rc == 1;
        errors += rc < 0;
        rc = run_case("decode", pool, &shapes[0], 8, lng, 2, 6, 32, &rg);
        failures += rc == 1;
        errors += rc < 0;
    }
    /* other block sizes */
    {
        int rc = run_case("decode", pool, &shapes[2], 8, dec, 16, 8, 128, &rg);
        failures += rc == 1;
        errors += rc < 0;
        rc = run_case("mixed", pool, &shapes[2], 8, mix, 7, 6, 64, &rg);
        failures += rc == 1;
        errors += rc < 0;
        rc = run_case("decode", pool, &shapes[0], 32, dec, 16, 6, 64, &rg);
        failures += rc == 1;
        errors += rc < 0;
        rc = run_case("mixed", pool, &shapes[0], 32, mix, 7, 8, 32, &rg);
        failures += rc == 1;
        errors += rc < 0;
    }

    /* timings (informational) */
    errors += time_decode(&shapes[1], 64, 1024, &rg) != 0;
    errors += time_decode(&shapes[2], 64, 1024, &rg) != 0;
    errors += time_decode(&shapes[2], 1, 4096, &rg) != 0;
    errors += time_prefill(&shapes[1], 2048, &rg) != 0;
    errors += time_prefill(&shapes[2], 2048, &rg) != 0;

    rt_pool_destroy(pool);
    if (failures || errors) {
        fprintf(stderr, "%d case(s) failed, %d could not run\n", failures, errors);
        return 1;
    }
    printf("all cases within tolerance, quantized outputs bit-exact\n");
    return 0;
}

/* rt_backend_cuda.c — the CUDA backend: the whole LLaMA forward pass on the GPU, same ops table
 * and same math as the CPU reference (rt_backend_cpu.c) up to fp32 order and an fp16 KV cache.
 *
 * Weights go to the device once, at create: per layer q/k/v rows concatenated into one matrix
 * (one GEMM when their activation bits agree) and gate/up likewise. Per step: the batch's token
 * ids, positions, cache slots and block tables go up in one copy; per layer
 *   x += down(prev) → RMSNorm → quantize (one kernel) → qkv GEMM → RoPE + KV store → attention
 *   (output quantized in the same kernel) → o GEMM → x += o → RMSNorm → quantize → gate/up GEMM
 *   → SiLU·up → quantize → down GEMM;
 * then the last residual add and the final norm of the rows whose logits are wanted (fp16),
 * lm_head with cuBLAS (fp16 in, fp32 out), and one copy of the logits back. The integer modes use
 * the INT6 GEMMs (k_gemm.h); fp and w6a16 multiply fp32 weights (the source's, or the INT6 codes
 * dequantized on the device) with cuBLAS SGEMM. The comparison modes: fp16 keeps fp16 weights and
 * multiplies fp16 inputs with cuBLAS (fp32 accumulation); w8a8 keeps int8 weights with per-channel
 * scales, quantizes each input row per token (k_w8a8.h), multiplies with cuBLAS int8 (int32 out)
 * and scales in an epilogue; both convert their weights on the device at create from the source's
 * fp32 weights or the dequantized INT6 codes (rt_linear_fp32's choice). Every kernel runs on the
 * backend's stream; the step ends with one synchronization.
 *
 * Decode steps (every sequence one new token, last-token logits) replay CUDA graphs instead
 * (params.graphs, default on): one graph per batch bucket (1, 2, 4, 8, then steps of 8, 16, 32 up
 * to 256 or max_batch_tokens), captured the first time a step of that bucket comes. A step of S
 * sequences runs bucket B >= S; its rows S .. B-1 are padding: token 0 at position 0 of a spare KV
 * block of their own (the cache has one block more than params.kv.n_blocks), so they write and read
 * nothing of a real sequence, and their logits are never read. The graph's metadata lives at fixed
 * device addresses: per step only the token ids, positions, cache slots and block-table rows go up
 * (the sequence index of each row is the identity in a decode step, uploaded once). Every GEMM of a
 * decode step is m-invariant per row (k_gemm.h), so padding changes no real row's result.
 *
 * Tokens are picked where the logits are when the caller allows (forward_argmax, forward_sample:
 * k_argmax, k_sample): 4 bytes per row come back instead of n_vocab floats.
 */
#include "rt_ops.h"

#include "fq_base.h"
#include "fq_weight.h"
#include "k_attn.h"
#include "k_gemm.h"
#include "k_ops.h"
#include "k_sample.h"
#include "k_w8a8.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Linears that share their input, rows concatenated (q|k|v, gate|up, or one alone). */
typedef struct cu_lin {
    int32_t n, k, g;   /* rows in all, input width, group */
    int64_t row_bytes; /* packed row */
    uint8_t *packed;   /* [n, row_bytes] (integer modes) */
    uint16_t *sw;      /* [n, k / g] */
    float *w;          /* [n, k] fp32 (fp, w6a16) */
    uint16_t *w16;     /* [n, k] fp16 (fp16) */
    int8_t *w8;        /* [n, k] int8 (w8a8) */
    float *s8;         /* [n] per-channel scales (w8a8) */
    int32_t n_part;    /* linears in the group */
    int32_t rows[3];   /* rows of each */
    int32_t bits[3];   /* activation bits of each (integer modes) */
} cu_lin;

typedef struct cu_layer {
    float *attn_norm, *ffn_norm;
    cu_lin qkv, o, gu, down;
} cu_layer;

#define CU_N_BUCKETS  19
#define CU_BLAS_WS_MB 32

static const int32_t cu_buckets[CU_N_BUCKETS] = {1,  2,  4,  8,   16,  24,  32,  40,  48, 56,
                                                 64, 80, 96, 112, 128, 160, 192, 224, 256};

/* The decode-step graphs and their fixed metadata. */
typedef struct cu_graphs {
    bool on;           /* params.graphs, and no capture has failed */
    int32_t n_buckets; /* buckets usable (<= max_batch_tokens) */
    int32_t stride;    /* block-table row stride: n_blocks + 1 (the spare block) */
    int32_t *iota_d;   /* [257] 0, 1, 2, ...: each row's sequence, first token and row */
    int32_t *meta_h;   /* pinned: ids, pos, slot [256 each], then tables [256, stride] */
    int32_t *meta_d;   /* the same on the device */
    cudaGraphExec_t exec[CU_N_BUCKETS];
    rt_backend_stats stats;
} cu_graphs;

struct rt_backend {
    const rt_model *m;
    rt_backend_params p;
    bool int_mode;
    cudaStream_t st;
    cublasHandle_t cb;
    void **allocs; /* every device allocation, freed at destroy */
    int32_t n_allocs, cap_allocs;
    int64_t alloc_bytes; /* their total */
    rt_backend_mem mem;  /* filled at create */
    cu_layer *layers;
    float *tok_embd, *out_norm;  /* fp32 */
    uint16_t *lm_head;           /* fp16 [n_vocab, n_embd] */
    uint16_t *k_cache, *v_cache; /* fp16 [n_layer, n_slots, kv_dim], the spare block last */
    int64_t n_slots, kv_dim, qd;
    /* step scratch, max_batch_tokens rows */
    float *x, *tmp, *hf, *qkv, *att, *gu, *logits;
    uint16_t *xn16;
    uint16_t *x16;  /* fp16: [max_batch_tokens, widest] linear inputs */
    int32_t *acc32; /* w8a8: [max_batch_tokens, widest group] int32 products */
    int8_t *qx[2];  /* codes for 6 and 8 bits */
    float *sx[2];
    void *ws;
    size_t ws_bytes;
    /* per-step metadata: host (pinned) and device copies, grown on demand */
    int32_t *meta_h, *meta_d;
    size_t meta_cap; /* int32 entries */
    int32_t *pos, *seq_of;
    int64_t *slot;
    int32_t *tok_d; /* [max_batch_tokens] token of each logits row (forward_argmax, _sample) */
    int32_t *tok_h; /* pinned copy of it */
    k_sample_row *srow_h, *srow_d; /* [max_batch_tokens] forward_sample's rows, pinned and device */
    void *blas_ws; /* cuBLAS workspace, fixed so that graph capture allocates nothing */
    cu_graphs gr;
};

static int cuda_fail(char *err, size_t err_len, cudaError_t e, const char *what)
{
    return fq_err(err, err_len, FQ_EIO, "cuda backend: %s: %s", what, cudaGetErrorString(e));
}

static void *dev_alloc(rt_backend *be, size_t bytes)
{
    if (be->n_allocs == be->cap_allocs) {
        int32_t cap = be->cap_allocs ? 2 * be->cap_allocs : 64;
        void **a = realloc(be->allocs, (size_t)cap * sizeof *a);
        if (!a)
            return NULL;
        be->allocs = a;
        be->cap_allocs = cap;
    }
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess)
        return NULL;
    be->allocs[be->n_allocs++] = p;
    be->alloc_bytes += (int64_t)bytes;
    return p;
}

static void *upload(rt_backend *be, const void *src, size_t bytes)
{
    void *d = dev_alloc(be, bytes);
    if (d && cudaMemcpyAsync(d, src, bytes, cudaMemcpyHostToDevice, be->st) != cudaSuccess)
        return NULL;
    return d;
}

static void cuda_destroy(rt_backend *be)
{
    if (!be)
        return;
    if (be->st)
        cudaStreamSynchronize(be->st);
    for (int i = 0; i < CU_N_BUCKETS; i++)
        if (be->gr.exec[i])
            cudaGraphExecDestroy(be->gr.exec[i]);
    cudaFreeHost(be->gr.meta_h);
    for (int32_t i = 0; i < be->n_allocs; i++)
        cudaFree(be->allocs[i]);
    free(be->allocs);
    if (be->cb)
        cublasDestroy(be->cb);
    if (be->st)
        cudaStreamDestroy(be->st);
    cudaFreeHost(be->meta_h);
    cudaFreeHost(be->tok_h);
    cudaFreeHost(be->srow_h);
    free(be->layers);
    free(be->pos);
    free(be->seq_of);
    free(be->slot);
    free(be);
}

/* fp32 weights of one linear on the device, in tmp ([n_out, n_in]): the source's, or the INT6 codes
 * dequantized there (the choice rt_linear_fp32 makes on the host). */
static int fp32_on_device(rt_backend *be, const rt_linear *lin, float *tmp)
{
    const size_t count = (size_t)lin->n_out * (size_t)lin->n_in;
    if (lin->w)
        return cudaMemcpyAsync(tmp, lin->w, count * sizeof(float), cudaMemcpyHostToDevice,
                               be->st) == cudaSuccess
                   ? 0
                   : -1;
    const size_t pb = (size_t)lin->n_out * (size_t)lin->q6.row_bytes;
    const size_t sb = (size_t)lin->n_out * (size_t)(lin->n_in / lin->q6.group) * sizeof(uint16_t);
    void *packed = NULL, *sw = NULL;
    int rc = cudaMalloc(&packed, pb) == cudaSuccess && cudaMalloc(&sw, sb) == cudaSuccess &&
                     cudaMemcpyAsync(packed, lin->q6.packed, pb, cudaMemcpyHostToDevice, be->st) ==
                         cudaSuccess &&
                     cudaMemcpyAsync(sw, lin->q6.scales, sb, cudaMemcpyHostToDevice, be->st) ==
                         cudaSuccess &&
                     k_w6_dequantize(packed, sw, (long)lin->q6.row_bytes, (int)lin->n_out,
                                     (int)lin->n_in, lin->q6.group, tmp, be->st) == 0 &&
                     cudaStreamSynchronize(be->st) == cudaSuccess
                 ? 0
                 : -1;
    cudaFree(packed);
    cudaFree(sw);
    return rc;
}

/* fp16 / w8a8: the group's weights converted on the device, part by part. */
static int upload_converted(rt_backend *be, int32_t l, const fq_lin_type *types, int32_t n,
                            cu_lin *g, char *err, size_t err_len)
{
    const rt_layer *ly = &be->m->layers[l];
    const bool f16 = be->p.mode == RT_MODE_FP16;
    const size_t count = (size_t)g->n * (size_t)g->k;
    if (f16)
        g->w16 = dev_alloc(be, count * sizeof(uint16_t));
    else if ((g->w8 = dev_alloc(be, count)))
        g->s8 = dev_alloc(be, (size_t)g->n * sizeof(float));
    if (f16 ? !g->w16 : !g->s8)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: uploading layer %d", l);
    int64_t r0 = 0;
    for (int32_t i = 0; i < n; i++) {
        const rt_linear *lin = rt_layer_linear(ly, types[i]);
        float *tmp = NULL;
        int rc = cudaMalloc((void **)&tmp, (size_t)lin->n_out * (size_t)g->k * sizeof(float)) ==
                         cudaSuccess
                     ? fp32_on_device(be, lin, tmp)
                     : -1;
        if (rc == 0)
            rc = f16 ? k_f32_to_f16(tmp, (long)lin->n_out * g->k, g->w16 + r0 * g->k, be->st)
                     : k_quant_rows_i8(tmp, (int)lin->n_out, g->k, g->w8 + r0 * g->k, g->s8 + r0,
                                       be->st);
        if (rc == 0 && cudaStreamSynchronize(be->st) != cudaSuccess)
            rc = -1;
        cudaFree(tmp);
        if (rc)
            return fq_err(err, err_len, FQ_EIO,
                          "cuda backend: layer %d %s: converting the weights to %s failed", l,
                          fq_lin_name(types[i]), rt_mode_name(be->p.mode));
        r0 += lin->n_out;
    }
    return 0;
}

/* Uploads the linears types[0..n) of layer l as one row-concatenated group. */
static int upload_group(rt_backend *be, int32_t l, const fq_lin_type *types, int32_t n, cu_lin *g,
                        char *err, size_t err_len)
{
    const rt_layer *ly = &be->m->layers[l];
    const rt_linear *first = rt_layer_linear(ly, types[0]);
    memset(g, 0, sizeof *g);
    g->k = first->n_in;
    g->n_part = n;
    for (int32_t i = 0; i < n; i++) {
        const rt_linear *lin = rt_layer_linear(ly, types[i]);
        if (lin->n_in != g->k || (be->p.mode != RT_MODE_FP && lin->q6.group != first->q6.group))
            return fq_err(err, err_len, FQ_EUNSUP,
                          "cuda backend: layer %d: linears sharing an input differ in width or "
                          "group",
                          l);
        g->rows[i] = lin->n_out;
        g->n += lin->n_out;
        if (be->int_mode) {
            int rc = rt_linear_abits(be->m, &be->p, l, types[i], &g->bits[i], err, err_len);
            if (rc)
                return rc;
        }
    }
    bool ok = true;
    if (be->p.mode == RT_MODE_FP) {
        g->w = dev_alloc(be, (size_t)g->n * (size_t)g->k * sizeof(float));
        int64_t r0 = 0;
        for (int32_t i = 0; ok && g->w && i < n; i++) {
            const rt_linear *lin = rt_layer_linear(ly, types[i]);
            size_t bytes = (size_t)lin->n_out * (size_t)g->k * sizeof(float);
            ok = cudaMemcpyAsync(g->w + r0 * g->k, lin->w, bytes, cudaMemcpyHostToDevice, be->st) ==
                 cudaSuccess;
            r0 += lin->n_out;
        }
        return g->w && ok ? 0 : fq_err(err, err_len, FQ_ENOMEM, "cuda backend: uploading weights");
    }
    if (be->p.mode == RT_MODE_FP16 || be->p.mode == RT_MODE_W8A8)
        return upload_converted(be, l, types, n, g, err, err_len);
    g->g = first->q6.group;
    g->row_bytes = first->q6.row_bytes;
    int64_t ng = g->k / g->g;
    g->packed = dev_alloc(be, (size_t)g->n * (size_t)g->row_bytes);
    g->sw = dev_alloc(be, (size_t)g->n * (size_t)ng * sizeof(uint16_t));
    ok = g->packed && g->sw;
    int64_t r0 = 0;
    for (int32_t i = 0; ok && i < n; i++) {
        const rt_linear *lin = rt_layer_linear(ly, types[i]);
        ok = lin->q6.row_bytes == g->row_bytes &&
             cudaMemcpyAsync(g->packed + r0 * g->row_bytes, lin->q6.packed,
                             (size_t)lin->n_out * (size_t)g->row_bytes, cudaMemcpyHostToDevice,
                             be->st) == cudaSuccess &&
             cudaMemcpyAsync(g->sw + r0 * ng, lin->q6.scales,
                             (size_t)lin->n_out * (size_t)ng * sizeof(uint16_t),
                             cudaMemcpyHostToDevice, be->st) == cudaSuccess;
        r0 += lin->n_out;
    }
    if (ok && be->p.mode == RT_MODE_W6A16) {
        g->w = dev_alloc(be, (size_t)g->n * (size_t)g->k * sizeof(float));
        ok = g->w && k_w6_dequantize(g->packed, g->sw, (long)g->row_bytes, g->n, g->k, g->g, g->w,
                                     be->st) == 0;
    }
    return ok ? 0 : fq_err(err, err_len, FQ_ENOMEM, "cuda backend: uploading layer %d", l);
}

static int upload_layers(rt_backend *be, char *err, size_t err_len)
{
    const fq_config *c = &be->m->cfg;
    static const fq_lin_type qkv[] = {FQ_LIN_Q, FQ_LIN_K, FQ_LIN_V};
    static const fq_lin_type gu[] = {FQ_LIN_GATE, FQ_LIN_UP};
    static const fq_lin_type o[] = {FQ_LIN_O}, down[] = {FQ_LIN_DOWN};
    be->layers = calloc((size_t)c->n_layer, sizeof *be->layers);
    if (!be->layers)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: out of memory");
    for (int32_t l = 0; l < c->n_layer; l++) {
        const rt_layer *ly = &be->m->layers[l];
        cu_layer *d = &be->layers[l];
        size_t nb = (size_t)c->n_embd * sizeof(float);
        d->attn_norm = upload(be, ly->attn_norm, nb);
        d->ffn_norm = upload(be, ly->ffn_norm, nb);
        if (!d->attn_norm || !d->ffn_norm)
            return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: uploading layer %d norms", l);
        int rc = upload_group(be, l, qkv, 3, &d->qkv, err, err_len);
        if (rc == 0)
            rc = upload_group(be, l, o, 1, &d->o, err, err_len);
        if (rc == 0)
            rc = upload_group(be, l, gu, 2, &d->gu, err, err_len);
        if (rc == 0)
            rc = upload_group(be, l, down, 1, &d->down, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

/* Embeddings, final norm and the fp16 lm_head. */
static int upload_io(rt_backend *be, char *err, size_t err_len)
{
    const rt_model *m = be->m;
    size_t ve = (size_t)m->cfg.n_vocab * (size_t)m->cfg.n_embd;
    if (!m->lm_head.w || m->lm_head.n_out != m->cfg.n_vocab)
        return fq_err(err, err_len, FQ_EUNSUP, "cuda backend: the model has no fp32 lm_head");
    be->tok_embd = upload(be, m->tok_embd, ve * sizeof(float));
    be->out_norm = upload(be, m->out_norm, (size_t)m->cfg.n_embd * sizeof(float));
    be->lm_head = dev_alloc(be, ve * sizeof(uint16_t));
    if (!be->tok_embd || !be->out_norm || !be->lm_head)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: uploading embeddings");
    const float *src = be->tok_embd;
    float *tmp = NULL;
    if (m->lm_head.w != m->tok_embd) {
        if (cudaMalloc((void **)&tmp, ve * sizeof(float)) != cudaSuccess)
            return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: uploading lm_head");
        cudaError_t e =
            cudaMemcpyAsync(tmp, m->lm_head.w, ve * sizeof(float), cudaMemcpyHostToDevice, be->st);
        if (e != cudaSuccess) {
            cudaFree(tmp);
            return cuda_fail(err, err_len, e, "uploading lm_head");
        }
        src = tmp;
    }
    int rc = k_f32_to_f16(src, (long)ve, be->lm_head, be->st);
    cudaError_t e = cudaStreamSynchronize(be->st);
    cudaFree(tmp);
    if (rc || e != cudaSuccess)
        return cuda_fail(err, err_len, e, "converting lm_head to fp16");
    return 0;
}

static int alloc_scratch(rt_backend *be, char *err, size_t err_len)
{
    const fq_config *c = &be->m->cfg;
    size_t mt = (size_t)be->p.max_batch_tokens, e = (size_t)c->n_embd, f = (size_t)c->n_ff;
    size_t qkv = (size_t)(be->qd + 2 * be->kv_dim);
    size_t widest = e > f ? e : f;
    widest = widest > (size_t)be->qd ? widest : (size_t)be->qd;
    size_t cache = (size_t)c->n_layer * (size_t)be->n_slots * (size_t)be->kv_dim;
    be->k_cache = dev_alloc(be, cache * sizeof(uint16_t));
    be->v_cache = dev_alloc(be, cache * sizeof(uint16_t));
    be->x = dev_alloc(be, mt * e * sizeof(float));
    be->tmp = dev_alloc(be, mt * e * sizeof(float));
    be->hf = dev_alloc(be, mt * widest * sizeof(float));
    be->qkv = dev_alloc(be, mt * qkv * sizeof(float));
    be->att = dev_alloc(be, mt * (size_t)be->qd * sizeof(float));
    be->gu = dev_alloc(be, mt * 2 * f * sizeof(float));
    be->logits = dev_alloc(be, mt * (size_t)c->n_vocab * sizeof(float));
    be->xn16 = dev_alloc(be, mt * e * sizeof(uint16_t));
    bool ok = be->k_cache && be->v_cache && be->x && be->tmp && be->hf && be->qkv && be->att &&
              be->gu && be->logits && be->xn16;
    ok = ok && (be->tok_d = dev_alloc(be, mt * sizeof(int32_t))) != NULL &&
         cudaMallocHost((void **)&be->tok_h, mt * sizeof(int32_t)) == cudaSuccess;
    ok = ok && (be->srow_d = dev_alloc(be, mt * sizeof(k_sample_row))) != NULL &&
         cudaMallocHost((void **)&be->srow_h, mt * sizeof(k_sample_row)) == cudaSuccess;
    if (ok && be->p.mode == RT_MODE_FP16)
        ok = (be->x16 = dev_alloc(be, mt * widest * sizeof(uint16_t))) != NULL;
    if (ok && be->p.mode == RT_MODE_W8A8) {
        size_t group = qkv > 2 * f ? qkv : 2 * f;
        group = group > e ? group : e;
        ok = (be->acc32 = dev_alloc(be, mt * group * sizeof(int32_t))) != NULL;
    }
    for (int i = 0; ok && i < 2; i++) {
        be->qx[i] = dev_alloc(be, mt * widest);
        be->sx[i] = dev_alloc(be, mt * (widest / 32 + 1) * sizeof(float));
        ok = be->qx[i] && be->sx[i];
    }
    if (ok && be->int_mode) {
        for (int32_t l = 0; l < c->n_layer; l++) {
            const cu_lin *gs[] = {&be->layers[l].qkv, &be->layers[l].o, &be->layers[l].gu,
                                  &be->layers[l].down};
            for (int i = 0; i < 4; i++) {
                k_w6 w = {.n = gs[i]->n,
                          .k = gs[i]->k,
                          .g = gs[i]->g,
                          .row_bytes = (long)gs[i]->row_bytes};
                size_t b = k_gemm_w6_ws_bytes(&w, be->p.max_batch_tokens);
                be->ws_bytes = b > be->ws_bytes ? b : be->ws_bytes;
            }
        }
        be->ws = be->ws_bytes ? dev_alloc(be, be->ws_bytes) : NULL;
        ok = be->ws_bytes == 0 || be->ws;
    }
    be->pos = calloc(mt, sizeof *be->pos);
    be->seq_of = calloc(mt, sizeof *be->seq_of);
    be->slot = calloc(mt, sizeof *be->slot);
    ok = ok && be->pos && be->seq_of && be->slot;
    if (!ok)
        return fq_err(err, err_len, FQ_ENOMEM,
                      "cuda backend: out of device memory for %d KV blocks of %d tokens and %d "
                      "tokens per step",
                      be->p.kv.n_blocks, be->p.kv.block_size, be->p.max_batch_tokens);
    return 0;
}

static int check_create(const rt_model *m, const rt_backend_params *p, char *err, size_t err_len)
{
    if (p->max_batch_tokens <= 0 || p->kv.block_size <= 0 || p->kv.n_blocks <= 0)
        return fq_err(err, err_len, FQ_EINVAL,
                      "cuda backend: max_batch_tokens %d, block size %d and blocks %d must be > 0",
                      p->max_batch_tokens, p->kv.block_size, p->kv.n_blocks);
    int rc = rt_mode_check(m, p->mode, err, err_len);
    if (rc)
        return rc;
    if (m->cfg.head_dim != 64 && m->cfg.head_dim != 128)
        return fq_err(err, err_len, FQ_EUNSUP, "cuda backend: head dim %d (64 or 128 supported)",
                      m->cfg.head_dim);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0)
        return fq_err(err, err_len, FQ_EUNSUP, "cuda backend: no CUDA device");
    return 0;
}

static int graphs_init(rt_backend *be, char *err, size_t err_len);

static int cuda_create(const rt_model *m, const rt_backend_params *p, rt_backend **out, char *err,
                       size_t err_len)
{
    *out = NULL;
    int rc = check_create(m, p, err, err_len);
    if (rc)
        return rc;
    rt_backend *be = calloc(1, sizeof *be);
    if (!be)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: out of memory");
    be->m = m;
    be->p = *p; /* p->abits is read while uploading (into each group's bits), not kept */
    be->int_mode = p->mode == RT_MODE_W6A8 || p->mode == RT_MODE_W6A6 || p->mode == RT_MODE_FLEX;
    be->kv_dim = (int64_t)m->cfg.n_head_kv * m->cfg.head_dim;
    be->qd = (int64_t)m->cfg.n_head * m->cfg.head_dim;
    be->n_slots = ((int64_t)p->kv.n_blocks + 1) * p->kv.block_size; /* + the padding rows' block */
    cudaError_t e = cudaStreamCreateWithFlags(&be->st, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cuda_destroy(be);
        return cuda_fail(err, err_len, e, "creating a stream");
    }
    if (cublasCreate(&be->cb) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(be->cb, be->st) != CUBLAS_STATUS_SUCCESS) {
        cuda_destroy(be);
        return fq_err(err, err_len, FQ_EIO, "cuda backend: cuBLAS did not start");
    }
    rc = upload_layers(be, err, err_len);
    be->p.abits = NULL; /* borrowed: not kept past create */
    be->mem.linear_bytes =
        be->alloc_bytes - 2 * (int64_t)m->cfg.n_layer * m->cfg.n_embd * (int64_t)sizeof(float);
    if (rc == 0)
        rc = upload_io(be, err, err_len);
    be->mem.weight_bytes = be->alloc_bytes;
    if (rc == 0)
        rc = alloc_scratch(be, err, err_len);
    if (rc == 0)
        rc = graphs_init(be, err, err_len);
    be->mem.kv_bytes = 2 * (int64_t)m->cfg.n_layer * be->n_slots * be->kv_dim * 2;
    be->mem.scratch_bytes = be->alloc_bytes - be->mem.weight_bytes - be->mem.kv_bytes;
    if (rc == 0 && (e = cudaStreamSynchronize(be->st)) != cudaSuccess)
        rc = cuda_fail(err, err_len, e, "uploading the model");
    if (rc) {
        cuda_destroy(be);
        return rc;
    }
    *out = be;
    return 0;
}

/* Device views of one step's metadata (all int32, one upload). The step's first n_dec sequences
 * are decode rows (one new token each, so tokens 0 .. n_dec - 1); the rest carry prompt chunks.
 * Each kind has its own kernels whatever the mix (decode: gemv below 64 rows and the decode
 * attention; the rest: the prefill GEMM and the tiled attention), and each of those is invariant
 * per row, so a token's result does not depend on the other sequences of its step. */
typedef struct step_meta {
    int32_t *ids, *pos, *slot, *seq, *seq_tok0, *rows, *tables;
    int32_t n_tok, n_seqs, n_rows, max_blocks;
    int32_t n_dec;      /* leading one-token sequences (= their tokens) */
    int32_t max_new_pf; /* most new tokens of one of the rest */
} step_meta;

static int grow_meta(rt_backend *be, size_t need, char *err, size_t err_len)
{
    if (need <= be->meta_cap)
        return 0;
    size_t cap = need + need / 2;
    cudaFreeHost(be->meta_h);
    be->meta_h = NULL;
    be->meta_cap = 0;
    if (cudaMallocHost((void **)&be->meta_h, cap * sizeof(int32_t)) != cudaSuccess)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: out of pinned memory");
    be->meta_d = dev_alloc(be, cap * sizeof(int32_t)); /* the old one stays until destroy */
    if (!be->meta_d)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: out of device memory");
    be->meta_cap = cap;
    return 0;
}

/* Lays the step's metadata out in the pinned buffer and uploads it. */
static int upload_meta(rt_backend *be, const rt_batch *b, step_meta *sm, char *err, size_t err_len)
{
    int32_t T = (int32_t)rt_batch_n_tokens(b), S = b->n_seqs, R = (int32_t)rt_batch_n_logits(b);
    int32_t maxb = 1, n_dec = 0, max_new_pf = 1;
    while (n_dec < S && b->seqs[n_dec].n_tokens == 1)
        n_dec++;
    for (int32_t s = 0; s < S; s++) {
        maxb = b->seqs[s].kv->n_blocks > maxb ? b->seqs[s].kv->n_blocks : maxb;
        if (s >= n_dec && b->seqs[s].n_tokens > max_new_pf)
            max_new_pf = b->seqs[s].n_tokens;
    }
    size_t need = 4 * (size_t)T + (size_t)S + 1 + (size_t)R + (size_t)S * (size_t)maxb;
    int rc = grow_meta(be, need, err, err_len);
    if (rc)
        return rc;
    int32_t *h = be->meta_h, *ids = h, *pos = ids + T, *slot = pos + T, *seq = slot + T;
    int32_t *tok0 = seq + T, *rows = tok0 + S + 1, *tables = rows + R;
    int32_t t = 0, r = 0;
    for (int32_t s = 0; s < S; s++) {
        const rt_seq_step *sq = &b->seqs[s];
        tok0[s] = t;
        for (int32_t i = 0; i < sq->n_tokens; i++, t++) {
            ids[t] = sq->tokens[i];
            pos[t] = be->pos[t];
            slot[t] = (int32_t)be->slot[t];
            seq[t] = s;
            if (sq->all_logits || i == sq->n_tokens - 1)
                rows[r++] = t;
        }
        for (int32_t j = 0; j < maxb; j++)
            tables[(size_t)s * maxb + j] = j < sq->kv->n_blocks ? sq->kv->blocks[j] : 0;
    }
    tok0[S] = t;
    cudaError_t e =
        cudaMemcpyAsync(be->meta_d, h, need * sizeof(int32_t), cudaMemcpyHostToDevice, be->st);
    if (e != cudaSuccess)
        return cuda_fail(err, err_len, e, "uploading the step");
    int32_t *d = be->meta_d;
    *sm = (step_meta){.ids = d,
                      .pos = d + (pos - h),
                      .slot = d + (slot - h),
                      .seq = d + (seq - h),
                      .seq_tok0 = d + (tok0 - h),
                      .rows = d + (rows - h),
                      .tables = d + (tables - h),
                      .n_tok = T,
                      .n_seqs = S,
                      .n_rows = R,
                      .max_blocks = maxb,
                      .n_dec = n_dec,
                      .max_new_pf = max_new_pf};
    return 0;
}

/* fp16: the input rows to fp16, then cuBLAS fp16 x fp16 -> fp32. */
static int gemm_rows_f16(rt_backend *be, const cu_lin *L, int32_t r0, int32_t rows, const float *xf,
                         int32_t m, float *y, long ldy)
{
    if (k_f32_to_f16(xf, (long)m * L->k, be->x16, be->st))
        return -1;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s =
        cublasGemmEx(be->cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, m, L->k, &one,
                     L->w16 + (int64_t)r0 * L->k, CUDA_R_16F, L->k, be->x16, CUDA_R_16F, L->k,
                     &zero, y + r0, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

/* w8a8: the input rows quantized per token, cuBLAS int8 -> int32, then the scale epilogue. */
static int gemm_rows_w8a8(rt_backend *be, const cu_lin *L, int32_t r0, int32_t rows,
                          const float *xf, int32_t m, float *y, long ldy)
{
    if (k_quant_rows_i8(xf, m, L->k, be->qx[1], be->sx[1], be->st))
        return -1;
    const int32_t one = 1, zero = 0;
    cublasStatus_t s =
        cublasGemmEx(be->cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, m, L->k, &one,
                     L->w8 + (int64_t)r0 * L->k, CUDA_R_8I, L->k, be->qx[1], CUDA_R_8I, L->k, &zero,
                     be->acc32, CUDA_R_32I, rows, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return -1;
    return k_w8a8_epilogue(be->acc32, m, rows, be->sx[1], L->s8 + r0, y + r0, ldy, be->st);
}

/* y[:, r0 .. r0 + rows) of a group's GEMM, as the mode says. Input: codes (integer modes) or xf. */
static int gemm_rows(rt_backend *be, const cu_lin *L, int32_t r0, int32_t rows, int bits,
                     const float *xf, int32_t m, int32_t n_dec, float *y, long ldy)
{
    if (be->p.mode == RT_MODE_FP16)
        return gemm_rows_f16(be, L, r0, rows, xf, m, y, ldy);
    if (be->p.mode == RT_MODE_W8A8)
        return gemm_rows_w8a8(be, L, r0, rows, xf, m, y, ldy);
    if (!be->int_mode) {
        const float one = 1.0f, zero = 0.0f;
        cublasStatus_t s =
            cublasSgemm(be->cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, m, L->k, &one,
                        L->w + (int64_t)r0 * L->k, L->k, xf, L->k, &zero, y + r0, (int)ldy);
        return s == CUBLAS_STATUS_SUCCESS ? 0 : -1;
    }
    int i = bits == 8;
    k_w6 w = {.packed = L->packed + (int64_t)r0 * L->row_bytes,
              .sw = L->sw + (int64_t)r0 * (L->k / L->g),
              .row_bytes = (long)L->row_bytes,
              .n = rows,
              .k = L->k,
              .g = L->g};
    /* decode rows: k_gemm_w6's kernel for their count; the rest: the prefill kernel (step_meta) */
    if (n_dec > 0 &&
        k_gemm_w6(be->qx[i], be->sx[i], n_dec, &w, y + r0, ldy, be->ws, be->ws_bytes, be->st))
        return -1;
    if (m == n_dec)
        return 0;
    const int64_t ng = L->k / L->g;
    return k_gemm_w6_prefill(be->qx[i] + (int64_t)n_dec * L->k, be->sx[i] + n_dec * ng, m - n_dec,
                             &w, y + r0 + n_dec * ldy, ldy, be->st);
}

static bool mixed_bits(const cu_lin *L)
{
    for (int32_t i = 1; i < L->n_part; i++)
        if (L->bits[i] != L->bits[0])
            return true;
    return false;
}

/* All linears of a group; one GEMM when their bits agree (or the mode is fp32). */
static int gemm_group(rt_backend *be, const cu_lin *L, const float *xf, const step_meta *sm,
                      float *y)
{
    const int32_t m = sm->n_tok, nd = sm->n_dec;
    if (!mixed_bits(L) || !be->int_mode)
        return gemm_rows(be, L, 0, L->n, L->bits[0], xf, m, nd, y, L->n);
    int32_t r0 = 0;
    for (int32_t i = 0; i < L->n_part; i++) {
        if (gemm_rows(be, L, r0, L->rows[i], L->bits[i], xf, m, nd, y, L->n))
            return -1;
        r0 += L->rows[i];
    }
    return 0;
}

/* Codes of every bit width a group needs, from hf (filled by the producer with first_bits' codes
 * already written into qx[first_bits == 8]). */
static int quantize_rest(rt_backend *be, const cu_lin *L, int first_bits, int32_t m)
{
    for (int32_t i = 0; i < L->n_part; i++)
        if (L->bits[i] != first_bits)
            return k_quant(be->hf, m, L->k, L->bits[i], L->g, be->qx[L->bits[i] == 8],
                           be->sx[L->bits[i] == 8], be->st);
    return 0;
}

/* x += add; RMSNorm; the input of group L (codes, or fp32 in hf). */
static int norm_into(rt_backend *be, const float *add, const float *w, const cu_lin *L, int32_t m)
{
    const fq_config *c = &be->m->cfg;
    if (!be->int_mode)
        return k_add_rmsnorm_quant(be->x, add, w, m, c->n_embd, c->norm_eps, be->hf, NULL, NULL, 8,
                                   32, be->st);
    int b = L->bits[0];
    float *hf = mixed_bits(L) ? be->hf : NULL;
    if (k_add_rmsnorm_quant(be->x, add, w, m, c->n_embd, c->norm_eps, hf, be->qx[b == 8],
                            be->sx[b == 8], b, L->g, be->st))
        return -1;
    return quantize_rest(be, L, b, m);
}

/* Attention over the step's decode rows (decode kernel) and over the rest (tiled kernel), each
 * call with its own tokens and sequences (step_meta says why). */
static int attend(rt_backend *be, const step_meta *sm, long ld, const uint16_t *kc,
                  const uint16_t *vc, const k_attn_shape *sh, int8_t *qo, float *so, int b, int g)
{
    const int32_t nd = sm->n_dec;
    float *out = qo ? NULL : be->att;
    k_attn_batch ab = {.tok_seq = sm->seq,
                       .tok_pos = sm->pos,
                       .seq_tok0 = sm->seq_tok0,
                       .block_tables = sm->tables,
                       .max_blocks = sm->max_blocks,
                       .block_size = be->p.kv.block_size};
    if (nd > 0) {
        ab.n_tokens = nd;
        ab.n_seqs = nd;
        ab.max_new = 1;
        if (k_attention(be->qkv, ld, kc, vc, &ab, sh, out, qo, so, b, g, be->st))
            return -1;
    }
    if (nd == sm->n_seqs)
        return 0;
    ab.n_tokens = sm->n_tok - nd;
    ab.n_seqs = sm->n_seqs - nd;
    ab.seq_tok0 = sm->seq_tok0 + nd; /* the tiled kernel finds its tokens from these */
    ab.block_tables = sm->tables + (int64_t)nd * sm->max_blocks;
    ab.max_new = sm->max_new_pf;
    return k_attention(be->qkv, ld, kc, vc, &ab, sh, out, qo, so, b, g, be->st);
}

static int attention(rt_backend *be, int32_t l, const step_meta *sm)
{
    const fq_config *c = &be->m->cfg;
    const cu_layer *d = &be->layers[l];
    long ld = (long)(be->qd + 2 * be->kv_dim);
    int32_t m = sm->n_tok;
    uint16_t *kc = be->k_cache + (int64_t)l * be->n_slots * be->kv_dim;
    uint16_t *vc = be->v_cache + (int64_t)l * be->n_slots * be->kv_dim;
    if (k_rope_kv_store(be->qkv, ld, m, sm->pos, sm->slot, c->n_head, c->n_head_kv, c->head_dim,
                        c->rope_theta, c->rope_style == FQ_ROPE_INTERLEAVED, kc, vc, be->st))
        return -1;
    k_attn_shape sh = {.n_head = c->n_head,
                       .n_kv = c->n_head_kv,
                       .hd = c->head_dim,
                       .scale = 1.0f / sqrtf((float)c->head_dim)};
    int b = d->o.bits[0];
    bool fused = be->int_mode && c->head_dim % d->o.g == 0;
    if (attend(be, sm, ld, kc, vc, &sh, fused ? be->qx[b == 8] : NULL,
               fused ? be->sx[b == 8] : NULL, b, d->o.g))
        return -1;
    if (be->int_mode && !fused &&
        k_quant(be->att, m, (int)be->qd, b, d->o.g, be->qx[b == 8], be->sx[b == 8], be->st))
        return -1;
    return gemm_group(be, &d->o, be->att, sm, be->tmp);
}

static int mlp(rt_backend *be, int32_t l, const step_meta *sm)
{
    const int32_t m = sm->n_tok;
    const fq_config *c = &be->m->cfg;
    const cu_layer *d = &be->layers[l];
    if (norm_into(be, be->tmp, d->ffn_norm, &d->gu, m) ||
        gemm_group(be, &d->gu, be->hf, sm, be->gu))
        return -1;
    int b = d->down.bits[0];
    if (k_silu_mul_quant(be->gu, 2L * c->n_ff, m, c->n_ff, be->int_mode ? NULL : be->hf,
                         be->int_mode ? be->qx[b == 8] : NULL, be->int_mode ? be->sx[b == 8] : NULL,
                         b, be->int_mode ? d->down.g : 32, be->st))
        return -1;
    return gemm_group(be, &d->down, be->hf, sm, be->tmp);
}

static int layers_forward(rt_backend *be, const step_meta *sm)
{
    const rt_model *md = be->m;
    int32_t m = sm->n_tok;
    if (k_embed(be->tok_embd, sm->ids, m, md->cfg.n_embd, be->x, be->st))
        return -1;
    for (int32_t l = 0; l < md->cfg.n_layer; l++) {
        const cu_layer *d = &be->layers[l];
        if (norm_into(be, l == 0 ? NULL : be->tmp, d->attn_norm, &d->qkv, m) ||
            gemm_group(be, &d->qkv, be->hf, sm, be->qkv) || attention(be, l, sm) || mlp(be, l, sm))
            return -1;
    }
    return 0;
}

/* The last residual add, the final norm of the wanted rows (fp16) and lm_head. */
static int output_logits(rt_backend *be, const step_meta *sm)
{
    const fq_config *c = &be->m->cfg;
    if (k_final_norm_f16(be->x, be->tmp, sm->rows, sm->n_rows, c->n_embd, be->out_norm, c->norm_eps,
                         be->xn16, be->st))
        return -1;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s =
        cublasGemmEx(be->cb, CUBLAS_OP_T, CUBLAS_OP_N, c->n_vocab, sm->n_rows, c->n_embd, &one,
                     be->lm_head, CUDA_R_16F, c->n_embd, be->xn16, CUDA_R_16F, c->n_embd, &zero,
                     be->logits, CUDA_R_32F, c->n_vocab, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

/* ---- decode steps as CUDA graphs ---- */

/* The cuBLAS workspace (so that captures allocate nothing), the fixed metadata and the identity
 * rows; n_buckets = the buckets that fit max_batch_tokens. */
static int graphs_init(rt_backend *be, char *err, size_t err_len)
{
    cu_graphs *g = &be->gr;
    be->blas_ws = dev_alloc(be, (size_t)CU_BLAS_WS_MB << 20);
    if (!be->blas_ws || cublasSetWorkspace(be->cb, be->blas_ws, (size_t)CU_BLAS_WS_MB << 20) !=
                            CUBLAS_STATUS_SUCCESS)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: no cuBLAS workspace");
    g->on = be->p.graphs;
    g->n_buckets = 0;
    while (g->n_buckets < CU_N_BUCKETS && cu_buckets[g->n_buckets] <= be->p.max_batch_tokens)
        g->n_buckets++;
    if (!g->on || g->n_buckets == 0) {
        g->on = false;
        return 0;
    }
    const int32_t bmax = cu_buckets[g->n_buckets - 1];
    g->stride = be->p.kv.n_blocks + 1;
    const size_t n = 3 * (size_t)bmax + (size_t)bmax * (size_t)g->stride;
    int32_t iota[257];
    for (int32_t i = 0; i <= bmax; i++)
        iota[i] = i;
    g->iota_d = upload(be, iota, (size_t)(bmax + 1) * sizeof(int32_t));
    g->meta_d = dev_alloc(be, n * sizeof(int32_t));
    if (!g->iota_d || !g->meta_d ||
        cudaMallocHost((void **)&g->meta_h, n * sizeof(int32_t)) != cudaSuccess)
        return fq_err(err, err_len, FQ_ENOMEM, "cuda backend: no memory for the step graphs");
    return 0;
}

/* The bucket of a step, or -1 when it is not a decode step a graph can run. */
static int graph_bucket(const rt_backend *be, const rt_batch *b)
{
    const cu_graphs *g = &be->gr;
    if (!g->on || b->n_seqs < 1 || b->n_seqs > cu_buckets[g->n_buckets - 1])
        return -1;
    for (int32_t s = 0; s < b->n_seqs; s++)
        if (b->seqs[s].n_tokens != 1 || b->seqs[s].all_logits ||
            b->seqs[s].kv->n_blocks > g->stride)
            return -1;
    int i = 0;
    while (cu_buckets[i] < b->n_seqs)
        i++;
    return i;
}

/* Device views of bucket bi's metadata: ids, positions and slots at fixed offsets, the table
 * rows at the fixed stride, the identity for the rest. */
static step_meta graph_meta(const rt_backend *be, int bi)
{
    const cu_graphs *g = &be->gr;
    const int32_t bmax = cu_buckets[g->n_buckets - 1], B = cu_buckets[bi];
    int32_t *d = g->meta_d;
    return (step_meta){.ids = d,
                       .pos = d + bmax,
                       .slot = d + 2 * bmax,
                       .tables = d + 3 * bmax,
                       .seq = g->iota_d,
                       .seq_tok0 = g->iota_d,
                       .rows = g->iota_d,
                       .n_tok = B,
                       .n_seqs = B,
                       .n_rows = B,
                       .max_blocks = g->stride,
                       .n_dec = B,
                       .max_new_pf = 1};
}

/* Fills and uploads the step's rows of bucket bi (padding rows: token 0 at position 0 of the
 * spare block) — ids, positions and slots in one copy, the table rows in one 2-D copy. */
static int graph_upload(rt_backend *be, const rt_batch *b, int bi, char *err, size_t err_len)
{
    cu_graphs *g = &be->gr;
    const int32_t bmax = cu_buckets[g->n_buckets - 1], B = cu_buckets[bi];
    const int32_t spare = be->p.kv.n_blocks;
    int32_t *h = g->meta_h, *tables = h + 3 * bmax, maxb = 1;
    for (int32_t s = 0; s < B; s++) {
        const bool real = s < b->n_seqs;
        const rt_kv_seq *kv = real ? b->seqs[s].kv : NULL;
        h[s] = real ? b->seqs[s].tokens[0] : 0;
        h[bmax + s] = real ? be->pos[s] : 0;
        h[2 * bmax + s] = real ? (int32_t)be->slot[s] : spare * be->p.kv.block_size;
        int32_t *row = tables + (size_t)s * g->stride;
        if (!real) {
            row[0] = spare;
            continue;
        }
        for (int32_t j = 0; j < kv->n_blocks; j++)
            row[j] = kv->blocks[j];
        maxb = kv->n_blocks > maxb ? kv->n_blocks : maxb;
    }
    const size_t pitch = (size_t)g->stride * sizeof(int32_t);
    cudaError_t e = cudaMemcpyAsync(g->meta_d, h, 3 * (size_t)bmax * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, be->st);
    if (e == cudaSuccess)
        e = cudaMemcpy2DAsync(g->meta_d + 3 * bmax, pitch, tables, pitch,
                              (size_t)maxb * sizeof(int32_t), (size_t)B, cudaMemcpyHostToDevice,
                              be->st);
    return e == cudaSuccess ? 0 : cuda_fail(err, err_len, e, "uploading the step");
}

/* Records bucket bi's step (embedding to logits) into a graph. A failed capture turns graphs off
 * (the step then runs eagerly) and is counted. */
static void graph_capture(rt_backend *be, int bi)
{
    cu_graphs *g = &be->gr;
    const step_meta sm = graph_meta(be, bi);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamBeginCapture(be->st, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
        const bool bad = layers_forward(be, &sm) != 0 || output_logits(be, &sm) != 0;
        e = cudaStreamEndCapture(be->st, &graph);
        if (e == cudaSuccess && bad)
            e = cudaErrorStreamCaptureInvalidated;
    }
    if (e == cudaSuccess)
        e = cudaGraphInstantiate(&g->exec[bi], graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (e == cudaSuccess) {
        g->stats.graphs_captured++;
        return;
    }
    (void)cudaGetLastError();
    g->exec[bi] = NULL;
    g->on = false;
    g->stats.graph_failures++;
}

/* A decode step through its bucket's graph: 1 when it ran (sm describes its logits rows), 0 when
 * the step must run eagerly, or an error. */
static int graph_step(rt_backend *be, const rt_batch *b, step_meta *sm, char *err, size_t err_len)
{
    const int bi = graph_bucket(be, b);
    if (bi < 0)
        return 0;
    if (!be->gr.exec[bi])
        graph_capture(be, bi);
    if (!be->gr.exec[bi])
        return 0;
    int rc = graph_upload(be, b, bi, err, err_len);
    if (rc)
        return rc;
    cudaError_t e = cudaGraphLaunch(be->gr.exec[bi], be->st);
    if (e != cudaSuccess)
        return cuda_fail(err, err_len, e, "launching the step graph");
    *sm = graph_meta(be, bi);
    sm->n_rows = b->n_seqs;
    be->gr.stats.graph_steps++;
    return 1;
}

/* Everything of a step up to the logits on the device (be->logits, sm->n_rows rows). */
static int run_step(rt_backend *be, const rt_batch *b, step_meta *sm, char *err, size_t err_len)
{
    rt_batch_limits lim = {.max_tokens = be->p.max_batch_tokens,
                           .n_vocab = be->m->cfg.n_vocab,
                           .block_size = be->p.kv.block_size,
                           .n_blocks = be->p.kv.n_blocks};
    rt_batch_plan plan = {.pos = be->pos, .seq_of = be->seq_of, .slot = be->slot};
    int rc = rt_batch_check_plan(b, &lim, &plan, err, err_len);
    if (rc == 0)
        rc = graph_step(be, b, sm, err, err_len);
    if (rc != 0) {
        be->gr.stats.steps += rc == 1;
        return rc == 1 ? 0 : rc;
    }
    rc = upload_meta(be, b, sm, err, err_len);
    if (rc)
        return rc;
    be->gr.stats.steps++;
    if (layers_forward(be, sm) || output_logits(be, sm)) {
        cudaError_t e = cudaStreamSynchronize(be->st);
        return fq_err(err, err_len, FQ_EIO, "cuda backend: a kernel or cuBLAS call failed (%s)",
                      cudaGetErrorString(e == cudaSuccess ? cudaGetLastError() : e));
    }
    return 0;
}

static int cuda_forward(rt_backend *be, const rt_batch *b, float *logits, char *err, size_t err_len)
{
    step_meta sm = {0};
    int rc = run_step(be, b, &sm, err, err_len);
    if (rc)
        return rc;
    size_t bytes = (size_t)sm.n_rows * (size_t)be->m->cfg.n_vocab * sizeof(float);
    cudaError_t e = cudaMemcpyAsync(logits, be->logits, bytes, cudaMemcpyDeviceToHost, be->st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(be->st);
    return e == cudaSuccess ? 0 : cuda_fail(err, err_len, e, "the step");
}

/* The n tokens the kernels left in tok_d, to the host. */
static int tokens_back(rt_backend *be, int32_t n, int32_t *tokens, char *err, size_t err_len)
{
    cudaError_t e = cudaMemcpyAsync(be->tok_h, be->tok_d, (size_t)n * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, be->st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(be->st);
    if (e != cudaSuccess)
        return cuda_fail(err, err_len, e, "the step");
    memcpy(tokens, be->tok_h, (size_t)n * sizeof(int32_t));
    return 0;
}

/* The argmax of each row on the device (k_argmax, rt_argmax's rule); 4 bytes per row come back. */
static int cuda_forward_argmax(rt_backend *be, const rt_batch *b, int32_t *tokens, char *err,
                               size_t err_len)
{
    step_meta sm = {0};
    int rc = run_step(be, b, &sm, err, err_len);
    if (rc)
        return rc;
    if (k_argmax(be->logits, sm.n_rows, be->m->cfg.n_vocab, be->tok_d, be->st))
        return fq_err(err, err_len, FQ_EIO, "cuda backend: the argmax kernel did not start");
    return tokens_back(be, sm.n_rows, tokens, err, err_len);
}

/* Checks every row as the sampler would (FQ_EINVAL) and says whether all are greedy. */
static int check_rows(const rt_backend *be, const rt_sample_row *rows, int64_t n, bool *greedy,
                      char *err, size_t err_len)
{
    *greedy = true;
    for (int64_t r = 0; r < n; r++) {
        int rc = rt_sample_row_check(&rows[r], be->m->cfg.n_vocab, err, err_len);
        if (rc)
            return rc;
        *greedy = *greedy && rows[r].temperature < RT_SAMPLER_GREEDY_EPS;
    }
    return 0;
}

/* Sampling on the device (k_sample): the rows go up, 4 bytes per row come back; all-greedy steps
 * take the argmax kernel. */
static int cuda_forward_sample(rt_backend *be, const rt_batch *b, const rt_sample_row *rows,
                               int32_t *tokens, char *err, size_t err_len)
{
    const int64_t n = rt_batch_n_logits(b);
    bool greedy;
    int rc = check_rows(be, rows, n, &greedy, err, err_len);
    if (rc || greedy)
        return rc ? rc : cuda_forward_argmax(be, b, tokens, err, err_len);
    step_meta sm = {0};
    rc = run_step(be, b, &sm, err, err_len);
    if (rc)
        return rc;
    for (int32_t r = 0; r < sm.n_rows; r++)
        be->srow_h[r] = (k_sample_row){.temperature = rows[r].temperature,
                                       .top_k = rows[r].top_k,
                                       .top_p = rows[r].top_p,
                                       .min_p = rows[r].min_p,
                                       .u = rows[r].u};
    cudaError_t e =
        cudaMemcpyAsync(be->srow_d, be->srow_h, (size_t)sm.n_rows * sizeof(k_sample_row),
                        cudaMemcpyHostToDevice, be->st);
    if (e != cudaSuccess)
        return cuda_fail(err, err_len, e, "uploading the sampling rows");
    if (k_sample(be->logits, sm.n_rows, be->m->cfg.n_vocab, be->srow_d, be->tok_d, be->st))
        return fq_err(err, err_len, FQ_EIO, "cuda backend: the sampling kernel did not start");
    return tokens_back(be, sm.n_rows, tokens, err, err_len);
}

static void cuda_mem(const rt_backend *be, rt_backend_mem *out)
{
    *out = be->mem;
}

static void cuda_stats(const rt_backend *be, rt_backend_stats *out)
{
    *out = be->gr.stats;
}

const rt_ops rt_backend_cuda_ops = {.name = "cuda",
                                    .create = cuda_create,
                                    .destroy = cuda_destroy,
                                    .forward = cuda_forward,
                                    .mem = cuda_mem,
                                    .forward_argmax = cuda_forward_argmax,
                                    .stats = cuda_stats,
                                    .forward_sample = cuda_forward_sample};

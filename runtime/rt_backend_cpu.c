/* rt_backend_cpu.c — the fp32 CPU reference backend: the LLaMA forward pass over a batch of
 * sequences with a paged KV cache, written to read like the math.
 *
 * Per step: gather embeddings of all new tokens (M rows); per layer: RMSNorm → q, k, v projections
 * (one matmul each over all M rows) → RoPE → write k, v into the cache slots → causal attention of
 * each token over its sequence's cached context (online softmax, GQA) → o projection + residual →
 * RMSNorm → gate, up → SwiGLU → down + residual; then the final norm and lm_head for the rows whose
 * logits are wanted. Matmuls and attention use the thread pool.
 *
 * The decoder linears follow the mode (rt_ops.h): fp32 weights; INT6 weights dequantized to fp32
 * once at create (w6a16); or the FlexQ integer path — the input rows quantized per token and group
 * (fq_act.h) and multiplied with the packed codes group by group (rt_cpu_int6.h). The comparison
 * modes: fp16 rounds the weights (once) and each linear's input rows to fp16 and multiplies in
 * fp32; w8a8 quantizes the weights per output channel (once) and the input rows per token, both
 * with fq_act.h's 8-bit rule over a whole row, and multiplies in int32.
 */
#include "rt_cpu_int6.h"
#include "rt_cpu_math.h"
#include "rt_ops.h"

#include "fq_act.h"
#include "fq_base.h"
#include "fq_weight.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct rt_backend {
    const rt_model *m;
    rt_backend_params p;
    rt_pool *pool;
    int64_t kv_dim;  /* n_head_kv * head_dim */
    int64_t n_slots; /* n_blocks * block_size */
    float *k_cache;  /* [n_layer, n_slots, kv_dim] */
    float *v_cache;  /* [n_layer, n_slots, kv_dim] */
    /* scratch for M = max_batch_tokens rows */
    float *x, *xn;    /* [M, n_embd] residual stream, normed input */
    float *q, *att;   /* [M, n_head*head_dim] */
    float *k, *v;     /* [M, kv_dim] */
    float *gate, *up; /* [M, n_ff] */
    float *tmp;       /* [M, n_embd] projection output before the residual add */
    float **deq;      /* w6a16, fp16: [n_layer * FQ_LIN_COUNT] fp32 weights (fp16: rounded) */
    int8_t **w8;      /* w8a8: [n_layer * FQ_LIN_COUNT] int8 weights [n_out, n_in] */
    float **s8;       /* w8a8: their per-channel scales [n_out] */
    float *xr;        /* fp16: [M, widest linear input] inputs rounded to fp16 */
    int32_t *abits;   /* [n_layer * FQ_LIN_COUNT] activation bits of the integer modes */
    int8_t *qx;       /* [M, widest linear input] activation codes */
    float *sx;        /* [M, widest / 32 + 1] activation scales */
    int32_t *pos;     /* [M] position of each token */
    int32_t *seq_of;  /* [M] batch index of each token's sequence */
    int64_t *slot;    /* [M] cache slot of each token */
    int64_t steps;    /* forward calls that ran */
};

rt_backend_params rt_backend_default_params(void)
{
    return (rt_backend_params){
        .n_threads = 0, .kv = rt_kv_default_params(), .max_batch_tokens = 512, .graphs = true};
}

static void cpu_destroy(rt_backend *be)
{
    if (!be)
        return;
    rt_pool_destroy(be->pool);
    float *bufs[] = {be->k_cache, be->v_cache, be->x,    be->xn, be->q,  be->att,
                     be->k,       be->v,       be->gate, be->up, be->tmp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    for (int64_t i = 0; i < (int64_t)be->m->cfg.n_layer * FQ_LIN_COUNT; i++) {
        if (be->deq)
            free(be->deq[i]);
        if (be->w8)
            free(be->w8[i]);
        if (be->s8)
            free(be->s8[i]);
    }
    free(be->deq);
    free(be->w8);
    free(be->s8);
    free(be->xr);
    free(be->abits);
    free(be->qx);
    free(be->sx);
    free(be->pos);
    free(be->seq_of);
    free(be->slot);
    free(be);
}

static int alloc_buffers(rt_backend *be)
{
    const fq_config *c = &be->m->cfg;
    size_t mt = (size_t)be->p.max_batch_tokens;
    size_t cache = (size_t)c->n_layer * (size_t)be->n_slots * (size_t)be->kv_dim;
    size_t qd = (size_t)c->n_head * (size_t)c->head_dim;
    be->k_cache = fq_calloc_array(cache, sizeof(float));
    be->v_cache = fq_calloc_array(cache, sizeof(float));
    be->x = fq_malloc_array(mt * (size_t)c->n_embd, sizeof(float));
    be->xn = fq_malloc_array(mt * (size_t)c->n_embd, sizeof(float));
    be->tmp = fq_malloc_array(mt * (size_t)c->n_embd, sizeof(float));
    be->q = fq_malloc_array(mt * qd, sizeof(float));
    be->att = fq_malloc_array(mt * qd, sizeof(float));
    be->k = fq_malloc_array(mt * (size_t)be->kv_dim, sizeof(float));
    be->v = fq_malloc_array(mt * (size_t)be->kv_dim, sizeof(float));
    be->gate = fq_malloc_array(mt * (size_t)c->n_ff, sizeof(float));
    be->up = fq_malloc_array(mt * (size_t)c->n_ff, sizeof(float));
    size_t widest = (size_t)(c->n_ff > c->n_embd ? c->n_ff : c->n_embd);
    widest = widest > qd ? widest : qd;
    be->qx = fq_malloc_array(mt * widest, sizeof(int8_t));
    be->sx = fq_malloc_array(mt * (widest / 32 + 1), sizeof(float));
    if (be->p.mode == RT_MODE_FP16 && !(be->xr = fq_malloc_array(mt * widest, sizeof(float))))
        return FQ_ENOMEM;
    be->pos = fq_malloc_array(mt, sizeof(int32_t));
    be->seq_of = fq_malloc_array(mt, sizeof(int32_t));
    be->slot = fq_malloc_array(mt, sizeof(int64_t));
    bool ok = be->k_cache && be->v_cache && be->x && be->xn && be->tmp && be->q && be->att &&
              be->k && be->v && be->gate && be->up && be->pos && be->seq_of && be->slot && be->qx &&
              be->sx;
    return ok ? 0 : FQ_ENOMEM;
}

/* The activation bits of every linear in the integer modes; 0 in the fp32 ones. */
static int plan_abits(rt_backend *be, char *err, size_t err_len)
{
    const rt_model *m = be->m;
    int64_t n = (int64_t)m->cfg.n_layer * FQ_LIN_COUNT;
    be->abits = fq_calloc_array((size_t)n, sizeof *be->abits);
    if (!be->abits)
        return fq_err(err, err_len, FQ_ENOMEM, "cpu backend: out of memory");
    for (int64_t i = 0; i < n; i++) {
        int rc = rt_linear_abits(m, &be->p, (int32_t)(i / FQ_LIN_COUNT),
                                 (fq_lin_type)(i % FQ_LIN_COUNT), &be->abits[i], err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

/* w6a16: fp32 copies of the dequantized INT6 weights. */
static int dequantize_all(rt_backend *be, char *err, size_t err_len)
{
    const rt_model *m = be->m;
    int64_t n = (int64_t)m->cfg.n_layer * FQ_LIN_COUNT;
    be->deq = fq_calloc_array((size_t)n, sizeof *be->deq);
    for (int64_t i = 0; be->deq && i < n; i++) {
        const rt_linear *l =
            rt_layer_linear(&m->layers[i / FQ_LIN_COUNT], (fq_lin_type)(i % FQ_LIN_COUNT));
        be->deq[i] = fq_malloc_array((size_t)l->n_out * (size_t)l->n_in, sizeof(float));
        if (!be->deq[i])
            break;
        fq_weight_dequantize(l->q6.packed, l->q6.scales, l->n_out, l->n_in, l->q6.group,
                             be->deq[i]);
    }
    if (!be->deq || !be->deq[n - 1])
        return fq_err(err, err_len, FQ_ENOMEM, "cpu backend: out of memory dequantizing weights");
    return 0;
}

static void round_f16(const float *x, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = fq_f16_to_f32(fq_f32_to_f16(x[i]));
}

/* fp16 and w8a8: each linear's weights in the mode's format, from rt_linear_fp32. */
static int convert_all(rt_backend *be, char *err, size_t err_len)
{
    const rt_model *m = be->m;
    const int64_t n = (int64_t)m->cfg.n_layer * FQ_LIN_COUNT;
    const bool f16 = be->p.mode == RT_MODE_FP16;
    if (f16)
        be->deq = fq_calloc_array((size_t)n, sizeof *be->deq);
    else if ((be->w8 = fq_calloc_array((size_t)n, sizeof *be->w8)))
        be->s8 = fq_calloc_array((size_t)n, sizeof *be->s8);
    int rc = (f16 ? be->deq != NULL : be->s8 != NULL) ? 0 : FQ_ENOMEM;
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        const rt_linear *l =
            rt_layer_linear(&m->layers[i / FQ_LIN_COUNT], (fq_lin_type)(i % FQ_LIN_COUNT));
        const size_t count = (size_t)l->n_out * (size_t)l->n_in;
        const float *w = NULL;
        float *owned = NULL;
        if ((rc = rt_linear_fp32(l, &w, &owned)) != 0)
            break;
        if (f16 && (be->deq[i] = fq_malloc_array(count, sizeof(float))))
            round_f16(w, (int64_t)count, be->deq[i]);
        else if (!f16 && (be->w8[i] = fq_malloc_array(count, 1)) &&
                 (be->s8[i] = fq_malloc_array((size_t)l->n_out, sizeof(float))))
            fq_act_quantize(w, l->n_out, l->n_in, (int32_t)l->n_in, 8, be->w8[i], be->s8[i]);
        else
            rc = FQ_ENOMEM;
        free(owned);
    }
    if (rc)
        return fq_err(err, err_len, rc, "cpu backend: preparing the %s weights: %s",
                      rt_mode_name(be->p.mode), fq_strerror(rc));
    return 0;
}

static int cpu_create(const rt_model *m, const rt_backend_params *p, rt_backend **out, char *err,
                      size_t err_len)
{
    *out = NULL;
    if (p->max_batch_tokens <= 0 || p->kv.block_size <= 0 || p->kv.n_blocks <= 0)
        return fq_err(err, err_len, FQ_EINVAL,
                      "cpu backend: max_batch_tokens %d, block size %d and blocks %d must be > 0",
                      p->max_batch_tokens, p->kv.block_size, p->kv.n_blocks);
    if (m->cfg.head_dim > RT_CPU_MAX_HEAD_DIM)
        return fq_err(err, err_len, FQ_EUNSUP, "cpu backend: head dim %d is over %d",
                      m->cfg.head_dim, RT_CPU_MAX_HEAD_DIM);
    rt_backend *be = calloc(1, sizeof *be);
    if (!be)
        return fq_err(err, err_len, FQ_ENOMEM, "cpu backend: out of memory");
    be->m = m;
    be->p = *p;
    be->kv_dim = (int64_t)m->cfg.n_head_kv * m->cfg.head_dim;
    be->n_slots = (int64_t)p->kv.n_blocks * p->kv.block_size;
    int rc = rt_mode_check(m, p->mode, err, err_len);
    if (rc == 0)
        rc = plan_abits(be, err, err_len);
    if (rc == 0 && p->mode == RT_MODE_W6A16)
        rc = dequantize_all(be, err, err_len);
    if (rc == 0 && (p->mode == RT_MODE_FP16 || p->mode == RT_MODE_W8A8))
        rc = convert_all(be, err, err_len);
    if (rc) {
        cpu_destroy(be);
        return rc;
    }
    rc = rt_pool_create(p->n_threads, &be->pool);
    if (rc == 0)
        rc = alloc_buffers(be);
    if (rc) {
        cpu_destroy(be);
        return fq_err(err, err_len, rc, "cpu backend: out of memory for %d KV blocks of %d tokens",
                      p->kv.n_blocks, p->kv.block_size);
    }
    *out = be;
    return 0;
}

/* Checks the whole batch before anything is written, and fills pos/seq_of/slot per token. */
static int plan_step(rt_backend *be, const rt_batch *b, char *err, size_t err_len)
{
    rt_batch_limits lim = {.max_tokens = be->p.max_batch_tokens,
                           .n_vocab = be->m->cfg.n_vocab,
                           .block_size = be->p.kv.block_size,
                           .n_blocks = be->p.kv.n_blocks};
    rt_batch_plan plan = {.pos = be->pos, .seq_of = be->seq_of, .slot = be->slot};
    return rt_batch_check_plan(b, &lim, &plan, err, err_len);
}

typedef struct attn_task {
    rt_backend *be;
    const rt_batch *b;
    const float *kc, *vc; /* this layer's cache */
} attn_task;

/* Causal attention of one (token, head) over its sequence's context, block by block. */
static void attend_one(void *ctx, int64_t idx)
{
    const attn_task *at = ctx;
    const rt_backend *be = at->be;
    const fq_config *c = &be->m->cfg;
    int32_t hd = c->head_dim, n_head = c->n_head;
    int64_t t = idx / n_head;
    int32_t h = (int32_t)(idx % n_head);
    int32_t g = h / (n_head / c->n_head_kv);
    const rt_kv_seq *kv = at->b->seqs[be->seq_of[t]].kv;
    int32_t bs = be->p.kv.block_size, n_ctx = be->pos[t] + 1;
    const float *q = be->q + t * (int64_t)n_head * hd + (int64_t)h * hd;
    rt_attn_acc acc;
    rt_cpu_attn_begin(&acc, hd);
    for (int32_t j0 = 0; j0 < n_ctx; j0 += bs) {
        int64_t row0 = ((int64_t)kv->blocks[j0 / bs] * bs) * be->kv_dim + (int64_t)g * hd;
        int32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
        rt_cpu_attn_update(&acc, q, at->kc + row0, at->vc + row0, be->kv_dim, n, hd,
                           1.0f / sqrtf((float)hd));
    }
    rt_cpu_attn_end(&acc, hd, be->att + t * (int64_t)n_head * hd + (int64_t)h * hd);
}

/* y[m, n_out] = x[m, n_in] W^T for linear t of layer l, as the mode says. */
static void linear_fwd(rt_backend *be, int32_t l, fq_lin_type t, const float *x, int64_t m,
                       float *y)
{
    const rt_linear *lin = rt_layer_linear(&be->m->layers[l], t);
    int64_t i = (int64_t)l * FQ_LIN_COUNT + t;
    if (be->p.mode == RT_MODE_FP || be->p.mode == RT_MODE_W6A16) {
        const float *w = be->p.mode == RT_MODE_FP ? lin->w : be->deq[i];
        rt_cpu_matmul(be->pool, x, m, lin->n_in, w, lin->n_out, y);
        return;
    }
    if (be->p.mode == RT_MODE_FP16) {
        round_f16(x, m * lin->n_in, be->xr);
        rt_cpu_matmul(be->pool, be->xr, m, lin->n_in, be->deq[i], lin->n_out, y);
        return;
    }
    if (be->p.mode == RT_MODE_W8A8) {
        fq_act_quantize(x, m, lin->n_in, (int32_t)lin->n_in, 8, be->qx, be->sx);
        rt_cpu_matmul_w8a8(be->pool, be->qx, be->sx, m, lin->n_in, be->w8[i], be->s8[i], lin->n_out,
                           y);
        return;
    }
    const rt_q6 *q = &lin->q6;
    fq_act_quantize(x, m, lin->n_in, q->group, be->abits[i], be->qx, be->sx);
    rt_cpu_matmul_q6(be->pool, be->qx, be->sx, m, lin->n_in, q->group, q->packed, q->scales,
                     q->row_bytes, lin->n_out, y);
}

static void add_rows(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void attention_block(rt_backend *be, const rt_batch *b, const rt_layer *ly, int32_t l,
                            int64_t m)
{
    const fq_config *c = &be->m->cfg;
    int64_t e = c->n_embd, qd = (int64_t)c->n_head * c->head_dim;
    rt_cpu_rmsnorm(be->x, ly->attn_norm, m, e, c->norm_eps, be->xn);
    linear_fwd(be, l, FQ_LIN_Q, be->xn, m, be->q);
    linear_fwd(be, l, FQ_LIN_K, be->xn, m, be->k);
    linear_fwd(be, l, FQ_LIN_V, be->xn, m, be->v);
    float *kc = be->k_cache + (int64_t)l * be->n_slots * be->kv_dim;
    float *vc = be->v_cache + (int64_t)l * be->n_slots * be->kv_dim;
    for (int64_t t = 0; t < m; t++) {
        rt_cpu_rope(be->q + t * qd, c->n_head, c->head_dim, be->pos[t], c->rope_theta,
                    c->rope_style);
        rt_cpu_rope(be->k + t * be->kv_dim, c->n_head_kv, c->head_dim, be->pos[t], c->rope_theta,
                    c->rope_style);
        memcpy(kc + be->slot[t] * be->kv_dim, be->k + t * be->kv_dim,
               (size_t)be->kv_dim * sizeof(float));
        memcpy(vc + be->slot[t] * be->kv_dim, be->v + t * be->kv_dim,
               (size_t)be->kv_dim * sizeof(float));
    }
    attn_task at = {.be = be, .b = b, .kc = kc, .vc = vc};
    rt_pool_run(be->pool, m * c->n_head, attend_one, &at);
    linear_fwd(be, l, FQ_LIN_O, be->att, m, be->tmp);
    add_rows(be->x, be->tmp, m * e);
}

static void mlp_block(rt_backend *be, const rt_layer *ly, int32_t l, int64_t m)
{
    const fq_config *c = &be->m->cfg;
    int64_t e = c->n_embd, f = c->n_ff;
    rt_cpu_rmsnorm(be->x, ly->ffn_norm, m, e, c->norm_eps, be->xn);
    linear_fwd(be, l, FQ_LIN_GATE, be->xn, m, be->gate);
    linear_fwd(be, l, FQ_LIN_UP, be->xn, m, be->up);
    rt_cpu_silu_mul(be->gate, be->up, m * f);
    linear_fwd(be, l, FQ_LIN_DOWN, be->gate, m, be->tmp);
    add_rows(be->x, be->tmp, m * e);
}

/* Final norm of the rows whose logits are wanted (gathered into xn), then lm_head. */
static void output_logits(rt_backend *be, const rt_batch *b, float *logits)
{
    const fq_config *c = &be->m->cfg;
    int64_t e = c->n_embd, t = 0, r = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const rt_seq_step *sq = &b->seqs[s];
        int64_t first = sq->all_logits ? t : t + sq->n_tokens - 1;
        for (int64_t i = first; i < t + sq->n_tokens; i++, r++)
            memcpy(be->xn + r * e, be->x + i * e, (size_t)e * sizeof(float));
        t += sq->n_tokens;
    }
    rt_cpu_rmsnorm(be->xn, be->m->out_norm, r, e, c->norm_eps, be->xn);
    rt_cpu_matmul(be->pool, be->xn, r, e, be->m->lm_head.w, be->m->lm_head.n_out, logits);
}

static int cpu_forward(rt_backend *be, const rt_batch *b, float *logits, char *err, size_t err_len)
{
    int rc = plan_step(be, b, err, err_len);
    if (rc)
        return rc;
    const rt_model *md = be->m;
    int64_t e = md->cfg.n_embd, m = 0;
    for (int32_t s = 0; s < b->n_seqs; s++)
        for (int32_t i = 0; i < b->seqs[s].n_tokens; i++, m++)
            memcpy(be->x + m * e, md->tok_embd + (int64_t)b->seqs[s].tokens[i] * e,
                   (size_t)e * sizeof(float));
    for (int32_t l = 0; l < md->cfg.n_layer; l++) {
        attention_block(be, b, &md->layers[l], l, m);
        mlp_block(be, &md->layers[l], l, m);
    }
    output_logits(be, b, logits);
    be->steps++;
    return 0;
}

/* One step, then each logits row's token: rt_argmax (rows NULL) or rt_sample_row_pick. */
static int cpu_forward_pick(rt_backend *be, const rt_batch *b, const rt_sample_row *rows,
                            int32_t *tokens, char *err, size_t err_len)
{
    const int64_t n = rt_batch_n_logits(b), nv = be->m->cfg.n_vocab;
    float *logits = fq_malloc_array((size_t)(n > 0 ? n : 1) * (size_t)nv, sizeof *logits);
    if (!logits)
        return fq_err(err, err_len, FQ_ENOMEM, "cpu backend: out of memory for %lld logits rows",
                      (long long)n);
    int rc = 0;
    for (int64_t r = 0; rows && rc == 0 && r < n; r++) /* before the step: no side effects */
        rc = rt_sample_row_check(&rows[r], (int32_t)nv, err, err_len);
    if (rc == 0)
        rc = cpu_forward(be, b, logits, err, err_len);
    for (int64_t r = 0; rc == 0 && r < n; r++) {
        if (rows)
            rc = rt_sample_row_pick(&rows[r], logits + r * nv, (int32_t)nv, &tokens[r], err,
                                    err_len);
        else
            tokens[r] = rt_argmax(logits + r * nv, (int32_t)nv);
    }
    free(logits);
    return rc;
}

static int cpu_forward_argmax(rt_backend *be, const rt_batch *b, int32_t *tokens, char *err,
                              size_t err_len)
{
    return cpu_forward_pick(be, b, NULL, tokens, err, err_len);
}

static int cpu_forward_sample(rt_backend *be, const rt_batch *b, const rt_sample_row *rows,
                              int32_t *tokens, char *err, size_t err_len)
{
    return cpu_forward_pick(be, b, rows, tokens, err, err_len);
}

/* Bytes of one linear's weights as this backend holds them in its mode. */
static int64_t linear_bytes(const rt_backend *be, const rt_linear *l)
{
    const int64_t nk = l->n_out * l->n_in;
    switch (be->p.mode) {
    case RT_MODE_W8A8:
        return nk + 4 * l->n_out;
    case RT_MODE_W6A8:
    case RT_MODE_W6A6:
    case RT_MODE_FLEX:
        return l->n_out * (l->q6.row_bytes + 2 * (l->n_in / l->q6.group));
    default: /* fp32 (fp, w6a16) or fp32 copies of fp16-rounded weights (fp16) */
        return 4 * nk;
    }
}

static void cpu_mem(const rt_backend *be, rt_backend_mem *out)
{
    const fq_config *c = &be->m->cfg;
    memset(out, 0, sizeof *out);
    for (int32_t l = 0; l < c->n_layer; l++)
        for (int t = 0; t < FQ_LIN_COUNT; t++)
            out->linear_bytes +=
                linear_bytes(be, rt_layer_linear(&be->m->layers[l], (fq_lin_type)t));
    const int64_t ve = (int64_t)c->n_vocab * c->n_embd;
    out->weight_bytes = out->linear_bytes + 4 * ve * (c->tied_embeddings ? 1 : 2) +
                        4 * (int64_t)c->n_embd * (2 * c->n_layer + 1);
    out->kv_bytes = 2 * (int64_t)c->n_layer * be->n_slots * be->kv_dim * 4;
    const int64_t mt = be->p.max_batch_tokens, qd = (int64_t)c->n_head * c->head_dim;
    int64_t widest = c->n_ff > c->n_embd ? c->n_ff : c->n_embd;
    widest = widest > qd ? widest : qd;
    out->scratch_bytes = mt * 4 * (3 * (int64_t)c->n_embd + 2 * qd + 2 * be->kv_dim + 2 * c->n_ff) +
                         mt * widest * (1 + (be->xr ? 4 : 0)) + mt * 4 * (widest / 32 + 1);
}

static void cpu_stats(const rt_backend *be, rt_backend_stats *out)
{
    *out = (rt_backend_stats){.steps = be->steps};
}

const rt_ops rt_backend_cpu_ops = {.name = "cpu",
                                   .create = cpu_create,
                                   .destroy = cpu_destroy,
                                   .forward = cpu_forward,
                                   .mem = cpu_mem,
                                   .forward_argmax = cpu_forward_argmax,
                                   .stats = cpu_stats,
                                   .forward_sample = cpu_forward_sample};

const rt_ops *rt_backend_find(const char *name)
{
    if (strcmp(name, rt_backend_cpu_ops.name) == 0)
        return &rt_backend_cpu_ops;
#ifdef FQ_HAVE_CUDA
    if (strcmp(name, rt_backend_cuda_ops.name) == 0)
        return &rt_backend_cuda_ops;
#endif
    return NULL;
}

const char *rt_backend_names(void)
{
#ifdef FQ_HAVE_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

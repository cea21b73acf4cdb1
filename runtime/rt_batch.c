/* rt_batch.c — what every backend does with a step's batch before computing: count its tokens and
 * logits rows, check it against the model and the cache, and lay out per-token positions, sequences
 * and cache slots (rt_ops.h). */
#include "rt_ops.h"

#include "fq_base.h"

int32_t rt_prefill_chunk(int64_t left, int64_t cap, int64_t step_max)
{
    if (left <= 0 || cap <= 0)
        return 0;
    int64_t n = left < cap ? left : cap;
    if (left == 1 || step_max < 2)
        return (int32_t)n;
    if (n < left && left - n == 1)
        n--; /* leave two or more for the next chunk */
    return n >= 2 ? (int32_t)n : 0;
}

int64_t rt_batch_n_tokens(const rt_batch *b)
{
    int64_t n = 0;
    for (int32_t s = 0; s < b->n_seqs; s++)
        n += b->seqs[s].n_tokens;
    return n;
}

int64_t rt_batch_n_logits(const rt_batch *b)
{
    int64_t n = 0;
    for (int32_t s = 0; s < b->n_seqs; s++)
        n += b->seqs[s].all_logits ? b->seqs[s].n_tokens : 1;
    return n;
}

static int plan_seq(const rt_batch_limits *lim, const rt_seq_step *sq, int32_t s, int64_t t0,
                    rt_batch_plan *out, char *err, size_t err_len)
{
    int32_t bs = lim->block_size;
    int64_t end = (int64_t)sq->pos0 + sq->n_tokens;
    if (sq->n_tokens <= 0 || sq->pos0 < 0 || sq->kv->n_blocks * (int64_t)bs < end)
        return fq_err(err, err_len, FQ_ERANGE,
                      "sequence %d: %d tokens at position %d need %lld cache slots, %lld held", s,
                      sq->n_tokens, sq->pos0, (long long)end, (long long)sq->kv->n_blocks * bs);
    for (int32_t i = 0; i < sq->n_tokens; i++) {
        int32_t id = sq->tokens[i];
        if (id < 0 || id >= lim->n_vocab)
            return fq_err(err, err_len, FQ_ERANGE, "token id %d is outside [0, %d)", id,
                          lim->n_vocab);
        int32_t pos = sq->pos0 + i;
        int32_t blk = sq->kv->blocks[pos / bs];
        if (blk < 0 || blk >= lim->n_blocks)
            return fq_err(err, err_len, FQ_ERANGE, "KV block %d is outside [0, %d)", blk,
                          lim->n_blocks);
        out->pos[t0 + i] = pos;
        out->seq_of[t0 + i] = s;
        out->slot[t0 + i] = (int64_t)blk * bs + pos % bs;
    }
    return 0;
}

int32_t rt_argmax(const float *v, int32_t n)
{
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++)
        if (v[i] == v[i] && (best < 0 || v[i] > v[best]))
            best = i;
    return best < 0 ? 0 : best;
}

int rt_batch_check_plan(const rt_batch *b, const rt_batch_limits *lim, rt_batch_plan *out,
                        char *err, size_t err_len)
{
    int64_t n_tok = rt_batch_n_tokens(b);
    if (n_tok <= 0 || n_tok > lim->max_tokens || rt_batch_n_logits(b) > n_tok)
        return fq_err(err, err_len, FQ_ERANGE, "batch of %lld tokens (the limit is %d)",
                      (long long)n_tok, lim->max_tokens);
    int64_t t = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        int rc = plan_seq(lim, &b->seqs[s], s, t, out, err, err_len);
        if (rc)
            return rc;
        t += b->seqs[s].n_tokens;
    }
    return 0;
}

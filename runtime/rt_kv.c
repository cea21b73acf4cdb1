/* rt_kv.c — block free list and per-sequence block tables of the paged KV cache. */
#include "rt_kv.h"

#include "fq_base.h"

#include <stdlib.h>
#include <string.h>

struct rt_kv {
    int32_t block_size;
    int32_t n_blocks;
    int32_t n_free;
    int32_t *free_list; /* [n_blocks]; the first n_free entries are free block ids */
};

rt_kv_params rt_kv_default_params(void)
{
    return (rt_kv_params){.block_size = 16, .n_blocks = 256};
}

int rt_kv_create(const rt_kv_params *params, rt_kv **out)
{
    *out = NULL;
    if (params->block_size <= 0 || params->n_blocks <= 0)
        return FQ_EINVAL;
    rt_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return FQ_ENOMEM;
    kv->free_list = fq_malloc_array((size_t)params->n_blocks, sizeof *kv->free_list);
    if (!kv->free_list) {
        free(kv);
        return FQ_ENOMEM;
    }
    kv->block_size = params->block_size;
    kv->n_blocks = params->n_blocks;
    kv->n_free = params->n_blocks;
    /* hand out low block ids first */
    for (int32_t i = 0; i < kv->n_blocks; i++)
        kv->free_list[i] = kv->n_blocks - 1 - i;
    *out = kv;
    return 0;
}

void rt_kv_destroy(rt_kv *kv)
{
    if (!kv)
        return;
    free(kv->free_list);
    free(kv);
}

int32_t rt_kv_block_size(const rt_kv *kv)
{
    return kv->block_size;
}

int32_t rt_kv_n_blocks(const rt_kv *kv)
{
    return kv->n_blocks;
}

int32_t rt_kv_n_free(const rt_kv *kv)
{
    return kv->n_free;
}

int32_t rt_kv_blocks_for(const rt_kv *kv, int64_t n_tokens)
{
    return (int32_t)((n_tokens + kv->block_size - 1) / kv->block_size);
}

int rt_kv_seq_reserve(rt_kv *kv, rt_kv_seq *seq, int64_t n_tokens)
{
    int64_t need64 = (n_tokens + kv->block_size - 1) / kv->block_size;
    if (need64 > kv->n_blocks)
        return FQ_ERANGE;
    int32_t need = (int32_t)need64;
    if (need <= seq->n_blocks)
        return 0;
    if (need - seq->n_blocks > kv->n_free)
        return FQ_ERANGE;
    if (need > seq->cap) {
        int32_t cap = seq->cap ? seq->cap : 4;
        while (cap < need)
            cap *= 2;
        int32_t *b = realloc(seq->blocks, (size_t)cap * sizeof *b);
        if (!b)
            return FQ_ENOMEM;
        seq->blocks = b;
        seq->cap = cap;
    }
    while (seq->n_blocks < need)
        seq->blocks[seq->n_blocks++] = kv->free_list[--kv->n_free];
    return 0;
}

void rt_kv_seq_release(rt_kv *kv, rt_kv_seq *seq)
{
    for (int32_t i = seq->n_blocks - 1; i >= 0; i--) {
        FQ_ASSERT(kv->n_free < kv->n_blocks);
        kv->free_list[kv->n_free++] = seq->blocks[i];
    }
    free(seq->blocks);
    memset(seq, 0, sizeof *seq);
}

int64_t rt_kv_slot(const rt_kv *kv, const rt_kv_seq *seq, int64_t pos)
{
    int64_t b = pos / kv->block_size;
    FQ_ASSERT(b < seq->n_blocks);
    return (int64_t)seq->blocks[b] * kv->block_size + pos % kv->block_size;
}

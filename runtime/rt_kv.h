/* rt_kv.h — the paged KV cache's bookkeeping: fixed-size blocks, a free list, per-sequence tables.
 *
 * The cache's storage lives in a backend (host memory for the CPU backend, device memory later);
 * this module only decides which physical block holds which tokens of which sequence. A sequence's
 * token at position p lives in block table[p / block_size], row p % block_size. Blocks are handed
 * out from a LIFO free list and returned when the sequence is released. Thread safety: one owner
 * thread (the engine); no internal locking.
 */
#ifndef RT_KV_H
#define RT_KV_H

#include <stdint.h>

typedef struct rt_kv rt_kv;

typedef struct rt_kv_params {
    int32_t block_size; /* tokens per block; default 16 */
    int32_t n_blocks;   /* blocks in the pool; default 256 */
} rt_kv_params;

rt_kv_params rt_kv_default_params(void);

/* One sequence's block table; zero-initialise it, release it with rt_kv_seq_release. */
typedef struct rt_kv_seq {
    int32_t *blocks;  /* [n_blocks] physical block ids, owned by the seq */
    int32_t n_blocks; /* blocks held */
    int32_t cap;      /* allocated length of blocks[] */
} rt_kv_seq;

int rt_kv_create(const rt_kv_params *params, rt_kv **out);
void rt_kv_destroy(rt_kv *kv); /* NULL is a no-op */

int32_t rt_kv_block_size(const rt_kv *kv);
int32_t rt_kv_n_blocks(const rt_kv *kv);
int32_t rt_kv_n_free(const rt_kv *kv);

/* Blocks needed to hold n_tokens tokens. */
int32_t rt_kv_blocks_for(const rt_kv *kv, int64_t n_tokens);

/* Makes seq hold enough blocks for n_tokens tokens in total. Returns FQ_ERANGE (taking nothing)
 * when the pool has too few free blocks, FQ_ENOMEM when the table can't grow. */
int rt_kv_seq_reserve(rt_kv *kv, rt_kv_seq *seq, int64_t n_tokens);

/* Returns every block of seq to the pool and frees its table; seq is zeroed. */
void rt_kv_seq_release(rt_kv *kv, rt_kv_seq *seq);

/* Cache slot (block * block_size + row) of position pos of seq; pos must be reserved. */
int64_t rt_kv_slot(const rt_kv *kv, const rt_kv_seq *seq, int64_t pos);

#endif /* RT_KV_H */

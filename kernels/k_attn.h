/* k_attn.h — causal attention over the paged KV cache (host-side, C-callable contract).
 *
 * The cache of one layer is fp16 [n_slots, n_kv * hd] for keys and for values (k_ops.h's
 * k_rope_kv_store fills it); a sequence's position p lives at slot block_tables[s][p / block_size]
 * * block_size + p % block_size. Every token t of the step attends to positions 0 .. pos[t] of its
 * sequence (its own k/v already stored), GQA (head h reads kv head h / (n_head / n_kv)), scores
 * q.k * scale, softmax in fp32, as rt_cpu_attn_* (rt_cpu_math.h) up to fp32 order and the fp16
 * cache. All pointers are device pointers; calls are asynchronous on `stream`. Return 0, or -1
 * (FQ_EINVAL) for bad arguments or a failed launch. Thread safety: any host thread.
 */
#ifndef K_ATTN_H
#define K_ATTN_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct k_attn_batch {
    int n_tokens;                /* T */
    int n_seqs;                  /* sequences in the step */
    const int32_t *tok_seq;      /* [T] sequence (batch index) of each token */
    const int32_t *tok_pos;      /* [T] position of each token */
    const int32_t *seq_tok0;     /* [n_seqs + 1] first token of each sequence; [n_seqs] = T */
    const int32_t *block_tables; /* [n_seqs, max_blocks] physical block ids */
    int max_blocks;              /* row stride of block_tables */
    int max_new;                 /* most new tokens of one sequence in this step (host value) */
    int block_size;
} k_attn_batch;

typedef struct k_attn_shape {
    int n_head, n_kv, hd; /* hd in {64, 128} at least; n_head % n_kv == 0 */
    float scale;          /* usually 1 / sqrt(hd) */
} k_attn_shape;

/* out [T, n_head * hd] fp32 (or NULL): attention output per token and head. q_out/s_out (or
 * NULL): the same output quantized per token and group as fq_act.h (bits 6 or 8, group g with
 * hd % g == 0, s_out [T, n_head * hd / g]) inside the same kernel. q [T, ldq] fp32, heads at
 * columns h * hd. Uses a decode kernel when max_new == 1 and a tiled (flash-style) prefill
 * kernel otherwise. The decode kernel is invariant per token: a token's output is bit for bit the
 * same whatever the other tokens of the step are. */
int k_attention(const float *q, long ldq, const uint16_t *k_cache, const uint16_t *v_cache,
                const k_attn_batch *b, const k_attn_shape *sh, float *out, int8_t *q_out,
                float *s_out, int bits, int g, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_ATTN_H */

/* rt_cpu_math.h — the CPU backend's fp32 building blocks: threaded matmul, RMSNorm, RoPE, SwiGLU.
 *
 * Internal to runtime/ (the CPU backend and its tests). All arrays are row-major fp32; shapes are
 * in the comments. Functions taking a pool spread their work over its threads and must be called
 * from the pool's owner thread.
 */
#ifndef RT_CPU_MATH_H
#define RT_CPU_MATH_H

#include "fq_ckpt.h"
#include "rt_pool.h"

#include <stdint.h>

/* y[M,N] = x[M,K] * w[N,K]^T. */
void rt_cpu_matmul(rt_pool *pool, const float *x, int64_t m, int64_t k, const float *w, int64_t n,
                   float *y);

/* y[M,E] = x / sqrt(mean(x^2) + eps) * weight, row by row; y may alias x. */
void rt_cpu_rmsnorm(const float *x, const float *weight, int64_t m, int64_t e, float eps, float *y);

/* Rotates the heads of one token in place: vec = [n_heads, head_dim] at position pos, with the pair
 * layout of style (FQ_ROPE_HALF: (i, i + head_dim/2); FQ_ROPE_INTERLEAVED: (2i, 2i+1)) and
 * frequency theta^(-2i/head_dim), computed in fp32 as HF transformers does. */
void rt_cpu_rope(float *vec, int32_t n_heads, int32_t head_dim, int32_t pos, float theta,
                 fq_rope_style style);

#define RT_CPU_MAX_HEAD_DIM 256

/* Running state of one query head's attention with an online softmax. */
typedef struct rt_attn_acc {
    float mx;                       /* largest score so far */
    float sum;                      /* sum of exp(score - mx) */
    float acc[RT_CPU_MAX_HEAD_DIM]; /* sum of exp(score - mx) * v */
} rt_attn_acc;

void rt_cpu_attn_begin(rt_attn_acc *a, int32_t head_dim);

/* Folds n keys and values (rows `stride` floats apart, head_dim wide) into the attention of query
 * q, with scores q.k * scale. */
void rt_cpu_attn_update(rt_attn_acc *a, const float *q, const float *k, const float *v,
                        int64_t stride, int32_t n, int32_t head_dim, float scale);

/* out[head_dim] = acc / sum. */
void rt_cpu_attn_end(const rt_attn_acc *a, int32_t head_dim, float *out);

/* gate[i] = silu(gate[i]) * up[i] for n elements. */
void rt_cpu_silu_mul(float *gate, const float *up, int64_t n);

#endif /* RT_CPU_MATH_H */

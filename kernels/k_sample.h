/* k_sample.h — one sampled token per logits row on the device (host-side, C-callable contract).
 *
 * The draw rt_sampler.h defines for a request without logit_bias, penalties or logprobs (the
 * runtime's rt_sample_row_pick is the reference): weights w = exp((l - max) / temperature) (0 for
 * NaN, below min_p's cut lo = max + temperature * ln(min_p), or with an exponent <= -87); the kept
 * set is the top_k tokens with l >= lo by logit (ties: lower id first), then among those the
 * fewest, most likely first, whose weight reaches top_p of theirs; the token is where u * (kept
 * weight) falls in the cumulative weights of the kept tokens, walked in rt_sampler's order (id
 * order, or by logit band below the max, then id, when top_k is 0 or above ceil(V / 512) and
 * top_p < 1 — the order rt_sampler collects its candidates in). Temperature below 1e-5, or a
 * row without a finite maximum: the first index of the largest logit (k_argmax's rule). Sums are
 * exact (fixed point, 2^-40 of the largest weight), so the result is the same on every run; it
 * can differ from the host's float sums only when u * total falls within rounding of a boundary.
 * All pointers are device pointers; asynchronous on stream. Returns 0, or -1 (FQ_EINVAL) for bad
 * arguments or a failed launch. Thread safety: any host thread.
 */
#ifndef K_SAMPLE_H
#define K_SAMPLE_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct k_sample_row {
    float temperature; /* < 1e-5: greedy */
    int32_t top_k;     /* <= 0 or >= V: off */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off */
    double u;          /* the draw, in (0, 1) */
} k_sample_row;

/* out[r] = the token drawn from logits[r, 0..V) with rows[r]. V <= 2^22. */
int k_sample(const float *logits, int R, int V, const k_sample_row *rows, int32_t *out,
             cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_SAMPLE_H */

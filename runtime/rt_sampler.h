/* rt_sampler.h — picks one sequence's next token from its logits, with OpenAI/vLLM semantics.
 *
 * One sampler per sequence. Each step runs, in vLLM's order:
 *   logit_bias → repetition, frequency and presence penalties → (logprobs) →
 *   greedy argmax, or temperature → min_p → top_k → top_p → one random draw.
 * Penalties: repetition_penalty (vLLM/HF) divides the positive logits and multiplies the others of
 * every token seen in the prompt or generated so far, once per distinct token; frequency_penalty
 * and presence_penalty (OpenAI) subtract frequency·count and presence·[count > 0] over the tokens
 * generated so far (the prompt does not count).
 * Logprobs are the log-softmax of the logits after bias and penalties, before temperature and the
 * min_p/top_k/top_p filters: independent of how the token is then drawn, and always finite for a
 * finite logit (a filter never turns a reported value into -inf). vLLM V1's default mode
 * ("raw_logprobs") takes them from the model's logits, before bias and penalties too; we keep bias
 * and penalties in, so that greedy decoding picks the token with the highest reported logprob and a
 * banned token (bias -100) reports the low logprob it is sampled with.
 *
 * Randomness: a counter-based splitmix64 stream keyed by the seed. The draw of generated token n
 * depends only on (seed, n), so a sampler rebuilt after preemption by recompute and re-fed the same
 * tokens with rt_sampler_accept draws exactly what the original would have. Without a seed the
 * caller's fallback_seed keys the stream.
 *
 * Cost per step, for n_vocab logits: greedy is one vectorised pass (the max); plain temperature
 * sampling one more (a vectorised exp per token, summed per block of 512) and the drawn block
 * again; top_k alone works on the tokens of the blocks whose max reaches its cut (no exp over the
 * vocabulary); top_p one exp pass, then the tokens within a few nats of the max alone. Nothing
 * sorts the vocabulary. Penalties cost O(distinct tokens seen), logprobs one more exp pass.
 * Memory per sampler, only for the features a request uses and allocated at create so that
 * sampling never allocates: 9·n_vocab bytes when a penalty is on (counts, marks, the distinct
 * tokens seen), 12·n_vocab with top_k or top_p (candidates); 0.4 and 0.6 MiB at n_vocab 49152,
 * mapped lazily by the system, so that typically only the pages a sequence touches are resident.
 * Greedy or plain temperature sampling needs neither.
 *
 * Thread safety: a sampler belongs to one sequence and is used by one thread (the engine's);
 * rt_sampling_default_params and rt_sampling_validate may be called from any thread.
 */
#ifndef RT_SAMPLER_H
#define RT_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Top alternatives reported per step at most (OpenAI's top_logprobs limit). */
#define RT_SAMPLER_MAX_LOGPROBS 20

/* Temperatures below this are greedy (vLLM's _SAMPLING_EPS). */
#define RT_SAMPLER_GREEDY_EPS 1e-5f

typedef struct rt_logit_bias {
    int32_t token; /* [0, n_vocab) */
    float bias;    /* [-100, 100], added to the token's logit; entries for one token add up */
} rt_logit_bias;

typedef struct rt_sampling_params {
    float temperature;         /* [0, 2]; below RT_SAMPLER_GREEDY_EPS = greedy (argmax, ties to the
                                  lowest token id, no random draw); default 1 */
    int32_t top_k;             /* keep the k most likely tokens; 0 or -1 = off; default 0 */
    float top_p;               /* (0, 1]: keep the fewest most likely tokens whose probability
                                  reaches top_p; 1 = off (default) */
    float min_p;               /* [0, 1]: drop tokens less likely than min_p times the most likely
                                  one; 0 = off (default) */
    float presence_penalty;    /* [-2, 2]; 0 = off (default) */
    float frequency_penalty;   /* [-2, 2]; 0 = off (default) */
    float repetition_penalty;  /* > 0 and finite; 1 = off (default) */
    bool has_seed;             /* false (default): rt_sampler_create's fallback_seed is used */
    uint64_t seed;             /* the request's seed when has_seed */
    const rt_logit_bias *bias; /* [n_bias], borrowed; rt_sampler_create copies it; may be NULL
                                  when n_bias is 0 */
    int32_t n_bias;            /* >= 0; default 0 */
    int32_t logprobs; /* -1 = none (default); 0 = the chosen token's logprob only; 1..20 = plus
                         that many most likely alternatives */
} rt_sampling_params;

/* temperature 1, top_k 0, top_p 1, min_p 0, penalties 0/0/1, no seed, no bias, logprobs -1. */
rt_sampling_params rt_sampling_default_params(void);

/* Checks every field against its range (n_vocab bounds the logit_bias ids). Returns 0, or
 * FQ_EINVAL with a message naming the parameter ("temperature must be in [0, 2], got 3") and, when
 * bad_param is not NULL, *bad_param set to that parameter's OpenAI name ("temperature", "top_k",
 * "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
 * "logprobs"; a static string) for the error body's "param". *bad_param is NULL on success. */
int rt_sampling_validate(const rt_sampling_params *p, int32_t n_vocab, char *err, size_t err_len,
                         const char **bad_param);

typedef struct rt_sampler rt_sampler;

/* Makes a sampler for one sequence. p is validated (FQ_EINVAL as rt_sampling_validate) and copied,
 * bias entries included; prompt [n_prompt] is borrowed for the call (its tokens feed the
 * repetition penalty; ids outside [0, n_vocab) are FQ_EINVAL). fallback_seed keys the random
 * stream when p->has_seed is false (the caller draws it from its own seed source). *out is
 * caller-owned, destroyed with rt_sampler_destroy. */
int rt_sampler_create(const rt_sampling_params *p, int32_t n_vocab, const int32_t *prompt,
                      size_t n_prompt, uint64_t fallback_seed, rt_sampler **out, char *err,
                      size_t err_len);
void rt_sampler_destroy(rt_sampler *s); /* NULL is a no-op */

typedef struct rt_token_logprob {
    int32_t token;
    float logprob;
} rt_token_logprob;

typedef struct rt_sample_result {
    int32_t token; /* the chosen token (also the return value of rt_sampler_sample) */
    float logprob; /* its logprob when params.logprobs >= 0, else 0 */
    int32_t n_top; /* entries of top: min(params.logprobs, n_vocab), 0 when logprobs <= 0 */
    rt_token_logprob top[RT_SAMPLER_MAX_LOGPROBS]; /* most likely first, ties to the lower id */
} rt_sample_result;

/* Picks the next token from logits [n_vocab] and records it as generated (as rt_sampler_accept).
 * logits is modified: on return it holds the logits after bias and penalties (what the logprobs
 * were computed from). NaN logits are never chosen (unless all are: then 0); when the largest
 * logit is +-inf the lowest id holding it is (greedily). res, when not NULL, receives the token and
 * its logprobs. Never fails: returns the token. */
int32_t rt_sampler_sample(rt_sampler *s, float *logits, rt_sample_result *res);

/* Records token ([0, n_vocab), else FQ_ASSERT) as generated without sampling: counts toward the
 * penalties and advances the random stream by one draw, exactly as rt_sampler_sample would. */
void rt_sampler_accept(rt_sampler *s, int32_t token);

/* The draw of one step when nothing but the filters and the random draw is needed — what a backend
 * can do where the logits are (rt_ops.h forward_sample). */
typedef struct rt_sample_row {
    float temperature; /* below RT_SAMPLER_GREEDY_EPS: greedy */
    int32_t top_k;     /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    double u;          /* the step's draw, in (0, 1) */
} rt_sample_row;

/* True when s has no logit_bias, no penalty and no logprobs; then *row gets its filters and the
 * draw of its next token (not consumed: record the token with rt_sampler_accept). Then
 * rt_sample_row_pick(row, logits) is the token rt_sampler_sample(s, logits) would return. */
bool rt_sampler_row(const rt_sampler *s, rt_sample_row *row);

/* 0, or FQ_EINVAL naming what rt_sampling_validate refuses in row's filters or a draw outside
 * (0, 1). */
int rt_sample_row_check(const rt_sample_row *row, int32_t n_vocab, char *err, size_t err_len);

/* The token a sampler with row's filters picks from logits [n_vocab] with row->u as its draw (the
 * reference the backends' forward_sample follows; uses a scratch sampler, so it allocates): 0 and
 * *token, or FQ_EINVAL (bad row) / FQ_ENOMEM with err set. */
int rt_sample_row_pick(const rt_sample_row *row, const float *logits, int32_t n_vocab,
                       int32_t *token, char *err, size_t err_len);

/* Returns to the state right after create (prompt kept, nothing generated, random stream at its
 * start). With rt_sampler_accept over the tokens generated so far this restores a sampler after
 * preemption by recompute. */
void rt_sampler_reset(rt_sampler *s);

/* Tokens generated (sampled or accepted) since create or the last reset. */
int64_t rt_sampler_n_generated(const rt_sampler *s);

#endif /* RT_SAMPLER_H */

/* rt_sampler.c — one sequence's next token: logit bias, penalties, logprobs, then greedy argmax or
 * temperature sampling with min_p, top_k and top_p, on a counter-based splitmix64 stream.
 *
 * Design: the logits (after bias and penalties) stay the keys throughout and are never overwritten
 * with probabilities, so logprobs are exact and ties break on logits, lowest id first. The
 * vocabulary is walked in blocks of RT_BLOCK tokens whose maxima are kept, so later passes skip the
 * blocks that cannot matter; weights w = exp((l - max) / T) come from one branch-free exp
 * (exp_masked) in fixed-length loops that GCC vectorises at -O2. Greedy is one pass. Plain
 * temperature sampling sums the weights per block, picks the block holding the draw, then the token
 * inside it. top_k and top_p collect only the tokens at or above a cut logit (from the block
 * maxima, or the narrowest of a few windows below the max that holds enough) and find the kept
 * prefix among them with a radix select on the logits' bits; no sort of the vocabulary, and the
 * result depends on the logits and the seed alone. Penalties touch only the tokens seen so far.
 */
#include "rt_sampler.h"

#include "fq_base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RT_BLOCK   512                   /* tokens per block of the passes over the vocabulary */
#define RT_CHUNK   64                    /* tokens per chunk of the candidates' collection */
#define RT_GOLDEN  0x9E3779B97F4A7C15ULL /* splitmix64's increment */
#define RT_EXP_MIN -87.0f                /* exp below this is 0 (stays a normal float above) */

enum { RT_IN_PROMPT = 1, RT_GENERATED = 2 };

struct rt_sampler {
    int32_t n_vocab;
    int32_t n_blocks; /* ceil(n_vocab / RT_BLOCK) */
    float temperature;
    int32_t top_k;       /* 0 = off (also when >= n_vocab) */
    float top_p;         /* 1 = off */
    float min_p;         /* 0 = off */
    float presence;      /* presence_penalty */
    float frequency;     /* frequency_penalty */
    float repetition;    /* repetition_penalty */
    int32_t logprobs;    /* -1 = none */
    uint64_t key;        /* the random stream's key: mix(seed) */
    int64_t n_gen;       /* tokens generated since create/reset = index of the next draw */
    rt_logit_bias *bias; /* [n_bias], owned */
    int32_t n_bias;
    /* Penalty state (all NULL when every penalty is off). A token is "touched" when it counts
     * for a penalty: generated, or in the prompt with the repetition penalty on. */
    uint8_t *flags;   /* [n_vocab] RT_IN_PROMPT | RT_GENERATED */
    int32_t *count;   /* [n_vocab] occurrences among generated tokens */
    int32_t *touched; /* [n_vocab] distinct touched tokens, the prompt's first */
    int32_t n_touched;
    int32_t n_touched_prompt; /* touched by the prompt alone (kept by reset) */
    /* Candidates of top_k/top_p, the tokens near the max: ordered_key of the logit, weight
     * exp((l - max) / T), id; [n_vocab + RT_CHUNK] each; NULL when top_k and top_p are off. */
    uint32_t *cand_key;
    float *cand_w;
    int32_t *cand_id;
    float *block_tmp;   /* [n_blocks] scratch: block maxima, sorted; with the candidates */
    float *block_max;   /* [n_blocks] scratch: each block's largest logit */
    double *block_mass; /* [n_blocks] scratch: each block's sum of weights */
};

rt_sampling_params rt_sampling_default_params(void)
{
    return (rt_sampling_params){.temperature = 1.0f,
                                .top_k = 0,
                                .top_p = 1.0f,
                                .min_p = 0.0f,
                                .presence_penalty = 0.0f,
                                .frequency_penalty = 0.0f,
                                .repetition_penalty = 1.0f,
                                .has_seed = false,
                                .seed = 0,
                                .bias = NULL,
                                .n_bias = 0,
                                .logprobs = -1};
}

/* Names the offending parameter for the caller (the OpenAI error's "param"). */
static void name_param(const char **bad_param, const char *name)
{
    if (bad_param)
        *bad_param = name;
}

int rt_sampling_validate(const rt_sampling_params *p, int32_t n_vocab, char *err, size_t err_len,
                         const char **bad_param)
{
    name_param(bad_param, NULL);
    if (n_vocab <= 0)
        return fq_err(err, err_len, FQ_EINVAL, "n_vocab must be positive, got %d", (int)n_vocab);
    /* the float checks are written as !(in range) so that NaN fails them too */
    if (!(p->temperature >= 0.0f && p->temperature <= 2.0f)) {
        name_param(bad_param, "temperature");
        return fq_err(err, err_len, FQ_EINVAL, "temperature must be in [0, 2], got %g",
                      (double)p->temperature);
    }
    if (p->top_k < -1) {
        name_param(bad_param, "top_k");
        return fq_err(err, err_len, FQ_EINVAL,
                      "top_k must be -1 or 0 (off) or a positive number of tokens, got %d",
                      (int)p->top_k);
    }
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        name_param(bad_param, "top_p");
        return fq_err(err, err_len, FQ_EINVAL, "top_p must be in (0, 1], got %g", (double)p->top_p);
    }
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
        name_param(bad_param, "min_p");
        return fq_err(err, err_len, FQ_EINVAL, "min_p must be in [0, 1], got %g", (double)p->min_p);
    }
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f)) {
        name_param(bad_param, "presence_penalty");
        return fq_err(err, err_len, FQ_EINVAL, "presence_penalty must be in [-2, 2], got %g",
                      (double)p->presence_penalty);
    }
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f)) {
        name_param(bad_param, "frequency_penalty");
        return fq_err(err, err_len, FQ_EINVAL, "frequency_penalty must be in [-2, 2], got %g",
                      (double)p->frequency_penalty);
    }
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty))) {
        name_param(bad_param, "repetition_penalty");
        return fq_err(err, err_len, FQ_EINVAL,
                      "repetition_penalty must be positive and finite, got %g",
                      (double)p->repetition_penalty);
    }
    if (p->logprobs < -1 || p->logprobs > RT_SAMPLER_MAX_LOGPROBS) {
        name_param(bad_param, "logprobs");
        return fq_err(err, err_len, FQ_EINVAL,
                      "logprobs must be in [0, %d] (or -1 for none), got %d",
                      RT_SAMPLER_MAX_LOGPROBS, (int)p->logprobs);
    }
    if (p->n_bias < 0 || (p->n_bias > 0 && !p->bias)) {
        name_param(bad_param, "logit_bias");
        return fq_err(err, err_len, FQ_EINVAL, "logit_bias has %d entries but no table",
                      (int)p->n_bias);
    }
    for (int32_t i = 0; i < p->n_bias; i++) {
        const rt_logit_bias *b = &p->bias[i];
        if (b->token < 0 || b->token >= n_vocab) {
            name_param(bad_param, "logit_bias");
            return fq_err(err, err_len, FQ_EINVAL,
                          "logit_bias token %d is out of range: the vocabulary has %d tokens",
                          (int)b->token, (int)n_vocab);
        }
        if (!(b->bias >= -100.0f && b->bias <= 100.0f)) {
            name_param(bad_param, "logit_bias");
            return fq_err(err, err_len, FQ_EINVAL,
                          "logit_bias for token %d must be in [-100, 100], got %g", (int)b->token,
                          (double)b->bias);
        }
    }
    return 0;
}

/* ---- random stream -------------------------------------------------------------------------- */

static uint64_t splitmix64_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Output n of the stream: splitmix64 seeded with key, read at position n. */
static uint64_t stream_at(uint64_t key, uint64_t n)
{
    return splitmix64_mix(key + (n + 1) * RT_GOLDEN);
}

/* The draw of the next generated token: uniform in (0, 1), 53 random bits. */
static double next_uniform(const rt_sampler *s)
{
    uint64_t x = stream_at(s->key, (uint64_t)s->n_gen);
    return ((double)(x >> 11) + 0.5) * 0x1p-53;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

int rt_sampler_create(const rt_sampling_params *p, int32_t n_vocab, const int32_t *prompt,
                      size_t n_prompt, uint64_t fallback_seed, rt_sampler **out, char *err,
                      size_t err_len)
{
    *out = NULL;
    int rc = rt_sampling_validate(p, n_vocab, err, err_len, NULL);
    if (rc)
        return rc;
    if (n_prompt > 0 && !prompt)
        return fq_err(err, err_len, FQ_EINVAL, "prompt is NULL but has %zu tokens", n_prompt);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= n_vocab)
            return fq_err(err, err_len, FQ_EINVAL,
                          "prompt token %zu is %d, outside the vocabulary of %d tokens", i,
                          (int)prompt[i], (int)n_vocab);

    rt_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory for a sampler");
    s->n_vocab = n_vocab;
    s->n_blocks = (int32_t)(((int64_t)n_vocab + RT_BLOCK - 1) / RT_BLOCK);
    s->temperature = p->temperature;
    s->top_k = p->top_k > 0 && p->top_k < n_vocab ? p->top_k : 0;
    s->top_p = p->top_p;
    s->min_p = p->min_p;
    s->presence = p->presence_penalty;
    s->frequency = p->frequency_penalty;
    s->repetition = p->repetition_penalty;
    s->logprobs = p->logprobs;
    s->key = splitmix64_mix(p->has_seed ? p->seed : fallback_seed);
    s->n_bias = p->n_bias;

    bool greedy = p->temperature < RT_SAMPLER_GREEDY_EPS;
    bool ok = (s->block_mass = fq_malloc_array((size_t)s->n_blocks, sizeof(double))) != NULL &&
              (s->block_max = fq_malloc_array((size_t)s->n_blocks, sizeof(float))) != NULL;
    if (ok && p->n_bias > 0) {
        ok = (s->bias = fq_malloc_array((size_t)p->n_bias, sizeof *s->bias)) != NULL;
        if (ok)
            memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof *s->bias);
    }
    bool rep = s->repetition != 1.0f;
    /* The penalty and candidate arrays are sized for the worst case, so that sampling never
     * allocates (and never fails); large allocations are mapped lazily, so the memory a sampler
     * really occupies grows with the tokens it touches. */
    if (ok && (rep || s->presence != 0.0f || s->frequency != 0.0f)) {
        ok = (s->flags = fq_calloc_array((size_t)n_vocab, sizeof *s->flags)) != NULL &&
             (s->count = fq_calloc_array((size_t)n_vocab, sizeof *s->count)) != NULL &&
             (s->touched = fq_malloc_array((size_t)n_vocab, sizeof *s->touched)) != NULL;
        for (size_t i = 0; ok && rep && i < n_prompt; i++) {
            int32_t t = prompt[i];
            if (!s->flags[t])
                s->touched[s->n_touched++] = t;
            s->flags[t] = RT_IN_PROMPT;
        }
        s->n_touched_prompt = s->n_touched;
    }
    if (ok && !greedy && (s->top_k > 0 || s->top_p < 1.0f)) {
        size_t cap = (size_t)n_vocab + RT_CHUNK;
        ok = (s->cand_key = fq_malloc_array(cap, sizeof *s->cand_key)) != NULL &&
             (s->cand_w = fq_malloc_array(cap, sizeof *s->cand_w)) != NULL &&
             (s->cand_id = fq_malloc_array(cap, sizeof *s->cand_id)) != NULL &&
             (s->block_tmp = fq_malloc_array((size_t)s->n_blocks, sizeof(float))) != NULL;
    }
    if (!ok) {
        rt_sampler_destroy(s);
        return fq_err(err, err_len, FQ_ENOMEM, "out of memory for a sampler over %d tokens",
                      (int)n_vocab);
    }
    *out = s;
    return 0;
}

void rt_sampler_destroy(rt_sampler *s)
{
    if (!s)
        return;
    free(s->bias);
    free(s->flags);
    free(s->count);
    free(s->touched);
    free(s->cand_key);
    free(s->cand_w);
    free(s->cand_id);
    free(s->block_tmp);
    free(s->block_mass);
    free(s->block_max);
    free(s);
}

void rt_sampler_accept(rt_sampler *s, int32_t token)
{
    FQ_ASSERT(token >= 0 && token < s->n_vocab);
    if (s->flags) {
        if (!s->flags[token])
            s->touched[s->n_touched++] = token; /* distinct, so at most n_vocab */
        s->flags[token] |= RT_GENERATED;
        if (s->count[token] < INT32_MAX)
            s->count[token]++;
    }
    s->n_gen++;
}

void rt_sampler_reset(rt_sampler *s)
{
    for (int32_t j = 0; j < s->n_touched; j++) {
        int32_t t = s->touched[j];
        s->flags[t] &= RT_IN_PROMPT;
        s->count[t] = 0;
    }
    s->n_touched = s->n_touched_prompt;
    s->n_gen = 0;
}

bool rt_sampler_row(const rt_sampler *s, rt_sample_row *row)
{
    if (s->n_bias != 0 || s->logprobs >= 0 || s->presence != 0.0f || s->frequency != 0.0f ||
        s->repetition != 1.0f)
        return false;
    *row = (rt_sample_row){.temperature = s->temperature,
                           .top_k = s->top_k,
                           .top_p = s->top_p,
                           .min_p = s->min_p,
                           .u = next_uniform(s)};
    return true;
}

int64_t rt_sampler_n_generated(const rt_sampler *s)
{
    return s->n_gen;
}

/* ---- logits: bias, penalties ----------------------------------------------------------------- */

/* In vLLM's order: bias, then repetition, frequency and presence penalties (each touched token
 * takes them in that order, the same as applying each to the whole vocabulary in turn). */
static void apply_bias_and_penalties(const rt_sampler *s, float *logits)
{
    for (int32_t i = 0; i < s->n_bias; i++)
        logits[s->bias[i].token] += s->bias[i].bias;
    bool rep = s->repetition != 1.0f;
    float r = s->repetition, f = s->frequency, pr = s->presence;
    for (int32_t j = 0; j < s->n_touched; j++) {
        int32_t t = s->touched[j], c = s->count[t];
        float v = logits[t];
        if (rep)
            v = v > 0.0f ? v / r : v * r;
        if (c > 0) {
            v = v - f * (float)c;
            v = v - pr;
        }
        logits[t] = v;
    }
}

/* ---- per-block passes ------------------------------------------------------------------------
 * The vocabulary is walked in blocks of RT_BLOCK tokens. Each inner loop has that fixed trip count
 * and no branches, which is what GCC needs to vectorise at -O2; the last, partial block is copied
 * into a padded buffer. Each block's max is kept, so later passes skip blocks that cannot matter.
 */

/* exp(x) for x <= 0 to ~1e-7 relative error (the Cephes expf polynomial), or 0 when x <=
 * RT_EXP_MIN, x is NaN or keep is 0 (keep: 0 or all ones). Masked rather than selected, so that it
 * vectorises; the scalar and the vector code give the same bits (no fused multiply-add in C11
 * mode). */
static inline float exp_masked(float x, int32_t keep)
{
    int32_t mask = -(int32_t)(x > RT_EXP_MIN) & keep;
    float lowest = RT_EXP_MIN, c;
    int32_t xb, lb;
    memcpy(&xb, &x, sizeof xb);
    memcpy(&lb, &lowest, sizeof lb);
    int32_t cb = (xb & mask) | (lb & ~mask); /* c = mask ? x : RT_EXP_MIN, in [-87, 0] */
    memcpy(&c, &cb, sizeof c);
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(c / ln 2) */
    float f = (c - n * 0.693359375f) + n * 2.12194440e-4f;            /* c - n ln 2 */
    float y = 1.9875691500e-4f;
    y = y * f + 1.3981999507e-3f;
    y = y * f + 8.3334519073e-3f;
    y = y * f + 4.1665795894e-2f;
    y = y * f + 1.6666665459e-1f;
    y = y * f + 5.0000001201e-1f;
    y = y * (f * f) + f + 1.0f;
    int32_t bits = (((int32_t)n + 127) * (1 << 23)) & mask; /* 2^n (n in [-126, 0]), or 0 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* A token's weight: exp((l - m) * inv_t), 0 below lo (min_p), for NaN and for -inf. */
static inline float weight(float l, float m, float inv_t, float lo)
{
    return exp_masked((l - m) * inv_t, -(int32_t)(l >= lo));
}

/* The logits of block b as RT_BLOCK values: l itself, or the last, partial block copied into pad
 * and filled up with -inf (weight 0, never a maximum). */
static const float *block_at(const rt_sampler *s, const float *l, int32_t b, float *pad)
{
    int32_t i0 = b * RT_BLOCK, n = s->n_vocab - i0;
    if (n >= RT_BLOCK)
        return l + i0;
    memcpy(pad, l + i0, (size_t)n * sizeof *pad);
    for (int32_t j = n; j < RT_BLOCK; j++)
        pad[j] = -INFINITY;
    return pad;
}

static int32_t block_len(const rt_sampler *s, int32_t b)
{
    int32_t n = s->n_vocab - b * RT_BLOCK;
    return n < RT_BLOCK ? n : RT_BLOCK;
}

/* Fills s->block_max and returns the largest non-NaN logit, or -inf. */
static float block_maxima(rt_sampler *s, const float *l)
{
    float pad[RT_BLOCK], m = -INFINITY;
    for (int32_t b = 0; b < s->n_blocks; b++) {
        const float *v = block_at(s, l, b, pad);
        float mk[8];
        for (int k = 0; k < 8; k++)
            mk[k] = -INFINITY;
        for (int32_t i = 0; i < RT_BLOCK; i += 8)
            for (int k = 0; k < 8; k++)
                mk[k] = v[i + k] > mk[k] ? v[i + k] : mk[k];
        float bm = mk[0];
        for (int k = 1; k < 8; k++)
            bm = mk[k] > bm ? mk[k] : bm;
        s->block_max[b] = bm;
        m = bm > m ? bm : m;
    }
    return m;
}

/* Lowest id holding m (the max, from block_maxima), or 0 when none does (all NaN). */
static int32_t first_index_of_max(const rt_sampler *s, const float *l, float m)
{
    for (int32_t b = 0; b < s->n_blocks; b++) {
        if (s->block_max[b] != m)
            continue;
        for (int32_t i = b * RT_BLOCK, e = i + block_len(s, b); i < e; i++)
            if (l[i] == m)
                return i;
    }
    return 0;
}

/* w [RT_BLOCK] = the weights of v [RT_BLOCK]. */
static void block_weights(const float *restrict v, float m, float inv_t, float lo,
                          float *restrict w)
{
    for (int32_t j = 0; j < RT_BLOCK; j++)
        w[j] = weight(v[j], m, inv_t, lo);
}

/* Sum of w [RT_BLOCK] (eight partial sums, so that it vectorises). */
static float sum_block(const float *w)
{
    float acc[8] = {0};
    for (int32_t j = 0; j < RT_BLOCK; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += w[j + k];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Fills s->block_mass (sums of weights per block) and returns the total. Blocks whose max weighs
 * nothing weigh nothing and are skipped. */
static double block_sums(rt_sampler *s, const float *l, float m, float inv_t, float lo)
{
    float pad[RT_BLOCK], w[RT_BLOCK];
    double z = 0.0;
    for (int32_t b = 0; b < s->n_blocks; b++) {
        s->block_mass[b] = 0.0;
        if (weight(s->block_max[b], m, inv_t, lo) == 0.0f)
            continue;
        block_weights(block_at(s, l, b, pad), m, inv_t, lo, w);
        s->block_mass[b] = sum_block(w);
        z += s->block_mass[b];
    }
    return z;
}

/* ---- logprobs -------------------------------------------------------------------------------- */

/* l - lse; when the logits hold no finite maximum (lse = m is +-inf), 0 for the tokens at it. */
static float to_logprob(float l, float lse)
{
    if (isfinite(lse))
        return l - lse;
    return l == lse ? 0.0f : -INFINITY;
}

/* log(sum exp(l)) over all tokens, given their max m. */
static float log_sum_exp(rt_sampler *s, const float *l, float m)
{
    if (!isfinite(m))
        return m;
    return m + (float)log(block_sums(s, l, m, 1.0f, -INFINITY));
}

/* The n most likely tokens (by logit, ties to the lower id) into top, as logprobs; blocks whose max
 * cannot enter the list are skipped. */
static int32_t top_logprobs(const rt_sampler *s, const float *l, int32_t n, float lse,
                            rt_token_logprob *top)
{
    int32_t cnt = 0;
    for (int32_t b = 0; b < s->n_blocks && n > 0; b++) {
        if (cnt == n && !(s->block_max[b] > top[cnt - 1].logprob))
            continue;
        for (int32_t i = b * RT_BLOCK, e = i + block_len(s, b); i < e; i++) {
            float v = l[i];
            if (cnt < n ? v != v : !(v > top[cnt - 1].logprob)) /* NaN, or not above the last */
                continue;
            int32_t j = cnt < n ? cnt++ : n - 1;
            while (j > 0 && top[j - 1].logprob < v) {
                top[j] = top[j - 1];
                j--;
            }
            top[j] = (rt_token_logprob){.token = i, .logprob = v};
        }
    }
    for (int32_t j = 0; j < cnt; j++)
        top[j].logprob = to_logprob(top[j].logprob, lse);
    return cnt;
}

/* ---- plain temperature draw ------------------------------------------------------------------ */

/* Inverse CDF over all tokens: the block holding u * total, then the token inside it. */
static int32_t draw_plain(rt_sampler *s, const float *l, float m, float inv_t, float lo, double u)
{
    double target = u * block_sums(s, l, m, inv_t, lo);
    int32_t b = 0;
    while (b < s->n_blocks - 1 && target >= s->block_mass[b])
        target -= s->block_mass[b++];
    while (b > 0 && s->block_mass[b] <= 0.0) /* rounding pushed the target past the mass */
        b--;
    float pad[RT_BLOCK], w[RT_BLOCK];
    block_weights(block_at(s, l, b, pad), m, inv_t, lo, w);
    double cum = 0.0;
    int32_t last = -1;
    for (int32_t j = 0; j < block_len(s, b); j++) {
        if (w[j] <= 0.0f)
            continue;
        cum += w[j];
        last = j;
        if (cum > target)
            break;
    }
    FQ_ASSERT(last >= 0); /* the block's mass is > 0, so some token has weight */
    return b * RT_BLOCK + last;
}

/* ---- top_k / top_p over candidates -----------------------------------------------------------
 * The kept set is a prefix of the tokens in key order (higher logit first, lower id first among
 * equal logits), so a cut logit whose set {l >= cut} holds k tokens (top_k) or top_p of the mass
 * (top_p alone) holds it too. Only the tokens at or above such a cut are collected, with their
 * weights (collect_candidates says how the cut is found), and the kept prefix among them is found
 * by a radix select on the logits' bits (find_prefix); ties at its last key are taken in id order.
 * No sort, and the result depends on the logits alone.
 */

#define RT_N_WINDOWS 10

/* Bands below the max, in units of the temperature (nats of the scaled logits), narrowest first;
 * each costs a compare-only scan of the blocks whose max reaches it. */
static const float k_windows[RT_N_WINDOWS] = {1.0f, 2.0f,  3.0f,  4.0f,  6.0f,
                                              8.0f, 11.0f, 16.0f, 22.0f, 32.0f};

/* A float's bits mapped so that unsigned order is the float order (-inf lowest; 0 is below all). */
static inline uint32_t ordered_key(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    uint32_t neg = 0u - (b >> 31); /* all ones for negative numbers */
    return b ^ (neg | 0x80000000u);
}

static inline float key_value(uint32_t u)
{
    uint32_t b = u & 0x80000000u ? u ^ 0x80000000u : ~u;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static int cmp_float_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* How many of v [RT_CHUNK] lie in [lo_cut, hi_cut). */
static int32_t count_in_band(const float *v, float lo_cut, float hi_cut)
{
    int32_t acc[8] = {0};
    for (int32_t j = 0; j < RT_CHUNK; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (v[j + k] >= lo_cut) & (v[j + k] < hi_cut);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Appends the tokens with logits in [lo_cut, hi_cut), in id order, to the n candidates in
 * s->cand_* (keys, weights, ids); returns the new count. Only the new tokens' weights are computed
 * (vectorised, RT_BLOCK at a time); blocks and chunks outside the band are skipped. The arrays hold
 * n_vocab + RT_CHUNK: the branch-free append may write one past the last token kept. */
static int32_t collect(rt_sampler *s, const float *l, int32_t n, float lo_cut, float hi_cut,
                       float m, float inv_t, float lo)
{
    float pad[RT_BLOCK], w[RT_BLOCK];
    int32_t n0 = n;
    for (int32_t b = 0; b < s->n_blocks; b++) {
        if (!(s->block_max[b] >= lo_cut))
            continue;
        const float *v = block_at(s, l, b, pad); /* padding is -inf: never collected */
        uint32_t *ku = s->cand_key;
        int32_t *id = s->cand_id;
        for (int32_t c0 = 0; c0 < RT_BLOCK; c0 += RT_CHUNK) {
            int32_t hits = count_in_band(v + c0, lo_cut, hi_cut);
            if (hits == 0)
                continue;
            if (hits <= RT_CHUNK / 8) { /* a few: branches mostly predicted */
                for (int32_t j = c0; j < c0 + RT_CHUNK; j++)
                    if (v[j] >= lo_cut && v[j] < hi_cut) {
                        ku[n] = ordered_key(v[j]);
                        id[n++] = b * RT_BLOCK + j;
                    }
                continue;
            }
            for (int32_t j = c0; j < c0 + RT_CHUNK; j++) {
                ku[n] = ordered_key(v[j]); /* branch-free append: may write one past the last */
                id[n] = b * RT_BLOCK + j;
                n += (v[j] >= lo_cut) & (v[j] < hi_cut);
            }
        }
    }
    for (int32_t off = n0; off < n; off += RT_BLOCK) {
        int32_t len = n - off < RT_BLOCK ? n - off : RT_BLOCK;
        for (int32_t j = 0; j < RT_BLOCK; j++)
            pad[j] = j < len ? key_value(s->cand_key[off + j]) : -INFINITY;
        block_weights(pad, m, inv_t, lo, w);
        memcpy(s->cand_w + off, w, (size_t)len * sizeof *w);
    }
    return n;
}

/* Collects the candidates: the tokens at or above a cut that surely holds the kept set. top_k <=
 * n_blocks: the k-th largest block max (the k largest block maxima are k tokens at or above it).
 * Otherwise bands below the max, narrowest first, until they hold k tokens (top_k) or top_p of
 * total (top_p alone); min_p's lo bounds them all. Returns the count. */
static int32_t collect_candidates(rt_sampler *s, const float *l, float m, float t, float inv_t,
                                  float lo, double total)
{
    int32_t k = s->top_k;
    if (k > 0 && k <= s->n_blocks) {
        memcpy(s->block_tmp, s->block_max, (size_t)s->n_blocks * sizeof *s->block_tmp);
        qsort(s->block_tmp, (size_t)s->n_blocks, sizeof *s->block_tmp, cmp_float_desc);
        float cut = s->block_tmp[k - 1];
        return collect(s, l, 0, cut > lo ? cut : lo, INFINITY, m, inv_t, lo);
    }
    int32_t n = 0;
    double mass = 0.0;
    float hi = INFINITY;
    for (int i = 0; i <= RT_N_WINDOWS; i++) {
        float cut = i < RT_N_WINDOWS ? m - k_windows[i] * t : -INFINITY;
        if (!(cut > lo))
            cut = lo;
        int32_t n0 = n;
        n = collect(s, l, n, cut, hi, m, inv_t, lo);
        if (cut == lo)
            return n;
        for (int32_t j = n0; j < n; j++)
            mass += s->cand_w[j];
        if (k > 0 ? n >= k : mass >= s->top_p * total)
            return n;
        hi = cut;
    }
    return n;
}

/* The kept prefix of the n candidates: every key above *t, then the first *n_ties with key *t (in
 * id order). by_count: the prefix of `need` tokens (top_k); else the fewest tokens whose weight
 * reaches `need` (top_p). *t is the largest key whose set {key >= t} holds need, found by a radix
 * select on the ordered keys, 8 bits at a time from the top: each of the 4 passes histograms (count
 * or mass) the candidates that share the digits found so far and walks the digits downwards. */
static void find_prefix(const rt_sampler *s, int32_t n, bool by_count, double need, uint32_t *t,
                        int32_t *n_ties)
{
    double hist[256];
    uint32_t prefix = 0, pmask = 0;
    double above = 0.0; /* count or mass of the keys above the prefix's range */
    for (int shift = 24; shift >= 0; shift -= 8) {
        memset(hist, 0, sizeof hist);
        for (int32_t j = 0; j < n; j++) {
            uint32_t u = s->cand_key[j];
            if ((u & pmask) == prefix)
                hist[(u >> shift) & 255u] += by_count ? 1.0 : (double)s->cand_w[j];
        }
        /* the highest digit whose keys, with those above, reach need (digit 0 when rounding
         * leaves everything short: then all is kept) */
        int32_t d = 255;
        while (d > 0 && above + hist[d] < need)
            above += hist[d--];
        prefix |= (uint32_t)d << shift;
        pmask |= 255u << shift;
    }
    *t = prefix;
    /* ties at t, in id order, until the prefix is complete (above < need here) */
    int32_t r = 0;
    double have = above;
    for (int32_t j = 0; j < n && have < need; j++)
        if (s->cand_key[j] == prefix) {
            have += by_count ? 1.0 : (double)s->cand_w[j];
            r++;
        }
    *n_ties = r;
}

/* Compacts the candidates to the kept prefix (key > t, or key == t among the first n_ties of them),
 * keeping id order; returns the new count. */
static int32_t keep_prefix(rt_sampler *s, int32_t n, uint32_t t, int32_t n_ties)
{
    int32_t out = 0, ties = 0;
    for (int32_t j = 0; j < n; j++) {
        uint32_t u = s->cand_key[j];
        bool keep = u > t || (u == t && ties++ < n_ties);
        if (keep) {
            s->cand_key[out] = u;
            s->cand_w[out] = s->cand_w[j];
            s->cand_id[out++] = s->cand_id[j];
        }
    }
    return out;
}

/* Draw restricted by top_k and/or top_p (min_p already in lo). */
static int32_t draw_filtered(rt_sampler *s, const float *l, float m, float t, float lo, double u)
{
    float inv_t = 1.0f / t;
    int32_t k = s->top_k;
    bool top_p = s->top_p < 1.0f;
    double total = top_p && k == 0 ? block_sums(s, l, m, inv_t, lo) : 0.0;
    int32_t n = collect_candidates(s, l, m, t, inv_t, lo, total);
    uint32_t key;
    int32_t ties;
    if (k > 0 && n > k) {
        find_prefix(s, n, true, (double)k, &key, &ties);
        n = keep_prefix(s, n, key, ties);
    }
    if (top_p) {
        double z = total;
        if (k > 0) {
            z = 0.0;
            for (int32_t j = 0; j < n; j++)
                z += s->cand_w[j];
        }
        find_prefix(s, n, false, s->top_p * z, &key, &ties);
        n = keep_prefix(s, n, key, ties);
    }
    double z = 0.0;
    for (int32_t j = 0; j < n; j++)
        z += s->cand_w[j];
    double target = u * z, cum = 0.0;
    int32_t last = s->cand_id[0];
    for (int32_t j = 0; j < n; j++) {
        if (s->cand_w[j] <= 0.0f)
            continue;
        cum += s->cand_w[j];
        last = s->cand_id[j];
        if (cum > target)
            break;
    }
    return last;
}

/* ---- the step -------------------------------------------------------------------------------- */

/* The token drawn from logits (bias and penalties applied, block maxima in s, max m) with draw u:
 * the greedy rule, or temperature, min_p, top_k, top_p and u. */
static int32_t pick(rt_sampler *s, const float *logits, float m, double u)
{
    if (s->temperature < RT_SAMPLER_GREEDY_EPS || !isfinite(m))
        return first_index_of_max(s, logits, m);
    float t = s->temperature;
    float lo = s->min_p > 0.0f ? m + t * logf(s->min_p) : -INFINITY;
    if (lo > m) /* rounding: the max always survives */
        lo = m;
    if (s->cand_key)
        return draw_filtered(s, logits, m, t, lo, u);
    return draw_plain(s, logits, m, 1.0f / t, lo, u);
}

int32_t rt_sampler_sample(rt_sampler *s, float *logits, rt_sample_result *res)
{
    apply_bias_and_penalties(s, logits);
    float m = block_maxima(s, logits);

    bool want_lp = res && s->logprobs >= 0;
    float lse = 0.0f;
    if (res) {
        res->n_top = 0;
        res->logprob = 0.0f;
    }
    if (want_lp) {
        lse = log_sum_exp(s, logits, m);
        res->n_top = top_logprobs(s, logits, s->logprobs, lse, res->top);
    }

    int32_t tok = pick(s, logits, m, next_uniform(s));

    if (res) {
        res->token = tok;
        if (want_lp)
            res->logprob = to_logprob(logits[tok], lse);
    }
    rt_sampler_accept(s, tok);
    return tok;
}

static rt_sampling_params row_params(const rt_sample_row *row)
{
    rt_sampling_params p = rt_sampling_default_params();
    p.temperature = row->temperature;
    p.top_k = row->top_k;
    p.top_p = row->top_p;
    p.min_p = row->min_p;
    return p;
}

int rt_sample_row_check(const rt_sample_row *row, int32_t n_vocab, char *err, size_t err_len)
{
    rt_sampling_params p = row_params(row);
    int rc = rt_sampling_validate(&p, n_vocab, err, err_len, NULL);
    if (rc == 0 && !(row->u > 0.0 && row->u < 1.0))
        rc = fq_err(err, err_len, FQ_EINVAL, "sample row: draw %g outside (0, 1)", row->u);
    return rc;
}

int rt_sample_row_pick(const rt_sample_row *row, const float *logits, int32_t n_vocab,
                       int32_t *token, char *err, size_t err_len)
{
    int rc = rt_sample_row_check(row, n_vocab, err, err_len);
    if (rc)
        return rc;
    rt_sampling_params p = row_params(row);
    rt_sampler *s = NULL;
    rc = rt_sampler_create(&p, n_vocab, NULL, 0, 0, &s, err, err_len);
    if (rc)
        return rc;
    *token = pick(s, logits, block_maxima(s, logits), row->u);
    rt_sampler_destroy(s);
    return 0;
}

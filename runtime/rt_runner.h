/* rt_runner.h — offline use of a backend: batched greedy generation and perplexity scoring.
 *
 * A runner owns a backend and a KV block pool for one model; the CLIs (flexq-generate, flexq-ppl)
 * and the tests drive the model through it. Prompts longer than the backend's max_batch_tokens are
 * prefilled in chunks. The serving scheduler (continuous batching) replaces this for the daemon.
 * Thread safety: a runner belongs to the thread that created it.
 */
#ifndef RT_RUNNER_H
#define RT_RUNNER_H

#include "rt_model.h"
#include "rt_ops.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_runner rt_runner;

/* Gets a model ready for a mode: a checkpoint-backed model is quantized to INT6 in memory (group
 * size automatic) when the mode needs INT6 weights and it has none. Errors name what is missing. */
int rt_model_prepare_mode(rt_model *m, rt_mode mode, char *err, size_t err_len);

/* m is borrowed and must outlive the runner. backend: "cpu". */
int rt_runner_create(const rt_model *m, const char *backend, const rt_backend_params *p,
                     rt_runner **out, char *err, size_t err_len);
void rt_runner_destroy(rt_runner *r); /* NULL is a no-op */

/* What the runner's backend holds (rt_ops.h); zeros when the backend does not say. */
void rt_runner_mem(const rt_runner *r, rt_backend_mem *out);

/* How the runner's backend has run its steps (rt_ops.h); zeros when the backend does not say. */
void rt_runner_stats(const rt_runner *r, rt_backend_stats *out);

/* Called once per generated token of sequence seq (in step order); return non-zero to stop that
 * sequence early. */
typedef int (*rt_token_cb)(void *ud, int32_t seq, int32_t token);

typedef struct rt_greedy_params {
    int32_t max_new_tokens; /* tokens to generate per sequence; default 32 */
    bool stop_at_eos;       /* stop a sequence after it emits the tokenizer's EOS; default true */
    rt_token_cb on_token;   /* optional */
    void *ud;               /* passed to on_token */
} rt_greedy_params;

rt_greedy_params rt_greedy_default_params(void);

/* Greedy continuation of n_seqs prompts, decoded together in one batch per step. out: [n_seqs,
 * max_new_tokens], filled with -1 after a sequence stops; n_out[s] gets each sequence's count.
 * last_logits, when not NULL: [n_seqs, n_vocab], the logits that chose each sequence's final token.
 */
int rt_runner_greedy(rt_runner *r, const int32_t *const *prompts, const int32_t *n_prompt,
                     int32_t n_seqs, const rt_greedy_params *gp, int32_t *out, int32_t *n_out,
                     float *last_logits, char *err, size_t err_len);

/* Runs one sequence of n tokens and returns the sum over i in [1, n) of -log p(tokens[i] | tokens
 * before i) in *nll, in double precision. */
int rt_runner_score(rt_runner *r, const int32_t *tokens, int32_t n, double *nll, char *err,
                    size_t err_len);

/* Called after each perplexity window with its index, the window count and its nll. */
typedef void (*rt_window_cb)(void *ud, int32_t window, int32_t n_windows, double nll);

/* Perplexity over the non-overlapping windows of ctx tokens of tokens[0, n) (an incomplete tail is
 * dropped; at most max_windows when > 0), each scored on all but its first token. Fills *nll (sum),
 * *scored (tokens scored) and *windows; returns FQ_EINVAL when not even one window fits. */
int rt_runner_ppl(rt_runner *r, const int32_t *tokens, size_t n, int32_t ctx, int32_t max_windows,
                  rt_window_cb on_window, void *ud, double *nll, int64_t *scored, int32_t *windows,
                  char *err, size_t err_len);

/* The logits of the last token of one prompt: [n_vocab] into logits. */
int rt_runner_last_logits(rt_runner *r, const int32_t *tokens, int32_t n, float *logits, char *err,
                          size_t err_len);

#endif /* RT_RUNNER_H */

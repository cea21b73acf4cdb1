/* rt_ops.h — the backend contract: one forward step over a batch of sequences, behind an ops table.
 *
 * A step takes, for each sequence in the batch, its new tokens, the position of the first of them
 * (= tokens already in the KV cache) and its KV block table (rt_kv.h) covering every position up to
 * the end of the step. The backend writes the new tokens' keys and values into its cache storage,
 * attends over the whole context, and returns logits: one row per sequence (its last new token), or
 * one per new token for sequences that ask for all of them (perplexity). Rows come in batch order.
 * Implementations: "cpu" (rt_backend_cpu.c, the fp32 reference) and, in builds with CUDA, "cuda"
 * (rt_backend_cuda.c: the whole forward pass on the GPU, same table).
 * Thread safety: a backend instance belongs to one thread (the engine thread).
 */
#ifndef RT_OPS_H
#define RT_OPS_H

#include "rt_kv.h"
#include "rt_model.h"
#include "rt_sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_seq_step {
    const int32_t *tokens; /* [n_tokens] new tokens, borrowed for the call */
    int32_t n_tokens;      /* >= 1 */
    int32_t pos0;          /* position of tokens[0] */
    const rt_kv_seq *kv;   /* block table reserved for pos0 + n_tokens positions */
    bool all_logits;       /* logits for every new token instead of only the last */
} rt_seq_step;

typedef struct rt_batch {
    const rt_seq_step *seqs; /* [n_seqs] */
    int32_t n_seqs;
} rt_batch;

/* Tokens in the batch and logits rows it produces. */
int64_t rt_batch_n_tokens(const rt_batch *b);
int64_t rt_batch_n_logits(const rt_batch *b);

/* Tokens of the next chunk of a prompt with `left` tokens still to compute when a step has room
 * for `cap` (> 0) and a step never carries more than `step_max`: min(left, cap), except that a
 * prompt longer than one token is never fed one token at a time — no one-token chunk and no
 * one-token remainder (0: feed none this step) — when step_max >= 2. Backends may compute one-token
 * rows (decode) with other kernels than longer chunks (rt_backend_cuda.c does), each kind invariant
 * per row; this keeps every prompt token on the chunk kernels however a batch splits prompts. */
int32_t rt_prefill_chunk(int64_t left, int64_t cap, int64_t step_max);

/* What a backend accepts in one step. */
typedef struct rt_batch_limits {
    int32_t max_tokens; /* tokens per step */
    int32_t n_vocab;
    int32_t block_size; /* KV cache geometry */
    int32_t n_blocks;
} rt_batch_limits;

/* Per-token layout of a step, arrays of rt_batch_n_tokens(b) entries owned by the caller. */
typedef struct rt_batch_plan {
    int32_t *pos;    /* position of each token */
    int32_t *seq_of; /* batch index of each token's sequence */
    int64_t *slot;   /* KV cache slot of each token */
} rt_batch_plan;

/* Checks a step against the limits before anything is written (token ids, sizes, block tables:
 * FQ_ERANGE naming what is wrong) and fills the plan in token order. */
int rt_batch_check_plan(const rt_batch *b, const rt_batch_limits *lim, rt_batch_plan *out,
                        char *err, size_t err_len);

/* How the decoder linears compute (everything else is fp32 on the CPU backend). */
typedef enum {
    RT_MODE_FP = 0, /* fp32 weights of the source checkpoint, fp32 activations */
    RT_MODE_W6A16,  /* INT6 weights dequantized to fp32, fp32 activations (weights-only error) */
    RT_MODE_W6A8,   /* INT6 weights, every linear's input quantized to 8 bits per token and group */
    RT_MODE_W6A6,   /* the same with 6-bit activations everywhere */
    RT_MODE_FLEX,   /* per-linear activation bits: params.abits, else each linear's own abits */
    /* Comparison modes (the baselines FlexQ is measured against, in the same engine). Their
     * weights come from the source's fp32 weights when the model has them, else from the INT6
     * codes dequantized (exact): */
    RT_MODE_FP16, /* fp16 weights and fp16 linear inputs, fp32 accumulation (cuBLAS fp16) */
    RT_MODE_W8A8  /* int8 weights per output channel, int8 inputs per token, int32 sums, then
                     (sx * sw) * sum (SmoothQuant-style W8A8 without smoothing; cuBLAS int8) */
} rt_mode;

#define RT_MODE_LAST RT_MODE_W8A8

/* "fp", "w6a16", "w6a8", "w6a6", "flex", "fp16", "w8a8". */
const char *rt_mode_name(rt_mode mode);
/* Parses a mode name; FQ_EINVAL for an unknown one. */
int rt_mode_parse(const char *name, rt_mode *mode);

typedef struct rt_backend_params {
    rt_mode mode;             /* default RT_MODE_FP */
    const int32_t *abits;     /* flex: [n_layer * FQ_LIN_COUNT] bits (6 or 8), read (copied) at
                                 create; NULL = each linear's abits */
    int n_threads;            /* CPU threads; 0 = one per core */
    rt_kv_params kv;          /* cache geometry; the caller's rt_kv must use the same */
    int32_t max_batch_tokens; /* most tokens one step may carry; default 512 */
    bool graphs; /* cuda: replay decode steps as CUDA graphs (one per batch bucket); default true */
} rt_backend_params;

rt_backend_params rt_backend_default_params(void);

/* What every backend checks first (rt_mode.c): the mode is known and the model has the weights it
 * needs (FQ_EINVAL naming what is missing). */
int rt_mode_check(const rt_model *m, rt_mode mode, char *err, size_t err_len);

/* The fp32 weights [n_out, n_in] of a linear the fp16 and w8a8 modes start from: the source's
 * (borrowed, *owned NULL) or the INT6 codes dequantized into a new buffer (*owned = that buffer,
 * caller frees). FQ_ENOMEM, or FQ_EINVAL when the linear has neither. */
int rt_linear_fp32(const rt_linear *lin, const float **w, float **owned);

/* The activation bits of linear t of a layer in the mode of p: 8 (w6a8), 6 (w6a6), p->abits or the
 * linear's own (flex: FQ_EINVAL unless 6 or 8), 0 in the fp32 modes. */
int rt_linear_abits(const rt_model *m, const rt_backend_params *p, int32_t layer, fq_lin_type t,
                    int32_t *bits, char *err, size_t err_len);

typedef struct rt_backend rt_backend;

/* Where a backend's memory goes (bytes; the device's for cuda, the host's for cpu). */
typedef struct rt_backend_mem {
    int64_t weight_bytes;  /* every weight the backend holds in its own format: the decoder
                              linears, the norms, embeddings and lm_head */
    int64_t linear_bytes;  /* of which the decoder linears */
    int64_t kv_bytes;      /* the KV cache */
    int64_t scratch_bytes; /* activations and workspaces of one step */
} rt_backend_mem;

/* How a backend has run its steps since create. */
typedef struct rt_backend_stats {
    int64_t steps;           /* forward and forward_argmax calls that ran */
    int64_t graph_steps;     /* of which replayed a captured CUDA graph (cuda) */
    int64_t graphs_captured; /* graphs made (one per batch bucket used) */
    int64_t graph_failures;  /* captures that failed; graphs are off after the first */
} rt_backend_stats;

typedef struct rt_ops {
    const char *name;
    /* Creates a backend for m (borrowed: m must outlive the backend). */
    int (*create)(const rt_model *m, const rt_backend_params *p, rt_backend **out, char *err,
                  size_t err_len);
    void (*destroy)(rt_backend *be); /* NULL is a no-op */
    /* One step. logits: [rt_batch_n_logits(b), n_vocab], caller-allocated. Bad token ids, too many
     * tokens or a short block table fail with FQ_ERANGE before any cache write. */
    int (*forward)(rt_backend *be, const rt_batch *b, float *logits, char *err, size_t err_len);
    /* What the backend holds (no effect on it). */
    void (*mem)(const rt_backend *be, rt_backend_mem *out);
    /* One step as forward, returning only each logits row's rt_argmax: tokens
     * [rt_batch_n_logits(b)], caller-allocated. Lets a backend keep the logits where it made them
     * (cuda copies back 4 bytes per row instead of n_vocab floats). The same checks and errors as
     * forward. */
    int (*forward_argmax)(rt_backend *be, const rt_batch *b, int32_t *tokens, char *err,
                          size_t err_len);
    /* Step counts (no effect on the backend). */
    void (*stats)(const rt_backend *be, rt_backend_stats *out);
    /* One step as forward, returning for each logits row the token rt_sample_row_pick(&rows[r],
     * row r's logits) picks (rt_sampler.h): rows and tokens [rt_batch_n_logits(b)]. A backend may
     * sum in another order (cuda: exact fixed-point sums), so a draw that falls within rounding of
     * a boundary between two tokens may pick the neighbour. The same checks and errors as forward,
     * and FQ_EINVAL for a row rt_sampling_validate would refuse. NULL: not offered. */
    int (*forward_sample)(rt_backend *be, const rt_batch *b, const rt_sample_row *rows,
                          int32_t *tokens, char *err, size_t err_len);
} rt_ops;

/* The first index of the largest of v[0..n) (n >= 1); NaN never wins (all NaN: 0). Greedy decoding
 * everywhere uses this rule (the CUDA k_argmax kernel too). */
int32_t rt_argmax(const float *v, int32_t n);

/* The ops table of a backend by name ("cpu", "cuda" in builds with CUDA), or NULL. */
const rt_ops *rt_backend_find(const char *name);

/* The backend names this build has, e.g. "cpu, cuda". */
const char *rt_backend_names(void);

extern const rt_ops rt_backend_cpu_ops;
#ifdef FQ_HAVE_CUDA
extern const rt_ops rt_backend_cuda_ops;
#endif

#endif /* RT_OPS_H */

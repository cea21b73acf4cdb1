/* fq_ckpt.h — the in-memory model description that every checkpoint reader produces.
 *
 * A checkpoint is a LLaMA-family model as it came from disk, dequantized to fp32: its config, its
 * tokenizer description and its tensors under canonical names. The GGUF reader (fq_gguf.h) and the
 * HF safetensors-directory reader (fq_safetensors.h) both fill this struct; fq_ckpt_load() picks
 * the reader by looking at the path. The runtime builds its weights and tokenizer from it; the
 * quantizer reads it to write the INT6 model file.
 *
 * Canonical tensor names and shapes (row-major, shape[0] outermost; linears are [n_out, n_in]):
 *   token_embd            [n_vocab, n_embd]
 *   output_norm           [n_embd]
 *   output                [n_vocab, n_embd]   absent when cfg.tied_embeddings
 *   blk.L.attn_norm       [n_embd]
 *   blk.L.attn_q          [n_head * head_dim, n_embd]
 *   blk.L.attn_k          [n_head_kv * head_dim, n_embd]
 *   blk.L.attn_v          [n_head_kv * head_dim, n_embd]
 *   blk.L.attn_output     [n_embd, n_head * head_dim]
 *   blk.L.ffn_norm        [n_embd]
 *   blk.L.ffn_gate        [n_ff, n_embd]
 *   blk.L.ffn_up          [n_ff, n_embd]
 *   blk.L.ffn_down        [n_embd, n_ff]
 *
 * RoPE: GGUF files of LLaMA store the rows of attn_q / attn_k permuted so that RoPE rotates
 * adjacent pairs (2i, 2i+1) of each head ("interleaved"); HF checkpoints rotate pairs (i, i +
 * head_dim/2)
 * ("half"). Readers keep the rows as stored and record the convention in cfg.rope_style; the
 * forward pass applies the matching rotation.
 *
 * Ownership: an fq_ckpt owns every string and array reachable from it; fq_ckpt_destroy frees all.
 * Thread safety: a loaded checkpoint is immutable and may be read from any thread.
 */
#ifndef FQ_CKPT_H
#define FQ_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FQ_TENSOR_NAME_MAX 96
#define FQ_TENSOR_MAX_DIMS 4

typedef enum {
    FQ_ROPE_HALF = 0,       /* rotate (i, i + head_dim/2): HF / NeoX layout */
    FQ_ROPE_INTERLEAVED = 1 /* rotate (2i, 2i+1): GGUF llama layout of q/k rows */
} fq_rope_style;

typedef struct fq_config {
    char arch[32];            /* "llama" (the only architecture supported so far) */
    int32_t n_layer;          /* decoder blocks */
    int32_t n_embd;           /* hidden size */
    int32_t n_ff;             /* MLP inner size */
    int32_t n_head;           /* query heads */
    int32_t n_head_kv;        /* key/value heads (GQA when < n_head) */
    int32_t head_dim;         /* n_embd / n_head unless the checkpoint says otherwise */
    int32_t n_vocab;          /* rows of token_embd */
    int32_t n_ctx;            /* training context length */
    float rope_theta;         /* RoPE base frequency */
    float norm_eps;           /* RMSNorm epsilon */
    bool tied_embeddings;     /* lm_head shares token_embd */
    fq_rope_style rope_style; /* see the file comment */
} fq_config;

/* Token kinds, numbered as GGUF's tokenizer.ggml.token_type. */
typedef enum {
    FQ_TOK_NORMAL = 1,
    FQ_TOK_UNKNOWN = 2,
    FQ_TOK_CONTROL = 3, /* special tokens such as <|im_start|>: matched in text, skipped on decode
                           when asked */
    FQ_TOK_USER_DEFINED = 4, /* added tokens that are not special: matched in text, decoded */
    FQ_TOK_UNUSED = 5,
    FQ_TOK_BYTE = 6
} fq_tok_type;

/* A byte-level BPE tokenizer as a checkpoint describes it. */
typedef struct fq_tok_spec {
    char model[16];       /* "gpt2" = byte-level BPE (the only kind supported so far) */
    char pre[32];         /* pre-tokenizer: "gpt2", "smollm" (digits split, then gpt2),
                             "llama3"; readers map tokenizer.json structures to these */
    int32_t n_tokens;     /* vocabulary size of the tokenizer */
    char **tokens;        /* [n_tokens] token text: GPT-2 byte-level form for normal tokens,
                             plain UTF-8 for control / user-defined ones (as GGUF stores them) */
    int32_t *token_types; /* [n_tokens] fq_tok_type values */
    int32_t n_merges;     /* number of BPE merges */
    char **merges;        /* [n_merges] "left right", in rank order */
    bool ignore_merges;   /* a whole pre-token found in the vocab is taken as is (llama3) */
    int32_t bos_id;       /* -1 when none */
    int32_t eos_id;       /* -1 when none */
    int32_t pad_id;       /* -1 when none */
    bool add_bos;         /* encode() prepends bos_id when asked to add special tokens */
    bool add_eos;         /* encode() appends eos_id when asked to add special tokens */
    char *chat_template;  /* Jinja text from the checkpoint, or NULL */
} fq_tok_spec;

typedef struct fq_tensor {
    char name[FQ_TENSOR_NAME_MAX];     /* canonical name, see the file comment */
    int32_t n_dims;                    /* 1..FQ_TENSOR_MAX_DIMS */
    int64_t shape[FQ_TENSOR_MAX_DIMS]; /* row-major, shape[0] outermost */
    float *data;                       /* [product of shape] fp32, owned by the checkpoint */
} fq_tensor;

typedef struct fq_ckpt {
    char format[16]; /* "gguf" or "safetensors" */
    char path[1024]; /* the file or directory it was read from */
    fq_config cfg;
    fq_tok_spec tok;
    int32_t n_tensors;
    fq_tensor *tensors; /* [n_tensors] */
} fq_ckpt;

/* Reads a checkpoint: a GGUF file, or a directory holding config.json, *.safetensors (one file or
 * shards with model.safetensors.index.json) and tokenizer.json. On success *out is a new checkpoint
 * the caller destroys; on failure *out is NULL and err names the file, the tensor and the problem.
 */
int fq_ckpt_load(const char *path, fq_ckpt **out, char *err, size_t err_len);

/* Reads only the tokenizer description of a checkpoint (GGUF file or HF directory), without tensor
 * data. The caller frees the spec's arrays with fq_tok_spec_free. */
int fq_ckpt_load_tokenizer(const char *path, fq_tok_spec *tok, char *err, size_t err_len);

/* Frees the checkpoint and everything it owns; NULL is a no-op. */
void fq_ckpt_destroy(fq_ckpt *ck);

/* The tensor with this canonical name, or NULL. */
const fq_tensor *fq_ckpt_find(const fq_ckpt *ck, const char *name);

/* Number of elements of a tensor. */
int64_t fq_tensor_numel(const fq_tensor *t);

/* Checks that the config is sane and that every tensor the config implies is present with the
 * expected shape (see the file comment); fills err with the first problem. */
int fq_ckpt_validate(const fq_ckpt *ck, char *err, size_t err_len);

/* Frees the arrays inside a tokenizer spec (not the spec itself). */
void fq_tok_spec_free(fq_tok_spec *tok);

#endif /* FQ_CKPT_H */

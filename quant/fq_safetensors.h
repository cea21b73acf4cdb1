/* fq_safetensors.h — safetensors files and HF checkpoint directories.
 *
 * A safetensors file is an 8-byte little-endian header length, a JSON header mapping tensor names
 * to {dtype, shape, data_offsets} (plus an optional "__metadata__" string map), then the raw data.
 * The file reader maps the file and validates the header completely (header length within the file
 * and at most 100 MB, known dtype, 0..4 non-negative dims, dtype x shape == the byte range, ranges
 * inside the data area, no overlaps, no duplicate names, string-only metadata) before handing out
 * views; it is shared by the HF reader here and by the INT6 model-file loader. Sub-byte dtypes (F4,
 * F6_*) are FQ_EUNSUP; everything else wrong is FQ_EFORMAT with "<path>: tensor <name>: <problem>".
 *
 * An HF checkpoint directory holds config.json (LlamaForCausalLM / model_type "llama"),
 * model.safetensors or the shards listed in model.safetensors.index.json, tokenizer.json, and
 * optionally tokenizer_config.json and chat_template.jinja. Tensors F32/F16/BF16 are converted to
 * fp32 under canonical names (fq_ckpt.h); other dtypes are FQ_EUNSUP; tensors with other names
 * (rotary_emb.inv_freq, ...) are ignored. A missing lm_head.weight means tied embeddings even when
 * config.json says otherwise (logged). cfg.rope_style is FQ_ROPE_HALF. Not supported yet
 * (FQ_EUNSUP): rope_scaling / rope_parameters other than the "default" type, hidden_act other than
 * silu, attention or MLP biases.
 *
 * Thread safety: any thread; an fq_st_file is immutable after open and may be read concurrently.
 */
#ifndef FQ_SAFETENSORS_H
#define FQ_SAFETENSORS_H

#include "fq_ckpt.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fq_st_file fq_st_file;

/* One tensor of an open safetensors file: a view into the mapping (valid until fq_st_close). */
typedef struct fq_st_tensor {
    const char *name; /* borrowed from the file */
    char dtype[8];    /* "F32", "F16", "BF16", "U8", "I8", "I32", ... as in the header */
    int32_t n_dims;   /* 0..FQ_TENSOR_MAX_DIMS */
    int64_t shape[FQ_TENSOR_MAX_DIMS];
    const void *data; /* borrowed: points into the mapping; may be unaligned */
    size_t n_bytes;
} fq_st_tensor;

/* Opens and validates a safetensors file (mmap). On success *out is caller-owned (fq_st_close). */
int fq_st_open(const char *path, fq_st_file **out, char *err, size_t err_len);
void fq_st_close(fq_st_file *f); /* NULL is a no-op */

int32_t fq_st_count(const fq_st_file *f);
/* The i-th tensor in header order; 0 <= i < fq_st_count is asserted. */
const fq_st_tensor *fq_st_at(const fq_st_file *f, int32_t i);
/* The tensor with this name, or NULL. */
const fq_st_tensor *fq_st_find(const fq_st_file *f, const char *name);
/* The "__metadata__" value for key, or NULL (borrowed). */
const char *fq_st_metadata(const fq_st_file *f, const char *key);

/* Loads an HF checkpoint directory. On success *out is caller-owned (fq_ckpt_destroy). */
int fq_safetensors_load_dir(const char *dir, fq_ckpt **out, char *err, size_t err_len);

/* Parses dir/tokenizer.json into *tok: byte-level BPE only (model "gpt2"); pre is "gpt2"
 * (ByteLevel), "smollm" (Digits + ByteLevel) or "llama3" (Llama-3 Split + ByteLevel), anything else
 * or a normalizer is FQ_EUNSUP. add_bos/add_eos come from a TemplateProcessing post-processor; BOS
 * / EOS / PAD from tokenizer_config.json's *_token text, else config.json's *_token_id (the first
 * of a list); the chat template from tokenizer_config.json (a string, or the "default" entry of a
 * list), else chat_template.jinja. Ids without a token become "[PAD<id>]" of type FQ_TOK_UNUSED. On
 * success the caller frees with fq_tok_spec_free; on failure *tok is zeroed. */
int fq_hf_load_tokenizer(const char *dir, fq_tok_spec *tok, char *err, size_t err_len);

#endif /* FQ_SAFETENSORS_H */

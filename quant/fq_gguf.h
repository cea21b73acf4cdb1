/* fq_gguf.h — the GGUF (v2/v3) checkpoint reader: metadata, tensor infos, alignment, dequantization.
 *
 * Reads a LLaMA GGUF file into an fq_ckpt (fq_ckpt.h): config from `llama.*` keys, tokenizer from
 * `tokenizer.ggml.*` keys, every tensor dequantized to fp32 under its canonical name (the ".weight"
 * suffix dropped; shapes reversed from GGUF's innermost-first order to row-major). q/k rows stay as
 * stored and cfg.rope_style is FQ_ROPE_INTERLEAVED. Tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (fq_ggml.h). Every offset, length and count is checked against the
 * file size before use: a corrupt, truncated or unsupported file gives FQ_EFORMAT / FQ_EUNSUP with a
 * message naming the file, the tensor or key, and the problem — never a crash.
 * Thread safety: any thread; no shared state.
 */
#ifndef FQ_GGUF_H
#define FQ_GGUF_H

#include "fq_ckpt.h"

#include <stddef.h>

/* Loads the whole checkpoint. On success *out is caller-owned (fq_ckpt_destroy). */
int fq_gguf_load(const char *path, fq_ckpt **out, char *err, size_t err_len);

/* Loads only the tokenizer description (no tensor data is read or dequantized). On success *tok is
 * filled and the caller frees its arrays with fq_tok_spec_free. */
int fq_gguf_load_tokenizer(const char *path, fq_tok_spec *tok, char *err, size_t err_len);

#endif /* FQ_GGUF_H */

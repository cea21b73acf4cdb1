/* fq_gguf.h — the GGUF (v2/v3) checkpoint reader: metadata, tensor infos, alignment,
 * dequantization.
 *
 * Reads a LLaMA GGUF file into an fq_ckpt (fq_ckpt.h): config from `llama.*` keys, tokenizer from
 * `tokenizer.ggml.*` keys, every tensor dequantized to fp32 under its canonical name (the ".weight"
 * suffix dropped; shapes reversed from GGUF's innermost-first order to row-major). q/k rows stay as
 * stored and cfg.rope_style is FQ_ROPE_INTERLEAVED. Tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (fq_ggml.h). Every offset, length and count is checked against the
 * file size before use: a corrupt, truncated or unsupported file gives one error line naming the
 * file, the tensor or key, and the problem ("<path>: tensor blk.3.attn_q.weight: <problem>",
 * "<path>: key llama.block_count: <problem>") — never a crash. Codes: FQ_EFORMAT (corrupt,
 * truncated or inconsistent), FQ_EUNSUP (valid but unsupported: GGUF v1 or big-endian, a tensor
 * type, an architecture other than llama, a tokenizer model other than gpt2, partial rotary
 * embeddings, RoPE scaling), FQ_ENOTFOUND (a required key or tensor is missing), FQ_EIO, FQ_ENOMEM.
 * Thread safety: any thread; no shared state.
 */
#ifndef FQ_GGUF_H
#define FQ_GGUF_H

#include "fq_ckpt.h"

#include <stddef.h>

/* Loads the whole checkpoint. On success *out is caller-owned (fq_ckpt_destroy); on failure *out is
 * NULL. Required keys: general.architecture ("llama"), llama.block_count, llama.context_length,
 * llama.embedding_length, llama.feed_forward_length, llama.attention.head_count,
 * llama.attention.layer_norm_rms_epsilon, tokenizer.ggml.model ("gpt2"), tokenizer.ggml.tokens,
 * tokenizer.ggml.merges. Optional, with defaults: llama.attention.head_count_kv (= head_count),
 * llama.rope.freq_base (10000), llama.attention.key_length (head_dim, else embedding_length /
 * head_count), llama.attention.value_length and llama.rope.dimension_count (must equal head_dim),
 * llama.vocab_size (must equal the rows of token_embd), general.alignment (32),
 * tokenizer.ggml.pre ("gpt2"), tokenizer.ggml.token_type (all normal), tokenizer.ggml.bos/eos/
 * padding_token_id (-1), tokenizer.ggml.add_bos_token / add_eos_token (false),
 * tokenizer.chat_template (NULL). Integer keys may use any integer type, float keys float32 or
 * float64. Dequantization uses one thread per online CPU (at most 16). Ends with fq_ckpt_validate.
 */
int fq_gguf_load(const char *path, fq_ckpt **out, char *err, size_t err_len);

/* Loads only the tokenizer description (no tensor data is read or dequantized). On success *tok is
 * filled and the caller frees its arrays with fq_tok_spec_free. */
int fq_gguf_load_tokenizer(const char *path, fq_tok_spec *tok, char *err, size_t err_len);

#endif /* FQ_GGUF_H */

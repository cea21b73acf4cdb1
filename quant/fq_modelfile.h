/* fq_modelfile.h — the INT6 model file: writing it, and the JSON forms of its metadata.
 *
 * The file is plain safetensors (fq_safetensors.h), so any safetensors reader opens it:
 *   tensors, per decoder layer L and linear <t> (attn_q, attn_k, attn_v, attn_output, ffn_gate,
 *   ffn_up, ffn_down; fq_weight.h):
 *     blk.L.<t>.qweight  U8  [N, fq_pack_row_bytes(K)]  packed codes, exactly as fq_pack.h lays
 * them blk.L.<t>.scales   F16 [N, K / G]                 one scale per (row, group) and fp16 copies
 * of the unquantized tensors (F16, canonical names and shapes of fq_ckpt.h): token_embd,
 * output_norm, output (only when the embeddings are untied), blk.L.attn_norm, blk.L.ffn_norm.
 *   "__metadata__" (every value a string, the last three JSON texts):
 *     flexq.version    "1"
 *     flexq.config     fq_config_to_json(): arch, dims, heads, rope theta and style, eps, ...
 *     flexq.tokenizer  fq_tok_spec_to_json(): vocabulary, types, merges, special ids, template
 *     flexq.quant      {"wbits": 6, "group_size": G, "group_request": 0|32|64|128,
 *                       "layout": FQ_MF_LAYOUT, "abits": {"blk.0.attn_q": 8, ...},
 *                       "sensitivity": <the caller's JSON or null>,
 *                       "source": {"path", "format", "sha256"}, "calibration": <text or null>}
 *                      group_size is one integer when every linear uses the same G, else an object
 *                      by linear type ({"attn_q": 64, ..., "ffn_down": 128}): G depends on K only.
 *
 * Alignment: safetensors readers (the Python package included) insist that tensor data is one
 * contiguous run with no gaps and nothing after it, so alignment comes from order, not padding.
 * The header is padded with spaces so the data starts at a file offset that is a multiple of 64;
 * every qweight comes first (its size, N * row_bytes, is a multiple of 16), so every qweight starts
 * at a file offset that is a multiple of 16; the remaining tensors follow, those whose byte size
 * is a multiple of 16 first. Every tensor's size is even, so every F16 tensor starts at an even
 * offset (the loader relies on this for the scales, which it reads in place).
 *
 * Thread safety: every function may be called from any thread; none keeps state.
 */
#ifndef FQ_MODELFILE_H
#define FQ_MODELFILE_H

#include "fq_ckpt.h"
#include "fq_weight.h"

#include <jansson.h>

#include <stddef.h>

#define FQ_MF_VERSION       "1" /* the only version this build writes and reads */
#define FQ_MF_KEY_VERSION   "flexq.version"
#define FQ_MF_KEY_CONFIG    "flexq.config"
#define FQ_MF_KEY_TOKENIZER "flexq.tokenizer"
#define FQ_MF_KEY_QUANT     "flexq.quant"
#define FQ_MF_LAYOUT                                                                               \
    "fq_pack v1: 64-code chunks, 32-byte low-nibble plane + 16-byte high-2-bit plane, "            \
    "offset-binary u=q+32"

typedef struct fq_modelfile_params {
    const char *sensitivity_json; /* JSON text: the measured sensitivity table and the decision
                                     taken from it; NULL = none recorded (written as null) */
    const char *source_sha256;    /* hex SHA-256 of the source checkpoint; NULL = unknown (null) */
    const char *calib_desc;       /* what the calibration text was; NULL = none (null) */
} fq_modelfile_params;

/* All fields NULL. */
fq_modelfile_params fq_modelfile_default_params(void);

/* Writes the INT6 model file of checkpoint ck quantized as qm (borrowed, unchanged) to path. ck
 * must pass fq_ckpt_validate and qm must match it (n_layer, every linear's N, K, G dividing K, row
 * bytes, abits 6 or 8), else FQ_EINVAL; a tokenizer string that is not valid UTF-8 is FQ_EUNSUP, an
 * fp32 value too large for fp16 FQ_ERANGE, invalid sensitivity_json FQ_EINVAL. The file is written
 * to a temporary name beside path and renamed at the end, so on failure path is left as it was. p
 * may be NULL (defaults). */
int fq_modelfile_write(const char *path, const fq_ckpt *ck, const fq_qmodel *qm,
                       const fq_modelfile_params *p, char *err, size_t err_len);

/* The config as a JSON object (a new reference, caller decrefs), or NULL when out of memory. Keys:
 * arch, n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx, rope_theta, norm_eps,
 * tied_embeddings, rope_style ("half" or "interleaved"). */
json_t *fq_config_to_json(const fq_config *c);

/* The inverse, with validation: every key present with the right type, no unknown key, dimensions
 * positive and bounded, heads a multiple of kv heads, head_dim even, theta and eps positive and
 * finite (FQ_EFORMAT), arch "llama" (FQ_EUNSUP). err names the key; *c is zeroed on failure. */
int fq_config_from_json(const json_t *j, fq_config *c, char *err, size_t err_len);

/* The tokenizer spec as a JSON object (a new reference, caller decrefs), or NULL when out of
 * memory or when a token, merge or the chat template is not valid UTF-8 (JSON strings must be).
 * Keys: model, pre, tokens, token_types, merges, ignore_merges, bos_id, eos_id, pad_id, add_bos,
 * add_eos, chat_template (null when none). */
json_t *fq_tok_spec_to_json(const fq_tok_spec *t);

/* The inverse, with validation (types, array lengths equal, token types 1..6, ids -1 or inside the
 * vocabulary, string lengths); err names the key and index. On success the caller frees *t with
 * fq_tok_spec_free; on failure *t is zeroed. */
int fq_tok_spec_from_json(const json_t *j, fq_tok_spec *t, char *err, size_t err_len);

#endif /* FQ_MODELFILE_H */

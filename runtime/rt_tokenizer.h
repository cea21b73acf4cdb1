/* rt_tokenizer.h — byte-level BPE (GPT-2 / SmolLM2 / Llama-3 style): text to token ids and back.
 *
 * Built from an fq_tok_spec (fq_ckpt.h), which the GGUF reader fills from tokenizer.ggml.* metadata
 * and the HF reader from tokenizer.json. Encoding matches the HF `tokenizers` library: added tokens
 * are matched in the raw text first — control tokens (FQ_TOK_CONTROL, HF's special tokens) over the
 * whole text, then user-defined tokens (FQ_TOK_USER_DEFINED) in the gaps, each pass taking the
 * longest match at the leftmost position — the rest is pre-tokenized (the spec's `pre`: "gpt2"
 * regex, "smollm" = each digit split off then "gpt2", "llama3" regex, plus llama.cpp's GGUF aliases
 * "gpt-2", "llama-bpe", "llama-v3"; hand-written matchers with Unicode classes from generated
 * tables), bytes are mapped to GPT-2's printable unicode alphabet, and each piece is merged by
 * merge rank (ignore_merges: a piece that is a whole vocab entry is taken as is). Invalid UTF-8
 * input is first repaired the way Python's bytes.decode('utf-8', 'replace') does (each maximal
 * invalid subpart becomes U+FFFD), so raw bytes give the same ids as HF on the decoded string.
 * decode(encode(x)) == x for valid UTF-8 whose bytes all have a token (a byte missing from the
 * vocabulary is dropped, as HF's BPE without an unk token does: SmolLM2 lacks 04 06 13 14 16 1D).
 *
 * Token texts: normal tokens are in the byte-level alphabet (as in tokenizer.json's vocab and
 * GGUF); control and user-defined tokens are plain UTF-8 (as GGUF stores them), matched and decoded
 * as they are. A normal token with a character outside the alphabet decodes to its text as is.
 * Thread safety: a tokenizer is immutable after create; every call may run on any thread at once.
 */
#ifndef RT_TOKENIZER_H
#define RT_TOKENIZER_H

#include "fq_ckpt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_tokenizer rt_tokenizer;

/* Builds a tokenizer; the spec is only borrowed during the call. *out is caller-owned. Errors:
 * FQ_EUNSUP for a model other than "gpt2" or an unknown `pre`, FQ_EFORMAT for an inconsistent spec
 * (a merge naming a token missing from the vocabulary, BOS/EOS out of range), FQ_ENOMEM. */
int rt_tokenizer_create(const fq_tok_spec *spec, rt_tokenizer **out, char *err, size_t err_len);
void rt_tokenizer_destroy(rt_tokenizer *tok); /* NULL is a no-op */

typedef struct rt_encode_params {
    bool add_special;   /* add BOS/EOS as the spec says (add_bos / add_eos); default true */
    bool parse_special; /* match control-token text in the input; default true (as HF). When
                           false it is encoded as plain text (user-defined tokens still match) */
} rt_encode_params;

rt_encode_params rt_encode_default_params(void);

/* Encodes len bytes of text (params NULL = the defaults). On success *ids is a malloc'd array of
 * *n_ids ids (caller frees; may be non-NULL with *n_ids == 0). */
int rt_tokenizer_encode(const rt_tokenizer *tok, const char *text, size_t len,
                        const rt_encode_params *params, int32_t **ids, size_t *n_ids, char *err,
                        size_t err_len);

/* Decodes ids to UTF-8 bytes (a sequence cut inside a character decodes its bytes as they are; HF
 * would show U+FFFD there). Control tokens decode to their text unless skip_special drops them.
 * On success *text is malloc'd and NUL-terminated (caller frees) and *len excludes the NUL.
 * Out-of-range ids are an FQ_ERANGE error. */
int rt_tokenizer_decode(const rt_tokenizer *tok, const int32_t *ids, size_t n_ids,
                        bool skip_special, char **text, size_t *len, char *err, size_t err_len);

/* The raw bytes of one token's text (after undoing the byte-level mapping), for streaming decode:
 * writes up to cap bytes into buf and returns the full length, or a negative FQ_E* code. */
int rt_tokenizer_token_bytes(const rt_tokenizer *tok, int32_t id, char *buf, size_t cap);

/* Debugging and tests: the pieces encode() would hand to BPE, without merging. *ends is a malloc'd
 * array (caller frees; may be non-NULL with *n_ends == 0) of the increasing byte offsets at which
 * the pieces end, matched added tokens included as pieces of their own; the last is len. text must
 * be valid UTF-8 (FQ_EINVAL otherwise). */
int rt_tokenizer_split(const rt_tokenizer *tok, const char *text, size_t len, bool parse_special,
                       size_t **ends, size_t *n_ends, char *err, size_t err_len);

int32_t rt_tokenizer_n_vocab(const rt_tokenizer *tok);
int32_t rt_tokenizer_bos(const rt_tokenizer *tok); /* -1 when none */
int32_t rt_tokenizer_eos(const rt_tokenizer *tok); /* -1 when none */
bool rt_tokenizer_is_special(const rt_tokenizer *tok, int32_t id);

#endif /* RT_TOKENIZER_H */

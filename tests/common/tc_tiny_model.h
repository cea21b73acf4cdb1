/* tc_tiny_model.h — generates a tiny random LLaMA model for fast tests, as a GGUF file and as an HF
 * safetensors directory holding the same weights.
 *
 * The tokenizer is a real byte-level BPE: the 256 byte tokens in GPT-2's unicode form, a handful of
 * merges for common English pieces, and three special tokens (<|endoftext|>, <|im_start|>,
 * <|im_end|>). The GGUF copy stores q/k rows permuted for interleaved RoPE (as llama.cpp's
 * converter does) and says so; the HF copy keeps rotate-half rows. Both must give the same logits.
 */
#ifndef TC_TINY_MODEL_H
#define TC_TINY_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tc_tiny_params {
    int32_t n_layer;   /* default 2 */
    int32_t n_embd;    /* default 64 */
    int32_t n_ff;      /* default 96 */
    int32_t n_head;    /* default 4 */
    int32_t n_head_kv; /* default 2 */
    float rope_theta;  /* default 10000 */
    bool tied;         /* default true */
    uint64_t seed;     /* default 1 */
} tc_tiny_params;

tc_tiny_params tc_tiny_default_params(void);

/* Writes DIR/tiny.gguf and the HF directory DIR/hf/ (config.json, model.safetensors,
 * tokenizer.json, tokenizer_config.json). Returns 0 or -1. */
int tc_tiny_model_write(const char *dir, const tc_tiny_params *p);

/* Number of tokens of the tiny tokenizer (= the model's vocabulary). */
int32_t tc_tiny_n_vocab(void);

/* Makes a fresh temporary directory (mkdtemp under $TMPDIR or /tmp) into buf; 0 or -1. */
int tc_mkdtemp(char *buf, size_t len);

/* Removes a directory tree made by tc_mkdtemp. */
void tc_rmtree(const char *dir);

#endif /* TC_TINY_MODEL_H */

/* fq_ggml.h — ggml tensor types as GGUF numbers them: block geometry, names, and dequantization.
 *
 * A ggml tensor row is a sequence of blocks; each block encodes `block_size` values in `type_size`
 * bytes (1 value per "block" for the plain float types). This module knows the geometry and name of
 * every type id GGUF defines (so an error can say "IQ2_XXS is not supported" rather than "type 16")
 * and decodes the block layouts a LLaMA checkpoint commonly uses to fp32: F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. Blocks are read byte-wise, so the source needs no
 * alignment. The host is assumed little-endian, like GGUF files.
 * Thread safety: every function is pure and may be called from any thread.
 */
#ifndef FQ_GGML_H
#define FQ_GGML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tensor type ids, numbered as in GGUF tensor infos (ids 4, 5, 31-33 and 36-38 are retired). */
typedef enum {
    FQ_GGML_F32 = 0,
    FQ_GGML_F16 = 1,
    FQ_GGML_Q4_0 = 2,
    FQ_GGML_Q4_1 = 3,
    FQ_GGML_Q5_0 = 6,
    FQ_GGML_Q5_1 = 7,
    FQ_GGML_Q8_0 = 8,
    FQ_GGML_Q8_1 = 9,
    FQ_GGML_Q2_K = 10,
    FQ_GGML_Q3_K = 11,
    FQ_GGML_Q4_K = 12,
    FQ_GGML_Q5_K = 13,
    FQ_GGML_Q6_K = 14,
    FQ_GGML_Q8_K = 15,
    FQ_GGML_IQ2_XXS = 16,
    FQ_GGML_IQ2_XS = 17,
    FQ_GGML_IQ3_XXS = 18,
    FQ_GGML_IQ1_S = 19,
    FQ_GGML_IQ4_NL = 20,
    FQ_GGML_IQ3_S = 21,
    FQ_GGML_IQ2_S = 22,
    FQ_GGML_IQ4_XS = 23,
    FQ_GGML_I8 = 24,
    FQ_GGML_I16 = 25,
    FQ_GGML_I32 = 26,
    FQ_GGML_I64 = 27,
    FQ_GGML_F64 = 28,
    FQ_GGML_IQ1_M = 29,
    FQ_GGML_BF16 = 30,
    FQ_GGML_TQ1_0 = 34,
    FQ_GGML_TQ2_0 = 35,
    FQ_GGML_MXFP4 = 39,
    FQ_GGML_TYPE_END /* one past the largest id this module knows */
} fq_ggml_type;

/* Values per block (1 for F32/F16/BF16, 32 for Q*_0/Q*_1, 256 for the K-quants); 0 when the id is
 * unknown. */
int64_t fq_ggml_block_size(int type);

/* Bytes per block; 0 when the id is unknown. */
size_t fq_ggml_type_size(int type);

/* Short name such as "Q4_K"; "unknown" for an id this module does not know. Never NULL. */
const char *fq_ggml_type_name(int type);

/* True when fq_ggml_dequant decodes this type. */
bool fq_ggml_can_dequant(int type);

/* Bytes that n values of this type occupy. Returns 0 and sets *nbytes, or FQ_EUNSUP (unknown type),
 * FQ_EINVAL (n negative or not a multiple of the block size) or FQ_ERANGE (size_t overflow). */
int fq_ggml_nbytes(int type, int64_t n, size_t *nbytes);

/* Decodes n values (a multiple of the block size) from src (fq_ggml_nbytes(type, n) bytes, any
 * alignment; borrowed) into dst ([n] fp32, caller-owned). Returns 0, FQ_EUNSUP for a type this
 * module cannot decode, or FQ_EINVAL for a bad n. */
int fq_ggml_dequant(int type, const void *src, float *dst, int64_t n);

#endif /* FQ_GGML_H */

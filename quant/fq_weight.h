/* fq_weight.h — FlexQ weight quantization: every decoder linear of a checkpoint to packed INT6.
 *
 * Per output row n and group g of G input channels: s = fp16(clamp(max|W| / 31, 1e-5, 1e4)), then
 * q = clamp(round_half_even(W / s), -32, 31) using that fp16 scale (so s * q is exactly the
 * dequantized weight), codes packed as fq_pack.h says. No calibration data is needed.
 * Thread safety: pure functions over caller memory; quantizing a checkpoint uses worker threads.
 */
#ifndef FQ_WEIGHT_H
#define FQ_WEIGHT_H

#include "fq_ckpt.h"

#include <stddef.h>
#include <stdint.h>

/* The seven decoder linears of a LLaMA block, in file order. */
typedef enum {
    FQ_LIN_Q = 0,
    FQ_LIN_K,
    FQ_LIN_V,
    FQ_LIN_O,
    FQ_LIN_GATE,
    FQ_LIN_UP,
    FQ_LIN_DOWN,
    FQ_LIN_COUNT
} fq_lin_type;

/* Canonical suffix of a linear type: "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
 * "ffn_up", "ffn_down". */
const char *fq_lin_name(fq_lin_type t);

/* Rows (n_out) and columns (n_in) of linear type t under a config. */
void fq_lin_shape(const fq_config *c, fq_lin_type t, int64_t *n_out, int64_t *n_in);

/* One quantized linear. */
typedef struct fq_qlinear {
    int64_t n_out;     /* rows N */
    int64_t n_in;      /* columns K */
    int32_t group;     /* G */
    int64_t row_bytes; /* fq_pack_row_bytes(K) */
    uint8_t *packed;   /* [N, row_bytes], owned */
    uint16_t *scales;  /* [N, K / G] fp16 bits, owned */
    int32_t abits;     /* activation bits for this linear: 6 or 8 */
} fq_qlinear;

/* All quantized linears of a model: lin[layer * FQ_LIN_COUNT + type]. */
typedef struct fq_qmodel {
    int32_t n_layer;
    int32_t group_request; /* what was asked: 0 = auto (128, else 64, else 32), or 128/64/32 */
    fq_qlinear *lin;       /* [n_layer * FQ_LIN_COUNT], owned */
} fq_qmodel;

/* fp16 scale for a group whose largest magnitude is absmax. */
uint16_t fq_weight_scale(float absmax);

/* Quantizes W[n, k] with group size g (which must divide k): packed [n, fq_pack_row_bytes(k)] and
 * scales [n, k / g], both caller-allocated. */
void fq_weight_quantize(const float *w, int64_t n, int64_t k, int32_t g, uint8_t *packed,
                        uint16_t *scales);

/* The inverse: w[n, k] = s * q. */
void fq_weight_dequantize(const uint8_t *packed, const uint16_t *scales, int64_t n, int64_t k,
                          int32_t g, float *w);

/* Quantizes every decoder linear of ck (group_request: 0 = auto, else 128/64/32, which must divide
 * every K) with abits 8 everywhere; progress(ud, done, total, name) is called after each linear
 * when not NULL. On success *out is caller-owned (fq_qmodel_destroy). */
typedef void (*fq_progress_fn)(void *ud, int64_t done, int64_t total, const char *name);
int fq_qmodel_quantize(const fq_ckpt *ck, int32_t group_request, fq_progress_fn progress, void *ud,
                       fq_qmodel **out, char *err, size_t err_len);
void fq_qmodel_destroy(fq_qmodel *qm); /* NULL is a no-op */

#endif /* FQ_WEIGHT_H */

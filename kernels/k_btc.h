/* k_btc.h — the paper-faithful binary tensor-core (BTC) INT6 GEMM: the comparison path.
 *
 * FlexQ's own kernel splits both operands into bit planes of their offset-binary codes (weights
 * u_w = q_w + 32, 6 planes; activations u_x = q_x + 2^(bits-1), 6 or 8 planes) and multiplies plane
 * pairs with `mma ... .b1 ... and.popc`, weighting each pair by 2^(i+j); per group the signed sum
 * is recovered from the unsigned one with the row/column code sums. The result is the same function
 * as k_gemm.h's (exact integer group sums, fp32 scales per group). Used by the benchmark side by
 * side; never the default on Hopper (DESIGN §3). Groups must be multiples of 128 here: g is 128,
 * 256 or 512 (anything else is refused with -1, and the size functions return 0).
 * All pointers are device pointers; calls are asynchronous on `stream`. Return 0, or -1
 * (FQ_EINVAL) for bad arguments or a failed launch. Results are deterministic (no atomics; the fp32
 * sum over groups may be split over k in a fixed order, so results differ from rt_cpu_matmul_q6
 * only by fp32 rounding, and are bit-identical to it for m > 128). Thread safety: any host thread;
 * the caller orders the uses of a workspace and of a weight buffer (one stream, for instance).
 */
#ifndef K_BTC_H
#define K_BTC_H

#include "k_gemm.h"

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Weights repacked into bit planes (made once, from the packed INT6 form). */
typedef struct k_btc_w {
    const void *buf;    /* the planes and per-group code sums, inside the caller's buffer */
    const uint16_t *sw; /* [n, k / g] fp16 scales (borrowed from the k_w6) */
    int n, k, g;
} k_btc_w;

/* Bytes of the repacked form of w; 0 for bad arguments. */
size_t k_btc_weight_bytes(const k_w6 *w);
/* Repacks w into buf (device, bytes >= k_btc_weight_bytes(w), 256-byte aligned) and fills out
 * (out->buf = buf and out->sw = w->sw are borrowed: both must outlive out). Asynchronous: the
 * planes are ready for the k_btc_gemm calls ordered after this one. w->packed 16-byte aligned,
 * w->row_bytes a multiple of 16 (k_gemm.h). */
int k_btc_pack_weights(const k_w6 *w, void *buf, size_t bytes, k_btc_w *out, cudaStream_t stream);

/* Workspace for the activations' bit planes of m rows at `bits` (6 or 8); 0 for bad arguments.
 * Grows with m and bits: the size for the largest m at 8 bits serves every call. */
size_t k_btc_ws_bytes(int m, int k, int g, int bits);
/* y[mi * ldy + n] as k_gemm.h, activation codes qx of `bits` bits (codes within that range:
 * [-32, 31] for 6, any int8 for 8); splits qx into planes in ws first (part of the call).
 * qx [m, k] 16-byte aligned; sx [m, k / g] fp32; ws 16-byte aligned with
 * ws_bytes >= k_btc_ws_bytes(m, k, g, bits); ldy >= n; any m >= 1. */
int k_btc_gemm(const int8_t *qx, const float *sx, int m, int bits, const k_btc_w *w, float *y,
               long ldy, void *ws, size_t ws_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_BTC_H */

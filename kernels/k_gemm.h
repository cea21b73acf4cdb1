/* k_gemm.h — the INT6 GEMMs on INT8 tensor cores (host-side, C-callable contract).
 *
 * All of them compute, for a linear with packed INT6 weights (fq_pack.h layout, fp16 scales per
 * row and group) and activation codes quantized per token and group (fq_act.h; 8-bit codes for
 * A8, codes in [-32, 31] for A6 — the kernels are the same, A6 is only a narrower range):
 *   y[mi, n] = sum over groups gi of sx[mi, gi] * f32(sw[n, gi]) * d[mi, n, gi],
 *   d[mi, n, gi] = sum over k in group gi of qx[mi, k] * q_w[n, k]   (exact, int32)
 * The integer group sums are exact; the fp32 sum over groups may run in any order (split-K), so
 * results differ from rt_cpu_matmul_q6 (rt_cpu_int6.h) only by fp32 rounding. With unit scales and
 * group sums whose absolute total stays under 2^24 the result is exact and equals the CPU's.
 *
 * Common arguments: qx [m, k] int8, row stride k (16-byte aligned); sx [m, k / g] fp32; y written
 * at y[mi * ldy + n] (fp32; ldy >= n; lets q/k/v or gate/up write column slices of one buffer).
 * All pointers are device pointers; calls are asynchronous on `stream` and never synchronize.
 * Return 0, or -1 (FQ_EINVAL) for bad arguments or a failed launch. Thread safety: any host
 * thread; the caller orders uses of a workspace.
 */
#ifndef K_GEMM_H
#define K_GEMM_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One linear's INT6 weights on the device. */
typedef struct k_w6 {
    const uint8_t *packed; /* [n, row_bytes], 16-byte aligned */
    const uint16_t *sw;    /* [n, k / g] fp16 bits */
    long row_bytes;        /* multiple of 16, >= fq_pack_row_bytes(k) */
    int n;                 /* output features */
    int k;                 /* input features, a multiple of 32 */
    int g;                 /* group: 32, 64, 128, 256 or 512, dividing k */
} k_w6;

/* The argument contract every INT6 GEMM here checks first: non-NULL pointers, 1 <= m <= max_m,
 * n >= 1, k a positive multiple of 32, g in {32, 64, 128, 256, 512} dividing k, row_bytes a
 * multiple of 16 covering k, ldy >= n, qx and packed 16-byte aligned, sx, sw and y aligned to their
 * element size. Returns 1 when all hold, else 0. */
int k_gemm_w6_args_ok(const int8_t *qx, const float *sx, int m, int max_m, const k_w6 *w,
                      const float *y, long ldy);

/* Decode: m in 1..K_GEMM_DECODE_MAX_M, mma.sync m16n8k32 s8 with the weights as the 16-row
 * operand, split-K over the SMs. ws: device workspace of k_gemm_w6_decode_ws_bytes(w, m) bytes
 * (may be NULL when that is 0). */
#define K_GEMM_DECODE_MAX_M 64
size_t k_gemm_w6_decode_ws_bytes(const k_w6 *w, int m);
int k_gemm_w6_mma_decode(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                         long ldy, void *ws, size_t ws_bytes, cudaStream_t stream);

/* Decode, second design: registers only (no shared-memory staging, no clusters): one block per
 * 16-row tile, its warps splitting K, partials summed in shared memory in a fixed order
 * (deterministic; k_gemm_w6_gemv_ws_bytes is 0 and ws is unused). m in 1..K_GEMM_DECODE_MAX_M.
 * m-invariant: a token's output row is bit for bit the same whatever m and the other rows are
 * (the split of K depends on n, k, g and the device only). */
size_t k_gemm_w6_gemv_ws_bytes(const k_w6 *w, int m);
int k_gemm_w6_gemv(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y, long ldy,
                   void *ws, size_t ws_bytes, cudaStream_t stream);

/* Prefill: any m >= 1 (meant for m > 64), tiles staged in shared memory, mma.sync s8. */
int k_gemm_w6_mma_prefill(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                          long ldy, cudaStream_t stream);

/* Prefill with wgmma (sm_90a only; returns -1 on other builds or devices). Any m >= 1. */
int k_gemm_w6_wgmma(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y, long ldy,
                    cudaStream_t stream);

/* The GEMM the runtime calls: picks the decode kernel for small m and the fastest prefill kernel
 * available for large m. ws as for the decode kernel (k_gemm_w6_ws_bytes covers every m up to
 * max_m). */
size_t k_gemm_w6_ws_bytes(const k_w6 *w, int max_m);
int k_gemm_w6(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y, long ldy, void *ws,
              size_t ws_bytes, cudaStream_t stream);

/* The prefill kernel k_gemm_w6 uses for m >= 64 (wgmma where the device and build have it, else
 * the mma.sync one), for any m >= 1: rows computed by it come out the same whatever m is. */
int k_gemm_w6_prefill(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y, long ldy,
                      cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_GEMM_H */

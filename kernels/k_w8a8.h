/* k_w8a8.h — the W8A8 comparison mode's own kernels (host-side, C-callable contract): per-row
 * int8 quantization (activations per token, weights per output channel) and the epilogue that
 * scales cuBLAS's int32 products. The GEMM itself is cuBLAS int8 (the SmoothQuant-style baseline).
 *
 * Quantization follows fq_act.h with one group per row, bit for bit given the same fp32 input:
 * amax = max |x[r, :]|, s[r] = amax / 127, inv = 127 / amax (0 when amax is 0),
 * q = clamp(rint(x * inv), -128, 127), NaN to 0. All pointers are device pointers; calls are
 * asynchronous on `stream`. Return 0, or -1 (FQ_EINVAL) for bad arguments or a failed launch.
 * Thread safety: any host thread.
 */
#ifndef K_W8A8_H
#define K_W8A8_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* q [T, k] int8 and s [T] fp32 from x [T, k] fp32 (k >= 1). */
int k_quant_rows_i8(const float *x, int T, int k, int8_t *q, float *s, cudaStream_t stream);

/* y[m, ldy] columns 0..n: y[i, j] = (sx[i] * sw[j]) * (float)acc[i * n + j] (acc int32 [m, n]). */
int k_w8a8_epilogue(const int32_t *acc, int m, int n, const float *sx, const float *sw, float *y,
                    long ldy, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_W8A8_H */

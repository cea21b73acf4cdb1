/* k_gemm_w6.cu — the INT6 GEMM the runtime calls (k_gemm.h): picks a kernel by the number of
 * tokens m, from the H100 benchmarks (tests/bench/results/gemm-h100-2026-11-25.json and
 * gemm-mid-h100-2026-11-25.json, which times both decode kernels at m = 16..64 on every shape):
 *   m < 64    k_gemm_w6_gemv (registers only): fastest on every shape at m <= 16 and on 11-15 of
 *             the 16 shapes at m = 20..48 (the 16 shapes' total time 13 % under the cluster
 *             kernel's over m = 16..64). It is m-invariant per row, so every decode step (batch
 *             below 64) gives a sequence the same result whatever else is in the batch; the
 *             cluster kernel (k_gemm_w6_mma_decode), a little faster at m = 49..63, would not be.
 *   m >= 64   k_gemm_w6_wgmma where the device and build have it, else k_gemm_w6_mma_prefill
 *             (wgmma is m-invariant per row too: groups folded in ascending order, one accumulator
 *             per output — but in another order than gemv's K-range split).
 */
#include "k_gemm.h"

#include <cuda_runtime.h>
#include <stdint.h>

#define K_GEMM_GEMV_MAX_M    63
#define K_GEMM_PREFILL_MIN_M 64

static bool k_misaligned(const void *p, uintptr_t align)
{
    return ((uintptr_t)p & (align - 1)) != 0;
}

extern "C" int k_gemm_w6_args_ok(const int8_t *qx, const float *sx, int m, int max_m, const k_w6 *w,
                                 const float *y, long ldy)
{
    if (!qx || !sx || !w || !y || !w->packed || !w->sw || m < 1 || m > max_m)
        return 0;
    const int n = w->n, k = w->k, g = w->g;
    if (n < 1 || k < 32 || k % 32 != 0 || ldy < n)
        return 0;
    if ((g != 32 && g != 64 && g != 128 && g != 256 && g != 512) || k % g != 0)
        return 0;
    if (w->row_bytes % 16 != 0 || w->row_bytes < (long)(k + 63) / 64 * 48)
        return 0;
    return !k_misaligned(qx, 16) && !k_misaligned(w->packed, 16) && !k_misaligned(sx, 4) &&
           !k_misaligned(w->sw, 2) && !k_misaligned(y, 4);
}

extern "C" size_t k_gemm_w6_ws_bytes(const k_w6 *w, int max_m)
{
    size_t most = 0;
    for (int m = 1; m <= max_m && m < K_GEMM_PREFILL_MIN_M; m++) {
        const size_t b = m <= K_GEMM_GEMV_MAX_M ? k_gemm_w6_gemv_ws_bytes(w, m)
                                                : k_gemm_w6_decode_ws_bytes(w, m);
        most = b > most ? b : most;
    }
    return most;
}

extern "C" int k_gemm_w6(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                         long ldy, void *ws, size_t ws_bytes, cudaStream_t stream)
{
    if (m >= 1 && m <= K_GEMM_GEMV_MAX_M)
        return k_gemm_w6_gemv(qx, sx, m, w, y, ldy, ws, ws_bytes, stream);
    if (m > K_GEMM_GEMV_MAX_M && m < K_GEMM_PREFILL_MIN_M)
        return k_gemm_w6_mma_decode(qx, sx, m, w, y, ldy, ws, ws_bytes, stream);
    return k_gemm_w6_prefill(qx, sx, m, w, y, ldy, stream);
}

extern "C" int k_gemm_w6_prefill(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                                 long ldy, cudaStream_t stream)
{
    if (k_gemm_w6_wgmma(qx, sx, m, w, y, ldy, stream) == 0)
        return 0;
    return k_gemm_w6_mma_prefill(qx, sx, m, w, y, ldy, stream);
}

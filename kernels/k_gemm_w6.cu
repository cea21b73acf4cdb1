/* k_gemm_w6.cu — the INT6 GEMM the runtime calls (k_gemm.h): picks a kernel by the number of
 * tokens m, from the H100 benchmark (tests/bench/results/gemm-h100-2026-11-25.json):
 *   m <= 16       k_gemm_w6_gemv (registers only; fastest there on every shape);
 *   16 < m < 64   k_gemm_w6_mma_decode (shared-memory staging; ahead of gemv at m = 32 on most
 *                 shapes);
 *   m >= 64       k_gemm_w6_wgmma where the device and build have it, else k_gemm_w6_mma_prefill.
 */
#include "k_gemm.h"

#include <cuda_runtime.h>

#define K_GEMM_GEMV_MAX_M    16
#define K_GEMM_PREFILL_MIN_M 64

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
    if (k_gemm_w6_wgmma(qx, sx, m, w, y, ldy, stream) == 0)
        return 0;
    return k_gemm_w6_mma_prefill(qx, sx, m, w, y, ldy, stream);
}

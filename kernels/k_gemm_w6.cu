/* k_gemm_w6.cu — the INT6 GEMM the runtime calls (k_gemm.h): the register-streaming decode kernel
 * (k_gemm_w6_gemv) for small m, a prefill kernel for large m (wgmma where the device and build have
 * it, else mma.sync).
 *
 * The crossover is where the prefill kernels' tiles start to pay; K_GEMM_PREFILL_MIN_M is set from
 * the benchmark (tests/bench/results/gemm-*.json).
 */
#include "k_gemm.h"

#include <cuda_runtime.h>

#define K_GEMM_PREFILL_MIN_M 65

extern "C" size_t k_gemm_w6_ws_bytes(const k_w6 *w, int max_m)
{
    size_t most = 0;
    const int top = max_m < K_GEMM_PREFILL_MIN_M ? max_m : K_GEMM_PREFILL_MIN_M - 1;
    for (int m = 1; m <= top && m <= K_GEMM_DECODE_MAX_M; m++) {
        const size_t b = k_gemm_w6_gemv_ws_bytes(w, m);
        most = b > most ? b : most;
    }
    return most;
}

extern "C" int k_gemm_w6(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                         long ldy, void *ws, size_t ws_bytes, cudaStream_t stream)
{
    if (m >= 1 && m < K_GEMM_PREFILL_MIN_M && m <= K_GEMM_DECODE_MAX_M)
        return k_gemm_w6_gemv(qx, sx, m, w, y, ldy, ws, ws_bytes, stream);
    if (k_gemm_w6_wgmma(qx, sx, m, w, y, ldy, stream) == 0)
        return 0;
    return k_gemm_w6_mma_prefill(qx, sx, m, w, y, ldy, stream);
}

/* k.h — the host-side contract of the CUDA kernels (C-callable). Only built when nvcc is present.
 */
#ifndef K_H
#define K_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices usable by this process; 0 when there is no driver or no GPU (never an
 * error: GPU tests call this to decide to skip). Any thread. */
int k_device_count(void);

/* The calling thread's current device and its multiprocessor count, for the launchers' grid plans:
 * 0, or -1 with the CUDA error cleared when either query fails (or reports no SMs). Any thread. */
int k_device_current(int *dev, int *sms);

/* Writes "NAME (sm_XY, N SMs, M MiB)" of device `dev` into buf; returns 0 or a negative FQ_E* code.
 * Any thread. */
int k_device_describe(int dev, char *buf, unsigned long buf_len);

/* Decode GEMM on stream (asynchronous; device pointers), m <= 16:
 *   y[m, n] = sum over groups gi ascending of (sx[m, gi] * f32(sw[n, gi])) * (float)d[m, n, gi],
 * d the exact int32 sum over group gi of qx[m, k] * q_w[n, k] — bit for bit rt_cpu_matmul_q6
 * (rt_cpu_int6.h). qx [m, k] int8 (16-byte aligned), sx [m, k / g] fp32, packed [n, row_bytes] in
 * the fq_pack.h layout (16-byte aligned, row_bytes a multiple of 16 >= fq_pack_row_bytes(k)), sw
 * [n, k / g] fp16 bits, y [m, n] fp32 (written). g is 32, 64, 128, 256 or 512 and divides k.
 * Returns 0, or -1 (FQ_EINVAL) for bad arguments or a failed launch. CUDA cores only (dp4a). */
int k_gemm_w6_decode(const int8_t *qx, const float *sx, int m, int k, int g, const uint8_t *packed,
                     const uint16_t *sw, long row_bytes, int n, float *y, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_H */

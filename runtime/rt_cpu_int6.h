/* rt_cpu_int6.h — the CPU backend's integer GEMM: int8 activation codes times packed INT6 weights.
 *
 * Internal to runtime/ (the CPU backend and its tests). Weights are in the layout of fq_pack.h
 * with fp16 scales per (row, group) as fq_weight.h makes them; activations are int8 codes with fp32
 * scales per (token, group) as fq_act.h makes them (6- or 8-bit codes alike). Must be called from
 * the pool's owner thread; the work is spread over the pool.
 */
#ifndef RT_CPU_INT6_H
#define RT_CPU_INT6_H

#include "rt_pool.h"

#include <stdint.h>

/* y[m, n] = sum over groups gi = 0, 1, ... of (sx[m, gi] * f32(sw[n, gi])) * (float)d[m, n, gi],
 * where d[m, n, gi] = sum over k in group gi of qx[m, k] * q_w[n, k] is exact in int32.
 *   qx [m, k] int8 codes (any int8 value), sx [m, k / g] fp32,
 *   packed [n, row_bytes] (row_bytes >= fq_pack_row_bytes(k)), sw [n, k / g] fp16 bits,
 *   y [m, n] fp32, written (not accumulated into).
 * g divides k and is 32, 64, 128, 256 or 512.
 *
 * The floating-point order, which the CUDA kernels are compared against bit for bit: per (m, n), in
 * IEEE fp32 with round to nearest even and no fused multiply-add,
 *   acc = 0.0f;
 *   for gi = 0 .. k/g - 1 ascending:
 *       acc = acc + (sx[m, gi] * f32(sw[n, gi])) * (float)d[m, n, gi];   (three roundings)
 *   y[m, n] = acc;
 * (float)d is exact: |d| <= 128 * 32 * g < 2^24. */
void rt_cpu_matmul_q6(rt_pool *pool, const int8_t *qx, const float *sx, int64_t m, int64_t k,
                      int32_t g, const uint8_t *packed, const uint16_t *sw, int64_t row_bytes,
                      int64_t n, float *y);

/* The W8A8 comparison mode: y[m, n] = (sx[m] * sw[n]) * (float)d[m, n], d[m, n] = sum over k of
 * qx[m, k] * w8[n, k] exact in int32 (k <= 2^17). qx [m, k] int8 with one fp32 scale per row (sx
 * [m]), w8 [n, k] int8 with one per output channel (sw [n]); y [m, n] fp32, written. The
 * CUDA backend (cuBLAS int8 + k_w8a8_epilogue) rounds the same way. */
void rt_cpu_matmul_w8a8(rt_pool *pool, const int8_t *qx, const float *sx, int64_t m, int64_t k,
                        const int8_t *w8, const float *sw, int64_t n, float *y);

#endif /* RT_CPU_INT6_H */

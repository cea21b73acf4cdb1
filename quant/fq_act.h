/* fq_act.h — FlexQ dynamic activation quantization: per token, per group, 6 or 8 bits.
 *
 * The reference the CPU backend uses and the CUDA quantizers must reproduce bit for bit. For each
 * row m and group g of G channels, in fp32 with IEEE rounding:
 *   qmax = 2^(bits-1) - 1 (31 or 127);  amax = max |x|;
 *   s = amax / qmax;   inv = amax > 0 ? qmax / amax : 0;
 *   q = clamp(round_half_even(x * inv), -(qmax + 1), qmax).
 * (x * inv, not x / s: one correctly rounded multiply the GPU repeats exactly.) A group of zeros
 * gets s = 0 and codes 0.
 * Thread safety: pure functions; any thread.
 */
#ifndef FQ_ACT_H
#define FQ_ACT_H

#include <stdint.h>

/* x[m, k] -> q[m, k] int8 codes and s[m, k / g] fp32 scales; g divides k; bits is 6 or 8. */
void fq_act_quantize(const float *x, int64_t m, int64_t k, int32_t g, int bits, int8_t *q,
                     float *s);

#endif /* FQ_ACT_H */

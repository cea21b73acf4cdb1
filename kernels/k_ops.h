/* k_ops.h — the forward pass's small fused kernels (host-side, C-callable contract).
 *
 * Activations are fp32 row-major on the device; the residual stream x is [T, e]. Quantizing
 * outputs follow fq_act.h bit for bit given the same fp32 inputs (s = amax / qmax, inv = qmax /
 * amax, q = clamp(rint(x * inv)), codes int8 [T, k], scales fp32 [T, k / g]); each producer writes
 * codes and scales directly (no second pass over the activations). Every output pointer marked
 * "or NULL" may be skipped. All pointers are device pointers; calls are asynchronous on `stream`.
 * Return 0, or -1 (FQ_EINVAL) for bad arguments or a failed launch. Thread safety: any host
 * thread.
 */
#ifndef K_OPS_H
#define K_OPS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x[t, :] = table[ids[t], :] for t < T (table fp32 [n_vocab, e]; ids checked by the caller). */
int k_embed(const float *table, const int32_t *ids, int T, int e, float *x, cudaStream_t stream);

/* The residual add fused with RMSNorm and quantization, one row per block:
 *   if add: x[t] += add[t] (written back to x);
 *   h = x[t] / sqrt(mean(x[t]^2) + eps) * w      (fp32, as rt_cpu_rmsnorm)
 *   hf[t] = h (or NULL); q[t], s[t] = quantize(h, bits, g) (or NULL; bits 6 or 8).
 * e % g == 0 when q is given. */
int k_add_rmsnorm_quant(float *x, const float *add, const float *w, int T, int e, float eps,
                        float *hf, int8_t *q, float *s, int bits, int g, cudaStream_t stream);

/* SwiGLU fused with quantization: gate = gu[t * ld + j], up = gu[t * ld + f + j] (j < f);
 *   h = silu(gate) * up (as rt_cpu_silu_mul); hf [T, f] (or NULL); q [T, f], s [T, f / g]
 *   (or NULL). */
int k_silu_mul_quant(const float *gu, long ld, int T, int f, float *hf, int8_t *q, float *s,
                     int bits, int g, cudaStream_t stream);

/* Quantization alone: x [T, k] -> q [T, k], s [T, k / g]. */
int k_quant(const float *x, int T, int k, int bits, int g, int8_t *q, float *s,
            cudaStream_t stream);

/* RoPE on q and k in place and the KV-cache store. qkv [T, ld]: q at column 0 (n_head * hd),
 * k at n_head * hd (n_kv * hd), v after k. pos [T] positions, slot [T] cache slots. style: 0 =
 * pairs (i, i + hd/2) (HF), 1 = pairs (2i, 2i+1) (GGUF), frequencies as rt_cpu_rope. Writes the
 * rotated k and v as fp16 into k_cache / v_cache [n_slots, n_kv * hd] at row slot[t]. */
int k_rope_kv_store(float *qkv, long ld, int T, const int32_t *pos, const int32_t *slot, int n_head,
                    int n_kv, int hd, float theta, int style, uint16_t *k_cache, uint16_t *v_cache,
                    cudaStream_t stream);

/* The last residual add and the final norm for the R rows whose logits are wanted:
 *   for r < R: t = rows[r]; v = x[t] + (add ? add[t] : 0); out[r] = fp16(rmsnorm(v) * w). */
int k_final_norm_f16(const float *x, const float *add, const int32_t *rows, int R, int e,
                     const float *w, float eps, uint16_t *out, cudaStream_t stream);

/* out[r] = the first index of the largest of logits[r, 0..V) (NaN never wins). */
int k_argmax(const float *logits, int R, int V, int32_t *out, cudaStream_t stream);

/* fp32 -> fp16 (round to nearest even), n elements. */
int k_f32_to_f16(const float *x, long n, uint16_t *y, cudaStream_t stream);

/* y = f32(x): fp16 bits -> fp32, n elements. */
int k_f16_to_f32(const uint16_t *x, long n, float *y, cudaStream_t stream);

/* Dequantizes INT6 weights to fp32 (w6a16): w[n, k] = q_w[n, k] * f32(sw[n, k / g]). */
int k_w6_dequantize(const uint8_t *packed, const uint16_t *sw, long row_bytes, int n, int k, int g,
                    float *w, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* K_OPS_H */

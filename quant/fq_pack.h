/* fq_pack.h — the INT6 weight layout: the single source of truth for how 6-bit codes sit in bytes.
 *
 * Weights of a linear W[N, K] are quantized per row n and per group g of G consecutive input channels
 * (G = 128, or the largest of 64 / 32 dividing K): s[n, g] = max|W[n, k in g]| / 31 (fp16, clamped
 * to [1e-5, 1e4]) and q = clamp(round_half_even(W / s), -32, 31). Codes are stored offset-binary,
 * u = q + 32 in [0, 63], so a 6-bit field never needs sign extension.
 *
 * Packed row layout (the CUDA GEMMs read exactly this; the CPU backend too):
 *   A row holds K_pad = ceil(K / 64) * 64 codes (the padding codes are u = 32, i.e. q = 0) in
 *   K_pad / 64 chunks of 48 bytes, so row_bytes = 0.75 * K_pad, always a multiple of 16 (rows stay
 *   16-byte aligned in a contiguous [N, row_bytes] U8 tensor). Chunk c covers k = 64c .. 64c + 63;
 *   with j = k - 64c:
 *     bytes  0..31, the low plane:  byte i = (u[i] & 15) | (u[i + 32] & 15) << 4      (i < 32)
 *     bytes 32..47, the high plane: byte 32 + i = (u[i] >> 4) | (u[i + 16] >> 4) << 2 |
 *                                   (u[i + 32] >> 4) << 4 | (u[i + 48] >> 4) << 6      (i < 16)
 *   So one 32-bit word of the low plane gives 4 consecutive codes' low nibbles (mask 0x0F0F0F0F) and,
 *   shifted by 4, the 4 codes 32 further on; one word of the high plane gives the top 2 bits of 4
 *   consecutive codes at offsets 0, 16, 32, 48 (shift by 0, 2, 4, 6, mask 0x03030303, then << 4).
 *   Unpacking 4 codes to bytes costs ~3 integer ops; u - 32 per byte gives signed int8.
 * Scales: F16 [N, n_groups] row-major, n_groups = K / G (K must be a multiple of G).
 * Thread safety: pure functions; any thread.
 */
#ifndef FQ_PACK_H
#define FQ_PACK_H

#include <stddef.h>
#include <stdint.h>

#define FQ_PACK_CHUNK 64       /* codes per chunk */
#define FQ_PACK_CHUNK_BYTES 48 /* bytes per chunk */
#define FQ_QMIN (-32)
#define FQ_QMAX 31

/* Group size for input width k: 128, 64 or 32 (the largest dividing k), or 0 if none does. A
 * requested size (128/64/32) is returned when it divides k, else 0; requested 0 means automatic. */
int32_t fq_group_size(int64_t k, int32_t requested);

/* Bytes of one packed row of k codes. */
int64_t fq_pack_row_bytes(int64_t k);

/* Packs k signed codes (each in [-32, 31]) into one row of fq_pack_row_bytes(k) bytes. */
void fq_pack_row(const int8_t *q, int64_t k, uint8_t *row);

/* Unpacks one row back to k signed codes. */
void fq_unpack_row(const uint8_t *row, int64_t k, int8_t *q);

#endif /* FQ_PACK_H */

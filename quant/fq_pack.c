/* fq_pack.c — packs signed 6-bit codes into the chunked low-plane / high-plane layout of fq_pack.h
 * and back; plain scalar loops, the reference every faster unpacker is tested against. */
#include "fq_pack.h"

#include "fq_base.h"

#include <string.h>

#define FQ_PACK_ZERO 32 /* offset-binary code of q = 0, used for padding */

int32_t fq_group_size(int64_t k, int32_t requested)
{
    if (k <= 0)
        return 0;
    if (requested != 0) {
        if (requested != 128 && requested != 64 && requested != 32)
            return 0;
        return k % requested == 0 ? requested : 0;
    }
    static const int32_t sizes[] = {128, 64, 32};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (k % sizes[i] == 0)
            return sizes[i];
    return 0;
}

int64_t fq_pack_row_bytes(int64_t k)
{
    int64_t chunks = (k + FQ_PACK_CHUNK - 1) / FQ_PACK_CHUNK;
    return chunks * FQ_PACK_CHUNK_BYTES;
}

/* One chunk of 64 offset-binary codes u[64] into 48 bytes. */
static void pack_chunk(const uint8_t u[FQ_PACK_CHUNK], uint8_t out[FQ_PACK_CHUNK_BYTES])
{
    for (int i = 0; i < 32; i++)
        out[i] = (uint8_t)((u[i] & 15) | (u[i + 32] & 15) << 4);
    for (int i = 0; i < 16; i++)
        out[32 + i] = (uint8_t)((u[i] >> 4) | (u[i + 16] >> 4) << 2 | (u[i + 32] >> 4) << 4 |
                                (u[i + 48] >> 4) << 6);
}

/* The inverse of pack_chunk. */
static void unpack_chunk(const uint8_t in[FQ_PACK_CHUNK_BYTES], uint8_t u[FQ_PACK_CHUNK])
{
    for (int i = 0; i < 32; i++) {
        u[i] = in[i] & 15;
        u[i + 32] = in[i] >> 4;
    }
    for (int i = 0; i < 16; i++) {
        uint8_t h = in[32 + i];
        u[i] |= (uint8_t)((h & 3) << 4);
        u[i + 16] |= (uint8_t)(((h >> 2) & 3) << 4);
        u[i + 32] |= (uint8_t)(((h >> 4) & 3) << 4);
        u[i + 48] |= (uint8_t)((h >> 6) << 4);
    }
}

void fq_pack_row(const int8_t *q, int64_t k, uint8_t *row)
{
    for (int64_t k0 = 0; k0 < k; k0 += FQ_PACK_CHUNK) {
        uint8_t u[FQ_PACK_CHUNK];
        memset(u, FQ_PACK_ZERO, sizeof u);
        int64_t n = k - k0 < FQ_PACK_CHUNK ? k - k0 : FQ_PACK_CHUNK;
        for (int64_t j = 0; j < n; j++) {
            /* an out-of-range code would spill into its neighbours' bits */
            FQ_ASSERT(q[k0 + j] >= FQ_QMIN && q[k0 + j] <= FQ_QMAX);
            u[j] = (uint8_t)(q[k0 + j] + FQ_PACK_ZERO);
        }
        pack_chunk(u, row + k0 / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES);
    }
}

void fq_unpack_row(const uint8_t *row, int64_t k, int8_t *q)
{
    for (int64_t k0 = 0; k0 < k; k0 += FQ_PACK_CHUNK) {
        uint8_t u[FQ_PACK_CHUNK];
        unpack_chunk(row + k0 / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES, u);
        int64_t n = k - k0 < FQ_PACK_CHUNK ? k - k0 : FQ_PACK_CHUNK;
        for (int64_t j = 0; j < n; j++)
            q[k0 + j] = (int8_t)(u[j] - FQ_PACK_ZERO);
    }
}

/* fq_ggml.c — the ggml type table (block geometry, names) and fp32 decoders for the block layouts.
 *
 * Each decoder walks n_blocks blocks of one layout and writes block_size values per block. Block
 * fields are read byte-wise (little-endian), because blocks such as Q8_0 (34 bytes) sit at odd
 * addresses. Arithmetic is done in fp32 in the order the layout defines: scale = d * sub_scale,
 * value = scale * q - min, so that results are bit-identical to other faithful implementations.
 */
#include "fq_ggml.h"

#include "fq_base.h"

#include <stdint.h>
#include <string.h>

#define QK   32  /* values per block of the Q*_0 / Q*_1 layouts */
#define QK_K 256 /* values per super-block of the K-quants */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fq_ggml.c assumes a little-endian host (F32 tensors are copied as is)"
#endif

typedef void (*dequant_fn)(const uint8_t *src, float *dst, int64_t n_blocks);

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static float rd_f16(const uint8_t *p)
{
    return fq_f16_to_f32(rd16(p));
}

static void dq_f32(const uint8_t *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dq_f16(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = rd_f16(src + 2 * i);
}

static void dq_bf16(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = fq_bf16_to_f32(rd16(src + 2 * i));
}

/* Q8_0: fp16 d, then 32 int8 q; x = d * q. */
static void dq_q8_0(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 34, dst += QK) {
        float d = rd_f16(src);
        const int8_t *q = (const int8_t *)(src + 2);
        for (int j = 0; j < QK; j++)
            dst[j] = d * (float)q[j];
    }
}

/* Q4_0: fp16 d, then 16 bytes of nibbles: low nibble of byte j is value j, high nibble is value
 * j + 16; x = d * (nibble - 8). */
static void dq_q4_0(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 18, dst += QK) {
        float d = rd_f16(src);
        const uint8_t *qs = src + 2;
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = d * (float)((qs[j] & 0x0F) - 8);
            dst[j + QK / 2] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

/* Q4_1: fp16 d, fp16 m, 16 bytes of nibbles as in Q4_0; x = d * nibble + m. */
static void dq_q4_1(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 20, dst += QK) {
        float d = rd_f16(src), m = rd_f16(src + 2);
        const uint8_t *qs = src + 4;
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = d * (float)(qs[j] & 0x0F) + m;
            dst[j + QK / 2] = d * (float)(qs[j] >> 4) + m;
        }
    }
}

/* The fifth bit of value j (0..31) of a Q5 block: bit j of the little-endian 32-bit qh. */
static int q5_high_bit(uint32_t qh, int j)
{
    return (int)((qh >> j) & 1u) << 4;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Q5_0: fp16 d, 32-bit qh (fifth bits), 16 bytes of nibbles; x = d * ((nibble | bit << 4) - 16). */
static void dq_q5_0(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 22, dst += QK) {
        float d = rd_f16(src);
        uint32_t qh = rd32(src + 2);
        const uint8_t *qs = src + 6;
        for (int j = 0; j < QK / 2; j++) {
            int lo = (qs[j] & 0x0F) | q5_high_bit(qh, j);
            int hi = (qs[j] >> 4) | q5_high_bit(qh, j + QK / 2);
            dst[j] = d * (float)(lo - 16);
            dst[j + QK / 2] = d * (float)(hi - 16);
        }
    }
}

/* Q5_1: fp16 d, fp16 m, 32-bit qh, 16 bytes of nibbles; x = d * (nibble | bit << 4) + m. */
static void dq_q5_1(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 24, dst += QK) {
        float d = rd_f16(src), m = rd_f16(src + 2);
        uint32_t qh = rd32(src + 4);
        const uint8_t *qs = src + 8;
        for (int j = 0; j < QK / 2; j++) {
            int lo = (qs[j] & 0x0F) | q5_high_bit(qh, j);
            int hi = (qs[j] >> 4) | q5_high_bit(qh, j + QK / 2);
            dst[j] = d * (float)lo + m;
            dst[j + QK / 2] = d * (float)hi + m;
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block. The 12 bytes hold
 * scales 0-3 and mins 0-3 in the low 6 bits of bytes 0-3 and 4-7; scales/mins 4-7 keep their low
 * 4 bits in the nibbles of bytes 8-11 and their top 2 bits in bits 6-7 of bytes 0-3 / 4-7. */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles. Eight sub-blocks
 * of 32; sub-blocks 2i and 2i+1 share the 32 bytes qs[32i..32i+31] (low, then high nibbles);
 * x = (d * scale) * nibble - (dmin * min). */
static void dq_q4_k(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 144, dst += QK_K) {
        float d = rd_f16(src), dmin = rd_f16(src + 2);
        const uint8_t *scales = src + 4, *qs = src + 16;
        for (int i = 0; i < 4; i++) {
            int sc0, mn0, sc1, mn1;
            k_scale_min(scales, 2 * i, &sc0, &mn0);
            k_scale_min(scales, 2 * i + 1, &sc1, &mn1);
            float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
            float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
            const uint8_t *q = qs + 32 * i;
            float *y = dst + 64 * i;
            for (int l = 0; l < 32; l++) {
                y[l] = d0 * (float)(q[l] & 0x0F) - m0;
                y[l + 32] = d1 * (float)(q[l] >> 4) - m1;
            }
        }
    }
}

/* Q5_K: as Q4_K plus 32 bytes qh before the nibbles: bit 2i of qh[l] is the fifth bit of value l of
 * sub-block 2i, bit 2i+1 that of sub-block 2i+1. */
static void dq_q5_k(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 176, dst += QK_K) {
        float d = rd_f16(src), dmin = rd_f16(src + 2);
        const uint8_t *scales = src + 4, *qh = src + 16, *qs = src + 48;
        for (int i = 0; i < 4; i++) {
            int sc0, mn0, sc1, mn1;
            k_scale_min(scales, 2 * i, &sc0, &mn0);
            k_scale_min(scales, 2 * i + 1, &sc1, &mn1);
            float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
            float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
            const uint8_t *q = qs + 32 * i;
            float *y = dst + 64 * i;
            for (int l = 0; l < 32; l++) {
                int lo = (q[l] & 0x0F) | (((qh[l] >> (2 * i)) & 1) << 4);
                int hi = (q[l] >> 4) | (((qh[l] >> (2 * i + 1)) & 1) << 4);
                y[l] = d0 * (float)lo - m0;
                y[l + 32] = d1 * (float)hi - m1;
            }
        }
    }
}

/* Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, fp16 d. Two halves
 * of 128 values; in half h, value l + 32k (k = 0..3, l = 0..31) takes its low bits from
 * ql[64h + l + 32(k & 1)] (low nibble for k < 2, high nibble otherwise) and its high bits from bits
 * 2k..2k+1 of qh[32h + l]; its scale is scales[8h + 2k + l / 16]; x = (d * scale) * (q - 32). */
static void dq_q6_k(const uint8_t *src, float *dst, int64_t n_blocks)
{
    for (int64_t b = 0; b < n_blocks; b++, src += 210, dst += QK_K) {
        const uint8_t *ql = src, *qh = src + 128;
        const int8_t *scales = (const int8_t *)(src + 192);
        float d = rd_f16(src + 208);
        for (int h = 0; h < 2; h++) {
            for (int k = 0; k < 4; k++) {
                for (int l = 0; l < 32; l++) {
                    uint8_t lbyte = ql[64 * h + l + 32 * (k & 1)];
                    int lo = k < 2 ? (lbyte & 0x0F) : (lbyte >> 4);
                    int hi = (qh[32 * h + l] >> (2 * k)) & 3;
                    float sc = d * (float)scales[8 * h + 2 * k + l / 16];
                    dst[128 * h + 32 * k + l] = sc * (float)((lo | (hi << 4)) - 32);
                }
            }
        }
    }
}

typedef struct {
    const char *name;
    int64_t block_size;
    size_t type_size;
    dequant_fn dequant; /* NULL: known but not decoded */
} ggml_type_info;

static const ggml_type_info type_table[FQ_GGML_TYPE_END] = {
    [FQ_GGML_F32] = {"F32", 1, 4, dq_f32},
    [FQ_GGML_F16] = {"F16", 1, 2, dq_f16},
    [FQ_GGML_Q4_0] = {"Q4_0", QK, 18, dq_q4_0},
    [FQ_GGML_Q4_1] = {"Q4_1", QK, 20, dq_q4_1},
    [FQ_GGML_Q5_0] = {"Q5_0", QK, 22, dq_q5_0},
    [FQ_GGML_Q5_1] = {"Q5_1", QK, 24, dq_q5_1},
    [FQ_GGML_Q8_0] = {"Q8_0", QK, 34, dq_q8_0},
    [FQ_GGML_Q8_1] = {"Q8_1", QK, 36, NULL},
    [FQ_GGML_Q2_K] = {"Q2_K", QK_K, 84, NULL},
    [FQ_GGML_Q3_K] = {"Q3_K", QK_K, 110, NULL},
    [FQ_GGML_Q4_K] = {"Q4_K", QK_K, 144, dq_q4_k},
    [FQ_GGML_Q5_K] = {"Q5_K", QK_K, 176, dq_q5_k},
    [FQ_GGML_Q6_K] = {"Q6_K", QK_K, 210, dq_q6_k},
    [FQ_GGML_Q8_K] = {"Q8_K", QK_K, 292, NULL},
    [FQ_GGML_IQ2_XXS] = {"IQ2_XXS", QK_K, 66, NULL},
    [FQ_GGML_IQ2_XS] = {"IQ2_XS", QK_K, 74, NULL},
    [FQ_GGML_IQ3_XXS] = {"IQ3_XXS", QK_K, 98, NULL},
    [FQ_GGML_IQ1_S] = {"IQ1_S", QK_K, 50, NULL},
    [FQ_GGML_IQ4_NL] = {"IQ4_NL", QK, 18, NULL},
    [FQ_GGML_IQ3_S] = {"IQ3_S", QK_K, 110, NULL},
    [FQ_GGML_IQ2_S] = {"IQ2_S", QK_K, 82, NULL},
    [FQ_GGML_IQ4_XS] = {"IQ4_XS", QK_K, 136, NULL},
    [FQ_GGML_I8] = {"I8", 1, 1, NULL},
    [FQ_GGML_I16] = {"I16", 1, 2, NULL},
    [FQ_GGML_I32] = {"I32", 1, 4, NULL},
    [FQ_GGML_I64] = {"I64", 1, 8, NULL},
    [FQ_GGML_F64] = {"F64", 1, 8, NULL},
    [FQ_GGML_IQ1_M] = {"IQ1_M", QK_K, 56, NULL},
    [FQ_GGML_BF16] = {"BF16", 1, 2, dq_bf16},
    [FQ_GGML_TQ1_0] = {"TQ1_0", QK_K, 54, NULL},
    [FQ_GGML_TQ2_0] = {"TQ2_0", QK_K, 66, NULL},
    [FQ_GGML_MXFP4] = {"MXFP4", QK, 17, NULL},
};

/* The table entry of a known id, or NULL (retired ids have an empty entry). */
static const ggml_type_info *type_info(int type)
{
    if (type < 0 || type >= FQ_GGML_TYPE_END || !type_table[type].name)
        return NULL;
    return &type_table[type];
}

int64_t fq_ggml_block_size(int type)
{
    const ggml_type_info *ti = type_info(type);
    return ti ? ti->block_size : 0;
}

size_t fq_ggml_type_size(int type)
{
    const ggml_type_info *ti = type_info(type);
    return ti ? ti->type_size : 0;
}

const char *fq_ggml_type_name(int type)
{
    const ggml_type_info *ti = type_info(type);
    return ti ? ti->name : "unknown";
}

bool fq_ggml_can_dequant(int type)
{
    const ggml_type_info *ti = type_info(type);
    return ti && ti->dequant;
}

int fq_ggml_nbytes(int type, int64_t n, size_t *nbytes)
{
    const ggml_type_info *ti = type_info(type);
    if (!ti)
        return FQ_EUNSUP;
    if (n < 0 || n % ti->block_size != 0)
        return FQ_EINVAL;
    uint64_t n_blocks = (uint64_t)(n / ti->block_size);
    if (n_blocks > SIZE_MAX / ti->type_size)
        return FQ_ERANGE;
    *nbytes = (size_t)n_blocks * ti->type_size;
    return 0;
}

int fq_ggml_dequant(int type, const void *src, float *dst, int64_t n)
{
    const ggml_type_info *ti = type_info(type);
    if (!ti || !ti->dequant)
        return FQ_EUNSUP;
    if (n < 0 || n % ti->block_size != 0)
        return FQ_EINVAL;
    ti->dequant((const uint8_t *)src, dst, n / ti->block_size);
    return 0;
}

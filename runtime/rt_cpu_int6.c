/* rt_cpu_int6.c — the CPU INT6 x INT8 GEMM: packed 6-bit weights times int8 activation codes, exact
 * int32 sums per group, one scale multiply-add per group in fp32.
 *
 * Design: one pool task per tile of Q6_NT weight rows. A task walks K in blocks of Q6_KB codes; for
 * each block it unpacks its rows once to int16 (and their scales to fp32) in a stack buffer and
 * reuses them for every activation row; activation rows are widened to int16 once per block too,
 * four at a time. The kernels compute 8 dot products at once (4 activation rows x 2 weight rows, or
 * 1 x 8 for decode and row tails) with 16-lane int16 vectors (GCC vector extensions, with an AVX2
 * clone on x86-64).
 *
 * Two tricks keep the int16 arithmetic exact and cheap:
 * - Split order: each span of 32 codes is stored as its 16 even codes, then its 16 odd codes (for
 *   activations that is two shifts of the raw bytes). Both operands use the same order, and a group
 *   (a multiple of 32) is a union of whole spans, so every group sum is unchanged.
 * - Negated weights: the tile holds -q_w in [-31, 32], so a product lies in [-4096, 4064] and an
 *   int16 lane can sum 8 of them (at most 32768 in magnitude, never +32768) — 128 codes — before
 *   it is widened to int32 by adding its two halves. The sign is given back per group.
 * A shuffle tree reduces the 8 accumulators to one int32 vector whose lanes are the 8 group sums;
 * one vector multiply and add per group folds them into the fp32 results, in the order that
 * rt_cpu_int6.h documents.
 */
#include "rt_cpu_int6.h"

#include "fq_base.h"
#include "fq_pack.h"

#include <stdbool.h>
#include <string.h>

typedef uint8_t v16ub __attribute__((vector_size(16)));
typedef uint8_t v32ub __attribute__((vector_size(32)));
typedef int16_t v16h __attribute__((vector_size(32)));
typedef uint16_t v16uh __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RT_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define RT_MULTIVERSION
#endif

/* Helpers of the kernels must be inlined into each clone to get its instruction set; vectors are
 * passed by pointer (by value, 32-byte vectors change the ABI between clones). */
#define Q6_INLINE static inline __attribute__((always_inline))

#if defined(__clang__)
#define SHUF8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define Q6_UNROLL        _Pragma("unroll")
#else
#define SHUF8(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#define Q6_UNROLL        _Pragma("GCC unroll 8")
#endif

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define Q6_HAVE_SHUFFLEVECTOR 1
#endif
#endif
#ifndef Q6_HAVE_SHUFFLEVECTOR
#define Q6_HAVE_SHUFFLEVECTOR 0
#endif

#define Q6_NT         16 /* weight rows per task */
#define Q6_KB         512 /* codes of K per block: the unpacked tile is Q6_NT x Q6_KB int16 = 16 KiB */
#define Q6_SPAN       32  /* codes of one even/odd span: two 16-lane vectors */
#define Q6_WIDEN      128 /* codes an int16 accumulator may sum before widening: 8 per lane */
#define Q6_MR         4   /* activation rows of the 4x2 kernel */
#define Q6_MAX_GROUPS (Q6_KB / Q6_SPAN)

typedef struct q6_task {
    const int8_t *qx;
    const float *sx;
    const uint8_t *packed;
    const uint16_t *sw;
    float *y;
    int64_t m, k, n, row_bytes, n_groups;
    int32_t g;
} q6_task;

/* One block of K, in split order: w[r] = -q_w[n0 + r, k0 ..], s[gl][r] = f32(sw[n0 + r, g0 + gl])
 * (0 for rows past the tile's end), x[i] = the current activation rows' codes. */
typedef struct q6_tile {
    int16_t w[Q6_NT][Q6_KB];
    float s[Q6_MAX_GROUPS][Q6_NT];
    int16_t x[Q6_MR][Q6_KB];
} q6_tile;

/* The operands of a kernel's 8 results: result j is activation row j / 2 times weight row j % 2
 * (4x2), or activation row 0 times weight row j (1x8). */
typedef struct q6_block {
    const int16_t *x[Q6_MR]; /* activation rows in the tile */
    const int16_t *w[8];     /* weight rows in the tile */
    const float *sx[Q6_MR];  /* activation scales, at the block's first group */
    const float *sw;         /* &tile.s[0][first weight row]: 8 (1x8) or 2 (4x2) per group */
    float *y[8];             /* output of result j, or NULL when j is padding */
} q6_block;

/* ---- unpacking to split order ---- */

/* 32 offset-binary codes u (natural order) to the split order, negated: 32 - u = -q. */
Q6_INLINE void split_weights(const v32ub *u, int16_t *out)
{
    v16uh v;
    memcpy(&v, u, sizeof v);
    v16h even = 32 - (v16h)(v & 0xFF), odd = 32 - (v16h)(v >> 8);
    memcpy(out, &even, sizeof even);
    memcpy(out + 16, &odd, sizeof odd);
}

/* 64 codes of one 48-byte chunk, with the plane arithmetic of fq_pack.h on 32 bytes at a time. */
Q6_INLINE void unpack_chunk(const uint8_t *chunk, int16_t *out)
{
    v32ub lo, hh; /* hh = (high plane << 2) | high plane, so that one shift serves two halves */
    v16ub h;
    memcpy(&lo, chunk, sizeof lo);
    memcpy(&h, chunk + 32, sizeof h);
    v16ub h2 = h << 2;
#if Q6_HAVE_SHUFFLEVECTOR
    hh = __builtin_shufflevector(h2, h, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
#else /* slower: the 32-byte load waits for the two 16-byte stores */
    uint8_t bytes[32];
    memcpy(bytes, &h2, 16);
    memcpy(bytes + 16, &h, 16);
    memcpy(&hh, bytes, sizeof hh);
#endif
    v32ub u0 = (lo & 15) | ((hh << 2) & 0x30); /* codes 0..15: h << 4; 16..31: h << 2 */
    v32ub u1 = (lo >> 4) | ((hh >> 2) & 0x30); /* codes 32..47: h; 48..63: h >> 2 */
    split_weights(&u0, out);
    split_weights(&u1, out + 32);
}

RT_MULTIVERSION
static void unpack_rows(const uint8_t *packed, int64_t row_bytes, int rows, int64_t k0, int64_t len,
                        int16_t (*w)[Q6_KB])
{
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = packed + r * row_bytes + k0 / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES;
        for (int64_t j = 0; j < len; j += FQ_PACK_CHUNK)
            unpack_chunk(row + j / FQ_PACK_CHUNK * FQ_PACK_CHUNK_BYTES, &w[r][j]);
    }
}

/* Activation codes x[len] (len a multiple of 32) to int16 in split order. */
RT_MULTIVERSION
static void split_activations(const int8_t *x, int64_t len, int16_t *out)
{
    for (int64_t j = 0; j < len; j += Q6_SPAN) {
        v16h v;
        memcpy(&v, x + j, sizeof v);
        v16h even = (v16h)((v16uh)v << 8) >> 8, odd = v >> 8;
        memcpy(out + j, &even, sizeof even);
        memcpy(out + j + 16, &odd, sizeof odd);
    }
}

/* ---- the 8-result kernels ---- */

/* Sum of the two int16 halves of each int32 lane: 8 exact pair sums of a 16-lane accumulator. */
Q6_INLINE void widen_pairs(const v16h *a, v8i *out)
{
    v8i p = (v8i)*a;
    v8i lo = (v8i)((v8u)p << 16) >> 16;
    *out = lo + (p >> 16);
}

/* d += the vector whose lane j is the sum of all lanes of a[j]. */
Q6_INLINE void reduce8_add(const v16h a[8], v8i *d)
{
    v8i w[8], t[4];
    Q6_UNROLL
    for (int j = 0; j < 8; j++)
        widen_pairs(&a[j], &w[j]);
    Q6_UNROLL
    for (int j = 0; j < 4; j++)
        t[j] = SHUF8(w[2 * j], w[2 * j + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
               SHUF8(w[2 * j], w[2 * j + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    v8i u0 =
        SHUF8(t[0], t[1], 0, 1, 8, 9, 4, 5, 12, 13) + SHUF8(t[0], t[1], 2, 3, 10, 11, 6, 7, 14, 15);
    v8i u1 =
        SHUF8(t[2], t[3], 0, 1, 8, 9, 4, 5, 12, 13) + SHUF8(t[2], t[3], 2, 3, 10, 11, 6, 7, 14, 15);
    *d += SHUF8(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUF8(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
}

#define LOAD16(dst, p) memcpy(&(dst), (p), sizeof(v16h))

/* d += sums over codes [j0, j0 + n) for 4 activation rows x 2 weight rows: lane 2r + c. */
Q6_INLINE void sums_4x2(const q6_block *b, int64_t j0, int32_t n, v8i *d)
{
    v16h a[8] = {{0}};
    for (int64_t j = j0; j < j0 + n; j += 16) {
        v16h w0, w1, xv;
        LOAD16(w0, b->w[0] + j);
        LOAD16(w1, b->w[1] + j);
        Q6_UNROLL
        for (int r = 0; r < 4; r++) {
            LOAD16(xv, b->x[r] + j);
            a[2 * r] += xv * w0;
            a[2 * r + 1] += xv * w1;
        }
    }
    reduce8_add(a, d);
}

/* d += sums over codes [j0, j0 + n) for 1 activation row x 8 weight rows: lane c. */
Q6_INLINE void sums_1x8(const q6_block *b, int64_t j0, int32_t n, v8i *d)
{
    v16h a[8] = {{0}};
    for (int64_t j = j0; j < j0 + n; j += 16) {
        v16h xv, wv;
        LOAD16(xv, b->x[0] + j);
        Q6_UNROLL
        for (int c = 0; c < 8; c++) {
            LOAD16(wv, b->w[c] + j);
            a[c] += xv * wv;
        }
    }
    reduce8_add(a, d);
}

/* Folds the groups of one block of len codes into the 8 results (shape 4x2 or 1x8); first says
 * whether this is K's first block (start from 0) or a later one (continue from y). */
Q6_INLINE void kernel8(const q6_block *b, bool four_by_two, int64_t len, int32_t g, bool first)
{
    float init[8];
    for (int j = 0; j < 8; j++)
        init[j] = first || !b->y[j] ? 0.0f : *b->y[j];
    v8f acc, sxv, swv;
    memcpy(&acc, init, sizeof acc);
    int32_t n = g < Q6_WIDEN ? g : Q6_WIDEN;
    for (int64_t j0 = 0, gl = 0; j0 < len; j0 += g, gl++) {
        v8i neg = {0}; /* minus the group sums: the tile holds -q_w */
        for (int64_t s = j0; s < j0 + g; s += n)
            if (four_by_two)
                sums_4x2(b, s, n, &neg);
            else
                sums_1x8(b, s, n, &neg);
        v8i d = -neg;
        const float *sw = b->sw + gl * Q6_NT;
        if (four_by_two) {
            float x0 = b->sx[0][gl], x1 = b->sx[1][gl], x2 = b->sx[2][gl], x3 = b->sx[3][gl];
            sxv = (v8f){x0, x0, x1, x1, x2, x2, x3, x3};
            swv = (v8f){sw[0], sw[1], sw[0], sw[1], sw[0], sw[1], sw[0], sw[1]};
        } else {
            sxv = (v8f){0} + b->sx[0][gl];
            memcpy(&swv, sw, sizeof swv);
        }
        v8f scale = sxv * swv;
        v8f term = scale * __builtin_convertvector(d, v8f);
        acc = acc + term;
    }
    float out[8];
    memcpy(out, &acc, sizeof out);
    for (int j = 0; j < 8; j++)
        if (b->y[j])
            *b->y[j] = out[j];
}

RT_MULTIVERSION
static void kernel_4x2(const q6_block *b, int64_t len, int32_t g, bool first)
{
    kernel8(b, true, len, g, first);
}

RT_MULTIVERSION
static void kernel_1x8(const q6_block *b, int64_t len, int32_t g, bool first)
{
    kernel8(b, false, len, g, first);
}

/* ---- tasks ---- */

/* fq_f16_to_f32 with the common case (a normal number) inline: a scale per 32 to 128 weights is
 * converted once per task, which is not negligible for a single activation row. */
static inline float f16_to_f32(uint16_t h)
{
    uint32_t e = h & 0x7C00u;
    if (e == 0 || e == 0x7C00u)
        return fq_f16_to_f32(h); /* zero, subnormal, inf, nan */
    uint32_t bits = (uint32_t)(h & 0x8000u) << 16 | (((uint32_t)h & 0x7FFFu) + (112u << 10)) << 13;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Where a task is: weight rows [n0, n0 + rows), codes [k0, k0 + len), groups from g0. */
typedef struct q6_pos {
    int64_t n0, k0, len, g0;
    int rows;
} q6_pos;

/* The block of activation rows r0 .. r0 + nx - 1 (tile x rows 0 ..) and weight rows c0 ... */
static void block_init(q6_block *b, const q6_task *t, const q6_tile *tl, const q6_pos *p,
                       int64_t r0, int nx, int c0)
{
    for (int i = 0; i < Q6_MR; i++) {
        int xi = i < nx ? i : 0;
        b->x[i] = tl->x[xi];
        b->sx[i] = t->sx + (r0 + xi) * t->n_groups + p->g0;
    }
    int nw = nx == 1 ? 8 : 2;
    for (int c = 0; c < nw; c++)
        b->w[c] = tl->w[c0 + c < p->rows ? c0 + c : 0];
    b->sw = &tl->s[0][c0];
    for (int j = 0; j < 8; j++) {
        int64_t r = r0 + (nx == 1 ? 0 : j / 2);
        int c = c0 + (nx == 1 ? j : j % 2);
        b->y[j] = c < p->rows ? t->y + r * t->n + p->n0 + c : NULL;
    }
}

/* All activation rows against the tile's rows, for one block of K. */
static void tile_block(const q6_task *t, q6_tile *tl, const q6_pos *p)
{
    bool first = p->k0 == 0;
    int64_t m4 = t->m / Q6_MR * Q6_MR;
    q6_block b;
    for (int64_t r0 = 0; r0 < m4; r0 += Q6_MR) {
        for (int i = 0; i < Q6_MR; i++)
            split_activations(t->qx + (r0 + i) * t->k + p->k0, p->len, tl->x[i]);
        for (int c0 = 0; c0 < p->rows; c0 += 2) {
            block_init(&b, t, tl, p, r0, Q6_MR, c0);
            kernel_4x2(&b, p->len, t->g, first);
        }
    }
    for (int64_t r = m4; r < t->m; r++) {
        split_activations(t->qx + r * t->k + p->k0, p->len, tl->x[0]);
        for (int c0 = 0; c0 < p->rows; c0 += 8) {
            block_init(&b, t, tl, p, r, 1, c0);
            kernel_1x8(&b, p->len, t->g, first);
        }
    }
}

/* The tile's weights and scales for one block of K. */
static void tile_load(const q6_task *t, q6_tile *tl, const q6_pos *p)
{
    unpack_rows(t->packed + p->n0 * t->row_bytes, t->row_bytes, p->rows, p->k0, p->len, tl->w);
    int64_t ng = p->len / t->g;
    for (int r = 0; r < Q6_NT; r++) {
        if (r >= p->rows) {
            for (int64_t gl = 0; gl < ng; gl++)
                tl->s[gl][r] = 0.0f;
            continue;
        }
        const uint16_t *sw = t->sw + (p->n0 + r) * t->n_groups + p->g0;
        for (int64_t gl = 0; gl < ng; gl++)
            tl->s[gl][r] = f16_to_f32(sw[gl]);
    }
}

static void q6_tile_task(void *ctx, int64_t tile)
{
    const q6_task *t = ctx;
    q6_pos p = {.n0 = tile * Q6_NT};
    p.rows = (int)(t->n - p.n0 < Q6_NT ? t->n - p.n0 : Q6_NT);
    q6_tile tl;
    for (p.k0 = 0; p.k0 < t->k; p.k0 += Q6_KB) {
        p.len = t->k - p.k0 < Q6_KB ? t->k - p.k0 : Q6_KB;
        p.g0 = p.k0 / t->g;
        tile_load(t, &tl, &p);
        tile_block(t, &tl, &p);
    }
}

void rt_cpu_matmul_q6(rt_pool *pool, const int8_t *qx, const float *sx, int64_t m, int64_t k,
                      int32_t g, const uint8_t *packed, const uint16_t *sw, int64_t row_bytes,
                      int64_t n, float *y)
{
    FQ_ASSERT(g >= Q6_SPAN && g <= Q6_KB && Q6_KB % g == 0 && k > 0 && k % g == 0);
    FQ_ASSERT(row_bytes >= fq_pack_row_bytes(k));
    if (m <= 0 || n <= 0)
        return;
    q6_task t = {.qx = qx,
                 .sx = sx,
                 .packed = packed,
                 .sw = sw,
                 .y = y,
                 .m = m,
                 .k = k,
                 .n = n,
                 .row_bytes = row_bytes,
                 .n_groups = k / g,
                 .g = g};
    rt_pool_run(pool, (n + Q6_NT - 1) / Q6_NT, q6_tile_task, &t);
}

/* ---- W8A8 ---- */

typedef struct w8_task {
    const int8_t *qx, *w8;
    const float *sx, *sw;
    float *y;
    int64_t m, k, n;
} w8_task;

#define W8_NT 16 /* output channels per task */

static void w8_tile_task(void *ctx, int64_t idx)
{
    const w8_task *t = ctx;
    const int64_t j0 = idx * W8_NT, j1 = j0 + W8_NT < t->n ? j0 + W8_NT : t->n;
    for (int64_t j = j0; j < j1; j++) {
        const int8_t *w = t->w8 + j * t->k;
        for (int64_t i = 0; i < t->m; i++) {
            const int8_t *x = t->qx + i * t->k;
            int32_t d = 0;
            for (int64_t c = 0; c < t->k; c++)
                d += (int32_t)x[c] * (int32_t)w[c];
            t->y[i * t->n + j] = (t->sx[i] * t->sw[j]) * (float)d;
        }
    }
}

void rt_cpu_matmul_w8a8(rt_pool *pool, const int8_t *qx, const float *sx, int64_t m, int64_t k,
                        const int8_t *w8, const float *sw, int64_t n, float *y)
{
    FQ_ASSERT(k > 0 && k <= (1 << 17));
    if (m <= 0 || n <= 0)
        return;
    w8_task t = {.qx = qx, .w8 = w8, .sx = sx, .sw = sw, .y = y, .m = m, .k = k, .n = n};
    rt_pool_run(pool, (n + W8_NT - 1) / W8_NT, w8_tile_task, &t);
}

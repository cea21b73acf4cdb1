/* k_gemm_w6_prefill.cu — prefill INT6 GEMM on INT8 tensor cores (mma.sync m16n8k32 s8), any m.
 *
 * y[mi, n] = sum over groups gi of sx[mi, gi] * f32(sw[n, gi]) * d[mi, n, gi], d exact in int32
 * (k_gemm.h). Design:
 * - CTA tile 128 tokens (m) x 128 weight rows (n), 8 warps as 2 (m) x 4 (n), warp tile 64 x 32:
 *   4 m16 x 4 n8 mma tiles, int32 group accumulators + fp32 accumulators (64 + 64 registers).
 * - K in stages of 128 codes, a 4-stage cp.async pipeline with one __syncthreads per stage: the
 *   activation tile 128 x 128 int8 (16-byte segments XOR-swizzled by row so ldmatrix is
 *   conflict-free), the weight tile 128 rows x 2 packed chunks (96 bytes, row stride 112 so the
 *   fragment loads are conflict-free), and the scales of the stage's groups (plain loads into
 *   registers, stored to shared memory one iteration later so their latency is hidden). The next
 *   stage's copies are issued after the first half of a stage's mma, not before any.
 * - Activations are the A operand (ldmatrix.x4). Weights are the B operand, unpacked from the
 *   packed bytes in shared memory straight into fragments: in the fq_pack.h layout, lane t of a
 *   quad needs codes 4t.., 16+4t.. (first k32 half of a chunk) and 32+4t.., 48+4t.. (second), which
 *   are exactly low-plane words t and t + 4 and high-plane word t. So the k order is natural and
 *   matches the activations with no permutation.
 * - Unpack: a byte holds 4q = (u ^ 32) << 2 as s8 (u = q + 32): nibble in bits 2..5, the high
 *   field with its top bit flipped in bits 6..7, zeros in bits 0..1: one shift and one LOP3 per
 *   4 codes, plus two LOP3 per high word. The mma sums 4d; the scale carries the 1/4 (exact).
 * - Group fold without int->float conversion: the first mma of a fold period takes C = 0x4B400000
 *   (the bits of M = 1.5 * 2^23), so afterwards acc = bits(M + 4d) exactly (|4d| <= 2^22).
 *   Then v = fma(sw/4, M + 4d, -(sw/4) * M) = round(sw * d) (the addend is exact: sw has 11
 *   significant bits) and facc = fma(sx, v, facc): two FMAs per element per group. With unit
 *   scales both are exact, so the result equals the CPU's bit for bit while sums stay < 2^24.
 *   Fold periods are g codes, except g = 512 which folds every 256 (keeps |4d| <= 2^22). For
 *   g >= 128 a period's fold is deferred into the next period's first k32 step, tile by tile just
 *   before that tile's first mma, so its FMAs overlap the tensor cores (scales kept in registers).
 * - Tails: rows past m and weight rows past n are zero-filled (cp.async with source size 0, the
 *   address is not read) and never stored; k steps past k are skipped (k is a multiple of 32;
 *   chunks past the packed row are zero-filled, never read).
 * Deterministic: no atomics, fixed order over groups.
 */
#include "k_gemm.h"
#include "k_ptx.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <stdint.h>

#define W6P_BM          128 /* tokens per CTA */
#define W6P_BN          128 /* weight rows per CTA */
#define W6P_BK          128 /* codes per stage: 4 k32 steps, 2 packed chunks */
#define W6P_STAGES      4
#define W6P_THREADS     256
#define W6P_ACT_BYTES   (W6P_BM * W6P_BK)         /* 16384 */
#define W6P_WROW        112                       /* padded weight row: 96 bytes used */
#define W6P_WGT_BYTES   (W6P_BN * W6P_WROW)       /* 14336 */
#define W6P_SCL_ENTRIES 256                       /* per group: 128 sx then 128 sw / 4 */
#define W6P_SCL_BYTES   (4 * W6P_SCL_ENTRIES * 4) /* up to 4 groups per stage */
#define W6P_STAGE_BYTES (W6P_ACT_BYTES + W6P_WGT_BYTES + W6P_SCL_BYTES)
#define W6P_SMEM_BYTES  (W6P_STAGES * W6P_STAGE_BYTES) /* 139264 */
#define W6P_MAGIC_BITS  0x4B400000u                    /* 1.5 * 2^23 */
#define W6P_MAGIC_F     12582912.0f

/* Per-launch constants shared by the helpers. */
struct w6p_args {
    const int8_t *qx;
    const float *sx;
    const uint8_t *packed;
    const uint16_t *sw;
    float *y;
    long row_bytes, ldy;
    int m, n, k, g, ng, n_chunks, gshift, m0, n0;
};

/* Per-thread copy plan, fixed for the CTA (global addresses as integers: a row past m or n is
 * never read, its copies have source size 0 and zero-fill). */
struct w6p_plan {
    unsigned long long a_src; /* activation row m0 + tid / 8, segment tid % 8 */
    unsigned long long w_src; /* weight row n0 + tid / 6, segment tid % 6 (tid < 192) */
    unsigned long long s_src; /* scale row: sx of m0 + tid (tid < 128), sw of n0 + tid - 128 */
    uint32_t a_dst, w_dst;    /* shared offsets in a stage of the first copy of each */
    int a_rows, w_rows;       /* valid rows from the first: copy r is valid iff 32 r < rows */
    int a_k16, w_hi;          /* code offset of the segment; chunk (0/1) of the segment */
    bool s_ok;                /* scale row within m or n */
};

/* ---- PTX wrappers ---- */

__device__ __forceinline__ void w6p_ldsm4(uint32_t addr, unsigned (&r)[4])
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* c = a * b + the magic bits (first step of a fold period). */
__device__ __forceinline__ void w6p_mma_first(int (&c)[4], const unsigned (&a)[4], unsigned b0,
                                              unsigned b1)
{
    const unsigned z = W6P_MAGIC_BITS;
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11, %12, %13};\n"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(z), "r"(z), "r"(z),
          "r"(z));
}

/* Bits 2..5 of each byte from x, bits 0..1 and 6..7 from y: one LOP3 (inline PTX, so that the
 * compiler does not re-associate the masks of the unpack into more operations). */
__device__ __forceinline__ unsigned w6p_sel(unsigned x, unsigned y)
{
    unsigned r;
    asm("lop3.b32 %0, %1, %2, %3, 0xE4;\n" : "=r"(r) : "r"(x), "r"(y), "n"(0x3C3C3C3C));
    return r;
}

/* (h & mask) ^ flip: keeps two of the four 2-bit high fields and flips their top bits. */
template <unsigned MASK, unsigned FLIP> __device__ __forceinline__ unsigned w6p_fields(unsigned h)
{
    unsigned r;
    asm("lop3.b32 %0, %1, %2, %3, 0x6A;\n" : "=r"(r) : "r"(h), "n"(MASK), "n"(FLIP));
    return r;
}

/* ---- loads into a stage ---- */

/* The copy plan of thread tid (activations: 4 copies 32 rows apart; weights: threads < 192, 4
 * copies 32 rows apart, 6 segments of 16 bytes per row; scales: one row per thread). */
__device__ __forceinline__ w6p_plan w6p_plan_make(const w6p_args &p, int tid)
{
    w6p_plan q;
    const int ar = tid >> 3, as = tid & 7;
    q.a_src = (unsigned long long)__cvta_generic_to_global(p.qx) +
              (unsigned long long)((long)(p.m0 + ar) * p.k + as * 16);
    q.a_dst = ar * W6P_BK + ((as ^ (ar & 7)) << 4);
    q.a_rows = p.m - p.m0 - ar;
    q.a_k16 = as * 16;
    const int wr = tid / 6, ws = tid - wr * 6;
    q.w_src = (unsigned long long)__cvta_generic_to_global(p.packed) +
              (unsigned long long)((long)(p.n0 + wr) * p.row_bytes + ws * 16);
    q.w_dst = W6P_ACT_BYTES + wr * W6P_WROW + ws * 16;
    q.w_rows = tid < 192 ? p.n - p.n0 - wr : 0;
    q.w_hi = ws >= 3 ? 1 : 0;
    if (tid < W6P_BM) {
        const int r = min(p.m0 + tid, p.m - 1);
        q.s_src = (unsigned long long)(p.sx + (long)r * p.ng);
        q.s_ok = p.m0 + tid < p.m;
    } else {
        const int c = min(p.n0 + tid - W6P_BM, p.n - 1);
        q.s_src = (unsigned long long)(p.sw + (long)c * p.ng);
        q.s_ok = p.n0 + tid - W6P_BM < p.n;
    }
    return q;
}

/* cp.async of stage s (codes 128 s ..) into the stage buffer at shared address base. */
__device__ __forceinline__ void w6p_issue(const w6p_args &p, const w6p_plan &q, uint32_t base,
                                          int s, int tid)
{
    const int kc = s * W6P_BK;
    const int asz = kc + q.a_k16 < p.k ? 16 : 0;
    const unsigned long long a_step = 32ull * (unsigned)p.k;
#pragma unroll
    for (int r = 0; r < 4; r++)
        k_cp_async16(base + q.a_dst + r * 32 * W6P_BK, (const void *)(q.a_src + kc + r * a_step),
                     32 * r < q.a_rows ? asz : 0);
    if (tid < 192) { /* warps 0..5 */
        const int wsz = 2 * s + q.w_hi < p.n_chunks ? 16 : 0;
        const unsigned long long w_step = 32ull * (unsigned long long)p.row_bytes;
#pragma unroll
        for (int r = 0; r < 4; r++)
            k_cp_async16(base + q.w_dst + r * 32 * W6P_WROW,
                         (const void *)(q.w_src + s * 96ull + r * w_step),
                         32 * r < q.w_rows ? wsz : 0);
    }
}

/* Groups of stage s: GPS groups from s * GPS (g <= 128), or the one containing it (g >= 256). */
template <int P> __device__ __forceinline__ int w6p_group(const w6p_args &p, int s, int i)
{
    return P <= 4 ? s * (4 / P) + i : s >> p.gshift;
}

/* Raw scale bits of stage s for this thread: entry tid < 128 is sx of row m0 + tid, the others
 * sw of weight row n0 + tid - 128; 0 past m, n or the last group. */
template <int P, int GPS>
__device__ __forceinline__ void w6p_scales_load(const w6p_args &p, const w6p_plan &q, int s,
                                                int tid, unsigned (&v)[GPS])
{
#pragma unroll
    for (int i = 0; i < GPS; i++) {
        const int gi = w6p_group<P>(p, s, i);
        v[i] = 0;
        if (q.s_ok && gi < p.ng) {
            if (tid < W6P_BM)
                v[i] = __float_as_uint(__ldg(reinterpret_cast<const float *>(q.s_src) + gi));
            else
                v[i] = __ldg(reinterpret_cast<const uint16_t *>(q.s_src) + gi);
        }
    }
}

/* Stores them as fp32: sx as is, sw / 4 (the unpacked weights are 4q). */
template <int GPS>
__device__ __forceinline__ void w6p_scales_store(float *scl, int tid, const unsigned (&v)[GPS])
{
#pragma unroll
    for (int i = 0; i < GPS; i++)
        scl[i * W6P_SCL_ENTRIES + tid] =
            tid < W6P_BM ? __uint_as_float(v[i])
                         : 0.25f * __half2float(__ushort_as_half((unsigned short)v[i]));
}

/* ---- per-warp compute ---- */

struct w6p_lane {
    uint32_t act;   /* shared address: activation row of this lane's ldmatrix, buffer 0 */
    uint32_t x16;   /* swizzle term of this lane's 16-byte segment */
    int wrow;       /* byte offset of this lane's weight words in the weight tile */
    int srow, scol; /* scale entries of this lane: token row g, weight column 2t */
};

/* The scales of one fold, per lane: sx of rows g and g + 8 of each m16 tile, sw / 4 of columns
 * 2t and 2t + 1 of each n8 tile, and -M times those (exact: sw has 11 significant bits). */
struct w6p_fscale {
    float sx[4][2], sw[4][2], cn[4][2];
};

/* Reads them from the group's 256 scale entries sc. */
__device__ __forceinline__ void w6p_fscale_load(const float *sc, const w6p_lane &L, w6p_fscale &f)
{
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
        f.sx[mt][0] = sc[L.srow + mt * 16];
        f.sx[mt][1] = sc[L.srow + mt * 16 + 8];
    }
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        const float2 v = *reinterpret_cast<const float2 *>(sc + L.scol + nt * 8);
        f.sw[nt][0] = v.x;
        f.sw[nt][1] = v.y;
        f.cn[nt][0] = __fmul_rn(-W6P_MAGIC_F, v.x);
        f.cn[nt][1] = __fmul_rn(-W6P_MAGIC_F, v.y);
    }
}

/* Folds the finished group sums of tile (mt, nt), acc = bits of M + 4d, into its fp32 results:
 * v = fma(sw / 4, M + 4d, -M sw / 4) = round(sw d), facc = fma(sx, v, facc). */
__device__ __forceinline__ void w6p_fold_tile(const w6p_fscale &f, int mt, int nt,
                                              const int (&acc)[4], float (&facc)[4])
{
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float v = __fmaf_rn(f.sw[nt][e & 1], __int_as_float(acc[e]), f.cn[nt][e & 1]);
        facc[e] = __fmaf_rn(f.sx[mt][e >> 1], v, facc[e]);
    }
}

__device__ __forceinline__ void w6p_fold_all(const w6p_fscale &f, const int (&acc)[4][4][4],
                                             float (&facc)[4][4][4])
{
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            w6p_fold_tile(f, mt, nt, acc[mt][nt], facc[mt][nt]);
}

/* 16 mma of one k32 step. FIRST starts a fold period (C = the magic bits); with DEFER each tile's
 * previous period is folded (scales f) just before its first mma, so that the fold's FMAs overlap
 * the tensor cores instead of idling them at the end of a stage. */
template <bool FIRST, bool DEFER>
__device__ __forceinline__ void w6p_step_mma(int (&acc)[4][4][4], float (&facc)[4][4][4],
                                             const unsigned (&a)[4][4], const unsigned (&bw)[4][4],
                                             int h, const w6p_fscale &f)
{
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            if (FIRST) {
                if (DEFER)
                    w6p_fold_tile(f, mt, nt, acc[mt][nt], facc[mt][nt]);
                w6p_mma_first(acc[mt][nt], a[mt], bw[nt][2 * h], bw[nt][2 * h + 1]);
            } else {
                k_mma_s8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bw[nt][2 * h],
                         bw[nt][2 * h + 1]);
            }
        }
}

/* Unpacks chunk c of the stage for the warp's 4 n8 tiles: bw[nt][0..1] = B of step 2c,
 * bw[nt][2..3] = B of step 2c + 1. */
__device__ __forceinline__ void w6p_unpack(const uint8_t *wgt, int c, unsigned (&bw)[4][4])
{
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        const uint8_t *q = wgt + nt * 8 * W6P_WROW + c * 48;
        const unsigned l0 = *reinterpret_cast<const unsigned *>(q);      /* codes 4t.., 32+4t.. */
        const unsigned l1 = *reinterpret_cast<const unsigned *>(q + 16); /* 16+4t.., 48+4t.. */
        const unsigned hw = *reinterpret_cast<const unsigned *>(q + 32); /* their top bits */
        const unsigned hm = w6p_fields<0x33333333u, 0x22222222u>(hw);    /* fields 0, 4 */
        const unsigned hn = w6p_fields<0xCCCCCCCCu, 0x88888888u>(hw);    /* fields 2, 6 */
        bw[nt][0] = w6p_sel(l0 << 2, hm << 6);
        bw[nt][1] = w6p_sel(l1 << 2, hn << 4);
        bw[nt][2] = w6p_sel(l0 >> 2, hm << 2);
        bw[nt][3] = w6p_sel(l1 >> 2, hn);
    }
}

/* One warp's work on one stage: 4 k32 steps (nsteps of them valid when !FULL); hook() runs after
 * the first chunk (the next stage's copies, issued while the tensor cores work). Folds: P <= 2
 * (g = 32, 64) fold at once, several times per stage; P = 4 (g = 128) and P = 8 (g >= 256, a
 * period of two stages: pstart / pend say whether this one opens / closes it) load the period's
 * scales into f at its end and fold in the next period's first step (DEFER). */
template <int P, bool FULL, class Hook>
__device__ __forceinline__ void w6p_stage(uint32_t act, const uint8_t *wgt, const float *scl,
                                          const w6p_lane &L, int nsteps, bool pstart, bool pend,
                                          int (&acc)[4][4][4], float (&facc)[4][4][4],
                                          w6p_fscale &f, Hook hook)
{
#pragma unroll
    for (int c = 0; c < 2; c++) {
        if (c == 1)
            hook();
        if (!FULL && 2 * c >= nsteps)
            continue;
        unsigned bw[4][4];
        w6p_unpack(wgt + L.wrow, c, bw);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int j = 2 * c + h;
            if (!FULL && j >= nsteps)
                break;
            unsigned a[4][4];
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
                w6p_ldsm4(act + mt * 16 * W6P_BK + ((32u * j) ^ L.x16), a[mt]);
            if (P <= 2) {
                if (j % P == 0)
                    w6p_step_mma<true, false>(acc, facc, a, bw, h, f);
                else
                    w6p_step_mma<false, false>(acc, facc, a, bw, h, f);
                if ((j + 1) % P == 0) {
                    w6p_fscale now;
                    w6p_fscale_load(scl + (j / P) * W6P_SCL_ENTRIES, L, now);
                    w6p_fold_all(now, acc, facc);
                }
            } else {
                if (j == 0 && (P == 4 || pstart))
                    w6p_step_mma<true, true>(acc, facc, a, bw, h, f);
                else
                    w6p_step_mma<false, true>(acc, facc, a, bw, h, f);
                if (j == 3 && (P == 4 || pend))
                    w6p_fscale_load(scl, L, f);
            }
        }
    }
}

/* P = k32 steps per fold period: 1, 2, 4 (g = 32, 64, 128) or 8 (g = 256, 512). */
template <int P>
__global__ void __launch_bounds__(W6P_THREADS, 1) k_gemm_w6_prefill_kernel(w6p_args p, int tiles_m)
{
    constexpr int GPS = P <= 4 ? 4 / P : 1; /* scale groups per stage */
    extern __shared__ __align__(128) uint8_t w6p_smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3, gq = lane >> 2, tq = lane & 3;
    p.m0 = (int)(blockIdx.x % (unsigned)tiles_m) * W6P_BM;
    p.n0 = (int)(blockIdx.x / (unsigned)tiles_m) * W6P_BN;

    const uint32_t smem = k_smem_addr(w6p_smem);
    const w6p_plan plan = w6p_plan_make(p, tid);
    w6p_lane L;
    L.act = smem + (wm * 64 + (lane & 15)) * W6P_BK;
    L.x16 = (uint32_t)(((lane & 7) ^ (lane >> 4)) << 4);
    L.wrow = (wn * 32 + gq) * W6P_WROW + 4 * tq;
    L.srow = wm * 64 + gq;
    L.scol = W6P_BM + wn * 32 + 2 * tq;

    const int ks = p.k / 32;       /* k32 steps */
    const int kt_n = (ks + 3) / 4; /* stages */
    /* Deferred folds start with an empty one: acc = bits of M (4d = 0) and zero scales. */
    int acc[4][4][4];
    float facc[4][4][4];
    w6p_fscale f;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                acc[mt][nt][e] = (int)W6P_MAGIC_BITS;
                facc[mt][nt][e] = 0.0f;
            }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            f.sx[i][e] = 0.0f;
            f.sw[i][e] = 0.0f;
            f.cn[i][e] = 0.0f;
        }

    unsigned pend_v[GPS];
#pragma unroll
    for (int s = 0; s < W6P_STAGES - 1; s++) {
        if (s < kt_n) {
            w6p_issue(p, plan, smem + s * W6P_STAGE_BYTES, s, tid);
            w6p_scales_load<P, GPS>(p, plan, s, tid, pend_v);
            w6p_scales_store<GPS>(reinterpret_cast<float *>(w6p_smem + s * W6P_STAGE_BYTES +
                                                            W6P_ACT_BYTES + W6P_WGT_BYTES),
                                  tid, pend_v);
        }
        k_cp_async_commit();
    }

    int pend_buf = -1; /* buffer whose scales wait in pend_v */
    for (int kt = 0; kt < kt_n; kt++) {
        k_cp_async_wait<W6P_STAGES - 2>();
        __syncthreads(); /* stage kt landed; everyone is done with stage kt - 1's buffer */
        /* Runs after the first chunk: the scales loaded one iteration ago go to their buffer,
         * stage kt + 3 is issued into the buffer of stage kt - 1. */
        auto hook = [&]() {
            if (pend_buf >= 0) {
                w6p_scales_store<GPS>(reinterpret_cast<float *>(w6p_smem +
                                                                pend_buf * W6P_STAGE_BYTES +
                                                                W6P_ACT_BYTES + W6P_WGT_BYTES),
                                      tid, pend_v);
                pend_buf = -1;
            }
            const int s_next = kt + W6P_STAGES - 1;
            if (s_next < kt_n) {
                const int bn = s_next % W6P_STAGES;
                w6p_issue(p, plan, smem + bn * W6P_STAGE_BYTES, s_next, tid);
                w6p_scales_load<P, GPS>(p, plan, s_next, tid, pend_v);
                pend_buf = bn;
            }
            k_cp_async_commit();
        };

        const int b = kt % W6P_STAGES;
        const uint32_t act = L.act + b * W6P_STAGE_BYTES;
        const uint8_t *wgt = w6p_smem + b * W6P_STAGE_BYTES + W6P_ACT_BYTES;
        const float *scl = reinterpret_cast<const float *>(wgt + W6P_WGT_BYTES);
        const int nsteps = min(4, ks - 4 * kt);
        const bool pstart = (kt & 1) == 0, pendp = (kt & 1) == 1;
        if (P >= 4 || nsteps == 4)
            w6p_stage<P, true>(act, wgt, scl, L, 4, pstart, pendp, acc, facc, f, hook);
        else
            w6p_stage<P, false>(act, wgt, scl, L, nsteps, pstart, pendp, acc, facc, f, hook);
    }
    k_cp_async_wait<0>();
    if (P >= 4)
        w6p_fold_all(f, acc, facc); /* the last deferred fold */

#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            const int r = p.m0 + wm * 64 + mt * 16 + gq + 8 * hr;
            if (r >= p.m)
                continue;
            float *yrow = p.y + (long)r * p.ldy;
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const int c = p.n0 + wn * 32 + nt * 8 + 2 * tq;
                if (c < p.n)
                    yrow[c] = facc[mt][nt][2 * hr];
                if (c + 1 < p.n)
                    yrow[c + 1] = facc[mt][nt][2 * hr + 1];
            }
        }
}

template <int P> static int w6p_launch(const w6p_args &p, int tiles_m, int tiles, cudaStream_t st)
{
    if (cudaFuncSetAttribute(k_gemm_w6_prefill_kernel<P>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                             W6P_SMEM_BYTES) != cudaSuccess)
        return -1;
    k_gemm_w6_prefill_kernel<P><<<(unsigned)tiles, W6P_THREADS, W6P_SMEM_BYTES, st>>>(p, tiles_m);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int k_gemm_w6_mma_prefill(const int8_t *qx, const float *sx, int m, const k_w6 *w,
                                     float *y, long ldy, cudaStream_t stream)
{
    if (!k_gemm_w6_args_ok(qx, sx, m, INT_MAX, w, y, ldy))
        return -1; /* FQ_EINVAL */
    const int n = w->n, k = w->k, g = w->g;
    const long tiles_m = (m + W6P_BM - 1) / W6P_BM, tiles_n = (n + W6P_BN - 1) / W6P_BN;
    if (tiles_m * tiles_n > INT_MAX)
        return -1;
    w6p_args p;
    p.qx = qx;
    p.sx = sx;
    p.packed = w->packed;
    p.sw = w->sw;
    p.y = y;
    p.row_bytes = w->row_bytes;
    p.ldy = ldy;
    p.m = m;
    p.n = n;
    p.k = k;
    p.g = g;
    p.ng = k / g;
    p.n_chunks = (k + 63) / 64;
    p.gshift = g == 512 ? 2 : 1; /* g >= 256: stage s lies in group s >> gshift */
    p.m0 = 0;
    p.n0 = 0;
    const int tm = (int)tiles_m, tiles = (int)(tiles_m * tiles_n);
    switch (g) {
    case 32:
        return w6p_launch<1>(p, tm, tiles, stream);
    case 64:
        return w6p_launch<2>(p, tm, tiles, stream);
    case 128:
        return w6p_launch<4>(p, tm, tiles, stream);
    default: /* 256, 512 */
        return w6p_launch<8>(p, tm, tiles, stream);
    }
}

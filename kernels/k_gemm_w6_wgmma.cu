/* k_gemm_w6_wgmma.cu — prefill INT6 GEMM on Hopper warpgroup MMA (wgmma, sm_90a only).
 *
 * y[mi, n] = sum over groups gi of sx[mi, gi] * f32(sw[n, gi]) * d[mi, n, gi], with d the exact
 * int32 group sums of qx[mi, k] * q_w[n, k] (contract: k_gemm.h).
 *
 * Tiles. A CTA computes BM = 128 * MH tokens by BN = 128 output features, k in steps of BK = 128
 * (one 128-byte swizzle row), with three warpgroups: one producer and two consumers.
 *
 * Producer (warpgroup 0, registers lowered with setmaxnreg). Thread 0 loads the int8 activation
 * tile (BM x 128 bytes, TMA, 128-byte swizzle as wgmma reads it) and the packed weight tile (128
 * rows x 96 bytes = two 48-byte chunks, TMA) into one of S stages. All 128 threads then unpack the
 * codes into an int8 K-major tile (same swizzle; two such buffers) and write the tile's weight
 * scales as fp32 pairs (sw / 4, -M * sw / 4) into a small table. The unpacked weights are 4 * q,
 * (u << 2) ^ 0x80 per byte: ~4 integer ops per 4 codes of the fq_pack.h planes.
 *
 * Consumers (warpgroups 1 and 2). Each owns MH slices of 64 token rows and all 128 columns. Per
 * slice and k-tile it issues wgmma.m64n128k32.s32.s8.s8 (A = activations, B = unpacked weights,
 * both from shared memory) into 64 int32 accumulators. Where a group ends it waits and folds the
 * group sum a = 4d into fp32 (the token scales of the tile, staged in shared memory by the
 * producer): f = bits(a + M) is M + a exactly (M = 1.5 * 2^23, |a| < 2^22), then t = fma(f, sw / 4,
 * -M * sw / 4) = round(sw * d) and acc = fma(sx, t, acc): three ops per output and group. The two
 * consumers take turns issuing (named barriers 1 and 2), so one folds while the tensor cores run
 * the other's MMAs.
 *
 * Hand-over. mbarriers per stage: full[s] (A landed by TMA, plus 128 producer arrivals after the
 * unpack), pfull[s] (packed tile landed; the producer waits on it), empty[s] (256 consumer
 * arrivals). Tile t's unpacked buffer is reused by tile t + 2, so the producer waits for tile t - 2
 * to be released, which also frees stage (t + S - 2) % S for the next TMA: loads run S - 2 tiles
 * ahead.
 *
 * Groups. g <= 128 divides BK, so a k-tile holds whole groups (1, 2 or 4 scale-table slots). g =
 * 256 or 512 spans tiles: then MH = 1 (the int32 accumulators carry over to the next tile) and the
 * fold adds a >> 2 to the bits of M2 = 1.5 * 2^25, since a can reach 2^23. Per output the groups
 * are folded in ascending order: deterministic. Rows past m and columns past n read zeros (TMA
 * out-of-bounds fill) and are not stored.
 */
#include "k.h"
#include "k_gemm.h"
#include "k_ptx.cuh"

#include <cuda.h> /* CUtensorMap; the encoder comes through the runtime's driver entry point */
#include <cudaTypedefs.h>
#include <limits.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#define WG_BN          128   /* output features per CTA (wgmma N) */
#define WG_BK          128   /* k per stage: one 128-byte swizzle row */
#define WG_P_BYTES     12288 /* packed weight tile: 128 rows x 96 bytes */
#define WG_B_BYTES     16384 /* unpacked weight tile: 128 rows x 128 bytes */
#define WG_THREADS     384   /* producer warpgroup + two consumer warpgroups */
#define WG_MAX_STAGES  8
#define WG_MIN_STAGES  3
#define WG_REG_PROD    56  /* setmaxnreg of the producer: 128 * 56 + 256 * 224 = 384 * 168 */
#define WG_REG_CONS    224 /* setmaxnreg of each consumer warpgroup */
#define WG_MAGIC_BITS  0x4B400000u /* 1.5 * 2^23: bits + i is M + i for |i| < 2^22 */
#define WG_MAGIC_F     12582912.0f
#define WG_MAGIC2_BITS 0x4C400000u /* 1.5 * 2^25: bits + i is M2 + 4i for |i| < 2^22 */
#define WG_MAGIC2_F    50331648.0f
#define WG_TIMEOUT_NS  4000000000ull /* a barrier wait this long means a bug (see wg_mbar_wait) */

/* Kernel arguments besides the two tensor maps. */
struct wg_params {
    const float *sx;    /* [m, ng] */
    const uint16_t *sw; /* [n, ng] fp16 bits */
    float *y;           /* [m, ldy] */
    long ldy;
    int m, n, k, g, ng;
    int log2g;   /* g = 1 << log2g */
    int n_tiles; /* ceil(k / 128) */
    int stages;  /* S */
    int nslots;  /* groups per k-tile in the scale table: 128 / g, or 1 when g > 128 */
    int vec2;    /* y rows and ldy allow 8-byte stores */
};

/* Shared-memory carve-up (offsets from a 1024-aligned base), shared by host and device. */
struct wg_layout {
    unsigned stage_bytes; /* A tile (BM x 128) then packed tile (12288) */
    unsigned off_b;       /* two unpacked weight tiles */
    unsigned off_sw;      /* two scale tables of nslots x 64 float4 */
    unsigned off_sx;      /* two token-scale tables of nslots x BM floats */
    unsigned off_bar;     /* full[S], pfull[S], empty[S] */
    unsigned total;       /* bytes used from the aligned base */
};

__host__ __device__ static inline wg_layout wg_layout_of(int mh, int stages, int nslots)
{
    wg_layout l;
    l.stage_bytes = (unsigned)(mh * 128 * WG_BK + WG_P_BYTES);
    l.off_b = (unsigned)stages * l.stage_bytes;
    l.off_sw = l.off_b + 2u * WG_B_BYTES;
    l.off_sx = l.off_sw + 2u * (unsigned)nslots * 1024u;
    l.off_bar = l.off_sx + 2u * (unsigned)nslots * (unsigned)(mh * 128) * 4u;
    l.total = l.off_bar + 3u * (unsigned)stages * 8u;
    return l;
}

/* 16 words (64 codes of one fq_pack.h chunk, in order) of weights as int8 4 * q = (u << 2) ^ 0x80.
 * lo[8]: the low-nibble plane (word j: codes 4j.. in its low nibbles, codes 32 + 4j.. in its high
 * nibbles); hi[4]: the high plane (word j: top bits of codes 4j.., 16 + 4j.., 32 + 4j.., 48 + 4j..
 * in bit pairs 0-1, 2-3, 4-5, 6-7). A byte of 4q keeps the low nibble in bits 2..5 and the top two
 * bits in bits 6..7, bit 7 flipped: flipping the odd bits of hi once (0xAA) flips, after each pair
 * is shifted up to bits 6..7, exactly the bit that lands on bit 7. ~3.75 integer ops per word. */
[[maybe_unused]] __host__ __device__ static inline uint32_t wg_code4(uint32_t lo_shifted,
                                                                     uint32_t hi_shifted)
{
    return (lo_shifted & 0x3C3C3C3Cu) | (hi_shifted & 0xC0C0C0C0u);
}

[[maybe_unused]] __host__ __device__ static inline void
wg_unpack_chunk(const uint32_t lo[8], const uint32_t hi[4], uint32_t out[16])
{
    for (int j = 0; j < 4; j++) { /* fully unrolled by the compiler (constant trip count) */
        const uint32_t h = hi[j] ^ 0xAAAAAAAAu;
        out[j] = wg_code4(lo[j] << 2, h << 6);         /* codes 0..15 */
        out[4 + j] = wg_code4(lo[4 + j] << 2, h << 4); /* codes 16..31 */
        out[8 + j] = wg_code4(lo[j] >> 2, h << 2);     /* codes 32..47 */
        out[12 + j] = wg_code4(lo[4 + j] >> 2, h);     /* codes 48..63 */
    }
}

/* The fold's int32 -> float of a group sum a = 4d, exact: M + a (small groups) or M2 + a. */
template <bool BIG> __host__ __device__ static inline float wg_acc_to_f(int a)
{
    const unsigned u = BIG ? WG_MAGIC2_BITS + (unsigned)(a >> 2) : WG_MAGIC_BITS + (unsigned)a;
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_HAVE_WGMMA 1
#endif

#ifdef WG_HAVE_WGMMA

/* ---- PTX wrappers (sm_90a) ---- */

__device__ static __forceinline__ void wg_mbar_init(uint32_t bar, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ static __forceinline__ void wg_mbar_arrive(uint32_t bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

__device__ static __forceinline__ void wg_mbar_arrive_tx(uint32_t bar, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
                 : "memory");
}

__device__ static __forceinline__ uint64_t wg_globaltimer(void)
{
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Waits for the phase of parity `parity` to complete. A wait longer than WG_TIMEOUT_NS means a bug
 * (a lost arrival): the thread then marks itself dead, stops waiting from then on and its results
 * are NaN, so a broken kernel ends with wrong output instead of hanging the GPU. (Not __trap(): a
 * trap in the loop makes ptxas ignore setmaxnreg when it allocates registers.) */
__device__ static __forceinline__ void wg_mbar_wait(uint32_t bar, unsigned parity, bool &dead)
{
    uint64_t t0 = 0;
    for (unsigned i = 1; !dead; i++) {
        unsigned ok;
        asm volatile("{\n\t.reg .pred p;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(ok)
                     : "r"(bar), "r"(parity)
                     : "memory");
        if (ok)
            return;
        if ((i & 0x3FFu) == 0) {
            const uint64_t now = wg_globaltimer();
            if (t0 == 0)
                t0 = now;
            else if (now - t0 > WG_TIMEOUT_NS)
                dead = true;
        }
    }
}

__device__ static __forceinline__ void wg_tma_load_2d(uint32_t dst, const CUtensorMap *map, int x,
                                                      int y, uint32_t bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(bar)
                 : "memory");
}

__device__ static __forceinline__ void wg_fence_proxy_async(void)
{
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ static __forceinline__ void wg_bar_sync(unsigned id, unsigned count)
{
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}

__device__ static __forceinline__ void wg_bar_arrive(unsigned id, unsigned count)
{
    asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}

__device__ static __forceinline__ void wg_wgmma_fence(void)
{
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ static __forceinline__ void wg_wgmma_commit(void)
{
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

__device__ static __forceinline__ void wg_wgmma_wait0(int (&d)[64])
{
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
    for (int i = 0; i < 64; i++) /* the accumulators are read only after this point */
        asm volatile("" : "+r"(d[i])::"memory");
}

/* Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart (SBO),
 * LBO unused (1); the tile starts on a 1024-byte boundary (base offset 0). */
__device__ static __forceinline__ uint64_t wg_desc(uint32_t smem)
{
    return (uint64_t)((smem & 0x3FFFFu) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) |
           (1ull << 62);
}

/* D[64 x 128] (+)= A[64 x 32] * B[32 x 128]^T, s8 x s8 -> s32, both operands from shared memory. */
__device__ static __forceinline__ void wg_mma(int (&d)[64], uint64_t da, uint64_t db, int scale_d)
{
    asm volatile("{\n\t.reg .pred p;\n\t"
                 "setp.ne.b32 p, %66, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p;\n\t}"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]),
                   "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]),
                   "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]),
                   "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
                   "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]),
                   "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]),
                   "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]),
                   "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
                   "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]),
                   "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]),
                   "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
                 : "l"(da), "l"(db), "r"(scale_d)
                 : "memory");
}

/* ---- the producer warpgroup ---- */

/* Shared-memory addresses of one CTA's buffers. */
struct wg_smem {
    unsigned char *gen; /* generic pointer to the aligned base */
    uint32_t base;      /* its shared-space address */
    wg_layout lay;
    int stages;
};

__device__ static __forceinline__ uint32_t wg_bar_full(const wg_smem &sm, int s)
{
    return sm.base + sm.lay.off_bar + 8u * (unsigned)s;
}
__device__ static __forceinline__ uint32_t wg_bar_pfull(const wg_smem &sm, int s)
{
    return sm.base + sm.lay.off_bar + 8u * (unsigned)(sm.stages + s);
}
__device__ static __forceinline__ uint32_t wg_bar_empty(const wg_smem &sm, int s)
{
    return sm.base + sm.lay.off_bar + 8u * (unsigned)(2 * sm.stages + s);
}

/* Thread 0 of the producer: starts the TMA loads of k-tile tl into stage tl % S. */
template <int MH>
__device__ static __forceinline__ void wg_issue_tile(const wg_smem &sm, const CUtensorMap *map_a,
                                                     const CUtensorMap *map_p, int tl, int m0,
                                                     int n0)
{
    const int s = tl % sm.stages;
    const uint32_t a = sm.base + (unsigned)s * sm.lay.stage_bytes;
    const uint32_t p = a + (unsigned)(MH * 128 * WG_BK);
    wg_mbar_arrive_tx(wg_bar_full(sm, s), (unsigned)(MH * 128 * WG_BK));
    wg_tma_load_2d(a, map_a, tl * WG_BK, m0, wg_bar_full(sm, s));
    wg_mbar_arrive_tx(wg_bar_pfull(sm, s), (unsigned)WG_P_BYTES);
    wg_tma_load_2d(p, map_p, tl * 96, n0, wg_bar_pfull(sm, s));
}

/* fp16 scales of column n0 + col for the NSLOTS groups of k-tile t, into pf. */
template <bool BIG, int NSLOTS>
__device__ static __forceinline__ void wg_load_sw(const wg_params &prm, int t, int n0, int col,
                                                  unsigned (&pf)[NSLOTS])
{
    const int gi0 = (t * WG_BK) >> prm.log2g;
    const bool col_ok = n0 + col < prm.n;
    const uint16_t *row = prm.sw + (long)(n0 + col) * prm.ng;
#pragma unroll
    for (int j = 0; j < NSLOTS; j++) {
        const int gi = gi0 + j;
        pf[j] = (col_ok && gi < prm.ng) ? (unsigned)__ldg(row + gi) : 0u;
    }
}

/* Writes the (sw / 4, -M * sw / 4) pairs of column col into the scale table: float4 c / 2 of a slot
 * holds {s(c), s(c + 1), cm(c), cm(c + 1)} for an even c. */
template <bool BIG, int NSLOTS>
__device__ static __forceinline__ void wg_store_sw(float *table, int col,
                                                   const unsigned (&pf)[NSLOTS])
{
#pragma unroll
    for (int j = 0; j < NSLOTS; j++) {
        const float s = __half2float(__ushort_as_half((unsigned short)pf[j])) * 0.25f;
        const float cm = -(BIG ? WG_MAGIC2_F : WG_MAGIC_F) * s; /* exact: 13 significant bits */
        float *slot = table + j * 256 + (col >> 1) * 4 + (col & 1);
        slot[0] = s;
        slot[2] = cm;
    }
}

/* Token scales of rows m0 + p + 128 i (i < MH) for the NSLOTS groups of k-tile t, into px (zero
 * past m or past the last group). */
template <int MH, int NSLOTS>
__device__ static __forceinline__ void wg_load_sx(const wg_params &prm, int t, int m0, int p,
                                                  float (&px)[MH][NSLOTS])
{
    const int gi0 = (t * WG_BK) >> prm.log2g;
#pragma unroll
    for (int i = 0; i < MH; i++) {
        const int row = m0 + p + 128 * i;
#pragma unroll
        for (int j = 0; j < NSLOTS; j++)
            px[i][j] = (row < prm.m && gi0 + j < prm.ng)
                           ? __ldg(prm.sx + (long)row * prm.ng + gi0 + j)
                           : 0.0f;
    }
}

/* Writes them into the token-scale table: slot j, row p + 128 i. */
template <int MH, int NSLOTS>
__device__ static __forceinline__ void wg_store_sx(float *table, int p,
                                                   const float (&px)[MH][NSLOTS])
{
#pragma unroll
    for (int i = 0; i < MH; i++)
#pragma unroll
        for (int j = 0; j < NSLOTS; j++)
            table[j * (MH * 128) + p + 128 * i] = px[i][j];
}

/* Unpacks this thread's two chunks of the packed tile (warp pw owns rows 32 pw .. 32 pw + 31, lane
 * takes chunks lane and lane + 32 of them: row c / 2, half c % 2) into the swizzled int8 tile. */
__device__ static __forceinline__ void wg_unpack_tile(const unsigned char *ptile,
                                                      unsigned char *btile, int pw, int lane)
{
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int c = lane + 32 * h;
        const uint4 *src = reinterpret_cast<const uint4 *>(ptile + pw * 3072 + c * 48);
        const uint4 l0 = src[0], l1 = src[1], hh = src[2];
        const uint32_t lo[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
        const uint32_t hi[4] = {hh.x, hh.y, hh.z, hh.w};
        uint32_t out[16];
        wg_unpack_chunk(lo, hi, out);
        const int row = 32 * pw + (c >> 1), half = c & 1;
        unsigned char *dst = btile + row * 128;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int gran = (4 * half + i) ^ (row & 7); /* 128-byte swizzle */
            *reinterpret_cast<uint4 *>(dst + gran * 16) =
                make_uint4(out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]);
        }
    }
}

template <int MH, bool BIG, int NSLOTS>
__device__ static __forceinline__ void wg_producer(const wg_smem &sm, const CUtensorMap *map_a,
                                                   const CUtensorMap *map_p, const wg_params &prm)
{
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(WG_REG_PROD));
    const int p = threadIdx.x, lane = p & 31, pw = p >> 5;
    const int m0 = blockIdx.x * (MH * 128), n0 = blockIdx.y * WG_BN;
    const int n_tiles = prm.n_tiles, stages = sm.stages, lag = stages - 2;
    if (p == 0)
        for (int tl = 0; tl < lag && tl < n_tiles; tl++)
            wg_issue_tile<MH>(sm, map_a, map_p, tl, m0, n0);
    unsigned pf[NSLOTS];
    wg_load_sw<BIG, NSLOTS>(prm, 0, n0, p, pf);
    float px[MH][NSLOTS];
    wg_load_sx<MH, NSLOTS>(prm, 0, m0, p, px);
    int s = 0;
    unsigned phase = 0;
    bool dead = false;
    for (int t = 0; t < n_tiles; t++) {
        if (t >= 2) { /* tile t - 2 released: its unpacked buffer and stage (t + S - 2) % S */
            const int u = t - 2;
            wg_mbar_wait(wg_bar_empty(sm, u % stages), (unsigned)(u / stages) & 1u, dead);
        }
        if (p == 0 && t + lag < n_tiles)
            wg_issue_tile<MH>(sm, map_a, map_p, t + lag, m0, n0);
        wg_mbar_wait(wg_bar_pfull(sm, s), phase, dead);
        const unsigned char *ptile =
            sm.gen + (unsigned)s * sm.lay.stage_bytes + (unsigned)(MH * 128 * WG_BK);
        unsigned char *btile = sm.gen + sm.lay.off_b + (unsigned)(t & 1) * WG_B_BYTES;
        wg_unpack_tile(ptile, btile, pw, lane);
        float *table = reinterpret_cast<float *>(sm.gen + sm.lay.off_sw +
                                                 (unsigned)(t & 1) * (unsigned)prm.nslots * 1024u);
        wg_store_sw<BIG, NSLOTS>(table, p, pf);
        wg_store_sx<MH, NSLOTS>(reinterpret_cast<float *>(sm.gen + sm.lay.off_sx +
                                                          (unsigned)(t & 1) * (unsigned)prm.nslots *
                                                              (unsigned)(MH * 128) * 4u),
                                p, px);
        if (t + 1 < n_tiles) {
            wg_load_sw<BIG, NSLOTS>(prm, t + 1, n0, p, pf);
            wg_load_sx<MH, NSLOTS>(prm, t + 1, m0, p, px);
        }
        wg_fence_proxy_async(); /* generic-proxy writes of the tile, before wgmma reads them */
        wg_mbar_arrive(wg_bar_full(sm, s));
        if (++s == stages) {
            s = 0;
            phase ^= 1u;
        }
    }
}

/* ---- the consumer warpgroups ---- */

/* acc[sl] += per-group scale * group sum, for the 64 accumulators of one slice (rows r, r + 8 of
 * the warp's 16, columns 8j + 2q, +1). tab: the group's slot of the scale table. */
template <bool BIG>
__device__ static __forceinline__ void wg_fold(float (&acc)[64], const int (&d)[64],
                                               const float4 *tab, float sx0, float sx1, int q)
{
#pragma unroll
    for (int j = 0; j < 16; j++) {
        const float4 v = tab[4 * j + q]; /* {s(c), s(c + 1), cm(c), cm(c + 1)}, c = 8j + 2q */
        acc[4 * j + 0] =
            __fmaf_rn(sx0, __fmaf_rn(wg_acc_to_f<BIG>(d[4 * j + 0]), v.x, v.z), acc[4 * j + 0]);
        acc[4 * j + 1] =
            __fmaf_rn(sx0, __fmaf_rn(wg_acc_to_f<BIG>(d[4 * j + 1]), v.y, v.w), acc[4 * j + 1]);
        acc[4 * j + 2] =
            __fmaf_rn(sx1, __fmaf_rn(wg_acc_to_f<BIG>(d[4 * j + 2]), v.x, v.z), acc[4 * j + 2]);
        acc[4 * j + 3] =
            __fmaf_rn(sx1, __fmaf_rn(wg_acc_to_f<BIG>(d[4 * j + 3]), v.y, v.w), acc[4 * j + 3]);
    }
}

/* Turn-taking of the two consumers: warpgroup 0 issues batch b after warpgroup 1 issued batch
 * b - 1 (barrier 2); warpgroup 1 issues batch b after warpgroup 0 issued it (barrier 1). */
__device__ static __forceinline__ void wg_turn_wait(int w, int batch)
{
    if (w == 0) {
        if (batch > 0)
            wg_bar_sync(2, 256);
    } else {
        wg_bar_sync(1, 256);
    }
}

__device__ static __forceinline__ void wg_turn_pass(int w, int batch, int n_batches)
{
    if (w == 0)
        wg_bar_arrive(1, 256);
    else if (batch + 1 < n_batches)
        wg_bar_arrive(2, 256);
}

/* Writes one slice's 64 results (rows row0 and row0 + 8, columns col0 + 8j, +1). */
__device__ static __forceinline__ void wg_store(const wg_params &prm, const float (&acc)[64],
                                                int row0, int col0)
{
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int row = row0 + 8 * i;
        if (row >= prm.m)
            continue;
        float *yr = prm.y + (long)row * prm.ldy;
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int col = col0 + 8 * j;
            const float v0 = acc[4 * j + 2 * i], v1 = acc[4 * j + 2 * i + 1];
            if (prm.vec2 && col + 1 < prm.n) {
                *reinterpret_cast<float2 *>(yr + col) = make_float2(v0, v1);
            } else {
                if (col < prm.n)
                    yr[col] = v0;
                if (col + 1 < prm.n)
                    yr[col + 1] = v1;
            }
        }
    }
}

template <int MH, bool BIG, int KPG>
__device__ static __forceinline__ void wg_consumer(const wg_smem &sm, const wg_params &prm, int w)
{
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(WG_REG_CONS));
    const int tid = threadIdx.x - 128 * (1 + w), wi = tid >> 5, lane = tid & 31, q = lane & 3;
    const int r_in = 16 * wi + (lane >> 2); /* row of accumulators 4j, 4j + 1 within a slice */
    const int m0 = blockIdx.x * (MH * 128), n0 = blockIdx.y * WG_BN;
    const int n_tiles = prm.n_tiles, n_batches = n_tiles * MH, g = prm.g;
    int d[64];
    float acc[MH][64];
#pragma unroll
    for (int i = 0; i < 64; i++) {
        d[i] = 0;
#pragma unroll
        for (int sl = 0; sl < MH; sl++)
            acc[sl][i] = 0.0f;
    }
    int s = 0, batch = 0;
    unsigned phase = 0;
    bool dead = false;
    for (int t = 0; t < n_tiles; t++) {
        wg_mbar_wait(wg_bar_full(sm, s), phase, dead);
        const int k0 = t * WG_BK;
        const int nks = min(4, (prm.k - k0) >> 5);
        const uint32_t a_tile = sm.base + (unsigned)s * sm.lay.stage_bytes;
        const uint32_t b_tile = sm.base + sm.lay.off_b + (unsigned)(t & 1) * WG_B_BYTES;
        const float4 *table = reinterpret_cast<const float4 *>(
            sm.gen + sm.lay.off_sw + (unsigned)(t & 1) * (unsigned)prm.nslots * 1024u);
        const float *xtable = reinterpret_cast<const float *>(
            sm.gen + sm.lay.off_sx +
            (unsigned)(t & 1) * (unsigned)prm.nslots * (unsigned)(MH * 128) * 4u);
#pragma unroll
        for (int sl = 0; sl < MH; sl++) {
            const int slice = w * MH + sl;
            const uint64_t da = wg_desc(a_tile + (unsigned)slice * 64u * 128u);
            const uint64_t db = wg_desc(b_tile);
            wg_turn_wait(w, batch);
            /* Commit groups of KPG k-steps: one weight group, or the whole tile when groups span
             * tiles. k is a multiple of g, so every commit group is complete: the MMAs of one are
             * issued straight, without branches between them. */
            for (int ks0 = 0; ks0 < nks; ks0 += KPG) {
                wg_wgmma_fence();
#pragma unroll
                for (int i = 0; i < KPG; i++) {
                    const int ks = ks0 + i, kg = k0 + 32 * ks;
                    /* +2 per k-step: 32 bytes further along the swizzled 128-byte rows */
                    wg_mma(d, da + 2u * (unsigned)ks, db + 2u * (unsigned)ks, (kg & (g - 1)) != 0);
                }
                wg_wgmma_commit();
                if (ks0 == 0)
                    wg_turn_pass(w, batch, n_batches);
                const int kl = k0 + 32 * (ks0 + KPG); /* k after this commit group */
                const bool end = (kl & (g - 1)) == 0;
                const int slot = BIG ? 0 : (32 * ks0) >> prm.log2g;
                float sx0 = 0.0f, sx1 = 0.0f;
                if (end) { /* token scales (staged by the producer), read while the MMAs run */
                    sx0 = xtable[slot * (MH * 128) + slice * 64 + r_in];
                    sx1 = xtable[slot * (MH * 128) + slice * 64 + r_in + 8];
                }
                wg_wgmma_wait0(d);
                if (end)
                    wg_fold<BIG>(acc[sl], d, table + slot * 64, sx0, sx1, q);
            }
            batch++;
        }
        wg_mbar_arrive(wg_bar_empty(sm, s));
        if (++s == sm.stages) {
            s = 0;
            phase ^= 1u;
        }
    }
    if (dead) /* a barrier timed out: make the failure visible */
#pragma unroll
        for (int sl = 0; sl < MH; sl++)
#pragma unroll
            for (int i = 0; i < 64; i++)
                acc[sl][i] = __int_as_float(0x7FC00000);
#pragma unroll
    for (int sl = 0; sl < MH; sl++)
        wg_store(prm, acc[sl], m0 + (w * MH + sl) * 64 + r_in, n0 + 2 * q);
}

#endif /* WG_HAVE_WGMMA */

template <int MH, bool BIG, int KPG>
__global__ void __launch_bounds__(WG_THREADS, 1)
    k_gemm_w6_wgmma_kernel(const __grid_constant__ CUtensorMap map_a,
                           const __grid_constant__ CUtensorMap map_p, const wg_params prm)
{
#ifdef WG_HAVE_WGMMA
    extern __shared__ unsigned char wg_smem_raw[];
    wg_smem sm;
    const uint32_t raw = k_smem_addr(wg_smem_raw);
    sm.base = (raw + 1023u) & ~1023u; /* swizzled tiles need 1024-byte alignment */
    sm.gen = wg_smem_raw + (sm.base - raw);
    sm.stages = prm.stages;
    sm.lay = wg_layout_of(MH, prm.stages, prm.nslots);
    if (threadIdx.x == 0) {
        for (int s = 0; s < sm.stages; s++) {
            wg_mbar_init(wg_bar_full(sm, s), 129u); /* 128 producer threads + the TMA arrival */
            wg_mbar_init(wg_bar_pfull(sm, s), 1u);
            wg_mbar_init(wg_bar_empty(sm, s), 256u); /* every consumer thread */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        wg_fence_proxy_async();
    }
    __syncthreads();
    const int wg = threadIdx.x >> 7;
    if (wg == 0)
        wg_producer<MH, BIG, BIG ? 1 : 4 / KPG>(sm, &map_a, &map_p, prm);
    else
        wg_consumer<MH, BIG, KPG>(sm, prm, wg - 1);
#else
    /* Not built for sm_90a: the static marker tells the host (sharedSizeBytes != 0) to refuse. */
    __shared__ unsigned char wg_not_sm90a_marker[16];
    reinterpret_cast<volatile unsigned char *>(wg_not_sm90a_marker)[threadIdx.x & 15] = 1;
    (void)map_a;
    (void)map_p;
    (void)prm;
    __trap();
#endif
}

/* ---- host ---- */

/* Encodes the 2D tensor maps: activations [m rows][k bytes] with boxes of BM x 128 and the 128-byte
 * swizzle; packed weights [n rows][n_chunks * 48 bytes] (row stride row_bytes) with 128 x 96 boxes.
 * Out-of-bounds boxes read zeros. */
static int wg_tensor_maps(const int8_t *qx, int m, const k_w6 *w, int bm, CUtensorMap *map_a,
                          CUtensorMap *map_p)
{
    void *fn = NULL;
    cudaDriverEntryPointQueryResult qres;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &qres) != cudaSuccess ||
        qres != cudaDriverEntryPointSuccess || fn == NULL) {
        cudaGetLastError();
        return -1;
    }
    PFN_cuTensorMapEncodeTiled_v12000 encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    const cuuint32_t estride[2] = {1, 1};
    const cuuint64_t a_dim[2] = {(cuuint64_t)w->k, (cuuint64_t)m};
    const cuuint64_t a_stride[1] = {(cuuint64_t)w->k};
    const cuuint32_t a_box[2] = {WG_BK, (cuuint32_t)bm};
    if (encode(map_a, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)qx, a_dim, a_stride, a_box, estride,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
        return -1;
    const cuuint64_t n_chunks = (cuuint64_t)(w->k + 63) / 64;
    const cuuint64_t p_dim[2] = {n_chunks * 48, (cuuint64_t)w->n};
    const cuuint64_t p_stride[1] = {(cuuint64_t)w->row_bytes};
    const cuuint32_t p_box[2] = {96, WG_BN};
    if (encode(map_p, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)w->packed, p_dim, p_stride, p_box,
               estride, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
        return -1;
    return 0;
}

/* k_gemm.h's common contract, and grid.y (tiles of WG_BN features) within its limit. */
static bool wg_args_ok(const int8_t *qx, const float *sx, int m, const k_w6 *w, const float *y,
                       long ldy)
{
    return k_gemm_w6_args_ok(qx, sx, m, INT_MAX, w, y, ldy) && w->n <= 65535 * WG_BN;
}

/* Device 'dev' is sm_90 and the kernel was built for sm_90a (not the trapping stub). */
template <int MH, bool BIG, int KPG> static bool wg_device_ok(int dev)
{
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    if (major != 9 || minor != 0)
        return false;
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, k_gemm_w6_wgmma_kernel<MH, BIG, KPG>) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return fa.sharedSizeBytes == 0;
}

template <int MH, bool BIG, int KPG>
static int wg_launch(const int8_t *qx, const wg_params &prm, const k_w6 *w, int dev,
                     cudaStream_t stream)
{
    if (!wg_device_ok<MH, BIG, KPG>(dev))
        return -1;
    int smem_max = 0;
    if (cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
        cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    /* as many stages as fit next to the fixed buffers */
    wg_params p = prm;
    const wg_layout l0 = wg_layout_of(MH, 0, p.nslots);
    const long fixed = 1024 + (long)l0.off_bar + 3 * 8 * WG_MAX_STAGES;
    long stages = ((long)smem_max - fixed) / (long)l0.stage_bytes;
    if (stages > WG_MAX_STAGES)
        stages = WG_MAX_STAGES;
    if (stages < WG_MIN_STAGES)
        return -1;
    p.stages = (int)stages;
    const size_t smem = 1024 + wg_layout_of(MH, p.stages, p.nslots).total;
    CUtensorMap map_a, map_p;
    if (wg_tensor_maps(qx, p.m, w, MH * 128, &map_a, &map_p) != 0)
        return -1;
    /* always the device maximum: concurrent calls from other host threads set the same value */
    if (cudaFuncSetAttribute(k_gemm_w6_wgmma_kernel<MH, BIG, KPG>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                             smem_max) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    const dim3 grid((unsigned)((p.m + MH * 128 - 1) / (MH * 128)),
                    (unsigned)((p.n + WG_BN - 1) / WG_BN));
    k_gemm_w6_wgmma_kernel<MH, BIG, KPG><<<grid, WG_THREADS, smem, stream>>>(map_a, map_p, p);
    if (cudaGetLastError() != cudaSuccess)
        return -1;
    return 0;
}

/* The kernel for MH and g <= 128: KPG = g / 32 k-steps per commit group. */
template <int MH>
static int wg_launch_small_g(const int8_t *qx, const wg_params &prm, const k_w6 *w, int dev,
                             cudaStream_t stream)
{
    if (prm.g == 32)
        return wg_launch<MH, false, 1>(qx, prm, w, dev, stream);
    if (prm.g == 64)
        return wg_launch<MH, false, 2>(qx, prm, w, dev, stream);
    return wg_launch<MH, false, 4>(qx, prm, w, dev, stream);
}

/* Whole waves of CTAs (one per SM) a tile count needs. */
static long wg_waves(long ctas, int sms)
{
    return (ctas + sms - 1) / sms;
}

extern "C" int k_gemm_w6_wgmma(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                               long ldy, cudaStream_t stream)
{
    if (!wg_args_ok(qx, sx, m, w, y, ldy))
        return -1; /* FQ_EINVAL */
    int dev = 0, sms = 0;
    if (k_device_current(&dev, &sms) != 0)
        return -1;
    wg_params prm;
    prm.sx = sx;
    prm.sw = w->sw;
    prm.y = y;
    prm.ldy = ldy;
    prm.m = m;
    prm.n = w->n;
    prm.k = w->k;
    prm.g = w->g;
    prm.ng = w->k / w->g;
    prm.log2g = 0;
    while ((1 << prm.log2g) < w->g)
        prm.log2g++;
    prm.n_tiles = (w->k + WG_BK - 1) / WG_BK;
    prm.stages = 0; /* set by wg_launch */
    prm.nslots = w->g <= WG_BK ? WG_BK / w->g : 1;
    prm.vec2 = (ldy % 2 == 0 && ((uintptr_t)y & 7) == 0) ? 1 : 0;
    if (w->g > WG_BK)
        return wg_launch<1, true, 4>(qx, prm, w, dev, stream);
    /* 256-token tiles do twice the work per CTA at ~15% better efficiency (fewer loads and unpacks
     * per MMA); use them when that takes fewer whole waves. */
    const long nb = (w->n + WG_BN - 1) / WG_BN;
    const long cost1 = 100 * wg_waves((m + 127) / 128 * nb, sms);
    const long cost2 = 170 * wg_waves((m + 255) / 256 * nb, sms);
    if (cost2 < cost1)
        return wg_launch_small_g<2>(qx, prm, w, dev, stream);
    return wg_launch_small_g<1>(qx, prm, w, dev, stream);
}

/* k_gemm_w6_gemv.cu — decode GEMM (m <= 64), second design: packed INT6 weights streamed from
 * global memory straight into registers (no shared-memory staging, no clusters), times int8
 * activation codes with mma.sync m16n8k32 s8, the weights as the 16-row A operand.
 *
 * Design (decode is memory-bound; the aim is many wide loads in flight on every SM):
 * - A block of S warps owns one 16-row tile of outputs (two at 17..32 tokens: gv_rt); warp s
 *   streams the s-th K-range (whole groups) of those rows. The S fp32 partials meet in shared
 *   memory and are summed in the fixed order s = 0..S-1 (deterministic, no workspace, no atomics).
 * - Units: U = 2 chunks (128 codes) when g >= 128, else U = 1 chunk (64 codes). Lane (q, t) holds
 *   rows q and q + 8 of the tile; with h = t & 1 and r = t >> 1 it loads per unit and row
 *     U = 2: chunk 2u + r, low-plane bytes 16h..16h+15 and high-plane bytes 0..15 (two 16-byte
 *            loads),
 *     U = 1: chunk u, low-plane bytes 16h+8r..16h+8r+7 and high-plane bytes 8r..8r+7 (8 bytes
 * each). Low-plane byte b holds the low nibbles of codes b and b + 32, whose top bits sit in field
 *   (b >> 4) and (b >> 4) + 2 of high-plane byte b & 15, which the same lane loaded. So a lane's
 *   low word j with its high word j gives 4 codes (low nibbles, field h) and 4 codes (high nibbles,
 *   field h + 2): the A registers of the "lo" and "hi" k-steps.
 * - The k order inside a unit is permuted identically for all rows and for the activations: in
 *   k-step (p, x) (p < U, x = lo/hi) lane t supplies at fragment positions 4t..4t+3 and
 *   16+4t..16+4t+3 the 8 consecutive codes starting at
 *     64 * chunk + 16h + 8 * (U == 2 ? p : r) + 32x   (chunk = 2u + r for U = 2, u for U = 1),
 *   and its B fragment is the 8 activation bytes at the same codes (one 8-byte load per token).
 *   For U = 2 a k-step mixes codes of the unit's two chunks: both lie in one group (g >= 128).
 *   For U = 1 the lo k-step is codes 0..31 of the chunk and the hi k-step codes 32..63, so g = 32
 *   works (two groups per chunk) and the padding half of K's last chunk (k % 64 == 32) is skipped.
 * - Unpacking at scale 4 as in k_gemm_w6_mma.cu: the byte (lo4 << 2) | ((hi2 ^ 2) << 6) is the int8
 *   4 * q; the fold uses sw / 4 (exact). int32 accumulators per group; at each group's end one fp32
 *   fold without FMA, groups ascending: y = y + (sx * sw) * d.
 * - A register ring of D units per warp: unit i + D - 1 is requested (ld.global.nc, no L1
 *   allocation, with the weight scales of its groups) before unit i is computed; all ring indices
 *   are compile-time constants. A unit's activation fragments and token scales are requested
 *   together at its start, ahead of its unpacking. Rows past n, tokens past m and ring requests
 *   past the warp's K-range are clamped to valid ones (never stored), so no load is guarded.
 *   Measured (tests/bench/bench_stream.cu): this kernel reads as fast as the bare loads of its
 *   access pattern do (2311 vs 2326 GB/s on 8192 x 28672), so the math is hidden; a tile-major
 *   layout would read 16 % faster.
 * - The host picks S (1..8) from the shape and the SM count alone, to fill the GPU with whole waves
 *   of blocks: not from m, so each token's output is computed in the same order whatever m is (the
 *   kernel is m-invariant per row, which batch-invariant decoding and padded CUDA-graph buckets
 * rely on; S = 16 was faster only for gate/up-like shapes at m <= 16, by one wave in eleven).
 */
#include "k.h"
#include "k_gemm.h"
#include "k_ptx.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

/* Most warps per block for ceil(m / 8) = mt token tiles, the kernel's __launch_bounds__ (which
 * then allows 128 registers per thread for mt <= 2, else 255); the host plans the split for 8
 * (gv_smax(8)) whatever m is, so that results do not depend on m. */
__host__ __device__ constexpr int gv_smax(int mt)
{
    return mt <= 2 ? 16 : 8;
}

/* Units in the register ring: fewer when the accumulators take many registers. */
__host__ __device__ constexpr int gv_depth(int mt, int u)
{
    return u == 2 ? (mt == 1 ? 4 : mt == 2 ? 3 : 2) : (mt == 1 ? 6 : mt <= 3 ? 4 : mt == 4 ? 2 : 3);
}

/* Everything a block needs (by value, in the parameter space). */
struct gv_params {
    const int8_t *qx;      /* [m, k] */
    const float *sx;       /* [m, ng] */
    const uint8_t *packed; /* [n, row_bytes] */
    const uint16_t *sw;    /* [n, ng] fp16 bits */
    float *y;              /* [m, ldy] */
    long row_bytes, ldy;
    int m, n, k, g, g_shift, ng;
    int splits;  /* S: warps per block, one K-range each */
    int gu;      /* units per K-range granule: max(1, g / (64 U)) */
    int n_gu;    /* granules in K: ceil(n_units / gu) */
    int n_units; /* ceil(k / (64 U)) */
};

/* One unit of one lane in the ring: low- and high-plane words of rows q (a = 0) and q + 8 (a = 1),
 * and the fp16 weight scales of rows q, q + 8 for the unit's group(s) (U = 1: the groups of its
 * codes 0 and 32). */
template <int U> struct gv_slot {
    unsigned lo[2][2 * U];
    unsigned hi[2][2 * U];
    unsigned short sw[2][2];
};

/* ---- PTX wrappers ---- */

__device__ __forceinline__ unsigned short gv_ldh(const uint16_t *p)
{
    unsigned short v;
    asm volatile("ld.global.nc.u16 %0, [%1];\n" : "=h"(v) : "l"(p));
    return v;
}

/* Four codes as the int8 values 4 * q: lo has the four low nibbles at bits 2..5 of its bytes, hi
 * the two top bits at bits 6..7 (other bits of either are ignored); (u - 32) * 4 = (lo4 << 2) +
 * ((hi2 - 2) << 6), and hi2 - 2 as two bits is hi2 ^ 2. */
__device__ __forceinline__ unsigned gv_q4(unsigned lo, unsigned hi)
{
    return ((lo & 0x3C3C3C3Cu) | (hi & 0xC0C0C0C0u)) ^ 0x80808080u;
}

/* ---- the ring ---- */

/* The lane's fixed addresses: rows past n and tokens past m are clamped to the last valid one (they
 * read real data; their results are never stored), so no load needs a guard. */
template <int MT> struct gv_lane {
    const uint8_t *w[2]; /* rows q, q + 8: the lane's first low-plane byte of unit ub */
    int s[2];            /* rows q, q + 8: offset of their fp16 scales in p.sw */
    int x[MT];           /* B token 8j + q: offset of its activation byte xoff of unit ub in p.qx */
    int sx[MT][2];       /* accumulator tokens 8j + 2t + e: offset of their scale rows in p.sx */
};

/* Requests relative unit i (unit ub + i) into sl. */
template <int MT, int U>
__device__ __forceinline__ void gv_load(const gv_params &p, const gv_lane<MT> &ln, int ub, int i,
                                        int hoff, gv_slot<U> &sl)
{
    const int kc = (ub + i) * 64 * U;
    const int g0 = kc >> p.g_shift;
    const int g1 = U == 1 ? min((kc + 32) >> p.g_shift, p.ng - 1) : g0;
#pragma unroll
    for (int a = 0; a < 2; a++) {
        const uint8_t *b = ln.w[a] + i * (48 * U);
        if (U == 2) {
            unsigned v[4];
            k_ld_stream16(v, b);
#pragma unroll
            for (int j = 0; j < 4; j++)
                sl.lo[a][j] = v[j];
            k_ld_stream16(v, b + hoff);
#pragma unroll
            for (int j = 0; j < 4; j++)
                sl.hi[a][j] = v[j];
        } else {
            unsigned v[2];
            k_ld_stream8(v, b);
            sl.lo[a][0] = v[0];
            sl.lo[a][1] = v[1];
            k_ld_stream8(v, b + hoff);
            sl.hi[a][0] = v[0];
            sl.hi[a][1] = v[1];
        }
        sl.sw[a][0] = gv_ldh(p.sw + ln.s[a] + g0);
        sl.sw[a][1] = U == 1 ? gv_ldh(p.sw + ln.s[a] + g1) : sl.sw[a][0];
    }
}

/* One lane's accumulators for MT n8 tiles: element e of [j] is row q + 8 * (e >> 1), token
 * 8j + 2t + (e & 1). */
template <int MT> struct gv_acc {
    int d[MT][4];   /* 4 x the current group's sums */
    float y[MT][4]; /* fp32 sum of the groups done */
};

/* The activation fragments of one unit ([j][2 pp + x]: k-step (pp, x)) and the token scales of its
 * group(s) ([j][e][0 or 1]), requested together before the unit's unpacking so that their latency
 * (mostly L1 hits) hides behind it. */
template <int MT, int U> struct gv_xs {
    uint2 b[MT][2 * U];
    float sx[MT][2][2];
};

template <int MT, int U>
__device__ __forceinline__ void gv_load_x(const gv_params &p, const gv_lane<MT> &ln, int ub, int i,
                                          gv_xs<MT, U> &xs)
{
    const int kc = (ub + i) * 64 * U;
    const int g0 = kc >> p.g_shift;
    const int g1 = U == 1 ? min((kc + 32) >> p.g_shift, p.ng - 1) : g0;
    const bool second = U == 2 || kc + 32 < p.k; /* U = 1: not the padding half of the last chunk */
#pragma unroll
    for (int j = 0; j < MT; j++) {
        const int8_t *xr = p.qx + (ln.x[j] + i * (64 * U));
#pragma unroll
        for (int pp = 0; pp < U; pp++) {
            xs.b[j][2 * pp] = __ldg(reinterpret_cast<const uint2 *>(xr + 8 * pp));
            xs.b[j][2 * pp + 1] = second ? __ldg(reinterpret_cast<const uint2 *>(xr + 8 * pp + 32))
                                         : make_uint2(0, 0);
        }
#pragma unroll
        for (int e = 0; e < 2; e++) {
            xs.sx[j][e][0] = __ldg(p.sx + (ln.sx[j][e] + g0));
            xs.sx[j][e][1] = U == 1 ? __ldg(p.sx + (ln.sx[j][e] + g1)) : xs.sx[j][e][0];
        }
    }
}

/* y += (sx * sw) * d for one group, without FMA; clears d. The int32 is 4d (|4d| <= 2^23, exact as
 * a float) and the weight scale is divided by 4 (exact), so this rounds as (sx * sw) * d does. */
template <int MT, int U>
__device__ __forceinline__ void gv_fold(gv_acc<MT> &s, const unsigned short (&swr)[2][2],
                                        const gv_xs<MT, U> &xs, int sel)
{
    float swv[2];
#pragma unroll
    for (int a = 0; a < 2; a++)
        swv[a] = 0.25f * __half2float(__ushort_as_half(swr[a][sel]));
#pragma unroll
    for (int j = 0; j < MT; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float f = __int2float_rn(s.d[j][e]);
            const float sc = __fmul_rn(xs.sx[j][e & 1][sel], swv[e >> 1]);
            s.y[j][e] = __fadd_rn(s.y[j][e], __fmul_rn(sc, f));
            s.d[j][e] = 0;
        }
    }
}

/* The MMAs of k-steps (p, x) for p < U of one unit. */
template <int MT, int U>
__device__ __forceinline__ void gv_ksteps(const gv_slot<U> &sl, const gv_xs<MT, U> &xs, int x,
                                          int shl, gv_acc<MT> &s)
{
#pragma unroll
    for (int pp = 0; pp < U; pp++) {
        unsigned A[2][2]; /* [row a][word 2pp + w] */
#pragma unroll
        for (int a = 0; a < 2; a++) {
#pragma unroll
            for (int w = 0; w < 2; w++) {
                const unsigned lo = sl.lo[a][2 * pp + w], hi = sl.hi[a][2 * pp + w];
                A[a][w] = x == 0 ? gv_q4(lo << 2, hi << shl) : gv_q4(lo >> 2, hi << (shl - 4));
            }
        }
#pragma unroll
        for (int j = 0; j < MT; j++) {
            const uint2 b = xs.b[j][2 * pp + x];
            k_mma_s8(s.d[j], A[0][0], A[1][0], A[0][1], A[1][1], b.x, b.y);
        }
    }
}

/* Computes relative unit i (unit ub + i) of the RT row tiles from sl[rt], folding at the ends of
 * groups; the tiles share one load of the unit's activations. */
template <int MT, int U, int RT>
__device__ __forceinline__ void gv_compute(const gv_params &p, const gv_lane<MT> &ln,
                                           const gv_slot<U> (&sl)[RT], int ub, int i, int shl,
                                           gv_acc<MT> (&s)[RT])
{
    gv_xs<MT, U> xs;
    gv_load_x<MT, U>(p, ln, ub, i, xs);
    const int u = ub + i, kc = u * 64 * U;
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
        gv_ksteps<MT, U>(sl[rt], xs, 0, shl, s[rt]);
        if (U == 1 && p.g == 32)
            gv_fold<MT, U>(s[rt], sl[rt].sw, xs, 0);
        if (U == 2 || kc + 32 < p.k) {
            gv_ksteps<MT, U>(sl[rt], xs, 1, shl, s[rt]);
            if (U == 1)
                gv_fold<MT, U>(s[rt], sl[rt].sw, xs, 1);
        }
        if (U == 2 && (u + 1) % p.gu == 0)
            gv_fold<MT, U>(s[rt], sl[rt].sw, xs, 0);
    }
}

/* Floats per token row of the partials in shared memory for RT row tiles (conflict-free). */
__host__ __device__ constexpr int gv_rs(int rt)
{
    return 16 * rt + 4;
}

template <int MT, int U, int RT>
__global__ void __launch_bounds__(32 * gv_smax(MT), 1) k_gemm_w6_gemv_kernel(const gv_params p)
{
    constexpr int D = gv_depth(MT, U), RS = gv_rs(RT);
    extern __shared__ float gv_red[]; /* [S][8 * MT][RS]: the warps' partials */
    const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int q = lane >> 2, t = lane & 3, h = t & 1, r = t >> 1;
    const int n0 = (int)blockIdx.x * 16 * RT;
    const int S = p.splits;
    const int ub = (int)((long)warp * p.n_gu / S) * p.gu;
    const int ue = min((int)((long)(warp + 1) * p.n_gu / S) * p.gu, p.n_units);
    const int nu = ue - ub;

    /* the lane's rows (per tile), bytes and tokens */
    const int lo_off = U == 2 ? 48 * r + 16 * h : 16 * h + 8 * r; /* low-plane bytes in a unit */
    const int hoff = 32 - 16 * h; /* high-plane bytes minus low-plane bytes (both U) */
    const int xoff = U == 2 ? 64 * r + 16 * h : 16 * h + 8 * r;
    gv_lane<MT> ln[RT];
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
#pragma unroll
        for (int a = 0; a < 2; a++) {
            const int row = min(n0 + 16 * rt + q + 8 * a, p.n - 1);
            ln[rt].w[a] = p.packed + (long)row * p.row_bytes + lo_off + (long)ub * (48 * U);
            ln[rt].s[a] = row * p.ng;
        }
#pragma unroll
        for (int j = 0; j < MT; j++) {
            ln[rt].x[j] = min(8 * j + q, p.m - 1) * p.k + xoff + ub * (64 * U);
#pragma unroll
            for (int e = 0; e < 2; e++)
                ln[rt].sx[j][e] = min(8 * j + 2 * t + e, p.m - 1) * p.ng;
        }
    }
    const int shl = 6 - 2 * h; /* lo k-step: field h to bits 6..7; hi: field h + 2 (shl - 4) */

    gv_acc<MT> s[RT];
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
#pragma unroll
        for (int j = 0; j < MT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[rt].d[j][e] = 0;
                s[rt].y[j][e] = 0.0f;
            }
        }
    }

    /* The ring: unit i + D - 1 is requested before unit i is computed. Requests past the range
     * re-read its last unit (in bounds, never computed), so the loads carry no guards and the full
     * rounds no branches. */
    gv_slot<U> ring[D][RT];
    const int last = nu - 1; /* the host gives every warp at least one granule */
#pragma unroll
    for (int i = 0; i < D - 1; i++) {
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
            gv_load<MT, U>(p, ln[rt], ub, min(i, last), hoff, ring[i][rt]);
    }
    int base = 0;
    for (; base + D <= nu; base += D) {
#pragma unroll
        for (int sl = 0; sl < D; sl++) {
#pragma unroll
            for (int rt = 0; rt < RT; rt++)
                gv_load<MT, U>(p, ln[rt], ub, min(base + sl + D - 1, last), hoff,
                               ring[(sl + D - 1) % D][rt]);
            gv_compute<MT, U, RT>(p, ln[0], ring[sl], ub, base + sl, shl, s);
        }
    }
#pragma unroll
    for (int sl = 0; sl < D - 1; sl++) /* the rest (fewer than D units) is in slots 0..D-2 */
        if (base + sl < nu)
            gv_compute<MT, U, RT>(p, ln[0], ring[sl], ub, base + sl, shl, s);

    /* the partial of this warp: red[warp][tok][row] */
    float *red = gv_red + warp * 8 * MT * RS;
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
#pragma unroll
        for (int j = 0; j < MT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++)
                red[(8 * j + 2 * t + (e & 1)) * RS + 16 * rt + q + 8 * (e >> 1)] = s[rt].y[j][e];
        }
    }
    __syncthreads();
    for (int i = tid; i < 16 * RT * p.m; i += (int)blockDim.x) {
        const int tok = i / (16 * RT), row = i % (16 * RT);
        if (n0 + row < p.n) {
            float sum = gv_red[tok * RS + row];
            for (int sp = 1; sp < S; sp++)
                sum = __fadd_rn(sum, gv_red[(sp * 8 * MT + tok) * RS + row]);
            p.y[(long)tok * p.ldy + n0 + row] = sum;
        }
    }
}

/* ---- host side ---- */

/* Splits per tile among 1..smax (at most the K granules), with smax resident warps per SM, so
 * per_sm = smax / s resident blocks of s warps. A wave of blocks, at the SM's full bandwidth, takes
 * per_sm times one block's bytes (a block streams a whole 16-row tile whatever s is): the cost is
 * waves * per_sm. Ties go to more resident warps (per_sm * s: latency hiding), then fewer splits.
 */
static int gv_splits(int tiles, int n_gu, int smax, int sms)
{
    int best = 1, best_warps = 0;
    long best_cost = -1;
    for (int s = 1; s <= smax && s <= n_gu; s++) {
        const int per_sm = smax / s;
        const long resident = (long)sms * per_sm;
        const long waves = (tiles + resident - 1) / resident;
        const long cost = waves * per_sm;
        if (best_cost < 0 || cost < best_cost || (cost == best_cost && per_sm * s > best_warps)) {
            best_cost = cost;
            best_warps = per_sm * s;
            best = s;
        }
    }
    return best;
}

/* Row tiles per warp: two for 17..32 tokens, where the activation fragments (loaded once per unit
 * for every tile of the warp) would otherwise be re-read by every 16-row tile; one elsewhere (fewer
 * tokens: little to share; more: the registers would spill). The K split and each output's sum
 * order do not depend on it, so results stay the same for every m. */
__host__ __device__ constexpr int gv_rt(int mt)
{
    return mt == 3 || mt == 4 ? 2 : 1;
}

template <int MT, int U> static int gv_launch(const gv_params &p, int tiles16, cudaStream_t st)
{
    constexpr int RT = gv_rt(MT);
    const int blocks = (tiles16 + RT - 1) / RT;
    const size_t smem = (size_t)p.splits * 8 * MT * gv_rs(RT) * sizeof(float);
    k_gemm_w6_gemv_kernel<MT, U, RT><<<(unsigned)blocks, (unsigned)(32 * p.splits), smem, st>>>(p);
    if (cudaGetLastError() != cudaSuccess)
        return -1;
    return 0;
}

template <int U> static int gv_dispatch(int mt, const gv_params &p, int tiles, cudaStream_t st)
{
    switch (mt) {
    case 1:
        return gv_launch<1, U>(p, tiles, st);
    case 2:
        return gv_launch<2, U>(p, tiles, st);
    case 3:
        return gv_launch<3, U>(p, tiles, st);
    case 4:
        return gv_launch<4, U>(p, tiles, st);
    case 5:
        return gv_launch<5, U>(p, tiles, st);
    case 6:
        return gv_launch<6, U>(p, tiles, st);
    case 7:
        return gv_launch<7, U>(p, tiles, st);
    case 8:
        return gv_launch<8, U>(p, tiles, st);
    default:
        return -1;
    }
}

extern "C" size_t k_gemm_w6_gemv_ws_bytes(const k_w6 *w, int m)
{
    (void)w;
    (void)m;
    return 0; /* split-K partials are summed in shared memory within a block */
}

extern "C" int k_gemm_w6_gemv(const int8_t *qx, const float *sx, int m, const k_w6 *w, float *y,
                              long ldy, void *ws, size_t ws_bytes, cudaStream_t stream)
{
    (void)ws;
    (void)ws_bytes;
    if (!k_gemm_w6_args_ok(qx, sx, m, K_GEMM_DECODE_MAX_M, w, y, ldy))
        return -1; /* FQ_EINVAL */
    int dev = 0, sms = 0;
    if (k_device_current(&dev, &sms) != 0)
        return -1;
    const int U = w->g >= 128 ? 2 : 1;
    const int mt = (m + 7) / 8;
    const int tiles = (w->n + 15) / 16;
    gv_params p;
    memset(&p, 0, sizeof p);
    p.qx = qx;
    p.sx = sx;
    p.packed = w->packed;
    p.sw = w->sw;
    p.y = y;
    p.row_bytes = w->row_bytes;
    p.ldy = ldy;
    p.m = m;
    p.n = w->n;
    p.k = w->k;
    p.g = w->g;
    p.g_shift = 0;
    while ((1 << p.g_shift) < w->g)
        p.g_shift++;
    p.ng = w->k / w->g;
    p.n_units = (w->k + 64 * U - 1) / (64 * U);
    p.gu = w->g >= 64 * U ? w->g / (64 * U) : 1;
    p.n_gu = (p.n_units + p.gu - 1) / p.gu;
    p.splits = gv_splits(tiles, p.n_gu, gv_smax(8), sms); /* m-invariant: the same S for every m */
    return U == 2 ? gv_dispatch<2>(mt, p, tiles, stream) : gv_dispatch<1>(mt, p, tiles, stream);
}

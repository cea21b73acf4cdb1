/* k_btc.cu — the paper-faithful binary tensor-core (BTC) INT6 GEMM: bit planes of offset-binary
 * codes multiplied with `mma ... .b1 ... .and.popc` (the comparison path of k_btc.h).
 *
 * Bit planes. Weights u_w = q_w + 32 (6 planes), activations u_x = q_x + ox with ox = 2^(bits-1)
 * (6 or 8 planes). K is cut into k-blocks of 128 codes and each k-block into 4 words of 32 codes;
 * within a word, bit 8e + i holds code 4i + e (the order in which a SWAR transpose of 8
 * little-endian 32-bit words gives the bits; weights and activations share it, and a popcount does
 * not care).
 *
 * Layouts, both made for one coalesced load per fragment register set:
 *   weight buffer (k_btc_pack_weights): n_pad = ceil(n / 16) * 16 rows (padding rows are zero)
 *     planes: uint4 [n_pad / 16][k / 128][3][32 lanes]; lane = 4 * gid + tig holds, for the 16-row
 *       tile, word tig of the k-block of rows gid and gid + 8 of planes 2q and 2q + 1:
 *       {plane 2q row gid, plane 2q row gid + 8, plane 2q + 1 row gid, plane 2q + 1 row gid + 8}
 *       — exactly the A fragment registers {a0, a1} of m16n8k128 for two planes.
 *     then (256-byte aligned) Sw: int32 [k / g][n_pad], the sum of u_w over each (row, group).
 *   workspace (k_btc_gemm, first kernel): m_pad = ceil(m / 8) * 8 rows (padding rows are zero)
 *     planes: uint2 [m_pad / 8][k / 128][bits / 2][32 lanes]; lane = 4 * gid + tig holds word tig
 *       of row gid of the 8-row tile for planes 2q and 2q + 1 — the B fragment register b0.
 *     then (256-byte aligned) Sx: int32 [k / g][m_pad], the sum of u_x over each (row, group).
 *
 * The GEMM kernel. Weights are the 16-row operand A, activations the 8-column operand B, so a
 * warp's accumulator tile is 16 outputs n x 8 tokens m (per m-tile; a warp holds TM of them). Per
 * k-block, the popcount sums P_ij of plane pairs are folded into U = sum 2^(i+j) P_ij by Horner's
 * rule over the diagonals s = i + j (descending: shift the int32 accumulator left by one, then add
 * every P_ij of the diagonal with the accumulator as the mma's C operand). Two pairs of one
 * diagonal share one m16n8k256 (pair 1 in k 0..127, pair 2 in k 128..255 of the instruction: only a
 * choice of registers); an odd one out uses m16n8k128. That is 21 (A6) or 27 (A8) mmas per k-block
 * and m-tile. U is exact in int32 (at most 63 * 255 * 512). Per group the signed sum is
 *   d = U - 32 * Sx - ox * Sw + 32 * ox * g,
 * folded into the fp32 accumulator as acc + (sx * sw) * d with __fmul_rn / __fadd_rn, groups in
 * ascending order (the order rt_cpu_int6.h documents). A block is 8 warps over one 16-row weight
 * tile: KS warps split the groups (for small m, so that enough warps stream the weights) and 8 / KS
 * warps take different m-tiles (for large m; they read the same weight words, which the L1 and L2
 * serve). With KS > 1 the warps' partial sums are added in a fixed order through shared memory, so
 * results are deterministic; with KS == 1 (m > 128) they equal rt_cpu_matmul_q6 bit for bit.
 * Loads of the next k-block are issued before the mmas of the current one (register double buffer).
 */
#include "k_btc.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define BTC_KB          128 /* codes per k-block */
#define BTC_WORDS       4   /* 32-bit words per row and k-block */
#define BTC_NT          16  /* weight rows per tile (mma M) */
#define BTC_MT          8   /* activation rows per tile (mma N) */
#define BTC_WPLANES     6   /* weight planes */
#define BTC_WARPS       8   /* warps per GEMM block */
#define BTC_THREADS     (BTC_WARPS * 32)
#define BTC_AUX_THREADS 256 /* threads per block of the packing kernels */
#define BTC_ALIGN       256 /* alignment of the sums inside the buffers */
#define BTC_MAX_TILES_N 65535

/* ---- sizes shared by the host code ---- */

static size_t btc_align(size_t x)
{
    return (x + (BTC_ALIGN - 1)) & ~(size_t)(BTC_ALIGN - 1);
}

/* The group sizes this path supports: multiples of 128 whose 32-code words per group (4, 8, 16)
 * divide a warp, so a group's sum is one shuffle reduction. */
static bool btc_group_ok(int k, int g)
{
    return (g == 128 || g == 256 || g == 512) && k > 0 && k % g == 0;
}

static long btc_round_up(long x, long r)
{
    return (x + r - 1) / r * r;
}

static size_t btc_w_planes_bytes(long n_pad, long k)
{
    return (size_t)n_pad * (size_t)(k / 32) * BTC_WPLANES * 4;
}

static size_t btc_x_planes_bytes(long m_pad, long k, int bits)
{
    return (size_t)m_pad * (size_t)(k / 32) * (size_t)bits * 4;
}

static bool btc_w6_ok(const k_w6 *w)
{
    return w && w->packed && w->sw && w->n >= 1 && btc_group_ok(w->k, w->g) &&
           w->row_bytes >= (long)w->k / 64 * 48 && w->row_bytes % 16 == 0 &&
           ((uintptr_t)w->packed & 15) == 0 &&
           btc_round_up(w->n, BTC_NT) / BTC_NT <= BTC_MAX_TILES_N;
}

/* ---- device helpers ---- */

/* The planes of 32 codes u (u[i] holds codes 4i .. 4i + 3, one per byte): bit 8e + i of pl[p] is
 * bit p of code 4i + e. */
template <int P>
__device__ __forceinline__ void btc_planes(const unsigned (&u)[8], unsigned (&pl)[P])
{
#pragma unroll
    for (int p = 0; p < P; p++) {
        unsigned w = 0;
#pragma unroll
        for (int i = 0; i < 8; i++)
            w |= ((u[i] >> p) & 0x01010101u) << i;
        pl[p] = w;
    }
}

/* Sum of the 32 byte codes u. */
__device__ __forceinline__ unsigned btc_code_sum(const unsigned (&u)[8])
{
    unsigned s = 0;
#pragma unroll
    for (int i = 0; i < 8; i++)
        s = __dp4a(u[i], 0x01010101u, s);
    return s;
}

/* Sum of s over the gw lanes (a power of two dividing 32, aligned) of a group; all lanes active. */
__device__ __forceinline__ unsigned btc_group_sum(unsigned s, int gw)
{
    for (int o = gw >> 1; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

/* c += popc(A & B) over k 256: A rows {a0, a1} in k 0..127 and {a2, a3} in k 128..255. */
__device__ __forceinline__ void btc_mma256(int (&c)[4], unsigned a0, unsigned a1, unsigned a2,
                                           unsigned a3, unsigned b0, unsigned b1)
{
    asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* c += popc(A & B) over k 128. */
__device__ __forceinline__ void btc_mma128(int (&c)[4], unsigned a0, unsigned a1, unsigned b0)
{
    asm("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc {%0, %1, %2, %3}, "
        "{%4, %5}, {%6}, {%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
}

/* ---- weight planes (k_btc_pack_weights) ---- */

/* One thread per (row, 32-code word) of the padded weight matrix; the thread count is a multiple
 * of 32, so whole warps leave together and the group shuffles see full warps. */
__global__ void __launch_bounds__(BTC_AUX_THREADS)
    k_btc_pack_w_kernel(const uint8_t *__restrict__ packed, long row_bytes, int n, int n_pad, int k,
                        int g, unsigned *__restrict__ planes, int *__restrict__ sums)
{
    const int kw = k / 32;
    const long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long)n_pad * kw)
        return;
    const int row = (int)(t / kw), w = (int)(t % kw);

    unsigned u[8];
    if (row < n) {
        /* word w = codes 32w .. 32w + 31 = half (w & 1) of chunk w / 2 (fq_pack.h) */
        const uint4 *c =
            reinterpret_cast<const uint4 *>(packed + (long)row * row_bytes + (long)(w >> 1) * 48);
        const uint4 l0 = __ldg(c), l1 = __ldg(c + 1), h = __ldg(c + 2);
        const unsigned lw[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
        const unsigned hw[4] = {h.x, h.y, h.z, h.w};
        const int half = w & 1;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int s = (i < 4 ? 0 : 2) + 4 * half; /* high bits of codes 16.. sit 2 higher */
            u[i] = ((lw[i] >> (4 * half)) & 0x0F0F0F0Fu) | (((hw[i & 3] >> s) & 0x03030303u) << 4);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            u[i] = 0;
    }

    unsigned pl[BTC_WPLANES];
    btc_planes<BTC_WPLANES>(u, pl);
    const int gw = g / 32;
    const unsigned s = btc_group_sum(btc_code_sum(u), gw);

    const int nt = row / BTC_NT, r = row % BTC_NT, kb = w / BTC_WORDS;
    const int lane = (r & 7) * 4 + w % BTC_WORDS;
    unsigned *dst = planes + (((long)nt * (k / BTC_KB) + kb) * 3 * 32 + lane) * 4 + (r >> 3);
#pragma unroll
    for (int p = 0; p < BTC_WPLANES; p++)
        dst[(p >> 1) * 32 * 4 + (p & 1) * 2] = pl[p];
    if (w % gw == 0)
        sums[(long)(w / gw) * n_pad + row] = (int)s;
}

/* ---- activation planes (first kernel of k_btc_gemm) ---- */

/* One thread per (row, 32-code word) of the padded activation matrix, as for the weights. */
template <int BITS>
__global__ void __launch_bounds__(BTC_AUX_THREADS)
    k_btc_act_kernel(const int8_t *__restrict__ qx, int m, int m_pad, int k, int g,
                     uint2 *__restrict__ planes, int *__restrict__ sums)
{
    constexpr int Q = BITS / 2;
    const int kw = k / 32;
    const long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long)m_pad * kw)
        return;
    const int row = (int)(t / kw), w = (int)(t % kw);

    unsigned u[8];
    if (row < m) {
        const uint4 *p = reinterpret_cast<const uint4 *>(qx + (long)row * k + (long)w * 32);
        const uint4 a = __ldg(p), b = __ldg(p + 1);
        const unsigned v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 8; i++) /* u = q + 2^(BITS-1) per byte, no carries between bytes */
            u[i] = BITS == 8 ? v[i] ^ 0x80808080u : __vadd4(v[i], 0x20202020u);
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            u[i] = 0;
    }

    unsigned pl[BITS];
    btc_planes<BITS>(u, pl);
    const int gw = g / 32;
    const unsigned s = btc_group_sum(btc_code_sum(u), gw);

    const int mt = row / BTC_MT, kb = w / BTC_WORDS;
    const int lane = (row % BTC_MT) * 4 + w % BTC_WORDS;
    uint2 *dst = planes + ((long)mt * (k / BTC_KB) + kb) * Q * 32 + lane;
#pragma unroll
    for (int q = 0; q < Q; q++)
        dst[q * 32] = make_uint2(pl[2 * q], pl[2 * q + 1]);
    if (w % gw == 0)
        sums[(long)(w / gw) * m_pad + row] = (int)s;
}

/* ---- the GEMM ---- */

struct btc_gemm_args {
    const uint4 *wpl;   /* weight planes */
    const int *wsum;    /* Sw [k / g][n_pad] */
    const uint16_t *sw; /* [n, k / g] fp16 */
    const uint2 *xpl;   /* activation planes */
    const int *xsum;    /* Sx [k / g][m_pad] */
    const float *sx;    /* [m, k / g] */
    float *y;           /* y[mi * ldy + n] */
    long ldy;
    int m, m_pad, n, n_pad, k, g;
    int ks; /* warps along k in a block: 1, 2, 4 or 8 */
};

/* The fragments of one k-block: 6 weight planes, TM m-tiles of BITS activation planes. */
template <int BITS, int TM> struct btc_frags {
    uint4 w[3];
    uint2 x[TM][BITS / 2];
};

template <int BITS, int TM>
__device__ __forceinline__ void btc_load(btc_frags<BITS, TM> &f, const uint4 *wrow,
                                         const uint2 *const (&xrow)[TM], const bool (&tv)[TM],
                                         int kb)
{
    constexpr int Q = BITS / 2;
#pragma unroll
    for (int q = 0; q < 3; q++)
        f.w[q] = __ldg(wrow + (kb * 3 + q) * 32);
#pragma unroll
    for (int t = 0; t < TM; t++)
#pragma unroll
        for (int q = 0; q < Q; q++)
            f.x[t][q] = tv[t] ? __ldg(xrow[t] + (kb * Q + q) * 32) : make_uint2(0u, 0u);
}

/* c[t] = U of one k-block for m-tile t: sum over plane pairs of 2^(i+j) * popc(W_i & X_j). */
template <int BITS, int TM>
__device__ __forceinline__ void btc_kblock(const btc_frags<BITS, TM> &f, int (&c)[TM][4])
{
    unsigned wa[BTC_WPLANES][2], xb[TM][BITS];
#pragma unroll
    for (int q = 0; q < 3; q++) {
        wa[2 * q][0] = f.w[q].x;
        wa[2 * q][1] = f.w[q].y;
        wa[2 * q + 1][0] = f.w[q].z;
        wa[2 * q + 1][1] = f.w[q].w;
    }
#pragma unroll
    for (int t = 0; t < TM; t++) {
#pragma unroll
        for (int q = 0; q < BITS / 2; q++) {
            xb[t][2 * q] = f.x[t][q].x;
            xb[t][2 * q + 1] = f.x[t][q].y;
        }
#pragma unroll
        for (int r = 0; r < 4; r++)
            c[t][r] = 0;
    }
    constexpr int S = BTC_WPLANES + BITS - 2; /* the highest diagonal i + j */
#pragma unroll
    for (int s = S; s >= 0; s--) {
        if (s < S) {
#pragma unroll
            for (int t = 0; t < TM; t++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    c[t][r] <<= 1;
        }
        const int ilo = s > BITS - 1 ? s - (BITS - 1) : 0;
        const int ihi = s < BTC_WPLANES - 1 ? s : BTC_WPLANES - 1;
#pragma unroll
        for (int p = 0; p < BTC_WPLANES; p += 2) {
            const int i1 = ilo + p; /* pairs (i1, s - i1) and (i1 + 1, s - i1 - 1) */
            if (i1 <= ihi) {
                if (i1 + 1 <= ihi) {
#pragma unroll
                    for (int t = 0; t < TM; t++)
                        btc_mma256(c[t], wa[i1][0], wa[i1][1], wa[i1 + 1][0], wa[i1 + 1][1],
                                   xb[t][s - i1], xb[t][s - i1 - 1]);
                } else {
#pragma unroll
                    for (int t = 0; t < TM; t++)
                        btc_mma128(c[t], wa[i1][0], wa[i1][1], xb[t][s - i1]);
                }
            }
        }
    }
}

/* Folds group gi of the group sums U into acc (lane: rows gid, gid + 8; columns 2 tig, 2 tig + 1).
 */
template <int BITS, int TM>
__device__ __forceinline__ void btc_fold(const btc_gemm_args &a, int gi, int n_lo, int m_base,
                                         const bool (&tv)[TM], const int (&u)[TM][4],
                                         float (&acc)[TM][4])
{
    const int ox = 1 << (BITS - 1);
    const int ng = a.k / a.g;
    const int corr = 32 * ox * a.g;
    const int n_hi = n_lo + 8;
    const int sw_lo = __ldg(a.wsum + (long)gi * a.n_pad + n_lo);
    const int sw_hi = __ldg(a.wsum + (long)gi * a.n_pad + n_hi);
    const float fw_lo =
        n_lo < a.n ? __half2float(__ushort_as_half(__ldg(a.sw + (long)n_lo * ng + gi))) : 0.0f;
    const float fw_hi =
        n_hi < a.n ? __half2float(__ushort_as_half(__ldg(a.sw + (long)n_hi * ng + gi))) : 0.0f;
#pragma unroll
    for (int t = 0; t < TM; t++) {
        if (!tv[t])
            continue;
        const int m0 = m_base + t * BTC_MT;
        const int2 sx2 = __ldg(reinterpret_cast<const int2 *>(a.xsum + (long)gi * a.m_pad + m0));
        const float fx0 = m0 < a.m ? __ldg(a.sx + (long)m0 * ng + gi) : 0.0f;
        const float fx1 = m0 + 1 < a.m ? __ldg(a.sx + (long)(m0 + 1) * ng + gi) : 0.0f;
        const int d[4] = {
            u[t][0] - 32 * sx2.x - ox * sw_lo + corr, u[t][1] - 32 * sx2.y - ox * sw_lo + corr,
            u[t][2] - 32 * sx2.x - ox * sw_hi + corr, u[t][3] - 32 * sx2.y - ox * sw_hi + corr};
        const float s[4] = {__fmul_rn(fx0, fw_lo), __fmul_rn(fx1, fw_lo), __fmul_rn(fx0, fw_hi),
                            __fmul_rn(fx1, fw_hi)};
#pragma unroll
        for (int r = 0; r < 4; r++)
            acc[t][r] = __fadd_rn(acc[t][r], __fmul_rn(s[r], __int2float_rn(d[r])));
    }
}

/* Grid: x = blocks of 8 / ks * TM m-tiles, y = 16-row weight tiles. */
template <int BITS, int TM>
__global__ void __launch_bounds__(BTC_THREADS) k_btc_gemm_kernel(const btc_gemm_args a)
{
    __shared__ float red[BTC_WARPS][TM * 4][32];
    constexpr int Q = BITS / 2;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gid = lane >> 2, tig = lane & 3;
    const int ks = a.ks, ms = BTC_WARPS / ks;
    const int wk = warp % ks, wm = warp / ks;
    const int nt = blockIdx.y;
    const int mt0 = (blockIdx.x * ms + wm) * TM; /* first m-tile of this warp */
    const int m_tiles = a.m_pad / BTC_MT;
    const int kbn = a.k / BTC_KB, kpg = a.g / BTC_KB, ng = a.k / a.g;
    const int kb0 = (int)((long)ng * wk / ks) * kpg, kb1 = (int)((long)ng * (wk + 1) / ks) * kpg;

    bool tv[TM];
    const uint2 *xrow[TM];
#pragma unroll
    for (int t = 0; t < TM; t++) {
        tv[t] = mt0 + t < m_tiles;
        xrow[t] = a.xpl + (tv[t] ? (long)(mt0 + t) * kbn * Q * 32 + lane : 0);
    }
    const uint4 *wrow = a.wpl + (long)nt * kbn * 3 * 32 + lane;
    const int n_lo = nt * BTC_NT + gid;
    const int m_base = mt0 * BTC_MT + 2 * tig;

    float acc[TM][4];
    int usum[TM][4];
#pragma unroll
    for (int t = 0; t < TM; t++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            acc[t][r] = 0.0f;
            usum[t][r] = 0;
        }

    if (tv[0] && kb0 < kb1) { /* warp-uniform: tiles are consecutive, tv[0] is "any valid" */
        btc_frags<BITS, TM> cur, nxt = {};
        btc_load<BITS, TM>(cur, wrow, xrow, tv, kb0);
        for (int kb = kb0; kb < kb1; kb++) {
            if (kb + 1 < kb1)
                btc_load<BITS, TM>(nxt, wrow, xrow, tv, kb + 1);
            int part[TM][4];
            btc_kblock<BITS, TM>(cur, part);
#pragma unroll
            for (int t = 0; t < TM; t++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    usum[t][r] += part[t][r];
            if ((kb + 1) % kpg == 0) {
                btc_fold<BITS, TM>(a, kb / kpg, n_lo, m_base, tv, usum, acc);
#pragma unroll
                for (int t = 0; t < TM; t++)
#pragma unroll
                    for (int r = 0; r < 4; r++)
                        usum[t][r] = 0;
            }
            cur = nxt;
        }
    }

    if (ks > 1) { /* partial sums over the k-slices, added in slice order */
#pragma unroll
        for (int t = 0; t < TM; t++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                red[warp][t * 4 + r][lane] = acc[t][r];
        __syncthreads();
        if (wk != 0)
            return;
        for (int j = 1; j < ks; j++)
#pragma unroll
            for (int t = 0; t < TM; t++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    acc[t][r] = __fadd_rn(acc[t][r], red[warp + j][t * 4 + r][lane]);
    }

#pragma unroll
    for (int t = 0; t < TM; t++) {
        if (!tv[t])
            continue;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int nn = n_lo + (r >> 1) * 8, mm = m_base + t * BTC_MT + (r & 1);
            if (nn < a.n && mm < a.m)
                a.y[(long)mm * a.ldy + nn] = acc[t][r];
        }
    }
}

/* ---- host entry points ---- */

extern "C" size_t k_btc_weight_bytes(const k_w6 *w)
{
    if (!btc_w6_ok(w))
        return 0;
    const long n_pad = btc_round_up(w->n, BTC_NT);
    return btc_align(btc_w_planes_bytes(n_pad, w->k)) +
           (size_t)(w->k / w->g) * (size_t)n_pad * sizeof(int);
}

extern "C" int k_btc_pack_weights(const k_w6 *w, void *buf, size_t bytes, k_btc_w *out,
                                  cudaStream_t stream)
{
    if (!btc_w6_ok(w) || !buf || !out || ((uintptr_t)buf & (BTC_ALIGN - 1)) != 0 ||
        bytes < k_btc_weight_bytes(w))
        return -1; /* FQ_EINVAL */
    const long n_pad = btc_round_up(w->n, BTC_NT);
    unsigned *planes = static_cast<unsigned *>(buf);
    int *sums = reinterpret_cast<int *>(static_cast<char *>(buf) +
                                        btc_align(btc_w_planes_bytes(n_pad, w->k)));
    const long threads = n_pad * (w->k / 32);
    const long blocks = (threads + BTC_AUX_THREADS - 1) / BTC_AUX_THREADS;
    if (blocks > 0x7FFFFFFFL)
        return -1;
    k_btc_pack_w_kernel<<<(unsigned)blocks, BTC_AUX_THREADS, 0, stream>>>(
        w->packed, w->row_bytes, w->n, (int)n_pad, w->k, w->g, planes, sums);
    if (cudaGetLastError() != cudaSuccess)
        return -1;
    out->buf = buf;
    out->sw = w->sw;
    out->n = w->n;
    out->k = w->k;
    out->g = w->g;
    return 0;
}

extern "C" size_t k_btc_ws_bytes(int m, int k, int g, int bits)
{
    if (m < 1 || !btc_group_ok(k, g) || (bits != 6 && bits != 8))
        return 0;
    const long m_pad = btc_round_up(m, BTC_MT);
    return btc_align(btc_x_planes_bytes(m_pad, k, bits)) +
           (size_t)(k / g) * (size_t)m_pad * sizeof(int);
}

/* The block shape for m: TM m-tiles per warp, ks warps along k (8 / ks along m). */
struct btc_shape {
    int tm, ks;
};

static btc_shape btc_pick_shape(int m_tiles)
{
    btc_shape s;
    s.tm = m_tiles == 1 ? 1 : m_tiles == 2 ? 2 : 4;
    const int need = (m_tiles + s.tm - 1) / s.tm; /* warps along m that cover all of m */
    int ms = 1;
    while (ms < need && ms < BTC_WARPS)
        ms *= 2;
    s.ks = BTC_WARPS / ms;
    return s;
}

template <int BITS, int TM> static int btc_launch_gemm(const btc_gemm_args &a, cudaStream_t stream)
{
    const int m_tiles = a.m_pad / BTC_MT;
    const int per_block = BTC_WARPS / a.ks * TM;
    const dim3 grid((unsigned)((m_tiles + per_block - 1) / per_block),
                    (unsigned)(a.n_pad / BTC_NT));
    k_btc_gemm_kernel<BITS, TM><<<grid, BTC_THREADS, 0, stream>>>(a);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

template <int BITS>
static int btc_run(const int8_t *qx, btc_gemm_args a, void *ws, cudaStream_t stream)
{
    uint2 *xpl = static_cast<uint2 *>(ws);
    int *xsum = reinterpret_cast<int *>(static_cast<char *>(ws) +
                                        btc_align(btc_x_planes_bytes(a.m_pad, a.k, BITS)));
    const long threads = (long)a.m_pad * (a.k / 32);
    const long blocks = (threads + BTC_AUX_THREADS - 1) / BTC_AUX_THREADS;
    if (blocks > 0x7FFFFFFFL)
        return -1;
    k_btc_act_kernel<BITS>
        <<<(unsigned)blocks, BTC_AUX_THREADS, 0, stream>>>(qx, a.m, a.m_pad, a.k, a.g, xpl, xsum);
    if (cudaGetLastError() != cudaSuccess)
        return -1;
    a.xpl = xpl;
    a.xsum = xsum;
    const btc_shape s = btc_pick_shape(a.m_pad / BTC_MT);
    a.ks = s.ks;
    if (s.tm == 1)
        return btc_launch_gemm<BITS, 1>(a, stream);
    if (s.tm == 2)
        return btc_launch_gemm<BITS, 2>(a, stream);
    return btc_launch_gemm<BITS, 4>(a, stream);
}

extern "C" int k_btc_gemm(const int8_t *qx, const float *sx, int m, int bits, const k_btc_w *w,
                          float *y, long ldy, void *ws, size_t ws_bytes, cudaStream_t stream)
{
    if (!qx || !sx || !w || !w->buf || !w->sw || !y || !ws || m < 1 || (bits != 6 && bits != 8) ||
        w->n < 1 || !btc_group_ok(w->k, w->g) || ldy < w->n || ((uintptr_t)qx & 15) != 0 ||
        ((uintptr_t)ws & 15) != 0 || ((uintptr_t)w->buf & (BTC_ALIGN - 1)) != 0 ||
        btc_round_up(w->n, BTC_NT) / BTC_NT > BTC_MAX_TILES_N ||
        ws_bytes < k_btc_ws_bytes(m, w->k, w->g, bits))
        return -1; /* FQ_EINVAL */
    btc_gemm_args a;
    a.n_pad = (int)btc_round_up(w->n, BTC_NT);
    a.wpl = static_cast<const uint4 *>(w->buf);
    a.wsum = reinterpret_cast<const int *>(static_cast<const char *>(w->buf) +
                                           btc_align(btc_w_planes_bytes(a.n_pad, w->k)));
    a.sw = w->sw;
    a.xpl = nullptr;
    a.xsum = nullptr;
    a.sx = sx;
    a.y = y;
    a.ldy = ldy;
    a.m = m;
    a.m_pad = (int)btc_round_up(m, BTC_MT);
    a.n = w->n;
    a.k = w->k;
    a.g = w->g;
    a.ks = 1;
    return bits == 8 ? btc_run<8>(qx, a, ws, stream) : btc_run<6>(qx, a, ws, stream);
}

/* k_gemm_w6_mma.cu — decode GEMM (m <= 64) on INT8 tensor cores: packed INT6 weights times int8
 * activation codes with mma.sync m16n8k32 s8, the weights as the 16-row A operand.
 *
 * Design (decode is memory-bound: every weight byte is read from global memory once, by 16-byte
 * cp.async into shared memory, through L2 only):
 * - A block of NW warps owns rows_block = 16 * RT * NW consecutive output features and one K-range;
 *   each warp owns 16 * RT of those rows (RT = 2 A tiles per warp for some m > 32 plans, so that an
 *   activation fragment feeds two MMAs). K is split over a thread-block cluster of S <= 4 blocks:
 *   cluster rank r streams the r-th K-range (whole groups) of the cluster's rows. A block walks its
 *   K-range in stages of 256 or 512 codes through a ring of P shared-memory stages, each holding
 *   the packed weights of its rows (48 bytes per 64-code chunk and row, contiguous in global
 *   memory) and the activation codes of the m tokens for that K window (token rows m .. 8 * MT - 1
 *   stay zero).
 * - Fragments come from shared memory by ldmatrix. For 8 rows of a 64-code chunk, its three 16-byte
 *   segments (low plane bytes 0..15 and 16..31, high plane bytes 32..47) read as 8x8 b16 matrices
 *   give thread (groupID q, threadID t) the low-plane words t and t + 4 and the high-plane word t
 *   of row q, i.e. the codes 4t..4t+3 at offsets 0, 16, 32 and 48: exactly the m16n8k32 A fragment
 *   in natural k order (k-step 0 = codes 0..31 of the chunk, k-step 1 = codes 32..63). So no k
 *   permutation is needed and the B fragment is a plain ldmatrix of the token rows. Row strides in
 *   shared memory are odd multiples of 16 bytes, so ldmatrix is free of bank conflicts.
 * - Unpacking at scale 4: the byte (lo4 << 2) | ((hi2 ^ 2) << 6) is the int8 4 * q, ~3 integer ops
 *   per 4 codes and no sign handling; the fold divides the weight scale by 4 instead (exact).
 * - int32 accumulators per group (g = 32..512; a 32-code k-step never straddles two groups); at the
 *   group's end one fp32 fold without FMA: acc = acc + (sx * sw) * (float)d, groups ascending.
 * - Split-K partials are summed in distributed shared memory: each block writes its fp32 tile to
 *   its own shared memory, the cluster synchronizes, and rank r sums slice r of the tile over ranks
 *   0..S-1 in that order and writes y. Deterministic, no workspace, no atomics. With S = 1 the
 *   result is bit for bit rt_cpu_matmul_q6's (while sx * sw / 4 stays a normal float).
 * - The host picks RT, NW (4..16, or 4..8 with RT = 2) and S (1, 2, 4) so that all blocks run in
 *   one wave with as many SMs busy as possible, then the stage length and P (2..8) to fill the
 *   shared-memory budget.
 */
#include "k.h"
#include "k_gemm.h"
#include "k_ptx.cuh"

#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

namespace cg = cooperative_groups;

#define W6M_KSMIN    256          /* codes of K per pipeline stage: 256 << ks_shift */
#define W6M_PMAX     8            /* most pipeline stages */
#define W6M_NWMIN    4            /* fewest warps per block */
#define W6M_SMAX     4            /* largest cluster (split-K factor) */
#define W6M_SMEM_ONE (220 * 1024) /* shared-memory budget of a block alone on its SM */
#define W6M_SMEM_TWO (112 * 1024) /* budget when two blocks must fit on one SM */

/* Most warps per block with RT A tiles per warp (RT = 2 only for m > 32), and the per-thread
 * register cap that __launch_bounds__(32 * nwmax, 1) implies. */
__host__ __device__ constexpr int w6m_nwmax(int rt)
{
    return rt == 2 ? 8 : 16;
}
static int w6m_regcap(int rt)
{
    return rt == 2 ? 255 : 128;
}

/* Everything a block needs to know (by value, in the parameter space). */
struct w6m_params {
    const int8_t *qx;      /* [m, k] */
    const float *sx;       /* [m, ng] */
    const uint8_t *packed; /* [n, row_bytes] */
    const uint16_t *sw;    /* [n, ng] fp16 bits */
    float *y;              /* [m, ldy] */
    long row_bytes, ldy;
    int m, n, k, g, g_shift, ng;
    int splits;       /* S: blocks per cluster, one K-range each */
    int unit;         /* K-ranges are whole units of this many codes (a multiple of g and 256) */
    int n_units;      /* ceil(k / unit) */
    int stages;       /* P */
    int ks, ks_shift; /* codes of K per stage: 256 << ks_shift (ks_shift 0 or 1) */
    int sw_stride;    /* smem bytes per weight row in a stage: 48 * ks / 64 + 16 */
    int sx_stride;    /* smem bytes per token row in a stage: ks + 16 */
    int w_bytes;      /* weight part of a stage: rows_block * sw_stride */
    int stage_bytes;  /* w_bytes + 8 * MT * sx_stride */
};

/* One warp's accumulators for MT n8 tiles of tokens and RT A tiles of rows. Thread (q, t) holds, in
 * element e of [a][j], row 16a + q + 8 * (e >> 1) and token 8j + 2t + (e & 1). */
template <int MT, int RT> struct w6m_acc {
    int d[RT][MT][4];   /* 4 x the current group's sums */
    float y[RT][MT][4]; /* fp32 sum of the groups done */
    float sw[RT][2];    /* the current group's weight scales / 4: rows q, q + 8 of each A tile */
    float sx[MT][2];    /* its activation scales: tokens 2t, 2t + 1 of each n8 tile */
};

/* ---- PTX wrappers ---- */

/* Waits until at most n (0 .. W6M_PMAX - 2) of this thread's cp.async groups are pending. */
__device__ __forceinline__ void w6m_wait(int n)
{
    switch (n) { /* the count is an immediate operand */
    case 0:
        k_cp_async_wait<0>();
        break;
    case 1:
        k_cp_async_wait<1>();
        break;
    case 2:
        k_cp_async_wait<2>();
        break;
    case 3:
        k_cp_async_wait<3>();
        break;
    case 4:
        k_cp_async_wait<4>();
        break;
    case 5:
        k_cp_async_wait<5>();
        break;
    default:
        k_cp_async_wait<6>();
        break;
    }
}

__device__ __forceinline__ void w6m_ldsm4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3,
                                          const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(k_smem_addr(p)));
}

__device__ __forceinline__ void w6m_ldsm2(unsigned &r0, unsigned &r1, const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r0), "=r"(r1)
                 : "r"(k_smem_addr(p)));
}

/* ---- unpacking, scales, fold ---- */

/* Four codes as the int8 values 4 * q: lo has the four low nibbles at bits 2..5 of its bytes, hi
 * the two top bits at bits 6..7 (other bits of either are ignored). (u - 32) * 4 = (lo4 << 2) +
 * ((hi2 - 2) << 6), and hi2 - 2 as two bits is hi2 ^ 2: flip bit 7. */
__device__ __forceinline__ unsigned w6m_q4(unsigned lo, unsigned hi)
{
    return ((lo & 0x3C3C3C3Cu) | (hi & 0xC0C0C0C0u)) ^ 0x80808080u;
}

/* Loads the scales of group gi for the rows and tokens this thread accumulates (0 past n or m); the
 * weight scales divided by 4 (exact) to undo the scale of the unpacked codes. */
template <int MT, int RT>
__device__ __forceinline__ void w6m_scales(const w6m_params &p, int gi, int row0, int lane,
                                           w6m_acc<MT, RT> &s)
{
    const int q = lane >> 2, t = lane & 3;
#pragma unroll
    for (int a = 0; a < RT; a++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = row0 + 16 * a + q + 8 * h;
            const float v =
                r < p.n ? __half2float(__ushort_as_half(__ldg(p.sw + (long)r * p.ng + gi))) : 0.0f;
            s.sw[a][h] = 0.25f * v;
        }
    }
#pragma unroll
    for (int j = 0; j < MT; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int tok = 8 * j + 2 * t + e;
            s.sx[j][e] = tok < p.m ? __ldg(p.sx + (long)tok * p.ng + gi) : 0.0f;
        }
    }
}

/* y += (sx * sw) * d for the group just finished, without FMA; clears d. The MMAs summed 4 * q_w:
 * the int32 is 4d (|4d| <= 2^23, exact as a float) and s.sw holds sw / 4, so sx * (sw / 4) * 4d
 * rounds exactly as (sx * sw) * d does (scaling by powers of two commutes with rounding). */
template <int MT, int RT> __device__ __forceinline__ void w6m_fold(w6m_acc<MT, RT> &s)
{
#pragma unroll
    for (int a = 0; a < RT; a++) {
#pragma unroll
        for (int j = 0; j < MT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float f = __int2float_rn(s.d[a][j][e]);
                const float sc = __fmul_rn(s.sx[j][e & 1], s.sw[a][e >> 1]);
                s.y[a][j][e] = __fadd_rn(s.y[a][j][e], __fmul_rn(sc, f));
                s.d[a][j][e] = 0;
            }
        }
    }
}

/* ---- the pipeline ---- */

/* Starts the copies of the stage at codes [kc0, min(kc0 + ks, ke)) into st: the weights of the
 * block's rows (rows past n zero-filled) and the activation codes of the m tokens. The strides are
 * odd multiples of 16 bytes, so consecutive rows fall on distinct 16-byte bank groups. */
__device__ __forceinline__ void w6m_issue(const w6m_params &p, unsigned char *st, int kc0, int ke,
                                          int n0, int rows_block, int tid, int nthreads)
{
    const int len = min(p.ks, ke - kc0);   /* a multiple of 32 */
    const int vpr = 12 << p.ks_shift;      /* 16-byte vectors per weight row of a full stage */
    const int nvw = ((len + 63) >> 6) * 3; /* ... of this stage */
    const int nvx = len >> 4;              /* 16-byte vectors per token row of this stage */
    const uint8_t *wsrc = p.packed + (long)(kc0 >> 6) * 48;
    for (int v = tid; v < rows_block * vpr; v += nthreads) {
        const int row = (v / 3) >> (2 + p.ks_shift), col = v - row * vpr;
        if (col < nvw) {
            const int r = n0 + row;
            const bool ok = r < p.n;
            k_cp_async16(k_smem_addr(st + row * p.sw_stride + col * 16),
                         ok ? (const void *)(wsrc + (long)r * p.row_bytes + col * 16)
                            : (const void *)p.packed,
                         ok ? 16u : 0u);
        }
    }
    unsigned char *xs = st + p.w_bytes;
    for (int v = tid; v < (p.m << (4 + p.ks_shift)); v += nthreads) {
        const int tok = v >> (4 + p.ks_shift), col = v - (tok << (4 + p.ks_shift));
        if (col < nvx)
            k_cp_async16(k_smem_addr(xs + tok * p.sx_stride + col * 16),
                         p.qx + (long)tok * p.k + kc0 + col * 16, 16u);
    }
}

/* One warp's MMAs over the stage st (codes [kc0, min(kc0 + ks, ke))): its 16 * RT rows start
 * at byte wrow of the stage and at output row row0. */
template <int MT, int RT>
__device__ __forceinline__ void w6m_compute(const w6m_params &p, const unsigned char *st, int kc0,
                                            int ke, int wrow, int row0, int lane,
                                            w6m_acc<MT, RT> &s)
{
    const int len = min(p.ks, ke - kc0);
    const int nch = (len + 63) >> 6;
    const int sws = p.sw_stride;
    const int mi = lane >> 3, r8 = lane & 7;
    /* ldmatrix row addresses: x4 = rows 0..7 at bytes 0, 16, 32 and rows 8..15 at byte 0; x2 = rows
     * 8..15 at bytes 16, 32; B = token rows 0..7 at bytes 0, 16 of a k-step */
    const unsigned char *wa4 = st + wrow + (mi == 3 ? 8 + r8 : r8) * sws + (mi == 3 ? 0 : 16 * mi);
    const unsigned char *wa2 = st + wrow + (8 + r8) * sws + 16 + 16 * (mi & 1);
    const unsigned char *xb = st + p.w_bytes + r8 * p.sx_stride + 16 * (mi & 1);
#pragma unroll 1
    for (int c = 0; c < nch; c++) {
        unsigned A[RT][8]; /* [R0(q), R0(q+8), R1(q), R1(q+8), R2(q), R2(q+8), R3(q), R3(q+8)] */
#pragma unroll
        for (int a = 0; a < RT; a++) {
            /* row q: low-plane words t, t + 4 and high-plane word t; ...b: the same of row q + 8 */
            unsigned l0, l1, hi, l0b, l1b, hib;
            w6m_ldsm4(l0, l1, hi, l0b, wa4 + a * 16 * sws + c * 48);
            w6m_ldsm2(l1b, hib, wa2 + a * 16 * sws + c * 48);
            /* R0: codes 4t.. (low nibbles of l0, field 0), R1: 16 + 4t.. (l1, field 1),
             * R2: 32 + 4t.. (high nibbles of l0, field 2), R3: 48 + 4t.. (l1, field 3) */
            A[a][0] = w6m_q4(l0 << 2, hi << 6);
            A[a][1] = w6m_q4(l0b << 2, hib << 6);
            A[a][2] = w6m_q4(l1 << 2, hi << 4);
            A[a][3] = w6m_q4(l1b << 2, hib << 4);
            A[a][4] = w6m_q4(l0 >> 2, hi << 2);
            A[a][5] = w6m_q4(l0b >> 2, hib << 2);
            A[a][6] = w6m_q4(l1 >> 2, hi);
            A[a][7] = w6m_q4(l1b >> 2, hib);
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int koff = kc0 + c * 64 + h * 32;
            if (koff >= p.k)
                break; /* the padding half of K's last chunk */
            if ((koff & (p.g - 1)) == 0)
                w6m_scales<MT, RT>(p, koff >> p.g_shift, row0, lane, s);
#pragma unroll
            for (int j = 0; j < MT; j++) {
                unsigned b0, b1;
                w6m_ldsm2(b0, b1, xb + j * 8 * p.sx_stride + c * 64 + h * 32);
#pragma unroll
                for (int a = 0; a < RT; a++)
                    k_mma_s8(s.d[a][j], A[a][4 * h], A[a][4 * h + 1], A[a][4 * h + 2],
                             A[a][4 * h + 3], b0, b1);
            }
            if (((koff + 32) & (p.g - 1)) == 0)
                w6m_fold<MT, RT>(s);
        }
    }
}

template <int MT, int RT>
__global__ void __launch_bounds__(w6m_nwmax(RT) * 32, 1) k_gemm_w6_mma_kernel(const w6m_params p)
{
    extern __shared__ __align__(128) unsigned char w6m_smem[];
    cg::cluster_group cluster = cg::this_cluster();
    const int tid = (int)threadIdx.x, nthreads = (int)blockDim.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int rows_block = 16 * RT * (nthreads >> 5);
    const int S = p.splits;
    const int rank = (int)cluster.block_rank();
    const int n0 = (int)(blockIdx.x / (unsigned)S) * rows_block;
    const int kb = (int)((long)rank * p.n_units / S) * p.unit;
    const int ke = min((int)((long)(rank + 1) * p.n_units / S) * p.unit, p.k);
    const int nsteps = (ke - kb + p.ks - 1) >> (8 + p.ks_shift); /* >= 1: S <= n_units */
    const int P = p.stages;

    /* token rows m .. 8 * MT - 1 of every stage stay zero: cp.async never writes them */
    const int zrows = 8 * MT - p.m, zvec = p.sx_stride >> 4; /* 16-byte vectors per token row */
    for (int i = tid; i < P * zrows * zvec; i += nthreads) {
        const int sl = i / (zrows * zvec), rest = i - sl * zrows * zvec;
        unsigned char *dst = w6m_smem + sl * p.stage_bytes + p.w_bytes +
                             (p.m + rest / zvec) * p.sx_stride + rest % zvec * 16;
        *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }

    w6m_acc<MT, RT> s;
#pragma unroll
    for (int a = 0; a < RT; a++) {
#pragma unroll
        for (int j = 0; j < MT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s.d[a][j][e] = 0;
                s.y[a][j][e] = 0.0f;
            }
        }
        s.sw[a][0] = s.sw[a][1] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < MT; j++)
        s.sx[j][0] = s.sx[j][1] = 0.0f;

    const int wrow = warp * 16 * RT * p.sw_stride; /* this warp's rows in a stage */
    const int row0 = n0 + warp * 16 * RT;          /* and in the output */
    const bool active = row0 < p.n;                /* warp-uniform */

    for (int i = 0; i < P - 1; i++) {
        if (i < nsteps)
            w6m_issue(p, w6m_smem + i * p.stage_bytes, kb + i * p.ks, ke, n0, rows_block, tid,
                      nthreads);
        k_cp_async_commit();
    }
    int slot = 0; /* ring slot of step it */
    for (int it = 0; it < nsteps; it++) {
        w6m_wait(P - 2); /* this thread's copies of step it are done */
        __syncthreads(); /* everyone's are, and step it - 1's slot is free */
        const int nx = it + P - 1;
        if (nx < nsteps) {
            const int ns = slot == 0 ? P - 1 : slot - 1;
            w6m_issue(p, w6m_smem + ns * p.stage_bytes, kb + nx * p.ks, ke, n0, rows_block, tid,
                      nthreads);
        }
        k_cp_async_commit();
        if (active)
            w6m_compute<MT, RT>(p, w6m_smem + slot * p.stage_bytes, kb + it * p.ks, ke, wrow, row0,
                                lane, s);
        if (++slot == P)
            slot = 0;
    }
    w6m_wait(0);
    __syncthreads(); /* the ring is free: reuse it for the partial tile */

    /* red[tok][row]: this block's fp32 partial (row stride rows_block + 4: conflict-free stores) */
    float *red = reinterpret_cast<float *>(w6m_smem);
    const int rbp = rows_block + 4;
    {
        const int q = lane >> 2, t = lane & 3;
#pragma unroll
        for (int a = 0; a < RT; a++) {
#pragma unroll
            for (int j = 0; j < MT; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int rl = warp * 16 * RT + 16 * a + q + 8 * (e >> 1);
                    const int tok = 8 * j + 2 * t + (e & 1);
                    red[tok * rbp + rl] = s.y[a][j][e];
                }
            }
        }
    }
    cluster.sync(); /* every block's partial is written and visible to the cluster */

    /* rank r writes rows [r * slice, (r + 1) * slice) of the tile: the sum over ranks 0..S-1, in
     * that order. Four outputs per thread and round: their 4 x S remote loads are in flight at
     * once. */
    const int slice = (rows_block + S - 1) / S;
    const int r0 = rank * slice;
    const int cnt = max(0, min(rows_block - r0, slice));
    const int total = p.m * cnt;
    for (int i0 = tid; i0 < total; i0 += 4 * nthreads) {
        float v[4][W6M_SMAX];
        int tk[4], rl[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int idx = min(i0 + u * nthreads, total - 1);
            tk[u] = idx / cnt;
            rl[u] = r0 + idx - tk[u] * cnt;
#pragma unroll
            for (int sr = 0; sr < W6M_SMAX; sr++)
                v[u][sr] = sr < S
                               ? *cluster.map_shared_rank(red + tk[u] * rbp + rl[u], (unsigned)sr)
                               : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (i0 + u * nthreads < total && n0 + rl[u] < p.n) {
                float sum = v[u][0];
#pragma unroll
                for (int sr = 1; sr < W6M_SMAX; sr++)
                    if (sr < S)
                        sum = __fadd_rn(sum, v[u][sr]);
                p.y[(long)tk[u] * p.ldy + n0 + rl[u]] = sum;
            }
        }
    }
    cluster.sync(); /* no block leaves while a peer may still read its shared memory */
}

/* ---- host side ---- */

/* How a call is cut: RT A tiles per warp, NW warps per block, S-way split-K, P stages. */
struct w6m_plan {
    int rt, nw, splits, blocks, stages, ks_shift, w_bytes, stage_bytes, unit, n_units;
    size_t smem;
};

/* Most blocks of 4-way clusters that surely run at once with one block per SM: a GPC of an odd
 * number of TPCs (2 SMs each) leaves 2 SMs idle, and H100s have 8 GPCs. */
static int w6m_limit4(int sms)
{
    return (sms / 2 - 8) / 2 * 4;
}

/* The plan for m tokens, an n x k weight with groups of g, RT A tiles per warp, on a device with
 * sms SMs. All blocks should run in one wave (one block per SM, or two for 4-way clusters where two
 * fit, so that clusters never wait for a GPC with SMs left over); among such plans, the most busy
 * SMs weighed by the balance of the K-ranges, then about 8 warps per block, then fewer splits. */
static void w6m_plan_rt(int m, int n, int k, int g, int sms, int rt, w6m_plan *pl)
{
    const int mt = (m + 7) / 8, nwmax = w6m_nwmax(rt);
    const int tiles = (n + 16 * rt - 1) / (16 * rt);
    const int unit = g > W6M_KSMIN ? g : W6M_KSMIN;
    const int n_units = (k + unit - 1) / unit;
    double best = -1.0;
    int bnw = nwmax, bs = 1, btwo = 1; /* (when nothing fits one wave: n is huge) */
    for (int s = 1; s <= W6M_SMAX && s <= n_units; s *= 2) {
        for (int nw = W6M_NWMIN; nw <= nwmax && (nw == W6M_NWMIN || nw <= tiles); nw++) {
            const long blocks = (long)(tiles + nw - 1) / nw * s;
            const bool two = nw * 32 * w6m_regcap(rt) <= 32768;
            const long limit = (s == 4 && !two) ? w6m_limit4(sms) : sms;
            if (blocks > limit)
                continue;
            const int umax = (n_units + s - 1) / s;
            const double util = (double)blocks * ((double)n_units / s) / umax;
            const double score = util * (1.0 - 0.01 * abs(nw - 8)) - 0.1 * s;
            if (score > best) {
                best = score;
                bnw = nw;
                bs = s;
                btwo = s == 4 && two;
            }
        }
    }
    const int rows_block = 16 * rt * bnw;
    pl->rt = rt;
    pl->nw = bnw;
    pl->splits = bs;
    pl->blocks = (tiles + bnw - 1) / bnw * bs;
    pl->unit = unit;
    pl->n_units = n_units;
    /* Stages of 512 codes (384 contiguous bytes of each weight row, fewer barriers) where three of
     * them fit the budget (or all the block's stages do), else of 256. */
    const int krange = (n_units + bs - 1) / bs * unit; /* the longest K-range of a block */
    const int budget = btwo ? W6M_SMEM_TWO : W6M_SMEM_ONE;
    for (int sh = 1; sh >= 0; sh--) {
        const int ks = W6M_KSMIN << sh;
        if (sh > 0 && krange <= ks / 2)
            continue;
        pl->ks_shift = sh;
        pl->w_bytes = rows_block * (ks / 64 * 48 + 16);
        pl->stage_bytes = pl->w_bytes + 8 * mt * (ks + 16);
        const int steps = (krange + ks - 1) / ks;
        const int fit = budget / pl->stage_bytes;
        int stages = fit < W6M_PMAX ? fit : W6M_PMAX;
        if (stages > steps + 1)
            stages = steps + 1;
        if (stages < 2)
            stages = 2; /* (256-code stages always fit twice) */
        pl->stages = stages;
        if (fit >= 2 && stages >= (steps + 1 < 3 ? steps + 1 : 3))
            break;
    }
    const size_t ring = (size_t)pl->stages * (size_t)pl->stage_bytes;
    const size_t red = (size_t)8 * mt * (size_t)(rows_block + 4) * sizeof(float);
    pl->smem = ring > red ? ring : red;
}

/* RT = 2 halves the activation fragments read per weight byte (m > 32), unless it leaves too few
 * warps per SM to hide latency; then RT = 1. */
static void w6m_plan_make(int m, int n, int k, int g, int sms, w6m_plan *pl)
{
    if (m > 32) {
        w6m_plan_rt(m, n, k, g, sms, 2, pl);
        if (pl->nw >= 6)
            return;
    }
    w6m_plan_rt(m, n, k, g, sms, 1, pl);
}

template <int MT, int RT>
static int w6m_launch(const w6m_params &p, const w6m_plan &pl, cudaStream_t st)
{
    void (*kern)(const w6m_params) = k_gemm_w6_mma_kernel<MT, RT>;
    /* the same limit for every plan, so that concurrent callers never lower each other's */
    if (pl.smem > W6M_SMEM_ONE ||
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, W6M_SMEM_ONE) !=
            cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)pl.blocks, 1, 1);
    cfg.blockDim = dim3((unsigned)(32 * pl.nw), 1, 1);
    cfg.dynamicSmemBytes = pl.smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)pl.splits;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kern, p) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return 0;
}

/* The kernel instance for ceil(m / 8) n8 tiles and the plan's RT. */
static int w6m_dispatch(int mt, const w6m_params &p, const w6m_plan &pl, cudaStream_t st)
{
    if (pl.rt == 2) {
        switch (mt) {
        case 5:
            return w6m_launch<5, 2>(p, pl, st);
        case 6:
            return w6m_launch<6, 2>(p, pl, st);
        case 7:
            return w6m_launch<7, 2>(p, pl, st);
        case 8:
            return w6m_launch<8, 2>(p, pl, st);
        default:
            return -1;
        }
    }
    switch (mt) {
    case 1:
        return w6m_launch<1, 1>(p, pl, st);
    case 2:
        return w6m_launch<2, 1>(p, pl, st);
    case 3:
        return w6m_launch<3, 1>(p, pl, st);
    case 4:
        return w6m_launch<4, 1>(p, pl, st);
    case 5:
        return w6m_launch<5, 1>(p, pl, st);
    case 6:
        return w6m_launch<6, 1>(p, pl, st);
    case 7:
        return w6m_launch<7, 1>(p, pl, st);
    case 8:
        return w6m_launch<8, 1>(p, pl, st);
    default:
        return -1;
    }
}

extern "C" size_t k_gemm_w6_decode_ws_bytes(const k_w6 *w, int m)
{
    (void)w;
    (void)m;
    return 0; /* split-K partials are summed in distributed shared memory */
}

extern "C" int k_gemm_w6_mma_decode(const int8_t *qx, const float *sx, int m, const k_w6 *w,
                                    float *y, long ldy, void *ws, size_t ws_bytes,
                                    cudaStream_t stream)
{
    (void)ws;
    (void)ws_bytes;
    if (!k_gemm_w6_args_ok(qx, sx, m, K_GEMM_DECODE_MAX_M, w, y, ldy))
        return -1; /* FQ_EINVAL */
    int dev = 0, sms = 0;
    if (k_device_current(&dev, &sms) != 0)
        return -1;
    w6m_plan pl;
    w6m_plan_make(m, w->n, w->k, w->g, sms, &pl);
    w6m_params p;
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
    p.splits = pl.splits;
    p.unit = pl.unit;
    p.n_units = pl.n_units;
    p.stages = pl.stages;
    p.ks_shift = pl.ks_shift;
    p.ks = W6M_KSMIN << pl.ks_shift;
    p.sw_stride = p.ks / 64 * 48 + 16;
    p.sx_stride = p.ks + 16;
    p.w_bytes = pl.w_bytes;
    p.stage_bytes = pl.stage_bytes;
    return w6m_dispatch((m + 7) / 8, p, pl, stream);
}

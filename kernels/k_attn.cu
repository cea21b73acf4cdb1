/* k_attn.cu — causal attention over the paged fp16 KV cache (k_attn.h): a decode kernel and a
 * flash-style prefill kernel, both with the output's per-group quantization fused in.
 *
 * Decode (max_new == 1): one CTA per (token, kv head, chunk of at most GM query heads of that kv
 * head's GQA group), so K/V rows are read once for the whole chunk. The context is cut into warp
 * steps of KS consecutive keys handed to the warps round-robin; inside a warp a key row is read by
 * HD/8 lanes (one 16-byte load of 8 fp16 values each), the partial dot products are reduced with
 * shuffles inside that lane group, and every lane group keeps its own online softmax (running max,
 * sum, accumulator) in fp32, in the log2 domain (scores times scale * log2(e), exp2f). At the end
 * the lane groups are merged with shuffles, the warps through shared memory. The block table is
 * staged in shared memory in chunks of KA_DEC_BT entries.
 *
 * Prefill (max_new > 1): one CTA per (head, tile of 64 tokens of one sequence, sequence), four
 * warps of 16 query rows. K/V tiles of 64 positions are gathered from the paged cache with
 * cp.async (16 bytes, zero fill beyond the context) into double-buffered shared memory; S = Q K^T
 * and O += P V run on tensor cores (mma.sync m16n8k16, fp16 inputs, fp32 accumulation: q and P are
 * rounded to fp16, the cache already is), the online softmax in fp32 registers (FlashAttention-2
 * layout: each lane holds rows g and g + 8 of its warp's 16). Causal mask by positions: row r sees
 * key p iff p <= tok_pos[r]. A warp skips the tiles that lie wholly after its rows' positions.
 *
 * Both kernels stage the finished rows in shared memory and write out (fp32) and, when asked, the
 * codes and scales of fq_act.h bit for bit (amax per group, s = amax / qmax, inv = qmax / amax,
 * q = clamp(rint(x * inv))) from the very values written to out.
 */
#include "k.h"
#include "k_attn.h"
#include "k_ptx.cuh"

#include <climits>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#define KA_FULL      0xffffffffu
#define KA_LOG2E     1.4426950408889634
#define KA_DEC_BT    1024 /* block-table entries staged per chunk (decode) */
#define KA_DEC_U     2    /* keys per lane group per warp step (decode) */
#define KA_BQ        64   /* query rows per prefill CTA */
#define KA_BK        64   /* keys per prefill K/V tile */
#define KA_PF_WARPS  4
#define KA_PF_THREAD (KA_PF_WARPS * 32)

/* Everything a kernel needs, by value. */
struct k_attn_args {
    const float *q;
    long ldq;
    const uint16_t *kc, *vc;
    const int32_t *tok_seq, *tok_pos, *seq_tok0, *block_tables;
    int max_blocks;
    int lbs; /* log2(block_size) */
    int n_head, n_kv, group;
    float scale_log2; /* scale * log2(e) */
    float *out;
    int8_t *q_out;
    float *s_out;
    int g;
    float qmax;
};

extern __shared__ __align__(16) unsigned char ka_smem[];

/* Most warps a decode CTA may have for GM heads: GM * warps <= 32 bounds the shared memory. */
template <int GM> struct ka_dec_cfg {
    static constexpr int max_warps = GM >= 8 ? 4 : (GM >= 4 ? 8 : 16);
};

__device__ __forceinline__ float ka_h2f(unsigned bits)
{
    return __half2float(__ushort_as_half((unsigned short)(bits & 0xFFFFu)));
}

/* 8 fp16 values (one 16-byte load) to fp32. */
__device__ __forceinline__ void ka_h8_to_f32(uint4 r, float f[8])
{
    f[0] = ka_h2f(r.x);
    f[1] = ka_h2f(r.x >> 16);
    f[2] = ka_h2f(r.y);
    f[3] = ka_h2f(r.y >> 16);
    f[4] = ka_h2f(r.z);
    f[5] = ka_h2f(r.z >> 16);
    f[6] = ka_h2f(r.w);
    f[7] = ka_h2f(r.w >> 16);
}

/* Two fp32 to a packed pair of fp16 (round to nearest even), lo in the low half. */
__device__ __forceinline__ uint32_t ka_pack_h2(float lo, float hi)
{
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) |
           ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
}

/* x rounded to fp16 (nearest even) and back. */
__device__ __forceinline__ float ka_round_h(float x)
{
    return __half2float(__float2half_rn(x));
}

/* One group of g values of a finished row (shared memory) -> codes and scale, as fq_act.c does.
 * Called by all 32 lanes of a warp. */
__device__ void ka_quant_group(const float *x, int g, float qmax, int8_t *q, float *s, int lane)
{
    float amax = 0.0f;
    for (int j = lane; j < g; j += 32) {
        const float v = fabsf(x[j]);
        amax = v > amax ? v : amax;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(KA_FULL, amax, o);
        amax = v > amax ? v : amax;
    }
    const float sc = __fdiv_rn(amax, qmax);
    const float inv = amax > 0.0f ? __fdiv_rn(qmax, amax) : 0.0f;
    const float lo = -(qmax + 1.0f);
    for (int j = lane; j < g; j += 32) {
        float v = rintf(__fmul_rn(x[j], inv));
        if (isnan(v))
            v = 0.0f;
        v = v < lo ? lo : v;
        v = v > qmax ? qmax : v;
        q[j] = (int8_t)(int)v;
    }
    if (lane == 0)
        *s = sc;
}

/* ---------------------------------------------------------------------------------------------
 * Decode
 * ------------------------------------------------------------------------------------------- */

/* Grid: T * n_kv * n_chunk CTAs (chunk fastest), blockDim.x = 32 * warps. Dynamic shared memory:
 * acc [warps][GM][HD], m [warps][GM], l [warps][GM], out [GM][HD] (floats). */
template <int HD, int GM>
__global__ void __launch_bounds__(ka_dec_cfg<GM>::max_warps * 32)
    k_attn_decode_kernel(const k_attn_args a, int n_chunk)
{
    constexpr int LPK = HD / 8;   /* lanes per key row */
    constexpr int KPW = 32 / LPK; /* keys per warp load */
    constexpr int KS = KPW * KA_DEC_U;
    __shared__ int s_bt[KA_DEC_BT];

    const int nw = blockDim.x >> 5;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kg = lane / LPK, li = lane % LPK;
    const int chunk = blockIdx.x % n_chunk;
    const int rest = blockIdx.x / n_chunk;
    const int kvh = rest % a.n_kv;
    const int t = rest / a.n_kv;
    const int nh = min(GM, a.group - chunk * GM); /* heads of this CTA, >= 1 */
    const int h0 = kvh * a.group + chunk * GM;
    const int seq = a.tok_seq[t];
    const int ctx = max(0, min(a.tok_pos[t] + 1, a.max_blocks << a.lbs));
    const int32_t *bt = a.block_tables + (long)seq * a.max_blocks;
    const int bmask = (1 << a.lbs) - 1;
    const long kv_stride = (long)a.n_kv * HD;
    const uint16_t *kbase = a.kc + (long)kvh * HD + li * 8;
    const uint16_t *vbase = a.vc + (long)kvh * HD + li * 8;

    float qv[GM][8], acc[GM][8], m[GM], l[GM];
#pragma unroll
    for (int j = 0; j < GM; j++) {
        const float *qr = a.q + (long)t * a.ldq + (long)(h0 + j) * HD + li * 8;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            qv[j][e] = j < nh ? qr[e] : 0.0f;
            acc[j][e] = 0.0f;
        }
        m[j] = -INFINITY;
        l[j] = 0.0f;
    }

    const int nb = (ctx + bmask) >> a.lbs;
    for (int cb = 0; cb < nb; cb += KA_DEC_BT) {
        const int ncb = min(KA_DEC_BT, nb - cb);
        __syncthreads(); /* the previous chunk's table is no longer read */
        for (int i = threadIdx.x; i < ncb; i += blockDim.x)
            s_bt[i] = bt[cb + i];
        __syncthreads();
        const int k1 = min(ctx, (cb + ncb) << a.lbs);
        for (int base = (cb << a.lbs) + warp * KS; base < k1; base += nw * KS) {
            uint4 kr[KA_DEC_U], vr[KA_DEC_U];
            bool ok[KA_DEC_U];
#pragma unroll
            for (int u = 0; u < KA_DEC_U; u++) {
                const int p = base + u * KPW + kg;
                ok[u] = p < k1;
                kr[u] = make_uint4(0, 0, 0, 0);
                vr[u] = make_uint4(0, 0, 0, 0);
                if (ok[u]) {
                    const long slot = ((long)s_bt[(p >> a.lbs) - cb] << a.lbs) + (p & bmask);
                    kr[u] = __ldg(reinterpret_cast<const uint4 *>(kbase + slot * kv_stride));
                    vr[u] = __ldg(reinterpret_cast<const uint4 *>(vbase + slot * kv_stride));
                }
            }
            float s[KA_DEC_U][GM];
#pragma unroll
            for (int u = 0; u < KA_DEC_U; u++) {
                float kf[8];
                ka_h8_to_f32(kr[u], kf);
#pragma unroll
                for (int j = 0; j < GM; j++) {
                    float d = 0.0f;
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        d = fmaf(qv[j][e], kf[e], d);
#pragma unroll
                    for (int o = LPK / 2; o > 0; o >>= 1)
                        d += __shfl_xor_sync(KA_FULL, d, o);
                    s[u][j] = ok[u] ? d * a.scale_log2 : -INFINITY;
                }
            }
            float vf[KA_DEC_U][8];
#pragma unroll
            for (int u = 0; u < KA_DEC_U; u++)
                ka_h8_to_f32(vr[u], vf[u]);
#pragma unroll
            for (int j = 0; j < GM; j++) {
                float mn = m[j];
#pragma unroll
                for (int u = 0; u < KA_DEC_U; u++)
                    mn = fmaxf(mn, s[u][j]);
                const float mu = mn == -INFINITY ? 0.0f : mn;
                const float corr = exp2f(m[j] - mu);
                l[j] *= corr;
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[j][e] *= corr;
#pragma unroll
                for (int u = 0; u < KA_DEC_U; u++) {
                    const float p = exp2f(s[u][j] - mu);
                    l[j] += p;
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[j][e] = fmaf(p, vf[u][e], acc[j][e]);
                }
                m[j] = mn;
            }
        }
    }

    /* merge the lane groups of the warp (all lanes end with the warp's state) */
#pragma unroll
    for (int o = LPK; o < 32; o <<= 1) {
#pragma unroll
        for (int j = 0; j < GM; j++) {
            const float mo = __shfl_xor_sync(KA_FULL, m[j], o);
            const float lo = __shfl_xor_sync(KA_FULL, l[j], o);
            const float mn = fmaxf(m[j], mo);
            const float mu = mn == -INFINITY ? 0.0f : mn;
            const float ca = exp2f(m[j] - mu), cb = exp2f(mo - mu);
            l[j] = l[j] * ca + lo * cb;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const float ao = __shfl_xor_sync(KA_FULL, acc[j][e], o);
                acc[j][e] = acc[j][e] * ca + ao * cb;
            }
            m[j] = mn;
        }
    }

    float *sm_acc = reinterpret_cast<float *>(ka_smem); /* [nw][GM][HD] */
    float *sm_m = sm_acc + nw * GM * HD;                /* [nw][GM] */
    float *sm_l = sm_m + nw * GM;                       /* [nw][GM] */
    float *sm_out = sm_l + nw * GM;                     /* [GM][HD] */
    if (kg == 0) {
#pragma unroll
        for (int j = 0; j < GM; j++)
#pragma unroll
            for (int e = 0; e < 8; e++)
                sm_acc[(warp * GM + j) * HD + li * 8 + e] = acc[j][e];
    }
    if (lane == 0) {
#pragma unroll
        for (int j = 0; j < GM; j++) {
            sm_m[warp * GM + j] = m[j];
            sm_l[warp * GM + j] = l[j];
        }
    }
    __syncthreads();

    const long row_out = (long)t * a.n_head * HD + (long)h0 * HD;
    for (int idx = threadIdx.x; idx < nh * HD; idx += blockDim.x) {
        const int j = idx / HD, d = idx % HD;
        float mx = -INFINITY;
        for (int w = 0; w < nw; w++)
            mx = fmaxf(mx, sm_m[w * GM + j]);
        const float mu = mx == -INFINITY ? 0.0f : mx;
        float sum = 0.0f, num = 0.0f;
        for (int w = 0; w < nw; w++) {
            const float c = exp2f(sm_m[w * GM + j] - mu);
            sum += sm_l[w * GM + j] * c;
            num += sm_acc[(w * GM + j) * HD + d] * c;
        }
        const float o = sum > 0.0f ? __fdiv_rn(num, sum) : 0.0f;
        if (a.out)
            a.out[row_out + idx] = o;
        sm_out[idx] = o;
    }
    if (a.q_out) {
        __syncthreads();
        const int n_groups = nh * HD / a.g;
        const long grp0 = (long)t * (a.n_head * HD / a.g) + (long)h0 * HD / a.g;
        for (int gi = warp; gi < n_groups; gi += nw)
            ka_quant_group(sm_out + gi * a.g, a.g, a.qmax, a.q_out + row_out + (long)gi * a.g,
                           a.s_out + grp0 + gi, lane);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Prefill
 * ------------------------------------------------------------------------------------------- */

__device__ __forceinline__ void ka_ldsm_x4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(k_smem_addr(p))
                 : "memory");
}

__device__ __forceinline__ void ka_ldsm_x4_t(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(k_smem_addr(p))
                 : "memory");
}

/* c[16x8] += a[16x16] b[16x8], fp16 in, fp32 accumulate. */
__device__ __forceinline__ void ka_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Shared-memory row stride (fp16 elements) of the K/V tiles: 16-byte aligned rows, and 8 rows
 * read by one ldmatrix phase fall on distinct banks. */
template <int HD> struct ka_pf_cfg {
    static constexpr int lds = HD + 8;
    static constexpr int tile = KA_BK * lds; /* fp16 elements of one K (or V) tile */
    static constexpr int ldo = HD + 8;       /* fp32 row stride of the output staging */
    static constexpr size_t smem_kv = (size_t)4 * tile * sizeof(uint16_t);
    static constexpr size_t smem_o = (size_t)KA_PF_WARPS * 16 * ldo * sizeof(float);
    static constexpr size_t smem = smem_kv > smem_o ? smem_kv : smem_o;
};

/* Gathers positions kt * BK .. + BK - 1 of the sequence (kv head kvh) into the K and V tiles;
 * rows at or beyond ctx are zero-filled. Commits one cp.async group. */
template <int HD>
__device__ __forceinline__ void ka_load_tile(uint16_t *tk, uint16_t *tv, const k_attn_args &a,
                                             const int32_t *bt, int kvh, int kt, int ctx)
{
    constexpr int CPR = HD / 8; /* 16-byte chunks per row */
    constexpr int LDS = ka_pf_cfg<HD>::lds;
    const long kv_stride = (long)a.n_kv * HD;
    const int bmask = (1 << a.lbs) - 1;
    static_assert((KA_BK * CPR) % KA_PF_THREAD == 0, "whole chunks per thread");
#pragma unroll
    for (int it = 0; it < KA_BK * CPR / KA_PF_THREAD; it++) {
        const int i = (int)threadIdx.x + it * KA_PF_THREAD;
        const int row = i / CPR, col = i % CPR;
        const int p = kt * KA_BK + row;
        const bool ok = p < ctx;
        const uint16_t *ks = a.kc, *vs = a.vc;
        if (ok) {
            const long slot = ((long)bt[p >> a.lbs] << a.lbs) + (p & bmask);
            const long off = slot * kv_stride + (long)kvh * HD + col * 8;
            ks += off;
            vs += off;
        }
        k_cp_async16(k_smem_addr(tk + row * LDS + col * 8), ks, ok ? 16u : 0u);
        k_cp_async16(k_smem_addr(tv + row * LDS + col * 8), vs, ok ? 16u : 0u);
    }
    k_cp_async_commit();
}

/* A float pair of row `row` (or zeros when row is NULL). */
__device__ __forceinline__ uint32_t ka_q_pair(const float *row, int c)
{
    return row ? ka_pack_h2(row[c], row[c + 1]) : 0u;
}

/* Grid: (n_head, ceil(max_new / BQ), n_seqs), KA_PF_THREAD threads, ka_pf_cfg<HD>::smem bytes. */
template <int HD>
__global__ void __launch_bounds__(KA_PF_THREAD) k_attn_prefill_kernel(const k_attn_args a)
{
    constexpr int LDS = ka_pf_cfg<HD>::lds;
    constexpr int TILE = ka_pf_cfg<HD>::tile;
    constexpr int LDO = ka_pf_cfg<HD>::ldo;
    constexpr int NKS = HD / 16;    /* k-steps of Q K^T */
    constexpr int NDT = HD / 8;     /* 8-wide d tiles of O */
    constexpr int NNT = KA_BK / 8;  /* 8-wide key tiles of S */
    constexpr int NPK = KA_BK / 16; /* k-steps of P V */
    __shared__ int s_pos[KA_BQ];
    __shared__ int s_wmax[KA_PF_WARPS];

    const int h = blockIdx.x;
    const int qt = (int)(gridDim.y - 1 - blockIdx.y); /* the longest tiles first */
    const int seq = blockIdx.z;
    const int tok0 = a.seq_tok0[seq];
    const int ntok = a.seq_tok0[seq + 1] - tok0;
    const int r0 = qt * KA_BQ;
    if (r0 >= ntok)
        return; /* uniform over the CTA, before any barrier */
    const int nrows = min(KA_BQ, ntok - r0);
    const int kvh = h / a.group;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, tq = lane & 3;
    const int32_t *bt = a.block_tables + (long)seq * a.max_blocks;

    int pm = -1;
    if (tid < KA_BQ) {
        pm = tid < nrows ? a.tok_pos[tok0 + r0 + tid] : -1;
        s_pos[tid] = pm;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        pm = max(pm, __shfl_xor_sync(KA_FULL, pm, o));
    if (lane == 0)
        s_wmax[warp] = pm;
    __syncthreads();
    int cmax = s_wmax[0];
#pragma unroll
    for (int w = 1; w < KA_PF_WARPS; w++)
        cmax = max(cmax, s_wmax[w]);
    const int ctx = min(cmax + 1, a.max_blocks << a.lbs); /* keys the CTA needs */
    const int n_kt = ctx > 0 ? (ctx + KA_BK - 1) / KA_BK : 0;

    const int ra = warp * 16 + gq, rb = ra + 8; /* this lane's rows */
    const int pos_a = s_pos[ra], pos_b = s_pos[rb];
    int wmax = max(pos_a, pos_b);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        wmax = max(wmax, __shfl_xor_sync(KA_FULL, wmax, o));

    /* Q fragments (A operand, rows ra / rb), fp16 */
    uint32_t qa[NKS][4];
    {
        const float *qra =
            ra < nrows ? a.q + (long)(tok0 + r0 + ra) * a.ldq + (long)h * HD : nullptr;
        const float *qrb =
            rb < nrows ? a.q + (long)(tok0 + r0 + rb) * a.ldq + (long)h * HD : nullptr;
#pragma unroll
        for (int ks = 0; ks < NKS; ks++) {
            const int c = ks * 16 + 2 * tq;
            qa[ks][0] = ka_q_pair(qra, c);
            qa[ks][1] = ka_q_pair(qrb, c);
            qa[ks][2] = ka_q_pair(qra, c + 8);
            qa[ks][3] = ka_q_pair(qrb, c + 8);
        }
    }

    uint16_t *sk = reinterpret_cast<uint16_t *>(ka_smem); /* [2][BK][LDS] */
    uint16_t *sv = sk + 2 * TILE;                         /* [2][BK][LDS] */
    float oacc[NDT][4];
#pragma unroll
    for (int dt = 0; dt < NDT; dt++)
        oacc[dt][0] = oacc[dt][1] = oacc[dt][2] = oacc[dt][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    if (n_kt > 0)
        ka_load_tile<HD>(sk, sv, a, bt, kvh, 0, ctx);
    for (int kt = 0; kt < n_kt; kt++) {
        const int buf = kt & 1;
        if (kt + 1 < n_kt) {
            ka_load_tile<HD>(sk + (buf ^ 1) * TILE, sv + (buf ^ 1) * TILE, a, bt, kvh, kt + 1, ctx);
            k_cp_async_wait<1>();
        } else {
            k_cp_async_wait<0>();
        }
        __syncthreads(); /* tile kt is in shared memory for every thread */
        if (kt * KA_BK <= wmax) {
            const uint16_t *tk = sk + buf * TILE, *tv = sv + buf * TILE;
            float sacc[NNT][4];
#pragma unroll
            for (int nt = 0; nt < NNT; nt++) {
                sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.0f;
#pragma unroll
                for (int k2 = 0; k2 < HD / 32; k2++) {
                    uint32_t b[4]; /* b[0..1]: k-step 2*k2, b[2..3]: k-step 2*k2 + 1 */
                    ka_ldsm_x4(b, tk + (nt * 8 + (lane & 7)) * LDS + k2 * 32 + (lane >> 3) * 8);
                    ka_mma(sacc[nt], qa[2 * k2], b[0], b[1]);
                    ka_mma(sacc[nt], qa[2 * k2 + 1], b[2], b[3]);
                }
            }
            /* scale, causal mask, row maxima (rows ra: elements 0, 1; rb: 2, 3) */
            const int key0 = kt * KA_BK + 2 * tq;
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < NNT; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = key0 + nt * 8 + (e & 1);
                    const int pr = e < 2 ? pos_a : pos_b;
                    const float sc = key <= pr ? sacc[nt][e] * a.scale_log2 : -INFINITY;
                    sacc[nt][e] = sc;
                    if (e < 2)
                        mx0 = fmaxf(mx0, sc);
                    else
                        mx1 = fmaxf(mx1, sc);
                }
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(KA_FULL, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(KA_FULL, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(KA_FULL, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(KA_FULL, mx1, 2));
            const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
            const float mu0 = mn0 == -INFINITY ? 0.0f : mn0;
            const float mu1 = mn1 == -INFINITY ? 0.0f : mn1;
            const float c0 = exp2f(m0 - mu0), c1 = exp2f(m1 - mu1);
            m0 = mn0;
            m1 = mn1;
            l0 *= c0;
            l1 *= c1;
#pragma unroll
            for (int dt = 0; dt < NDT; dt++) {
                oacc[dt][0] *= c0;
                oacc[dt][1] *= c0;
                oacc[dt][2] *= c1;
                oacc[dt][3] *= c1;
            }
            /* P (A operand of P V): k-step kk = key tiles 2kk (regs 0, 1) and 2kk + 1 (2, 3).
             * The row sums add the fp16-rounded weights the tensor cores multiply, so that the
             * output stays a convex combination of the values (the rounding cancels to first
             * order; a row of one key gives its value exactly). */
            uint32_t pf[NPK][4];
#pragma unroll
            for (int nt = 0; nt < NNT; nt++) {
                const float p0 = ka_round_h(exp2f(sacc[nt][0] - mu0));
                const float p1 = ka_round_h(exp2f(sacc[nt][1] - mu0));
                const float p2 = ka_round_h(exp2f(sacc[nt][2] - mu1));
                const float p3 = ka_round_h(exp2f(sacc[nt][3] - mu1));
                l0 += p0 + p1;
                l1 += p2 + p3;
                pf[nt >> 1][(nt & 1) * 2 + 0] = ka_pack_h2(p0, p1);
                pf[nt >> 1][(nt & 1) * 2 + 1] = ka_pack_h2(p2, p3);
            }
#pragma unroll
            for (int kk = 0; kk < NPK; kk++) {
#pragma unroll
                for (int dp = 0; dp < HD / 16; dp++) {
                    uint32_t b[4]; /* b[0..1]: d tile 2*dp, b[2..3]: d tile 2*dp + 1 */
                    ka_ldsm_x4_t(b, tv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS +
                                        dp * 16 + (lane >> 4) * 8);
                    ka_mma(oacc[2 * dp], pf[kk], b[0], b[1]);
                    ka_mma(oacc[2 * dp + 1], pf[kk], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* every warp is done with buffer buf before it is refilled */
    }

    /* finish the rows and stage them (this warp's 16 rows) in shared memory: the K/V tiles are
     * no longer read (the loop ended on a barrier, no copy is in flight) */
    l0 += __shfl_xor_sync(KA_FULL, l0, 1);
    l0 += __shfl_xor_sync(KA_FULL, l0, 2);
    l1 += __shfl_xor_sync(KA_FULL, l1, 1);
    l1 += __shfl_xor_sync(KA_FULL, l1, 2);
    float *so = reinterpret_cast<float *>(ka_smem) + warp * 16 * LDO;
#pragma unroll
    for (int dt = 0; dt < NDT; dt++) {
        const int c = dt * 8 + 2 * tq;
        float2 va, vb;
        va.x = l0 > 0.0f ? __fdiv_rn(oacc[dt][0], l0) : 0.0f;
        va.y = l0 > 0.0f ? __fdiv_rn(oacc[dt][1], l0) : 0.0f;
        vb.x = l1 > 0.0f ? __fdiv_rn(oacc[dt][2], l1) : 0.0f;
        vb.y = l1 > 0.0f ? __fdiv_rn(oacc[dt][3], l1) : 0.0f;
        *reinterpret_cast<float2 *>(so + gq * LDO + c) = va;
        *reinterpret_cast<float2 *>(so + (gq + 8) * LDO + c) = vb;
    }
    __syncwarp();
    for (int r = 0; r < 16; r++) {
        const int row = warp * 16 + r;
        if (row >= nrows)
            break; /* uniform over the warp */
        const long tok = (long)tok0 + r0 + row;
        const long off = tok * a.n_head * HD + (long)h * HD;
        const float *src = so + r * LDO;
        if (a.out)
            for (int c = lane; c < HD; c += 32)
                a.out[off + c] = src[c];
        if (a.q_out) {
            const long grp0 = tok * (a.n_head * HD / a.g) + (long)h * HD / a.g;
            for (int gi = 0; gi < HD / a.g; gi++)
                ka_quant_group(src + gi * a.g, a.g, a.qmax, a.q_out + off + (long)gi * a.g,
                               a.s_out + grp0 + gi, lane);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Host
 * ------------------------------------------------------------------------------------------- */

template <int HD, int GM>
static int ka_launch_decode(const k_attn_args &a, int T, int n_sm, cudaStream_t stream)
{
    const int n_chunk = (a.group + GM - 1) / GM;
    const long ctas = (long)T * a.n_kv * n_chunk;
    if (ctas > INT_MAX)
        return -1;
    /* More warps per CTA when a token has few CTAs, so that each SM keeps enough loads in flight.
     * Planned from one token's CTAs, not the step's: the warps split a token's context, so their
     * number fixes its fp32 order, which must not depend on the rest of the batch (decode steps are
     * batch-invariant per token, and CUDA-graph buckets add padding tokens). */
    const long per_tok = (long)a.n_kv * n_chunk;
    int nw = per_tok >= 4L * n_sm ? 4 : (per_tok >= n_sm ? 8 : 16);
    nw = nw < ka_dec_cfg<GM>::max_warps ? nw : ka_dec_cfg<GM>::max_warps;
    const size_t smem = (size_t)(nw * GM * HD + 2 * nw * GM + GM * HD) * sizeof(float);
    k_attn_decode_kernel<HD, GM><<<(unsigned)ctas, nw * 32, smem, stream>>>(a, n_chunk);
    return 0;
}

template <int HD> static int ka_decode_hd(const k_attn_args &a, int T, int n_sm, cudaStream_t st)
{
    if (a.group >= 5)
        return ka_launch_decode<HD, 8>(a, T, n_sm, st);
    if (a.group >= 3)
        return ka_launch_decode<HD, 4>(a, T, n_sm, st);
    if (a.group == 2)
        return ka_launch_decode<HD, 2>(a, T, n_sm, st);
    return ka_launch_decode<HD, 1>(a, T, n_sm, st);
}

template <int HD>
static int ka_launch_prefill(const k_attn_args &a, int max_new, int n_seqs, cudaStream_t stream)
{
    const int n_qt = (max_new + KA_BQ - 1) / KA_BQ;
    if (n_qt > 65535 || n_seqs > 65535)
        return -1;
    const size_t smem = ka_pf_cfg<HD>::smem;
    if (cudaFuncSetAttribute(k_attn_prefill_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)smem) != cudaSuccess)
        return -1;
    const dim3 grid((unsigned)a.n_head, (unsigned)n_qt, (unsigned)n_seqs);
    k_attn_prefill_kernel<HD><<<grid, KA_PF_THREAD, smem, stream>>>(a);
    return 0;
}

static int ka_log2(int v)
{
    int l = 0;
    while ((1 << l) < v)
        l++;
    return l;
}

extern "C" int k_attention(const float *q, long ldq, const uint16_t *k_cache,
                           const uint16_t *v_cache, const k_attn_batch *b, const k_attn_shape *sh,
                           float *out, int8_t *q_out, float *s_out, int bits, int g,
                           cudaStream_t stream)
{
    if (!q || !k_cache || !v_cache || !b || !sh)
        return -1; /* FQ_EINVAL */
    if (b->n_tokens < 0 || b->n_seqs < 0)
        return -1;
    if (b->n_tokens == 0)
        return 0;
    const int hd = sh->hd, bs = b->block_size;
    if (b->n_seqs < 1 || !b->tok_seq || !b->tok_pos || !b->seq_tok0 || !b->block_tables ||
        b->max_blocks < 1 || b->max_new < 1 || bs < 8 || bs > (1 << 20) || (bs & (bs - 1)) != 0 ||
        (long)b->max_blocks * bs > INT_MAX)
        return -1;
    if ((hd != 64 && hd != 128) || sh->n_head < 1 || sh->n_kv < 1 || sh->n_head % sh->n_kv != 0 ||
        ldq < (long)sh->n_head * hd || !isfinite(sh->scale))
        return -1;
    if ((q_out == NULL) != (s_out == NULL))
        return -1;
    if (q_out && ((bits != 6 && bits != 8) || g < 1 || hd % g != 0))
        return -1;
    if (((uintptr_t)k_cache & 15) != 0 || ((uintptr_t)v_cache & 15) != 0)
        return -1;
    if (!out && !q_out)
        return 0;

    k_attn_args a;
    a.q = q;
    a.ldq = ldq;
    a.kc = k_cache;
    a.vc = v_cache;
    a.tok_seq = b->tok_seq;
    a.tok_pos = b->tok_pos;
    a.seq_tok0 = b->seq_tok0;
    a.block_tables = b->block_tables;
    a.max_blocks = b->max_blocks;
    a.lbs = ka_log2(bs);
    a.n_head = sh->n_head;
    a.n_kv = sh->n_kv;
    a.group = sh->n_head / sh->n_kv;
    a.scale_log2 = (float)((double)sh->scale * KA_LOG2E);
    a.out = out;
    a.q_out = q_out;
    a.s_out = s_out;
    a.g = q_out ? g : hd;
    a.qmax = bits == 8 ? 127.0f : 31.0f;

    int rc;
    if (b->max_new == 1) {
        int dev = 0, n_sm = 0;
        if (k_device_current(&dev, &n_sm) != 0)
            n_sm = 132; /* plan for an H100 */
        rc = hd == 64 ? ka_decode_hd<64>(a, b->n_tokens, n_sm, stream)
                      : ka_decode_hd<128>(a, b->n_tokens, n_sm, stream);
    } else {
        rc = hd == 64 ? ka_launch_prefill<64>(a, b->max_new, b->n_seqs, stream)
                      : ka_launch_prefill<128>(a, b->max_new, b->n_seqs, stream);
    }
    if (rc != 0)
        return -1;
    if (cudaGetLastError() != cudaSuccess)
        return -1;
    return 0;
}

/* k_sample.cu — sampling on the device (k_sample.h): one CTA of 1024 threads per logits row.
 *
 * Passes over the row (it stays in L2): the maximum; the total weight (top_p alone); a radix
 * select of the top_k cut over the candidates' ordered keys (4 passes of 8 bits, counts), then the
 * top_p cut among the tokens it keeps (4 passes, weights); the kept weight per logit band; and the
 * draw inside the band that holds u * total. A cut is a key T and the id of its last kept tie
 * (ties are kept in id order): token i is kept when key > T, or key == T and i <= that id.
 * Weights are summed as integers (w * 2^40, w <= 1), so sums are exact and independent of the
 * order the threads add them in. Passes that need id order (ties, the draw) give each thread a
 * contiguous range of ids and scan the per-thread sums.
 */
#include "k_sample.h"

#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#define KS_THREADS   1024
#define KS_WARPS     (KS_THREADS / 32)
#define KS_FIX       1099511627776.0 /* 2^40: fixed-point unit of a weight */
#define KS_EXP_MIN   -87.0f          /* rt_sampler's: weights below exp(-87) are 0 */
#define KS_GREEDY    1e-5f           /* RT_SAMPLER_GREEDY_EPS */
#define KS_BLOCK     512             /* rt_sampler's block of tokens (the top_k collection rule) */
#define KS_N_WINDOWS 10
#define KS_N_BANDS   (KS_N_WINDOWS + 1)
#define KS_FULL      0xffffffffu

typedef unsigned long long u64;

/* rt_sampler's bands below the max, in units of the temperature. */
__constant__ float ks_windows[KS_N_WINDOWS] = {1.0f, 2.0f,  3.0f,  4.0f,  6.0f,
                                               8.0f, 11.0f, 16.0f, 22.0f, 32.0f};

struct ks_shared {
    u64 hist[256];
    u64 band[KS_N_BANDS];
    u64 wsum[KS_WARPS];
    float wmax[KS_WARPS];
    int wmin[KS_WARPS];
    u64 b64[2]; /* values thread 0 hands to all */
    int b32[2];
};

/* The row's constants. */
struct ks_row {
    const float *l;
    int V;
    float m, t, inv_t, lo;
};

/* A cut: keep key > T, and key == T up to id last. */
struct ks_cut {
    uint32_t T;
    int last;
};

__device__ static __forceinline__ uint32_t ks_key(float x)
{
    const uint32_t b = __float_as_uint(x);
    return b ^ ((0u - (b >> 31)) | 0x80000000u);
}

__device__ static __forceinline__ bool ks_keeps(const ks_cut &c, uint32_t key, int i)
{
    return key > c.T || (key == c.T && i <= c.last);
}

/* A candidate (l >= lo, not NaN) kept by both cuts. */
__device__ static __forceinline__ bool ks_in(const ks_row &r, const ks_cut &a, const ks_cut &b,
                                             float x, int i)
{
    if (!(x >= r.lo))
        return false;
    const uint32_t key = ks_key(x);
    return ks_keeps(a, key, i) && ks_keeps(b, key, i);
}

__device__ static __forceinline__ u64 ks_weight(const ks_row &r, float x)
{
    if (!(x >= r.lo))
        return 0;
    const float e = (x - r.m) * r.inv_t;
    return e > KS_EXP_MIN ? (u64)((double)expf(e) * KS_FIX) : 0;
}

/* ---- block reductions and scans (every thread calls them; results go to all) ---- */

__device__ static float ks_max(float v, ks_shared &s)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(KS_FULL, v, o));
    if (lane == 0)
        s.wmax[w] = v;
    __syncthreads();
    float m = s.wmax[0];
    for (int i = 1; i < KS_WARPS; i++)
        m = fmaxf(m, s.wmax[i]);
    __syncthreads();
    return m;
}

__device__ static int ks_min(int v, ks_shared &s)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = min(v, __shfl_xor_sync(KS_FULL, v, o));
    if (lane == 0)
        s.wmin[w] = v;
    __syncthreads();
    int m = s.wmin[0];
    for (int i = 1; i < KS_WARPS; i++)
        m = min(m, s.wmin[i]);
    __syncthreads();
    return m;
}

/* Exclusive prefix of v over the threads in order; *total gets the sum. */
__device__ static u64 ks_scan(u64 v, u64 *total, ks_shared &s)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    u64 inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(KS_FULL, inc, o);
        if (lane >= o)
            inc += y;
    }
    if (lane == 31)
        s.wsum[w] = inc;
    __syncthreads();
    u64 before = 0, all = 0;
    for (int i = 0; i < KS_WARPS; i++) {
        before += i < w ? s.wsum[i] : 0;
        all += s.wsum[i];
    }
    __syncthreads();
    *total = all;
    return before + inc - v;
}

/* ---- cuts ---- */

/* The contiguous id range of this thread for the id-order passes. */
__device__ static __forceinline__ void ks_range(int V, int *i0, int *i1)
{
    const int per = (V + KS_THREADS - 1) / KS_THREADS;
    *i0 = min(V, (int)threadIdx.x * per);
    *i1 = min(V, *i0 + per);
}

/* Among the tokens `prev` keeps, the cut whose kept set is the prefix (in key order, ties by id)
 * that first reaches need (counts, or weights when by_weight): radix select of T, then the ties. */
__device__ static ks_cut ks_select(const ks_row &r, const ks_cut &prev, bool by_weight, u64 need,
                                   ks_shared &s)
{
    const ks_cut all = {0u, INT_MAX};
    uint32_t prefix = 0, pmask = 0;
    u64 above = 0; /* of the keys above the prefix's range */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = threadIdx.x; j < 256; j += KS_THREADS)
            s.hist[j] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < r.V; i += KS_THREADS) {
            const float x = r.l[i];
            if (!ks_in(r, prev, all, x, i))
                continue;
            const uint32_t key = ks_key(x);
            if ((key & pmask) == prefix)
                atomicAdd(&s.hist[(key >> shift) & 255u], by_weight ? ks_weight(r, x) : 1ull);
        }
        __syncthreads();
        if (threadIdx.x == 0) { /* the highest digit that, with the keys above, reaches need */
            int d = 255;
            while (d > 0 && above + s.hist[d] < need)
                above += s.hist[d--];
            s.b32[0] = (int)(prefix | ((uint32_t)d << shift));
            s.b64[0] = above;
        }
        __syncthreads();
        prefix = (uint32_t)s.b32[0];
        above = s.b64[0];
        pmask |= 255u << shift;
        __syncthreads();
    }
    /* ties at prefix, in id order, until above + theirs reaches need (all of them if never) */
    int i0, i1;
    ks_range(r.V, &i0, &i1);
    u64 mine = 0;
    for (int i = i0; i < i1; i++) {
        const float x = r.l[i];
        if (ks_in(r, prev, all, x, i) && ks_key(x) == prefix)
            mine += by_weight ? ks_weight(r, x) : 1ull;
    }
    u64 total;
    u64 have = above + ks_scan(mine, &total, s);
    int last = INT_MAX;
    if (have < need && have + mine >= need) {
        for (int i = i0; i < i1; i++) {
            const float x = r.l[i];
            if (!(ks_in(r, prev, all, x, i) && ks_key(x) == prefix))
                continue;
            have += by_weight ? ks_weight(r, x) : 1ull;
            if (have >= need) {
                last = i;
                break;
            }
        }
    }
    if (above >= need)
        last = -1; /* no tie needed */
    last = ks_min(last, s);
    return ks_cut{prefix, last};
}

/* ---- the draw ---- */

/* The band of logit x: 0 when the draw walks id order alone. */
__device__ static __forceinline__ int ks_band(const ks_row &r, bool bands, float x)
{
    if (!bands)
        return 0;
    for (int b = 0; b < KS_N_WINDOWS; b++) {
        float cut = r.m - ks_windows[b] * r.t;
        if (!(cut > r.lo))
            cut = r.lo;
        if (x >= cut)
            return b;
    }
    return KS_N_WINDOWS;
}

/* The token where u * (kept weight) falls, walking bands, then ids. */
__device__ static int ks_draw(const ks_row &r, const ks_cut &a, const ks_cut &b, bool bands,
                              double u, ks_shared &s)
{
    for (int j = threadIdx.x; j < KS_N_BANDS; j += KS_THREADS)
        s.band[j] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < r.V; i += KS_THREADS) {
        const float x = r.l[i];
        if (ks_in(r, a, b, x, i))
            atomicAdd(&s.band[ks_band(r, bands, x)], ks_weight(r, x));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        u64 z = 0;
        for (int j = 0; j < KS_N_BANDS; j++)
            z += s.band[j];
        u64 target = (u64)(u * (double)z), before = 0;
        target = target < z ? target : z - 1; /* u < 1, but the double product may round up */
        int bb = 0;
        while (bb < KS_N_BANDS - 1 && target >= before + s.band[bb])
            before += s.band[bb++];
        s.b32[1] = bb;
        s.b64[1] = target - before;
    }
    __syncthreads();
    const int band = s.b32[1];
    const u64 rem = s.b64[1];
    int i0, i1;
    ks_range(r.V, &i0, &i1);
    u64 mine = 0;
    int my_last = -1;
    for (int i = i0; i < i1; i++) {
        const float x = r.l[i];
        if (!ks_in(r, a, b, x, i) || ks_band(r, bands, x) != band)
            continue;
        const u64 w = ks_weight(r, x);
        mine += w;
        my_last = w > 0 ? i : my_last;
    }
    u64 total;
    u64 cum = ks_scan(mine, &total, s);
    int pick = INT_MAX;
    if (cum <= rem && cum + mine > rem) {
        for (int i = i0; i < i1; i++) {
            const float x = r.l[i];
            if (!ks_in(r, a, b, x, i) || ks_band(r, bands, x) != band)
                continue;
            cum += ks_weight(r, x);
            if (cum > rem) {
                pick = i;
                break;
            }
        }
    }
    pick = ks_min(pick, s);
    if (pick == INT_MAX) /* not reached (the target is below the band's weight): its last token */
        pick = -ks_min(my_last >= 0 ? -my_last : INT_MAX, s);
    return pick >= 0 ? pick : 0;
}

__global__ void __launch_bounds__(KS_THREADS)
    k_sample_kernel(const float *__restrict__ logits, int V, const k_sample_row *__restrict__ rows,
                    int32_t *__restrict__ out)
{
    __shared__ ks_shared s;
    const k_sample_row p = rows[blockIdx.x];
    ks_row r;
    r.l = logits + (long)blockIdx.x * V;
    r.V = V;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += KS_THREADS)
        m = fmaxf(m, r.l[i]); /* NaN never wins */
    r.m = ks_max(m, s);
    if (p.temperature < KS_GREEDY || !isfinite(r.m)) {
        int first = INT_MAX;
        for (int i = threadIdx.x; i < V; i += KS_THREADS)
            if (r.l[i] == r.m) {
                first = i;
                break;
            }
        first = ks_min(first, s);
        if (threadIdx.x == 0)
            out[blockIdx.x] = first == INT_MAX ? 0 : first;
        return;
    }
    r.t = p.temperature;
    r.inv_t = 1.0f / p.temperature;
    r.lo = p.min_p > 0.0f ? r.m + p.temperature * logf(p.min_p) : -INFINITY;
    if (r.lo > r.m)
        r.lo = r.m; /* rounding: the max always survives */
    const int n_blocks = (V + KS_BLOCK - 1) / KS_BLOCK;
    const int k = p.top_k > 0 && p.top_k < V ? p.top_k : 0;
    const bool top_p = p.top_p < 1.0f;
    const ks_cut all = {0u, INT_MAX};
    ks_cut ck = all, cp = all;
    if (k > 0)
        ck = ks_select(r, all, false, (u64)k, s);
    if (top_p) {
        u64 mine = 0, z;
        for (int i = threadIdx.x; i < V; i += KS_THREADS) {
            const float x = r.l[i];
            if (ks_in(r, ck, all, x, i))
                mine += ks_weight(r, x);
        }
        ks_scan(mine, &z, s);
        cp = ks_select(r, ck, true, (u64)((double)p.top_p * (double)z), s);
    }
    /* rt_sampler walks its candidates in id order when it collects them in one pass (top_k up to
     * the number of blocks, or no filter), else band by band below the max */
    const bool bands = (k > 0 || top_p) && !(k > 0 && k <= n_blocks);
    const int tok = ks_draw(r, ck, cp, bands, p.u, s);
    if (threadIdx.x == 0)
        out[blockIdx.x] = tok;
}

extern "C" int k_sample(const float *logits, int R, int V, const k_sample_row *rows, int32_t *out,
                        cudaStream_t stream)
{
    if (!logits || !rows || !out || R < 0 || V < 1 || V > (1 << 22))
        return -1; /* FQ_EINVAL */
    if (R == 0)
        return 0;
    k_sample_kernel<<<(unsigned)R, KS_THREADS, 0, stream>>>(logits, V, rows, out);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

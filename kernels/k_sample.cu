/* k_sample.cu — sampling on the device (k_sample.h): one CTA of 1024 threads per logits row.
 *
 * With top_k or top_p, first the short way: one pass counts and weighs the candidates per logit
 * band below the max; the fewest bands that hold the kept set (k tokens, or top_p of the weight)
 * are copied, in id order, into shared memory when they are at most KS_CAP tokens, sorted there by
 * logit (ties by id, bitonic), cut to top_k and to top_p's prefix, sorted again into the walk
 * order, and drawn from. Otherwise, and for plain temperature:
 * passes over the row (it stays in L2): the maximum; the total weight (top_p alone); a radix
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
#define KS_CAP       2048 /* candidates the shared-memory path sorts (a power of two) */

typedef unsigned long long u64;

/* rt_sampler's bands below the max, in units of the temperature. */
__constant__ float ks_windows[KS_N_WINDOWS] = {1.0f, 2.0f,  3.0f,  4.0f,  6.0f,
                                               8.0f, 11.0f, 16.0f, 22.0f, 32.0f};

struct ks_shared {
    u64 list[KS_CAP]; /* the shared-memory path's candidates, as sort keys */
    u64 hist[256];
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

/* hist[bin] += v over the warp's lanes with bin >= 0: one shared atomic per distinct bin (the
 * top digits of a row's keys are mostly one or two values, so plain atomics would serialize on
 * them). The group sums use the warp's reduce unit on three 21-bit pieces of v (v < 2^62, so 32
 * pieces add up within 32 bits). Every lane of the warp calls it. */
__device__ static void ks_warp_add(u64 *hist, int bin, u64 v)
{
    const unsigned peers = __match_any_sync(KS_FULL, bin);
    const u64 p0 = __reduce_add_sync(peers, (unsigned)(v & 0x1fffffu));
    const u64 p1 = __reduce_add_sync(peers, (unsigned)((v >> 21) & 0x1fffffu));
    const u64 p2 = __reduce_add_sync(peers, (unsigned)(v >> 42));
    if (bin >= 0 && (int)(threadIdx.x & 31) == __ffs((int)peers) - 1)
        atomicAdd(&hist[bin], p0 + (p1 << 21) + (p2 << 42));
}

/* ---- block reductions and scans (every thread calls them; results go to all) ---- */

/* op over every thread's v (op commutative and associative, as max and min are: the result does
 * not depend on the order); tmp holds one value per warp. */
template <class T, class Op> __device__ static T ks_reduce(T v, Op op, T *tmp)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(KS_FULL, v, o));
    if (lane == 0)
        tmp[w] = v;
    __syncthreads();
    T m = tmp[0];
    for (int i = 1; i < KS_WARPS; i++)
        m = op(m, tmp[i]);
    __syncthreads();
    return m;
}

__device__ static float ks_max(float v, ks_shared &s)
{
    return ks_reduce(
        v, [](float x, float y) { return fmaxf(x, y); }, s.wmax);
}

__device__ static int ks_min(int v, ks_shared &s)
{
    return ks_reduce(
        v, [](int x, int y) { return min(x, y); }, s.wmin);
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
        for (int base = 0; base < r.V; base += KS_THREADS) { /* every lane every round */
            const int i = base + (int)threadIdx.x;
            int bin = -1;
            u64 v = 0;
            if (i < r.V) {
                const float x = r.l[i];
                const uint32_t key = ks_key(x);
                if (ks_in(r, prev, all, x, i) && (key & pmask) == prefix) {
                    bin = (int)((key >> shift) & 255u);
                    v = by_weight ? ks_weight(r, x) : 1ull;
                }
            }
            ks_warp_add(s.hist, bin, v);
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

/* ---- the short way: the candidates sorted in shared memory ---- */

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

/* a[0..n) sorted descending (bitonic over the next power of two <= KS_CAP; padding 0 sorts last).
 */
__device__ static void ks_sort_desc(u64 *a, int n)
{
    int p2 = 1;
    while (p2 < n)
        p2 <<= 1;
    for (int i = n + (int)threadIdx.x; i < p2; i += KS_THREADS)
        a[i] = 0;
    __syncthreads();
    for (int size = 2; size <= p2; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < p2 / 2; i += KS_THREADS) {
                const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                const bool desc = (lo & size) == 0;
                const u64 x = a[lo], y = a[hi];
                if ((x < y) == desc) {
                    a[lo] = y;
                    a[hi] = x;
                }
            }
            __syncthreads();
        }
}

/* Per-band counts (hist[0..KS_N_BANDS)) and weights (hist[16..16 + KS_N_BANDS)) of the tokens
 * keep(i, x) accepts; each thread sums in registers, then one atomic per warp and band. */
template <class F>
__device__ static void ks_band_totals(const ks_row &r, bool bands, F keep, ks_shared &s)
{
    unsigned cnt[KS_N_BANDS];
    u64 mass[KS_N_BANDS];
#pragma unroll
    for (int j = 0; j < KS_N_BANDS; j++) {
        cnt[j] = 0;
        mass[j] = 0;
    }
    for (int j = threadIdx.x; j < 32; j += KS_THREADS)
        s.hist[j] = 0;
    for (int i = threadIdx.x; i < r.V; i += KS_THREADS) {
        const float x = r.l[i];
        if (!keep(i, x))
            continue;
        const int b = ks_band(r, bands, x);
        const u64 w = ks_weight(r, x);
#pragma unroll
        for (int j = 0; j < KS_N_BANDS; j++) {
            cnt[j] += b == j;
            mass[j] += b == j ? w : 0;
        }
    }
    __syncthreads(); /* hist cleared */
#pragma unroll
    for (int j = 0; j < KS_N_BANDS; j++) {
        u64 c = cnt[j], w = mass[j];
        for (int o = 16; o > 0; o >>= 1) {
            c += __shfl_xor_sync(KS_FULL, c, o);
            w += __shfl_xor_sync(KS_FULL, w, o);
        }
        if ((threadIdx.x & 31) == 0 && c > 0) {
            atomicAdd(&s.hist[j], c);
            atomicAdd(&s.hist[16 + j], w);
        }
    }
    __syncthreads();
}

/* Inclusive prefix over positions [0, n) of val(j) (two contiguous positions per thread): the
 * first position whose prefix is > t (strict) or >= t, or -1. */
template <class F>
__device__ static int ks_first_reaching(int n, F val, u64 t, bool strict, ks_shared &s)
{
    const int j0 = 2 * (int)threadIdx.x;
    const u64 v0 = j0 < n ? val(j0) : 0, v1 = j0 + 1 < n ? val(j0 + 1) : 0;
    u64 total;
    const u64 before = ks_scan(v0 + v1, &total, s);
    int hit = INT_MAX;
    if (j0 < n && (strict ? before + v0 > t : before + v0 >= t))
        hit = j0;
    else if (j0 + 1 < n && (strict ? before + v0 + v1 > t : before + v0 + v1 >= t))
        hit = j0 + 1;
    hit = ks_min(hit, s);
    return hit == INT_MAX ? -1 : hit;
}

__device__ static __forceinline__ int ks_id_of(u64 e)
{
    return (int)(0xffffffffu - (uint32_t)e);
}

/* The filtered draw on the shared-memory candidates: the token, or -1 when the kept set's bands
 * hold more than KS_CAP tokens. */
__device__ static int ks_short(const ks_row &r, int k, float top_p, bool bands, double u,
                               ks_shared &s)
{
    ks_band_totals(
        r, true, [&](int, float x) { return x >= r.lo; }, s);
    if (threadIdx.x == 0) { /* the fewest bands that hold the kept set */
        u64 z_all = 0, c = 0, w = 0;
        for (int j = 0; j < KS_N_BANDS; j++)
            z_all += s.hist[16 + j];
        const u64 need = (u64)((double)top_p * (double)z_all);
        int last = KS_N_BANDS - 1;
        for (int j = 0; j < KS_N_BANDS; j++) {
            c += s.hist[j];
            w += s.hist[16 + j];
            if (k > 0 ? c >= (u64)k : w >= need) {
                last = j;
                break;
            }
        }
        u64 n = 0;
        for (int j = 0; j <= last; j++)
            n += s.hist[j];
        s.b32[0] = last;
        s.b32[1] = n <= KS_CAP ? (int)n : -1;
        s.b64[0] = z_all;
    }
    __syncthreads();
    const int last = s.b32[0], n = s.b32[1];
    const u64 z_all = s.b64[0];
    __syncthreads();
    if (n < 0)
        return -1;
    /* the candidates of bands 0..last into list, in id order: (key, ~id) to sort by */
    int i0, i1;
    ks_range(r.V, &i0, &i1);
    u64 mine = 0, total;
    for (int i = i0; i < i1; i++)
        mine += r.l[i] >= r.lo && ks_band(r, true, r.l[i]) <= last;
    u64 at = ks_scan(mine, &total, s);
    for (int i = i0; i < i1; i++) {
        const float x = r.l[i];
        if (x >= r.lo && ks_band(r, true, x) <= last)
            s.list[at++] = ((u64)ks_key(x) << 32) | (0xffffffffu - (uint32_t)i);
    }
    __syncthreads();
    ks_sort_desc(s.list, n);
    /* top_k, then top_p's prefix of what it keeps: the fewest whose weight reaches top_p of it */
    int kept = k > 0 && k < n ? k : n;
    auto wt = [&](int j) { return ks_weight(r, r.l[ks_id_of(s.list[j])]); };
    if (top_p < 1.0f) {
        u64 z = z_all;
        if (k > 0) {
            const int j0 = 2 * (int)threadIdx.x;
            ks_scan((j0 < kept ? wt(j0) : 0) + (j0 + 1 < kept ? wt(j0 + 1) : 0), &z, s);
        }
        const int hit = ks_first_reaching(kept, wt, (u64)((double)top_p * (double)z), false, s);
        kept = hit >= 0 ? hit + 1 : kept;
    }
    /* the walk order: bands (when rt_sampler walks them), then ids */
    for (int j = threadIdx.x; j < kept; j += KS_THREADS) {
        const int id = ks_id_of(s.list[j]);
        const u64 band = (u64)ks_band(r, bands, r.l[id]);
        s.list[j] = ~((band << 32) | (uint32_t)id);
    }
    __syncthreads();
    ks_sort_desc(s.list, kept);
    auto wd = [&](int j) { return ks_weight(r, r.l[(int)(uint32_t)~s.list[j]]); };
    u64 z;
    {
        const int j0 = 2 * (int)threadIdx.x;
        ks_scan((j0 < kept ? wd(j0) : 0) + (j0 + 1 < kept ? wd(j0 + 1) : 0), &z, s);
    }
    u64 target = (u64)(u * (double)z);
    target = target < z ? target : z - 1;
    const int hit = ks_first_reaching(kept, wd, target, true, s);
    return (int)(uint32_t)~s.list[hit >= 0 ? hit : kept - 1];
}

/* ---- the draw ---- */

/* The token where u * (kept weight) falls, walking bands, then ids. */
__device__ static int ks_draw(const ks_row &r, const ks_cut &a, const ks_cut &b, bool bands,
                              double u, ks_shared &s)
{
    ks_band_totals(
        r, bands, [&](int i, float x) { return ks_in(r, a, b, x, i); }, s);
    if (threadIdx.x == 0) {
        const u64 *band = s.hist + 16;
        u64 z = 0;
        for (int j = 0; j < KS_N_BANDS; j++)
            z += band[j];
        u64 target = (u64)(u * (double)z), before = 0;
        target = target < z ? target : z - 1; /* u < 1, but the double product may round up */
        int bb = 0;
        while (bb < KS_N_BANDS - 1 && target >= before + band[bb])
            before += band[bb++];
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
    /* rt_sampler walks its candidates in id order when it collects them in one pass (top_k up to
     * the number of blocks, or no filter), else band by band below the max */
    const bool bands = (k > 0 || top_p) && !(k > 0 && k <= n_blocks);
    if (k > 0 || top_p) {
        const int tok = ks_short(r, k, top_p ? p.top_p : 1.0f, bands, p.u, s);
        if (tok >= 0) {
            if (threadIdx.x == 0)
                out[blockIdx.x] = tok;
            return;
        }
    }
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

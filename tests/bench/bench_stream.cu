/* bench_stream.cu — how fast can a decode GEMM's weight bytes be read, by access pattern alone?
 *
 * Reads INT6 weights of an n x k linear (0.75 bytes per weight) with no arithmetic, the way a
 * decode kernel would, to separate the cost of the access pattern from the cost of the math:
 *   fqpack  the fq_pack.h row layout as k_gemm_w6_gemv reads it: one block per 16-row tile, warps
 *           splitting K, per 128-code unit a lane loads 16 low-plane bytes and the 16 high-plane
 *           bytes its pair of lanes share (so each high-plane byte is requested twice);
 *   nodup   the same rows and units, but the high plane split between the two lanes (8 bytes
 *           each): every byte requested once, per row 96 bytes a unit in 5 partial sectors;
 *   tiled   a tile-major layout: the 16 rows' bytes of one unit stored together (1536 bytes),
 *           so every warp load is 512 contiguous bytes.
 * Each lane keeps D units of loads in flight (a register ring) and folds what it read into one
 * word that is written out, so nothing is optimized away. Prints one JSON line per case:
 *   {"pattern", "n", "k", "us", "gbps"} (gbps: n * k * 0.75 bytes / median time).
 * Usage: bench_stream [--reps R]. Needs a CUDA device; exits 0 with a note when there is none.
 */
#include "k_ptx.cuh"

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS_D    4    /* units in flight per lane */
#define BS_UNIT 96   /* bytes of one row's 128-code unit */
#define BS_TILE 1536 /* bytes of one 16-row unit */

enum { BS_FQPACK = 0, BS_NODUP = 1, BS_TILED = 2 };

struct bs_params {
    const uint8_t *w;
    unsigned *out;
    long row_bytes;
    int n, n_units, splits;
};

/* The decode kernel's streaming loads (k_ptx.cuh), as vectors. */
__device__ __forceinline__ uint4 bs_ld16(const uint8_t *p)
{
    unsigned v[4];
    k_ld_stream16(v, p);
    return make_uint4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ uint2 bs_ld8(const uint8_t *p)
{
    unsigned v[2];
    k_ld_stream8(v, p);
    return make_uint2(v[0], v[1]);
}

/* What one lane loads for one unit: up to three 16-byte vectors. */
struct bs_slot {
    uint4 v[3];
};

/* The row layouts: rows q and q + 8 of the tile. */
template <int PAT>
__device__ __forceinline__ void bs_load_rows(const bs_params &p, int tile, int u, int q, int h,
                                             int r, bs_slot &s)
{
#pragma unroll
    for (int a = 0; a < 2; a++) {
        const int row = min(tile * 16 + q + 8 * a, p.n - 1);
        const uint8_t *b = p.w + (long)row * p.row_bytes + (long)u * BS_UNIT + 48 * r;
        const uint4 lo = bs_ld16(b + 16 * h);
        if (PAT == BS_FQPACK) {
            const uint4 hi = bs_ld16(b + 32);
            s.v[a] = make_uint4(lo.x ^ hi.x, lo.y ^ hi.y, lo.z ^ hi.z, lo.w ^ hi.w);
        } else {
            const uint2 hi = bs_ld8(b + 32 + 8 * h);
            s.v[a] = make_uint4(lo.x ^ hi.x, lo.y ^ hi.y, lo.z, lo.w);
        }
    }
    s.v[2] = make_uint4(0, 0, 0, 0);
}

/* The tile-major layout: three 512-byte warp loads per unit. */
__device__ __forceinline__ void bs_load_tiled(const bs_params &p, int tile, int u, int lane,
                                              bs_slot &s)
{
    const uint8_t *b = p.w + ((long)tile * p.n_units + u) * BS_TILE + 16 * lane;
    s.v[0] = bs_ld16(b);
    s.v[1] = bs_ld16(b + 512);
    s.v[2] = bs_ld16(b + 1024);
}

template <int PAT>
__device__ __forceinline__ void bs_load(const bs_params &p, int tile, int u, int lane, bs_slot &s)
{
    if (PAT == BS_TILED)
        bs_load_tiled(p, tile, u, lane, s);
    else
        bs_load_rows<PAT>(p, tile, u, lane >> 2, lane & 1, (lane >> 1) & 1, s);
}

__device__ __forceinline__ unsigned bs_fold(const bs_slot &s)
{
    unsigned x = 0;
#pragma unroll
    for (int i = 0; i < 3; i++)
        x ^= s.v[i].x ^ s.v[i].y ^ s.v[i].z ^ s.v[i].w;
    return x;
}

template <int PAT> __global__ void __launch_bounds__(512, 1) bs_kernel(const bs_params p)
{
    const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31;
    const int tile = (int)blockIdx.x;
    const int ub = (int)((long)warp * p.n_units / p.splits);
    const int ue = (int)((long)(warp + 1) * p.n_units / p.splits);
    const int last = ue - 1;
    bs_slot ring[BS_D];
#pragma unroll
    for (int i = 0; i < BS_D - 1; i++)
        bs_load<PAT>(p, tile, min(ub + i, last), lane, ring[i]);
    unsigned acc = 0;
    int base = ub;
    for (; base + BS_D <= ue; base += BS_D) {
#pragma unroll
        for (int sl = 0; sl < BS_D; sl++) {
            bs_load<PAT>(p, tile, min(base + sl + BS_D - 1, last), lane,
                         ring[(sl + BS_D - 1) % BS_D]);
            acc += bs_fold(ring[sl]);
        }
    }
#pragma unroll
    for (int sl = 0; sl < BS_D - 1; sl++)
        if (base + sl < ue)
            acc += bs_fold(ring[sl]);
    p.out[(long)tile * blockDim.x + threadIdx.x] = acc;
}

#define BS_CK(x)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "bench_stream: %s: %s\n", #x, cudaGetErrorString(e_));                 \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static int bs_cmp(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Splits per 16-row tile so that the grid fills the SMs with 16 resident warps each. */
static int bs_splits(int tiles, int n_units, int sms)
{
    int best = 1;
    long best_cost = -1;
    for (int s = 1; s <= 16 && s <= n_units; s *= 2) {
        const long per_sm = 16 / s, resident = (long)sms * per_sm;
        const long cost = (tiles + resident - 1) / resident * per_sm;
        if (best_cost < 0 || cost < best_cost) {
            best_cost = cost;
            best = s;
        }
    }
    return best;
}

static int bs_run(int pat, int n, int k, int reps, int sms, const uint8_t *w, unsigned *out)
{
    bs_params p;
    p.w = w;
    p.out = out;
    p.row_bytes = (long)k / 128 * BS_UNIT;
    p.n = n;
    p.n_units = k / 128;
    const int tiles = n / 16;
    p.splits = bs_splits(tiles, p.n_units, sms);
    const unsigned threads = (unsigned)(32 * p.splits);
    float *ms = (float *)malloc(sizeof(float) * (size_t)reps);
    if (ms == NULL)
        return 1;
    cudaEvent_t e0, e1;
    BS_CK(cudaEventCreate(&e0));
    BS_CK(cudaEventCreate(&e1));
    for (int i = -5; i < reps; i++) {
        BS_CK(cudaEventRecord(e0));
        if (pat == BS_FQPACK)
            bs_kernel<BS_FQPACK><<<tiles, threads>>>(p);
        else if (pat == BS_NODUP)
            bs_kernel<BS_NODUP><<<tiles, threads>>>(p);
        else
            bs_kernel<BS_TILED><<<tiles, threads>>>(p);
        BS_CK(cudaGetLastError());
        BS_CK(cudaEventRecord(e1));
        BS_CK(cudaEventSynchronize(e1));
        if (i >= 0)
            BS_CK(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    qsort(ms, (size_t)reps, sizeof(float), bs_cmp);
    const double us = 1000.0 * ms[reps / 2];
    static const char *names[] = {"fqpack", "nodup", "tiled"};
    printf("{\"pattern\": \"%s\", \"n\": %d, \"k\": %d, \"splits\": %d, \"us\": %.2f, \"gbps\": "
           "%.1f}\n",
           names[pat], n, k, p.splits, us, (double)n * k * 0.75 / us / 1000.0);
    free(ms);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 0;
}

int main(int argc, char **argv)
{
    int reps = 50;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_stream [--reps R]\n");
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        printf("bench_stream: no CUDA device, nothing measured\n");
        return 0;
    }
    int sms = 0;
    BS_CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    static const int shapes[][2] = {{8192, 28672}, {28672, 8192}, {13824, 5120},
                                    {5120, 13824}, {4096, 4096},  {8192, 8192}};
    const size_t max_bytes = (size_t)28672 * 8192 * 3 / 4;
    uint8_t *w = NULL;
    unsigned *out = NULL;
    BS_CK(cudaMalloc((void **)&w, max_bytes));
    BS_CK(cudaMalloc((void **)&out, (size_t)28672 / 16 * 512 * sizeof(unsigned)));
    BS_CK(cudaMemset(w, 0x5A, max_bytes));
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int pat = 0; pat < 3; pat++)
            if (bs_run(pat, shapes[s][0], shapes[s][1], reps, sms, w, out) != 0)
                return 1;
    cudaFree(w);
    cudaFree(out);
    return 0;
}

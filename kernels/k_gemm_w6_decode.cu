/* k_gemm_w6_decode.cu — decode GEMM (m <= 16): int8 activation codes times packed INT6 weights.
 *
 * y[m, n] = sum over groups gi ascending of (sx[m, gi] * f32(sw[n, gi])) * (float)d[m, n, gi],
 * where d is the exact int32 dot product of group gi — bit for bit the order rt_cpu_int6.h
 * documents (__fmul_rn / __fadd_rn so nvcc cannot contract into FMA).
 *
 * First, simple version: CUDA cores only (__dp4a), no tensor cores — the mma / wgmma versions come
 * next. Memory-bound design: one warp per output row n. Per iteration the warp reads 32 consecutive
 * 48-byte chunks of the packed row (lane = chunk, three 16-byte loads), unpacks the 64 codes of its
 * chunk to signed bytes (mask/shift as in fq_pack.h, then __vsub4 by 32), and for every activation
 * row computes two int32 sums, one per 32-code half (a group is a whole number of halves since g >=
 * 32). The half sums go through shared memory; lane mm (< m) then sums them into group sums and
 * folds the groups of the iteration, in ascending order, into its fp32 accumulator. Activations are
 * read through the read-only cache (__ldg, 16-byte loads; rows are 16-byte aligned as k is a
 * multiple of 32).
 */
#include "k.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define W6D_MAXM   16
#define W6D_WARPS  4  /* warps (= output rows) per block */
#define W6D_HALVES 64 /* 32-code halves per warp iteration: 32 chunks x 2 */

__device__ __forceinline__ unsigned w6d_codes(unsigned low, unsigned high)
{
    /* low: 4 low nibbles in the low half of each byte; high: 2 top bits in bits 0..1 of each byte.
     */
    return __vsub4((low & 0x0F0F0F0Fu) | ((high & 0x03030303u) << 4), 0x20202020u);
}

__global__ void __launch_bounds__(W6D_WARPS * 32)
    k_gemm_w6_decode_kernel(const int8_t *__restrict__ qx, const float *__restrict__ sx, int m,
                            int k, int g, const uint8_t *__restrict__ packed,
                            const uint16_t *__restrict__ sw, long row_bytes, int n,
                            float *__restrict__ y)
{
    __shared__ int s_half[W6D_WARPS][W6D_MAXM][W6D_HALVES];
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * W6D_WARPS + warp;
    if (row >= n)
        return; /* uniform per warp; no block-level synchronization below */

    const int n_chunks = (k + 63) / 64;
    const int n_halves = k / 32;
    const int n_groups = k / g;
    const int hpg = g / 32; /* halves per group: 1, 2, 4, 8 or 16; 64 is a multiple */
    const uint8_t *prow = packed + (long)row * row_bytes;
    const uint16_t *swrow = sw + (long)row * n_groups;
    int(*sh)[W6D_HALVES] = s_half[warp];
    float acc = 0.0f;

    for (int c0 = 0; c0 < n_chunks; c0 += 32) {
        const int c = c0 + lane;
        int lo[W6D_MAXM], hi[W6D_MAXM];
#pragma unroll
        for (int mm = 0; mm < W6D_MAXM; mm++) {
            lo[mm] = 0;
            hi[mm] = 0;
        }
        if (c < n_chunks) {
            const uint4 *p = reinterpret_cast<const uint4 *>(prow + (long)c * 48);
            const uint4 l0 = __ldg(p), l1 = __ldg(p + 1), h = __ldg(p + 2);
            const unsigned lw[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
            const unsigned hw[4] = {h.x, h.y, h.z, h.w};
            unsigned a[8], b[8]; /* a: codes 4i..4i+3; b: codes 32+4i..32+4i+3 */
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int s = i < 4 ? 0 : 2;
                a[i] = w6d_codes(lw[i], hw[i & 3] >> s);
                b[i] = w6d_codes(lw[i] >> 4, hw[i & 3] >> (s + 4));
            }
            const bool has_hi = 64 * c + 32 < k; /* else the second half is padding */
#pragma unroll
            for (int mm = 0; mm < W6D_MAXM; mm++) {
                if (mm < m) {
                    const int4 *xp = reinterpret_cast<const int4 *>(qx + (long)mm * k + 64L * c);
                    const int4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
                    int s0 = 0;
                    s0 = __dp4a((int)a[0], x0.x, s0);
                    s0 = __dp4a((int)a[1], x0.y, s0);
                    s0 = __dp4a((int)a[2], x0.z, s0);
                    s0 = __dp4a((int)a[3], x0.w, s0);
                    s0 = __dp4a((int)a[4], x1.x, s0);
                    s0 = __dp4a((int)a[5], x1.y, s0);
                    s0 = __dp4a((int)a[6], x1.z, s0);
                    s0 = __dp4a((int)a[7], x1.w, s0);
                    lo[mm] = s0;
                    if (has_hi) {
                        const int4 x2 = __ldg(xp + 2), x3 = __ldg(xp + 3);
                        int s1 = 0;
                        s1 = __dp4a((int)b[0], x2.x, s1);
                        s1 = __dp4a((int)b[1], x2.y, s1);
                        s1 = __dp4a((int)b[2], x2.z, s1);
                        s1 = __dp4a((int)b[3], x2.w, s1);
                        s1 = __dp4a((int)b[4], x3.x, s1);
                        s1 = __dp4a((int)b[5], x3.y, s1);
                        s1 = __dp4a((int)b[6], x3.z, s1);
                        s1 = __dp4a((int)b[7], x3.w, s1);
                        hi[mm] = s1;
                    }
                }
            }
        }
        __syncwarp();
#pragma unroll
        for (int mm = 0; mm < W6D_MAXM; mm++) {
            if (mm < m) {
                sh[mm][2 * lane] = lo[mm];
                sh[mm][2 * lane + 1] = hi[mm];
            }
        }
        __syncwarp();
        if (lane < m) {
            const int h0 = 2 * c0; /* first global half of this iteration */
            const int h_end = min(n_halves - h0, W6D_HALVES);
            const float *sxrow = sx + (long)lane * n_groups;
            for (int hl = 0; hl < h_end; hl += hpg) {
                int d = 0;
                for (int j = 0; j < hpg; j++)
                    d += sh[lane][hl + j];
                const int gi = (h0 + hl) / hpg;
                const float s =
                    __fmul_rn(__ldg(sxrow + gi), __half2float(__ushort_as_half(swrow[gi])));
                acc = __fadd_rn(acc, __fmul_rn(s, __int2float_rn(d)));
            }
        }
    }
    if (lane < m)
        y[(long)lane * n + row] = acc;
}

extern "C" int k_gemm_w6_decode(const int8_t *qx, const float *sx, int m, int k, int g,
                                const uint8_t *packed, const uint16_t *sw, long row_bytes, int n,
                                float *y, cudaStream_t stream)
{
    if (!qx || !sx || !packed || !sw || !y || m < 1 || m > W6D_MAXM || k < 1 || n < 1 ||
        (g != 32 && g != 64 && g != 128 && g != 256 && g != 512) || k % g != 0 ||
        row_bytes < (long)(k + 63) / 64 * 48 || row_bytes % 16 != 0 || ((uintptr_t)qx & 15) != 0 ||
        ((uintptr_t)packed & 15) != 0)
        return -1; /* FQ_EINVAL */
    const unsigned blocks = (unsigned)((n + W6D_WARPS - 1) / W6D_WARPS);
    k_gemm_w6_decode_kernel<<<blocks, W6D_WARPS * 32, 0, stream>>>(qx, sx, m, k, g, packed, sw,
                                                                   row_bytes, n, y);
    if (cudaGetLastError() != cudaSuccess)
        return -1;
    return 0;
}

/* k_w8a8.cu — per-row int8 quantization and the int32 -> fp32 scale epilogue of the W8A8
 * comparison mode (contract: k_w8a8.h). One block per row for the quantizer (a block-wide absmax,
 * then the codes); a grid-stride loop for the epilogue.
 */
#include "k_w8a8.h"

#include <cuda_runtime.h>
#include <stdint.h>

#define KW_THREADS 256
#define KW_FULL    0xffffffffu

__device__ __forceinline__ float kw_block_max(float v)
{
    __shared__ float part[KW_THREADS / 32];
    for (int off = 16; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(KW_FULL, v, off));
    const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31;
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    float m = part[0];
    for (int w = 1; w < KW_THREADS / 32; w++)
        m = fmaxf(m, part[w]);
    return m;
}

__global__ void __launch_bounds__(KW_THREADS)
    k_quant_rows_i8_kernel(const float *__restrict__ x, int k, int8_t *__restrict__ q,
                           float *__restrict__ s)
{
    const long r = blockIdx.x;
    const float *xr = x + r * k;
    float amax = 0.0f;
    for (int j = (int)threadIdx.x; j < k; j += KW_THREADS)
        amax = fmaxf(amax, fabsf(xr[j])); /* fmaxf drops a NaN, as fq_act's comparison does */
    amax = kw_block_max(amax);
    const float qmax = 127.0f, lo = -128.0f;
    const float inv = amax > 0.0f ? __fdiv_rn(qmax, amax) : 0.0f;
    if (threadIdx.x == 0)
        s[r] = __fdiv_rn(amax, qmax);
    int8_t *qr = q + r * k;
    for (int j = (int)threadIdx.x; j < k; j += KW_THREADS) {
        float v = rintf(__fmul_rn(xr[j], inv));
        v = v != v ? 0.0f : fminf(fmaxf(v, lo), qmax);
        qr[j] = (int8_t)v;
    }
}

__global__ void k_w8a8_epilogue_kernel(const int32_t *__restrict__ acc, int m, int n,
                                       const float *__restrict__ sx, const float *__restrict__ sw,
                                       float *__restrict__ y, long ldy)
{
    const long total = (long)m * n;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long)gridDim.x * blockDim.x) {
        const long r = i / n, c = i % n;
        y[r * ldy + c] = __fmul_rn(__fmul_rn(sx[r], sw[c]), (float)acc[i]);
    }
}

extern "C" int k_quant_rows_i8(const float *x, int T, int k, int8_t *q, float *s,
                               cudaStream_t stream)
{
    if (!x || !q || !s || T < 0 || k < 1)
        return -1; /* FQ_EINVAL */
    if (T == 0)
        return 0;
    k_quant_rows_i8_kernel<<<(unsigned)T, KW_THREADS, 0, stream>>>(x, k, q, s);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int k_w8a8_epilogue(const int32_t *acc, int m, int n, const float *sx, const float *sw,
                               float *y, long ldy, cudaStream_t stream)
{
    if (!acc || !sx || !sw || !y || m < 0 || n < 1 || ldy < n)
        return -1; /* FQ_EINVAL */
    const long total = (long)m * n;
    if (total == 0)
        return 0;
    long blocks = (total + KW_THREADS - 1) / KW_THREADS;
    blocks = blocks < 132L * 16 ? blocks : 132L * 16;
    k_w8a8_epilogue_kernel<<<(unsigned)blocks, KW_THREADS, 0, stream>>>(acc, m, n, sx, sw, y, ldy);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

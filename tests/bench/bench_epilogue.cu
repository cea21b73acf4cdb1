/* bench_epilogue.cu — device helpers of the GEMM benchmark (tests/bench/bench_gemm.c): the dequant
 * epilogue that turns cuBLAS's int32 W8A8 result into fp16 with per-token and per-channel scales
 * (so the cuBLAS int8 baseline pays for a scaled output as our kernels do), random fills of device
 * buffers, and a spin kernel that keeps the GPU busy while the host queues a timed batch.
 *
 * C-callable; the prototypes are repeated in bench_gemm.c (this pair is private to the benchmark).
 * Every function is asynchronous on `stream` and returns 0, or -1 for bad arguments or a failed
 * launch.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#define KB_THREADS 256
#define KB_BLOCKS  1056 /* grid-stride fills: 8 blocks per SM on a 132-SM H100 */

/* splitmix64 of (seed, i): independent 64 random bits per index. */
__device__ __forceinline__ unsigned long long kb_hash(unsigned long long seed, unsigned long long i)
{
    unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned kb_half_bits(float v)
{
    return (unsigned)__half_as_ushort(__float2half_rn(v));
}

/* y[r, c] = half((float)acc[r, c] * sx[r] * sw[c]), four consecutive columns per thread (n % 4 ==
 * 0, so a row is a whole number of int4 / 8-byte groups and every access is aligned). */
__global__ void k_bench_dequant_kernel(const int4 *__restrict__ acc, const float *__restrict__ sx,
                                       const float4 *__restrict__ sw, int n4, long total4,
                                       uint2 *__restrict__ y)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total4;
         i += (long)gridDim.x * blockDim.x) {
        const long r = i / n4;
        const int c4 = (int)(i - r * n4);
        const int4 a = acc[i];
        const float s = sx[r];
        const float4 w = sw[c4];
        uint2 out;
        out.x = kb_half_bits(__fmul_rn(__fmul_rn((float)a.x, s), w.x)) |
                kb_half_bits(__fmul_rn(__fmul_rn((float)a.y, s), w.y)) << 16;
        out.y = kb_half_bits(__fmul_rn(__fmul_rn((float)a.z, s), w.z)) |
                kb_half_bits(__fmul_rn(__fmul_rn((float)a.w, s), w.w)) << 16;
        y[i] = out;
    }
}

/* Random 32-bit words. */
__global__ void k_bench_fill_words_kernel(unsigned *__restrict__ p, long n, unsigned long long seed)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x)
        p[i] = (unsigned)(kb_hash(seed, (unsigned long long)i) >> 32);
}

/* fp16 values uniform in [-1, 1). */
__global__ void k_bench_fill_f16_kernel(__half *__restrict__ p, long n, unsigned long long seed)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const unsigned long long h = kb_hash(seed, (unsigned long long)i);
        const float u = (float)(h >> 40) * (1.0f / 8388608.0f) - 1.0f; /* 24 bits -> [-1, 1) */
        p[i] = __float2half_rn(u);
    }
}

__device__ __forceinline__ unsigned long long kb_globaltimer(void)
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Returns after about ns nanoseconds of wall time. One thread. */
__global__ void k_bench_spin_kernel(unsigned long long ns)
{
    const unsigned long long t0 = kb_globaltimer();
    while (kb_globaltimer() - t0 < ns)
        __nanosleep(1000);
}

static unsigned kb_grid(long items)
{
    const long b = (items + KB_THREADS - 1) / KB_THREADS;
    return (unsigned)(b < KB_BLOCKS ? (b > 0 ? b : 1) : KB_BLOCKS);
}

/* acc [m, n] int32 (16-byte aligned), sx [m] fp32, sw [n] fp32 (16-byte aligned), y [m, n] fp16
 * bits (8-byte aligned); n a multiple of 4. */
extern "C" int k_bench_dequant_f16(const int32_t *acc, const float *sx, const float *sw, int m,
                                   int n, uint16_t *y, cudaStream_t stream)
{
    if (!acc || !sx || !sw || !y || m < 1 || n < 4 || n % 4 != 0 || ((uintptr_t)acc & 15) != 0 ||
        ((uintptr_t)sw & 15) != 0 || ((uintptr_t)y & 7) != 0)
        return -1;
    const long total4 = (long)m * (n / 4);
    k_bench_dequant_kernel<<<kb_grid(total4), KB_THREADS, 0, stream>>>(
        reinterpret_cast<const int4 *>(acc), sx, reinterpret_cast<const float4 *>(sw), n / 4,
        total4, reinterpret_cast<uint2 *>(y));
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* bytes random bytes at p (4-byte aligned, bytes a multiple of 4). */
extern "C" int k_bench_fill_bytes(void *p, size_t bytes, unsigned long long seed,
                                  cudaStream_t stream)
{
    if (!p || bytes == 0 || bytes % 4 != 0 || ((uintptr_t)p & 3) != 0)
        return -1;
    const long n = (long)(bytes / 4);
    k_bench_fill_words_kernel<<<kb_grid(n), KB_THREADS, 0, stream>>>(static_cast<unsigned *>(p), n,
                                                                     seed);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* count fp16 values uniform in [-1, 1) at p (2-byte aligned). */
extern "C" int k_bench_fill_f16(uint16_t *p, size_t count, unsigned long long seed,
                                cudaStream_t stream)
{
    if (!p || count == 0 || ((uintptr_t)p & 1) != 0)
        return -1;
    k_bench_fill_f16_kernel<<<kb_grid((long)count), KB_THREADS, 0, stream>>>(
        reinterpret_cast<__half *>(p), (long)count, seed);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* A one-thread kernel that returns after about ns nanoseconds. */
extern "C" int k_bench_spin(unsigned long long ns, cudaStream_t stream)
{
    k_bench_spin_kernel<<<1, 1, 0, stream>>>(ns);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

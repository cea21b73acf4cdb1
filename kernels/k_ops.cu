/* k_ops.cu — the forward pass's small fused kernels (k_ops.h): embedding gather, residual add +
 * RMSNorm + activation quantization, SwiGLU + quantization, quantization alone, RoPE + KV-cache
 * store, the final norm to fp16, argmax, fp16 conversions and INT6 weight dequantization.
 *
 * Row kernels (norm, SwiGLU, quantize, final norm): one CTA per row. Thread tid owns the 4
 * consecutive elements 4 * (j * THREADS + tid) .. + 3 for j < NV, kept in registers (float4 h[NV])
 * from the load to the last store, so a row is read once and written once. THREADS and NV are
 * template parameters picked from the row length (rows up to 65536 elements). Loads and stores are
 * 16-byte vectors when every row is 16-byte aligned, else scalar with bounds checks. The sum of
 * squares is reduced in double (every product of two floats is exact in double), so the RMS scale
 * matches rt_cpu_rmsnorm's except on the rarest rounding ties. For the quantizer, a group of g
 * elements is g / 4 consecutive threads of one slot j (THREADS * 4 is a multiple of g <= 512): its
 * amax is a segmented xor-butterfly inside the warp (g <= 128) or that plus a max over the g / 128
 * warps through shared memory. max is exact in any order; s, inv and the codes use __fdiv_rn /
 * __fmul_rn / rintf exactly as fq_act.c does, so the codes are bit for bit fq_act_quantize's.
 * Every arithmetic step whose rounding matters is an explicit _rn intrinsic (nvcc would otherwise
 * contract a * b + c into an FMA).
 *
 * RoPE: the inverse frequencies are computed on the host with the same expression as rt_cpu_rope
 * (glibc powf, so the very same floats) and passed by value; a CTA per token rotates its q and k
 * heads in place and writes k and v as fp16 into the caches.
 */
#include "k_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#define OPS_FULL    0xffffffffu
#define OPS_MAX_ROW 65536 /* longest row of the row kernels: 1024 threads x 16 x 4 */
#define OPS_MAX_HD  256   /* longest head of k_rope_kv_store */

/* ---- small helpers ---- */

static bool ops_aligned(const void *p, uintptr_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

static bool ops_group_ok(int g, long n)
{
    return (g == 32 || g == 64 || g == 128 || g == 256 || g == 512) && n % g == 0;
}

static int ops_launched(void)
{
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

static unsigned ops_grid_stride_blocks(long n, int threads)
{
    const long want = (n + threads - 1) / threads;
    return (unsigned)(want < 132L * 32 ? want : 132L * 32);
}

__device__ __forceinline__ unsigned ops_f16(float v)
{
    return (unsigned)__half_as_ushort(__float2half_rn(v));
}

/* 4 consecutive floats p[i..i+3] (i < n); vec: one 16-byte load (p + i aligned, i + 3 < n). */
__device__ __forceinline__ float4 ops_ld4(const float *p, int i, int n, bool vec)
{
    if (vec)
        return *reinterpret_cast<const float4 *>(p + i);
    float4 v = make_float4(p[i], 0.0f, 0.0f, 0.0f);
    if (i + 1 < n)
        v.y = p[i + 1];
    if (i + 2 < n)
        v.z = p[i + 2];
    if (i + 3 < n)
        v.w = p[i + 3];
    return v;
}

__device__ __forceinline__ void ops_st4(float *p, int i, int n, bool vec, float4 v)
{
    if (vec) {
        *reinterpret_cast<float4 *>(p + i) = v;
        return;
    }
    p[i] = v.x;
    if (i + 1 < n)
        p[i + 1] = v.y;
    if (i + 2 < n)
        p[i + 2] = v.z;
    if (i + 3 < n)
        p[i + 3] = v.w;
}

/* fp16 of 4 floats; vec: one 8-byte store. */
__device__ __forceinline__ void ops_st4_f16(uint16_t *p, int i, int n, bool vec, float4 v)
{
    if (vec) {
        uint2 u;
        u.x = ops_f16(v.x) | (ops_f16(v.y) << 16);
        u.y = ops_f16(v.z) | (ops_f16(v.w) << 16);
        *reinterpret_cast<uint2 *>(p + i) = u;
        return;
    }
    p[i] = (uint16_t)ops_f16(v.x);
    if (i + 1 < n)
        p[i + 1] = (uint16_t)ops_f16(v.y);
    if (i + 2 < n)
        p[i + 2] = (uint16_t)ops_f16(v.z);
    if (i + 3 < n)
        p[i + 3] = (uint16_t)ops_f16(v.w);
}

__device__ __forceinline__ float4 ops_add4(float4 a, float4 b)
{
    return make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z),
                       __fadd_rn(a.w, b.w));
}

/* silu(g) * u as rt_cpu_silu_mul: g / (1 + exp(-g)) * u. */
__device__ __forceinline__ float ops_silu(float g, float u)
{
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

__device__ __forceinline__ float4 ops_silu4(float4 g, float4 u)
{
    return make_float4(ops_silu(g.x, u.x), ops_silu(g.y, u.y), ops_silu(g.z, u.z),
                       ops_silu(g.w, u.w));
}

/* max(0, |v.x|, .., |v.w|); a NaN never wins (fmaxf returns the other operand), as in fq_act.c. */
__device__ __forceinline__ float ops_amax4(float4 v)
{
    float m = fmaxf(0.0f, fabsf(v.x));
    m = fmaxf(m, fabsf(v.y));
    m = fmaxf(m, fabsf(v.z));
    return fmaxf(m, fabsf(v.w));
}

/* One code as fq_act.c: clamp(rint(x * inv), lo, qmax), a NaN product giving 0; low byte. */
__device__ __forceinline__ unsigned ops_code(float x, float inv, float qmax, float lo)
{
    float v = rintf(__fmul_rn(x, inv));
    if (v != v)
        v = 0.0f;
    v = fminf(fmaxf(v, lo), qmax);
    return (unsigned)(int)v & 0xffu;
}

/* ---- row kernels: add + RMSNorm (+ quantize), SwiGLU (+ quantize), quantize, final norm ---- */

enum { OPS_NORM = 0, OPS_FINAL = 1, OPS_SILU = 2, OPS_QUANT = 3 };

struct ops_row_args {
    const float *x;      /* NORM, FINAL, QUANT: input rows [., n] */
    float *x_out;        /* NORM: x + add written back (== x), or NULL when there is no add */
    const float *add;    /* NORM, FINAL: [., n] or NULL */
    const float *w;      /* NORM, FINAL: norm weight [n] */
    const float *gu;     /* SILU: [T, ld]; gate at column 0, up at column n */
    long ld;             /* SILU: row stride of gu */
    const int32_t *rows; /* FINAL: row of x for output row r */
    float *hf;           /* NORM, SILU: [T, n] or NULL */
    uint16_t *h16;       /* FINAL: [R, n] */
    int8_t *q;           /* NORM, SILU, QUANT: [T, n] or NULL */
    float *s;            /* with q: [T, n / g] */
    int n;               /* row length */
    int g;               /* group size, with q */
    float eps;           /* NORM, FINAL */
    float qmax;          /* 31 or 127, with q */
    int vec;             /* all fp32 rows 16-byte aligned (fp16 rows 8-byte), n % 4 == 0 */
    int qvec;            /* q 4-byte aligned */
};

/* Sum over the block (every thread gets the same value: all sum the warp totals in one order). */
template <int THREADS> __device__ __forceinline__ double ops_block_sum(double v)
{
    __shared__ double s_part[THREADS / 32];
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(OPS_FULL, v, off);
    if ((threadIdx.x & 31) == 0)
        s_part[threadIdx.x >> 5] = v;
    __syncthreads();
    double total = 0.0;
#pragma unroll
    for (int w = 0; w < THREADS / 32; w++)
        total += s_part[w];
    return total;
}

/* h[j] = this thread's 4 values of the row before the norm: x (+ add), or silu(gate) * up. */
template <int MODE, int THREADS, int NV>
__device__ __forceinline__ void ops_row_load(const ops_row_args &a, long t, bool vec,
                                             float4 (&h)[NV])
{
    const int n = a.n;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = 4 * (j * THREADS + (int)threadIdx.x);
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < n) {
            if constexpr (MODE == OPS_SILU) {
                const float *gate = a.gu + t * a.ld;
                v = ops_silu4(ops_ld4(gate, i, n, vec), ops_ld4(gate + n, i, n, vec));
            } else {
                v = ops_ld4(a.x + t * n, i, n, vec);
                if constexpr (MODE != OPS_QUANT) {
                    if (a.add != nullptr) {
                        v = ops_add4(v, ops_ld4(a.add + t * n, i, n, vec));
                        if (MODE == OPS_NORM && a.x_out != nullptr)
                            ops_st4(a.x_out + t * n, i, n, vec, v);
                    }
                }
            }
        }
        h[j] = v;
    }
}

/* h = w * (h * inv), inv = 1 / sqrt(mean(h^2) + eps), as rt_cpu_rmsnorm. */
template <int THREADS, int NV>
__device__ __forceinline__ void ops_row_norm(const ops_row_args &a, bool vec, float4 (&h)[NV])
{
    const int n = a.n;
    float4 w[NV]; /* requested before the reduction, so that its latency overlaps it */
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = 4 * (j * THREADS + (int)threadIdx.x);
        w[j] = i < n ? ops_ld4(a.w, i, n, vec) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    double ss = 0.0;
#pragma unroll
    for (int j = 0; j < NV; j++) { /* padding slots hold zeros */
        ss = fma((double)h[j].x, (double)h[j].x, ss);
        ss = fma((double)h[j].y, (double)h[j].y, ss);
        ss = fma((double)h[j].z, (double)h[j].z, ss);
        ss = fma((double)h[j].w, (double)h[j].w, ss);
    }
    ss = ops_block_sum<THREADS>(ss);
    const float ms = __double2float_rn(__ddiv_rn(ss, (double)n));
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(ms, a.eps)));
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = 4 * (j * THREADS + (int)threadIdx.x);
        if (i < n) {
            h[j].x = __fmul_rn(w[j].x, __fmul_rn(h[j].x, inv));
            h[j].y = __fmul_rn(w[j].y, __fmul_rn(h[j].y, inv));
            h[j].z = __fmul_rn(w[j].z, __fmul_rn(h[j].z, inv));
            h[j].w = __fmul_rn(w[j].w, __fmul_rn(h[j].w, inv));
        }
    }
}

/* The fp32 (or, for FINAL, fp16) output row. */
template <int MODE, int THREADS, int NV>
__device__ __forceinline__ void ops_row_store(const ops_row_args &a, long r, long t, bool vec,
                                              const float4 (&h)[NV])
{
    const int n = a.n;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = 4 * (j * THREADS + (int)threadIdx.x);
        if (i < n) {
            if constexpr (MODE == OPS_FINAL)
                ops_st4_f16(a.h16 + r * n, i, n, vec, h[j]);
            else if (a.hf != nullptr)
                ops_st4(a.hf + t * n, i, n, vec, h[j]);
        }
    }
}

/* Codes and scales of the row from h (n % g == 0, g in 32..512 a power of two). */
template <int THREADS, int NV>
__device__ __forceinline__ void ops_row_quant(const ops_row_args &a, long t, const float4 (&h)[NV])
{
    __shared__ float s_gmax[NV][THREADS / 32];
    const int n = a.n, g = a.g, lanes = g >> 2; /* threads per group within one slot j */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float gm[NV];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        float m = ops_amax4(h[j]);
        /* groups are aligned runs of `lanes` lanes: xor offsets below that stay inside one */
        for (int off = 1; off < lanes && off < 32; off <<= 1)
            m = fmaxf(m, __shfl_xor_sync(OPS_FULL, m, off));
        gm[j] = m;
        if (lanes > 32 && lane == 0)
            s_gmax[j][warp] = m;
    }
    if (lanes > 32) { /* g = 256 or 512: the group spans 2 or 4 consecutive warps */
        __syncthreads();
        const int wpg = lanes >> 5, w0 = warp & ~(wpg - 1);
#pragma unroll
        for (int j = 0; j < NV; j++) {
            float m = s_gmax[j][w0];
            for (int w = 1; w < wpg; w++)
                m = fmaxf(m, s_gmax[j][w0 + w]);
            gm[j] = m;
        }
    }
    const float qmax = a.qmax, lo = -(qmax + 1.0f);
    const int n_groups = n / g;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = 4 * (j * THREADS + (int)threadIdx.x);
        if (i < n) {
            const float amax = gm[j];
            const float inv = amax > 0.0f ? __fdiv_rn(qmax, amax) : 0.0f;
            if (i % g == 0)
                a.s[t * n_groups + i / g] = __fdiv_rn(amax, qmax);
            const unsigned c =
                ops_code(h[j].x, inv, qmax, lo) | (ops_code(h[j].y, inv, qmax, lo) << 8) |
                (ops_code(h[j].z, inv, qmax, lo) << 16) | (ops_code(h[j].w, inv, qmax, lo) << 24);
            int8_t *qr = a.q + t * n + i; /* n % 4 == 0: the 4 codes are in the row */
            if (a.qvec) {
                *reinterpret_cast<unsigned *>(qr) = c;
            } else {
                qr[0] = (int8_t)(c & 0xffu);
                qr[1] = (int8_t)((c >> 8) & 0xffu);
                qr[2] = (int8_t)((c >> 16) & 0xffu);
                qr[3] = (int8_t)(c >> 24);
            }
        }
    }
}

template <int MODE, int THREADS, int NV>
__global__ void __launch_bounds__(THREADS) k_ops_row_kernel(const ops_row_args a)
{
    const long r = blockIdx.x;
    const long t = MODE == OPS_FINAL ? (long)a.rows[r] : r;
    const bool vec = a.vec != 0;
    float4 h[NV];
    ops_row_load<MODE, THREADS, NV>(a, t, vec, h);
    if constexpr (MODE == OPS_NORM || MODE == OPS_FINAL)
        ops_row_norm<THREADS, NV>(a, vec, h);
    if constexpr (MODE != OPS_QUANT)
        ops_row_store<MODE, THREADS, NV>(a, r, t, vec, h);
    if constexpr (MODE != OPS_FINAL) {
        if (a.q != nullptr) /* uniform over the block */
            ops_row_quant<THREADS, NV>(a, t, h);
    }
}

/* One CTA per row; THREADS * NV * 4 >= n, THREADS * 4 a multiple of every g (<= 512). */
template <int MODE> static int ops_row_launch(const ops_row_args &a, int rows, cudaStream_t st)
{
    if (rows == 0)
        return 0;
    const int n4 = (a.n + 3) / 4;
    const dim3 grid((unsigned)rows);
    if (n4 <= 128)
        k_ops_row_kernel<MODE, 128, 1><<<grid, 128, 0, st>>>(a);
    else if (n4 <= 256)
        k_ops_row_kernel<MODE, 256, 1><<<grid, 256, 0, st>>>(a);
    else if (n4 <= 512)
        k_ops_row_kernel<MODE, 256, 2><<<grid, 256, 0, st>>>(a);
    else if (n4 <= 1024)
        k_ops_row_kernel<MODE, 256, 4><<<grid, 256, 0, st>>>(a);
    else if (n4 <= 2048)
        k_ops_row_kernel<MODE, 256, 8><<<grid, 256, 0, st>>>(a);
    else if (n4 <= 4096)
        k_ops_row_kernel<MODE, 512, 8><<<grid, 512, 0, st>>>(a);
    else if (n4 <= 8192)
        k_ops_row_kernel<MODE, 512, 16><<<grid, 512, 0, st>>>(a);
    else if (n4 <= OPS_MAX_ROW / 4)
        k_ops_row_kernel<MODE, 1024, 16><<<grid, 1024, 0, st>>>(a);
    else
        return -1;
    return ops_launched();
}

/* Quantizer arguments: both q and s or neither; with them bits 6 / 8 and a group dividing n. */
static bool ops_quant_args_ok(const int8_t *q, const float *s, int bits, int g, int n)
{
    if ((q == nullptr) != (s == nullptr))
        return false;
    return q == nullptr || ((bits == 6 || bits == 8) && ops_group_ok(g, n));
}

static float ops_qmax(int bits)
{
    return bits == 6 ? 31.0f : 127.0f;
}

extern "C" int k_add_rmsnorm_quant(float *x, const float *add, const float *w, int T, int e,
                                   float eps, float *hf, int8_t *q, float *s, int bits, int g,
                                   cudaStream_t stream)
{
    if (!x || !w || T < 0 || e < 1 || e > OPS_MAX_ROW || !ops_quant_args_ok(q, s, bits, g, e))
        return -1; /* FQ_EINVAL */
    ops_row_args a = {};
    a.x = x;
    a.x_out = add ? x : nullptr;
    a.add = add;
    a.w = w;
    a.hf = hf;
    a.q = q;
    a.s = s;
    a.n = e;
    a.g = g;
    a.eps = eps;
    a.qmax = ops_qmax(bits);
    a.vec = e % 4 == 0 && ops_aligned(x, 16) && ops_aligned(add, 16) && ops_aligned(w, 16) &&
            ops_aligned(hf, 16);
    a.qvec = ops_aligned(q, 4);
    return ops_row_launch<OPS_NORM>(a, T, stream);
}

extern "C" int k_silu_mul_quant(const float *gu, long ld, int T, int f, float *hf, int8_t *q,
                                float *s, int bits, int g, cudaStream_t stream)
{
    if (!gu || T < 0 || f < 1 || f > OPS_MAX_ROW || ld < 2L * f ||
        !ops_quant_args_ok(q, s, bits, g, f))
        return -1; /* FQ_EINVAL */
    ops_row_args a = {};
    a.gu = gu;
    a.ld = ld;
    a.hf = hf;
    a.q = q;
    a.s = s;
    a.n = f;
    a.g = g;
    a.qmax = ops_qmax(bits);
    a.vec = f % 4 == 0 && ld % 4 == 0 && ops_aligned(gu, 16) && ops_aligned(hf, 16);
    a.qvec = ops_aligned(q, 4);
    return ops_row_launch<OPS_SILU>(a, T, stream);
}

extern "C" int k_quant(const float *x, int T, int k, int bits, int g, int8_t *q, float *s,
                       cudaStream_t stream)
{
    if (!x || !q || !s || T < 0 || k < 1 || k > OPS_MAX_ROW || !ops_quant_args_ok(q, s, bits, g, k))
        return -1; /* FQ_EINVAL */
    ops_row_args a = {};
    a.x = x;
    a.q = q;
    a.s = s;
    a.n = k;
    a.g = g;
    a.qmax = ops_qmax(bits);
    a.vec = k % 4 == 0 && ops_aligned(x, 16);
    a.qvec = ops_aligned(q, 4);
    return ops_row_launch<OPS_QUANT>(a, T, stream);
}

extern "C" int k_final_norm_f16(const float *x, const float *add, const int32_t *rows, int R, int e,
                                const float *w, float eps, uint16_t *out, cudaStream_t stream)
{
    if (!x || !rows || !w || !out || R < 0 || e < 1 || e > OPS_MAX_ROW)
        return -1; /* FQ_EINVAL */
    ops_row_args a = {};
    a.x = x;
    a.add = add;
    a.w = w;
    a.rows = rows;
    a.h16 = out;
    a.n = e;
    a.eps = eps;
    a.vec = e % 4 == 0 && ops_aligned(x, 16) && ops_aligned(add, 16) && ops_aligned(w, 16) &&
            ops_aligned(out, 8);
    return ops_row_launch<OPS_FINAL>(a, R, stream);
}

/* ---- embedding gather ---- */

__global__ void __launch_bounds__(256)
    k_ops_embed_kernel(const float *__restrict__ table, const int32_t *__restrict__ ids, int e,
                       int vec, float *__restrict__ x)
{
    const long t = blockIdx.x;
    const float *src = table + (long)ids[t] * e;
    float *dst = x + t * e;
    if (vec) {
        const float4 *s4 = reinterpret_cast<const float4 *>(src);
        float4 *d4 = reinterpret_cast<float4 *>(dst);
        for (int c = threadIdx.x; c < e / 4; c += blockDim.x)
            d4[c] = __ldg(s4 + c);
    } else {
        for (int i = threadIdx.x; i < e; i += blockDim.x)
            dst[i] = __ldg(src + i);
    }
}

extern "C" int k_embed(const float *table, const int32_t *ids, int T, int e, float *x,
                       cudaStream_t stream)
{
    if (!table || !ids || !x || T < 0 || e < 1)
        return -1; /* FQ_EINVAL */
    if (T == 0)
        return 0;
    const int vec = e % 4 == 0 && ops_aligned(table, 16) && ops_aligned(x, 16);
    k_ops_embed_kernel<<<(unsigned)T, 256, 0, stream>>>(table, ids, e, vec, x);
    return ops_launched();
}

/* ---- RoPE + KV-cache store ---- */

struct ops_rope_freq {
    float inv[OPS_MAX_HD / 2]; /* theta^(-2i/hd) for i < hd / 2, as rt_cpu_rope computes it */
};

__global__ void __launch_bounds__(256)
    k_ops_rope_kernel(float *__restrict__ qkv, long ld, const int32_t *__restrict__ pos,
                      const int32_t *__restrict__ slot, int n_head, int n_kv, int hd, int style,
                      uint16_t *__restrict__ k_cache, uint16_t *__restrict__ v_cache,
                      const __grid_constant__ ops_rope_freq fr)
{
    __shared__ float s_cos[OPS_MAX_HD / 2], s_sin[OPS_MAX_HD / 2];
    const long t = blockIdx.x;
    const int half = hd / 2;
    const float p = __int2float_rn(pos[t]);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float angle = __fmul_rn(p, fr.inv[i]);
        float sn, cs;
        sincosf(angle, &sn, &cs);
        s_cos[i] = cs;
        s_sin[i] = sn;
    }
    __syncthreads();

    float *row = qkv + t * ld;
    const long kv_width = (long)n_kv * hd;
    uint16_t *krow = k_cache + (long)slot[t] * kv_width;
    uint16_t *vrow = v_cache + (long)slot[t] * kv_width;
    const int n_pairs = (n_head + n_kv) * half; /* q heads then k heads: contiguous in the row */
    /* the gridDim.y blocks of a token share its pairs and its v copy (more blocks in flight when
     * few tokens: each thread's load-rotate-store chain is short) */
    const int first = (int)(blockIdx.y * blockDim.x + threadIdx.x),
              stride = (int)(gridDim.y * blockDim.x);
    for (int pi = first; pi < n_pairs; pi += stride) {
        const int head = pi / half, i = pi - head * half;
        const int ia = style == 0 ? i : 2 * i, ib = style == 0 ? i + half : 2 * i + 1;
        float *v = row + (long)head * hd;
        const float x0 = v[ia], x1 = v[ib], c = s_cos[i], s = s_sin[i];
        const float y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        const float y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
        v[ia] = y0;
        v[ib] = y1;
        if (head >= n_head) {
            uint16_t *kr = krow + (long)(head - n_head) * hd;
            kr[ia] = (uint16_t)ops_f16(y0);
            kr[ib] = (uint16_t)ops_f16(y1);
        }
    }
    const float *vsrc = row + (long)(n_head + n_kv) * hd;
    for (long j = first; j < kv_width; j += stride)
        vrow[j] = (uint16_t)ops_f16(vsrc[j]);
}

extern "C" int k_rope_kv_store(float *qkv, long ld, int T, const int32_t *pos, const int32_t *slot,
                               int n_head, int n_kv, int hd, float theta, int style,
                               uint16_t *k_cache, uint16_t *v_cache, cudaStream_t stream)
{
    if (!qkv || !pos || !slot || !k_cache || !v_cache || T < 0 || n_head < 1 || n_kv < 1 ||
        hd < 2 || hd > OPS_MAX_HD || hd % 2 != 0 || !(theta > 0.0f) || (style != 0 && style != 1) ||
        ld < (long)(n_head + 2L * n_kv) * hd)
        return -1; /* FQ_EINVAL */
    if (T == 0)
        return 0;
    ops_rope_freq fr = {};
    for (int i = 0; i < hd / 2; i++) /* the expression of rt_cpu_rope, on the host's libm */
        fr.inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
    const int n_pairs = (n_head + n_kv) * (hd / 2);
    const unsigned split = (unsigned)(n_pairs + 1023) / 1024; /* about 4 pairs per thread */
    const dim3 grid((unsigned)T, split < 8 ? split : 8);
    k_ops_rope_kernel<<<grid, 256, 0, stream>>>(qkv, ld, pos, slot, n_head, n_kv, hd, style,
                                                k_cache, v_cache, fr);
    return ops_launched();
}

/* ---- argmax ---- */

#define OPS_ARGMAX_THREADS 512

/* (bv, bi) := the better of itself and (ov, oi): larger value, then smaller index; index -1 is
 * "none yet" and loses to anything. Values of a real candidate are never NaN. */
__device__ __forceinline__ void ops_argmax_merge(float &bv, int &bi, float ov, int oi)
{
    if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
        bv = ov;
        bi = oi;
    }
}

/* A thread's own scan visits indices in increasing order: strict > keeps the first of a tie. */
__device__ __forceinline__ void ops_argmax_take(float &bv, int &bi, float v, int i)
{
    if (v == v && (bi < 0 || v > bv)) {
        bv = v;
        bi = i;
    }
}

__global__ void __launch_bounds__(OPS_ARGMAX_THREADS)
    k_ops_argmax_kernel(const float *__restrict__ logits, int V, int vec, int32_t *__restrict__ out)
{
    __shared__ float s_v[OPS_ARGMAX_THREADS / 32];
    __shared__ int s_i[OPS_ARGMAX_THREADS / 32];
    const float *row = logits + (long)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = -1;
    if (vec) {
        const float4 *r4 = reinterpret_cast<const float4 *>(row);
        for (int c = threadIdx.x; c < V / 4; c += OPS_ARGMAX_THREADS) {
            const float4 v = __ldg(r4 + c);
            ops_argmax_take(bv, bi, v.x, 4 * c);
            ops_argmax_take(bv, bi, v.y, 4 * c + 1);
            ops_argmax_take(bv, bi, v.z, 4 * c + 2);
            ops_argmax_take(bv, bi, v.w, 4 * c + 3);
        }
    } else {
        for (int i = threadIdx.x; i < V; i += OPS_ARGMAX_THREADS)
            ops_argmax_take(bv, bi, __ldg(row + i), i);
    }
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(OPS_FULL, bv, off);
        const int oi = __shfl_xor_sync(OPS_FULL, bi, off);
        ops_argmax_merge(bv, bi, ov, oi);
    }
    if ((threadIdx.x & 31) == 0) {
        s_v[threadIdx.x >> 5] = bv;
        s_i[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < OPS_ARGMAX_THREADS / 32; w++)
            ops_argmax_merge(bv, bi, s_v[w], s_i[w]);
        out[blockIdx.x] = bi < 0 ? 0 : bi; /* a row of NaNs only: 0 */
    }
}

extern "C" int k_argmax(const float *logits, int R, int V, int32_t *out, cudaStream_t stream)
{
    if (!logits || !out || R < 0 || V < 1)
        return -1; /* FQ_EINVAL */
    if (R == 0)
        return 0;
    const int vec = V % 4 == 0 && ops_aligned(logits, 16);
    k_ops_argmax_kernel<<<(unsigned)R, OPS_ARGMAX_THREADS, 0, stream>>>(logits, V, vec, out);
    return ops_launched();
}

/* ---- fp16 conversions ---- */

__global__ void __launch_bounds__(256)
    k_ops_f32_to_f16_kernel(const float *__restrict__ x, long n, uint16_t *__restrict__ y)
{
    const long stride = (long)gridDim.x * blockDim.x;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = (uint16_t)ops_f16(x[i]);
}

__global__ void __launch_bounds__(256)
    k_ops_f16_to_f32_kernel(const uint16_t *__restrict__ x, long n, float *__restrict__ y)
{
    const long stride = (long)gridDim.x * blockDim.x;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = __half2float(__ushort_as_half(x[i]));
}

extern "C" int k_f32_to_f16(const float *x, long n, uint16_t *y, cudaStream_t stream)
{
    if (!x || !y || n < 0)
        return -1; /* FQ_EINVAL */
    if (n == 0)
        return 0;
    k_ops_f32_to_f16_kernel<<<ops_grid_stride_blocks(n, 256), 256, 0, stream>>>(x, n, y);
    return ops_launched();
}

extern "C" int k_f16_to_f32(const uint16_t *x, long n, float *y, cudaStream_t stream)
{
    if (!x || !y || n < 0)
        return -1; /* FQ_EINVAL */
    if (n == 0)
        return 0;
    k_ops_f16_to_f32_kernel<<<ops_grid_stride_blocks(n, 256), 256, 0, stream>>>(x, n, y);
    return ops_launched();
}

/* ---- INT6 weight dequantization ---- */

/* One thread per 4 consecutive codes 64c + 4m .. + 3 (m < 16) of chunk c (fq_pack.h): their low
 * nibbles are low-plane word m & 7 shifted by 4 * (m >> 3), their top bits high-plane word m & 3
 * shifted by 2 * (m >> 2). */
__global__ void __launch_bounds__(256)
    k_ops_w6_dequant_kernel(const uint8_t *__restrict__ packed, const uint16_t *__restrict__ sw,
                            long row_bytes, int k, int g, long per_row, long total, int vec,
                            float *__restrict__ w)
{
    const long stride = (long)gridDim.x * blockDim.x;
    const int n_groups = k / g;
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const long r = idx / per_row;
        const long rem = idx - r * per_row;
        const long c = rem >> 4;
        const int m = (int)(rem & 15);
        const long j0 = 64 * c + 4 * m;
        if (j0 >= k)
            continue; /* padding codes of the last chunk */
        const uint8_t *chunk = packed + r * row_bytes + 48 * c;
        const unsigned lw = __ldg(reinterpret_cast<const unsigned *>(chunk) + (m & 7));
        const unsigned hw = __ldg(reinterpret_cast<const unsigned *>(chunk + 32) + (m & 3));
        const unsigned u =
            ((lw >> (4 * (m >> 3))) & 0x0F0F0F0Fu) | (((hw >> (2 * (m >> 2))) & 0x03030303u) << 4);
        const uint16_t *srow = sw + r * n_groups;
        float v[4];
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const long j = j0 + b < k ? j0 + b : j0; /* clamp the index; the store skips it */
            const float sc = __half2float(__ushort_as_half(__ldg(srow + j / g)));
            v[b] = __fmul_rn(sc, __int2float_rn((int)((u >> (8 * b)) & 0xffu) - 32));
        }
        float *wr = w + r * k + j0;
        if (vec) {
            *reinterpret_cast<float4 *>(wr) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
#pragma unroll
            for (int b = 0; b < 4; b++)
                if (j0 + b < k)
                    wr[b] = v[b];
        }
    }
}

extern "C" int k_w6_dequantize(const uint8_t *packed, const uint16_t *sw, long row_bytes, int n,
                               int k, int g, float *w, cudaStream_t stream)
{
    if (!packed || !sw || !w || n < 0 || k < 1 || g < 1 || k % g != 0)
        return -1; /* FQ_EINVAL */
    const long n_chunks = (k + 63) / 64;
    if (row_bytes < 48 * n_chunks || row_bytes % 4 != 0 || !ops_aligned(packed, 4))
        return -1;
    if (n == 0)
        return 0;
    const long per_row = 16 * n_chunks, total = per_row * n;
    const int vec = k % 4 == 0 && ops_aligned(w, 16);
    k_ops_w6_dequant_kernel<<<ops_grid_stride_blocks(total, 256), 256, 0, stream>>>(
        packed, sw, row_bytes, k, g, per_row, total, vec, w);
    return ops_launched();
}

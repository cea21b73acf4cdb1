/* k_ptx.cuh — the inline-PTX wrappers several kernels share (device code only; included by the
 * kernels' .cu files and by the benchmarks that mimic them). Each is the one instruction named,
 * with the qualifiers the kernels were tuned with.
 */
#ifndef K_PTX_CUH
#define K_PTX_CUH

#include <stdint.h>

/* The shared-memory address of a generic pointer into shared memory. */
__device__ __forceinline__ uint32_t k_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared address dst, asynchronously, bypassing L1 (cp.async.cg); only
 * src_bytes (0..16) are read and the rest zero-filled, so 0 reads nothing. */
__device__ __forceinline__ void k_cp_async16(uint32_t dst, const void *src, unsigned src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

/* Closes this thread's group of cp.async copies (cp.async.wait_group counts groups). */
__device__ __forceinline__ void k_cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* Waits until at most N of this thread's cp.async groups are still pending. */
template <int N> __device__ __forceinline__ void k_cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* 16 bytes from global memory that no kernel writes meanwhile, not kept in L1 (streamed weights).
 */
__device__ __forceinline__ void k_ld_stream16(unsigned (&v)[4], const void *p)
{
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
                 : "l"(p));
}

/* The same for 8 bytes. */
__device__ __forceinline__ void k_ld_stream8(unsigned (&v)[2], const void *p)
{
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];\n"
                 : "=r"(v[0]), "=r"(v[1])
                 : "l"(p));
}

/* c += A (16 x 32, rows) * B (32 x 8, columns), int8 in, int32 accumulate: mma.sync m16n8k32 with
 * A in a0..a3 and B in b0, b1 as the PTX fragment layout places them. */
__device__ __forceinline__ void k_mma_s8(int (&c)[4], unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned b0, unsigned b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#endif /* K_PTX_CUH */

/* test_gemm_w6_decode.c — the CUDA decode GEMM (k_gemm_w6_decode) equals the CPU reference
 * rt_cpu_matmul_q6 bit for bit over model-like shapes, m in {1, 4, 16}, 8- and 6-bit activations;
 * prints per-shape timings (informational). Skips (77) without a GPU. */
#include "fq_act.h"
#include "fq_pack.h"
#include "fq_weight.h"
#include "k.h"
#include "rt_cpu_int6.h"
#include "rt_pool.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float rnd(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

typedef struct {
    int n, k, g;
} shape;

int main(void)
{
    if (k_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    char desc[256] = "";
    if (k_device_describe(0, desc, sizeof desc) == 0)
        printf("device 0: %s\n", desc);
    rt_pool *pool = NULL;
    if (rt_pool_create(0, &pool) != 0) {
        fprintf(stderr, "rt_pool_create failed\n");
        return 1;
    }
    static const shape shapes[] = {
        {576, 576, 64}, {1536, 576, 64}, {576, 1536, 128}, {4096, 4096, 128}, {11008, 4096, 128},
    };
    static const int ms[] = {1, 4, 16};
    static const int abits[] = {8, 6};
    int failures = 0;
    cudaEvent_t ev0, ev1;
    CK(cudaEventCreate(&ev0));
    CK(cudaEventCreate(&ev1));

    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int n = shapes[si].n, k = shapes[si].k, g = shapes[si].g, ng = k / g;
        const int64_t rb = fq_pack_row_bytes(k);
        float *w = xmalloc((size_t)n * k * sizeof *w);
        for (size_t i = 0; i < (size_t)n * k; i++)
            w[i] = rnd() * (1.0f + (float)(i % 7)); /* varied group maxima */
        uint8_t *packed = xmalloc((size_t)n * rb);
        uint16_t *sw = xmalloc((size_t)n * ng * sizeof *sw);
        fq_weight_quantize(w, n, k, g, packed, sw);
        free(w);
        uint8_t *d_packed;
        uint16_t *d_sw;
        CK(cudaMalloc((void **)&d_packed, (size_t)n * rb));
        CK(cudaMalloc((void **)&d_sw, (size_t)n * ng * sizeof *sw));
        CK(cudaMemcpy(d_packed, packed, (size_t)n * rb, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_sw, sw, (size_t)n * ng * sizeof *sw, cudaMemcpyHostToDevice));

        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            for (size_t bi = 0; bi < sizeof abits / sizeof abits[0]; bi++) {
                const int m = ms[mi], bits = abits[bi];
                float *x = xmalloc((size_t)m * k * sizeof *x);
                for (size_t i = 0; i < (size_t)m * k; i++)
                    x[i] = rnd() * (i % 13 == 0 ? 8.0f : 1.0f);
                int8_t *qx = xmalloc((size_t)m * k);
                float *sx = xmalloc((size_t)m * ng * sizeof *sx);
                fq_act_quantize(x, m, k, g, bits, qx, sx);
                free(x);
                float *y_ref = xmalloc((size_t)m * n * sizeof *y_ref);
                float *y_gpu = xmalloc((size_t)m * n * sizeof *y_gpu);
                rt_cpu_matmul_q6(pool, qx, sx, m, k, g, packed, sw, rb, n, y_ref);

                int8_t *d_qx;
                float *d_sx, *d_y;
                CK(cudaMalloc((void **)&d_qx, (size_t)m * k));
                CK(cudaMalloc((void **)&d_sx, (size_t)m * ng * sizeof *sx));
                CK(cudaMalloc((void **)&d_y, (size_t)m * n * sizeof *y_gpu));
                CK(cudaMemcpy(d_qx, qx, (size_t)m * k, cudaMemcpyHostToDevice));
                CK(cudaMemcpy(d_sx, sx, (size_t)m * ng * sizeof *sx, cudaMemcpyHostToDevice));
                CK(cudaMemset(d_y, 0xFF, (size_t)m * n * sizeof *y_gpu)); /* NaN poison */

                if (k_gemm_w6_decode(d_qx, d_sx, m, k, g, d_packed, d_sw, (long)rb, n, d_y, 0) !=
                    0) {
                    fprintf(stderr, "k_gemm_w6_decode failed (n=%d k=%d m=%d)\n", n, k, m);
                    return 1;
                }
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(y_gpu, d_y, (size_t)m * n * sizeof *y_gpu, cudaMemcpyDeviceToHost));
                const int same = memcmp(y_ref, y_gpu, (size_t)m * n * sizeof *y_gpu) == 0;
                if (!same) {
                    double md = 0.0;
                    size_t bad = 0;
                    for (size_t i = 0; i < (size_t)m * n; i++) {
                        if (memcmp(&y_ref[i], &y_gpu[i], sizeof(float)) != 0)
                            bad++;
                        double d = fabs((double)y_ref[i] - (double)y_gpu[i]);
                        if (!(d <= md))
                            md = d;
                    }
                    fprintf(stderr,
                            "MISMATCH n=%d k=%d g=%d m=%d a%d: %zu of %zu differ, max|diff| %g\n",
                            n, k, g, m, bits, bad, (size_t)m * n, md);
                    failures++;
                }

                for (int r = 0; r < 3; r++)
                    k_gemm_w6_decode(d_qx, d_sx, m, k, g, d_packed, d_sw, (long)rb, n, d_y, 0);
                const int reps = 20;
                CK(cudaEventRecord(ev0, 0));
                for (int r = 0; r < reps; r++)
                    k_gemm_w6_decode(d_qx, d_sx, m, k, g, d_packed, d_sw, (long)rb, n, d_y, 0);
                CK(cudaEventRecord(ev1, 0));
                CK(cudaEventSynchronize(ev1));
                float ms_tot = 0.0f;
                CK(cudaEventElapsedTime(&ms_tot, ev0, ev1));
                const double us = 1000.0 * ms_tot / reps;
                const double gbs = ((double)n * rb + (double)n * ng * 2) / (us * 1e-6) / 1e9;
                printf("%-8s n=%5d k=%5d g=%3d m=%2d a%d: %8.2f us  %7.1f GB/s (weights)\n",
                       same ? "ok" : "FAIL", n, k, g, m, bits, us, gbs);

                CK(cudaFree(d_qx));
                CK(cudaFree(d_sx));
                CK(cudaFree(d_y));
                free(qx);
                free(sx);
                free(y_ref);
                free(y_gpu);
            }
        }
        CK(cudaFree(d_packed));
        CK(cudaFree(d_sw));
        free(packed);
        free(sw);
    }
    CK(cudaEventDestroy(ev0));
    CK(cudaEventDestroy(ev1));
    rt_pool_destroy(pool);
    if (failures) {
        fprintf(stderr, "%d case(s) failed\n", failures);
        return 1;
    }
    printf("all cases bit-exact\n");
    return 0;
}

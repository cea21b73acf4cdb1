/* test_k_ops.c — the forward pass's small CUDA kernels (k_ops.h) against the CPU reference:
 * k_quant bit-exact with fq_act_quantize (special values too); k_add_rmsnorm_quant and
 * k_silu_mul_quant within 1e-5 relative of rt_cpu_rmsnorm / rt_cpu_silu_mul, their codes and scales
 * bit-exact with fq_act_quantize of their own fp32 output and identical without it, the residual
 * updated; k_rope_kv_store within 1e-5 of rt_cpu_rope (both styles) and the caches equal to fp16 of
 * the rotated k and of v; k_final_norm_f16; k_argmax with ties and NaNs; the fp16 conversions;
 * k_w6_dequantize exact; k_embed; argument checks. One line per case; timings are information
 * only. Skips (77) without a GPU. */
#include "fq_act.h"
#include "fq_base.h"
#include "fq_pack.h"
#include "fq_weight.h"
#include "k.h"
#include "k_ops.h"
#include "rt_cpu_math.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHOWN 5 /* mismatches printed per comparison */

/* A CUDA call that must succeed; on failure the case returns -1 (an error, not a mismatch). */
#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* A kernel launcher that must return 0. */
#define CKL(x)                                                                                     \
    do {                                                                                           \
        if ((x) != 0) {                                                                            \
            fprintf(stderr, "%s:%d: %s returned an error\n", __FILE__, __LINE__, #x);              \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* A host allocation that must succeed. */
#define CKH(p)                                                                                     \
    do {                                                                                           \
        if (!(p)) {                                                                                \
            fprintf(stderr, "%s:%d: out of host memory\n", __FILE__, __LINE__);                    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* ---- random numbers (xorshift64, one state per case) ---- */

typedef struct rng {
    uint64_t s;
} rng;

static rng rng_seed(uint64_t seed)
{
    rng r = {seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull};
    return r;
}

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static float rng_unit(rng *r) /* uniform in [-1, 1) */
{
    return (float)((rng_next(r) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static int rng_int(rng *r, int n) /* uniform in [0, n) */
{
    return (int)(rng_next(r) % (uint64_t)n);
}

/* Activations with group-wise varied magnitudes and a few outliers. */
static void fill_act(rng *r, float *x, long n, int g)
{
    static const float mags[5] = {1.0f, 0.01f, 10.0f, 0.5f, 100.0f};
    for (long i = 0; i < n; i++)
        x[i] = rng_unit(r) * mags[(i / g) % 5] * (i % 97 == 0 ? 20.0f : 1.0f);
}

/* ---- comparisons: each prints its first MAX_SHOWN mismatches as what[row, col] ---- */

/* |got - want| <= rel * |want| (equal values, infinities and two NaNs included). */
static long cmp_rel(const char *what, const float *got, const float *want, long n, long width,
                    double rel)
{
    long bad = 0;
    for (long i = 0; i < n; i++) {
        const double gv = got[i], wv = want[i];
        const int ok = gv == wv || (isnan(gv) && isnan(wv)) || fabs(gv - wv) <= rel * fabs(wv);
        if (!ok && bad++ < MAX_SHOWN)
            fprintf(stderr, "  %s[%ld, %ld]: got %.9g want %.9g (rel %.3g)\n", what, i / width,
                    i % width, gv, wv, fabs(gv - wv) / fabs(wv));
    }
    return bad;
}

/* Bit-identical 32-bit words (fp32 values shown). */
static long cmp_bits32(const char *what, const float *got, const float *want, long n, long width)
{
    long bad = 0;
    for (long i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ < MAX_SHOWN)
            fprintf(stderr, "  %s[%ld, %ld]: got %.9g want %.9g\n", what, i / width, i % width,
                    (double)got[i], (double)want[i]);
    }
    return bad;
}

static long cmp_i8(const char *what, const int8_t *got, const int8_t *want, long n, long width)
{
    long bad = 0;
    for (long i = 0; i < n; i++) {
        if (got[i] != want[i] && bad++ < MAX_SHOWN)
            fprintf(stderr, "  %s[%ld, %ld]: got %d want %d\n", what, i / width, i % width, got[i],
                    want[i]);
    }
    return bad;
}

/* fp16 bits as a signed integer that steps by 1 from each value to the next (-0 == +0). */
static int f16_ord(uint16_t h)
{
    return (h & 0x8000u) ? -(int)(h & 0x7fffu) : (int)(h & 0x7fffu);
}

/* fp16 at most 1 ulp apart, or (abs_tol > 0) within abs_tol of each other. */
static int f16_close(uint16_t a, uint16_t b, double abs_tol)
{
    if (abs(f16_ord(a) - f16_ord(b)) <= 1)
        return 1;
    return fabs((double)fq_f16_to_f32(a) - (double)fq_f16_to_f32(b)) <= abs_tol;
}

static const char *verdict(long bad)
{
    return bad ? "FAIL" : "ok";
}

/* ---- timing (information only) ---- */

typedef struct timer {
    cudaEvent_t a, b;
} timer;

/* ---- k_quant ---- */

/* Special values in row 0: a zero group (one -0), a NaN, an inf, a group of subnormals (inv
 * overflows to inf), and round-half-even ties. Needs k / g >= 5. */
static void put_specials(float *x, int k, int g)
{
    if (k / g < 5)
        return;
    for (int j = 0; j < g; j++)
        x[j] = 0.0f;
    x[1] = -0.0f;
    x[g + 3] = NAN;
    x[2 * g + 5] = INFINITY;
    for (int j = 0; j < g; j++)
        x[3 * g + j] = (float)(j - g / 2) * 1e-40f;
    /* group 4: halves in [-15, 15] and one 31, so amax = 31 and, at 6 bits, inv = 1: x * inv is
     * a tie for every odd multiple of 0.5 */
    for (int j = 0; j < g; j++)
        x[4 * g + j] = (float)((j % 61) - 30) * 0.5f;
    x[4 * g] = 31.0f;
}

/* off: element offset of x and q in their buffers (1 = the unaligned, scalar path). */
static int case_quant(int k, int T, int g, int bits, int off)
{
    rng r = rng_seed((uint64_t)k * 131 + (uint64_t)T * 7 + (uint64_t)g + (uint64_t)bits);
    const long n = (long)T * k, ns = n / g;
    float *x = malloc((size_t)n * sizeof *x), *s_ref = malloc((size_t)ns * sizeof(float));
    float *s_got = malloc((size_t)ns * sizeof(float));
    int8_t *q_ref = malloc((size_t)n), *q_got = malloc((size_t)n);
    CKH(x && s_ref && s_got && q_ref && q_got);
    fill_act(&r, x, n, g);
    put_specials(x, k, g);
    fq_act_quantize(x, T, k, g, bits, q_ref, s_ref);

    float *d_x, *d_s;
    int8_t *d_q;
    CK(cudaMalloc((void **)&d_x, (size_t)(n + off) * sizeof(float)));
    CK(cudaMalloc((void **)&d_q, (size_t)(n + off)));
    CK(cudaMalloc((void **)&d_s, (size_t)ns * sizeof(float)));
    CK(cudaMemcpy(d_x + off, x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_q, 0x7f, (size_t)(n + off)));
    CK(cudaMemset(d_s, 0xff, (size_t)ns * sizeof(float)));
    CKL(k_quant(d_x + off, T, k, bits, g, d_q + off, d_s, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(q_got, d_q + off, (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(s_got, d_s, (size_t)ns * sizeof(float), cudaMemcpyDeviceToHost));
    long bad = cmp_i8("q", q_got, q_ref, n, k) + cmp_bits32("s", s_got, s_ref, ns, k / g);
    printf("%-4s k_quant            k=%5d T=%2d g=%3d a%d%s\n", verdict(bad), k, T, g, bits,
           off ? " unaligned" : "");
    CK(cudaFree(d_x));
    CK(cudaFree(d_q));
    CK(cudaFree(d_s));
    free(x);
    free(s_ref);
    free(s_got);
    free(q_ref);
    free(q_got);
    return bad != 0;
}

/* ---- k_add_rmsnorm_quant ---- */

/* Checks q / s (from a run that also wrote hf) against fq_act_quantize(hf). */
static long check_own_codes(const float *hf, int T, int n, int g, int bits, const int8_t *q,
                            const float *s)
{
    const long nn = (long)T * n, ns = nn / g;
    int8_t *q_ref = malloc((size_t)nn);
    float *s_ref = malloc((size_t)ns * sizeof(float));
    if (!q_ref || !s_ref) {
        free(q_ref);
        free(s_ref);
        fprintf(stderr, "out of host memory\n");
        return 1;
    }
    fq_act_quantize(hf, T, n, g, bits, q_ref, s_ref);
    const long bad = cmp_i8("q", q, q_ref, nn, n) + cmp_bits32("s", s, s_ref, ns, n / g);
    free(q_ref);
    free(s_ref);
    return bad;
}

/* with_q: quantize too (and rerun with hf NULL: the same codes). */
static int case_norm(int e, int T, int g, int bits, int use_add, int with_q)
{
    rng r = rng_seed((uint64_t)e * 17 + (uint64_t)T * 3 + (uint64_t)g * 5 + (uint64_t)bits +
                     (uint64_t)use_add * 1000);
    const long n = (long)T * e, ns = with_q ? n / g : 1;
    const float eps = use_add ? 1e-5f : 1e-6f;
    float *x0 = malloc((size_t)n * sizeof(float)), *add = malloc((size_t)n * sizeof(float));
    float *w = malloc((size_t)e * sizeof(float)), *x_ref = malloc((size_t)n * sizeof(float));
    float *h_ref = malloc((size_t)n * sizeof(float)), *x_got = malloc((size_t)n * sizeof(float));
    float *h_got = malloc((size_t)n * sizeof(float)), *s_got = malloc((size_t)ns * sizeof(float));
    float *s_got2 = malloc((size_t)ns * sizeof(float));
    int8_t *q_got = malloc((size_t)n), *q_got2 = malloc((size_t)n);
    CKH(x0 && add && w && x_ref && h_ref && x_got && h_got && s_got && s_got2 && q_got && q_got2);
    fill_act(&r, x0, n, 64);
    for (long i = 0; i < n; i++)
        add[i] = rng_unit(&r) * 2.0f;
    for (int i = 0; i < e; i++)
        w[i] = 0.1f + 2.0f * fabsf(rng_unit(&r));
    for (long i = 0; i < n; i++)
        x_ref[i] = use_add ? x0[i] + add[i] : x0[i];
    rt_cpu_rmsnorm(x_ref, w, T, e, eps, h_ref);

    float *d_x, *d_add, *d_w, *d_hf, *d_s;
    int8_t *d_q;
    CK(cudaMalloc((void **)&d_x, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_add, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_w, (size_t)e * sizeof(float)));
    CK(cudaMalloc((void **)&d_hf, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_q, (size_t)n));
    CK(cudaMalloc((void **)&d_s, (size_t)ns * sizeof(float)));
    CK(cudaMemcpy(d_x, x0, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_add, add, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_w, w, (size_t)e * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_hf, 0xff, (size_t)n * sizeof(float)));
    CK(cudaMemset(d_q, 0x7f, (size_t)n));
    CK(cudaMemset(d_s, 0xff, (size_t)ns * sizeof(float)));
    CKL(k_add_rmsnorm_quant(d_x, use_add ? d_add : NULL, d_w, T, e, eps, d_hf, with_q ? d_q : NULL,
                            with_q ? d_s : NULL, bits, g, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(x_got, d_x, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(h_got, d_hf, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    long bad = cmp_bits32("x", x_got, x_ref, n, e) + cmp_rel("hf", h_got, h_ref, n, e, 1e-5);
    if (with_q) {
        CK(cudaMemcpy(q_got, d_q, (size_t)n, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(s_got, d_s, (size_t)ns * sizeof(float), cudaMemcpyDeviceToHost));
        bad += check_own_codes(h_got, T, e, g, bits, q_got, s_got);
        /* again from x0 without hf: the same x, codes and scales */
        CK(cudaMemcpy(d_x, x0, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
        CK(cudaMemset(d_q, 0x7f, (size_t)n));
        CK(cudaMemset(d_s, 0xff, (size_t)ns * sizeof(float)));
        CKL(k_add_rmsnorm_quant(d_x, use_add ? d_add : NULL, d_w, T, e, eps, NULL, d_q, d_s, bits,
                                g, 0));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(x_got, d_x, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(q_got2, d_q, (size_t)n, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(s_got2, d_s, (size_t)ns * sizeof(float), cudaMemcpyDeviceToHost));
        bad += cmp_bits32("x (no hf)", x_got, x_ref, n, e) +
               cmp_i8("q (no hf)", q_got2, q_got, n, e) +
               cmp_bits32("s (no hf)", s_got2, s_got, ns, e / g);
    }
    if (with_q)
        printf("%-4s k_add_rmsnorm_quant e=%5d T=%2d g=%3d a%d add=%d\n", verdict(bad), e, T, g,
               bits, use_add);
    else
        printf("%-4s k_add_rmsnorm_quant e=%5d T=%2d (hf only) add=%d\n", verdict(bad), e, T,
               use_add);
    CK(cudaFree(d_x));
    CK(cudaFree(d_add));
    CK(cudaFree(d_w));
    CK(cudaFree(d_hf));
    CK(cudaFree(d_q));
    CK(cudaFree(d_s));
    free(x0);
    free(add);
    free(w);
    free(x_ref);
    free(h_ref);
    free(x_got);
    free(h_got);
    free(s_got);
    free(s_got2);
    free(q_got);
    free(q_got2);
    return bad != 0;
}

/* ---- k_silu_mul_quant ---- */

/* gu rows of ld = 2f + pad floats (pad 1: unaligned rows, the scalar path). */
static int case_silu(int f, int T, int g, int bits, long pad)
{
    rng r = rng_seed((uint64_t)f * 29 + (uint64_t)T * 11 + (uint64_t)g * 3 + (uint64_t)bits +
                     (uint64_t)pad);
    const long ld = 2L * f + pad, n = (long)T * f, ns = n / g;
    float *gu = malloc((size_t)(T * ld) * sizeof(float)),
          *h_ref = malloc((size_t)n * sizeof(float));
    float *h_got = malloc((size_t)n * sizeof(float)), *s_got = malloc((size_t)ns * sizeof(float));
    float *s_got2 = malloc((size_t)ns * sizeof(float));
    int8_t *q_got = malloc((size_t)n), *q_got2 = malloc((size_t)n);
    CKH(gu && h_ref && h_got && s_got && s_got2 && q_got && q_got2);
    for (long i = 0; i < T * ld; i++)
        gu[i] = rng_unit(&r) * ((i % ld) < f ? 6.0f : 2.0f);
    for (int t = 0; t < T; t++) {
        memcpy(h_ref + (long)t * f, gu + t * ld, (size_t)f * sizeof(float));
        rt_cpu_silu_mul(h_ref + (long)t * f, gu + t * ld + f, f);
    }

    float *d_gu, *d_hf, *d_s;
    int8_t *d_q;
    CK(cudaMalloc((void **)&d_gu, (size_t)(T * ld) * sizeof(float)));
    CK(cudaMalloc((void **)&d_hf, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_q, (size_t)n));
    CK(cudaMalloc((void **)&d_s, (size_t)ns * sizeof(float)));
    CK(cudaMemcpy(d_gu, gu, (size_t)(T * ld) * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_hf, 0xff, (size_t)n * sizeof(float)));
    CK(cudaMemset(d_q, 0x7f, (size_t)n));
    CK(cudaMemset(d_s, 0xff, (size_t)ns * sizeof(float)));
    CKL(k_silu_mul_quant(d_gu, ld, T, f, d_hf, d_q, d_s, bits, g, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h_got, d_hf, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(q_got, d_q, (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(s_got, d_s, (size_t)ns * sizeof(float), cudaMemcpyDeviceToHost));
    long bad = cmp_rel("hf", h_got, h_ref, n, f, 1e-5);
    bad += check_own_codes(h_got, T, f, g, bits, q_got, s_got);
    CK(cudaMemset(d_q, 0x7f, (size_t)n));
    CK(cudaMemset(d_s, 0xff, (size_t)ns * sizeof(float)));
    CKL(k_silu_mul_quant(d_gu, ld, T, f, NULL, d_q, d_s, bits, g, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(q_got2, d_q, (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(s_got2, d_s, (size_t)ns * sizeof(float), cudaMemcpyDeviceToHost));
    bad += cmp_i8("q (no hf)", q_got2, q_got, n, f) +
           cmp_bits32("s (no hf)", s_got2, s_got, ns, f / g);
    printf("%-4s k_silu_mul_quant   f=%5d T=%2d g=%3d a%d ld=2f+%ld\n", verdict(bad), f, T, g, bits,
           pad);
    CK(cudaFree(d_gu));
    CK(cudaFree(d_hf));
    CK(cudaFree(d_q));
    CK(cudaFree(d_s));
    free(gu);
    free(h_ref);
    free(h_got);
    free(s_got);
    free(s_got2);
    free(q_got);
    free(q_got2);
    return bad != 0;
}

/* ---- k_rope_kv_store ---- */

typedef struct rope_shape {
    int n_head, n_kv, hd;
} rope_shape;

/* Compares one token's rotated q and k heads with the CPU's, each head within 1e-5 of its largest
 * input magnitude (the rotation keeps norms; a relative bound per element would be meaningless
 * near zero). headmax[h] receives that magnitude. */
static long cmp_rope_row(const float *got, const float *want, const float *orig, int t, int n_heads,
                         int hd, float *headmax)
{
    long bad = 0;
    for (int h = 0; h < n_heads; h++) {
        float mx = 0.0f;
        for (int d = 0; d < hd; d++)
            mx = fmaxf(mx, fabsf(orig[h * hd + d]));
        headmax[h] = mx;
        for (int d = 0; d < hd; d++) {
            const long i = (long)h * hd + d;
            const double diff = fabs((double)got[i] - (double)want[i]);
            if (!(diff <= 1e-5 * mx) && bad++ < MAX_SHOWN)
                fprintf(stderr,
                        "  qk[t=%d, head %d, %d]: got %.9g want %.9g (|diff| %.3g, head "
                        "max %.3g)\n",
                        t, h, d, (double)got[i], (double)want[i], diff, (double)mx);
        }
    }
    return bad;
}

static int case_rope(rope_shape sh, float theta, int style, int T)
{
    rng r = rng_seed((uint64_t)sh.n_head * 7 + (uint64_t)sh.hd + (uint64_t)theta +
                     (uint64_t)style * 99 + (uint64_t)T);
    const int n_head = sh.n_head, n_kv = sh.n_kv, hd = sh.hd, kvw = n_kv * hd;
    const int qk = (n_head + n_kv) * hd;
    const long ld =
        (long)(n_head + 2 * n_kv) * hd + 8; /* 8 pad columns that must stay as they are */
    const int n_slots = T + 5;              /* slots 0..4 are never written */
    const long n = T * ld;
    float *qkv = malloc((size_t)n * sizeof(float)), *ref = malloc((size_t)n * sizeof(float));
    float *got = malloc((size_t)n * sizeof(float)), *headmax = malloc((size_t)qk * sizeof(float));
    int32_t *pos = malloc((size_t)T * sizeof(int32_t)), *slot = malloc((size_t)T * sizeof(int32_t));
    uint16_t *kc = malloc((size_t)n_slots * kvw * sizeof(uint16_t));
    uint16_t *vc = malloc((size_t)n_slots * kvw * sizeof(uint16_t));
    CKH(qkv && ref && got && headmax && pos && slot && kc && vc);
    for (long i = 0; i < n; i++)
        qkv[i] = rng_unit(&r) * 3.0f;
    for (int t = 0; t < T; t++) {
        pos[t] = t == T - 1 ? 4000 : (t == 0 ? 0 : rng_int(&r, 4001));
        slot[t] = n_slots - 1 - t;
    }
    memcpy(ref, qkv, (size_t)n * sizeof(float));
    const fq_rope_style st = style == 0 ? FQ_ROPE_HALF : FQ_ROPE_INTERLEAVED;
    for (int t = 0; t < T; t++) {
        rt_cpu_rope(ref + t * ld, n_head, hd, pos[t], theta, st);
        rt_cpu_rope(ref + t * ld + (long)n_head * hd, n_kv, hd, pos[t], theta, st);
    }

    float *d_qkv;
    int32_t *d_pos, *d_slot;
    uint16_t *d_kc, *d_vc;
    const size_t cache_bytes = (size_t)n_slots * kvw * sizeof(uint16_t);
    CK(cudaMalloc((void **)&d_qkv, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_pos, (size_t)T * sizeof(int32_t)));
    CK(cudaMalloc((void **)&d_slot, (size_t)T * sizeof(int32_t)));
    CK(cudaMalloc((void **)&d_kc, cache_bytes));
    CK(cudaMalloc((void **)&d_vc, cache_bytes));
    CK(cudaMemcpy(d_qkv, qkv, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_pos, pos, (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_slot, slot, (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_kc, 0x55, cache_bytes)); /* 0x5555: a finite fp16 poison */
    CK(cudaMemset(d_vc, 0x55, cache_bytes));
    CKL(k_rope_kv_store(d_qkv, ld, T, d_pos, d_slot, n_head, n_kv, hd, theta, style, d_kc, d_vc,
                        0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, d_qkv, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(kc, d_kc, cache_bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(vc, d_vc, cache_bytes, cudaMemcpyDeviceToHost));

    long bad = 0;
    for (int t = 0; t < T; t++) {
        const float *g_row = got + t * ld, *r_row = ref + t * ld, *o_row = qkv + t * ld;
        bad += cmp_rope_row(g_row, r_row, o_row, t, n_head + n_kv, hd, headmax);
        /* v and the pad columns untouched */
        bad += cmp_bits32("v/pad", g_row + qk, o_row + qk, ld - qk, ld - qk);
        const uint16_t *krow = kc + (long)slot[t] * kvw, *vrow = vc + (long)slot[t] * kvw;
        for (int j = 0; j < kvw; j++) {
            const float k_gpu = g_row[n_head * hd + j], k_cpu = r_row[n_head * hd + j];
            const uint16_t own = fq_f32_to_f16(k_gpu), cpu = fq_f32_to_f16(k_cpu);
            const double tol = 2e-5 * headmax[n_head + j / hd];
            if ((krow[j] != own || !f16_close(krow[j], cpu, tol)) && bad++ < MAX_SHOWN)
                fprintf(stderr,
                        "  k_cache[slot %d, %d]: got 0x%04x, fp16(gpu k) 0x%04x, fp16(cpu k) "
                        "0x%04x\n",
                        slot[t], j, krow[j], own, cpu);
            const uint16_t v16 = fq_f32_to_f16(o_row[qk + j]);
            if (vrow[j] != v16 && bad++ < MAX_SHOWN)
                fprintf(stderr, "  v_cache[slot %d, %d]: got 0x%04x want 0x%04x\n", slot[t], j,
                        vrow[j], v16);
        }
    }
    for (int sl = 0; sl < n_slots - T; sl++) /* rows no token maps to */
        for (int j = 0; j < kvw; j++)
            if ((kc[(long)sl * kvw + j] != 0x5555 || vc[(long)sl * kvw + j] != 0x5555) &&
                bad++ < MAX_SHOWN)
                fprintf(stderr, "  cache row %d (unused) written at %d\n", sl, j);
    printf("%-4s k_rope_kv_store    heads=%2d/%d hd=%3d theta=%6.0f style=%d T=%2d\n", verdict(bad),
           n_head, n_kv, hd, (double)theta, style, T);
    CK(cudaFree(d_qkv));
    CK(cudaFree(d_pos));
    CK(cudaFree(d_slot));
    CK(cudaFree(d_kc));
    CK(cudaFree(d_vc));
    free(qkv);
    free(ref);
    free(got);
    free(headmax);
    free(pos);
    free(slot);
    free(kc);
    free(vc);
    return bad != 0;
}

/* ---- k_final_norm_f16 ---- */

static int case_final(int e, int T, int R, int use_add)
{
    rng r = rng_seed((uint64_t)e * 3 + (uint64_t)R * 101 + (uint64_t)use_add);
    const long n = (long)T * e;
    const float eps = 1e-5f;
    float *x = malloc((size_t)n * sizeof(float)), *add = malloc((size_t)n * sizeof(float));
    float *w = malloc((size_t)e * sizeof(float)), *v = malloc((size_t)e * sizeof(float));
    float *x_got = malloc((size_t)n * sizeof(float));
    int32_t *rows = malloc((size_t)R * sizeof(int32_t));
    uint16_t *want = malloc((size_t)R * e * sizeof(uint16_t));
    uint16_t *got = malloc((size_t)R * e * sizeof(uint16_t));
    CKH(x && add && w && v && x_got && rows && want && got);
    fill_act(&r, x, n, 64);
    for (long i = 0; i < n; i++)
        add[i] = rng_unit(&r);
    for (int i = 0; i < e; i++)
        w[i] = 0.1f + 2.0f * fabsf(rng_unit(&r));
    for (int i = 0; i < R; i++)
        rows[i] = (i * 37 + 5) % T;
    for (int i = 0; i < R; i++) {
        const long t = rows[i];
        for (int j = 0; j < e; j++)
            v[j] = use_add ? x[t * e + j] + add[t * e + j] : x[t * e + j];
        rt_cpu_rmsnorm(v, w, 1, e, eps, v);
        for (int j = 0; j < e; j++)
            want[(long)i * e + j] = fq_f32_to_f16(v[j]);
    }

    float *d_x, *d_add, *d_w;
    int32_t *d_rows;
    uint16_t *d_out;
    CK(cudaMalloc((void **)&d_x, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_add, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_w, (size_t)e * sizeof(float)));
    CK(cudaMalloc((void **)&d_rows, (size_t)R * sizeof(int32_t)));
    CK(cudaMalloc((void **)&d_out, (size_t)R * e * sizeof(uint16_t)));
    CK(cudaMemcpy(d_x, x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_add, add, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_w, w, (size_t)e * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_rows, rows, (size_t)R * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_out, 0xff, (size_t)R * e * sizeof(uint16_t)));
    CKL(k_final_norm_f16(d_x, use_add ? d_add : NULL, d_rows, R, e, d_w, eps, d_out, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, d_out, (size_t)R * e * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(x_got, d_x, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    long bad = cmp_bits32("x (must stay)", x_got, x, n, e);
    for (long i = 0; i < (long)R * e; i++)
        if (!f16_close(got[i], want[i], 0.0) && bad++ < MAX_SHOWN)
            fprintf(stderr, "  out[%ld, %ld]: got 0x%04x want 0x%04x\n", i / e, i % e, got[i],
                    want[i]);
    printf("%-4s k_final_norm_f16   e=%5d T=%2d R=%2d add=%d\n", verdict(bad), e, T, R, use_add);
    CK(cudaFree(d_x));
    CK(cudaFree(d_add));
    CK(cudaFree(d_w));
    CK(cudaFree(d_rows));
    CK(cudaFree(d_out));
    free(x);
    free(add);
    free(w);
    free(v);
    free(x_got);
    free(rows);
    free(want);
    free(got);
    return bad != 0;
}

/* ---- k_argmax ---- */

/* The reference: first index of the largest non-NaN value; 0 for a row of NaNs only. */
static int32_t argmax_ref(const float *x, int V)
{
    int best = -1;
    for (int i = 0; i < V; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best]))
            best = i;
    return best < 0 ? 0 : best;
}

#define ARGMAX_ROWS 8

/* Row kinds: random; a tie of the max (first wins); NaNs before and after the max; all -inf with
 * a NaN first; all NaN; the max last; the max first and tied last; all equal. */
static void fill_argmax_row(rng *r, float *x, int V, int kind)
{
    for (int i = 0; i < V; i++)
        x[i] = rng_unit(r) * 10.0f;
    switch (kind) {
    case 1:
        x[V / 3] = 50.0f;
        x[V - 1] = 50.0f;
        break;
    case 2:
        x[0] = NAN;
        x[V / 2] = 40.0f;
        x[V - 1] = NAN;
        if (V > 4)
            x[V / 2 + 1] = NAN;
        break;
    case 3:
        for (int i = 0; i < V; i++)
            x[i] = -INFINITY;
        x[0] = NAN;
        break;
    case 4:
        for (int i = 0; i < V; i++)
            x[i] = NAN;
        break;
    case 5:
        x[V - 1] = 60.0f;
        break;
    case 6:
        x[0] = 70.0f;
        x[V - 1] = 70.0f;
        break;
    case 7:
        for (int i = 0; i < V; i++)
            x[i] = 1.0f;
        break;
    default:
        break;
    }
}

static int case_argmax(int V)
{
    rng r = rng_seed((uint64_t)V);
    const long n = (long)ARGMAX_ROWS * V;
    float *x = malloc((size_t)n * sizeof(float));
    int32_t want[ARGMAX_ROWS], got[ARGMAX_ROWS];
    CKH(x);
    for (int k = 0; k < ARGMAX_ROWS; k++) {
        fill_argmax_row(&r, x + (long)k * V, V, k);
        want[k] = argmax_ref(x + (long)k * V, V);
    }
    float *d_x;
    int32_t *d_out;
    CK(cudaMalloc((void **)&d_x, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_out, sizeof got));
    CK(cudaMemcpy(d_x, x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_out, 0xff, sizeof got));
    CKL(k_argmax(d_x, ARGMAX_ROWS, V, d_out, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, d_out, sizeof got, cudaMemcpyDeviceToHost));
    long bad = 0;
    for (int k = 0; k < ARGMAX_ROWS; k++)
        if (got[k] != want[k] && bad++ < MAX_SHOWN)
            fprintf(stderr, "  argmax row %d (kind %d): got %d want %d\n", k, k, got[k], want[k]);
    printf("%-4s k_argmax           V=%6d rows=%d\n", verdict(bad), V, ARGMAX_ROWS);
    CK(cudaFree(d_x));
    CK(cudaFree(d_out));
    free(x);
    return bad != 0;
}

/* ---- fp16 conversions ---- */

static int is_f16_nan(uint16_t h)
{
    return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

/* f32 -> f16 on random bit patterns, ties and edge values; f16 -> f32 on all 65536 patterns. */
static int case_f16(long n)
{
    rng r = rng_seed((uint64_t)n);
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc(65536 * sizeof(float));
    uint16_t *h = malloc((size_t)n * sizeof(uint16_t)), *all = malloc(65536 * sizeof(uint16_t));
    CKH(x && y && h && all);
    for (long i = 0; i < n; i++) {
        const uint64_t b = rng_next(&r);
        uint32_t u = (uint32_t)(b >> 32);
        if (i % 3 == 1) /* exponents near the fp16 range, low mantissa bits at a tie or not */
            u = (u & 0x80000000u) | ((uint32_t)(100 + rng_int(&r, 45)) << 23) | (u & 0x7fe000u) |
                ((b & 1) ? 0x1000u : (uint32_t)(b & 0x1fffu));
        memcpy(&x[i], &u, sizeof u);
    }
    static const float edge[] = {0.0f,
                                 -0.0f,
                                 65504.0f,
                                 65519.99f,
                                 65520.0f,
                                 -65520.0f,
                                 6.103515625e-5f,
                                 5.9604644775390625e-8f,
                                 2.98023223876953125e-8f,
                                 2.98023224e-8f,
                                 1e-30f,
                                 INFINITY,
                                 -INFINITY,
                                 NAN};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0] && (long)i < n; i++)
        x[i] = edge[i];

    float *d_x, *d_y;
    uint16_t *d_h;
    CK(cudaMalloc((void **)&d_x, (size_t)n * sizeof(float)));
    CK(cudaMalloc((void **)&d_h, (size_t)(n > 65536 ? n : 65536) * sizeof(uint16_t)));
    CK(cudaMalloc((void **)&d_y, 65536 * sizeof(float)));
    CK(cudaMemcpy(d_x, x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    CKL(k_f32_to_f16(d_x, n, d_h, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d_h, (size_t)n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    long bad = 0;
    for (long i = 0; i < n; i++) {
        const uint16_t want = fq_f32_to_f16(x[i]);
        const int ok = isnan(x[i]) ? is_f16_nan(h[i]) : h[i] == want;
        if (!ok && bad++ < MAX_SHOWN)
            fprintf(stderr, "  f32_to_f16[%ld] (%.9g): got 0x%04x want 0x%04x\n", i, (double)x[i],
                    h[i], want);
    }
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    CK(cudaMemcpy(d_h, all, 65536 * sizeof(uint16_t), cudaMemcpyHostToDevice));
    CKL(k_f16_to_f32(d_h, 65536, d_y, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y, d_y, 65536 * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < 65536; i++) {
        const float want = fq_f16_to_f32((uint16_t)i);
        const int ok =
            is_f16_nan((uint16_t)i) ? isnan(y[i]) : memcmp(&y[i], &want, sizeof want) == 0;
        if (!ok && bad++ < MAX_SHOWN)
            fprintf(stderr, "  f16_to_f32[0x%04x]: got %.9g want %.9g\n", i, (double)y[i],
                    (double)want);
    }
    printf("%-4s k_f32_to_f16 / k_f16_to_f32 n=%ld / 65536\n", verdict(bad), n);
    CK(cudaFree(d_x));
    CK(cudaFree(d_h));
    CK(cudaFree(d_y));
    free(x);
    free(y);
    free(h);
    free(all);
    return bad != 0;
}

/* ---- k_w6_dequantize ---- */

/* pad: extra bytes per packed row beyond fq_pack_row_bytes(k) (a multiple of 16). */
static int case_dequant(int n, int k, int g, long pad)
{
    rng r = rng_seed((uint64_t)n * 5 + (uint64_t)k + (uint64_t)g);
    const long rb = fq_pack_row_bytes(k), row_bytes = rb + pad, ng = k / g;
    float *w = malloc((size_t)n * k * sizeof(float)), *want = malloc((size_t)n * k * sizeof(float));
    float *got = malloc((size_t)n * k * sizeof(float));
    uint8_t *packed = malloc((size_t)n * rb), *padded = calloc((size_t)n, (size_t)row_bytes);
    uint16_t *sw = malloc((size_t)n * ng * sizeof(uint16_t));
    CKH(w && want && got && packed && padded && sw);
    for (long i = 0; i < (long)n * k; i++)
        w[i] = rng_unit(&r) * (1.0f + (float)(i % 7)) * (i % 5 == 0 ? 1e-4f : 1.0f);
    fq_weight_quantize(w, n, k, g, packed, sw);
    fq_weight_dequantize(packed, sw, n, k, g, want);
    for (long i = 0; i < n; i++)
        memcpy(padded + i * row_bytes, packed + i * rb, (size_t)rb);

    uint8_t *d_p;
    uint16_t *d_sw;
    float *d_w;
    CK(cudaMalloc((void **)&d_p, (size_t)n * row_bytes));
    CK(cudaMalloc((void **)&d_sw, (size_t)n * ng * sizeof(uint16_t)));
    CK(cudaMalloc((void **)&d_w, (size_t)n * k * sizeof(float)));
    CK(cudaMemcpy(d_p, padded, (size_t)n * row_bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_sw, sw, (size_t)n * ng * sizeof(uint16_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_w, 0xff, (size_t)n * k * sizeof(float)));
    CKL(k_w6_dequantize(d_p, d_sw, row_bytes, n, k, g, d_w, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, d_w, (size_t)n * k * sizeof(float), cudaMemcpyDeviceToHost));
    const long bad = cmp_bits32("w", got, want, (long)n * k, k);
    printf("%-4s k_w6_dequantize    n=%5d k=%5d g=%3d row_bytes=%ld\n", verdict(bad), n, k, g,
           row_bytes);
    CK(cudaFree(d_p));
    CK(cudaFree(d_sw));
    CK(cudaFree(d_w));
    free(w);
    free(want);
    free(got);
    free(packed);
    free(padded);
    free(sw);
    return bad != 0;
}

/* ---- k_embed ---- */

static int case_embed(int e, int T)
{
    rng r = rng_seed((uint64_t)e * 7 + (uint64_t)T);
    const int V = 1000;
    float *table = malloc((size_t)V * e * sizeof(float)),
          *want = malloc((size_t)T * e * sizeof(float));
    float *got = malloc((size_t)T * e * sizeof(float));
    int32_t *ids = malloc((size_t)T * sizeof(int32_t));
    CKH(table && want && got && ids);
    for (long i = 0; i < (long)V * e; i++)
        table[i] = rng_unit(&r);
    for (int t = 0; t < T; t++) {
        ids[t] = t == 0 ? 0 : (t == 1 ? V - 1 : rng_int(&r, V));
        memcpy(want + (long)t * e, table + (long)ids[t] * e, (size_t)e * sizeof(float));
    }
    float *d_table, *d_x;
    int32_t *d_ids;
    CK(cudaMalloc((void **)&d_table, (size_t)V * e * sizeof(float)));
    CK(cudaMalloc((void **)&d_x, (size_t)T * e * sizeof(float)));
    CK(cudaMalloc((void **)&d_ids, (size_t)T * sizeof(int32_t)));
    CK(cudaMemcpy(d_table, table, (size_t)V * e * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_ids, ids, (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d_x, 0xff, (size_t)T * e * sizeof(float)));
    CKL(k_embed(d_table, d_ids, T, e, d_x, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, d_x, (size_t)T * e * sizeof(float), cudaMemcpyDeviceToHost));
    const long bad = cmp_bits32("x", got, want, (long)T * e, e);
    printf("%-4s k_embed            e=%5d T=%2d\n", verdict(bad), e, T);
    CK(cudaFree(d_table));
    CK(cudaFree(d_x));
    CK(cudaFree(d_ids));
    free(table);
    free(want);
    free(got);
    free(ids);
    return bad != 0;
}

/* ---- argument checks (no launch happens, so the device pointers are never touched) ---- */

static int case_args(void)
{
    float *d_f;
    int8_t *d_q;
    uint16_t *d_h;
    int32_t *d_i;
    CK(cudaMalloc((void **)&d_f, 4096 * sizeof(float)));
    CK(cudaMalloc((void **)&d_q, 4096));
    CK(cudaMalloc((void **)&d_h, 4096 * sizeof(uint16_t)));
    CK(cudaMalloc((void **)&d_i, 16 * sizeof(int32_t)));
    struct {
        const char *what;
        int rc;
    } c[] = {
        {"k_quant g=48", k_quant(d_f, 1, 96, 8, 48, d_q, d_f, 0)},
        {"k_quant bits=7", k_quant(d_f, 1, 128, 7, 32, d_q, d_f, 0)},
        {"k_quant k%g", k_quant(d_f, 1, 96, 8, 64, d_q, d_f, 0)},
        {"k_quant x NULL", k_quant(NULL, 1, 128, 8, 32, d_q, d_f, 0)},
        {"k_quant k>65536", k_quant(d_f, 1, 65536 + 128, 8, 128, d_q, d_f, 0)},
        {"k_add_rmsnorm_quant q without s",
         k_add_rmsnorm_quant(d_f, NULL, d_f, 1, 128, 1e-5f, NULL, d_q, NULL, 8, 32, 0)},
        {"k_add_rmsnorm_quant w NULL",
         k_add_rmsnorm_quant(d_f, NULL, NULL, 1, 128, 1e-5f, d_f, NULL, NULL, 8, 32, 0)},
        {"k_silu_mul_quant ld<2f", k_silu_mul_quant(d_f, 255, 1, 128, d_f, NULL, NULL, 8, 32, 0)},
        {"k_rope_kv_store hd odd",
         k_rope_kv_store(d_f, 4096, 1, d_i, d_i, 1, 1, 63, 1e4f, 0, d_h, d_h, 0)},
        {"k_rope_kv_store ld small",
         k_rope_kv_store(d_f, 100, 1, d_i, d_i, 1, 1, 64, 1e4f, 0, d_h, d_h, 0)},
        {"k_rope_kv_store style 2",
         k_rope_kv_store(d_f, 4096, 1, d_i, d_i, 1, 1, 64, 1e4f, 2, d_h, d_h, 0)},
        {"k_argmax V=0", k_argmax(d_f, 1, 0, d_i, 0)},
        {"k_f32_to_f16 n<0", k_f32_to_f16(d_f, -1, d_h, 0)},
        {"k_w6_dequantize row_bytes small",
         k_w6_dequantize((const uint8_t *)d_q, d_h, 32, 1, 64, 32, d_f, 0)},
        {"k_w6_dequantize k%g", k_w6_dequantize((const uint8_t *)d_q, d_h, 48, 1, 64, 48, d_f, 0)},
    };
    long bad = 0;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        if (c[i].rc != -1 && bad++ < MAX_SHOWN)
            fprintf(stderr, "  %s: returned %d, want -1\n", c[i].what, c[i].rc);
    /* empty batches are no-ops */
    if (k_quant(d_f, 0, 128, 8, 32, d_q, d_f, 0) != 0 || k_argmax(d_f, 0, 10, d_i, 0) != 0 ||
        k_f32_to_f16(d_f, 0, d_h, 0) != 0) {
        fprintf(stderr, "  an empty call did not return 0\n");
        bad++;
    }
    CK(cudaDeviceSynchronize());
    printf("%-4s argument checks (%zu bad calls)\n", verdict(bad), sizeof c / sizeof c[0]);
    CK(cudaFree(d_f));
    CK(cudaFree(d_q));
    CK(cudaFree(d_h));
    CK(cudaFree(d_i));
    return bad != 0;
}

/* ---- timings of the fused kernels (information only) ---- */

static int time_start(timer *tm)
{
    CK(cudaEventCreate(&tm->a));
    CK(cudaEventCreate(&tm->b));
    CK(cudaEventRecord(tm->a, 0));
    return 0;
}

/* Microseconds per rep since time_start, or a negative value on a CUDA error. */
static double time_stop(timer *tm, int reps)
{
    float ms = 0.0f;
    if (cudaEventRecord(tm->b, 0) != cudaSuccess || cudaEventSynchronize(tm->b) != cudaSuccess ||
        cudaEventElapsedTime(&ms, tm->a, tm->b) != cudaSuccess)
        return -1.0;
    cudaEventDestroy(tm->a);
    cudaEventDestroy(tm->b);
    return 1000.0 * ms / reps;
}

static int bench(int e, int f, int T)
{
    const int reps = 50, g = 128;
    float *d_x, *d_add, *d_w, *d_gu, *d_s;
    int8_t *d_q;
    CK(cudaMalloc((void **)&d_x, (size_t)T * e * sizeof(float)));
    CK(cudaMalloc((void **)&d_add, (size_t)T * e * sizeof(float)));
    CK(cudaMalloc((void **)&d_w, (size_t)e * sizeof(float)));
    CK(cudaMalloc((void **)&d_gu, (size_t)T * 2 * f * sizeof(float)));
    CK(cudaMalloc((void **)&d_q, (size_t)T * f));
    CK(cudaMalloc((void **)&d_s, (size_t)T * f / g * sizeof(float)));
    CK(cudaMemset(d_x, 0, (size_t)T * e * sizeof(float)));
    CK(cudaMemset(d_add, 0, (size_t)T * e * sizeof(float)));
    CK(cudaMemset(d_w, 0, (size_t)e * sizeof(float)));
    CK(cudaMemset(d_gu, 0, (size_t)T * 2 * f * sizeof(float)));
    timer tm;
    CKL(k_add_rmsnorm_quant(d_x, d_add, d_w, T, e, 1e-5f, NULL, d_q, d_s, 6, g, 0));
    if (time_start(&tm) != 0)
        return -1;
    for (int i = 0; i < reps; i++)
        k_add_rmsnorm_quant(d_x, d_add, d_w, T, e, 1e-5f, NULL, d_q, d_s, 6, g, 0);
    const double us_norm = time_stop(&tm, reps);
    CKL(k_silu_mul_quant(d_gu, 2L * f, T, f, NULL, d_q, d_s, 6, g, 0));
    if (time_start(&tm) != 0)
        return -1;
    for (int i = 0; i < reps; i++)
        k_silu_mul_quant(d_gu, 2L * f, T, f, NULL, d_q, d_s, 6, g, 0);
    const double us_silu = time_stop(&tm, reps);
    if (us_norm < 0 || us_silu < 0)
        return -1;
    const double b_norm = (double)T * e * (4 + 4 + 4 + 1), b_silu = (double)T * f * (8 + 1);
    printf("time add_rmsnorm_quant e=%5d T=%2d: %7.2f us %6.0f GB/s | silu_mul_quant f=%5d: "
           "%7.2f us %6.0f GB/s\n",
           e, T, us_norm, b_norm / us_norm * 1e-3, f, us_silu, b_silu / us_silu * 1e-3);
    CK(cudaFree(d_x));
    CK(cudaFree(d_add));
    CK(cudaFree(d_w));
    CK(cudaFree(d_gu));
    CK(cudaFree(d_q));
    CK(cudaFree(d_s));
    return 0;
}

/* ---- the case lists ---- */

/* Adds a case's result: 1 mismatch, 0 pass, -1 error. Returns nonzero to stop. */
static int tally(int rc, int *failures)
{
    if (rc < 0)
        return 1;
    *failures += rc;
    return 0;
}

static int run_quant_cases(int *failures)
{
    static const int ks[] = {576, 1536, 4096, 5120, 11008, 28672, 53248};
    static const int Ts[] = {1, 7, 64};
    static const int gs[] = {32, 64, 128};
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (size_t b = 0; b < sizeof Ts / sizeof Ts[0]; b++)
            for (size_t c = 0; c < sizeof gs / sizeof gs[0]; c++)
                for (int bits = 6; bits <= 8; bits += 2)
                    if (ks[a] % gs[c] == 0 &&
                        tally(case_quant(ks[a], Ts[b], gs[c], bits, 0), failures))
                        return 1;
    if (tally(case_quant(4096, 7, 256, 8, 0), failures) ||
        tally(case_quant(4096, 7, 512, 6, 0), failures) ||
        tally(case_quant(576, 3, 64, 6, 1), failures) ||
        tally(case_quant(5120, 7, 512, 8, 1), failures))
        return 1;
    return 0;
}

static int run_norm_cases(int *failures)
{
    static const int es[] = {576, 4096, 5120, 8192};
    static const int Ts[] = {1, 7, 64};
    static const int gs[] = {32, 64, 128};
    int i = 0;
    for (size_t a = 0; a < sizeof es / sizeof es[0]; a++)
        for (size_t b = 0; b < sizeof Ts / sizeof Ts[0]; b++)
            for (size_t c = 0; c < sizeof gs / sizeof gs[0]; c++)
                for (int bits = 6; bits <= 8; bits += 2)
                    if (es[a] % gs[c] == 0 &&
                        tally(case_norm(es[a], Ts[b], gs[c], bits, i++ % 2, 1), failures))
                        return 1;
    if (tally(case_norm(4096, 7, 512, 8, 1, 1), failures) ||
        tally(case_norm(577, 7, 0, 8, 1, 0), failures) || /* unaligned rows: scalar path */
        tally(case_norm(4096, 3, 0, 8, 0, 0), failures))
        return 1;
    return 0;
}

static int run_silu_cases(int *failures)
{
    static const int fs[] = {1536, 11008, 28672};
    static const int Ts[] = {1, 7, 64};
    static const int gs[] = {32, 64, 128};
    int i = 0;
    for (size_t a = 0; a < sizeof fs / sizeof fs[0]; a++)
        for (size_t b = 0; b < sizeof Ts / sizeof Ts[0]; b++)
            for (size_t c = 0; c < sizeof gs / sizeof gs[0]; c++)
                for (int bits = 6; bits <= 8; bits += 2)
                    if (tally(case_silu(fs[a], Ts[b], gs[c], bits, (i++ % 2) * 4), failures))
                        return 1;
    if (tally(case_silu(1536, 7, 64, 6, 1), failures) || /* unaligned rows */
        tally(case_silu(11008, 3, 256, 8, 0), failures))
        return 1;
    return 0;
}

static int run_rope_cases(int *failures)
{
    static const rope_shape shapes[] = {{9, 3, 64}, {32, 8, 128}};
    static const float thetas[] = {10000.0f, 500000.0f};
    static const int Ts[] = {1, 7, 64};
    for (size_t a = 0; a < sizeof shapes / sizeof shapes[0]; a++)
        for (size_t b = 0; b < sizeof thetas / sizeof thetas[0]; b++)
            for (int style = 0; style <= 1; style++)
                for (size_t c = 0; c < sizeof Ts / sizeof Ts[0]; c++)
                    if (tally(case_rope(shapes[a], thetas[b], style, Ts[c]), failures))
                        return 1;
    return 0;
}

static int run_other_cases(int *failures)
{
    static const int final_es[] = {576, 4096, 8192};
    for (size_t a = 0; a < sizeof final_es / sizeof final_es[0]; a++)
        if (tally(case_final(final_es[a], 64, 1, 0), failures) ||
            tally(case_final(final_es[a], 64, 7, 1), failures))
            return 1;
    if (tally(case_final(577, 9, 3, 1), failures))
        return 1;
    static const int Vs[] = {1, 7, 32000, 32001, 128256, 151936};
    for (size_t a = 0; a < sizeof Vs / sizeof Vs[0]; a++)
        if (tally(case_argmax(Vs[a]), failures))
            return 1;
    if (tally(case_f16((1L << 20) + 3), failures))
        return 1;
    if (tally(case_dequant(64, 96, 32, 0), failures) ||
        tally(case_dequant(576, 576, 64, 0), failures) ||
        tally(case_dequant(1536, 576, 32, 16), failures) ||
        tally(case_dequant(256, 4096, 128, 0), failures) ||
        tally(case_dequant(128, 11008, 128, 32), failures))
        return 1;
    if (tally(case_embed(576, 7), failures) || tally(case_embed(4096, 7), failures) ||
        tally(case_embed(577, 5), failures))
        return 1;
    return tally(case_args(), failures);
}

int main(void)
{
    if (k_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    char desc[256] = "";
    if (k_device_describe(0, desc, sizeof desc) == 0)
        printf("device 0: %s\n", desc);
    int failures = 0;
    if (run_quant_cases(&failures) || run_norm_cases(&failures) || run_silu_cases(&failures) ||
        run_rope_cases(&failures) || run_other_cases(&failures) || bench(4096, 11008, 1) != 0 ||
        bench(8192, 28672, 64) != 0) {
        fprintf(stderr, "stopped on an error\n");
        return 1;
    }
    if (failures) {
        fprintf(stderr, "%d case(s) failed\n", failures);
        return 1;
    }
    printf("all cases passed\n");
    return 0;
}

/* fq_act.c — the reference dynamic activation quantizer (per token, per group, 6 or 8 bits),
 * written operation for operation as fq_act.h states it so the CUDA quantizers can match it bit for
 * bit. */
#include "fq_act.h"

#include "fq_base.h"

#include <math.h>

/* One group of g values: codes q[g] and the returned scale. */
static float quantize_group(const float *x, int32_t g, float qmax, int8_t *q)
{
    float amax = 0.0f;
    for (int32_t j = 0; j < g; j++) {
        float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    float s = amax / qmax;
    float inv = amax > 0.0f ? qmax / amax : 0.0f;
    float lo = -(qmax + 1.0f);
    for (int32_t j = 0; j < g; j++) {
        float v = rintf(x[j] * inv);
        if (v != v) /* nan (a nan input, or inf * 0): 0, as the GPU's cvt.rni.s32 gives */
            v = 0.0f;
        if (v < lo)
            v = lo;
        if (v > qmax)
            v = qmax;
        q[j] = (int8_t)v;
    }
    return s;
}

void fq_act_quantize(const float *x, int64_t m, int64_t k, int32_t g, int bits, int8_t *q, float *s)
{
    FQ_ASSERT(g > 0 && k % g == 0 && (bits == 6 || bits == 8));
    float qmax = (float)((1 << (bits - 1)) - 1);
    int64_t n_groups = k / g;
    for (int64_t r = 0; r < m; r++)
        for (int64_t gi = 0; gi < n_groups; gi++)
            s[r * n_groups + gi] = quantize_group(x + r * k + gi * g, g, qmax, q + r * k + gi * g);
}

/* rt_mode.c — the modes of the decoder linears (rt_ops.h): names, and what every backend checks
 * of a model and a mode before it builds anything — the weights the mode needs and each linear's
 * activation bits. */
#include "rt_ops.h"

#include "fq_base.h"
#include "fq_weight.h"

#include <string.h>

const char *rt_mode_name(rt_mode mode)
{
    static const char *names[] = {"fp", "w6a16", "w6a8", "w6a6", "flex", "fp16", "w8a8"};
    return mode >= RT_MODE_FP && mode <= RT_MODE_LAST ? names[mode] : "?";
}

int rt_mode_parse(const char *name, rt_mode *mode)
{
    for (int i = RT_MODE_FP; i <= RT_MODE_LAST; i++)
        if (strcmp(name, rt_mode_name((rt_mode)i)) == 0) {
            *mode = (rt_mode)i;
            return 0;
        }
    return FQ_EINVAL;
}

int rt_mode_check(const rt_model *m, rt_mode mode, char *err, size_t err_len)
{
    if (mode < RT_MODE_FP || mode > RT_MODE_LAST)
        return fq_err(err, err_len, FQ_EINVAL, "unknown mode %d", (int)mode);
    if ((mode == RT_MODE_FP16 || mode == RT_MODE_W8A8) && !rt_model_has_fp(m) &&
        !rt_model_has_q6(m))
        return fq_err(err, err_len, FQ_EINVAL, "mode %s needs fp32 or INT6 weights",
                      rt_mode_name(mode));
    if (mode == RT_MODE_FP16 || mode == RT_MODE_W8A8)
        return 0;
    if (mode == RT_MODE_FP && !rt_model_has_fp(m))
        return fq_err(err, err_len, FQ_EINVAL,
                      "mode fp needs the source weights; this model has only INT6 codes (use "
                      "w6a16, w6a8, w6a6 or flex, or load the source checkpoint)");
    if (mode != RT_MODE_FP && !rt_model_has_q6(m))
        return fq_err(err, err_len, FQ_EINVAL, "mode %s needs INT6 weights; this model has none",
                      rt_mode_name(mode));
    return 0;
}

int rt_linear_abits(const rt_model *m, const rt_backend_params *p, int32_t layer, fq_lin_type t,
                    int32_t *bits, char *err, size_t err_len)
{
    int32_t b = 0;
    if (p->mode == RT_MODE_W6A8 || p->mode == RT_MODE_W6A6)
        b = p->mode == RT_MODE_W6A8 ? 8 : 6;
    else if (p->mode == RT_MODE_FLEX)
        b = p->abits ? p->abits[(int64_t)layer * FQ_LIN_COUNT + t]
                     : rt_layer_linear(&m->layers[layer], t)->abits;
    if (p->mode == RT_MODE_FLEX && b != 6 && b != 8)
        return fq_err(err, err_len, FQ_EINVAL,
                      "mode flex: layer %d %s has activation bits %d (6 or 8 needed; quantize "
                      "with flexq-quant --abits flex)",
                      layer, fq_lin_name(t), b);
    *bits = b;
    return 0;
}

int rt_linear_fp32(const rt_linear *lin, const float **w, float **owned)
{
    *owned = NULL;
    *w = lin->w;
    if (lin->w)
        return 0;
    if (!lin->q6.packed)
        return FQ_EINVAL;
    float *d = fq_malloc_array((size_t)lin->n_out * (size_t)lin->n_in, sizeof *d);
    if (!d)
        return FQ_ENOMEM;
    fq_weight_dequantize(lin->q6.packed, lin->q6.scales, lin->n_out, lin->n_in, lin->q6.group, d);
    *w = *owned = d;
    return 0;
}

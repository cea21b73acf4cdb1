/* rt_modelfile.h — loads an INT6 model file (fq_modelfile.h) into an rt_model.
 *
 * The file is mapped (fq_st_open validates the safetensors container: offsets, dtype x shape
 * sizes, overlaps), then everything FlexQ-specific is checked before any model is built: the
 * version, the config, the quantization metadata (wbits 6, the layout, a group size of 32 / 64 /
 * 128 dividing K for every linear type, abits 6 or 8 for every linear), the tokenizer, and every
 * tensor's presence, dtype and shape against the config (no tensor missing, none extra). Any
 * problem is one FQ_EFORMAT (FQ_EUNSUP for a newer version or another layout or architecture)
 * message "<path>: <tensor or metadata key>: <problem>".
 *
 * The model built: linears have w = NULL and q6 pointing into the mapping (packed codes and fp16
 * scales read in place, scales at even offsets as the writer guarantees), abits per linear; the
 * fp16 embeddings, norms and untied output are converted to fp32 in one arena; lm_head is the fp32
 * token_embd when tied, else output (abits 0, no INT6 form). m->file owns the mapping, m->arena the
 * fp32 copies, m->quant_json the flexq.quant text (for tools that report the sensitivity table).
 * Thread safety: any thread; the model is immutable after load.
 */
#ifndef RT_MODELFILE_H
#define RT_MODELFILE_H

#include "rt_model.h"

#include <stdbool.h>
#include <stddef.h>

/* Loads path. On success *out is caller-owned (rt_model_destroy); on failure *out is NULL and err
 * names the file and the tensor or metadata key. */
int rt_modelfile_load(const char *path, rt_model **out, char *err, size_t err_len);

/* True when path is a valid safetensors file whose metadata has the flexq.version key. */
bool rt_modelfile_is_int6(const char *path);

#endif /* RT_MODELFILE_H */

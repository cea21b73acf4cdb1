/* make_tiny_fq6.c — writes the tiny random test model as an INT6 model file, for checks that run
 * outside C (tests/integration/test_modelfile_python.py).
 *
 * Usage: make_tiny_fq6 OUT.fq6.safetensors [--untied] [--group N]
 * Generates the tiny GGUF model in a temporary directory, quantizes it (group N: 0 = auto, the
 * default, or 32/64/128), writes OUT with a small sensitivity table and removes the directory.
 */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "fq_modelfile.h"
#include "fq_weight.h"
#include "tc_tiny_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int make(const char *out, bool tied, int32_t group, char *err, size_t err_len)
{
    char dir[512], gguf[600];
    if (tc_mkdtemp(dir, sizeof dir) != 0)
        return fq_err(err, err_len, FQ_EIO, "cannot make a temporary directory");
    snprintf(gguf, sizeof gguf, "%s/tiny.gguf", dir);
    tc_tiny_params p = tc_tiny_default_params();
    p.tied = tied;
    fq_ckpt *ck = NULL;
    fq_qmodel *qm = NULL;
    int rc = tc_tiny_model_write(dir, &p) == 0
                 ? 0
                 : fq_err(err, err_len, FQ_EIO, "cannot write the tiny model in %s", dir);
    if (!rc)
        rc = fq_ckpt_load(gguf, &ck, err, err_len);
    if (!rc)
        rc = fq_qmodel_quantize(ck, group, NULL, NULL, &qm, err, err_len);
    if (!rc) {
        for (int32_t i = 0; i < qm->n_layer * FQ_LIN_COUNT; i++)
            qm->lin[i].abits = i % FQ_LIN_COUNT == FQ_LIN_DOWN ? 8 : 6;
        fq_modelfile_params mp = fq_modelfile_default_params();
        mp.sensitivity_json = "{\"metric\":\"ppl\",\"a8\":[\"ffn_down\"]}";
        mp.calib_desc = "none (tiny random model)";
        rc = fq_modelfile_write(out, ck, qm, &mp, err, err_len);
    }
    fq_qmodel_destroy(qm);
    fq_ckpt_destroy(ck);
    tc_rmtree(dir);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT.fq6.safetensors [--untied] [--group N]\n", argv[0]);
        return 2;
    }
    bool tied = true;
    int32_t group = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--untied") == 0) {
            tied = false;
        } else if (strcmp(argv[i], "--group") == 0 && i + 1 < argc) {
            group = (int32_t)atoi(argv[++i]);
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
            return 2;
        }
    }
    char err[1024] = "";
    int rc = make(argv[1], tied, group, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    return 0;
}

/* test_fq_ggml.c — ggml block decoding checked against gguf-py's decoding of the same bytes. */
#include "fq_base.h"
#include "fq_ggml.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* tests/data/ggml_blocks.bin, read whole; its layout is documented in tests/ref/gen_ggml_blocks.py.
 */
typedef struct {
    uint8_t *bytes;
    size_t size;
} blocks_file;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int setup(void **state)
{
    const char *src = getenv("FLEXQ_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/ggml_blocks.bin", src ? src : ".");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open %s (set FLEXQ_SRCDIR)\n", path);
        return -1;
    }
    blocks_file *bf = calloc(1, sizeof *bf);
    fseek(fp, 0, SEEK_END);
    bf->size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    bf->bytes = malloc(bf->size);
    size_t got = fread(bf->bytes, 1, bf->size, fp);
    fclose(fp);
    if (got != bf->size)
        return -1;
    *state = bf;
    return 0;
}

static int teardown(void **state)
{
    blocks_file *bf = *state;
    if (bf)
        free(bf->bytes);
    free(bf);
    return 0;
}

static void check_entry(int type, const uint8_t *raw, size_t n_bytes, const uint8_t *want_bytes,
                        int64_t n)
{
    size_t nbytes = 0;
    assert_int_equal(fq_ggml_nbytes(type, n, &nbytes), 0);
    assert_int_equal(nbytes, n_bytes);
    float *got = malloc((size_t)n * sizeof *got);
    assert_int_equal(fq_ggml_dequant(type, raw, got, n), 0);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float want;
        memcpy(&want, want_bytes + 4 * i, sizeof want);
        /* Exact equality: every decoder does the layout's fp32 operations in the same order as
         * gguf-py (fp16 fields widened exactly, scale = d * sub_scale first, then scale * q - min),
         * and C11 mode keeps the compiler from fusing them into FMAs, so not even 1 ulp may
         * differ. Comparing bits also checks the sign of zeros. */
        if (memcmp(&want, &got[i], sizeof want) != 0 && bad++ < 5)
            fprintf(stderr, "%s value %lld: got %.9g, gguf-py %.9g\n", fq_ggml_type_name(type),
                    (long long)i, (double)got[i], (double)want);
    }
    free(got);
    assert_int_equal(bad, 0);
}

static void test_fq_ggml_dequant_matches_gguf_py(void **state)
{
    const blocks_file *bf = *state;
    assert_true(bf->size >= 12);
    assert_memory_equal(bf->bytes, "FQGB", 4);
    assert_int_equal(le32(bf->bytes + 4), 1);
    uint32_t count = le32(bf->bytes + 8);
    size_t pos = 12;
    int seen[FQ_GGML_TYPE_END] = {0};
    for (uint32_t e = 0; e < count; e++) {
        assert_true(pos + 12 <= bf->size);
        int type = (int)le32(bf->bytes + pos);
        uint32_t n = le32(bf->bytes + pos + 4), n_bytes = le32(bf->bytes + pos + 8);
        pos += 12;
        assert_true(pos + n_bytes + 4ull * n <= bf->size);
        assert_true(type >= 0 && type < FQ_GGML_TYPE_END);
        check_entry(type, bf->bytes + pos, n_bytes, bf->bytes + pos + n_bytes, n);
        seen[type] = 1;
        pos += n_bytes + 4ull * n;
    }
    assert_int_equal(pos, bf->size);
    const int want_types[] = {FQ_GGML_Q8_0, FQ_GGML_Q4_0, FQ_GGML_Q4_1, FQ_GGML_Q5_0, FQ_GGML_Q5_1,
                              FQ_GGML_Q4_K, FQ_GGML_Q5_K, FQ_GGML_Q6_K, FQ_GGML_F16,  FQ_GGML_BF16};
    for (size_t i = 0; i < sizeof want_types / sizeof want_types[0]; i++)
        assert_true(seen[want_types[i]]);
}

static void test_fq_ggml_geometry_and_names(void **state)
{
    (void)state;
    assert_int_equal(fq_ggml_block_size(FQ_GGML_Q4_K), 256);
    assert_int_equal(fq_ggml_type_size(FQ_GGML_Q4_K), 144);
    assert_int_equal(fq_ggml_type_size(FQ_GGML_Q6_K), 210);
    assert_int_equal(fq_ggml_type_size(FQ_GGML_Q8_0), 34);
    assert_int_equal(fq_ggml_type_size(FQ_GGML_Q4_1), 20);
    assert_string_equal(fq_ggml_type_name(FQ_GGML_BF16), "BF16");
    assert_string_equal(fq_ggml_type_name(FQ_GGML_IQ2_XXS), "IQ2_XXS");
    assert_string_equal(fq_ggml_type_name(4), "unknown"); /* retired Q4_2 */
    assert_string_equal(fq_ggml_type_name(-1), "unknown");
    assert_string_equal(fq_ggml_type_name(1000), "unknown");
    assert_true(fq_ggml_can_dequant(FQ_GGML_Q5_K));
    assert_false(fq_ggml_can_dequant(FQ_GGML_Q2_K));
    assert_false(fq_ggml_can_dequant(4));
}

static void test_fq_ggml_rejects_bad_counts(void **state)
{
    (void)state;
    uint8_t block[144] = {0};
    float out[256];
    size_t nbytes;
    assert_int_equal(fq_ggml_dequant(FQ_GGML_Q4_K, block, out, 100), FQ_EINVAL);
    assert_int_equal(fq_ggml_dequant(FQ_GGML_Q2_K, block, out, 256), FQ_EUNSUP);
    assert_int_equal(fq_ggml_dequant(99, block, out, 256), FQ_EUNSUP);
    assert_int_equal(fq_ggml_nbytes(FQ_GGML_Q8_0, 33, &nbytes), FQ_EINVAL);
    assert_int_equal(fq_ggml_nbytes(FQ_GGML_F32, INT64_MAX, &nbytes), FQ_ERANGE);
    assert_int_equal(fq_ggml_nbytes(FQ_GGML_Q6_K, 512, &nbytes), 0);
    assert_int_equal(nbytes, 420);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fq_ggml_dequant_matches_gguf_py, setup, teardown),
        cmocka_unit_test(test_fq_ggml_geometry_and_names),
        cmocka_unit_test(test_fq_ggml_rejects_bad_counts),
    };
    return cmocka_run_group_tests_name("fq_ggml", tests, NULL, NULL);
}

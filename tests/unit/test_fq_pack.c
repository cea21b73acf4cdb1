/* test_fq_pack.c — the INT6 packed layout: exhaustive round trips, the header's byte formulas on a
 * hand-computed example, padding, row sizes and the group-size rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_pack.h"

#include <stdlib.h>
#include <string.h>

#define GUARD      16 /* bytes after a packed row that packing must not touch */
#define GUARD_BYTE 0xA5

/* Packs q[k] into a fresh row with a guard tail, unpacks it (all K_pad codes) and checks both. */
static void check_round_trip(const int8_t *q, int64_t k)
{
    int64_t rb = fq_pack_row_bytes(k), k_pad = rb / FQ_PACK_CHUNK_BYTES * FQ_PACK_CHUNK;
    uint8_t *row = malloc((size_t)(rb + GUARD));
    int8_t *back = malloc((size_t)k_pad);
    assert_non_null(row);
    assert_non_null(back);
    memset(row, GUARD_BYTE, (size_t)(rb + GUARD));
    fq_pack_row(q, k, row);
    for (int i = 0; i < GUARD; i++)
        assert_int_equal(row[rb + i], GUARD_BYTE);
    fq_unpack_row(row, k_pad, back);
    for (int64_t i = 0; i < k; i++)
        if (back[i] != q[i])
            fail_msg("k=%lld: code %lld packed as %d came back as %d", (long long)k, (long long)i,
                     q[i], back[i]);
    for (int64_t i = k; i < k_pad; i++)
        if (back[i] != 0)
            fail_msg("k=%lld: padding code %lld unpacks as %d, not 0", (long long)k, (long long)i,
                     back[i]);
    free(row);
    free(back);
}

static void test_fq_pack_round_trips_every_code_in_every_position(void **state)
{
    (void)state;
    const int64_t ks[] = {1, 32, 63, 64, 65, 96, 100, 576, 1536};
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++) {
        int64_t k = ks[a];
        assert_int_equal(fq_pack_row_bytes(k) % 16, 0);
        int8_t *q = malloc((size_t)k);
        assert_non_null(q);
        /* code c at position j of every chunk; the other positions vary with j, c and i */
        for (int j = 0; j < FQ_PACK_CHUNK; j++)
            for (int c = FQ_QMIN; c <= FQ_QMAX; c++) {
                for (int64_t i = 0; i < k; i++)
                    q[i] = (int8_t)(i % FQ_PACK_CHUNK == j
                                        ? c
                                        : (i * 37 + j * 11 + (c + 32) * 5) % 64 - 32);
                check_round_trip(q, k);
            }
        free(q);
    }
}

static void test_fq_pack_row_bytes_are_three_quarters_of_padded_k(void **state)
{
    (void)state;
    assert_int_equal(fq_pack_row_bytes(0), 0);
    assert_int_equal(fq_pack_row_bytes(1), 48);
    assert_int_equal(fq_pack_row_bytes(64), 48);
    assert_int_equal(fq_pack_row_bytes(65), 96);
    assert_int_equal(fq_pack_row_bytes(96), 96);
    assert_int_equal(fq_pack_row_bytes(576), 432);
    assert_int_equal(fq_pack_row_bytes(1536), 1152);
    assert_int_equal(fq_pack_row_bytes(4096), 3072);
    for (int64_t k = 1; k <= 4096; k++)
        assert_int_equal(fq_pack_row_bytes(k) % 16, 0);
}

/* One chunk worked out by hand from the header's formulas (u = q + 32; the other codes are q = 0,
 * u = 32 = 0b10'0000: low nibble 0, high bits 2). */
static void test_fq_pack_layout_matches_the_header_formulas(void **state)
{
    (void)state;
    int8_t q[64] = {0};
    q[0] = -32; /* u =  0 = 0b00'0000 */
    q[1] = 31;  /* u = 63 = 0b11'1111 */
    q[16] = -1; /* u = 31 = 0b01'1111 */
    q[32] = 5;  /* u = 37 = 0b10'0101 */
    q[48] = 20; /* u = 52 = 0b11'0100 */
    uint8_t row[48];
    fq_pack_row(q, 64, row);
    uint8_t want[48];
    memset(want, 0x00, 32);      /* low plane: 0 | 0 << 4 */
    memset(want + 32, 0xAA, 16); /* high plane: 2 | 2 << 2 | 2 << 4 | 2 << 6 */
    want[0] = 0x50;              /* u[0] & 15 = 0, (u[32] & 15) << 4 = 5 << 4 */
    want[1] = 0x0F;              /* u[1] & 15 = 15, u[33] = 32 */
    want[16] = 0x4F;             /* u[16] & 15 = 15, (u[48] & 15) << 4 = 4 << 4 */
    want[32] = 0xE4;             /* 0 | 1 << 2 | 2 << 4 | 3 << 6: u[0], u[16], u[32], u[48] */
    want[33] = 0xAB;             /* 3 | 2 << 2 | 2 << 4 | 2 << 6: u[1], u[17], u[33], u[49] */
    assert_memory_equal(row, want, 48);
}

/* K = 96: the second chunk holds codes 64..95 and 32 padding codes (u = 32). */
static void test_fq_pack_layout_of_a_padded_second_chunk(void **state)
{
    (void)state;
    int8_t q[96] = {0};
    q[64 + 3] = 7;    /* u = 39 = 0b10'0111 */
    q[64 + 19] = -32; /* u = 0 */
    q[64 + 31] = 31;  /* u = 63: chunk position 31, the last real code */
    uint8_t row[96];
    fq_pack_row(q, 96, row);
    uint8_t want[96];
    memset(want, 0x00, 32);
    memset(want + 32, 0xAA, 16);
    memset(want + 48, 0x00, 32);
    memset(want + 80, 0xAA, 16);
    want[48 + 3] = 0x07;  /* u[3] & 15 = 7, padding u[35] = 32 */
    want[48 + 19] = 0x00; /* u[19] = 0, padding u[51] = 32 */
    want[48 + 31] = 0x0F; /* u[31] & 15 = 15, padding u[63] = 32 */
    /* high byte i = 3 covers u[3], u[19], u[35], u[51]: 2 | 0 << 2 | 2 << 4 | 2 << 6 */
    want[48 + 32 + 3] = 0xA2;
    /* high byte i = 15 covers u[15], u[31], u[47], u[63]: 2 | 3 << 2 | 2 << 4 | 2 << 6 */
    want[48 + 32 + 15] = 0xAE;
    assert_memory_equal(row, want, 96);
}

static void test_fq_group_size_picks_the_largest_dividing(void **state)
{
    (void)state;
    assert_int_equal(fq_group_size(576, 0), 64);
    assert_int_equal(fq_group_size(1536, 0), 128);
    assert_int_equal(fq_group_size(4096, 0), 128);
    assert_int_equal(fq_group_size(11008, 0), 128);
    assert_int_equal(fq_group_size(96, 0), 32);
    assert_int_equal(fq_group_size(100, 0), 0);
    assert_int_equal(fq_group_size(16, 0), 0);
    assert_int_equal(fq_group_size(0, 0), 0);
    assert_int_equal(fq_group_size(576, 128), 0);
    assert_int_equal(fq_group_size(576, 64), 64);
    assert_int_equal(fq_group_size(576, 32), 32);
    assert_int_equal(fq_group_size(4096, 32), 32);
    assert_int_equal(fq_group_size(4096, 48), 0);
    assert_int_equal(fq_group_size(4096, 256), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fq_pack_round_trips_every_code_in_every_position),
        cmocka_unit_test(test_fq_pack_row_bytes_are_three_quarters_of_padded_k),
        cmocka_unit_test(test_fq_pack_layout_matches_the_header_formulas),
        cmocka_unit_test(test_fq_pack_layout_of_a_padded_second_chunk),
        cmocka_unit_test(test_fq_group_size_picks_the_largest_dividing),
    };
    return cmocka_run_group_tests_name("fq_pack", tests, NULL, NULL);
}

/* test_rt_tokenizer.c — the byte-level BPE tokenizer on small hand-made specs (no model needed):
 * byte map, merges by rank, pre-tokenizer splits, added tokens, UTF-8 repair, decode, errors. */
#include "fq_base.h"
#include "fq_ckpt.h"
#include "rt_tokenizer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Every test builds its tokenizer into this state; teardown frees it even after a failure. */
typedef struct tok_state {
    rt_tokenizer *tok;
} tok_state;

static int setup(void **state)
{
    *state = calloc(1, sizeof(tok_state));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    tok_state *s = *state;
    rt_tokenizer_destroy(s->tok);
    free(s);
    return 0;
}

/* GPT-2's bytes_to_unicode() as its Python source writes it (a list, not our arithmetic): the
 * printable bytes in order, then the rest mapped to 256, 257, ... in byte order. */
static uint32_t gpt2_byte_cp(int b)
{
    int n = 0;
    for (int x = 0; x < 256; x++) {
        bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        if (x == b)
            return printable ? (uint32_t)x : 256u + (uint32_t)n;
        n += !printable;
    }
    return 0;
}

static char *utf8_of(uint32_t cp)
{
    char *s = calloc(1, 5);
    assert_non_null(s);
    if (cp < 0x80) {
        s[0] = (char)cp;
    } else { /* the byte alphabet stays below U+0800 */
        s[0] = (char)(0xC0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3F));
    }
    return s;
}

/* One token of a test vocabulary beyond the 256 byte tokens. */
typedef struct tok_def {
    const char *text; /* byte-level form for normal tokens ("\xC4\xA0" = Ġ = space) */
    int32_t type;     /* fq_tok_type; 0 = normal */
} tok_def;

/* A spec whose ids 0..255 are the single bytes in byte order, then extra[], with merges[]. */
static fq_tok_spec make_spec(const char *pre, const tok_def *extra, size_t n_extra,
                             const char *const *merges, size_t n_merges)
{
    fq_tok_spec spec;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.model, sizeof spec.model, "gpt2");
    snprintf(spec.pre, sizeof spec.pre, "%s", pre);
    spec.n_tokens = (int32_t)(256 + n_extra);
    spec.tokens = calloc((size_t)spec.n_tokens, sizeof(char *));
    spec.token_types = calloc((size_t)spec.n_tokens, sizeof(int32_t));
    assert_non_null(spec.tokens);
    assert_non_null(spec.token_types);
    for (int b = 0; b < 256; b++) {
        spec.tokens[b] = utf8_of(gpt2_byte_cp(b));
        spec.token_types[b] = FQ_TOK_NORMAL;
    }
    for (size_t i = 0; i < n_extra; i++) {
        spec.tokens[256 + i] = strdup(extra[i].text);
        spec.token_types[256 + i] = extra[i].type ? extra[i].type : FQ_TOK_NORMAL;
    }
    spec.n_merges = (int32_t)n_merges;
    spec.merges = calloc(n_merges ? n_merges : 1, sizeof(char *));
    assert_non_null(spec.merges);
    for (size_t i = 0; i < n_merges; i++)
        spec.merges[i] = strdup(merges[i]);
    spec.bos_id = spec.eos_id = spec.pad_id = -1;
    return spec;
}

/* Builds the tokenizer of make_spec() into the test state. */
static rt_tokenizer *build(void **state, const char *pre, const tok_def *extra, size_t n_extra,
                           const char *const *merges, size_t n_merges)
{
    tok_state *s = *state;
    fq_tok_spec spec = make_spec(pre, extra, n_extra, merges, n_merges);
    char err[256] = "";
    int rc = rt_tokenizer_create(&spec, &s->tok, err, sizeof err);
    fq_tok_spec_free(&spec);
    if (rc != 0)
        fail_msg("rt_tokenizer_create: %s", err);
    return s->tok;
}

/* Encodes text (default params) and compares with the expected ids. */
static void expect_ids(const rt_tokenizer *tok, const char *text, size_t len, const int32_t *want,
                       size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256] = "";
    rt_encode_params p = rt_encode_default_params();
    assert_int_equal(rt_tokenizer_encode(tok, text, len, &p, &ids, &n, err, sizeof err), 0);
    if (n != n_want || (n && memcmp(ids, want, n * sizeof *ids) != 0)) {
        char got[512] = "";
        for (size_t i = 0; i < n && strlen(got) < 480; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), " %d", (int)ids[i]);
        free(ids);
        fail_msg("encode(\"%s\") gave [%s ] (%zu ids, want %zu)", text, got, n, n_want);
    }
    free(ids);
}

#define EXPECT_IDS(tok, text, ...)                                                                 \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        expect_ids(tok, text, strlen(text), want_, sizeof want_ / sizeof want_[0]);                \
    } while (0)

/* Splits text and compares with the expected pieces joined by '|'. */
static void expect_split(const rt_tokenizer *tok, const char *text, bool parse_special,
                         const char *want)
{
    size_t *ends = NULL, n = 0;
    char err[256] = "";
    assert_int_equal(
        rt_tokenizer_split(tok, text, strlen(text), parse_special, &ends, &n, err, sizeof err), 0);
    char got[512] = "";
    size_t start = 0, o = 0;
    for (size_t i = 0; i < n && o + (ends[i] - start) + 2 < sizeof got; i++) {
        if (i)
            got[o++] = '|';
        memcpy(got + o, text + start, ends[i] - start);
        o += ends[i] - start;
        start = ends[i];
    }
    got[o] = '\0';
    free(ends);
    if (strcmp(got, want) != 0)
        fail_msg("split(\"%s\") gave \"%s\", want \"%s\"", text, got, want);
}

static void expect_round_trip(const rt_tokenizer *tok, const char *text)
{
    int32_t *ids = NULL;
    size_t n = 0, len = 0;
    char *back = NULL;
    char err[256] = "";
    assert_int_equal(rt_tokenizer_encode(tok, text, strlen(text), NULL, &ids, &n, err, sizeof err),
                     0);
    assert_int_equal(rt_tokenizer_decode(tok, ids, n, false, &back, &len, err, sizeof err), 0);
    free(ids);
    assert_int_equal(len, strlen(text));
    assert_memory_equal(back, text, len);
    free(back);
}

/* ids of extra tokens in the tests below */
#define X(i) (256 + (i))

static void test_rt_tokenizer_byte_map_round_trip(void **state)
{
    rt_tokenizer *tok = build(state, "gpt2", NULL, 0, NULL, 0);
    int32_t ids[256];
    for (int b = 0; b < 256; b++) {
        char c = 0;
        assert_int_equal(rt_tokenizer_token_bytes(tok, b, &c, 1), 1);
        assert_int_equal((uint8_t)c, b);
        ids[b] = b;
    }
    char *text = NULL;
    size_t len = 0;
    char err[256];
    assert_int_equal(rt_tokenizer_decode(tok, ids, 256, false, &text, &len, err, sizeof err), 0);
    assert_int_equal(len, 256);
    for (int b = 0; b < 256; b++)
        assert_int_equal((uint8_t)text[b], b);
    free(text);
    /* every ASCII byte encodes to its own token; é (C3 A9) to its two bytes */
    for (int b = 1; b < 128; b++) {
        char s[2] = {(char)b, 0};
        EXPECT_IDS(tok, s, b);
    }
    expect_ids(tok, "\0", 1, (const int32_t[]){0}, 1);
    EXPECT_IDS(tok, "\xC3\xA9", 0xC3, 0xA9);
}

static void test_rt_tokenizer_merges_by_rank(void **state)
{
    static const tok_def extra[] = {{"ab", 0}, {"bc", 0}, {"abc", 0}, {"aa", 0}, {"aaaa", 0}};
    static const char *const merges[] = {"b c", "a b", "a bc", "a a", "aa aa"};
    rt_tokenizer *tok = build(state, "gpt2", extra, 5, merges, 5);
    EXPECT_IDS(tok, "abc", X(2)); /* "b c" (rank 0) first, then "a bc" */
    EXPECT_IDS(tok, "ab", X(0));
    EXPECT_IDS(tok, "abab", X(0), X(0));
    EXPECT_IDS(tok, "aaa", X(3), 'a');   /* leftmost pair first at equal rank */
    EXPECT_IDS(tok, "aaaaa", X(4), 'a'); /* aa aa, then aa+aa -> aaaa */
    EXPECT_IDS(tok, "cab", 'c', X(0));
}

static void test_rt_tokenizer_merges_lower_rank_wins(void **state)
{
    /* with "a b" ranked before "b c", "abc" becomes ab + c, and "ab c" is not a merge */
    static const tok_def extra[] = {{"ab", 0}, {"bc", 0}, {"abc", 0}};
    static const char *const merges[] = {"a b", "b c", "a bc"};
    rt_tokenizer *tok = build(state, "gpt2", extra, 3, merges, 3);
    EXPECT_IDS(tok, "abc", X(0), 'c');
    EXPECT_IDS(tok, "bc", X(1));
}

static void test_rt_tokenizer_merges_stay_inside_pieces(void **state)
{
    static const tok_def extra[] = {{"\xC4\xA0"
                                     "b",
                                     0},
                                    {"a\xC4\xA0", 0}};
    static const char *const merges[] = {"a \xC4\xA0", "\xC4\xA0 b"};
    rt_tokenizer *tok = build(state, "gpt2", extra, 2, merges, 2);
    EXPECT_IDS(tok, "a b", 'a', X(0)); /* pieces "a" | " b": "a Ġ" never applies */
    EXPECT_IDS(tok, "a ", 'a', ' ');
}

static void test_rt_tokenizer_ignore_merges(void **state)
{
    tok_state *s = *state;
    static const tok_def extra[] = {{"abc", 0}};
    fq_tok_spec spec = make_spec("llama3", extra, 1, NULL, 0);
    char err[256];
    spec.ignore_merges = true;
    assert_int_equal(rt_tokenizer_create(&spec, &s->tok, err, sizeof err), 0);
    EXPECT_IDS(s->tok, "abc", X(0));
    EXPECT_IDS(s->tok, "abcd", 'a', 'b', 'c', 'd');
    rt_tokenizer_destroy(s->tok);
    spec.ignore_merges = false;
    assert_int_equal(rt_tokenizer_create(&spec, &s->tok, err, sizeof err), 0);
    fq_tok_spec_free(&spec);
    EXPECT_IDS(s->tok, "abc", 'a', 'b', 'c');
}

static void test_rt_tokenizer_gpt2_splits(void **state)
{
    rt_tokenizer *tok = build(state, "gpt2", NULL, 0, NULL, 0);
    expect_split(tok, "Hello world", true, "Hello| world");
    expect_split(tok, "don't", true, "don|'t");
    expect_split(tok, "I'LL", true, "I|'|LL"); /* case-sensitive contractions */
    expect_split(tok, "we've they're I'm it'd", true, "we|'ve| they|'re| I|'m| it|'d");
    expect_split(tok, "'''s", true, "'''|s");
    expect_split(tok, "a   b", true, "a|  | b"); /* \s+(?!\S) leaves one space to the word */
    expect_split(tok, "trailing   ", true, "trailing|   ");
    expect_split(tok, "   leading", true, "  | leading");
    expect_split(tok, "x\n\ny", true, "x|\n|\n|y");
    expect_split(tok, "x \n y", true, "x| \n| y");
    expect_split(tok, "abc123def 42", true, "abc|123|def| 42");
    expect_split(tok, "hello!!! ok ...", true, "hello|!!!| ok| ...");
    expect_split(tok, "3.14", true, "3|.|14");
    expect_split(tok, "\t\tx", true, "\t|\t|x");
    expect_split(tok, "caf\xC3\xA9 na\xC3\xAFve", true, "caf\xC3\xA9| na\xC3\xAFve");
    expect_split(tok, "e\xCC\x81", true, "e|\xCC\x81"); /* a combining mark is not \p{L} */
    expect_split(tok, "\xE6\x97\xA5\xE6\x9C\xAC text", true, "\xE6\x97\xA5\xE6\x9C\xAC| text");
    expect_split(tok,
                 "a\xC2\xA0"
                 "b",
                 true, "a|\xC2\xA0|b"); /* NBSP is \s but not ' ' */
    expect_split(tok, "", true, "");
}

static void test_rt_tokenizer_smollm_splits_digits(void **state)
{
    rt_tokenizer *tok = build(state, "smollm", NULL, 0, NULL, 0);
    expect_split(tok, "abc123", true, "abc|1|2|3");
    expect_split(tok, " 42", true, " |4|2");
    expect_split(tok, "3.14", true, "3|.|1|4");
    expect_split(tok, "x\xC2\xBD", true, "x|\xC2\xBD"); /* ½ is a number */
    expect_split(tok, "a 1 b", true, "a| |1| b");
    expect_split(tok, "end 9  ", true, "end| |9|  ");
    expect_split(tok, "don't 7's", true, "don|'t| |7|'s");
}

static void test_rt_tokenizer_llama3_splits(void **state)
{
    rt_tokenizer *tok = build(state, "llama3", NULL, 0, NULL, 0);
    expect_split(tok, "1234567", true, "123|456|7");
    expect_split(tok, "x 12345", true, "x| |123|45");
    expect_split(tok, "I'LL don'T 'Re", true, "I|'LL| don|'T| '|Re");
    expect_split(tok, "'\xC5\xBF", true, "'\xC5\xBF"); /* (?i) folds U+017F long s to s */
    expect_split(tok, "hello world", true, "hello| world");
    expect_split(tok, "\tfoo (bar", true, "\tfoo| (|bar");
    expect_split(tok, "(bar x", true, "(bar| x"); /* one non-letter may lead a word */
    expect_split(tok, "a\n\nb", true, "a|\n\n|b");
    expect_split(tok, "x  \n  y", true, "x|  \n| | y");
    expect_split(tok, "foo!!\n\nbar", true, "foo|!!\n\n|bar");
    expect_split(tok, "  end  ", true, " | end|  ");
    expect_split(tok, "a\r\nb", true, "a|\r\n|b");
    expect_split(tok, "x ...", true, "x| ...");
}

static void test_rt_tokenizer_gguf_pre_aliases(void **state)
{
    tok_state *s = *state;
    rt_tokenizer *tok = build(state, "llama-bpe", NULL, 0, NULL, 0);
    expect_split(tok, "1234567", true, "123|456|7");
    rt_tokenizer_destroy(s->tok);
    s->tok = NULL;
    tok = build(state, "gpt-2", NULL, 0, NULL, 0);
    expect_split(tok, "1234567", true, "1234567");
}

static void test_rt_tokenizer_special_tokens_in_text(void **state)
{
    static const tok_def extra[] = {
        {"<|im_start|>", FQ_TOK_CONTROL},
        {"<|im_end|>", FQ_TOK_CONTROL},
        {"<|im", FQ_TOK_CONTROL},
        {"<user>", FQ_TOK_USER_DEFINED},
        {"us", 0},
    };
    static const char *const merges[] = {"u s"};
    rt_tokenizer *tok = build(state, "gpt2", extra, 5, merges, 1);
    EXPECT_IDS(tok, "<|im_start|>us", X(0), X(4));
    EXPECT_IDS(tok, "<|im_x", X(2), '_', 'x'); /* the shorter control token */
    EXPECT_IDS(tok, "us<|im_end|><|im_end|>", X(4), X(1), X(1));
    EXPECT_IDS(tok, "<user>us", X(3), X(4));
    expect_split(tok, "x <|im_end|> y", true, "x| |<|im_end|>| y");
    expect_split(tok, "x <|im_end|> y", false, "x| <||im|_|end||>| y");
    /* parse_special = false: control text is plain text, user-defined tokens still match */
    rt_encode_params p = {.add_special = false, .parse_special = false};
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256];
    assert_int_equal(
        rt_tokenizer_encode(tok, "<|im_end|><user>", 16, &p, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 11);
    assert_int_equal(ids[0], '<');
    assert_int_equal(ids[10], X(3));
    free(ids);
    /* decode: control tokens print their text unless skipped; user-defined ones always */
    const int32_t seq[] = {X(0), X(4), X(3), X(1)};
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(rt_tokenizer_decode(tok, seq, 4, false, &text, &len, err, sizeof err), 0);
    assert_string_equal(text, "<|im_start|>us<user><|im_end|>");
    free(text);
    assert_int_equal(rt_tokenizer_decode(tok, seq, 4, true, &text, &len, err, sizeof err), 0);
    assert_string_equal(text, "us<user>");
    free(text);
    assert_true(rt_tokenizer_is_special(tok, X(0)));
    assert_false(rt_tokenizer_is_special(tok, X(3)));
    assert_false(rt_tokenizer_is_special(tok, 'a'));
}

static void test_rt_tokenizer_invalid_utf8_repaired(void **state)
{
    rt_tokenizer *tok = build(state, "gpt2", NULL, 0, NULL, 0);
    /* each maximal invalid subpart becomes U+FFFD = EF BF BD, as Python's errors='replace' */
    EXPECT_IDS(tok, "\xFF", 0xEF, 0xBF, 0xBD);
    EXPECT_IDS(tok, "a\xE2\x82", 'a', 0xEF, 0xBF, 0xBD);
    EXPECT_IDS(tok, "\xE0\x80\x80", 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD);
    EXPECT_IDS(tok, "\xF0\x9F\x98", 0xEF, 0xBF, 0xBD);
    size_t *ends = NULL, n = 0;
    char err[256];
    assert_int_equal(rt_tokenizer_split(tok, "\xFF", 1, true, &ends, &n, err, sizeof err),
                     FQ_EINVAL);
    assert_null(ends);
}

static void test_rt_tokenizer_decode_encode_round_trip(void **state)
{
    static const tok_def extra[] = {{"th", 0}, {"\xC4\xA0th", 0}, {"the", 0}, {"\xC4\xA0the", 0}};
    static const char *const merges[] = {"t h", "\xC4\xA0 th", "th e", "\xC4\xA0th e"};
    static const char *const texts[] = {
        "",
        "the theme of the thing",
        "  two  spaces\tand\ttabs\n\nnew lines \r\n",
        "caf\xC3\xA9 na\xC3\xAFve \xC3\x85ngstr\xC3\xB6m",
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E and \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
        "emoji \xF0\x9F\x98\x80 \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 "
        "\xF0\x9F\x87\xAB\xF0\x9F"
        "\x87\xB7",
        "digits 1234567 3.14 \xD9\xA1\xD9\xA2",
        "I'LL don't 'S",
    };
    rt_tokenizer *tok = build(state, "smollm", extra, 4, merges, 4);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        expect_round_trip(tok, texts[i]);
    EXPECT_IDS(tok, "the them", X(2), X(3), 'm');
}

static void test_rt_tokenizer_decode_out_of_range(void **state)
{
    rt_tokenizer *tok = build(state, "gpt2", NULL, 0, NULL, 0);
    char *text = NULL;
    size_t len = 0;
    char err[256] = "";
    const int32_t bad_hi[] = {'a', 256};
    const int32_t bad_lo[] = {-1};
    assert_int_equal(rt_tokenizer_decode(tok, bad_hi, 2, false, &text, &len, err, sizeof err),
                     FQ_ERANGE);
    assert_null(text);
    assert_non_null(strstr(err, "256"));
    assert_int_equal(rt_tokenizer_decode(tok, bad_lo, 1, false, &text, &len, err, sizeof err),
                     FQ_ERANGE);
    char c;
    assert_int_equal(rt_tokenizer_token_bytes(tok, 256, &c, 1), FQ_ERANGE);
    assert_int_equal(rt_tokenizer_token_bytes(tok, -5, &c, 1), FQ_ERANGE);
    assert_int_equal(rt_tokenizer_token_bytes(tok, 'a', NULL, 0), 1); /* length only */
    assert_int_equal(rt_tokenizer_decode(tok, NULL, 0, false, &text, &len, err, sizeof err), 0);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
}

static void test_rt_tokenizer_bos_eos(void **state)
{
    tok_state *s = *state;
    static const tok_def extra[] = {{"<s>", FQ_TOK_CONTROL}, {"</s>", FQ_TOK_CONTROL}};
    fq_tok_spec spec = make_spec("gpt2", extra, 2, NULL, 0);
    spec.bos_id = X(0);
    spec.eos_id = X(1);
    spec.add_bos = spec.add_eos = true;
    char err[256];
    assert_int_equal(rt_tokenizer_create(&spec, &s->tok, err, sizeof err), 0);
    fq_tok_spec_free(&spec);
    assert_int_equal(rt_tokenizer_bos(s->tok), X(0));
    assert_int_equal(rt_tokenizer_eos(s->tok), X(1));
    assert_int_equal(rt_tokenizer_n_vocab(s->tok), 258);
    EXPECT_IDS(s->tok, "hi", X(0), 'h', 'i', X(1));
    EXPECT_IDS(s->tok, "", X(0), X(1));
    rt_encode_params p = {.add_special = false, .parse_special = true};
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(rt_tokenizer_encode(s->tok, "hi", 2, &p, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    free(ids);
}

static void test_rt_tokenizer_missing_byte_is_dropped(void **state)
{
    tok_state *s = *state;
    fq_tok_spec spec = make_spec("gpt2", NULL, 0, NULL, 0);
    free(spec.tokens['x']);
    spec.tokens['x'] = strdup("<unused>"); /* no token for the byte 'x' any more */
    char err[256];
    assert_int_equal(rt_tokenizer_create(&spec, &s->tok, err, sizeof err), 0);
    fq_tok_spec_free(&spec);
    EXPECT_IDS(s->tok, "axb", 'a', 'b'); /* as HF's BPE without an unk token */
}

static void test_rt_tokenizer_rejects_bad_specs(void **state)
{
    (void)state;
    rt_tokenizer *tok = NULL;
    char err[256] = "";
    fq_tok_spec spec = make_spec("qwen2", NULL, 0, NULL, 0);
    assert_int_equal(rt_tokenizer_create(&spec, &tok, err, sizeof err), FQ_EUNSUP);
    assert_non_null(strstr(err, "qwen2"));
    assert_null(tok);
    snprintf(spec.pre, sizeof spec.pre, "gpt2");
    snprintf(spec.model, sizeof spec.model, "llama");
    assert_int_equal(rt_tokenizer_create(&spec, &tok, err, sizeof err), FQ_EUNSUP);
    fq_tok_spec_free(&spec);
    static const char *const bad_merge[] = {"a zz"};
    spec = make_spec("gpt2", NULL, 0, bad_merge, 1);
    assert_int_equal(rt_tokenizer_create(&spec, &tok, err, sizeof err), FQ_EFORMAT);
    assert_non_null(strstr(err, "a zz"));
    fq_tok_spec_free(&spec);
    static const char *const no_space[] = {"ab"};
    spec = make_spec("gpt2", NULL, 0, no_space, 1);
    assert_int_equal(rt_tokenizer_create(&spec, &tok, err, sizeof err), FQ_EFORMAT);
    fq_tok_spec_free(&spec);
    spec = make_spec("gpt2", NULL, 0, NULL, 0);
    spec.bos_id = 999;
    assert_int_equal(rt_tokenizer_create(&spec, &tok, err, sizeof err), FQ_EFORMAT);
    fq_tok_spec_free(&spec);
    assert_null(tok);
    rt_tokenizer_destroy(NULL);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_rt_tokenizer_byte_map_round_trip),
        T(test_rt_tokenizer_merges_by_rank),
        T(test_rt_tokenizer_merges_lower_rank_wins),
        T(test_rt_tokenizer_merges_stay_inside_pieces),
        T(test_rt_tokenizer_ignore_merges),
        T(test_rt_tokenizer_gpt2_splits),
        T(test_rt_tokenizer_smollm_splits_digits),
        T(test_rt_tokenizer_llama3_splits),
        T(test_rt_tokenizer_gguf_pre_aliases),
        T(test_rt_tokenizer_special_tokens_in_text),
        T(test_rt_tokenizer_invalid_utf8_repaired),
        T(test_rt_tokenizer_decode_encode_round_trip),
        T(test_rt_tokenizer_decode_out_of_range),
        T(test_rt_tokenizer_bos_eos),
        T(test_rt_tokenizer_missing_byte_is_dropped),
        T(test_rt_tokenizer_rejects_bad_specs),
    };
    return cmocka_run_group_tests_name("rt_tokenizer", tests, NULL, NULL);
}

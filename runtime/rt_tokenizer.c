/* rt_tokenizer.c — byte-level BPE encode/decode that gives the same ids as HF `tokenizers`.
 *
 * Encode: repair invalid UTF-8 (rt_unicode.h) → decode to code points with their classes → match
 * added tokens in the raw text (control tokens first, then user-defined ones in what is left, each
 * pass leftmost-longest, as HF's AddedVocabulary does with its non-normalized and normalized tries)
 * → split the rest with the pre-tokenizer (hand-written matchers equivalent to the HF regexes) →
 * BPE on each piece's bytes with the merge ranks (a min-heap on (rank, position), step for step the
 * loop of HF's `Word::merge_all`). Token texts in the spec are in GPT-2's byte-level alphabet for
 * normal tokens and raw UTF-8 for control / user-defined tokens (as GGUF stores them); the vocab
 * map is keyed by the spec's text, like HF's BPE vocab.
 */
#include "rt_tokenizer.h"

#include "fq_base.h"
#include "rt_unicode.h"

#include <stdlib.h>
#include <string.h>

typedef enum { RT_PRE_GPT2, RT_PRE_SMOLLM, RT_PRE_LLAMA3 } rt_pre_kind;

/* Open-addressing map from a token's spec text to its id (slots hold ids, -1 = empty). */
typedef struct rt_vocab_map {
    int32_t *slots; /* [cap] */
    size_t cap;     /* power of two */
} rt_vocab_map;

/* Open-addressing map from a token pair to its merge. */
typedef struct rt_merge_slot {
    uint64_t key; /* left << 32 | right; RT_EMPTY_KEY when free */
    int32_t rank;
    int32_t new_id;
} rt_merge_slot;

typedef struct rt_merge_map {
    rt_merge_slot *slots; /* [cap] */
    size_t cap;           /* power of two */
} rt_merge_map;

#define RT_EMPTY_KEY UINT64_MAX

/* Added tokens of one kind, grouped by first byte and longest first within a group. */
typedef struct rt_added_set {
    int32_t *ids; /* [n] */
    size_t n;
    size_t start[257]; /* ids[start[b] .. start[b+1]) begin with byte b */
} rt_added_set;

struct rt_tokenizer {
    int32_t n_vocab;
    rt_pre_kind pre;
    bool ignore_merges;
    bool add_bos, add_eos;
    int32_t bos_id, eos_id;
    uint8_t *types;   /* [n_vocab] fq_tok_type */
    char *text;       /* spec texts, concatenated */
    size_t *text_off; /* [n_vocab + 1] token i is text[text_off[i] .. text_off[i+1]) */
    char *raw;        /* raw bytes of each token (byte-level mapping undone), concatenated */
    size_t *raw_off;  /* [n_vocab + 1] */
    rt_vocab_map vocab;
    rt_merge_map merges;
    int32_t byte_id[256]; /* id of the one-byte token of each byte, -1 when missing */
    rt_added_set control; /* FQ_TOK_CONTROL tokens */
    rt_added_set user;    /* FQ_TOK_USER_DEFINED tokens */
};

/* ---------------------------------------------------------------------------------------------
 * GPT-2's byte ↔ unicode map: printable bytes stand for themselves, the other 68 bytes (0x00-0x20,
 * 0x7F-0xA0, 0xAD) become U+0100.. in byte order.
 * ------------------------------------------------------------------------------------------- */

static uint32_t byte_to_cp(uint8_t b)
{
    if (b <= 0x20)
        return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0)
        return 0x121u + (b - 0x7Fu);
    if (b == 0xAD)
        return 0x143u;
    return b;
}

/* The byte a code point of the alphabet stands for, or -1. */
static int cp_to_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xFF && cp != 0xAD))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x120)
        return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142)
        return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143)
        return 0xAD;
    return -1;
}

/* Undoes the byte-level mapping of text[0..len) into out (at least len bytes); returns the byte
 * count, or -1 when a character is outside the alphabet (HF's decoder then keeps the text as is).
 */
static long unmap_bytes(const char *text, size_t len, char *out)
{
    const uint8_t *u = (const uint8_t *)text;
    size_t i = 0, o = 0;
    while (i < len) {
        uint32_t cp;
        int n = rt_utf8_decode(u + i, len - i, &cp);
        int b = n > 0 ? cp_to_byte(cp) : -1;
        if (b < 0)
            return -1;
        out[o++] = (char)b;
        i += (size_t)n;
    }
    return (long)o;
}

/* Writes the byte-level form of bytes[0..len) into out (2 * len bytes); returns its length. */
static size_t map_bytes(const uint8_t *bytes, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++)
        o += rt_utf8_encode(byte_to_cp(bytes[i]), out + o);
    return o;
}

/* ---------------------------------------------------------------------------------------------
 * Hash maps
 * ------------------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key ^= key >> 31;
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 29);
}

static size_t table_cap(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

static int32_t vocab_find(const rt_tokenizer *tok, const char *s, size_t len)
{
    size_t mask = tok->vocab.cap - 1;
    for (size_t i = hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = tok->vocab.slots[i];
        if (id < 0)
            return -1;
        size_t off = tok->text_off[id], n = tok->text_off[id + 1] - off;
        if (n == len && memcmp(tok->text + off, s, len) == 0)
            return id;
    }
}

/* Builds the vocab map; a text that occurs twice maps to its last id (like a Python dict). */
static int vocab_build(rt_tokenizer *tok)
{
    tok->vocab.cap = table_cap((size_t)tok->n_vocab);
    tok->vocab.slots = fq_malloc_array(tok->vocab.cap, sizeof(int32_t));
    if (!tok->vocab.slots)
        return FQ_ENOMEM;
    memset(tok->vocab.slots, 0xFF, tok->vocab.cap * sizeof(int32_t));
    size_t mask = tok->vocab.cap - 1;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        const char *s = tok->text + tok->text_off[id];
        size_t len = tok->text_off[id + 1] - tok->text_off[id];
        size_t i = hash_bytes(s, len) & mask;
        for (;; i = (i + 1) & mask) {
            int32_t other = tok->vocab.slots[i];
            if (other < 0)
                break;
            size_t n = tok->text_off[other + 1] - tok->text_off[other];
            if (n == len && memcmp(tok->text + tok->text_off[other], s, len) == 0)
                break;
        }
        tok->vocab.slots[i] = id;
    }
    return 0;
}

static const rt_merge_slot *merge_find(const rt_merge_map *m, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = m->cap - 1;
    for (size_t i = hash_pair(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == key)
            return &m->slots[i];
        if (m->slots[i].key == RT_EMPTY_KEY)
            return NULL;
    }
}

/* Inserts or overwrites: a pair listed twice keeps its last rank, as HF's merge HashMap does. */
static void merge_put(rt_merge_map *m, int32_t left, int32_t right, int32_t rank, int32_t new_id)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = m->cap - 1;
    size_t i = hash_pair(key) & mask;
    while (m->slots[i].key != RT_EMPTY_KEY && m->slots[i].key != key)
        i = (i + 1) & mask;
    m->slots[i] = (rt_merge_slot){key, rank, new_id};
}

static int merges_build(rt_tokenizer *tok, const fq_tok_spec *spec, char *err, size_t err_len)
{
    tok->merges.cap = table_cap((size_t)spec->n_merges);
    tok->merges.slots = fq_malloc_array(tok->merges.cap, sizeof(rt_merge_slot));
    if (!tok->merges.slots)
        return fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory for the merges");
    for (size_t i = 0; i < tok->merges.cap; i++)
        tok->merges.slots[i].key = RT_EMPTY_KEY;
    for (int32_t r = 0; r < spec->n_merges; r++) {
        const char *m = spec->merges[r];
        const char *sp = m ? strchr(m, ' ') : NULL;
        if (!sp || strchr(sp + 1, ' '))
            return fq_err(err, err_len, FQ_EFORMAT, "tokenizer: merge %d is not \"left right\"",
                          (int)r);
        size_t nl = (size_t)(sp - m), nr = strlen(sp + 1);
        int32_t left = vocab_find(tok, m, nl), right = vocab_find(tok, sp + 1, nr);
        char *joined = malloc(nl + nr + 1);
        if (!joined)
            return fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory");
        memcpy(joined, m, nl);
        memcpy(joined + nl, sp + 1, nr);
        int32_t id = vocab_find(tok, joined, nl + nr);
        free(joined);
        if (left < 0 || right < 0 || id < 0)
            return fq_err(err, err_len, FQ_EFORMAT,
                          "tokenizer: merge %d \"%s\" names a token missing from the vocabulary",
                          (int)r, m);
        merge_put(&tok->merges, left, right, r, id);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Building the tokenizer
 * ------------------------------------------------------------------------------------------- */

/* The spec's pre-tokenizer name, with the aliases llama.cpp writes into GGUF files. */
static int parse_pre(const char *pre, rt_pre_kind *out)
{
    static const struct {
        const char *name;
        rt_pre_kind kind;
    } names[] = {
        {"gpt2", RT_PRE_GPT2},     {"gpt-2", RT_PRE_GPT2},      {"smollm", RT_PRE_SMOLLM},
        {"llama3", RT_PRE_LLAMA3}, {"llama-v3", RT_PRE_LLAMA3}, {"llama-bpe", RT_PRE_LLAMA3},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(pre, names[i].name) == 0) {
            *out = names[i].kind;
            return 0;
        }
    }
    return FQ_EUNSUP;
}

static bool is_added(uint8_t type)
{
    return type == FQ_TOK_CONTROL || type == FQ_TOK_USER_DEFINED;
}

/* Copies the spec's texts and types and computes each token's raw bytes. */
static int texts_build(rt_tokenizer *tok, const fq_tok_spec *spec, char *err, size_t err_len)
{
    size_t n = (size_t)tok->n_vocab, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!spec->tokens[i])
            return fq_err(err, err_len, FQ_EFORMAT, "tokenizer: token %zu has no text", i);
        total += strlen(spec->tokens[i]);
    }
    tok->types = malloc(n);
    tok->text = malloc(total + 1);
    tok->raw = malloc(total + 1);
    tok->text_off = fq_malloc_array(n + 1, sizeof(size_t));
    tok->raw_off = fq_malloc_array(n + 1, sizeof(size_t));
    if (!tok->types || !tok->text || !tok->raw || !tok->text_off || !tok->raw_off)
        return fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory for %zu tokens", n);
    size_t t = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t type = spec->token_types ? spec->token_types[i] : FQ_TOK_NORMAL;
        tok->types[i] =
            (uint8_t)(type >= FQ_TOK_NORMAL && type <= FQ_TOK_BYTE ? type : FQ_TOK_NORMAL);
        size_t len = strlen(spec->tokens[i]);
        memcpy(tok->text + t, spec->tokens[i], len);
        tok->text_off[i] = t;
        tok->raw_off[i] = r;
        long m = is_added(tok->types[i]) ? -1 : unmap_bytes(spec->tokens[i], len, tok->raw + r);
        if (m < 0) {
            memcpy(tok->raw + r, spec->tokens[i], len);
            m = (long)len;
        }
        t += len;
        r += (size_t)m;
    }
    tok->text_off[n] = t;
    tok->raw_off[n] = r;
    return 0;
}

static void byte_ids_build(rt_tokenizer *tok)
{
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t len = rt_utf8_encode(byte_to_cp((uint8_t)b), s);
        tok->byte_id[b] = vocab_find(tok, s, len);
    }
}

static size_t raw_len(const rt_tokenizer *tok, int32_t id)
{
    return tok->raw_off[id + 1] - tok->raw_off[id];
}

/* Sorts an added set by first byte, then longest first, then by id. An insertion sort: qsort would
 * need the tokenizer in a global, and the sets are small. */
static void added_sort(const rt_tokenizer *tok, int32_t *ids, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        int32_t v = ids[i];
        size_t j = i;
        while (j > 0) {
            int32_t u = ids[j - 1];
            uint8_t fu = (uint8_t)tok->raw[tok->raw_off[u]],
                    fv = (uint8_t)tok->raw[tok->raw_off[v]];
            size_t lu = raw_len(tok, u), lv = raw_len(tok, v);
            bool after = fu > fv || (fu == fv && (lu < lv || (lu == lv && u > v)));
            if (!after)
                break;
            ids[j] = u;
            j--;
        }
        ids[j] = v;
    }
}

static int added_build(const rt_tokenizer *tok, rt_added_set *set, uint8_t type)
{
    size_t n = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        n += tok->types[id] == type && raw_len(tok, id) > 0;
    set->n = n;
    set->ids = fq_malloc_array(n ? n : 1, sizeof(int32_t));
    if (!set->ids)
        return FQ_ENOMEM;
    n = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->types[id] == type && raw_len(tok, id) > 0)
            set->ids[n++] = id;
    added_sort(tok, set->ids, n);
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && (uint8_t)tok->raw[tok->raw_off[set->ids[k]]] < b)
            k++;
        set->start[b] = k;
    }
    return 0;
}

static int check_spec(const fq_tok_spec *spec, rt_pre_kind *pre, char *err, size_t err_len)
{
    if (strcmp(spec->model, "gpt2") != 0)
        return fq_err(err, err_len, FQ_EUNSUP,
                      "tokenizer: model \"%s\" is not supported (only byte-level BPE, \"gpt2\")",
                      spec->model);
    if (parse_pre(spec->pre, pre) != 0)
        return fq_err(err, err_len, FQ_EUNSUP,
                      "tokenizer: pre-tokenizer \"%s\" is not supported (gpt2, smollm, llama3)",
                      spec->pre);
    if (spec->n_tokens <= 0 || !spec->tokens)
        return fq_err(err, err_len, FQ_EFORMAT, "tokenizer: empty vocabulary");
    if (spec->n_merges < 0 || (spec->n_merges > 0 && !spec->merges))
        return fq_err(err, err_len, FQ_EFORMAT, "tokenizer: bad merge list");
    if (spec->bos_id < -1 || spec->bos_id >= spec->n_tokens || spec->eos_id < -1 ||
        spec->eos_id >= spec->n_tokens)
        return fq_err(err, err_len, FQ_EFORMAT, "tokenizer: BOS %d or EOS %d outside the %d tokens",
                      (int)spec->bos_id, (int)spec->eos_id, (int)spec->n_tokens);
    return 0;
}

int rt_tokenizer_create(const fq_tok_spec *spec, rt_tokenizer **out, char *err, size_t err_len)
{
    *out = NULL;
    rt_pre_kind pre = RT_PRE_GPT2;
    int rc = check_spec(spec, &pre, err, err_len);
    if (rc != 0)
        return rc;
    rt_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory");
    tok->n_vocab = spec->n_tokens;
    tok->pre = pre;
    tok->ignore_merges = spec->ignore_merges;
    tok->add_bos = spec->add_bos && spec->bos_id >= 0;
    tok->add_eos = spec->add_eos && spec->eos_id >= 0;
    tok->bos_id = spec->bos_id;
    tok->eos_id = spec->eos_id;
    rc = texts_build(tok, spec, err, err_len);
    if (rc == 0 && vocab_build(tok) != 0)
        rc = fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory for the vocabulary");
    if (rc == 0)
        rc = merges_build(tok, spec, err, err_len);
    if (rc == 0 && (added_build(tok, &tok->control, FQ_TOK_CONTROL) != 0 ||
                    added_build(tok, &tok->user, FQ_TOK_USER_DEFINED) != 0))
        rc = fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory");
    if (rc != 0) {
        rt_tokenizer_destroy(tok);
        return rc;
    }
    byte_ids_build(tok);
    *out = tok;
    return 0;
}

void rt_tokenizer_destroy(rt_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->types);
    free(tok->text);
    free(tok->text_off);
    free(tok->raw);
    free(tok->raw_off);
    free(tok->vocab.slots);
    free(tok->merges.slots);
    free(tok->control.ids);
    free(tok->user.ids);
    free(tok);
}

rt_encode_params rt_encode_default_params(void)
{
    return (rt_encode_params){.add_special = true, .parse_special = true};
}

int32_t rt_tokenizer_n_vocab(const rt_tokenizer *tok)
{
    return tok->n_vocab;
}

int32_t rt_tokenizer_bos(const rt_tokenizer *tok)
{
    return tok->bos_id;
}

int32_t rt_tokenizer_eos(const rt_tokenizer *tok)
{
    return tok->eos_id;
}

bool rt_tokenizer_is_special(const rt_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab && tok->types[id] == FQ_TOK_CONTROL;
}

/* ---------------------------------------------------------------------------------------------
 * Encoding state
 * ------------------------------------------------------------------------------------------- */

/* The text being encoded, as code points with their classes and byte offsets. */
typedef struct rt_text {
    const char *bytes; /* valid UTF-8 (repaired when the input was not) */
    size_t n;          /* code points */
    uint32_t *cp;      /* [n] */
    uint8_t *cls;      /* [n] rt_uni_class */
    size_t *off;       /* [n + 1] byte offset of each code point; off[n] = byte length */
} rt_text;

/* One BPE symbol of the word being merged (HF's Symbol). */
typedef struct rt_symbol {
    int32_t id;
    int32_t prev, next; /* neighbours' indices, -1 at the ends */
    bool gone;          /* merged into its left neighbour */
} rt_symbol;

/* A candidate merge in the heap (HF's Merge): the pair at pos and its right neighbour. */
typedef struct rt_candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
} rt_candidate;

typedef struct rt_encoder {
    const rt_tokenizer *tok;
    rt_text text;
    bool parse_special;
    bool split_only; /* record piece ends instead of encoding (rt_tokenizer_split) */
    int32_t *ids;    /* [n_ids] output ids */
    size_t n_ids, cap_ids;
    size_t *ends; /* [n_ends] piece end offsets in split mode */
    size_t n_ends, cap_ends;
    rt_symbol *sym; /* [cap_sym] scratch for one piece */
    size_t cap_sym;
    rt_candidate *heap; /* [cap_heap] scratch for one piece */
    size_t n_heap, cap_heap;
    char *mapped; /* [cap_mapped] the byte-level form of one piece (ignore_merges) */
    size_t cap_mapped;
} rt_encoder;

/* Grows *buf (of *cap elements of size bytes) to hold at least need elements. On failure *buf is
 * unchanged and still owned by the caller. */
static int grow(void **buf, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    if (cap2 > SIZE_MAX / size)
        return FQ_ENOMEM;
    void *p = realloc(*buf, cap2 * size);
    if (!p)
        return FQ_ENOMEM;
    *buf = p;
    *cap = cap2;
    return 0;
}

static int push_id(rt_encoder *enc, int32_t id)
{
    if (grow((void **)&enc->ids, &enc->cap_ids, enc->n_ids + 1, sizeof(int32_t)) != 0)
        return FQ_ENOMEM;
    enc->ids[enc->n_ids++] = id;
    return 0;
}

static int push_end(rt_encoder *enc, size_t end)
{
    if (grow((void **)&enc->ends, &enc->cap_ends, enc->n_ends + 1, sizeof(size_t)) != 0)
        return FQ_ENOMEM;
    enc->ends[enc->n_ends++] = end;
    return 0;
}

static void encoder_free(rt_encoder *enc)
{
    free(enc->text.cp);
    free(enc->text.cls);
    free(enc->text.off);
    free(enc->ids);
    free(enc->ends);
    free(enc->sym);
    free(enc->heap);
    free(enc->mapped);
}

/* Decodes valid UTF-8 bytes[0..len) into enc->text. */
static int text_decode(rt_text *t, const char *bytes, size_t len)
{
    t->bytes = bytes;
    t->cp = fq_malloc_array(len + 1, sizeof(uint32_t));
    t->cls = malloc(len + 1);
    t->off = fq_malloc_array(len + 1, sizeof(size_t));
    if (!t->cp || !t->cls || !t->off)
        return FQ_ENOMEM;
    const uint8_t *u = (const uint8_t *)bytes;
    size_t n = 0, i = 0;
    while (i < len) {
        uint32_t cp;
        int k = rt_utf8_decode(u + i, len - i, &cp);
        FQ_ASSERT(k > 0); /* the caller repaired the text */
        t->cp[n] = cp;
        t->cls[n] = (uint8_t)rt_uni_classify(cp);
        t->off[n] = i;
        n++;
        i += (size_t)k;
    }
    t->off[n] = len;
    t->n = n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Pre-tokenizers. Each matcher returns the end (exclusive, in code points) of the piece that the
 * HF regex would match at i within [i, end); i < end. Classes: L = letter, N = number,
 * S = white space (\s), O = anything else ([^\s\p{L}\p{N}]).
 * ------------------------------------------------------------------------------------------- */

static size_t run_end(const rt_text *t, size_t i, size_t end, uint8_t cls)
{
    while (i < end && t->cls[i] == cls)
        i++;
    return i;
}

/* Case folding as Oniguruma's (?i) applies it to the contraction letters: ASCII, and U+017F
 * LATIN SMALL LETTER LONG S, which folds to 's'. */
static uint32_t fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    return c == 0x17F ? 's' : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d at i (case-insensitive when ci): the match length, or 0. */
static size_t contraction_len(const rt_text *t, size_t i, size_t end, bool ci)
{
    if (t->cp[i] != '\'' || i + 1 >= end)
        return 0;
    uint32_t a = ci ? fold(t->cp[i + 1]) : t->cp[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (i + 2 >= end)
        return 0;
    uint32_t b = ci ? fold(t->cp[i + 2]) : t->cp[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* The white-space alternatives shared by both regexes: \s+(?!\S)|\s+ at i (class S). */
static size_t match_space_run(const rt_text *t, size_t i, size_t end)
{
    size_t k = run_end(t, i, end, RT_UNI_SPACE);
    if (k == end || k - 1 == i)
        return k;
    return k - 1; /* leave the last space to prefix the next word */
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const rt_text *t, size_t i, size_t end)
{
    size_t n = contraction_len(t, i, end, false);
    if (n)
        return i + n;
    uint8_t c = t->cls[i];
    if (t->cp[i] == ' ' && i + 1 < end && t->cls[i + 1] != RT_UNI_SPACE)
        return run_end(t, i + 1, end, t->cls[i + 1]);
    if (c != RT_UNI_SPACE)
        return run_end(t, i, end, c);
    return match_space_run(t, i, end);
}

static bool is_crlf(uint32_t c)
{
    return c == '\r' || c == '\n';
}

/* Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const rt_text *t, size_t i, size_t end)
{
    size_t n = contraction_len(t, i, end, true);
    if (n)
        return i + n;
    uint8_t c = t->cls[i];
    if (c == RT_UNI_LETTER)
        return run_end(t, i, end, RT_UNI_LETTER);
    if (c != RT_UNI_NUMBER && !is_crlf(t->cp[i]) && i + 1 < end && t->cls[i + 1] == RT_UNI_LETTER)
        return run_end(t, i + 1, end, RT_UNI_LETTER);
    if (c == RT_UNI_NUMBER) {
        size_t k = i;
        while (k < end && k - i < 3 && t->cls[k] == RT_UNI_NUMBER)
            k++;
        return k;
    }
    size_t j = t->cp[i] == ' ' && i + 1 < end && t->cls[i + 1] == RT_UNI_OTHER ? i + 1 : i;
    if (t->cls[j] == RT_UNI_OTHER) {
        size_t k = run_end(t, j, end, RT_UNI_OTHER);
        while (k < end && is_crlf(t->cp[k]))
            k++;
        return k;
    }
    /* \s*[\r\n]+ : up to the last CR/LF of the white-space run, if it has one. */
    size_t k = run_end(t, i, end, RT_UNI_SPACE);
    for (size_t p = k; p > i; p--)
        if (is_crlf(t->cp[p - 1]))
            return p;
    return match_space_run(t, i, end);
}

/* SmolLM's Digits(individual_digits) step splits off every char Rust's is_numeric accepts. */
static bool is_digit_split(const rt_text *t, size_t i)
{
    if (t->cls[i] == RT_UNI_NUMBER)
        return true;
    return t->cls[i] == RT_UNI_OTHER && t->cp[i] >= 0x80 && rt_uni_is_numeric_rust(t->cp[i]);
}

/* ---------------------------------------------------------------------------------------------
 * BPE on one piece
 * ------------------------------------------------------------------------------------------- */

static bool cand_less(const rt_candidate *a, const rt_candidate *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(rt_encoder *enc, int32_t left_pos, int32_t left, int32_t right)
{
    const rt_merge_slot *m = merge_find(&enc->tok->merges, left, right);
    if (!m)
        return 0;
    if (grow((void **)&enc->heap, &enc->cap_heap, enc->n_heap + 1, sizeof(rt_candidate)) != 0)
        return FQ_ENOMEM;
    rt_candidate *h = enc->heap;
    size_t i = enc->n_heap++;
    h[i] = (rt_candidate){m->rank, left_pos, m->new_id};
    while (i > 0 && cand_less(&h[i], &h[(i - 1) / 2])) {
        rt_candidate tmp = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
    return 0;
}

static rt_candidate heap_pop(rt_encoder *enc)
{
    rt_candidate *h = enc->heap;
    rt_candidate top = h[0];
    h[0] = h[--enc->n_heap];
    size_t i = 0, n = enc->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_less(&h[l], &h[m]))
            m = l;
        if (r < n && cand_less(&h[r], &h[m]))
            m = r;
        if (m == i)
            break;
        rt_candidate tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
    return top;
}

/* One merge step of HF's Word::merge_all: skips stale candidates, merges, queues new pairs. */
static int merge_step(rt_encoder *enc, rt_candidate top)
{
    rt_symbol *s = enc->sym;
    rt_symbol *cur = &s[top.pos];
    if (cur->gone || cur->next < 0)
        return 0;
    rt_symbol *right = &s[cur->next];
    const rt_merge_slot *m = merge_find(&enc->tok->merges, cur->id, right->id);
    if (!m || m->new_id != top.new_id)
        return 0;
    cur->id = top.new_id;
    cur->next = right->next;
    right->gone = true;
    if (cur->next >= 0)
        s[cur->next].prev = top.pos;
    int rc = 0;
    if (cur->prev >= 0)
        rc = heap_push(enc, cur->prev, s[cur->prev].id, cur->id);
    if (rc == 0 && cur->next >= 0)
        rc = heap_push(enc, top.pos, cur->id, s[cur->next].id);
    return rc;
}

/* With ignore_merges, a piece that is a whole vocab entry is taken as is: 1 when it was. */
static int try_whole_piece(rt_encoder *enc, const uint8_t *bytes, size_t len)
{
    if (grow((void **)&enc->mapped, &enc->cap_mapped, 2 * len, 1) != 0)
        return FQ_ENOMEM;
    size_t n = map_bytes(bytes, len, enc->mapped);
    int32_t id = vocab_find(enc->tok, enc->mapped, n);
    if (id < 0)
        return 0;
    return push_id(enc, id) == 0 ? 1 : FQ_ENOMEM;
}

static int bpe_piece(rt_encoder *enc, const uint8_t *bytes, size_t len)
{
    const rt_tokenizer *tok = enc->tok;
    if (tok->ignore_merges) {
        int rc = try_whole_piece(enc, bytes, len);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    if (grow((void **)&enc->sym, &enc->cap_sym, len, sizeof(rt_symbol)) != 0)
        return FQ_ENOMEM;
    int32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = tok->byte_id[bytes[i]];
        if (id < 0)
            continue; /* no unk token: HF drops a character missing from the vocab */
        enc->sym[n] = (rt_symbol){id, n - 1, -1, false};
        if (n > 0)
            enc->sym[n - 1].next = n;
        n++;
    }
    enc->n_heap = 0;
    int rc = 0;
    for (int32_t i = 0; rc == 0 && i + 1 < n; i++)
        rc = heap_push(enc, i, enc->sym[i].id, enc->sym[i + 1].id);
    while (rc == 0 && enc->n_heap > 0)
        rc = merge_step(enc, heap_pop(enc));
    for (int32_t i = 0; rc == 0 && i < n; i++)
        if (!enc->sym[i].gone)
            rc = push_id(enc, enc->sym[i].id);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Splitting: added tokens, then the pre-tokenizer, then BPE
 * ------------------------------------------------------------------------------------------- */

/* Code points [i, j) form one piece. */
static int emit_piece(rt_encoder *enc, size_t i, size_t j)
{
    const rt_text *t = &enc->text;
    if (enc->split_only)
        return push_end(enc, t->off[j]);
    return bpe_piece(enc, (const uint8_t *)t->bytes + t->off[i], t->off[j] - t->off[i]);
}

static int pretokenize(rt_encoder *enc, size_t i, size_t end)
{
    const rt_text *t = &enc->text;
    int rc = 0;
    while (rc == 0 && i < end) {
        if (enc->tok->pre == RT_PRE_LLAMA3) {
            size_t j = match_llama3(t, i, end);
            rc = emit_piece(enc, i, j);
            i = j;
            continue;
        }
        /* smollm: every digit is a piece of its own; the gpt2 regex runs between digits. */
        size_t seg_end = end;
        if (enc->tok->pre == RT_PRE_SMOLLM)
            for (seg_end = i; seg_end < end && !is_digit_split(t, seg_end); seg_end++)
                ;
        while (rc == 0 && i < seg_end) {
            size_t j = match_gpt2(t, i, seg_end);
            rc = emit_piece(enc, i, j);
            i = j;
        }
        if (rc == 0 && i < end) { /* i is a digit (smollm only) */
            rc = emit_piece(enc, i, i + 1);
            i++;
        }
    }
    return rc;
}

/* The longest token of set whose text starts at code point i (within [i, end)): its id, with *j
 * set to the code point after it; -1 when none. */
static int32_t match_added(const rt_encoder *enc, const rt_added_set *set, size_t i, size_t end,
                           size_t *j)
{
    const rt_tokenizer *tok = enc->tok;
    const rt_text *t = &enc->text;
    size_t pos = t->off[i], limit = t->off[end];
    uint8_t b = (uint8_t)t->bytes[pos];
    for (size_t k = set->start[b]; k < set->start[b + 1]; k++) {
        int32_t id = set->ids[k];
        size_t len = raw_len(tok, id);
        if (len > limit - pos || memcmp(t->bytes + pos, tok->raw + tok->raw_off[id], len) != 0)
            continue;
        size_t e = i + 1;
        while (e < end && t->off[e] < pos + len)
            e++;
        if (t->off[e] != pos + len)
            continue; /* ends inside a character: not a match on the decoded text */
        *j = e;
        return id;
    }
    return -1;
}

/* Encodes code points [i, end): level 0 matches control tokens, level 1 user-defined tokens, then
 * the gaps go to the pre-tokenizer. */
static int encode_span(rt_encoder *enc, size_t i, size_t end, int level)
{
    const rt_added_set *set = level == 0 ? &enc->tok->control : &enc->tok->user;
    if (level == 2 || set->n == 0 || (level == 0 && !enc->parse_special))
        return level == 2 ? pretokenize(enc, i, end) : encode_span(enc, i, end, level + 1);
    size_t gap = i;
    int rc = 0;
    while (rc == 0 && i < end) {
        size_t j;
        int32_t id = match_added(enc, set, i, end, &j);
        if (id < 0) {
            i++;
            continue;
        }
        rc = encode_span(enc, gap, i, level + 1);
        if (rc == 0)
            rc = enc->split_only ? push_end(enc, enc->text.off[j]) : push_id(enc, id);
        i = gap = j;
    }
    return rc == 0 ? encode_span(enc, gap, end, level + 1) : rc;
}

/* Runs the encoder over text; the repaired copy (if any) is freed before returning. */
static int encoder_run(rt_encoder *enc, const char *text, size_t len, char *err, size_t err_len)
{
    char *fixed = NULL;
    if (!rt_utf8_valid(text, len)) {
        size_t fixed_len;
        if (rt_utf8_repair(text, len, &fixed, &fixed_len) != 0)
            return fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory");
        text = fixed;
        len = fixed_len;
    }
    int rc = text_decode(&enc->text, text, len);
    if (rc == 0)
        rc = encode_span(enc, 0, enc->text.n, 0);
    free(fixed);
    enc->text.bytes = NULL;
    if (rc != 0)
        return fq_err(err, err_len, rc, "tokenizer: out of memory while encoding %zu bytes", len);
    return 0;
}

int rt_tokenizer_encode(const rt_tokenizer *tok, const char *text, size_t len,
                        const rt_encode_params *params, int32_t **ids, size_t *n_ids, char *err,
                        size_t err_len)
{
    *ids = NULL;
    *n_ids = 0;
    rt_encode_params p = params ? *params : rt_encode_default_params();
    rt_encoder enc = {.tok = tok, .parse_special = p.parse_special};
    int rc = 0;
    if (p.add_special && tok->add_bos)
        rc = push_id(&enc, tok->bos_id);
    if (rc == 0)
        rc = encoder_run(&enc, text, len, err, err_len);
    else
        fq_err(err, err_len, rc, "tokenizer: out of memory");
    if (rc == 0 && p.add_special && tok->add_eos && (rc = push_id(&enc, tok->eos_id)) != 0)
        fq_err(err, err_len, rc, "tokenizer: out of memory");
    if (rc == 0) {
        *ids = enc.ids;
        *n_ids = enc.n_ids;
        enc.ids = NULL;
    }
    encoder_free(&enc);
    return rc;
}

int rt_tokenizer_split(const rt_tokenizer *tok, const char *text, size_t len, bool parse_special,
                       size_t **ends, size_t *n_ends, char *err, size_t err_len)
{
    *ends = NULL;
    *n_ends = 0;
    if (!rt_utf8_valid(text, len))
        return fq_err(err, err_len, FQ_EINVAL, "tokenizer: split needs valid UTF-8");
    rt_encoder enc = {.tok = tok, .parse_special = parse_special, .split_only = true};
    int rc = encoder_run(&enc, text, len, err, err_len);
    if (rc == 0) {
        *ends = enc.ends;
        *n_ends = enc.n_ends;
        enc.ends = NULL;
    }
    encoder_free(&enc);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------------------------- */

int rt_tokenizer_token_bytes(const rt_tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    if (id < 0 || id >= tok->n_vocab)
        return FQ_ERANGE;
    size_t len = raw_len(tok, id);
    if (len > INT32_MAX)
        return FQ_ERANGE;
    if (cap > 0)
        memcpy(buf, tok->raw + tok->raw_off[id], len < cap ? len : cap);
    return (int)len;
}

int rt_tokenizer_decode(const rt_tokenizer *tok, const int32_t *ids, size_t n_ids,
                        bool skip_special, char **text, size_t *len, char *err, size_t err_len)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return fq_err(err, err_len, FQ_ERANGE,
                          "tokenizer: id %d at position %zu is outside "
                          "the vocabulary (0..%d)",
                          (int)ids[i], i, (int)tok->n_vocab - 1);
        if (!(skip_special && tok->types[ids[i]] == FQ_TOK_CONTROL))
            total += raw_len(tok, ids[i]);
    }
    char *out = malloc(total + 1);
    if (!out)
        return fq_err(err, err_len, FQ_ENOMEM, "tokenizer: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (skip_special && tok->types[ids[i]] == FQ_TOK_CONTROL)
            continue;
        size_t n = raw_len(tok, ids[i]);
        memcpy(out + o, tok->raw + tok->raw_off[ids[i]], n);
        o += n;
    }
    out[o] = '\0';
    *text = out;
    *len = o;
    return 0;
}

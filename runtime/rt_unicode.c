/* rt_unicode.c — UTF-8 decode/encode/repair and the Unicode class lookups of rt_unicode.h. */
#include "rt_unicode.h"

#include "fq_base.h"

#include <stdlib.h>
#include <string.h>

static bool in_ranges(const rt_uni_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

bool rt_uni_is_letter(uint32_t cp)
{
    if (cp < 128)
        return rt_uni_ascii_class[cp] == RT_UNI_LETTER;
    return in_ranges(rt_uni_letter, rt_uni_letter_len, cp);
}

bool rt_uni_is_number(uint32_t cp)
{
    if (cp < 128)
        return rt_uni_ascii_class[cp] == RT_UNI_NUMBER;
    return in_ranges(rt_uni_number, rt_uni_number_len, cp);
}

bool rt_uni_is_space(uint32_t cp)
{
    if (cp < 128)
        return rt_uni_ascii_class[cp] == RT_UNI_SPACE;
    return in_ranges(rt_uni_space, rt_uni_space_len, cp);
}

bool rt_uni_is_numeric_rust(uint32_t cp)
{
    return rt_uni_is_number(cp) ||
           in_ranges(rt_uni_number_rust_extra, rt_uni_number_rust_extra_len, cp);
}

rt_uni_class rt_uni_classify(uint32_t cp)
{
    if (cp < 128)
        return (rt_uni_class)rt_uni_ascii_class[cp];
    if (in_ranges(rt_uni_letter, rt_uni_letter_len, cp))
        return RT_UNI_LETTER;
    if (in_ranges(rt_uni_space, rt_uni_space_len, cp))
        return RT_UNI_SPACE;
    if (in_ranges(rt_uni_number, rt_uni_number_len, cp))
        return RT_UNI_NUMBER;
    return RT_UNI_OTHER;
}

/* The allowed range of the second byte after lead byte b (Unicode Table 3-7); later continuation
 * bytes are always 80..BF. */
static void second_byte_range(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b == 0xE0)
        *lo = 0xA0;
    else if (b == 0xED)
        *hi = 0x9F;
    else if (b == 0xF0)
        *lo = 0x90;
    else if (b == 0xF4)
        *hi = 0x8F;
}

/* The sequence length a lead byte announces, or 0 for a byte that cannot start a sequence. */
static int lead_length(uint8_t b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

int rt_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp)
{
    int need = lead_length(s[0]);
    if (need == 1) {
        *cp = s[0];
        return 1;
    }
    *cp = RT_UNI_REPLACEMENT;
    if (need == 0)
        return -1;
    uint8_t lo, hi;
    second_byte_range(s[0], &lo, &hi);
    uint32_t v = s[0] & (0x7F >> need);
    int i = 1;
    for (; i < need; i++) {
        if ((size_t)i >= len || s[i] < lo || s[i] > hi)
            return -i; /* the bytes so far are the maximal subpart */
        v = (v << 6) | (s[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return need;
}

size_t rt_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > RT_UNI_MAX)
        return 0;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool rt_utf8_valid(const char *s, size_t len)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int n = rt_utf8_decode(u + i, len - i, &cp);
        if (n < 0)
            return false;
        i += (size_t)n;
    }
    return true;
}

int rt_utf8_repair(const char *s, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    /* Each invalid subpart of 1..3 bytes becomes 3 bytes: the result is at most 3x as long. */
    if (len > (SIZE_MAX - 1) / 3)
        return FQ_ENOMEM;
    char *buf = malloc(3 * len + 1);
    if (!buf)
        return FQ_ENOMEM;
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        uint32_t cp;
        int n = rt_utf8_decode(u + i, len - i, &cp);
        if (n > 0) {
            memcpy(buf + o, s + i, (size_t)n);
            o += (size_t)n;
            i += (size_t)n;
        } else {
            o += rt_utf8_encode(RT_UNI_REPLACEMENT, buf + o);
            i += (size_t)-n;
        }
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;
}

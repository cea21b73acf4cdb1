/* srv_stop.c — incremental detokenization: UTF-8 completion, stop-string cut and hold-back.
 *
 * State: `pend`, the raw bytes of an incomplete trailing UTF-8 sequence (at most 3), and `held`,
 * converted text not emitted yet. A feed appends the token's bytes (through `pend`) to `held` as
 * valid UTF-8, searches every stop string in `held`, and emits either the text before the
 * earliest match or all of `held` but its longest suffix that is a proper prefix of a stop string.
 * A stop string can only start inside `held`: a start in text already emitted would have been a
 * held suffix. The emitted text is returned in place (`held` from its start) and the kept suffix
 * moved to the front at the next call, so a delta costs no copy.
 */
#include "srv_stop.h"

#include "fq_base.h"
#include "rt_unicode.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct srv_stop {
    char **stops; /* [n_stops] copies */
    size_t *lens; /* [n_stops] */
    size_t n_stops;
    uint8_t pend[4]; /* incomplete trailing UTF-8 sequence, raw */
    size_t n_pend;
    char *held; /* converted text not emitted yet; held[0..shift) was returned by the last call */
    size_t held_len, held_cap;
    size_t shift;      /* bytes at the front of held to drop at the next call */
    size_t emitted_cp; /* code points emitted so far, before held */
    bool stopped, flushed;
    int matched;
};

size_t srv_utf8_count_cp(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((uint8_t)s[i] & 0xC0) != 0x80;
    return n;
}

int srv_stop_create(const char *const *stops, const size_t *lens, size_t n_stops, srv_stop **out)
{
    *out = NULL;
    for (size_t i = 0; i < n_stops; i++)
        if (lens[i] == 0)
            return FQ_EINVAL;
    srv_stop *st = calloc(1, sizeof *st);
    if (!st)
        return FQ_ENOMEM;
    st->matched = -1;
    if (n_stops > 0) {
        st->stops = fq_calloc_array(n_stops, sizeof *st->stops);
        st->lens = fq_calloc_array(n_stops, sizeof *st->lens);
        if (!st->stops || !st->lens) {
            srv_stop_destroy(st);
            return FQ_ENOMEM;
        }
        st->n_stops = n_stops;
        for (size_t i = 0; i < n_stops; i++) {
            st->stops[i] = malloc(lens[i]);
            if (!st->stops[i]) {
                srv_stop_destroy(st);
                return FQ_ENOMEM;
            }
            memcpy(st->stops[i], stops[i], lens[i]);
            st->lens[i] = lens[i];
        }
    }
    *out = st;
    return 0;
}

void srv_stop_destroy(srv_stop *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_stops; i++)
        free(st->stops[i]);
    free(st->stops);
    free(st->lens);
    free(st->held);
    free(st);
}

int srv_stop_matched(const srv_stop *st)
{
    return st->matched;
}

/* Drops the text the previous call returned. */
static void apply_shift(srv_stop *st)
{
    if (st->shift == 0)
        return;
    memmove(st->held, st->held + st->shift, st->held_len - st->shift);
    st->held_len -= st->shift;
    st->shift = 0;
}

static int held_reserve(srv_stop *st, size_t extra)
{
    if (extra > SIZE_MAX / 2 - st->held_len)
        return FQ_ENOMEM;
    size_t need = st->held_len + extra;
    if (need <= st->held_cap)
        return 0;
    size_t cap = st->held_cap ? st->held_cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(st->held, cap);
    if (!p)
        return FQ_ENOMEM;
    st->held = p;
    st->held_cap = cap;
    return 0;
}

static void held_put(srv_stop *st, const void *p, size_t n)
{
    memcpy(st->held + st->held_len, p, n);
    st->held_len += n;
}

/* True when b can start a multi-byte sequence (C2..F4): an incomplete tail starting with it may
 * still become a character. */
static bool is_lead(uint8_t b)
{
    return b >= 0xC2 && b <= 0xF4;
}

/* Converts s[0..n) to valid UTF-8 at the end of held; an incomplete trailing sequence goes to
 * pend when `complete` is false, else becomes U+FFFD. Space is reserved by the caller. */
static void convert(srv_stop *st, const uint8_t *s, size_t n, bool complete)
{
    static const char repl[3] = {'\xEF', '\xBF', '\xBD'};
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            st->held[st->held_len++] = (char)s[i++];
            continue;
        }
        uint32_t cp;
        int r = rt_utf8_decode(s + i, n - i, &cp);
        if (r > 0) {
            held_put(st, s + i, (size_t)r);
            i += (size_t)r;
        } else if (!complete && (size_t)-r == n - i && is_lead(s[i])) {
            memcpy(st->pend, s + i, n - i);
            st->n_pend = n - i;
            return;
        } else {
            held_put(st, repl, sizeof repl);
            i += (size_t)-r;
        }
    }
}

/* Appends bytes (after any pending partial character) to held. */
static int append_bytes(srv_stop *st, const char *bytes, size_t len, bool complete)
{
    /* Each input byte turns into at most 3 output bytes (a lone invalid byte -> U+FFFD). */
    size_t in = st->n_pend + len;
    if (in > SIZE_MAX / 4 || held_reserve(st, 3 * in) != 0)
        return FQ_ENOMEM;
    const uint8_t *b = (const uint8_t *)bytes;
    size_t used = 0;
    if (st->n_pend > 0) {
        /* Complete (or fail) the pending sequence with as few new bytes as it needs. */
        uint8_t tmp[8];
        size_t n_tmp = st->n_pend;
        memcpy(tmp, st->pend, n_tmp);
        st->n_pend = 0;
        while (used < len && n_tmp < 4) {
            tmp[n_tmp++] = b[used++];
            uint32_t cp;
            int r = rt_utf8_decode(tmp, n_tmp, &cp);
            if (r > 0 || (size_t)-r < n_tmp)
                break; /* complete, or clearly invalid: the rest is decoded from scratch */
        }
        uint32_t cp;
        int r = rt_utf8_decode(tmp, n_tmp, &cp);
        if (r < 0 && (size_t)-r < n_tmp) {
            /* Invalid: replace the maximal subpart, give the other bytes back to the input. */
            size_t keep = (size_t)-r;
            convert(st, tmp, keep, true);
            used -= n_tmp - keep; /* those bytes all came from the new token */
        } else {
            convert(st, tmp, n_tmp, complete);
        }
    }
    convert(st, b + used, len - used, complete);
    return 0;
}

/* Earliest occurrence of any stop string in held: its position, or SIZE_MAX. */
static size_t find_stop(const srv_stop *st, int *which)
{
    size_t best = SIZE_MAX;
    if (st->held_len == 0)
        return best;
    for (size_t i = 0; i < st->n_stops; i++) {
        const char *p = memmem(st->held, st->held_len, st->stops[i], st->lens[i]);
        if (p && (size_t)(p - st->held) < best) {
            best = (size_t)(p - st->held);
            *which = (int)i;
        }
    }
    return best;
}

/* Length of the longest suffix of held that is a proper prefix of some stop string. */
static size_t held_back_len(const srv_stop *st)
{
    size_t best = 0;
    for (size_t i = 0; i < st->n_stops; i++) {
        size_t k = st->lens[i] - 1 < st->held_len ? st->lens[i] - 1 : st->held_len;
        for (; k > best; k--) {
            if (memcmp(st->held + st->held_len - k, st->stops[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

/* Emits held[0..n) (n <= held_len): returned in place, dropped at the next call. */
static void emit(srv_stop *st, size_t n, srv_stop_out *out)
{
    out->text = st->held ? st->held : "";
    out->len = n;
    st->emitted_cp += srv_utf8_count_cp(st->held, n);
    st->shift = n;
}

/* Cuts at the earliest stop string, if any; true when one matched. */
static bool cut_at_stop(srv_stop *st, srv_stop_out *out)
{
    int which = -1;
    size_t at = find_stop(st, &which);
    if (at == SIZE_MAX)
        return false;
    emit(st, at, out);
    st->held_len = at; /* the stop string and whatever followed are gone */
    st->n_pend = 0;
    st->stopped = true;
    st->matched = which;
    out->stopped = true;
    return true;
}

int srv_stop_feed(srv_stop *st, const char *bytes, size_t len, srv_stop_out *out)
{
    apply_shift(st);
    out->text = st->held ? st->held : "";
    out->len = 0;
    out->stopped = st->stopped;
    out->text_offset = st->emitted_cp + srv_utf8_count_cp(st->held, st->held_len);
    if (st->stopped || st->flushed)
        return 0;
    int rc = append_bytes(st, bytes, len, false);
    if (rc)
        return rc;
    if (cut_at_stop(st, out))
        return 0;
    emit(st, st->held_len - held_back_len(st), out);
    return 0;
}

int srv_stop_flush(srv_stop *st, srv_stop_out *out)
{
    apply_shift(st);
    out->text = st->held ? st->held : "";
    out->len = 0;
    out->stopped = st->stopped;
    out->text_offset = st->emitted_cp;
    if (st->stopped || st->flushed)
        return 0;
    if (st->n_pend > 0) {
        uint8_t tmp[4];
        size_t n = st->n_pend;
        memcpy(tmp, st->pend, n);
        if (held_reserve(st, 3 * n) != 0)
            return FQ_ENOMEM;
        st->n_pend = 0;
        convert(st, tmp, n, true);
    }
    st->flushed = true;
    if (!cut_at_stop(st, out))
        emit(st, st->held_len, out);
    out->text_offset = st->emitted_cp;
    return 0;
}

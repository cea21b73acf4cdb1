/* srv_stop.h — incremental detokenization for streaming: UTF-8-safe text deltas and stop strings.
 *
 * Tokens arrive one at a time as raw bytes (rt_tokenizer_token_bytes); a byte-level BPE token may
 * end inside a UTF-8 character and a stop string may be spread over several tokens. An srv_stop
 * turns that stream into text that is safe to send now:
 *   - never a partial UTF-8 character: an incomplete trailing sequence is held until the next
 *     token completes it; bytes that can never become valid (the maximal invalid subparts of the
 *     Unicode standard, as Python's decode('utf-8', 'replace') sees them) become U+FFFD at once;
 *   - never a stop string, nor any part of one: the longest suffix of the text that is a proper
 *     prefix of some stop string is held back; when a stop string appears, the text is cut just
 *     before it (at the earliest match when several appear in one token) and the object reports
 *     "stopped" — the stop string itself is never emitted;
 *   - at a normal finish (EOS, length, abort), srv_stop_flush emits what was held: a held prefix of
 *     a stop string is real text then, and an incomplete trailing character becomes one U+FFFD.
 * Each fed token also gets its text offset in Unicode code points (Python string indices, what
 * the legacy completions `logprobs.text_offset` holds), counted over the text emitted so far.
 * Thread safety: an srv_stop belongs to one thread at a time (the loop thread in the daemon).
 */
#ifndef SRV_STOP_H
#define SRV_STOP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct srv_stop srv_stop;

/* Creates a stop-string matcher. stops[i] has lens[i] bytes (valid UTF-8, not empty; may contain
 * NUL); the strings are copied. n_stops may be 0 (then only the UTF-8 handling applies; stops and
 * lens may be NULL). *out is caller-owned. Returns 0, FQ_EINVAL (an empty stop string) or
 * FQ_ENOMEM. */
int srv_stop_create(const char *const *stops, const size_t *lens, size_t n_stops, srv_stop **out);
void srv_stop_destroy(srv_stop *st); /* NULL is a no-op */

/* What one srv_stop_feed / srv_stop_flush gives. */
typedef struct srv_stop_out {
    const char *text;   /* text to emit now: valid UTF-8, borrowed until the next call on st */
    size_t len;         /* bytes of text; 0 = nothing to emit yet */
    size_t text_offset; /* feed: where this token's text starts in the whole output, in code
                           points (a token that continues a character started earlier gets that
                           character's offset); flush: the length of the whole output */
    bool stopped;       /* a stop string matched: text ends just before it; feed no more */
} srv_stop_out;

/* Feeds one token's raw bytes (len may be 0, e.g. a skipped special token). After a stop every
 * further feed emits nothing and reports stopped again. Returns 0 or FQ_ENOMEM (st unchanged). */
int srv_stop_feed(srv_stop *st, const char *bytes, size_t len, srv_stop_out *out);

/* Ends the stream when generation finished for another reason: emits the held text (an incomplete
 * trailing character as U+FFFD). A stop string completed by that U+FFFD still cuts the text and
 * reports stopped. After a stop, or a second flush, it emits nothing. Returns 0 or FQ_ENOMEM. */
int srv_stop_flush(srv_stop *st, srv_stop_out *out);

/* Index in the create-time list of the stop string that matched, or -1. */
int srv_stop_matched(const srv_stop *st);

/* Number of code points of valid UTF-8 text (bytes that are not continuation bytes), e.g. the
 * echoed prompt's length, to shift text offsets by. */
size_t srv_utf8_count_cp(const char *s, size_t len);

#endif /* SRV_STOP_H */

/* srv_sse.h — Server-Sent Events framing of the streaming responses.
 *
 * One event per JSON object: "data: " + the object as compact JSON (one line: JSON escapes every
 * newline inside strings) + "\n\n"; the stream ends with "data: [DONE]\n\n" (DESIGN §6). An error
 * in the middle of a stream is an event too: srv_sse_event(srv_error_json(...)).
 * Thread safety: pure functions; any thread.
 */
#ifndef SRV_SSE_H
#define SRV_SSE_H

#include <jansson.h>
#include <stddef.h>

/* Frames obj (borrowed) as one event. On success *out is malloc'd and NUL-terminated (caller
 * frees) and *len excludes the NUL. Returns 0, FQ_EINVAL (obj is NULL or not serializable) or
 * FQ_ENOMEM. */
int srv_sse_event(const json_t *obj, char **out, size_t *len);

/* The stream's last event, "data: [DONE]\n\n" (static; SRV_SSE_DONE_LEN bytes). */
const char *srv_sse_done(void);
#define SRV_SSE_DONE_LEN 14

#endif /* SRV_SSE_H */

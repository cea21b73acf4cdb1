/* srv_sse.c — Server-Sent Events framing: "data: {compact json}\n\n" and "data: [DONE]\n\n". */
#include "srv_sse.h"

#include "fq_base.h"

#include <stdlib.h>
#include <string.h>

int srv_sse_event(const json_t *obj, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!obj)
        return FQ_EINVAL;
    size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return FQ_EINVAL;
    static const char head[] = "data: ";
    size_t total = sizeof head - 1 + n + 2;
    char *buf = malloc(total + 1);
    if (!buf)
        return FQ_ENOMEM;
    memcpy(buf, head, sizeof head - 1);
    if (json_dumpb(obj, buf + sizeof head - 1, n, JSON_COMPACT) != n) {
        free(buf);
        return FQ_EINVAL;
    }
    memcpy(buf + sizeof head - 1 + n, "\n\n", 3);
    *out = buf;
    *len = total;
    return 0;
}

const char *srv_sse_done(void)
{
    return "data: [DONE]\n\n";
}

/* fq_base.c — error strings, formatted error buffers, the logger, the assert hook, half floats. */
#include "fq_base.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *fq_strerror(int code)
{
    switch (code) {
    case FQ_OK:
        return "success";
    case FQ_EINVAL:
        return "invalid argument";
    case FQ_ENOMEM:
        return "out of memory";
    case FQ_EIO:
        return "input/output error";
    case FQ_EFORMAT:
        return "corrupt or inconsistent file";
    case FQ_EUNSUP:
        return "unsupported";
    case FQ_ERANGE:
        return "value out of range";
    case FQ_ENOTFOUND:
        return "not found";
    default:
        return "unknown error";
    }
}

int fq_err(char *err, size_t err_len, int code, const char *fmt, ...)
{
    if (err && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

void fq_err_prefix(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t plen = strlen(prefix);
    size_t olen = strnlen(err, err_len - 1);
    if (plen >= err_len)
        plen = err_len - 1;
    if (plen + olen >= err_len)
        olen = err_len - 1 - plen;
    memmove(err + plen, err, olen);
    memcpy(err, prefix, plen);
    err[plen + olen] = '\0';
}

static fq_log_level log_threshold(void)
{
    const char *v = getenv("FLEXQ_LOG_LEVEL");
    if (!v)
        return FQ_LOG_INFO;
    if (!strcasecmp(v, "debug"))
        return FQ_LOG_DEBUG;
    if (!strcasecmp(v, "warn"))
        return FQ_LOG_WARN;
    if (!strcasecmp(v, "error"))
        return FQ_LOG_ERROR;
    return FQ_LOG_INFO;
}

void fq_log(fq_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_threshold())
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            names[level], line);
}

void fq_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "flexq: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

void *fq_calloc_array(size_t n, size_t size)
{
    if (n == 0 || size == 0)
        return calloc(1, 1);
    return calloc(n, size);
}

void *fq_malloc_array(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    size_t bytes = n * size;
    return malloc(bytes ? bytes : 1);
}

static int read_stream(FILE *f, char **data, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return FQ_ENOMEM;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return FQ_ENOMEM;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return FQ_EIO;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int fq_read_file(const char *path, char **data, size_t *len, char *err, size_t err_len)
{
    *data = NULL;
    *len = 0;
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return fq_err(err, err_len, FQ_EIO, "%s: %s", path, strerror(errno));
    int rc = read_stream(f, data, len);
    if (!is_stdin)
        fclose(f);
    if (rc)
        return fq_err(err, err_len, rc, "%s: %s", is_stdin ? "standard input" : path,
                      rc == FQ_ENOMEM ? "out of memory" : "read error");
    return 0;
}

int fq_cli_int(const char *tool, const char *flag, const char *v, int64_t lo, int64_t hi,
               int32_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || x < lo || x > hi || x > INT32_MAX) {
        fprintf(stderr, "%s: --%s must be an integer in [%lld, %lld], got '%s'\n", tool, flag,
                (long long)lo, (long long)hi, v);
        return FQ_EINVAL;
    }
    *out = (int32_t)x;
    return 0;
}

int fq_cli_double(const char *tool, const char *flag, const char *v, double lo, double hi,
                  double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(x >= lo && x <= hi)) {
        fprintf(stderr, "%s: --%s must be a number in [%g, %g], got '%s'\n", tool, flag, lo, hi, v);
        return FQ_EINVAL;
    }
    *out = x;
    return 0;
}

double fq_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float fq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf / nan */
        return bits_to_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0)
            return bits_to_f32(sign);
        /* subnormal: value = mant * 2^-24 */
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t fq_f32_to_f16(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absu > 0x7f800000u ? 0x200u : 0u));
    if (absu >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) { /* below smallest normal half: subnormal or zero */
        float a = bits_to_f32(absu);
        /* a * 2^24 rounded to nearest even by the FPU's default rounding */
        float scaled = a * 16777216.0f;
        uint32_t m = (uint32_t)scaled;
        float frac = scaled - (float)m;
        if (frac > 0.5f || (frac == 0.5f && (m & 1u)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t mant = absu & 0x7fffffu;
    uint32_t exp = (absu >> 23) - 112u;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++; /* may carry into the exponent, which is correct */
    return (uint16_t)(sign | h);
}

float fq_bf16_to_f32(uint16_t b)
{
    return bits_to_f32((uint32_t)b << 16);
}

/* fq_base.h — error codes, error messages, logging and invariant checks shared by every module.
 *
 * The lowest layer of the tree: quant/, runtime/, server/ and the tools all include it; it includes
 * nothing of ours. Functions return 0 or a negative FQ_E* code; where a person reads the failure,
 * the caller passes an `err` buffer of `err_len` bytes that receives one line (no trailing
 * newline). Thread safety: every function here may be called from any thread.
 */
#ifndef FQ_BASE_H
#define FQ_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes: always negative; 0 is success. */
enum {
    FQ_OK = 0,
    FQ_EINVAL = -1,   /* bad argument or bad user input */
    FQ_ENOMEM = -2,   /* allocation failed */
    FQ_EIO = -3,      /* read/write/open failed */
    FQ_EFORMAT = -4,  /* file is corrupt, truncated or inconsistent */
    FQ_EUNSUP = -5,   /* valid but unsupported (tensor type, architecture, ...) */
    FQ_ERANGE = -6,   /* a value is out of its allowed range */
    FQ_ENOTFOUND = -7 /* a named thing (tensor, key, file) is missing */
};

/* Static English text for an FQ_E* code; never NULL. */
const char *fq_strerror(int code);

/* Writes a printf-style message into err (if err and err_len > 0) and returns code, so a failure
 * site reads `return fq_err(err, err_len, FQ_EFORMAT, "%s: ...", path);`. */
int fq_err(char *err, size_t err_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes an existing message in err with printf-style context ("file.gguf: " + old message). */
void fq_err_prefix(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef enum { FQ_LOG_DEBUG = 0, FQ_LOG_INFO = 1, FQ_LOG_WARN = 2, FQ_LOG_ERROR = 3 } fq_log_level;

/* Logs one line to stderr with level and timestamp when level >= the threshold read once from the
 * environment variable FLEXQ_LOG_LEVEL (debug|info|warn|error; default info). */
void fq_log(fq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Invariant check that stays on in release builds: logs the failed expression and aborts. Only for
 * invariants whose violation would corrupt data; user input is validated with error returns. */
#define FQ_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fq_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

_Noreturn void fq_assert_fail(const char *expr, const char *file, int line);

/* Allocation helpers that check size overflow; return NULL on failure (callers map to FQ_ENOMEM).
 */
void *fq_calloc_array(size_t n, size_t size);
void *fq_malloc_array(size_t n, size_t size);

/* Reads a whole file ("-" = standard input) into a malloc'd, NUL-terminated buffer (caller frees);
 * *len excludes the NUL. */
int fq_read_file(const char *path, char **data, size_t *len, char *err, size_t err_len);

/* Command-line numbers: parses the whole of v as a decimal integer (or a number, for the double
 * form) in [lo, hi]; on failure prints "TOOL: --FLAG must be ..., got 'V'" to stderr and returns
 * FQ_EINVAL. */
int fq_cli_int(const char *tool, const char *flag, const char *v, int64_t lo, int64_t hi,
               int32_t *out);
int fq_cli_double(const char *tool, const char *flag, const char *v, double lo, double hi,
                  double *out);

/* Monotonic clock in seconds. */
double fq_now_s(void);

/* IEEE half and bfloat16 conversions (exact for every finite value, inf and nan). */
float fq_f16_to_f32(uint16_t h);
uint16_t fq_f32_to_f16(float f); /* round to nearest even */
float fq_bf16_to_f32(uint16_t b);

#endif /* FQ_BASE_H */

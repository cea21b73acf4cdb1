/* cfg_load.c — reads the knobs of cfg_table.c from a JSON file, the environment and the command
 * line, and generates --help and the JSON dump from the same table.
 *
 * Design: one value parser per type (cfg_knob_set) that every source goes through, so a value means
 * the same and is refused the same way wherever it comes from. Flags and environment are parsed
 * first into overlays (a scratch struct plus a "set" mark per knob) because they may name the
 * config file; then the file is applied over the defaults, the environment overlay over that and
 * the flag overlay last. Nothing reaches *out until every check has passed.
 */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_KNOBS 64 /* capacity of the per-knob arrays below; the table is checked against it */

typedef enum { SRC_DEFAULT = 0, SRC_FILE, SRC_ENV, SRC_FLAG } cfg_src;

/* A parsed value of any knob type. */
typedef union {
    int32_t i;
    uint32_t u;
    double d;
    bool b;
    int e;
    uint64_t z;
} cfg_val;

/* Values set by one source, waiting to be applied in order of precedence. */
typedef struct {
    cfg_config val;
    bool set[MAX_KNOBS];
} cfg_overlay;

typedef struct {
    cfg_config cur;         /* the result being built */
    cfg_src src[MAX_KNOBS]; /* where each knob of cur came from */
    cfg_overlay env, flags;
} cfg_loader;

static size_t knob_index(const cfg_knob *k)
{
    return (size_t)(k - cfg_knobs(NULL));
}

/* ---- Sizes ---- */

static const struct {
    const char *unit;
    uint64_t mult;
} size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1ull << 10},
    {"kib", 1ull << 10},
    {"kb", 1000ull},
    {"m", 1ull << 20},
    {"mib", 1ull << 20},
    {"mb", 1000000ull},
    {"g", 1ull << 30},
    {"gib", 1ull << 30},
    {"gb", 1000000000ull},
    {"t", 1ull << 40},
    {"tib", 1ull << 40},
    {"tb", 1000000000000ull},
};

int cfg_parse_size(const char *text, uint64_t *bytes)
{
    if (!text || !bytes)
        return FQ_EINVAL;
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return FQ_EINVAL;
    uint64_t whole = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return FQ_ERANGE;
        whole = whole * 10 + d;
    }
    uint64_t frac = 0, frac_den = 1; /* the fraction is frac / frac_den */
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return FQ_EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
            if (frac_den >= 1000000000ull) /* more than 9 decimals */
                return FQ_EINVAL;
            frac = frac * 10 + (uint64_t)(*p - '0');
            frac_den *= 10;
        }
    }
    while (*p == ' ')
        p++;
    uint64_t mult = 0;
    for (size_t i = 0; i < sizeof size_units / sizeof size_units[0]; i++)
        if (strcasecmp(p, size_units[i].unit) == 0)
            mult = size_units[i].mult;
    if (mult == 0 || (*p == '\0' && p > text && p[-1] == ' '))
        return FQ_EINVAL;
    if (whole > UINT64_MAX / mult)
        return FQ_ERANGE;
    uint64_t v = whole * mult;
    if (frac) {
        /* frac * mult / frac_den without overflow: frac < frac_den <= 1e9, mult <= 2^40 could
         * overflow, so split mult into quotient and remainder by frac_den. */
        uint64_t q = mult / frac_den, r = mult % frac_den;
        uint64_t num = frac * r; /* < 1e9 * 1e9 < 2^64 */
        if (num % frac_den != 0)
            return FQ_EINVAL; /* not a whole number of bytes */
        uint64_t add = frac * q + num / frac_den;
        if (add > UINT64_MAX - v)
            return FQ_ERANGE;
        v += add;
    }
    *bytes = v;
    return 0;
}

/* The largest binary unit that divides the value exactly: "256MiB", "1536KiB", "1000". */
static int format_size(uint64_t z, char *buf, size_t len)
{
    static const char *const names[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 4; i++) {
        uint64_t unit = 1ull << (10 * (4 - i));
        if (z != 0 && z % unit == 0)
            return snprintf(buf, len, "%" PRIu64 "%s", z / unit, names[i]);
    }
    return snprintf(buf, len, "%" PRIu64, z);
}

/* ---- Values ---- */

static int parse_integer(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return FQ_EINVAL;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return FQ_EINVAL;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return FQ_ERANGE;
    *out = v;
    return 0;
}

static int parse_number(const char *s, double *out)
{
    bool digit = false;
    for (const char *q = s; *q; q++) {
        if (isdigit((unsigned char)*q))
            digit = true;
        else if (!strchr(".eE+-", *q))
            return FQ_EINVAL; /* no hex, inf, nan or spaces */
    }
    if (!digit)
        return FQ_EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        return FQ_EINVAL;
    if (!isfinite(v))
        return FQ_ERANGE;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return FQ_EINVAL;
}

/* What a knob accepts, for messages and --help. */
static void describe_allowed(const cfg_knob *k, char *buf, size_t len)
{
    switch (k->type) {
    case CFG_T_STRING:
        if (k->min > 0)
            snprintf(buf, len, "text of %.0f to %.0f bytes", k->min, k->max);
        else
            snprintf(buf, len, "text of at most %.0f bytes", k->max);
        break;
    case CFG_T_INT:
    case CFG_T_UINT:
        snprintf(buf, len, "an integer from %.0f to %.0f", k->min, k->max);
        break;
    case CFG_T_DOUBLE:
        snprintf(buf, len, "a number from %g to %g", k->min, k->max);
        break;
    case CFG_T_SIZE: {
        char lo[32], hi[32];
        format_size((uint64_t)k->min, lo, sizeof lo);
        format_size((uint64_t)k->max, hi, sizeof hi);
        snprintf(buf, len, "a size from %s to %s, such as 512MiB or 2GiB", lo, hi);
        break;
    }
    case CFG_T_BOOL:
        snprintf(buf, len, "true or false (also 1/0, yes/no, on/off)");
        break;
    case CFG_T_ENUM: {
        size_t off = (size_t)snprintf(buf, len, "one of ");
        for (size_t i = 0; k->choices[i] && off < len; i++)
            off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", k->choices[i]);
        break;
    }
    }
}

/* Parses text as k's type within k's bounds. On failure writes "<value> is <why>; allowed: ..."
 * (the value left out for secrets) into err. */
static int parse_value(const cfg_knob *k, const char *text, cfg_val *v, char *err, size_t err_len)
{
    int rc = 0;
    const char *why = NULL;
    double num = 0; /* the value compared with the bounds */
    switch (k->type) {
    case CFG_T_STRING: {
        size_t n = strlen(text);
        num = (double)n;
        if (n < k->min || n > k->max) {
            rc = FQ_ERANGE;
            why = n < k->min ? "empty" : "too long";
        }
        break;
    }
    case CFG_T_INT:
    case CFG_T_UINT: {
        long long x = 0;
        rc = parse_integer(text, &x);
        why = rc == FQ_EINVAL ? "not an integer" : "out of range";
        num = (double)x;
        if (rc == 0 && (num < k->min || num > k->max)) {
            rc = FQ_ERANGE;
            why = "out of range";
        }
        if (rc == 0 && k->type == CFG_T_INT)
            v->i = (int32_t)x;
        else if (rc == 0)
            v->u = (uint32_t)x;
        break;
    }
    case CFG_T_DOUBLE:
        rc = parse_number(text, &v->d);
        why = rc == FQ_EINVAL ? "not a number" : "out of range";
        if (rc == 0 && (v->d < k->min || v->d > k->max)) {
            rc = FQ_ERANGE;
            why = "out of range";
        }
        break;
    case CFG_T_SIZE:
        rc = cfg_parse_size(text, &v->z);
        why = rc == FQ_EINVAL ? "not a size (a whole number of bytes, with an optional unit)"
                              : "out of range";
        if (rc == 0 && ((double)v->z < k->min || (double)v->z > k->max)) {
            rc = FQ_ERANGE;
            why = "out of range";
        }
        break;
    case CFG_T_BOOL:
        rc = parse_bool(text, &v->b);
        why = "not a boolean";
        break;
    case CFG_T_ENUM:
        rc = FQ_EINVAL;
        why = "not a known name";
        for (int i = 0; k->choices[i]; i++)
            if (strcasecmp(text, k->choices[i]) == 0) {
                v->e = i;
                rc = 0;
            }
        break;
    }
    if (rc == 0)
        return 0;
    char allowed[256];
    describe_allowed(k, allowed, sizeof allowed);
    if (k->flags & CFG_K_SECRET)
        return fq_err(err, err_len, rc, "the value is %s; allowed: %s", why, allowed);
    return fq_err(err, err_len, rc, "\"%.80s%s\" is %s; allowed: %s", text,
                  strlen(text) > 80 ? "..." : "", why, allowed);
}

int cfg_knob_set(cfg_config *c, const cfg_knob *k, const char *text, char *err, size_t err_len)
{
    if (!c || !k || !text)
        return fq_err(err, err_len, FQ_EINVAL, "cfg_knob_set: NULL argument");
    cfg_val v;
    memset(&v, 0, sizeof v);
    int rc = parse_value(k, text, &v, err, err_len);
    if (rc != 0)
        return rc;
    char *field = (char *)c + k->offset;
    switch (k->type) {
    case CFG_T_STRING:
        memset(field, 0, k->size);
        memcpy(field, text, strlen(text)); /* fits: the bounds keep length < size */
        break;
    case CFG_T_INT:
        memcpy(field, &v.i, sizeof v.i);
        break;
    case CFG_T_UINT:
        memcpy(field, &v.u, sizeof v.u);
        break;
    case CFG_T_DOUBLE:
        memcpy(field, &v.d, sizeof v.d);
        break;
    case CFG_T_BOOL:
        memcpy(field, &v.b, sizeof v.b);
        break;
    case CFG_T_ENUM:
        memcpy(field, &v.e, sizeof v.e);
        break;
    case CFG_T_SIZE:
        memcpy(field, &v.z, sizeof v.z);
        break;
    }
    return 0;
}

/* Reads k's field of c into v (strings excepted). */
static cfg_val get_value(const cfg_config *c, const cfg_knob *k)
{
    cfg_val v;
    memset(&v, 0, sizeof v);
    const char *field = (const char *)c + k->offset;
    if (k->type != CFG_T_STRING)
        memcpy(&v, field, k->size);
    return v;
}

int cfg_knob_format(const cfg_config *c, const cfg_knob *k, char *buf, size_t len)
{
    const char *field = (const char *)c + k->offset;
    cfg_val v = get_value(c, k);
    switch (k->type) {
    case CFG_T_STRING:
        return snprintf(buf, len, "%.*s", (int)strnlen(field, k->size), field);
    case CFG_T_INT:
        return snprintf(buf, len, "%" PRId32, v.i);
    case CFG_T_UINT:
        return snprintf(buf, len, "%" PRIu32, v.u);
    case CFG_T_DOUBLE: {
        /* the shortest of %.15g and %.17g that reads back as the same double */
        int n = snprintf(buf, len, "%.15g", v.d);
        if (n >= 0 && (size_t)n < len && strtod(buf, NULL) == v.d)
            return n;
        return snprintf(buf, len, "%.17g", v.d);
    }
    case CFG_T_BOOL:
        return snprintf(buf, len, "%s", v.b ? "true" : "false");
    case CFG_T_ENUM: {
        int n = 0;
        while (k->choices[n])
            n++;
        return snprintf(buf, len, "%s", v.e >= 0 && v.e < n ? k->choices[v.e] : "?");
    }
    case CFG_T_SIZE:
        return format_size(v.z, buf, len);
    }
    return snprintf(buf, len, "?");
}

/* ---- Suggestions for misspelt flags and keys ---- */

/* Edit distance of two short strings; a large number for long ones. */
static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb)
{
    enum { CAP = 64 };
    if (na >= CAP || nb >= CAP)
        return (size_t)-1;
    size_t prev[CAP], cur[CAP];
    for (size_t j = 0; j <= nb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= na; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (nb + 1) * sizeof prev[0]);
    }
    return prev[nb];
}

/* "; did you mean --port?" for the closest flag (flags = true) or file key within 2 edits or a
 * third of the length, else "". */
static const char *suggest(const char *name, size_t n, bool flags, char *buf, size_t len)
{
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < nk; i++) {
        const char *cand = flags ? t[i].flag + 2 : t[i].json_key;
        if (!cand)
            continue;
        size_t d = edit_distance(name, n, cand, strlen(cand));
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    buf[0] = '\0';
    if (best && (best_d <= 2 || best_d * 3 <= n))
        snprintf(buf, len, "; did you mean %s%s?", flags ? "--" : "", best);
    return buf;
}

/* ---- Sources ---- */

static const cfg_knob *find_by_flag(const char *name, size_t n)
{
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    for (size_t i = 0; i < nk; i++)
        if (strlen(t[i].flag + 2) == n && memcmp(t[i].flag + 2, name, n) == 0)
            return &t[i];
    return NULL;
}

static bool is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

static int parse_flags(int argc, char **argv, cfg_overlay *ov, char *err, size_t err_len)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!a || is_help(a))
            continue;
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            return fq_err(err, err_len, FQ_EINVAL,
                          "unexpected argument \"%.80s\": every setting is a --flag (see --help)",
                          a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const cfg_knob *k = find_by_flag(name, n);
        bool negated = false;
        if (!k && n > 3 && strncmp(name, "no-", 3) == 0) {
            k = find_by_flag(name + 3, n - 3);
            if (k && k->type != CFG_T_BOOL)
                return fq_err(err, err_len, FQ_EINVAL, "flag --%.*s: %s is not a boolean flag",
                              (int)n, name, k->flag);
            if (k && eq)
                return fq_err(err, err_len, FQ_EINVAL, "flag --%.*s takes no value", (int)n, name);
            negated = k != NULL;
        }
        if (!k) {
            char hint[96];
            return fq_err(err, err_len, FQ_EINVAL, "unknown flag --%.*s%s (see --help)", (int)n,
                          name, suggest(name, n, true, hint, sizeof hint));
        }
        const char *value;
        if (negated)
            value = "false";
        else if (eq)
            value = eq + 1;
        else if (k->type == CFG_T_BOOL)
            value = "true";
        else if (i + 1 < argc && argv[i + 1] && strncmp(argv[i + 1], "--", 2) != 0)
            value = argv[++i];
        else {
            char allowed[256];
            describe_allowed(k, allowed, sizeof allowed);
            return fq_err(err, err_len, FQ_EINVAL, "%s: flag %s needs a value (%s)", k->name,
                          k->flag, allowed);
        }
        int rc = cfg_knob_set(&ov->val, k, value, err, err_len);
        if (rc != 0) {
            fq_err_prefix(err, err_len, "%s: bad value from flag %s: ", k->name, k->flag);
            return rc;
        }
        ov->set[knob_index(k)] = true;
    }
    return 0;
}

bool cfg_help_requested(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!a)
            continue;
        if (is_help(a))
            return true;
        if (strncmp(a, "--", 2) != 0 || strchr(a, '='))
            continue;
        const cfg_knob *k = find_by_flag(a + 2, strlen(a + 2));
        /* skip the value of a flag that takes one, as parse_flags does */
        if (k && k->type != CFG_T_BOOL && i + 1 < argc && argv[i + 1] &&
            strncmp(argv[i + 1], "--", 2) != 0)
            i++;
    }
    return false;
}

static const char *env_get(const char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

static int parse_env(const char *const *envp, cfg_overlay *ov, char *err, size_t err_len)
{
    if (!envp)
        envp = (const char *const *)environ;
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    for (size_t i = 0; i < nk; i++) {
        const char *v = env_get(envp, t[i].env);
        if (!v || !*v) /* empty = unset */
            continue;
        int rc = cfg_knob_set(&ov->val, &t[i], v, err, err_len);
        if (rc != 0) {
            fq_err_prefix(err, err_len, "%s: bad value from environment variable %s: ", t[i].name,
                          t[i].env);
            return rc;
        }
        ov->set[i] = true;
    }
    return 0;
}

static const char *json_type_wanted(cfg_type t)
{
    switch (t) {
    case CFG_T_INT:
    case CFG_T_UINT:
        return "a JSON integer";
    case CFG_T_DOUBLE:
        return "a JSON number";
    case CFG_T_BOOL:
        return "true or false";
    case CFG_T_SIZE:
        return "a JSON string such as \"512MiB\" or an integer number of bytes";
    default:
        return "a JSON string";
    }
}

/* The text of a file value for cfg_knob_set, or NULL when the JSON type does not fit. */
static const char *json_value_text(const cfg_knob *k, json_t *v, char *buf, size_t len)
{
    switch (k->type) {
    case CFG_T_STRING:
    case CFG_T_ENUM:
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return NULL; /* not a string, or one with a NUL inside */
        return json_string_value(v);
    case CFG_T_INT:
    case CFG_T_UINT:
        if (!json_is_integer(v))
            return NULL;
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    case CFG_T_DOUBLE:
        if (!json_is_number(v))
            return NULL;
        snprintf(buf, len, "%.17g", json_number_value(v));
        return buf;
    case CFG_T_BOOL:
        return json_is_boolean(v) ? (json_is_true(v) ? "true" : "false") : NULL;
    case CFG_T_SIZE:
        if (json_is_integer(v)) {
            snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            return buf;
        }
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return NULL;
        return json_string_value(v);
    }
    return NULL;
}

static int parse_file(const char *path, cfg_loader *L, char *err, size_t err_len)
{
    char *data = NULL;
    size_t len = 0;
    int rc = fq_read_file(path, &data, &len, err, err_len);
    if (rc != 0) {
        fq_err_prefix(err, err_len, "config file: ");
        return rc;
    }
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    free(data);
    if (!root)
        return fq_err(err, err_len, FQ_EFORMAT, "config file %s:%d:%d: %s", path, je.line,
                      je.column, je.text);
    rc = 0;
    if (!json_is_object(root))
        rc = fq_err(err, err_len, FQ_EFORMAT,
                    "config file %s: the top level must be a JSON object of knob names", path);
    const char *key;
    json_t *val;
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    json_object_foreach(root, key, val)
    {
        if (rc != 0)
            break;
        const cfg_knob *k = NULL;
        for (size_t i = 0; i < nk && !k; i++)
            if (t[i].json_key && strcmp(t[i].json_key, key) == 0)
                k = &t[i];
        if (!k) {
            char hint[96];
            rc = fq_err(err, err_len, FQ_EINVAL, "config file %s: unknown key \"%.80s\"%s", path,
                        key, suggest(key, strlen(key), false, hint, sizeof hint));
            break;
        }
        char buf[64];
        const char *text = json_value_text(k, val, buf, sizeof buf);
        if (!text) {
            rc = fq_err(err, err_len, FQ_EINVAL,
                        "%s: bad value from config file %s key \"%s\": expected %s", k->name, path,
                        key, json_type_wanted(k->type));
            break;
        }
        rc = cfg_knob_set(&L->cur, k, text, err, err_len);
        if (rc != 0) {
            fq_err_prefix(err, err_len, "%s: bad value from config file %s key \"%s\": ", k->name,
                          path, key);
            break;
        }
        L->src[knob_index(k)] = SRC_FILE;
    }
    json_decref(root);
    return rc;
}

static void apply_overlay(cfg_loader *L, const cfg_overlay *ov, cfg_src src)
{
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    for (size_t i = 0; i < nk; i++) {
        if (!ov->set[i])
            continue;
        memcpy((char *)&L->cur + t[i].offset, (const char *)&ov->val + t[i].offset, t[i].size);
        L->src[i] = src;
    }
}

/* "flag --x", "environment variable FLEXQ_X", "config file key \"x\"", "the default". */
static const char *describe_source(const cfg_knob *k, cfg_src s, char *buf, size_t len)
{
    switch (s) {
    case SRC_FLAG:
        snprintf(buf, len, "flag %s", k->flag);
        break;
    case SRC_ENV:
        snprintf(buf, len, "environment variable %s", k->env);
        break;
    case SRC_FILE:
        snprintf(buf, len, "config file key \"%s\"", k->json_key);
        break;
    default:
        snprintf(buf, len, "the default");
        break;
    }
    return buf;
}

/* The basename of a model path without its model-file extension; "" for "". */
static int derive_served_name(const char *model, char *out, size_t cap, char *err, size_t err_len)
{
    static const char *const exts[] = {".fq6.safetensors", ".safetensors", ".gguf"};
    size_t n = strlen(model);
    while (n > 1 && model[n - 1] == '/') /* a directory given as "dir/" */
        n--;
    size_t start = n;
    while (start > 0 && model[start - 1] != '/')
        start--;
    size_t m = n - start;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t el = strlen(exts[i]);
        if (m > el && strncasecmp(model + start + m - el, exts[i], el) == 0) {
            m -= el;
            break;
        }
    }
    if (m >= cap)
        return fq_err(err, err_len, FQ_ERANGE,
                      "served_model_name: the model's file name is longer than %zu bytes; set "
                      "--served-model-name (FLEXQ_SERVED_MODEL_NAME, key \"served_model_name\")",
                      cap - 1);
    memset(out, 0, cap);
    memcpy(out, model + start, m);
    return 0;
}

/* The rules that tie knobs together; src (may be NULL) says where each value came from. */
static int check_cross(const cfg_config *c, const cfg_src *src, char *err, size_t err_len)
{
    if (c->max_num_batched_tokens < c->max_num_seqs) {
        const cfg_knob *kt = cfg_knob_find("max_num_batched_tokens");
        const cfg_knob *ks = cfg_knob_find("max_num_seqs");
        char a[96] = "", b[96] = "", sa[80], sb[80];
        if (src) {
            snprintf(a, sizeof a, ", from %s",
                     describe_source(kt, src[knob_index(kt)], sa, sizeof sa));
            snprintf(b, sizeof b, ", from %s",
                     describe_source(ks, src[knob_index(ks)], sb, sizeof sb));
        }
        return fq_err(err, err_len, FQ_ERANGE,
                      "max_num_batched_tokens (%" PRId32 "%s) must be at least max_num_seqs "
                      "(%" PRId32 "%s): every running sequence needs a token in each step",
                      c->max_num_batched_tokens, a, c->max_num_seqs, b);
    }
    return 0;
}

int cfg_load(int argc, char **argv, const char *const *envp, cfg_config *out, char *err,
             size_t err_len)
{
    if (!out || (argc > 0 && !argv))
        return fq_err(err, err_len, FQ_EINVAL, "cfg_load: NULL argument");
    size_t nk;
    cfg_knobs(&nk);
    FQ_ASSERT(nk <= MAX_KNOBS);
    cfg_loader *L = calloc(1, sizeof *L);
    if (!L)
        return fq_err(err, err_len, FQ_ENOMEM, "config: out of memory");
    L->cur = cfg_default();
    L->env.val = L->cur;
    L->flags.val = L->cur;

    int rc = parse_flags(argc, argv, &L->flags, err, err_len);
    if (rc == 0)
        rc = parse_env(envp, &L->env, err, err_len);
    if (rc == 0) {
        size_t ic = knob_index(cfg_knob_find("config"));
        const char *path = L->flags.set[ic] ? L->flags.val.config_path
                           : L->env.set[ic] ? L->env.val.config_path
                                            : "";
        if (path[0])
            rc = parse_file(path, L, err, err_len);
    }
    if (rc == 0) {
        apply_overlay(L, &L->env, SRC_ENV);
        apply_overlay(L, &L->flags, SRC_FLAG);
        if (L->cur.served_model_name[0] == '\0')
            rc = derive_served_name(L->cur.model, L->cur.served_model_name,
                                    sizeof L->cur.served_model_name, err, err_len);
    }
    if (rc == 0)
        rc = check_cross(&L->cur, L->src, err, err_len);
    if (rc == 0)
        *out = L->cur;
    free(L);
    return rc;
}

int cfg_validate_for_serve(const cfg_config *c, char *err, size_t err_len)
{
    if (!c)
        return fq_err(err, err_len, FQ_EINVAL, "cfg_validate_for_serve: NULL config");
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    cfg_config scratch = cfg_default();
    for (size_t i = 0; i < nk; i++) {
        const char *field = (const char *)c + t[i].offset;
        if (t[i].type == CFG_T_STRING && !memchr(field, '\0', t[i].size))
            return fq_err(err, err_len, FQ_EINVAL, "%s: not NUL-terminated", t[i].name);
        /* every value must read back through its own parser: that checks type and bounds */
        char text[CFG_PATH_CAP];
        cfg_knob_format(c, &t[i], text, sizeof text);
        int rc = cfg_knob_set(&scratch, &t[i], text, err, err_len);
        if (rc != 0) {
            fq_err_prefix(err, err_len, "%s: ", t[i].name);
            return rc;
        }
    }
    int rc = check_cross(c, NULL, err, err_len);
    if (rc != 0)
        return rc;
    if (c->model[0] == '\0')
        return fq_err(err, err_len, FQ_EINVAL,
                      "model: no model to serve; pass --model PATH, set FLEXQ_MODEL or the config "
                      "file key \"model\"");
    return 0;
}

bool cfg_equal(const cfg_config *a, const cfg_config *b)
{
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    for (size_t i = 0; i < nk; i++) {
        const char *fa = (const char *)a + t[i].offset, *fb = (const char *)b + t[i].offset;
        if (t[i].type == CFG_T_STRING) {
            if (strncmp(fa, fb, t[i].size) != 0)
                return false;
        } else if (t[i].type == CFG_T_DOUBLE) {
            if (get_value(a, &t[i]).d != get_value(b, &t[i]).d)
                return false;
        } else if (t[i].type == CFG_T_BOOL) {
            if (get_value(a, &t[i]).b != get_value(b, &t[i]).b)
                return false;
        } else if (memcmp(fa, fb, t[i].size) != 0) {
            return false;
        }
    }
    return true;
}

/* ---- --help ---- */

/* Writes text word-wrapped to width columns, every line indented by indent spaces. */
static void wrap(FILE *f, int indent, int width, const char *text)
{
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        int room = width - indent, n = (int)strlen(p);
        if (n > room) {
            n = room;
            /* break at a space, but not around '=' ("0 = no limit" stays whole) */
            while (n > 0 && (p[n] != ' ' || p[n - 1] == '=' || p[n + 1] == '='))
                n--;
            if (n == 0) /* one word longer than the line */
                n = (int)strcspn(p, " ");
        }
        fprintf(f, "%*s%.*s\n", indent, "", n, p);
        p += n;
    }
}

void cfg_print_help(FILE *f)
{
    enum { WIDTH = 100, INDENT = 8 };
    fputs("Usage: flexq-serve [--config FILE] [--FLAG VALUE | --FLAG=VALUE]...\n\n", f);
    wrap(f, 0, WIDTH,
         "Serves a model over an OpenAI-compatible HTTP API. Every setting has a default, a key "
         "in the JSON config file, a FLEXQ_* environment variable and a flag.");
    fputs("Precedence: defaults < config file < environment < flags.\n", f);
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    const char *section = NULL;
    for (size_t i = 0; i < nk; i++) {
        const cfg_knob *k = &t[i];
        if (!section || strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "\n%s:\n", section);
            if (i == 0)
                fputs("  -h, --help\n        Print this help and exit.\n", f);
        }
        if (k->type == CFG_T_BOOL)
            fprintf(f, "  %s[=%s], --no-%s\n", k->flag, k->metavar, k->flag + 2);
        else
            fprintf(f, "  %s %s\n", k->flag, k->metavar);
        wrap(f, INDENT, WIDTH, k->help);
        char allowed[256], dflt[CFG_NAME_CAP + 8], line[768];
        describe_allowed(k, allowed, sizeof allowed);
        if (k->type == CFG_T_STRING)
            snprintf(dflt, sizeof dflt, "\"%s\"", (k->flags & CFG_K_SECRET) ? "" : k->dflt);
        else
            snprintf(dflt, sizeof dflt, "%s", k->dflt);
        snprintf(line, sizeof line, "Allowed: %s. Default: %s.", allowed, dflt);
        wrap(f, INDENT, WIDTH, line);
        if (k->json_key)
            fprintf(f, "%*senv %s; config file key \"%s\"\n", INDENT, "", k->env, k->json_key);
        else
            fprintf(f, "%*senv %s; not a config file key\n", INDENT, "", k->env);
    }
    fputc('\n', f);
    wrap(f, 0, WIDTH,
         "Sizes: a number of bytes with an optional unit, B, KiB, MiB, GiB, TiB (or K, M, G, T) "
         "for powers of 1024 and KB, MB, GB, TB for powers of 1000, case-insensitive: 512MiB, "
         "2GiB, 1.5GiB. Booleans: true/false, 1/0, yes/no, on/off; a boolean flag alone means "
         "true. An empty FLEXQ_* variable counts as unset. A relative path in the config file is "
         "relative to the working directory.");
}

/* ---- JSON dump ---- */

/* json_string, with bytes that are not valid UTF-8 shown as '?' rather than failing. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (!copy)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        copy[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    j = json_string(copy);
    free(copy);
    return j;
}

char *cfg_dump_json(const cfg_config *c)
{
    if (!c)
        return NULL;
    json_t *root = json_object();
    if (!root)
        return NULL;
    size_t nk;
    const cfg_knob *t = cfg_knobs(&nk);
    bool ok = true;
    for (size_t i = 0; i < nk && ok; i++) {
        const cfg_knob *k = &t[i];
        if (!k->json_key)
            continue;
        cfg_val v = get_value(c, k);
        const char *field = (const char *)c + k->offset;
        char buf[64];
        json_t *j = NULL;
        switch (k->type) {
        case CFG_T_STRING:
            if ((k->flags & CFG_K_SECRET) && field[0])
                j = json_string("<redacted>");
            else
                j = json_text(field);
            break;
        case CFG_T_INT:
            j = json_integer(v.i);
            break;
        case CFG_T_UINT:
            j = json_integer(v.u);
            break;
        case CFG_T_DOUBLE:
            j = json_real(v.d);
            break;
        case CFG_T_BOOL:
            j = json_boolean(v.b);
            break;
        case CFG_T_ENUM:
        case CFG_T_SIZE:
            cfg_knob_format(c, k, buf, sizeof buf);
            j = json_string(buf);
            break;
        }
        ok = j && json_object_set_new(root, k->json_key, j) == 0;
    }
    char *s = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return s;
}

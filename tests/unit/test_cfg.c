/* test_cfg.c — the configuration: defaults, precedence file < environment < flags, every knob from
 * every source, bounds, unknown flags and keys, sizes, booleans, --help, the example file, the
 * dump.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cfg.h"
#include "fq_base.h"

#define MAX_FILES 16

typedef struct {
    char dir[64];               /* a fresh temporary directory */
    char files[MAX_FILES][128]; /* files written there, removed by teardown */
    int n_files;
    char err[1024]; /* the last error message */
} cfg_test;

static int setup(void **state)
{
    cfg_test *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/test_cfg.XXXXXX");
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    cfg_test *t = *state;
    for (int i = 0; i < t->n_files; i++)
        unlink(t->files[i]);
    rmdir(t->dir);
    free(t);
    return 0;
}

/* Writes text to a new file in the test directory; returns its path (valid until teardown). */
static const char *write_file(cfg_test *t, const char *text)
{
    assert_true(t->n_files < MAX_FILES);
    char tmp[sizeof t->files[0]];
    snprintf(tmp, sizeof tmp, "%s/c%d.json", t->dir, t->n_files);
    char *path = t->files[t->n_files++];
    memcpy(path, tmp, sizeof tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* cfg_load with args (NULL-terminated, without argv[0]) and env (NULL-terminated "N=v"). */
static int load(cfg_test *t, const char *const *args, const char *const *env, cfg_config *out)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)"flexq-serve";
    for (; args && *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    static const char *const no_env[] = {NULL};
    t->err[0] = '\0';
    return cfg_load(argc, argv, env ? env : no_env, out, t->err, sizeof t->err);
}

static void assert_err_has(const cfg_test *t, const char *needle)
{
    if (!strstr(t->err, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", t->err, needle);
}

/* A valid value of k other than its default, as text. */
static void other_value(const cfg_knob *k, char *buf, size_t len)
{
    switch (k->type) {
    case CFG_T_STRING:
        snprintf(buf, len, "%s", strcmp(k->name, "model") == 0 ? "/models/x-test.gguf" : "x-test");
        break;
    case CFG_T_INT:
    case CFG_T_UINT: {
        long long d = strtoll(k->dflt, NULL, 10);
        snprintf(buf, len, "%lld", d + 1 <= k->max ? d + 1 : d - 1);
        break;
    }
    case CFG_T_DOUBLE: {
        double d = strtod(k->dflt, NULL);
        snprintf(buf, len, "%g", d + 1.5 <= k->max ? d + 1.5 : d - 1.5);
        break;
    }
    case CFG_T_SIZE: {
        uint64_t d = 0;
        assert_int_equal(cfg_parse_size(k->dflt, &d), 0);
        snprintf(buf, len, "%" PRIu64, (double)(d * 2) <= k->max ? d * 2 : (uint64_t)k->min);
        break;
    }
    case CFG_T_BOOL:
        snprintf(buf, len, "%s", strcmp(k->dflt, "true") == 0 ? "false" : "true");
        break;
    case CFG_T_ENUM: {
        int n = 0, d = 0;
        for (; k->choices[n]; n++)
            if (strcmp(k->choices[n], k->dflt) == 0)
                d = n;
        snprintf(buf, len, "%s", k->choices[(d + 1) % n]);
        break;
    }
    }
}

/* The JSON text of a value for the config file. */
static void json_value(const cfg_knob *k, const char *text, char *buf, size_t len)
{
    bool quoted = k->type == CFG_T_STRING || k->type == CFG_T_ENUM || k->type == CFG_T_SIZE;
    snprintf(buf, len, quoted ? "\"%s\"" : "%s", text);
}

/* The defaults with knob k set to text (and served_model_name derived when k is model). */
static cfg_config expected_with(const cfg_knob *k, const char *text)
{
    cfg_config e = cfg_default();
    char err[256];
    assert_int_equal(cfg_knob_set(&e, k, text, err, sizeof err), 0);
    if (strcmp(k->name, "model") == 0)
        snprintf(e.served_model_name, sizeof e.served_model_name, "x-test");
    return e;
}

static void test_cfg_defaults(void **state)
{
    cfg_test *t = *state;
    cfg_config d = cfg_default();
    assert_string_equal(d.config_path, "");
    assert_string_equal(d.model, "");
    assert_string_equal(d.served_model_name, "");
    assert_int_equal(d.backend, CFG_BACKEND_CPU);
    assert_int_equal(d.mode, CFG_MODE_AUTO);
    assert_int_equal(d.threads, 0);
    assert_string_equal(d.host, "127.0.0.1");
    assert_int_equal(d.port, 8000);
    assert_string_equal(d.api_key, "");
    assert_int_equal(d.max_body_bytes, 1u << 20);
    assert_true(d.metrics);
    assert_int_equal(d.log_level, FQ_LOG_INFO);
    assert_int_equal(d.max_num_seqs, 16);
    assert_int_equal(d.max_num_batched_tokens, 512);
    assert_int_equal(d.max_model_len, 0);
    assert_int_equal(d.kv_cache_memory_bytes, 256u << 20);
    assert_int_equal(d.kv_block_size, 16);
    assert_int_equal(d.max_queue_requests, 256);
    assert_int_equal(d.max_queue_prompt_tokens, 262144);
    assert_true(d.queue_timeout_s == 60.0);
    assert_true(d.request_timeout_s == 600.0);
    assert_true(d.drain_timeout_s == 30.0);

    cfg_config c;
    assert_int_equal(load(t, NULL, NULL, &c), 0);
    assert_true(cfg_equal(&c, &d));
    assert_string_equal(cfg_backend_name(c.backend), "cpu");
    assert_string_equal(cfg_mode_name(c.mode), "auto");
}

static void test_cfg_table_follows_naming_and_types(void **state)
{
    (void)state;
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    assert_true(n >= 22);
    for (size_t i = 0; i < n; i++) {
        char want[128];
        /* env = FLEXQ_ + upper(name); flag = -- + name with '-' */
        snprintf(want, sizeof want, "FLEXQ_%s", k[i].name);
        for (char *p = want; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        assert_string_equal(k[i].env, want);
        snprintf(want, sizeof want, "--%s", k[i].name);
        for (char *p = want; *p; p++)
            *p = *p == '_' ? '-' : *p;
        assert_string_equal(k[i].flag, want);
        if (k[i].flags & CFG_K_NO_FILE)
            assert_null(k[i].json_key);
        else
            assert_string_equal(k[i].json_key, k[i].name);
        assert_ptr_equal(cfg_knob_find(k[i].name), &k[i]);
        assert_non_null(k[i].help);
        assert_non_null(k[i].metavar);
        assert_non_null(k[i].section);
        assert_true(k[i].offset + k[i].size <= sizeof(cfg_config));
        size_t want_size = 0;
        switch (k[i].type) {
        case CFG_T_STRING:
            want_size = (size_t)k[i].max + 1; /* the capacity holds the longest value + NUL */
            break;
        case CFG_T_INT:
        case CFG_T_UINT:
        case CFG_T_ENUM:
            want_size = 4;
            break;
        case CFG_T_DOUBLE:
        case CFG_T_SIZE:
            want_size = 8;
            break;
        case CFG_T_BOOL:
            want_size = sizeof(bool);
            break;
        }
        assert_int_equal(k[i].size, want_size);
        assert_true((k[i].type == CFG_T_ENUM) == (k[i].choices != NULL));
    }
    assert_null(cfg_knob_find("no_such_knob"));
    /* the knobs the issue names */
    static const char *const names[] = {"model",
                                        "served_model_name",
                                        "host",
                                        "port",
                                        "backend",
                                        "mode",
                                        "api_key",
                                        "max_num_seqs",
                                        "max_num_batched_tokens",
                                        "max_model_len",
                                        "kv_cache_memory",
                                        "kv_block_size",
                                        "max_queue_requests",
                                        "max_queue_prompt_tokens",
                                        "queue_timeout_s",
                                        "request_timeout_s",
                                        "drain_timeout_s",
                                        "max_body_bytes",
                                        "threads",
                                        "log_level",
                                        "metrics",
                                        "config"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_non_null(cfg_knob_find(names[i]));
}

static void test_cfg_each_source_overrides_the_previous(void **state)
{
    cfg_test *t = *state;
    const char *path =
        write_file(t, "{\"port\": 9001, \"max_num_seqs\": 4, \"host\": \"0.0.0.0\"}");
    char env_cfg[256], env_port[] = "FLEXQ_PORT=9002", env_seqs[] = "FLEXQ_MAX_NUM_SEQS=5";
    snprintf(env_cfg, sizeof env_cfg, "FLEXQ_CONFIG=%s", path);
    cfg_config c;

    /* file over defaults */
    const char *env1[] = {env_cfg, NULL};
    assert_int_equal(load(t, NULL, env1, &c), 0);
    assert_int_equal(c.port, 9001);
    assert_int_equal(c.max_num_seqs, 4);
    assert_string_equal(c.host, "0.0.0.0");
    assert_string_equal(c.config_path, path);
    assert_int_equal(c.max_num_batched_tokens, 512); /* untouched knobs keep their default */

    /* environment over file */
    const char *env2[] = {env_cfg, env_port, env_seqs, NULL};
    assert_int_equal(load(t, NULL, env2, &c), 0);
    assert_int_equal(c.port, 9002);
    assert_int_equal(c.max_num_seqs, 5);
    assert_string_equal(c.host, "0.0.0.0");

    /* flags over environment */
    const char *args[] = {"--port", "9003", NULL};
    assert_int_equal(load(t, args, env2, &c), 0);
    assert_int_equal(c.port, 9003);
    assert_int_equal(c.max_num_seqs, 5);

    /* --config over FLEXQ_CONFIG */
    const char *path2 = write_file(t, "{\"port\": 9004}");
    const char *args2[] = {"--config", path2, NULL};
    assert_int_equal(load(t, args2, env1, &c), 0);
    assert_int_equal(c.port, 9004);
    assert_int_equal(c.max_num_seqs, 16);
    assert_string_equal(c.config_path, path2);

    /* the last of a repeated flag wins */
    const char *args3[] = {"--port", "1", "--port=2", NULL};
    assert_int_equal(load(t, args3, NULL, &c), 0);
    assert_int_equal(c.port, 2);
}

static void test_cfg_every_knob_settable_by_flag(void **state)
{
    cfg_test *t = *state;
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    for (size_t i = 0; i < n; i++) {
        if (k[i].flags & CFG_K_NO_FILE)
            continue; /* --config reads a file: test_cfg_each_source_overrides_the_previous */
        char text[64], joined[128];
        other_value(&k[i], text, sizeof text);
        cfg_config want = expected_with(&k[i], text), c, d = cfg_default();
        /* --flag VALUE (booleans: --flag=VALUE) */
        const char *sep[] = {k[i].flag, text, NULL};
        snprintf(joined, sizeof joined, "%s=%s", k[i].flag, text);
        const char *eq[] = {joined, NULL};
        const char *const *args = k[i].type == CFG_T_BOOL ? eq : sep;
        if (load(t, args, NULL, &c) != 0)
            fail_msg("%s %s: %s", k[i].flag, text, t->err);
        assert_true(cfg_equal(&c, &want));
        assert_false(cfg_equal(&c, &d));
        /* --flag=VALUE */
        assert_int_equal(load(t, eq, NULL, &c), 0);
        assert_true(cfg_equal(&c, &want));
    }
}

static void test_cfg_every_knob_settable_by_env(void **state)
{
    cfg_test *t = *state;
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    cfg_config d = cfg_default();
    for (size_t i = 0; i < n; i++) {
        if (k[i].flags & CFG_K_NO_FILE)
            continue;
        char text[64], var[128];
        other_value(&k[i], text, sizeof text);
        snprintf(var, sizeof var, "%s=%s", k[i].env, text);
        const char *env[] = {"FLEXQ_UNRELATED=1", var, NULL};
        cfg_config want = expected_with(&k[i], text), c;
        if (load(t, NULL, env, &c) != 0)
            fail_msg("%s: %s", var, t->err);
        assert_true(cfg_equal(&c, &want));
        assert_false(cfg_equal(&c, &d));
    }
}

static void test_cfg_every_knob_settable_by_file(void **state)
{
    cfg_test *t = *state;
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    cfg_config d = cfg_default();
    for (size_t i = 0; i < n; i++) {
        if (!k[i].json_key)
            continue;
        char text[64], val[80], json[256];
        other_value(&k[i], text, sizeof text);
        json_value(&k[i], text, val, sizeof val);
        snprintf(json, sizeof json, "{\"%s\": %s}", k[i].json_key, val);
        /* one file per knob would exceed MAX_FILES: rewrite the same path */
        char path[128];
        snprintf(path, sizeof path, "%s/each.json", t->dir);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(json, f);
        fclose(f);
        const char *args[] = {"--config", path, NULL};
        cfg_config want = expected_with(&k[i], text), c;
        snprintf(want.config_path, sizeof want.config_path, "%s", path);
        int rc = load(t, args, NULL, &c);
        unlink(path);
        if (rc != 0)
            fail_msg("%s: %s", json, t->err);
        assert_true(cfg_equal(&c, &want));
        assert_false(cfg_equal(&c, &d));
    }
}

/* Loads with knob k set to text from the given source (0 flag, 1 env, 2 file) and checks that it
 * is refused with a message naming the knob, the source and what is allowed. */
static void expect_refused(cfg_test *t, const cfg_knob *k, const char *text, int source)
{
    char buf[CFG_PATH_CAP + 64], path[128], val[CFG_PATH_CAP + 8];
    cfg_config c;
    memset(&c, 0x5a, sizeof c);
    cfg_config before = c;
    int rc;
    if (source == 0) {
        snprintf(buf, sizeof buf, "%s=%s", k->flag, text);
        const char *args[] = {buf, NULL};
        rc = load(t, args, NULL, &c);
    } else if (source == 1) {
        snprintf(buf, sizeof buf, "%s=%s", k->env, text);
        const char *env[] = {buf, NULL};
        rc = load(t, NULL, env, &c);
    } else {
        snprintf(path, sizeof path, "%s/bad.json", t->dir);
        json_value(k, text, val, sizeof val);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "{\"%s\": %s}", k->json_key, val);
        fclose(f);
        const char *args[] = {"--config", path, NULL};
        rc = load(t, args, NULL, &c);
        unlink(path);
    }
    if (rc == 0)
        fail_msg("%s = \"%.40s\" from source %d was accepted", k->name, text, source);
    assert_true(rc == FQ_ERANGE || rc == FQ_EINVAL);
    assert_memory_equal(&c, &before, sizeof c); /* a failed load leaves *out alone */
    char name[80];
    snprintf(name, sizeof name, "%s: bad value from ", k->name);
    assert_err_has(t, name);
    if (source == 0)
        assert_err_has(t, k->flag);
    else if (source == 1)
        assert_err_has(t, k->env);
    else {
        snprintf(name, sizeof name, "key \"%s\"", k->json_key);
        assert_err_has(t, name);
    }
    assert_err_has(t, "allowed: ");
}

static void test_cfg_bounds_refused_with_clear_messages(void **state)
{
    cfg_test *t = *state;
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    static char longtext[CFG_PATH_CAP + 2];
    for (size_t i = 0; i < n; i++) {
        if (k[i].flags & CFG_K_NO_FILE)
            continue;
        char lo[64] = "", hi[64] = "", num[64];
        switch (k[i].type) {
        case CFG_T_INT:
        case CFG_T_UINT:
        case CFG_T_SIZE:
            snprintf(lo, sizeof lo, "%.0f", k[i].min - 1);
            snprintf(hi, sizeof hi, "%.0f", k[i].max + 1);
            break;
        case CFG_T_DOUBLE:
            snprintf(lo, sizeof lo, "%.17g", k[i].min - 0.5);
            snprintf(hi, sizeof hi, "%.17g", k[i].max + 0.5);
            break;
        case CFG_T_BOOL:
            snprintf(lo, sizeof lo, "maybe");
            break;
        case CFG_T_ENUM:
            snprintf(lo, sizeof lo, "nope");
            break;
        case CFG_T_STRING:
            break;
        }
        for (int src = 0; src < 3; src++) {
            if (k[i].type == CFG_T_STRING) {
                memset(longtext, 'a', (size_t)k[i].max + 1);
                longtext[(size_t)k[i].max + 1] = '\0';
                expect_refused(t, &k[i], longtext, src);
                if (k[i].min > 0 && src != 1) /* an empty variable counts as unset */
                    expect_refused(t, &k[i], "", src);
                continue;
            }
            /* a JSON boolean cannot be "maybe": the file refuses it for its type */
            if (k[i].type == CFG_T_BOOL && src == 2)
                continue;
            expect_refused(t, &k[i], lo, src);
            if (hi[0])
                expect_refused(t, &k[i], hi, src);
            if (k[i].type == CFG_T_INT || k[i].type == CFG_T_UINT) {
                snprintf(num, sizeof num, "from %.0f to %.0f", k[i].min, k[i].max);
                assert_err_has(t, num);
                assert_err_has(t, "is out of range");
            } else if (k[i].type == CFG_T_DOUBLE) {
                snprintf(num, sizeof num, "from %g to %g", k[i].min, k[i].max);
                assert_err_has(t, num);
                assert_err_has(t, "is out of range");
            }
        }
        /* the bounds themselves are allowed */
        if (k[i].type == CFG_T_INT || k[i].type == CFG_T_UINT || k[i].type == CFG_T_SIZE ||
            k[i].type == CFG_T_DOUBLE) {
            cfg_config c = cfg_default();
            snprintf(num, sizeof num, "%.17g", k[i].min);
            assert_int_equal(cfg_knob_set(&c, &k[i], num, t->err, sizeof t->err), 0);
            snprintf(num, sizeof num, "%.17g", k[i].max);
            assert_int_equal(cfg_knob_set(&c, &k[i], num, t->err, sizeof t->err), 0);
        }
    }
    /* spot checks of the whole message */
    const char *args[] = {"--port", "70000", NULL};
    cfg_config c;
    assert_int_equal(load(t, args, NULL, &c), FQ_ERANGE);
    assert_string_equal(t->err, "port: bad value from flag --port: \"70000\" is out of range; "
                                "allowed: an integer from 1 to 65535");
    const char *env[] = {"FLEXQ_BACKEND=tpu", NULL};
    assert_int_equal(load(t, NULL, env, &c), FQ_EINVAL);
    assert_string_equal(t->err, "backend: bad value from environment variable FLEXQ_BACKEND: "
                                "\"tpu\" is not a known name; allowed: one of cpu, cuda");
    const char *args2[] = {"--kv-cache-memory", "4TiB", NULL};
    assert_int_equal(load(t, args2, NULL, &c), FQ_ERANGE);
    assert_err_has(t, "a size from 1MiB to 1TiB");
    const char *args3[] = {"--max-num-seqs", "sixteen", NULL};
    assert_int_equal(load(t, args3, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "\"sixteen\" is not an integer");
}

static void test_cfg_cross_check_batched_tokens_vs_seqs(void **state)
{
    cfg_test *t = *state;
    const char *args[] = {"--max-num-seqs", "64", NULL};
    const char *env[] = {"FLEXQ_MAX_NUM_BATCHED_TOKENS=32", NULL};
    cfg_config c;
    assert_int_equal(load(t, args, env, &c), FQ_ERANGE);
    assert_err_has(t, "max_num_batched_tokens (32, from environment variable "
                      "FLEXQ_MAX_NUM_BATCHED_TOKENS) must be at least max_num_seqs (64, from "
                      "flag --max-num-seqs)");
    const char *args2[] = {"--max-num-seqs", "512", NULL};
    assert_int_equal(load(t, args2, NULL, &c), 0);
}

static void test_cfg_unknown_flags_refused(void **state)
{
    cfg_test *t = *state;
    cfg_config c;
    const char *a1[] = {"--prot", "8000", NULL};
    assert_int_equal(load(t, a1, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "unknown flag --prot");
    assert_err_has(t, "did you mean --port?");
    const char *a2[] = {"--frobnicate=1", NULL};
    assert_int_equal(load(t, a2, NULL, &c), FQ_EINVAL);
    assert_string_equal(t->err, "unknown flag --frobnicate (see --help)");
    const char *a3[] = {"model.gguf", NULL};
    assert_int_equal(load(t, a3, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "unexpected argument \"model.gguf\"");
    const char *a4[] = {"--port", NULL};
    assert_int_equal(load(t, a4, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "port: flag --port needs a value");
    const char *a5[] = {"--model", "--port", "1", NULL};
    assert_int_equal(load(t, a5, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "flag --model needs a value");
    const char *a6[] = {"--no-port", NULL};
    assert_int_equal(load(t, a6, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "not a boolean flag");
    const char *a7[] = {"-p", "1", NULL};
    assert_int_equal(load(t, a7, NULL, &c), FQ_EINVAL);
    const char *a8[] = {"--", NULL};
    assert_int_equal(load(t, a8, NULL, &c), FQ_EINVAL);
    /* help is accepted by cfg_load and reported by cfg_help_requested */
    const char *a9[] = {"--port", "1", "--help", NULL};
    assert_int_equal(load(t, a9, NULL, &c), 0);
    char *h1[] = {(char *)"x", (char *)"-h", NULL};
    char *h2[] = {(char *)"x", (char *)"--api-key", (char *)"-h", NULL};
    char *h3[] = {(char *)"x", (char *)"--port=1", (char *)"--metrics", (char *)"--help", NULL};
    char *h4[] = {(char *)"x", (char *)"--port", (char *)"1", NULL};
    assert_true(cfg_help_requested(2, h1));
    assert_false(cfg_help_requested(3, h2));
    assert_true(cfg_help_requested(4, h3));
    assert_false(cfg_help_requested(3, h4));
}

static void test_cfg_unknown_keys_and_bad_files_refused(void **state)
{
    cfg_test *t = *state;
    cfg_config c;
    struct {
        const char *json;
        int rc;
        const char *msg;
    } cases[] = {
        {"{\"max_num_seq\": 4}", FQ_EINVAL,
         "unknown key \"max_num_seq\"; did you mean max_num_seqs?"},
        {"{\"bogus\": 4}", FQ_EINVAL, "unknown key \"bogus\""},
        {"{\"config\": \"x.json\"}", FQ_EINVAL, "unknown key \"config\""},
        {"{\"port\": \"8000\"}", FQ_EINVAL, "port: bad value from config file"},
        {"{\"port\": 80.5}", FQ_EINVAL, "expected a JSON integer"},
        {"{\"metrics\": \"true\"}", FQ_EINVAL, "expected true or false"},
        {"{\"host\": 1}", FQ_EINVAL, "expected a JSON string"},
        {"{\"host\": null}", FQ_EINVAL, "expected a JSON string"},
        {"{\"port\": 1, \"port\": 2}", FQ_EFORMAT, "duplicate"},
        {"[1, 2]", FQ_EFORMAT, "the top level must be a JSON object"},
        {"{\"port\": 1,}", FQ_EFORMAT, ":1:"},
        {"", FQ_EFORMAT, "config file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_file(t, cases[i].json);
        const char *args[] = {"--config", path, NULL};
        int rc = load(t, args, NULL, &c);
        if (rc != cases[i].rc)
            fail_msg("%s: rc %d, want %d (%s)", cases[i].json, rc, cases[i].rc, t->err);
        assert_err_has(t, cases[i].msg);
        assert_err_has(t, path);
    }
    const char *args[] = {"--config", "/nonexistent/flexq.json", NULL};
    assert_int_equal(load(t, args, NULL, &c), FQ_EIO);
    assert_err_has(t, "config file");
    assert_err_has(t, "/nonexistent/flexq.json");
    /* FLEXQ_CONFIG pointing nowhere is refused too; an empty one is unset */
    const char *env[] = {"FLEXQ_CONFIG=/nonexistent/flexq.json", NULL};
    assert_int_equal(load(t, NULL, env, &c), FQ_EIO);
    const char *env2[] = {"FLEXQ_CONFIG=", NULL};
    assert_int_equal(load(t, NULL, env2, &c), 0);
}

static void test_cfg_sizes_with_units(void **state)
{
    cfg_test *t = *state;
    struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {
        {"0", 0},
        {"1048576", 1048576},
        {"512MiB", 512ull << 20},
        {"2GiB", 2ull << 30},
        {"2gib", 2ull << 30},
        {"1.5GiB", 3ull << 29},
        {"1 KiB", 1024},
        {"1k", 1024},
        {"1KB", 1000},
        {"3M", 3ull << 20},
        {"3MB", 3000000},
        {"1TiB", 1ull << 40},
        {"2T", 2ull << 40},
        {"7B", 7},
        {"0.5KiB", 512},
        {"0.25GB", 250000000},
        {"16777215TiB", 16777215ull << 40},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t b = 1;
        if (cfg_parse_size(ok[i].text, &b) != 0)
            fail_msg("\"%s\" refused", ok[i].text);
        assert_int_equal(b, ok[i].bytes);
    }
    const char *bad[] = {
        "",      "MiB", "-1",   "1.2345B", "1XB",   " 1",  "1 ",  "1..5",           "1.MiB",
        ".5MiB", "1e6", "0x10", "1 2",     "1MiBs", "1.5", "1iB", "1.0000000001GiB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t b = 42;
        if (cfg_parse_size(bad[i], &b) != FQ_EINVAL)
            fail_msg("\"%s\" accepted as %" PRIu64, bad[i], b);
        assert_int_equal(b, 42);
    }
    uint64_t b;
    assert_int_equal(cfg_parse_size("18446744073709551616", &b), FQ_ERANGE);
    assert_int_equal(cfg_parse_size("16777216TiB", &b), FQ_ERANGE);

    /* the same syntax from each source; the dump and help show units */
    cfg_config c;
    const char *args[] = {"--kv-cache-memory=2GiB", NULL};
    assert_int_equal(load(t, args, NULL, &c), 0);
    assert_int_equal(c.kv_cache_memory_bytes, 2ull << 30);
    const char *env[] = {"FLEXQ_KV_CACHE_MEMORY=1.5GiB", "FLEXQ_MAX_BODY_BYTES=64KiB", NULL};
    assert_int_equal(load(t, NULL, env, &c), 0);
    assert_int_equal(c.kv_cache_memory_bytes, 3ull << 29);
    assert_int_equal(c.max_body_bytes, 65536);
    const char *path =
        write_file(t, "{\"kv_cache_memory\": 3221225472, \"max_body_bytes\": \"2MB\"}");
    const char *args2[] = {"--config", path, NULL};
    assert_int_equal(load(t, args2, NULL, &c), 0);
    assert_int_equal(c.kv_cache_memory_bytes, 3ull << 30);
    assert_int_equal(c.max_body_bytes, 2000000);
    char buf[32];
    assert_int_equal(cfg_knob_format(&c, cfg_knob_find("kv_cache_memory"), buf, sizeof buf), 4);
    assert_string_equal(buf, "3GiB");
    cfg_knob_format(&c, cfg_knob_find("max_body_bytes"), buf, sizeof buf);
    assert_string_equal(buf, "2000000");
    c.max_body_bytes = 1536;
    cfg_knob_format(&c, cfg_knob_find("max_body_bytes"), buf, sizeof buf);
    assert_string_equal(buf, "1536");
    c.max_body_bytes = 3 << 10;
    cfg_knob_format(&c, cfg_knob_find("max_body_bytes"), buf, sizeof buf);
    assert_string_equal(buf, "3KiB");
    const char *args3[] = {"--max-body-bytes", "1.5", NULL};
    assert_int_equal(load(t, args3, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "not a size");
}

static void test_cfg_booleans(void **state)
{
    cfg_test *t = *state;
    cfg_config c;
    struct {
        const char *arg;
        bool want;
    } flags[] = {{"--metrics", true},      {"--no-metrics", false},  {"--metrics=false", false},
                 {"--metrics=0", false},   {"--metrics=OFF", false}, {"--metrics=no", false},
                 {"--metrics=true", true}, {"--metrics=1", true},    {"--metrics=Yes", true},
                 {"--metrics=on", true}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const char *pre[] = {"--no-metrics", flags[i].arg, NULL};
        assert_int_equal(load(t, flags[i].want ? pre : pre + 1, NULL, &c), 0);
        assert_int_equal(c.metrics, flags[i].want);
    }
    /* a boolean flag alone does not eat the next argument */
    const char *a1[] = {"--metrics", "--port", "9", NULL};
    assert_int_equal(load(t, a1, NULL, &c), 0);
    assert_true(c.metrics);
    assert_int_equal(c.port, 9);
    const char *a2[] = {"--metrics", "false", NULL};
    assert_int_equal(load(t, a2, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "unexpected argument \"false\"");
    const char *a3[] = {"--no-metrics=true", NULL};
    assert_int_equal(load(t, a3, NULL, &c), FQ_EINVAL);
    assert_err_has(t, "takes no value");
    const char *env[] = {"FLEXQ_METRICS=off", NULL};
    assert_int_equal(load(t, NULL, env, &c), 0);
    assert_false(c.metrics);
    const char *env2[] = {"FLEXQ_METRICS=maybe", NULL};
    assert_int_equal(load(t, NULL, env2, &c), FQ_EINVAL);
    assert_err_has(t, "allowed: true or false");
    const char *path = write_file(t, "{\"metrics\": false}");
    const char *a4[] = {"--config", path, NULL};
    assert_int_equal(load(t, a4, NULL, &c), 0);
    assert_false(c.metrics);
    const char *a5[] = {"--config", path, "--metrics", NULL};
    assert_int_equal(load(t, a5, NULL, &c), 0);
    assert_true(c.metrics);
}

static void test_cfg_empty_env_counts_as_unset(void **state)
{
    cfg_test *t = *state;
    const char *path = write_file(t, "{\"api_key\": \"from-file\", \"port\": 9100}");
    char cfgvar[256];
    snprintf(cfgvar, sizeof cfgvar, "FLEXQ_CONFIG=%s", path);
    const char *env[] = {cfgvar, "FLEXQ_API_KEY=", "FLEXQ_PORT=", NULL};
    cfg_config c;
    assert_int_equal(load(t, NULL, env, &c), 0);
    assert_string_equal(c.api_key, "from-file");
    assert_int_equal(c.port, 9100);
    /* an explicit empty flag value does override */
    const char *args[] = {"--api-key=", NULL};
    assert_int_equal(load(t, args, env, &c), 0);
    assert_string_equal(c.api_key, "");
}

static void test_cfg_env_null_reads_the_process_environment(void **state)
{
    (void)state;
    assert_int_equal(setenv("FLEXQ_MAX_NUM_SEQS", "7", 1), 0);
    char *argv[] = {(char *)"flexq-serve", NULL};
    cfg_config c;
    char err[256];
    int rc = cfg_load(1, argv, NULL, &c, err, sizeof err);
    unsetenv("FLEXQ_MAX_NUM_SEQS");
    assert_int_equal(rc, 0);
    assert_int_equal(c.max_num_seqs, 7);
}

static void test_cfg_secret_never_echoed(void **state)
{
    cfg_test *t = *state;
    char key[400], arg[420];
    memset(key, 'S', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    snprintf(arg, sizeof arg, "--api-key=%s", key);
    const char *args[] = {arg, NULL};
    cfg_config c;
    assert_int_equal(load(t, args, NULL, &c), FQ_ERANGE);
    assert_err_has(t, "api_key: bad value from flag --api-key: the value is too long");
    assert_null(strstr(t->err, "SSSS"));
}

static void test_cfg_served_model_name_derived_from_model(void **state)
{
    cfg_test *t = *state;
    struct {
        const char *model, *name;
    } cases[] = {
        {"/m/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1"},
        {"smol.fq6.safetensors", "smol"},
        {"dir/model.safetensors", "model"},
        {"/models/SmolLM2-1.7B/", "SmolLM2-1.7B"},
        {"/models/SmolLM2-1.7B", "SmolLM2-1.7B"},
        {"weights.bin", "weights.bin"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"--model", cases[i].model, NULL};
        cfg_config c;
        assert_int_equal(load(t, args, NULL, &c), 0);
        assert_string_equal(c.served_model_name, cases[i].name);
    }
    const char *args[] = {"--model", "a/b.gguf", "--served-model-name", "smol", NULL};
    cfg_config c;
    assert_int_equal(load(t, args, NULL, &c), 0);
    assert_string_equal(c.served_model_name, "smol");
}

static void test_cfg_validate_for_serve(void **state)
{
    (void)state;
    char err[512];
    cfg_config c = cfg_default();
    assert_int_equal(cfg_validate_for_serve(&c, err, sizeof err), FQ_EINVAL);
    assert_non_null(strstr(err, "--model"));
    assert_non_null(strstr(err, "FLEXQ_MODEL"));
    assert_non_null(strstr(err, "\"model\""));
    snprintf(c.model, sizeof c.model, "m.gguf");
    assert_int_equal(cfg_validate_for_serve(&c, err, sizeof err), 0);
    cfg_config bad = c;
    bad.port = 0;
    assert_int_equal(cfg_validate_for_serve(&bad, err, sizeof err), FQ_ERANGE);
    assert_non_null(strstr(err, "port"));
    bad = c;
    bad.backend = (cfg_backend)7;
    assert_int_equal(cfg_validate_for_serve(&bad, err, sizeof err), FQ_EINVAL);
    assert_non_null(strstr(err, "backend"));
    assert_string_equal(cfg_backend_name(bad.backend), "?");
    bad = c;
    bad.queue_timeout_s = -1;
    assert_int_equal(cfg_validate_for_serve(&bad, err, sizeof err), FQ_ERANGE);
    bad = c;
    bad.max_num_seqs = 1024;
    assert_int_equal(cfg_validate_for_serve(&bad, err, sizeof err), FQ_ERANGE);
    assert_non_null(strstr(err, "max_num_batched_tokens"));
    bad = c;
    memset(bad.host, 'h', sizeof bad.host);
    assert_int_equal(cfg_validate_for_serve(&bad, err, sizeof err), FQ_EINVAL);
}

static void test_cfg_help_lists_every_flag_and_env(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg_print_help(f);
    fclose(f);
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    for (size_t i = 0; i < n; i++) {
        char want[128];
        snprintf(want, sizeof want, "  %s", k[i].flag);
        if (!strstr(text, want))
            fail_msg("--help lacks %s", k[i].flag);
        snprintf(want, sizeof want, "env %s", k[i].env);
        if (!strstr(text, want))
            fail_msg("--help lacks %s", k[i].env);
        if (k[i].json_key) {
            snprintf(want, sizeof want, "key \"%s\"", k[i].json_key);
            if (!strstr(text, want))
                fail_msg("--help lacks %s", want);
        }
        if (!strstr(text, k[i].section))
            fail_msg("--help lacks the section %s", k[i].section);
    }
    assert_non_null(strstr(text, "-h, --help"));
    assert_non_null(strstr(text, "--no-metrics"));
    assert_non_null(strstr(text, "Default: 8000."));
    assert_non_null(strstr(text, "Default: 256MiB."));
    assert_non_null(strstr(text, "one of cpu, cuda"));
    assert_non_null(strstr(text, "defaults < config file < environment < flags"));
    /* no line wider than 100 columns */
    for (const char *p = text; *p;) {
        size_t w = strcspn(p, "\n");
        if (w > 100)
            fail_msg("help line of %zu columns: %.*s", w, (int)w, p);
        p += w + (p[w] == '\n');
    }
    free(text);
}

static void test_cfg_example_file_loads(void **state)
{
    cfg_test *t = *state;
    const char *src = getenv("FLEXQ_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/config/flexq-serve.example.json", src ? src : ".");
    const char *args[] = {"--config", path, NULL};
    cfg_config c;
    if (load(t, args, NULL, &c) != 0)
        fail_msg("%s", t->err);
    /* every value is the default except the model, which the example names */
    cfg_config want = cfg_default();
    snprintf(want.config_path, sizeof want.config_path, "%s", path);
    snprintf(want.model, sizeof want.model, "models/SmolLM2-135M-Instruct.fq6.safetensors");
    snprintf(want.served_model_name, sizeof want.served_model_name, "SmolLM2-135M-Instruct");
    assert_true(cfg_equal(&c, &want));
    assert_int_equal(cfg_validate_for_serve(&c, t->err, sizeof t->err), 0);
    /* and it lists every key of the table */
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    assert_non_null(root);
    size_t n;
    const cfg_knob *k = cfg_knobs(&n);
    size_t n_keys = 0;
    for (size_t i = 0; i < n; i++) {
        if (!k[i].json_key)
            continue;
        n_keys++;
        if (!json_object_get(root, k[i].json_key))
            fail_msg("the example file lacks \"%s\"", k[i].json_key);
    }
    assert_int_equal(json_object_size(root), n_keys);
    json_decref(root);
}

static void test_cfg_dump_json_redacts_and_reloads(void **state)
{
    cfg_test *t = *state;
    const char *args[] = {
        "--model",           "/m/x.gguf", "--api-key",         "sk-very-secret", "--port", "8123",
        "--kv-cache-memory", "3GiB",      "--queue-timeout-s", "0.25",           "--mode", "w6a8",
        "--no-metrics",      NULL};
    cfg_config c;
    assert_int_equal(load(t, args, NULL, &c), 0);
    char *s = cfg_dump_json(&c);
    assert_non_null(s);
    assert_null(strstr(s, "sk-very-secret"));
    assert_non_null(strstr(s, "\"api_key\":\"<redacted>\""));
    assert_non_null(strstr(s, "\"kv_cache_memory\":\"3GiB\""));
    assert_non_null(strstr(s, "\"port\":8123"));
    assert_non_null(strstr(s, "\"mode\":\"w6a8\""));
    assert_null(strchr(s, '\n'));
    /* the dump is a valid config file that loads back to the same values */
    const char *path = write_file(t, s);
    free(s);
    const char *args2[] = {"--config", path, NULL};
    cfg_config back;
    assert_int_equal(load(t, args2, NULL, &back), 0);
    assert_string_equal(back.api_key, "<redacted>");
    snprintf(back.api_key, sizeof back.api_key, "%s", c.api_key);
    snprintf(back.config_path, sizeof back.config_path, "%s", c.config_path);
    assert_true(cfg_equal(&back, &c));
    /* an unset key stays "" in the dump */
    cfg_config d = cfg_default();
    s = cfg_dump_json(&d);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"api_key\":\"\""));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cfg_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_table_follows_naming_and_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_each_source_overrides_the_previous, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cfg_every_knob_settable_by_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_every_knob_settable_by_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_every_knob_settable_by_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_bounds_refused_with_clear_messages, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cfg_cross_check_batched_tokens_vs_seqs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cfg_unknown_flags_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_unknown_keys_and_bad_files_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cfg_sizes_with_units, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_booleans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_empty_env_counts_as_unset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_env_null_reads_the_process_environment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cfg_secret_never_echoed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_served_model_name_derived_from_model, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cfg_validate_for_serve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_help_lists_every_flag_and_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_example_file_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_dump_json_redacts_and_reloads, setup, teardown),
    };
    return cmocka_run_group_tests_name("cfg", tests, NULL, NULL);
}

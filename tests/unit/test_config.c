/*
 * test_config.c - the config is validated whole (every error at once, with its key path),
 * defaults and per-provider overrides apply field by field, secrets come from env and files
 * and never show up in an error, and snapshots are refcounted.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define PEPPER_HEX "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static tg_config_t *parse_ok(const char *json)
{
    tg_buf_t errs;
    tg_buf_init(&errs, 1 << 16);
    tg_config_t *c = NULL;
    int rc = tg_config_parse(json, strlen(json), "test.json", &c, &errs);
    if (rc != 0)
        fprintf(stderr, "unexpected errors:\n%s", errs.data ? errs.data : "");
    assert_int_equal(rc, 0);
    assert_non_null(c);
    assert_int_equal(errs.len, 0);
    tg_buf_dispose(&errs);
    return c;
}

/* Parses a config that must fail; returns the error text (caller frees). */
static char *parse_fail(const char *json)
{
    tg_buf_t errs;
    tg_buf_init(&errs, 1 << 16);
    tg_config_t *c = (tg_config_t *)1;
    assert_int_equal(tg_config_parse(json, strlen(json), "test.json", &c, &errs), TG_ECONFIG);
    assert_null(c);
    assert_non_null(errs.data);
    size_t len = 0;
    return tg_buf_take(&errs, &len);
}

static void assert_has_line(const char *errs, const char *line)
{
    char want[600];
    snprintf(want, sizeof(want), "%s\n", line);
    if (strstr(errs, want) == NULL)
        fail_msg("missing error line: %s\nin:\n%s", line, errs);
}

static unsigned count_lines(const char *s)
{
    unsigned n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static const char *full_config =
    "{\n"
    "  \"listen\": {\"data\": \"127.0.0.1:8080\", \"admin\": \"127.0.0.1:8081\"},\n"
    "  \"workers\": 3,\n"
    "  \"log_level\": \"debug\",\n"
    "  \"database\": {\"url\": \"host=/tmp port=5432 user=postgres dbname=tollgate\", \"pool_size\": 4},\n"
    "  \"secrets\": {\"key_pepper_env\": \"TG_TEST_PEPPER\"},\n"
    "  \"limits\": {\"max_body_bytes\": 2048, \"max_upstream_body_bytes\": 4096,\n"
    "             \"max_sse_event_bytes\": 8192, \"stream_buffer_bytes\": 16384},\n"
    "  \"timeouts\": {\"connect_ms\": 1000, \"first_byte_ms\": 2000, \"idle_ms\": 3000, \"total_ms\": "
    "4000},\n"
    "  \"shutdown_grace_ms\": 5000, \"retry_wait_cap_ms\": 6000, \"key_cache_ttl_ms\": 7000,\n"
    "  \"max_attempts_per_target\": 2,\n"
    "  \"providers\": {\n"
    "    \"sim-openai\": {\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:9100/openai/v1/\",\n"
    "                   \"api_key_env\": \"TG_TEST_SIM_KEY\",\n"
    "                   \"timeouts\": {\"first_byte_ms\": 500},\n"
    "                   \"breaker\": {\"failure_threshold\": 5},\n"
    "                   \"health\": {\"enabled\": true, \"interval_ms\": 1000},\n"
    "                   \"latency_threshold_ms\": 800},\n"
    "    \"sim-anthropic\": {\"kind\": \"anthropic\", \"base_url\": \"http://127.0.0.1:9100/anthropic\",\n"
    "                      \"anthropic_version\": \"2024-01-01\"},\n"
    "    \"gem\": {\"kind\": \"gemini\"}\n"
    "  },\n"
    "  \"models\": {\n"
    "    \"gpt-4o-mini\": {\"provider\": \"sim-openai\", \"upstream\": \"gpt-4o-mini-2024\", "
    "\"context_window\": "
    "128000},\n"
    "    \"claude-3-5-haiku\": {\"provider\": \"sim-anthropic\"},\n"
    "    \"gemini-1.5-pro\": {\"provider\": \"gem\"}\n"
    "  },\n"
    "  \"chains\": {\n"
    "    \"smart\": {\"targets\": [\"gpt-4o-mini\", \"claude-3-5-haiku\"], \"context_fallback\": "
    "\"gemini-1.5-pro\"}\n"
    "  }\n"
    "}\n";

static void test_full_config(void **state)
{
    setenv("TG_TEST_PEPPER", PEPPER_HEX, 1);
    setenv("TG_TEST_SIM_KEY", "sk-sim-123", 1);
    tg_config_t *c = parse_ok(full_config);

    assert_string_equal(c->data_host, "127.0.0.1");
    assert_int_equal(c->data_port, 8080);
    assert_int_equal(c->admin_port, 8081);
    assert_int_equal(c->workers, 3);
    assert_string_equal(c->database_url, "host=/tmp port=5432 user=postgres dbname=tollgate");
    assert_int_equal(c->db_pool_size, 4);
    assert_true(c->has_pepper);
    assert_int_equal(c->key_pepper[0], 0x00);
    assert_int_equal(c->key_pepper[1], 0x11);
    assert_int_equal(c->key_pepper[31], 0xff);
    assert_int_equal(c->max_body_bytes, 2048);
    assert_int_equal(c->stream_buffer_bytes, 16384);
    assert_int_equal(c->shutdown_grace_ms, 5000);
    assert_int_equal(c->retry_wait_cap_ms, 6000);
    assert_int_equal(c->key_cache_ttl_ms, 7000);
    assert_int_equal(c->max_attempts_per_target, 2);

    assert_int_equal(c->n_providers, 3);
    const tg_provider_cfg_t *p = tg_config_find_provider(c, "sim-openai");
    assert_non_null(p);
    assert_int_equal(p->kind, TG_KIND_OPENAI);
    assert_string_equal(p->base_url, "http://127.0.0.1:9100/openai/v1"); /* trailing slash dropped */
    assert_string_equal(p->api_key, "sk-sim-123");
    /* field-by-field override of the top-level timeouts */
    assert_int_equal(p->timeouts.connect_ms, 1000);
    assert_int_equal(p->timeouts.first_byte_ms, 500);
    assert_int_equal(p->timeouts.idle_ms, 3000);
    assert_int_equal(p->timeouts.total_ms, 4000);
    assert_int_equal(p->breaker.failure_threshold, 5);
    assert_int_equal(p->breaker.open_ms, 30000);
    assert_int_equal(p->breaker.half_open_probes, 1);
    assert_true(p->health.enabled);
    assert_int_equal(p->health.interval_ms, 1000);
    assert_int_equal(p->health.timeout_ms, 2000);
    assert_int_equal(p->latency_threshold_ms, 800);

    const tg_provider_cfg_t *a = tg_config_find_provider(c, "sim-anthropic");
    assert_int_equal(a->kind, TG_KIND_ANTHROPIC);
    assert_string_equal(a->anthropic_version, "2024-01-01");
    assert_null(a->api_key);
    const tg_provider_cfg_t *g = tg_config_find_provider(c, "gem");
    assert_int_equal(g->kind, TG_KIND_GEMINI);
    assert_string_equal(g->base_url, "https://generativelanguage.googleapis.com"); /* the kind's default */
    assert_string_equal(tg_provider_kind_name(g->kind), "gemini");

    const tg_model_cfg_t *m = tg_config_find_model(c, "gpt-4o-mini");
    assert_non_null(m);
    assert_ptr_equal(m->provider, p);
    assert_string_equal(m->upstream, "gpt-4o-mini-2024");
    assert_string_equal(m->target_key, "sim-openai/gpt-4o-mini-2024");
    assert_int_equal(m->context_window, 128000);
    const tg_model_cfg_t *h = tg_config_find_model(c, "claude-3-5-haiku");
    assert_string_equal(h->upstream, "claude-3-5-haiku"); /* upstream defaults to the name */
    assert_null(tg_config_find_model(c, "smart"));

    const tg_chain_cfg_t *ch = tg_config_find_chain(c, "smart");
    assert_non_null(ch);
    assert_int_equal(ch->n_targets, 2);
    assert_ptr_equal(ch->targets[0], m);
    assert_ptr_equal(ch->targets[1], h);
    assert_ptr_equal(ch->context_fallback, tg_config_find_model(c, "gemini-1.5-pro"));
    assert_null(tg_config_find_chain(c, "gpt-4o-mini"));

    tg_config_unref(c);
}

static void test_defaults(void **state)
{
    tg_config_t *c = parse_ok("{}");
    assert_string_equal(c->data_host, "127.0.0.1");
    assert_int_equal(c->data_port, 8080);
    assert_string_equal(c->admin_host, "127.0.0.1");
    assert_int_equal(c->admin_port, 8081);
    assert_true(c->workers >= 1); /* 0 resolves to the number of online CPUs */
    assert_int_equal(c->workers, (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
    assert_null(c->database_url);
    assert_int_equal(c->db_pool_size, 2);
    assert_false(c->has_pepper);
    assert_int_equal(c->max_body_bytes, 1048576);
    assert_int_equal(c->max_upstream_body_bytes, 8388608);
    assert_int_equal(c->max_sse_event_bytes, 262144);
    assert_int_equal(c->stream_buffer_bytes, 262144);
    assert_int_equal(c->timeouts.connect_ms, 3000);
    assert_int_equal(c->timeouts.first_byte_ms, 60000);
    assert_int_equal(c->timeouts.idle_ms, 30000);
    assert_int_equal(c->timeouts.total_ms, 600000);
    assert_int_equal(c->shutdown_grace_ms, 10000);
    assert_int_equal(c->retry_wait_cap_ms, 10000);
    assert_int_equal(c->key_cache_ttl_ms, 60000);
    assert_int_equal(c->max_attempts_per_target, 1);
    assert_int_equal(c->n_providers, 0);
    tg_config_unref(c);

    c = parse_ok(
        "{\"providers\": {\"p\": {\"kind\": \"anthropic\"}}, \"models\": {\"m\": {\"provider\": \"p\"}}}");
    const tg_provider_cfg_t *p = &c->providers[0];
    assert_string_equal(p->base_url, "https://api.anthropic.com");
    assert_string_equal(p->anthropic_version, "2023-06-01");
    assert_int_equal(p->timeouts.first_byte_ms, 60000);
    assert_int_equal(p->breaker.failure_threshold, 3);
    assert_int_equal(p->breaker.open_ms, 30000);
    assert_int_equal(p->breaker.half_open_probes, 1);
    assert_false(p->health.enabled);
    assert_int_equal(p->health.interval_ms, 10000);
    assert_int_equal(p->health.timeout_ms, 2000);
    assert_int_equal(p->latency_threshold_ms, 0);
    assert_string_equal(c->models[0].target_key, "p/m");
    tg_config_unref(c);
}

static void test_every_error_at_once(void **state)
{
    unsetenv("TG_TEST_UNSET_PEPPER");
    unsetenv("TG_TEST_UNSET_KEY");
    char *errs =
        parse_fail("{\n"
                   "  \"listen\": {\"data\": \"abc\", \"admin\": \"0.0.0.0:8081\"},\n"
                   "  \"workers\": -1, \"log_level\": \"loud\", \"typo\": 1,\n"
                   "  \"database\": {\"pool_size\": 0},\n"
                   "  \"secrets\": {\"key_pepper_env\": \"TG_TEST_UNSET_PEPPER\"},\n"
                   "  \"timeouts\": {\"connect_ms\": \"3s\"},\n"
                   "  \"providers\": {\"p\": {\"kind\": \"x\", \"api_key_env\": \"TG_TEST_UNSET_KEY\",\n"
                   "                        \"breaker\": {\"failure_threshold\": 0}, \"colour\": 1}},\n"
                   "  \"models\": {\"gpt\": {\"provider\": \"x\"}, \"m2\": {\"provider\": \"p\", "
                   "\"upstream\": \"a b\"}, \"m3\": {}},\n"
                   "  \"chains\": {\"gpt\": {\"targets\": [\"nope\", \"m2\", \"m2\", 7], "
                   "\"context_fallback\": \"zz\"},\n"
                   "             \"empty\": {\"targets\": []}}\n"
                   "}\n");
    assert_has_line(errs, "typo: unknown key");
    assert_has_line(errs, "listen.data: invalid address \"abc\" (want host:port)");
    assert_has_line(errs,
                    "listen.admin: must be a loopback address until admin auth exists, got \"0.0.0.0:8081\"");
    assert_has_line(errs, "workers: must be an integer between 0 and 1024, got -1");
    assert_has_line(errs, "log_level: must be one of error, warn, info, debug, got \"loud\"");
    assert_has_line(errs, "database.pool_size: must be an integer between 1 and 64, got 0");
    assert_has_line(errs, "database: url or url_env is required");
    assert_has_line(errs, "secrets.key_pepper_env: environment variable \"TG_TEST_UNSET_PEPPER\" is not set");
    assert_has_line(errs, "timeouts.connect_ms: must be an integer between 1 and 86400000, got \"3s\"");
    assert_has_line(errs, "providers.p.kind: must be one of openai, anthropic, gemini, got \"x\"");
    assert_has_line(errs, "providers.p.colour: unknown key");
    assert_has_line(errs, "providers.p.api_key_env: environment variable \"TG_TEST_UNSET_KEY\" is not set");
    assert_has_line(errs,
                    "providers.p.breaker.failure_threshold: must be an integer between 1 and 1000, got 0");
    assert_has_line(errs, "models.gpt.provider: unknown provider \"x\"");
    assert_has_line(errs, "models.m2.upstream: invalid model id \"a b\"");
    assert_has_line(errs, "models.m3.provider: is required");
    assert_has_line(errs,
                    "chains.gpt: \"gpt\" is already a model name (models and chains share one namespace)");
    assert_has_line(errs, "chains.gpt.targets[0]: unknown model \"nope\"");
    assert_has_line(errs, "chains.gpt.targets[2]: model \"m2\" is listed twice");
    assert_has_line(errs, "chains.gpt.targets[3]: must be a model name, got 7");
    assert_has_line(errs, "chains.gpt.context_fallback: unknown model \"zz\"");
    assert_has_line(errs, "chains.empty.targets: must be a list of 1 to 16 model names");
    assert_int_equal(count_lines(errs), 22);
    free(errs);
}

static void test_json_errors(void **state)
{
    char *errs = parse_fail("{\"workers\": 1, \"workers\": 2}");
    assert_non_null(strstr(errs, "test.json: invalid JSON at line 1"));
    assert_non_null(strstr(errs, "duplicate"));
    free(errs);
    errs = parse_fail("[1]");
    assert_has_line(errs, "test.json: the top level must be an object");
    free(errs);
    errs = parse_fail("{\"listen\": {\"data\": \"127.0.0.1:99999\"}, \"providers\": []}");
    assert_has_line(errs, "listen.data: invalid address \"127.0.0.1:99999\" (want host:port)");
    assert_has_line(errs, "providers: must be an object, got an array");
    free(errs);
}

static void test_secrets_never_echoed(void **state)
{
    setenv("TG_TEST_BAD_PEPPER", "TOPSECRETPEPPER", 1);
    setenv("TG_TEST_BAD_KEY", "sk-TOPSECRETKEY with-space", 1);
    char *errs =
        parse_fail("{\"database\": {\"url\": \"postgresql://u:TOPSECRETPW@h/db?bogus_param=1\"},\n"
                   " \"secrets\": {\"key_pepper_env\": \"TG_TEST_BAD_PEPPER\"},\n"
                   " \"providers\": {\"p\": {\"kind\": \"openai\", \"api_key_env\": \"TG_TEST_BAD_KEY\"}}}");
    assert_has_line(errs, "database.url: not a valid PostgreSQL connection string");
    assert_has_line(errs, "secrets.key_pepper_env: must hold 64 hex characters (32 bytes)");
    assert_has_line(errs, "providers.p: the provider key contains spaces or control characters");
    assert_null(strstr(errs, "TOPSECRET"));
    free(errs);

    errs = parse_fail("{\"database\": {\"url\": 12345}}");
    assert_has_line(errs, "database.url: must be a string, got an integer");
    assert_null(strstr(errs, "12345"));
    free(errs);
}

/* Parses {"database": {"url": URL}} and returns its error text, or NULL when it is accepted. */
static char *db_url_errors(const char *url)
{
    char json[1024];
    snprintf(json, sizeof(json), "{\"database\": {\"url\": \"%s\"}}", url);
    tg_buf_t errs;
    tg_buf_init(&errs, 1 << 16);
    tg_config_t *c = NULL;
    int rc = tg_config_parse(json, strlen(json), "test.json", &c, &errs);
    tg_config_unref(c);
    if (rc == 0) {
        tg_buf_dispose(&errs);
        return NULL;
    }
    size_t len = 0;
    return tg_buf_take(&errs, &len);
}

static void test_database_section(void **state)
{
    /* defaults of the job deadline and the queue cap; both configurable and range-checked */
    tg_config_t *c = parse_ok("{\"database\": {\"url\": \"host=/tmp dbname=x\"}}");
    assert_int_equal(c->db_job_timeout_ms, 2000);
    assert_int_equal(c->db_max_queue, 1024);
    tg_config_unref(c);
    c = parse_ok("{\"database\": {\"url\": \"host=/tmp dbname=x\", \"job_timeout_ms\": 500, "
                 "\"max_queue\": 64}}");
    assert_int_equal(c->db_job_timeout_ms, 500);
    assert_int_equal(c->db_max_queue, 64);
    tg_config_unref(c);
    char *errs = parse_fail("{\"database\": {\"url\": \"host=/tmp dbname=x\", \"job_timeout_ms\": 0, "
                            "\"max_queue\": 0}}");
    assert_has_line(errs, "database.job_timeout_ms: must be an integer between 10 and 600000, got 0");
    assert_has_line(errs, "database.max_queue: must be an integer between 1 and 1000000, got 0");
    free(errs);
}

static void test_database_host_needs_no_lookup(void **state)
{
    /* libpq's environment counts too: none of it here */
    unsetenv("PGHOST");
    unsetenv("PGHOSTADDR");
    unsetenv("PGSERVICE");
    static const char *const accepted[] = {
        "host=/var/run/postgresql dbname=x",           /* a unix socket directory */
        "postgresql:///x?host=/abs/dir&port=5432",     /* the same in URL form */
        "host=127.0.0.1 port=5432 dbname=x",           /* numeric IPv4 */
        "host=::1 dbname=x",                           /* numeric IPv6 */
        "postgresql://u@[::1]:5432/x",                 /* bracketed in a URL */
        "postgresql://u@10.0.0.5/x",                   /* numeric in a URL */
        "host=db.internal hostaddr=10.0.0.5 dbname=x", /* a name with hostaddr: never looked up */
        "host=/tmp,127.0.0.1 dbname=x",                /* every entry of a list */
        "host=@abstract dbname=x",                     /* Linux abstract socket namespace */
        "dbname=x",                                    /* libpq's default socket directory */
    };
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        char *errs = db_url_errors(accepted[i]);
        if (errs != NULL)
            fail_msg("refused %s:\n%s", accepted[i], errs);
    }
    static const char *const refused[] = {
        "host=db.internal dbname=x",  "postgresql://u:pw@db.internal:5432/x",
        "postgresql://localhost/x",   "host=/tmp,db.internal dbname=x", /* one name in a list is enough */
        "host=relative/dir dbname=x", /* not absolute: libpq takes it for a name */
        "host=999.1.1.1 dbname=x",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char *errs = db_url_errors(refused[i]);
        if (errs == NULL)
            fail_msg("accepted %s", refused[i]);
        assert_has_line(errs, "database.url: the host is a name, which libpq would resolve on a worker's "
                              "event loop and block it: give a unix socket directory (an absolute path), "
                              "a numeric IP address, or hostaddr=IP next to the name");
        assert_null(strstr(errs, "db.internal")); /* the URL's parts are not echoed */
        free(errs);
    }

    /* a name may also come from the environment, and a service file hides the host */
    setenv("PGHOST", "db.internal", 1);
    char *errs = db_url_errors("dbname=x");
    assert_non_null(errs);
    assert_non_null(strstr(errs, "PGHOST (environment): the host is a name"));
    free(errs);
    setenv("PGHOSTADDR", "10.0.0.5", 1);
    assert_null(db_url_errors("dbname=x"));
    unsetenv("PGHOST");
    unsetenv("PGHOSTADDR");
    errs = db_url_errors("service=tollgate");
    assert_non_null(errs);
    assert_non_null(strstr(errs, "database.url: a connection service"));
    free(errs);

    /* url_env is checked the same way */
    setenv("TG_TEST_DB_NAME_URL", "host=db.internal dbname=x", 1);
    errs = parse_fail("{\"database\": {\"url_env\": \"TG_TEST_DB_NAME_URL\"}}");
    assert_non_null(strstr(errs, "database.url_env: the host is a name"));
    free(errs);
}

static void test_secrets_from_env_and_files(void **state)
{
    char pep_path[] = "/tmp/tg_test_pepperXXXXXX";
    char key_path[] = "/tmp/tg_test_keyXXXXXX";
    int fd = mkstemp(pep_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, PEPPER_HEX "\n", 65), 65);
    close(fd);
    fd = mkstemp(key_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "sk-from-file\r\n", 14), 14);
    close(fd);
    setenv("TG_TEST_DB_URL", "host=/tmp dbname=x", 1);

    char json[1024];
    snprintf(json, sizeof(json),
             "{\"database\": {\"url_env\": \"TG_TEST_DB_URL\"}, \"secrets\": {\"key_pepper_file\": \"%s\"},"
             " \"providers\": {\"p\": {\"kind\": \"openai\", \"api_key_file\": \"%s\"}}}",
             pep_path, key_path);
    tg_config_t *c = parse_ok(json);
    assert_string_equal(c->database_url, "host=/tmp dbname=x");
    assert_true(c->has_pepper);
    assert_int_equal(c->key_pepper[31], 0xff);
    assert_string_equal(c->providers[0].api_key, "sk-from-file"); /* trailing CR/LF trimmed */
    tg_config_unref(c);

    /* both sources at once, and a missing file, are errors */
    snprintf(json, sizeof(json),
             "{\"secrets\": {\"key_pepper_file\": \"%s\", \"key_pepper_env\": \"TG_TEST_PEPPER\"},"
             " \"providers\": {\"p\": {\"kind\": \"openai\", \"api_key_file\": \"/nonexistent/tg-key\"}}}",
             pep_path);
    char *errs = parse_fail(json);
    assert_has_line(errs, "secrets.key_pepper_env: give only one of key_pepper_env and key_pepper_file");
    assert_has_line(
        errs, "providers.p.api_key_file: cannot read \"/nonexistent/tg-key\": No such file or directory");
    free(errs);
    unlink(pep_path);
    unlink(key_path);
}

static void test_refcount_and_publish(void **state)
{
    tg_config_t *a = parse_ok("{\"log_level\": \"warn\"}");
    tg_config_t *b = parse_ok("{\"log_level\": \"debug\", \"workers\": 2}");
    assert_int_equal(atomic_load(&a->refcnt), 1);
    assert_ptr_equal(tg_config_ref(a), a);
    assert_int_equal(atomic_load(&a->refcnt), 2);
    tg_config_unref(a);
    assert_int_equal(atomic_load(&a->refcnt), 1);

    assert_null(tg_config_acquire());
    tg_config_publish(a); /* takes the reference */
    assert_int_equal(tg_log_level(), TG_LOG_WARN);
    tg_config_t *cur = tg_config_acquire();
    assert_ptr_equal(cur, a);
    assert_int_equal(atomic_load(&a->refcnt), 2);

    tg_config_publish(b); /* drops the global reference to a; ours keeps it alive */
    assert_int_equal(tg_log_level(), TG_LOG_DEBUG);
    assert_int_equal(atomic_load(&a->refcnt), 1);
    assert_int_equal(cur->workers, a->workers); /* still readable */
    tg_config_unref(cur);

    tg_config_t *cur2 = tg_config_acquire();
    assert_ptr_equal(cur2, b);
    assert_int_equal(cur2->workers, 2);
    tg_config_unref(cur2);
    tg_config_publish(NULL);
    assert_null(tg_config_acquire());
    tg_log_set_level(TG_LOG_INFO);
    tg_config_unref(NULL); /* NULL-safe */
}

static void test_load_file(void **state)
{
    tg_buf_t errs;
    tg_buf_init(&errs, 4096);
    tg_config_t *c = NULL;
    assert_int_equal(tg_config_load("/nonexistent/tollgate.json", &c, &errs), TG_ECONFIG);
    assert_null(c);
    assert_non_null(strstr(errs.data, "/nonexistent/tollgate.json: cannot open"));
    tg_buf_dispose(&errs);

    char path[] = "/tmp/tg_test_cfgXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *j = "{\"workers\": 1}";
    assert_int_equal(write(fd, j, strlen(j)), (ssize_t)strlen(j));
    close(fd);
    tg_buf_init(&errs, 4096);
    assert_int_equal(tg_config_load(path, &c, &errs), 0);
    assert_string_equal(c->path, path);
    assert_int_equal(c->workers, 1);
    tg_config_unref(c);
    tg_buf_dispose(&errs);
    unlink(path);
}

/* The request's first-byte budget (top level, per chain) and a probe's own timeout (breaker). */
/* billing: defaults, values, bounds and unknown keys (the trial credits a new wallet gets). */
static void test_billing_section(void **state)
{
    tg_config_t *c = parse_ok("{}");
    assert_int_equal(c->billing.trial_credits, 0);
    assert_int_equal(c->billing.lease_credits, 10000000);
    assert_int_equal(c->billing.lease_ttl_ms, 60000);
    tg_config_unref(c);
    c = parse_ok("{\"billing\": {\"trial_credits\": 1000000000000000, \"lease_credits\": 5, "
                 "\"lease_ttl_ms\": 5000}}");
    assert_int_equal(c->billing.trial_credits, INT64_C(1000000000000000));
    assert_int_equal(c->billing.lease_credits, 5);
    assert_int_equal(c->billing.lease_ttl_ms, 5000);
    tg_config_unref(c);
    char *errs = parse_fail("{\"billing\": {\"trial_credits\": 1000000000000001, \"lease_credits\": 0, "
                            "\"lease_ttl_ms\": 10, \"trial\": 1}}");
    assert_has_line(errs, "billing.trial_credits: must be an integer between 0 and 1000000000000000, got "
                          "1000000000000001");
    assert_has_line(errs, "billing.lease_credits: must be an integer between 1 and 1000000000000000, got 0");
    assert_has_line(errs, "billing.lease_ttl_ms: must be an integer between 5000 and 3600000, got 10");
    assert_has_line(errs, "billing.trial: unknown key");
    free(errs);
    errs = parse_fail("{\"billing\": {\"trial_credits\": 1.5}}"); /* money is never a float */
    assert_non_null(strstr(errs, "billing.trial_credits: must be an integer"));
    free(errs);
}

static void test_request_budget_and_probe_timeout(void **state)
{
    tg_config_t *c =
        parse_ok("{\"providers\": {\"p\": {\"kind\": \"openai\"}, \"q\": {\"kind\": \"openai\",\n"
                 "  \"breaker\": {\"probe_timeout_ms\": 700}}},\n"
                 " \"models\": {\"a\": {\"provider\": \"p\"}, \"b\": {\"provider\": \"q\"}},\n"
                 " \"chains\": {\"c1\": {\"targets\": [\"a\", \"b\"]},\n"
                 "            \"c2\": {\"targets\": [\"a\"], \"request_first_byte_ms\": 1500}}}");
    assert_int_equal(c->request_first_byte_ms, 90000);
    assert_int_equal(c->providers[0].breaker.probe_timeout_ms, 5000);
    assert_int_equal(c->providers[1].breaker.probe_timeout_ms, 700);
    assert_int_equal(tg_config_find_chain(c, "c1")->request_first_byte_ms, 0); /* the top-level one */
    assert_int_equal(tg_config_find_chain(c, "c2")->request_first_byte_ms, 1500);
    tg_config_unref(c);

    c = parse_ok(
        "{\"timeouts\": {\"request_first_byte_ms\": 4000}, \"breaker\": {\"probe_timeout_ms\": 900},\n"
        " \"providers\": {\"p\": {\"kind\": \"openai\"}}}");
    assert_int_equal(c->request_first_byte_ms, 4000);
    assert_int_equal(c->providers[0].breaker.probe_timeout_ms, 900);
    tg_config_unref(c);

    /* a provider's timeouts are per attempt: the request's budget is not one of them */
    char *errs = parse_fail(
        "{\"timeouts\": {\"request_first_byte_ms\": 0},\n"
        " \"providers\": {\"p\": {\"kind\": \"openai\",\n"
        "   \"timeouts\": {\"request_first_byte_ms\": 10}, \"breaker\": {\"probe_timeout_ms\": 0}}},\n"
        " \"models\": {\"a\": {\"provider\": \"p\"}},\n"
        " \"chains\": {\"c\": {\"targets\": [\"a\"], \"request_first_byte_ms\": \"1s\"}}}");
    assert_has_line(errs, "timeouts.request_first_byte_ms: must be an integer between 1 and 86400000, got 0");
    assert_has_line(errs, "providers.p.timeouts.request_first_byte_ms: unknown key");
    assert_has_line(errs,
                    "providers.p.breaker.probe_timeout_ms: must be an integer between 1 and 86400000, got 0");
    assert_has_line(errs,
                    "chains.c.request_first_byte_ms: must be an integer between 1 and 86400000, got \"1s\"");
    assert_int_equal(count_lines(errs), 4);
    free(errs);
}

/* Zero retention: providers carry the flag (default false); retention.* for stored_requests. */
static void test_retention(void **state)
{
    (void)state;
    tg_config_t *c = parse_ok("{\"providers\": {\"zr\": {\"kind\": \"openai\", \"zero_retention\": true},\n"
                              "               \"plain\": {\"kind\": \"openai\"}}}");
    assert_true(tg_config_find_provider(c, "zr")->zero_retention);
    assert_false(tg_config_find_provider(c, "plain")->zero_retention);
    assert_true(c->retention.stored_requests);
    assert_int_equal(c->retention.days, 30);
    assert_int_equal(c->retention.max_record_bytes, 65536);
    assert_int_equal(c->retention.queue_bytes, (size_t)32 << 20);
    assert_int_equal(c->retention.job_interval_ms, 3600000);
    assert_false(c->retention.allow_core_dumps);
    tg_config_unref(c);

    c = parse_ok("{\"retention\": {\"stored_requests\": false, \"stored_requests_days\": 7, "
                 "\"max_record_bytes\": 4096, \"queue_bytes\": 1048576, \"job_interval_ms\": 1000, "
                 "\"allow_core_dumps\": true}}");
    assert_false(c->retention.stored_requests);
    assert_int_equal(c->retention.days, 7);
    assert_int_equal(c->retention.max_record_bytes, 4096);
    assert_int_equal(c->retention.queue_bytes, 1048576);
    assert_int_equal(c->retention.job_interval_ms, 1000);
    assert_true(c->retention.allow_core_dumps);
    tg_config_unref(c);

    char *errs = parse_fail("{\"providers\": {\"p\": {\"kind\": \"openai\", \"zero_retention\": \"yes\"}},\n"
                            " \"retention\": {\"stored_requests_days\": 0, \"colour\": 1,\n"
                            "               \"max_record_bytes\": 1048576, \"queue_bytes\": 1048576}}");
    assert_has_line(errs, "providers.p.zero_retention: must be true or false, got \"yes\"");
    assert_has_line(errs, "retention.colour: unknown key");
    assert_has_line(errs, "retention.stored_requests_days: must be an integer between 1 and 3650, got 0");
    assert_has_line(errs, "retention.queue_bytes: must hold at least two records (2 x max_record_bytes)");
    free(errs);
}

/* The rate limits' settings: the model's output cap (what a request without max_tokens counts) and
 * the window length. */
static void test_rate_limit_settings(void **state)
{
    tg_config_t *c = parse_ok("{\"providers\": {\"p\": {\"kind\": \"openai\"}},\n"
                              " \"models\": {\"big\": {\"provider\": \"p\", \"context_window\": 128000},\n"
                              "            \"small\": {\"provider\": \"p\", \"context_window\": 2048},\n"
                              "            \"capped\": {\"provider\": \"p\", \"context_window\": 200000,\n"
                              "                       \"max_output_tokens\": 64000},\n"
                              "            \"unknown\": {\"provider\": \"p\"}}}");
    assert_int_equal(c->rate_window_ms, 60000); /* per minute unless told */
    assert_int_equal(tg_config_find_model(c, "big")->max_output_tokens, TG_MODEL_MAX_OUTPUT_DEFAULT);
    assert_int_equal(tg_config_find_model(c, "small")->max_output_tokens, 2048); /* bounded by the window */
    assert_int_equal(tg_config_find_model(c, "capped")->max_output_tokens, 64000);
    assert_int_equal(tg_config_find_model(c, "unknown")->max_output_tokens, TG_MODEL_MAX_OUTPUT_DEFAULT);
    tg_config_unref(c);

    c = parse_ok("{\"limits\": {\"rate_window_ms\": 2000}}");
    assert_int_equal(c->rate_window_ms, 2000);
    tg_config_unref(c);

    char *errs = parse_fail("{\"limits\": {\"rate_window_ms\": 10},\n"
                            " \"providers\": {\"p\": {\"kind\": \"openai\"}},\n"
                            " \"models\": {\"a\": {\"provider\": \"p\", \"max_output_tokens\": 0},\n"
                            "            \"b\": {\"provider\": \"p\", \"context_window\": 8000,\n"
                            "                  \"max_output_tokens\": 9000}}}");
    assert_has_line(errs, "limits.rate_window_ms: must be an integer between 1000 and 3600000, got 10");
    assert_has_line(errs, "models.a.max_output_tokens: must be an integer between 1 and 10000000, got 0");
    assert_has_line(errs, "models.b.max_output_tokens: must not exceed context_window (8000), got 9000");
    assert_int_equal(count_lines(errs), 3);
    free(errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_error_at_once),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_secrets_never_echoed),
        cmocka_unit_test(test_secrets_from_env_and_files),
        cmocka_unit_test(test_refcount_and_publish),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_request_budget_and_probe_timeout),
        cmocka_unit_test(test_billing_section),
        cmocka_unit_test(test_database_section),
        cmocka_unit_test(test_database_host_needs_no_lookup),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_rate_limit_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

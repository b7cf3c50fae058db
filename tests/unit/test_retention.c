/*
 * test_retention.c - the pure parts of the zero-retention choke point (gateway/src/retention.h):
 * the header (only tightens), the target rule, the UTF-8-safe cap, the provider-text filter, and
 * the OpenAI request asking the provider not to store (`store: false`) on both build paths.
 * The writer, the partition job and the end-to-end guarantees are integration.retention's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "call_internal.h"
#include "err.h"
#include "metrics.h"
#include "providers/provider.h"
#include "retention.h"
#include "stored.h"

static void test_header(void **state)
{
    (void)state;
    bool t = true;
    assert_int_equal(tg_retention_header(NULL, 0, &t), 0);
    assert_false(t); /* absent: the tenant's policy decides */
    assert_int_equal(tg_retention_header("true", 4, &t), 0);
    assert_true(t);
    assert_int_equal(tg_retention_header(" TRUE ", 6, &t), 0);
    assert_true(t);
    /* false never loosens: it says nothing, the policy stands */
    assert_int_equal(tg_retention_header("false", 5, &t), 0);
    assert_false(t);
    assert_int_equal(tg_retention_header("False", 5, &t), 0);
    assert_false(t);
    static const char *const bad[] = {"", "1", "yes", "on", "truex", "tru", "true,false", "0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = true;
        assert_int_equal(tg_retention_header(bad[i], strlen(bad[i]), &t), TG_EINVALID_REQUEST);
        assert_false(t);
    }
}

static void test_filter(void **state)
{
    (void)state;
    tg_provider_cfg_t zr = {.name = "zr", .zero_retention = true};
    tg_provider_cfg_t plain = {.name = "plain", .zero_retention = false};
    tg_model_cfg_t a = {.name = "a", .provider = &plain}, b = {.name = "b", .provider = &zr},
                   c = {.name = "c", .provider = &plain}, d = {.name = "d", .provider = &plain};
    assert_false(tg_retention_target_ok(&a, false));
    assert_true(tg_retention_target_ok(&a, true)); /* the tenant's own key */
    assert_true(tg_retention_target_ok(&b, false));

    const tg_model_cfg_t *t[4] = {&a, &b, &c, &d};
    bool byok[4] = {false, false, true, false};
    char removed[64];
    size_t n = tg_retention_filter(t, byok, 4, removed, sizeof(removed));
    assert_int_equal(n, 2);
    assert_ptr_equal(t[0], &b); /* order kept, BYOK flags moved with their targets */
    assert_false(byok[0]);
    assert_ptr_equal(t[1], &c);
    assert_true(byok[1]);
    assert_null(t[2]);
    assert_null(t[3]);
    assert_string_equal(removed, "a, d");

    /* none left: every name said */
    const tg_model_cfg_t *u[2] = {&a, &d};
    bool nb[2] = {false, false};
    assert_int_equal(tg_retention_filter(u, nb, 2, removed, sizeof(removed)), 0);
    assert_string_equal(removed, "a, d");

    /* a list too long for its buffer ends with "..." and never overflows */
    tg_model_cfg_t many[12];
    const tg_model_cfg_t *mp[12];
    bool mb[12] = {0};
    for (size_t i = 0; i < 12; i++) {
        many[i] = (tg_model_cfg_t){.name = "a-rather-long-model-name", .provider = &plain};
        mp[i] = &many[i];
    }
    char small[40];
    assert_int_equal(tg_retention_filter(mp, mb, 12, small, sizeof(small)), 0);
    assert_true(strlen(small) < sizeof(small));
    assert_non_null(strstr(small, "..."));
}

static void test_cap(void **state)
{
    (void)state;
    bool cut = true;
    assert_int_equal(tg_retention_cap("hello", 5, 5, &cut), 5);
    assert_false(cut);
    assert_int_equal(tg_retention_cap("hello", 5, 3, &cut), 3);
    assert_true(cut);
    /* "é" is 2 bytes, "€" 3: a cut never splits a sequence */
    const char *s = "a\xc3\xa9\xe2\x82\xac";
    assert_int_equal(tg_retention_cap(s, 6, 2, &cut), 1);
    assert_true(cut);
    assert_int_equal(tg_retention_cap(s, 6, 3, &cut), 3);
    assert_int_equal(tg_retention_cap(s, 6, 4, &cut), 3);
    assert_int_equal(tg_retention_cap(s, 6, 5, &cut), 3);
    assert_int_equal(tg_retention_cap(s, 6, 6, &cut), 6);
    assert_false(cut);
    assert_int_equal(tg_retention_cap(s, 6, 0, &cut), 0);
    assert_true(cut);
}

static void test_provider_text(void **state)
{
    (void)state;
    const char *msg = "your prompt 'CANARY' was refused";
    assert_string_equal(tg_retention_provider_text(false, msg), msg);
    assert_string_equal(tg_retention_provider_text(true, msg), TG_RETENTION_WITHHELD);
    assert_null(strstr(tg_retention_provider_text(true, msg), "CANARY"));
    assert_string_equal(tg_retention_provider_text(false, NULL), "");
}

/* Builds the OpenAI request for `raw` and returns its "store" member's JSON (a new reference). */
static json_t *built_store(const char *raw, bool zero_retention, bool with_raw, char **body_out)
{
    tg_provider_cfg_t p = {.name = "o", .kind = TG_KIND_OPENAI, .base_url = "http://127.0.0.1:1/v1"};
    json_error_t jerr;
    json_t *canon = json_loads(raw, 0, &jerr);
    assert_non_null(canon);
    tg_build_in_t in = {.provider = &p,
                        .upstream_model = "gpt-up",
                        .stream = false,
                        .zero_retention = zero_retention,
                        .raw = with_raw ? raw : NULL,
                        .raw_len = with_raw ? strlen(raw) : 0};
    tg_upstream_req_t out;
    memset(&out, 0, sizeof(out));
    tg_error_t err = {0};
    assert_int_equal(tg_adapter_for(TG_KIND_OPENAI)->build_request(&in, canon, &out, &err), 0);
    json_t *body = json_loadb(out.body, out.body_len, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(body); /* one "store" member only: duplicates are refused */
    if (body_out != NULL)
        *body_out = strndup(out.body, out.body_len);
    json_t *st = json_incref(json_object_get(body, "store"));
    json_decref(body);
    json_decref(canon);
    tg_upstream_req_dispose(&out);
    return st;
}

static void test_openai_store_false(void **state)
{
    (void)state;
    const char *plain = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    const char *asks =
        "{\"model\":\"m\",\"store\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    for (int with_raw = 0; with_raw <= 1; with_raw++) { /* the tree path, then the pass-through */
        json_t *st = built_store(plain, true, with_raw, NULL);
        assert_true(json_is_false(st));
        json_decref(st);
        st = built_store(asks, true, with_raw, NULL); /* the client's store:true is overridden */
        assert_true(json_is_false(st));
        json_decref(st);
        st = built_store(plain, false, with_raw, NULL); /* a normal call: nothing added */
        assert_null(st);
        st = built_store(asks, false, with_raw, NULL); /* ... nor taken away */
        assert_true(json_is_true(st));
        json_decref(st);
    }
    /* the pass-through really served (not the tree path under its name) */
    char *body = NULL;
    json_t *st = built_store(asks, true, true, &body);
    json_decref(st);
    assert_non_null(strstr(body, "\"store\":false"));
    free(body);
}

/* One stored call's record, as LOG queues it (the call as far as retention.c reads it). */
static bool record_one(tg_config_t *cfg, size_t body_bytes)
{
    tg_call_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->cfg = cfg;
    c->kind = TG_CALL_CHAT;
    c->principal.tenant_id = 7;
    c->principal.key_id = 8;
    snprintf(c->request_id, sizeof(c->request_id), "req_unit");
    c->body = json_pack("{s:s}", "model", "m");
    c->status = 200;
    c->rt_capture = true;
    tg_buf_init(&c->rt_request, cfg->retention.max_record_bytes);
    tg_buf_init(&c->rt_answer, cfg->retention.max_record_bytes);
    char *fill = malloc(body_bytes);
    memset(fill, 'x', body_bytes);
    assert_int_equal(tg_buf_append(&c->rt_request, fill, body_bytes), 0);
    free(fill);
    tg_retention_capture(c, "{\"answer\":1}", 12);
    bool queued = tg_retention_record(c);
    assert_null(c->rt_request.data); /* freed at LOG, queued or not */
    assert_null(c->rt_answer.data);
    json_decref(c->body);
    free(c);
    return queued;
}

/* With the database away, records wait in a bounded queue; past it they are dropped and counted
 * (queue_full), and what the writer still holds at stop is counted too (db): nothing blocks, every
 * record is accounted for, and stop returns. */
static void test_queue_bound_database_away(void **state)
{
    (void)state;
    tg_config_t *cfg = NULL;
    tg_buf_t errs;
    tg_buf_init(&errs, 4096);
    const char *json = "{\"retention\": {\"max_record_bytes\": 30000, \"queue_bytes\": 65536}}";
    assert_int_equal(tg_config_parse(json, strlen(json), "t.json", &cfg, &errs), 0);
    tg_buf_dispose(&errs);
    /* a socket directory that does not exist: every connection attempt fails at once */
    assert_int_equal(tg_stored_start("host=/nonexistent-tollgate-dir port=1 dbname=x connect_timeout=1", cfg),
                     0);
    double full0 = tg_metrics_get("tollgate_stored_requests_dropped_total", "reason=\"queue_full\"");
    double db0 = tg_metrics_get("tollgate_stored_requests_dropped_total", "reason=\"db\"");
    size_t queued = 0;
    for (int i = 0; i < 10; i++)
        queued += record_one(cfg, 29000);
    /* the queue holds two such records, the writer at most two more (its batch, waiting for the database) */
    assert_true(queued >= 2 && queued <= 4);
    tg_stored_stop();
    tg_stored_stats_t st;
    tg_stored_stats(&st);
    assert_int_equal(st.queued, queued);
    assert_int_equal(st.written, 0);
    assert_int_equal(st.dropped, 10);
    assert_true(tg_metrics_get("tollgate_stored_requests_dropped_total", "reason=\"queue_full\"") - full0 ==
                (double)(10 - queued));
    assert_true(tg_metrics_get("tollgate_stored_requests_dropped_total", "reason=\"db\"") - db0 ==
                (double)queued);
    /* stopped: a call captures nothing more (the writer is not accepting) */
    assert_false(record_one(cfg, 10));
    tg_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_provider_text),
        cmocka_unit_test(test_openai_store_false),
        cmocka_unit_test(test_queue_bound_database_away),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

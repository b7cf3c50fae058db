/*
 * test_openai_passthrough.c - the OpenAI fast paths (tg_openai_passthrough, tg_openai_stream_passthrough)
 * against the adapter's slow paths (parse_response, stream_event plus the gateway's usage filter).
 *
 * The contract under test: for any input, a fast path either declines (returns 1, leaving out
 * untouched) or produces what the slow path produces: the same JSON once parsed, the same usage.
 * Every OpenAI fixture and fuzz seed is replayed, then hand-written edge cases that sit on the
 * boundary of what the single-pass scanner is sure about (escapes, duplicates, depth, numbers).
 * Edge cases also pin whether the fast path serves or declines, so that a scanner which declines
 * everything (and would pass the equality checks trivially) still fails here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>

#include "../fixtures/fixture_util.h"
#include "buf.h"

#define OUT_MAX (1u << 20)

enum { ANY = -1, SERVE = 0, DECLINE = 1, MIXED = 2 };

static int usage_equal(const tg_usage_t *a, const tg_usage_t *b)
{
    return a->present == b->present && a->prompt_tokens == b->prompt_tokens &&
           a->completion_tokens == b->completion_tokens && a->cached_tokens == b->cached_tokens;
}

/* ---- non-stream ---- */

/* Runs both paths on one body; fails the test on any disagreement. Returns the fast path's rc. */
static int check_resp(const char *what, const char *body, size_t len, const char *model)
{
    tg_resp_in_t in = {.model = model, .request_id = "req_pt", .created = 1700000000};
    tg_buf_t out;
    tg_buf_init(&out, OUT_MAX);
    bool same = false;
    tg_usage_t fu = {0}, su = {0};
    int frc = tg_openai_passthrough(&in, body, len, &out, &same, &fu);
    json_t *slow = NULL;
    tg_error_t err = {0};
    int src = tg_adapter_openai.parse_response(&in, body, len, &slow, &su, &err);
    if (frc != 0 && frc != 1) {
        fprintf(stderr, "%s: fast path failed with %d\n", what, frc);
        fail();
    }
    if (frc == 1 && out.len != 0) {
        fprintf(stderr, "%s: declined but wrote %zu bytes\n", what, out.len);
        fail();
    }
    if (frc == 0) {
        if (src != 0 || slow == NULL) {
            fprintf(stderr, "%s: fast path served, slow path refused (%d): %.*s\n", what, src, (int)len,
                    body);
            fail();
        }
        json_error_t je;
        json_t *fast = same ? json_loadb(body, len, 0, &je) : json_loadb(out.data, out.len, 0, &je);
        if (!json_equal(fast, slow)) {
            char *s = json_dumps(slow, JSON_COMPACT);
            fprintf(stderr, "%s: outputs differ\n fast: %.*s\n slow: %s\n", what,
                    same ? (int)len : (int)out.len, same ? body : out.data, s ? s : "?");
            free(s);
            fail();
        }
        json_decref(fast);
        if (!usage_equal(&fu, &su)) {
            fprintf(stderr, "%s: usage differs: fast %d/%lld/%lld/%lld slow %d/%lld/%lld/%lld\n", what,
                    fu.present, (long long)fu.prompt_tokens, (long long)fu.completion_tokens,
                    (long long)fu.cached_tokens, su.present, (long long)su.prompt_tokens,
                    (long long)su.completion_tokens, (long long)su.cached_tokens);
            fail();
        }
        /* same means the provider's bytes are the answer: only true when no edit was needed */
        if (same && model != NULL)
            assert_int_equal(out.len, 0);
    }
    json_decref(slow);
    tg_buf_dispose(&out);
    return frc;
}

/* Both a model that needs no escaping and one that does (quote, backslash, non-ASCII, control). */
static int check_resp_models(const char *what, const char *body, size_t len)
{
    int a = check_resp(what, body, len, "gw-model");
    int b = check_resp(what, body, len, "gpt \"q\" \\ \xc3\xa9 \x01\n");
    int c = check_resp(what, body, len, NULL);
    assert_int_equal(a, b); /* the model name never changes whether the body is understood */
    assert_int_equal(a, c);
    return a;
}

/* ---- stream ---- */

typedef struct {
    bool client_usage;
    json_t *got[4];
    int n;
} sink_t;

/* The gateway's on_chunk (relay.c): strip usage for a client that did not ask, drop what is left empty. */
static int sink_chunk(void *ud, json_t *chunk)
{
    sink_t *k = ud;
    json_t *out = json_incref(chunk);
    if (!k->client_usage && json_object_get(chunk, "usage") != NULL) {
        json_decref(out);
        out = json_copy(chunk);
        json_object_del(out, "usage");
        if (json_array_size(json_object_get(out, "choices")) == 0) {
            json_decref(out);
            return 0;
        }
    }
    if (k->n < 4)
        k->got[k->n++] = out;
    else
        json_decref(out);
    return 0;
}

static int check_chunk(const char *what, const char *data, size_t len, bool client_usage)
{
    const char *model = "gw-model";
    tg_resp_in_t in = {.model = model, .request_id = "req_pt", .created = 1700000000};
    tg_stream_t *st = tg_adapter_openai.stream_create(&in);
    assert_non_null(st);
    /* the SSE parser hands out NUL-terminated data; so does this */
    char *copy = malloc(len + 1);
    assert_non_null(copy);
    memcpy(copy, data, len);
    copy[len] = '\0';
    tg_sse_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.data = copy;
    ev.data_len = len;
    sink_t k = {.client_usage = client_usage};
    tg_usage_t fu = {0}, su = {0};
    tg_error_t err = {0};
    int src = tg_adapter_openai.stream_event(st, &ev, sink_chunk, &k, &su, &err);
    tg_buf_t out;
    tg_buf_init(&out, OUT_MAX);
    bool drop = true;
    int frc = tg_openai_stream_passthrough(model, copy, len, client_usage, &out, &drop, &fu, NULL);
    if (frc != 0 && frc != 1) {
        fprintf(stderr, "%s: fast path failed with %d\n", what, frc);
        fail();
    }
    if (frc == 1 && (out.len != 0 || drop)) {
        fprintf(stderr, "%s: declined but wrote %zu bytes (drop %d)\n", what, out.len, drop);
        fail();
    }
    if (frc == 0) {
        if (src != 0) {
            fprintf(stderr, "%s: fast path served, slow path returned %d: %.*s\n", what, src, (int)len, data);
            fail();
        }
        if (drop && k.n != 0) {
            fprintf(stderr, "%s (usage %d): fast path dropped, slow path emitted %d chunks\n", what,
                    client_usage, k.n);
            fail();
        }
        if (!drop) {
            json_error_t je;
            json_t *fast = json_loadb(out.data, out.len, 0, &je);
            if (k.n != 1 || !json_equal(fast, k.got[0])) {
                char *s = k.n > 0 ? json_dumps(k.got[0], JSON_COMPACT) : NULL;
                fprintf(stderr,
                        "%s (usage %d): outputs differ\n in:   %.*s\n fast: %.*s\n slow: %s (%d chunks)\n",
                        what, client_usage, (int)len, data, (int)out.len, out.data, s ? s : "-", k.n);
                free(s);
                fail();
            }
            json_decref(fast);
        }
        if (!usage_equal(&fu, &su)) {
            fprintf(stderr, "%s: usage differs: fast %d/%lld/%lld/%lld slow %d/%lld/%lld/%lld\n", what,
                    fu.present, (long long)fu.prompt_tokens, (long long)fu.completion_tokens,
                    (long long)fu.cached_tokens, su.present, (long long)su.prompt_tokens,
                    (long long)su.completion_tokens, (long long)su.cached_tokens);
            fail();
        }
    }
    for (int i = 0; i < k.n; i++)
        json_decref(k.got[i]);
    tg_buf_dispose(&out);
    tg_adapter_openai.stream_destroy(st);
    free(copy);
    return frc;
}

/* Both client settings; returns the fast path's rc with usage off (the two may differ only on usage). */
static int check_chunk_both(const char *what, const char *data, size_t len)
{
    int on = check_chunk(what, data, len, true);
    int off = check_chunk(what, data, len, false);
    assert_int_equal(on, off); /* include_usage only decides drop vs relay, never serve vs decline */
    return off;
}

typedef struct {
    const char *what;
    int served, declined;
} replay_t;

static int replay_event(void *ud, const tg_sse_event_t *ev)
{
    replay_t *r = ud;
    if (check_chunk_both(r->what, ev->data, ev->data_len) == 0)
        r->served++;
    else
        r->declined++;
    return 0;
}

static void replay_sse_bytes(const char *what, const char *bytes, size_t n, replay_t *r)
{
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1 << 20);
    r->what = what;
    assert_int_equal(tg_sse_parser_feed(&p, bytes, n, replay_event, r), 0);
    /* a last event without its blank line still counts */
    assert_int_equal(tg_sse_parser_feed(&p, "\n\n", 2, replay_event, r), 0);
    tg_sse_parser_dispose(&p);
}

/* ---- files: fixtures and fuzz seeds ---- */

static char *read_path(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    tg_buf_t b;
    tg_buf_init(&b, 1u << 24);
    char tmp[4096];
    size_t n = 0;
    int rc = 0;
    while (rc == 0 && (n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        rc = tg_buf_append(&b, tmp, n);
    fclose(f);
    assert_int_equal(rc, 0);
    *len = b.len;
    char *s = malloc(b.len + 1);
    assert_non_null(s);
    if (b.len > 0)
        memcpy(s, b.data, b.len);
    s[b.len] = '\0';
    tg_buf_dispose(&b);
    return s;
}

static const char *fixtures_dir(void)
{
    const char *d = getenv("TG_FIXTURES");
    return d != NULL ? d : "tests/fixtures";
}

/* Calls fn for every regular file in dir (relative to the fixtures dir); returns how many. */
static int each_file(const char *rel, void (*fn)(const char *path, const char *bytes, size_t n, void *ud),
                     void *ud)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s", fixtures_dir(), rel);
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "cannot open %s\n", dir);
        fail();
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        size_t n;
        char *bytes = read_path(path, &n);
        if (bytes == NULL)
            continue; /* a directory */
        fn(path, bytes, n, ud);
        free(bytes);
        count++;
    }
    closedir(d);
    return count;
}

typedef struct {
    int served, declined;
} tally_t;

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void on_resp_file(const char *path, const char *bytes, size_t n, void *ud)
{
    tally_t *t = ud;
    if (ends_with(path, ".sse"))
        return;
    if (check_resp_models(path, bytes, n) == 0)
        t->served++;
    else
        t->declined++;
}

static void on_resp_seed(const char *path, const char *bytes, size_t n, void *ud)
{
    on_resp_file(path, bytes, n, ud);
    if (n > 0)
        on_resp_file(path, bytes + 1, n - 1, ud);
}

static void on_sse_file(const char *path, const char *bytes, size_t n, void *ud)
{
    replay_t *r = ud;
    if (!ends_with(path, ".sse"))
        return;
    replay_sse_bytes(path, bytes, n, r);
}

/* ---- request ---- */

/* The request fast path against the tree path for one client body (already valid for the
 * gateway: jansson accepts it). Both stream settings, a plain and an escaping upstream id.
 * Returns the fast path's rc (the same for every setting, or the test fails). */
static int check_req(const char *what, const char *body, size_t len)
{
    static tg_provider_cfg_t prov = {.name = "p", .base_url = "https://api.example.com/v1"};
    const char *models[] = {"up-model", "up \"q\" \\ \xc3\xa9 \x01"};
    json_error_t je;
    json_t *canon = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (canon == NULL)
        return ANY; /* the gateway answers 400 before any adapter runs */
    int first = ANY;
    for (int stream = 0; stream < 2; stream++) {
        for (size_t m = 0; m < sizeof(models) / sizeof(models[0]); m++) {
            tg_build_in_t in = {.provider = &prov, .upstream_model = models[m], .stream = stream};
            tg_upstream_req_t slow_req;
            memset(&slow_req, 0, sizeof(slow_req));
            tg_error_t err = {0};
            int src = tg_adapter_openai.build_request(&in, canon, &slow_req, &err);
            char *fast_body = NULL;
            size_t fast_len = 0;
            in.raw = body;
            in.raw_len = len;
            int frc = tg_openai_request_passthrough(&in, &fast_body, &fast_len);
            if (frc != 0 && frc != 1) {
                fprintf(stderr, "%s: fast path failed with %d\n", what, frc);
                fail();
            }
            if (first == ANY && stream == 0 && m == 0)
                first = frc;
            else if (frc != first)
                first = MIXED; /* e.g. a stream_options the stream case must read and the other drops */
            if (frc == 0) {
                assert_int_equal(src, 0);
                assert_int_equal(strlen(fast_body), fast_len); /* NUL-terminated, no NUL inside */
                json_t *fast = json_loadb(fast_body, fast_len, JSON_REJECT_DUPLICATES, &je);
                json_t *slow = json_loadb(slow_req.body, slow_req.body_len, 0, &je);
                if (fast == NULL || !json_equal(fast, slow)) {
                    fprintf(stderr, "%s (stream %d): outputs differ\n fast: %.*s\n slow: %.*s\n", what,
                            stream, (int)fast_len, fast_body, (int)slow_req.body_len, slow_req.body);
                    fail();
                }
                json_decref(fast);
                json_decref(slow);
            }
            free(fast_body);
            tg_upstream_req_dispose(&slow_req);
        }
    }
    json_decref(canon);
    return first;
}

static void on_req_file(const char *path, const char *bytes, size_t n, void *ud)
{
    tally_t *t = ud;
    int rc = check_req(path, bytes, n);
    t->served += rc == SERVE;
    t->declined += rc == DECLINE;
}

static void test_req_fixtures_and_seeds(void **state)
{
    (void)state;
    tally_t t = {0};
    assert_true(each_file("canon", on_req_file, &t) > 0);
    assert_int_equal(t.declined, 0); /* the canonical fixtures are the common case */
    assert_true(t.served >= 2);
    tally_t f = {0};
    assert_true(each_file("../fuzz/corpus/fuzz_canon", on_req_file, &f) > 0);
}

/* The string scanner skips plain ASCII 8 bytes at a time: every kind of byte that needs a closer
 * look, at every offset around those 8-byte steps, in an answer and in a request. */
static void test_string_scan_offsets(void **state)
{
    (void)state;
    static const char *specials[] = {
        "\\\"", "\\n",  "\\u00e9", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\x01", "\x1f", "\xff",    "\xc3",     "\xed\xa0\x80", "\x7f"};
    int served = 0, declined = 0;
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
        for (int off = 0; off < 20; off++) {
            char content[64];
            snprintf(content, sizeof(content), "%.*s%s%.*s", off, "abcdefghijklmnopqrstuvwxyz", specials[k],
                     19 - off, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
            char body[512], what[64];
            snprintf(
                body, sizeof(body),
                "{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[{"
                "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},\"finish_reason\":"
                "\"stop\"}]}",
                content);
            snprintf(what, sizeof(what), "answer special %zu at %d", k, off);
            int rc = check_resp_models(what, body, strlen(body));
            served += rc == SERVE;
            declined += rc == DECLINE;
            snprintf(body, sizeof(body),
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", content);
            snprintf(what, sizeof(what), "request special %zu at %d", k, off);
            check_req(what, body, strlen(body));
        }
    }
    /* valid specials are served, invalid bytes never (jansson refuses them, so must the scanner) */
    assert_true(served >= 6 * 20);
    assert_true(declined >= 4 * 20);
}

static void test_req_edges(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        int want;
    } cases[] = {
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", SERVE},
        /* whitespace everywhere, members in any order, the model last */
        {" {\n \"messages\" : [ {\"role\":\"user\",\"content\":\"hi\"} ] ,\t\"model\" : \"m\" } ", SERVE},
        /* tollgate's own members: models dropped, stream and stream_options rewritten */
        {"{\"models\":[\"a\",\"b\"],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", SERVE},
        {"{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":false},\"messages\":[]}",
         SERVE},
        {"{\"model\":\"m\",\"stream\":false,\"stream_options\":{\"include_obfuscation\":true,"
         "\"include_usage\":false},\"messages\":[]}",
         SERVE},
        {"{\"model\":\"m\",\"stream_options\":null,\"messages\":[]}", SERVE},
        {"{\"model\":\"m\",\"stream_options\":{},\"messages\":[]}", SERVE},
        /* the only member is tollgate's */
        {"{\"model\":\"m\"}", SERVE},
        /* strings with escapes and non-ASCII inside values are forwarded as sent */
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\\u00e9\\n\\\"q\\\" \xc3\xa9\"}]}",
         SERVE},
        {"{\"model\":\"m\",\"temperature\":0.70000000000000001,\"seed\":-12,\"max_tokens\":1e2}", SERVE},
        /* an escaped key could be one of tollgate's: the tree decides */
        {"{\"mod\\u0065l\":\"m\",\"messages\":[]}", DECLINE},
        {"{\"model\":\"m\",\"stream_options\":{\"include\\u005fusage\":false},\"stream\":true}", MIXED},
        /* numbers jansson might refuse or read differently */
        {"{\"model\":\"m\",\"seed\":123456789012345678901234567890}", ANY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char what[32];
        snprintf(what, sizeof(what), "req edge %zu", i);
        int rc = check_req(what, cases[i].body, strlen(cases[i].body));
        if (cases[i].want != ANY && rc != cases[i].want) {
            fprintf(stderr, "%s: fast path gave %d, expected %d: %s\n", what, rc, cases[i].want,
                    cases[i].body);
            fail();
        }
    }
    /* no raw bytes: always the tree */
    static tg_provider_cfg_t prov = {.name = "p", .base_url = "https://api.example.com/v1"};
    tg_build_in_t in = {.provider = &prov, .upstream_model = "m"};
    char *b = (char *)"x";
    size_t n = 1;
    assert_int_equal(tg_openai_request_passthrough(&in, &b, &n), DECLINE);
    assert_null(b);
}

static void test_fixture_responses(void **state)
{
    (void)state;
    tally_t t = {0};
    assert_true(each_file("openai", on_resp_file, &t) > 0);
    assert_true(each_file("openai/errors", on_resp_file, &t) > 0);
    /* both whole answers are the common case the fast path exists for */
    assert_int_equal(t.served, 2);
    assert_true(t.declined >= 10); /* every error body is left to the slow path */

    size_t n = 0;
    char *body = fx_read("openai/response.json", &n);
    assert_non_null(body);
    assert_int_equal(check_resp("response.json", body, n, "gw-model"), SERVE);
    free(body);
}

static void test_fixture_streams(void **state)
{
    (void)state;
    replay_t r = {0};
    assert_true(each_file("openai", on_sse_file, &r) >= 4);
    assert_true(r.served > 0);
    assert_true(r.declined > 0); /* at least [DONE], the error event and the usage split */
}

static void test_fuzz_seeds(void **state)
{
    (void)state;
    /* response seeds: the first byte picks the fuzzer's HTTP status, the rest is the body */
    tally_t t = {0};
    assert_true(each_file("../fuzz/corpus/fuzz_openai_response", on_resp_seed, &t) > 0);
    assert_true(t.served > 0);

    /* stream seeds: the first byte is the fuzzer's chunk size, the rest SSE bytes */
    replay_t r = {0};
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/../fuzz/corpus/fuzz_openai_stream", fixtures_dir());
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        size_t n;
        char *bytes = read_path(path, &n);
        if (bytes == NULL)
            continue;
        /* the seeds may or may not carry the size byte: replay both readings */
        replay_sse_bytes(path, bytes, n, &r);
        if (n > 0)
            replay_sse_bytes(path, bytes + 1, n - 1, &r);
        free(bytes);
        files++;
    }
    closedir(d);
    assert_true(files > 0);
    assert_true(r.served > 0);
}

/* ---- hand-written edge cases ---- */

typedef struct {
    const char *body;
    int want; /* SERVE, DECLINE or ANY */
} edge_t;

#define OBJ "\"id\":\"c\",\"object\":\"chat.completion\",\"created\":1,"
#define MSG \
    "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":\"stop\"}]"

static const edge_t RESP_EDGES[] = {
    {"{" OBJ "\"model\":\"m\",\"choices\":" MSG "}", SERVE},
    {"  {\n \"object\" : \"chat.completion\" ,\t\"model\" : \"m\" , \"choices\" : [ "
     "{\"a\":[true,false,null,-0.5e-3,"
     "1E+2,0]} ] }\r\n",
     SERVE},
    /* the model is already the reported one: no edit, the provider's bytes are served */
    {"{" OBJ "\"model\":\"gw-model\",\"choices\":[]}", SERVE},
    /* escaped keys: at the top level jansson reads "m\u006fdel" as "model"; below it, bytes are kept */
    {"{" OBJ "\"m\\u006fdel\":\"m\",\"choices\":[]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"m\\u006fdel\":\"x\",\"choices\":[]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[{\"message\":{\"c\\u006fntent\":\"x\\n\\\"y\\\"\"}}]}", SERVE},
    {"{" OBJ "\"model\":\"m\\u0041\",\"choices\":[]}", DECLINE},
    /* duplicate top-level keys */
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"model\":\"x\"}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"choices\":[1]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"object\":\"chat.completion\"}", DECLINE},
    {"{" OBJ
     "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1},\"usage\":{\"prompt_tokens\":2}}",
     DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"id\":\"other\"}", ANY},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"error\":{\"message\":\"x\"},\"error\":null}", ANY},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"error\":null,\"error\":{\"message\":\"x\"}}", DECLINE},
    /* numbers */
    {"{" OBJ "\"model\":\"m\",\"choices\":[123456789012345678]}", SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[12345678901234567890]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[-9223372036854775808]}", ANY},
    {"{" OBJ "\"model\":\"m\",\"choices\":[1e999]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[-1e999]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[1e-999]}", ANY},
    {"{" OBJ
     "\"model\":\"m\",\"choices\":[0.000000000000000000000000000000000000000000000000000000000000001]}",
     ANY},
    {"{" OBJ "\"model\":\"m\",\"choices\":[01]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[1.]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[-]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[+1]}", DECLINE},
    /* strings: NUL, surrogates, UTF-8 */
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\\u0000\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\\ud83d\\ude00\"]}", ANY},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\\ud83d\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\\ude00\\ud83d\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\xf0\x9f\x98\x80 \xc3\xa9 \xe2\x82\xac\"]}", SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\xff\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\xc0\xaf\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\xed\xa0\x80\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\xf4\x90\x80\x80\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\xe2\x82\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"a\tb\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\\x\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\\u12G4\"]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[\"\x7f\"]}", SERVE},
    /* usage */
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"usage\":null}", SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"usage\":5}", SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4.5,"
     "\"prompt_tokens_details\":{\"cached_tokens\":2}}}",
     SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"prompt_tokens\":7,"
     "\"completion_tokens\":-2.5,\"prompt_tokens_details\":{\"cached_tokens\":1},\"prompt_tokens_details\":"
     "null}}",
     SERVE},
    {"{" OBJ
     "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1e300,\"completion_tokens\":\"5\"}}",
     SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt\\u005ftokens\":7}}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"prompt\\u005ftokens\":7}}",
     DECLINE},
    {"{" OBJ
     "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens_details\":{\"cached\\u005ftokens\":4}}}",
     DECLINE},
    /* shapes the slow path refuses or repairs */
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"error\":null}", SERVE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"error\":{\"message\":\"x\"}}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],\"error\":\"boom\"}", DECLINE},
    {"{\"model\":\"m\",\"choices\":[]}", DECLINE},
    {"{\"object\":5,\"model\":\"m\",\"choices\":[]}", DECLINE},
    {"{\"object\":\"chat.completion\",\"choices\":[]}", DECLINE},
    {"{\"object\":\"chat.completion\",\"model\":5,\"choices\":[]}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":{}}", DECLINE},
    {"{" OBJ "\"model\":\"m\"}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[]} x", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[],}", DECLINE},
    {"{" OBJ "\"model\":\"m\",\"choices\":[tru]}", DECLINE},
    {"\xef\xbb\xbf{" OBJ "\"model\":\"m\",\"choices\":[]}", DECLINE},
    {"[1]", DECLINE},
    {"", DECLINE},
    {"{", DECLINE},
    {"null", DECLINE},
};

static void test_resp_edges(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(RESP_EDGES) / sizeof(RESP_EDGES[0]); i++) {
        char what[32];
        snprintf(what, sizeof(what), "resp edge %zu", i);
        int rc = check_resp_models(what, RESP_EDGES[i].body, strlen(RESP_EDGES[i].body));
        if (RESP_EDGES[i].want != ANY && rc != RESP_EDGES[i].want) {
            fprintf(stderr, "%s: fast path returned %d, expected %d: %s\n", what, rc, RESP_EDGES[i].want,
                    RESP_EDGES[i].body);
            fail();
        }
    }
}

/* An embedded NUL cannot be written in a C string literal table. */
static void test_resp_embedded_nul(void **state)
{
    (void)state;
    static const char body[] = "{\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[\"a\0b\"]}";
    assert_int_equal(check_resp_models("nul byte", body, sizeof(body) - 1), DECLINE);
    static const char tail[] = "{\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[]}\0";
    assert_int_equal(check_resp_models("nul tail", tail, sizeof(tail) - 1), DECLINE);
}

static char *nested(int depth, const char *head, const char *tail)
{
    size_t n = strlen(head) + strlen(tail) + 2 * (size_t)depth + 1;
    char *s = malloc(n);
    assert_non_null(s);
    size_t off = (size_t)snprintf(s, n, "%s", head);
    for (int i = 0; i < depth; i++)
        s[off++] = '[';
    for (int i = 0; i < depth; i++)
        s[off++] = ']';
    snprintf(s + off, n - off, "%s", tail);
    return s;
}

static void test_resp_deep_nesting(void **state)
{
    (void)state;
    const char *head = "{\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[{\"x\":";
    const char *tail = "}]}";
    char *shallow = nested(100, head, tail);
    assert_int_equal(check_resp_models("depth 100", shallow, strlen(shallow)), SERVE);
    char *deep = nested(1000, head, tail);
    assert_int_equal(check_resp_models("depth 1000", deep, strlen(deep)), DECLINE);
    char *deeper = nested(5000, head, tail); /* beyond jansson's own limit: both refuse */
    assert_int_equal(check_resp_models("depth 5000", deeper, strlen(deeper)), DECLINE);
    free(shallow);
    free(deep);
    free(deeper);
}

static void test_resp_usage_values(void **state)
{
    (void)state;
    const char *b =
        "{\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
        "11,\"completion_tokens\":22,\"prompt_tokens_details\":{\"cached_tokens\":5}}}";
    tg_resp_in_t in = {.model = "gw-model", .request_id = "r", .created = 1};
    tg_buf_t out;
    tg_buf_init(&out, OUT_MAX);
    bool same = true;
    tg_usage_t u = {0};
    assert_int_equal(tg_openai_passthrough(&in, b, strlen(b), &out, &same, &u), 0);
    assert_false(same);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 11);
    assert_int_equal(u.completion_tokens, 22);
    assert_int_equal(u.cached_tokens, 5);
    /* only the model value changed: the provider's bytes around it are kept as they were */
    const char *want = "{\"object\":\"chat.completion\",\"model\":\"gw-model\",\"choices\":[],\"usage\":{"
                       "\"prompt_tokens\":11,\"completion_tokens\":22,\"prompt_tokens_details\":{\"cached_"
                       "tokens\":5}}}";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    tg_buf_dispose(&out);

    /* an output limit smaller than the answer is an error, not a truncated answer */
    tg_buf_init(&out, 16);
    assert_int_equal(tg_openai_passthrough(&in, b, strlen(b), &out, &same, &u), TG_ETOO_LARGE);
    tg_buf_dispose(&out);
}

#define CH    "\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,"
#define DELTA "[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]"
#define USAGE "{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}"

static const edge_t STREAM_EDGES[] = {
    {"{" CH "\"model\":\"m\",\"choices\":" DELTA "}", SERVE},
    /* include_usage adds "usage":null to every content chunk: removed wherever it sits */
    {"{" CH "\"model\":\"m\",\"choices\":" DELTA ",\"usage\":null}", SERVE},
    {"{\"usage\":null," CH "\"model\":\"m\",\"choices\":" DELTA "}", SERVE},
    {"{" CH "\"usage\" : null , \"model\":\"m\",\"choices\":" DELTA "}", SERVE},
    {"{" CH "\"model\":\"m\" ,\n\"usage\":null\n,\"choices\":" DELTA "}", SERVE},
    {"{ \"usage\" :null }", DECLINE},
    /* the usage chunk: relayed to a client that asked, dropped otherwise (same rc either way) */
    {"{" CH "\"model\":\"m\",\"choices\":[],\"usage\":" USAGE "}", SERVE},
    {"{" CH "\"model\":\"m\",\"choices\":[ \n ],\"usage\":{\"prompt_tokens\":5,\"prompt_tokens_details\":{"
     "\"cached_tokens\":3}}}",
     SERVE},
    {"{" CH "\"model\":\"m\",\"usage\":" USAGE ",\"choices\":[]}", SERVE},
    /* usage with choices: the slow path splits it in two */
    {"{" CH "\"model\":\"m\",\"choices\":" DELTA ",\"usage\":" USAGE "}", DECLINE},
    /* usage chunk without choices: the slow path adds them */
    {"{" CH "\"model\":\"m\",\"usage\":" USAGE "}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":null,\"usage\":" USAGE "}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[],\"usage\":5}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[],\"usage\":null,\"usage\":" USAGE "}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt\\u005ftokens\":7}}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"prompt\\u005ftokens\":7}}",
     DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":2.9,\"completion_tokens\":-1}}",
     SERVE},
    /* end, errors, other objects */
    {"[DONE]", DECLINE},
    {"{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[],\"error\":{\"message\":\"boom\"}}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":" DELTA ",\"error\":null}", SERVE},
    {"{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":" DELTA "}", DECLINE},
    {"{\"id\":\"c\",\"model\":\"m\",\"choices\":" DELTA "}", DECLINE},
    {"{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"object\":\"chat.completion.chunk\",\"model\":"
     "\"m\","
     "\"choices\":[]}",
     DECLINE},
    {"{\"id\":\"c\",\"object\":\"chat.completion.chunk \",\"model\":\"m\",\"choices\":[]}", DECLINE},
    {"{\"id\":\"c\",\"object\":\"chat.completion.\\u0063hunk\",\"model\":\"m\",\"choices\":[]}", DECLINE},
    /* escapes, duplicates, numbers, strings */
    {"{" CH "\"m\\u006fdel\":\"m\",\"choices\":" DELTA "}", DECLINE},
    {"{" CH "\"model\":\"m\",\"model\":\"n\",\"choices\":" DELTA "}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":" DELTA ",\"id\":\"d\"}", ANY},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\\ud83d\\ude00 \\\"q\\\" \\u00e9\"}}]}",
     ANY},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\\u0000\"}}]}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\\udc00\"}}]}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"index\":99999999999999999999}]}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"index\":1e400}]}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\xf0\x9f\x98\x80\"}}]}", SERVE},
    {"{" CH "\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\xf0\x9f\x98\"}}]}", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[]", DECLINE},
    {"{" CH "\"model\":\"m\",\"choices\":[]}}", DECLINE},
    {"[]", DECLINE},
    {"", DECLINE},
};

static void test_stream_edges(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(STREAM_EDGES) / sizeof(STREAM_EDGES[0]); i++) {
        char what[32];
        snprintf(what, sizeof(what), "stream edge %zu", i);
        int rc = check_chunk_both(what, STREAM_EDGES[i].body, strlen(STREAM_EDGES[i].body));
        if (STREAM_EDGES[i].want != ANY && rc != STREAM_EDGES[i].want) {
            fprintf(stderr, "%s: fast path returned %d, expected %d: %s\n", what, rc, STREAM_EDGES[i].want,
                    STREAM_EDGES[i].body);
            fail();
        }
    }
}

static void test_stream_usage_chunk(void **state)
{
    (void)state;
    const char *d =
        "{" CH "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":"
        "1,\"prompt_tokens_details\":{\"cached_tokens\":2}}}";
    for (int cu = 0; cu < 2; cu++) {
        tg_buf_t out;
        tg_buf_init(&out, OUT_MAX);
        bool drop = !cu;
        tg_usage_t u = {0};
        assert_int_equal(tg_openai_stream_passthrough("gw", d, strlen(d), cu, &out, &drop, &u, NULL), 0);
        /* usage is read for billing whether or not the client sees it */
        assert_true(u.present);
        assert_int_equal(u.prompt_tokens, 5);
        assert_int_equal(u.completion_tokens, 1);
        assert_int_equal(u.cached_tokens, 2);
        assert_int_equal(drop, !cu);
        if (cu) {
            json_error_t je;
            json_t *j = json_loadb(out.data, out.len, 0, &je);
            assert_non_null(j);
            assert_string_equal(json_string_value(json_object_get(j, "model")), "gw");
            assert_true(json_is_object(json_object_get(j, "usage")));
            json_decref(j);
        } else {
            assert_int_equal(out.len, 0);
        }
        tg_buf_dispose(&out);
    }

    /* a content chunk: "usage":null goes, the model is replaced, nothing else moves */
    const char *c =
        "{\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":null,\"object\":\"chat.completion.chunk\"}";
    tg_buf_t out;
    tg_buf_init(&out, OUT_MAX);
    bool drop = true;
    tg_usage_t u = {0};
    assert_int_equal(tg_openai_stream_passthrough("gw", c, strlen(c), false, &out, &drop, &u, NULL), 0);
    assert_false(drop);
    assert_false(u.present);
    const char *want = "{\"id\":\"c\",\"model\":\"gw\",\"choices\":[],\"object\":\"chat.completion.chunk\"}";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    tg_buf_dispose(&out);
}

/* What a chunk delivers, noted by the scan: the text bytes a cut stream is charged on, and whether
 * the chunk is more than an opening (relay.c holds openings until the first real chunk). */
static void test_stream_chunk_info(void **state)
{
    (void)state;
    static const struct {
        const char *choices;
        uint64_t text;
        bool substantive;
    } cases[] = {
        {"[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]", 0,
         false},
        {"[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]", 5, true},
        {"[{\"index\":0,\"delta\":{\"content\":\"a\\\"b\"},\"finish_reason\":null}]", 4, true},
        {"[{\"index\":0,\"delta\":{\"refusal\":\"no\"},\"finish_reason\":null}]", 2, true},
        {"[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]", 0, true},
        {"[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":"
         "\"\"}}]}}]",
         0, true},
        {"[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"x\\\":1}"
         "\"}}]}}]",
         9, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char d[512];
        snprintf(d, sizeof(d),
                 "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":%s}",
                 cases[i].choices);
        tg_buf_t out;
        tg_buf_init(&out, OUT_MAX);
        bool drop = true;
        tg_usage_t u = {0};
        tg_chunk_info_t info = {.text_bytes = 99, .substantive = !cases[i].substantive};
        assert_int_equal(tg_openai_stream_passthrough("gw", d, strlen(d), false, &out, &drop, &u, &info), 0);
        assert_false(drop);
        assert_int_equal(info.text_bytes, cases[i].text);
        assert_int_equal(info.substantive, cases[i].substantive);
        tg_buf_dispose(&out);
    }
}

/* A whole stream through both paths ends with the same billed usage. */
static void test_stream_fixture_usage_total(void **state)
{
    (void)state;
    size_t n = 0;
    char *bytes = fx_read("openai/stream.sse", &n);
    assert_non_null(bytes);
    fx_stream_t slow;
    assert_int_equal(fx_run_stream(&tg_adapter_openai, "openai/stream.sse", 0, &slow), 0);
    assert_int_equal(slow.end_rc, 1);
    assert_true(slow.usage.present);
    replay_t r = {0};
    replay_sse_bytes("stream.sse", bytes, n, &r);
    assert_true(r.served >= 2);
    assert_int_equal(r.declined, 1); /* [DONE] only */
    fx_stream_dispose(&slow);
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_responses),
        cmocka_unit_test(test_fixture_streams),
        cmocka_unit_test(test_fuzz_seeds),
        cmocka_unit_test(test_resp_edges),
        cmocka_unit_test(test_resp_embedded_nul),
        cmocka_unit_test(test_resp_deep_nesting),
        cmocka_unit_test(test_resp_usage_values),
        cmocka_unit_test(test_stream_edges),
        cmocka_unit_test(test_stream_usage_chunk),
        cmocka_unit_test(test_stream_fixture_usage_total),
        cmocka_unit_test(test_req_fixtures_and_seeds),
        cmocka_unit_test(test_req_edges),
        cmocka_unit_test(test_string_scan_offsets),
        cmocka_unit_test(test_stream_chunk_info),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

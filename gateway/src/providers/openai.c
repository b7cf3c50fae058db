/*
 * openai.c - the pass-through adapter for OpenAI and OpenAI-compatible hosts.
 *
 * This runs on every request, so it avoids deep copies: the upstream body is a shallow copy of
 * the canonical request (values shared by reference) with "model" swapped, "models" removed and,
 * for streams, include_usage forced on (tollgate always bills from provider-reported usage; the
 * gateway hides the usage chunk from clients that did not ask for it). Answers avoid trees
 * altogether on the common path: see tg_openai_passthrough below.
 */
#include "provider.h"

#include <endian.h> /* le64toh: the string scanner reads words in memory order */
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h" /* tg_json_escape */

static int add_bearer(tg_upstream_req_t *out, const char *key)
{
    char auth[1024];
    int n = snprintf(auth, sizeof(auth), "Bearer %s", key);
    int rc = n > 0 && (size_t)n < sizeof(auth) ? tg_upstream_req_add_header(out, "Authorization", auth)
                                               : TG_ETOO_LARGE;
    sodium_memzero(auth, sizeof(auth)); /* the stack copy holds the key */
    return rc;
}

/* Everything but the body: URL, headers, method. */
static int oa_finish_request(const tg_build_in_t *in, tg_upstream_req_t *out, tg_error_t *err)
{
    int rc = tg_prov_set_url(out, in->provider->base_url, "/chat/completions", NULL, NULL);
    if (rc == 0)
        rc = tg_upstream_req_add_header(out, "Content-Type", "application/json");
    if (rc == 0 && in->api_key != NULL && in->api_key[0] != '\0')
        rc = add_bearer(out, in->api_key);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the upstream request");
    out->method = "POST";
    return 0;
}

static int oa_build_request(const tg_build_in_t *in, const json_t *canon, tg_upstream_req_t *out,
                            tg_error_t *err)
{
    char *raw_body = NULL;
    size_t raw_len = 0;
    int frc = tg_openai_request_passthrough(in, &raw_body, &raw_len);
    if (frc < 0)
        return tg_error_set(err, frc, "cannot build the upstream request");
    if (frc == 0) {
        free(out->body);
        out->body = raw_body;
        out->body_len = raw_len;
        return oa_finish_request(in, out, err);
    }
    /* json_copy is shallow: only the top-level object is new, nested values are shared */
    json_t *body = json_copy((json_t *)canon);
    if (body == NULL)
        return tg_error_set(err, TG_ENOMEM, "cannot copy the request");
    int rc = 0;
    json_object_del(body, "models");
    if (json_object_set_new(body, "model", json_string(in->upstream_model)) != 0)
        rc = TG_ENOMEM;
    if (in->zero_retention && json_object_set_new(body, "store", json_false()) != 0)
        rc = TG_ENOMEM;
    if (in->stream) {
        json_t *so = json_object_get(canon, "stream_options");
        json_t *nso = json_is_object(so) ? json_copy(so) : json_object();
        if (nso == NULL || json_object_set_new(nso, "include_usage", json_true()) != 0) {
            json_decref(nso); /* not handed to body yet: ours to free */
            rc = TG_ENOMEM;
        } else if (json_object_set_new(body, "stream_options", nso) != 0) {
            rc = TG_ENOMEM;
        }
        if (json_object_set_new(body, "stream", json_true()) != 0)
            rc = TG_ENOMEM;
    } else {
        /* OpenAI rejects stream_options on a non-stream request */
        json_object_del(body, "stream_options");
        json_object_del(body, "stream");
    }
    if (rc == 0)
        rc = tg_prov_set_body(out, body, err);
    json_decref(body);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the upstream request");
    return oa_finish_request(in, out, err);
}

/* Reads an OpenAI "usage" object. */
static void read_usage(const json_t *u, tg_usage_t *usage)
{
    if (!json_is_object(u) || usage == NULL)
        return;
    usage->present = true;
    usage->prompt_tokens = tg_prov_int(u, "prompt_tokens");
    usage->completion_tokens = tg_prov_int(u, "completion_tokens");
    usage->cached_tokens = tg_prov_int(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
}

/* A 2xx body that is an error object anyway (some compatible hosts do this). */
static int body_error(const json_t *root, tg_error_t *err)
{
    json_t *e = json_object_get(root, "error");
    if (e == NULL || json_is_null(e))
        return 0;
    char msg[200];
    tg_prov_copy_public(msg, sizeof(msg),
                        json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                                          : json_string_value(e));
    return tg_error_set(err, TG_EUPSTREAM_FAILED, "%s", msg[0] ? msg : "upstream error");
}

static int oa_parse_response(const tg_resp_in_t *in, const char *body, size_t len, json_t **out,
                             tg_usage_t *usage, tg_error_t *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body is not a JSON object");
    }
    int rc = body_error(root, err);
    if (rc != 0) {
        json_decref(root);
        return rc;
    }
    if (!json_is_array(json_object_get(root, "choices"))) {
        json_decref(root);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body has no choices");
    }
    read_usage(json_object_get(root, "usage"), usage);
    if (in->model != NULL && json_object_set_new(root, "model", json_string(in->model)) != 0) {
        json_decref(root);
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    }
    if (!json_is_string(json_object_get(root, "object")))
        json_object_set_new(root, "object", json_string("chat.completion"));
    *out = root;
    return 0;
}

/* ---- non-stream fast path ----
 *
 * A pass-through answer needs no tree: parsing ~1 KiB into jansson objects and serialising it
 * again was the largest user-space cost of a request. tg_openai_passthrough validates the body
 * as strict JSON in one pass, reads usage, and hands the provider's own bytes to the client with
 * only the top-level "model" value replaced. It is conservative: whatever it is not sure about
 * (an "error" member, a missing "object", duplicate or escaped top-level keys, numbers or
 * escapes jansson might refuse, deep nesting) returns 1 and oa_parse_response decides, so the
 * client sees the same answers (and the same errors) as before, only cheaper.
 */

#define PT_MAX_DEPTH 128

typedef struct pt_val {
    const char *start, *end; /* the value's bytes */
    char type;               /* 'o' object, 'a' array, 's' string, 'i' integer, 'r' real, 'l' literal */
    bool esc;                /* string: holds a backslash escape */
    bool is_null;
    int64_t ival; /* 'i', and 'r' in range (tg_prov_int's rules) */
} pt_val_t;

typedef struct pt {
    const unsigned char *p, *end;
    int depth;
    bool unsure;           /* valid as far as we know, but let jansson decide */
    tg_chunk_info_t *info; /* when set: what a stream chunk carries for the client */
} pt_t;

/* Called for each member of the object being scanned (top level only). */
typedef void (*pt_member_fn)(void *ud, const char *key, size_t klen, bool kesc, const pt_val_t *v);

static int pt_value(pt_t *s, pt_val_t *v, pt_member_fn fn, void *ud);

/*
 * What a stream delivers, noted where the scan already is (any depth): the bytes of "content",
 * "refusal" and "arguments" strings (escapes included; relay.c charges a cut stream on them), and
 * whether the chunk is more than an opening (a non-empty one of those, a finish reason, a tool call).
 */
static void pt_note_chunk_member(tg_chunk_info_t *info, const char *key, size_t kl, const pt_val_t *v)
{
    if (v->type == 's' && ((kl == 7 && (memcmp(key, "content", 7) == 0 || memcmp(key, "refusal", 7) == 0)) ||
                           (kl == 9 && memcmp(key, "arguments", 9) == 0))) {
        uint64_t n = (uint64_t)(v->end - v->start) - 2;
        info->text_bytes += n;
        info->substantive |= n > 0;
    } else if (kl == 13 && v->type == 's' && memcmp(key, "finish_reason", 13) == 0) {
        info->substantive = true;
    } else if (kl == 10 && v->type == 'a' && memcmp(key, "tool_calls", 10) == 0 && v->end - v->start > 2) {
        info->substantive = true; /* "[ ]" cannot reach here: the provider's arrays are compact */
    }
}

static void pt_ws(pt_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int pt_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A mark (bit 7) on each byte of w, loaded little-endian from a string's bytes, that may need a
 * closer look: '"', '\\', a control byte (< 0x20) or a non-ASCII one (the hasless/haszero tricks of
 * "Bit Twiddling Hacks"). A borrow can mark a byte above a special one, never below it, so the
 * lowest mark is exact: it is the first special byte, and every byte before it is plain ASCII. */
static inline uint64_t pt_word_special(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ (ones * '"'), bslash = w ^ (ones * '\\');
    return (((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) | ((bslash - ones) & ~bslash) | w) & highs;
}

/* A string at s->p (the opening quote); strict UTF-8, as jansson checks it. */
static int pt_string(pt_t *s, pt_val_t *v)
{
    const unsigned char *p = s->p + 1, *e = s->end;
    v->start = (const char *)s->p;
    v->type = 's';
    v->esc = false;
    while (p < e) {
        /* plain ASCII runs, 8 bytes at a time: most of a request or an answer is prose; a word
         * with a special byte skips straight to it (keys and short values end in their first word) */
        while (e - p >= 8) {
            uint64_t w, marks;
            memcpy(&w, p, sizeof(w));
            w = le64toh(w);
            marks = pt_word_special(w);
            if (marks != 0) {
                p += __builtin_ctzll(marks) >> 3;
                break;
            }
            p += 8;
        }
        if (p >= e)
            break;
        unsigned char c = *p;
        if (c == '"') {
            s->p = p + 1;
            v->end = (const char *)s->p;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            v->esc = true;
            if (p + 1 >= e)
                return -1;
            c = p[1];
            if (c == 'u') {
                if (p + 6 > e)
                    return -1;
                int cp = 0;
                for (int i = 2; i < 6; i++) {
                    int h = pt_hex(p[i]);
                    if (h < 0)
                        return -1;
                    cp = cp * 16 + h;
                }
                if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
                    s->unsure = true; /* NUL and surrogate pairs: jansson's rules decide */
                p += 6;
                continue;
            }
            if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' && c != 't')
                return -1;
            p += 2;
            continue;
        }
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n = (size_t)(e - p);
        if (c >= 0xc2 && c <= 0xdf && n >= 2 && (p[1] & 0xc0) == 0x80) {
            p += 2;
        } else if (c >= 0xe0 && c <= 0xef && n >= 3 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
                   !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0)) {
            p += 3;
        } else if (c >= 0xf0 && c <= 0xf4 && n >= 4 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
                   (p[3] & 0xc0) == 0x80 && !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90)) {
            p += 4;
        } else {
            return -1;
        }
    }
    return -1;
}

static int pt_number(pt_t *s, pt_val_t *v)
{
    const unsigned char *p = s->p, *e = s->end;
    v->start = (const char *)p;
    if (p < e && *p == '-')
        p++;
    const unsigned char *digits = p;
    if (p < e && *p == '0') {
        p++;
    } else if (p < e && *p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    } else {
        return -1;
    }
    size_t int_digits = (size_t)(p - digits);
    bool real = false;
    if (p < e && *p == '.') {
        real = true;
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    v->end = (const char *)p;
    v->ival = 0;
    size_t n = (size_t)(p - (const unsigned char *)v->start);
    if (!real) {
        v->type = 'i';
        if (int_digits > 18) {
            s->unsure = true; /* might not fit jansson's integer */
            return 0;
        }
        int64_t x = 0;
        for (const unsigned char *d = digits; d < p; d++)
            x = x * 10 + (*d - '0');
        v->ival = *v->start == '-' ? -x : x;
        return 0;
    }
    v->type = 'r';
    char tmp[64];
    if (n >= sizeof(tmp)) {
        s->unsure = true;
        return 0;
    }
    memcpy(tmp, v->start, n);
    tmp[n] = '\0';
    double d = strtod(tmp, NULL);
    if (isinf(d) || isnan(d))
        s->unsure = true; /* jansson refuses an overflowing real */
    else if (d >= 0 && d < 9.0e18)
        v->ival = (int64_t)d;
    return 0;
}

static int pt_literal(pt_t *s, pt_val_t *v, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    v->start = (const char *)s->p;
    s->p += n;
    v->end = (const char *)s->p;
    v->type = 'l';
    v->is_null = word[0] == 'n';
    return 0;
}

static int pt_container(pt_t *s, pt_val_t *v, pt_member_fn fn, void *ud)
{
    bool obj = *s->p == '{';
    unsigned char close = obj ? '}' : ']';
    v->start = (const char *)s->p;
    v->type = obj ? 'o' : 'a';
    if (++s->depth > PT_MAX_DEPTH)
        return -1; /* reported as unsure by the caller */
    s->p++;
    pt_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        v->end = (const char *)s->p;
        s->depth--;
        return 0;
    }
    for (;;) {
        pt_val_t key = {0}, val = {0};
        if (obj) {
            if (s->p >= s->end || *s->p != '"' || pt_string(s, &key) != 0)
                return -1;
            pt_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return -1;
            s->p++;
            pt_ws(s);
        }
        if (pt_value(s, &val, NULL, NULL) != 0)
            return -1;
        if (obj && s->info != NULL && !key.esc)
            pt_note_chunk_member(s->info, key.start + 1, (size_t)(key.end - key.start) - 2, &val);
        if (obj && fn != NULL)
            fn(ud, key.start + 1, (size_t)(key.end - key.start) - 2, key.esc, &val);
        pt_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == ',') {
            s->p++;
            pt_ws(s);
            continue;
        }
        if (*s->p != close)
            return -1;
        s->p++;
        v->end = (const char *)s->p;
        s->depth--;
        return 0;
    }
}

static int pt_value(pt_t *s, pt_val_t *v, pt_member_fn fn, void *ud)
{
    if (s->p >= s->end)
        return -1;
    v->is_null = false;
    switch (*s->p) {
    case '{':
    case '[':
        return pt_container(s, v, fn, ud);
    case '"':
        return pt_string(s, v);
    case 't':
        return pt_literal(s, v, "true", 4);
    case 'f':
        return pt_literal(s, v, "false", 5);
    case 'n':
        return pt_literal(s, v, "null", 4);
    default:
        return pt_number(s, v);
    }
}

/* Scans the complete text [p, end) as one value; members of a top-level object go to fn. */
static int pt_document(const char *p, const char *end, pt_val_t *v, pt_member_fn fn, void *ud, bool *unsure,
                       tg_chunk_info_t *info)
{
    pt_t s = {.p = (const unsigned char *)p, .end = (const unsigned char *)end, .info = info};
    pt_ws(&s);
    int rc = pt_value(&s, v, fn, ud);
    pt_ws(&s);
    *unsure = s.unsure || s.depth > PT_MAX_DEPTH;
    return rc == 0 && s.p == s.end ? 0 : -1;
}

static bool pt_key_is(const char *key, size_t klen, const char *want)
{
    size_t n = strlen(want);
    return klen == n && memcmp(key, want, n) == 0;
}

typedef struct pt_top {
    pt_val_t model, object, choices, usage;
    const char *usage_key; /* the opening quote of the "usage" key */
    int n_model, n_object, n_choices, n_usage;
    bool error, escaped_key;
} pt_top_t;

static void pt_top_member(void *ud, const char *key, size_t klen, bool kesc, const pt_val_t *v)
{
    pt_top_t *t = ud;
    if (kesc) {
        t->escaped_key = true; /* "mod\u0065l" is "model" to jansson */
    } else if (pt_key_is(key, klen, "model")) {
        t->model = *v;
        t->n_model++;
    } else if (pt_key_is(key, klen, "object")) {
        t->object = *v;
        t->n_object++;
    } else if (pt_key_is(key, klen, "choices")) {
        t->choices = *v;
        t->n_choices++;
    } else if (pt_key_is(key, klen, "usage")) {
        t->usage = *v;
        t->usage_key = key - 1;
        t->n_usage++;
    } else if (pt_key_is(key, klen, "error")) {
        t->error = !v->is_null;
    }
}

typedef struct pt_usage {
    int64_t prompt, completion, cached;
    pt_val_t details;
    bool have_details;
    bool escaped_key; /* "prompt\u005ftokens" is "prompt_tokens" to jansson: let it decide */
} pt_usage_t;

/* Later duplicates win, as in jansson; a real counts as tg_prov_int counts it. */
static void pt_usage_member(void *ud, const char *key, size_t klen, bool kesc, const pt_val_t *v)
{
    pt_usage_t *u = ud;
    int64_t x = v->type == 'i' || v->type == 'r' ? v->ival : 0;
    if (kesc) {
        u->escaped_key = true;
        return;
    }
    if (pt_key_is(key, klen, "prompt_tokens"))
        u->prompt = x;
    else if (pt_key_is(key, klen, "completion_tokens"))
        u->completion = x;
    else if (pt_key_is(key, klen, "prompt_tokens_details")) {
        u->details = *v;
        u->have_details = v->type == 'o';
    }
}

static void pt_cached_member(void *ud, const char *key, size_t klen, bool kesc, const pt_val_t *v)
{
    pt_usage_t *u = ud;
    if (kesc)
        u->escaped_key = true;
    else if (pt_key_is(key, klen, "cached_tokens"))
        u->cached = v->type == 'i' || v->type == 'r' ? v->ival : 0;
}

int tg_openai_passthrough(const tg_resp_in_t *in, const char *body, size_t len, tg_buf_t *out, bool *same,
                          tg_usage_t *usage)
{
    pt_top_t top;
    memset(&top, 0, sizeof(top));
    pt_val_t root;
    bool unsure;
    if (body == NULL || pt_document(body, body + len, &root, pt_top_member, &top, &unsure, NULL) != 0 ||
        unsure || root.type != 'o')
        return 1;
    if (top.error || top.escaped_key || top.n_model != 1 || top.model.type != 's' || top.model.esc ||
        top.n_object != 1 || top.object.type != 's' || top.n_choices != 1 || top.choices.type != 'a' ||
        top.n_usage > 1)
        return 1;
    pt_usage_t u;
    memset(&u, 0, sizeof(u));
    if (top.n_usage == 1 && top.usage.type == 'o') {
        pt_val_t v;
        /* the spans were validated above: these re-scans of small pieces cannot fail */
        if (pt_document(top.usage.start, top.usage.end, &v, pt_usage_member, &u, &unsure, NULL) != 0)
            return 1;
        if (u.have_details &&
            pt_document(u.details.start, u.details.end, &v, pt_cached_member, &u, &unsure, NULL) != 0)
            return 1;
        if (u.escaped_key)
            return 1;
    }
    char esc[512];
    int n = in->model != NULL ? tg_json_escape(esc, sizeof(esc), in->model) : 0;
    if (n < 0)
        return 1;
    size_t old_len = (size_t)(top.model.end - top.model.start) - 2;
    *same = in->model == NULL || (old_len == (size_t)n && memcmp(top.model.start + 1, esc, (size_t)n) == 0);
    if (!*same) {
        size_t head = (size_t)(top.model.start + 1 - body);
        if (tg_buf_append(out, body, head) != 0 || tg_buf_append(out, esc, (size_t)n) != 0 ||
            tg_buf_append(out, top.model.end - 1, len - (size_t)(top.model.end - 1 - body)) != 0)
            return TG_ETOO_LARGE;
    }
    if (usage != NULL && top.n_usage == 1 && top.usage.type == 'o') {
        usage->present = true;
        usage->prompt_tokens = u.prompt;
        usage->completion_tokens = u.completion;
        usage->cached_tokens = u.cached;
    }
    return 0;
}

/* Bytes [*start, *end) that remove the member whose key starts at key and whose value ends at
 * vend, with one of the commas around it, so the object stays valid. */
static void pt_member_span(const char *body, size_t len, const char *key, const char *vend,
                           const char **start, const char **end)
{
    const char *e = vend, *lim = body + len;
    while (e < lim && (*e == ' ' || *e == '\t' || *e == '\n' || *e == '\r'))
        e++;
    if (e < lim && *e == ',') {
        *start = key;
        *end = e + 1;
        return;
    }
    const char *b = key;
    while (b > body && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\n' || b[-1] == '\r'))
        b--;
    *start = b > body && b[-1] == ',' ? b - 1 : key;
    *end = vend;
}

static bool pt_array_empty(const pt_val_t *v)
{
    const char *p = v->start + 1;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return *p == ']';
}

/*
 * The stream counterpart of tg_openai_passthrough, for one SSE data payload: 0 when handled (out
 * holds the chunk the client must see, or *drop says there is none), 1 when oa_stream_event must
 * decide ("[DONE]", an error, a chunk to split or repair, anything unusual). The result equals
 * what oa_stream_event and the gateway's usage filter produce: model replaced, "usage":null
 * removed, the usage chunk hidden from a client that did not ask for it.
 */
int tg_openai_stream_passthrough(const char *model, const char *data, size_t len, bool client_usage,
                                 tg_buf_t *out, bool *drop, tg_usage_t *usage, tg_chunk_info_t *info)
{
    static const char chunk_obj[] = "\"chat.completion.chunk\"";
    tg_chunk_info_t ci = {0};
    pt_top_t top;
    memset(&top, 0, sizeof(top));
    pt_val_t root;
    bool unsure;
    *drop = false;
    if (data == NULL || model == NULL ||
        pt_document(data, data + len, &root, pt_top_member, &top, &unsure, &ci) != 0 || unsure ||
        root.type != 'o')
        return 1;
    if (top.error || top.escaped_key || top.n_model != 1 || top.model.type != 's' || top.model.esc ||
        top.n_object != 1 || (size_t)(top.object.end - top.object.start) != sizeof(chunk_obj) - 1 ||
        memcmp(top.object.start, chunk_obj, sizeof(chunk_obj) - 1) != 0 || top.n_choices != 1 ||
        top.choices.type != 'a' || top.n_usage > 1)
        return 1;
    bool has_usage = top.n_usage == 1 && top.usage.type == 'o';
    bool null_usage = top.n_usage == 1 && top.usage.is_null;
    if (top.n_usage == 1 && !has_usage && !null_usage)
        return 1;
    if (has_usage && !pt_array_empty(&top.choices))
        return 1; /* usage on a content chunk: oa_stream_event splits it */
    if (has_usage) {
        pt_usage_t u;
        pt_val_t v;
        memset(&u, 0, sizeof(u));
        if (pt_document(top.usage.start, top.usage.end, &v, pt_usage_member, &u, &unsure, NULL) != 0)
            return 1;
        if (u.have_details &&
            pt_document(u.details.start, u.details.end, &v, pt_cached_member, &u, &unsure, NULL) != 0)
            return 1;
        if (u.escaped_key)
            return 1;
        if (usage != NULL) {
            usage->present = true;
            usage->prompt_tokens = u.prompt;
            usage->completion_tokens = u.completion;
            usage->cached_tokens = u.cached;
        }
        if (!client_usage) {
            *drop = true; /* only usage, which this client did not ask for */
            return 0;
        }
    }
    char esc[512];
    int n = tg_json_escape(esc, sizeof(esc), model);
    if (n < 0)
        return 1;
    /* at most two edits, in document order: the model value and the removed "usage":null */
    const char *ms = top.model.start + 1, *me = top.model.end - 1;
    const char *us = NULL, *ue = NULL;
    if (null_usage)
        pt_member_span(data, len, top.usage_key, top.usage.end, &us, &ue);
    const char *end = data + len;
    int rc = 0;
    if (us != NULL && us < ms) {
        if (me > us && ms < ue)
            return 1; /* cannot overlap; be safe anyway */
        rc |= tg_buf_append(out, data, (size_t)(us - data));
        rc |= tg_buf_append(out, ue, (size_t)(ms - ue));
        rc |= tg_buf_append(out, esc, (size_t)n);
        rc |= tg_buf_append(out, me, (size_t)(end - me));
    } else {
        rc |= tg_buf_append(out, data, (size_t)(ms - data));
        rc |= tg_buf_append(out, esc, (size_t)n);
        if (us != NULL) {
            rc |= tg_buf_append(out, me, (size_t)(us - me));
            rc |= tg_buf_append(out, ue, (size_t)(end - ue));
        } else {
            rc |= tg_buf_append(out, me, (size_t)(end - me));
        }
    }
    if (rc == 0 && info != NULL) {
        ci.substantive |= has_usage;
        *info = ci;
    }
    return rc != 0 ? TG_ETOO_LARGE : 0;
}

/* ---- streams ---- */

struct tg_stream {
    tg_chunk_ctx_t ctx;
};

static tg_stream_t *oa_stream_create(const tg_resp_in_t *in)
{
    tg_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (tg_chunk_ctx_init(&s->ctx, in) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void oa_stream_destroy(tg_stream_t *s)
{
    if (s == NULL)
        return;
    tg_chunk_ctx_dispose(&s->ctx);
    free(s);
}

static int oa_stream_event(tg_stream_t *s, const tg_sse_event_t *ev, tg_chunk_cb emit, void *ud,
                           tg_usage_t *usage, tg_error_t *err)
{
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0)
        return 1;
    json_error_t jerr;
    json_t *chunk = json_loadb(ev->data, ev->data_len, 0, &jerr);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "stream event is not a JSON object");
    }
    int rc = body_error(chunk, err);
    if (rc != 0) {
        json_decref(chunk);
        return rc;
    }
    json_t *choices = json_object_get(chunk, "choices");
    json_t *u = json_object_get(chunk, "usage");
    if (!json_is_array(choices)) {
        /* a chunk is choices and/or usage; anything else is not OpenAI's stream format */
        if (!json_is_object(u) || json_object_set_new(chunk, "choices", json_array()) != 0) {
            json_decref(chunk);
            return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "stream chunk has no choices");
        }
        choices = json_object_get(chunk, "choices");
    }
    if (!json_is_string(json_object_get(chunk, "object")) ||
        strcmp(json_string_value(json_object_get(chunk, "object")), "chat.completion.chunk") != 0)
        json_object_set_new(chunk, "object", json_string("chat.completion.chunk"));
    if (json_is_object(u))
        read_usage(u, usage);
    if (json_object_set_new(chunk, "model", json_string(s->ctx.model)) != 0) {
        json_decref(chunk);
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    }
    if (json_is_object(u) && json_is_array(choices) && json_array_size(choices) > 0) {
        /* some hosts put usage on the last content chunk: split it so the usage chunk is
         * always the one with empty choices, which the gateway may hide */
        json_t *uchunk = json_copy(chunk);
        json_object_del(chunk, "usage");
        if (uchunk == NULL || json_object_set_new(uchunk, "choices", json_array()) != 0) {
            json_decref(uchunk);
            json_decref(chunk);
            return tg_error_set(err, TG_ENOMEM, "out of memory");
        }
        rc = tg_prov_emit(emit, ud, chunk);
        if (rc == 0)
            rc = tg_prov_emit(emit, ud, uchunk);
        else
            json_decref(uchunk);
        return rc == 0 ? 0 : tg_error_set(err, rc, "stream consumer stopped");
    }
    if (u != NULL && json_is_null(u))
        json_object_del(chunk, "usage"); /* include_usage adds "usage": null to every chunk */
    rc = tg_prov_emit(emit, ud, chunk);
    return rc == 0 ? 0 : tg_error_set(err, rc, "stream consumer stopped");
}

/* ---- errors ---- */

static void oa_classify(int status, const char *retry_after, const char *body, size_t len,
                        tg_classified_t *out)
{
    tg_prov_classified_init(out, status, retry_after);
    json_error_t jerr;
    json_t *root = body != NULL ? json_loadb(body, len, 0, &jerr) : NULL;
    json_t *e = json_object_get(root, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *type = json_string_value(json_object_get(e, "type"));
    json_t *jcode = json_object_get(e, "code");
    const char *param = json_string_value(json_object_get(e, "param"));
    if (json_is_string(e))
        msg = json_string_value(e);
    if (msg != NULL && status != 401 && status != 403) /* auth messages echo part of the key */
        tg_prov_copy_public(out->message, sizeof(out->message), msg);
    if (type != NULL)
        snprintf(out->type, sizeof(out->type), "%s", type);
    if (json_is_string(jcode))
        snprintf(out->code, sizeof(out->code), "%s", json_string_value(jcode));
    else if (json_is_integer(jcode))
        snprintf(out->code, sizeof(out->code), "%lld", (long long)json_integer_value(jcode));
    if (param != NULL)
        snprintf(out->param, sizeof(out->param), "%s", param);

    if (status == 404 && strcmp(out->code, "model_not_found") == 0)
        snprintf(out->reason, sizeof(out->reason), "model_not_found");
    if (status == 400 && (strcmp(out->code, "context_length_exceeded") == 0 ||
                          (msg != NULL && strstr(msg, "maximum context length") != NULL))) {
        out->cls = TG_OUTCOME_CONTEXT_LENGTH;
        snprintf(out->reason, sizeof(out->reason), "context_length");
    }
    if (status == 401 || status == 403)
        tg_prov_credentials_rejected(out);
    json_decref(root);
}

static int oa_build_probe(const tg_provider_cfg_t *p, const char *api_key, tg_upstream_req_t *out,
                          tg_error_t *err)
{
    int rc = tg_prov_set_url(out, p->base_url, "/models", NULL, NULL);
    if (rc == 0 && api_key != NULL && api_key[0] != '\0')
        rc = add_bearer(out, api_key);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the probe");
    out->method = "GET";
    return 0;
}

const tg_adapter_t tg_adapter_openai = {
    .name = "openai",
    .kind = TG_KIND_OPENAI,
    .build_request = oa_build_request,
    .parse_response = oa_parse_response,
    .stream_create = oa_stream_create,
    .stream_event = oa_stream_event,
    .stream_destroy = oa_stream_destroy,
    .classify = oa_classify,
    .build_probe = oa_build_probe,
};

/* ---- request fast path ----
 *
 * The request was parsed and validated into a tree already (that is where every 400 comes from),
 * but serialising the tree again for a pass-through upstream cost as much as parsing it. The
 * client's bytes are forwarded instead, member by member, with tollgate's own members rewritten:
 * "model" (the upstream id), "models" (tollgate's chain, never sent), "stream" and
 * "stream_options" (include_usage forced on for streams, both removed otherwise), and "store" (false
 * for a zero-retention call, whatever the client sent). Anything the
 * scanner is unsure about, or an escaped top-level key, declines to the tree path.
 */

#define RQ_MODEL_MAX 256 /* longer upstream ids take the tree path */

typedef struct rq_scan {
    tg_buf_t *out;
    pt_val_t stream_options;
    const char *skip; /* stream_options scan: the member that is ours */
    bool drop_store;  /* zero retention: the client's "store" is replaced by false */
    bool have_stream_options, escaped_key, first, failed;
} rq_scan_t;

static void rq_copy_member(rq_scan_t *r, const char *key, const pt_val_t *v)
{
    /* key points after the opening quote: key - 1 .. v->end is `"key": value` as the client sent it */
    if (!r->first && tg_buf_append(r->out, ",", 1) != 0)
        r->failed = true;
    if (tg_buf_append(r->out, key - 1, (size_t)(v->end - (key - 1))) != 0)
        r->failed = true;
    r->first = false;
}

static void rq_top_member(void *ud, const char *key, size_t klen, bool kesc, const pt_val_t *v)
{
    rq_scan_t *r = ud;
    if (kesc) {
        r->escaped_key = true; /* "mod\u0065l" is "model" to jansson */
        return;
    }
    if (pt_key_is(key, klen, "model") || pt_key_is(key, klen, "models") || pt_key_is(key, klen, "stream"))
        return;
    if (r->drop_store && pt_key_is(key, klen, "store"))
        return;
    if (pt_key_is(key, klen, "stream_options")) {
        r->stream_options = *v;
        r->have_stream_options = true;
        return;
    }
    rq_copy_member(r, key, v);
}

static void rq_so_member(void *ud, const char *key, size_t klen, bool kesc, const pt_val_t *v)
{
    rq_scan_t *r = ud;
    if (kesc)
        r->escaped_key = true;
    else if (!pt_key_is(key, klen, r->skip))
        rq_copy_member(r, key, v);
}

int tg_openai_request_passthrough(const tg_build_in_t *in, char **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    if (in->raw == NULL || in->upstream_model == NULL || strlen(in->upstream_model) > RQ_MODEL_MAX)
        return 1;
    char model[6 * RQ_MODEL_MAX + 1];
    int mlen = tg_json_escape(model, sizeof(model), in->upstream_model);
    if (mlen < 0)
        return 1;
    /* What is copied never exceeds the client's bytes; add the escaped model id and the few
     * members written here, and reserve it all at once. */
    size_t cap = in->raw_len + (size_t)mlen + 112;
    tg_buf_t out;
    tg_buf_init(&out, cap);
    if (tg_buf_reserve(&out, cap) != 0)
        return TG_ENOMEM;
    rq_scan_t r = {.out = &out, .first = true, .drop_store = in->zero_retention};
    pt_val_t root;
    bool unsure;
    int rc = tg_buf_append(&out, "{", 1);
    if (pt_document(in->raw, in->raw + in->raw_len, &root, rq_top_member, &r, &unsure, NULL) != 0 || unsure ||
        root.type != 'o' || r.escaped_key)
        goto decline;
    rc |= tg_buf_append(&out, r.first ? "\"model\":\"" : ",\"model\":\"", r.first ? 9 : 10);
    rc |= tg_buf_append(&out, model, (size_t)mlen);
    rc |= tg_buf_append(&out, "\"", 1);
    if (in->zero_retention)
        rc |= tg_buf_append(&out, ",\"store\":false", 14);
    if (in->stream) {
        rc |= tg_buf_append(&out, ",\"stream\":true,\"stream_options\":{", 33);
        if (r.have_stream_options && r.stream_options.type == 'o') {
            /* the client's other stream options go along; include_usage is tollgate's */
            rq_scan_t so = {.out = &out, .first = true, .skip = "include_usage"};
            pt_val_t v;
            if (pt_document(r.stream_options.start, r.stream_options.end, &v, rq_so_member, &so, &unsure,
                            NULL) != 0 ||
                unsure || so.escaped_key)
                goto decline;
            if (so.failed || (!so.first && tg_buf_append(&out, ",", 1) != 0))
                rc = TG_ETOO_LARGE;
        }
        rc |= tg_buf_append(&out, "\"include_usage\":true}", 21);
    }
    rc |= tg_buf_append(&out, "}", 1);
    if (rc != 0 || r.failed)
        goto decline; /* cannot happen by the sizing above; the tree path is always right */
    *body = tg_buf_take(&out, len);
    return 0;
decline:
    tg_buf_dispose(&out);
    return 1;
}

/*
 * provider.h - the adapter vtable: one implementation per provider kind.
 *
 * The canonical format is OpenAI chat completions. An adapter builds the
 * upstream HTTP request from a canonical request, translates a whole answer
 * or a stream (event by event) back to canonical chunks, extracts usage, and
 * classifies an upstream error. Adapters are pure: no I/O, no clock, no
 * globals; every function is safe on any thread. Adding a provider is one
 * file plus fixtures.
 *
 * Parameter rule (the same for every provider): a parameter the provider
 * cannot honour is dropped and named in tg_upstream_req_t.dropped, which the
 * gateway sends as the x-tollgate-dropped-params response header.
 */
#ifndef TG_PROVIDER_H
#define TG_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "outcome.h"
#include "sse.h"

#define TG_UPSTREAM_MAX_HEADERS 8

/** Token usage as the provider reported it. */
typedef struct tg_usage {
    bool present;
    int64_t prompt_tokens;     /* input, including cached */
    int64_t completion_tokens; /* output */
    int64_t cached_tokens;     /* part of prompt_tokens served from cache */
} tg_usage_t;

/** An HTTP request to send upstream. Owns every pointer; dispose wipes the headers (they hold keys). */
typedef struct tg_upstream_req {
    char *url;
    const char *method;                     /* static string: "POST" or "GET" */
    char *headers[TG_UPSTREAM_MAX_HEADERS]; /* "Name: value", malloc'd */
    size_t n_headers;
    char *body; /* NULL for GET */
    size_t body_len;
    char dropped[256]; /* comma-separated canonical params dropped for this provider ("" = none) */
} tg_upstream_req_t;

void tg_upstream_req_dispose(tg_upstream_req_t *r);
/** Appends a header line (copied). Returns 0 or TG_ENOMEM / TG_ETOO_LARGE. */
TG_MUST_CHECK int tg_upstream_req_add_header(tg_upstream_req_t *r, const char *name, const char *value);

/** What the adapter needs to build a request. */
typedef struct tg_build_in {
    const tg_provider_cfg_t *provider;
    const char *upstream_model;
    const char *api_key; /* credential for this attempt (config or BYOK); may be NULL */
    bool stream;
    /* a zero-retention call (retention.h): ask the provider not to store it where the kind has a
     * way to (OpenAI: "store": false, whatever the client sent); Anthropic and Gemini have no
     * per-request switch, their retention is the account's agreement (providers.<name>.zero_retention) */
    bool zero_retention;
    /* The client's request body, the very bytes the canonical request was parsed and validated
     * from (NULL when there are none): a pass-through adapter may forward them with its own
     * members rewritten instead of serialising the canonical tree again. */
    const char *raw;
    size_t raw_len;
} tg_build_in_t;

/** What the adapter needs to shape an answer. */
typedef struct tg_resp_in {
    const char *model;      /* model name reported to the client */
    const char *request_id; /* used to build ids where the provider has none */
    int64_t created;        /* unix seconds */
} tg_resp_in_t;

/* The outcome classes and tg_classified_t (what `classify` fills) live in outcome.h. */

/** Stream translation state, one per upstream stream; defined by each adapter. */
typedef struct tg_stream tg_stream_t;

/** Receives one canonical chat.completion.chunk (borrowed: valid during the call). Nonzero stops. */
typedef int (*tg_chunk_cb)(void *ud, json_t *chunk);

typedef struct tg_adapter {
    const char *name; /* "openai", "anthropic", "gemini" */
    tg_provider_kind_t kind;

    /** Builds the upstream request from a validated canonical request. */
    int (*build_request)(const tg_build_in_t *in, const json_t *canon, tg_upstream_req_t *out,
                         tg_error_t *err);

    /** Translates a whole 2xx answer into a canonical chat.completion (*out: new reference). */
    int (*parse_response)(const tg_resp_in_t *in, const char *body, size_t len, json_t **out,
                          tg_usage_t *usage, tg_error_t *err);

    tg_stream_t *(*stream_create)(const tg_resp_in_t *in);
    /**
     * Feeds one upstream SSE event. Calls emit for every canonical chunk it yields; the last
     * chunk of a stream carries "usage" with empty "choices". Returns 0 to go on, 1 when the
     * provider signalled the end of the stream, or a negative TG_E* (err filled; an in-stream
     * error event from the provider gives TG_EUPSTREAM_FAILED with err->detail = its message).
     */
    int (*stream_event)(tg_stream_t *s, const tg_sse_event_t *ev, tg_chunk_cb emit, void *ud,
                        tg_usage_t *usage, tg_error_t *err);
    void (*stream_destroy)(tg_stream_t *s);

    /** Classifies a non-2xx answer from its status, Retry-After header (may be NULL) and body. */
    void (*classify)(int status, const char *retry_after, const char *body, size_t len, tg_classified_t *out);

    /** Builds the health probe: an unbilled request (the models list). */
    int (*build_probe)(const tg_provider_cfg_t *p, const char *api_key, tg_upstream_req_t *out,
                       tg_error_t *err);
} tg_adapter_t;

extern const tg_adapter_t tg_adapter_openai;
extern const tg_adapter_t tg_adapter_anthropic;
extern const tg_adapter_t tg_adapter_gemini;

const tg_adapter_t *tg_adapter_for(tg_provider_kind_t kind);

/**
 * ad->build_request under a memory budget (jsonmem.h): the jansson bytes of the translation may
 * not exceed TG_JSONMEM_BUILD_FACTOR times the parse budget of an in->raw_len body. Past it,
 * returns TG_EBODY_TOO_COMPLEX with *out disposed.
 */
int tg_prov_build_bounded(const tg_adapter_t *ad, const tg_build_in_t *in, const json_t *canon,
                          unsigned factor, tg_upstream_req_t *out, tg_error_t *err);

/** Parses a Retry-After value (delta-seconds, or an HTTP date relative to now_unix); -1 if absent/invalid. */
int64_t tg_parse_retry_after_ms(const char *value, int64_t now_unix);

/**
 * Validates a client's canonical request (types of every known field, messages shape).
 * Returns 0 or TG_EINVALID_REQUEST with err->detail a public message naming the field
 * ("messages[1].role must be a string"); `param` receives the field path.
 */
int tg_canon_validate(const json_t *req, char *param, size_t param_len, tg_error_t *err);

/* ---- helpers shared by the adapters (common.c): for providers/ and their tests only ---- */

/** Sets out->url to the concatenation of the non-NULL parts. */
TG_MUST_CHECK int tg_prov_set_url(tg_upstream_req_t *out, const char *base, const char *p1, const char *p2,
                                  const char *p3);
/** Serialises body (borrowed) compactly into out->body. */
TG_MUST_CHECK int tg_prov_set_body(tg_upstream_req_t *out, const json_t *body, tg_error_t *err);
/** Appends a canonical parameter name to out->dropped (skipped, never truncated, if it does not fit). */
void tg_prov_drop(tg_upstream_req_t *out, const char *param);

/** Identity of the canonical chunks of one stream (copied out of tg_resp_in_t at stream_create). */
typedef struct tg_chunk_ctx {
    char *id;    /* "chatcmpl-<request_id>" */
    char *model; /* reported model */
    int64_t created;
} tg_chunk_ctx_t;

TG_MUST_CHECK int tg_chunk_ctx_init(tg_chunk_ctx_t *c, const tg_resp_in_t *in);
void tg_chunk_ctx_dispose(tg_chunk_ctx_t *c);
/** A chat.completion.chunk with one choice; `delta` is stolen; finish may be NULL. */
json_t *tg_prov_chunk_new(const tg_chunk_ctx_t *c, json_t *delta, const char *finish);
/** Emits a chunk (stolen); returns 0, TG_ENOMEM, or TG_EINTERNAL when emit asked to stop. */
int tg_prov_emit(tg_chunk_cb emit, void *ud, json_t *chunk);
/** Emits the final usage chunk (choices []). */
int tg_prov_emit_usage(const tg_chunk_ctx_t *c, const tg_usage_t *u, tg_chunk_cb emit, void *ud);
/** OpenAI "usage" object for u (new reference). */
json_t *tg_prov_usage_json(const tg_usage_t *u);
/** Reads a JSON integer (or integral real) as int64; 0 when absent or not a number. */
int64_t tg_prov_int(const json_t *obj, const char *key);
/** "chatcmpl-<request_id>" into dst. */
void tg_prov_completion_id(const tg_resp_in_t *in, char *dst, size_t n);

/** Starts a classification: status, Retry-After, and defaults for every field. */
void tg_prov_classified_init(tg_classified_t *out, int status, const char *retry_after);
/** Classification from the status alone (used when the body says nothing more specific). */
void tg_prov_classify_status(tg_classified_t *out);
/** The message for a refused credential (401/403, or Gemini's 400 for a bad key). The provider's
 *  own text is not kept: it may quote the key. */
void tg_prov_credentials_rejected(tg_classified_t *out);
/** Copies src into dst (truncating), masking anything that looks like a credential. */
void tg_prov_copy_public(char *dst, size_t n, const char *src);

/** Splits "data:<mime>;base64,<payload>". Returns 0 and borrowed spans, or -1 if it is not one. */
int tg_prov_data_url(const char *url, const char **mime, size_t *mime_len, const char **payload);
/** Guesses an image MIME type from a URL's extension ("image/jpeg" by default). */
const char *tg_prov_mime_from_url(const char *url);
/**
 * Appends the text of an OpenAI message content (string, or the "text" of every text part,
 * separated by sep) to out. Non-text parts are skipped.
 */
TG_MUST_CHECK int tg_prov_content_text(const json_t *content, const char *sep, tg_buf_t *out);

/** Appends a turn {"role": role, items_key: items} to `turns` (a JSON array), merging it into the
 *  previous turn when the role repeats (Anthropic and Gemini want alternating roles). Takes over
 *  `items`; an empty `items` adds nothing. Returns 0 or TG_ENOMEM. */
TG_MUST_CHECK int tg_prov_push_turn(json_t *turns, const char *role, const char *items_key, json_t *items);
/** A canonical chat.completion (new reference, NULL when out of memory) from an answer's text,
 *  tool calls (borrowed; may be NULL or empty), finish reason (NULL: "stop") and usage. */
json_t *tg_prov_completion_new(const tg_resp_in_t *in, const tg_buf_t *text, json_t *calls,
                               const char *finish, const tg_usage_t *u);

/* ---- the walk over canonical messages (Anthropic and Gemini request builders) ----
 * Both providers take the system/developer text apart from the turns, want user and assistant turns
 * to alternate, and hold a turn's content as a list of items (Messages "content" blocks, Gemini
 * "parts"). The walk is common.c's; a walker says only how the provider writes each item. */

typedef struct tg_msg_walker tg_msg_walker_t;
struct tg_msg_walker {
    const char *turns_key;      /* body member holding the turns: "messages", "contents" */
    const char *items_key;      /* turn member holding the items: "content", "parts" */
    const char *assistant_role; /* the provider's role for assistant turns: "assistant", "model" */
    /** Sets the body member for the joined system/developer text (len > 0). 0 or TG_ENOMEM. */
    int (*set_system)(json_t *body, const char *text, size_t len);
    /** The item for a non-empty text (a borrowed JSON string); NULL when out of memory. */
    json_t *(*text)(const json_t *text);
    /** The item for an image URL; NULL when the provider cannot take the URL (err set, naming path). */
    json_t *(*image)(const char *url, const char *path, tg_error_t *err);
    /** The item for an assistant tool call (borrowed) whose arguments are `args` (an object, stolen);
     *  NULL when out of memory. */
    json_t *(*tool_call)(const json_t *call, json_t *args);
    /** The item for the tool message msgs[mi] (*item: new reference). 0, or a TG_E* code with err set
     *  when it is TG_EINVALID_REQUEST. It goes in a user turn. */
    int (*tool_result)(const tg_msg_walker_t *w, const json_t *msgs, size_t mi, json_t **item,
                       tg_error_t *err);
};

/** Translates the canonical `messages` into body[w->turns_key] (turns merged as tg_prov_push_turn
 *  does) and, when there is any, the system member. Returns 0, TG_EINVALID_REQUEST (err names the
 *  field), or TG_ENOMEM / TG_ETOO_LARGE (err untouched). body keeps what was set before a failure. */
TG_MUST_CHECK int tg_prov_walk_messages(const json_t *messages, const tg_msg_walker_t *w, json_t *body,
                                        tg_error_t *err);
/** Appends to `items` the items of one message content (string or parts) of messages[mi]. Returns
 *  0, TG_EINVALID_REQUEST (err set by w->image) or TG_ENOMEM. */
TG_MUST_CHECK int tg_prov_walk_content(const tg_msg_walker_t *w, const json_t *content, size_t mi,
                                       json_t *items, tg_error_t *err);

/* ---- OpenAI fast paths (providers/openai.c) ----
 * The pass-through provider's answers usually need nothing but the "model" field replaced, so the
 * gateway first offers them to these single-pass scanners and falls back to the adapter's
 * parse_response / stream_event (which build jansson trees) whenever they decline. Their output
 * equals the slow path's (tests/unit/test_openai_passthrough.c, tests/fuzz/fuzz_passthrough.c). */

/** Non-stream 2xx body: 0 served (out holds the client's body, unless *same says the provider's
 *  bytes already are it), 1 declined (use parse_response), < 0 a TG_E* code. usage is filled on 0. */
int tg_openai_passthrough(const tg_resp_in_t *in, const char *body, size_t len, tg_buf_t *out, bool *same,
                          tg_usage_t *usage);
/** What one stream chunk carries for the client, noted by the pass-through scan. */
typedef struct tg_chunk_info {
    uint64_t text_bytes; /* bytes of its "content", "refusal" and "arguments" strings, escapes included */
    bool substantive;    /* more than an opening: text, a tool call, a finish reason or usage */
} tg_chunk_info_t;

/** One SSE data payload: 0 handled (out holds the chunk the client must see, or *drop says there is
 *  none), 1 declined (use stream_event), < 0 a TG_E* code. client_usage: the client asked for usage.
 *  info (may be NULL) is filled on 0 when the chunk is not dropped. */
int tg_openai_stream_passthrough(const char *model, const char *data, size_t len, bool client_usage,
                                 tg_buf_t *out, bool *drop, tg_usage_t *usage, tg_chunk_info_t *info);
/** The upstream body of a pass-through request from in->raw: the client's members as sent, with
 *  "model" set to in->upstream_model, "models" removed, and "stream"/"stream_options" as
 *  build_request sets them. 0 served (*body is malloc'd, *len its length), 1 declined (in->raw is
 *  NULL or holds something the scanner is not sure about: serialise the tree), < 0 a TG_E* code.
 *  Equal, once parsed, to what the tree path sends (tests/unit/test_openai_passthrough.c). */
int tg_openai_request_passthrough(const tg_build_in_t *in, char **body, size_t *len);

#endif

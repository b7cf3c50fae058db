/*
 * sim.h - tollgate-sim's shared types: the fault record, the canonical view of a chat request, the
 * deterministic answer, and the wire-format vtable each provider file fills in.
 *
 * Reading order: sim.h, sim_main.c (server, routing, request lifecycle), sim_faults.c (fault table,
 * stats), sim_auth.c (accepted keys, counted per key), sim_text.c (answer text, usage, JSON writer),
 * sim_tools.c (tool arguments from schemas), then one file per wire format: sim_openai.c, sim_anthropic.c,
 * sim_gemini.c.
 */
#ifndef TG_SIM_H
#define TG_SIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"

/* ---- faults (sim_faults.c) ---------------------------------------------------------------- */

#define TG_SIM_MODEL_MAX      128
#define TG_SIM_DEFAULT_CHUNKS 8
#define TG_SIM_MAX_CHUNKS     100000
#define TG_SIM_MAX_CHUNK_B    (1 << 20)
#define TG_SIM_MAX_DELAY_MS   600000

/* One fault, per model (POST /_sim/faults) or per request (x-sim-fault). All zero/false/-1 = none. */
typedef struct tg_sim_fault {
    int status;             /* 0: answer normally; else answer with this status and the provider's body */
    int retry_after_s;      /* -1: no Retry-After unless the status is 429 (then 1) */
    int fail_first;         /* per-model only: apply to the next N requests, then drop; 0 = until cleared */
    int latency_ms;         /* delays the whole answer (the headers of a stream) */
    int ttft_ms;            /* delays the first stream event */
    int chunk_delay_ms;     /* delays each following content event */
    int drop_after_chunks;  /* -1: never; N: abort the connection after N content events */
    int error_after_chunks; /* -1: never; N: after N content events, the provider's in-stream error
                             * event, then a clean end of the stream */
    bool malformed;         /* invalid JSON body, or one broken SSE data line */
    bool hang;              /* never answer (until the client goes away) */
    bool context_length;    /* "error":"context_length": the provider's context-length error, 400 */
    bool echo_error;        /* the error's message (status fault, in-stream error) quotes the start of
                             * the prompt, as some providers' messages do */
    int stream_chunks;      /* content chunks of the answer (default 8) */
    int chunk_bytes;        /* pad every content chunk's text to this many bytes (0: no padding) */
    int cached_tokens;      /* -1: the default rule; else the cached prompt tokens to report */
} tg_sim_fault_t;

void tg_sim_fault_defaults(tg_sim_fault_t *f);
/* Parses a fault object; *model gets the "model" value (required unless model is NULL). On error
 * writes a message into err and returns TG_EINVALID_REQUEST. */
int tg_sim_fault_from_json(json_t *obj, tg_sim_fault_t *f, char *model, size_t model_cap, char *err,
                           size_t err_cap);
/* Parses "key=value,key=value" (the x-sim-fault header). */
int tg_sim_fault_from_header(const char *s, size_t len, tg_sim_fault_t *f, char *err, size_t err_cap);
/* True when the fault changes anything (so an all-default fault costs nothing). */
bool tg_sim_fault_active(const tg_sim_fault_t *f);

/* The process-wide fault table and stats; thread-safe (one mutex each, owned by sim_faults.c). */
int tg_sim_faults_set(const char *model, const tg_sim_fault_t *f);
void tg_sim_faults_clear(void);
/* Copies the model's fault into *f and consumes one fail_first use; false if the model has none. */
bool tg_sim_faults_take(const char *model, tg_sim_fault_t *f);
json_t *tg_sim_faults_json(void);
void tg_sim_stats_record(const char *model, int status);
/* An OpenAI-kind request that asked the provider not to store it ("store": false). */
void tg_sim_stats_store_false(const char *model);
json_t *tg_sim_stats_json(void);
void tg_sim_stats_reset(void);

/* ---- the keys it accepts (sim_auth.c) ------------------------------------------------------ */

/* Adds an accepted key (--require-key, repeatable) or every line of a file (--keys-file); 0 or -1. */
int tg_sim_auth_add(const char *key, size_t len);
int tg_sim_auth_load(const char *path);
/* Whether any key is listed (else every request passes). */
bool tg_sim_auth_required(void);
/* The position of the key p[0..n) in the list, counted as a chat or a models request, or -1
 * (counted as refused). */
int tg_sim_auth_match(const char *p, size_t n, bool models);
/* A request that carried no key at all. */
void tg_sim_auth_refused(void);
/* {"accepted":{"0":{"chat":n,"models":m},...},"refused":n}: counts by position, never a key. */
json_t *tg_sim_auth_stats_json(void);
void tg_sim_auth_stats_reset(void);

/* ---- JSON writing helpers (sim_text.c) ----------------------------------------------------- */

/* A writer over a bounded buffer that remembers the first error, so a renderer can append many
 * pieces and check once. */
typedef struct tg_sim_w {
    tg_buf_t *b;
    int rc;
} tg_sim_w_t;

void tg_sim_w_raw(tg_sim_w_t *w, const char *s, size_t n);
void tg_sim_w_s(tg_sim_w_t *w, const char *s);
void tg_sim_w_f(tg_sim_w_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes) as a quoted JSON string. */
void tg_sim_w_str(tg_sim_w_t *w, const char *s, size_t n);
/* Appends a JSON value (compact, key order kept). */
void tg_sim_w_json(tg_sim_w_t *w, const json_t *v);

/* ---- the canonical request and the answer (sim_text.c, sim_tools.c) ------------------------ */

#define TG_SIM_ECHO_MAX   48
#define TG_SIM_RESULT_MAX 1024

typedef struct tg_sim_req {
    char model[TG_SIM_MODEL_MAX];
    bool stream;
    bool include_usage;    /* OpenAI stream_options.include_usage */
    bool store_false;      /* OpenAI "store": false */
    bool json_mode;        /* OpenAI response_format json, Gemini responseMimeType application/json */
    long max_tokens;       /* -1: no limit */
    size_t prompt_bytes;   /* bytes of every text the prompt carries */
    tg_buf_t echo;         /* prefix of the last user text */
    bool has_tool_result;  /* the last message is a tool result */
    tg_buf_t tool_result;  /* its content (capped) */
    const char *tool_name; /* tool to call (borrowed from the request JSON), or NULL */
    json_t *tool_schema;   /* its parameters schema (borrowed), may be NULL */
} tg_sim_req_t;

void tg_sim_req_init(tg_sim_req_t *rq);
void tg_sim_req_dispose(tg_sim_req_t *rq);
/* Counts text bytes and keeps the echo / tool result prefix. */
void tg_sim_req_add_text(tg_sim_req_t *rq, const char *s, size_t n);
void tg_sim_req_set_echo(tg_sim_req_t *rq, const char *s, size_t n);
void tg_sim_req_set_tool_result(tg_sim_req_t *rq, const char *s, size_t n);

typedef enum { TG_SIM_FINISH_STOP, TG_SIM_FINISH_LENGTH, TG_SIM_FINISH_TOOL } tg_sim_finish_t;

typedef struct tg_sim_answer {
    tg_buf_t text;   /* the base text, before chunking and padding */
    size_t n_pieces; /* content chunks of a stream (and the pieces the body is joined from) */
    size_t pad_to;   /* chunk_bytes */
    tg_sim_finish_t finish;
    /* tool call */
    bool tool_call;
    const char *tool_name;
    char *tool_args; /* compact JSON (ASCII), malloc'd */
    size_t tool_args_len;
    char call_id[40];
    /* usage */
    long prompt_tokens, completion_tokens, cached_tokens;
    char resp_id[40];
    long long created; /* unix seconds */
} tg_sim_answer_t;

/* Builds the deterministic answer for a request under a fault (stream_chunks, chunk_bytes,
 * cached_tokens). Pure: the same request and fault always give the same answer. */
int tg_sim_answer_build(tg_sim_answer_t *a, const tg_sim_req_t *rq, const tg_sim_fault_t *f,
                        const char *id_prefix, const char *call_prefix);
void tg_sim_answer_dispose(tg_sim_answer_t *a);
/* Appends the whole answer text (every piece, padded) as one JSON string. */
void tg_sim_w_answer_text(tg_sim_w_t *w, const tg_sim_answer_t *a);
/* Appends content piece i (padded) as a JSON string. */
void tg_sim_w_piece(tg_sim_w_t *w, const tg_sim_answer_t *a, size_t i);
/* The tool arguments are streamed in this many pieces (at least 2). */
size_t tg_sim_answer_args_pieces(const tg_sim_answer_t *a);
/* Appends argument piece i as a JSON string. */
void tg_sim_w_args_piece(tg_sim_w_t *w, const tg_sim_answer_t *a, size_t i);
uint64_t tg_sim_hash(const void *p, size_t n, uint64_t h);

/* sim_tools.c: a deterministic argument value for a JSON schema. Returns a new reference. */
json_t *tg_sim_args_from_schema(const json_t *schema);

/* ---- wire formats ----------------------------------------------------------------------- */

/* A protocol-level error found while parsing a request (answered with the provider's body). */
typedef struct tg_sim_perr {
    int status;
    char msg[200];
    const char *param; /* OpenAI "param", may be NULL */
} tg_sim_perr_t;

int tg_sim_perr(tg_sim_perr_t *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef enum { TG_SIM_EV_OTHER = 0, TG_SIM_EV_CONTENT = 1 } tg_sim_ev_kind_t;

typedef struct tg_sim_wire {
    const char *name;        /* "openai", also the stats key prefix of the models endpoint */
    const char *id_prefix;   /* response id prefix: "chatcmpl-", "msg_", "" */
    const char *call_prefix; /* tool call id prefix: "call_", "toolu_", "" */
    /* Fills rq from the request body (model may already be set from the path). */
    int (*parse)(json_t *body, tg_sim_req_t *rq, tg_sim_perr_t *e);
    /* Checks the API key headers; returns true when it matches. */
    const char *auth_header; /* lower-case header carrying the key */
    bool auth_bearer;        /* "Bearer " prefix */
    /* Error body for a status (context_length: the provider's context-length error). */
    /* msg NULL: the provider's usual message for that status. retry_after_s < 0: none. */
    void (*error_body)(tg_sim_w_t *w, int status, bool context_length, const char *msg, const char *param,
                       const char *model, int retry_after_s);
    void (*render)(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a);
    /* Appends stream event idx (with its SSE framing); returns false after the last event. */
    bool (*stream_event)(tg_sim_w_t *w, const tg_sim_req_t *rq, const tg_sim_answer_t *a, size_t idx,
                         tg_sim_ev_kind_t *kind);
    void (*models)(tg_sim_w_t *w);
    /* The provider's own error event inside a stream (with its SSE framing): an overload; msg NULL:
     * the provider's usual words. */
    void (*stream_error)(tg_sim_w_t *w, const char *msg);
} tg_sim_wire_t;

extern const tg_sim_wire_t tg_sim_openai;
extern const tg_sim_wire_t tg_sim_anthropic;
extern const tg_sim_wire_t tg_sim_gemini;

/* Lower-cased JSON schema "type" helpers shared by the wires. */
bool tg_sim_json_is_str(const json_t *v, const char *s);

#endif

/*
 * config.h - the validated, immutable configuration snapshot.
 *
 * One JSON file is parsed and validated whole at start (every error is
 * reported, each with its key path); the process refuses to start on any
 * error. SIGHUP builds a new snapshot and swaps the global pointer; requests
 * in flight keep the snapshot they started with through a reference.
 * Secrets (provider keys, the API-key pepper) come from the environment or
 * files named in the config and are never written back out or logged.
 *
 * File shape (see deploy/tollgate.example.json and gateway/README.md):
 *   listen.data / listen.admin   "host:port"
 *   workers                      0 = one per core
 *   database.url | database.url_env, pool_size, job_timeout_ms, max_queue
 *                                (the host: a socket directory, a numeric address or hostaddr)
 *   secrets.key_pepper_env | secrets.key_pepper_file   (>= 32 bytes, hex or raw)
 *   secrets.master_keys          [{id, file}]: BYOK master keys, the first seals (keyring.h)
 *   limits.{max_body_bytes, max_upstream_body_bytes, max_sse_event_bytes, stream_buffer_bytes,
 *           body_memory_factor, rate_window_ms}
 *   timeouts.{connect_ms, first_byte_ms, idle_ms, total_ms}        defaults for providers
 *   timeouts.request_first_byte_ms   the whole request's first-byte budget (top level only)
 *   shutdown_grace_ms, retry_wait_cap_ms, key_cache_ttl_ms
 *   providers.<name>: kind, base_url, api_key_env | api_key_file, timeouts, breaker, health,
 *                     latency_threshold_ms, anthropic_version, zero_retention
 *   retention.{stored_requests, stored_requests_days, max_record_bytes, queue_bytes, job_interval_ms,
 *              allow_core_dumps}
 *   models.<name>: provider, upstream, context_window, max_output_tokens
 *   chains.<name>: targets [model names], context_fallback (model name), request_first_byte_ms
 *   billing.{enabled, trial_credits, lease_credits, lease_ttl_ms, journal_path, journal_fsync, commit_ms,
 *            queue_max}
 *                                the credit ledger (billing/README.md, gateway/src/ledger.h)
 *   idempotency.{ttl_ms, running_lease_ms, max_answer_bytes, purge_interval_ms}   Idempotency-Key
 *   admin_auth.{issuer, audience, hs256_secret_file, es256_public_key_file, skew_s, threads,
 *               queue, job_timeout_ms}   JWT bearer tokens of the admin API (admin/README.md)
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum { TG_KIND_OPENAI = 0, TG_KIND_ANTHROPIC = 1, TG_KIND_GEMINI = 2 } tg_provider_kind_t;

const char *tg_provider_kind_name(tg_provider_kind_t k);

typedef struct tg_timeouts {
    uint32_t connect_ms;    /* TCP/TLS connect */
    uint32_t first_byte_ms; /* request sent -> first response body byte (TTFT for streams) */
    uint32_t idle_ms;       /* longest gap between two stream chunks */
    uint32_t total_ms;      /* whole attempt, including the whole stream */
} tg_timeouts_t;

typedef struct tg_breaker_opts {
    uint32_t failure_threshold; /* consecutive counted failures that open it (3) */
    uint32_t open_ms;           /* how long it stays open before one half-open probe (30000) */
    uint32_t half_open_probes;  /* probes let through while half-open (1) */
    uint32_t probe_timeout_ms;  /* a half-open probe's first-byte timeout (5000): a hanging probe
                                   re-opens the breaker after this, not after a full first_byte_ms */
} tg_breaker_opts_t;

typedef struct tg_health_opts {
    bool enabled;
    uint32_t interval_ms; /* probe period, jittered +-10% */
    uint32_t timeout_ms;
} tg_health_opts_t;

typedef struct tg_provider_cfg {
    char *name;
    tg_provider_kind_t kind;
    char *base_url;          /* e.g. https://api.openai.com/v1 ; no trailing slash */
    char *api_key;           /* secret: may be NULL (no auth); never logged */
    char *anthropic_version; /* anthropic only; default "2023-06-01" */
    tg_timeouts_t timeouts;
    tg_breaker_opts_t breaker;
    tg_health_opts_t health;
    uint32_t latency_threshold_ms; /* 0 = no latency-spike detection */
    /* the provider keeps nothing of a request (a contract with it): zero-retention calls may use it
     * on the platform's key (retention.h) */
    bool zero_retention;
    size_t index; /* position in cfg->providers */
} tg_provider_cfg_t;

#define TG_MODEL_MAX_OUTPUT_DEFAULT 4096u
#define TG_RATE_WINDOW_MS_DEFAULT   60000u

typedef struct tg_model_cfg {
    char *name;     /* what clients send as "model" */
    char *upstream; /* the provider's model id */
    const tg_provider_cfg_t *provider;
    uint32_t context_window; /* tokens; 0 = unknown */
    /* the most output tokens one answer may have (max_output_tokens, TG_MODEL_MAX_OUTPUT_DEFAULT):
     * a request's output when it names no max_tokens, and the cap of one that does (estimate.h) */
    uint32_t max_output_tokens;
    char *target_key; /* "<provider>/<upstream>": names the breaker of this target */
    size_t index;
} tg_model_cfg_t;

typedef struct tg_chain_cfg {
    char *name;
    const tg_model_cfg_t **targets;
    size_t n_targets;
    const tg_model_cfg_t *context_fallback; /* NULL: none */
    uint32_t request_first_byte_ms;         /* this chain's request budget; 0: the top-level one */
} tg_chain_cfg_t;

typedef struct tg_config {
    _Atomic long refcnt;
    char *path;

    char *data_host;
    uint16_t data_port;
    char *admin_host;
    uint16_t admin_port;
    uint32_t workers; /* resolved: never 0 after load */

    char *database_url; /* secret-bearing: never logged; needs no host name lookup (pgpool.h) */
    uint32_t db_pool_size;
    uint32_t db_job_timeout_ms; /* a database job fails past this (503 db_unavailable) */
    uint32_t db_max_queue;      /* jobs in flight per worker's pool; more are refused at once */

    uint8_t key_pepper[32]; /* BLAKE2b key for API-key hashes */
    bool has_pepper;
    struct tg_keyring *keyring; /* secrets.master_keys (keyring.h): seals BYOK keys; NULL none */

    size_t max_body_bytes;
    size_t max_upstream_body_bytes;
    size_t max_sse_event_bytes;
    size_t stream_buffer_bytes;  /* per stream: pause upstream above this */
    uint32_t body_memory_factor; /* a call's JSON may cost 1 MiB + this x its body (jsonmem.h); 0 off */
    uint32_t rate_window_ms;     /* the rate limits' window (60000: "per minute"; shorter in tests) */

    uint32_t shutdown_grace_ms;
    uint32_t retry_wait_cap_ms;
    uint32_t key_cache_ttl_ms;
    uint32_t max_attempts_per_target;

    tg_timeouts_t timeouts;
    /* Whole-request first-byte budget across a chain (timeouts.request_first_byte_ms, 90000): every
     * attempt, wait and failover until the first byte of an answer fits in it. */
    uint32_t request_first_byte_ms;

    /* stored_requests (retention.h): request and answer of tenants without zero retention */
    struct {
        bool stored_requests;     /* store them at all (true) */
        uint32_t days;            /* partitions older than this are dropped (30) */
        size_t max_record_bytes;  /* cap of the request body and of the answer, each (65536) */
        size_t queue_bytes;       /* records waiting for the writer, at most (32 MiB) */
        uint32_t job_interval_ms; /* the partition job's period (3600000) */
        bool allow_core_dumps;    /* leave the process dumpable (false: no core file, no ptrace) */
    } retention;
    /* The credit ledger (billing/README.md), in micro-credits. */
    struct {
        bool enabled;          /* RESERVE and SETTLE charge credits (true); false: nothing is billed */
        char *journal_path;    /* the settlement journal (ledger.h): one per process, replayed at start */
        bool journal_fsync;    /* fsync the journal after each batch is appended (true) */
        int64_t trial_credits; /* granted once when a tenant's wallet is opened (0: none) */
        int64_t lease_credits; /* the slice of a wallet one gateway leases at a time (lease.h) */
        uint32_t lease_ttl_ms; /* a lease's life; an unrenewed lease of a lost gateway ends then */
        uint32_t commit_ms;    /* a settlement batch gathers this long (2000) */
        uint32_t queue_max;    /* settlements held in memory for the writer (2^20); past it, journal only */
    } billing;
    /* Idempotency-Key of chat calls (gateway/src/idempotency.h) */
    struct {
        uint32_t ttl_ms;           /* a key's life from its claim (86400000: 24 h) */
        uint32_t running_lease_ms; /* a running key whose gateway died is "interrupted" after this (600000) */
        size_t max_answer_bytes;   /* a larger answer is not stored: a retry gets 409 (1 MiB) */
        uint32_t purge_interval_ms; /* expired rows are deleted this often, in batches (60000) */
    } idempotency;

    /* admin_auth (admin/README.md, "Auth"): the admin API's JWT keys, each pinned to its algorithm.
     * enabled when a key is configured; without it the admin listener stays on loopback. */
    struct {
        bool enabled;
        char *issuer, *audience;
        char *hs256_secret; /* secret (>= 32 bytes): HS256 only; never logged */
        size_t hs256_len;
        char *es256_public_key;  /* PEM: ES256 only */
        uint32_t skew_s;         /* clock skew allowed on exp and nbf (60, at most 300) */
        uint32_t threads;        /* admin job threads, each with its own connection (2) */
        uint32_t queue;          /* admin jobs waiting at most; more are 503 (64) */
        uint32_t job_timeout_ms; /* a job's deadline from its submission (10000) */
    } admin_auth;

    tg_provider_cfg_t *providers;
    size_t n_providers;
    tg_model_cfg_t *models;
    size_t n_models;
    tg_chain_cfg_t *chains;
    size_t n_chains;
} tg_config_t;

/**
 * Loads and validates `path`. On success *out is a new snapshot with refcnt 1.
 * On failure every problem is appended to `errors`, one line each
 * ("models.gpt.provider: unknown provider \"x\""), and a TG_ECONFIG is returned.
 */
TG_MUST_CHECK int tg_config_load(const char *path, tg_config_t **out, tg_buf_t *errors);
/** Same, from a JSON text (unit tests). `env` lookups still use getenv. */
TG_MUST_CHECK int tg_config_parse(const char *json, size_t len, const char *path, tg_config_t **out,
                                  tg_buf_t *errors);
tg_config_t *tg_config_ref(tg_config_t *c);
/** Drops a reference; the last one frees (and wipes the secrets). NULL-safe. */
void tg_config_unref(tg_config_t *c);

const tg_model_cfg_t *tg_config_find_model(const tg_config_t *c, const char *name);
const tg_chain_cfg_t *tg_config_find_chain(const tg_config_t *c, const char *name);
const tg_provider_cfg_t *tg_config_find_provider(const tg_config_t *c, const char *name);

/* The process-wide current snapshot (reload swaps it). Thread: any. */
tg_config_t *tg_config_acquire(void);   /* returns a new reference */
void tg_config_publish(tg_config_t *c); /* takes over the caller's reference */

#endif

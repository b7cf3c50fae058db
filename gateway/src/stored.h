/*
 * stored.h - stored_requests: the batched writer and the daily partition job.
 *
 * What may be stored is decided by the choke point (retention.h), which hands finished records of
 * calls without zero retention to tg_stored_enqueue. Records wait in a bounded queue (records and
 * bytes, retention.queue_bytes) and are written in batches by one thread with its own connection
 * (COPY). The same thread runs the partition job: one partition per UTC day, created ahead,
 * dropped once older than retention.stored_requests_days, under an advisory lock so two instances
 * on one database do not collide. A full queue or an absent database drops records and counts them
 * (tollgate_stored_requests_dropped_total{reason}); tollgate_stored_requests_written_total counts
 * what was stored.
 *
 * Threads: enqueue and accepting from any thread (loop threads); start/stop on the main thread;
 * flush and run_job off-loop (tests).
 */
#ifndef TG_STORED_H
#define TG_STORED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h" /* TG_REQUEST_ID_LEN */

/** One call's record: malloc'd with its bytes after it (request, then response). */
typedef struct tg_stored_record {
    int64_t at_unix_ms;
    char request_id[TG_REQUEST_ID_LEN + 1];
    int64_t tenant_id, key_id;
    char model_requested[128];
    char model_served[128];
    char provider[64];
    int status;
    bool stream;
    int64_t prompt_tokens, completion_tokens;
    bool request_truncated, response_truncated;
    size_t request_len, response_len;
    char data[]; /* request bytes, then response bytes */
} tg_stored_record_t;

/** Whether records are wanted now (the writer runs): a hint for the call side, read without a lock. */
bool tg_stored_accepting(void);
/** Takes over r: queued (true), or freed and counted as dropped. Never waits. */
bool tg_stored_enqueue(tg_stored_record_t *r);

/** Starts the writer thread (conninfo NULL, or retention.stored_requests false: nothing is stored).
 *  Returns 0, TG_ENOMEM, or TG_EINTERNAL when already running. */
int tg_stored_start(const char *conninfo, const tg_config_t *cfg);
/** Writes what is queued (giving up on a database that does not answer within a bound), joins. */
void tg_stored_stop(void);
/** Blocks (off-loop) until every record queued so far is written or given up on; tests. */
void tg_stored_flush(void);
/** Runs the partition job now (tests, off-loop). Returns partitions dropped, or -1. */
int tg_stored_run_job(const char *conninfo, uint32_t days);

typedef struct tg_stored_stats {
    uint64_t queued;  /* accepted into the queue */
    uint64_t written; /* stored */
    uint64_t dropped; /* refused (queue full) or lost (database away or rejecting) */
} tg_stored_stats_t;
void tg_stored_stats(tg_stored_stats_t *out);

#endif

/*
 * usage_export.h - GET /admin/v1/tenants/{id}/usage with Accept: text/csv: a tenant's usage
 * records of any number streamed as CSV in bounded memory.
 *
 * The export walks the records in keyset batches (billing/usage.h: TG_EXPORT_BATCH records per
 * statement, one index range each, nothing held in the database between batches) on export
 * threads of its own with their own blocking connections: an export is long, and must not hold
 * the admin API's short-job threads. Each batch is formatted to CSV on the thread and posted to
 * the request's loop, which hands it to h2o. Backpressure: at most two batches exist per export,
 * the one h2o is sending and the next one, and the batch after is asked only when h2o has taken
 * the ready one (its generator's proceed): a slow client slows the walk, it does not fill memory.
 *
 * The first batch is read before the response starts, so a missing tenant (404) or an absent
 * database (503) is still an OpenAI-shaped error; a failure after the start aborts the response
 * (HTTP/1: the connection closes before the last chunk; h2: RST_STREAM), so a client never
 * takes a cut file for a whole one. The upper time bound is fixed when the export starts.
 *
 * Bounded: TG_EXPORT_LIVE_MAX exports at once (more: 503 server_busy with Retry-After),
 * TG_EXPORT_BUF_MAX bytes per batch.
 */
#ifndef TG_ADMIN_USAGE_EXPORT_H
#define TG_ADMIN_USAGE_EXPORT_H

#include "config.h"
#include "h2o.h"
#include "usage.h"

#define TG_EXPORT_BATCH    1000
#define TG_EXPORT_THREADS  2
#define TG_EXPORT_LIVE_MAX 4
#define TG_EXPORT_BUF_MAX  (4u << 20)

/** Takes the request over and streams the CSV of f's records (f->tenant_id set); answers errors
 *  itself. Loop thread. */
void tg_usage_export_start(h2o_req_t *req, const tg_config_t *cfg, const tg_usage_filter_t *f);

/** Live exports (tests and metrics). Thread: any. */
unsigned tg_usage_export_live(void);

#endif

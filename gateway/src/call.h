/*
 * call.h - the data plane's request path: POST /v1/chat/completions and GET /v1/models.
 *
 * Each request is a call that moves through the named stages of pipeline.h (ADMIT, AUTH,
 * PARSE, POLICY, ROUTE, LIMIT, RESERVE, ATTEMPT ⇄ WAIT, RELAY, SETTLE, LOG); call.c owns the
 * object and the way back in from callbacks, one file per group of stages does the work
 * (gateway/README.md walks them). SETTLE and LOG run exactly once for every call.
 */
#ifndef TG_CALL_H
#define TG_CALL_H

#include "h2o.h"
#include "worker.h"

int tg_chat_handle(h2o_req_t *req);
int tg_models_handle(h2o_req_t *req);
/* GET /v1/wallet, GET /v1/usage: the tenant's own money (money.c) */
int tg_wallet_handle(h2o_req_t *req);
int tg_usage_handle(h2o_req_t *req);

/** Drain past its grace period: ends every live call of this worker with 503 shutting_down (an
 *  error event for a stream already under way), through SETTLE and LOG. Loop thread. */
void tg_calls_abort(tg_worker_t *w);

#endif

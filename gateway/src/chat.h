/*
 * chat.h - the data-plane handlers: POST /v1/chat/completions and GET /v1/models.
 *
 * A chat call: parse and validate the body (limits, types), authenticate the
 * bearer key (cache, DB on a miss), resolve the chain (request "models" list,
 * named chain, or one model), then drive the failover planner: each attempt
 * builds the provider request through the adapter, runs it through the
 * worker's upstream, classifies the outcome. Non-stream answers are
 * translated whole; streams are relayed event by event with backpressure, and
 * failover stops once the first byte reached the client.
 */
#ifndef TG_CHAT_H
#define TG_CHAT_H

#include "h2o.h"

int tg_chat_handle(h2o_req_t *req);
int tg_models_handle(h2o_req_t *req);

#endif

/*
 * respond.c - whole answers and errors: the RELAY of a non-stream call, and every error answer.
 *
 * A whole answer is translated by the adapter (the OpenAI kind sends the provider's bytes with
 * `model` replaced, without building a tree) and sent with the route headers. An unreadable
 * answer is the attempt's failure and sends the call back to ATTEMPT.
 *
 * Errors all come from the error table (err.h). The pipeline's `fail` lands here: a stream under
 * way ends with an error event; a failed plan is worded from the plan (tg_plan_final_error: 503
 * naming every attempt, or the caller's own 4xx), except a chain whose single attempt failed
 * below HTTP, which keeps that failure's own status (502 unreachable or unreadable, 504 timeout):
 * there was no failover to report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "ledger.h"
#include "clock.h"
#include "err.h"
#include "idempotency.h"
#include "retention.h"

/* 503s that clear by themselves tell the client when to come back. */
static unsigned retry_after_for(int err)
{
    return err == TG_ESHUTTING_DOWN || err == TG_EDB_UNAVAILABLE || err == TG_ENOMEM ? 1 : 0;
}

void tg_respond_raw(tg_call_t *c, int status, const char *body, size_t len)
{
    if (c->req == NULL)
        return;
    h2o_req_t *req = c->req;
    c->status = status;
    tg_ledger_headers(c, status, true); /* x-tollgate-cost, x-tollgate-credits-remaining */
    tg_retention_capture(c, body, len); /* what the client received, for a stored call */
    tg_settle_charge(c);                /* journaled before the client has a byte of it */
    c->req = NULL;                      /* h2o may dispose the request inside the send */
    if (tg_idem_hold(c, req, status, body, len))
        return; /* recorded for its Idempotency-Key first, then sent (idempotency.h) */
    tg_call_ref(c);
    tg_http_send_raw_json(req, status, body, len);
    tg_call_unref(c);
}

void tg_respond_error(tg_call_t *c, int err, const char *message, const char *param)
{
    if (c->req == NULL)
        return;
    h2o_req_t *req = c->req;
    c->status = tg_err_http_status(err);
    tg_ledger_headers(c, c->status, true);
    tg_settle_charge(c);
    c->req = NULL;
    if (tg_idem_hold_error(c, req, err, message, param, retry_after_for(err)))
        return; /* recorded for its Idempotency-Key first, then sent (idempotency.h) */
    tg_call_ref(c);
    tg_http_send_error(req, err, message, param, retry_after_for(err));
    tg_call_unref(c);
}

static void add_header_u(h2o_req_t *req, const char *name, unsigned long v)
{
    char s[24];
    snprintf(s, sizeof(s), "%lu", v);
    tg_http_add_header(req, name, s);
}

void tg_respond_route_headers(tg_call_t *c)
{
    h2o_req_t *req = c->req;
    tg_http_add_header(req, "x-tollgate-model", c->served->name);
    tg_http_add_header(req, "x-tollgate-provider", c->served->provider->name);
    add_header_u(req, "x-tollgate-attempts", (unsigned long)tg_plan_attempt_count(&c->plan));
    const char *fr = tg_plan_fallback_reason(&c->plan);
    if (fr != NULL)
        tg_http_add_header(req, "x-tollgate-fallback-reason", fr);
    if (c->dropped[0] != '\0')
        tg_http_add_header(req, "x-tollgate-dropped-params", c->dropped);
}

/* --------------------------------------------------------------------- whole answers */

int tg_respond_whole(tg_call_t *c)
{
    if (c->adapter->kind == TG_KIND_OPENAI) {
        /* Pass-through: validate and read usage without a tree, send the provider's bytes. */
        tg_buf_t out;
        bool same = false;
        tg_buf_init(&out, c->body_buf.len + 1024);
        int prc =
            tg_openai_passthrough(&c->resp_in, c->body_buf.data, c->body_buf.len, &out, &same, &c->usage);
        if (prc == 0) {
            tg_attempt_served(c);
            tg_respond_route_headers(c);
            if (same)
                tg_respond_raw(c, 200, c->body_buf.data, c->body_buf.len);
            else
                tg_respond_raw(c, 200, out.data, out.len);
            tg_buf_dispose(&out);
            return TG_STAGE_GO;
        }
        tg_buf_dispose(&out); /* anything unusual: the generic path below decides */
    }
    json_t *resp = NULL;
    tg_error_t err = {0};
    int rc = c->adapter->parse_response(&c->resp_in, c->body_buf.data != NULL ? c->body_buf.data : "",
                                        c->body_buf.len, &resp, &c->usage, &err);
    if (rc != 0 || resp == NULL) {
        json_decref(resp);
        tg_classified_t cls;
        tg_outcome_answer_failure(&cls, 0, NULL, false);
        tg_attempt_failed(c, &cls);
        tg_pipeline_goto(&c->pipe, TG_STAGE_ATTEMPT);
        return TG_STAGE_GO;
    }
    char *s = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    if (s == NULL)
        return TG_ENOMEM;
    tg_attempt_served(c);
    tg_respond_route_headers(c);
    tg_respond_raw(c, 200, s, strlen(s));
    free(s);
    return TG_STAGE_GO;
}

/* ------------------------------------------------------------------------ failures */

/*
 * A chain whose only attempt failed below HTTP and skipped nothing answers with that failure's
 * own status. Returns the TG_E* code, or 0 when the planner's answer applies (HTTP errors from
 * the provider, several attempts, skips, caller errors).
 */
static int single_transport_failure(const tg_plan_t *p, const tg_attempt_rec_t **rec)
{
    const tg_attempt_rec_t *only = NULL;
    for (size_t i = 0; i < p->n_recs; i++) {
        if (p->recs[i].skipped || only != NULL)
            return 0;
        only = &p->recs[i];
    }
    if (only == NULL)
        return 0;
    *rec = only;
    return tg_outcome_client_err(&only->out);
}

/* Failed answers name the last target tried (or skipped), so a client can tell where it failed. */
static void add_failure_headers(tg_call_t *c)
{
    const tg_model_cfg_t *m = c->plan.n_recs > 0 ? c->plan.recs[c->plan.n_recs - 1].target : NULL;
    if (m == NULL && c->route.n_targets > 0)
        m = c->route.targets[0];
    if (c->req == NULL || m == NULL)
        return;
    tg_http_add_header(c->req, "x-tollgate-model", m->name);
    tg_http_add_header(c->req, "x-tollgate-provider", m->provider->name);
    add_header_u(c->req, "x-tollgate-attempts", (unsigned long)tg_plan_attempt_count(&c->plan));
}

static void respond_plan_failure(tg_call_t *c)
{
    add_failure_headers(c);
    const tg_attempt_rec_t *rec = NULL;
    int terr = single_transport_failure(&c->plan, &rec);
    if (terr != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s (%s)", tg_err_public_msg(terr), rec->out.reason);
        tg_respond_error(c, terr, msg, NULL);
        return;
    }
    int status = 503;
    uint32_t retry_after_s = 0;
    tg_buf_t body;
    tg_buf_init(&body, 16384);
    if (tg_plan_final_error(&c->plan, tg_now_ms(), &status, &body, &retry_after_s) != 0 || body.len == 0) {
        tg_buf_dispose(&body);
        tg_respond_error(c, TG_ENO_TARGET, NULL, NULL);
        return;
    }
    if (c->req != NULL && retry_after_s > 0)
        add_header_u(c->req, "retry-after", retry_after_s);
    tg_respond_raw(c, status, body.data, body.len);
    tg_buf_dispose(&body);
}

void tg_respond_fail(void *call, int err)
{
    tg_call_t *c = call;
    if (c->req == NULL)
        return;
    if (c->committed) {
        /* a stream under way cannot change its status: an error event ends it */
        tg_relay_end(c, err == TG_ESHUTTING_DOWN ? "shutting_down" : tg_err_code(err),
                     err != TG_ESHUTTING_DOWN);
        tg_relay_pump(c);
        return;
    }
    if (c->plan_failed && err == TG_ENO_TARGET) {
        respond_plan_failure(c);
        return;
    }
    tg_respond_error(c, err, c->err_msg[0] != '\0' ? c->err_msg : NULL,
                     c->err_param[0] != '\0' ? c->err_param : NULL);
}

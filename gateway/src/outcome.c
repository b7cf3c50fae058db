/*
 * outcome.c - the outcome classes, their names, what they mean to the breaker and to the client,
 * and the constructors of every outcome that is not an HTTP answer (outcome.h).
 */
#include "outcome.h"

#include <stdio.h>
#include <string.h>

#include "buf.h"

const char *tg_outcome_name(tg_outcome_class_t c)
{
    switch (c) {
    case TG_OUTCOME_SUCCESS:
        return "success";
    case TG_OUTCOME_TRANSPORT:
        return "transport_error";
    case TG_OUTCOME_TIMEOUT:
        return "timeout";
    case TG_OUTCOME_SERVER:
        return "server_error";
    case TG_OUTCOME_RATE_LIMITED:
        return "rate_limited";
    case TG_OUTCOME_MISCONFIGURED:
        return "misconfigured";
    case TG_OUTCOME_CONTEXT_LENGTH:
        return "context_length";
    case TG_OUTCOME_CALLER:
        return "caller_error";
    }
    return "unknown";
}

tg_result_t tg_outcome_breaker_result(tg_outcome_class_t c)
{
    switch (c) {
    case TG_OUTCOME_SUCCESS:
        return TG_RESULT_SUCCESS;
    case TG_OUTCOME_TRANSPORT:
    case TG_OUTCOME_TIMEOUT:
    case TG_OUTCOME_SERVER:
    case TG_OUTCOME_RATE_LIMITED:
        return TG_RESULT_FAILURE;
    case TG_OUTCOME_MISCONFIGURED:
        return TG_RESULT_FAILURE_OPEN;
    case TG_OUTCOME_CONTEXT_LENGTH:
    case TG_OUTCOME_CALLER:
        return TG_RESULT_NEUTRAL;
    }
    return TG_RESULT_NEUTRAL;
}

void tg_outcome_init(tg_classified_t *out, tg_outcome_class_t cls, int status, const char *reason)
{
    memset(out, 0, sizeof(*out));
    out->cls = cls;
    out->status = status;
    out->retry_after_ms = -1;
    tg_str_copy(out->reason, sizeof(out->reason), reason);
}

/* The error fields of a failure below HTTP come from the table; `err` is the client's code. */
static void set_error(tg_classified_t *out, int table_code, int client_err)
{
    out->err = client_err;
    tg_str_copy(out->type, sizeof(out->type), tg_err_type(table_code));
    tg_str_copy(out->code, sizeof(out->code), tg_err_code(table_code));
    tg_str_copy(out->message, sizeof(out->message), tg_err_public_msg(table_code));
}

void tg_outcome_success(tg_classified_t *out, int status)
{
    tg_outcome_init(out, TG_OUTCOME_SUCCESS, status, "ok");
}

void tg_outcome_client_gone(tg_classified_t *out)
{
    /* the caller class is neutral for the breaker: a hang-up says nothing about the provider,
     * and a half-open probe slot is freed */
    tg_outcome_init(out, TG_OUTCOME_CALLER, 0, "client_gone");
}

void tg_outcome_caller_error(tg_classified_t *out, int tg_err, const char *detail)
{
    tg_outcome_init(out, TG_OUTCOME_CALLER, tg_err_http_status(tg_err), "invalid_request");
    tg_str_copy(out->type, sizeof(out->type), tg_err_type(tg_err));
    tg_str_copy(out->code, sizeof(out->code), tg_err_code(tg_err));
    tg_str_copy(out->message, sizeof(out->message),
                detail != NULL && detail[0] != '\0' ? detail : tg_err_public_msg(tg_err));
}

void tg_outcome_internal(tg_classified_t *out, tg_internal_t why)
{
    switch (why) {
    case TG_INTERNAL_NO_ADAPTER:
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "no_adapter");
        set_error(out, TG_EUPSTREAM_FAILED, TG_EUPSTREAM_PROTOCOL);
        return;
    case TG_INTERNAL_BUILD_FAILED:
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "build_failed");
        set_error(out, TG_EUPSTREAM_FAILED, TG_EUPSTREAM_PROTOCOL);
        return;
    case TG_INTERNAL_START_FAILED:
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "start_failed");
        set_error(out, TG_EUPSTREAM_UNREACHABLE, TG_EUPSTREAM_PROTOCOL);
        return;
    }
    tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "transport_error");
    set_error(out, TG_EUPSTREAM_FAILED, TG_EUPSTREAM_PROTOCOL);
}

void tg_outcome_transport(tg_classified_t *out, int tg_err, const char *timeout_kind, bool answered)
{
    if (tg_err == TG_EUPSTREAM_TIMEOUT) {
        char reason[40];
        snprintf(reason, sizeof(reason), "timeout_%s",
                 timeout_kind != NULL && timeout_kind[0] != '\0' ? timeout_kind : "total");
        tg_outcome_init(out, TG_OUTCOME_TIMEOUT, 0, reason);
        set_error(out, TG_EUPSTREAM_TIMEOUT, TG_EUPSTREAM_TIMEOUT);
        return;
    }
    if (tg_err == TG_EUPSTREAM_PROTOCOL) {
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "protocol_error");
        set_error(out, TG_EUPSTREAM_PROTOCOL, TG_EUPSTREAM_PROTOCOL);
        return;
    }
    if (answered) {
        /* Bytes had come from the provider, so its connection worked: curl's "receive error" or
         * "partial file" here means the peer closed or reset it mid-body. */
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "upstream_closed");
        set_error(out, TG_ESTREAM_BROKEN, TG_EUPSTREAM_PROTOCOL);
        return;
    }
    switch (tg_err) {
    case TG_EUPSTREAM_UNREACHABLE:
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "connect_error");
        set_error(out, TG_EUPSTREAM_UNREACHABLE, TG_EUPSTREAM_UNREACHABLE);
        return;
    case TG_ESTREAM_BROKEN:
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "stream_broken");
        set_error(out, TG_ESTREAM_BROKEN, TG_EUPSTREAM_PROTOCOL);
        return;
    default:
        /* any other transport failure (curl error, our own resource limits) */
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "transport_error");
        set_error(out, TG_EUPSTREAM_FAILED, TG_EUPSTREAM_PROTOCOL);
        return;
    }
}

void tg_outcome_answer_failure(tg_classified_t *out, int rc, const char *timeout_kind, bool too_large)
{
    if (too_large) {
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "response_too_large");
        set_error(out, TG_EUPSTREAM_PROTOCOL, TG_EUPSTREAM_PROTOCOL);
    } else if (rc != 0) {
        tg_outcome_transport(out, rc, timeout_kind, true);
    } else {
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "bad_response");
        set_error(out, TG_EUPSTREAM_PROTOCOL, TG_EUPSTREAM_PROTOCOL);
    }
}

void tg_outcome_stream_failure(tg_classified_t *out, int stream_rc, int rc, const char *timeout_kind,
                               int status)
{
    if (stream_rc == TG_EUPSTREAM_FAILED) {
        /* an error event from the provider inside the stream: its server failed mid-answer */
        tg_outcome_init(out, TG_OUTCOME_SERVER, status, "stream_error");
        tg_str_copy(out->type, sizeof(out->type), tg_err_type(TG_EUPSTREAM_FAILED));
        tg_str_copy(out->code, sizeof(out->code), tg_err_code(TG_EUPSTREAM_FAILED));
        tg_str_copy(out->message, sizeof(out->message), tg_err_public_msg(TG_EUPSTREAM_FAILED));
    } else if (stream_rc == TG_ETOO_LARGE) {
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "stream_event_too_large");
        set_error(out, TG_EUPSTREAM_PROTOCOL, TG_EUPSTREAM_PROTOCOL);
    } else if (stream_rc != 0) {
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "stream_malformed");
        set_error(out, TG_EUPSTREAM_PROTOCOL, TG_EUPSTREAM_PROTOCOL);
    } else if (rc != 0) {
        tg_outcome_transport(out, rc, timeout_kind, true);
    } else {
        tg_outcome_init(out, TG_OUTCOME_TRANSPORT, 0, "stream_truncated");
        set_error(out, TG_ESTREAM_BROKEN, TG_EUPSTREAM_PROTOCOL);
    }
}

bool tg_outcome_is_first_byte_timeout(const tg_classified_t *out)
{
    return out->cls == TG_OUTCOME_TIMEOUT && strcmp(out->reason, "timeout_first_byte") == 0;
}

void tg_outcome_budget_cut(tg_classified_t *out)
{
    tg_outcome_init(out, TG_OUTCOME_TIMEOUT, 0, "timeout_request_budget");
    set_error(out, TG_EUPSTREAM_TIMEOUT, TG_EUPSTREAM_TIMEOUT);
}

void tg_outcome_mid_stream(tg_classified_t *out)
{
    /* every stream reason fits after the prefix; a longer one is cut, never overflows */
    static const char prefix[] = "mid_stream:";
    char reason[sizeof(out->reason)];
    memcpy(reason, prefix, sizeof(prefix) - 1);
    tg_str_copy(reason + sizeof(prefix) - 1, sizeof(reason) - (sizeof(prefix) - 1), out->reason);
    memcpy(out->reason, reason, sizeof(reason));
}

int tg_outcome_client_err(const tg_attempt_out_t *o)
{
    if (o->cls == TG_OUTCOME_TIMEOUT)
        return TG_EUPSTREAM_TIMEOUT;
    if (o->cls != TG_OUTCOME_TRANSPORT || o->status != 0)
        return 0;
    return o->err != 0 ? o->err : TG_EUPSTREAM_PROTOCOL;
}

void tg_outcome_compact(tg_attempt_out_t *dst, const tg_classified_t *src)
{
    dst->cls = src->cls;
    dst->status = src->status;
    dst->err = src->err;
    tg_str_copy(dst->reason, sizeof(dst->reason), src->reason);
}

void tg_outcome_byok(tg_classified_t *out, bool rejected, int status, bool fallback)
{
    int code = rejected ? TG_EBYOK_REJECTED : TG_EBYOK_UNUSABLE;
    const char *reason = rejected ? "byok_key_rejected" : "byok_key_unusable";
    if (fallback) {
        tg_outcome_init(out, TG_OUTCOME_MISCONFIGURED, status, reason);
        set_error(out, code, code);
        return;
    }
    /* the table's message only: a provider's 401 body may quote part of the key */
    tg_outcome_caller_error(out, code, NULL);
    tg_str_copy(out->reason, sizeof(out->reason), reason);
}

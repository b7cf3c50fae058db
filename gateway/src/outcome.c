/*
 * outcome.c - names of the failover outcome classes (provider.h).
 */
#include "providers/provider.h"

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

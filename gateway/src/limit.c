/*
 * limit.c - LIMIT: how fast the tenant and its key may go.
 *
 * It lets every call through today. It is where the rate limits (requests and tokens per minute,
 * per key and per tenant, shared by every instance on the database) will act, after the route is
 * known and before the credit reservation. A refusal is a stage error (429 with Retry-After) and
 * goes through SETTLE and LOG like any other.
 */
#include "call_internal.h"

int tg_stage_limit(void *call)
{
    (void)call;
    return TG_STAGE_GO;
}

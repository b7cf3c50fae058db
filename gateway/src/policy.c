/*
 * policy.c - POLICY and LIMIT: what the tenant may do, and how fast.
 *
 * Both stages let every call through today. They are where the tenant's policy (allowed
 * models, zero retention, max tokens) and its rate limits (requests and tokens, shared by every
 * instance on the database) will act, between authentication and the credit reservation, so
 * that no other stage changes when they do. A refusal will be a stage error (403 naming the
 * model, 429 with Retry-After) and goes through SETTLE and LOG like any other.
 */
#include "call_internal.h"

int tg_stage_policy(void *call)
{
    (void)call;
    return TG_STAGE_GO;
}

int tg_stage_limit(void *call)
{
    (void)call;
    return TG_STAGE_GO;
}

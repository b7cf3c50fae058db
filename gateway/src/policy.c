/*
 * policy.c - POLICY: what the tenant may do.
 *
 * It lets every call through today. It is where the tenant's policy (allowed models, zero
 * retention, max tokens) will act, between authentication and the route, so that no other stage
 * changes when it does. A refusal is a stage error (403 naming the model) and goes through
 * SETTLE and LOG like any other.
 */
#include "call_internal.h"
#include "retention.h"

int tg_stage_policy(void *call)
{
    tg_call_t *c = call;
    /* zero retention first: whatever refuses the call afterwards is logged under it */
    int rc = tg_retention_policy(c);
    if (rc != TG_STAGE_GO)
        return rc;
    return TG_STAGE_GO;
}

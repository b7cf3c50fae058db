/*
 * settle.c - RESERVE and SETTLE: the call's accounts, opened before the first attempt and
 * closed exactly once, whatever path the call took (pipeline.h guarantees SETTLE runs once for
 * every call, served or not, the client here or gone).
 *
 * RESERVE lets every call through today; the credit ledger will reserve the call's estimated
 * maximum cost there. SETTLE closes what the failover engine opened: a started stream's breaker
 * verdict that no other path gave (a client that left says nothing of the provider, but must
 * free a half-open probe slot) and the plan's failover events (the failures before a hang-up
 * still happened). The ledger will charge the tokens actually delivered here (`usage`, counted
 * up to the last byte that reached the client) and release the rest of the reservation.
 */
#include "call_internal.h"
#include "clock.h"

int tg_stage_reserve(void *call)
{
    (void)call;
    return TG_STAGE_GO;
}

int tg_stage_settle(void *call)
{
    tg_call_t *c = call;
    if (c->kind != TG_CALL_CHAT)
        return TG_STAGE_GO;
    tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_NEUTRAL); /* no-op when a verdict was given */
    tg_attempt_plan_events(c);
    return TG_STAGE_GO;
}

/*
 * settle.c - RESERVE and SETTLE: the call's accounts, opened before the first attempt and
 * closed exactly once, whatever path the call took (pipeline.h guarantees SETTLE runs once for
 * every call, served or not, the client here or gone).
 *
 * RESERVE reserves the call's estimated maximum cost against the tenant's credits (ledger.h);
 * with billing off it lets every call through. SETTLE closes what the failover engine opened: a
 * started stream's breaker verdict that no other path gave (a client that left says nothing of
 * the provider, but must free a half-open probe slot) and the plan's failover events (the
 * failures before a hang-up still happened); then the ledger charges the tokens actually
 * delivered (`usage`, counted up to the last byte that reached the client) and releases the rest
 * of the reservation; an answer served on the tenant's own key (`served_byok`, credential.h) is
 * charged a platform fee instead of token prices. The charge runs as the answer's last byte is
 * handed over (tg_settle_charge), not after: a kill between the two must not lose it.
 */
#include "call_internal.h"
#include "clock.h"
#include "ledger.h"

int tg_stage_reserve(void *call)
{
    tg_call_t *c = call;
    if (c->kind != TG_CALL_CHAT || !tg_ledger_on())
        return TG_STAGE_GO;
    return tg_ledger_reserve(c);
}

/*
 * A stream that did not end with the provider's own end (cut by the provider, drained, its client
 * gone) has no final usage: the provider may have reported nothing, or only its opening figures
 * (Anthropic's message_start says output_tokens 1). What reached the client is still what the
 * tenant got, so its completion tokens are at least the delivered characters over four (the usual
 * estimate for English text), and the record says it is an estimate.
 */
static void settle_usage(tg_call_t *c)
{
    if (!c->stream || !c->committed || (c->ended && c->stream_rc == 0 && c->usage.present))
        return;
    int64_t est = (int64_t)((c->delivered_chars + 3) / 4);
    if (est > c->usage.completion_tokens) {
        c->usage.completion_tokens = est;
        c->usage_estimated = true;
    }
}

void tg_settle_charge(tg_call_t *c)
{
    if (c->kind != TG_CALL_CHAT || !tg_ledger_on())
        return;
    settle_usage(c);
    tg_ledger_settle(c); /* after settle_usage: charged for what the tenant got */
}

int tg_stage_settle(void *call)
{
    tg_call_t *c = call;
    if (c->kind != TG_CALL_CHAT)
        return TG_STAGE_GO;
    settle_usage(c);
    tg_limit_settle(c); /* after settle_usage: the rate limits count what the tenant got */
    tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_NEUTRAL); /* no-op when a verdict was given */
    tg_attempt_plan_events(c);
    tg_settle_charge(c); /* a no-op when the last byte's send ran it */
    return TG_STAGE_GO;
}

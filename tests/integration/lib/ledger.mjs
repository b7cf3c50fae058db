// The credit ledger in tests: the four invariants (tollgate_ledger_check(), migration 0007), prices,
// wallets and usage records, all through psql against the stack's database.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { psql, lit } from './control.mjs';
import { waitFor } from './wait.mjs';

/** Fails with every violation tollgate_ledger_check() reports (balance = sum of entries, no
 *  overspend, each request charged at most once, cost = tokens x prices, the rollup). */
export async function assertLedgerClean(what = 'the ledger') {
    const rows = await psql('SELECT invariant, tenant_id, detail FROM tollgate_ledger_check()');
    assert.deepEqual(rows, [], `${what}: tollgate_ledger_check() found violations:\n${rows.map((r) => r.join(' ')).join('\n')}`);
}

/** A price row in effect from now for `model` (micro-credits per million tokens; fee per BYOK request). */
export async function setPrice(model, { input = 0, output = 0, cached = 0, fee = 0 } = {}) {
    await psql(`INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, byok_fee, effective_from)
                VALUES (${lit(model)}, ${input}, ${output}, ${cached}, ${fee}, clock_timestamp())`);
}

export async function tenantId(name) {
    const rows = await psql(`SELECT id FROM tenants WHERE name = ${lit(name)}`);
    assert.equal(rows.length, 1, `tenant ${name} exists`);
    return Number(rows[0][0]);
}

export async function topUp(tenant, amount, key) {
    await psql(`SELECT tollgate_top_up(${tenant}, ${amount}, ${lit(key)}, 'test')`);
}

export async function wallet(tenant) {
    const [r] = await psql(`SELECT balance, reserved, spent FROM wallets WHERE tenant_id = ${tenant}`);
    return { balance: Number(r[0]), reserved: Number(r[1]), spent: Number(r[2]) };
}

/** The tenant's usage records, oldest first. */
export async function records(tenant) {
    const rows = await psql(`SELECT request_id, cost, charged, input_tokens, output_tokens, cached_tokens, estimated,
                                    billed, status, price_id, price_output, byok
                               FROM usage_records WHERE tenant_id = ${tenant} ORDER BY created_at, request_id`);
    return rows.map((r) => ({
        requestId: r[0], cost: Number(r[1]), charged: Number(r[2]), input: Number(r[3]), output: Number(r[4]),
        cached: Number(r[5]), estimated: r[6] === 't', billed: r[7] === 't', status: Number(r[8]),
        priceId: Number(r[9]), priceOutput: Number(r[10]), byok: r[11] === 't',
    }));
}

/** Waits until the tenant has `n` usage records. */
export async function waitRecords(tenant, n, what) {
    return waitFor(async () => {
        const r = await records(tenant);
        return r.length >= n ? r : null;
    }, { tries: 400, every: 50, what: what || `${n} usage records of tenant ${tenant}` });
}

/** Waits until the tenant's wallet holds nothing reserved (every lease closed or expired). */
export async function waitNothingReserved(tenant, { tries = 600, every = 100 } = {}) {
    return waitFor(async () => ((await wallet(tenant)).reserved === 0 ? true : null), { tries, every, what: `tenant ${tenant}'s leases to end` });
}

/** The billing block of an instance with the ledger on (its own journal in the instance's dir). */
export function billingOn(dir, extra = {}) {
    return { enabled: true, journal_path: join(dir, 'ledger.journal'), journal_fsync: true, lease_ttl_ms: 5000, ...extra };
}

// integration.ledger.check: the ledger's invariants (tollgate_ledger_check(), migration 0007) over
// everything the stack's tests did, run once after all of them and before the stack stops (a
// fixture cleanup that integration.stack.stop depends on). Files that run databases of their own
// check them themselves (lib/ledger.mjs, assertLedgerClean).
import { test } from 'node:test';
import { assertLedgerClean } from './lib/ledger.mjs';

test('the ledger invariants hold after every stack test', async () => {
    await assertLedgerClean('the stack database after all tests');
});

// Polling helpers: tests wait for a condition, never for a fixed time.
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Calls fn until it returns a truthy value (returned) or tries run out (throws, naming `what`
 * and the last value seen). The pause between tries only paces the polling. The default bound
 * (30 s) is generous on purpose: it only decides when a wait that will never end gives up, and a
 * loaded two-core CI machine must not turn a slow success into a failure. A test that asserts a
 * promise of speed ("within 1 s") passes its own bound.
 */
export async function waitFor(fn, { tries = 600, every = 50, what = 'condition' } = {}) {
    let last;
    for (let i = 0; i < tries; i++) {
        last = await fn();
        if (last) return last;
        await delay(every);
    }
    throw new Error(`gave up waiting for ${what} after ${tries} tries; last value: ${JSON.stringify(last)}`);
}

/**
 * Polls fn() (a number) until it moves by at most `slack` over `stable` consecutive samples;
 * returns the last value.
 */
export async function waitStable(fn, { stable = 5, slack = 0, tries = 400, every = 50, what = 'a stable value' } = {}) {
    let prev = await fn();
    let same = 0;
    for (let i = 0; i < tries; i++) {
        await delay(every);
        const v = await fn();
        same = Math.abs(v - prev) <= slack ? same + 1 : 0;
        prev = v;
        if (same >= stable) return v;
    }
    throw new Error(`gave up waiting for ${what}; last value: ${prev}`);
}

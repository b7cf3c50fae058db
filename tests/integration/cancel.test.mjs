// Issue #9 item 7: a request whose client left before any answer has one status, 499, in the
// access log and in tollgate_requests_total. An HTTP/2 stream cancelled with RST_STREAM is disposed
// by h2o with no response status at all (0); it used to be counted as status "0" while the call code
// logged 499.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { test } from 'node:test';
import { chatBody, gatewayLines } from './lib/http.mjs';
import { freshStart, metricSum, setFault } from './lib/control.mjs';
import { stack } from './lib/stack.mjs';
import { waitFor } from './lib/wait.mjs';

const S = stack();
const ROUTE = '/v1/chat/completions';

const counted = async (status) => (await metricSum('tollgate_requests_total', { route: ROUTE, status })) ?? 0;
const logged499 = () =>
    gatewayLines()
        .filter((l) => l.includes('"event":"request"') && l.includes('"status":499')).length;

test('an HTTP/2 stream cancelled before any answer is counted and logged as 499, never as 0', async () => {
    const model = 'openai-hang';
    await freshStart([model]);
    await setFault(model, { hang: true });
    const before = { c499: await counted('499'), c0: await counted('0'), log: logged499() };

    const session = http2.connect(S.url); // h2c with prior knowledge: h2o accepts it on the data listener
    session.on('error', () => {});
    try {
        const req = session.request({
            ':method': 'POST',
            ':path': ROUTE,
            'content-type': 'application/json',
            authorization: `Bearer ${S.key}`,
        });
        req.on('error', () => {});
        const responded = new Promise((resolve) => req.on('response', () => resolve(true)));
        req.end(JSON.stringify(chatBody(model)));
        // leave once the gateway's upstream request is open (the simulator hangs it)
        await waitFor(async () => ((await metricSum('tollgate_upstream_active')) ?? 0) >= 1, {
            what: 'the upstream request to open',
        });
        req.close(http2.constants.NGHTTP2_CANCEL);
        await waitFor(async () => (await counted('499')) === before.c499 + 1, {
            what: 'the cancelled stream counted as 499',
        });
        assert.equal(await Promise.race([responded, Promise.resolve(false)]), false, 'no answer reached the client');
    } finally {
        session.close();
    }
    assert.equal(await counted('0'), before.c0, 'no request counted with status 0');
    assert.equal(before.c0, 0, 'no status "0" series at all');
    await waitFor(() => logged499() === before.log + 1, { what: 'the access log line with status 499' });
    await freshStart([model]);
});

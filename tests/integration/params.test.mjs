// issue #3 item 2: one rule for parameters a provider cannot honour, for every provider: the
// request is served without them and they are named in x-tollgate-dropped-params. Parameters
// the provider does honour are never named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chat, chatBody } from './lib/http.mjs';
import { freshStart } from './lib/control.mjs';

function dropped(r) {
    const h = r.headers.get('x-tollgate-dropped-params');
    return h === null ? [] : h.split(',').map((s) => s.trim()).filter(Boolean).sort();
}

test('anthropic kind: unsupported parameters are dropped and named', async () => {
    await freshStart(['anthropic-chat']);
    const r = await chat(
        chatBody('anthropic-chat', {
            seed: 7,
            presence_penalty: 0.5,
            logit_bias: { 50256: -100 },
            response_format: { type: 'json_object' },
            temperature: 0.5, // honoured: not named
            max_tokens: 64, // honoured: not named
        }),
    );
    assert.equal(r.status, 200, r.text);
    const d = dropped(r);
    for (const p of ['seed', 'presence_penalty', 'logit_bias', 'response_format']) assert.ok(d.includes(p), `${p} named in ${d}`);
    for (const p of ['temperature', 'max_tokens']) assert.ok(!d.includes(p), `${p} is honoured, not named`);
});

test('gemini kind: what Gemini honours is not named, what it cannot is', async () => {
    await freshStart(['gemini-chat']);
    const r = await chat(chatBody('gemini-chat', { seed: 7, logit_bias: { 50256: -100 }, top_p: 0.9 }));
    assert.equal(r.status, 200, r.text);
    const d = dropped(r);
    assert.ok(d.includes('logit_bias'), `logit_bias named in ${d}`);
    assert.ok(!d.includes('seed'), 'Gemini takes a seed');
    assert.ok(!d.includes('top_p'), 'Gemini takes top_p');
});

test('openai kind: nothing is dropped, no header', async () => {
    await freshStart(['openai-chat']);
    const r = await chat(chatBody('openai-chat', { seed: 7, presence_penalty: 0.5, logit_bias: { 50256: -100 } }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-dropped-params'), null);
});

test('a stream names dropped parameters before its first byte', async () => {
    await freshStart(['anthropic-chat']);
    const r = await chat(chatBody('anthropic-chat', { stream: true, seed: 7 }));
    assert.equal(r.status, 200);
    assert.ok(dropped(r).includes('seed'));
});

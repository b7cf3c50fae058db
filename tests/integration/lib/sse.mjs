// An incremental SSE reader (text/event-stream) that records everything it sees:
// data events (with parsed JSON), comment lines, and whether the [DONE] sentinel came.

export class SseRecorder {
    /**
     * lean: keep nothing but counters and the first 64 KiB of raw text; every data event goes to
     * onEvent(ev) instead (for streams of hundreds of MiB).
     */
    constructor({ lean = false, onEvent = null } = {}) {
        this.lean = lean;
        this.onEvent = onEvent;
        this.nEvents = 0;
        this.pending = '';
        this.raw = '';
        this.items = []; // in arrival order: {type:'comment', text} | {type:'data', event, data, json}
        this.events = [];
        this.comments = [];
        this.done = false;
        this.afterDone = 0; // events that came after [DONE] (there must be none)
        this._data = null;
        this._event = '';
    }

    feed(text) {
        if (!this.lean || this.raw.length < 65536) this.raw += text;
        this.pending += text;
        let i;
        while ((i = this.pending.search(/\r\n|\n|\r/)) >= 0) {
            const line = this.pending.slice(0, i);
            const sep = this.pending.startsWith('\r\n', i) ? 2 : 1;
            this.pending = this.pending.slice(i + sep);
            this._line(line);
        }
    }

    /** Call when the body ended: an unterminated event is not an event (SSE spec). */
    end() {
        this.incompleteTail = this.pending.length > 0 || this._data !== null;
        return this;
    }

    _line(line) {
        if (line === '') {
            if (this._data !== null) this._dispatch();
            this._event = '';
            return;
        }
        if (line.startsWith(':')) {
            if (this.lean) return;
            const c = { type: 'comment', text: line.slice(1).trimStart() };
            this.items.push(c);
            this.comments.push(c.text);
            return;
        }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') this._data = this._data === null ? value : this._data + '\n' + value;
        else if (field === 'event') this._event = value;
    }

    _dispatch() {
        const data = this._data;
        this._data = null;
        if (data === '[DONE]') {
            this.done = true;
            return;
        }
        if (this.done) this.afterDone++;
        let json = null;
        try {
            json = JSON.parse(data);
        } catch {
            json = null;
        }
        const ev = { type: 'data', event: this._event, data, json };
        this.nEvents++;
        if (this.onEvent) this.onEvent(ev);
        if (this.lean) {
            if (ev.event === 'error' || (json && json.error)) this.events.push(ev); // errors are kept
            return;
        }
        this.items.push(ev);
        this.events.push(ev);
    }

    /** Content chunks: chat.completion.chunk objects. */
    get chunks() {
        return this.events.filter((e) => e.json && e.json.object === 'chat.completion.chunk');
    }

    /** Error events: an `event: error` or a data object with an "error" member. */
    get errors() {
        return this.events.filter((e) => e.event === 'error' || (e.json && e.json.error));
    }

    /** Concatenated delta.content of choice 0. */
    get text() {
        let s = '';
        for (const c of this.chunks) {
            const ch = c.json.choices && c.json.choices[0];
            if (ch && ch.delta && typeof ch.delta.content === 'string') s += ch.delta.content;
        }
        return s;
    }

    /** Chunks that carry a usage object (OpenAI: the last one, with empty choices). */
    get usageChunks() {
        return this.chunks.filter((c) => c.json.usage);
    }

    get finishReasons() {
        const out = [];
        for (const c of this.chunks)
            for (const ch of c.json.choices || []) if (ch.finish_reason) out.push(ch.finish_reason);
        return out;
    }
}

/*
 * sim_text.c - the deterministic answer (text, chunks, usage) and a small JSON writer.
 *
 * Every number a test compares is a pure function of the request: prompt tokens are
 * ceil(prompt text bytes / 4), completion tokens are the words of the text produced (or, for a
 * tool call, ceil((name + arguments bytes) / 4)). Output JSON is written by hand into a bounded
 * buffer because the simulator is the baseline of the benchmarks: no DOM per stream event.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"

/* ---- writer ----------------------------------------------------------------------------- */

void tg_sim_w_raw(tg_sim_w_t *w, const char *s, size_t n)
{
    if (w->rc == 0)
        w->rc = tg_buf_append(w->b, s, n);
}

void tg_sim_w_s(tg_sim_w_t *w, const char *s)
{
    tg_sim_w_raw(w, s, strlen(s));
}

void tg_sim_w_f(tg_sim_w_t *w, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        /* every format in the simulator is short; a long one is a bug, not input */
        if (w->rc == 0)
            w->rc = TG_EINTERNAL;
        return;
    }
    tg_sim_w_raw(w, tmp, (size_t)n);
}

/* Escapes without the quotes; bytes >= 0x80 pass through (inputs were UTF-8 checked by jansson
 * or sanitised to ASCII). */
static void w_escaped(tg_sim_w_t *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        tg_sim_w_raw(w, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            el = 6;
        }
        tg_sim_w_raw(w, esc, el);
    }
    tg_sim_w_raw(w, s + run, n - run);
}

static void w_pad(tg_sim_w_t *w, size_t pad)
{
    static const char dots[] = "................................................................";
    while (pad > 0) {
        size_t k = pad < sizeof(dots) - 1 ? pad : sizeof(dots) - 1;
        tg_sim_w_raw(w, dots, k);
        pad -= k;
    }
}

void tg_sim_w_str(tg_sim_w_t *w, const char *s, size_t n)
{
    tg_sim_w_raw(w, "\"", 1);
    w_escaped(w, s, n);
    tg_sim_w_raw(w, "\"", 1);
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    tg_sim_w_t *w = data;
    tg_sim_w_raw(w, buffer, size);
    return w->rc == 0 ? 0 : -1;
}

void tg_sim_w_json(tg_sim_w_t *w, const json_t *v)
{
    if (json_dump_callback(v, dump_cb, w, JSON_COMPACT | JSON_ENCODE_ANY) != 0 && w->rc == 0)
        w->rc = TG_EINTERNAL;
}

int tg_sim_perr(tg_sim_perr_t *e, int status, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->status = status;
    e->param = param;
    return TG_EINVALID_REQUEST;
}

bool tg_sim_json_is_str(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

uint64_t tg_sim_hash(const void *p, size_t n, uint64_t h)
{
    /* FNV-1a: ids only need to be deterministic, not strong */
    const unsigned char *c = p;
    if (h == 0)
        h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- request accumulation ---------------------------------------------------------------- */

void tg_sim_req_init(tg_sim_req_t *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->max_tokens = -1;
    tg_buf_init(&rq->echo, TG_SIM_ECHO_MAX);
    tg_buf_init(&rq->tool_result, TG_SIM_RESULT_MAX);
}

void tg_sim_req_dispose(tg_sim_req_t *rq)
{
    tg_buf_dispose(&rq->echo);
    tg_buf_dispose(&rq->tool_result);
}

void tg_sim_req_add_text(tg_sim_req_t *rq, const char *s, size_t n)
{
    (void)s;
    rq->prompt_bytes += n;
}

/* Keeps an ASCII-only copy (controls become spaces, other bytes '?') so chunks can be cut at any
 * byte without splitting a UTF-8 sequence. */
static void keep_ascii(tg_buf_t *b, const char *s, size_t n)
{
    tg_buf_reset(b);
    for (size_t i = 0; i < n && b->len < b->max; i++) {
        unsigned char c = (unsigned char)s[i];
        char o = c < 0x20 ? ' ' : c >= 0x7f ? '?' : (char)c;
        TG_IGNORE_RESULT(tg_buf_append(b, &o, 1)); /* len < max was checked */
    }
}

void tg_sim_req_set_echo(tg_sim_req_t *rq, const char *s, size_t n)
{
    keep_ascii(&rq->echo, s, n);
}

void tg_sim_req_set_tool_result(tg_sim_req_t *rq, const char *s, size_t n)
{
    rq->has_tool_result = true;
    keep_ascii(&rq->tool_result, s, n);
}

/* ---- the answer ------------------------------------------------------------------------- */

static void text_s(tg_sim_w_t *w, const char *s, size_t n, bool json)
{
    tg_buf_t tmp;
    tg_buf_init(&tmp, TG_SIM_MODEL_MAX + TG_SIM_RESULT_MAX);
    keep_ascii(&tmp, s, n);
    if (json)
        tg_sim_w_str(w, tmp.data ? tmp.data : "", tmp.len);
    else
        tg_sim_w_raw(w, tmp.data ? tmp.data : "", tmp.len);
    tg_buf_dispose(&tmp);
}

static const char *buf_str(const tg_buf_t *b)
{
    return b->data ? b->data : "";
}

static bool is_space(char c)
{
    return c == ' ';
}

/* Keeps the first `max` words of the text; returns true when it cut. */
static bool cut_words(tg_buf_t *t, long max)
{
    long words = 0;
    for (size_t i = 0; i < t->len; i++) {
        if (!is_space(t->data[i]) && (i == 0 || is_space(t->data[i - 1]))) {
            if (words == max) {
                size_t end = i;
                while (end > 0 && is_space(t->data[end - 1]))
                    end--;
                t->len = end;
                t->data[end] = '\0';
                return true;
            }
            words++;
        }
    }
    return false;
}

static void piece_bounds(const tg_sim_answer_t *a, size_t i, size_t *off, size_t *len, size_t *pad)
{
    size_t L = a->text.len;
    size_t s = i * L / a->n_pieces, e = (i + 1) * L / a->n_pieces;
    *off = s;
    *len = e - s;
    *pad = a->pad_to > *len ? a->pad_to - *len : 0;
}

/* Words of the padded concatenation: padding is '.', so a run of it starts a word only after a
 * space; no need to materialise the padded text. */
static long count_words(const tg_sim_answer_t *a)
{
    long words = 0;
    bool prev_space = true;
    for (size_t i = 0; i < a->n_pieces; i++) {
        size_t off, len, pad;
        piece_bounds(a, i, &off, &len, &pad);
        for (size_t k = 0; k < len; k++) {
            bool sp = is_space(a->text.data[off + k]);
            if (!sp && prev_space)
                words++;
            prev_space = sp;
        }
        if (pad > 0) {
            if (prev_space)
                words++;
            prev_space = false;
        }
    }
    return words;
}

static void hex_id(char *dst, size_t cap, const char *prefix, uint64_t h1, uint64_t h2)
{
    snprintf(dst, cap, "%s%016llx%08llx", prefix, (unsigned long long)h1,
             (unsigned long long)(h2 & 0xffffffffu));
}

int tg_sim_answer_build(tg_sim_answer_t *a, const tg_sim_req_t *rq, const tg_sim_fault_t *f,
                        const char *id_prefix, const char *call_prefix)
{
    memset(a, 0, sizeof(*a));
    tg_buf_init(&a->text, 4096);
    tg_sim_w_t w = {&a->text, 0};
    size_t mlen = strlen(rq->model);

    a->prompt_tokens = (long)((rq->prompt_bytes + 3) / 4);
    if (f->cached_tokens >= 0)
        a->cached_tokens = f->cached_tokens < a->prompt_tokens ? f->cached_tokens : a->prompt_tokens;
    else if (a->prompt_tokens >= 1024)
        a->cached_tokens = (a->prompt_tokens / 2) & ~127L; /* like prompt caching: 128-token blocks */

    uint64_t h = tg_sim_hash(rq->model, mlen, 0);
    h = tg_sim_hash(buf_str(&rq->echo), rq->echo.len, h);
    h = tg_sim_hash(&rq->prompt_bytes, sizeof(rq->prompt_bytes), h);
    hex_id(a->resp_id, sizeof(a->resp_id), id_prefix, h, h >> 17);
    a->created = (long long)time(NULL);

    if (rq->tool_name != NULL && !rq->has_tool_result) {
        json_t *args = tg_sim_args_from_schema(rq->tool_schema);
        if (args == NULL)
            return TG_ENOMEM;
        a->tool_args = json_dumps(args, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(args);
        if (a->tool_args == NULL)
            return TG_ENOMEM;
        a->tool_call = true;
        a->tool_name = rq->tool_name;
        a->tool_args_len = strlen(a->tool_args);
        a->finish = TG_SIM_FINISH_TOOL;
        uint64_t th = tg_sim_hash(rq->tool_name, strlen(rq->tool_name), h);
        hex_id(a->call_id, sizeof(a->call_id), call_prefix, th, th >> 23);
        a->completion_tokens = (long)((strlen(rq->tool_name) + a->tool_args_len + 3) / 4);
        a->n_pieces = f->stream_chunks > 0 ? (size_t)f->stream_chunks : TG_SIM_DEFAULT_CHUNKS;
        return 0;
    }

    if (rq->json_mode) {
        tg_sim_w_s(&w, "{\"model\": ");
        text_s(&w, rq->model, mlen, true);
        if (rq->has_tool_result) {
            tg_sim_w_s(&w, ", \"tool_result\": ");
            tg_sim_w_str(&w, buf_str(&rq->tool_result), rq->tool_result.len);
        } else {
            tg_sim_w_s(&w, ", \"echo\": ");
            tg_sim_w_str(&w, buf_str(&rq->echo), rq->echo.len);
        }
        tg_sim_w_s(&w, ", \"simulated\": true}");
    } else if (rq->has_tool_result) {
        tg_sim_w_s(&w, "tollgate-sim model ");
        text_s(&w, rq->model, mlen, false);
        tg_sim_w_s(&w, " got the tool result: ");
        tg_sim_w_raw(&w, buf_str(&rq->tool_result), rq->tool_result.len);
        tg_sim_w_s(&w, " (end of tool result).");
    } else {
        tg_sim_w_s(&w, "Hello from tollgate-sim model ");
        text_s(&w, rq->model, mlen, false);
        tg_sim_w_s(&w, ". You said: ");
        tg_sim_w_raw(&w, buf_str(&rq->echo), rq->echo.len);
        tg_sim_w_s(&w, ". This answer is deterministic.");
    }
    if (w.rc != 0)
        return w.rc;
    if (a->text.data == NULL)
        return TG_ENOMEM;
    a->finish = TG_SIM_FINISH_STOP;
    if (rq->max_tokens >= 0 && cut_words(&a->text, rq->max_tokens))
        a->finish = TG_SIM_FINISH_LENGTH;

    size_t n = f->stream_chunks > 0 ? (size_t)f->stream_chunks : TG_SIM_DEFAULT_CHUNKS;
    /* without padding a piece needs at least one byte; padded pieces may carry only padding */
    if (n > a->text.len && f->chunk_bytes <= 0)
        n = a->text.len > 0 ? a->text.len : 1;
    a->n_pieces = n;
    a->pad_to = f->chunk_bytes > 0 ? (size_t)f->chunk_bytes : 0;
    a->completion_tokens = count_words(a);
    return 0;
}

void tg_sim_answer_dispose(tg_sim_answer_t *a)
{
    tg_buf_dispose(&a->text);
    free(a->tool_args);
    a->tool_args = NULL;
}

void tg_sim_w_piece(tg_sim_w_t *w, const tg_sim_answer_t *a, size_t i)
{
    size_t off, len, pad;
    piece_bounds(a, i, &off, &len, &pad);
    tg_sim_w_raw(w, "\"", 1);
    w_escaped(w, buf_str(&a->text) + off, len);
    w_pad(w, pad);
    tg_sim_w_raw(w, "\"", 1);
}

void tg_sim_w_answer_text(tg_sim_w_t *w, const tg_sim_answer_t *a)
{
    tg_sim_w_raw(w, "\"", 1);
    for (size_t i = 0; i < a->n_pieces; i++) {
        size_t off, len, pad;
        piece_bounds(a, i, &off, &len, &pad);
        w_escaped(w, buf_str(&a->text) + off, len);
        w_pad(w, pad);
    }
    tg_sim_w_raw(w, "\"", 1);
}

size_t tg_sim_answer_args_pieces(const tg_sim_answer_t *a)
{
    size_t n = a->n_pieces < 2 ? 2 : a->n_pieces;
    return n > a->tool_args_len ? a->tool_args_len : n;
}

void tg_sim_w_args_piece(tg_sim_w_t *w, const tg_sim_answer_t *a, size_t i)
{
    size_t n = tg_sim_answer_args_pieces(a), L = a->tool_args_len;
    size_t s = i * L / n, e = (i + 1) * L / n;
    tg_sim_w_str(w, a->tool_args + s, e - s);
}

/*
 * jsonmem.c - jansson allocator hooks with a per-thread budget (see jsonmem.h).
 *
 * The state is thread-local: every worker loop parses its own calls, one at a time, so the
 * budget armed around one json_loadb sees only that parse. jansson's hooks are process-wide
 * function pointers; they are set once and never changed back.
 *
 * Two ways to stop at the budget. Building code (json_pack, json_object_set, json_dumps) copes
 * with a NULL from the allocator, so outside a parse a refused allocation simply fails. jansson's
 * lexer does not: its saved-text buffer ignores a failed append and a later unget asserts on it
 * (load.c lex_unget_unsave; Debian builds keep assertions, so the process would abort). During
 * a parse (tg_jsonmem_loadb) nothing is refused: the hooks only note that the budget is passed,
 * and the parse is fed through a callback 1 KiB at a time that stops feeding once it is, which
 * jansson reports as a read error and unwinds like any other.
 */
#include "jsonmem.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

typedef struct {
    bool armed;
    bool soft; /* inside tg_jsonmem_loadb: note the budget is passed, never refuse */
    bool exceeded;
    size_t left; /* bytes the armed budget still allows */
    size_t used; /* bytes counted since arming */
} jsonmem_t;

static __thread jsonmem_t tls;
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void *jm_malloc(size_t n)
{
    jsonmem_t *m = &tls;
    if (m->armed) {
        if (n > m->left) {
            m->exceeded = true;
            m->left = 0; /* a refused allocation ends the budget: later small ones fail too */
            if (!m->soft)
                return NULL;
        } else {
            m->left -= n;
        }
        m->used += n;
    }
    return malloc(n);
}

static void jm_free(void *p)
{
    free(p);
}

static void install(void)
{
    json_set_alloc_funcs(jm_malloc, jm_free);
}

void tg_jsonmem_init(void)
{
    pthread_once(&hooks_once, install);
}

size_t tg_jsonmem_budget(size_t body_len, unsigned factor)
{
    if (factor == 0 || body_len > (SIZE_MAX - TG_JSONMEM_FLOOR) / factor)
        return SIZE_MAX;
    return TG_JSONMEM_FLOOR + (size_t)factor * body_len;
}

void tg_jsonmem_explain(char *dst, size_t n, size_t body_len, unsigned factor)
{
    snprintf(dst, n,
             "request body is too complex: its %zu bytes would need more than %zu bytes of memory as JSON "
             "(1 MiB + %u x its size); send fewer, larger values",
             body_len, tg_jsonmem_budget(body_len, factor), factor);
}

void tg_jsonmem_arm(size_t budget)
{
    tg_jsonmem_init();
    tls = (jsonmem_t){.armed = true, .left = budget};
}

size_t tg_jsonmem_disarm(bool *exceeded)
{
    if (exceeded != NULL)
        *exceeded = tls.exceeded;
    size_t used = tls.used;
    tls = (jsonmem_t){0};
    return used;
}

/*
 * The least jansson 2.14 allocates for each kind of token (measured through the hooks: an object
 * is its struct and eight hash buckets, an array its struct and an eight-slot table, a number
 * its struct, a string its struct plus the text, a key its hash pair plus the text twice). Literals cost
 * nothing (shared singletons). unit.jsonmem checks that the estimate stays below the counted cost, so a
 * jansson that allocates less shows up as a failing test rather than as refused requests.
 */
enum { EST_OBJECT = 200, EST_ARRAY = 104, EST_NUMBER = 24, EST_STRING = 33, EST_KEY = 60 };

enum { C_OTHER, C_OBJECT, C_ARRAY, C_STRING, C_NUMBER };

static const unsigned char cls[256] = {
    ['{'] = C_OBJECT, ['['] = C_ARRAY,  ['"'] = C_STRING, ['-'] = C_NUMBER, ['0'] = C_NUMBER,
    ['1'] = C_NUMBER, ['2'] = C_NUMBER, ['3'] = C_NUMBER, ['4'] = C_NUMBER, ['5'] = C_NUMBER,
    ['6'] = C_NUMBER, ['7'] = C_NUMBER, ['8'] = C_NUMBER, ['9'] = C_NUMBER,
};

static bool num_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

/* The index after the closing quote of the string whose text starts at i (len if none). A quote
 * preceded by an odd run of backslashes is escaped; JSON has no other backslash in a run. */
static size_t string_end(const unsigned char *p, size_t i, size_t len)
{
    while (i < len) {
        const unsigned char *q = memchr(p + i, '"', len - i);
        if (q == NULL)
            return len;
        size_t at = (size_t)(q - p), bs = 0;
        while (at - bs > i && p[at - bs - 1] == '\\')
            bs++;
        i = at + 1;
        if (bs % 2 == 0)
            return i;
    }
    return len;
}

size_t tg_jsonmem_estimate(const char *buf, size_t len, size_t stop_above)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t est = 0, i = 0;
    while (i < len) {
        switch (cls[p[i++]]) {
        case C_OBJECT:
            est += EST_OBJECT;
            break;
        case C_ARRAY:
            est += EST_ARRAY;
            break;
        case C_STRING:
            i = string_end(p, i, len);
            while (i < len && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t'))
                i++;
            est += i < len && p[i] == ':' ? EST_KEY : EST_STRING; /* a key becomes a hash pair */
            break;
        case C_NUMBER:
            est += EST_NUMBER;
            while (i < len && num_char(p[i]))
                i++;
            break;
        default:
            continue; /* whitespace, separators, literals: nothing to count */
        }
        if (est > stop_above)
            break;
    }
    return est;
}

typedef struct {
    const char *p;
    size_t left;
} feed_t;

/* jansson's read callback: the next bytes of the body, or an error once the budget is passed. */
static size_t feed(void *buf, size_t buflen, void *data)
{
    feed_t *f = data;
    if (tls.exceeded)
        return (size_t)-1;
    size_t n = f->left < buflen ? f->left : buflen;
    memcpy(buf, f->p, n);
    f->p += n;
    f->left -= n;
    return n;
}

json_t *tg_jsonmem_loadb(const char *buf, size_t len, size_t flags, json_error_t *jerr)
{
    if (!tls.armed)
        return json_loadb(buf, len, flags, jerr);
    bool was_soft = tls.soft;
    tls.soft = true;
    feed_t f = {.p = buf, .left = len};
    json_t *v = json_load_callback(feed, &f, flags, jerr);
    tls.soft = was_soft;
    if (tls.exceeded) {
        /* passed the budget: whatever jansson made of the rest is not wanted */
        json_decref(v);
        return NULL;
    }
    return v;
}

json_t *tg_json_load_bounded(const char *buf, size_t len, size_t budget, size_t flags, json_error_t *jerr,
                             int *rc, size_t *used)
{
    if (len > TG_JSONMEM_PRESCAN_MIN && tg_jsonmem_estimate(buf, len, budget) > budget) {
        /* certain to exceed: refuse at the cost of one pass over the bytes, not of a tree */
        if (used != NULL)
            *used = 0;
        *rc = TG_EBODY_TOO_COMPLEX;
        return NULL;
    }
    tg_jsonmem_arm(budget);
    json_t *v = tg_jsonmem_loadb(buf, len, flags, jerr);
    bool exceeded;
    size_t n = tg_jsonmem_disarm(&exceeded);
    if (used != NULL)
        *used = n;
    if (exceeded) {
        *rc = TG_EBODY_TOO_COMPLEX;
        return NULL;
    }
    *rc = v != NULL ? 0 : TG_EINVALID_JSON;
    return v;
}

/*
 * retention.c - the choke point of what may be stored (retention.h).
 *
 * The call side runs on the call's loop thread and only copies: the request body at POLICY, what
 * the client received as it goes (capped), and one record at LOG handed to the writer (stored.h;
 * a full queue drops the record and counts it, it never waits). A zero-retention call copies
 * nothing.
 */
#include "retention.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "call_internal.h"
#include "clock.h"
#include "err.h"
#include "log.h"
#include "stored.h"

/* ------------------------------------------------------------------------ pure parts */

int tg_retention_header(const char *value, size_t len, bool *tighten)
{
    *tighten = false;
    if (value == NULL)
        return 0;
    while (len > 0 && (*value == ' ' || *value == '\t'))
        value++, len--;
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 4 && strncasecmp(value, "true", 4) == 0) {
        *tighten = true;
        return 0;
    }
    if (len == 5 && strncasecmp(value, "false", 5) == 0)
        return 0; /* the tenant's policy stands: the header only tightens */
    return TG_EINVALID_REQUEST;
}

bool tg_retention_target_ok(const tg_model_cfg_t *m, bool byok)
{
    return byok || (m != NULL && m->provider != NULL && m->provider->zero_retention);
}

static void append_name(char *dst, size_t cap, const char *name)
{
    size_t used = strlen(dst);
    size_t need = (used > 0 ? 2 : 0) + strlen(name);
    if (used + need + 4 >= cap) { /* room for ", x" and a final "..." */
        if (used + 4 < cap && (used < 3 || strcmp(dst + used - 3, "...") != 0))
            memcpy(dst + used, "...", 4);
        return;
    }
    snprintf(dst + used, cap - used, "%s%s", used > 0 ? ", " : "", name);
}

size_t tg_retention_filter(const tg_model_cfg_t **targets, bool *byok, size_t n, char *removed,
                           size_t removed_cap)
{
    if (removed_cap > 0)
        removed[0] = '\0';
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (tg_retention_target_ok(targets[i], byok[i])) {
            targets[kept] = targets[i];
            byok[kept] = byok[i];
            kept++;
        } else if (removed_cap > 0) {
            append_name(removed, removed_cap, targets[i] != NULL ? targets[i]->name : "?");
        }
    }
    for (size_t i = kept; i < n; i++) {
        targets[i] = NULL;
        byok[i] = false;
    }
    return kept;
}

size_t tg_retention_cap(const char *s, size_t len, size_t cap, bool *truncated)
{
    *truncated = len > cap;
    if (len <= cap)
        return len;
    size_t n = cap;
    /* back off continuation bytes, then the lead byte of the cut sequence */
    while (n > 0 && ((unsigned char)s[n] & 0xC0u) == 0x80u)
        n--;
    return n;
}

const char *tg_retention_provider_text(bool zero_retention, const char *text)
{
    if (zero_retention)
        return TG_RETENTION_WITHHELD;
    return text != NULL ? text : "";
}

/* -------------------------------------------------------------------- the call's side */

bool tg_retention_is_zero(const tg_call_t *c)
{
    return c->zero_retention || c->principal.policy.zero_retention;
}

/* The header may come more than once: any "true" turns zero retention on, anything invalid is
 * refused. */
static int header_says(h2o_req_t *req, bool *tighten)
{
    *tighten = false;
    ssize_t i = -1;
    while ((i = h2o_find_header_by_str(&req->headers, H2O_STRLIT(TG_RETENTION_HEADER), i)) != -1) {
        bool t;
        const h2o_iovec_t *v = &req->headers.entries[i].value;
        if (tg_retention_header(v->base, v->len, &t) != 0)
            return TG_EINVALID_REQUEST;
        *tighten |= t;
    }
    return 0;
}

int tg_retention_policy(tg_call_t *c)
{
    c->zero_retention = c->principal.policy.zero_retention;
    bool tighten = false;
    if (c->req != NULL && header_says(c->req, &tighten) != 0) {
        tg_call_set_error(c,
                          "header " TG_RETENTION_HEADER " must be true or false (it can only turn zero "
                          "retention on)",
                          NULL);
        return TG_EINVALID_REQUEST;
    }
    c->zero_retention |= tighten;
    c->rt_by_header = tighten && !c->principal.policy.zero_retention;
    if (c->kind != TG_CALL_CHAT || c->zero_retention || c->req == NULL ||
        !c->cfg->retention.stored_requests || !tg_stored_accepting())
        return TG_STAGE_GO;
    /* a record will be written: keep the client's body (capped) while the request still holds it */
    size_t cap = c->cfg->retention.max_record_bytes;
    const char *body = c->req->entity.base != NULL ? c->req->entity.base : "";
    size_t n = tg_retention_cap(body, c->req->entity.len, cap, &c->rt_request_truncated);
    tg_buf_init(&c->rt_request, cap);
    tg_buf_init(&c->rt_answer, cap);
    if (tg_buf_append(&c->rt_request, body, n) != 0) {
        tg_buf_dispose(&c->rt_request);
        tg_buf_dispose(&c->rt_answer);
        return TG_STAGE_GO; /* out of memory: this call is not stored */
    }
    c->rt_capture = true;
    return TG_STAGE_GO;
}

int tg_retention_route(tg_call_t *c)
{
    if (!tg_retention_is_zero(c))
        return TG_STAGE_GO;
    char removed[64];
    size_t before = c->route.n_targets;
    c->route.n_targets =
        tg_retention_filter(c->route.targets, c->target_byok, c->route.n_targets, removed, sizeof(removed));
    c->rt_removed = (uint32_t)(before - c->route.n_targets);
    const tg_model_cfg_t *cf = c->route.context_fallback;
    if (cf != NULL && !tg_retention_target_ok(cf, false)) {
        /* the larger-context fallback has no BYOK flag of its own: only a zero-retention provider */
        c->route.context_fallback = NULL;
        c->rt_removed++;
    }
    if (c->route.n_targets > 0)
        return TG_STAGE_GO;
    char msg[256]; /* fits err_msg: 52 + 63 + 75 characters at most */
    snprintf(msg, sizeof(msg),
             "zero retention (%s): removed %s; only providers with zero_retention or the tenant's own key "
             "may receive it",
             c->rt_by_header ? "x-tollgate-zero-retention" : "tenant policy", removed);
    tg_call_set_error(c, msg, NULL);
    return TG_EZERO_RETENTION_UNAVAILABLE;
}

void tg_retention_capture(tg_call_t *c, const char *data, size_t len)
{
    if (!c->rt_capture || tg_retention_is_zero(c) || c->rt_answer_truncated)
        return;
    size_t cap = c->cfg->retention.max_record_bytes;
    bool sep = c->stream && c->rt_answer.len > 0; /* a stream's payloads, one per line */
    size_t room = c->rt_answer.len + (sep ? 1 : 0) < cap ? cap - c->rt_answer.len - (sep ? 1 : 0) : 0;
    bool cut;
    size_t n = tg_retention_cap(data, len, room, &cut);
    if ((sep && n > 0 && tg_buf_append(&c->rt_answer, "\n", 1) != 0) ||
        tg_buf_append(&c->rt_answer, data, n) != 0)
        cut = true;
    if (cut)
        c->rt_answer_truncated = true;
}

bool tg_retention_record(tg_call_t *c)
{
    bool queued = false;
    if (c->rt_capture && !tg_retention_is_zero(c)) {
        size_t rl = c->rt_request.len, al = c->rt_answer.len;
        tg_stored_record_t *r = malloc(sizeof(*r) + rl + al);
        if (r != NULL) {
            memset(r, 0, sizeof(*r));
            r->at_unix_ms = tg_unix_now_ms();
            memcpy(r->request_id, c->request_id, sizeof(r->request_id));
            r->tenant_id = c->principal.tenant_id;
            r->key_id = c->principal.key_id;
            tg_str_copy(r->model_requested, sizeof(r->model_requested),
                        json_string_value(json_object_get(c->body, "model")));
            if (c->served != NULL) {
                tg_str_copy(r->model_served, sizeof(r->model_served), c->served->name);
                tg_str_copy(r->provider, sizeof(r->provider), c->served->provider->name);
            }
            r->status = c->status;
            r->stream = c->stream;
            r->prompt_tokens = c->usage.prompt_tokens;
            r->completion_tokens = c->usage.completion_tokens;
            r->request_truncated = c->rt_request_truncated;
            r->response_truncated = c->rt_answer_truncated;
            r->request_len = rl;
            r->response_len = al;
            if (rl > 0)
                memcpy(r->data, c->rt_request.data, rl);
            if (al > 0)
                memcpy(r->data + rl, c->rt_answer.data, al);
            queued = tg_stored_enqueue(r);
        }
    }
    c->rt_capture = false;
    tg_buf_dispose(&c->rt_request);
    tg_buf_dispose(&c->rt_answer);
    return queued;
}

/* ------------------------------------------------------------------------ crash output */

void tg_retention_protect_process(bool allow_core_dumps)
{
    if (allow_core_dumps) {
        TG_LOG(TG_LOG_WARN, "core_dumps_allowed"); /* a crash may write prompts to disk */
        return;
    }
    /* A core file holds the heap: request bodies, answers, provider keys. None is written, and a
     * non-dumpable process cannot be read through ptrace or /proc/PID/mem by other processes of
     * the same user either. A crash still says where on stderr (the sanitizers, the log). */
    struct rlimit rl = {0, 0};
    if (setrlimit(RLIMIT_CORE, &rl) != 0)
        TG_LOG(TG_LOG_WARN, "core_limit_not_set", TG_KV_INT("errno", errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        TG_LOG(TG_LOG_WARN, "dumpable_not_cleared", TG_KV_INT("errno", errno));
}

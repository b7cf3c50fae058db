/*
 * sim_faults.c - the fault table (per model), fault parsing (JSON body and x-sim-fault header),
 * and the per-model request stats.
 *
 * Both tables are process-wide and shared by every worker thread, each behind its own mutex: a
 * request takes each lock once, briefly, which costs far less than the request itself. The
 * fault lookup skips the lock entirely while no fault is set (the common benchmark case).
 */
#include "sim.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define MAX_MODELS   1024
#define MAX_STATUSES 16

typedef struct fault_entry {
    char model[TG_SIM_MODEL_MAX];
    tg_sim_fault_t f;
} fault_entry_t;

typedef struct stat_entry {
    char model[TG_SIM_MODEL_MAX];
    long requests;
    long store_false; /* OpenAI requests with "store": false */
    int nst;
    int status[MAX_STATUSES];
    long count[MAX_STATUSES];
} stat_entry_t;

static pthread_mutex_t g_fault_mu = PTHREAD_MUTEX_INITIALIZER;
static fault_entry_t *g_faults; /* owned by this file, under g_fault_mu */
static size_t g_nfaults;
static atomic_size_t g_nfaults_hint; /* lock-free "is the table empty" check */

static pthread_mutex_t g_stat_mu = PTHREAD_MUTEX_INITIALIZER;
static stat_entry_t *g_stats; /* owned by this file, under g_stat_mu */
static size_t g_nstats;

void tg_sim_fault_defaults(tg_sim_fault_t *f)
{
    memset(f, 0, sizeof(*f));
    f->retry_after_s = -1;
    f->drop_after_chunks = -1;
    f->error_after_chunks = -1;
    f->stream_chunks = TG_SIM_DEFAULT_CHUNKS;
    f->cached_tokens = -1;
}

bool tg_sim_fault_active(const tg_sim_fault_t *f)
{
    tg_sim_fault_t d;
    tg_sim_fault_defaults(&d);
    d.fail_first = f->fail_first;
    return memcmp(&d, f, sizeof(d)) != 0;
}

/* One key=value, shared by the JSON and the header parser. Integers come as text so both paths
 * validate the same way. */
static int set_field(tg_sim_fault_t *f, const char *key, const char *val, bool is_bool, bool bval, char *err,
                     size_t err_cap)
{
    static const struct {
        const char *key;
        size_t off;
        long min, max;
    } ints[] = {
        {"status", offsetof(tg_sim_fault_t, status), 0, 599},
        {"retry_after_s", offsetof(tg_sim_fault_t, retry_after_s), -1, 86400},
        {"fail_first", offsetof(tg_sim_fault_t, fail_first), 0, 1000000},
        {"latency_ms", offsetof(tg_sim_fault_t, latency_ms), 0, TG_SIM_MAX_DELAY_MS},
        {"ttft_ms", offsetof(tg_sim_fault_t, ttft_ms), 0, TG_SIM_MAX_DELAY_MS},
        {"chunk_delay_ms", offsetof(tg_sim_fault_t, chunk_delay_ms), 0, TG_SIM_MAX_DELAY_MS},
        {"drop_after_chunks", offsetof(tg_sim_fault_t, drop_after_chunks), -1, TG_SIM_MAX_CHUNKS},
        {"error_after_chunks", offsetof(tg_sim_fault_t, error_after_chunks), -1, TG_SIM_MAX_CHUNKS},
        {"stream_chunks", offsetof(tg_sim_fault_t, stream_chunks), 1, TG_SIM_MAX_CHUNKS},
        {"chunk_bytes", offsetof(tg_sim_fault_t, chunk_bytes), 0, TG_SIM_MAX_CHUNK_B},
        {"cached_tokens", offsetof(tg_sim_fault_t, cached_tokens), -1, 100000000},
    };
    static const struct {
        const char *key;
        size_t off;
    } bools[] = {
        {"malformed", offsetof(tg_sim_fault_t, malformed)},
        {"hang", offsetof(tg_sim_fault_t, hang)},
        {"echo_error", offsetof(tg_sim_fault_t, echo_error)},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (strcmp(key, ints[i].key) != 0)
            continue;
        char *end = NULL;
        long v = val != NULL ? strtol(val, &end, 10) : 0;
        if (val == NULL || end == val || *end != '\0' || v < ints[i].min || v > ints[i].max) {
            snprintf(err, err_cap, "%s must be an integer in [%ld, %ld]", key, ints[i].min, ints[i].max);
            return TG_EINVALID_REQUEST;
        }
        *(int *)((char *)f + ints[i].off) = (int)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        if (strcmp(key, bools[i].key) != 0)
            continue;
        if (!is_bool && val != NULL) {
            is_bool = strcmp(val, "true") == 0 || strcmp(val, "false") == 0 || strcmp(val, "1") == 0 ||
                      strcmp(val, "0") == 0;
            bval = strcmp(val, "true") == 0 || strcmp(val, "1") == 0;
        }
        if (!is_bool) {
            snprintf(err, err_cap, "%s must be a boolean", key);
            return TG_EINVALID_REQUEST;
        }
        *(bool *)((char *)f + bools[i].off) = bval;
        return 0;
    }
    if (strcmp(key, "error") == 0) {
        if (val == NULL || (strcmp(val, "context_length") != 0 && strcmp(val, "none") != 0)) {
            snprintf(err, err_cap, "error must be \"context_length\" or \"none\"");
            return TG_EINVALID_REQUEST;
        }
        f->context_length = strcmp(val, "context_length") == 0;
        return 0;
    }
    snprintf(err, err_cap, "unknown fault key \"%.60s\"", key);
    return TG_EINVALID_REQUEST;
}

int tg_sim_fault_from_json(json_t *obj, tg_sim_fault_t *f, char *model, size_t model_cap, char *err,
                           size_t err_cap)
{
    tg_sim_fault_defaults(f);
    if (!json_is_object(obj)) {
        snprintf(err, err_cap, "fault must be a JSON object");
        return TG_EINVALID_REQUEST;
    }
    const char *key;
    json_t *v;
    bool have_model = false;
    json_object_foreach(obj, key, v)
    {
        char num[32];
        int rc;
        if (strcmp(key, "model") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= model_cap) {
                snprintf(err, err_cap, "model must be a non-empty string shorter than %zu bytes", model_cap);
                return TG_EINVALID_REQUEST;
            }
            if (model != NULL)
                memcpy(model, json_string_value(v), json_string_length(v) + 1);
            have_model = true;
            continue;
        }
        if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
            rc = set_field(f, key, num, false, false, err, err_cap);
        } else if (json_is_boolean(v)) {
            rc = set_field(f, key, NULL, true, json_is_true(v), err, err_cap);
        } else if (json_is_string(v) && strcmp(key, "error") == 0) {
            rc = set_field(f, key, json_string_value(v), false, false, err, err_cap);
        } else if (json_is_null(v) && strcmp(key, "error") == 0) {
            rc = 0;
        } else {
            rc = set_field(f, key, NULL, false, false, err, err_cap);
        }
        if (rc != 0)
            return rc;
    }
    if (model != NULL && !have_model) {
        snprintf(err, err_cap, "model is required");
        return TG_EINVALID_REQUEST;
    }
    return 0;
}

int tg_sim_fault_from_header(const char *s, size_t len, tg_sim_fault_t *f, char *err, size_t err_cap)
{
    tg_sim_fault_defaults(f);
    size_t i = 0;
    while (i < len) {
        char key[32], val[64];
        size_t kl = 0, vl = 0;
        while (i < len && (s[i] == ' ' || s[i] == ','))
            i++;
        if (i == len)
            break;
        while (i < len && s[i] != '=' && s[i] != ',' && s[i] != ' ' && kl < sizeof(key) - 1)
            key[kl++] = s[i++];
        key[kl] = '\0';
        while (i < len && s[i] == ' ')
            i++;
        if (i == len || s[i] != '=') {
            snprintf(err, err_cap, "x-sim-fault: expected key=value near \"%.30s\"", key);
            return TG_EINVALID_REQUEST;
        }
        i++;
        while (i < len && s[i] == ' ')
            i++;
        while (i < len && s[i] != ',' && s[i] != ' ' && vl < sizeof(val) - 1)
            val[vl++] = s[i++];
        val[vl] = '\0';
        if (i < len && s[i] != ',' && s[i] != ' ') {
            snprintf(err, err_cap, "x-sim-fault: value of %s is too long", key);
            return TG_EINVALID_REQUEST;
        }
        int rc = set_field(f, key, val, false, false, err, err_cap);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static json_t *fault_json(const tg_sim_fault_t *f)
{
    return json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:b,s:b,s:b,s:s?,s:i,s:i,s:i}", "status", f->status,
                     "retry_after_s", f->retry_after_s, "fail_first", f->fail_first, "latency_ms",
                     f->latency_ms, "ttft_ms", f->ttft_ms, "chunk_delay_ms", f->chunk_delay_ms,
                     "drop_after_chunks", f->drop_after_chunks, "error_after_chunks", f->error_after_chunks,
                     "malformed", f->malformed, "hang", f->hang, "echo_error", f->echo_error, "error",
                     f->context_length ? "context_length" : NULL, "stream_chunks", f->stream_chunks,
                     "chunk_bytes", f->chunk_bytes, "cached_tokens", f->cached_tokens);
}

int tg_sim_faults_set(const char *model, const tg_sim_fault_t *f)
{
    int rc = 0;
    pthread_mutex_lock(&g_fault_mu);
    size_t i;
    for (i = 0; i < g_nfaults; i++)
        if (strcmp(g_faults[i].model, model) == 0)
            break;
    if (i == g_nfaults) {
        if (g_nfaults == MAX_MODELS) {
            rc = TG_ETOO_LARGE;
            goto out;
        }
        if (g_faults == NULL && (g_faults = calloc(MAX_MODELS, sizeof(*g_faults))) == NULL) {
            rc = TG_ENOMEM;
            goto out;
        }
        snprintf(g_faults[i].model, sizeof(g_faults[i].model), "%s", model);
        g_nfaults++;
    }
    g_faults[i].f = *f;
    atomic_store(&g_nfaults_hint, g_nfaults);
out:
    pthread_mutex_unlock(&g_fault_mu);
    return rc;
}

void tg_sim_faults_clear(void)
{
    pthread_mutex_lock(&g_fault_mu);
    g_nfaults = 0;
    atomic_store(&g_nfaults_hint, 0);
    pthread_mutex_unlock(&g_fault_mu);
}

bool tg_sim_faults_take(const char *model, tg_sim_fault_t *f)
{
    if (atomic_load_explicit(&g_nfaults_hint, memory_order_relaxed) == 0)
        return false;
    bool found = false;
    pthread_mutex_lock(&g_fault_mu);
    for (size_t i = 0; i < g_nfaults; i++) {
        if (strcmp(g_faults[i].model, model) != 0)
            continue;
        *f = g_faults[i].f;
        found = true;
        /* fail_first N: this request uses one of the N; the last use removes the fault */
        if (g_faults[i].f.fail_first > 0 && --g_faults[i].f.fail_first == 0) {
            g_faults[i] = g_faults[--g_nfaults];
            atomic_store(&g_nfaults_hint, g_nfaults);
        }
        break;
    }
    pthread_mutex_unlock(&g_fault_mu);
    return found;
}

json_t *tg_sim_faults_json(void)
{
    json_t *faults = json_object();
    pthread_mutex_lock(&g_fault_mu);
    for (size_t i = 0; faults != NULL && i < g_nfaults; i++)
        json_object_set_new(faults, g_faults[i].model, fault_json(&g_faults[i].f));
    pthread_mutex_unlock(&g_fault_mu);
    return json_pack("{s:o}", "faults", faults ? faults : json_object());
}

/* The model's entry, added when new; NULL past MAX_MODELS. Under g_stat_mu. */
static stat_entry_t *stat_entry(const char *model)
{
    size_t i;
    for (i = 0; i < g_nstats; i++)
        if (strcmp(g_stats[i].model, model) == 0)
            return &g_stats[i];
    /* a bounded table: past MAX_MODELS distinct names the rest are not counted */
    if (g_nstats == MAX_MODELS ||
        (g_stats == NULL && (g_stats = calloc(MAX_MODELS, sizeof(*g_stats))) == NULL))
        return NULL;
    memset(&g_stats[i], 0, sizeof(g_stats[i]));
    snprintf(g_stats[i].model, sizeof(g_stats[i].model), "%s", model);
    g_nstats++;
    return &g_stats[i];
}

void tg_sim_stats_store_false(const char *model)
{
    pthread_mutex_lock(&g_stat_mu);
    stat_entry_t *e = stat_entry(model);
    if (e != NULL)
        e->store_false++;
    pthread_mutex_unlock(&g_stat_mu);
}

void tg_sim_stats_record(const char *model, int status)
{
    pthread_mutex_lock(&g_stat_mu);
    stat_entry_t *e = stat_entry(model);
    if (e == NULL)
        goto out;
    e->requests++;
    int k;
    for (k = 0; k < e->nst; k++)
        if (e->status[k] == status)
            break;
    if (k == e->nst) {
        if (e->nst == MAX_STATUSES)
            goto out;
        e->status[k] = status;
        e->count[k] = 0;
        e->nst++;
    }
    e->count[k]++;
out:
    pthread_mutex_unlock(&g_stat_mu);
}

json_t *tg_sim_stats_json(void)
{
    json_t *models = json_object();
    pthread_mutex_lock(&g_stat_mu);
    for (size_t i = 0; models != NULL && i < g_nstats; i++) {
        json_t *by = json_object();
        for (int k = 0; by != NULL && k < g_stats[i].nst; k++) {
            char key[16];
            snprintf(key, sizeof(key), "%d", g_stats[i].status[k]);
            json_object_set_new(by, key, json_integer(g_stats[i].count[k]));
        }
        json_object_set_new(models, g_stats[i].model,
                            json_pack("{s:I,s:I,s:o}", "requests", (json_int_t)g_stats[i].requests,
                                      "store_false", (json_int_t)g_stats[i].store_false, "by_status",
                                      by ? by : json_object()));
    }
    pthread_mutex_unlock(&g_stat_mu);
    return json_pack("{s:o}", "models", models ? models : json_object());
}

void tg_sim_stats_reset(void)
{
    pthread_mutex_lock(&g_stat_mu);
    g_nstats = 0;
    pthread_mutex_unlock(&g_stat_mu);
}

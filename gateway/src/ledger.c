/*
 * ledger.c - RESERVE, SETTLE, the credit headers and the settlement writer (ledger.h).
 *
 * Three parts:
 *   accounts  process-wide lease accounts (billing/lease.h), one per tenant, in shards each under
 *             its own mutex (so one tenant's account is serialised, tenants of other shards run in
 *             parallel); accounts stay for the process's life (one per tenant seen: ~1 KiB each);
 *   the call  RESERVE / SETTLE / headers, on the call's loop; lease opens, extends and exact
 *             reservations through the worker's async pool;
 *   writer    one thread with its own blocking connection: journal, group commit, lease closes,
 *             expiry, partitions, price reloads.
 */
#define _GNU_SOURCE
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "call_internal.h"
#include "clock.h"
#include "deadline.h"
#include "err.h"
#include "estimate.h"
#include "batch.h"
#include "log.h"
#include "metrics.h"
#include "maplog.h"
#include "prices.h"
#include "row.h"
#include "rowarena.h"

/* accounts by tenant: a lookup walks one shard's list, and each node it passes is a cache miss (the
 * accounts are shared by the loop threads): 4096 shards keep a list under one node on average for
 * the tenants of a busy instance (1000 tenants over 256 shards cost ~0.4 us per call in perf) */
#define LEDGER_SHARDS_LOG2   12
#define LEDGER_SHARDS        (1u << LEDGER_SHARDS_LOG2)
#define LEDGER_BATCH_MAX     65536    /* records per settlement batch: 2 s (commit_ms) at 30k req/s */
#define LEDGER_EXPIRE_MS     5000     /* tollgate_leases_expire() period */
#define LEDGER_PARTITIONS_MS 86400000 /* tollgate_usage_partitions() period */
#define LEDGER_IDLE_WAIT_MS  100      /* the writer looks at notifications at least this often */
#define LEDGER_RETRY_MS      500      /* after a failed commit */
#define LEDGER_STOP_MS       5000
#define LEDGER_ROW_BLOCK     ((size_t)1 << 20) /* the queued records' arena blocks (~4000 records) */

/* ------------------------------------------------------------------------------ state */

typedef struct tg_ledger_acct {
    struct tg_ledger_acct *next;
    tg_lease_acct_t a;
    int64_t known_avail; /* the wallet's available credits as the database last said (-1: unknown) */
    tg_ledger_call_t *waiters;
    int64_t last_ms;  /* the last call that looked it up (monotonic ms): an idle account is freed */
    uint32_t extends; /* extends in flight (their answers hold the account's address) */
} ledger_acct_t;

typedef struct shard {
    alignas(64) pthread_mutex_t mu; /* a line of its own: two threads locking neighbours do not share it */
    ledger_acct_t *head;
} shard_t;

typedef struct item {
    char *row;        /* a usage record (a stage row with its newline), NULL for a close */
    int64_t close_id; /* a lease to close behind the records before it */
} item_t;

static struct {
    atomic_bool on;
    char instance[80];
    tg_lease_opts_t opts;
    shard_t shards[LEDGER_SHARDS];
    /* The queue to the writer, FIFO (mu): a record is appended to the journal as it is queued,
     * under the same lock, so the journal's order is the queue's. */
    pthread_mutex_t mu;
    pthread_cond_t cv, cv_done;
    item_t *ring;
    size_t head, count;
    uint64_t queued, done; /* items queued; items committed or given up, in queue order */
    size_t queue_max;      /* billing.queue_max */
    bool overflow;         /* a record went to the journal only (the queue was full): see enqueue */
    bool running, stopping;
    /* The journal's two sides (billing/README.md, "The journal"):
     * records go to side `cur`; the other side holds nothing queued at or after position
     * `sealed`, so once `done` reaches it (and the start's replay is committed) it is truncated,
     * without stopping the writers of `cur`, and the sides swap. */
    tg_maplog_t jl[2]; /* the sides, appended through their mappings (gateway/core/maplog.h) */
    char jpath[2][4096];
    int cur;
    uint64_t sealed;
    bool dirty[2]; /* the side may hold something */
    pthread_t thread;
    char *conninfo;
    bool fsync_each;
    uint32_t commit_ms; /* billing.commit_ms */
    char **replay;      /* journal lines found at start (malloc'd each) */
    tg_rowarena_t rows; /* the queued records (mu): item_t.row points into it */
    size_t n_replay;
} g = {.jl = {{.fd = -1}, {.fd = -1}}};

static _Atomic uint64_t g_batch_seq;
static _Atomic uint64_t g_acct_made; /* accounts created by this process */

bool tg_ledger_on(void)
{
    return atomic_load_explicit(&g.on, memory_order_relaxed);
}

const char *tg_ledger_instance(void)
{
    return g.instance;
}

static shard_t *shard_of(int64_t tenant)
{
    return &g.shards[(uint64_t)tenant * 0x9E3779B97F4A7C15ull >> (64 - LEDGER_SHARDS_LOG2)];
}

/* The account of `tenant` in its shard s (locked), NULL if there is none. */
static ledger_acct_t *acct_find(shard_t *s, int64_t tenant)
{
    for (ledger_acct_t *a = s->head; a != NULL; a = a->next)
        if (a->a.tenant_id == tenant)
            return a;
    return NULL;
}

/* The account of `tenant`, created on first use; the shard is locked on return (NULL: no memory,
 * unlocked). */
static ledger_acct_t *acct_lock(int64_t tenant)
{
    shard_t *s = shard_of(tenant);
    pthread_mutex_lock(&s->mu);
    int64_t now = (int64_t)tg_now_ms();
    ledger_acct_t *a = acct_find(s, tenant);
    if (a != NULL) {
        a->last_ms = now;
        return a;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    tg_lease_acct_init(&a->a, tenant);
    /* the keys of its lease opens (lease/<instance>/<tenant>/<n>) start past those of any earlier
     * account of this tenant in this process (accounts_sweep frees idle ones): a reused key would
     * answer with that account's ended lease */
    a->a.asks = (uint64_t)atomic_fetch_add(&g_acct_made, 1) << 32;
    a->known_avail = -1;
    a->last_ms = now;
    a->next = s->head;
    s->head = a;
    return a;
}

static void acct_unlock(ledger_acct_t *a)
{
    pthread_mutex_unlock(&shard_of(a->a.tenant_id)->mu);
}

/* ------------------------------------------------------------------------- the writer queue */

/*
 * Queues a record or a close. Called with the account's shard locked, so an account's close
 * queued after its records is behind them (FIFO), and on the call's loop before the answer's last
 * byte is handed to h2o: a served answer's charge is in the journal before the client can have it
 * all (a kill -9 after that replays it at the next start). Never blocks on the database.
 *
 * The record is appended to the journal's current side (a copy into its mapped page cache: no
 * system call, gateway/core/maplog.h) and its queue copy goes into the row arena
 * (gateway/core/rowarena.h: no allocation per record, and none freed across threads; the writer
 * releases it once committed), both under the queue's lock, which keeps the journal's order the
 * queue's and a side from being truncated while it is written.
 *
 * The queue is bounded (billing.queue_max): when it is full (the database away for long under
 * load) a record goes to the journal only (the writer reads the journal back once the queue has
 * drained), and the journal is then kept whole until the writer has committed it (`overflow`):
 * memory stays bounded, the charge waits on disk. A close that finds the queue full is dropped (its lease
 * expires and gives back what it did not charge).
 */
static void enqueue(const char *line, size_t len, int64_t close_id)
{
    pthread_mutex_lock(&g.mu);
    if (g.running && g.count >= g.queue_max && line != NULL && g.jl[g.cur].fd >= 0) {
        g.dirty[g.cur] = true;
        g.overflow = true;
        int e = tg_maplog_append(&g.jl[g.cur], line, len);
        pthread_mutex_unlock(&g.mu);
        if (e == 0) {
            tg_metrics_add("tollgate_ledger_overflow_total", "", 1);
        } else {
            tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
            TG_LOG(TG_LOG_ERROR, "ledger_journal_write_failed", TG_KV_INT("errno", -e));
        }
        return;
    }
    char *row = NULL;
    if (g.running && g.count < g.queue_max && line != NULL &&
        (row = tg_rowarena_put(&g.rows, line, len)) == NULL) {
        pthread_mutex_unlock(&g.mu);
        tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
        TG_LOG(TG_LOG_ERROR, "ledger_record_nomem", TG_KV_INT("bytes", len));
        return;
    }
    if (!g.running || g.count >= g.queue_max) {
        pthread_mutex_unlock(&g.mu);
        tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
        TG_LOG(TG_LOG_ERROR, "ledger_queue_full", TG_KV_INT("close", close_id));
        return;
    }
    int jerr = 0;
    if (row != NULL) {
        g.dirty[g.cur] = true;
        if (g.jl[g.cur].fd >= 0)
            jerr = tg_maplog_append(&g.jl[g.cur], line, len);
    }
    item_t *it = &g.ring[(g.head + g.count) % g.queue_max];
    it->row = row;
    it->close_id = close_id;
    /* the writer waits for a first item, or gathers for billing.commit_ms: wake it for the first,
     * or for a full batch, not for each */
    if (g.count++ == 0 || g.count == LEDGER_BATCH_MAX)
        pthread_cond_signal(&g.cv);
    g.queued++;
    pthread_mutex_unlock(&g.mu);
    if (jerr != 0)
        TG_LOG(TG_LOG_ERROR, "ledger_journal_write_failed", TG_KV_INT("errno", -jerr));
}

/* What a loop thread keeps of the ledger goes with the thread: its price snapshot, its receiver. */
static pthread_key_t t_key;
static pthread_once_t t_key_once = PTHREAD_ONCE_INIT;
static __thread tg_prices_t *t_snap;
static __thread h2o_multithread_receiver_t *t_rx;

static void thread_drop(void *unused)
{
    (void)unused;
    tg_prices_unref(t_snap);
    t_snap = NULL;
    free(t_rx); /* its queue went with the loop */
    t_rx = NULL;
}

static void thread_key_init(void)
{
    if (pthread_key_create(&t_key, thread_drop) != 0)
        t_key = (pthread_key_t)-1;
}

static void thread_attach(void)
{
    pthread_once(&t_key_once, thread_key_init);
    if (t_key != (pthread_key_t)-1)
        pthread_setspecific(t_key, (void *)1);
}

/* ------------------------------------------------------------------------ lease I/O (loop) */

typedef struct open_ctx {
    ledger_acct_t *acct;
    tg_worker_t *worker;
    int64_t asked_ms;
} open_ctx_t;

static void drive(ledger_acct_t *ac, tg_worker_t *w, tg_ledger_call_t **wake, int *wake_err);

static void wake_all(tg_ledger_call_t *list, int err)
{
    while (list != NULL) {
        tg_ledger_call_t *l = list;
        list = l->next_waiter;
        l->next_waiter = NULL;
        l->wake_err = err;
        h2o_multithread_send_message(l->rx, &l->wake);
    }
}

static void on_open(void *arg, const PGresult *res, const char *errmsg)
{
    open_ctx_t *o = arg;
    ledger_acct_t *ac = o->acct;
    int64_t now = (int64_t)tg_now_ms();
    shard_t *s = shard_of(ac->a.tenant_id);
    pthread_mutex_lock(&s->mu);
    int err = 0;
    if (res != NULL && PQntuples(res) == 1) {
        if (!PQgetisnull(res, 0, 3))
            ac->known_avail = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        int64_t amount = PQgetisnull(res, 0, 1) ? 0 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        if (!PQgetisnull(res, 0, 0) && amount > 0)
            tg_lease_granted(&ac->a, &g.opts, strtoll(PQgetvalue(res, 0, 0), NULL, 10), amount,
                             o->asked_ms + (int64_t)g.opts.ttl_ms, now);
        else
            tg_lease_refused(&ac->a, &g.opts, now);
    } else {
        TG_LOG(TG_LOG_WARN, "ledger_lease_open_failed", TG_KV_INT("tenant_id", ac->a.tenant_id),
               TG_KV_STR("error", errmsg != NULL ? errmsg : "no answer"));
        tg_lease_failed(&ac->a);
        err = TG_EDB_UNAVAILABLE;
    }
    tg_ledger_call_t *wake = ac->waiters;
    ac->waiters = NULL;
    int wake_err = 0;
    tg_ledger_call_t *more = NULL;
    if (err == 0)
        drive(ac, o->worker, &more, &wake_err);
    pthread_mutex_unlock(&s->mu);
    wake_all(wake, err);
    wake_all(more, wake_err);
    free(o);
}

typedef struct extend_ctx {
    ledger_acct_t *acct;
    int64_t lease_id;
    int64_t asked_ms;
} extend_ctx_t;

static void on_extend(void *arg, const PGresult *res, const char *errmsg)
{
    extend_ctx_t *x = arg;
    (void)errmsg;
    bool ok = res != NULL && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
    shard_t *s = shard_of(x->acct->a.tenant_id);
    pthread_mutex_lock(&s->mu);
    tg_lease_extended(&x->acct->a, x->lease_id, ok ? x->asked_ms + (int64_t)g.opts.ttl_ms : 0);
    x->acct->extends--;
    pthread_mutex_unlock(&s->mu);
    free(x);
}

/*
 * Runs what the engine asks, with the shard locked: opens and extends through the worker's pool
 * (answered on this loop), closes into the writer's queue behind the records already queued. A
 * query the pool refuses at once fails the open: the waiters (returned in *wake) fail too.
 */
static void drive(ledger_acct_t *ac, tg_worker_t *w, tg_ledger_call_t **wake, int *wake_err)
{
    int64_t now = (int64_t)tg_now_ms();
    /* what each lease holds before the engine may drop it: a closed lease's unspent part goes back
     * to the wallet's available credits (the header's view) */
    tg_lease_t before[TG_LEASE_SLOTS];
    memcpy(before, ac->a.lease, sizeof(before));
    tg_lease_action_t act;
    for (int guard = 0; guard < 4 * TG_LEASE_SLOTS; guard++) {
        tg_lease_action_kind_t k = tg_lease_next(&ac->a, &g.opts, now, &act);
        if (k == TG_LEASE_NONE)
            return;
        if (k == TG_LEASE_CLOSE) {
            for (int i = 0; i < TG_LEASE_SLOTS; i++)
                if (before[i].id == act.lease_id && ac->known_avail >= 0)
                    ac->known_avail += before[i].amount - before[i].charged;
            enqueue(NULL, 0, act.lease_id);
            continue;
        }
        char p[7][24];
        const char *v[7];
        if (k == TG_LEASE_OPEN) {
            open_ctx_t *o = malloc(sizeof(*o));
            int rc = TG_ENOMEM;
            if (o != NULL) {
                o->acct = ac;
                o->worker = w;
                o->asked_ms = now;
                snprintf(p[0], sizeof(p[0]), "%" PRId64, ac->a.tenant_id);
                snprintf(p[1], sizeof(p[1]), "%" PRIu64, act.seq);
                snprintf(p[2], sizeof(p[2]), "%" PRId64, act.amount);
                snprintf(p[3], sizeof(p[3]), "%" PRId64, g.opts.min_slice);
                snprintf(p[4], sizeof(p[4]), "%u", g.opts.share_pct);
                snprintf(p[5], sizeof(p[5]), "%u", g.opts.ttl_ms);
                const char *vals[7] = {p[0], g.instance, p[1], p[2], p[3], p[4], p[5]};
                rc = tg_pgpool_query(w->pg,
                                     "SELECT lease_id, amount, expires_at, available FROM "
                                     "tollgate_lease_open($1::bigint, $2, $3, $4::bigint, $5::bigint, "
                                     "$6::int, $7::int)",
                                     7, vals, on_open, o);
            }
            if (rc != 0) {
                free(o);
                tg_lease_failed(&ac->a);
                tg_ledger_call_t *l = ac->waiters;
                ac->waiters = NULL;
                while (l != NULL) { /* onto the caller's list */
                    tg_ledger_call_t *n = l->next_waiter;
                    l->next_waiter = *wake;
                    *wake = l;
                    l = n;
                }
                *wake_err = TG_EDB_UNAVAILABLE;
                return; /* asked again by the next reservation */
            }
            continue;
        }
        /* EXTEND */
        extend_ctx_t *x = malloc(sizeof(*x));
        if (x == NULL) {
            tg_lease_extended(&ac->a, act.lease_id, 0);
            continue;
        }
        x->acct = ac;
        x->lease_id = act.lease_id;
        x->asked_ms = now;
        ac->extends++;
        snprintf(p[0], sizeof(p[0]), "%" PRId64, act.lease_id);
        snprintf(p[1], sizeof(p[1]), "%u", g.opts.ttl_ms);
        v[0] = p[0];
        v[1] = p[1];
        if (tg_pgpool_query(w->pg, "SELECT tollgate_lease_extend($1::bigint, $2::int)", 2, v, on_extend, x) !=
            0) {
            free(x);
            ac->extends--;
            tg_lease_extended(&ac->a, act.lease_id, 0);
        }
    }
}

/* ------------------------------------------------------------------------------ wake-ups */

/* One receiver per worker loop, registered on its first wait (t_rx, above). */

static void on_wake(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        tg_ledger_call_t *l = H2O_STRUCT_FROM_MEMBER(tg_ledger_call_t, wake, m);
        tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, led, l);
        l->waiting = false;
        if (!l->settled)
            tg_call_resume(c, TG_STAGE_RESERVE, 0);
        tg_call_unref(c); /* the wait's */
    }
}

static h2o_multithread_receiver_t *thread_rx(tg_worker_t *w)
{
    if (t_rx == NULL) {
        t_rx = calloc(1, sizeof(*t_rx));
        if (t_rx == NULL)
            return NULL;
        h2o_multithread_register_receiver(w->ctx.queue, t_rx, on_wake);
        thread_attach();
    }
    return t_rx;
}

/* ------------------------------------------------------------------------------- RESERVE */

static int64_t unix_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The price snapshot, without the global lock and reference count per request: each thread keeps
 * a reference and swaps it when the writer has published a new one (g_price_gen). */
static _Atomic uint64_t g_price_gen = 1;
static __thread uint64_t t_snap_gen;

static tg_prices_t *prices_current(void)
{
    uint64_t gen = atomic_load_explicit(&g_price_gen, memory_order_acquire);
    if (t_snap_gen != gen || t_snap == NULL) {
        tg_prices_unref(t_snap);
        t_snap = tg_prices_acquire();
        t_snap_gen = gen;
        thread_attach();
    }
    return t_snap;
}

static const tg_model_cfg_t *slot_model(const tg_call_t *c, size_t i)
{
    return i < c->route.n_targets ? c->route.targets[i] : c->route.context_fallback;
}

static bool slot_byok(const tg_call_t *c, size_t i)
{
    return i < c->route.n_targets && c->target_byok[i];
}

/* Prices every target the call may be served by and estimates the most it may cost. */
static int price_call(tg_call_t *c)
{
    tg_ledger_call_t *l = &c->led;
    tg_prices_t *snap = prices_current();
    int64_t at = unix_now_us();
    l->prompt_est = tg_estimate_prompt_tokens(c->body);
    int64_t most = 0;
    int rc = 0;
    for (size_t i = 0; i < TG_LEDGER_PRICE_SLOTS; i++) {
        const tg_model_cfg_t *m = slot_model(c, i);
        if (m == NULL)
            continue;
        const tg_price_t *p = snap != NULL ? tg_prices_at(snap, m->name, at) : NULL;
        if (p == NULL) {
            char msg[200];
            snprintf(msg, sizeof(msg), "model '%s' has no price in effect and cannot be billed", m->name);
            tg_call_set_error(c, msg, "model");
            rc = TG_EMODEL_NOT_PRICED;
            break;
        }
        l->price[i].id = p->id;
        l->price[i].unit = p->unit;
        uint64_t out = tg_estimate_output_tokens(c->body, m->max_output_tokens);
        tg_tokens_t t = {
            .input =
                (int64_t)(l->prompt_est < (uint64_t)TG_COST_MAX_TOKENS ? l->prompt_est : TG_COST_MAX_TOKENS),
            .cached = 0,
            .output = (int64_t)(out < (uint64_t)TG_COST_MAX_TOKENS ? out : TG_COST_MAX_TOKENS)};
        /* the reservation prices every input token at the dearer of the two input rates */
        tg_unit_prices_t u = p->unit;
        if (u.cached_input > u.input)
            u.input = u.cached_input;
        int64_t cost = 0;
        if (tg_cost_compute(&u, &t, slot_byok(c, i), &cost) != 0)
            cost = INT64_MAX / 4;
        if (cost > most)
            most = cost;
    }
    l->amount = most;
    return rc;
}

static void on_exact(void *arg, const PGresult *res, const char *errmsg)
{
    tg_call_t *c = arg;
    tg_ledger_call_t *l = &c->led;
    l->asking = false;
    int64_t id = 0, amount = 0;
    bool answered = res != NULL && PQntuples(res) == 1;
    if (answered) {
        if (!PQgetisnull(res, 0, 0))
            id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        amount = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        ledger_acct_t *ac = acct_lock(c->principal.tenant_id);
        if (ac != NULL) {
            if (!PQgetisnull(res, 0, 3))
                ac->known_avail = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
            acct_unlock(ac);
        }
    }
    if (id > 0 && amount > 0) {
        tg_lease_hold_exact(&l->hold, id, amount);
        if (l->settled) /* the call ended meanwhile: the per-request lease goes back */
            enqueue(NULL, 0, id);
        else
            l->reserved = true;
    } else if (answered) {
        l->exact_refused = true;
    } else {
        TG_LOG(TG_LOG_WARN, "ledger_exact_failed", TG_KV_STR("error", errmsg != NULL ? errmsg : "no answer"));
        l->wake_err = TG_EDB_UNAVAILABLE;
    }
    if (!l->settled)
        tg_call_resume(c, TG_STAGE_RESERVE, 0);
    tg_call_unref(c);
}

static int insufficient(tg_call_t *c)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "the wallet does not hold enough credits for this request (it may cost up to %" PRId64
             " micro-credits)",
             c->led.amount);
    tg_call_set_error(c, msg, NULL);
    return TG_EINSUFFICIENT_CREDITS;
}

int tg_ledger_reserve(tg_call_t *c)
{
    tg_ledger_call_t *l = &c->led;
    if (l->wake_err != 0) {
        int e = l->wake_err;
        l->wake_err = 0;
        return e;
    }
    if (l->reserved)
        return TG_STAGE_GO; /* an exact reservation was granted */
    if (l->exact_refused)
        return insufficient(c);
    if (!l->started) {
        l->started = true;
        int rc = price_call(c);
        if (rc != 0)
            return rc;
        if (l->amount <= 0) {
            l->reserved = true; /* free to run: nothing to hold */
            l->hold.amount = 0;
            return TG_STAGE_GO;
        }
    }
    ledger_acct_t *ac = acct_lock(c->principal.tenant_id);
    if (ac == NULL)
        return TG_ENOMEM;
    int64_t now = (int64_t)tg_now_ms();
    int r = tg_lease_reserve(&ac->a, &g.opts, l->amount, now, &l->hold);
    tg_ledger_call_t *wake = NULL;
    int wake_err = 0;
    if (r == TG_LEASE_HELD) {
        l->reserved = true;
        drive(ac, c->worker, &wake, &wake_err);
        acct_unlock(ac);
        wake_all(wake, wake_err);
        return TG_STAGE_GO;
    }
    if (r == TG_LEASE_WAIT) {
        tg_metrics_add("tollgate_ledger_lease_waits_total", "", 1);
        h2o_multithread_receiver_t *rx = thread_rx(c->worker);
        if (rx == NULL) {
            acct_unlock(ac);
            return TG_ENOMEM;
        }
        l->rx = rx;
        l->waiting = true;
        tg_call_ref(c); /* the wait's, until the wake */
        l->next_waiter = ac->waiters;
        ac->waiters = l;
        drive(ac, c->worker, &wake, &wake_err);
        acct_unlock(ac);
        wake_all(wake, wake_err);
        return TG_STAGE_PENDING;
    }
    acct_unlock(ac);
    if (r != TG_LEASE_EXACT)
        return TG_EINTERNAL;
    /* The wallet is too small to lease: this request alone, exactly, in PostgreSQL. */
    char tenant[24], amount[24], ttl[16], key[TG_REQUEST_ID_LEN + 8];
    snprintf(tenant, sizeof(tenant), "%" PRId64, c->principal.tenant_id);
    snprintf(amount, sizeof(amount), "%" PRId64, l->amount);
    snprintf(ttl, sizeof(ttl), "%u", g.opts.ttl_ms);
    snprintf(key, sizeof(key), "x/%s", c->request_id);
    const char *v[6] = {tenant, g.instance, key, amount, ttl, c->request_id};
    tg_call_ref(c);
    if (tg_pgpool_query(
            c->worker->pg,
            "SELECT lease_id, amount, expires_at, available FROM tollgate_lease_open($1::bigint, $2, "
            "$3, $4::bigint, $4::bigint, 100, $5::int, $6)",
            6, v, on_exact, c) != 0) {
        tg_call_unref(c);
        return TG_EDB_UNAVAILABLE;
    }
    l->asking = true;
    return TG_STAGE_PENDING;
}

/* -------------------------------------------------------------------------------- SETTLE */

static int served_slot(const tg_call_t *c)
{
    if (c->served == NULL)
        return -1;
    for (size_t i = 0; i < c->route.n_targets; i++)
        if (c->route.targets[i] == c->served && slot_byok(c, i) == c->served_byok)
            return (int)i;
    for (size_t i = 0; i < c->route.n_targets; i++)
        if (c->route.targets[i] == c->served)
            return (int)i;
    if (c->route.context_fallback == c->served)
        return TG_LEDGER_PRICE_SLOTS - 1;
    return -1;
}

typedef struct usage_fig {
    bool billed, estimated;
    tg_tokens_t t;
    int64_t cost;
} usage_fig_t;

static int64_t clamp_tokens(int64_t v)
{
    return v < 0 ? 0 : v > TG_COST_MAX_TOKENS ? TG_COST_MAX_TOKENS : v;
}

/* What the call costs, from what the serving target reported (settle.c has already turned a cut
 * stream's delivered text into completion tokens, usage_estimated). */
static void figure(tg_call_t *c, int slot, usage_fig_t *f)
{
    memset(f, 0, sizeof(*f));
    if (slot < 0)
        return;
    f->t.input = clamp_tokens(c->usage.present ? c->usage.prompt_tokens : (int64_t)c->led.prompt_est);
    f->t.cached = clamp_tokens(c->usage.present ? c->usage.cached_tokens : 0);
    if (f->t.cached > f->t.input)
        f->t.cached = f->t.input;
    f->t.output = clamp_tokens(c->usage.completion_tokens);
    f->estimated = c->usage_estimated || !c->usage.present;
    bool failed = c->pipe.err != 0 || c->mid_stream_failed || c->status >= 400 || c->stream_rc != 0;
    /* an answer that failed with no completion tokens costs nothing; one the client never got a
     * byte of (status 0: gone before the answer) neither */
    if ((failed && f->t.output == 0) || (!c->committed && c->status != 200)) {
        f->billed = false;
        return;
    }
    f->billed = true;
    if (tg_cost_compute(&c->led.price[slot].unit, &f->t, c->served_byok, &f->cost) != 0)
        f->cost = 0;
}

/* One usage record as a stage COPY text row (billing/row.h) in buf (TG_ROW_MAX bytes); its
 * length, 0 if it does not fit. */
static size_t record_row(tg_call_t *c, int slot, const usage_fig_t *f, int64_t charge, char *buf)
{
    const tg_model_cfg_t *m = slot >= 0                ? slot_model(c, (size_t)slot)
                              : c->route.n_targets > 0 ? c->route.targets[0]
                                                       : NULL;
    const tg_ledger_price_t *p = &c->led.price[slot >= 0 ? slot : 0];
    const char *e = c->pipe.err != 0       ? tg_err_code(c->pipe.err)
                    : c->mid_stream_failed ? "stream_broken"
                                           : NULL;
    tg_usage_row_t r = {.tenant_id = c->principal.tenant_id,
                        .request_id = c->request_id,
                        .created_us = unix_now_us(),
                        .key_id = c->principal.key_id,
                        .model = m != NULL ? m->name : "-",
                        .provider = m != NULL ? m->provider->name : "-",
                        .byok = slot >= 0 && c->served_byok,
                        .estimated = f->estimated,
                        .billed = f->billed,
                        .input = f->t.input,
                        .output = f->t.output,
                        .cached = f->t.cached,
                        .price_id = p->id,
                        .price_input = p->unit.input,
                        .price_output = p->unit.output,
                        .price_cached = p->unit.cached_input,
                        .platform_fee = p->unit.byok_fee,
                        .cost = f->cost,
                        .charge = charge,
                        .lease_id = c->led.hold.lease_id,
                        .latency_ms = (int64_t)((tg_now_us() - c->start_us) / 1000),
                        .attempts = (int64_t)tg_plan_attempt_count(&c->plan),
                        .status = c->status != 0 ? c->status : 499,
                        .error = e};
    return tg_usage_row_format(&r, buf, TG_ROW_MAX);
}

void tg_ledger_settle(tg_call_t *c)
{
    tg_ledger_call_t *l = &c->led;
    if (l->settled)
        return;
    l->settled = true;
    if (!l->reserved) /* never held anything (refused, or still waiting: the wake drops it) */
        return;
    int slot = served_slot(c);
    usage_fig_t f;
    figure(c, slot, &f);
    int64_t charge = 0;
    ledger_acct_t *ac = acct_lock(c->principal.tenant_id);
    if (ac == NULL) {
        TG_LOG(TG_LOG_ERROR, "ledger_settle_nomem", TG_KV_STR("request_id", c->request_id));
        return;
    }
    if (l->hold.amount > 0)
        charge = tg_lease_settle(&ac->a, &l->hold, f.billed ? f.cost : 0, (int64_t)tg_now_ms());
    else
        charge = 0;
    char line[TG_ROW_MAX];
    size_t len = record_row(c, slot, &f, charge, line);
    if (len > 0)
        enqueue(line, len, 0); /* before any close the engine asks next */
    else
        TG_LOG(TG_LOG_ERROR, "ledger_record_too_long", TG_KV_STR("request_id", c->request_id));
    if (ac->known_avail >= 0 && l->hold.exact && l->hold.amount > charge)
        ac->known_avail += l->hold.amount - charge; /* the per-request lease closes with the batch */
    tg_ledger_call_t *wake = NULL;
    int wake_err = 0;
    drive(ac, c->worker, &wake, &wake_err);
    acct_unlock(ac);
    wake_all(wake, wake_err);
}

/* ------------------------------------------------------------------------------- headers */

static bool call_cost(tg_call_t *c, int64_t *cost)
{
    if (!c->led.reserved)
        return false;
    usage_fig_t f;
    figure(c, served_slot(c), &f);
    *cost = f.billed ? f.cost : 0;
    return true;
}

bool tg_ledger_usage_cost(tg_call_t *c, int64_t *cost)
{
    if (!tg_ledger_on() || !c->led.reserved)
        return false;
    int slot = served_slot(c);
    if (slot < 0)
        return false;
    tg_tokens_t t = {.input = clamp_tokens(c->usage.prompt_tokens),
                     .cached = clamp_tokens(c->usage.cached_tokens),
                     .output = clamp_tokens(c->usage.completion_tokens)};
    if (t.cached > t.input)
        t.cached = t.input;
    return tg_cost_compute(&c->led.price[slot].unit, &t, c->served_byok, cost) == 0;
}

static void add_i64(h2o_req_t *req, const char *name, int64_t v)
{
    char s[24];
    int n = snprintf(s, sizeof(s), "%" PRId64, v);
    h2o_iovec_t val = h2o_strdup(&req->pool, s, (size_t)n);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, val.base, val.len);
}

void tg_ledger_headers(tg_call_t *c, int status, bool whole)
{
    if (!tg_ledger_on() || c->req == NULL || c->principal.tenant_id == 0)
        return;
    (void)status;
    int64_t cost = 0;
    bool known = call_cost(c, &cost);
    if (whole && c->kind == TG_CALL_CHAT)
        add_i64(c->req, "x-tollgate-cost", known ? cost : 0);
    int64_t remaining = -1;
    shard_t *s = shard_of(c->principal.tenant_id);
    pthread_mutex_lock(&s->mu);
    ledger_acct_t *ac = acct_find(s, c->principal.tenant_id);
    if (ac != NULL && ac->known_avail >= 0) {
        remaining = ac->known_avail + tg_lease_free(&ac->a, &g.opts, (int64_t)tg_now_ms());
        /* this call's own hold counts as released, less what it costs */
        if (c->led.reserved && !c->led.hold.settled && !c->led.hold.exact)
            remaining += c->led.hold.amount;
        if (c->led.reserved && c->led.hold.exact && !c->led.hold.settled)
            remaining += c->led.hold.amount;
        if (known)
            remaining -= cost;
    }
    pthread_mutex_unlock(&s->mu);
    if (remaining >= 0)
        add_i64(c->req, "x-tollgate-credits-remaining", remaining);
}

int tg_ledger_splice_cost(tg_buf_t *chunk, int64_t cost)
{
    /* a key of the chunk's JSON (inside a string every quote is escaped, so this cannot match
     * text); the provider may put blanks after the colon */
    static const char key[] = "\"usage\":";
    char *p = memmem(chunk->data, chunk->len, key, sizeof(key) - 1);
    if (p == NULL)
        return 0;
    size_t at = (size_t)(p - chunk->data) + sizeof(key) - 1;
    while (at < chunk->len && (chunk->data[at] == ' ' || chunk->data[at] == '\t'))
        at++;
    if (at >= chunk->len || chunk->data[at] != '{')
        return 0; /* "usage":null */
    at++;
    size_t rest = at;
    while (rest < chunk->len &&
           (chunk->data[rest] == ' ' || chunk->data[rest] == '\t' || chunk->data[rest] == '\n'))
        rest++;
    char ins[40];
    int n = snprintf(ins, sizeof(ins), "\"cost\":%" PRId64 "%s", cost,
                     rest < chunk->len && chunk->data[rest] == '}' ? "" : ",");
    size_t len = chunk->len;
    if (tg_buf_append(chunk, ins, (size_t)n) != 0) /* grows; then the tail moves after the insert */
        return TG_ENOMEM;
    memmove(chunk->data + at + (size_t)n, chunk->data + at, len - at);
    memcpy(chunk->data + at, ins, (size_t)n);
    return 0;
}

/* -------------------------------------------------------------------------------- writer */

static PGconn *writer_connect(void)
{
    PGconn *db = PQconnectdb(g.conninfo);
    if (PQstatus(db) != CONNECTION_OK) {
        PQfinish(db);
        return NULL;
    }
    PGresult *r = PQexec(db, "LISTEN tollgate_prices");
    PQclear(r);
    r = PQexec(db, "SELECT tollgate_settle_stage_open()"); /* this session's stage (commit) */
    bool staged = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!staged)
        TG_LOG(TG_LOG_WARN, "ledger_stage_failed", TG_KV_STR("error", PQerrorMessage(db)));
    PQclear(r);
    if (!staged) {
        PQfinish(db);
        return NULL;
    }
    return db;
}

static bool exec_ok(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        TG_LOG(TG_LOG_WARN, "ledger_job_failed", TG_KV_STR("sql", sql),
               TG_KV_STR("error", PQerrorMessage(db)));
    PQclear(r);
    return ok;
}

static void reload_prices(PGconn *db)
{
    tg_prices_t *t = NULL;
    tg_error_t err = {0};
    if (tg_prices_load(db, &t, &err) == 0) {
        tg_prices_publish(t);
        atomic_fetch_add_explicit(&g_price_gen, 1, memory_order_release);
        TG_LOG(TG_LOG_INFO, "prices_loaded", TG_KV_INT("rows", t->n));
    } else {
        TG_LOG(TG_LOG_WARN, "prices_load_failed", TG_KV_STR("error", err.detail));
    }
}

/* One batch: its records, its closes; a fresh batch key every try (a record that landed already is
 * skipped by its primary key, so a retry after a lost answer charges nothing twice). The records
 * are stage rows (record_row), COPYed into the session's stage and settled by
 * tollgate_settle_staged in one transaction; a journal written by an older gateway holds JSON
 * records, which go through tollgate_settle's jsonb form (the caller never mixes the two in one
 * batch). true: committed; commit_rc says how a failure should be taken. */
enum { COMMIT_OK = 0, COMMIT_RETRY = 1, COMMIT_REFUSED = 2 };
static int commit_rc;
static char commit_err[512]; /* the last failure's words (a ROLLBACK clears the connection's) */

/* A data or integrity error (SQLSTATE classes 22, 23) will not pass on a retry. */
static int failure_rc(const PGresult *r)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return st != NULL && (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0) ? COMMIT_REFUSED
                                                                                  : COMMIT_RETRY;
}

/* Runs sql; false (and commit_rc set) unless it ends with `want`. */
static bool step(PGconn *db, PGresult **out, const char *sql, int n, const char *const *v,
                 ExecStatusType want)
{
    PGresult *r = n > 0 ? PQexecParams(db, sql, n, NULL, v, NULL, NULL, 0) : PQexec(db, sql);
    bool ok = PQresultStatus(r) == want;
    if (!ok) {
        commit_rc = failure_rc(r);
        PQclear(r);
        return false;
    }
    if (out != NULL)
        *out = r;
    else
        PQclear(r);
    return true;
}

#define LEDGER_COPY_CHUNK ((size_t)256 << 10) /* bytes handed to libpq at a time */

/* Row i of a COPY, appended to `out` (0, or an error: the COPY is then abandoned). */
typedef int (*copy_row_fn)(tg_buf_t *out, size_t i, const void *ctx);

/* n rows by the COPY statement `sql`, handed to libpq in chunks; false: the COPY took nothing
 * (commit_rc says why). */
static bool copy_rows(PGconn *db, const char *sql, size_t n, copy_row_fn row, const void *ctx)
{
    if (!step(db, NULL, sql, 0, NULL, PGRES_COPY_IN))
        return false;
    tg_buf_t chunk;
    tg_buf_init(&chunk, 2 * LEDGER_COPY_CHUNK);
    bool sent = true;
    for (size_t i = 0; sent && i < n; i++) {
        sent = row(&chunk, i, ctx) == 0;
        if (sent && (chunk.len >= LEDGER_COPY_CHUNK || i + 1 == n)) {
            sent = PQputCopyData(db, chunk.data, (int)chunk.len) == 1;
            tg_buf_reset(&chunk);
        }
    }
    tg_buf_dispose(&chunk);
    bool ok = PQputCopyEnd(db, sent ? NULL : "tollgate: the batch could not be sent") == 1;
    PGresult *r;
    while ((r = PQgetResult(db)) != NULL) { /* the COPY's own result, then NULL */
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            ok = false;
            commit_rc = failure_rc(r);
        } else if (strtoull(PQcmdTuples(r), NULL, 10) != n) {
            ok = false; /* never seen: a COPY that took other than every row */
            commit_rc = COMMIT_REFUSED;
        }
        PQclear(r);
    }
    if (!sent && ok)
        commit_rc = COMMIT_RETRY;
    return ok && sent;
}

/* The stage's rows: the lines as they are (each with its newline). */
static int stage_row(tg_buf_t *out, size_t i, const void *ctx)
{
    char *const *lines = ctx;
    return tg_buf_append(out, lines[i], strlen(lines[i]));
}

typedef struct direct_rows {
    char *const *lines;
    const char *key;
    const tg_batch_t *batch;
} direct_rows_t;

/* usage_records' rows: the lines with their charge keys under the batch's key */
static int record_copy_row(tg_buf_t *out, size_t i, const void *ctx)
{
    const direct_rows_t *d = ctx;
    return tg_batch_copy_row(out, d->lines[i], d->key);
}

/* the rollup stage's rows */
static int day_copy_row(tg_buf_t *out, size_t i, const void *ctx)
{
    const direct_rows_t *d = ctx;
    return tg_batch_day_row(out, &d->batch->days[i]);
}

/*
 * A batch of fresh records (queued by this process and not tried before: none of it can be in
 * the database) settled without the stage: COPY straight into usage_records, the rollup rows into
 * the rollup stage, then tollgate_settle_direct with the per-lease sums; the sums and the rollup
 * are taken from the same rows in one pass (billing/batch.h; migrations 0013 and 0014). About half
 * the database's time per record of the stage's way. false: nothing of it is committed, and the
 * caller sends it through the stage, which settles whatever this refused (a late charge, a record
 * already there); *r holds the function's answer on success.
 */
static bool commit_direct(PGconn *db, PGresult **r, char **lines, size_t n, const char *key,
                          const char *closes)
{
    tg_batch_t b;
    if (tg_batch_prepare(&b, lines, n) != 0)
        return false;
    tg_buf_t a[TG_BATCH_COLS];
    bool ok = true;
    for (int i = 0; i < TG_BATCH_COLS; i++) {
        tg_buf_init(&a[i], (size_t)16 << 20);
        ok = ok && tg_batch_array(&a[i], b.leases, b.n_leases, (tg_batch_col_t)i) == 0;
    }
    char records[24];
    snprintf(records, sizeof(records), "%zu", n);
    const char *v[8] = {key, a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, records, closes};
    direct_rows_t d = {.lines = lines, .key = key, .batch = &b};
    ok = ok && step(db, NULL, TG_BATCH_BEGIN_SQL, 0, NULL, PGRES_COMMAND_OK);
    ok = ok && copy_rows(db, TG_BATCH_COPY_SQL, n, record_copy_row, &d);
    ok = ok && copy_rows(db, TG_BATCH_ROLLUP_COPY_SQL, b.n_days, day_copy_row, &d);
    ok = ok && step(db, r, TG_BATCH_SETTLE_SQL, 8, v, PGRES_TUPLES_OK);
    ok = ok && step(db, NULL, "COMMIT", 0, NULL, PGRES_COMMAND_OK);
    for (int i = 0; i < TG_BATCH_COLS; i++)
        tg_buf_dispose(&a[i]);
    tg_batch_dispose(&b);
    if (!ok) {
        PQclear(*r);
        *r = NULL;
        tg_str_copy(commit_err, sizeof(commit_err), PQerrorMessage(db));
        TG_LOG(TG_LOG_INFO, "ledger_direct_fallback", TG_KV_INT("records", n),
               TG_KV_STR("error", commit_err));
    }
    if (!ok && PQstatus(db) == CONNECTION_OK && PQtransactionStatus(db) != PQTRANS_IDLE)
        PQclear(PQexec(db, "ROLLBACK"));
    return ok;
}

static bool commit(PGconn *db, char **lines, size_t n, const int64_t *closes, size_t n_closes, bool fresh)
{
    tg_buf_t arr, cl;
    tg_buf_init(&arr, (size_t)64 << 20);
    tg_buf_init(&cl, (size_t)1 << 20);
    bool legacy = n > 0 && lines[0][0] == '{';
    commit_rc = COMMIT_RETRY;
    bool ok = tg_buf_append(&cl, "{", 1) == 0;
    for (size_t i = 0; ok && i < n_closes; i++) {
        char s[24];
        int k = snprintf(s, sizeof(s), "%s%" PRId64, i > 0 ? "," : "", closes[i]);
        ok = tg_buf_append(&cl, s, (size_t)k) == 0;
    }
    ok = ok && tg_buf_append(&cl, "}", 2) == 0;
    if (legacy) { /* the records as one JSON array */
        ok = ok && tg_buf_append(&arr, "[", 1) == 0;
        for (size_t i = 0; ok && i < n; i++)
            ok = (i == 0 || tg_buf_append(&arr, ",", 1) == 0) &&
                 tg_buf_append(&arr, lines[i], strlen(lines[i])) == 0;
        ok = ok && tg_buf_append(&arr, "]", 2) == 0; /* with its NUL */
    }
    char key[160];
    snprintf(key, sizeof(key), "%s/%" PRIu64, g.instance, atomic_fetch_add(&g_batch_seq, 1) + 1);
    PGresult *r = NULL;
    bool direct = false;
    if (ok && fresh && !legacy && n > 0) {
        direct = commit_direct(db, &r, lines, n, key, cl.data);
        if (!direct && PQstatus(db) == CONNECTION_OK) /* the stage settles what it refused */
            tg_metrics_add("tollgate_ledger_direct_fallbacks_total", "", 1);
        else if (!direct)
            ok = false; /* the database went away: commit_rc says retry */
    }
    if (direct) {
        /* settled */
    } else if (ok && legacy) {
        const char *v[3] = {key, arr.data, cl.data};
        ok = step(db, &r, "SELECT recorded, charged FROM tollgate_settle($1, $2::jsonb, $3::bigint[])", 3, v,
                  PGRES_TUPLES_OK);
    } else if (ok) {
        const char *v[2] = {key, cl.data};
        ok = step(db, NULL, "BEGIN", 0, NULL, PGRES_COMMAND_OK);
        ok = ok &&
             (n == 0 || copy_rows(db, "COPY pg_temp.tollgate_settle_stage FROM STDIN", n, stage_row, lines));
        ok = ok && step(db, &r, "SELECT recorded, charged FROM tollgate_settle_staged($1, $2::bigint[])", 2,
                        v, PGRES_TUPLES_OK);
        ok = ok && step(db, NULL, "COMMIT", 0, NULL, PGRES_COMMAND_OK);
    }
    if (ok) {
        commit_rc = COMMIT_OK;
        tg_metrics_add("tollgate_ledger_records_total", "", (double)strtoll(PQgetvalue(r, 0, 0), NULL, 10));
        tg_metrics_add("tollgate_ledger_batches_total", "", 1);
    } else {
        tg_str_copy(commit_err, sizeof(commit_err), PQerrorMessage(db));
        TG_LOG(TG_LOG_WARN, "ledger_settle_failed", TG_KV_INT("records", n), TG_KV_STR("error", commit_err));
        if (PQstatus(db) == CONNECTION_OK && PQtransactionStatus(db) != PQTRANS_IDLE)
            PQclear(PQexec(db, "ROLLBACK")); /* the failed batch's transaction, stage and all */
    }
    PQclear(r);
    tg_buf_dispose(&arr);
    tg_buf_dispose(&cl);
    return ok;
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    dl.tv_sec += ms / 1000 + dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &dl);
}

static void register_metrics(void)
{
    tg_metrics_register("tollgate_ledger_records_total", "usage records committed by tollgate_settle",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_ledger_direct_fallbacks_total",
                        "fresh batches tollgate_settle_direct refused, settled through the stage instead",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_ledger_batches_total", "settlement batches committed", TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_ledger_dropped_total",
                        "settlements dropped (a close past a full writer queue, a record the database "
                        "refuses, a failed journal write)",
                        TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_ledger_records_total", "", 0);
    tg_metrics_add("tollgate_ledger_batches_total", "", 0);
    tg_metrics_add("tollgate_ledger_dropped_total", "", 0);
    tg_metrics_register(
        "tollgate_ledger_overflow_total",
        "settlements written to the journal only (the writer queue full), committed from it later",
        TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_ledger_overflow_total", "", 0);
    tg_metrics_register("tollgate_ledger_lease_waits_total",
                        "reservations that waited for a lease to be granted (a tenant's first, one past "
                        "its leases' room, or a renewal that came late)",
                        TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_ledger_lease_waits_total", "", 0);
    tg_metrics_register("tollgate_ledger_accounts",
                        "tenants' lease accounts held in memory (idle ones are freed)", TG_METRIC_GAUGE);
    tg_metrics_set("tollgate_ledger_accounts", "", 0);
}

/*
 * After a commit (with g.mu held): the journal side that is not being written is truncated once
 * everything in it is committed (every item queued before the sides last swapped, and the start's
 * replay), and then the sides swap if the other has something. The truncation runs without the
 * lock (nobody writes that side) and is not fsync'd: a stale side after a machine crash replays
 * records that are committed, which the settlement skips.
 */
static void journal_rotate(bool replay_done)
{
    if (g.overflow) /* records are in the journal only: it stays whole until they are committed */
        return;
    int old = 1 - g.cur;
    if (g.dirty[old] && replay_done && g.done >= g.sealed) {
        pthread_mutex_unlock(&g.mu);
        int e = g.jl[old].fd < 0 ? 0 : tg_maplog_truncate(&g.jl[old]);
        bool cut = e == 0;
        if (!cut)
            TG_LOG(TG_LOG_ERROR, "ledger_journal_truncate_failed", TG_KV_INT("errno", -e));
        pthread_mutex_lock(&g.mu);
        if (cut)
            g.dirty[old] = false;
    }
    if (!g.dirty[old] && g.dirty[g.cur]) {
        g.cur = old;
        g.sealed = g.queued;
    }
}

/*
 * Closes the leases of tenants that went quiet (a lease idles out only when a call drives the
 * engine: without this it would keep its credits until it expires) and frees their accounts (on
 * the writer thread, every LEDGER_EXPIRE_MS): no lease (so no hold against one), no open or extend in flight
 * (their answers hold the account's address), no waiter, nothing needed, and no lookup for two lease lives.
 * Memory then follows the tenants that are active, not every tenant the process has seen. A later call makes
 * a new account, which knows the wallet again from its first lease's answer. Exact holds live in
 * their calls, not in the account. Returns the accounts left.
 */
static size_t accounts_sweep(int64_t now)
{
    int64_t quiet = 2 * (int64_t)g.opts.ttl_ms;
    size_t left = 0;
    for (size_t i = 0; i < LEDGER_SHARDS; i++) {
        shard_t *s = &g.shards[i];
        pthread_mutex_lock(&s->mu);
        for (ledger_acct_t **p = &s->head; *p != NULL;) {
            ledger_acct_t *a = *p;
            int64_t id, unspent = 0;
            while ((id = tg_lease_take_closable(&a->a, &g.opts, now, &unspent)) != 0) {
                if (a->known_avail >= 0)
                    a->known_avail += unspent;
                enqueue(NULL, 0, id); /* behind the account's records: every hold on it is settled */
            }
            if (!tg_lease_idle(&a->a) || a->extends > 0 || a->a.need != 0 || a->waiters != NULL ||
                now - a->last_ms < quiet) {
                p = &a->next;
                left++;
                continue;
            }
            *p = a->next;
            free(a);
        }
        pthread_mutex_unlock(&s->mu);
    }
    return left;
}

static int read_journal(const char *path);

/* The writer's: true (and the overflow cleared) once records went to the journal only and the
 * queue has drained. A record that overflows after this is in the files read next or queued. */
static bool overflow_drained(void)
{
    pthread_mutex_lock(&g.mu);
    bool drained = g.overflow && g.count == 0;
    if (drained)
        g.overflow = false;
    pthread_mutex_unlock(&g.mu);
    return drained;
}

/* The batch's records are in the journal's page cache; with billing.journal_fsync they reach the
 * disk before the commit begins (a machine crash then loses nothing that a client was charged
 * for in the database). Both sides: the batch may straddle a swap. */
static void journal_sync(void)
{
    for (int i = 0; i < 2; i++)
        if (g.jl[i].fd >= 0 && tg_maplog_sync(&g.jl[i]) != 0)
            TG_LOG(TG_LOG_ERROR, "ledger_journal_fsync_failed", TG_KV_INT("errno", errno));
}

/* The journal's replay (at start), in runs of one kind up to a batch; a batch the database refuses
 * as data is tried one record at a time, and a record refused by itself is dropped (logged and
 * counted). true: everything replayed. */
static bool replay_journal(PGconn *db, char **replay, size_t n_replay, size_t *replayed)
{
    bool ok = true;
    while (ok && *replayed < n_replay) {
        char **run = replay + *replayed;
        size_t k = 1;
        while (k < LEDGER_BATCH_MAX && *replayed + k < n_replay && (run[k][0] == '{') == (run[0][0] == '{'))
            k++;
        ok = commit(db, run, k, NULL, 0, false);
        if (!ok && commit_rc == COMMIT_REFUSED) {
            ok = true;
            for (size_t i = 0; ok && i < k; i++) {
                if (commit(db, run + i, 1, NULL, 0, false))
                    continue;
                ok = commit_rc == COMMIT_REFUSED;
                if (ok) {
                    TG_LOG(TG_LOG_ERROR, "ledger_record_refused", TG_KV_STR("error", commit_err));
                    tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
                }
            }
        }
        if (ok) {
            TG_LOG(TG_LOG_INFO, "ledger_journal_replayed", TG_KV_INT("records", k));
            for (size_t i = 0; i < k; i++)
                free(run[i]);
            *replayed += k;
        }
    }
    return ok;
}

/* One batch; a batch the database refuses as data is committed record by record, and a record
 * refused by itself is logged and dropped (its hold's lease expires), so one bad record does not
 * hold up the others. The records committed or dropped leave lines[] (n shrinks); true: all of
 * it, closes included, is done. */
static bool commit_batch(PGconn *db, char **lines, size_t *n, const int64_t *closes, size_t n_closes,
                         bool fresh)
{
    if (commit(db, lines, *n, closes, n_closes, fresh)) {
        for (size_t i = 0; i < *n; i++)
            tg_rowarena_release(lines[i]);
        *n = 0;
        return true;
    }
    if (commit_rc != COMMIT_REFUSED)
        return false;
    size_t i = 0;
    for (; i < *n; i++) {
        bool one = commit(db, lines + i, 1, NULL, 0, false);
        if (!one && commit_rc != COMMIT_REFUSED)
            break; /* the database went away: the rest waits for the retry */
        if (!one) {
            TG_LOG(TG_LOG_ERROR, "ledger_record_refused", TG_KV_STR("error", commit_err));
            tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
        }
        tg_rowarena_release(lines[i]);
    }
    memmove(lines, lines + i, (*n - i) * sizeof(char *));
    *n -= i;
    if (*n > 0)
        return false;
    if (commit(db, NULL, 0, closes, n_closes, false))
        return true;
    if (commit_rc == COMMIT_REFUSED) /* a close the database refuses: its lease expires */
        TG_LOG(TG_LOG_ERROR, "ledger_close_refused", TG_KV_STR("error", commit_err));
    return commit_rc == COMMIT_REFUSED;
}

/*
 * The writer. Each turn: take what queued (up to a batch; under load it gathers billing.commit_ms
 * first, so that a tenant's requests share a charge entry), fsync the journal, commit the start's
 * replay and the batch, each with one settlement; then truncate the journal side that holds
 * nothing uncommitted. A failed commit keeps the batch (it is journaled) and is tried again, while
 * the queue keeps filling. Between batches it runs the periodic jobs and reloads prices on a
 * notification.
 */
static void *writer_main(void *arg)
{
    (void)arg;
    PGconn *db = NULL;
    char **lines = calloc(LEDGER_BATCH_MAX, sizeof(char *));
    int64_t *closes = calloc(LEDGER_BATCH_MAX, sizeof(int64_t));
    size_t n = 0, n_closes = 0; /* the batch not yet committed (journaled already) */
    bool tried = false;         /* a commit of the batch failed: its records may be in (commit_direct) */
    uint64_t taken = 0;         /* queue items in the batch, for `done` */
    uint64_t next_expire = 0, next_parts = 0;
    char **replay = g.replay; /* the journal found at start */
    size_t n_replay = g.n_replay, replayed = 0;
    g.replay = NULL;
    pthread_mutex_lock(&g.mu);
    for (;;) {
        if (n == 0 && n_closes == 0 && replayed >= n_replay) {
            if (g.count == 0 && !g.stopping)
                timed_wait(&g.cv, &g.mu, LEDGER_IDLE_WAIT_MS);
            if (g.count == 0 && g.stopping)
                break;
        }
        if (n == 0 && n_closes == 0 && g.count > 0 && !g.stopping) {
            /* gather: a tenant's requests of the next few ms share one charge entry, one lease
             * update and one wallet update (the per-batch cost of a tenant dwarfs a record's) */
            uint64_t until = tg_now_ms() + g.commit_ms;
            while (!g.stopping && g.count < LEDGER_BATCH_MAX && tg_now_ms() < until)
                timed_wait(&g.cv, &g.mu, (int)(until - tg_now_ms()) + 1);
        }
        while (g.count > 0 && n < LEDGER_BATCH_MAX && n_closes < LEDGER_BATCH_MAX) {
            item_t it = g.ring[g.head];
            g.head = (g.head + 1) % g.queue_max;
            g.count--;
            taken++;
            if (it.row != NULL)
                lines[n++] = it.row;
            else
                closes[n_closes++] = it.close_id;
        }
        pthread_mutex_unlock(&g.mu);
        if (n > 0 && g.fsync_each)
            journal_sync();
        if (db == NULL || PQstatus(db) != CONNECTION_OK) {
            PQfinish(db);
            db = writer_connect();
            if (db != NULL) {
                reload_prices(db); /* a change may have been missed while away */
                next_expire = 0;
            }
        }
        bool ok = db != NULL;
        if (ok) {
            uint64_t now = tg_now_ms();
            if (now >= next_parts && exec_ok(db, "SELECT tollgate_usage_partitions(now(), 3)"))
                next_parts = now + LEDGER_PARTITIONS_MS;
            if (now >= next_expire) {
                exec_ok(db, "SELECT tollgate_leases_expire()");
                tg_metrics_set("tollgate_ledger_accounts", "", (double)accounts_sweep((int64_t)now));
                next_expire = now + LEDGER_EXPIRE_MS;
            }
            if (PQconsumeInput(db)) {
                bool changed = false;
                PGnotify *nt;
                while ((nt = PQnotifies(db)) != NULL) {
                    changed = true;
                    PQfreemem(nt);
                }
                if (changed)
                    reload_prices(db);
            }
            ok = replay_journal(db, replay, n_replay, &replayed);
            if (ok && (n > 0 || n_closes > 0)) {
                ok = commit_batch(db, lines, &n, closes, n_closes, !tried);
                if (ok)
                    n_closes = 0;
                tried = !ok; /* what is left may be in the database: the stage's way from now on */
            }
            if (ok && replayed >= n_replay && overflow_drained()) {
                /* records went to the journal only while the queue was full: now that it is
                 * drained, the journal itself is committed (what is in the database already is
                 * skipped), as at a start; then the sides may be truncated again */
                free(replay);
                replay = NULL;
                n_replay = replayed = 0;
                for (int i = 0; i < 2; i++)
                    if (read_journal(g.jpath[i]) != 0)
                        TG_LOG(TG_LOG_ERROR, "ledger_journal_read_failed", TG_KV_STR("path", g.jpath[i]));
                replay = g.replay;
                n_replay = g.n_replay;
                g.replay = NULL;
                g.n_replay = 0;
                TG_LOG(TG_LOG_INFO, "ledger_overflow_replay", TG_KV_INT("records", n_replay));
            }
        }
        pthread_mutex_lock(&g.mu);
        if (ok) {
            g.done += taken;
            taken = 0;
            pthread_cond_broadcast(&g.cv_done);
            journal_rotate(replayed >= n_replay);
        } else {
            if (g.stopping)
                break; /* stopping: the journal keeps it for the next start */
            timed_wait(&g.cv, &g.mu, LEDGER_RETRY_MS);
        }
    }
    g.done += taken;
    while (g.count > 0) { /* stopped with the database away: the journal keeps them */
        tg_rowarena_release(g.ring[g.head].row);
        g.head = (g.head + 1) % g.queue_max;
        g.count--;
    }
    pthread_cond_broadcast(&g.cv_done);
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < n; i++)
        tg_rowarena_release(lines[i]);
    for (size_t i = replayed; i < n_replay; i++)
        free(replay[i]);
    free(replay);
    free(lines);
    free(closes);
    PQfinish(db);
    return NULL;
}

/* -------------------------------------------------------------------------------- start */

/* A journal line written whole: a stage row with all its fields and its newline (a crash
 * mid-write leaves the last line short of its newline; a machine crash may leave NUL bytes), or a
 * JSON record of an older gateway. */
static bool journal_line_whole(const char *line, size_t len)
{
    if (len < 2 || line[len - 1] != '\n' || strlen(line) != len)
        return false;
    if (line[0] == '{') {
        json_t *j = json_loads(line, 0, NULL);
        bool whole = json_is_object(j);
        json_decref(j);
        return whole;
    }
    size_t fields = 1;
    for (size_t i = 0; i < len; i++)
        fields += line[i] == '\t';
    return fields == TG_ROW_FIELDS;
}

/* The records of one journal side, kept with their newline, into g.replay. The file is opened
 * anew: a reader of its own (the side's descriptor shares its offset with the appends). */
static int read_journal(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        return TG_EINTERNAL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t room = g.n_replay;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[0] == '\0')
            break; /* the zeros that follow a side's data up to its allocated size (maplog.h) */
        if (!journal_line_whole(line, (size_t)len)) {
            if (len > 1 || line[0] != '\n')
                TG_LOG(TG_LOG_WARN, "ledger_journal_line_skipped", TG_KV_INT("bytes", len));
            continue;
        }
        if (g.n_replay == room) {
            room = room ? room * 2 : 256;
            char **r = realloc(g.replay, room * sizeof(char *));
            if (r == NULL) {
                rc = TG_ENOMEM;
                break;
            }
            g.replay = r;
        }
        if ((g.replay[g.n_replay] = strdup(line)) == NULL) {
            rc = TG_ENOMEM;
            break;
        }
        g.n_replay++;
    }
    free(line);
    fclose(f);
    return rc;
}

int tg_ledger_start(const char *conninfo, const tg_config_t *cfg)
{
    if (cfg == NULL || !cfg->billing.enabled || conninfo == NULL)
        return 0;
    register_metrics();
    for (size_t i = 0; i < LEDGER_SHARDS; i++)
        pthread_mutex_init(&g.shards[i].mu, NULL);
    pthread_mutex_init(&g.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cv, &ca);
    pthread_cond_init(&g.cv_done, &ca);
    pthread_condattr_destroy(&ca);

    /* instance id: host, pid, start time and random bits: never reused by another process */
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)tg_now_us();
    snprintf(g.instance, sizeof(g.instance), "%.40s-%d-%" PRId64 "-%08x", host, (int)getpid(), tg_unix_now(),
             rnd);

    tg_lease_opts_default(&g.opts, cfg->billing.lease_credits);
    g.opts.ttl_ms = cfg->billing.lease_ttl_ms;
    if (g.opts.drain_before_ms >= g.opts.ttl_ms / 2) {
        g.opts.drain_before_ms = g.opts.ttl_ms / 4;
        g.opts.renew_before_ms = g.opts.ttl_ms / 12;
        g.opts.extend_before_ms = g.opts.ttl_ms / 6;
        g.opts.idle_ms = g.opts.ttl_ms / 3;
    }
    g.fsync_each = cfg->billing.journal_fsync;
    g.commit_ms = cfg->billing.commit_ms;

    /* the journal's two sides: the configured path, and the same with ".alt" */
    g.queue_max = cfg->billing.queue_max;
    if (snprintf(g.jpath[0], sizeof(g.jpath[0]), "%s", cfg->billing.journal_path) >=
            (int)sizeof(g.jpath[0]) ||
        snprintf(g.jpath[1], sizeof(g.jpath[1]), "%s.alt", cfg->billing.journal_path) >=
            (int)sizeof(g.jpath[1]))
        return TG_EINTERNAL;
    /* the first side is locked before anything is read: one process per journal */
    int e = tg_maplog_open(&g.jl[0], g.jpath[0], true);
    e = e == 0 ? tg_maplog_open(&g.jl[1], g.jpath[1], false) : e;
    for (int i = 0; i < 2 && e == 0; i++) {
        size_t before = g.n_replay;
        int rc = read_journal(g.jpath[i]);
        if (rc != 0)
            return rc;
        e = tg_maplog_cut(&g.jl[i]); /* after the read, which reports a torn last line */
        g.dirty[i] = g.n_replay > before || g.jl[i].len > 0;
    }
    if (e != 0) {
        TG_LOG(TG_LOG_ERROR, "ledger_journal_open_failed", TG_KV_STR("path", g.jpath[0]),
               TG_KV_INT("errno", -e));
        return TG_EINTERNAL;
    }
    if (g.n_replay > 0)
        TG_LOG(TG_LOG_INFO, "ledger_journal_found", TG_KV_INT("records", g.n_replay));

    /* the first price snapshot before the first request (the writer reloads it on changes) */
    PGconn *db = PQconnectdb(conninfo);
    if (PQstatus(db) == CONNECTION_OK)
        reload_prices(db);
    else
        TG_LOG(TG_LOG_WARN, "prices_not_loaded", TG_KV_STR("why", "database unreachable at start"));
    PQfinish(db);

    g.conninfo = strdup(conninfo);
    g.ring = calloc(g.queue_max, sizeof(item_t));
    tg_rowarena_init(&g.rows, LEDGER_ROW_BLOCK);
    if (g.conninfo == NULL || g.ring == NULL)
        return TG_ENOMEM;
    g.running = true;
    if (pthread_create(&g.thread, NULL, writer_main, NULL) != 0) {
        g.running = false;
        return TG_ENOMEM;
    }
    atomic_store(&g.on, true);
    TG_LOG(TG_LOG_INFO, "ledger_started", TG_KV_STR("instance", g.instance),
           TG_KV_INT("lease_credits", g.opts.slice));
    return 0;
}

void tg_ledger_flush(void)
{
    pthread_mutex_lock(&g.mu);
    uint64_t target = g.queued;
    while (g.running && g.done < target) {
        pthread_cond_signal(&g.cv);
        pthread_cond_wait(&g.cv_done, &g.mu);
    }
    pthread_mutex_unlock(&g.mu);
}

void tg_ledger_stop(void)
{
    if (!g.running)
        return;
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += LEDGER_STOP_MS / 1000;
    if (pthread_timedjoin_np(g.thread, NULL, &dl) != 0) {
        TG_LOG(TG_LOG_WARN, "ledger_stop_timeout",
               TG_KV_STR("why", "the journal keeps what is not committed"));
        return;
    }
    pthread_mutex_lock(&g.mu);
    g.running = false;
    tg_rowarena_dispose(&g.rows); /* the writer released every queued record */
    pthread_mutex_unlock(&g.mu);
    tg_prices_publish(NULL); /* the process-wide snapshot's reference */
}

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
#include "log.h"
#include "metrics.h"
#include "prices.h"

#define LEDGER_SHARDS        256
#define LEDGER_QUEUE_MAX     (1u << 20) /* records and closes waiting for the writer */
#define LEDGER_BATCH_MAX     20000      /* records per tollgate_settle */
#define LEDGER_COMMIT_MS     50 /* a batch gathers this long (unless full): one charge per tenant per batch */
#define LEDGER_EXPIRE_MS     5000     /* tollgate_leases_expire() period */
#define LEDGER_PARTITIONS_MS 86400000 /* tollgate_usage_partitions() period */
#define LEDGER_IDLE_WAIT_MS  100      /* the writer looks at notifications at least this often */
#define LEDGER_RETRY_MS      500      /* after a failed commit */
#define LEDGER_STOP_MS       5000
#define LEDGER_LINE_MAX      4096 /* one journal line (a record is ~600 bytes) */

/* ------------------------------------------------------------------------------ state */

typedef struct tg_ledger_acct {
    struct tg_ledger_acct *next;
    tg_lease_acct_t a;
    int64_t known_avail; /* the wallet's available credits as the database last said (-1: unknown) */
    tg_ledger_call_t *waiters;
    uint32_t unflushed; /* its records still in a loop's end-of-turn buffer */
    uint32_t n_closes;  /* closes waiting behind them */
    int64_t closes[2 * TG_LEASE_SLOTS];
} ledger_acct_t;

typedef struct shard {
    pthread_mutex_t mu;
    ledger_acct_t *head;
} shard_t;

typedef struct item {
    char *json;       /* a usage record, NULL for a close */
    int64_t close_id; /* a lease to close behind the records before it */
} item_t;

static struct {
    atomic_bool on;
    char instance[80];
    tg_lease_opts_t opts;
    shard_t shards[LEDGER_SHARDS];
    /* writer */
    pthread_mutex_t mu;
    pthread_cond_t cv, cv_done;
    item_t *ring; /* settled, waiting for the journal thread (g.mu) */
    size_t head, count;
    /* journaled, waiting for the commit thread (jmu; fmu is held while the journal file is written
     * or truncated, and taken before jmu) */
    pthread_mutex_t jmu, fmu;
    pthread_cond_t jcv;
    item_t *jring;
    size_t jhead, jcount;
    bool jdone;
    pthread_t jthread;
    uint64_t queued, done; /* items queued, items committed or given up */
    bool running, stopping;
    pthread_t thread;
    char *conninfo;
    int journal_fd;
    bool fsync_each;
    char **replay; /* journal lines found at start */
    size_t n_replay;
} g = {.journal_fd = -1};

static _Atomic uint64_t g_batch_seq;

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
    return &g.shards[(uint64_t)tenant * 0x9E3779B97F4A7C15ull >> 56];
}

/* The account of `tenant`, created on first use; the shard is locked on return (NULL: no memory,
 * unlocked). */
static ledger_acct_t *acct_lock(int64_t tenant)
{
    shard_t *s = shard_of(tenant);
    pthread_mutex_lock(&s->mu);
    for (ledger_acct_t *a = s->head; a != NULL; a = a->next)
        if (a->a.tenant_id == tenant)
            return a;
    ledger_acct_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    tg_lease_acct_init(&a->a, tenant);
    a->known_avail = -1;
    a->next = s->head;
    s->head = a;
    return a;
}

static void acct_unlock(ledger_acct_t *a)
{
    pthread_mutex_unlock(&shard_of(a->a.tenant_id)->mu);
}

/* ------------------------------------------------------------------------- the writer queue */

/* Called with the account's shard locked when it is a record, so a close queued after it by the
 * same account is behind it. Never blocks on the database: the queue is bounded; full, the item is
 * dropped and counted (its lease expires and gives the credits back; the charge is lost). */
static void enqueue(char *json, int64_t close_id)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running || g.count >= LEDGER_QUEUE_MAX) {
        pthread_mutex_unlock(&g.mu);
        tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
        TG_LOG(TG_LOG_ERROR, "ledger_queue_full", TG_KV_INT("close", close_id));
        free(json);
        return;
    }
    item_t *it = &g.ring[(g.head + g.count) % LEDGER_QUEUE_MAX];
    it->json = json;
    it->close_id = close_id;
    if (g.count++ == 0) /* the journal thread drains all it finds: it waits only on an empty queue */
        pthread_cond_signal(&g.cv);
    g.queued++;
    pthread_mutex_unlock(&g.mu);
}

/* A close, with the account's shard locked: behind the account's records still buffered on a loop
 * (flush_turn sends it after them), else straight to the queue. */
static void enqueue_close(ledger_acct_t *ac, int64_t lease_id)
{
    if (ac->unflushed > 0 && ac->n_closes < sizeof(ac->closes) / sizeof(ac->closes[0])) {
        ac->closes[ac->n_closes++] = lease_id;
        return;
    }
    if (ac->unflushed > 0) /* cannot happen: an account has at most 8 leases to close */
        TG_LOG(TG_LOG_WARN, "ledger_close_early", TG_KV_INT("lease_id", lease_id));
    enqueue(NULL, lease_id);
}

/*
 * Records are handed to the writer once per loop turn, not once per request: a loop's settlements
 * gather in its thread's buffer and one lock and at most one wake-up of the journal thread take them
 * all (a wake-up per request cost more than the rest of the ledger). The turn ends within
 * microseconds, so the journal is as close behind as before. A close waits for its account's
 * buffered records (enqueue_close), so it never overtakes a charge.
 */
#define LEDGER_TURN_MAX 4096

typedef struct turn_buf {
    size_t n;
    char *json[LEDGER_TURN_MAX];
    ledger_acct_t *acct[LEDGER_TURN_MAX];
    tg_deadline_t due;
} turn_buf_t;

static __thread turn_buf_t *t_turn;

static void flush_items(turn_buf_t *t);

static void flush_turn(void)
{
    turn_buf_t *t = t_turn;
    if (t == NULL || t->n == 0)
        return;
    tg_deadline_cancel(&t->due);
    flush_items(t);
}

/* What a loop thread keeps of the ledger goes with the thread: buffered records to the queue (a
 * worker ends after its drain, when nothing should be left), its price snapshot, its receiver. */
static pthread_key_t t_key;
static pthread_once_t t_key_once = PTHREAD_ONCE_INIT;
static __thread tg_prices_t *t_snap;
static __thread h2o_multithread_receiver_t *t_rx;

static void thread_drop(void *unused)
{
    (void)unused;
    if (t_turn != NULL && t_turn->n > 0)
        flush_items(t_turn); /* the deadline's list went with the loop: no cancel */
    free(t_turn);
    t_turn = NULL;
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

static void flush_items(turn_buf_t *t)
{
    size_t n = t->n;
    t->n = 0;
    pthread_mutex_lock(&g.mu);
    size_t pushed = 0;
    for (; pushed < n && g.running && g.count < LEDGER_QUEUE_MAX; pushed++) {
        item_t *it = &g.ring[(g.head + g.count) % LEDGER_QUEUE_MAX];
        it->json = t->json[pushed];
        it->close_id = 0;
        g.count++;
        g.queued++;
    }
    if (pushed > 0 && g.count == pushed)
        pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (pushed < n) {
        tg_metrics_add("tollgate_ledger_dropped_total", "", (double)(n - pushed));
        TG_LOG(TG_LOG_ERROR, "ledger_queue_full", TG_KV_INT("dropped", n - pushed));
        for (size_t i = pushed; i < n; i++)
            free(t->json[i]);
    }
    for (size_t i = 0; i < n; i++) {
        ledger_acct_t *ac = t->acct[i];
        shard_t *s = shard_of(ac->a.tenant_id);
        pthread_mutex_lock(&s->mu);
        if (ac->unflushed > 0 && --ac->unflushed == 0) {
            for (uint32_t k = 0; k < ac->n_closes; k++)
                enqueue(NULL, ac->closes[k]);
            ac->n_closes = 0;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

static void on_turn_end(tg_deadline_t *d)
{
    (void)d;
    flush_turn();
}

/* With the account's shard locked. */
static void queue_record(tg_call_t *c, ledger_acct_t *ac, char *json)
{
    if (t_turn == NULL) {
        t_turn = calloc(1, sizeof(*t_turn));
        thread_attach();
    }
    if (t_turn == NULL || tg_server_draining()) { /* a drain may end the loop before the turn does */
        enqueue(json, 0);
        return;
    }
    turn_buf_t *t = t_turn;
    if (t->n == LEDGER_TURN_MAX) { /* its records are behind the shard lock we hold: push them now */
        pthread_mutex_unlock(&shard_of(ac->a.tenant_id)->mu);
        flush_turn();
        pthread_mutex_lock(&shard_of(ac->a.tenant_id)->mu);
    }
    t->json[t->n] = json;
    t->acct[t->n] = ac;
    t->n++;
    ac->unflushed++;
    if (!tg_deadline_armed(&t->due))
        tg_deadline_arm(tg_call_flushes(c), &t->due, 0, on_turn_end);
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
            enqueue_close(ac, act.lease_id);
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
        snprintf(p[0], sizeof(p[0]), "%" PRId64, act.lease_id);
        snprintf(p[1], sizeof(p[1]), "%u", g.opts.ttl_ms);
        v[0] = p[0];
        v[1] = p[1];
        if (tg_pgpool_query(w->pg, "SELECT tollgate_lease_extend($1::bigint, $2::int)", 2, v, on_extend, x) !=
            0) {
            free(x);
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
            enqueue(NULL, id);
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
    l->acct = ac;
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

static void iso_time(char *out, size_t cap, int64_t us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%06" PRId64 "Z", us % 1000000);
}

/* One usage record as tollgate_settle reads it (jsonb_to_recordset), formatted directly: jansson's
 * tree and allocations showed per request. Names come from the config, escaped all the same. */
static char *record_json(tg_call_t *c, int slot, const usage_fig_t *f, int64_t charge)
{
    const tg_model_cfg_t *m = slot >= 0                ? slot_model(c, (size_t)slot)
                              : c->route.n_targets > 0 ? c->route.targets[0]
                                                       : NULL;
    const tg_ledger_price_t *p = &c->led.price[slot >= 0 ? slot : 0];
    char at[40], model[420], provider[160], lease[24] = "null", err[80] = "null";
    iso_time(at, sizeof(at), unix_now_us());
    if (tg_json_escape(model, sizeof(model), m != NULL ? m->name : "-") < 0 ||
        tg_json_escape(provider, sizeof(provider), m != NULL ? m->provider->name : "-") < 0)
        return NULL;
    if (c->led.hold.lease_id != 0)
        snprintf(lease, sizeof(lease), "%" PRId64, c->led.hold.lease_id);
    const char *e = c->pipe.err != 0       ? tg_err_code(c->pipe.err)
                    : c->mid_stream_failed ? "stream_broken"
                                           : NULL;
    if (e != NULL)
        snprintf(err, sizeof(err), "\"%s\"", e); /* the table's codes: [a-z_] */
    int status = c->status != 0 ? c->status : 499;
    char *out = malloc(1400);
    if (out == NULL)
        return NULL;
    int n = snprintf(
        out, 1400,
        "{\"tenant_id\":%" PRId64 ",\"request_id\":\"%s\",\"created_at\":\"%s\",\"key_id\":%" PRId64
        ",\"model\":\"%s\",\"provider\":\"%s\",\"byok\":%s,\"input_tokens\":%" PRId64
        ",\"output_tokens\":%" PRId64 ",\"cached_tokens\":%" PRId64 ",\"estimated\":%s,\"price_id\":%" PRId64
        ",\"price_input\":%" PRId64 ",\"price_output\":%" PRId64 ",\"price_cached\":%" PRId64
        ",\"platform_fee\":%" PRId64 ",\"billed\":%s,\"cost\":%" PRId64 ",\"charge\":%" PRId64
        ",\"lease_id\":%s,\"latency_ms\":%" PRIu64 ",\"attempts\":%zu,\"status\":%d,\"error\":%s}",
        c->principal.tenant_id, c->request_id, at, c->principal.key_id, model, provider,
        slot >= 0 && c->served_byok ? "true" : "false", f->t.input, f->t.output, f->t.cached,
        f->estimated ? "true" : "false", p->id, p->unit.input, p->unit.output, p->unit.cached_input,
        p->unit.byok_fee, f->billed ? "true" : "false", f->cost, charge, lease,
        (tg_now_us() - c->start_us) / 1000, tg_plan_attempt_count(&c->plan), status, err);
    if (n < 0 || n >= 1400) {
        free(out);
        return NULL;
    }
    return out;
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
    char *json = record_json(c, slot, &f, charge);
    if (json != NULL)
        queue_record(c, ac, json); /* before any close the engine asks next */
    else
        TG_LOG(TG_LOG_ERROR, "ledger_record_nomem", TG_KV_STR("request_id", c->request_id));
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
    ledger_acct_t *ac = NULL;
    for (ledger_acct_t *a = s->head; a != NULL; a = a->next)
        if (a->a.tenant_id == c->principal.tenant_id)
            ac = a;
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

static void journal_append(const char *const *lines, size_t n)
{
    if (g.journal_fd < 0 || n == 0)
        return;
    enum { IOV = 512 }; /* lines per system call (IOV_MAX is 1024; each line takes two) */
    struct iovec iov[2 * IOV];
    for (size_t first = 0; first < n; first += IOV) {
        size_t k = n - first < IOV ? n - first : IOV, cnt = 0, total = 0;
        for (size_t i = 0; i < k; i++) {
            iov[cnt++] = (struct iovec){(void *)lines[first + i], strlen(lines[first + i])};
            iov[cnt++] = (struct iovec){(void *)"\n", 1};
            total += iov[cnt - 2].iov_len + 1;
        }
        size_t done = 0;
        struct iovec *v = iov;
        while (done < total) {
            ssize_t w = writev(g.journal_fd, v, (int)cnt);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                TG_LOG(TG_LOG_ERROR, "ledger_journal_write_failed", TG_KV_INT("errno", errno));
                return;
            }
            done += (size_t)w;
            /* a short write: skip what went out, go on with the rest */
            while (cnt > 0 && (size_t)w >= v->iov_len) {
                w -= (ssize_t)v->iov_len;
                v++;
                cnt--;
            }
            if (cnt > 0) {
                v->iov_base = (char *)v->iov_base + w;
                v->iov_len -= (size_t)w;
            }
        }
    }
}

static void journal_clear(void)
{
    if (g.journal_fd < 0)
        return;
    /* no fsync: a truncation lost in a machine crash only makes the next start replay records
     * that are committed already, which it skips; and the journal thread must not wait on it */
    if (ftruncate(g.journal_fd, 0) != 0)
        TG_LOG(TG_LOG_ERROR, "ledger_journal_truncate_failed", TG_KV_INT("errno", errno));
}

static PGconn *writer_connect(void)
{
    PGconn *db = PQconnectdb(g.conninfo);
    if (PQstatus(db) != CONNECTION_OK) {
        PQfinish(db);
        return NULL;
    }
    PGresult *r = PQexec(db, "LISTEN tollgate_prices");
    PQclear(r);
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

/* One batch: its records as a JSON array, its closes; a fresh batch key every try (a record that
 * landed already is skipped by its primary key, so a retry after a lost answer charges nothing
 * twice). true: committed. */
enum { COMMIT_OK = 0, COMMIT_RETRY = 1, COMMIT_REFUSED = 2 };
static int commit_rc;

static bool commit(PGconn *db, char **lines, size_t n, const int64_t *closes, size_t n_closes)
{
    tg_buf_t arr, cl;
    tg_buf_init(&arr, (size_t)64 << 20);
    tg_buf_init(&cl, (size_t)1 << 20);
    bool ok = tg_buf_append(&arr, "[", 1) == 0;
    for (size_t i = 0; ok && i < n; i++) {
        if (i > 0)
            ok = tg_buf_append(&arr, ",", 1) == 0;
        ok = ok && tg_buf_append(&arr, lines[i], strlen(lines[i])) == 0;
    }
    ok = ok && tg_buf_append(&arr, "]", 2) == 0; /* with its NUL */
    ok = ok && tg_buf_append(&cl, "{", 1) == 0;
    for (size_t i = 0; ok && i < n_closes; i++) {
        char s[24];
        int k = snprintf(s, sizeof(s), "%s%" PRId64, i > 0 ? "," : "", closes[i]);
        ok = tg_buf_append(&cl, s, (size_t)k) == 0;
    }
    ok = ok && tg_buf_append(&cl, "}", 2) == 0;
    char key[160];
    snprintf(key, sizeof(key), "%s/%" PRIu64, g.instance, atomic_fetch_add(&g_batch_seq, 1) + 1);
    if (ok) {
        const char *v[3] = {key, arr.data, cl.data};
        PGresult *r =
            PQexecParams(db, "SELECT recorded, charged FROM tollgate_settle($1, $2::jsonb, $3::bigint[])", 3,
                         NULL, v, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        /* a data or integrity error (SQLSTATE classes 22, 23) will not pass on a retry */
        const char *st = ok ? NULL : PQresultErrorField(r, PG_DIAG_SQLSTATE);
        commit_rc = ok ? COMMIT_OK
                    : (st != NULL && (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0))
                        ? COMMIT_REFUSED
                        : COMMIT_RETRY;
        if (ok) {
            tg_metrics_add("tollgate_ledger_records_total", "",
                           (double)strtoll(PQgetvalue(r, 0, 0), NULL, 10));
            tg_metrics_add("tollgate_ledger_batches_total", "", 1);
        } else {
            TG_LOG(TG_LOG_WARN, "ledger_settle_failed", TG_KV_INT("records", n),
                   TG_KV_STR("error", PQerrorMessage(db)));
        }
        PQclear(r);
    }
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

/*
 * The journal thread: settlements go to the journal file as soon as they are queued (a write to
 * the page cache, which a killed process does not lose; the commit thread fsyncs), then to the
 * commit thread. A thread of its own so that a commit in progress never delays the journal.
 */
static void *journal_main(void *arg)
{
    (void)arg;
    enum { TAKE = 4096 };
    item_t *local = calloc(TAKE, sizeof(item_t));
    const char **lines = calloc(TAKE, sizeof(char *));
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (g.count == 0 && !g.stopping)
            pthread_cond_wait(&g.cv, &g.mu);
        if (g.count == 0 && g.stopping)
            break;
        size_t k = 0, n = 0;
        while (g.count > 0 && k < TAKE) {
            local[k] = g.ring[g.head];
            g.head = (g.head + 1) % LEDGER_QUEUE_MAX;
            g.count--;
            if (local[k].json != NULL)
                lines[n++] = local[k].json;
            k++;
        }
        pthread_mutex_unlock(&g.mu);
        pthread_mutex_lock(&g.fmu);
        journal_append(lines, n);
        pthread_mutex_lock(&g.jmu);
        for (size_t i = 0; i < k;) {
            if (g.jcount >= LEDGER_QUEUE_MAX) { /* the database is away for long: wait for room */
                pthread_mutex_unlock(&g.fmu);
                timed_wait(&g.jcv, &g.jmu, LEDGER_IDLE_WAIT_MS);
                pthread_mutex_unlock(&g.jmu);
                pthread_mutex_lock(&g.fmu);
                pthread_mutex_lock(&g.jmu);
                continue;
            }
            g.jring[(g.jhead + g.jcount) % LEDGER_QUEUE_MAX] = local[i++];
            g.jcount++;
        }
        /* the commit thread waits for a first item, or gathers for LEDGER_COMMIT_MS: wake it for
         * the first, or for a full batch, not for each */
        if (g.jcount == k || g.jcount >= LEDGER_BATCH_MAX)
            pthread_cond_broadcast(&g.jcv);
        pthread_mutex_unlock(&g.jmu);
        pthread_mutex_unlock(&g.fmu);
        pthread_mutex_lock(&g.mu);
    }
    pthread_mutex_unlock(&g.mu);
    pthread_mutex_lock(&g.jmu);
    g.jdone = true;
    pthread_cond_broadcast(&g.jcv);
    pthread_mutex_unlock(&g.jmu);
    free(local);
    free(lines);
    return NULL;
}

static void register_metrics(void)
{
    tg_metrics_register("tollgate_ledger_records_total", "usage records committed by tollgate_settle",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_ledger_batches_total", "settlement batches committed", TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_ledger_dropped_total", "settlements dropped (writer queue full)",
                        TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_ledger_records_total", "", 0);
    tg_metrics_add("tollgate_ledger_batches_total", "", 0);
    tg_metrics_add("tollgate_ledger_dropped_total", "", 0);
}

/*
 * The writer. Each turn: take what queued (up to a batch), append it to the journal, then commit
 * the journal's replay (at start) and the batch, each with one tollgate_settle; once everything
 * the journal holds is committed, the journal is truncated. A failed commit keeps the batch (it
 * is journaled) and is tried again, while new settlements keep being taken and journaled. Between
 * batches it runs the periodic jobs and reloads prices on a notification.
 */
static void *writer_main(void *arg)
{
    (void)arg;
    PGconn *db = NULL;
    char **lines = calloc(LEDGER_BATCH_MAX, sizeof(char *));
    int64_t *closes = calloc(LEDGER_BATCH_MAX, sizeof(int64_t));
    size_t n = 0, n_closes = 0; /* the batch not yet committed (journaled already) */
    uint64_t taken = 0;         /* queue items in the batch, for `done` */
    uint64_t next_expire = 0, next_parts = 0;
    char **replay = g.replay; /* the journal found at start */
    size_t n_replay = g.n_replay, replayed = 0;
    g.replay = NULL;
    bool dirty = n_replay > 0; /* the journal holds something */
    pthread_mutex_lock(&g.jmu);
    for (;;) {
        if (n == 0 && n_closes == 0 && replayed >= n_replay) {
            if (g.jcount == 0 && !g.jdone)
                timed_wait(&g.jcv, &g.jmu, LEDGER_IDLE_WAIT_MS);
            if (g.jcount == 0 && g.jdone)
                break;
        }
        if (n == 0 && n_closes == 0 && g.jcount > 0 && !g.jdone) {
            /* gather: a tenant's requests of the next few ms share one charge entry, one lease
             * update and one wallet update (the per-batch cost of a tenant dwarfs a record's) */
            uint64_t until = tg_now_ms() + LEDGER_COMMIT_MS;
            while (!g.jdone && g.jcount < LEDGER_BATCH_MAX && tg_now_ms() < until)
                timed_wait(&g.jcv, &g.jmu, (int)(until - tg_now_ms()) + 1);
        }
        while (g.jcount > 0 && n < LEDGER_BATCH_MAX && n_closes < LEDGER_BATCH_MAX) {
            item_t it = g.jring[g.jhead];
            g.jhead = (g.jhead + 1) % LEDGER_QUEUE_MAX;
            g.jcount--;
            taken++;
            dirty = true;
            if (it.json != NULL)
                lines[n++] = it.json;
            else
                closes[n_closes++] = it.close_id;
        }
        pthread_cond_broadcast(&g.jcv); /* room for the journal thread */
        pthread_mutex_unlock(&g.jmu);
        if (n > 0 && g.fsync_each && g.journal_fd >= 0 && fdatasync(g.journal_fd) != 0)
            TG_LOG(TG_LOG_ERROR, "ledger_journal_fsync_failed", TG_KV_INT("errno", errno));
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
            while (ok && replayed < n_replay) {
                size_t k = n_replay - replayed < LEDGER_BATCH_MAX ? n_replay - replayed : LEDGER_BATCH_MAX;
                ok = commit(db, replay + replayed, k, NULL, 0);
                if (!ok && commit_rc == COMMIT_REFUSED) { /* one at a time; a refused one is dropped */
                    ok = true;
                    for (size_t i = 0; ok && i < k; i++) {
                        if (commit(db, replay + replayed + i, 1, NULL, 0))
                            continue;
                        ok = commit_rc == COMMIT_REFUSED;
                        if (ok) {
                            TG_LOG(TG_LOG_ERROR, "ledger_record_refused",
                                   TG_KV_STR("error", PQerrorMessage(db)));
                            tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
                        }
                    }
                }
                if (ok) {
                    TG_LOG(TG_LOG_INFO, "ledger_journal_replayed", TG_KV_INT("records", k));
                    for (size_t i = 0; i < k; i++)
                        free(replay[replayed + i]);
                    replayed += k;
                }
            }
            if (ok && (n > 0 || n_closes > 0)) {
                ok = commit(db, lines, n, closes, n_closes);
                if (!ok && commit_rc == COMMIT_REFUSED) {
                    /* one bad record must not hold up the others: each alone; a record the
                     * database refuses by itself is logged and dropped (its hold's lease expires) */
                    size_t i = 0;
                    for (; i < n; i++) {
                        bool one = commit(db, lines + i, 1, NULL, 0);
                        if (!one && commit_rc != COMMIT_REFUSED)
                            break; /* the database went away: the rest waits for the retry */
                        if (!one) {
                            TG_LOG(TG_LOG_ERROR, "ledger_record_refused",
                                   TG_KV_STR("error", PQerrorMessage(db)));
                            tg_metrics_add("tollgate_ledger_dropped_total", "", 1);
                        }
                        free(lines[i]);
                    }
                    memmove(lines, lines + i, (n - i) * sizeof(char *));
                    n -= i;
                    bool transient = n > 0;
                    ok = !transient && commit(db, NULL, 0, closes, n_closes);
                }
                if (ok) {
                    for (size_t i = 0; i < n; i++)
                        free(lines[i]);
                    n = n_closes = 0;
                }
            }
            if (ok && dirty && replayed >= n_replay) {
                /* everything journaled is committed but what the journal thread handed over
                 * since (it writes and hands over under fmu): the journal starts again with those,
                 * so it holds only what is not committed, whatever the load */
                pthread_mutex_lock(&g.fmu);
                pthread_mutex_lock(&g.jmu);
                journal_clear();
                const char *again[256];
                size_t k = 0;
                for (size_t i = 0; i < g.jcount; i++) {
                    const char *j = g.jring[(g.jhead + i) % LEDGER_QUEUE_MAX].json;
                    if (j != NULL)
                        again[k++] = j;
                    if (k == 256 || (i + 1 == g.jcount && k > 0)) {
                        journal_append(again, k);
                        k = 0;
                    }
                }
                pthread_mutex_unlock(&g.jmu);
                dirty = false;
                pthread_mutex_unlock(&g.fmu);
            }
        }
        if (ok) {
            pthread_mutex_lock(&g.mu);
            g.done += taken;
            taken = 0;
            pthread_cond_broadcast(&g.cv_done);
            pthread_mutex_unlock(&g.mu);
        }
        pthread_mutex_lock(&g.jmu);
        if (!ok) {
            if (g.jdone)
                break; /* stopping: the journal keeps it for the next start */
            timed_wait(&g.jcv, &g.jmu, LEDGER_RETRY_MS);
        }
    }
    pthread_mutex_unlock(&g.jmu);
    pthread_mutex_lock(&g.mu);
    g.done += taken;
    pthread_cond_broadcast(&g.cv_done);
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    for (size_t i = replayed; i < n_replay; i++)
        free(replay[i]);
    free(replay);
    free(lines);
    free(closes);
    PQfinish(db);
    return NULL;
}

/* -------------------------------------------------------------------------------- start */

static int read_journal(void)
{
    FILE *f = fdopen(dup(g.journal_fd), "r");
    if (f == NULL)
        return TG_EINTERNAL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t room = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        json_t *j = json_loads(line, 0, NULL); /* a torn last line (a crash mid-write) is skipped */
        if (!json_is_object(j)) {
            json_decref(j);
            TG_LOG(TG_LOG_WARN, "ledger_journal_line_skipped", TG_KV_INT("bytes", len));
            continue;
        }
        json_decref(j);
        if (g.n_replay == room) {
            room = room ? room * 2 : 256;
            char **r = realloc(g.replay, room * sizeof(char *));
            if (r == NULL)
                break;
            g.replay = r;
        }
        g.replay[g.n_replay++] = strdup(line);
    }
    free(line);
    fclose(f);
    return 0;
}

int tg_ledger_start(const char *conninfo, const tg_config_t *cfg)
{
    if (cfg == NULL || !cfg->billing.enabled || conninfo == NULL)
        return 0;
    register_metrics();
    for (size_t i = 0; i < LEDGER_SHARDS; i++)
        pthread_mutex_init(&g.shards[i].mu, NULL);
    pthread_mutex_init(&g.mu, NULL);
    pthread_mutex_init(&g.jmu, NULL);
    pthread_mutex_init(&g.fmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cv, &ca);
    pthread_cond_init(&g.cv_done, &ca);
    pthread_cond_init(&g.jcv, &ca);
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
        g.opts.extend_before_ms = g.opts.ttl_ms / 6;
        g.opts.idle_ms = g.opts.ttl_ms / 3;
    }
    g.fsync_each = cfg->billing.journal_fsync;

    g.journal_fd = open(cfg->billing.journal_path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (g.journal_fd < 0) {
        TG_LOG(TG_LOG_ERROR, "ledger_journal_open_failed", TG_KV_STR("path", cfg->billing.journal_path),
               TG_KV_INT("errno", errno));
        return TG_EINTERNAL;
    }
    if (flock(g.journal_fd, LOCK_EX | LOCK_NB) != 0) {
        TG_LOG(TG_LOG_ERROR, "ledger_journal_in_use", TG_KV_STR("path", cfg->billing.journal_path));
        close(g.journal_fd);
        g.journal_fd = -1;
        return TG_EINTERNAL;
    }
    if (read_journal() != 0)
        return TG_EINTERNAL;
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
    g.ring = calloc(LEDGER_QUEUE_MAX, sizeof(item_t));
    g.jring = calloc(LEDGER_QUEUE_MAX, sizeof(item_t));
    if (g.conninfo == NULL || g.ring == NULL || g.jring == NULL)
        return TG_ENOMEM;
    g.running = true;
    if (pthread_create(&g.jthread, NULL, journal_main, NULL) != 0) {
        g.running = false;
        return TG_ENOMEM;
    }
    if (pthread_create(&g.thread, NULL, writer_main, NULL) != 0) {
        g.running = false;
        return TG_ENOMEM; /* the process exits: the journal thread goes with it */
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
    if (pthread_timedjoin_np(g.jthread, NULL, &dl) != 0 || pthread_timedjoin_np(g.thread, NULL, &dl) != 0) {
        TG_LOG(TG_LOG_WARN, "ledger_stop_timeout",
               TG_KV_STR("why", "the journal keeps what is not committed"));
        return;
    }
    pthread_mutex_lock(&g.mu);
    g.running = false;
    pthread_mutex_unlock(&g.mu);
    tg_prices_publish(NULL); /* the process-wide snapshot's reference */
}

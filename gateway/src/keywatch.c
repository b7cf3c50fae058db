/*
 * keywatch.c - LISTEN tollgate_tenants -> tg_auth_cache_clear, see keywatch.h.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "keywatch.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "err.h"
#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STOP_WAIT_MS   3000 /* longest wait for the thread at stop (a frozen database) */

static struct {
    pthread_t tid;
    bool running;
    char *conninfo;
    int wake[2]; /* a pipe: stop() writes one byte so poll() returns at once */
    _Atomic uint64_t count;
} kw = {.wake = {-1, -1}};

/* Waits up to ms for the stop pipe; true when stopping. */
static bool wait_stop(int ms)
{
    struct pollfd p = {.fd = kw.wake[0], .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

static PGconn *connect_and_listen(void)
{
    PGconn *c = PQconnectdb(kw.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        /* PQerrorMessage may echo the host but never the password; still keep it out of logs */
        TG_LOG(TG_LOG_WARN, "keywatch_connect_failed");
        PQfinish(c);
        return NULL;
    }
    PGresult *r = PQexec(c, "LISTEN tollgate_tenants");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        TG_LOG(TG_LOG_WARN, "keywatch_listen_failed");
        PQfinish(c);
        return NULL;
    }
    /* notifications sent while we were away are lost: forget everything cached */
    tg_auth_cache_clear();
    return c;
}

static void *watch_main(void *arg)
{
    int backoff = BACKOFF_MIN_MS;
    PGconn *c = NULL;
    for (;;) {
        if (c == NULL) {
            c = connect_and_listen();
            if (c == NULL) {
                if (wait_stop(backoff))
                    break;
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = BACKOFF_MIN_MS;
            TG_LOG(TG_LOG_INFO, "keywatch_listening");
        }
        struct pollfd p[2] = {{.fd = PQsocket(c), .events = POLLIN}, {.fd = kw.wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents != 0)
            break;
        if (!PQconsumeInput(c)) {
            TG_LOG(TG_LOG_WARN, "keywatch_connection_lost");
            PQfinish(c);
            c = NULL;
            continue;
        }
        PGnotify *n;
        bool any = false;
        while ((n = PQnotifies(c)) != NULL) {
            any = true;
            PQfreemem(n);
        }
        if (any) {
            /* the payload names the tenant; clearing everything is simpler and changes are rare */
            tg_auth_cache_clear();
            atomic_fetch_add(&kw.count, 1);
            TG_LOG(TG_LOG_INFO, "key_cache_cleared", TG_KV_STR("reason", "tenant_changed"));
        }
    }
    PQfinish(c);
    return NULL;
}

int tg_keywatch_start(const char *conninfo)
{
    if (conninfo == NULL || kw.running)
        return 0;
    if (pipe(kw.wake) != 0)
        return TG_EINTERNAL;
    kw.conninfo = strdup(conninfo);
    if (kw.conninfo == NULL || pthread_create(&kw.tid, NULL, watch_main, NULL) != 0) {
        free(kw.conninfo);
        kw.conninfo = NULL;
        close(kw.wake[0]);
        close(kw.wake[1]);
        kw.wake[0] = kw.wake[1] = -1;
        return TG_ENOMEM;
    }
    kw.running = true;
    return 0;
}

void tg_keywatch_stop(void)
{
    if (!kw.running)
        return;
    TG_IGNORE_RESULT(write(kw.wake[1], "x", 1));
    /* Inside a blocking libpq call against a frozen database the thread does not see the pipe:
     * past the bound it is left behind (the process is exiting), its resources with it. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += STOP_WAIT_MS / 1000;
    if (pthread_timedjoin_np(kw.tid, NULL, &dl) != 0) {
        TG_LOG(TG_LOG_WARN, "keywatch_stop_timeout", TG_KV_INT("waited_ms", STOP_WAIT_MS));
        return;
    }
    close(kw.wake[0]);
    close(kw.wake[1]);
    kw.wake[0] = kw.wake[1] = -1;
    /* the conninfo may hold a password */
    explicit_bzero(kw.conninfo, strlen(kw.conninfo));
    free(kw.conninfo);
    kw.conninfo = NULL;
    kw.running = false;
}

uint64_t tg_keywatch_count(void)
{
    return atomic_load(&kw.count);
}

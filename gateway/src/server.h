/*
 * server.h - worker threads, listeners, signals, reload and drain.
 *
 * N workers (default one per core), each with its own h2o context and evloop,
 * its own SO_REUSEPORT listeners (data and admin), its own libcurl multi
 * handle and its own async libpq pool. The main thread only waits for
 * signals: SIGTERM drains (stop accepting, let requests and streams finish
 * within shutdown_grace_ms, exit 0), SIGHUP reloads the config (a new
 * snapshot is published; requests in flight keep theirs).
 */
#ifndef TG_SERVER_H
#define TG_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "worker.h"

/** Handler for a route. Return 0 when the request was answered or taken over. */
typedef int (*tg_route_fn)(h2o_req_t *req);

/** Runs the server until SIGTERM/SIGINT (drains) and returns the exit code. */
int tg_server_run(const char *config_path);

/** Admin routes are supplied by admin/ (main.c wires them) so the gateway does not depend on admin. */
void tg_server_set_admin_router(tg_route_fn fn);
/** /metrics on the admin listener asks fn first: 0 serves it, else fn has answered (admin/authn.h). */
void tg_server_set_metrics_guard(tg_route_fn fn);

#endif

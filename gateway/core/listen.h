/*
 * listen.h - listening sockets of an h2o evloop server: the gateway, the simulator and the bench
 * floor open them and accept on them the same way.
 *
 * Each worker thread owns an SO_REUSEPORT socket of its own on the shared address, so the kernel
 * spreads connections over the workers and no accept lock exists.
 */
#ifndef TG_LISTEN_H
#define TG_LISTEN_H

#include <stdbool.h>
#include <sys/socket.h>

#include "h2o.h"

/**
 * A non-blocking, close-on-exec TCP socket bound to ss, with SO_REUSEADDR. shared: also
 * SO_REUSEPORT and listening, one per worker. Not shared: bound only, a probe that no other
 * process holds the address (with SO_REUSEPORT alone, a second server of the same user would
 * silently share the port). Returns the fd, or -1 with errno set.
 */
int tg_listen_open(const struct sockaddr_storage *ss, socklen_t len, bool shared);

/** h2o read callback of a listening socket whose data is its h2o_accept_ctx_t: accepts a bounded
 *  batch per wake-up, so one busy listener cannot starve the loop's other sockets. */
void tg_listen_on_accept(h2o_socket_t *listener, const char *err);

#endif

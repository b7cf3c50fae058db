/*
 * listen.c - listening sockets of an h2o evloop server, see listen.h.
 */
#include "listen.h"

#include <errno.h>
#include <unistd.h>

#define TG_ACCEPT_BATCH 16 /* connections accepted per wake-up of a listener */

int tg_listen_open(const struct sockaddr_storage *ss, socklen_t len, bool shared)
{
    int on = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        bind(fd, (const struct sockaddr *)ss, len) != 0 || (shared && listen(fd, SOMAXCONN) != 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void tg_listen_on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_accept_ctx_t *actx = listener->data;
    if (err != NULL)
        return;
    h2o_socket_t *sock;
    for (int i = 0; i < TG_ACCEPT_BATCH && (sock = h2o_evloop_socket_accept(listener)) != NULL; ++i)
        h2o_accept(actx, sock);
}

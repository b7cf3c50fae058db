/* tollgate-bench-relay: the floor of any proxy, measured by bench/run.sh next to the direct path.
 *
 * It copies bytes between each client and an upstream connection of its own and does nothing else,
 * with the fewest syscalls a proxy can make: per request about one read and one write on each side
 * plus a share of epoll_wait. Its throughput over the direct path's is therefore the ceiling that
 * any proxy, tollgate included, can reach on the same machine. Single thread, one level-triggered
 * epoll, IPv4, libc plus tg_core's address parser. A bench tool: not installed, not shipped. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"

#define BUF_BYTES  (64 * 1024) /* per direction: a slow reader costs at most 128 KiB per pair */
#define MAX_EVENTS 256

enum { CLIENT, UPSTREAM };

struct relay;
struct end {
    struct relay *r;
    int fd;
    bool in_epoll;
    uint32_t mask;   /* what epoll has now, so epoll_ctl runs only when the interest changes */
    size_t off, len; /* buf[off, len) came from this end and still has to go to the other */
    char buf[BUF_BYTES];
};

struct relay {
    struct end end[2];
    bool connecting;           /* the upstream's non-blocking connect has not completed */
    bool draining;             /* one end hung up: forward what it sent, read nothing more */
    bool dead;                 /* closed in this epoll batch; later events of the batch may name it */
    int eof_side;              /* the end that hung up, when draining */
    struct relay *prev, *next; /* live list (then dead list): shutdown frees everything */
};

static int g_ep;
static struct relay *g_live, *g_dead;
static char g_listener_tag, g_signal_tag; /* epoll data for the two fds that are not relay ends */

static void relay_kill(struct relay *r)
{
    for (int i = 0; i < 2; i++)
        close(r->end[i].fd); /* also leaves the epoll set */
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        g_live = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    /* freed after the batch, since an event still to be handled in it may point into r */
    r->dead = true;
    r->next = g_dead;
    g_dead = r;
}

static int set_interest(struct end *e, uint32_t want)
{
    if (e->in_epoll && want == e->mask)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = e};
    if (epoll_ctl(g_ep, e->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, e->fd, &ev) != 0)
        return -1;
    e->in_epoll = true;
    e->mask = want;
    return 0;
}

/* Read while the end's buffer has room, write while the other end's buffer holds bytes for it: a
 * full buffer stops reading its side until the other side drains it, so memory stays bounded. */
static int update_interest(struct relay *r)
{
    for (int i = 0; i < 2; i++) {
        struct end *e = &r->end[i], *from = &r->end[!i];
        uint32_t want = 0;
        if (i == UPSTREAM && r->connecting) {
            want = EPOLLOUT; /* writable = the connect finished, either way */
        } else {
            if (!r->draining && e->len < BUF_BYTES)
                want |= EPOLLIN;
            if (from->len > from->off)
                want |= EPOLLOUT;
        }
        if (set_interest(e, want) != 0)
            return -1;
    }
    return 0;
}

/* One write per call: when it is short the socket buffer is full, and EPOLLOUT says when to resume. */
static int flush_to(struct relay *r, int to)
{
    struct end *from = &r->end[!to];
    if (from->len == from->off || (to == UPSTREAM && r->connecting))
        return 0;
    ssize_t n = write(r->end[to].fd, from->buf + from->off, from->len - from->off);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    from->off += (size_t)n;
    if (from->off == from->len)
        from->off = from->len = 0;
    return 0;
}

static void on_end_event(struct end *e, uint32_t ev)
{
    struct relay *r = e->r;
    int side = (int)(e - r->end);
    if (r->dead)
        return;
    if (side == UPSTREAM && r->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
            goto kill;
        r->connecting = false;
        ev = EPOLLOUT; /* send what the client already sent */
    }
    if ((ev & EPOLLIN) && e->len < BUF_BYTES) {
        ssize_t n = read(e->fd, e->buf + e->len, BUF_BYTES - e->len);
        if (n > 0) {
            e->len += (size_t)n;
            if (flush_to(r, !side) != 0)
                goto kill;
        } else if (n == 0) {
            r->draining = true;
            r->eof_side = side;
        } else if (errno != EAGAIN && errno != EINTR) {
            goto kill;
        }
    } else if (ev & (EPOLLERR | EPOLLHUP)) {
        goto kill;
    }
    if ((ev & EPOLLOUT) && flush_to(r, side) != 0)
        goto kill;
    if (r->draining && r->end[r->eof_side].len == r->end[r->eof_side].off)
        goto kill;
    if (update_interest(r) == 0)
        return;
kill:
    relay_kill(r);
}

static void set_nodelay(int fd)
{
    int on = 1;
    /* wrk's requests and the simulator's answers are small: Nagle would hold them back */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

static void on_accept(int lfd, const struct sockaddr_in *upstream)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return; /* EAGAIN: the backlog is empty; anything else: the next connection may work */
        int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct relay *r = ufd < 0 ? NULL : calloc(1, sizeof(*r));
        if (r == NULL) {
            close(cfd);
            if (ufd >= 0)
                close(ufd);
            continue;
        }
        r->end[CLIENT].r = r->end[UPSTREAM].r = r;
        r->end[CLIENT].fd = cfd;
        r->end[UPSTREAM].fd = ufd;
        r->next = g_live;
        if (g_live != NULL)
            g_live->prev = r;
        g_live = r;
        set_nodelay(cfd);
        set_nodelay(ufd);
        if (connect(ufd, (const struct sockaddr *)upstream, sizeof(*upstream)) != 0) {
            if (errno != EINPROGRESS) {
                relay_kill(r);
                continue;
            }
            r->connecting = true;
        }
        if (update_interest(r) != 0)
            relay_kill(r);
    }
}

/* The relay's sockets are AF_INET only, so an IPv6 address gets the usage error. */
static int parse_addr(const char *s, bool allow_port_zero, struct sockaddr_in *a)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (tg_addr_parse(s, allow_port_zero, &ss, &len) != 0 || ss.ss_family != AF_INET)
        return -1;
    memcpy(a, &ss, sizeof(*a));
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in listen_addr, up_addr;
    const char *listen_s = NULL, *up_s = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            listen_s = argv[i + 1];
        else if (strcmp(argv[i], "--upstream") == 0)
            up_s = argv[i + 1];
    }
    if (argc != 5 || listen_s == NULL || up_s == NULL || parse_addr(listen_s, true, &listen_addr) != 0 ||
        parse_addr(up_s, false, &up_addr) != 0) {
        fprintf(stderr, "usage: tollgate-bench-relay --listen IPV4:PORT --upstream IPV4:PORT\n");
        return 2;
    }

    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an EPIPE to handle, not a reason to die */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigprocmask(SIG_BLOCK, &sigs, NULL); /* delivered through the epoll set: no race with epoll_wait */
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1;
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g_listener_tag};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &g_signal_tag};
    socklen_t alen = sizeof(listen_addr);
    if (sfd < 0 || lfd < 0 || g_ep < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        bind(lfd, (const struct sockaddr *)&listen_addr, sizeof(listen_addr)) != 0 ||
        listen(lfd, SOMAXCONN) != 0 || getsockname(lfd, (struct sockaddr *)&listen_addr, &alen) != 0 ||
        epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev) != 0 || epoll_ctl(g_ep, EPOLL_CTL_ADD, sfd, &sev) != 0) {
        fprintf(stderr, "tollgate-bench-relay: cannot listen on %s: %s\n", listen_s, strerror(errno));
        return 1;
    }
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &listen_addr.sin_addr, ip, sizeof(ip));
    printf("tollgate-bench-relay listening on http://%s:%d\n", ip, ntohs(listen_addr.sin_port));
    fflush(stdout);

    bool running = true;
    while (running) {
        struct epoll_event evs[MAX_EVENTS];
        int n = epoll_wait(g_ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("tollgate-bench-relay: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &g_listener_tag)
                on_accept(lfd, &up_addr);
            else if (evs[i].data.ptr == &g_signal_tag)
                running = false;
            else
                on_end_event(evs[i].data.ptr, evs[i].events);
        }
        while (g_dead != NULL) {
            struct relay *r = g_dead;
            g_dead = r->next;
            free(r);
        }
    }
    while (g_live != NULL) {
        relay_kill(g_live);
        free(g_dead);
        g_dead = NULL;
    }
    close(lfd);
    close(sfd);
    close(g_ep);
    return 0;
}

/*
 * maplog.c - an append-only file written through a shared mapping (maplog.h).
 */
#define _GNU_SOURCE
#include "maplog.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where the data ends: after the last newline of the file's first `size` bytes (0 when none). */
static int data_end(int fd, size_t size, size_t *end)
{
    char buf[65536];
    size_t at = size;
    while (at > 0) {
        size_t n = at < sizeof(buf) ? at : sizeof(buf);
        ssize_t r = pread(fd, buf, n, (off_t)(at - n));
        if (r < 0 && errno == EINTR)
            continue;
        if (r != (ssize_t)n)
            return r < 0 ? -errno : -EIO;
        for (size_t i = n; i > 0; i--) {
            if (buf[i - 1] == '\n') {
                *end = at - n + i;
                return 0;
            }
        }
        at -= n;
    }
    *end = 0;
    return 0;
}

int tg_maplog_open(tg_maplog_t *l, const char *path, bool lock)
{
    memset(l, 0, sizeof(*l));
    l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->fd < 0)
        return -errno;
    int rc = 0;
    struct stat st;
    if (lock && flock(l->fd, LOCK_EX | LOCK_NB) != 0)
        rc = -errno;
    else if (fstat(l->fd, &st) != 0)
        rc = -errno;
    else
        rc = data_end(l->fd, (size_t)st.st_size, &l->len);
    if (rc != 0) {
        close(l->fd);
        l->fd = -1;
        return rc;
    }
    l->size = (size_t)st.st_size;
    void *m = mmap(NULL, TG_MAPLOG_VIEW, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    if (m != MAP_FAILED) { /* else every append is a pwrite: slower, as safe */
        l->map = m;
        l->view = TG_MAPLOG_VIEW;
    }
    return 0;
}

static int put_pwrite(tg_maplog_t *l, const char *s, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(l->fd, s + done, n - done, (off_t)(l->len + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        done += (size_t)w;
    }
    l->len += n;
    if (l->len > l->size)
        l->size = l->len;
    return 0;
}

int tg_maplog_append(tg_maplog_t *l, const char *s, size_t n)
{
    if (l->fd < 0)
        return -EBADF;
    if (l->len + n > l->size && l->map != NULL && !l->no_alloc && l->len + n <= l->view) {
        size_t want = (l->len + n + TG_MAPLOG_GROW - 1) / TG_MAPLOG_GROW * TG_MAPLOG_GROW;
        if (want > l->view)
            want = l->view;
        int e = posix_fallocate(l->fd, (off_t)l->size, (off_t)(want - l->size));
        if (e == 0)
            l->size = want;
        else
            l->no_alloc = true; /* ENOSPC, or a file system without it: pwrite reports each failure */
    }
    if (l->map == NULL || l->no_alloc || l->len + n > l->size || l->len + n > l->view)
        return put_pwrite(l, s, n);
    memcpy(l->map + l->len, s, n);
    l->len += n;
    return 0;
}

int tg_maplog_cut(tg_maplog_t *l)
{
    if (l->fd < 0)
        return -EBADF;
    if (ftruncate(l->fd, (off_t)l->len) != 0)
        return -errno;
    l->size = l->len;
    return 0;
}

int tg_maplog_truncate(tg_maplog_t *l)
{
    if (l->fd < 0)
        return -EBADF;
    if (ftruncate(l->fd, 0) != 0)
        return -errno;
    l->len = l->size = 0;
    l->no_alloc = false;
    return 0;
}

int tg_maplog_sync(tg_maplog_t *l)
{
    if (l->fd < 0)
        return -EBADF;
    return fdatasync(l->fd) == 0 ? 0 : -errno;
}

void tg_maplog_close(tg_maplog_t *l)
{
    if (l == NULL)
        return;
    if (l->map != NULL)
        munmap(l->map, l->view);
    if (l->fd >= 0)
        close(l->fd);
    l->map = NULL;
    l->fd = -1;
}

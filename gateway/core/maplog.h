/*
 * maplog.h - an append-only file written through a shared memory mapping: an append is a copy
 * into the page cache, no system call. The settlement journal (gateway/src/ledger.c) appends every
 * usage record before the answer's last byte leaves; a write(2) there cost about 1.8 µs of the
 * call's thread per request, the copy costs a few dozen nanoseconds.
 *
 * What a killed process leaves: every byte an append copied (the pages belong to the kernel's
 * page cache, not to the process). What a machine crash leaves: what tg_maplog_sync flushed.
 *
 * The file grows in steps of TG_MAPLOG_GROW, each allocated with posix_fallocate before it is
 * written (a page of a shared mapping that the disk cannot hold would kill the process with
 * SIGBUS; fallocate says ENOSPC instead). Past the mapped view, or where fallocate is refused, an
 * append falls back to pwrite(2). So the file's size is a step above its data, and the rest of it
 * reads as zero bytes: a reader stops at the first NUL.
 *
 * Not thread-safe: one owner, or callers serialised by their own lock.
 */
#ifndef TG_MAPLOG_H
#define TG_MAPLOG_H

#include <stdbool.h>
#include <stddef.h>

#define TG_MAPLOG_GROW ((size_t)1 << 20)
#define TG_MAPLOG_VIEW ((size_t)1 << 30) /* address space mapped per file (not memory) */

typedef struct tg_maplog {
    int fd;
    char *map;     /* the shared view of the file's first `view` bytes; NULL: pwrite only */
    size_t view;   /* bytes mapped */
    size_t size;   /* the file's size (allocated) */
    size_t len;    /* bytes of data: where the next append goes */
    bool no_alloc; /* fallocate refused: appends go through pwrite until a truncate */
} tg_maplog_t;

/*
 * Opens (creates, mode 0600) path for appending after its data, which ends with its last newline;
 * the file is not changed (see tg_maplog_cut). lock: an exclusive flock, refused (-EWOULDBLOCK)
 * when another process holds it. 0, or a negative errno (the log is closed).
 */
int tg_maplog_open(tg_maplog_t *l, const char *path, bool lock);

/* Cuts off what follows the data (a line torn by a crash, the zeros of the last step): read the
 * file first if that matters. 0 or a negative errno. */
int tg_maplog_cut(tg_maplog_t *l);

/* Appends n bytes. 0, or a negative errno with nothing of it counted in the data. */
int tg_maplog_append(tg_maplog_t *l, const char *s, size_t n);

/* Empties the file (size 0). 0 or a negative errno. */
int tg_maplog_truncate(tg_maplog_t *l);

/* fdatasync: the data reaches the disk (the mapped pages included). 0 or a negative errno. */
int tg_maplog_sync(tg_maplog_t *l);

/* Unmaps and closes; the file keeps its data. NULL-safe, and safe on a log that failed to open. */
void tg_maplog_close(tg_maplog_t *l);

#endif

/*
 * rowarena.h - strings copied in by many threads, given back one by one by any thread, stored
 * packed in large blocks: no allocation per string, and no free of one thread's allocation on
 * another (glibc then takes the owning arena's lock, which the producing threads contend for).
 *
 * The settlement's writer queue (gateway/src/ledger.c) keeps its usage records here: every call
 * puts one (under the queue's lock), the writer thread releases each once committed.
 *
 * A block is freed when the arena has moved past it and its last string is released: each block
 * counts its strings not yet released plus one for the arena while it is the current one.
 * tg_rowarena_put is not thread-safe (its caller serialises the puts); tg_rowarena_release is.
 */
#ifndef TG_ROWARENA_H
#define TG_ROWARENA_H

#include <stddef.h>

struct tg_rowblk;

typedef struct tg_rowarena {
    struct tg_rowblk *cur; /* NULL until the first put */
    size_t block_size;     /* bytes of a block's strings (a larger string gets a block of its own) */
} tg_rowarena_t;

/* An empty arena whose blocks hold block_size bytes of strings. Allocates nothing yet. */
void tg_rowarena_init(tg_rowarena_t *a, size_t block_size);

/* A copy of s[0..n) and a NUL, in the arena; NULL when out of memory. Callers serialise. */
char *tg_rowarena_put(tg_rowarena_t *a, const char *s, size_t n);

/* Gives back a string of tg_rowarena_put (exactly once); any thread. NULL-safe. */
void tg_rowarena_release(char *s);

/* Drops the arena's hold on its current block (freed now if nothing in it is held, else with its
 * last string). The arena may be used again after tg_rowarena_init. */
void tg_rowarena_dispose(tg_rowarena_t *a);

#endif

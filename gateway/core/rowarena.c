/*
 * rowarena.c - packed, refcounted blocks of strings (rowarena.h).
 *
 * Each string is stored after a pointer to its block, aligned to the pointer's size, so a release
 * finds its block from the string alone.
 */
#include "rowarena.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tg_rowblk {
    atomic_size_t refs; /* strings not yet released, + 1 while the arena's current block */
    size_t used, cap;   /* bytes of data[] */
    alignas(max_align_t) char data[];
} rowblk_t;

#define SLOT_ALIGN sizeof(rowblk_t *)

static size_t slot_size(size_t n)
{
    size_t s = sizeof(rowblk_t *) + n + 1;
    return (s + SLOT_ALIGN - 1) & ~(SLOT_ALIGN - 1);
}

static void unref(rowblk_t *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

void tg_rowarena_init(tg_rowarena_t *a, size_t block_size)
{
    a->cur = NULL;
    a->block_size = block_size;
}

char *tg_rowarena_put(tg_rowarena_t *a, const char *s, size_t n)
{
    if (n > SIZE_MAX / 2)
        return NULL;
    size_t need = slot_size(n);
    rowblk_t *b = a->cur;
    if (b == NULL || b->cap - b->used < need) {
        size_t cap = need > a->block_size ? need : a->block_size;
        rowblk_t *nb = malloc(sizeof(*nb) + cap);
        if (nb == NULL)
            return NULL;
        atomic_init(&nb->refs, 1); /* the arena's */
        nb->used = 0;
        nb->cap = cap;
        a->cur = nb;
        if (b != NULL)
            unref(b); /* moved past it: freed with its last string */
        b = nb;
    }
    char *slot = b->data + b->used;
    memcpy(slot, &b, sizeof(b));
    char *str = slot + sizeof(b);
    memcpy(str, s, n);
    str[n] = '\0';
    b->used += need;
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return str;
}

void tg_rowarena_release(char *s)
{
    if (s == NULL)
        return;
    rowblk_t *b;
    memcpy(&b, s - sizeof(b), sizeof(b));
    unref(b);
}

void tg_rowarena_dispose(tg_rowarena_t *a)
{
    if (a->cur != NULL)
        unref(a->cur);
    a->cur = NULL;
}

/*
 * clock.h - time sources. Logic modules take `now` as an argument; only the
 * I/O edges call these.
 */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t tg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t tg_now_ms(void)
{
    return tg_now_us() / 1000u;
}

/* Wall-clock milliseconds since the epoch (for times stored in the database, such as expiry). */
static inline int64_t tg_unix_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t tg_unix_now(void)
{
    return (int64_t)time(NULL);
}

#endif

/*
 * log.h - structured logs: one JSON object per line, a stable "event" name.
 *
 * Each event is formatted into a bounded per-thread buffer. Until tg_log_start it is written at
 * once with one write(2) (the CLI, tests); once started, it is copied into a bounded in-memory
 * queue that one writer thread drains, so a slow or stalled sink (stderr a pipe nobody reads)
 * never blocks the thread that logs: when the queue is full the line is dropped and counted
 * (tg_log_dropped, tollgate_log_dropped_total). Either way lines never interleave. Never pass keys,
 * tokens, prompts or answers as values.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TG_LOG_ERROR = 0, TG_LOG_WARN = 1, TG_LOG_INFO = 2, TG_LOG_DEBUG = 3 } tg_log_level_t;

typedef struct tg_kv {
    const char *key;
    enum { TG_KV_T_END, TG_KV_T_STR, TG_KV_T_INT } type;
    union {
        const char *s;
        int64_t i;
    } v;
} tg_kv_t;

#define TG_KV_STR(k, x) ((tg_kv_t){.key = (k), .type = TG_KV_T_STR, .v.s = (x)})
#define TG_KV_INT(k, x) ((tg_kv_t){.key = (k), .type = TG_KV_T_INT, .v.i = (int64_t)(x)})
#define TG_KV_END       ((tg_kv_t){.key = NULL, .type = TG_KV_T_END})

void tg_log_set_level(tg_log_level_t l);
tg_log_level_t tg_log_level(void);
/** Sets the output fd (default 2). */
void tg_log_set_fd(int fd);
/**
 * Starts the writer thread with a queue of queue_bytes (at least two lines' worth). Info and debug
 * lines may fill three quarters of it, warnings and errors all of it, so a flood of access lines
 * cannot crowd out an error. Returns 0, TG_ENOMEM, or TG_EINTERNAL when a writer already runs or
 * the thread cannot start (lines are then written at once, as before). The thread blocks every
 * signal. Thread: main.
 */
int tg_log_start(size_t queue_bytes);
/**
 * Writes what is queued and stops the writer; lines are written at once again afterwards. Waits at
 * most timeout_ms (< 0: without bound) for a stalled sink: past it the writer is left to finish
 * on its own (the process is about to exit) and lines keep going to its queue. Thread: main.
 */
void tg_log_stop(int timeout_ms);
/** Lines dropped so far: the queue was full, or the sink refused the write. Thread: any. */
uint64_t tg_log_dropped(void);
void tg__log(tg_log_level_t level, const char *event, ...);

#define TG_LOG(level, ...)                            \
    do {                                              \
        if ((level) <= tg_log_level())                \
            tg__log((level), __VA_ARGS__, TG_KV_END); \
    } while (0)

/** Appends s as a JSON string body (without quotes) into dst; returns bytes written or -1 if it won't fit. */
int tg_json_escape(char *dst, size_t cap, const char *s);

#endif

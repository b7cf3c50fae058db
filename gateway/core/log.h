/*
 * log.h - structured logs: one JSON object per line, a stable "event" name.
 *
 * Each event is formatted into a bounded per-thread buffer and written with
 * one write(2), so lines never interleave. Never pass keys, tokens, prompts
 * or answers as values.
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
void tg__log(tg_log_level_t level, const char *event, ...);

#define TG_LOG(level, ...)                            \
    do {                                              \
        if ((level) <= tg_log_level())                \
            tg__log((level), __VA_ARGS__, TG_KV_END); \
    } while (0)

/** Appends s as a JSON string body (without quotes) into dst; returns bytes written or -1 if it won't fit. */
int tg_json_escape(char *dst, size_t cap, const char *s);

#endif

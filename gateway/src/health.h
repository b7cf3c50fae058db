/*
 * health.h - active health checks: periodic, jittered probes of each
 * provider's unbilled endpoint (the models list), run on one worker's loop so
 * they happen at most once per interval per instance. A failing probe counts
 * as a failure for every target of that provider; a passing probe of a
 * provider whose breaker is open brings its half-open probe forward.
 */
#ifndef TG_HEALTH_H
#define TG_HEALTH_H

#include "config.h"
#include "upstream.h"

typedef struct tg_health tg_health_t;

tg_health_t *tg_health_start(h2o_loop_t *loop, tg_upstream_t *up);
/** Applies a new config snapshot (after reload); probes follow its providers. */
void tg_health_apply(tg_health_t *h, tg_config_t *cfg);
void tg_health_stop(tg_health_t *h);

#endif

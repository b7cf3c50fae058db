/*
 * metrics.h - Prometheus counters and histograms, rendered on the admin listener.
 *
 * A family is registered once (name, help, type); a series is a family plus
 * a label string such as `from="a",to="b"` (label values are escaped by
 * tg_metrics_label). Updates are lock-free after a series exists. Thread: any.
 * An update of a family that was never registered creates it with the type the
 * update implies (add: counter, set: gauge, observe: histogram) and no HELP;
 * a later tg_metrics_register fills both in. Limits: 64 families, 2048 series,
 * label strings under 512 bytes; beyond them updates are dropped and counted in
 * tollgate_metrics_series_dropped_total.
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum { TG_METRIC_COUNTER, TG_METRIC_GAUGE, TG_METRIC_HISTOGRAM } tg_metric_type_t;

void tg_metrics_register(const char *name, const char *help, tg_metric_type_t type);
void tg_metrics_add(const char *name, const char *labels, double delta);
void tg_metrics_set(const char *name, const char *labels, double value);
/** Observes a value in seconds (histogram buckets 1ms..60s). */
void tg_metrics_observe(const char *name, const char *labels, double seconds);
/** A callback run at render time to set gauges (breaker states, active streams). */
void tg_metrics_on_render(void (*fn)(void *ud), void *ud);
TG_MUST_CHECK int tg_metrics_render(tg_buf_t *out);
/** Appends key="escaped value" to dst (comma-separated when dst is not empty). */
void tg_metrics_label(char *dst, size_t cap, const char *key, const char *value);
/** Current value of a counter or gauge, or a histogram's count; 0 when the series does not exist. */
double tg_metrics_get(const char *name, const char *labels);
/** Zeroes every series, keeping families, series and render hooks (tests). */
void tg_metrics_reset(void);

#endif

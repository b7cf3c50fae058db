/*
 * pathguard.h - refuses admin paths with dot segments. h2o normalises "/a/b/../c" to "/a/c"
 * before routing, so "/tenants/1/keys/../policy" would reach the tenant's policy: never a leak
 * (the normalised path is authorised as any other), but a client that sent a dot segment made a
 * mistake or is probing, and the admin API answers it as a path of no route (404, after the
 * token is checked), like any other odd segment. "." and ".." count in any spelling ("%2e",
 * "%2E.", ...). An encoded slash ("%2f") needs no guard: h2o keeps it inside its segment, which
 * no route's parameter accepts, except the breaker reset route that decodes its target itself.
 */
#ifndef TG_ADMIN_PATHGUARD_H
#define TG_ADMIN_PATHGUARD_H

#include <stdbool.h>
#include <stddef.h>

/** True when a segment of the raw path (up to '?' or len) is "." or ".." (raw or %2e-encoded). Pure. */
bool tg_adm_path_has_dot_segment(const char *raw, size_t len);

#endif

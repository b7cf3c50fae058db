-- 0006_rate_limits: the rate limits' windows, shared by every gateway instance on this database
-- (gateway/src/ratelease.c; docs/CONVENTIONS.md, "Rate limits").
-- Applied by `tollgate migrate` inside one transaction; forward-only.

-- One row per scope (an API key or a tenant) and fixed window: what every instance together was
-- leased of the window's limits. An instance leases a slice with one atomic INSERT ... ON CONFLICT
-- DO UPDATE that never takes `requests` or `tokens` past the limit it names, and admits calls in
-- memory against its slice; the *_granted columns say what the last lease added (its answer), and
-- seq counts the statements on the row, so that an instance can tell the newest of its answers.
-- window_start is unix milliseconds, a multiple of window_ms (limits.rate_window_ms, 60000);
-- window_end = window_start + window_ms, which the periodic sweep deletes by.
--
-- UNLOGGED: a lease is written on the request path and the rows matter for one window only, so
-- they cost no WAL. A crash of PostgreSQL empties the table: the windows under way start over,
-- which can admit up to one more limit's worth in them (documented); a replica has no rows.
CREATE UNLOGGED TABLE rate_windows (
    scope            text    NOT NULL CHECK (scope IN ('key', 'tenant')),
    scope_id         bigint  NOT NULL,
    window_start     bigint  NOT NULL,
    window_ms        integer NOT NULL CHECK (window_ms > 0),
    window_end       bigint  NOT NULL,
    requests         bigint  NOT NULL DEFAULT 0 CHECK (requests >= 0),
    tokens           bigint  NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    requests_granted bigint  NOT NULL DEFAULT 0,
    tokens_granted   bigint  NOT NULL DEFAULT 0,
    seq              bigint  NOT NULL DEFAULT 1,
    PRIMARY KEY (scope, scope_id, window_start, window_ms)
);
CREATE INDEX rate_windows_end_idx ON rate_windows (window_end);

-- 0002_failover_served: one failover event row per hop (gateway/src/FAILOVER.md, "Failover events").
-- Applied by `tollgate migrate` inside one transaction; forward-only.

-- A request used to write one row per skipped or failed attempt plus a summary row of kind
-- `fallback` (first target -> serving target). With a dead primary every request wrote two rows
-- saying the same thing, and during a failover storm that second row was most of PostgreSQL's
-- cost. Now the hop into the target that then served carries the fallback instead: `served` is
-- true on that one row and false on every other. Rows written before this migration keep their
-- `fallback` rows and read served = false.
--
-- A constant default makes this a catalogue change only (no table rewrite, PostgreSQL >= 11), so
-- it is quick on a large table. Gateways that write `served` need this migration first: run
-- `tollgate migrate` before starting them, or their event batches are rejected (and counted in
-- tollgate_events_dropped_total).
ALTER TABLE failover_events ADD COLUMN served boolean NOT NULL DEFAULT false;

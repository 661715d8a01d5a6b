-- Indexes that only the store's maintenance queries with no production caller read
-- (steps_ready, steps_timed_out, batches_orphaned, state_counts); every step update paid for them.
DROP INDEX IF EXISTS tasker_steps_state;
DROP INDEX IF EXISTS tasker_steps_candidates;
DROP INDEX IF EXISTS tasker_steps_in_flight;
DROP INDEX IF EXISTS tasker_batches_unfinished;

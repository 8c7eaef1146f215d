-- What an event owes, in one index: a job to Kafka (`publish_at` has passed: the outbox
-- relay's range), or a delivery that shows no progress (`pending`/`retrying`, no job
-- owed, the current job published long ago: the backstop's range). It replaces the
-- outbox's index on `publish_at` alone, so the hot path keeps one index to maintain.
ALTER TABLE event_logs
    DROP INDEX ix_events_outbox,
    ADD INDEX ix_events_owed (publish_at, execution_status, published_at);

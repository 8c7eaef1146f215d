-- When an occurrence's job reached Kafka, kept with the occurrence. The event row's
-- `published_at` is the delivery backstop's clock: each retry's publish and a replay
-- rewrite it, so an occurrence's publish time (and its delay, publish time - fire_at)
-- read from there changed after the firing. NULL for rows fired before this column and
-- for backfilled firings (published after their row is written): the event's is shown.
ALTER TABLE trigger_schedules ADD COLUMN published_at DATETIME(3) NULL AFTER event_id;

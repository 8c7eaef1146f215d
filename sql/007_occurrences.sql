-- Occurrences you can see and steer: an occurrence row keeps its nominal time
-- (scheduled_for, which its event id derives from) apart from the time it fires
-- (fire_at = scheduled_for + the trigger's jitter offset), and says why it did not fire
-- (status 'missed' with a note, or 'cancelled').
--
-- Each statement may run again after a half-applied attempt: a duplicate column is
-- skipped by `triggerd migrate`, the UPDATE and MODIFY change nothing the second time,
-- and the key is dropped and added again.

ALTER TABLE trigger_schedules
    ADD COLUMN scheduled_for DATETIME(3) NULL AFTER trigger_id,
    ADD COLUMN note VARCHAR(255) NULL AFTER event_id;

UPDATE trigger_schedules SET scheduled_for = fire_at WHERE scheduled_for IS NULL;

ALTER TABLE trigger_schedules MODIFY scheduled_for DATETIME(3) NOT NULL;

-- One row per trigger and nominal occurrence: two schedulers inserting "the next one"
-- make one row, whatever its jitter. The key also serves a trigger's history (newest
-- first) and its next pending occurrence.
ALTER TABLE trigger_schedules
    DROP INDEX uq_schedules_occurrence,
    ADD UNIQUE KEY uq_schedules_occurrence (trigger_id, scheduled_for);

-- The W3C trace context of each event: the trace its firing belongs to (a webhook
-- caller's, or a new one) and the span that fired it. Workers send a child of it with
-- every delivery attempt. NULL for events written before this column existed.
-- Added last: MariaDB 10.3+ and MySQL 8 add a trailing nullable column instantly,
-- without rebuilding the table.
ALTER TABLE event_logs ADD COLUMN traceparent CHAR(55) CHARACTER SET ascii NULL;

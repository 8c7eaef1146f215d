-- The worker claims the attempt rows of many jobs with one multi-row INSERT. When some
-- of those rows already existed (a redelivered job), the statement's row count does not
-- say which: each claim carries a random token, and the rows holding it are ours.
ALTER TABLE delivery_attempts ADD COLUMN claim BIGINT NULL AFTER started_at;

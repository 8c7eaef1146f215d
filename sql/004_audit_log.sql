-- The audit log: one row per change made through the API (or by the daemon itself),
-- written in the transaction of the change. No foreign keys: an entry outlives the
-- trigger or event it names (a deleted trigger's history is what one looks for).
CREATE TABLE audit_log (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    at          DATETIME(3)  NOT NULL,
    actor       VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL, -- a key name, anonymous, system
    action      VARCHAR(32)  CHARACTER SET ascii NOT NULL,  -- trigger.created, event.replayed…
    trigger_id  CHAR(36)     CHARACTER SET ascii NULL,
    event_id    CHAR(36)     CHARACTER SET ascii NULL,
    request_id  VARCHAR(200) CHARACTER SET ascii NULL,      -- the request's X-Request-ID
    changes     LONGTEXT     NULL,                          -- JSON {field: [old, new]}
    PRIMARY KEY (id),
    -- Newest first, by time alone (and retention's batches, oldest first) or within one
    -- filter value; InnoDB appends the id to each, which breaks ties in the same order.
    KEY ix_audit_at (at),
    KEY ix_audit_trigger (trigger_id, at),
    KEY ix_audit_actor (actor, at),
    KEY ix_audit_action (action, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

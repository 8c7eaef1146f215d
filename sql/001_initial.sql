-- triggerd schema v1. MySQL 8 / MariaDB 10.11. All times are UTC, DATETIME(3).
-- Every statement is safe to run once; `triggerd migrate` records applied versions
-- in schema_migrations and never runs a file twice.

CREATE TABLE triggers (
    id          CHAR(36)     CHARACTER SET ascii NOT NULL,
    name        VARCHAR(255) NOT NULL,
    type        VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    status      VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    config      LONGTEXT     NOT NULL,           -- JSON, validated by the API
    version     INT          NOT NULL DEFAULT 1, -- bumped on every update (validator cache key)
    created_at  DATETIME(3)  NOT NULL,
    updated_at  DATETIME(3)  NOT NULL,
    PRIMARY KEY (id),
    KEY ix_triggers_created (created_at, id),
    KEY ix_triggers_type_status (type, status, created_at),
    KEY ix_triggers_status (status, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per occurrence. The scheduler claims due rows with a lease
-- (claimed_by, lease_until); an expired lease makes a dead claimer's rows claimable again.
CREATE TABLE trigger_schedules (
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    trigger_id      CHAR(36)     CHARACTER SET ascii NOT NULL,
    fire_at         DATETIME(3)  NOT NULL,        -- the occurrence's due time (scheduled_for)
    status          VARCHAR(16)  CHARACTER SET ascii NOT NULL DEFAULT 'pending',
                                                  -- pending|processing|completed|cancelled
    attempt_count   INT          NOT NULL DEFAULT 0, -- publish attempts
    last_attempt_at DATETIME(3)  NULL,
    retry_at        DATETIME(3)  NULL,            -- publish backoff after a Kafka failure
    claimed_by      VARCHAR(64)  CHARACTER SET ascii NULL,
    lease_until     DATETIME(3)  NULL,
    event_id        CHAR(36)     CHARACTER SET ascii NULL,
    created_at      DATETIME(3)  NOT NULL,
    updated_at      DATETIME(3)  NOT NULL,
    PRIMARY KEY (id),
    -- one occurrence per trigger and instant: two schedulers inserting "the next one"
    -- cannot create two rows
    UNIQUE KEY uq_schedules_occurrence (trigger_id, fire_at),
    KEY ix_schedules_due (status, fire_at),
    KEY ix_schedules_lease (status, lease_until)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE event_logs (
    id               CHAR(36)     CHARACTER SET ascii NOT NULL,
    trigger_id       CHAR(36)     CHARACTER SET ascii NULL,   -- NULL: ephemeral test run
    trigger_name     VARCHAR(255) NOT NULL,
    trigger_type     VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    source           VARCHAR(16)  CHARACTER SET ascii NOT NULL, -- webhook|scheduler|manual-test
    is_test_run      TINYINT(1)   NOT NULL DEFAULT 0,
    note             VARCHAR(255) NULL,
    payload          LONGTEXT     NOT NULL,        -- JSON
    delivery         LONGTEXT     NULL,            -- JSON snapshot: endpoint, method, headers, timeout, retry, signing
    scheduled_for    DATETIME(3)  NULL,
    fired_at         DATETIME(3)  NOT NULL,
    publish_at       DATETIME(3)  NULL,            -- outbox: a job is owed to Kafka from this time, NULL = none owed
    publish_attempt  INT          NOT NULL DEFAULT 1, -- the `attempt` the owed job carries
    published_at     DATETIME(3)  NULL,
    execution_status VARCHAR(16)  CHARACTER SET ascii NOT NULL DEFAULT 'pending',
                                                   -- pending|retrying|success|failed|published
    attempts         INT          NOT NULL DEFAULT 0,
    attempt_base     INT          NOT NULL DEFAULT 0, -- attempts before the current series (replay)
    response_status  SMALLINT     NULL,
    error_message    TEXT         NULL,
    delivered_at     DATETIME(3)  NULL,
    retention_status VARCHAR(16)  CHARACTER SET ascii NOT NULL DEFAULT 'active',
    created_at       DATETIME(3)  NOT NULL,
    PRIMARY KEY (id),
    KEY ix_events_list (retention_status, fired_at),
    KEY ix_events_retention_trigger (retention_status, trigger_id, fired_at),
    KEY ix_events_trigger (trigger_id, fired_at),
    KEY ix_events_outbox (publish_at),
    KEY ix_events_fired (fired_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per delivery attempt; the primary key makes a redelivered job unable to
-- record the same attempt twice.
CREATE TABLE delivery_attempts (
    event_id        CHAR(36)    CHARACTER SET ascii NOT NULL,
    attempt         INT         NOT NULL,
    started_at      DATETIME(3) NOT NULL,
    finished_at     DATETIME(3) NULL,
    response_status SMALLINT    NULL,
    latency_ms      INT         NULL,
    error           TEXT        NULL,
    PRIMARY KEY (event_id, attempt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Idempotency-Key of webhook ingestion: the same key for the same trigger returns
-- the first event. Deleted with its event by retention.
CREATE TABLE idempotency_keys (
    trigger_id      CHAR(36)     CHARACTER SET ascii NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    event_id        CHAR(36)     CHARACTER SET ascii NOT NULL,
    created_at      DATETIME(3)  NOT NULL,
    PRIMARY KEY (trigger_id, idempotency_key),
    KEY ix_idempotency_event (event_id),
    KEY ix_idempotency_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Delivery safety: the health of each endpoint (a trigger's endpoint URL without its
-- query string), shared by every worker process, and why a trigger was set inactive.

-- One row per endpoint that saw a delivery attempt. `url_hash` is SHA2(url, 256) in hex,
-- the same value as triggers.endpoint_key, so "the triggers of an endpoint" is an index
-- lookup. The circuit: closed (deliver) → open after N consecutive retryable failures
-- (deliver nothing until next_probe_at) → half_open (one probe, leased until
-- probe_until) → closed on success, or open again with the cool-down doubled.
CREATE TABLE endpoints (
    url_hash             CHAR(64)      CHARACTER SET ascii NOT NULL,
    url                  VARCHAR(2048) NOT NULL,
    state                VARCHAR(16)   CHARACTER SET ascii NOT NULL DEFAULT 'closed',
                                                         -- closed|open|half_open
    consecutive_failures INT           NOT NULL DEFAULT 0,
    failing_since        DATETIME(3)   NULL,             -- first failure after the last success
    last_success_at      DATETIME(3)   NULL,
    last_failure_at      DATETIME(3)   NULL,
    opened_at            DATETIME(3)   NULL,             -- when it left closed (NULL while closed)
    next_probe_at        DATETIME(3)   NULL,             -- open: when the cool-down ends
    cooldown_ms          INT           NOT NULL DEFAULT 0, -- the current cool-down (doubles)
    probe_until          DATETIME(3)   NULL,             -- half_open: the probe's lease
    created_at           DATETIME(3)   NOT NULL,
    updated_at           DATETIME(3)   NOT NULL,
    PRIMARY KEY (url_hash),
    KEY ix_endpoints_state (state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The endpoint a trigger delivers to, as endpoints.url_hash: computed by the database
-- from the stored config, so no writer can forget it.
ALTER TABLE triggers
    ADD COLUMN endpoint_key CHAR(64) CHARACTER SET ascii
        AS (SHA2(SUBSTRING_INDEX(SUBSTRING_INDEX(
            JSON_UNQUOTE(JSON_EXTRACT(config, '$.endpoint')), '#', 1), '?', 1), 256)) VIRTUAL,
    ADD KEY ix_triggers_endpoint (endpoint_key, status);

-- Why a trigger is inactive when triggerd set it so (auto-disable); NULL otherwise.
ALTER TABLE triggers ADD COLUMN status_reason VARCHAR(255) NULL AFTER status;

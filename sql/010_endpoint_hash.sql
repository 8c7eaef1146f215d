-- The endpoint a trigger delivers to (endpoints.url_hash: SHA-256 in hex of its endpoint
-- URL without query string or fragment), now written by triggerd with the config
-- (domain/circuit.py endpoint_key) instead of computed by the database.
--
-- The generated column of 005 read the endpoint with JSON_EXTRACT, which MariaDB refuses
-- on a document nested deeper than 32 levels: a trigger whose payload or schema nested
-- that deep could not be stored at all. The hash and the cut are the same, so existing
-- rows keep their value. A re-run after a failure finds endpoint_key still there: it is
-- dropped last.
ALTER TABLE triggers ADD COLUMN endpoint_hash CHAR(64) CHARACTER SET ascii NULL AFTER config;
UPDATE triggers SET endpoint_hash = endpoint_key WHERE endpoint_hash IS NULL;
ALTER TABLE triggers ADD KEY ix_triggers_endpoint_hash (endpoint_hash, status);
ALTER TABLE triggers DROP INDEX ix_triggers_endpoint, DROP COLUMN endpoint_key;

-- Labels of a trigger: up to 20 key/value pairs, replaced whole by an update. One row a
-- pair: the list filter `label=key:value` (or `key:` for any value) finds the triggers
-- through ix_trigger_labels_pair, and a page's labels are read by the primary key.
CREATE TABLE trigger_labels (
    trigger_id   CHAR(36)     CHARACTER SET ascii NOT NULL,
    label_key    VARCHAR(63)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    label_value  VARCHAR(255) COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (trigger_id, label_key),
    KEY ix_trigger_labels_pair (label_key, label_value, trigger_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

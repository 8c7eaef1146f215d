"""The literal SQL of event inserts (store/event_rows.py, store/literals.py): it bypasses
the driver's parameter escaping for speed, so it must escape, quote and group exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggerd.ingest import pipeline as ingest
from triggerd.store import event_rows, literals
from triggerd.store.event_rows import EventRecord


def record(**changes: object) -> EventRecord:
    fired = datetime(2026, 11, 22, 18, 0, 0, 123456, tzinfo=UTC)
    values: dict[str, object] = dict(
        id="3a6b2ddc-9ce9-44dc-a665-de9f30193887", trigger_id="t-1", trigger_name="o'rders",
        trigger_type="webhook", source="webhook", is_test_run=False, payload={"a": "x'y"},
        delivery={"endpoint": "http://h/p"}, fired_at=fired,
        publish_at=fired + timedelta(seconds=5),
    )  # fmt: skip
    values.update(changes)
    return EventRecord(**values)  # type: ignore[arg-type]


def test_one_row_renders_every_column() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    [sql] = event_rows.insert_statements([record(note="n\\ote", traceparent=traceparent)])
    assert sql.startswith(event_rows.INSERT_EVENTS_HEAD)
    row = sql[len(event_rows.INSERT_EVENTS_HEAD):]
    payload_hex = orjson.dumps({"a": "x'y"}).hex()
    delivery_hex = orjson.dumps({"endpoint": "http://h/p"}).hex()
    assert row == (
        "('3a6b2ddc-9ce9-44dc-a665-de9f30193887','t-1','o\\'rders','webhook','webhook',0,"
        f"'n\\\\ote',_utf8mb4 X'{payload_hex}',_utf8mb4 X'{delivery_hex}',NULL,"
        "'2026-11-22 18:00:00.123','2026-11-22 18:00:05.123',1,NULL,'pending','active',"
        f"'2026-11-22 18:00:00.123','{traceparent}')"
    )


def test_a_pre_encoded_payload_is_used() -> None:
    encoded = b'{"z":1}'
    [sql] = event_rows.insert_statements([record(payload_json=encoded)])
    assert "_utf8mb4 X'" + encoded.hex() + "'" in sql


def test_statements_are_split_under_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_rows, "_MAX_STATEMENT", 1200)
    statements = event_rows.insert_statements([record(id=f"id-{i}") for i in range(10)])
    assert len(statements) > 1
    assert sum(s.count("('id-") for s in statements) == 10
    assert all(s.startswith(event_rows.INSERT_EVENTS_HEAD) for s in statements)


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5))
def test_uuid_literals_quote_or_escape(ids: list[str]) -> None:
    rendered = literals.uuid_literals(ids)
    for value in ids:
        if literals._UUID_CHARS.fullmatch(value):
            assert f"'{value}'" in rendered
    # whatever the ids, the list is safe to pass through the driver's %-formatting
    assert "%" not in rendered.replace("%%", "")


def test_uuid_literals_of_our_ids() -> None:
    ids = ["3a6b2ddc-9ce9-44dc-a665-de9f30193887", "0ec72573-2200-4000-8000-00000a44e3ca"]
    assert literals.uuid_literals(ids) == f"'{ids[0]}','{ids[1]}'"


def test_idempotent_inserts_for_the_scheduler_and_worker_raise_no_warning() -> None:
    # Not INSERT IGNORE: its "Duplicate entry" warning costs a SHOW WARNINGS round trip
    # and surfaced as a raw Python warning on stderr.
    [sql] = event_rows.insert_statements([record()], existing_kept=True)
    plain = event_rows.insert_statements([record()])[0]
    assert "IGNORE" not in sql
    assert sql == plain + " ON DUPLICATE KEY UPDATE id = id"


def test_time_and_text_literals() -> None:
    when, text = literals.times(), literals.texts()
    aware = datetime(2026, 3, 29, 1, 30, 0, 999999, tzinfo=UTC)
    assert when(aware) == "'2026-03-29 01:30:00.999'"  # truncated as DATETIME(3) stores it
    assert when(aware.replace(tzinfo=None)) == "'2026-03-29 01:30:00.999'"
    assert when(None) == "NULL"
    assert text("it's") == "'it\\'s'" and text(None) == "NULL"


def test_the_outbox_clear_gives_each_publish_batch_its_own_time() -> None:
    first, second = "3a6b2ddc-9ce9-44dc-a665-de9f30193887", "x'%"
    t1, t2 = "'2026-11-23 04:00:00.125'", "'2026-11-23 04:00:00.165'"
    one = ingest.clear_statement([ingest.PublishedJob(first, 1, t1)])
    assert one == (f"UPDATE event_logs SET publish_at = NULL, published_at = {t1}"
                   f" WHERE id IN ('{first}') AND publish_attempt = %s"
                   " AND published_at IS NULL")  # fmt: skip
    two = ingest.clear_statement([ingest.PublishedJob(first, 1, t1),
                                  ingest.PublishedJob(second, 1, t2)])  # fmt: skip
    # Not a UUID: escaped, and its % doubled for the driver's formatting of the attempt.
    assert f"published_at = CASE WHEN id IN ('{first}') THEN {t1}" in two
    assert f" WHEN id IN ('x\\'%%') THEN {t2} END WHERE id IN ('{first}','x\\'%%')" in two

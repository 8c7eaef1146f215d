"""Writing event rows: shared by the scheduler, webhook ingestion, test runs and the worker.

The outbox: `publish_at` says a job (for attempt `publish_attempt`) is owed to Kafka from
that time on. Whoever writes an event it will publish at once sets `publish_at` a few
seconds ahead (a grace the fast path has to publish and clear it); if that fails, the
relay finds the row once the grace has passed and publishes it. Retries of a failed
delivery use the same column with the backoff as the time. `published_at` records when
the owed attempt's job last went out: the delivery backstop's clock (store/outbox.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from triggerd.domain.contract import TriggerConfig
from triggerd.store.literals import json_hex, statements, texts, times
from triggerd.store.literals import text as unique_text  # not remembered: one per row

# Keys of a trigger's config that the worker needs to deliver; snapshotted into the
# event so a later edit or delete of the trigger does not change an event in flight.
DELIVERY_KEYS = TriggerConfig.DELIVERY_KEYS


def delivery_snapshot(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: config[key] for key in DELIVERY_KEYS if key in config}


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: str
    trigger_id: str | None
    trigger_name: str
    trigger_type: str
    source: str  # webhook | scheduler | manual-test
    is_test_run: bool
    payload: Any
    delivery: dict[str, Any]
    fired_at: datetime
    scheduled_for: datetime | None = None
    note: str | None = None
    publish_at: datetime | None = None  # outbox: None when already published
    published_at: datetime | None = None
    execution_status: str = "pending"
    # `payload` already encoded (domain.payloads.encode_payload), when the writer has it.
    payload_json: bytes | None = field(default=None, compare=False, repr=False)
    traceparent: str | None = None  # W3C trace context of the firing (domain/tracecontext.py)

    def payload_bytes(self) -> bytes:
        if self.payload_json is not None:
            return self.payload_json
        return orjson.dumps(self.payload)


async def insert_events(cur: Any, records: Sequence[EventRecord]) -> int:
    """An event that already exists (same id) is left as it is, which is what makes
    re-claims and redeliveries unable to create a second event. Returns the number of
    rows actually inserted (a no-op update of an existing row counts 0)."""
    inserted = 0
    for statement in insert_statements(records, existing_kept=True):
        inserted += int(await cur.execute(statement))
    return inserted


# One row of event_logs, as the multi-row INSERTs below write it. The VALUES are rendered
# here (store/literals.py): at thousands of rows a second, the generic parameter
# escaping of the driver costs more than the database does.
_EVENT_COLUMNS = ("id, trigger_id, trigger_name, trigger_type, source, is_test_run, note,"
                  " payload, delivery, scheduled_for, fired_at, publish_at, publish_attempt,"
                  " published_at, execution_status, retention_status, created_at,"
                  " traceparent")  # fmt: skip
INSERT_EVENTS_HEAD = f"INSERT INTO event_logs ({_EVENT_COLUMNS}) VALUES "
# A no-op update rather than INSERT IGNORE: same effect on a duplicate id, but no
# "Duplicate entry" warning (which the driver fetches with an extra SHOW WARNINGS round
# trip and re-raises as a Python warning), and other errors stay errors.
KEEP_EXISTING_TAIL = " ON DUPLICATE KEY UPDATE id = id"
_MAX_STATEMENT = 2 * 1024 * 1024  # characters; well below any max_allowed_packet


def insert_statements(records: Sequence[EventRecord], *, existing_kept: bool = False
                      ) -> list[str]:  # fmt: skip
    """Multi-row INSERTs of `records` (rows whose id exists are left alone when
    `existing_kept`), literal values escaped as the driver does, each under
    _MAX_STATEMENT characters.

    Values that repeat across a batch (trigger ids and names, times, delivery settings,
    one snapshot per trigger) are rendered once per batch."""
    text, when = texts(), times()
    deliveries: dict[int, str] = {}
    tail = KEEP_EXISTING_TAIL if existing_kept else ""

    def delivery(value: dict[str, Any]) -> str:
        # By identity: the records of one trigger share its snapshot, alive meanwhile.
        literal = deliveries.get(id(value))
        if literal is None:
            literal = deliveries[id(value)] = json_hex(orjson.dumps(value))
        return literal

    rows: list[str] = []
    for r in records:
        fired = when(r.fired_at)
        rows.append(f"({text(r.id)},{text(r.trigger_id)},{text(r.trigger_name)},"
                    f"{text(r.trigger_type)},{text(r.source)},{1 if r.is_test_run else 0},"
                    f"{text(r.note)},{json_hex(r.payload_bytes())},{delivery(r.delivery)},"
                    f"{when(r.scheduled_for)},{fired},{when(r.publish_at)},1,"
                    f"{when(r.published_at)},{text(r.execution_status)},'active',{fired},"
                    f"{unique_text(r.traceparent)})")  # fmt: skip
    return statements(INSERT_EVENTS_HEAD, rows, tail, limit=_MAX_STATEMENT)

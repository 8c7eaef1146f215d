"""Writing event rows: shared by the scheduler, webhook ingestion, test runs and the worker.

The outbox: `publish_at` says a job (for attempt `publish_attempt`) is owed to Kafka from
that time on. Whoever writes an event it will publish at once sets `publish_at` a few
seconds ahead (a grace the fast path has to publish and clear it); if that fails, the
relay finds the row once the grace has passed and publishes it. Retries of a failed
delivery use the same column with the backoff as the time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from triggerd.timeutil import to_db

# Keys of a trigger's config that the worker needs to deliver; snapshotted into the
# event so a later edit or delete of the trigger does not change an event in flight.
DELIVERY_KEYS = ("endpoint", "http_method", "headers", "timeout_seconds", "retry",
                 "signing_secret")  # fmt: skip


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
    # `payload` already encoded (api.payloads.encode_payload), when the writer has it.
    payload_json: bytes | None = field(default=None, compare=False, repr=False)

    def payload_bytes(self) -> bytes:
        if self.payload_json is not None:
            return self.payload_json
        return orjson.dumps(self.payload)

    def params(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger_id": self.trigger_id,
            "trigger_name": self.trigger_name,
            "trigger_type": self.trigger_type,
            "source": self.source,
            "is_test_run": 1 if self.is_test_run else 0,
            "note": self.note,
            "payload": self.payload_bytes().decode(),
            "delivery": orjson.dumps(self.delivery).decode(),
            "scheduled_for": to_db(self.scheduled_for),
            "fired_at": to_db(self.fired_at),
            "publish_at": to_db(self.publish_at),
            "published_at": to_db(self.published_at),
            "execution_status": self.execution_status,
        }


INSERT_EVENT = (
    "INSERT IGNORE INTO event_logs (id, trigger_id, trigger_name, trigger_type, source,"
    " is_test_run, note, payload, delivery, scheduled_for, fired_at, publish_at,"
    " publish_attempt, published_at, execution_status, retention_status, created_at)"
    " VALUES (%(id)s, %(trigger_id)s, %(trigger_name)s, %(trigger_type)s, %(source)s,"
    " %(is_test_run)s, %(note)s, %(payload)s, %(delivery)s, %(scheduled_for)s, %(fired_at)s,"
    " %(publish_at)s, 1, %(published_at)s, %(execution_status)s, 'active', %(fired_at)s)"
)


async def insert_events(cur: Any, records: Sequence[EventRecord]) -> int:
    """INSERT IGNORE: an event that already exists (same id) is left as it is, which is
    what makes re-claims and redeliveries unable to create a second event. Returns the
    number of rows actually inserted."""
    if not records:
        return 0
    return int(await cur.executemany(INSERT_EVENT, [r.params() for r in records]))

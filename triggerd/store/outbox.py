"""The outbox's SQL (protocol in store/event_rows.py): event rows whose `publish_at` has
passed owe Kafka a job for attempt `publish_attempt`.

Claiming is one short transaction: `SELECT … WHERE publish_at <= now ORDER BY publish_at
LIMIT n FOR UPDATE SKIP LOCKED` (a range on ix_events_outbox), then the claimed rows'
`publish_at` is pushed to a lease, so other relays skip them now and pick them up again
if this one dies before it settles them. Settling compares against the lease: a row that
someone re-owed meanwhile (a retry, a replay) is left as they wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from triggerd.domain.jobs import Job
from triggerd.domain.timeutil import from_db, to_db
from triggerd.store.db import Database

_CLAIM = (
    "SELECT id, trigger_id, trigger_type, source, is_test_run, payload, scheduled_for,"
    " fired_at, publish_attempt, traceparent FROM event_logs"
    " WHERE publish_at <= %(now)s ORDER BY publish_at LIMIT %(limit)s"
    " FOR UPDATE SKIP LOCKED"
)


@dataclass(frozen=True)
class OwedJob:
    job: Job
    lease: datetime  # the publish_at this relay wrote when it claimed the row (to_db'd
    # the same way on every write, so comparisons match at millisecond precision)


async def claim_due(db: Database, now: datetime, lease: datetime, limit: int) -> list[OwedJob]:
    """Claim up to `limit` rows that owe a job, oldest debt first."""
    async with db.transaction() as cur:
        await cur.execute(_CLAIM, {"now": to_db(now), "limit": limit})
        rows = list(await cur.fetchall())
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        marks = ", ".join(["%s"] * len(ids))
        await cur.execute(
            f"UPDATE event_logs SET publish_at = %s WHERE id IN ({marks})",
            [to_db(lease), *ids],
        )
    owed = []
    for row in rows:
        fired_at = from_db(row["fired_at"])
        assert fired_at is not None
        job = Job(
            event_id=row["id"],
            trigger_id=row["trigger_id"],
            type=row["trigger_type"],
            source=row["source"],
            is_test_run=bool(row["is_test_run"]),
            payload=orjson.loads(row["payload"]),
            scheduled_for=from_db(row["scheduled_for"]),
            fired_at=fired_at,
            attempt=int(row["publish_attempt"]),
            traceparent=row["traceparent"],
        )
        owed.append(OwedJob(job, lease))
    return owed


async def mark_published(db: Database, owed: Sequence[OwedJob], now: datetime) -> None:
    """The jobs are on Kafka: the debt is paid unless someone re-owed the row meanwhile."""
    await db.executemany(
        "UPDATE event_logs SET published_at = COALESCE(published_at, %(now)s),"
        " publish_at = IF(publish_at <=> %(lease)s AND publish_attempt = %(attempt)s,"
        " NULL, publish_at) WHERE id = %(id)s",
        [
            {"id": o.job.event_id, "attempt": o.job.attempt, "lease": to_db(o.lease),
             "now": to_db(now)}
            for o in owed
        ],
    )  # fmt: skip


async def postpone(db: Database, owed: Sequence[OwedJob], retry_at: datetime) -> None:
    """Publishing failed: still owed, retried from `retry_at`."""
    await db.executemany(
        "UPDATE event_logs SET publish_at = %(retry_at)s"
        " WHERE id = %(id)s AND publish_at <=> %(lease)s",
        [{"id": o.job.event_id, "lease": to_db(o.lease), "retry_at": to_db(retry_at)}
         for o in owed],
    )  # fmt: skip

"""The outbox's SQL (protocol in store/event_rows.py): event rows whose `publish_at` has
passed owe Kafka a job for attempt `publish_attempt`.

Claiming is one short transaction: `SELECT … WHERE publish_at <= now ORDER BY publish_at
LIMIT n FOR UPDATE SKIP LOCKED` (a range on ix_events_owed), then the claimed rows'
`publish_at` is pushed to a lease, so other relays skip them now and pick them up again
if this one dies before it settles them. Settling compares against the lease: a row that
someone re-owed meanwhile (a retry, a replay) is left as they wrote it, and records when
the job went out (`published_at`: the time of the latest publish of the owed attempt).

Stalled deliveries (the backstop, worker/backstop.py): an event whose delivery has not
ended (`pending`/`retrying`) and that owes Kafka nothing (`publish_at IS NULL`) is
waiting for a worker to consume the job published at `published_at`. When that was
before a cutoff and its attempt (`publish_attempt`) has no claim, or only one abandoned
long ago, the job is taken as lost and owed again (`publish_at = now`): the relay
publishes it like any other debt. Finding them is a range of ix_events_owed
`(publish_at, execution_status, published_at)`: NULL, each unfinished status, up to the
cutoff; only rows still waiting that long fall in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from triggerd.domain.jobs import Job
from triggerd.domain.timeutil import from_db, to_db
from triggerd.store.db import Database

_CLAIM = (
    "SELECT id, trigger_id, trigger_type, source, is_test_run, payload, scheduled_for,"
    " fired_at, publish_attempt, published_at, traceparent FROM event_logs"
    " WHERE publish_at <= %(now)s ORDER BY publish_at LIMIT %(limit)s"
    " FOR UPDATE SKIP LOCKED"
)


@dataclass(frozen=True)
class OwedJob:
    job: Job
    lease: datetime  # the publish_at this relay wrote when it claimed the row (to_db'd
    # the same way on every write, so comparisons match at millisecond precision)
    republished: bool = False  # a first attempt whose job went out before (re-owed)


async def claim_due(db: Database, now: datetime, lease: datetime, limit: int) -> list[OwedJob]:
    """Claim up to `limit` rows that owe a job, oldest debt first. READ COMMITTED: the
    range scan locks the rows it claims, not the gaps around them, so two relays moving
    their rows to a lease (new index entries past the range) do not deadlock, and
    ingestion inserting owed rows never waits on a claim."""
    async with db.transaction(read_committed=True) as cur:
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
        # published_at: this attempt's job went out before, and the backstop owes it again
        # (for a retry it is the previous attempt's: the relay publishes each only once).
        again = job.attempt == 1 and row["published_at"] is not None
        owed.append(OwedJob(job, lease, republished=again))
    return owed


async def mark_published(db: Database, owed: Sequence[OwedJob], now: datetime) -> None:
    """The jobs are on Kafka: the debt is paid unless someone re-owed the row meanwhile."""
    await db.executemany(
        "UPDATE event_logs SET published_at = %(now)s,"
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


@dataclass(frozen=True)
class Unpublishable:
    """An owed job Kafka can never take (larger than it accepts): its event ends
    `failed` with `reason`, instead of being owed forever."""

    event_id: str
    attempt: int
    reason: str


# Only while the event still owes that attempt and its delivery has not ended: a replay
# (a new attempt) or an outcome written meanwhile stands.
_FAIL_EVENT = (
    "UPDATE event_logs SET execution_status = 'failed', error_message = %(reason)s,"
    " publish_at = NULL, attempts = GREATEST(attempts, %(attempt)s)"
    " WHERE id = %(id)s AND publish_attempt = %(attempt)s"
    " AND execution_status IN ('pending', 'retrying')"
)
# The attempt, finished at once with the reason: where the event's page lists why each
# attempt failed. A row left unfinished by a worker that died (a job re-owed by the
# backstop) is finished the same way; a finished one is left as it is.
_FAIL_ATTEMPT = (
    "INSERT INTO delivery_attempts (event_id, attempt, started_at, finished_at, error)"
    " VALUES (%(id)s, %(attempt)s, %(now)s, %(now)s, %(reason)s)"
    " ON DUPLICATE KEY UPDATE error = IF(finished_at IS NULL, VALUES(error), error),"
    " finished_at = IFNULL(finished_at, VALUES(finished_at))"
)


async def fail_unpublishable(db: Database, jobs: Sequence[Unpublishable], now: datetime,
                             *, unpublished_only: bool = False) -> list[str]:  # fmt: skip
    """End the events of `jobs` `failed`, the reason recorded on the event and its
    attempt; returns the ids that changed."""
    async with db.transaction() as cur:
        return await fail_unpublishable_in(cur, jobs, now, unpublished_only=unpublished_only)


async def fail_unpublishable_in(cur: Any, jobs: Sequence[Unpublishable], now: datetime, *,
                                unpublished_only: bool = False) -> list[str]:  # fmt: skip
    """fail_unpublishable in the caller's transaction. `unpublished_only`: leave events
    whose job went out before (the scheduler's, when a re-claimed occurrence's event
    exists already)."""
    sql = _FAIL_EVENT + (" AND published_at IS NULL" if unpublished_only else "")
    failed = []
    for job in jobs:  # rare: one statement each is fine
        params = {"id": job.event_id, "attempt": job.attempt, "reason": job.reason[:2000],
                  "now": to_db(now)}  # fmt: skip
        if await cur.execute(sql, params):
            await cur.execute(_FAIL_ATTEMPT, params)
            failed.append(job.event_id)
    return failed


_STALLED = (
    # Forced: the optimizer's estimate for a range starting at NULL covers every row
    # with nothing owed to Kafka (most of the table), so on a small table it would scan.
    "SELECT e.id, e.publish_attempt, e.published_at FROM event_logs e"
    " FORCE INDEX (ix_events_owed)"
    " LEFT JOIN delivery_attempts a ON a.event_id = e.id AND a.attempt = e.publish_attempt"
    " WHERE e.publish_at IS NULL AND e.execution_status IN ('pending', 'retrying')"
    " AND e.published_at <= %(cutoff)s"
    " AND (a.event_id IS NULL OR (a.finished_at IS NULL AND a.started_at <= %(abandoned)s))"
    " LIMIT %(limit)s"
)

_REOWE = (
    "UPDATE event_logs SET publish_at = %(now)s WHERE id = %(id)s AND publish_at IS NULL"
    " AND execution_status IN ('pending', 'retrying') AND publish_attempt = %(attempt)s"
    " AND published_at = %(published_at)s"
)


@dataclass(frozen=True)
class Stalled:
    event_id: str
    attempt: int
    published_at: datetime


async def stalled_deliveries(db: Database, *, cutoff: datetime, abandoned_before: datetime,
                             limit: int) -> list[Stalled]:  # fmt: skip
    """Up to `limit` events whose job was published before `cutoff` and whose attempt
    nobody claimed (or whose claim is unfinished since before `abandoned_before`)."""
    rows = await db.fetchall(_STALLED, {"cutoff": to_db(cutoff), "limit": limit,
                                        "abandoned": to_db(abandoned_before)})  # fmt: skip
    stalled = []
    for row in rows:
        published_at = from_db(row["published_at"])
        assert published_at is not None
        stalled.append(Stalled(row["id"], int(row["publish_attempt"]), published_at))
    return stalled


async def reowe(db: Database, stalled: Stalled, now: datetime) -> bool:
    """Owe the stalled job to Kafka again from `now`, unless the event moved meanwhile
    (delivered, retried, replayed, published again, or re-owed by another process)."""
    changed = await db.execute(_REOWE, {
        "id": stalled.event_id, "attempt": stalled.attempt, "now": to_db(now),
        "published_at": to_db(stalled.published_at),
    })  # fmt: skip
    return changed > 0

"""The worker's SQL: the event a job is for, its attempt rows, and the outcome writes.

Idempotency rests on two keys. `delivery_attempts` has PRIMARY KEY (event_id, attempt):
a job is processed by whoever inserts its attempt row; a redelivered job finds the row
(finished: nothing to do; unfinished and older than the target's timeout plus a margin:
the worker that started it died, take the row over, deliver again and finish that same
row; unfinished and recent: someone is delivering it now, wait). The outcome is written
in one transaction that finishes the attempt row only if it is still unfinished and
updates the event only if no newer attempt is owed (`publish_attempt <= attempt`), so a
late or duplicate job cannot move an event backwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from triggerd.store.db import Database, is_duplicate_key
from triggerd.timeutil import from_db, to_db

FINAL_STATUSES = ("success", "failed", "published")


@dataclass(frozen=True)
class EventState:
    """What the worker needs of an event row."""

    id: str
    trigger_id: str | None
    payload: str  # the JSON text, sent as the body byte for byte
    delivery: dict[str, Any]
    execution_status: str
    attempts: int
    attempt_base: int
    publish_attempt: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EventState:
        delivery = orjson.loads(row["delivery"]) if row["delivery"] else {}
        return cls(
            id=row["id"],
            trigger_id=row["trigger_id"],
            payload=row["payload"],
            delivery=delivery if isinstance(delivery, dict) else {},
            execution_status=row["execution_status"],
            attempts=int(row["attempts"]),
            attempt_base=int(row["attempt_base"]),
            publish_attempt=int(row["publish_attempt"]),
        )

    def has_done(self, attempt: int) -> bool:
        """True when a job for `attempt` has nothing left to do: its series was replaced
        by a replay, or the attempt is already counted and the event moved on."""
        if attempt <= self.attempt_base or self.execution_status == "published":
            return True
        if self.attempts >= attempt:
            return self.execution_status in FINAL_STATUSES or self.publish_attempt > attempt
        return False


@dataclass(frozen=True)
class TriggerRow:
    id: str
    name: str
    type: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt, as written to both tables."""

    event_id: str
    attempt: int
    status: str  # success | retrying | failed
    finished_at: datetime
    response_status: int | None
    latency_ms: int | None
    error: str | None
    retry_at: datetime | None = None  # when status == retrying: the next attempt is owed


_EVENT_COLUMNS = ("id, trigger_id, payload, delivery, execution_status, attempts, attempt_base,"
                  " publish_attempt")  # fmt: skip


async def load_event(db: Database, event_id: str) -> EventState | None:
    row = await db.fetchone(
        f"SELECT {_EVENT_COLUMNS} FROM event_logs WHERE id = %(id)s", {"id": event_id}
    )
    return EventState.from_row(row) if row else None


class EventLoader:
    """load_event for many jobs at once: the calls made in one turn of the event loop
    (the jobs of one Kafka fetch start together) share one `SELECT … WHERE id IN (…)`.
    A failed query fails every call it served; callers retry as they would one query."""

    def __init__(self, db: Database, max_batch: int = 500) -> None:
        self.db = db
        self.max_batch = max_batch
        self._waiting: dict[str, list[asyncio.Future[EventState | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def load(self, event_id: str) -> EventState | None:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        future: asyncio.Future[EventState | None] = loop.create_future()
        self._waiting.setdefault(event_id, []).append(future)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        ids = list(waiting)
        for start in range(0, len(ids), self.max_batch):
            chunk = {i: waiting[i] for i in ids[start : start + self.max_batch]}
            task = asyncio.get_running_loop().create_task(self._load(chunk))
            self._running.add(task)  # a reference until it is done
            task.add_done_callback(self._running.discard)

    async def _load(self, waiting: dict[str, list[asyncio.Future[EventState | None]]]) -> None:
        try:
            marks = ", ".join(["%s"] * len(waiting))
            rows = await self.db.fetchall(
                f"SELECT {_EVENT_COLUMNS} FROM event_logs WHERE id IN ({marks})", list(waiting)
            )
            # keyed as the column compares: ids match case-insensitively
            found = {row["id"].lower(): EventState.from_row(row) for row in rows}
        except Exception as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for event_id, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(event_id.lower()))


async def load_trigger(db: Database, trigger_id: str) -> TriggerRow | None:
    row = await db.fetchone(
        "SELECT id, name, type, config FROM triggers WHERE id = %(id)s", {"id": trigger_id}
    )
    if row is None:
        return None
    config = orjson.loads(row["config"])
    if not isinstance(config, dict):
        config = {}
    return TriggerRow(row["id"], row["name"], row["type"], config)


async def start_attempt(
    db: Database, event_id: str, attempt: int, now: datetime, stale_before: datetime
) -> str:
    """Claim an attempt. Returns
    - "new": the row was inserted, deliver;
    - "finished": someone completed this attempt, nothing to do;
    - "restarted": an unfinished row started before `stale_before` (its worker died
      mid-delivery): taken over, deliver again and finish that row;
    - "busy": an unfinished row started recently: another worker may be delivering it
      right now; ask again later."""
    params = {"event_id": event_id, "attempt": attempt, "now": to_db(now),
              "stale_before": to_db(stale_before)}  # fmt: skip
    try:
        await db.execute(
            "INSERT INTO delivery_attempts (event_id, attempt, started_at)"
            " VALUES (%(event_id)s, %(attempt)s, %(now)s)",
            params,
        )
        return "new"
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise
    taken = await db.execute(
        "UPDATE delivery_attempts SET started_at = %(now)s"
        " WHERE event_id = %(event_id)s AND attempt = %(attempt)s AND finished_at IS NULL"
        " AND started_at <= %(stale_before)s",
        params,
    )
    if taken:
        return "restarted"
    row = await db.fetchone(
        "SELECT finished_at FROM delivery_attempts"
        " WHERE event_id = %(event_id)s AND attempt = %(attempt)s",
        params,
    )
    return "busy" if row is not None and row["finished_at"] is None else "finished"


_FINISH_ATTEMPT = (
    "UPDATE delivery_attempts SET finished_at = %(finished_at)s,"
    " response_status = %(response_status)s, latency_ms = %(latency_ms)s, error = %(error)s"
    " WHERE event_id = %(event_id)s AND attempt = %(attempt)s AND finished_at IS NULL"
)

_EVENT_OUTCOME = {
    "success": (
        "UPDATE event_logs SET attempts = GREATEST(attempts, %(attempt)s),"
        " response_status = %(response_status)s, error_message = NULL,"
        " delivered_at = %(finished_at)s, execution_status = 'success', publish_at = NULL"
        " WHERE id = %(event_id)s AND publish_attempt <= %(attempt)s"
    ),
    "failed": (
        "UPDATE event_logs SET attempts = GREATEST(attempts, %(attempt)s),"
        " response_status = %(response_status)s, error_message = %(error)s,"
        " execution_status = 'failed', publish_at = NULL"
        " WHERE id = %(event_id)s AND publish_attempt <= %(attempt)s"
    ),
    # The retry goes through the outbox: the relay publishes attempt + 1 once it is due.
    "retrying": (
        "UPDATE event_logs SET attempts = GREATEST(attempts, %(attempt)s),"
        " response_status = %(response_status)s, error_message = %(error)s,"
        " execution_status = 'retrying', publish_at = %(retry_at)s,"
        " publish_attempt = %(attempt)s + 1"
        " WHERE id = %(event_id)s AND publish_attempt <= %(attempt)s"
    ),
}


async def record_outcome(db: Database, outcome: Outcome) -> bool:
    """Finish the attempt row and move the event, together. False when the attempt was
    already finished by someone else (then nothing changes)."""
    params = {
        "event_id": outcome.event_id,
        "attempt": outcome.attempt,
        "finished_at": to_db(outcome.finished_at),
        "response_status": outcome.response_status,
        "latency_ms": outcome.latency_ms,
        "error": outcome.error,
        "retry_at": to_db(outcome.retry_at),
    }
    async with db.transaction() as cur:
        if not await cur.execute(_FINISH_ATTEMPT, params):
            return False
        await cur.execute(_EVENT_OUTCOME[outcome.status], params)
    return True


async def mark_published(db: Database, event_id: str, attempt: int) -> bool:
    """An event with no endpoint ends as `published` once its job was consumed."""
    count = await db.execute(
        "UPDATE event_logs SET execution_status = 'published', publish_at = NULL"
        " WHERE id = %(event_id)s AND execution_status IN ('pending', 'retrying')"
        " AND publish_attempt <= %(attempt)s",
        {"event_id": event_id, "attempt": attempt},
    )
    return count > 0


async def attempt_rows(db: Database, event_id: str) -> list[dict[str, Any]]:
    """Every attempt of an event, oldest first (for tests and diagnostics)."""
    rows = await db.fetchall(
        "SELECT attempt, started_at, finished_at, response_status, latency_ms, error"
        " FROM delivery_attempts WHERE event_id = %(id)s ORDER BY attempt",
        {"id": event_id},
    )
    for row in rows:
        row["started_at"] = from_db(row["started_at"])
        row["finished_at"] = from_db(row["finished_at"])
    return rows

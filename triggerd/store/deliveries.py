"""The worker's SQL: the event a job is for, its attempt rows, and the outcome writes.

Idempotency rests on two keys. `delivery_attempts` has PRIMARY KEY (event_id, attempt):
a job is processed by whoever inserts its attempt row; a redelivered job finds the row
(finished: nothing to do; unfinished and older than the target's timeout plus a margin:
the worker that started it died, take the row over, deliver again and finish that same
row; unfinished and recent: someone is delivering it now, wait). The outcome is written
in one transaction (one round trip) that finishes the attempt row only if it is still
unfinished and updates the event only if no newer attempt is owed (`publish_attempt <=
attempt`), so a late or duplicate job cannot move an event backwards.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from triggerd.domain import enums
from triggerd.domain.enums import AttemptClaim
from triggerd.domain.timeutil import from_db, to_db, utcnow
from triggerd.store.coalesce import Coalescer
from triggerd.store.db import Database, is_duplicate_key
from triggerd.store.literals import case_of, text, time_literal, uuid_literals, uuid_text

FINAL_STATUSES = tuple(s.value for s in enums.FINAL_STATUSES)


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
    published_at: datetime | None = None  # when its job reached Kafka, if known


_EVENT_COLUMNS = ("id, trigger_id, payload, delivery, execution_status, attempts, attempt_base,"
                  " publish_attempt")  # fmt: skip


async def load_event(db: Database, event_id: str) -> EventState | None:
    row = await db.fetchone(
        f"SELECT {_EVENT_COLUMNS} FROM event_logs WHERE id = %(id)s", {"id": event_id}
    )
    return EventState.from_row(row) if row else None


class EventLoader:
    """load_event for many jobs at once: the calls of one loop turn, or made while a load
    is running, share one `SELECT … WHERE id IN (…)` (see store/coalesce.py)."""

    def __init__(self, db: Database, max_batch: int = 500) -> None:
        self.db = db
        self.batches: Coalescer[str, EventState | None] = Coalescer(
            self._load, max_batch=max_batch
        )

    async def load(self, event_id: str) -> EventState | None:
        return await self.batches.submit(event_id)

    async def _load(self, ids: list[str]) -> list[EventState | None]:
        listed = uuid_literals(list(dict.fromkeys(ids)))
        # () : the driver still formats, which undoes uuid_literals' %% for odd ids
        rows = await self.db.fetchall(
            f"SELECT {_EVENT_COLUMNS} FROM event_logs WHERE id IN ({listed})", ()
        )
        # keyed as the column compares: ids match case-insensitively
        found = {row["id"].lower(): EventState.from_row(row) for row in rows}
        return [found.get(event_id.lower()) for event_id in ids]


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
        return AttemptClaim.NEW
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
        return AttemptClaim.RESTARTED
    row = await db.fetchone(
        "SELECT finished_at FROM delivery_attempts"
        " WHERE event_id = %(event_id)s AND attempt = %(attempt)s",
        params,
    )
    if row is not None and row["finished_at"] is None:
        return AttemptClaim.BUSY
    return AttemptClaim.FINISHED


class AttemptClaims:
    """The first try of start_attempt for many jobs at once: one multi-row INSERT claims
    the attempt rows of every job that reached this step in one loop turn (or while the
    previous claim ran). `claim()` is True when the row was new and is now ours; False
    sends the caller to start_attempt, which sorts out existing rows (finished, stale,
    busy). Which rows the INSERT added is known from its row count when all were new,
    and otherwise from the random `claim` token it wrote."""

    def __init__(self, db: Database, max_batch: int = 200) -> None:
        self.db = db
        self.batches: Coalescer[tuple[str, int], bool] = Coalescer(
            self._claim, max_batch=max_batch
        )

    async def claim(self, event_id: str, attempt: int) -> bool:
        return await self.batches.submit((event_id, attempt))

    async def _claim(self, keys: list[tuple[str, int]]) -> list[bool]:
        # ids compare case-insensitively in the table: so do the keys here
        unique = {(event_id.lower(), attempt): event_id for event_id, attempt in keys}
        token = secrets.randbits(63)
        tail = f", {time_literal(utcnow())}, {token})"
        rows = ", ".join([f"({uuid_text(event_id)}, {int(attempt)}{tail}"
                          for (_key, attempt), event_id in unique.items()])  # fmt: skip
        # ON DUPLICATE KEY … (a no-op) rather than INSERT IGNORE, which would also turn
        # other errors into warnings; an existing row counts 0 affected rows. Rendered
        # by us, run without parameters (store/literals.py).
        added = await self.db.execute(
            "INSERT INTO delivery_attempts (event_id, attempt, started_at, claim)"
            f" VALUES {rows} ON DUPLICATE KEY UPDATE claim = claim"
        )
        if added == len(unique):
            ours = set(unique)
        else:
            marks = ", ".join(["%s"] * len(unique))
            found = await self.db.fetchall(
                "SELECT event_id, attempt FROM delivery_attempts"
                f" WHERE event_id IN ({marks}) AND claim = %s",
                [*unique.values(), token],
            )
            ours = {(row["event_id"].lower(), int(row["attempt"])) for row in found}
        # A key twice in one batch (a job delivered twice in one fetch): the first call
        # gets the row, the second goes the slow way and finds it busy, then finished.
        answers = []
        for event_id, attempt in keys:
            key = (event_id.lower(), attempt)
            answers.append(key in ours)
            ours.discard(key)
        return answers


async def record_outcomes(db: Database, outcomes: list[Outcome]) -> list[bool]:
    """Finish each outcome's attempt row and move its event, all together. An answer is
    False when that attempt was already finished by someone else (then nothing of it
    changes)."""
    if not outcomes:
        return []
    token = secrets.randbits(63)
    counts = await db.script(_outcome_script(outcomes, token))
    # BEGIN, then per round the attempt rows finished and the events moved, COMMIT
    if sum(counts[1:-1:2]) == len(outcomes):  # every attempt row: all ours
        return [True] * len(outcomes)
    # Short: some attempt was finished elsewhere. Whose rows these were, by the token.
    marks = ", ".join(["%s"] * len(outcomes))
    found = await db.fetchall(
        "SELECT event_id, attempt FROM delivery_attempts"
        f" WHERE event_id IN ({marks}) AND claim = %s",
        [*(o.event_id for o in outcomes), token],
    )
    ours = {(row["event_id"].lower(), int(row["attempt"])) for row in found}
    return [(o.event_id.lower(), o.attempt) in ours for o in outcomes]


def _outcome_script(outcomes: list[Outcome], token: int) -> str:
    """One transaction in one round trip (Database.script): per round of distinct
    events, an UPDATE of the attempt rows, then one of their events.

    Each attempt row is finished only while unfinished (whoever finished it first wins,
    and their event write stands), and takes the batch's `token` in `claim`. Its event
    moves only when this batch finished its attempt (the token) and it owes no newer
    attempt (a late or duplicate job cannot move it back).

    Two single-table UPDATEs, where one statement joining both tables to a derived table
    of the outcomes would do: MariaDB runs such a multi-table UPDATE through two
    temporary tables, on disk because the error columns are TEXT, and under the ingest
    stream that cost the server more than everything else the worker asked of it
    (docs/performance.md, bench/outcome_write.py). Rendered by
    us, run without parameters (store/literals.py); each round's rows are locked in key
    order, so two batches cannot deadlock on each other."""
    rounds: list[dict[str, Outcome]] = []
    for o in outcomes:  # an event twice in one batch (two attempts): a later round
        key = o.event_id.lower()
        for taken in rounds:
            if key not in taken:
                taken[key] = o
                break
        else:
            rounds.append({key: o})
    script = ["BEGIN"]
    for taken in rounds:
        script.extend(_round(sorted(taken.values(), key=lambda o: o.event_id.lower()), token))
    script.append("COMMIT")
    return ";\n".join(script)


def _round(outcomes: list[Outcome], token: int) -> tuple[str, str]:
    ids = [uuid_text(o.event_id) for o in outcomes]
    listed = ",".join(ids)

    def case(column: str, values: list[str]) -> str:
        return case_of(column, ids, values)

    # each value rendered once, for both statements
    finished = [time_literal(o.finished_at) for o in outcomes]
    codes = [_number(o.response_status) for o in outcomes]
    errors = [text(o.error) for o in outcomes]
    tries = [str(int(o.attempt)) for o in outcomes]
    success = [o.status == "success" for o in outcomes]
    messages = ["NULL" if ok else e for ok, e in zip(success, errors, strict=True)]
    delivered = [f if ok else "delivered_at" for ok, f in zip(success, finished, strict=True)]
    attempts = (
        f"UPDATE delivery_attempts SET finished_at = {case('event_id', finished)},"
        f" response_status = {case('event_id', codes)},"
        f" latency_ms = {case('event_id', [_number(o.latency_ms) for o in outcomes])},"
        f" error = {case('event_id', errors)}, claim = {token}"
        f" WHERE event_id IN ({listed}) AND attempt = {case('event_id', tries)}"
        " AND finished_at IS NULL"
    )
    # A single-table UPDATE assigns left to right: no expression below reads a column
    # an earlier one wrote (each reads only its own).
    attempt = case("id", tries)
    published = [f if o.published_at is None else time_literal(o.published_at)
                 for o, f in zip(outcomes, finished, strict=True)]  # fmt: skip
    events = (
        f"UPDATE event_logs SET attempts = GREATEST(attempts, {attempt}),"
        f" response_status = {case('id', codes)},"
        f" error_message = {case('id', messages)}, delivered_at = {case('id', delivered)},"
        f" execution_status = {case('id', [text(o.status) for o in outcomes])},"
        # when the job reached Kafka (its record's timestamp, else now), unless the
        # publisher's clear or the relay wrote it (the clear then finds nothing to do)
        f" published_at = IFNULL(published_at, {case('id', published)}),"
        # a retry goes through the outbox: the relay publishes attempt + 1 once it is due
        f" publish_at = {case('id', [_time_or_null(o.retry_at) for o in outcomes])},"
        f" publish_attempt = {case('id', [_next_attempt(o) for o in outcomes])}"
        f" WHERE id IN ({listed}) AND publish_attempt <= {attempt}"
        " AND EXISTS (SELECT 1 FROM delivery_attempts d WHERE d.event_id = event_logs.id"
        f" AND d.attempt = {attempt} AND d.claim = {token})"
    )
    return attempts, events


def _next_attempt(o: Outcome) -> str:
    return str(int(o.attempt) + 1) if o.status == "retrying" else "publish_attempt"


def _time_or_null(value: datetime | None) -> str:
    return "NULL" if value is None else time_literal(value)


async def record_outcome(db: Database, outcome: Outcome) -> bool:
    """record_outcomes for one outcome."""
    [recorded] = await record_outcomes(db, [outcome])
    return recorded


class OutcomeWriter:
    """record_outcomes for many jobs at once: the outcomes that arrive in one loop turn,
    or while the previous batch is being written, share one round trip."""

    def __init__(self, db: Database, max_batch: int = 200) -> None:
        self.db = db
        self.batches: Coalescer[Outcome, bool] = Coalescer(
            functools.partial(record_outcomes, db), max_batch=max_batch
        )

    async def record(self, outcome: Outcome) -> bool:
        return await self.batches.submit(outcome)


def _number(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


async def mark_published(db: Database, event_id: str, attempt: int) -> bool:
    """An event with no endpoint ends as `published` once its job was consumed."""
    count = await db.execute(
        "UPDATE event_logs SET execution_status = 'published', publish_at = NULL,"
        " published_at = IFNULL(published_at, %(now)s) WHERE id = %(event_id)s"
        " AND execution_status IN ('pending', 'retrying') AND publish_attempt <= %(attempt)s",
        {"event_id": event_id, "attempt": attempt, "now": to_db(utcnow())},
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

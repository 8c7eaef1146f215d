"""Reading the event log, starting a replay, and the trigger lookup
used by webhook ingestion and test runs.

List queries are served by indexes: `(retention_status, fired_at)`,
`(retention_status, trigger_id, fired_at)`, `(trigger_id, fired_at)` and `(fired_at)`
cover every combination of retention status, trigger and time range; the other
filters (source, execution_status, is_test_run) narrow rows found through them.
InnoDB appends the primary key to each secondary index, so `ORDER BY fired_at DESC,
id DESC` is an index walk, not a sort.

Stats bound their work: the window reaches back at most as far as events are kept
(MAX_STATS_WINDOW when that is less); counts are one grouped COUNT (per trigger,
execution status, source and retention status) over the index range of `(fired_at)`,
or of `(trigger_id, fired_at)` for one trigger, folded here into the overall and the
per-trigger numbers; percentiles are computed over the newest STATS_SAMPLE events (and
delivery attempts) of the window, and say how many they used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from triggerd.domain.audit import Action, AuditEntry, Origin
from triggerd.domain.enums import ExecutionStatus, RetentionStatus, Source, values
from triggerd.domain.jobs import Job
from triggerd.domain.models import Trigger
from triggerd.domain.timeutil import from_db, to_db, to_iso
from triggerd.store import audit
from triggerd.store.db import Database, Row
from triggerd.store.event_rows import delivery_snapshot

MAX_STATS_WINDOW = timedelta(hours=48)
STATS_SAMPLE = 10_000
MAX_ATTEMPTS_LISTED = 1000

EVENT_COLUMNS = (
    "id, trigger_id, trigger_name, trigger_type, source, is_test_run, note, payload,"
    " scheduled_for, fired_at, execution_status, attempts, response_status, error_message,"
    " delivered_at, retention_status, created_at"
)
_TRIGGER_COLUMNS = "id, name, type, status, config, version, created_at, updated_at"


async def fetch_trigger(db: Database, trigger_id: str) -> Trigger | None:
    """A trigger by canonical id; None when unknown or deleted."""
    row = await db.fetchone(f"SELECT {_TRIGGER_COLUMNS} FROM triggers WHERE id = %s",
                            (trigger_id,))  # fmt: skip
    return Trigger.from_row(row) if row else None


def _iso(value: datetime | None) -> str | None:
    return to_iso(from_db(value))


def event_json(row: Row) -> dict[str, Any]:
    """The API shape of an event row. The payload is stored JSON and goes out as is."""
    return {
        "id": row["id"],
        "trigger_id": row["trigger_id"],
        "trigger_name": row["trigger_name"],
        "trigger_type": row["trigger_type"],
        "source": row["source"],
        "is_test_run": bool(row["is_test_run"]),
        "note": row["note"],
        "payload": orjson.Fragment(row["payload"]),
        "scheduled_for": _iso(row["scheduled_for"]),
        "fired_at": _iso(row["fired_at"]),
        "execution_status": row["execution_status"],
        "attempts": int(row["attempts"]),
        "response_status": row["response_status"],
        "error_message": row["error_message"],
        "delivered_at": _iso(row["delivered_at"]),
        "retention_status": row["retention_status"],
        "created_at": _iso(row["created_at"]),
    }


@dataclass(frozen=True)
class EventFilter:
    trigger_id: str | None = None
    source: str | None = None
    execution_status: str | None = None
    retention_status: str = "active"  # active | archived | all
    is_test_run: bool | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.retention_status != "all":
            clauses.append("retention_status = %(retention_status)s")
            params["retention_status"] = self.retention_status
        for name in ("trigger_id", "source", "execution_status"):
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"{name} = %({name})s")
                params[name] = value
        if self.is_test_run is not None:
            clauses.append("is_test_run = %(is_test_run)s")
            params["is_test_run"] = int(self.is_test_run)
        if self.since is not None:
            clauses.append("fired_at >= %(since)s")
            params["since"] = to_db(self.since)
        if self.until is not None:
            clauses.append("fired_at < %(until)s")
            params["until"] = to_db(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


async def list_events(db: Database, flt: EventFilter, *, page: int, limit: int
                      ) -> tuple[list[Row], int]:  # fmt: skip
    where, params = flt.where()
    total_row = await db.fetchone(f"SELECT COUNT(*) AS n FROM event_logs{where}", params)
    total = int(total_row["n"]) if total_row else 0
    if total <= (page - 1) * limit:
        return [], total
    rows = await db.fetchall(
        f"SELECT {EVENT_COLUMNS} FROM event_logs{where}"
        " ORDER BY fired_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": limit, "offset": (page - 1) * limit},
    )
    return rows, total


async def get_event(db: Database, event_id: str) -> Row | None:
    return await db.fetchone(f"SELECT {EVENT_COLUMNS} FROM event_logs WHERE id = %s",
                             (event_id,))  # fmt: skip


async def delivery_attempts(db: Database, event_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT attempt, started_at, response_status, latency_ms, error FROM delivery_attempts"
        " WHERE event_id = %s ORDER BY attempt LIMIT %s",
        (event_id, MAX_ATTEMPTS_LISTED),
    )
    return [
        {"attempt": int(r["attempt"]), "started_at": _iso(r["started_at"]),
         "response_status": r["response_status"], "latency_ms": r["latency_ms"],
         "error": r["error"]}
        for r in rows
    ]  # fmt: skip


@dataclass(frozen=True)
class Replay:
    outcome: str  # "started" | "not_found" | "in_progress"
    row: Row | None = None
    attempt: int = 0


_REPLAY_COLUMNS = (
    "id, trigger_id, trigger_type, source, is_test_run, payload, scheduled_for, fired_at,"
    " execution_status, attempts, publish_attempt"
)


async def start_replay(db: Database, event_id: str, publish_at: datetime,
                       traceparent: str | None = None, *, origin: Origin,
                       now: datetime) -> Replay:  # fmt: skip
    """A new attempt series for an event: attempts continue from `attempts + 1`. Refused
    while a series is still in progress (pending/retrying), so two never overlap. A
    started series is recorded in the audit log (by `origin`, at `now`) in the same
    transaction.

    The new series' job is always a higher attempt than any job the event owed before,
    also for an event that never made an HTTP attempt (no endpoint, `published`: its
    attempts are 0 while its job was attempt 1). A late outbox clear of the earlier job
    (ingest/pipeline.py: OutboxClearer) names that job's attempt, so it cannot clear the
    replay's.

    The series delivers the way the trigger says *now* (endpoint, method, headers,
    timeout, retries, signing): a replay usually follows fixing a broken endpoint. An
    event whose trigger is gone (deleted, or an ephemeral test run) keeps the delivery
    settings it last used: those it fired with, or those of its latest replay.

    `traceparent`, when given, replaces the event's: the series is traced on its own."""
    async with db.transaction() as cur:
        await cur.execute(f"SELECT {_REPLAY_COLUMNS} FROM event_logs WHERE id = %s FOR UPDATE",
                          (event_id,))  # fmt: skip
        row = await cur.fetchone()
        if row is None:
            return Replay("not_found")
        if row["execution_status"] in ("pending", "retrying"):
            return Replay("in_progress", row)
        attempt = max(int(row["attempts"]), int(row["publish_attempt"])) + 1
        delivery = None
        if row["trigger_id"] is not None:
            await cur.execute("SELECT config FROM triggers WHERE id = %s", (row["trigger_id"],))
            trigger = await cur.fetchone()
            if trigger is not None:
                snapshot = delivery_snapshot(orjson.loads(trigger["config"]))
                delivery = orjson.dumps(snapshot).decode()
        await cur.execute(
            "UPDATE event_logs SET attempt_base = attempts, publish_attempt = %s,"
            " execution_status = 'pending', publish_at = %s, published_at = NULL,"
            " response_status = NULL, error_message = NULL, delivered_at = NULL,"
            " delivery = COALESCE(%s, delivery), traceparent = COALESCE(%s, traceparent)"
            " WHERE id = %s",
            (attempt, to_db(publish_at), delivery, traceparent, event_id),
        )
        await audit.record(cur, AuditEntry(Action.EVENT_REPLAYED, origin, now,
                                           row["trigger_id"], event_id))  # fmt: skip
    return Replay("started", row, attempt)


def replay_job(row: Row, attempt: int, fired_at: datetime, traceparent: str | None = None) -> Job:
    """The job of a replay's first attempt, from the row `start_replay` returned."""
    return Job(
        event_id=row["id"], trigger_id=row["trigger_id"], type=row["trigger_type"],
        source=row["source"], is_test_run=bool(row["is_test_run"]),
        payload=orjson.loads(row["payload"]), scheduled_for=from_db(row["scheduled_for"]),
        fired_at=fired_at, attempt=attempt, traceparent=traceparent,
    )  # fmt: skip


# --- stats -------------------------------------------------------------------------------

SOURCES = values(Source)
EXECUTION_STATUSES = values(ExecutionStatus)
RETENTION_STATUSES = values(RetentionStatus)
# The breakdowns of a count, each listing every value (zeros included).
_BREAKDOWNS = {"execution_status": EXECUTION_STATUSES, "source": SOURCES,
               "retention_status": RETENTION_STATUSES}  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99 (nearest rank) of a sample, and its size."""
    ordered = sorted(values)

    def rank(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 3)

    return {"count": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99)}


def empty_counts() -> dict[str, Any]:
    """`total` and `by_<column>` with every known value at zero."""
    counts: dict[str, Any] = {"total": 0}
    for column, known in _BREAKDOWNS.items():
        counts[f"by_{column}"] = dict.fromkeys(known, 0)
    return counts


def _add(counts: dict[str, Any], row: Row) -> None:
    n = int(row["n"])
    counts["total"] += n
    for column in _BREAKDOWNS:
        by = counts[f"by_{column}"]
        by[row[column]] = by.get(row[column], 0) + n


@dataclass(frozen=True)
class StatsScope:
    """The events a stats request covers: fired since `since`, of one trigger or all."""

    since: datetime
    trigger_id: str | None = None

    def where(self, table: str = "") -> tuple[str, dict[str, Any]]:
        where = f"{table}fired_at >= %(since)s"
        if self.trigger_id is not None:
            where = f"{table}trigger_id = %(trigger_id)s AND {where}"
        return where, {"since": to_db(self.since), "trigger_id": self.trigger_id}


def counts_sql(scope: StatsScope) -> tuple[str, dict[str, Any]]:
    """One grouped COUNT over the window: a range of `ix_events_fired`, or of
    `ix_events_trigger` for one trigger."""
    where, params = scope.where()
    return ("SELECT trigger_id, execution_status, source, retention_status, COUNT(*) AS n"
            f" FROM event_logs WHERE {where}"
            " GROUP BY trigger_id, execution_status, source, retention_status", params)  # fmt: skip


async def event_counts(db: Database, scope: StatsScope, limit: int
                       ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Counts over the window: overall, and per trigger (`triggers`, busiest first, at
    most `limit`; `truncated` says when more triggers had events). Ephemeral test runs
    (trigger_id null) are one entry with trigger_id and trigger_name null. For one
    trigger, the list is that trigger, with zeros when it has no events in the window."""
    sql, params = counts_sql(scope)
    overall = empty_counts()
    per_trigger: dict[str | None, dict[str, Any]] = {}
    if scope.trigger_id is not None:
        per_trigger[scope.trigger_id] = empty_counts()
    for row in await db.fetchall(sql, params):
        _add(overall, row)
        _add(per_trigger.setdefault(row["trigger_id"], empty_counts()), row)
    busiest = sorted(per_trigger.items(), key=lambda item: (-item[1]["total"], item[0] or ""))
    listed = busiest[:limit]
    names = await trigger_names(db, [t for t, _ in listed if t is not None])
    return overall, {
        "triggers": [{"trigger_id": t, "trigger_name": names.get(t) if t else None, **counts}
                     for t, counts in listed],
        "trigger_count": sum(1 for counts in per_trigger.values() if counts["total"]),
        "truncated": len(busiest) > limit,
    }  # fmt: skip


async def trigger_names(db: Database, trigger_ids: list[str]) -> dict[str, str]:
    """The current name of each trigger; for a deleted one, the name on its newest event."""
    if not trigger_ids:
        return {}
    marks = ", ".join(["%s"] * len(trigger_ids))
    rows = await db.fetchall(f"SELECT id, name FROM triggers WHERE id IN ({marks})",
                             trigger_ids)  # fmt: skip
    names = {r["id"]: r["name"] for r in rows}
    gone = [t for t in trigger_ids if t not in names]
    if gone:
        marks = ", ".join(["%s"] * len(gone))
        rows = await db.fetchall(
            "SELECT e.trigger_id, e.trigger_name FROM event_logs e JOIN"
            " (SELECT trigger_id, MAX(fired_at) AS fired_at FROM event_logs"
            f"  WHERE trigger_id IN ({marks}) GROUP BY trigger_id) newest"
            " ON e.trigger_id = newest.trigger_id AND e.fired_at = newest.fired_at",
            gone,
        )
        names.update({r["trigger_id"]: r["trigger_name"] for r in rows})
    return names


async def event_percentiles(db: Database, scope: StatsScope) -> dict[str, Any]:
    """Fire delay and delivery latency (ms) over the newest STATS_SAMPLE of the window."""
    where, params = scope.where()
    params["sample"] = STATS_SAMPLE
    delays = await db.fetchall(
        "SELECT TIMESTAMPDIFF(MICROSECOND, scheduled_for, fired_at) / 1000 AS ms"
        # A backfill fires now for times long past on purpose: not a delay.
        f" FROM event_logs WHERE {where} AND scheduled_for IS NOT NULL"
        " AND source <> 'backfill' ORDER BY fired_at DESC LIMIT %(sample)s",
        params,
    )
    where_e, _ = scope.where("e.")
    latencies = await db.fetchall(
        "SELECT a.latency_ms AS ms FROM event_logs e"
        " JOIN delivery_attempts a ON a.event_id = e.id"
        f" WHERE {where_e} AND a.latency_ms IS NOT NULL"
        " ORDER BY e.fired_at DESC LIMIT %(sample)s",
        params,
    )
    return {
        "fire_delay_ms": percentiles([float(r["ms"]) for r in delays]),
        "delivery_latency_ms": percentiles([float(r["ms"]) for r in latencies]),
    }

"""The SQL of the retention pass and of the row-count gauges.

A batch is a span of an index in (time, id) order: `*_batch_end` finds where the next
`limit` due rows end (a covering index read that returns one row), and the writes then
change the rows of that span only, by an index range or by the ids one read of the span
locked (EXPLAINed in bench/retention.py's runs and by hand: every statement here is a
`range` on the named index). No statement touches more than one batch of rows. Every
write re-checks its conditions or holds the locks of the read that chose its rows, so
two processes running the same span, a replay that made an event `pending` again in
between, or a span run twice after a lost connection all leave the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triggerd.domain import enums
from triggerd.domain.enums import ScheduleStatus
from triggerd.domain.timeutil import from_db, to_db
from triggerd.store.db import Database
from triggerd.store.events import RETENTION_STATUSES
from triggerd.store.literals import int_list, uuid_literals

# Events whose delivery has not ended are neither archived nor deleted.
IN_FLIGHT = tuple(s.value for s in enums.IN_FLIGHT)
_SETTLED = f"execution_status NOT IN ({', '.join(repr(s) for s in IN_FLIGHT)})"
# Schedule rows that will never change again.
FINISHED_SCHEDULES = (ScheduleStatus.COMPLETED.value, ScheduleStatus.CANCELLED.value,
                      ScheduleStatus.MISSED.value)  # fmt: skip
_FINISHED = f"status IN ({', '.join(repr(s) for s in FINISHED_SCHEDULES)})"

StatementHook = Callable[[str, float], None]
_READ_COMMITTED = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"  # the next transaction only


@dataclass(frozen=True)
class Position:
    """A keyset position in (time, id) order."""

    at: datetime
    id: str | int

    @classmethod
    def start(cls, id_type: type[str] | type[int] = str) -> Position:
        """Before every row: "" sorts before every event id, 0 before every schedule id."""
        return cls(datetime(1970, 1, 1), id_type())


@dataclass(frozen=True)
class Span:
    """Rows after `after` up to and including `upto`; `upto` None: up to the cutoff."""

    after: Position
    upto: Position | None

    def params(self, cutoff: datetime) -> dict[str, Any]:
        end = self.upto or Position(cutoff, type(self.after.id)())
        return {
            "cutoff": to_db(cutoff),
            "after_at": to_db(self.after.at),
            "after_id": self.after.id,
            "upto_at": to_db(end.at),
            "upto_id": end.id,
        }


def _span(time_col: str, id_col: str = "id") -> str:
    """`cutoff > time`, `(time, id) > after` and `(time, id) <= upto`, spelled so the range
    optimizer makes one index range of them (row constructor comparisons may not be)."""
    t, i = time_col, id_col
    return (
        f"{t} < %(cutoff)s"
        f" AND ({t} > %(after_at)s OR ({t} = %(after_at)s AND {i} > %(after_id)s))"
        f" AND ({t} < %(upto_at)s OR ({t} = %(upto_at)s AND {i} <= %(upto_id)s))"
    )


def _batch_end(table_index: str, time_col: str, where: str = "") -> str:
    return (
        f"SELECT {time_col} AS at, id FROM {table_index} WHERE {where}"
        f"{time_col} < %(cutoff)s"
        f" AND ({time_col} > %(after_at)s OR ({time_col} = %(after_at)s AND id > %(after_id)s))"
        f" ORDER BY {time_col}, id LIMIT 1 OFFSET %(offset)s"
    )


# Where the next batch ends: a covering read of `limit` index entries returning one row.
_END_DELETE = _batch_end("event_logs FORCE INDEX (ix_events_fired)", "fired_at")
_END_ARCHIVE = _batch_end(
    "event_logs FORCE INDEX (ix_events_list)", "fired_at", "retention_status = 'active' AND "
)
_END_SCHEDULES = _batch_end(
    "trigger_schedules FORCE INDEX (ix_schedules_due)", "fire_at", "status = %(status)s AND "
)
_END_AUDIT = _batch_end("audit_log FORCE INDEX (ix_audit_at)", "at")

# Deleting events, in one transaction so an event is never seen without its attempts:
# lock the span's settled events first and read their ids (another pass, a worker or a
# replay holding one of them is waited for before we hold anything it could need, so no
# deadlock; and none of them changes state until the commit), then delete the children
# and the events by those ids. The span is read once: joining each child table to the
# span again would read every event of it (index entry and row) once per statement.
_LOCK_SPAN = (
    "SELECT id FROM event_logs FORCE INDEX (ix_events_fired)"
    f" WHERE {_span('fired_at')} AND {_SETTLED} FOR UPDATE"
)
# Multi-table syntax even for one table: single-table DELETE takes no index hint, and
# without one the optimizer may pick a full scan (which would lock every row). At most
# ID_CHUNK ids a statement: MySQL 8 drops a range whose IN list outgrows
# range_optimizer_max_mem_size (8 MB, ~230 bytes a value) and scans the table instead.
ID_CHUNK = 5000
_DELETE_ATTEMPTS = (
    "DELETE a FROM delivery_attempts a FORCE INDEX (PRIMARY) WHERE a.event_id IN ({ids})"
)
_DELETE_KEYS = (
    "DELETE k FROM idempotency_keys k FORCE INDEX (ix_idempotency_event)"
    " WHERE k.event_id IN ({ids})"
)
_DELETE_EVENTS = (
    f"DELETE e FROM event_logs e FORCE INDEX (PRIMARY) WHERE e.id IN ({{ids}}) AND e.{_SETTLED}"
)
_ARCHIVE = (
    "UPDATE event_logs FORCE INDEX (ix_events_list) SET retention_status = 'archived'"
    f" WHERE retention_status = 'active' AND {_span('fired_at')} AND {_SETTLED}"
)
# Audit entries are independent rows: a span is deleted by one range statement.
_DELETE_AUDIT = (
    "DELETE a FROM audit_log a FORCE INDEX (ix_audit_at)"
    f" WHERE {_span('a.at', 'a.id')}"
)
# Finished occurrences of a span, kept as long as the events are (they are the trigger's
# occurrence history): purged once they settled DELETE_AFTER ago (an occurrence fired by
# a backfill or a catch-up long after its time is young however old its fire_at) and
# their event is gone (retention deletes the events first in a pass). Never the newest
# of a trigger, which keeps the (trigger_id, scheduled_for) key that stops that
# occurrence from being inserted and fired again (one dive into that key); any, once the
# trigger is gone. Rows the span passes over stay for a later pass. Selected, then
# deleted by id: MySQL refuses a DELETE whose subquery reads the same table.
_PURGEABLE_SCHEDULES = (
    "SELECT s.id FROM trigger_schedules s FORCE INDEX (ix_schedules_due)"
    " LEFT JOIN triggers t ON t.id = s.trigger_id"
    f" WHERE s.status = %(status)s AND {_span('s.fire_at', 's.id')}"
    " AND s.updated_at < %(cutoff)s"
    " AND (s.event_id IS NULL"
    "      OR NOT EXISTS (SELECT 1 FROM event_logs e WHERE e.id = s.event_id))"
    " AND (t.id IS NULL OR s.scheduled_for < (SELECT n.scheduled_for FROM trigger_schedules n"
    "                                         WHERE n.trigger_id = s.trigger_id"
    "                                         ORDER BY n.scheduled_for DESC LIMIT 1))"
)


def lock_name(database: str) -> str:
    """GET_LOCK names are server-wide: one per database (64 characters at most)."""
    name = f"triggerd-retention:{database}"
    if len(name) > 64:
        name = "triggerd-retention:" + hashlib.sha1(database.encode()).hexdigest()
    return name


class RetentionStore:
    """One method per statement (or per short transaction). `on_statement(name, seconds)`
    sees every statement's duration (the benchmark records the longest)."""

    def __init__(self, db: Database, on_statement: StatementHook | None = None) -> None:
        self.db = db
        self.on_statement = on_statement

    async def _run(self, name: str, cur: Any, sql: str, params: dict[str, Any]) -> int:
        started = time.perf_counter()
        try:
            return int(await cur.execute(sql, params))
        finally:
            if self.on_statement is not None:
                self.on_statement(name, time.perf_counter() - started)

    async def _rows(self, name: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self.db.acquire() as conn, conn.cursor() as cur:
            await self._run(name, cur, sql, params)
            return list(await cur.fetchall())

    async def _write(self, name: str, sql: str, params: dict[str, Any]) -> int:
        async with self.db.acquire() as conn, conn.cursor() as cur:
            return await self._run(name, cur, sql, params)

    async def _write_read_committed(self, name: str, sql: str, params: dict[str, Any]) -> int:
        async with self.db.acquire() as conn, conn.cursor() as cur:
            await cur.execute(_READ_COMMITTED)  # this autocommit statement's transaction
            return await self._run(name, cur, sql, params)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A READ COMMITTED transaction: the span's rows are locked, but no gaps, so the
        API and the workers inserting events, attempts and keys next to them never wait
        for retention (REPEATABLE READ would lock a gap beside every deleted entry)."""
        async with self.db.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(_READ_COMMITTED)
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    yield cur
                started = time.perf_counter()
                await conn.commit()
                if self.on_statement is not None:
                    self.on_statement("commit", time.perf_counter() - started)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise

    async def _end(
        self, name: str, sql: str, cutoff: datetime, after: Position, limit: int, **extra: Any
    ) -> Position | None:
        params = {**Span(after, None).params(cutoff), "offset": limit - 1, **extra}
        rows = await self._rows(name, sql, params)
        if not rows:
            return None
        at, row_id = rows[0]
        return Position(at, row_id)

    # --- the pass lock -------------------------------------------------------------

    async def try_lock(self, conn: Any, name: str) -> bool:
        """GET_LOCK on `conn` without waiting; held until released or the connection
        closes (so a process that dies mid-pass frees it)."""
        async with conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
            row = await cur.fetchone()
        return bool(row and row[0] == 1)

    async def unlock(self, conn: Any, name: str) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            await cur.fetchall()

    # --- events ----------------------------------------------------------------------

    async def delete_batch_end(
        self, cutoff: datetime, after: Position, limit: int
    ) -> Position | None:
        """The `limit`-th event fired before `cutoff` after `after`, whatever its retention
        status (ix_events_fired); None when fewer are left."""
        return await self._end("delete_batch_end", _END_DELETE, cutoff, after, limit)

    async def archive_batch_end(
        self, cutoff: datetime, after: Position, limit: int
    ) -> Position | None:
        """The `limit`-th active event fired before `cutoff` after `after` (ix_events_list)."""
        return await self._end("archive_batch_end", _END_ARCHIVE, cutoff, after, limit)

    async def archive(self, cutoff: datetime, span: Span) -> int:
        return await self._write_read_committed("archive", _ARCHIVE, span.params(cutoff))

    async def delete_events(self, cutoff: datetime, span: Span) -> tuple[int, int, int]:
        """Delete the span's settled events with their attempts and idempotency keys, in
        one short transaction. Returns (events, attempts, keys) deleted."""
        events = attempts = keys = 0
        async with self._transaction() as cur:
            await self._run("lock_span", cur, _LOCK_SPAN, span.params(cutoff))
            ids = [row[0] for row in await cur.fetchall()]
            for start in range(0, len(ids), ID_CHUNK):
                listed = uuid_literals(ids[start : start + ID_CHUNK])
                attempts += await self._run(
                    "delete_attempts", cur, _DELETE_ATTEMPTS.format(ids=listed), {}
                )
                keys += await self._run("delete_keys", cur, _DELETE_KEYS.format(ids=listed), {})
                events += await self._run(
                    "delete_events", cur, _DELETE_EVENTS.format(ids=listed), {}
                )
        return events, attempts, keys

    # --- schedules -----------------------------------------------------------------

    async def schedules_batch_end(
        self, status: str, cutoff: datetime, after: Position, limit: int
    ) -> Position | None:
        """The `limit`-th occurrence in `status` due before `cutoff` (ix_schedules_due)."""
        return await self._end(
            "schedules_batch_end", _END_SCHEDULES, cutoff, after, limit, status=status
        )

    async def delete_schedules(self, status: str, cutoff: datetime, span: Span) -> int:
        params = {**span.params(cutoff), "status": status}
        ids = [row[0] for row in await self._rows("purgeable", _PURGEABLE_SCHEDULES, params)]
        deleted = 0
        for start in range(0, len(ids), ID_CHUNK):
            # Re-checked: a cancelled occurrence can come back to pending (re-activation).
            listed = int_list(ids[start : start + ID_CHUNK])
            deleted += await self._write(
                "delete_schedules",
                f"DELETE FROM trigger_schedules WHERE id IN ({listed}) AND {_FINISHED}",
                {},
            )
        return deleted


    # --- the audit log ----------------------------------------------------------------

    async def audit_batch_end(
        self, cutoff: datetime, after: Position, limit: int
    ) -> Position | None:
        """The `limit`-th audit entry written before `cutoff` after `after` (ix_audit_at)."""
        return await self._end("audit_batch_end", _END_AUDIT, cutoff, after, limit)

    async def delete_audit(self, cutoff: datetime, span: Span) -> int:
        return await self._write_read_committed("delete_audit", _DELETE_AUDIT,
                                                span.params(cutoff))  # fmt: skip


# --- row counts for the gauges -------------------------------------------------
# Grouped COUNTs over covering indexes (ix_triggers_type_status, ix_schedules_due):
# those tables stay small (schedule rows are purged). The event log does not: counting
# 1M entries of ix_events_list takes ~0.5 s warm, seconds cold. So each retention status
# is counted exactly up to EXACT_EVENTS rows (a LIMITed count, ~0.1 s at most), and a
# status above that is the table's row estimate (InnoDB's, kept current on every insert
# and delete) minus the exact counts of the others. In steady state `active` is the
# small one (ARCHIVE_AFTER worth of events) and `archived` the estimated one.

EXACT_EVENTS = 200_000

_COUNT_TRIGGERS = "SELECT type, status, COUNT(*) AS n FROM triggers GROUP BY type, status"
_COUNT_SCHEDULES = (
    "SELECT status, COUNT(*) AS n FROM trigger_schedules FORCE INDEX (ix_schedules_due)"
    " GROUP BY status"
)
_COUNT_EVENTS_UP_TO = (
    "SELECT COUNT(*) AS n FROM (SELECT 1 FROM event_logs FORCE INDEX (ix_events_list)"
    " WHERE retention_status = %(status)s LIMIT %(limit)s) AS counted"
)
# `rows` of a full-scan plan is the storage engine's row estimate, read live (unlike
# information_schema.TABLES, which MySQL 8 caches for up to a day).
_ESTIMATE_EVENTS = "EXPLAIN SELECT id FROM event_logs"
# MIN over one value of the index's first column is one index dive.
_OLDEST_OPEN_SCHEDULE = (
    "SELECT MIN(fire_at) AS fire_at FROM trigger_schedules WHERE status = %(status)s"
)


class RowCounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def triggers(self) -> dict[tuple[str, ...], int]:
        rows = await self.db.fetchall(_COUNT_TRIGGERS)
        return {(str(r["type"]), str(r["status"])): int(r["n"]) for r in rows}

    async def schedules(self) -> dict[tuple[str, ...], int]:
        rows = await self.db.fetchall(_COUNT_SCHEDULES)
        return {(str(r["status"]),): int(r["n"]) for r in rows}

    async def events(self, exact_up_to: int = EXACT_EVENTS) -> dict[tuple[str, ...], int]:
        exact: dict[str, int] = {}
        over: list[str] = []
        for status in RETENTION_STATUSES:
            params = {"status": status, "limit": exact_up_to + 1}
            row = await self.db.fetchone(_COUNT_EVENTS_UP_TO, params)
            count = int(row["n"]) if row else 0
            if count > exact_up_to:
                over.append(status)
            else:
                exact[status] = count
        counts: dict[tuple[str, ...], int] = {(s,): n for s, n in exact.items()}
        if over:
            rest = max(0, await self.estimate_events() - sum(exact.values()))
            for status in over:  # more than one only while retention is far behind
                counts[(status,)] = max(exact_up_to + 1, rest // len(over))
        return counts

    async def estimate_events(self) -> int:
        """The storage engine's estimate of the event log's row count."""
        rows = await self.db.fetchall(_ESTIMATE_EVENTS)
        return int(rows[0]["rows"] or 0) if rows else 0

    async def oldest_open_schedule(self) -> datetime | None:
        """The earliest `fire_at` of an occurrence not yet fired (pending or claimed)."""
        found: list[datetime] = []
        for status in ("pending", "processing"):
            row = await self.db.fetchone(_OLDEST_OPEN_SCHEDULE, {"status": status})
            fire_at = from_db(row["fire_at"]) if row else None
            if fire_at is not None:
                found.append(fire_at)
        return min(found, default=None)

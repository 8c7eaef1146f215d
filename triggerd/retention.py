"""The `retention` role: events are `active` for ARCHIVE_AFTER after `fired_at`,
then `archived`, then deleted with their delivery attempts and idempotency keys once
DELETE_AFTER has passed. An event whose delivery has not ended (`pending`, `retrying`)
keeps its state until it ends. Finished schedule rows (a trigger's occurrence history:
fired, missed, cancelled) are kept as long as the events: they are purged once they
settled DELETE_AFTER ago and their event is gone (all but the newest of each trigger),
so `trigger_schedules` does not grow forever. Audit log entries are deleted once they
are older than TRIGGERD_AUDIT_RETENTION.

Every `retention_interval` one pass runs, in batches. A batch is a span of an index in
(time, id) order: one covering index read finds where the next N due rows end, then one
range statement (archive) or one short transaction (delete: lock the span's settled
events reading their ids, delete their attempts, keys and the events by id) changes that
span only. N is `retention_batch_size` at most, less while batches take longer than
BATCH_TARGET, so no statement holds locks for long; the loop yields between batches. A
pass stops at its time budget (a backlog) and the next one starts at once, from the
oldest due rows again.

Several retention processes are safe: every write re-checks its conditions, and a named
lock (GET_LOCK, per database) lets one process do the pass while the others skip it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pymysql

from triggerd.config import Settings
from triggerd.domain.backoff import Backoff
from triggerd.domain.retry import Retry
from triggerd.domain.timeutil import utcnow
from triggerd.services import Services
from triggerd.store.mysql_errors import RESTARTING, code_of, is_lock_conflict, is_transient
from triggerd.store.retention import FINISHED_SCHEDULES, Position, RetentionStore, Span, lock_name

log = logging.getLogger(__name__)

MIN_PASS_BUDGET = 30.0  # seconds; a pass may use the whole interval when that is longer
# Batch sizing: what one batch (one statement, or the delete transaction) may take.
BATCH_TARGET = 0.25
BATCH_START = 1000
BATCH_MIN = 50
# A deadlock or lock wait timeout (a worker, a replay or another pass holding rows of
# the span) rolls back one statement or transaction; it is safe to run again.
_SPAN_RETRY = Retry(tries=3, base=0.05, cap=1.0, log_level=logging.INFO)


def retryable(exc: BaseException) -> bool:
    """The pass stops and runs again later: the server is away or restarting (MariaDB
    reports a shutdown in progress as an InternalError too)."""
    return is_transient(exc) or (
        isinstance(exc, pymysql.err.InternalError) and code_of(exc) in RESTARTING
    )


@dataclass
class PassResult:
    archived: int = 0
    deleted: int = 0
    attempts_deleted: int = 0
    keys_deleted: int = 0
    schedules_deleted: int = 0
    audit_deleted: int = 0
    batches: int = 0
    complete: bool = True  # False: the budget ended first; work is left for the next pass
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return self.archived + self.deleted + self.schedules_deleted + self.audit_deleted


@dataclass(frozen=True)
class Windows:
    archive_after: float
    delete_after: float
    batch_size: int
    audit_after: float = 90 * 86400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Windows:
        return cls(
            settings.retention_archive_after,
            settings.retention_delete_after,
            settings.retention_batch_size,
            settings.audit_retention,
        )


FindEnd = Callable[[Position, int], Awaitable[Position | None]]
Apply = Callable[[Span], Awaitable[None]]


class BatchSize:
    """Rows per batch: at most the configured size, less while batches take longer than
    the target (a loaded or cold server), so no statement holds its locks for long. It
    starts small and grows while batches are quick."""

    def __init__(self, ceiling: int, target: float = BATCH_TARGET) -> None:
        self.ceiling = ceiling
        self.target = target
        self.value = min(ceiling, BATCH_START)

    def record(self, seconds: float) -> None:
        if seconds > self.target:
            self.value = max(BATCH_MIN, int(self.value * self.target / seconds))
        elif seconds < self.target / 2:
            self.value = min(self.ceiling, max(self.value + 1, int(self.value * 1.5)))
        self.value = min(self.value, self.ceiling)


async def _walk(find_end: FindEnd, apply: Apply, start: Position, size: BatchSize,
                deadline: float, result: PassResult) -> bool:  # fmt: skip
    """Apply span after span in index order until the last (short) one is done (True) or
    the deadline passed (False). The position moves past every row of a span, changed or
    not, so rows that stay (deliveries in flight) are passed over once per pass."""
    after = start
    while True:
        end = await find_end(after, size.value)
        started = time.monotonic()
        await _with_retries(apply, Span(after, end))
        size.record(time.monotonic() - started)
        result.batches += 1
        if end is None:
            return True
        after = end
        await asyncio.sleep(0)  # let the rest of the process run between batches
        if time.monotonic() >= deadline:
            return False


async def _with_retries(apply: Apply, span: Span) -> None:
    await _SPAN_RETRY.run(lambda: apply(span), retry_on=is_lock_conflict,
                          what="retention batch", log=log)  # fmt: skip


async def run_pass(
    store: RetentionStore,
    windows: Windows,
    *,
    now: datetime | None = None,
    budget: float = MIN_PASS_BUDGET,
    on_batch: Callable[[str, int], None] | None = None,
) -> PassResult:
    """One retention pass: delete events, archive events, purge schedule rows, delete
    old audit entries. Deleting first spares archiving rows that are about to go."""
    now = now or utcnow()
    started = time.monotonic()
    deadline = started + budget
    result = PassResult()
    delete_cutoff = now - timedelta(seconds=windows.delete_after)
    archive_cutoff = now - timedelta(seconds=windows.archive_after)
    audit_cutoff = now - timedelta(seconds=windows.audit_after)
    size = BatchSize(windows.batch_size)

    def report(action: str, count: int) -> None:
        if on_batch is not None and count:
            on_batch(action, count)

    async def delete(span: Span) -> None:
        events, attempts, keys = await store.delete_events(delete_cutoff, span)
        result.deleted += events
        result.attempts_deleted += attempts
        result.keys_deleted += keys
        report("deleted", events)

    async def archive(span: Span) -> None:
        count = await store.archive(archive_cutoff, span)
        result.archived += count
        report("archived", count)

    def schedules(status: str) -> tuple[FindEnd, Apply, Position]:
        async def purge(span: Span) -> None:
            count = await store.delete_schedules(status, delete_cutoff, span)
            result.schedules_deleted += count
            report("schedules_deleted", count)

        def find_end(after: Position, limit: int) -> Awaitable[Position | None]:
            return store.schedules_batch_end(status, delete_cutoff, after, limit)

        return find_end, purge, Position.start(int)

    async def audit(span: Span) -> None:
        count = await store.delete_audit(audit_cutoff, span)
        result.audit_deleted += count
        report("audit_deleted", count)

    steps: list[tuple[FindEnd, Apply, Position]] = [
        (lambda a, n: store.delete_batch_end(delete_cutoff, a, n), delete, Position.start()),
        # From the delete cutoff: an active event older than that is in flight, or settled
        # after the delete step passed it and goes in the next pass.
        (
            lambda a, n: store.archive_batch_end(archive_cutoff, a, n),
            archive,
            Position(delete_cutoff, ""),
        ),
        *(schedules(status) for status in FINISHED_SCHEDULES),
        (lambda a, n: store.audit_batch_end(audit_cutoff, a, n), audit, Position.start(int)),
    ]
    for find_end, apply, start in steps:
        if not await _walk(find_end, apply, start, size, deadline, result):
            result.complete = False
            break
    result.seconds = time.monotonic() - started
    return result


class RetentionRole:
    name = "retention"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.store = RetentionStore(services.db)
        self.windows = Windows.from_settings(services.settings)
        self.lock = lock_name(services.settings.database.database)
        self.budget = max(self.settings.retention_interval, MIN_PASS_BUDGET)

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            started = time.monotonic()
            try:
                result = await self.run_once()
            except Exception as exc:
                if not retryable(exc):
                    raise
                delay = backoff.next()
                log.warning("retention: database unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if result is not None and not result.complete:
                await asyncio.sleep(0)  # backlog: the next pass starts at once
                continue
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.settings.retention_interval - elapsed))

    async def run_once(self) -> PassResult | None:
        """One pass under the per-database lock; None when another process holds it."""
        moved = self.services.metrics.retention_moved
        async with self.services.db.acquire() as conn:
            if not await self.store.try_lock(conn, self.lock):
                log.debug("retention: another process is running the pass")
                return None
            try:
                result = await run_pass(
                    self.store,
                    self.windows,
                    budget=self.budget,
                    on_batch=lambda action, count: moved.labels(action).inc(count),
                )
            except BaseException:
                conn.close()  # ends the session, which releases the lock
                raise
            await self.store.unlock(conn, self.lock)
        _log_result(result)
        return result


def _log_result(result: PassResult) -> None:
    level = logging.INFO if result.changed or not result.complete else logging.DEBUG
    log.log(
        level,
        "retention pass: %d archived, %d deleted (%d attempts, %d idempotency keys),"
        " %d schedule rows purged, %d audit entries deleted, %d batches, %.2fs%s",
        result.archived,
        result.deleted,
        result.attempts_deleted,
        result.keys_deleted,
        result.schedules_deleted,
        result.audit_deleted,
        result.batches,
        result.seconds,
        "" if result.complete else " (budget used up; continuing)",
    )

"""Group-commit ingestion: many requests, one transaction, one publish batch.

Webhooks and test runs hand their `EventRecord` to `EventWriter.submit()` and await
the event id. One writer task drains the bounded queue: it takes what is waiting (up
to `max_batch` records or `max_bytes` of payload, waiting at most `max_wait` for more)
and writes it in ONE transaction: a multi-row INSERT of the Idempotency-Keys (a
duplicate is a no-op), a locking read of who won each key, and a multi-row INSERT of
the events that are new. Only after COMMIT are the futures resolved, so a 202 always
names a durable row. A full queue is `Overloaded` (the API answers 503).

Every event is written with `publish_at = fired_at + PUBLISH_GRACE` (the OUTBOX
protocol of store/event_rows.py). After the commit its job goes to the `Publisher`,
which publishes whole batches with `Bus.publish_many` and hands the acknowledged ids
to the `OutboxClearer`: a second later it clears `publish_at` with one UPDATE per
window (guarded by `publish_attempt`, so a retry or replay scheduled meanwhile is never
cleared), usually finding the delivery recorded and nothing left to write. Whatever
the publisher cannot publish — Kafka down, its own queue full, the process killed —
stays owed in the table and the outbox relay publishes it once the grace has passed: a
202 is never lost. A job Kafka can never take (JobTooLarge) is not left owed: its event
ends `failed` with the reason.

Idempotency keys are stored as the SHA-256 of the client's key, so a key of any
length and case is matched exactly (the column's collation is case-insensitive).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from triggerd.bus.producer import Bus, JobTooLarge
from triggerd.domain.audit import AuditEntry
from triggerd.domain.errors import TriggerdError
from triggerd.domain.jobs import Job
from triggerd.domain.retry import Retry
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.metrics import Metrics
from triggerd.store.audit import record_many
from triggerd.store.db import Database, is_transient
from triggerd.store.event_rows import EventRecord, insert_statements
from triggerd.store.literals import time_literal, uuid_literals
from triggerd.store.outbox import Unpublishable, fail_unpublishable
from triggerd.tracing import Kind, Tracer, trace_publishes

log = logging.getLogger(__name__)

PUBLISH_GRACE = timedelta(seconds=5)
# A published job's outbox mark is cleared this long after its publish (well inside the
# grace), by which time its delivery is usually recorded and the clear writes nothing.
CLEAR_DELAY = 1.0
CLEAR_WINDOW = 0.1  # seconds of due clears that share one UPDATE
_PUBLISH_TIMEOUT = 10.0  # a batch not acked by then is left to the relay
# A deadlock or a dropped connection: the requests of the batch wait for a few quick
# tries before they are answered 503.
_WRITE_RETRY = Retry(tries=3, base=0.05, cap=0.2, log_level=logging.INFO)
_CLEAR_RETRY = Retry(tries=3, base=0.01, cap=0.05, log_level=logging.INFO)
_LOG_EVERY = 10.0  # seconds between repeated "kafka down" warnings

T = TypeVar("T")


class Overloaded(TriggerdError):
    """The ingestion queue is full; the client should retry later (503)."""


class IngestUnavailable(TriggerdError):
    """The batch could not be written (database down, or shutting down) (503)."""


def idempotency_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def job_for(record: EventRecord, attempt: int = 1) -> Job:
    return Job(
        event_id=record.id, trigger_id=record.trigger_id, type=record.trigger_type,
        source=record.source, is_test_run=record.is_test_run, payload=record.payload,
        scheduled_for=record.scheduled_for, fired_at=record.fired_at, attempt=attempt,
        payload_json=record.payload_json, traceparent=record.traceparent,
    )  # fmt: skip


class _Batcher(Generic[T]):
    """A bounded queue drained in batches by `concurrency` owned tasks.

    A task takes what is waiting (up to `max_batch` items or `max_bytes`); when that is
    less than a full batch (or than `min_batch`, when set) it waits `max_wait` once for
    more (the group-commit window) and takes again. A plain deque and one wake-up
    future rather than asyncio.Queue: per item that saves a future, a timeout and
    several calls, at thousands a second.

    `run()` runs until cancelled; then it stops intake, lets the tasks drain the queue
    for up to `drain_timeout` seconds, cancels what is left and re-raises."""

    name = "batcher"

    def __init__(self, *, concurrency: int, max_batch: int, max_wait: float, max_queue: int,
                 max_bytes: int = 0, drain_timeout: float = 10.0,
                 split: bool = False, min_batch: int = 0) -> None:  # fmt: skip
        self.concurrency = concurrency
        self.split = split
        self.min_batch = min_batch
        self._idle = 0  # tasks waiting in _collect
        self._gathering = False  # a task is waiting out the window
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.max_bytes = max_bytes
        self.drain_timeout = drain_timeout
        self._items: deque[T] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self.closed = False

    def _offer(self, item: T) -> bool:
        if self.closed or len(self._items) >= self.max_queue:
            return False
        self._items.append(item)
        self._wake()
        return True

    def _offer_all(self, items: Iterable[T]) -> None:
        """Queue `items` in order until the queue is full or closed; the rest is dropped
        (whoever offers them has a slower way for what is dropped)."""
        for item in items:
            if not self._offer(item):
                return

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _size(self, item: T) -> int:
        del item
        return 0

    async def _handle(self, batch: list[T]) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        loops = [asyncio.create_task(self._loop(), name=f"{self.name}-{i}")
                 for i in range(self.concurrency)]  # fmt: skip
        try:
            await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for task in loops:  # a loop only ends by crashing: surface it
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.closed = True
            self._wake()
            _done, pending = await asyncio.wait(loops, timeout=self.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:  # closed and drained
                return
            try:
                await self._handle(batch)
            except Exception:
                log.exception("%s: batch of %d failed", self.name, len(batch))

    async def _collect(self) -> list[T]:
        """The next batch; [] once closed with nothing left.

        With `split`, a task that finds other tasks idle takes only its share of what is
        waiting. Under a burst, one batch of everything would leave the event loop idle
        until it commits; halves overlap one's commit with the other's responses. Only
        one task at a time waits out the window: two would halve each other's batches."""
        self._idle += 1
        try:
            while not self._items or self._gathering:
                if self.closed and not self._items:
                    return []
                if self._wakeup is None or self._wakeup.done():
                    self._wakeup = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._wakeup)  # shared by the tasks: one must not cancel it
        finally:
            self._idle -= 1
        limit = self.max_batch
        if self.split and self._idle and len(self._items) >= 2 * max(1, self.min_batch):
            limit = min(limit, -(-len(self._items) // (self._idle + 1)))
        batch: list[T] = []
        size = self._take(batch, 0, limit)
        if (self.max_wait > 0 and not self.closed and self._room(batch, size, limit)
                and (not self.min_batch or len(batch) < self.min_batch)):  # fmt: skip
            self._gathering = True
            try:
                await asyncio.sleep(self.max_wait)
            finally:
                self._gathering = False
            self._take(batch, size, limit)
        if self._items:
            self._wake()  # more than one batch is waiting: let another task start on it
        return batch

    def _room(self, batch: list[T], size: int, limit: int) -> bool:
        return len(batch) < limit and (not self.max_bytes or size < self.max_bytes)

    def _take(self, batch: list[T], size: int, limit: int) -> int:
        items = self._items
        while items and self._room(batch, size, limit):
            item = items.popleft()
            batch.append(item)
            size += self._size(item)
        return size


class Publisher(_Batcher[Job]):
    """Publishes freshly committed jobs in batches and hands them to the `OutboxClearer`."""

    name = "ingest-publisher"

    def __init__(self, bus: Bus, metrics: Metrics, clearer: OutboxClearer, *,
                 concurrency: int = 2, max_batch: int = 1000, max_queue: int = 50_000,
                 tracer: Tracer | None = None) -> None:  # fmt: skip
        super().__init__(concurrency=concurrency, max_batch=max_batch, max_wait=0.0,
                         max_queue=max_queue)  # fmt: skip
        self.bus = bus
        self.metrics = metrics
        self.clearer = clearer
        self.tracer = tracer or Tracer()
        self._last_warning = 0.0

    def offer(self, jobs: Sequence[Job]) -> None:
        """Queue jobs for publishing; what does not fit is left to the outbox relay."""
        self._offer_all(jobs)

    async def _handle(self, batch: list[Job]) -> None:
        started = time.time_ns()
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                results: list[Any] = await self.bus.publish_many(batch)
        except TimeoutError as exc:
            results = [exc] * len(batch)
        if self.tracer.enabled:
            trace_publishes(self.tracer, batch, results, started, self.bus.topic)
        published = [job for job, result in zip(batch, results, strict=True)
                     if not isinstance(result, BaseException)]  # fmt: skip
        failed = len(batch) - len(published)
        if failed and any(isinstance(result, JobTooLarge) for result in results):
            refused = [Unpublishable(job.event_id, job.attempt, result.reason)
                       for job, result in zip(batch, results, strict=True)
                       if isinstance(result, JobTooLarge)]  # fmt: skip
            failed -= len(refused)
            await fail_too_large(self.clearer.db, self.metrics, refused)
        if failed:
            self.metrics.publish_failures.inc(failed)
            now = time.monotonic()
            if now - self._last_warning > _LOG_EVERY:
                self._last_warning = now
                error = next(r for r in results if isinstance(r, BaseException))
                log.warning("%d job(s) not published (%s); the outbox relay will retry them",
                            failed, error)  # fmt: skip
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for job in published:
            if job.attempt == 1:  # a firing; a replay (attempt > 1) is not one again
                counts[(job.type, job.source)] += 1
        for labels, count in counts.items():
            self.metrics.fires.labels(*labels).inc(count)
        if published:
            self.clearer.offer(published, utcnow())


async def fail_too_large(db: Database, metrics: Metrics, refused: Sequence[Unpublishable]
                         ) -> None:  # fmt: skip
    """End the events of jobs Kafka can never take `failed`, rather than leave them owed
    to the relay, which would try them forever. If that cannot be written now, the
    relay meets the same refusal after the grace and writes it then."""
    try:
        ended = await _CLEAR_RETRY.run(functools.partial(fail_unpublishable, db, refused,
                                                         utcnow()),
                                       retry_on=is_transient, what="failing events", log=log)
    except Exception as exc:
        log.warning("%d job(s) too large for Kafka; could not end their events yet: %s",
                    len(refused), exc)  # fmt: skip
        return
    metrics.jobs_too_large.inc(len(ended))
    for item in refused:
        if item.event_id in ended:
            log.error("event %s failed: %s", item.event_id, item.reason,
                      extra={"event_id": item.event_id})  # fmt: skip


@dataclass(frozen=True, slots=True)
class PublishedJob:
    event_id: str
    attempt: int
    at: str  # when its publish was acknowledged, as a DATETIME literal


class OutboxClearer:
    """Clears the outbox mark of fast-path published jobs and records when they went out.

    The mark only has to go before the relay's grace (PUBLISH_GRACE) runs out, so each
    job's clear is held CLEAR_DELAY after its publish, and the jobs that come due within
    CLEAR_WINDOW of each other share one UPDATE. By then the worker has usually
    recorded the attempt: its outcome cleared `publish_at` and wrote `published_at`
    itself (store/deliveries.py), and the clear finds nothing left to write. A clear that
    writes changes the row and its owed-index entry a second time; one that finds the
    row settled only reads it by its key.

    A row is cleared only while it still owes the same attempt (`publish_attempt`; a
    retry or a replay owes a higher one) and has no `published_at` yet (the relay or the
    worker set it first). Whatever cannot be cleared, the relay republishes after the
    grace; the worker absorbs the duplicate.

    Under a heavy stream one UPDATE of every due row ran for tens of milliseconds and
    slowed the event INSERTs beside it (the webhooks' p99 doubled). `max_batch` bounds a
    statement instead: at high rates the clears go out as a steady run of small UPDATEs.
    On shutdown every held clear goes out at once, due or not."""

    name = "outbox-clearer"

    def __init__(self, db: Database, *, delay: float = CLEAR_DELAY,
                 window: float = CLEAR_WINDOW, max_batch: int = 250,
                 max_queue: int = 100_000, drain_timeout: float = 10.0) -> None:  # fmt: skip
        self.db = db
        self.delay = delay
        self.window = window
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.drain_timeout = drain_timeout
        # (when due, on the monotonic clock; the jobs of one publish), in order of publish
        self._held: deque[tuple[float, list[PublishedJob]]] = deque()
        self._count = 0
        self._offered = asyncio.Event()
        self.closed = False

    def offer(self, jobs: Sequence[Job], published_at: datetime) -> None:
        """Hold the clear of `jobs`; what does not fit is left to the outbox relay."""
        room = self.max_queue - self._count
        if self.closed or room <= 0 or not jobs:
            return
        at = time_literal(published_at)
        items = [PublishedJob(job.event_id, job.attempt, at) for job in jobs[:room]]
        self._held.append((time.monotonic() + self.delay, items))
        self._count += len(items)
        self._offered.set()

    async def run(self) -> None:
        try:
            while True:
                await self._until_due()
                await self._clear(self._take(time.monotonic() + self.window))
        finally:
            self.closed = True
            try:
                async with asyncio.timeout(self.drain_timeout):
                    while self._held:
                        await self._clear(self._take(float("inf")))
            except TimeoutError:
                log.warning("shutdown: %d outbox clear(s) left to the relay", self._count)

    async def _until_due(self) -> None:
        while True:
            if not self._held:
                self._offered.clear()
                await self._offered.wait()
                continue
            wait = self._held[0][0] - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _take(self, due_by: float) -> list[PublishedJob]:
        """Up to max_batch held jobs due by `due_by`, oldest first."""
        batch: list[PublishedJob] = []
        held = self._held
        while held and held[0][0] <= due_by and len(batch) < self.max_batch:
            due, items = held.popleft()
            room = self.max_batch - len(batch)
            if len(items) > room:
                held.appendleft((due, items[room:]))
                items = items[:room]
            batch.extend(items)
        self._count -= len(batch)
        return batch

    async def _clear(self, batch: list[PublishedJob]) -> None:
        by_attempt: dict[int, list[PublishedJob]] = defaultdict(list)
        for item in batch:
            by_attempt[item.attempt].append(item)
        for attempt, items in by_attempt.items():
            sql = clear_statement(items)
            try:
                await _CLEAR_RETRY.run(functools.partial(self.db.execute, sql, [attempt]),
                                       retry_on=is_transient, what="outbox clear", log=log)
            except Exception as exc:
                # The relay republishes them; the worker absorbs the duplicates.
                log.warning("could not clear the outbox mark of %d published job(s): %s",
                            len(items), exc)  # fmt: skip


def clear_statement(items: Sequence[PublishedJob]) -> str:
    """The UPDATE clearing `items` (of one attempt, the statement's one %s parameter).
    Ids are rendered by us, not as %s parameters: the driver's escaping of a thousand
    ids costs more than the UPDATE."""
    by_time: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_time[item.at].append(item.event_id)
    groups = {at: uuid_literals(ids) for at, ids in by_time.items()}  # each id rendered once
    if len(groups) == 1:
        published_at = next(iter(groups))
    else:
        published_at = "CASE" + "".join(
            f" WHEN id IN ({ids}) THEN {at}" for at, ids in groups.items()
        ) + " END"
    ids = ",".join(groups.values())
    return (f"UPDATE event_logs SET publish_at = NULL, published_at = {published_at}"
            f" WHERE id IN ({ids}) AND publish_attempt = %s AND published_at IS NULL")  # fmt: skip


@dataclass
class _Pending:
    record: EventRecord
    key: str | None  # hashed Idempotency-Key
    size: int
    future: asyncio.Future[str] = field(repr=False)
    audit: AuditEntry | None = None  # written with the event, in its transaction


class EventWriter(_Batcher[_Pending]):
    """Group commit of new events (and their Idempotency-Keys).

    Two writes may be in flight, and a burst is shared between them (`split`): while
    one batch commits, the event loop answers the other's requests and reads new ones,
    instead of waiting on one commit with nothing to do. Under a steady stream the
    second writer takes what arrives while the first commits. A batch smaller than
    `min_batch` waits `max_wait` for company (one task at a time): at a moderate rate
    that turns one INSERT and one produce request per webhook into one per few.
    docs/performance.md has the measurements behind these numbers."""

    name = "ingest-writer"

    def __init__(self, db: Database, publisher: Publisher, *, concurrency: int = 2,
                 max_batch: int = 256, max_wait: float = 0.002, min_batch: int = 4,
                 max_queue: int = 5000, max_bytes: int = 4 * 1024 * 1024) -> None:  # fmt: skip
        super().__init__(concurrency=concurrency, max_batch=max_batch, max_wait=max_wait,
                         max_queue=max_queue, max_bytes=max_bytes, split=True,
                         min_batch=min_batch)  # fmt: skip
        self.db = db
        self.publisher = publisher

    def submit(self, record: EventRecord, idempotency_key: str | None = None,
               size: int = 0, audit: AuditEntry | None = None) -> asyncio.Future[str]:  # fmt: skip
        """Queue `record` for the next group commit. The future resolves to its id once
        it is durable, or to the id of the event that first used the same
        Idempotency-Key for this trigger (then nothing new is written). `audit` is
        written in the transaction that writes the event, if it does. Raises Overloaded
        (queue full) or IngestUnavailable (shutting down) at once.

        A plain function returning the future, not a coroutine: one frame less to
        suspend and resume on every webhook."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        key = idempotency_hash(idempotency_key) if idempotency_key is not None else None
        if not self._offer(_Pending(record, key, size, future, audit)):
            if self.closed:
                raise IngestUnavailable("shutting down")
            raise Overloaded("ingestion queue is full")
        return future

    def _size(self, item: _Pending) -> int:
        return item.size

    async def _handle(self, batch: list[_Pending]) -> None:
        try:
            winners, fresh = await _WRITE_RETRY.run(lambda: self._commit(batch),
                                                    retry_on=is_transient, what="event batch",
                                                    log=log)  # fmt: skip
        except Exception as exc:
            if is_transient(exc):
                log.warning("event batch of %d not written: %s", len(batch), exc)
            else:
                log.exception("event batch of %d not written", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(IngestUnavailable(f"{type(exc).__name__}"))
            return
        for item in batch:
            if not item.future.done():
                key = (item.record.trigger_id, item.key)
                item.future.set_result(winners.get(key, item.record.id))
        self.publisher.offer([job_for(item.record) for item in fresh])

    async def _commit(
        self, batch: list[_Pending]
    ) -> tuple[dict[tuple[str | None, str | None], str], list[_Pending]]:
        keyed = [item for item in batch if item.key is not None]
        winners: dict[tuple[str | None, str | None], str] = {}
        if not keyed and not any(item.audit for item in batch):
            statements = insert_statements([item.record for item in batch])
            if len(statements) == 1:
                # One statement commits atomically on its own (autocommit): one round
                # trip instead of BEGIN, INSERT, COMMIT.
                await self.db.run(statements[0])
                return winners, batch
        async with self.db.transaction() as cur:
            if keyed:
                now = to_db(utcnow())
                # Sorted, so concurrent batches take key locks in one order (no deadlock).
                rows = sorted({(i.record.trigger_id, i.key): (i.record.trigger_id, i.key,
                               i.record.id, now) for i in reversed(keyed)}.values())  # fmt: skip
                # ON DUPLICATE KEY no-op rather than INSERT IGNORE: same effect, no warning.
                await cur.executemany(
                    "INSERT INTO idempotency_keys"
                    " (trigger_id, idempotency_key, event_id, created_at)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON DUPLICATE KEY UPDATE event_id = event_id",
                    rows,
                )
                where = " OR ".join(["(trigger_id = %s AND idempotency_key = %s)"] * len(rows))
                # A locking read sees the latest committed winner, also one committed by a
                # concurrent transaction (ours waited for it in the INSERT).
                await cur.execute(
                    f"SELECT trigger_id, idempotency_key, event_id FROM idempotency_keys"
                    f" WHERE {where} FOR UPDATE",
                    [value for row in rows for value in row[:2]],
                )
                for row in await cur.fetchall():
                    winners[(row["trigger_id"], row["idempotency_key"])] = row["event_id"]
            fresh = [item for item in batch if item.key is None
                     or winners.get((item.record.trigger_id, item.key)) == item.record.id]
            for statement in insert_statements([item.record for item in fresh]):
                await cur.execute(statement)
            await record_many(cur, [item.audit for item in fresh if item.audit])
        return winners, fresh


class IngestPipeline:
    """The writer, its publisher and the clearer, run together. On shutdown each
    outlives the one feeding it: the last committed batch still gets its fast-path
    publish, and the last published jobs their clear."""

    def __init__(self, db: Database, bus: Bus, metrics: Metrics,
                 tracer: Tracer | None = None) -> None:  # fmt: skip
        self.db = db
        self.bus = bus
        self.metrics = metrics
        self.tracer = tracer or Tracer()
        self.clearer = OutboxClearer(db)
        self.publisher = Publisher(bus, metrics, self.clearer, tracer=self.tracer)
        self.writer = EventWriter(db, self.publisher)

    def submit(self, record: EventRecord, idempotency_key: str | None = None,
               size: int = 0, audit: AuditEntry | None = None) -> Awaitable[str]:  # fmt: skip
        """What `EventWriter.submit` does (Overloaded and IngestUnavailable are raised
        at once); with tracing on, the wait is a span. `audit`: an entry written in the
        transaction that writes the event."""
        future = self.writer.submit(record, idempotency_key, size, audit)
        if not self.tracer.enabled:
            return future
        return self._traced(record, future)

    async def _traced(self, record: EventRecord, future: asyncio.Future[str]) -> str:
        # The wait for the group commit and the commit itself, as the request saw them.
        span = self.tracer.start("ingest commit", Kind.INTERNAL, parent=record.traceparent,
                                 attributes={"db.system": "mysql",
                                             "triggerd.event_id": record.id})  # fmt: skip
        try:
            return await future
        except Exception as exc:
            span.fail(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            span.end()

    def publish_later(self, jobs: Sequence[Job]) -> None:
        """Fast-path publish of jobs whose rows are already committed with publish_at set."""
        self.publisher.offer(jobs)

    async def run(self) -> None:
        clearer = asyncio.create_task(self.clearer.run(), name="outbox-clearer")
        publisher = asyncio.create_task(self.publisher.run(), name="ingest-publisher")
        try:
            await self.writer.run()
        finally:
            for task in (publisher, clearer):  # in this order: each drains what it got
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

"""The job consumer: Kafka records in, one task per job, offsets committed only after the
job's outcome is stored.

Concurrency is bounded by a semaphore (`worker_concurrency` jobs in flight). Jobs of one
partition run concurrently, so a slow target never holds up the jobs behind it; the
commit point of a partition is its lowest unfinished offset (every offset below it is
done), committed by a separate task shortly after jobs finish, shielded from
cancellation. A crash loses at most the uncommitted tail, which is redelivered and
absorbed by the attempt-row idempotency (store/deliveries.py).

Rebalances: on revoke, wait briefly for the revoked partitions' in-flight jobs, commit what
is done, forget them. Kafka down: the consumer is rebuilt with backoff, never crashing the
role; a partition whose log was reset meanwhile (a broker that lost its data) is read
again from its beginning. Shutdown (cancellation): stop fetching, drain in-flight jobs up to
`shutdown_timeout`, commit, leave the group, re-raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from triggerd.domain.backoff import Backoff
from triggerd.domain.jobs import Job
from triggerd.services import Services
from triggerd.worker.aio import shielded

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[object]]

_FETCH_TIMEOUT_MS = 200
_COMMIT_COALESCE = 0.05  # seconds between commits while jobs keep finishing
_COMMIT_TIMEOUT = 5.0
_RESET_CHECK_INTERVAL = 5.0  # seconds between checks for partitions reset by the broker
_RESET_CHECK_TIMEOUT = 3.0
_CLOSE_STEP = 1.5  # seconds for the final commit, and again for leaving the group
GAP_PATIENCE = 2.0  # seconds a hole in a partition's offsets is read again before moving on


class PartitionProgress:
    """Offsets of one partition: in flight, and the next to be dispatched. Records are
    dispatched in offset order, so everything below min(in flight) is finished.

    Our topic's offsets have no holes (no compaction, no transactions), so a record past
    `next_offset` means the fetch skipped some. tansu 0.6.0 does that when producers
    write one partition at once: it numbers a batch before it stores it, and a fetch in
    between returns the next stored batch, past the missing one. Committing past the hole
    would lose those jobs for this group: the partition is read again from the hole
    instead, until it fills or GAP_PATIENCE has passed (a hole that stays is accepted,
    logged; the delivery backstop redelivers what it held)."""

    __slots__ = ("committed", "gap", "inflight", "next_offset")

    def __init__(self) -> None:
        self.inflight: set[int] = set()
        self.next_offset: int | None = None
        self.committed: int | None = None
        self.gap: tuple[int, float] | None = None  # (offset of the hole, first seen)

    def started(self, offset: int) -> None:
        self.inflight.add(offset)
        self.next_offset = offset + 1
        self.gap = None

    def skipped_to(self, offset: int, now: float) -> bool:
        """Whether a record at `offset` jumps over records not seen yet that are worth
        reading again (False: in order, or a hole older than GAP_PATIENCE)."""
        expected = self.next_offset
        if expected is None or offset <= expected:
            return False
        if self.gap is None or self.gap[0] != expected:
            self.gap = (expected, now)
        return now - self.gap[1] < GAP_PATIENCE

    def finished(self, offset: int) -> None:
        self.inflight.discard(offset)

    def commit_point(self) -> int | None:
        """The offset to commit (the next one to consume), if it moved since the last commit."""
        point = min(self.inflight) if self.inflight else self.next_offset
        return None if point is None or point == self.committed else point


class JobConsumer:
    def __init__(self, services: Services, handler: Handler) -> None:
        self.settings = services.settings
        self.bus = services.bus
        self.handler = handler
        self._slots = asyncio.Semaphore(self.settings.worker_concurrency)
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._dirty = asyncio.Event()
        self._gap_logged: dict[TopicPartition, float] = {}  # a hole's first sighting, logged
        self.processed = 0  # jobs finished (for tests and diagnostics)
        # Waiting for in-flight jobs and committing on revoke must end well within the
        # rebalance timeout (= the session timeout), or the group drops this member.
        self._revoke_wait = min(5.0, self.settings.kafka_session_timeout / 2)
        self._revoke_commit_timeout = min(_COMMIT_TIMEOUT, self.settings.kafka_session_timeout / 4)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._progress)

    async def run(self) -> None:
        """Consume until cancelled; rebuild the consumer with backoff when Kafka fails."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            # The producer creates the topic: a consumer started first could auto-create
            # it with the broker's defaults.
            while not await self.bus.wait_connected(timeout=5.0):
                log.info("worker waiting for kafka")
            consumer = self._new_consumer()
            try:
                await consumer.start()
                log.info("worker consuming %s as group %s", self.settings.kafka_topic,
                         self.settings.kafka_group)  # fmt: skip
                backoff.reset()
                await self._consume(consumer)
            except (KafkaError, OSError) as exc:
                log.warning("kafka consumer failed (%s: %s); restarting", type(exc).__name__, exc)
            finally:
                await self._close(consumer)
            await asyncio.sleep(backoff.next())

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.kafka_group,
            client_id=f"triggerd-worker-{s.instance_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval * 1000),
            max_poll_records=max(1, s.worker_concurrency),
            fetch_max_wait_ms=max(1, round(s.kafka_fetch_wait * 1000)),
            metadata_max_age_ms=30_000,
        )
        consumer.subscribe([s.kafka_topic], listener=_Rebalance(self, consumer))
        return consumer

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        committer = asyncio.create_task(self._commit_loop(consumer), name="worker:commit")
        next_check = time.monotonic() + _RESET_CHECK_INTERVAL
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS)
                for tp, records in batches.items():
                    await self._dispatch(consumer, tp, records)
                if committer.done():
                    committer.result()  # surfaces a failure of the commit loop
                if time.monotonic() >= next_check:
                    await self._rewind_reset_partitions(consumer)
                    next_check = time.monotonic() + _RESET_CHECK_INTERVAL
        finally:
            committer.cancel()
            await asyncio.wait({committer})

    async def _rewind_reset_partitions(self, consumer: AIOKafkaConsumer) -> None:
        """A partition whose log was reset under us (a broker that lost its data, a topic
        deleted and recreated) is read again from its beginning; what was already
        delivered is absorbed as duplicates. Kafka itself answers OFFSET_OUT_OF_RANGE and
        aiokafka rewinds (auto_offset_reset); some Kafka-protocol brokers just return
        nothing, forever, which is what this catches: a fetch at our position answered
        with a high watermark below it.

        The high watermark of the fetch responses, not ListOffsets: tansu answers
        ListOffsets with the last batch's base offset + 1, below the true end whenever
        that batch holds several records (taken as the end, whole partitions were
        re-read every few seconds)."""
        try:
            async with asyncio.timeout(_RESET_CHECK_TIMEOUT):
                stale = []
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    if highwater is not None and await consumer.position(tp) > highwater:
                        stale.append(tp)
                if stale:
                    numbers = sorted(tp.partition for tp in stale)
                    log.warning("partitions %s were reset by the broker: reading them again",
                                numbers)  # fmt: skip
                    await consumer.seek_to_beginning(*stale)
                    for tp in stale:
                        self._progress[tp] = PartitionProgress()
        except (KafkaError, TimeoutError) as exc:
            log.debug("partition reset check skipped: %r", exc)

    async def _dispatch(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                        records: Iterable[ConsumerRecord]) -> None:  # fmt: skip
        progress = self._progress.get(tp)
        for record in records:
            if progress is not None and self._skipped(consumer, tp, progress, record.offset):
                return
            await self._slots.acquire()
            if self._progress.get(tp) is not progress or progress is None:
                # Revoked (or revoked and re-assigned) while we waited: the new owner, or
                # our own re-fetch from the committed offset, will process the rest.
                self._slots.release()
                return
            progress.started(record.offset)
            task = asyncio.create_task(
                self._process(record), name=f"job:{tp.topic}:{tp.partition}:{record.offset}"
            )
            self._tasks[task] = tp
            task.add_done_callback(functools.partial(self._finished, progress, record.offset))

    def _skipped(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                 progress: PartitionProgress, offset: int) -> bool:  # fmt: skip
        """A hole before `offset` (see PartitionProgress): read the partition again from
        the hole (True), or accept one that has not filled in GAP_PATIENCE (False)."""
        expected = progress.next_offset
        if progress.skipped_to(offset, time.monotonic()):
            if progress.gap is not None and progress.gap[1] == self._gap_logged.get(tp):
                log.debug("partition %d: offsets %s-%d still missing", tp.partition,
                          expected, offset - 1)  # fmt: skip
            else:
                assert progress.gap is not None
                self._gap_logged[tp] = progress.gap[1]
                log.info("partition %d: the fetch skipped offsets %s-%d; reading them again",
                         tp.partition, expected, offset - 1)  # fmt: skip
            consumer.seek(tp, expected)
            return True
        if expected is not None and offset > expected:
            log.warning("partition %d: offsets %d-%d never came back from the broker;"
                        " moving on (the delivery backstop republishes lost jobs)",
                        tp.partition, expected, offset - 1)  # fmt: skip
        elif progress.gap is not None:
            log.info("partition %d: the skipped offsets came back", tp.partition)
        return False

    async def _process(self, record: ConsumerRecord) -> None:
        try:
            job = Job.decode(record.value, record.headers, record.timestamp)
        except ValueError as exc:
            log.warning(
                "malformed job skipped: %s", exc,
                extra={"partition": record.partition, "offset": record.offset},
            )  # fmt: skip
            return
        try:
            await self.handler(job)
        except Exception:
            # Not a transient fault (those are ridden out inside): a bug or a poison
            # message. Logged once here; the offset moves on so one job cannot wedge
            # the partition.
            log.exception(
                "job failed; skipped",
                extra={"event_id": job.event_id, "partition": record.partition,
                       "offset": record.offset},
            )  # fmt: skip

    def _finished(self, progress: PartitionProgress, offset: int, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slots.release()
        if task.cancelled():
            return  # its outcome is not stored: the offset must not move past it
        progress.finished(offset)
        self.processed += 1
        self._dirty.set()

    async def _commit_loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._commit(consumer)
            await asyncio.sleep(_COMMIT_COALESCE)

    async def _commit(
        self, consumer: AIOKafkaConsumer, only: Iterable[TopicPartition] | None = None,
        limit: float = _COMMIT_TIMEOUT,
    ) -> None:  # fmt: skip
        wanted = set(only) if only is not None else None
        offsets = {
            tp: point
            for tp, progress in self._progress.items()
            if (wanted is None or tp in wanted) and (point := progress.commit_point()) is not None
        }
        if not offsets:
            return
        try:
            async with asyncio.timeout(limit):
                await shielded(consumer.commit(offsets), grace=1.0)
        except (KafkaError, TimeoutError) as exc:
            log.warning("offset commit failed (%s); will retry", exc or type(exc).__name__)
            self._dirty.set()
            return
        for tp, point in offsets.items():
            progress = self._progress.get(tp)
            if progress is not None:
                progress.committed = point

    async def revoke(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition]) -> None:
        """Rebalance: let the revoked partitions' jobs finish (briefly), commit, forget."""
        pending = [task for task, tp in self._tasks.items() if tp in revoked]
        if pending:
            await asyncio.wait(pending, timeout=self._revoke_wait)
        await self._commit(consumer, only=revoked, limit=self._revoke_commit_timeout)
        for tp in revoked:
            self._progress.pop(tp, None)

    def assign(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._progress.setdefault(tp, PartitionProgress())
        log.info("worker assigned %d partitions", len(assigned))

    async def _close(self, consumer: AIOKafkaConsumer) -> None:
        """Drain in-flight jobs, commit what finished, leave the group: within about
        `shutdown_timeout` in all (the daemon waits that long, plus a little, per role)."""
        drain = max(0.5, self.settings.shutdown_timeout - 2 * _CLOSE_STEP)
        if self._tasks:
            log.info("worker draining %d in-flight jobs", len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=drain)
        leftover = list(self._tasks)
        for task in leftover:
            task.cancel()
        if leftover:
            log.warning("worker cancelled %d unfinished jobs (redelivered later)", len(leftover))
            await asyncio.wait(leftover)
        with contextlib.suppress(Exception):
            await self._commit(consumer, limit=_CLOSE_STEP)
        self._progress.clear()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_STEP):
                await consumer.stop()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: JobConsumer, consumer: AIOKafkaConsumer) -> None:
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner.revoke(self.consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner.assign(set(assigned))

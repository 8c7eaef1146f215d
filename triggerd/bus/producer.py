"""The Kafka producer, kept connected by its own task.

The broker may be down when the daemon starts or at any time later; `run()` keeps
(re)starting the producer with backoff and probes the cluster so `/health` can say
"kafka: down". Publishing while disconnected raises BusUnavailable at once, so callers
(the scheduler, the outbox relay) can back off instead of hanging.

A job larger than Kafka takes is JobTooLarge, not BusUnavailable: trying it again can
never succeed, so the publishers end its event `failed` instead of retrying it. Jobs
over TRIGGERD_KAFKA_MAX_REQUEST_SIZE are refused here, before they reach the producer;
a broker whose own limit (message.max.bytes) is lower refuses them with
MESSAGE_TOO_LARGE, which is final too when the refused batch held that job alone (a
batch of several is tried again in smaller batches: `_failure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata

from triggerd.config import Settings
from triggerd.domain.backoff import Backoff
from triggerd.domain.errors import TriggerdError
from triggerd.domain.jobs import Headers, Job

log = logging.getLogger(__name__)

_TOPIC_EXISTS = 36
_PROBE_INTERVAL = 1.0
MAX_BATCH_BYTES = 256 * 1024  # ~500 jobs; a burst (a cron second) fills several

# One encoded job: (key, Job.encode(), Job.headers()).
Record = tuple[bytes, bytes, Headers | None]
# A record's size beyond its key and value (batch header, record framing, headers) is
# well below this: smaller records skip the exact size check.
_SIZE_SLACK = 4096
# The broker's answers that a request was too large: final for a batch of one job.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
MAX_REQUEST_SIZE_SETTING = "TRIGGERD_KAFKA_MAX_REQUEST_SIZE"


class BusUnavailable(TriggerdError):
    """Kafka is not reachable right now; try again later."""


class JobTooLarge(TriggerdError):
    """The job is larger than Kafka accepts: publishing it again cannot succeed.

    `size` is the record's size as the producer counts it (None when the broker refused
    it and the size is not known here); `limit` is TRIGGERD_KAFKA_MAX_REQUEST_SIZE."""

    def __init__(self, size: int | None, limit: int, *, by_broker: bool = False) -> None:
        self.size = size
        self.limit = limit
        self.by_broker = by_broker
        if by_broker:
            message = ("the Kafka broker refused the job as too large (MESSAGE_TOO_LARGE):"
                       " the broker's message.max.bytes is below it")  # fmt: skip
        else:
            message = (f"the job is {size} bytes, over the {limit} bytes sent to Kafka"
                       f" ({MAX_REQUEST_SIZE_SETTING})")  # fmt: skip
        super().__init__(message)

    @property
    def reason(self) -> str:
        """What the event's failure records."""
        return (f"not published to Kafka, never retried: {self}; raise"
                f" {MAX_REQUEST_SIZE_SETTING} and the broker's message.max.bytes, then"
                " replay the event")


def record_size(key: bytes | None, value: bytes, headers: Headers | None) -> int:
    """A record's size as aiokafka's producer measures it against max_request_size (an
    upper bound: the record alone in a batch)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or []))


def job_size(job: Job) -> int:
    return record_size(job.key, job.encode(), job.headers())


def too_large(size: int, limit: int) -> JobTooLarge | None:
    """JobTooLarge when a record of `size` bytes is over `limit`, else None."""
    return JobTooLarge(size, limit) if size > limit else None


class _RememberingPartitioner:
    """aiokafka's default partitioner, remembering its answers: it hashes the key with a
    pure-Python murmur2 (~15 µs a job, a third of a send), and a trigger's jobs always go
    to the same partition anyway. Same partitions as the default, so ordering per trigger
    holds across publishers."""

    def __init__(self, max_keys: int = 1 << 18) -> None:
        self._default = DefaultPartitioner()
        self._max_keys = max_keys
        self._memo: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        memo_key = (key, len(all_partitions))
        found = self._memo.get(memo_key)
        if found is None:
            if len(self._memo) >= self._max_keys:
                self._memo.clear()
            found = self._memo[memo_key] = int(self._default(key, all_partitions, available))
        return found


@dataclass(slots=True)
class _Staged:
    """A batch of jobs not yet handed to the producer, and its ack; or one job larger
    than a batch (`oversized`), which send() sizes a batch for."""

    builder: BatchBuilder
    acked: asyncio.Future[RecordMetadata]
    born: float  # loop time of its first job
    oversized: Record | None = None

    @property
    def jobs(self) -> int:
        """How many: a refusal as too large is final for a batch of one."""
        return 1 if self.oversized is not None else int(self.builder.record_count())

    @property
    def size(self) -> int:
        if self.oversized is not None:
            key, value, headers = self.oversized
            return record_size(key, value, headers)
        return int(self.builder.size())


class Bus:
    def __init__(self, settings: Settings, *, max_batch_bytes: int = MAX_BATCH_BYTES) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        # A partition hands the producer at most one batch per `linger`: jobs arriving
        # within it share a batch, and the first job after a quiet spell goes at once.
        # Fewer, larger batches matter to the embedded broker (tansu 0.6.0, memory
        # storage): it keeps each batch as an object for good and lists a partition's
        # objects on every fetch that finds new data, so its CPU grows with the batches
        # stored (README, "The embedded broker over time").
        self.linger = settings.kafka_linger
        # The largest job sent; a batch never exceeds it either, so a broker that takes
        # jobs of this size takes every batch.
        self.max_request_size = settings.kafka_max_request_size
        self.max_batch_bytes = min(max_batch_bytes, self.max_request_size)
        # Lowered when the broker refuses a batch of several jobs as too large (its limit
        # is below ours): smaller batches, down to one job each, whose refusal is final.
        self.batch_bytes = self.max_batch_bytes
        self._checked_below = self.max_request_size - _SIZE_SLACK
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = _RememberingPartitioner()
        # Per partition: batches staged by send_encoded, and the task handing them over.
        self._staged: dict[int, deque[_Staged]] = {}
        self._handing: dict[int, asyncio.Task[None]] = {}
        self._handed: dict[int, float] = {}  # loop time of each partition's last hand-over
        self._connected = asyncio.Event()
        self.healthy = False
        self.last_error: str | None = "not connected yet"

    # A plain wait with a deadline, for callers that poll the connection state.
    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        return self._connected.is_set()

    async def run(self) -> None:
        """Connect, create the topic, then probe until cancelled; reconnect on failure."""
        backoff = Backoff(base=0.2, cap=5.0)
        try:
            while True:
                try:
                    await self._start()
                    backoff.reset()
                    await self._probe_forever()
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._mark_down(exc)
                    await self._stop_producer()
                    await asyncio.sleep(backoff.next())
        finally:
            self._mark_down(None)
            if self._handing:  # let staged jobs reach the producer, which flushes them
                await asyncio.wait(set(self._handing.values()), timeout=2.0)
            await self._stop_producer()

    async def _start(self) -> None:
        await self._ensure_topic()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"triggerd-{self.settings.instance_id}",
            acks="all",
            enable_idempotence=self.settings.kafka_idempotent,
            linger_ms=0,  # the batches are built and lingered here (send_encoded)
            request_timeout_ms=5000,
            retry_backoff_ms=100,
            max_batch_size=self.max_batch_bytes,
            max_request_size=self.max_request_size,
            partitioner=self._partitioner,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer
        self.healthy = True
        self.last_error = None
        self._connected.set()
        log.info("kafka connected", extra={"bootstrap": self.settings.kafka_bootstrap})

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=5000
        )
        await admin.start()
        try:
            topic = NewTopic(self.topic, self.settings.kafka_partitions, 1)
            response = await admin.create_topics([topic])
            for _name, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise KafkaError(f"cannot create topic {self.topic}: error {code}")
        finally:
            await admin.close()

    async def _probe_forever(self) -> None:
        assert self._producer is not None
        failures = 0
        while True:
            await asyncio.sleep(_PROBE_INTERVAL)
            try:
                async with asyncio.timeout(3):
                    ok = await self._producer.client.fetch_all_metadata()
                    if ok and self.topic not in ok.topics():
                        # The broker came back without the topic (tansu's memory storage
                        # loses it on restart, then acks produce requests to it into the
                        # void): create it again before publishing resumes.
                        await self._ensure_topic()
                failures = 0 if ok else failures + 1
            except (KafkaError, OSError, TimeoutError):
                failures += 1
            # The producer reconnects by itself; health reports the outage meanwhile.
            self.healthy = failures == 0
            self.last_error = None if self.healthy else "broker unreachable"
            if failures:
                log.warning("kafka probe failed (%d in a row)", failures)

    def _mark_down(self, exc: BaseException | None) -> None:
        self._connected.clear()
        self.healthy = False
        if exc is not None:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("kafka unavailable: %s", self.last_error)

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await producer.stop()  # flushes what is buffered

    @property
    def size_check_from(self) -> int:
        """Jobs whose encoded payload is shorter than this fit in any case."""
        return self._checked_below

    def check_size(self, job: Job) -> JobTooLarge | None:
        """JobTooLarge when `job` is larger than the producer sends, else None. Encodes
        the job only when its payload comes near the limit."""
        if job.payload_json is not None and len(job.payload_json) < self._checked_below:
            return None
        return too_large(job_size(job), self.max_request_size)

    async def publish(self, job: Job) -> RecordMetadata:
        """Send one job and wait for the broker's ack."""
        producer = self._producer
        if producer is None or not self.healthy:
            # Fail fast while the probe says the broker is down, rather than have every
            # caller wait out the request timeout.
            raise BusUnavailable(self.last_error or "kafka not connected")
        key, value, headers = job.key, job.encode(), job.headers()
        if len(value) >= self._checked_below and (
                refused := too_large(record_size(key, value, headers), self.max_request_size)):
            raise refused
        try:
            return await producer.send_and_wait(self.topic, value, key=key, headers=headers)
        except KafkaError as exc:
            raise _bus_error(exc, self.max_request_size, alone=True) from exc

    async def publish_many(self, jobs: Sequence[Job]) -> list[RecordMetadata | BaseException]:
        """Send a batch; the result lines up with `jobs`: metadata, or the error for that job.

        All sends are queued before any is awaited, so the producer batches them.
        """
        return await self.publish_encoded([(job.key, job.encode(), job.headers()) for job in jobs])

    async def publish_encoded(
        self, records: Sequence[Record]
    ) -> list[RecordMetadata | BaseException]:
        """publish_many for jobs already encoded, as (key, value, headers): a caller
        that prepares its jobs before they are due spends only the sends at due time."""
        return await self.acked(await self.send_encoded(records))

    async def send_encoded(
        self, records: Sequence[Record]
    ) -> list[asyncio.Future[RecordMetadata] | BaseException]:
        """The first half of publish_encoded: queue the jobs on the producer (the record
        timestamps are taken now) and return at once; `acked()` waits for the broker.

        The jobs are appended to a batch per partition (partitioned as a send() of each
        would be), which a task per partition hands to the producer whole: aiokafka's
        send() costs ~20 µs a record in Python, an append to a batch a few. Handing a
        batch over waits while the producer still holds an unsent one for that partition
        (one request in flight per broker): the caller does not wait for that, and jobs
        queued meanwhile join the next batch. Awaiting it here held the scheduler's
        publishing for a produce round trip, a whole cron second's jobs ~50 ms late."""
        producer = self._producer
        if producer is None or not self.healthy:
            error = BusUnavailable(self.last_error or "kafka not connected")
            return [error for _ in records]
        cluster = producer.client.cluster
        partitions = cluster.partitions_for_topic(self.topic)
        available = cluster.available_partitions_for_topic(self.topic)
        if not partitions or not available:  # send() waits for the metadata, or fails
            return [self._refusal(record) or await self._send_one(producer, record)
                    for record in records]  # fmt: skip
        all_partitions, live = list(partitions), list(available)  # as aiokafka passes them
        results: list[asyncio.Future[RecordMetadata] | BaseException] = []
        loop = asyncio.get_running_loop()
        checked_below = self._checked_below
        shrunk = self.batch_bytes < self.max_batch_bytes  # after a broker's refusal
        for record in records:  # every append first: the timestamps
            key, value, headers = record
            if len(value) >= checked_below and (refused := self._refusal(record)):
                results.append(refused)  # never staged: it would fail its batch-mates
                continue
            partition = self._partitioner(key, all_partitions, live)
            staged = self._staged.get(partition)
            if staged is None:
                staged = self._staged[partition] = deque()
            last = staged[-1] if staged else None
            if last is None or last.oversized is not None or (
                    shrunk and not self._fits(last, record)) or last.builder.append(
                    key=key, value=value, timestamp=None, headers=headers) is None:  # fmt: skip
                last = _Staged(producer.create_batch(), loop.create_future(), loop.time())
                if last.builder.append(key=key, value=value, timestamp=None,
                                       headers=headers) is None:  # fmt: skip
                    last.oversized = record  # sent alone, in its turn
                staged.append(last)
                if partition not in self._handing:
                    self._handing[partition] = asyncio.create_task(
                        self._hand_over(producer, partition), name="kafka:hand-over")
            results.append(last.acked)
        return results

    def _fits(self, batch: _Staged, record: Record) -> bool:
        """Whether `record` joins `batch` within `batch_bytes` (only asked once a broker
        refused a batch: the builder's own capacity is the bound otherwise)."""
        key, value, _ = record
        return int(batch.builder.size()) + len(key) + len(value) <= self.batch_bytes

    def _refusal(self, record: Record) -> JobTooLarge | None:
        key, value, headers = record
        return too_large(record_size(key, value, headers), self.max_request_size)

    def _is_current(self, producer: AIOKafkaProducer) -> bool:
        """Whether `producer` is still the live one (not replaced by a reconnect)."""
        return self._producer is producer

    async def _hand_over(self, producer: AIOKafkaProducer, partition: int) -> None:
        """Give the partition's staged batches to the producer, oldest first, at most
        one per `linger`: a lone batch that is not full waits until `linger` after the
        partition's previous hand-over, so the jobs of that while share it (one produce
        batch, one object in the broker's log). After a quiet spell the first job goes
        at once."""
        staged = self._staged[partition]
        loop = asyncio.get_running_loop()
        try:
            while staged:
                first = staged[0]
                if len(staged) == 1 and first.oversized is None:
                    remaining = self._handed.get(partition, 0.0) + self.linger - loop.time()
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                batch = staged.popleft()
                self._handed[partition] = loop.time()
                try:
                    if not self._is_current(producer):
                        raise BusUnavailable(self.last_error or "kafka producer restarted")
                    if batch.oversized is not None:
                        key, value, headers = batch.oversized
                        sent = await producer.send(self.topic, value, key=key,
                                                   partition=partition,
                                                   headers=headers)  # fmt: skip
                    else:
                        sent = await producer.send_batch(batch.builder, self.topic,
                                                         partition=partition)  # fmt: skip
                except Exception as exc:  # these jobs are not on Kafka: say so
                    _settle(batch.acked, self._failure(exc, batch))
                    continue
                except BaseException as exc:
                    _settle(batch.acked, exc)
                    raise
                sent.add_done_callback(functools.partial(self._batch_done, batch=batch))
        finally:
            del self._handing[partition]
            for batch in staged:  # cancelled: the rest cannot be handed over either
                _settle(batch.acked, BusUnavailable("shutting down"))
            staged.clear()

    def _batch_done(self, sent: asyncio.Future[RecordMetadata], *, batch: _Staged) -> None:
        if batch.acked.done():
            return
        if sent.cancelled():
            _settle(batch.acked, BusUnavailable("send cancelled"))
        elif (exc := sent.exception()) is not None:
            _settle(batch.acked, self._failure(exc, batch))
        else:
            batch.acked.set_result(sent.result())

    def _failure(self, exc: BaseException, batch: _Staged) -> TriggerdError:
        """What a failed batch means to its jobs' publishers (_bus_error). The broker
        refusing a batch of several as too large: later batches are made at most half
        its size, so the jobs retried go in batches the broker takes, or alone, where
        a refusal is final; never round and round in the same batch."""
        if batch.jobs > 1 and isinstance(exc, _TOO_LARGE):
            self.batch_bytes = max(1, min(self.batch_bytes, batch.size // 2))
            log.error("the Kafka broker refused a batch of %d jobs (%d bytes) as too large:"
                      " its message.max.bytes is below %s (%d); batches are now at most %d"
                      " bytes and those jobs are tried again. Raise the broker's limit or"
                      " lower the setting", batch.jobs, batch.size, MAX_REQUEST_SIZE_SETTING,
                      self.max_request_size, self.batch_bytes)  # fmt: skip
        return _bus_error(exc, self.max_request_size, alone=batch.jobs == 1)

    async def _send_one(
        self, producer: AIOKafkaProducer, record: Record
    ) -> asyncio.Future[RecordMetadata] | BaseException:
        key, value, headers = record
        try:
            sent: asyncio.Future[RecordMetadata] = await producer.send(self.topic, value, key=key,
                                                                       headers=headers)  # fmt: skip
        except KafkaError as exc:
            return _bus_error(exc, self.max_request_size, alone=True)
        # Alone in a send of its own, but aiokafka may batch it with the next ones: the
        # broker's refusal of that batch says nothing final about this job.
        return _wrapped(sent, self.max_request_size)

    @staticmethod
    async def acked(
        futures: Sequence[asyncio.Future[RecordMetadata] | BaseException],
    ) -> list[RecordMetadata | BaseException]:
        """The broker's answer for each job queued by send_encoded, in order: its
        metadata, BusUnavailable (try again later) or JobTooLarge (never)."""
        results: list[RecordMetadata | BaseException] = []
        for fut in futures:
            if isinstance(fut, BaseException):
                results.append(fut)
                continue
            try:
                results.append(await fut)
            except KafkaError as exc:
                results.append(BusUnavailable(f"{type(exc).__name__}: {exc}"))
            except (BusUnavailable, JobTooLarge) as exc:
                results.append(exc)
        return results


def _bus_error(exc: BaseException, limit: int, *, alone: bool) -> TriggerdError:
    """What a failed send or produce means to the callers. A refusal as too large is
    final (JobTooLarge) only for a batch that held one job: a batch of several may be
    refused for their sum, each of which fits alone, so those are tried again."""
    if isinstance(exc, (BusUnavailable, JobTooLarge)):
        return exc
    if isinstance(exc, _TOO_LARGE) and alone:
        return JobTooLarge(None, limit, by_broker=True)
    return BusUnavailable(f"{type(exc).__name__}: {exc}")


def _wrapped(sent: asyncio.Future[RecordMetadata], limit: int) -> asyncio.Future[RecordMetadata]:
    """A future settled as `sent` is, with its error read by _bus_error (not alone)."""
    out: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
    sent.add_done_callback(functools.partial(_copy_outcome, to=out, limit=limit, alone=False))
    return out


def _settle(acked: asyncio.Future[RecordMetadata], exc: BaseException) -> None:
    """Fail a staged batch's ack with BusUnavailable or JobTooLarge (unless it was
    settled already)."""
    if not acked.done():
        error = exc if isinstance(exc, (BusUnavailable, JobTooLarge)) else BusUnavailable(
            f"{type(exc).__name__}: {exc}")  # fmt: skip
        acked.set_exception(error)


def _copy_outcome(sent: asyncio.Future[RecordMetadata], *, to: asyncio.Future[RecordMetadata],
                  limit: int, alone: bool) -> None:  # fmt: skip
    if to.done():
        return
    if sent.cancelled():
        _settle(to, BusUnavailable("send cancelled"))
    elif (exc := sent.exception()) is not None:
        _settle(to, _bus_error(exc, limit, alone=alone))
    else:
        to.set_result(sent.result())

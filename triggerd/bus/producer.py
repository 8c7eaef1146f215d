"""The Kafka producer, kept connected by its own task.

The broker may be down when the daemon starts or at any time later; `run()` keeps
(re)starting the producer with backoff and probes the cluster so `/health` can say
"kafka: down". Publishing while disconnected raises BusUnavailable at once, so callers
(the scheduler, the outbox relay) can back off instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from triggerd.backoff import Backoff
from triggerd.bus.jobs import Job
from triggerd.config import Settings
from triggerd.errors import TriggerdError

log = logging.getLogger(__name__)

_TOPIC_EXISTS = 36
_PROBE_INTERVAL = 1.0


class BusUnavailable(TriggerdError):
    """Kafka is not reachable right now; try again later."""


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


class Bus:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = _RememberingPartitioner()
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
            await self._stop_producer()

    async def _start(self) -> None:
        await self._ensure_topic()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"triggerd-{self.settings.instance_id}",
            acks="all",
            enable_idempotence=self.settings.kafka_idempotent,
            linger_ms=1,
            request_timeout_ms=5000,
            retry_backoff_ms=100,
            max_batch_size=256 * 1024,
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

    async def publish(self, job: Job) -> RecordMetadata:
        """Send one job and wait for the broker's ack."""
        producer = self._producer
        if producer is None or not self.healthy:
            # Fail fast while the probe says the broker is down, rather than have every
            # caller wait out the request timeout.
            raise BusUnavailable(self.last_error or "kafka not connected")
        try:
            return await producer.send_and_wait(self.topic, job.encode(), key=job.key)
        except KafkaError as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def publish_many(self, jobs: Sequence[Job]) -> list[RecordMetadata | BaseException]:
        """Send a batch; the result lines up with `jobs`: metadata, or the error for that job.

        All sends are queued before any is awaited, so the producer batches them.
        """
        return await self.publish_encoded([(job.key, job.encode()) for job in jobs])

    async def publish_encoded(
        self, records: Sequence[tuple[bytes, bytes]]
    ) -> list[RecordMetadata | BaseException]:
        """publish_many for jobs already encoded, as (key, Job.encode()) pairs: a caller
        that prepares its jobs before they are due spends only the sends at due time."""
        return await self.acked(await self.send_encoded(records))

    async def send_encoded(
        self, records: Sequence[tuple[bytes, bytes]]
    ) -> list[asyncio.Future[RecordMetadata] | BaseException]:
        """The first half of publish_encoded: queue the jobs on the producer (the record
        timestamps are taken now) and return at once; `acked()` waits for the broker.

        The jobs are appended to one batch per partition (partitioned as a send() of
        each would be), and the batches handed to the producer whole: aiokafka's
        send() costs ~20 µs a record in Python, an append to a batch a few; at a cron
        second where a thousand jobs fall due at once, that is the last job's delay."""
        producer = self._producer
        if producer is None or not self.healthy:
            error = BusUnavailable(self.last_error or "kafka not connected")
            return [error for _ in records]
        cluster = producer.client.cluster
        partitions = cluster.partitions_for_topic(self.topic)
        available = cluster.available_partitions_for_topic(self.topic)
        if not partitions or not available:  # send() waits for the metadata, or fails
            return [await self._send_one(producer, key, value) for key, value in records]
        all_partitions, live = list(partitions), list(available)  # as aiokafka passes them
        batches: list[tuple[int, BatchBuilder, list[int]]] = []  # partition, batch, jobs
        open_batch: dict[int, tuple[BatchBuilder, list[int]]] = {}
        oversized: list[int] = []
        for i, (key, value) in enumerate(records):  # every append first: the timestamps
            partition = self._partitioner(key, all_partitions, live)
            current = open_batch.get(partition)
            if current is None or current[0].append(key=key, value=value, timestamp=None) is None:
                current = (producer.create_batch(), [])
                if current[0].append(key=key, value=value, timestamp=None) is None:
                    oversized.append(i)  # larger than a batch: send() sizes one for it
                    continue
                open_batch[partition] = current
                batches.append((partition, *current))
            current[1].append(i)
        results: dict[int, asyncio.Future[RecordMetadata] | BaseException] = {}
        for partition, builder, members in batches:
            sent: asyncio.Future[RecordMetadata] | BaseException
            try:
                sent = await producer.send_batch(builder, self.topic, partition=partition)
            except KafkaError as exc:
                sent = BusUnavailable(str(exc))
            results.update(dict.fromkeys(members, sent))
        for i in oversized:
            results[i] = await self._send_one(producer, *records[i])
        return [results[i] for i in range(len(records))]

    async def _send_one(
        self, producer: AIOKafkaProducer, key: bytes, value: bytes
    ) -> asyncio.Future[RecordMetadata] | BaseException:
        try:
            sent: asyncio.Future[RecordMetadata] = await producer.send(self.topic, value, key=key)
            return sent
        except KafkaError as exc:
            return BusUnavailable(str(exc))

    @staticmethod
    async def acked(
        futures: Sequence[asyncio.Future[RecordMetadata] | BaseException],
    ) -> list[RecordMetadata | BaseException]:
        """The broker's answer for each job queued by send_encoded, in order."""
        results: list[RecordMetadata | BaseException] = []
        for fut in futures:
            if isinstance(fut, BaseException):
                results.append(fut)
                continue
            try:
                results.append(await fut)
            except KafkaError as exc:
                results.append(BusUnavailable(f"{type(exc).__name__}: {exc}"))
        return results

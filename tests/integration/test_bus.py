"""The producer side of the bus on the real broker: jobs sent in batches land on the
partition a send() of each would pick (the default partitioner's), in order within a
partition, each with its own answer and its headers (the traceparent), and a job larger
than a batch still goes."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata

from triggerd.bus.producer import Bus
from triggerd.config import load_settings
from triggerd.domain.jobs import Job, trace_headers
from triggerd.domain.models import new_id
from triggerd.domain.timeutil import utcnow
from triggerd.domain.tracecontext import new_traceparent


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[Bus]:
    settings = load_settings({
        "TRIGGERD_DATABASE_URL": "mysql://root@127.0.0.1:3306/unused",
        "TRIGGERD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRIGGERD_KAFKA_TOPIC": f"bus-{new_id()[-12:]}", "TRIGGERD_KAFKA_PARTITIONS": "3",
    })  # fmt: skip
    bus = Bus(settings)
    running = asyncio.create_task(bus.run())
    try:
        assert await bus.wait_connected(timeout=30)
        yield bus
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


Found = tuple[int, bytes, bytes, int, tuple[tuple[str, bytes], ...]]


async def _read(bootstrap: str, topic: str, count: int) -> list[Found]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    found: list[Found] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += [(r.partition, r.key, r.value, r.timestamp, tuple(r.headers))
                          for r in records]  # fmt: skip
    finally:
        await consumer.stop()
    return found


async def test_batched_sends_keep_partitions_order_and_answers(
    bus: Bus, kafka_bootstrap: str
) -> None:
    keys = [new_id().encode() for _ in range(40)]
    records = [(keys[i % len(keys)], b'{"n":%d}' % i,
                trace_headers(new_traceparent()) if i % 2 else None) for i in range(1500)]
    records.append((keys[0], b'{"big":"' + b"x" * (300 * 1024) + b'"}',  # > one batch
                    trace_headers(new_traceparent())))  # fmt: skip
    before = time.time() * 1000
    sent = await bus.send_encoded(records)
    after = time.time() * 1000
    results = await bus.acked(sent)
    assert all(isinstance(r, RecordMetadata) for r in results), results[:3]

    found = await _read(kafka_bootstrap, bus.topic, len(records))
    assert sorted((k, v, h) for _p, k, v, _t, h in found) == sorted(
        (k, v, tuple(h or ())) for k, v, h in records)
    partitioner = DefaultPartitioner()
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for partition, key, value, timestamp, _headers in found:
        assert partition == partitioner(key, [0, 1, 2], [0, 1, 2])  # as send() would
        assert before - 1 <= timestamp <= after + 1  # taken when queued
        by_partition[partition].append(value)
    for values in by_partition.values():  # each partition in the order sent
        mine = set(values)
        assert values == [v for _k, v, _h in records if v in mine]


async def test_a_bus_that_is_down_answers_each_job(bus: Bus) -> None:
    bus.healthy = False
    sent = await bus.send_encoded([(b"k", b"{}", None), (b"k2", b"{}", None)])
    assert len(sent) == 2 and all(isinstance(s, Exception) for s in sent)


async def test_queuing_never_waits_for_the_broker_and_keeps_the_order(
    bus: Bus, kafka_bootstrap: str
) -> None:
    """The scheduler queues each due moment's jobs as it comes; while the producer still
    holds an unsent batch for a partition (one request in flight per broker), the next
    jobs must be queued at once, not wait for a produce round trip, and arrive in order."""
    key = new_id().encode()
    other_ran = False

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    sent = []
    for n in range(300):  # one job per call, as occurrences falling due a ms apart are
        task = asyncio.ensure_future(other())
        sent += await bus.send_encoded([(key, b'{"n":%d}' % n, None)])
        assert not other_ran, f"send_encoded waited (call {n})"
        task.cancel()
    results = await bus.acked(sent)
    assert all(isinstance(r, RecordMetadata) for r in results), results[:3]
    found = await _read(kafka_bootstrap, bus.topic, 300)
    assert [v for _p, _k, v, _t, _h in found] == [b'{"n":%d}' % n for n in range(300)]


async def test_a_published_job_carries_its_traceparent_header(
    bus: Bus, kafka_bootstrap: str
) -> None:
    traceparent = new_traceparent()
    job = Job(new_id(), new_id(), "webhook", "webhook", False, {"a": 1}, None, utcnow(),
              traceparent=traceparent)  # fmt: skip
    [result] = await bus.publish_many([job])
    assert isinstance(result, RecordMetadata), result
    [(_p, _k, value, _t, headers)] = await _read(kafka_bootstrap, bus.topic, 1)
    assert headers == (("traceparent", traceparent.encode()),)  # as the consumer reads them
    assert Job.decode(value, headers) == job

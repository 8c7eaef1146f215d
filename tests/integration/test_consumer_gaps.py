"""The worker's consumer does not commit past records a fetch skipped.

Several producers writing one partition of the embedded broker at once make its fetches
skip whole batches now and then (tansu 0.6.0 numbers a batch before it stores it, and a
fetch in between returns the next stored batch); the records are in the log all along.
The consumer reads the partition again from the hole, so every job is handled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.worker_harness import connected_bus, job_for
from tests.support import wait_until
from triggerd.domain.jobs import Job
from triggerd.metrics import Metrics
from triggerd.services import Services
from triggerd.store.db import Database
from triggerd.worker.consumer import JobConsumer

PRODUCERS = 4
SECONDS = 6.0


async def test_every_job_is_handled_when_concurrent_producers_race_a_live_fetch(
    settings_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggerd.worker.consumer")
    settings = settings_for(kafka_partitions=1, worker_concurrency=500)
    seen: set[str] = set()

    async def handle(job: Job) -> None:
        seen.add(job.event_id)

    async with connected_bus(settings) as bus:  # creates the topic
        services = Services(settings=settings, db=Database(settings.database), bus=bus,
                            metrics=Metrics())  # fmt: skip
        consumer = JobConsumer(services, handle)
        consuming = asyncio.create_task(consumer.run())
        producers = [AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
                     for _ in range(PRODUCERS)]  # fmt: skip
        try:
            await wait_until(lambda: _assigned(consumer), timeout=30, what="partition assigned")
            for producer in producers:
                await producer.start()
            sent: list[str] = []

            async def produce(producer: AIOKafkaProducer) -> None:
                end = time.monotonic() + SECONDS
                while time.monotonic() < end:
                    for _ in range(5):
                        job = job_for(None)
                        sent.append(job.event_id)
                        await producer.send(settings.kafka_topic, job.encode(), partition=0)
                    await asyncio.sleep(0.002)
                await producer.flush()

            await asyncio.gather(*(produce(p) for p in producers))

            async def all_handled() -> bool:
                return seen >= set(sent)

            await wait_until(all_handled, timeout=30,
                             what=f"all {len(sent)} jobs handled")  # fmt: skip
        finally:
            for producer in producers:
                with contextlib.suppress(Exception):
                    await producer.stop()
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
    holes = [r.getMessage() for r in caplog.records if "reading them again" in r.getMessage()]
    print(f"{len(sent)} jobs, holes read again: {len(holes)}")
    assert not any("never came back" in r.getMessage() for r in caplog.records)


async def _assigned(consumer: JobConsumer) -> bool:
    return bool(consumer.assignment)

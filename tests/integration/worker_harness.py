"""Helpers of the worker tests: triggers and event rows written straight to the tables
(the API and ingestion are other people's code), and the worker role run in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from tests.support import ALLOW_LOOPBACK, wait_until
from triggerd.bus.producer import Bus
from triggerd.config import Settings, load_settings
from triggerd.domain.jobs import Job
from triggerd.domain.models import new_id
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.metrics import Metrics
from triggerd.relay import OutboxRelay
from triggerd.services import Services
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, delivery_snapshot, insert_events
from triggerd.store.triggers import endpoint_hash
from triggerd.worker.role import WorkerRole

FAST_RETRY = {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 0.2}


@contextlib.asynccontextmanager
async def worker_settings(db_server: Any, kafka_bootstrap: str, **overrides: Any
                          ) -> AsyncIterator[Settings]:  # fmt: skip
    """Settings on a fresh migrated database and topic, for a worker shared by the tests
    of a module (joining a consumer group costs seconds on the test broker)."""
    url = await db_server.create_migrated()
    topic = f"jobs-{new_id()[-12:]}"
    env = {
        "TRIGGERD_DATABASE_URL": url, "TRIGGERD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRIGGERD_KAFKA_TOPIC": topic, "TRIGGERD_KAFKA_GROUP": f"g-{topic}",
        "TRIGGERD_KAFKA_PARTITIONS": "3", "TRIGGERD_KAFKA_SESSION_TIMEOUT": "6s",
        "TRIGGERD_KAFKA_HEARTBEAT_INTERVAL": "1s", "TRIGGERD_SHUTDOWN_TIMEOUT": "5s",
        "TRIGGERD_DELIVERY_ALLOW_NETWORKS": ALLOW_LOOPBACK,
    }  # fmt: skip
    try:
        yield load_settings(env, overrides=overrides)
    finally:
        db_server.drop(url)


async def insert_trigger(db: Database, config: dict[str, Any], *, type: str = "webhook",
                         name: str = "worker-test") -> str:  # fmt: skip
    trigger_id = new_id()
    now = to_db(utcnow())
    await db.execute(
        "INSERT INTO triggers (id, name, type, status, config, endpoint_hash, version,"
        " created_at, updated_at) VALUES (%(id)s, %(name)s, %(type)s, 'active', %(config)s,"
        " %(key)s, 1, %(now)s, %(now)s)",
        {"id": trigger_id, "name": name, "type": type, "config": orjson.dumps(config).decode(),
         "key": endpoint_hash(config), "now": now},
    )  # fmt: skip
    return trigger_id


def job_for(trigger_id: str | None, *, payload: Any = None, event_id: str | None = None,
            type: str = "webhook", attempt: int = 1, source: str = "webhook") -> Job:  # fmt: skip
    return Job(
        event_id=event_id or new_id(),
        trigger_id=trigger_id,
        type=type,
        source=source,
        is_test_run=False,
        payload={"n": 1} if payload is None else payload,
        scheduled_for=None,
        fired_at=utcnow(),
        attempt=attempt,
    )


async def insert_event(db: Database, job: Job, config: dict[str, Any], *,
                       publish_at: datetime | None = None) -> None:  # fmt: skip
    """The event row of `job`, as a publisher writes it (owed to Kafka from `publish_at`,
    or already published when that is None)."""
    await insert_events_of(db, [job], config, publish_at=publish_at)


async def insert_events_of(db: Database, jobs: list[Job], config: dict[str, Any], *,
                           publish_at: datetime | None = None) -> None:  # fmt: skip
    """insert_event for many jobs, in one statement."""
    records = [EventRecord(
        id=job.event_id, trigger_id=job.trigger_id, trigger_name="worker-test",
        trigger_type=job.type, source=job.source, is_test_run=job.is_test_run,
        payload=job.payload, delivery=delivery_snapshot(config), fired_at=job.fired_at,
        scheduled_for=job.scheduled_for, publish_at=publish_at,
        published_at=None if publish_at else utcnow(),
    ) for job in jobs]  # fmt: skip
    async with db.transaction() as cur:
        await insert_events(cur, records)


async def find_event(db: Database, event_id: str) -> dict[str, Any] | None:
    return await db.fetchone("SELECT * FROM event_logs WHERE id = %(id)s", {"id": event_id})


async def event_row(db: Database, event_id: str) -> dict[str, Any]:
    row = await find_event(db, event_id)
    assert row is not None, f"no event {event_id}"
    return row


async def wait_status(db: Database, event_id: str, *statuses: str,
                      timeout: float = 20.0) -> dict[str, Any]:  # fmt: skip
    async def probe() -> dict[str, Any] | None:
        row = await find_event(db, event_id)
        return row if row and row["execution_status"] in statuses else None

    found = await wait_until(probe, timeout=timeout, what=f"event {event_id} {statuses}")
    assert found is not None
    return found


async def attempts_of(db: Database, event_id: str) -> list[dict[str, Any]]:
    return await db.fetchall(
        "SELECT * FROM delivery_attempts WHERE event_id = %(id)s ORDER BY attempt",
        {"id": event_id},
    )


@dataclass
class RunningWorker:
    services: Services
    role: WorkerRole

    @property
    def bus(self) -> Bus:
        return self.services.bus

    @property
    def processed(self) -> int:
        return self.role.consumer.processed if self.role.consumer else 0

    async def publish(self, *jobs: Job) -> None:
        for job in jobs:
            await self.bus.publish(job)


async def processed_at_least(worker: RunningWorker, count: int) -> bool:
    """A wait_until probe: the worker has finished `count` jobs (duplicates included)."""
    return worker.processed >= count


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, *, wait_assigned: bool = True
                         ) -> AsyncIterator[RunningWorker]:  # fmt: skip
    """WorkerRole and the outbox relay it works with (as the daemon runs them), with its
    own pool and producer, in this event loop."""
    db = Database(settings.database, pool_size=5)
    await db.connect()
    services = Services(settings=settings, db=db, bus=Bus(settings), metrics=Metrics())
    relay = OutboxRelay(services)
    role = WorkerRole(services, relay)
    ready = asyncio.Event()
    bus_task = asyncio.create_task(services.bus.run(), name="test:bus")
    relay_task = asyncio.create_task(relay.run(), name="test:relay")
    role_task = asyncio.create_task(role.run(ready.set), name="test:worker")
    try:
        await asyncio.wait_for(ready.wait(), 10)
        if wait_assigned:
            await wait_until(_assigned(role), timeout=30, what="partitions assigned")
        yield RunningWorker(services, role)
    finally:
        role_task.cancel()
        await asyncio.wait({role_task})
        relay_task.cancel()
        await asyncio.wait({relay_task})
        bus_task.cancel()
        await asyncio.wait({bus_task})
        await db.close()
        if role_task.done() and not role_task.cancelled() and role_task.exception():
            raise AssertionError("worker role failed") from role_task.exception()


def _assigned(role: WorkerRole) -> Any:
    async def probe() -> bool:
        return role.consumer is not None and bool(role.consumer.assignment)

    return probe


@contextlib.asynccontextmanager
async def connected_bus(settings: Settings) -> AsyncIterator[Bus]:
    """A producer of our own, for publishing jobs to a daemon under test."""
    bus = Bus(settings)
    task = asyncio.create_task(bus.run(), name="test:bus")
    try:
        assert await bus.wait_connected(20), "kafka did not connect"
        yield bus
    finally:
        task.cancel()
        await asyncio.wait({task})

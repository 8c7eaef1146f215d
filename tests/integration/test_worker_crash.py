"""Crashes between delivery and commit: a redelivered job creates
no second event and no second attempt record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.worker_harness import (
    attempts_of,
    connected_bus,
    event_row,
    insert_event,
    insert_trigger,
    job_for,
    processed_at_least,
    running_worker,
    wait_status,
)
from tests.sink import Reply, Sink
from tests.support import wait_until
from triggerd.store.db import Database
from triggerd.worker.consumer import JobConsumer


async def count_events(db: Database, trigger_id: str) -> int:
    row = await db.fetchone(
        "SELECT COUNT(*) AS n FROM event_logs WHERE trigger_id = %(t)s", {"t": trigger_id}
    )
    assert row is not None
    return int(row["n"])


async def test_outcome_stored_but_offset_not_committed(
    settings_for: Any, db: Database, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker stops after storing the outcome and before committing the offset; the
    next worker gets the job again and does nothing with it."""
    # A short session: the broker keeps the stopped first member until it expires.
    settings = settings_for(kafka_session_timeout="3s", kafka_heartbeat_interval="1s")
    config = {"endpoint": sink.url("/committed-late")}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)

    async def no_commit(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(JobConsumer, "_commit", no_commit)
    async with running_worker(settings) as first:
        await first.publish(job)
        await wait_status(db, job.event_id, "success")
    monkeypatch.undo()

    async with running_worker(settings) as second:
        await wait_until(lambda: processed_at_least(second, 1), what="the job redelivered")
    assert len(sink.requests("/committed-late")) == 1
    assert len(await attempts_of(db, job.event_id)) == 1
    assert await count_events(db, trigger_id) == 1


@pytest.mark.e2e
async def test_worker_killed_mid_delivery(start_daemon: Any, settings_for: Any, db: Database,
                                          sink: Sink) -> None:  # fmt: skip
    """kill -9 while the target holds the response: after a restart the job is delivered
    again (same Idempotency-Key) and completes the same attempt row."""
    gate = asyncio.Event()
    sink.program("/crash", Reply(200, gate=gate), 200)
    config = {"endpoint": sink.url("/crash"), "timeout_seconds": 2}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)

    env = {"TRIGGERD_KAFKA_SESSION_TIMEOUT": "3s"}  # the dead member expires sooner
    daemon = start_daemon(roles="worker", env=env)
    await daemon.wait_healthy()
    async with connected_bus(settings_for()) as bus:
        await bus.publish(job)
    await sink.wait_for(1, "/crash", timeout=30)
    daemon.kill()
    gate.set()
    [attempt] = await attempts_of(db, job.event_id)
    assert attempt["finished_at"] is None  # it died mid-delivery

    start_daemon(roles="worker", env=env)
    row = await wait_status(db, job.event_id, "success", timeout=60)
    assert row["attempts"] == 1
    [attempt] = await attempts_of(db, job.event_id)
    assert attempt["finished_at"] is not None and attempt["response_status"] == 200
    hits = sink.requests("/crash")
    assert len(hits) == 2
    assert {h.headers["Idempotency-Key"] for h in hits} == {job.event_id}
    assert await count_events(db, trigger_id) == 1


async def test_shutdown_finishes_in_flight_deliveries(settings_for: Any, db: Database,
                                                      sink: Sink) -> None:  # fmt: skip
    gate = sink.hold("/draining")
    config = {"endpoint": sink.url("/draining")}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    async with running_worker(settings_for(shutdown_timeout="5s")) as worker:
        await worker.publish(job)
        await sink.wait_for(1, "/draining")
        asyncio.get_running_loop().call_later(0.5, gate.set)
    # Leaving the block cancelled the role: it let the delivery finish and recorded it.
    row = await event_row(db, job.event_id)
    assert row["execution_status"] == "success"
    [attempt] = await attempts_of(db, job.event_id)
    assert attempt["finished_at"] is not None


"""The fast path's outbox clear (ingest/pipeline.py: OutboxClearer) comes CLEAR_DELAY
after the publish, so it meets rows that moved on meanwhile: it must record when each
job went out, never clear a debt it did not pay, and leave a row the worker has settled
as the worker wrote it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from tests.integration.worker_harness import event_row, insert_event, insert_trigger, job_for
from tests.support import wait_until
from triggerd.domain.audit import SYSTEM_ORIGIN
from triggerd.domain.jobs import Job
from triggerd.domain.timeutil import from_db, to_db, utcnow
from triggerd.ingest.pipeline import OutboxClearer
from triggerd.store import deliveries, events
from triggerd.store.db import Database

T1 = datetime(2026, 11, 23, 4, 0, 0, 125000, tzinfo=UTC)
T2 = T1 + timedelta(milliseconds=40)


@asynccontextmanager
async def running_clearer(db: Database, delay: float = 0.05) -> AsyncIterator[OutboxClearer]:
    clearer = OutboxClearer(db, delay=delay, window=0.05)
    task = asyncio.create_task(clearer.run())
    try:
        yield clearer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def owed_job(db: Database, trigger_id: str) -> Job:
    job = job_for(trigger_id)
    await insert_event(db, job, {}, publish_at=utcnow() + timedelta(seconds=5))
    return job


async def published_at(db: Database, event_id: str) -> datetime | None:
    return from_db((await event_row(db, event_id))["published_at"])


async def test_each_job_gets_the_time_it_went_out_and_newer_debts_stay(db: Database) -> None:
    trigger_id = await insert_trigger(db, {})
    owed, finished, retrying, relayed, later = [await owed_job(db, trigger_id) for _ in range(5)]
    # The worker delivered one before the clear came; it schedules a retry for another.
    await db.execute("UPDATE event_logs SET publish_at = NULL, execution_status = 'success'"
                     " WHERE id = %s", (finished.event_id,))  # fmt: skip
    retry_at = T1 + timedelta(hours=1)
    await db.execute("UPDATE event_logs SET publish_at = %s, publish_attempt = 2,"
                     " execution_status = 'retrying' WHERE id = %s",
                     (to_db(retry_at), retrying.event_id))  # fmt: skip
    # The relay got to one first (the clear was late): its time stands.
    relayed_at = T1 - timedelta(seconds=1)
    await db.execute("UPDATE event_logs SET publish_at = NULL, published_at = %s WHERE id = %s",
                     (to_db(relayed_at), relayed.event_id))  # fmt: skip

    async with running_clearer(db) as clearer:
        clearer.offer([owed, finished, retrying, relayed], T1)
        clearer.offer([later], T2)  # another publish batch, in the same window

        async def cleared() -> bool:
            return await published_at(db, later.event_id) is not None

        await wait_until(cleared, timeout=10, what="the clear")

    row = await event_row(db, owed.event_id)
    assert row["publish_at"] is None and from_db(row["published_at"]) == T1
    row = await event_row(db, finished.event_id)
    assert row["publish_at"] is None and from_db(row["published_at"]) == T1
    assert row["execution_status"] == "success"
    assert await published_at(db, later.event_id) == T2
    row = await event_row(db, retrying.event_id)  # attempt 2 is owed: not this clear's
    assert row["published_at"] is None and row["publish_attempt"] == 2
    assert from_db(row["publish_at"]) == retry_at
    assert await published_at(db, relayed.event_id) == relayed_at


async def test_a_late_clear_leaves_a_replay_owed(db: Database) -> None:
    """An event without an endpoint ends `published` with 0 attempts; its replay must owe
    a higher attempt than the job a late clear still names."""
    trigger_id = await insert_trigger(db, {})
    job = await owed_job(db, trigger_id)
    await db.execute("UPDATE event_logs SET publish_at = NULL, execution_status = 'published'"
                     " WHERE id = %s", (job.event_id,))  # fmt: skip
    replay = await events.start_replay(db, job.event_id, utcnow() + timedelta(seconds=5),
                                       origin=SYSTEM_ORIGIN, now=utcnow())
    assert replay.outcome == "started" and replay.attempt == 2

    async with running_clearer(db) as clearer:
        clearer.offer([job], T1)  # the first publish's clear, arriving only now
        marker = await owed_job(db, trigger_id)
        clearer.offer([marker], T1)

        async def cleared() -> bool:
            return await published_at(db, marker.event_id) is not None

        await wait_until(cleared, timeout=10, what="the clear")

    row = await event_row(db, job.event_id)
    assert row["publish_attempt"] == 2 and row["publish_at"] is not None
    assert row["published_at"] is None and row["execution_status"] == "pending"


async def test_a_clear_waits_its_delay_then_clears(db: Database) -> None:
    trigger_id = await insert_trigger(db, {})
    job = await owed_job(db, trigger_id)
    async with running_clearer(db, delay=0.5) as clearer:
        offered = time.monotonic()
        clearer.offer([job], T1)
        assert (await event_row(db, job.event_id))["publish_at"] is not None

        async def cleared() -> bool:
            return await published_at(db, job.event_id) is not None

        await wait_until(cleared, timeout=10, interval=0.01, what="the clear")
        assert time.monotonic() - offered >= 0.5
    assert (await event_row(db, job.event_id))["publish_at"] is None


async def test_a_delivery_recorded_first_keeps_its_row_as_the_worker_wrote_it(
    db: Database,
) -> None:
    """The worker's outcome clears the debt and records when the job reached Kafka (the
    record's timestamp); the clear that comes after changes nothing."""
    trigger_id = await insert_trigger(db, {})
    job = await owed_job(db, trigger_id)
    assert await deliveries.AttemptClaims(db).claim(job.event_id, 1)
    reached_kafka = T1 - timedelta(milliseconds=7)
    done = deliveries.Outcome(event_id=job.event_id, attempt=1, status="success",
                              finished_at=utcnow(), response_status=200, latency_ms=3,
                              error=None, published_at=reached_kafka)  # fmt: skip
    assert await deliveries.record_outcome(db, done)
    settled = await event_row(db, job.event_id)
    assert settled["publish_at"] is None and settled["execution_status"] == "success"
    assert from_db(settled["published_at"]) == reached_kafka

    async with running_clearer(db) as clearer:
        clearer.offer([job], T1)
        marker = await owed_job(db, trigger_id)
        clearer.offer([marker], T1)

        async def cleared() -> bool:
            return await published_at(db, marker.event_id) is not None

        await wait_until(cleared, timeout=10, what="the clear")
    assert await event_row(db, job.event_id) == settled


async def test_an_event_without_endpoint_records_when_its_job_went_out(db: Database) -> None:
    trigger_id = await insert_trigger(db, {})
    job = await owed_job(db, trigger_id)
    before = utcnow()
    assert await deliveries.mark_published(db, job.event_id, 1)
    row = await event_row(db, job.event_id)
    assert row["execution_status"] == "published" and row["publish_at"] is None
    assert before - timedelta(seconds=1) <= from_db(row["published_at"]) <= utcnow()


async def test_shutdown_clears_what_it_holds_at_once(db: Database) -> None:
    trigger_id = await insert_trigger(db, {})
    jobs = [await owed_job(db, trigger_id) for _ in range(3)]
    clearer = OutboxClearer(db, delay=3600, max_batch=2)
    task = asyncio.create_task(clearer.run())
    clearer.offer(jobs[:2], T1)
    clearer.offer(jobs[2:], T2)
    await asyncio.sleep(0)  # the task waits for the first to come due
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [await published_at(db, job.event_id) for job in jobs] == [T1, T1, T2]
    clearer.offer(jobs, T2)  # closed: nothing more is taken
    assert clearer._count == 0

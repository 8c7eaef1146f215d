"""The delivery backstop (worker/backstop.py): a job the broker or the consumer lost is
published again once TRIGGERD_REDELIVER_AFTER has passed and delivered exactly once;
work that is merely slow is never re-owed; the query is served by its index."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.worker_harness import (
    RunningWorker,
    attempts_of,
    connected_bus,
    event_row,
    insert_event,
    insert_trigger,
    job_for,
    running_worker,
    wait_status,
    worker_settings,
)
from tests.sink import Reply, Sink
from triggerd.config import Settings
from triggerd.devstack import KafkaBroker
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.store import outbox
from triggerd.store.db import Database

DELAY = 1.5  # TRIGGERD_REDELIVER_AFTER in these tests, seconds


def reowed(worker: RunningWorker) -> float:
    value = worker.services.metrics.registry.get_sample_value("triggerd_jobs_reowed_total")
    return value or 0.0


async def commit_past(settings: Settings, tp: TopicPartition, offset: int) -> None:
    """Move the worker group's committed offset of `tp` to `offset`, as a consumer that
    skipped everything before it would have left it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.kafka_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def test_a_job_the_consumer_skipped_is_delivered_once_after_the_delay(
    db_server: Any, kafka_bootstrap: str, sink: Sink
) -> None:
    async with worker_settings(db_server, kafka_bootstrap, redeliver_after=DELAY) as settings:
        db = Database(settings.database, pool_size=2)
        await db.connect()
        try:
            config = {"endpoint": sink.url("/skipped")}
            trigger_id = await insert_trigger(db, config)
            job = job_for(trigger_id)
            await insert_event(db, job, config)  # published: nothing owed to Kafka
            async with connected_bus(settings) as bus:
                meta = await bus.publish(job)
            # While no worker runs, the group's offset moves past the job.
            await commit_past(settings, TopicPartition(settings.kafka_topic, meta.partition),
                              meta.offset + 1)  # fmt: skip
            async with running_worker(settings) as worker:
                await sink.wait_for(1, "/skipped", timeout=30)
                await wait_status(db, job.event_id, "success")
                # Once more if the worker was still joining its group (seconds on the
                # test broker) when the delay first ran out; the copies are absorbed.
                times = reowed(worker)
                assert times >= 1
                # Delivered: later passes find nothing to owe again.
                await asyncio.sleep(3 * DELAY)
                assert reowed(worker) == times
                # A firing is counted when it first goes out, not again when re-sent.
                fires = worker.services.metrics.registry.get_sample_value(
                    "triggerd_fires_total", {"type": "webhook", "source": "webhook"})
                assert not fires
            assert len(sink.requests("/skipped")) == 1
            assert len(await attempts_of(db, job.event_id)) == 1
            row = await event_row(db, job.event_id)
            assert row["publish_at"] is None and row["attempts"] == 1
        finally:
            await db.close()


async def test_slow_work_is_never_reowed(db_server: Any, kafka_bootstrap: str,
                                         sink: Sink) -> None:  # fmt: skip
    async with worker_settings(db_server, kafka_bootstrap, redeliver_after=DELAY) as settings:
        db = Database(settings.database, pool_size=2)
        await db.connect()
        try:
            # A delivery that takes longer than the delay (well within its timeout) ...
            sink.program("/slow", Reply(200, delay=3 * DELAY))
            slow_config = {"endpoint": sink.url("/slow"), "timeout_seconds": 10}
            slow = job_for(await insert_trigger(db, slow_config))
            # ... and a retry owed for later, whose attempt 1 went out long ago.
            later_config = {"endpoint": sink.url("/later")}
            later = job_for(await insert_trigger(db, later_config))
            await insert_event(db, later, later_config)
            due = utcnow() + timedelta(seconds=3 * DELAY)
            await db.execute(
                "UPDATE event_logs SET execution_status = 'retrying', attempts = 1,"
                " publish_attempt = 2, publish_at = %(due)s, published_at = %(long_ago)s"
                " WHERE id = %(id)s",
                {"id": later.event_id, "due": to_db(due),
                 "long_ago": to_db(utcnow() - timedelta(hours=1))},
            )  # fmt: skip
            async with running_worker(settings) as worker:
                await asyncio.sleep(DELAY)  # the backstop's start-up wait is over
                await insert_event(db, slow, slow_config)  # published now:
                await worker.publish(slow)
                await wait_status(db, slow.event_id, "success", timeout=30)
                await wait_status(db, later.event_id, "success", timeout=30)
                assert reowed(worker) == 0
            assert len(sink.requests("/slow")) == 1
            assert len(sink.requests("/later")) == 1
            assert [a["attempt"] for a in await attempts_of(db, later.event_id)] == [2]
        finally:
            await db.close()


async def test_a_broker_restart_that_loses_published_jobs_loses_no_delivery(
    db_server: Any, sink: Sink
) -> None:
    broker = KafkaBroker()
    await asyncio.to_thread(broker.start)
    try:
        async with worker_settings(db_server, broker.bootstrap,
                                   redeliver_after=DELAY) as settings:  # fmt: skip
            db = Database(settings.database, pool_size=2)
            await db.connect()
            try:
                config = {"endpoint": sink.url("/lost")}
                trigger_id = await insert_trigger(db, config)
                jobs = [job_for(trigger_id, payload={"i": i}) for i in range(20)]
                for job in jobs:
                    await insert_event(db, job, config)
                async with connected_bus(settings) as bus:
                    results = await bus.publish_many(jobs)
                    assert not any(isinstance(r, BaseException) for r in results)
                # The broker restarts and comes back without its log (memory storage).
                await asyncio.to_thread(broker.stop)
                await asyncio.to_thread(broker.start)
                async with running_worker(settings) as worker:
                    for job in jobs:
                        await wait_status(db, job.event_id, "success", timeout=30)
                    assert reowed(worker) >= len(jobs)
                hits = sink.requests("/lost")
                assert sorted(h.json()["i"] for h in hits) == list(range(len(jobs)))
                for job in jobs:
                    assert len(await attempts_of(db, job.event_id)) == 1
            finally:
                await db.close()
    finally:
        await asyncio.to_thread(broker.close)


async def test_the_stalled_query_is_served_by_its_index(db: Database) -> None:
    trigger_id = await insert_trigger(db, {})
    for _ in range(200):  # published and delivered, as almost every row is
        job = job_for(trigger_id)
        await insert_event(db, job, {})
    await db.execute("UPDATE event_logs SET execution_status = 'success'")
    for _ in range(5):  # still waiting
        await insert_event(db, job_for(trigger_id), {})
    await db.execute("ANALYZE TABLE event_logs")
    now = utcnow()
    plan = await db.fetchall("EXPLAIN " + outbox._STALLED, {
        "cutoff": to_db(now), "abandoned": to_db(now), "limit": 500})  # fmt: skip
    event_step = next(step for step in plan if step["table"] == "e")
    assert event_step["key"] == "ix_events_owed", plan
    assert event_step["type"] in ("range", "ref", "ref_or_null"), plan
    attempt_step = next(step for step in plan if step["table"] == "a")
    assert attempt_step["key"] == "PRIMARY", plan
    stalled = await outbox.stalled_deliveries(db, cutoff=now, abandoned_before=now, limit=500)
    assert len(stalled) == 5


async def test_an_abandoned_claim_counts_as_no_progress(db: Database) -> None:
    """A claim whose worker died, with no copy of its job left to take it over, is
    re-owed once it is older than any delivery may take; a recent one is not."""
    trigger_id = await insert_trigger(db, {})
    old, recent = job_for(trigger_id), job_for(trigger_id)
    for job in (old, recent):
        await insert_event(db, job, {})
    long_ago = utcnow() - timedelta(hours=1)
    await db.execute("UPDATE event_logs SET published_at = %s", (to_db(long_ago),))
    for job, started in ((old, long_ago), (recent, utcnow())):
        await db.execute("INSERT INTO delivery_attempts (event_id, attempt, started_at)"
                         " VALUES (%s, 1, %s)", (job.event_id, to_db(started)))  # fmt: skip
    now = utcnow()
    stalled = await outbox.stalled_deliveries(
        db, cutoff=now, abandoned_before=now - timedelta(minutes=10), limit=10)  # fmt: skip
    assert [s.event_id for s in stalled] == [old.event_id]
    started = time.monotonic()
    assert await outbox.reowe(db, stalled[0], now)
    assert not await outbox.reowe(db, stalled[0], now)  # owed already: a second is a no-op
    assert time.monotonic() - started < 5
    row = await event_row(db, old.event_id)
    assert row["publish_at"] is not None

"""The outbox relay: owed rows are published (and only once per claim), retries flow
through it, the claim query uses its index, and a Kafka outage leaves rows owed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.integration.worker_harness import (
    event_row,
    insert_event,
    insert_trigger,
    job_for,
    running_worker,
    wait_status,
    worker_settings,
)
from tests.sink import Sink
from tests.support import wait_until
from triggerd.devstack import KafkaBroker
from triggerd.domain.timeutil import utcnow
from triggerd.store import outbox
from triggerd.store.db import Database


async def owe(db: Database, count: int, config: dict[str, Any], *, ago: float = 1.0,
              trigger_id: str | None = None) -> list[str]:  # fmt: skip
    """`count` event rows whose job is owed since `ago` seconds (never published)."""
    trigger_id = trigger_id or await insert_trigger(db, config)
    ids = []
    for i in range(count):
        job = job_for(trigger_id, payload={"i": i})
        await insert_event(db, job, config, publish_at=utcnow() - timedelta(seconds=ago))
        ids.append(job.event_id)
    return ids


async def test_claim_query_uses_the_outbox_index(db: Database) -> None:
    await owe(db, 5, {})
    trigger_id = await insert_trigger(db, {})
    for _ in range(200):  # published rows: publish_at NULL
        await insert_event(db, job_for(trigger_id), {})
    await db.execute("ANALYZE TABLE event_logs")
    plan = await db.fetchall(
        "EXPLAIN " + outbox._CLAIM, {"now": utcnow().replace(tzinfo=None), "limit": 100}
    )
    assert plan[0]["key"] == "ix_events_owed", plan


async def test_concurrent_claims_are_disjoint_and_leased(db: Database) -> None:
    ids = await owe(db, 30, {})
    now = utcnow()
    lease = now + timedelta(seconds=15)
    first, second = await asyncio.gather(
        outbox.claim_due(db, now, lease, 20), outbox.claim_due(db, now, lease, 20)
    )
    claimed = [o.job.event_id for o in first + second]
    assert len(claimed) == len(set(claimed)) >= 20  # no row claimed twice
    # What neither took: a claim on a small table may scan (and so lock) rows it does not
    # return, and the other claim skips those; the next claim gets them.
    rest = await outbox.claim_due(db, utcnow(), lease, 100)
    owed = first + second + rest
    assert sorted(o.job.event_id for o in owed) == sorted(ids)  # every row once, none twice
    assert await outbox.claim_due(db, utcnow(), lease, 100) == []  # leased: hidden
    job = owed[0].job
    assert job.attempt == 1 and job.payload in ({"i": i} for i in range(30))

    await outbox.mark_published(db, owed[:15], utcnow())
    await outbox.postpone(db, owed[15:], utcnow() + timedelta(seconds=60))
    row = await event_row(db, owed[0].job.event_id)
    assert row["publish_at"] is None and row["published_at"] is not None
    row = await event_row(db, owed[15].job.event_id)
    assert row["publish_at"] is not None and row["published_at"] is None


async def test_settling_leaves_a_row_that_was_owed_again(db: Database) -> None:
    """A retry (publish_attempt + 1, new publish_at) written while the relay was
    publishing must survive the relay's settle."""
    [event_id] = await owe(db, 1, {})
    now = utcnow()
    [claimed] = await outbox.claim_due(db, now, now + timedelta(seconds=15), 10)
    await db.execute(
        "UPDATE event_logs SET publish_attempt = 2, publish_at = %(at)s WHERE id = %(id)s",
        {"id": event_id, "at": (now + timedelta(seconds=5)).replace(tzinfo=None)},
    )
    await outbox.mark_published(db, [claimed], utcnow())
    row = await event_row(db, event_id)
    assert row["publish_at"] is not None and row["publish_attempt"] == 2


async def test_relay_publishes_owed_jobs(settings_for: Any, db: Database, sink: Sink) -> None:
    config = {"endpoint": sink.url("/owed")}
    ids = await owe(db, 3, config)
    async with running_worker(settings_for(), wait_assigned=False) as worker:
        for event_id in ids:
            row = await wait_status(db, event_id, "success")
            assert row["publish_at"] is None and row["published_at"] is not None
        # First attempts only the relay got onto Kafka are firings like any other.
        fires = worker.services.metrics.fires.labels(type="webhook", source="webhook")
        assert fires._value.get() == 3
    assert sorted(r.json()["i"] for r in sink.requests("/owed")) == [0, 1, 2]


async def test_owed_rows_survive_a_kafka_outage(db_server: Any, sink: Sink) -> None:
    broker = KafkaBroker()
    await asyncio.to_thread(broker.start)
    try:
        async with (
            worker_settings(db_server, broker.bootstrap) as settings,
            running_worker(settings) as worker,
        ):
            db = worker.services.db
            config = {"endpoint": sink.url("/outage")}
            trigger_id = await insert_trigger(db, config)
            before = await owe(db, 2, config, trigger_id=trigger_id)
            for event_id in before:
                await wait_status(db, event_id, "success")

            assert broker.proc is not None
            broker.proc.kill()  # an outage, not a goodbye
            await asyncio.to_thread(broker.proc.wait)
            await wait_until(lambda: _unhealthy(worker), timeout=10, what="kafka seen down")
            [during] = await owe(db, 1, config, trigger_id=trigger_id)
            await asyncio.sleep(1.5)
            row = await event_row(db, during)  # still owed, nothing lost or settled
            assert row["execution_status"] == "pending"
            assert row["publish_at"] is not None and row["published_at"] is None

            # Same port. The broker's memory storage lost the topic, the group and its
            # offsets; the producer's probe creates the topic again, and the worker finds
            # its position (2, in the trigger's partition) past the end of the new log (1).
            await asyncio.to_thread(broker.start)
            await wait_status(db, during, "success", timeout=30)
            assert len(sink.requests("/outage")) == 3
    finally:
        await asyncio.to_thread(broker.close)


async def _unhealthy(worker: Any) -> bool:
    return not worker.bus.healthy

"""The worker rides out a database outage: jobs consumed while the server is down are
delivered once it is back; the role never crashes. An idle worker does not mistake the
broker's end offset for a reset log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.worker_harness import (
    attempts_of,
    insert_event,
    insert_trigger,
    job_for,
    processed_at_least,
    running_worker,
    wait_status,
)
from tests.sink import Sink
from tests.support import wait_until
from triggerd.config import DatabaseUrl
from triggerd.devstack import MariaDBServer
from triggerd.store.db import Database
from triggerd.store.migrations import migrate
from triggerd.worker import consumer as consumer_module


async def test_database_outage_is_ridden_out(tmp_path: Path, settings_for: Any,
                                             sink: Sink) -> None:  # fmt: skip
    server = MariaDBServer(base_dir=tmp_path / "db")
    await asyncio.to_thread(server.start)
    try:
        url = await asyncio.to_thread(server.create_database, "own")
        db = Database(DatabaseUrl.parse(url), pool_size=2)
        await db.connect()
        await migrate(db)
        settings = settings_for(database_url=url)
        config = {"endpoint": sink.url("/db-outage")}
        trigger_id = await insert_trigger(db, config)
        jobs = [job_for(trigger_id, payload={"i": i}) for i in range(3)]
        for job in jobs:
            await insert_event(db, job, config)
        async with running_worker(settings) as worker:
            await worker.publish(jobs[0])
            await wait_status(db, jobs[0].event_id, "success")

            await asyncio.to_thread(server.stop)
            await worker.publish(*jobs[1:])
            await asyncio.sleep(2)  # consumed, but nothing can be stored: no delivery yet
            assert len(sink.requests("/db-outage")) == 1

            await asyncio.to_thread(server.start)
            for job in jobs[1:]:
                await wait_status(db, job.event_id, "success", timeout=40)
            assert worker.role.consumer is not None
            assert worker.processed == 3
        assert sorted(r.json()["i"] for r in sink.requests("/db-outage")) == [0, 1, 2]
        for job in jobs:
            assert len(await attempts_of(db, job.event_id)) == 1
        await db.close()
    finally:
        await asyncio.to_thread(server.close)


async def test_an_idle_worker_does_not_reread_a_partition(
    db: Database, settings_for: Any, sink: Sink, monkeypatch: Any
) -> None:
    """tansu answers ListOffsets with the last batch's base offset + 1; a worker that took
    that for the end of the log saw its position past it and re-read the partition every
    few seconds. Jobs published as one batch (one trigger: one partition) are processed
    once, however often the reset check runs."""
    monkeypatch.setattr(consumer_module, "_RESET_CHECK_INTERVAL", 0.1)
    config = {"endpoint": sink.url("/batch")}
    trigger_id = await insert_trigger(db, config)
    jobs = [job_for(trigger_id, payload={"i": i}) for i in range(5)]
    for job in jobs:
        await insert_event(db, job, config)
    async with running_worker(settings_for()) as worker:
        results = await worker.bus.publish_many(jobs)  # queued together: one batch
        assert not [r for r in results if isinstance(r, BaseException)]
        for job in jobs:
            await wait_status(db, job.event_id, "success")
        await wait_until(lambda: processed_at_least(worker, 5), what="five jobs processed")
        # Some 20 reset checks; a re-read would process the five jobs again.
        deadline = asyncio.get_running_loop().time() + 2.0
        while asyncio.get_running_loop().time() < deadline:
            assert worker.processed == 5
            await asyncio.sleep(0.1)
    assert len(sink.requests("/batch")) == 5


"""The worker rides out a database outage: jobs consumed while the server is down are
delivered once it is back; the role never crashes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.worker_harness import (
    attempts_of,
    insert_event,
    insert_trigger,
    job_for,
    running_worker,
    wait_status,
)
from tests.sink import Sink
from triggerd.config import DatabaseUrl
from triggerd.devstack import MariaDBServer
from triggerd.store.db import Database
from triggerd.store.migrations import migrate


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

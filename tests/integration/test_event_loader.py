"""The worker's EventLoader: the event loads of one loop turn share one query, each
caller gets its own event (or None), and a failed query fails every call it served."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.worker_harness import insert_event, insert_trigger, job_for
from triggerd.models import new_id
from triggerd.store.db import Database
from triggerd.store.deliveries import EventLoader, load_event


async def test_concurrent_loads_share_one_query(db: Database, monkeypatch: Any) -> None:
    config = {"endpoint": "http://127.0.0.1:9/x"}
    trigger_id = await insert_trigger(db, config)
    jobs = [job_for(trigger_id, payload={"i": i}) for i in range(7)]
    for job in jobs:
        await insert_event(db, job, config)
    queries: list[str] = []
    fetchall = db.fetchall

    async def counting(sql: str, params: Any = None) -> Any:
        queries.append(sql)
        return await fetchall(sql, params)

    monkeypatch.setattr(db, "fetchall", counting)
    loader = EventLoader(db)
    missing = new_id()
    ids = [j.event_id for j in jobs] + [missing, jobs[0].event_id, jobs[0].event_id.upper()]
    loaded = await asyncio.gather(*[loader.load(i) for i in ids])
    assert len(queries) == 1
    for event_id, event in zip(ids, loaded, strict=True):
        if event_id == missing:
            assert event is None
        else:
            assert event is not None and event.id == event_id.lower()
            assert event == await load_event(db, event_id)
    # a later turn is a new query
    assert (await loader.load(jobs[3].event_id)) is not None
    assert len(queries) == 2


async def test_a_failed_query_fails_every_caller(db: Database, monkeypatch: Any) -> None:
    async def broken(sql: str, params: Any = None) -> Any:
        raise ConnectionResetError("gone")

    monkeypatch.setattr(db, "fetchall", broken)
    loader = EventLoader(db)
    results = await asyncio.gather(loader.load(new_id()), loader.load(new_id()),
                                   return_exceptions=True)  # fmt: skip
    assert [type(r) for r in results] == [ConnectionResetError, ConnectionResetError]


async def test_a_cancelled_caller_does_not_disturb_the_others(db: Database) -> None:
    config: dict[str, Any] = {}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    loader = EventLoader(db)
    first = asyncio.ensure_future(loader.load(job.event_id))
    second = asyncio.ensure_future(loader.load(job.event_id))
    await asyncio.sleep(0)
    first.cancel()
    event = await second
    assert event is not None and event.id == job.event_id
    with pytest.raises(asyncio.CancelledError):
        await first

"""Idempotent event inserts (a scheduler re-recording an occurrence, a worker building a
missing row from its job) keep the existing row without a database warning: the driver
would fetch each with SHOW WARNINGS and re-raise it as a Python warning."""

from __future__ import annotations

import warnings

from tests.integration.worker_harness import event_row, insert_trigger, job_for
from triggerd.domain.timeutil import utcnow
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, insert_events


async def test_inserting_an_existing_event_keeps_it_and_warns_nothing(db: Database) -> None:
    trigger_id = await insert_trigger(db, {})
    job = job_for(trigger_id)

    def record(name: str) -> EventRecord:
        return EventRecord(id=job.event_id, trigger_id=trigger_id, trigger_name=name,
                           trigger_type="webhook", source="webhook", is_test_run=False,
                           payload={"n": 1}, delivery={}, fired_at=utcnow())  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with db.transaction() as cur:
            assert await insert_events(cur, [record("first")]) == 1
        async with db.transaction() as cur:
            assert await insert_events(cur, [record("second")]) == 0
    assert (await event_row(db, job.event_id))["trigger_name"] == "first"

"""The scheduler role in-process on the real MariaDB and broker: on time, once, advancing,
reconciling with rows other processes write, cancelling, handing claims back on stop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.factories import (
    InProcessScheduler,
    cron_config,
    event_rows,
    insert_trigger,
    ms,
    one_time_config,
    schedule_rows,
    soon,
)
from tests.support import read_jobs, wait_until
from triggerd.domain.occurrences import Due
from triggerd.domain.timeutil import utcnow
from triggerd.store.db import Database
from triggerd.store.schedule_rows import cancel_pending, insert_occurrence

StartScheduler = Callable[..., Any]


@pytest.fixture
async def scheduler(settings_for: Any, db: Database) -> AsyncIterator[StartScheduler]:
    started: list[InProcessScheduler] = []

    async def start(**overrides: Any) -> InProcessScheduler:
        instance = InProcessScheduler(settings_for(**overrides), db)
        started.append(instance)
        return await instance.start()

    yield start
    for instance in started:
        await instance.stop()


async def test_one_time_trigger_fires_once_on_time(
    scheduler: StartScheduler, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    sched = await scheduler()
    run_at = soon(1.5)
    config = one_time_config(run_at, payload={"a": 1})
    trigger_id = await insert_trigger(db, "time_scheduled", config)
    sched.services.wakeup.notify()  # as the API does after a change

    jobs = await read_jobs(kafka_bootstrap, topic, count=1, timeout=10)
    assert len(jobs) == 1
    job = jobs[0]
    assert job["trigger_id"] == trigger_id and job["source"] == "scheduler"
    assert job["payload"] == {"a": 1} and job["attempt"] == 1 and job["is_test_run"] is False
    assert job["scheduled_for"] == run_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    delay_ms = job["_timestamp"] - ms(run_at)
    assert 0 <= delay_ms < 1000, delay_ms

    async def recorded() -> list[dict[str, Any]]:
        rows = await schedule_rows(db, trigger_id)
        return rows if rows and rows[0]["status"] == "completed" else []

    [row] = await wait_until(recorded, what="the occurrence completed")
    [event] = await event_rows(db, trigger_id)
    assert row["event_id"] == event["id"] == job["event_id"]
    assert event["scheduled_for"] == run_at and event["source"] == "scheduler"
    assert row["claimed_by"] is None and row["lease_until"] is None
    await asyncio.sleep(1.0)  # nothing else fires: no second job, no next occurrence
    assert len(await read_jobs(kafka_bootstrap, topic, count=2, timeout=1)) == 1
    assert len(await schedule_rows(db, trigger_id)) == 1
    assert sched.metric("triggerd_fires_total", type="time_scheduled", source="scheduler") == 1
    assert sched.metric("triggerd_fire_delay_seconds_count") == 1


async def test_six_field_cron_fires_every_two_seconds_and_advances(
    scheduler: StartScheduler, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    trigger_id = await insert_trigger(db, "cron_scheduled", cron_config("*/2 * * * * *"))
    await scheduler()

    jobs = await read_jobs(kafka_bootstrap, topic, count=3, timeout=12)
    assert len(jobs) >= 3
    due = [ms(j["scheduled_for"]) for j in jobs[:3]]
    assert [b - a for a, b in itertools.pairwise(due)] == [2000, 2000]
    assert all(d % 2000 == 0 for d in due)
    assert all(0 <= j["_timestamp"] - ms(j["scheduled_for"]) < 1000 for j in jobs[:3])
    assert len({j["event_id"] for j in jobs}) == len(jobs)

    # Completion is recorded right after the publish ack: poll for it, don't race it.
    async def advanced() -> list[dict[str, Any]] | None:
        rows = await schedule_rows(db, trigger_id)
        done = [r for r in rows if r["status"] == "completed"]
        return rows if len(done) >= 3 else None

    rows = await wait_until(advanced, timeout=5, what="three completed occurrences")
    completed = [r for r in rows if r["status"] == "completed"]
    pending = [r for r in rows if r["status"] in ("pending", "processing")]
    assert len(completed) >= 3 and len(pending) == 1
    assert pending[0]["fire_at"] > max(r["fire_at"] for r in completed)


async def test_reconcile_sees_rows_written_by_another_process(
    scheduler: StartScheduler, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    """No wake-up: only the reconcile (every 500 ms here) can notice these rows."""
    await scheduler()
    now = utcnow()
    new = await insert_trigger(db, "time_scheduled", one_time_config(now + timedelta(seconds=2)))
    cancelled = await insert_trigger(
        db, "time_scheduled", one_time_config(now + timedelta(seconds=2.5))
    )
    far = now + timedelta(seconds=60)
    moved = await insert_trigger(db, "cron_scheduled", cron_config("0 0 1 1 *"), first=far)
    await asyncio.sleep(0.8)  # the scheduler has read all three into its window
    moved_to = utcnow() + timedelta(seconds=2)
    async with db.transaction() as cur:
        await cancel_pending(cur, cancelled, utcnow())
        await cancel_pending(cur, moved, utcnow())
        await insert_occurrence(cur, moved, Due(moved_to, moved_to), utcnow())

    jobs = await read_jobs(kafka_bootstrap, topic, count=3, timeout=6)
    fired = {j["trigger_id"]: j for j in jobs}
    assert set(fired) == {new, moved}, jobs
    assert ms(fired[moved]["scheduled_for"]) == ms(moved_to)
    for job in fired.values():
        assert 0 <= job["_timestamp"] - ms(job["scheduled_for"]) < 1000
    assert [r["status"] for r in await schedule_rows(db, cancelled)] == ["cancelled"]


async def test_rows_of_inactive_or_deleted_triggers_are_cancelled_not_fired(
    scheduler: StartScheduler, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    inactive = await insert_trigger(db, "time_scheduled", one_time_config(soon(0.5)))
    await db.execute("UPDATE triggers SET status = 'inactive', version = 2 WHERE id = %s",
                     [inactive])  # fmt: skip
    deleted = await insert_trigger(db, "time_scheduled", one_time_config(soon(0.5)))
    await db.execute("DELETE FROM triggers WHERE id = %s", [deleted])
    live = await insert_trigger(db, "time_scheduled", one_time_config(soon(0.5)))
    await scheduler()

    jobs = await read_jobs(kafka_bootstrap, topic, count=2, timeout=4)
    assert [j["trigger_id"] for j in jobs] == [live]

    async def settled() -> bool:
        rows = await schedule_rows(db)
        return all(r["status"] in ("completed", "cancelled") for r in rows)

    await wait_until(settled, what="every row completed or cancelled")
    for trigger_id in (inactive, deleted):
        assert [r["status"] for r in await schedule_rows(db, trigger_id)] == ["cancelled"]
    assert await event_rows(db, inactive) == [] and await event_rows(db, deleted) == []


async def test_stop_hands_back_claims(scheduler: StartScheduler, db: Database) -> None:
    """Claimed ahead of due time, then stopped: nothing is left 'processing'."""
    for _ in range(20):
        await insert_trigger(db, "cron_scheduled", cron_config("* * * * * *"))
    sched = await scheduler(scheduler_lease="8s")  # claims 2 s ahead

    async def claimed() -> bool:
        rows = await schedule_rows(db)
        return any(r["status"] == "processing" for r in rows)

    await wait_until(claimed, timeout=5, interval=0.01, what="claims")
    await sched.stop()
    rows = await schedule_rows(db)
    assert not [r for r in rows if r["status"] == "processing"]
    assert all(r["claimed_by"] is None for r in rows)
    events = {e["id"] for e in await event_rows(db)}
    completed = {r["event_id"] for r in rows if r["status"] == "completed"}
    assert completed == events  # whatever was published was recorded


async def test_a_crowded_second_is_claimed_well_ahead_with_leases_from_its_due_time(
    scheduler: StartScheduler, db: Database, kafka_bootstrap: str, topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Many rows due in one second are claimed as far ahead as claiming them takes (here a
    slow claim rate makes that ~12 s), so that due time costs only the sends; their leases
    run from the due time, so they need no refresh before it."""
    from triggerd.scheduler import loop

    monkeypatch.setattr(loop, "INITIAL_CLAIM_RATE", 50.0)  # rows/s, until measured
    run_at = soon(9)
    ids = [await insert_trigger(db, "time_scheduled", one_time_config(run_at))
           for _ in range(400)]  # fmt: skip
    sched = await scheduler()
    lease = timedelta(seconds=sched.services.settings.scheduler_lease)

    async def all_claimed() -> list[dict[str, Any]]:
        rows = await schedule_rows(db)
        return rows if all(r["status"] == "processing" for r in rows) else []

    rows = await wait_until(all_claimed, what="the crowded second claimed", timeout=6)
    assert utcnow() < run_at - timedelta(seconds=4), "claimed only at the usual claim-ahead"
    assert len(rows) == len(ids)
    assert all(r["lease_until"] >= run_at + lease for r in rows)
    jobs = await read_jobs(kafka_bootstrap, topic, count=len(ids), timeout=20)
    assert sorted(j["trigger_id"] for j in jobs) == sorted(ids)
    assert all(0 <= j["_timestamp"] - ms(run_at) < 1000 for j in jobs)


async def test_a_crowded_instant_does_not_delay_the_occurrences_due_after_it(
    scheduler: StartScheduler, db: Database, kafka_bootstrap: str, topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The claims of an instant with more than CROWD due go out a few per turn after what
    else is due: occurrences due just after a burst are not queued behind all of it.
    (The crowd's limits are shrunk so that 300 rows make a burst that takes a while.)"""
    from triggerd.scheduler import dispatch

    monkeypatch.setattr(dispatch, "CROWD", 10)
    monkeypatch.setattr(dispatch, "CROWD_BATCH", 5)
    monkeypatch.setattr(dispatch, "CROWD_IN_FLIGHT", 5)
    burst_at = soon(6)
    crowd = [await insert_trigger(db, "time_scheduled", one_time_config(burst_at))
             for _ in range(300)]  # fmt: skip
    after = [await insert_trigger(db, "time_scheduled",
                                  one_time_config(burst_at + timedelta(milliseconds=50 + 10 * n)))
             for n in range(5)]  # fmt: skip
    await scheduler()
    jobs = await read_jobs(kafka_bootstrap, topic, count=len(crowd) + len(after), timeout=30)
    sent = {j["trigger_id"]: j["_timestamp"] for j in jobs}
    assert set(sent) == set(crowd) | set(after)
    last_of_crowd = max(sent[t] for t in crowd)
    assert last_of_crowd - ms(burst_at) > 200, "the shrunk crowd went out too fast to tell"
    for trigger_id in after:
        assert sent[trigger_id] < last_of_crowd

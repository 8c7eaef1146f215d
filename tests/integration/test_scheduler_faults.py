"""The scheduler through faults: Kafka down and back, the scheduler down for several
periods (the downtime rule), the database down and back."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.factories import (
    InProcessScheduler,
    cron_config,
    event_rows,
    insert_trigger,
    interval_config,
    ms,
    one_time_config,
    schedule_rows,
    seconds_grid,
    soon,
)
from tests.support import read_jobs, wait_until
from triggerd.config import DatabaseUrl
from triggerd.devstack import KafkaBroker, MariaDBServer
from triggerd.domain.occurrences import Due
from triggerd.domain.timeutil import utcnow
from triggerd.store.db import Database
from triggerd.store.migrations import migrate
from triggerd.store.schedule_rows import insert_occurrence


@pytest.fixture
def private_broker() -> Any:
    broker = KafkaBroker()
    broker.start()
    holder = {"broker": broker}
    yield holder
    holder["broker"].close()


async def _events_until(db: Database, trigger_id: str, until: datetime) -> list[dict[str, Any]]:
    rows = await event_rows(db, trigger_id)
    return rows if rows and rows[-1]["scheduled_for"] >= until else []


async def test_kafka_outage_publishes_everything_due_meanwhile_once(
    settings_for: Any, db: Database, topic: str, private_broker: dict[str, KafkaBroker]
) -> None:
    broker = private_broker["broker"]
    every_second = await insert_trigger(db, "cron_scheduled", cron_config("* * * * * *"))
    sched = await InProcessScheduler(settings_for(kafka_bootstrap=broker.bootstrap), db).start()
    try:
        await wait_until(lambda: _events_until(db, every_second, utcnow() - timedelta(seconds=1)),
                         what="firing before the outage")  # fmt: skip
        assert broker.proc is not None
        broker.proc.kill()  # SIGTERM makes tansu linger for seconds; a crash is quicker
        await asyncio.to_thread(broker.proc.wait)
        stopped = utcnow()
        once = await insert_trigger(db, "time_scheduled", one_time_config(soon(2)))
        await asyncio.sleep(8)  # the outage: every occurrence meanwhile fails to publish
        restarted = KafkaBroker(port=broker.port)
        await asyncio.to_thread(restarted.start)
        private_broker["broker"] = restarted
        back = utcnow()
        await wait_until(lambda: _events_until(db, every_second, back + timedelta(seconds=2)),
                         timeout=20, what="catching up after the outage")  # fmt: skip
        # The one-time occurrence retries on its own backoff (capped at 5 s), so it may
        # come after the cron trigger has caught up.
        await wait_until(lambda: event_rows(db, once), timeout=20,
                         what="the one-time occurrence published")  # fmt: skip
    finally:
        await sched.stop()

    events = await event_rows(db, every_second)
    assert seconds_grid(events) == list(range(len(events))), "a gap or a duplicate"
    assert len(await event_rows(db, once)) == 1
    assert sched.metric("triggerd_publish_failures_total") > 0
    # The restarted broker (memory storage) holds what was published after it came back:
    # every occurrence due during the outage, once.
    after_restart = [e for e in events if e["published_at"] >= back]
    jobs = await read_jobs(restarted.bootstrap, topic, count=len(after_restart) + 1, timeout=5)
    due_in_outage = {ms(e["scheduled_for"]) for e in events if stopped < e["scheduled_for"] < back}
    assert len(due_in_outage) >= 5
    published = [ms(j["scheduled_for"]) for j in jobs if j["trigger_id"] == every_second]
    assert len(published) == len(set(published))
    assert due_in_outage <= set(published)
    assert [j["trigger_id"] for j in jobs].count(once) == 1


@pytest.mark.parametrize("lease", ["1s", "30s"])
async def test_downtime_fires_only_the_latest_missed_occurrence(
    settings_for: Any, db: Database, lease: str
) -> None:
    """Whatever the lease: what fell due while no scheduler ran (before this one
    started) is downtime, however short; a lease of 1 s also makes anything pending
    for 2 s past due count as missed."""
    settings = settings_for(scheduler_lease=lease)
    first = soon(1).replace(microsecond=0) + timedelta(seconds=1)
    cron = await insert_trigger(db, "cron_scheduled", cron_config("* * * * * *"))
    interval = await insert_trigger(db, "interval_scheduled", interval_config(1, first))

    sched = await InProcessScheduler(settings, db).start()
    await wait_until(lambda: _events_until(db, interval, first + timedelta(seconds=1)),
                     what="firing before the downtime")  # fmt: skip
    await sched.stop()
    before = {t: await event_rows(db, t) for t in (cron, interval)}
    await asyncio.sleep(5)  # several periods without a scheduler

    restart = utcnow()
    sched = await InProcessScheduler(settings, db).start()
    try:
        settled = restart + timedelta(seconds=2)
        for trigger_id in (cron, interval):

            async def caught_up(t: str = trigger_id) -> list[dict[str, Any]]:
                return await _events_until(db, t, settled)

            await wait_until(caught_up, what="firing after the downtime")
    finally:
        await sched.stop()

    for trigger_id in (cron, interval):
        old = before[trigger_id]
        after = (await event_rows(db, trigger_id))[len(old):]
        catch_up, following = after[0], after[1:]
        # One firing for the whole downtime: the latest missed occurrence, with its own
        # original scheduled_for, published at once after the restart ...
        assert catch_up["scheduled_for"] <= restart
        assert restart - catch_up["scheduled_for"] < timedelta(seconds=1)
        assert catch_up["scheduled_for"] - old[-1]["scheduled_for"] >= timedelta(seconds=4)
        assert "downtime" in (catch_up["note"] or "")
        # ... then on schedule again, every second, no burst.
        assert seconds_grid([catch_up, *following]) == list(range(len(following) + 1))
        assert all(e["note"] is None for e in following)
    assert sched.metric("triggerd_missed_occurrences_total", policy="latest") >= 6


async def test_a_trigger_whose_stored_schedule_cannot_be_computed_does_not_stop_the_others(
    settings_for: Any, db: Database
) -> None:
    """A row the API would refuse (written by hand, restored from elsewhere): its
    occurrence is dropped and logged, and the scheduler goes on firing the rest."""
    good = await insert_trigger(db, "cron_scheduled", cron_config("* * * * * *"))
    broken = await insert_trigger(db, "cron_scheduled", {"cron": "bogus expr",
                                                        "endpoint": "http://127.0.0.1:9/"},
                                  schedule=False)  # fmt: skip
    async with db.transaction() as cur:
        due = soon(1).replace(microsecond=0)
        await insert_occurrence(cur, broken, Due(due, due), utcnow())

    sched = await InProcessScheduler(settings_for(), db).start()
    try:
        started = utcnow()
        await wait_until(lambda: _events_until(db, good, started + timedelta(seconds=3)),
                         what="the good trigger firing")  # fmt: skip
        assert not any(task.done() for task in sched._tasks), "a role stopped"

        async def dropped() -> bool:
            return [r["status"] for r in await schedule_rows(db, broken)] == ["cancelled"]

        await wait_until(dropped, what="the broken trigger's occurrence dropped")
    finally:
        await sched.stop()
    assert await event_rows(db, broken) == []


async def test_database_restart_is_ridden_out(
    settings_for: Any, own_database_server: MariaDBServer
) -> None:
    server = own_database_server
    url = await asyncio.to_thread(server.create_database, "sched")
    db = Database(DatabaseUrl.parse(url), pool_size=4)
    await db.connect()
    await migrate(db)
    trigger_id = await insert_trigger(db, "cron_scheduled", cron_config("* * * * * *"))
    # Every 3 s: its next row exists (pending, claimed later than 1 s ahead) while the
    # database is down, and ends up due longer ago than the 2 s grace of a 1 s lease.
    first = soon(1).replace(microsecond=0) + timedelta(seconds=1)
    slow = await insert_trigger(db, "interval_scheduled", interval_config(3, first))
    settings = settings_for(database_url=url, scheduler_lease="1s")
    sched = await InProcessScheduler(settings, db).start()
    try:
        await wait_until(lambda: _events_until(db, slow, first + timedelta(seconds=3)),
                         timeout=15, what="firing before the restart")  # fmt: skip
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(5)
        await asyncio.to_thread(server.start)
        back = utcnow()
        for trigger in (trigger_id, slow):
            await wait_until(lambda t=trigger: _events_until(db, t, back + timedelta(seconds=3)),
                             timeout=20, what="firing after the restart")  # fmt: skip
        assert not any(t.done() for t in sched._tasks), "the role or the producer ended"
    finally:
        await sched.stop()
    try:
        every_second = await event_rows(db, trigger_id)
        every_third = await event_rows(db, slow)
    finally:
        await db.close()
    # Occurrences due while the database was down fire late, once each: nothing lost,
    # nothing counted as downtime.
    assert seconds_grid(every_second) == list(range(len(every_second)))
    start = ms(first)
    assert [ms(e["scheduled_for"]) - start for e in every_third] == [
        3000 * n for n in range(len(every_third))]
    assert all(e["note"] is None for e in every_second + every_third)

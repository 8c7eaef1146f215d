"""The scheduler as deployed: triggers made through the HTTP API, several
`triggerd run --roles scheduler` processes on one database, and a daemon killed with
SIGKILL while firing, then restarted."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.factories import ENDPOINT, event_rows, ms, schedule_rows, seconds_grid
from tests.support import Daemon, read_jobs, wait_until
from triggerd.domain.timeutil import parse_iso_utc, utcnow
from triggerd.store.db import Database

pytestmark = pytest.mark.e2e
TRIGGERS = "/api/v1/triggers"


async def api(daemon: Daemon, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.request(
        method, f"{daemon.url}{path}", json=body
    ) as resp:
        assert resp.status < 300, await resp.text()
        return dict(await resp.json()) if resp.status != 204 else {}


async def every_second(daemon: Daemon, count: int) -> list[str]:
    body = {"name": "tick", "type": "cron_scheduled",
            "config": {"cron": "* * * * * *", "endpoint": ENDPOINT}}  # fmt: skip
    return [(await api(daemon, "POST", TRIGGERS, body))["id"] for _ in range(count)]


async def _all_fired_until(db: Database, triggers: list[str], until: datetime) -> bool:
    rows = await db.fetchall(
        "SELECT trigger_id, MAX(scheduled_for) AS last FROM event_logs GROUP BY trigger_id"
    )
    last = {row["trigger_id"]: row["last"] for row in rows}
    return all(t in last and last[t] >= until.replace(tzinfo=None) for t in triggers)


async def _metric(daemon: Daemon, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))  # fmt: skip


async def _check_each_occurrence_once(db: Database, triggers: list[str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for trigger_id in triggers:
        rows = await event_rows(db, trigger_id)
        assert len(rows) >= 4
        # every occurrence from the first to the last, each once
        assert seconds_grid(rows) == list(range(len(rows))), (trigger_id, seconds_grid(rows))
        assert all(row["note"] is None for row in rows)  # nothing counted as missed
        events += rows
    return events


async def test_two_schedulers_fire_each_occurrence_once(
    start_daemon: Any, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    env = {"TRIGGERD_SCHEDULER_BATCH_SIZE": "5"}  # small claims: both processes get rows
    daemons = [start_daemon(roles="api,scheduler", env=env),
               start_daemon(roles="scheduler", env=env)]  # fmt: skip
    await asyncio.gather(*(d.wait_healthy() for d in daemons))
    triggers = await every_second(daemons[0], 30)
    until = utcnow() + timedelta(seconds=5)
    await wait_until(lambda: _all_fired_until(db, triggers, until), timeout=20,
                     what="5 s of firing")  # fmt: skip
    fired = [await _metric(d, "triggerd_fires_total") for d in daemons]
    for daemon in daemons:
        assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()

    events = await _check_each_occurrence_once(db, triggers)
    # Both competed for the same rows; which one wins each claim is up to timing (on a
    # loaded machine one may win them all), so only "someone fired" is asserted here.
    assert sum(fired) > 0, fired
    jobs = await read_jobs(kafka_bootstrap, topic, count=len(events) + 1, timeout=3)
    per_event = Counter(job["event_id"] for job in jobs)
    assert not [e for e, n in per_event.items() if n > 1], "an occurrence published twice"
    assert set(per_event) == {e["id"] for e in events}
    occurrences = Counter((job["trigger_id"], job["scheduled_for"]) for job in jobs)
    assert max(occurrences.values()) == 1
    rows = await db.fetchall("SELECT status, COUNT(*) AS n FROM trigger_schedules GROUP BY status")
    assert {r["status"] for r in rows} <= {"completed", "pending"}  # nothing left claimed


async def test_kill_9_while_firing_loses_nothing_and_fires_nothing_twice(
    start_daemon: Any, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    """What the dead process held fires once its leases expire; what fell due while no
    scheduler ran at all follows the misfire policy (`latest`: the most recent fires,
    flagged, the others are recorded missed); nothing fires twice or goes unaccounted."""
    first = start_daemon(roles="api,scheduler")
    await first.wait_healthy()
    triggers = await every_second(first, 20)
    await wait_until(lambda: _all_fired_until(db, triggers, utcnow() - timedelta(seconds=1)),
                     timeout=15, what="firing")  # fmt: skip
    await asyncio.sleep(0.6)  # mid-second: claims (2 s ahead) and publishes in flight
    first.kill()
    killed = utcnow()
    second = start_daemon(roles="scheduler")
    await second.wait_healthy()
    ready = utcnow()  # the second scheduler had started by now
    # Past the 5 s lease of the dead process's claims, and a few periods more.
    await wait_until(lambda: _all_fired_until(db, triggers, killed + timedelta(seconds=8)),
                     timeout=25, what="firing after the restart")  # fmt: skip
    assert await asyncio.to_thread(second.terminate) == 0, second.logs()

    events: list[dict[str, Any]] = []
    for trigger_id in triggers:
        fired = await event_rows(db, trigger_id)
        missed = [row["scheduled_for"] for row in await schedule_rows(db, trigger_id)
                  if row["status"] == "missed"]  # fmt: skip
        times = sorted([row["scheduled_for"] for row in fired] + missed)
        # Every second from the first to the last, each once: fired or recorded missed.
        assert seconds_grid([{"scheduled_for": t} for t in times]) == list(range(len(times)))
        # Only what fell due after the kill and before the restart may have been missed.
        assert all(killed - timedelta(seconds=1) < t < ready for t in missed), (missed, killed)
        for row in fired:
            if row["scheduled_for"] >= ready:
                assert row["note"] is None, row  # after the restart: on time, as itself
        events += fired
    assert any(e["scheduled_for"] < killed for e in events)
    # The dead process held claims (leased ahead of due time): they fired once its leases
    # expired, late, and were not treated as missed.
    assert any(e["fired_at"] - e["scheduled_for"] > timedelta(seconds=2) for e in events)
    # Every event's job is on Kafka (a job published just before the kill may be there
    # twice, with the same event_id: the worker dedupes by it).
    jobs = await read_jobs(kafka_bootstrap, topic, count=len(events) + 50, timeout=3)
    assert {e["id"] for e in events} <= {job["event_id"] for job in jobs}


async def test_after_kill_9_and_downtime_the_misfire_policy_holds(
    start_daemon: Any, db: Database
) -> None:
    """Killed holding claims, restarted 6 s later: the held claims fire once their leases
    expire, and their successors that fell due while no scheduler ran are missed under
    `skip`, not fired one after another."""
    first = start_daemon(roles="api,scheduler")
    await first.wait_healthy()
    body = {"name": "skipper", "type": "cron_scheduled",
            "config": {"cron": "* * * * * *", "endpoint": ENDPOINT,
                       "misfire_policy": "skip"}}  # fmt: skip
    triggers = [(await api(first, "POST", TRIGGERS, body))["id"] for _ in range(5)]
    await wait_until(lambda: _all_fired_until(db, triggers, utcnow() - timedelta(seconds=1)),
                     timeout=15, what="firing")  # fmt: skip
    await asyncio.sleep(0.6)
    first.kill()
    killed = utcnow()
    await asyncio.sleep(6)
    second = start_daemon(roles="scheduler")
    await second.wait_healthy()
    ready = utcnow()
    await wait_until(lambda: _all_fired_until(db, triggers, ready + timedelta(seconds=3)),
                     timeout=25, what="firing after the restart")  # fmt: skip
    assert await asyncio.to_thread(second.terminate) == 0, second.logs()
    for trigger_id in triggers:
        fired = [row["scheduled_for"] for row in await event_rows(db, trigger_id)]
        missed = [row["scheduled_for"] for row in await schedule_rows(db, trigger_id)
                  if row["status"] == "missed"]  # fmt: skip
        assert len(set(fired)) == len(fired) and not set(fired) & set(missed)
        # The claims leased ahead (up to ~2 s past the kill) fire; what fell due after
        # them and before the restart is missed, not fired late in a burst.
        gap = [t for t in fired if killed + timedelta(seconds=3) < t < ready - timedelta(seconds=1)]
        assert gap == [], (trigger_id, gap, killed, ready)
        assert len(missed) >= 2, (trigger_id, missed)


async def test_api_changes_reach_the_scheduler_at_once(
    start_daemon: Any, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    """Created, rescheduled, deactivated and deleted through the API of the same process:
    the wake-up makes each change count before the next reconcile would."""
    env = {"TRIGGERD_SCHEDULER_RECONCILE_INTERVAL": "30s"}  # only a wake-up can be on time
    daemon = start_daemon(roles="api,scheduler", env=env)
    await daemon.wait_healthy()
    once = await api(daemon, "POST", TRIGGERS, {"name": "once", "type": "time_scheduled",
                     "config": {"run_in": "2s", "endpoint": ENDPOINT}})  # fmt: skip
    ticking = await api(daemon, "POST", TRIGGERS, {"name": "tick", "type": "cron_scheduled",
                        "config": {"cron": "0 0 1 1 *", "endpoint": ENDPOINT}})  # fmt: skip
    moved = await api(daemon, "PATCH", f"{TRIGGERS}/{ticking['id']}",
                      {"config": {"cron": "*/2 * * * * *", "endpoint": ENDPOINT}})
    assert parse_iso_utc(moved["next_scheduled_run"]) - utcnow() < timedelta(seconds=3)

    jobs = await read_jobs(kafka_bootstrap, topic, count=3, timeout=10)
    by_trigger = Counter(job["trigger_id"] for job in jobs)
    assert by_trigger[once["id"]] == 1 and by_trigger[ticking["id"]] >= 2
    assert all(0 <= j["_timestamp"] - ms(j["scheduled_for"]) < 1000 for j in jobs)
    done = await api(daemon, "GET", f"{TRIGGERS}/{once['id']}")
    assert done["next_scheduled_run"] is None

    await api(daemon, "PATCH", f"{TRIGGERS}/{ticking['id']}", {"status": "inactive"})
    paused = utcnow()
    await asyncio.sleep(3)
    fired_after = [e for e in await event_rows(db, ticking["id"]) if e["fired_at"] > paused]
    assert fired_after == []
    statuses = {r["status"] for r in await schedule_rows(db, ticking["id"])}
    assert statuses <= {"completed", "cancelled"}
    await api(daemon, "DELETE", f"{TRIGGERS}/{ticking['id']}")
    assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()


async def test_roles_split_across_processes_fire_on_time(
    start_daemon: Any, kafka_bootstrap: str, topic: str
) -> None:
    """Triggers made through an api-only process reach a scheduler-only process by its
    reconcile (the default interval), in time for occurrences due 2 s after creation."""
    env = {"TRIGGERD_SCHEDULER_RECONCILE_INTERVAL": "1s"}  # the default, not the tests' 0.5 s
    front, back = start_daemon(roles="api", env=env), start_daemon(roles="scheduler", env=env)
    await asyncio.gather(front.wait_healthy(), back.wait_healthy())
    created = []
    for n in range(5):
        body = {"name": f"once-{n}", "type": "time_scheduled",
                "config": {"run_in": "2s", "endpoint": ENDPOINT}}  # fmt: skip
        created.append((await api(front, "POST", TRIGGERS, body))["id"])
        await asyncio.sleep(0.23)  # spread over a reconcile period
    jobs = await read_jobs(kafka_bootstrap, topic, count=5, timeout=10)
    assert sorted(job["trigger_id"] for job in jobs) == sorted(created)
    late = [j["_timestamp"] - ms(j["scheduled_for"]) for j in jobs]
    assert all(0 <= delay < 1000 for delay in late), late
    for daemon in (front, back):
        assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()


async def _just_before_a_second(ms_before: int) -> None:
    """Sleep until `ms_before` milliseconds before the next whole second."""
    now = utcnow()
    target = now.replace(microsecond=0) + timedelta(seconds=1, milliseconds=-ms_before)
    if target <= now:
        target += timedelta(seconds=1)
    await asyncio.sleep((target - now).total_seconds())


@pytest.mark.parametrize("change", ["deactivate", "reschedule", "delete"])
async def test_no_firing_after_a_change_was_answered(
    start_daemon: Any, db: Database, change: str
) -> None:
    """A change that lands just before an occurrence is due (after the scheduler's last
    look at it) cannot stop that firing any more: the API answers only once it fired,
    so no event of the old schedule ever follows the answer."""
    daemon = start_daemon(roles="api,scheduler")
    await daemon.wait_healthy()
    triggers = await every_second(daemon, 4)
    await wait_until(lambda: _all_fired_until(db, triggers, utcnow() - timedelta(seconds=1)),
                     timeout=15, what="firing")  # fmt: skip
    answered = {}
    for trigger_id, ms_before in zip(triggers, (120, 250, 380, 450), strict=True):
        await _just_before_a_second(ms_before)
        path = f"{TRIGGERS}/{trigger_id}"
        if change == "deactivate":
            await api(daemon, "PATCH", path, {"status": "inactive"})
        elif change == "reschedule":
            await api(daemon, "PATCH", path,
                      {"config": {"cron": "0 0 1 1 *", "endpoint": ENDPOINT}})  # fmt: skip
        else:
            await api(daemon, "DELETE", path)
        answered[trigger_id] = utcnow()
    await asyncio.sleep(2.5)  # two more due times: nothing of the old schedule may fire
    for trigger_id, at in answered.items():
        after = [e for e in await event_rows(db, trigger_id) if e["fired_at"] >= at]
        assert after == [], (change, after)
        rows = await schedule_rows(db, trigger_id)
        pending = [r for r in rows if r["status"] in ("pending", "processing")]
        if change == "reschedule":  # only the new schedule's next occurrence
            assert [r["fire_at"].month for r in pending] == [1], pending
        else:
            assert pending == [], pending
        if change != "delete":  # every cancellation says why, whoever wrote it
            cancelled = [r for r in rows if r["status"] == "cancelled"]
            assert cancelled and all(r["note"] for r in cancelled), cancelled
    assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()


async def _just_before_an_even_second(ms_before: int) -> None:
    await _just_before_a_second(ms_before)
    if utcnow().second % 2 == 0:  # the next whole second is odd: wait one more
        await _just_before_a_second(ms_before)


async def test_a_change_onto_the_held_occurrence_keeps_the_schedule(
    start_daemon: Any, db: Database
) -> None:
    """Every second → every even second, changed just before an even second: that
    occurrence (past the scheduler's last look) is on both schedules. It fires once, and
    the new schedule goes on after it; the trigger is never left without a next run."""
    daemon = start_daemon(roles="api,scheduler")
    await daemon.wait_healthy()
    triggers = await every_second(daemon, 3)
    await wait_until(lambda: _all_fired_until(db, triggers, utcnow() - timedelta(seconds=1)),
                     timeout=15, what="firing")  # fmt: skip
    new_config = {"cron": "*/2 * * * * *", "endpoint": ENDPOINT}
    answered = {}
    for trigger_id, ms_before in zip(triggers, (150, 300, 450), strict=True):
        await _just_before_an_even_second(ms_before)
        body = await api(daemon, "PATCH", f"{TRIGGERS}/{trigger_id}", {"config": new_config})
        assert body["next_scheduled_run"] is not None, body
        answered[trigger_id] = (utcnow(), parse_iso_utc(body["next_scheduled_run"]))
    await asyncio.sleep(4.5)  # two more even seconds
    for trigger_id, (at, next_run) in answered.items():
        fired = [e["scheduled_for"] for e in await event_rows(db, trigger_id)
                 if e["fired_at"] >= at]  # fmt: skip
        assert len(fired) >= 2 and all(t.second % 2 == 0 for t in fired), fired
        assert fired[0] == next_run, (fired, next_run)
        assert len(fired) == len(set(fired)), fired
        rows = await schedule_rows(db, trigger_id)
        assert [r for r in rows if r["status"] in ("pending", "processing")], rows
    assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()

"""Jitter and misfire policies on the real stack: `triggerd run` subprocesses (API and
scheduler) on MariaDB and the broker. What `upcoming` shows is what fires; a scheduler
stopped for a few seconds fires per policy after it, and lists the rest missed; two
schedulers fire nothing twice, jittered or catching up."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from tests.factories import ENDPOINT, ms
from tests.support import Daemon, read_jobs, wait_until
from triggerd.domain.timeutil import from_db, parse_iso_utc, utcnow
from triggerd.store.db import Database

TRIGGERS = "/api/v1/triggers"
DOWNTIME = "missed while no scheduler ran"


async def call(daemon: Daemon, method: str, path: str, body: Any = None,
               **params: str) -> dict[str, Any]:  # fmt: skip
    async with aiohttp.ClientSession() as http, http.request(
        method, f"{daemon.url}{path}", json=body, params=params or None
    ) as resp:
        assert resp.status < 300, await resp.text()
        return dict(await resp.json())


async def create(daemon: Daemon, cron: str, **config: Any) -> str:
    body = {"name": "steered", "type": "cron_scheduled",
            "config": {"cron": cron, "endpoint": ENDPOINT, **config}}  # fmt: skip
    return str((await call(daemon, "POST", TRIGGERS, body))["id"])


async def history(db: Database, trigger_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT s.scheduled_for, s.fire_at, s.status, s.note, e.id AS event_id,"
        " e.note AS event_note FROM trigger_schedules s LEFT JOIN event_logs e"
        " ON e.id = s.event_id WHERE s.trigger_id = %(t)s ORDER BY s.scheduled_for",
        {"t": trigger_id},
    )  # fmt: skip
    for row in rows:
        row["scheduled_for"], row["fire_at"] = from_db(row["scheduled_for"]), from_db(
            row["fire_at"])  # fmt: skip
    return rows


async def fired_until(db: Database, triggers: list[str], until: datetime) -> bool:
    rows = await db.fetchall(
        "SELECT trigger_id, MAX(scheduled_for) AS last FROM event_logs GROUP BY trigger_id")
    last = {row["trigger_id"]: from_db(row["last"]) for row in rows}
    return all((last.get(t) or until - timedelta(days=1)) >= until for t in triggers)


def no_job_twice(jobs: list[dict[str, Any]]) -> None:
    per_event = Counter(job["event_id"] for job in jobs)
    assert max(per_event.values(), default=1) == 1, "an event published twice"
    per_occurrence = Counter((job["trigger_id"], job["scheduled_for"]) for job in jobs)
    assert max(per_occurrence.values(), default=1) == 1, "an occurrence published twice"


async def test_upcoming_is_what_fires_with_jitter_across_two_schedulers(
    start_daemon: Any, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    env = {"TRIGGERD_SCHEDULER_BATCH_SIZE": "2"}  # small claims: both processes get rows
    daemons = [start_daemon(roles="api,scheduler", env=env),
               start_daemon(roles="scheduler", env=env)]  # fmt: skip
    await asyncio.gather(*(d.wait_healthy() for d in daemons))
    every_second = [await create(daemons[0], "* * * * * *", jitter_seconds=0.9)
                    for _ in range(4)]  # fmt: skip
    every_other = await create(daemons[0], "*/2 * * * * *", jitter_seconds=1.9)
    triggers = [*every_second, every_other]
    expected: dict[str, list[dict[str, Any]]] = {}
    for trigger_id in triggers:
        reply = await call(daemons[0], "GET", f"{TRIGGERS}/{trigger_id}/upcoming", count="5")
        expected[trigger_id] = reply["occurrences"]
    last = max(parse_iso_utc(o["scheduled_for"]) for found in expected.values() for o in found)
    await wait_until(lambda: fired_until(db, triggers, last), timeout=25, what="upcoming fired")
    for daemon in daemons:
        assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()

    jobs = await read_jobs(kafka_bootstrap, topic, count=10_000, timeout=3)
    no_job_twice(jobs)
    for trigger_id, upcoming in expected.items():
        fired = {job["scheduled_for"]: job for job in jobs if job["trigger_id"] == trigger_id}
        offsets = set()
        for occurrence in upcoming:
            job = fired[occurrence["scheduled_for"]]  # every upcoming occurrence fired
            fire_at = ms(occurrence["fire_at"])
            offsets.add(fire_at - ms(occurrence["scheduled_for"]))
            # published at its jittered time, not its nominal one
            assert 0 <= job["_timestamp"] - fire_at < 1000, (occurrence, job["_timestamp"])
        assert len(offsets) > 1  # jitter differs between occurrences
        rows = {row["scheduled_for"]: row for row in await history(db, trigger_id)}
        for occurrence in upcoming:
            row = rows[parse_iso_utc(occurrence["scheduled_for"])]
            assert row["status"] == "completed" and row["fire_at"] == parse_iso_utc(
                occurrence["fire_at"])  # fmt: skip


async def test_after_downtime_each_policy_fires_what_it_says(
    start_daemon: Any, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    first = start_daemon(roles="api,scheduler")
    await first.wait_healthy()
    skip = await create(first, "* * * * * *", misfire_policy="skip")
    latest = await create(first, "* * * * * *", misfire_policy="latest", jitter_seconds=0.5)
    catch_up = await create(first, "* * * * * *", misfire_policy="all",
                            catchup_window_seconds=3, jitter_seconds=0.3)  # fmt: skip
    everything = await create(first, "*/2 * * * * *", misfire_policy="all")
    triggers = [skip, latest, catch_up, everything]
    running = utcnow() + timedelta(seconds=2)
    await wait_until(lambda: fired_until(db, triggers, running), timeout=15, what="firing")
    assert await asyncio.to_thread(first.terminate) == 0, first.logs()
    stopped = utcnow()
    await asyncio.sleep(5)
    # Two schedulers recover together: the catch-ups must not fire anything twice.
    env = {"TRIGGERD_SCHEDULER_BATCH_SIZE": "2"}
    second = [start_daemon(roles="api,scheduler", env=env),
              start_daemon(roles="scheduler", env=env)]  # fmt: skip
    await asyncio.gather(*(d.wait_healthy() for d in second))
    restarted = utcnow()
    await wait_until(lambda: fired_until(db, triggers, restarted + timedelta(seconds=3)),
                     timeout=20, what="firing after the restart")  # fmt: skip
    metrics = [await _metrics(d) for d in second]
    for daemon in second:
        assert await asyncio.to_thread(daemon.terminate) == 0, daemon.logs()

    jobs = await read_jobs(kafka_bootstrap, topic, count=10_000, timeout=3)
    no_job_twice(jobs)
    found = {t: await history(db, t) for t in triggers}
    for trigger_id, rows in found.items():
        settled = [r for r in rows if r["status"] in ("completed", "missed")]
        # every occurrence from the first to the last settled one has a row: fired or missed
        step = 2 if trigger_id == everything else 1
        seconds = [round((r["scheduled_for"] - settled[0]["scheduled_for"]).total_seconds())
                   for r in settled]  # fmt: skip
        assert seconds == list(range(0, step * len(settled), step)), (trigger_id, seconds)
        assert all(r["event_id"] for r in settled if r["status"] == "completed")
        jobs_of = {j["scheduled_for"] for j in jobs if j["trigger_id"] == trigger_id}
        assert len(jobs_of) == len([r for r in settled if r["status"] == "completed"])

    def during(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The occurrences due while no scheduler ran."""
        return [r for r in rows if stopped < r["scheduled_for"] <= restarted - timedelta(
            seconds=1)]  # fmt: skip

    def caught_up(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if (r["event_note"] or "").startswith("fired after downtime")]

    missed = {t: [r for r in rows if r["status"] == "missed"] for t, rows in found.items()}
    # skip: nothing of the downtime fired; all of it is listed missed
    assert caught_up(found[skip]) == []
    assert all(r["status"] == "missed" for r in during(found[skip]))
    assert len(missed[skip]) >= 4 and all(DOWNTIME in r["note"] for r in missed[skip])
    # latest: the most recent one fired, once, saying how many it skipped
    [latest_fired] = caught_up(found[latest])
    assert all(r["scheduled_for"] < latest_fired["scheduled_for"] for r in missed[latest])
    assert len(missed[latest]) >= 4
    assert f"{len(missed[latest])} missed occurrence(s) skipped" in latest_fired["event_note"]
    # all, 3 s window: the last ~3 s of the downtime fired one by one, older ones missed
    window = caught_up(found[catch_up])
    assert 2 <= len(window) <= 5, window
    assert len(missed[catch_up]) >= 2
    assert max(r["scheduled_for"] for r in missed[catch_up]) < min(
        r["scheduled_for"] for r in window)  # fmt: skip
    assert all("catchup_window_seconds" in r["note"] for r in missed[catch_up])
    # all, default window (an hour): every occurrence of the downtime fired
    assert missed[everything] == []
    assert len(caught_up(found[everything])) >= 2
    policies = Counter[str]()
    for sample in metrics:
        policies.update(sample)
    assert policies["skip"] >= 4 and policies["latest"] >= 4 and policies["all"] >= 2, policies


async def _metrics(daemon: Daemon) -> Counter[str]:
    """triggerd_missed_occurrences_total by policy."""
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("triggerd_missed_occurrences_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('policy="')[1].split('"')[0]] += int(float(value))
    return found

"""Backfill through the HTTP API (`triggerd run --roles api`, real MariaDB and broker):
each occurrence fires once, with the scheduler's event id and `source: backfill`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.api_daemon import URL, ApiDaemon, api_daemon
from tests.support import read_jobs
from triggerd.domain.models import occurrence_event_id
from triggerd.domain.timeutil import from_db, parse_iso_utc, to_db, to_iso, utcnow

BASE = "/api/v1/triggers"


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("api")) as running:
        yield running


async def create(api: ApiDaemon, kind: str, **config: Any) -> dict[str, Any]:
    reply = await api.client.post(BASE, {"name": "b", "type": kind,
                                         "config": {"endpoint": URL, **config}})  # fmt: skip
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def backfill(api: ApiDaemon, trigger_id: str, since: Any, until: Any) -> Any:
    return await api.client.post(f"{BASE}/{trigger_id}/backfill",
                                 {"since": to_iso(since) if hasattr(since, "tzinfo") else since,
                                  "until": to_iso(until) if hasattr(until, "tzinfo") else until})


def jobs_of(api: ApiDaemon, trigger_id: str, count: int) -> Any:
    return read_jobs(api.daemon.env["TRIGGERD_KAFKA_BOOTSTRAP"],
                     api.daemon.env["TRIGGERD_KAFKA_TOPIC"], count=count, timeout=10,
                     match=lambda job: job["trigger_id"] == trigger_id)  # fmt: skip


async def test_backfill_fires_each_occurrence_once(api: ApiDaemon) -> None:
    trigger = await create(api, "cron_scheduled", cron="*/10 * * * *", payload={"p": 1},
                           jitter_seconds=300)  # fmt: skip
    until = utcnow().replace(minute=0, second=0, microsecond=0)
    since = until - timedelta(hours=1)
    reply = await backfill(api, trigger["id"], since, until)
    assert reply.status == 202, reply.body
    expected = [since + timedelta(minutes=10 * n) for n in range(6)]
    ids = [occurrence_event_id(trigger["id"], when) for when in expected]
    assert reply.body == {"occurrences": 6, "fired": ids, "already_fired": 0}

    jobs = await jobs_of(api, trigger["id"], 6)
    assert sorted(j["event_id"] for j in jobs) == sorted(ids)
    assert {j["source"] for j in jobs} == {"backfill"} and {j["attempt"] for j in jobs} == {1}
    assert sorted(j["scheduled_for"] for j in jobs) == [to_iso(when) for when in expected]
    assert all(j["payload"] == {"p": 1} for j in jobs)

    events = await api.client.get("/api/v1/events", trigger_id=trigger["id"], source="backfill")
    assert events.status == 200
    assert sorted(e["id"] for e in events.body["events"]) == sorted(ids)
    assert {e["note"] for e in events.body["events"]} == {"backfill"}

    history = await api.client.get(f"{BASE}/{trigger['id']}/occurrences", outcome="fired")
    fired = history.body["occurrences"]
    assert [o["scheduled_for"] for o in fired] == [to_iso(w) for w in reversed(expected)]
    assert all(o["fire_at"] == o["scheduled_for"] for o in fired)  # no jitter
    assert {o["event_id"] for o in fired} == set(ids)

    again = await backfill(api, trigger["id"], since, until)
    assert again.status == 202
    assert again.body == {"occurrences": 6, "fired": [], "already_fired": 6}
    wider = await backfill(api, trigger["id"], since - timedelta(minutes=20), until)
    assert wider.body["occurrences"] == 8 and wider.body["already_fired"] == 6
    assert wider.body["fired"] == [occurrence_event_id(trigger["id"], since - timedelta(
        minutes=m)) for m in (20, 10)]  # fmt: skip
    assert len(await jobs_of(api, trigger["id"], 9)) == 8  # nothing fired twice


async def test_occurrences_the_scheduler_fired_count_as_already_fired(api: ApiDaemon) -> None:
    trigger = await create(api, "cron_scheduled", cron="0 * * * *", timezone="Asia/Kolkata")
    hour = utcnow().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    assert hour.astimezone().utcoffset() is not None
    # The scheduler fired the occurrence an hour ago (its event is kept); one before it
    # was missed during a downtime.
    fired_id = occurrence_event_id(trigger["id"], hour)
    await api.db.execute(
        "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source, payload,"
        " scheduled_for, fired_at, execution_status, created_at) VALUES (%(id)s, %(t)s, 'b',"
        " 'cron_scheduled', 'scheduler', '{}', %(at)s, %(at)s, 'success', %(at)s)",
        {"id": fired_id, "t": trigger["id"], "at": to_db(hour)},
    )  # fmt: skip
    earlier = hour - timedelta(hours=1)
    await api.db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, note,"
        " created_at, updated_at) VALUES (%(t)s, %(at)s, %(at)s, 'missed', 'missed', %(at)s,"
        " %(at)s)", {"t": trigger["id"], "at": to_db(earlier)},
    )  # fmt: skip
    reply = await backfill(api, trigger["id"], earlier, hour + timedelta(minutes=1))
    assert reply.status == 202, reply.body
    assert reply.body == {"occurrences": 2, "already_fired": 1,
                          "fired": [occurrence_event_id(trigger["id"], earlier)]}  # fmt: skip
    history = (await api.client.get(f"{BASE}/{trigger['id']}/occurrences")).body["occurrences"]
    was_missed = next(o for o in history if o["scheduled_for"] == to_iso(earlier))
    assert was_missed["outcome"] == "fired" and was_missed["note"] == "backfill"
    # Naive times are read in the trigger's zone (India: +05:30, no DST).
    local = (earlier + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    same = await backfill(api, trigger["id"], local, to_iso(hour + timedelta(minutes=1)))
    assert same.body == {"occurrences": 2, "already_fired": 2, "fired": []}


async def test_interval_backfill_reaches_before_the_first_run(api: ApiDaemon) -> None:
    trigger = await create(api, "interval_scheduled", interval_seconds=45)
    first = parse_iso_utc(trigger["config"]["first_run_at"])
    until = utcnow()
    reply = await backfill(api, trigger["id"], until - timedelta(minutes=5), until)
    assert reply.status == 202, reply.body
    assert reply.body["occurrences"] == len(reply.body["fired"]) in (6, 7)
    rows = await api.db.fetchall(
        "SELECT scheduled_for FROM event_logs WHERE trigger_id = %(t)s ORDER BY scheduled_for",
        {"t": trigger["id"]},
    )  # fmt: skip
    times = [from_db(r["scheduled_for"]) for r in rows]
    for when in times:
        assert when is not None and when < first  # k < 0
        assert (first - when).total_seconds() % 45 == 0
        assert until - timedelta(minutes=5) <= when < until


async def test_an_inactive_trigger_can_be_backfilled(api: ApiDaemon) -> None:
    trigger = await create(api, "cron_scheduled", cron="*/30 * * * *")
    assert (await api.client.patch(f"{BASE}/{trigger['id']}", {"status": "inactive"})).status == 200
    now = utcnow()
    reply = await backfill(api, trigger["id"], now - timedelta(hours=1), now)
    assert reply.status == 202 and reply.body["occurrences"] == 2, reply.body


async def test_backfill_refuses_bad_ranges(api: ApiDaemon) -> None:
    trigger = await create(api, "cron_scheduled", cron="* * * * *")
    now = utcnow()
    path = f"{BASE}/{trigger['id']}/backfill"
    cases: list[tuple[Any, str]] = [
        ({"since": to_iso(now - timedelta(hours=17)), "until": to_iso(now)}, "until"),
        ({"since": to_iso(now - timedelta(hours=1)), "until": to_iso(now + timedelta(
            minutes=1))}, "until"),
        ({"since": to_iso(now), "until": to_iso(now - timedelta(hours=1))}, "since"),
        ({"until": to_iso(now)}, "since"),
        ({"since": to_iso(now)}, "until"),
        ({"since": "last week", "until": to_iso(now)}, "since"),
        ({"since": to_iso(now), "until": 5}, "until"),
        ({"since": to_iso(now), "until": to_iso(now), "count": 3}, "count"),
        ([1, 2], "body"),
    ]  # fmt: skip
    for data, field in cases:
        reply = await api.client.post(path, data)
        assert reply.status == 400 and reply.field == field, (data, reply.body)
    exactly = await backfill(api, trigger["id"], now - timedelta(minutes=1000), now)
    assert exactly.status == 202 and exactly.body["occurrences"] == 1000
    empty = await backfill(api, trigger["id"], now, now)
    assert empty.body == {"occurrences": 0, "fired": [], "already_fired": 0}


async def test_backfill_of_other_types_or_unknown_triggers(api: ApiDaemon) -> None:
    now = utcnow()
    span = {"since": to_iso(now - timedelta(hours=1)), "until": to_iso(now)}
    webhook = await create(api, "webhook")
    one_time = await create(api, "time_scheduled", run_in="1h")
    for trigger in (webhook, one_time):
        reply = await api.client.post(f"{BASE}/{trigger['id']}/backfill", span)
        assert reply.status == 409 and reply.error["code"] == "not_backfillable", reply.body
    for trigger_id in (str(uuid.uuid4()), "nope"):
        reply = await api.client.post(f"{BASE}/{trigger_id}/backfill", span)
        assert reply.status == 404
    malformed = await api.client.post(f"{BASE}/{webhook['id']}/backfill", data=b"{",
                                      headers={"Content-Type": "application/json"})  # fmt: skip
    assert malformed.status == 400


async def test_concurrent_backfills_fire_each_occurrence_once(api: ApiDaemon) -> None:
    trigger = await create(api, "cron_scheduled", cron="* * * * *")
    now = utcnow()
    replies = await asyncio.gather(*(backfill(api, trigger["id"], now - timedelta(minutes=30),
                                              now) for _ in range(4)))  # fmt: skip
    assert all(r.status == 202 for r in replies), [r.body for r in replies]
    fired = [event for r in replies for event in r.body["fired"]]
    assert len(fired) == len(set(fired)) == 30
    assert sorted(r.body["already_fired"] for r in replies) == [0, 30, 30, 30]


async def test_backfill_jobs_carry_a_trace_and_year_one_is_a_400(api: ApiDaemon) -> None:
    """Every backfilled firing starts a trace of its own, carried in its Kafka record's
    `traceparent` header; a `since` at the start of the calendar is a 400, not a
    500."""
    trigger = await create(api, "cron_scheduled", cron="*/30 * * * *",
                           timezone="Pacific/Kiritimati")  # fmt: skip
    until = utcnow().replace(minute=0, second=0, microsecond=0)
    reply = await backfill(api, trigger["id"], until - timedelta(hours=1), until)
    assert reply.status == 202 and reply.body["occurrences"] == 2, reply.body
    jobs = await jobs_of(api, trigger["id"], 2)
    parents = [job["_headers"].get("traceparent") for job in jobs]
    assert len(jobs) == 2 and all(parents), parents
    assert len({parent.split("-")[1] for parent in parents}) == 2  # a trace each
    for since in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00"):
        reply = await backfill(api, trigger["id"], since, "0002-01-01T00:00:00Z")
        assert reply.status == 400 and reply.field == "since", reply.body


async def _pending_at(api: ApiDaemon, trigger_id: str, scheduled_for: Any, fire_at: Any) -> None:
    """Move the trigger's pending occurrence (this daemon runs no scheduler)."""
    changed = await api.db.execute(
        "UPDATE trigger_schedules SET scheduled_for = %s, fire_at = %s"
        " WHERE trigger_id = %s AND status = 'pending'",
        [to_db(scheduled_for), to_db(fire_at), trigger_id],
    )  # fmt: skip
    assert changed == 1


async def _events(api: ApiDaemon, trigger_id: str) -> set[str]:
    rows = await api.db.fetchall("SELECT id FROM event_logs WHERE trigger_id = %s", [trigger_id])
    return {row["id"] for row in rows}


async def test_an_occurrence_held_back_by_its_jitter_is_left_to_the_scheduler(
    api: ApiDaemon,
) -> None:
    """Due by its nominal time, not yet by its jittered one: the scheduler fires it at its
    fire_at, once; a backfill does not fire it a second time."""
    first = utcnow().replace(microsecond=0) + timedelta(seconds=30)
    trigger = await create(api, "interval_scheduled", interval_seconds=60,
                           start_at=to_iso(first), jitter_seconds=59)  # fmt: skip
    held = first - timedelta(seconds=60)  # nominally 30 s ago
    await _pending_at(api, trigger["id"], held, utcnow() + timedelta(seconds=50))
    reply = await backfill(api, trigger["id"], first - timedelta(seconds=180), utcnow())
    assert reply.status == 202, reply.body
    earlier = [first - timedelta(seconds=s) for s in (180, 120)]
    assert reply.body["fired"] == [occurrence_event_id(trigger["id"], w) for w in earlier]
    assert reply.body["occurrences"] == 3 and reply.body["already_fired"] == 0
    assert occurrence_event_id(trigger["id"], held) not in await _events(api, trigger["id"])
    row = await api.db.fetchone(
        "SELECT status, event_id FROM trigger_schedules WHERE trigger_id = %s"
        " AND scheduled_for = %s", [trigger["id"], to_db(held)])  # fmt: skip
    assert row == {"status": "pending", "event_id": None}


async def test_behind_a_scheduler_that_was_down_a_backfill_leaves_the_way_free(
    api: ApiDaemon,
) -> None:
    """The scheduler's next occurrence is three minutes old (it was down): what a backfill
    fires after it gets no occurrence row, so the scheduler's catch-up walks on through
    them (a row there would end its chain) instead of stopping for good."""
    first = utcnow().replace(microsecond=0) + timedelta(seconds=30)
    trigger = await create(api, "interval_scheduled", interval_seconds=60,
                           start_at=to_iso(first), misfire_policy="all")  # fmt: skip
    stale = first - timedelta(seconds=180)
    await _pending_at(api, trigger["id"], stale, stale)
    reply = await backfill(api, trigger["id"], stale, utcnow())
    assert reply.status == 202, reply.body
    later = [first - timedelta(seconds=s) for s in (120, 60)]
    assert reply.body["fired"] == [occurrence_event_id(trigger["id"], w) for w in later]
    assert reply.body["occurrences"] == 3 and reply.body["already_fired"] == 0
    rows = await api.db.fetchall(
        "SELECT scheduled_for, status FROM trigger_schedules WHERE trigger_id = %s"
        " ORDER BY scheduled_for", [trigger["id"]])  # fmt: skip
    assert [(from_db(r["scheduled_for"]), r["status"]) for r in rows] == [(stale, "pending")]

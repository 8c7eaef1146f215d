"""Upcoming runs, preview and the occurrence history through the HTTP API (`triggerd run
--roles api` on a real MariaDB; schedule rows checked and crafted straight in the table)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.integration.api_daemon import URL, ApiDaemon, api_daemon
from triggerd.domain.enums import Outcome
from triggerd.domain.occurrences import due_at
from triggerd.domain.timeutil import from_db, parse_iso_utc, to_db, to_iso, utcnow
from triggerd.store.db import Database
from triggerd.store.occurrences import HISTORY_COUNT, HISTORY_ROWS, PENDING, OccurrenceFilter

BASE = "/api/v1/triggers"


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("api")) as running:
        yield running


def cron(expr: str = "0 * * * *", **config: Any) -> dict[str, Any]:
    return {"name": "c", "type": "cron_scheduled",
            "config": {"endpoint": URL, "cron": expr, **config}}  # fmt: skip


async def create(api: ApiDaemon, data: dict[str, Any]) -> dict[str, Any]:
    reply = await api.client.post(BASE, data)
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def rows(db: Database, trigger_id: str) -> list[dict[str, Any]]:
    return await db.fetchall(
        "SELECT scheduled_for, fire_at, status, note FROM trigger_schedules"
        " WHERE trigger_id = %(id)s ORDER BY scheduled_for", {"id": trigger_id},
    )  # fmt: skip


# --- upcoming ------------------------------------------------------------------------------


async def test_upcoming_lists_local_times_with_their_offsets(api: ApiDaemon) -> None:
    trigger = await create(api, cron("30 9 * * *", timezone="America/New_York"))
    reply = await api.client.get(f"{BASE}/{trigger['id']}/upcoming")
    assert reply.status == 200, reply.body
    assert reply.body["trigger_id"] == trigger["id"]
    assert reply.body["timezone"] == "America/New_York"
    found = reply.body["occurrences"]
    assert len(found) == 10
    for item in found:
        local = datetime.fromisoformat(item["local"])
        assert (local.hour, local.minute) == (9, 30)
        assert local.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
        assert parse_iso_utc(item["scheduled_for"]) == local
        assert item["fire_at"] == item["scheduled_for"]  # no jitter
    assert found[0]["scheduled_for"] == trigger["next_scheduled_run"]
    three = await api.client.get(f"{BASE}/{trigger['id']}/upcoming", count="3")
    assert three.body["occurrences"] == found[:3]
    hundred = await api.client.get(f"{BASE}/{trigger['id']}/upcoming", count="100")
    assert len(hundred.body["occurrences"]) == 100


async def test_upcoming_with_jitter_is_what_the_schedule_rows_hold(api: ApiDaemon) -> None:
    trigger = await create(api, cron("*/5 * * * *", jitter_seconds=240))
    assert trigger["config"]["jitter_seconds"] == 240
    found = (await api.client.get(f"{BASE}/{trigger['id']}/upcoming", count="50")).body
    offsets = set()
    for item in found["occurrences"]:
        offset = parse_iso_utc(item["fire_at"]) - parse_iso_utc(item["scheduled_for"])
        assert timedelta(0) <= offset < timedelta(seconds=240)
        offsets.add(offset)
    assert len(offsets) > 40
    [pending] = await rows(api.db, trigger["id"])
    first = found["occurrences"][0]
    assert to_iso(from_db(pending["scheduled_for"])) == first["scheduled_for"]
    assert to_iso(from_db(pending["fire_at"])) == first["fire_at"]
    again = (await api.client.get(f"{BASE}/{trigger['id']}/upcoming", count="50")).body
    assert again == found  # the same offsets, every time


async def test_upcoming_is_empty_for_webhook_inactive_and_fired_one_time(api: ApiDaemon) -> None:
    webhook = await create(api, {"name": "w", "type": "webhook"})
    inactive = await create(api, {**cron(), "status": "inactive"})
    one_time = await create(api, {"name": "o", "type": "time_scheduled",
                                  "config": {"endpoint": URL, "run_in": "1h",
                                             "timezone": "Asia/Tokyo"}})  # fmt: skip
    for trigger in (webhook, inactive):
        reply = await api.client.get(f"{BASE}/{trigger['id']}/upcoming")
        assert reply.status == 200 and reply.body["occurrences"] == [], reply.body
    pending = (await api.client.get(f"{BASE}/{one_time['id']}/upcoming")).body
    assert pending["timezone"] == "Asia/Tokyo"
    assert [o["scheduled_for"] for o in pending["occurrences"]] == [one_time["config"]["run_at"]]
    assert pending["occurrences"][0]["local"].endswith("+09:00")
    # Fired (as the scheduler leaves it): its time has passed, its occurrence completed.
    past = utcnow() - timedelta(minutes=1)
    await api.db.execute("UPDATE triggers SET config = JSON_SET(config, '$.run_at', %(at)s)"
                         " WHERE id = %(id)s", {"at": to_iso(past), "id": one_time["id"]})
    await api.db.execute("UPDATE trigger_schedules SET status = 'completed',"
                         " scheduled_for = %(at)s, fire_at = %(at)s WHERE trigger_id = %(id)s",
                         {"at": to_db(past), "id": one_time["id"]})  # fmt: skip
    fired = (await api.client.get(f"{BASE}/{one_time['id']}/upcoming")).body
    assert fired["occurrences"] == []


@pytest.mark.parametrize("count", ["0", "101", "-1", "ten", "1.5", "1e2"])
async def test_upcoming_count_out_of_range_is_a_400(api: ApiDaemon, count: str) -> None:
    trigger = await create(api, cron())
    reply = await api.client.get(f"{BASE}/{trigger['id']}/upcoming", count=count)
    assert reply.status == 400 and reply.field == "count", reply.body


async def test_upcoming_of_unknown_or_malformed_ids_is_a_404(api: ApiDaemon) -> None:
    for trigger_id in (str(uuid.uuid4()), "nope"):
        for what in ("upcoming", "occurrences"):
            reply = await api.client.get(f"{BASE}/{trigger_id}/{what}")
            assert reply.status == 404 and reply.error["code"] == "not_found"


# --- preview -------------------------------------------------------------------------------


async def test_preview_shows_a_definition_and_saves_nothing(api: ApiDaemon) -> None:
    before = await api.db.fetchone("SELECT COUNT(*) AS n FROM triggers")
    schedules = await api.db.fetchone("SELECT COUNT(*) AS n FROM trigger_schedules")
    definition = cron("0 2 * * *", timezone="Europe/Berlin")
    reply = await api.client.post(f"{BASE}/preview", {**definition, "count": 4})
    assert reply.status == 200, reply.body
    assert reply.body["trigger_id"] is None and reply.body["timezone"] == "Europe/Berlin"
    assert len(reply.body["occurrences"]) == 4
    assert all(o["local"][11:19] == "02:00:00" for o in reply.body["occurrences"])
    assert await api.db.fetchone("SELECT COUNT(*) AS n FROM triggers") == before
    assert await api.db.fetchone("SELECT COUNT(*) AS n FROM trigger_schedules") == schedules
    # The same definition created now has the same occurrences.
    created = await create(api, cron("0 2 * * *", timezone="Europe/Berlin"))
    upcoming = (await api.client.get(f"{BASE}/{created['id']}/upcoming", count="4")).body
    assert [o["scheduled_for"] for o in upcoming["occurrences"]] == [
        o["scheduled_for"] for o in reply.body["occurrences"]]
    default = await api.client.post(f"{BASE}/preview", cron())
    assert len(default.body["occurrences"]) == 10
    inactive = await api.client.post(f"{BASE}/preview", {**cron(), "status": "inactive"})
    assert inactive.status == 200 and inactive.body["occurrences"] == []


async def test_preview_of_an_interval_starts_one_interval_from_now(api: ApiDaemon) -> None:
    started = utcnow()
    reply = await api.client.post(f"{BASE}/preview", {
        "name": "i", "type": "interval_scheduled", "count": 3,
        "config": {"endpoint": URL, "interval_seconds": 90}})  # fmt: skip
    assert reply.status == 200, reply.body
    times = [parse_iso_utc(o["scheduled_for"]) for o in reply.body["occurrences"]]
    assert reply.body["timezone"] == "UTC"
    assert started + timedelta(seconds=90) <= times[0] <= utcnow() + timedelta(seconds=90)
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(seconds=90)] * 2


@pytest.mark.parametrize("body, field", [
    (cron("61 * * * *"), "config.cron"),
    (cron(timezone="Mars/Olympus"), "config.timezone"),
    ({"name": "x", "type": "cron_scheduled"}, "config"),
    ({"type": "cron_scheduled", "config": {"endpoint": URL, "cron": "* * * * *"}}, "name"),
    ({**cron(), "count": 0}, "count"),
    ({**cron(), "count": 101}, "count"),
    ({**cron(), "count": "5"}, "count"),
    ({**cron(), "bogus": 1}, "bogus"),
    (cron("*/5 * * * *", jitter_seconds=300), "config.jitter_seconds"),
    (cron(jitter_seconds=3601), "config.jitter_seconds"),
    (cron(jitter_seconds=-1), "config.jitter_seconds"),
    (cron(jitter_seconds="5"), "config.jitter_seconds"),
    (cron(misfire_policy="sometimes"), "config.misfire_policy"),
    (cron(catchup_window_seconds=604801), "config.catchup_window_seconds"),
    (cron(endpoint="http://10.0.0.1/hook"), "config.endpoint"),
    (cron(endpoint="http://169.254.169.254/latest"), "config.endpoint"),
    (cron(payload="x" * 1_048_350), "config.payload"),  # a Kafka job over the 1 MiB default
    (cron(catchup_window_seconds=0), "config.catchup_window_seconds"),
    ({"name": "i", "type": "interval_scheduled",
      "config": {"endpoint": URL, "interval_seconds": 60, "jitter_seconds": 60}},
     "config.jitter_seconds"),
    ({"name": "t", "type": "time_scheduled",
      "config": {"endpoint": URL, "run_in": "1h", "jitter_seconds": 5}}, "config.jitter_seconds"),
])  # fmt: skip
async def test_preview_refuses_what_create_refuses(
    api: ApiDaemon, body: dict[str, Any], field: str
) -> None:
    reply = await api.client.post(f"{BASE}/preview", body)
    assert reply.status == 400 and reply.field == field, reply.body
    if field != "count":
        created = await api.client.post(BASE, body)
        assert created.status == 400 and created.field == field, created.body


async def test_preview_answers_malformed_bodies_like_create(api: ApiDaemon) -> None:
    bad = await api.client.post(f"{BASE}/preview", data=b"{", headers={
        "Content-Type": "application/json"})  # fmt: skip
    assert bad.status == 400 and bad.error["code"] == "malformed_json"
    wrong = await api.client.post(f"{BASE}/preview", data=b"x", headers={
        "Content-Type": "text/plain"})  # fmt: skip
    assert wrong.status == 415
    assert (await api.client.post(f"{BASE}/preview", [1])).status == 400
    assert (await api.client.get(f"{BASE}/preview")).status == 405


# --- steering keys on create and update ---------------------------------------------------


async def test_steering_keys_are_stored_with_defaults(api: ApiDaemon) -> None:
    plain = await create(api, cron())
    assert {k: plain["config"][k] for k in ("jitter_seconds", "misfire_policy",
                                            "catchup_window_seconds")} == {
        "jitter_seconds": 0, "misfire_policy": "latest", "catchup_window_seconds": 3600}
    steered = await create(api, cron(misfire_policy="all", catchup_window_seconds=600,
                                     jitter_seconds=1.5))  # fmt: skip
    assert steered["config"]["misfire_policy"] == "all"
    assert steered["config"]["catchup_window_seconds"] == 600
    assert steered["config"]["jitter_seconds"] == 1.5


async def test_a_jitter_change_moves_the_pending_occurrence(api: ApiDaemon) -> None:
    trigger = await create(api, cron("0 0 * * *"))
    [before] = await rows(api.db, trigger["id"])
    assert before["fire_at"] == before["scheduled_for"]
    config = {**trigger["config"], "jitter_seconds": 3000}
    reply = await api.client.patch(f"{BASE}/{trigger['id']}", {"config": config})
    assert reply.status == 200, reply.body
    found = await rows(api.db, trigger["id"])
    pending = [r for r in found if r["status"] == "pending"]
    assert [r["status"] for r in found] == ["pending"]  # the same occurrence, its time moved
    expected = due_at(trigger["id"], config, from_db(before["scheduled_for"]) or utcnow())
    assert from_db(pending[0]["fire_at"]) == expected.fire_at
    # A policy change alone leaves the pending occurrence as it is.
    policy = {**config, "misfire_policy": "skip"}
    assert (await api.client.patch(f"{BASE}/{trigger['id']}", {"config": policy})).status == 200
    assert await rows(api.db, trigger["id"]) == found


# --- the occurrence history ---------------------------------------------------------------


async def _event(db: Database, trigger_id: str, scheduled_for: datetime, published: datetime,
                 note: str | None = None) -> str:  # fmt: skip
    event_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source, note,"
        " payload, scheduled_for, fired_at, published_at, execution_status, created_at)"
        " VALUES (%(id)s, %(t)s, 'c', 'cron_scheduled', 'scheduler', %(note)s, '{}', %(s)s,"
        " %(p)s, %(p)s, 'success', %(p)s)",
        {"id": event_id, "t": trigger_id, "s": to_db(scheduled_for), "p": to_db(published),
         "note": note},
    )  # fmt: skip
    return event_id


async def _occurrence(db: Database, trigger_id: str, scheduled_for: datetime, status: str,
                      event_id: str | None = None, note: str | None = None,
                      fire_at: datetime | None = None) -> None:  # fmt: skip
    await db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, event_id,"
        " note, created_at, updated_at) VALUES (%(t)s, %(s)s, %(f)s, %(status)s, %(e)s, %(n)s,"
        " %(s)s, %(s)s)",
        {"t": trigger_id, "s": to_db(scheduled_for), "f": to_db(fire_at or scheduled_for),
         "status": status, "e": event_id, "n": note},
    )  # fmt: skip


async def test_occurrence_history_newest_first_with_outcomes(api: ApiDaemon) -> None:
    trigger = await create(api, cron("0 * * * *"))
    tid = trigger["id"]
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    fired_at = hour - timedelta(hours=1)
    jittered = fired_at + timedelta(seconds=7)
    published = jittered + timedelta(milliseconds=42)
    event = await _event(api.db, tid, fired_at, published)
    await _occurrence(api.db, tid, fired_at, "completed", event, fire_at=jittered)
    await _occurrence(api.db, tid, hour - timedelta(hours=2), "missed",
                      note="missed while no scheduler ran; misfire_policy skip")
    await _occurrence(api.db, tid, hour - timedelta(hours=3), "cancelled",
                      note="cancelled: the schedule changed")

    reply = await api.client.get(f"{BASE}/{tid}/occurrences")
    assert reply.status == 200, reply.body
    found = reply.body["occurrences"]
    assert [o["outcome"] for o in found] == ["pending", "fired", "missed", "cancelled"]
    assert found[0]["scheduled_for"] == trigger["next_scheduled_run"]
    assert found[0]["event_id"] is None and found[0]["delay_ms"] is None
    fired = found[1]
    assert fired == {"scheduled_for": to_iso(fired_at), "fire_at": to_iso(jittered),
                     "outcome": "fired", "event_id": event, "published_at": to_iso(published),
                     "delay_ms": 42, "note": None}  # fmt: skip
    assert found[2]["note"] == "missed while no scheduler ran; misfire_policy skip"
    assert found[3]["note"] == "cancelled: the schedule changed"
    assert reply.body["pagination"] == {"current_page": 1, "page_size": 20, "total_pages": 1,
                                        "total_records": 4}  # fmt: skip

    missed = await api.client.get(f"{BASE}/{tid}/occurrences", outcome="missed")
    assert [o["outcome"] for o in missed.body["occurrences"]] == ["missed"]
    window = await api.client.get(f"{BASE}/{tid}/occurrences", since=to_iso(hour - timedelta(
        hours=2)) or "", until=to_iso(hour) or "")  # fmt: skip
    assert [o["outcome"] for o in window.body["occurrences"]] == ["fired", "missed"]
    page = await api.client.get(f"{BASE}/{tid}/occurrences", limit="1", page="2")
    assert [o["outcome"] for o in page.body["occurrences"]] == ["fired"]
    assert page.body["pagination"]["total_pages"] == 4
    beyond = await api.client.get(f"{BASE}/{tid}/occurrences", page="9")
    assert beyond.body["occurrences"] == []


@pytest.mark.parametrize("params, field", [
    ({"outcome": "lost"}, "outcome"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"page": "0"}, "page"),
])  # fmt: skip
async def test_bad_history_queries_are_400s(
    api: ApiDaemon, params: dict[str, str], field: str
) -> None:
    trigger = await create(api, cron())
    reply = await api.client.get(f"{BASE}/{trigger['id']}/occurrences", **params)
    assert reply.status == 400 and reply.field == field, reply.body


async def test_a_schedule_change_lists_the_old_pending_occurrence_cancelled(
    api: ApiDaemon,
) -> None:
    trigger = await create(api, cron("0 3 * * *"))
    old = trigger["next_scheduled_run"]
    moved = await api.client.patch(f"{BASE}/{trigger['id']}",
                                   {"config": {**trigger["config"], "cron": "0 4 * * *"}})
    assert moved.status == 200
    paused = await api.client.patch(f"{BASE}/{trigger['id']}", {"status": "inactive"})
    assert paused.status == 200
    found = (await api.client.get(f"{BASE}/{trigger['id']}/occurrences")).body["occurrences"]
    by_time = {o["scheduled_for"]: o for o in found}
    assert by_time[old]["outcome"] == "cancelled"
    assert by_time[old]["note"] == "cancelled: the schedule changed"
    new = moved.body["next_scheduled_run"]
    assert by_time[new]["outcome"] == "cancelled"
    assert by_time[new]["note"] == "cancelled: the trigger was set inactive"


async def test_history_queries_use_the_occurrence_key(api: ApiDaemon) -> None:
    trigger = await create(api, cron())
    day = timedelta(days=1)
    where, params = OccurrenceFilter(Outcome.FIRED, utcnow() - day, utcnow() + day).where()
    params = {**params, "trigger_id": trigger["id"], "limit": 20, "offset": 0}
    for sql in (PENDING, HISTORY_COUNT.format(where=where), HISTORY_ROWS.format(where=where)):
        plan = await api.db.fetchall("EXPLAIN " + sql, params)
        assert plan[0]["key"] == "uq_schedules_occurrence", plan
        assert plan[0]["type"] in ("ref", "range"), plan


# --- the end of time ---------------------------------------------------------------------


async def test_schedules_near_the_year_9999_answer_without_a_500(api: ApiDaemon) -> None:
    """A far-future `start_at` / `run_at` is either refused (400 naming it) or listed
    up to the last occurrence a datetime can hold: never an overflow (500)."""
    far = {"name": "far", "type": "interval_scheduled",
           "config": {"endpoint": URL, "interval_seconds": 315360000,
                      "start_at": "9999-12-29T00:00:00Z"}}  # fmt: skip
    trigger = await create(api, far)
    reply = await api.client.get(f"{BASE}/{trigger['id']}/upcoming", count="5")
    assert reply.status == 200, reply.body
    assert [o["scheduled_for"] for o in reply.body["occurrences"]] == [
        "9999-12-29T00:00:00.000Z"]
    preview = await api.client.post(f"{BASE}/preview", far)
    assert preview.status == 200, preview.body
    assert len(preview.body["occurrences"]) == 1
    one_time = {"name": "far", "type": "time_scheduled",
                "config": {"endpoint": URL, "run_at": "9999-12-29T23:00:00Z",
                           "timezone": "Pacific/Kiritimati"}}  # fmt: skip
    trigger = await create(api, one_time)
    reply = await api.client.get(f"{BASE}/{trigger['id']}/upcoming")
    assert reply.status == 200, reply.body
    assert reply.body["occurrences"][0]["local"] == "9999-12-30T13:00:00+14:00"
    too_far: list[tuple[dict[str, Any], str]] = [
        ({**far, "config": {**far["config"], "start_at": "9999-12-31T23:59:59.999Z",
                            "jitter_seconds": 5}}, "config.start_at"),
        ({**far, "config": {**far["config"], "start_at": "9999-12-31T00:00:00Z"}},
         "config.start_at"),
        ({**one_time, "config": {**one_time["config"], "run_at": "9999-12-31T23:59:59Z"}},
         "config.run_at"),
    ]  # fmt: skip
    for data, field in too_far:
        for path in (BASE, f"{BASE}/preview", f"{BASE}/test"):
            reply = await api.client.post(path, data)
            assert reply.status == 400 and reply.field == field, (path, data, reply.body)
    reply = await api.client.patch(f"{BASE}/{trigger['id']}", {"config": too_far[2][0]["config"]})
    assert reply.status == 400 and reply.field == "config.run_at", reply.body

"""`/api/v1/triggers` end to end: a `triggerd run --roles api` subprocess on a real
MariaDB, schedule rows checked straight in the table."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from tests.integration.api_daemon import URL, ApiDaemon, api_daemon
from triggerd.api import triggers
from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.domain.circuit import endpoint_key
from triggerd.domain.timeutil import parse_iso_utc, to_db, to_iso
from triggerd.metrics import Metrics
from triggerd.services import Services
from triggerd.store.db import Database

BASE = "/api/v1/triggers"
NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("api")) as running:
        yield running


@pytest.fixture
async def empty(api: ApiDaemon) -> ApiDaemon:
    """The module's daemon with no triggers left from earlier tests."""
    await api.db.execute("DELETE FROM triggers")
    await api.db.execute("DELETE FROM trigger_schedules")
    return api


def body(kind: str = "cron_scheduled", name: str = "t", **config: Any) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "webhook": {},
        "time_scheduled": {"endpoint": URL, "run_in": "1h"},
        "cron_scheduled": {"endpoint": URL, "cron": "0 * * * *"},
        "interval_scheduled": {"endpoint": URL, "interval_seconds": 3600},
    }
    return {"name": name, "type": kind, "config": {**base[kind], **config}}


async def create(api: ApiDaemon, data: dict[str, Any]) -> dict[str, Any]:
    reply = await api.client.post(BASE, data)
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == f"{BASE}/{reply.body['id']}"
    return dict(reply.body)


def at(value: str | None) -> datetime:
    assert value is not None
    assert value.endswith("Z")
    return parse_iso_utc(value)


def now() -> datetime:
    return datetime.now(UTC)


# --- create and read ---------------------------------------------------------------------


async def test_create_returns_the_documented_fields(api: ApiDaemon) -> None:
    before = now() - timedelta(seconds=1)
    cron = await create(api, body("cron_scheduled", name="hourly"))
    assert set(cron) == {"id", "name", "type", "status", "status_reason", "config", "labels",
                         "webhook_url", "next_scheduled_run", "created_at",
                         "updated_at"}  # fmt: skip
    assert cron["labels"] == {} and cron["status_reason"] is None
    assert uuid.UUID(cron["id"])
    assert (cron["name"], cron["type"], cron["status"]) == ("hourly", "cron_scheduled", "active")
    assert cron["webhook_url"] is None
    assert cron["config"]["http_method"] == "POST"  # defaults filled in
    assert cron["config"]["retry"]["max_attempts"] == 5
    assert cron["config"]["timeout_seconds"] == 10
    next_run = at(cron["next_scheduled_run"])
    assert before < next_run <= now() + timedelta(hours=1)
    assert next_run.minute == 0 and next_run.second == 0
    assert before <= at(cron["created_at"]) == at(cron["updated_at"]) <= now()
    fetched = await api.client.get(f"{BASE}/{cron['id']}")
    assert fetched.status == 200 and fetched.body == cron
    [row] = await api.pending(cron["id"])
    assert to_iso(row["fire_at"]) == cron["next_scheduled_run"]

    hook = await create(api, body("webhook", schema={"type": "object"}))
    assert hook["webhook_url"] == f"{api.daemon.url}/api/v1/webhook/{hook['id']}"
    assert hook["next_scheduled_run"] is None
    assert "endpoint" not in hook["config"]
    assert await api.schedules(hook["id"]) == []


async def test_configs_nested_as_deep_as_documented_are_stored(api: ApiDaemon) -> None:
    """A payload may nest 100 levels and a schema too (MariaDB's JSON functions stop at
    32: nothing stored may depend on them reading a config)."""
    payload: Any = "leaf"
    for _ in range(99):
        payload = [payload]
    deep = await create(api, body(payload=payload, endpoint=f"{URL}?deep=1"))
    assert deep["config"]["payload"] == payload
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(45):  # 91 levels
        schema = {"type": "object", "properties": {"a": schema}}
    hook = await create(api, body("webhook", schema=schema))
    assert hook["config"]["schema"] == schema
    row = await api.db.fetchone("SELECT endpoint_hash FROM triggers WHERE id = %s",
                                (deep["id"],))  # fmt: skip
    assert row is not None and row["endpoint_hash"] == endpoint_key(URL)


async def test_run_in_is_resolved_and_interval_is_anchored(api: ApiDaemon) -> None:
    before = now()
    once = await create(api, body("time_scheduled", run_in="10m"))
    run_at = at(once["config"]["run_at"])
    assert "run_in" not in once["config"]
    ten = timedelta(minutes=10)
    assert before + ten - timedelta(seconds=1) < run_at < now() + ten
    assert once["next_scheduled_run"] == once["config"]["run_at"]

    every = await create(api, body("interval_scheduled", interval_seconds=90))
    first = at(every["config"]["first_run_at"])
    assert before + timedelta(seconds=89) < first < now() + timedelta(seconds=91)
    assert every["next_scheduled_run"] == every["config"]["first_run_at"]

    start = (now() + timedelta(days=2)).replace(microsecond=0)
    anchored = await create(api, body("interval_scheduled", start_at=to_iso(start)))
    assert at(anchored["next_scheduled_run"]) == start


async def test_run_at_just_inside_the_grace_still_fires_at_once(api: ApiDaemon) -> None:
    run_at = to_iso(now() - timedelta(seconds=1))
    once = await create(api, body("time_scheduled", run_in=None, run_at=run_at))
    assert once["next_scheduled_run"] == run_at
    assert len(await api.pending(once["id"])) == 1


async def test_inactive_on_create_schedules_nothing(api: ApiDaemon) -> None:
    trigger = await create(api, {**body("cron_scheduled"), "status": "inactive"})
    assert trigger["status"] == "inactive"
    assert trigger["next_scheduled_run"] is None
    assert await api.schedules(trigger["id"]) == []


async def test_dst_cron_and_run_at_in_new_york(api: ApiDaemon) -> None:
    daily = await create(api, body("cron_scheduled", cron="0 9 * * *", timezone="America/New_York"))
    local = at(daily["next_scheduled_run"]).astimezone(NY)
    assert (local.hour, local.minute) == (9, 0)
    assert now() < local < now() + timedelta(days=1)

    day, spring = next_transition(NY)
    if spring:  # 02:30 does not exist that night: once, at the end of the gap (03:00 EDT)
        wall = "30 2"
        expected = datetime(day.year, day.month, day.day, 3, 0, tzinfo=NY)
    else:  # 01:30 happens twice: once, the first time (EDT)
        wall = "30 1"
        expected = datetime(day.year, day.month, day.day, 1, 30, tzinfo=NY, fold=0)
    cron = await create(api, body("cron_scheduled", cron=f"{wall} {day.day} {day.month} *",
                                  timezone="America/New_York"))  # fmt: skip
    assert at(cron["next_scheduled_run"]) == expected.astimezone(UTC)
    minute, hour = wall.split()
    naive = f"{day:%Y-%m-%d}T{int(hour):02d}:{minute}:00"
    once = await create(api, body("time_scheduled", run_in=None, run_at=naive,
                                  timezone="America/New_York"))  # fmt: skip
    assert at(once["next_scheduled_run"]) == expected.astimezone(UTC)


def next_transition(zone: ZoneInfo) -> tuple[datetime, bool]:
    """The next day on which `zone` changes its UTC offset, and whether it springs forward."""
    day = datetime.now(zone).replace(hour=12, minute=0, second=0, microsecond=0)
    for _ in range(400):
        following = day + timedelta(days=1)
        before, after = day.utcoffset(), following.utcoffset()
        assert before is not None and after is not None
        if before != after:
            return following, after > before
        day = following
    raise AssertionError("no DST transition within a year")


# --- list --------------------------------------------------------------------------------


async def test_pagination_filters_and_newest_first(empty: ApiDaemon) -> None:
    api = empty
    made = [await create(api, body(kind, name=f"n{i}"))
            for i, kind in enumerate(["webhook", "cron_scheduled", "webhook",
                                      "interval_scheduled", "time_scheduled"])]  # fmt: skip
    await api.client.patch(f"{BASE}/{made[1]['id']}", {"status": "inactive"})
    seen: list[dict[str, Any]] = []
    for page, size in ((1, 2), (2, 2), (3, 1)):
        reply = await api.client.get(BASE, page=str(page), limit="2")
        assert reply.status == 200
        assert reply.body["pagination"] == {
            "current_page": page, "page_size": 2, "total_pages": 3, "total_records": 5
        }
        assert len(reply.body["triggers"]) == size
        seen += reply.body["triggers"]
    keys = [(t["created_at"], t["id"]) for t in seen]
    assert keys == sorted(keys, reverse=True)
    assert {t["id"] for t in seen} == {t["id"] for t in made}
    assert seen[-1]["id"] == made[0]["id"] or seen[-1]["created_at"] == made[0]["created_at"]

    past = await api.client.get(BASE, page="4", limit="2")
    assert past.status == 200 and past.body["triggers"] == []
    assert past.body["pagination"]["total_records"] == 5

    default = await api.client.get(BASE)
    assert default.body["pagination"] == {
        "current_page": 1, "page_size": 20, "total_pages": 1, "total_records": 5
    }
    listed = {t["id"]: t for t in default.body["triggers"]}
    for trigger in made[2:]:  # the list carries the same view as GET, next runs included
        assert listed[trigger["id"]] == (await api.client.get(f"{BASE}/{trigger['id']}")).body
    assert listed[made[1]["id"]]["next_scheduled_run"] is None

    hooks = await api.client.get(BASE, type="webhook")
    assert {t["id"] for t in hooks.body["triggers"]} == {made[0]["id"], made[2]["id"]}
    assert hooks.body["pagination"]["total_records"] == 2
    inactive = await api.client.get(BASE, status="inactive", type="cron_scheduled")
    assert [t["id"] for t in inactive.body["triggers"]] == [made[1]["id"]]
    none = await api.client.get(BASE, status="inactive", type="webhook")
    assert none.body == {"triggers": [], "pagination": {
        "current_page": 1, "page_size": 20, "total_pages": 0, "total_records": 0}}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"type": "sometimes"}, "type"),
        ({"status": "paused"}, "status"),
    ],
)
async def test_bad_list_parameters_are_400_naming_them(
    api: ApiDaemon, params: dict[str, str], field: str
) -> None:
    reply = await api.client.get(BASE, **params)
    assert reply.status == 400
    assert reply.error["code"] == "validation_error"
    assert reply.field == field


@pytest.mark.parametrize(("query", "field"), [
    ("limit=5&limit=abc", "limit"),
    ("type=webhook&type=cron_scheduled", "type"),
    ("page=1&page=1", "page"),
])  # fmt: skip
async def test_a_parameter_given_twice_is_a_400_naming_it(
    api: ApiDaemon, query: str, field: str
) -> None:
    reply = await api.client.request("GET", f"{BASE}?{query}")
    assert reply.status == 400, reply.body
    assert reply.field == field and "once" in reply.error["message"], reply.body
    labels = await api.client.get(BASE, label="a:b")  # `label` is the one list
    assert labels.status == 200


# --- validation through HTTP ---------------------------------------------------------------

PAST = "2001-01-01T00:00:00Z"

INVALID: list[tuple[Any, str]] = [
    ([], "body"),
    ("trigger", "body"),
    ({"type": "webhook"}, "name"),
    ({**body("webhook"), "name": ""}, "name"),
    ({**body("webhook"), "name": "   "}, "name"),
    ({**body("webhook"), "name": "x" * 256}, "name"),
    ({**body("webhook"), "name": 7}, "name"),
    ({"name": "t"}, "type"),
    ({**body("webhook"), "type": "sometimes"}, "type"),
    ({**body("webhook"), "status": "paused"}, "status"),
    ({**body("webhook"), "colour": "red"}, "colour"),
    ({"name": "t", "type": "cron_scheduled"}, "config"),
    ({**body("webhook"), "config": "none"}, "config"),
    (body("webhook", bogus=1), "config.bogus"),
    (body("cron_scheduled", endpoint=None), "config.endpoint"),
    (body("cron_scheduled", endpoint="ftp://example.com/x"), "config.endpoint"),
    (body("cron_scheduled", endpoint="not a url"), "config.endpoint"),
    (body("cron_scheduled", endpoint="/relative"), "config.endpoint"),
    (body("webhook", http_method="FETCH"), "config.http_method"),
    (body("webhook", headers=["X-A"]), "config.headers"),
    (body("webhook", headers={"X-A": 1}), "config.headers.X-A"),
    (body("webhook", headers={"X-A": "a\r\nInjected: 1"}), "config.headers.X-A"),
    (body("webhook", timeout_seconds=0), "config.timeout_seconds"),
    (body("webhook", timeout_seconds="10"), "config.timeout_seconds"),
    (body("webhook", retry={"max_attempts": 0}), "config.retry.max_attempts"),
    (body("webhook", retry={"backoff_seconds": -1}), "config.retry.backoff_seconds"),
    (body("webhook", retry={"tries": 3}), "config.retry.tries"),
    (body("webhook", schema={"type": "nope"}), "config.schema"),
    (body("webhook", schema={"properties": {"a": {"minimum": "zero"}}}), "config.schema"),
    (body("webhook", schema="object"), "config.schema"),
    (body("time_scheduled", run_in=None, run_at=PAST), "config.run_at"),
    (body("time_scheduled", run_at="2100-01-01T00:00:00Z"), "config.run_at"),
    (body("time_scheduled", run_in=None), "config.run_at"),
    (body("time_scheduled", run_in=None, run_at="tomorrow"), "config.run_at"),
    (body("time_scheduled", run_in="soon"), "config.run_in"),
    (body("time_scheduled", timezone="Mars/Olympus_Mons"), "config.timezone"),
    (body("cron_scheduled", cron="61 * * * *"), "config.cron"),
    (body("cron_scheduled", cron="* * *"), "config.cron"),
    (body("cron_scheduled", cron=None), "config.cron"),
    (body("cron_scheduled", timezone="Europe/Atlantis"), "config.timezone"),
    (body("interval_scheduled", interval_seconds=0), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=None), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds="60"), "config.interval_seconds"),
    (body("interval_scheduled", start_at=PAST), "config.start_at"),
]


@pytest.mark.parametrize(("data", "field"), INVALID, ids=[f for _, f in INVALID])
async def test_every_rule_is_a_400_naming_the_field(api: ApiDaemon, data: Any, field: str) -> None:
    reply = await api.client.post(BASE, data)
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "validation_error"
    assert reply.field == field, reply.error["message"]
    assert reply.error["message"].startswith(field)


async def test_nothing_is_stored_for_a_rejected_create(empty: ApiDaemon) -> None:
    reply = await empty.client.post(BASE, body("cron_scheduled", cron="bad"))
    assert reply.status == 400
    assert (await empty.client.get(BASE)).body["pagination"]["total_records"] == 0
    assert await empty.db.fetchall("SELECT id FROM trigger_schedules") == []


# --- get / update / delete by id ---------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
# a fixed unknown id: every pytest-xdist worker collects the same tests
@pytest.mark.parametrize("trigger_id",
                         ["not-a-uuid", "3f1a9c62-7e0b-4d25-9b8e-5c4f2a1d6e70", "1' OR '1'='1"])
async def test_unknown_or_malformed_id_is_404(api: ApiDaemon, method: str, trigger_id: str) -> None:
    data = {"name": "x"} if method in ("PUT", "PATCH") else None
    reply = await api.client.request(method, f"{BASE}/{trigger_id}", json=data)
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_partial_update(api: ApiDaemon, method: str) -> None:
    trigger = await create(api, body("webhook", headers={"X-Team": "a"}, payload={"k": 1}))
    path = f"{BASE}/{trigger['id']}"
    renamed = await api.client.request(method, path, json={"name": "renamed"})
    assert renamed.status == 200, renamed.body
    assert renamed.body["name"] == "renamed"
    assert renamed.body["config"] == trigger["config"]
    assert at(renamed.body["updated_at"]) >= at(trigger["updated_at"])
    assert renamed.body["created_at"] == trigger["created_at"]

    paused = await api.client.request(method, path, json={"status": "inactive", "type": "webhook"})
    assert (paused.body["name"], paused.body["status"]) == ("renamed", "inactive")

    replaced = await api.client.request(method, path, json={"config": {"http_method": "put"}})
    assert replaced.status == 200
    assert replaced.body["config"]["http_method"] == "PUT"
    assert "headers" not in replaced.body["config"]  # the new config replaces the old one
    assert (await api.client.get(path)).body == replaced.body
    row = await api.trigger_row(trigger["id"])
    assert row is not None and row["version"] == 4


async def test_a_trigger_read_with_get_can_be_edited_and_put_back_whole(api: ApiDaemon) -> None:
    trigger = await create(api, body("cron_scheduled", cron="*/10 * * * *"))
    path = f"{BASE}/{trigger['id']}"
    edited = {**(await api.client.get(path)).body, "name": "edited"}
    edited["config"]["cron"] = "*/20 * * * *"
    reply = await api.client.put(path, edited)
    assert reply.status == 200, reply.body
    assert reply.body["name"] == "edited" and reply.body["config"]["cron"] == "*/20 * * * *"
    assert at(reply.body["next_scheduled_run"]).minute % 20 == 0  # the new cron's
    assert reply.body["created_at"] == trigger["created_at"]
    other = await create(api, body("webhook"))
    wrong = await api.client.put(path, {**edited, "id": other["id"]})
    assert wrong.status == 400 and wrong.field == "id"


async def test_type_cannot_change(api: ApiDaemon) -> None:
    trigger = await create(api, body("webhook"))
    reply = await api.client.patch(f"{BASE}/{trigger['id']}", {"type": "cron_scheduled"})
    assert reply.status == 400 and reply.field == "type"


async def test_failed_update_changes_neither_trigger_nor_schedule(api: ApiDaemon) -> None:
    trigger = await create(api, body("cron_scheduled", cron="*/10 * * * *"))
    path = f"{BASE}/{trigger['id']}"
    row, schedules = await api.trigger_row(trigger["id"]), await api.schedules(trigger["id"])
    for change in ({"config": {"endpoint": URL, "cron": "every day"}},
                   {"name": "fine", "config": {"endpoint": URL, "cron": "0 * * * *",
                                               "timezone": "Nowhere/Null"}},
                   {"name": "fine", "status": "inactive", "config": {"cron": "0 * * * *"}},
                   {"name": ""}):  # fmt: skip
        reply = await api.client.patch(path, change)
        assert reply.status == 400
    assert await api.trigger_row(trigger["id"]) == row
    assert await api.schedules(trigger["id"]) == schedules
    assert (await api.client.get(path)).body == trigger


async def test_schedule_change_cancels_pending_and_inserts_the_next(api: ApiDaemon) -> None:
    trigger = await create(api, body("cron_scheduled", cron="0 * * * *"))
    [old] = await api.pending(trigger["id"])
    reply = await api.client.patch(f"{BASE}/{trigger['id']}",
                                   {"config": {"endpoint": URL, "cron": "30 * * * *"}})  # fmt: skip
    assert reply.status == 200
    rows = await api.schedules(trigger["id"])
    assert [(r["id"], r["status"]) for r in rows[:1]] == [(old["id"], "cancelled")]
    [new] = [r for r in rows if r["status"] == "pending"]
    assert to_iso(new["fire_at"]) == reply.body["next_scheduled_run"]
    assert at(reply.body["next_scheduled_run"]).minute == 30
    # one transaction, one clock: the cancel, the insert and the trigger share `now`
    row = await api.trigger_row(trigger["id"])
    assert row is not None
    assert rows[0]["updated_at"] == new["created_at"] == row["updated_at"]

    # a change that keeps the timing leaves the pending occurrence alone
    renamed = await api.client.patch(f"{BASE}/{trigger['id']}", {"name": "same time"})
    assert await api.schedules(trigger["id"]) == rows
    assert renamed.body["next_scheduled_run"] == reply.body["next_scheduled_run"]


async def test_inactive_stops_and_active_resumes_after_now(api: ApiDaemon) -> None:
    trigger = await create(api, body("interval_scheduled", interval_seconds=600))
    path = f"{BASE}/{trigger['id']}"
    paused = await api.client.patch(path, {"status": "inactive"})
    assert paused.body["next_scheduled_run"] is None
    assert await api.pending(trigger["id"]) == []
    assert (await api.client.get(path)).body["next_scheduled_run"] is None

    # While it was off, 2 h went by: move its anchor back as if created then.
    row = await api.trigger_row(trigger["id"])
    assert row is not None
    anchor = at(to_iso(now() - timedelta(hours=2, seconds=30)))
    config = row["config"].replace(trigger["config"]["first_run_at"], to_iso(anchor))
    await api.db.execute("UPDATE triggers SET config = %(c)s WHERE id = %(id)s",
                         {"c": config, "id": trigger["id"]})  # fmt: skip

    before = now()
    resumed = await api.client.patch(path, {"status": "active"})
    after = now()
    next_run = at(resumed.body["next_scheduled_run"])
    assert before < next_run <= after + timedelta(seconds=600)  # no burst of missed ones
    assert (next_run - anchor).total_seconds() % 600 == 0
    assert [to_iso(r["fire_at"]) for r in await api.pending(trigger["id"])] == [
        resumed.body["next_scheduled_run"]
    ]


async def test_concurrent_updates_serialize(api: ApiDaemon) -> None:
    """Each update locks the row: versions count every write (an update that finds the
    state it asks for already there writes nothing), and the schedule ends with exactly
    the one pending occurrence the final state calls for."""
    trigger = await create(api, body("cron_scheduled", cron="0 * * * *"))
    path = f"{BASE}/{trigger['id']}"
    changes: list[dict[str, Any]] = [
        {"config": {"endpoint": URL, "cron": f"{minute} * * * *"}} for minute in range(8)
    ]
    changes += [{"status": "inactive"}, {"status": "active"}] * 3
    replies = await asyncio.gather(*(api.client.patch(path, change) for change in changes))
    assert [r.status for r in replies] == [200] * len(changes)
    row = await api.trigger_row(trigger["id"])
    writes = await api.db.fetchone(
        "SELECT COUNT(*) AS n FROM audit_log WHERE trigger_id = %s"
        " AND action = 'trigger.updated'", [trigger["id"]])  # fmt: skip
    assert writes is not None and writes["n"] >= 7  # the cron changes, bar one perhaps
    assert row is not None and row["version"] == 1 + writes["n"]
    final = (await api.client.get(path)).body
    pending = await api.pending(trigger["id"])
    if final["status"] == "active":
        assert [to_iso(r["fire_at"]) for r in pending] == [final["next_scheduled_run"]]
        minute = int(final["config"]["cron"].split()[0])
        assert at(final["next_scheduled_run"]).minute == minute
    else:
        assert pending == [] and final["next_scheduled_run"] is None


async def test_an_open_api_answers_access_as_anonymous_with_write_scope(api: ApiDaemon) -> None:
    reply = await api.client.get("/api/v1/access")
    assert reply.status == 200, reply.body
    assert reply.body == {"actor": "anonymous", "scope": "write", "keys_required": False}


async def test_concurrent_updates_are_audited_in_the_order_they_were_made(
    api: ApiDaemon,
) -> None:
    """An update that waited for the row lock is dated after the one it follows: the
    audit log, newest first, reads as one chain of changes, and updated_at never goes
    back."""
    trigger = await create(api, body("cron_scheduled", cron="0 * * * *"))
    path = f"{BASE}/{trigger['id']}"
    replies = await asyncio.gather(*(api.client.patch(path, {"name": f"n{i}"})
                                     for i in range(15)))  # fmt: skip
    assert [r.status for r in replies] == [200] * 15
    log = await api.client.get("/api/v1/audit", trigger_id=trigger["id"],
                               action="trigger.updated", limit="100")  # fmt: skip
    entries = log.body["entries"]
    assert entries, log.body
    for newer, older in itertools.pairwise(entries):
        assert newer["changes"]["name"][0] == older["changes"]["name"][1], entries
        assert newer["at"] >= older["at"], entries
    final = (await api.client.get(path)).body
    assert final["name"] == entries[0]["changes"]["name"][1]
    assert final["updated_at"] == entries[0]["at"]
    assert entries[-1]["changes"]["name"][0] == trigger["name"]


async def test_reactivating_a_one_shot_in_the_future_revives_it(api: ApiDaemon) -> None:
    trigger = await create(api, body("time_scheduled", run_in="2h"))
    path = f"{BASE}/{trigger['id']}"
    await api.client.patch(path, {"status": "inactive"})
    again = await api.client.patch(path, {"status": "active"})
    assert again.body["next_scheduled_run"] == trigger["config"]["run_at"]
    rows = await api.schedules(trigger["id"])
    assert [r["status"] for r in rows] == ["pending"]  # the same occurrence, back to pending


async def test_delete_cancels_the_schedule_and_keeps_events(api: ApiDaemon) -> None:
    trigger = await create(api, body("cron_scheduled"))
    event_id = str(uuid.uuid4())
    stamp = to_db(now())
    await api.db.execute(
        "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source, payload,"
        " fired_at, created_at) VALUES (%(e)s, %(t)s, 't', 'cron_scheduled', 'scheduler', '{}',"
        " %(now)s, %(now)s)",
        {"e": event_id, "t": trigger["id"], "now": stamp},
    )
    path = f"{BASE}/{trigger['id']}"
    reply = await api.client.delete(path)
    assert reply.status == 204 and reply.raw == b""
    assert (await api.client.get(path)).status == 404
    assert (await api.client.delete(path)).status == 404
    assert (await api.client.patch(path, {"name": "x"})).status == 404
    assert [r["status"] for r in await api.schedules(trigger["id"])] == ["cancelled"]
    assert await api.trigger_row(trigger["id"]) is None
    event = await api.db.fetchone("SELECT trigger_id FROM event_logs WHERE id = %(e)s",
                                  {"e": event_id})  # fmt: skip
    assert event == {"trigger_id": trigger["id"]}


# --- routing -----------------------------------------------------------------------------


async def test_item_routes_do_not_shadow_the_test_run_routes() -> None:
    """api.testruns registers after this module; its POSTs must still reach it."""
    settings = Settings(database_url="mysql://u@127.0.0.1/db")
    services = Services(settings=settings, db=Database(settings.database), bus=Bus(settings),
                        metrics=Metrics())  # fmt: skip
    app = web.Application()
    triggers.add_routes(app, services)

    async def mine(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/api/v1/triggers/test", mine)
    app.router.add_post("/api/v1/triggers/{id}/test", mine)

    async def resolve(method: str, path: str) -> Any:
        return await app.router.resolve(make_mocked_request(method, path, app=app))

    for path in ("/api/v1/triggers/test", f"/api/v1/triggers/{uuid.uuid4()}/test"):
        assert (await resolve("POST", path)).handler is mine, path
    item = await resolve("POST", f"{BASE}/{uuid.uuid4()}")
    assert isinstance(item.http_exception, web.HTTPMethodNotAllowed)
    # /triggers/test is that resource alone: other methods are a 405 naming POST only
    other = await resolve("GET", f"{BASE}/test")
    assert isinstance(other.http_exception, web.HTTPMethodNotAllowed)
    assert other.http_exception.allowed_methods == {"POST"}
    for name in ("testing", "test-1", "not-a-uuid"):  # any other id is this module's (404s)
        assert (await resolve("GET", f"{BASE}/{name}")).route.resource.canonical == f"{BASE}/{{id}}"

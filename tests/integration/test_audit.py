"""The audit log end to end: a `triggerd run --roles api` subprocess with scoped keys on
a real MariaDB. Every change made through the API appears once, with its actor,
trigger, event and request id, and secrets masked; a change whose entry cannot be
written is not made; `GET /api/v1/audit` filters, paginates, refuses bad parameters
and is served by indexes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.api_daemon import URL, ApiDaemon, Client, api_daemon
from triggerd.domain.audit import Action, AuditEntry, Origin
from triggerd.domain.timeutil import parse_iso_utc, to_iso, utcnow
from triggerd.store.audit import AuditFilter, list_sql, record_many

BASE = "/api/v1/triggers"
AUDIT = "/api/v1/audit"
ENV_KEY = f"env-{uuid.uuid4().hex}"
WRITE_KEY = f"ci-{uuid.uuid4().hex}"
READ_KEY = f"dash-{uuid.uuid4().hex}"
BARE_KEY = f"bare-{uuid.uuid4().hex}"
SECRET = f"hook-secret-{uuid.uuid4().hex}"
SECRET_2 = f"hook-secret-{uuid.uuid4().hex}"
TOKEN = f"Bearer tok-{uuid.uuid4().hex}"
TOKEN_2 = f"Bearer tok-{uuid.uuid4().hex}"
SECRETS = (SECRET, SECRET_2, TOKEN, TOKEN_2)

# An error raised by every insert into audit_log while it exists.
_FAIL_AUDIT = ("CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log FOR EACH ROW"
               " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit insert refused'")  # fmt: skip


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    log_dir = tmp_path_factory.mktemp("audit")
    keys_file = log_dir / "keys"
    keys_file.write_text(f"ci write {WRITE_KEY}\ndashboard read {READ_KEY}\n\n{BARE_KEY}\n",
                         encoding="utf-8")  # fmt: skip
    env = {"TRIGGERD_API_KEYS": ENV_KEY, "TRIGGERD_API_KEYS_FILE": str(keys_file)}
    async with api_daemon(db_server, kafka_bootstrap, log_dir, env=env,
                          headers={"X-API-Key": WRITE_KEY}) as running:  # fmt: skip
        yield running


def hook_body(name: str = "orders", **config: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook",
            "config": {"endpoint": URL, "secret": SECRET,
                       "headers": {"Authorization": TOKEN, "X-Team": "a"}, **config}}  # fmt: skip


async def create(client: Client, data: dict[str, Any], **headers: str) -> dict[str, Any]:
    reply = await client.post(BASE, data, headers=headers)
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def entries(client: Client, **params: str) -> list[dict[str, Any]]:
    reply = await client.get(AUDIT, **params)
    assert reply.status == 200, reply.body
    for value in SECRETS:
        assert value not in reply.raw.decode()
    return list(reply.body["entries"])


async def version(api: ApiDaemon, trigger_id: str) -> int | None:
    row = await api.trigger_row(trigger_id)
    return None if row is None else int(row["version"])


async def test_create_update_delete_each_appear_once_with_changes_masked(api: ApiDaemon) -> None:
    client = api.client
    created = await create(client, hook_body(), **{"X-Request-ID": "req-create"})
    trigger_id = created["id"]
    config = {**created["config"], "secret": SECRET_2, "timeout_seconds": 3,
              "headers": {"Authorization": TOKEN_2, "X-Team": "b"}}  # fmt: skip
    updated = await client.patch(f"{BASE}/{trigger_id}",
                                 {"name": "orders-v2", "status": "inactive", "config": config},
                                 headers={"X-Request-ID": "req-update"})  # fmt: skip
    assert updated.status == 200, updated.body
    deleted = await client.delete(f"{BASE}/{trigger_id}", headers={"X-Request-ID": "req-delete"})
    assert deleted.status == 204

    found = await entries(client, trigger_id=trigger_id)
    assert [e["action"] for e in found] == ["trigger.deleted", "trigger.updated",
                                            "trigger.created"]  # newest first  # fmt: skip
    assert [e["request_id"] for e in found] == ["req-delete", "req-update", "req-create"]
    assert {e["actor"] for e in found} == {"ci"}
    assert {e["trigger_id"] for e in found} == {trigger_id}
    assert {e["event_id"] for e in found} == {None}
    assert all(parse_iso_utc(e["at"]) is not None for e in found)
    assert found[0]["id"] > found[1]["id"] > found[2]["id"]

    removed, update, creation = (e["changes"] for e in found)
    assert update == {
        "name": ["orders", "orders-v2"],
        "status": ["active", "inactive"],
        "config.secret": ["***", "***"],  # changed, neither value shown
        "config.headers": [{"Authorization": "***", "X-Team": "a"},
                           {"Authorization": "***", "X-Team": "b"}],
        "config.timeout_seconds": [created["config"]["timeout_seconds"], 3],
    }  # fmt: skip
    assert creation["name"] == [None, "orders"] and creation["type"] == [None, "webhook"]
    assert creation["config.secret"] == [None, "***"]
    assert creation["config.endpoint"] == [None, URL]
    assert removed["name"] == ["orders-v2", None] and removed["config.secret"] == ["***", None]


async def test_test_runs_and_replays_name_their_event(api: ApiDaemon) -> None:
    client = api.client
    trigger = await create(client, hook_body("runs"))
    run = await client.post(f"{BASE}/{trigger['id']}/test", {"payload": {"n": 1}},
                            headers={"X-Request-ID": "req-run"})  # fmt: skip
    assert run.status == 202, run.body
    ephemeral = await client.post(f"{BASE}/test", hook_body("once"),
                                  headers={"X-Request-ID": "req-ephemeral"})  # fmt: skip
    assert ephemeral.status == 202, ephemeral.body
    event_id = run.body["event_id"]
    await api.db.execute("UPDATE event_logs SET execution_status = 'success' WHERE id = %s",
                         (event_id,))  # fmt: skip
    replay = await client.post(f"/api/v1/events/{event_id}/replay",
                               headers={"X-Request-ID": "req-replay"})  # fmt: skip
    assert replay.status == 202, replay.body

    [replayed, tested, _created] = await entries(client, trigger_id=trigger["id"], action="")
    assert (replayed["action"], replayed["event_id"], replayed["request_id"]) == (
        "event.replayed", event_id, "req-replay")
    assert (tested["action"], tested["event_id"], tested["request_id"]) == (
        "trigger.test_run", event_id, "req-run")
    [once] = [e for e in await entries(client, action="trigger.test_run")
              if e["event_id"] == ephemeral.body["event_id"]]  # fmt: skip
    assert (once["trigger_id"], once["request_id"], once["actor"]) == (None, "req-ephemeral", "ci")
    # Refused calls change nothing and record nothing.
    again = await client.post(f"/api/v1/events/{event_id}/replay")
    assert again.status == 409
    assert len(await entries(client, trigger_id=trigger["id"])) == 3


async def test_a_backfill_that_fires_is_recorded_once(api: ApiDaemon) -> None:
    data = {"name": "hourly", "type": "cron_scheduled",
            "config": {"cron": "0 * * * *", "endpoint": URL}}  # fmt: skip
    trigger = await create(api.client, data)
    now = utcnow()
    body = {"since": to_iso(now - timedelta(hours=3)), "until": to_iso(now)}
    path = f"{BASE}/{trigger['id']}/backfill"
    first = await api.client.post(path, body, headers={"X-Request-ID": "req-backfill"})
    assert first.status == 202 and len(first.body["fired"]) == 3, first.body
    again = await api.client.post(path, body)  # fires nothing: changes nothing
    assert again.status == 202 and again.body["fired"] == [], again.body
    found = await entries(api.client, trigger_id=trigger["id"])
    assert [(e["action"], e["actor"]) for e in found] == [("trigger.backfilled", "ci"),
                                                          ("trigger.created", "ci")]  # fmt: skip
    assert found[0]["request_id"] == "req-backfill"


async def test_the_actor_is_the_keys_name(api: ApiDaemon) -> None:
    async with Client(api.daemon.url) as anonymous:
        ids = {}
        for name, key in (("env-key-1", ENV_KEY), ("key-4", BARE_KEY), ("ci", WRITE_KEY)):
            ids[name] = (await create(anonymous, hook_body(name), **{"X-API-Key": key}))["id"]
        reader = {"X-API-Key": READ_KEY}
        refused = await anonymous.post(BASE, hook_body("reader"), headers=reader)
        assert refused.status == 403
        listed = await anonymous.request("GET", AUDIT, headers=reader,
                                         params={"action": "trigger.created"})  # fmt: skip
        assert listed.status == 200, listed.body
        actors = {e["trigger_id"]: e["actor"] for e in listed.body["entries"]}
        assert {name: actors[trigger_id] for name, trigger_id in ids.items()} == {
            "env-key-1": "env-key-1", "key-4": "key-4", "ci": "ci"}
        assert not await entries(api.client, actor="dashboard")


async def test_a_failed_update_leaves_no_entry(api: ApiDaemon) -> None:
    trigger = await create(api.client, hook_body("strict"))
    path = f"{BASE}/{trigger['id']}"
    for bad in ({"type": "cron_scheduled"}, {"config": {"endpoint": "ftp://x"}}, {"name": ""}):
        reply = await api.client.patch(path, bad)
        assert reply.status == 400, reply.body
    missing = await api.client.patch(f"{BASE}/{uuid.uuid4()}", {"name": "x"})
    assert missing.status == 404
    assert [e["action"] for e in await entries(api.client, trigger_id=trigger["id"])] == [
        "trigger.created"]
    assert await version(api, trigger["id"]) == 1


async def test_a_change_whose_entry_cannot_be_written_is_not_made(api: ApiDaemon) -> None:
    client = api.client
    trigger = await create(client, hook_body("kept"))
    path = f"{BASE}/{trigger['id']}"
    run = await client.post(f"{path}/test")
    assert run.status == 202
    event_id = run.body["event_id"]
    await api.db.execute("UPDATE event_logs SET execution_status = 'success' WHERE id = %s",
                         (event_id,))  # fmt: skip
    hourly = await create(client, {"name": "hourly-kept", "type": "cron_scheduled",
                                   "config": {"cron": "0 * * * *", "endpoint": URL}})  # fmt: skip
    backfill = {"since": to_iso(utcnow() - timedelta(hours=3)), "until": to_iso(utcnow())}
    triggers_before = await api.db.fetchone("SELECT COUNT(*) AS n FROM triggers")
    events_before = await api.db.fetchone("SELECT COUNT(*) AS n FROM event_logs")
    audit_before = await api.db.fetchone("SELECT COUNT(*) AS n FROM audit_log")
    await api.db.execute(_FAIL_AUDIT)
    try:
        assert (await client.patch(path, {"name": "changed"})).status == 500
        assert (await client.delete(path)).status == 500
        assert (await client.post(BASE, hook_body("new"))).status == 500
        assert (await client.post(f"{path}/test")).status == 503
        assert (await client.post(f"/api/v1/events/{event_id}/replay")).status == 500
        assert (await client.post(f"{BASE}/{hourly['id']}/backfill", backfill)).status == 500
    finally:
        await api.db.execute("DROP TRIGGER audit_fails")
    got = await client.get(path)
    assert got.status == 200 and got.body["name"] == "kept"
    assert await version(api, trigger["id"]) == 1
    assert await api.db.fetchone("SELECT COUNT(*) AS n FROM triggers") == triggers_before
    assert await api.db.fetchone("SELECT COUNT(*) AS n FROM event_logs") == events_before
    assert await api.db.fetchone("SELECT COUNT(*) AS n FROM audit_log") == audit_before
    event = await api.db.fetchone("SELECT execution_status, publish_attempt FROM event_logs"
                                  " WHERE id = %s", (event_id,))  # fmt: skip
    assert event == {"execution_status": "success", "publish_attempt": 1}


async def test_an_update_that_changes_nothing_writes_nothing(api: ApiDaemon) -> None:
    trigger = await create(api.client, hook_body("steady"))
    path = f"{BASE}/{trigger['id']}"
    read = (await api.client.get(path)).body  # secrets as ***: sent back, they stay
    same = [await api.client.put(path, {"name": read["name"], "config": read["config"]}),
            await api.client.patch(path, {"status": "active", "labels": {}}),
            await api.client.patch(path, {})]
    for reply in same:
        assert reply.status == 200, reply.body
        assert reply.body["updated_at"] == read["updated_at"]
        assert reply.body["config"] == read["config"]
    assert [e["action"] for e in await entries(api.client, trigger_id=trigger["id"])] == [
        "trigger.created"]
    assert await version(api, trigger["id"]) == 1
    changed = await api.client.patch(path, {"name": "steady-2"})
    assert changed.status == 200, changed.body
    assert await version(api, trigger["id"]) == 2


async def test_a_deadlock_retried_writes_its_entry_once(api: ApiDaemon) -> None:
    trigger = await create(api.client, hook_body("contended"))
    # The first audit insert fails as a deadlock victim would; a MyISAM counter is not
    # rolled back with the transaction, so the retry goes through.
    await api.db.execute("CREATE TABLE fail_once (n INT NOT NULL) ENGINE=MyISAM")
    await api.db.execute("INSERT INTO fail_once VALUES (1)")
    await api.db.execute(
        "CREATE TRIGGER audit_deadlocks BEFORE INSERT ON audit_log FOR EACH ROW BEGIN"
        " IF (SELECT n FROM fail_once) > 0 THEN UPDATE fail_once SET n = n - 1;"
        " SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'Deadlock found';"
        " END IF; END"
    )
    try:
        reply = await api.client.patch(f"{BASE}/{trigger['id']}", {"name": "contended-2"})
        assert reply.status == 200, reply.body
        left = await api.db.fetchone("SELECT n FROM fail_once")
        assert left == {"n": 0}  # the deadlock did happen
    finally:
        await api.db.execute("DROP TRIGGER audit_deadlocks")
        await api.db.execute("DROP TABLE fail_once")
    found = await entries(api.client, trigger_id=trigger["id"])
    assert [e["action"] for e in found] == ["trigger.updated", "trigger.created"]
    assert found[0]["changes"] == {"name": ["contended", "contended-2"]}
    assert await version(api, trigger["id"]) == 2


async def seed(api: ApiDaemon, trigger_id: str) -> None:
    """Entries of two actors and three actions an hour apart, oldest first."""
    start = utcnow() - timedelta(days=3)
    plan = [("alice", Action.TRIGGER_CREATED), ("bob", Action.TRIGGER_UPDATED),
            ("alice", Action.TRIGGER_UPDATED), ("bob", Action.TRIGGER_DELETED)] * 3  # fmt: skip
    async with api.db.transaction() as cur:
        await record_many(cur, [
            AuditEntry(action, Origin(actor, f"seed-{i}"), start + timedelta(hours=i), trigger_id)
            for i, (actor, action) in enumerate(plan)])  # fmt: skip


async def test_filters_and_pagination(api: ApiDaemon) -> None:
    trigger_id = str(uuid.uuid4())
    await seed(api, trigger_id)
    client = api.client
    everything = await entries(client, trigger_id=trigger_id, limit="100")
    assert [e["request_id"] for e in everything] == [f"seed-{i}" for i in reversed(range(12))]
    assert len(await entries(client, trigger_id=trigger_id, actor="alice")) == 6
    bob_updates = await entries(client, trigger_id=trigger_id, actor="bob",
                                action="trigger.updated")  # fmt: skip
    assert [e["request_id"] for e in bob_updates] == ["seed-9", "seed-5", "seed-1"]
    since, until = everything[8]["at"], everything[4]["at"]  # seed-3 (kept) .. seed-7 (not)
    window = await entries(client, trigger_id=trigger_id, since=since, until=until)
    assert [e["request_id"] for e in window] == ["seed-6", "seed-5", "seed-4", "seed-3"]

    page = await client.get(AUDIT, trigger_id=trigger_id, page="2", limit="5")
    assert page.body["pagination"] == {"current_page": 2, "page_size": 5, "total_pages": 3,
                                       "total_records": 12}  # fmt: skip
    assert [e["request_id"] for e in page.body["entries"]] == [
        f"seed-{i}" for i in (6, 5, 4, 3, 2)]
    past = await client.get(AUDIT, trigger_id=trigger_id, page="9", limit="5")
    assert past.body["entries"] == [] and past.body["pagination"]["total_records"] == 12
    assert await entries(client, trigger_id=str(uuid.uuid4())) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"trigger_id": "nope"}, "trigger_id"), ({"actor": "a b"}, "actor"),
     ({"actor": "x" * 65}, "actor"), ({"action": "trigger.exploded"}, "action"),
     ({"since": "yesterday"}, "since"), ({"until": "2026-13-01"}, "until"),
     ({"since": "2026-02-01", "until": "2026-01-01"}, "since"), ({"page": "0"}, "page"),
     ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit")],
)  # fmt: skip
async def test_bad_parameters_are_400_naming_them(
    api: ApiDaemon, params: dict[str, str], field: str
) -> None:
    reply = await api.client.get(AUDIT, **params)
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "validation_error"
    assert reply.field == field


@pytest.mark.parametrize(
    ("flt", "index"),
    [(AuditFilter(), "ix_audit_at"),
     (AuditFilter(since=utcnow() - timedelta(days=1)), "ix_audit_at"),
     (AuditFilter(trigger_id=str(uuid.uuid4())), "ix_audit_trigger"),
     (AuditFilter(actor="alice", until=utcnow()), "ix_audit_actor"),
     (AuditFilter(action="trigger.deleted"), "ix_audit_action")],
)  # fmt: skip
async def test_the_list_is_served_by_indexes(
    api: ApiDaemon, flt: AuditFilter, index: str
) -> None:
    if (await api.db.fetchone("SELECT COUNT(*) AS n FROM audit_log"))["n"] < 2000:  # type: ignore[index]
        for _ in range(20):
            await seed(api, str(uuid.uuid4()))
        async with api.db.transaction() as cur:
            await record_many(cur, [AuditEntry(Action.TRIGGER_TEST_RUN, Origin(f"bot-{i % 50}"),
                                               utcnow() - timedelta(minutes=i), str(uuid.uuid4()),
                                               str(uuid.uuid4())) for i in range(2000)])
        await api.db.fetchall("ANALYZE TABLE audit_log")
    sql, params = list_sql(flt)
    plan = await api.db.fetchall("EXPLAIN " + sql, {**params, "limit": 20, "offset": 0})
    assert len(plan) == 1, plan
    assert plan[0]["key"] == index, plan
    assert "filesort" not in (plan[0]["Extra"] or ""), plan


async def test_an_open_api_records_anonymous(db_server: Any, kafka_bootstrap: str,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    log_dir = tmp_path_factory.mktemp("open")
    async with api_daemon(db_server, kafka_bootstrap, log_dir) as open_api:
        trigger = await create(open_api.client, hook_body("open"))
        [entry] = await entries(open_api.client, trigger_id=trigger["id"])
        assert (entry["actor"], entry["action"]) == ("anonymous", "trigger.created")
        assert to_iso(parse_iso_utc(entry["at"])) == trigger["created_at"]

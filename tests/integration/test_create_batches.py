"""Creates that arrive together share a transaction (store.triggers `_write_creates`):
a `triggerd run --roles api` subprocess on a real MariaDB, the transactions told apart by
a test trigger on `audit_log` that notes the statement that wrote each entry.

Batches are made deterministic by holding both of the store's flushes (its concurrency
is 2) in a slow INSERT, so the creates sent meanwhile queue up and go in one batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.integration.api_daemon import URL, ApiDaemon, Reply, api_daemon
from tests.support import wait_until
from triggerd.domain.timeutil import from_db, parse_iso_utc, to_iso

BASE = "/api/v1/triggers"
HOLD_SECONDS = 2  # how long a `slow-*` trigger's INSERT sleeps

_PROBE = ("CREATE TABLE create_probe (trigger_id CHAR(36) CHARACTER SET ascii NOT NULL,"
          " stmt VARCHAR(64) NOT NULL) ENGINE=InnoDB")  # fmt: skip
# The statement that wrote each audit entry, by its connection and start time (NOW(6) is
# the statement's, not the row's), noted in the transaction that wrote the entry: a
# statement runs inside one transaction, and a rolled-back one leaves no note.
_NOTE_STATEMENT = ("CREATE TRIGGER audit_probe AFTER INSERT ON audit_log FOR EACH ROW"
                   " INSERT INTO create_probe VALUES (NEW.trigger_id,"
                   " CONCAT(CONNECTION_ID(), '@', NOW(6)))")  # fmt: skip
_HOLD = ("CREATE TRIGGER triggers_hold BEFORE INSERT ON triggers FOR EACH ROW"
         f" IF NEW.name LIKE 'slow-%' THEN SET @held = SLEEP({HOLD_SECONDS}); END IF")
# A data error in the middle of a create's transaction (after its trigger row).
_POISON = ("CREATE TRIGGER labels_poison BEFORE INSERT ON trigger_labels FOR EACH ROW"
           " IF NEW.label_value = 'poison' THEN SIGNAL SQLSTATE '45000'"
           " SET MESSAGE_TEXT = 'poisoned label'; END IF")  # fmt: skip


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("batches")) as d:
        yield d


@contextlib.asynccontextmanager
async def probed(api: ApiDaemon, *extra: str) -> AsyncIterator[None]:
    """The probe table and triggers (and `extra` ones) for the test's duration."""
    await api.db.execute(_PROBE)
    statements = [_NOTE_STATEMENT, _HOLD, *extra]
    try:
        for statement in statements:
            await api.db.execute(statement)
        yield
    finally:
        for statement in statements:
            name = statement.split()[2]
            await api.db.execute(f"DROP TRIGGER IF EXISTS {name}")
        await api.db.execute("DROP TABLE create_probe")


def body(name: str, n: int, label: str | None = None) -> dict[str, Any]:
    return {"name": name, "type": "interval_scheduled",
            "labels": {"team": "a", "n": label if label is not None else str(n)},
            "config": {"endpoint": URL, "interval_seconds": 3600 + n,
                       "payload": {"k": n}}}  # fmt: skip


async def post(api: ApiDaemon, data: dict[str, Any], request_id: str) -> Reply:
    return await api.client.post(BASE, data, headers={"X-Request-ID": request_id})


async def inserting(api: ApiDaemon, n: int) -> bool:
    row = await api.db.fetchone(
        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST"
        " WHERE STATE = 'User sleep' AND INFO LIKE '%@held%'"
    )
    return row is not None and int(row["n"]) >= n


async def hold_both_flushes(api: ApiDaemon) -> list[asyncio.Task[Reply]]:
    """Two creates whose INSERTs sleep, each in a flush of its own (the second sent once
    the first is inside the database): the creates sent next queue behind them."""
    held = []
    for k in (1, 2):
        held.append(asyncio.create_task(post(api, body(f"slow-{k}", 100 + k), f"slow-{k}")))
        await wait_until(lambda k=k: inserting(api, k),  # type: ignore[misc]
                         what=f"slow create {k} in the database")  # fmt: skip
    return held


async def statements_of(api: ApiDaemon, trigger_ids: list[str]) -> dict[str, str]:
    """The statement that wrote each trigger's audit entry."""
    rows = await api.db.fetchall("SELECT trigger_id, stmt FROM create_probe")
    found = {row["trigger_id"]: row["stmt"] for row in rows}
    return {trigger_id: found[trigger_id] for trigger_id in trigger_ids}


def created_changes(sent: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The audit `changes` of a create: every field and set config key, from nothing."""
    return {"name": [None, sent["name"]], "type": [None, sent["type"]],
            "status": [None, "active"], "labels": [None, sent["labels"]],
            **{f"config.{key}": [None, value] for key, value in answer["config"].items()
               if value is not None}}  # fmt: skip


async def assert_stored_alone(api: ApiDaemon, sent: dict[str, Any], reply: Reply,
                              request_id: str) -> None:  # fmt: skip
    """What a create stores, and nothing else: its trigger row, labels, one pending
    occurrence and one audit entry of its own request."""
    assert reply.status == 201, reply.body
    answer = reply.body
    trigger_id = answer["id"]
    assert answer["name"] == sent["name"] and answer["labels"] == sent["labels"]
    assert answer["config"]["payload"] == sent["config"]["payload"]
    assert answer["created_at"] == answer["updated_at"]
    got = await api.client.get(f"{BASE}/{trigger_id}")
    assert got.status == 200 and got.body == answer
    row = await api.trigger_row(trigger_id)
    assert row is not None
    assert (row["name"], row["type"], row["status"], row["version"]) == (
        sent["name"], "interval_scheduled", "active", 1)
    assert orjson.loads(row["config"]) == answer["config"]  # no secrets to redact here
    assert to_iso(from_db(row["created_at"])) == answer["created_at"]
    assert to_iso(from_db(row["updated_at"])) == answer["created_at"]
    labels = await api.db.fetchall(
        "SELECT label_key, label_value FROM trigger_labels WHERE trigger_id = %(id)s",
        {"id": trigger_id},
    )
    assert {r["label_key"]: r["label_value"] for r in labels} == sent["labels"]
    schedules = await api.db.fetchall(
        "SELECT scheduled_for, status, attempt_count FROM trigger_schedules"
        " WHERE trigger_id = %(id)s", {"id": trigger_id},
    )  # fmt: skip
    assert [(to_iso(from_db(r["scheduled_for"])), r["status"], r["attempt_count"])
            for r in schedules] == [(answer["next_scheduled_run"], "pending", 0)]  # fmt: skip
    entries = await api.db.fetchall(
        "SELECT at, actor, action, event_id, request_id, changes FROM audit_log"
        " WHERE trigger_id = %(id)s", {"id": trigger_id},
    )  # fmt: skip
    assert len(entries) == 1, entries
    [entry] = entries
    assert (entry["actor"], entry["action"], entry["event_id"], entry["request_id"]) == (
        "anonymous", "trigger.created", None, request_id)
    assert to_iso(from_db(entry["at"])) == answer["created_at"]
    assert orjson.loads(entry["changes"]) == created_changes(sent, answer)
    assert parse_iso_utc(answer["next_scheduled_run"]) > parse_iso_utc(answer["created_at"])


async def test_concurrent_creates_share_a_transaction_and_each_stores_its_own(
    api: ApiDaemon,
) -> None:
    async with probed(api):
        lone = body("lone", 0)
        lone_reply = await post(api, lone, "req-lone")
        held = await hold_both_flushes(api)
        sent = [body(f"batched-{n}", n) for n in range(20)]
        replies = await asyncio.gather(*(post(api, data, f"req-{n}")
                                         for n, data in enumerate(sent)))  # fmt: skip
        for reply in await asyncio.gather(*held):
            assert reply.status == 201, reply.body
        ids = [reply.body["id"] for reply in replies]
        stmt = await statements_of(api, [lone_reply.body["id"], *ids])
    assert len(set(ids)) == 20
    # The twenty waited behind the held flushes and went in one transaction: their
    # audit entries in one statement. The lone create had its own.
    assert len({stmt[i] for i in ids}) == 1
    assert stmt[lone_reply.body["id"]] != stmt[ids[0]]
    # Each stored exactly what a create alone stores (the lone one the same way).
    await assert_stored_alone(api, lone, lone_reply, "req-lone")
    for n, (data, reply) in enumerate(zip(sent, replies, strict=True)):
        await assert_stored_alone(api, data, reply, f"req-{n}")


async def test_one_bad_create_in_a_batch_fails_alone(api: ApiDaemon) -> None:
    triggers_before = await api.db.fetchone("SELECT COUNT(*) AS n FROM triggers")
    async with probed(api, _POISON):
        held = await hold_both_flushes(api)
        sent = [body(f"mixed-{n}", n, label="poison" if n == 7 else None) for n in range(12)]
        replies = await asyncio.gather(*(post(api, data, f"mixed-{n}")
                                         for n, data in enumerate(sent)))  # fmt: skip
        for reply in await asyncio.gather(*held):
            assert reply.status == 201, reply.body
        good = [reply.body["id"] for n, reply in enumerate(replies) if n != 7]
        stmt = await statements_of(api, good)
    bad = replies[7]
    assert bad.status == 500 and bad.error["code"] == "internal_error", bad.body
    assert bad.error["request_id"] == "mixed-7"
    # The batch was rolled back and its creates written one by one.
    assert "a batch of 12 creates failed" in api.daemon.logs()
    assert len(set(stmt.values())) == len(good) == 11
    for n, (data, reply) in enumerate(zip(sent, replies, strict=True)):
        if n != 7:
            await assert_stored_alone(api, data, reply, f"mixed-{n}")
    # Nothing of the bad one is stored: no trigger, label, occurrence or audit entry.
    assert await api.db.fetchone("SELECT id FROM triggers WHERE name = 'mixed-7'") is None
    assert await api.db.fetchone(
        "SELECT COUNT(*) AS n FROM triggers") == {"n": triggers_before["n"] + 2 + 11}  # type: ignore[index]
    orphans = await api.db.fetchone(
        "SELECT (SELECT COUNT(*) FROM trigger_labels l LEFT JOIN triggers t ON t.id = l.trigger_id"
        "  WHERE t.id IS NULL) AS labels,"
        " (SELECT COUNT(*) FROM trigger_schedules s LEFT JOIN triggers t ON t.id = s.trigger_id"
        "  WHERE t.id IS NULL) AS schedules,"
        " (SELECT COUNT(*) FROM audit_log a LEFT JOIN triggers t ON t.id = a.trigger_id"
        "  WHERE t.id IS NULL) AS audit"
    )
    assert orphans == {"labels": 0, "schedules": 0, "audit": 0}

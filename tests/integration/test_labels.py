"""Trigger labels through the HTTP API, on a real MariaDB: set on create, returned on
every trigger, replaced whole by PUT/PATCH, and the `label=` list filter, which an index
serves (EXPLAIN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.api_daemon import URL, ApiDaemon, api_daemon
from triggerd.store import labels as labels_store

BASE = "/api/v1/triggers"


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("labels")) as running:
        yield running


@pytest.fixture
async def empty(api: ApiDaemon) -> ApiDaemon:
    await api.db.execute("DELETE FROM triggers")
    await api.db.execute("DELETE FROM trigger_labels")
    await api.db.execute("DELETE FROM trigger_schedules")
    return api


async def create(api: ApiDaemon, name: str, labels: Any = None, **extra: Any) -> dict[str, Any]:
    data = {"name": name, "type": "cron_scheduled",
            "config": {"endpoint": URL, "cron": "0 * * * *"}, **extra}  # fmt: skip
    if labels is not None:
        data["labels"] = labels
    reply = await api.client.post(BASE, data)
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def names(api: ApiDaemon, query: str) -> set[str]:
    reply = await api.client.get(f"{BASE}?{query}")
    assert reply.status == 200, reply.body
    assert reply.body["pagination"]["total_records"] == len(reply.body["triggers"])
    return {trigger["name"] for trigger in reply.body["triggers"]}


async def test_labels_are_returned_on_every_trigger(empty: ApiDaemon) -> None:
    api = empty
    made = await create(api, "labelled", {"team": "payments", "env": "prod"})
    bare = await create(api, "bare")
    assert made["labels"] == {"team": "payments", "env": "prod"}
    assert bare["labels"] == {}
    got = await api.client.get(f"{BASE}/{made['id']}")
    assert got.body["labels"] == {"team": "payments", "env": "prod"}
    listed = {t["name"]: t["labels"] for t in (await api.client.get(BASE)).body["triggers"]}
    assert listed == {"labelled": {"team": "payments", "env": "prod"}, "bare": {}}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_an_update_replaces_the_whole_set(empty: ApiDaemon, method: str) -> None:
    api = empty
    made = await create(api, "t", {"team": "payments", "env": "prod"})
    path = f"{BASE}/{made['id']}"
    renamed = await api.client.request(method, path, json={"name": "renamed"})
    assert renamed.body["labels"] == {"team": "payments", "env": "prod"}  # not given: kept
    replaced = await api.client.request(method, path, json={"labels": {"team": "risk"}})
    assert replaced.status == 200, replaced.body
    assert replaced.body["labels"] == {"team": "risk"}
    assert (await api.client.get(path)).body["labels"] == {"team": "risk"}
    cleared = await api.client.request(method, path, json={"labels": {}})
    assert cleared.body["labels"] == {}
    assert await api.db.fetchall("SELECT * FROM trigger_labels") == []
    # A trigger read with GET can be sent back whole.
    again = await api.client.request(method, path, json=(await api.client.get(path)).body)
    assert again.status == 200, again.body


async def test_a_deleted_trigger_leaves_no_labels(empty: ApiDaemon) -> None:
    made = await create(empty, "t", {"team": "payments"})
    assert (await empty.client.request("DELETE", f"{BASE}/{made['id']}")).status == 204
    assert await empty.db.fetchall("SELECT * FROM trigger_labels") == []


async def test_the_label_filter_keeps_triggers_carrying_every_pair(empty: ApiDaemon) -> None:
    api = empty
    await create(api, "pay-prod", {"team": "payments", "env": "prod"})
    await create(api, "pay-dev", {"team": "payments", "env": "dev"})
    await create(api, "risk-prod", {"team": "risk", "env": "prod"})
    await create(api, "no-team", {"env": "prod"})
    await create(api, "none")
    assert await names(api, "label=team:payments&label=env:prod") == {"pay-prod"}
    assert await names(api, "label=team:payments") == {"pay-prod", "pay-dev"}
    assert await names(api, "label=team:") == {"pay-prod", "pay-dev", "risk-prod"}
    assert await names(api, "label=env:prod&label=team:") == {"pay-prod", "risk-prod"}
    assert await names(api, "label=team:Payments") == set()  # values match exactly
    # Exactly, trailing spaces too (the column's collation would pad them away).
    spaced = await create(api, "spaced", {"team": "payments ", "env": " prod"})
    assert await names(api, "label=team:payments") == {"pay-prod", "pay-dev"}
    assert await names(api, "label=team:payments%20") == {"spaced"}
    assert await names(api, "label=env:prod%20") == set()
    assert (await api.client.request("DELETE", f"{BASE}/{spaced['id']}")).status == 204
    assert await names(api, "label=team:payments&status=inactive") == set()
    assert len(await names(api, "label=")) == 5  # empty: no filter
    page = await api.client.get(f"{BASE}?label=env:prod&limit=1&page=2")
    assert page.body["pagination"]["total_records"] == 3
    assert len(page.body["triggers"]) == 1


@pytest.mark.parametrize("query", ["label=team", "label=Team:x", "label=:x", "label=team%0A:x",
                                   "label=ok:1&label=bad", "label=team:" + "x" * 256])
async def test_a_bad_label_filter_is_a_400_naming_label(api: ApiDaemon, query: str) -> None:
    reply = await api.client.get(f"{BASE}?{query}")
    assert reply.status == 400
    assert reply.error["code"] == "validation_error"
    assert reply.field == "label"


@pytest.mark.parametrize(("labels", "field"), [
    ({"Team": "x"}, "labels.Team"), ({"team": 5}, "labels.team"), ("x", "labels"),
    ({f"k{i}": "v" for i in range(21)}, "labels"),
])  # fmt: skip
async def test_bad_labels_are_a_400_naming_them(api: ApiDaemon, labels: Any, field: str) -> None:
    data = {"name": "t", "type": "webhook", "labels": labels}
    reply = await api.client.post(BASE, data)
    assert reply.status == 400, reply.body
    assert reply.field == field


async def test_the_filter_is_served_by_the_index(empty: ApiDaemon) -> None:
    """With many triggers and few carrying the label, the plan starts from the label
    index (ix_trigger_labels_pair) and reads no table whole."""
    api = empty
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(2000)]
    row = "(%s, 't', 'webhook', 'active', '{}', 1, NOW(3), NOW(3))"
    await api.db.execute(
        "INSERT INTO triggers (id, name, type, status, config, version, created_at, updated_at)"
        " VALUES " + ", ".join([row] * len(ids)),
        ids,
    )
    rows = [(trigger_id, "team", f"t{i % 100}") for i, trigger_id in enumerate(ids)]
    rows += [(trigger_id, "env", "prod") for trigger_id in ids[::50]]
    await api.db.execute(
        "INSERT INTO trigger_labels (trigger_id, label_key, label_value) VALUES "
        + ", ".join(["(%s, %s, %s)"] * len(rows)),
        [value for row in rows for value in row],
    )
    await api.db.execute("ANALYZE TABLE triggers, trigger_labels")
    for query in ([("team", "t3")], [("env", None)], [("team", "t0"), ("env", "prod")]):
        clauses, params = labels_store.filters(query)
        plan = await api.db.fetchall(
            "EXPLAIN SELECT id FROM triggers WHERE " + " AND ".join(clauses), params)
        assert all(row["type"] != "ALL" for row in plan), plan  # no table read whole
        assert any(row["key"] == "ix_trigger_labels_pair" for row in plan), plan

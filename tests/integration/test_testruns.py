"""Test runs: one event now, is_test_run, source manual-test, same Kafka path,
no schedule touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest

from tests.integration.webhook_harness import Api, make_trigger, running_api
from tests.support import read_jobs
from triggerd.domain.timeutil import to_db, utcnow


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for()) as running:
        yield running


async def test_ephemeral_test_run_saves_no_trigger(api: Api, kafka_bootstrap: str,
                                                   topic: str) -> None:  # fmt: skip
    definition = {
        "name": "nightly", "type": "cron_scheduled",
        "config": {"cron": "0 3 * * *", "endpoint": "http://127.0.0.1:9/x",
                   "payload": {"report": "daily"}},
    }  # fmt: skip
    status, body = await api.post("/api/v1/triggers/test", definition)
    assert status == 202, body
    assert body["trigger_id"] is None and body["is_test_run"] is True
    row = await api.event_row(body["event_id"])
    assert row is not None
    assert row["trigger_id"] is None and row["trigger_name"] == "nightly"
    assert row["trigger_type"] == "cron_scheduled" and row["source"] == "manual-test"
    assert row["is_test_run"] == 1 and row["note"] == "test run"
    assert orjson.loads(row["payload"]) == {"report": "daily"}
    assert orjson.loads(row["delivery"])["endpoint"] == "http://127.0.0.1:9/x"
    for table in ("triggers", "trigger_schedules"):
        count = await api.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
        assert count is not None and count["n"] == 0, table
    jobs = await read_jobs(kafka_bootstrap, topic, count=1,
                           match=lambda j: j["event_id"] == body["event_id"])  # fmt: skip
    assert len(jobs) == 1
    assert jobs[0]["trigger_id"] is None and jobs[0]["is_test_run"] is True
    assert jobs[0]["source"] == "manual-test" and jobs[0]["payload"] == {"report": "daily"}


async def test_ephemeral_test_run_validates_like_create(api: Api) -> None:
    bad = [
        {"type": "webhook", "config": {}},
        {"name": "x", "type": "cron_scheduled", "config": {"cron": "nope"}},
        {"name": "x", "type": "webhook", "config": {"schema": {"type": 5}}},
    ]
    for body in bad:
        status, answer = await api.post("/api/v1/triggers/test", body)
        assert status == 400, answer
        assert answer["error"]["code"] == "validation_error"
    assert await api.count_events() == 0
    status, _ = await api.post("/api/v1/triggers/test", {"name": "w", "type": "webhook"})
    assert status == 202
    row = await api.db.fetchone("SELECT payload FROM event_logs")
    assert row is not None and orjson.loads(row["payload"]) == {}


async def test_stored_trigger_test_run_leaves_the_schedule_alone(
    api: Api, kafka_bootstrap: str, topic: str
) -> None:
    trigger_id = await make_trigger(
        api.db, type="interval_scheduled", status="inactive", name="every-hour",
        config={"interval_seconds": 3600, "payload": {"ping": True}},
    )  # fmt: skip
    fire_at = to_db(utcnow() + timedelta(minutes=30))
    now = to_db(utcnow())
    await api.db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, created_at,"
        " updated_at) VALUES (%s, %s, %s, 'pending', %s, %s)",
        (trigger_id, fire_at, fire_at, now, now),
    )
    before = await api.db.fetchall("SELECT * FROM trigger_schedules ORDER BY id")
    status, body = await api.post(f"/api/v1/triggers/{trigger_id}/test")
    assert status == 202, body
    assert body["trigger_id"] == trigger_id and body["source"] == "manual-test"
    row = await api.event_row(body["event_id"])
    assert row is not None
    assert row["source"] == "manual-test" and row["is_test_run"] == 1
    assert row["trigger_name"] == "every-hour" and row["scheduled_for"] is None
    assert orjson.loads(row["payload"]) == {"ping": True}
    assert await api.db.fetchall("SELECT * FROM trigger_schedules ORDER BY id") == before
    jobs = await read_jobs(kafka_bootstrap, topic, count=1,
                           match=lambda j: j["event_id"] == body["event_id"])  # fmt: skip
    assert len(jobs) == 1 and jobs[0]["_key"] == trigger_id
    assert jobs[0]["type"] == "interval_scheduled" and jobs[0]["is_test_run"] is True


async def test_payload_override_is_validated_for_webhook_triggers(api: Api) -> None:
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
    trigger_id = await make_trigger(api.db, config={"schema": schema})
    url = f"/api/v1/triggers/{trigger_id}/test"
    status, body = await api.post(url, {"payload": {"id": "seven"}})
    assert status == 400, body
    assert [v["path"] for v in body["error"]["details"]["violations"]] == ["/id"]
    assert await api.count_events() == 0
    status, body = await api.post(url, {"payload": {"id": 7}})
    assert status == 202, body
    row = await api.event_row(body["event_id"])
    assert row is not None and orjson.loads(row["payload"]) == {"id": 7}
    # Without an override: config.payload or {}, unvalidated.
    status, body = await api.post(url)
    assert status == 202, body
    row = await api.event_row(body["event_id"])
    assert row is not None and orjson.loads(row["payload"]) == {}


async def test_stored_trigger_test_run_errors(api: Api) -> None:
    trigger_id = await make_trigger(api.db)
    for path in ("/api/v1/triggers/not-a-uuid/test",
                 "/api/v1/triggers/6a0c1f5e-6d7a-4b7e-9a51-000000000000/test"):
        status, body = await api.post(path, {"payload": {}})
        assert status == 404, (path, body)
    url = f"/api/v1/triggers/{trigger_id}/test"
    for bad in ([1], {"payload": 1, "extra": True}):
        status, body = await api.post(url, bad)
        assert status == 400, (bad, body)
    status, body = await api.request("POST", url, data=b"{",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 400 and body["error"]["code"] == "malformed_json"
    assert await api.count_events() == 0

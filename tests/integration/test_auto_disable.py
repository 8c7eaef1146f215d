"""Auto-disable: a trigger whose endpoint kept failing for TRIGGERD_ENDPOINT_DISABLE_AFTER
without a success is set inactive with a status_reason, its pending occurrences
cancelled; setting it active again clears the reason. Real MariaDB, broker, local sink;
the API and the worker in-process on one database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.integration.webhook_harness import Api, running_api
from tests.integration.worker_harness import RunningWorker, running_worker, worker_settings
from tests.sink import Sink
from tests.support import wait_until
from triggerd.config import Settings

RETRY = {"max_attempts": 10, "backoff_seconds": 0.3, "max_backoff_seconds": 0.5}


@pytest.fixture
async def settings(db_server: Any, kafka_bootstrap: str) -> AsyncIterator[Settings]:
    async with worker_settings(db_server, kafka_bootstrap, endpoint_disable_after="1s",
                               circuit_failure_threshold=1000) as made:  # fmt: skip
        yield made


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[RunningWorker]:
    async with running_worker(settings) as running:
        yield running


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


async def test_a_failing_endpoint_disables_its_triggers_until_reactivated(
    worker: RunningWorker, api: Api, sink: Sink
) -> None:
    sink.program("/gone", 500)
    config = {"endpoint": sink.url("/gone"), "retry": RETRY}
    status, hook = await api.post("/api/v1/triggers", {"name": "hook", "type": "webhook",
                                                       "config": config})  # fmt: skip
    assert status == 201, hook
    assert hook["status_reason"] is None
    status, timer = await api.post("/api/v1/triggers", {
        "name": "hourly", "type": "interval_scheduled",
        "config": {**config, "interval_seconds": 3600}})  # fmt: skip
    assert status == 201 and timer["next_scheduled_run"] is not None, timer

    status, accepted = await api.post(f"/api/v1/webhook/{hook['id']}", {"n": 1})
    assert status == 202, accepted

    async def disabled() -> dict[str, Any] | None:
        _, body = await api.get(f"/api/v1/triggers/{hook['id']}")
        return body if body["status"] == "inactive" else None

    found = await wait_until(disabled, timeout=20, what="the trigger disabled")
    assert found["status_reason"].startswith("endpoint failing since 20"), found
    _, other = await api.get(f"/api/v1/triggers/{timer['id']}")
    assert other["status"] == "inactive" and other["status_reason"] == found["status_reason"]
    assert other["next_scheduled_run"] is None
    pending = await api.db.fetchone(
        "SELECT COUNT(*) AS n FROM trigger_schedules WHERE trigger_id = %s AND status"
        " IN ('pending', 'processing')", (timer["id"],))  # fmt: skip
    assert pending is not None and pending["n"] == 0
    disabled_total = worker.services.metrics.registry.get_sample_value(
        "triggerd_triggers_disabled_total")
    assert disabled_total == 2
    # Audited, actor `system`, in the transaction of the change.
    entries = await api.db.fetchall(
        "SELECT actor, action, trigger_id, request_id, changes FROM audit_log"
        " WHERE action = 'trigger.disabled' ORDER BY trigger_id")  # fmt: skip
    assert sorted(e["trigger_id"] for e in entries) == sorted([hook["id"], timer["id"]])
    for entry in entries:
        assert entry["actor"] == "system" and entry["request_id"] is None
        assert orjson.loads(entry["changes"]) == {
            "status": ["active", "inactive"], "status_reason": [None, found["status_reason"]]}

    # Set active again: the reason goes, the schedule resumes.
    status, again = await api.request("PUT", f"/api/v1/triggers/{timer['id']}",
                                      json={"status": "active"})  # fmt: skip
    assert status == 200, again
    assert again["status"] == "active" and again["status_reason"] is None
    assert again["next_scheduled_run"] is not None
    update = await api.db.fetchone(
        "SELECT changes FROM audit_log WHERE action = 'trigger.updated' AND trigger_id = %s",
        (timer["id"],))  # fmt: skip
    assert update is not None
    assert orjson.loads(update["changes"])["status_reason"] == [found["status_reason"], None]
    # A change that leaves it inactive keeps the reason.
    status, renamed = await api.request("PUT", f"/api/v1/triggers/{hook['id']}",
                                        json={"name": "renamed"})  # fmt: skip
    assert status == 200 and renamed["status_reason"] == found["status_reason"], renamed
    # A trigger read with GET can be sent back whole (status_reason is ignored on input).
    status, back = await api.request("PUT", f"/api/v1/triggers/{hook['id']}",
                                     json={**renamed, "status": "active"})  # fmt: skip
    assert status == 200 and back["status_reason"] is None, back


async def test_an_endpoint_that_answers_only_404_disables_its_trigger(
    worker: RunningWorker, api: Api, sink: Sink
) -> None:
    """A removed URL fails every delivery at once, without counting toward the circuit:
    it is failing all the same."""
    sink.program("/removed", 404)
    config = {"endpoint": sink.url("/removed"), "retry": {"max_attempts": 1}}
    status, hook = await api.post("/api/v1/triggers", {"name": "gone", "type": "webhook",
                                                       "config": config})  # fmt: skip
    assert status == 201, hook

    async def disabled() -> dict[str, Any] | None:
        await api.post(f"/api/v1/webhook/{hook['id']}", {"n": 1})  # 409 once inactive
        _, body = await api.get(f"/api/v1/triggers/{hook['id']}")
        return body if body["status"] == "inactive" else None

    found = await wait_until(disabled, timeout=20, interval=0.3, what="the trigger disabled")
    assert found["status_reason"].startswith("endpoint failing since 20"), found
    _, listed = await api.get("/api/v1/endpoints")
    endpoint = next(e for e in listed["endpoints"] if e["url"] == sink.url("/removed"))
    assert endpoint["consecutive_failures"] == 0  # the circuit does not count a 404
    assert endpoint["state"] == "closed" and endpoint["last_failure_at"] is not None

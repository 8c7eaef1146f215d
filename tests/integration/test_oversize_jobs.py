"""A job Kafka can never take (larger than TRIGGERD_KAFKA_MAX_REQUEST_SIZE) is refused
at ingest (413, nothing stored) or, when it reaches a publisher anyway, ends its event
`failed` with the reason and is never tried again: the ingest publisher (a replay), the
outbox relay, the scheduler. Real MariaDB, real embedded broker, the real HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.factories import InProcessScheduler, one_time_config, schedule_rows, soon
from tests.factories import insert_trigger as insert_scheduled_trigger
from tests.integration.webhook_harness import Api, insert_event, make_trigger, running_api
from tests.integration.worker_harness import (
    attempts_of,
    connected_bus,
    event_row,
    insert_trigger,
    job_for,
    running_worker,
    wait_status,
)
from tests.integration.worker_harness import insert_event as insert_owed_event
from tests.sink import Sink
from tests.support import read_jobs, wait_until
from triggerd.bus.producer import JobTooLarge
from triggerd.domain.timeutil import utcnow
from triggerd.store import outbox
from triggerd.store.db import Database

LIMIT = 20_000  # TRIGGERD_KAFKA_MAX_REQUEST_SIZE of the processes under test
BIG = {"blob": "x" * 30_000}  # its job is over LIMIT
SMALL = {"blob": "x" * 18_000}  # its job (a few hundred bytes more) is under LIMIT
REASON = "not published to Kafka, never retried"


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for(kafka_max_request_size=LIMIT,
                                        max_body=256 * 1024)) as running:  # fmt: skip
        yield running


async def count(db: Database, table: str) -> int:
    row = await db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
    return int(row["n"]) if row else 0


def assert_too_large(status: int, body: Any) -> None:
    assert status == 413, body
    error = body["error"]
    assert error["code"] == "payload_too_large", error
    assert str(LIMIT) in error["message"]
    assert "TRIGGERD_KAFKA_MAX_REQUEST_SIZE" in error["message"]
    assert error["details"]["limit_bytes"] == LIMIT
    assert error["details"]["job_bytes"] > LIMIT


async def test_the_producer_refuses_a_job_over_the_limit_and_sends_its_batch_mates(
    settings_for: Any, kafka_bootstrap: str, topic: str
) -> None:
    async with connected_bus(settings_for(kafka_max_request_size=LIMIT)) as bus:
        jobs = [job_for(None, payload={"n": 0}), job_for(None, payload=BIG),
                job_for(None, payload={"n": 1})]  # fmt: skip
        results = await bus.publish_many(jobs)
        assert isinstance(results[1], JobTooLarge) and not results[1].by_broker
        assert results[1].size is not None and results[1].size > LIMIT
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        # Batches made smaller (as after a broker's refusal): every job still goes out.
        bus.batch_bytes = 1
        more = [job_for(None, payload={"n": n}) for n in range(2, 6)]
        assert not any(isinstance(r, BaseException) for r in await bus.publish_many(more))
    published = await read_jobs(kafka_bootstrap, topic, count=6)
    assert sorted(j["payload"]["n"] for j in published) == [0, 1, 2, 3, 4, 5]


async def test_a_webhook_whose_job_is_over_the_limit_is_413_and_nothing_is_stored(
    api: Api, kafka_bootstrap: str, topic: str
) -> None:
    trigger_id = await make_trigger(api.db, config={"endpoint": "http://127.0.0.1:9/hook"})
    status, body = await api.post(f"/api/v1/webhook/{trigger_id}", BIG,
                                  headers={"Idempotency-Key": "big-1"})  # fmt: skip
    assert_too_large(status, body)
    assert await count(api.db, "event_logs") == 0
    assert await count(api.db, "idempotency_keys") == 0

    # Just under the limit: accepted and published as usual.
    status, body = await api.post(f"/api/v1/webhook/{trigger_id}", SMALL,
                                  headers={"Idempotency-Key": "big-1"})  # fmt: skip
    assert status == 202, body
    event_id = body["event_id"]
    jobs = await read_jobs(kafka_bootstrap, topic, count=1,
                           match=lambda j: j["event_id"] == event_id)  # fmt: skip
    assert len(jobs) == 1 and jobs[0]["payload"] == SMALL
    status, text = await api.request("GET", "/metrics")
    assert 'triggerd_webhook_requests_total{code="413"} 1.0' in text.decode()


async def test_test_runs_whose_job_is_over_the_limit_are_413(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"endpoint": "http://127.0.0.1:9/hook"})
    status, body = await api.post(f"/api/v1/triggers/{trigger_id}/test", {"payload": BIG})
    assert_too_large(status, body)
    # A definition that is not saved, carrying its payload in its config.
    definition = {"name": "big", "type": "webhook",
                  "config": {"endpoint": "http://127.0.0.1:9/hook", "payload": BIG}}
    status, body = await api.post("/api/v1/triggers/test", definition)
    assert_too_large(status, body)
    assert await count(api.db, "event_logs") == 0
    assert await count(api.db, "audit_log") == 0


async def test_a_trigger_payload_over_the_limit_is_a_400_on_the_field(api: Api) -> None:
    config = {"cron": "0 9 * * *", "timezone": "UTC", "endpoint": "http://127.0.0.1:9/hook"}
    for trigger_type, base in (("cron_scheduled", config), ("webhook", {})):
        status, body = await api.post("/api/v1/triggers", {
            "name": "big", "type": trigger_type, "config": {**base, "payload": BIG}})  # fmt: skip
        assert status == 400, body
        error = body["error"]
        assert error["details"]["field"] == "config.payload", error
        assert str(LIMIT) in error["message"] and error["details"]["limit_bytes"] == LIMIT
    assert await count(api.db, "triggers") == 0

    status, body = await api.post("/api/v1/triggers", {
        "name": "small", "type": "cron_scheduled", "config": {**config, "payload": SMALL}})
    assert status == 201, body
    trigger_id = body["id"]
    status, body = await api.request("PATCH", f"/api/v1/triggers/{trigger_id}",
                                     json={"config": {**config, "payload": BIG}})  # fmt: skip
    assert status == 400 and body["error"]["details"]["field"] == "config.payload", body
    status, body = await api.get(f"/api/v1/triggers/{trigger_id}")
    assert status == 200 and body["config"]["payload"] == SMALL


async def test_a_replay_over_the_limit_ends_failed_with_the_reason(api: Api) -> None:
    """The ingest publisher: an event accepted before the limit was lowered, replayed."""
    trigger_id = await make_trigger(api.db, config={"endpoint": "http://127.0.0.1:9/hook"})
    event_id = await insert_event(api.db, trigger_id=trigger_id, fired_at=utcnow(), attempts=1,
                                  execution_status="failed", payload=BIG)  # fmt: skip
    status, body = await api.post(f"/api/v1/events/{event_id}/replay")
    assert status == 202 and body["attempt"] == 2, body

    async def ended() -> dict[str, Any] | None:
        row = await api.event_row(event_id)
        return row if row and row["execution_status"] == "failed" and row["error_message"] \
            else None  # fmt: skip

    row = await wait_until(ended, timeout=10, what="the replay to end failed")
    assert REASON in row["error_message"] and str(LIMIT) in row["error_message"]
    assert row["publish_at"] is None and row["attempts"] == 2
    status, body = await api.get(f"/api/v1/events/{event_id}")
    assert status == 200 and body["execution_status"] == "failed"
    [attempt] = body["delivery_attempts"]
    assert attempt["attempt"] == 2 and REASON in attempt["error"]
    assert api.services.metrics.jobs_too_large._value.get() == 1


async def test_the_relay_ends_an_owed_job_over_the_limit_failed_and_stops(
    settings_for: Any, db: Database, sink: Sink
) -> None:
    """Rows owed before the daemon was started with a lower limit: the one too large
    ends failed with the reason, its neighbour is delivered, nothing is owed any more."""
    config = {"endpoint": sink.url("/owed")}
    trigger_id = await insert_trigger(db, config)
    big, small = job_for(trigger_id, payload=BIG), job_for(trigger_id, payload={"n": 1})
    for job in (big, small):
        await insert_owed_event(db, job, config, publish_at=utcnow() - timedelta(seconds=1))
    async with running_worker(settings_for(kafka_max_request_size=LIMIT),
                              wait_assigned=False) as worker:  # fmt: skip
        row = await wait_status(db, big.event_id, "failed")
        await wait_status(db, small.event_id, "success")
        metrics = worker.services.metrics
        assert metrics.jobs_too_large._value.get() == 1
        assert metrics.publish_failures._value.get() == 0  # refused, not retried
    assert REASON in row["error_message"] and str(LIMIT) in row["error_message"]
    assert row["publish_at"] is None and row["published_at"] is None
    [attempt] = await attempts_of(db, big.event_id)
    assert attempt["attempt"] == 1 and attempt["finished_at"] is not None
    assert REASON in attempt["error"]
    # Not owed at any time to come: no relay claims it again.
    owed = await outbox.claim_due(db, utcnow() + timedelta(days=365),
                                  utcnow() + timedelta(days=366), 100)  # fmt: skip
    assert owed == []
    assert (await event_row(db, big.event_id))["execution_status"] == "failed"
    assert [r.json() for r in sink.requests("/owed")] == [{"n": 1}]


async def test_the_scheduler_fires_an_occurrence_over_the_limit_as_failed(
    settings_for: Any, db: Database
) -> None:
    """A trigger saved before the limit was lowered: its occurrence completes, its event
    ends failed with the reason, the row is not retried."""
    run_at = soon(1.0)
    trigger_id = await insert_scheduled_trigger(db, "time_scheduled",
                                                one_time_config(run_at, payload=BIG))  # fmt: skip
    sched = await InProcessScheduler(settings_for(kafka_max_request_size=LIMIT), db).start()
    try:
        async def completed() -> list[dict[str, Any]]:
            rows = await schedule_rows(db, trigger_id)
            return rows if rows and rows[0]["status"] == "completed" else []

        [occurrence] = await wait_until(completed, timeout=15, what="the occurrence completed")
        assert occurrence["attempt_count"] == 1 and occurrence["retry_at"] is None
        row = await event_row(db, occurrence["event_id"])
        assert row["execution_status"] == "failed" and row["source"] == "scheduler"
        assert REASON in row["error_message"] and row["publish_at"] is None
        assert sched.metric("triggerd_jobs_too_large_total") == 1
        assert sched.metric("triggerd_publish_failures_total") == 0
        assert sched.metric("triggerd_fires_total", type="time_scheduled",
                            source="scheduler") == 0  # fmt: skip
    finally:
        await sched.stop()

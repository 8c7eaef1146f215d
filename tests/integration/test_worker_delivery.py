"""The worker in-process against the real MariaDB, the real broker and a local sink:
Kafka job → HTTP delivery → recorded attempt and event state."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.worker_harness import (
    FAST_RETRY,
    RunningWorker,
    attempts_of,
    event_row,
    find_event,
    insert_event,
    insert_trigger,
    job_for,
    processed_at_least,
    running_worker,
    wait_status,
    worker_settings,
)
from tests.sink import Reply, Sink
from tests.support import wait_until
from triggerd.domain.timeutil import utcnow
from triggerd.store.db import Database


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[Sink]:
    async with Sink() as running:
        yield running


@pytest.fixture(scope="module")
async def worker(db_server: Any, kafka_bootstrap: str) -> AsyncIterator[RunningWorker]:
    """One worker for the module (each test makes its own triggers, events and paths)."""
    async with (
        worker_settings(db_server, kafka_bootstrap, worker_concurrency=20) as settings,
        running_worker(settings) as running,
    ):
        yield running


@pytest.fixture
def db(worker: RunningWorker) -> Database:
    return worker.services.db


def sample(worker: RunningWorker, name: str, **labels: str) -> float:
    value = worker.services.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def fire(worker: RunningWorker, db: Database, config: dict[str, Any],
               payload: Any = None) -> str:  # fmt: skip
    """A trigger with `config`, one event row for it, and its job on Kafka."""
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id, payload=payload)
    await insert_event(db, job, config)
    await worker.publish(job)
    return job.event_id


async def test_delivers_once_with_the_contract_headers(worker: RunningWorker, db: Database,
                                                       sink: Sink) -> None:  # fmt: skip
    config = {
        "endpoint": sink.url("/hook"), "http_method": "PUT",
        "headers": {"X-Custom": "yes", "Idempotency-Key": "not-this", "content-type": "text/x"},
    }  # fmt: skip
    payload = {"order": 42, "items": ["a", "b"], "note": "ünïcode"}
    successes = sample(worker, "triggerd_deliveries_total", outcome="success")
    attempts = sample(worker, "triggerd_delivery_attempts_total")
    event_id = await fire(worker, db, config, payload)

    row = await wait_status(db, event_id, "success")
    [hit] = await sink.wait_for(1, "/hook")
    assert hit.method == "PUT"
    assert hit.json() == payload
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["Idempotency-Key"] == event_id
    assert hit.headers["X-Event-Id"] == event_id
    assert hit.headers["X-Trigger-Id"] == row["trigger_id"]
    assert hit.headers["X-Custom"] == "yes"
    assert "webhook-signature" not in hit.headers
    assert row["attempts"] == 1 and row["response_status"] == 200
    assert row["delivered_at"] is not None and row["error_message"] is None
    [attempt] = await attempts_of(db, event_id)
    assert attempt["attempt"] == 1 and attempt["response_status"] == 200
    assert attempt["finished_at"] is not None and attempt["latency_ms"] >= 0
    await asyncio.sleep(0.3)
    assert len(sink.requests("/hook")) == 1
    assert sample(worker, "triggerd_deliveries_total", outcome="success") == successes + 1
    assert sample(worker, "triggerd_delivery_attempts_total") == attempts + 1
    assert sample(worker, "triggerd_delivery_latency_seconds_count") >= 1


async def test_server_errors_are_retried_up_to_max_attempts(worker: RunningWorker, db: Database,
                                                            sink: Sink) -> None:  # fmt: skip
    sink.program("/down", Reply(500, body="boom"))
    event_id = await fire(worker, db, {"endpoint": sink.url("/down"), "retry": FAST_RETRY})

    row = await wait_status(db, event_id, "failed")
    assert row["attempts"] == 3 and row["response_status"] == 500
    assert "500" in row["error_message"] and "boom" in row["error_message"]
    assert row["publish_at"] is None
    attempts = await attempts_of(db, event_id)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["response_status"] == 500 and a["finished_at"] for a in attempts)
    await asyncio.sleep(0.5)
    hits = sink.requests("/down")
    assert len(hits) == 3
    assert {h.headers["Idempotency-Key"] for h in hits} == {event_id}


async def test_client_errors_fail_at_once(worker: RunningWorker, db: Database,
                                          sink: Sink) -> None:  # fmt: skip
    sink.program("/bad", 400)
    event_id = await fire(worker, db, {"endpoint": sink.url("/bad"), "retry": FAST_RETRY})

    row = await wait_status(db, event_id, "failed")
    assert row["attempts"] == 1 and row["response_status"] == 400
    assert len(await attempts_of(db, event_id)) == 1
    await asyncio.sleep(0.5)
    assert len(sink.requests("/bad")) == 1


async def test_succeeds_on_the_third_attempt(worker: RunningWorker, db: Database,
                                             sink: Sink) -> None:  # fmt: skip
    sink.program("/flaky", 503, 502, 200)
    event_id = await fire(worker, db, {"endpoint": sink.url("/flaky"), "retry": FAST_RETRY})

    row = await wait_status(db, event_id, "success")
    assert row["attempts"] == 3 and row["response_status"] == 200
    assert row["error_message"] is None
    statuses = [a["response_status"] for a in await attempts_of(db, event_id)]
    assert statuses == [503, 502, 200]


async def test_retry_after_is_honoured(worker: RunningWorker, db: Database, sink: Sink) -> None:
    sink.program("/busy", Reply(429, headers={"Retry-After": "2"}), 200)
    retry = {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 10}
    event_id = await fire(worker, db, {"endpoint": sink.url("/busy"), "retry": retry})

    await wait_status(db, event_id, "success")
    first, second = sink.requests("/busy")
    # Without Retry-After the backoff would have retried within 0.05 s (plus polling).
    assert second.at - first.at >= 1.9
    assert second.at - first.at < 6


async def test_a_slow_target_does_not_delay_another(worker: RunningWorker, db: Database,
                                                    sink: Sink) -> None:  # fmt: skip
    gate = sink.hold("/slow")
    slow = await fire(worker, db, {"endpoint": sink.url("/slow"), "timeout_seconds": 30})
    await sink.wait_for(1, "/slow")
    started = time.monotonic()
    fast = [await fire(worker, db, {"endpoint": sink.url(f"/fast{i}")}) for i in range(3)]
    for event_id in fast:
        await wait_status(db, event_id, "success", timeout=10)
    assert time.monotonic() - started < 5  # generous: the promise is "not blocked", not speed
    assert (await event_row(db, slow))["execution_status"] == "pending"
    gate.set()
    await wait_status(db, slow, "success")


async def test_webhook_event_without_endpoint_ends_published(worker: RunningWorker,
                                                             db: Database) -> None:  # fmt: skip
    event_id = await fire(worker, db, {})
    row = await wait_status(db, event_id, "published")
    assert row["attempts"] == 0 and row["publish_at"] is None
    assert await attempts_of(db, event_id) == []


async def test_same_job_twice_delivers_once(worker: RunningWorker, db: Database,
                                            sink: Sink) -> None:  # fmt: skip
    config = {"endpoint": sink.url("/once")}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    before = worker.processed
    await worker.publish(job, job)

    await wait_until(lambda: processed_at_least(worker, before + 2), what="both copies processed")
    row = await wait_status(db, job.event_id, "success")
    assert row["attempts"] == 1
    assert len(await attempts_of(db, job.event_id)) == 1
    assert len(sink.requests("/once")) == 1
    count = await db.fetchone(
        "SELECT COUNT(*) AS n FROM event_logs WHERE trigger_id = %(t)s", {"t": trigger_id}
    )
    assert count is not None and count["n"] == 1


async def test_an_unfinished_attempt_is_delivered_again_in_the_same_row(
    worker: RunningWorker, db: Database, sink: Sink
) -> None:
    """A worker died mid-delivery: its attempt row has no finish. The redelivered job
    delivers again and completes that row (no second attempt record)."""
    config = {"endpoint": sink.url("/again")}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    await db.execute(
        "INSERT INTO delivery_attempts (event_id, attempt, started_at)"
        " VALUES (%(id)s, 1, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE)", {"id": job.event_id},
    )  # fmt: skip
    await worker.publish(job)

    row = await wait_status(db, job.event_id, "success")
    assert row["attempts"] == 1
    [attempt] = await attempts_of(db, job.event_id)
    assert attempt["finished_at"] is not None and attempt["response_status"] == 200
    assert len(sink.requests("/again")) == 1


async def test_a_job_ahead_of_its_event_row_is_materialized(worker: RunningWorker, db: Database,
                                                            sink: Sink) -> None:  # fmt: skip
    """The scheduler publishes before it commits: its job waits for the row, or (when
    the row never comes) the row is written from the job and the trigger. A webhook job
    never comes before its row (the API commits first): without a row it is skipped."""
    config = {"endpoint": sink.url("/early"), "headers": {"X-From": "trigger"},
              "cron": "0 0 1 1 *"}  # fmt: skip
    trigger_id = await insert_trigger(db, config, name="early bird", type="cron_scheduled")
    fired = functools.partial(job_for, type="cron_scheduled", source="scheduler")
    late_row = fired(trigger_id, payload={"late": True})
    never_row = fired(trigger_id, payload={"never": True})
    orphan = fired("00000000-0000-4000-8000-000000000000")  # no event, no trigger
    webhook_job = job_for(trigger_id, payload={"webhook": True})
    await worker.publish(orphan, late_row, never_row, webhook_job)

    await asyncio.sleep(0.5)  # the publisher commits its row a moment after publishing
    await insert_event(db, late_row, config)
    row = await wait_status(db, late_row.event_id, "success")
    assert row["trigger_name"] == "worker-test"  # the publisher's row, not a materialized one

    row = await wait_status(db, never_row.event_id, "success")
    assert row["trigger_name"] == "early bird" and row["trigger_type"] == "cron_scheduled"
    assert row["source"] == "scheduler"
    assert orjson.loads(row["payload"]) == {"never": True}
    assert orjson.loads(row["delivery"])["headers"] == {"X-From": "trigger"}
    bodies = [r.json() for r in sink.requests("/early")]
    assert sorted(bodies, key=str) == [{"late": True}, {"never": True}]
    assert await find_event(db, orphan.event_id) is None
    assert await find_event(db, webhook_job.event_id) is None


async def test_jobs_the_event_never_owed_are_not_delivered(worker: RunningWorker, db: Database,
                                                           sink: Sink) -> None:  # fmt: skip
    """Jobs nobody in triggerd published (written to the topic by hand, or left from
    before a restore) deliver nothing and bring back no deleted event: a later attempt
    than the event owes; a retry whose event row is gone; a scheduler's first attempt
    fired before the retention horizon (retention has deleted its row)."""
    config = {"endpoint": sink.url("/unowed")}
    trigger_id = await insert_trigger(db, config)
    done = job_for(trigger_id, payload={"first": True})
    await insert_event(db, done, config)
    await worker.publish(done)
    await wait_status(db, done.event_id, "success")

    ahead = dataclasses.replace(done, attempt=2, payload={"ahead": True})
    retry_of_gone = job_for(trigger_id, attempt=3, payload={"retry": True})
    expired = dataclasses.replace(job_for(trigger_id, payload={"expired": True},
                                          source="scheduler"),
                                  fired_at=utcnow() - timedelta(hours=49))  # fmt: skip
    control = job_for(trigger_id, payload={"control": True}, source="scheduler")  # written
    before = worker.processed
    await worker.publish(ahead, retry_of_gone, expired, control)

    await wait_status(db, control.event_id, "success")
    await wait_until(lambda: processed_at_least(worker, before + 4), what="all four consumed")
    assert [r.json() for r in sink.requests("/unowed")] == [{"first": True}, {"control": True}]
    row = await event_row(db, done.event_id)
    assert (row["attempts"], row["execution_status"]) == (1, "success")
    assert len(await attempts_of(db, done.event_id)) == 1
    assert await find_event(db, retry_of_gone.event_id) is None
    assert await find_event(db, expired.event_id) is None



WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize("secret", [WHSEC, "plain-secret"])
async def test_signed_deliveries_verify(worker: RunningWorker, db: Database, sink: Sink,
                                        secret: str) -> None:  # fmt: skip
    path = f"/signed-{secret[:5]}"
    event_id = await fire(worker, db, {"endpoint": sink.url(path), "signing_secret": secret},
                          payload={"signed": True})  # fmt: skip
    await wait_status(db, event_id, "success")
    [hit] = sink.requests(path)
    assert hit.headers["webhook-id"] == event_id
    timestamp = int(hit.headers["webhook-timestamp"])
    assert abs(timestamp - time.time()) < 60
    # Recompute independently of triggerd.worker.signing.
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + hit.body, hashlib.sha256)
    assert hit.headers["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()
    if secret.startswith("whsec_"):
        standardwebhooks = pytest.importorskip("standardwebhooks")
        verified = standardwebhooks.Webhook(secret).verify(hit.body, dict(hit.headers))
        assert verified == {"signed": True}


async def test_malformed_messages_are_skipped(worker: RunningWorker, db: Database,
                                              sink: Sink) -> None:  # fmt: skip
    config = {"endpoint": sink.url("/after-garbage")}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    settings = worker.services.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        before = worker.processed
        key = trigger_id.encode()  # the same partition as the good job, ahead of it
        await producer.send_and_wait(settings.kafka_topic, b"not json", key=key)
        await producer.send_and_wait(settings.kafka_topic, b'{"event_id": "x"}', key=key)
    finally:
        await producer.stop()
    await worker.publish(job)
    await wait_status(db, job.event_id, "success")
    await wait_until(lambda: processed_at_least(worker, before + 3), what="all three consumed")

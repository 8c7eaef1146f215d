"""Endpoint circuits against the real MariaDB, broker and a local sink: a flaky endpoint
opens after the threshold, gets no attempt during the cool-down, closes on a successful
probe, and every delivery that waited arrives exactly once with no attempt used up by
waiting; a failed probe doubles the cool-down; other endpoints are not held up; the
state is shared through the database (another worker process respects it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.worker_harness import (
    RunningWorker,
    attempts_of,
    insert_event,
    insert_trigger,
    job_for,
    running_worker,
    wait_status,
    worker_settings,
)
from tests.sink import Sink
from tests.support import wait_until
from triggerd.domain.circuit import endpoint_key
from triggerd.domain.timeutil import from_db, to_db, utcnow
from triggerd.store.db import Database

THRESHOLD = 3
COOLDOWN = 1.0
RETRY = {"max_attempts": 20, "backoff_seconds": 0.05, "max_backoff_seconds": 0.1}


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[Sink]:
    async with Sink() as running:
        yield running


@pytest.fixture(scope="module")
async def worker(db_server: Any, kafka_bootstrap: str) -> AsyncIterator[RunningWorker]:
    async with (
        worker_settings(db_server, kafka_bootstrap, circuit_failure_threshold=THRESHOLD,
                        circuit_cooldown=COOLDOWN, worker_concurrency=20) as settings,
        running_worker(settings) as running,
    ):  # fmt: skip
        yield running


@pytest.fixture
def db(worker: RunningWorker) -> Database:
    return worker.services.db


async def fire(worker: RunningWorker, url: str, *, trigger_id: str | None = None,
               config: dict[str, Any] | None = None) -> str:  # fmt: skip
    config = config or {"endpoint": url, "retry": RETRY}
    trigger_id = trigger_id or await insert_trigger(worker.services.db, config)
    job = job_for(trigger_id)
    await insert_event(worker.services.db, job, config)
    await worker.publish(job)
    return job.event_id


async def endpoint_row(db: Database, url: str) -> dict[str, Any]:
    row = await db.fetchone("SELECT * FROM endpoints WHERE url_hash = %s", (endpoint_key(url),))
    assert row is not None, url
    return row


def transitions(worker: RunningWorker, to: str) -> float:
    value = worker.services.metrics.registry.get_sample_value(
        "triggerd_circuit_transitions_total", {"to": to})
    return value or 0.0


async def test_flaky_endpoint_opens_waits_probes_and_closes(worker: RunningWorker, db: Database,
                                                            sink: Sink) -> None:  # fmt: skip
    url = sink.url("/flaky")
    sink.program("/flaky", 503, 503, 503, 200)
    opened_before = transitions(worker, "open")
    first = await fire(worker, url)
    await sink.wait_for(THRESHOLD, path="/flaky")

    async def is_open() -> bool:
        return (await endpoint_row(db, url))["state"] == "open"

    await wait_until(is_open, timeout=10, what="the circuit open")
    # Deliveries that fall due meanwhile wait: not attempted, no attempt used up.
    waiting = [await fire(worker, url) for _ in range(4)]
    row = await endpoint_row(db, url)
    probe_at = from_db(row["next_probe_at"])
    assert probe_at is not None
    for event_id in waiting:
        await wait_until(lambda e=event_id: _postponed(db, e), timeout=10, what="put off")

    everyone = [first, *waiting]
    for event_id in everyone:
        await wait_status(db, event_id, "success", timeout=20)
    hits = sink.requests("/flaky")
    # three failures, then one delivery each: the first event's fourth attempt, or a
    # waiting one as the probe; nobody twice
    assert len(hits) == THRESHOLD + len(everyone), [h.headers["X-Event-Id"] for h in hits]
    assert sorted(h.headers["X-Event-Id"] for h in hits[THRESHOLD:]) == sorted(everyone)
    # nothing reached the endpoint during the cool-down
    assert hits[THRESHOLD].at - hits[THRESHOLD - 1].at >= COOLDOWN - 0.05
    for event_id in waiting:
        assert len(await attempts_of(db, event_id)) == 1, event_id
    assert len(await attempts_of(db, first)) == THRESHOLD + 1
    row = await endpoint_row(db, url)
    assert row["state"] == "closed" and row["consecutive_failures"] == 0
    assert row["last_success_at"] is not None and row["failing_since"] is None
    assert transitions(worker, "open") == opened_before + 1
    assert transitions(worker, "closed") >= 1 and transitions(worker, "half_open") >= 1


async def _postponed(db: Database, event_id: str) -> bool:
    row = await db.fetchone("SELECT execution_status, attempts, publish_at FROM event_logs"
                            " WHERE id = %s", (event_id,))  # fmt: skip
    return bool(row and row["execution_status"] == "pending" and row["attempts"] == 0
                and row["publish_at"] is not None)  # fmt: skip


async def test_a_failed_probe_doubles_the_cooldown_and_others_go_on(
    worker: RunningWorker, db: Database, sink: Sink
) -> None:
    url = sink.url("/dead")
    sink.program("/dead", 503)
    await fire(worker, url)
    hits = await sink.wait_for(THRESHOLD + 2, path="/dead", timeout=20)
    gaps = [b.at - a.at for a, b in zip(hits[THRESHOLD - 1 :], hits[THRESHOLD:], strict=False)]
    assert COOLDOWN - 0.05 <= gaps[0] < COOLDOWN + 1.0, gaps  # the first cool-down
    assert 2 * COOLDOWN - 0.05 <= gaps[1] < 2 * COOLDOWN + 1.0, gaps  # doubled
    row = await endpoint_row(db, url)
    assert row["state"] in ("open", "half_open") and row["cooldown_ms"] >= 2000

    # Another endpoint is not held up by this one.
    other = await fire(worker, sink.url("/fine"))
    started = utcnow()
    done = await wait_status(db, other, "success", timeout=5)
    assert (from_db(done["delivered_at"]) or started) - started < timedelta(seconds=2)


async def test_an_open_circuit_written_elsewhere_is_respected(worker: RunningWorker,
                                                              db: Database,
                                                              sink: Sink) -> None:  # fmt: skip
    """Another process opened the circuit: this worker's cache sees it within a second."""
    url = sink.url("/elsewhere")
    await wait_status(db, await fire(worker, url), "success")  # known and cached: closed
    assert worker.role.processor is not None
    circuits = worker.role.processor.gate.circuits

    async def success_recorded() -> bool:
        await circuits.refresh_once()  # as it does every second
        return (await endpoint_row(db, url))["last_success_at"] is not None

    # A healthy endpoint's success is written by the refresher, not by the delivery.
    await wait_until(success_recorded, timeout=5, what="last_success_at written")
    probe_at = utcnow() + timedelta(seconds=3)
    await db.execute(
        "UPDATE endpoints SET state = 'open', consecutive_failures = 10, opened_at = %s,"
        " next_probe_at = %s, cooldown_ms = 3000 WHERE url_hash = %s",
        (to_db(utcnow()), to_db(probe_at), endpoint_key(url)),
    )
    await circuits.refresh_once()
    event_id = await fire(worker, url)
    await wait_until(lambda: _postponed(db, event_id), timeout=10, what="put off")
    assert len(sink.requests("/elsewhere")) == 1
    await wait_status(db, event_id, "success", timeout=15)
    second = sink.requests("/elsewhere")[1]
    assert second.headers["X-Event-Id"] == event_id
    assert len(await attempts_of(db, event_id)) == 1
    assert utcnow() >= probe_at


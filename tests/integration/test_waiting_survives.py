"""Deliveries that wait (an open circuit, a rate limit) wait in the database, not in a
worker: another worker process respects a circuit it did not open, and a worker killed
(-9) while deliveries wait loses none of them. `triggerd run --roles worker`
subprocesses, the real MariaDB and broker, a local sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.worker_harness import (
    attempts_of,
    connected_bus,
    insert_event,
    insert_trigger,
    job_for,
    wait_status,
)
from tests.sink import Sink
from tests.support import Daemon, wait_until
from triggerd.bus.producer import Bus
from triggerd.domain.circuit import endpoint_key
from triggerd.store.db import Database

pytestmark = pytest.mark.e2e

COOLDOWN = 15.0  # long enough for a second worker to join while the circuit is open
RETRY = {"max_attempts": 20, "backoff_seconds": 0.05, "max_backoff_seconds": 0.1}


@pytest.fixture
async def bus(settings_for: Any) -> AsyncIterator[Bus]:
    async with connected_bus(settings_for()) as running:
        yield running


def worker(start_daemon: Any, group: str) -> Daemon:
    """A worker process in a consumer group of its own: it joins at once (no waiting for
    a killed member's session to expire) and re-reads the topic, which the attempt-row
    idempotency absorbs."""
    return start_daemon(roles="worker", env={
        "TRIGGERD_KAFKA_GROUP": group, "TRIGGERD_CIRCUIT_FAILURE_THRESHOLD": "3",
        "TRIGGERD_CIRCUIT_COOLDOWN": f"{COOLDOWN}s",
    })  # fmt: skip


async def fire(db: Database, bus: Bus, config: dict[str, Any],
               trigger_id: str | None = None) -> str:  # fmt: skip
    trigger_id = trigger_id or await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    await bus.publish(job)
    return job.event_id


async def warm_up(db: Database, bus: Bus, sink: Sink, path: str) -> None:
    """A delivery that succeeds: the worker is up and owns the partitions."""
    event_id = await fire(db, bus, {"endpoint": sink.url(path)})
    await wait_status(db, event_id, "success", timeout=60)


async def waiting(db: Database, event_id: str) -> bool:
    row = await db.fetchone("SELECT execution_status, attempts, publish_at, published_at"
                            " FROM event_logs WHERE id = %s", (event_id,))  # fmt: skip
    return bool(row and row["execution_status"] in ("pending", "retrying")
                and row["publish_at"] is not None and row["published_at"] is not None)


async def test_open_circuit_shared_by_workers_and_survives_a_kill(
    start_daemon: Any, db: Database, bus: Bus, sink: Sink
) -> None:
    url = sink.url("/down")
    sink.program("/down", 503, 503, 503, 200)
    config = {"endpoint": url, "retry": RETRY}
    trigger_id = await insert_trigger(db, config)

    first = worker(start_daemon, "g-first")
    await warm_up(db, bus, sink, "/warm-1")
    failing = await fire(db, bus, config, trigger_id)
    await sink.wait_for(3, path="/down", timeout=30)

    async def is_open() -> bool:
        row = await db.fetchone("SELECT state FROM endpoints WHERE url_hash = %s",
                                (endpoint_key(url),))  # fmt: skip
        return bool(row and row["state"] == "open")

    await wait_until(is_open, timeout=10, what="the circuit open")
    await wait_until(lambda: waiting(db, failing), timeout=10, what="its retry put off")
    first.kill()

    # A second worker process respects the circuit the first one opened.
    second = worker(start_daemon, "g-second")
    await warm_up(db, bus, sink, "/warm-2")
    later = [await fire(db, bus, config, trigger_id) for _ in range(4)]
    for event_id in later:
        await wait_until(lambda e=event_id: waiting(db, e), timeout=20, what="put off")
    assert len(sink.requests("/down")) == 3
    # Killed while they wait: none is lost.
    second.kill()

    worker(start_daemon, "g-third")
    everyone = [failing, *later]
    for event_id in everyone:
        await wait_status(db, event_id, "success", timeout=60)
    hits = sink.requests("/down")
    assert sorted(h.headers["X-Event-Id"] for h in hits[3:]) == sorted(everyone)
    assert hits[3].at - hits[2].at >= COOLDOWN - 0.1  # nothing during the cool-down
    for event_id in later:
        assert len(await attempts_of(db, event_id)) == 1
    assert len(await attempts_of(db, failing)) == 4


async def test_rate_limited_deliveries_survive_a_kill(start_daemon: Any, db: Database,
                                                      bus: Bus, sink: Sink) -> None:  # fmt: skip
    config = {"endpoint": sink.url("/paced"), "rate_limit_per_second": 1}
    trigger_id = await insert_trigger(db, config)
    first = worker(start_daemon, "g-rate-1")
    await warm_up(db, bus, sink, "/warm-r1")
    events = [await fire(db, bus, config, trigger_id) for _ in range(6)]
    await sink.wait_for(1, path="/paced", timeout=30)

    async def most_wait() -> bool:  # one a second goes out meanwhile
        return sum([await waiting(db, e) for e in events]) >= 3

    await wait_until(most_wait, timeout=10, what="deliveries put off")
    first.kill()

    worker(start_daemon, "g-rate-2")
    for event_id in events:
        await wait_status(db, event_id, "success", timeout=60)
    hits = sink.requests("/paced")
    assert sorted(h.headers["X-Event-Id"] for h in hits) == sorted(events)  # each once
    for event_id in events:
        assert len(await attempts_of(db, event_id)) == 1


"""Per-trigger rate limits against the real MariaDB, broker and a local sink: starts at
most `rate_limit_per_second`, evenly spaced, none dropped, no attempt used up by waiting,
and other triggers' deliveries not held up."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.webhook_harness import running_api
from tests.integration.worker_harness import (
    RunningWorker,
    attempts_of,
    insert_events_of,
    insert_trigger,
    job_for,
    running_worker,
    wait_status,
    worker_settings,
)
from tests.sink import Sink


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[Sink]:
    async with Sink() as running:
        yield running


@pytest.fixture(scope="module")
async def worker(db_server: Any, kafka_bootstrap: str) -> AsyncIterator[RunningWorker]:
    async with (
        worker_settings(db_server, kafka_bootstrap, worker_concurrency=20) as settings,
        running_worker(settings) as running,
    ):
        yield running


def rate_limited(worker: RunningWorker) -> float:
    value = worker.services.metrics.registry.get_sample_value("triggerd_rate_limited_total")
    return value or 0.0


async def test_twelve_at_four_per_second_are_spaced_and_others_pass(
    worker: RunningWorker, sink: Sink
) -> None:
    db = worker.services.db
    limited = {"endpoint": sink.url("/limited"), "rate_limit_per_second": 4}
    trigger_id = await insert_trigger(db, limited)
    jobs = [job_for(trigger_id) for _ in range(12)]
    await insert_events_of(db, jobs, limited)
    counted = rate_limited(worker)
    await worker.publish(*jobs)
    await sink.wait_for(2, path="/limited", timeout=20)

    # Meanwhile another trigger's delivery goes straight through.
    free = {"endpoint": sink.url("/free")}
    other = job_for(await insert_trigger(db, free))
    await insert_events_of(db, [other], free)
    sent = time.monotonic()
    await worker.publish(other)
    [arrived] = await sink.wait_for(1, path="/free", timeout=10)
    assert arrived.at - sent < 1.0, arrived.at - sent
    assert len(sink.requests("/limited")) < 12  # the limited ones were still waiting

    for job in jobs:
        await wait_status(db, job.event_id, "success", timeout=30)
    hits = sink.requests("/limited")
    assert sorted(h.headers["X-Event-Id"] for h in hits) == sorted(j.event_id for j in jobs)
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    # Measured where the requests arrive, not where they start: one request that takes
    # a few ms longer on its way (a busy loop on a shared machine) brings the next one
    # closer by as much, while on average they stay at least 1/rate apart.
    assert min(gaps) >= 0.25 - 0.015, gaps
    assert 11 * 0.25 <= hits[-1].at - hits[0].at < 11 * 0.25 + 2.0  # paced, not stalled
    for job in jobs:
        assert len(await attempts_of(db, job.event_id)) == 1  # waiting used no attempt
    assert rate_limited(worker) >= counted + 10


async def test_rate_limit_is_per_trigger(worker: RunningWorker, sink: Sink) -> None:
    db = worker.services.db
    config_a = {"endpoint": sink.url("/per-a"), "rate_limit_per_second": 1}
    config_b = {"endpoint": sink.url("/per-b"), "rate_limit_per_second": 1}
    jobs_a = [job_for(await insert_trigger(db, config_a))]
    jobs_b = [job_for(await insert_trigger(db, config_b))]
    await insert_events_of(db, jobs_a, config_a)
    await insert_events_of(db, jobs_b, config_b)
    await worker.publish(*jobs_a, *jobs_b)
    [a] = await sink.wait_for(1, path="/per-a", timeout=10)
    [b] = await sink.wait_for(1, path="/per-b", timeout=10)
    assert abs(a.at - b.at) < 0.5  # neither waited for the other's limit


@pytest.mark.parametrize("value", [0, -1, 10_001, "fast", True])
async def test_the_api_checks_the_rate(settings_for: Any, value: Any) -> None:
    async with running_api(settings_for()) as api:
        config = {"endpoint": "https://receiver.example/hook", "rate_limit_per_second": value}
        status, body = await api.post("/api/v1/triggers", {"name": "x", "type": "webhook",
                                                           "config": config})  # fmt: skip
        assert status == 400, body
        assert body["error"]["details"]["field"] == "config.rate_limit_per_second"


async def test_the_api_keeps_the_rate(settings_for: Any) -> None:
    async with running_api(settings_for()) as api:
        config = {"endpoint": "https://receiver.example/hook", "rate_limit_per_second": 0.5}
        status, body = await api.post("/api/v1/triggers", {"name": "x", "type": "webhook",
                                                           "config": config})  # fmt: skip
        assert status == 201, body
        assert body["config"]["rate_limit_per_second"] == 0.5

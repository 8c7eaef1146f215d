"""Deliveries reach only allowed destinations (no server-side request forgery): refused
IP literals at create, update and both test routes; refused addresses at connect, after
DNS, recorded as one failed attempt. Real MariaDB, broker and a local sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.webhook_harness import Api, make_trigger, running_api
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
from tests.support import ALLOW_LOOPBACK

# One address of each refused range, as it appears in a URL.
REFUSED_HOSTS = [
    "127.0.0.1", "[::1]", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "[fd00::1]", "[fe80::1]", "[::ffff:10.0.0.1]", "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::1]", "0.0.0.0", "224.0.0.1", "192.0.2.1",
]  # fmt: skip


def endpoint(host: str) -> str:
    return f"http://{host}:8080/hook"


# --- the API: IP literals refused up front ---------------------------------------------


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for(delivery_allow_networks="")) as running:
        yield running


def assert_refused(status: int, body: Any) -> None:
    assert status == 400, body
    error = body["error"]
    assert error["details"]["field"] == "config.endpoint", error
    assert "destination not allowed" in error["message"], error


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_create_and_ephemeral_test_refuse_each_range(api: Api, host: str) -> None:
    body = {"name": "x", "type": "webhook", "config": {"endpoint": endpoint(host)}}
    assert_refused(*await api.post("/api/v1/triggers", body))
    assert_refused(*await api.post("/api/v1/triggers/test", body))


async def test_update_and_stored_test_refuse_a_refused_literal(api: Api) -> None:
    status, created = await api.post("/api/v1/triggers", {
        "name": "x", "type": "webhook", "config": {"endpoint": "http://93.184.216.34/hook"}})
    assert status == 201, created
    change = {"config": {"endpoint": endpoint("169.254.169.254")}}
    assert_refused(*await api.request("PUT", f"/api/v1/triggers/{created['id']}", json=change))
    # A trigger stored before the operator narrowed the allow list: its test run is refused.
    stored = await make_trigger(api.db, config={"endpoint": endpoint("10.1.2.3")})
    assert_refused(*await api.post(f"/api/v1/triggers/{stored}/test", {}))
    # Changing something else of it is not (its deliveries fail, with the reason).
    renamed = await api.request("PUT", f"/api/v1/triggers/{stored}", json={"name": "renamed"})
    assert renamed[0] == 200, renamed


async def test_host_names_are_not_resolved_at_create(api: Api) -> None:
    body = {"name": "x", "type": "webhook", "config": {"endpoint": "http://localhost:9/hook"}}
    status, created = await api.post("/api/v1/triggers", body)
    assert status == 201, created


async def test_allowed_networks_are_accepted(settings_for: Any) -> None:
    async with running_api(settings_for(delivery_allow_networks="10.0.0.0/8")) as api:
        body = {"name": "x", "type": "webhook", "config": {"endpoint": endpoint("10.9.8.7")}}
        status, created = await api.post("/api/v1/triggers", body)
        assert status == 201, created
        body["config"] = {"endpoint": endpoint("192.168.0.1")}
        assert_refused(*await api.post("/api/v1/triggers", body))
        # Allowed, but in a form the worker's HTTP client never connects to: a 400 now
        # rather than a delivery that fails on every attempt.
        for unreachable in ("10.9.8.7.", "10.1"):
            body["config"] = {"endpoint": endpoint(unreachable)}
            status, reply = await api.post("/api/v1/triggers", body)
            assert status == 400, reply
            assert reply["error"]["details"]["field"] == "config.endpoint", reply
            assert "four decimal numbers" in reply["error"]["message"], reply


# --- the worker: the address it connects to --------------------------------------------


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[Sink]:
    async with Sink() as running:
        yield running


@pytest.fixture(scope="module")
async def public_only(db_server: Any, kafka_bootstrap: str) -> AsyncIterator[RunningWorker]:
    """A worker with the default: public addresses only."""
    async with (
        worker_settings(db_server, kafka_bootstrap, delivery_allow_networks="") as settings,
        running_worker(settings) as running,
    ):
        yield running


async def deliver(worker: RunningWorker, url: str) -> str:
    db = worker.services.db
    config = {"endpoint": url, "retry": {"max_attempts": 3, "backoff_seconds": 0.05}}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    await worker.publish(job)
    return job.event_id


async def test_refused_at_connect_is_one_failed_attempt(public_only: RunningWorker,
                                                        sink: Sink) -> None:  # fmt: skip
    db = public_only.services.db
    urls = [endpoint(host) for host in REFUSED_HOSTS]
    urls.append(sink.url("/by-ip"))  # the sink itself, on 127.0.0.1
    events = [await deliver(public_only, url) for url in urls]
    for url, event_id in zip(urls, events, strict=True):
        row = await wait_status(db, event_id, "failed", "success", "retrying")
        assert row["execution_status"] == "failed", (url, row)
        assert row["attempts"] == 1 and row["response_status"] is None, (url, row)
        assert row["error_message"].startswith("destination not allowed"), (url, row)
        attempts = await attempts_of(db, event_id)
        assert len(attempts) == 1, (url, attempts)
        assert attempts[0]["response_status"] is None
        assert attempts[0]["error"].startswith("destination not allowed"), attempts[0]
    assert sink.requests("/by-ip") == []


async def test_a_name_resolving_to_loopback_is_refused(public_only: RunningWorker,
                                                       sink: Sink) -> None:  # fmt: skip
    event_id = await deliver(public_only, f"http://localhost:{sink.port}/by-name")
    row = await wait_status(public_only.services.db, event_id, "failed", "success")
    assert row["execution_status"] == "failed", row
    assert row["error_message"].startswith("destination not allowed: localhost"), row
    assert "loopback" in row["error_message"]
    assert sink.requests("/by-name") == []


async def test_a_name_resolving_to_loopback_is_delivered_when_allowed(
    db_server: Any, kafka_bootstrap: str, sink: Sink
) -> None:
    async with (
        worker_settings(db_server, kafka_bootstrap,
                        delivery_allow_networks=ALLOW_LOOPBACK) as settings,
        running_worker(settings) as worker,
    ):  # fmt: skip
        event_id = await deliver(worker, f"http://localhost:{sink.port}/allowed")
        row = await wait_status(worker.services.db, event_id, "success", "failed")
        assert row["execution_status"] == "success", row
    assert len(sink.requests("/allowed")) == 1

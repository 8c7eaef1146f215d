"""Metrics: `/metrics` is valid Prometheus text with every named metric; its
counters move when triggers fire and deliveries and webhooks happen; the row-count
gauges come from periodic grouped counts and drop vanished label sets to 0."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import wait_until
from triggerd.devstack import free_port
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.gauges import GaugeRefresher
from triggerd.metrics import Metrics
from triggerd.store.db import Database
from triggerd.store.retention import RowCounts

REQUIRED_METRICS = {
    "triggerd_triggers": "gauge",
    "triggerd_schedules": "gauge",
    "triggerd_fires_total": "counter",
    "triggerd_fire_delay_seconds": "histogram",
    "triggerd_publish_failures_total": "counter",
    "triggerd_deliveries_total": "counter",
    "triggerd_delivery_attempts_total": "counter",
    "triggerd_delivery_latency_seconds": "histogram",
    "triggerd_events": "gauge",
    "triggerd_webhook_requests_total": "counter",
    "triggerd_http_request_duration_seconds": "histogram",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family name (counters with their `_total`) -> type, and every sample's value."""
    families: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_every_spec_metric_is_registered() -> None:
    families, _ = parse(Metrics().render().decode())
    for name, kind in REQUIRED_METRICS.items():
        assert families.get(name) == kind, name


# --- gauges ------------------------------------------------------------------------------


async def add_trigger(db: Database, kind: str, status: str) -> str:
    trigger_id = str(uuid.uuid4())
    now = to_db(utcnow())
    await db.execute(
        "INSERT INTO triggers (id, name, type, status, config, created_at, updated_at)"
        " VALUES (%s, 'g', %s, %s, '{}', %s, %s)",
        (trigger_id, kind, status, now, now),
    )
    return trigger_id


async def test_gauges_count_rows_and_zero_vanished_labels(db: Database) -> None:
    now = utcnow()
    cron = await add_trigger(db, "cron_scheduled", "active")
    await add_trigger(db, "cron_scheduled", "active")
    await add_trigger(db, "webhook", "inactive")
    await add_trigger(db, "custom_type", "active")  # a label set nobody declared up front
    for offset, status in ((-30, "pending"), (60, "pending"), (-90, "completed")):
        await db.execute(
            "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (cron, to_db(now + timedelta(seconds=offset)), to_db(now + timedelta(seconds=offset)),
             status, to_db(now), to_db(now)),
        )
    for retention in ("active", "active", "archived"):
        await db.execute(
            "INSERT INTO event_logs (id, trigger_name, trigger_type, source, payload, fired_at,"
            " execution_status, retention_status, created_at)"
            " VALUES (%s, 'g', 'webhook', 'webhook', '{}', %s, 'success', %s, %s)",
            (str(uuid.uuid4()), to_db(now), retention, to_db(now)),
        )

    metrics = Metrics()
    refresher = GaugeRefresher(db, metrics)
    _, before = parse(metrics.render().decode())  # declared label sets exist at 0 at once
    assert ("triggerd_events", frozenset({("retention_status", "archived")})) in before
    await refresher.refresh()
    _, samples = parse(metrics.render().decode())
    assert value(samples, "triggerd_triggers", type="cron_scheduled", status="active") == 2
    assert value(samples, "triggerd_triggers", type="webhook", status="inactive") == 1
    assert value(samples, "triggerd_triggers", type="custom_type", status="active") == 1
    assert value(samples, "triggerd_schedules", status="pending") == 2
    assert value(samples, "triggerd_schedules", status="completed") == 1
    assert value(samples, "triggerd_events", retention_status="active") == 2
    assert value(samples, "triggerd_events", retention_status="archived") == 1
    assert 29 <= value(samples, "triggerd_schedule_lag_seconds") < 120

    # Above the exact limit a status is the table's row estimate minus the other counts.
    over = await RowCounts(db).events(exact_up_to=1)
    assert over[("archived",)] == 1 and over[("active",)] >= 2

    await db.execute("DELETE FROM triggers WHERE type = 'custom_type'")
    await db.execute("DELETE FROM event_logs WHERE retention_status = 'archived'")
    await db.execute("DELETE FROM trigger_schedules WHERE fire_at < %s", (to_db(now),))
    await refresher.refresh()
    _, samples = parse(metrics.render().decode())
    key = ("triggerd_triggers", frozenset({("type", "custom_type"), ("status", "active")}))
    assert samples[key] == 0  # reported as 0, not left at its last value
    assert value(samples, "triggerd_events", retention_status="archived") == 0
    assert value(samples, "triggerd_schedules", status="completed") == 0
    assert value(samples, "triggerd_schedule_lag_seconds") == 0  # only a future one is left


# --- counters, through a real daemon -----------------------------------------------------


@pytest.fixture
async def sink() -> AsyncIterator[dict[str, Any]]:
    """A local HTTP endpoint that answers 200 and counts what it received."""
    state: dict[str, Any] = {"received": 0}

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        state["received"] += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state["url"] = f"http://127.0.0.1:{port}/hook"
    yield state
    await runner.cleanup()


@pytest.mark.e2e
async def test_counters_move_with_fires_deliveries_and_webhooks(
    start_daemon: Any, sink: dict[str, Any]
) -> None:
    daemon = start_daemon()
    await daemon.wait_healthy()
    async with aiohttp.ClientSession() as http:

        async def scrape() -> tuple[dict[str, str], Samples]:
            async with http.get(f"{daemon.url}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                return parse(await resp.text())

        families, start = await scrape()
        for name, kind in REQUIRED_METRICS.items():
            assert families.get(name) == kind, name
        assert value(start, "triggerd_fires_total", type="interval_scheduled",
                     source="scheduler") == 0  # fmt: skip

        async def create(body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"{daemon.url}/api/v1/triggers", json=body) as resp:
                assert resp.status == 201, await resp.text()
                created: dict[str, Any] = await resp.json()
                return created

        await create({"name": "tick", "type": "interval_scheduled",
                      "config": {"interval_seconds": 1, "endpoint": sink["url"]}})  # fmt: skip
        hook = await create({"name": "hook", "type": "webhook",
                             "config": {"endpoint": sink["url"]}})  # fmt: skip
        async with http.post(f"{daemon.url}/api/v1/webhook/{hook['id']}", json={"a": 1}) as resp:
            assert resp.status == 202, await resp.text()
        missing = f"{daemon.url}/api/v1/webhook/{uuid.uuid4()}"
        async with http.post(missing, json={"a": 1}) as resp:
            assert resp.status == 404

        async def delivered() -> Samples | None:
            _, samples = await scrape()
            done = value(samples, "triggerd_deliveries_total", outcome="success")
            return samples if sink["received"] >= 3 and done >= 3 else None

        found = await wait_until(delivered, timeout=30, what="three successful deliveries")
        assert found is not None
        samples = found
        fires = value(samples, "triggerd_fires_total", type="interval_scheduled",
                      source="scheduler")  # fmt: skip
        assert fires >= 2
        assert value(samples, "triggerd_fires_total", type="webhook", source="webhook") == 1
        assert value(samples, "triggerd_fire_delay_seconds_count") >= 2
        assert value(samples, "triggerd_delivery_attempts_total") >= 3
        assert value(samples, "triggerd_delivery_latency_seconds_count") >= 3
        assert value(samples, "triggerd_publish_failures_total") == 0
        assert value(samples, "triggerd_webhook_requests_total", code="202") == 1
        assert value(samples, "triggerd_webhook_requests_total", code="404") == 1
        http_counts = {(dict(labels)["route"], dict(labels)["method"]): v
                       for (name, labels), v in samples.items()
                       if name == "triggerd_http_request_duration_seconds_count"}  # fmt: skip
        assert http_counts[("/api/v1/triggers", "POST")] == 2, http_counts
        webhook = {k: v for k, v in http_counts.items() if k[0].startswith("/api/v1/webhook/")}
        # One templated route for both requests (the 202 and the 404), not one per id.
        assert list(webhook.values()) == [2] and "{" in next(iter(webhook))[0], http_counts
        assert next(iter(webhook))[1] == "POST"

        # Counters keep moving as the interval trigger keeps firing.
        async def fired_again() -> bool:
            _, later = await scrape()
            now = value(later, "triggerd_fires_total", type="interval_scheduled",
                        source="scheduler")  # fmt: skip
            return now > fires

        await wait_until(fired_again, timeout=10, what="fires_total to grow")

        # The gauges follow within one refresh interval (15 s).
        async def counted() -> bool:
            _, later = await scrape()
            return (
                value(later, "triggerd_triggers", type="interval_scheduled", status="active") == 1
                and value(later, "triggerd_triggers", type="webhook", status="active") == 1
                and value(later, "triggerd_events", retention_status="active") >= 3
            )

        await wait_until(counted, timeout=25, interval=0.5, what="gauges refreshed")

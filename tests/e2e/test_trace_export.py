"""Span export over OTLP/HTTP, through the whole daemon (a subprocess) to a receiver in
the test that decodes the protobuf: one trace from the webhook request to each delivery
attempt, the scheduler's firings as traces of their own, and a stuck collector that
neither slows webhooks down nor grows the daemon's memory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.webhook_harness import make_trigger
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.sink import Sink
from tests.support import Daemon
from triggerd.domain.tracecontext import span_id, trace_id
from triggerd.store.db import Database

pytestmark = pytest.mark.e2e

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SERVICE = "triggerd-under-test"


def export_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": SERVICE,
            "OTEL_BSP_SCHEDULE_DELAY": "100", **extra}  # fmt: skip


def one(spans: list[ReceivedSpan], kind: str, name_start: str = "") -> ReceivedSpan:
    found = [s for s in spans if s.kind == kind and s.name.startswith(name_start)]
    assert len(found) == 1, (kind, name_start, spans)
    return found[0]


async def test_one_trace_from_the_webhook_request_to_each_delivery_attempt(
    start_daemon: Any, db: Database
) -> None:
    async with OtlpReceiver() as receiver, Sink() as sink, aiohttp.ClientSession() as http:
        sink.program("/hook", 503, 200)
        retry = {"max_attempts": 3, "backoff_seconds": 0.2, "max_backoff_seconds": 0.5}
        hook = await make_trigger(db, config={"endpoint": sink.url("/hook"), "retry": retry})
        daemon = start_daemon(roles="api,scheduler,worker", env=export_env(receiver))
        await daemon.wait_healthy()
        async with http.post(f"{daemon.url}/api/v1/webhook/{hook}", json={"n": 1},
                             headers={"traceparent": CALLER}) as resp:  # fmt: skip
            assert resp.status == 202, await resp.text()
        hits = await sink.wait_for(2, path="/hook")

        ours = trace_id(CALLER)
        spans = await receiver.wait_for(lambda s: s.trace_id == ours, count=6)
        assert all(s.resource["service.name"] == SERVICE for s in spans)
        server = one(spans, "server")
        assert server.name == "POST /api/v1/webhook/{trigger_id}"
        assert server.parent_span_id == span_id(CALLER)  # under the caller's span
        assert server.attributes["http.response.status_code"] == 202
        commit = one(spans, "internal", "ingest commit")
        assert commit.parent_span_id == server.span_id
        publishes = [s for s in spans if s.kind == "producer"]
        assert len(publishes) == 2  # the first attempt's job, and the retry's (relay)
        assert sorted(s.attributes["triggerd.attempt"] for s in publishes) == [1, 2]
        assert all(s.parent_span_id == server.span_id for s in publishes)

        clients = sorted((s for s in spans if s.kind == "client"),
                         key=lambda s: s.attributes["triggerd.attempt"])  # fmt: skip
        assert [s.attributes["http.response.status_code"] for s in clients] == [503, 200]
        assert [s.error for s in clients] == [True, False]
        # The client spans are the spans the target saw in its traceparent header.
        assert [s.span_id for s in clients] == [span_id(h.headers["traceparent"]) for h in hits]
        assert all(s.parent_span_id == server.span_id for s in clients)
        assert all(0 <= s.attributes["triggerd.latency_ms"] <= s.seconds * 1000 + 1
                   for s in clients)  # fmt: skip
        assert clients[0].attributes["url.full"] == sink.url("/hook")

        # A scheduled firing: its root span, and the delivery under it.
        once = {"name": "once", "type": "time_scheduled",
                "config": {"run_in": "1s", "endpoint": sink.url("/once")}}  # fmt: skip
        async with http.post(f"{daemon.url}/api/v1/triggers", json=once) as resp:
            assert resp.status == 201, await resp.text()
        [fired] = await sink.wait_for(1, path="/once", timeout=15)
        firing = trace_id(fired.headers["traceparent"])
        spans = await receiver.wait_for(lambda s: s.trace_id == firing, count=2)
        fire = one(spans, "producer", "fire time_scheduled")
        assert fire.parent_span_id == ""  # a root: a firing starts its trace
        assert fire.attributes["triggerd.event_id"] == fired.headers["X-Event-Id"]
        delivery = one(spans, "client")
        assert delivery.parent_span_id == fire.span_id
        assert delivery.attributes["http.response.status_code"] == 200


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _burst(http: aiohttp.ClientSession, url: str, count: int,
                 concurrency: int = 32) -> float:  # fmt: skip
    """POST `count` webhooks, `concurrency` at a time; returns requests per second."""
    queue = iter(range(count))

    async def client() -> None:
        for _ in queue:
            async with http.post(url, json={"n": 1}) as resp:
                assert resp.status == 202, await resp.text()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def test_a_stuck_collector_neither_slows_webhooks_nor_grows_memory(
    start_daemon: Any, db: Database
) -> None:
    """The exporter's requests hang (the collector accepts and never answers): spans
    pile up to the queue's bound and are dropped beyond it, while webhooks keep the pace
    they have when exporting to a collector that answers. That daemon is the yardstick,
    measured in turns with the stuck one (the machine's load drifts: a yardstick taken
    once, before, was beaten by what another test did meanwhile)."""
    hook = await make_trigger(db, config={})  # no endpoint: ingestion only
    async with (OtlpReceiver(hang=True) as stuck, OtlpReceiver(decode=False) as live,
                aiohttp.ClientSession() as http):  # fmt: skip
        plain = start_daemon(roles="api", env=export_env(live, OTEL_BSP_MAX_QUEUE_SIZE="512"))
        env = export_env(stuck, OTEL_BSP_MAX_QUEUE_SIZE="512")
        exporting: Daemon = start_daemon(roles="api", env=env)
        await asyncio.gather(plain.wait_healthy(), exporting.wait_healthy())
        plain_url = f"{plain.url}/api/v1/webhook/{hook}"
        url = f"{exporting.url}/api/v1/webhook/{hook}"
        await _burst(http, plain_url, 300)  # warm-up
        await _burst(http, url, 1500)  # warm-up, and the span queue fills up
        assert stuck.requests >= 1  # the exporter is waiting on the stuck collector
        assert exporting.proc is not None
        before = _rss_kib(exporting.proc.pid)
        yardsticks, rates = [], []
        for _ in range(3):
            yardsticks.append(await _burst(http, plain_url, 1500))
            rates.append(await _burst(http, url, 1500))
        grown = _rss_kib(exporting.proc.pid) - before
        assert plain.terminate() == 0
        stopping = time.monotonic()
        assert exporting.terminate() == 0  # the stuck export does not hold the exit either
        assert time.monotonic() - stopping < 8
        assert live.requests >= 1  # the yardstick did export
    yardstick = max(yardsticks)
    # 4,500 webhooks made ~13,500 spans; held, they would be tens of MB.
    assert grown < 8 * 1024, f"RSS grew {grown} KiB"
    assert max(rates) > 0.7 * yardstick, (rates, yardsticks)
    log = exporting.log_path.read_text()
    assert "Queue full, dropping Span" in log  # the bound held: spans were dropped
    assert log.count("Queue full, dropping Span") <= 3  # not one line per span

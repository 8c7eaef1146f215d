"""W3C trace context through the whole daemon (api, scheduler and worker as one
subprocess, span export off): a webhook's `traceparent` reaches the Kafka record's
headers, the event row and every delivery attempt with the same trace id and a new span
id each; webhooks without a valid one, scheduled firings, test runs and replays start
traces of their own."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.webhook_harness import make_trigger
from tests.sink import Received, Sink
from tests.support import read_jobs, wait_until
from triggerd.domain.tracecontext import parse_traceparent, span_id, trace_id
from triggerd.store.db import Database

pytestmark = pytest.mark.e2e

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sent_traceparent(hit: Received) -> str:
    value = parse_traceparent(hit.headers.get("traceparent"))
    assert value is not None, f"no valid traceparent in {dict(hit.headers)}"
    return value


async def stored_traceparent(db: Database, event_id: str) -> str:
    row = await db.fetchone("SELECT traceparent FROM event_logs WHERE id = %s", (event_id,))
    assert row is not None and parse_traceparent(row["traceparent"]) == row["traceparent"]
    return str(row["traceparent"])


async def test_trace_context_flows_from_request_to_every_attempt(
    start_daemon: Any, db: Database, kafka_bootstrap: str, topic: str
) -> None:
    async with Sink() as sink, aiohttp.ClientSession() as http:
        sink.program("/flaky", 503, 200)
        retry = {"max_attempts": 3, "backoff_seconds": 0.2, "max_backoff_seconds": 0.5}
        hook = await make_trigger(db, config={"endpoint": sink.url("/hook")})
        flaky = await make_trigger(db, config={"endpoint": sink.url("/flaky"), "retry": retry})
        daemon = start_daemon(roles="api,scheduler,worker")
        await daemon.wait_healthy()

        async def post(path: str, headers: dict[str, str] | None = None,
                       json: Any = None) -> dict[str, Any]:  # fmt: skip
            async with http.post(f"{daemon.url}{path}", json=json if json is not None else {},
                                 headers=headers or {}) as resp:  # fmt: skip
                assert resp.status == 202, await resp.text()
                return dict(await resp.json())

        # A caller's trace is continued: same trace id in the row, on Kafka, at the target.
        continued = (await post(f"/api/v1/webhook/{hook}", {"traceparent": CALLER}))["event_id"]
        [hit] = await sink.wait_for(1, path="/hook")
        assert hit.headers["X-Event-Id"] == continued
        row = await stored_traceparent(db, continued)
        sent = sent_traceparent(hit)
        assert trace_id(row) == trace_id(sent) == trace_id(CALLER)
        assert len({span_id(CALLER), span_id(row), span_id(sent)}) == 3
        [job] = await read_jobs(kafka_bootstrap, topic, count=1,
                                match=lambda j: j["event_id"] == continued)  # fmt: skip
        assert job["_headers"]["traceparent"] == row

        # Invalid or missing: ignored, never an error; a trace of its own starts.
        for headers in ({"traceparent": "00-nonsense"}, {"traceparent": CALLER.upper()}, {}):
            event_id = (await post(f"/api/v1/webhook/{hook}", headers))["event_id"]
            row = await stored_traceparent(db, event_id)
            assert trace_id(row) != trace_id(CALLER)
        hits = await sink.wait_for(4, path="/hook")
        assert len({trace_id(sent_traceparent(h)) for h in hits}) == 4

        # Retries: every attempt in the event's trace, each with a span of its own.
        retried = (await post(f"/api/v1/webhook/{flaky}", {"traceparent": CALLER}))["event_id"]
        attempts = await sink.wait_for(2, path="/flaky")
        first, second = (sent_traceparent(h) for h in attempts)
        assert trace_id(first) == trace_id(second) == trace_id(CALLER)
        assert span_id(first) != span_id(second)
        assert trace_id(await stored_traceparent(db, retried)) == trace_id(CALLER)

        # A test run and a replay each start a trace; the replay's becomes the event's.
        tested = (await post(f"/api/v1/triggers/{hook}/test", {"traceparent": CALLER}))
        hits = await sink.wait_for(5, path="/hook")
        [run] = [h for h in hits if h.headers["X-Event-Id"] == tested["event_id"]]
        assert trace_id(sent_traceparent(run)) != trace_id(CALLER)
        assert trace_id(sent_traceparent(run)) == trace_id(
            await stored_traceparent(db, tested["event_id"]))
        await post(f"/api/v1/events/{continued}/replay")
        hits = await sink.wait_for(6, path="/hook")
        replayed = [sent_traceparent(h) for h in hits if h.headers["X-Event-Id"] == continued]
        assert len(replayed) == 2 and trace_id(replayed[1]) != trace_id(CALLER)
        assert trace_id(await stored_traceparent(db, continued)) == trace_id(replayed[1])

        # A scheduled firing: a new trace, the same in its record, its row and its delivery.
        once = {"name": "once", "type": "time_scheduled",
                "config": {"run_in": "1s", "endpoint": sink.url("/once")}}  # fmt: skip
        async with http.post(f"{daemon.url}/api/v1/triggers", json=once) as resp:
            assert resp.status == 201, await resp.text()
            once_id = (await resp.json())["id"]
        [fired] = await sink.wait_for(1, path="/once", timeout=15)
        event_id = fired.headers["X-Event-Id"]
        [job] = await read_jobs(kafka_bootstrap, topic, count=1,
                                match=lambda j: j["trigger_id"] == once_id)  # fmt: skip
        row = await wait_until(lambda: _row_of(db, event_id), what="the firing's event row")
        assert job["_headers"]["traceparent"] == row
        assert trace_id(sent_traceparent(fired)) == trace_id(row)
        assert span_id(sent_traceparent(fired)) != span_id(row)

        # Per-role health, as the dashboard and TriggerdRoleNotRunning read it.
        async with http.get(f"{daemon.url}/metrics") as resp:
            text = await resp.text()
        up = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("triggerd_role_up{")}  # fmt: skip
        assert up == dict.fromkeys(["api", "scheduler", "worker", "ingest", "outbox_relay"], 1.0)


async def _row_of(db: Database, event_id: str) -> str | None:
    row = await db.fetchone("SELECT traceparent FROM event_logs WHERE id = %s", (event_id,))
    return None if row is None else str(row["traceparent"])

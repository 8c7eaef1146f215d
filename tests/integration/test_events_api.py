"""The events API (SPEC §3 "Events"): filters, order, pagination, detail with delivery
attempts, stats, replay, and the indexes behind the list queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.webhook_harness import Api, insert_event, make_trigger, running_api
from tests.support import read_jobs, wait_until
from triggerd.timeutil import to_db, to_iso, utcnow

EVENT_FIELDS = {"id", "trigger_id", "trigger_name", "trigger_type", "source", "is_test_run",
                "note", "payload", "scheduled_for", "fired_at", "execution_status", "attempts",
                "response_status", "error_message", "delivered_at", "retention_status",
                "created_at"}  # fmt: skip


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for()) as running:
        yield running


async def _ids(api: Api, **params: str) -> list[str]:
    status, body = await api.get("/api/v1/events", **params)
    assert status == 200, body
    return [e["id"] for e in body["events"]]


async def test_list_filters_order_and_pagination(api: Api) -> None:
    t1, t2 = "6a0c1f5e-6d7a-4b7e-9a51-000000000001", "6a0c1f5e-6d7a-4b7e-9a51-000000000002"
    now = utcnow()
    at = [now - timedelta(minutes=m) for m in range(10)]
    e = [
        await insert_event(api.db, trigger_id=t1, fired_at=at[0]),
        await insert_event(api.db, trigger_id=t1, fired_at=at[1], execution_status="success"),
        await insert_event(api.db, trigger_id=t2, fired_at=at[2], source="scheduler",
                           scheduled_for=at[2]),
        await insert_event(api.db, trigger_id=None, fired_at=at[3], source="manual-test",
                           is_test_run=True),
        await insert_event(api.db, trigger_id=t2, fired_at=at[4], retention_status="archived",
                           execution_status="failed"),
    ]  # fmt: skip
    assert await _ids(api) == e[:4]  # active only, newest first
    assert await _ids(api, retention_status="archived") == [e[4]]
    assert await _ids(api, retention_status="all") == e
    assert await _ids(api, trigger_id=t2) == [e[2]]
    assert await _ids(api, trigger_id=t2, retention_status="all") == [e[2], e[4]]
    assert await _ids(api, source="scheduler") == [e[2]]
    assert await _ids(api, execution_status="success") == [e[1]]
    assert await _ids(api, is_test_run="true") == [e[3]]
    assert await _ids(api, is_test_run="false") == e[:3]
    assert await _ids(api, since=to_iso(at[2]) or "", until=to_iso(at[0]) or "") == [e[1], e[2]]

    status, body = await api.get("/api/v1/events", limit="2", page="2", retention_status="all")
    assert status == 200
    assert [x["id"] for x in body["events"]] == e[2:4]
    assert body["pagination"] == {"current_page": 2, "page_size": 2, "total_pages": 3,
                                  "total_records": 5}  # fmt: skip
    status, body = await api.get("/api/v1/events", page="9")
    assert status == 200 and body["events"] == [] and body["pagination"]["total_records"] == 4

    event = (await api.get("/api/v1/events", source="scheduler"))[1]["events"][0]
    assert set(event) == EVENT_FIELDS
    assert event["payload"] == {"n": 1} and event["is_test_run"] is False
    assert event["fired_at"] == to_iso(at[2]) and event["scheduled_for"] == to_iso(at[2])
    assert event["fired_at"].endswith("Z") and event["delivered_at"] is None


@pytest.mark.parametrize(
    ("param", "value"),
    [("limit", "0"), ("limit", "101"), ("page", "0"), ("page", "x"), ("source", "cron"),
     ("execution_status", "done"), ("retention_status", "deleted"), ("is_test_run", "maybe"),
     ("since", "yesterday"), ("until", "2024-01-01T00:00:00"), ("trigger_id", "abc")],
)  # fmt: skip
async def test_bad_query_values_are_400_naming_the_parameter(api: Api, param: str,
                                                             value: str) -> None:  # fmt: skip
    status, body = await api.get("/api/v1/events", **{param: value})
    assert status == 400, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["field"] == param


async def test_get_event_with_attempts_archived_and_404(api: Api) -> None:
    now = utcnow()
    event_id = await insert_event(api.db, trigger_id=None, fired_at=now, attempts=2,
                                  retention_status="archived",
                                  execution_status="success")  # fmt: skip
    for attempt, (code, latency, error) in enumerate([(503, 40, "HTTP 503"), (200, 12, None)], 1):
        await api.db.execute(
            "INSERT INTO delivery_attempts (event_id, attempt, started_at, finished_at,"
            " response_status, latency_ms, error) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (event_id, attempt, to_db(now), to_db(now), code, latency, error),
        )
    status, body = await api.get(f"/api/v1/events/{event_id}")
    assert status == 200, body
    assert set(body) == EVENT_FIELDS | {"delivery_attempts"}
    assert body["retention_status"] == "archived"
    assert body["delivery_attempts"] == [
        {"attempt": 1, "started_at": to_iso(now), "response_status": 503, "latency_ms": 40,
         "error": "HTTP 503"},
        {"attempt": 2, "started_at": to_iso(now), "response_status": 200, "latency_ms": 12,
         "error": None},
    ]  # fmt: skip
    await api.db.execute("DELETE FROM event_logs WHERE id = %s", (event_id,))
    for path in (f"/api/v1/events/{event_id}", "/api/v1/events/nope",
                 f"/api/v1/events/{event_id}/replay"):  # fmt: skip
        method = "POST" if path.endswith("replay") else "GET"
        status, body = await api.request(method, path)
        assert status == 404 and body["error"]["code"] == "not_found", path


async def test_stats_counts_and_percentiles(api: Api) -> None:
    trigger = "6a0c1f5e-6d7a-4b7e-9a51-00000000000a"
    now = utcnow()
    for i in range(10):  # fire delays 10, 20, ... 100 ms; latencies 1..10 ms
        fired = now - timedelta(minutes=i + 1)
        event_id = await insert_event(
            api.db, trigger_id=trigger, fired_at=fired, source="scheduler",
            scheduled_for=fired - timedelta(milliseconds=10 * (i + 1)),
            execution_status="success" if i < 7 else "failed",
            retention_status="active" if i < 6 else "archived",
        )  # fmt: skip
        await api.db.execute(
            "INSERT INTO delivery_attempts (event_id, attempt, started_at, latency_ms)"
            " VALUES (%s, 1, %s, %s)", (event_id, to_db(fired), i + 1),
        )  # fmt: skip
    await insert_event(api.db, trigger_id=trigger, fired_at=now - timedelta(hours=3))
    await insert_event(api.db, trigger_id=None, fired_at=now, source="manual-test")

    status, body = await api.get("/api/v1/events/stats", trigger_id=trigger, window="2h")
    assert status == 200, body
    assert body["trigger_id"] == trigger and body["window_seconds"] == 7200
    assert body["total"] == 10
    assert body["by_execution_status"] == {"success": 7, "failed": 3}
    assert body["by_source"] == {"scheduler": 10}
    assert body["by_retention_status"] == {"active": 6, "archived": 4}
    assert body["fire_delay_ms"] == {"count": 10, "p50": 50.0, "p95": 100.0, "p99": 100.0}
    assert body["delivery_latency_ms"] == {"count": 10, "p50": 5.0, "p95": 10.0, "p99": 10.0}

    status, body = await api.get("/api/v1/events/stats")  # default 48h, every trigger
    assert status == 200 and body["window"] == "48h" and body["total"] == 12
    assert body["triggers"][0] == {"trigger_id": trigger, "trigger_name": "seeded", "total": 11}
    for bad in ("49h", "0s", "soon"):
        status, body = await api.get("/api/v1/events/stats", window=bad)
        assert status == 400 and body["error"]["details"]["field"] == "window"


async def test_replay_continues_the_attempts(api: Api, kafka_bootstrap: str, topic: str) -> None:
    trigger_id = await make_trigger(api.db)
    event_id = await insert_event(api.db, trigger_id=trigger_id, fired_at=utcnow(), attempts=2,
                                  execution_status="failed", payload={"again": True})  # fmt: skip
    status, body = await api.post(f"/api/v1/events/{event_id}/replay")
    assert status == 202, body
    assert body["event_id"] == event_id and body["attempt"] == 3
    row = await api.event_row(event_id)
    assert row is not None
    assert (row["attempt_base"], row["publish_attempt"], row["execution_status"]) == (
        2, 3, "pending")  # fmt: skip
    jobs = await read_jobs(kafka_bootstrap, topic, count=1,
                           match=lambda j: j["event_id"] == event_id)  # fmt: skip
    assert len(jobs) == 1
    assert jobs[0]["attempt"] == 3 and jobs[0]["payload"] == {"again": True}
    assert jobs[0]["_key"] == trigger_id

    async def cleared() -> bool:
        r = await api.event_row(event_id)
        return bool(r and r["publish_at"] is None)

    await wait_until(cleared, timeout=10, what="the replay's outbox mark cleared")
    status, body = await api.post(f"/api/v1/events/{event_id}/replay")  # still pending
    assert status == 409 and body["error"]["code"] == "delivery_in_progress"


async def test_list_queries_use_indexes(api: Api) -> None:
    now = utcnow()
    triggers = [f"6a0c1f5e-6d7a-4b7e-9a51-{n:012d}" for n in range(20)]
    rows = [(f"00000000-0000-4000-8000-{n:012d}", triggers[n % 20],
             "archived" if n % 3 == 0 else "active", to_db(now - timedelta(seconds=n)))
            for n in range(2000)]  # fmt: skip
    await api.db.executemany(
        "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source, payload,"
        " fired_at, retention_status, created_at)"
        " VALUES (%s, %s, 'x', 'webhook', 'webhook', '{}', %s, %s, %s)",
        [(i, t, f, r, f) for i, t, r, f in rows],
    )
    await api.db.execute("ANALYZE TABLE event_logs")
    from triggerd.store.events import EVENT_COLUMNS, EventFilter

    since = now - timedelta(minutes=10)
    for flt in (EventFilter(), EventFilter(retention_status="all"),
                EventFilter(trigger_id=triggers[3]),
                EventFilter(trigger_id=triggers[3], retention_status="all"),
                EventFilter(retention_status="all", since=since)):  # fmt: skip
        where, params = flt.where()
        for sql in (f"SELECT COUNT(*) FROM event_logs{where}",
                    f"SELECT {EVENT_COLUMNS} FROM event_logs{where}"
                    " ORDER BY fired_at DESC, id DESC LIMIT 20"):  # fmt: skip
            plan = await api.db.fetchall("EXPLAIN " + sql, params)
            assert plan[0]["type"] != "ALL" or "LIMIT" in sql, (flt, plan)
            if "LIMIT" in sql:  # an index walk in fired_at order, no filesort
                assert "filesort" not in (plan[0]["Extra"] or ""), (flt, plan)

"""The events API: filters, order, pagination, detail with delivery
attempts, stats, replay, and the indexes behind the list queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta, timezone
from typing import Any

import pytest

from tests.integration.webhook_harness import Api, insert_event, make_trigger, running_api
from tests.support import read_jobs, wait_until
from triggerd.domain.timeutil import to_db, to_iso, utcnow

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
    # Times without an offset are UTC; a "+" the client left unencoded arrives as a space.
    naive = [at[i].replace(tzinfo=None).isoformat() for i in (2, 0)]
    assert await _ids(api, since=naive[0], until=naive[1]) == [e[1], e[2]]
    spaced = [at[i].astimezone(timezone(timedelta(hours=2))).isoformat().replace("+", " ")
              for i in (2, 0)]  # fmt: skip
    assert await _ids(api, since=spaced[0], until=spaced[1]) == [e[1], e[2]]
    assert await _ids(api, page="", limit="", source="") == e[:4]  # empty = not given

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
     ("since", "yesterday"), ("until", "2024-13-01T00:00:00"), ("trigger_id", "abc"),
     ("limit", "9" * 4301), ("page", "1e3")],
)  # fmt: skip
async def test_bad_query_values_are_400_naming_the_parameter(api: Api, param: str,
                                                             value: str) -> None:  # fmt: skip
    status, body = await api.get("/api/v1/events", **{param: value})
    assert status == 400, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["field"] == param


@pytest.mark.parametrize(("path", "query", "field"), [
    ("/api/v1/events", "limit=5&limit=999", "limit"),
    ("/api/v1/events", "source=webhook&source=bogus", "source"),
    ("/api/v1/events", "since=2026-01-01T00:00:00Z&since=2026-01-02T00:00:00Z", "since"),
    ("/api/v1/events", "is_test_run=true&is_test_run=false", "is_test_run"),
    ("/api/v1/events/stats", "window=1h&window=bogus", "window"),
    ("/api/v1/events/stats", "trigger_id=6a0c1f5e-6d7a-4b7e-9a51-000000000001&trigger_id=x",
     "trigger_id"),
])  # fmt: skip
async def test_a_parameter_given_twice_is_a_400_naming_it(api: Api, path: str, query: str,
                                                          field: str) -> None:  # fmt: skip
    status, body = await api.get(f"{path}?{query}")
    assert status == 400, body
    assert body["error"]["details"]["field"] == field
    assert "once" in body["error"]["message"]


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
    # A backfill fires now for a time long past: counted, but not a fire delay.
    await insert_event(api.db, trigger_id=trigger, fired_at=now - timedelta(minutes=30),
                       source="backfill", execution_status="success",
                       scheduled_for=now - timedelta(days=300))  # fmt: skip

    status, body = await api.get("/api/v1/events/stats", trigger_id=trigger, window="2h")
    assert status == 200, body
    assert body["trigger_id"] == trigger and body["window_seconds"] == 7200
    assert body["total"] == 11
    assert body["by_execution_status"] == counts_by(EXECUTION, success=8, failed=3)
    assert body["by_source"] == counts_by(SOURCES, scheduler=10, backfill=1)
    assert body["by_retention_status"] == {"active": 7, "archived": 4}
    assert body["fire_delay_ms"] == {"count": 10, "p50": 50.0, "p95": 100.0, "p99": 100.0}
    assert body["delivery_latency_ms"] == {"count": 10, "p50": 5.0, "p95": 10.0, "p99": 10.0}

    status, body = await api.get("/api/v1/events/stats")  # default 48h, every trigger
    assert status == 200 and body["window"] == "48h" and body["total"] == 13
    assert body["triggers"][0]["trigger_id"] == trigger
    assert body["triggers"][0]["trigger_name"] == "seeded"  # deleted: its events' name
    assert body["triggers"][0]["total"] == 12
    for bad in ("49h", "0s", "soon", "9" * 4301, "1" * 400 + "d"):
        status, body = await api.get("/api/v1/events/stats", window=bad)
        assert status == 400 and body["error"]["details"]["field"] == "window"



async def test_stats_reach_back_as_far_as_events_are_kept(settings_for: Any) -> None:
    """With events kept 7 days, a 72h window counts an event fired 3 days ago."""
    async with running_api(settings_for(retention_delete_after=7 * 86400.0)) as api:
        trigger = await make_trigger(api.db, name="kept")
        await insert_event(api.db, trigger_id=trigger, fired_at=utcnow() - timedelta(hours=60))
        status, body = await api.get("/api/v1/events/stats", trigger_id=trigger, window="72h")
        assert status == 200 and body["total"] == 1, body
        status, body = await api.get("/api/v1/events/stats", window="169h")
        assert status == 400 and "168h" in body["error"]["message"], body
EXECUTION = ("pending", "retrying", "success", "failed", "published")
SOURCES = ("webhook", "scheduler", "manual-test", "backfill")


def counts_by(keys: tuple[str, ...], **counts: int) -> dict[str, int]:
    """Every key, zeros included, as the stats list them."""
    assert set(counts) <= {k.replace("-", "_") for k in keys}
    return {k: counts.get(k.replace("-", "_"), 0) for k in keys}


def entry(trigger_id: str | None, name: str | None, *, execution: dict[str, int],
          source: dict[str, int], archived: int = 0) -> dict[str, Any]:  # fmt: skip
    total = sum(execution.values())
    assert sum(source.values()) == total
    return {"trigger_id": trigger_id, "trigger_name": name, "total": total,
            "by_execution_status": counts_by(EXECUTION, **execution),
            "by_source": counts_by(SOURCES, **source),
            "by_retention_status": {"active": total - archived, "archived": archived}}  # fmt: skip


async def test_stats_break_down_each_trigger(api: Api) -> None:
    busy = await make_trigger(api.db, name="busy hook")
    quiet = await make_trigger(api.db, name="quiet cron", type="cron_scheduled")
    idle = await make_trigger(api.db, name="idle")
    gone = "6a0c1f5e-6d7a-4b7e-9a51-0000000000dd"  # deleted: only its events remain
    now = utcnow()

    async def fire(trigger_id: str | None, minutes: float, n: int = 1, **kw: Any) -> None:
        for _ in range(n):
            await insert_event(api.db, trigger_id=trigger_id,
                               fired_at=now - timedelta(minutes=minutes), **kw)  # fmt: skip

    await fire(busy, 1, 3, execution_status="success")
    await fire(busy, 2, 2, execution_status="failed", retention_status="archived")
    await fire(busy, 3, execution_status="retrying")
    await fire(busy, 4, source="manual-test", is_test_run=True, execution_status="success")
    await fire(busy, 5)  # pending
    await fire(busy, 180, 5, execution_status="success")  # outside a 2h window
    await fire(quiet, 1, 2, source="scheduler", execution_status="published",
               scheduled_for=now - timedelta(minutes=1))  # fmt: skip
    await fire(quiet, 2, source="manual-test", is_test_run=True, execution_status="failed",
               retention_status="archived")  # fmt: skip
    await fire(None, 1, 2, source="manual-test", is_test_run=True, execution_status="success")
    await fire(gone, 30, execution_status="success")
    await fire(gone, 10, execution_status="failed")
    await api.db.execute(  # its newest event names it
        "UPDATE event_logs SET trigger_name = 'renamed' WHERE trigger_id = %s AND fired_at = %s",
        (gone, to_db(now - timedelta(minutes=10))),
    )
    await fire(idle, 300, execution_status="success")  # outside a 2h window only
    expected = [
        entry(busy, "busy hook", execution={"success": 4, "failed": 2, "retrying": 1,
                                            "pending": 1},
              source={"webhook": 7, "manual_test": 1}, archived=2),
        entry(quiet, "quiet cron", execution={"published": 2, "failed": 1},
              source={"scheduler": 2, "manual_test": 1}, archived=1),
        entry(None, None, execution={"success": 2}, source={"manual_test": 2}),
        entry(gone, "renamed", execution={"success": 1, "failed": 1}, source={"webhook": 2}),
    ]  # fmt: skip
    # busiest first; a tie goes by trigger_id, the ephemeral runs (null) first
    assert [e["total"] for e in expected] == [8, 3, 2, 2]

    status, body = await api.get("/api/v1/events/stats", window="2h")
    assert status == 200, body
    assert body["triggers"] == expected
    assert (body["trigger_count"], body["truncated"]) == (4, False)
    assert body["total"] == 15
    assert body["by_execution_status"] == counts_by(EXECUTION, pending=1, retrying=1,
                                                    success=7, failed=4, published=2)  # fmt: skip
    assert body["by_source"] == counts_by(SOURCES, webhook=9, scheduler=2, manual_test=4)
    assert body["by_retention_status"] == {"active": 12, "archived": 3}

    status, body = await api.get("/api/v1/events/stats", window="2h", limit="2")
    assert status == 200, body
    assert body["triggers"] == expected[:2]
    assert (body["trigger_count"], body["truncated"], body["total"]) == (4, True, 15)

    for wanted in expected:
        if wanted["trigger_id"] is None:
            continue
        status, body = await api.get("/api/v1/events/stats", window="2h",
                                     trigger_id=wanted["trigger_id"])  # fmt: skip
        assert status == 200, body
        assert body["triggers"] == [wanted]
        assert (body["trigger_count"], body["truncated"]) == (1, False)
        for key in ("total", "by_execution_status", "by_source", "by_retention_status"):
            assert body[key] == wanted[key], key

    unknown = "6a0c1f5e-6d7a-4b7e-9a51-0000000000ee"
    for trigger_id, name in ((idle, "idle"), (unknown, None)):  # no events in the window
        status, body = await api.get("/api/v1/events/stats", window="2h", trigger_id=trigger_id)
        assert status == 200, body
        zeros = entry(trigger_id, name, execution={}, source={})
        assert body["triggers"] == [zeros] and body["total"] == 0
        assert body["by_execution_status"] == zeros["by_execution_status"]
        assert (body["trigger_count"], body["truncated"]) == (0, False)

    for bad in ("0", "1001", "x"):
        status, body = await api.get("/api/v1/events/stats", limit=bad)
        assert status == 400 and body["error"]["details"]["field"] == "limit", body


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
    # Published, but not a firing: the event fired once, long ago.
    fires = api.services.metrics.registry.get_sample_value(
        "triggerd_fires_total", {"type": "webhook", "source": "webhook"})  # fmt: skip
    assert not fires
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

    # The stats counts: a range of the window. (A window holding most of the table, as
    # 48h does under the default retention, is read whole: the optimizer's choice, and no
    # slower there than the range.)
    from triggerd.store.events import StatsScope, counts_sql

    recent = now - timedelta(minutes=1)
    for scope, index in ((StatsScope(since=recent), "ix_events_fired"),
                         (StatsScope(since=since, trigger_id=triggers[3]),
                          "ix_events_trigger")):  # fmt: skip
        sql, params = counts_sql(scope)
        plan = await api.db.fetchall("EXPLAIN " + sql, params)
        assert (plan[0]["type"], plan[0]["key"]) == ("range", index), (scope, plan)

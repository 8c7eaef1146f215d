"""The event log API.

- `GET /api/v1/events`: filters `trigger_id`, `source`, `execution_status`,
  `retention_status` (default `active`; `archived`, `all`), `is_test_run`
  (`true`/`false`), `since` (inclusive) and `until` (exclusive) as ISO 8601 (UTC
  when it has no offset; a date alone is its midnight UTC), `page` ≥ 1, `limit` 1–100
  (default 20); an empty value is no value. Newest first (`fired_at` DESC, then `id`
  DESC). A bad value is a 400 naming the parameter.
- `GET /api/v1/events/{id}`: the event (archived too) with its `delivery_attempts`.
- `GET /api/v1/events/stats?trigger_id=&window=48h&limit=100`: counts over the window
  (total, by execution_status, by source, by retention_status, every value listed,
  zeros included), overall and per trigger, and p50/p95/p99 of the fire delay
  (`fired_at − scheduled_for`) and the delivery latency, in milliseconds, over the
  newest 10,000 events/attempts of the window (`count` says how many). `window` is
  1s up to how long events are kept (TRIGGERD_RETENTION_DELETE_AFTER), and 48h at
  least. Without `trigger_id`, the numbers cover every event in the window and
  `triggers` lists the `limit` (1–1000, default 100) busiest triggers, ephemeral test
  runs as one entry with trigger_id and trigger_name null; `trigger_count` says how
  many had events and `truncated` whether some were left out. With `trigger_id`,
  `triggers` is that trigger alone (zeros when it has no events in the window).
- `POST /api/v1/events/{id}/replay`: 202; a new attempt series of the same event
  (attempts continue), published at once; 409 while a series is still in progress.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from aiohttp import web

from triggerd.api.http import json_response, pagination, query_choice, query_int, query_one
from triggerd.api.keys import origin_of
from triggerd.api.webhook import pipeline_of
from triggerd.domain.errors import Conflict, NotFound, ValidationError
from triggerd.domain.models import parse_uuid
from triggerd.domain.timeutil import from_db, parse_duration, parse_query_time, to_iso, utcnow
from triggerd.domain.tracecontext import new_traceparent
from triggerd.ingest.pipeline import PUBLISH_GRACE, IngestPipeline
from triggerd.services import Services
from triggerd.store import events as store
from triggerd.tracing import Attributes, Kind

SOURCES = store.SOURCES
EXECUTION_STATUSES = store.EXECUTION_STATUSES
RETENTION_STATUSES = (*store.RETENTION_STATUSES, "all")
MAX_STATS_TRIGGERS = 1000
MAX_PAGE = 1_000_000


def _uuid_param(request: web.Request, name: str) -> str | None:
    raw = query_one(request, name)
    if raw is None or raw == "":
        return None
    value = parse_uuid(raw)
    if value is None:
        raise ValidationError(name, "must be a UUID")
    return value


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = query_one(request, name)
    if raw is None or raw == "":
        return None
    try:
        return parse_query_time(raw)
    except (ValueError, OverflowError):
        raise ValidationError(name, "must be an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z"
                              ) from None  # fmt: skip


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = query_one(request, name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValidationError(name, "must be true or false")


def parse_filter(request: web.Request) -> store.EventFilter:
    since = _time_param(request, "since")
    until = _time_param(request, "until")
    if since is not None and until is not None and since > until:
        raise ValidationError("since", "must not be after until")
    return store.EventFilter(
        trigger_id=_uuid_param(request, "trigger_id"),
        source=query_choice(request, "source", SOURCES),
        execution_status=query_choice(request, "execution_status", EXECUTION_STATUSES),
        retention_status=query_choice(request, "retention_status", RETENTION_STATUSES) or "active",
        is_test_run=_bool_param(request, "is_test_run"),
        since=since,
        until=until,
    )


def _event_id(request: web.Request) -> str:
    event_id = parse_uuid(request.match_info["id"])
    if event_id is None:
        raise NotFound("no such event")
    return event_id


class EventsApi:
    def __init__(self, services: Services, pipeline: IngestPipeline) -> None:
        self.db = services.db
        self.pipeline = pipeline
        self.tracer = services.tracer
        # Stats reach back as far as events are kept (48 h by default), and at least 48 h.
        self.max_window = max(store.MAX_STATS_WINDOW,
                              timedelta(seconds=services.settings.retention_delete_after))

    async def list(self, request: web.Request) -> web.Response:
        flt = parse_filter(request)
        page = query_int(request, "page", 1, 1, MAX_PAGE)
        limit = query_int(request, "limit", 20, 1, 100)
        rows, total = await store.list_events(self.db, flt, page=page, limit=limit)
        return json_response({"events": [store.event_json(r) for r in rows],
                              "pagination": pagination(page, limit, total)})  # fmt: skip

    async def get(self, request: web.Request) -> web.Response:
        event_id = _event_id(request)
        row = await store.get_event(self.db, event_id)
        if row is None:
            raise NotFound("no such event")
        body = store.event_json(row)
        body["delivery_attempts"] = await store.delivery_attempts(self.db, event_id)
        return json_response(body)

    async def stats(self, request: web.Request) -> web.Response:
        trigger_id = _uuid_param(request, "trigger_id")
        raw = query_one(request, "window") or "48h"
        try:
            seconds = parse_duration(raw)
        except ValueError:
            raise ValidationError("window", "must be a duration like 15m, 2h, 48h") from None
        window = timedelta(seconds=seconds)
        if not timedelta(seconds=1) <= window <= self.max_window:
            raise ValidationError("window", f"must be between 1s and {_hours(self.max_window)}")
        limit = query_int(request, "limit", 100, 1, MAX_STATS_TRIGGERS)
        until = utcnow()
        since = until - window
        body: dict[str, object] = {
            "trigger_id": trigger_id,
            "window": raw,
            "window_seconds": seconds,
            "since": to_iso(since),
            "until": to_iso(until),
        }
        scope = store.StatsScope(since=since, trigger_id=trigger_id)
        overall, per_trigger = await store.event_counts(self.db, scope, limit)
        body.update(overall)
        body.update(await store.event_percentiles(self.db, scope))
        body.update(per_trigger)
        return json_response(body)

    async def replay(self, request: web.Request) -> web.Response:
        event_id = _event_id(request)
        now = utcnow()
        traceparent = new_traceparent()  # a replay is traced on its own
        started = time.time_ns()
        result = await store.start_replay(self.db, event_id, now + PUBLISH_GRACE, traceparent,
                                          origin=origin_of(request), now=now)  # fmt: skip
        if result.outcome == "not_found" or result.row is None:
            raise NotFound("no such event")
        if result.outcome == "in_progress":
            raise Conflict(
                f"a delivery of this event is still {result.row['execution_status']};"
                " replay it once it has finished",
                code="delivery_in_progress",
            )
        row = result.row
        fired_at = from_db(row["fired_at"])
        assert fired_at is not None
        self.pipeline.publish_later([store.replay_job(row, result.attempt, fired_at, traceparent)])
        attributes: Attributes = {"triggerd.event_id": event_id,
                                  "triggerd.attempt": result.attempt}  # fmt: skip
        self.tracer.record("replay", Kind.INTERNAL, own=traceparent, start_ns=started,
                           end_ns=time.time_ns(), attributes=attributes)  # fmt: skip
        return json_response({"event_id": event_id, "status": "accepted",
                              "attempt": result.attempt}, status=202)  # fmt: skip


def add_routes(app: web.Application, services: Services) -> None:
    api = EventsApi(services, pipeline_of(app))
    app.router.add_get("/api/v1/events", api.list, allow_head=False)
    app.router.add_get("/api/v1/events/stats", api.stats, allow_head=False)  # before /{id}
    app.router.add_get("/api/v1/events/{id}", api.get, allow_head=False)
    app.router.add_post("/api/v1/events/{id}/replay", api.replay)


def _hours(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{seconds / 3600:g}h" if seconds % 3600 == 0 else f"{seconds:g}s"

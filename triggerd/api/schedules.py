"""Schedules you can see: what a trigger will fire and what became of what fell due.

- `GET /api/v1/triggers/{id}/upcoming?count=10`: the next `count` (1-100) occurrences, as
  the scheduler will fire them: computed by the scheduler's own function
  (domain.occurrences.upcoming), from the trigger's pending occurrence. Empty for a
  webhook trigger, an inactive one and a one-time trigger that fired.
- `POST /api/v1/triggers/preview`: the same for a trigger definition (the create body,
  validated as on create, plus an optional `count`), as if it were created now; nothing
  is saved and `trigger_id` is null. Jitter is a function of the trigger id, which a
  preview does not have yet: its `fire_at` uses the nil UUID, so the spread is shown
  but the created trigger's offsets differ (within the same bounds).
- `GET /api/v1/triggers/{id}/occurrences?outcome=&since=&until=&page=&limit=`: every
  occurrence that fell due, and the pending one, newest first by `scheduled_for`
  (`since` inclusive, `until` exclusive), with its outcome (pending, fired, missed,
  cancelled), the event it fired, when that was published and how late (`delay_ms`,
  publish time minus `fire_at`), and a note saying why it did not fire.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from triggerd.api.destinations import policy_of
from triggerd.api.http import json_response, read_json
from triggerd.api.triggers import check_deliverable
from triggerd.api.triggers import storage_errors_as_503 as guard
from triggerd.domain.contract import Pagination
from triggerd.domain.contract.schedules import OccurrenceQuery, UpcomingQuery, validate_preview
from triggerd.domain.enums import TriggerStatus, TriggerType
from triggerd.domain.errors import NotFound
from triggerd.domain.models import parse_uuid
from triggerd.domain.occurrences import Due, local_iso, upcoming, zone_of
from triggerd.domain.timeutil import to_iso, utcnow
from triggerd.services import Services
from triggerd.store import occurrences
from triggerd.store.occurrences import OccurrenceFilter, OccurrenceRow
from triggerd.store.triggers import TriggerStore

UPCOMING = "/api/v1/triggers/{id}/upcoming"
PREVIEW = "/api/v1/triggers/preview"
OCCURRENCES = "/api/v1/triggers/{id}/occurrences"
PREVIEW_ID = "00000000-0000-0000-0000-000000000000"  # whose jitter a preview shows


def upcoming_json(
    trigger_id: str | None, trigger_type: str, timing: dict[str, Any], found: list[Due]
) -> dict[str, Any]:
    zone = zone_of(timing) if trigger_type != TriggerType.INTERVAL_SCHEDULED else "UTC"
    return {
        "trigger_id": trigger_id,
        "timezone": zone,
        "occurrences": [{"scheduled_for": to_iso(due.scheduled_for), "fire_at": to_iso(due.fire_at),
                         "local": local_iso(due.scheduled_for, zone)} for due in found],
    }  # fmt: skip


def occurrence_json(row: OccurrenceRow) -> dict[str, Any]:
    return {
        "scheduled_for": to_iso(row.scheduled_for),
        "fire_at": to_iso(row.fire_at),
        "outcome": row.outcome.value,
        "event_id": row.event_id,
        "published_at": to_iso(row.published_at),
        "delay_ms": row.delay_ms,
        "note": row.note,
    }


class ScheduleViews:
    def __init__(self, services: Services) -> None:
        self.db = services.db
        self.bus = services.bus
        self.triggers = TriggerStore(services.db)
        self.destinations = policy_of(services.settings)

    async def upcoming(self, request: web.Request) -> web.Response:
        trigger_id = trigger_id_of(request)
        count = UpcomingQuery.parse(request.query).count
        record = await self.triggers.get(trigger_id)
        if record is None:
            raise NotFound("no such trigger")
        trigger, found = record.trigger, []
        timing = trigger.config.timing()
        if trigger.is_scheduled and trigger.status == TriggerStatus.ACTIVE:
            pending = await occurrences.pending(self.db, trigger_id)
            found = upcoming(trigger.id, trigger.type, timing, utcnow(), count, pending)
        return json_response(upcoming_json(trigger.id, trigger.type, timing, found))

    async def preview(self, request: web.Request) -> web.Response:
        now = utcnow()
        definition, count = validate_preview(await read_json(request), now=now)
        check_deliverable(definition, self.bus, self.destinations, now)  # create's other 400s
        timing = definition.config.timing()
        found: list[Due] = []
        if definition.status == TriggerStatus.ACTIVE:
            found = upcoming(PREVIEW_ID, definition.type, timing, now, count)
        return json_response(upcoming_json(None, definition.type, timing, found))

    async def history(self, request: web.Request) -> web.Response:
        trigger_id = trigger_id_of(request)
        query = OccurrenceQuery.parse(request.query)
        page, limit = query.page, query.limit
        if await self.triggers.get(trigger_id) is None:
            raise NotFound("no such trigger")
        flt = OccurrenceFilter(query.outcome, query.since, query.until)
        rows, total = await occurrences.history(self.db, trigger_id, flt, limit=limit,
                                                offset=(page - 1) * limit)  # fmt: skip
        return json_response({"occurrences": [occurrence_json(row) for row in rows],
                              "pagination": Pagination.of(page, limit, total)})  # fmt: skip


def trigger_id_of(request: web.Request) -> str:
    trigger_id = parse_uuid(request.match_info["id"])
    if trigger_id is None:
        raise NotFound("no such trigger")
    return trigger_id


def add_routes(app: web.Application, services: Services) -> None:
    views = ScheduleViews(services)
    app.router.add_get(UPCOMING, guard(views.upcoming), allow_head=False)
    app.router.add_post(PREVIEW, guard(views.preview))
    app.router.add_get(OCCURRENCES, guard(views.history), allow_head=False)

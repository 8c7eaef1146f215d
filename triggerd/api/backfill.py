"""`POST /api/v1/triggers/{id}/backfill` `{"since", "until"}`: fire, now, every occurrence
of a cron or interval trigger's schedule (as it is now) with since <= scheduled_for <
until, active or not, each at most once.

`since` and `until` are ISO 8601; without an offset they are read in the trigger's time
zone (as `run_at` is). `until` may not be in the future, and the range may hold at most
MAX_OCCURRENCES occurrences (else a 400 naming `until`). An interval schedule extends
before its first run (`first_run_at + k * interval_seconds`, k negative too). Events
have `source: "backfill"`, their own `scheduled_for`, no jitter, and the id the scheduler
gives that occurrence: one that already fired (its event still kept) is counted in
`already_fired` and not fired again, so repeating a backfill fires nothing new. The jobs
go out through the outbox, as test runs' do. 202 `{"occurrences", "fired",
"already_fired"}`. A trigger whose payload makes a Kafka job over
TRIGGERD_KAFKA_MAX_REQUEST_SIZE (the limit was lowered after it was saved) is a 413, as
its test run is: nothing is fired.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from triggerd.api.http import json_response, read_json
from triggerd.api.jobsize import check_event
from triggerd.api.keys import origin_of
from triggerd.api.schedules import trigger_id_of
from triggerd.api.triggers import storage_errors_as_503 as guard
from triggerd.api.webhook import pipeline_of
from triggerd.domain.contract.errors import validated
from triggerd.domain.contract.schedules import BackfillBody
from triggerd.domain.enums import Source, TriggerType
from triggerd.domain.errors import Conflict, NotFound, ValidationError
from triggerd.domain.models import Trigger, occurrence_event_id
from triggerd.domain.occurrences import in_range, zone_of
from triggerd.domain.timeutil import to_iso, utcnow
from triggerd.domain.timing import parse_run_at
from triggerd.domain.tracecontext import new_traceparent
from triggerd.ingest.pipeline import PUBLISH_GRACE, IngestPipeline, job_for
from triggerd.services import Services
from triggerd.store import backfill as store
from triggerd.store.event_rows import EventRecord
from triggerd.store.triggers import TriggerStore

PATH = "/api/v1/triggers/{id}/backfill"
MAX_OCCURRENCES = 1000
BACKFILLABLE = (TriggerType.CRON_SCHEDULED, TriggerType.INTERVAL_SCHEDULED)


def _instant(value: str, name: str, zone: str) -> datetime:
    try:
        return parse_run_at(value, zone)
    except (ValueError, OverflowError):
        raise ValidationError(name, f"{value!r} is not an ISO 8601 timestamp") from None


def records_for(trigger: Trigger, times: list[datetime], now: datetime) -> list[EventRecord]:
    config = trigger.config
    payload = config.payload if config.has_payload else {}
    delivery = config.delivery()
    return [EventRecord(
        id=occurrence_event_id(trigger.id, when), trigger_id=trigger.id,
        trigger_name=trigger.name, trigger_type=trigger.type, source=Source.BACKFILL,
        is_test_run=False, payload=payload, delivery=delivery, fired_at=now,
        scheduled_for=when, note=store.NOTE, publish_at=now + PUBLISH_GRACE,
        traceparent=new_traceparent(),  # each backfilled firing starts a trace
    ) for when in times]  # fmt: skip


class Backfill:
    def __init__(self, services: Services, pipeline: IngestPipeline) -> None:
        self.db = services.db
        self.bus = services.bus
        self.triggers = TriggerStore(services.db)
        self.pipeline = pipeline

    async def handle(self, request: web.Request) -> web.Response:
        trigger_id = trigger_id_of(request)
        body = await read_json(request)
        record = await self.triggers.get(trigger_id)
        if record is None:
            raise NotFound("no such trigger")
        trigger = record.trigger
        span = validated(BackfillBody, body)
        if trigger.type not in BACKFILLABLE:
            raise Conflict(f"backfill applies to cron and interval triggers, not {trigger.type}",
                           code="not_backfillable")  # fmt: skip
        timing = trigger.config.timing()
        zone = zone_of(timing) if trigger.type == TriggerType.CRON_SCHEDULED else "UTC"
        since, until = _instant(span.since, "since", zone), _instant(span.until, "until", zone)
        now = utcnow()
        if until > now:
            raise ValidationError("until", f"must not be in the future (now is {to_iso(now)})")
        if since > until:
            raise ValidationError("since", "must not be after until")
        try:
            times = in_range(trigger.type, timing, since, until, MAX_OCCURRENCES)
        except OverflowError:  # `since` at the very start of what a datetime can hold
            raise ValidationError("since", f"{span.since!r} is out of range") from None
        if len(times) > MAX_OCCURRENCES:
            raise ValidationError("until", f"the range holds more than {MAX_OCCURRENCES} "
                                           "occurrences; backfill it in parts")  # fmt: skip
        records = records_for(trigger, times, now)
        if records:  # their jobs differ only in ids and times of one length: one size
            check_event(self.bus, records[0])
        result = await store.backfill(self.db, trigger, records, now,
                                      origin_of(request))  # fmt: skip
        if result is None:
            raise NotFound("no such trigger")
        self.pipeline.publish_later([job_for(event) for event in result.fired])
        return json_response({"occurrences": len(times),
                              "fired": [event.id for event in result.fired],
                              "already_fired": result.already_fired}, status=202)  # fmt: skip


def add_routes(app: web.Application, services: Services) -> None:
    app.router.add_post(PATH, guard(Backfill(services, pipeline_of(app)).handle))

"""Test runs: fire exactly one event now, through the same
outbox → Kafka → worker path as real firings, without touching any schedule.

- `POST /api/v1/triggers/test`: an ephemeral run of a full trigger definition (the
  create body, validated as on create). The event has `trigger_id` null; no trigger
  is saved. Its payload is `config.payload`, or `{}`.
- `POST /api/v1/triggers/{id}/test`: a run of a stored trigger, active or not. An
  optional body `{"payload": …}` overrides the payload and is validated against the
  schema of a webhook trigger; without it the payload is `config.payload`, or `{}`,
  unvalidated.

A payload whose Kafka job would be over TRIGGERD_KAFKA_MAX_REQUEST_SIZE is a 413
(`payload_too_large`) and nothing is stored. Both answer 202 `{"event_id", "status":
"accepted", "trigger_id", "source", "is_test_run"}` once the event row is committed,
and both are recorded in the audit log (`trigger.test_run`, with the event id) in the
transaction that writes the event.
Every test run starts a trace of its own (a caller's `traceparent` is not continued: a
test run is not part of its work).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from triggerd.api.destinations import check_endpoint, policy_of
from triggerd.api.http import json_response, read_json, read_raw_json
from triggerd.api.jobsize import check_event
from triggerd.api.keys import origin_of
from triggerd.api.webhook import ValidatorCache, check_payload, pipeline_of, unavailable
from triggerd.domain.audit import Action, AuditEntry, Origin
from triggerd.domain.contract import TriggerConfig, validate_create
from triggerd.domain.enums import Source
from triggerd.domain.errors import NotFound, ValidationError
from triggerd.domain.models import new_id, parse_uuid
from triggerd.domain.payloads import encode_payload
from triggerd.domain.timeutil import utcnow
from triggerd.domain.tracecontext import new_traceparent
from triggerd.ingest.pipeline import PUBLISH_GRACE, IngestPipeline, IngestUnavailable, Overloaded
from triggerd.services import Services
from triggerd.store.event_rows import EventRecord
from triggerd.store.events import fetch_trigger
from triggerd.tracing import Kind, Tracer

SOURCE = Source.MANUAL_TEST
NOTE = "test run"


def _record(trigger_id: str | None, name: str, kind: str, config: TriggerConfig,
            payload: Any) -> EventRecord:  # fmt: skip
    now = utcnow()
    return EventRecord(
        id=new_id(), trigger_id=trigger_id, trigger_name=name, trigger_type=kind,
        source=SOURCE, is_test_run=True, payload=payload, delivery=config.delivery(),
        fired_at=now, note=NOTE, publish_at=now + PUBLISH_GRACE,
        payload_json=encode_payload(payload), traceparent=new_traceparent(),
    )  # fmt: skip


async def _fire(pipeline: IngestPipeline, tracer: Tracer, record: EventRecord,
                origin: Origin) -> web.Response:  # fmt: skip
    entry = AuditEntry(Action.TRIGGER_TEST_RUN, origin, record.fired_at, record.trigger_id,
                       record.id)  # fmt: skip
    start = tracer.start(f"test run {record.trigger_type}", Kind.INTERNAL, own=record.traceparent,
                         attributes={"triggerd.trigger_id": record.trigger_id or "",
                                     "triggerd.event_id": record.id})  # fmt: skip
    try:
        event_id = await pipeline.submit(record, audit=entry)
    except (Overloaded, IngestUnavailable) as exc:
        start.fail(str(exc))
        raise unavailable(exc) from None
    finally:
        start.end()
    body = {"event_id": event_id, "status": "accepted", "trigger_id": record.trigger_id,
            "source": SOURCE, "is_test_run": True}  # fmt: skip
    return json_response(body, status=202)


class TestRuns:
    __test__ = False  # not a pytest class

    def __init__(self, services: Services, pipeline: IngestPipeline) -> None:
        self.services = services
        self.pipeline = pipeline
        self.tracer = services.tracer
        self.validators = ValidatorCache(max_size=64)
        self.destinations = policy_of(services.settings)

    async def ephemeral(self, request: web.Request) -> web.Response:
        definition = validate_create(await read_json(request), now=utcnow())
        config = definition.config
        check_endpoint(config.endpoint, self.destinations)
        payload = config.payload if config.has_payload else {}
        record = _record(None, definition.name, definition.type, config, payload)
        check_event(self.services.bus, record)
        return await _fire(self.pipeline, self.tracer, record, origin_of(request))

    async def stored(self, request: web.Request) -> web.Response:
        trigger_id = parse_uuid(request.match_info["id"])
        trigger = await fetch_trigger(self.services.db, trigger_id) if trigger_id else None
        if trigger is None:
            raise NotFound("no such trigger")
        _, body = await read_raw_json(request, optional=True)
        if body is not None and not isinstance(body, dict):
            raise ValidationError("body", "must be an object like {\"payload\": …}")
        check_endpoint(trigger.config.endpoint, self.destinations)
        body = body or {}
        unknown = sorted(set(body) - {"payload"})
        if unknown:
            raise ValidationError(unknown[0], "unknown field (only payload is accepted)")
        if "payload" in body:
            payload = body["payload"]
            if trigger.type == "webhook":
                check_payload(self.validators.get(trigger), payload)
        else:
            payload = trigger.config.payload if trigger.config.has_payload else {}
        record = _record(trigger.id, trigger.name, trigger.type, trigger.config, payload)
        check_event(self.services.bus, record)
        return await _fire(self.pipeline, self.tracer, record, origin_of(request))


def add_routes(app: web.Application, services: Services) -> None:
    runs = TestRuns(services, pipeline_of(app))
    app.router.add_post("/api/v1/triggers/test", runs.ephemeral)
    app.router.add_post("/api/v1/triggers/{id}/test", runs.stored)

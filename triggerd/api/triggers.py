"""`/api/v1/triggers`: create, list, get, update and delete triggers.

Validation is `domain.contract` (pure); the SQL, and the schedule rows that move with
a trigger, are `store.triggers`. After every change the in-process scheduler is woken
so it reloads at once. Configs leave the API through `redacted_to_send` only.
`POST /api/v1/triggers/test` and `/{id}/test` belong to `api.testruns`: this module
registers no POST on `/{id}`, so those paths still reach it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from triggerd.api.destinations import check_endpoint, policy_of
from triggerd.api.http import json_response, read_json
from triggerd.api.jobsize import check_config_payload
from triggerd.api.keys import origin_of
from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.domain.contract import (
    Pagination,
    TriggerDefinition,
    TriggerListQuery,
    validate_create,
    validate_update,
)
from triggerd.domain.destinations import DestinationPolicy
from triggerd.domain.errors import ApiError, NotFound
from triggerd.domain.models import new_id, parse_uuid
from triggerd.domain.redact import redacted_to_send
from triggerd.domain.timeutil import to_iso, utcnow
from triggerd.logs import log_context
from triggerd.services import Services
from triggerd.store.db import is_transient
from triggerd.store.triggers import TriggerRecord, TriggerStore

log = logging.getLogger(__name__)

COLLECTION = "/api/v1/triggers"
# Any id but `test` and `preview`: /api/v1/triggers/test is the test-run resource
# (api.testruns) and /preview the schedule preview (api.schedules), POST only, so GET or
# DELETE there is a 405 naming POST, not a 404 from this resource.
ITEM = "/api/v1/triggers/{id:(?!(?:test|preview)$)[^{}/]+}"


def check_deliverable(definition: TriggerDefinition, bus: Bus, destinations: DestinationPolicy,
                      now: datetime) -> None:  # fmt: skip
    """The 400s a definition gets beyond its own validation, on every route that takes
    one (create, update, preview): an endpoint IP literal that deliveries may not reach,
    and a payload too large for the Kafka job every firing carries."""
    check_endpoint(definition.config.endpoint, destinations)
    if definition.config.has_payload:
        check_config_payload(bus, definition.type, definition.config.payload, now)


def trigger_json(record: TriggerRecord, settings: Settings) -> dict[str, Any]:
    """The API form of a trigger: config redacted, times ISO 8601 UTC with Z."""
    trigger = record.trigger
    webhook_url = None
    if trigger.type == "webhook":
        webhook_url = f"{settings.public_url}/api/v1/webhook/{trigger.id}"
    next_run = None
    if trigger.is_scheduled and trigger.status == "active":
        next_run = to_iso(record.next_scheduled_run)
    return {
        "id": trigger.id,
        "name": trigger.name,
        "type": trigger.type,
        "status": trigger.status,
        "status_reason": trigger.status_reason,
        "config": redacted_to_send(trigger.config.stored()),
        "labels": dict(trigger.labels),
        "webhook_url": webhook_url,
        "next_scheduled_run": next_run,
        "created_at": to_iso(trigger.created_at),
        "updated_at": to_iso(trigger.updated_at),
    }


class TriggerRoutes:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = TriggerStore(services.db, services.trigger_changes)
        self.destinations = policy_of(services.settings)

    def _json(self, record: TriggerRecord) -> dict[str, Any]:
        return trigger_json(record, self.services.settings)

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        now = utcnow()
        definition = validate_create(body, now=now)
        check_deliverable(definition, self.services.bus, self.destinations, now)
        trigger_id = new_id()
        with log_context(trigger_id=trigger_id):
            record = await self.store.create(definition, trigger_id, now, origin_of(request))
            log.info("trigger created (%s, %s)", definition.type, definition.status)
        return json_response(
            self._json(record), status=201, headers={"Location": f"{COLLECTION}/{trigger_id}"}
        )

    async def list(self, request: web.Request) -> web.Response:
        query = TriggerListQuery.parse(request.query)
        page, limit = query.page, query.limit
        result = await self.store.list(
            type=query.type, status=query.status, label=query.label or (), limit=limit,
            offset=(page - 1) * limit,
        )
        return json_response(
            {
                "triggers": [self._json(record) for record in result.records],
                "pagination": Pagination.of(page, limit, result.total),
            }
        )

    async def get(self, request: web.Request) -> web.Response:
        trigger_id = _trigger_id(request)
        record = await self.store.get(trigger_id)
        if record is None:
            raise _not_found()
        return json_response(self._json(record))

    async def update(self, request: web.Request) -> web.Response:
        trigger_id = _trigger_id(request)
        body = await read_json(request)
        now = utcnow()

        def change(current: TriggerDefinition) -> TriggerDefinition:
            changed = validate_update(body, current, now=now, trigger_id=trigger_id)
            if isinstance(body, dict) and body.get("config") is not None:
                check_deliverable(changed, self.services.bus, self.destinations, now)
            return changed

        with log_context(trigger_id=trigger_id):
            record = await self.store.update(trigger_id, change, now, origin_of(request))
            if record is None:
                raise _not_found()
            log.info("trigger updated (version %d)", record.trigger.version)
        return json_response(self._json(record))

    async def delete(self, request: web.Request) -> web.Response:
        trigger_id = _trigger_id(request)
        with log_context(trigger_id=trigger_id):
            if not await self.store.delete(trigger_id, utcnow(), origin_of(request)):
                raise _not_found()
            log.info("trigger deleted")
        return web.Response(status=204)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def storage_errors_as_503(handler: Handler) -> Handler:
    """A database that cannot be reached is a 503 the client may retry, not a 500."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except Exception as exc:
            if isinstance(exc, ApiError) or not is_transient(exc):
                raise
            log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
            raise ApiError("the database is unavailable; retry shortly", status=503,
                           code="unavailable") from None  # fmt: skip

    return wrapped


def _trigger_id(request: web.Request) -> str:
    trigger_id = parse_uuid(request.match_info["id"])
    if trigger_id is None:
        raise _not_found()
    return trigger_id


def _not_found() -> NotFound:
    return NotFound("no such trigger")


def add_routes(app: web.Application, services: Services) -> None:
    routes = TriggerRoutes(services)
    guard = storage_errors_as_503
    app.router.add_post(COLLECTION, guard(routes.create))
    app.router.add_get(COLLECTION, guard(routes.list), allow_head=False)
    app.router.add_get(ITEM, guard(routes.get), allow_head=False)
    app.router.add_put(ITEM, guard(routes.update))
    app.router.add_patch(ITEM, guard(routes.update))
    app.router.add_delete(ITEM, guard(routes.delete))

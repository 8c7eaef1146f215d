"""Webhook ingestion: `POST /api/v1/webhook/{trigger_id}` (SPEC §3).

A request is answered 202 only after its event row is committed (group commit in
store/ingest.py); the job is published right after, and by the outbox relay if Kafka
is down. The order of checks: trigger (404 unknown/deleted/non-webhook, 409 inactive),
body size (413), signature when the trigger has `config.secret` (401; checked on the
raw bytes before parsing), content type (415), JSON (400), schema (400 with
`details.violations`), Idempotency-Key (400 when empty or over 255 characters).

Caches, both per process:
- triggers by id for TRIGGER_TTL (1 s), unknown ids too: a status change, an update
  or a delete takes effect on ingestion within one second;
- compiled schema validators by (trigger id, version), LRU-bounded: an update bumps
  the version, so a changed schema is never validated with a stale validator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from triggerd.api.http import json_response, read_raw_json
from triggerd.api.payloads import Validator, compile_schema, violations
from triggerd.errors import ApiError, Conflict, NotFound, Unauthorized, ValidationError
from triggerd.models import Trigger, new_id, parse_uuid
from triggerd.services import Services
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, delivery_snapshot
from triggerd.store.events import fetch_trigger
from triggerd.store.ingest import PUBLISH_GRACE, IngestPipeline, IngestUnavailable, Overloaded
from triggerd.timeutil import utcnow

TRIGGER_TTL = 1.0
MAX_CACHED_TRIGGERS = 10_000
MAX_CACHED_VALIDATORS = 1024
MAX_KEY_CHARS = 255

INGEST: web.AppKey[IngestPipeline] = web.AppKey("ingest", IngestPipeline)


def ensure_pipeline(app: web.Application, services: Services) -> IngestPipeline:
    """The app's one ingestion pipeline; its tasks live as long as the app (started on
    startup, drained on cleanup, after the server has finished in-flight requests)."""
    if INGEST in app:
        return app[INGEST]
    pipeline = IngestPipeline(services.db, services.bus, services.metrics)
    app[INGEST] = pipeline

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(pipeline.run(), name="ingest-pipeline")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)
    return pipeline


def unavailable(exc: Exception) -> ApiError:
    if isinstance(exc, Overloaded):
        return ApiError("too many requests in flight; retry shortly", status=503,
                        code="overloaded")  # fmt: skip
    return ApiError(f"the event could not be stored ({exc}); retry shortly", status=503,
                    code="unavailable")  # fmt: skip


class TriggerCache:
    """Trigger rows by id for `ttl` seconds (misses too), LRU-bounded; concurrent misses
    for one id share one query."""

    def __init__(self, db: Database, ttl: float = TRIGGER_TTL,
                 max_size: int = MAX_CACHED_TRIGGERS) -> None:  # fmt: skip
        self.db = db
        self.ttl = ttl
        self.max_size = max_size
        self._entries: OrderedDict[str, tuple[float, Trigger | None]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Trigger | None]] = {}

    async def get(self, trigger_id: str) -> Trigger | None:
        entry = self._entries.get(trigger_id)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        loading = self._loading.get(trigger_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Trigger | None] = asyncio.get_running_loop().create_future()
        self._loading[trigger_id] = future
        try:
            trigger = await fetch_trigger(self.db, trigger_id)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it too
            raise
        finally:
            del self._loading[trigger_id]
        future.set_result(trigger)
        self._entries[trigger_id] = (now + self.ttl, trigger)
        self._entries.move_to_end(trigger_id)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        return trigger


class ValidatorCache:
    """Compiled payload validators by (trigger id, version), LRU-bounded."""

    def __init__(self, max_size: int = MAX_CACHED_VALIDATORS) -> None:
        self.max_size = max_size
        self._entries: OrderedDict[tuple[str, int], Validator | None] = OrderedDict()

    def get(self, trigger: Trigger) -> Validator | None:
        key = (trigger.id, trigger.version)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        schema = trigger.config.get("schema")
        validator = compile_schema(schema) if schema is not None else None
        self._entries[key] = validator
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        return validator


def check_payload(validators: ValidatorCache, trigger: Trigger, payload: Any) -> None:
    """400 with `details.violations` when `payload` does not match the trigger's schema."""
    validator = validators.get(trigger)
    if validator is None:
        return
    found = violations(validator, payload)
    if found:
        raise ValidationError("payload", "does not match the trigger's schema",
                              details={"violations": found})  # fmt: skip


def check_signature(secret: str, raw: bytes, header: str | None) -> None:
    if not header or not header.startswith("sha256="):
        raise Unauthorized("missing X-Signature: sha256=<hex HMAC-SHA256 of the body>")
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(header[7:].strip().lower().encode(), expected.encode()):
        raise Unauthorized("X-Signature does not match the body")


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_CHARS:
        raise ValidationError("Idempotency-Key", f"must be 1 to {MAX_KEY_CHARS} characters")
    return key


class WebhookHandler:
    def __init__(self, services: Services, pipeline: IngestPipeline) -> None:
        self.services = services
        self.pipeline = pipeline
        self.triggers = TriggerCache(services.db)
        self.validators = ValidatorCache()
        counter = services.metrics.webhook_requests
        self._count: Callable[[int], None] = lambda code: counter.labels(str(code)).inc()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        code = 500
        try:
            response = await self._ingest(request)
            code = response.status
            return response
        except (ApiError, web.HTTPException) as exc:
            code = exc.status
            raise
        finally:
            self._count(code)

    async def _trigger(self, raw_id: str) -> Trigger:
        trigger_id = parse_uuid(raw_id)
        if trigger_id is None:
            raise NotFound("no such webhook trigger")
        try:
            trigger = await self.triggers.get(trigger_id)
        except Exception as exc:
            raise unavailable(exc) from None
        if trigger is None or trigger.type != "webhook":
            raise NotFound("no such webhook trigger")
        if trigger.status != "active":
            raise Conflict("the trigger is inactive", code="trigger_inactive")
        return trigger

    async def _ingest(self, request: web.Request) -> web.Response:
        trigger = await self._trigger(request.match_info["trigger_id"])
        raw = await request.read()
        secret = trigger.config.get("secret")
        if secret:
            check_signature(str(secret), raw, request.headers.get("X-Signature"))
        _, payload = await read_raw_json(request)
        check_payload(self.validators, trigger, payload)
        key = _idempotency_key(request)
        now = utcnow()
        record = EventRecord(
            id=new_id(), trigger_id=trigger.id, trigger_name=trigger.name,
            trigger_type=trigger.type, source="webhook", is_test_run=False, payload=payload,
            delivery=delivery_snapshot(trigger.config), fired_at=now,
            publish_at=now + PUBLISH_GRACE,
        )  # fmt: skip
        try:
            event_id = await self.pipeline.submit(record, key, len(raw))
        except (Overloaded, IngestUnavailable) as exc:
            raise unavailable(exc) from None
        return json_response({"event_id": event_id, "status": "accepted"}, status=202)


def add_routes(app: web.Application, services: Services) -> None:
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    handler = WebhookHandler(services, ensure_pipeline(app, services))
    app.router.add_post("/api/v1/webhook/{trigger_id}", handler)

"""Webhook ingestion: `POST /api/v1/webhook/{trigger_id}`.

A request is answered 202 only after its event row is committed (group commit in
ingest/pipeline.py); the job is published right after, and by the outbox relay if Kafka
is down. The order of checks: trigger (404 unknown/deleted/non-webhook, 409 inactive),
body size (413), signature when the trigger has `config.secret` (401; checked on the
raw bytes before parsing), content type (415), JSON (400), schema (400 with
`details.violations`), Idempotency-Key (400 when empty or over 255 characters), the
size of the Kafka job the payload makes (413 `payload_too_large` over
TRIGGERD_KAFKA_MAX_REQUEST_SIZE: Kafka would never take it, so nothing is stored).

Caches, both per process:
- webhook targets (the trigger row, prepared) by id for TRIGGER_TTL (1 s), unknown ids
  too. An update or a delete through this process's API drops the entry at once
  (Services.trigger_changes); one made through another process takes effect here
  within one second;
- compiled schema validators by (trigger id, version), LRU-bounded: an update bumps
  the version, so a changed schema is never validated with a stale validator.

Trace context: the request's W3C `traceparent` is continued (the event's traceparent
is a child of it: the caller's trace, our span); without a valid one a new trace
starts. With span export on, the request is that span (a server span).

The payload is encoded to JSON once, here; the event row and the Kafka job reuse the
bytes. A payload orjson can read but not write back (nested over ~250 levels) is a 400
for its own request instead of failing the group-commit batch it would have joined.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from triggerd.api.http import parse_json_as, read_body
from triggerd.api.jobsize import check_event
from triggerd.domain.contract import WebhookConfig
from triggerd.domain.errors import ApiError, Conflict, NotFound, Unauthorized, ValidationError
from triggerd.domain.models import Trigger, new_id, parse_uuid
from triggerd.domain.payloads import Validator, compile_schema, encode_payload, violations
from triggerd.domain.timeutil import utcnow
from triggerd.domain.tracecontext import continue_or_start
from triggerd.ingest.pipeline import PUBLISH_GRACE, IngestPipeline, IngestUnavailable, Overloaded
from triggerd.services import Services
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord
from triggerd.store.events import fetch_trigger
from triggerd.tracing import NO_SPAN, Kind, Span

TRIGGER_TTL = 1.0
MAX_CACHED_TRIGGERS = 10_000
MAX_CACHED_VALIDATORS = 1024
MAX_KEY_CHARS = 255
ROUTE = "/api/v1/webhook/{trigger_id}"
_JSON = {"Content-Type": "application/json"}

INGEST: web.AppKey[IngestPipeline] = web.AppKey("ingest", IngestPipeline)


def pipeline_of(app: web.Application) -> IngestPipeline:
    """The process's ingestion pipeline, built and run by the composition root (the
    supervisor's `ingest` component) and handed to the app by `build_app`."""
    if INGEST not in app:
        raise RuntimeError("build_app(..., ingest=...) was not given the ingestion pipeline")
    return app[INGEST]


def unavailable(exc: Exception) -> ApiError:
    if isinstance(exc, Overloaded):
        return ApiError("too many requests in flight; retry shortly", status=503,
                        code="overloaded")  # fmt: skip
    return ApiError(f"the event could not be stored ({exc}); retry shortly", status=503,
                    code="unavailable")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """What ingestion needs of a webhook trigger, prepared once per load of the row:
    its compiled validator, its HMAC secret and the delivery settings every event
    snapshots."""

    trigger: Trigger
    validator: Validator | None
    secret: str | None
    delivery: dict[str, Any]


class Missing(enum.Enum):
    MISSING = enum.auto()


MISSING = Missing.MISSING


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
        config = trigger.config
        schema = config.json_schema if isinstance(config, WebhookConfig) else None
        validator = compile_schema(schema) if schema is not None else None
        self._entries[key] = validator
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        return validator


class TargetCache:
    """Webhook targets by trigger id (the URL's id as given when it is not a UUID), for
    `ttl` seconds (unknown ids too), LRU-bounded; concurrent misses for one id share one
    query. A reload of an unchanged trigger reuses its compiled validator."""

    def __init__(self, db: Database, ttl: float = TRIGGER_TTL,
                 max_size: int = MAX_CACHED_TRIGGERS) -> None:  # fmt: skip
        self.db = db
        self.ttl = ttl
        self.max_size = max_size
        self.validators = ValidatorCache()
        self._entries: OrderedDict[str, tuple[float, Target | None]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Target | None]] = {}
        # Bumped by forget(): a load that began before a change must not cache its row.
        self._generation = 0

    def forget(self, trigger_id: str) -> None:
        """The trigger changed (or went): read it again on its next request."""
        self._entries.pop(trigger_id, None)
        self._generation += 1

    def cached(self, raw_id: str) -> Target | Missing | None:
        """The fresh cached target of `raw_id` (None: cached as unknown), or MISSING:
        without a coroutine, which the hit of nearly every webhook does not need."""
        entry = self._entries.get(raw_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return MISSING

    async def get(self, raw_id: str) -> Target | None:
        key = parse_uuid(raw_id) or raw_id
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Target | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation
        try:
            target = await self._load(key)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it too
            raise
        finally:
            del self._loading[key]
        future.set_result(target)
        if generation == self._generation:
            self._entries[key] = (now + self.ttl, target)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        return target

    async def _load(self, key: str) -> Target | None:
        trigger_id = parse_uuid(key)
        if trigger_id is None:
            return None
        trigger = await fetch_trigger(self.db, trigger_id)
        if trigger is None or trigger.type != "webhook":
            return None
        config = trigger.config
        secret = config.secret if isinstance(config, WebhookConfig) else None
        return Target(trigger, self.validators.get(trigger), secret or None,
                      config.delivery())  # fmt: skip


def check_payload(validator: Validator | None, payload: Any) -> None:
    """400 with `details.violations` when `payload` does not match the trigger's schema
    (`validator`: its compiled schema, None when it has none)."""
    if validator is None:
        return
    found = violations(validator, payload)
    if found:
        raise ValidationError("payload", "does not match the trigger's schema",
                              details={"violations": found})  # fmt: skip


def check_signature(secret: str, raw: bytes, header: str | None) -> None:
    if not header:
        raise Unauthorized("missing X-Signature: sha256=<hex HMAC-SHA256 of the body>")
    if header[:7].lower() != "sha256=":
        raise Unauthorized("X-Signature must be sha256=<hex HMAC-SHA256 of the body>")
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(header[7:].strip().lower().encode(), expected.encode()):
        raise Unauthorized("X-Signature does not match the body")


def check_key(key: str | None) -> str | None:
    """The request's Idempotency-Key (None when it has none): 400 when it is empty or
    over MAX_KEY_CHARS characters."""
    if key is not None and (not key or len(key) > MAX_KEY_CHARS):
        raise ValidationError("Idempotency-Key", f"must be 1 to {MAX_KEY_CHARS} characters")
    return key


def usable(target: Target | None) -> Target:
    """`target` when it may take webhooks: 404 for none, 409 when it is inactive."""
    if target is None:
        raise NotFound("no such webhook trigger")
    if target.trigger.status != "active":
        raise Conflict("the trigger is inactive", code="trigger_inactive")
    return target


class WebhookHandler:
    """Ingestion of one webhook, in two parts any HTTP front end can call: `admit` (the
    checks and the event they make; no I/O) and the pipeline's `submit` (the group
    commit). The aiohttp route is one front end, the fast lane (api/lane.py) the other;
    both answer alike because they share these."""

    def __init__(self, services: Services, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline
        self.bus = services.bus
        self.tracer = services.tracer
        self.max_body = services.settings.max_body
        self.metrics = services.metrics
        self.targets = TargetCache(services.db)
        services.trigger_changes.subscribe(self.targets.forget)
        counter = services.metrics.webhook_requests
        self._counters: dict[int, Callable[[], None]] = {}
        self._counter = counter

    def count(self, code: int) -> None:
        inc = self._counters.get(code)
        if inc is None:
            inc = self._counters[code] = self._counter.labels(str(code)).inc
        inc()

    def admit(self, target: Target, raw: bytes, content_type: str, signature: str | None,
              key: str | None, traceparent: str) -> EventRecord:  # fmt: skip
        """The event a body makes for an active `target`, after the checks that follow
        reading it, in the documented order: signature, content type (`content_type`:
        the media type, lower case, without parameters), JSON, schema, Idempotency-Key,
        the size of the job. Raises ApiError."""
        if target.secret:
            check_signature(target.secret, raw, signature)
        payload = parse_json_as(content_type, raw)
        check_payload(target.validator, payload)
        check_key(key)
        trigger = target.trigger
        now = utcnow()
        record = EventRecord(
            id=new_id(), trigger_id=trigger.id, trigger_name=trigger.name,
            trigger_type=trigger.type, source="webhook", is_test_run=False,
            payload=payload, delivery=target.delivery, fired_at=now,
            publish_at=now + PUBLISH_GRACE, payload_json=encode_payload(payload),
            traceparent=traceparent,
        )  # fmt: skip
        check_event(self.bus, record)
        return record

    def start_span(self, traceparent: str, caller: str | None) -> Span:
        """The request's server span (NO_SPAN unless span export is on)."""
        if not self.tracer.enabled:
            return NO_SPAN
        return self.tracer.start(f"POST {ROUTE}", Kind.SERVER, own=traceparent, parent=caller,
                                 attributes={"http.request.method": "POST",
                                             "http.route": ROUTE})  # fmt: skip

    def finish(self, code: int, span: Span) -> None:
        """Count the answer; end the span with it."""
        self.count(code)
        if span is not NO_SPAN:
            span.set("http.response.status_code", code)
            if code >= 500:
                span.fail(f"HTTP {code}")
            span.end()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp route: one coroutine for the whole request (the checks are plain
        calls; the only suspensions are the body, a cache miss and the group commit)."""
        code = 500
        traceparent, caller = continue_or_start(request.headers.get("traceparent"))
        span = self.start_span(traceparent, caller)
        try:
            raw_id = request.match_info["trigger_id"]
            target = self.targets.cached(raw_id)
            if target is MISSING:
                target = await self.load(raw_id)
            target = usable(target)
            raw = await read_body(request)
            headers = request.headers
            key = headers.get("Idempotency-Key")
            record = self.admit(target, raw, request.content_type, headers.get("X-Signature"),
                                key, traceparent)  # fmt: skip
            try:
                event_id = await self.pipeline.submit(record, key, len(raw))
            except (Overloaded, IngestUnavailable) as exc:
                raise unavailable(exc) from None
            code = 202
            return web.Response(body=accepted_body(event_id), status=202, headers=_JSON)
        except (ApiError, web.HTTPException) as exc:
            code = exc.status
            raise
        finally:
            self.finish(code, span)

    async def load(self, raw_id: str) -> Target | None:
        """The target of `raw_id` from the database (a cache miss); 503 when it is down."""
        try:
            return await self.targets.get(raw_id)
        except Exception as exc:
            raise unavailable(exc) from None


def accepted_body(event_id: str) -> bytes:
    return b'{"event_id":"%s","status":"accepted"}' % event_id.encode()


WEBHOOK: web.AppKey[WebhookHandler] = web.AppKey("webhook", WebhookHandler)


def add_routes(app: web.Application, services: Services) -> None:
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    # The bound coroutine method itself: aiohttp wraps any other callable per request.
    webhooks = app[WEBHOOK] = WebhookHandler(services, pipeline_of(app))
    handler = webhooks.handle
    app.router.add_post(ROUTE, handler)

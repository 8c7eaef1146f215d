"""OpenAPI 3 document at `/api/docs/swagger.json` and Swagger UI at `/api/docs`, both
served from the package (no CDN). Open: API keys guard `/api/v1` only.

The document is built once, at start-up, from the routes actually registered on the
app (so it describes what this process serves) and one central table, `OPERATIONS`,
mapping method + path to its operation; request and response bodies, and the query of
a list declared as a model, are the models of `domain.contract`, whose JSON Schema
`api.openapi` turns into components. Route modules need no decorators. A registered
route missing from the table is still listed, with only the error envelope, and
logged; the tests require there be none.

`security` is part of the contract whatever this deployment's settings: every `/api/v1`
operation but webhook ingestion (the rule of `middleware.requires_key`) takes a key, by
either scheme, and documents its 401; keys are enforced only where TRIGGERD_API_KEYS is
set. The Swagger UI files are served by name from a fixed set, so a missing one is the
envelope's 404 like any other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from triggerd import __version__
from triggerd.api.http import file_server
from triggerd.api.middleware import requires_key
from triggerd.api.openapi import components, query_parameters, refs
from triggerd.domain.contract import (
    EndpointList,
    EndpointListQuery,
    QueryModel,
    TriggerList,
    TriggerListQuery,
    TriggerUpdate,
)
from triggerd.domain.contract import Trigger as TriggerBody
from triggerd.domain.contract.audit import AuditList, AuditListQuery
from triggerd.domain.contract.bodies import (
    Accepted,
    Access,
    ErrorEnvelope,
    EventDetail,
    EventList,
    EventStats,
    Health,
    TestRunBody,
)
from triggerd.domain.contract.schedules import (
    BackfillBody,
    BackfillResult,
    OccurrenceList,
    OccurrenceQuery,
    TriggerPreview,
    Upcoming,
    UpcomingQuery,
)
from triggerd.domain.contract.triggers import TriggerCreate
from triggerd.domain.enums import ExecutionStatus, RetentionStatus, Source, values

log = logging.getLogger(__name__)

SPEC_PATH = "/api/docs/swagger.json"
UI_PATH = "/api/docs"
STATIC_PREFIX = "/api/docs/static"
STATIC_DIR = Path(__file__).parent / "static"
_JS, _TEXT = "text/javascript; charset=utf-8", "text/plain; charset=utf-8"
# The files under STATIC_PREFIX, by name, with their Content-Type: nothing else in
# STATIC_DIR is reachable (no listing, no path traversal).
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": _JS, "swagger-initializer.js": _JS,
    "swagger-ui.css": "text/css; charset=utf-8", "favicon-32x32.png": "image/png",
    "swagger-ui-bundle.js.LICENSE.txt": _TEXT, "swagger-ui-LICENSE": _TEXT,
    "swagger-ui-NOTICE": _TEXT,
}  # fmt: skip
OPENAPI_VERSION = "3.0.3"

JSON = "application/json"
_REF = "#/components/schemas/"
_VAR = re.compile(r"\{([^{}:]+)(?::[^{}]*)?\}")

# --- the operations ----------------------------------------------------------------------


Media = str | tuple[str, ...]  # a response's media type, or its several


@dataclass(frozen=True)
class Named:
    """A body type without a class of its own (a union), and its component name."""

    name: str
    type: Any


# A body: a model, a named type, an inline schema's name ("text", "object"), or None.
Body = type[BaseModel] | Named | str | None


@dataclass(frozen=True)
class Op:
    """One operation. `responses`: status -> (description, body, media type or types).
    `errors`: statuses answered with the error envelope, described by `error_text` or
    else `_ERRORS`. `body`: the request body (or a raw schema dict). `query_model`: the
    model the query string is parsed with; `query`: parameters declared here."""

    summary: str
    tag: str
    responses: Mapping[int, tuple[str, Body, Media]]
    errors: tuple[int, ...] = ()
    error_text: Mapping[int, str] = field(default_factory=dict)
    body: Body | dict[str, Any] = None
    body_required: bool = True  # False: the body may also be empty or null
    body_description: str = ""
    body_examples: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    query: tuple[dict[str, Any], ...] = ()
    query_model: type[QueryModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()
    path_params: tuple[str, ...] = ()  # descriptions, in the order of the path's variables
    path_schemas: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # default: string
    description: str = ""
    response_headers: Mapping[int, Mapping[str, str]] = field(default_factory=dict)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _filter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A filter: an empty value means no filter (as api.http.query_choice reads it)."""
    return {**_query(name, schema, description + "; empty: no filter"), "allowEmptyValue": True}


def _choice(values: Iterable[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _paging(max_page: int = 10_000_000) -> tuple[dict[str, Any], ...]:
    return (
        _query("page", {"type": "integer", "minimum": 1, "maximum": max_page, "default": 1},
               "1-based page number; past the last page the list is empty"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
               "Page size, 1-100"),
    )  # fmt: skip


def _ok(description: str, schema: Body, media: Media = JSON) -> tuple[str, Body, Media]:
    return description, schema, media


_ID = "Trigger ID (UUID); a malformed or unknown one is a 404"
_HOOK = "https://example.com/hooks/triggerd"
_CREATE_EXAMPLES: dict[str, tuple[str, Any]] = {
    "cron": ("Every weekday at 09:00 in New York", {
        "name": "standup reminder", "type": "cron_scheduled",
        "config": {"cron": "0 9 * * 1-5", "timezone": "America/New_York", "endpoint": _HOOK,
                   "payload": {"text": "stand-up in 5 minutes"},
                   "headers": {"Authorization": "Bearer <token>"}}}),
    "once": ("Once, in 10 minutes", {
        "name": "follow-up", "type": "time_scheduled",
        "config": {"run_in": "10m", "endpoint": _HOOK, "payload": {"order": 42}}}),
    "interval": ("Every 5 minutes from a given start", {
        "name": "poll", "type": "interval_scheduled",
        "config": {"interval_seconds": 300, "start_at": "2030-01-01T00:00:00Z", "endpoint": _HOOK,
                   "retry": {"max_attempts": 3, "backoff_seconds": 2}}}),
    "webhook": ("A webhook that accepts orders", {
        "name": "orders", "type": "webhook",
        "config": {"schema": {"type": "object", "required": ["order_id"],
                              "properties": {"order_id": {"type": "integer"}}},
                   "endpoint": _HOOK, "secret": "<shared secret>"}}),
}  # fmt: skip
_UPDATE_EXAMPLES: dict[str, tuple[str, Any]] = {
    "pause": ("Stop future firings", {"status": "inactive"}),
    "rename": ("Rename", {"name": "nightly export"}),
    "reschedule": ("New cron (the config is replaced whole)", {
        "config": {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "endpoint": _HOOK}}),
}  # fmt: skip
_CREATE = Named("TriggerCreate", TriggerCreate)
_TRIGGER = _ok("The trigger", TriggerBody)
_ACCEPTED = _ok("The event was recorded and will be published", Accepted)

OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/api/v1/triggers"): Op(
        "Create a trigger", "triggers", {201: _ok("Created", TriggerBody)}, (400, 413, 415, 503),
        body=_CREATE, body_examples=_CREATE_EXAMPLES,
        description="Validated strictly: any bad field is a 400 whose `details.field` names it. "
                    "A scheduled, active trigger gets its first occurrence at once.",
        response_headers={201: {"Location": "Path of the new trigger"}},
    ),
    ("GET", "/api/v1/triggers"): Op(
        "List triggers, newest first", "triggers", {200: _ok("A page of triggers", TriggerList)},
        (400, 503), query_model=TriggerListQuery,
    ),
    ("GET", "/api/v1/triggers/{id}"): Op(
        "Get a trigger", "triggers", {200: _TRIGGER}, (404, 503), path_params=(_ID,),
    ),
    ("PUT", "/api/v1/triggers/{id}"): Op(
        "Update a trigger (partial)", "triggers", {200: _TRIGGER}, (400, 404, 413, 415, 503),
        body=TriggerUpdate, path_params=(_ID,), body_examples=_UPDATE_EXAMPLES,
        description="Same as PATCH: `name`, `status` and `config` are each optional; a new "
                    "config replaces the old one and is validated as on create; `type` cannot "
                    "change. A schedule change cancels pending occurrences and computes the "
                    "next one in the same transaction; `inactive` stops future firings, "
                    "`active` resumes from the next occurrence after now.",
    ),
    ("PATCH", "/api/v1/triggers/{id}"): Op(
        "Update a trigger (partial)", "triggers", {200: _TRIGGER}, (400, 404, 413, 415, 503),
        body=TriggerUpdate, path_params=(_ID,), body_examples=_UPDATE_EXAMPLES,
        description="Same as PUT.",
    ),
    ("DELETE", "/api/v1/triggers/{id}"): Op(
        "Delete a trigger", "triggers", {204: _ok("Deleted", None)}, (404, 503),
        path_params=(_ID,),
        description="Pending occurrences are cancelled; its events stay, queryable by "
                    "trigger_id.",
    ),
    ("POST", "/api/v1/triggers/test"): Op(
        "Test-run a trigger definition", "test runs", {202: _ACCEPTED}, (400, 413, 415, 503),
        body=_CREATE, body_examples=_CREATE_EXAMPLES,
        description="Same body and validation as create; fires exactly one event now with "
                    "`trigger_id` null and saves no trigger.",
    ),
    ("POST", "/api/v1/triggers/{id}/test"): Op(
        "Test-run a stored trigger", "test runs", {202: _ACCEPTED}, (400, 404, 413, 415, 503),
        body=TestRunBody, body_required=False,
        body_description="Optional; empty or null: no override",
        path_params=(_ID,),
        description="Fires one event now (`source=manual-test`, `is_test_run=true`) through "
                    "Kafka and the worker; the schedule is untouched. Works while inactive.",
    ),
    ("GET", "/api/v1/triggers/{id}/upcoming"): Op(
        "The next occurrences of a trigger", "schedules",
        {200: _ok("The next occurrences, as the scheduler will fire them", Upcoming)},
        (400, 404, 503), query_model=UpcomingQuery, path_params=(_ID,),
        description="Computed by the scheduler's own function from the pending occurrence: "
                    "`scheduled_for` (nominal), `fire_at` (with jitter) and `local` (the "
                    "trigger's zone, with the offset of that day). Empty for webhook and "
                    "inactive triggers and a one-time trigger that has fired.",
    ),
    ("POST", "/api/v1/triggers/preview"): Op(
        "The next occurrences of a trigger definition", "schedules",
        {200: _ok("The occurrences it would have if created now", Upcoming)},
        (400, 413, 415, 503), body=Named("TriggerPreview", TriggerPreview),
        body_examples={"cron": _CREATE_EXAMPLES["cron"]},
        description="The create body, validated as on create, and an optional `count`; "
                    "nothing is saved and `trigger_id` is null. A preview has no trigger id: "
                    "its `fire_at` shows jitter computed for the nil UUID.",
    ),
    ("GET", "/api/v1/triggers/{id}/occurrences"): Op(
        "The occurrence history of a trigger, newest first", "schedules",
        {200: _ok("A page of occurrences", OccurrenceList)}, (400, 404, 503),
        query_model=OccurrenceQuery, path_params=(_ID,),
        description="Every occurrence that fell due, and the pending one, kept as long as "
                    "events are: fired (with its event, publish time and delay), missed "
                    "(passed over by the misfire policy after downtime) or cancelled, with a "
                    "note saying why.",
    ),
    ("POST", "/api/v1/triggers/{id}/backfill"): Op(
        "Fire past occurrences of a schedule now", "schedules",
        {202: _ok("Fired, or counted as already fired", BackfillResult)},
        (400, 404, 409, 413, 415, 503), body=BackfillBody, path_params=(_ID,),
        error_text={409: "Not a cron or interval trigger (`not_backfillable`)"},
        description="Every occurrence with since <= scheduled_for < until fires once, now, "
                    "with `source: backfill` and the event id the scheduler gives that "
                    "occurrence: one already fired (its event still kept) does not fire "
                    "again. Cron and interval triggers, active or not; until not in the "
                    "future; at most 1,000 occurrences (else a 400 naming until).",
    ),
    ("POST", "/api/v1/webhook/{trigger_id}"): Op(
        "Send an event to a webhook trigger", "webhook", {202: _ACCEPTED},
        (400, 401, 404, 409, 413, 415, 503),
        body={"description": "Any JSON value, validated against the trigger's schema"},
        body_description="The payload",
        path_params=("Webhook trigger ID",),
        error_text={401: "X-Signature missing or wrong: the trigger has config.secret, and "
                         "the header must be sha256=<hex HMAC-SHA256 of the raw body>"},
        headers=(
            {"in": "header", "name": "Idempotency-Key", "required": False,
             "schema": {"type": "string", "minLength": 1, "maxLength": 255},
             "description": "The same key for the same trigger returns the first event_id"},
            {"in": "header", "name": "X-Signature", "required": False,
             "schema": {"type": "string", "example": "sha256=4f2a..."},
             "description": "Required when the trigger has a secret: sha256=<hex HMAC-SHA256 "
                            "of the raw body>"},
        ),
        description="202 once the event is durably recorded. 400 lists `details.violations` "
                    "(JSON Pointer + message); 404 unknown or non-webhook trigger; 409 inactive; "
                    "401 bad signature. Needs no API key, even where keys are configured.",
    ),
    ("GET", "/api/v1/events"): Op(
        "List events, newest first", "events", {200: _ok("A page of events", EventList)},
        (400,),
        query=(
            _filter("trigger_id", {"type": "string", "format": "uuid"}, "Only this trigger"),
            _filter("source", _choice(values(Source)), "Only events from this source"),
            _filter("execution_status", _choice(values(ExecutionStatus)), "Delivery state"),
            _filter("retention_status", _choice((*values(RetentionStatus), "all")),
                    "Default active"),
            _filter("is_test_run", {"type": "boolean"}, "Only test runs, or only real events"),
            _filter("since", {"type": "string"}, "fired_at >= since (ISO 8601; no offset: UTC)"),
            _filter("until", {"type": "string"}, "fired_at < until (ISO 8601; no offset: UTC)"),
            *_paging(1_000_000),
        ),
    ),
    ("GET", "/api/v1/events/stats"): Op(
        "Event statistics", "events", {200: _ok("Counts and percentiles", EventStats)}, (400,),
        query=(_filter("trigger_id", {"type": "string", "format": "uuid"}, "Only this trigger"),
               _filter("window", {"type": "string", "default": "48h"},
                       "Duration to look back, 1s-48h: 90s, 15m, 2h"),
               _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                "default": 100}, "Most triggers listed, busiest first")),
        description="Over the window, overall and per trigger: total and counts by "
                    "execution_status, source and retention_status (every value, zeros "
                    "included); fire-delay and delivery-latency percentiles. `truncated` "
                    "says when the per-trigger list leaves triggers out.",
    ),
    ("GET", "/api/v1/events/{id}"): Op(
        "Get an event with its delivery attempts", "events",
        {200: _ok("The event", EventDetail)}, (404,), path_params=("Event ID",),
    ),
    ("POST", "/api/v1/events/{id}/replay"): Op(
        "Deliver an event again", "events", {202: _ACCEPTED}, (404, 409),
        path_params=("Event ID",),
        description="Same event_id and payload; a new attempt series continuing the count. "
                    "409 while a delivery of the event is still pending or retrying.",
    ),
    ("GET", "/api/v1/audit"): Op(
        "Who changed what, newest first", "audit", {200: _ok("A page of entries", AuditList)},
        (400,), query_model=AuditListQuery,
        description="Every change made through the API (and every trigger the daemon "
                    "disables by itself), recorded in the transaction that made it. "
                    "`changes` shows old and new values with secrets as `***`.",
    ),
    ("GET", "/api/v1/endpoints"): Op(
        "List endpoints and their circuits, open ones first", "endpoints",
        {200: _ok("A page of endpoints", EndpointList)}, (400,),
        query_model=EndpointListQuery,
        description="Every endpoint (a trigger's endpoint URL without its query string) "
                    "with a recorded delivery attempt. After a run of retryable failures its "
                    "circuit opens: deliveries to it wait (none is dropped, none uses up an "
                    "attempt) until one probe succeeds.",
    ),
    ("GET", "/api/v1/access"): Op(
        "Who the caller is and what its key may do", "access",
        {200: _ok("The caller's access", Access)},
        description="The key's name (the `actor` of the audit log) and scope: a `read` key "
                    "may call GET routes only. While the API is open: `anonymous`, `write`. "
                    "A client can offer only what its key may call, without trying a change.",
    ),
    ("GET", "/health"): Op(
        "Health of this process", "operations",
        {200: _ok("Every check is ok", Health), 503: _ok("A check failed", Health)},
    ),
    ("HEAD", "/health"): Op(
        "Health of this process, status only", "operations",
        {200: _ok("Every check is ok", None), 503: _ok("A check failed", None)},
    ),
    ("GET", "/health/live"): Op(
        "Liveness of this process (200 while its event loop answers)", "operations",
        {200: _ok("The process is alive", "object")},
    ),
    ("HEAD", "/health/live"): Op(
        "Liveness of this process, status only", "operations",
        {200: _ok("The process is alive", None)},
    ),
    ("GET", "/metrics"): Op(
        "Prometheus metrics", "operations",
        {200: _ok("Prometheus text exposition format", "text", "text/plain")},
    ),
    ("HEAD", "/metrics"): Op(
        "Prometheus metrics, headers only", "operations", {200: _ok("Metrics", None)},
    ),
    ("GET", UI_PATH): Op(
        "Swagger UI", "docs", {200: _ok("The Swagger UI page", "text", "text/html")},
    ),
    ("GET", UI_PATH + "/"): Op(
        "Swagger UI, redirected", "docs", {308: _ok("Permanent redirect to the UI", None)},
        response_headers={308: {"Location": "../docs (relative: /api/docs here)"}},
    ),
    ("GET", STATIC_PREFIX + "/{name}"): Op(
        "A file of the Swagger UI page", "docs",
        {200: _ok("The file", "text", tuple(sorted({t.split(";")[0] for t in ASSETS.values()})))},
        (404,),
        error_text={404: "No such file"}, path_params=("File name",),
        path_schemas={"name": _choice(ASSETS)},
    ),
    ("GET", SPEC_PATH): Op(
        "This OpenAPI document", "docs", {200: _ok("OpenAPI 3 document", "object")},
    ),
}  # fmt: skip

_ERRORS = {
    400: "Invalid input: `details.field` names the field or query parameter",
    401: "Missing or invalid API key (Authorization: Bearer <key> or X-API-Key); only "
         "where the deployment sets TRIGGERD_API_KEYS",
    403: "The API key's scope does not allow this call: a read key may only GET",
    404: "Not found (also for a malformed id)",
    409: "Conflict with the resource's state",
    413: "Body larger than the limit (default 1 MiB); or, where an event is fired, a payload "
         "whose Kafka job would exceed TRIGGERD_KAFKA_MAX_REQUEST_SIZE (nothing is stored)",
    415: "Content-Type is not application/json",
    503: "Storage unavailable right now (database down, or overloaded); retry shortly",
}  # fmt: skip

_INLINE = {"text": {"type": "string"}, "object": {"type": "object"}}
_TAGS = (
    ("triggers", "Define webhook, one-time, cron and interval triggers"),
    ("schedules", "Upcoming runs, the occurrence history, backfill"),
    ("test runs", "Fire one event now, without touching the schedule"),
    ("webhook", "Ingestion: events sent by clients to webhook triggers"),
    ("events", "The event log: every firing, its delivery attempts, statistics, replay"),
    ("audit", "Who changed what: every change made through the API"),
    ("endpoints", "Delivery targets: each endpoint's health (circuit breaker)"),
    ("access", "The caller's API key: its name and scope"),
    ("operations", "Health and Prometheus metrics (every process)"),
    ("docs", "This document and Swagger UI"),
)


# --- building the document -----------------------------------------------------------------


def _shape(path: str) -> str:
    return _VAR.sub("{}", path)


_BY_SHAPE = {(method, _shape(path)): op for (method, path), op in OPERATIONS.items()}


def _name(body: Body) -> str | None:
    if body is None or isinstance(body, str):
        return body
    return body.name if isinstance(body, Named) else body.__name__


def _schema_ref(body: Body) -> dict[str, Any]:
    name = _name(body)
    assert name is not None
    return dict(_INLINE[name]) if name in _INLINE else {"$ref": _REF + name}


def _response(description: str, schema: Body, media: Media, method: str,
              headers: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
    }
    for name, text in (headers or {}).items():
        out["headers"][name] = {"description": text, "schema": {"type": "string"}}
    if schema is not None and method != "HEAD":
        types = (media,) if isinstance(media, str) else media
        out["content"] = {each: {"schema": _schema_ref(schema)} for each in types}
    return out


# Either scheme will do.
_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
_REQUEST_ID = {"$ref": "#/components/parameters/X-Request-ID"}


def _operation(op: Op, method: str, path: str) -> dict[str, Any]:
    responses = {
        str(status): _response(text, schema, media, method, op.response_headers.get(status))
        for status, (text, schema, media) in op.responses.items()
    }
    guarded = requires_key(path)
    # A key is asked for where keys guard the path; a read key may only GET (api.keys).
    refusals = ((401,) if method == "GET" else (401, 403)) if guarded else ()
    for status in sorted({*op.errors, *refusals}):
        text = op.error_text.get(status, _ERRORS[status])
        responses[str(status)] = _response(text, ErrorEnvelope, JSON, method)
    variables = _VAR.findall(path)
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True,
         "schema": op.path_schemas.get(name, {"type": "string"}),
         "description": op.path_params[i] if i < len(op.path_params) else name}
        for i, name in enumerate(variables)
    ]  # fmt: skip
    if op.query_model is not None:
        parameters += query_parameters(op.query_model)
    parameters += [*op.query, *op.headers]
    operation: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": _operation_id(method, path),
        "parameters": [*parameters, _REQUEST_ID],
        "responses": responses,
    }
    if op.description:
        operation["description"] = op.description
    if op.body is not None:
        schema = op.body if isinstance(op.body, dict) else _schema_ref(op.body)
        if not op.body_required and "$ref" in schema:
            schema = {"nullable": True, "allOf": [schema]}
        media: dict[str, Any] = {"schema": schema}
        if op.body_examples:
            media["examples"] = {
                name: {"summary": summary, "value": value}
                for name, (summary, value) in op.body_examples.items()
            }
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {JSON: media},
            **({"description": op.body_description} if op.body_description else {}),
        }
    if path.startswith("/api/v1"):  # webhook ingestion says outright that it needs no key
        operation["security"] = _SECURITY if guarded else []
    return operation


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _VAR.sub(r"by_\1", path)).strip("_")
    return f"{method.lower()}_{words}"


def _undocumented(method: str, path: str) -> dict[str, Any]:
    op = Op(f"{method} {path}", "undocumented", {200: _ok("Success", None)})
    return _operation(op, method, path)


def registered_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route of the app."""
    return [(route.method.upper(), route.resource.canonical)
            for route in app.router.routes() if route.resource is not None]  # fmt: skip


def _bodies(op: Op) -> dict[str, Any]:
    """The models an operation names, by component name."""
    found = [op.body, ErrorEnvelope, *(schema for _, schema, _ in op.responses.values())]
    named: dict[str, Any] = {}
    for body in found:
        if isinstance(body, Named):
            named[body.name] = body.type
        elif isinstance(body, type):
            named[body.__name__] = body
    return named


def _components(operations: Iterable[Op]) -> dict[str, Any]:
    named: dict[str, Any] = {}
    for op in operations:
        named.update(_bodies(op))
    schemas = components(named)
    missing = refs(schemas.values()) - set(schemas)
    assert not missing, f"components referred to but not generated: {missing}"
    return schemas


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3 document of the routes registered on `app`."""
    paths: dict[str, dict[str, Any]] = {}
    documented: list[Op] = []
    for method, path in registered_routes(app):
        op = _BY_SHAPE.get((method, _shape(path)))
        if op is None:
            log.warning("route %s %s is not in the OpenAPI table (api/docs.py)", method, path)
            operation = _undocumented(method, path)
        else:
            documented.append(op)
            operation = _operation(op, method, path)
        paths.setdefault(path, {})[method.lower()] = operation
    enforced = "Enforced where the deployment sets TRIGGERD_API_KEYS; an open one ignores it"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "triggerd",
            "version": __version__,
            "description": "Event trigger platform: webhook, one-time, cron and interval "
                           "triggers, published to Kafka and delivered over HTTP. Every error "
                           "uses the envelope `{\"error\": {code, message, details, "
                           "request_id}}`; every response carries X-Request-ID.",
        },
        "tags": [{"name": name, "description": text} for name, text in _TAGS],
        "paths": paths,
        "components": {
            "schemas": _components(documented),
            "parameters": {"X-Request-ID": {
                "in": "header", "name": "X-Request-ID", "required": False,
                "schema": {"type": "string"},
                "description": "Echoed in the X-Request-ID response header. A value that is "
                               "not 1-128 of A-Z a-z 0-9 . _ : - is replaced by a generated "
                               "one, as is a missing one",
            }},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": f"Authorization: Bearer <key>. {enforced}"},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                               "description": f"X-API-Key: <key>. {enforced}"},
            },
            "headers": {"X-Request-ID": {
                "description": "The request's ID: the one sent, or a generated one",
                "required": True,
                "schema": {"type": "string"},
            }},
        },
    }  # fmt: skip


# --- serving -------------------------------------------------------------------------------

_INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>triggerd API</title>
  <link rel="stylesheet" href="docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui" data-spec-url="docs/swagger.json"></div>
  <script src="docs/static/swagger-ui-bundle.js"></script>
  <script src="docs/static/swagger-initializer.js"></script>
</body>
</html>
"""
# Everything the page loads comes from this server; nothing inline runs.
_UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# The files change only with the package: a browser revalidates (ETag, Last-Modified), and
# the 304 is cheap.
_ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


_asset = file_server(STATIC_DIR, ASSETS, _ASSET_HEADERS)


async def _to_ui(request: web.Request) -> web.StreamResponse:
    # Relative, like the page's own URLs, so it holds behind a proxy that mounts us under a
    # prefix; those `docs/static/...` URLs resolve only from /api/docs, not /api/docs/.
    raise web.HTTPPermanentRedirect("../docs")


def setup(app: web.Application) -> None:
    """Register the docs routes, then document every route of the app (call it last)."""
    state: dict[str, bytes] = {}

    async def spec_json(request: web.Request) -> web.Response:
        return web.Response(body=state["spec"], content_type=JSON)

    async def ui(request: web.Request) -> web.Response:
        return web.Response(text=_INDEX, content_type="text/html", headers=_UI_HEADERS)

    app.router.add_get(SPEC_PATH, spec_json, allow_head=False)
    app.router.add_get(UI_PATH, ui, allow_head=False)
    app.router.add_get(UI_PATH + "/", _to_ui, allow_head=False)
    app.router.add_get(STATIC_PREFIX + "/{name}", _asset, allow_head=False)
    state["spec"] = orjson.dumps(build_document(app))

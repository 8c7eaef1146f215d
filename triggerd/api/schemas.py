"""Marshmallow schemas of the HTTP API, used to document it (OpenAPI 3, `api.docs`).

They describe; `api.validation` decides. Request schemas are never looser than the
validator where JSON Schema can say it (so a body the schema rejects is rejected by
the API too): unknown keys are refused, optional keys accept null ("not given", as
the validator reads it), enums of nullable keys list null. What JSON Schema cannot
say (a valid cron, an IANA zone, a time not in the past, a compilable JSON Schema)
is in the descriptions and enforced by the validator with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from triggerd.api.validation import HTTP_METHODS, MAX_NAME_CHARS, MAX_SECONDS, STATUSES
from triggerd.store.events import EXECUTION_STATUSES, RETENTION_STATUSES
from triggerd.store.events import SOURCES as EVENT_SOURCES

# Schemas whose objects take no keys beyond their fields (docs sets additionalProperties).
CLOSED: list[type[Schema]] = []


def closed(cls: type[Schema]) -> type[Schema]:
    CLOSED.append(cls)
    return cls


def _meta(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, **extra}


def _optional_str(description: str, max_chars: int, **extra: Any) -> fields.String:
    return fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=max_chars),
        metadata=_meta(description, **extra),
    )


def _timestamp(description: str, *, nullable: bool = False) -> fields.String:
    return fields.String(
        required=True,
        allow_none=nullable,
        metadata=_meta(description, format="date-time", example="2025-01-01T09:00:00.000Z"),
    )


# --- errors and paging -------------------------------------------------------------------


class ErrorBody(Schema):
    code = fields.String(
        required=True, metadata=_meta("snake_case error code", example="validation_error")
    )
    message = fields.String(required=True, metadata=_meta("Human-readable message"))
    details = fields.Raw(
        required=True,
        allow_none=True,
        metadata=_meta("More about the error, e.g. `{\"field\": \"config.cron\"}` for a "
                       "validation error or `{\"violations\": [...]}` for a webhook payload"),
    )
    request_id = fields.String(required=True, metadata=_meta("The X-Request-ID of this request"))


class ErrorEnvelope(Schema):
    error = fields.Nested(ErrorBody, required=True)


class Pagination(Schema):
    current_page = fields.Integer(required=True, metadata=_meta("1-based page number"))
    page_size = fields.Integer(required=True, metadata=_meta("The `limit` of this page"))
    total_pages = fields.Integer(required=True)
    total_records = fields.Integer(required=True)


# --- trigger configs ---------------------------------------------------------------------


@closed
class RetryConfig(Schema):
    max_attempts = fields.Integer(
        allow_none=True,
        validate=validate.Range(min=1, max=20),
        metadata=_meta("Delivery attempts in all, first included (default 5)"),
    )
    backoff_seconds = fields.Float(
        allow_none=True,
        validate=validate.Range(min=0, max=3600),
        metadata=_meta("First retry delay; doubles each attempt, with jitter (default 1)",
                       exclusiveMinimum=True),
    )
    max_backoff_seconds = fields.Float(
        allow_none=True,
        validate=validate.Range(min=0, max=86400),
        metadata=_meta("Cap of the retry delay, >= backoff_seconds (default 300)",
                       exclusiveMinimum=True),
    )


class DeliveryConfig(Schema):
    """Keys every trigger type takes: how the worker delivers an event."""

    http_method = fields.String(
        allow_none=True,
        validate=validate.OneOf([*HTTP_METHODS, None]),
        metadata=_meta("Method of the delivery request (default POST)"),
    )
    headers = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.Length(max=8192)),
        allow_none=True,
        metadata=_meta("Extra request headers. Values of credential-like names (Authorization, "
                       "*token*, *secret*, *key*...) are returned as `***`; sending `***` back "
                       "keeps the stored value", maxProperties=100),
    )
    payload = fields.Raw(
        allow_none=True,
        metadata=_meta("Body of scheduled deliveries: any JSON (scheduled types)"),
    )
    timeout_seconds = fields.Float(
        allow_none=True,
        validate=validate.Range(min=0, max=300),
        metadata=_meta("Delivery timeout (default 10)", exclusiveMinimum=True),
    )
    retry = fields.Nested(RetryConfig, allow_none=True)
    signing_secret = _optional_str(
        "When set, deliveries carry an HMAC-SHA256 signature of the body (returned as `***`)",
        1024,
    )


_ENDPOINT = "Absolute http or https URL the event is delivered to"
_ENDPOINT_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://"
_ZONE = "IANA time zone (default UTC)"


@closed
class WebhookConfig(DeliveryConfig):
    endpoint = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=2048),
        metadata=_meta(_ENDPOINT + "; optional for webhook triggers: without it the event is "
                       "only published to Kafka", pattern=_ENDPOINT_PATTERN),
    )
    json_schema = fields.Raw(
        data_key="schema",
        allow_none=True,
        metadata=_meta("JSON Schema (draft-07 or 2020-12) incoming payloads must match; an "
                       "invalid schema is a 400. Without it any JSON body is accepted"),
    )
    secret = _optional_str(
        "When set, ingestion requires `X-Signature: sha256=<hex HMAC-SHA256 of the body>` "
        "(returned as `***`)",
        1024,
    )


class ScheduledConfig(DeliveryConfig):
    endpoint = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2048),
        metadata=_meta(_ENDPOINT, pattern=_ENDPOINT_PATTERN),
    )


@closed
class TimeScheduledConfig(ScheduledConfig):
    run_at = _optional_str(
        "ISO 8601 instant; without an offset it is read in `timezone` (a time skipped by DST "
        "moves forward, a repeated one means its first pass). Not more than 5 s in the past. "
        "Give `run_at` or `run_in`, not both",
        64,
        example="2030-01-01T09:00:00+01:00",
    )
    run_in = fields.Raw(
        allow_none=True,
        metadata=_meta("Instead of run_at: a duration from now (`90s`, `10m`, `2h`, `1d`, or "
                       "seconds), resolved to run_at at creation", example="10m"),
    )
    timezone = _optional_str(_ZONE, 255, example="Europe/Berlin")


@closed
class CronScheduledConfig(ScheduledConfig):
    cron = fields.String(
        required=True,
        validate=validate.Length(min=1, max=255),
        metadata=_meta("Cron expression: 5 fields, or 6 with a leading seconds field. In a DST "
                       "gap it fires once at the next valid instant; a repeated hour fires once",
                       example="*/5 * * * *"),
    )
    timezone = _optional_str(_ZONE, 255, example="America/New_York")


@closed
class IntervalScheduledConfig(ScheduledConfig):
    interval_seconds = fields.Float(
        required=True,
        validate=validate.Range(min=1, max=MAX_SECONDS),
        metadata=_meta("Seconds between firings", example=60),
    )
    start_at = _optional_str(
        "First firing (ISO 8601 with offset, not in the past); default: one interval after "
        "creation. The n-th firing is at first + n x interval",
        64,
    )
    first_run_at = fields.Raw(
        allow_none=True,
        metadata=_meta("Server-computed anchor of the schedule (ISO 8601); ignored on input, so "
                       "a trigger read with GET can be sent back as is"),
    )


CONFIG_SCHEMAS: dict[str, type[Schema]] = {
    "webhook": WebhookConfig,
    "time_scheduled": TimeScheduledConfig,
    "cron_scheduled": CronScheduledConfig,
    "interval_scheduled": IntervalScheduledConfig,
}


# --- trigger bodies ----------------------------------------------------------------------


def _name(*, required: bool) -> fields.String:
    return fields.String(
        required=required,
        allow_none=not required,
        validate=validate.Length(min=1, max=MAX_NAME_CHARS),
        metadata=_meta("1-255 characters, not only blanks"),
    )


def _status() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=validate.OneOf([*STATUSES, None]),
        metadata=_meta("`inactive` stops future firings; default active"),
    )


def _create_schema(kind: str, config: type[Schema]) -> type[Schema]:
    attrs: dict[str, Any] = {
        "name": _name(required=True),
        "type": fields.String(required=True, validate=validate.OneOf([kind])),
        "status": _status(),
        "config": fields.Nested(config, required=kind != "webhook", allow_none=kind == "webhook"),
    }
    title = "".join(part.title() for part in kind.split("_"))
    return closed(type(f"{title}TriggerCreate", (Schema,), attrs))


CREATE_SCHEMAS = {kind: _create_schema(kind, cls) for kind, cls in CONFIG_SCHEMAS.items()}


@closed
class TriggerUpdate(Schema):
    """Partial: omitted (or null) keys keep their value."""

    name = _name(required=False)
    type = fields.String(
        allow_none=True,
        validate=validate.OneOf([*CONFIG_SCHEMAS, None]),
        metadata=_meta("May be repeated, cannot be changed (400)"),
    )
    status = _status()
    # Replaced in the document by "any of the four config schemas"; the trigger's type
    # decides which one applies.
    config = fields.Raw(allow_none=True, metadata=_meta("A new config, validated as on create"))


class Trigger(Schema):
    id = fields.String(required=True, metadata=_meta("Trigger ID", format="uuid"))
    name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(list(CONFIG_SCHEMAS)))
    status = fields.String(required=True, validate=validate.OneOf(list(STATUSES)))
    config = fields.Dict(
        required=True,
        metadata=_meta("The normalized config: defaults filled in, run_in resolved to run_at, "
                       "interval triggers anchored by first_run_at; secrets shown as `***`"),
    )
    webhook_url = fields.String(
        required=True,
        allow_none=True,
        metadata=_meta("Where to POST events (webhook triggers); null for other types"),
    )
    next_scheduled_run = _timestamp(
        "Next pending occurrence (scheduled types); null when there is none, and while inactive",
        nullable=True,
    )
    created_at = _timestamp("Creation time, UTC")
    updated_at = _timestamp("Last change, UTC")


class TriggerList(Schema):
    triggers = fields.List(fields.Nested(Trigger), required=True)
    pagination = fields.Nested(Pagination, required=True)


# --- webhook ingestion and test runs --------------------------------------------------------


class Accepted(Schema):
    event_id = fields.String(required=True, metadata=_meta("ID of the event", format="uuid"))
    status = fields.String(metadata=_meta("`accepted`"))
    attempt = fields.Integer(metadata=_meta("Replay: the first attempt of the new series"))
    trigger_id = fields.String(allow_none=True, metadata=_meta("Test runs: the trigger, or null"))
    source = fields.String(metadata=_meta("Test runs: `manual-test`"))
    is_test_run = fields.Boolean(metadata=_meta("Test runs: true"))


@closed
class TestRunBody(Schema):
    payload = fields.Raw(
        allow_none=True,
        metadata=_meta("Overrides the payload (validated against the schema of a webhook "
                       "trigger); default: config.payload, or {}"),
    )


# --- events ------------------------------------------------------------------------------

RETENTION_FILTERS = (*RETENTION_STATUSES, "all")


class Event(Schema):
    id = fields.String(required=True, metadata=_meta("Event ID", format="uuid"))
    trigger_id = fields.String(required=True, allow_none=True,
                               metadata=_meta("null for an ephemeral test run"))
    trigger_name = fields.String(required=True)
    trigger_type = fields.String(required=True, validate=validate.OneOf(list(CONFIG_SCHEMAS)))
    source = fields.String(required=True, validate=validate.OneOf(EVENT_SOURCES))
    is_test_run = fields.Boolean(required=True)
    note = fields.String(required=True, allow_none=True, metadata=_meta('e.g. "test run"'))
    payload = fields.Raw(required=True, allow_none=True)
    scheduled_for = _timestamp("Due time of the occurrence (scheduled types)", nullable=True)
    fired_at = _timestamp("When the event was fired")
    execution_status = fields.String(required=True, validate=validate.OneOf(EXECUTION_STATUSES))
    attempts = fields.Integer(required=True)
    response_status = fields.Integer(required=True, allow_none=True)
    error_message = fields.String(required=True, allow_none=True)
    delivered_at = _timestamp("When a delivery succeeded", nullable=True)
    retention_status = fields.String(required=True, validate=validate.OneOf(RETENTION_STATUSES))
    created_at = _timestamp("When the event was recorded")


class DeliveryAttempt(Schema):
    attempt = fields.Integer(required=True)
    started_at = _timestamp("Start of the attempt")
    response_status = fields.Integer(required=True, allow_none=True)
    latency_ms = fields.Integer(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)


class EventDetail(Event):
    delivery_attempts = fields.List(fields.Nested(DeliveryAttempt), required=True)


class EventList(Schema):
    events = fields.List(fields.Nested(Event), required=True)
    pagination = fields.Nested(Pagination, required=True)


class Percentiles(Schema):
    count = fields.Integer(required=True, metadata=_meta("Samples the percentiles are taken of"))
    p50 = fields.Float(allow_none=True)
    p95 = fields.Float(allow_none=True)
    p99 = fields.Float(allow_none=True)


def _counts_of(name: str, values: tuple[str, ...]) -> type[Schema]:
    """An object with a count for every value (zeros included)."""
    return closed(Schema.from_dict({v: fields.Integer(required=True) for v in values}, name=name))


ByExecutionStatus = _counts_of("ByExecutionStatus", EXECUTION_STATUSES)
BySource = _counts_of("BySource", EVENT_SOURCES)
ByRetentionStatus = _counts_of("ByRetentionStatus", RETENTION_STATUSES)


def _counts(what: str, schema: type[Schema]) -> fields.Nested:
    return fields.Nested(schema, required=True,
                         metadata=_meta(f"Event counts by {what}, every value listed"))  # fmt: skip


class EventCounts(Schema):
    total = fields.Integer(required=True, metadata=_meta("Events fired in the window"))
    by_execution_status = _counts("execution_status", ByExecutionStatus)
    by_source = _counts("source", BySource)
    by_retention_status = _counts("retention_status", ByRetentionStatus)


class TriggerCounts(EventCounts):
    trigger_id = fields.String(
        required=True,
        allow_none=True,
        metadata=_meta("Null: the ephemeral test runs (no trigger), as one entry"),
    )
    trigger_name = fields.String(
        required=True,
        allow_none=True,
        metadata=_meta(
            "The trigger's name (for a deleted trigger, the name on its newest event); "
            "null for the ephemeral test runs and for an unknown trigger"
        ),
    )


class EventStats(EventCounts):
    """Counts over the window, overall and per trigger, and fire-delay / delivery-latency
    percentiles (ms)."""

    trigger_id = fields.String(
        required=True, allow_none=True, metadata=_meta("The trigger asked about, or null")
    )
    window = fields.String(required=True, metadata=_meta("The window as given, e.g. 48h"))
    window_seconds = fields.Float(required=True)
    since = _timestamp("Start of the window")
    until = _timestamp("End of the window (now)")
    fire_delay_ms = fields.Nested(
        Percentiles, required=True, metadata=_meta("Fired minus due time")
    )
    delivery_latency_ms = fields.Nested(
        Percentiles, required=True, metadata=_meta("Delivery request latency")
    )
    triggers = fields.List(
        fields.Nested(TriggerCounts),
        required=True,
        metadata=_meta(
            "Per trigger, busiest first, at most `limit`; with trigger_id, that trigger "
            "alone (zeros when it has no events in the window)"
        ),
    )
    trigger_count = fields.Integer(
        required=True,
        metadata=_meta("Triggers with events in the window (the ephemeral test runs: one)"),
    )
    truncated = fields.Boolean(
        required=True, metadata=_meta("True when `triggers` leaves some out (see `limit`)")
    )


# --- operations ----------------------------------------------------------------------------


class Health(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["healthy", "unhealthy"]))
    checks = fields.Dict(
        required=True,
        metadata=_meta("`database`, `kafka` (processes with Kafka roles) and `roles` "
                       "({role: state}); `ok` or `down: <reason>`"),
    )
    failing = fields.List(fields.String(), metadata=_meta("The failing checks (503 only)"))

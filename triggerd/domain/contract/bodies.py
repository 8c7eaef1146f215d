"""The other bodies of the API: the error envelope, accepted events and test runs, the
event log (events, delivery attempts, statistics), the caller's access and health."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, create_model

from triggerd.domain.contract.base import Model, RequestModel
from triggerd.domain.contract.fields import AnyJson
from triggerd.domain.contract.paging import Pagination
from triggerd.domain.enums import ExecutionStatus, RetentionStatus, Source, TriggerType

# --- errors ------------------------------------------------------------------------------


class ErrorBody(Model):
    code: str = Field(description="snake_case error code", examples=["validation_error"])
    message: str = Field(description="Human-readable message")
    details: Any = Field(
        description="More about the error, e.g. `{\"field\": \"config.cron\"}` for a validation "
                    "error or `{\"violations\": [...]}` for a webhook payload")  # fmt: skip
    request_id: str = Field(description="The X-Request-ID of this request")


class ErrorEnvelope(Model):
    error: ErrorBody


# --- webhook ingestion, test runs, replay ------------------------------------------------


class Accepted(Model):
    event_id: str = Field(description="ID of the event", json_schema_extra={"format": "uuid"})
    status: Literal["accepted"] | None = Field(None, description="`accepted`")
    attempt: int | None = Field(None, description="Replay: the first attempt of the new series")
    trigger_id: str | None = Field(None, description="Test runs: the trigger, or null")
    source: Source | None = Field(None, description="Test runs: `manual-test`")
    is_test_run: bool | None = Field(None, description="Test runs: true")


class TestRunBody(RequestModel):
    __test__ = False  # not a pytest class
    NULL_IS_VALUE = frozenset({"payload"})

    payload: Annotated[Any, AnyJson()] = Field(
        None, description="Overrides the payload (validated against the schema of a webhook "
                          "trigger); default: config.payload, or {}")  # fmt: skip


# --- events ------------------------------------------------------------------------------


class Event(Model):
    id: str = Field(description="Event ID", json_schema_extra={"format": "uuid"})
    trigger_id: str | None = Field(description="null for an ephemeral test run")
    trigger_name: str
    trigger_type: TriggerType
    source: Source
    is_test_run: bool
    note: str | None = Field(description='e.g. "test run"')
    payload: Any
    scheduled_for: datetime | None = Field(description="Due time of the occurrence (scheduled "
                                                        "types)")  # fmt: skip
    fired_at: datetime = Field(description="When the event was fired")
    execution_status: ExecutionStatus
    attempts: int
    response_status: int | None
    error_message: str | None
    delivered_at: datetime | None = Field(description="When a delivery succeeded")
    retention_status: RetentionStatus
    created_at: datetime = Field(description="When the event was recorded")


class DeliveryAttempt(Model):
    attempt: int
    started_at: datetime = Field(description="Start of the attempt")
    response_status: int | None
    latency_ms: int | None
    error: str | None


class EventDetail(Event):
    delivery_attempts: list[DeliveryAttempt]


class EventList(Model):
    events: list[Event]
    pagination: Pagination


class Percentiles(Model):
    count: int = Field(description="Samples the percentiles are taken of")
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


def _counts_of(name: str, values: type[Any]) -> type[Model]:
    """An object with a count for every value of an enum (zeros included)."""
    fields: dict[str, Any] = {
        member.value.replace("-", "_"): (int, Field(alias=member.value)) for member in values
    }
    return create_model(name, __base__=Model, **fields)


if TYPE_CHECKING:  # a class made at run time is no type to a checker
    ByExecutionStatus = Model
    BySource = Model
    ByRetentionStatus = Model
else:
    ByExecutionStatus = _counts_of("ByExecutionStatus", ExecutionStatus)
    BySource = _counts_of("BySource", Source)
    ByRetentionStatus = _counts_of("ByRetentionStatus", RetentionStatus)


class EventCounts(Model):
    total: int = Field(description="Events fired in the window")
    by_execution_status: ByExecutionStatus = Field(
        description="Event counts by execution_status, every value listed")
    by_source: BySource = Field(description="Event counts by source, every value listed")
    by_retention_status: ByRetentionStatus = Field(
        description="Event counts by retention_status, every value listed")


class TriggerCounts(EventCounts):
    trigger_id: str | None = Field(
        description="Null: the ephemeral test runs (no trigger), as one entry")
    trigger_name: str | None = Field(
        description="The trigger's name (for a deleted trigger, the name on its newest event); "
                    "null for the ephemeral test runs and for an unknown trigger")  # fmt: skip


class EventStats(EventCounts):
    """Counts over the window, overall and per trigger, and fire-delay / delivery-latency
    percentiles (ms)."""

    trigger_id: str | None = Field(description="The trigger asked about, or null")
    window: str = Field(description="The window as given, e.g. 48h")
    window_seconds: float
    since: datetime = Field(description="Start of the window")
    until: datetime = Field(description="End of the window (now)")
    fire_delay_ms: Percentiles = Field(description="Fired minus due time")
    delivery_latency_ms: Percentiles = Field(description="Delivery request latency")
    triggers: list[TriggerCounts] = Field(
        description="Per trigger, busiest first, at most `limit`; with trigger_id, that trigger "
                    "alone (zeros when it has no events in the window)")  # fmt: skip
    trigger_count: int = Field(
        description="Triggers with events in the window (the ephemeral test runs: one)")
    truncated: bool = Field(description="True when `triggers` leaves some out (see `limit`)")


# --- operations ----------------------------------------------------------------------------


class Access(Model):
    actor: str = Field(description="The key's name, as the audit log records the changes "
                                   "it makes; `anonymous` while the API is open")  # fmt: skip
    scope: Literal["read", "write"] = Field(
        description="read: GET routes only; write: every route (also while the API is open)")
    keys_required: bool = Field(description="Whether this deployment requires API keys")


class Health(Model):
    status: Literal["healthy", "unhealthy"]
    checks: dict[str, Any] = Field(
        description="`database`, `kafka` (processes with Kafka roles) and `roles` ({role: "
                    "state}); `ok` or `down: <reason>`")  # fmt: skip
    failing: list[str] | None = Field(None, description="The failing checks (503 only)")

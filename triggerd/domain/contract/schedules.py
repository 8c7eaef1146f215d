"""Schedule bodies: upcoming runs and the preview of a definition, the occurrence history
and its query, backfill."""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import Discriminator, Field, TypeAdapter, model_validator

from triggerd.domain.contract.base import Model, RequestModel
from triggerd.domain.contract.errors import adapted
from triggerd.domain.contract.fields import Choice, JsonSchema, Number, Text, _Check, invalid
from triggerd.domain.contract.paging import Pagination, QueryInt, QueryModel
from triggerd.domain.contract.triggers import (
    CronScheduledTriggerCreate,
    IntervalScheduledTriggerCreate,
    TimeScheduledTriggerCreate,
    TriggerDefinition,
    WebhookTriggerCreate,
)
from triggerd.domain.enums import Outcome, TriggerType, values
from triggerd.domain.errors import ValidationError
from triggerd.domain.timeutil import parse_query_time

MAX_COUNT = 100
DEFAULT_COUNT = 10
Count = Annotated[int, Number(1, MAX_COUNT, integer=True)]
_COUNT = "How many occurrences, 1-100"


# --- upcoming and preview ------------------------------------------------------------------


class UpcomingOccurrence(Model):
    scheduled_for: datetime = Field(description="The nominal time (UTC); events and jobs "
                                                "carry it")  # fmt: skip
    fire_at: datetime = Field(description="When it is published: scheduled_for plus the "
                                          "trigger's jitter")  # fmt: skip
    local: str = Field(description="scheduled_for in the trigger's time zone, with that day's "
                                   "offset", examples=["2026-03-08T03:00:00-04:00"])  # fmt: skip


class Upcoming(Model):
    trigger_id: str | None = Field(description="The trigger; null for a preview")
    timezone: str = Field(description="The zone of `local` (UTC for interval triggers)")
    occurrences: list[UpcomingOccurrence] = Field(
        description="The next occurrences as the scheduler will fire them; empty for webhook "
                    "triggers, inactive triggers and a one-time trigger that has fired")


class UpcomingQuery(QueryModel):
    PAGING: ClassVar[frozenset[str]] = frozenset({"count"})

    count: Annotated[int, QueryInt(1, MAX_COUNT)] = Field(DEFAULT_COUNT, description=_COUNT)


class _Preview(RequestModel):
    count: Count = Field(DEFAULT_COUNT, description=_COUNT)


class WebhookTriggerPreview(WebhookTriggerCreate, _Preview):
    pass


class TimeScheduledTriggerPreview(TimeScheduledTriggerCreate, _Preview):
    pass


class CronScheduledTriggerPreview(CronScheduledTriggerCreate, _Preview):
    pass


class IntervalScheduledTriggerPreview(IntervalScheduledTriggerCreate, _Preview):
    pass


TriggerPreview = Annotated[
    WebhookTriggerPreview | TimeScheduledTriggerPreview | CronScheduledTriggerPreview
    | IntervalScheduledTriggerPreview,
    Discriminator("type"),
]
PREVIEW = TypeAdapter[Any](TriggerPreview)


def validate_preview(body: object, *, now: datetime) -> tuple[TriggerDefinition, int]:
    """A preview body: the create body, validated as on create, and its `count`."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    found = adapted(PREVIEW, body, context={"now": now}, tags=values(TriggerType))
    definition = TriggerDefinition(name=found.name, type=TriggerType(found.type),
                                   status=found.status, config=found.config,
                                   labels=found.labels)  # fmt: skip
    return definition, int(found.count)


# --- the occurrence history ------------------------------------------------------------------


class OccurrenceEntry(Model):
    scheduled_for: datetime = Field(description="The nominal time (UTC)")
    fire_at: datetime = Field(description="scheduled_for plus the trigger's jitter")
    outcome: Outcome = Field(description="`pending` (not fired yet), `fired`, `missed` (passed "
                                         "over by the misfire policy after downtime) or "
                                         "`cancelled` (schedule change, deactivation, "
                                         "deletion)")  # fmt: skip
    event_id: str | None = Field(description="The event it fired (`fired` only)")
    published_at: datetime | None = Field(description="When its job reached Kafka (`fired`)")
    delay_ms: int | None = Field(description="published_at minus fire_at, in milliseconds")
    note: str | None = Field(description="Why: the event's note of a fired one, the policy of "
                                         "a missed one, the change of a cancelled one")  # fmt: skip


class OccurrenceList(Model):
    occurrences: list[OccurrenceEntry]
    pagination: Pagination


@dataclass(frozen=True)
class QueryTime(_Check):
    """A timestamp in a query string: ISO 8601, UTC without an offset, a date alone its
    midnight, a `+` that arrived as a space read as `+`."""

    def check(self, value: Any) -> datetime:
        if isinstance(value, datetime):  # a default
            return value
        if isinstance(value, str):
            try:
                return parse_query_time(value)
            except (ValueError, OverflowError):
                pass
        invalid("must be an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z")

    def schema(self) -> JsonSchema:
        return {"type": "string", "example": "2026-01-31T12:00:00Z"}


class OccurrenceQuery(QueryModel):
    """`GET /api/v1/triggers/{id}/occurrences`: filters (an empty value is no filter) and
    the page."""

    MAX_LIMIT: ClassVar[int] = 100
    MAX_PAGE: ClassVar[int] = 1_000_000

    outcome: Annotated[Outcome, Choice(values(Outcome), convert=Outcome)] | None = Field(
        None, description="Only occurrences with this outcome")
    since: Annotated[datetime, QueryTime()] | None = Field(
        None, description="scheduled_for >= since (ISO 8601; no offset: UTC)")
    until: Annotated[datetime, QueryTime()] | None = Field(
        None, description="scheduled_for < until (ISO 8601; no offset: UTC)")
    page: Annotated[int, QueryInt(1, MAX_PAGE)] = Field(
        1, description="1-based page number; past the last page the list is empty")
    limit: Annotated[int, QueryInt(1, MAX_LIMIT)] = Field(20, description="Page size")

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        if self.since is not None and self.until is not None and self.since > self.until:
            invalid("must not be after until", "since")
        return self


# --- backfill ------------------------------------------------------------------------------

_WHEN = ("ISO 8601; without an offset it is read in the trigger's time zone")


class BackfillBody(RequestModel):
    since: Annotated[str, Text(64)] = Field(
        description=f"Fire occurrences with scheduled_for >= since ({_WHEN})",
        examples=["2026-03-01T00:00:00Z"])
    until: Annotated[str, Text(64)] = Field(
        description=f"... and scheduled_for < until ({_WHEN}); not in the future, at most 1,000 "
                    "occurrences in the range", examples=["2026-03-02T00:00:00Z"])  # fmt: skip


class BackfillResult(Model):
    occurrences: int = Field(description="Occurrences in the range")
    fired: list[str] = Field(description="IDs of the events fired now, oldest occurrence first")
    already_fired: int = Field(description="Occurrences of the range whose event already "
                                           "exists: not fired again")  # fmt: skip


__all__ = ["DEFAULT_COUNT", "MAX_COUNT", "PREVIEW", "BackfillBody", "BackfillResult",
           "OccurrenceEntry", "OccurrenceList", "OccurrenceQuery", "TriggerPreview", "Upcoming",
           "UpcomingOccurrence", "UpcomingQuery", "validate_preview"]  # fmt: skip

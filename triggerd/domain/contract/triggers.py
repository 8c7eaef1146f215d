"""Trigger bodies: create (one shape per type, chosen by `type`), update, the trigger
as the API returns it, the list and its query; and `TriggerDefinition`, the validated
trigger the store writes."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, PlainValidator, TypeAdapter

from triggerd.domain.contract.base import Model, RequestModel
from triggerd.domain.contract.configs import (
    CronScheduledConfig,
    IntervalScheduledConfig,
    TimeScheduledConfig,
    TriggerConfig,
    WebhookConfig,
    stored_config,
)
from triggerd.domain.contract.fields import AnyJson, Choice, Text, invalid
from triggerd.domain.contract.labels import MAX_LABELS, Labels, LabelSelector
from triggerd.domain.contract.paging import Pagination, QueryInt, QueryModel
from triggerd.domain.enums import TriggerStatus, TriggerType, values

MAX_NAME_CHARS = 255
TRIGGER_TYPES = values(TriggerType)
STATUSES = values(TriggerStatus)

Name = Annotated[str, Text(MAX_NAME_CHARS), Field(description="1-255 characters, not only blanks")]
Status = Annotated[TriggerStatus, Choice(values(TriggerStatus), convert=TriggerStatus),
                   Field(description="`inactive` stops future firings")]  # fmt: skip
Type = Annotated[TriggerType, Choice(values(TriggerType), convert=TriggerType)]
StatusChoice = Annotated[TriggerStatus, Choice(values(TriggerStatus), convert=TriggerStatus)]


class _Create(RequestModel):
    name: Name
    status: Status = TriggerStatus.ACTIVE
    labels: Labels = Field(default_factory=dict)


class WebhookTriggerCreate(_Create):
    type: Literal["webhook"]
    config: WebhookConfig = WebhookConfig()  # frozen: one shared default is safe


class TimeScheduledTriggerCreate(_Create):
    type: Literal["time_scheduled"]
    config: TimeScheduledConfig


class CronScheduledTriggerCreate(_Create):
    type: Literal["cron_scheduled"]
    config: CronScheduledConfig


class IntervalScheduledTriggerCreate(_Create):
    type: Literal["interval_scheduled"]
    config: IntervalScheduledConfig


TriggerCreate = Annotated[
    WebhookTriggerCreate | TimeScheduledTriggerCreate | CronScheduledTriggerCreate
    | IntervalScheduledTriggerCreate,
    Discriminator("type"),
]
CREATE = TypeAdapter[Any](TriggerCreate)
AnyConfig = WebhookConfig | TimeScheduledConfig | CronScheduledConfig | IntervalScheduledConfig


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        invalid("must be a JSON object")
    return value


# Validated against the trigger's type once that is known; documented as any of the four.
NewConfig = PlainValidator(_object, json_schema_input_type=AnyConfig)


class TriggerUpdate(RequestModel):
    """Partial: an omitted (or null) key keeps its value. The other fields a GET returns
    are accepted and ignored, so a trigger read can be edited and sent back whole."""

    name: Name | None = None
    type: Annotated[Type | None, Field(description="May be repeated, cannot be changed")] = None
    status: Status | None = None
    labels: Annotated[Labels | None, Field(description="Replaces the whole set")] = None
    config: Annotated[dict[str, Any] | None, NewConfig] = Field(
        None, description="A new config, replacing the old one and validated as on create; its "
                          "shape is the one of the trigger's type")  # fmt: skip
    id: Annotated[Any, AnyJson(), Field(description="Ignored; when given, the trigger's id")] = None
    webhook_url: Annotated[Any, AnyJson(), Field(description="Ignored")] = None
    status_reason: Annotated[Any, AnyJson(), Field(description="Ignored")] = None
    next_scheduled_run: Annotated[Any, AnyJson(), Field(description="Ignored")] = None
    created_at: Annotated[Any, AnyJson(), Field(description="Ignored")] = None
    updated_at: Annotated[Any, AnyJson(), Field(description="Ignored")] = None


@dataclass(frozen=True)
class TriggerDefinition:
    """A validated trigger: what the store writes and the scheduler and worker read. A
    config given as a mapping is read as the stored form of the type's config."""

    name: str
    type: TriggerType
    status: TriggerStatus
    config: TriggerConfig
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = TriggerType(self.type)
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "status", TriggerStatus(self.status))
        if not isinstance(self.config, TriggerConfig):
            config: Mapping[str, Any] = self.config
            object.__setattr__(self, "config", stored_config(kind, config))


# --- responses -------------------------------------------------------------------------


class Trigger(Model):
    id: str = Field(description="Trigger ID", json_schema_extra={"format": "uuid"})
    name: str
    type: TriggerType
    status: TriggerStatus
    status_reason: str | None = Field(
        description="Why triggerd set the trigger inactive, e.g. \"endpoint failing since "
                    "2030-01-01T00:00:00.000Z\" (auto-disable); null otherwise, and cleared "
                    "when the trigger is set active again")  # fmt: skip
    config: AnyConfig = Field(
        description="The normalized config: defaults filled in, run_in resolved to run_at, "
                    "interval triggers anchored by first_run_at; secrets shown as "
                    "`***`")  # fmt: skip
    labels: dict[str, str] = Field(description="The trigger's labels; {} when none")
    webhook_url: str | None = Field(
        description="Where to POST events (webhook triggers); null for other types")
    next_scheduled_run: datetime | None = Field(
        description="Next pending occurrence (scheduled types); null when there is none, and "
                    "while inactive")  # fmt: skip
    created_at: datetime = Field(description="Creation time, UTC")
    updated_at: datetime = Field(description="Last change, UTC")


class TriggerList(Model):
    triggers: list[Trigger]
    pagination: Pagination


class TriggerListQuery(QueryModel):
    """`GET /api/v1/triggers`: filters (an empty value is no filter) and the page."""

    MAX_LIMIT: ClassVar[int] = 100
    MAX_PAGE: ClassVar[int] = 10_000_000

    type: Type | None = Field(None, description="Only triggers of this type")
    status: StatusChoice | None = Field(None, description="Only triggers with this status")
    # A trigger carries at most MAX_LABELS labels, so more selectors than that can match
    # nothing; the cap also keeps the count query's plan small.
    label: list[Annotated[tuple[str, str | None], LabelSelector()]] | None = Field(
        None, max_length=MAX_LABELS,
        description=f"Only triggers carrying this label: key:value, or key: for any value; "
                    f"repeated (at most {MAX_LABELS} times), all must match")  # fmt: skip
    page: Annotated[int, QueryInt(1, MAX_PAGE)] = Field(
        1, description="1-based page number; past the last page the list is empty")
    limit: Annotated[int, QueryInt(1, MAX_LIMIT)] = Field(20, description="Page size")


__all__ = ["CREATE", "MAX_NAME_CHARS", "STATUSES", "TRIGGER_TYPES", "CronScheduledTriggerCreate",
           "IntervalScheduledTriggerCreate", "TimeScheduledTriggerCreate", "Trigger",
           "TriggerCreate", "TriggerDefinition", "TriggerList", "TriggerListQuery",
           "TriggerUpdate", "WebhookTriggerCreate"]

"""The audit log's bodies: an entry, a page of entries, and the list's query string."""

from datetime import datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, model_validator

from triggerd.domain.access import NAME_PATTERN
from triggerd.domain.audit import Action
from triggerd.domain.contract.base import Model
from triggerd.domain.contract.fields import Choice, JsonSchema, _Check, invalid
from triggerd.domain.contract.paging import Pagination, QueryInt, QueryModel
from triggerd.domain.enums import values
from triggerd.domain.models import parse_uuid
from triggerd.domain.timeutil import parse_query_time

ActionChoice = Annotated[Action, Choice(values(Action), convert=Action)]


class AuditEntry(Model):
    id: int = Field(description="Entry ID; increases with every entry")
    at: datetime = Field(description="When the change was made")
    actor: str = Field(description="The API key's name; `anonymous` while no keys are "
                                   "configured; `system` for the daemon's own changes")  # fmt: skip
    action: Action
    trigger_id: str | None = Field(
        description="The trigger changed or fired; null for a test run of an unsaved "
                    "definition", json_schema_extra={"format": "uuid"})  # fmt: skip
    event_id: str | None = Field(
        description="The event a test run fired or a replay delivers again",
        json_schema_extra={"format": "uuid"})  # fmt: skip
    request_id: str | None = Field(description="X-Request-ID of the request that made it")
    changes: dict[str, list[Any]] | None = Field(
        description="{field: [old, new]} for each changed top-level field and config key "
                    "(`config.<key>`); secrets as `***`; null for test runs, replays and backfills")


class AuditList(Model):
    entries: list[AuditEntry]
    pagination: Pagination


class QueryUuid(_Check):
    def check(self, value: Any) -> str:
        found = parse_uuid(value) if isinstance(value, str) else None
        if found is None:
            invalid("must be a UUID")
        return found

    def schema(self) -> JsonSchema:
        return {"type": "string", "format": "uuid"}


class QueryTime(_Check):
    def check(self, value: Any) -> datetime:
        try:
            return parse_query_time(value)
        except (ValueError, OverflowError, TypeError):
            invalid("must be an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z")

    def schema(self) -> JsonSchema:
        return {"type": "string"}


class Actor(_Check):
    def check(self, value: Any) -> str:
        if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
            invalid("must be a key's name (1-64 letters, digits or ._@:/+-), anonymous or "
                    "system")  # fmt: skip
        return value

    def schema(self) -> JsonSchema:
        return {"type": "string", "minLength": 1, "maxLength": 64,
                "pattern": f"^{NAME_PATTERN.pattern}$"}  # fmt: skip


class AuditListQuery(QueryModel):
    """`GET /api/v1/audit`: filters (an empty value is no filter) and the page."""

    MAX_LIMIT: ClassVar[int] = 100
    MAX_PAGE: ClassVar[int] = 1_000_000

    trigger_id: Annotated[str, QueryUuid()] | None = Field(
        None, description="Only this trigger's entries (deleted triggers too)")
    actor: Annotated[str, Actor()] | None = Field(
        None, description="Only this actor: a key's name, anonymous or system")
    action: ActionChoice | None = Field(None, description="Only this action")
    since: Annotated[datetime, QueryTime()] | None = Field(
        None, description="at >= since (ISO 8601; no offset: UTC)")
    until: Annotated[datetime, QueryTime()] | None = Field(
        None, description="at < until (ISO 8601; no offset: UTC)")
    page: Annotated[int, QueryInt(1, MAX_PAGE)] = Field(
        1, description="1-based page number; past the last page the list is empty")
    limit: Annotated[int, QueryInt(1, MAX_LIMIT)] = Field(20, description="Page size")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.since is not None and self.until is not None and self.since > self.until:
            invalid("must not be after until", field="since")
        return self


__all__ = ["AuditEntry", "AuditList", "AuditListQuery"]

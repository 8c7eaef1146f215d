"""`GET /api/v1/endpoints`: the health of every endpoint that saw a delivery attempt
(an endpoint is a trigger's endpoint URL without its query string; domain/circuit.py)."""

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import Field

from triggerd.domain.contract.base import Model
from triggerd.domain.contract.fields import Choice
from triggerd.domain.contract.paging import Pagination, QueryInt, QueryModel
from triggerd.domain.enums import CircuitState, values

StateChoice = Annotated[CircuitState, Choice(values(CircuitState), convert=CircuitState)]


class Endpoint(Model):
    url: str = Field(description="The endpoint: a trigger's endpoint URL without its query "
                                 "string")  # fmt: skip
    state: CircuitState = Field(
        description="closed: deliveries go out; open: none goes out until next_probe_at "
                    "(they wait, none is dropped); half_open: one delivery is probing")
    consecutive_failures: int = Field(
        description="Retryable failures (408, 429, 5xx, timeouts, connection errors) since "
                    "the last success")  # fmt: skip
    last_success_at: datetime | None = Field(description="Last successful delivery, UTC")
    last_failure_at: datetime | None = Field(
        description="Last failed attempt of any kind (a 404 too), UTC")
    opened_at: datetime | None = Field(
        description="When the circuit left closed (null while closed)")
    next_probe_at: datetime | None = Field(
        description="Open: when the cool-down ends and one delivery probes; null otherwise")
    triggers: int = Field(description="Triggers delivering to this endpoint")


class EndpointList(Model):
    endpoints: list[Endpoint] = Field(description="Open circuits first, then half-open, "
                                                  "then closed")  # fmt: skip
    pagination: Pagination


class EndpointListQuery(QueryModel):
    MAX_LIMIT: ClassVar[int] = 100
    MAX_PAGE: ClassVar[int] = 10_000_000

    state: StateChoice | None = Field(None, description="Only endpoints in this state")
    page: Annotated[int, QueryInt(1, MAX_PAGE)] = Field(
        1, description="1-based page number; past the last page the list is empty")
    limit: Annotated[int, QueryInt(1, MAX_LIMIT)] = Field(20, description="Page size")


__all__ = ["Endpoint", "EndpointList", "EndpointListQuery"]

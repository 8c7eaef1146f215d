"""`GET /api/v1/endpoints`: the health of every endpoint that saw a delivery attempt,
open circuits first (store/endpoints.py; the circuit itself: domain/circuit.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from triggerd.api.http import json_response, pagination, query_choice, query_int
from triggerd.domain.circuit import CircuitState
from triggerd.domain.enums import values
from triggerd.domain.timeutil import to_iso
from triggerd.services import Services
from triggerd.store import endpoints
from triggerd.store.endpoints import EndpointRow

PATH = "/api/v1/endpoints"
STATES = values(CircuitState)
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_PAGE = 10_000_000


def endpoint_json(row: EndpointRow) -> dict[str, Any]:
    health = row.health
    return {
        "url": row.url,
        "state": health.state.value,
        "consecutive_failures": health.consecutive_failures,
        "last_success_at": to_iso(health.last_success_at),
        "last_failure_at": to_iso(health.last_failure_at),
        "opened_at": to_iso(health.opened_at),
        "next_probe_at": to_iso(health.next_probe_at)
        if health.state is CircuitState.OPEN else None,
        "triggers": row.triggers,
    }


class EndpointRoutes:
    def __init__(self, services: Services) -> None:
        self.db = services.db

    async def list(self, request: web.Request) -> web.Response:
        state = query_choice(request, "state", STATES)
        page = query_int(request, "page", 1, 1, MAX_PAGE)
        limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        result = await endpoints.list_page(self.db, state=state, limit=limit,
                                           offset=(page - 1) * limit)  # fmt: skip
        return json_response({
            "endpoints": [endpoint_json(row) for row in result.rows],
            "pagination": pagination(page, limit, result.total),
        })  # fmt: skip


def add_routes(app: web.Application, services: Services) -> None:
    routes = EndpointRoutes(services)
    app.router.add_get(PATH, routes.list, allow_head=False)

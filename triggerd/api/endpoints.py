"""`GET /api/v1/endpoints`: the health of every endpoint that saw a delivery attempt,
open circuits first (store/endpoints.py; the circuit itself: domain/circuit.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from triggerd.api.http import json_response
from triggerd.domain.contract import EndpointListQuery, Pagination
from triggerd.domain.enums import CircuitState
from triggerd.domain.redact import redact_url
from triggerd.domain.timeutil import to_iso
from triggerd.services import Services
from triggerd.store import endpoints
from triggerd.store.endpoints import EndpointRow

PATH = "/api/v1/endpoints"


def endpoint_json(row: EndpointRow) -> dict[str, Any]:
    health = row.health
    return {
        "url": redact_url(row.url),
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
        query = EndpointListQuery.parse(request.query)
        page, limit = query.page, query.limit
        result = await endpoints.list_page(self.db, state=query.state, limit=limit,
                                           offset=(page - 1) * limit)  # fmt: skip
        return json_response({
            "endpoints": [endpoint_json(row) for row in result.rows],
            "pagination": Pagination.of(page, limit, result.total),
        })  # fmt: skip


def add_routes(app: web.Application, services: Services) -> None:
    routes = EndpointRoutes(services)
    app.router.add_get(PATH, routes.list, allow_head=False)

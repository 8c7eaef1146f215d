"""`GET /api/v1/audit`: who changed what, newest first. The query string and the answer
are declared in domain.contract.audit (filters `trigger_id`, `actor`, `action`, `since`,
`until`; `page`, `limit`); a bad value is a 400 naming the parameter."""

from __future__ import annotations

from aiohttp import web

from triggerd.api.http import json_response
from triggerd.domain.contract import Pagination
from triggerd.domain.contract.audit import AuditListQuery
from triggerd.services import Services
from triggerd.store import audit as store

PATH = "/api/v1/audit"


class AuditApi:
    def __init__(self, services: Services) -> None:
        self.db = services.db

    async def list(self, request: web.Request) -> web.Response:
        query = AuditListQuery.parse(request.query)
        flt = store.AuditFilter(trigger_id=query.trigger_id, actor=query.actor,
                                action=query.action, since=query.since,
                                until=query.until)  # fmt: skip
        page, limit = query.page, query.limit
        rows, total = await store.list_entries(self.db, flt, page=page, limit=limit)
        return json_response({"entries": [store.entry_json(row) for row in rows],
                              "pagination": Pagination.of(page, limit, total)})  # fmt: skip


def add_routes(app: web.Application, services: Services) -> None:
    api = AuditApi(services)
    app.router.add_get(PATH, api.list, allow_head=False)

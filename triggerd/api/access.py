"""`GET /api/v1/access`: who the caller is and what its key may do, so a client (the
console) can offer only what it may call, without trying a change to find out."""

from __future__ import annotations

from aiohttp import web

from triggerd.api.http import json_response
from triggerd.api.keys import ACTOR, SCOPE
from triggerd.domain.access import ANONYMOUS, Scope
from triggerd.services import Services

PATH = "/api/v1/access"


def add_routes(app: web.Application, services: Services) -> None:
    keys_required = bool(services.settings.all_api_keys())

    async def access(request: web.Request) -> web.Response:
        return json_response({"actor": request.get(ACTOR, ANONYMOUS),
                              "scope": str(request.get(SCOPE, Scope.WRITE)),
                              "keys_required": keys_required})  # fmt: skip

    app.router.add_get(PATH, access, allow_head=False)

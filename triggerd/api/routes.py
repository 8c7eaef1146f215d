"""Registers the `/api/v1` routes and the OpenAPI docs: one module per resource."""

from __future__ import annotations

from aiohttp import web

from triggerd.api import (
    access,
    audit,
    backfill,
    console,
    docs,
    endpoints,
    events,
    schedules,
    testruns,
    triggers,
    webhook,
)
from triggerd.services import Services


def setup(app: web.Application, services: Services) -> None:
    triggers.add_routes(app, services)
    testruns.add_routes(app, services)
    schedules.add_routes(app, services)
    backfill.add_routes(app, services)
    webhook.add_routes(app, services)
    events.add_routes(app, services)
    audit.add_routes(app, services)
    endpoints.add_routes(app, services)
    access.add_routes(app, services)
    docs.setup(app)  # it documents every route registered above
    console.add_routes(app)  # the console's page and files: not API operations

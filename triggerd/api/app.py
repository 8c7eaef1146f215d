"""Builds the aiohttp application of one process: operations routes always, the
`/api/v1` routes and the docs only when the process runs the `api` role."""

from __future__ import annotations

from aiohttp import web

from triggerd.api import middleware, ops
from triggerd.api.ops import SERVICES
from triggerd.api.webhook import INGEST
from triggerd.ingest.pipeline import IngestPipeline
from triggerd.services import Services


def build_app(
    services: Services, *, with_api: bool, ingest: IngestPipeline | None = None
) -> web.Application:
    """`ingest` is the process's ingestion pipeline, which the routes that fire events
    (webhook, test runs, replay) submit to; the caller runs it (the daemon: as the
    supervisor's `ingest` component)."""
    settings = services.settings
    app = web.Application(
        client_max_size=settings.max_body,
        middlewares=[middleware.api_middleware(services.metrics, settings.all_api_keys())],
    )
    app[SERVICES] = services
    if ingest is not None:
        app[INGEST] = ingest
    ops.add_routes(app)
    if with_api:
        from triggerd.api import routes  # the API role's modules load only where used

        routes.setup(app, services)
    return app

"""`/health` and `/metrics`: served by every process, whatever its roles."""

from __future__ import annotations

import asyncio

from aiohttp import web

from triggerd.api.http import json_response
from triggerd.services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services", Services)

_DB_PING_TIMEOUT = 2.0


async def check_database(services: Services) -> str:
    if not services.db.connected:  # still waiting for it at start-up
        return "down: not connected yet"
    try:
        async with asyncio.timeout(_DB_PING_TIMEOUT):
            await services.db.ping()
        return "ok"
    except Exception as exc:  # any failure is "down"; the message says why
        return f"down: {type(exc).__name__}"


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, object] = {"database": await check_database(services)}
    if services.uses_kafka:
        bus = services.bus
        checks["kafka"] = "ok" if bus.healthy else f"down: {bus.last_error or 'unreachable'}"
    roles = services.role_states()
    checks["roles"] = roles
    components = services.component_states()
    if components:
        checks["components"] = components
    failing = [name for name, value in checks.items() if isinstance(value, str) and value != "ok"]
    failing += [f"roles.{name}" for name, state in roles.items() if state != "ok"]
    failing += [f"components.{name}" for name, state in components.items() if state != "ok"]
    status = "healthy" if not failing else "unhealthy"
    body: dict[str, object] = {"status": status, "checks": checks}
    if failing:
        body["failing"] = failing
    return json_response(body, status=200 if not failing else 503)


async def live(request: web.Request) -> web.Response:
    """Liveness: 200 while the event loop answers. Unlike /health (readiness), it does
    not turn 503 when the database or Kafka is down, so an orchestrator's liveness
    probe does not restart a process that is only waiting for a dependency."""
    return json_response({"status": "alive"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    services.metrics.set_roles({**services.role_states(), **services.component_states()})
    return web.Response(
        body=services.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=True)
    app.router.add_get("/health/live", live, allow_head=True)
    app.router.add_get("/metrics", metrics)

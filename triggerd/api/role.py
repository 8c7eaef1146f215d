"""The `api` role: its routes are mounted on the process's HTTP server by the daemon,
and its background work runs as the supervisor's `ingest` component (and the shared
`outbox_relay`). This task only marks the role up for /health and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from triggerd.services import Services


class ApiRole:
    name = "api"

    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        await asyncio.Event().wait()

"""The `api` role: its routes are mounted on the process's HTTP server by the daemon
(webhook ingestion's writer and publisher run with the app's lifecycle). This task is
what the supervisor watches for it: it runs the outbox relay, so a webhook accepted
while Kafka was down is published once it returns even where no worker role runs."""

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
        if "worker" in self.services.settings.roles:
            # The worker role runs a relay in this process already; one is enough.
            await asyncio.Event().wait()
            return
        from triggerd.relay import OutboxRelay

        await OutboxRelay(self.services).run()

"""The `worker` role: consumes jobs and delivers them over HTTP.

JobConsumer → JobProcessor. A retry is written as "attempt n+1 is owed at t" and the
process's outbox relay (a supervised component of its own, handed in here) publishes
it when due; the processor tells the relay when to look. Beside the consumer runs the
delivery backstop (`worker:backstop`, worker/backstop.py), which owes a job to Kafka
again when its delivery showed no progress long after it was published: nothing lost,
whatever the broker does. The role owns the one aiohttp ClientSession all deliveries
share; cancelling the role drains in-flight deliveries before the session closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from triggerd.domain.destinations import DestinationPolicy, format_networks
from triggerd.relay import OutboxRelay
from triggerd.services import Services
from triggerd.worker.backstop import DeliveryBackstop
from triggerd.worker.consumer import JobConsumer
from triggerd.worker.delivery import USER_AGENT
from triggerd.worker.destinations import GuardedResolver, guarded_socket_factory
from triggerd.worker.processor import JobProcessor

log = logging.getLogger(__name__)


def new_http_session(concurrency: int, policy: DestinationPolicy) -> aiohttp.ClientSession:
    """One pool for every delivery: at most `concurrency` connections, and at most a
    quarter of them (min 4) to one host, so a slow target cannot take them all. It
    connects only where `policy` allows (worker/destinations.py)."""
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=max(4, concurrency // 4),
        ttl_dns_cache=60,
        keepalive_timeout=30,
        resolver=GuardedResolver(policy),
        socket_factory=guarded_socket_factory(policy),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # targets must not influence each other
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
        trust_env=False,
    )


class WorkerRole:
    name = "worker"

    def __init__(self, services: Services, relay: OutboxRelay) -> None:
        self.services = services
        self.relay = relay
        self.backstop = DeliveryBackstop(services, wake_relay=relay.wake_in)
        self.consumer: JobConsumer | None = None
        self.processor: JobProcessor | None = None

    async def run(self, ready: Callable[[], None]) -> None:
        settings = self.services.settings
        policy = DestinationPolicy(settings.delivery_allow_networks)
        if policy.allowed:
            log.info("deliveries may reach public addresses and %s",
                     format_networks(policy.allowed))  # fmt: skip
        else:
            log.info("deliveries may reach public addresses only")
        async with new_http_session(settings.worker_concurrency, policy) as http:
            processor = self.processor = JobProcessor(self.services, http,
                                                      wake_relay=self.relay.wake_in)
            self.consumer = JobConsumer(self.services, processor.handle)
            ready()
            # The consumer, the endpoint-health cache it decides from and the backstop:
            # none ends on its own, and cancelling the role stops them all.
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(processor.gate.run(), name="worker:endpoint-health")
                tasks.create_task(self.backstop.run(), name="worker:backstop")
                await self.consumer.run()

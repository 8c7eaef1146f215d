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
from triggerd.worker.lane import DeliveryLane
from triggerd.worker.processor import JobProcessor

log = logging.getLogger(__name__)


DNS_TTL = 60
KEEPALIVE_TIMEOUT = 30.0


def per_host(concurrency: int) -> int:
    """Connections one host may hold: a quarter of the pool (min 4), so a slow target
    cannot take them all."""
    return max(4, concurrency // 4)


def new_http_session(concurrency: int, policy: DestinationPolicy) -> aiohttp.ClientSession:
    """One pool for every delivery: at most `concurrency` connections, `per_host` of them
    to one host. It connects only where `policy` allows (worker/destinations.py)."""
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=per_host(concurrency),
        ttl_dns_cache=DNS_TTL,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
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


def new_lane(concurrency: int, policy: DestinationPolicy) -> DeliveryLane:
    """The delivery fast lane (worker/lane.py), with the aiohttp session's limits."""
    return DeliveryLane(policy, GuardedResolver(policy), limit_per_host=per_host(concurrency),
                        dns_ttl=DNS_TTL, keepalive_timeout=KEEPALIVE_TIMEOUT)  # fmt: skip


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
        lane = (new_lane(settings.worker_concurrency, policy) if settings.delivery_fast_lane
                else None)  # fmt: skip
        try:
            async with new_http_session(settings.worker_concurrency, policy) as http:
                processor = self.processor = JobProcessor(
                    self.services, http, wake_relay=self.relay.wake_in, lane=lane
                )
                self.consumer = JobConsumer(self.services, processor.handle)
                ready()
                # The consumer, the endpoint-health cache it decides from and the
                # backstop: none ends on its own, and cancelling the role stops them all.
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(processor.gate.run(), name="worker:endpoint-health")
                    tasks.create_task(self.backstop.run(), name="worker:backstop")
                    await self.consumer.run()
        finally:
            if lane is not None:
                await lane.close()

"""What a delivery must pass before it goes out: its endpoint's circuit and its
trigger's rate limit. A delivery that must wait is put off through the outbox (the
event owes the same attempt again at a later time): it uses up no attempt, stays
`pending`/`retrying`, holds no worker slot, and survives a worker that dies.

    ticket = await gate.admit(event, target)
    if ticket.wait_until: await gate.postpone(event, attempt, ticket)   # and stop
    … claim the attempt …  (a duplicate: gate.release(ticket))
    await gate.before_send(ticket); send; record the outcome
    await gate.settle(ticket, verdict)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from triggerd.domain.enums import Verdict
from triggerd.domain.timeutil import utcnow
from triggerd.services import Services
from triggerd.store.deliveries import EventState
from triggerd.store.waiting import Postponer
from triggerd.worker.aio import retry_transient
from triggerd.worker.autodisable import AutoDisable
from triggerd.worker.circuit import Admission, Circuits, Decision
from triggerd.worker.delivery import Target
from triggerd.worker.ratelimit import RateLimiter

log = logging.getLogger(__name__)

WakeRelay = Callable[[float], None]


@dataclass(frozen=True)
class Ticket:
    admission: Admission
    wait_until: datetime | None = None  # set: put the delivery off until then
    why: str = ""  # circuit | rate limit
    rate_key: str | None = None
    rate: float | None = None


class DeliveryGate:
    def __init__(self, services: Services, wake_relay: WakeRelay | None = None) -> None:
        self.services = services
        self.metrics = services.metrics
        self.wake_relay = wake_relay
        self.circuits = Circuits(services.db, services.metrics, services.settings,
                                 on_failing=AutoDisable(services))  # fmt: skip
        self.limits = RateLimiter()
        self.postponer = Postponer(services.db)

    async def run(self) -> None:
        """The circuits' cache refresher; runs with the worker role."""
        await self.circuits.run()

    async def admit(self, event: EventState, target: Target) -> Ticket:
        assert target.endpoint is not None
        admission = await self.circuits.admit(target.endpoint, target.timeout)
        if admission.decision is Decision.WAIT:
            return Ticket(admission, admission.until, "circuit open")
        rate, key = target.rate_limit, event.trigger_id
        if rate is None or key is None:
            return Ticket(admission)
        delay = self.limits.admit(key, rate, event.id, time.monotonic())
        if delay is not None:
            await self.circuits.release(admission)
            return Ticket(admission, utcnow() + timedelta(seconds=delay), "rate limit")
        return Ticket(admission, rate_key=key, rate=rate)

    async def postpone(self, event: EventState, attempt: int, ticket: Ticket) -> None:
        assert ticket.wait_until is not None
        until = ticket.wait_until
        await retry_transient(lambda: self.postponer.postpone(event.id, attempt, until),
                              "putting a delivery off")  # fmt: skip
        if ticket.why == "rate limit":
            self.metrics.rate_limited.inc()
        if self.wake_relay is not None:
            self.wake_relay((until - utcnow()).total_seconds())
        log.debug("delivery attempt %d waits (%s) until %s", attempt, ticket.why, until)

    async def before_send(self, ticket: Ticket) -> None:
        if ticket.rate_key is None or ticket.rate is None:
            return
        pause = self.limits.pace(ticket.rate_key, ticket.rate, time.monotonic())
        if pause > 0:
            await asyncio.sleep(pause)

    async def settle(self, ticket: Ticket, verdict: Verdict) -> None:
        await self.circuits.settle(ticket.admission, verdict)

    async def release(self, ticket: Ticket) -> None:
        await self.circuits.release(ticket.admission)

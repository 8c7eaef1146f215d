"""The outbox relay: publishes the jobs event rows owe Kafka (store/outbox.py).

Who relies on it: the scheduler and webhook ingestion when their fast-path publish failed
(Kafka down, a crash between commit and publish), and the worker's retries, which are
written as "attempt n+1 is owed at t" instead of sleeping in the worker.

Loop: claim up to BATCH due rows (leased), publish them in one `publish_many`, settle the
published ones, postpone the failed ones (never dropped): with the relay's backoff when
nothing went out (Kafka down), by FAILED_ROW_DELAY when only some failed. A job Kafka can
never take (JobTooLarge: over TRIGGERD_KAFKA_MAX_REQUEST_SIZE, or refused alone by the
broker as too large) is not postponed: its event ends `failed` with the reason. Pacing:
- the batch was full: go again at once (a backlog drains at full speed);
- some work was found: poll again after BUSY_INTERVAL (200 ms);
- nothing due: IDLE_INTERVAL (1 s), or earlier when `wake_in()` says a retry falls due
  sooner (the worker in this process calls it when it schedules one);
- Kafka not connected or unhealthy (the producer's probe failed): wait without claiming
  anything; the database down: back off.
Several relays (worker and api roles, several processes) share the table safely:
`FOR UPDATE SKIP LOCKED` plus the lease.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from datetime import timedelta

from triggerd.bus.producer import JobTooLarge
from triggerd.domain.backoff import Backoff
from triggerd.domain.timeutil import utcnow
from triggerd.services import Services
from triggerd.store import outbox
from triggerd.store.db import log_failed_pass
from triggerd.store.outbox import OwedJob, Unpublishable
from triggerd.tracing import trace_publishes

log = logging.getLogger(__name__)


class OutboxRelay:
    BATCH = 100
    LEASE = 15.0  # seconds a claimed row is hidden from other relays
    PUBLISH_TIMEOUT = 10.0  # below LEASE, so a row is never claimed twice at once
    BUSY_INTERVAL = 0.2
    IDLE_INTERVAL = 1.0
    FAILED_ROW_DELAY = 5.0  # a row Kafka refused while others went out
    _WAKE_MARGIN = 0.005
    _MAX_WAKEUPS = 1000

    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db
        self.bus = services.bus
        self.metrics = services.metrics
        self._wakeups: list[float] = []  # heap of monotonic times worth a poll
        self._nudged = asyncio.Event()
        self._kafka_backoff = Backoff(base=0.5, cap=10.0)
        self._db_backoff = Backoff(base=0.5, cap=10.0)

    def wake_in(self, seconds: float) -> None:
        """Ask for a poll `seconds` from now (a retry falls due then)."""
        if len(self._wakeups) < self._MAX_WAKEUPS:
            heapq.heappush(self._wakeups, time.monotonic() + max(0.0, seconds) + self._WAKE_MARGIN)
            self._nudged.set()

    async def run(self) -> None:
        """Relay until cancelled. Rides out Kafka and database outages."""
        log.info("outbox relay started")
        while True:
            if not await self.bus.wait_connected(timeout=self.IDLE_INTERVAL):
                continue
            if not self.bus.healthy:
                # Connected but the last probe failed: an outage, or the broker came back
                # and the topic is not there yet. Publishing now could go nowhere.
                await asyncio.sleep(self.IDLE_INTERVAL)
                continue
            try:
                pause = await self.run_once()
                self._db_backoff.reset()
            except Exception as exc:
                pause = self._db_backoff.next()
                log_failed_pass(log, "outbox relay", exc, self._db_backoff.failures, pause)
            await self._sleep(pause)

    async def run_once(self) -> float:
        """One pass; returns how long to wait before the next."""
        now = utcnow()
        owed = await outbox.claim_due(self.db, now, now + timedelta(seconds=self.LEASE), self.BATCH)
        if not owed:
            return self.IDLE_INTERVAL
        published, failed, refused = await self._publish(owed)
        if refused:
            await self._fail(refused)
        if published:
            await outbox.mark_published(self.db, published, utcnow())
            self._count_fires(published)
        if failed:
            # Nothing went out: Kafka is likely down, so back off the whole relay. Only some
            # failed (e.g. a partition briefly without a leader): postpone those, keep the
            # pace for the rest.
            delay = self._kafka_backoff.next() if not published else self.FAILED_ROW_DELAY
            await outbox.postpone(self.db, failed, utcnow() + timedelta(seconds=delay))
            self.metrics.publish_failures.inc(len(failed))
            log.warning("outbox relay: %d of %d jobs not published; retry in %.1fs",
                        len(failed), len(owed), delay)  # fmt: skip
            if not published:
                return delay
        self._kafka_backoff.reset()
        log.debug("outbox relay published %d jobs", len(published))
        return 0.0 if len(owed) >= self.BATCH else self.BUSY_INTERVAL

    def _count_fires(self, published: list[OwedJob]) -> None:
        """A first attempt that only the relay got onto Kafka (the fast path failed, or
        its process died) is a firing like any other; retries, replays and jobs the
        delivery backstop owed again (counted when they first went out) are not."""
        fires = Counter((o.job.type, o.job.source) for o in published
                        if o.job.attempt == 1 and not o.republished)  # fmt: skip
        for (trigger_type, source), count in fires.items():
            self.metrics.fires.labels(type=trigger_type, source=source).inc(count)

    async def _fail(self, refused: list[Unpublishable]) -> None:
        """End the events of jobs Kafka can never take `failed` (their outbox mark goes
        with it). A database error leaves them leased: claimed and refused again later."""
        ended = await outbox.fail_unpublishable(self.db, refused, utcnow())
        self.metrics.jobs_too_large.inc(len(ended))
        for item in refused:
            if item.event_id in ended:
                log.error("event %s failed: %s", item.event_id, item.reason,
                          extra={"event_id": item.event_id})  # fmt: skip

    async def _publish(
        self, owed: list[OwedJob]
    ) -> tuple[list[OwedJob], list[OwedJob], list[Unpublishable]]:
        """(published, failed: to try again, refused: never)."""
        jobs = [o.job for o in owed]
        started = time.time_ns()
        try:
            async with asyncio.timeout(self.PUBLISH_TIMEOUT):
                results = await self.bus.publish_many(jobs)
        except TimeoutError:
            # Some may have gone out; republishing them later is absorbed by the worker.
            return [], owed, []
        if self.services.tracer.enabled:
            trace_publishes(self.services.tracer, jobs, results, started, self.bus.topic)
        published: list[OwedJob] = []
        failed: list[OwedJob] = []
        refused: list[Unpublishable] = []
        for item, result in zip(owed, results, strict=True):
            if isinstance(result, JobTooLarge):
                refused.append(Unpublishable(item.job.event_id, item.job.attempt, result.reason))
            elif isinstance(result, BaseException):
                failed.append(item)
            else:
                published.append(item)
        return published, failed, refused

    async def _sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or until the earliest requested wake-up if that is sooner."""
        deadline = time.monotonic() + seconds
        while True:
            self._nudged.clear()
            due = min(deadline, self._wakeups[0]) if self._wakeups else deadline
            remaining = due - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._nudged.wait()
            except TimeoutError:
                break
        now = time.monotonic()
        while self._wakeups and self._wakeups[0] <= now:
            heapq.heappop(self._wakeups)

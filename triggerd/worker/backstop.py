"""The backstop for owed deliveries: whatever the broker does, a delivery is not lost.

Every job is published from a committed row, and the row records when the job went out
(`published_at`). A worker that consumes it claims the attempt (a `delivery_attempts`
row) before anything else. So an event whose delivery has not ended, that owes Kafka no
job, and whose attempt nobody claimed for `TRIGGERD_REDELIVER_AFTER` after the job went
out, had its job lost on the way: a broker restarted without its log, a fetch that
skipped records, a consumer group whose offset moved past it. The backstop owes that job
to Kafka again (`publish_at = now`), the outbox relay publishes it, and the worker
delivers it; if the first copy turns up after all, the attempt claim absorbs it. Work
that is merely slow is never re-owed: a claimed attempt in progress (claimed, so it is
no longer waiting for its job) or a retry scheduled for later (it owes Kafka a job at
its time; the clock starts once the relay published it). A claim left unfinished by a
worker that died, with no copy of its job left to take it over, counts as lost once it
is older than the longest delivery timeout (plus the takeover margin) and the delay.

Which role runs it: the worker. Every deployment that delivers anything runs a worker
(one is needed even for Kafka-only triggers: workers mark them published), the backstop
watches the workers' own progress and sits beside the relay it hands work to, and it
needs only the database: the broker being down or lying does not stop it. Several
workers each run one; re-owing is one guarded UPDATE per event, so exactly one of them
re-owes a given job, and the others' queries find nothing. It is one of the worker
role's supervised tasks (`worker:backstop`).

Cost: one query per pass, every REDELIVER_AFTER / 4 (at most 15 s), over a range of
ix_events_owed that holds only deliveries still waiting that long, LIMIT BATCH; nothing
on the ingest, publish or delivery paths.

The default delay, 2 minutes, is about six times the longest a job waits for its claim
in normal operation: a worker killed with jobs fetched but not claimed hands them over
after the group notices (`TRIGGERD_KAFKA_SESSION_TIMEOUT`, 10 s) and the rebalance, about
12-20 s; a burst of 10,000 due jobs drains in ~10 s. A shorter delay re-owes jobs that
are merely queued behind such a wait, and each extra copy costs the workers a claim.
After the database was unreachable (workers hold their jobs and claim them once it is
back) the backstop first waits a full delay of good connection before it re-owes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from triggerd.domain.backoff import Backoff
from triggerd.domain.timeutil import utcnow
from triggerd.logs import log_context
from triggerd.services import Services
from triggerd.store import outbox
from triggerd.store.db import log_failed_pass
from triggerd.worker.processor import STALE_MARGIN

log = logging.getLogger(__name__)

# The longest a delivery attempt may take (the largest `timeout_seconds` a trigger can
# have): a claim older than this plus the takeover margin was abandoned.
MAX_DELIVERY_TIMEOUT = 300.0

WakeRelay = Callable[[float], None]


class DeliveryBackstop:
    BATCH = 500
    MAX_INTERVAL = 15.0
    MIN_INTERVAL = 0.1

    def __init__(self, services: Services, wake_relay: WakeRelay | None = None) -> None:
        self.db = services.db
        self.metrics = services.metrics
        self.delay = services.settings.redeliver_after
        self.interval = min(self.MAX_INTERVAL, max(self.MIN_INTERVAL, self.delay / 4))
        self.wake_relay = wake_relay
        self._backoff = Backoff(base=0.5, cap=10.0)
        # Since when (monotonic) the database has answered without a break; None: it
        # has just failed.
        self._connected_since: float | None = time.monotonic()

    async def run(self) -> None:
        """Pass after pass until cancelled; rides out database outages."""
        log.info("delivery backstop started: jobs with no claimed attempt %.0fs after they"
                 " were published are published again", self.delay)  # fmt: skip
        while True:
            try:
                full = await self.run_once()
                self._backoff.reset()
                pause = 0.0 if full else self.interval
            except Exception as exc:
                self._connected_since = None
                pause = self._backoff.next()
                log_failed_pass(log, "delivery backstop", exc, self._backoff.failures, pause)
            await asyncio.sleep(pause)

    async def run_once(self) -> bool:
        """One pass; True when it found a full batch (more may be waiting)."""
        if self._connected_since is None or time.monotonic() - self._connected_since < self.delay:
            # Just started, or the database just came back: the workers are catching up
            # on the jobs they hold. Pinging meanwhile notices an outage in between.
            await self.db.ping()
            if self._connected_since is None:
                self._connected_since = time.monotonic()
            return False
        now = utcnow()
        cutoff = now - timedelta(seconds=self.delay)
        abandoned = cutoff - timedelta(seconds=MAX_DELIVERY_TIMEOUT + STALE_MARGIN)
        stalled = await outbox.stalled_deliveries(
            self.db, cutoff=cutoff, abandoned_before=abandoned, limit=self.BATCH
        )
        reowed = 0
        for item in stalled:
            if not await outbox.reowe(self.db, item, now):
                continue  # it moved meanwhile, or another worker's backstop took it
            reowed += 1
            self.metrics.jobs_reowed.inc()
            with log_context(event_id=item.event_id):
                log.warning(
                    "delivery attempt %d showed no progress %.0fs after its job was"
                    " published; the job is owed to Kafka again", item.attempt,
                    (now - item.published_at).total_seconds(),
                    extra={"published_at": item.published_at.isoformat()},
                )  # fmt: skip
        if reowed and self.wake_relay is not None:
            self.wake_relay(0.0)
        return len(stalled) >= self.BATCH

"""From one Kafka job to one recorded delivery attempt.

    job ──▶ event row (wait briefly / materialize) ──▶ already done? ──▶ gate (circuit,
        rate limit; or put off: same attempt owed later) ──▶ claim attempt row
        ──▶ HTTP ──▶ outcome (shielded): success | failed | retrying (outbox: publish_at)

Nothing here sleeps between attempts: a retry is written to the event as "attempt n+1 is
owed at t" and the outbox relay publishes it when due, so the Kafka partition moves on
and a failing target never holds a worker slot longer than one request.

Database faults are ridden out in place (retry with backoff): the job is not finished,
so its offset is not committed, until its outcome is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp
from multidict import CIMultiDict

from triggerd.domain.enums import AttemptClaim, ExecutionStatus, Source
from triggerd.domain.jobs import Job
from triggerd.domain.timeutil import utcnow
from triggerd.domain.tracecontext import child_of, new_traceparent
from triggerd.logs import log_context
from triggerd.services import Services
from triggerd.store import deliveries
from triggerd.store.deliveries import EventState, Outcome
from triggerd.store.event_rows import EventRecord, delivery_snapshot, insert_events
from triggerd.tracing import Kind
from triggerd.worker import delivery
from triggerd.worker.aio import retry_transient, shielded
from triggerd.worker.delivery import AttemptResult, Target
from triggerd.worker.gate import DeliveryGate, Ticket
from triggerd.worker.lane import DeliveryLane

log = logging.getLogger(__name__)

# The scheduler publishes a job just before it commits the event row; a job can arrive
# first. Wait this long for the row before materializing it from the job and trigger.
EVENT_WAIT = 2.0
_EVENT_POLL = 0.05
# An unfinished attempt row older than the target's timeout plus this margin belongs to a
# worker that died mid-delivery; a younger one may be in flight elsewhere.
STALE_MARGIN = 5.0
_BUSY_POLL = 0.2

# How the processing of a job ended (also the `outcome` label of deliveries_total).
SUCCESS, FAILED, RETRYING, PUBLISHED = (ExecutionStatus.SUCCESS, ExecutionStatus.FAILED,
                                        ExecutionStatus.RETRYING, ExecutionStatus.PUBLISHED)
DUPLICATE, SKIPPED, WAITING = "duplicate", "skipped", "waiting"

WakeRelay = Callable[[float], None]


class JobProcessor:
    def __init__(
        self, services: Services, http: aiohttp.ClientSession,
        wake_relay: WakeRelay | None = None, lane: DeliveryLane | None = None,
    ) -> None:  # fmt: skip
        self.services = services
        self.lane = lane
        self.db = services.db
        self.metrics = services.metrics
        self.http = http
        self.wake_relay = wake_relay
        # The jobs of one fetch share their queries (store/coalesce.py).
        self.events = deliveries.EventLoader(self.db)
        self.claims = deliveries.AttemptClaims(self.db)
        self.outcomes = deliveries.OutcomeWriter(self.db)
        # Endpoint circuits and rate limits (worker/gate.py).
        self.gate = DeliveryGate(services, wake_relay)
        # How long a final write may outlive a cancellation (it normally takes ms; when
        # the database is down, waiting longer does not help: the job is redelivered).
        self.grace = min(2.0, services.settings.shutdown_timeout)
        # Events fired longer ago than this have been deleted by retention.
        self.horizon = timedelta(seconds=services.settings.retention_delete_after)

    async def handle(self, job: Job) -> str:
        """Process one job; returns how it ended. Raises only on cancellation or a
        non-transient bug (the consumer logs it and moves on)."""
        with log_context(event_id=job.event_id, trigger_id=job.trigger_id):
            event = await self._event_for(job)
            if event is None:
                log.warning("job for an event that does not exist (or no longer): skipped")
                return SKIPPED
            if event.has_done(job.attempt):
                log.info("duplicate job for attempt %d: nothing to do", job.attempt)
                return DUPLICATE
            if job.attempt > event.publish_attempt:
                # Every job triggerd publishes is owed first (the row commits before the
                # publish): this one came from elsewhere, or from before a restore.
                log.warning("job for attempt %d, but the event owes attempt %d: skipped",
                            job.attempt, event.publish_attempt)  # fmt: skip
                return SKIPPED
            target = Target.from_snapshot(event.delivery)
            if target.endpoint is None:
                return await self._publish_only(event, job.attempt)
            ticket = await self.gate.admit(event, target)
            if ticket.wait_until is not None:
                await self.gate.postpone(event, job.attempt, ticket)
                return WAITING
            claim = await self._claim(event.id, job.attempt, target)
            if claim is AttemptClaim.FINISHED:
                log.info("attempt %d already finished: nothing to do", job.attempt)
                await self.gate.release(ticket)
                return DUPLICATE
            if claim is AttemptClaim.RESTARTED:
                log.warning("attempt %d was left unfinished; delivering again", job.attempt)
            return await self._deliver(event, target, job, ticket)

    async def _claim(self, event_id: str, attempt: int, target: Target) -> str:
        """Insert the attempt row, or take over one a dead worker left unfinished. A row
        started less than the target's timeout (+ margin) ago may be in flight elsewhere
        (a duplicate job, a rebalance): wait until it finishes or goes stale."""
        new = await retry_transient(
            lambda: self.claims.claim(event_id, attempt), "claiming a delivery attempt"
        )
        if new:
            return "new"
        margin = timedelta(seconds=target.timeout + STALE_MARGIN)

        async def claim_once() -> str:
            now = utcnow()
            return await deliveries.start_attempt(self.db, event_id, attempt, now, now - margin)

        while True:
            claim = await retry_transient(claim_once, "claiming a delivery attempt")
            if claim is not AttemptClaim.BUSY:
                return claim
            await asyncio.sleep(_BUSY_POLL)

    async def _event_for(self, job: Job) -> EventState | None:
        """The job's event row. A scheduler's first attempt can come before its row (the
        scheduler publishes, then commits): wait for it briefly, then build it from the
        job. Any other job without a row is skipped: webhooks, test runs, retries and
        replays commit their row before they publish, so theirs existed and is gone; and
        so is that of a job fired before the retention horizon (retention deleted it: a
        consumer group that re-reads old jobs must not bring events back, nor deliver
        them again)."""
        event = await self._load(job)
        if event is not None or not self._may_precede_its_row(job):
            return event
        deadline = time.monotonic() + EVENT_WAIT
        while event is None and time.monotonic() < deadline:
            await asyncio.sleep(_EVENT_POLL)
            event = await self._load(job)
        if event is not None:
            return event
        return await retry_transient(lambda: self._materialize(job), "materializing an event")

    async def _load(self, job: Job) -> EventState | None:
        return await retry_transient(lambda: self.events.load(job.event_id), "loading an event")

    def _may_precede_its_row(self, job: Job) -> bool:
        """Asked only when the row is missing (not for every job)."""
        return (job.source == Source.SCHEDULER and job.attempt == 1
                and job.trigger_id is not None
                and job.fired_at >= utcnow() - self.horizon)  # fmt: skip

    async def _materialize(self, job: Job) -> EventState | None:
        """The event row never came: build it from the job and its trigger (an insert that
        keeps an existing row, so a row committed meanwhile by the publisher wins)."""
        assert job.trigger_id is not None
        trigger = await deliveries.load_trigger(self.db, job.trigger_id)
        if trigger is None:
            return None
        record = EventRecord(
            id=job.event_id,
            trigger_id=trigger.id,
            trigger_name=trigger.name,
            trigger_type=trigger.type,
            source=job.source,
            is_test_run=job.is_test_run,
            payload=job.payload,
            delivery=delivery_snapshot(trigger.config),
            fired_at=job.fired_at,
            scheduled_for=job.scheduled_for,
            published_at=job.published_at or utcnow(),
            traceparent=job.traceparent,
        )
        async with self.db.transaction() as cur:
            inserted = await insert_events(cur, [record])
        if inserted:
            log.warning("event row missing after %.0fs; materialized it from the job", EVENT_WAIT)
        return await deliveries.load_event(self.db, job.event_id)

    async def _publish_only(self, event: EventState, attempt: int) -> str:
        """No endpoint (a webhook trigger that only feeds Kafka): the job was consumed."""
        changed = await shielded(
            retry_transient(
                lambda: deliveries.mark_published(self.db, event.id, attempt), "marking published"
            ),
            grace=self.grace,
        )
        if not changed:
            return DUPLICATE
        self.metrics.deliveries.labels(outcome=PUBLISHED).inc()
        return PUBLISHED

    async def _deliver(self, event: EventState, target: Target, job: Job,
                       ticket: Ticket) -> str:  # fmt: skip
        attempt, trace = job.attempt, job.traceparent
        body = event.payload.encode()
        # The attempt's own span in its event's trace (a job from before traceparents
        # were carried starts a trace of its own).
        traceparent = child_of(trace) if trace is not None else new_traceparent()
        headers = delivery.build_headers(target, event.id, event.trigger_id, body,
                                         traceparent=traceparent)  # fmt: skip
        await self.gate.before_send(ticket)
        if self.services.tracer.enabled:
            result = await self._send_traced(target, headers, body, attempt, event.id,
                                             traceparent, trace)  # fmt: skip
        else:
            result = await delivery.send(self.http, target, headers, body, self.lane)
        self.metrics.delivery_attempts.inc()
        self.metrics.delivery_latency.observe(result.latency)
        outcome = self._outcome(event, target, attempt, result, job.published_at)
        recorded = await shielded(
            retry_transient(lambda: self.outcomes.record(outcome), "recording a delivery"),
            grace=self.grace,
        )
        await self.gate.settle(ticket, result.verdict)
        if not recorded:
            log.info("attempt %d was finished by another worker meanwhile", attempt)
            return DUPLICATE
        self.metrics.deliveries.labels(outcome=outcome.status).inc()
        if outcome.status == RETRYING and outcome.retry_at is not None and self.wake_relay:
            self.wake_relay((outcome.retry_at - outcome.finished_at).total_seconds())
        log.log(
            logging.INFO if outcome.status == SUCCESS else logging.WARNING,
            "delivery attempt %d: %s", attempt, outcome.status,
            extra={"response_status": result.status, "latency_ms": result.latency_ms,
                   "error": result.error},
        )  # fmt: skip
        return outcome.status

    async def _send_traced(self, target: Target, headers: CIMultiDict[str], body: bytes,
                           attempt: int, event_id: str, own: str,
                           parent: str | None) -> AttemptResult:  # fmt: skip
        """delivery.send inside the attempt's client span (status, latency, error)."""
        span = self.services.tracer.start(
            target.method, Kind.CLIENT, own=own, parent=parent,
            attributes={"http.request.method": target.method,
                        "url.full": delivery.url_for_traces(target.endpoint or ""),
                        "triggerd.event_id": event_id, "triggerd.attempt": attempt},
        )  # fmt: skip
        try:
            result = await delivery.send(self.http, target, headers, body, self.lane)
        except BaseException:  # cancelled: what was measured is exported all the same
            span.end()
            raise
        if result.status is not None:
            span.set("http.response.status_code", result.status)
        span.set("triggerd.latency_ms", result.latency_ms)
        if result.verdict != delivery.SUCCESS:
            span.fail(result.error or "failed")
        span.end()
        return result

    @staticmethod
    def _outcome(event: EventState, target: Target, attempt: int, result: AttemptResult,
                 published_at: datetime | None = None) -> Outcome:  # fmt: skip
        now = utcnow()
        verdict = result.verdict
        series_attempt = attempt - event.attempt_base
        status, retry_at = SUCCESS, None
        if verdict == delivery.FAIL:
            status = FAILED
        elif verdict == delivery.RETRY:
            if series_attempt >= target.retry.max_attempts:
                status = FAILED
            else:
                delay = delivery.retry_delay(target.retry, series_attempt, result.retry_after)
                status, retry_at = RETRYING, now + timedelta(seconds=delay)
        return Outcome(
            event_id=event.id,
            attempt=attempt,
            status=status,
            finished_at=now,
            response_status=result.status,
            latency_ms=result.latency_ms,
            error=result.error,
            retry_at=retry_at,
            published_at=published_at,
        )
